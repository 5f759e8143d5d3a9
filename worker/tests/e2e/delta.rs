//! `target.format = delta`: tables read back by independent Delta readers (delta-rs' Python
//! package, `deltalake`, and Polars' `scan_delta`), every version equal to the `parquet` table
//! the same runs build.

use std::path::Path;

use crate::common::*;

/// The worker on the Delta table `delta` of `source`.
fn on_delta(dir: &Path, source: &Path, delta: &Path) -> Lakeload {
    Lakeload::new(dir)
        .env("LAKELOAD_SOURCE_URL", source)
        .env("LAKELOAD_TARGET_URL", delta)
        .env("LAKELOAD_TARGET_FORMAT", "delta")
}

/// One run on the local table `target`: its summary.
fn run(dir: &Path, source: &Path, target: &Path, format: &str, mode: &str) -> serde_json::Value {
    run_at(dir, source, &path_str(target), &[], format, mode)
}

/// The same run (`mode`) on the local Delta table `delta` and on its `parquet` oracle.
fn run_both(dir: &Path, source: &Path, delta: &Path, oracle: &Path, mode: &str) {
    run_both_with(dir, source, delta, oracle, mode, &[]);
}

/// [`run_both`], the Delta run with `env` too: its summary.
fn run_both_with(
    dir: &Path,
    source: &Path,
    delta: &Path,
    oracle: &Path,
    mode: &str,
    env: &[(String, String)],
) -> serde_json::Value {
    let summary = run_at(dir, source, &path_str(delta), env, "delta", mode);
    run(dir, source, oracle, "parquet", mode);
    summary
}

/// The worker on `source` (a local folder) and the table at `target` (a path or an s3:// URL,
/// with `env` pointing at its server): one run's summary.
fn run_at(
    dir: &Path,
    source: &Path,
    target: &str,
    env: &[(String, String)],
    format: &str,
    mode: &str,
) -> serde_json::Value {
    let out = Lakeload::new(dir)
        .envs(env.to_vec())
        .env("LAKELOAD_SOURCE_URL", source)
        .env("LAKELOAD_TARGET_URL", target)
        .env("LAKELOAD_TARGET_FORMAT", format)
        .env("LAKELOAD_RUN_THREADS", "2")
        .args(["run", "--mode", mode, "--json"])
        .output();
    assert_exit(&out, 0);
    summary_json(&out)
}

/// An incremental `run --json` on the Delta table at `target` (with `env`), stopped (SIGSTOP)
/// once it reaches its table commit: the test changes the table meanwhile, then resumes it
/// (SIGCONT). Its lease is long enough for a slow test to do so.
fn paused_before_commit(dir: &Path, source: &Path, target: &str, env: &[(String, String)]) -> Running {
    let mut paused = Running::spawn(
        Lakeload::new(dir)
            .envs(env.to_vec())
            .env("LAKELOAD_SOURCE_URL", source)
            .env("LAKELOAD_TARGET_URL", target)
            .env("LAKELOAD_TARGET_FORMAT", "delta")
            .env("LAKELOAD_TEST_PAUSE_AT", "before_table_commit:1:stop")
            .env("LAKELOAD_LOCK_LEASE_SECONDS", "900")
            .args(["run", "--mode", "incremental", "--json"]),
    );
    paused.wait_for("lakeload-test-paused-at", std::time::Duration::from_secs(60));
    paused
}

/// Runs a Python script with the test venv (deltalake, pyarrow); returns its stdout. The
/// script ends with `os._exit` once its output is flushed: deltalake 1.6.6 sometimes aborts
/// the interpreter while it shuts down ("terminate called without an active exception").
pub(crate) fn python(script: &str, args: &[String]) -> String {
    let script = format!("{script}\nimport os, sys\nsys.stdout.flush()\nos._exit(0)\n");
    let out = std::process::Command::new(lakeload_testkit::python())
        .arg("-c")
        .arg(script)
        .args(args)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub(crate) fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let path = entry.path();
        if path.is_dir() {
            copy_dir(&path, &to.join(entry.file_name()));
        } else {
            std::fs::copy(&path, to.join(entry.file_name())).unwrap();
        }
    }
}

/// The first `files` source files of `rows` lines each in `dir/src`, two a day.
pub(crate) fn first_files(dir: &Path, files: usize, rows: usize) -> std::path::PathBuf {
    let (files, rows) = (files.to_string(), rows.to_string());
    generated_source(
        dir,
        "src",
        &["--files", &files, "--rows", &rows, "--files-per-day", "2"],
    )
}

/// Adds one source file of `rows` lines to `dir/src`, landing on `day`, numbered
/// `first_file` (also its seed unless `more` sets one), with `more` generator options.
pub(crate) fn land_file(dir: &Path, day: &str, first_file: usize, rows: usize, more: &[&str]) {
    let (first, rows) = (first_file.to_string(), rows.to_string());
    let mut args = vec![
        "--files",
        "1",
        "--rows",
        &rows,
        "--start",
        day,
        "--first-file",
        &first,
    ];
    if !more.contains(&"--seed") {
        args.extend(["--seed", &first]);
    }
    args.extend(more);
    generated_source(dir, "src", &args);
}

/// The `n`-th of many small files (20 lines, none bad), over five days.
fn small_file(dir: &Path, n: usize) {
    let day = format!("2026-11-{:02}", 1 + n % 5);
    land_file(dir, &day, 100 + n, 20, &["--bad-ratio", "0"]);
}

/// Starts an incremental run on the Delta table, kills it (SIGKILL) once it pauses at
/// `point`, and frees the lock it held.
fn kill_run_at(dir: &Path, source: &Path, delta: &Path, point: &str) {
    kill_run_with(dir, source, delta, point, &[]);
}

/// [`kill_run_at`], the run with `env` too.
fn kill_run_with(dir: &Path, source: &Path, delta: &Path, point: &str, env: &[(String, String)]) {
    let mut killed = Running::spawn(
        on_delta(dir, source, delta)
            .envs(env.to_vec())
            .env("LAKELOAD_TEST_PAUSE_AT", format!("{point}:1"))
            .args(["run", "--mode", "incremental"]),
    );
    killed.wait_for("lakeload-test-paused-at", std::time::Duration::from_secs(60));
    killed.signal("KILL");
    killed.finish();
    let unlock = on_delta(dir, source, delta).args(["unlock", "--force"]).output();
    assert_exit(&unlock, 0);
}

/// Compares `DeltaTable(table, version=k)` and Polars' `scan_delta(table, version=k)` with the
/// Parquet table in `oracles/v<k>` for each version, as the rows a reader gets (partition
/// values from the log, lineage times in UTC).
const COMPARE: &str = r#"
import glob, json, sys
from deltalake import DeltaTable
import pyarrow as pa, pyarrow.parquet as pq
import polars as pl
import duckdb, duckdb_extension_delta, os

# `versions`: the count of versions to read, or `latest` (then `v0` is the latest version).
table, oracles = sys.argv[1], sys.argv[2]
latest_only = sys.argv[3] == "latest"
versions = 1 if latest_only else int(sys.argv[3])
# Storage options (an S3 endpoint and its keys) for both readers, if given.
options = json.loads(sys.argv[4]) if len(sys.argv) > 4 else None

def rows(t):
    cols = [c for c in t.column_names if c not in ("year", "month", "day")]
    out = []
    for r in t.select(cols).to_pylist():
        if r["_source_modified"] is not None:
            r["_source_modified"] = r["_source_modified"].replace(tzinfo=None)
        out.append(tuple(sorted((k, str(v)) for k, v in r.items())))
    return sorted(out)

def by_duckdb(at):
    # DuckDB's delta extension (delta-kernel-rs); local tables only (S3 would need httpfs).
    if options is not None:
        return None
    ext = glob.glob(os.path.join(os.path.dirname(duckdb_extension_delta.__file__), "extensions", "*", "delta.duckdb_extension"))[0]
    con = duckdb.connect()
    con.load_extension(ext)
    version = "" if at is None else f", version := {at}"
    return rows(con.sql(f"select * from delta_scan('{table}'{version})").to_arrow_table())

report = {"latest": DeltaTable(table, storage_options=options).version(),
          "history": len(DeltaTable(table, storage_options=options).history())}
for v in range(versions):
    at = None if latest_only else v
    dt = DeltaTable(table, version=at, storage_options=options)
    files = [f for f in glob.glob(f"{oracles}/v{v}/**/*.parquet", recursive=True) if "_lakeload" not in f]
    oracle = rows(pa.concat_tables([pq.read_table(f, partitioning=None) for f in files]))
    got = rows(dt.to_pyarrow_table())
    by_polars = rows(pl.scan_delta(table, version=at, storage_options=options).collect().to_arrow())
    from_duckdb = by_duckdb(at)
    dates = {dict(r)["c7"] for r in oracle}
    report[f"v{v}"] = {"rows": len(got), "equal": got == oracle, "oracle_rows": len(oracle),
                       "polars_equal": by_polars == oracle,
                       "duckdb_equal": None if from_duckdb is None else from_duckdb == oracle,
                       "dates": len(dates), "files": sorted(dt.file_uris()),
                       "partitions": dt.metadata().partition_columns}
print(json.dumps(report))
"#;

/// Checks each live file's stats (as deltalake parses them) against the file's own values:
/// the row count and null counts equal, every bound on the right side of every value (a long
/// string's may be a prefix, or missing), the lineage time UTC-adjusted. Then filters on a string and a number, which
/// deltalake answers by skipping files on those stats, must return what filtering every row
/// returns.
const STATS: &str = r#"
import json, sys
import pyarrow as pa, pyarrow.parquet as pq, pyarrow.compute as pc
from deltalake import DeltaTable

table = sys.argv[1]
dt = DeltaTable(table)
adds = pa.table(dt.get_add_actions(flatten=True)).to_pylist()
wrong, bounded, zones = [], 0, set()
for add in adds:
    data = pq.read_table(f"{table}/{add['path']}", partitioning=None)
    zones.add(str(data.schema.field("_source_modified").type.tz))
    if add["num_records"] != data.num_rows:
        wrong.append((add["path"], "num_records"))
    for name in data.column_names:
        column = data[name]
        if column.type == pa.string_view():
            column = column.cast(pa.string())
        if add.get(f"null_count.{name}") != column.null_count:
            wrong.append((add["path"], f"null_count.{name}"))
        low, high = pc.min(column).as_py(), pc.max(column).as_py()
        if hasattr(low, "tzinfo") and low is not None:
            low, high = low.replace(tzinfo=None), high.replace(tzinfo=None)
        lo, hi = add.get(f"min.{name}"), add.get(f"max.{name}")
        if hasattr(lo, "tzinfo") and lo is not None:
            lo = lo.replace(tzinfo=None)
        if hasattr(hi, "tzinfo") and hi is not None:
            hi = hi.replace(tzinfo=None)
        if lo is None or (lo > low):
            wrong.append((add["path"], f"min.{name}", str(lo), str(low)))
        if hi is not None and hi < high:
            wrong.append((add["path"], f"max.{name}", str(hi), str(high)))
        if hi is None and not (isinstance(high, str) and len(high) > 32):
            wrong.append((add["path"], f"max.{name} missing"))
        bounded += 1
everything = dt.to_pyarrow_table()
checks = {}
for name, op, value in [("c1", ">=", "C015000"), ("_source_line", "<", 200)]:
    skipped = dt.to_pyarrow_table(filters=[(name, op, value)]).num_rows
    fn = pc.greater_equal if op == ">=" else pc.less
    checks[name] = [skipped, everything.filter(fn(everything[name], value)).num_rows]
print(json.dumps({"files": len(adds), "bounded": bounded, "wrong": wrong, "filters": checks,
                  "lineage_time_zones": sorted(zones)}))
"#;

/// A sequence of full and incremental runs (new rows, re-sent keys, a new date, then a full
/// run after a date's source files are gone): each commits one version, and a Delta reader
/// sees at every version exactly the rows the `parquet` table held after the same run.
#[test]
fn every_version_of_a_delta_table_equals_the_parquet_table_of_the_same_runs() {
    let dir = tempdir();
    let dir = dir.path();
    let source = first_files(dir, 4, 1500);
    let (delta, parquet, oracles) = (dir.join("delta"), dir.join("parquet"), dir.join("oracles"));
    let mut version = 0;
    let mut runs = Vec::new();
    let mut step = |mode: &str| {
        let d = run(dir, &source, &delta, "delta", mode);
        let p = run(dir, &source, &parquet, "parquet", mode);
        assert_eq!(
            d["counts"], p["counts"],
            "the same counts in both formats ({mode})"
        );
        copy_dir(&parquet, &oracles.join(format!("v{version}")));
        runs.push((d["run_id"].as_str().unwrap().to_string(), mode.to_string()));
        version += 1;
    };
    step("full");
    // More rows for the second day, re-sending some of its keys (updates).
    land_file(
        dir,
        "2026-11-02",
        10,
        1500,
        &["--seed", "7", "--duplicate-ratio", "0.3"],
    );
    step("incremental");
    // A new date.
    land_file(dir, "2026-11-05", 20, 800, &[]);
    step("incremental");
    // The first day's files are gone: a full run drops its date.
    std::fs::remove_dir_all(source.join("2026/11/01")).unwrap();
    step("full");

    // A run with nothing new to load commits no version.
    let idle = run(dir, &source, &delta, "delta", "incremental");
    assert_eq!(idle["dates_written"], serde_json::json!([]));

    // `history` lists one version per run, newest first, with the run and mode.
    let out = on_delta(dir, &source, &delta)
        .args(["history", "--json"])
        .output();
    assert_exit(&out, 0);
    let history: Vec<serde_json::Value> = serde_json::from_str(&stdout(&out)).unwrap();
    let listed: Vec<(u64, String, String)> = history
        .iter()
        .map(|v| {
            let text = |k: &str| v[k].as_str().unwrap().to_string();
            (v["version"].as_u64().unwrap(), text("run_id"), text("mode"))
        })
        .collect();
    let expected: Vec<(u64, String, String)> = runs
        .iter()
        .enumerate()
        .rev()
        .map(|(v, (id, mode))| (v as u64, id.clone(), mode.clone()))
        .collect();
    assert_eq!(listed, expected);
    // Each commit carries lakeload's transaction on this table, numbering its runs.
    let txns: Vec<(String, i64)> = (0..version)
        .map(|v| {
            let commit = std::fs::read_to_string(delta.join(format!("_delta_log/{v:020}.json"))).unwrap();
            let txn = commit
                .lines()
                .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
                .find_map(|a| a.get("txn").cloned())
                .unwrap();
            (
                txn["appId"].as_str().unwrap().to_string(),
                txn["version"].as_i64().unwrap(),
            )
        })
        .collect();
    assert!(
        txns[0].0.starts_with("lakeload-") && txns[0].0.len() > 20,
        "{txns:?}"
    );
    assert!(
        txns.iter().all(|(app, _)| *app == txns[0].0),
        "one application id: {txns:?}"
    );
    let numbers: Vec<i64> = txns.iter().map(|(_, n)| *n).collect();
    assert_eq!(numbers, [0, 1, 2, 3]);
    // `plan` and `status` name the version; the log and older versions' files are the
    // table's, and a full run would delete none of them.
    let json_of = |args: &[&str]| -> serde_json::Value {
        let out = on_delta(dir, &source, &delta).args(args).output();
        assert_exit(&out, 0);
        serde_json::from_str(&stdout(&out)).unwrap()
    };
    let plan = json_of(&["plan", "--mode", "full", "--json"]);
    assert_eq!(plan["table_version"], 3);
    assert_eq!(plan["objects_to_delete"], serde_json::json!([]), "{plan}");
    assert_eq!(plan["foreign_objects"], serde_json::json!([]), "{plan}");
    assert_eq!(json_of(&["status", "--json"])["table_version"], 3);
    // A `parquet` table keeps no versions, and says so.
    let out = Lakeload::new(dir)
        .env("LAKELOAD_SOURCE_URL", &source)
        .env("LAKELOAD_TARGET_URL", &parquet)
        .args(["history"])
        .output();
    assert_exit(&out, 2);
    assert!(stderr(&out).contains("target.format = delta"), "{}", stderr(&out));

    let out = python(
        COMPARE,
        &[path_str(&delta), path_str(&oracles), version.to_string()],
    );
    let report: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(report["latest"], 3, "one version per run: {report}");
    assert_eq!(report["history"], 4, "{report}");
    for v in 0..version {
        let seen = &report[format!("v{v}")];
        assert_eq!(seen["equal"], true, "version {v} as deltalake reads it: {report}");
        assert_eq!(
            seen["polars_equal"], true,
            "version {v} as Polars' scan_delta reads it: {report}"
        );
        assert_eq!(
            seen["duckdb_equal"], true,
            "version {v} as DuckDB's delta_scan reads it: {report}"
        );
        assert!(seen["rows"].as_u64().unwrap() > 0);
        assert_eq!(seen["partitions"], serde_json::json!(["c7"]));
    }
    // The stats of every live file bound its values; readers skipping files on them lose no row.
    let stats: serde_json::Value = serde_json::from_str(&python(STATS, &[path_str(&delta)])).unwrap();
    assert_eq!(stats["wrong"], serde_json::json!([]), "{stats}");
    assert!(stats["bounded"].as_u64().unwrap() >= 10, "{stats}");
    // Delta's `timestamp` is stored UTC-adjusted (isAdjustedToUTC = true in the files).
    assert_eq!(stats["lineage_time_zones"], serde_json::json!(["UTC"]), "{stats}");
    for (column, counts) in stats["filters"].as_object().unwrap() {
        assert_eq!(counts[0], counts[1], "filter on {column}: {stats}");
        assert!(counts[0].as_u64().unwrap() > 0, "filter on {column}: {stats}");
    }
    let files = |v: usize| -> Vec<String> {
        serde_json::from_value(report[format!("v{v}")]["files"].clone()).unwrap()
    };
    let dates = |v: usize| report[format!("v{v}")]["dates"].as_u64().unwrap();
    for v in 0..version {
        // Every date has a file; a date has more only where an incremental run appended new
        // keys beside its file.
        assert!(files(v).len() as u64 >= dates(v), "{report}");
    }
    // A full run writes one file per date.
    assert_eq!(files(0).len() as u64, dates(0), "{report}");
    assert_eq!(files(3).len() as u64, dates(3), "{report}");
    // An incremental run replaces (or adds to) only the files of the dates it touched...
    assert!(files(1).iter().any(|f| files(0).contains(f)), "{report}");
    // ...a full run replaces them all.
    assert!(files(3).iter().all(|f| !files(2).contains(f)), "{report}");
    // Files of replaced versions stay for the readers of older versions.
    let data_files = || -> Vec<String> {
        let mut found: Vec<String> = walk(&delta)
            .into_iter()
            .filter(|p| p.ends_with(".parquet"))
            .map(|p| {
                p.strip_prefix(&format!("{}/", path_str(&delta)))
                    .unwrap()
                    .to_string()
            })
            .collect();
        found.sort();
        found
    };
    let live: Vec<String> = files(3)
        .iter()
        .map(|uri| {
            uri.rsplit_once(&format!("{}/", path_str(&delta)))
                .map_or(uri.clone(), |(_, p)| p.to_string())
        })
        .collect();
    let replaced: Vec<String> = data_files().into_iter().filter(|f| !live.contains(f)).collect();
    assert!(
        !replaced.is_empty(),
        "files of replaced versions stay for older versions"
    );

    // Vacuum: a user's file beside the table's is never touched; files removed within the
    // retention stay; a dry run deletes nothing.
    let foreign = "c7=2026-11-02/notes.parquet";
    std::fs::write(delta.join(foreign), b"not the table's").unwrap();
    let vacuum = |args: &[&str]| -> serde_json::Value {
        let out = on_delta(dir, &source, &delta)
            .args(["vacuum", "--json"])
            .args(args)
            .output();
        assert_exit(&out, 0);
        serde_json::from_str(&stdout(&out)).unwrap()
    };
    // By default, the table's retention (7 days, as it sets none); shorter only with --force.
    let by_default = vacuum(&[]);
    assert_eq!(by_default["deleted"], serde_json::json!([]));
    assert_eq!(by_default["retain_hours"], 168.0);
    let refused = on_delta(dir, &source, &delta)
        .args(["vacuum", "--retain", "0s"])
        .output();
    assert_exit(&refused, 2);
    assert!(stderr(&refused).contains("--force"), "{}", stderr(&refused));
    let dry = vacuum(&["--retain", "0s", "--force", "--dry-run"]);
    let listed: Vec<String> = serde_json::from_value(dry["deleted"].clone()).unwrap();
    assert_eq!(listed, replaced, "what a dry run lists");
    assert_eq!(
        data_files().len(),
        live.len() + replaced.len() + 1,
        "a dry run deletes nothing"
    );
    let done = vacuum(&["--retain", "0s", "--force"]);
    assert_eq!(done["deleted"], dry["deleted"]);
    let mut left = live.clone();
    left.push(foreign.to_string());
    left.sort();
    assert_eq!(data_files(), left, "the live files and the user's file are left");
    // The current version still reads whole. (pyarrow is imported first: deltalake 1.6.6
    // importing it lazily aborts the interpreter at exit.)
    let out = python(
        "import sys, pyarrow\nfrom deltalake import DeltaTable\nprint(DeltaTable(sys.argv[1]).to_pyarrow_table().num_rows)",
        &[path_str(&delta)],
    );
    assert_eq!(out.trim(), report["v3"]["rows"].to_string());
}

/// Every file under `dir`, as path strings.
fn walk(dir: &Path) -> Vec<String> {
    lakeload_testkit::files_under(dir)
        .iter()
        .map(|p| path_str(p))
        .collect()
}

/// A run killed at each point of its commit — after writing a data file, before its log
/// commit, after writing its deletion vectors, after its log commit, before its state commit —
/// leaves a table the next incremental run completes: a run killed before its log commit
/// changed no version and its file is loaded by the next run; one killed after it is recorded
/// from the log, not loaded again. Either way the table is the `parquet` table of the same runs
/// at version 1: no row lost or doubled, no version skipped or repeated. With and without
/// deletion vectors (the landed file updates stored keys, so the run marks rows deleted).
#[test]
fn a_run_stopped_at_any_point_of_its_commit_converges() {
    for vectors in [false, true] {
        let env = vectors_env(vectors);
        let points: &[(&str, bool)] = match vectors {
            false => &[
                ("after_date_write", false),
                ("before_table_commit", false),
                ("after_table_commit", true),
                ("before_state_commit", true),
            ],
            true => &[
                ("after_date_write", false),
                ("after_vectors_write", false),
                ("after_table_commit", true),
            ],
        };
        for &(point, committed) in points {
            let dir = tempdir();
            let dir = dir.path();
            let few = ["--customers", "200", "--sessions", "2"];
            let source = generated_source(
                dir,
                "src",
                &[
                    &["--files", "4", "--rows", "1000", "--files-per-day", "2"][..],
                    &few,
                ]
                .concat(),
            );
            let (delta, parquet) = (dir.join("delta"), dir.join("parquet"));
            let on_both = |mode: &str| run_both_with(dir, &source, &delta, &parquet, mode, &env);
            on_both("full");
            let oracles = dir.join("oracles");
            copy_dir(&parquet, &oracles.join("v0"));
            // File 4, landing on 2026-11-01 (two files a day from 2026-10-30).
            land_file(
                dir,
                "2026-10-30",
                4,
                1000,
                &[&["--seed", "9", "--files-per-day", "2"][..], &few].concat(),
            );
            kill_run_with(dir, &source, &delta, point, &env);

            let next = run_at(dir, &source, &path_str(&delta), &env, "delta", "incremental");
            let loaded = next["files"].as_array().unwrap().len();
            assert_eq!(
                loaded,
                usize::from(!committed),
                "killed at {point}: the new file loaded once in all: {next}"
            );
            let oracle_run = run(dir, &source, &parquet, "parquet", "incremental");
            assert!(oracle_run["rows_updated"].as_u64().unwrap() > 50, "{oracle_run}");
            copy_dir(&parquet, &oracles.join("v1"));
            let state: serde_json::Value =
                serde_json::from_slice(&std::fs::read(delta.join("_lakeload/state.json")).unwrap()).unwrap();
            assert_eq!(
                state["files"].as_array().unwrap().len(),
                5,
                "killed at {point}: every file recorded"
            );
            assert_eq!(state["table_version"], 1, "killed at {point}");
            let commits: Vec<String> = walk(&delta.join("_delta_log"))
                .into_iter()
                .filter(|p| p.ends_with(".json"))
                .collect();
            assert_eq!(
                commits.len(),
                2,
                "killed at {point}: versions 0 and 1: {commits:?}"
            );
            if !vectors {
                assert!(
                    delta_equals(&delta, Some(1), &parquet),
                    "killed at {point}: version 1 holds the rows of a full and an incremental run"
                );
                continue;
            }
            let marked = commit_of(&delta, 1)
                .iter()
                .filter(|a| !a["add"]["deletionVector"].is_null())
                .count();
            assert!(marked > 0, "killed at {point}: the retry marked rows deleted");
            assert_dv_readers_equal(&delta, &oracles, [0, 1], &format!("killed at {point}"));
            // The stopped run announced its vector file before writing it: vacuum deletes it
            // (once past the retention) and keeps the retry's, which version 1 reads.
            let vector_files = || {
                std::fs::read_dir(&delta)
                    .unwrap()
                    .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                    .filter(|name| name.starts_with("deletion_vector_"))
                    .count()
            };
            let stopped_wrote_one = usize::from(point == "after_vectors_write");
            assert_eq!(vector_files(), 1 + stopped_wrote_one, "killed at {point}");
            let out = on_delta(dir, &source, &delta)
                .args(["vacuum", "--retain", "0s", "--force", "--json"])
                .output();
            assert_exit(&out, 0);
            assert_eq!(vector_files(), 1, "killed at {point}: {}", stdout(&out));
            let state: serde_json::Value =
                serde_json::from_slice(&std::fs::read(delta.join("_lakeload/state.json")).unwrap()).unwrap();
            assert!(
                state["unconfirmed"].as_array().is_none_or(|a| a.is_empty()),
                "killed at {point}: no announcement left: {state}"
            );
            assert_dv_readers_equal(&delta, &oracles, [1], &format!("killed at {point}, vacuumed"));
        }
    }
}

/// Rows of the Delta table at `version` (latest when `None`) equal the Parquet table in
/// `oracle`, as a reader sees them.
fn delta_equals(delta: &Path, version: Option<u64>, oracle: &Path) -> bool {
    delta_at_equals(&path_str(delta), None, version, oracle)
}

/// deltalake's storage options for a table on the test S3 server.
pub fn s3_options(s3: &S3Server) -> serde_json::Value {
    serde_json::json!({
        "AWS_ENDPOINT_URL": s3.endpoint,
        "AWS_ALLOW_HTTP": "true",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_REGION": "us-east-1",
    })
}

/// [`delta_equals`] for a table at a path or URL, read with deltalake's storage `options`.
pub fn delta_at_equals(
    delta: &str,
    options: Option<&serde_json::Value>,
    version: Option<u64>,
    oracle: &Path,
) -> bool {
    let script = r#"
import glob, sys, pyarrow as pa, pyarrow.parquet as pq
from deltalake import DeltaTable
import json
dt = DeltaTable(sys.argv[1], version=None if sys.argv[2] == "latest" else int(sys.argv[2]),
                storage_options=json.loads(sys.argv[4]) or None)
def rows(t):
    out = []
    for r in t.select([c for c in t.column_names if c not in ("year", "month", "day")]).to_pylist():
        r["_source_modified"] = r["_source_modified"].replace(tzinfo=None)
        out.append(tuple(sorted((k, str(v)) for k, v in r.items())))
    return sorted(out)
files = [f for f in glob.glob(sys.argv[3] + "/**/*.parquet", recursive=True) if "_lakeload" not in f]
oracle = pa.concat_tables([pq.read_table(f, partitioning=None) for f in files])
print(rows(dt.to_pyarrow_table()) == rows(oracle))
"#;
    let out = python(
        script,
        &[
            delta.to_string(),
            version.map_or("latest".into(), |v| v.to_string()),
            path_str(oracle),
            options.map_or("null".into(), |o| o.to_string()),
        ],
    );
    out.trim() == "True"
}

/// `rollback --to-version 1` commits a new version holding version 1's rows, keeps history,
/// and rolls the state back: the next incremental run loads the files loaded after version 1
/// again, giving the table an incremental run from version 1's table would give.
#[test]
fn a_rollback_restores_a_version_and_the_next_run_loads_what_came_after() {
    let dir = tempdir();
    let dir = dir.path();
    let source = first_files(dir, 4, 1000);
    let (delta, parquet) = (dir.join("delta"), dir.join("parquet"));
    let both = |mode: &str| run_both(dir, &source, &delta, &parquet, mode);
    both("full");
    land_file(dir, "2026-11-02", 10, 1000, &["--seed", "3"]);
    both("incremental");
    let at_version_1 = dir.join("parquet-v1");
    copy_dir(&parquet, &at_version_1);
    land_file(dir, "2026-11-01", 20, 1000, &["--seed", "4"]);
    both("incremental");
    assert!(
        !delta_equals(&delta, None, &at_version_1),
        "version 2 differs from version 1"
    );

    let lakeload = |args: &[&str]| on_delta(dir, &source, &delta).args(args).output();
    // The current version and versions that do not exist are refused.
    assert_exit(&lakeload(&["rollback", "--to-version", "2"]), 2);
    assert_exit(&lakeload(&["rollback", "--to-version", "9"]), 2);
    let out = lakeload(&["rollback", "--to-version", "1", "--json"]);
    assert_exit(&out, 0);
    let rolled: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(rolled["version"], 3);
    assert_eq!(rolled["restored_version"], 1);
    assert!(
        delta_equals(&delta, None, &at_version_1),
        "version 3 holds version 1's rows"
    );
    assert!(
        delta_equals(&delta, Some(2), &parquet),
        "version 2 is still readable"
    );
    let history: Vec<serde_json::Value> =
        serde_json::from_str(&stdout(&lakeload(&["history", "--json"]))).unwrap();
    assert_eq!(history.len(), 4);
    assert_eq!(history[0]["mode"], "rollback");

    // The next incremental run loads file 20 again: the table an incremental run from
    // version 1's table gives.
    let again = run(dir, &source, &delta, "delta", "incremental");
    let loaded: Vec<String> = serde_json::from_value(again["files"].clone()).unwrap();
    assert!(
        loaded.len() == 1 && loaded[0].ends_with("events-000020.gz"),
        "{loaded:?}"
    );
    run(dir, &source, &at_version_1, "parquet", "incremental");
    assert!(delta_equals(&delta, None, &at_version_1));
}

/// Another writer commits the version a run was about to take, and its commit removes the
/// files the run replaces (a `DELETE`): the run fails naming that commit, and the table is
/// exactly what the other writer left (the run's files never join it); the state is not
/// committed, so the next run loads the same files.
#[test]
fn a_run_that_loses_the_race_to_a_conflicting_commit_changes_nothing() {
    let dir = tempdir();
    let dir = dir.path();
    let source = first_files(dir, 2, 500);
    let delta = dir.join("delta");
    run(dir, &source, &delta, "delta", "full");
    land_file(dir, "2026-11-01", 10, 500, &["--seed", "5"]);
    let mut paused = Running::spawn(
        on_delta(dir, &source, &delta)
            .env("LAKELOAD_TEST_PAUSE_AT", "before_table_commit:1:stop")
            .args(["run", "--mode", "incremental"]),
    );
    paused.wait_for("lakeload-test-paused-at", std::time::Duration::from_secs(60));
    // Another Delta writer takes version 1 meanwhile: it deletes every file of version 0.
    let mut theirs = String::from(
        "{\"commitInfo\":{\"timestamp\":1,\"operation\":\"DELETE\",\"engineInfo\":\"another-writer\"}}\n",
    );
    for action in log_commits(&delta).concat() {
        if let Some(add) = action.get("add") {
            let remove = serde_json::json!({ "remove": { "path": add["path"], "deletionTimestamp": 1, "dataChange": true } });
            theirs += &format!("{remove}\n");
        }
    }
    let theirs = theirs.into_bytes();
    std::fs::write(delta.join("_delta_log/00000000000000000001.json"), &theirs).unwrap();
    paused.resume();
    let (code, _, stderr) = paused.finish();
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains("version 1 of the Delta table")
            && stderr.contains("DELETE by another-writer")
            && stderr.contains("which this run read or replaces"),
        "{stderr}"
    );
    assert_eq!(
        std::fs::read(delta.join("_delta_log/00000000000000000001.json")).unwrap(),
        theirs,
        "their commit stands"
    );
    assert!(!delta.join("_delta_log/00000000000000000002.json").exists());
    let history = on_delta(dir, &source, &delta)
        .args(["history", "--json"])
        .output();
    let versions: Vec<serde_json::Value> = serde_json::from_str(&stdout(&history)).unwrap();
    assert_eq!(
        versions[0]["files_added"], 0,
        "the failed run's files are not in the table"
    );
    assert_eq!(versions.len(), 2, "no version of the run");
    // The next run loads the new file.
    let next = run(dir, &source, &delta, "delta", "incremental");
    assert_eq!(next["files"].as_array().unwrap().len(), 1, "{next}");
    // The losing run's files are left for vacuum, which knows them from the state.
    let first_run = versions.last().unwrap()["run_id"].as_str().unwrap().to_string();
    let next_run = next["run_id"].as_str().unwrap().to_string();
    let losers = || -> Vec<String> {
        walk(&delta)
            .into_iter()
            .filter(|f| f.ends_with(".snappy.parquet") && !f.contains(&first_run) && !f.contains(&next_run))
            .collect()
    };
    assert!(
        !losers().is_empty(),
        "the losing run wrote its files before its commit"
    );
    let announced = || -> Vec<String> {
        let state = std::fs::read(delta.join("_lakeload/state.json")).unwrap();
        let state: serde_json::Value = serde_json::from_slice(&state).unwrap();
        // An empty list is left out of the state.
        serde_json::from_value(state["unconfirmed"].clone()).unwrap_or_default()
    };
    assert!(!announced().is_empty(), "the losing run announced its files");
    let out = on_delta(dir, &source, &delta)
        .args(["vacuum", "--retain", "0s", "--force", "--json"])
        .output();
    assert_exit(&out, 0);
    assert_eq!(losers(), Vec::<String>::new(), "{}", stdout(&out));
    assert_eq!(
        announced(),
        Vec::<String>::new(),
        "vacuum prunes the announcements of the files it deleted"
    );
}

/// Snapshot isolation: a reader polling the table while an incremental run rewrites 30 dates
/// (its files all written, its commit held back until the reader has read the table again)
/// only ever sees a whole version,
/// the one before the run or the one after it, never some dates new and some old.
#[test]
fn a_reader_sees_whole_versions_while_a_run_rewrites_thirty_dates() {
    let dir = tempdir();
    let dir = dir.path();
    let source = generated_source(
        dir,
        "src",
        &["--files", "30", "--rows", "200", "--files-per-day", "1"],
    );
    let delta = dir.join("delta");
    run(dir, &source, &delta, "delta", "full");
    // Late data: every new file carries rows of all 30 dates.
    generated_source(
        dir,
        "src",
        &[
            "--files",
            "2",
            "--rows",
            "3000",
            "--span",
            "30",
            "--first-file",
            "100",
            "--seed",
            "8",
        ],
    );
    let stop = dir.join("stop");
    let reader = r#"
import hashlib, os, sys, time, pyarrow
from deltalake import DeltaTable
table, stop = sys.argv[1], sys.argv[2]
def digest(dt):
    t = dt.to_pyarrow_table().select(["_source_file", "_source_line", "c7"])
    rows = sorted(zip(*[t[c].to_pylist() for c in t.column_names]))
    return hashlib.sha256(repr(rows).encode()).hexdigest()[:16]
while not os.path.exists(stop):
    dt = DeltaTable(table)
    print("read", dt.version(), digest(dt), flush=True)
for v in (0, 1):
    print("version", v, digest(DeltaTable(table, version=v)), flush=True)
sys.stdout.flush()
os._exit(0)
"#;
    // The reader reads version 0 before the run starts, then goes on reading.
    let mut poller = std::process::Command::new(lakeload_testkit::python())
        .arg("-c")
        .arg(reader)
        .args([path_str(&delta), path_str(&stop)])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let poller_stderr = Lines::read(poller.stderr.take().unwrap());
    let mut reads = Lines::read(poller.stdout.take().unwrap());
    let slow = std::time::Duration::from_secs(120);
    reads.wait_for("read 0 ", slow);
    // The run writes every date's file and stops before its commit until the reader has
    // read the table again.
    let mut writer = Running::spawn(
        on_delta(dir, &source, &delta)
            .env("LAKELOAD_TEST_PAUSE_AT", "before_table_commit:1:stop")
            .env("LAKELOAD_LOCK_LEASE_SECONDS", "900")
            .args(["run", "--mode", "incremental"]),
    );
    writer.wait_for("lakeload-test-paused-at", std::time::Duration::from_secs(60));
    let written = walk(&delta)
        .into_iter()
        .filter(|f| f.ends_with(".snappy.parquet"))
        .count();
    assert_eq!(
        written, 60,
        "30 dates written twice: the full run's files and the new ones"
    );
    // Lines queued since are reads done before the hold, perhaps before the run began.
    reads.rest(std::time::Duration::ZERO);
    let before_the_hold = reads.seen.len();
    reads.wait_for("read ", slow);
    let held = reads.seen[before_the_hold..].join("\n");
    writer.resume();
    let (code, _, stderr) = writer.finish();
    assert_eq!(code, Some(0), "{stderr}");
    reads.wait_for("read 1 ", slow);
    std::fs::write(&stop, b"").unwrap();
    reads.wait_for("version 1 ", slow);
    let status = wait_at_most(&mut poller, slow);
    let mut poller_stderr = poller_stderr;
    poller_stderr.rest(std::time::Duration::from_secs(1));
    assert!(
        status.is_some_and(|s| s.success()),
        "{status:?}: {}",
        poller_stderr.text()
    );
    let text = reads.text();
    let version = |v: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("version {v} ")))
            .unwrap()
            .to_string()
    };
    let (before, after) = (version("0"), version("1"));
    assert_ne!(before, after);
    let reads: Vec<(&str, &str)> = text
        .lines()
        .filter_map(|l| l.strip_prefix("read "))
        .map(|l| l.split_once(' ').unwrap())
        .collect();
    for (v, digest) in &reads {
        let expected = if *v == "0" { &before } else { &after };
        assert_eq!(
            digest, expected,
            "a read of version {v} saw another table: {text}"
        );
    }
    assert!(
        held.starts_with("read 0 "),
        "a read while the run held its commit saw version 0: {held}"
    );
    assert!(reads.iter().any(|(v, _)| *v == "1"), "some reads after: {text}");
}

/// After 100 commits a run writes the checkpoint of version 100 and points
/// `_last_checkpoint` at it. A reader then needs no earlier commit: with commits 0 to 99 gone
/// from a copy of the table, deltalake and Polars read the current version from the
/// checkpoint, equal to the `parquet` table of the same runs, and lakeload itself plans and
/// runs from it. A run stopped between the checkpointed commit and its state commit is
/// completed, not loaded again.
#[test]
fn after_a_hundred_versions_readers_and_lakeload_start_from_the_checkpoint() {
    let dir = tempdir();
    let dir = dir.path();
    let source = first_files(dir, 2, 200);
    let (delta, parquet) = (dir.join("delta"), dir.join("parquet"));
    let add_file = |n: usize| small_file(dir, n);
    run_both(dir, &source, &delta, &parquet, "full");
    for n in 1..100 {
        add_file(n);
        run_both(dir, &source, &delta, &parquet, "incremental");
    }
    let log = delta.join("_delta_log");
    let checkpoint = log.join("00000000000000000100.checkpoint.parquet");
    assert!(!checkpoint.exists(), "no checkpoint before version 100");
    // Version 100, stopped before its state commit.
    add_file(100);
    kill_run_at(dir, &source, &delta, "before_state_commit");
    run(dir, &source, &parquet, "parquet", "incremental");
    assert!(
        checkpoint.exists(),
        "the run that committed version 100 wrote its checkpoint"
    );
    let pointer: serde_json::Value =
        serde_json::from_slice(&std::fs::read(log.join("_last_checkpoint")).unwrap()).unwrap();
    assert_eq!(pointer["version"], 100, "{pointer}");
    let next = run(dir, &source, &delta, "delta", "incremental");
    assert_eq!(
        next["files"],
        serde_json::json!([]),
        "nothing loaded again: {next}"
    );

    // A copy of the table without the commits the checkpoint covers.
    let trimmed = dir.join("trimmed");
    copy_dir(&delta, &trimmed);
    for version in 0..100 {
        std::fs::remove_file(trimmed.join(format!("_delta_log/{version:020}.json"))).unwrap();
    }
    let oracle = dir.join("oracle");
    copy_dir(&parquet, &oracle.join("v0"));
    let compare_latest = |table: &Path| -> serde_json::Value {
        serde_json::from_str(&python(
            COMPARE,
            &[path_str(table), path_str(&oracle), "latest".into()],
        ))
        .unwrap()
    };
    let report = compare_latest(&trimmed);
    assert_eq!(report["latest"], 100, "{report}");
    assert_eq!(
        report["v0"]["equal"], true,
        "deltalake reads the checkpoint: {report}"
    );
    assert_eq!(
        report["v0"]["polars_equal"], true,
        "Polars reads the checkpoint: {report}"
    );
    assert_eq!(
        report["v0"]["duckdb_equal"], true,
        "DuckDB reads the checkpoint: {report}"
    );
    assert!(report["v0"]["rows"].as_u64().unwrap() > 400, "{report}");
    // lakeload plans and runs from the checkpoint too.
    let out = on_delta(dir, &source, &trimmed)
        .args(["status", "--json"])
        .output();
    assert_exit(&out, 0);
    let status: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(status["table_version"], 100, "{status}");
    add_file(101);
    let more = run(dir, &source, &trimmed, "delta", "incremental");
    assert_eq!(more["table_version"], 101, "{more}");
    run(dir, &source, &parquet, "parquet", "incremental");
    std::fs::remove_dir_all(&oracle).unwrap();
    copy_dir(&parquet, &oracle.join("v0"));
    let report = compare_latest(&trimmed);
    assert_eq!(report["latest"], 101, "{report}");
    assert_eq!(report["v0"]["equal"], true, "{report}");
    // On the whole log, time travel before the checkpoint still reads.
    let out = python(
        "import sys, pyarrow\nfrom deltalake import DeltaTable\nprint(DeltaTable(sys.argv[1], version=50).version())",
        &[path_str(&delta)],
    );
    assert_eq!(out.trim(), "50");
}

/// On S3 (moto over HTTP), a Delta table built by full and incremental runs reads back at
/// every version, through deltalake's and Polars' own S3 clients, equal to the `parquet`
/// table of the same runs; `history` lists the runs.
#[test]
fn on_s3_every_version_reads_back_equal_to_the_parquet_table() {
    let s3 = S3Server::shared();
    let env = s3.env();
    let delta = format!("s3://{}/tables/sales", s3.bucket("delta-versions"));
    let dir = tempdir();
    let dir = dir.path();
    let source = first_files(dir, 4, 800);
    let (parquet, oracles) = (dir.join("parquet"), dir.join("oracles"));
    let mut runs = Vec::new();
    let mut step = |mode: &str| {
        let d = run_at(dir, &source, &delta, &env, "delta", mode);
        let p = run(dir, &source, &parquet, "parquet", mode);
        assert_eq!(
            d["counts"], p["counts"],
            "the same counts in both formats ({mode})"
        );
        copy_dir(&parquet, &oracles.join(format!("v{}", runs.len())));
        runs.push(d["run_id"].as_str().unwrap().to_string());
    };
    step("full");
    land_file(
        dir,
        "2026-11-02",
        10,
        800,
        &["--seed", "3", "--duplicate-ratio", "0.3"],
    );
    step("incremental");
    std::fs::remove_dir_all(source.join("2026/11/01")).unwrap();
    step("full");

    let out = Lakeload::new(dir)
        .envs(env.clone())
        .env("LAKELOAD_SOURCE_URL", &source)
        .env("LAKELOAD_TARGET_URL", &delta)
        .env("LAKELOAD_TARGET_FORMAT", "delta")
        .args(["history", "--json"])
        .output();
    assert_exit(&out, 0);
    let history: Vec<serde_json::Value> = serde_json::from_str(&stdout(&out)).unwrap();
    let listed: Vec<&str> = history
        .iter()
        .rev()
        .map(|v| v["run_id"].as_str().unwrap())
        .collect();
    assert_eq!(listed, runs, "one version per run, newest first");
    let newest = Lakeload::new(dir)
        .envs(env.clone())
        .env("LAKELOAD_SOURCE_URL", &source)
        .env("LAKELOAD_TARGET_URL", &delta)
        .env("LAKELOAD_TARGET_FORMAT", "delta")
        .args(["history", "--limit", "1", "--json"])
        .output();
    assert_exit(&newest, 0);
    let newest: Vec<serde_json::Value> = serde_json::from_str(&stdout(&newest)).unwrap();
    assert_eq!(newest.len(), 1);
    assert_eq!(
        newest[0]["run_id"],
        runs[runs.len() - 1].as_str(),
        "the newest version only"
    );

    let options = s3_options(s3);
    let report: serde_json::Value = serde_json::from_str(&python(
        COMPARE,
        &[
            delta.clone(),
            path_str(&oracles),
            runs.len().to_string(),
            options.to_string(),
        ],
    ))
    .unwrap();
    assert_eq!(report["latest"], 2, "{report}");
    for v in 0..runs.len() {
        let seen = &report[format!("v{v}")];
        assert_eq!(
            seen["equal"], true,
            "version {v} as deltalake reads it from S3: {report}"
        );
        assert_eq!(
            seen["polars_equal"], true,
            "version {v} as Polars reads it from S3: {report}"
        );
        assert!(seen["rows"].as_u64().unwrap() > 0, "{report}");
    }
}

/// Apache Spark with Delta Lake (pyspark 3.5.3, delta-spark 3.3.2; installed by
/// `tests/spark/run.sh` under `$HOME/.cache/lakeload/spark`, Java 17 from Debian if missing)
/// reads the table lakeload wrote: every version asked for, past the checkpoint of version 100
/// too, counts the rows deltalake counts, with the log's column types, and filters that skip
/// files on their stats lose no row. Ignored in a plain `cargo test` (it needs Java and a
/// 370 MB venv); `tests/run-all.sh` runs it.
#[test]
#[ignore = "needs Spark: run by tests/run-all.sh (cargo test --release -p lakeload --test e2e -- --ignored spark)"]
fn spark_reads_every_version_and_the_checkpoint() {
    let dir = tempdir();
    let dir = dir.path();
    let source = first_files(dir, 2, 400);
    let delta = dir.join("delta");
    run(dir, &source, &delta, "delta", "full");
    for n in 1..=101 {
        small_file(dir, n);
        run(dir, &source, &delta, "delta", "incremental");
    }
    assert!(
        delta
            .join("_delta_log/00000000000000000100.checkpoint.parquet")
            .exists()
    );
    let versions = [0u64, 1, 99, 100, 101];
    let counts = python(
        "import sys, json, pyarrow\nfrom deltalake import DeltaTable\n\
         print(json.dumps([DeltaTable(sys.argv[1], version=int(v)).to_pyarrow_table().num_rows for v in sys.argv[2:]]))",
        &std::iter::once(path_str(&delta))
            .chain(versions.iter().map(u64::to_string))
            .collect::<Vec<_>>(),
    );
    let counts: Vec<u64> = serde_json::from_str(counts.trim()).unwrap();
    let expected: Vec<String> = versions
        .iter()
        .zip(&counts)
        .map(|(v, n)| format!("{v}={n}"))
        .collect();
    let out = std::process::Command::new("bash")
        .arg(lakeload_testkit::workspace().join("tests/spark/run.sh"))
        .arg(&delta)
        .args(&expected)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "Spark read {expected:?}:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let read: Vec<(u64, u64)> = lines
        .iter()
        .filter(|l| l["latest"] == false)
        .map(|l| (l["version"].as_u64().unwrap(), l["rows"].as_u64().unwrap()))
        .collect();
    let asked: Vec<(u64, u64)> = versions.iter().copied().zip(counts.iter().copied()).collect();
    assert_eq!(read, asked, "what Spark read");
    assert!(
        lines
            .iter()
            .any(|l| l["stats"]["filtered_c1"].as_u64().is_some_and(|n| n > 0)),
        "the filters matched rows: {lines:?}"
    );
}

/// A table another writer upgraded with a table feature lakeload does not support (column
/// mapping here, beside deletion vectors, which it does) is refused with the versions and the
/// feature it needs, and left as it was: a lakeload commit or checkpoint would drop the features
/// its readers rely on.
#[test]
fn a_table_upgraded_by_another_writer_is_refused_untouched() {
    let dir = tempdir();
    let dir = dir.path();
    let source = first_files(dir, 2, 300);
    let delta = dir.join("delta");
    run(dir, &source, &delta, "delta", "full");
    let upgrade = concat!(
        r#"{"protocol":{"minReaderVersion":3,"minWriterVersion":7,"#,
        r#""readerFeatures":["deletionVectors","columnMapping"],"#,
        r#""writerFeatures":["deletionVectors","columnMapping"]}}"#,
        "\n",
        r#"{"commitInfo":{"operation":"SET TBLPROPERTIES","engineInfo":"another-writer"}}"#,
        "\n"
    );
    std::fs::write(delta.join("_delta_log/00000000000000000001.json"), upgrade).unwrap();
    land_file(dir, "2026-11-03", 10, 200, &[]);
    let before = walk(&delta);
    let out = on_delta(dir, &source, &delta)
        .args(["run", "--mode", "incremental"])
        .output();
    assert_exit(&out, 2);
    let said = stderr(&out);
    assert!(
        said.contains("reader version 3 and writer version 7")
            && said.contains("columnMapping")
            && said.contains("target.url"),
        "{said}"
    );
    let after: Vec<String> = walk(&delta)
        .into_iter()
        .filter(|p| !p.contains("/_lakeload/"))
        .collect();
    let before: Vec<String> = before
        .into_iter()
        .filter(|p| !p.contains("/_lakeload/"))
        .collect();
    assert_eq!(after, before, "nothing written to the table");
}

/// Writes the rows of the `parquet` table at `oracle` as a new Delta table at `foreign` with
/// delta-rs (`write_deltalake`, partitioned like lakeload's), twice, so its log holds a
/// version 0 whose files the current version 1 no longer reads.
fn write_foreign_delta(oracle: &Path, foreign: &Path) {
    let script = r#"
import glob, sys, pyarrow as pa, pyarrow.parquet as pq
from deltalake import write_deltalake
files = [f for f in glob.glob(sys.argv[1] + "/**/*.parquet", recursive=True) if "_lakeload" not in f]
t = pa.concat_tables([pq.read_table(f, partitioning=None) for f in files])
t = t.set_column(t.schema.get_field_index("_source_modified"), "_source_modified",
                 t["_source_modified"].cast(pa.timestamp("us", tz="UTC")))
for _ in range(2):
    write_deltalake(sys.argv[2], t, partition_by=["c7"], mode="overwrite")
"#;
    python(script, &[path_str(oracle), path_str(foreign)]);
}

/// A Delta table lakeload did not write (delta-rs made it) is not adopted silently: `plan`
/// and `run` both find its live files in the way, and the run stops (exit 2) naming delta-rs
/// as the table's last writer, with nothing written to the table. With
/// `target.existing_objects = adopt` an incremental run merges their rows (the table then
/// equals lakeload's own of the same source files) and a full run replaces them in a new
/// version; no file delta-rs wrote is deleted from storage, the older version's included.
#[test]
fn a_delta_table_lakeload_did_not_write_is_refused_unless_adopted() {
    let dir = tempdir();
    let dir = dir.path();
    let source = first_files(dir, 3, 400);
    let (oracle, foreign) = (dir.join("oracle"), dir.join("foreign"));
    run(dir, &source, &oracle, "parquet", "full");
    write_foreign_delta(&oracle, &foreign);
    let theirs = walk(&foreign);

    for mode in ["full", "incremental"] {
        let plan = on_delta(dir, &source, &foreign)
            .args(["plan", "--mode", mode, "--json"])
            .output();
        assert_exit(&plan, 0);
        let plan: serde_json::Value = serde_json::from_str(&stdout(&plan)).unwrap();
        let in_the_way = plan["objects_in_the_way"].as_array().unwrap();
        assert!(
            !in_the_way.is_empty() && plan["objects_to_delete"].as_array().unwrap().is_empty(),
            "{mode}: plan finds delta-rs' files in the way, deletes none: {plan}"
        );
        let refused = on_delta(dir, &source, &foreign)
            .args(["run", "--mode", mode])
            .output();
        assert_exit(&refused, 2);
        let said = stderr(&refused);
        assert!(
            said.contains("delta-rs") && said.contains("target.existing_objects"),
            "{mode}: {said}"
        );
        // Beside the data: lakeload's folder (the run's summary) and the local store's
        // guards of its conditional writes.
        let data: Vec<String> = walk(&foreign)
            .into_iter()
            .filter(|p| !p.contains("/_lakeload/") && !p.contains("/.lakeload-tmp-cas/"))
            .collect();
        assert_eq!(data, theirs, "{mode}: nothing written to the table");
        assert!(!foreign.join("_lakeload/state.json").exists(), "{mode}");
    }

    let adopted = on_delta(dir, &source, &foreign)
        .env("LAKELOAD_TARGET_EXISTING_OBJECTS", "adopt")
        .args(["run", "--mode", "incremental", "--json"])
        .output();
    assert_exit(&adopted, 0);
    assert_eq!(summary_json(&adopted)["table_version"], 2);
    assert!(
        delta_equals(&foreign, None, &oracle),
        "adopted rows merged with the same files' rows equal lakeload's own table"
    );
    // lakeload's own now: the next run needs no setting, and a full one replaces every row.
    land_file(dir, "2026-11-03", 10, 300, &[]);
    run(dir, &source, &foreign, "delta", "full");
    run(dir, &source, &oracle, "parquet", "full");
    assert!(delta_equals(&foreign, None, &oracle));
    let now = walk(&foreign);
    for file in &theirs {
        assert!(now.contains(file), "{file} (delta-rs' history) is kept");
    }
}

/// The commits of the log at `delta`, oldest first, as lines of JSON actions.
fn log_commits(delta: &Path) -> Vec<Vec<serde_json::Value>> {
    let mut keys: Vec<String> = walk(&delta.join("_delta_log"))
        .into_iter()
        .filter(|p| p.ends_with(".json"))
        .collect();
    keys.sort();
    keys.iter()
        .map(|k| {
            std::fs::read_to_string(k)
                .unwrap()
                .lines()
                .map(|l| serde_json::from_str(l).unwrap())
                .collect()
        })
        .collect()
}

/// Commits, as another engine would, the table's latest `metaData` changed by `edit`.
fn commit_metadata_as_spark(delta: &Path, operation: &str, edit: impl FnOnce(&mut serde_json::Value)) {
    let commits = log_commits(delta);
    let mut metadata = commits
        .iter()
        .flatten()
        .filter_map(|a| a.get("metaData").cloned())
        .next_back()
        .unwrap();
    edit(&mut metadata);
    let info = serde_json::json!({ "commitInfo": {
        "timestamp": 1_700_000_000_000i64,
        "operation": operation,
        "engineInfo": "Apache-Spark/3.5.3 Delta-Lake/3.3.2",
    }});
    let body = format!("{}\n{info}\n", serde_json::json!({ "metaData": metadata }));
    let key = delta.join(format!("_delta_log/{:020}.json", commits.len()));
    std::fs::write(key, body).unwrap();
}

/// Gives the schema field `column` of a `metaData` action the metadata `key` = `value`.
fn set_field_metadata(metadata: &mut serde_json::Value, column: &str, key: &str, value: serde_json::Value) {
    let mut schema: serde_json::Value =
        serde_json::from_str(metadata["schemaString"].as_str().unwrap()).unwrap();
    for field in schema["fields"].as_array_mut().unwrap() {
        if field["name"] == column {
            field["metadata"][key] = value.clone();
        }
    }
    metadata["schemaString"] = schema.to_string().into();
}

/// The data files and log of the table at `delta` (not lakeload's own folder, nor the local
/// store's guards of its conditional writes).
fn table_files(delta: &Path) -> Vec<String> {
    walk(delta)
        .into_iter()
        .filter(|p| !p.contains("/_lakeload/") && !p.contains("/.lakeload-tmp-cas/"))
        .collect()
}

/// An incremental run that the table's rules refuse: exit 2 with `reason` in the message, and
/// the table's files and log as they were.
fn assert_refused(dir: &Path, source: &Path, delta: &Path, mode: &str, reason: &str) {
    let before = table_files(delta);
    let out = on_delta(dir, source, delta)
        .args(["run", "--mode", mode])
        .output();
    assert_exit(&out, 2);
    let said = stderr(&out);
    assert!(said.contains(reason), "{mode}: expected {reason:?} in: {said}");
    assert_eq!(table_files(delta), before, "{mode}: nothing written");
}

/// What another engine set on a lakeload table stays: the table's description, its
/// configuration, a column's comment and metaData keys lakeload does not know, as delta-rs
/// reads them after lakeload's next run. What protocol writer version 2 makes every writer
/// honour is refused with the reason and nothing written: `delta.appendOnly = true` (set by
/// delta-rs) when the run would replace files, a column invariant. Once the property is unset,
/// the next run loads what waited. A column delta-rs added and back-filled keeps its values
/// through an incremental and a full run (rows of new lines get null); one of a type lakeload
/// cannot carry is refused by name.
#[test]
fn another_engines_metadata_is_kept_and_its_rules_are_honoured() {
    let dir = tempdir();
    let dir = dir.path();
    let source = first_files(dir, 3, 400);
    let (delta, oracle) = (dir.join("delta"), dir.join("oracle"));
    run_both(dir, &source, &delta, &oracle, "full");
    commit_metadata_as_spark(&delta, "SET TBLPROPERTIES", |m| {
        m["description"] = "daily sales, loaded by lakeload".into();
        m["configuration"]["owner.team"] = "data-platform".into();
        m["x-engine-extension"] = serde_json::json!({ "kept": true });
        set_field_metadata(m, "c1", "comment", "the customer".into());
    });
    land_file(dir, "2026-11-02", 10, 300, &["--seed", "4"]);
    run_both(dir, &source, &delta, &oracle, "incremental");
    assert!(delta_equals(&delta, None, &oracle));
    let seen = python(
        r#"
import json, sys
from deltalake import DeltaTable
dt = DeltaTable(sys.argv[1])
m = dt.metadata()
comment = [f.metadata.get("comment") for f in dt.schema().fields if f.name == "c1"][0]
print(json.dumps({"description": m.description, "configuration": m.configuration, "comment": comment, "version": dt.version()}))
"#,
        &[path_str(&delta)],
    );
    let seen: serde_json::Value = serde_json::from_str(&seen).unwrap();
    assert_eq!(seen["version"], 2, "{seen}");
    assert_eq!(seen["description"], "daily sales, loaded by lakeload", "{seen}");
    assert_eq!(seen["configuration"]["owner.team"], "data-platform", "{seen}");
    assert_eq!(seen["comment"], "the customer", "{seen}");
    let latest_metadata = log_commits(&delta)
        .iter()
        .flatten()
        .filter_map(|a| a.get("metaData").cloned())
        .next_back()
        .unwrap();
    assert_eq!(latest_metadata["x-engine-extension"]["kept"], true);
    // lakeload's commit names its run's file list by a digest; the list lies beside the log.
    let info = log_commits(&delta)
        .concat()
        .into_iter()
        .filter_map(|a| a.get("commitInfo").cloned())
        .rfind(|i| i.get("lakeload").is_some())
        .unwrap();
    let listed = &info["lakeload"]["files"];
    assert_eq!(listed["count"], 1, "the incremental run's one file: {info}");
    assert_eq!(listed["sha256"].as_str().map(str::len), Some(64), "{info}");
    assert!(delta.join(listed["path"].as_str().unwrap()).is_file(), "{info}");

    python(
        r#"
import sys
from deltalake import DeltaTable
DeltaTable(sys.argv[1]).alter.set_table_properties({"delta.appendOnly": "true"})
"#,
        &[path_str(&delta)],
    );
    land_file(dir, "2026-11-02", 11, 300, &["--seed", "5"]);
    assert_refused(
        dir,
        &source,
        &delta,
        "incremental",
        "append-only (delta.appendOnly = true)",
    );
    assert_refused(
        dir,
        &source,
        &delta,
        "full",
        "append-only (delta.appendOnly = true)",
    );
    python(
        r#"
import sys
from deltalake import DeltaTable
DeltaTable(sys.argv[1]).alter.set_table_properties({"delta.appendOnly": "false"})
"#,
        &[path_str(&delta)],
    );
    run_both(dir, &source, &delta, &oracle, "incremental");
    assert!(delta_equals(&delta, None, &oracle), "the waiting file loaded");

    land_file(dir, "2026-11-03", 12, 300, &["--seed", "6"]);
    commit_metadata_as_spark(&delta, "ADD CONSTRAINT", |m| {
        let invariant = serde_json::json!({ "expression": { "expression": "c1 IS NOT NULL" } });
        set_field_metadata(m, "c1", "delta.invariants", invariant.to_string().into());
    });
    assert_refused(
        dir,
        &source,
        &delta,
        "incremental",
        "invariant (delta.invariants)",
    );
    commit_metadata_as_spark(&delta, "DROP CONSTRAINT", |m| {
        let mut schema: serde_json::Value =
            serde_json::from_str(m["schemaString"].as_str().unwrap()).unwrap();
        for field in schema["fields"].as_array_mut().unwrap() {
            field["metadata"]
                .as_object_mut()
                .unwrap()
                .remove("delta.invariants");
        }
        m["schemaString"] = schema.to_string().into();
    });
    // A column delta-rs adds and back-fills survives lakeload's runs, incremental and full.
    let backfilled = python(
        r#"
import sys
from deltalake import DeltaTable, Field
dt = DeltaTable(sys.argv[1])
dt.alter.add_columns([Field("note", "string", nullable=True)])
dt.update(updates={"note": "concat('n-', c1)"})
print(DeltaTable(sys.argv[1]).version())
"#,
        &[path_str(&delta)],
    );
    run_both(dir, &source, &delta, &oracle, "incremental");
    let seen = added_column_kept(&path_str(&delta), None, &backfilled, Some(&oracle), None);
    assert!(seen["equal"] == true && seen["wrong"] == 0, "{seen}");
    assert!(
        seen["nulls"].as_u64() > Some(0) && seen["kept"].as_u64() > Some(0),
        "{seen}"
    );
    land_file(dir, "2026-11-04", 13, 300, &["--seed", "7"]);
    run_both(dir, &source, &delta, &oracle, "full");
    let after_full = added_column_kept(&path_str(&delta), None, &backfilled, Some(&oracle), None);
    assert!(
        after_full["equal"] == true && after_full["wrong"] == 0,
        "{after_full}"
    );
    assert!(
        after_full["kept"].as_u64() > Some(0),
        "a full run keeps the values of the rows it rebuilds from the same lines: {after_full}"
    );
    // A column lakeload cannot carry (a nested type) is refused by name.
    python(
        r#"
import sys
from deltalake import DeltaTable, Field
from deltalake.schema import ArrayType
DeltaTable(sys.argv[1]).alter.add_columns([Field("labels", ArrayType("string"), nullable=True)])
"#,
        &[path_str(&delta)],
    );
    land_file(dir, "2026-11-05", 14, 300, &["--seed", "8"]);
    assert_refused(
        dir,
        &source,
        &delta,
        "incremental",
        "schema does not name: labels",
    );
}

/// The column `note` another engine added to the Delta table at argv[1] (deltalake storage
/// options argv[2], JSON or null) and back-filled at version argv[3]: `wrong` counts the rows
/// whose value is not the one their source line and date had then (or null for a line that had
/// none); `kept` and `nulls` count values and nulls. With a `parquet` oracle at argv[4],
/// `equal` says whether lakeload's columns hold exactly its rows (dates from 2030 on, another
/// engine's, left aside) less those another engine deleted: argv[5], JSON `{"c1", "c7",
/// "files"}` (the customer, date and source files loaded then) or null.
const ADDED_COLUMN_KEPT: &str = r#"
import datetime, glob, json, sys, pyarrow as pa, pyarrow.parquet as pq
from deltalake import DeltaTable
opts = json.loads(sys.argv[2]) or None
def line(r):
    return (r["_source_file"], r["_source_line"], r["_source_modified"].replace(tzinfo=None), r["c7"])
then = {line(r): r["note"] for r in DeltaTable(sys.argv[1], version=int(sys.argv[3]), storage_options=opts).to_pyarrow_table().to_pylist()}
now = DeltaTable(sys.argv[1], storage_options=opts).to_pyarrow_table().to_pylist()
kept = sum(1 for r in now if r["note"] is not None)
seen = {"wrong": sum(1 for r in now if r["note"] != then.get(line(r))), "kept": kept, "nulls": len(now) - kept}
if sys.argv[4]:
    gone = json.loads(sys.argv[5])
    def is_deleted(r):
        return gone is not None and r["c1"] == gone["c1"] and str(r["c7"]) == gone["c7"] and r["_source_file"] in gone["files"]
    def rows(rs):
        out = []
        for r in rs:
            r = {k: v for k, v in r.items() if k != "note"}
            r["_source_modified"] = r["_source_modified"].replace(tzinfo=None)
            out.append(tuple(sorted((k, str(v)) for k, v in r.items())))
        return sorted(out)
    files = [f for f in glob.glob(sys.argv[4] + "/**/*.parquet", recursive=True) if "_lakeload" not in f]
    oracle = pa.concat_tables([pq.read_table(f, partitioning=None) for f in files]).to_pylist()
    ours = [r for r in now if r["c7"] < datetime.date(2030, 1, 1)]
    seen["equal"] = rows(ours) == rows([r for r in oracle if not is_deleted(r)])
    seen["deleted"] = sum(1 for r in oracle if is_deleted(r))
print(json.dumps(seen))
"#;

/// [`ADDED_COLUMN_KEPT`] for the table at `delta` (`options`: deltalake's storage options),
/// back-filled at version `backfilled`, against `oracle` less the `deleted` row when given.
fn added_column_kept(
    delta: &str,
    options: Option<&serde_json::Value>,
    backfilled: &str,
    oracle: Option<&Path>,
    deleted: Option<&PickedRow>,
) -> serde_json::Value {
    let deleted = deleted.map(|p| serde_json::json!({"c1": p.c1, "c7": p.c7, "files": p.first_files}));
    let out = python(
        ADDED_COLUMN_KEPT,
        &[
            delta.to_string(),
            options.map_or("null".into(), |o| o.to_string()),
            backfilled.trim().to_string(),
            oracle.map(path_str).unwrap_or_default(),
            deleted.map_or("null".into(), |d| d.to_string()),
        ],
    );
    serde_json::from_str(out.trim()).unwrap()
}

/// `vacuum` without `--retain` keeps files for the table's own
/// `delta.deletedFileRetentionDuration` (set here by delta-rs to zero hours): the files the
/// second full run replaced go, the live ones stay and the table reads whole.
#[test]
fn vacuum_keeps_files_for_the_tables_own_retention() {
    let dir = tempdir();
    let dir = dir.path();
    let source = first_files(dir, 3, 300);
    let (delta, oracle) = (dir.join("delta"), dir.join("oracle"));
    run(dir, &source, &delta, "delta", "full");
    land_file(dir, "2026-11-02", 10, 300, &["--seed", "4"]);
    run(dir, &source, &delta, "delta", "full");
    run(dir, &source, &oracle, "parquet", "full");
    let vacuum = |args: &[&str]| -> serde_json::Value {
        let out = on_delta(dir, &source, &delta)
            .args(["vacuum", "--json"])
            .args(args)
            .output();
        assert_exit(&out, 0);
        serde_json::from_str(&stdout(&out)).unwrap()
    };
    assert_eq!(vacuum(&[])["deleted"], serde_json::json!([]), "7 days by default");
    python(
        r#"
import sys
from deltalake import DeltaTable
DeltaTable(sys.argv[1]).alter.set_table_properties({"delta.deletedFileRetentionDuration": "interval 0 hours"})
"#,
        &[path_str(&delta)],
    );
    let done = vacuum(&[]);
    assert_eq!(done["retain_hours"], 0.0, "{done}");
    // Their tombstones are past the retention, so no longer in the snapshot: vacuum finds
    // the replaced files in the commits, and records how far it read.
    assert!(
        !done["deleted"].as_array().unwrap().is_empty(),
        "the replaced files go: {done}"
    );
    let state: serde_json::Value =
        serde_json::from_slice(&std::fs::read(delta.join("_lakeload/state.json")).unwrap()).unwrap();
    assert!(state["vacuumed_through"].as_u64().is_some(), "{state}");
    assert_eq!(
        vacuum(&[])["deleted"],
        serde_json::json!([]),
        "nothing left to delete"
    );
    assert!(
        delta_equals(&delta, None, &oracle),
        "the current version reads whole"
    );
}

/// Another engine (delta-rs) appends rows of a new date, and another commits a version that
/// changes no file, while an incremental run is about to commit: neither touches what the run
/// read or replaces, so the run commits after them. The table holds the `parquet` table of
/// the same runs plus delta-rs' rows, and the next run keeps them. Local disk and S3 (moto).
#[test]
fn a_run_that_loses_the_race_to_commits_it_does_not_conflict_with_commits_after_them() {
    let s3 = S3Server::shared();
    for on_s3 in [false, true] {
        let dir = tempdir();
        let dir = dir.path();
        let source = first_files(dir, 2, 500);
        let oracle = dir.join("oracle");
        let bucket = s3.bucket("delta-race");
        let (delta, env, options) = match on_s3 {
            true => (format!("s3://{bucket}/t"), s3.env(), Some(s3_options(s3))),
            false => (path_str(&dir.join("delta")), Vec::new(), None),
        };
        let options_arg = options.as_ref().map_or("null".into(), |o| o.to_string());
        run_at(dir, &source, &delta, &env, "delta", "full");
        run(dir, &source, &oracle, "parquet", "full");
        land_file(dir, "2026-11-01", 10, 500, &["--seed", "5"]);
        let paused = paused_before_commit(dir, &source, &delta, &env);
        let appended = python(
            APPEND_OTHER_DATE,
            &[path_str(&oracle), delta.clone(), options_arg.clone()],
        );
        let empty = "{\"commitInfo\":{\"timestamp\":1,\"operation\":\"SET TAGS\",\"engineInfo\":\"another-writer\"}}\n";
        let second = "_delta_log/00000000000000000002.json";
        match on_s3 {
            true => s3.put(&bucket, &format!("t/{second}"), empty.as_bytes()),
            false => std::fs::write(dir.join("delta").join(second), empty).unwrap(),
        }
        paused.resume();
        let (code, stdout, stderr) = paused.finish();
        assert_eq!(code, Some(0), "on S3: {on_s3}: {stderr}");
        let summary: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
        assert_eq!(
            summary["table_version"], 3,
            "after delta-rs' 1 and the other 2 (on S3: {on_s3}): {stderr}"
        );
        run(dir, &source, &oracle, "parquet", "incremental");
        let holds = || {
            python(
                OTHER_DATE_EQUALS,
                &[
                    delta.clone(),
                    path_str(&oracle),
                    appended.trim().to_string(),
                    options_arg.clone(),
                ],
            )
        };
        assert_eq!(
            holds().trim(),
            "True",
            "the oracle plus delta-rs' rows (on S3: {on_s3})"
        );
        land_file(dir, "2026-11-02", 11, 500, &["--seed", "6"]);
        run_at(dir, &source, &delta, &env, "delta", "incremental");
        run(dir, &source, &oracle, "parquet", "incremental");
        assert_eq!(
            holds().trim(),
            "True",
            "the next run keeps delta-rs' rows (on S3: {on_s3})"
        );
    }
}

/// delta-rs appends 50 rows of the `parquet` table at argv[1], moved to 2030-01-01, to the
/// Delta table at argv[2] (storage options argv[3], JSON; on S3 it commits with conditional
/// puts, as lakeload does); prints how many.
const APPEND_OTHER_DATE: &str = r#"
import datetime, glob, json, sys, pyarrow as pa, pyarrow.parquet as pq
from deltalake import write_deltalake
options = json.loads(sys.argv[3])
if options:
    options = {**options, "conditional_put": "etag"}
files = sorted(f for f in glob.glob(sys.argv[1] + "/**/*.parquet", recursive=True) if "_lakeload" not in f)
t = pq.read_table(files[0], partitioning=None).slice(0, 50)
t = t.set_column(t.schema.get_field_index("_source_modified"), "_source_modified",
                 t["_source_modified"].cast(pa.timestamp("us", tz="UTC")))
t = t.set_column(t.schema.get_field_index("c7"), "c7", pa.array([datetime.date(2030, 1, 1)] * t.num_rows))
write_deltalake(sys.argv[2], t, mode="append", storage_options=options or None)
print(t.num_rows)
"#;

/// Whether the Delta table at argv[1] (storage options argv[4], JSON) holds the rows of the
/// `parquet` table at argv[2] outside 2030-01-01, and argv[3] rows on that date.
const OTHER_DATE_EQUALS: &str = r#"
import datetime, glob, json, sys, pyarrow as pa, pyarrow.parquet as pq, pyarrow.compute as pc
from deltalake import DeltaTable
def rows(t):
    out = []
    for r in t.to_pylist():
        r["_source_modified"] = r["_source_modified"].replace(tzinfo=None)
        out.append(tuple(sorted((k, str(v)) for k, v in r.items())))
    return sorted(out)
dt = DeltaTable(sys.argv[1], storage_options=json.loads(sys.argv[4]) or None).to_pyarrow_table()
other = pc.equal(dt["c7"], pa.scalar(datetime.date(2030, 1, 1)))
files = [f for f in glob.glob(sys.argv[2] + "/**/*.parquet", recursive=True) if "_lakeload" not in f]
oracle = pa.concat_tables([pq.read_table(f, partitioning=None) for f in files])
print(rows(dt.filter(pc.invert(other))) == rows(oracle) and dt.filter(other).num_rows == int(sys.argv[3]))
"#;

/// `rollback --to-version N` tells the truth about N: the table gets N's metadata back (a
/// description another engine set later is gone), the state gets the settings N was built
/// with (an incremental run under them is accepted, under the later ones refused), and source
/// files loaded after N that are gone from the source are named and refused (nothing
/// written) unless `--allow-missing`, which reports them.
#[test]
fn a_rollback_restores_the_versions_metadata_and_settings_and_names_lost_sources() {
    let dir = tempdir();
    let dir = dir.path();
    let source = first_files(dir, 3, 300);
    let delta = dir.join("delta");
    run(dir, &source, &delta, "delta", "full");
    let rekeyed = || on_delta(dir, &source, &delta).env("LAKELOAD_SCHEMA_KEY", "c1,c7");
    let out = rekeyed().args(["run", "--mode", "full"]).output();
    assert_exit(&out, 0);
    commit_metadata_as_spark(&delta, "SET TBLPROPERTIES", |m| {
        m["description"] = "set after version 0".into();
    });
    land_file(dir, "2026-11-02", 10, 300, &["--seed", "4"]);
    let out = rekeyed().args(["run", "--mode", "incremental"]).output();
    assert_exit(&out, 0);
    let landed = lakeload_testkit::files_under(&source)
        .into_iter()
        .find(|p| path_str(p).contains("000010"))
        .unwrap();
    std::fs::remove_file(&landed).unwrap();

    let rollback = |more: &[&str]| {
        on_delta(dir, &source, &delta)
            .args(["rollback", "--to-version", "0", "--json"])
            .args(more)
            .output()
    };
    let before = table_files(&delta);
    let refused = rollback(&[]);
    assert_exit(&refused, 2);
    let said = stderr(&refused);
    assert!(
        said.contains("000010") && said.contains("--allow-missing"),
        "{said}"
    );
    assert_eq!(table_files(&delta), before, "nothing written");

    let done = rollback(&["--allow-missing"]);
    assert_exit(&done, 0);
    let done: serde_json::Value = serde_json::from_str(&stdout(&done)).unwrap();
    let missing: Vec<String> = serde_json::from_value(done["missing_sources"].clone()).unwrap();
    assert!(missing.len() == 1 && missing[0].contains("000010"), "{done}");
    let description = python(
        "import sys\nfrom deltalake import DeltaTable\nprint(DeltaTable(sys.argv[1]).metadata().description)",
        &[path_str(&delta)],
    );
    assert_eq!(description.trim(), "None", "version 0's metadata is back");
    let oracle = dir.join("oracle");
    run(dir, &source, &oracle, "parquet", "full");
    assert!(delta_equals(&delta, None, &oracle), "version 0's rows");

    let refused = rekeyed().args(["run", "--mode", "incremental"]).output();
    assert_exit(&refused, 2);
    assert!(stderr(&refused).contains("schema.key"), "{}", stderr(&refused));
    run(dir, &source, &delta, "delta", "incremental");
}

/// Runs Spark SQL statements (pyspark 3.5.3 + delta-spark 3.3.2, `tests/spark/run.sh --sql`)
/// in one session; returns each statement's rows.
fn spark_sql(statements: &[String]) -> Vec<serde_json::Value> {
    spark_sql_with(&[], statements)
}

/// [`spark_sql`] with Spark pointed at the test S3 server: tables named `s3a://bucket/path`.
fn spark_sql_on_s3(s3: &S3Server, statements: &[String]) -> Vec<serde_json::Value> {
    let env = [
        ("LAKELOAD_SPARK_S3_ENDPOINT", s3.endpoint.as_str()),
        ("AWS_ACCESS_KEY_ID", "testing"),
        ("AWS_SECRET_ACCESS_KEY", "testing"),
        ("AWS_REGION", "us-east-1"),
    ];
    spark_sql_with(&env, statements)
}

fn spark_sql_with(env: &[(&str, &str)], statements: &[String]) -> Vec<serde_json::Value> {
    let out = std::process::Command::new("bash")
        .arg(lakeload_testkit::workspace().join("tests/spark/run.sh"))
        .arg("--sql")
        .args(statements)
        .envs(env.iter().copied())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "Spark SQL {statements:?}:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .map(|l| l["rows"].clone())
        .collect()
}

/// Whether the Delta table at argv[1] holds, outside the dates from 2030 on, the rows of the
/// `parquet` table at argv[2] less those Spark deleted (c1 = argv[4] on c7 = argv[5], loaded
/// from a file named in argv[6], a JSON list), and argv[3] rows from 2030 on. With argv[7] =
/// `dv`, the table is read by DuckDB (it has deletion vectors).
const SHARED_EQUALS: &str = r#"
import datetime, glob, json, sys, pyarrow as pa, pyarrow.parquet as pq, pyarrow.compute as pc
from deltalake import DeltaTable
def rows(t):
    out = []
    for r in t.to_pylist():
        r["_source_modified"] = r["_source_modified"].replace(tzinfo=None)
        out.append(tuple(sorted((k, str(v)) for k, v in r.items())))
    return sorted(out)
if len(sys.argv) > 7 and sys.argv[7] == "dv":
    # A table with deletion vectors: read by DuckDB (delta-kernel-rs); deltalake refuses it.
    import duckdb, duckdb_extension_delta, os
    ext = glob.glob(os.path.join(os.path.dirname(duckdb_extension_delta.__file__), "extensions", "*", "delta.duckdb_extension"))[0]
    con = duckdb.connect()
    con.load_extension(ext)
    dt = con.sql(f"select * from delta_scan('{sys.argv[1]}')").to_arrow_table()
else:
    dt = DeltaTable(sys.argv[1]).to_pyarrow_table()
spark = pc.greater_equal(dt["c7"], pa.scalar(datetime.date(2030, 1, 1)))
files = [f for f in glob.glob(sys.argv[2] + "/**/*.parquet", recursive=True) if "_lakeload" not in f]
oracle = pa.concat_tables([pq.read_table(f, partitioning=None) for f in files])
old = json.loads(sys.argv[6])
deleted = pc.and_(pc.and_(pc.equal(oracle["c1"], sys.argv[4]),
                          pc.equal(oracle["c7"].cast(pa.string()), sys.argv[5])),
                  pc.is_in(oracle["_source_file"], pa.array(old)))
ours, expected = rows(dt.filter(pc.invert(spark))), rows(oracle.filter(pc.invert(deleted)))
print(json.dumps({"equal": ours == expected, "ours": len(ours), "expected": len(expected),
                  "spark_rows": dt.filter(spark).num_rows, "deleted": oracle.filter(deleted).num_rows,
                  "spark_ok": dt.filter(spark).num_rows == int(sys.argv[3])}))
"#;

/// One customer's row on one date, for another engine to delete: the first row of the
/// `parquet` oracle's first object, and the source files loaded so far (those under `source`).
struct PickedRow {
    c1: String,
    c7: String,
    first_files: Vec<String>,
}

fn picked_row(oracle: &Path, source: &Path) -> PickedRow {
    let picked = python(
        r#"
import glob, json, sys, pyarrow.parquet as pq
f = sorted(f for f in glob.glob(sys.argv[1] + "/**/*.parquet", recursive=True) if "_lakeload" not in f)[0]
t = pq.read_table(f, partitioning=None)
print(json.dumps({"c1": t["c1"][0].as_py(), "c7": str(t["c7"][0].as_py())}))
"#,
        &[path_str(oracle)],
    );
    let picked: serde_json::Value = serde_json::from_str(picked.trim()).unwrap();
    PickedRow {
        c1: picked["c1"].as_str().unwrap().to_string(),
        c7: picked["c7"].as_str().unwrap().to_string(),
        first_files: lakeload_testkit::files_under(source)
            .iter()
            .map(|p| p.strip_prefix(source).unwrap().to_string_lossy().into_owned())
            .collect(),
    }
}

/// Source lines for `day` whose keys no generated file has (customers `Z…`), `n` of them, with
/// amount `cents` (so a later file can update them).
fn new_key_lines(day: &str, n: usize, cents: u32) -> String {
    (1..=n)
        .map(|i| {
            format!(
                "Z{i:06}|view|P00001|{}.{:02}||{day}T00:00:00Z|{day}|S00000001\n",
                cents / 100,
                cents % 100
            )
        })
        .collect()
}

/// Delta live files of `day`, as deltalake lists them.
fn live_files_of(delta: &Path, day: &str) -> usize {
    let out = python(
        r#"
import sys
from deltalake import DeltaTable
print(sum(1 for f in DeltaTable(sys.argv[1]).file_uris() if f"c7={sys.argv[2]}/" in f))
"#,
        &[path_str(delta), day.to_string()],
    );
    out.trim().parse().unwrap()
}

/// A new file whose rows for a date all have keys the date does not hold yet is appended to
/// the date as a file of its own: the date's file stays live (no remove in the commit), the
/// table equals the `parquet` table of the same runs, and `status` shows the date in two
/// files. A later file updating keys of the appended file rewrites only that file: the
/// date's first file stays, and the table still equals the oracle. Issue 29 (1): the first
/// file's key statistics in the log rule out both files' keys, so neither run reads it at all:
/// both succeed while it is out of reach.
#[test]
fn new_keys_are_appended_beside_a_dates_file_and_updates_rewrite_only_their_file() {
    let dir = tempdir();
    let dir = dir.path();
    let source = first_files(dir, 3, 400);
    let (delta, oracle) = (dir.join("delta"), dir.join("oracle"));
    run_both(dir, &source, &delta, &oracle, "full");
    let day = "2026-11-01";
    assert_eq!(live_files_of(&delta, day), 1);
    let generated: Vec<String> = log_commits(&delta)[0]
        .iter()
        .filter_map(|a| a["add"]["path"].as_str().map(str::to_string))
        .filter(|p| p.starts_with(&format!("c7={day}/")))
        .collect();
    assert_eq!(generated.len(), 1, "{generated:?}");
    // Generated customers are C…: the Z keys lie past every file's maximum. One more file is
    // loaded while the generated file is out of reach (a run that read it would fail), then
    // the oracle's run.
    let (stored, hidden) = (delta.join(&generated[0]), dir.join("hidden.parquet"));
    let load_without_it = |name: &str, cents: u32| {
        std::fs::write(source.join(name), gzip(new_key_lines(day, 30, cents).as_bytes())).unwrap();
        std::fs::rename(&stored, &hidden).unwrap();
        let summary = run(dir, &source, &delta, "delta", "incremental");
        std::fs::rename(&hidden, &stored).unwrap();
        run(dir, &source, &oracle, "parquet", "incremental");
        summary
    };
    let summary = load_without_it("z-new.gz", 100);
    assert_eq!(summary["rows_inserted"], 30, "{summary}");
    assert_eq!(summary["rows_updated"], 0, "{summary}");
    assert!(
        delta_equals(&delta, None, &oracle),
        "the appended table equals the oracle"
    );
    assert_eq!(
        live_files_of(&delta, day),
        2,
        "the new keys went beside the date's file"
    );
    let last_commit = log_commits(&delta).pop().unwrap();
    assert!(
        !last_commit.iter().any(|a| a.get("remove").is_some()),
        "nothing removed: {last_commit:?}"
    );
    let status = on_delta(dir, &source, &delta).args(["status", "--json"]).output();
    assert_exit(&status, 0);
    let status: serde_json::Value = serde_json::from_str(&stdout(&status)).unwrap();
    let dated = status["dates"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["date"] == day)
        .cloned()
        .unwrap();
    assert_eq!(dated["files"], 2, "{dated}");

    // Newer rows for the Z keys: only the appended file holds them, so only it is merged
    // with them (one file removed, one added); the generated file stays, unread.
    let summary = load_without_it("z-update.gz", 999);
    assert_eq!(summary["rows_updated"], 30, "{summary}");
    assert!(
        delta_equals(&delta, None, &oracle),
        "the merged table equals the oracle"
    );
    assert_eq!(live_files_of(&delta, day), 2, "{summary}");
    let removed: Vec<String> = log_commits(&delta)
        .pop()
        .unwrap()
        .iter()
        .filter_map(|a| a["remove"]["path"].as_str().map(str::to_string))
        .collect();
    assert_eq!(removed.len(), 1, "only the appended file: {removed:?}");
    assert!(removed[0].starts_with(&format!("c7={day}/")), "{removed:?}");
    assert_ne!(removed[0], generated[0], "the generated file stays");
}

/// Another engine appends rows into a date lakeload holds (delta-rs, new keys, with lineage
/// naming a file of its own): the date has two live files. lakeload's next incremental run,
/// loading a file with rows of that date, merges every live file of the date, so its new
/// version holds the oracle's rows plus the other engine's, none lost.
#[test]
fn rows_another_engine_appended_into_a_date_survive_the_dates_rewrite() {
    let dir = tempdir();
    let dir = dir.path();
    let source = first_files(dir, 3, 400);
    let (delta, oracle) = (dir.join("delta"), dir.join("oracle"));
    run_both(dir, &source, &delta, &oracle, "full");
    let appended = python(
        r#"
import sys, pyarrow as pa, pyarrow.compute as pc
from deltalake import DeltaTable, write_deltalake
t = DeltaTable(sys.argv[1]).to_pyarrow_table()
day = sorted(set(t["c7"].to_pylist()))[-1]
t = t.filter(pc.equal(t["c7"], pa.scalar(day))).slice(0, 25)
t = t.set_column(t.schema.get_field_index("c1"), "c1", pa.array([f"X{i:06}" for i in range(t.num_rows)]))
t = t.set_column(t.schema.get_field_index("_source_file"), "_source_file", pa.array(["delta-rs/insert"] * t.num_rows))
t = t.set_column(t.schema.get_field_index("_source_line"), "_source_line", pa.array(range(1, t.num_rows + 1), pa.int64()))
write_deltalake(sys.argv[1], t, mode="append")
print(day, t.num_rows)
"#,
        &[path_str(&delta)],
    );
    let (day, rows) = appended.trim().split_once(' ').unwrap();
    let rows: u64 = rows.parse().unwrap();
    // A file whose rows land on that date too (the generator's dates span the files' days).
    land_file(dir, day, 10, 400, &["--seed", "4"]);
    run_both(dir, &source, &delta, &oracle, "incremental");
    let seen = python(
        r#"
import glob, sys, pyarrow as pa, pyarrow.parquet as pq, pyarrow.compute as pc
from deltalake import DeltaTable
def rows(t):
    out = []
    for r in t.to_pylist():
        r["_source_modified"] = r["_source_modified"].replace(tzinfo=None)
        out.append(tuple(sorted((k, str(v)) for k, v in r.items())))
    return sorted(out)
dt = DeltaTable(sys.argv[1]).to_pyarrow_table()
theirs = pc.equal(dt["_source_file"], "delta-rs/insert")
files = [f for f in glob.glob(sys.argv[2] + "/**/*.parquet", recursive=True) if "_lakeload" not in f]
oracle = pa.concat_tables([pq.read_table(f, partitioning=None) for f in files])
written = sorted({str(d) for d in oracle.filter(pc.equal(oracle["c7"], pa.scalar(sys.argv[3]).cast(pa.date32())))["c7"].to_pylist()})
print(rows(dt.filter(pc.invert(theirs))) == rows(oracle), dt.filter(theirs).num_rows, len(written))
"#,
        &[path_str(&delta), path_str(&oracle), day.to_string()],
    );
    let seen: Vec<&str> = seen.split_whitespace().collect();
    assert_eq!(
        seen[2], "1",
        "the new file has rows of {day}, so the run rewrote it"
    );
    assert_eq!(seen[0], "True", "lakeload's rows are the oracle's: {seen:?}");
    assert_eq!(
        seen[1],
        rows.to_string(),
        "the other engine's rows kept: {seen:?}"
    );
}

/// delta-rs maintains the table beside lakeload between its runs, as Spark does below: two
/// appends into a new date, a compaction (`optimize.compact`) of them, and a GDPR `delete` of
/// one customer's row. lakeload's next incremental run keeps all of it: the table equals the
/// `parquet` oracle of the same runs less the deleted row, plus delta-rs' rows.
#[test]
fn delta_rs_maintains_the_table_between_lakeload_runs() {
    let dir = tempdir();
    let dir = dir.path();
    let source = first_files(dir, 3, 400);
    let (delta, oracle) = (dir.join("delta"), dir.join("oracle"));
    run_both(dir, &source, &delta, &oracle, "full");
    let picked = picked_row(&oracle, &source);
    let (c1, c7, first_files) = (picked.c1.as_str(), picked.c7.as_str(), &picked.first_files);
    let versions = python(
        r#"
import datetime, sys, pyarrow as pa, pyarrow.compute as pc
from deltalake import DeltaTable, write_deltalake
path, c1, c7 = sys.argv[1:4]
t = DeltaTable(path).to_pyarrow_table().slice(0, 10)
t = t.set_column(t.schema.get_field_index("c7"), "c7", pa.array([datetime.date(2030, 1, 1)] * 10, pa.date32()))
write_deltalake(path, t, mode="append")
write_deltalake(path, t, mode="append")
compacted = DeltaTable(path).optimize.compact()
DeltaTable(path).delete(f"c1 = '{c1}' AND c7 = CAST('{c7}' AS DATE)")
print(compacted["numFilesRemoved"], DeltaTable(path).version())
"#,
        &[path_str(&delta), c1.to_string(), c7.to_string()],
    );
    let compacted: u64 = versions.split_whitespace().next().unwrap().parse().unwrap();
    assert!(compacted >= 2, "delta-rs compacted its two appends: {versions}");
    land_file(dir, "2026-11-02", 10, 400, &["--seed", "4"]);
    run_both(dir, &source, &delta, &oracle, "incremental");
    let seen = python(
        SHARED_EQUALS,
        &[
            path_str(&delta),
            path_str(&oracle),
            "20".into(),
            c1.to_string(),
            c7.to_string(),
            serde_json::to_string(first_files).unwrap(),
        ],
    );
    let seen: serde_json::Value = serde_json::from_str(seen.trim()).unwrap();
    assert!(
        seen["equal"] == true && seen["spark_ok"] == true && seen["deleted"].as_u64() >= Some(1),
        "delta-rs' rows, compaction and delete kept: {seen}"
    );
}

/// Apache Spark maintains the table beside lakeload, as a platform's other jobs do:
/// between lakeload runs it appends rows of a new date twice, compacts them (`OPTIMIZE`) and
/// deletes one customer's row (a GDPR `DELETE`); lakeload's next run keeps all of it. During a
/// run (paused before its commit) a blind append to another date lets the run commit after it,
/// and a `DELETE` of the dates the run rewrites fails it naming Spark, the table as Spark left
/// it. `delta.appendOnly` set by Spark lets a run that only adds dates through and refuses one
/// that replaces files; a column Spark added and back-filled keeps its values through the
/// next run. Ignored in a plain `cargo test` (Spark); `tests/run-all.sh` runs it.
#[test]
#[ignore = "needs Spark: run by tests/run-all.sh (cargo test --release -p lakeload --test e2e -- --ignored spark)"]
fn spark_maintains_the_table_between_and_during_lakeload_runs() {
    let dir = tempdir();
    let dir = dir.path();
    let source = first_files(dir, 4, 600);
    let (delta, oracle) = (dir.join("delta"), dir.join("oracle"));
    run_both(dir, &source, &delta, &oracle, "full");
    let t = format!("delta.`{}`", path_str(&delta));
    let insert = |date: &str, rows: usize| {
        format!(
            "INSERT INTO {t} SELECT c1, c2, c3, c4, c5, c6, DATE'{date}', c8, _source_file, \
             _source_line, _source_modified FROM {t} WHERE c7 < DATE'2030-01-01' LIMIT {rows}"
        )
    };
    // One customer's row on one date, loaded by the first run, and the files it loaded.
    let picked = picked_row(&oracle, &source);
    let (c1, c7, all_first_files) = (picked.c1.as_str(), picked.c7.as_str(), &picked.first_files);
    spark_sql(&[
        insert("2030-01-01", 10),
        insert("2030-01-01", 10),
        format!("OPTIMIZE {t}"),
        format!("DELETE FROM {t} WHERE c1 = '{c1}' AND c7 = DATE'{c7}'"),
    ]);
    let equals = |spark_rows: usize| -> serde_json::Value {
        let out = python(
            SHARED_EQUALS,
            &[
                path_str(&delta),
                path_str(&oracle),
                spark_rows.to_string(),
                c1.to_string(),
                c7.to_string(),
                serde_json::to_string(all_first_files).unwrap(),
            ],
        );
        serde_json::from_str(out.trim()).unwrap()
    };
    let seen = equals(20);
    assert!(seen["deleted"].as_u64().unwrap() >= 1, "{seen}");

    land_file(dir, "2026-11-01", 10, 600, &["--seed", "4"]);
    run_both(dir, &source, &delta, &oracle, "incremental");
    let seen = equals(20);
    assert!(
        seen["equal"] == true && seen["spark_ok"] == true,
        "Spark's rows, compaction and delete kept: {seen}"
    );

    // During a run: a blind append to another date.
    land_file(dir, "2026-11-02", 11, 600, &["--seed", "5"]);
    let paused_run = || paused_before_commit(dir, &source, &path_str(&delta), &[]);
    let paused = paused_run();
    spark_sql(&[insert("2030-01-02", 5)]);
    paused.resume();
    let (code, _, stderr) = paused.finish();
    assert_eq!(code, Some(0), "{stderr}");
    run(dir, &source, &oracle, "parquet", "incremental");
    let seen = equals(25);
    assert!(
        seen["equal"] == true && seen["spark_ok"] == true,
        "the run committed after Spark's append: {seen}"
    );

    // During a run: a DELETE of every date the run rewrites.
    land_file(dir, "2026-11-02", 12, 600, &["--seed", "6"]);
    let paused = paused_run();
    spark_sql(&[format!("DELETE FROM {t} WHERE c7 < DATE'2030-01-01'")]);
    paused.resume();
    let (code, _, stderr) = paused.finish();
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains("DELETE by Apache-Spark"),
        "the conflict names Spark's commit: {stderr}"
    );
    let left = python(
        "import sys\nfrom deltalake import DeltaTable\nprint(DeltaTable(sys.argv[1]).to_pyarrow_table().num_rows)",
        &[path_str(&delta)],
    );
    assert_eq!(left.trim(), "25", "the table as Spark left it: only its own rows");

    // delta.appendOnly: a run that only adds dates goes through, one that replaces is refused.
    spark_sql(&[format!(
        "ALTER TABLE {t} SET TBLPROPERTIES ('delta.appendOnly' = 'true')"
    )]);
    run(dir, &source, &delta, "delta", "incremental");
    land_file(dir, "2026-11-02", 13, 600, &["--seed", "7"]);
    assert_refused(
        dir,
        &source,
        &delta,
        "incremental",
        "append-only (delta.appendOnly = true)",
    );

    // A column Spark added and back-filled survives lakeload's next run: rows kept hold
    // their values, rows of new lines null.
    spark_sql(&[
        format!("ALTER TABLE {t} SET TBLPROPERTIES ('delta.appendOnly' = 'false')"),
        format!("ALTER TABLE {t} ADD COLUMNS (note STRING)"),
        format!("UPDATE {t} SET note = concat('n-', c1) WHERE c7 < DATE'2030-01-01'"),
    ]);
    let backfilled = python(
        "import sys\nfrom deltalake import DeltaTable\nprint(DeltaTable(sys.argv[1]).version())",
        &[path_str(&delta)],
    );
    run(dir, &source, &delta, "delta", "incremental");
    run(dir, &source, &oracle, "parquet", "incremental");
    let seen = added_column_kept(&path_str(&delta), None, &backfilled, None, None);
    assert!(
        seen["wrong"] == 0 && seen["kept"].as_u64() > Some(0) && seen["nulls"].as_u64() > Some(0),
        "{seen}"
    );
}

/// Spark maintains a lakeload table on S3 (moto, through Hadoop's S3A) between lakeload runs,
/// as on local disk: a GDPR `DELETE` of one customer's row, an `OPTIMIZE`, `ALTER TABLE ADD
/// COLUMNS` with a back-fill. lakeload's next incremental run keeps all of it: the deleted row
/// stays deleted, the added column keeps its values on the rows kept and is null on new ones,
/// and lakeload's columns equal the `parquet` table of the same runs less the deleted row.
/// During a run paused before its commit, Spark's append to another date goes first and the
/// run commits after it. Ignored in a plain `cargo test` (Spark); `tests/run-all.sh` runs it.
#[test]
#[ignore = "needs Spark: run by tests/run-all.sh (cargo test --release -p lakeload --test e2e -- --ignored spark)"]
fn spark_maintains_a_table_on_s3_between_lakeload_runs() {
    let s3 = S3Server::shared();
    let env = s3.env();
    let bucket = s3.bucket("spark-shared");
    let delta = format!("s3://{bucket}/tables/sales");
    let dir = tempdir();
    let dir = dir.path();
    let source = first_files(dir, 3, 500);
    let oracle = dir.join("oracle");
    run_at(dir, &source, &delta, &env, "delta", "full");
    run(dir, &source, &oracle, "parquet", "full");
    let picked = picked_row(&oracle, &source);
    let (c1, c7) = (picked.c1.as_str(), picked.c7.as_str());
    let t = format!("delta.`s3a://{bucket}/tables/sales`");
    spark_sql_on_s3(
        s3,
        &[
            format!("DELETE FROM {t} WHERE c1 = '{c1}' AND c7 = DATE'{c7}'"),
            format!("OPTIMIZE {t}"),
            format!("ALTER TABLE {t} ADD COLUMNS (note STRING)"),
            format!("UPDATE {t} SET note = concat('n-', c1)"),
        ],
    );
    let backfilled = python(
        "import json, sys\nfrom deltalake import DeltaTable\nprint(DeltaTable(sys.argv[1], storage_options=json.loads(sys.argv[2])).version())",
        &[delta.clone(), s3_options(s3).to_string()],
    );
    land_file(dir, "2026-11-02", 10, 500, &["--seed", "4"]);
    run_at(dir, &source, &delta, &env, "delta", "incremental");
    run(dir, &source, &oracle, "parquet", "incremental");
    let seen = added_column_kept(
        &delta,
        Some(&s3_options(s3)),
        &backfilled,
        Some(&oracle),
        Some(&picked),
    );
    assert!(
        seen["equal"] == true && seen["deleted"].as_u64() >= Some(1),
        "{seen}"
    );
    assert!(
        seen["wrong"] == 0 && seen["kept"].as_u64() > Some(0) && seen["nulls"].as_u64() > Some(0),
        "{seen}"
    );

    // During a run (paused before its commit): Spark's blind append to another date goes
    // first, and the run commits after it.
    land_file(dir, "2026-11-02", 11, 500, &["--seed", "5"]);
    let paused = paused_before_commit(dir, &source, &delta, &env);
    spark_sql_on_s3(
        s3,
        &[format!(
            "INSERT INTO {t} SELECT c1, c2, c3, c4, c5, c6, DATE'2030-01-01', c8, _source_file, \
             _source_line, _source_modified, note FROM {t} LIMIT 7"
        )],
    );
    paused.resume();
    let (code, _, stderr) = paused.finish();
    assert_eq!(code, Some(0), "{stderr}");
    run(dir, &source, &oracle, "parquet", "incremental");
    let after = python(
        r#"
import datetime, json, sys, pyarrow as pa, pyarrow.compute as pc
from deltalake import DeltaTable
dt = DeltaTable(sys.argv[1], storage_options=json.loads(sys.argv[2]))
t = dt.to_pyarrow_table()
spark = pc.greater_equal(t["c7"], pa.scalar(datetime.date(2030, 1, 1)))
files = set(t.filter(pc.invert(spark))["_source_file"].to_pylist())
print(json.dumps({"spark_rows": t.filter(spark).num_rows, "loaded": any(f.endswith(sys.argv[3]) for f in files), "files": sorted(files)}))
"#,
        &[
            delta.clone(),
            s3_options(s3).to_string(),
            "/events-000011.gz".into(),
        ],
    );
    let after: serde_json::Value = serde_json::from_str(after.trim()).unwrap();
    assert_eq!(after["spark_rows"], 7, "Spark's append kept: {after}");
    assert_eq!(
        after["loaded"], true,
        "the paused run's file is in the table: {after}"
    );
}

/// Reads each version `v` of the Delta table at argv[1] (argv[3]: the versions, comma-separated) with the
/// readers that apply deletion vectors — DuckDB's `delta_scan` (delta-kernel-rs) and Polars'
/// `scan_delta` with `POLARS_DELTA_READER_FEATURE_DV=1` — and compares it with the Parquet
/// table in `<argv[2]>/v<v>`; also says whether deltalake's pyarrow reader refuses the table.
const DV_COMPARE: &str = r#"
import glob, json, os, sys
os.environ["POLARS_DELTA_READER_FEATURE_DV"] = "1"
import pyarrow as pa, pyarrow.parquet as pq
import polars as pl
import duckdb, duckdb_extension_delta

table, oracles, versions = sys.argv[1], sys.argv[2], [int(v) for v in sys.argv[3].split(",")]
def rows(t):
    out = []
    for r in t.select([c for c in t.column_names if c not in ("year", "month", "day")]).to_pylist():
        r["_source_modified"] = r["_source_modified"].replace(tzinfo=None)
        out.append(tuple(sorted((k, str(v)) for k, v in r.items())))
    return sorted(out)
ext = glob.glob(os.path.join(os.path.dirname(duckdb_extension_delta.__file__), "extensions", "*", "delta.duckdb_extension"))[0]
con = duckdb.connect()
con.load_extension(ext)
report = {}
for v in versions:
    files = [f for f in glob.glob(f"{oracles}/v{v}/**/*.parquet", recursive=True) if "_lakeload" not in f]
    oracle = rows(pa.concat_tables([pq.read_table(f, partitioning=None) for f in files]))
    duck = rows(con.sql(f"select * from delta_scan('{table}', version := {v})").to_arrow_table())
    polars = rows(pl.scan_delta(table, version=v).collect().to_arrow())
    report[f"v{v}"] = {"oracle_rows": len(oracle), "duckdb_rows": len(duck),
                       "duckdb_equal": duck == oracle, "polars_equal": polars == oracle}
try:
    from deltalake import DeltaTable
    DeltaTable(table).to_pyarrow_table()
    report["deltalake"] = "read"
except Exception as e:
    report["deltalake"] = type(e).__name__
print(json.dumps(report))
"#;

/// `versions` as [`DV_COMPARE`] takes them.
fn versions(versions: impl IntoIterator<Item = u64>) -> String {
    versions
        .into_iter()
        .map(|v| v.to_string())
        .collect::<Vec<_>>()
        .join(",")
}

/// The worker's environment for a Delta run with deletion vectors on or off, and the automatic
/// compaction off (tests that count files, versions or vectors run `optimize` themselves).
fn vectors_env(vectors: bool) -> Vec<(String, String)> {
    vec![
        ("LAKELOAD_TARGET_DELETION_VECTORS".into(), vectors.to_string()),
        ("LAKELOAD_OPTIMIZE_AUTO_MAX_FILES".into(), "0".into()),
        ("LAKELOAD_OPTIMIZE_AUTO_MAX_DELETED_SHARE".into(), "1".into()),
    ]
}

/// Reads `versions` of the Delta table `delta` with DuckDB and Polars ([`DV_COMPARE`]), asserts
/// each equals `<oracles>/v<version>`, and returns the report (`when` names the step).
fn assert_dv_readers_equal(
    delta: &Path,
    oracles: &Path,
    versions_read: impl IntoIterator<Item = u64>,
    when: &str,
) -> serde_json::Value {
    let versions_read: Vec<u64> = versions_read.into_iter().collect();
    let report: serde_json::Value = serde_json::from_str(&python(
        DV_COMPARE,
        &[
            path_str(delta),
            path_str(oracles),
            versions(versions_read.iter().copied()),
        ],
    ))
    .unwrap();
    for v in versions_read {
        let seen = &report[format!("v{v}")];
        assert_eq!(
            seen["duckdb_equal"], true,
            "{when}: version {v} as DuckDB reads it: {report}"
        );
        assert_eq!(
            seen["polars_equal"], true,
            "{when}: version {v} as Polars reads it: {report}"
        );
    }
    report
}

/// Generator options for keys that later files update often (60 customers, 2 sessions, two
/// files a day).
const FEW_KEYS: [&str; 6] = ["--customers", "60", "--sessions", "2", "--files-per-day", "2"];

/// Three source files of 600 lines over [`FEW_KEYS`], in `dir/src`.
fn few_keys_source(dir: &Path) -> std::path::PathBuf {
    generated_source(
        dir,
        "src",
        &[&["--files", "3", "--rows", "600"][..], &FEW_KEYS].concat(),
    )
}

/// The commit of `version` of the local Delta table `delta`, one JSON value per action.
fn commit_of(delta: &Path, version: u64) -> Vec<serde_json::Value> {
    std::fs::read_to_string(delta.join(format!("_delta_log/{version:020}.json")))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// `target.deletion_vectors = true`: rows of later files updating stored keys mark the old
/// rows deleted where they are (deletion vectors) instead of rewriting their files. Each update
/// run's commit removes no file outright — every remove is the same file added back with a
/// larger vector — and a second update adds to the vectors the first wrote. New keys are
/// appended. Every version, read by DuckDB and Polars with deletion vectors, equals the
/// `parquet` table of the same runs; deltalake's pyarrow reader refuses the table (as the
/// README says); `status` counts the deleted rows. Turning the setting off, the next update
/// rewrites the files holding its keys with their deleted rows left out; a rollback to a
/// version with vectors restores them; both still equal the oracle.
#[test]
fn updated_keys_are_marked_deleted_in_place_and_readers_with_deletion_vectors_see_the_oracle() {
    let dir = tempdir();
    let dir = dir.path();
    // Few customers and sessions: later files update many stored keys.
    let few = FEW_KEYS;
    let source = few_keys_source(dir);
    let (delta, oracle, oracles) = (dir.join("delta"), dir.join("oracle"), dir.join("oracles"));
    let on = |mode: &str, vectors: &str| {
        run_both_with(
            dir,
            &source,
            &delta,
            &oracle,
            mode,
            &vectors_env(vectors == "true"),
        )
    };
    let mut version = 0;
    let snapshot = |version: u64| copy_dir(&oracle, &oracles.join(format!("v{version}")));
    on("full", "true");
    snapshot(version);
    let protocol = commit_of(&delta, 0)[0]["protocol"].clone();
    assert_eq!(protocol["minReaderVersion"], 3, "{protocol}");
    assert_eq!(protocol["readerFeatures"], serde_json::json!(["deletionVectors"]));
    let files_in_status = || -> u64 {
        let status = on_delta(dir, &source, &delta).args(["status", "--json"]).output();
        assert_exit(&status, 0);
        let status: serde_json::Value = serde_json::from_str(&stdout(&status)).unwrap();
        status["dates"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d["files"].as_u64().unwrap())
            .sum()
    };
    let live_before = files_in_status();

    // The first update touches a few keys, so the second finds the generated file already
    // with a vector.
    for (update, seed, lines) in [(1, "7", 40), (2, "8", 400)] {
        // Landing on 2026-11-01 (five days after the start, two files a day), as the stored
        // rows mostly do.
        land_file(
            dir,
            "2026-10-27",
            10 + update,
            lines,
            &[&["--seed", seed][..], &few].concat(),
        );
        let summary = on("incremental", "true");
        version += 1;
        snapshot(version);
        assert!(summary["rows_updated"].as_u64().unwrap() > 5, "{summary}");
        let commit = commit_of(&delta, version);
        let added_back: Vec<(&str, u64)> = commit
            .iter()
            .filter_map(|a| {
                Some((
                    a["add"]["path"].as_str()?,
                    a["add"]["deletionVector"]["cardinality"].as_u64()?,
                ))
            })
            .collect();
        let removed: Vec<(&str, u64)> = commit
            .iter()
            .filter_map(|a| {
                let old = a["remove"]["deletionVector"]["cardinality"].as_u64().unwrap_or(0);
                Some((a["remove"]["path"].as_str()?, old))
            })
            .collect();
        assert!(!removed.is_empty(), "update {update} marked rows: {commit:?}");
        for (path, old) in &removed {
            let (_, new) = added_back
                .iter()
                .find(|(p, _)| p == path)
                .unwrap_or_else(|| panic!("{path} removed outright: {commit:?}"));
            assert!(
                new > old,
                "{path}: the new vector ({new}) holds the old ({old}) and more"
            );
        }
        if update == 2 {
            assert!(
                removed.iter().any(|(_, old)| *old > 0),
                "the second update added to a vector the first wrote: {removed:?}"
            );
        }
        // `history` counts the rows the version marked, and as added only its new file's:
        // each new row that won (inserted or updating) and nothing of the files added back.
        let history = on_delta(dir, &source, &delta)
            .args(["history", "--json"])
            .output();
        assert_exit(&history, 0);
        let history: Vec<serde_json::Value> = serde_json::from_str(&stdout(&history)).unwrap();
        let marked: u64 = removed
            .iter()
            .map(|(path, old)| added_back.iter().find(|(p, _)| p == path).unwrap().1 - old)
            .sum();
        assert_eq!(history[0]["version"], version, "{:?}", history[0]);
        assert_eq!(history[0]["rows_marked_deleted"], marked, "{:?}", history[0]);
        assert_eq!(
            history[0]["rows_added"],
            summary["rows_inserted"].as_u64().unwrap() + summary["rows_updated"].as_u64().unwrap(),
            "{:?} {summary}",
            history[0]
        );
    }
    assert!(
        files_in_status() > live_before,
        "each update added a file of its merged rows"
    );
    // New keys only: appended, nothing marked.
    std::fs::write(
        source.join("z-new.gz"),
        gzip(new_key_lines("2026-11-02", 30, 100).as_bytes()),
    )
    .unwrap();
    on("incremental", "true");
    version += 1;
    snapshot(version);
    assert!(
        !commit_of(&delta, version)
            .iter()
            .any(|a| a.get("remove").is_some())
    );

    let status = on_delta(dir, &source, &delta).args(["status", "--json"]).output();
    assert_exit(&status, 0);
    let status: serde_json::Value = serde_json::from_str(&stdout(&status)).unwrap();
    let deleted: u64 = status["dates"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["deleted_rows"].as_u64().unwrap())
        .sum();
    assert!(deleted > 40, "status counts the deleted rows: {status}");
    let rows: u64 = status["dates"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["rows"].as_u64().unwrap())
        .sum();

    // The setting off: the next update rewrites the files holding its keys, their deleted
    // rows left out.
    land_file(dir, "2026-10-27", 12, 400, &[&["--seed", "9"][..], &few].concat());
    on("incremental", "false");
    version += 1;
    snapshot(version);
    let commit = commit_of(&delta, version);
    assert!(
        commit.iter().all(|a| a["add"]["deletionVector"].is_null()),
        "no new vector: {commit:?}"
    );
    assert!(
        commit.iter().any(|a| !a["remove"]["deletionVector"].is_null()),
        "a file with a vector was rewritten"
    );

    // Back to version 2 (vectors of both updates), then everything compared.
    let out = on_delta(dir, &source, &delta)
        .args(["rollback", "--to-version", "2", "--json"])
        .output();
    assert_exit(&out, 0);
    version += 1;
    copy_dir(&oracles.join("v2"), &oracles.join(format!("v{version}")));

    let report = assert_dv_readers_equal(&delta, &oracles, 0..=version, "every version");
    assert_eq!(
        report["v3"]["oracle_rows"], rows,
        "status counts the rows readers get"
    );
    assert_eq!(report["deltalake"], "DeltaProtocolError", "{report}");

    // Vacuum with no retention deletes the vector files only removed files' vectors name, and
    // keeps those the live files read: the latest version still reads whole.
    let vector_files = || -> Vec<String> {
        walk(&delta)
            .into_iter()
            .filter(|p| p.contains("/deletion_vector_"))
            .collect()
    };
    let before = vector_files();
    let out = on_delta(dir, &source, &delta)
        .args(["vacuum", "--retain", "0s", "--force", "--json"])
        .output();
    assert_exit(&out, 0);
    let after = vector_files();
    assert!(
        after.len() < before.len(),
        "old vector files deleted: {before:?} → {after:?}"
    );
    assert!(!after.is_empty(), "the live files' vectors kept");
    assert_dv_readers_equal(&delta, &oracles, [version], "after vacuum");
}

/// `target.deletion_vectors` is a Delta setting: on a `parquet` table it is refused, naming
/// the key and the fix, before anything is read or written.
#[test]
fn deletion_vectors_on_a_parquet_table_are_refused_with_the_fix() {
    let dir = tempdir();
    let dir = dir.path();
    let source = first_files(dir, 1, 50);
    let out = Lakeload::new(dir)
        .env("LAKELOAD_SOURCE_URL", &source)
        .env("LAKELOAD_TARGET_URL", dir.join("table"))
        .env("LAKELOAD_TARGET_DELETION_VECTORS", "true")
        .args(["run"])
        .output();
    assert_exit(&out, 2);
    let err = stderr(&out);
    assert!(
        err.contains("target.deletion_vectors") && err.contains("target.format = delta"),
        "{err}"
    );
    assert!(!dir.join("table").exists(), "nothing written");
}

/// Spark and lakeload share a table with deletion vectors, each applying the other's. Spark
/// turns the feature on and deletes one customer's rows on a date with a vector (no file
/// rewritten). lakeload's next run, with `target.deletion_vectors = true`, marks the rows its
/// updates supersede, adding them to Spark's vector; the run after it, without vectors,
/// rewrites the files holding its updated keys, their deleted rows (Spark's and its own) left
/// out. After each step DuckDB reads the oracle's rows less Spark's delete, and Spark reads as
/// many rows as DuckDB.
#[test]
#[ignore = "needs Spark: run by tests/run-all.sh (cargo test --release -p lakeload --test e2e -- --ignored spark)"]
fn spark_and_lakeload_share_a_table_with_deletion_vectors() {
    let dir = tempdir();
    let dir = dir.path();
    let few = FEW_KEYS;
    let source = few_keys_source(dir);
    // Two later files of a few updates each, landing on 2026-11-01 (five days after the start),
    // moved into the source one run at a time.
    let later = generated_source(
        dir,
        "later",
        &[
            &[
                "--files",
                "2",
                "--rows",
                "30",
                "--start",
                "2026-10-27",
                "--first-file",
                "10",
                "--seed",
                "7",
                "--bad-ratio",
                "0",
            ][..],
            &few,
        ]
        .concat(),
    );
    let (delta, oracle) = (dir.join("delta"), dir.join("oracle"));
    let on =
        |mode: &str, vectors: bool| run_both_with(dir, &source, &delta, &oracle, mode, &vectors_env(vectors));
    on("full", false);
    // A customer with rows on 2026-11-01 whom neither later file updates.
    let c1 = python(
        r#"
import glob, gzip, sys, pyarrow.parquet as pq
later = {l.split("|")[0] for f in glob.glob(sys.argv[2] + "/**/*.gz", recursive=True) for l in gzip.open(f, "rt")}
t = pq.read_table(glob.glob(sys.argv[1] + "/year=2026/month=11/day=01/*.parquet")[0], partitioning=None)
print(sorted(set(t["c1"].to_pylist()) - later)[0])
"#,
        &[path_str(&oracle), path_str(&later)],
    );
    let picked = PickedRow {
        c1: c1.trim().to_string(),
        c7: "2026-11-01".into(),
        first_files: lakeload_testkit::files_under(&source)
            .iter()
            .map(|p| p.strip_prefix(&source).unwrap().to_string_lossy().into_owned())
            .collect(),
    };
    let t = format!("delta.`{}`", path_str(&delta));
    spark_sql(&[
        format!("ALTER TABLE {t} SET TBLPROPERTIES ('delta.enableDeletionVectors' = 'true')"),
        format!(
            "DELETE FROM {t} WHERE c1 = '{}' AND c7 = DATE'{}'",
            picked.c1, picked.c7
        ),
    ]);
    let vectors_of = |commit: &[serde_json::Value], action: &str| -> Vec<(String, u64)> {
        commit
            .iter()
            .filter_map(|a| {
                let dv = &a[action]["deletionVector"];
                Some((
                    a[action]["path"].as_str()?.to_string(),
                    dv["cardinality"].as_u64()?,
                ))
            })
            .collect()
    };
    let spark_vectors = vectors_of(&log_commits(&delta).pop().unwrap(), "add");
    assert!(!spark_vectors.is_empty(), "Spark deleted with a vector");
    let check = |step: &str| {
        let seen: serde_json::Value = serde_json::from_str(
            python(
                SHARED_EQUALS,
                &[
                    path_str(&delta),
                    path_str(&oracle),
                    "0".into(),
                    picked.c1.clone(),
                    picked.c7.clone(),
                    serde_json::to_string(&picked.first_files).unwrap(),
                    "dv".into(),
                ],
            )
            .trim(),
        )
        .unwrap();
        assert!(
            seen["equal"] == true && seen["deleted"].as_u64() >= Some(1),
            "{step}: DuckDB reads the oracle less Spark's delete: {seen}"
        );
        let counted = spark_sql(&[format!("SELECT count(*) AS n FROM {t}")]);
        assert_eq!(
            counted[0][0]["n"].as_u64(),
            seen["ours"].as_u64(),
            "{step}: Spark reads as many rows as DuckDB"
        );
    };
    check("Spark's delete");
    let land = |n: usize| {
        let name = format!("2026/11/01/events-{n:06}.gz");
        std::fs::create_dir_all(source.join("2026/11/01")).unwrap();
        std::fs::rename(later.join(&name), source.join(&name)).unwrap();
    };

    land(10);
    let summary = on("incremental", true);
    assert!(summary["rows_updated"].as_u64() > Some(0), "{summary}");
    let commit = log_commits(&delta).pop().unwrap();
    let (removed, added) = (vectors_of(&commit, "remove"), vectors_of(&commit, "add"));
    let grown: Vec<_> = removed
        .iter()
        .filter(|(path, old)| added.iter().any(|(p, new)| p == path && new > old))
        .collect();
    assert!(!grown.is_empty(), "lakeload added to Spark's vector: {commit:?}");
    check("a lakeload run marking rows");

    land(11);
    let summary = on("incremental", false);
    assert!(summary["rows_updated"].as_u64() > Some(0), "{summary}");
    let commit = log_commits(&delta).pop().unwrap();
    assert!(
        vectors_of(&commit, "add").is_empty(),
        "no vector written: {commit:?}"
    );
    assert!(
        !vectors_of(&commit, "remove").is_empty(),
        "a file with a vector was rewritten: {commit:?}"
    );
    check("a lakeload run rewriting files");
}

/// `lakeload optimize` on a table whose dates gained files and deleted rows (deletion vectors,
/// appended keys; the automatic compaction off): `--dry-run` lists the dates and writes
/// nothing; `plan` names the dates past the automatic thresholds; `optimize` commits one
/// version that changes no data (`OPTIMIZE`, every add and remove `dataChange = false`) after
/// which each compacted date is one file with no deleted rows, the versions before and after
/// reading the same rows (DuckDB and Polars, every version equal to the oracle). A later run
/// with the thresholds low compacts the dates it wrote by itself, in a version after its own.
/// On a `parquet` table `optimize` is refused with the reason.
#[test]
fn optimize_packs_each_dates_files_and_drops_deleted_rows() {
    let dir = tempdir();
    let dir = dir.path();
    let few = FEW_KEYS;
    let source = few_keys_source(dir);
    let (delta, oracle, oracles) = (dir.join("delta"), dir.join("oracle"), dir.join("oracles"));
    let manual = vectors_env(true);
    let on = |mode: &str, env: &[(String, String)]| {
        run_both_with(dir, &source, &delta, &oracle, mode, env);
    };
    let snapshot = |version: u64| copy_dir(&oracle, &oracles.join(format!("v{version}")));
    on("full", &manual);
    snapshot(0);
    for (n, seed) in [(10, "7"), (11, "8")] {
        land_file(dir, "2026-10-27", n, 60, &[&["--seed", seed][..], &few].concat());
        on("incremental", &manual);
        snapshot(n as u64 - 9);
    }
    std::fs::write(
        source.join("z-new.gz"),
        gzip(new_key_lines("2026-11-01", 30, 100).as_bytes()),
    )
    .unwrap();
    on("incremental", &manual);
    snapshot(3);
    let lakeload = |env: &[(String, String)], args: &[&str]| {
        let out = on_delta(dir, &source, &delta)
            .envs(env.to_vec())
            .args(args)
            .output();
        assert_exit(&out, 0);
        serde_json::from_str::<serde_json::Value>(&stdout(&out)).unwrap()
    };
    let status = lakeload(&manual, &["status", "--json"]);
    let day = |status: &serde_json::Value| {
        status["dates"]
            .as_array()
            .unwrap()
            .iter()
            .find(|d| d["date"] == "2026-11-01")
            .cloned()
            .unwrap()
    };
    let before = day(&status);
    assert!(before["files"].as_u64() >= Some(3), "{before}");
    assert!(before["deleted_rows"].as_u64() > Some(0), "{before}");

    let log_before = walk(&delta.join("_delta_log"));
    let dry = lakeload(&manual, &["optimize", "--dry-run", "--json"]);
    let planned = dry["dates"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["date"] == "2026-11-01")
        .cloned()
        .unwrap();
    assert_eq!(
        planned["files"].as_array().unwrap().len() as u64,
        before["files"].as_u64().unwrap(),
        "{dry}"
    );
    assert_eq!(planned["deleted_rows"], before["deleted_rows"], "{dry}");
    assert_eq!(
        walk(&delta.join("_delta_log")),
        log_before,
        "a dry run writes nothing"
    );
    let low = [
        &manual[..2],
        &[("LAKELOAD_OPTIMIZE_AUTO_MAX_FILES".to_string(), "1".to_string())],
    ]
    .concat();
    let plan = lakeload(&low, &["plan", "--mode", "incremental", "--json"]);
    assert!(
        plan["dates_to_optimize"]
            .as_array()
            .unwrap()
            .iter()
            .any(|d| d == "2026-11-01"),
        "{plan}"
    );

    let done = lakeload(&manual, &["optimize", "--json"]);
    assert_eq!(done["table_version"], 4, "{done}");
    copy_dir(&oracles.join("v3"), &oracles.join("v4"));
    let commit = commit_of(&delta, 4);
    let info = commit.iter().find_map(|a| a.get("commitInfo")).unwrap();
    assert_eq!(info["operation"], "OPTIMIZE");
    let changes: Vec<&serde_json::Value> = commit
        .iter()
        .filter_map(|a| a.get("add").or_else(|| a.get("remove")))
        .collect();
    assert!(changes.len() >= 4, "{commit:?}");
    assert!(changes.iter().all(|c| c["dataChange"] == false), "{commit:?}");
    let after = day(&lakeload(&manual, &["status", "--json"]));
    assert_eq!(after["files"], 1, "{after}");
    assert_eq!(after["deleted_rows"], 0, "{after}");
    assert_eq!(after["rows"], before["rows"], "the same rows");
    assert_eq!(
        lakeload(&manual, &["optimize", "--json"])["dates"],
        serde_json::json!([]),
        "nothing left to do"
    );

    // The thresholds low: the next run compacts the dates it wrote after its own version.
    land_file(dir, "2026-10-27", 12, 60, &[&["--seed", "9"][..], &few].concat());
    on("incremental", &low);
    snapshot(5);
    copy_dir(&oracles.join("v5"), &oracles.join("v6"));
    let history = stdout(
        &on_delta(dir, &source, &delta)
            .args(["history", "--json"])
            .output(),
    );
    let history: Vec<serde_json::Value> = serde_json::from_str(&history).unwrap();
    assert_eq!(history[0]["version"], 6, "{history:?}");
    assert_eq!(history[0]["mode"], "optimize", "{history:?}");
    assert_eq!(history[1]["mode"], "incremental", "{history:?}");
    assert_eq!(day(&lakeload(&manual, &["status", "--json"]))["files"], 1);

    assert_dv_readers_equal(&delta, &oracles, 0..=6, "before and after optimize");

    let out = Lakeload::new(dir)
        .env("LAKELOAD_SOURCE_URL", &source)
        .env("LAKELOAD_TARGET_URL", &oracle)
        .args(["optimize"])
        .output();
    assert_exit(&out, 2);
    assert!(stderr(&out).contains("nothing to optimize"), "{}", stderr(&out));
}
