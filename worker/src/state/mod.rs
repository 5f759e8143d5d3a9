//! `_lakeload/state.json`: which source files are in the table (SPEC §6), behind the
//! [`StateStore`] trait. Commits are compare-and-swap on the object's ETag, so a concurrent
//! writer or a run that lost its lock is detected instead of overwritten.

pub mod settings;

use std::collections::BTreeMap;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::state::settings::TableSettings;
use crate::storage::{DynStorage, PutCondition, StorageError};

/// 2: the state records the table's settings, its announced writes and the store check.
/// A version-1 state (no settings) is read as it is and gains them on its next run.
pub const STATE_VERSION: u32 = 2;

/// One processed source file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FileRecord {
    pub key: String,
    pub size: u64,
    pub etag: Option<String>,
    pub last_modified: DateTime<Utc>,
    /// Rows the file contributed to the table's candidates (lines minus blank and rejected).
    pub rows: u64,
    pub rows_rejected: u64,
    /// Dates its rows belong to, `YYYY-MM-DD`.
    pub dates: Vec<String>,
    pub run_id: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct State {
    pub version: u32,
    pub updated_at: Option<DateTime<Utc>>,
    pub last_run_id: Option<String>,
    /// Sorted by key.
    pub files: Vec<FileRecord>,
    /// What the table holds per date, `YYYY-MM-DD` → rows and bytes of its object.
    #[serde(default)]
    pub partitions: BTreeMap<String, PartitionRecord>,
    /// How the table was built (absent in states of version 1: recorded by the next run).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub settings: Option<TableSettings>,
    /// Object keys a run announced before writing them and no run has confirmed since (it
    /// crashed in between): the table owns them, whether or not they were written.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unconfirmed: Vec<String>,
    /// The last check that the store enforces conditional writes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub store: Option<StoreCheck>,
    /// The version of a `delta`-format table this state matches.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub table_version: Option<u64>,
    /// The newest version of a Delta table's log whose removed files a vacuum has deleted
    /// (every remove up to it was past the retention): the next vacuum reads the commits after
    /// it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vacuumed_through: Option<u64>,
}

/// What a run found when it checked the table's store (see `store_check`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoreCheck {
    /// The endpoint checked (`aws.endpoint_url`, AWS S3 itself, or `local`).
    pub endpoint: String,
    /// Whether a create-if-absent on an existing object and a stale If-Match were refused.
    pub conditional_writes: bool,
    pub checked_at: DateTime<Utc>,
}

/// One date's objects in the table: usually one; a Delta date holds several once new keys
/// were appended to it or another engine added a file. `rows` and `bytes` are of them all.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PartitionRecord {
    pub key: String,
    pub rows: u64,
    pub bytes: u64,
    /// The run that wrote `key`.
    pub run_id: String,
    /// The date's other objects, when it has several (a state written before there could be
    /// several has none: the field is left out).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub more_keys: Vec<String>,
    /// Rows of the objects marked deleted (a Delta file's deletion vector), not in `rows`.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub deleted_rows: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl PartitionRecord {
    /// Every object of the date.
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        std::iter::once(self.key.as_str()).chain(self.more_keys.iter().map(String::as_str))
    }
}

impl State {
    pub fn by_key(&self) -> BTreeMap<&str, &FileRecord> {
        self.files.iter().map(|f| (f.key.as_str(), f)).collect()
    }

    /// Adds or replaces records, keeping the list sorted by key.
    pub fn upsert(&mut self, records: impl IntoIterator<Item = FileRecord>) {
        let mut map: BTreeMap<String, FileRecord> = std::mem::take(&mut self.files)
            .into_iter()
            .map(|f| (f.key.clone(), f))
            .collect();
        for r in records {
            map.insert(r.key.clone(), r);
        }
        self.files = map.into_values().collect();
    }
}

/// A loaded state and the version it was loaded at.
#[derive(Debug, Clone, Default)]
pub struct Loaded {
    pub state: State,
    /// `None`: no state object existed.
    pub etag: Option<String>,
}

#[async_trait::async_trait]
pub trait StateStore: Send + Sync {
    async fn load(&self) -> Result<Loaded>;
    /// Writes `state` if the stored state is still the one loaded as `expected`; returns the new
    /// version.
    async fn commit(&self, state: &State, expected: Option<&str>) -> Result<String>;
    fn url(&self) -> String;
}

/// The state as a JSON object in the table's storage.
pub struct JsonStateStore {
    storage: DynStorage,
}

impl JsonStateStore {
    pub const KEY: &'static str = crate::bookkeeping::STATE_KEY;

    pub fn new(storage: DynStorage) -> Self {
        JsonStateStore { storage }
    }
}

#[async_trait::async_trait]
impl StateStore for JsonStateStore {
    async fn load(&self) -> Result<Loaded> {
        let Some((bytes, meta)) = self.storage.get(Self::KEY).await? else {
            return Ok(Loaded::default());
        };
        let state: State = serde_json::from_slice(&bytes).map_err(|e| {
            Error::Other(format!(
                "{} is not a valid lakeload state ({e}); restore it from a backup, or run with \
                 --mode full to rebuild the table and the state",
                self.url()
            ))
        })?;
        if state.version > STATE_VERSION {
            return Err(Error::Other(format!(
                "{} was written by a newer lakeload (state version {}); upgrade lakeload",
                self.url(),
                state.version
            )));
        }
        Ok(Loaded {
            state,
            etag: meta.etag,
        })
    }

    async fn commit(&self, state: &State, expected: Option<&str>) -> Result<String> {
        let body = Bytes::from(serde_json::to_vec_pretty(state).map_err(Error::other)?);
        let condition = match expected {
            Some(etag) => PutCondition::IfMatch(etag.to_string()),
            None => PutCondition::IfAbsent,
        };
        match self.storage.put_if(Self::KEY, body, condition).await {
            Ok(etag) => Ok(etag),
            Err(StorageError::PreconditionFailed { url }) => Err(Error::LockLost(format!(
                "{url} was changed by another writer since this run loaded it"
            ))),
            Err(e) => Err(e.into()),
        }
    }

    fn url(&self) -> String {
        self.storage.url(Self::KEY)
    }
}
