//! A run's commit staged from what the run read and wrote ([`DeltaRun`]): the files it adds,
//! the live files they replace, the deletion vectors it adds, the table's metadata and
//! protocol, its `commitInfo`, and what another writer's commit is checked against
//! ([`ReadSet`]). Nothing here reads or writes storage; `transaction` commits what this stages.

use std::collections::{BTreeMap, BTreeSet};

use chrono::Utc;

use super::conflict::ReadSet;
use super::log::{Add, Format, Metadata, Protocol, schema_string};
use super::rules::kept_schema;
use super::transaction::StagedCommit;
use super::{DeltaRun, DeltaTransaction, run_files, txn_app_id};
use crate::config::Mode;

/// The table property that lets writers add deletion vectors.
const ENABLE_DELETION_VECTORS: &str = "delta.enableDeletionVectors";

impl DeltaRun {
    /// The dates (`YYYY-MM-DD` values of the partition `column`) of the files the run wrote.
    fn written_dates(&self, column: &str) -> BTreeSet<String> {
        self.written
            .iter()
            .filter_map(|a| date_of(a, column).cloned())
            .collect()
    }

    /// The live files (by key) the run read: every one for a full run, those of the dates it
    /// wrote otherwise. Another writer's commit is checked against them.
    fn read_files<'a>(
        &'a self,
        mode: Mode,
        column: &'a str,
        dates: &'a BTreeSet<String>,
    ) -> impl Iterator<Item = (&'a String, &'a Add)> + 'a {
        self.snapshot.files.iter().filter(move |(_, add)| {
            mode == Mode::Full || date_of(add, column).is_some_and(|d| dates.contains(d))
        })
    }

    /// The live files the run's commit removes: those it read, but the files it keeps (they
    /// hold none of its new rows' keys).
    fn replaced<'a>(
        &'a self,
        mode: Mode,
        column: &'a str,
        dates: &'a BTreeSet<String>,
    ) -> impl Iterator<Item = (&'a String, &'a Add)> + 'a {
        self.read_files(mode, column, dates)
            .filter(move |(key, _)| !self.kept.contains(*key))
    }
}

/// A file's stats once rows of it are deleted: its `numRecords` stay the physical count, and
/// its bounds may be wider than the rows a reader gets (`tightBounds: false`).
fn loose_bounds(stats: &str) -> String {
    match serde_json::from_str::<serde_json::Value>(stats) {
        Ok(serde_json::Value::Object(mut fields)) => {
            fields.insert("tightBounds".into(), false.into());
            serde_json::Value::Object(fields).to_string()
        }
        _ => stats.to_string(),
    }
}

/// The date (`YYYY-MM-DD`) of a file of the table partitioned by `column`.
fn date_of<'a>(add: &'a Add, column: &str) -> Option<&'a String> {
    add.partition_values.get(column).and_then(|d| d.as_ref())
}

impl DeltaTransaction {
    /// This run's commit, staged: the new files, the live files they replace (a full run
    /// replaces every live file), the table's metadata (kept as other writers left it, with
    /// lakeload's missing columns added), and on a new table its protocol.
    pub(super) fn staged_commit(&self, mode: Mode, run_id: &str, files: &run_files::Digest) -> StagedCommit {
        let run = self.run();
        let now_ms = Utc::now().timestamp_millis();
        let mut protocol = None;
        let mut metadata = match &run.snapshot.metadata {
            Some(existing) if run.snapshot.protocol.is_some() => Metadata {
                schema_string: kept_schema(&existing.schema_string, &schema_string(&self.schema)),
                partition_columns: vec![self.partition_name().to_string()],
                ..existing.clone()
            },
            _ => {
                protocol = Some(Protocol::lakeload());
                Metadata {
                    id: table_id(run_id),
                    name: None,
                    description: None,
                    format: Format {
                        provider: "parquet".into(),
                        options: BTreeMap::new(),
                    },
                    schema_string: schema_string(&self.schema),
                    partition_columns: vec![self.partition_name().to_string()],
                    configuration: BTreeMap::new(),
                    created_time: Some(now_ms),
                    other: BTreeMap::new(),
                }
            }
        };
        if self.deletion_vectors {
            // The table gains the feature (and keeps it: lakeload never turns it off).
            let current = protocol.as_ref().or(run.snapshot.protocol.as_ref());
            if !current.is_some_and(Protocol::has_deletion_vectors) {
                protocol = Some(
                    current.map_or_else(Protocol::with_deletion_vectors, Protocol::adding_deletion_vectors),
                );
            }
            metadata
                .configuration
                .insert(ENABLE_DELETION_VECTORS.into(), "true".into());
        }
        let rows: i64 = run.written.iter().filter_map(Add::live_rows).sum();
        let (operation, parameters, recorded_mode) = match run.rearranges_only {
            true => ("OPTIMIZE", serde_json::json!({}), "optimize".to_string()),
            false => (
                "WRITE",
                serde_json::json!({
                    "mode": if mode == Mode::Full { "Overwrite" } else { "Append" },
                    "partitionBy": serde_json::to_string(&[self.partition_name()]).unwrap_or_default(),
                }),
                mode.to_string(),
            ),
        };
        let commit_info = serde_json::json!({
            "operation": operation,
            "operationParameters": parameters,
            "engineInfo": engine_info(),
            "lakeload": {
                "runId": run_id,
                "mode": recorded_mode,
                "rowsWritten": rows,
                "datesWritten": run.written.len(),
                "settings": self.settings,
                // The source files processed (their list's digest), so the state can be
                // rebuilt from the log.
                "files": files,
            },
        });
        let mut transaction = StagedCommit::new(metadata.id.clone(), self.read_set(&run, mode), commit_info);
        if run.rearranges_only {
            transaction.changing_no_data();
        }
        if let Some(protocol) = protocol {
            transaction.set_protocol(protocol);
        }
        if run.snapshot.metadata.as_ref() != Some(&metadata) {
            transaction.set_metadata(metadata);
        }
        let dates = run.written_dates(self.partition_name());
        for (_, live) in run.replaced(mode, self.partition_name(), &dates) {
            transaction.remove(live);
        }
        for add in &run.written {
            transaction.add(add.clone());
        }
        // A file with more rows deleted is another logical file: the old one removed (with
        // its old vector), the file added back with the new one.
        for (key, vector) in &run.vectors {
            if let Some(live) = run.snapshot.files.get(key) {
                transaction.remove(live);
                transaction.add(Add {
                    deletion_vector: Some(vector.clone()),
                    stats: live.stats.as_deref().map(loose_bounds),
                    data_change: true,
                    ..live.clone()
                });
            }
        }
        transaction
    }

    /// What this run read and replaces (see `conflict`).
    fn read_set(&self, run: &DeltaRun, mode: Mode) -> ReadSet {
        let column = self.partition_name().to_string();
        let dates = run.written_dates(&column);
        let files = run
            .read_files(mode, &column, &dates)
            .map(|(key, _)| key.clone())
            .collect();
        let app_id = run
            .snapshot
            .metadata
            .as_ref()
            .map_or(String::new(), |m| txn_app_id(&m.id));
        ReadSet {
            mode,
            column,
            dates,
            files,
            app_id,
            what: if run.rearranges_only { "optimize" } else { "run" },
        }
    }
}

/// What lakeload's commits name as their engine.
pub(super) fn engine_info() -> String {
    format!("lakeload/{}", env!("CARGO_PKG_VERSION"))
}

/// A table id in the shape Delta readers expect (a GUID), unique enough: from the run that
/// created the table and this process's random state.
fn table_id(run_id: &str) -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut words = [0u64; 2];
    for (i, word) in words.iter_mut().enumerate() {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write(run_id.as_bytes());
        h.write_usize(i);
        *word = h.finish();
    }
    let hex = format!("{:016x}{:016x}", words[0], words[1]);
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}
