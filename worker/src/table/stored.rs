//! A stored date read back a slice at a time, so a large date never sits in memory whole.

use polars::prelude::*;

use super::encoder::ROW_GROUP_ROWS;
use super::frame::{Fields, conform, decode_frame, key_hashes};
use super::{LINEAGE_FILE, LINEAGE_LINE, LINEAGE_MODIFIED};
use crate::block::FileTable;
use crate::block::RowBlock;
use crate::config::SchemaConfig;
use crate::error::{Error, Result};

/// A date's stored rows, decoded a slice at a time so a large date never sits in memory whole.
pub trait StoredRows: Send {
    /// The next slice of rows, of about `max_bytes` once decoded (at least one row); `None`
    /// at the end.
    fn next_slice(&mut self, max_bytes: usize) -> Result<Option<StoredSlice>>;

    /// Whether slices remain after those handed out.
    fn has_more(&self) -> bool;

    /// The stored objects by whether any of their rows' key hashes (the merge's,
    /// [`crate::block::KeyColumns::hash`]) is among `hashes`, reading only the columns a key
    /// is made of: the keys of those that hold none, which a merge of rows with those keys can
    /// leave as they are, and the stored rows of the rest, to be merged. With `mark`, an
    /// object holding some stays too: only its rows holding those keys are merged (read as
    /// keys and lineage, [`StoredSlice::marked`]), and those the merge finds superseded are
    /// marked deleted where they are ([`SplitByKeys::Known::marked`]). Rows to be marked are
    /// kept decoded from this one read, as the merge compares them, while they fit `room`
    /// bytes (taken from it); beyond it they are read again when merged.
    fn split_by_keys(
        self: Box<Self>,
        hashes: &KeyHashes,
        mark: bool,
        room: &mut usize,
    ) -> Result<SplitByKeys>;
}

/// The key hashes of a date's new rows. They are hashes already, so the set hashes them with
/// foldhash's fast hasher rather than SipHash: the key check probes it once per stored row.
pub type KeyHashes = std::collections::HashSet<u64, foldhash::fast::FixedState>;

/// Stored objects sorted by whether they hold any of the new rows' keys.
pub enum SplitByKeys {
    /// The objects cannot tell (no key, or no key columns to read): merge them all.
    Unknown(Box<dyn StoredRows>),
    Known {
        /// Keys of the objects that hold none of the keys.
        untouched: Vec<String>,
        /// The rows to merge: of the objects that hold some, all of them; with `mark`, only
        /// their rows holding the keys (keys and lineage only).
        holding: Option<Box<dyn StoredRows>>,
        /// With `mark`: the objects holding some of the keys, by key, with the positions of
        /// the rows holding them (physical row indexes, ascending): the rows `holding` reads.
        marked: Vec<(String, Vec<u64>)>,
    },
}

/// A stored object, copied to a scratch file (removed when dropped). Each slice maps the file
/// anew and decodes only its row groups, so memory holds one slice's pages at a time.
pub(super) struct StoredParquet {
    path: tempfile::TempPath,
    schema: Arc<SchemaConfig>,
    url: String,
    next: usize,
    rows: usize,
    /// Decoded bytes per row, as far as known.
    bytes_per_row: usize,
    /// A column the file leaves out, and the date it holds in every row (a Delta table's
    /// partition column).
    partition: Option<(String, i32)>,
    /// The object's key in the table, when a merge may leave it as it is (a Delta file).
    key: Option<String>,
    /// Rows the table no longer reads (a Delta file's deletion vector): never handed out.
    deleted: Option<std::sync::Arc<roaring::RoaringTreemap>>,
    /// Only these rows are handed out (ascending physical positions), when set, from the
    /// `only_next`th on.
    only: Option<Vec<u64>>,
    only_next: usize,
    /// The rows handed out (with their positions) when the key check kept them decoded
    /// ([`StoredRows::split_by_keys`]): served instead of reading `only` again.
    kept: std::collections::VecDeque<(DataFrame, Vec<u64>)>,
}

impl StoredParquet {
    /// The stored object copied to scratch file `path`, as `url` names it.
    pub(super) fn open(path: tempfile::TempPath, schema: Arc<SchemaConfig>, url: String) -> Result<Self> {
        let file = std::fs::File::open(&path).map_err(Error::scratch("cannot read a scratch file"))?;
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
        Ok(StoredParquet {
            path,
            schema,
            url,
            next: 0,
            rows,
            // The pages' plain size: a first guess (decoded columns take somewhat more),
            // corrected by each slice decoded.
            bytes_per_row: (bytes / rows.max(1)).max(1),
            partition: None,
            key: None,
            deleted: None,
            only: None,
            only_next: 0,
            kept: Default::default(),
        })
    }

    /// Rows at the positions `deleted` are not the table's.
    pub(super) fn without(mut self, deleted: Option<std::sync::Arc<roaring::RoaringTreemap>>) -> Self {
        self.deleted = deleted.filter(|d| !d.is_empty());
        self
    }

    fn is_deleted(&self, position: u64) -> bool {
        self.deleted.as_ref().is_some_and(|d| d.contains(position))
    }

    /// The file leaves column `column` out; every row holds `date` there.
    pub(super) fn with_partition(mut self, column: String, date: i32) -> Self {
        self.partition = Some((column, date));
        self
    }

    /// The object is the table's file `key`, which a merge may leave as it is.
    pub(super) fn with_key(mut self, key: String) -> Self {
        self.key = Some(key);
        self
    }

    /// Puts the partition column back, when the file leaves it out.
    fn with_partition_column(&self, mut frame: DataFrame) -> Result<DataFrame> {
        if let Some((column, date)) = &self.partition {
            let days = Int32Chunked::full(column.as_str().into(), *date, frame.height());
            frame.with_column(days.into_series().into_date().into_column())?;
        }
        Ok(frame)
    }
}

impl StoredParquet {
    /// The columns a stored row's key hash is computed from ([`key_hashes`]), less the
    /// partition column a Delta file leaves out (put back from the path).
    /// A key of the partition column alone has no column in the file: a small column is read
    /// then, for the row count.
    fn key_columns(&self) -> Vec<String> {
        let schema = &self.schema;
        let mut names: Vec<String> = schema
            .key
            .iter()
            .map(|&c| schema.columns[c].clone())
            .filter(|name| self.partition.as_ref().is_none_or(|(p, _)| p != name))
            .collect();
        if names.is_empty() {
            names.push(LINEAGE_LINE.into());
        }
        names
    }

    /// The positions of the stored rows (deleted ones left out) whose key hash is among
    /// `hashes`, a row group at a time. Without `mark`, up to the first found: the file is
    /// merged whole if any. With `mark`, all of them, and the rows found are kept decoded in
    /// `kept` as the merge will compare them, while they fit `room`: the columns a merge
    /// compares are read here at once, so the file's keys are decoded once.
    fn positions_holding(&mut self, hashes: &KeyHashes, mark: bool, room: &mut usize) -> Result<Vec<u64>> {
        let columns = match mark {
            true => self.compared_columns(),
            false => self.key_columns(),
        };
        let mut found = Vec::new();
        let mut kept = Some(std::collections::VecDeque::new());
        let mut taken = 0;
        let mut offset = 0;
        while offset < self.rows {
            let failed = |e: Error| Error::Other(format!("cannot read table object {}: {e}", self.url));
            let file =
                std::fs::File::open(&self.path).map_err(Error::scratch("cannot read a scratch file"))?;
            let frame = ParquetReader::new(file)
                .with_columns(Some(columns.clone()))
                .with_slice(Some((offset, ROW_GROUP_ROWS)))
                .finish()
                .map_err(Error::from)
                .and_then(|frame| self.with_partition_column(frame))
                .map_err(failed)?;
            let row_hashes = key_hashes(&frame, &self.schema).map_err(failed)?;
            let first_found = found.len();
            for (r, hash) in row_hashes.iter().enumerate() {
                let position = (offset + r) as u64;
                if hashes.contains(hash) && !self.is_deleted(position) {
                    found.push(position);
                    if !mark {
                        return Ok(found);
                    }
                }
            }
            if let Some(rows) = kept.as_mut().filter(|_| found.len() > first_found) {
                let mut holding = vec![false; frame.height()];
                for &p in &found[first_found..] {
                    holding[p as usize - offset] = true;
                }
                let frame = frame.filter(&holding.into_iter().collect())?;
                let bytes = frame.estimated_size();
                match taken + bytes <= *room {
                    true => {
                        taken += bytes;
                        rows.push_back((frame, found[first_found..].to_vec()));
                    }
                    false => kept = None,
                }
            }
            offset += ROW_GROUP_ROWS;
        }
        // Past the room, none are kept (all are read again) and the room stays for others.
        if let Some(rows) = kept {
            *room -= taken;
            self.kept = rows;
        }
        Ok(found)
    }
}

impl StoredRows for StoredParquet {
    fn split_by_keys(
        mut self: Box<Self>,
        hashes: &KeyHashes,
        mark: bool,
        room: &mut usize,
    ) -> Result<SplitByKeys> {
        let Some(key) = self.key.clone() else {
            return Ok(SplitByKeys::Unknown(self));
        };
        let positions = self.positions_holding(hashes, mark, room)?;
        Ok(match (positions.is_empty(), mark) {
            (true, _) => SplitByKeys::Known {
                untouched: vec![key],
                holding: None,
                marked: Vec::new(),
            },
            (false, false) => SplitByKeys::Known {
                untouched: Vec::new(),
                holding: Some(self),
                marked: Vec::new(),
            },
            (false, true) => {
                // Rows the key check kept decoded are all it hands out.
                self.only = Some(match self.kept.is_empty() {
                    true => positions.clone(),
                    false => Vec::new(),
                });
                SplitByKeys::Known {
                    untouched: Vec::new(),
                    holding: Some(self),
                    marked: vec![(key, positions)],
                }
            }
        })
    }

    fn next_slice(&mut self, max_bytes: usize) -> Result<Option<StoredSlice>> {
        if let Some((frame, positions)) = self.kept.pop_front() {
            return Ok(Some(StoredSlice {
                columns: frame,
                schema: self.schema.clone(),
                url: self.url.clone(),
                marked: self.key.clone().map(|key| (key, positions)),
            }));
        }
        while self.has_more() {
            if let Some(only) = &self.only {
                // Straight to the next row handed out.
                self.next = self.next.max(only[self.only_next] as usize);
            }
            let file =
                std::fs::File::open(&self.path).map_err(Error::scratch("cannot read a scratch file"))?;
            let take = (max_bytes / self.bytes_per_row).clamp(1, ROW_GROUP_ROWS);
            let first = self.next;
            // Rows to be marked are compared, never re-encoded: only what the merge reads.
            let columns = self.only.is_some().then(|| self.compared_columns());
            let mut positions = Vec::new();
            let frame = ParquetReader::new(file)
                .with_columns(columns)
                .with_slice(Some((first, take)))
                .finish()
                .map_err(Error::from)
                .and_then(|frame| self.kept_rows(frame, first, &mut positions))
                .and_then(|frame| self.with_partition_column(frame))
                .and_then(|frame| match self.only {
                    Some(_) => Ok(frame),
                    None => conform(frame, &self.schema),
                })
                .map_err(|e| Error::Other(format!("cannot read table object {}: {e}", self.url)))?;
            self.next += take;
            if frame.height() == 0 {
                continue;
            }
            if self.only.is_none() {
                self.bytes_per_row = (frame.estimated_size() / frame.height()).max(1);
            }
            let marked = match (&self.only, &self.key) {
                (Some(_), Some(key)) => Some((key.clone(), positions)),
                _ => None,
            };
            return Ok(Some(StoredSlice {
                columns: frame,
                schema: self.schema.clone(),
                url: self.url.clone(),
                marked,
            }));
        }
        Ok(None)
    }

    fn has_more(&self) -> bool {
        if !self.kept.is_empty() {
            return true;
        }
        match &self.only {
            Some(only) => self.only_next < only.len(),
            None => self.next < self.rows,
        }
    }
}

impl StoredParquet {
    /// The columns the merge compares stored rows by: the key's text columns, every date
    /// column and the lineage (less the partition column a Delta file leaves out).
    fn compared_columns(&self) -> Vec<String> {
        let schema = &self.schema;
        let mut names: Vec<String> = (0..schema.columns.len())
            .filter(|&c| schema.key.contains(&c) || schema.date_slot(c).is_some())
            .map(|c| schema.columns[c].clone())
            .filter(|name| self.partition.as_ref().is_none_or(|(p, _)| p != name))
            .collect();
        names.extend([LINEAGE_FILE, LINEAGE_LINE, LINEAGE_MODIFIED].map(String::from));
        names
    }

    /// The rows of `frame` (the file's rows from position `first` on) that are handed out:
    /// not deleted and, when only some are, among them (their positions pushed to
    /// `positions`).
    fn kept_rows(&mut self, frame: DataFrame, first: usize, positions: &mut Vec<u64>) -> Result<DataFrame> {
        if self.deleted.is_none() && self.only.is_none() {
            return Ok(frame);
        }
        let range = first as u64..(first + frame.height()) as u64;
        let keep: BooleanChunked = match &self.only {
            Some(only) => {
                let mut keep = vec![false; frame.height()];
                while let Some(&p) = only.get(self.only_next).filter(|p| range.contains(p)) {
                    keep[(p - range.start) as usize] = true;
                    positions.push(p);
                    self.only_next += 1;
                }
                keep.into_iter().collect()
            }
            None => range.map(|p| !self.is_deleted(p)).collect(),
        };
        Ok(frame.filter(&keep)?)
    }
}

/// A date stored in several objects (appended to), read one after another.
pub(super) struct StoredChain {
    parts: std::collections::VecDeque<Box<dyn StoredRows>>,
}

impl StoredChain {
    /// The stored rows of `parts`: none, the one part, or the parts one after another.
    pub(super) fn of(mut parts: Vec<Box<dyn StoredRows>>) -> Option<Box<dyn StoredRows>> {
        match parts.len() {
            0 => None,
            1 => parts.pop(),
            _ => Some(Box::new(StoredChain { parts: parts.into() })),
        }
    }
}

impl StoredRows for StoredChain {
    fn next_slice(&mut self, max_bytes: usize) -> Result<Option<StoredSlice>> {
        while let Some(part) = self.parts.front_mut() {
            if let Some(slice) = part.next_slice(max_bytes)? {
                return Ok(Some(slice));
            }
            self.parts.pop_front();
        }
        Ok(None)
    }

    fn has_more(&self) -> bool {
        self.parts.iter().any(|p| p.has_more())
    }

    fn split_by_keys(
        self: Box<Self>,
        hashes: &KeyHashes,
        mark: bool,
        room: &mut usize,
    ) -> Result<SplitByKeys> {
        let (mut untouched, mut holding, mut marked) = (Vec::new(), Vec::new(), Vec::new());
        for part in self.parts {
            match part.split_by_keys(hashes, mark, room)? {
                SplitByKeys::Known {
                    untouched: keys,
                    holding: rows,
                    marked: positions,
                } => {
                    untouched.extend(keys);
                    holding.extend(rows);
                    marked.extend(positions);
                }
                // A part that cannot tell is merged.
                SplitByKeys::Unknown(rows) => holding.push(rows),
            }
        }
        Ok(SplitByKeys::Known {
            untouched,
            holding: StoredChain::of(holding),
            marked,
        })
    }
}

/// Stored rows in columnar form, as the table holds them: every column of the table, in its
/// order and types. A date merged whole keeps its stored rows in this form — the merge reads
/// only their keys and lineage, and the winners are re-encoded straight from these columns —
/// instead of copying every field into rows and back.
pub struct StoredSlice {
    pub(super) columns: DataFrame,
    pub(super) schema: Arc<SchemaConfig>,
    pub(super) url: String,
    /// For rows of a file that stays (their rows holding new keys are marked deleted where
    /// they are): the file's key and each row's position in it. Such a slice holds only the
    /// key's columns, the date columns and the lineage — what the merge compares — since a
    /// stored row that loses is only marked, and one that wins stays where it is.
    pub(super) marked: Option<(String, Vec<u64>)>,
}

impl StoredSlice {
    /// The file and positions of a slice of rows to be marked deleted (see
    /// [`StoredSlice::marked`]); `None` for rows read whole.
    pub fn marked(&self) -> Option<(&str, &[u64])> {
        self.marked
            .as_ref()
            .map(|(key, positions)| (key.as_str(), positions.as_slice()))
    }

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::block::{FileInfo, FileTable};
    use crate::table::encode;

    /// A stored file of `rows` rows with ids 0, 1, …, over more than one row group.
    fn stored_file(rows: usize) -> (tempfile::TempPath, Arc<SchemaConfig>) {
        let schema = Arc::new(crate::test_fixtures::schema());
        let files = FileTable::new(Arc::from(vec![FileInfo {
            key: "f.gz".into(),
            modified_micros: 7,
        }]));
        let block = crate::test_fixtures::numbered_rows(0, rows);
        let bytes = encode(&block, &schema, &files).unwrap();
        let path = tempfile::NamedTempFile::new().unwrap().into_temp_path();
        std::fs::write(&path, &bytes).unwrap();
        (path, schema)
    }

    /// What a split hands the merge for the rows to mark: their frames and positions.
    fn marked_rows(mut rows: Box<dyn StoredRows>) -> (DataFrame, Vec<u64>) {
        let (mut frame, mut positions) = (None::<DataFrame>, Vec::new());
        while let Some(slice) = rows.next_slice(1 << 20).unwrap() {
            let (_, at) = slice.marked().expect("rows to mark say where they are");
            positions.extend_from_slice(at);
            frame = Some(match frame {
                None => slice.columns,
                Some(f) => f.vstack(&slice.columns).unwrap(),
            });
        }
        (frame.unwrap(), positions)
    }

    /// The rows to mark that the key check keeps decoded are the rows, columns and positions a
    /// second read would hand out, deleted rows left out; past its room, the key check keeps
    /// none and leaves the room as it was.
    #[test]
    fn rows_kept_by_the_key_check_equal_rows_read_again() {
        let rows = ROW_GROUP_ROWS + 1000;
        let (path, schema) = stored_file(rows);
        let all = ParquetReader::new(std::fs::File::open(&path).unwrap())
            .finish()
            .unwrap();
        let hashes = key_hashes(&all, &schema).unwrap();
        // Rows in both row groups hold new keys; one of them is deleted already.
        let wanted = [3usize, 70_000, ROW_GROUP_ROWS - 1, ROW_GROUP_ROWS, rows - 1];
        let new: KeyHashes = wanted.iter().map(|&r| hashes[r]).collect();
        let deleted = Arc::new(roaring::RoaringTreemap::from_iter([70_000u64]));
        let split = |room: &mut usize| {
            let copy = tempfile::NamedTempFile::new().unwrap().into_temp_path();
            std::fs::copy(&path, &copy).unwrap();
            let stored = StoredParquet::open(copy, schema.clone(), "t".into())
                .unwrap()
                .with_key("f.parquet".into())
                .without(Some(deleted.clone()));
            match Box::new(stored).split_by_keys(&new, true, room).unwrap() {
                SplitByKeys::Known {
                    untouched,
                    holding: Some(holding),
                    marked,
                } => {
                    assert!(untouched.is_empty());
                    (marked, marked_rows(holding))
                }
                _ => panic!("the file holds new keys"),
            }
        };
        let mut room = usize::MAX;
        let (kept_marked, kept) = split(&mut room);
        assert!(room < usize::MAX, "kept rows take room");
        let mut none = 0;
        let (read_marked, read) = split(&mut none);
        assert_eq!(none, 0);
        let expected: Vec<u64> = [3, ROW_GROUP_ROWS - 1, ROW_GROUP_ROWS, rows - 1]
            .map(|r| r as u64)
            .into();
        assert_eq!(kept_marked, vec![("f.parquet".to_string(), expected.clone())]);
        assert_eq!(read_marked, kept_marked);
        assert_eq!(kept.1, expected);
        assert_eq!(read.1, expected);
        assert!(kept.0.equals_missing(&read.0), "{:?}\n{:?}", kept.0, read.0);
        let ids: Vec<Option<&str>> = kept.0.column("id").unwrap().str().unwrap().iter().collect();
        let expected_ids: Vec<String> = expected.iter().map(|p| p.to_string()).collect();
        assert_eq!(
            ids,
            expected_ids.iter().map(|s| Some(s.as_str())).collect::<Vec<_>>()
        );
    }
}
