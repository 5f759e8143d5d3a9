//! The operator as users deploy it, on a real single-node cluster (tests/cluster/up.sh): the
//! podman-built images imported into containerd, the operator installed by `helm install` and
//! running as a Deployment, worker Jobs run by the real Job controller and kubelet (pod retries,
//! podFailurePolicy, garbage collection), scheduled runs created by the real CronJob controller.
//! The chart runs with its defaults on a real pod network (bridge CNI, kube-proxy, a
//! NetworkPolicy enforcer): pods reach the API server through the `kubernetes` Service and
//! moto on the node's pod-network address.

mod common;
use common::{client_for, wait_for};

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Namespace, Pod, Secret};
use kube::api::{Api, DeleteParams, ListParams, LogParams, PostParams};
use kube::{Client, ResourceExt};
use lakeload_operator::crd::{EtlRun, Phase};
use lakeload_operator::job::{LABEL_TABLE, job_name, lease_name, table_id};
use lakeload_testkit::cluster::{Cluster, OPERATOR_IMAGE, WORKER_IMAGE};
use lakeload_testkit::{S3Server, gzip};
use serde_json::json;
use tokio::sync::OnceCell;

/// The worker's test hook (`LAKELOAD_TEST_PAUSE_AT`), passed as a run setting.
const PAUSE_SETTING: &str = "test.pause_at";
const PAUSE_MARKER: &str = "lakeload-test-paused-at";
/// The namespace of the helm release (and of its scheduled runs).
const RELEASE_NS: &str = "lakeload";

/// What the tests of this process share. Clients are not shared: each test has its own tokio
/// runtime, and a client dies with the runtime it was made in.
struct Shared {
    cluster: &'static Cluster,
    s3: &'static S3Server,
    /// Bucket of the chart's scheduled runs.
    cron_bucket: String,
    cron_lines: usize,
    upgrade: Upgrade,
}

/// What happened while the release was upgraded from the previous chart (see [`shared`]).
#[derive(Clone)]
struct Upgrade {
    /// What the operator said, and its exit code, while the previous chart's CRDs were installed.
    refusal: String,
    /// The run created before the upgrade (namespace, name, bucket, lines).
    before: (String, String, String, usize),
    /// `spec.queueTimeoutSeconds` of that run as stored under the previous CRDs.
    timeout_before: Option<i64>,
}

/// Uploads `files` source files of `n` lines each; returns the number of lines.
fn upload_sources(s3: &S3Server, bucket: &str, files: u64, n: usize) -> usize {
    for f in 0..files {
        s3.put(
            bucket,
            &format!("src/part-{f}.gz"),
            &gzip(lakeload_testkit::sample_lines(f + 1, n, 50, 4).as_bytes()),
        );
    }
    files as usize * n
}

fn s3_settings(s3: &S3Server) -> serde_json::Value {
    json!({
        "aws.endpoint_url": s3.endpoint,
        "aws.region": "us-east-1",
        "aws.force_path_style": "true",
    })
}

/// The Secret runs name (the chart allows `lakeload-aws` by default).
const CREDENTIALS: &str = "lakeload-aws";

async fn create_namespace(admin: &Client, name: &str) {
    let namespace: Namespace = serde_json::from_value(json!({"metadata": {"name": name}})).unwrap();
    match Api::<Namespace>::all(admin.clone())
        .create(&PostParams::default(), &namespace)
        .await
    {
        Ok(_) => {}
        Err(kube::Error::Api(e)) if e.code == 409 => {}
        Err(e) => panic!("create namespace {name}: {e}"),
    }
    // moto takes any key; the Secret is what a user would create for AWS.
    let secret: Secret = serde_json::from_value(json!({
        "metadata": {"name": CREDENTIALS},
        "stringData": {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}
    }))
    .unwrap();
    match Api::<Secret>::namespaced(admin.clone(), name)
        .create(&PostParams::default(), &secret)
        .await
    {
        Ok(_) => {}
        Err(kube::Error::Api(e)) if e.code == 409 => {}
        Err(e) => panic!("create Secret: {e}"),
    }
    if name != RELEASE_NS {
        bind_worker_account(admin, name).await;
    }
}

/// What the README asks of each namespace an all-namespaces operator runs EtlRuns in: the
/// worker account, bound to the chart's `lakeload-worker` ClusterRole (create EtlRunResults).
async fn bind_worker_account(admin: &Client, ns: &str) {
    use k8s_openapi::api::core::v1::ServiceAccount;
    use k8s_openapi::api::rbac::v1::RoleBinding;
    let account: ServiceAccount =
        serde_json::from_value(json!({"metadata": {"name": "lakeload-worker", "namespace": ns}})).unwrap();
    let binding: RoleBinding = serde_json::from_value(json!({
        "metadata": {"name": "lakeload-worker", "namespace": ns},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "lakeload-worker"},
        "subjects": [{"kind": "ServiceAccount", "name": "lakeload-worker", "namespace": ns}],
    }))
    .unwrap();
    for created in [
        Api::<ServiceAccount>::namespaced(admin.clone(), ns)
            .create(&PostParams::default(), &account)
            .await
            .map(|_| ()),
        Api::<RoleBinding>::namespaced(admin.clone(), ns)
            .create(&PostParams::default(), &binding)
            .await
            .map(|_| ()),
    ] {
        match created {
            Ok(()) => {}
            Err(kube::Error::Api(e)) if e.code == 409 => {}
            Err(e) => panic!("bind the worker account in {ns}: {e}"),
        }
    }
}

/// The variables the EKS pod identity webhook would inject for IRSA: the IRSA test's admin
/// allows them by name (the `AWS_*` family needs that).
const IRSA_ENV: [&str; 5] = [
    "AWS_ROLE_ARN",
    "AWS_WEB_IDENTITY_TOKEN_FILE",
    "AWS_REGION",
    "AWS_STS_REGIONAL_ENDPOINTS",
    "AWS_ENDPOINT_URL_STS",
];

/// One test's view: the shared set-up and a client of its own.
struct Setup {
    admin: Client,
    cluster: &'static Cluster,
    s3: &'static S3Server,
    cron_bucket: String,
    cron_lines: usize,
    upgrade: Upgrade,
    _operator: OperatorUse,
}

/// How a test uses the one operator release every test shares, held for the whole test: most
/// only need it to reconcile; a test that stops or upgrades it has it to itself, so no other
/// test waits on runs nobody reconciles meanwhile.
enum OperatorUse {
    Shared(#[allow(dead_code)] tokio::sync::RwLockReadGuard<'static, ()>),
    Exclusive(#[allow(dead_code)] tokio::sync::RwLockWriteGuard<'static, ()>),
}

static OPERATOR: tokio::sync::RwLock<()> = tokio::sync::RwLock::const_new(());

/// The cluster, the S3 server, and the operator installed with `helm install` of the previous
/// chart then `helm upgrade` to this one (once per test process), its CronJob scheduling a
/// run every minute.
async fn setup() -> Setup {
    let shared = shared().await;
    let operator = OperatorUse::Shared(OPERATOR.read().await);
    setup_with(shared, operator).await
}

/// [`setup`] for a test that stops, scales or upgrades the operator: it waits for the tests
/// running to end, and the others wait for it.
async fn setup_exclusive() -> Setup {
    let shared = shared().await;
    let operator = OperatorUse::Exclusive(OPERATOR.write().await);
    setup_with(shared, operator).await
}

async fn setup_with(shared: &'static Shared, operator: OperatorUse) -> Setup {
    Setup {
        admin: client_for(&shared.cluster.kubeconfig).await,
        cluster: shared.cluster,
        s3: shared.s3,
        cron_bucket: shared.cron_bucket.clone(),
        cron_lines: shared.cron_lines,
        upgrade: shared.upgrade.clone(),
        _operator: operator,
    }
}

/// The S3 server the pods reach: moto on the node's pod-network address.
fn pods_s3(cluster: &Cluster) -> &'static S3Server {
    static S3: std::sync::OnceLock<S3Server> = std::sync::OnceLock::new();
    S3.get_or_init(|| S3Server::listening_on(&cluster.host_ip))
}

/// `helm install` (or `upgrade`) of `chart` as release `lakeload` with `values`; `wait` for
/// its pods to be ready.
fn helm(
    cluster: &Cluster,
    verb: &str,
    chart: &std::path::Path,
    values: &std::path::Path,
    wait: bool,
) -> std::process::Output {
    let mut command = Command::new(lakeload_testkit::helm());
    command
        .args([verb, "lakeload"])
        .arg(chart)
        .args(["--namespace", RELEASE_NS, "--values"])
        .arg(values)
        .env("KUBECONFIG", &cluster.kubeconfig);
    if wait {
        command.args(["--wait", "--timeout", "240s"]);
    }
    command.output().unwrap()
}

async fn shared() -> &'static Shared {
    static SHARED: OnceCell<Shared> = OnceCell::const_new();
    SHARED
        .get_or_init(|| async {
            let cluster = tokio::task::spawn_blocking(Cluster::shared).await.unwrap();
            let s3 = tokio::task::spawn_blocking(|| pods_s3(Cluster::shared()))
                .await
                .unwrap();
            let admin = client_for(&cluster.kubeconfig).await;
            let cron_bucket = s3.bucket("cron");
            let cron_lines = upload_sources(s3, &cron_bucket, 2, 200);
            create_namespace(&admin, RELEASE_NS).await;

            let (repository, tag) = OPERATOR_IMAGE.rsplit_once(':').unwrap();
            let (worker_repository, worker_tag) = WORKER_IMAGE.rsplit_once(':').unwrap();
            // The chart's defaults (the pod network, the kubernetes Service, no host network)
            // but for the images, which are local, and test-sized timings.
            let values = json!({
                "image": {
                    "operator": {"repository": repository, "tag": tag},
                    "worker": {"repository": worker_repository, "tag": worker_tag},
                    "pullPolicy": "Never",
                },
                "watchAllNamespaces": true,
                "operator": {
                    // Two replicas, a leader elected: every test here runs through leader
                    // changes (the failover test kills one, a helm upgrade rolls both).
                    "replicas": 2,
                    "leaseSeconds": 15,
                    "startTimeoutSeconds": 20,
                    "lockRetrySeconds": 5,
                    "logFormat": "text",
                    "allowedImages": ["localhost/*"],
                    // An account no namespace binds to the worker Role (a run naming it
                    // cannot report its result).
                    "allowedServiceAccounts": ["unbound"],
                    // A Secret that does not exist (a run mounting it cannot start).
                    "allowedSecrets": [CREDENTIALS, "missing-creds"],
                    // A ConfigMap with binaryData (refused all the same).
                    "allowedConfigMaps": ["tools"],
                    "allowedEnv": IRSA_ENV,
                    "extraEnv": [{"name": "RUST_LOG", "value": "info,lakeload_operator=debug"}],
                },
                "schedule": {
                    "enabled": true,
                    "cron": "* * * * *",
                    "template": {
                        "mode": "incremental",
                        "source": {"url": format!("s3://{cron_bucket}/src")},
                        "target": {"url": format!("s3://{cron_bucket}/table")},
                        "credentialsSecret": CREDENTIALS,
                        "settings": s3_settings(s3),
                        "ttlSecondsAfterFinished": 3600,
                    },
                },
            });
            let values_file = cluster.dir.join("values.json");
            std::fs::write(&values_file, values.to_string()).unwrap();

            // The release as the previous chart installed it: its CRDs lack this version's
            // fields and revision. This operator does not start against them.
            let previous = lakeload_testkit::previous_chart();
            let install =
                tokio::task::block_in_place(|| helm(cluster, "install", &previous, &values_file, false));
            assert!(
                install.status.success(),
                "helm install (previous chart): {}{}",
                String::from_utf8_lossy(&install.stdout),
                String::from_utf8_lossy(&install.stderr)
            );
            let refusal = operator_refusal(cluster).await;
            let upgrade_ns = format!("upgrade-{}", std::process::id());
            create_namespace(&admin, &upgrade_ns).await;
            let bucket = s3.bucket("upgrade");
            let lines = upload_sources(s3, &bucket, 2, 100);
            let before: EtlRun = serde_json::from_value(json!({
                "apiVersion": "lakeload.io/v1alpha1",
                "kind": "EtlRun",
                "metadata": {"name": "before-upgrade", "namespace": upgrade_ns},
                "spec": {
                    "source": {"url": format!("s3://{bucket}/src")},
                    "target": {"url": format!("s3://{bucket}/table"), "format": "delta"},
                    "credentialsSecret": CREDENTIALS,
                    "settings": s3_settings(s3),
                    "queueTimeoutSeconds": 600,
                },
            }))
            .unwrap();
            let stored = Api::<EtlRun>::namespaced(admin.clone(), &upgrade_ns)
                .create(&PostParams::default(), &before)
                .await
                .unwrap();

            let chart = lakeload_testkit::workspace().join("charts/lakeload");
            let upgrade =
                tokio::task::block_in_place(|| helm(cluster, "upgrade", &chart, &values_file, true));
            assert!(
                upgrade.status.success(),
                "helm upgrade (this chart): {}{}\n{}",
                String::from_utf8_lossy(&upgrade.stdout),
                String::from_utf8_lossy(&upgrade.stderr),
                operator_logs(cluster)
            );
            wait_operator_rolled_out(&admin).await;
            Shared {
                cluster,
                s3,
                cron_bucket,
                cron_lines,
                upgrade: Upgrade {
                    refusal,
                    before: (upgrade_ns, "before-upgrade".into(), bucket, lines),
                    timeout_before: stored.spec.queue_timeout_seconds,
                },
            }
        })
        .await
}

/// What an operator container that exited said (it refuses older CRDs): its exit code and
/// log, read once one has terminated.
async fn operator_refusal(cluster: &Cluster) -> String {
    let admin = client_for(&cluster.kubeconfig).await;
    let pods: Api<Pod> = Api::namespaced(admin, RELEASE_NS);
    let selector =
        ListParams::default().labels("app.kubernetes.io/name=lakeload,app.kubernetes.io/instance=lakeload");
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        for pod in pods.list(&selector).await.unwrap().items {
            let statuses = pod
                .status
                .clone()
                .and_then(|s| s.container_statuses)
                .unwrap_or_default();
            for status in statuses.iter().filter(|c| c.name == "operator") {
                let (ended, previous) = match (&status.state, &status.last_state) {
                    (Some(state), _) if state.terminated.is_some() => (state.terminated.clone(), false),
                    (_, Some(last)) if last.terminated.is_some() => (last.terminated.clone(), true),
                    _ => (None, false),
                };
                if let Some(ended) = ended {
                    let params = LogParams {
                        previous,
                        container: Some("operator".into()),
                        ..LogParams::default()
                    };
                    // The container may have been started again between the list and the
                    // log's read (a new, still silent log): then its termination message
                    // says the same, if it holds the log's end; else look again.
                    let log = pods.logs(&pod.name_any(), &params).await.unwrap_or_default();
                    let said = match log.trim().is_empty() {
                        true => ended.message.clone().unwrap_or_default(),
                        false => log,
                    };
                    if !said.trim().is_empty() {
                        return format!("exit {}: {said}", ended.exit_code);
                    }
                }
            }
        }
        assert!(
            Instant::now() < deadline,
            "no operator container of the previous chart's release ended\n{}",
            operator_logs(cluster)
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// The operator's container log, for failure messages.
fn operator_logs(cluster: &Cluster) -> String {
    let mut text = String::new();
    let logs = cluster.dir.join("pod-logs");
    if !logs.is_dir() {
        return text;
    }
    for entry in lakeload_testkit::files_under(&logs) {
        if entry.to_string_lossy().contains("lakeload-operator") {
            let log = std::fs::read_to_string(&entry).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(40).collect();
            text += &format!("--- {}\n", entry.display());
            text += &tail.into_iter().rev().collect::<Vec<_>>().join("\n");
        }
    }
    text
}

/// A namespace of the test's own with the `aws` Secret, and a bucket with sources.
async fn fresh(name: &str, lines_per_file: usize) -> (Setup, String, String, usize) {
    fresh_with(setup().await, name, lines_per_file).await
}

async fn fresh_with(setup: Setup, name: &str, lines_per_file: usize) -> (Setup, String, String, usize) {
    let ns = format!("{name}-{}", std::process::id());
    create_namespace(&setup.admin, &ns).await;
    let bucket = setup.s3.bucket(name);
    let lines = upload_sources(setup.s3, &bucket, 3, lines_per_file);
    (setup, ns, bucket, lines)
}

async fn create_run(setup: &Setup, ns: &str, name: &str, bucket: &str, extra: serde_json::Value) -> EtlRun {
    let mut spec = json!({
        "mode": "full",
        "source": {"url": format!("s3://{bucket}/src")},
        "target": {"url": format!("s3://{bucket}/table")},
        "credentialsSecret": CREDENTIALS,
        "settings": s3_settings(setup.s3),
    });
    merge(&mut spec, extra);
    let run: EtlRun = serde_json::from_value(json!({
        "apiVersion": "lakeload.io/v1alpha1",
        "kind": "EtlRun",
        "metadata": {"name": name, "namespace": ns},
        "spec": spec,
    }))
    .unwrap();
    Api::<EtlRun>::namespaced(setup.admin.clone(), ns)
        .create(&PostParams::default(), &run)
        .await
        .unwrap()
}

fn merge(into: &mut serde_json::Value, from: serde_json::Value) {
    match (into, from) {
        (serde_json::Value::Object(a), serde_json::Value::Object(b)) => {
            for (k, v) in b {
                merge(a.entry(k).or_insert(serde_json::Value::Null), v);
            }
        }
        (slot, value) => *slot = value,
    }
}

/// Where the release's values live, for `helm upgrade --reuse-values`.
fn helm_upgrade(cluster: &Cluster, sets: &[&str]) -> std::process::Output {
    let helm = lakeload_testkit::helm();
    let mut command = Command::new(helm);
    command
        .args(["upgrade", "lakeload"])
        .arg(lakeload_testkit::workspace().join("charts/lakeload"))
        .args([
            "--namespace",
            RELEASE_NS,
            "--reuse-values",
            "--wait",
            "--timeout",
            "150s",
        ]);
    for set in sets {
        command.args(["--set", set]);
    }
    command.env("KUBECONFIG", &cluster.kubeconfig).output().unwrap()
}

/// SIGKILLs a container through containerd, as the OOM killer or a node fault would.
/// The id of the pod's first container, once the kubelet has reported it.
fn container_id(pod: &Pod) -> Option<String> {
    pod.status
        .as_ref()?
        .container_statuses
        .as_ref()?
        .first()?
        .container_id
        .clone()
}

fn kill_container(cluster: &Cluster, pod: &Pod) {
    let id = container_id(pod).expect("a running container");
    let kill = Command::new("ctr")
        .args(["--address"])
        .arg(cluster.dir.join("containerd/containerd.sock"))
        .args(["--namespace", "k8s.io", "tasks", "kill", "--signal", "SIGKILL"])
        .arg(id.trim_start_matches("containerd://"))
        .output()
        .unwrap();
    assert!(
        kill.status.success(),
        "ctr kill: {}",
        String::from_utf8_lossy(&kill.stderr)
    );
}

/// Waits until the run reaches a finished phase (or `until` says so); returns it.
async fn wait_run(
    setup: &Setup,
    ns: &str,
    name: &str,
    timeout: Duration,
    until: impl Fn(&EtlRun) -> bool,
) -> EtlRun {
    let runs: Api<EtlRun> = Api::namespaced(setup.admin.clone(), ns);
    let deadline = Instant::now() + timeout;
    loop {
        let run = runs.get(name).await.unwrap();
        if until(&run) {
            return run;
        }
        if Instant::now() > deadline {
            panic!(
                "run {ns}/{name} did not get there in {timeout:?}; status: {}\n{}\n{}",
                serde_json::to_string_pretty(&run.status).unwrap(),
                describe_pods(setup, ns).await,
                operator_logs(setup.cluster)
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

fn finished(run: &EtlRun) -> bool {
    run.status
        .as_ref()
        .and_then(|s| s.phase)
        .is_some_and(Phase::is_finished)
}

async fn describe_pods(setup: &Setup, ns: &str) -> String {
    let pods: Api<Pod> = Api::namespaced(setup.admin.clone(), ns);
    let mut text = String::new();
    for pod in pods
        .list(&ListParams::default())
        .await
        .map(|l| l.items)
        .unwrap_or_default()
    {
        text += &format!(
            "pod {}: {}\n",
            pod.name_any(),
            serde_json::to_string(&pod.status).unwrap_or_default()
        );
        if let Ok(log) = pods.logs(&pod.name_any(), &LogParams::default()).await {
            text += &format!(
                "  log: {}\n",
                log.lines().rev().take(10).collect::<Vec<_>>().join("\n  ")
            );
        }
    }
    text
}

async fn job_pods(setup: &Setup, ns: &str, run: &EtlRun) -> Vec<Pod> {
    let pods: Api<Pod> = Api::namespaced(setup.admin.clone(), ns);
    let mut list = pods
        .list(&ListParams::default().labels(&format!("batch.kubernetes.io/job-name={}", job_name(run))))
        .await
        .unwrap()
        .items;
    list.sort_by_key(|p| p.metadata.creation_timestamp.clone().map(|t| t.0));
    list
}

/// Creates a run whose worker pauses for `pause_ms` after reading its first file (the test
/// hook, as a setting: podTemplate may not set LAKELOAD_* variables) and waits until it has
/// paused; returns the run and its paused pod.
async fn create_paused_run(
    setup: &Setup,
    ns: &str,
    name: &str,
    bucket: &str,
    pause_ms: u64,
    mut extra: serde_json::Value,
) -> (EtlRun, Pod) {
    merge(
        &mut extra,
        json!({"settings": {PAUSE_SETTING: format!("after_read:1:sleep{pause_ms}")}}),
    );
    let run = create_run(setup, ns, name, bucket, extra).await;
    let pod = wait_paused(setup, ns, &run).await;
    (run, pod)
}

/// Waits until the run's first worker pod has paused at its test hook and its status names
/// its running container (the kubelet reports it a moment after the log shows the pause);
/// returns that pod.
async fn wait_paused(setup: &Setup, ns: &str, run: &EtlRun) -> Pod {
    let pods: Api<Pod> = Api::namespaced(setup.admin.clone(), ns);
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if let Some(pod) = job_pods(setup, ns, run).await.first()
            && container_id(pod).is_some()
            && pods
                .logs(&pod.name_any(), &LogParams::default())
                .await
                .is_ok_and(|l| l.contains(PAUSE_MARKER))
        {
            return pod.clone();
        }
        assert!(
            Instant::now() < deadline,
            "the worker never reached its pause\n{}",
            describe_pods(setup, ns).await
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// Waits until the table Lease of `run` (in the operator's namespace) is gone.
async fn wait_lease_released(setup: &Setup, run: &EtlRun, timeout: Duration) {
    let leases: Api<Lease> = Api::namespaced(setup.admin.clone(), RELEASE_NS);
    wait_for("the Lease to be released", timeout, || async {
        leases.get_opt(&lease_name(run)).await.unwrap().is_none()
    })
    .await;
}

/// How the worker container of `pod` terminated, as the kubelet reports it.
fn terminated(pod: &Pod) -> Option<&k8s_openapi::api::core::v1::ContainerStateTerminated> {
    pod.status
        .as_ref()?
        .container_statuses
        .as_ref()?
        .iter()
        .find(|c| c.name == "worker")?
        .state
        .as_ref()?
        .terminated
        .as_ref()
}

/// Why the worker container of `pod` terminated (`OOMKilled`, `Error`).
fn termination_reason(pod: &Pod) -> Option<String> {
    terminated(pod)?.reason.clone()
}

fn exit_code(pod: &Pod) -> Option<i32> {
    terminated(pod).map(|t| t.exit_code)
}

/// `lakeload ARGS` run on this host (the binary the image was built from) on the table at
/// `target` in the test S3, with `env` added (source, format): its stdout; it must succeed.
fn on_host(s3: &S3Server, target: &str, env: &[(&str, &str)], args: &[&str]) -> Vec<u8> {
    let worker = PathBuf::from(env!("CARGO_BIN_EXE_lakeload-operator"))
        .parent()
        .unwrap()
        .join("lakeload");
    let out = Command::new(worker)
        .args(args)
        .envs(s3.env())
        .env("LAKELOAD_SOURCE_URL", "s3://unused/x")
        .env("LAKELOAD_TARGET_URL", target)
        .env("LAKELOAD_AWS_FORCE_PATH_STYLE", "true")
        .envs(env.iter().copied())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    out.stdout
}

/// Rows per date of a table in `format`, from `lakeload status --json` run on this host.
fn rows_by_date(s3: &S3Server, table: &str, format: &str) -> BTreeMap<String, u64> {
    let out = on_host(
        s3,
        table,
        &[("LAKELOAD_TARGET_FORMAT", format)],
        &["status", "--json"],
    );
    let status: serde_json::Value = serde_json::from_slice(&out).unwrap();
    status["dates"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                d["date"].as_str().unwrap().to_string(),
                d["rows"].as_u64().unwrap(),
            )
        })
        .collect()
}

/// The same full load run on this host with the binary the image was built from.
fn reference_rows(s3: &S3Server, bucket: &str) -> BTreeMap<String, u64> {
    let reference = format!("s3://{bucket}/reference");
    let source = format!("s3://{bucket}/src");
    on_host(
        s3,
        &reference,
        &[("LAKELOAD_SOURCE_URL", &source)],
        &["run", "--mode", "full"],
    );
    rows_by_date(s3, &reference, "parquet")
}

#[tokio::test(flavor = "multi_thread")]
async fn an_etlrun_runs_the_worker_image_to_succeeded() {
    let (ref setup, ns, bucket, lines) = fresh("succeeds", 300).await;
    // A name far past the 63 characters of a label or Job name.
    let name = format!("nightly-load-of-the-events-table-{}", "x".repeat(200));
    let run = create_run(setup, &ns, &name, &bucket, json!({})).await;
    let done = wait_run(setup, &ns, &name, Duration::from_secs(180), finished).await;
    let status = done.status.clone().unwrap();
    assert_eq!(status.phase, Some(Phase::Succeeded), "{status:?}");
    assert_eq!(status.rows_read, Some(lines as u64));
    assert_eq!(status.manifest_total, Some(3));
    assert_eq!(
        rows_by_date(setup.s3, &format!("s3://{bucket}/table"), "parquet"),
        reference_rows(setup.s3, &bucket),
        "the table the pod wrote is the one a local run writes"
    );
    let pods = job_pods(setup, &ns, &run).await;
    assert_eq!(pods.len(), 1);
    assert_eq!(exit_code(&pods[0]), Some(0));
    // The table is free again.
    let leases: Api<Lease> = Api::namespaced(setup.admin.clone(), RELEASE_NS);
    assert!(leases.get_opt(&lease_name(&run)).await.unwrap().is_none());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_config_error_is_not_retried_and_a_killed_worker_is() {
    let (ref setup, ns, bucket, lines) = fresh("retries", 200).await;

    // Exit 2 (a configuration mistake) fails the Job at once: podFailurePolicy FailJob.
    let bad = create_run(
        setup,
        &ns,
        "bad",
        &bucket,
        json!({"settings": {"run.order": "sideways"}, "backoffLimit": 3}),
    )
    .await;
    let done = wait_run(setup, &ns, "bad", Duration::from_secs(180), finished).await;
    let status = done.status.unwrap();
    assert_eq!(status.phase, Some(Phase::Failed), "{status:?}");
    assert_eq!(status.exit_code, Some(2), "{status:?}");
    assert!(
        status
            .message
            .as_deref()
            .unwrap_or_default()
            .contains("run.order"),
        "{status:?}"
    );
    let pods = job_pods(setup, &ns, &bad).await;
    assert_eq!(pods.len(), 1, "a config error is not retried");

    // A worker SIGKILLed (as the OOM killer does) is retried, and the retry, under the same run
    // id, takes over the S3 lock its killed attempt held.
    let (run, first) = create_paused_run(
        setup,
        &ns,
        "killed",
        &bucket,
        10_000,
        json!({"mode": "incremental", "backoffLimit": 2}),
    )
    .await;
    let pods: Api<Pod> = Api::namespaced(setup.admin.clone(), &ns);
    let container = container_id(&first).unwrap();
    assert!(container.starts_with("containerd://"));
    kill_container(setup.cluster, &first);

    let done = wait_run(setup, &ns, "killed", Duration::from_secs(240), finished).await;
    let status = done.status.unwrap();
    assert_eq!(status.phase, Some(Phase::Succeeded), "{status:?}");
    assert_eq!(status.rows_read, Some(lines as u64));
    let attempts = job_pods(setup, &ns, &run).await;
    assert_eq!(attempts.len(), 2, "one retry");
    assert_eq!(exit_code(&attempts[0]), Some(137));
    assert_eq!(exit_code(&attempts[1]), Some(0));
    let retry_log = pods
        .logs(&attempts[1].name_any(), &LogParams::default())
        .await
        .unwrap();
    assert!(
        retry_log.contains("an earlier attempt of this run"),
        "{retry_log}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_image_that_does_not_exist_fails_the_run_with_the_reason() {
    let (ref setup, ns, bucket, _) = fresh("no-image", 10).await;
    let run = create_run(
        setup,
        &ns,
        "ghost",
        &bucket,
        json!({"image": "localhost/lakeload:does-not-exist"}),
    )
    .await;
    let done = wait_run(setup, &ns, "ghost", Duration::from_secs(180), finished).await;
    let status = done.status.unwrap();
    assert_eq!(status.phase, Some(Phase::Failed), "{status:?}");
    assert_eq!(status.reason.as_deref(), Some("PodNotStarted"), "{status:?}");
    let message = status.message.unwrap_or_default();
    assert!(
        message.contains("ErrImagePull") || message.contains("ImagePullBackOff"),
        "{message}"
    );
    // The pod is stopped and the table's Lease released (once the pod has ended; its object
    // may stay a moment longer, until the Job controller lets it go).
    wait_lease_released(setup, &run, Duration::from_secs(90)).await;
    wait_for(
        "the ghost's pod to be removed",
        Duration::from_secs(60),
        || async { job_pods(setup, &ns, &run).await.is_empty() },
    )
    .await;

    // An image outside the allow-list never gets a pod.
    create_run(
        setup,
        &ns,
        "evil",
        &bucket,
        json!({"image": "docker.io/someone/miner:latest"}),
    )
    .await;
    let done = wait_run(setup, &ns, "evil", Duration::from_secs(60), finished).await;
    assert_eq!(done.status.unwrap().reason.as_deref(), Some("ImageNotAllowed"));
}

#[tokio::test(flavor = "multi_thread")]
async fn deleting_a_run_collects_its_job_and_pods_and_frees_the_table() {
    let (ref setup, ns, bucket, _) = fresh("delete", 50).await;
    let (run, _) = create_paused_run(setup, &ns, "doomed", &bucket, 120_000, json!({})).await;
    let runs: Api<EtlRun> = Api::namespaced(setup.admin.clone(), &ns);
    runs.delete("doomed", &DeleteParams::default()).await.unwrap();
    let jobs: Api<Job> = Api::namespaced(setup.admin.clone(), &ns);
    let leases: Api<Lease> = Api::namespaced(setup.admin.clone(), RELEASE_NS);
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        // The Lease first: once it is gone, no pod of the run may be running any more (a
        // pod that has ended may linger until the garbage collector removes it).
        let lease = leases.get_opt(&lease_name(&run)).await.unwrap();
        let run_gone = runs.get_opt("doomed").await.unwrap().is_none();
        let job_gone = jobs.get_opt(&job_name(&run)).await.unwrap().is_none();
        let pods_left = job_pods(setup, &ns, &run).await;
        if run_gone && job_gone && pods_left.is_empty() && lease.is_none() {
            break;
        }
        let running: Vec<String> = pods_left
            .iter()
            .filter(|p| {
                let phase = p.status.as_ref().and_then(|s| s.phase.as_deref()).unwrap_or("");
                phase != "Succeeded" && phase != "Failed"
            })
            .map(|p| p.name_any())
            .collect();
        assert!(
            lease.is_some() || running.is_empty(),
            "the Lease was released while worker pods still ran: {running:?}"
        );
        assert!(
            Instant::now() < deadline,
            "run gone {run_gone}, job gone {job_gone}, pods {}, lease {}",
            pods_left.len(),
            lease.is_some()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_charts_cronjob_creates_runs_that_succeed() {
    let setup = &setup().await;
    let runs: Api<EtlRun> = Api::namespaced(setup.admin.clone(), RELEASE_NS);
    let deadline = Instant::now() + Duration::from_secs(200);
    let succeeded = loop {
        let list = runs.list(&ListParams::default()).await.unwrap().items;
        if let Some(run) = list.iter().find(|r| {
            r.name_any().starts_with("lakeload-scheduled-")
                && r.status.as_ref().and_then(|s| s.phase) == Some(Phase::Succeeded)
                && r.status.as_ref().and_then(|s| s.rows_read).unwrap_or(0) > 0
        }) {
            break run.clone();
        }
        assert!(
            Instant::now() < deadline,
            "no scheduled run succeeded: {:?}\n{}",
            list.iter()
                .map(|r| (r.name_any(), r.status.clone()))
                .collect::<Vec<_>>(),
            operator_logs(setup.cluster)
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    };
    assert_eq!(
        succeeded.status.unwrap().rows_read,
        Some(setup.cron_lines as u64),
        "the first scheduled run loads every file"
    );
    assert!(!rows_by_date(setup.s3, &format!("s3://{}/table", setup.cron_bucket), "parquet").is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_table_locked_from_outside_the_cluster_waits_pending_then_runs() {
    let (ref setup, ns, bucket, lines) = fresh("locked", 100).await;
    // A writer outside the cluster (a laptop) holds the table's S3 lock.
    setup.s3.put(
        &bucket,
        "table/_lakeload/lock",
        lakeload_testkit::foreign_lock("laptop-run").as_bytes(),
    );
    let run = create_run(setup, &ns, "patient", &bucket, json!({})).await;
    let waiting = wait_run(setup, &ns, "patient", Duration::from_secs(180), |r| {
        r.status.as_ref().and_then(|s| s.reason.as_deref()) == Some("LockedBy")
            && r.status.as_ref().and_then(|s| s.retry_after.as_ref()).is_some()
    })
    .await;
    let status = waiting.status.unwrap();
    assert_eq!(status.phase, Some(Phase::Pending), "{status:?}");
    assert!(
        status
            .message
            .as_deref()
            .unwrap_or_default()
            .contains("laptop-run"),
        "{status:?}"
    );

    // The laptop finishes: the next attempt runs.
    assert_eq!(
        setup
            .s3
            .request("DELETE", &format!("/{bucket}/table/_lakeload/lock"), b""),
        204
    );
    let done = wait_run(setup, &ns, "patient", Duration::from_secs(180), finished).await;
    let status = done.status.unwrap();
    assert_eq!(status.phase, Some(Phase::Succeeded), "{status:?}");
    assert_eq!(status.rows_read, Some(lines as u64));
    assert_eq!(
        job_pods(setup, &ns, &run).await.len(),
        1,
        "the locked-out Job was replaced"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn pod_templates_cannot_load_code_and_service_links_do_not_reach_the_worker() {
    let (ref setup, ns, bucket, lines) = fresh("locked-down", 50).await;
    // With service links, a Service named like this hands every pod of the namespace
    // LAKELOAD_AWS_SERVICE_HOST, which the worker would refuse as an unknown setting.
    let service: k8s_openapi::api::core::v1::Service = serde_json::from_value(json!({
        "metadata": {"name": "lakeload-aws", "namespace": ns},
        "spec": {"ports": [{"port": 443}]},
    }))
    .unwrap();
    Api::<k8s_openapi::api::core::v1::Service>::namespaced(setup.admin.clone(), &ns)
        .create(&PostParams::default(), &service)
        .await
        .unwrap();
    let tools: k8s_openapi::api::core::v1::ConfigMap = serde_json::from_value(json!({
        "metadata": {"name": "tools", "namespace": ns},
        "binaryData": {"preload.so": "f0VMRgIBAQ=="},
    }))
    .unwrap();
    Api::<k8s_openapi::api::core::v1::ConfigMap>::namespaced(setup.admin.clone(), &ns)
        .create(&PostParams::default(), &tools)
        .await
        .unwrap();

    let refusals = [
        (
            "preload",
            json!({"env": [{"name": "LD_PRELOAD", "value": "/tools/preload.so"}]}),
            "EnvNotAllowed",
        ),
        (
            "host-path",
            json!({"volumes": [{"name": "libs", "hostPath": {"path": "/usr/lib"}}]}),
            "VolumeNotAllowed",
        ),
        (
            "binary-map",
            json!({"volumes": [{"name": "tools", "configMap": {"name": "tools"}}]}),
            "VolumeNotAllowed",
        ),
    ];
    for (name, template, _) in &refusals {
        create_run(setup, &ns, name, &bucket, json!({"podTemplate": template})).await;
    }
    for (name, _, reason) in &refusals {
        let done = wait_run(setup, &ns, name, Duration::from_secs(60), finished).await;
        let status = done.status.clone().unwrap();
        assert_eq!(
            (status.phase, status.reason.as_deref()),
            (Some(Phase::Failed), Some(*reason)),
            "{name}"
        );
        let jobs: Api<Job> = Api::namespaced(setup.admin.clone(), &ns);
        assert!(
            jobs.get_opt(&job_name(&done)).await.unwrap().is_none(),
            "{name}: no Job was created"
        );
    }

    let run = create_run(setup, &ns, "plain", &bucket, json!({})).await;
    let done = wait_run(setup, &ns, "plain", Duration::from_secs(180), finished).await;
    let status = done.status.unwrap();
    assert_eq!(status.phase, Some(Phase::Succeeded), "{status:?}");
    assert_eq!(status.rows_read, Some(lines as u64));
    let pods = job_pods(setup, &ns, &run).await;
    assert_eq!(pods[0].spec.as_ref().unwrap().enable_service_links, Some(false));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_pod_that_cannot_mount_its_volume_fails_the_run_with_the_kubelets_message() {
    let (ref setup, ns, bucket, _) = fresh("no-mount", 10).await;
    let template = json!({
        "volumes": [{"name": "creds", "secret": {"secretName": "missing-creds"}}],
        "volumeMounts": [{"name": "creds", "mountPath": "/creds"}],
    });
    let run = create_run(setup, &ns, "no-mount", &bucket, json!({"podTemplate": template})).await;
    // The chart in these tests sets startTimeoutSeconds = 20.
    let done = wait_run(setup, &ns, "no-mount", Duration::from_secs(180), finished).await;
    let status = done.status.unwrap();
    assert_eq!(status.phase, Some(Phase::Failed), "{status:?}");
    assert_eq!(status.reason.as_deref(), Some("PodNotStarted"), "{status:?}");
    let message = status.message.unwrap_or_default();
    assert!(
        message.contains("ContainerCreating") && message.contains("missing-creds"),
        "the kubelet's reason is quoted: {message}"
    );
    wait_lease_released(setup, &run, Duration::from_secs(90)).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_run_whose_credentials_only_the_worker_has_succeeds_with_its_full_status() {
    let (ref setup, ns, bucket, lines) = fresh("irsa", 120).await;
    // IRSA as EKS's pod identity webhook sets it up: a projected service account token for
    // STS and the variables that point the AWS SDK at it. STS is moto's here. No Secret: the
    // worker's credentials come from AssumeRoleWithWebIdentity, which only its pod can call.
    let mut template = json!({"env": []});
    template["env"].as_array_mut().unwrap().extend([
        json!({"name": "AWS_ROLE_ARN", "value": "arn:aws:iam::111122223333:role/lakeload-etl"}),
        json!({"name": "AWS_WEB_IDENTITY_TOKEN_FILE", "value": "/var/run/secrets/eks.amazonaws.com/serviceaccount/token"}),
        json!({"name": "AWS_REGION", "value": "us-east-1"}),
        json!({"name": "AWS_STS_REGIONAL_ENDPOINTS", "value": "regional"}),
        json!({"name": "AWS_ENDPOINT_URL_STS", "value": setup.s3.endpoint}),
    ]);
    merge(
        &mut template,
        json!({
            "volumes": [{"name": "aws-iam-token", "projected": {"sources": [
                {"serviceAccountToken": {"audience": "sts.amazonaws.com", "expirationSeconds": 3600, "path": "token"}}]}}],
            "volumeMounts": [{"name": "aws-iam-token", "mountPath": "/var/run/secrets/eks.amazonaws.com/serviceaccount", "readOnly": true}],
        }),
    );
    let run = create_run(
        setup,
        &ns,
        "irsa",
        &bucket,
        json!({"credentialsSecret": null, "podTemplate": template}),
    )
    .await;
    assert_eq!(run.spec.credentials_secret, None);
    let done = wait_run(setup, &ns, "irsa", Duration::from_secs(180), finished).await;
    let status = done.status.clone().unwrap();
    assert_eq!(status.phase, Some(Phase::Succeeded), "{status:?}");
    // Every field of SPEC §8, from the worker's EtlRunResult.
    assert_eq!(status.rows_read, Some(lines as u64));
    let rows = |v: Option<u64>| v.unwrap_or_else(|| panic!("a count is missing: {status:?}"));
    assert_eq!(
        rows(status.rows_blank)
            + rows(status.rows_rejected)
            + rows(status.rows_inserted)
            + rows(status.rows_updated)
            + rows(status.rows_superseded),
        lines as u64
    );
    assert_eq!(status.manifest_total, Some(3));
    let mut keys: Vec<&str> = status.manifest.iter().map(|m| m.key.as_str()).collect();
    keys.sort();
    assert_eq!(keys, ["part-0.gz", "part-1.gz", "part-2.gz"]);
    assert!(!status.dates_written.is_empty());
    assert_eq!(
        status.state_url.as_deref(),
        Some(format!("s3://{bucket}/table/_lakeload/state.json").as_str())
    );
    assert_eq!(status.exit_code, Some(0));
    assert!(status.run_id.is_some() && status.started_at.is_some() && status.finished_at.is_some());
    assert_eq!(
        rows_by_date(setup.s3, &format!("s3://{bucket}/table"), "parquet"),
        reference_rows(setup.s3, &bucket)
    );
    let pod = &job_pods(setup, &ns, &run).await[0];
    assert_eq!(
        pod.spec.as_ref().unwrap().service_account_name.as_deref(),
        Some("lakeload-worker"),
        "the operator's default worker account"
    );

    // The operator's account may read no Secret, here or in its own namespace.
    let kubectl = tokio::task::spawn_blocking(lakeload_testkit::kubectl)
        .await
        .unwrap();
    for namespace in [ns.as_str(), RELEASE_NS] {
        for verb in ["get", "list"] {
            let out = Command::new(&kubectl)
                .args(["auth", "can-i", verb, "secrets", "--namespace", namespace, "--as"])
                .arg(format!("system:serviceaccount:{RELEASE_NS}:lakeload-operator"))
                .env("KUBECONFIG", &setup.cluster.kubeconfig)
                .output()
                .unwrap();
            assert_eq!(
                String::from_utf8_lossy(&out.stdout).trim(),
                "no",
                "kubectl auth can-i {verb} secrets -n {namespace}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_worker_that_may_not_report_fails_its_run_saying_which_permission_is_missing() {
    let (ref setup, ns, bucket, _) = fresh("unbound", 20).await;
    let account: k8s_openapi::api::core::v1::ServiceAccount =
        serde_json::from_value(json!({"metadata": {"name": "unbound", "namespace": ns}})).unwrap();
    Api::<k8s_openapi::api::core::v1::ServiceAccount>::namespaced(setup.admin.clone(), &ns)
        .create(&PostParams::default(), &account)
        .await
        .unwrap();
    create_run(
        setup,
        &ns,
        "mute",
        &bucket,
        json!({"serviceAccountName": "unbound"}),
    )
    .await;
    let done = wait_run(setup, &ns, "mute", Duration::from_secs(180), finished).await;
    let status = done.status.unwrap();
    assert_eq!(
        (status.phase, status.reason.as_deref()),
        (Some(Phase::Failed), Some("NoSummary")),
        "{status:?}"
    );
    let message = status.message.unwrap_or_default();
    assert!(
        message.contains("etlrunresults") && message.contains("forbidden"),
        "the worker's own words reach the status: {message}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_leader_killed_mid_run_never_lets_a_second_job_write_the_table() {
    let (ref setup, ns, bucket, lines) = fresh_with(setup_exclusive().await, "failover", 200).await;
    let table = table_id(&format!("s3://{bucket}/table"));
    // Every Job of the table not yet ended, sampled from before the first run starts to after
    // the last ends: never more than one.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sampler = {
        let jobs: Api<Job> = Api::namespaced(setup.admin.clone(), &ns);
        let selector = ListParams::default().labels(&format!("{LABEL_TABLE}={table}"));
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut most = 0;
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                let live = jobs
                    .list(&selector)
                    .await
                    .unwrap()
                    .items
                    .iter()
                    .filter(|j| {
                        !j.status
                            .as_ref()
                            .and_then(|s| s.conditions.as_ref())
                            .is_some_and(|c| {
                                c.iter().any(|c| {
                                    (c.type_ == "Complete" || c.type_ == "Failed") && c.status == "True"
                                })
                            })
                    })
                    .count();
                most = most.max(live);
                tokio::time::sleep(Duration::from_millis(150)).await;
            }
            most
        })
    };

    // The first run ("holder") holds the table, its worker paused long past the failover (the
    // leader's Lease and the table's are 15 s); the second ("eager") waits for it. A new
    // leader lists (and reconciles) "eager" first: it finds the table's Lease expired, nobody
    // having renewed it during the failover, while the holder's worker still runs.
    let (first, _) = create_paused_run(setup, &ns, "holder", &bucket, 90_000, json!({})).await;
    create_run(setup, &ns, "eager", &bucket, json!({"mode": "incremental"})).await;
    wait_run(setup, &ns, "eager", Duration::from_secs(60), |r| {
        r.status.as_ref().and_then(|s| s.reason.as_deref()) == Some("LockedBy")
    })
    .await;

    // SIGKILL the leader: it cannot release its Lease, nobody renews the table's. A standby
    // takes over about when the table's Lease lapses, so whether the new leader ever sees it
    // lapsed is a race; to see it every time, the outage is stretched past the table's Lease
    // (both replicas stopped, the holder's worker still running), then the operator returns.
    let leases: Api<Lease> = Api::namespaced(setup.admin.clone(), RELEASE_NS);
    let leader = leases
        .get("lakeload-operator-leader")
        .await
        .unwrap()
        .spec
        .and_then(|s| s.holder_identity)
        .expect("a leader");
    // The identity is `<pod>_<process suffix>`: a restarted container is a new candidate.
    let (leader_pod, _) = leader.split_once('_').expect("pod_suffix");
    let operators: Api<Pod> = Api::namespaced(setup.admin.clone(), RELEASE_NS);
    kill_container(setup.cluster, &operators.get(leader_pod).await.unwrap());
    let deployments: Api<Deployment> = Api::namespaced(setup.admin.clone(), RELEASE_NS);
    let scale = |replicas: i32| {
        let deployments = deployments.clone();
        async move {
            deployments
                .patch(
                    "lakeload-operator",
                    &kube::api::PatchParams::default(),
                    &kube::api::Patch::Merge(json!({"spec": {"replicas": replicas}})),
                )
                .await
                .unwrap();
        }
    };
    scale(0).await;
    let table_leases: Api<Lease> = Api::namespaced(setup.admin.clone(), RELEASE_NS);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let lease = table_leases.get(&lease_name(&first)).await.unwrap().spec.unwrap();
        let renewed = lease.renew_time.or(lease.acquire_time).unwrap().0;
        let lapsed_at = renewed
            .checked_add(k8s_openapi::jiff::SignedDuration::from_secs(
                i64::from(lease.lease_duration_seconds.unwrap()) + 1,
            ))
            .unwrap();
        let live_operators = operators
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .iter()
            .filter(|p| p.name_any().starts_with("lakeload-operator-"))
            .count();
        if live_operators == 0 && k8s_openapi::jiff::Timestamp::now() > lapsed_at {
            break;
        }
        assert!(Instant::now() < deadline, "the table's Lease did not lapse");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(
        !job_pods(setup, &ns, &first).await[0]
            .status
            .as_ref()
            .and_then(|s| s.phase.as_deref())
            .is_some_and(|p| p == "Succeeded" || p == "Failed"),
        "the holder's worker still runs while its Lease has lapsed"
    );
    scale(2).await;

    let first_done = wait_run(setup, &ns, "holder", Duration::from_secs(240), finished).await;
    let second_done = wait_run(setup, &ns, "eager", Duration::from_secs(240), finished).await;
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let most = sampler.await.unwrap();
    for done in [&first_done, &second_done] {
        let status = done.status.clone().unwrap();
        assert_eq!(
            status.phase,
            Some(Phase::Succeeded),
            "{}: {status:?}",
            done.name_any()
        );
    }
    assert_eq!(first_done.status.unwrap().rows_read, Some(lines as u64));
    assert_eq!(most, 1, "at most one live Job for the table at any sample");
    assert_eq!(
        rows_by_date(setup.s3, &format!("s3://{bucket}/table"), "parquet"),
        reference_rows(setup.s3, &bucket)
    );
    let new_leader = leases
        .get("lakeload-operator-leader")
        .await
        .unwrap()
        .spec
        .and_then(|s| s.holder_identity);
    assert!(new_leader.is_some_and(|l| l != leader), "leadership passed on");

    // A rolling upgrade of two replicas finishes (standbys are ready) and leaves one leader.
    let upgrade = helm_upgrade(setup.cluster, &["operator.logFormat=json"]);
    assert!(
        upgrade.status.success(),
        "helm upgrade --wait: {}{}\n{}",
        String::from_utf8_lossy(&upgrade.stdout),
        String::from_utf8_lossy(&upgrade.stderr),
        operator_logs(setup.cluster)
    );
    wait_operator_rolled_out(&setup.admin).await;
}

/// Waits until the operator's Deployment has its two replicas updated and ready, and no
/// other. `helm --wait` returns once the new ReplicaSet is ready, which the Deployment's status
/// may not show yet (an old pod still counted).
async fn wait_operator_rolled_out(admin: &Client) {
    let deployments: Api<Deployment> = Api::namespaced(admin.clone(), RELEASE_NS);
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let status = deployments
            .get("lakeload-operator")
            .await
            .unwrap()
            .status
            .unwrap_or_default();
        let counts = (status.replicas, status.updated_replicas, status.ready_replicas);
        if counts == (Some(2), Some(2), Some(2)) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "both operator replicas are ready, leader and standby, and no other: (replicas, updated, ready) = {counts:?}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// The real Kueue controller (tests/kueue/build.sh), started once per test process beside the
/// cluster as its own process with the admin's kubeconfig: its CRDs as published, plus what its
/// manifests would add (the namespace, the webhook certificate's Secret, the conversion and
/// admission webhook configurations its certificate manager fills in). No admission webhook
/// is registered: the operator creates queued Jobs suspended and labelled itself, which is all
/// Kueue's Job reconciler needs.
async fn kueue(setup: &Setup) {
    static STARTED: OnceCell<()> = OnceCell::const_new();
    STARTED
        .get_or_init(|| async {
            use k8s_openapi::api::admissionregistration::v1::{
                MutatingWebhookConfiguration, ValidatingWebhookConfiguration,
            };
            use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
            let out = tokio::task::spawn_blocking(|| lakeload_testkit::built_by("tests/kueue/build.sh"))
                .await
                .unwrap();
            let admin = &setup.admin;
            create_namespace(admin, "kueue-system").await;
            let secret: Secret =
                serde_json::from_value(json!({"metadata": {"name": "kueue-webhook-server-cert"}})).unwrap();
            let _ = Api::<Secret>::namespaced(admin.clone(), "kueue-system")
                .create(&PostParams::default(), &secret)
                .await;
            let named = |name: &str| json!({"metadata": {"name": name}});
            let _ = Api::<ValidatingWebhookConfiguration>::all(admin.clone())
                .create(
                    &PostParams::default(),
                    &serde_json::from_value(named("kueue-validating-webhook-configuration")).unwrap(),
                )
                .await;
            let _ = Api::<MutatingWebhookConfiguration>::all(admin.clone())
                .create(
                    &PostParams::default(),
                    &serde_json::from_value(named("kueue-mutating-webhook-configuration")).unwrap(),
                )
                .await;
            let crds: Api<CustomResourceDefinition> = Api::all(admin.clone());
            let converted = ["localqueues", "clusterqueues", "cohorts", "workloads", "multikueueclusters"];
            for entry in std::fs::read_dir(out.join("crds")).unwrap() {
                let text = std::fs::read_to_string(entry.unwrap().path()).unwrap();
                let mut crd: serde_json::Value = serde_yaml::from_str(&text).unwrap();
                let plural = crd["spec"]["names"]["plural"].as_str().unwrap().to_string();
                if converted.contains(&plural.as_str()) {
                    crd["spec"]["conversion"] = json!({"strategy": "Webhook", "webhook": {
                        "clientConfig": {"service": {"namespace": "kueue-system", "name": "kueue-webhook-service", "path": "/convert"}},
                        "conversionReviewVersions": ["v1"]}});
                }
                let crd: CustomResourceDefinition = serde_json::from_value(crd).unwrap();
                match crds.create(&PostParams::default(), &crd).await {
                    Ok(_) => {}
                    Err(kube::Error::Api(e)) if e.code == 409 => {}
                    Err(e) => panic!("install Kueue CRD {plural}: {e}"),
                }
            }
            let dir = setup.cluster.dir.join("kueue");
            std::fs::create_dir_all(&dir).unwrap();
            let health = lakeload_testkit::free_port();
            let config = format!(
                "apiVersion: config.kueue.x-k8s.io/v1beta2\nkind: Configuration\nnamespace: kueue-system\n\
                 health:\n  healthProbeBindAddress: 127.0.0.1:{health}\nmetrics:\n  bindAddress: \"0\"\n\
                 webhook:\n  host: 127.0.0.1\n  port: {}\n  certDir: {}\nleaderElection:\n  leaderElect: false\n\
                 internalCertManagement:\n  enable: true\n  webhookServiceName: kueue-webhook-service\n\
                 \x20 webhookSecretName: kueue-webhook-server-cert\nintegrations:\n  frameworks: [\"batch/job\"]\n",
                lakeload_testkit::free_port(),
                dir.join("certs").display()
            );
            std::fs::write(dir.join("config.yaml"), config).unwrap();
            let args = vec![
                "--config".to_string(),
                dir.join("config.yaml").display().to_string(),
                "--kubeconfig".to_string(),
                setup.cluster.kubeconfig.display().to_string(),
                "--visibility-server-port".to_string(),
                lakeload_testkit::free_port().to_string(),
            ];
            let log = dir.join("kueue.log");
            // Guarded: it ends with this test process.
            std::mem::forget(lakeload_testkit::start_guarded(&out.join("kueue"), &args, &log));
            // The kubelet's part for a pod: the certificate manager writes its Secret and waits
            // to see it mounted in certDir; here the test mounts it, for as long as it runs.
            let secrets: Api<Secret> = Api::namespaced(admin.clone(), "kueue-system");
            let certs = dir.join("certs");
            std::fs::create_dir_all(&certs).unwrap();
            let mount = move || {
                let secrets = secrets.clone();
                let certs = certs.clone();
                async move {
                    let data = secrets
                        .get("kueue-webhook-server-cert")
                        .await
                        .ok()
                        .and_then(|s| s.data)
                        .unwrap_or_default();
                    for (key, value) in data {
                        let path = certs.join(&key);
                        if std::fs::read(&path).ok().as_deref() != Some(&value.0[..]) {
                            std::fs::write(&path, &value.0).unwrap();
                        }
                    }
                }
            };
            tokio::spawn({
                let mount = mount.clone();
                async move {
                    loop {
                        mount().await;
                        tokio::time::sleep(Duration::from_millis(500)).await;
                    }
                }
            });
            let deadline = Instant::now() + Duration::from_secs(120);
            loop {
                let ready = tokio::net::TcpStream::connect(("127.0.0.1", health)).await.is_ok()
                    && http_ready(health).await;
                if ready {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "Kueue did not become ready:\n{}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        })
        .await;
}

/// Whether Kueue's health endpoint says ready.
async fn http_ready(port: u16) -> bool {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let Ok(mut stream) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await else {
        return false;
    };
    let _ = stream
        .write_all(b"GET /readyz HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        .await;
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer).await;
    answer.starts_with("HTTP/1.0 200") || answer.starts_with("HTTP/1.1 200")
}

#[tokio::test(flavor = "multi_thread")]
async fn kueue_admits_one_worker_at_a_time_within_its_quota() {
    let (ref setup, ns, bucket, lines) = fresh("kueue", 100).await;
    kueue(setup).await;
    // Quota for one worker (600m of CPU each, 1 CPU in the queue); two runs on two tables.
    let flavor = json!({"apiVersion": "kueue.x-k8s.io/v1beta2", "kind": "ResourceFlavor", "metadata": {"name": format!("{ns}-flavor")}});
    let queue = json!({"apiVersion": "kueue.x-k8s.io/v1beta2", "kind": "ClusterQueue",
        "metadata": {"name": format!("{ns}-cq")},
        "spec": {"namespaceSelector": {}, "resourceGroups": [{"coveredResources": ["cpu", "memory"],
            "flavors": [{"name": format!("{ns}-flavor"), "resources": [
                {"name": "cpu", "nominalQuota": "1"}, {"name": "memory", "nominalQuota": "2Gi"}]}]}]}});
    let local = json!({"apiVersion": "kueue.x-k8s.io/v1beta2", "kind": "LocalQueue",
        "metadata": {"name": "etl", "namespace": ns}, "spec": {"clusterQueue": format!("{ns}-cq")}});
    for object in [flavor, queue, local] {
        apply_dynamic(setup, object).await;
    }
    let queued = |extra: serde_json::Value| {
        let mut spec = json!({
            "queueName": "etl",
            "resources": {"requests": {"cpu": "600m", "memory": "256Mi"}, "limits": {"memory": "512Mi"}},
        });
        merge(&mut spec, extra);
        spec
    };
    // Paused long enough for the second run to be seen queued whatever the machine's load.
    let (first, _) = create_paused_run(setup, &ns, "first", &bucket, 40_000, queued(json!({}))).await;
    let second = create_run(
        setup,
        &ns,
        "second",
        &bucket,
        queued(json!({"target": {"url": format!("s3://{bucket}/table-two")}})),
    )
    .await;
    // Kueue holds the second Job (no quota left) while the first runs.
    let waiting = wait_run(setup, &ns, "second", Duration::from_secs(60), |r| {
        r.status.as_ref().and_then(|s| s.reason.as_deref()) == Some("Queued")
    })
    .await;
    assert_eq!(waiting.status.unwrap().phase, Some(Phase::Pending));
    let first_now = Api::<EtlRun>::namespaced(setup.admin.clone(), &ns)
        .get("first")
        .await
        .unwrap();
    assert_eq!(first_now.status.unwrap().phase, Some(Phase::Running));
    let jobs: Api<Job> = Api::namespaced(setup.admin.clone(), &ns);
    let second_job = jobs.get(&job_name(&second)).await.unwrap();
    assert_eq!(second_job.spec.unwrap().suspend, Some(true));
    assert!(job_pods(setup, &ns, &second).await.is_empty());

    // The first ends, its quota is freed, Kueue admits the second.
    for name in ["first", "second"] {
        let done = wait_run(setup, &ns, name, Duration::from_secs(180), finished).await;
        let status = done.status.unwrap();
        assert_eq!(status.phase, Some(Phase::Succeeded), "{name}: {status:?}");
        assert_eq!(status.rows_read, Some(lines as u64), "{name}");
    }
    let first_pod = &job_pods(setup, &ns, &first).await[0];
    let second_pod = &job_pods(setup, &ns, &second).await[0];
    let finished_at = first_pod
        .status
        .as_ref()
        .unwrap()
        .container_statuses
        .as_ref()
        .unwrap()[0]
        .state
        .as_ref()
        .unwrap()
        .terminated
        .as_ref()
        .unwrap()
        .finished_at
        .clone()
        .unwrap()
        .0;
    let second_created = second_pod.metadata.creation_timestamp.clone().unwrap().0;
    assert!(
        second_created >= finished_at,
        "the second worker started ({second_created}) only after the first ended ({finished_at})"
    );
    for table in ["table", "table-two"] {
        assert_eq!(
            rows_by_date(setup.s3, &format!("s3://{bucket}/{table}"), "parquet"),
            reference_rows(setup.s3, &bucket),
            "{table}"
        );
    }
}

/// Creates any object from its JSON (apiVersion and kind resolved by discovery).
async fn apply_dynamic(setup: &Setup, object: serde_json::Value) {
    let object: kube::api::DynamicObject = serde_json::from_value(object).unwrap();
    let gvk = kube::api::GroupVersionKind::try_from(object.types.as_ref().unwrap()).unwrap();
    let (resource, caps) = kube::discovery::pinned_kind(&setup.admin, &gvk).await.unwrap();
    let api: Api<kube::api::DynamicObject> = if caps.scope == kube::discovery::Scope::Namespaced {
        Api::namespaced_with(
            setup.admin.clone(),
            object.metadata.namespace.as_deref().unwrap(),
            &resource,
        )
    } else {
        Api::all_with(setup.admin.clone(), &resource)
    };
    api.create(&PostParams::default(), &object)
        .await
        .unwrap_or_else(|e| panic!("create {}: {e}", gvk.kind));
}

/// An EtlRun with `target.format: delta` runs the worker image on a Delta table: each run
/// commits one version, and the run's status records the version it committed.
#[tokio::test(flavor = "multi_thread")]
async fn a_delta_etlrun_records_the_table_version_it_committed() {
    let (ref setup, ns, bucket, lines) = fresh("delta-table", 200).await;
    let delta = json!({"target": {"format": "delta"}});
    create_run(setup, &ns, "first", &bucket, delta.clone()).await;
    let first = wait_run(setup, &ns, "first", Duration::from_secs(180), finished).await;
    let status = first.status.clone().unwrap();
    assert_eq!(status.phase, Some(Phase::Succeeded), "{status:?}");
    assert_eq!(status.rows_read, Some(lines as u64));
    assert_eq!(status.table_version, Some(0), "{status:?}");

    setup.s3.put(
        &bucket,
        "src/part-9.gz",
        &gzip(lakeload_testkit::sample_lines(9, 150, 50, 4).as_bytes()),
    );
    let mut incremental = delta.clone();
    merge(&mut incremental, json!({"mode": "incremental"}));
    create_run(setup, &ns, "second", &bucket, incremental).await;
    let second = wait_run(setup, &ns, "second", Duration::from_secs(180), finished).await;
    let status = second.status.clone().unwrap();
    assert_eq!(status.phase, Some(Phase::Succeeded), "{status:?}");
    assert_eq!(status.rows_read, Some(150), "only the new file is read");
    assert_eq!(status.table_version, Some(1), "{status:?}");

    // The table's log, read on this host: one version per run, full then incremental.
    let out = on_host(
        setup.s3,
        &format!("s3://{bucket}/table"),
        &[("LAKELOAD_TARGET_FORMAT", "delta")],
        &["history", "--json"],
    );
    let history: Vec<serde_json::Value> = serde_json::from_slice(&out).unwrap();
    let versions: Vec<(u64, &str)> = history
        .iter()
        .map(|v| (v["version"].as_u64().unwrap(), v["mode"].as_str().unwrap()))
        .collect();
    assert_eq!(versions, [(1, "incremental"), (0, "full")]);
}

/// A Delta EtlRun whose first pod is OOM-killed right after writing a date, before its
/// commit (it grows past its container's 256 MiB limit there, the kernel's OOM killer ends it,
/// and the kubelet reports `OOMKilled`), ends `Succeeded` through the Job's own retry: the
/// retry runs under the same run id but as a new attempt, so its files never collide with the
/// killed attempt's (which no version reads), and it commits version 1. The table holds what
/// a local full run over the same files gives.
#[tokio::test(flavor = "multi_thread")]
async fn a_delta_etlrun_oom_killed_after_writing_a_date_succeeds_on_the_jobs_retry() {
    let (ref setup, ns, bucket, _) = fresh("delta-retry", 200).await;
    let delta = json!({"target": {"format": "delta"}});
    create_run(setup, &ns, "first", &bucket, delta.clone()).await;
    let first = wait_run(setup, &ns, "first", Duration::from_secs(180), finished).await;
    assert_eq!(first.status.unwrap().table_version, Some(0));

    setup.s3.put(
        &bucket,
        "src/part-9.gz",
        &gzip(lakeload_testkit::sample_lines(9, 150, 50, 4).as_bytes()),
    );
    let mut incremental = delta.clone();
    merge(
        &mut incremental,
        json!({
            "mode": "incremental",
            "backoffLimit": 2,
            "resources": {"limits": {"memory": "256Mi"}},
            // Only the first attempt grows (a marker in the table's storage): the retry goes on.
            "settings": {PAUSE_SETTING: "after_date_write:1:grow-once"},
        }),
    );
    let run = create_run(setup, &ns, "killed", &bucket, incremental).await;

    let done = wait_run(setup, &ns, "killed", Duration::from_secs(240), finished).await;
    let status = done.status.unwrap();
    assert_eq!(status.phase, Some(Phase::Succeeded), "{status:?}");
    assert_eq!(status.table_version, Some(1), "{status:?}");
    assert_eq!(status.rows_read, Some(150), "{status:?}");
    let attempts = job_pods(setup, &ns, &run).await;
    assert_eq!(
        attempts.len(),
        2,
        "one retry\n{}",
        describe_pods(setup, &ns).await
    );
    assert_eq!(
        termination_reason(&attempts[0]).as_deref(),
        Some("OOMKilled"),
        "{}",
        describe_pods(setup, &ns).await
    );
    assert_eq!(exit_code(&attempts[0]), Some(137));
    assert_eq!(exit_code(&attempts[1]), Some(0));

    let rows = rows_by_date(setup.s3, &format!("s3://{bucket}/table"), "delta");
    assert_eq!(
        rows,
        reference_rows(setup.s3, &bucket),
        "the table a full local run over the same files gives"
    );
}

/// The release was installed from the previous chart (0.1.0), whose CRDs lack this version's
/// fields, then upgraded to this one (see [`shared`]). Before the upgrade this operator
/// refused to run and named the fix; the upgrade's hook applied the CRDs; the run created
/// before it ran to completion with its Delta format intact, and new fields are kept.
#[tokio::test(flavor = "multi_thread")]
async fn upgrading_from_the_previous_chart_applies_the_crds_and_keeps_every_field() {
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
    use lakeload_operator::crd::{CRD_REVISION, CRD_REVISION_ANNOTATION, TableFormat};
    let setup = setup().await;
    let upgrade = &setup.upgrade;
    assert!(
        upgrade.refusal.starts_with("exit 1") && upgrade.refusal.contains("helm upgrade"),
        "{}",
        upgrade.refusal
    );
    assert_eq!(
        upgrade.timeout_before, None,
        "the previous CRDs prune the field: why the operator refused them"
    );
    let crds: Api<CustomResourceDefinition> = Api::all(setup.admin.clone());
    for name in ["etlruns.lakeload.io", "etlrunresults.lakeload.io"] {
        let crd = crds.get(name).await.unwrap();
        assert_eq!(
            crd.annotations().get(CRD_REVISION_ANNOTATION),
            Some(&CRD_REVISION.to_string()),
            "{name} applied by the upgrade hook"
        );
    }
    let (ns, name, bucket, lines) = upgrade.before.clone();
    let done = wait_run(&setup, &ns, &name, Duration::from_secs(240), finished).await;
    assert_eq!(done.spec.target.format, Some(TableFormat::Delta));
    let status = done.status.unwrap();
    assert_eq!(status.phase, Some(Phase::Succeeded), "{status:?}");
    assert_eq!(
        (status.rows_read, status.table_version),
        (Some(lines as u64), Some(0))
    );
    assert_eq!(
        rows_by_date(setup.s3, &format!("s3://{bucket}/table"), "delta"),
        reference_rows(setup.s3, &bucket)
    );
    // A run created now keeps every field of this version.
    let after = create_run(
        &setup,
        &ns,
        "after-upgrade",
        &bucket,
        json!({"queueTimeoutSeconds": 900, "target": {"url": format!("s3://{bucket}/table-two"), "format": "delta"}}),
    )
    .await;
    assert_eq!(after.spec.queue_timeout_seconds, Some(900));
    assert_eq!(after.spec.target.format, Some(TableFormat::Delta));
}

/// Each way a tenant could run code with a run's credentials, borrow another team's, or
/// reach the node's network is refused before any Job exists; keys of the credentials
/// Secret other than the AWS variables never reach the worker.
#[tokio::test(flavor = "multi_thread")]
async fn tenants_cannot_borrow_credentials_run_code_or_take_the_node_network() {
    use k8s_openapi::api::core::v1::ConfigMap;
    let (ref setup, ns, bucket, lines) = fresh("tenant", 40).await;
    // A text ConfigMap whose profile runs a shell for credentials, and another team's keys.
    let profile: ConfigMap = serde_json::from_value(json!({
        "metadata": {"name": "aws-profile", "namespace": ns},
        "data": {"config": "[default]\ncredential_process = sh -c 'cat /proc/self/environ >&2; echo {}'\n"},
    }))
    .unwrap();
    Api::<ConfigMap>::namespaced(setup.admin.clone(), &ns)
        .create(&PostParams::default(), &profile)
        .await
        .unwrap();
    let other_team: Secret = serde_json::from_value(json!({
        "metadata": {"name": "team-b-aws", "namespace": ns},
        "stringData": {"AWS_ACCESS_KEY_ID": "b", "AWS_SECRET_ACCESS_KEY": "b"},
    }))
    .unwrap();
    Api::<Secret>::namespaced(setup.admin.clone(), &ns)
        .create(&PostParams::default(), &other_team)
        .await
        .unwrap();
    let attacks = [
        (
            "process-profile",
            json!({"podTemplate": {
                "env": [{"name": "AWS_CONFIG_FILE", "value": "/etc/aws/config"}],
                "volumes": [{"name": "profile", "configMap": {"name": "aws-profile"}}],
                "volumeMounts": [{"name": "profile", "mountPath": "/etc/aws"}]}}),
            "EnvNotAllowed",
        ),
        (
            "profile-mount",
            json!({"podTemplate": {
                "volumes": [{"name": "profile", "configMap": {"name": "aws-profile"}}],
                "volumeMounts": [{"name": "profile", "mountPath": "/etc/aws"}]}}),
            "VolumeNotAllowed",
        ),
        (
            "other-team",
            json!({"credentialsSecret": "team-b-aws"}),
            "SecretNotAllowed",
        ),
        (
            "other-team-key",
            json!({"podTemplate": {"env": [{"name": "TZ", "valueFrom":
                {"secretKeyRef": {"name": "team-b-aws", "key": "AWS_SECRET_ACCESS_KEY"}}}]}}),
            "SecretNotAllowed",
        ),
        (
            "node-network",
            json!({"podTemplate": {"hostNetwork": true}}),
            "HostNetworkNotAllowed",
        ),
        (
            "plain-text-key",
            json!({"credentialsSecret": null, "settings": {"aws.access_key_id": "AKIA", "aws.secret_access_key": "s3cr3t"}}),
            "SecretInSettings",
        ),
    ];
    for (name, extra, _) in &attacks {
        create_run(setup, &ns, name, &bucket, extra.clone()).await;
    }
    let jobs: Api<Job> = Api::namespaced(setup.admin.clone(), &ns);
    for (name, _, reason) in &attacks {
        let done = wait_run(setup, &ns, name, Duration::from_secs(60), finished).await;
        let status = done.status.clone().unwrap();
        assert_eq!(
            (status.phase, status.reason.as_deref()),
            (Some(Phase::Failed), Some(*reason)),
            "{name}: {:?}",
            status.message
        );
        assert!(
            jobs.get_opt(&job_name(&done)).await.unwrap().is_none(),
            "{name}: no Job"
        );
    }

    // A loader variable slipped into the credentials Secret: the run succeeds, and the
    // variable is nowhere in its worker's environment.
    let mut keys: Secret = Api::<Secret>::namespaced(setup.admin.clone(), &ns)
        .get(CREDENTIALS)
        .await
        .unwrap();
    keys.metadata.managed_fields = None;
    keys.string_data = Some(BTreeMap::from([
        ("LD_PRELOAD".to_string(), "/tmp/evil.so".to_string()),
        ("AWS_CONFIG_FILE".to_string(), "/tmp/evil-config".to_string()),
    ]));
    Api::<Secret>::namespaced(setup.admin.clone(), &ns)
        .replace(CREDENTIALS, &PostParams::default(), &keys)
        .await
        .unwrap();
    let run = create_run(setup, &ns, "preload-key", &bucket, json!({})).await;
    let done = wait_run(setup, &ns, "preload-key", Duration::from_secs(180), finished).await;
    let status = done.status.unwrap();
    assert_eq!(status.phase, Some(Phase::Succeeded), "{status:?}");
    assert_eq!(status.rows_read, Some(lines as u64));
    let pod = &job_pods(setup, &ns, &run).await[0];
    let container = &pod.spec.as_ref().unwrap().containers[0];
    assert_eq!(container.env_from, None);
    let env: BTreeMap<String, Option<String>> = container
        .env
        .iter()
        .flatten()
        .map(|e| (e.name.clone(), e.value.clone()))
        .collect();
    assert!(!env.contains_key("LD_PRELOAD"), "{env:?}");
    assert_eq!(env["AWS_CONFIG_FILE"].as_deref(), Some("/dev/null"));
    assert_eq!(env["AWS_SHARED_CREDENTIALS_FILE"].as_deref(), Some("/dev/null"));
}

/// A pod running as the worker account writes results for a run it does not belong to: one
/// claiming the run's own pod is refused by the chart's admission policy; one in its own
/// name (with another run id and counts) is admitted but never becomes the run's status.
#[tokio::test(flavor = "multi_thread")]
async fn a_pod_of_the_worker_account_cannot_forge_another_runs_result() {
    use lakeload_types::result::{EtlRunResult, POD_UID_LABEL};
    let (ref setup, ns, bucket, lines) = fresh("forgery", 60).await;
    let (victim, victim_pod) = create_paused_run(setup, &ns, "victim", &bucket, 25_000, json!({})).await;
    let decoy_bucket = setup.s3.bucket("decoy");
    upload_sources(setup.s3, &decoy_bucket, 1, 7);
    // The forger: the worker image as the worker account, reporting a run of its own making
    // (a decoy table) to the victim run, once claiming the victim's pod, once in its own name.
    // Each forger writes a decoy table of its own: on a shared one, the forger that lost the
    // table's lock would end without a summary, so without a result to be refused.
    let forger = |name: &str, pod_uid_arg: &str| -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": ns},
            "spec": {
                "serviceAccountName": "lakeload-worker",
                "restartPolicy": "Never",
                "securityContext": {"runAsNonRoot": true, "runAsUser": 10001},
                "containers": [{
                    "name": "worker",
                    "image": WORKER_IMAGE,
                    "imagePullPolicy": "Never",
                    "terminationMessagePolicy": "FallbackToLogsOnError",
                    "args": ["run", "--mode", "full", "--run-id", "20200101T000000000Z-forged",
                             "--etlrun", "victim", "--etlrun-uid", victim.uid().unwrap(), pod_uid_arg],
                    "env": [
                        {"name": "POD_UID", "valueFrom": {"fieldRef": {"fieldPath": "metadata.uid"}}},
                        {"name": "LAKELOAD_SOURCE_URL", "value": format!("s3://{decoy_bucket}/src")},
                        {"name": "LAKELOAD_TARGET_URL", "value": format!("s3://{decoy_bucket}/{name}")},
                        {"name": "LAKELOAD_AWS_ENDPOINT_URL", "value": setup.s3.endpoint},
                        {"name": "LAKELOAD_AWS_REGION", "value": "us-east-1"},
                        {"name": "LAKELOAD_AWS_FORCE_PATH_STYLE", "value": "true"},
                        {"name": "AWS_ACCESS_KEY_ID", "value": "testing"},
                        {"name": "AWS_SECRET_ACCESS_KEY", "value": "testing"},
                    ],
                    "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
                }],
                "volumes": [{"name": "tmp", "emptyDir": {}}],
            },
        }))
        .unwrap()
    };
    let pods: Api<Pod> = Api::namespaced(setup.admin.clone(), &ns);
    let claimed = format!("--pod-uid={}", victim_pod.uid().unwrap());
    for pod in [
        forger("impostor", &claimed),
        forger("own-name", "--pod-uid=$(POD_UID)"),
    ] {
        pods.create(&PostParams::default(), &pod).await.unwrap();
    }
    let ended = |name: &'static str| {
        let pods = pods.clone();
        async move {
            let deadline = Instant::now() + Duration::from_secs(120);
            loop {
                let pod = pods.get(name).await.unwrap();
                if let Some(t) = terminated(&pod) {
                    return t.clone();
                }
                assert!(
                    Instant::now() < deadline,
                    "forger {name} did not end: {}",
                    serde_json::to_string(&pod.status).unwrap()
                );
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    };
    let impostor = ended("impostor").await;
    let said = impostor.message.clone().unwrap_or_default();
    assert!(
        said.contains("could not be reported") && said.contains("lakeload.io/pod-uid"),
        "the admission policy's refusal reaches the forger (exit {}): {said}",
        impostor.exit_code
    );
    ended("own-name").await;
    let results: Api<EtlRunResult> = Api::namespaced(setup.admin.clone(), &ns);
    let forged: Vec<EtlRunResult> = results
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|r| r.spec.run_id.ends_with("-forged"))
        .collect();
    assert_eq!(forged.len(), 1, "only the result in its own name was admitted");
    let own = pods.get("own-name").await.unwrap();
    assert_eq!(forged[0].labels().get(POD_UID_LABEL), own.uid().as_ref());

    // The victim's own pod finishes: its status is its own table's, not the forgery's.
    let done = wait_run(setup, &ns, "victim", Duration::from_secs(240), finished).await;
    let status = done.status.unwrap();
    assert_eq!(status.phase, Some(Phase::Succeeded), "{status:?}");
    assert_eq!(status.rows_read, Some(lines as u64));
    assert_ne!(status.run_id.as_deref(), Some("20200101T000000000Z-forged"));
}

/// A run waiting on a queue Kueue will never admit (it does not exist) fails `NotAdmitted`
/// after its `queueTimeoutSeconds`, quoting what Kueue says, and frees its table.
#[tokio::test(flavor = "multi_thread")]
async fn a_run_kueue_never_admits_fails_not_admitted_and_frees_its_table() {
    let (ref setup, ns, bucket, _) = fresh("no-queue", 10).await;
    kueue(setup).await;
    let run = create_run(
        setup,
        &ns,
        "stranded",
        &bucket,
        json!({"queueName": "no-such-queue", "queueTimeoutSeconds": 20}),
    )
    .await;
    let done = wait_run(setup, &ns, "stranded", Duration::from_secs(120), finished).await;
    let status = done.status.unwrap();
    assert_eq!(
        (status.phase, status.reason.as_deref()),
        (Some(Phase::Failed), Some("NotAdmitted")),
        "{status:?}"
    );
    let message = status.message.unwrap_or_default();
    assert!(
        message.contains("queueTimeoutSeconds = 20") && message.contains("no-such-queue"),
        "{message}"
    );
    wait_lease_released(setup, &run, Duration::from_secs(60)).await;
    assert!(job_pods(setup, &ns, &run).await.is_empty(), "no worker ever ran");
}

/// The chart's NetworkPolicy, rendered with the API server's and moto's addresses and applied
/// to a namespace of runs: a run against that S3 endpoint succeeds (API server and S3
/// reachable), a run against another S3 endpoint on the same node cannot connect.
#[tokio::test(flavor = "multi_thread")]
async fn the_charts_network_policy_lets_workers_reach_the_api_server_and_s3_only() {
    let (ref setup, ns, bucket, lines) = fresh("fenced", 30).await;
    let elsewhere = tokio::task::spawn_blocking(|| S3Server::listening_on(&Cluster::shared().host_ip))
        .await
        .unwrap();
    let other_bucket = elsewhere.bucket("elsewhere");
    upload_sources(&elsewhere, &other_bucket, 1, 10);
    let host = &setup.cluster.host_ip;
    let sets = [
        "networkPolicy.enabled=true".to_string(),
        format!("networkPolicy.apiServer[0].cidr={host}/32"),
        format!("networkPolicy.apiServer[0].port={}", setup.cluster.api_port),
        format!("networkPolicy.s3[0].cidr={host}/32"),
        format!("networkPolicy.s3[0].port={}", setup.s3.port()),
    ];
    let mut template = Command::new(lakeload_testkit::helm());
    template
        .args(["template", "lakeload"])
        .arg(lakeload_testkit::workspace().join("charts/lakeload"))
        .args(["--namespace", &ns, "--show-only", "templates/networkpolicy.yaml"]);
    for set in &sets {
        template.args(["--set", set]);
    }
    let out = tokio::task::block_in_place(|| template.output().unwrap());
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let policy: k8s_openapi::api::networking::v1::NetworkPolicy =
        serde_yaml::from_slice(&out.stdout).unwrap();
    Api::<k8s_openapi::api::networking::v1::NetworkPolicy>::namespaced(setup.admin.clone(), &ns)
        .create(&PostParams::default(), &policy)
        .await
        .unwrap();

    create_run(setup, &ns, "allowed", &bucket, json!({})).await;
    create_run(
        setup,
        &ns,
        "blocked",
        &other_bucket,
        json!({"settings": {"aws.endpoint_url": elsewhere.endpoint}, "backoffLimit": 0}),
    )
    .await;
    let allowed = wait_run(setup, &ns, "allowed", Duration::from_secs(180), finished).await;
    let status = allowed.status.unwrap();
    assert_eq!(status.phase, Some(Phase::Succeeded), "{status:?}");
    assert_eq!(status.rows_read, Some(lines as u64));
    let blocked = wait_run(setup, &ns, "blocked", Duration::from_secs(400), finished).await;
    let status = blocked.status.unwrap();
    assert_eq!(status.phase, Some(Phase::Failed), "{status:?}");
    let message = status.message.unwrap_or_default().to_lowercase();
    assert!(
        message.contains("timeout") || message.contains("timed out") || message.contains("dispatch failure"),
        "the worker could not connect: {message}"
    );
    // Nothing reached the other endpoint: its table was never written.
    let (_, listing) = elsewhere.exchange("GET", &format!("/{other_bucket}?list-type=2&prefix=table/"), b"");
    assert!(!listing.contains("<Key>"), "{listing}");
}
