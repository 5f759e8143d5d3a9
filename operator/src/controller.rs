//! The controller's edge: for each `EtlRun`, observe it ([`crate::observe`]), ask
//! [`decide`] what to do, and carry the actions out against the API.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::StreamExt;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::coordination::v1::Lease;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams, Preconditions};
use kube::runtime::controller::{Action as Requeue, Controller};
use kube::runtime::events::{Event, EventType as KubeEventType, Recorder, Reporter};
use kube::runtime::watcher;
use kube::{Client, Resource, ResourceExt};
use serde_json::json;

use crate::context::is_status;
pub use crate::context::{Context, Error, Settings};
use crate::crd::{EtlRun, Phase};
use crate::decide::{Action, EventType, FINALIZER, decide, holder_identity};
use crate::job::{MANAGED_BY, build_job, build_lease, job_name, lease_name};
use crate::metrics::Metrics;
use crate::observe::{describe_workload, fetch_summary, observe, to_chrono};
use crate::shutdown::Shutdown;

pub async fn reconcile(cached: Arc<EtlRun>, ctx: Arc<Context>) -> Result<Requeue, Error> {
    ctx.metrics.reconciles.inc();
    let namespace = cached.namespace().unwrap_or_default();
    let name = cached.name_any();
    let runs: Api<EtlRun> = Api::namespaced(ctx.client.clone(), &namespace);
    let jobs: Api<Job> = Api::namespaced(ctx.client.clone(), &namespace);
    let leases: Api<Lease> = Api::namespaced(ctx.client.clone(), &ctx.settings.lease_namespace);

    // Decide from the run as stored now, not as the watch cache last saw it: a status this
    // operator just wrote must not be written (and counted, and announced) twice.
    let Some(run) = runs.get_opt(&name).await? else {
        ctx.finished.forget(&namespace, &name);
        return Ok(Requeue::await_change());
    };
    let (mut observed, lease) = observe(&run, &ctx).await?;
    let mut actions = decide(&observed);
    if actions.contains(&Action::FetchSummary) {
        observed.summary = Some(fetch_summary(&run, &observed.pods, &ctx).await);
        actions = decide(&observed);
    }
    if actions.contains(&Action::FetchWorkload) {
        observed.workload = Some(describe_workload(&ctx.client, &namespace, &job_name(&run)).await);
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
                let object = build_lease(
                    &run,
                    &ctx.settings.lease_namespace,
                    &me,
                    ctx.settings.policy.lease_seconds,
                    Utc::now(),
                    None,
                );
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
                    &ctx.settings.lease_namespace,
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
                for (key, value) in &ctx.settings.worker_settings {
                    queued
                        .spec
                        .settings
                        .entry(key.clone())
                        .or_insert_with(|| value.clone());
                }
                let object = build_job(&queued, &ctx.settings.worker_image, ctx.settings.aws_config_files);
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
            Action::FetchSummary | Action::FetchWorkload => {}
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

/// Runs the controller until SIGTERM/SIGINT (`shutdown`).
pub async fn run(client: Client, settings: Settings, metrics: Arc<Metrics>, shutdown: Shutdown) {
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
    let recorder = Recorder::new(client.clone(), reporter);
    let ctx = Arc::new(Context::new(client, settings, metrics.clone(), recorder));
    // Adopt (and renew at once) the Leases of runs already guarding their tables before any
    // reconcile may start something new, and index the finished ones; retried until the API
    // answers.
    let all = ListParams::default();
    loop {
        let listed = tokio::select! {
            listed = runs.list(&all) => listed,
            _ = shutdown.requested() => return,
        };
        let adopted = match listed {
            Ok(list) => {
                for run in &list.items {
                    ctx.finished.note(run);
                }
                ctx.renewals.adopt(&ctx.client, &list.items).await
            }
            Err(e) => Err(e),
        };
        match adopted {
            Ok(n) => {
                tracing::info!("adopted the table Leases of {n} running run(s)");
                break;
            }
            Err(e) => {
                tracing::warn!("cannot list EtlRuns to adopt their Leases: {e}; retrying");
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(2)) => {}
                    _ = shutdown.requested() => return,
                }
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
        .graceful_shutdown_on(shutdown.requested())
        .run(reconcile, error_policy, ctx)
        .for_each(|result| async move {
            if let Err(e) = result {
                tracing::debug!("controller: {e}");
            }
        })
        .await;
    renewer.abort();
}
