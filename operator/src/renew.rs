//! Lease renewal on a timer of its own. Reconciles renew a run's Lease too, but a reconcile
//! that keeps failing waits out an exponential back-off longer than the Lease; this task
//! renews every Lease a run guards its table with, every third of the Lease, whatever the
//! reconciles are doing.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use chrono::Utc;
use k8s_openapi::api::coordination::v1::Lease;
use kube::Client;
use kube::api::{Api, PostParams};

use crate::crd::{EtlRun, Phase};
use crate::decide::{Action, Observed, holder_identity};
use crate::job::{lease_name, micro_time};

/// Leases to renew, all in the operator's namespace: Lease name → holder identity.
pub struct Renewals {
    namespace: String,
    held: Mutex<HashMap<String, String>>,
}

impl Renewals {
    /// Renewals of the table Leases in `namespace` (the operator's).
    pub fn new(namespace: &str) -> Renewals {
        Renewals {
            namespace: namespace.to_string(),
            held: Mutex::default(),
        }
    }

    /// Records what a reconcile saw and decided: renew while the run guards its table, stop
    /// once it releases the Lease.
    pub fn track(&self, run: &EtlRun, observed: &Observed, actions: &[Action]) {
        let key = lease_name(run);
        let mut held = self.held.lock().expect("renewals");
        let releasing = actions.iter().any(|a| matches!(a, Action::ReleaseLease { .. }));
        if observed.guarding() && !releasing {
            held.insert(key, holder_identity(run));
        } else if held.get(&key) == Some(&holder_identity(run)) {
            held.remove(&key);
        }
    }

    /// Before anything new starts (an operator that just started or took over leadership):
    /// every run that holds its table's Lease is tracked and its Lease renewed at once, so a
    /// Lease that ran short during the failover is not taken over under a Job still running.
    /// Returns how many were adopted.
    pub async fn adopt(&self, client: &Client, runs: &[EtlRun]) -> Result<usize, kube::Error> {
        let mut adopted = 0;
        let unfinished = runs.iter().filter(|r| {
            !r.status
                .as_ref()
                .and_then(|s| s.phase)
                .is_some_and(Phase::is_finished)
        });
        // Finished runs are left out: they only hold a Lease until their next reconcile
        // releases it, and a long history of them would make start-up slow.
        let leases: Api<Lease> = Api::namespaced(client.clone(), &self.namespace);
        for run in unfinished {
            let holder = holder_identity(run);
            if renew(&leases, &lease_name(run), &holder).await? {
                self.held
                    .lock()
                    .expect("renewals")
                    .insert(lease_name(run), holder);
                adopted += 1;
            }
        }
        Ok(adopted)
    }

    fn snapshot(&self) -> Vec<(String, String)> {
        let held = self.held.lock().expect("renewals");
        held.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
    }

    fn forget(&self, key: &str, holder: &str) {
        let mut held = self.held.lock().expect("renewals");
        if held.get(key).map(String::as_str) == Some(holder) {
            held.remove(key);
        }
    }

    /// Renews every tracked Lease that its run still holds, every `lease_seconds / 3`.
    pub async fn run(&self, client: Client, lease_seconds: i64) {
        let period = Duration::from_secs((lease_seconds / 3).max(1) as u64);
        loop {
            tokio::time::sleep(period).await;
            let leases: Api<Lease> = Api::namespaced(client.clone(), &self.namespace);
            for (key, holder) in self.snapshot() {
                match renew(&leases, &key, &holder).await {
                    Ok(true) => {}
                    Ok(false) => self.forget(&key, &holder),
                    Err(e) => tracing::warn!(lease = %key, namespace = %self.namespace, "cannot renew: {e}"),
                }
            }
        }
    }
}

/// Renews the Lease if `holder` still holds it; `Ok(false)` when it does not (any more).
async fn renew(leases: &Api<Lease>, name: &str, holder: &str) -> Result<bool, kube::Error> {
    let Some(mut lease) = leases.get_opt(name).await? else {
        return Ok(false);
    };
    let spec = lease.spec.get_or_insert_with(Default::default);
    if spec.holder_identity.as_deref() != Some(holder) {
        return Ok(false);
    }
    spec.renew_time = Some(micro_time(Utc::now()));
    // resourceVersion is kept: a concurrent change (release, takeover) wins, and the next
    // round looks again.
    match leases.replace(name, &PostParams::default(), &lease).await {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(s)) if s.code == 409 => Ok(true),
        Err(e) => Err(e),
    }
}
