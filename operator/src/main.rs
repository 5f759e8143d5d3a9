//! `lakeload-operator`: the controller, the CRD printer, and the CronJob's `create-run`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand};
use lakeload_operator::controller::{self, Settings};
use lakeload_operator::metrics::Metrics;

#[derive(Parser)]
#[command(
    name = "lakeload-operator",
    version,
    about = "Runs lakeload workers for EtlRun resources"
)]
#[command(args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(clap::Args, Clone)]
struct RunArgs {
    /// Worker image for runs that do not set spec.image.
    #[arg(
        long,
        env = "LAKELOAD_OPERATOR_WORKER_IMAGE",
        default_value = "lakeload:latest"
    )]
    worker_image: String,
    /// Watch only this namespace (default: all namespaces).
    #[arg(long, env = "LAKELOAD_OPERATOR_NAMESPACE")]
    namespace: Option<String>,
    /// Lease duration; the Lease is renewed every third of it while the Job runs.
    #[arg(long, env = "LAKELOAD_OPERATOR_LEASE_SECONDS", default_value_t = 60)]
    lease_seconds: i64,
    /// Finished runs kept per target even after their ttlSecondsAfterFinished.
    #[arg(long, env = "LAKELOAD_OPERATOR_KEEP_LAST", default_value_t = 5)]
    keep_last: usize,
    /// Address for /healthz, /readyz and /metrics.
    #[arg(long, env = "LAKELOAD_OPERATOR_METRICS_ADDR", default_value = "0.0.0.0:8080")]
    metrics_addr: SocketAddr,
    /// text or json.
    #[arg(long, env = "LAKELOAD_OPERATOR_LOG_FORMAT", default_value = "text", value_parser = ["text", "json"])]
    log_format: String,
}

#[derive(Subcommand)]
enum Command {
    /// Run the controller (the default).
    Run(RunArgs),
    /// Print the EtlRun CRD (crds/etlrun.yaml).
    Crd,
    /// Create one EtlRun from a template file (used by the chart's CronJob).
    CreateRun {
        #[arg(long)]
        template: PathBuf,
        #[arg(long)]
        namespace: Option<String>,
    },
}

fn init_logging(format: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,kube=warn,tower=warn,hyper=warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if format == "json" {
        builder.json().init();
    } else {
        builder.init();
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let command = cli.command.unwrap_or_else(|| Command::Run(cli.run.clone()));
    match command {
        Command::Crd => {
            print!("{}", lakeload_operator::crd::crd_yaml());
            ExitCode::SUCCESS
        }
        Command::CreateRun { template, namespace } => {
            init_logging(&cli.run.log_format);
            let text = match std::fs::read_to_string(&template) {
                Ok(t) => t,
                Err(e) => {
                    eprintln!("error: cannot read {}: {e}", template.display());
                    return ExitCode::from(2);
                }
            };
            let result = async {
                let client = kube::Client::try_default().await?;
                lakeload_operator::schedule::create_from_template(client, &text, namespace).await
            }
            .await;
            match result {
                Ok(name) => {
                    println!("created EtlRun {name}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("error: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Run(args) => {
            init_logging(&args.log_format);
            let client = match kube::Client::try_default().await {
                Ok(c) => c,
                Err(e) => {
                    eprintln!(
                        "error: cannot reach the Kubernetes API (KUBECONFIG or in-cluster config): {e}"
                    );
                    return ExitCode::FAILURE;
                }
            };
            let metrics = Arc::new(Metrics::default());
            let server = tokio::spawn(lakeload_operator::metrics::serve(
                args.metrics_addr,
                metrics.clone(),
            ));
            let settings = Settings {
                worker_image: args.worker_image,
                lease_seconds: args.lease_seconds.max(15),
                keep_last: args.keep_last,
                namespace: args.namespace.filter(|n| !n.is_empty()),
            };
            controller::run(client, settings, metrics).await;
            server.abort();
            ExitCode::SUCCESS
        }
    }
}
