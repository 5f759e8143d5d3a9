//! The reconcile decision, as a pure function: what the operator observed about one `EtlRun`
//! (the run, its Job and pods, its target's Lease, the worker's summary) → the actions to take.
//! All Kubernetes and S3 calls happen at the edge (`controller.rs`), so every branch here is a
//! unit test over a table of observed states.
//!
//! Two rules hold throughout: the table's Lease is held while any pod of the run may still run
//! (deleting a run, failing it or putting it back to wait first stops its pods), and a run is
//! only started again once its previous Job is gone.

use chrono::{DateTime, Duration, Utc};

use crate::admit::{Admission, refusal};
use crate::crd::{EtlRun, EtlRunStatus, MANIFEST_CAP, Phase};
use crate::job::EXIT_LOCKED;

pub const FINALIZER: &str = "lakeload.io/release-lease";
/// Reads of a finished run's summary before the run is failed as `SummaryUnreadable`.
pub const SUMMARY_ATTEMPTS: u32 = 5;

/// What the Job says about the worker.
#[derive(Debug, Clone, PartialEq)]
pub enum JobState {
    Active,
    /// Created suspended for Kueue and not admitted yet, or suspended again (evicted).
    Suspended,
    /// Being deleted (it has a deletion timestamp); its pods may still run.
    Deleting,
    Succeeded,
    Failed {
        message: String,
    },
}

/// One pod of the run's Job.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct PodState {
    pub name: String,
    pub uid: String,
    /// Not yet Succeeded or Failed: it runs, or may still start.
    pub active: bool,
    /// When its deletion was asked for, if it is being deleted (Terminating).
    pub terminating_since: Option<DateTime<Utc>>,
    /// Why it has not started, if it is stuck: a waiting reason of the worker container
    /// (`ErrImagePull`, `CreateContainerConfigError`, …) or `Unschedulable`.
    pub stuck: Option<Stuck>,
    pub exit_code: Option<i32>,
    /// The worker's last log lines, when it failed (`FallbackToLogsOnError`).
    pub termination_message: Option<String>,
    /// Why it ended, when the kubelet says more than an exit code: the pod's reason
    /// (`Evicted`, `DeadlineExceeded`) or the worker container's (`OOMKilled`), with its message.
    pub end_reason: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Stuck {
    pub reason: String,
    pub message: String,
    /// When the pod was created: how long it has been unable to start.
    pub since: DateTime<Utc>,
}

impl Stuck {
    /// Reasons no wait can cure: the run fails at once.
    fn is_permanent(&self) -> bool {
        matches!(self.reason.as_str(), "ErrImageNeverPull" | "InvalidImageName")
    }
}

/// The target table's Lease, as observed.
#[derive(Debug, Clone, PartialEq)]
pub struct LeaseState {
    pub holder: Option<String>,
    /// `renewTime` as its writer wrote it (our own renewals are timed by it).
    pub renewed: Option<DateTime<Utc>>,
    /// When this process first saw the Lease as it is now (see `lease_clock`): what expiry
    /// counts from, whatever the writer's clock said.
    pub observed: DateTime<Utc>,
    pub duration_seconds: i64,
    pub resource_version: String,
}

impl LeaseState {
    /// Whether its holder has not renewed it for a whole duration, by this process's clock.
    pub fn expired(&self, now: DateTime<Utc>) -> bool {
        self.observed + Duration::seconds(self.duration_seconds) < now
    }
}

/// The summary the worker reported (its newest `EtlRunResult`), fetched once the Job has ended.
#[derive(Debug, Clone, PartialEq)]
pub enum SummaryFetch {
    Found(Box<lakeload_types::result::RunResultSpec>),
    /// No result: the worker never held its S3 lock (locked, exit 75), crashed first, or could
    /// not reach the API (its termination message says why).
    Missing,
    Error(String),
}

/// The operator's settings that decisions depend on.
#[derive(Debug, Clone)]
pub struct Policy {
    pub lease_seconds: i64,
    /// How long a pod may stay unable to start (image pull, missing Secret, unschedulable).
    pub start_timeout_seconds: i64,
    /// Wait before a run whose worker found the S3 lock taken starts a new Job.
    pub lock_retry_seconds: i64,
    /// How long a run's Job may wait for Kueue to admit it (runs may set their own).
    pub queue_timeout_seconds: i64,
    /// What runs may ask for (images, accounts, Secrets, env, volumes, network).
    pub admission: Admission,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            lease_seconds: 60,
            start_timeout_seconds: 300,
            lock_retry_seconds: 60,
            queue_timeout_seconds: 3600,
            admission: Admission::default(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Observed<'a> {
    pub run: &'a EtlRun,
    pub job: Option<JobState>,
    /// The pods of the run's Job (empty when it has none, or no Job).
    pub pods: Vec<PodState>,
    pub lease: Option<LeaseState>,
    /// `None` until the edge has fetched it (it does so when `decide` asks).
    pub summary: Option<SummaryFetch>,
    /// What Kueue says about the Job's Workload (its conditions, or that there is none);
    /// `None` until the edge has fetched it (when `decide` asks: a queued run timed out).
    pub workload: Option<String>,
    /// Whether this run is one of the newest `keep_last` finished runs of its target.
    pub among_kept: bool,
    /// ConfigMaps the run's pod template mounts that carry `binaryData` (looked up by the
    /// edge before a run starts).
    pub binary_config_maps: Vec<String>,
    /// Whether the run holding the table's Lease (another run) still has a live Job or pod
    /// (looked up by the edge when that Lease has lapsed): its Lease is then not taken over.
    pub holder_alive: bool,
    pub now: DateTime<Utc>,
    pub policy: &'a Policy,
}

#[derive(Debug, Clone, PartialEq)]
pub enum EventType {
    Normal,
    Warning,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    AddFinalizer,
    RemoveFinalizer,
    /// Create the Lease (it does not exist).
    CreateLease,
    /// Replace the Lease (free, expired, or ours) at this resourceVersion.
    TakeLease {
        resource_version: String,
    },
    RenewLease {
        resource_version: String,
    },
    ReleaseLease {
        resource_version: String,
    },
    CreateJob,
    /// Delete the Job; the garbage collector then stops its pods.
    DeleteJob,
    /// Fetch the worker's summary, then decide again.
    FetchSummary,
    /// Describe the Job's Kueue Workload (its conditions), then decide again.
    FetchWorkload,
    PatchStatus(Box<EtlRunStatus>),
    Event {
        kind: EventType,
        reason: &'static str,
        message: String,
    },
    DeleteRun,
    Requeue(std::time::Duration),
}

/// The identity this run writes into the Lease: namespace/name plus its uid, so a new run
/// with a reused name is a different holder.
pub fn holder_identity(run: &EtlRun) -> String {
    let uid = run.metadata.uid.as_deref().unwrap_or("");
    format!(
        "{}/{}#{}",
        run.metadata.namespace.as_deref().unwrap_or(""),
        run.metadata.name.as_deref().unwrap_or(""),
        &uid[..uid.len().min(8)]
    )
}

/// The namespace and Job of the run a holder identity names (see [`holder_identity`]), if it
/// reads as one.
pub fn holder_job(holder: &str) -> Option<(String, String)> {
    let (run, uid) = holder.rsplit_once('#')?;
    let (namespace, name) = run.split_once('/')?;
    Some((namespace.to_string(), crate::job::job_name_of(name, uid)))
}

/// The newest of a Job's pods, listed oldest first: the attempt whose end ended the Job (a
/// retried pod's predecessors say nothing about why the last one died, and their results are
/// not the run's).
pub fn newest_pod(pods: &[PodState]) -> Option<&PodState> {
    pods.last()
}

/// Sets a condition, keeping its transition time when its status does not change.
fn set_condition(
    status: &mut EtlRunStatus,
    run: &EtlRun,
    kind: &str,
    value: &str,
    reason: &str,
    message: &str,
    now: DateTime<Utc>,
) {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
    let previous = status.conditions.iter().find(|c| c.type_ == kind).cloned();
    let transition = match &previous {
        Some(c) if c.status == value => c.last_transition_time.clone(),
        _ => Time(k8s_openapi::jiff::Timestamp::from_second(now.timestamp()).unwrap_or_default()),
    };
    status.conditions.retain(|c| c.type_ != kind);
    status.conditions.push(Condition {
        type_: kind.to_string(),
        status: value.to_string(),
        reason: reason.to_string(),
        message: message.chars().take(1000).collect(),
        last_transition_time: transition,
        observed_generation: run.metadata.generation,
    });
}

/// Sets phase, reason and message, and the `Succeeded` condition that goes with them (`True`
/// once succeeded, `False` once failed, `Unknown` before).
fn set_phase(
    status: &mut EtlRunStatus,
    run: &EtlRun,
    phase: Phase,
    reason: &str,
    message: &str,
    now: DateTime<Utc>,
) {
    status.phase = Some(phase);
    status.reason = Some(reason.into());
    status.message = Some(message.into());
    let value = match phase {
        Phase::Succeeded => "True",
        Phase::Failed => "False",
        Phase::Pending | Phase::Running => "Unknown",
    };
    set_condition(status, run, "Succeeded", value, reason, message, now);
}

fn status(run: &EtlRun) -> EtlRunStatus {
    run.status.clone().unwrap_or_default()
}

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

fn parse_time(t: Option<&str>) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(t?)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

fn secs(s: i64) -> std::time::Duration {
    std::time::Duration::from_secs(s.max(1) as u64)
}

const SETTLE: std::time::Duration = std::time::Duration::from_secs(2);

impl Observed<'_> {
    /// Whether the run guards its table now: it holds the Lease and has a Job, or a pod that
    /// may still run. The edge keeps such Leases renewed on a timer of its own, so that a
    /// reconcile in error back-off cannot let one lapse.
    pub fn guarding(&self) -> bool {
        self.ours().is_some() && (self.job.is_some() || self.pods_active())
    }

    fn ours(&self) -> Option<&LeaseState> {
        let me = holder_identity(self.run);
        self.lease
            .as_ref()
            .filter(|l| l.holder.as_deref() == Some(me.as_str()))
    }

    /// The newest pod's termination message (its last log lines).
    fn last_words(&self) -> Option<&str> {
        newest_pod(&self.pods)?.termination_message.as_deref()
    }

    /// How the newest pod ended (`OOMKilled`, `Evicted: …`) and its last words after `lead`,
    /// or where to look when it said nothing.
    fn quoted_last_words(&self, lead: &str) -> String {
        let pod = newest_pod(&self.pods);
        let ended = pod.and_then(|p| {
            let reason = p.end_reason.as_deref()?;
            let code = p
                .exit_code
                .map(|c| format!(", exit code {c}"))
                .unwrap_or_default();
            Some(format!("; pod {} ended {reason}{code}", p.name))
        });
        let words = self.last_words().map(|m| format!("{lead}{}", m.trim()));
        match (ended, words) {
            (None, None) => "; see the Job's pod logs".to_string(),
            (ended, words) => format!("{}{}", ended.unwrap_or_default(), words.unwrap_or_default()),
        }
    }

    /// Whether a pod of the run may still run. A pod left Terminating for longer than
    /// `startTimeoutSeconds` is on a node that no longer answers (a live kubelet ends a pod
    /// within its grace period): it no longer holds the table. Should its worker still be
    /// running somewhere, it holds the table's S3 lock, which keeps the next run out (exit 75).
    fn pods_active(&self) -> bool {
        self.pods.iter().any(|p| p.active && self.lost_since(p).is_none())
    }

    /// When an active pod was asked to stop, if that is longer ago than `startTimeoutSeconds`.
    fn lost_since(&self, pod: &PodState) -> Option<DateTime<Utc>> {
        pod.terminating_since
            .filter(|since| self.now - *since >= Duration::seconds(self.policy.start_timeout_seconds))
    }

    /// Renews our Lease if a third of it has passed.
    fn renew_if_due(&self, actions: &mut Vec<Action>) {
        if let Some(lease) = self.ours() {
            let due = lease
                .renewed
                .is_none_or(|r| self.now - r >= Duration::seconds(self.policy.lease_seconds / 3));
            if due {
                actions.push(Action::RenewLease {
                    resource_version: lease.resource_version.clone(),
                });
            }
        }
    }

    /// Stops the run's Job and keeps the table guarded until its pods are gone; then releases
    /// the Lease. Returns whether the run is clear (no Job, no pod).
    fn wind_down(&self, actions: &mut Vec<Action>) -> bool {
        if matches!(
            self.job,
            Some(JobState::Active | JobState::Suspended | JobState::Succeeded | JobState::Failed { .. })
        ) {
            actions.push(Action::DeleteJob);
        }
        if self.job.is_some() || self.pods_active() {
            self.renew_if_due(actions);
            actions.push(Action::Requeue(SETTLE));
            return false;
        }
        if let Some(lease) = self.ours() {
            actions.push(Action::ReleaseLease {
                resource_version: lease.resource_version.clone(),
            });
        }
        true
    }
}

pub fn decide(o: &Observed) -> Vec<Action> {
    let run = o.run;
    let current = status(run);
    let phase = current.phase;

    // Deletion: stop the Job, wait for its pods to stop, release the Lease, let go.
    if run.metadata.deletion_timestamp.is_some() {
        let mut actions = Vec::new();
        if o.wind_down(&mut actions) {
            actions.push(Action::RemoveFinalizer);
        }
        return actions;
    }
    let has_finalizer = run
        .metadata
        .finalizers
        .as_ref()
        .is_some_and(|f| f.iter().any(|f| f == FINALIZER));
    if !has_finalizer {
        return vec![
            Action::AddFinalizer,
            Action::Requeue(std::time::Duration::from_millis(100)),
        ];
    }

    // Finished: the Job ended (or was stopped); release the Lease once no pod can run, then
    // garbage-collect after the TTL.
    if phase.is_some_and(Phase::is_finished) {
        let mut actions = Vec::new();
        if o.pods_active()
            || matches!(
                o.job,
                Some(JobState::Active | JobState::Suspended | JobState::Deleting)
            )
        {
            // A run failed while its pod was stuck: stop it before letting go of the table.
            o.wind_down(&mut actions);
            return actions;
        }
        if let Some(lease) = o.ours() {
            actions.push(Action::ReleaseLease {
                resource_version: lease.resource_version.clone(),
            });
        }
        if let (Some(ttl), Some(finished)) = (
            run.spec.ttl_seconds_after_finished,
            parse_time(current.finished_at.as_deref()),
        ) {
            let expires = finished + Duration::seconds(ttl);
            if o.now < expires {
                actions.push(Action::Requeue(secs((expires - o.now).num_seconds() + 1)));
            } else if o.among_kept {
                // Kept as one of the newest runs of its target: look again later, when newer
                // runs may have finished.
                actions.push(Action::Requeue(secs(ttl.clamp(5, 300))));
            } else {
                actions.push(Action::DeleteRun);
            }
        }
        return actions;
    }

    match &o.job {
        Some(JobState::Deleting) => {
            // Our own stop (a lock retry) in progress: guard the table until it is gone.
            let mut actions = Vec::new();
            o.wind_down(&mut actions);
            actions
        }
        Some(JobState::Active) => active(o, &current),
        Some(JobState::Suspended) => queued(o, &current),
        Some(finished) => match &o.summary {
            None => vec![Action::FetchSummary],
            Some(summary) => finish(o, &current, finished, summary),
        },
        None if phase == Some(Phase::Running) => {
            // The Job was removed from under a running EtlRun.
            let mut next = current.clone();
            let message = format!(
                "Job {} disappeared before it finished",
                current.job_name.unwrap_or_default()
            );
            set_phase(&mut next, run, Phase::Failed, "JobMissing", &message, o.now);
            next.finished_at = Some(rfc3339(o.now));
            let mut actions = vec![Action::PatchStatus(Box::new(next))];
            o.wind_down(&mut actions);
            actions
        }
        None => start(o, &current),
    }
}

/// The Job waits in its Kueue queue (or was evicted back into it): the run keeps the table's
/// Lease (it is next for that table) and shows `Pending`/`Queued`; an eviction is not a failure.
///
/// A run not admitted within its `queueTimeoutSeconds` (a stopped, full or mistyped queue)
/// fails `NotAdmitted`, quoting what Kueue says about its Workload, and frees the table.
fn queued(o: &Observed, current: &EtlRunStatus) -> Vec<Action> {
    let mut actions = Vec::new();
    o.renew_if_due(&mut actions);
    let queue = o.run.spec.queue_name.as_deref().unwrap_or("the default queue");
    let timeout = o
        .run
        .spec
        .queue_timeout_seconds
        .unwrap_or(o.policy.queue_timeout_seconds);
    let since =
        parse_time(current.queued_at.as_deref()).filter(|_| current.reason.as_deref() == Some("Queued"));
    if let Some(since) = since
        && o.now - since >= Duration::seconds(timeout)
    {
        let Some(workload) = &o.workload else {
            return vec![Action::FetchWorkload];
        };
        let message = format!(
            "Kueue did not admit the Job within queueTimeoutSeconds = {timeout} (queue {queue}, \
             waiting since {}): {workload}",
            rfc3339(since)
        );
        let mut actions = fail_now(o, current, "NotAdmitted", message);
        actions.push(Action::DeleteJob);
        actions.push(Action::Requeue(SETTLE));
        return actions;
    }
    if since.is_none() {
        let message = format!("the Job waits for Kueue to admit it (queue {queue})");
        let mut next = current.clone();
        set_phase(&mut next, o.run, Phase::Pending, "Queued", &message, o.now);
        next.queued_at = Some(rfc3339(o.now));
        actions.push(Action::PatchStatus(Box::new(next)));
        actions.push(Action::Event {
            kind: EventType::Normal,
            reason: "Queued",
            message,
        });
    }
    let left = since.map_or(timeout, |since| timeout - (o.now - since).num_seconds());
    actions.push(Action::Requeue(secs((o.policy.lease_seconds / 3).min(left + 1))));
    actions
}

/// The Job runs: keep the Lease, watch for a pod that cannot start.
fn active(o: &Observed, current: &EtlRunStatus) -> Vec<Action> {
    let mut actions = Vec::new();
    o.renew_if_due(&mut actions);
    let timeout = Duration::seconds(o.policy.start_timeout_seconds);
    // Every pod left Terminating on a node that no longer answers: the Job would wait for them
    // forever (its replacement pods wait until they are gone), so the run fails and the table
    // is freed (the worker's S3 lock still guards it, should one be running after all).
    let lost: Vec<(&PodState, DateTime<Utc>)> = o
        .pods
        .iter()
        .filter(|p| p.active)
        .filter_map(|p| Some((p, o.lost_since(p)?)))
        .collect();
    if !lost.is_empty() && !o.pods_active() {
        let (pod, since) = lost[0];
        let message = format!(
            "pod {} has been Terminating since {} (over startTimeoutSeconds = {}): its node no \
             longer answers; the run stops and frees the table",
            pod.name,
            rfc3339(since),
            o.policy.start_timeout_seconds
        );
        actions.extend(fail_now(o, current, "PodLost", message));
        actions.push(Action::DeleteJob);
        actions.push(Action::Requeue(SETTLE));
        return actions;
    }
    if let Some((pod, stuck)) = o.pods.iter().find_map(|p| {
        let stuck = p.stuck.as_ref()?;
        (p.active && (stuck.is_permanent() || o.now - stuck.since >= timeout)).then_some((p, stuck))
    }) {
        let message = format!(
            "pod {} could not start: {}: {}",
            pod.name, stuck.reason, stuck.message
        );
        actions.extend(fail_now(o, current, "PodNotStarted", message));
        actions.push(Action::DeleteJob);
        actions.push(Action::Requeue(SETTLE));
        return actions;
    }
    if current.phase != Some(Phase::Running) || current.reason.as_deref() != Some("JobRunning") {
        let mut next = current.clone();
        next.phase = Some(Phase::Running);
        next.reason = Some("JobRunning".into());
        next.message = Some("the worker is running".into());
        actions.push(Action::PatchStatus(Box::new(next)));
    }
    // Stuck pods are looked at again when their deadline passes.
    let next_look = o
        .pods
        .iter()
        .filter_map(|p| p.stuck.as_ref())
        .map(|s| (s.since + timeout - o.now).num_seconds() + 1)
        .fold(o.policy.lease_seconds / 3, i64::min);
    actions.push(Action::Requeue(secs(next_look)));
    actions
}

fn fail_now(o: &Observed, current: &EtlRunStatus, reason: &'static str, message: String) -> Vec<Action> {
    let mut next = current.clone();
    set_phase(&mut next, o.run, Phase::Failed, reason, &message, o.now);
    next.finished_at = Some(rfc3339(o.now));
    vec![
        Action::PatchStatus(Box::new(next)),
        Action::Event {
            kind: EventType::Warning,
            reason,
            message,
        },
    ]
}

/// No Job yet: check what the run asks for, take the Lease if we can, then create the Job.
fn start(o: &Observed, current: &EtlRunStatus) -> Vec<Action> {
    let me = holder_identity(o.run);
    if let Some(refusal) = refusal(o.run, &o.policy.admission, &o.binary_config_maps) {
        return fail_now(o, current, refusal.reason, refusal.message);
    }
    if o.pods_active() {
        // Pods of an earlier Job of this run are still stopping.
        return vec![Action::Requeue(SETTLE)];
    }
    if let Some(after) = parse_time(current.retry_after.as_deref())
        && o.now < after
    {
        return vec![Action::Requeue(secs((after - o.now).num_seconds() + 1))];
    }
    let mut actions = Vec::new();
    match &o.lease {
        None => actions.push(Action::CreateLease),
        Some(l) if l.holder.as_deref() == Some(me.as_str()) || l.holder.is_none() => {
            actions.push(Action::TakeLease {
                resource_version: l.resource_version.clone(),
            })
        }
        Some(l) if l.expired(o.now) && !o.holder_alive => {
            actions.push(Action::TakeLease {
                resource_version: l.resource_version.clone(),
            });
            actions.push(Action::Event {
                kind: EventType::Warning,
                reason: "LeaseTakenOver",
                message: format!(
                    "took over the table lease from {}, which stopped renewing it",
                    l.holder.as_deref().unwrap_or("?")
                ),
            });
        }
        Some(l) => {
            let holder = l.holder.clone().unwrap_or_default();
            let message = match l.expired(o.now) {
                // Its operator stopped renewing (a failover), but its worker still runs.
                true => format!(
                    "waiting for {holder}: its lease on the table lapsed, but its Job still runs; \
                     the table is taken over only once it has ended"
                ),
                false => format!("waiting for {holder}, which holds the table's lease"),
            };
            let mut next = current.clone();
            let changed =
                next.reason.as_deref() != Some("LockedBy") || next.message.as_deref() != Some(&message);
            set_phase(&mut next, o.run, Phase::Pending, "LockedBy", &message, o.now);
            next.lease_name = Some(crate::job::lease_name(o.run));
            if changed {
                actions.push(Action::PatchStatus(Box::new(next)));
                actions.push(Action::Event {
                    kind: EventType::Normal,
                    reason: "LockedBy",
                    message,
                });
            }
            actions.push(Action::Requeue(std::time::Duration::from_secs(5)));
            return actions;
        }
    }
    actions.push(Action::CreateJob);
    let job = crate::job::job_name(o.run);
    let mut next = current.clone();
    next.phase = Some(Phase::Running);
    next.reason = Some("JobCreated".into());
    next.message = Some(format!("created Job {job}"));
    next.job_name = Some(job.clone());
    next.run_id = Some(crate::job::run_id(o.run));
    next.lease_name = Some(crate::job::lease_name(o.run));
    next.started_at.get_or_insert_with(|| rfc3339(o.now));
    next.retry_after = None;
    set_condition(
        &mut next,
        o.run,
        "Succeeded",
        "Unknown",
        "JobCreated",
        "the worker is running",
        o.now,
    );
    actions.push(Action::PatchStatus(Box::new(next)));
    actions.push(Action::Event {
        kind: EventType::Normal,
        reason: "JobCreated",
        message: format!("created Job {job}"),
    });
    actions.push(Action::Requeue(secs(o.policy.lease_seconds / 3)));
    actions
}

/// The worker's exit code, from its summary or else from its pod.
fn exit_code(o: &Observed, summary: &SummaryFetch) -> Option<i32> {
    match summary {
        SummaryFetch::Found(s) => Some(s.exit_code),
        _ => newest_pod(&o.pods).and_then(|p| p.exit_code),
    }
}

/// The Job ended: write the worker's counts and manifest into the status, release the Lease.
/// A worker that found the S3 lock taken puts the run back to wait instead.
fn finish(o: &Observed, current: &EtlRunStatus, job: &JobState, summary: &SummaryFetch) -> Vec<Action> {
    let mut next = current.clone();
    if let SummaryFetch::Error(e) = summary {
        let failures = current.summary_read_failures.unwrap_or(0) + 1;
        if failures < SUMMARY_ATTEMPTS {
            next.summary_read_failures = Some(failures);
            next.message = Some(format!(
                "cannot read the run summary yet (attempt {failures} of {SUMMARY_ATTEMPTS}): {e}"
            ));
            let mut actions = vec![Action::PatchStatus(Box::new(next))];
            o.renew_if_due(&mut actions);
            actions.push(Action::Requeue(secs(1 << failures.min(6))));
            return actions;
        }
    }
    if matches!(job, JobState::Failed { .. }) && exit_code(o, summary) == Some(EXIT_LOCKED) {
        let said = o
            .last_words()
            .and_then(|m| m.lines().rev().find(|l| l.contains("lock")))
            .unwrap_or("another writer holds the table's S3 lock");
        let message = format!(
            "the table's S3 lock is held outside this operator ({}); trying again in {}s",
            said.trim(),
            o.policy.lock_retry_seconds
        );
        set_phase(&mut next, o.run, Phase::Pending, "LockedBy", &message, o.now);
        next.retry_after = Some(rfc3339(o.now + Duration::seconds(o.policy.lock_retry_seconds)));
        let mut actions = vec![
            Action::PatchStatus(Box::new(next)),
            Action::Event {
                kind: EventType::Normal,
                reason: "LockedBy",
                message,
            },
        ];
        o.wind_down(&mut actions);
        actions.push(Action::Requeue(secs(o.policy.lock_retry_seconds)));
        return actions;
    }
    next.finished_at = Some(rfc3339(o.now));
    let (phase, reason, message) = match (job, summary) {
        (JobState::Succeeded, SummaryFetch::Found(s)) => (
            Phase::Succeeded,
            "Succeeded",
            format!(
                "{} files, {} rows read, {} dates written",
                s.manifest_total,
                s.rows_read,
                s.dates_written.len()
            ),
        ),
        (JobState::Failed { message }, SummaryFetch::Found(s)) => (
            Phase::Failed,
            "JobFailed",
            format!(
                "{message}: {}",
                s.error
                    .clone()
                    .unwrap_or_else(|| format!("exit code {}", s.exit_code))
            ),
        ),
        (JobState::Succeeded, SummaryFetch::Missing) => (
            Phase::Failed,
            "NoSummary",
            format!(
                "the Job succeeded but the worker reported no run summary{}",
                o.quoted_last_words(": ")
            ),
        ),
        (JobState::Failed { message }, SummaryFetch::Missing) => (
            Phase::Failed,
            "JobFailed",
            format!(
                "{message}; the worker reported no run summary{}",
                o.quoted_last_words("; its last words: ")
            ),
        ),
        (_, SummaryFetch::Error(e)) => (
            Phase::Failed,
            "SummaryUnreadable",
            format!("cannot read the run summary after {SUMMARY_ATTEMPTS} attempts: {e}"),
        ),
        (JobState::Active | JobState::Suspended | JobState::Deleting, _) => {
            unreachable!("finish is only called for ended Jobs")
        }
    };
    if let SummaryFetch::Found(s) = summary {
        next.exit_code = Some(s.exit_code);
        next.bytes_read = Some(s.bytes_read);
        next.rows_read = Some(s.rows_read);
        next.rows_blank = Some(s.rows_blank);
        next.rows_rejected = Some(s.rows_rejected);
        next.rows_inserted = Some(s.rows_inserted);
        next.rows_updated = Some(s.rows_updated);
        next.rows_superseded = Some(s.rows_superseded);
        next.dates_written = s.dates_written.clone();
        next.manifest_total = Some(s.manifest_total);
        // The worker caps it; a result written by hand is capped here too.
        next.manifest = s.manifest.iter().take(MANIFEST_CAP).cloned().collect();
        next.state_url = s.state_url.clone();
        next.summary_url = s.summary_url.clone();
        next.table_version = s.table_version;
    } else if let Some(code) = exit_code(o, summary) {
        next.exit_code = Some(code);
    }
    set_phase(&mut next, o.run, phase, reason, &message, o.now);
    let mut actions = vec![Action::PatchStatus(Box::new(next))];
    if !o.pods_active()
        && let Some(lease) = o.ours()
    {
        actions.push(Action::ReleaseLease {
            resource_version: lease.resource_version.clone(),
        });
    }
    let kind = if phase == Phase::Succeeded {
        EventType::Normal
    } else {
        EventType::Warning
    };
    actions.push(Action::Event {
        kind,
        reason: phase.as_str(),
        message,
    });
    actions
}

#[cfg(test)]
mod tests {
    use super::*;
    use lakeload_types::result::RunResultSpec;
    use lakeload_types::summary::{ManifestEntry as WorkerEntry, RowCounts, RunSummary};

    fn now() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-11-23T12:00:00Z")
            .unwrap()
            .with_timezone(&Utc)
    }

    fn run(name: &str, finalized: bool, status: Option<EtlRunStatus>) -> EtlRun {
        let mut r = crate::crd::sample_run(name);
        if finalized {
            r.metadata.finalizers = Some(vec![FINALIZER.into()]);
        }
        r.status = status;
        r
    }

    fn policy() -> &'static Policy {
        static POLICY: std::sync::OnceLock<Policy> = std::sync::OnceLock::new();
        POLICY.get_or_init(|| Policy {
            start_timeout_seconds: 120,
            lock_retry_seconds: 30,
            admission: Admission {
                images: vec!["lakeload:1".into(), "registry.example/lakeload:*".into()],
                service_accounts: vec!["etl-*".into()],
                ..Admission::default()
            },
            ..Policy::default()
        })
    }

    fn observe<'a>(run: &'a EtlRun, job: Option<JobState>, lease: Option<LeaseState>) -> Observed<'a> {
        Observed {
            run,
            job,
            pods: Vec::new(),
            lease,
            summary: None,
            workload: None,
            among_kept: false,
            binary_config_maps: Vec::new(),
            holder_alive: false,
            now: now(),
            policy: policy(),
        }
    }

    fn backoff_exceeded() -> JobState {
        JobState::Failed {
            message: "Job failed (BackoffLimitExceeded)".into(),
        }
    }

    fn pod(active: bool) -> PodState {
        PodState {
            name: "r-job-abcde".into(),
            active,
            ..Default::default()
        }
    }

    fn stuck(reason: &str, secs_ago: i64) -> PodState {
        PodState {
            stuck: Some(Stuck {
                reason: reason.into(),
                message: format!("{reason} details"),
                since: now() - Duration::seconds(secs_ago),
            }),
            ..pod(true)
        }
    }

    fn status_of(actions: &[Action]) -> &EtlRunStatus {
        actions
            .iter()
            .find_map(|a| match a {
                Action::PatchStatus(s) => Some(s.as_ref()),
                _ => None,
            })
            .unwrap_or_else(|| panic!("no status patch in {actions:?}"))
    }

    fn releases(actions: &[Action]) -> bool {
        actions.iter().any(|a| matches!(a, Action::ReleaseLease { .. }))
    }

    fn lease(holder: &str, renewed_secs_ago: i64) -> LeaseState {
        LeaseState {
            holder: Some(holder.into()),
            renewed: Some(now() - Duration::seconds(renewed_secs_ago)),
            observed: now() - Duration::seconds(renewed_secs_ago),
            duration_seconds: 60,
            resource_version: "7".into(),
        }
    }

    fn phase_of(actions: &[Action]) -> Option<(Phase, String)> {
        actions.iter().find_map(|a| match a {
            Action::PatchStatus(s) => Some((s.phase.unwrap(), s.reason.clone().unwrap_or_default())),
            _ => None,
        })
    }

    fn running() -> Option<EtlRunStatus> {
        Some(EtlRunStatus {
            phase: Some(Phase::Running),
            reason: Some("JobRunning".into()),
            job_name: Some("r-job".into()),
            ..Default::default()
        })
    }

    fn summary(files: usize, exit_code: i32) -> SummaryFetch {
        let reported = RunSummary {
            run_id: "id".into(),
            mode: lakeload_types::Mode::Incremental,
            status: if exit_code == 0 { "succeeded" } else { "failed" }.into(),
            started_at: now(),
            finished_at: now(),
            duration_seconds: 1.0,
            exit_code,
            error: (exit_code != 0).then(|| "too many rejects".into()),
            source_url: "s3://in/x".into(),
            target_url: "s3://out/t".into(),
            files: (0..files).map(|i| format!("f{i}.gz")).collect(),
            manifest: (0..files)
                .map(|i| WorkerEntry {
                    key: format!("f{i}.gz"),
                    size: 10,
                    etag: Some("e".into()),
                    rows: 3,
                })
                .collect(),
            bytes_read: 10 * files as u64,
            counts: RowCounts {
                rows_read: 9,
                rows_blank: 1,
                rows_rejected: 1,
                rows_inserted: 5,
                rows_updated: 1,
                rows_superseded: 1,
            },
            dates_written: vec!["2024-01-01".into()],
            dates_deleted: vec![],
            objects_deleted: vec![],
            memory_limit: 1 << 30,
            memory_limit_chosen: "run.memory_limit = 1GiB".into(),
            bytes_spilled: 0,
            bytes_written: 100,
            table_changed: true,
            table_version: None,
            rejects_url: None,
            log_url: None,
            state_url: Some("s3://out/t/_lakeload/state.json".into()),
            lakeload_version: "0".into(),
        };
        SummaryFetch::Found(Box::new(RunResultSpec::from_summary(
            &reported,
            Some("s3://out/t/_lakeload/runs/id.json".into()),
        )))
    }

    #[test]
    fn a_new_run_gets_a_finalizer_first() {
        let r = run("r", false, None);
        assert_eq!(decide(&observe(&r, None, None))[0], Action::AddFinalizer);
    }

    #[test]
    fn a_free_table_gets_a_lease_then_a_job() {
        let r = run("r", true, None);
        let actions = decide(&observe(&r, None, None));
        assert_eq!(actions[0], Action::CreateLease);
        assert_eq!(actions[1], Action::CreateJob);
        let Some(Action::PatchStatus(s)) = actions.get(2) else {
            panic!("{actions:?}")
        };
        assert_eq!(s.phase, Some(Phase::Running));
        assert_eq!(s.job_name.as_deref(), Some(crate::job::job_name(&r).as_str()));
        assert!(s.run_id.is_some() && s.lease_name.as_deref().unwrap().starts_with("lakeload-"));
        assert!(actions.iter().any(|a| matches!(
            a,
            Action::Event {
                reason: "JobCreated",
                ..
            }
        )));
    }

    #[test]
    fn a_table_held_by_another_run_waits_pending_locked_by() {
        let r = run("r", true, None);
        let actions = decide(&observe(&r, None, Some(lease("ns/other#abc", 5))));
        assert_eq!(phase_of(&actions), Some((Phase::Pending, "LockedBy".into())));
        assert!(!actions.contains(&Action::CreateJob));
        let Some(Action::PatchStatus(s)) = actions.first() else {
            panic!()
        };
        assert!(s.message.as_deref().unwrap().contains("ns/other#abc"));
        assert!(actions.iter().any(|a| matches!(
            a,
            Action::Event {
                reason: "LockedBy",
                ..
            }
        )));
        // Already marked: no new patch or event, just a retry later.
        let waiting = run("r", true, Some(*s.clone()));
        let again = decide(&observe(&waiting, None, Some(lease("ns/other#abc", 5))));
        assert!(matches!(again[..], [Action::Requeue(_)]), "{again:?}");
    }

    #[test]
    fn an_expired_lease_is_taken_over_with_an_event() {
        let r = run("r", true, None);
        let actions = decide(&observe(&r, None, Some(lease("ns/dead#abc", 61))));
        assert_eq!(
            actions[0],
            Action::TakeLease {
                resource_version: "7".into()
            }
        );
        assert!(actions.iter().any(|a| matches!(
            a,
            Action::Event {
                reason: "LeaseTakenOver",
                ..
            }
        )));
        assert!(actions.contains(&Action::CreateJob));
    }

    /// Expiry runs on this process's clock from when it saw the renewal: a holder whose clock
    /// is ten minutes behind still holds the table, and a Lease seen unchanged for a whole
    /// duration has expired whatever its renewTime says.
    #[test]
    fn lease_expiry_follows_when_the_renewal_was_seen_not_the_writers_clock() {
        let r = run("r", true, None);
        let behind = LeaseState {
            renewed: Some(now() - Duration::seconds(600)),
            observed: now() - Duration::seconds(5),
            ..lease("ns/other#12345678", 0)
        };
        let actions = decide(&observe(&r, None, Some(behind)));
        assert_eq!(phase_of(&actions), Some((Phase::Pending, "LockedBy".into())));
        let ahead = LeaseState {
            renewed: Some(now() + Duration::seconds(600)),
            observed: now() - Duration::seconds(61),
            ..lease("ns/other#12345678", 0)
        };
        assert!(decide(&observe(&r, None, Some(ahead))).contains(&Action::CreateJob));
    }

    #[test]
    fn our_own_lease_after_a_restart_is_kept_and_the_job_created_once() {
        let r = run("r", true, None);
        let me = holder_identity(&r);
        let actions = decide(&observe(&r, None, Some(lease(&me, 5))));
        assert_eq!(
            actions[0],
            Action::TakeLease {
                resource_version: "7".into()
            }
        );
        assert!(actions.contains(&Action::CreateJob));
        // With the Job already there, nothing is created again.
        let r = run("r", true, running());
        let actions = decide(&observe(&r, Some(JobState::Active), Some(lease(&me, 5))));
        assert!(!actions.contains(&Action::CreateJob), "{actions:?}");
    }

    #[test]
    fn a_running_job_renews_the_lease_when_due() {
        let r = run("r", true, running());
        let me = holder_identity(&r);
        let due = decide(&observe(&r, Some(JobState::Active), Some(lease(&me, 25))));
        assert_eq!(
            due[0],
            Action::RenewLease {
                resource_version: "7".into()
            }
        );
        let fresh = decide(&observe(&r, Some(JobState::Active), Some(lease(&me, 2))));
        assert!(matches!(fresh[..], [Action::Requeue(_)]), "{fresh:?}");
    }

    #[test]
    fn an_ended_job_fetches_the_summary_then_records_it() {
        let r = run("r", true, running());
        let me = holder_identity(&r);
        let mut o = observe(&r, Some(JobState::Succeeded), Some(lease(&me, 5)));
        assert_eq!(decide(&o), vec![Action::FetchSummary]);
        o.summary = Some(summary(1_500, 0));
        let actions = decide(&o);
        let Some(Action::PatchStatus(s)) = actions.first() else {
            panic!("{actions:?}")
        };
        assert_eq!(s.phase, Some(Phase::Succeeded));
        assert_eq!(
            (s.rows_read, s.rows_inserted, s.rows_updated),
            (Some(9), Some(5), Some(1))
        );
        assert_eq!(s.manifest.len(), MANIFEST_CAP);
        assert_eq!(s.manifest_total, Some(1_500));
        assert_eq!(s.dates_written, vec!["2024-01-01"]);
        assert!(s.state_url.is_some() && s.finished_at.is_some());
        assert!(
            s.conditions
                .iter()
                .any(|c| c.type_ == "Succeeded" && c.status == "True")
        );
        assert!(actions.contains(&Action::ReleaseLease {
            resource_version: "7".into()
        }));
        assert!(actions.iter().any(|a| matches!(
            a,
            Action::Event {
                reason: "Succeeded",
                ..
            }
        )));
    }

    /// The last attempt died without a result (killed for memory): the run says so, not what
    /// the first attempt said before it.
    #[test]
    fn a_pod_that_died_without_a_result_is_reported_by_its_own_end() {
        let r = run("r", true, running());
        let mut o = observe(&r, Some(backoff_exceeded()), None);
        o.pods = vec![
            PodState {
                name: "r-job-first".into(),
                exit_code: Some(1),
                termination_message: Some("error: connection reset by peer".into()),
                ..pod(false)
            },
            PodState {
                name: "r-job-second".into(),
                exit_code: Some(137),
                end_reason: Some("OOMKilled".into()),
                ..pod(false)
            },
        ];
        o.summary = Some(SummaryFetch::Missing);
        let actions = decide(&o);
        let s = status_of(&actions);
        let message = s.message.clone().unwrap_or_default();
        assert!(
            message.contains("pod r-job-second ended OOMKilled, exit code 137"),
            "{message}"
        );
        assert!(!message.contains("connection reset"), "{message}");
        assert_eq!(s.exit_code, Some(137));
        // Evicted, with the kubelet's words.
        o.pods[1].end_reason = Some("Evicted: The node was low on resource: memory.".into());
        o.pods[1].exit_code = None;
        let message = status_of(&decide(&o)).message.clone().unwrap_or_default();
        assert!(message.contains("ended Evicted: The node was low"), "{message}");
    }

    #[test]
    fn failures_carry_a_reason() {
        let r = run("r", true, running());
        let mut o = observe(&r, Some(backoff_exceeded()), None);
        o.summary = Some(summary(1, 65));
        let actions = decide(&o);
        let Some(Action::PatchStatus(s)) = actions.first() else {
            panic!()
        };
        assert_eq!(s.phase, Some(Phase::Failed));
        assert!(s.message.as_deref().unwrap().contains("too many rejects"));
        assert_eq!(s.exit_code, Some(65));
        o.summary = Some(SummaryFetch::Missing);
        let actions = decide(&o);
        let Some(Action::PatchStatus(s)) = actions.first() else {
            panic!()
        };
        assert_eq!(s.reason.as_deref(), Some("JobFailed"));
        assert!(s.message.as_deref().unwrap().contains("no run summary"));
        // The worker's last log lines, when the pod left them, are quoted.
        o.pods = vec![PodState {
            exit_code: Some(1),
            termination_message: Some("error: cannot reach s3://in".into()),
            ..pod(false)
        }];
        let s = status_of(&decide(&o)).clone();
        assert!(
            s.message.as_deref().unwrap().contains("cannot reach s3://in"),
            "{s:?}"
        );
        assert_eq!(s.exit_code, Some(1));
    }

    #[test]
    fn a_pod_that_cannot_start_fails_the_run_but_the_table_stays_guarded_until_it_is_gone() {
        let r = run("r", true, running());
        let me = holder_identity(&r);
        let mut o = observe(&r, Some(JobState::Active), Some(lease(&me, 5)));
        o.pods = vec![stuck("ImagePullBackOff", 110)];
        let waiting = decide(&o);
        assert!(
            !waiting
                .iter()
                .any(|a| matches!(a, Action::PatchStatus(s) if s.phase == Some(Phase::Failed)))
        );
        assert!(
            waiting.contains(&Action::Requeue(std::time::Duration::from_secs(11))),
            "looks again when the start timeout ends: {waiting:?}"
        );

        o.pods = vec![stuck("ImagePullBackOff", 121)];
        let failing = decide(&o);
        let s = status_of(&failing);
        assert_eq!(
            (s.phase, s.reason.as_deref()),
            (Some(Phase::Failed), Some("PodNotStarted"))
        );
        assert!(s.message.as_deref().unwrap().contains("ImagePullBackOff details"));
        assert!(failing.contains(&Action::DeleteJob));
        assert!(!releases(&failing), "the Lease is kept while the pod exists");

        // Failed, its Job being deleted, the pod still there: keep guarding.
        let failed = Some(s.clone());
        let r2 = run("r", true, failed.clone());
        let mut o2 = observe(&r2, Some(JobState::Deleting), Some(lease(&me, 30)));
        o2.pods = vec![stuck("ImagePullBackOff", 125)];
        let guarding = decide(&o2);
        assert!(!releases(&guarding) && o2.guarding(), "{guarding:?}");
        assert!(guarding.contains(&Action::RenewLease {
            resource_version: "7".into()
        }));
        // Gone: let go of the table.
        let o3 = observe(&r2, None, Some(lease(&me, 30)));
        assert!(releases(&decide(&o3)));
    }

    #[test]
    fn an_image_that_can_never_be_used_fails_at_once() {
        let r = run("r", true, running());
        let mut o = observe(&r, Some(JobState::Active), None);
        for reason in ["ErrImageNeverPull", "InvalidImageName"] {
            o.pods = vec![stuck(reason, 1)];
            assert_eq!(
                phase_of(&decide(&o)),
                Some((Phase::Failed, "PodNotStarted".into())),
                "{reason}"
            );
        }
        o.pods = vec![stuck("CreateContainerConfigError", 1)];
        assert_eq!(
            phase_of(&decide(&o)),
            None,
            "a missing Secret may still be created"
        );
    }

    #[test]
    fn a_worker_locked_out_by_an_outside_writer_waits_and_starts_again() {
        let r = run("r", true, running());
        let me = holder_identity(&r);
        let mut o = observe(
            &r,
            Some(JobState::Failed {
                message: "Job failed (PodFailurePolicy)".into(),
            }),
            Some(lease(&me, 5)),
        );
        o.pods = vec![PodState {
            exit_code: Some(75),
            termination_message: Some(
                "{\"level\":\"INFO\"}\nerror: table is locked by run 2024-x on host laptop (pid 7)\n".into(),
            ),
            ..pod(false)
        }];
        o.summary = Some(SummaryFetch::Missing);
        let actions = decide(&o);
        let s = status_of(&actions);
        assert_eq!(
            (s.phase, s.reason.as_deref()),
            (Some(Phase::Pending), Some("LockedBy"))
        );
        assert!(
            s.message
                .as_deref()
                .unwrap()
                .contains("locked by run 2024-x on host laptop"),
            "{s:?}"
        );
        assert_eq!(
            s.retry_after.as_deref(),
            Some(rfc3339(now() + Duration::seconds(30)).as_str())
        );
        assert!(s.finished_at.is_none());
        assert!(actions.contains(&Action::DeleteJob));

        // The old Job gone, before the retry time: wait; after it: a new Lease and Job.
        let r2 = run("r", true, Some(s.clone()));
        let early = observe(&r2, None, None);
        assert!(matches!(decide(&early)[..], [Action::Requeue(_)]));
        let mut later = observe(&r2, None, None);
        later.now = now() + Duration::seconds(31);
        let actions = decide(&later);
        assert!(actions.contains(&Action::CreateLease) && actions.contains(&Action::CreateJob));
        assert!(status_of(&actions).retry_after.is_none());
    }

    #[test]
    fn an_unreadable_summary_is_read_again_a_few_times_then_fails_the_run() {
        let mut status = running().unwrap();
        for attempt in 1..SUMMARY_ATTEMPTS {
            let r = run("r", true, Some(status.clone()));
            let mut o = observe(&r, Some(JobState::Succeeded), None);
            o.summary = Some(SummaryFetch::Error("connection reset".into()));
            let actions = decide(&o);
            let s = status_of(&actions);
            assert_eq!(s.phase, Some(Phase::Running), "attempt {attempt}");
            assert_eq!(s.summary_read_failures, Some(attempt));
            assert!(actions.iter().any(|a| matches!(a, Action::Requeue(_))));
            status = s.clone();
        }
        let r = run("r", true, Some(status));
        let mut o = observe(&r, Some(JobState::Succeeded), None);
        o.summary = Some(SummaryFetch::Error("connection reset".into()));
        assert_eq!(
            phase_of(&decide(&o)),
            Some((Phase::Failed, "SummaryUnreadable".into()))
        );
    }

    #[test]
    fn images_and_service_accounts_must_be_allowed() {
        let mut r = run("r", true, None);
        r.spec.image = Some("evil/miner:latest".into());
        let actions = decide(&observe(&r, None, None));
        assert_eq!(
            phase_of(&actions),
            Some((Phase::Failed, "ImageNotAllowed".into()))
        );
        assert!(!actions.contains(&Action::CreateJob) && !actions.contains(&Action::CreateLease));
        for image in ["lakeload:1", "registry.example/lakeload:2.0"] {
            r.spec.image = Some(image.into());
            assert!(
                decide(&observe(&r, None, None)).contains(&Action::CreateJob),
                "{image}"
            );
        }
        r.spec.service_account_name = Some("cluster-admin".into());
        assert_eq!(
            phase_of(&decide(&observe(&r, None, None))),
            Some((Phase::Failed, "ServiceAccountNotAllowed".into()))
        );
        r.spec.service_account_name = Some("etl-reader".into());
        assert!(decide(&observe(&r, None, None)).contains(&Action::CreateJob));
    }

    #[test]
    fn a_pod_stuck_creating_fails_the_run_after_the_start_timeout_with_the_kubelets_message() {
        let r = run("r", true, running());
        let creating = |secs_ago: i64| PodState {
            stuck: Some(Stuck {
                reason: "ContainerCreating".into(),
                message:
                    "FailedMount: MountVolume.SetUp failed for volume \"creds\" : secret \"aws\" not found"
                        .into(),
                since: now() - Duration::seconds(secs_ago),
            }),
            ..pod(true)
        };
        let mut o = observe(&r, Some(JobState::Active), Some(lease(&holder_identity(&r), 5)));
        o.pods = vec![creating(30)];
        assert_eq!(
            phase_of(&decide(&o)),
            None,
            "a moment of ContainerCreating is normal"
        );
        o.pods = vec![creating(121)];
        let actions = decide(&o);
        assert_eq!(phase_of(&actions), Some((Phase::Failed, "PodNotStarted".into())));
        assert!(
            status_of(&actions)
                .message
                .as_deref()
                .unwrap()
                .contains("secret \"aws\" not found")
        );
        assert!(actions.contains(&Action::DeleteJob));
    }

    #[test]
    fn a_pod_terminating_on_a_lost_node_frees_the_table_after_the_start_timeout() {
        let r = run("r", true, running());
        let terminating = |secs_ago: i64| PodState {
            terminating_since: Some(now() - Duration::seconds(secs_ago)),
            ..pod(true)
        };
        let mut o = observe(&r, Some(JobState::Active), Some(lease(&holder_identity(&r), 5)));
        o.pods = vec![terminating(60)];
        assert_eq!(
            phase_of(&decide(&o)),
            None,
            "within its grace, a pod is just stopping"
        );
        o.pods = vec![terminating(121)];
        let actions = decide(&o);
        assert_eq!(phase_of(&actions), Some((Phase::Failed, "PodLost".into())));
        assert!(
            status_of(&actions)
                .message
                .as_deref()
                .unwrap()
                .contains("Terminating since")
        );
        // Failed, the Job deleted (in the background), only the lost pod left: the Lease is
        // released.
        let failed = run("r", true, Some(status_of(&actions).clone()));
        let mut o = observe(&failed, None, Some(lease(&holder_identity(&failed), 5)));
        o.pods = vec![terminating(125)];
        let actions = decide(&o);
        assert!(
            actions.iter().any(|a| matches!(a, Action::ReleaseLease { .. })),
            "{actions:?}"
        );
    }

    #[test]
    fn a_suspended_job_is_queued_and_an_eviction_is_no_failure() {
        let mut r = run("r", true, running());
        r.spec.queue_name = Some("team-a".into());
        let me = holder_identity(&r);
        let actions = decide(&observe(&r, Some(JobState::Suspended), Some(lease(&me, 25))));
        assert_eq!(phase_of(&actions), Some((Phase::Pending, "Queued".into())));
        assert!(status_of(&actions).message.as_deref().unwrap().contains("team-a"));
        assert!(
            actions.iter().any(|a| matches!(a, Action::RenewLease { .. })),
            "the run keeps the table"
        );
        assert!(!actions.contains(&Action::DeleteJob));
        // Admitted: running again; evicted (suspended again): queued again, never failed.
        let queued = run("r", true, Some(status_of(&actions).clone()));
        let admitted = decide(&observe(&queued, Some(JobState::Active), Some(lease(&me, 5))));
        assert_eq!(phase_of(&admitted), Some((Phase::Running, "JobRunning".into())));
        let evicted = decide(&observe(&r, Some(JobState::Suspended), Some(lease(&me, 5))));
        assert_eq!(phase_of(&evicted), Some((Phase::Pending, "Queued".into())));
    }

    #[test]
    fn a_run_kueue_never_admits_fails_not_admitted_and_frees_the_table() {
        let mut r = run("r", true, running());
        r.spec.queue_name = Some("team-x".into());
        let me = holder_identity(&r);
        let queued = decide(&observe(&r, Some(JobState::Suspended), Some(lease(&me, 5))));
        let waiting = status_of(&queued).clone();
        assert_eq!(waiting.queued_at.as_deref(), Some(rfc3339(now()).as_str()));
        // Within the timeout (an hour by default): still waiting, looked at again in time.
        let mut r = run("r", true, Some(waiting.clone()));
        r.spec.queue_name = Some("team-x".into());
        let mut o = observe(&r, Some(JobState::Suspended), Some(lease(&me, 5)));
        o.now = now() + Duration::seconds(3599);
        let actions = decide(&o);
        assert!(
            !actions.iter().any(|a| matches!(a, Action::PatchStatus(_))),
            "{actions:?}"
        );
        assert!(actions.contains(&Action::Requeue(secs(2))), "{actions:?}");
        // Past it: what Kueue says is fetched, then the run fails quoting it.
        o.now = now() + Duration::seconds(3600);
        assert_eq!(decide(&o), vec![Action::FetchWorkload]);
        o.workload = Some(
            "Workload job-r-1: QuotaReserved=False (Inadmissible: LocalQueue team-x doesn't exist)".into(),
        );
        let actions = decide(&o);
        assert_eq!(phase_of(&actions), Some((Phase::Failed, "NotAdmitted".into())));
        let message = status_of(&actions).message.clone().unwrap();
        assert!(
            message.contains("queueTimeoutSeconds = 3600")
                && message.contains("LocalQueue team-x doesn't exist"),
            "{message}"
        );
        assert!(actions.contains(&Action::DeleteJob));
        // Failed, its Job being deleted: the Lease is kept until the Job is gone, then released.
        let failed = run("r", true, Some(status_of(&actions).clone()));
        let winding = decide(&observe(&failed, Some(JobState::Deleting), Some(lease(&me, 5))));
        assert!(!releases(&winding), "{winding:?}");
        let gone = decide(&observe(&failed, None, Some(lease(&me, 5))));
        assert!(releases(&gone), "{gone:?}");
        // A run's own timeout wins over the operator's.
        let mut short = run("r", true, Some(waiting));
        short.spec.queue_timeout_seconds = Some(60);
        let mut o = observe(&short, Some(JobState::Suspended), Some(lease(&me, 5)));
        o.now = now() + Duration::seconds(61);
        assert_eq!(decide(&o), vec![Action::FetchWorkload]);
    }

    #[test]
    fn a_holder_identity_leads_back_to_its_runs_job() {
        let r = run("nightly-events", true, None);
        assert_eq!(
            holder_job(&holder_identity(&r)),
            Some(("ns".to_string(), crate::job::job_name(&r)))
        );
        assert_eq!(holder_job("not an identity"), None);
    }

    #[test]
    fn a_lapsed_lease_is_not_taken_over_while_its_holders_job_still_runs() {
        let r = run("r", true, None);
        let lapsed = LeaseState {
            holder: Some("ns/other#12345678".into()),
            renewed: Some(now() - Duration::seconds(600)),
            observed: now() - Duration::seconds(600),
            duration_seconds: 60,
            resource_version: "9".into(),
        };
        let mut o = observe(&r, None, Some(lapsed));
        o.holder_alive = true;
        let actions = decide(&o);
        assert!(
            !actions
                .iter()
                .any(|a| matches!(a, Action::TakeLease { .. } | Action::CreateJob))
        );
        let message = status_of(&actions).message.clone().unwrap_or_default();
        assert!(
            message.contains("ns/other#12345678") && message.contains("still runs"),
            "{message}"
        );
        // Once the holder's Job and pods are gone, the lapsed Lease is taken over.
        o.holder_alive = false;
        let actions = decide(&o);
        assert!(actions.iter().any(|a| matches!(a, Action::TakeLease { .. })));
        assert!(actions.contains(&Action::CreateJob));
    }

    #[test]
    fn conditions_carry_the_generation_they_were_decided_for() {
        let mut r = run("r", true, None);
        r.metadata.generation = Some(3);
        let actions = decide(&observe(&r, None, None));
        let s = status_of(&actions);
        assert!(
            s.conditions.iter().all(|c| c.observed_generation == Some(3)),
            "{s:?}"
        );
    }

    #[test]
    fn deleting_stops_the_job_and_releases_the_lease() {
        let mut r = run("r", true, running());
        r.metadata.deletion_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
            k8s_openapi::jiff::Timestamp::from_second(now().timestamp()).unwrap(),
        ));
        let me = holder_identity(&r);
        // The Job and its pod still there: stop it, keep the table guarded and the finalizer.
        let mut o = observe(&r, Some(JobState::Active), Some(lease(&me, 5)));
        o.pods = vec![pod(true)];
        let actions = decide(&o);
        assert_eq!(actions[0], Action::DeleteJob);
        assert!(
            !releases(&actions) && !actions.contains(&Action::RemoveFinalizer),
            "{actions:?}"
        );
        // The Job gone but its pod still stopping: same.
        let mut o = observe(&r, None, Some(lease(&me, 5)));
        o.pods = vec![pod(true)];
        let actions = decide(&o);
        assert!(
            !releases(&actions) && !actions.contains(&Action::RemoveFinalizer),
            "{actions:?}"
        );
        // Nothing left running: release and let go.
        let actions = decide(&observe(&r, None, Some(lease(&me, 5))));
        assert_eq!(
            actions,
            vec![
                Action::ReleaseLease {
                    resource_version: "7".into()
                },
                Action::RemoveFinalizer
            ]
        );
        // Someone else's lease is left alone.
        let actions = decide(&observe(&r, None, Some(lease("ns/other#x", 5))));
        assert_eq!(actions, vec![Action::RemoveFinalizer]);
    }

    #[test]
    fn finished_runs_are_collected_after_their_ttl_unless_kept() {
        let finished = EtlRunStatus {
            phase: Some(Phase::Succeeded),
            finished_at: Some(rfc3339(now() - Duration::seconds(100))),
            ..Default::default()
        };
        let mut r = run("r", true, Some(finished));
        r.spec.ttl_seconds_after_finished = Some(50);
        let mut o = observe(&r, None, None);
        assert_eq!(decide(&o), vec![Action::DeleteRun]);
        o.among_kept = true;
        assert!(
            matches!(decide(&o)[..], [Action::Requeue(_)]),
            "kept runs are looked at again later"
        );
        r.spec.ttl_seconds_after_finished = Some(500);
        let o = observe(&r, None, None);
        assert!(matches!(decide(&o)[..], [Action::Requeue(_)]));
    }

    #[test]
    fn a_job_gone_from_under_a_running_run_fails_it() {
        let r = run("r", true, running());
        assert_eq!(
            phase_of(&decide(&observe(&r, None, None))),
            Some((Phase::Failed, "JobMissing".into()))
        );
    }
}
