//! lakeload: pipe-separated, gzip-compressed text files → a de-duplicated, date-partitioned
//! Parquet table. The `lakeload` binary is a thin CLI over this library. What the operator
//! shares with it (the summary, the `EtlRunResult` it reports to, table locations) lives in
//! the small `lakeload-types` crate.
//!
//! Data flows one way: [`config`] → [`plan`] (source listing vs [`state`]) → [`read`] (read &
//! clean) → [`route`] (rows by date) → [`merge`] (latest row per key) → [`table`] (write) →
//! [`commit`] (table version and state) → [`summary`]. [`run`] drives it under the table's
//! lock; [`maintain`] (optimize, rollback, vacuum) and [`inspect`] (status, history, plan) are
//! the other commands. No two modules import each other, directly or in a circle: a stage uses
//! the stage it hands rows to ([`route`] → [`merge`] → [`table`]), the [`state`] and the shared
//! modules: [`block`] (rows column-wise), [`storage`], [`target`], [`bookkeeping`],
//! [`scratch`], [`dates`], [`error`].

pub mod block;
pub mod bookkeeping;
pub mod commit;
pub mod config;
pub mod dates;
pub mod demo;
pub mod error;
pub mod faults;
pub mod inspect;
pub mod maintain;
pub mod merge;
pub mod plan;
pub mod read;
pub mod report;
pub mod route;
pub mod run;
pub mod runlog;
pub mod scratch;
pub mod secret;
pub mod state;
pub mod storage;
pub mod table;
pub mod target;
#[cfg(test)]
mod test_fixtures;

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
