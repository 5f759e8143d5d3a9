//! The `delta` format: a Delta Lake table (protocol reader 1 / writer 2) partitioned by the
//! partition column. Each run writes its dates as new files, named by the run's attempt
//! (`<column>=YYYY-MM-DD/<run id>.<attempt>.snappy.parquet`, the partition column left out of
//! the file as Delta readers expect; `files`), then makes them the table's current version with
//! one log commit (`_delta_log/<version>.json`, created only if absent): readers see the table
//! before the run or after it, never between. Replaced files stay on storage for older
//! versions.
//!
//! [`DeltaTable`] is the table at its place; [`DeltaTable::begin_delta`] reads its log and
//! returns the run's [`DeltaTransaction`], which holds the snapshot the run began at and the
//! files it wrote, and commits them.
//!
//! - `stage`: a run's commit staged from what it read and wrote (files added and replaced,
//!   metadata, protocol, `commitInfo`, what a lost race is checked against);
//! - `transaction`: the one path from staged actions to a committed version (lost races,
//!   post-commit checkpoint);
//! - `log`: the actions of a commit and the snapshot replaying them leaves;
//! - `replay`: reading the log (checkpoint, then commits) and lakeload's recorded runs;
//! - `checkpoint`: writing and reading checkpoints;
//! - `conflict`: another writer's commit against what a run read and replaces;
//! - `rules`: what a table another engine shares asks of lakeload;
//! - `restore`: a rollback's new version;
//! - `retention`: how long removed files stay (`delta.deletedFileRetentionDuration`);
//! - `run_files`: a run's list of source files, named in its commit by a digest.

mod checkpoint;
mod conflict;
pub mod deletion_vector;
mod files;
pub mod log;
pub mod replay;
pub mod restore;
pub mod retention;
mod rules;
mod run_files;
mod stage;
mod transaction;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};

use self::deletion_vector::{DeletionVector, DeletionVectorFile, DeletionVectorFiles};
use self::files::{data_file_name, new_attempt};
use self::log::{Action, Add, LOG_DIR, Protocol, Snapshot, Txn, commit_key, encode_commit, schema_string};
use roaring::RoaringTreemap;

use self::replay::{LoadedLog, load_snapshot, partitions_of, read_commit, recorded_run, replay_runs};
use self::rules::{check_columns, is_append_only};
use super::added::{AddedColumns, CarriedValues};
use super::encoder::ParquetEncoder;
use super::stored::{StoredChain, StoredParquet};
use super::{DateEncoder, EncodedObject, Seen, StoredRows, Table, Transaction, fenced};
use crate::config::{Mode, SchemaConfig};
use crate::dates::{days_since_epoch, format_days};
use crate::error::{Error, Result};
use crate::scratch::SpillDir;
use crate::state::{FileRecord, PartitionRecord, State};
use crate::storage::{DynStorage, ObjectMeta, PutCondition, StorageError};

pub use self::restore::Restored;

/// lakeload's transaction in its next commit to the table `table_id`: the application id
/// names lakeload and the table, the version counts lakeload's commits to it (runs and
/// rollbacks), so a reader can tell which run a version is and whether one was applied.
pub(super) fn next_txn(snapshot: &Snapshot, table_id: &str, now_ms: i64) -> Txn {
    let app_id = txn_app_id(table_id);
    let version = snapshot.txns.get(&app_id).map_or(0, |v| v + 1);
    Txn {
        app_id,
        version,
        last_updated: Some(now_ms),
    }
}

/// lakeload's application id in the transactions of the table `table_id`.
fn txn_app_id(table_id: &str) -> String {
    format!("lakeload-{table_id}")
}

/// A Delta table at its place: what [`Table::begin`] reads the log of.
pub struct DeltaTable {
    storage: DynStorage,
    schema: Arc<SchemaConfig>,
    /// The settings the run builds the table with, as the state records them: each commit
    /// records them too, so a rollback restores those of its version.
    settings: Option<serde_json::Value>,
    /// Whether runs mark superseded rows deleted (`target.deletion_vectors`).
    deletion_vectors: bool,
}

impl DeltaTable {
    pub fn new(storage: DynStorage, schema: Arc<SchemaConfig>) -> Self {
        DeltaTable {
            storage,
            schema,
            settings: None,
            deletion_vectors: false,
        }
    }

    /// Runs mark the stored rows new rows supersede deleted (deletion vectors) rather than
    /// rewriting their files; the table gains the feature with the next commit.
    pub fn marking_deletes(mut self, deletion_vectors: bool) -> Self {
        self.deletion_vectors = deletion_vectors;
        self
    }

    /// Records `settings` (the state's form of them) in each commit.
    pub fn recording_settings(mut self, settings: Option<serde_json::Value>) -> Self {
        self.settings = settings;
        self
    }

    /// The run `run_id`'s transaction on the table's current version: its snapshot read from
    /// the log (refused when another writer raised the protocol past what lakeload writes).
    pub async fn begin_delta(&self, run_id: &str) -> Result<DeltaTransaction> {
        let LoadedLog {
            snapshot,
            checkpointed,
        } = load_snapshot(&self.storage).await?;
        if let Some(unsupported) = snapshot.protocol.as_ref().and_then(Protocol::unsupported) {
            let protocol = snapshot
                .protocol
                .as_ref()
                .map_or((0, 0), |p| (p.min_reader_version, p.min_writer_version));
            return Err(Error::Config(format!(
                "the Delta table at {} needs reader version {} and writer version {} with what \
                 lakeload does not support ({unsupported}: another writer enabled table features \
                 such as column mapping or constraints); lakeload writes protocol 1/2 tables and \
                 deletion vectors, and writing this one could undo those features for every \
                 reader. Point target.url at a table of lakeload's own",
                self.storage.root(),
                protocol.0,
                protocol.1
            )));
        }
        let added = match &snapshot.metadata {
            Some(metadata) => {
                AddedColumns::of_delta_schema(&metadata.schema_string, &schema_string(&self.schema))
                    .map_err(|e| Error::Other(format!("the Delta table at {}: {e}", self.storage.root())))?
            }
            None => AddedColumns::default(),
        };
        Ok(DeltaTransaction {
            storage: self.storage.clone(),
            schema: self.schema.clone(),
            settings: self.settings.clone(),
            deletion_vectors: self.deletion_vectors,
            vector_files: tokio::sync::Mutex::new(DeletionVectorFiles::default()),
            run: Mutex::new(DeltaRun {
                run_id: run_id.to_string(),
                attempt: new_attempt(),
                snapshot,
                checkpointed,
                added,
                written: Vec::new(),
                kept: BTreeSet::new(),
                deleted: BTreeMap::new(),
                marked: BTreeMap::new(),
                vectors: BTreeMap::new(),
                vector_file: uuid::Uuid::new_v4(),
                rearranges_only: false,
            }),
        })
    }
}

#[async_trait::async_trait]
impl Table for DeltaTable {
    async fn begin(&self, run_id: &str) -> Result<Arc<dyn Transaction>> {
        Ok(Arc::new(self.begin_delta(run_id).await?))
    }
}

/// One run's transaction on a Delta table: the snapshot it began at, and the files it wrote.
pub struct DeltaTransaction {
    storage: DynStorage,
    schema: Arc<SchemaConfig>,
    settings: Option<serde_json::Value>,
    /// Whether the run marks superseded rows deleted (`target.deletion_vectors`).
    deletion_vectors: bool,
    /// Deletion vector files read so far (one file holds a commit's vectors of many dates).
    vector_files: tokio::sync::Mutex<DeletionVectorFiles>,
    run: Mutex<DeltaRun>,
}

/// What one run knows of the table and has written to it.
struct DeltaRun {
    run_id: String,
    /// This attempt of the run: a retried pod keeps its run id, so the run id alone would
    /// name the files an earlier, killed attempt already wrote (create-if-absent then fails).
    attempt: String,
    snapshot: Snapshot,
    /// The version of the latest checkpoint (read, or written by this run).
    checkpointed: Option<u64>,
    /// Columns of the table's schema that lakeload's lacks (another engine added them).
    added: AddedColumns,
    written: Vec<Add>,
    /// Live files of dates the run writes that stay as they are (they hold none of its new
    /// rows' keys): the date's new file goes beside them.
    kept: BTreeSet<String>,
    /// The rows the deletion vectors of live files the run read delete, by file key.
    deleted: BTreeMap<String, Arc<RoaringTreemap>>,
    /// Rows of kept files the run's new rows superseded, by file key: the commit marks them
    /// deleted.
    marked: BTreeMap<String, Vec<u64>>,
    /// The new deletion vectors of the marked files (written just before the commit).
    vectors: BTreeMap<String, DeletionVector>,
    /// The id of the file those vectors go in, picked at the start so the run can announce it.
    vector_file: uuid::Uuid,
    /// The run only rewrites stored rows (a compaction): `dataChange = false`, `OPTIMIZE`.
    rearranges_only: bool,
}

impl DeltaTransaction {
    /// Whether any commit still in the snapshot added `key` (a live file or a tombstone):
    /// the log knows it, so it is no orphan.
    pub fn recorded_in_log(&self, key: &str) -> bool {
        let run = self.run();
        run.snapshot.files.contains_key(key) || run.snapshot.tombstones.contains_key(key)
    }

    fn partition_name(&self) -> &str {
        &self.schema.columns[self.schema.partition_column]
    }

    fn run(&self) -> std::sync::MutexGuard<'_, DeltaRun> {
        self.run.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The live files of a date (several once it was appended to), by key.
    fn live_files(&self, date: i32) -> Vec<Add> {
        let run = self.run();
        let day = format_days(date);
        run.snapshot
            .files_of(self.partition_name(), &day)
            .cloned()
            .collect()
    }

    /// Writes the deletion vectors of the files whose rows the run marked (each the union of
    /// what the file's vector deleted and the rows marked), as one new file beside the table,
    /// created only if absent; the commit names them.
    async fn write_deletion_vectors(&self) -> Result<()> {
        let (file, vectors) = {
            let run = self.run();
            if run.marked.is_empty() {
                return Ok(());
            }
            let mut file = DeletionVectorFile::new(run.vector_file);
            let mut vectors = BTreeMap::new();
            for (key, positions) in &run.marked {
                let mut bitmap = run
                    .deleted
                    .get(key)
                    .map_or_else(RoaringTreemap::new, |d| (**d).clone());
                bitmap.extend(positions.iter().copied());
                vectors.insert(key.clone(), file.push(&bitmap));
            }
            (file, vectors)
        };
        let key = file.key();
        match self
            .storage
            .put_if(&key, file.into_body(), PutCondition::IfAbsent)
            .await
        {
            Ok(_) => {}
            Err(StorageError::PreconditionFailed { url }) => return Err(fenced(&url)),
            Err(e) => return Err(e.into()),
        }
        self.run().vectors = vectors;
        crate::faults::pause_point("after_vectors_write").await;
        Ok(())
    }

    /// Copies live file `key` to a scratch file; returns it and the file's URL.
    async fn fetch(&self, key: &str, scratch: &SpillDir) -> Result<(tempfile::TempPath, String)> {
        let url = self.storage.url(key);
        let (file, path) = scratch
            .create_file("stored")
            .map_err(Error::scratch("cannot create a scratch file"))?;
        if crate::storage::get_to_file(&self.storage, key, file)
            .await?
            .is_none()
        {
            return Err(Error::Other(format!(
                "{url} is in the Delta table's current version but missing from storage"
            )));
        }
        Ok((path, url))
    }

    /// The values of the `added` columns in `date`'s live files, by source line (see
    /// `table::added`). Read for every run that writes the date, full runs too.
    async fn carried_values(
        &self,
        date: i32,
        added: &AddedColumns,
        scratch: &SpillDir,
    ) -> Result<CarriedValues> {
        let mut copies = Vec::new();
        for live in self.live_files(date) {
            copies.push(self.fetch(&live.key(), scratch).await?);
        }
        let stored: Vec<(&std::path::Path, String)> =
            copies.iter().map(|(path, url)| (&**path, url.clone())).collect();
        let carried = CarriedValues::read(added, &stored)?;
        tracing::debug!(
            "{}: {} byte(s) of added columns' values carried",
            format_days(date),
            carried.memory_bytes()
        );
        Ok(carried)
    }

    /// Whether lakeload committed to this table (its transaction id is in the log).
    fn lakeload_committed(&self) -> bool {
        let run = self.run();
        let Some(metadata) = &run.snapshot.metadata else {
            return false;
        };
        run.snapshot.txns.contains_key(&txn_app_id(&metadata.id))
    }

    /// Writes `actions` as commit `version`, created only if absent, and takes them into the
    /// run's snapshot: the one log write of runs and rollbacks. `false`: another writer
    /// committed that version first, and nothing was written.
    async fn put_commit(&self, version: u64, actions: Vec<Action>) -> Result<bool> {
        let body = bytes::Bytes::from(encode_commit(&actions)?);
        match self
            .storage
            .put_if(&commit_key(version), body, PutCondition::IfAbsent)
            .await
        {
            Ok(_) => {
                // The version is committed whatever the snapshot makes of it.
                if let Err(e) = self.run().snapshot.apply(version, actions) {
                    tracing::warn!("{e}");
                }
                Ok(true)
            }
            Err(StorageError::PreconditionFailed { .. }) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// Writes the checkpoint of the current version when one is due (see
    /// [`checkpoint::is_due`]): a transaction's post-commit work. The version is committed
    /// whatever happens here, and a checkpoint that cannot be written only leaves readers more
    /// commits to replay, so failing is a warning, not a failed run.
    async fn checkpoint_if_due(&self) {
        let due = {
            let run = self.run();
            run.snapshot
                .version
                .filter(|v| checkpoint::is_due(*v, run.checkpointed))
                .map(|v| (v, checkpoint::actions_of(&run.snapshot)))
        };
        let Some((version, actions)) = due else {
            return;
        };
        match checkpoint::write(&self.storage, version, &actions).await {
            Ok(()) => {
                self.run().checkpointed = Some(version);
            }
            Err(e) => tracing::warn!(
                "version {version} is committed, but its checkpoint could not be written ({e}); \
                 readers replay the log's commits instead"
            ),
        }
    }
}

#[async_trait::async_trait]
impl Transaction for DeltaTransaction {
    fn key_for(&self, date: i32) -> String {
        let run = self.run();
        let run_id = run.run_id.as_str();
        format!(
            "{}={}/{}",
            self.partition_name(),
            format_days(date),
            data_file_name(run_id, &run.attempt)
        )
    }

    fn stored_keys(&self, date: i32) -> Vec<String> {
        let live: Vec<String> = self.live_files(date).iter().map(Add::key).collect();
        match live.is_empty() {
            true => vec![self.key_for(date)],
            false => live,
        }
    }

    fn date_of_key(&self, key: &str) -> Option<i32> {
        let (folder, name) = key.split_once('/')?;
        let day = folder.strip_prefix(self.partition_name())?.strip_prefix('=')?;
        let day = chrono::NaiveDate::parse_from_str(day, "%Y-%m-%d").ok()?;
        (name.ends_with(".parquet") && !name.contains('/')).then(|| days_since_epoch(day))
    }

    fn is_place(&self, key: &str) -> bool {
        self.run().snapshot.files.contains_key(key)
    }

    fn last_writer(&self) -> Option<String> {
        let run = self.run();
        let version = run.snapshot.version?;
        Some(match &run.snapshot.last_writer {
            Some(engine) => format!("{engine}, at version {version}"),
            None => format!("an engine its log does not name, at version {version}"),
        })
    }

    fn places_prefix(&self) -> String {
        format!("{}=", self.partition_name())
    }

    /// The table's live files (older versions' files are not the current table's).
    async fn list(&self) -> Result<Vec<ObjectMeta>> {
        let run = self.run();
        Ok(run
            .snapshot
            .files
            .iter()
            .map(|(key, add)| ObjectMeta {
                key: key.clone(),
                size: add.size.max(0) as u64,
                etag: None,
                last_modified: DateTime::from_timestamp_millis(add.modification_time).unwrap_or_default(),
            })
            .collect())
    }

    async fn read_date(&self, date: i32, scratch: &SpillDir) -> Result<(Option<Box<dyn StoredRows>>, Seen)> {
        let keys: Vec<String> = self.live_files(date).iter().map(Add::key).collect();
        // The new file has a name of its own: nothing to overwrite.
        Ok((self.read_files(date, &keys, scratch).await?, Seen::Absent))
    }

    async fn read_date_for(
        &self,
        date: i32,
        keys: &super::NewKeys,
        scratch: &SpillDir,
    ) -> Result<(Option<Box<dyn StoredRows>>, Seen)> {
        let (outside, holding): (Vec<Add>, Vec<Add>) = self.live_files(date).into_iter().partition(|add| {
            add.stats
                .as_deref()
                .and_then(|stats| serde_json::from_str(stats).ok())
                .is_some_and(|stats| keys.none_within(&stats))
        });
        if !outside.is_empty() {
            tracing::debug!(
                "{}: {} stored file(s) hold none of the new keys by their statistics: not read",
                format_days(date),
                outside.len()
            );
            self.keep(&outside.iter().map(Add::key).collect::<Vec<_>>());
        }
        let holding: Vec<String> = holding.iter().map(Add::key).collect();
        Ok((self.read_files(date, &holding, scratch).await?, Seen::Absent))
    }

    async fn read_files(
        &self,
        date: i32,
        keys: &[String],
        scratch: &SpillDir,
    ) -> Result<Option<Box<dyn StoredRows>>> {
        let mut parts: Vec<Box<dyn StoredRows>> = Vec::new();
        for live in self
            .live_files(date)
            .into_iter()
            .filter(|add| keys.contains(&add.key()))
        {
            let deleted = match &live.deletion_vector {
                Some(vector) => {
                    let mut files = self.vector_files.lock().await;
                    let bitmap = Arc::new(vector.read(&self.storage, &mut files).await?);
                    self.run().deleted.insert(live.key(), bitmap.clone());
                    Some(bitmap)
                }
                None => None,
            };
            let (path, url) = self.fetch(&live.key(), scratch).await?;
            let stored = StoredParquet::open(path, self.schema.clone(), url)?
                .with_partition(self.partition_name().to_string(), date)
                .with_key(live.key())
                .without(deleted);
            parts.push(Box::new(stored));
        }
        Ok(StoredChain::of(parts))
    }

    fn stored_files(&self) -> BTreeMap<i32, Vec<super::StoredFile>> {
        let run = self.run();
        let mut dates: BTreeMap<i32, Vec<super::StoredFile>> = BTreeMap::new();
        for (key, add) in &run.snapshot.files {
            let Some(date) = self.date_of_key(key) else {
                continue;
            };
            dates.entry(date).or_default().push(super::StoredFile {
                key: key.clone(),
                bytes: add.size.max(0) as u64,
                rows: add.live_rows().unwrap_or(0).max(0) as u64,
                deleted_rows: add.deleted_rows().max(0) as u64,
            });
        }
        dates
    }

    fn rearranges_only(&self) {
        self.run().rearranges_only = true;
    }

    async fn encoder(
        &self,
        date: i32,
        scratch: &SpillDir,
        group_bytes: usize,
    ) -> Result<Box<dyn DateEncoder>> {
        let live = self.live_files(date);
        let (added, appended) = {
            let run = self.run();
            (
                run.added.clone(),
                live.iter().all(|add| run.kept.contains(&add.key())),
            )
        };
        let carried = match (added.is_empty(), appended) {
            (true, _) => None,
            // Every file of the date stays (rows in them are at most marked deleted): the new
            // file holds new lines only, which no stored values match.
            (false, true) => Some(CarriedValues::read(&added, &[])?),
            (false, false) => Some(self.carried_values(date, &added, scratch).await?),
        };
        Ok(Box::new(ParquetEncoder::for_delta(
            self.schema.clone(),
            scratch,
            group_bytes,
            self.partition_name().to_string(),
            carried,
        )?))
    }

    async fn write_date(&self, date: i32, body: EncodedObject, _seen: Seen) -> Result<u64> {
        let key = self.key_for(date);
        match self
            .storage
            .put_file(&key, body.path(), Some(PutCondition::IfAbsent))
            .await
        {
            Ok(()) => {}
            Err(StorageError::PreconditionFailed { url }) => return Err(fenced(&url)),
            Err(e) => return Err(e.into()),
        }
        let stats = match &body.stats {
            Some(stats) => stats.to_json(),
            None => serde_json::json!({ "numRecords": body.rows }).to_string(),
        };
        self.run().written.push(Add {
            path: key,
            partition_values: BTreeMap::from([(self.partition_name().to_string(), Some(format_days(date)))]),
            size: body.size as i64,
            modification_time: Utc::now().timestamp_millis(),
            data_change: true,
            stats: Some(stats),
            tags: None,
            deletion_vector: None,
            other: BTreeMap::new(),
        });
        Ok(body.size)
    }

    async fn delete(&self, key: &str, _etag: Option<&str>) -> Result<()> {
        Ok(self.storage.delete(key).await?)
    }

    fn is_bookkeeping(&self, key: &str) -> bool {
        key.starts_with(&format!("{LOG_DIR}/"))
    }

    fn version(&self) -> Option<u64> {
        self.run().snapshot.version
    }

    fn kept_for_history(&self) -> Vec<String> {
        self.run().snapshot.tombstones.keys().cloned().collect()
    }

    async fn state_from_log(&self, state: &State) -> Result<Option<State>> {
        let Some(latest) = self.run().snapshot.version else {
            return Ok(None);
        };
        if state.table_version.is_some_and(|v| v >= latest) {
            return Ok(None);
        }
        if state.table_version.is_none() && !self.lakeload_committed() {
            // A table lakeload never wrote: nothing in its log is lakeload's own, and its live
            // files are in the way (`target.existing_objects`), not adopted.
            return Ok(None);
        }
        let since = state.table_version.map_or(0, |v| v + 1);
        // The commits since the state's version, read one at a time: only what they record
        // of their runs is kept.
        let mut runs = Vec::new();
        for version in since..=latest {
            runs.extend(recorded_run(&read_commit(&self.storage, version).await?)?);
        }
        let mut out = state.clone();
        replay_runs(&self.storage, &mut out, runs).await?;
        let run = self.run();
        out.partitions = partitions_of(&run.snapshot, self.partition_name());
        let live: std::collections::BTreeSet<&str> = run.snapshot.files.keys().map(String::as_str).collect();
        let vectors = run.snapshot.vector_files();
        out.unconfirmed
            .retain(|k| !live.contains(k.as_str()) && !vectors.contains(k));
        out.table_version = Some(latest);
        Ok(Some(out))
    }

    fn check_write(&self, mode: Mode, dates: &[i32]) -> Result<()> {
        let run = self.run();
        let Some(metadata) = &run.snapshot.metadata else {
            return Ok(());
        };
        let url = self.storage.root();
        check_columns(metadata, &run.added, &url.to_string())?;
        let removes = match mode {
            Mode::Full => !run.snapshot.files.is_empty(),
            Mode::Incremental => dates.iter().any(|date| {
                run.snapshot
                    .files_of(self.partition_name(), &format_days(*date))
                    .next()
                    .is_some()
            }),
        };
        if removes && is_append_only(metadata) {
            return Err(Error::Config(format!(
                "the Delta table at {url} is append-only (delta.appendOnly = true): its files may \
                 not be removed, and this {mode} run would replace files of dates it already \
                 holds. Nothing was written. Unset the property (ALTER TABLE … SET TBLPROPERTIES \
                 ('delta.appendOnly' = 'false')) if lakeload should maintain the table"
            )));
        }
        Ok(())
    }

    fn current_partitions(&self) -> Option<BTreeMap<String, PartitionRecord>> {
        Some(partitions_of(&self.run().snapshot, self.partition_name()))
    }

    fn appends(&self) -> bool {
        true
    }

    fn keep(&self, keys: &[String]) {
        self.run().kept.extend(keys.iter().cloned());
    }

    fn side_keys(&self) -> Vec<String> {
        match self.deletion_vectors {
            true => vec![DeletionVectorFile::key_of(self.run().vector_file)],
            false => Vec::new(),
        }
    }

    fn marks_deletes(&self) -> bool {
        self.deletion_vectors
    }

    fn mark_deleted(&self, key: &str, positions: &[u64]) {
        self.run()
            .marked
            .entry(key.to_string())
            .or_default()
            .extend_from_slice(positions);
    }

    /// Live files are dropped by the commit; files only older versions read (tombstones) are
    /// kept for them until vacuum: neither is deleted by a run.
    fn drops_by_record(&self, key: &str) -> bool {
        self.recorded_in_log(key)
    }

    async fn commit(&self, mode: Mode, run_id: &str, files: &[FileRecord]) -> Result<Option<u64>> {
        let files = run_files::write(&self.storage, files).await?;
        self.write_deletion_vectors().await?;
        let transaction = self.staged_commit(mode, run_id, &files);
        if transaction.is_empty() {
            // Nothing new (an incremental run with no new file): no empty version.
            return Ok(None);
        }
        transaction.commit(self).await.map(Some)
    }
}
