//! Rows held column-wise: a [`RowBlock`] keeps many rows in a handful of flat vectors (the
//! rows' text back to back, field ends, parsed dates, key hashes, lineage), so reading, routing,
//! spilling and merging never allocate per row.

use crate::config::SchemaConfig;

mod files;
mod keys;
mod spill_format;

pub use files::{FileInfo, FileTable};
pub use keys::{INLINE_KEY_BYTES, InlineKey, KeyColumns};

/// A row of a merge's input: (block index, row index).
pub type RowRef = (u32, u32);

/// A NULL date in [`RowBlock::dates`].
pub const NULL_DATE: i32 = i32::MIN;

/// Where a row came from; decides which of two duplicates is the latest (SPEC §2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lineage {
    /// Index into the run's file table (key and modified time).
    pub file: u32,
    /// 1-based line number in the (decompressed) file.
    pub line: u64,
    /// 0 for rows already in the table, 1 for rows of this run: on an exact tie (a changed file
    /// re-processed under `run.order = name`) the new version wins.
    pub generation: u8,
}

/// Where field `i` lies in a row's text, given where each field ends: from one byte after the
/// previous field's end (the delimiter) to its own end. An empty span is NULL.
pub fn field_span(ends: &[u32], i: usize) -> std::ops::Range<usize> {
    let start = if i == 0 { 0 } else { ends[i - 1] as usize + 1 };
    start..ends[i] as usize
}

/// Field `i` of a row's `text` (see [`field_span`]); `None` for NULL.
pub fn field_of<'t>(text: &'t [u8], ends: &[u32], i: usize) -> Option<&'t [u8]> {
    let span = field_span(ends, i);
    (!span.is_empty()).then(|| &text[span])
}

/// One row of a [`RowBlock`]: its text and where each field ends in it.
pub struct RowView<'b> {
    text: &'b str,
    ends: &'b [u32],
}

impl<'b> RowView<'b> {
    /// Field `i` as text; `None` for NULL (see [`RowBlock::field_str`]).
    pub fn field_str(&self, i: usize) -> Option<&'b str> {
        let span = field_span(self.ends, i);
        (!span.is_empty()).then(|| self.text.get(span)).flatten()
    }
}

/// Many rows of one schema. Row `r`'s text is `text[starts[r]..]`; its field `i` ends at
/// `ends[r * columns + i]` (relative to the row's start) and begins one byte after the previous
/// field's end (the delimiter, or any separator in rows rebuilt from the table). An empty field
/// is NULL. The text is a `String`: the line parser checks each line's UTF-8, rows rebuilt
/// from the table come from strings, and a spill file's text is checked once per block as it
/// is read back; a field is then a slice of it, never checked again.
#[derive(Debug, Clone, Default)]
pub struct RowBlock {
    columns: usize,
    date_slots: usize,
    text: String,
    starts: Vec<u64>,
    ends: Vec<u32>,
    dates: Vec<i32>,
    hashes: Vec<u64>,
    files: Vec<u32>,
    lines: Vec<u64>,
    generations: Vec<u8>,
}

impl RowBlock {
    pub fn new(columns: usize, date_slots: usize) -> Self {
        RowBlock {
            columns,
            date_slots,
            ..Default::default()
        }
    }

    /// An empty block of the same schema.
    pub fn empty_like(&self) -> Self {
        RowBlock::new(self.columns, self.date_slots)
    }

    pub fn columns(&self) -> usize {
        self.columns
    }

    pub fn date_slots(&self) -> usize {
        self.date_slots
    }

    pub fn len(&self) -> usize {
        self.starts.len()
    }

    pub fn is_empty(&self) -> bool {
        self.starts.is_empty()
    }

    /// Bytes held, capacity included: what the memory budget counts.
    pub fn heap_bytes(&self) -> usize {
        self.text.capacity()
            + self.starts.capacity() * 8
            + self.ends.capacity() * 4
            + self.dates.capacity() * 4
            + self.hashes.capacity() * 8
            + self.files.capacity() * 4
            + self.lines.capacity() * 8
            + self.generations.capacity()
    }

    /// Bytes of row data, capacity not included.
    pub fn data_bytes(&self) -> usize {
        self.text.len() + self.len() * (8 + 8 + 4 + 8 + 1) + self.ends.len() * 4 + self.dates.len() * 4
    }

    /// Bytes of the rows' text.
    pub fn text_bytes(&self) -> usize {
        self.text.len()
    }

    /// Makes room for `rows` more rows of `text` bytes in all, exactly.
    pub fn reserve_exact(&mut self, rows: usize, text: usize) {
        self.text.reserve_exact(text);
        self.starts.reserve_exact(rows);
        self.ends.reserve_exact(rows * self.columns);
        self.dates.reserve_exact(rows * self.date_slots);
        self.hashes.reserve_exact(rows);
        self.files.reserve_exact(rows);
        self.lines.reserve_exact(rows);
        self.generations.reserve_exact(rows);
    }

    /// Removes every row, keeping the memory for the next ones.
    pub fn clear(&mut self) {
        self.text.clear();
        self.starts.clear();
        self.ends.clear();
        self.dates.clear();
        self.hashes.clear();
        self.files.clear();
        self.lines.clear();
        self.generations.clear();
    }

    /// Gives back spare capacity (a block kept for later holds only what it uses).
    pub fn shrink_to_fit(&mut self) {
        self.text.shrink_to_fit();
        self.starts.shrink_to_fit();
        self.ends.shrink_to_fit();
        self.dates.shrink_to_fit();
        self.hashes.shrink_to_fit();
        self.files.shrink_to_fit();
        self.lines.shrink_to_fit();
        self.generations.shrink_to_fit();
    }

    /// Adds a row. `ends` has one entry per column (relative to `text`), `dates` one per date
    /// slot.
    pub fn push(&mut self, text: &str, ends: &[u32], dates: &[i32], hash: u64, lineage: Lineage) {
        debug_assert_eq!(ends.len(), self.columns);
        debug_assert_eq!(dates.len(), self.date_slots);
        self.starts.push(self.text.len() as u64);
        self.text.push_str(text);
        self.ends.extend_from_slice(ends);
        self.dates.extend_from_slice(dates);
        self.hashes.push(hash);
        self.files.push(lineage.file);
        self.lines.push(lineage.line);
        self.generations.push(lineage.generation);
    }

    /// Copies row `r` of `other` (same schema) to the end of this block.
    pub fn push_from(&mut self, other: &RowBlock, r: usize) {
        let start = other.starts[r] as usize;
        let ends = &other.ends[r * other.columns..(r + 1) * other.columns];
        let end = start + ends.last().copied().unwrap_or(0) as usize;
        self.push(
            &other.text[start..end],
            ends,
            &other.dates[r * other.date_slots..(r + 1) * other.date_slots],
            other.hashes[r],
            other.lineage(r),
        );
    }

    /// Length of row `r`'s text: where its last field ends.
    fn text_len(&self, r: usize) -> usize {
        self.ends[r * self.columns..(r + 1) * self.columns]
            .last()
            .copied()
            .unwrap_or(0) as usize
    }

    /// Bytes row `r` takes in a block (its text, field ends, dates, hash and lineage).
    pub fn row_bytes(&self, r: usize) -> usize {
        self.text_len(r) + self.columns * 4 + self.date_slots * 4 + (8 + 8 + 4 + 8 + 1)
    }

    /// A new block of rows `rows` of this one, in that order, allocated once at its exact
    /// size (growing vectors row by row would copy every byte again on each doubling).
    pub fn gather(&self, rows: &[u32]) -> RowBlock {
        let mut out = self.empty_like();
        let text = rows.iter().map(|&r| self.text_len(r as usize)).sum();
        out.reserve_exact(rows.len(), text);
        for &r in rows {
            out.push_from(self, r as usize);
        }
        out
    }

    /// The bytes of field `i` of row `r`; `None` for NULL (an empty field).
    pub fn field(&self, r: usize, i: usize) -> Option<&[u8]> {
        field_of(
            &self.text.as_bytes()[self.starts[r] as usize..],
            &self.ends[r * self.columns..],
            i,
        )
    }

    /// Field `i` of row `r` as text.
    pub fn field_str(&self, r: usize, i: usize) -> Option<&str> {
        let span = field_span(&self.ends[r * self.columns..], i);
        let start = self.starts[r] as usize;
        // Fields split on an ASCII delimiter, so they start and end on character boundaries;
        // `get` would give NULL rather than a crash if one did not.
        (!span.is_empty())
            .then(|| self.text.get(start + span.start..start + span.end))
            .flatten()
    }

    /// Row `r`'s text and field ends, to read several of its fields.
    pub fn row(&self, r: usize) -> RowView<'_> {
        let start = self.starts[r] as usize;
        // Rows end on a character boundary (see `field_str`); `get` keeps a crash impossible.
        RowView {
            text: self.text.get(start..start + self.text_len(r)).unwrap_or_default(),
            ends: &self.ends[r * self.columns..(r + 1) * self.columns],
        }
    }

    /// The value of date slot `slot` of row `r` ([`NULL_DATE`] for NULL).
    pub fn date(&self, r: usize, slot: usize) -> i32 {
        self.dates[r * self.date_slots + slot]
    }

    pub fn hash(&self, r: usize) -> u64 {
        self.hashes[r]
    }

    pub fn lineage(&self, r: usize) -> Lineage {
        Lineage {
            file: self.files[r],
            line: self.lines[r],
            generation: self.generations[r],
        }
    }

    pub fn file(&self, r: usize) -> u32 {
        self.files[r]
    }

    pub fn line(&self, r: usize) -> u64 {
        self.lines[r]
    }

    pub fn generation(&self, r: usize) -> u8 {
        self.generations[r]
    }

    /// Re-points every row's file id through `map` (stored rows name files of their own).
    pub fn remap_files(&mut self, map: &[u32]) {
        for f in &mut self.files {
            *f = map[*f as usize];
        }
    }
}

/// Builds rows from field values (`None` = NULL): rows read back from the table, and tests.
pub struct RowBuilder {
    keys: KeyColumns,
    text: String,
    ends: Vec<u32>,
}

impl RowBuilder {
    pub fn new(schema: &SchemaConfig) -> Self {
        RowBuilder {
            keys: KeyColumns::new(schema),
            text: String::new(),
            ends: Vec::new(),
        }
    }

    /// Adds one row of `values` (one per column; date columns' text is not used) and `dates`
    /// (one per date slot, [`NULL_DATE`] for NULL) to `block`.
    pub fn push(&mut self, block: &mut RowBlock, values: &[Option<&str>], dates: &[i32], lineage: Lineage) {
        self.text.clear();
        self.ends.clear();
        for (i, v) in values.iter().enumerate() {
            if i > 0 {
                self.text.push('\u{1f}');
            }
            self.text.push_str(v.unwrap_or(""));
            self.ends.push(self.text.len() as u32);
        }
        let (text, ends) = (&self.text, &self.ends);
        let hash = self
            .keys
            .hash(|i| field_of(text.as_bytes(), ends, i), |slot| dates[slot]);
        block.push(text, ends, dates, hash, lineage);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Gathering rows copies exactly those rows, in the order asked for.
    #[test]
    fn gathered_rows_are_the_rows_asked_for() {
        let mut b = RowBlock::new(1, 0);
        for i in 0..10u64 {
            let text = format!("r{i}");
            let lineage = Lineage {
                file: 0,
                line: i,
                generation: 1,
            };
            b.push(&text, &[text.len() as u32], &[], i, lineage);
        }
        let g = b.gather(&[7, 2, 2, 9]);
        let got: Vec<_> = (0..g.len()).map(|r| g.field_str(r, 0).unwrap()).collect();
        assert_eq!(got, ["r7", "r2", "r2", "r9"]);
        assert_eq!(g.heap_bytes(), g.data_bytes(), "allocated at its exact size");
    }

    #[test]
    fn copied_rows_keep_their_fields() {
        let lineage = |line| Lineage {
            file: 0,
            line,
            generation: 1,
        };
        let mut a = RowBlock::new(2, 0);
        a.push("x|yy", &[1, 4], &[], 1, lineage(1));
        let mut b = RowBlock::new(2, 0);
        b.push("p|", &[1, 2], &[], 2, lineage(2));
        b.push_from(&a, 0);
        let fields: Vec<_> = (0..b.len())
            .map(|r| (b.field_str(r, 0), b.field_str(r, 1)))
            .collect();
        assert_eq!(fields, vec![(Some("p"), None), (Some("x"), Some("yy"))]);
        assert_eq!(b.lineage(1), lineage(1));
        assert_eq!(b.hash(1), 1);
    }
}
