//! Helpers for end-to-end tests: run the built `lakeload` binary, write gzip inputs, and read
//! the resulting table back with polars (independently of the worker's own decoder).

use std::collections::BTreeMap;
use std::io::Cursor;
use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, SystemTime};

use lakeload::config::AwsConfig;
use lakeload::location::Location;
use lakeload::storage::{self, DynStorage};
use polars::prelude::*;

pub use lakeload_testkit::S3Server;

pub use lakeload_testkit::gzip;

/// Several gzip members back to back: one valid gzip file.
pub fn multi_member_gzip(parts: &[&[u8]]) -> Vec<u8> {
    parts.iter().flat_map(|p| gzip(p)).collect()
}

/// Writes a file and sets its modification time (the arrival time of `run.order = arrival`).
pub fn write_file(root: &Path, key: &str, bytes: &[u8], modified_unix: u64) {
    let path = root.join(key);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, bytes).unwrap();
    let f = std::fs::File::options().write(true).open(&path).unwrap();
    f.set_modified(SystemTime::UNIX_EPOCH + Duration::from_secs(modified_unix))
        .unwrap();
}

/// The `lakeload` binary with a clean environment (no inherited `LAKELOAD_*`).
pub struct Lakeload {
    cmd: Command,
}

impl Lakeload {
    pub fn new(cwd: &Path) -> Self {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_lakeload"));
        cmd.current_dir(cwd);
        for (k, _) in std::env::vars() {
            if k.starts_with("LAKELOAD_") || k.starts_with("AWS_") {
                cmd.env_remove(k);
            }
        }
        // No credentials or config from the machine running the tests.
        cmd.env("AWS_CONFIG_FILE", "/nonexistent")
            .env("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent");
        cmd.env("AWS_EC2_METADATA_DISABLED", "true");
        Lakeload { cmd }
    }

    pub fn env(mut self, k: &str, v: impl AsRef<std::ffi::OsStr>) -> Self {
        self.cmd.env(k, v);
        self
    }

    pub fn envs(mut self, vars: Vec<(String, String)>) -> Self {
        self.cmd.envs(vars);
        self
    }

    pub fn args<I: IntoIterator<Item = S>, S: AsRef<std::ffi::OsStr>>(mut self, args: I) -> Self {
        self.cmd.args(args);
        self
    }

    /// Runs to the end and returns what it printed; like [`Running::finish`], a worker still
    /// running after ten minutes fails the test instead of hanging the suite.
    pub fn output(mut self) -> Output {
        use std::process::Stdio;
        let mut child = self
            .cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run lakeload");
        let drain = |mut pipe: Box<dyn std::io::Read + Send>| {
            std::thread::spawn(move || {
                let mut bytes = Vec::new();
                let _ = pipe.read_to_end(&mut bytes);
                bytes
            })
        };
        let stdout = drain(Box::new(child.stdout.take().unwrap()));
        let stderr = drain(Box::new(child.stderr.take().unwrap()));
        let status = wait_at_most(&mut child, RUN_DEADLINE);
        let stderr = stderr.join().unwrap();
        assert!(
            status.is_some(),
            "the worker was still running after {RUN_DEADLINE:?}; stderr:\n{}",
            String::from_utf8_lossy(&stderr)
        );
        Output {
            status: status.unwrap(),
            stdout: stdout.join().unwrap(),
            stderr,
        }
    }

    pub fn command(self) -> Command {
        self.cmd
    }
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[track_caller]
pub fn assert_exit(o: &Output, code: i32) {
    assert_eq!(
        o.status.code(),
        Some(code),
        "exit code; stdout:\n{}\nstderr:\n{}",
        stdout(o),
        stderr(o)
    );
}

/// The JSON summary printed by `run --json`.
pub fn summary_json(o: &Output) -> serde_json::Value {
    serde_json::from_str(stdout(o).trim())
        .unwrap_or_else(|e| panic!("summary JSON ({e}): {}\n{}", stdout(o), stderr(o)))
}

/// A table row: every column as text (`None` = NULL). Dates `YYYY-MM-DD`, `_source_modified`
/// as microseconds since the epoch.
pub type TableRow = Vec<Option<String>>;

pub async fn open_storage(url: &str, s3: Option<&S3Server>) -> DynStorage {
    let aws = match s3 {
        Some(server) => AwsConfig {
            endpoint_url: Some(server.endpoint.clone()),
            region: Some("us-east-1".into()),
            access_key_id: Some("testing".into()),
            secret_access_key: Some(lakeload::config::Secret::new("testing")),
            ..AwsConfig::default()
        },
        None => AwsConfig::default(),
    };
    storage::open(&Location::parse(url).unwrap(), &aws).await.unwrap()
}

/// Every `.parquet` object under the table root: key → rows.
pub async fn read_table(storage: &DynStorage) -> BTreeMap<String, Vec<TableRow>> {
    let mut out = BTreeMap::new();
    for meta in storage.list("").await.unwrap() {
        if !meta.key.ends_with(".parquet") {
            continue;
        }
        let (bytes, _) = storage.get(&meta.key).await.unwrap().unwrap();
        out.insert(meta.key.clone(), parquet_rows(&bytes));
    }
    out
}

/// All rows of the table, sorted.
pub async fn table_rows(storage: &DynStorage) -> Vec<TableRow> {
    let mut rows: Vec<TableRow> = read_table(storage).await.into_values().flatten().collect();
    rows.sort();
    rows
}

/// The keys of the data objects the table's state records (none without a state).
pub async fn recorded_keys(storage: &DynStorage) -> Vec<String> {
    let Some((state, _)) = storage.get("_lakeload/state.json").await.unwrap() else {
        return Vec::new();
    };
    let state: serde_json::Value = serde_json::from_slice(&state).unwrap();
    state["partitions"]
        .as_object()
        .unwrap()
        .values()
        .map(|p| p["key"].as_str().unwrap().to_string())
        .collect()
}

/// The rows a Delta reader gets from the table's current version, sorted, read independently
/// of the worker: the log's commits replayed (no checkpoints: the tests that use this make
/// fewer than 100 versions; the same file with another deletion vector is another logical
/// file), each live file's rows less those its deletion vector deletes, the file's partition
/// value appended to each row. Also returns every data file any commit added.
pub async fn delta_rows(storage: &DynStorage) -> (Vec<TableRow>, std::collections::BTreeSet<String>) {
    let mut commits: Vec<String> = storage
        .list("_delta_log/")
        .await
        .unwrap()
        .into_iter()
        .map(|o| o.key)
        .filter(|k| k.ends_with(".json"))
        .collect();
    commits.sort();
    let vector = |action: &serde_json::Value| action.get("deletionVector").filter(|v| !v.is_null()).cloned();
    let mut live: BTreeMap<String, serde_json::Value> = BTreeMap::new();
    let mut ever = std::collections::BTreeSet::new();
    for key in commits {
        let (body, _) = storage.get(&key).await.unwrap().unwrap();
        for line in std::str::from_utf8(&body).unwrap().lines() {
            let action: serde_json::Value = serde_json::from_str(line).unwrap();
            if let Some(add) = action.get("add") {
                let path = add["path"].as_str().unwrap().to_string();
                ever.insert(path.clone());
                live.insert(path, add.clone());
            }
            if let Some(remove) = action.get("remove") {
                let path = remove["path"].as_str().unwrap();
                if live.get(path).is_some_and(|add| vector(add) == vector(remove)) {
                    live.remove(path);
                }
            }
        }
    }
    let mut rows = Vec::new();
    for (path, add) in live {
        let (bytes, _) = storage.get(&path).await.unwrap().expect("a live file exists");
        let deleted = match vector(&add) {
            None => roaring::RoaringTreemap::new(),
            Some(dv) => {
                assert_eq!(dv["storageType"], "u", "{dv}");
                let id = dv["pathOrInlineDv"].as_str().unwrap();
                let uuid = uuid::Uuid::from_slice(&z85::decode(id).unwrap()).unwrap();
                let (file, _) = storage
                    .get(&format!("deletion_vector_{uuid}.bin"))
                    .await
                    .unwrap()
                    .expect("the deletion vector file exists");
                let at = dv["offset"].as_u64().unwrap() as usize;
                let size = dv["sizeInBytes"].as_u64().unwrap() as usize;
                assert_eq!(
                    u32::from_be_bytes(file[at..at + 4].try_into().unwrap()) as usize,
                    size
                );
                let bitmap = &file[at + 4..at + 4 + size];
                assert_eq!(&bitmap[..4], &1681511377u32.to_le_bytes(), "the magic number");
                let deleted = roaring::RoaringTreemap::deserialize_from(&bitmap[4..]).unwrap();
                assert_eq!(deleted.len(), dv["cardinality"].as_u64().unwrap());
                deleted
            }
        };
        let partition = add["partitionValues"]
            .as_object()
            .unwrap()
            .values()
            .next()
            .cloned();
        let partition = partition.and_then(|v| v.as_str().map(str::to_string));
        for (position, mut row) in parquet_rows(&bytes).into_iter().enumerate() {
            if !deleted.contains(position as u64) {
                row.push(partition.clone());
                rows.push(row);
            }
        }
    }
    rows.sort();
    (rows, ever)
}

/// All rows of the table's own objects (those its state records), sorted: what the table
/// holds whatever else lies under its root.
pub async fn owned_rows(storage: &DynStorage) -> Vec<TableRow> {
    let mut rows = Vec::new();
    for key in recorded_keys(storage).await {
        let (bytes, _) = storage
            .get(&key)
            .await
            .unwrap()
            .expect("a recorded object exists");
        rows.extend(parquet_rows(&bytes));
    }
    rows.sort();
    rows
}

pub fn parquet_rows(bytes: &[u8]) -> Vec<TableRow> {
    let frame = ParquetReader::new(Cursor::new(bytes)).finish().unwrap();
    let names: Vec<String> = frame.get_column_names().iter().map(|n| n.to_string()).collect();
    let mut columns: Vec<Vec<Option<String>>> = Vec::new();
    for name in &names {
        let column = frame.column(name).unwrap();
        let values: Vec<Option<String>> = match column.dtype() {
            DataType::Date => {
                let days = column.cast(&DataType::Int32).unwrap();
                days.i32()
                    .unwrap()
                    .iter()
                    .map(|d| d.map(lakeload::dates::format_days))
                    .collect()
            }
            // A Delta file stores it UTC-adjusted.
            DataType::Datetime(TimeUnit::Microseconds, _) => {
                let micros = column.cast(&DataType::Int64).unwrap();
                micros
                    .i64()
                    .unwrap()
                    .iter()
                    .map(|v| v.map(|v| v.to_string()))
                    .collect()
            }
            DataType::String => column
                .str()
                .unwrap()
                .iter()
                .map(|v| v.map(str::to_string))
                .collect(),
            DataType::Int64 => column
                .i64()
                .unwrap()
                .iter()
                .map(|v| v.map(|v| v.to_string()))
                .collect(),
            other => panic!("column {name} has unexpected type {other:?}"),
        };
        columns.push(values);
    }
    (0..frame.height())
        .map(|r| columns.iter().map(|c| c[r].clone()).collect())
        .collect()
}

/// The column names of a table object.
pub fn parquet_schema(bytes: &[u8]) -> Vec<(String, String)> {
    let frame = ParquetReader::new(Cursor::new(bytes)).finish().unwrap();
    frame
        .columns()
        .iter()
        .map(|c| (c.name().to_string(), format!("{:?}", c.dtype())))
        .collect()
}

/// Builds an expected row from `|`-separated text (empty = NULL) plus lineage.
pub fn row(values: &str, file: &str, line: u64, modified_micros: i64) -> TableRow {
    let mut r: TableRow = values
        .split('|')
        .map(|v| (!v.is_empty()).then(|| v.to_string()))
        .collect();
    r.push(Some(file.to_string()));
    r.push(Some(line.to_string()));
    r.push(Some(modified_micros.to_string()));
    r
}

pub fn tempdir() -> tempfile::TempDir {
    tempfile::tempdir().unwrap()
}

pub fn path_str(p: &Path) -> String {
    p.display().to_string()
}

/// Source files made by `lakeload generate` in `dir/<folder>`, with `args` (files, rows, ...);
/// returns the folder.
pub fn generated_source(dir: &Path, folder: &str, args: &[&str]) -> std::path::PathBuf {
    let source = dir.join(folder);
    let out = Lakeload::new(dir)
        .args(["generate", &path_str(&source)])
        .args(args)
        .output();
    assert_exit(&out, 0);
    source
}

/// The lines a child process prints on one pipe, read as they come.
pub struct Lines {
    incoming: std::sync::mpsc::Receiver<String>,
    /// Every line read so far.
    pub seen: Vec<String>,
}

impl Lines {
    pub fn read(pipe: impl std::io::Read + Send + 'static) -> Lines {
        let (tx, incoming) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(pipe).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        Lines {
            incoming,
            seen: Vec::new(),
        }
    }

    /// Waits until a line contains `needle`; panics after `timeout` or if the pipe closes
    /// first.
    #[track_caller]
    pub fn wait_for(&mut self, needle: &str, timeout: Duration) {
        assert!(
            self.reaches(needle, timeout),
            "no line with {needle:?}: the pipe closed; so far:\n{}",
            self.seen.join("\n")
        );
    }

    /// Whether a line contains `needle` before the pipe closes (the process ended first);
    /// panics after `timeout`.
    #[track_caller]
    pub fn reaches(&mut self, needle: &str, timeout: Duration) -> bool {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.incoming.recv_timeout(left) {
                Ok(line) => {
                    let found = line.contains(needle);
                    self.seen.push(line);
                    if found {
                        return true;
                    }
                }
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => return false,
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => panic!(
                    "no line with {needle:?} within {timeout:?}, and the pipe is still open; so far:\n{}",
                    self.seen.join("\n")
                ),
            }
        }
    }

    /// Reads the lines still to come, until the pipe closes or none comes for `quiet`.
    pub fn rest(&mut self, quiet: Duration) {
        while let Ok(line) = self.incoming.recv_timeout(quiet) {
            self.seen.push(line);
        }
    }

    pub fn text(&self) -> String {
        self.seen.join("\n")
    }
}

/// A worker process started in the background, its stderr watched line by line.
pub struct Running {
    child: std::process::Child,
    stderr: Lines,
    /// Taken by [`Running::finish`].
    stdout: Option<std::thread::JoinHandle<String>>,
}

impl Running {
    pub fn spawn(cmd: Lakeload) -> Running {
        let mut child = cmd
            .command()
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("start lakeload");
        let stderr = Lines::read(child.stderr.take().unwrap());
        let mut out = child.stdout.take().unwrap();
        let stdout = std::thread::spawn(move || {
            let mut text = String::new();
            let _ = std::io::Read::read_to_string(&mut out, &mut text);
            text
        });
        Running {
            child,
            stderr,
            stdout: Some(stdout),
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits until a stderr line contains `needle`; panics after `timeout` or if the process
    /// closes stderr first.
    #[track_caller]
    pub fn wait_for(&mut self, needle: &str, timeout: Duration) {
        self.stderr.wait_for(needle, timeout)
    }

    /// Whether stderr shows `needle` before the worker ends; panics after `timeout`.
    #[track_caller]
    pub fn reaches(&mut self, needle: &str, timeout: Duration) -> bool {
        self.stderr.reaches(needle, timeout)
    }

    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([&format!("-{signal}"), &self.pid().to_string()])
            .status()
            .unwrap();
        assert!(status.success(), "kill -{signal}");
    }

    /// Continues a process a `stop` fault stopped. The worker prints its marker line just
    /// before it stops itself, so a SIGCONT sent on seeing the line can arrive before the stop
    /// and be lost, leaving the process stopped for good: wait for the kernel to report it
    /// stopped first.
    #[track_caller]
    pub fn resume(&self) {
        let stat = format!("/proc/{}/stat", self.pid());
        wait_until(
            "the worker to stop at its pause point",
            Duration::from_secs(60),
            || {
                let text = std::fs::read_to_string(&stat).unwrap_or_default();
                // The state is the first field after the command name, which is in parentheses.
                text.rsplit_once(") ").and_then(|(_, rest)| rest.chars().next()) == Some('T')
            },
        );
        self.signal("CONT");
    }

    /// Waits for the exit; returns the exit code, stdout and the whole stderr. A worker still
    /// running after ten minutes is killed and the test fails with its stderr, rather than
    /// holding the suite until CI's time runs out.
    pub fn finish(mut self) -> (Option<i32>, String, String) {
        let status = wait_at_most(&mut self.child, RUN_DEADLINE);
        let Some(status) = status else {
            self.stderr.rest(Duration::from_secs(1));
            panic!(
                "the worker was still running after {RUN_DEADLINE:?}; stderr:\n{}",
                self.stderr.text()
            );
        };
        let stdout = self.stdout.take().map(|s| s.join().unwrap()).unwrap_or_default();
        // The reader thread ends at EOF, after the process exits.
        self.stderr.rest(Duration::from_secs(5));
        (status.code(), stdout, self.stderr.text())
    }
}

/// A test that fails half way leaves no worker behind: not one stopped at a pause point, nor
/// one waiting at one while it renews its table's lock.
impl Drop for Running {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Polls `check` until it holds; fails the test naming `what` after `timeout`.
#[track_caller]
pub fn wait_until(what: &str, timeout: Duration, mut check: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + timeout;
    while !check() {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// How long a test lets one worker process run: far beyond any test's run, so that only a
/// hang reaches it, and far below CI's time, so that a hang fails one test instead of the
/// whole suite.
const RUN_DEADLINE: Duration = Duration::from_secs(600);

/// The child's exit status, or None (the child killed) if it is still running after `limit`.
pub fn wait_at_most(child: &mut std::process::Child, limit: Duration) -> Option<std::process::ExitStatus> {
    let deadline = std::time::Instant::now() + limit;
    while std::time::Instant::now() < deadline {
        if let Some(status) = child.try_wait().expect("wait for lakeload") {
            return Some(status);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
    None
}
