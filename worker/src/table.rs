//! The table: one snappy Parquet object per date (SPEC §3), behind the [`Table`] trait so
//! another format (Delta Lake is planned) is a new module, not a rewrite.

use std::io::Cursor;
use std::sync::Arc;

use bytes::Bytes;
use polars::prelude::*;

use crate::config::{Layout, SchemaConfig};
use crate::dates::{days_since_epoch, format_days};
use crate::error::{Error, Result};
use crate::merge::FileTable;
use crate::row::{Lineage, Row};
use crate::storage::{DynStorage, PutCondition, StorageError};

/// Bookkeeping lives under this folder of the table root; nothing in it ends in `.parquet`.
pub const META_DIR: &str = "_lakeload";

pub const LINEAGE_FILE: &str = "_source_file";
pub const LINEAGE_LINE: &str = "_source_line";
pub const LINEAGE_MODIFIED: &str = "_source_modified";

/// A data object found under the table root.
#[derive(Debug, Clone)]
pub struct DataObject {
    pub key: String,
    /// The date its name says, if it follows the `YYYY-MM-DD.snappy.parquet` naming.
    pub date: Option<i32>,
    pub size: u64,
    /// The version listed; deletes and rewrites are conditional on it.
    pub etag: Option<String>,
}

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

#[async_trait::async_trait]
pub trait Table: Send + Sync {
    /// The object key a date is stored under.
    fn key_for(&self, date: i32) -> String;

    /// Every data object under the table root (bookkeeping excluded).
    async fn list(&self) -> Result<Vec<DataObject>>;

    /// The rows stored for a date (empty if the date has no object) and the version read.
    /// Lineage file ids are interned into `files`.
    async fn read_date(&self, date: i32, files: &mut FileTable) -> Result<(Vec<Row>, Seen)>;

    /// Replaces the date's object with these rows, in one write, if it is still the version
    /// `seen`; otherwise fails with [`Error::LockLost`]. Returns the bytes written.
    async fn write_date(&self, date: i32, rows: Vec<Row>, files: FileTable, seen: Seen) -> Result<u64>;

    /// Deletes a data object if it is still the version listed.
    async fn delete(&self, object: &DataObject) -> Result<()>;
}

/// A conditional table write that found another version: only a run that lost its lock (or a
/// writer outside lakeload) gets here.
fn fenced(url: &str) -> Error {
    Error::LockLost(format!(
        "{url} changed since this run read it; another run has written the table"
    ))
}

/// Parquet files in a `ymd` or `date` layout.
pub struct ParquetTable {
    storage: DynStorage,
    layout: Layout,
    schema: Arc<SchemaConfig>,
}

impl ParquetTable {
    pub fn new(storage: DynStorage, layout: Layout, schema: Arc<SchemaConfig>) -> Self {
        ParquetTable {
            storage,
            layout,
            schema,
        }
    }

    fn partition_name(&self) -> &str {
        &self.schema.columns[self.schema.partition_column]
    }
}

/// `2024-01-31.snappy.parquet` → the date.
fn date_of_file_name(key: &str) -> Option<i32> {
    let name = crate::storage::file_name(key);
    let date = name.strip_suffix(".snappy.parquet")?;
    chrono::NaiveDate::parse_from_str(date, "%Y-%m-%d")
        .ok()
        .map(days_since_epoch)
}

#[async_trait::async_trait]
impl Table for ParquetTable {
    fn key_for(&self, date: i32) -> String {
        let day = format_days(date);
        match self.layout {
            Layout::Ymd => format!(
                "year={}/month={}/day={}/{day}.snappy.parquet",
                &day[0..4],
                &day[5..7],
                &day[8..10]
            ),
            Layout::Date => format!("{}={day}/{day}.snappy.parquet", self.partition_name()),
        }
    }

    async fn list(&self) -> Result<Vec<DataObject>> {
        let objects = self.storage.list("").await?;
        Ok(objects
            .into_iter()
            .filter(|o| !o.key.starts_with(&format!("{META_DIR}/")) && o.key.ends_with(".parquet"))
            .map(|o| DataObject {
                date: date_of_file_name(&o.key),
                key: o.key,
                size: o.size,
                etag: o.etag,
            })
            .collect())
    }

    async fn read_date(&self, date: i32, files: &mut FileTable) -> Result<(Vec<Row>, Seen)> {
        let key = self.key_for(date);
        let Some((bytes, meta)) = self.storage.get(&key).await? else {
            return Ok((Vec::new(), Seen::Absent));
        };
        let schema = self.schema.clone();
        let url = self.storage.url(&key);
        let decoded = tokio::task::spawn_blocking(move || decode(&bytes, &schema))
            .await
            .map_err(Error::other)?
            .map_err(|e| Error::Other(format!("cannot read table object {url}: {e}")))?;
        // Re-point lineage ids from the object's own file list to the run's file table.
        let ids: Vec<u32> = decoded.files.iter().map(|(k, m)| files.intern(k, *m)).collect();
        let rows = decoded
            .rows
            .into_iter()
            .map(|mut r| {
                r.lineage.file = ids[r.lineage.file as usize];
                r
            })
            .collect();
        Ok((rows, Seen::of(meta.etag)))
    }

    async fn write_date(&self, date: i32, rows: Vec<Row>, files: FileTable, seen: Seen) -> Result<u64> {
        let schema = self.schema.clone();
        let bytes = tokio::task::spawn_blocking(move || {
            let started = std::time::Instant::now();
            let bytes = encode(&rows, &schema, &files);
            tracing::debug!("encoded {} rows in {:?}", rows.len(), started.elapsed());
            bytes
        })
        .await
        .map_err(Error::other)??;
        let size = bytes.len() as u64;
        let key = self.key_for(date);
        let condition = match seen {
            Seen::Absent => Some(PutCondition::IfAbsent),
            Seen::Version(etag) => Some(PutCondition::IfMatch(etag)),
            Seen::Unknown => None,
        };
        match condition {
            None => self.storage.put(&key, bytes).await?,
            Some(condition) => match self.storage.put_if(&key, bytes, condition).await {
                Ok(_) => {}
                Err(StorageError::PreconditionFailed { url }) => return Err(fenced(&url)),
                Err(e) => return Err(e.into()),
            },
        }
        Ok(size)
    }

    async fn delete(&self, object: &DataObject) -> Result<()> {
        let deleted = match &object.etag {
            Some(etag) => self.storage.delete_if(&object.key, etag).await,
            None => self.storage.delete(&object.key).await,
        };
        match deleted {
            Err(StorageError::PreconditionFailed { url }) => Err(fenced(&url)),
            other => Ok(other?),
        }
    }
}

/// Rows → a snappy Parquet file: schema columns (dates as DATE, the rest as strings), then the
/// lineage columns.
pub fn encode(rows: &[Row], schema: &SchemaConfig, files: &FileTable) -> Result<Bytes> {
    let mut columns: Vec<Column> = Vec::with_capacity(schema.columns.len() + 3);
    for (i, name) in schema.columns.iter().enumerate() {
        let series = match schema.date_slot(i) {
            Some(j) => {
                let days: Vec<Option<i32>> = rows.iter().map(|r| r.date(j)).collect();
                Series::new(name.as_str().into(), days).into_date()
            }
            None => {
                let values: Vec<Option<&str>> = rows.iter().map(|r| r.field(i)).collect();
                Series::new(name.as_str().into(), values)
            }
        };
        columns.push(series.into_column());
    }
    let file_keys: Vec<&str> = rows.iter().map(|r| &*files.get(r.lineage.file).key).collect();
    let lines: Vec<i64> = rows.iter().map(|r| r.lineage.line as i64).collect();
    let modified: Vec<i64> = rows
        .iter()
        .map(|r| files.get(r.lineage.file).modified_micros)
        .collect();
    columns.push(Series::new(LINEAGE_FILE.into(), file_keys).into_column());
    columns.push(Series::new(LINEAGE_LINE.into(), lines).into_column());
    columns.push(
        Series::new(LINEAGE_MODIFIED.into(), modified)
            .into_datetime(TimeUnit::Microseconds, None)
            .into_column(),
    );
    let mut frame = DataFrame::new(rows.len(), columns)?;
    let mut out = Vec::new();
    ParquetWriter::new(&mut out)
        .with_compression(ParquetCompression::Snappy)
        .finish(&mut frame)?;
    Ok(Bytes::from(out))
}

/// A decoded table object.
pub struct Decoded {
    /// Lineage file ids index `files`.
    pub rows: Vec<Row>,
    /// `(_source_file, _source_modified)` pairs named by the rows.
    pub files: Vec<(String, i64)>,
}

/// A table object → rows.
pub fn decode(bytes: &[u8], schema: &SchemaConfig) -> Result<Decoded> {
    let frame = ParquetReader::new(Cursor::new(bytes)).finish()?;
    let n = frame.height();
    let text_column = |name: &str| -> Result<Vec<Option<String>>> {
        let column = frame.column(name)?.cast(&DataType::String)?;
        Ok(column.str()?.iter().map(|v| v.map(str::to_string)).collect())
    };
    let int_column = |name: &str, dtype: DataType| -> Result<Vec<Option<i64>>> {
        let column = frame.column(name)?.cast(&dtype)?.cast(&DataType::Int64)?;
        Ok(column.i64()?.iter().collect())
    };
    let mut values: Vec<Vec<Option<String>>> = Vec::with_capacity(schema.columns.len());
    for (i, name) in schema.columns.iter().enumerate() {
        values.push(match schema.date_slot(i) {
            Some(_) => vec![None; n],
            None => text_column(name)?,
        });
    }
    // In `date_columns` order, as the line parser fills them (see `SchemaConfig::date_slot`).
    let dates: Vec<Vec<Option<i64>>> = schema
        .date_columns
        .iter()
        .map(|&column| int_column(&schema.columns[column], DataType::Int32))
        .collect::<Result<_>>()?;
    let file_keys = text_column(LINEAGE_FILE)?;
    let lines = int_column(LINEAGE_LINE, DataType::Int64)?;
    let modified = int_column(LINEAGE_MODIFIED, DataType::Datetime(TimeUnit::Microseconds, None))?;

    let mut lineage_files: Vec<(String, i64)> = Vec::new();
    let mut lineage_ids: std::collections::HashMap<(&str, i64), usize> = Default::default();
    let mut rows = Vec::with_capacity(n);
    for r in 0..n {
        let (Some(key), Some(line), Some(modified)) = (&file_keys[r], lines[r], modified[r]) else {
            return Err(Error::Other(format!(
                "row {r} has no lineage; the object was not written by lakeload"
            )));
        };
        let file = *lineage_ids.entry((key.as_str(), modified)).or_insert_with(|| {
            lineage_files.push((key.clone(), modified));
            lineage_files.len() - 1
        });
        let row_values: Vec<Option<&str>> = values.iter().map(|c| c[r].as_deref()).collect();
        let row_dates = dates.iter().map(|c| c[r].map(|d| d as i32)).collect();
        rows.push(Row::from_values(
            &row_values,
            row_dates,
            Lineage {
                file: file as u32,
                line: line as u64,
                generation: 0,
            },
        ));
    }
    Ok(Decoded {
        rows,
        files: lineage_files,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Config, RawConfig};
    use crate::merge::FileInfo;
    use crate::row::{LineOutcome, LineParser};

    /// Issue 7 (2): date columns listed out of column order must decode into the slots they
    /// were parsed into, or stored rows swap their dates and stop matching their keys.
    #[test]
    fn rows_read_back_equal_rows_written_whatever_the_date_column_order() {
        for date_columns in ["c2,c4", "c4,c2", "c4,c3,c2"] {
            let mut raw = RawConfig::default();
            raw.set("source.url", "/in");
            raw.set("target.url", "/out");
            raw.set("schema.columns", "c1,c2,c3,c4");
            raw.set("schema.date_columns", date_columns);
            raw.set("schema.partition_column", "c4");
            raw.set("schema.key", "c1,c4,c2");
            let schema = Config::from_raw(&raw).unwrap().schema;
            let parser = LineParser::new(&schema, b'|');
            let line = if date_columns.contains("c3") {
                "k|2024-01-02|2024-01-03|2024-01-04"
            } else {
                "k|2024-01-02|text|2024-01-04"
            };
            let LineOutcome::Row(row) = parser.parse(line.as_bytes(), 0, 1) else {
                panic!("{line} parses")
            };
            let files = FileTable::new(std::sync::Arc::from(vec![FileInfo {
                key: "f.gz".into(),
                modified_micros: 7,
            }]));
            let bytes = encode(std::slice::from_ref(&row), &schema, &files).unwrap();
            let decoded = decode(&bytes, &schema).unwrap();
            let back = &decoded.rows[0];
            for slot in 0..schema.date_columns.len() {
                assert_eq!(
                    back.date(slot),
                    row.date(slot),
                    "{date_columns}: date slot {slot}"
                );
            }
            assert_eq!(back.field(0), Some("k"));
            assert_eq!(decoded.files, vec![("f.gz".to_string(), 7)]);
        }
    }
}
