//! `rollback`'s table step: a new version whose files, metadata and recorded settings are an
//! older version's (a Delta `RESTORE`), prepared first (so the caller can check what it would
//! lose) and then committed.

use super::conflict::ReadSet;
use super::log::{Snapshot, same_vector};
use super::replay::{partitions_of, read_commit, recorded_run, replay_runs};
use super::rules::is_append_only;
use super::stage::engine_info;
use super::transaction::StagedCommit;
use super::{DeltaTransaction, run_files, txn_app_id};
use crate::config::Mode;
use crate::error::{Error, Result};
use crate::state::State;

/// What a rollback committed.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Restored {
    pub restored_version: u64,
    pub version: u64,
    pub files_added: usize,
    pub files_removed: usize,
    /// Source files loaded after the restored version that the source no longer has (a
    /// rollback with `--allow-missing`): their rows left the table.
    pub missing_sources: Vec<String>,
    /// The state as of the restored version: the source files then loaded, its partitions.
    #[serde(skip)]
    pub state: State,
}

/// A rollback ready to commit: its transaction, and what it restores.
pub struct PreparedRestore {
    transaction: StagedCommit,
    pub restored: Restored,
}

impl DeltaTransaction {
    /// The new version whose files, metadata and recorded settings are those of version `to`
    /// (as the transaction began), with the state as of `to`; nothing is written yet.
    pub async fn prepare_restore(&self, to: u64, run_id: &str) -> Result<PreparedRestore> {
        let latest = self
            .run()
            .snapshot
            .version
            .ok_or_else(|| Error::Config("the Delta table has no versions yet".into()))?;
        if to >= latest {
            return Err(Error::Config(format!(
                "--to-version {to}: the table's versions are 0 to {latest} ({latest} is the current \
                 one); roll back to an earlier one"
            )));
        }
        // Version `to` as its commits left it (every commit is kept; checkpoints only spare
        // replaying them), read one at a time: its live files and metadata (no tombstones:
        // a restore adds and removes only live files), and what lakeload's commits record of
        // their runs.
        let mut then = Snapshot::default();
        let mut runs = Vec::new();
        for version in 0..=to {
            let actions = read_commit(&self.storage, version).await?;
            runs.extend(recorded_run(&actions)?);
            then.apply(version, actions)?;
            then.tombstones.clear();
        }
        let mut as_of = State::default();
        replay_runs(&self.storage, &mut as_of, runs).await?;
        let digest = run_files::write(&self.storage, &as_of.files).await?;
        let (transaction, adds, restored) = {
            let run = self.run();
            let files = std::mem::take(&mut as_of.files);
            let table_id = run.snapshot.metadata.as_ref().map_or("", |m| m.id.as_str());
            // A restore replaces the whole table: any other writer's change to it conflicts.
            let read = ReadSet {
                mode: Mode::Full,
                column: self.partition_name().to_string(),
                dates: Default::default(),
                files: run.snapshot.files.keys().cloned().collect(),
                app_id: txn_app_id(table_id),
                what: "rollback",
            };
            let commit_info = serde_json::json!({
                "operation": "RESTORE",
                "operationParameters": { "version": to },
                "engineInfo": engine_info(),
                "lakeload": {
                    "runId": run_id,
                    "mode": "rollback",
                    "restoredVersion": to,
                    "files": &digest,
                    "settings": &as_of.settings,
                },
            });
            let mut transaction = StagedCommit::new(table_id.to_string(), read, commit_info);
            // Version `to`'s metadata (schema, properties), when it has changed since.
            if let Some(metadata) = &then.metadata
                && run.snapshot.metadata.as_ref() != Some(metadata)
            {
                transaction.set_metadata(metadata.clone());
            }
            // A file is the same logical file only with the same deletion vector: one whose
            // vector changed since is removed and added back with its vector of then.
            let same = |a: Option<&super::log::Add>, b: &super::log::Add| {
                a.is_some_and(|a| same_vector(a.deletion_vector.as_ref(), b.deletion_vector.as_ref()))
            };
            let mut removed = 0;
            for (path, live) in &run.snapshot.files {
                if !same(then.files.get(path), live) {
                    transaction.remove(live);
                    removed += 1;
                }
            }
            let mut adds = Vec::new();
            for (path, old) in &then.files {
                if !same(run.snapshot.files.get(path), old) {
                    transaction.add(old.clone());
                    adds.push(old.key());
                }
            }
            if removed > 0 && run.snapshot.metadata.as_ref().is_some_and(is_append_only) {
                return Err(Error::Config(format!(
                    "the Delta table at {} is append-only (delta.appendOnly = true): rolling \
                     back to version {to} would remove {removed} file(s). Nothing was written. \
                     Unset the property if the table may be rolled back",
                    self.storage.root()
                )));
            }
            let state = State {
                files,
                partitions: partitions_of(&then, self.partition_name()),
                settings: as_of.settings,
                ..State::default()
            };
            let restored = Restored {
                restored_version: to,
                version: latest + 1,
                files_added: adds.len(),
                files_removed: removed,
                missing_sources: Vec::new(),
                state,
            };
            (transaction, adds, restored)
        };
        // Every file of the restored version must still be there (vacuum may have taken it).
        for key in &adds {
            if self.storage.head(key).await?.is_none() {
                return Err(Error::Config(format!(
                    "version {to} cannot be restored: its file {} was deleted (by vacuum, once it \
                     was removed for longer than the retention)",
                    self.storage.url(key)
                )));
            }
        }
        Ok(PreparedRestore {
            transaction,
            restored,
        })
    }

    /// Commits a prepared rollback through the one transaction path: at the next version,
    /// past other writers' commits that change nothing of the table (a commit that changes
    /// its files or metadata fails the rollback, nothing of it visible).
    pub async fn commit_restore(&self, prepared: PreparedRestore) -> Result<Restored> {
        let PreparedRestore {
            transaction,
            mut restored,
        } = prepared;
        let version = transaction.commit(self).await?;
        restored.version = version;
        restored.state.table_version = Some(version);
        Ok(restored)
    }
}
