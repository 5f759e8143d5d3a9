//! Delta checkpoints: every [`CHECKPOINT_INTERVAL`] versions the table's snapshot is written
//! as one Parquet file, `_delta_log/<20-digit version>.checkpoint.parquet`, and
//! `_delta_log/_last_checkpoint` points at it, so a reader (lakeload included) starts from the
//! checkpoint and replays only the commits after it.
//!
//! A checkpoint holds one row per action, each in its own struct column (`txn`, `add`,
//! `remove`, `metaData`, `protocol`; the rest of the row is null). Partition values, tags,
//! format options and configuration are Parquet MAP columns, partition columns a LIST: polars
//! writes neither, so the file is written with the `parquet` crate's column writers. Rows go
//! in through their JSON form (the same serde shapes as the commits), shredded into each leaf
//! column's values and definition/repetition levels; they come back out through the crate's
//! row reader, which turns a row into JSON again.

use std::sync::Arc;

use parquet::basic::{Repetition, Type as PhysicalType};
use parquet::data_type::{BoolType, ByteArray, ByteArrayType, Int32Type, Int64Type};
use parquet::file::properties::WriterProperties;
use parquet::file::reader::{FileReader, SerializedFileReader};
use parquet::file::writer::SerializedFileWriter;
use parquet::schema::parser::parse_message_type;
use parquet::schema::types::{SchemaDescriptor, Type};
use serde_json::Value;

use super::log::{Action, LOG_DIR, Snapshot, version_named};
use crate::error::{Error, Result};
use crate::storage::{DynStorage, PutCondition, StorageError};

/// Versions between checkpoints, as Delta writers do by default.
pub const CHECKPOINT_INTERVAL: u64 = 100;

/// The pointer to the latest checkpoint.
pub const LAST_CHECKPOINT_KEY: &str = "_delta_log/_last_checkpoint";

/// The key of the checkpoint of `version`.
pub fn checkpoint_key(version: u64) -> String {
    format!("{LOG_DIR}/{version:020}.checkpoint.parquet")
}

/// Writes the checkpoint of `version` (its snapshot's `actions`), created only if absent,
/// and moves `_last_checkpoint` to it unless it already points at this version or a newer
/// one.
pub async fn write(storage: &DynStorage, version: u64, actions: &[Action]) -> Result<()> {
    let body = encode(actions)?;
    let size = body.len();
    match storage
        .put_if(
            &checkpoint_key(version),
            bytes::Bytes::from(body),
            PutCondition::IfAbsent,
        )
        .await
    {
        // Written already (a checkpoint of a version is the same whoever writes it).
        Ok(_) | Err(StorageError::PreconditionFailed { .. }) => {}
        Err(e) => return Err(e.into()),
    }
    // The pointer only moves forward: a slow writer of an older checkpoint must not send
    // readers back to it. Written only if it is still what was read.
    let (current, condition) = match storage.get(LAST_CHECKPOINT_KEY).await? {
        None => (None, Some(PutCondition::IfAbsent)),
        Some((body, meta)) => {
            let pointed: Option<u64> = serde_json::from_slice::<serde_json::Value>(&body)
                .ok()
                .and_then(|v| v["version"].as_u64());
            // A store without versions: written as it is.
            (pointed, meta.etag.map(PutCondition::IfMatch))
        }
    };
    if current.is_some_and(|v| v >= version) {
        return Ok(());
    }
    let pointer = last_checkpoint(version, actions.len(), size);
    let pointer = bytes::Bytes::from(pointer);
    let written = match condition {
        Some(condition) => storage
            .put_if(LAST_CHECKPOINT_KEY, pointer, condition)
            .await
            .map(drop),
        None => storage.put(LAST_CHECKPOINT_KEY, pointer).await,
    };
    match written {
        // Another writer moved it meanwhile (to its own, as new or newer): leave it.
        Ok(_) | Err(StorageError::PreconditionFailed { .. }) => {}
        Err(e) => return Err(e.into()),
    }
    tracing::info!("wrote the checkpoint of version {version}");
    Ok(())
}

/// The version a single-file checkpoint's key names; `None` for anything else (multi-part
/// checkpoints of other writers included: lakeload replays the commits instead).
pub fn checkpoint_version_of_key(key: &str) -> Option<u64> {
    version_named(key, ".checkpoint.parquet")
}

/// Whether a run that committed `version` writes its checkpoint, the latest being of version
/// `last`: every [`CHECKPOINT_INTERVAL`] versions, and at the next commit when the run due
/// to write one did not.
pub fn is_due(version: u64, last: Option<u64>) -> bool {
    version >= CHECKPOINT_INTERVAL && version - last.unwrap_or(0) >= CHECKPOINT_INTERVAL
}

/// The body of `_last_checkpoint` for a checkpoint of `actions` actions at `version`.
pub fn last_checkpoint(version: u64, actions: usize, size_in_bytes: usize) -> Vec<u8> {
    serde_json::json!({ "version": version, "size": actions, "sizeInBytes": size_in_bytes })
        .to_string()
        .into_bytes()
}

/// The checkpoint schema, as Spark writes it (every field optional): a file without a deletion
/// vector has a null `deletionVector`, and a protocol without features null feature lists.
const SCHEMA: &str = "
message spark_schema {
  optional group txn {
    optional binary appId (STRING);
    optional int64 version;
    optional int64 lastUpdated;
  }
  optional group add {
    optional binary path (STRING);
    optional group partitionValues (MAP) {
      repeated group key_value {
        required binary key (STRING);
        optional binary value (STRING);
      }
    }
    optional int64 size;
    optional int64 modificationTime;
    optional boolean dataChange;
    optional binary stats (STRING);
    optional group tags (MAP) {
      repeated group key_value {
        required binary key (STRING);
        optional binary value (STRING);
      }
    }
    optional group deletionVector {
      optional binary storageType (STRING);
      optional binary pathOrInlineDv (STRING);
      optional int32 offset;
      optional int32 sizeInBytes;
      optional int64 cardinality;
    }
  }
  optional group remove {
    optional binary path (STRING);
    optional int64 deletionTimestamp;
    optional boolean dataChange;
    optional boolean extendedFileMetadata;
    optional group partitionValues (MAP) {
      repeated group key_value {
        required binary key (STRING);
        optional binary value (STRING);
      }
    }
    optional int64 size;
    optional group deletionVector {
      optional binary storageType (STRING);
      optional binary pathOrInlineDv (STRING);
      optional int32 offset;
      optional int32 sizeInBytes;
      optional int64 cardinality;
    }
  }
  optional group metaData {
    optional binary id (STRING);
    optional binary name (STRING);
    optional binary description (STRING);
    optional group format {
      optional binary provider (STRING);
      optional group options (MAP) {
        repeated group key_value {
          required binary key (STRING);
          optional binary value (STRING);
        }
      }
    }
    optional binary schemaString (STRING);
    optional group partitionColumns (LIST) {
      repeated group list {
        optional binary element (STRING);
      }
    }
    optional group configuration (MAP) {
      repeated group key_value {
        required binary key (STRING);
        optional binary value (STRING);
      }
    }
    optional int64 createdTime;
  }
  optional group protocol {
    optional int32 minReaderVersion;
    optional int32 minWriterVersion;
    optional group readerFeatures (LIST) {
      repeated group list {
        optional binary element (STRING);
      }
    }
    optional group writerFeatures (LIST) {
      repeated group list {
        optional binary element (STRING);
      }
    }
  }
}
";

/// The actions a checkpoint of `snapshot` holds: protocol, metadata, the latest transaction
/// of each application, the live files and the tombstones of removed ones (kept until vacuum
/// deletes their files, so older versions' files stay known as the table's).
pub fn actions_of(snapshot: &Snapshot) -> Vec<Action> {
    let mut actions = Vec::new();
    actions.extend(snapshot.protocol.clone().map(Action::Protocol));
    actions.extend(snapshot.metadata.clone().map(Action::Metadata));
    actions.extend(snapshot.txns.iter().map(|(app_id, version)| {
        Action::Txn(super::log::Txn {
            app_id: app_id.clone(),
            version: *version,
            last_updated: None,
        })
    }));
    // A checkpoint reconciles the log; it changes no data, as PROTOCOL.md requires of its
    // adds.
    actions.extend(snapshot.files.values().map(|add| {
        Action::Add(super::log::Add {
            data_change: false,
            ..add.clone()
        })
    }));
    actions.extend(snapshot.tombstones.values().cloned().map(Action::Remove));
    actions
}

/// The checkpoint's bytes for `actions` (from [`actions_of`]).
pub fn encode(actions: &[Action]) -> Result<Vec<u8>> {
    let broken =
        |e: parquet::errors::ParquetError| Error::Other(format!("cannot write a Delta checkpoint: {e}"));
    let schema = Arc::new(parse_message_type(SCHEMA).map_err(broken)?);
    let descriptor = SchemaDescriptor::new(schema.clone());
    let mut leaves: Vec<Leaf> = descriptor
        .columns()
        .iter()
        .map(|c| Leaf::new(c.physical_type()))
        .collect();
    for action in actions {
        let row = action.to_value()?;
        let mut offset = 0;
        for field in schema.get_fields() {
            let width = leaf_count(field);
            shred_field(
                field,
                row.get(field.name()),
                0,
                0,
                0,
                &mut leaves[offset..offset + width],
            )?;
            offset += width;
        }
    }
    let properties = WriterProperties::builder()
        .set_compression(parquet::basic::Compression::SNAPPY)
        .build();
    let mut out = Vec::new();
    let mut writer = SerializedFileWriter::new(&mut out, schema, Arc::new(properties)).map_err(broken)?;
    let mut group = writer.next_row_group().map_err(broken)?;
    for (i, leaf) in leaves.iter().enumerate() {
        let column = descriptor.column(i);
        let def = (column.max_def_level() > 0).then_some(leaf.def.as_slice());
        let rep = (column.max_rep_level() > 0).then_some(leaf.rep.as_slice());
        let mut writer = group
            .next_column()
            .map_err(broken)?
            .ok_or_else(|| Error::Other("the Delta checkpoint schema lost a column".into()))?;
        match &leaf.values {
            Values::Bytes(v) => writer.typed::<ByteArrayType>().write_batch(v, def, rep),
            Values::Int64(v) => writer.typed::<Int64Type>().write_batch(v, def, rep),
            Values::Int32(v) => writer.typed::<Int32Type>().write_batch(v, def, rep),
            Values::Bool(v) => writer.typed::<BoolType>().write_batch(v, def, rep),
        }
        .map_err(broken)?;
        writer.close().map_err(broken)?;
    }
    group.close().map_err(broken)?;
    writer.close().map_err(broken)?;
    Ok(out)
}

/// The snapshot a checkpoint of `version` holds.
pub fn decode(version: u64, bytes: Vec<u8>) -> Result<Snapshot> {
    let damaged = |what: String| Error::Other(format!("{}: {what}", checkpoint_key(version)));
    let reader = SerializedFileReader::new(bytes::Bytes::from(bytes))
        .map_err(|e| damaged(format!("not Parquet: {e}")))?;
    let rows = reader
        .get_row_iter(None)
        .map_err(|e| damaged(format!("unreadable: {e}")))?;
    let mut actions = Vec::new();
    for row in rows {
        let row = row.map_err(|e| damaged(format!("unreadable row: {e}")))?;
        let Value::Object(columns) = row.to_json_value() else {
            continue;
        };
        for (name, body) in columns {
            if body.is_null() {
                continue;
            }
            if let Some(action) = Action::from_value(&name, without_nulls(body))
                .map_err(|e| damaged(format!("not a Delta action: {e}")))?
            {
                actions.push(action);
            }
        }
    }
    let mut snapshot = Snapshot::default();
    snapshot.apply_checkpoint(version, actions);
    Ok(snapshot)
}

/// `body` without its null struct fields (absent in a commit's JSON, null in a checkpoint's
/// row); a map's null values stay (a null partition value).
fn without_nulls(body: Value) -> Value {
    match body {
        Value::Object(fields) => Value::Object(
            fields
                .into_iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| match k.as_str() {
                    "format" => (k, without_nulls(v)),
                    _ => (k, v),
                })
                .collect(),
        ),
        other => other,
    }
}

/// One leaf column being built: its values (nulls left out) and levels, one per entry.
struct Leaf {
    values: Values,
    def: Vec<i16>,
    rep: Vec<i16>,
}

enum Values {
    Bytes(Vec<ByteArray>),
    Int64(Vec<i64>),
    Int32(Vec<i32>),
    Bool(Vec<bool>),
}

impl Leaf {
    fn new(kind: PhysicalType) -> Leaf {
        let values = match kind {
            PhysicalType::INT64 => Values::Int64(Vec::new()),
            PhysicalType::INT32 => Values::Int32(Vec::new()),
            PhysicalType::BOOLEAN => Values::Bool(Vec::new()),
            _ => Values::Bytes(Vec::new()),
        };
        Leaf {
            values,
            def: Vec::new(),
            rep: Vec::new(),
        }
    }

    fn push(&mut self, value: &Value, def: i16, rep: i16) -> Result<()> {
        let wrong = || {
            Error::Other(format!(
                "a Delta checkpoint value {value} does not fit its column"
            ))
        };
        match &mut self.values {
            Values::Bytes(v) => v.push(ByteArray::from(value.as_str().ok_or_else(wrong)?)),
            Values::Int64(v) => v.push(value.as_i64().ok_or_else(wrong)?),
            Values::Int32(v) => v.push(
                value
                    .as_i64()
                    .and_then(|n| i32::try_from(n).ok())
                    .ok_or_else(wrong)?,
            ),
            Values::Bool(v) => v.push(value.as_bool().ok_or_else(wrong)?),
        }
        self.def.push(def);
        self.rep.push(rep);
        Ok(())
    }

    fn push_null(&mut self, def: i16, rep: i16) {
        self.def.push(def);
        self.rep.push(rep);
    }
}

fn leaf_count(ty: &Type) -> usize {
    if ty.is_primitive() {
        1
    } else {
        ty.get_fields().iter().map(|f| leaf_count(f)).sum()
    }
}

/// Shreds `value` of field `ty` into `leaves` (the field's leaf columns): `def` and `rep` are
/// the levels reached above the field, `depth` the repetition level of the nearest repeated
/// ancestor.
fn shred_field(
    ty: &Type,
    value: Option<&Value>,
    def: i16,
    rep: i16,
    depth: i16,
    leaves: &mut [Leaf],
) -> Result<()> {
    let value = value.filter(|v| !v.is_null());
    match ty.get_basic_info().repetition() {
        Repetition::OPTIONAL => match value {
            None => {
                leaves.iter_mut().for_each(|l| l.push_null(def, rep));
                Ok(())
            }
            Some(v) => shred_value(ty, v, def + 1, rep, depth, leaves),
        },
        Repetition::REQUIRED => match value {
            None => Err(Error::Other(format!(
                "a Delta checkpoint row lacks its required field {}",
                ty.name()
            ))),
            Some(v) => shred_value(ty, v, def, rep, depth, leaves),
        },
        Repetition::REPEATED => {
            let items = value
                .and_then(Value::as_array)
                .map(Vec::as_slice)
                .unwrap_or_default();
            if items.is_empty() {
                leaves.iter_mut().for_each(|l| l.push_null(def, rep));
                return Ok(());
            }
            for (i, item) in items.iter().enumerate() {
                let rep = if i == 0 { rep } else { depth + 1 };
                shred_value(ty, item, def + 1, rep, depth + 1, leaves)?;
            }
            Ok(())
        }
    }
}

/// Shreds a present value of `ty`. A MAP's object becomes the list of its key-value entries
/// and a LIST's array the list of its elements, under the names the schema gives them.
fn shred_value(ty: &Type, value: &Value, def: i16, rep: i16, depth: i16, leaves: &mut [Leaf]) -> Result<()> {
    if ty.is_primitive() {
        return leaves[0].push(value, def, rep);
    }
    let fields = ty.get_fields();
    let regrouped;
    let value = match ty.get_basic_info().converted_type() {
        parquet::basic::ConvertedType::MAP => {
            let entry = &fields[0];
            let (key, val) = (entry.get_fields()[0].name(), entry.get_fields()[1].name());
            let entries: Vec<Value> = value
                .as_object()
                .into_iter()
                .flatten()
                .map(|(k, v)| serde_json::json!({ key: k, val: v }))
                .collect();
            regrouped = serde_json::json!({ entry.name(): entries });
            &regrouped
        }
        parquet::basic::ConvertedType::LIST => {
            let entry = &fields[0];
            let element = entry.get_fields()[0].name();
            let items: Vec<Value> = value
                .as_array()
                .into_iter()
                .flatten()
                .map(|v| serde_json::json!({ element: v }))
                .collect();
            regrouped = serde_json::json!({ entry.name(): items });
            &regrouped
        }
        _ => value,
    };
    let mut offset = 0;
    for field in fields {
        let width = leaf_count(field);
        shred_field(
            field,
            value.get(field.name()),
            def,
            rep,
            depth,
            &mut leaves[offset..offset + width],
        )?;
        offset += width;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::table::delta::log::{Add, Format, Metadata, Protocol, Remove, Txn};

    fn add(path: &str, day: Option<&str>) -> Add {
        Add {
            path: path.into(),
            partition_values: BTreeMap::from([("day".to_string(), day.map(str::to_string))]),
            size: 10,
            modification_time: 1_700_000_000_000,
            data_change: true,
            stats: Some(r#"{"numRecords":3}"#.into()),
            tags: None,
            deletion_vector: None,
            other: BTreeMap::new(),
        }
    }

    /// A snapshot written as a checkpoint reads back the same: metadata with its list and
    /// maps (empty ones too), transactions, live files (a null partition value included) and
    /// tombstones.
    #[test]
    fn a_checkpoint_reads_back_as_its_snapshot() {
        let mut snapshot = Snapshot::default();
        let first = vec![
            Action::Protocol(Protocol::lakeload()),
            Action::Metadata(Metadata {
                id: "id-1".into(),
                name: None,
                description: None,
                format: Format {
                    provider: "parquet".into(),
                    options: BTreeMap::new(),
                },
                schema_string: r#"{"type":"struct","fields":[]}"#.into(),
                partition_columns: vec!["day".into()],
                configuration: BTreeMap::from([("k".to_string(), "v".to_string())]),
                created_time: Some(5),
                other: BTreeMap::new(),
            }),
            Action::Add(add("day=2024-01-01/a.parquet", Some("2024-01-01"))),
            Action::Add(add("day=2024-01-02/b.parquet", Some("2024-01-02"))),
            Action::Add(add("day=__HIVE_DEFAULT_PARTITION__/n.parquet", None)),
            Action::Txn(Txn {
                app_id: "lakeload".into(),
                version: 1,
                last_updated: None,
            }),
        ];
        snapshot.apply(0, first).unwrap();
        let replaced = add("day=2024-01-01/a.parquet", Some("2024-01-01"));
        snapshot
            .apply(
                1,
                vec![
                    Action::Remove(Remove::of(&replaced, 9)),
                    Action::Add(add("day=2024-01-01/c.parquet", Some("2024-01-01"))),
                    Action::Txn(Txn {
                        app_id: "lakeload".into(),
                        version: 2,
                        last_updated: Some(9),
                    }),
                ],
            )
            .unwrap();
        let actions = actions_of(&snapshot);
        assert_eq!(actions.len(), 2 + 1 + 3 + 1);
        let bytes = encode(&actions).unwrap();
        let back = decode(1, bytes).unwrap();
        // The same snapshot, its adds marked as changing no data.
        let mut expected = snapshot.clone();
        for add in expected.files.values_mut() {
            add.data_change = false;
        }
        assert_eq!(back, expected);
        assert_eq!(back.tombstones.len(), 1);
    }

    /// A table with deletion vectors: its protocol's feature lists and each file's vector
    /// read back; a file whose vector changed stays live (its old vector's remove is no
    /// tombstone); a file without a vector has a null `deletionVector`, not an empty struct.
    #[test]
    fn a_checkpoint_keeps_deletion_vectors() {
        let vector = |id: &str, cardinality| crate::table::delta::deletion_vector::DeletionVector {
            storage_type: "u".into(),
            path_or_inline_dv: id.into(),
            offset: Some(1),
            size_in_bytes: 40,
            cardinality,
        };
        let with = |path: &str, dv| Add {
            deletion_vector: dv,
            ..add(path, Some("2024-01-01"))
        };
        let mut snapshot = Snapshot::default();
        snapshot
            .apply(
                0,
                vec![
                    Action::Protocol(Protocol::with_deletion_vectors()),
                    Action::Add(with("day=2024-01-01/a.parquet", None)),
                    Action::Add(with(
                        "day=2024-01-01/b.parquet",
                        Some(vector("aaaaaaaaaaaaaaaaaaaa", 1)),
                    )),
                    Action::Add(with(
                        "day=2024-01-01/c.parquet",
                        Some(vector("cccccccccccccccccccc", 1)),
                    )),
                ],
            )
            .unwrap();
        let old_b = with(
            "day=2024-01-01/b.parquet",
            Some(vector("aaaaaaaaaaaaaaaaaaaa", 1)),
        );
        let old_c = with(
            "day=2024-01-01/c.parquet",
            Some(vector("cccccccccccccccccccc", 1)),
        );
        snapshot
            .apply(
                1,
                vec![
                    // The new vector's add first, its old one's remove after: the file stays.
                    Action::Add(with(
                        "day=2024-01-01/b.parquet",
                        Some(vector("bbbbbbbbbbbbbbbbbbbb", 2)),
                    )),
                    Action::Remove(Remove::of(&old_b, 9)),
                    Action::Remove(Remove::of(&old_c, 9)),
                ],
            )
            .unwrap();
        assert_eq!(snapshot.files.len(), 2, "{:?}", snapshot.files.keys());
        assert_eq!(snapshot.files["day=2024-01-01/b.parquet"].deleted_rows(), 2);
        assert_eq!(snapshot.files["day=2024-01-01/b.parquet"].live_rows(), Some(1));
        assert_eq!(snapshot.tombstones.len(), 1, "only c left the table");
        let bytes = encode(&actions_of(&snapshot)).unwrap();
        let reader = SerializedFileReader::new(bytes::Bytes::from(bytes.clone())).unwrap();
        let nulls = reader
            .get_row_iter(None)
            .unwrap()
            .map(|row| row.unwrap().to_json_value())
            .filter(|row| row["add"]["path"] == "day=2024-01-01/a.parquet")
            .map(|row| row["add"]["deletionVector"].is_null())
            .collect::<Vec<_>>();
        assert_eq!(nulls, [true]);
        let back = decode(1, bytes).unwrap();
        let mut expected = snapshot.clone();
        for add in expected.files.values_mut() {
            add.data_change = false;
        }
        assert_eq!(back, expected);
        assert!(back.protocol.unwrap().has_deletion_vectors());
    }

    #[test]
    fn checkpoint_keys_and_intervals() {
        assert_eq!(
            checkpoint_key(100),
            "_delta_log/00000000000000000100.checkpoint.parquet"
        );
        assert_eq!(checkpoint_version_of_key(&checkpoint_key(300)), Some(300));
        for other in [
            "_delta_log/00000000000000000100.json",
            "_delta_log/00000000000000000100.checkpoint.0000000001.0000000002.parquet",
            LAST_CHECKPOINT_KEY,
        ] {
            assert_eq!(checkpoint_version_of_key(other), None, "{other}");
        }
        assert!(!is_due(0, None) && !is_due(99, None) && is_due(100, None));
        assert!(!is_due(101, Some(100)) && is_due(200, Some(100)));
        // The run that committed 100 wrote none: the next one does.
        assert!(is_due(101, None) && is_due(205, Some(100)) && !is_due(250, Some(205)));
    }

    /// `_last_checkpoint` moves forward only: a writer finishing an older checkpoint late
    /// leaves the newer pointer.
    #[tokio::test]
    async fn the_checkpoint_pointer_never_moves_backwards() {
        let dir = tempfile::tempdir().unwrap();
        let storage: DynStorage = Arc::new(crate::storage::LocalStorage::new(dir.path().to_path_buf()));
        let actions = vec![Action::Protocol(Protocol::lakeload())];
        let pointed = || async {
            let (body, _) = storage.get(LAST_CHECKPOINT_KEY).await.unwrap().unwrap();
            serde_json::from_slice::<serde_json::Value>(&body).unwrap()["version"].as_u64()
        };
        write(&storage, 200, &actions).await.unwrap();
        write(&storage, 100, &actions).await.unwrap();
        assert_eq!(pointed().await, Some(200));
        write(&storage, 300, &actions).await.unwrap();
        assert_eq!(pointed().await, Some(300));
        assert!(storage.get(&checkpoint_key(100)).await.unwrap().is_some());
    }
}
