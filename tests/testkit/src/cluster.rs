//! A real single-node Kubernetes cluster (tests/cluster/up.sh): control plane, controller-
//! manager, scheduler and a kubelet on containerd + runc, with the project's podman-built images
//! (tests/images/build.sh) imported. Started once per test process, stopped when it exits.

use std::path::PathBuf;
use std::process::Child;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::{start_guarded, workspace};

pub struct Cluster {
    /// Kubeconfig of the cluster admin.
    pub kubeconfig: PathBuf,
    /// The API server's port (on 127.0.0.1 for the host; pods reach it through the
    /// `kubernetes` Service, which forwards to `host_ip`:`api_port`).
    pub api_port: u16,
    /// The node's address on the pod network (the bridge's): servers the pods must reach (S3)
    /// listen there.
    pub host_ip: String,
    /// Logs of every component (`*.log`) and of every container (`pod-logs/`).
    pub dir: PathBuf,
    _cluster: Child,
}

/// Where tests/images/build.sh leaves `worker.tar` and `operator.tar`.
pub fn images_dir() -> PathBuf {
    std::env::var_os("LAKELOAD_PODMAN_DIR")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/lakeload/podman")))
        .expect("HOME or LAKELOAD_PODMAN_DIR")
        .join("images")
}

/// The images the tests run: built by tests/images/build.sh from this checkout's binaries.
pub const WORKER_IMAGE: &str = "localhost/lakeload:dev";
pub const OPERATOR_IMAGE: &str = "localhost/lakeload-operator:dev";

static CLUSTER: OnceLock<Cluster> = OnceLock::new();

impl Cluster {
    pub fn shared() -> &'static Cluster {
        CLUSTER.get_or_init(Cluster::start)
    }

    fn start() -> Cluster {
        let images: Vec<PathBuf> = ["worker.tar", "operator.tar"]
            .iter()
            .map(|f| images_dir().join(f))
            .collect();
        for image in &images {
            assert!(
                image.exists(),
                "{} is missing: build the images first with tests/images/build.sh \
                 (tests/run-all.sh does)",
                image.display()
            );
        }
        // One cluster per machine: the previous test binary's may still be stopping.
        let deadline = Instant::now() + Duration::from_secs(120);
        while std::path::Path::new("/sys/class/net/lakeload0").exists() {
            assert!(
                Instant::now() < deadline,
                "another test cluster's pod network (bridge lakeload0) is still up"
            );
            std::thread::sleep(Duration::from_millis(500));
        }
        let parent = tempfile::Builder::new()
            .prefix("lakeload-cluster-")
            .tempdir()
            .expect("tempdir")
            .keep();
        let dir = parent.join("c");
        let log = parent.join("up.log");
        let mut args = vec![dir.display().to_string()];
        args.extend(images.iter().map(|i| i.display().to_string()));
        let child = start_guarded(&workspace().join("tests/cluster/up.sh"), &args, &log);
        let deadline = Instant::now() + Duration::from_secs(240);
        while !dir.join("ready").exists() {
            let up = std::fs::read_to_string(&log).unwrap_or_default();
            let failed = [
                "exited;",
                "not ready after",
                "cannot import",
                "cannot set up the pod network",
            ]
            .iter()
            .any(|s| up.contains(s));
            assert!(
                !failed && Instant::now() < deadline,
                "the test cluster did not start; tests/cluster/up.sh said:\n{up}"
            );
            std::thread::sleep(Duration::from_millis(250));
        }
        let api_port = std::fs::read_to_string(dir.join("api-port"))
            .expect("api-port")
            .trim()
            .parse()
            .expect("a port");
        let host_ip = std::fs::read_to_string(dir.join("host-ip"))
            .expect("host-ip")
            .trim()
            .to_string();
        Cluster {
            kubeconfig: dir.join("kubeconfig"),
            api_port,
            host_ip,
            dir,
            _cluster: child,
        }
    }
}
