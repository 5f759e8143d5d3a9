//! `lakeload-operator`: the controller, the CRD printer, and the CronJob's `create-run`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand};
use lakeload_operator::admit::{Admission, DEFAULT_ALLOWED_ENV, DEFAULT_VOLUME_TYPES};
use lakeload_operator::controller::{self, Settings};
use lakeload_operator::decide::Policy;
use lakeload_operator::leader::Election;
use lakeload_operator::metrics::Metrics;
use lakeload_operator::shutdown::Shutdown;

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
    /// Let other replicas on the same host network bind the metrics port too (SO_REUSEPORT).
    #[arg(long, env = "LAKELOAD_OPERATOR_METRICS_SHARED_PORT", default_value_t = false)]
    metrics_shared_port: bool,
    /// text or json.
    #[arg(long, env = "LAKELOAD_OPERATOR_LOG_FORMAT", default_value = "text", value_parser = ["text", "json"])]
    log_format: String,
    /// Images an EtlRun may name in spec.image, comma-separated; `prefix*` allows a repository.
    /// The worker image is always allowed (it is what runs without spec.image).
    #[arg(
        long,
        env = "LAKELOAD_OPERATOR_ALLOWED_IMAGES",
        value_delimiter = ',',
        default_value = ""
    )]
    allowed_images: Vec<String>,
    /// Service accounts an EtlRun may name in spec.serviceAccountName, comma-separated
    /// (`prefix*` allowed). Default: none (worker pods run as the namespace's default).
    #[arg(
        long,
        env = "LAKELOAD_OPERATOR_ALLOWED_SERVICE_ACCOUNTS",
        value_delimiter = ',',
        default_value = ""
    )]
    allowed_service_accounts: Vec<String>,
    /// Service account of worker pods whose EtlRun names none (always allowed). It needs
    /// `create` on etlrunresults (the chart's `<release>-worker` Role): the worker reports its
    /// summary with it. Empty: the namespace's `default` account.
    #[arg(long, env = "LAKELOAD_OPERATOR_WORKER_SERVICE_ACCOUNT")]
    worker_service_account: Option<String>,
    /// Variables `spec.podTemplate.env` may set besides `admit::DEFAULT_ALLOWED_ENV`,
    /// comma-separated (`prefix*` allowed, but `AWS_*`, `*_PROXY`, `SSL_*`, `LD_*`,
    /// `LAKELOAD_*` and `KUBERNETES_*` names pass only when listed in full).
    #[arg(
        long,
        env = "LAKELOAD_OPERATOR_ALLOWED_ENV",
        value_delimiter = ',',
        default_value = ""
    )]
    allowed_env: Vec<String>,
    /// Secrets an EtlRun may name (`spec.credentialsSecret`, env `secretKeyRef`, `secret`
    /// volumes), comma-separated exact names. Default: none.
    #[arg(
        long,
        env = "LAKELOAD_OPERATOR_ALLOWED_SECRETS",
        value_delimiter = ',',
        default_value = ""
    )]
    allowed_secrets: Vec<String>,
    /// ConfigMaps an EtlRun may mount, comma-separated exact names. Default: none.
    #[arg(
        long,
        env = "LAKELOAD_OPERATOR_ALLOWED_CONFIG_MAPS",
        value_delimiter = ',',
        default_value = ""
    )]
    allowed_config_maps: Vec<String>,
    /// Worker settings for every run that does not set them itself, as a JSON object of
    /// `section.key` → value (e.g. `{"aws.endpoint_url": "https://minio.example:9000"}`).
    #[arg(long, env = "LAKELOAD_OPERATOR_WORKER_SETTINGS", default_value = "{}")]
    worker_settings: String,
    /// Let runs set `spec.podTemplate.hostNetwork: true`.
    #[arg(long, env = "LAKELOAD_OPERATOR_ALLOW_HOST_NETWORK", default_value_t = false)]
    allow_host_network: bool,
    /// Let workers read AWS config and credential files (profiles). Off: the operator sets
    /// `AWS_CONFIG_FILE` and `AWS_SHARED_CREDENTIALS_FILE` to /dev/null in every worker, so
    /// credentials come from the run's Secret or the pod's identity only.
    #[arg(
        long,
        env = "LAKELOAD_OPERATOR_ALLOW_AWS_CONFIG_FILES",
        default_value_t = false
    )]
    allow_aws_config_files: bool,
    /// Kueue LocalQueue for runs whose spec names none (empty: runs are not queued).
    #[arg(long, env = "LAKELOAD_OPERATOR_DEFAULT_QUEUE_NAME")]
    default_queue_name: Option<String>,
    /// Volume types `spec.podTemplate.volumes` may use, comma-separated (`emptyDir`, `secret`,
    /// `configMap` without binaryData, `projectedServiceAccountToken`, `persistentVolumeClaim`,
    /// `hostPath`, `csi`, …). Default: `decide::DEFAULT_VOLUME_TYPES`.
    #[arg(long, env = "LAKELOAD_OPERATOR_ALLOWED_VOLUME_TYPES", value_delimiter = ',')]
    allowed_volume_types: Option<Vec<String>>,
    /// A worker pod that cannot start this long (image pull, missing Secret, unschedulable)
    /// fails its run.
    #[arg(long, env = "LAKELOAD_OPERATOR_START_TIMEOUT_SECONDS", default_value_t = 300)]
    start_timeout_seconds: i64,
    /// A run whose worker found the table's S3 lock taken (exit 75) tries again after this.
    #[arg(long, env = "LAKELOAD_OPERATOR_LOCK_RETRY_SECONDS", default_value_t = 60)]
    lock_retry_seconds: i64,
    /// A run whose Job Kueue has not admitted this long fails `NotAdmitted` and frees its
    /// table (a run's `spec.queueTimeoutSeconds` wins).
    #[arg(long, env = "LAKELOAD_OPERATOR_QUEUE_TIMEOUT_SECONDS", default_value_t = 3600)]
    queue_timeout_seconds: i64,
    /// Elect one leader among the operator's replicas with a Lease.
    #[arg(long, env = "LAKELOAD_OPERATOR_LEADER_ELECT", default_value_t = false)]
    leader_elect: bool,
    /// Namespace of the leader-election Lease (default: the operator's namespace).
    #[arg(long, env = "LAKELOAD_OPERATOR_LEADER_ELECTION_NAMESPACE")]
    leader_election_namespace: Option<String>,
    /// Namespace of the table Leases, one per table in the cluster (default: the operator's
    /// namespace, $POD_NAMESPACE, else the watched namespace, else `default`).
    #[arg(long, env = "LAKELOAD_OPERATOR_LEASE_NAMESPACE")]
    lease_namespace: Option<String>,
}

// Parsed once at start: the size of the largest variant costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
enum Command {
    /// Run the controller (the default).
    Run(RunArgs),
    /// Print the CRDs (crds/etlrun.yaml); with --apply, create or update them in the cluster
    /// instead (the chart's upgrade hook).
    Crd {
        #[arg(long)]
        apply: bool,
    },
    /// Create one EtlRun from a template file (used by the chart's CronJob).
    CreateRun {
        #[arg(long)]
        template: PathBuf,
        #[arg(long)]
        namespace: Option<String>,
    },
}

/// `<pod name>_<8 hex digits>`, new for every start of the process: a replica restarted
/// after a crash is a new candidate, and waits for its predecessor's Lease to lapse like any
/// standby, rather than resuming a leadership it knows nothing about.
fn candidate_identity() -> String {
    let pod = std::env::var("POD_NAME").unwrap_or_else(|_| "lakeload-operator".into());
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    let salt = (nanos as u64 ^ u64::from(std::process::id()).rotate_left(32)) as u32;
    format!("{pod}_{salt:08x}")
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
        Command::Crd { apply: false } => {
            print!("{}", lakeload_operator::crd::crd_yaml());
            ExitCode::SUCCESS
        }
        Command::Crd { apply: true } => {
            init_logging(&cli.run.log_format);
            let applied = async {
                let client = kube::Client::try_default().await?;
                lakeload_operator::install::apply(&client).await
            }
            .await;
            match applied {
                Ok(names) => {
                    println!("applied {}", names.join(", "));
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("error: cannot apply the CRDs: {e}");
                    ExitCode::FAILURE
                }
            }
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
            let shutdown = Shutdown::listen();
            let client = match kube::Client::try_default().await {
                Ok(c) => c,
                Err(e) => {
                    eprintln!(
                        "error: cannot reach the Kubernetes API (KUBECONFIG or in-cluster config): {e}"
                    );
                    return ExitCode::FAILURE;
                }
            };
            if let Err(e) = lakeload_operator::install::check(&client).await {
                eprintln!("error: {e}");
                return ExitCode::FAILURE;
            }
            let worker_settings: std::collections::BTreeMap<String, String> =
                match serde_json::from_str(&args.worker_settings) {
                    Ok(settings) => settings,
                    Err(e) => {
                        eprintln!(
                            "error: --worker-settings (LAKELOAD_OPERATOR_WORKER_SETTINGS; chart value \
                             workerSettings) must be a JSON object of strings, e.g. \
                             {{\"aws.endpoint_url\": \"https://minio:9000\"}}: {e}"
                        );
                        return ExitCode::from(2);
                    }
                };
            let metrics = Arc::new(Metrics::default());
            let server = tokio::spawn(lakeload_operator::metrics::serve(
                args.metrics_addr,
                metrics.clone(),
                args.metrics_shared_port,
            ));
            let namespace = args.namespace.filter(|n| !n.is_empty());
            let own_namespace = std::env::var("POD_NAMESPACE")
                .ok()
                .filter(|n| !n.is_empty())
                .or(namespace.clone())
                .unwrap_or_else(|| "default".into());
            let mut allowed_images = non_empty(args.allowed_images);
            allowed_images.push(args.worker_image.clone());
            let lease_seconds = args.lease_seconds.max(15);
            let worker_service_account = args.worker_service_account.filter(|a| !a.trim().is_empty());
            let mut allowed_service_accounts = non_empty(args.allowed_service_accounts);
            allowed_service_accounts.extend(worker_service_account.clone());
            let settings = Settings {
                worker_image: args.worker_image,
                keep_last: args.keep_last,
                namespace: namespace.clone(),
                lease_namespace: args
                    .lease_namespace
                    .filter(|n| !n.is_empty())
                    .unwrap_or_else(|| own_namespace.clone()),
                default_queue_name: args.default_queue_name.filter(|q| !q.trim().is_empty()),
                worker_service_account,
                policy: Policy {
                    lease_seconds,
                    start_timeout_seconds: args.start_timeout_seconds.max(1),
                    lock_retry_seconds: args.lock_retry_seconds.max(1),
                    queue_timeout_seconds: args.queue_timeout_seconds.max(1),
                    admission: Admission {
                        images: allowed_images,
                        service_accounts: allowed_service_accounts,
                        secrets: non_empty(args.allowed_secrets),
                        env: DEFAULT_ALLOWED_ENV
                            .iter()
                            .map(|s| s.to_string())
                            .chain(non_empty(args.allowed_env))
                            .collect(),
                        volume_types: list_or(args.allowed_volume_types, DEFAULT_VOLUME_TYPES),
                        config_maps: non_empty(args.allowed_config_maps),
                        host_network: args.allow_host_network,
                    },
                },
                aws_config_files: args.allow_aws_config_files,
                worker_settings,
            };
            let code = if args.leader_elect {
                let election = Election {
                    namespace: args
                        .leader_election_namespace
                        .filter(|n| !n.is_empty())
                        .unwrap_or(own_namespace),
                    name: "lakeload-operator-leader".into(),
                    identity: candidate_identity(),
                    lease_seconds,
                    seen: Default::default(),
                };
                // A standby is Ready too (it can take over); leadership is the `leader` metric.
                metrics.ready.store(true, std::sync::atomic::Ordering::SeqCst);
                tokio::select! {
                    _ = shutdown.requested() => ExitCode::SUCCESS,
                    _ = election.acquire(&client) => {
                        metrics.leader.set(1);
                        let code = tokio::select! {
                            // Stops on SIGTERM/SIGINT, even one that came during the election.
                            _ = controller::run(client.clone(), settings, metrics.clone(), shutdown.clone()) => ExitCode::SUCCESS,
                            // Lost: exit, and let the Deployment restart this replica as a follower.
                            _ = election.keep(&client) => ExitCode::FAILURE,
                        };
                        metrics.leader.set(0);
                        // Hand over at once instead of after a whole Lease duration.
                        election.release(&client).await;
                        code
                    }
                }
            } else {
                controller::run(client, settings, metrics, shutdown).await;
                ExitCode::SUCCESS
            };
            server.abort();
            code
        }
    }
}

/// A comma-separated setting's entries, or `default` when it was not given.
fn list_or(given: Option<Vec<String>>, default: &[&str]) -> Vec<String> {
    match given {
        Some(list) => non_empty(list),
        None => default.iter().map(|e| e.to_string()).collect(),
    }
}

/// A comma-separated list's entries, trimmed, without empty ones.
fn non_empty(list: Vec<String>) -> Vec<String> {
    list.into_iter()
        .map(|e| e.trim().to_string())
        .filter(|e| !e.is_empty())
        .collect()
}
