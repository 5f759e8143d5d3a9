//! One run at a time per table (SPEC §5): a lock object created with a create-if-absent write,
//! holding a lease that a background task renews with compare-and-swap. A lease that expired
//! (its run died without cleaning up) can be taken over; the conditional write lets only one
//! contender win.
//!
//! Fencing has three layers, so a run that stalled (a paused process, a hung request) cannot
//! write after another run took its lock over:
//! - the holder judges its own lease on the monotonic clock, from the moment it *sent* its last
//!   successful renewal, and stops writing a safety margin before it ends ([`TableLock::ensure_held`]);
//! - contenders judge a lease by the store's clock (the lock's Last-Modified against the store's
//!   `Date`), so a skewed clock on either side cannot end a live lease early;
//! - every table and state write is conditional on the version the run read (see
//!   `table::Seen` and `state::StateStore::commit`), so even a request that lands late is
//!   refused by the store.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::storage::{DynStorage, PutCondition, StorageError};

use crate::bookkeeping::LOCK_KEY;

/// Slack for stores whose Last-Modified and Date headers have one-second precision.
const STORE_CLOCK_SLACK: chrono::Duration = chrono::Duration::seconds(1);

/// The lock object's content.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LockInfo {
    pub run_id: String,
    pub host: String,
    pub pid: u32,
    pub started_at: DateTime<Utc>,
    /// For people reading the lock, by the holder's clock. Contenders judge the lease by
    /// `lease_seconds` on the store's clock when they can.
    pub lease_expires_at: DateTime<Utc>,
    /// The lease length; absent in locks of older versions.
    #[serde(default)]
    pub lease_seconds: Option<u64>,
    #[serde(default)]
    pub version: String,
}

impl LockInfo {
    /// By the local clock only: for display, and for locks without `lease_seconds`.
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

/// Whether a lease has ended. With the store's clock (`store_now`) and the lease length, the
/// lock's own Last-Modified (stamped by the store at the last renewal) decides: no clock of any
/// run takes part. Otherwise the holder's stated expiry is compared with the local clock.
pub fn lease_expired(
    info: &LockInfo,
    last_modified: DateTime<Utc>,
    store_now: Option<DateTime<Utc>>,
    local_now: DateTime<Utc>,
) -> bool {
    match (info.lease_seconds, store_now) {
        (Some(seconds), Some(now)) => {
            now > last_modified + chrono::Duration::seconds(seconds as i64) + STORE_CLOCK_SLACK
        }
        _ => !info.is_live(local_now),
    }
}

/// What is in the lock object right now.
#[derive(Debug, Clone)]
pub enum Holder {
    Free,
    Held {
        info: LockInfo,
        etag: Option<String>,
        /// Whether its lease has ended (see [`lease_expired`]).
        expired: bool,
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
                expired: lease_expired(&info, meta.last_modified, storage.store_now(), Utc::now()),
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

/// The lease as the holder last secured it.
struct Lease {
    etag: String,
    info: LockInfo,
    /// When the write that secured it was *sent*: the store stamped it later, so the lease
    /// as others judge it ends no earlier than `confirmed + lease`.
    confirmed: Instant,
}

/// A held lock. Renewed in the background until released or dropped.
pub struct TableLock {
    storage: DynStorage,
    lease: Duration,
    shared: Arc<Mutex<Lease>>,
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
            lease_seconds: Some(lease.as_secs()),
            version: env!("CARGO_PKG_VERSION").to_string(),
        };
        let body = Bytes::from(serde_json::to_vec_pretty(&info).map_err(Error::other)?);
        // A few rounds: the holder may release between our create and our read.
        for _ in 0..3 {
            let sent = Instant::now();
            match storage
                .put_if(LOCK_KEY, body.clone(), PutCondition::IfAbsent)
                .await
            {
                Ok(etag) => return Ok(Self::hold(storage, etag, info, sent, lease)),
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
                // Expired, or held under this very run id: a retry of the same run (a Job's
                // next pod after the previous one was killed). Either way the old holder is
                // fenced: its next renewal or conditional write fails on the new ETag.
                Holder::Held {
                    info: held,
                    etag,
                    expired,
                } if expired || held.run_id == run_id => {
                    let Some(etag) = etag else { continue };
                    let sent = Instant::now();
                    match storage
                        .put_if(LOCK_KEY, body.clone(), PutCondition::IfMatch(etag))
                        .await
                    {
                        Ok(new_etag) => {
                            if held.run_id == run_id {
                                tracing::warn!(
                                    "took over the lock an earlier attempt of this run ({}) left \
                                     behind",
                                    held.describe()
                                );
                            } else {
                                tracing::warn!(
                                    "took over the lock of {}: its lease of {}s ran out (last \
                                     renewed by the store's clock)",
                                    held.run_id,
                                    held.lease_seconds.map_or("?".into(), |s| s.to_string())
                                );
                            }
                            return Ok(Self::hold(storage, new_etag, info, sent, lease));
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

    fn hold(storage: DynStorage, etag: String, info: LockInfo, sent: Instant, lease: Duration) -> TableLock {
        let shared = Arc::new(Mutex::new(Lease {
            etag,
            info,
            confirmed: sent,
        }));
        let lost = Arc::new(AtomicBool::new(false));
        let renewer = tokio::spawn(renew(storage.clone(), shared.clone(), lost.clone(), lease));
        TableLock {
            storage,
            lease,
            shared,
            lost,
            renewer,
        }
    }

    /// Writes stop this long before the lease ends, so a write that starts in time also lands
    /// in time. Renewals come every third of the lease, so a healthy run never gets near it.
    pub fn safety_margin(lease: Duration) -> Duration {
        lease / 4
    }

    /// Fails unless the lease is securely held: not lost, and by the monotonic clock more than
    /// the safety margin away from its end. Called before every data and state write.
    pub async fn ensure_held(&self) -> Result<()> {
        let confirmed = self.shared.lock().expect("lock state").confirmed;
        let deadline = confirmed + self.lease;
        let lost = self.lost.load(Ordering::SeqCst);
        let late = Instant::now() + Self::safety_margin(self.lease) >= deadline;
        if !lost && !late {
            return Ok(());
        }
        self.lost.store(true, Ordering::SeqCst);
        let why = if late {
            format!(
                "its lease on {} was last secured {:.1}s ago (lease {}s)",
                self.storage.url(LOCK_KEY),
                confirmed.elapsed().as_secs_f64(),
                self.lease.as_secs()
            )
        } else {
            format!("{} was changed by someone else", self.storage.url(LOCK_KEY))
        };
        let own = self.shared.lock().expect("lock state").info.run_id.clone();
        let holder = match current_holder(&self.storage).await {
            Ok(Holder::Held { info, .. }) if info.run_id != own => {
                format!("; the table is now held by {}", info.describe())
            }
            Ok(Holder::Free) => "; the lock is free now".to_string(),
            _ => String::new(),
        };
        Err(Error::LockLost(format!("{why}{holder}")))
    }

    /// Runs one write of the table (data, delete or state): only while the lease is securely
    /// held ([`TableLock::ensure_held`]), and bounded by it ([`TableLock::bounded`]).
    pub async fn fenced<T>(
        &self,
        url: &str,
        write: impl std::future::Future<Output = Result<T>>,
    ) -> Result<T> {
        self.ensure_held().await?;
        self.bounded(url, write).await
    }

    /// Runs one write of the table (data, delete or state) that [`TableLock::ensure_held`]
    /// allowed, and abandons it (drops the request) if the lease, as last secured, runs out
    /// before it finishes: no write of this run outlives its lease, whatever the storage
    /// timeouts (`aws.operation_timeout_seconds`) allow. A request the store already received
    /// whole is still refused there if another run changed the object (conditional writes).
    pub async fn bounded<T>(
        &self,
        url: &str,
        write: impl std::future::Future<Output = Result<T>>,
    ) -> Result<T> {
        let mut write = std::pin::pin!(write);
        loop {
            let deadline = self.shared.lock().expect("lock state").confirmed + self.lease;
            tokio::select! {
                biased;
                _ = tokio::time::sleep_until(deadline.into()) => {
                    let renewed = self.shared.lock().expect("lock state").confirmed + self.lease;
                    if renewed > deadline {
                        continue;
                    }
                    self.lost.store(true, Ordering::SeqCst);
                    return Err(Error::LockLost(format!(
                        "its lease on {} ran out before its write to {url} finished; the write \
                         was abandoned",
                        self.storage.url(LOCK_KEY)
                    )));
                }
                result = &mut write => return result,
            }
        }
    }

    /// Stops renewing and removes the lock if it is still ours: a delete conditional on our
    /// last version, so there is no window in which another run's new lock could be removed.
    pub async fn release(self) -> Result<()> {
        self.renewer.abort();
        let etag = self.shared.lock().expect("lock state").etag.clone();
        match self.storage.delete_if(LOCK_KEY, &etag).await {
            Ok(()) => Ok(()),
            Err(StorageError::PreconditionFailed { .. }) => {
                tracing::warn!("the lock is no longer ours; left it to its holder");
                Ok(())
            }
            Err(e) => Err(e.into()),
        }
    }
}

impl Drop for TableLock {
    fn drop(&mut self) {
        self.renewer.abort();
    }
}

async fn renew(storage: DynStorage, shared: Arc<Mutex<Lease>>, lost: Arc<AtomicBool>, lease: Duration) {
    let mut wait = lease / 3;
    loop {
        tokio::time::sleep(wait).await;
        let (etag, mut info, confirmed) = {
            let s = shared.lock().expect("lock state");
            (s.etag.clone(), s.info.clone(), s.confirmed)
        };
        let deadline = confirmed + lease;
        info.lease_expires_at = Utc::now() + lease;
        let body = match serde_json::to_vec_pretty(&info) {
            Ok(b) => Bytes::from(b),
            Err(_) => continue,
        };
        let sent = Instant::now();
        // A renewal that cannot finish before the lease ends is of no use; give up on it then.
        let attempt = tokio::time::timeout(
            deadline.saturating_duration_since(sent),
            storage.put_if(LOCK_KEY, body, PutCondition::IfMatch(etag)),
        )
        .await;
        let secured = matches!(attempt, Ok(Ok(_)));
        match attempt {
            Ok(Ok(new_etag)) => {
                let mut s = shared.lock().expect("lock state");
                s.etag = new_etag;
                s.info = info;
                s.confirmed = sent;
                wait = lease / 3;
            }
            Ok(Err(StorageError::PreconditionFailed { .. })) => {
                tracing::error!(
                    "lost the table lock: {} was changed by someone else",
                    storage.url(LOCK_KEY)
                );
                lost.store(true, Ordering::SeqCst);
                return;
            }
            Ok(Err(e)) => {
                tracing::warn!("could not renew the lock lease: {e}; retrying");
                wait = Duration::from_secs(1).min(lease / 10);
            }
            Err(_) => tracing::warn!("renewing the lock lease timed out"),
        }
        if !secured && Instant::now() >= deadline {
            tracing::error!("the lock lease ran out before it could be renewed");
            lost.store(true, Ordering::SeqCst);
            return;
        }
    }
}

/// `lakeload unlock`: removes the lock of a crashed run. Without `force`, a lock whose lease is
/// still live is refused (its run may be alive).
pub async fn unlock(config: &crate::config::Config, force: bool) -> Result<String> {
    let storage = crate::storage::open(&config.target.url, &config.aws).await?;
    let url = storage.url(LOCK_KEY);
    let (removed, etag) = match current_holder(&storage).await? {
        Holder::Free => return Ok(format!("no lock on {url}")),
        Holder::Held {
            info, expired: false, ..
        } if !force => {
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
        Holder::Held { info, etag, .. } => (format!("removed the lock of {}", info.describe()), etag),
        Holder::Unreadable { etag } => (format!("removed the unreadable lock object {url}"), etag),
    };
    // Only the lock we looked at: a run that took the lock since is not disturbed.
    match etag {
        Some(etag) => match storage.delete_if(LOCK_KEY, &etag).await {
            Err(StorageError::PreconditionFailed { .. }) => {
                return Err(Error::Locked {
                    holder: format!("{url} changed while unlocking: another run took the lock"),
                });
            }
            other => other?,
        },
        None => storage.delete(LOCK_KEY).await?,
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(lease_seconds: Option<u64>, expires: DateTime<Utc>) -> LockInfo {
        LockInfo {
            run_id: "r".into(),
            host: "h".into(),
            pid: 1,
            started_at: expires,
            lease_expires_at: expires,
            lease_seconds,
            version: String::new(),
        }
    }

    #[test]
    fn leases_are_judged_by_the_store_clock_when_known() {
        let t = |s: i64| DateTime::from_timestamp(1_800_000_000 + s, 0).unwrap();
        // The holder's clock is an hour behind: its stated expiry is long past by ours, but the
        // store renewed the object 10s ago, so the 30s lease is live.
        let skewed = info(Some(30), t(-3600));
        assert!(!lease_expired(&skewed, t(-10), Some(t(0)), t(0)));
        assert!(lease_expired(&skewed, t(-32), Some(t(0)), t(0)));
        // One second of slack for whole-second Last-Modified stamps.
        assert!(!lease_expired(&skewed, t(-31), Some(t(0)), t(0)));
        // Without the store's clock (or an older lock), the stated expiry and our clock decide.
        assert!(lease_expired(&skewed, t(-10), None, t(0)));
        assert!(!lease_expired(&info(None, t(5)), t(-100), Some(t(0)), t(0)));
    }
}
