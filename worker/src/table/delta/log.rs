//! The Delta Lake transaction log (protocol reader 1 / writer 2), as far as lakeload writes and
//! reads it: the actions of one commit, `_delta_log/<20-digit version>.json` (one JSON action
//! per line), and the snapshot a sequence of commits leaves — which data files are live, the
//! table's metadata, and the latest transaction version per application id.
//!
//! Readers of the log must skip what they do not know (other writers add actions such as
//! `cdc` or `domainMetadata`), so replay keeps what it understands and ignores the rest.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

pub use super::deletion_vector::DeletionVector;
use crate::config::SchemaConfig;
use crate::error::{Error, Result};
use crate::table::{LINEAGE_FILE, LINEAGE_LINE, LINEAGE_MODIFIED};

/// The log's folder under the table root.
pub const LOG_DIR: &str = "_delta_log";

/// The key of commit `version` under the table root.
pub fn commit_key(version: u64) -> String {
    format!("{LOG_DIR}/{version:020}.json")
}

/// The version a commit's key names; `None` for anything else in the log folder
/// (checkpoints, `_last_checkpoint`, temporary files).
pub fn version_of_key(key: &str) -> Option<u64> {
    version_named(key, ".json")
}

/// The version of a log file named `<20 digits><suffix>` in the log folder.
pub(super) fn version_named(key: &str, suffix: &str) -> Option<u64> {
    let name = key.strip_prefix(LOG_DIR)?.strip_prefix('/')?;
    let digits = name.strip_suffix(suffix)?;
    (digits.len() == 20 && digits.bytes().all(|b| b.is_ascii_digit()))
        .then(|| digits.parse().ok())
        .flatten()
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Protocol {
    pub min_reader_version: i32,
    pub min_writer_version: i32,
    /// The table features a reader must support (reader version 3).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reader_features: Option<Vec<String>>,
    /// The table features a writer must support (writer version 7).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub writer_features: Option<Vec<String>>,
}

/// The table feature of deletion vectors.
pub const DELETION_VECTORS: &str = "deletionVectors";

/// Writer features lakeload honours: the two a protocol 2 table implies (`appendOnly`, column
/// `invariants`, see `rules`) and deletion vectors.
pub const WRITER_FEATURES: [&str; 3] = ["appendOnly", "invariants", DELETION_VECTORS];

impl Protocol {
    /// What lakeload writes by default: no table features, so every Delta reader can read the
    /// table.
    pub fn lakeload() -> Protocol {
        Protocol {
            min_reader_version: 1,
            min_writer_version: 2,
            reader_features: None,
            writer_features: None,
        }
    }

    /// What lakeload writes when it marks superseded rows deleted: reader 3 / writer 7 with
    /// deletion vectors, and the features protocol 2 implied (a table upgraded keeps them).
    pub fn with_deletion_vectors() -> Protocol {
        Protocol {
            min_reader_version: 3,
            min_writer_version: 7,
            reader_features: Some(vec![DELETION_VECTORS.into()]),
            writer_features: Some(WRITER_FEATURES.map(String::from).to_vec()),
        }
    }

    /// This protocol with deletion vectors added: reader 3 / writer 7, the features it has
    /// kept (and those protocol 2 implied).
    pub fn adding_deletion_vectors(&self) -> Protocol {
        let mut protocol = Protocol::with_deletion_vectors();
        let union = |ours: &mut Option<Vec<String>>, theirs: &Option<Vec<String>>| {
            let list = ours.get_or_insert_with(Vec::new);
            for feature in theirs.iter().flatten() {
                if !list.contains(feature) {
                    list.push(feature.clone());
                }
            }
        };
        union(&mut protocol.reader_features, &self.reader_features);
        union(&mut protocol.writer_features, &self.writer_features);
        protocol
    }

    /// Whether a reader must apply deletion vectors to read the table.
    pub fn has_deletion_vectors(&self) -> bool {
        self.reader_features
            .as_ref()
            .is_some_and(|features| features.iter().any(|f| f == DELETION_VECTORS))
    }

    /// What of the protocol lakeload cannot honour, in words; `None` when it can write the
    /// table (protocol 1/2, or table features it knows).
    pub fn unsupported(&self) -> Option<String> {
        let reader = match self.min_reader_version {
            1 => Vec::new(),
            3 => self
                .reader_features
                .iter()
                .flatten()
                .filter(|f| *f != DELETION_VECTORS)
                .cloned()
                .collect(),
            v => vec![format!("reader version {v}")],
        };
        let writer = match self.min_writer_version {
            1 | 2 => Vec::new(),
            7 => self
                .writer_features
                .iter()
                .flatten()
                .filter(|f| !WRITER_FEATURES.contains(&f.as_str()))
                .cloned()
                .collect(),
            v => vec![format!("writer version {v}")],
        };
        // A feature both reader and writer need is named once.
        let mut named = std::collections::BTreeSet::new();
        let mut missing: Vec<String> = reader.into_iter().chain(writer).collect();
        missing.retain(|feature| named.insert(feature.clone()));
        (!missing.is_empty()).then(|| missing.join(", "))
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Format {
    pub provider: String,
    #[serde(default)]
    pub options: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Metadata {
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    pub format: Format,
    pub schema_string: String,
    pub partition_columns: Vec<String>,
    #[serde(default)]
    pub configuration: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_time: Option<i64>,
    /// Fields lakeload does not know, kept as another writer left them.
    #[serde(flatten)]
    pub other: BTreeMap<String, serde_json::Value>,
}

/// A data file joining the table. Partition values are strings (`YYYY-MM-DD` for dates);
/// `None` is a null partition value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Add {
    pub path: String,
    pub partition_values: BTreeMap<String, Option<String>>,
    pub size: i64,
    /// Milliseconds since the epoch.
    pub modification_time: i64,
    pub data_change: bool,
    /// A JSON string: `numRecords`, `minValues`, `maxValues`, `nullCount`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stats: Option<String>,
    /// Another writer's labels of the file, kept when lakeload adds it back (a rollback).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tags: Option<BTreeMap<String, Option<String>>>,
    /// The file's rows this version no longer reads.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deletion_vector: Option<DeletionVector>,
    /// Fields lakeload does not know, kept as another writer left them.
    #[serde(flatten)]
    pub other: BTreeMap<String, serde_json::Value>,
}

/// Whether two descriptions of a file's deleted rows are the same vector (or both none).
pub fn same_vector(a: Option<&DeletionVector>, b: Option<&DeletionVector>) -> bool {
    a.map(DeletionVector::unique_id) == b.map(DeletionVector::unique_id)
}

impl Add {
    /// The rows a reader of the file gets: its physical rows (`numRecords`) less those its
    /// deletion vector deletes. `None` without stats.
    pub fn live_rows(&self) -> Option<i64> {
        let stats: serde_json::Value = serde_json::from_str(self.stats.as_deref()?).ok()?;
        let physical = stats["numRecords"].as_i64()?;
        Some(physical - self.deleted_rows())
    }

    /// Rows its deletion vector deletes.
    pub fn deleted_rows(&self) -> i64 {
        self.deletion_vector.as_ref().map_or(0, |dv| dv.cardinality)
    }

    /// The storage key (relative to the table root) of the file: `path` is a URI, so
    /// percent-encoded characters are decoded (PROTOCOL.md: "Path to a data file").
    pub fn key(&self) -> String {
        key_of_path(&self.path)
    }
}

/// A relative path of the log (a URI, RFC 2396) as a storage key: `%XX` decoded.
pub fn key_of_path(path: &str) -> String {
    if !path.contains('%') {
        return path.to_string();
    }
    let bytes = path.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match (
            bytes[i],
            bytes.get(i + 1).copied().and_then(hex),
            bytes.get(i + 2).copied().and_then(hex),
        ) {
            (b'%', Some(hi), Some(lo)) => {
                out.push((hi * 16 + lo) as u8);
                i += 3;
            }
            (b, _, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).unwrap_or_else(|_| path.to_string())
}

/// A data file leaving the table (it stays on storage until vacuumed).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Remove {
    pub path: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deletion_timestamp: Option<i64>,
    pub data_change: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extended_file_metadata: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partition_values: Option<BTreeMap<String, Option<String>>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<i64>,
    /// The vector of the logical file removed (the file with that vector).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deletion_vector: Option<DeletionVector>,
}

impl Remove {
    /// Removes `add`'s file (with its deletion vector) at `now_ms`, keeping what a reader
    /// needs to find it again.
    pub fn of(add: &Add, now_ms: i64) -> Remove {
        Remove {
            path: add.path.clone(),
            deletion_timestamp: Some(now_ms),
            data_change: true,
            extended_file_metadata: Some(true),
            partition_values: Some(add.partition_values.clone()),
            size: Some(add.size),
            deletion_vector: add.deletion_vector.clone(),
        }
    }
}

/// An application's transaction version: readers keep the latest per `appId`. lakeload's
/// commits number its runs on the table (see `delta::next_txn`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Txn {
    pub app_id: String,
    pub version: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_updated: Option<i64>,
}

/// One line of a commit.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    Protocol(Protocol),
    Metadata(Metadata),
    Add(Add),
    Remove(Remove),
    Txn(Txn),
    /// Free-form; lakeload's carries its run id, mode and counts.
    CommitInfo(serde_json::Value),
}

impl Action {
    /// The action as one JSON object, `{"add": {...}}`.
    pub fn to_value(&self) -> Result<serde_json::Value> {
        let (name, body) = match self {
            Action::Protocol(p) => ("protocol", serde_json::to_value(p)),
            Action::Metadata(m) => ("metaData", serde_json::to_value(m)),
            Action::Add(a) => ("add", serde_json::to_value(a)),
            Action::Remove(r) => ("remove", serde_json::to_value(r)),
            Action::Txn(t) => ("txn", serde_json::to_value(t)),
            Action::CommitInfo(c) => ("commitInfo", Ok(c.clone())),
        };
        let body = body.map_err(|e| Error::Other(format!("cannot encode a Delta log action: {e}")))?;
        Ok(serde_json::json!({ name: body }))
    }

    /// The action named `name` with body `body`; `Ok(None)` for an action lakeload does not
    /// use.
    pub fn from_value(name: &str, body: serde_json::Value) -> serde_json::Result<Option<Action>> {
        Ok(Some(match name {
            "protocol" => Action::Protocol(serde_json::from_value(body)?),
            "metaData" => Action::Metadata(serde_json::from_value(body)?),
            "add" => Action::Add(serde_json::from_value(body)?),
            "remove" => Action::Remove(serde_json::from_value(body)?),
            "txn" => Action::Txn(serde_json::from_value(body)?),
            "commitInfo" => Action::CommitInfo(body),
            _ => return Ok(None),
        }))
    }

    /// One line of a commit; `Ok(None)` for an action lakeload does not use.
    fn from_json(line: &str) -> serde_json::Result<Option<Action>> {
        let object: serde_json::Map<String, serde_json::Value> = serde_json::from_str(line)?;
        match object.into_iter().next() {
            Some((name, body)) => Action::from_value(&name, body),
            None => Ok(None),
        }
    }
}

/// A commit's bytes: one action per line.
pub fn encode_commit(actions: &[Action]) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    for action in actions {
        out.extend_from_slice(action.to_value()?.to_string().as_bytes());
        out.push(b'\n');
    }
    Ok(out)
}

/// A commit's actions, from its bytes.
pub fn decode_commit(version: u64, bytes: &[u8]) -> Result<Vec<Action>> {
    let damaged = |what: String| Error::Other(format!("{}: {what}", commit_key(version)));
    let text = std::str::from_utf8(bytes).map_err(|_| damaged("not UTF-8".into()))?;
    let mut actions = Vec::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        if let Some(action) =
            Action::from_json(line).map_err(|e| damaged(format!("not a Delta action: {e}")))?
        {
            actions.push(action);
        }
    }
    Ok(actions)
}

/// The table as of one version: what replaying its commits in order leaves.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Snapshot {
    /// `None`: no commit yet (the table does not exist).
    pub version: Option<u64>,
    pub protocol: Option<Protocol>,
    pub metadata: Option<Metadata>,
    /// Live data files by storage key (their path decoded, see [`Add::key`]).
    pub files: BTreeMap<String, Add>,
    /// Latest transaction version per application id.
    pub txns: BTreeMap<String, i64>,
    /// Files removed from the table and not added back, by storage key: older versions read them
    /// until vacuum deletes them.
    pub tombstones: BTreeMap<String, Remove>,
    /// The `engineInfo` of the latest commit replayed that names one (checkpoints name none).
    pub last_writer: Option<String>,
}

impl Snapshot {
    /// The deletion vector files its live files and tombstones name (the table's, beside its
    /// data files).
    pub fn vector_files(&self) -> std::collections::BTreeSet<String> {
        self.vector_files_read_since(None)
    }

    /// The deletion vector files a version still reads: those its live files name, and those of
    /// tombstones removed at or after `cutoff_ms` (or of unknown age; every tombstone when
    /// `None`).
    pub fn vector_files_read_since(&self, cutoff_ms: Option<i64>) -> std::collections::BTreeSet<String> {
        let live = self.files.values().map(|add| add.deletion_vector.as_ref());
        let removed = self
            .tombstones
            .values()
            .filter(|r| cutoff_ms.is_none_or(|c| r.deletion_timestamp.is_none_or(|t| t >= c)))
            .map(|r| r.deletion_vector.as_ref());
        live.chain(removed).filter_map(DeletionVector::file_of).collect()
    }

    /// Applies the next commit. Versions must follow one another: a gap means a commit is
    /// missing (or was being written when the log was listed), and the snapshot would be wrong.
    pub fn apply(&mut self, version: u64, actions: Vec<Action>) -> Result<()> {
        let expected = self.version.map_or(0, |v| v + 1);
        if version != expected {
            return Err(Error::Other(format!(
                "the Delta log skips from version {} to {version}; {} is missing",
                self.version.map_or("none".into(), |v| v.to_string()),
                commit_key(expected)
            )));
        }
        self.apply_checkpoint(version, dated_removes(actions));
        Ok(())
    }

    /// Applies the actions of a checkpoint of `version` (or of the commit after the
    /// snapshot's version, checked by [`Snapshot::apply`]).
    pub fn apply_checkpoint(&mut self, version: u64, actions: Vec<Action>) {
        for action in actions {
            match action {
                Action::Protocol(p) => self.protocol = Some(p),
                Action::Metadata(m) => self.metadata = Some(m),
                Action::Add(a) => {
                    let key = a.key();
                    self.tombstones.remove(&key);
                    self.files.insert(key, a);
                }
                Action::Remove(r) => {
                    let key = key_of_path(&r.path);
                    // The same file with another vector is another logical file: a commit
                    // that deleted more of its rows removed it with its old vector and added
                    // it with the new one (in either order); the file itself stays live.
                    let live = self.files.get(&key);
                    if live.is_some_and(|add| {
                        !same_vector(add.deletion_vector.as_ref(), r.deletion_vector.as_ref())
                    }) {
                        continue;
                    }
                    self.files.remove(&key);
                    self.tombstones.insert(key, r);
                }
                Action::Txn(t) => {
                    self.txns.insert(t.app_id, t.version);
                }
                Action::CommitInfo(info) => {
                    if let Some(engine) = info["engineInfo"].as_str() {
                        self.last_writer = Some(engine.to_string());
                    }
                }
            }
        }
        self.version = Some(version);
    }

    /// Drops the tombstones of files removed before `cutoff_ms` (milliseconds since the
    /// epoch): no version within the retention reads them. One of unknown age stays.
    pub fn expire_tombstones(&mut self, cutoff_ms: i64) {
        self.tombstones
            .retain(|_, removed| removed.deletion_timestamp.is_none_or(|at| at >= cutoff_ms));
    }

    /// The live files of one partition value.
    pub fn files_of<'s>(&'s self, column: &'s str, value: &'s str) -> impl Iterator<Item = &'s Add> + 's {
        self.files
            .values()
            .filter(move |a| a.partition_values.get(column).and_then(|v| v.as_deref()) == Some(value))
    }
}

/// A commit's actions, each `remove` without a `deletionTimestamp` dated at the commit (its
/// `commitInfo.timestamp`): undated, vacuum could not tell how long ago it left the table.
pub fn dated_removes(mut actions: Vec<Action>) -> Vec<Action> {
    let committed_at = actions.iter().find_map(|a| match a {
        Action::CommitInfo(info) => info["timestamp"].as_i64(),
        _ => None,
    });
    for action in &mut actions {
        if let Action::Remove(remove) = action
            && remove.deletion_timestamp.is_none()
        {
            remove.deletion_timestamp = committed_at;
        }
    }
    actions
}

/// The table's schema as Delta states it (Spark's JSON struct type): schema columns (date
/// columns as `date`, the rest `string`), then the lineage columns. `_source_modified` is a
/// UTC `timestamp` (a timestamp without time zone would need a table feature that raises the
/// protocol).
pub fn schema_string(schema: &SchemaConfig) -> String {
    let field = |name: &str, kind: &str| serde_json::json!({ "name": name, "type": kind, "nullable": true, "metadata": {} });
    let mut fields: Vec<serde_json::Value> = schema
        .columns
        .iter()
        .enumerate()
        .map(|(i, name)| {
            field(
                name,
                match schema.date_slot(i) {
                    Some(_) => "date",
                    None => "string",
                },
            )
        })
        .collect();
    fields.push(field(LINEAGE_FILE, "string"));
    fields.push(field(LINEAGE_LINE, "long"));
    fields.push(field(LINEAGE_MODIFIED, "timestamp"));
    serde_json::json!({ "type": "struct", "fields": fields }).to_string()
}

/// Actions for other modules' tests: a file added (no partition values, no stats) and a
/// file removed at a time.
#[cfg(test)]
pub(crate) mod fixtures {
    use super::*;

    pub(crate) fn add(path: &str) -> Action {
        Action::Add(Add {
            path: path.into(),
            partition_values: BTreeMap::new(),
            size: 1,
            modification_time: 0,
            data_change: true,
            stats: None,
            tags: None,
            deletion_vector: None,
            other: BTreeMap::new(),
        })
    }

    pub(crate) fn remove(path: &str, at: i64) -> Action {
        Action::Remove(Remove {
            path: path.into(),
            deletion_timestamp: Some(at),
            data_change: true,
            extended_file_metadata: None,
            partition_values: None,
            size: None,
            deletion_vector: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn add(path: &str, date: &str) -> Add {
        Add {
            path: path.into(),
            partition_values: BTreeMap::from([("day".to_string(), Some(date.to_string()))]),
            size: 10,
            modification_time: 1,
            data_change: true,
            stats: Some(r#"{"numRecords":3}"#.into()),
            tags: None,
            deletion_vector: None,
            other: BTreeMap::new(),
        }
    }

    #[test]
    fn commit_keys_name_their_version_and_nothing_else_does() {
        assert_eq!(commit_key(7), "_delta_log/00000000000000000007.json");
        assert_eq!(version_of_key(&commit_key(123)), Some(123));
        for other in [
            "_delta_log/_last_checkpoint",
            "_delta_log/00000000000000000010.checkpoint.parquet",
            "_delta_log/7.json",
            "data/00000000000000000007.json",
        ] {
            assert_eq!(version_of_key(other), None, "{other}");
        }
    }

    /// Commits encode to one action per line in the protocol's shape and read back the same;
    /// replay keeps the live files, the latest metadata and transaction versions, and skips
    /// actions it does not know.
    #[test]
    fn replayed_commits_leave_the_live_files() {
        let meta = Metadata {
            id: "t".into(),
            name: None,
            description: None,
            format: Format {
                provider: "parquet".into(),
                options: BTreeMap::new(),
            },
            schema_string: "{}".into(),
            partition_columns: vec!["day".into()],
            configuration: BTreeMap::new(),
            created_time: Some(5),
            other: BTreeMap::new(),
        };
        let first = vec![
            Action::Protocol(Protocol::lakeload()),
            Action::Metadata(meta.clone()),
            Action::Add(add("day=2024-01-01/a.parquet", "2024-01-01")),
            Action::Add(add("day=2024-01-02/b.parquet", "2024-01-02")),
            Action::Txn(Txn {
                app_id: "lakeload".into(),
                version: 1,
                last_updated: None,
            }),
            Action::CommitInfo(serde_json::json!({"runId": "r1"})),
        ];
        let bytes = encode_commit(&first).unwrap();
        let text = String::from_utf8(bytes.clone()).unwrap();
        assert_eq!(text.lines().count(), 6);
        assert!(text.starts_with(r#"{"protocol":{"minReaderVersion":1,"minWriterVersion":2}}"#));
        assert!(
            text.contains(r#""partitionValues":{"day":"2024-01-01"}"#),
            "{text}"
        );
        assert_eq!(decode_commit(0, &bytes).unwrap(), first);

        let mut second = encode_commit(&[
            Action::Remove(Remove::of(&add("day=2024-01-01/a.parquet", "2024-01-01"), 9)),
            Action::Add(add("day=2024-01-01/c.parquet", "2024-01-01")),
            Action::Txn(Txn {
                app_id: "lakeload".into(),
                version: 2,
                last_updated: Some(9),
            }),
        ])
        .unwrap();
        second.extend_from_slice(b"{\"domainMetadata\":{\"domain\":\"x\"}}\n");
        let mut snapshot = Snapshot::default();
        snapshot.apply(0, decode_commit(0, &bytes).unwrap()).unwrap();
        snapshot.apply(1, decode_commit(1, &second).unwrap()).unwrap();
        assert_eq!(snapshot.version, Some(1));
        assert_eq!(snapshot.metadata, Some(meta));
        let live: Vec<&str> = snapshot.files.keys().map(String::as_str).collect();
        assert_eq!(live, ["day=2024-01-01/c.parquet", "day=2024-01-02/b.parquet"]);
        assert_eq!(snapshot.txns.get("lakeload"), Some(&2));
        let day1: Vec<&str> = snapshot
            .files_of("day", "2024-01-01")
            .map(|a| a.path.as_str())
            .collect();
        assert_eq!(day1, ["day=2024-01-01/c.parquet"]);
    }

    /// Paths are URIs: their storage keys are decoded; a remove names a file by its path
    /// as the add wrote it.
    #[test]
    fn paths_are_decoded_into_storage_keys() {
        assert_eq!(
            key_of_path("c7=2024-01-01/part-0.parquet"),
            "c7=2024-01-01/part-0.parquet"
        );
        assert_eq!(
            key_of_path("region=north%20east/a%3Ab.parquet"),
            "region=north east/a:b.parquet"
        );
        assert_eq!(key_of_path("100%/x%2"), "100%/x%2", "a lone percent sign stays");
        let mut snapshot = Snapshot::default();
        snapshot
            .apply(
                0,
                vec![Action::Add(add("day=2024-01-01/a%20b.parquet", "2024-01-01"))],
            )
            .unwrap();
        assert!(snapshot.files.contains_key("day=2024-01-01/a b.parquet"));
        let remove = Remove::of(&add("day=2024-01-01/a%20b.parquet", "2024-01-01"), 1);
        snapshot.apply(1, vec![Action::Remove(remove)]).unwrap();
        assert!(snapshot.files.is_empty());
        assert!(snapshot.tombstones.contains_key("day=2024-01-01/a b.parquet"));
    }

    /// A remove another writer left undated is dated at its commit; its own date wins.
    #[test]
    fn undated_removes_are_dated_at_their_commit() {
        let undated = |path: &str| Remove {
            deletion_timestamp: None,
            ..Remove::of(&add(path, "2024-01-01"), 0)
        };
        let mut snapshot = Snapshot::default();
        let first = vec![
            Action::Add(add("a", "2024-01-01")),
            Action::Add(add("b", "2024-01-01")),
            Action::Add(add("c", "2024-01-01")),
        ];
        snapshot.apply(0, first).unwrap();
        let second = vec![
            Action::CommitInfo(serde_json::json!({ "timestamp": 42, "engineInfo": "other/1.0" })),
            Action::Remove(undated("a")),
            Action::Remove(Remove::of(&add("b", "2024-01-01"), 7)),
        ];
        snapshot.apply(1, second).unwrap();
        snapshot.apply(2, vec![Action::Remove(undated("c"))]).unwrap();
        let at = |p: &str| snapshot.tombstones[p].deletion_timestamp;
        assert_eq!((at("a"), at("b"), at("c")), (Some(42), Some(7), None));
        assert_eq!(snapshot.last_writer.as_deref(), Some("other/1.0"));
    }

    /// A gap in the versions is an error, not a snapshot missing a commit.
    #[test]
    fn a_missing_commit_is_an_error() {
        let mut snapshot = Snapshot::default();
        snapshot.apply(0, Vec::new()).unwrap();
        let error = snapshot.apply(2, Vec::new()).unwrap_err().to_string();
        assert!(error.contains("00000000000000000001.json is missing"), "{error}");
        assert!(decode_commit(3, b"not json\n").is_err());
    }

    #[test]
    fn the_schema_names_date_and_lineage_types() {
        let schema = crate::test_fixtures::schema();
        let parsed: serde_json::Value = serde_json::from_str(&schema_string(&schema)).unwrap();
        let fields = parsed["fields"].as_array().unwrap();
        let types: Vec<(&str, &str)> = fields
            .iter()
            .map(|f| (f["name"].as_str().unwrap(), f["type"].as_str().unwrap()))
            .collect();
        assert_eq!(types.len(), schema.columns.len() + 3);
        for (i, name) in schema.columns.iter().enumerate() {
            let expected = if schema.date_slot(i).is_some() {
                "date"
            } else {
                "string"
            };
            assert_eq!(types[i], (name.as_str(), expected));
        }
        assert_eq!(
            &types[schema.columns.len()..],
            [
                (LINEAGE_FILE, "string"),
                (LINEAGE_LINE, "long"),
                (LINEAGE_MODIFIED, "timestamp")
            ]
        );
    }
}
