//! One date's object built from its kept rows, a merge unit at a time, into a scratch file.

use std::sync::Arc;

use polars::prelude::*;

use super::LINEAGE_MODIFIED;
use super::StoredSlice;
use super::added::CarriedValues;
use super::frame::{frame, frame_schema};
use super::stats::FileStats;
use crate::block::RowBlock;
use crate::block::{FileTable, RowRef};
use crate::config::SchemaConfig;
use crate::error::{Error, Result};
use crate::scratch::SpillDir;

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
pub(super) const ROW_GROUP_ROWS: usize = 256 * 1024;

/// Fewest rows of a row group made of small merge units gathered together.
const MIN_GROUP_ROWS: usize = 64 * 1024;

/// An encoded object waiting in a scratch file (removed when dropped): a large date is never
/// held in memory as bytes.
pub struct EncodedObject {
    file: tempfile::TempPath,
    pub size: u64,
    pub rows: u64,
    /// Column statistics, gathered by an encoder for a Delta table ([`ParquetEncoder::for_delta`]).
    pub stats: Option<FileStats>,
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
    /// A column the files leave out (a Delta table's partition column: its value is in the
    /// log and the file's path).
    leave_out: Option<String>,
    rows: u64,
    stats: Option<FileStats>,
    /// Whether `_source_modified` is written as a UTC-adjusted timestamp (Delta's `timestamp`)
    /// rather than a local one.
    utc_lineage: bool,
    /// Columns another engine added to the table, and the date's stored values of them
    /// (`added`): written after lakeload's columns.
    added: Option<CarriedValues>,
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
    /// An encoder of a `parquet` table's object: every column of the table.
    pub fn new(schema: Arc<SchemaConfig>, scratch: &SpillDir, group_bytes: usize) -> Result<Self> {
        Self::open(schema, scratch, group_bytes, None, None)
    }

    /// An encoder of a Delta data file: the table's columns but the partition column `leave_out`
    /// (its value is in the log and the file's path); gathers the file's column statistics as
    /// rows are added (its `add` carries them); stores `_source_modified` as a UTC-adjusted
    /// timestamp, as Delta's `timestamp` type requires (a `parquet` table keeps the local form
    /// it always had); writes the columns another engine added to the table after lakeload's,
    /// with the values `added` carries.
    pub fn for_delta(
        schema: Arc<SchemaConfig>,
        scratch: &SpillDir,
        group_bytes: usize,
        leave_out: String,
        added: Option<CarriedValues>,
    ) -> Result<Self> {
        Self::open(schema, scratch, group_bytes, Some(leave_out), added)
    }

    fn open(
        schema: Arc<SchemaConfig>,
        scratch: &SpillDir,
        group_bytes: usize,
        leave_out: Option<String>,
        added: Option<CarriedValues>,
    ) -> Result<Self> {
        let delta = leave_out.is_some();
        let (file, path) = scratch
            .create_file("object")
            .map_err(Error::scratch("cannot create a scratch file"))?;
        let sink = SharedFile(Arc::new(std::sync::Mutex::new(
            std::io::BufWriter::with_capacity(1 << 20, file),
        )));
        let mut columns = frame_schema(&schema);
        if let Some(column) = leave_out.as_deref() {
            columns.shift_remove(column);
        }
        if delta {
            columns.set_dtype(
                LINEAGE_MODIFIED,
                DataType::Datetime(TimeUnit::Microseconds, Some(TimeZone::UTC)),
            );
        }
        if let Some(added) = &added {
            columns.extend(added.columns().fields());
        }
        // The Arrow schema hint in the footer names strings `large_string` rather than polars'
        // own `string_view`: pyarrow (and pandas through it) then reads the columns as strings
        // it can filter and compare; it cannot compare `string_view` (pyarrow 22). The data
        // pages are the same either way.
        let hint = polars_parquet::write::schema_to_metadata_key(&columns.to_arrow(CompatLevel::oldest()));
        let writer = ParquetWriter::new(sink.clone())
            .with_compression(ParquetCompression::Snappy)
            .with_key_value_metadata(Some(KeyValueMetadata::Static(vec![hint])))
            .batched(&columns)?;
        Ok(ParquetEncoder {
            schema,
            file: path,
            sink,
            writer,
            pending: Vec::new(),
            pending_rows: 0,
            pending_bytes: 0,
            group_bytes,
            leave_out,
            rows: 0,
            stats: delta.then(FileStats::default),
            utc_lineage: delta,
            added,
        })
    }
}

impl ParquetEncoder {
    /// Adds `frame`'s rows. A frame of a small merge unit waits for more, to make a row group
    /// of at least [`MIN_GROUP_ROWS`] (or `group_bytes`); larger frames are written at once.
    fn write(&mut self, mut frame: DataFrame) -> Result<()> {
        if let Some(added) = &self.added {
            added.attach(&mut frame)?;
        }
        if let Some(column) = &self.leave_out {
            frame = frame.drop(column)?;
        }
        if self.utc_lineage {
            let utc = frame
                .column(LINEAGE_MODIFIED)?
                .as_materialized_series()
                .clone()
                .into_datetime(TimeUnit::Microseconds, Some(TimeZone::UTC));
            frame.with_column(utc.into_column())?;
        }
        self.rows += frame.height() as u64;
        if let Some(stats) = &mut self.stats {
            stats.observe(&frame)?;
        }
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
        let ParquetEncoder {
            file,
            mut sink,
            rows,
            stats,
            ..
        } = *self;
        std::io::Write::flush(&mut sink).map_err(Error::scratch("cannot write a scratch file"))?;
        Ok(EncodedObject {
            file,
            size,
            rows,
            stats,
        })
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::block::FileInfo;
    use crate::table::decode;

    /// Small merge units are gathered into row groups of a useful size, in order; a large
    /// one is cut at the row group size; every row is written once.
    #[test]
    fn small_units_are_gathered_into_row_groups() {
        let schema = Arc::new(crate::test_fixtures::schema());
        let files = FileTable::new(std::sync::Arc::from(vec![FileInfo {
            key: "f.gz".into(),
            modified_micros: 7,
        }]));
        let unit = |first: usize, rows: usize| {
            let block = crate::test_fixtures::numbered_rows(first, rows);
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
}
