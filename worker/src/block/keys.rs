//! A row's key: which columns make it, its hash, and how two keys compare.

use std::hash::{BuildHasher, Hasher};

use super::RowBlock;
use crate::config::SchemaConfig;

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
        let mut h = KeyColumns::hasher();
        for part in &self.parts {
            match *part {
                KeyPart::Text(c) => KeyColumns::write_text(&mut h, field(c)),
                KeyPart::Date(slot) => KeyColumns::write_date(&mut h, date(slot)),
            }
        }
        h.finish()
    }

    /// The key's parts in hashing order: a text column's index or a date column's slot, for
    /// hashing many keys a column at a time (one [`KeyColumns::hasher`] per row, each fed
    /// its parts in this order, finishes to [`KeyColumns::hash`]).
    pub fn parts(&self) -> impl Iterator<Item = Result<usize, usize>> + '_ {
        self.parts.iter().map(|part| match *part {
            KeyPart::Text(c) => Ok(c),
            KeyPart::Date(slot) => Err(slot),
        })
    }

    /// A key's hasher before its first part.
    pub fn hasher() -> foldhash::fast::FoldHasher<'static> {
        foldhash::fast::FixedState::with_seed(0x1a4e_10ad).build_hasher()
    }

    /// Feeds a text part (`None`: NULL) to a key's hasher.
    pub fn write_text(h: &mut foldhash::fast::FoldHasher, value: Option<&[u8]>) {
        match value {
            Some(v) => {
                h.write_u32(v.len() as u32);
                h.write(v);
            }
            None => h.write_u32(u32::MAX),
        }
    }

    /// Feeds a date part (days; [`super::NULL_DATE`] for NULL) to a key's hasher.
    pub fn write_date(h: &mut foldhash::fast::FoldHasher, days: i32) {
        h.write_u32(days as u32);
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
