//! Rows held column-wise: a [`RowBlock`] keeps many rows in a handful of flat vectors (the
//! rows' text back to back, field ends, parsed dates, key hashes, lineage), so reading, routing,
//! spilling and merging never allocate per row.

use std::hash::{BuildHasher, Hasher};
use std::io::{Read, Write};

use crate::config::SchemaConfig;

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

/// Bytes of a key kept inline in the merge's hash table (see [`KeyColumns::inline`]).
pub const INLINE_KEY_BYTES: usize = 24;
pub type InlineKey = [u8; INLINE_KEY_BYTES];

/// The columns that make a row's key, resolved once per schema: text columns by index, date
/// columns by their slot among the row's parsed dates.
#[derive(Debug, Clone)]
pub struct KeyColumns {
    parts: Vec<KeyPart>,
}

#[derive(Debug, Clone, Copy)]
enum KeyPart {
    Text(usize),
    Date(usize),
}

impl KeyColumns {
    pub fn new(schema: &SchemaConfig) -> Self {
        KeyColumns {
            parts: schema
                .key
                .iter()
                .map(|&c| match schema.date_slot(c) {
                    Some(slot) => KeyPart::Date(slot),
                    None => KeyPart::Text(c),
                })
                .collect(),
        }
    }

    /// The key's hash: fixed-seed (a run's spill files and sub-partitions agree on it, and
    /// output is the same from run to run) and fast on short strings. NULL and empty differ
    /// from every value because each part is length-prefixed.
    pub fn hash<'a>(&self, field: impl Fn(usize) -> Option<&'a [u8]>, date: impl Fn(usize) -> i32) -> u64 {
        let mut h = foldhash::fast::FixedState::with_seed(0x1a4e_10ad).build_hasher();
        for part in &self.parts {
            match *part {
                KeyPart::Text(c) => match field(c) {
                    Some(v) => {
                        h.write_u32(v.len() as u32);
                        h.write(v);
                    }
                    None => h.write_u32(u32::MAX),
                },
                KeyPart::Date(slot) => h.write_u32(date(slot) as u32),
            }
        }
        h.finish()
    }

    /// Row `r`'s key packed into a fixed array when it fits (each text part length-prefixed,
    /// NULL as 0xFF, dates as 4 bytes): two packed keys are equal exactly when the keys are.
    pub fn inline(&self, block: &RowBlock, r: usize) -> Option<InlineKey> {
        let mut out = [0u8; INLINE_KEY_BYTES];
        let mut at = 0;
        for part in &self.parts {
            match *part {
                KeyPart::Text(c) => match block.field(r, c) {
                    Some(v) => {
                        let end = at + 1 + v.len();
                        if end > INLINE_KEY_BYTES {
                            return None;
                        }
                        out[at] = v.len() as u8;
                        out[at + 1..end].copy_from_slice(v);
                        at = end;
                    }
                    None => {
                        if at == INLINE_KEY_BYTES {
                            return None;
                        }
                        out[at] = 0xff;
                        at += 1;
                    }
                },
                KeyPart::Date(slot) => {
                    if at + 4 > INLINE_KEY_BYTES {
                        return None;
                    }
                    out[at..at + 4].copy_from_slice(&block.date(r, slot).to_le_bytes());
                    at += 4;
                }
            }
        }
        Some(out)
    }

    /// Whether row `a` of block `x` and row `b` of block `y` have equal keys (NULL = NULL).
    pub fn equal(&self, x: &RowBlock, a: usize, y: &RowBlock, b: usize) -> bool {
        self.parts.iter().all(|part| match *part {
            KeyPart::Text(c) => x.field(a, c) == y.field(b, c),
            KeyPart::Date(slot) => x.date(a, slot) == y.date(b, slot),
        })
    }
}

/// A new block of the rows `at` (block, row) of `blocks`, in that order, allocated once at
/// its exact size; `blocks` share one schema and `at` is not empty.
pub fn gather_from(blocks: &[RowBlock], at: &[(u32, u32)]) -> RowBlock {
    let first = &blocks[at[0].0 as usize];
    gather_rows(first, at.iter().map(|&(b, r)| (&blocks[b as usize], r as usize)))
}

fn gather_rows<'a>(like: &RowBlock, rows: impl Iterator<Item = (&'a RowBlock, usize)> + Clone) -> RowBlock {
    let (mut n, mut text) = (0, 0);
    for (block, r) in rows.clone() {
        n += 1;
        text += block.text_len(r);
    }
    let mut out = RowBlock {
        columns: like.columns,
        date_slots: like.date_slots,
        text: String::with_capacity(text),
        starts: Vec::with_capacity(n),
        ends: Vec::with_capacity(n * like.columns),
        dates: Vec::with_capacity(n * like.date_slots),
        hashes: Vec::with_capacity(n),
        files: Vec::with_capacity(n),
        lines: Vec::with_capacity(n),
        generations: Vec::with_capacity(n),
    };
    for (block, r) in rows {
        out.push_from(block, r);
    }
    out
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
        gather_rows(self, rows.iter().map(|&r| (self, r as usize)))
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

    /// Writes the block in the spill format: a header of counts, then each vector's raw
    /// little-endian bytes. Reading it back is a few large reads, no parsing.
    pub fn write_to(&self, out: &mut impl Write) -> std::io::Result<u64> {
        let header = [
            self.columns as u64,
            self.date_slots as u64,
            self.len() as u64,
            self.text.len() as u64,
        ];
        let mut written = 0u64;
        let mut put = |bytes: &[u8]| -> std::io::Result<()> {
            written += bytes.len() as u64;
            out.write_all(bytes)
        };
        put(&words_to_bytes(&header))?;
        put(self.text.as_bytes())?;
        put(&words_to_bytes(&self.starts))?;
        put(&u32s_to_bytes(&self.ends))?;
        put(&u32s_to_bytes(
            &self.dates.iter().map(|d| *d as u32).collect::<Vec<_>>(),
        ))?;
        put(&words_to_bytes(&self.hashes))?;
        put(&u32s_to_bytes(&self.files))?;
        put(&words_to_bytes(&self.lines))?;
        put(&self.generations)?;
        Ok(written)
    }

    /// Reads a block written by [`RowBlock::write_to`]; `Ok(None)` at the end of the input.
    /// The header says how long the block is; the block is then decoded by
    /// [`RowBlock::append_encoded`], the one reader of the format.
    pub fn read_from(input: &mut impl Read) -> std::io::Result<Option<RowBlock>> {
        let mut bytes = vec![0u8; HEADER_BYTES];
        match input.read_exact(&mut bytes) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
            Err(e) => return Err(e),
        }
        let header: Vec<u64> = u64s(&bytes).collect();
        let [columns, date_slots, rows, text_len] = [0, 1, 2, 3].map(|i| header[i] as usize);
        let body = text_len + rows * (8 + columns * 4 + date_slots * 4 + 8 + 4 + 8 + 1);
        bytes.resize(HEADER_BYTES + body, 0);
        input.read_exact(&mut bytes[HEADER_BYTES..])?;
        let mut block = RowBlock::default();
        block.append_encoded(&bytes)?;
        Ok(Some(block))
    }

    /// Appends the rows of one block in the spill format ([`RowBlock::write_to`]) held whole
    /// in `bytes`: a unit read back from disk becomes one block, not one per piece. Returns
    /// the bytes the piece took.
    pub fn append_encoded(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        let damaged = |what: &str| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("a spill file is damaged: {what}"),
            )
        };
        let header = bytes
            .get(..HEADER_BYTES)
            .ok_or_else(|| damaged("a block is cut short"))?;
        let header: Vec<u64> = u64s(header).collect();
        let [columns, date_slots, rows, text_len] = [0, 1, 2, 3].map(|i| header[i] as usize);
        if self.is_empty() && self.text.is_empty() {
            (self.columns, self.date_slots) = (columns, date_slots);
        } else if (columns, date_slots) != (self.columns, self.date_slots) {
            return Err(damaged("blocks of different schemas"));
        }
        let mut at = HEADER_BYTES;
        let mut take = |len: usize| -> std::io::Result<&[u8]> {
            let piece = bytes
                .get(at..at + len)
                .ok_or_else(|| damaged("a block is cut short"))?;
            at += len;
            Ok(piece)
        };
        // Checked once per block, so every field read from it is text.
        let text = std::str::from_utf8(take(text_len)?).map_err(|_| damaged("rows are not UTF-8"))?;
        let offset = self.text.len() as u64;
        self.text.push_str(text);
        self.starts
            .extend(u64s(take(rows * 8)?).map(|start| offset + start));
        self.ends.extend(u32s(take(rows * columns * 4)?));
        self.dates
            .extend(u32s(take(rows * date_slots * 4)?).map(|d| d as i32));
        self.hashes.extend(u64s(take(rows * 8)?));
        self.files.extend(u32s(take(rows * 4)?));
        self.lines.extend(u64s(take(rows * 8)?));
        self.generations.extend_from_slice(take(rows)?);
        Ok(at)
    }
}

fn u64s(bytes: &[u8]) -> impl Iterator<Item = u64> + '_ {
    bytes
        .chunks_exact(8)
        .map(|c| u64::from_le_bytes(c.try_into().expect("8 bytes")))
}

fn u32s(bytes: &[u8]) -> impl Iterator<Item = u32> + '_ {
    bytes
        .chunks_exact(4)
        .map(|c| u32::from_le_bytes(c.try_into().expect("4 bytes")))
}

/// Bytes of a spilled block's header: columns, date slots, rows and text length.
const HEADER_BYTES: usize = 32;

fn words_to_bytes(words: &[u64]) -> Vec<u8> {
    words.iter().flat_map(|w| w.to_le_bytes()).collect()
}

fn u32s_to_bytes(words: &[u32]) -> Vec<u8> {
    words.iter().flat_map(|w| w.to_le_bytes()).collect()
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

    /// Blocks in the spill format, read back into one block, hold the same rows; a damaged
    /// piece is an error, not a crash.
    #[test]
    fn spilled_blocks_are_read_back_into_one() {
        let block = |first: u64| {
            let mut b = RowBlock::new(2, 1);
            for i in first..first + 3 {
                let text = format!("k{i}|é{i}");
                let ends = [text.find('|').unwrap() as u32, text.len() as u32];
                let lineage = Lineage {
                    file: i as u32,
                    line: i + 10,
                    generation: (i % 2) as u8,
                };
                b.push(&text, &ends, &[i as i32], i * 7, lineage);
            }
            b
        };
        let mut bytes = Vec::new();
        let (a, b) = (block(0), block(3));
        a.write_to(&mut bytes).unwrap();
        b.write_to(&mut bytes).unwrap();
        let mut one = RowBlock::default();
        let mut at = 0;
        while at < bytes.len() {
            at += one.append_encoded(&bytes[at..]).unwrap();
        }
        assert_eq!(one.len(), 6);
        for r in 0..6 {
            let (src, sr) = if r < 3 { (&a, r) } else { (&b, r - 3) };
            assert_eq!(one.field_str(r, 0), src.field_str(sr, 0));
            assert_eq!(one.field_str(r, 1), src.field_str(sr, 1));
            assert_eq!(one.row(r).field_str(1), src.field_str(sr, 1));
            assert_eq!(one.date(r, 0), src.date(sr, 0));
            assert_eq!(one.hash(r), src.hash(sr));
            assert_eq!(one.lineage(r), src.lineage(sr));
        }
        let mut again = RowBlock::default();
        assert!(again.append_encoded(&bytes[..bytes.len() / 4]).is_err());
        assert!(again.append_encoded(&bytes[..10]).is_err());
    }

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
        let other = b.gather(&[0]);
        let g = gather_from(&[b, other], &[(1, 0), (0, 5)]);
        let got: Vec<_> = (0..g.len()).map(|r| g.field_str(r, 0).unwrap()).collect();
        assert_eq!(got, ["r0", "r5"]);
    }

    #[test]
    fn spill_format_round_trips() {
        let mut block = RowBlock::new(3, 1);
        block.push(
            "a||c",
            &[1, 2, 4],
            &[5],
            42,
            Lineage {
                file: 1,
                line: 7,
                generation: 1,
            },
        );
        block.push(
            "|é|",
            &[0, 3, 4],
            &[NULL_DATE],
            43,
            Lineage {
                file: 2,
                line: 9,
                generation: 0,
            },
        );
        let mut bytes = Vec::new();
        let written = block.write_to(&mut bytes).unwrap();
        block.write_to(&mut bytes).unwrap();
        assert_eq!(written as usize, bytes.len() / 2);
        let mut input = &bytes[..];
        for _ in 0..2 {
            let back = RowBlock::read_from(&mut input).unwrap().unwrap();
            assert_eq!(back.len(), 2);
            assert_eq!(back.field(0, 0), Some(&b"a"[..]));
            assert_eq!(back.field(0, 1), None);
            assert_eq!(back.field_str(1, 1), Some("é"));
            assert_eq!(back.field(1, 2), None);
            assert_eq!(back.date(1, 0), NULL_DATE);
            assert_eq!(back.hash(1), 43);
            assert_eq!(
                back.lineage(1),
                Lineage {
                    file: 2,
                    line: 9,
                    generation: 0
                }
            );
        }
        assert!(RowBlock::read_from(&mut input).unwrap().is_none());

        // A damaged file (the `é` cut in half) is an error, never text that is not UTF-8.
        let at = bytes.windows(2).position(|w| w == "é".as_bytes()).unwrap();
        bytes[at] = b'x';
        let error = RowBlock::read_from(&mut &bytes[..]).unwrap_err();
        assert_eq!(error.kind(), std::io::ErrorKind::InvalidData);
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
