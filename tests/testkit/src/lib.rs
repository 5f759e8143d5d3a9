//! Test harness shared by the workspace's integration tests: a real S3-compatible server (moto in
//! server mode, from the venv `tests/setup.sh` creates) on 127.0.0.1, and the tools venv.
//!
//! Nothing here is a mock: the worker talks HTTP to moto exactly as it talks to AWS S3.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

pub mod cluster;
pub mod controlplane;
pub mod faultproxy;

/// The workspace root: the nearest folder holding `Cargo.lock` above the package under test.
/// Found at run time (cargo sets `CARGO_MANIFEST_DIR` for test binaries) because a build
/// cached from a checkout elsewhere (CI clones share one target folder) keeps that checkout's
/// compile-time path, which may be gone.
pub fn workspace() -> PathBuf {
    let start = std::env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .or_else(|| std::env::current_dir().ok())
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")));
    start
        .ancestors()
        .find(|dir| dir.join("Cargo.lock").is_file())
        .unwrap_or_else(|| panic!("no Cargo.lock above {}", start.display()))
        .canonicalize()
        .expect("workspace root")
}

/// The Python venv with moto and duckdb (`tests/setup.sh`), or `$LAKELOAD_VENV`.
pub fn venv() -> PathBuf {
    std::env::var_os("LAKELOAD_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace().join(".venv"))
}

fn venv_tool(name: &str) -> PathBuf {
    let path = venv().join("bin").join(name);
    assert!(
        path.exists(),
        "{} is missing: run tests/setup.sh first (it creates the venv with moto and duckdb), \
         or point LAKELOAD_VENV at a venv that has them",
        path.display()
    );
    path
}

/// The venv's Python, for reader checks (DuckDB).
pub fn python() -> PathBuf {
    venv_tool("python")
}

/// A moto S3 server (on 127.0.0.1 unless started with [`S3Server::listening_on`]), stopped
/// when the test process exits.
pub struct S3Server {
    pub endpoint: String,
    port: u16,
    address: String,
    _child: Child,
}

static SERVER: OnceLock<S3Server> = OnceLock::new();
static BUCKETS: AtomicU32 = AtomicU32::new(0);

/// Starts `program args…` (output to `log`) under a watchdog shell that stops it when this
/// test process goes away, however it ends.
pub fn start_guarded(program: &Path, args: &[String], log: &Path) -> Child {
    let quoted: Vec<String> = args
        .iter()
        .map(|a| format!("'{}'", a.replace('\'', "'\\''")))
        .collect();
    let script = format!(
        "'{}' {} >'{}' 2>&1 & p=$!; \
         while kill -0 {parent} 2>/dev/null && kill -0 $p 2>/dev/null; do sleep 0.5; done; kill $p 2>/dev/null",
        program.display(),
        quoted.join(" "),
        log.display(),
        parent = std::process::id()
    );
    Command::new("sh")
        .arg("-c")
        .arg(script)
        .stdin(Stdio::null())
        .spawn()
        .expect("start process")
}

/// Waits (up to a minute) until a server accepts connections on 127.0.0.1:`port`.
pub fn wait_port(port: u16, what: &str, log: &Path) {
    wait_port_on("127.0.0.1", port, what, log)
}

/// Waits (up to a minute) until a server accepts connections on `address`:`port`.
pub fn wait_port_on(address: &str, port: u16, what: &str, log: &Path) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while TcpStream::connect((address, port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "{what} did not start; see {}",
            log.display()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `n` source lines in the default schema (`key|value|||n|date|date|x`, eight fields), keys from
/// `keys` distinct values repeating, dates over the first `days` days of February 2024; the
/// same seed gives the same lines.
pub fn sample_lines(seed: u64, n: usize, keys: u64, days: u64) -> String {
    let mut x = seed.wrapping_mul(6364136223846793005).wrapping_add(7);
    let mut text = String::new();
    for _ in 0..n {
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let day = 1 + (x >> 40) % days.clamp(1, 9);
        text += &format!(
            "k{}|v{x:x}|||{}|2024-02-0{day}|2024-02-0{day}|x\n",
            (x >> 33) % keys.max(1),
            x >> 52
        );
    }
    text
}

/// The body of a table lock (`_lakeload/lock`) held for an hour by another writer, as a run
/// on someone's laptop would leave it.
pub fn foreign_lock(run_id: &str) -> String {
    let now = chrono::Utc::now();
    let at = |t: chrono::DateTime<chrono::Utc>| t.format("%Y-%m-%dT%H:%M:%SZ").to_string();
    format!(
        r#"{{"run_id":"{run_id}","host":"laptop","pid":4242,"started_at":"{}","lease_expires_at":"{}","lease_seconds":3600,"version":"0.1.0"}}"#,
        at(now),
        at(now + chrono::Duration::hours(1))
    )
}

/// The Helm CLI, built from source once per machine by tests/helm/build.sh.
pub fn helm() -> PathBuf {
    built_by("tests/helm/build.sh")
}

/// The kubectl built with the control plane (tests/controlplane/build.sh), called by path: a
/// fresh machine has none.
pub fn kubectl() -> PathBuf {
    built_by("tests/controlplane/build.sh").join("kubectl")
}

/// Runs a build script of the workspace (which builds once per machine, then reuses its cache)
/// and returns the path it prints last.
pub fn built_by(script: &str) -> PathBuf {
    let out = Command::new("bash")
        .arg(workspace().join(script))
        .stderr(Stdio::inherit())
        .output()
        .unwrap_or_else(|e| panic!("run {script}: {e}"));
    assert!(out.status.success(), "{script} failed (see its output above)");
    PathBuf::from(
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .last()
            .unwrap_or_else(|| panic!("{script} prints the path of what it built"))
            .trim(),
    )
}

/// Every file under `dir`, in its subfolders too (`dir` must exist).
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("read {}: {e}", dir.display())) {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(files_under(&path));
        } else {
            out.push(path);
        }
    }
    out
}

/// A free TCP port on 127.0.0.1.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

/// moto does not verify signatures, but treats requests without one as anonymous, and refuses
/// anonymous overwrites and deletes of existing objects.
const ANY_SIGNATURE: &str = "Authorization: AWS4-HMAC-SHA256 \
    Credential=testing/20240101/us-east-1/s3/aws4_request, SignedHeaders=host, Signature=0";

impl S3Server {
    /// The test process's server, started on first use.
    pub fn shared() -> &'static S3Server {
        SERVER.get_or_init(|| S3Server::listening_on("127.0.0.1"))
    }

    /// A server of its own on `address` (a local address: e.g. the test cluster's bridge,
    /// which its pods reach).
    pub fn listening_on(address: &str) -> S3Server {
        let moto = venv_tool("moto_server");
        let port = free_port();
        let log = std::env::temp_dir().join(format!("lakeload-moto-{port}.log"));
        let args = ["-H".to_string(), address.into(), "-p".into(), port.to_string()];
        let child = start_guarded(&moto, &args, &log);
        wait_port_on(address, port, "moto_server", &log);
        S3Server {
            endpoint: format!("http://{address}:{port}"),
            port,
            address: address.to_string(),
            _child: child,
        }
    }

    /// The server's port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Sends one plain HTTP request (moto does not check signatures) and returns the status.
    pub fn request(&self, method: &str, path: &str, body: &[u8]) -> u16 {
        self.exchange(method, path, body).0
    }

    /// Sends one plain HTTP request and returns the status and the body.
    pub fn exchange(&self, method: &str, path: &str, body: &[u8]) -> (u16, String) {
        let mut stream = TcpStream::connect((self.address.as_str(), self.port)).expect("connect to moto");
        // A stalled server fails the test rather than holding it.
        stream
            .set_read_timeout(Some(Duration::from_secs(120)))
            .expect("read timeout");
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}:{}\r\nContent-Length: {}\r\n{ANY_SIGNATURE}\r\nConnection: close\r\n\r\n",
            self.address,
            self.port,
            body.len()
        );
        stream.write_all(head.as_bytes()).expect("send");
        stream.write_all(body).expect("send");
        let mut response = Vec::new();
        stream.read_to_end(&mut response).expect("receive");
        let text = String::from_utf8_lossy(&response);
        let status = text
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let body = text
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_string())
            .unwrap_or_default();
        (status, body)
    }

    /// A new, empty bucket with a unique name.
    pub fn bucket(&self, hint: &str) -> String {
        let n = BUCKETS.fetch_add(1, Ordering::Relaxed);
        let clean: String = hint
            .to_ascii_lowercase()
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
            .take(30)
            .collect();
        let name = format!("{clean}-{}-{n}", std::process::id());
        let status = self.request("PUT", &format!("/{name}"), b"");
        assert_eq!(status, 200, "create bucket {name}");
        name
    }

    /// Uploads one object.
    pub fn put(&self, bucket: &str, key: &str, body: &[u8]) {
        let status = self.request("PUT", &format!("/{bucket}/{key}"), body);
        assert_eq!(status, 200, "put s3://{bucket}/{key}");
    }

    /// The environment that points the worker at this server.
    pub fn env(&self) -> Vec<(String, String)> {
        vec![
            ("LAKELOAD_AWS_ENDPOINT_URL".into(), self.endpoint.clone()),
            ("LAKELOAD_AWS_ACCESS_KEY_ID".into(), "testing".into()),
            ("LAKELOAD_AWS_SECRET_ACCESS_KEY".into(), "testing".into()),
            ("LAKELOAD_AWS_REGION".into(), "us-east-1".into()),
        ]
    }
}

/// A file of the previous release's chart (`tests/cluster/previous-chart/lakeload-0.1.0.tgz`,
/// the chart as released before this version), by its path inside the chart.
pub fn previous_chart_file(path: &str) -> String {
    let archive = previous_chart();
    let out = std::process::Command::new("tar")
        .arg("-xzOf")
        .arg(&archive)
        .arg(format!("lakeload/{path}"))
        .output()
        .expect("tar");
    assert!(
        out.status.success(),
        "{} has no lakeload/{path}: {}",
        archive.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("text")
}

/// The previous release's chart archive, for `helm install` before an upgrade.
pub fn previous_chart() -> PathBuf {
    workspace().join("tests/cluster/previous-chart/lakeload-0.1.0.tgz")
}

/// `data` as one gzip file (a source file as it lands in the bucket).
pub fn gzip(data: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(data).expect("gzip in memory");
    encoder.finish().expect("gzip in memory")
}
