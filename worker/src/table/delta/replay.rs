//! Reading the log: the current snapshot (from the latest checkpoint that reads whole, then
//! the commits after it), the commits themselves, and what lakeload's commits record of their
//! runs, replayed into the state.

use std::collections::{BTreeMap, BTreeSet};

use super::checkpoint::{self, checkpoint_key, checkpoint_version_of_key};
use super::deletion_vector::DeletionVector;
use super::files::run_of_data_file;
use super::log::{
    Action, LOG_DIR, Snapshot, commit_key, dated_removes, decode_commit, key_of_path, version_of_key,
};
use super::retention;
use super::run_files;
use crate::error::{Error, Result};
use crate::state::{FileRecord, PartitionRecord, State};
use crate::storage::DynStorage;

/// What a lakeload commit records of its run (its `commitInfo`).
pub struct RecordedRun {
    pub run_id: String,
    /// A full run (or a rollback): the files it records are all the table's.
    pub replaces_all: bool,
    pub files: RecordedFiles,
    /// The settings the run built the table with (commits before lakeload recorded them: none).
    pub settings: Option<serde_json::Value>,
}

/// The source files a commit records: a digest of their list (see `run_files`), or the list
/// itself in commits of lakeload versions before the digest.
pub enum RecordedFiles {
    Listed(run_files::Digest),
    Inline(Vec<FileRecord>),
}

/// The run a commit records, if lakeload made it.
pub fn recorded_run(actions: &[Action]) -> Result<Option<RecordedRun>> {
    for action in actions {
        if let Action::CommitInfo(info) = action
            && let Some(run_id) = info["lakeload"]["runId"].as_str()
        {
            let recorded = &info["lakeload"]["files"];
            let badly = |e: serde_json::Error| {
                Error::Other(format!(
                    "a Delta commit of run {run_id} records its files badly: {e}"
                ))
            };
            let files = match recorded.is_array() {
                true => RecordedFiles::Inline(serde_json::from_value(recorded.clone()).map_err(badly)?),
                false => RecordedFiles::Listed(serde_json::from_value(recorded.clone()).map_err(badly)?),
            };
            let mode = info["lakeload"]["mode"].as_str().unwrap_or_default();
            return Ok(Some(RecordedRun {
                run_id: run_id.to_string(),
                // An optimize only rearranges rows; its commit records no files.
                replaces_all: !matches!(mode, "incremental" | "optimize"),
                files,
                settings: Some(info["lakeload"]["settings"].clone()).filter(|s| !s.is_null()),
            }));
        }
    }
    Ok(None)
}

/// Applies to `state` what lakeload's commits (in order) record of their runs (`runs`, from
/// [`recorded_run`]):
/// a full run or a rollback replaces the processed files, an incremental run adds to them; the
/// latest settings recorded are the table's. Only the file lists from the last full run on are
/// read: the ones before it were replaced.
pub(super) async fn replay_runs(
    storage: &DynStorage,
    state: &mut State,
    runs: Vec<RecordedRun>,
) -> Result<()> {
    let from = runs.iter().rposition(|r| r.replaces_all).unwrap_or(0);
    for (i, recorded) in runs.into_iter().enumerate() {
        if recorded.replaces_all {
            state.files.clear();
        }
        if i >= from {
            let files = match recorded.files {
                RecordedFiles::Inline(files) => files,
                RecordedFiles::Listed(digest) => run_files::read(storage, &digest).await?,
            };
            state.upsert(files);
        }
        state.last_run_id = Some(recorded.run_id);
        if let Some(settings) = recorded.settings.and_then(|s| serde_json::from_value(s).ok()) {
            state.settings = Some(settings);
        }
    }
    Ok(())
}

/// The state's partition records of a snapshot: one per date, naming each of its live files.
pub fn partitions_of(snapshot: &Snapshot, column: &str) -> BTreeMap<String, PartitionRecord> {
    let mut partitions: BTreeMap<String, PartitionRecord> = BTreeMap::new();
    for add in snapshot.files.values() {
        let Some(day) = add.partition_values.get(column).cloned().flatten() else {
            continue;
        };
        let key = add.key();
        let rows = add.live_rows().unwrap_or(0).max(0) as u64;
        let bytes = add.size.max(0) as u64;
        let deleted_rows = add.deleted_rows().max(0) as u64;
        match partitions.get_mut(&day) {
            // A date of several files (appended to): one record of them all.
            Some(record) => {
                record.rows += rows;
                record.bytes += bytes;
                record.deleted_rows += deleted_rows;
                record.more_keys.push(key);
            }
            None => {
                let name = key.rsplit_once('/').map_or(key.as_str(), |(_, name)| name);
                let run_id = run_of_data_file(name).to_string();
                let record = PartitionRecord {
                    key,
                    rows,
                    bytes,
                    run_id,
                    more_keys: Vec::new(),
                    deleted_rows,
                };
                partitions.insert(day, record);
            }
        }
    }
    partitions
}

/// The versions of the Delta log under `storage`'s root that have a commit, oldest first
/// (none: no table yet).
pub async fn log_versions(storage: &DynStorage) -> Result<Vec<u64>> {
    let mut versions: Vec<u64> = storage
        .list(&format!("{LOG_DIR}/"))
        .await?
        .iter()
        .filter_map(|o| version_of_key(&o.key))
        .collect();
    versions.sort_unstable();
    Ok(versions)
}

/// A table's log as [`load_snapshot`] read it.
pub struct LoadedLog {
    /// The current version's snapshot.
    pub snapshot: Snapshot,
    /// The version of the checkpoint it started from.
    pub checkpointed: Option<u64>,
}

/// The table's current snapshot: its latest checkpoint, if any, and the commits after it,
/// read and applied one at a time (none is kept). A checkpoint that cannot be read is passed
/// over for the commits it covers.
pub async fn load_snapshot(storage: &DynStorage) -> Result<LoadedLog> {
    let listing = storage.list(&format!("{LOG_DIR}/")).await?;
    let mut versions: Vec<u64> = listing.iter().filter_map(|o| version_of_key(&o.key)).collect();
    versions.sort_unstable();
    let mut checkpoints: Vec<u64> = listing
        .iter()
        .filter_map(|o| checkpoint_version_of_key(&o.key))
        .collect();
    checkpoints.sort_unstable();
    let Some(&latest) = versions.last() else {
        if let Some(version) = checkpoints.last() {
            // Commits are never deleted before their checkpoint's: a log listed half-way.
            return Err(Error::Other(format!(
                "{} has a checkpoint of version {version} but no commit; run again once the \
                 storage lists the log whole",
                storage.url(LOG_DIR)
            )));
        }
        return Ok(LoadedLog {
            snapshot: Snapshot::default(),
            checkpointed: None,
        });
    };
    // The latest checkpoint that reads whole (a damaged one is passed over for the one
    // before it, as Delta readers do); none: every commit is replayed.
    let mut snapshot = Snapshot::default();
    let mut checkpointed = None;
    for &version in checkpoints.iter().rev().filter(|v| **v <= latest) {
        let key = checkpoint_key(version);
        let read = match storage.get(&key).await? {
            Some((bytes, _)) => checkpoint::decode(version, bytes.to_vec()),
            None => Err(Error::Other(format!("{} vanished", storage.url(&key)))),
        };
        match read {
            Ok(from_checkpoint) => {
                snapshot = from_checkpoint;
                checkpointed = Some(version);
                break;
            }
            Err(e) => tracing::warn!("{e}; trying an earlier checkpoint or the commits"),
        }
    }
    let since = snapshot.version.map_or(0, |v| v + 1);
    for version in versions.into_iter().filter(|v| *v >= since) {
        snapshot.apply(version, read_commit(storage, version).await?)?;
    }
    // Tombstones past the table's retention: no version within it reads their files (vacuum
    // finds them in the commits), so neither memory nor the next checkpoint carries them.
    let retention = retention::of(snapshot.metadata.as_ref()).unwrap_or_else(|why| {
        tracing::warn!("{why}; keeping removed files for 7 days");
        retention::DEFAULT_RETENTION
    });
    let cutoff = chrono::Utc::now() - chrono::Duration::from_std(retention).unwrap_or(chrono::TimeDelta::MAX);
    snapshot.expire_tombstones(cutoff.timestamp_millis());
    Ok(LoadedLog {
        snapshot,
        checkpointed,
    })
}

/// The commits `versions` of the log, in that order.
pub(super) async fn read_commits(
    storage: &DynStorage,
    versions: impl IntoIterator<Item = u64>,
) -> Result<Vec<(u64, Vec<Action>)>> {
    let mut commits = Vec::new();
    for version in versions {
        commits.push((version, read_commit(storage, version).await?));
    }
    Ok(commits)
}

/// The actions of commit `version`.
pub async fn read_commit(storage: &DynStorage, version: u64) -> Result<Vec<Action>> {
    let key = commit_key(version);
    let Some((bytes, _)) = storage.get(&key).await? else {
        return Err(Error::Other(format!(
            "{} is missing from the Delta log (another tool deleted old commits, or it \
             vanished while the log was read)",
            storage.url(&key)
        )));
    };
    decode_commit(version, &bytes)
}

/// What the commits after version `after` (all, when `None`) removed before `cutoff_ms` and
/// no version reads any more (not live in `snapshot`, not removed again since the cutoff), and
/// the newest version all of whose removes are before the cutoff: a vacuum that deletes them
/// has covered the log up to it, and the next one starts after it. Commits are read one at a
/// time; expired tombstones are no longer in the snapshot, so this is how vacuum finds their
/// files. Deletion vector files go the same way: those only such removes name (no live file
/// and no remove within the retention reads them).
pub async fn removed_before(
    storage: &DynStorage,
    snapshot: &Snapshot,
    after: Option<u64>,
    cutoff_ms: i64,
) -> Result<(BTreeSet<String>, Option<u64>)> {
    let mut latest_remove: BTreeMap<String, Option<i64>> = BTreeMap::new();
    // Deletion vector files the removes name: whether a remove within the retention (or of
    // unknown age) still names each, so an older version reads it.
    let mut vectors: BTreeMap<String, bool> = BTreeMap::new();
    let mut covered = after;
    let mut all_expired = true;
    for version in log_versions(storage).await? {
        if after.is_some_and(|a| version <= a) {
            continue;
        }
        for action in dated_removes(read_commit(storage, version).await?) {
            if let Action::Remove(remove) = action {
                let at = remove.deletion_timestamp;
                let expired = at.is_some_and(|t| t < cutoff_ms);
                all_expired &= expired;
                if let Some(file) = DeletionVector::file_of(remove.deletion_vector.as_ref()) {
                    *vectors.entry(file).or_default() |= !expired;
                }
                latest_remove.insert(key_of_path(&remove.path), at);
            }
        }
        if all_expired {
            covered = Some(version);
        }
    }
    // A vector file a live file or a tombstone within the retention reads stays, whatever
    // removed an older vector in it.
    let live_vectors = snapshot.vector_files_read_since(Some(cutoff_ms));
    let gone = latest_remove
        .into_iter()
        .filter(|(key, at)| at.is_some_and(|t| t < cutoff_ms) && !snapshot.files.contains_key(key))
        .map(|(key, _)| key)
        .chain(
            vectors
                .into_iter()
                .filter(|(file, still_read)| !still_read && !live_vectors.contains(file))
                .map(|(file, _)| file),
        )
        .collect();
    Ok((gone, covered))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::table::delta::log::encode_commit;
    use crate::table::delta::log::fixtures::{add, remove};
    use std::sync::Arc;

    /// A date of several live files (appended to) is one partition record
    /// naming every file, with the rows and bytes of them all: the state owns each of them.
    #[test]
    fn a_date_of_several_files_is_one_record_of_them_all() {
        let with = |path: &str, day: &str, rows: i64| {
            let Action::Add(mut add) = add(path) else {
                unreachable!()
            };
            add.partition_values = BTreeMap::from([("day".to_string(), Some(day.to_string()))]);
            add.size = 100;
            add.stats = Some(format!(r#"{{"numRecords":{rows}}}"#));
            Action::Add(add)
        };
        let mut snapshot = Snapshot::default();
        snapshot
            .apply(
                0,
                vec![
                    with("day=2024-01-01/run-1.0000abcd.snappy.parquet", "2024-01-01", 5),
                    with("day=2024-01-01/part-00000-spark.snappy.parquet", "2024-01-01", 2),
                    with("day=2024-01-02/run-1.0000abcd.snappy.parquet", "2024-01-02", 3),
                ],
            )
            .unwrap();
        let partitions = partitions_of(&snapshot, "day");
        let first = &partitions["2024-01-01"];
        assert_eq!((first.rows, first.bytes), (7, 200));
        let keys: Vec<&str> = first.keys().collect();
        assert_eq!(keys.len(), 2, "{keys:?}");
        assert!(keys.contains(&"day=2024-01-01/part-00000-spark.snappy.parquet"));
        assert_eq!(partitions["2024-01-02"].keys().count(), 1);
        // A record of one file is written as before: no `more_keys`.
        let json = serde_json::to_value(&partitions["2024-01-02"]).unwrap();
        assert!(json.get("more_keys").is_none(), "{json}");
    }

    /// Tombstones past the retention (7 days here) leave the loaded snapshot; vacuum finds
    /// their files in the commits instead, and covers the log up to the last commit whose
    /// removes are all past its cutoff.
    #[tokio::test]
    async fn expired_tombstones_leave_the_snapshot_and_are_found_in_the_commits() {
        let dir = tempfile::tempdir().unwrap();
        let storage: DynStorage = Arc::new(crate::storage::LocalStorage::new(dir.path().to_path_buf()));
        let now = chrono::Utc::now().timestamp_millis();
        let long_ago = now - 30 * 86_400_000;
        let commits = [
            vec![add("day=2024-01-01/a.parquet"), add("day=2024-01-01/b.parquet")],
            vec![
                remove("day=2024-01-01/a.parquet", long_ago),
                add("day=2024-01-01/c.parquet"),
            ],
            vec![remove("day=2024-01-01/b.parquet", now)],
        ];
        for (version, actions) in commits.iter().enumerate() {
            let body = bytes::Bytes::from(encode_commit(actions).unwrap());
            storage.put(&commit_key(version as u64), body).await.unwrap();
        }
        let snapshot = load_snapshot(&storage).await.unwrap().snapshot;
        let tombstones: Vec<&str> = snapshot.tombstones.keys().map(String::as_str).collect();
        assert_eq!(
            tombstones,
            ["day=2024-01-01/b.parquet"],
            "a's tombstone is past the retention"
        );

        let cutoff = now - 86_400_000;
        let (gone, covered) = removed_before(&storage, &snapshot, None, cutoff).await.unwrap();
        assert_eq!(gone.into_iter().collect::<Vec<_>>(), ["day=2024-01-01/a.parquet"]);
        assert_eq!(covered, Some(1), "version 2 removed a file within the cutoff");
        let (gone, covered) = removed_before(&storage, &snapshot, Some(1), cutoff)
            .await
            .unwrap();
        assert!(gone.is_empty());
        assert_eq!(covered, Some(1));
    }
}
