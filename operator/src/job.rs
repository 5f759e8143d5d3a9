//! Names, the Lease and the worker Job of an `EtlRun`, built as plain objects (no API calls).

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use k8s_openapi::api::batch::v1::{
    Job, JobSpec, PodFailurePolicy, PodFailurePolicyOnExitCodesRequirement,
    PodFailurePolicyOnPodConditionsPattern, PodFailurePolicyRule,
};
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::{
    Capabilities, Container, EmptyDirVolumeSource, EnvVar, EnvVarSource, ObjectFieldSelector,
    PodSecurityContext, PodSpec, PodTemplateSpec, SeccompProfile, SecretKeySelector, SecurityContext, Volume,
    VolumeMount,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::Resource;
use sha2::{Digest, Sha256};

use crate::crd::EtlRun;

pub const LABEL_RUN: &str = "lakeload.io/run";
pub const LABEL_TABLE: &str = "lakeload.io/table";
pub const MANAGED_BY: &str = "lakeload-operator";

/// Exit codes a pod retry cannot fix: configuration errors (2), too many rejected rows (65),
/// and the table's S3 lock held by another writer (75: the operator waits and starts a new Job).
pub const NO_RETRY_EXIT_CODES: [i32; 3] = [2, 65, 75];
/// The label that submits a Job to a Kueue LocalQueue.
pub const QUEUE_LABEL: &str = "kueue.x-k8s.io/queue-name";
/// The worker's exit code when another writer holds the table's S3 lock.
pub const EXIT_LOCKED: i32 = 75;
/// Where the worker spills (TMPDIR in the image): an emptyDir, the root filesystem being
/// read-only.
const SPILL_DIR: &str = "/tmp";

/// A short, stable name for a table: the first 16 hex digits of SHA-256 of its URL as the
/// worker reads it, so every spelling of one table (`file:///d/t`, `/d/t/`, `s3://b/p/`) has
/// one Lease.
pub fn table_id(target_url: &str) -> String {
    let canonical = lakeload_types::location::Location::parse(target_url)
        .map(|l| l.to_string())
        .unwrap_or_else(|_| target_url.trim().trim_end_matches('/').to_string());
    let digest = Sha256::digest(canonical.as_bytes());
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
    job_name_of(name, uid(run))
}

/// The Job name of the run called `name` whose uid starts with `uid` (8 characters are used):
/// also what a Lease's holder identity (`ns/name#uid8`) leads to.
pub fn job_name_of(name: &str, uid: &str) -> String {
    let suffix = &uid[..uid.len().min(8)];
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

/// A label value (63 characters at most) naming the run: its name, or for longer names (an
/// EtlRun name may have 253) a prefix and a hash of the whole name.
pub fn run_label(run: &EtlRun) -> String {
    let name = run.metadata.name.as_deref().unwrap_or_default();
    if name.len() <= 63 {
        return name.to_string();
    }
    let digest = Sha256::digest(name.as_bytes());
    let hash: String = digest.iter().take(5).map(|b| format!("{b:02x}")).collect();
    let prefix: String = name.chars().take(52).collect();
    format!("{}-{hash}", prefix.trim_end_matches(['-', '.']))
}

pub fn labels(run: &EtlRun) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("app.kubernetes.io/name".into(), "lakeload".into()),
        ("app.kubernetes.io/managed-by".into(), MANAGED_BY.into()),
        (LABEL_RUN.into(), run_label(run)),
        (LABEL_TABLE.into(), table_id(&run.spec.target.url)),
    ])
}

/// A Kubernetes quantity (`512Mi`, `2G`, `1.5Gi`, `2147483648`, `1e9`) in bytes.
pub fn quantity_bytes(quantity: &str) -> Option<u64> {
    let q = quantity.trim();
    let split = q
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '+' || c == '-'))
        .unwrap_or(q.len());
    let (number, suffix) = q.split_at(split);
    let number: f64 = number.parse().ok()?;
    let factor: f64 = match suffix {
        "" => 1.0,
        "Ki" => 1024f64,
        "Mi" => 1024f64.powi(2),
        "Gi" => 1024f64.powi(3),
        "Ti" => 1024f64.powi(4),
        "Pi" => 1024f64.powi(5),
        "Ei" => 1024f64.powi(6),
        "m" => 1e-3,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        "E" => 1e18,
        s if s.starts_with(['e', 'E']) => 10f64.powi(s[1..].parse().ok()?),
        _ => return None,
    };
    let bytes = number * factor;
    (bytes.is_finite() && bytes >= 0.0).then_some(bytes as u64)
}

/// `run.memory_limit` for the worker from its container's memory limit, unless the run sets
/// it itself.
fn derived_memory_limit(run: &EtlRun) -> Option<String> {
    if run.spec.settings.contains_key("run.memory_limit") {
        return None;
    }
    let limit = run.spec.resources.as_ref()?.limits.as_ref()?.get("memory")?;
    let bytes = quantity_bytes(&limit.0)?;
    let (num, den) = lakeload_types::CONTAINER_MEMORY_SHARE;
    Some((bytes / den * num).to_string())
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
    if let Some(format) = spec.target.format {
        let format = serde_json::to_value(format)
            .ok()
            .and_then(|v| v.as_str().map(String::from))
            .unwrap_or_default();
        settings.insert("target.format".into(), format);
    }
    settings
        .entry("logging.format".into())
        .or_insert_with(|| "json".into());
    if let Some(limit) = derived_memory_limit(run) {
        settings.insert("run.memory_limit".into(), limit);
    }
    settings
        .into_iter()
        .map(|(k, v)| EnvVar {
            name: env_name(&k),
            value: Some(v),
            ..Default::default()
        })
        .collect()
}

/// Variables a credentials Secret may hand the worker (`spec.credentialsSecret`), and whether
/// each must be there. Other keys of the Secret never reach the worker: a key such as
/// `LD_PRELOAD` or `AWS_CONFIG_FILE` would change what code it runs or where its credentials
/// come from.
pub const CREDENTIAL_KEYS: [(&str, bool); 4] = [
    ("AWS_ACCESS_KEY_ID", true),
    ("AWS_SECRET_ACCESS_KEY", true),
    ("AWS_SESSION_TOKEN", false),
    ("AWS_REGION", false),
];

/// The worker pod's uid (downward API), which the worker writes into its `EtlRunResult`.
const POD_UID_ENV: &str = "POD_UID";

/// What the operator itself puts into every worker's environment besides the settings: the
/// pod's uid, the run's credentials (named keys only), and, unless the admin allows AWS config
/// files, `/dev/null` for both (no profile, no `credential_process`).
fn operator_env(run: &EtlRun, aws_config_files: bool) -> Vec<EnvVar> {
    let mut env = vec![EnvVar {
        name: POD_UID_ENV.into(),
        value_from: Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector {
                field_path: "metadata.uid".into(),
                api_version: None,
            }),
            ..Default::default()
        }),
        ..Default::default()
    }];
    if !aws_config_files {
        for name in ["AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE"] {
            env.push(EnvVar {
                name: name.into(),
                value: Some("/dev/null".into()),
                ..Default::default()
            });
        }
    }
    if let Some(secret) = &run.spec.credentials_secret {
        env.extend(CREDENTIAL_KEYS.iter().map(|(key, required)| EnvVar {
            name: key.to_string(),
            value_from: Some(EnvVarSource {
                secret_key_ref: Some(SecretKeySelector {
                    name: secret.clone(),
                    key: key.to_string(),
                    optional: Some(!required),
                }),
                ..Default::default()
            }),
            ..Default::default()
        }));
    }
    env
}

/// The worker Job of `run`. `aws_config_files`: the admin lets workers read AWS profiles.
pub fn build_job(run: &EtlRun, default_image: &str, aws_config_files: bool) -> Job {
    let spec = &run.spec;
    let owner = run
        .controller_owner_ref(&())
        .expect("a stored EtlRun has a name and uid");
    let template = spec.pod_template.clone().unwrap_or_default();
    // The run's extra variables last: where a name repeats, the operator's win.
    let mut env = worker_env(run);
    env.extend(operator_env(run, aws_config_files));
    let ours: std::collections::BTreeSet<String> = env.iter().map(|e| e.name.clone()).collect();
    env.extend(template.env.into_iter().filter(|e| !ours.contains(&e.name)));
    let mut volume_mounts = vec![VolumeMount {
        name: "spill".into(),
        mount_path: SPILL_DIR.into(),
        ..Default::default()
    }];
    volume_mounts.extend(template.volume_mounts);
    let mut volumes = vec![Volume {
        name: "spill".into(),
        empty_dir: Some(EmptyDirVolumeSource::default()),
        ..Default::default()
    }];
    volumes.extend(template.volumes);
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
            // The worker reports its summary as an EtlRunResult owned by this run.
            "--etlrun".into(),
            run.metadata.name.clone().unwrap_or_default(),
            "--etlrun-uid".into(),
            uid(run).to_string(),
            // Expanded by the kubelet from the variable above.
            format!("--pod-uid=$({POD_UID_ENV})"),
        ]),
        env: Some(env),
        resources: spec.resources.clone(),
        security_context: Some(SecurityContext {
            allow_privilege_escalation: Some(false),
            read_only_root_filesystem: Some(true),
            run_as_non_root: Some(true),
            capabilities: Some(Capabilities {
                drop: Some(vec!["ALL".into()]),
                add: None,
            }),
            ..Default::default()
        }),
        // The worker's last log lines become the pod's termination message: the operator
        // quotes them when a pod fails before reporting its summary (e.g. locked, exit 75); a
        // worker that cannot report writes why there itself.
        termination_message_policy: Some("FallbackToLogsOnError".into()),
        volume_mounts: Some(volume_mounts),
        ..Default::default()
    };
    let mut pod_labels = template.labels;
    pod_labels.extend(labels(run));
    let mut job_labels = labels(run);
    if let Some(queue) = &spec.queue_name {
        job_labels.insert(QUEUE_LABEL.into(), queue.clone());
    }
    Job {
        metadata: ObjectMeta {
            name: Some(job_name(run)),
            namespace: run.metadata.namespace.clone(),
            labels: Some(job_labels),
            owner_references: Some(vec![owner]),
            ..Default::default()
        },
        spec: Some(JobSpec {
            // Queued: Kueue admits the Job by unsuspending it (and suspends it again to evict).
            suspend: spec.queue_name.as_ref().map(|_| true),
            backoff_limit: Some(spec.backoff_limit.unwrap_or(1)),
            active_deadline_seconds: spec.active_deadline_seconds,
            pod_failure_policy: Some(PodFailurePolicy {
                rules: vec![
                    PodFailurePolicyRule {
                        action: "FailJob".into(),
                        on_exit_codes: Some(PodFailurePolicyOnExitCodesRequirement {
                            container_name: Some("worker".into()),
                            operator: "In".into(),
                            values: NO_RETRY_EXIT_CODES.to_vec(),
                        }),
                        ..Default::default()
                    },
                    // Evicted or preempted pods are retried without counting against
                    // backoffLimit.
                    PodFailurePolicyRule {
                        action: "Ignore".into(),
                        on_pod_conditions: Some(vec![PodFailurePolicyOnPodConditionsPattern {
                            type_: "DisruptionTarget".into(),
                            status: "True".into(),
                        }]),
                        ..Default::default()
                    },
                ],
            }),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(pod_labels),
                    annotations: (!template.annotations.is_empty()).then_some(template.annotations),
                    ..Default::default()
                }),
                spec: Some(PodSpec {
                    restart_policy: Some("Never".into()),
                    service_account_name: spec.service_account_name.clone(),
                    // The worker's one Kubernetes call: creating its EtlRunResult, with the
                    // service account's token (its Role allows nothing else).
                    automount_service_account_token: Some(true),
                    // No `<SERVICE>_SERVICE_HOST` variables: a Service named like a setting
                    // (`lakeload-aws`) would otherwise hand the worker an unknown setting.
                    enable_service_links: Some(false),
                    security_context: Some(PodSecurityContext {
                        run_as_non_root: Some(true),
                        seccomp_profile: Some(SeccompProfile {
                            type_: "RuntimeDefault".into(),
                            localhost_profile: None,
                        }),
                        ..Default::default()
                    }),
                    containers: vec![container],
                    volumes: Some(volumes),
                    node_selector: (!template.node_selector.is_empty()).then_some(template.node_selector),
                    tolerations: (!template.tolerations.is_empty()).then_some(template.tolerations),
                    affinity: template.affinity,
                    host_network: template.host_network,
                    priority_class_name: template.priority_class_name,
                    image_pull_secrets: (!template.image_pull_secrets.is_empty())
                        .then_some(template.image_pull_secrets),
                    ..Default::default()
                }),
            },
            ..Default::default()
        }),
        status: None,
    }
}

/// A Lease's time (`MicroTime`) from a chrono time.
pub fn micro_time(t: DateTime<Utc>) -> MicroTime {
    MicroTime(k8s_openapi::jiff::Timestamp::from_microsecond(t.timestamp_micros()).unwrap_or_default())
}

/// The Lease object this run holds.
pub fn build_lease(
    run: &EtlRun,
    namespace: &str,
    holder: &str,
    seconds: i64,
    now: DateTime<Utc>,
    acquired: Option<DateTime<Utc>>,
) -> Lease {
    Lease {
        metadata: ObjectMeta {
            name: Some(lease_name(run)),
            namespace: Some(namespace.to_string()),
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
            acquire_time: Some(micro_time(acquired.unwrap_or(now))),
            renew_time: Some(micro_time(now)),
            ..Default::default()
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::WorkerPodTemplate;
    use k8s_openapi::api::core::v1::ResourceRequirements;
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

    fn run(name: &str) -> EtlRun {
        crate::crd::sample_run(name)
    }

    fn is_label_value(v: &str) -> bool {
        v.len() <= 63
            && v.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
            && v.chars().next().is_none_or(|c| c.is_ascii_alphanumeric())
            && v.chars().last().is_none_or(|c| c.is_ascii_alphanumeric())
    }

    #[test]
    fn names_and_labels_fit_whatever_the_run_name_length() {
        for len in [1, 40, 63, 64, 200, 253] {
            let name: String = (0..len).map(|i| if i % 10 == 9 { '-' } else { 'a' }).collect();
            let name = name.trim_end_matches('-').to_string();
            let job = build_job(&run(&name), "lakeload:1", false);
            let job_name = job.metadata.name.clone().unwrap();
            assert!(is_label_value(&job_name), "{len}: job name {job_name}");
            for (k, v) in job.metadata.labels.clone().unwrap() {
                assert!(is_label_value(&v), "{len}: label {k}={v}");
            }
        }
        // Long names that share a prefix still get different labels.
        let a = format!("{}-a", "x".repeat(70));
        let b = format!("{}-b", "x".repeat(70));
        assert_ne!(run_label(&run(&a)), run_label(&run(&b)));
    }

    #[test]
    fn quantities_become_bytes() {
        for (q, bytes) in [
            ("512Mi", Some(512 << 20)),
            ("2Gi", Some(2 << 30)),
            ("1.5Gi", Some(3 << 29)),
            ("1G", Some(1_000_000_000)),
            ("2147483648", Some(2_147_483_648)),
            ("1e9", Some(1_000_000_000)),
            ("500M", Some(500_000_000)),
            ("lots", None),
            ("5Xi", None),
        ] {
            assert_eq!(quantity_bytes(q), bytes, "{q}");
        }
    }

    fn container_of(job: &Job) -> &Container {
        &job.spec
            .as_ref()
            .unwrap()
            .template
            .spec
            .as_ref()
            .unwrap()
            .containers[0]
    }

    fn env_of(job: &Job) -> BTreeMap<String, String> {
        container_of(job)
            .env
            .clone()
            .unwrap()
            .into_iter()
            .map(|e| (e.name, e.value.unwrap_or_default()))
            .collect()
    }

    /// The table's format and layout reach the worker as its settings.
    #[test]
    fn the_target_format_and_layout_are_passed_to_the_worker() {
        let mut r = run("r");
        let env = env_of(&build_job(&r, "i", false));
        assert!(
            !env.contains_key("LAKELOAD_TARGET_FORMAT"),
            "the worker's default"
        );
        r.spec.target.format = Some(crate::crd::TableFormat::Delta);
        r.spec.target.layout = Some(crate::crd::Layout::Date);
        let env = env_of(&build_job(&r, "i", false));
        assert_eq!(
            env.get("LAKELOAD_TARGET_FORMAT").map(String::as_str),
            Some("delta")
        );
        assert_eq!(
            env.get("LAKELOAD_TARGET_LAYOUT").map(String::as_str),
            Some("date")
        );
    }

    #[test]
    fn the_memory_limit_follows_the_container_limit_unless_set() {
        let mut r = run("r");
        assert!(!env_of(&build_job(&r, "i", false)).contains_key("LAKELOAD_RUN_MEMORY_LIMIT"));
        r.spec.resources = Some(ResourceRequirements {
            limits: Some(BTreeMap::from([("memory".into(), Quantity("2Gi".into()))])),
            ..Default::default()
        });
        assert_eq!(
            env_of(&build_job(&r, "i", false))
                .get("LAKELOAD_RUN_MEMORY_LIMIT")
                .map(String::as_str),
            Some("1610612736"),
            "three quarters of 2 GiB"
        );
        r.spec.settings.insert("run.memory_limit".into(), "1GiB".into());
        assert_eq!(
            env_of(&build_job(&r, "i", false))
                .get("LAKELOAD_RUN_MEMORY_LIMIT")
                .map(String::as_str),
            Some("1GiB")
        );
    }

    #[test]
    fn a_queued_run_makes_a_suspended_job_in_its_kueue_queue() {
        let mut r = crate::crd::sample_run("r");
        let plain = build_job(&r, "lakeload:1", false);
        assert_eq!(plain.spec.as_ref().unwrap().suspend, None);
        assert!(!plain.metadata.labels.unwrap().contains_key(QUEUE_LABEL));
        r.spec.queue_name = Some("team-a".into());
        let queued = build_job(&r, "lakeload:1", false);
        assert_eq!(queued.spec.as_ref().unwrap().suspend, Some(true));
        assert_eq!(queued.metadata.labels.unwrap()[QUEUE_LABEL], "team-a");
    }

    #[test]
    fn every_spelling_of_a_table_has_one_lease_and_pods_get_no_service_links() {
        assert_eq!(table_id("file:///data/t"), table_id("/data/t/"));
        assert_eq!(table_id("s3://lake/events/"), table_id("s3://lake/events"));
        assert_ne!(table_id("s3://lake/events"), table_id("s3://lake/other"));
        let job = build_job(&crate::crd::sample_run("r"), "lakeload:1", false);
        let pod = job.spec.unwrap().template.spec.unwrap();
        assert_eq!(pod.enable_service_links, Some(false));
    }

    /// Only the AWS credential variables come from the run's Secret, AWS config files are
    /// /dev/null unless the admin allows them, and the worker learns its pod's uid.
    #[test]
    fn the_worker_gets_named_credential_keys_no_aws_files_and_its_pod_uid() {
        let mut r = run("r");
        r.spec.credentials_secret = Some("team-a-aws".into());
        r.spec.pod_template = Some(WorkerPodTemplate {
            env: vec![EnvVar {
                name: "AWS_CONFIG_FILE".into(),
                value: Some("/etc/evil/config".into()),
                ..Default::default()
            }],
            ..Default::default()
        });
        let job = build_job(&r, "i", false);
        let container = container_of(&job);
        assert_eq!(
            container.env_from, None,
            "no key of the Secret is taken wholesale"
        );
        let from_secret: Vec<(String, String, bool)> = container
            .env
            .iter()
            .flatten()
            .filter_map(|e| {
                let s = e.value_from.as_ref()?.secret_key_ref.as_ref()?;
                Some((e.name.clone(), s.name.clone(), s.optional == Some(true)))
            })
            .collect();
        assert_eq!(
            from_secret,
            CREDENTIAL_KEYS
                .iter()
                .map(|(k, required)| (k.to_string(), "team-a-aws".to_string(), !required))
                .collect::<Vec<_>>()
        );
        let env = env_of(&job);
        assert_eq!(env["AWS_CONFIG_FILE"], "/dev/null", "the operator's value wins");
        assert_eq!(env["AWS_SHARED_CREDENTIALS_FILE"], "/dev/null");
        let uid = container
            .env
            .iter()
            .flatten()
            .find(|e| e.name == "POD_UID")
            .unwrap();
        assert_eq!(
            uid.value_from
                .as_ref()
                .unwrap()
                .field_ref
                .as_ref()
                .unwrap()
                .field_path,
            "metadata.uid"
        );
        assert!(
            container
                .args
                .as_ref()
                .unwrap()
                .contains(&"--pod-uid=$(POD_UID)".to_string())
        );

        let allowing = env_of(&build_job(&r, "i", true));
        assert_eq!(
            allowing["AWS_CONFIG_FILE"], "/etc/evil/config",
            "the admin opted in"
        );
        assert!(!allowing.contains_key("AWS_SHARED_CREDENTIALS_FILE"));
    }

    #[test]
    fn the_pod_template_is_merged_but_cannot_override_the_worker() {
        let mut r = run("r");
        r.spec.pod_template = Some(WorkerPodTemplate {
            labels: BTreeMap::from([
                ("team".into(), "data".into()),
                (LABEL_RUN.into(), "spoofed".into()),
            ]),
            annotations: BTreeMap::from([(
                "eks.amazonaws.com/role-arn".into(),
                "arn:aws:iam::1:role/etl".into(),
            )]),
            node_selector: BTreeMap::from([("pool".into(), "etl".into())]),
            host_network: Some(true),
            env: vec![
                EnvVar {
                    name: "AWS_CA_BUNDLE".into(),
                    value: Some("/etc/ca/ca.pem".into()),
                    ..Default::default()
                },
                EnvVar {
                    name: "LAKELOAD_TARGET_URL".into(),
                    value: Some("s3://elsewhere".into()),
                    ..Default::default()
                },
            ],
            ..Default::default()
        });
        let job = build_job(&r, "lakeload:1", false);
        let template = job.spec.as_ref().unwrap().template.clone();
        let meta = template.metadata.unwrap();
        let labels = meta.labels.unwrap();
        assert_eq!(labels.get("team").map(String::as_str), Some("data"));
        assert_eq!(labels.get(LABEL_RUN).map(String::as_str), Some("r"));
        assert!(
            meta.annotations
                .unwrap()
                .contains_key("eks.amazonaws.com/role-arn")
        );
        let pod = template.spec.unwrap();
        assert_eq!(pod.host_network, Some(true));
        // The worker reports its result with its account's token.
        assert_eq!(pod.automount_service_account_token, Some(true));
        let args = pod.containers[0].args.clone().unwrap();
        let after = |flag: &str| args.iter().skip_while(|a| *a != flag).nth(1).cloned();
        assert_eq!(after("--etlrun").as_deref(), Some("r"));
        assert_eq!(after("--etlrun-uid").as_deref(), Some("r-0000-uid"));
        let env = env_of(&job);
        assert_eq!(
            env.get("AWS_CA_BUNDLE").map(String::as_str),
            Some("/etc/ca/ca.pem")
        );
        assert_eq!(
            env.get("LAKELOAD_TARGET_URL").map(String::as_str),
            Some("s3://out/t")
        );
        let worker = &pod.containers[0];
        let security = worker.security_context.clone().unwrap();
        assert_eq!(security.read_only_root_filesystem, Some(true));
        assert_eq!(security.allow_privilege_escalation, Some(false));
        assert!(
            worker
                .volume_mounts
                .clone()
                .unwrap()
                .iter()
                .any(|m| m.mount_path == "/tmp"),
            "the spill folder is writable"
        );
    }
}
