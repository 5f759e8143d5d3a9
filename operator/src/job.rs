//! Names, the Lease and the worker Job of an `EtlRun`, built as plain objects (no API calls).

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use k8s_openapi::api::batch::v1::{
    Job, JobSpec, PodFailurePolicy, PodFailurePolicyOnExitCodesRequirement, PodFailurePolicyRule,
};
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::{
    Container, EnvFromSource, EnvVar, PodSpec, PodTemplateSpec, SecretEnvSource,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::Resource;
use sha2::{Digest, Sha256};

use crate::crd::EtlRun;

pub const LABEL_RUN: &str = "lakeload.io/run";
pub const LABEL_TABLE: &str = "lakeload.io/table";
pub const MANAGED_BY: &str = "lakeload-operator";

/// Exit codes that a retry cannot fix: configuration errors and too many rejected rows.
const NO_RETRY_EXIT_CODES: [i32; 2] = [2, 65];

/// A short, stable name for a table: the first 16 hex digits of SHA-256 of its URL.
pub fn table_id(target_url: &str) -> String {
    let digest = Sha256::digest(target_url.trim().trim_end_matches('/').as_bytes());
    digest.iter().take(8).map(|b| format!("{b:02x}")).collect()
}

pub fn lease_name(run: &EtlRun) -> String {
    format!("lakeload-{}", table_id(&run.spec.target.url))
}

fn uid(run: &EtlRun) -> &str {
    run.metadata.uid.as_deref().unwrap_or("")
}

/// `<run name>-<uid prefix>`, within the 63 characters of a label value.
pub fn job_name(run: &EtlRun) -> String {
    let name = run.metadata.name.as_deref().unwrap_or("etlrun");
    let suffix = &uid(run)[..uid(run).len().min(8)];
    let keep = 62 - suffix.len();
    format!(
        "{}-{suffix}",
        name.chars().take(keep).collect::<String>().trim_end_matches('-')
    )
}

/// The worker's run id: the EtlRun's creation time and uid, so it is the same after an operator
/// restart and sorts by time among the table's runs.
pub fn run_id(run: &EtlRun) -> String {
    let created = run
        .metadata
        .creation_timestamp
        .as_ref()
        .map(|t| t.0)
        .unwrap_or_default();
    let created = DateTime::<Utc>::from_timestamp(created.as_second(), 0).unwrap_or_default();
    format!(
        "{}-{}",
        created.format("%Y%m%dT%H%M%S000Z"),
        &uid(run)[..uid(run).len().min(6)]
    )
}

pub fn labels(run: &EtlRun) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("app.kubernetes.io/name".into(), "lakeload".into()),
        ("app.kubernetes.io/managed-by".into(), MANAGED_BY.into()),
        (LABEL_RUN.into(), run.metadata.name.clone().unwrap_or_default()),
        (LABEL_TABLE.into(), table_id(&run.spec.target.url)),
    ])
}

/// `section.key` → `LAKELOAD_SECTION_KEY`.
pub fn env_name(setting: &str) -> String {
    format!("LAKELOAD_{}", setting.replace('.', "_").to_ascii_uppercase())
}

/// The worker's environment: every setting of the spec as `LAKELOAD_<SECTION>_<KEY>`.
pub fn worker_env(run: &EtlRun) -> Vec<EnvVar> {
    let spec = &run.spec;
    let mut settings: BTreeMap<String, String> = spec.settings.clone();
    settings.insert("source.url".into(), spec.source.url.clone());
    settings.insert("target.url".into(), spec.target.url.clone());
    settings.insert("run.mode".into(), spec.mode.as_str().into());
    if let Some(p) = &spec.source.pattern {
        settings.insert("source.pattern".into(), p.clone());
    }
    if let Some(d) = &spec.source.delimiter {
        settings.insert("source.delimiter".into(), d.clone());
    }
    if let Some(h) = spec.source.header {
        settings.insert("source.header".into(), h.to_string());
    }
    if let Some(layout) = spec.target.layout {
        let layout = serde_json::to_value(layout)
            .ok()
            .and_then(|v| v.as_str().map(String::from))
            .unwrap_or_default();
        settings.insert("target.layout".into(), layout);
    }
    settings
        .entry("logging.format".into())
        .or_insert_with(|| "json".into());
    settings
        .into_iter()
        .map(|(k, v)| EnvVar {
            name: env_name(&k),
            value: Some(v),
            ..Default::default()
        })
        .collect()
}

pub fn build_job(run: &EtlRun, default_image: &str) -> Job {
    let spec = &run.spec;
    let owner = run
        .controller_owner_ref(&())
        .expect("a stored EtlRun has a name and uid");
    let container = Container {
        name: "worker".into(),
        image: Some(spec.image.clone().unwrap_or_else(|| default_image.to_string())),
        args: Some(vec![
            "run".into(),
            "--mode".into(),
            spec.mode.as_str().into(),
            "--json".into(),
            "--run-id".into(),
            run_id(run),
        ]),
        env: Some(worker_env(run)),
        env_from: spec.credentials_secret.as_ref().map(|name| {
            vec![EnvFromSource {
                secret_ref: Some(SecretEnvSource {
                    name: name.clone(),
                    optional: Some(false),
                }),
                ..Default::default()
            }]
        }),
        resources: spec.resources.clone(),
        ..Default::default()
    };
    Job {
        metadata: ObjectMeta {
            name: Some(job_name(run)),
            namespace: run.metadata.namespace.clone(),
            labels: Some(labels(run)),
            owner_references: Some(vec![owner]),
            ..Default::default()
        },
        spec: Some(JobSpec {
            backoff_limit: Some(spec.backoff_limit.unwrap_or(1)),
            active_deadline_seconds: spec.active_deadline_seconds,
            pod_failure_policy: Some(PodFailurePolicy {
                rules: vec![PodFailurePolicyRule {
                    action: "FailJob".into(),
                    on_exit_codes: Some(PodFailurePolicyOnExitCodesRequirement {
                        container_name: Some("worker".into()),
                        operator: "In".into(),
                        values: NO_RETRY_EXIT_CODES.to_vec(),
                    }),
                    ..Default::default()
                }],
            }),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels(run)),
                    ..Default::default()
                }),
                spec: Some(PodSpec {
                    restart_policy: Some("Never".into()),
                    service_account_name: spec.service_account_name.clone(),
                    containers: vec![container],
                    ..Default::default()
                }),
            },
            ..Default::default()
        }),
        status: None,
    }
}

/// The Lease object this run holds.
pub fn build_lease(
    run: &EtlRun,
    holder: &str,
    seconds: i64,
    now: DateTime<Utc>,
    acquired: Option<DateTime<Utc>>,
) -> Lease {
    let micro = |t: DateTime<Utc>| {
        MicroTime(k8s_openapi::jiff::Timestamp::from_microsecond(t.timestamp_micros()).unwrap_or_default())
    };
    Lease {
        metadata: ObjectMeta {
            name: Some(lease_name(run)),
            namespace: run.metadata.namespace.clone(),
            labels: Some(BTreeMap::from([
                ("app.kubernetes.io/managed-by".into(), MANAGED_BY.into()),
                (LABEL_TABLE.into(), table_id(&run.spec.target.url)),
            ])),
            annotations: Some(BTreeMap::from([(
                "lakeload.io/target".into(),
                run.spec.target.url.clone(),
            )])),
            ..Default::default()
        },
        spec: Some(LeaseSpec {
            holder_identity: Some(holder.to_string()),
            lease_duration_seconds: Some(seconds as i32),
            acquire_time: Some(micro(acquired.unwrap_or(now))),
            renew_time: Some(micro(now)),
            ..Default::default()
        }),
    }
}
