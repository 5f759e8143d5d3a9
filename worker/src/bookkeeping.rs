//! Where lakeload keeps its own objects under a table's root: all under one folder, none of
//! them ending in `.parquet`, so no reader of the table mistakes them for data, and a run's
//! ownership check can tell them from a user's objects at a glance. A run's objects are
//! named by its run id.

use chrono::{DateTime, Utc};

/// A new run id: sortable by start time, unique enough to never collide in one table.
pub fn new_run_id(now: DateTime<Utc>) -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(now.timestamp_nanos_opt().unwrap_or_default() as u128);
    h.write_u32(std::process::id());
    format!(
        "{}-{:06x}",
        now.format("%Y%m%dT%H%M%S%3fZ"),
        h.finish() & 0xff_ffff
    )
}

/// The folder of lakeload's own objects under the table root.
pub const META_DIR: &str = "_lakeload";

/// The table's lock (`lock`).
pub const LOCK_KEY: &str = "_lakeload/lock";

/// The table's state: the files processed and the objects the table owns (`state`).
pub const STATE_KEY: &str = "_lakeload/state.json";

/// The folder of the runs' summaries, one `<run id>.json` each.
pub const RUNS_DIR: &str = "_lakeload/runs/";

/// The summary of one run.
pub fn summary_key(run_id: &str) -> String {
    format!("{RUNS_DIR}{run_id}.json")
}

/// The log of one run.
pub fn log_key(run_id: &str) -> String {
    format!("{META_DIR}/logs/{run_id}.log")
}

/// The rejected lines of one run, with their reasons.
pub fn rejects_key(run_id: &str) -> String {
    format!("{META_DIR}/rejects/{run_id}.jsonl.gz")
}

/// The object one run writes to check that the store honours conditional writes.
pub fn probe_key(run_id: &str) -> String {
    format!("{META_DIR}/probe-{run_id}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_key_is_under_the_bookkeeping_folder_and_none_reads_as_data() {
        let id = "20260101T000000000Z-abcdef";
        for key in [
            LOCK_KEY.to_string(),
            STATE_KEY.to_string(),
            summary_key(id),
            log_key(id),
            rejects_key(id),
            probe_key(id),
        ] {
            assert!(key.starts_with(&format!("{META_DIR}/")), "{key}");
            assert!(!key.ends_with(".parquet"), "{key}");
        }
        assert!(summary_key(id).starts_with(RUNS_DIR));
    }
}
