//! One run at a time per table (SPEC §5): a lock object created with a create-if-absent write,
//! holding a lease that a background task renews with compare-and-swap. A lease that expired
//! (its run died without cleaning up) can be taken over; the conditional write lets only one
//! contender win.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::storage::{DynStorage, PutCondition, StorageError};

pub const LOCK_KEY: &str = "_lakeload/lock";

/// The lock object's content.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LockInfo {
    pub run_id: String,
    pub host: String,
    pub pid: u32,
    pub started_at: DateTime<Utc>,
    pub lease_expires_at: DateTime<Utc>,
    #[serde(default)]
    pub version: String,
}

impl LockInfo {
    pub fn is_live(&self, now: DateTime<Utc>) -> bool {
        self.lease_expires_at > now
    }

    pub fn describe(&self) -> String {
        format!(
            "run {} on host {} (pid {}), started {}, lease until {}",
            self.run_id,
            self.host,
            self.pid,
            self.started_at.format("%Y-%m-%dT%H:%M:%SZ"),
            self.lease_expires_at.format("%Y-%m-%dT%H:%M:%SZ")
        )
    }
}

/// What is in the lock object right now.
#[derive(Debug, Clone)]
pub enum Holder {
    Free,
    Held {
        info: LockInfo,
        etag: Option<String>,
    },
    /// The object exists but is not a lakeload lock we can read.
    Unreadable {
        etag: Option<String>,
    },
}

pub async fn current_holder(storage: &DynStorage) -> Result<Holder> {
    Ok(match storage.get(LOCK_KEY).await? {
        None => Holder::Free,
        Some((bytes, meta)) => match serde_json::from_slice::<LockInfo>(&bytes) {
            Ok(info) => Holder::Held {
                info,
                etag: meta.etag,
            },
            Err(_) => Holder::Unreadable { etag: meta.etag },
        },
    })
}

pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "unknown".into())
}

struct Shared {
    etag: String,
    info: LockInfo,
}

/// A held lock. Renewed in the background until released or dropped.
pub struct TableLock {
    storage: DynStorage,
    shared: Arc<Mutex<Shared>>,
    lost: Arc<AtomicBool>,
    renewer: tokio::task::JoinHandle<()>,
}

impl TableLock {
    /// Takes the lock, or fails with [`Error::Locked`] naming the holder.
    pub async fn acquire(storage: DynStorage, run_id: &str, lease: Duration) -> Result<TableLock> {
        let now = Utc::now();
        let info = LockInfo {
            run_id: run_id.to_string(),
            host: hostname(),
            pid: std::process::id(),
            started_at: now,
            lease_expires_at: now + lease,
            version: env!("CARGO_PKG_VERSION").to_string(),
        };
        let body = Bytes::from(serde_json::to_vec_pretty(&info).map_err(Error::other)?);
        // A few rounds: the holder may release between our create and our read.
        for _ in 0..3 {
            match storage
                .put_if(LOCK_KEY, body.clone(), PutCondition::IfAbsent)
                .await
            {
                Ok(etag) => return Ok(Self::hold(storage, etag, info, lease)),
                Err(StorageError::PreconditionFailed { .. }) => {}
                Err(e) => return Err(e.into()),
            }
            match current_holder(&storage).await? {
                Holder::Free => continue,
                Holder::Unreadable { .. } => {
                    return Err(Error::Locked {
                        holder: format!(
                            "{} exists but is not a lakeload lock; if no run is active, remove it \
                             with `lakeload unlock --force`",
                            storage.url(LOCK_KEY)
                        ),
                    });
                }
                Holder::Held { info: held, etag } if !held.is_live(Utc::now()) => {
                    let Some(etag) = etag else { continue };
                    match storage
                        .put_if(LOCK_KEY, body.clone(), PutCondition::IfMatch(etag))
                        .await
                    {
                        Ok(new_etag) => {
                            tracing::warn!(
                                "took over the lock of {}: its lease expired at {}",
                                held.run_id,
                                held.lease_expires_at
                            );
                            return Ok(Self::hold(storage, new_etag, info, lease));
                        }
                        Err(StorageError::PreconditionFailed { .. }) => continue,
                        Err(e) => return Err(e.into()),
                    }
                }
                Holder::Held { info: held, .. } => {
                    return Err(Error::Locked {
                        holder: held.describe(),
                    });
                }
            }
        }
        Err(Error::Locked {
            holder: format!(
                "{} keeps changing; another run is starting",
                storage.url(LOCK_KEY)
            ),
        })
    }

    fn hold(storage: DynStorage, etag: String, info: LockInfo, lease: Duration) -> TableLock {
        let shared = Arc::new(Mutex::new(Shared { etag, info }));
        let lost = Arc::new(AtomicBool::new(false));
        let renewer = tokio::spawn(renew(storage.clone(), shared.clone(), lost.clone(), lease));
        TableLock {
            storage,
            shared,
            lost,
            renewer,
        }
    }

    /// Fails if the lease could not be kept; called before every data and state write.
    pub fn ensure_held(&self) -> Result<()> {
        if self.lost.load(Ordering::SeqCst) {
            return Err(Error::LockLost(format!(
                "the lease on {} was lost or taken over",
                self.storage.url(LOCK_KEY)
            )));
        }
        Ok(())
    }

    /// Stops renewing and removes the lock, if it is still ours.
    pub async fn release(self) -> Result<()> {
        self.renewer.abort();
        let run_id = self.shared.lock().expect("lock state").info.run_id.clone();
        match current_holder(&self.storage).await? {
            Holder::Held { info, .. } if info.run_id == run_id => Ok(self.storage.delete(LOCK_KEY).await?),
            _ => Ok(()),
        }
    }
}

impl Drop for TableLock {
    fn drop(&mut self) {
        self.renewer.abort();
    }
}

async fn renew(storage: DynStorage, shared: Arc<Mutex<Shared>>, lost: Arc<AtomicBool>, lease: Duration) {
    loop {
        tokio::time::sleep(lease / 3).await;
        let (etag, mut info) = {
            let s = shared.lock().expect("lock state");
            (s.etag.clone(), s.info.clone())
        };
        let previous_expiry = info.lease_expires_at;
        info.lease_expires_at = Utc::now() + lease;
        let body = match serde_json::to_vec_pretty(&info) {
            Ok(b) => Bytes::from(b),
            Err(_) => continue,
        };
        match storage.put_if(LOCK_KEY, body, PutCondition::IfMatch(etag)).await {
            Ok(new_etag) => {
                let mut s = shared.lock().expect("lock state");
                s.etag = new_etag;
                s.info = info;
            }
            Err(StorageError::PreconditionFailed { .. }) => {
                tracing::error!(
                    "lost the table lock: {} was changed by someone else",
                    storage.url(LOCK_KEY)
                );
                lost.store(true, Ordering::SeqCst);
                return;
            }
            Err(e) => {
                tracing::warn!("could not renew the lock lease: {e}");
                if Utc::now() >= previous_expiry {
                    lost.store(true, Ordering::SeqCst);
                    return;
                }
            }
        }
    }
}

/// `lakeload unlock`: removes the lock of a crashed run. Without `force`, a lock whose lease is
/// still live is refused (its run may be alive).
pub async fn unlock(config: &crate::config::Config, force: bool) -> Result<String> {
    let storage = crate::storage::open(&config.target.url, &config.aws).await?;
    let url = storage.url(LOCK_KEY);
    let removed = match current_holder(&storage).await? {
        Holder::Free => return Ok(format!("no lock on {url}")),
        Holder::Held { info, .. } if info.is_live(Utc::now()) && !force => {
            return Err(Error::Locked {
                holder: format!(
                    "{}; its lease is live, so the run may still be working. Stop it, wait for the \
                     lease to expire, or use `lakeload unlock --force` if you are sure it is gone",
                    info.describe()
                ),
            });
        }
        Holder::Unreadable { .. } if !force => {
            return Err(Error::Locked {
                holder: format!(
                    "{url} is not a readable lakeload lock; remove it with `lakeload unlock --force`"
                ),
            });
        }
        Holder::Held { info, .. } => format!("removed the lock of {}", info.describe()),
        Holder::Unreadable { .. } => format!("removed the unreadable lock object {url}"),
    };
    storage.delete(LOCK_KEY).await?;
    Ok(removed)
}
