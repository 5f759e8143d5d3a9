//! The operator against a real kube-apiserver + etcd (built from source, tests/controlplane) and a
//! real S3 server (moto). The test plays the kubelet: it runs the worker binary for each Job the
//! operator creates, with the Job's env and args, and patches the Job's status as the Job
//! controller would. The operator runs as its own process with the service account and RBAC of
//! `deploy/operator.yaml` (no cluster-admin), watching one namespace per test.

mod common;
use common::{Process, client_for, wait_for};

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Namespace, Secret, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use lakeload_operator::crd::{EtlRun, Phase};
use lakeload_testkit::S3Server;
use lakeload_testkit::controlplane::ControlPlane;
use lakeload_types::result::EtlRunResult;
use serde_json::json;
use tokio::sync::OnceCell;

fn workspace() -> PathBuf {
    lakeload_testkit::workspace()
}

fn operator_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_lakeload-operator"))
}

/// The worker binary, built beside the operator by `cargo test --workspace`.
fn worker_bin() -> PathBuf {
    let path = operator_bin().parent().unwrap().join("lakeload");
    assert!(
        path.exists(),
        "{} is missing: build the workspace (cargo test --release --workspace)",
        path.display()
    );
    path
}

async fn admin() -> Client {
    client_for(
        &tokio::task::spawn_blocking(|| ControlPlane::shared().admin_kubeconfig.clone())
            .await
            .unwrap(),
    )
    .await
}

/// Installs the checked-in CRDs (EtlRun, EtlRunResult) once per test process.
async fn install_crd(client: &Client) {
    static DONE: OnceCell<()> = OnceCell::const_new();
    DONE.get_or_init(|| async {
        let text = std::fs::read_to_string(workspace().join("crds/etlrun.yaml")).unwrap();
        let api: Api<CustomResourceDefinition> = Api::all(client.clone());
        for doc in serde_yaml::Deserializer::from_str(&text) {
            let crd = CustomResourceDefinition::deserialize(doc).unwrap();
            match api.create(&PostParams::default(), &crd).await {
                Ok(_) => {}
                Err(kube::Error::Api(e)) if e.code == 409 => {}
                Err(e) => panic!("install CRD: {e}"),
            }
            let name = crd.metadata.name.clone().unwrap();
            wait_for("CRD established", Duration::from_secs(30), || async {
                api.get(&name)
                    .await
                    .ok()
                    .and_then(|c| c.status?.conditions)
                    .is_some_and(|c| c.iter().any(|c| c.type_ == "Established" && c.status == "True"))
            })
            .await;
        }
    })
    .await;
}

/// An admin client, the CRD installed, and a new namespace `<name>-<pid>` (never deleted: with
/// no controller-manager a namespace would stay Terminating).
async fn fresh_namespace(name: &str) -> (Client, String) {
    let admin = admin().await;
    install_crd(&admin).await;
    let ns = format!("{name}-{}", std::process::id());
    let namespace: Namespace = serde_json::from_value(json!({"metadata": {"name": ns}})).unwrap();
    Api::<Namespace>::all(admin.clone())
        .create(&PostParams::default(), &namespace)
        .await
        .unwrap();
    (admin, ns)
}

/// The objects of `deploy/operator.yaml` of one kind, moved into `namespace`.
fn deploy_objects<K: serde::de::DeserializeOwned + kube::Resource>(kind: &str, namespace: &str) -> Vec<K> {
    let text = std::fs::read_to_string(workspace().join("deploy/operator.yaml")).unwrap();
    serde_yaml::Deserializer::from_str(&text)
        .filter_map(|doc| {
            let value = serde_yaml::Value::deserialize(doc).ok()?;
            (value.get("kind")?.as_str()? == kind).then_some(value)
        })
        .map(|mut value| {
            value["metadata"]["namespace"] = namespace.into();
            if let Some(subjects) = value.get_mut("subjects").and_then(|s| s.as_sequence_mut()) {
                for s in subjects {
                    s["namespace"] = namespace.into();
                }
            }
            serde_yaml::from_value(value).unwrap()
        })
        .collect()
}

use serde::Deserialize;

/// A token of service account `sa` of `namespace`, as the kubelet mounts one into a pod.
async fn token_of(admin: &Client, namespace: &str, sa: &str) -> String {
    let request = TokenRequest {
        spec: TokenRequestSpec {
            audiences: vec![],
            expiration_seconds: Some(3600),
            ..Default::default()
        },
        ..Default::default()
    };
    let api: Api<ServiceAccount> = Api::namespaced(admin.clone(), namespace);
    let response: TokenRequest = api
        .create_subresource("token", sa, &PostParams::default(), &request)
        .await
        .unwrap_or_else(|e| panic!("token of {namespace}/{sa}: {e}"));
    response.status.unwrap().token
}

/// One test's namespace, service accounts, S3 buckets and operator process.
struct Env {
    admin: Client,
    ns: String,
    operator_kubeconfig: PathBuf,
    scheduler_kubeconfig: PathBuf,
    metrics_port: u16,
    operator: Option<Child>,
    s3: &'static S3Server,
    source_bucket: String,
    keep_last: usize,
}

impl Env {
    async fn new(name: &str, keep_last: usize) -> Env {
        let (admin, ns) = fresh_namespace(name).await;
        for sa in deploy_objects::<ServiceAccount>("ServiceAccount", &ns) {
            Api::<ServiceAccount>::namespaced(admin.clone(), &ns)
                .create(&PostParams::default(), &sa)
                .await
                .unwrap();
        }
        for role in deploy_objects::<Role>("Role", &ns) {
            Api::<Role>::namespaced(admin.clone(), &ns)
                .create(&PostParams::default(), &role)
                .await
                .unwrap();
        }
        for binding in deploy_objects::<RoleBinding>("RoleBinding", &ns) {
            Api::<RoleBinding>::namespaced(admin.clone(), &ns)
                .create(&PostParams::default(), &binding)
                .await
                .unwrap();
        }
        // The cluster-wide part (reading its own CRDs), named for this namespace's operator.
        for mut role in deploy_objects::<ClusterRole>("ClusterRole", &ns) {
            role.metadata.name = Some(format!("{ns}-{}", role.name_any()));
            role.metadata.namespace = None;
            Api::<ClusterRole>::all(admin.clone())
                .create(&PostParams::default(), &role)
                .await
                .unwrap();
        }
        for mut binding in deploy_objects::<ClusterRoleBinding>("ClusterRoleBinding", &ns) {
            binding.metadata.name = Some(format!("{ns}-{}", binding.name_any()));
            binding.metadata.namespace = None;
            binding.role_ref.name = format!("{ns}-{}", binding.role_ref.name);
            for subject in binding.subjects.iter_mut().flatten() {
                subject.namespace = Some(ns.clone());
            }
            Api::<ClusterRoleBinding>::all(admin.clone())
                .create(&PostParams::default(), &binding)
                .await
                .unwrap();
        }
        let plane = tokio::task::spawn_blocking(ControlPlane::shared).await.unwrap();
        let operator_kubeconfig = plane.kubeconfig_for(
            &format!("{ns}-operator"),
            &token_of(&admin, &ns, "lakeload-operator").await,
        );
        let scheduler_kubeconfig = plane.kubeconfig_for(
            &format!("{ns}-scheduler"),
            &token_of(&admin, &ns, "lakeload-scheduler").await,
        );

        let s3 = tokio::task::spawn_blocking(S3Server::shared).await.unwrap();
        let source_bucket = s3.bucket(name);
        let secret: Secret = serde_json::from_value(json!({
            "metadata": {"name": "aws"},
            "stringData": {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_REGION": "us-east-1"}
        }))
        .unwrap();
        Api::<Secret>::namespaced(admin.clone(), &ns)
            .create(&PostParams::default(), &secret)
            .await
            .unwrap();
        let mut env = Env {
            admin,
            ns,
            operator_kubeconfig,
            scheduler_kubeconfig,
            metrics_port: lakeload_testkit::free_port(),
            operator: None,
            s3,
            source_bucket,
            keep_last,
        };
        env.start_operator();
        env
    }

    fn start_operator(&mut self) {
        let log =
            std::fs::File::create(std::env::temp_dir().join(format!("lakeload-operator-{}.log", self.ns)))
                .unwrap();
        let child = Command::new(operator_bin())
            .args([
                "run",
                "--namespace",
                &self.ns,
                "--lease-seconds",
                "15",
                "--worker-image",
                "lakeload:test",
            ])
            .args(["--metrics-addr", &format!("127.0.0.1:{}", self.metrics_port)])
            .args(["--keep-last", &self.keep_last.to_string()])
            .args(["--worker-service-account", "lakeload-worker"])
            .args(["--allowed-secrets", "aws"])
            .env("KUBECONFIG", &self.operator_kubeconfig)
            .env("RUST_LOG", "info,lakeload_operator=debug")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.operator = Some(child);
    }

    fn stop_operator(&mut self) {
        if let Some(mut child) = self.operator.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn runs(&self) -> Api<EtlRun> {
        Api::namespaced(self.admin.clone(), &self.ns)
    }

    fn jobs(&self) -> Api<Job> {
        Api::namespaced(self.admin.clone(), &self.ns)
    }

    fn leases(&self) -> Api<Lease> {
        Api::namespaced(self.admin.clone(), &self.ns)
    }

    /// Source files: `files` gzip files under `prefix/` of the test's source bucket.
    fn add_source(&self, prefix: &str, lines: &[&str]) {
        let text: String = lines.iter().map(|l| format!("{l}\n")).collect();
        self.s3.put(
            &self.source_bucket,
            &format!("{prefix}/part-{}.gz", lines.len()),
            &lakeload_testkit::gzip(text.as_bytes()),
        );
    }

    fn etlrun(&self, name: &str, source_prefix: &str, table: &str) -> EtlRun {
        serde_json::from_value(json!({
            "apiVersion": "lakeload.io/v1alpha1",
            "kind": "EtlRun",
            "metadata": {"name": name, "namespace": self.ns},
            "spec": {
                "mode": "incremental",
                "source": {"url": format!("s3://{}/{source_prefix}", self.source_bucket)},
                "target": {"url": format!("s3://{}/tables/{table}", self.source_bucket)},
                "credentialsSecret": "aws",
                "settings": {"aws.endpoint_url": self.s3.endpoint, "run.max_reject_ratio": "0.5"},
                "backoffLimit": 0
            }
        }))
        .unwrap()
    }

    async fn create(&self, run: &EtlRun) {
        self.runs().create(&PostParams::default(), run).await.unwrap();
    }

    async fn run_of(&self, name: &str) -> EtlRun {
        self.runs().get(name).await.unwrap()
    }

    async fn wait_phase(&self, name: &str, phase: Phase) -> EtlRun {
        wait_for(
            &format!("{name} to reach {phase:?}"),
            Duration::from_secs(60),
            || async {
                self.runs()
                    .get_opt(name)
                    .await
                    .unwrap()
                    .and_then(|r| r.status?.phase)
                    == Some(phase)
            },
        )
        .await;
        self.run_of(name).await
    }

    async fn wait_job(&self, run: &str) -> Job {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let jobs = self
                .jobs()
                .list(&ListParams::default().labels(&format!("lakeload.io/run={run}")))
                .await
                .unwrap();
            if let Some(job) = jobs.items.into_iter().next() {
                return job;
            }
            assert!(Instant::now() < deadline, "timed out waiting for a Job for {run}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Plays the kubelet and the Job controller for one Job: creates its pod (labelled and
    /// owned as the Job controller does), runs the worker with the Job's args and env (Secret
    /// refs, the pod's uid and `$(VAR)` references resolved) and its service account's token
    /// (as the kubelet mounts it), and records the outcome in the pod's and the Job's status.
    async fn run_job(&self, job: &Job) -> i32 {
        let template = job.spec.as_ref().unwrap().template.clone();
        let pod = template.spec.as_ref().unwrap();
        let container = &pod.containers[0];
        let account = pod.service_account_name.as_deref().unwrap_or("default");
        let kubeconfig = if pod.automount_service_account_token == Some(false) {
            None
        } else {
            let token = token_of(&self.admin, &self.ns, account).await;
            let plane = tokio::task::spawn_blocking(ControlPlane::shared).await.unwrap();
            Some(plane.kubeconfig_in(&format!("{}-{account}", self.ns), &token, &self.ns))
        };
        let mut labels = template
            .metadata
            .as_ref()
            .and_then(|m| m.labels.clone())
            .unwrap_or_default();
        labels.insert("batch.kubernetes.io/job-name".into(), job.name_any());
        let pod_object: k8s_openapi::api::core::v1::Pod = serde_json::from_value(json!({
            "metadata": {
                "generateName": format!("{}-", job.name_any()),
                "labels": labels,
                "ownerReferences": [{"apiVersion": "batch/v1", "kind": "Job", "name": job.name_any(),
                                     "uid": job.uid().unwrap(), "controller": true}],
            },
            "spec": pod,
        }))
        .unwrap();
        let pods: Api<k8s_openapi::api::core::v1::Pod> = Api::namespaced(self.admin.clone(), &self.ns);
        let created = pods.create(&PostParams::default(), &pod_object).await.unwrap();
        let pod_uid = created.uid().unwrap();
        let mut env: BTreeMap<String, String> = BTreeMap::new();
        for var in container.env.clone().unwrap_or_default() {
            let value = match var.value_from {
                None => var.value.unwrap_or_default(),
                Some(from) => match (from.secret_key_ref, from.field_ref) {
                    (Some(key), _) => {
                        let secret = Api::<Secret>::namespaced(self.admin.clone(), &self.ns)
                            .get(&key.name)
                            .await
                            .unwrap();
                        match secret.data.unwrap_or_default().remove(&key.key) {
                            Some(v) => String::from_utf8(v.0).unwrap(),
                            None if key.optional == Some(true) => continue,
                            None => panic!("Secret {} has no key {}", key.name, key.key),
                        }
                    }
                    (None, Some(field)) if field.field_path == "metadata.uid" => pod_uid.clone(),
                    other => panic!("the stand-in kubelet cannot resolve {other:?}"),
                },
            };
            env.insert(var.name, value);
        }
        let args: Vec<String> = container
            .args
            .clone()
            .unwrap_or_default()
            .into_iter()
            .map(|arg| {
                env.iter()
                    .fold(arg, |arg, (k, v)| arg.replace(&format!("$({k})"), v))
            })
            .collect();
        let started = chrono::Utc::now();
        let output = tokio::process::Command::new(worker_bin())
            .args(&args)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .envs(kubeconfig.iter().map(|k| ("KUBECONFIG", k)))
            .envs(&env)
            .current_dir(std::env::temp_dir())
            .output()
            .await
            .unwrap();
        let code = output.status.code().unwrap_or(1);
        let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        let start = started.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        let pod_status = json!({"status": {
            "phase": if code == 0 { "Succeeded" } else { "Failed" },
            "containerStatuses": [{"name": "worker", "image": container.image, "imageID": "",
                "ready": false, "restartCount": 0,
                "state": {"terminated": {"exitCode": code, "startedAt": start, "finishedAt": now,
                    "message": String::from_utf8_lossy(&output.stderr).chars().rev().take(2000).collect::<String>().chars().rev().collect::<String>()}}}],
        }});
        pods.patch_status(
            &created.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&pod_status),
        )
        .await
        .unwrap_or_else(|e| panic!("patch Pod status: {e}"));
        let condition = |kind: &str, reason: &str| {
            json!({"type": kind, "status": "True", "reason": reason, "message": format!("worker exited {code}"),
                   "lastProbeTime": now, "lastTransitionTime": now})
        };
        let status = if code == 0 {
            json!({"startTime": start, "completionTime": now, "succeeded": 1, "active": 0, "ready": 0,
                   "conditions": [condition("SuccessCriteriaMet", "CompletionsReached"), condition("Complete", "CompletionsReached")]})
        } else {
            json!({"startTime": start, "failed": 1, "active": 0, "ready": 0,
                   "conditions": [condition("FailureTarget", "BackoffLimitExceeded"), condition("Failed", "BackoffLimitExceeded")]})
        };
        self.jobs()
            .patch_status(
                &job.name_any(),
                &PatchParams::default(),
                &Patch::Merge(&json!({"status": status})),
            )
            .await
            .unwrap_or_else(|e| panic!("patch Job status: {e}"));
        code
    }

    /// Whether the operator's service account may `verb` `resource` in the test's namespace
    /// (`kubectl auth can-i --as system:serviceaccount:<ns>:lakeload-operator`).
    async fn operator_may(&self, verb: &str, resource: &str) -> bool {
        use k8s_openapi::api::authorization::v1::{
            ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
        };
        let review = SubjectAccessReview {
            spec: SubjectAccessReviewSpec {
                user: Some(format!("system:serviceaccount:{}:lakeload-operator", self.ns)),
                groups: Some(vec![
                    "system:serviceaccounts".into(),
                    format!("system:serviceaccounts:{}", self.ns),
                ]),
                resource_attributes: Some(ResourceAttributes {
                    namespace: Some(self.ns.clone()),
                    verb: Some(verb.into()),
                    resource: Some(resource.into()),
                    ..Default::default()
                }),
                ..Default::default()
            },
            ..Default::default()
        };
        let answer = Api::<SubjectAccessReview>::all(self.admin.clone())
            .create(&PostParams::default(), &review)
            .await
            .unwrap();
        answer.status.unwrap().allowed
    }

    /// The summary the worker wrote beside the table (`_lakeload/runs/<run id>.json`).
    async fn summary(&self, table: &str, run_id: &str) -> serde_json::Value {
        let path = format!(
            "/{}/tables/{table}/_lakeload/runs/{run_id}.json",
            self.source_bucket
        );
        let (code, body) = self.s3.exchange("GET", &path, b"");
        assert_eq!(code, 200, "GET {path}: {body}");
        serde_json::from_str(&body).unwrap()
    }

    async fn events(&self, name: &str) -> Vec<String> {
        let events: Api<k8s_openapi::api::events::v1::Event> = Api::namespaced(self.admin.clone(), &self.ns);
        let mut reasons: Vec<String> = events
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .into_iter()
            .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name))
            .filter_map(|e| e.reason)
            .collect();
        reasons.sort();
        reasons
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        self.stop_operator();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_etlrun_runs_its_worker_under_a_lease_and_records_the_summary() {
    let env = Env::new("lifecycle", 5).await;
    env.add_source(
        "in",
        &[
            "a|x|||||2024-01-01|1",
            "b|y|||||2024-01-02|1",
            "a|z|||||2024-01-01|1",
            "bad|line",
        ],
    );
    env.create(&env.etlrun("first", "in", "events")).await;

    let job = env.wait_job("first").await;
    // While the Job lives, this run holds the table's Lease.
    let run = env.run_of("first").await;
    let status = run.status.clone().unwrap();
    assert_eq!(status.phase, Some(Phase::Running));
    let lease = env
        .leases()
        .get(status.lease_name.as_deref().unwrap())
        .await
        .unwrap();
    assert!(
        lease
            .spec
            .unwrap()
            .holder_identity
            .unwrap()
            .starts_with(&format!("{}/first#", env.ns))
    );
    // The Job: owned by the run, the worker's settings as env, the run id in its args.
    let owner = &job.metadata.owner_references.as_ref().unwrap()[0];
    assert_eq!(
        (owner.kind.as_str(), owner.name.as_str(), owner.controller),
        ("EtlRun", "first", Some(true))
    );
    let container = &job
        .spec
        .as_ref()
        .unwrap()
        .template
        .spec
        .as_ref()
        .unwrap()
        .containers[0];
    assert_eq!(container.image.as_deref(), Some("lakeload:test"));
    let env_vars: BTreeMap<String, String> = container
        .env
        .clone()
        .unwrap()
        .into_iter()
        .map(|v| (v.name, v.value.unwrap_or_default()))
        .collect();
    assert_eq!(
        env_vars["LAKELOAD_SOURCE_URL"],
        format!("s3://{}/in", env.source_bucket)
    );
    assert_eq!(env_vars["LAKELOAD_RUN_MODE"], "incremental");
    assert_eq!(env_vars["LAKELOAD_AWS_ENDPOINT_URL"], env.s3.endpoint);
    let run_id = status.run_id.clone().unwrap();
    assert_eq!(
        container.args.clone().unwrap(),
        [
            "run",
            "--mode",
            "incremental",
            "--json",
            "--run-id",
            run_id.as_str(),
            "--etlrun",
            "first",
            "--etlrun-uid",
            run.metadata.uid.as_deref().unwrap(),
            "--pod-uid=$(POD_UID)"
        ]
    );

    assert_eq!(env.run_job(&job).await, 0);
    let run = env.wait_phase("first", Phase::Succeeded).await;
    let status = run.status.unwrap();
    // The worker reported its summary as an EtlRunResult owned by the run; the operator copied
    // it from there (it has no S3 credentials and may read no Secret).
    let summary = env.summary("events", &run_id).await;
    let results: Api<EtlRunResult> = Api::namespaced(env.admin.clone(), &env.ns);
    let reported = results.list(&ListParams::default()).await.unwrap().items;
    assert_eq!(reported.len(), 1);
    let owner = &reported[0].metadata.owner_references.as_ref().unwrap()[0];
    assert_eq!(
        (owner.kind.as_str(), owner.uid.as_str()),
        ("EtlRun", run.metadata.uid.as_deref().unwrap())
    );
    assert_eq!(reported[0].spec.run_id, run_id);
    assert_eq!(status.rows_read, summary["rows_read"].as_u64());
    assert_eq!(
        status.summary_url.as_deref(),
        Some(
            format!(
                "s3://{}/tables/events/_lakeload/runs/{run_id}.json",
                env.source_bucket
            )
            .as_str()
        )
    );
    assert!(!env.operator_may("get", "secrets").await);
    assert!(!env.operator_may("list", "secrets").await);
    assert_eq!(status.rows_inserted, Some(2));
    assert_eq!(status.rows_superseded, Some(1));
    assert_eq!(status.rows_rejected, Some(1));
    assert_eq!(status.dates_written, ["2024-01-01", "2024-01-02"]);
    assert_eq!(status.manifest.len(), 1);
    assert_eq!(status.manifest[0].key, "part-4.gz");
    assert_eq!(status.manifest[0].rows, 3);
    assert_eq!(status.manifest_total, Some(1));
    assert!(status.state_url.unwrap().ends_with("/_lakeload/state.json"));
    assert!(
        status
            .conditions
            .iter()
            .any(|c| c.type_ == "Succeeded" && c.status == "True")
    );
    wait_for("the Lease to be released", Duration::from_secs(30), || async {
        env.leases()
            .get_opt(status.lease_name.as_deref().unwrap())
            .await
            .unwrap()
            .is_none()
    })
    .await;
    let events = env.events("first").await;
    assert!(
        events.contains(&"JobCreated".to_string()) && events.contains(&"Succeeded".to_string()),
        "{events:?}"
    );

    // Metrics and health endpoints.
    let metrics = http_get(env.metrics_port, "/metrics").await;
    assert!(
        metrics.contains("lakeload_operator_runs_total{phase=\"Succeeded\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("lakeload_operator_rows_total{kind=\"inserted\"} 2"),
        "{metrics}"
    );
    assert!(http_get(env.metrics_port, "/healthz").await.contains("ok"));
    assert!(http_get(env.metrics_port, "/readyz").await.contains("ready"));
}

async fn http_get(port: u16, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    stream
        .write_all(format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut out = String::new();
    stream.read_to_string(&mut out).await.unwrap();
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn a_second_run_for_the_same_table_waits_locked_by_until_the_first_ends() {
    let env = Env::new("two-runs", 5).await;
    env.add_source("in", &["a|x|||||2024-01-01|1"]);
    env.create(&env.etlrun("one", "in", "shared")).await;
    let job = env.wait_job("one").await;
    env.create(&env.etlrun("two", "in", "shared")).await;
    let waiting = env.wait_phase("two", Phase::Pending).await;
    let status = waiting.status.unwrap();
    assert_eq!(status.reason.as_deref(), Some("LockedBy"));
    assert!(status.message.unwrap().contains("/one#"), "names the holder");
    assert!(
        env.jobs()
            .list(&ListParams::default().labels("lakeload.io/run=two"))
            .await
            .unwrap()
            .items
            .is_empty()
    );
    assert!(env.events("two").await.contains(&"LockedBy".to_string()));

    assert_eq!(env.run_job(&job).await, 0);
    env.wait_phase("one", Phase::Succeeded).await;
    let job = env.wait_job("two").await;
    assert_eq!(env.run_job(&job).await, 0);
    env.wait_phase("two", Phase::Succeeded).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failing_worker_fails_the_run_with_a_reason() {
    let env = Env::new("failing", 5).await;
    env.add_source("in", &["only|bad|lines", "more|bad"]);
    env.create(&env.etlrun("broken", "in", "t")).await;
    let job = env.wait_job("broken").await;
    assert_eq!(env.run_job(&job).await, 65, "too many rejects");
    let run = env.wait_phase("broken", Phase::Failed).await;
    let status = run.status.unwrap();
    assert_eq!(status.reason.as_deref(), Some("JobFailed"));
    assert_eq!(status.exit_code, Some(65));
    assert!(status.message.unwrap().contains("max_reject_ratio"));
    assert_eq!(status.rows_rejected, Some(2));
    assert!(env.events("broken").await.contains(&"Failed".to_string()));
}

#[tokio::test(flavor = "multi_thread")]
async fn deleting_a_run_deletes_its_job_and_releases_the_lease() {
    let env = Env::new("deleting", 5).await;
    env.add_source("in", &["a|x|||||2024-01-01|1"]);
    env.create(&env.etlrun("doomed", "in", "t")).await;
    let job = env.wait_job("doomed").await;
    let lease_name = env.run_of("doomed").await.status.unwrap().lease_name.unwrap();
    assert!(env.leases().get_opt(&lease_name).await.unwrap().is_some());
    env.runs()
        .delete("doomed", &DeleteParams::default())
        .await
        .unwrap();
    wait_for("the run to be gone", Duration::from_secs(30), || async {
        env.runs().get_opt("doomed").await.unwrap().is_none()
    })
    .await;
    assert!(
        env.jobs().get_opt(&job.name_any()).await.unwrap().is_none(),
        "Job deleted"
    );
    assert!(
        env.leases().get_opt(&lease_name).await.unwrap().is_none(),
        "Lease released"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_operator_restart_adopts_the_running_job() {
    let mut env = Env::new("restart", 5).await;
    env.add_source("in", &["a|x|||||2024-01-01|1"]);
    env.create(&env.etlrun("survivor", "in", "t")).await;
    let job = env.wait_job("survivor").await;
    env.stop_operator();
    env.start_operator();
    // Give the new operator time to reconcile the running run.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let jobs = env.jobs().list(&ListParams::default()).await.unwrap().items;
    assert_eq!(jobs.len(), 1, "no second Job");
    assert_eq!(jobs[0].metadata.uid, job.metadata.uid);
    assert_eq!(env.run_job(&job).await, 0);
    env.wait_phase("survivor", Phase::Succeeded).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn scheduled_runs_are_created_from_a_template_and_finished_runs_expire() {
    let env = Env::new("schedule", 1).await;
    env.add_source("in", &["a|x|||||2024-01-01|1"]);
    let mut template = env.etlrun("nightly", "in", "t");
    template.metadata.name = None;
    template.metadata.generate_name = Some("nightly-".into());
    template.spec.ttl_seconds_after_finished = Some(1);
    let file = std::env::temp_dir().join(format!("{}-template.yaml", env.ns));
    std::fs::write(&file, serde_yaml::to_string(&template).unwrap()).unwrap();

    let mut names = Vec::new();
    for _ in 0..2 {
        // The CronJob's container, with the scheduler's least-privilege account.
        let out = Command::new(operator_bin())
            .args(["create-run", "--template"])
            .arg(&file)
            .args(["--namespace", &env.ns])
            .env("KUBECONFIG", &env.scheduler_kubeconfig)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let created = String::from_utf8_lossy(&out.stdout)
            .trim()
            .rsplit('/')
            .next()
            .unwrap()
            .to_string();
        let job = env.wait_job(&created).await;
        assert_eq!(env.run_job(&job).await, 0);
        env.wait_phase(&created, Phase::Succeeded).await;
        names.push(created);
        tokio::time::sleep(Duration::from_millis(1100)).await; // names carry the second
    }
    // ttlSecondsAfterFinished = 1 and --keep-last 1: the older run goes, the newer stays.
    wait_for(
        "the older run to be collected",
        Duration::from_secs(30),
        || async { env.runs().get_opt(&names[0]).await.unwrap().is_none() },
    )
    .await;
    assert!(env.runs().get_opt(&names[1]).await.unwrap().is_some());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_lease_whose_holder_stopped_renewing_is_taken_over() {
    let env = Env::new("takeover", 5).await;
    env.add_source("in", &["a|x|||||2024-01-01|1"]);
    let run = env.etlrun("heir", "in", "orphaned");
    // A Lease left by a holder that stopped renewing two minutes ago (15 s leases here).
    let stale = (chrono::Utc::now() - chrono::Duration::seconds(120))
        .to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    let lease: Lease = serde_json::from_value(json!({
        "metadata": {"name": lakeload_operator::job::lease_name(&run)},
        "spec": {"holderIdentity": format!("{}/ghost#dead", env.ns), "leaseDurationSeconds": 15,
                 "acquireTime": stale, "renewTime": stale}
    }))
    .unwrap();
    env.leases().create(&PostParams::default(), &lease).await.unwrap();
    // The holder's Job still runs (its operator failed over, its worker did not): the lapsed
    // Lease is not taken over, and the waiting run says why.
    let ghost_job = lakeload_operator::job::job_name_of("ghost", "dead");
    let job: Job = serde_json::from_value(json!({
        "metadata": {"name": ghost_job},
        "spec": {"template": {"spec": {"restartPolicy": "Never",
            "containers": [{"name": "worker", "image": "lakeload:test"}]}}}
    }))
    .unwrap();
    let jobs: Api<Job> = Api::namespaced(env.admin.clone(), &env.ns);
    jobs.create(&PostParams::default(), &job).await.unwrap();
    env.create(&run).await;
    wait_for(
        "the heir to wait for the running holder",
        Duration::from_secs(30),
        || async {
            env.runs()
                .get("heir")
                .await
                .unwrap()
                .status
                .and_then(|s| s.message)
                .is_some_and(|m| m.contains("still runs"))
        },
    )
    .await;
    assert!(
        jobs.get_opt(&lakeload_operator::job::job_name(
            &env.runs().get("heir").await.unwrap()
        ))
        .await
        .unwrap()
        .is_none()
    );
    // Its Job gone, the Lease is taken over.
    jobs.delete(&ghost_job, &DeleteParams::default()).await.unwrap();
    let job = env.wait_job("heir").await;
    let held = env
        .leases()
        .get(&lakeload_operator::job::lease_name(&run))
        .await
        .unwrap();
    assert!(held.spec.unwrap().holder_identity.unwrap().contains("/heir#"));
    assert!(env.events("heir").await.contains(&"LeaseTakenOver".to_string()));
    assert_eq!(env.run_job(&job).await, 0);
    env.wait_phase("heir", Phase::Succeeded).await;
}

/// Against CRDs of an older revision (the previous chart's) the operator does not start, and
/// says how to update them; `lakeload-operator crd --apply` (the chart's upgrade hook) does,
/// keeping the runs already stored, and the operator then starts.
#[tokio::test(flavor = "multi_thread")]
async fn the_operator_refuses_older_crds_until_they_are_applied() {
    let plane = tokio::task::spawn_blocking(ControlPlane::start).await.unwrap();
    let admin = client_for(&plane.admin_kubeconfig).await;
    let crds: Api<CustomResourceDefinition> = Api::all(admin.clone());
    // The CRDs as the previous chart (0.1.0) shipped them: no revision, no queueTimeoutSeconds.
    let previous = lakeload_testkit::previous_chart_file("crds/etlrun.yaml");
    for doc in serde_yaml::Deserializer::from_str(&previous) {
        let crd = CustomResourceDefinition::deserialize(doc).unwrap();
        crds.create(&PostParams::default(), &crd).await.unwrap();
    }
    wait_for("the CRDs established", Duration::from_secs(30), || async {
        crds.list(&ListParams::default())
            .await
            .unwrap()
            .items
            .iter()
            .all(|c| {
                c.status
                    .as_ref()
                    .and_then(|s| s.conditions.as_ref())
                    .is_some_and(|c| c.iter().any(|c| c.type_ == "Established" && c.status == "True"))
            })
    })
    .await;
    let kubeconfig = plane.admin_kubeconfig.clone();
    let start = move || {
        Command::new(operator_bin())
            .args(["run", "--namespace", "default", "--metrics-addr", "127.0.0.1:0"])
            .env("KUBECONFIG", &kubeconfig)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let first = start();
    let refused = tokio::time::timeout(
        Duration::from_secs(120),
        tokio::task::spawn_blocking(move || first.wait_with_output().unwrap()),
    )
    .await
    .expect("the operator exits when its CRDs are older than itself")
    .unwrap();
    let said = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success(), "{said}");
    assert!(
        said.contains("older than this operator")
            && said.contains("helm upgrade")
            && said.contains("kubectl apply"),
        "{said}"
    );
    // A run stored under the old schema loses the new field: what an operator would have faced.
    let runs: Api<EtlRun> = Api::namespaced(admin.clone(), "default");
    let run = |name: &str| -> EtlRun {
        serde_json::from_value(json!({
            "apiVersion": "lakeload.io/v1alpha1", "kind": "EtlRun",
            "metadata": {"name": name},
            "spec": {"source": {"url": "s3://in/x"}, "target": {"url": "s3://out/t", "format": "delta"},
                     "queueTimeoutSeconds": 120},
        }))
        .unwrap()
    };
    let old = runs.create(&PostParams::default(), &run("before")).await.unwrap();
    assert_eq!(old.spec.queue_timeout_seconds, None, "pruned by the old schema");

    let apply = Command::new(operator_bin())
        .args(["crd", "--apply"])
        .env("KUBECONFIG", &plane.admin_kubeconfig)
        .output()
        .unwrap();
    assert!(
        apply.status.success(),
        "{}",
        String::from_utf8_lossy(&apply.stderr)
    );
    let new = runs.create(&PostParams::default(), &run("after")).await.unwrap();
    assert_eq!(
        new.spec.queue_timeout_seconds,
        Some(120),
        "kept by the applied schema"
    );
    let kept = runs.get("before").await.unwrap();
    assert_eq!(
        kept.spec.target.format,
        Some(lakeload_operator::crd::TableFormat::Delta)
    );
    // Now it starts (and keeps running until stopped).
    let mut operator = start();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let running = operator.try_wait().unwrap().is_none();
    let _ = operator.kill();
    let out = operator.wait_with_output().unwrap();
    assert!(running, "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn the_checked_in_crd_is_current() {
    let checked_in = std::fs::read_to_string(workspace().join("crds/etlrun.yaml")).unwrap();
    assert!(
        checked_in == lakeload_operator::crd::crd_yaml(),
        "crds/etlrun.yaml is stale: regenerate it with `cargo run --release -p lakeload-operator -- crd > crds/etlrun.yaml`"
    );
    let chart = std::fs::read_to_string(workspace().join("charts/lakeload/crds/etlrun.yaml")).unwrap();
    assert!(
        chart == checked_in,
        "charts/lakeload/crds/etlrun.yaml must be a copy of crds/etlrun.yaml"
    );
}

fn helm_template(helm: &Path, namespace: &str, sets: &[&str]) -> Vec<serde_yaml::Value> {
    let mut cmd = Command::new(helm);
    cmd.args(["template", "lakeload"])
        .arg(workspace().join("charts/lakeload"))
        .args(["--namespace", namespace]);
    for set in sets {
        cmd.args(["--set", set]);
    }
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "helm template: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_yaml::Deserializer::from_str(&String::from_utf8(out.stdout).unwrap())
        .filter_map(|doc| serde_yaml::Value::deserialize(doc).ok())
        .filter(|v| !v.is_null())
        .collect()
}

fn of_kind<'a>(objects: &'a [serde_yaml::Value], kind: &str) -> Vec<&'a serde_yaml::Value> {
    objects
        .iter()
        .filter(|o| o["kind"].as_str() == Some(kind))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_helm_chart_lints_renders_and_applies_to_the_api_server() {
    let helm = tokio::task::spawn_blocking(lakeload_testkit::helm).await.unwrap();
    let lint = Command::new(&helm)
        .args(["lint", "--strict"])
        .arg(workspace().join("charts/lakeload"))
        .output()
        .unwrap();
    assert!(
        lint.status.success(),
        "helm lint: {}{}",
        String::from_utf8_lossy(&lint.stdout),
        String::from_utf8_lossy(&lint.stderr)
    );

    // The default render is what deploy/operator.yaml spells out by hand: the same operator
    // and worker rules.
    let rendered = helm_template(&helm, "lakeload", &[]);
    let text = std::fs::read_to_string(workspace().join("deploy/operator.yaml")).unwrap();
    let deploy: Vec<serde_yaml::Value> = serde_yaml::Deserializer::from_str(&text)
        .filter_map(|d| serde_yaml::Value::deserialize(d).ok())
        .collect();
    let named = |objects: &[serde_yaml::Value], kind: &str, name: &str| {
        of_kind(objects, kind)
            .into_iter()
            .find(|r| r["metadata"]["name"] == name)
            .cloned()
            .unwrap_or_else(|| panic!("no {kind} {name}"))
    };
    for role in ["lakeload-operator", "lakeload-operator-leases", "lakeload-worker"] {
        assert_eq!(
            named(&rendered, "Role", role)["rules"],
            named(&deploy, "Role", role)["rules"],
            "chart and deploy/ grant {role} the same rules"
        );
    }

    for (kind, name) in [
        ("ClusterRole", "lakeload-lakeload-operator-crds"),
        (
            "ValidatingAdmissionPolicy",
            "lakeload-lakeload-results-from-their-pod",
        ),
    ] {
        assert_eq!(
            named(&rendered, kind, name)["rules"],
            named(&deploy, kind, name)["rules"],
            "chart and deploy/ agree on {kind} {name}"
        );
        assert_eq!(
            named(&rendered, kind, name)["spec"],
            named(&deploy, kind, name)["spec"]
        );
    }

    // The operator may read no Secret, whatever it watches, and no Lease or ConfigMap outside
    // its namespace: Leases only through the namespaced Role, ConfigMaps only by the names
    // runs may mount; a worker may create its results and nothing else.
    let all_namespaces = helm_template(&helm, "lakeload", &["watchAllNamespaces=true"]);
    for (objects, kind) in [(&rendered, "Role"), (&all_namespaces, "ClusterRole")] {
        let operator = named(objects, kind, "lakeload-operator");
        let rules = operator["rules"].as_sequence().unwrap();
        assert!(
            rules.iter().all(|r| !r["resources"]
                .as_sequence()
                .unwrap()
                .iter()
                .any(|x| x == "secrets" || x == "leases" || x == "configmaps")),
            "{kind}: {rules:?}"
        );
        let leases = named(objects, "Role", "lakeload-operator-leases");
        assert_eq!(leases["metadata"]["namespace"], "lakeload");
        let worker = named(objects, kind, "lakeload-worker");
        assert_eq!(
            worker["rules"],
            serde_yaml::to_value(
                json!([{"apiGroups": ["lakeload.io"], "resources": ["etlrunresults"], "verbs": ["create"]}])
            )
            .unwrap()
        );
    }
    // ConfigMaps runs may mount are the only ones the operator may read.
    let maps = helm_template(
        &helm,
        "lakeload",
        &[
            "watchAllNamespaces=true",
            "operator.allowedConfigMaps={ca-bundle}",
        ],
    );
    let rules = named(&maps, "ClusterRole", "lakeload-operator")["rules"].clone();
    let config_maps: Vec<&serde_yaml::Value> = rules
        .as_sequence()
        .unwrap()
        .iter()
        .filter(|r| r["resources"][0] == "configmaps")
        .collect();
    assert_eq!(config_maps.len(), 1, "{rules:?}");
    assert_eq!(
        config_maps[0]["resourceNames"],
        serde_yaml::to_value(["ca-bundle"]).unwrap()
    );
    assert_eq!(config_maps[0]["verbs"], serde_yaml::to_value(["get"]).unwrap());

    // The worker account is created (annotated for IRSA when asked) and bound; other accounts
    // runs may name are not: the worker Role is the worker account's only.
    let irsa = helm_template(
        &helm,
        "lakeload",
        &[
            "workerServiceAccountAnnotations.eks\\.amazonaws\\.com/role-arn=arn:aws:iam::1:role/etl",
            "operator.allowedServiceAccounts={etl-reader,team-*}",
        ],
    );
    let account = named(&irsa, "ServiceAccount", "lakeload-worker");
    assert_eq!(
        account["metadata"]["annotations"]["eks.amazonaws.com/role-arn"],
        "arn:aws:iam::1:role/etl"
    );
    let binding = named(&irsa, "RoleBinding", "lakeload-worker");
    let subjects: Vec<&str> = binding["subjects"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(subjects, ["lakeload-worker"]);
    let env =
        named(&irsa, "Deployment", "lakeload-operator")["spec"]["template"]["spec"]["containers"][0]["env"]
            .clone();
    assert!(
        env.as_sequence()
            .unwrap()
            .iter()
            .any(|e| e["name"] == "LAKELOAD_OPERATOR_WORKER_SERVICE_ACCOUNT"
                && e["value"] == "lakeload-worker"),
        "{env:?}"
    );

    // One replica upgrades by Recreate (never two controllers at once); several roll, their
    // leader elected.
    for (sets, recreate) in [(&[][..], true), (&["operator.replicas=2"][..], false)] {
        let objects = helm_template(&helm, "lakeload", sets);
        let deployment = of_kind(&objects, "Deployment")[0];
        assert_eq!(
            deployment["spec"]["strategy"]["type"].as_str() == Some("Recreate"),
            recreate,
            "{sets:?}: {:?}",
            deployment["spec"]["strategy"]
        );
    }

    // Every object of the full render (scheduler, CronJob, all-namespaces RBAC) is accepted by
    // the real API server.
    let (admin, ns) = fresh_namespace("chart").await;
    let full = helm_template(
        &helm,
        &ns,
        &[
            "schedule.enabled=true",
            "watchAllNamespaces=true",
            "workerServiceAccount=etl",
            "networkPolicy.enabled=true",
            "networkPolicy.apiServer[0].cidr=10.0.0.10/32",
            "networkPolicy.apiServer[0].port=6443",
            "networkPolicy.s3[0].cidr=52.95.0.0/16",
            "networkPolicy.s3[0].port=443",
            "operator.allowedConfigMaps={ca-bundle}",
        ],
    );
    let kinds: Vec<&str> = full.iter().filter_map(|o| o["kind"].as_str()).collect();
    for kind in [
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "Role",
        "RoleBinding",
        "Deployment",
        "Service",
        "ConfigMap",
        "CronJob",
        "NetworkPolicy",
        "ValidatingAdmissionPolicy",
        "ValidatingAdmissionPolicyBinding",
        "Job",
    ] {
        assert!(kinds.contains(&kind), "the full render has a {kind}: {kinds:?}");
    }
    let discovery = kube::discovery::Discovery::new(admin.clone())
        .run()
        .await
        .unwrap();
    for object in &full {
        let object: kube::api::DynamicObject = serde_yaml::from_value(object.clone()).unwrap();
        let gvk = kube::api::GroupVersionKind::try_from(object.types.as_ref().unwrap()).unwrap();
        let (resource, caps) = discovery.resolve_gvk(&gvk).unwrap();
        let api: Api<kube::api::DynamicObject> = if caps.scope == kube::discovery::Scope::Namespaced {
            Api::namespaced_with(admin.clone(), &ns, &resource)
        } else {
            Api::all_with(admin.clone(), &resource)
        };
        let name = object.name_any();
        let mut params = PatchParams::apply("lakeload-tests").force();
        // Judged, not kept: the admission policy would refuse the results the other tests of
        // this API server write by hand (cluster.rs runs it for real).
        if gvk.kind.starts_with("ValidatingAdmissionPolicy") {
            params = params.dry_run();
        }
        api.patch(&name, &params, &Patch::Apply(&object))
            .await
            .unwrap_or_else(|e| panic!("the API server rejects {} {name}: {e}", gvk.kind));
    }
    // `helm install` as the README writes it, against the real API server.
    let kubeconfig = tokio::task::spawn_blocking(|| ControlPlane::shared().admin_kubeconfig.clone())
        .await
        .unwrap();
    let install_ns = format!("helm-{}", std::process::id());
    let install = Command::new(&helm)
        .args(["install", "lakeload"])
        .arg(workspace().join("charts/lakeload"))
        .args([
            "--namespace",
            &install_ns,
            "--create-namespace",
            "--set",
            "schedule.enabled=true",
            // Kept out of this API server, whose other tests write results by hand; the
            // cluster tests install it as the README does.
            "--set",
            "resultAdmissionPolicy.enabled=false",
        ])
        .env("KUBECONFIG", &kubeconfig)
        .output()
        .unwrap();
    assert!(
        install.status.success(),
        "helm install: {}",
        String::from_utf8_lossy(&install.stderr)
    );
    let deployments: Api<k8s_openapi::api::apps::v1::Deployment> =
        Api::namespaced(admin.clone(), &install_ns);
    assert!(deployments.get_opt("lakeload-operator").await.unwrap().is_some());
    let cronjobs: Api<k8s_openapi::api::batch::v1::CronJob> = Api::namespaced(admin.clone(), &install_ns);
    assert!(cronjobs.get_opt("lakeload-schedule").await.unwrap().is_some());

    // The scheduled template inside the ConfigMap is a valid EtlRun.
    let config_map = of_kind(&full, "ConfigMap")[0];
    let template: EtlRun = serde_yaml::from_str(config_map["data"]["etlrun.yaml"].as_str().unwrap()).unwrap();
    assert_eq!(template.spec.service_account_name.as_deref(), Some("etl"));
    assert_eq!(
        template.metadata.generate_name.as_deref(),
        Some("lakeload-scheduled-")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn one_operator_replica_leads_and_another_takes_over_when_it_stops() {
    use lakeload_operator::leader::Election;
    let (admin, ns) = fresh_namespace("leader").await;
    let election = |identity: &str| Election {
        namespace: ns.clone(),
        name: "lakeload-operator-leader".into(),
        identity: identity.into(),
        // Renewed every 3 s: a stall of the API server of several seconds on a loaded
        // machine must not end the leadership this test expects to last.
        lease_seconds: 9,
        seen: Default::default(),
    };
    let (a, b) = (election("replica-a"), election("replica-b"));
    a.acquire(&admin).await;
    let a_keeps = tokio::spawn({
        let (a, client) = (a.clone(), admin.clone());
        async move { a.keep(&client).await }
    });
    let b_waits = tokio::spawn({
        let (b, client) = (b.clone(), admin.clone());
        async move { b.acquire(&client).await }
    });
    // Twice the Lease: B must not lead while A renews.
    tokio::time::sleep(Duration::from_secs(18)).await;
    assert!(!b_waits.is_finished(), "two replicas led at once");
    assert!(!a_keeps.is_finished(), "the leader gave up while renewing fine");

    // A stops (its pod is killed): B leads once A's Lease has run out.
    a_keeps.abort();
    tokio::time::timeout(Duration::from_secs(40), b_waits)
        .await
        .expect("the standby replica took over")
        .unwrap();
    let holder = Api::<Lease>::namespaced(admin.clone(), &ns)
        .get("lakeload-operator-leader")
        .await
        .unwrap()
        .spec
        .unwrap()
        .holder_identity;
    assert_eq!(holder.as_deref(), Some("replica-b"));
    // A coming back finds it lost its leadership, and stops instead of reconciling beside B.
    tokio::time::timeout(Duration::from_secs(30), a.keep(&admin))
        .await
        .expect("the old leader notices");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_guarded_tables_lease_is_renewed_whatever_the_reconciles_do() {
    // The renewal timer alone (no reconcile runs here, as when reconciles sit in error
    // back-off) keeps a running Job's Lease from lapsing, and stops once the Lease is not the
    // run's any more.
    use lakeload_operator::decide::{Action, JobState, LeaseState, Observed, Policy, holder_identity};
    use lakeload_operator::job::{build_lease, lease_name};
    use lakeload_operator::renew::Renewals;
    let (admin, ns) = fresh_namespace("renewal").await;
    let mut run: EtlRun = serde_json::from_value(json!({
        "apiVersion": "lakeload.io/v1alpha1",
        "kind": "EtlRun",
        "metadata": {"name": "guarded", "namespace": ns, "uid": "0123456789"},
        "spec": {"source": {"url": "s3://in/x"}, "target": {"url": "s3://out/t"}},
    }))
    .unwrap();
    run.metadata.namespace = Some(ns.clone());
    let me = holder_identity(&run);
    let leases: Api<Lease> = Api::namespaced(admin.clone(), &ns);
    let started = chrono::Utc::now();
    leases
        .create(
            &PostParams::default(),
            &build_lease(&run, &ns, &me, 9, started, None),
        )
        .await
        .unwrap();
    let renewed = |lease: &Lease| {
        let t = lease.spec.as_ref().unwrap().renew_time.as_ref().unwrap();
        chrono::DateTime::from_timestamp_micros(t.0.as_microsecond()).unwrap()
    };
    // Renewed every 3 s, lapsing after 9: a stall of the API server of a few seconds on a
    // loaded machine is no lapse.
    let policy = Policy {
        lease_seconds: 9,
        ..Policy::default()
    };
    let observed = Observed {
        run: &run,
        job: Some(JobState::Active),
        pods: Vec::new(),
        lease: Some(LeaseState {
            holder: Some(me.clone()),
            renewed: Some(started),
            observed: started,
            duration_seconds: 9,
            resource_version: String::new(),
        }),
        summary: None,
        workload: None,
        among_kept: true,
        binary_config_maps: Vec::new(),
        holder_alive: false,
        now: started,
        policy: &policy,
    };
    let renewals = std::sync::Arc::new(Renewals::new(&ns));
    renewals.track(&run, &observed, &[]);
    let timer = tokio::spawn({
        let (renewals, client) = (renewals.clone(), admin.clone());
        async move { renewals.run(client, 9).await }
    });
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_secs(4)).await;
        let lease = leases.get(&lease_name(&run)).await.unwrap();
        assert!(
            chrono::Utc::now() - renewed(&lease) < chrono::Duration::seconds(9),
            "the Lease lapsed: renewed {}",
            renewed(&lease)
        );
    }
    // Released by the run: the timer lets go.
    renewals.track(
        &run,
        &observed,
        &[Action::ReleaseLease {
            resource_version: String::new(),
        }],
    );
    // A round already under way may still renew once; after it, no renewal for more than
    // two periods (a timer still renewing changes the time in every 7 s).
    let mut unchanged = false;
    for _ in 0..3 {
        let last = renewed(&leases.get(&lease_name(&run)).await.unwrap());
        tokio::time::sleep(Duration::from_secs(7)).await;
        if renewed(&leases.get(&lease_name(&run)).await.unwrap()) == last {
            unchanged = true;
            break;
        }
    }
    assert!(unchanged, "the released Lease is still renewed");
    timer.abort();
}

#[tokio::test(flavor = "multi_thread")]
async fn worker_and_operator_pods_are_admitted_in_a_namespace_enforcing_pod_security_restricted() {
    let (admin, ns) = fresh_namespace("restricted").await;
    let labels = json!({"metadata": {"labels": {"pod-security.kubernetes.io/enforce": "restricted"}}});
    Api::<Namespace>::all(admin.clone())
        .patch(&ns, &PatchParams::default(), &Patch::Merge(&labels))
        .await
        .unwrap();
    let run: EtlRun = serde_json::from_value(json!({
        "apiVersion": "lakeload.io/v1alpha1",
        "kind": "EtlRun",
        "metadata": {"name": "r", "namespace": ns, "uid": "0f0e0d0c-0000-4000-8000-000000000001"},
        "spec": {
            "source": {"url": "s3://in/x"},
            "target": {"url": "s3://out/t"},
            "credentialsSecret": "aws",
            "serviceAccountName": "etl-worker",
            "resources": {"limits": {"memory": "1Gi", "cpu": "1"}},
            "podTemplate": {
                "volumes": [{"name": "token", "projected": {"sources": [
                    {"serviceAccountToken": {"path": "token", "audience": "sts.amazonaws.com"}}]}}],
                "volumeMounts": [{"name": "token", "mountPath": "/var/run/secrets/web-identity"}],
            },
        },
    }))
    .unwrap();
    // The worker's account (IRSA-style: a projected web-identity token of its own).
    let account: ServiceAccount =
        serde_json::from_value(json!({"metadata": {"name": "etl-worker", "namespace": ns}})).unwrap();
    Api::<ServiceAccount>::namespaced(admin.clone(), &ns)
        .create(&PostParams::default(), &account)
        .await
        .unwrap();
    let job = lakeload_operator::job::build_job(&run, "localhost/lakeload:dev", false);
    let template = job.spec.unwrap().template;
    let pod = |host_network: bool| {
        let mut spec = template.spec.clone().unwrap();
        spec.host_network = Some(host_network);
        k8s_openapi::api::core::v1::Pod {
            metadata: kube::api::ObjectMeta {
                name: Some(format!("worker-{host_network}")),
                namespace: Some(ns.clone()),
                labels: template.metadata.as_ref().and_then(|m| m.labels.clone()),
                ..Default::default()
            },
            spec: Some(spec),
            status: None,
        }
    };
    let pods: Api<k8s_openapi::api::core::v1::Pod> = Api::namespaced(admin.clone(), &ns);
    let dry_run = PostParams {
        dry_run: true,
        ..PostParams::default()
    };
    // The API server's PodSecurity admission judges the pod the Job would create.
    pods.create(&dry_run, &pod(false))
        .await
        .expect("the worker pod meets Pod Security `restricted`");
    // The admission is really on: a pod on the host's network is refused.
    let refused = pods.create(&dry_run, &pod(true)).await.unwrap_err();
    assert!(refused.to_string().contains("restricted"), "{refused}");

    // The operator's own pods, as the chart renders them with two replicas, are admitted too.
    let helm = tokio::task::spawn_blocking(lakeload_testkit::helm).await.unwrap();
    let rendered = helm_template(&helm, &ns, &["operator.replicas=2"]);
    let deployment = of_kind(&rendered, "Deployment")[0];
    let mut operator_pod: serde_json::Value = serde_json::to_value(&deployment["spec"]["template"]).unwrap();
    operator_pod["metadata"]["name"] = json!("operator");
    operator_pod["metadata"]["namespace"] = json!(ns);
    let operator_pod: k8s_openapi::api::core::v1::Pod = serde_json::from_value(operator_pod).unwrap();
    let account: ServiceAccount =
        serde_json::from_value(json!({"metadata": {"name": "lakeload-operator", "namespace": ns}})).unwrap();
    Api::<ServiceAccount>::namespaced(admin.clone(), &ns)
        .create(&PostParams::default(), &account)
        .await
        .unwrap();
    pods.create(&dry_run, &operator_pod)
        .await
        .expect("the operator pod meets Pod Security `restricted`");
}

#[tokio::test(flavor = "multi_thread")]
async fn standbys_are_ready_and_a_stopped_leader_hands_over_at_once() {
    let mut env = Env::new("handover", 5).await;
    env.stop_operator();
    let replica = |name: &str, port: u16| {
        let child = Command::new(operator_bin())
            .args([
                "run",
                "--namespace",
                &env.ns,
                "--leader-elect",
                "--lease-seconds",
                "30",
            ])
            .args(["--worker-image", "lakeload:test"])
            .args(["--metrics-addr", &format!("127.0.0.1:{port}")])
            .env("KUBECONFIG", &env.operator_kubeconfig)
            .env("POD_NAME", name)
            .env("POD_NAMESPACE", &env.ns)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        Process(child)
    };
    let ports = [lakeload_testkit::free_port(), lakeload_testkit::free_port()];
    let mut replicas = [replica("replica-a", ports[0]), replica("replica-b", ports[1])];
    let leases: Api<Lease> = Api::namespaced(env.admin.clone(), &env.ns);
    let holder = || async {
        leases
            .get_opt("lakeload-operator-leader")
            .await
            .unwrap()
            .and_then(|l| l.spec?.holder_identity)
    };
    wait_for("a leader", Duration::from_secs(30), || async {
        holder().await.is_some()
    })
    .await;
    let leader = holder().await.unwrap();
    // A candidate is its pod's name and a suffix of the process's own.
    let (lead, standby) = if leader.starts_with("replica-a_") {
        (0, 1)
    } else {
        (1, 0)
    };
    // Both replicas are Ready (a rolling update can finish); the metric tells who leads.
    for (i, leads) in [(lead, 1), (standby, 0)] {
        wait_for(
            "the replica to serve /readyz",
            Duration::from_secs(30),
            || async {
                tokio::net::TcpStream::connect(("127.0.0.1", ports[i]))
                    .await
                    .is_ok()
            },
        )
        .await;
        assert!(
            http_get(ports[i], "/readyz").await.contains("200 OK"),
            "replica {i} is Ready"
        );
        let metrics = http_get(ports[i], "/metrics").await;
        assert!(
            metrics.contains(&format!("lakeload_operator_leader {leads}")),
            "replica {i}: {metrics}"
        );
    }
    // SIGTERM (a pod being stopped): the leader gives its Lease up, and the standby leads well
    // before the 30 s Lease would have run out.
    let stopped = Instant::now();
    let status = Command::new("kill")
        .args(["-TERM", &replicas[lead].0.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let standby_name = if standby == 0 { "replica-a" } else { "replica-b" };
    wait_for("the standby to lead", Duration::from_secs(20), || async {
        holder()
            .await
            .is_some_and(|h| h.starts_with(&format!("{standby_name}_")))
    })
    .await;
    // Without the release it could not lead before the Lease expired: at least 20 s after the
    // stop (renewals come every 10 s). With it, at the standby's next try (every 10 s).
    assert!(
        stopped.elapsed() < Duration::from_secs(15),
        "took {:?}",
        stopped.elapsed()
    );
    let exit = replicas[lead].exit_within(Duration::from_secs(30)).await;
    assert!(
        exit.is_some_and(|e| e.success()),
        "the stopped leader exits cleanly: {exit:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_queued_run_waits_suspended_until_admitted_and_an_eviction_is_no_failure() {
    // Kueue's contract, played against the real API server: a queued Job is created suspended
    // with the queue label; admission unsuspends it, eviction suspends it again.
    let env = Env::new("queued", 5).await;
    env.add_source("in", &["a|x|||||2024-01-01|1"]);
    let mut run = env.etlrun("queued", "in", "queued-table");
    run.spec.queue_name = Some("team-a".into());
    env.create(&run).await;
    let job = env.wait_job("queued").await;
    assert_eq!(job.spec.as_ref().unwrap().suspend, Some(true));
    assert_eq!(
        job.metadata.labels.as_ref().unwrap()["kueue.x-k8s.io/queue-name"],
        "team-a"
    );
    let reason = || async {
        env.runs()
            .get("queued")
            .await
            .unwrap()
            .status
            .and_then(|s| s.reason)
    };
    wait_for("the run to show Queued", Duration::from_secs(30), || async {
        reason().await.as_deref() == Some("Queued")
    })
    .await;
    let jobs: Api<Job> = Api::namespaced(env.admin.clone(), &env.ns);
    let suspend = |on: bool| json!({"spec": {"suspend": on}});
    let name = job.name_any();
    // Admitted, then evicted before its pod started: back to Queued, not Failed.
    jobs.patch(&name, &PatchParams::default(), &Patch::Merge(&suspend(false)))
        .await
        .unwrap();
    wait_for("the run to run", Duration::from_secs(30), || async {
        reason().await.as_deref() == Some("JobRunning")
    })
    .await;
    jobs.patch(&name, &PatchParams::default(), &Patch::Merge(&suspend(true)))
        .await
        .unwrap();
    wait_for(
        "the evicted run to be queued again",
        Duration::from_secs(30),
        || async { reason().await.as_deref() == Some("Queued") },
    )
    .await;
    // Admitted again: the worker runs and the run succeeds.
    let job = jobs
        .patch(&name, &PatchParams::default(), &Patch::Merge(&suspend(false)))
        .await
        .unwrap();
    assert_eq!(env.run_job(&job).await, 0);
    env.wait_phase("queued", Phase::Succeeded).await;
}
