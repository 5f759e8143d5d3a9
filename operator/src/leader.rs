//! Leader election for `replicas > 1`: one operator reconciles, the others wait on a Lease
//! (`coordination.k8s.io`) and take over when the leader stops renewing it. A leader that
//! cannot renew within the Lease's duration stops, so that two never reconcile at once.

use std::time::Duration;

use chrono::{DateTime, Utc};
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Client;
use kube::api::{Api, PostParams};

use crate::job::micro_time;
use crate::lease_clock::LeaseClock;
use crate::observe::{lease_state, to_chrono};

#[derive(Debug, Clone)]
pub struct Election {
    pub namespace: String,
    pub name: String,
    pub identity: String,
    pub lease_seconds: i64,
    /// When this replica saw the leader's Lease change: it expires by this replica's clock.
    pub seen: std::sync::Arc<LeaseClock>,
}

enum Attempt {
    Leading,
    Held(String),
}

impl Election {
    fn lease(&self, acquired: DateTime<Utc>, resource_version: Option<String>) -> Lease {
        Lease {
            metadata: ObjectMeta {
                name: Some(self.name.clone()),
                namespace: Some(self.namespace.clone()),
                resource_version,
                ..Default::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: Some(self.identity.clone()),
                lease_duration_seconds: Some(self.lease_seconds as i32),
                acquire_time: Some(micro_time(acquired)),
                renew_time: Some(micro_time(Utc::now())),
                ..Default::default()
            }),
        }
    }

    /// One try to take or renew leadership.
    async fn attempt(&self, leases: &Api<Lease>) -> Result<Attempt, kube::Error> {
        let Some(current) = leases.get_opt(&self.name).await? else {
            return match leases
                .create(&PostParams::default(), &self.lease(Utc::now(), None))
                .await
            {
                Ok(_) => Ok(Attempt::Leading),
                Err(kube::Error::Api(s)) if s.code == 409 => Ok(Attempt::Held("?".into())),
                Err(e) => Err(e),
            };
        };
        // Judged as the table Leases are: free, expired, or held.
        let version = current.metadata.resource_version.as_deref().unwrap_or_default();
        let observed = lease_state(&current, self.seen.observed(&self.name, version, Utc::now()));
        let holder = observed.holder.clone().unwrap_or_default();
        let ours = holder == self.identity;
        if !(ours || observed.holder.is_none() || observed.expired(Utc::now())) {
            return Ok(Attempt::Held(holder));
        }
        let kept = current.spec.as_ref().and_then(|s| s.acquire_time.as_ref());
        let acquired = match (ours, kept) {
            (true, Some(t)) => to_chrono(&t.0),
            _ => Utc::now(),
        };
        let lease = self.lease(acquired, current.metadata.resource_version.clone());
        match leases.replace(&self.name, &PostParams::default(), &lease).await {
            Ok(_) => Ok(Attempt::Leading),
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(Attempt::Held(holder)),
            Err(e) => Err(e),
        }
    }

    /// Waits until this process leads.
    pub async fn acquire(&self, client: &Client) {
        let leases: Api<Lease> = Api::namespaced(client.clone(), &self.namespace);
        let mut announced = None;
        loop {
            match self.attempt(&leases).await {
                Ok(Attempt::Leading) => {
                    tracing::info!(lease = %self.name, identity = %self.identity, "leading");
                    return;
                }
                Ok(Attempt::Held(holder)) => {
                    if announced.as_ref() != Some(&holder) {
                        tracing::info!(lease = %self.name, "{holder} leads; waiting");
                        announced = Some(holder);
                    }
                }
                Err(e) => tracing::warn!(lease = %self.name, "leader election: {e}"),
            }
            tokio::time::sleep(self.retry_period()).await;
        }
    }

    /// Renews leadership until it is lost (another holder, or no successful renewal for a
    /// whole Lease duration); then returns. Every renewal is bounded by that deadline: a hung
    /// API call cannot keep this replica leading past it.
    pub async fn keep(&self, client: &Client) {
        let leases: Api<Lease> = Api::namespaced(client.clone(), &self.namespace);
        // Stop before the Lease can lapse for others: a margin of one retry period.
        let margin = chrono::Duration::seconds(self.lease_seconds)
            - chrono::Duration::from_std(self.retry_period()).unwrap_or_default();
        let mut last = Utc::now();
        loop {
            tokio::time::sleep(self.retry_period()).await;
            let left = (last + margin - Utc::now()).to_std().unwrap_or_default();
            match tokio::time::timeout(left, self.attempt(&leases)).await {
                Ok(Ok(Attempt::Leading)) => last = Utc::now(),
                Ok(Ok(Attempt::Held(holder))) => {
                    tracing::error!(lease = %self.name, "lost leadership to {holder}");
                    return;
                }
                Ok(Err(e)) => tracing::warn!(lease = %self.name, "cannot renew leadership: {e}"),
                Err(_) => {
                    tracing::error!(lease = %self.name, "a leadership renewal did not answer in time");
                    return;
                }
            }
            if Utc::now() - last >= margin {
                tracing::error!(lease = %self.name, "could not renew leadership in time");
                return;
            }
        }
    }

    /// Gives leadership up at once (on shutdown), if this process still holds it: a standby
    /// takes over at its next try instead of after a whole Lease duration.
    pub async fn release(&self, client: &Client) {
        let leases: Api<Lease> = Api::namespaced(client.clone(), &self.namespace);
        let Ok(Some(mut current)) = leases.get_opt(&self.name).await else {
            return;
        };
        let spec = current.spec.get_or_insert_with(Default::default);
        if spec.holder_identity.as_deref() != Some(self.identity.as_str()) {
            return;
        }
        spec.holder_identity = None;
        spec.lease_duration_seconds = Some(1);
        spec.renew_time = Some(micro_time(Utc::now()));
        match leases.replace(&self.name, &PostParams::default(), &current).await {
            Ok(_) => tracing::info!(lease = %self.name, "released leadership"),
            Err(e) => tracing::warn!(lease = %self.name, "could not release leadership: {e}"),
        }
    }

    fn retry_period(&self) -> Duration {
        Duration::from_secs((self.lease_seconds / 3).max(1) as u64)
    }
}
