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
use crate::storage::DynStorage;

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
}

#[async_trait::async_trait]
pub trait Table: Send + Sync {
    /// The object key a date is stored under.
    fn key_for(&self, date: i32) -> String;

    /// Every data object under the table root (bookkeeping excluded).
    async fn list(&self) -> Result<Vec<DataObject>>;

    /// The rows stored for a date (empty if the date has no object). Lineage file ids are
    /// interned into `files`.
    async fn read_date(&self, date: i32, files: &mut FileTable) -> Result<Vec<Row>>;

    /// Replaces the date's object with these rows, in one write. Returns the bytes written.
    async fn write_date(&self, date: i32, rows: Vec<Row>, files: FileTable) -> Result<u64>;

    async fn delete(&self, key: &str) -> Result<()>;
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
            })
            .collect())
    }

    async fn read_date(&self, date: i32, files: &mut FileTable) -> Result<Vec<Row>> {
        let key = self.key_for(date);
        let Some((bytes, _)) = self.storage.get(&key).await? else {
            return Ok(Vec::new());
        };
        let schema = self.schema.clone();
        let url = self.storage.url(&key);
        let decoded = tokio::task::spawn_blocking(move || decode(&bytes, &schema))
            .await
            .map_err(Error::other)?
            .map_err(|e| Error::Other(format!("cannot read table object {url}: {e}")))?;
        // Re-point lineage ids from the object's own file list to the run's file table.
        let ids: Vec<u32> = decoded.files.iter().map(|(k, m)| files.intern(k, *m)).collect();
        Ok(decoded
            .rows
            .into_iter()
            .map(|mut r| {
                r.lineage.file = ids[r.lineage.file as usize];
                r
            })
            .collect())
    }

    async fn write_date(&self, date: i32, rows: Vec<Row>, files: FileTable) -> Result<u64> {
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
        self.storage.put(&self.key_for(date), bytes).await?;
        Ok(size)
    }

    async fn delete(&self, key: &str) -> Result<()> {
        Ok(self.storage.delete(key).await?)
    }
}

/// Rows → a snappy Parquet file: schema columns (dates as DATE, the rest as strings), then the
/// lineage columns.
pub fn encode(rows: &[Row], schema: &SchemaConfig, files: &FileTable) -> Result<Bytes> {
    let mut columns: Vec<Column> = Vec::with_capacity(schema.columns.len() + 3);
    for (i, name) in schema.columns.iter().enumerate() {
        let series = match schema.date_columns.iter().position(|c| *c == i) {
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
    let mut dates: Vec<Vec<Option<i64>>> = Vec::new();
    for (i, name) in schema.columns.iter().enumerate() {
        if schema.is_date(i) {
            values.push(vec![None; n]);
            dates.push(int_column(name, DataType::Int32)?);
        } else {
            values.push(text_column(name)?);
        }
    }
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
