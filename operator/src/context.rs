//! What every reconcile shares: the operator's settings, its API client, and what it keeps in
//! memory between reconciles (Leases to renew, when each Lease was seen to change, finished
//! runs per table, failures per run).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use kube::Client;
use kube::runtime::events::Recorder;

use crate::decide::Policy;
use crate::finished::FinishedRuns;
use crate::lease_clock::LeaseClock;
use crate::metrics::Metrics;
use crate::renew::Renewals;

#[derive(Debug, Clone)]
pub struct Settings {
    pub worker_image: String,
    /// Finished runs kept per target, whatever their TTL.
    pub keep_last: usize,
    /// `None`: all namespaces.
    pub namespace: Option<String>,
    /// Where the table Leases live: the operator's own namespace, one Lease per table in the
    /// whole cluster, whichever namespaces its runs are in.
    pub lease_namespace: String,
    pub policy: Policy,
    /// Kueue LocalQueue for runs that name none (`--default-queue-name`).
    pub default_queue_name: Option<String>,
    /// Service account of worker pods whose run names none (`--worker-service-account`).
    pub worker_service_account: Option<String>,
    /// Workers may read AWS config and credential files (`--allow-aws-config-files`).
    pub aws_config_files: bool,
    /// Worker settings of every run that does not set them itself (`--worker-settings`), e.g.
    /// the site's S3 endpoint.
    pub worker_settings: std::collections::BTreeMap<String, String>,
}

pub struct Context {
    pub client: Client,
    pub settings: Settings,
    pub metrics: Arc<Metrics>,
    pub recorder: Recorder,
    /// Consecutive failures per run, for the error policy's backoff.
    pub failures: Mutex<HashMap<String, u32>>,
    pub renewals: Renewals,
    pub lease_clock: LeaseClock,
    pub finished: FinishedRuns,
}

impl Context {
    pub fn new(client: Client, settings: Settings, metrics: Arc<Metrics>, recorder: Recorder) -> Context {
        Context {
            renewals: Renewals::new(&settings.lease_namespace),
            client,
            settings,
            metrics,
            recorder,
            failures: Mutex::default(),
            lease_clock: LeaseClock::default(),
            finished: FinishedRuns::default(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("{0}")]
    Other(String),
}

pub fn is_status(e: &kube::Error, code: u16) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == code)
}
