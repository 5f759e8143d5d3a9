//! Full runs of the built binary on hand-written inputs that cover every rule of SPEC §1–2,
//! on local folders and on S3 (moto). Expected rows are written out by hand below.

use std::collections::BTreeSet;
use std::io::Read;

use crate::common::*;

/// Arrival times (file modification times) of the local inputs, in seconds since the epoch.
/// `b/early.gz` arrives before `a/late.gz`, so arrival order and name order disagree.
const EARLY: u64 = 1_767_225_600; // 2026-01-01T00:00:00Z
const LATE: u64 = EARLY + 86_400;
const MULTI: u64 = EARLY + 2 * 86_400;
const DEEP: u64 = EARLY + 3 * 86_400;

fn micros(secs: u64) -> i64 {
    secs as i64 * 1_000_000
}

/// (key, bytes, arrival) of every input file.
pub fn inputs() -> Vec<(&'static str, Vec<u8>, u64)> {
    let early = b"k1|v-early|x|y|z|2024-01-05|2024-01-05|s1\n\
\n\
k2|only-early|||z|2024-01-05 10:11:12|2024-01-06|s2\n\
k3|dup-within-1|a|b|c||2024-01-06|s3\n\
k3|dup-within-2|a|b|c||2024-01-06|s3\n\
k4|too|few|fields\n\
k5|bad|a|b|c|2024-02-30|2024-01-05|s5\n\
k6|bad|a|b|c|2024-01-05||s6\n\
|null-key|a|b|c|2024-01-05|2024-01-05|\n"
        .to_vec();
    let mut late = b"k1|v-late|x|y|z|2024-01-05T08:00:00Z|2024-01-05T23:59:59.123+05:30|s1\n\
|null-key-later|a|b|c|2024-01-05|2024-01-05|\n\
k7|\"quoted\"|a|b|c|2024-01-07T01:02:03.5-0800|2024-01-07|s7\n"
        .to_vec();
    late.extend_from_slice(b"k8|caf\xe9|a|b|c|2024-01-07|2024-01-07|s8\n");
    late.extend_from_slice(
        b"k9|  spaced  |a|b|c| 2024-01-08 | 2024-01-08 |s9\n\
k10|tz-z|a|b|c|2024-01-08T00:00:00Z|2024-01-08 12:00:00|s10\n\
k11|bad-time|a|b|c|2024-01-08T25:00:00|2024-01-08|s11\n\
k12|too|many|fields|a|b|2024-01-08|2024-01-08|s12|extra\n",
    );
    let multi = multi_member_gzip(&[
        b"m1|crlf|a|b|c|2024-01-09|2024-01-09|s1\r\n\r\n",
        b"m2|no-newline|a|b|c|2024-01-09|2024-01-09|s2",
    ]);
    let deep =
        b"k1|other-date|x|y|z|2024-01-04|2024-01-04|s1\nk13|leap|a|b|c|2024-02-29|2024-02-29|s13\n".to_vec();
    vec![
        ("b/early.gz", gzip(&early), EARLY),
        ("a/late.gz", gzip(&late), LATE),
        ("c/multi.gz", multi, MULTI),
        ("d/e/f/deep.gz", gzip(&deep), DEEP),
        // Not matched by the default pattern `*.gz`.
        ("notes.txt", b"not a source file".to_vec(), DEEP),
    ]
}

/// The rows both orders agree on; `modified(key)` gives each file's arrival in microseconds.
fn common_rows(modified: &dyn Fn(&str) -> i64) -> Vec<TableRow> {
    let m = |k: &str| modified(k);
    vec![
        row(
            "k7|\"quoted\"|a|b|c|2024-01-07|2024-01-07|s7",
            "a/late.gz",
            3,
            m("a/late.gz"),
        ),
        row(
            "k9|  spaced  |a|b|c|2024-01-08|2024-01-08|s9",
            "a/late.gz",
            5,
            m("a/late.gz"),
        ),
        row(
            "k10|tz-z|a|b|c|2024-01-08|2024-01-08|s10",
            "a/late.gz",
            6,
            m("a/late.gz"),
        ),
        row(
            "k2|only-early|||z|2024-01-05|2024-01-06|s2",
            "b/early.gz",
            3,
            m("b/early.gz"),
        ),
        row(
            "k3|dup-within-2|a|b|c||2024-01-06|s3",
            "b/early.gz",
            5,
            m("b/early.gz"),
        ),
        row(
            "m1|crlf|a|b|c|2024-01-09|2024-01-09|s1",
            "c/multi.gz",
            1,
            m("c/multi.gz"),
        ),
        row(
            "m2|no-newline|a|b|c|2024-01-09|2024-01-09|s2",
            "c/multi.gz",
            3,
            m("c/multi.gz"),
        ),
        row(
            "k1|other-date|x|y|z|2024-01-04|2024-01-04|s1",
            "d/e/f/deep.gz",
            1,
            m("d/e/f/deep.gz"),
        ),
        row(
            "k13|leap|a|b|c|2024-02-29|2024-02-29|s13",
            "d/e/f/deep.gz",
            2,
            m("d/e/f/deep.gz"),
        ),
    ]
}

/// Under `run.order = arrival` the later-arriving `a/late.gz` wins both cross-file duplicates.
pub fn expected_arrival(modified: &dyn Fn(&str) -> i64) -> Vec<TableRow> {
    let mut rows = common_rows(modified);
    rows.push(row(
        "k1|v-late|x|y|z|2024-01-05|2024-01-05|s1",
        "a/late.gz",
        1,
        modified("a/late.gz"),
    ));
    rows.push(row(
        "|null-key-later|a|b|c|2024-01-05|2024-01-05|",
        "a/late.gz",
        2,
        modified("a/late.gz"),
    ));
    rows.sort();
    rows
}

/// Under `run.order = name`, `b/early.gz` sorts after `a/late.gz` and wins.
fn expected_name(modified: &dyn Fn(&str) -> i64) -> Vec<TableRow> {
    let mut rows = common_rows(modified);
    rows.push(row(
        "k1|v-early|x|y|z|2024-01-05|2024-01-05|s1",
        "b/early.gz",
        1,
        modified("b/early.gz"),
    ));
    rows.push(row(
        "|null-key|a|b|c|2024-01-05|2024-01-05|",
        "b/early.gz",
        9,
        modified("b/early.gz"),
    ));
    rows.sort();
    rows
}

fn local_modified(key: &str) -> i64 {
    micros(inputs().into_iter().find(|(k, _, _)| *k == key).unwrap().2)
}

pub fn write_local_inputs(dir: &std::path::Path) {
    for (key, bytes, arrival) in inputs() {
        write_file(dir, key, &bytes, arrival);
    }
}

fn check_summary(summary: &serde_json::Value) {
    let n = |k: &str| {
        summary[k]
            .as_u64()
            .unwrap_or_else(|| panic!("summary.{k}: {summary}"))
    };
    assert_eq!(n("rows_read"), 22, "9 + 8 + 3 + 2 lines");
    assert_eq!(n("rows_blank"), 2);
    assert_eq!(n("rows_rejected"), 6);
    assert_eq!(n("rows_inserted"), 11);
    assert_eq!(n("rows_updated"), 0);
    assert_eq!(n("rows_superseded"), 3);
    assert_eq!(
        n("rows_read"),
        n("rows_blank") + n("rows_rejected") + n("rows_inserted") + n("rows_updated") + n("rows_superseded")
    );
    assert_eq!(summary["exit_code"], 0);
    assert_eq!(summary["mode"], "full");
    let files: BTreeSet<&str> = summary["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f.as_str().unwrap())
        .collect();
    assert_eq!(
        files,
        BTreeSet::from(["a/late.gz", "b/early.gz", "c/multi.gz", "d/e/f/deep.gz"])
    );
    let dates: Vec<&str> = summary["dates_written"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d.as_str().unwrap())
        .collect();
    assert_eq!(
        dates,
        [
            "2024-01-04",
            "2024-01-05",
            "2024-01-06",
            "2024-01-07",
            "2024-01-08",
            "2024-01-09",
            "2024-02-29"
        ]
    );
}

fn read_rejects(bytes: &[u8]) -> Vec<serde_json::Value> {
    let mut text = String::new();
    flate2::read::MultiGzDecoder::new(bytes)
        .read_to_string(&mut text)
        .unwrap();
    let mut records: Vec<serde_json::Value> =
        text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    records.sort_by_key(|r| {
        (
            r["file"].as_str().unwrap().to_string(),
            r["line"].as_u64().unwrap(),
        )
    });
    records
}

fn check_rejects(records: &[serde_json::Value]) {
    let got: Vec<(String, u64, String)> = records
        .iter()
        .map(|r| {
            (
                r["file"].as_str().unwrap().into(),
                r["line"].as_u64().unwrap(),
                r["reason"].as_str().unwrap().into(),
            )
        })
        .collect();
    let want: Vec<(String, u64, String)> = [
        ("a/late.gz", 4, "encoding"),
        ("a/late.gz", 7, "bad_date"),
        ("a/late.gz", 8, "field_count"),
        ("b/early.gz", 6, "field_count"),
        ("b/early.gz", 7, "bad_date"),
        ("b/early.gz", 8, "missing_partition"),
    ]
    .iter()
    .map(|(f, l, r)| (f.to_string(), *l, r.to_string()))
    .collect();
    assert_eq!(got, want);
    assert_eq!(records[0]["raw"], "k8|caf\\xE9|a|b|c|2024-01-07|2024-01-07|s8");
    assert_eq!(records[3]["raw"], "k4|too|few|fields");
}

#[tokio::test(flavor = "multi_thread")]
async fn full_run_on_local_folders_matches_hand_derived_rows() {
    let dir = tempdir();
    let (source, table) = (dir.path().join("in"), dir.path().join("out"));
    write_local_inputs(&source);
    let out = Lakeload::new(dir.path())
        .args([
            "run",
            "--mode",
            "full",
            "--json",
            "--set",
            "run.max_reject_ratio=0.5",
        ])
        .env("LAKELOAD_SOURCE_URL", &source)
        .env("LAKELOAD_TARGET_URL", &table)
        .output();
    assert_exit(&out, 0);
    let summary = summary_json(&out);
    check_summary(&summary);

    let storage = open_storage(&path_str(&table), None).await;
    assert_eq!(table_rows(&storage).await, expected_arrival(&local_modified));

    // Layout: one object per date, nothing else ending in .parquet.
    let objects = read_table(&storage).await;
    let keys: Vec<&str> = objects.keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        [
            "year=2024/month=01/day=04/2024-01-04.snappy.parquet",
            "year=2024/month=01/day=05/2024-01-05.snappy.parquet",
            "year=2024/month=01/day=06/2024-01-06.snappy.parquet",
            "year=2024/month=01/day=07/2024-01-07.snappy.parquet",
            "year=2024/month=01/day=08/2024-01-08.snappy.parquet",
            "year=2024/month=01/day=09/2024-01-09.snappy.parquet",
            "year=2024/month=02/day=29/2024-02-29.snappy.parquet",
        ]
    );
    let (bytes, _) = storage.get(keys[0]).await.unwrap().unwrap();
    let schema = parquet_schema(&bytes);
    let names: Vec<&str> = schema.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "c1",
            "c2",
            "c3",
            "c4",
            "c5",
            "c6",
            "c7",
            "c8",
            "_source_file",
            "_source_line",
            "_source_modified"
        ]
    );
    assert_eq!(schema[5].1, "Date");
    assert_eq!(schema[6].1, "Date");
    assert_eq!(schema[9].1, "Int64");
    assert_eq!(
        schema[10].1, "Datetime('μs')",
        "microseconds, no time zone (UTC values)"
    );
    assert_eq!(&bytes[..4], b"PAR1");

    // Rejects, state, summary and log are under _lakeload/.
    let run_id = summary["run_id"].as_str().unwrap();
    let rejects = std::fs::read(table.join(format!("_lakeload/rejects/{run_id}.jsonl.gz"))).unwrap();
    check_rejects(&read_rejects(&rejects));
    let stored: serde_json::Value =
        serde_json::from_slice(&std::fs::read(table.join(format!("_lakeload/runs/{run_id}.json"))).unwrap())
            .unwrap();
    assert_eq!(stored["rows_inserted"], 11);
    let log = std::fs::read_to_string(table.join(format!("_lakeload/logs/{run_id}.log"))).unwrap();
    assert!(log.contains(run_id) && log.contains("succeeded"), "{log}");
    let state: serde_json::Value =
        serde_json::from_slice(&std::fs::read(table.join("_lakeload/state.json")).unwrap()).unwrap();
    let state_files: Vec<&str> = state["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["key"].as_str().unwrap())
        .collect();
    assert_eq!(
        state_files,
        ["a/late.gz", "b/early.gz", "c/multi.gz", "d/e/f/deep.gz"]
    );
    assert_eq!(state["files"][1]["rows"], 5);
    assert!(
        !table.join("_lakeload/lock").exists(),
        "the lock is removed when the run ends"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn name_order_and_date_layout() {
    let dir = tempdir();
    let (source, table) = (dir.path().join("in"), dir.path().join("out"));
    write_local_inputs(&source);
    let out = Lakeload::new(dir.path())
        .args(["run", "--mode", "full", "--json"])
        .args([
            "--set",
            "run.order=name",
            "--set",
            "target.layout=date",
            "--set",
            "run.max_reject_ratio=0.5",
        ])
        .args(["--set", &format!("source.url={}", source.display())])
        .args(["--set", &format!("target.url=file://{}", table.display())])
        .output();
    assert_exit(&out, 0);
    check_summary(&summary_json(&out));
    let storage = open_storage(&path_str(&table), None).await;
    assert_eq!(table_rows(&storage).await, expected_name(&local_modified));
    let keys: Vec<String> = read_table(&storage).await.into_keys().collect();
    assert_eq!(keys[0], "c7=2024-01-04/2024-01-04.snappy.parquet");
    assert_eq!(keys.len(), 7);
}

#[tokio::test(flavor = "multi_thread")]
async fn full_run_on_s3_matches_hand_derived_rows() {
    let s3 = S3Server::shared();
    let (source_bucket, table_bucket) = (s3.bucket("source"), s3.bucket("table"));
    // Upload in arrival order; S3 stamps LastModified with whole seconds, so wait between.
    let mut uploads = inputs();
    uploads.sort_by_key(|(_, _, arrival)| *arrival);
    for (i, (key, bytes, _)) in uploads.iter().enumerate() {
        if i > 0 {
            std::thread::sleep(std::time::Duration::from_millis(1100));
        }
        s3.put(&source_bucket, &format!("landing/{key}"), bytes);
    }
    let dir = tempdir();
    let out = Lakeload::new(dir.path())
        .args([
            "run",
            "--mode",
            "full",
            "--json",
            "--set",
            "run.max_reject_ratio=0.5",
        ])
        .envs(s3.env())
        .env("LAKELOAD_SOURCE_URL", format!("s3://{source_bucket}/landing"))
        .env("LAKELOAD_TARGET_URL", format!("s3://{table_bucket}/events"))
        .output();
    assert_exit(&out, 0);
    let summary = summary_json(&out);
    check_summary(&summary);

    let source = open_storage(&format!("s3://{source_bucket}/landing"), Some(s3)).await;
    let listing = source.list("").await.unwrap();
    let modified = |key: &str| {
        listing
            .iter()
            .find(|m| m.key == key)
            .unwrap()
            .last_modified
            .timestamp_micros()
    };
    let table = open_storage(&format!("s3://{table_bucket}/events"), Some(s3)).await;
    assert_eq!(table_rows(&table).await, expected_arrival(&modified));
    assert_eq!(read_table(&table).await.len(), 7);

    let run_id = summary["run_id"].as_str().unwrap();
    let (rejects, _) = table
        .get(&format!("_lakeload/rejects/{run_id}.jsonl.gz"))
        .await
        .unwrap()
        .unwrap();
    check_rejects(&read_rejects(&rejects));
    for key in [
        "_lakeload/state.json",
        &format!("_lakeload/runs/{run_id}.json"),
        &format!("_lakeload/logs/{run_id}.log"),
    ] {
        assert!(table.head(key).await.unwrap().is_some(), "{key} written");
    }
    assert!(
        table.head("_lakeload/lock").await.unwrap().is_none(),
        "lock released"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn s3_listing_pages_past_1000_objects() {
    let s3 = S3Server::shared();
    let (source_bucket, table_bucket) = (s3.bucket("many"), s3.bucket("many-table"));
    let total = 1_005;
    for i in 0..total {
        let line = format!("id{i}|x|||||2024-03-{:02}|s\n", 1 + i % 28);
        s3.put(
            &source_bucket,
            &format!("part-{:02}/f{i:05}.gz", i % 7),
            &gzip(line.as_bytes()),
        );
    }
    let dir = tempdir();
    let out = Lakeload::new(dir.path())
        .args(["run", "--mode", "full", "--json"])
        .envs(s3.env())
        .env("LAKELOAD_SOURCE_URL", format!("s3://{source_bucket}"))
        .env("LAKELOAD_TARGET_URL", format!("s3://{table_bucket}"))
        .output();
    assert_exit(&out, 0);
    let summary = summary_json(&out);
    assert_eq!(summary["files"].as_array().unwrap().len(), total);
    assert_eq!(summary["rows_inserted"], total as u64);
    let table = open_storage(&format!("s3://{table_bucket}"), Some(s3)).await;
    assert_eq!(table_rows(&table).await.len(), total);
}

#[tokio::test(flavor = "multi_thread")]
async fn full_run_replaces_the_table_and_deletes_dates_with_no_rows_last() {
    let dir = tempdir();
    let (source, table) = (dir.path().join("in"), dir.path().join("out"));
    write_local_inputs(&source);
    let run = || {
        Lakeload::new(dir.path())
            .args([
                "run",
                "--mode",
                "full",
                "--json",
                "--set",
                "run.max_reject_ratio=0.5",
            ])
            .env("LAKELOAD_SOURCE_URL", &source)
            .env("LAKELOAD_TARGET_URL", &table)
            .output()
    };
    assert_exit(&run(), 0);
    // deep.gz held the only rows of 2024-01-04 and 2024-02-29.
    std::fs::remove_file(source.join("d/e/f/deep.gz")).unwrap();
    let out = run();
    assert_exit(&out, 0);
    let summary = summary_json(&out);
    let deleted: Vec<&str> = summary["dates_deleted"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d.as_str().unwrap())
        .collect();
    assert_eq!(deleted, ["2024-01-04", "2024-02-29"]);
    let storage = open_storage(&path_str(&table), None).await;
    let mut expected = expected_arrival(&local_modified);
    expected.retain(|r| r[8].as_deref() != Some("d/e/f/deep.gz"));
    assert_eq!(table_rows(&storage).await, expected);
    assert!(
        !table.join("year=2024/month=02").exists(),
        "emptied partition folders are removed"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn duckdb_reads_the_table_with_hive_partitioning() {
    let dir = tempdir();
    let (source, table) = (dir.path().join("in"), dir.path().join("out"));
    write_local_inputs(&source);
    let out = Lakeload::new(dir.path())
        .args(["run", "--mode", "full", "--set", "run.max_reject_ratio=0.5"])
        .env("LAKELOAD_SOURCE_URL", &source)
        .env("LAKELOAD_TARGET_URL", &table)
        .output();
    assert_exit(&out, 0);
    let script = format!(
        "import duckdb\n\
         rel = duckdb.sql(\"SELECT * FROM read_parquet('{}/**/*.parquet', hive_partitioning = true)\")\n\
         print(dict(zip(rel.columns, [str(t) for t in rel.types])))\n\
         print(duckdb.sql(\"SELECT count(*), count(DISTINCT c7) FROM read_parquet('{}/**/*.parquet', hive_partitioning = true)\").fetchone())\n",
        table.display(),
        table.display()
    );
    let py = std::process::Command::new(lakeload_testkit::python())
        .arg("-c")
        .arg(script)
        .output()
        .unwrap();
    assert!(py.status.success(), "{}", String::from_utf8_lossy(&py.stderr));
    let text = String::from_utf8_lossy(&py.stdout);
    for expected in [
        "'c1': 'VARCHAR'",
        "'c6': 'DATE'",
        "'c7': 'DATE'",
        "'_source_file': 'VARCHAR'",
        "'_source_line': 'BIGINT'",
        "'_source_modified': 'TIMESTAMP'",
        "'year'",
        "(11, 7)",
    ] {
        assert!(
            text.contains(expected),
            "missing {expected} in DuckDB output:\n{text}"
        );
    }
}
