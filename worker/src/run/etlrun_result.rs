//! A worker started by the operator for an `EtlRun` (`lakeload run --etlrun NAME --etlrun-uid
//! UID`) reports its summary as an `EtlRunResult` through the Kubernetes API, with its pod's
//! service account (which may only create results). The operator reads it from there: it never
//! needs the table's store or its credentials. A worker run outside Kubernetes does none of this.

use std::time::Duration;

use kube::api::{Api, PostParams};
use lakeload_types::result::{EtlRunResult, RunOwner, RunResultSpec};

use crate::summary::RunSummary;

/// Attempts at creating the result before the worker gives up (1 + 2 + 4 + 8 s of waiting):
/// an API server restart or a brief network fault must not lose a run's status.
const ATTEMPTS: u32 = 5;

/// Where the kubelet takes a container's termination message from: when the report fails,
/// the reason lands in the pod's status, which the operator quotes in the run's.
const TERMINATION_LOG: &str = "/dev/termination-log";

/// Creates the `EtlRunResult` of `summary` in the pod's namespace, owned by `owner`. Returns
/// the created object's name. A failure is logged and written as the termination message; the
/// run's exit code stays the run's own (the table is what it is whether or not the report
/// arrives).
pub async fn report(owner: &RunOwner, summary: &RunSummary) -> Result<String, String> {
    let outcome = try_report(owner, summary).await;
    match &outcome {
        Ok(name) => tracing::info!(
            "reported the run's result to EtlRun {} as EtlRunResult {name}",
            owner.name
        ),
        Err(e) => {
            let message = format!(
                "the run {} (exit {}) but its result could not be reported to EtlRun {}: {e}",
                summary.status, summary.exit_code, owner.name
            );
            tracing::error!("{message}");
            // Absent outside a pod (or on a read-only /dev): the log line above is all there is.
            let _ = std::fs::write(TERMINATION_LOG, &message);
        }
    }
    outcome
}

async fn try_report(owner: &RunOwner, summary: &RunSummary) -> Result<String, String> {
    let client = kube::Client::try_default().await.map_err(|e| {
        format!("no Kubernetes API to report to ({e}); in a pod, the service account token must be mounted")
    })?;
    let results: Api<EtlRunResult> = Api::default_namespaced(client);
    let summary_url = format!(
        "{}/{}",
        summary.target_url.trim_end_matches('/'),
        crate::bookkeeping::summary_key(&summary.run_id)
    );
    let result = EtlRunResult::for_run(owner, RunResultSpec::from_summary(summary, Some(summary_url)));
    let mut attempt = 1;
    loop {
        match results.create(&PostParams::default(), &result).await {
            Ok(created) => return Ok(created.metadata.name.unwrap_or_default()),
            Err(e) => {
                let permanent = explain_permanent(&e);
                if permanent.is_some() || attempt == ATTEMPTS {
                    return Err(permanent.unwrap_or_else(|| format!("{e} (after {attempt} attempts)")));
                }
                tracing::warn!("reporting the run's result failed (attempt {attempt} of {ATTEMPTS}): {e}");
                tokio::time::sleep(Duration::from_secs(1 << (attempt - 1))).await;
                attempt += 1;
            }
        }
    }
}

/// Errors that another attempt cannot cure, with what fixes them.
fn explain_permanent(e: &kube::Error) -> Option<String> {
    let kube::Error::Api(status) = e else {
        return None;
    };
    match status.code {
        401 | 403 => Some(format!(
            "{}; the worker's service account needs `create` on etlrunresults.lakeload.io in \
             its namespace (the chart's `<release>-worker` Role; bind it to any service account \
             named in spec.serviceAccountName)",
            status.message
        )),
        404 => Some(format!(
            "{}; the EtlRunResult CRD is not installed (kubectl apply -f crds/etlrun.yaml)",
            status.message
        )),
        400 | 409 | 422 => Some(status.message.clone()),
        _ => None,
    }
}
