//! `lakeload history`: the versions of a `delta`-format table, newest first — when each was
//! committed, by which run and mode, and what it added and removed — read from its log.

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::config::{Config, TableFormat};
use crate::error::{Error, Result};
use crate::report::thousands;
use crate::table::delta::log::Action;
use crate::table::delta::replay::{log_versions, read_commit};

#[derive(Debug, Clone, Serialize)]
pub struct TableVersion {
    pub version: u64,
    pub committed_at: Option<DateTime<Utc>>,
    /// The lakeload run that committed it (none for another writer's commit).
    pub run_id: Option<String>,
    pub operation: Option<String>,
    pub mode: Option<String>,
    /// Rows in the files it added (a file added back with another deletion vector adds none).
    pub rows_added: i64,
    /// Rows of files it kept that it marked deleted (deletion vectors).
    pub rows_marked_deleted: i64,
    pub files_added: usize,
    pub files_removed: usize,
}

/// The table's versions, newest first; the newest `limit` of them when given. Commits are read
/// one at a time, newest first, and only what describes each is kept: years of versions (and
/// commits of other writers with thousands of files each) cost one commit's memory.
pub async fn history(config: &Config, limit: Option<usize>) -> Result<Vec<TableVersion>> {
    if config.target.format != TableFormat::Delta {
        return Err(Error::Config(
            "target.format = parquet replaces each date's object in place and keeps no versions; \
             history, time travel and rollback need target.format = delta (a full run rebuilds \
             the table in that format)"
                .into(),
        ));
    }
    let storage = crate::storage::open(&config.target.url, &config.aws).await?;
    let versions = log_versions(&storage).await?;
    let mut described = Vec::new();
    for version in versions.into_iter().rev().take(limit.unwrap_or(usize::MAX)) {
        described.push(describe(version, &read_commit(&storage, version).await?));
    }
    Ok(described)
}

fn describe(version: u64, actions: &[Action]) -> TableVersion {
    let mut out = TableVersion {
        version,
        committed_at: None,
        run_id: None,
        operation: None,
        mode: None,
        rows_added: 0,
        rows_marked_deleted: 0,
        files_added: 0,
        files_removed: 0,
    };
    // A file removed and added back in one commit is the same file with another vector: the
    // rows it newly deletes were marked, not added.
    let removed: std::collections::HashMap<&str, i64> = actions
        .iter()
        .filter_map(|action| match action {
            Action::Remove(remove) => Some((
                remove.path.as_str(),
                remove.deletion_vector.as_ref().map_or(0, |dv| dv.cardinality),
            )),
            _ => None,
        })
        .collect();
    for action in actions {
        match action {
            Action::Add(add) => {
                out.files_added += 1;
                match removed.get(add.path.as_str()) {
                    Some(deleted_before) => out.rows_marked_deleted += add.deleted_rows() - deleted_before,
                    None => out.rows_added += add.live_rows().unwrap_or(0),
                }
            }
            Action::Remove(_) => out.files_removed += 1,
            Action::CommitInfo(info) => {
                out.committed_at = info["timestamp"]
                    .as_i64()
                    .and_then(DateTime::from_timestamp_millis);
                out.operation = info["operation"].as_str().map(str::to_string);
                out.run_id = info["lakeload"]["runId"].as_str().map(str::to_string);
                out.mode = info["lakeload"]["mode"].as_str().map(str::to_string);
            }
            _ => {}
        }
    }
    out
}

/// The versions as a table for the terminal.
pub fn format_history(versions: &[TableVersion]) -> String {
    if versions.is_empty() {
        return "no versions yet: the table has not been written\n".into();
    }
    let mut out = format!(
        "{:>7}  {:<20}  {:<28}  {:<11}  {:>12}  {:>12}  {:>5}  {:>7}\n",
        "version", "committed (UTC)", "run", "mode", "rows added", "rows marked", "files", "removed"
    );
    for v in versions {
        out += &format!(
            "{:>7}  {:<20}  {:<28}  {:<11}  {:>12}  {:>12}  {:>5}  {:>7}\n",
            v.version,
            v.committed_at
                .map_or("-".into(), |t| t.format("%Y-%m-%d %H:%M:%S").to_string()),
            v.run_id.as_deref().unwrap_or("(another writer)"),
            v.mode.as_deref().or(v.operation.as_deref()).unwrap_or("-"),
            thousands(v.rows_added.max(0) as u64),
            thousands(v.rows_marked_deleted.max(0) as u64),
            v.files_added,
            v.files_removed
        );
    }
    out
}
