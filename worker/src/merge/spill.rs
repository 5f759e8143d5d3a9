//! The rows of one date, in memory and on local disk, handed to the merge in units that fit a
//! memory limit. A date that alone is larger than the limit is cut by key hash into 256
//! buckets (and those again, as often as needed), neighbouring buckets grouped into units:
//! rows with equal keys have equal hashes, so each unit is merged on its own and the date's
//! memory stays bounded whatever the input size or skew.
//!
//! A date spills into a file of its own. While the whole date still fits one unit, its blocks
//! are written as they are, in arrival order: read back, the date is one unit whose rows lie
//! in about the order the encoder visits them. A larger date's spills are cut by bucket: the
//! file holds, per spill, each bucket's rows in pieces of about 32 KiB, written in one pass
//! over the date's blocks, and a unit is read back from it in few large reads.

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use crate::block::RowBlock;
use crate::scratch::SpillDir;

/// Hash bits that pick a sub-partition at each level: 256 buckets, so a date spilled to 256 ×
/// the unit limit still needs no second pass (a second pass writes and reads everything
/// again). Each spill of a date writes one piece per bucket, however many blocks it holds.
const BUCKET_BITS: u32 = 8;
pub const BUCKETS: usize = 1 << BUCKET_BITS;
/// Below this level rows differ in hash bits; past it only equal hashes are left together.
const MAX_LEVEL: u32 = 64 / BUCKET_BITS - 1;

fn bucket(hash: u64, level: u32) -> usize {
    ((hash >> (64 - BUCKET_BITS * (level + 1))) as usize) & (BUCKETS - 1)
}

/// A spill file, removed when the last part that points into it goes.
#[derive(Debug)]
struct SpillPath(PathBuf);

impl Drop for SpillPath {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// The rows of one hash bucket that lie in a spill file: where each of their blocks starts and
/// how long it is. Many parts share one file; each date spills into a file of its own, written
/// in large sequential appends (one open, a 1 MiB buffer, per spill of the date), and a part's
/// blocks are read back by offset.
#[derive(Debug)]
struct SpillPart {
    file: Arc<SpillPath>,
    blocks: Vec<Piece>,
    bytes: u64,
}

impl SpillPart {
    fn new(file: &Arc<SpillPath>) -> SpillPart {
        SpillPart {
            file: file.clone(),
            blocks: Vec::new(),
            bytes: 0,
        }
    }

    /// Reads the blocks back one at a time, in the order they were written.
    fn for_each(&self, mut f: impl FnMut(RowBlock) -> std::io::Result<()>) -> std::io::Result<()> {
        use std::os::unix::fs::FileExt;
        if self.blocks.is_empty() {
            return Ok(());
        }
        let file = File::open(&self.file.0)?;
        let mut buffer = Vec::new();
        for &Piece { offset, len, .. } in &self.blocks {
            buffer.resize(len as usize, 0);
            file.read_exact_at(&mut buffer, offset)?;
            let mut block = RowBlock::default();
            block.append_encoded(&buffer)?;
            f(block)?;
        }
        Ok(())
    }
}

/// One block in a spill file: where it lies, and what it holds (to size a unit read back).
#[derive(Debug, Clone, Copy)]
struct Piece {
    offset: u64,
    len: u64,
    rows: u64,
    text: u64,
}

/// Rows a part gathers before they are written as one piece: 256 parts stage up to 8 MiB.
const STAGED_BYTES: usize = 32 << 10;

/// Appends rows to one spill file, each row to the part of its key hash. Blocks are read
/// once, in order; each part gathers its rows until it holds [`STAGED_BYTES`], then writes
/// them as one piece through one buffered writer. Reading each part's rows from all blocks
/// at once instead costs a trip to memory per row. Rows keep their order within a part; a
/// spill of a small date writes one piece per part, bucket after bucket, so a unit of
/// neighbouring buckets is read back in one read.
struct PartWriter<'a> {
    out: PieceWriter<'a>,
    staged: Vec<RowBlock>,
    /// Room each part's staging block is given at first.
    stage_bytes: usize,
}

/// Pieces appended to one spill file through one buffered writer, each noted in its part.
struct PieceWriter<'a> {
    spill: &'a SpillDir,
    out: BufWriter<File>,
    /// The file's length so far.
    offset: u64,
}

impl<'a> PartWriter<'a> {
    /// Opens `file` (`len` bytes long) to append about `bytes` of rows, cut into `parts`.
    fn open(
        spill: &'a SpillDir,
        file: &SpillPath,
        len: u64,
        parts: usize,
        bytes: usize,
    ) -> std::io::Result<Self> {
        Ok(PartWriter {
            out: PieceWriter::open(spill, file, len)?,
            staged: (0..parts).map(|_| RowBlock::default()).collect(),
            // A part's expected share, with room for chance: a small spill stages no more
            // than it holds.
            stage_bytes: (bytes / parts.max(1) * 5 / 4).clamp(1, STAGED_BYTES),
        })
    }

    /// Adds `block`'s rows, row `r` to `parts[part_of(hash of r)]`.
    fn add(
        &mut self,
        block: &RowBlock,
        part_of: impl Fn(u64) -> usize,
        parts: &mut [SpillPart],
    ) -> std::io::Result<()> {
        for r in 0..block.len() {
            let p = part_of(block.hash(r));
            let stage = &mut self.staged[p];
            if stage.is_empty() && stage.columns() != block.columns() {
                // Sized once for what it gathers: growing 256 parts by doubling is malloc churn.
                *stage = block.empty_like();
                let row_bytes = (block.data_bytes() / block.len()).max(1);
                stage.reserve_exact(self.stage_bytes / row_bytes + 1, self.stage_bytes);
            }
            stage.push_from(block, r);
            if stage.data_bytes() >= STAGED_BYTES {
                self.out.write(stage, &mut parts[p])?;
                stage.clear();
            }
        }
        Ok(())
    }

    /// Writes what every part still holds; returns the file's length.
    fn finish(mut self, parts: &mut [SpillPart]) -> std::io::Result<u64> {
        for (stage, part) in self.staged.iter().zip(parts.iter_mut()) {
            if !stage.is_empty() {
                self.out.write(stage, part)?;
            }
        }
        self.out.finish()
    }
}

impl<'a> PieceWriter<'a> {
    /// Opens `file` (`len` bytes long) to append pieces.
    fn open(spill: &'a SpillDir, file: &SpillPath, len: u64) -> std::io::Result<Self> {
        let handle = OpenOptions::new().create(true).append(true).open(&file.0)?;
        Ok(PieceWriter {
            spill,
            out: BufWriter::with_capacity(1 << 20, handle),
            offset: len,
        })
    }

    /// Writes what is buffered; returns the file's length.
    fn finish(mut self) -> std::io::Result<u64> {
        self.out.flush()?;
        Ok(self.offset)
    }

    fn write(&mut self, block: &RowBlock, part: &mut SpillPart) -> std::io::Result<()> {
        let n = block.write_to(&mut self.out)?;
        part.blocks.push(Piece {
            offset: self.offset,
            len: n,
            rows: block.len() as u64,
            text: block.text_bytes() as u64,
        });
        part.bytes += n;
        self.offset += n;
        self.spill.count_written(n);
        Ok(())
    }
}

/// `block`'s rows cut into `parts` blocks by `part_of(key hash)`, each allocated once at its
/// size.
fn split_block(block: &RowBlock, parts: usize, part_of: impl Fn(u64) -> usize) -> Vec<RowBlock> {
    let mut rows: Vec<Vec<u32>> = vec![Vec::new(); parts];
    for r in 0..block.len() {
        rows[part_of(block.hash(r))].push(r as u32);
    }
    rows.iter().map(|rows| block.gather(rows)).collect()
}

/// In-memory rows waiting for their unit: a whole block, or the rows of a block that share
/// a unit's hash bits. When a date is cut into units its blocks are shared by the units, not
/// copied; each unit copies its rows out as it is loaded, on the thread that merges it.
#[derive(Debug)]
struct Slice {
    block: Arc<RowBlock>,
    /// `None`: every row.
    rows: Option<Vec<u32>>,
    bytes: usize,
}

impl Slice {
    fn whole(block: RowBlock) -> Slice {
        Slice {
            bytes: block.heap_bytes(),
            block: Arc::new(block),
            rows: None,
        }
    }

    /// The slice's rows cut by hash bucket at `level`, one slice per bucket (`None` where a
    /// bucket has none).
    fn split(&self, level: u32) -> Vec<Option<Slice>> {
        let mut rows: Vec<Vec<u32>> = vec![Vec::new(); BUCKETS];
        let mut bytes = vec![0usize; BUCKETS];
        let mut add = |r: u32| {
            let b = bucket(self.block.hash(r as usize), level);
            rows[b].push(r);
            bytes[b] += self.block.row_bytes(r as usize);
        };
        match &self.rows {
            None => (0..self.block.len() as u32).for_each(&mut add),
            Some(selected) => selected.iter().copied().for_each(&mut add),
        }
        rows.into_iter()
            .zip(bytes)
            .map(|(rows, bytes)| {
                (!rows.is_empty()).then(|| Slice {
                    block: self.block.clone(),
                    rows: Some(rows),
                    bytes,
                })
            })
            .collect()
    }

    fn load(self) -> RowBlock {
        match self.rows {
            // Whole blocks are never shared; a clone would only follow a change to that.
            None => Arc::try_unwrap(self.block).unwrap_or_else(|shared| (*shared).clone()),
            Some(rows) => self.block.gather(&rows),
        }
    }
}

/// What a date spilled: its file; the blocks spilled whole while the date fitted one unit;
/// and, per level-0 bucket, where that bucket's rows lie in it.
#[derive(Debug)]
struct DateSpill {
    file: Arc<SpillPath>,
    len: u64,
    whole: SpillPart,
    parts: Vec<SpillPart>,
}

/// All rows of one date: blocks in memory, and what was spilled, cut by hash bucket.
#[derive(Debug, Default)]
pub struct DateRows {
    memory: Vec<RowBlock>,
    memory_bytes: usize,
    /// Once the date has spilled.
    spilled: Option<DateSpill>,
}

impl DateRows {
    pub fn add(&mut self, block: RowBlock) {
        if !block.is_empty() {
            self.memory_bytes += block.heap_bytes();
            self.memory.push(block);
        }
    }

    pub fn memory_bytes(&self) -> usize {
        self.memory_bytes
    }

    /// Bytes of rows held, in memory and spilled.
    pub fn bytes(&self) -> u64 {
        self.memory_bytes as u64 + self.spilled.as_ref().map_or(0, |s| s.len)
    }

    /// Whether some of the rows are on disk.
    pub fn spilled(&self) -> bool {
        self.spilled.is_some()
    }

    pub fn blocks(&self) -> &[RowBlock] {
        &self.memory
    }

    /// Takes the in-memory blocks out (to be replaced by [`DateRows::replace_memory`]).
    pub fn take_memory(&mut self) -> Vec<RowBlock> {
        self.memory_bytes = 0;
        std::mem::take(&mut self.memory)
    }

    /// Replaces the in-memory blocks (by their merged form, for instance).
    pub fn replace_memory(&mut self, blocks: Vec<RowBlock>) {
        self.memory.clear();
        self.memory_bytes = 0;
        for block in blocks {
            self.add(block);
        }
    }

    /// Moves the in-memory rows to this date's spill file: block by block as they are while
    /// the date's rows, in memory and spilled, are no more than `whole_up_to` bytes (the
    /// merge's unit limit: read back, the date is one unit), else cut by level-0 bucket (see
    /// [`PartWriter`]). Returns the memory freed.
    pub fn spill(&mut self, spill: &SpillDir, whole_up_to: usize) -> std::io::Result<usize> {
        if self.memory.is_empty() {
            return Ok(0);
        }
        let whole = self.bytes() <= whole_up_to as u64;
        if self.spilled.is_none() {
            let file = Arc::new(SpillPath(spill.new_path("date")?));
            let parts = (0..BUCKETS).map(|_| SpillPart::new(&file)).collect();
            let whole = SpillPart::new(&file);
            self.spilled = Some(DateSpill {
                file,
                len: 0,
                whole,
                parts,
            });
        }
        let date = self.spilled.as_mut().expect("created above");
        if whole {
            let mut out = PieceWriter::open(spill, &date.file, date.len)?;
            for block in std::mem::take(&mut self.memory) {
                out.write(&block, &mut date.whole)?;
            }
            date.len = out.finish()?;
            return Ok(std::mem::take(&mut self.memory_bytes));
        }
        let mut out = PartWriter::open(spill, &date.file, date.len, BUCKETS, self.memory_bytes)?;
        for block in std::mem::take(&mut self.memory) {
            // Dropped once written: memory goes down as the spill goes on.
            out.add(&block, |h| bucket(h, 0), &mut date.parts)?;
        }
        date.len = out.finish(&mut date.parts)?;
        Ok(std::mem::take(&mut self.memory_bytes))
    }

    /// Whether some rows on disk are cut by key hash (the date outgrew one unit), so that
    /// they come back in hash order.
    pub fn spilled_by_bucket(&self) -> bool {
        self.spilled
            .as_ref()
            .is_some_and(|s| s.parts.iter().any(|p| p.bytes > 0))
    }

    /// The date's rows as merge units of about `limit` bytes at most, in a fixed order. Rows
    /// held only in memory and too many for one unit are cut into their units at once, each
    /// block read once, on `threads` threads.
    pub fn into_units(
        mut self,
        limit: usize,
        spill: Arc<SpillDir>,
        threads: usize,
    ) -> std::io::Result<Units> {
        if self.spilled.is_none() && self.memory_bytes > limit {
            let blocks = std::mem::take(&mut self.memory);
            return Ok(Units {
                limit,
                spill,
                stack: cut_in_memory(blocks, limit, threads).into_iter().rev().collect(),
            });
        }
        self.memory_bytes = 0;
        let memory: Vec<Slice> = std::mem::take(&mut self.memory)
            .into_iter()
            .map(Slice::whole)
            .collect();
        let mut units = Units {
            limit,
            spill,
            stack: Vec::new(),
        };
        let first = Pending {
            level: 0,
            memory,
            files: Vec::new(),
        };
        match self.spilled.take() {
            None => units.stack.push(first),
            Some(DateSpill { parts, whole, .. }) => {
                let total = first.bytes() + whole.bytes + parts.iter().map(|f| f.bytes).sum::<u64>();
                if total <= limit as u64 {
                    let files = parts.into_iter().chain([whole]).filter(|p| p.bytes > 0).collect();
                    units.stack.push(Pending { files, ..first });
                } else {
                    // The cut spills are already cut by level-0 bucket, and what was spilled
                    // whole (before the date grew past one unit) is cut now: pair each
                    // bucket's parts with the in-memory rows of that bucket.
                    let mut buckets: Vec<Pending> = parts
                        .into_iter()
                        .map(|file| Pending {
                            level: 1,
                            memory: Vec::new(),
                            files: vec![file],
                        })
                        .collect();
                    if whole.bytes > 0 {
                        for (bucket, part) in buckets.iter_mut().zip(units.cut_parts(vec![whole], 0)?) {
                            if part.bytes > 0 {
                                bucket.files.push(part);
                            }
                        }
                    }
                    for slice in first.memory {
                        for (bucket, piece) in buckets.iter_mut().zip(slice.split(0)) {
                            bucket.memory.extend(piece);
                        }
                    }
                    units.push_grouped(buckets);
                }
            }
        }
        Ok(units)
    }
}

/// Blocks held in memory, cut by level-0 hash bucket into units of about `limit` bytes:
/// neighbouring buckets are grouped by their sizes, then each block is split once into one
/// piece per unit, sized exactly, blocks shared out over `threads` threads. Cutting by
/// reference instead ([`Slice`]) would have every unit read through every block: on a date of
/// 16 M rows cut into 32 units that read its row entries 8 times over. A bucket larger than
/// `limit` is its own unit, cut again by [`Units::next_unit`].
fn cut_in_memory(blocks: Vec<RowBlock>, limit: usize, threads: usize) -> Vec<Pending> {
    let mut sizes = vec![0u64; BUCKETS];
    for block in &blocks {
        for r in 0..block.len() {
            sizes[bucket(block.hash(r), 0)] += block.row_bytes(r) as u64;
        }
    }
    // Each bucket's unit: neighbours grouped while they fit.
    let mut unit_of = vec![0usize; BUCKETS];
    let (mut units, mut filled) = (0usize, 0u64);
    for (b, &size) in sizes.iter().enumerate() {
        if filled > 0 && filled + size > limit as u64 {
            units += 1;
            filled = 0;
        }
        unit_of[b] = units;
        filled += size;
    }
    let units = units + 1;
    // Each block split into its units' pieces, blocks taken in turn by `threads` threads; a
    // block is dropped once split.
    let work = Mutex::new(blocks.into_iter().enumerate());
    let split: Mutex<Vec<(usize, Vec<RowBlock>)>> = Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for _ in 0..threads.max(1) {
            scope.spawn(|| {
                loop {
                    let next = work.lock().unwrap_or_else(|e| e.into_inner()).next();
                    let Some((i, block)) = next else { return };
                    let pieces = split_block(&block, units, |h| unit_of[bucket(h, 0)]);
                    drop(block);
                    split.lock().unwrap_or_else(|e| e.into_inner()).push((i, pieces));
                }
            });
        }
    });
    // Block order, so the unit's rows (and the file) do not depend on which thread was first.
    let mut split = split.into_inner().unwrap_or_else(|e| e.into_inner());
    split.sort_unstable_by_key(|(i, _)| *i);
    let mut pending: Vec<Pending> = (0..units)
        .map(|_| Pending {
            level: 1,
            memory: Vec::new(),
            files: Vec::new(),
        })
        .collect();
    for (_, pieces) in split {
        for (unit, piece) in pending.iter_mut().zip(pieces) {
            if !piece.is_empty() {
                unit.memory.push(Slice::whole(piece));
            }
        }
    }
    pending
}

/// Rows waiting to become a unit: all share their hash bits above `level`.
struct Pending {
    level: u32,
    memory: Vec<Slice>,
    files: Vec<SpillPart>,
}

impl Pending {
    fn bytes(&self) -> u64 {
        self.memory.iter().map(|s| s.bytes as u64).sum::<u64>()
            + self.files.iter().map(|f| f.bytes).sum::<u64>()
    }
}

/// One merge unit, not yet loaded: which in-memory rows and spilled parts it holds.
pub struct Unit {
    memory: Vec<Slice>,
    files: Vec<SpillPart>,
    bytes: u64,
}

impl Unit {
    /// Bytes of the unit's rows, in memory or on disk: about what it takes in memory loaded.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// The unit's rows as blocks: in-memory rows copied out of the blocks they share, spilled
    /// rows read back.
    pub fn load(self) -> std::io::Result<Vec<RowBlock>> {
        let mut blocks: Vec<RowBlock> = self.memory.into_iter().map(Slice::load).collect();
        if !self.files.is_empty() {
            blocks.push(read_parts(&self.files)?);
        }
        Ok(blocks)
    }
}

/// Most bytes read from a spill file at once.
const READ_BYTES: u64 = 4 << 20;

/// The rows of `parts` as one block. Their pieces are read in file order, neighbours in one
/// read: the pieces of one spill of a date lie side by side, bucket after bucket, so a unit of
/// neighbouring buckets reads each spill's share in one go.
fn read_parts(parts: &[SpillPart]) -> std::io::Result<RowBlock> {
    use std::os::unix::fs::FileExt;
    let mut by_file: Vec<(&Arc<SpillPath>, Vec<Piece>)> = Vec::new();
    for part in parts {
        match by_file.iter_mut().find(|(file, _)| Arc::ptr_eq(file, &part.file)) {
            Some((_, pieces)) => pieces.extend_from_slice(&part.blocks),
            None => by_file.push((&part.file, part.blocks.clone())),
        }
    }
    let pieces = parts.iter().flat_map(|p| &p.blocks);
    let rows = pieces.clone().map(|p| p.rows).sum::<u64>() as usize;
    let text = pieces.map(|p| p.text).sum::<u64>() as usize;
    let mut out = RowBlock::default();
    let mut sized = false;
    let mut buffer = Vec::new();
    for (file, mut pieces) in by_file {
        pieces.sort_unstable_by_key(|p| p.offset);
        let handle = File::open(&file.0)?;
        let mut i = 0;
        while i < pieces.len() {
            // A run of pieces that follow one another, up to READ_BYTES (one piece at least).
            let start = pieces[i].offset;
            let mut end = start + pieces[i].len;
            let mut j = i + 1;
            while j < pieces.len() && pieces[j].offset == end && end + pieces[j].len - start <= READ_BYTES {
                end += pieces[j].len;
                j += 1;
            }
            buffer.resize((end - start) as usize, 0);
            handle.read_exact_at(&mut buffer, start)?;
            let mut at = 0;
            while at < buffer.len() {
                at += out.append_encoded(&buffer[at..])?;
                // Sized once the schema is known: growing by doubling would hold up to twice
                // the unit in memory.
                if !sized {
                    out.reserve_exact(
                        rows.saturating_sub(out.len()),
                        text.saturating_sub(out.text_bytes()),
                    );
                    sized = true;
                }
            }
            i = j;
        }
    }
    Ok(out)
}

/// A date's merge units, produced one at a time.
pub struct Units {
    limit: usize,
    spill: Arc<SpillDir>,
    /// Last = next.
    stack: Vec<Pending>,
}

impl Units {
    /// The next unit; `None` when the date is done. Equal keys are always in the same unit.
    /// Cheap but for a spilled part too large for one unit, which is cut here.
    pub fn next_unit(&mut self) -> std::io::Result<Option<Unit>> {
        loop {
            let Some(pending) = self.stack.pop() else {
                return Ok(None);
            };
            let bytes = pending.bytes();
            if bytes <= self.limit as u64 || pending.level > MAX_LEVEL {
                return Ok(Some(Unit {
                    memory: pending.memory,
                    files: pending.files,
                    bytes,
                }));
            }
            self.split(pending)?;
        }
    }

    /// Cuts rows too many for one unit by their hash bucket at the pending level: rows in
    /// memory stay where they are (the new slices name them), spilled rows go to a new file.
    fn split(&mut self, pending: Pending) -> std::io::Result<()> {
        let level = pending.level;
        let mut children: Vec<Pending> = (0..BUCKETS)
            .map(|_| Pending {
                level: level + 1,
                memory: Vec::new(),
                files: Vec::new(),
            })
            .collect();
        for slice in pending.memory {
            for (child, piece) in children.iter_mut().zip(slice.split(level)) {
                child.memory.extend(piece);
            }
        }
        if !pending.files.is_empty() {
            for (child, part) in children.iter_mut().zip(self.cut_parts(pending.files, level)?) {
                if part.bytes > 0 {
                    child.files.push(part);
                }
            }
        }
        self.push_grouped(children);
        Ok(())
    }

    /// The rows of spilled `parts`, cut by their hash bucket at `level` into one new file: a
    /// part per bucket (empty where the bucket has no rows), read back by offset.
    fn cut_parts(&self, parts: Vec<SpillPart>, level: u32) -> std::io::Result<Vec<SpillPart>> {
        let file = Arc::new(SpillPath(self.spill.new_path("split")?));
        let mut outputs: Vec<SpillPart> = (0..BUCKETS).map(|_| SpillPart::new(&file)).collect();
        let bytes = parts.iter().map(|f| f.bytes as usize).sum();
        let mut out = PartWriter::open(&self.spill, &file, 0, BUCKETS, bytes)?;
        for part in parts {
            part.for_each(|block| out.add(&block, |h| bucket(h, level), &mut outputs))?;
        }
        out.finish(&mut outputs)?;
        Ok(outputs)
    }

    /// Queues sibling sub-partitions (bucket order), neighbours put together while they fit
    /// one unit: fewer, larger row groups. One still too large stays alone, to be cut again.
    fn push_grouped(&mut self, children: Vec<Pending>) {
        let mut grouped: Vec<(Pending, u64)> = Vec::new();
        for child in children {
            let bytes = child.bytes();
            if bytes == 0 {
                continue;
            }
            match grouped.last_mut() {
                Some((group, total)) if *total + bytes <= self.limit as u64 => {
                    group.memory.extend(child.memory);
                    group.files.extend(child.files);
                    *total += bytes;
                }
                _ => grouped.push((child, bytes)),
            }
        }
        let grouped = grouped.into_iter().map(|(group, _)| group);
        // Bucket 0 first.
        self.stack.extend(grouped.rev());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::block::Lineage;

    fn block(hashes: impl IntoIterator<Item = u64>) -> RowBlock {
        let mut b = RowBlock::new(1, 0);
        for (line, h) in hashes.into_iter().enumerate() {
            let text = format!("{h:016x}");
            b.push(
                &text,
                &[text.len() as u32],
                &[],
                h,
                Lineage {
                    file: 0,
                    line: line as u64 + 1,
                    generation: 1,
                },
            );
        }
        b
    }

    fn drain(mut units: Units) -> Vec<Vec<u64>> {
        let mut out = Vec::new();
        while let Some(unit) = units.next_unit().unwrap() {
            let blocks = unit.load().unwrap();
            let mut hashes: Vec<u64> = blocks
                .iter()
                .flat_map(|b| (0..b.len()).map(|r| b.hash(r)))
                .collect();
            hashes.sort();
            out.push(hashes);
        }
        out
    }

    /// A spill larger than what a part stages is written as several pieces per part; read
    /// back, every row is there once, with its fields, in the order it was added.
    #[test]
    fn large_spills_write_several_pieces_per_part_in_order() {
        let spill = SpillDir::new(None);
        // Two buckets only, each far more than one piece's worth.
        let hashes: Vec<u64> = (0..20_000u64).map(|i| (i % 2) << 60 | i).collect();
        let mut rows = DateRows::default();
        rows.add(block(hashes[..12_000].iter().copied()));
        rows.add(block(hashes[12_000..].iter().copied()));
        rows.spill(&spill, 0).unwrap();
        let date = rows.spilled.as_ref().unwrap();
        let pieces: Vec<usize> = date
            .parts
            .iter()
            .map(|p| p.blocks.len())
            .filter(|&n| n > 0)
            .collect();
        assert_eq!(pieces.len(), 2, "two buckets hold rows");
        assert!(
            pieces.iter().all(|&n| n > 2),
            "several pieces per part: {pieces:?}"
        );
        let mut units = rows.into_units(usize::MAX, spill.clone(), 1).unwrap();
        let blocks = units.next_unit().unwrap().unwrap().load().unwrap();
        assert!(units.next_unit().unwrap().is_none());
        let back: Vec<(u64, u64, String)> = blocks
            .iter()
            .flat_map(|b| {
                (0..b.len()).map(move |r| (b.hash(r), b.line(r), b.field_str(r, 0).unwrap().to_string()))
            })
            .collect();
        assert_eq!(back.len(), hashes.len());
        for (hash, _, text) in &back {
            assert_eq!(text, &format!("{hash:016x}"), "the row's own text");
        }
        // Within a bucket, rows keep the order they were added in.
        for bucket in [0u64, 1] {
            let lines: Vec<u64> = back
                .iter()
                .filter(|(h, ..)| h >> 60 == bucket)
                .map(|r| r.1)
                .collect();
            let expected: Vec<u64> = hashes
                .iter()
                .enumerate()
                .filter(|(_, h)| *h >> 60 == bucket)
                .map(|(i, _)| {
                    if i < 12_000 {
                        i as u64 + 1
                    } else {
                        (i - 12_000) as u64 + 1
                    }
                })
                .collect();
            assert_eq!(lines, expected, "bucket {bucket}");
        }
    }

    /// A date spilled while it fits one unit is written whole: read back, it is one unit
    /// with its rows in the order they came.
    #[test]
    fn a_date_that_fits_one_unit_spills_whole_and_comes_back_in_order() {
        let spill = SpillDir::new(None);
        let hashes: Vec<u64> = (0..3000u64)
            .map(|i| i.wrapping_mul(0x9e37_79b9_7f4a_7c15))
            .collect();
        let mut rows = DateRows::default();
        rows.add(block(hashes[..1000].iter().copied()));
        rows.spill(&spill, usize::MAX).unwrap();
        rows.add(block(hashes[1000..2000].iter().copied()));
        rows.spill(&spill, usize::MAX).unwrap();
        rows.add(block(hashes[2000..].iter().copied()));
        assert!(rows.spilled() && !rows.spilled_by_bucket());
        let mut units = rows.into_units(usize::MAX, spill.clone(), 1).unwrap();
        let blocks = units.next_unit().unwrap().unwrap().load().unwrap();
        assert!(units.next_unit().unwrap().is_none(), "one unit");
        let back: Vec<u64> = blocks
            .iter()
            .flat_map(|b| (0..b.len()).map(|r| b.hash(r)))
            .collect();
        let mut expected = hashes[2000..].to_vec();
        expected.extend_from_slice(&hashes[..2000]);
        assert_eq!(
            back, expected,
            "the rows in memory, then the spilled ones as they came"
        );
    }

    /// How a date's rows were held before its merge: `Memory` only, spilled `Whole` (it fitted
    /// one unit), spilled `Cut` by bucket, or spilled whole and then, grown, cut.
    #[derive(Debug, Clone, Copy, PartialEq)]
    enum Held {
        Memory,
        Whole,
        Cut,
        WholeThenCut,
    }

    /// Every row comes back exactly once, equal hashes in the same unit, each unit within
    /// the limit, whether the rows stayed in memory, spilled whole, cut, or both.
    #[test]
    fn units_hold_every_row_once_within_the_limit() {
        let spill = SpillDir::new(None);
        // Spread over the hash space, plus a run of one repeated hash.
        let hashes: Vec<u64> = (0..4000u64)
            .map(|i| i.wrapping_mul(0x9e37_79b9_7f4a_7c15))
            .chain(std::iter::repeat_n(7u64 << 60, 300))
            .collect();
        let one_block_bytes = block(hashes.iter().copied()).heap_bytes();
        for held in [Held::Memory, Held::Whole, Held::Cut, Held::WholeThenCut] {
            for limit in [usize::MAX, 4096] {
                let mut rows = DateRows::default();
                rows.add(block(hashes[..1500].iter().copied()));
                if held != Held::Memory {
                    let whole_up_to = if held == Held::Cut { 0 } else { usize::MAX };
                    rows.spill(&spill, whole_up_to).unwrap();
                }
                rows.add(block(hashes[1500..3000].iter().copied()));
                if held == Held::WholeThenCut {
                    rows.spill(&spill, 0).unwrap();
                }
                assert_eq!(
                    rows.spilled_by_bucket(),
                    matches!(held, Held::Cut | Held::WholeThenCut)
                );
                rows.add(block(hashes[3000..].iter().copied()));
                check_units(
                    rows.into_units(limit, spill.clone(), 2).unwrap(),
                    &hashes,
                    limit,
                    one_block_bytes,
                    held,
                );
            }
        }
        assert!(spill.bytes_written() > 0);
    }

    fn check_units(units: Units, hashes: &[u64], limit: usize, one_block_bytes: usize, held: Held) {
        let units = drain(units);
        let mut all: Vec<u64> = units.iter().flatten().copied().collect();
        all.sort();
        let mut expected = hashes.to_vec();
        expected.sort();
        assert_eq!(all, expected, "{held:?}, limit {limit}");
        if limit == usize::MAX {
            assert_eq!(units.len(), 1);
        } else {
            assert!(units.len() > 16, "cut deeper than one level: {}", units.len());
            let repeated = units.iter().filter(|u| u.contains(&(7u64 << 60))).count();
            assert_eq!(repeated, 1, "equal hashes stay together");
            assert!(one_block_bytes > 4096);
        }
    }
}
