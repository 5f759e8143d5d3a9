//! The error type of a run, and the exit code each kind of error maps to (SPEC §7).

use crate::storage::StorageError;

/// Exit codes of the `lakeload` binary, as documented in SPEC §7.
pub mod exit_code {
    pub const OK: i32 = 0;
    pub const FAILURE: i32 = 1;
    pub const USAGE: i32 = 2;
    pub const TOO_MANY_REJECTS: i32 = 65;
    pub const LOCKED: i32 = 75;
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A configuration mistake; the message names the key and the fix.
    #[error("{0}")]
    Config(String),

    /// Another run holds the table's lock.
    #[error("the table is locked by another run: {holder}")]
    Locked { holder: String },

    /// Rejected rows exceed `run.max_reject_ratio`; nothing was committed. `complete` is false
    /// when the run stopped reading early, once the ratio could no longer end under the limit.
    #[error(
        "{rejected} of {read} rows {}were rejected ({ratio:.4} > run.max_reject_ratio = {limit}); \
         nothing was committed. See {rejects_file} for the lines and reasons, fix the source \
         or raise run.max_reject_ratio",
        if *complete { "" } else { "read so far (reading stopped: the ratio could no longer end under the limit) " }
    )]
    TooManyRejects {
        rejected: u64,
        read: u64,
        ratio: f64,
        limit: f64,
        rejects_file: String,
        complete: bool,
    },

    /// The first lines of a source file nearly all failed the same way (or line 1 is an
    /// undeclared header): reading stopped early, nothing was committed.
    #[error(
        "source file {file}: {}. Reading stopped after its first {} lines{}; nothing was committed",
        diagnosis.cause,
        diagnosis.sampled,
        if diagnosis.config_error { String::new() } else {
            format!(" ({} rejected{})", diagnosis.rejected,
                diagnosis.reason.map(|r| format!(", mostly {r}")).unwrap_or_default())
        }
    )]
    BadInput { file: String, diagnosis: Diagnosis },

    /// The run lost its lock (another run took it over); it stopped writing.
    #[error("the run lost its lock on the table: {0}; it wrote nothing more")]
    LockLost(String),

    /// Another writer committed to the table first, and its commit touched what this run
    /// read or replaces: nothing of the run was committed.
    #[error("{0}")]
    Conflict(String),

    /// SIGINT or SIGTERM arrived.
    #[error("interrupted by {0}")]
    Interrupted(&'static str),

    #[error(transparent)]
    Storage(#[from] StorageError),

    #[error("{0}")]
    Other(String),
}

impl Error {
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Config(_) => exit_code::USAGE,
            Error::Locked { .. } => exit_code::LOCKED,
            Error::TooManyRejects { .. } => exit_code::TOO_MANY_REJECTS,
            Error::BadInput { diagnosis, .. } if diagnosis.config_error => exit_code::USAGE,
            Error::BadInput { .. } => exit_code::TOO_MANY_REJECTS,
            Error::LockLost(_)
            | Error::Conflict(_)
            | Error::Interrupted(_)
            | Error::Storage(_)
            | Error::Other(_) => exit_code::FAILURE,
        }
    }

    pub fn other(message: impl std::fmt::Display) -> Self {
        Error::Other(message.to_string())
    }

    /// An I/O failure on the run's scratch disk as an error that says `what` failed (e.g.
    /// "cannot spill rows to disk") and names `run.spill_dir`, the setting that moves the disk.
    pub fn scratch(what: &'static str) -> impl FnOnce(std::io::Error) -> Error {
        move |e| Error::Other(format!("{what} (run.spill_dir): {e}"))
    }
}

impl From<polars::error::PolarsError> for Error {
    fn from(e: polars::error::PolarsError) -> Self {
        Error::Other(format!("parquet: {e}"))
    }
}

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Self {
        Error::Other(format!("i/o: {e}"))
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Why reading a file stopped early: its first lines nearly all failed the same way, as
/// `read::diagnose` found them.
#[derive(Debug, Clone, PartialEq)]
pub struct Diagnosis {
    /// Config error (exit 2: a setting is certainly wrong, e.g. a header) or too many rejects
    /// (exit 65).
    pub config_error: bool,
    /// The reason most sampled lines were rejected for, as the rejects file names it.
    pub reason: Option<&'static str>,
    pub rejected: u64,
    pub sampled: u64,
    /// The likely cause and the fix.
    pub cause: String,
}

impl std::fmt::Display for Diagnosis {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.cause)
    }
}

impl std::error::Error for Diagnosis {}
