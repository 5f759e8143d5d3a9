//! The spill format of a [`RowBlock`]: a header of counts, then each of its vectors' raw
//! little-endian bytes, so reading a block back is a few large copies, no parsing.

use std::io::{Read, Write};

use super::RowBlock;

impl RowBlock {
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
        bytes.resize(encoded_len(columns, date_slots, rows, text_len), 0);
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

/// Bytes of one block in the spill format.
fn encoded_len(columns: usize, date_slots: usize, rows: usize, text: usize) -> usize {
    HEADER_BYTES + text + rows * (8 + columns * 4 + date_slots * 4 + 8 + 4 + 8 + 1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::block::{Lineage, NULL_DATE};

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
}
