//! The finished runs of each table, newest first, kept in memory: whether a run is among the
//! newest `keep_last` of its table is read from here instead of listing every `EtlRun` for
//! each finished one (which grows with the square of the history).

use std::collections::{BTreeSet, HashMap};
use std::sync::Mutex;

use kube::ResourceExt;

use crate::crd::EtlRun;
use crate::job::table_id;

/// (namespace, table id) → finished runs as (finishedAt, name), ordered oldest first.
type ByTable = HashMap<(String, String), BTreeSet<(String, String)>>;
/// (namespace, name) → (table id, finishedAt): where a run sits in [`ByTable`].
type Entries = HashMap<(String, String), (String, String)>;

#[derive(Default)]
pub struct FinishedRuns {
    inner: Mutex<(ByTable, Entries)>,
}

fn key_of(run: &EtlRun) -> (String, String) {
    (run.namespace().unwrap_or_default(), run.name_any())
}

/// Takes run `key` out of both maps, if it is there.
fn remove(by_table: &mut ByTable, entries: &mut Entries, key: &(String, String)) {
    if let Some((table, at)) = entries.remove(key)
        && let Some(set) = by_table.get_mut(&(key.0.clone(), table))
    {
        set.remove(&(at, key.1.clone()));
    }
}

impl FinishedRuns {
    /// Notes `run` as it is stored now: finished runs are recorded, others (and runs being
    /// deleted) are not.
    pub fn note(&self, run: &EtlRun) {
        let key = key_of(run);
        let finished_at = run
            .status
            .as_ref()
            .filter(|s| s.phase.is_some_and(|p| p.is_finished()))
            .map(|s| s.finished_at.clone().unwrap_or_default());
        let mut inner = self.inner.lock().expect("finished runs");
        let (by_table, entries) = &mut *inner;
        remove(by_table, entries, &key);
        if let Some(at) = finished_at
            && run.metadata.deletion_timestamp.is_none()
        {
            let table = table_id(&run.spec.target.url);
            by_table
                .entry((key.0.clone(), table.clone()))
                .or_default()
                .insert((at.clone(), key.1.clone()));
            entries.insert(key, (table, at));
        }
    }

    /// Forgets the run `namespace/name` (deleted).
    pub fn forget(&self, namespace: &str, name: &str) {
        let mut inner = self.inner.lock().expect("finished runs");
        let (by_table, entries) = &mut *inner;
        remove(by_table, entries, &(namespace.to_string(), name.to_string()));
    }

    /// Whether `run` is one of the newest `keep_last` finished runs of its table in its
    /// namespace (looks at `keep_last` entries at most).
    pub fn among_newest(&self, run: &EtlRun, keep_last: usize) -> bool {
        let (ns, name) = key_of(run);
        let inner = self.inner.lock().expect("finished runs");
        inner
            .0
            .get(&(ns, table_id(&run.spec.target.url)))
            .is_some_and(|set| set.iter().rev().take(keep_last).any(|(_, n)| *n == name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::{EtlRunStatus, Phase};

    fn finished(name: &str, at: &str, target: &str) -> EtlRun {
        let mut run = crate::crd::sample_run(name);
        run.spec.target.url = target.into();
        run.status = Some(EtlRunStatus {
            phase: Some(Phase::Succeeded),
            finished_at: Some(at.into()),
            ..Default::default()
        });
        run
    }

    #[test]
    fn the_newest_finished_runs_of_a_table_are_kept() {
        let index = FinishedRuns::default();
        let runs: Vec<EtlRun> = (0..5)
            .map(|i| finished(&format!("r{i}"), &format!("2026-01-01T00:0{i}:00Z"), "s3://out/t"))
            .collect();
        for r in &runs {
            index.note(r);
        }
        let other_table = finished("o", "2026-01-01T00:09:00Z", "s3://out/other");
        index.note(&other_table);
        let kept =
            |index: &FinishedRuns| -> Vec<bool> { runs.iter().map(|r| index.among_newest(r, 2)).collect() };
        assert_eq!(kept(&index), [false, false, false, true, true]);
        assert!(index.among_newest(&other_table, 1), "its own table's newest");
        // The newest is deleted: the next one moves up.
        index.forget("ns", "r4");
        assert_eq!(kept(&index), [false, false, true, true, false]);
        // A run noted again (a reconcile of the same status) changes nothing; a run not
        // finished any more is dropped.
        index.note(&runs[3]);
        let mut rerun = runs[2].clone();
        rerun.status = None;
        index.note(&rerun);
        assert_eq!(kept(&index), [false, true, false, true, false]);
    }
}
