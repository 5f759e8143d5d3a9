//! The table: one snappy Parquet object per date (SPEC §3), behind the [`Table`] trait so
//! another format (Delta Lake is planned) is a new module, not a rewrite.

use std::sync::Arc;

use polars::prelude::*;

use crate::block::{Lineage, NULL_DATE, RowBlock, RowBuilder};
use crate::config::{Layout, SchemaConfig};
use crate::dates::{days_since_epoch, format_days};
use crate::error::{Error, Result};
use crate::merge::{FileTable, RowRef};
use crate::spill::SpillDir;
use crate::storage::{DynStorage, ObjectMeta, PutCondition, StorageError};

/// Bookkeeping lives under this folder of the table root; nothing in it ends in `.parquet`.
pub const META_DIR: &str = "_lakeload";

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

#[async_trait::async_trait]
pub trait Table: Send + Sync {
    /// The object key a date is stored under.
    fn key_for(&self, date: i32) -> String;

    /// The date whose object this table stores under `key`, if `key` is exactly where it
    /// would (`key_for(date) == key`).
    fn date_of_key(&self, key: &str) -> Option<i32>;

    /// The key prefix under which every date's object lies (`year=`, `c7=`): listing it finds
    /// the table's places without walking everything else under the root.
    fn places_prefix(&self) -> String;

    /// Every object sitting where this table stores a date, whether the table wrote it or
    /// not (see `ownership`).
    async fn list(&self) -> Result<Vec<ObjectMeta>>;

    /// The rows stored for a date (none if the date has no object), to be decoded a slice at
    /// a time, and the version read. The object is copied to a scratch file under `scratch`
    /// first, so it is never held in memory whole.
    async fn read_date(&self, date: i32, scratch: &SpillDir) -> Result<(Option<Box<dyn StoredRows>>, Seen)>;

    /// A new encoder for one date's object, writing to a scratch file under `scratch`, holding
    /// up to about `group_bytes` of rows before it writes them.
    fn encoder(&self, scratch: &SpillDir, group_bytes: usize) -> Result<Box<dyn DateEncoder>>;

    /// Replaces the date's object with `body` (from [`DateEncoder::finish`]), in one write, if
    /// it is still the version `seen`; otherwise fails with [`Error::LockLost`]. Returns the
    /// bytes written.
    async fn write_date(&self, date: i32, body: EncodedObject, seen: Seen) -> Result<u64>;

    /// Deletes the object `key` if it is still the version `etag` (unconditionally when the
    /// store gave no version).
    async fn delete(&self, key: &str, etag: Option<&str>) -> Result<()>;
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

/// `…/2024-01-31.snappy.parquet` → the date its file name states, in any layout.
pub fn date_of_file_name(key: &str) -> Option<i32> {
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

    fn date_of_key(&self, key: &str) -> Option<i32> {
        date_of_file_name(key).filter(|date| self.key_for(*date) == key)
    }

    fn places_prefix(&self) -> String {
        match self.layout {
            Layout::Ymd => "year=".into(),
            Layout::Date => format!("{}=", self.partition_name()),
        }
    }

    async fn list(&self) -> Result<Vec<ObjectMeta>> {
        let objects = self.storage.list(&self.places_prefix()).await?;
        Ok(objects
            .into_iter()
            .filter(|o| self.date_of_key(&o.key).is_some())
            .collect())
    }

    async fn read_date(&self, date: i32, scratch: &SpillDir) -> Result<(Option<Box<dyn StoredRows>>, Seen)> {
        let key = self.key_for(date);
        let url = self.storage.url(&key);
        let (file, path) = scratch
            .create_file("stored")
            .map_err(|e| Error::Other(format!("cannot create a scratch file (run.spill_dir): {e}")))?;
        let Some(meta) = crate::storage::get_to_file(&self.storage, &key, file).await? else {
            return Ok((None, Seen::Absent));
        };
        let file = std::fs::File::open(&path)
            .map_err(|e| Error::Other(format!("cannot read a scratch file (run.spill_dir): {e}")))?;
        let (rows, bytes) = ParquetReader::new(file)
            .get_metadata()
            .map(|meta| {
                let groups = &meta.row_groups;
                (
                    groups.iter().map(|g| g.num_rows()).sum::<usize>(),
                    groups.iter().map(|g| g.total_byte_size()).sum::<usize>(),
                )
            })
            .map_err(|e| Error::Other(format!("cannot read table object {url}: {e}")))?;
        let stored = StoredParquet {
            path,
            schema: self.schema.clone(),
            url,
            next: 0,
            rows,
            // The pages' plain size: a first guess (decoded columns take somewhat more),
            // corrected by each slice decoded.
            bytes_per_row: (bytes / rows.max(1)).max(1),
        };
        Ok((Some(Box::new(stored)), Seen::of(meta.etag)))
    }

    fn encoder(&self, scratch: &SpillDir, group_bytes: usize) -> Result<Box<dyn DateEncoder>> {
        Ok(Box::new(ParquetEncoder::new(
            self.schema.clone(),
            scratch,
            group_bytes,
        )?))
    }

    async fn write_date(&self, date: i32, body: EncodedObject, seen: Seen) -> Result<u64> {
        let key = self.key_for(date);
        let condition = match seen {
            Seen::Absent => Some(PutCondition::IfAbsent),
            Seen::Version(etag) => Some(PutCondition::IfMatch(etag)),
            Seen::Unknown => None,
        };
        match self.storage.put_file(&key, body.path(), condition).await {
            Ok(()) => Ok(body.size),
            Err(StorageError::PreconditionFailed { url }) => Err(fenced(&url)),
            Err(e) => Err(e.into()),
        }
    }

    async fn delete(&self, key: &str, etag: Option<&str>) -> Result<()> {
        let deleted = match etag {
            Some(etag) => self.storage.delete_if(key, etag).await,
            None => self.storage.delete(key).await,
        };
        match deleted {
            Err(StorageError::PreconditionFailed { url }) => Err(fenced(&url)),
            other => Ok(other?),
        }
    }
}

/// A date's stored rows, decoded a slice at a time so a large date never sits in memory whole.
pub trait StoredRows: Send {
    /// The next slice of rows, of about `max_bytes` once decoded (at least one row); `None`
    /// at the end.
    fn next_slice(&mut self, max_bytes: usize) -> Result<Option<StoredSlice>>;

    /// Whether slices remain after those handed out.
    fn has_more(&self) -> bool;
}

/// A stored object, copied to a scratch file (removed when dropped). Each slice maps the file
/// anew and decodes only its row groups, so memory holds one slice's pages at a time.
struct StoredParquet {
    path: tempfile::TempPath,
    schema: Arc<SchemaConfig>,
    url: String,
    next: usize,
    rows: usize,
    /// Decoded bytes per row, as far as known.
    bytes_per_row: usize,
}

impl StoredRows for StoredParquet {
    fn next_slice(&mut self, max_bytes: usize) -> Result<Option<StoredSlice>> {
        if !self.has_more() {
            return Ok(None);
        }
        let file = std::fs::File::open(&self.path)
            .map_err(|e| Error::Other(format!("cannot read a scratch file (run.spill_dir): {e}")))?;
        let take = (max_bytes / self.bytes_per_row).clamp(1, ROW_GROUP_ROWS);
        let columns = ParquetReader::new(file)
            .with_slice(Some((self.next, take)))
            .finish()
            .map_err(Error::from)
            .and_then(|frame| conform(frame, &self.schema))
            .map_err(|e| Error::Other(format!("cannot read table object {}: {e}", self.url)))?;
        self.next += take;
        if columns.height() > 0 {
            self.bytes_per_row = (columns.estimated_size() / columns.height()).max(1);
        }
        Ok(Some(StoredSlice {
            columns,
            schema: self.schema.clone(),
            url: self.url.clone(),
        }))
    }

    fn has_more(&self) -> bool {
        self.next < self.rows
    }
}

/// Stored rows in columnar form, as the table holds them: every column of the table, in its
/// order and types. A date merged whole keeps its stored rows in this form — the merge reads
/// only their keys and lineage, and the winners are re-encoded straight from these columns —
/// instead of copying every field into rows and back.
pub struct StoredSlice {
    columns: DataFrame,
    schema: Arc<SchemaConfig>,
    url: String,
}

impl StoredSlice {
    pub fn len(&self) -> usize {
        self.columns.height()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Memory the decoded columns hold.
    pub fn memory_bytes(&self) -> usize {
        self.columns.estimated_size()
    }

    /// Every row, all fields; lineage file ids interned into `files`.
    pub fn rows(&self, files: &mut FileTable) -> Result<RowBlock> {
        self.decode(Fields::All, files)
    }

    /// Every row's key, dates and lineage — what the merge compares — with the other text
    /// fields left NULL; lineage file ids interned into `files`. Row `r` is the slice's row `r`.
    pub fn keys(&self, files: &mut FileTable) -> Result<RowBlock> {
        self.decode(Fields::Key, files)
    }

    fn decode(&self, fields: Fields, files: &mut FileTable) -> Result<RowBlock> {
        let decoded = decode_frame(&self.columns, &self.schema, fields)
            .map_err(|e| Error::Other(format!("cannot read table object {}: {e}", self.url)))?;
        // Re-point lineage ids from the object's own file list to the run's file table.
        let ids: Vec<u32> = decoded.files.iter().map(|(k, m)| files.intern(k, *m)).collect();
        let mut rows = decoded.rows;
        rows.remap_files(&ids);
        Ok(rows)
    }
}

/// Which text fields a decode fills.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Fields {
    All,
    Key,
}

/// A decoded object's columns → the table's columns, in its order and types (a missing
/// column is an error: the object was not written by lakeload with this schema).
fn conform(frame: DataFrame, schema: &SchemaConfig) -> Result<DataFrame> {
    let height = frame.height();
    let columns = frame_schema(schema)
        .iter()
        .map(|(name, dtype)| Ok(frame.column(name)?.cast(dtype)?))
        .collect::<Result<Vec<Column>>>()?;
    Ok(DataFrame::new(height, columns)?)
}

/// Builds one date's object from its kept rows, added a merge unit at a time.
pub trait DateEncoder: Send {
    /// Adds the rows `at` of `blocks`, in that order; `files` names their lineage file ids.
    fn add(&mut self, blocks: &[RowBlock], at: &[RowRef], files: &FileTable) -> Result<()>;

    /// Adds rows drawn from `stored` and from the rows `at` of `blocks`: `take` lists them in
    /// the order they should be stored, numbering the stored slice's rows first and then those
    /// of `at`.
    fn add_with_stored(
        &mut self,
        stored: &StoredSlice,
        blocks: &[RowBlock],
        at: &[RowRef],
        take: &[u32],
        files: &FileTable,
    ) -> Result<()>;

    /// The finished object.
    fn finish(self: Box<Self>) -> Result<EncodedObject>;
}

/// Rows per Parquet row group: large enough for good compression and fast scans.
const ROW_GROUP_ROWS: usize = 256 * 1024;

/// Fewest rows of a row group made of small merge units gathered together.
const MIN_GROUP_ROWS: usize = 64 * 1024;

/// An encoded object waiting in a scratch file (removed when dropped): a large date is never
/// held in memory as bytes.
pub struct EncodedObject {
    file: tempfile::TempPath,
    pub size: u64,
}

impl EncodedObject {
    pub fn path(&self) -> &std::path::Path {
        &self.file
    }
}

/// Snappy Parquet: schema columns (dates as DATE, the rest as strings), then the lineage
/// columns. Each `add` becomes row groups of up to [`ROW_GROUP_ROWS`]; the rows of small
/// merge units are gathered first (see [`ParquetEncoder::write`]), so readers still scan row
/// groups of a useful size.
pub struct ParquetEncoder {
    schema: Arc<SchemaConfig>,
    file: tempfile::TempPath,
    sink: SharedFile,
    writer: polars::io::parquet::write::BatchedWriter<SharedFile>,
    /// Rows added and not yet written, in order.
    pending: Vec<DataFrame>,
    pending_rows: usize,
    pending_bytes: usize,
    group_bytes: usize,
}

/// The scratch file behind a handle the encoder keeps, so it can flush (and hear of a full
/// disk) after polars' batched writer, which owns its sink, has finished.
#[derive(Clone)]
struct SharedFile(Arc<std::sync::Mutex<std::io::BufWriter<std::fs::File>>>);

impl std::io::Write for SharedFile {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).write(buf)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).flush()
    }
}

impl ParquetEncoder {
    pub fn new(schema: Arc<SchemaConfig>, scratch: &SpillDir, group_bytes: usize) -> Result<Self> {
        let (file, path) = scratch
            .create_file("object")
            .map_err(|e| Error::Other(format!("cannot create a scratch file (run.spill_dir): {e}")))?;
        let sink = SharedFile(Arc::new(std::sync::Mutex::new(
            std::io::BufWriter::with_capacity(1 << 20, file),
        )));
        let writer = ParquetWriter::new(sink.clone())
            .with_compression(ParquetCompression::Snappy)
            .batched(&frame_schema(&schema))?;
        Ok(ParquetEncoder {
            schema,
            file: path,
            sink,
            writer,
            pending: Vec::new(),
            pending_rows: 0,
            pending_bytes: 0,
            group_bytes,
        })
    }
}

impl ParquetEncoder {
    /// Adds `frame`'s rows. A frame of a small merge unit waits for more, to make a row group
    /// of at least [`MIN_GROUP_ROWS`] (or `group_bytes`); larger frames are written at once.
    fn write(&mut self, frame: DataFrame) -> Result<()> {
        let bytes = frame.estimated_size();
        if frame.height() >= MIN_GROUP_ROWS || bytes >= self.group_bytes {
            self.flush()?;
            return self.write_groups(&frame);
        }
        self.pending_rows += frame.height();
        self.pending_bytes += bytes;
        self.pending.push(frame);
        if self.pending_rows >= MIN_GROUP_ROWS || self.pending_bytes >= self.group_bytes {
            self.flush()?;
        }
        Ok(())
    }

    /// Writes the rows waiting, as one frame.
    fn flush(&mut self) -> Result<()> {
        let mut frames = std::mem::take(&mut self.pending).into_iter();
        (self.pending_rows, self.pending_bytes) = (0, 0);
        let Some(mut rows) = frames.next() else {
            return Ok(());
        };
        for frame in frames {
            rows.vstack_mut_owned(frame)?;
        }
        // One chunk: the writer makes a row group of each chunk.
        rows.rechunk_mut();
        self.write_groups(&rows)
    }

    /// `frame`'s rows as row groups of at most [`ROW_GROUP_ROWS`].
    fn write_groups(&mut self, frame: &DataFrame) -> Result<()> {
        let mut offset = 0;
        while offset < frame.height() {
            self.writer
                .write_batch(&frame.slice(offset as i64, ROW_GROUP_ROWS))?;
            offset += ROW_GROUP_ROWS;
        }
        Ok(())
    }
}

impl DateEncoder for ParquetEncoder {
    fn add(&mut self, blocks: &[RowBlock], at: &[RowRef], files: &FileTable) -> Result<()> {
        self.write(frame(blocks, at, &self.schema, files)?)
    }

    fn add_with_stored(
        &mut self,
        stored: &StoredSlice,
        blocks: &[RowBlock],
        at: &[RowRef],
        take: &[u32],
        files: &FileTable,
    ) -> Result<()> {
        let mut all = stored.columns.clone();
        all.vstack_mut_owned(frame(blocks, at, &self.schema, files)?)?;
        all.rechunk_mut();
        let take = IdxCa::from_vec(PlSmallStr::EMPTY, take.iter().map(|&i| i as IdxSize).collect());
        self.write(all.take(&take)?)
    }

    fn finish(mut self: Box<Self>) -> Result<EncodedObject> {
        self.flush()?;
        let size = self.writer.finish()?;
        let ParquetEncoder { file, mut sink, .. } = *self;
        std::io::Write::flush(&mut sink)
            .map_err(|e| Error::Other(format!("cannot write a scratch file (run.spill_dir): {e}")))?;
        Ok(EncodedObject { file, size })
    }
}

/// The table's columns and types.
fn frame_schema(schema: &SchemaConfig) -> Schema {
    let mut fields: Vec<Field> = schema
        .columns
        .iter()
        .enumerate()
        .map(|(i, name)| {
            let dtype = match schema.date_slot(i) {
                Some(_) => DataType::Date,
                None => DataType::String,
            };
            Field::new(name.as_str().into(), dtype)
        })
        .collect();
    fields.push(Field::new(LINEAGE_FILE.into(), DataType::String));
    fields.push(Field::new(LINEAGE_LINE.into(), DataType::Int64));
    fields.push(Field::new(
        LINEAGE_MODIFIED.into(),
        DataType::Datetime(TimeUnit::Microseconds, None),
    ));
    Schema::from_iter(fields)
}

/// The rows `at` of `blocks` → a data frame of the table's columns. Built in one pass over
/// the rows, every column at once: a row's text and field ends are fetched from memory once
/// (the rows lie scattered over many blocks, in lineage order), not once per column.
fn frame(blocks: &[RowBlock], at: &[RowRef], schema: &SchemaConfig, files: &FileTable) -> Result<DataFrame> {
    enum Builder {
        Text(usize, StringChunkedBuilder),
        Date(usize, Vec<Option<i32>>),
    }
    let mut builders: Vec<Builder> = schema
        .columns
        .iter()
        .enumerate()
        .map(|(i, name)| match schema.date_slot(i) {
            Some(slot) => Builder::Date(slot, Vec::with_capacity(at.len())),
            None => Builder::Text(i, StringChunkedBuilder::new(name.as_str().into(), at.len())),
        })
        .collect();
    let mut file_keys = StringChunkedBuilder::new(LINEAGE_FILE.into(), at.len());
    let mut lines = Vec::with_capacity(at.len());
    let mut modified = Vec::with_capacity(at.len());
    for &(b, r) in at {
        let (block, r) = (&blocks[b as usize], r as usize);
        let row = block.row(r);
        for builder in &mut builders {
            match builder {
                Builder::Text(i, values) => values.append_option(row.field_str(*i)),
                Builder::Date(slot, days) => {
                    days.push(Some(block.date(r, *slot)).filter(|d| *d != NULL_DATE))
                }
            }
        }
        let file = files.get(block.file(r));
        file_keys.append_value(&*file.key);
        lines.push(block.line(r) as i64);
        modified.push(file.modified_micros);
    }
    let mut columns: Vec<Column> = builders
        .into_iter()
        .zip(&schema.columns)
        .map(|(builder, name)| match builder {
            Builder::Text(_, values) => values.finish().into_series().into_column(),
            Builder::Date(_, days) => Int32Chunked::from_iter_options(name.as_str().into(), days.into_iter())
                .into_series()
                .into_date()
                .into_column(),
        })
        .collect();
    columns.push(file_keys.finish().into_series().into_column());
    columns.push(
        Int64Chunked::from_vec(LINEAGE_LINE.into(), lines)
            .into_series()
            .into_column(),
    );
    columns.push(
        Int64Chunked::from_vec(LINEAGE_MODIFIED.into(), modified)
            .into_series()
            .into_datetime(TimeUnit::Microseconds, None)
            .into_column(),
    );
    Ok(DataFrame::new(at.len(), columns)?)
}

/// Rows → a whole snappy Parquet object's bytes (one encoder, one `add`).
#[cfg(test)]
pub fn encode(rows: &RowBlock, schema: &Arc<SchemaConfig>, files: &FileTable) -> Result<bytes::Bytes> {
    let scratch = SpillDir::new(None);
    let mut encoder: Box<dyn DateEncoder> =
        Box::new(ParquetEncoder::new(schema.clone(), &scratch, usize::MAX)?);
    let at: Vec<RowRef> = (0..rows.len() as u32).map(|r| (0, r)).collect();
    encoder.add(std::slice::from_ref(rows), &at, files)?;
    let object = encoder.finish()?;
    Ok(bytes::Bytes::from(std::fs::read(object.path())?))
}

/// A decoded table object.
pub struct Decoded {
    /// Lineage file ids index `files`.
    pub rows: RowBlock,
    /// `(_source_file, _source_modified)` pairs named by the rows.
    pub files: Vec<(String, i64)>,
}

/// A table object → rows.
#[cfg(test)]
pub fn decode(bytes: &[u8], schema: &SchemaConfig) -> Result<Decoded> {
    decode_frame(
        &ParquetReader::new(std::io::Cursor::new(bytes)).finish()?,
        schema,
        Fields::All,
    )
}

/// Table rows as polars read them → rows, with the text `fields` asked for (the others NULL).
fn decode_frame(frame: &DataFrame, schema: &SchemaConfig, fields: Fields) -> Result<Decoded> {
    let n = frame.height();
    let text_column = |name: &str| -> Result<StringChunked> {
        Ok(frame.column(name)?.cast(&DataType::String)?.str()?.clone())
    };
    let int_column = |name: &str, dtype: DataType| -> Result<Int64Chunked> {
        Ok(frame
            .column(name)?
            .cast(&dtype)?
            .cast(&DataType::Int64)?
            .i64()?
            .clone())
    };
    let mut texts: Vec<Option<StringChunked>> = Vec::with_capacity(schema.columns.len());
    for (i, name) in schema.columns.iter().enumerate() {
        let wanted = fields == Fields::All || schema.key.contains(&i);
        texts.push(match schema.date_slot(i) {
            None if wanted => Some(text_column(name)?),
            _ => None,
        });
    }
    // In `date_columns` order, as the line parser fills them (see `SchemaConfig::date_slot`).
    let dates: Vec<Int64Chunked> = schema
        .date_columns
        .iter()
        .map(|&column| int_column(&schema.columns[column], DataType::Int32))
        .collect::<Result<_>>()?;
    let file_keys = text_column(LINEAGE_FILE)?;
    let lines = int_column(LINEAGE_LINE, DataType::Int64)?;
    let modified = int_column(LINEAGE_MODIFIED, DataType::Datetime(TimeUnit::Microseconds, None))?;

    let mut text_iters: Vec<Option<_>> = texts.iter().map(|c| c.as_ref().map(|c| c.iter())).collect();
    let mut date_iters: Vec<_> = dates.iter().map(|c| c.iter()).collect();
    let (mut file_iter, mut line_iter, mut modified_iter) = (file_keys.iter(), lines.iter(), modified.iter());

    let mut lineage_files: Vec<(String, i64)> = Vec::new();
    let mut lineage_ids: std::collections::HashMap<(&str, i64), usize> = Default::default();
    let mut previous: Option<(&str, i64, usize)> = None;
    let mut builder = RowBuilder::new(schema);
    let mut rows = RowBlock::new(schema.columns.len(), schema.date_columns.len());
    let mut values: Vec<Option<&str>> = vec![None; schema.columns.len()];
    let mut row_dates: Vec<i32> = vec![NULL_DATE; schema.date_columns.len()];
    for r in 0..n {
        for (value, column) in values.iter_mut().zip(text_iters.iter_mut()) {
            *value = column.as_mut().and_then(|c| c.next().flatten());
        }
        for (date, column) in row_dates.iter_mut().zip(date_iters.iter_mut()) {
            *date = column.next().flatten().map_or(NULL_DATE, |d| d as i32);
        }
        let (Some(key), Some(line), Some(modified)) = (
            file_iter.next().flatten(),
            line_iter.next().flatten(),
            modified_iter.next().flatten(),
        ) else {
            return Err(Error::Other(format!(
                "row {r} has no lineage; the object was not written by lakeload"
            )));
        };
        // Rows come sorted by file: most rows name the file the row before them named.
        let file = match previous {
            Some((k, m, id)) if k == key && m == modified => id,
            _ => {
                let id = *lineage_ids.entry((key, modified)).or_insert_with(|| {
                    lineage_files.push((key.to_string(), modified));
                    lineage_files.len() - 1
                });
                previous = Some((key, modified, id));
                id
            }
        };
        let lineage = Lineage {
            file: file as u32,
            line: line as u64,
            generation: 0,
        };
        builder.push(&mut rows, &values, &row_dates, lineage);
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
    use crate::row::{LineOutcome, LineParser, ParsedLine};

    /// Small merge units are gathered into row groups of a useful size, in order; a large
    /// one is cut at the row group size; every row is written once.
    #[test]
    fn small_units_are_gathered_into_row_groups() {
        let schema = Arc::new(crate::merge::tests::schema());
        let files = FileTable::new(std::sync::Arc::from(vec![FileInfo {
            key: "f.gz".into(),
            modified_micros: 7,
        }]));
        let unit = |first: usize, rows: usize| {
            let mut block = RowBlock::new(3, 1);
            for i in first..first + rows {
                let text = format!("{i}|2024-01-02|v");
                let id_end = text.find('|').unwrap() as u32;
                let ends = [id_end, id_end + 11, text.len() as u32];
                let lineage = Lineage {
                    file: 0,
                    line: i as u64 + 1,
                    generation: 1,
                };
                block.push(&text, &ends, &[19724], i as u64, lineage);
            }
            let at: Vec<RowRef> = (0..rows as u32).map(|r| (0, r)).collect();
            (block, at)
        };
        let scratch = SpillDir::new(None);
        let mut encoder: Box<dyn DateEncoder> =
            Box::new(ParquetEncoder::new(schema.clone(), &scratch, usize::MAX).unwrap());
        // 10 units of 10,000 rows, then one of 300,000.
        let mut first = 0;
        for rows in [10_000; 10].into_iter().chain([300_000]) {
            let (block, at) = unit(first, rows);
            encoder.add(std::slice::from_ref(&block), &at, &files).unwrap();
            first += rows;
        }
        let object = encoder.finish().unwrap();
        let mut reader = ParquetReader::new(std::fs::File::open(object.path()).unwrap());
        let groups: Vec<usize> = reader
            .get_metadata()
            .unwrap()
            .row_groups
            .iter()
            .map(|g| g.num_rows())
            .collect();
        // 7 small units reach the minimum; the other 3 go out before the large unit, which
        // is cut at the row group size.
        assert_eq!(groups, [70_000, 30_000, ROW_GROUP_ROWS, 300_000 - ROW_GROUP_ROWS]);
        let decoded = decode(&std::fs::read(object.path()).unwrap(), &schema).unwrap();
        assert_eq!(decoded.rows.len(), first);
        let ids: Vec<usize> = (0..first)
            .map(|r| decoded.rows.field_str(r, 0).unwrap().parse().unwrap())
            .collect();
        assert!(ids.iter().enumerate().all(|(i, id)| i == *id), "rows in order");
    }

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
            let mut parsed = ParsedLine::default();
            let LineOutcome::Row(text) = parser.parse(line.as_bytes(), 1, &mut parsed) else {
                panic!("{line} parses")
            };
            let mut row = RowBlock::new(4, schema.date_columns.len());
            let lineage = Lineage {
                file: 0,
                line: 1,
                generation: 1,
            };
            row.push(text, &parsed.ends, &parsed.dates, parsed.hash, lineage);
            let files = FileTable::new(std::sync::Arc::from(vec![FileInfo {
                key: "f.gz".into(),
                modified_micros: 7,
            }]));
            let bytes = encode(&row, &Arc::new(schema.clone()), &files).unwrap();
            let decoded = decode(&bytes, &schema).unwrap();
            let back = &decoded.rows;
            for slot in 0..schema.date_columns.len() {
                assert_eq!(
                    back.date(0, slot),
                    row.date(0, slot),
                    "{date_columns}: date slot {slot}"
                );
            }
            assert_eq!(back.field_str(0, 0), Some("k"));
            assert_eq!(
                back.hash(0),
                row.hash(0),
                "{date_columns}: stored rows hash like parsed ones"
            );
            assert_eq!(decoded.files, vec![("f.gz".to_string(), 7)]);
        }
    }
}
