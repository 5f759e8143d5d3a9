//! The commit protocol: every write a run makes to the table and its state, in one place, in
//! the order that keeps the table consistent through crashes and stalls (SPEC §5).
//!
//! 1. **Announce** ([`TableCommit::announce`]): before the first data write, the keys this run
//!    will write that the table does not own yet go into the state's announced writes, so a
//!    crash after writing them leaves objects the table knows as its own.
//! 2. **Write dates** ([`TableCommit::write_date`]): each PUT only while the lease is securely
//!    held, bounded by it, and conditional on the version of the object the run merged with
//!    (an ETag, or "absent"), so a run that stalled past its lease cannot overwrite what a newer
//!    run wrote.
//! 3. **Delete** ([`TableCommit::delete_unwritten`], full runs): owned objects the run did not
//!    rewrite, each conditional on the version seen.
//! 4. **Commit the table** ([`TableCommit::commit_table`], formats with versions): one log
//!    entry makes every date written the table's current version, created only if absent.
//! 5. **Commit the state** ([`TableCommit::commit_state`]): the processed files and partition
//!    records, conditional on the state the run loaded (compare-and-swap on its ETag).
//!
//! Every write goes through the lock ([`TableLock::fenced`] / [`TableLock::bounded`]); the
//! conditions themselves are the storage's conditional writes (`storage`), used by the table
//! format (`table`) and the state store (`state`).
//!
//! `optimize` takes the whole path (a compaction writes dates and commits them like a run).
//! The other maintenance commands (`rollback`, `vacuum`) take the same path: [`under_lock`] holds the
//! table's lock around their work and releases it whatever happens, and [`commit_state`] is
//! the one state write of every command (fenced, compare-and-swap on the state loaded).
//!
//! What the protocol stands on: the table's [`lock`], what the table owns and may touch
//! ([`ownership`]), and a check that the store honours conditional writes ([`store_check`]).

pub mod lock;
pub mod ownership;
pub mod store_check;

use std::collections::BTreeSet;
use std::time::Duration;

use chrono::Utc;

use crate::commit::lock::TableLock;
use crate::commit::ownership::{Claims, Owned};
use crate::config::Mode;
use crate::dates::format_days;
use crate::error::Result;
use crate::read::reader::FileCounts;
use crate::state::settings::TableSettings;
use crate::state::{FileRecord, Loaded, PartitionRecord, STATE_VERSION, State, StateStore, StoreCheck};
use crate::storage::{DynStorage, ObjectMeta, PutCondition};
use crate::table::{EncodedObject, Seen, Transaction};
use crate::target::Target;

/// Runs `work` holding the table's lock under `run_id` (taken first, released after, whatever
/// `work` returns): the shape of every command that changes the table.
pub async fn under_lock<T>(
    storage: &DynStorage,
    run_id: &str,
    lease: Duration,
    work: impl AsyncFnOnce(&TableLock) -> Result<T>,
) -> Result<T> {
    let lock = TableLock::acquire(storage.clone(), run_id, lease).await?;
    let outcome = work(&lock).await;
    if let Err(e) = lock.release().await {
        tracing::error!("could not release the lock: {e}; remove it with `lakeload unlock`");
    }
    outcome
}

/// Commits `state` under the lock, only if the stored state is still the one loaded with ETag
/// `expected` (`None`: none existed): the one state write of runs, rollbacks and vacuums.
/// Returns the new ETag.
pub async fn commit_state(
    lock: &TableLock,
    states: &dyn StateStore,
    state: &State,
    expected: Option<&str>,
) -> Result<String> {
    lock.fenced(&states.url(), states.commit(state, expected)).await
}

/// What the state records about the table besides its files: how it was built and what
/// its store guarantees.
pub struct TableFacts {
    pub settings: TableSettings,
    pub store: StoreCheck,
}

/// An owned object a full run deleted, and the date it held when no row of that date is
/// left (`None` when the run rewrote the date, or the object named none).
pub struct Deleted {
    pub key: String,
    pub date_emptied: Option<i32>,
}

/// What the state records of each source file a run processed.
pub fn file_records(run_id: &str, files: &[ObjectMeta], per_file: &[FileCounts]) -> Vec<FileRecord> {
    files
        .iter()
        .zip(per_file)
        .map(|(meta, counts)| FileRecord {
            key: meta.key.clone(),
            size: meta.size,
            etag: meta.etag.clone(),
            last_modified: meta.last_modified,
            rows: counts.rows,
            rows_rejected: counts.rejected,
            dates: counts.dates.iter().map(|d| format_days(*d)).collect(),
            run_id: run_id.to_string(),
        })
        .collect()
}

/// One run's writes to its table, under its lock, from the state it loaded.
pub struct TableCommit<'a> {
    target: &'a Target,
    /// The run's transaction on the table (begun with the state loaded).
    table: &'a dyn Transaction,
    lock: &'a TableLock,
    run_id: &'a str,
    loaded: Loaded,
}

impl<'a> TableCommit<'a> {
    pub fn new(
        target: &'a Target,
        table: &'a dyn Transaction,
        lock: &'a TableLock,
        run_id: &'a str,
        loaded: Loaded,
    ) -> Self {
        TableCommit {
            target,
            table,
            lock,
            run_id,
            loaded,
        }
    }

    /// The run's transaction on the table.
    pub fn table(&self) -> &'a dyn Transaction {
        self.table
    }

    /// The state as loaded (and as announced since).
    pub fn loaded(&self) -> &Loaded {
        &self.loaded
    }

    /// Step 1: records the keys of `keys` the table does not own yet as announced writes.
    /// Changes nothing else in the state; nothing to do when every key is owned.
    pub async fn announce(&mut self, keys: &[String]) -> Result<()> {
        let owned = Owned::of(&self.loaded.state);
        let new: Vec<String> = keys.iter().filter(|k| !owned.contains(k)).cloned().collect();
        if new.is_empty() {
            return Ok(());
        }
        let announced = new.len();
        let mut state = self.loaded.state.clone();
        state.unconfirmed.extend(new);
        state.unconfirmed.sort();
        state.unconfirmed.dedup();
        state.version = STATE_VERSION;
        state.updated_at = Some(Utc::now());
        let etag = commit_state(
            self.lock,
            self.target.state.as_ref(),
            &state,
            self.loaded.etag.as_deref(),
        )
        .await?;
        tracing::debug!(
            "run {} announced {announced} new object(s) in the state",
            self.run_id
        );
        self.loaded = Loaded {
            state,
            etag: Some(etag),
        };
        Ok(())
    }

    /// Step 2: writes one date's object, conditional on `seen`; returns its size.
    pub async fn write_date(&self, date: i32, body: EncodedObject, seen: Seen) -> Result<u64> {
        crate::faults::pause_point("before_date_write").await;
        self.lock.ensure_held().await?;
        // A stall here (after the check, before the PUT lands) is what the conditional write
        // in `write_date` guards against.
        crate::faults::pause_point("date_write_checked").await;
        let url = self.target.storage.url(&self.table.key_for(date));
        let bytes = self
            .lock
            .bounded(&url, self.table.write_date(date, body, seen))
            .await?;
        let storage = &self.target.storage;
        crate::faults::pause_point_in("after_date_write", |key, body| async move {
            storage.put_if(&key, body, PutCondition::IfAbsent).await.is_ok()
        })
        .await;
        Ok(bytes)
    }

    /// Step 3 (full runs): deletes the owned objects the run did not rewrite (dates with no
    /// rows left, objects of an earlier layout, announced writes of a crashed run), each
    /// conditional on the version seen. Nothing else is touched. `deleted` hears of each
    /// deletion as it happens, so a run that fails midway still reports what it deleted.
    pub async fn delete_unwritten(
        &self,
        claims: &Claims,
        written: &BTreeSet<i32>,
        mut deleted: impl FnMut(Deleted),
    ) -> Result<()> {
        let table = self.table;
        let written_keys: BTreeSet<String> = written.iter().map(|d| table.key_for(*d)).collect();
        for (key, etag) in claims.unwritten(&written_keys) {
            crate::faults::pause_point("before_delete").await;
            // A format with versions drops a live object in its commit (step 4), and keeps it
            // for the versions before.
            if !table.drops_by_record(&key) {
                let url = self.target.storage.url(&key);
                self.lock
                    .fenced(&url, table.delete(&key, etag.as_deref()))
                    .await?;
            }
            let date_emptied = table
                .date_of_key(&key)
                .or_else(|| crate::table::date_of_file_name(&key))
                .filter(|d| !written.contains(d));
            deleted(Deleted { key, date_emptied });
        }
        Ok(())
    }

    /// Step 4 (formats with versions): makes the run's writes the table's current version in
    /// one write, conditional on no other writer having taken that version.
    pub async fn commit_table(&self, mode: Mode, files: &[FileRecord]) -> Result<Option<u64>> {
        crate::faults::pause_point("before_table_commit").await;
        let url = self.target.storage.root().to_string();
        let version = self
            .lock
            .fenced(&url, self.table.commit(mode, self.run_id, files))
            .await?;
        if let Some(version) = version {
            tracing::info!("run {} committed version {version} of the table", self.run_id);
        }
        crate::faults::pause_point("after_table_commit").await;
        Ok(version)
    }

    /// Step 5: commits the state: every processed file, after its rows are in the table, and
    /// the partitions written (`(date, rows, bytes)`) and emptied; conditional on the state
    /// this run loaded, so a run that lost its lock cannot overwrite a newer state.
    #[allow(clippy::too_many_arguments)]
    pub async fn commit_state(
        self,
        mode: Mode,
        facts: Option<TableFacts>,
        records: Vec<FileRecord>,
        table_version: Option<u64>,
        partitions: Vec<(i32, u64, u64)>,
        dates_emptied: &BTreeSet<String>,
    ) -> Result<()> {
        let run_id = self.run_id;
        let previous_version = self.loaded.state.table_version;
        let mut state = match mode {
            Mode::Full => State::default(),
            Mode::Incremental => self.loaded.state,
        };
        state.table_version = table_version.or(previous_version);
        // A compaction changes neither how the table was built nor its store.
        if let Some(facts) = facts {
            state.settings = Some(facts.settings);
            state.store = Some(facts.store);
        }
        state.upsert(records);
        for (date, rows, bytes) in partitions {
            let record = PartitionRecord {
                key: self.table.key_for(date),
                rows,
                bytes,
                run_id: run_id.to_string(),
                more_keys: Vec::new(),
                deleted_rows: 0,
            };
            state.partitions.insert(format_days(date), record);
        }
        for date in dates_emptied {
            state.partitions.remove(date);
        }
        // A format with a log records what its current version holds, other writers'
        // commits let go first included.
        if let Some(current) = self.table.current_partitions() {
            state.partitions = current;
        }
        // Announced writes are confirmed by the partition records (a full run also deleted
        // every owned object it did not write).
        let recorded: BTreeSet<&str> = state.partitions.values().flat_map(|p| p.keys()).collect();
        // The run's objects beside its dates' are committed by now, or were never written.
        let side = self.table.side_keys();
        let confirmed: Vec<String> = state
            .unconfirmed
            .iter()
            .filter(|k| !recorded.contains(k.as_str()) && !side.contains(k))
            .cloned()
            .collect();
        state.unconfirmed = confirmed;
        state.version = STATE_VERSION;
        state.updated_at = Some(Utc::now());
        state.last_run_id = Some(run_id.to_string());
        crate::faults::pause_point("before_state_commit").await;
        commit_state(
            self.lock,
            self.target.state.as_ref(),
            &state,
            self.loaded.etag.as_deref(),
        )
        .await?;
        Ok(())
    }
}
