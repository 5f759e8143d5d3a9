//! The `lakeload` command line: parses arguments, loads the configuration, calls the library
//! and maps the outcome to an exit code (SPEC §7).

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use lakeload::config::{self, Config, LogFormat, RawConfig};
use lakeload::error::{Error, exit_code};

#[derive(Parser)]
#[command(
    name = "lakeload",
    version,
    about = "Gzip'd pipe-separated files → a de-duplicated, date-partitioned Parquet table"
)]
struct Cli {
    /// Config file (default: $LAKELOAD_CONFIG, else ./common.conf if present).
    #[arg(long, global = true, value_name = "PATH")]
    config: Option<PathBuf>,

    /// Override a setting, e.g. --set run.mode=full (repeatable).
    #[arg(long = "set", global = true, value_name = "SECTION.KEY=VALUE")]
    sets: Vec<String>,

    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Load new source files into the table (or rebuild it with --mode full).
    Run {
        #[arg(long, value_parser = ["full", "incremental"])]
        mode: Option<String>,
        /// Print the run summary as one JSON object on stdout.
        #[arg(long)]
        json: bool,
        /// Name the run (default: start time + random suffix); its summary is
        /// `_lakeload/runs/<run id>.json`.
        #[arg(long, value_name = "ID")]
        run_id: Option<String>,
        /// Report the summary as an EtlRunResult owned by this EtlRun, through the Kubernetes
        /// API with the pod's service account (set by the operator; needs --etlrun-uid).
        #[arg(long, value_name = "NAME", requires = "etlrun_uid")]
        etlrun: Option<String>,
        /// The uid of the EtlRun named by --etlrun.
        #[arg(long, value_name = "UID", requires = "etlrun")]
        etlrun_uid: Option<String>,
        /// The uid of the worker's pod, written into its EtlRunResult (the operator accepts
        /// only results of its run's current pods).
        #[arg(long, value_name = "UID", requires = "etlrun")]
        pod_uid: Option<String>,
    },
    /// Show what a run would do; changes nothing and takes no lock.
    Plan {
        #[arg(long, value_parser = ["full", "incremental"])]
        mode: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Show the last runs, rows and bytes by date, and the lock holder.
    Status {
        #[arg(long)]
        json: bool,
    },
    /// List the versions of a `target.format = delta` table, newest first.
    History {
        /// Only the newest N versions.
        #[arg(long)]
        limit: Option<usize>,
        #[arg(long)]
        json: bool,
    },
    /// Make version N of a `target.format = delta` table its current version again, in a
    /// new version; the next incremental run loads the files loaded after N again.
    Rollback {
        #[arg(long)]
        to_version: u64,
        /// Roll back even when source files loaded since are gone from the source (their
        /// rows leave the table for good).
        #[arg(long)]
        allow_missing: bool,
        #[arg(long)]
        json: bool,
    },
    /// Delete the files of a `target.format = delta` table that no version within the
    /// retention reads any more.
    Vacuum {
        /// Keep files removed more recently than this (s, m, h or d). Default: the table's
        /// delta.deletedFileRetentionDuration, 7 days unless it sets one.
        #[arg(long)]
        retain: Option<String>,
        /// Allow a --retain shorter than the table's retention.
        #[arg(long)]
        force: bool,
        /// List what would be deleted; delete nothing.
        #[arg(long)]
        dry_run: bool,
        #[arg(long)]
        json: bool,
    },
    /// Pack each date's small files of a `target.format = delta` table into one and drop the
    /// rows deletion vectors mark (a version that changes no data).
    Optimize {
        /// List what would be compacted; write nothing.
        #[arg(long)]
        dry_run: bool,
        #[arg(long)]
        json: bool,
    },
    /// Remove a lock left by a crashed run.
    Unlock {
        /// Remove it even if its lease is still live.
        #[arg(long)]
        force: bool,
    },
    /// Generate sample data into a local folder and load it (full, then incremental).
    Demo {
        /// Folder for the sample source files, the table and a common.conf.
        #[arg(default_value = "lakeload-demo")]
        dir: PathBuf,
    },
    /// Write synthetic source files.
    Generate {
        dir: PathBuf,
        #[arg(long, default_value_t = 10)]
        files: usize,
        /// Lines per file.
        #[arg(long, default_value_t = 10_000)]
        rows: usize,
        #[arg(long, default_value_t = 4)]
        files_per_day: usize,
        /// First landing day, YYYY-MM-DD.
        #[arg(long, default_value = "2026-11-01")]
        start: chrono::NaiveDate,
        #[arg(long, default_value_t = 42)]
        seed: u64,
        /// Share of rows re-sending an earlier key.
        #[arg(long, default_value_t = 0.05)]
        duplicate_ratio: f64,
        /// Share of bad lines.
        #[arg(long, default_value_t = 0.001)]
        bad_ratio: f64,
        /// Number of the first file (to add a later batch beside an earlier one).
        #[arg(long, default_value_t = 0)]
        first_file: usize,
        /// Distinct customers; with `--sessions` each, the number of keys per day. Few
        /// customers make many duplicates, many make mostly distinct keys.
        #[arg(long, default_value_t = 20_000)]
        customers: u64,
        /// Sessions per customer and day (the key's third part): 10 makes some keys recur by
        /// chance across files; a large number makes every new row a new key.
        #[arg(long, default_value_t = 10)]
        sessions: u64,
        /// Days the files land on, one after the other (0: `--files` / `--files-per-day`).
        /// `--days 1` puts every row on one date.
        #[arg(long, default_value_t = 0)]
        days: usize,
        /// Characters of filler added to each line's second field (wide rows: `--pad 1900`
        /// makes lines of about 2 KB).
        #[arg(long, default_value_t = 0)]
        pad: usize,
        /// Spread every file's rows over this many days from --start (late data: every file
        /// carries every date; 0: mostly its landing day).
        #[arg(long, default_value_t = 0)]
        span: u64,
    },
}

/// glibc's allocator, tuned for a process that allocates and frees large blocks from many
/// threads: two arenas instead of eight per core, and blocks of 4 MiB and more mapped and
/// returned to the system when freed (glibc otherwise raises that threshold as it goes and keeps
/// freed blocks). Measured on the one-date benchmark: peak memory 1,082 → 824 MiB, same time.
fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets allocator parameters; it is called before any other thread
    // exists.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
        libc::mallopt(libc::M_MMAP_THRESHOLD, 4 << 20);
    }
}

fn main() -> ExitCode {
    tune_allocator();
    let cli = Cli::parse();
    let code = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime.block_on(dispatch(cli)),
        Err(e) => {
            eprintln!("error: cannot start: {e}");
            exit_code::FAILURE
        }
    };
    lakeload::runlog::cleanup();
    ExitCode::from(code as u8)
}

fn load_config(cli: &Cli, mode: Option<&str>) -> Result<Config, Error> {
    let mut raw: RawConfig = config::load_raw(cli.config.as_deref(), &cli.sets)?;
    if let Some(mode) = mode {
        raw.apply_sets(&[format!("run.mode={mode}")])?;
    }
    let config = Config::from_raw(&raw)?;
    lakeload::runlog::init(config.logging.format, &config.logging.level);
    Ok(config)
}

fn fail(e: &Error) -> i32 {
    eprintln!("error: {e}");
    e.exit_code()
}

/// Prints a command's outcome, as JSON or as `text` gives it; returns the exit code.
fn show<T: serde::Serialize>(
    outcome: lakeload::error::Result<T>,
    json: bool,
    text: impl FnOnce(&T) -> String,
) -> i32 {
    match outcome {
        Ok(value) if json => print_json(&value),
        Ok(value) => lakeload::out!("{}", text(&value)),
        Err(e) => return fail(&e),
    }
    exit_code::OK
}

fn print_json(value: &impl serde::Serialize) {
    match serde_json::to_string(value) {
        Ok(json) => lakeload::outln!("{json}"),
        Err(e) => eprintln!("error: cannot print JSON: {e}"),
    }
}

async fn dispatch(cli: Cli) -> i32 {
    let interactive = std::io::stderr().is_terminal();
    match &cli.command {
        Command::Run {
            mode,
            json,
            run_id,
            etlrun,
            etlrun_uid,
            pod_uid,
        } => {
            let mut config = match load_config(&cli, mode.as_deref()) {
                Ok(c) => c,
                Err(e) => return fail(&e),
            };
            if let Some(id) = run_id {
                if let Err(e) = config::validate_run_id(id) {
                    return fail(&e);
                }
                config.run.run_id = Some(id.clone());
            }
            let report = lakeload::run::run(&config, interactive && !*json).await;
            match (&report.summary, *json) {
                (Some(summary), true) => print_json(summary),
                (Some(summary), false) => eprint!("{}", lakeload::report::format_summary(summary)),
                (None, true) => {
                    let e = report.result.as_ref().err();
                    print_json(&serde_json::json!({
                        "status": "failed",
                        "exit_code": e.map_or(exit_code::FAILURE, Error::exit_code),
                        "error": e.map(ToString::to_string),
                    }));
                }
                (None, false) => {}
            }
            // A worker that never held the lock (or never read its config) has no summary:
            // the operator reads its exit code and last words from the pod instead.
            if let (Some(name), Some(uid), Some(summary)) = (etlrun, etlrun_uid, &report.summary) {
                let owner = lakeload_types::result::RunOwner {
                    name: name.clone(),
                    uid: uid.clone(),
                    pod_uid: pod_uid.clone().filter(|u| !u.is_empty()),
                };
                let _ = lakeload::run::etlrun_result::report(&owner, summary).await;
            }
            match report.result {
                Ok(()) => exit_code::OK,
                Err(e) if report.summary.is_some() => e.exit_code(),
                Err(e) => fail(&e),
            }
        }
        Command::Plan { mode, json } => {
            let config = match load_config(&cli, mode.as_deref()) {
                Ok(c) => c,
                Err(e) => return fail(&e),
            };
            show(
                lakeload::inspect::preview::preview(&config).await,
                *json,
                lakeload::inspect::preview::format_preview,
            )
        }
        Command::History { limit, json } => {
            let config = match load_config(&cli, None) {
                Ok(c) => c,
                Err(e) => return fail(&e),
            };
            show(
                lakeload::inspect::history::history(&config, *limit).await,
                *json,
                |versions| lakeload::inspect::history::format_history(versions),
            )
        }
        Command::Rollback {
            to_version,
            allow_missing,
            json,
        } => {
            let config = match load_config(&cli, None) {
                Ok(c) => c,
                Err(e) => return fail(&e),
            };
            show(
                lakeload::maintain::rollback::rollback(&config, *to_version, *allow_missing).await,
                *json,
                lakeload::maintain::rollback::format_restored,
            )
        }
        Command::Vacuum {
            retain,
            force,
            dry_run,
            json,
        } => {
            let config = match load_config(&cli, None) {
                Ok(c) => c,
                Err(e) => return fail(&e),
            };
            let retain = match retain.as_deref().map(lakeload::maintain::vacuum::parse_retention) {
                None => None,
                Some(Ok(r)) => Some(r),
                Some(Err(why)) => return fail(&lakeload::error::Error::Config(format!("--retain {why}"))),
            };
            show(
                lakeload::maintain::vacuum::vacuum(&config, retain, *force, *dry_run).await,
                *json,
                lakeload::maintain::vacuum::format_vacuumed,
            )
        }
        Command::Optimize { dry_run, json } => {
            let config = match load_config(&cli, None) {
                Ok(c) => c,
                Err(e) => return fail(&e),
            };
            show(
                lakeload::maintain::optimize::optimize(&config, *dry_run).await,
                *json,
                lakeload::maintain::optimize::format_optimized,
            )
        }
        Command::Status { json } => {
            let config = match load_config(&cli, None) {
                Ok(c) => c,
                Err(e) => return fail(&e),
            };
            show(
                lakeload::inspect::status::status(&config).await,
                *json,
                lakeload::inspect::status::format_status,
            )
        }
        Command::Unlock { force } => {
            let config = match load_config(&cli, None) {
                Ok(c) => c,
                Err(e) => return fail(&e),
            };
            match lakeload::commit::lock::unlock(&config, *force).await {
                Ok(message) => {
                    lakeload::outln!("{message}");
                    exit_code::OK
                }
                Err(e) => fail(&e),
            }
        }
        Command::Demo { dir } => {
            lakeload::runlog::init(LogFormat::Text, "warn");
            match lakeload::demo::demo(dir, interactive).await {
                Ok(_) => exit_code::OK,
                Err(e) => fail(&e),
            }
        }
        Command::Generate {
            dir,
            files,
            rows,
            files_per_day,
            start,
            seed,
            duplicate_ratio,
            bad_ratio,
            first_file,
            customers,
            sessions,
            days,
            pad,
            span,
        } => {
            let options = lakeload::demo::generate::GenerateOptions {
                dir: dir.clone(),
                files: *files,
                rows_per_file: *rows,
                files_per_day: *files_per_day,
                start: *start,
                seed: *seed,
                duplicate_ratio: *duplicate_ratio,
                bad_ratio: *bad_ratio,
                first_file: *first_file,
                customers: *customers,
                sessions: *sessions,
                days: *days,
                pad: *pad,
                span: *span,
            };
            match lakeload::demo::generate::generate(&options) {
                Ok(r) => {
                    lakeload::outln!(
                        "wrote {} files, {} lines, {} under {}",
                        r.files,
                        r.lines,
                        lakeload::report::bytes(r.bytes),
                        dir.display()
                    );
                    exit_code::OK
                }
                Err(e) => fail(&Error::Other(format!("cannot write to {}: {e}", dir.display()))),
            }
        }
    }
}
