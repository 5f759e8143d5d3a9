//! The CRDs in the cluster: applied by the chart's upgrade hook (`lakeload-operator crd
//! --apply`), and checked by the operator before it starts. `helm upgrade` never touches a
//! chart's `crds/`, and an API server prunes fields its CRD does not know: an operator running
//! against older CRDs would see `target.format: delta` become Parquet, `queueName` vanish.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, Patch, PatchParams};
use kube::{Client, ResourceExt};

use crate::crd::{CRD_REVISION, CRD_REVISION_ANNOTATION, crds};

/// Creates or updates this operator's CRDs (server-side apply).
pub async fn apply(client: &Client) -> Result<Vec<String>, kube::Error> {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    let params = PatchParams::apply("lakeload-operator").force();
    let mut applied = Vec::new();
    for crd in crds(true) {
        let name = crd.name_any();
        api.patch(&name, &params, &Patch::Apply(&crd)).await?;
        applied.push(name);
    }
    Ok(applied)
}

/// Why the installed CRDs cannot serve this operator, naming the fix; `Ok` when each is at
/// this operator's revision or newer.
pub async fn check(client: &Client) -> Result<(), String> {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    let fix = "upgrade the chart (`helm upgrade <release> charts/lakeload`: its hook applies the \
               CRDs) or apply them (`kubectl apply --server-side -f crds/etlrun.yaml`)";
    for crd in crds(true) {
        let name = crd.name_any();
        let installed = match api.get_opt(&name).await {
            Ok(Some(installed)) => installed,
            Ok(None) => return Err(format!("the CRD {name} is not installed: {fix}")),
            // An operator deployed without this version's ClusterRole (e.g. by an older chart)
            // cannot tell: it does not guess.
            Err(kube::Error::Api(s)) if s.code == 403 => {
                return Err(format!(
                    "cannot check that the CRD {name} is not older than this operator: its \
                     service account may not read it (the chart's operator-crds ClusterRole \
                     grants `get` on its two CRDs; {}); {fix}",
                    s.message
                ));
            }
            Err(e) => return Err(format!("cannot read the CRD {name}: {e}")),
        };
        let revision = installed
            .annotations()
            .get(CRD_REVISION_ANNOTATION)
            .and_then(|r| r.parse::<u32>().ok())
            .unwrap_or(0);
        if revision < CRD_REVISION {
            return Err(format!(
                "the CRD {name} is older than this operator (revision {revision}, needs \
                 {CRD_REVISION}): fields it relies on would be dropped; {fix}"
            ));
        }
    }
    Ok(())
}
