//! Route rows by the date of their partition column, within a memory budget. When the buffered
//! rows pass the budget, dates are first compacted (the latest row per key kept, the rest
//! counted as superseded: what the merge would do anyway), and if that does not free enough,
//! the largest dates go to spill files on local disk, cut by key hash so a date too large for
//! memory can later be merged piece by piece (see [`crate::merge::spill`]).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use crate::block::FileTable;
use crate::block::KeyColumns;
use crate::block::RowBlock;
use crate::config::Order;
use crate::merge::spill::DateRows;
use crate::merge::{Merger, distinct_keys};
use crate::read::reader::DateBlocks;
use crate::scratch::SpillDir;

/// What the router needs to compact a date: the same rule as the final merge.
pub struct Compactor {
    pub keys: KeyColumns,
    pub order: Order,
    pub files: FileTable,
}

impl Compactor {
    /// Keeps the latest of the date's in-memory rows per key. Returns the bytes before and
    /// after, and how many rows were superseded. The kept rows are copied out block by block,
    /// each source block freed once copied, into blocks of [`COMPACTED_BLOCK_BYTES`]: memory
    /// never holds the date twice over.
    fn compact(&self, rows: &mut DateRows) -> (usize, usize, u64) {
        let before = rows.memory_bytes();
        let total: usize = rows.blocks().iter().map(RowBlock::len).sum();
        let distinct = distinct_keys(rows.blocks());
        // Mostly distinct keys: dropping duplicates would free little; leave the rows be.
        if distinct * 4 > total * 3 {
            return (before, before, 0);
        }
        let blocks = rows.take_memory();
        let Some(first) = blocks.first() else {
            return (before, before, 0);
        };
        let mut current = first.empty_like();
        let merger = Merger {
            keys: &self.keys,
            order: self.order,
            files: &self.files,
        };
        let (kept, superseded) = merger.compact(&blocks, distinct.min(total));
        let mut kept = kept.into_iter().peekable();
        let mut compacted = Vec::new();
        for (b, block) in blocks.into_iter().enumerate() {
            while let Some((_, r)) = kept.next_if(|(kb, _)| *kb as usize == b) {
                current.push_from(&block, r as usize);
                if current.data_bytes() >= COMPACTED_BLOCK_BYTES {
                    let next = current.empty_like();
                    let mut full = std::mem::replace(&mut current, next);
                    full.shrink_to_fit();
                    compacted.push(full);
                }
            }
        }
        current.shrink_to_fit();
        compacted.push(current);
        rows.replace_memory(compacted);
        (before, rows.memory_bytes(), superseded)
    }
}

/// Size of the blocks compaction copies kept rows into.
const COMPACTED_BLOCK_BYTES: usize = 32 << 20;

pub struct DateRouter {
    budget: usize,
    threads: usize,
    /// A date no larger than this spills whole (the merge's unit limit, see [`DateRows::spill`]).
    whole_spill: usize,
    dates: BTreeMap<i32, DateRows>,
    bytes_in_memory: usize,
    spill: Arc<SpillDir>,
    compactor: Compactor,
    /// Dates with rows added since they were last compacted.
    grown: BTreeSet<i32>,
    /// Dates whose compaction barely shrank them: they spill instead.
    incompressible: BTreeSet<i32>,
    superseded: u64,
    total_rows: u64,
}

impl DateRouter {
    pub fn new(
        budget: u64,
        threads: usize,
        whole_spill: usize,
        spill: Arc<SpillDir>,
        compactor: Compactor,
    ) -> Self {
        DateRouter {
            budget: budget as usize,
            threads,
            whole_spill,
            dates: BTreeMap::new(),
            bytes_in_memory: 0,
            spill,
            compactor,
            grown: BTreeSet::new(),
            incompressible: BTreeSet::new(),
            superseded: 0,
            total_rows: 0,
        }
    }

    pub fn push(&mut self, blocks: DateBlocks) -> std::io::Result<()> {
        for (date, mut block) in blocks {
            // Only a block with much spare room is copied into a tight one: shrinking copies.
            if block.heap_bytes() > block.data_bytes() * 3 / 2 {
                block.shrink_to_fit();
            }
            self.bytes_in_memory += block.heap_bytes();
            self.total_rows += block.len() as u64;
            self.dates.entry(date).or_default().add(block);
            self.grown.insert(date);
        }
        if self.bytes_in_memory > self.budget {
            self.relieve()?;
        }
        Ok(())
    }

    /// Brings memory down to half the budget: compaction first (dates side by side, on
    /// `threads` threads), then spilling the largest dates.
    fn relieve(&mut self) -> std::io::Result<()> {
        let target = self.budget / 2;
        let started = std::time::Instant::now();
        let before_all = self.bytes_in_memory;
        let mut candidates: Vec<(i32, &mut DateRows)> = self
            .dates
            .iter_mut()
            .filter(|(d, _)| self.grown.contains(d) && !self.incompressible.contains(d))
            .map(|(d, rows)| (*d, rows))
            .collect();
        candidates.sort_unstable_by_key(|(_, rows)| std::cmp::Reverse(rows.memory_bytes()));
        let compactor = &self.compactor;
        let next = std::sync::atomic::AtomicUsize::new(0);
        let candidates: Vec<std::sync::Mutex<(i32, &mut DateRows)>> =
            candidates.into_iter().map(std::sync::Mutex::new).collect();
        let outcomes: Vec<(i32, usize, usize, u64)> = std::thread::scope(|scope| {
            let workers: Vec<_> = (0..self.threads.clamp(1, candidates.len().max(1)))
                .map(|_| {
                    scope.spawn(|| {
                        let mut done = Vec::new();
                        loop {
                            let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            let Some(slot) = candidates.get(i) else { break };
                            let mut slot = slot.lock().unwrap_or_else(|e| e.into_inner());
                            let (date, rows) = &mut *slot;
                            let (before, after, superseded) = compactor.compact(rows);
                            done.push((*date, before, after, superseded));
                        }
                        done
                    })
                })
                .collect();
            workers
                .into_iter()
                .flat_map(|w| w.join().expect("compaction does not panic"))
                .collect()
        });
        for (date, before, after, superseded) in outcomes {
            self.bytes_in_memory = self.bytes_in_memory - before + after;
            self.superseded += superseded;
            self.grown.remove(&date);
            if after * 4 > before * 3 {
                self.incompressible.insert(date);
            }
        }
        tracing::debug!(
            "compacted {} → {} bytes in {:?}",
            before_all,
            self.bytes_in_memory,
            started.elapsed()
        );
        if self.bytes_in_memory > target {
            let mut largest: Vec<(usize, i32)> = self
                .dates
                .iter()
                .map(|(d, rows)| (rows.memory_bytes(), *d))
                .collect();
            largest.sort_unstable_by(|a, b| b.cmp(a));
            for (_, date) in largest {
                if self.bytes_in_memory <= target {
                    break;
                }
                let freed = self
                    .dates
                    .get_mut(&date)
                    .expect("listed")
                    .spill(&self.spill, self.whole_spill)?;
                self.bytes_in_memory -= freed;
            }
            tracing::debug!(
                "memory budget reached: {} bytes spilled so far",
                self.spill.bytes_written()
            );
        }
        Ok(())
    }

    /// Called when reading ends: the rows still in memory of each date that spilled whole
    /// and still fits one unit join its spill, whole. Merging then holds those dates' units
    /// only, not their rows left in memory beside the units (late data at 512 MiB peaked at
    /// 653 MiB with them, over the bound of 640 MiB); reading them back costs a read of what
    /// was just written.
    pub fn finish_reading(&mut self) -> std::io::Result<()> {
        for rows in self.dates.values_mut() {
            if rows.spilled() && !rows.spilled_by_bucket() && rows.bytes() <= self.whole_spill as u64 {
                self.bytes_in_memory -= rows.spill(&self.spill, self.whole_spill)?;
            }
        }
        Ok(())
    }

    /// Every date that has rows, those with the most rows (in memory and spilled) first:
    /// merged in this order on several threads, the last date to finish is a small one.
    pub fn dates_largest_first(&self) -> Vec<i32> {
        let mut dates: Vec<(u64, i32)> = self.dates.iter().map(|(d, rows)| (rows.bytes(), *d)).collect();
        dates.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
        dates.into_iter().map(|(_, d)| d).collect()
    }

    /// Bytes of rows held, in memory and spilled.
    pub fn total_bytes(&self) -> u64 {
        self.dates.values().map(DateRows::bytes).sum()
    }

    pub fn total_rows(&self) -> u64 {
        self.total_rows
    }

    /// Rows this run dropped while compacting because a later row has the same key.
    pub fn superseded(&self) -> u64 {
        self.superseded
    }

    /// Bytes held in memory now.
    pub fn bytes_in_memory(&self) -> usize {
        self.bytes_in_memory
    }

    /// Bytes written to spill files so far (0 when everything fit in memory).
    pub fn spilled_bytes(&self) -> u64 {
        self.spill.bytes_written()
    }

    /// Takes all rows of a date out of the router.
    pub fn take(&mut self, date: i32) -> DateRows {
        let rows = self.dates.remove(&date).unwrap_or_default();
        self.bytes_in_memory -= rows.memory_bytes();
        rows
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::block::FileInfo;
    use crate::block::{Lineage, RowBuilder};
    use crate::test_fixtures::schema;

    fn router(budget: u64) -> DateRouter {
        router_spilling_whole_up_to(budget, 0)
    }

    fn router_spilling_whole_up_to(budget: u64, whole_spill: usize) -> DateRouter {
        let schema = schema();
        let files = FileTable::new(Arc::from(vec![FileInfo {
            key: "a.gz".into(),
            modified_micros: 1,
        }]));
        let compactor = Compactor {
            keys: KeyColumns::new(&schema),
            order: Order::Arrival,
            files,
        };
        DateRouter::new(budget, 2, whole_spill, SpillDir::new(None), compactor)
    }

    /// Rows `ids` of date `date`, one per line from `first_line`.
    fn batch(date: i32, ids: &[&str], first_line: u64) -> DateBlocks {
        let mut builder = RowBuilder::new(&schema());
        let mut block = RowBlock::new(3, 1);
        for (i, id) in ids.iter().enumerate() {
            let lineage = Lineage {
                file: 0,
                line: first_line + i as u64,
                generation: 1,
            };
            builder.push(&mut block, &[Some(id), None, Some("v")], &[date], lineage);
        }
        vec![(date, block)]
    }

    fn rows_of(rows: DateRows) -> Vec<(String, u64)> {
        let mut units = rows.into_units(usize::MAX, SpillDir::new(None), 1).unwrap();
        let mut out = Vec::new();
        while let Some(unit) = units.next_unit().unwrap() {
            for b in &unit.load().unwrap() {
                out.extend((0..b.len()).map(|r| (b.field_str(r, 0).unwrap().to_string(), b.line(r))));
            }
        }
        out.sort();
        out
    }

    #[test]
    fn duplicates_are_compacted_before_anything_spills() {
        let mut router = router(1);
        router.push(batch(10, &["a", "b", "a"], 1)).unwrap();
        assert_eq!(router.superseded(), 1, "line 1 lost to line 3");
        // Compaction cannot shrink the rows below a one-byte budget: the date spilled.
        assert!(router.spilled_bytes() > 0);
        router.push(batch(10, &["a", "b"], 4)).unwrap();
        assert_eq!(router.total_rows(), 5);
        // Spilled rows are not compacted again; the merge settles them.
        assert_eq!(
            rows_of(router.take(10)),
            vec![("a".into(), 3), ("a".into(), 4), ("b".into(), 2), ("b".into(), 5)]
        );
        assert_eq!(router.bytes_in_memory(), 0);
    }

    /// When reading ends, a date that spilled whole puts the rest of its rows on disk too;
    /// a date that never spilled stays in memory. No row is lost or doubled.
    #[test]
    fn reading_ends_with_dates_spilled_whole_all_on_disk() {
        let mut router = router_spilling_whole_up_to(1, 1 << 20);
        router.push(batch(10, &["a", "b"], 1)).unwrap();
        assert!(router.spilled_bytes() > 0);
        router.budget = 1 << 20;
        router.push(batch(10, &["c"], 3)).unwrap();
        router.push(batch(11, &["a"], 1)).unwrap();
        assert!(router.bytes_in_memory() > 0);
        router.finish_reading().unwrap();
        assert_eq!(router.dates[&10].memory_bytes(), 0, "date 10 is all on disk");
        assert!(!router.dates[&10].spilled_by_bucket(), "spilled whole");
        assert!(router.dates[&11].memory_bytes() > 0, "date 11 never spilled");
        assert_eq!(router.bytes_in_memory(), router.dates[&11].memory_bytes());
        assert_eq!(
            rows_of(router.take(10)),
            vec![("a".into(), 1), ("b".into(), 2), ("c".into(), 3)]
        );
    }

    #[test]
    fn dates_are_merged_largest_first() {
        let mut router = router(1 << 20);
        router.push(batch(10, &["a"], 1)).unwrap();
        router.push(batch(11, &["a", "b", "c"], 1)).unwrap();
        router.push(batch(12, &["a", "b"], 1)).unwrap();
        router.push(batch(13, &["b"], 1)).unwrap();
        // Equal sizes keep date order.
        assert_eq!(router.dates_largest_first(), vec![11, 12, 10, 13]);
    }

    #[test]
    fn rows_stay_in_memory_within_budget() {
        let mut router = router(1 << 20);
        router.push(batch(10, &["a", "a"], 1)).unwrap();
        router.push(batch(11, &["a"], 1)).unwrap();
        assert_eq!(router.spilled_bytes(), 0);
        assert_eq!(router.superseded(), 0, "nothing compacted within budget");
        assert_eq!(router.dates_largest_first(), vec![10, 11]);
        assert_eq!(rows_of(router.take(10)).len(), 2);
    }
}
