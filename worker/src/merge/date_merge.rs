//! One date's merge: its rows come as units (see [`crate::merge::spill`]); each unit's latest rows
//! per key are kept and encoded, in unit order, into the date's object. A date cut into
//! several units has them merged on several threads; [`MergeMemory`] caps the bytes of units
//! in memory at once across every date of the run, so the memory budget holds however the
//! dates are sized. A date whose new and stored rows fit one unit is the common incremental
//! case: its stored rows stay in the columns they were decoded into ([`StoredSlice`]).

use std::collections::BTreeMap;
use std::sync::{Arc, Condvar, Mutex};

use crate::block::{FileTable, RowRef};
use crate::block::{KeyColumns, RowBlock};
use crate::config::Order;
use crate::error::{Error, Result};
use crate::merge::spill::{DateRows, Units};
use crate::merge::{MergeCounts, Merger};
use crate::scratch::SpillDir;
use crate::table::{DateEncoder, EncodedObject, StoredRows, StoredSlice};

/// The memory merge units may hold at once, across every date of the run, in bytes of rows,
/// and how many units: a semaphore for blocking threads. Counting bytes rather than units lets
/// small units (a spilled date's) be merged while earlier ones are encoded, where a count of
/// units sized for the largest would leave cores idle; the count keeps a run of many small
/// units from filling the whole allowance with units waiting to be encoded.
pub struct MergeMemory {
    capacity: u64,
    free: Mutex<(u64, usize)>,
    freed: Condvar,
}

impl MergeMemory {
    /// `capacity` bytes in at most `units` units.
    pub fn new(capacity: u64, units: usize) -> Self {
        let capacity = capacity.max(1);
        MergeMemory {
            capacity,
            free: Mutex::new((capacity, units.max(1))),
            freed: Condvar::new(),
        }
    }

    /// Waits until `bytes` and one unit are free (all the bytes, for a unit larger than the
    /// whole) and takes them until the guard drops. Callers acquire a date's units in unit
    /// order, so the earliest unit of a date holding memory never waits on a later one.
    fn acquire(&self, bytes: u64) -> MemoryGuard<'_> {
        let bytes = bytes.clamp(1, self.capacity);
        let mut free = self.free.lock().unwrap_or_else(|e| e.into_inner());
        while free.0 < bytes || free.1 == 0 {
            free = self.freed.wait(free).unwrap_or_else(|e| e.into_inner());
        }
        free.0 -= bytes;
        free.1 -= 1;
        MemoryGuard { memory: self, bytes }
    }
}

struct MemoryGuard<'a> {
    memory: &'a MergeMemory,
    bytes: u64,
}

impl Drop for MemoryGuard<'_> {
    fn drop(&mut self) {
        let mut free = self.memory.free.lock().unwrap_or_else(|e| e.into_inner());
        free.0 += self.bytes;
        free.1 += 1;
        self.memory.freed.notify_all();
    }
}

/// What one date's merge needs besides its rows.
pub struct DateMerge<'a> {
    pub keys: &'a KeyColumns,
    pub order: Order,
    pub memory: &'a MergeMemory,
    /// Threads merging units of this date side by side.
    pub threads: usize,
    /// Largest unit, in bytes of rows (see [`crate::merge::spill`]).
    pub unit_limit: usize,
    pub spill: &'a Arc<SpillDir>,
}

/// The merged date: its encoded object, counts and kept rows.
pub struct MergedDate {
    pub body: EncodedObject,
    pub counts: MergeCounts,
    pub rows: u64,
    /// Stored rows of files that stay which won over the new rows (file key, position): left
    /// where they are, not marked deleted.
    pub stayed: Vec<(String, u64)>,
}

impl DateMerge<'_> {
    /// The merge of this date's rows, their lineage file ids named by `files`.
    fn merger<'m>(&'m self, files: &'m FileTable) -> Merger<'m> {
        Merger {
            keys: self.keys,
            order: self.order,
            files,
        }
    }

    /// Merges the date's new rows with its stored rows (if any) and encodes the kept rows.
    /// Runs on a blocking thread.
    pub fn run(
        &self,
        mut rows: DateRows,
        stored: Option<Box<dyn StoredRows>>,
        mut files: FileTable,
        encoder: Box<dyn DateEncoder>,
    ) -> Result<MergedDate> {
        if let Some(mut stored) = stored {
            // Stored rows are decoded under a unit's worth of merge memory, a unit at a time: what
            // `unit_limit` is sized for, however wide the rows and however many dates merge.
            let memory = self.memory.acquire(self.unit_limit as u64);
            let mut first = true;
            loop {
                let room = self
                    .unit_limit
                    .saturating_sub(rows.memory_bytes())
                    .max(self.unit_limit / 4);
                let Some(slice) = stored.next_slice(room)? else {
                    break;
                };
                if slice.marked().is_some() {
                    drop(memory);
                    return self.merge_marked(rows, slice, stored, files, encoder);
                }
                // A date that fits one unit whole is merged with its stored rows left in
                // their columnar form.
                let whole = first && !stored.has_more() && !rows.spilled();
                if whole && rows.memory_bytes() + slice.memory_bytes() <= self.unit_limit {
                    return self.merge_with_stored(rows, slice, files, encoder, memory);
                }
                first = false;
                // Otherwise stored rows join the new ones; a large date goes to disk as it is
                // read, to be merged in units like any other.
                rows.add(slice.rows(&mut files)?);
                drop(slice);
                if rows.memory_bytes() > 2 * self.unit_limit {
                    rows.spill(self.spill, self.unit_limit)
                        .map_err(Error::scratch("cannot spill rows to disk"))?;
                }
            }
            drop(memory);
        }
        let units = rows
            .into_units(self.unit_limit, self.spill.clone(), self.threads)
            .map_err(Error::scratch("cannot cut spilled rows into units"))?;
        self.merge_units(units, &files, encoder)
    }

    /// Merges a date's new rows (all in memory) with the stored rows holding their keys in
    /// files that stay (marked slices, [`StoredSlice::marked`]: keys and lineage only, a few
    /// rows per file). The new rows that win are encoded; a stored row that wins stays where it
    /// is ([`MergedDate::stayed`]), one that loses is to be marked deleted by the caller.
    fn merge_marked(
        &self,
        mut rows: DateRows,
        first: StoredSlice,
        mut stored: Box<dyn StoredRows>,
        mut files: FileTable,
        mut encoder: Box<dyn DateEncoder>,
    ) -> Result<MergedDate> {
        let mut slices = vec![first];
        while let Some(slice) = stored.next_slice(self.unit_limit)? {
            slices.push(slice);
        }
        let mut blocks = Vec::with_capacity(slices.len() + 1);
        let mut origins = Vec::with_capacity(slices.len());
        for slice in &slices {
            let Some((key, positions)) = slice.marked() else {
                return Err(Error::Other(
                    "a date's stored rows to mark came with rows to rewrite; nothing was written".into(),
                ));
            };
            blocks.push(slice.keys(&mut files)?);
            origins.push((key, positions));
        }
        blocks.extend(rows.take_memory());
        let merger = self.merger(&files);
        let (winners, counts) = merger.merge(&blocks);
        let mut new = Vec::new();
        let mut stayed = Vec::new();
        for (block, row) in winners {
            // The stored slices are the first blocks, one origin each.
            match origins.get(block as usize) {
                Some((key, positions)) => stayed.push((key.to_string(), positions[row as usize])),
                None => new.push((block, row)),
            }
        }
        encoder.add(&blocks, &new, &files)?;
        Ok(MergedDate {
            body: encoder.finish()?,
            counts,
            rows: new.len() as u64,
            stayed,
        })
    }

    /// Merges a date's new rows (all in memory) with its stored rows (one slice) as one unit.
    /// The merge sees the stored rows' keys and lineage only; the stored rows that stay are
    /// taken from their columns by the encoder, beside the new rows that win.
    fn merge_with_stored(
        &self,
        mut rows: DateRows,
        stored: StoredSlice,
        mut files: FileTable,
        mut encoder: Box<dyn DateEncoder>,
        _memory: MemoryGuard<'_>,
    ) -> Result<MergedDate> {
        let mut blocks = vec![stored.keys(&mut files)?];
        blocks.extend(rows.take_memory());
        let merger = self.merger(&files);
        let (winners, counts) = merger.merge(&blocks);
        // The encoder numbers the stored rows first, then the new rows that win, in `new`.
        let stored_rows = stored.len() as u32;
        let mut new = Vec::new();
        let take: Vec<u32> = winners
            .iter()
            .map(|&(block, row)| match block {
                0 => row,
                _ => {
                    new.push((block, row));
                    stored_rows + new.len() as u32 - 1
                }
            })
            .collect();
        encoder.add_with_stored(&stored, &blocks, &new, &take, &files)?;
        Ok(MergedDate {
            body: encoder.finish()?,
            counts,
            rows: take.len() as u64,
            stayed: Vec::new(),
        })
    }

    /// Merges every unit and encodes the kept rows, unit by unit in order (the object is the
    /// same whichever thread finishes first).
    fn merge_units(
        &self,
        units: Units,
        files: &FileTable,
        mut encoder: Box<dyn DateEncoder>,
    ) -> Result<MergedDate> {
        let units = Mutex::new((units, 0usize));
        // A unit's memory travels with its kept rows and is freed once they are encoded, so
        // merging cannot run ahead of encoding and pile kept rows up in memory.
        type Merged<'s> = (usize, (Vec<RowBlock>, Vec<RowRef>), MergeCounts, MemoryGuard<'s>);
        let (sender, receiver) = std::sync::mpsc::channel::<Result<Merged<'_>>>();
        let (mut counts, mut rows) = (MergeCounts::default(), 0u64);
        std::thread::scope(|scope| -> Result<()> {
            for _ in 0..self.threads.max(1) {
                let sender = sender.clone();
                let units = &units;
                scope.spawn(move || {
                    loop {
                        // The unit's memory is taken under the lock: units of a date hold
                        // memory in unit order (see `MergeMemory::acquire`).
                        let next = {
                            let mut units = units.lock().unwrap_or_else(|e| e.into_inner());
                            let index = units.1;
                            units.1 += 1;
                            units.0.next_unit().map(|unit| {
                                unit.map(|unit| {
                                    let memory = self.memory.acquire(unit.bytes());
                                    (index, unit, memory)
                                })
                            })
                        };
                        // Loaded outside the lock: units of one date are copied out of their
                        // shared blocks or read back from disk on several threads at once.
                        let outcome = match next.and_then(|next| {
                            next.map(|(index, unit, memory)| Ok((index, unit.load()?, memory)))
                                .transpose()
                        }) {
                            Ok(None) => return,
                            Ok(Some((index, blocks, memory))) => {
                                let (kept, counts) = self.merge_unit(blocks, files);
                                Ok((index, kept, counts, memory))
                            }
                            Err(e) => Err(Error::scratch("cannot read back spilled rows")(e)),
                        };
                        let failed = outcome.is_err();
                        if sender.send(outcome).is_err() || failed {
                            return;
                        }
                    }
                });
            }
            drop(sender);
            // Encode in unit order: results that arrive early wait here.
            let mut waiting = BTreeMap::new();
            let mut next = 0usize;
            for outcome in receiver {
                let (index, kept, unit_counts, memory) = outcome?;
                waiting.insert(index, (kept, memory));
                counts += unit_counts;
                while let Some(((blocks, kept), memory)) = waiting.remove(&next) {
                    encoder.add(&blocks, &kept, files)?;
                    rows += kept.len() as u64;
                    next += 1;
                    drop(memory);
                }
            }
            Ok(())
        })?;
        Ok(MergedDate {
            body: encoder.finish()?,
            counts,
            rows,
            stayed: Vec::new(),
        })
    }

    /// The unit's rows and which of them to keep, in order.
    fn merge_unit(
        &self,
        blocks: Vec<RowBlock>,
        files: &FileTable,
    ) -> ((Vec<RowBlock>, Vec<RowRef>), MergeCounts) {
        let merger = Merger {
            keys: self.keys,
            order: self.order,
            files,
        };
        let (winners, counts) = merger.merge(&blocks);
        ((blocks, winners), counts)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Units hold merge memory by their size: small ones side by side, a large one alone,
    /// one larger than the whole takes all of it rather than waiting forever.
    #[test]
    fn merge_memory_counts_bytes() {
        let memory = MergeMemory::new(100, 3);
        let a = memory.acquire(30);
        let b = memory.acquire(30);
        let c = memory.acquire(40);
        assert_eq!(*memory.free.lock().unwrap(), (0, 0));
        drop((a, b, c));
        // Small units are counted too: three at most.
        let small: Vec<_> = (0..3).map(|_| memory.acquire(1)).collect();
        assert_eq!(memory.free.lock().unwrap().1, 0);
        drop(small);
        let all = memory.acquire(1_000);
        assert_eq!(all.bytes, 100, "clamped to the whole");
        let waited = std::sync::atomic::AtomicBool::new(false);
        std::thread::scope(|scope| {
            let waiter = scope.spawn(|| {
                let _small = memory.acquire(10);
                assert!(
                    waited.load(std::sync::atomic::Ordering::SeqCst),
                    "took memory still held"
                );
            });
            std::thread::sleep(std::time::Duration::from_millis(100));
            waited.store(true, std::sync::atomic::Ordering::SeqCst);
            drop(all);
            waiter.join().unwrap();
        });
        assert_eq!(*memory.free.lock().unwrap(), (100, 3));
    }
}
