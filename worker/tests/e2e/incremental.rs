//! SPEC §4's invariant: any sequence of incremental runs over append-only sources gives the rows
//! (all columns) of one full run, also when a run is killed at any point and a new run follows.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use lakeload::config::{Config, Mode, RawConfig};
use lakeload::run::RunReport;
use lakeload::target::Target;

use crate::common::*;

pub(crate) fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap()
    })
}

/// Where a case's files and tables live.
#[derive(Clone)]
pub(crate) enum Place {
    Local(std::path::PathBuf),
    S3 { bucket: String, prefix: String },
}

impl Place {
    pub(crate) fn url(&self, name: &str) -> String {
        match self {
            Place::Local(dir) => dir.join(name).display().to_string(),
            Place::S3 { bucket, prefix } => format!("s3://{bucket}/{prefix}/{name}"),
        }
    }

    pub(crate) fn s3(&self) -> Option<&'static S3Server> {
        matches!(self, Place::S3 { .. }).then(S3Server::shared)
    }

    /// Adds a source file; `arrival` sets a local file's modification time (S3 stamps its own).
    pub(crate) fn add_source(&self, key: &str, bytes: &[u8], arrival: u64) {
        match self {
            Place::Local(dir) => write_file(&dir.join("src"), key, bytes, arrival),
            Place::S3 { bucket, prefix } => {
                S3Server::shared().put(bucket, &format!("{prefix}/src/{key}"), bytes)
            }
        }
    }

    pub(crate) fn config(&self, table: &str, mode: Mode, order: &str) -> Config {
        self.config_with(table, mode, order, &[])
    }

    /// [`Place::config`] with more keys set.
    pub(crate) fn config_with(
        &self,
        table: &str,
        mode: Mode,
        order: &str,
        extra: &[(&str, String)],
    ) -> Config {
        let mut raw = RawConfig::default();
        raw.set("source.url", self.url("src"));
        raw.set("target.url", self.url(table));
        raw.set("run.mode", mode.to_string());
        raw.set("run.order", order);
        raw.set("run.max_reject_ratio", "1");
        raw.set("run.threads", "2");
        if let Some(s3) = self.s3() {
            raw.set("aws.endpoint_url", s3.endpoint.clone());
            raw.set("aws.access_key_id", "testing");
            raw.set("aws.secret_access_key", "testing");
            raw.set("aws.region", "us-east-1");
        }
        for (key, value) in extra {
            raw.set(key, value.clone());
        }
        Config::from_raw(&raw).unwrap()
    }

    pub(crate) fn env(&self) -> Vec<(String, String)> {
        self.s3().map(S3Server::env).unwrap_or_default()
    }

    pub(crate) async fn rows(&self, table: &str) -> Vec<TableRow> {
        table_rows(&open_storage(&self.url(table), self.s3()).await).await
    }

    pub(crate) fn rows_blocking(&self, table: &str) -> Vec<TableRow> {
        runtime().block_on(self.rows(table))
    }
}

pub(crate) fn check_accounting(report: &RunReport) {
    let summary = report.summary.as_ref().expect("summary");
    assert!(
        report.result.is_ok(),
        "run failed: {:?}",
        report.result.as_ref().err().map(ToString::to_string)
    );
    assert!(
        summary.counts.balances(),
        "accounting identity: {:?}",
        summary.counts
    );
}

// ---------------------------------------------------------------------------------------------
// Crash injection: SIGKILL a real worker at chosen and at random points, then run again.

/// Runs the binary; if `pause` is set, waits for it to pause there and SIGKILLs it. Returns
/// false if the run ended before reaching the point.
fn run_and_kill(
    place: &Place,
    table: &str,
    mode: &str,
    pause: Option<&str>,
    kill_after: Option<Duration>,
) -> bool {
    let mut cmd = Lakeload::new(std::path::Path::new("/"))
        .envs(place.env())
        .env("LAKELOAD_SOURCE_URL", place.url("src"))
        .env("LAKELOAD_TARGET_URL", place.url(table))
        .env("LAKELOAD_RUN_MAX_REJECT_RATIO", "1")
        .args(["run", "--mode", mode]);
    if let Some(point) = pause {
        cmd = cmd.env(lakeload::faults::ENV, point);
    }
    // Dropping a `Running` SIGKILLs the worker if it still runs.
    let mut run = Running::spawn(cmd);
    if let Some(delay) = kill_after {
        std::thread::sleep(delay);
        return true;
    }
    if pause.is_some() {
        // At the marker (then the kill), or the run ended first.
        return run.reaches(lakeload::faults::MARKER, Duration::from_secs(300));
    }
    let (code, _, stderr) = run.finish();
    assert_eq!(code, Some(0), "run failed: {stderr}");
    true
}

fn unlock(place: &Place, table: &str) {
    let out = Lakeload::new(std::path::Path::new("/"))
        .envs(place.env())
        .env("LAKELOAD_SOURCE_URL", place.url("src"))
        .env("LAKELOAD_TARGET_URL", place.url(table))
        .args(["unlock", "--force"])
        .output();
    assert_exit(&out, 0);
}

fn crash_then_recover(place_for: impl Fn(usize) -> Place) {
    // Two batches of generated files: duplicates, late rows for earlier dates, bad lines.
    let staging = tempdir();
    for first in [0, 4] {
        let out = Lakeload::new(staging.path())
            .args([
                "generate",
                "batch",
                "--files",
                "4",
                "--rows",
                "2000",
                "--files-per-day",
                "1",
            ])
            .args(["--bad-ratio", "0.01", "--first-file", &first.to_string()])
            .output();
        assert_exit(&out, 0);
    }
    let root = staging.path().join("batch");
    let mut files: Vec<(String, Vec<u8>)> = lakeload_testkit::files_under(&root)
        .into_iter()
        .map(|p| {
            (
                p.strip_prefix(&root).unwrap().display().to_string(),
                std::fs::read(&p).unwrap(),
            )
        })
        .collect();
    files.sort();
    assert_eq!(files.len(), 8);

    // Each scenario: a table loaded with the first batch, the second batch arrives, a run is
    // SIGKILLed at a point, the lock is cleared as an operator would, and a new run converges
    // to what one full run over all files gives.
    let scenarios: Vec<(&str, Option<&str>, Option<Duration>)> = vec![
        ("incremental", Some("before_date_write:1"), None),
        ("incremental", Some("before_date_write:3"), None),
        ("incremental", Some("after_date_write:1"), None),
        ("incremental", Some("after_date_write:4"), None),
        ("incremental", Some("before_state_commit:1"), None),
        ("full", Some("after_date_write:2"), None),
        ("full", Some("before_state_commit:1"), None),
        ("incremental", None, Some(Duration::from_millis(40))),
        ("incremental", None, Some(Duration::from_millis(120))),
        ("full", None, Some(Duration::from_millis(80))),
    ];
    for (n, (mode, pause, delay)) in scenarios.into_iter().enumerate() {
        let place = place_for(n);
        for (i, (key, bytes)) in files.iter().enumerate().take(4) {
            place.add_source(key, bytes, 1_800_000_000 + i as u64);
        }
        assert!(run_and_kill(&place, "table", "incremental", None, None));
        for (i, (key, bytes)) in files.iter().enumerate().skip(4) {
            place.add_source(key, bytes, 1_800_000_000 + i as u64);
        }
        let reached = run_and_kill(&place, "table", mode, pause, delay);
        assert!(reached, "{mode} run ended before reaching {pause:?}");
        unlock(&place, "table");
        assert!(run_and_kill(&place, "table", "incremental", None, None));
        assert!(run_and_kill(&place, "full", "full", None, None));
        let (got, expected) =
            runtime().block_on(async { (place.rows("table").await, place.rows("full").await) });
        assert!(expected.len() > 10_000, "the scenario loads real volume");
        assert_eq!(
            got.len(),
            expected.len(),
            "{mode} killed at {pause:?}/{delay:?}: row count"
        );
        assert!(
            got == expected,
            "{mode} killed at {pause:?}/{delay:?}: rows differ"
        );
    }
}

#[test]
fn killed_runs_converge_local() {
    let dir = tempdir();
    crash_then_recover(|n| Place::Local(dir.path().join(format!("scenario{n}"))));
}

#[test]
fn killed_runs_converge_s3() {
    let bucket = S3Server::shared().bucket("crash");
    crash_then_recover(|n| Place::S3 {
        bucket: bucket.clone(),
        prefix: format!("scenario{n}"),
    });
}

// ---------------------------------------------------------------------------------------------
// Changed and deleted source files (SPEC §4), plan vs run, and touching 2 of 100 dates.

fn run_cli(
    dir: &std::path::Path,
    source: &std::path::Path,
    table: &std::path::Path,
    args: &[&str],
) -> std::process::Output {
    Lakeload::new(dir)
        .env("LAKELOAD_SOURCE_URL", source)
        .env("LAKELOAD_TARGET_URL", table)
        .env("LAKELOAD_RUN_MAX_REJECT_RATIO", "1")
        .args(args)
        .output()
}

#[tokio::test(flavor = "multi_thread")]
async fn changed_and_deleted_files() {
    let dir = tempdir();
    let (source, table) = (dir.path().join("in"), dir.path().join("out"));
    write_file(
        &source,
        "a.gz",
        &gzip(b"k1|old|||||2024-01-01|x\nk2|only-old|||||2024-01-01|x\n"),
        1_000,
    );
    write_file(&source, "b.gz", &gzip(b"k9|b|||||2024-01-02|x\n"), 1_000);
    assert_exit(&run_cli(dir.path(), &source, &table, &["run"]), 0);

    // a.gz is rewritten (new size and mtime): reprocessed by default, with a warning naming it.
    write_file(
        &source,
        "a.gz",
        &gzip(b"k1|new-version|||||2024-01-01|x\n"),
        2_000,
    );
    let out = run_cli(dir.path(), &source, &table, &["run", "--json"]);
    assert_exit(&out, 0);
    assert!(
        stderr(&out).contains("changed") && stderr(&out).contains("a.gz"),
        "{}",
        stderr(&out)
    );
    let summary = summary_json(&out);
    assert_eq!(summary["files"], serde_json::json!(["a.gz"]));
    assert_eq!(summary["rows_updated"], 1);
    let storage = open_storage(&path_str(&table), None).await;
    let values: Vec<Option<String>> = table_rows(&storage)
        .await
        .into_iter()
        .map(|r| r[1].clone())
        .collect();
    // The new version wins; the old version's other rows stay (incremental merges, never drops).
    assert_eq!(
        values,
        [
            Some("new-version".into()),
            Some("only-old".into()),
            Some("b".into())
        ]
    );

    // ignore: not read; fail: exit 1 naming the file, nothing changed.
    write_file(&source, "a.gz", &gzip(b"k1|third|||||2024-01-01|x\n"), 3_000);
    let out = run_cli(
        dir.path(),
        &source,
        &table,
        &["run", "--json", "--set", "run.on_changed_file=ignore"],
    );
    assert_exit(&out, 0);
    assert_eq!(summary_json(&out)["files"], serde_json::json!([]));
    let out = run_cli(
        dir.path(),
        &source,
        &table,
        &["run", "--set", "run.on_changed_file=fail"],
    );
    assert_exit(&out, 1);
    assert!(
        stderr(&out).contains("a.gz") && stderr(&out).contains("run.on_changed_file"),
        "{}",
        stderr(&out)
    );

    // A deleted source file keeps its rows in incremental mode; full removes them.
    std::fs::remove_file(source.join("b.gz")).unwrap();
    assert_exit(
        &run_cli(
            dir.path(),
            &source,
            &table,
            &["run", "--set", "run.on_changed_file=ignore"],
        ),
        0,
    );
    assert!(
        table_rows(&storage)
            .await
            .iter()
            .any(|r| r[1].as_deref() == Some("b"))
    );
    assert_exit(
        &run_cli(dir.path(), &source, &table, &["run", "--mode", "full"]),
        0,
    );
    let values: Vec<Option<String>> = table_rows(&storage)
        .await
        .into_iter()
        .map(|r| r[1].clone())
        .collect();
    assert_eq!(values, [Some("third".into())]);
}

#[tokio::test(flavor = "multi_thread")]
async fn plan_predicts_the_run_and_changes_nothing() {
    let dir = tempdir();
    let (source, table) = (dir.path().join("in"), dir.path().join("out"));
    write_file(
        &source,
        "old.gz",
        &gzip(b"k1|v|||||2024-01-01|x\nk2|v|||||2024-01-02|x\n"),
        1_000,
    );
    assert_exit(&run_cli(dir.path(), &source, &table, &["run"]), 0);
    write_file(
        &source,
        "new.gz",
        &gzip(b"k3|v|||||2024-01-02|x\nk4|v|||||2024-01-05|x\n\n"),
        2_000,
    );

    let storage = open_storage(&path_str(&table), None).await;
    let before = storage.list("").await.unwrap();
    let out = run_cli(dir.path(), &source, &table, &["plan", "--json"]);
    assert_exit(&out, 0);
    let plan = summary_json(&out);
    assert_eq!(storage.list("").await.unwrap(), before, "plan writes nothing");
    assert_eq!(
        (plan["files_new"].as_u64(), plan["files_unchanged"].as_u64()),
        (Some(1), Some(1))
    );
    assert_eq!(plan["rows_to_read"], 3);
    assert!(
        plan["bytes_to_rewrite"].as_u64().unwrap() > 0,
        "2024-01-02 exists and is rewritten"
    );

    let out = run_cli(dir.path(), &source, &table, &["run", "--json"]);
    assert_exit(&out, 0);
    let run = summary_json(&out);
    assert_eq!(plan["dates_to_write"], run["dates_written"]);
    assert_eq!(
        plan["dates_to_write"],
        serde_json::json!(["2024-01-02", "2024-01-05"])
    );
    let planned: Vec<&str> = plan["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["key"].as_str().unwrap())
        .collect();
    assert_eq!(serde_json::json!(planned), run["files"]);
    assert_eq!(plan["rows_to_read"], run["rows_read"]);

    let text = run_cli(dir.path(), &source, &table, &["plan"]);
    assert_exit(&text, 0);
    assert!(
        stdout(&text).contains("0 new, 0 changed, 2 unchanged"),
        "{}",
        stdout(&text)
    );
}

/// Storage that records every GET and PUT key; the storage underneath is real.
#[derive(Debug)]
struct Recording {
    inner: lakeload::storage::DynStorage,
    gets: std::sync::Mutex<Vec<String>>,
    puts: std::sync::Mutex<Vec<String>>,
}

#[async_trait::async_trait]
impl lakeload::storage::Storage for Recording {
    fn root(&self) -> &lakeload::location::Location {
        self.inner.root()
    }
    async fn list(
        &self,
        prefix: &str,
    ) -> lakeload::storage::StorageResult<Vec<lakeload::storage::ObjectMeta>> {
        self.inner.list(prefix).await
    }
    async fn head(
        &self,
        key: &str,
    ) -> lakeload::storage::StorageResult<Option<lakeload::storage::ObjectMeta>> {
        self.inner.head(key).await
    }
    async fn get(
        &self,
        key: &str,
    ) -> lakeload::storage::StorageResult<Option<(bytes::Bytes, lakeload::storage::ObjectMeta)>> {
        self.gets.lock().unwrap().push(key.to_string());
        self.inner.get(key).await
    }
    async fn open_at(
        &self,
        key: &str,
        offset: u64,
        etag: Option<&str>,
    ) -> lakeload::storage::StorageResult<lakeload::storage::ObjectReader> {
        self.gets.lock().unwrap().push(key.to_string());
        self.inner.open_at(key, offset, etag).await
    }
    async fn put(&self, key: &str, body: bytes::Bytes) -> lakeload::storage::StorageResult<()> {
        self.puts.lock().unwrap().push(key.to_string());
        self.inner.put(key, body).await
    }
    async fn put_if(
        &self,
        key: &str,
        body: bytes::Bytes,
        condition: lakeload::storage::PutCondition,
    ) -> lakeload::storage::StorageResult<String> {
        self.puts.lock().unwrap().push(key.to_string());
        self.inner.put_if(key, body, condition).await
    }
    async fn delete(&self, key: &str) -> lakeload::storage::StorageResult<()> {
        self.puts.lock().unwrap().push(key.to_string());
        self.inner.delete(key).await
    }
    async fn delete_if(&self, key: &str, etag: &str) -> lakeload::storage::StorageResult<()> {
        self.puts.lock().unwrap().push(key.to_string());
        self.inner.delete_if(key, etag).await
    }
    fn store_now(&self) -> Option<chrono::DateTime<chrono::Utc>> {
        self.inner.store_now()
    }
    async fn settle(&self) {
        self.inner.settle().await
    }
}

#[test]
fn touching_2_of_100_dates_reads_and_writes_only_those() {
    for s3 in [false, true] {
        let dir = tempdir();
        let place = if s3 {
            Place::S3 {
                bucket: S3Server::shared().bucket("hundred"),
                prefix: "t".into(),
            }
        } else {
            Place::Local(dir.path().to_path_buf())
        };
        let start = chrono::NaiveDate::from_ymd_opt(2024, 1, 1).unwrap();
        let day = |n: u64| (start + chrono::Days::new(n)).format("%Y-%m-%d").to_string();
        let mut text = String::new();
        for n in 0..100 {
            text += &format!("k|v{n}|||||{}|x\n", day(n));
        }
        place.add_source("history.gz", &gzip(text.as_bytes()), 1_000);
        runtime().block_on(async {
            let config = place.config("table", Mode::Incremental, "arrival");
            check_accounting(&lakeload::run::run(&config, false).await);
            assert_eq!(place.rows("table").await.len(), 100);

            place.add_source(
                "late.gz",
                &gzip(format!("k|late|||||{}|x\nk|new|||||{}|x\n", day(10), day(70)).as_bytes()),
                2_000,
            );
            let source = open_storage(&place.url("src"), place.s3()).await;
            let recording = Arc::new(Recording {
                inner: open_storage(&place.url("table"), place.s3()).await,
                gets: Default::default(),
                puts: Default::default(),
            });
            let target = Target::new(&config, source, recording.clone());
            let report = lakeload::run::run_on(&config, &target, false).await;
            check_accounting(&report);
            let data = |keys: &std::sync::Mutex<Vec<String>>| -> Vec<String> {
                let mut k: Vec<String> = keys
                    .lock()
                    .unwrap()
                    .iter()
                    .filter(|k| k.ends_with(".parquet"))
                    .cloned()
                    .collect();
                k.sort();
                k
            };
            let touched = vec![
                format!("year=2024/month=01/day=11/{}.snappy.parquet", day(10)),
                format!("year=2024/month=03/day=11/{}.snappy.parquet", day(70)),
            ];
            assert_eq!(
                data(&recording.gets),
                touched,
                "only the two touched dates are read"
            );
            assert_eq!(
                data(&recording.puts),
                touched,
                "only the two touched dates are written"
            );
            assert_eq!(report.summary.as_ref().unwrap().counts.rows_updated, 2);
            let rows = place.rows("table").await;
            assert_eq!(rows.len(), 100);
            assert!(rows.iter().any(|r| r[1].as_deref() == Some("late")));
        });
    }
}

/// README "Output rows": each date's rows are stored in lineage order (file key, line). A date
/// merged whole in an incremental run re-encodes its stored rows from their decoded columns
/// beside the new rows that win; the object must be the one a full run writes from the same
/// files, byte for byte — also when a new file's name sorts before, between and after the
/// stored ones, so new and stored rows interleave. With a tiny `run.memory_limit` the date
/// goes through merge units instead: same rows.
#[test]
fn a_date_merged_whole_is_the_object_a_full_run_writes() {
    for memory_limit in [None, Some("1KiB")] {
        let dir = tempdir();
        let place = Place::Local(dir.path().to_path_buf());
        let settings: Vec<(&str, String)> = memory_limit
            .map(|m| vec![("run.memory_limit", m.to_string())])
            .unwrap_or_default();
        let lines = |keys: &[(&str, &str)], day: &str| -> Vec<u8> {
            let text: String = keys
                .iter()
                .map(|(k, v)| format!("{k}|{v}|||||{day}|s\n"))
                .collect();
            gzip(text.as_bytes())
        };
        place.add_source(
            "m.gz",
            &lines(&[("k1", "m"), ("k2", "m"), ("k3", "m")], "2024-03-01"),
            1_000,
        );
        place.add_source(
            "t.gz",
            &lines(&[("k4", "t"), ("k5", "t"), ("k1", "t")], "2024-03-01"),
            1_000,
        );
        runtime().block_on(async {
            let incremental = place.config_with("inc", Mode::Incremental, "name", &settings);
            check_accounting(&lakeload::run::run(&incremental, false).await);
            // Before, between and after the stored files, updating and adding keys.
            place.add_source("a.gz", &lines(&[("k2", "a"), ("k6", "a")], "2024-03-01"), 2_000);
            place.add_source("p.gz", &lines(&[("k7", "p"), ("k4", "p")], "2024-03-01"), 2_000);
            place.add_source("z.gz", &lines(&[("k3", "z"), ("k8", "z")], "2024-03-01"), 2_000);
            let report = lakeload::run::run(&incremental, false).await;
            check_accounting(&report);
            let counts = &report.summary.as_ref().unwrap().counts;
            // By name, a.gz and p.gz come before the stored rows' files: their k2 and k4 lose
            // to the stored rows. z.gz's k3 replaces one; k6, k7 and k8 are new.
            assert_eq!(
                (counts.rows_updated, counts.rows_inserted, counts.rows_superseded),
                (1, 3, 2)
            );
            let full = place.config_with("full", Mode::Full, "name", &settings);
            check_accounting(&lakeload::run::run(&full, false).await);

            let key = "year=2024/month=03/day=01/2024-03-01.snappy.parquet";
            let object = |table: &str| std::fs::read(dir.path().join(table).join(key)).unwrap();
            let (inc, full) = (object("inc"), object("full"));
            let in_order = |rows: &[TableRow]| -> Vec<(String, String)> {
                rows.iter()
                    .map(|r| (r[0].clone().unwrap(), r[8].clone().unwrap()))
                    .collect()
            };
            let stored = parquet_rows(&inc);
            let expected = [
                ("k6", "a.gz"),
                ("k2", "m.gz"),
                ("k7", "p.gz"),
                ("k4", "t.gz"),
                ("k5", "t.gz"),
                ("k1", "t.gz"),
                ("k3", "z.gz"),
                ("k8", "z.gz"),
            ];
            let expected: Vec<(String, String)> = expected
                .iter()
                .map(|(k, f)| (k.to_string(), f.to_string()))
                .collect();
            match memory_limit {
                None => {
                    assert_eq!(in_order(&stored), expected, "rows in lineage order");
                    assert!(
                        inc == full,
                        "the incremental object equals the full run's, byte for byte"
                    );
                }
                Some(_) => {
                    let mut rows = in_order(&stored);
                    rows.sort_by(|a, b| (&a.1, &a.0).cmp(&(&b.1, &b.0)));
                    let mut want = expected.clone();
                    want.sort_by(|a, b| (&a.1, &a.0).cmp(&(&b.1, &b.0)));
                    assert_eq!(rows, want);
                    assert_eq!(place.rows("inc").await, place.rows("full").await);
                }
            }
        });
    }
}
