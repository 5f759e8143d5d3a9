//! `lakeload rollback --to-version N`: a new version of a `delta`-format table whose files and
//! metadata are version N's (history is kept: the versions after N stay readable until
//! vacuumed), and the state as of N (its source files and settings), so the next incremental
//! run loads again the files loaded after N. Those files must still be in the source, or their
//! rows would silently leave the table: each is looked up first, and a rollback that would lose
//! some is refused unless `--allow-missing`.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;

use crate::commit::ownership::some_keys;
use crate::commit::{commit_state, under_lock};
use crate::config::{Config, TableFormat};
use crate::error::{Error, Result};
use crate::state::settings::TableSettings;
use crate::state::{JsonStateStore, STATE_VERSION, State, StateStore};
use crate::storage::DynStorage;
use crate::table::{DeltaTable, delta::Restored};

pub async fn rollback(config: &Config, to_version: u64, allow_missing: bool) -> Result<Restored> {
    if config.target.format != TableFormat::Delta {
        return Err(Error::Config(
            "target.format = parquet replaces each date's object in place and keeps no versions; \
             rollback needs target.format = delta"
                .into(),
        ));
    }
    let storage = crate::storage::open(&config.target.url, &config.aws).await?;
    let source = crate::storage::open(&config.source.url, &config.aws).await?;
    let run_id = format!("rollback-{}", crate::bookkeeping::new_run_id(Utc::now()));
    let lease = Duration::from_secs(config.lock.lease_seconds);
    under_lock(&storage, &run_id, lease, async |lock| {
        let states = JsonStateStore::new(storage.clone());
        let loaded = states.load().await?;
        let settings = serde_json::to_value(TableSettings::of(config)).ok();
        let table = DeltaTable::new(storage.clone(), Arc::new(config.schema.clone()))
            .recording_settings(settings)
            .begin_delta(&run_id)
            .await?;
        let prepared = table.prepare_restore(to_version, &run_id).await?;
        let missing = missing_sources(&source, &loaded.state, &prepared.restored.state).await?;
        if !missing.is_empty() && !allow_missing {
            return Err(Error::Config(format!(
                "rolling back to version {to_version} hands {} source file(s) loaded since back to \
                 the next incremental run, but they are gone from {}: {}. Their rows would leave \
                 the table for good. Nothing was written. Restore them to the source, or pass \
                 --allow-missing to roll back without them",
                missing.len(),
                config.source.url,
                some_keys(missing.iter().map(String::as_str), 5)
            )));
        }
        let root = storage.root().to_string();
        let mut restored = lock.fenced(&root, table.commit_restore(prepared)).await?;
        // The state as of the restored version: its files, partitions and settings (the
        // current ones when version N's commit recorded none), and what describes the store.
        let mut state = restored.state.clone();
        state.settings = state.settings.or(loaded.state.settings.clone());
        state.store = loaded.state.store.clone();
        // A file any kept commit added is the log's to keep (live, or read by a version within
        // the retention): no announcement may name it, or a full run would delete it as an
        // orphan of a crashed run.
        state.unconfirmed = loaded.state.unconfirmed.clone();
        state.unconfirmed.retain(|key| !table.recorded_in_log(key));
        state.version = STATE_VERSION;
        state.updated_at = Some(Utc::now());
        state.last_run_id = Some(run_id.clone());
        commit_state(lock, &states, &state, loaded.etag.as_deref()).await?;
        restored.missing_sources = missing;
        Ok(restored)
    })
    .await
}

/// The source files the table holds now that it will not hold once rolled back (loaded after
/// the version restored), which the source no longer has: the next incremental run cannot
/// load them again.
async fn missing_sources(source: &DynStorage, now: &State, then: &State) -> Result<Vec<String>> {
    let kept: std::collections::BTreeSet<&str> = then.files.iter().map(|f| f.key.as_str()).collect();
    let mut missing = Vec::new();
    for file in now.files.iter().filter(|f| !kept.contains(f.key.as_str())) {
        if source.head(&file.key).await?.is_none() {
            missing.push(file.key.clone());
        }
    }
    Ok(missing)
}

/// What a rollback did, for the terminal.
pub fn format_restored(r: &Restored) -> String {
    let mut out = format!(
        "version {} restores version {}: {} file(s) back, {} removed; the next incremental run \
         loads the files loaded after version {} again\n",
        r.version, r.restored_version, r.files_added, r.files_removed, r.restored_version
    );
    if !r.missing_sources.is_empty() {
        out += &format!(
            "  {} of them are gone from the source (--allow-missing): their rows left the table\n",
            r.missing_sources.len()
        );
        for key in &r.missing_sources {
            out += &format!("    {key}\n");
        }
    }
    out
}
