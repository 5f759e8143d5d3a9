//! The `EtlRun` custom resource (group `lakeload.io`, version `v1alpha1`, SPEC §8). The CRD in
//! `crds/etlrun.yaml` is generated from these types (`lakeload-operator crd`).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Affinity, EnvVar, LocalObjectReference, ResourceRequirements, Toleration, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// One run of the lakeload worker against a table.
#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "lakeload.io",
    version = "v1alpha1",
    kind = "EtlRun",
    plural = "etlruns",
    shortname = "etl",
    namespaced,
    status = "EtlRunStatus",
    printcolumn = r#"{"name":"Phase","type":"string","jsonPath":".status.phase"}"#,
    printcolumn = r#"{"name":"Mode","type":"string","jsonPath":".spec.mode"}"#,
    printcolumn = r#"{"name":"Target","type":"string","jsonPath":".spec.target.url"}"#,
    printcolumn = r#"{"name":"Rows","type":"integer","jsonPath":".status.rowsRead"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct EtlRunSpec {
    /// `incremental` (default) merges new files; `full` rebuilds the table.
    #[serde(default)]
    pub mode: RunMode,
    pub source: SourceSpec,
    pub target: TargetSpec,
    /// Any other worker setting as `section.key: value` (SPEC §7), e.g. `run.order: name`,
    /// `aws.endpoint_url: http://minio:9000`. Passed to the worker as `LAKELOAD_<SECTION>_<KEY>`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub settings: BTreeMap<String, String>,
    /// Worker image (default: the operator's `--worker-image`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// A Secret with `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY` (and optionally
    /// `AWS_SESSION_TOKEN`); without it the pod's service account (IRSA) or instance role is used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials_secret: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    /// Must be one of the operator's allowed service accounts (`--allowed-service-accounts`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_account_name: Option<String>,
    /// Kueue LocalQueue to submit the worker Job to (default: the operator's
    /// `--default-queue-name`, if any): the Job is created suspended with the
    /// `kueue.x-k8s.io/queue-name` label and runs once Kueue admits it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue_name: Option<String>,
    /// How long the Job may wait for Kueue to admit it before the run fails `NotAdmitted`
    /// and frees its table (default: the operator's `--queue-timeout-seconds`, chart value
    /// `operator.queueTimeoutSeconds`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub queue_timeout_seconds: Option<i64>,
    /// Merged into the worker pod: scheduling, metadata (e.g. IRSA annotations), volumes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_template: Option<WorkerPodTemplate>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub active_deadline_seconds: Option<i64>,
    /// Pod retries (default 1). Config errors (exit 2) and too many rejects (exit 65) never retry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 10))]
    pub backoff_limit: Option<i32>,
    /// Delete this EtlRun this long after it finished (the operator keeps the last
    /// `--keep-last` finished runs per target regardless).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub ttl_seconds_after_finished: Option<i64>,
}

/// What a run may add to its worker pod. The operator's own labels, security context, command
/// and environment win over these; the namespace's Pod Security admission still applies (e.g.
/// `hostNetwork` and `hostPath` volumes need the `privileged` level).
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WorkerPodTemplate {
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub node_selector: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "objects")]
    pub tolerations: Vec<Toleration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "object")]
    pub affinity: Option<Affinity>,
    /// Run in the node's network namespace (e.g. to reach an S3 endpoint on the node).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_network: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority_class_name: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "objects")]
    pub image_pull_secrets: Vec<LocalObjectReference>,
    /// Pod volumes, mounted into the worker with `volumeMounts`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "objects")]
    pub volumes: Vec<Volume>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "objects")]
    pub volume_mounts: Vec<VolumeMount>,
    /// Extra environment for the worker (e.g. `AWS_CA_BUNDLE`); `LAKELOAD_*` settings belong in
    /// `settings`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "objects")]
    pub env: Vec<EnvVar>,
}

// Core Kubernetes types are validated by the API server when the pod is created; the CRD keeps
// them opaque rather than inlining thousands of lines of their schemas.
fn object(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({"type": "object", "x-kubernetes-preserve-unknown-fields": true})
}

fn objects(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "array",
        "items": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}
    })
}

#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum RunMode {
    Full,
    #[default]
    Incremental,
}

impl RunMode {
    pub fn as_str(self) -> &'static str {
        match self {
            RunMode::Full => "full",
            RunMode::Incremental => "incremental",
        }
    }
}

#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SourceSpec {
    /// `s3://bucket/prefix`
    #[schemars(length(min = 1))]
    pub url: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pattern: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delimiter: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub header: Option<bool>,
}

#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TargetSpec {
    /// `s3://bucket/prefix`: the table root. Runs with the same target share one Lease.
    #[schemars(length(min = 1))]
    pub url: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub layout: Option<Layout>,
    /// `parquet` (default): one object per date; `delta`: a Delta Lake table, one commit
    /// per run (`status.tableVersion` records the version a run committed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<TableFormat>,
}

#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Layout {
    Ymd,
    Date,
}

#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum TableFormat {
    Parquet,
    Delta,
}

#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum Phase {
    Pending,
    Running,
    Succeeded,
    Failed,
}

impl Phase {
    pub fn is_finished(self) -> bool {
        matches!(self, Phase::Succeeded | Phase::Failed)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Pending => "Pending",
            Phase::Running => "Running",
            Phase::Succeeded => "Succeeded",
            Phase::Failed => "Failed",
        }
    }
}

/// A processed file, as the worker reported it (the manifest is capped at [`MANIFEST_CAP`]
/// entries).
pub use lakeload_types::result::{MANIFEST_CAP, ManifestEntry};

#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EtlRunStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<Phase>,
    /// Machine-readable cause of the phase, e.g. `LockedBy`, `JobFailed`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease_name: Option<String>,
    /// RFC 3339.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes_read: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rows_read: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rows_blank: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rows_rejected: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rows_inserted: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rows_updated: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rows_superseded: Option<u64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dates_written: Vec<String>,
    /// The files this run processed, at most 1,000; `manifestTotal` counts them all and
    /// `stateUrl` holds the full list.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub manifest: Vec<ManifestEntry>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manifest_total: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state_url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub summary_url: Option<String>,
    /// The table version the run committed (`target.format: delta`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub table_version: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// RFC 3339: a run waiting for the table's S3 lock starts a new Job after this time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after: Option<String>,
    /// RFC 3339: when the Job last started waiting for Kueue to admit it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queued_at: Option<String>,
    /// Failed reads of the finished run's summary so far (retried, then the run fails).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub summary_read_failures: Option<u32>,
}

/// A minimal stored run for unit tests: namespace `ns`, a uid derived from the name.
#[cfg(test)]
pub(crate) fn sample_run(name: &str) -> EtlRun {
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
            format: None,
        },
        settings: Default::default(),
        image: None,
        credentials_secret: None,
        resources: None,
        service_account_name: None,
        queue_name: None,
        queue_timeout_seconds: None,
        pod_template: None,
        active_deadline_seconds: None,
        backoff_limit: None,
        ttl_seconds_after_finished: None,
    };
    let mut run = EtlRun::new(name, spec);
    run.metadata.namespace = Some("ns".into());
    run.metadata.uid = Some(format!("{name}-0000-uid"));
    run
}

/// The revision of the CRDs' schemas, written into each CRD as [`CRD_REVISION_ANNOTATION`].
/// Raised whenever a field is added or changed (a unit test fails until it is): an operator
/// refuses to start against CRDs of an older revision, whose API server would silently drop
/// the fields it relies on.
pub const CRD_REVISION: u32 = 2;
pub const CRD_REVISION_ANNOTATION: &str = "lakeload.io/crd-revision";

/// The CRDs this operator needs: `EtlRun`, and `EtlRunResult` (lakeload-types), through which
/// workers report their summaries; `revision`: whether to write [`CRD_REVISION`] into them.
pub fn crds(
    revision: bool,
) -> Vec<k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition> {
    use kube::CustomResourceExt;
    use lakeload_types::result::EtlRunResult;
    let mut crds = vec![EtlRun::crd(), EtlRunResult::crd()];
    if revision {
        for crd in &mut crds {
            crd.metadata
                .annotations
                .get_or_insert_with(Default::default)
                .insert(CRD_REVISION_ANNOTATION.into(), CRD_REVISION.to_string());
        }
    }
    crds
}

/// The CRDs as YAML, exactly as checked in under `crds/etlrun.yaml` (and the chart's
/// `crds/`).
pub fn crd_yaml() -> String {
    let crds = crds(true);
    let [run, result] = [0, 1].map(|i| serde_yaml::to_string(&crds[i]).expect("the CRD serializes"));
    format!(
        "# Generated by `lakeload-operator crd` from operator/src/crd.rs and \
         types/src/result.rs; do not edit.\n{run}---\n{result}"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// SHA-256 of the schemas at [`CRD_REVISION`]. A failure here means a field changed:
    /// raise `CRD_REVISION`, put the new digest here, and regenerate `crds/etlrun.yaml`.
    const SCHEMA_DIGEST: &str = "3d67a54066a8b8e021314bffb89cbe46ade2b57676a60c38964ad8f6ea1bc91e";

    #[test]
    fn a_changed_schema_raises_the_crd_revision() {
        use sha2::{Digest, Sha256};
        let schemas = serde_json::to_string(&crds(false)).unwrap();
        let digest: String = Sha256::digest(schemas.as_bytes())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(
            digest, SCHEMA_DIGEST,
            "the CRDs' schemas changed: raise CRD_REVISION (now {CRD_REVISION}) and set SCHEMA_DIGEST"
        );
        assert!(crd_yaml().contains(&format!("{CRD_REVISION_ANNOTATION}: '{CRD_REVISION}'")));
    }

    /// The sample in `deploy/etlrun.yaml` is an EtlRun this operator reads as meant: a Delta
    /// table, an incremental run.
    #[test]
    fn the_sample_etlrun_is_a_delta_table() {
        let text = include_str!("../../deploy/etlrun.yaml");
        let run: EtlRun = text
            .split("\n---\n")
            .find(|doc| doc.contains("kind: EtlRun"))
            .map(|doc| serde_yaml::from_str(doc).expect("the sample parses"))
            .expect("the sample holds an EtlRun");
        assert_eq!(run.spec.target.format, Some(TableFormat::Delta));
        assert_eq!(run.spec.target.url, "s3://lake-bucket/tables/events");
    }
}
