//! What a run may ask for, decided before any Job exists. Whoever may create `EtlRun`s in a
//! namespace gets no more than the run's own worker does (SPEC §8, tenants of a shared
//! cluster): the image, service account, Secrets, environment, volumes and network of the
//! worker pod are allow-listed by the operator's admin, and credentials never sit in the spec.
//! A pure function of the run and the admin's lists; the edge only looks up which mounted
//! ConfigMaps carry `binaryData`.

use k8s_openapi::api::core::v1::Volume;

use crate::crd::EtlRun;

/// The admin's allow-lists (chart values `operator.allowed*`). A list entry is a name, or a
/// prefix ending in `*`.
#[derive(Debug, Clone)]
pub struct Admission {
    /// `spec.image` (the worker image is always in it).
    pub images: Vec<String>,
    /// `spec.serviceAccountName` (the worker service account is always in it).
    pub service_accounts: Vec<String>,
    /// Secrets a run may name: `spec.credentialsSecret`, `secretKeyRef` of its env, `secret`
    /// volumes. Exact names only (the chart allows `lakeload-aws` by default; none here).
    pub secrets: Vec<String>,
    /// Variables `spec.podTemplate.env` may set: [`DEFAULT_ALLOWED_ENV`] plus the admin's.
    /// Names matching [`GUARDED_ENV`] pass only when listed by their full name.
    pub env: Vec<String>,
    /// Volume types `spec.podTemplate.volumes` may use (see [`volume_type`]).
    pub volume_types: Vec<String>,
    /// ConfigMaps a run may mount, by exact name (the operator reads them, and only them, to
    /// refuse `binaryData`).
    pub config_maps: Vec<String>,
    /// `spec.podTemplate.hostNetwork: true` (chart value `operator.allowHostNetwork`).
    pub host_network: bool,
}

/// Variables any run may set on its worker.
pub const DEFAULT_ALLOWED_ENV: &[&str] = &["TZ", "RUST_LOG", "RUST_BACKTRACE", "NO_COLOR"];

/// Families of variables that change where the worker's credentials come from or go
/// (`AWS_*`: profiles, `credential_process`, endpoints; `*_PROXY`; `SSL_*`; `KUBERNETES_*`:
/// where its service-account token is sent), what code it loads (`LD_*`), or its settings
/// (`LAKELOAD_*`, which belong in `spec.settings`). A pattern in the allow-list never admits
/// them: the admin names each one.
pub const GUARDED_ENV: &str = "AWS_*, *_PROXY, SSL_*, LD_*, LAKELOAD_*, KUBERNETES_*";

fn guarded(name: &str) -> bool {
    let upper = name.to_ascii_uppercase();
    ["AWS_", "SSL_", "LD_", "LAKELOAD_", "KUBERNETES_"]
        .iter()
        .any(|p| upper.starts_with(p))
        || upper.ends_with("_PROXY")
}

/// Volume types a run may mount by default: scratch space, Secrets and ConfigMaps (each
/// allow-listed by name), and projected service-account tokens (web identity).
pub const DEFAULT_VOLUME_TYPES: &[&str] =
    &["emptyDir", "secret", "configMap", "projectedServiceAccountToken"];

/// `spec.settings` keys that hold credentials: they would sit in plain text in the resource
/// (readable by anyone who may read EtlRuns) and in the Job's environment.
const SECRET_SETTINGS: &[&str] = &[
    "access_key_id",
    "secret_access_key",
    "session_token",
    "aws_key",
    "aws_secret_key",
];

impl Default for Admission {
    fn default() -> Self {
        Admission {
            images: Vec::new(),
            service_accounts: Vec::new(),
            secrets: Vec::new(),
            env: DEFAULT_ALLOWED_ENV.iter().map(|s| s.to_string()).collect(),
            volume_types: DEFAULT_VOLUME_TYPES.iter().map(|s| s.to_string()).collect(),
            config_maps: Vec::new(),
            host_network: false,
        }
    }
}

/// Whether `value` is in `list` (exactly, or under a prefix ending in `*`).
pub fn listed(value: &str, list: &[String]) -> bool {
    list.iter().any(|pattern| match pattern.strip_suffix('*') {
        Some(prefix) => value.starts_with(prefix),
        None => value == pattern,
    })
}

impl Admission {
    /// Whether `spec.podTemplate.env` may set `name`.
    pub fn env_allowed(&self, name: &str) -> bool {
        self.env.iter().any(|n| n == name) || (!guarded(name) && listed(name, &self.env))
    }

    fn secret_allowed(&self, name: &str) -> bool {
        self.secrets.iter().any(|s| s == name)
    }
}

/// A pod volume's type: the name of its source field (`emptyDir`, `hostPath`, `configMap`,
/// `persistentVolumeClaim`, …); a projected volume of service-account tokens only is
/// `projectedServiceAccountToken`.
pub fn volume_type(volume: &Volume) -> String {
    if let Some(projected) = &volume.projected {
        let tokens_only = projected.sources.as_ref().is_some_and(|s| {
            !s.is_empty()
                && s.iter().all(|p| {
                    p.service_account_token.is_some()
                        && p.config_map.is_none()
                        && p.secret.is_none()
                        && p.downward_api.is_none()
                        && p.cluster_trust_bundle.is_none()
                })
        });
        return if tokens_only {
            "projectedServiceAccountToken"
        } else {
            "projected"
        }
        .into();
    }
    serde_json::to_value(volume)
        .ok()
        .and_then(|v| v.as_object()?.keys().find(|k| *k != "name").cloned())
        .unwrap_or_else(|| "emptyDir".into())
}

/// Why a run may not start: a reason for `status.reason` and a message naming the field and
/// the fix.
#[derive(Debug, Clone, PartialEq)]
pub struct Refusal {
    pub reason: &'static str,
    pub message: String,
}

fn refuse(reason: &'static str, message: String) -> Option<Refusal> {
    Some(Refusal { reason, message })
}

fn shown(list: &[String]) -> String {
    if list.is_empty() {
        "none".into()
    } else {
        list.join(", ")
    }
}

/// The first thing `run` asks for that the admin has not allowed, if any. `binary_config_maps`
/// are the ConfigMaps it mounts that carry `binaryData`.
pub fn refusal(run: &EtlRun, admission: &Admission, binary_config_maps: &[String]) -> Option<Refusal> {
    let spec = &run.spec;
    let lists = [
        (
            "spec.image",
            spec.image.as_deref(),
            &admission.images,
            "ImageNotAllowed",
            "operator.allowedImages",
        ),
        (
            "spec.serviceAccountName",
            spec.service_account_name.as_deref(),
            &admission.service_accounts,
            "ServiceAccountNotAllowed",
            "operator.allowedServiceAccounts",
        ),
    ];
    for (field, value, list, reason, chart_value) in lists {
        if let Some(value) = value
            && !listed(value, list)
        {
            return refuse(
                reason,
                format!(
                    "{field} {value} is not allowed by the operator (allowed: {}); ask its admin \
                     to add it (chart value {chart_value})",
                    shown(list)
                ),
            );
        }
    }
    if let Some(key) = spec.settings.keys().find(|k| {
        let last = k.rsplit('.').next().unwrap_or(k).to_ascii_lowercase();
        SECRET_SETTINGS.contains(&last.as_str())
    }) {
        return refuse(
            "SecretInSettings",
            format!(
                "spec.settings {key} holds a credential in plain text, readable by anyone who may \
                 read EtlRuns; put AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (and \
                 AWS_SESSION_TOKEN) in a Secret and name it in spec.credentialsSecret, or give the \
                 worker's service account a role (IRSA)"
            ),
        );
    }
    let secret_refusal = |field: String, name: &str| {
        refuse(
            "SecretNotAllowed",
            format!(
                "{field} names Secret {name}, which runs may not use (allowed: {}); ask the \
                 operator's admin to add it (chart value operator.allowedSecrets)",
                shown(&admission.secrets)
            ),
        )
    };
    if let Some(name) = &spec.credentials_secret
        && !admission.secret_allowed(name)
    {
        return secret_refusal("spec.credentialsSecret".into(), name);
    }
    let template = spec.pod_template.as_ref()?;
    if template.host_network == Some(true) && !admission.host_network {
        return refuse(
            "HostNetworkNotAllowed",
            "spec.podTemplate.hostNetwork is not allowed by the operator: a pod on the node's \
             network reaches what the node does (its metadata service, other pods' ports); ask \
             its admin (chart value operator.allowHostNetwork)"
                .into(),
        );
    }
    for var in &template.env {
        if !admission.env_allowed(&var.name) {
            return refuse(
                "EnvNotAllowed",
                format!(
                    "spec.podTemplate.env {} is not allowed (allowed: {}; {GUARDED_ENV} only by \
                     full name): such variables could load code outside the allowed image or \
                     send the run's credentials elsewhere, and worker settings belong in \
                     spec.settings; ask the operator's admin if it must be set (chart value \
                     operator.allowedEnv)",
                    var.name,
                    shown(&admission.env)
                ),
            );
        }
        if let Some(secret) = var.value_from.as_ref().and_then(|v| v.secret_key_ref.as_ref())
            && !admission.secret_allowed(&secret.name)
        {
            return secret_refusal(format!("spec.podTemplate.env {}", var.name), &secret.name);
        }
    }
    for volume in &template.volumes {
        let kind = volume_type(volume);
        if !admission.volume_types.contains(&kind) {
            return refuse(
                "VolumeNotAllowed",
                format!(
                    "spec.podTemplate.volumes {} is a {kind} volume, not allowed by the operator \
                     (allowed: {}); ask its admin to add the type (chart value \
                     operator.allowedVolumeTypes)",
                    volume.name,
                    shown(&admission.volume_types)
                ),
            );
        }
        if let Some(secret) = volume.secret.as_ref().and_then(|s| s.secret_name.as_ref())
            && !admission.secret_allowed(secret)
        {
            return secret_refusal(format!("spec.podTemplate.volumes {}", volume.name), secret);
        }
        if let Some(map) = &volume.config_map {
            if !admission.config_maps.contains(&map.name) {
                return refuse(
                    "VolumeNotAllowed",
                    format!(
                        "spec.podTemplate.volumes {} mounts ConfigMap {}, which runs may not \
                         mount (allowed: {}); ask the operator's admin to add it (chart value \
                         operator.allowedConfigMaps)",
                        volume.name,
                        map.name,
                        shown(&admission.config_maps)
                    ),
                );
            }
            if binary_config_maps.contains(&map.name) {
                return refuse(
                    "VolumeNotAllowed",
                    format!(
                        "spec.podTemplate.volumes {} mounts ConfigMap {}, which carries \
                         binaryData (files a template could load as code); mount text \
                         ConfigMaps only",
                        volume.name, map.name
                    ),
                );
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::WorkerPodTemplate;
    use k8s_openapi::api::core::v1::{
        ConfigMapVolumeSource, EnvVar, EnvVarSource, HostPathVolumeSource, PersistentVolumeClaimVolumeSource,
        ProjectedVolumeSource, SecretKeySelector, SecretVolumeSource, ServiceAccountTokenProjection,
        VolumeProjection,
    };

    fn admission() -> Admission {
        Admission {
            secrets: vec!["team-a-aws".into()],
            config_maps: vec!["tools".into()],
            ..Admission::default()
        }
    }

    /// The reason and message `template` is refused with under `admission`, if it is.
    fn refused(
        template: WorkerPodTemplate,
        binary: &[&str],
        admission: &Admission,
    ) -> Option<(String, String)> {
        let mut run = crate::crd::sample_run("r");
        run.spec.pod_template = Some(template);
        let binary: Vec<String> = binary.iter().map(|s| s.to_string()).collect();
        refusal(&run, admission, &binary).map(|r| (r.reason.to_string(), r.message))
    }

    fn env(name: &str) -> WorkerPodTemplate {
        WorkerPodTemplate {
            env: vec![EnvVar {
                name: name.into(),
                value: Some("x".into()),
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    fn volume(v: Volume) -> WorkerPodTemplate {
        WorkerPodTemplate {
            volumes: vec![v],
            ..Default::default()
        }
    }

    #[test]
    fn env_is_an_allow_list_and_guarded_families_need_their_full_name() {
        for name in [
            "LD_PRELOAD",
            "LAKELOAD_RUN_MODE",
            "GCONV_PATH",
            "AWS_CONFIG_FILE",
            "AWS_PROFILE",
            "HTTPS_PROXY",
            "http_proxy",
            "SSL_CERT_FILE",
            "KUBERNETES_SERVICE_HOST",
            "MY_SETTING",
        ] {
            let (reason, message) = refused(env(name), &[], &admission()).expect(name);
            assert_eq!(reason, "EnvNotAllowed");
            assert!(
                message.contains(name) && message.contains("operator.allowedEnv"),
                "{message}"
            );
        }
        assert_eq!(refused(env("TZ"), &[], &admission()), None);
        // An admin's pattern admits ordinary names, never a guarded family.
        let wide = Admission {
            env: vec!["*".into(), "MY_*".into(), "AWS_CA_BUNDLE".into()],
            ..admission()
        };
        assert_eq!(refused(env("MY_SETTING"), &[], &wide), None);
        assert_eq!(refused(env("AWS_CA_BUNDLE"), &[], &wide), None, "listed by name");
        for name in [
            "AWS_CONFIG_FILE",
            "LD_PRELOAD",
            "NO_PROXY",
            "KUBERNETES_SERVICE_PORT",
        ] {
            assert!(refused(env(name), &[], &wide).is_some(), "{name}");
        }
    }

    #[test]
    fn secrets_are_named_from_the_allow_list_and_credentials_never_sit_in_settings() {
        let mut run = crate::crd::sample_run("r");
        run.spec.credentials_secret = Some("team-b-aws".into());
        let r = refusal(&run, &admission(), &[]).unwrap();
        assert_eq!(r.reason, "SecretNotAllowed");
        assert!(
            r.message.contains("team-b-aws") && r.message.contains("operator.allowedSecrets"),
            "{}",
            r.message
        );
        run.spec.credentials_secret = Some("team-a-aws".into());
        assert_eq!(refusal(&run, &admission(), &[]), None);

        let from_secret = |secret: &str| WorkerPodTemplate {
            env: vec![EnvVar {
                name: "TZ".into(),
                value_from: Some(EnvVarSource {
                    secret_key_ref: Some(SecretKeySelector {
                        name: secret.into(),
                        key: "tz".into(),
                        optional: None,
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            }],
            ..Default::default()
        };
        assert_eq!(
            refused(from_secret("team-b-aws"), &[], &admission()).unwrap().0,
            "SecretNotAllowed"
        );
        assert_eq!(refused(from_secret("team-a-aws"), &[], &admission()), None);
        let mounted = |secret: &str| {
            volume(Volume {
                name: "creds".into(),
                secret: Some(SecretVolumeSource {
                    secret_name: Some(secret.into()),
                    ..Default::default()
                }),
                ..Default::default()
            })
        };
        assert_eq!(
            refused(mounted("team-b-aws"), &[], &admission()).unwrap().0,
            "SecretNotAllowed"
        );
        assert_eq!(refused(mounted("team-a-aws"), &[], &admission()), None);

        for key in [
            "aws.secret_access_key",
            "aws.access_key_id",
            "aws.session_token",
            "aws_params.aws_secret_key",
        ] {
            let mut run = crate::crd::sample_run("r");
            run.spec.settings.insert(key.into(), "AKIA…".into());
            let r = refusal(&run, &admission(), &[]).expect(key);
            assert_eq!(r.reason, "SecretInSettings");
            assert!(
                r.message.contains(key) && r.message.contains("spec.credentialsSecret"),
                "{}",
                r.message
            );
        }
        let mut run = crate::crd::sample_run("r");
        run.spec.settings.insert("aws.region".into(), "eu-west-1".into());
        assert_eq!(refusal(&run, &admission(), &[]), None);
    }

    #[test]
    fn host_network_needs_the_admin() {
        let on_host = WorkerPodTemplate {
            host_network: Some(true),
            ..Default::default()
        };
        let (reason, message) = refused(on_host.clone(), &[], &admission()).unwrap();
        assert_eq!(reason, "HostNetworkNotAllowed");
        assert!(message.contains("operator.allowHostNetwork"), "{message}");
        let allowing = Admission {
            host_network: true,
            ..admission()
        };
        assert_eq!(refused(on_host, &[], &allowing), None);
        let off = WorkerPodTemplate {
            host_network: Some(false),
            ..Default::default()
        };
        assert_eq!(refused(off, &[], &admission()), None);
    }

    #[test]
    fn volumes_are_allowed_by_type_and_config_maps_by_name_and_content() {
        let host_path = Volume {
            name: "host".into(),
            host_path: Some(HostPathVolumeSource {
                path: "/usr/lib".into(),
                type_: None,
            }),
            ..Default::default()
        };
        let (reason, message) = refused(volume(host_path), &[], &admission()).unwrap();
        assert_eq!(reason, "VolumeNotAllowed");
        assert!(
            message.contains("hostPath") && message.contains("operator.allowedVolumeTypes"),
            "{message}"
        );
        let config_map = |name: &str| Volume {
            name: "conf".into(),
            config_map: Some(ConfigMapVolumeSource {
                name: name.into(),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(refused(volume(config_map("tools")), &[], &admission()), None);
        let (_, message) = refused(volume(config_map("tools")), &["tools"], &admission()).unwrap();
        assert!(message.contains("binaryData"), "{message}");
        let (_, message) = refused(volume(config_map("aws-profile")), &[], &admission()).unwrap();
        assert!(
            message.contains("aws-profile") && message.contains("operator.allowedConfigMaps"),
            "{message}"
        );
        let token = Volume {
            name: "token".into(),
            projected: Some(ProjectedVolumeSource {
                sources: Some(vec![VolumeProjection {
                    service_account_token: Some(ServiceAccountTokenProjection {
                        audience: Some("sts.amazonaws.com".into()),
                        path: "token".into(),
                        expiration_seconds: None,
                    }),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(
            refused(volume(token), &[], &admission()),
            None,
            "web identity tokens are fine"
        );
        let claim = Volume {
            name: "data".into(),
            persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                claim_name: "scratch".into(),
                read_only: None,
            }),
            ..Default::default()
        };
        assert!(refused(volume(claim.clone()), &[], &admission()).is_some());
        let wider = Admission {
            volume_types: vec!["persistentVolumeClaim".into()],
            ..admission()
        };
        assert_eq!(
            refused(volume(claim), &[], &wider),
            None,
            "an admin may allow more types"
        );
    }
}
