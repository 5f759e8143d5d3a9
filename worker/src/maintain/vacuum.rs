//! `lakeload vacuum`: deletes the data files of a `delta`-format table that no version within
//! the retention reads any more. A file leaves the current version when a run replaces it;
//! versions committed before that still read it, so it is deleted only once it was removed
//! longer ago than the retention. Files the current version reads are never deleted, and
//! neither is anything the table did not write: a file no commit of its log added goes only
//! if a run announced it in the state (a run that stopped, or lost the race for its version,
//! before its commit) and it is older than the retention.
//! Vacuum holds the table's lock, so no run is writing files it has not committed yet.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::commit::{commit_state, under_lock};
use crate::config::{Config, TableFormat};
use crate::error::{Error, Result};
use crate::state::{JsonStateStore, StateStore};
use crate::table::delta::log::Snapshot;
use crate::table::delta::replay::{load_snapshot, removed_before};
use crate::table::delta::retention::{self, RETENTION_PROPERTY};

#[derive(Debug, Clone, Serialize)]
pub struct Vacuumed {
    pub table_url: String,
    pub retain_hours: f64,
    pub dry_run: bool,
    /// Files deleted (or, on a dry run, that would be).
    pub deleted: Vec<String>,
    pub bytes: u64,
    /// Files kept: read by the current version or removed within the retention.
    pub kept: usize,
}

/// `168h`, `7d`, `30m`, `0h` → a duration.
pub fn parse_retention(text: &str) -> std::result::Result<Duration, String> {
    let text = text.trim();
    let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let n: u64 = number
        .parse()
        .map_err(|_| format!("{text:?}: expected a number and a unit, e.g. 168h or 7d"))?;
    let seconds = match unit {
        "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        "d" => n * 86_400,
        _ => return Err(format!("{text:?}: the unit must be s, m, h or d, e.g. 168h")),
    };
    Ok(Duration::from_secs(seconds))
}

/// The retention the table sets (`delta.deletedFileRetentionDuration`), or Delta's default.
fn table_retention(snapshot: &Snapshot, table_url: &str) -> Result<Duration> {
    retention::of(snapshot.metadata.as_ref()).map_err(|why| {
        Error::Config(format!(
            "the Delta table at {table_url} sets {RETENTION_PROPERTY} = {why}; fix the \
             property, or pass --retain"
        ))
    })
}

/// The retention a vacuum uses: `asked` (`--retain`), else the table's. Shorter than the
/// table's only with `force`: readers of versions within the table's retention would lose
/// their files.
fn chosen_retention(asked: Option<Duration>, table: Duration, force: bool) -> Result<Duration> {
    let hours = |d: Duration| d.as_secs_f64() / 3600.0;
    match asked {
        None => Ok(table),
        Some(asked) if asked < table && !force => Err(Error::Config(format!(
            "--retain {}h is shorter than the table's retention of {}h ({RETENTION_PROPERTY}, \
             7 days unless the table sets it): readers of older versions within it would lose \
             their files. Pass --force to delete them anyway",
            hours(asked),
            hours(table)
        ))),
        Some(asked) => Ok(asked),
    }
}

/// Vacuums the table: `retain` (`--retain`) overrides the table's retention, and must not be
/// shorter unless `force`.
pub async fn vacuum(
    config: &Config,
    retain: Option<Duration>,
    force: bool,
    dry_run: bool,
) -> Result<Vacuumed> {
    if config.target.format != TableFormat::Delta {
        return Err(Error::Config(
            "target.format = parquet replaces each date's object in place and keeps no old \
             files; vacuum is for target.format = delta tables"
                .into(),
        ));
    }
    let storage = crate::storage::open(&config.target.url, &config.aws).await?;
    let run_id = format!("vacuum-{}", crate::bookkeeping::new_run_id(Utc::now()));
    let lease = Duration::from_secs(config.lock.lease_seconds);
    under_lock(&storage, &run_id, lease, async |lock| {
        let snapshot = load_snapshot(&storage).await?.snapshot;
        let retain = chosen_retention(
            retain,
            table_retention(&snapshot, &storage.root().to_string())?,
            force,
        )?;
        let cutoff = Utc::now() - chrono::Duration::from_std(retain).unwrap_or(chrono::TimeDelta::MAX);
        // A file a commit added is live, or removed: a tombstone within the retention, or
        // past it (found in the commits after the last vacuum).
        let vector_files = snapshot.vector_files();
        let ever_added = |key: &str| {
            snapshot.files.contains_key(key)
                || snapshot.tombstones.contains_key(key)
                || vector_files.contains(key)
        };
        let (mut deletable, kept) = deletable_files(&snapshot, cutoff);
        let states = JsonStateStore::new(storage.clone());
        let loaded = states.load().await?;
        let (expired, covered) = removed_before(
            &storage,
            &snapshot,
            loaded.state.vacuumed_through,
            cutoff.timestamp_millis(),
        )
        .await?;
        deletable.extend(expired);
        let listing = storage.list("").await?;
        // Files of runs that stopped or lost the race before their commit: announced in the
        // state (so the table's own), added by no commit.
        let announced = &loaded.state.unconfirmed;
        for object in &listing {
            if announced.contains(&object.key) && !ever_added(&object.key) && object.last_modified < cutoff {
                deletable.push(object.key.clone());
            }
        }
        deletable.sort();
        deletable.dedup();
        let present: BTreeMap<String, u64> = listing.into_iter().map(|o| (o.key, o.size)).collect();
        let mut out = Vacuumed {
            table_url: storage.root().to_string(),
            retain_hours: retain.as_secs_f64() / 3600.0,
            dry_run,
            deleted: Vec::new(),
            bytes: 0,
            kept,
        };
        for path in deletable {
            let Some(&size) = present.get(&path) else {
                continue;
            };
            if !dry_run {
                let url = storage.url(&path);
                lock.fenced(&url, async { Ok(storage.delete(&path).await?) })
                    .await?;
            }
            out.bytes += size;
            out.deleted.push(path);
        }
        // The announcements of files now gone, or never written (a run that failed before
        // writing them; under the lock no run is writing): nothing is left for them to name.
        // And the log is covered up to `covered`: the next vacuum reads only what follows.
        let never_written = announced
            .iter()
            .map(String::as_str)
            .filter(|k| !present.contains_key(*k));
        let gone: std::collections::BTreeSet<&str> = out
            .deleted
            .iter()
            .map(String::as_str)
            .chain(never_written)
            .collect();
        let pruned = announced.iter().any(|k| gone.contains(k.as_str()));
        // A table without a state (lost) gets none from vacuum: the next run rebuilds it.
        if !dry_run && loaded.etag.is_some() && (pruned || covered != loaded.state.vacuumed_through) {
            let mut state = loaded.state.clone();
            state.unconfirmed.retain(|k| !gone.contains(k.as_str()));
            state.vacuumed_through = covered;
            state.updated_at = Some(Utc::now());
            commit_state(lock, &states, &state, loaded.etag.as_deref()).await?;
        }
        Ok(out)
    })
    .await
}

/// The files the table removed before `cutoff` and did not add back, and how many files it
/// keeps (read by the current version or removed since `cutoff`).
fn deletable_files(snapshot: &Snapshot, cutoff: DateTime<Utc>) -> (Vec<String>, usize) {
    let cutoff_ms = cutoff.timestamp_millis();
    let mut deletable = Vec::new();
    let mut kept = snapshot.files.len();
    for (path, removed) in &snapshot.tombstones {
        // A remove without a time (neither its own nor its commit's) is of unknown age: kept.
        if removed.deletion_timestamp.is_some_and(|at| at < cutoff_ms) {
            deletable.push(path.clone());
        } else {
            kept += 1;
        }
    }
    (deletable, kept)
}

pub fn format_vacuumed(v: &Vacuumed) -> String {
    let verb = if v.dry_run { "would delete" } else { "deleted" };
    let mut out = format!(
        "{verb} {} file(s), {} (removed more than {}h ago); {} file(s) kept\n",
        v.deleted.len(),
        crate::report::bytes(v.bytes),
        v.retain_hours,
        v.kept
    );
    for path in &v.deleted {
        out += &format!("  {path}\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::table::delta::log::fixtures::{add, remove};
    use crate::table::delta::retention::parse_interval;

    #[test]
    fn only_files_removed_before_the_retention_go() {
        let commits = vec![
            (0, vec![add("a"), add("b")]),
            (1, vec![remove("a", 1_000), add("c")]),
            (2, vec![remove("b", 5_000), add("d")]),
            // Removed long ago, then added back (a rollback): live again.
            (3, vec![remove("c", 1_000), add("c")]),
        ];
        let mut snapshot = Snapshot::default();
        for (version, actions) in commits {
            snapshot.apply(version, actions).unwrap();
        }
        let cutoff = DateTime::from_timestamp_millis(3_000).unwrap();
        let (deletable, kept) = deletable_files(&snapshot, cutoff);
        assert_eq!(
            deletable,
            ["a"],
            "b was removed within the retention; c and d are live"
        );
        assert_eq!(kept, 3);
    }

    #[test]
    fn the_table_property_sets_the_retention_and_shorter_needs_force() {
        let week = Duration::from_secs(7 * 86_400);
        assert_eq!(parse_interval("interval 1 week"), Ok(week));
        assert_eq!(parse_interval("INTERVAL 168 HOURS"), Ok(week));
        assert_eq!(parse_interval("6 days 24 hours"), Ok(week));
        assert_eq!(
            parse_interval("interval 30 minutes"),
            Ok(Duration::from_secs(1800))
        );
        assert!(parse_interval("interval 7").is_err());
        assert!(parse_interval("interval 7 fortnights").is_err());
        assert_eq!(chosen_retention(None, week, false).unwrap(), week);
        let day = Duration::from_secs(86_400);
        let refused = chosen_retention(Some(day), week, false).unwrap_err().to_string();
        assert!(
            refused.contains("--force") && refused.contains(RETENTION_PROPERTY),
            "{refused}"
        );
        assert_eq!(chosen_retention(Some(day), week, true).unwrap(), day);
        assert_eq!(chosen_retention(Some(2 * week), week, false).unwrap(), 2 * week);
    }

    #[test]
    fn retention_is_a_number_and_a_unit() {
        assert_eq!(parse_retention("168h"), Ok(Duration::from_secs(168 * 3600)));
        assert_eq!(parse_retention("7d"), Ok(Duration::from_secs(7 * 86_400)));
        assert_eq!(parse_retention("0h"), Ok(Duration::ZERO));
        assert!(parse_retention("7").unwrap_err().contains("unit"));
        assert!(parse_retention("h").is_err());
    }
}
