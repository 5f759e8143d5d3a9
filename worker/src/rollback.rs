//! `lakeload rollback --to-version N`: a new version of a `delta`-format table whose files are
//! version N's (history is kept: the versions after N stay readable until vacuumed), and the
//! state as of N, so the next incremental run loads again the files loaded after N.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;

use crate::config::{Config, TableFormat};
use crate::error::{Error, Result};
use crate::lock::TableLock;
use crate::state::{JsonStateStore, STATE_VERSION, StateStore};
use crate::table::{DeltaTable, Table, delta::Restored};

pub async fn rollback(config: &Config, to_version: u64) -> Result<Restored> {
    if config.target.format != TableFormat::Delta {
        return Err(Error::Config(
            "target.format = parquet replaces each date's object in place and keeps no versions; \
             rollback needs target.format = delta"
                .into(),
        ));
    }
    let storage = crate::storage::open(&config.target.url, &config.aws).await?;
    let run_id = format!("rollback-{}", crate::run::new_run_id(Utc::now()));
    let lease = Duration::from_secs(config.lock.lease_seconds);
    let lock = TableLock::acquire(storage.clone(), &run_id, lease).await?;
    let outcome = async {
        let states = JsonStateStore::new(storage.clone());
        let loaded = states.load().await?;
        let table = DeltaTable::new(storage.clone(), Arc::new(config.schema.clone()));
        table.begin(&run_id).await?;
        let root = storage.root().to_string();
        let restored = lock.fenced(&root, table.restore(to_version, &run_id)).await?;
        table.checkpoint_if_due().await;
        // The state as of the restored version, keeping what describes the table itself.
        let mut state = restored.state.clone();
        state.settings = loaded.state.settings.clone();
        state.store = loaded.state.store.clone();
        state.unconfirmed = loaded.state.unconfirmed.clone();
        state.version = STATE_VERSION;
        state.updated_at = Some(Utc::now());
        state.last_run_id = Some(run_id.clone());
        lock.fenced(&states.url(), states.commit(&state, loaded.etag.as_deref()))
            .await?;
        Ok(restored)
    }
    .await;
    if let Err(e) = lock.release().await {
        tracing::error!("could not release the lock: {e}; remove it with `lakeload unlock`");
    }
    outcome
}

/// What a rollback did, for the terminal.
pub fn format_restored(r: &Restored) -> String {
    format!(
        "version {} restores version {}: {} file(s) back, {} removed; the next incremental run \
         loads the files loaded after version {} again\n",
        r.version, r.restored_version, r.files_added, r.files_removed, r.restored_version
    )
}
