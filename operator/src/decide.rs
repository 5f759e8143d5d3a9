//! The reconcile decision, as a pure function: what the operator observed about one `EtlRun`
//! (the run, its Job, its target's Lease, the worker's summary) → the actions to take. All
//! Kubernetes and S3 calls happen at the edge (`controller.rs`), so every branch here is a unit
//! test over a table of observed states.

use chrono::{DateTime, Duration, Utc};

use crate::crd::{EtlRun, EtlRunStatus, MANIFEST_CAP, ManifestEntry, Phase};

pub const FINALIZER: &str = "lakeload.io/release-lease";

/// What the Job says about the worker.
#[derive(Debug, Clone, PartialEq)]
pub enum JobState {
    Active,
    Succeeded,
    Failed { message: String },
}

/// The target table's Lease, as observed.
#[derive(Debug, Clone, PartialEq)]
pub struct LeaseState {
    pub holder: Option<String>,
    pub renewed: Option<DateTime<Utc>>,
    pub duration_seconds: i64,
    pub resource_version: String,
}

impl LeaseState {
    pub fn expired(&self, now: DateTime<Utc>) -> bool {
        match self.renewed {
            Some(t) => t + Duration::seconds(self.duration_seconds) < now,
            None => true,
        }
    }
}

/// The worker's run summary, fetched once the Job has ended.
#[derive(Debug, Clone, PartialEq)]
pub enum SummaryFetch {
    Found(Box<lakeload::summary::RunSummary>),
    /// No summary object: the worker never held its S3 lock (locked, exit 75) or crashed first.
    Missing,
    Error(String),
}

#[derive(Debug, Clone)]
pub struct Observed<'a> {
    pub run: &'a EtlRun,
    pub job: Option<JobState>,
    pub lease: Option<LeaseState>,
    /// `None` until the edge has fetched it (it does so when `decide` asks).
    pub summary: Option<SummaryFetch>,
    /// Whether this run is one of the newest `keep_last` finished runs of its target.
    pub among_kept: bool,
    pub now: DateTime<Utc>,
    pub lease_seconds: i64,
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
    DeleteJob,
    /// Fetch the worker's summary, then decide again.
    FetchSummary,
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

/// Sets a condition, keeping its transition time when its status does not change.
fn set_condition(
    status: &mut EtlRunStatus,
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
        observed_generation: None,
    });
}

fn status(run: &EtlRun) -> EtlRunStatus {
    run.status.clone().unwrap_or_default()
}

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

fn secs(s: i64) -> std::time::Duration {
    std::time::Duration::from_secs(s.max(1) as u64)
}

pub fn decide(o: &Observed) -> Vec<Action> {
    let run = o.run;
    let me = holder_identity(run);
    let ours = |l: &LeaseState| l.holder.as_deref() == Some(me.as_str());
    let current = status(run);
    let phase = current.phase;

    // Deletion: stop the Job (no garbage collector may be running), release the Lease, let go.
    if run.metadata.deletion_timestamp.is_some() {
        let mut actions = Vec::new();
        if o.job.is_some() {
            actions.push(Action::DeleteJob);
        }
        if let Some(lease) = o.lease.as_ref().filter(|l| ours(l)) {
            actions.push(Action::ReleaseLease {
                resource_version: lease.resource_version.clone(),
            });
        }
        actions.push(Action::RemoveFinalizer);
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

    // Finished: make sure the Lease is released, then garbage-collect after the TTL.
    if phase.is_some_and(Phase::is_finished) {
        let mut actions = Vec::new();
        if let Some(lease) = o.lease.as_ref().filter(|l| ours(l)) {
            actions.push(Action::ReleaseLease {
                resource_version: lease.resource_version.clone(),
            });
        }
        if let (Some(ttl), Some(finished)) = (
            run.spec.ttl_seconds_after_finished,
            current.finished_at.as_deref(),
        ) && let Ok(finished) = DateTime::parse_from_rfc3339(finished)
        {
            let expires = finished.with_timezone(&Utc) + Duration::seconds(ttl);
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
        Some(JobState::Active) => {
            let mut actions = Vec::new();
            if let Some(lease) = o.lease.as_ref().filter(|l| ours(l)) {
                let due = lease
                    .renewed
                    .is_none_or(|r| o.now - r >= Duration::seconds(o.lease_seconds / 3));
                if due {
                    actions.push(Action::RenewLease {
                        resource_version: lease.resource_version.clone(),
                    });
                }
            }
            if phase != Some(Phase::Running) {
                let mut next = current.clone();
                next.phase = Some(Phase::Running);
                next.reason = Some("JobRunning".into());
                next.message = Some("the worker is running".into());
                actions.push(Action::PatchStatus(Box::new(next)));
            }
            actions.push(Action::Requeue(secs(o.lease_seconds / 3)));
            actions
        }
        Some(finished) => match &o.summary {
            None => vec![Action::FetchSummary],
            Some(summary) => finish(o, &current, &me, finished, summary),
        },
        None if phase == Some(Phase::Running) => {
            // The Job was removed from under a running EtlRun.
            let mut next = current.clone();
            next.phase = Some(Phase::Failed);
            next.reason = Some("JobMissing".into());
            next.message = Some(format!(
                "Job {} disappeared before it finished",
                current.job_name.unwrap_or_default()
            ));
            next.finished_at = Some(rfc3339(o.now));
            let mut actions = vec![Action::PatchStatus(Box::new(next))];
            if let Some(lease) = o.lease.as_ref().filter(|l| ours(l)) {
                actions.push(Action::ReleaseLease {
                    resource_version: lease.resource_version.clone(),
                });
            }
            actions
        }
        None => start(o, &current, &me),
    }
}

/// No Job yet: take the Lease if we can, then create the Job.
fn start(o: &Observed, current: &EtlRunStatus, me: &str) -> Vec<Action> {
    let mut actions = Vec::new();
    match &o.lease {
        None => actions.push(Action::CreateLease),
        Some(l) if l.holder.as_deref() == Some(me) || l.holder.is_none() => actions.push(Action::TakeLease {
            resource_version: l.resource_version.clone(),
        }),
        Some(l) if l.expired(o.now) => {
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
            let message = format!("waiting for {holder}, which holds the table's lease");
            let mut next = current.clone();
            let changed =
                next.reason.as_deref() != Some("LockedBy") || next.message.as_deref() != Some(&message);
            next.phase = Some(Phase::Pending);
            next.reason = Some("LockedBy".into());
            next.message = Some(message.clone());
            next.lease_name = Some(crate::job::lease_name(o.run));
            set_condition(&mut next, "Succeeded", "Unknown", "LockedBy", &message, o.now);
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
    next.started_at = Some(rfc3339(o.now));
    set_condition(
        &mut next,
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
    actions.push(Action::Requeue(secs(o.lease_seconds / 3)));
    actions
}

/// The Job ended: write the worker's counts and manifest into the status, release the Lease.
fn finish(
    o: &Observed,
    current: &EtlRunStatus,
    me: &str,
    job: &JobState,
    summary: &SummaryFetch,
) -> Vec<Action> {
    let mut next = current.clone();
    next.finished_at = Some(rfc3339(o.now));
    let (phase, reason, message) = match (job, summary) {
        (JobState::Succeeded, SummaryFetch::Found(s)) => (
            Phase::Succeeded,
            "Succeeded",
            format!(
                "{} files, {} rows read, {} dates written",
                s.files.len(),
                s.counts.rows_read,
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
            "the Job succeeded but the worker wrote no run summary".to_string(),
        ),
        (JobState::Failed { message }, SummaryFetch::Missing) => (
            Phase::Failed,
            "JobFailed",
            format!(
                "{message}; the worker wrote no run summary (another writer may hold the table's \
                 S3 lock, or it failed before starting): see the Job's pod logs"
            ),
        ),
        (_, SummaryFetch::Error(e)) => (
            Phase::Failed,
            "SummaryUnreadable",
            format!("cannot read the run summary: {e}"),
        ),
        (JobState::Active, _) => unreachable!("finish is only called for ended Jobs"),
    };
    if let SummaryFetch::Found(s) = summary {
        let c = &s.counts;
        next.exit_code = Some(s.exit_code);
        next.bytes_read = Some(s.bytes_read);
        next.rows_read = Some(c.rows_read);
        next.rows_blank = Some(c.rows_blank);
        next.rows_rejected = Some(c.rows_rejected);
        next.rows_inserted = Some(c.rows_inserted);
        next.rows_updated = Some(c.rows_updated);
        next.rows_superseded = Some(c.rows_superseded);
        next.dates_written = s.dates_written.clone();
        next.manifest_total = Some(s.manifest.len() as u64);
        next.manifest = s
            .manifest
            .iter()
            .take(MANIFEST_CAP)
            .map(|m| ManifestEntry {
                key: m.key.clone(),
                size: m.size,
                etag: m.etag.clone(),
                rows: m.rows,
            })
            .collect();
        next.state_url = s.state_url.clone();
    }
    next.phase = Some(phase);
    next.reason = Some(reason.into());
    next.message = Some(message.clone());
    let succeeded = if phase == Phase::Succeeded {
        "True"
    } else {
        "False"
    };
    set_condition(&mut next, "Succeeded", succeeded, reason, &message, o.now);
    let mut actions = vec![Action::PatchStatus(Box::new(next))];
    if let Some(lease) = o.lease.as_ref().filter(|l| l.holder.as_deref() == Some(me)) {
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
    use crate::crd::{EtlRunSpec, SourceSpec, TargetSpec};
    use lakeload::summary::{ManifestEntry as WorkerEntry, RowCounts, RunSummary};

    fn now() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-11-23T12:00:00Z")
            .unwrap()
            .with_timezone(&Utc)
    }

    fn run(name: &str, finalized: bool, status: Option<EtlRunStatus>) -> EtlRun {
        let spec = EtlRunSpec {
            mode: Default::default(),
            source: SourceSpec {
                url: "s3://in/x".into(),
                pattern: None,
                delimiter: None,
                header: None,
            },
            target: TargetSpec {
                url: "s3://out/t".into(),
                layout: None,
            },
            settings: Default::default(),
            image: None,
            credentials_secret: None,
            resources: None,
            service_account_name: None,
            active_deadline_seconds: None,
            backoff_limit: None,
            ttl_seconds_after_finished: None,
        };
        let mut r = EtlRun::new(name, spec);
        r.metadata.namespace = Some("ns".into());
        r.metadata.uid = Some(format!("{name}-0000-uid"));
        if finalized {
            r.metadata.finalizers = Some(vec![FINALIZER.into()]);
        }
        r.status = status;
        r
    }

    fn observe<'a>(run: &'a EtlRun, job: Option<JobState>, lease: Option<LeaseState>) -> Observed<'a> {
        Observed {
            run,
            job,
            lease,
            summary: None,
            among_kept: false,
            now: now(),
            lease_seconds: 60,
        }
    }

    fn lease(holder: &str, renewed_secs_ago: i64) -> LeaseState {
        LeaseState {
            holder: Some(holder.into()),
            renewed: Some(now() - Duration::seconds(renewed_secs_ago)),
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
            job_name: Some("r-job".into()),
            ..Default::default()
        })
    }

    fn summary(files: usize, exit_code: i32) -> SummaryFetch {
        SummaryFetch::Found(Box::new(RunSummary {
            run_id: "id".into(),
            mode: lakeload::config::Mode::Incremental,
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
            bytes_written: 100,
            table_changed: true,
            rejects_url: None,
            log_url: None,
            state_url: Some("s3://out/t/_lakeload/state.json".into()),
            lakeload_version: "0".into(),
        }))
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

    #[test]
    fn failures_carry_a_reason() {
        let r = run("r", true, running());
        let mut o = observe(
            &r,
            Some(JobState::Failed {
                message: "Job failed (BackoffLimitExceeded)".into(),
            }),
            None,
        );
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
        assert!(s.message.as_deref().unwrap().contains("S3 lock"));
    }

    #[test]
    fn deleting_stops_the_job_and_releases_the_lease() {
        let mut r = run("r", true, running());
        r.metadata.deletion_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
            k8s_openapi::jiff::Timestamp::from_second(now().timestamp()).unwrap(),
        ));
        let me = holder_identity(&r);
        let actions = decide(&observe(&r, Some(JobState::Active), Some(lease(&me, 5))));
        assert_eq!(
            actions,
            vec![
                Action::DeleteJob,
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
