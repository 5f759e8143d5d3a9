//! Losing the race for a version gracefully: when another writer committed the version a run
//! was about to take, the run reads that writer's commits and checks them against what it
//! read and replaces, by the rules Delta writers share (PROTOCOL.md, delta-rs' conflict
//! checker). Nothing of it touched → the run commits at the next version. Otherwise it stops,
//! naming the other commit, with nothing visible changed.
//!
//! What conflicts with a lakeload commit:
//! - a protocol or metadata change (schema, partitioning, properties such as
//!   `delta.appendOnly`): the run wrote its files under the old ones;
//! - a remove of a file the run read or replaces (a `DELETE`, an `OPTIMIZE` of those files):
//!   the run's rows were merged with the removed file's;
//! - an add into a date the run rewrites (an incremental run), or any add of new data (a full
//!   run, which replaces everything): the run would remove or hide rows it never read;
//! - another lakeload transaction on the table.
//!
//! Blind appends to other dates, and compactions (`dataChange = false`) of files the run does
//! not touch, do not conflict.

use std::collections::BTreeSet;

use super::log::{Action, key_of_path};
use crate::config::Mode;

/// What a lakeload commit read and replaces.
pub struct ReadSet {
    pub mode: Mode,
    /// The partition column.
    pub column: String,
    /// The dates (`YYYY-MM-DD`) the run writes.
    pub dates: BTreeSet<String>,
    /// Storage keys of the live files the run read or replaces (every live file for a full
    /// run).
    pub files: BTreeSet<String>,
    /// lakeload's transaction id on the table.
    pub app_id: String,
    /// What reads it, in messages: "run", "rollback".
    pub what: &'static str,
}

/// Why another writer's commit conflicts with the run, if it does.
pub fn conflict(read: &ReadSet, actions: &[Action]) -> Option<String> {
    for action in actions {
        let reason = match action {
            Action::Protocol(_) => Some("changed the table's protocol".to_string()),
            Action::Metadata(_) => {
                Some("changed the table's metadata (schema, partitioning or properties)".to_string())
            }
            Action::Txn(txn) if txn.app_id == read.app_id => {
                Some("is another lakeload transaction on the table".to_string())
            }
            Action::Remove(remove) => {
                let key = key_of_path(&remove.path);
                read.files
                    .contains(&key)
                    .then(|| format!("removed {key}, which this run read or replaces"))
            }
            Action::Add(add) => {
                let date = add.partition_values.get(&read.column).cloned().flatten();
                match read.mode {
                    Mode::Full if add.data_change => Some(format!(
                        "added {}, which this full run would remove unread",
                        add.key()
                    )),
                    Mode::Incremental if date.as_ref().is_some_and(|d| read.dates.contains(d)) => {
                        Some(format!(
                            "added {} to {}, a date this run rewrites",
                            add.key(),
                            date.unwrap_or_default()
                        ))
                    }
                    _ => None,
                }
            }
            _ => None,
        };
        if reason.is_some() {
            return reason;
        }
    }
    None
}

/// A commit as a message names it: its operation and engine (`DELETE by
/// Apache-Spark/3.5.3 Delta-Lake/3.3.2`).
pub fn describe(actions: &[Action]) -> String {
    let info = actions.iter().find_map(|a| match a {
        Action::CommitInfo(info) => Some(info),
        _ => None,
    });
    let operation = info.and_then(|i| i["operation"].as_str()).unwrap_or("a commit");
    let engine = info
        .and_then(|i| i["engineInfo"].as_str())
        .unwrap_or("an engine its log does not name");
    format!("{operation} by {engine}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::table::delta::log::{Add, Metadata, Protocol, Remove, Txn};
    use std::collections::BTreeMap;

    fn add(path: &str, day: &str, data_change: bool) -> Add {
        Add {
            path: path.into(),
            partition_values: BTreeMap::from([("day".to_string(), Some(day.to_string()))]),
            size: 1,
            modification_time: 0,
            data_change,
            stats: None,
            tags: None,
            deletion_vector: None,
            other: BTreeMap::new(),
        }
    }

    fn read(mode: Mode) -> ReadSet {
        ReadSet {
            mode,
            column: "day".into(),
            dates: BTreeSet::from(["2024-01-02".to_string()]),
            files: BTreeSet::from(["day=2024-01-02/ours.parquet".to_string()]),
            app_id: "lakeload-t".into(),
            what: "run",
        }
    }

    #[test]
    fn appends_elsewhere_and_compactions_of_untouched_files_do_not_conflict() {
        let incremental = read(Mode::Incremental);
        let blind_append = [Action::Add(add(
            "day=2024-01-03/theirs.parquet",
            "2024-01-03",
            true,
        ))];
        assert_eq!(conflict(&incremental, &blind_append), None);
        let compaction = [
            Action::Remove(Remove::of(
                &add("day=2024-01-01/a.parquet", "2024-01-01", true),
                1,
            )),
            Action::Remove(Remove::of(
                &add("day=2024-01-01/b.parquet", "2024-01-01", true),
                1,
            )),
            Action::Add(add("day=2024-01-01/ab.parquet", "2024-01-01", false)),
            Action::Txn(Txn {
                app_id: "spark".into(),
                version: 3,
                last_updated: None,
            }),
            Action::CommitInfo(serde_json::json!({ "operation": "OPTIMIZE" })),
        ];
        assert_eq!(conflict(&incremental, &compaction), None);
    }

    #[test]
    fn touching_what_the_run_read_or_replaces_conflicts() {
        let incremental = read(Mode::Incremental);
        let delete = [Action::Remove(Remove::of(
            &add("day=2024-01-02/ours.parquet", "2024-01-02", true),
            1,
        ))];
        assert!(conflict(&incremental, &delete).unwrap().contains("ours.parquet"));
        let append_same_date = [Action::Add(add(
            "day=2024-01-02/theirs.parquet",
            "2024-01-02",
            true,
        ))];
        assert!(
            conflict(&incremental, &append_same_date)
                .unwrap()
                .contains("rewrites")
        );
        let full = read(Mode::Full);
        let blind_append = [Action::Add(add(
            "day=2024-01-03/theirs.parquet",
            "2024-01-03",
            true,
        ))];
        assert!(conflict(&full, &blind_append).unwrap().contains("full run"));
        assert!(conflict(&incremental, &[Action::Protocol(Protocol::lakeload())]).is_some());
        let metadata = Metadata {
            id: "t".into(),
            name: None,
            description: None,
            format: crate::table::delta::log::Format {
                provider: "parquet".into(),
                options: BTreeMap::new(),
            },
            schema_string: "{}".into(),
            partition_columns: vec![],
            configuration: BTreeMap::new(),
            created_time: None,
            other: BTreeMap::new(),
        };
        assert!(
            conflict(&incremental, &[Action::Metadata(metadata)])
                .unwrap()
                .contains("metadata")
        );
        let ours = Action::Txn(Txn {
            app_id: "lakeload-t".into(),
            version: 9,
            last_updated: None,
        });
        assert!(conflict(&incremental, &[ours]).is_some());
    }

    #[test]
    fn a_commit_is_named_by_its_operation_and_engine() {
        let info =
            serde_json::json!({ "operation": "DELETE", "engineInfo": "Apache-Spark/3.5.3 Delta-Lake/3.3.2" });
        assert_eq!(
            describe(&[Action::CommitInfo(info)]),
            "DELETE by Apache-Spark/3.5.3 Delta-Lake/3.3.2"
        );
        assert_eq!(describe(&[]), "a commit by an engine its log does not name");
    }
}
