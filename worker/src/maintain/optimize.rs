//! `lakeload optimize`: each date's small files packed into one, and the rows deletion vectors
//! mark left out, in a version that changes no data (`dataChange = false`, `OPTIMIZE`).
//!
//! Which files ([`plan`], a pure decision on the table's files): in each date, every file with
//! deleted rows (rewriting it is how they leave storage), then the date's other files smaller
//! than `optimize.target_file_size`, smallest first, while the new file stays within that size.
//! A date is compacted when that picks two files or more, or one with deleted rows; larger files
//! stay as they are.
//!
//! How: through a run's transaction path (`commit`): under the table's lock, from the state
//! caught up with the log, the new files announced, written, committed in one table version
//! (other writers' commits are checked as for a run: a compaction conflicts only with commits
//! that removed files it rewrote), then the state. A run calls [`compact`] itself after its
//! commit for the dates it wrote that pass `optimize.auto_max_files` or
//! `optimize.auto_max_deleted_share`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use serde::Serialize;

use crate::block::FileTable;
use crate::commit::lock::TableLock;
use crate::commit::{TableCommit, under_lock};
use crate::config::{Config, Mode, OptimizeConfig, TableFormat};
use crate::dates::format_days;
use crate::error::{Error, Result};
use crate::scratch::SpillDir;
use crate::state::Loaded;
use crate::table::{Seen, StoredFile, Transaction};
use crate::target::Target;

/// What one date's compaction rewrites.
#[derive(Debug, Clone, Serialize)]
pub struct DateCompaction {
    pub date: String,
    /// The files rewritten into one.
    pub files: Vec<String>,
    /// The date's files before (the rewritten and the kept).
    pub files_before: usize,
    /// Rows the new file holds.
    pub rows: u64,
    /// Rows marked deleted in the rewritten files: they leave storage.
    pub deleted_rows: u64,
    /// Bytes of the rewritten files.
    pub bytes: u64,
}

/// What `optimize` did, or would do with `--dry-run`.
#[derive(Debug, Clone, Serialize)]
pub struct Optimized {
    pub table_url: String,
    pub dry_run: bool,
    /// The version committed (none: nothing to do, or a dry run).
    pub table_version: Option<u64>,
    pub dates: Vec<DateCompaction>,
    /// Bytes of the new files.
    pub bytes_written: u64,
}

/// The compactions of the table's dates (`files`: each date's files), or of `only` those.
pub fn plan(
    files: &BTreeMap<i32, Vec<StoredFile>>,
    target_file_size: u64,
    only: Option<&dyn Fn(i32) -> bool>,
) -> Vec<(i32, Vec<StoredFile>)> {
    let mut out = Vec::new();
    for (&date, date_files) in files {
        if only.is_some_and(|only| !only(date)) {
            continue;
        }
        let (mut chosen, mut small): (Vec<StoredFile>, Vec<StoredFile>) =
            date_files.iter().cloned().partition(|f| f.deleted_rows > 0);
        small.retain(|f| f.bytes < target_file_size);
        small.sort_by_key(|f| (f.bytes, f.key.clone()));
        let mut bytes: u64 = chosen.iter().map(|f| f.bytes).sum();
        for file in small {
            if bytes + file.bytes > target_file_size && !chosen.is_empty() {
                break;
            }
            bytes += file.bytes;
            chosen.push(file);
        }
        if chosen.len() >= 2 || chosen.iter().any(|f| f.deleted_rows > 0) {
            chosen.sort_by(|a, b| a.key.cmp(&b.key));
            out.push((date, chosen));
        }
    }
    out
}

/// Whether a run's date of `files` is due for a compaction after it.
pub fn due(files: &[StoredFile], settings: &OptimizeConfig) -> bool {
    let rows: u64 = files.iter().map(|f| f.rows + f.deleted_rows).sum();
    let deleted: u64 = files.iter().map(|f| f.deleted_rows).sum();
    (settings.auto_max_files > 0 && files.len() > settings.auto_max_files)
        || (rows > 0 && deleted as f64 / rows as f64 > settings.auto_max_deleted_share)
}

/// `lakeload optimize [--dry-run]`.
pub async fn optimize(config: &Config, dry_run: bool) -> Result<Optimized> {
    if config.target.format != TableFormat::Delta {
        return Err(Error::Config(
            "target.format = parquet stores each date in one object: there is nothing to \
             optimize; optimize is for target.format = delta tables"
                .into(),
        ));
    }
    let target = Target::open(config).await?;
    let run_id = format!("optimize-{}", crate::bookkeeping::new_run_id(Utc::now()));
    let lease = Duration::from_secs(config.lock.lease_seconds);
    under_lock(&target.storage, &run_id, lease, async |lock| {
        let (loaded, table) = target.load_state(&run_id).await?;
        let files = table.stored_files();
        let planned = plan(&files, config.optimize.target_file_size, None);
        match dry_run {
            true => Ok(described(&target, &files, &planned, true)),
            false => compact(config, &target, lock, &run_id, loaded, table, &files, planned).await,
        }
    })
    .await
}

fn described(
    target: &Target,
    files: &BTreeMap<i32, Vec<StoredFile>>,
    planned: &[(i32, Vec<StoredFile>)],
    dry_run: bool,
) -> Optimized {
    Optimized {
        table_url: target.storage.root().to_string(),
        dry_run,
        table_version: None,
        dates: planned
            .iter()
            .map(|(date, chosen)| DateCompaction {
                date: format_days(*date),
                files: chosen.iter().map(|f| f.key.clone()).collect(),
                files_before: files.get(date).map_or(0, Vec::len),
                rows: chosen.iter().map(|f| f.rows).sum(),
                deleted_rows: chosen.iter().map(|f| f.deleted_rows).sum(),
                bytes: chosen.iter().map(|f| f.bytes).sum(),
            })
            .collect(),
        bytes_written: 0,
    }
}

/// Rewrites each planned date's files into one, and commits them (the table, then the state)
/// under `lock`, from the state `loaded` and the transaction `table` begun with it; `files`
/// are the table's files ([`Transaction::stored_files`]), `planned` what [`plan`] chose of
/// them.
#[allow(clippy::too_many_arguments)]
pub async fn compact(
    config: &Config,
    target: &Target,
    lock: &TableLock,
    run_id: &str,
    loaded: Loaded,
    table: Arc<dyn Transaction>,
    files: &BTreeMap<i32, Vec<StoredFile>>,
    planned: Vec<(i32, Vec<StoredFile>)>,
) -> Result<Optimized> {
    let mut out = described(target, files, &planned, false);
    if planned.is_empty() {
        return Ok(out);
    }
    table.rearranges_only();
    let mut commit = TableCommit::new(target, table.as_ref(), lock, run_id, loaded);
    let keys: Vec<String> = planned.iter().map(|(date, _)| table.key_for(*date)).collect();
    commit.announce(&keys).await?;
    let spill = Arc::new(SpillDir::new(config.run.spill_dir.clone()));
    let group_bytes = crate::route::budget::row_group_bytes(config);
    // A slice of stored rows at a time, as a merge reads them.
    let slice_bytes = (config.run.memory_limit / 16).max(1 << 20) as usize;
    for (date, chosen) in &planned {
        let rewritten: Vec<String> = chosen.iter().map(|f| f.key.clone()).collect();
        let others: Vec<String> = files
            .get(date)
            .into_iter()
            .flatten()
            .map(|f| f.key.clone())
            .filter(|k| !rewritten.contains(k))
            .collect();
        table.keep(&others);
        let stored = table.read_files(*date, &rewritten, &spill).await?;
        let encoder = table.encoder(*date, &spill, group_bytes).await?;
        let body = tokio::task::spawn_blocking(move || {
            let mut encoder = encoder;
            let no_files = FileTable::new(Arc::from(Vec::new()));
            if let Some(mut stored) = stored {
                while let Some(slice) = stored.next_slice(slice_bytes)? {
                    let take: Vec<u32> = (0..slice.len() as u32).collect();
                    encoder.add_with_stored(&slice, &[], &[], &take, &no_files)?;
                }
            }
            encoder.finish()
        })
        .await
        .map_err(Error::other)??;
        out.bytes_written += commit.write_date(*date, body, Seen::Absent).await?;
    }
    let version = commit.commit_table(Mode::Incremental, &[]).await?;
    commit
        .commit_state(
            Mode::Incremental,
            None,
            Vec::new(),
            version,
            Vec::new(),
            &Default::default(),
        )
        .await?;
    out.table_version = version;
    tracing::info!(
        "optimize {run_id}: {} date(s) compacted, {} deleted row(s) dropped{}",
        out.dates.len(),
        out.dates.iter().map(|d| d.deleted_rows).sum::<u64>(),
        version.map_or(String::new(), |v| format!(", version {v}"))
    );
    Ok(out)
}

/// What `optimize` did, for the terminal.
pub fn format_optimized(o: &Optimized) -> String {
    if o.dates.is_empty() {
        return "nothing to optimize: every date is one file (or larger files) without deleted rows\n".into();
    }
    let verb = if o.dry_run { "would compact" } else { "compacted" };
    let mut out = format!(
        "{verb} {} date(s): {} file(s) into {}, {} deleted row(s) dropped{}\n",
        o.dates.len(),
        o.dates.iter().map(|d| d.files.len()).sum::<usize>(),
        o.dates.len(),
        crate::report::thousands(o.dates.iter().map(|d| d.deleted_rows).sum()),
        o.table_version
            .map_or(String::new(), |v| format!("; version {v}"))
    );
    for d in &o.dates {
        out += &format!(
            "  {}  {} of {} file(s), {} rows, {} deleted, {}\n",
            d.date,
            d.files.len(),
            d.files_before,
            crate::report::thousands(d.rows),
            crate::report::thousands(d.deleted_rows),
            crate::report::bytes(d.bytes)
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(key: &str, mib: u64, deleted_rows: u64) -> StoredFile {
        StoredFile {
            key: key.into(),
            bytes: mib << 20,
            rows: 100,
            deleted_rows,
        }
    }

    /// Small files are packed smallest first up to the target; a file with deleted rows is
    /// always rewritten, even alone; a date of one clean file, or of large files only, stays.
    #[test]
    fn small_files_and_files_with_deleted_rows_are_picked() {
        let files = BTreeMap::from([
            (
                1,
                vec![
                    file("a", 10, 0),
                    file("b", 50, 0),
                    file("c", 100, 0),
                    file("d", 200, 0),
                ],
            ),
            (2, vec![file("e", 300, 7)]),
            (3, vec![file("f", 5, 0)]),
            (4, vec![file("g", 200, 0), file("h", 300, 0)]),
            (5, vec![file("i", 100, 3), file("j", 20, 0), file("k", 20, 0)]),
        ]);
        let keys = |date: i32| -> Vec<String> {
            plan(&files, 128 << 20, None)
                .into_iter()
                .find(|(d, _)| *d == date)
                .map_or(Vec::new(), |(_, chosen)| {
                    chosen.into_iter().map(|f| f.key).collect()
                })
        };
        assert_eq!(keys(1), ["a", "b"], "10 + 50 fit in 128 MiB, + 100 does not");
        assert_eq!(keys(2), ["e"]);
        assert!(keys(3).is_empty() && keys(4).is_empty());
        assert_eq!(
            keys(5),
            ["i", "j"],
            "the deleted rows' file first, then what fits"
        );
        let only_two = |d: i32| d == 2;
        assert_eq!(plan(&files, 128 << 20, Some(&only_two)).len(), 1);
    }

    #[test]
    fn a_date_is_due_by_file_count_or_deleted_share() {
        let settings = OptimizeConfig {
            target_file_size: 128 << 20,
            auto_max_files: 2,
            auto_max_deleted_share: 0.2,
        };
        assert!(!due(&[file("a", 1, 0), file("b", 1, 0)], &settings));
        assert!(due(
            &[file("a", 1, 0), file("b", 1, 0), file("c", 1, 0)],
            &settings
        ));
        assert!(due(&[file("a", 1, 30)], &settings), "30 of 130 rows deleted");
        assert!(!due(&[file("a", 1, 20)], &settings), "20 of 120");
    }
}
