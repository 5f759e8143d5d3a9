//! `lakeload status`: the last runs, the files processed, rows and bytes by date, and the lock
//! holder, all read from the table's bookkeeping (no data object is opened).

use serde::Serialize;

use crate::commit::lock::{Holder, LockInfo, current_holder};
use crate::config::Config;
use crate::error::Result;
use crate::report::{bytes, thousands};
use crate::state::StoreCheck;
use crate::state::settings::TableSettings;
use crate::summary::RunSummary;
use crate::target::Target;

/// How many of the latest runs `status` shows.
pub const RECENT_RUNS: usize = 10;

#[derive(Debug, Clone, Serialize)]
pub struct DateStatus {
    pub date: String,
    pub rows: u64,
    pub bytes: u64,
    /// Objects holding the date's rows (several for a Delta date appended to).
    pub files: usize,
    /// Rows of those objects marked deleted (Delta deletion vectors): on storage, not read;
    /// `optimize` drops them.
    pub deleted_rows: u64,
    pub run_id: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Status {
    pub table_url: String,
    pub state_url: String,
    pub files: usize,
    pub rows: u64,
    pub bytes: u64,
    pub dates: Vec<DateStatus>,
    pub last_run_id: Option<String>,
    /// The `delta`-format table version the state matches.
    pub table_version: Option<u64>,
    /// Latest first.
    pub runs: Vec<RunSummary>,
    pub lock: Option<LockInfo>,
    /// Whether the lock's lease has ended (judged by the store's clock when it is known).
    pub lock_expired: bool,
    /// Set when a lock object exists but cannot be read.
    pub lock_unreadable: bool,
    /// How the table was built (absent until a run of this version records it).
    pub settings: Option<TableSettings>,
    /// Objects a run announced and no run confirmed yet (it crashed in between).
    pub unconfirmed: Vec<String>,
    /// What the last store check found.
    pub store: Option<StoreCheck>,
}

pub async fn status(config: &Config) -> Result<Status> {
    let target = Target::open(config).await?;
    let loaded = target.state.load().await?;
    let state = loaded.state;
    let dates: Vec<DateStatus> = state
        .partitions
        .iter()
        .map(|(date, p)| DateStatus {
            date: date.clone(),
            rows: p.rows,
            bytes: p.bytes,
            files: p.keys().count(),
            deleted_rows: p.deleted_rows,
            run_id: p.run_id.clone(),
        })
        .collect();

    let mut run_keys: Vec<String> = target
        .storage
        .list(crate::bookkeeping::RUNS_DIR)
        .await?
        .into_iter()
        .map(|o| o.key)
        .filter(|k| k.ends_with(".json"))
        .collect();
    // Run ids start with their UTC start time, so key order is time order.
    run_keys.sort();
    let mut runs = Vec::new();
    for key in run_keys.iter().rev().take(RECENT_RUNS) {
        if let Some((body, _)) = target.storage.get(key).await?
            && let Ok(summary) = serde_json::from_slice::<RunSummary>(&body)
        {
            runs.push(summary);
        }
    }
    let (lock, lock_expired, lock_unreadable) = match current_holder(&target.storage).await? {
        Holder::Free => (None, false, false),
        Holder::Held { info, expired, .. } => (Some(info), expired, false),
        Holder::Unreadable { .. } => (None, false, true),
    };
    Ok(Status {
        table_url: config.target.url.to_string(),
        state_url: target.state.url(),
        files: state.files.len(),
        rows: dates.iter().map(|d| d.rows).sum(),
        bytes: dates.iter().map(|d| d.bytes).sum(),
        dates,
        last_run_id: state.last_run_id,
        table_version: state.table_version,
        runs,
        lock,
        lock_expired,
        lock_unreadable,
        settings: state.settings,
        unconfirmed: state.unconfirmed,
        store: state.store,
    })
}

pub fn format_status(s: &Status) -> String {
    let mut out = format!("table  {}\n", s.table_url);
    out += &format!(
        "       {} files loaded, {} rows in {} dates, {}\n",
        thousands(s.files as u64),
        thousands(s.rows),
        s.dates.len(),
        bytes(s.bytes)
    );
    if let Some(version) = s.table_version {
        out += &format!("       Delta table version {version}\n");
    }
    out += match (&s.lock, s.lock_unreadable) {
        (Some(info), _) => format!(
            "lock   held by {}{}\n",
            info.describe(),
            if s.lock_expired { " (lease expired)" } else { "" }
        ),
        (None, true) => {
            "lock   an unreadable lock object exists; `lakeload unlock --force` removes it\n".to_string()
        }
        (None, false) => "lock   free\n".to_string(),
    }
    .as_str();
    if let Some(t) = &s.settings {
        out += &format!(
            "built  columns {}; dates {}; key {}; partition {}; order {}; layout {}{}\n",
            t.columns.join(","),
            t.date_columns.join(","),
            t.key.join(","),
            t.partition_column,
            t.order,
            t.layout,
            t.timestamp_format
                .as_ref()
                .map(|f| format!("; timestamp_format {f}"))
                .unwrap_or_default()
        );
    }
    if let Some(store) = &s.store {
        out += &format!(
            "store  {}: conditional writes {}\n",
            store.endpoint,
            if store.conditional_writes {
                "enforced"
            } else {
                "IGNORED (lock.allow_unsafe_store)"
            }
        );
    }
    if !s.unconfirmed.is_empty() {
        out += &format!(
            "       {} object(s) announced by a run that did not finish: the table owns them; the next run takes them up\n",
            s.unconfirmed.len()
        );
    }
    if !s.runs.is_empty() {
        out += "\nlast runs\n";
        for r in &s.runs {
            out += &format!(
                "  {}  {:<11} {:<9} exit {:<3} files {:>5}  rows read {:>12}  dates {:>4}\n",
                r.run_id,
                r.mode.to_string(),
                r.status,
                r.exit_code,
                r.files.len(),
                thousands(r.counts.rows_read),
                r.dates_written.len()
            );
        }
    }
    if !s.dates.is_empty() {
        out += "\nrows by date\n";
        let shown = 31;
        if s.dates.len() > shown {
            out += &format!("  … {} earlier dates\n", s.dates.len() - shown);
        }
        for d in s.dates.iter().skip(s.dates.len().saturating_sub(shown)) {
            out += &format!(
                "  {}  {:>12} rows  {:>10}{}{}\n",
                d.date,
                thousands(d.rows),
                bytes(d.bytes),
                match d.files {
                    0 | 1 => String::new(),
                    n => format!("  in {n} files"),
                },
                match d.deleted_rows {
                    0 => String::new(),
                    n => format!(", {} deleted rows kept in them", thousands(n)),
                }
            );
        }
    }
    out
}
