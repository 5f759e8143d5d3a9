//! The table behind the [`Table`] trait, one format per module, so another format is a new
//! module, not a rewrite. A [`Table`] is the table at its place; [`Table::begin`] reads its
//! current version for one run and returns that run's [`Transaction`], through which the run
//! reads dates, writes its files and commits. `parquet`: one snappy Parquet object per date
//! (SPEC §3). `delta`: a Delta Lake table, one data file per date and version, committed
//! through its log (`delta/`). Beside the formats: `stored` streams a stored date back a slice
//! at a time, `encoder` builds a date's object from merge units, `stats` gathers a file's
//! column statistics, `frame` converts rows to and from the table's columns, and `added`
//! carries columns another engine added through lakeload's rewrites.

mod added;
pub mod delta;
mod encoder;
mod frame;
mod new_keys;
mod parquet;
mod stats;
mod stored;

pub use delta::{DeltaTable, DeltaTransaction};
#[cfg(test)]
pub use encoder::encode;
pub use encoder::{DateEncoder, EncodedObject};
#[cfg(test)]
pub use frame::decode;
pub use new_keys::NewKeys;
pub use parquet::{ParquetTable, date_of_file_name};
pub use stored::{KeyHashes, SplitByKeys, StoredRows, StoredSlice};

use std::sync::Arc;

use crate::error::{Error, Result};
use crate::scratch::SpillDir;
use crate::storage::ObjectMeta;

pub const LINEAGE_FILE: &str = "_source_file";
pub const LINEAGE_LINE: &str = "_source_line";
pub const LINEAGE_MODIFIED: &str = "_source_modified";

/// The version of a date's object that a run based its rows on. Writing the date is
/// conditional on it, so a run that stalled past its lease cannot overwrite what a newer run
/// merged in the meantime (SPEC §5: fencing).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seen {
    /// The date had no object.
    Absent,
    /// The object had this ETag.
    Version(String),
    /// The version is unknown (a store without ETags): the write is unconditional.
    Unknown,
}

impl Seen {
    pub fn of(etag: Option<String>) -> Seen {
        etag.map_or(Seen::Unknown, Seen::Version)
    }
}

/// One stored object of a date, as a compaction weighs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredFile {
    pub key: String,
    pub bytes: u64,
    /// Rows a reader gets from it.
    pub rows: u64,
    /// Rows it holds that are marked deleted.
    pub deleted_rows: u64,
}

/// A table at its place, in its format: what a command opens before it reads or writes.
#[async_trait::async_trait]
pub trait Table: Send + Sync {
    /// Reads the table's current version (and what the format keeps beside the data, a Delta
    /// log) for the run `run_id`, called under the lock, once per run: the run's transaction,
    /// through which it reads the dates, stages and writes its files and commits them.
    async fn begin(&self, run_id: &str) -> Result<Arc<dyn Transaction>>;
}

/// One run's transaction on a table: the version it read, the dates it reads from that
/// version, the files it writes, and its commit. Begun by [`Table::begin`].
#[async_trait::async_trait]
pub trait Transaction: Send + Sync {
    /// The object key a date is stored under.
    fn key_for(&self, date: i32) -> String;

    /// The keys of the objects holding a date's stored rows now: where a run reads them from.
    /// The key it writes the date to ([`Transaction::key_for`]) unless the format writes each
    /// version of a date to a new object; several when a date has several (a Delta date
    /// appended to, by lakeload or another engine). Never empty.
    fn stored_keys(&self, date: i32) -> Vec<String> {
        vec![self.key_for(date)]
    }

    /// The date whose object this table stores under `key`, if `key` is exactly where it
    /// would (`key_for(date) == key`).
    fn date_of_key(&self, key: &str) -> Option<i32>;

    /// Whether `key` is where the table's current version stores a date's rows, so that an
    /// object there the table did not write is in its way. For a format that stores each date
    /// at one key, any object at such a key; a format with a log needs the log to name the
    /// object live (a file only older versions, or another writer's history, read is not).
    fn is_place(&self, key: &str) -> bool {
        self.date_of_key(key).is_some()
    }

    /// Who wrote the table's current version, when the format records it (a Delta log's
    /// `commitInfo.engineInfo`): named when objects are in the way.
    fn last_writer(&self) -> Option<String> {
        None
    }

    /// The key prefix under which every date's object lies (`year=`, `c7=`): listing it finds
    /// the table's places without walking everything else under the root.
    fn places_prefix(&self) -> String;

    /// Every object sitting where this table stores a date, whether the table wrote it or
    /// not (see `ownership`).
    async fn list(&self) -> Result<Vec<ObjectMeta>>;

    /// The rows stored for a date (none if the date has no object; those of every object when
    /// it has several), to be decoded a slice at a time, and the version read. The object is copied to a scratch file under `scratch`
    /// first, so it is never held in memory whole.
    async fn read_date(&self, date: i32, scratch: &SpillDir) -> Result<(Option<Box<dyn StoredRows>>, Seen)>;

    /// As [`Transaction::read_date`], for a run whose new rows of the date hold the key values
    /// `keys`: a format whose files carry key statistics (Delta) leaves the files they show
    /// hold none of those keys as they are ([`Transaction::keep`]), without reading them.
    async fn read_date_for(
        &self,
        date: i32,
        _keys: &NewKeys,
        scratch: &SpillDir,
    ) -> Result<(Option<Box<dyn StoredRows>>, Seen)> {
        self.read_date(date, scratch).await
    }

    /// A new encoder for `date`'s object, writing to a scratch file under `scratch`, holding
    /// up to about `group_bytes` of rows before it writes them. A format whose table may hold
    /// columns another engine added reads the date's stored values of them here (`added`).
    async fn encoder(
        &self,
        date: i32,
        scratch: &SpillDir,
        group_bytes: usize,
    ) -> Result<Box<dyn DateEncoder>>;

    /// Replaces the date's object with `body` (from [`DateEncoder::finish`]), in one write, if
    /// it is still the version `seen`; otherwise fails with [`Error::LockLost`]. Returns the
    /// bytes written.
    async fn write_date(&self, date: i32, body: EncodedObject, seen: Seen) -> Result<u64>;

    /// Deletes the object `key` if it is still the version `etag` (unconditionally when the
    /// store gave no version).
    async fn delete(&self, key: &str, etag: Option<&str>) -> Result<()>;

    /// Refuses, before anything is written, a run the table's own rules forbid (a Delta
    /// table's `delta.appendOnly`, column invariants, added columns lakeload cannot carry).
    /// `dates` are the dates the run writes.
    fn check_write(&self, _mode: crate::config::Mode, _dates: &[i32]) -> Result<()> {
        Ok(())
    }

    /// Whether the format can add a file to a date beside the files it has (Delta): the
    /// date's stored files that hold none of the new rows' keys then stay as they are
    /// ([`Transaction::keep`]), and only the others are merged with the new rows.
    fn appends(&self) -> bool {
        false
    }

    /// The run leaves the stored objects `keys` of a date it writes as they are (they hold
    /// none of its new rows' keys): the date's new object goes beside them. Only when
    /// [`Transaction::appends`].
    fn keep(&self, _keys: &[String]) {}

    /// Objects the run may write beside its dates' files (a Delta commit's deletion vector
    /// file): announced with them, so that those of a run stopped before its commit are the
    /// table's to clean up (`vacuum`), and confirmed by its commit (committed, or never
    /// written).
    fn side_keys(&self) -> Vec<String> {
        Vec::new()
    }

    /// The stored objects of each date, with what a compaction weighs (`optimize`); none for a
    /// format that stores a date in one object.
    fn stored_files(&self) -> std::collections::BTreeMap<i32, Vec<StoredFile>> {
        std::collections::BTreeMap::new()
    }

    /// The rows of the stored objects `keys` of `date` (deleted rows left out), as
    /// [`Transaction::read_date`] reads all of them; the others stay as they are
    /// ([`Transaction::keep`]). Only for a format with [`Transaction::stored_files`].
    async fn read_files(
        &self,
        _date: i32,
        _keys: &[String],
        _scratch: &SpillDir,
    ) -> Result<Option<Box<dyn StoredRows>>> {
        Ok(None)
    }

    /// The transaction rewrites stored rows without changing them (a compaction): its commit
    /// says it changes no data, so readers of changes skip it and other writers' commits only
    /// conflict with it over the files it rewrote.
    fn rearranges_only(&self) {}

    /// Whether the run marks the stored rows its new rows' keys match deleted where they are
    /// (Delta deletion vectors), merging only those rows with the new ones, rather than
    /// merging and replacing the whole files holding them.
    fn marks_deletes(&self) -> bool {
        false
    }

    /// The rows at `positions` of the stored object `key` were superseded by the run's new
    /// rows: the commit marks them deleted (the object itself stays, [`Transaction::keep`]).
    /// Only when [`Transaction::marks_deletes`].
    fn mark_deleted(&self, _key: &str, _positions: &[u64]) {}

    /// Whether the table's current version drops `key` by recording it (the object stays for
    /// older versions until vacuumed) rather than by deleting it.
    fn drops_by_record(&self, _key: &str) -> bool {
        false
    }

    /// Makes the run's writes the table's current version at once, after every date is
    /// written (a Delta log commit, with its post-commit work: a checkpoint when due). Returns
    /// the version committed; `None` for a format whose writes are live as they land.
    /// `files` are the source files the run processed: a format with a log records them in
    /// the commit, so the state can be rebuilt from it ([`Transaction::state_from_log`]).
    async fn commit(
        &self,
        _mode: crate::config::Mode,
        _run_id: &str,
        _files: &[crate::state::FileRecord],
    ) -> Result<Option<u64>> {
        Ok(None)
    }

    /// The state's partition records as the table's current version has them, for a format
    /// whose log is the truth about its files (Delta: other writers' commits that a run let
    /// go first included); `None` for a format whose state is that truth.
    fn current_partitions(
        &self,
    ) -> Option<std::collections::BTreeMap<String, crate::state::PartitionRecord>> {
        None
    }

    /// Whether `key` is the format's own bookkeeping beside the data (a Delta log).
    fn is_bookkeeping(&self, _key: &str) -> bool {
        false
    }

    /// The table's version the transaction began at (formats with versions).
    fn version(&self) -> Option<u64> {
        None
    }

    /// Objects only older versions of the table read: the table's own, though no date of
    /// its current version is stored there.
    fn kept_for_history(&self) -> Vec<String> {
        Vec::new()
    }

    /// The state as the table's log says it should be, when the log is ahead of `state` (a
    /// run stopped between its table commit and its state commit); `None` when they agree
    /// or the format keeps no log.
    async fn state_from_log(&self, _state: &crate::state::State) -> Result<Option<crate::state::State>> {
        Ok(None)
    }
}

/// A conditional table write that found another version: only a run that lost its lock (or a
/// writer outside lakeload) gets here.
fn fenced(url: &str) -> Error {
    Error::LockLost(format!(
        "{url} changed since this run read it; another run has written the table"
    ))
}
