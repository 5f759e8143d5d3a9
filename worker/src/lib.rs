//! lakeload: pipe-separated, gzip-compressed text files → a de-duplicated, date-partitioned
//! Parquet table. The `lakeload` binary is a thin CLI over this library. What the operator
//! shares with it (the summary, the `EtlRunResult` it reports to, table locations) lives in
//! the small `lakeload-types` crate.
//!
//! Data flows one way: [`config`] → [`plan`] (source listing vs [`state`]) → [`reader`] (read &
//! clean, [`row`]) → [`router`] (rows by date) → [`merge`] (latest row per key) → [`table`]
//! (write) → [`state`] (commit) → [`summary`]. [`run`] drives it under the table [`lock`].

pub mod block;
pub mod bookkeeping;
pub mod budget;
pub mod commit;
pub mod config;
pub mod date_merge;
pub mod dates;
pub mod demo;
pub mod diagnose;
pub mod error;
pub mod etlrun_result;
pub mod faults;
pub mod generate;
pub mod history;
pub mod ingest;
pub mod lock;
pub mod memory;
pub mod merge;
pub mod optimize;
pub mod ownership;
pub mod plan;
pub mod preview;
pub mod progress;
pub mod reader;
pub mod rejects;
pub mod report;
pub mod rollback;
pub mod router;
pub mod row;
pub mod run;
pub mod run_stats;
pub mod runlog;
pub mod secret;
pub mod settings;
pub mod spill;
pub mod state;
pub mod status;
pub mod storage;
pub mod store_check;
pub mod table;
pub mod target;
pub mod vacuum;

pub use config::Config;
// Shared with the operator (the `lakeload-types` crate).
pub use error::{Error, Result};
pub use lakeload_types::{location, summary};

/// `println!` for the CLI's output. When the reader has gone away (`lakeload status | head -1`)
/// the program ends quietly, as Unix tools do, instead of panicking with a backtrace.
#[macro_export]
macro_rules! outln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        $crate::stdout_result(writeln!(std::io::stdout().lock(), $($arg)*));
    }};
}

/// `print!` for the CLI's output; see [`outln!`].
#[macro_export]
macro_rules! out {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        $crate::stdout_result(write!(std::io::stdout().lock(), $($arg)*));
    }};
}

#[doc(hidden)]
pub fn stdout_result(result: std::io::Result<()>) {
    if let Err(e) = result {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        eprintln!("error: cannot write the output: {e}");
    }
}
