//! One commit to the log in the making, the one way anything lakeload does becomes a version
//! of the table (runs, rollbacks, and later maintenance), as delta-rs keeps one path from its
//! commit builder through the prepared commit to post-commit work:
//!
//! 1. **Stage**: the protocol and metadata the version sets (when they change), the files it
//!    removes and adds, what it records in `commitInfo`, and what it read ([`ReadSet`]).
//! 2. **Commit**: the actions as the next version, created only if absent.
//! 3. **Lose a race gracefully**: when another writer took that version, its commits are read
//!    and checked against what was read (`conflict`); nothing touched → the next version, up to
//!    [`MAX_COMMIT_ATTEMPTS`]; otherwise [`Error::Conflict`] naming the other commit, with
//!    nothing of this transaction visible.
//! 4. **Post-commit**: a checkpoint when one is due, best effort (the version stands whatever
//!    happens to it).
//!
//! The caller holds the table's lock around all of it and writes lakeload's state after it
//! (`crate::commit`).

use chrono::Utc;

use super::conflict::{self, ReadSet};
use super::log::{Action, Add, Metadata, Protocol, Remove};
use super::replay::{log_versions, read_commits};
use super::{DeltaTransaction, next_txn};
use crate::error::{Error, Result};

/// Versions a transaction tries before giving up on a table other writers keep committing to.
const MAX_COMMIT_ATTEMPTS: usize = 20;

/// A staged commit.
pub(super) struct StagedCommit {
    protocol: Option<Protocol>,
    metadata: Option<Metadata>,
    /// Live files the commit removes (dated when it is made).
    removes: Vec<Add>,
    adds: Vec<Add>,
    /// The table's id, which names lakeload's `txn` on it.
    table_id: String,
    /// `commitInfo` without its timestamp (set when committed).
    commit_info: serde_json::Value,
    read: ReadSet,
    /// `false` for a commit that only rearranges rows (a compaction): its removes and adds
    /// say so.
    data_change: bool,
}

impl StagedCommit {
    /// A transaction on the table `table_id` that read `read`, recording `commit_info`.
    pub(super) fn new(table_id: String, read: ReadSet, commit_info: serde_json::Value) -> Self {
        StagedCommit {
            protocol: None,
            metadata: None,
            removes: Vec::new(),
            adds: Vec::new(),
            table_id,
            commit_info,
            read,
            data_change: true,
        }
    }

    /// The commit rewrites rows without changing them (`dataChange = false` on its removes
    /// and adds, as PROTOCOL.md asks of a compaction).
    pub(super) fn changing_no_data(&mut self) {
        self.data_change = false;
    }

    /// Sets the table's protocol (a new table).
    pub(super) fn set_protocol(&mut self, protocol: Protocol) {
        self.protocol = Some(protocol);
    }

    /// Sets the table's metadata.
    pub(super) fn set_metadata(&mut self, metadata: Metadata) {
        self.metadata = Some(metadata);
    }

    pub(super) fn remove(&mut self, live: &Add) {
        self.removes.push(live.clone());
    }

    pub(super) fn add(&mut self, add: Add) {
        self.adds.push(add);
    }

    /// Whether the transaction changes nothing in the table (no version is written for it).
    pub(super) fn is_empty(&self) -> bool {
        self.protocol.is_none() && self.metadata.is_none() && self.removes.is_empty() && self.adds.is_empty()
    }

    /// The commit's actions on top of `table`'s snapshot, committed at `now_ms`.
    fn actions(&self, table: &DeltaTransaction, now_ms: i64) -> Vec<Action> {
        let txn = next_txn(&table.run().snapshot, &self.table_id, now_ms);
        let mut info = self.commit_info.clone();
        info["timestamp"] = now_ms.into();
        let mut actions = Vec::with_capacity(self.removes.len() + self.adds.len() + 4);
        actions.extend(self.protocol.clone().map(Action::Protocol));
        actions.extend(self.metadata.clone().map(Action::Metadata));
        actions.extend(self.removes.iter().map(|live| {
            Action::Remove(Remove {
                data_change: self.data_change,
                ..Remove::of(live, now_ms)
            })
        }));
        actions.extend(self.adds.iter().map(|add| {
            Action::Add(Add {
                data_change: self.data_change && add.data_change,
                ..add.clone()
            })
        }));
        actions.push(Action::Txn(txn));
        actions.push(Action::CommitInfo(info));
        actions
    }

    /// Commits at the version after `table`'s snapshot, past other writers' commits that do
    /// not conflict; then writes a checkpoint when one is due. Returns the version.
    pub(super) async fn commit(self, table: &DeltaTransaction) -> Result<u64> {
        for _ in 0..MAX_COMMIT_ATTEMPTS {
            let version = table.run().snapshot.version.map_or(0, |v| v + 1);
            let actions = self.actions(table, Utc::now().timestamp_millis());
            if table.put_commit(version, actions).await? {
                table.checkpoint_if_due().await;
                return Ok(version);
            }
            self.take_in_winners(table, version).await?;
        }
        Err(Error::Conflict(format!(
            "other writers kept committing to the Delta table at {} first ({MAX_COMMIT_ATTEMPTS} \
             versions in a row); nothing of this transaction was committed, its files are left \
             for vacuum. Run it again",
            table.storage.root()
        )))
    }

    /// Another writer took `version` first: reads its commits (and any after), and takes
    /// them into the table's snapshot when none touches what was read, so the transaction
    /// commits at the next version; otherwise fails naming the commit.
    async fn take_in_winners(&self, table: &DeltaTransaction, version: u64) -> Result<()> {
        let storage = &table.storage;
        let mut versions: Vec<u64> = log_versions(storage)
            .await?
            .into_iter()
            .filter(|v| *v >= version)
            .collect();
        if versions.first() != Some(&version) {
            versions.insert(0, version);
        }
        let winners = read_commits(storage, versions).await?;
        for (theirs, actions) in &winners {
            if let Some(reason) = conflict::conflict(&self.read, actions) {
                return Err(Error::Conflict(format!(
                    "version {theirs} of the Delta table at {} was committed first by {}, which \
                     {reason}; nothing of this {} was committed (its files are left for \
                     vacuum), and the table is as that writer left it. Run again: the next run \
                     starts from it",
                    storage.root(),
                    conflict::describe(actions),
                    self.read.what
                )));
            }
        }
        let mut run = table.run();
        for (theirs, actions) in winners {
            tracing::info!(
                "version {theirs} was taken by {}; it touched nothing this {} read or replaces, \
                 so it commits after it",
                conflict::describe(&actions),
                self.read.what
            );
            run.snapshot.apply(theirs, actions)?;
        }
        Ok(())
    }
}
