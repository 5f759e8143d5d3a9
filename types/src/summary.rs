//! The run summary (`_lakeload/runs/<run_id>.json`, SPEC §6), also printed by `--json` and read
//! by the operator.

use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// A run's mode (SPEC §4): rebuild the table, or merge new and changed files into it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    Full,
    Incremental,
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Mode::Full => "full",
            Mode::Incremental => "incremental",
        })
    }
}

impl std::str::FromStr for Mode {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "full" => Ok(Mode::Full),
            "incremental" => Ok(Mode::Incremental),
            _ => Err("expected full or incremental".into()),
        }
    }
}

/// Row counts of a run. `rows_read` = blank + rejected + inserted + updated + superseded.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RowCounts {
    pub rows_read: u64,
    pub rows_blank: u64,
    pub rows_rejected: u64,
    pub rows_inserted: u64,
    pub rows_updated: u64,
    pub rows_superseded: u64,
}

impl RowCounts {
    /// The accounting identity every run summary satisfies.
    pub fn balances(&self) -> bool {
        self.rows_read
            == self.rows_blank
                + self.rows_rejected
                + self.rows_inserted
                + self.rows_updated
                + self.rows_superseded
    }
}

/// A processed file, as the summary and the operator's manifest list it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestEntry {
    pub key: String,
    pub size: u64,
    pub etag: Option<String>,
    pub rows: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunSummary {
    pub run_id: String,
    pub mode: Mode,
    /// `succeeded` or `failed`.
    pub status: String,
    pub started_at: DateTime<Utc>,
    pub finished_at: DateTime<Utc>,
    pub duration_seconds: f64,
    pub exit_code: i32,
    pub error: Option<String>,
    pub source_url: String,
    pub target_url: String,
    /// Keys of the files this run processed.
    pub files: Vec<String>,
    /// The same files with size, ETag and rows (the operator's manifest).
    pub manifest: Vec<ManifestEntry>,
    pub bytes_read: u64,
    #[serde(flatten)]
    pub counts: RowCounts,
    /// Dates whose object this run wrote, `YYYY-MM-DD`.
    pub dates_written: Vec<String>,
    /// Dates whose object this run deleted (full mode: dates with no rows left).
    pub dates_deleted: Vec<String>,
    /// Keys of the table's objects a full run deleted (dates with no rows, an earlier layout).
    #[serde(default)]
    pub objects_deleted: Vec<String>,
    pub bytes_written: u64,
    /// The run's memory budget (`run.memory_limit`) in bytes, and how it was chosen.
    #[serde(default)]
    pub memory_limit: u64,
    #[serde(default)]
    pub memory_limit_chosen: String,
    /// Rows written to local disk because they did not fit the budget.
    #[serde(default)]
    pub bytes_spilled: u64,
    /// Whether the run changed the table or the state (false when it failed before any write).
    pub table_changed: bool,
    /// The table version the run committed (`target.format = delta`; none when it committed
    /// none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub table_version: Option<u64>,
    pub rejects_url: Option<String>,
    pub log_url: Option<String>,
    pub state_url: Option<String>,
    pub lakeload_version: String,
}
