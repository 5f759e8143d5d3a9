//! The controller's edge: observe an `EtlRun`'s Job and Lease (and, once the Job ended, the
//! result the worker reported), ask [`decide`] what to do, and carry the actions out against the API.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::StreamExt;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Event as CoreEvent, Pod};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams, Preconditions};
use kube::runtime::controller::{Action as Requeue, Controller};
use kube::runtime::events::{Event, EventType as KubeEventType, Recorder, Reporter};
use kube::runtime::watcher;
use kube::{Client, Resource, ResourceExt};
use lakeload_types::result::{EtlRunResult, RUN_UID_LABEL};
use serde_json::json;

use crate::crd::{EtlRun, Phase};
use crate::decide::{
    Action, EventType, FINALIZER, JobState, LeaseState, Observed, PodState, Policy, Stuck, SummaryFetch,
    decide, holder_identity, holder_job_name,
};
use crate::job::{MANAGED_BY, build_job, build_lease, job_name, lease_name, table_id};
use crate::metrics::Metrics;

#[derive(Debug, Clone)]
pub struct Settings {
    pub worker_image: String,
    /// Finished runs kept per target, whatever their TTL.
    pub keep_last: usize,
    /// `None`: all namespaces.
    pub namespace: Option<String>,
    pub policy: Policy,
    /// Kueue LocalQueue for runs that name none (`--default-queue-name`).
    pub default_queue_name: Option<String>,
    /// Service account of worker pods whose run names none (`--worker-service-account`).
    pub worker_service_account: Option<String>,
}

pub struct Context {
    pub client: Client,
    pub settings: Settings,
    pub metrics: Arc<Metrics>,
    pub recorder: Recorder,
    /// Consecutive failures per run, for the error policy's backoff.
    failures: Mutex<HashMap<String, u32>>,
    pub renewals: crate::renew::Renewals,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("{0}")]
    Other(String),
}

fn is_status(e: &kube::Error, code: u16) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == code)
}

pub fn to_chrono(t: &k8s_openapi::jiff::Timestamp) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(t.as_microsecond()).unwrap_or_default()
}

pub fn job_state(job: &Job) -> JobState {
    if job.metadata.deletion_timestamp.is_some() {
        return JobState::Deleting;
    }
    let conditions = job
        .status
        .as_ref()
        .and_then(|s| s.conditions.clone())
        .unwrap_or_default();
    let is = |kind: &str| conditions.iter().find(|c| c.type_ == kind && c.status == "True");
    if is("Complete").is_some() {
        JobState::Succeeded
    } else if let Some(c) = is("Failed") {
        JobState::Failed {
            message: format!(
                "Job failed ({}{})",
                c.reason.clone().unwrap_or_default(),
                c.message.as_ref().map(|m| format!(": {m}")).unwrap_or_default()
            ),
        }
    } else if job.spec.as_ref().and_then(|s| s.suspend) == Some(true) {
        // Waiting for Kueue to admit it, or suspended again by an eviction.
        JobState::Suspended
    } else {
        JobState::Active
    }
}

/// Waiting reasons of a container that will not start by itself soon, and
/// `ContainerCreating`, which is normal for a moment but not for `startTimeoutSeconds` (a
/// volume that cannot be mounted keeps a pod there; the kubelet says why in an Event).
const STUCK_REASONS: [&str; 7] = [
    "ErrImagePull",
    "ImagePullBackOff",
    "ErrImageNeverPull",
    "InvalidImageName",
    "CreateContainerConfigError",
    "CreateContainerError",
    "ContainerCreating",
];

pub fn pod_state(pod: &Pod) -> PodState {
    let status = pod.status.clone().unwrap_or_default();
    let phase = status.phase.unwrap_or_default();
    let since = pod
        .metadata
        .creation_timestamp
        .as_ref()
        .map(|t| to_chrono(&t.0))
        .unwrap_or_default();
    let worker = status
        .container_statuses
        .unwrap_or_default()
        .into_iter()
        .find(|c| c.name == "worker");
    let state = worker.as_ref().and_then(|c| c.state.clone());
    let waiting = state
        .as_ref()
        .and_then(|s| s.waiting.clone())
        .filter(|w| w.reason.as_deref().is_some_and(|r| STUCK_REASONS.contains(&r)))
        .map(|w| Stuck {
            reason: w.reason.unwrap_or_default(),
            message: w.message.unwrap_or_default(),
            since,
        });
    let unschedulable = status
        .conditions
        .unwrap_or_default()
        .into_iter()
        .find(|c| c.type_ == "PodScheduled" && c.status == "False")
        .map(|c| Stuck {
            reason: c.reason.unwrap_or_else(|| "Unschedulable".into()),
            message: c.message.unwrap_or_default(),
            since,
        });
    let terminated = state.and_then(|s| s.terminated);
    PodState {
        name: pod.metadata.name.clone().unwrap_or_default(),
        terminating_since: pod.metadata.deletion_timestamp.as_ref().map(|t| to_chrono(&t.0)),
        active: phase != "Succeeded" && phase != "Failed",
        stuck: waiting.or(unschedulable),
        exit_code: terminated.as_ref().map(|t| t.exit_code),
        termination_message: terminated
            .and_then(|t| t.message)
            .filter(|m| !m.trim().is_empty()),
    }
}

/// Whether the run a Lease names (`ns/name#uid8`) still has a Job that has not ended, or a pod
/// that may run: a Lease whose operator stopped renewing it (a failover) is not taken over
/// while its worker still runs.
async fn holder_runs(jobs: &Api<Job>, pods: &Api<Pod>, holder: &str) -> Result<bool, Error> {
    let Some(job) = holder_job_name(holder) else {
        return Ok(false);
    };
    if let Some(j) = jobs.get_opt(&job).await?
        && matches!(job_state(&j), JobState::Active | JobState::Suspended)
    {
        return Ok(true);
    }
    Ok(job_pods(pods, &job)
        .await?
        .iter()
        .map(pod_state)
        .any(|p| p.active))
}

/// The pods of Job `job`, oldest first (so "the last pod" is the newest whatever order the
/// list came in).
async fn job_pods(pods: &Api<Pod>, job: &str) -> Result<Vec<Pod>, Error> {
    let selector = ListParams::default().labels(&format!("batch.kubernetes.io/job-name={job}"));
    let mut list = pods.list(&selector).await?.items;
    list.sort_by(|a, b| {
        let created = |p: &Pod| p.metadata.creation_timestamp.as_ref().map(|t| t.0);
        created(a)
            .cmp(&created(b))
            .then_with(|| a.metadata.name.cmp(&b.metadata.name))
    });
    Ok(list)
}

/// A pod still `ContainerCreating` past `startTimeoutSeconds` says nothing itself: the
/// kubelet's latest warning about it (e.g. `FailedMount: MountVolume.SetUp failed for volume
/// "creds" : secret "aws" not found`) becomes its message.
async fn explain_slow_starts(pods: &mut [PodState], ctx: &Context, namespace: &str) -> Result<(), Error> {
    let timeout = chrono::Duration::seconds(ctx.settings.policy.start_timeout_seconds);
    let events: Api<CoreEvent> = Api::namespaced(ctx.client.clone(), namespace);
    for pod in pods.iter_mut() {
        let Some(stuck) = pod.stuck.as_mut() else { continue };
        if stuck.reason != "ContainerCreating" || Utc::now() - stuck.since < timeout {
            continue;
        }
        let about = ListParams::default().fields(&format!(
            "involvedObject.kind=Pod,involvedObject.name={}",
            pod.name
        ));
        let mut warnings: Vec<CoreEvent> = events
            .list(&about)
            .await?
            .items
            .into_iter()
            .filter(|e| e.type_.as_deref() == Some("Warning"))
            .collect();
        warnings.sort_by_key(|e| {
            e.last_timestamp
                .as_ref()
                .map(|t| t.0)
                .or(e.event_time.as_ref().map(|t| t.0))
        });
        if let Some(latest) = warnings.last() {
            stuck.message = format!(
                "{}: {}",
                latest.reason.clone().unwrap_or_default(),
                latest.message.clone().unwrap_or_default().trim()
            );
        }
    }
    Ok(())
}

pub fn lease_state(lease: &Lease) -> LeaseState {
    let spec = lease.spec.clone().unwrap_or_default();
    LeaseState {
        holder: spec.holder_identity.filter(|h| !h.is_empty()),
        renewed: spec.renew_time.or(spec.acquire_time).map(|t| to_chrono(&t.0)),
        duration_seconds: i64::from(spec.lease_duration_seconds.unwrap_or(0)),
        resource_version: lease.metadata.resource_version.clone().unwrap_or_default(),
    }
}

/// The summary the run's worker reported: its newest `EtlRunResult` (a retried pod reports
/// again; the last attempt is the one whose exit ended the Job). The operator never reads the
/// table's store.
async fn fetch_summary(run: &EtlRun, ctx: &Context) -> SummaryFetch {
    let results: Api<EtlRunResult> =
        Api::namespaced(ctx.client.clone(), &run.namespace().unwrap_or_default());
    let mine = ListParams::default().labels(&format!("{RUN_UID_LABEL}={}", run.uid().unwrap_or_default()));
    match results.list(&mine).await {
        Ok(list) => newest_result(list.items)
            .map(|r| SummaryFetch::Found(Box::new(r.spec)))
            .unwrap_or(SummaryFetch::Missing),
        Err(e) if is_status(&e, 404) => SummaryFetch::Error(format!(
            "the EtlRunResult CRD is not installed, so the worker could not report (kubectl apply \
             -f crds/etlrun.yaml, or upgrade the chart): {e}"
        )),
        Err(e) => SummaryFetch::Error(format!("EtlRunResults of {}: {e}", run.name_any())),
    }
}

/// The newest result by creation time, then by its finish time (two attempts within a second).
fn newest_result(results: Vec<EtlRunResult>) -> Option<EtlRunResult> {
    results.into_iter().max_by(|a, b| {
        let created = |r: &EtlRunResult| r.metadata.creation_timestamp.as_ref().map(|t| t.0);
        created(a)
            .cmp(&created(b))
            .then_with(|| a.spec.finished_at.cmp(&b.spec.finished_at))
    })
}

/// Whether a finished run is among the newest `keep_last` finished runs of its target.
async fn among_kept(run: &EtlRun, runs: &Api<EtlRun>, keep_last: usize) -> Result<bool, Error> {
    let table = table_id(&run.spec.target.url);
    let mut finished: Vec<(String, String)> = runs
        .list(&ListParams::default())
        .await?
        .items
        .into_iter()
        .filter(|r| table_id(&r.spec.target.url) == table)
        .filter_map(|r| {
            let status = r.status.clone()?;
            status.phase.filter(|p| p.is_finished())?;
            Some((status.finished_at.unwrap_or_default(), r.name_any()))
        })
        .collect();
    finished.sort_by(|a, b| b.cmp(a));
    Ok(finished
        .iter()
        .take(keep_last)
        .any(|(_, name)| *name == run.name_any()))
}

pub async fn reconcile(cached: Arc<EtlRun>, ctx: Arc<Context>) -> Result<Requeue, Error> {
    ctx.metrics.reconciles.inc();
    let namespace = cached.namespace().unwrap_or_default();
    let name = cached.name_any();
    let runs: Api<EtlRun> = Api::namespaced(ctx.client.clone(), &namespace);
    let jobs: Api<Job> = Api::namespaced(ctx.client.clone(), &namespace);
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), &namespace);
    let leases: Api<Lease> = Api::namespaced(ctx.client.clone(), &namespace);

    // Decide from the run as stored now, not as the watch cache last saw it: a status this
    // operator just wrote must not be written (and counted, and announced) twice.
    let Some(run) = runs.get_opt(&name).await? else {
        return Ok(Requeue::await_change());
    };
    let job = jobs.get_opt(&job_name(&run)).await?;
    let pod_list = if job.is_some() || run.metadata.deletion_timestamp.is_some() || run.status.is_some() {
        job_pods(&pods, &job_name(&run)).await?
    } else {
        Vec::new()
    };
    let lease = leases.get_opt(&lease_name(&run)).await?;
    let lease_observed = lease.as_ref().map(lease_state);
    let finished = run
        .status
        .as_ref()
        .and_then(|s| s.phase)
        .is_some_and(Phase::is_finished);
    // ConfigMaps a run that has not started would mount: binary content is refused.
    let binary_config_maps = match (&job, &run.spec.pod_template) {
        (None, Some(template)) if !finished => {
            let maps: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), &namespace);
            let mut binary = Vec::new();
            for name in template
                .volumes
                .iter()
                .filter_map(|v| v.config_map.as_ref().map(|m| &m.name))
            {
                if let Some(map) = maps.get_opt(name).await?
                    && map.binary_data.as_ref().is_some_and(|b| !b.is_empty())
                {
                    binary.push(name.clone());
                }
            }
            binary
        }
        _ => Vec::new(),
    };
    let kept = if finished && run.spec.ttl_seconds_after_finished.is_some() {
        among_kept(&run, &runs, ctx.settings.keep_last).await?
    } else {
        true
    };
    let holder_alive = match &lease_observed {
        Some(l)
            if l.expired(Utc::now()) && l.holder.as_ref().is_some_and(|h| *h != holder_identity(&run)) =>
        {
            holder_runs(&jobs, &pods, l.holder.as_deref().unwrap_or_default()).await?
        }
        _ => false,
    };
    let mut pod_states: Vec<PodState> = pod_list.iter().map(pod_state).collect();
    explain_slow_starts(&mut pod_states, &ctx, &namespace).await?;
    let mut observed = Observed {
        run: &run,
        job: job.as_ref().map(job_state),
        pods: pod_states,
        lease: lease_observed,
        summary: None,
        among_kept: kept,
        binary_config_maps,
        holder_alive,
        now: Utc::now(),
        policy: &ctx.settings.policy,
    };
    let mut actions = decide(&observed);
    if actions.contains(&Action::FetchSummary) {
        observed.summary = Some(fetch_summary(&run, &ctx).await);
        actions = decide(&observed);
    }
    tracing::debug!(run = %name, ?actions, "reconcile");
    ctx.renewals.track(&run, &observed, &actions);

    let me = holder_identity(&run);
    let acquired = lease
        .as_ref()
        .and_then(|l| l.spec.as_ref()?.acquire_time.as_ref().map(|t| to_chrono(&t.0)));
    let mut requeue: Option<Duration> = None;
    for action in actions {
        match action {
            Action::AddFinalizer => {
                let mut finalizers = run.finalizers().to_vec();
                finalizers.push(FINALIZER.to_string());
                let patch = json!({"metadata": {"finalizers": finalizers, "resourceVersion": run.resource_version()}});
                runs.patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                    .await?;
            }
            Action::RemoveFinalizer => {
                let finalizers: Vec<String> = run
                    .finalizers()
                    .iter()
                    .filter(|f| *f != FINALIZER)
                    .cloned()
                    .collect();
                let patch = json!({"metadata": {"finalizers": finalizers}});
                match runs
                    .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                    .await
                {
                    Err(e) if is_status(&e, 404) => {}
                    other => {
                        other?;
                    }
                }
            }
            Action::CreateLease => {
                let object = build_lease(&run, &me, ctx.settings.policy.lease_seconds, Utc::now(), None);
                match leases.create(&PostParams::default(), &object).await {
                    Ok(_) => {}
                    // Someone else created it first: decide again with what is there now.
                    Err(e) if is_status(&e, 409) => return Ok(Requeue::requeue(Duration::from_millis(500))),
                    Err(e) => return Err(e.into()),
                }
            }
            Action::TakeLease { resource_version } | Action::RenewLease { resource_version } => {
                let keep_acquired =
                    observed.lease.as_ref().and_then(|l| l.holder.as_deref()) == Some(me.as_str());
                let mut object = build_lease(
                    &run,
                    &me,
                    ctx.settings.policy.lease_seconds,
                    Utc::now(),
                    if keep_acquired { acquired } else { None },
                );
                object.metadata.resource_version = Some(resource_version);
                match leases
                    .replace(&lease_name(&run), &PostParams::default(), &object)
                    .await
                {
                    Ok(_) => {}
                    Err(e) if is_status(&e, 409) => return Ok(Requeue::requeue(Duration::from_millis(500))),
                    Err(e) => return Err(e.into()),
                }
            }
            Action::ReleaseLease { resource_version } => {
                let params = DeleteParams {
                    preconditions: Some(Preconditions {
                        resource_version: Some(resource_version),
                        uid: None,
                    }),
                    ..DeleteParams::default()
                };
                match leases.delete(&lease_name(&run), &params).await {
                    Err(e) if is_status(&e, 404) => {}
                    // The Lease changed since it was read (a renewal raced the release): decide
                    // again on the fresh one rather than leave it held until it expires.
                    Err(e) if is_status(&e, 409) => return Ok(Requeue::requeue(Duration::from_millis(200))),
                    other => {
                        other?;
                    }
                }
            }
            Action::CreateJob => {
                let mut queued = run.clone();
                if queued.spec.queue_name.is_none() {
                    queued.spec.queue_name = ctx.settings.default_queue_name.clone();
                }
                if queued.spec.service_account_name.is_none() {
                    queued.spec.service_account_name = ctx.settings.worker_service_account.clone();
                }
                let object = build_job(&queued, &ctx.settings.worker_image);
                match jobs.create(&PostParams::default(), &object).await {
                    // Already there (an operator restart between create and status patch): adopt it.
                    Err(e) if is_status(&e, 409) => {}
                    other => {
                        other?;
                    }
                }
            }
            Action::DeleteJob => match jobs.delete(&job_name(&run), &DeleteParams::background()).await {
                Err(e) if is_status(&e, 404) => {}
                other => {
                    other?;
                }
            },
            Action::FetchSummary => {}
            Action::PatchStatus(mut status) => {
                status.observed_generation = run.metadata.generation;
                let before = run.status.as_ref().and_then(|s| s.phase);
                // At the resourceVersion decided on: a concurrent change makes this a conflict
                // and the run is decided again, instead of a status written twice.
                let patch = json!({
                    "metadata": {"resourceVersion": run.resource_version()},
                    "status": status,
                });
                match runs
                    .patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
                    .await
                {
                    Err(e) if is_status(&e, 409) => return Ok(Requeue::requeue(Duration::from_millis(200))),
                    other => {
                        other?;
                    }
                }
                if status.phase != before
                    && let Some(phase) = status.phase
                {
                    record_phase(&ctx.metrics, phase, &status);
                }
            }
            Action::Event {
                kind,
                reason,
                message,
            } => {
                let event = Event {
                    type_: match kind {
                        EventType::Normal => KubeEventType::Normal,
                        EventType::Warning => KubeEventType::Warning,
                    },
                    reason: reason.to_string(),
                    note: Some(message.chars().take(1000).collect()),
                    action: "Reconcile".into(),
                    secondary: None,
                };
                if let Err(e) = ctx.recorder.publish(&event, &run.object_ref(&())).await {
                    tracing::warn!(run = %name, "could not publish event {reason}: {e}");
                }
            }
            Action::DeleteRun => {
                tracing::info!(run = %name, "deleting finished run after ttlSecondsAfterFinished");
                match runs.delete(&name, &DeleteParams::default()).await {
                    Err(e) if is_status(&e, 404) => {}
                    other => {
                        other?;
                    }
                }
            }
            Action::Requeue(after) => requeue = Some(requeue.map_or(after, |r| r.min(after))),
        }
    }
    ctx.failures
        .lock()
        .expect("failures")
        .remove(&format!("{namespace}/{name}"));
    Ok(requeue.map_or_else(Requeue::await_change, Requeue::requeue))
}

fn record_phase(metrics: &Metrics, phase: Phase, status: &crate::crd::EtlRunStatus) {
    metrics.phase(phase.as_str());
    if phase.is_finished() {
        for (kind, n) in [
            ("read", status.rows_read),
            ("inserted", status.rows_inserted),
            ("updated", status.rows_updated),
            ("superseded", status.rows_superseded),
            ("rejected", status.rows_rejected),
            ("blank", status.rows_blank),
        ] {
            metrics.rows(kind, n.unwrap_or(0));
        }
        let parse = |t: &Option<String>| t.as_deref().and_then(|t| DateTime::parse_from_rfc3339(t).ok());
        if let (Some(start), Some(end)) = (parse(&status.started_at), parse(&status.finished_at)) {
            metrics
                .run_duration
                .observe((end - start).num_milliseconds().max(0) as f64 / 1000.0);
        }
    }
}

/// Retries failed reconciles with exponential backoff per run (1 s doubling to 5 min).
pub fn error_policy(run: Arc<EtlRun>, error: &Error, ctx: Arc<Context>) -> Requeue {
    ctx.metrics.reconcile_failures.inc();
    let key = format!("{}/{}", run.namespace().unwrap_or_default(), run.name_any());
    let attempt = {
        let mut failures = ctx.failures.lock().expect("failures");
        let n = failures.entry(key.clone()).or_insert(0);
        *n += 1;
        *n
    };
    let delay = Duration::from_secs((1u64 << attempt.min(9)).min(300));
    tracing::warn!(run = %key, attempt, "reconcile failed: {error}; retrying in {delay:?}");
    Requeue::requeue(delay)
}

/// Runs the controller until SIGTERM/SIGINT.
pub async fn run(client: Client, settings: Settings, metrics: Arc<Metrics>) {
    let (runs, jobs): (Api<EtlRun>, Api<Job>) = match &settings.namespace {
        Some(ns) => (
            Api::namespaced(client.clone(), ns),
            Api::namespaced(client.clone(), ns),
        ),
        None => (Api::all(client.clone()), Api::all(client.clone())),
    };
    let reporter = Reporter {
        controller: MANAGED_BY.into(),
        instance: std::env::var("POD_NAME").ok(),
    };
    let ctx = Arc::new(Context {
        recorder: Recorder::new(client.clone(), reporter),
        client,
        settings,
        metrics: metrics.clone(),
        failures: Mutex::new(HashMap::new()),
        renewals: Default::default(),
    });
    // Adopt (and renew at once) the Leases of runs already guarding their tables before any
    // reconcile may start something new; retried until the API answers.
    loop {
        match ctx.renewals.adopt(&ctx.client, &runs).await {
            Ok(n) => {
                tracing::info!("adopted the table Leases of {n} running run(s)");
                break;
            }
            Err(e) => {
                tracing::warn!("cannot list EtlRuns to adopt their Leases: {e}; retrying");
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
        }
    }
    let renewer = {
        let ctx = ctx.clone();
        tokio::spawn(async move {
            ctx.renewals
                .run(ctx.client.clone(), ctx.settings.policy.lease_seconds)
                .await
        })
    };
    metrics.ready.store(true, std::sync::atomic::Ordering::SeqCst);
    tracing::info!("lakeload-operator watching EtlRuns");
    Controller::new(runs, watcher::Config::default())
        .owns(
            jobs,
            watcher::Config::default().labels(&format!("app.kubernetes.io/managed-by={MANAGED_BY}")),
        )
        .shutdown_on_signal()
        .run(reconcile, error_policy, ctx)
        .for_each(|result| async move {
            if let Err(e) = result {
                tracing::debug!("controller: {e}");
            }
        })
        .await;
    renewer.abort();
}

#[cfg(test)]
mod tests {
    use super::*;
    use lakeload_types::result::RunResultSpec;

    fn pod(status: serde_json::Value) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": "w-1", "creationTimestamp": "2026-11-23T12:00:00Z"},
            "status": status,
        }))
        .unwrap()
    }

    #[test]
    fn pods_read_as_running_stuck_or_ended() {
        let pulling = pod_state(&pod(json!({
            "phase": "Pending",
            "containerStatuses": [{"name": "worker", "image": "x", "imageID": "", "ready": false,
                "restartCount": 0, "state": {"waiting": {"reason": "ImagePullBackOff",
                "message": "Back-off pulling image \"x\""}}}],
        })));
        assert!(pulling.active);
        let stuck = pulling.stuck.unwrap();
        assert_eq!(stuck.reason, "ImagePullBackOff");
        assert!(stuck.message.contains("Back-off pulling"));
        assert_eq!(stuck.since.to_rfc3339(), "2026-11-23T12:00:00+00:00");

        // Creating its container is a wait that counts against startTimeoutSeconds (the
        // decision gives it that long: a volume that cannot be mounted keeps it there).
        let creating = pod_state(&pod(json!({
            "phase": "Pending",
            "containerStatuses": [{"name": "worker", "image": "x", "imageID": "", "ready": false,
                "restartCount": 0, "state": {"waiting": {"reason": "ContainerCreating"}}}],
        })));
        assert!(creating.active);
        assert_eq!(creating.stuck.unwrap().reason, "ContainerCreating");

        let unschedulable = pod_state(&pod(json!({
            "phase": "Pending",
            "conditions": [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                "message": "0/3 nodes are available: 3 Insufficient memory."}],
        })));
        assert_eq!(unschedulable.stuck.unwrap().reason, "Unschedulable");

        let locked = pod_state(&pod(json!({
            "phase": "Failed",
            "containerStatuses": [{"name": "worker", "image": "x", "imageID": "", "ready": false,
                "restartCount": 0, "state": {"terminated": {"exitCode": 75,
                "message": "error: locked by run r1\n"}}}],
        })));
        assert!(!locked.active);
        assert_eq!(locked.exit_code, Some(75));
        assert_eq!(
            locked.termination_message.as_deref(),
            Some("error: locked by run r1\n")
        );
    }

    fn result(created_s: i64, finished_at: &str) -> EtlRunResult {
        let spec: RunResultSpec = serde_json::from_value(json!({
            "runId": "r", "status": "succeeded", "exitCode": 0, "startedAt": "2026-01-01T00:00:00.000Z",
            "finishedAt": finished_at, "bytesRead": 0, "rowsRead": 0, "rowsBlank": 0, "rowsRejected": 0,
            "rowsInserted": 0, "rowsUpdated": 0, "rowsSuperseded": 0, "bytesWritten": 0,
            "tableChanged": false, "manifestTotal": 0, "lakeloadVersion": "0"
        }))
        .unwrap();
        let mut r = EtlRunResult::new(finished_at, spec);
        r.metadata.creation_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
            k8s_openapi::jiff::Timestamp::from_second(created_s).unwrap(),
        ));
        r
    }

    #[test]
    fn the_newest_attempts_result_is_the_runs() {
        let picked = |list: Vec<EtlRunResult>| newest_result(list).map(|r| r.spec.finished_at);
        assert_eq!(picked(vec![]), None);
        // By creation time first, whatever the list order.
        let newest = "2026-01-01T00:09:00.000Z";
        assert_eq!(
            picked(vec![result(200, newest), result(100, "2026-01-01T00:10:00.000Z")]).as_deref(),
            Some(newest)
        );
        // Two attempts created within one second: the later finish.
        assert_eq!(
            picked(vec![
                result(100, "2026-01-01T00:02:00.000Z"),
                result(100, "2026-01-01T00:01:00.000Z")
            ])
            .as_deref(),
            Some("2026-01-01T00:02:00.000Z")
        );
    }
}
