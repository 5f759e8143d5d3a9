//! How `run.memory_limit` is shared out between reading, merging and encoding, and how
//! large a date's merge units are.

use crate::config::Config;

/// How `run.memory_limit` is shared out. Reading buffers rows up to half of it (the rest of
/// the process — decoders, batches in flight, polars — lives in the other half); merging
/// takes one unit per concurrent date (see [`unit_limit`]), because a unit's merge holds its
/// rows, their key tables and the kept rows' columns at once (the encoded object goes to a
/// scratch file). Measured at `512MiB`, two units merging at a time: late data peaked at
/// 416–461 MiB with units of 32 MiB, 552–559 MiB with 48 MiB ones; mostly distinct keys at
/// 435–466 and 569–595 MiB; within the bound of 640 MiB.
pub(crate) fn ingest_budget(config: &Config) -> u64 {
    config.run.memory_limit / 2
}

/// Files read at once: `run.threads`, as far as a quarter of the budget holds each reader
/// ([`crate::read::reader::READER_BYTES`]) and one batch in flight
/// ([`crate::read::reader::BATCH_BYTES`]); at least one.
pub fn reader_threads(config: &Config) -> usize {
    let each = crate::read::reader::READER_BYTES + crate::read::reader::BATCH_BYTES as u64;
    let fit = (config.run.memory_limit / 4 / each).max(1) as usize;
    config.run.threads.clamp(1, fit)
}

/// Dates merged at once: `run.threads`, but no more than the cores (more would only hold
/// more units in memory, not merge faster) and no more than 8.
pub(crate) fn merge_concurrency(config: &Config) -> usize {
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    config.run.threads.min(cores).clamp(1, 8)
}

/// The largest merge unit, in bytes of rows: half of each concurrent date's share once
/// [`PROCESS_BYTES`] are set aside, or a quarter of the whole share, whichever is larger.
pub(crate) fn unit_limit(config: &Config) -> usize {
    unit_bytes(config.run.memory_limit, merge_concurrency(config))
}

fn unit_bytes(memory_limit: u64, threads: usize) -> usize {
    let half = memory_limit as usize / 2;
    let quarter_of_share = half / threads / 4;
    let half_of_rest = half.saturating_sub(PROCESS_BYTES) / threads / 2;
    quarter_of_share.max(half_of_rest).max(4 << 10)
}

/// What the process holds besides rows whatever the limit (polars, the readers' buffers,
/// thread stacks). At `256MiB`, 20 files read by 16 threads peaked at 299–345 MiB with units
/// of half the whole share, over the bound of 320 MiB; with a quarter, at 295–312 MiB.
const PROCESS_BYTES: usize = 64 << 20;

/// Rows an encoder holds before it writes a row group short of [`crate::table`]'s row count:
/// a share of the budget beside the merge units (two dates encode at once by default).
pub(crate) fn row_group_bytes(config: &Config) -> usize {
    (config.run.memory_limit / 32) as usize
}

/// The unit limit for one date of `date_bytes` (`spilled` if some are on disk cut by key hash,
/// see [`crate::merge::spill`]), when the run holds `total_bytes` and merges on `threads`. A date
/// spilled whole (it fitted one unit) counts as one in memory: its rows come back in arrival
/// order.
///
/// Rows spilled cut by hash come back in key-hash order, so merging and encoding them in lineage order
/// visits them scattered: a unit small enough to stay in the cache is much faster (late data
/// at 512 MiB: 7.5 s with 32 MiB units, 6.4 s with 4 MiB ones), but no smaller than a
/// level-0 hash bucket of the date, since a bucket cut again is written and read once more.
///
/// A date in memory and larger than one thread's share of the run is cut finer than the
/// budget asks: its units then merge on every thread side by side and are encoded as they
/// come, where one large unit would merge, then encode, on one core. Other dates in memory
/// keep whole units (cutting costs a copy of their rows, and other dates keep the threads
/// busy).
pub(crate) fn date_unit_limit(
    budget_limit: usize,
    date_bytes: u64,
    spilled: bool,
    total_bytes: u64,
    threads: usize,
) -> usize {
    if spilled {
        let bucket = date_bytes / crate::merge::spill::BUCKETS as u64;
        return budget_limit.min((bucket + bucket / 4).max(SPILLED_UNIT) as usize);
    }
    let share = total_bytes / threads.max(1) as u64;
    if threads < 2 || date_bytes <= share {
        return budget_limit;
    }
    budget_limit.min((share / CUTS_PER_SHARE).max(MIN_CUT_UNIT) as usize)
}

/// Units of a spilled date are no larger than this when its hash buckets are smaller.
const SPILLED_UNIT: u64 = 4 << 20;

/// Units per thread's share of a date cut for parallelism: enough that the last unit's merge
/// and encoding are a small tail (one date of 16 M rows on 2 cores: 4 → 9.4 s, 8 → 8.0 s,
/// 16 → 7.6 s, 32 → 7.8 s).
const CUTS_PER_SHARE: u64 = 16;

/// Units of a date cut for parallelism are no smaller than this: below it, the fixed costs of
/// a unit (a key table, a row group) stop paying for themselves.
const MIN_CUT_UNIT: u64 = 32 << 20;

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    /// Above a few hundred MiB a unit is half of a date's share of what rows may hold; below,
    /// where the process's own memory weighs more, a quarter of the share.
    #[test]
    fn units_take_half_a_share_once_the_process_is_set_aside() {
        assert_eq!(unit_bytes(512 * MIB, 2), (48 * MIB) as usize);
        assert_eq!(unit_bytes(256 * MIB, 2), (16 * MIB) as usize);
        assert_eq!(unit_bytes(128 * MIB, 2), (8 * MIB) as usize);
        assert_eq!(unit_bytes(256 * MIB, 8), (4 * MIB) as usize);
        assert_eq!(unit_bytes(8 << 30, 2), (1008 * MIB) as usize);
    }

    /// Many similar dates keep the budget's units; one date that dominates the run is cut
    /// finer, never below the floor and never above the budget's unit.
    #[test]
    fn only_a_dominant_date_is_cut_finer() {
        let budget = 1 << 30;
        // 30 dates of 100 MiB on 2 threads: none holds a thread's share.
        assert_eq!(date_unit_limit(budget, 100 * MIB, false, 3000 * MIB, 2), budget);
        // One date of 3.2 GiB: 16 units per thread's share.
        assert_eq!(
            date_unit_limit(budget, 3200 * MIB, false, 3200 * MIB, 2),
            (100 * MIB) as usize
        );
        // A small run's one date: cut, but not below the floor.
        assert_eq!(
            date_unit_limit(budget, 40 * MIB, false, 40 * MIB, 2),
            MIN_CUT_UNIT as usize
        );
        // A tight budget's units are already small.
        assert_eq!(
            date_unit_limit(16 << 20, 3200 * MIB, false, 3200 * MIB, 2),
            16 << 20
        );
        // One thread: nothing runs beside the date, so cutting it gains nothing.
        assert_eq!(date_unit_limit(budget, 3200 * MIB, false, 3200 * MIB, 1), budget);
    }

    /// A spilled date merges in small units, but each holds at least a whole hash bucket of
    /// it, and never more than the budget allows.
    #[test]
    fn a_spilled_date_merges_in_small_units_of_whole_buckets() {
        let budget = 32 << 20;
        assert_eq!(
            date_unit_limit(budget, 40 * MIB, true, 2000 * MIB, 2),
            SPILLED_UNIT as usize
        );
        // 2 GiB spilled: a bucket is 8 MiB; a unit takes it with room to spare.
        let unit = date_unit_limit(budget, 2048 * MIB, true, 2048 * MIB, 2);
        assert_eq!(unit, (10 * MIB) as usize);
        assert_eq!(
            date_unit_limit(budget, 64 * 1024 * MIB, true, 64 * 1024 * MIB, 2),
            budget
        );
    }
}
