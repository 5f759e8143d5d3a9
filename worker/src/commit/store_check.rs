//! Know the store: the lock and every fenced write rely on the store refusing a
//! create-if-absent on an existing object and a write under a stale `If-Match`. Some
//! S3-compatible stores ignore those headers; two runs would then both "take" the lock and
//! overwrite each other silently. Before its first write to a table, a run tries both on a
//! probe object of its own and refuses to go on if either is accepted (unless
//! `lock.allow_unsafe_store` says to accept the risk). The result is recorded in the state, so
//! later runs against the same endpoint skip the probe.

use bytes::Bytes;
use chrono::Utc;

use crate::bookkeeping::probe_key;
use crate::error::{Error, Result};
use crate::state::StoreCheck;
use crate::storage::{DynStorage, PutCondition, StorageError};

/// An ETag no object has: a write conditional on it must be refused.
const STALE_ETAG: &str = "00000000000000000000000000000000";

/// Which conditional write the store accepted though it must not have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ignored {
    /// `If-None-Match: *` on an object that exists.
    IfNoneMatch,
    /// `If-Match` with an ETag the object does not have.
    IfMatch,
}

/// Tries both conditions on a probe object and removes it again. `Ok(None)`: the store
/// enforces them.
pub async fn probe(storage: &DynStorage, run_id: &str) -> Result<Option<Ignored>> {
    let key = probe_key(run_id);
    let outcome = probe_key_conditions(storage, &key, run_id).await;
    // The probe object goes whatever happened; a failure to remove it is only logged.
    if let Err(e) = storage.delete(&key).await {
        tracing::warn!("could not remove the store probe {}: {e}", storage.url(&key));
    }
    outcome
}

async fn probe_key_conditions(storage: &DynStorage, key: &str, run_id: &str) -> Result<Option<Ignored>> {
    let first = Bytes::from(format!("lakeload store probe of run {run_id}: first write\n"));
    storage.put_if(key, first, PutCondition::IfAbsent).await?;
    let second = Bytes::from(format!("lakeload store probe of run {run_id}: must be refused\n"));
    match storage.put_if(key, second, PutCondition::IfAbsent).await {
        Err(StorageError::PreconditionFailed { .. }) => {}
        Ok(_) => return Ok(Some(Ignored::IfNoneMatch)),
        Err(e) => return Err(e.into()),
    }
    let third = Bytes::from(format!("lakeload store probe of run {run_id}: stale If-Match\n"));
    match storage
        .put_if(key, third, PutCondition::IfMatch(STALE_ETAG.into()))
        .await
    {
        Err(StorageError::PreconditionFailed { .. }) => Ok(None),
        Ok(_) => Ok(Some(Ignored::IfMatch)),
        Err(e) => Err(e.into()),
    }
}

/// Checks the store unless `recorded` already vouches for this endpoint; returns what to
/// record. A store that ignores conditional writes is refused unless `allow_unsafe`.
pub async fn verify(
    storage: &DynStorage,
    run_id: &str,
    recorded: Option<&StoreCheck>,
    allow_unsafe: bool,
) -> Result<StoreCheck> {
    let endpoint = storage.endpoint();
    if let Some(check) = recorded.filter(|c| c.endpoint == endpoint && c.conditional_writes) {
        return Ok(check.clone());
    }
    let ignored = probe(storage, run_id).await?;
    let check = StoreCheck {
        endpoint: endpoint.clone(),
        conditional_writes: ignored.is_none(),
        checked_at: Utc::now(),
    };
    let Some(ignored) = ignored else {
        tracing::debug!("{endpoint} enforces conditional writes");
        return Ok(check);
    };
    let what = match ignored {
        Ignored::IfNoneMatch => "a create-if-absent (If-None-Match: *) on an existing object succeeded",
        Ignored::IfMatch => "a write with a stale If-Match succeeded",
    };
    let risk = "two runs could both take the table's lock, and a run that lost its lock could \
                overwrite what another run wrote";
    if allow_unsafe {
        tracing::warn!(
            "the store at {endpoint} ignores conditional writes ({what}): {risk}; going on \
             because lock.allow_unsafe_store = true. Make sure only one run at a time writes \
             this table"
        );
        return Ok(check);
    }
    Err(Error::Config(format!(
        "the store at {endpoint} ignores conditional writes ({what}): {risk}. lakeload wrote \
         nothing to {}. Use a store that enforces If-None-Match and If-Match on PUT (AWS S3, \
         MinIO, Ceph RGW and others do), or set lock.allow_unsafe_store = true to accept the \
         risk when nothing else ever writes this table at the same time",
        storage.root()
    )))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[tokio::test]
    async fn a_local_folder_enforces_both_conditions_and_the_probe_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let storage: DynStorage = Arc::new(crate::storage::LocalStorage::new(dir.path().to_path_buf()));
        let check = verify(&storage, "r1", None, false).await.unwrap();
        assert!(check.conditional_writes);
        assert_eq!(check.endpoint, "local folder");
        assert!(storage.list("").await.unwrap().is_empty());
    }
}
