//! The scheduled path: the Helm chart's CronJob runs `lakeload-operator create-run`, which
//! creates one `EtlRun` from a template (no kubectl image needed).

use kube::api::{Api, PostParams};
use kube::{Client, ResourceExt};

use crate::crd::EtlRun;

pub const LABEL_SCHEDULED: &str = "lakeload.io/scheduled-from";

/// The namespace a pod runs in, from its service account mount.
pub fn pod_namespace() -> Option<String> {
    std::fs::read_to_string("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
}

/// Turns a template into a new run: a unique name derived from the template's name (or its
/// `generateName`), the namespace given (else the template's, else the pod's).
pub fn instantiate(
    mut template: EtlRun,
    namespace: Option<String>,
    now: chrono::DateTime<chrono::Utc>,
) -> EtlRun {
    let base = template
        .metadata
        .generate_name
        .take()
        .map(|g| g.trim_end_matches('-').to_string())
        .or_else(|| template.metadata.name.clone())
        .unwrap_or_else(|| "etlrun".into());
    let stamp = now.format("%Y%m%d-%H%M%S").to_string();
    let keep = 63 - stamp.len() - 1;
    template.metadata.name = Some(format!("{}-{stamp}", base.chars().take(keep).collect::<String>()));
    template.metadata.namespace = namespace
        .or(template.metadata.namespace.take())
        .or_else(pod_namespace);
    template
        .metadata
        .labels
        .get_or_insert_with(Default::default)
        .insert(LABEL_SCHEDULED.into(), base);
    template.metadata.resource_version = None;
    template.metadata.uid = None;
    template.metadata.creation_timestamp = None;
    template.status = None;
    template
}

pub async fn create_from_template(
    client: Client,
    template_yaml: &str,
    namespace: Option<String>,
) -> anyhow::Result<String> {
    let template: EtlRun = serde_yaml::from_str(template_yaml)
        .map_err(|e| anyhow::anyhow!("the template is not an EtlRun manifest: {e}"))?;
    let run = instantiate(template, namespace, chrono::Utc::now());
    let ns = run
        .namespace()
        .ok_or_else(|| anyhow::anyhow!("no namespace: pass --namespace or set metadata.namespace"))?;
    let created = Api::<EtlRun>::namespaced(client, &ns)
        .create(&PostParams::default(), &run)
        .await?;
    Ok(format!("{ns}/{}", created.name_any()))
}
