//! Merge the rows of one date: keep the latest row per key (SPEC §2), and count what happened.

pub mod date_merge;
pub mod spill;

use std::cmp::Ordering;

use hashbrown::hash_table::{Entry, HashTable};

use crate::block::{FileInfo, FileTable, InlineKey, KeyColumns, RowBlock, RowRef};
use crate::config::Order;

/// Counts of one merge, per SPEC §6.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct MergeCounts {
    /// New rows whose key was not in the table.
    pub inserted: u64,
    /// New rows that replaced a row already in the table.
    pub updated: u64,
    /// New rows that lost to a later row (new or already in the table).
    pub superseded: u64,
}

impl std::ops::AddAssign for MergeCounts {
    fn add_assign(&mut self, o: Self) {
        self.inserted += o.inserted;
        self.updated += o.updated;
        self.superseded += o.superseded;
    }
}

pub struct Merger<'a> {
    pub keys: &'a KeyColumns,
    pub order: Order,
    pub files: &'a FileTable,
}

/// The current winner of one key. It carries what the probes of later rows compare — the
/// key (when short enough to sit inline), its hash and the order position — so a probe touches
/// the table slot only, not the winner's row in a block far away in memory. Fields are laid
/// out flat: 56 bytes a key.
struct Winner {
    hash: u64,
    line: u64,
    /// The row's lineage file id (its order rank is looked up from it, in a small table).
    file: u32,
    block: u32,
    row: u32,
    key: InlineKey,
    key_inline: bool,
    generation: u8,
    /// A row already in the table had this key.
    had_stored: bool,
}

impl Winner {
    fn position(&self, rank: &[u32]) -> Position {
        (rank[self.file as usize], self.line, self.generation)
    }

    fn at(&self) -> RowRef {
        (self.block, self.row)
    }
}

/// The hash a key table files a row under. Rows of one spilled sub-partition share the top
/// bits of their key hash, and the table reads its tag bits from the top: multiplying by an
/// odd constant carries every bit of the key hash into the top ones.
fn table_hash(key_hash: u64) -> u64 {
    key_hash.wrapping_mul(0x9e37_79b9_7f4a_7c15)
}

/// Keys expected per partition of a key table at most. Its table has room for 7,168 keys (8,192
/// slots of 56 bytes, ≈ 460 KB: it stays in a core's cache), so chance variations in how many
/// keys a partition gets do not make it grow.
const PARTITION_KEYS: usize = 6000;

/// Keys a partition's table is made for.
const PARTITION_CAPACITY: usize = 7168;

/// Rows cut into partitions at a time (≈ 14 MB of contenders) before they go through the
/// partitions' tables: each table then takes many rows in a row while it is in cache.
const PASS_ROWS: usize = 256 * 1024;

/// Partitions of a key table at most: past 24 M keys, the tables grow beyond the cache.
const MAX_PARTITIONS: usize = 4096;

/// The partition (of `parts`) of a row, from bits of its table hash that neither a table's
/// slot (low bits) nor its tag (top bits) uses.
fn partition(table_hash: u64, parts: usize) -> usize {
    ((((table_hash >> 32) & 0xffff_ffff) * parts as u64) >> 32) as usize
}

/// The tables that keep the latest row per key, and the counts of what they saw. Keys are
/// spread over partitions by hash, each its own small table, and rows are offered a pass at
/// a time, sorted by partition first: one table of every key of a date is many times the
/// cache, and nearly every probe into it would be a trip to memory.
struct KeyTable<'a> {
    merger: &'a Merger<'a>,
    blocks: &'a [RowBlock],
    /// Rank of each file id under `run.order`.
    order_rank: Vec<u32>,
    tables: Vec<HashTable<Winner>>,
    counts: MergeCounts,
}

impl<'a> KeyTable<'a> {
    /// Room for about `keys` distinct keys.
    fn new(merger: &'a Merger<'a>, blocks: &'a [RowBlock], keys: usize) -> Self {
        let order_rank = merger.ranks(|a, b| match merger.order {
            Order::Arrival => a
                .modified_micros
                .cmp(&b.modified_micros)
                .then_with(|| a.key.cmp(&b.key)),
            Order::Name => a.key.cmp(&b.key),
        });
        let parts = keys.div_ceil(PARTITION_KEYS).clamp(1, MAX_PARTITIONS);
        let per_table = match parts {
            1 => keys,
            _ => PARTITION_CAPACITY.max(keys.div_ceil(parts) * 9 / 8),
        };
        KeyTable {
            merger,
            blocks,
            order_rank,
            tables: (0..parts).map(|_| HashTable::with_capacity(per_table)).collect(),
            counts: MergeCounts::default(),
        }
    }

    /// Every row of the blocks, a pass at a time.
    fn offer_all(&mut self) {
        let blocks = self.blocks;
        let parts = self.tables.len();
        if parts == 1 {
            for (b, block) in blocks.iter().enumerate() {
                for r in 0..block.len() {
                    self.offer(0, self.candidate(b, r));
                }
            }
            return;
        }
        let total: usize = blocks.iter().map(RowBlock::len).sum();
        let pass_rows = total.min(PASS_ROWS);
        let mut pass: Vec<Vec<Winner>> = (0..parts)
            .map(|_| Vec::with_capacity(pass_rows / parts + pass_rows / parts / 8 + 16))
            .collect();
        let mut rows = 0;
        let rows_of = blocks
            .iter()
            .enumerate()
            .flat_map(|(b, block)| (0..block.len()).map(move |r| (b, r)));
        for (b, r) in rows_of {
            let c = self.candidate(b, r);
            pass[partition(c.hash, parts)].push(c);
            rows += 1;
            if rows == PASS_ROWS {
                self.offer_pass(&mut pass);
                rows = 0;
            }
        }
        self.offer_pass(&mut pass);
    }

    /// A pass's contenders, partition by partition.
    fn offer_pass(&mut self, pass: &mut [Vec<Winner>]) {
        for (p, part) in pass.iter_mut().enumerate() {
            for c in part.drain(..) {
                self.offer(p, c);
            }
        }
    }

    /// Row `r` of block `b` as a contender for its key.
    fn candidate(&self, b: usize, r: usize) -> Winner {
        let block = &self.blocks[b];
        let key = self.merger.keys.inline(block, r);
        let generation = block.generation(r);
        Winner {
            hash: table_hash(block.hash(r)),
            line: block.line(r),
            file: block.file(r),
            block: b as u32,
            row: r as u32,
            key: key.unwrap_or_default(),
            key_inline: key.is_some(),
            generation,
            had_stored: generation == 0,
        }
    }

    /// Puts a contender against the current winner of its key, in partition `p`.
    fn offer(&mut self, p: usize, c: Winner) {
        let (blocks, keys) = (self.blocks, self.merger.keys);
        let entry = self.tables[p].entry(
            c.hash,
            |w| match (w.key_inline, c.key_inline) {
                (true, true) => w.key == c.key,
                (false, false) => keys.equal(
                    &blocks[w.block as usize],
                    w.row as usize,
                    &blocks[c.block as usize],
                    c.row as usize,
                ),
                // Whether a key fits inline depends on the key alone.
                _ => false,
            },
            |w| w.hash,
        );
        match entry {
            Entry::Vacant(slot) => {
                slot.insert(c);
            }
            Entry::Occupied(mut slot) => {
                let winner = slot.get_mut();
                let later = c.position(&self.order_rank) > winner.position(&self.order_rank);
                let loser_generation = if later {
                    let loser = winner.generation;
                    let had_stored = winner.had_stored | c.had_stored;
                    *winner = Winner { had_stored, ..c };
                    loser
                } else {
                    winner.had_stored |= c.had_stored;
                    c.generation
                };
                if loser_generation > 0 {
                    self.counts.superseded += 1;
                }
            }
        }
    }

    /// Every winner through `keep`, with the counts.
    fn drain<T>(mut self, keep: impl Fn(&Winner) -> T) -> (Vec<T>, MergeCounts) {
        let mut out = Vec::with_capacity(self.tables.iter().map(HashTable::len).sum());
        for table in std::mem::take(&mut self.tables) {
            for winner in table {
                if winner.generation > 0 {
                    if winner.had_stored {
                        self.counts.updated += 1;
                    } else {
                        self.counts.inserted += 1;
                    }
                }
                out.push(keep(&winner));
            }
        }
        (out, self.counts)
    }
}

/// A row's place in SPEC §2's order: (file rank under `run.order`, line, generation).
type Position = (u32, u64, u8);

impl Merger<'_> {
    /// Rank of every file id under `key` (ids are dense: shared first, then local). Files that
    /// `key` finds equal get the same rank: a stored row's file and this run's file of the same
    /// name (and, by arrival, the same modified time) are one position in the order, and the
    /// tie goes on to the line number and then the generation, exactly as SPEC §2 orders them.
    fn ranks(&self, key: impl Fn(&FileInfo, &FileInfo) -> Ordering) -> Vec<u32> {
        let count = self.files.len();
        let mut ids: Vec<u32> = (0..count as u32).collect();
        ids.sort_by(|a, b| key(self.files.get(*a), self.files.get(*b)));
        let mut rank = vec![0u32; count];
        let mut current = 0u32;
        for (position, pair) in ids.iter().enumerate() {
            if position > 0
                && key(self.files.get(ids[position - 1]), self.files.get(*pair)) != Ordering::Equal
            {
                current += 1;
            }
            rank[*pair as usize] = current;
        }
        rank
    }

    /// The latest row of every key among `blocks`, in no particular order, each passed
    /// through `keep` (so the caller holds only what it needs, without going back to the
    /// rows), with the counts. The tables are sized for about `keys` distinct keys.
    fn winners<T>(
        &self,
        blocks: &[RowBlock],
        keys: usize,
        keep: impl Fn(&Winner) -> T,
    ) -> (Vec<T>, MergeCounts) {
        let mut table = KeyTable::new(self, blocks, keys);
        table.offer_all();
        table.drain(keep)
    }

    /// Merges rows already in the table (generation 0) with new rows (generation 1), spread
    /// over `blocks`: one pass through hash tables keyed by the precomputed key hash keeps the
    /// latest row per key. Returns the kept rows in lineage order (file key, line), which makes
    /// the written file deterministic, and the counts.
    pub fn merge(&self, blocks: &[RowBlock]) -> (Vec<RowRef>, MergeCounts) {
        let name_rank = self.ranks(|a, b| a.key.cmp(&b.key).then(a.modified_micros.cmp(&b.modified_micros)));
        let rows = blocks.iter().map(RowBlock::len).sum();
        let (mut kept, counts) = self.winners(blocks, rows, |w| {
            (name_rank[w.file as usize], w.line, w.generation, w.at())
        });
        kept.sort_unstable();
        (kept.into_iter().map(|k| k.3).collect(), counts)
    }

    /// Like [`Merger::merge`] for new rows only, to shrink them before the final merge: the
    /// kept rows come in input order (cheapest to copy out), and only `superseded` counts —
    /// whether a kept row inserts or updates is for the final merge to say.
    /// `distinct_keys`: an estimate (see [`distinct_keys`]), to size the table without
    /// reserving a slot for every row.
    pub fn compact(&self, blocks: &[RowBlock], distinct_keys: usize) -> (Vec<RowRef>, u64) {
        let (mut kept, counts) = self.winners(blocks, distinct_keys + distinct_keys / 16, Winner::at);
        kept.sort_unstable();
        (kept, counts.superseded)
    }
}

/// Estimates how many distinct keys `blocks` hold, from their key hashes, with a HyperLogLog
/// sketch of 4096 one-byte registers (about 2 % error, a few milliseconds for millions of
/// rows): it tells compaction whether dropping duplicates would free memory before it builds a
/// hash table to find out.
pub fn distinct_keys(blocks: &[RowBlock]) -> usize {
    const BITS: u32 = 12;
    const REGISTERS: usize = 1 << BITS;
    let mut registers = [0u8; REGISTERS];
    for block in blocks {
        for r in 0..block.len() {
            // The key hash's low bits are well mixed; spread them once more so both the
            // register index and the rank see independent bits.
            let h = block.hash(r).wrapping_mul(0x9e37_79b9_7f4a_7c15).rotate_left(29);
            let register = (h >> (64 - BITS)) as usize;
            let rank = ((h << BITS) | (1 << (BITS - 1))).leading_zeros() as u8 + 1;
            registers[register] = registers[register].max(rank);
        }
    }
    let m = REGISTERS as f64;
    let sum: f64 = registers.iter().map(|&r| 2f64.powi(-i32::from(r))).sum();
    let raw = 0.7213 / (1.0 + 1.079 / m) * m * m / sum;
    let zeros = registers.iter().filter(|&&r| r == 0).count();
    let estimate = if raw <= 2.5 * m && zeros > 0 {
        // Few keys: linear counting is exact enough where the sketch is not.
        m * (m / zeros as f64).ln()
    } else {
        raw
    };
    estimate.round() as usize
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    use crate::block::{Lineage, RowBuilder};
    use crate::test_fixtures::schema;
    use std::collections::HashMap;

    fn row(id: Option<&str>, v: &str, file: u32, line: u64, generation: u8) -> RowBlock {
        let mut block = RowBlock::new(3, 1);
        RowBuilder::new(&schema()).push(
            &mut block,
            &[id, Some("x"), Some(v)],
            &[1],
            Lineage {
                file,
                line,
                generation,
            },
        );
        block
    }

    /// Merges, and gives the kept rows' `v` values in the order the merge returns them.
    fn run(merger: &Merger, blocks: Vec<RowBlock>) -> (Vec<String>, MergeCounts) {
        let (kept, counts) = merger.merge(&blocks);
        let values = kept
            .iter()
            .map(|&(b, r)| blocks[b as usize].field_str(r as usize, 2).unwrap().to_string())
            .collect();
        (values, counts)
    }

    fn files() -> FileTable {
        // b.gz arrived first, a.gz later: arrival and name order disagree.
        FileTable::new(Arc::from(vec![
            FileInfo {
                key: "a.gz".into(),
                modified_micros: 200,
            },
            FileInfo {
                key: "b.gz".into(),
                modified_micros: 100,
            },
        ]))
    }

    #[test]
    fn distinct_keys_are_estimated_within_a_few_percent() {
        let schema = schema();
        let mut builder = RowBuilder::new(&schema);
        for (distinct, copies) in [(50usize, 4usize), (3_000, 1), (200_000, 3)] {
            let mut block = RowBlock::new(3, 1);
            for copy in 0..copies {
                for k in 0..distinct {
                    let id = format!("C{k:07}");
                    let lineage = Lineage {
                        file: 0,
                        line: (copy * distinct + k) as u64 + 1,
                        generation: 1,
                    };
                    builder.push(&mut block, &[Some(&id), None, Some("v")], &[1], lineage);
                }
            }
            let estimate = distinct_keys(std::slice::from_ref(&block)) as f64;
            let error = (estimate - distinct as f64).abs() / distinct as f64;
            assert!(error < 0.05, "{distinct} keys × {copies}: estimated {estimate}");
        }
    }

    #[test]
    fn latest_by_arrival_or_by_name() {
        let schema = schema();
        let files = files();
        let rows = || {
            vec![
                row(Some("k"), "from-a", 0, 1, 1),
                row(Some("k"), "from-b", 1, 1, 1),
            ]
        };
        let arrival = Merger {
            keys: &KeyColumns::new(&schema),
            order: Order::Arrival,
            files: &files,
        };
        let (kept, counts) = run(&arrival, rows());
        assert_eq!(kept, vec!["from-a"]);
        assert_eq!(
            counts,
            MergeCounts {
                inserted: 1,
                updated: 0,
                superseded: 1
            }
        );
        let name = Merger {
            keys: &KeyColumns::new(&schema),
            order: Order::Name,
            files: &files,
        };
        assert_eq!(run(&name, rows()).0, vec!["from-b"]);
    }

    #[test]
    fn null_keys_are_equal_and_later_lines_win() {
        let schema = schema();
        let files = files();
        let m = Merger {
            keys: &KeyColumns::new(&schema),
            order: Order::Arrival,
            files: &files,
        };
        let (kept, counts) = run(
            &m,
            vec![
                row(None, "1", 0, 1, 1),
                row(None, "2", 0, 2, 1),
                row(Some("x"), "3", 0, 3, 1),
            ],
        );
        assert_eq!(kept, vec!["2", "3"]);
        assert_eq!(counts.superseded, 1);
    }

    /// Issue 7 (1): the stored row names its file through the table's lineage columns, so it
    /// gets a file id of its own; the re-processed version must still win the tie.
    #[test]
    fn a_changed_file_wins_ties_against_its_stored_version() {
        let schema = schema();
        for order in [Order::Name, Order::Arrival] {
            let mut files = files();
            // a.gz as stored: same key, same modified time (a `cp -p` re-delivery).
            let stored = files.intern("a.gz", 200);
            assert_ne!(stored, 0, "the stored file gets its own id");
            let m = Merger {
                keys: &KeyColumns::new(&schema),
                order,
                files: &files,
            };
            let (kept, counts) = run(
                &m,
                vec![
                    row(Some("k"), "old", stored, 1, 0),
                    row(Some("k"), "corrected", 0, 1, 1),
                    row(Some("j"), "old-later-line", stored, 5, 0),
                    row(Some("j"), "new-earlier-line", 0, 4, 1),
                ],
            );
            assert_eq!(
                kept,
                vec!["corrected", "old-later-line"],
                "{order:?}: the tuple (…, file, line) decides first, the version last"
            );
            assert_eq!(
                counts,
                MergeCounts {
                    inserted: 0,
                    updated: 1,
                    superseded: 1
                }
            );
        }
    }

    #[test]
    fn a_newer_modified_time_wins_by_arrival_whatever_the_line() {
        let schema = schema();
        let mut files = files();
        let stored = files.intern("a.gz", 100);
        let m = Merger {
            keys: &KeyColumns::new(&schema),
            order: Order::Arrival,
            files: &files,
        };
        let (kept, _) = run(
            &m,
            vec![
                row(Some("k"), "old", stored, 9, 0),
                row(Some("k"), "new", 0, 1, 1),
            ],
        );
        assert_eq!(kept, vec!["new"]);
    }

    #[test]
    fn stored_rows_count_updates_and_lose_exact_ties() {
        let schema = schema();
        let files = files();
        let m = Merger {
            keys: &KeyColumns::new(&schema),
            order: Order::Name,
            files: &files,
        };
        let (kept, counts) = run(
            &m,
            vec![
                row(Some("k"), "old", 0, 1, 0),
                row(Some("k"), "new", 0, 1, 1),
                row(Some("j"), "kept", 1, 1, 0),
                row(Some("j"), "older", 0, 9, 1),
            ],
        );
        assert_eq!(kept, vec!["new", "kept"]);
        assert_eq!(
            counts,
            MergeCounts {
                inserted: 0,
                updated: 1,
                superseded: 1
            }
        );
    }

    /// A merge large enough for many partitions and several passes (and compaction with a
    /// low estimate of its keys, so partition tables grow) keeps exactly the rows and counts
    /// a plain map of key → latest position gives. Keys of every length: some fit inline,
    /// some do not; some rows are stored (generation 0), most new.
    #[test]
    fn partitioned_tables_keep_what_a_plain_map_keeps() {
        let schema = schema();
        let keys = KeyColumns::new(&schema);
        let files = files();
        let merger = Merger {
            keys: &keys,
            order: Order::Name,
            files: &files,
        };
        let mut builder = RowBuilder::new(&schema);
        let mut blocks = vec![RowBlock::new(3, 1), RowBlock::new(3, 1)];
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let distinct = 150_000u64;
        for line in 1..=600_000u64 {
            let k = next() % distinct;
            let id = match k % 3 {
                0 => format!("{k}"),
                1 => format!("customer-{k}-with-a-name-too-long-to-sit-inline"),
                _ => format!("C{k:09}"),
            };
            let generation = u8::from(next() % 5 != 0);
            let lineage = Lineage {
                file: (next() % 2) as u32,
                line,
                generation,
            };
            let block = &mut blocks[(line % 2) as usize];
            builder.push(block, &[Some(&id), None, Some("v")], &[1], lineage);
        }
        // The reference: by name, a.gz (id 0) comes before b.gz (id 1); every new row that
        // is not its key's latest is superseded.
        // Key → (latest position, its row, whether a stored row had the key).
        type Latest = ((u32, u64, u8), RowRef, bool);
        let mut latest: HashMap<&[u8], Latest> = HashMap::new();
        for (b, block) in blocks.iter().enumerate() {
            for r in 0..block.len() {
                let position = (block.file(r), block.line(r), block.generation(r));
                let at = (b as u32, r as u32);
                let stored = block.generation(r) == 0;
                let entry = latest
                    .entry(block.field(r, 0).unwrap())
                    .or_insert((position, at, stored));
                entry.2 |= stored;
                if position > entry.0 {
                    (entry.0, entry.1) = (position, at);
                }
            }
        }
        let mut expected = MergeCounts::default();
        for (position, _, had_stored) in latest.values() {
            match (position.2 > 0, had_stored) {
                (true, true) => expected.updated += 1,
                (true, false) => expected.inserted += 1,
                _ => {}
            }
        }
        let new_rows: u64 = blocks
            .iter()
            .map(|b| (0..b.len()).filter(|&r| b.generation(r) > 0).count() as u64)
            .sum();
        expected.superseded = new_rows - expected.inserted - expected.updated;
        let mut want: Vec<RowRef> = latest.values().map(|v| v.1).collect();
        want.sort_unstable();

        let (kept, counts) = merger.merge(&blocks);
        assert_eq!(counts, expected);
        let mut got = kept.clone();
        got.sort_unstable();
        assert_eq!(got, want);
        // Kept rows come in lineage order.
        let order: Vec<(u32, u64)> = kept
            .iter()
            .map(|&(b, r)| {
                (
                    blocks[b as usize].file(r as usize),
                    blocks[b as usize].line(r as usize),
                )
            })
            .collect();
        assert!(order.is_sorted());

        let (mut compacted, superseded) = merger.compact(&blocks, distinct as usize / 4);
        compacted.sort_unstable();
        assert_eq!(compacted, want);
        assert_eq!(superseded, expected.superseded);
    }
}
