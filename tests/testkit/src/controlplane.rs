//! A real Kubernetes control plane for the operator tests: etcd and kube-apiserver built from
//! source by `tests/controlplane/build.sh` (cached per machine), started on 127.0.0.1 once per
//! test process and stopped when it exits. There is no kubelet or controller-manager: the tests
//! play the kubelet's part themselves.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::{free_port, start_guarded, wait_port};

pub struct ControlPlane {
    /// Kubeconfig of the cluster admin (group system:masters).
    pub admin_kubeconfig: PathBuf,
    pub server: String,
    pub dir: PathBuf,
    _etcd: Child,
    _apiserver: Child,
}

static PLANE: OnceLock<ControlPlane> = OnceLock::new();

/// Builds (or finds in the cache) the binaries; returns their folder.
pub fn binaries() -> PathBuf {
    let dir = crate::built_by("tests/controlplane/build.sh");
    assert!(
        dir.join("kube-apiserver").exists() && dir.join("etcd").exists(),
        "{} lacks the binaries",
        dir.display()
    );
    dir
}

fn openssl(args: &[&str], dir: &Path) {
    let status = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    assert!(
        status.is_ok_and(|s| s.success()),
        "openssl {args:?} failed (is openssl installed?)"
    );
}

impl ControlPlane {
    pub fn shared() -> &'static ControlPlane {
        PLANE.get_or_init(ControlPlane::start)
    }

    /// A control plane of the caller's own (for a test that changes cluster-wide objects,
    /// such as CRDs, which the shared one's other tests rely on).
    pub fn start() -> ControlPlane {
        let bin = binaries();
        let dir = tempfile::Builder::new()
            .prefix("lakeload-k8s-")
            .tempdir()
            .expect("tempdir")
            .keep();
        let (etcd_client, etcd_peer, secure) = (free_port(), free_port(), free_port());

        let etcd_log = dir.join("etcd.log");
        let etcd = start_guarded(
            &bin.join("etcd"),
            &[
                format!("--data-dir={}", dir.join("etcd").display()),
                format!("--listen-client-urls=http://127.0.0.1:{etcd_client}"),
                format!("--advertise-client-urls=http://127.0.0.1:{etcd_client}"),
                format!("--listen-peer-urls=http://127.0.0.1:{etcd_peer}"),
                format!("--initial-advertise-peer-urls=http://127.0.0.1:{etcd_peer}"),
                format!("--initial-cluster=default=http://127.0.0.1:{etcd_peer}"),
                "--unsafe-no-fsync".into(),
            ],
            &etcd_log,
        );
        wait_port(etcd_client, "etcd", &etcd_log);

        openssl(&["genrsa", "-out", "sa.key", "2048"], &dir);
        openssl(&["rsa", "-in", "sa.key", "-pubout", "-out", "sa.pub"], &dir);
        let token = "lakeload-test-admin-token";
        std::fs::write(
            dir.join("tokens.csv"),
            format!("{token},admin,admin-uid,system:masters\n"),
        )
        .unwrap();

        let api_log = dir.join("kube-apiserver.log");
        let apiserver = start_guarded(
            &bin.join("kube-apiserver"),
            &[
                format!("--etcd-servers=http://127.0.0.1:{etcd_client}"),
                format!("--cert-dir={}", dir.join("certs").display()),
                format!("--secure-port={secure}"),
                "--bind-address=127.0.0.1".into(),
                "--advertise-address=127.0.0.1".into(),
                format!("--token-auth-file={}", dir.join("tokens.csv").display()),
                "--authorization-mode=RBAC".into(),
                format!("--service-account-key-file={}", dir.join("sa.pub").display()),
                format!(
                    "--service-account-signing-key-file={}",
                    dir.join("sa.key").display()
                ),
                "--service-account-issuer=https://kubernetes.default.svc".into(),
                "--service-cluster-ip-range=10.0.0.0/24".into(),
                "--disable-admission-plugins=ServiceAccount".into(),
                // No kube-proxy or endpoints here: skip reconciling the `kubernetes` Service.
                "--endpoint-reconciler-type=none".into(),
            ],
            &api_log,
        );
        wait_port(secure, "kube-apiserver", &api_log);
        let server = format!("https://127.0.0.1:{secure}");
        let admin_kubeconfig = dir.join("admin.kubeconfig");
        std::fs::write(&admin_kubeconfig, kubeconfig(&server, token, "default")).unwrap();

        // Ready when /readyz answers 200 (the CRD and RBAC controllers have started).
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let ok = Command::new("curl")
                .args([
                    "-sk",
                    "--max-time",
                    "5",
                    "-o",
                    "/dev/null",
                    "-w",
                    "%{http_code}",
                    "-H",
                ])
                .arg(format!("Authorization: Bearer {token}"))
                .arg(format!("{server}/readyz"))
                .output()
                .map(|o| o.stdout == b"200")
                .unwrap_or(false);
            if ok {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "kube-apiserver not ready; see {}",
                api_log.display()
            );
            std::thread::sleep(Duration::from_millis(250));
        }
        ControlPlane {
            admin_kubeconfig,
            server,
            dir,
            _etcd: etcd,
            _apiserver: apiserver,
        }
    }

    /// A kubeconfig for a bearer token (e.g. a service account's).
    pub fn kubeconfig_for(&self, name: &str, token: &str) -> PathBuf {
        self.kubeconfig_in(name, token, "default")
    }

    /// A kubeconfig whose default namespace is `namespace`: what a pod's mounted service
    /// account gives a client (kube's `Api::default_namespaced`).
    pub fn kubeconfig_in(&self, name: &str, token: &str, namespace: &str) -> PathBuf {
        let path = self.dir.join(format!("{name}.kubeconfig"));
        std::fs::write(&path, kubeconfig(&self.server, token, namespace)).unwrap();
        path
    }
}

fn kubeconfig(server: &str, token: &str, namespace: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: test\n  cluster:\n    server: {server}\n    insecure-skip-tls-verify: true\n\
         users:\n- name: user\n  user:\n    token: {token}\ncontexts:\n- name: test\n  context:\n    cluster: test\n    user: user\n\
         \x20   namespace: {namespace}\ncurrent-context: test\n"
    )
}
