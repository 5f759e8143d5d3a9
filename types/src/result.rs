//! `EtlRunResult` (group `lakeload.io`, version `v1alpha1`): how a worker running for an
//! `EtlRun` hands its summary to the operator through the Kubernetes API, so that the operator
//! never reads the table's store and holds no data credentials (SPEC §8). The worker creates
//! one per attempt, owned by the run; the operator reads the newest and copies it into the
//! run's status. Deleting the run deletes its results.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::summary::RunSummary;

/// Manifest entries a result (and the run's status) carries; `manifestTotal` counts them all
/// and the state at `stateUrl` lists every file. 1,000 entries of long keys stay well under
/// the API server's object size limit.
pub const MANIFEST_CAP: usize = 1_000;

/// Label: the `EtlRun` a result belongs to (its uid: a deleted and re-created run of the same
/// name never reads its predecessor's results).
pub const RUN_UID_LABEL: &str = "lakeload.io/run-uid";
/// Label: the `EtlRun`'s name, for `kubectl get etlrunresults -l lakeload.io/run=<name>`
/// (absent when the name is longer than a label value may be).
pub const RUN_LABEL: &str = "lakeload.io/run";
/// Label: the uid of the pod that created the result. The chart's admission policy admits a
/// result only from the pod it names, and the operator takes only results of its run's current
/// Job's pods.
pub const POD_UID_LABEL: &str = "lakeload.io/pod-uid";

/// The summary of one worker attempt for an `EtlRun`, reported by the worker.
#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "lakeload.io",
    version = "v1alpha1",
    kind = "EtlRunResult",
    plural = "etlrunresults",
    namespaced,
    printcolumn = r#"{"name":"Run","type":"string","jsonPath":".metadata.labels.lakeload\\.io/run"}"#,
    printcolumn = r#"{"name":"Status","type":"string","jsonPath":".spec.status"}"#,
    printcolumn = r#"{"name":"Rows","type":"integer","jsonPath":".spec.rowsRead"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct RunResultSpec {
    pub run_id: String,
    /// `succeeded` or `failed`.
    pub status: String,
    pub exit_code: i32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// RFC 3339.
    pub started_at: String,
    /// RFC 3339.
    pub finished_at: String,
    pub bytes_read: u64,
    pub rows_read: u64,
    pub rows_blank: u64,
    pub rows_rejected: u64,
    pub rows_inserted: u64,
    pub rows_updated: u64,
    pub rows_superseded: u64,
    #[serde(default)]
    pub dates_written: Vec<String>,
    #[serde(default)]
    pub dates_deleted: Vec<String>,
    pub bytes_written: u64,
    pub table_changed: bool,
    /// The first [`MANIFEST_CAP`] files the run processed.
    #[serde(default)]
    pub manifest: Vec<ManifestEntry>,
    /// How many files the run processed.
    pub manifest_total: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state_url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub summary_url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rejects_url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_url: Option<String>,
    /// The table version the run committed (`target.format = delta`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub table_version: Option<u64>,
    pub lakeload_version: String,
}

/// A processed file, as the run's status lists it.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ManifestEntry {
    pub key: String,
    pub size: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub etag: Option<String>,
    pub rows: u64,
}

/// The `EtlRun` a worker reports to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunOwner {
    pub name: String,
    pub uid: String,
    /// The reporting pod's uid (`--pod-uid`, from the downward API).
    pub pod_uid: Option<String>,
}

impl RunResultSpec {
    /// The summary, its manifest capped; `summary_url` is where the full summary lies.
    pub fn from_summary(summary: &RunSummary, summary_url: Option<String>) -> RunResultSpec {
        let c = &summary.counts;
        let time = |t: &chrono::DateTime<chrono::Utc>| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        RunResultSpec {
            run_id: summary.run_id.clone(),
            status: summary.status.clone(),
            exit_code: summary.exit_code,
            error: summary.error.clone(),
            started_at: time(&summary.started_at),
            finished_at: time(&summary.finished_at),
            bytes_read: summary.bytes_read,
            rows_read: c.rows_read,
            rows_blank: c.rows_blank,
            rows_rejected: c.rows_rejected,
            rows_inserted: c.rows_inserted,
            rows_updated: c.rows_updated,
            rows_superseded: c.rows_superseded,
            dates_written: summary.dates_written.clone(),
            dates_deleted: summary.dates_deleted.clone(),
            bytes_written: summary.bytes_written,
            table_changed: summary.table_changed,
            manifest: summary
                .manifest
                .iter()
                .take(MANIFEST_CAP)
                .map(|m| ManifestEntry {
                    key: m.key.clone(),
                    size: m.size,
                    etag: m.etag.clone(),
                    rows: m.rows,
                })
                .collect(),
            manifest_total: summary.manifest.len() as u64,
            state_url: summary.state_url.clone(),
            summary_url,
            rejects_url: summary.rejects_url.clone(),
            log_url: summary.log_url.clone(),
            table_version: summary.table_version,
            lakeload_version: summary.lakeload_version.clone(),
        }
    }
}

impl EtlRunResult {
    /// The result of one attempt of `owner`'s run: named by the API server after the run
    /// (`<run name>-xxxxx`, so a retried pod never collides with an earlier attempt), labelled
    /// and owned by the run.
    pub fn for_run(owner: &RunOwner, spec: RunResultSpec) -> EtlRunResult {
        let mut result = EtlRunResult::new("", spec);
        result.metadata = ObjectMeta {
            generate_name: Some(format!("{}-", owner.name)),
            labels: Some(
                [
                    Some((RUN_UID_LABEL.to_string(), owner.uid.clone())),
                    (owner.name.len() <= 63).then(|| (RUN_LABEL.to_string(), owner.name.clone())),
                    owner.pod_uid.clone().map(|uid| (POD_UID_LABEL.to_string(), uid)),
                ]
                .into_iter()
                .flatten()
                .collect(),
            ),
            owner_references: Some(vec![OwnerReference {
                api_version: "lakeload.io/v1alpha1".into(),
                kind: "EtlRun".into(),
                name: owner.name.clone(),
                uid: owner.uid.clone(),
                // Not a controller and no blockOwnerDeletion: either would need the worker to
                // hold more than `create` on results.
                ..Default::default()
            }]),
            ..Default::default()
        };
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::summary::{ManifestEntry as File, Mode, RowCounts};

    fn summary(files: usize) -> RunSummary {
        let at = chrono::DateTime::parse_from_rfc3339("2026-01-02T03:04:05Z")
            .unwrap()
            .to_utc();
        RunSummary {
            run_id: "20260102T030405000Z-abc123".into(),
            mode: Mode::Incremental,
            status: "succeeded".into(),
            started_at: at,
            finished_at: at,
            duration_seconds: 1.0,
            exit_code: 0,
            error: None,
            source_url: "s3://in/x".into(),
            target_url: "s3://out/t".into(),
            files: (0..files).map(|i| format!("x/{i}.gz")).collect(),
            manifest: (0..files)
                .map(|i| File {
                    key: format!("x/{i}.gz"),
                    size: 10,
                    etag: Some(format!("\"{i}\"")),
                    rows: 3,
                })
                .collect(),
            bytes_read: 10 * files as u64,
            counts: RowCounts {
                rows_read: 3 * files as u64,
                rows_inserted: 3 * files as u64,
                ..RowCounts::default()
            },
            dates_written: vec!["2026-01-01".into()],
            dates_deleted: vec![],
            objects_deleted: vec![],
            bytes_written: 99,
            memory_limit: 1 << 30,
            memory_limit_chosen: "run.memory_limit = 1GiB".into(),
            bytes_spilled: 0,
            table_changed: true,
            table_version: None,
            rejects_url: None,
            log_url: Some("s3://out/t/_lakeload/logs/r.log".into()),
            state_url: Some("s3://out/t/_lakeload/state.json".into()),
            lakeload_version: "0.1.0".into(),
        }
    }

    #[test]
    fn a_result_caps_the_manifest_and_counts_every_file() {
        let spec = RunResultSpec::from_summary(&summary(1_500), None);
        assert_eq!(spec.manifest.len(), MANIFEST_CAP);
        assert_eq!(spec.manifest_total, 1_500);
        assert_eq!(spec.manifest[999].key, "x/999.gz");
        assert_eq!(spec.rows_read, 4_500);
        assert_eq!(spec.started_at, "2026-01-02T03:04:05.000Z");
    }

    #[test]
    fn a_result_is_owned_labelled_and_named_by_its_run() {
        let owner = RunOwner {
            name: "nightly".into(),
            uid: "0b7c-uid".into(),
            pod_uid: Some("pod-1-uid".into()),
        };
        let r = EtlRunResult::for_run(&owner, RunResultSpec::from_summary(&summary(2), None));
        let meta = &r.metadata;
        assert_eq!(meta.name, None);
        assert_eq!(meta.generate_name.as_deref(), Some("nightly-"));
        let labels = meta.labels.clone().unwrap();
        assert_eq!(labels[RUN_UID_LABEL], "0b7c-uid");
        assert_eq!(labels[RUN_LABEL], "nightly");
        assert_eq!(labels[POD_UID_LABEL], "pod-1-uid");
        let owner_ref = &meta.owner_references.as_ref().unwrap()[0];
        assert_eq!(
            (owner_ref.kind.as_str(), owner_ref.uid.as_str()),
            ("EtlRun", "0b7c-uid")
        );
        // What the API server stores is what the operator reads back.
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(json["spec"]["manifestTotal"], 2);
        let back: EtlRunResult = serde_json::from_value(json).unwrap();
        assert_eq!(back.spec, r.spec);

        // A run name may be longer than a label value: only the uid label stays.
        let long = RunOwner {
            name: "x".repeat(200),
            uid: "u".into(),
            pod_uid: None,
        };
        let r = EtlRunResult::for_run(&long, back.spec);
        assert_eq!(r.metadata.labels.unwrap().len(), 1);
    }
}
