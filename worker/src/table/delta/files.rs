//! The names of the data files a run writes: unique to the attempt (a pod Kubernetes retries
//! keeps its run id, so the run id alone would name the files a killed attempt already
//! wrote), with the run readable in them.

use chrono::Utc;

/// The name of a data file an attempt of run `run_id` writes: unique to the attempt, the run
/// readable in it.
pub(super) fn data_file_name(run_id: &str, attempt: &str) -> String {
    format!("{run_id}.{attempt}.snappy.parquet")
}

/// The run that wrote a data file named `name` ([`data_file_name`]; tables written before
/// attempts named files have `<run id>.snappy.parquet`).
pub(super) fn run_of_data_file(name: &str) -> &str {
    let stem = name.trim_end_matches(".snappy.parquet");
    match stem.rsplit_once('.') {
        Some((run_id, attempt)) if is_attempt(attempt) => run_id,
        _ => stem,
    }
}

const ATTEMPT_LEN: usize = 8;

fn is_attempt(s: &str) -> bool {
    s.len() == ATTEMPT_LEN
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// A new attempt id: 8 hex digits from the clock, the process and the process's random
/// state, so two attempts of one run (a pod and its retry) never share one.
pub(super) fn new_attempt() -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_i64(Utc::now().timestamp_nanos_opt().unwrap_or_default());
    h.write_u32(std::process::id());
    format!("{:08x}", h.finish() as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_files_name_their_attempt_and_their_run() {
        let (a, b) = (new_attempt(), new_attempt());
        assert!(is_attempt(&a) && is_attempt(&b));
        let first = data_file_name("etlrun-nightly-7f3a", &a);
        assert_eq!(run_of_data_file(&first), "etlrun-nightly-7f3a");
        // Run ids may hold dots; files written before attempts had none.
        assert_eq!(run_of_data_file(&data_file_name("v1.2", &b)), "v1.2");
        assert_eq!(
            run_of_data_file("20240101T000000Z-abc123.snappy.parquet"),
            "20240101T000000Z-abc123"
        );
    }
}
