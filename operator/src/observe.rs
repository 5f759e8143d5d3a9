//! What the operator sees of one `EtlRun`, read from the API: its Job and that Job's pods,
//! its table's Lease (and when this process saw it change), the ConfigMaps it would mount,
//! whether a Lease's other holder still runs, and, once the Job ended, the result its newest
//! pod reported. Reads only; [`crate::decide`] turns this into actions and
//! [`crate::controller`] carries them out.

use chrono::{DateTime, Utc};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Event as CoreEvent, Pod};
use kube::api::{Api, ListParams};
use kube::{Client, ResourceExt};
use lakeload_types::result::{EtlRunResult, POD_UID_LABEL, RUN_UID_LABEL, RunResultSpec};

use crate::context::{Context, Error, is_status};
use crate::crd::{EtlRun, Phase};
use crate::decide::{
    JobState, LeaseState, Observed, PodState, Stuck, SummaryFetch, holder_identity, holder_job, newest_pod,
};
use crate::job::{job_name, lease_name};

/// Everything [`crate::decide::decide`] needs about `run` (as stored now), and the Lease
/// object itself (its acquire time is kept on renewal). The summary is fetched separately, once
/// the decision asks for it ([`fetch_summary`]).
pub async fn observe<'a>(run: &'a EtlRun, ctx: &'a Context) -> Result<(Observed<'a>, Option<Lease>), Error> {
    let namespace = run.namespace().unwrap_or_default();
    let jobs: Api<Job> = Api::namespaced(ctx.client.clone(), &namespace);
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), &namespace);
    let leases: Api<Lease> = Api::namespaced(ctx.client.clone(), &ctx.settings.lease_namespace);
    let job = jobs.get_opt(&job_name(run)).await?;
    let pod_list = if job.is_some() || run.metadata.deletion_timestamp.is_some() || run.status.is_some() {
        job_pods(&pods, &job_name(run)).await?
    } else {
        Vec::new()
    };
    let lease = leases.get_opt(&lease_name(run)).await?;
    let now = Utc::now();
    let lease_observed = match &lease {
        Some(l) => {
            let version = l.metadata.resource_version.as_deref().unwrap_or_default();
            Some(lease_state(
                l,
                ctx.lease_clock.observed(&lease_name(run), version, now),
            ))
        }
        None => {
            ctx.lease_clock.forget(&lease_name(run));
            None
        }
    };
    ctx.finished.note(run);
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
            // Only those the admin allows: the others are refused unread (and the operator's
            // role may read no other).
            for name in template
                .volumes
                .iter()
                .filter_map(|v| v.config_map.as_ref().map(|m| &m.name))
                .filter(|name| ctx.settings.policy.admission.config_maps.contains(name))
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
    let among_kept = !finished
        || run.spec.ttl_seconds_after_finished.is_none()
        || ctx.finished.among_newest(run, ctx.settings.keep_last);
    let holder_alive = match &lease_observed {
        Some(l) if l.expired(now) && l.holder.as_ref().is_some_and(|h| *h != holder_identity(run)) => {
            holder_runs(&ctx.client, l.holder.as_deref().unwrap_or_default()).await?
        }
        _ => false,
    };
    let mut pod_states: Vec<PodState> = pod_list.iter().map(pod_state).collect();
    explain_slow_starts(&mut pod_states, ctx, &namespace).await?;
    let observed = Observed {
        run,
        job: job.as_ref().map(job_state),
        pods: pod_states,
        lease: lease_observed,
        summary: None,
        workload: None,
        among_kept,
        binary_config_maps,
        holder_alive,
        now,
        policy: &ctx.settings.policy,
    };
    Ok((observed, lease))
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
    // The pod's own reason first (Evicted, DeadlineExceeded: the container's then says only
    // `Error`), else the container's when it is more than an exit (OOMKilled).
    let end_reason = status
        .reason
        .map(|r| match status.message.as_deref().map(str::trim) {
            Some(m) if !m.is_empty() => format!("{r}: {m}"),
            _ => r,
        })
        .or_else(|| {
            terminated
                .as_ref()?
                .reason
                .clone()
                .filter(|r| !matches!(r.as_str(), "Error" | "Completed"))
        });
    PodState {
        name: pod.metadata.name.clone().unwrap_or_default(),
        uid: pod.metadata.uid.clone().unwrap_or_default(),
        end_reason,
        terminating_since: pod.metadata.deletion_timestamp.as_ref().map(|t| to_chrono(&t.0)),
        active: phase != "Succeeded" && phase != "Failed",
        stuck: waiting.or(unschedulable),
        exit_code: terminated.as_ref().map(|t| t.exit_code),
        termination_message: terminated
            .and_then(|t| t.message)
            .filter(|m| !m.trim().is_empty()),
    }
}

/// Whether the run a Lease names (`ns/name#uid8`, in any namespace) still has a Job that has
/// not ended, or a pod that may run: a Lease whose operator stopped renewing it (a failover) is not taken over
/// while its worker still runs.
async fn holder_runs(client: &Client, holder: &str) -> Result<bool, Error> {
    let Some((namespace, job)) = holder_job(holder) else {
        return Ok(false);
    };
    let jobs: Api<Job> = Api::namespaced(client.clone(), &namespace);
    let pods: Api<Pod> = Api::namespaced(client.clone(), &namespace);
    if let Some(j) = jobs.get_opt(&job).await?
        && matches!(job_state(&j), JobState::Active | JobState::Suspended)
    {
        return Ok(true);
    }
    Ok(job_pods(&pods, &job)
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

/// A Lease as this process sees it; `observed` is when it first saw it as it is now.
pub fn lease_state(lease: &Lease, observed: DateTime<Utc>) -> LeaseState {
    let spec = lease.spec.clone().unwrap_or_default();
    LeaseState {
        holder: spec.holder_identity.filter(|h| !h.is_empty()),
        renewed: spec.renew_time.or(spec.acquire_time).map(|t| to_chrono(&t.0)),
        observed,
        duration_seconds: i64::from(spec.lease_duration_seconds.unwrap_or(0)),
        resource_version: lease.metadata.resource_version.clone().unwrap_or_default(),
    }
}

/// The summary the run's worker reported (see [`result_of_newest_pod`]). The operator never
/// reads the table's store.
pub async fn fetch_summary(run: &EtlRun, pods: &[PodState], ctx: &Context) -> SummaryFetch {
    let results: Api<EtlRunResult> =
        Api::namespaced(ctx.client.clone(), &run.namespace().unwrap_or_default());
    let mine = ListParams::default().labels(&format!("{RUN_UID_LABEL}={}", run.uid().unwrap_or_default()));
    match results.list(&mine).await {
        Ok(list) => {
            let (taken, passed_over) = result_of_newest_pod(list.items, pods, run);
            for (name, why) in passed_over {
                tracing::warn!(run = %run.name_any(), result = %name, "EtlRunResult not taken: {why}");
            }
            taken
                .map(|spec| SummaryFetch::Found(Box::new(spec)))
                .unwrap_or(SummaryFetch::Missing)
        }
        Err(e) if is_status(&e, 404) => SummaryFetch::Error(format!(
            "the EtlRunResult CRD is not installed, so the worker could not report (kubectl apply \
             -f crds/etlrun.yaml, or upgrade the chart): {e}"
        )),
        Err(e) => SummaryFetch::Error(format!("EtlRunResults of {}: {e}", run.name_any())),
    }
}

/// The result a run's status comes from: the one created by the newest pod of the run's
/// current Job (the attempt whose end ended the Job), owned by the run and carrying its run
/// id. The pod is known by the result's pod-uid label, which the chart's admission policy
/// lets only that pod write. Results of an earlier attempt, of another run's pod, or written
/// by anyone else are passed over (returned with why, for the log).
pub fn result_of_newest_pod(
    results: Vec<EtlRunResult>,
    pods: &[PodState],
    run: &EtlRun,
) -> (Option<RunResultSpec>, Vec<(String, String)>) {
    let newest = newest_pod(pods).map(|p| p.uid.as_str()).filter(|u| !u.is_empty());
    let run_uid = run.uid().unwrap_or_default();
    let run_id = crate::job::run_id(run);
    let mut passed_over = Vec::new();
    let mut taken: Option<EtlRunResult> = None;
    for result in results {
        let name = result.name_any();
        let pod = result.labels().get(POD_UID_LABEL).map(String::as_str);
        let owned = result
            .owner_references()
            .iter()
            .any(|o| o.kind == "EtlRun" && o.uid == run_uid);
        let why = if pod.is_none() {
            Some("it names no pod".to_string())
        } else if pod != newest {
            Some(format!(
                "pod {} is not the newest pod of Job {}",
                pod.unwrap_or_default(),
                job_name(run)
            ))
        } else if !owned {
            Some("it is not owned by the run".to_string())
        } else if result.spec.run_id != run_id {
            Some(format!(
                "its runId {} is not the run's {run_id}",
                result.spec.run_id
            ))
        } else {
            None
        };
        match why {
            Some(why) => passed_over.push((name, why)),
            None => {
                let created = |r: &EtlRunResult| r.metadata.creation_timestamp.as_ref().map(|t| t.0);
                if taken.as_ref().is_none_or(|t| created(&result) > created(t)) {
                    taken = Some(result);
                }
            }
        }
    }
    (taken.map(|r| r.spec), passed_over)
}

/// What Kueue says about `job`'s Workload: each condition as `Type=Status (Reason: message)`,
/// or why there is nothing to say (no Workload: Kueue is not running, or ignores the queue).
pub async fn describe_workload(client: &Client, namespace: &str, job: &str) -> String {
    use kube::api::DynamicObject;
    use kube::discovery::{ApiResource, oneshot};
    let jobs: Api<Job> = Api::namespaced(client.clone(), namespace);
    let uid = match jobs.get_opt(job).await {
        Ok(Some(j)) => j.metadata.uid.unwrap_or_default(),
        Ok(None) => return format!("Job {job} is gone"),
        Err(e) => return format!("cannot read Job {job}: {e}"),
    };
    let resource: ApiResource = match oneshot::group(client, "kueue.x-k8s.io").await {
        Ok(group) => match group.recommended_kind("Workload") {
            Some((resource, _)) => resource,
            None => return "the kueue.x-k8s.io API has no Workload kind".into(),
        },
        Err(e) => {
            return format!("Kueue's API (kueue.x-k8s.io) is not served, so nothing admits the Job: {e}");
        }
    };
    let workloads: Api<DynamicObject> = Api::namespaced_with(client.clone(), namespace, &resource);
    let list = match workloads.list(&ListParams::default()).await {
        Ok(list) => list.items,
        Err(e) => return format!("cannot list Kueue Workloads: {e}"),
    };
    let Some(workload) = list
        .iter()
        .find(|w| w.owner_references().iter().any(|o| o.uid == uid))
    else {
        return format!(
            "Kueue made no Workload for Job {job}: is Kueue running, and does it manage this \
             namespace's Jobs?"
        );
    };
    let conditions = workload.data["status"]["conditions"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let said: Vec<String> = conditions
        .iter()
        .map(|c| {
            let text = |k: &str| c[k].as_str().unwrap_or_default().to_string();
            format!(
                "{}={} ({}: {})",
                text("type"),
                text("status"),
                text("reason"),
                text("message").trim()
            )
        })
        .collect();
    let said = if said.is_empty() {
        "no conditions yet".to_string()
    } else {
        said.join("; ")
    };
    format!("Workload {}: {said}", workload.name_any())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

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

        let oom = pod_state(&pod(json!({
            "phase": "Failed",
            "containerStatuses": [{"name": "worker", "image": "x", "imageID": "", "ready": false,
                "restartCount": 0, "state": {"terminated": {"exitCode": 137, "reason": "OOMKilled"}}}],
        })));
        assert_eq!(
            (oom.end_reason.as_deref(), oom.exit_code),
            (Some("OOMKilled"), Some(137))
        );
        let evicted = pod_state(&pod(json!({
            "phase": "Failed", "reason": "Evicted",
            "message": "The node was low on resource: memory. ",
            "containerStatuses": [{"name": "worker", "image": "x", "imageID": "", "ready": false,
                "restartCount": 0, "state": {"terminated": {"exitCode": 137, "reason": "Error"}}}],
        })));
        assert_eq!(
            evicted.end_reason.as_deref(),
            Some("Evicted: The node was low on resource: memory.")
        );
        let failed = pod_state(&pod(json!({
            "phase": "Failed",
            "containerStatuses": [{"name": "worker", "image": "x", "imageID": "", "ready": false,
                "restartCount": 0, "state": {"terminated": {"exitCode": 1, "reason": "Error"}}}],
        })));
        assert_eq!(
            failed.end_reason, None,
            "a plain exit says nothing more than its code"
        );

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

    /// A result as pod `pod` of run `run` would create it, `created_s` seconds after the epoch.
    fn result(run: &EtlRun, pod: &str, created_s: i64, rows: u64) -> EtlRunResult {
        let spec: RunResultSpec = serde_json::from_value(json!({
            "runId": crate::job::run_id(run), "status": "succeeded", "exitCode": 0,
            "startedAt": "2026-01-01T00:00:00.000Z", "finishedAt": "2026-01-01T00:01:00.000Z",
            "bytesRead": 0, "rowsRead": rows, "rowsBlank": 0, "rowsRejected": 0,
            "rowsInserted": 0, "rowsUpdated": 0, "rowsSuperseded": 0, "bytesWritten": 0,
            "tableChanged": false, "manifestTotal": 0, "lakeloadVersion": "0"
        }))
        .unwrap();
        let owner = lakeload_types::result::RunOwner {
            name: run.name_any(),
            uid: run.uid().unwrap(),
            pod_uid: Some(pod.into()),
        };
        let mut r = EtlRunResult::for_run(&owner, spec);
        r.metadata.name = Some(format!("{pod}-{created_s}"));
        r.metadata.creation_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
            k8s_openapi::jiff::Timestamp::from_second(created_s).unwrap(),
        ));
        r
    }

    fn pods(uids: &[&str]) -> Vec<PodState> {
        uids.iter()
            .map(|u| PodState {
                name: format!("w-{u}"),
                uid: u.to_string(),
                ..Default::default()
            })
            .collect()
    }

    #[test]
    fn only_the_newest_pods_own_result_for_the_run_is_taken() {
        let run = crate::crd::sample_run("r");
        let rows = |list: Vec<EtlRunResult>, pods: &[PodState]| {
            result_of_newest_pod(list, pods, &run).0.map(|s| s.rows_read)
        };
        assert_eq!(rows(vec![], &pods(&["p2"])), None);
        // The retry's result, not the first attempt's, whatever the creation times say.
        let attempts = vec![result(&run, "p1", 300, 1), result(&run, "p2", 200, 2)];
        assert_eq!(rows(attempts.clone(), &pods(&["p1", "p2"])), Some(2));
        // The newest pod died without reporting: the older attempt's result does not stand in.
        assert_eq!(rows(attempts, &pods(&["p1", "p2", "p3"])), None);
        // No pods left to vouch for a result: none is taken.
        assert_eq!(rows(vec![result(&run, "p1", 1, 1)], &[]), None);
        // Two results of one pod: the later.
        assert_eq!(
            rows(
                vec![result(&run, "p1", 100, 1), result(&run, "p1", 101, 5)],
                &pods(&["p1"])
            ),
            Some(5)
        );

        // Forged: another run's id, another owner, no pod label.
        let mut foreign_id = result(&run, "p1", 1, 9);
        foreign_id.spec.run_id = "20260101T000000000Z-other".into();
        let mut foreign_owner = result(&run, "p1", 1, 9);
        foreign_owner.metadata.owner_references.as_mut().unwrap()[0].uid = "someone-else".into();
        let mut unlabelled = result(&run, "p1", 1, 9);
        unlabelled.metadata.labels.as_mut().unwrap().remove(POD_UID_LABEL);
        for (forged, why) in [
            (foreign_id, "runId"),
            (foreign_owner, "not owned"),
            (unlabelled, "names no pod"),
        ] {
            let (taken, passed_over) = result_of_newest_pod(vec![forged], &pods(&["p1"]), &run);
            assert_eq!(taken, None, "{why}");
            assert!(passed_over[0].1.contains(why), "{passed_over:?}");
        }
    }
}
