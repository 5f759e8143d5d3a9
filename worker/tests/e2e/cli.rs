//! The command line as a user meets it: configuration sources, errors, exit codes, the lock.

use crate::common::*;
use crate::full::{expected_arrival, write_local_inputs};

fn conf(dir: &std::path::Path, body: &str) -> std::path::PathBuf {
    let path = dir.join("common.conf");
    std::fs::write(&path, body).unwrap();
    path
}

#[test]
fn config_file_env_and_set_layer_in_that_order() {
    let dir = tempdir();
    let (source, table) = (dir.path().join("in"), dir.path().join("out"));
    write_local_inputs(&source);
    // common.conf in the working folder is found without --config; its ratio would fail the
    // run (exit 65), the env var raises it, and --set picks the mode.
    conf(
        dir.path(),
        &format!(
            "[source]\nurl = {}\n[target]\nurl = {}\n[run]\nmode = incremental\nmax_reject_ratio = 0.01\n",
            source.display(),
            table.display()
        ),
    );
    let out = Lakeload::new(dir.path())
        .env("LAKELOAD_RUN_MAX_REJECT_RATIO", "0.5")
        .args(["--set", "run.mode=full", "run", "--json"])
        .output();
    assert_exit(&out, 0);
    let summary = summary_json(&out);
    assert_eq!(summary["mode"], "full");
    assert_eq!(summary["rows_inserted"], 11);

    // LAKELOAD_CONFIG names another file.
    let other = dir.path().join("elsewhere.conf");
    std::fs::write(
        &other,
        format!(
            "[source]\nurl = {}\n[target]\nurl = {}\n",
            source.display(),
            table.display()
        ),
    )
    .unwrap();
    let out = Lakeload::new(std::path::Path::new("/"))
        .env("LAKELOAD_CONFIG", &other)
        .args(["run", "--json", "--set", "run.max_reject_ratio=1"])
        .output();
    assert_exit(&out, 0);
    assert_eq!(summary_json(&out)["mode"], "incremental");
}

#[test]
fn config_mistakes_exit_2_and_name_the_key() {
    let dir = tempdir();
    let cases: Vec<(Lakeload, &[&str])> = vec![
        (
            Lakeload::new(dir.path()).args(["--config", "/nonexistent/common.conf", "run"]),
            &["/nonexistent/common.conf"],
        ),
        (
            Lakeload::new(dir.path()).args(["run"]),
            &["source.url is not set", "LAKELOAD_SOURCE_URL"],
        ),
        (
            Lakeload::new(dir.path()).args(["run", "--set", "run.mdoe=full"]),
            &["unknown key `run.mdoe`", "did you mean `run.mode`"],
        ),
        (
            Lakeload::new(dir.path())
                .env("LAKELOAD_SOURCE_URL", "/a")
                .env("LAKELOAD_TARGET_URL", "/b")
                .env("LAKELOAD_RUN_ORDER", "random")
                .args(["run"]),
            &["run.order", "`random`", "LAKELOAD_RUN_ORDER", "arrival or name"],
        ),
        (
            Lakeload::new(dir.path())
                .env("LAKELOAD_SOURCE_URL", "gs://x")
                .env("LAKELOAD_TARGET_URL", "/b")
                .args(["run"]),
            &["source.url", "s3://bucket/prefix"],
        ),
        (
            Lakeload::new(dir.path()).args(["run", "--mode", "sideways"]),
            &["sideways"],
        ),
    ];
    for (cmd, needles) in cases {
        let out = cmd.output();
        assert_exit(&out, 2);
        let err = stderr(&out);
        for needle in needles {
            assert!(err.contains(needle), "stderr should mention {needle:?}:\n{err}");
        }
        assert!(
            !err.contains("panicked") && !err.contains("RUST_BACKTRACE"),
            "{err}"
        );
    }

    conf(
        dir.path(),
        "[source]\nurl = /in\n[target]\nurl = /out\n[run]\nthreds = 4\n",
    );
    let out = Lakeload::new(dir.path()).args(["run"]).output();
    assert_exit(&out, 2);
    assert!(
        stderr(&out).contains("unknown key `run.threds`") && stderr(&out).contains("common.conf"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn secrets_are_never_printed() {
    let dir = tempdir();
    conf(
        dir.path(),
        "[aws_params]\ns3_source_bucket = in\ns3_target_bucket = out\naws_key = AKIAEXAMPLE\n\
         aws_secret_key = hunter2-very-secret\naws_region = eu-west-1\n[run]\nmax_reject_ratio = 7\n",
    );
    let out = Lakeload::new(dir.path()).args(["run"]).output();
    assert_exit(&out, 2);
    assert!(stderr(&out).contains("run.max_reject_ratio"), "{}", stderr(&out));
    assert!(!stderr(&out).contains("hunter2"), "{}", stderr(&out));
}

#[tokio::test(flavor = "multi_thread")]
async fn original_aws_params_shape_runs_against_s3() {
    let s3 = S3Server::shared();
    let (source_bucket, table_bucket) = (s3.bucket("legacy-in"), s3.bucket("legacy-out"));
    s3.put(
        &source_bucket,
        "2024/x.gz",
        &gzip(b"a|b|c|d|e|2024-05-01|2024-05-01|h\n"),
    );
    let dir = tempdir();
    conf(
        dir.path(),
        &format!(
            "[aws_params]\ns3_source_bucket = {source_bucket}\ns3_target_bucket = {table_bucket}\n\
             aws_key = testing\naws_secret_key = testing-secret\naws_region = us-east-1\n"
        ),
    );
    let out = Lakeload::new(dir.path())
        .env("LAKELOAD_AWS_ENDPOINT_URL", &s3.endpoint)
        .args(["run", "--mode", "full", "--json"])
        .output();
    assert_exit(&out, 0);
    assert_eq!(summary_json(&out)["rows_inserted"], 1);
    let table = open_storage(&format!("s3://{table_bucket}"), Some(s3)).await;
    let rows = table_rows(&table).await;
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0][0].as_deref(), Some("a"));
    assert!(!stderr(&out).contains("testing-secret"));
}

#[tokio::test(flavor = "multi_thread")]
async fn too_many_rejects_exit_65_and_commit_nothing() {
    let dir = tempdir();
    let (source, table) = (dir.path().join("in"), dir.path().join("out"));
    write_local_inputs(&source);
    // Default run.max_reject_ratio = 0.01; 6 of 22 lines are bad.
    let out = Lakeload::new(dir.path())
        .args(["run", "--mode", "full", "--json"])
        .env("LAKELOAD_SOURCE_URL", &source)
        .env("LAKELOAD_TARGET_URL", &table)
        .output();
    assert_exit(&out, 65);
    let summary = summary_json(&out);
    assert_eq!(summary["exit_code"], 65);
    assert_eq!(summary["status"], "failed");
    assert_eq!(summary["rows_rejected"], 6);
    assert!(
        summary["error"]
            .as_str()
            .unwrap()
            .contains("run.max_reject_ratio")
    );
    let storage = open_storage(&path_str(&table), None).await;
    assert!(read_table(&storage).await.is_empty(), "no data written");
    assert!(!table.join("_lakeload/state.json").exists(), "no state committed");
    let run_id = summary["run_id"].as_str().unwrap();
    assert!(
        table
            .join(format!("_lakeload/rejects/{run_id}.jsonl.gz"))
            .exists(),
        "rejects kept to fix the source"
    );
    let log = std::fs::read_to_string(table.join(format!("_lakeload/logs/{run_id}.log"))).unwrap();
    assert!(
        log.contains("failed"),
        "the log is uploaded when the run fails:\n{log}"
    );
    assert!(!table.join("_lakeload/lock").exists());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_held_lock_exits_75_and_changes_nothing() {
    for s3 in [None, Some(S3Server::shared())] {
        let dir = tempdir();
        let source = dir.path().join("in");
        write_local_inputs(&source);
        let table_url = match s3 {
            Some(server) => format!("s3://{}/t", server.bucket("locked")),
            None => path_str(&dir.path().join("out")),
        };
        let table = open_storage(&table_url, s3).await;
        let now = chrono::Utc::now();
        let holder = serde_json::json!({
            "run_id": "other-run", "host": "elsewhere", "pid": 4242,
            "started_at": now, "lease_expires_at": now + chrono::Duration::seconds(600),
        });
        table
            .put("_lakeload/lock", serde_json::to_vec(&holder).unwrap().into())
            .await
            .unwrap();
        let before: Vec<String> = table.list("").await.unwrap().into_iter().map(|m| m.key).collect();

        let mut cmd = Lakeload::new(dir.path())
            .args(["run", "--mode", "full", "--set", "run.max_reject_ratio=0.5"])
            .env("LAKELOAD_SOURCE_URL", &source)
            .env("LAKELOAD_TARGET_URL", &table_url);
        if let Some(server) = s3 {
            cmd = cmd.envs(server.env());
        }
        let out = cmd.output();
        assert_exit(&out, 75);
        assert!(
            stderr(&out).contains("other-run") && stderr(&out).contains("elsewhere"),
            "{}",
            stderr(&out)
        );
        let after: Vec<String> = table.list("").await.unwrap().into_iter().map(|m| m.key).collect();
        assert_eq!(before, after, "nothing written");
        assert_eq!(
            serde_json::from_slice::<serde_json::Value>(
                &table.get("_lakeload/lock").await.unwrap().unwrap().0
            )
            .unwrap()["run_id"],
            "other-run"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_expired_lock_is_taken_over() {
    let dir = tempdir();
    let (source, table) = (dir.path().join("in"), dir.path().join("out"));
    write_local_inputs(&source);
    let storage = open_storage(&path_str(&table), None).await;
    let past = chrono::Utc::now() - chrono::Duration::seconds(3600);
    let holder = serde_json::json!({
        "run_id": "crashed-run", "host": "gone", "pid": 1, "started_at": past, "lease_expires_at": past,
    });
    storage
        .put("_lakeload/lock", serde_json::to_vec(&holder).unwrap().into())
        .await
        .unwrap();
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
    assert!(
        stderr(&out).contains("took over the lock of crashed-run"),
        "{}",
        stderr(&out)
    );
    assert_eq!(
        table_rows(&storage).await,
        expected_arrival(&|k| {
            crate::full::inputs()
                .into_iter()
                .find(|(key, _, _)| *key == k)
                .unwrap()
                .2 as i64
                * 1_000_000
        })
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_stops_the_run_releases_the_lock_and_uploads_the_log() {
    let dir = tempdir();
    let source = generated_source(dir.path(), "in", &["--files", "24", "--rows", "120000"]);
    let table = dir.path().join("out");
    let child = Lakeload::new(dir.path())
        .args(["run", "--mode", "full", "--json", "--set", "run.threads=1"])
        .env("LAKELOAD_SOURCE_URL", &source)
        .env("LAKELOAD_TARGET_URL", &table)
        .command()
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until the run holds the lock, then interrupt it.
    wait_until(
        "the run to take the lock",
        std::time::Duration::from_secs(30),
        || table.join("_lakeload/lock").exists(),
    );
    std::thread::sleep(std::time::Duration::from_millis(200));
    let kill = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let out = child.wait_with_output().unwrap();
    assert_exit(&out, 1);
    let summary = summary_json(&out);
    assert_eq!(summary["status"], "failed");
    assert!(
        summary["error"].as_str().unwrap().contains("SIGTERM"),
        "{summary}"
    );
    assert!(!table.join("_lakeload/lock").exists(), "lock removed on SIGTERM");
    let run_id = summary["run_id"].as_str().unwrap();
    assert!(table.join(format!("_lakeload/logs/{run_id}.log")).exists());
    assert!(
        !table.join("_lakeload/state.json").exists(),
        "interrupted before the state commit"
    );
}

#[test]
fn demo_runs_from_an_empty_folder() {
    let dir = tempdir();
    let out = Lakeload::new(dir.path()).args(["demo", "demo-here"]).output();
    assert_exit(&out, 0);
    let text = stdout(&out);
    assert!(
        text.contains("(full) succeeded") && text.contains("(incremental) succeeded"),
        "{text}"
    );
    assert!(text.contains("duckdb -c"), "{text}");
    assert!(dir.path().join("demo-here/table/_lakeload/state.json").exists());
    // Running it again reuses its own folder; a foreign non-empty folder is refused.
    assert_exit(&Lakeload::new(dir.path()).args(["demo", "demo-here"]).output(), 0);
    std::fs::create_dir_all(dir.path().join("mine")).unwrap();
    std::fs::write(dir.path().join("mine/precious.txt"), "keep").unwrap();
    let out = Lakeload::new(dir.path()).args(["demo", "mine"]).output();
    assert_exit(&out, 2);
    assert!(dir.path().join("mine/precious.txt").exists());
}

#[test]
fn status_and_unlock() {
    let dir = tempdir();
    let (source, table) = (dir.path().join("in"), dir.path().join("out"));
    write_local_inputs(&source);
    let cmd = |args: &[&str]| {
        Lakeload::new(dir.path())
            .env("LAKELOAD_SOURCE_URL", &source)
            .env("LAKELOAD_TARGET_URL", &table)
            .env("LAKELOAD_RUN_MAX_REJECT_RATIO", "0.5")
            .args(args)
            .output()
    };
    let run = cmd(&["run", "--json"]);
    assert_exit(&run, 0);
    let run_id = summary_json(&run)["run_id"].as_str().unwrap().to_string();
    let status = cmd(&["status", "--json"]);
    assert_exit(&status, 0);
    let status = summary_json(&status);
    assert_eq!(status["files"], 4);
    assert_eq!(status["rows"], 11);
    assert_eq!(status["dates"].as_array().unwrap().len(), 7);
    assert_eq!(status["runs"][0]["run_id"], run_id.as_str());
    assert!(status["lock"].is_null());
    let text = cmd(&["status"]);
    assert!(
        stdout(&text).contains("lock   free") && stdout(&text).contains("2024-02-29"),
        "{}",
        stdout(&text)
    );

    // A live lock is shown, and unlock refuses it without --force.
    let now = chrono::Utc::now();
    let holder = serde_json::json!({"run_id": "busy-run", "host": "h1", "pid": 7, "started_at": now,
                                    "lease_expires_at": now + chrono::Duration::seconds(600)});
    std::fs::write(table.join("_lakeload/lock"), serde_json::to_vec(&holder).unwrap()).unwrap();
    assert!(stdout(&cmd(&["status"])).contains("busy-run"));
    let refused = cmd(&["unlock"]);
    assert_exit(&refused, 75);
    assert!(
        stderr(&refused).contains("busy-run") && stderr(&refused).contains("--force"),
        "{}",
        stderr(&refused)
    );
    assert!(table.join("_lakeload/lock").exists());
    let forced = cmd(&["unlock", "--force"]);
    assert_exit(&forced, 0);
    assert!(stdout(&forced).contains("busy-run"));
    assert!(!table.join("_lakeload/lock").exists());
    assert!(stdout(&cmd(&["unlock"])).contains("no lock"));
}

#[test]
fn a_reject_ratio_that_can_no_longer_pass_stops_reading_early() {
    let dir = tempdir();
    let (source, table) = (dir.path().join("in"), dir.path().join("out"));
    // The oldest file is 100 000 lines, every other one bad (not nearly all alike, so the
    // first-lines diagnosis leaves it to the ratio); 20 one-line files follow. Once the bad
    // file is read, even if every later file held as many lines as its size allows, the
    // ratio stays above 1 %.
    let bad = "too|few\nk|v|||v|2024-01-01|2024-01-01|x\n".repeat(50_000);
    write_file(&source, "a-bad.gz", &gzip(bad.as_bytes()), 1_000);
    for i in 0..20 {
        let line = format!("k{i}|v|||v|2024-01-01|2024-01-01|x\n");
        write_file(
            &source,
            &format!("good-{i:02}.gz"),
            &gzip(line.as_bytes()),
            2_000 + i,
        );
    }
    let out = Lakeload::new(dir.path())
        .args(["run", "--mode", "full", "--json", "--set", "run.threads=1"])
        .env("LAKELOAD_SOURCE_URL", &source)
        .env("LAKELOAD_TARGET_URL", &table)
        .output();
    assert_exit(&out, 65);
    let summary = summary_json(&out);
    let error = summary["error"].as_str().unwrap();
    assert!(error.contains("reading stopped"), "{error}");
    assert_eq!(summary["rows_rejected"], 50_000);
    let read = summary["rows_read"].as_u64().unwrap();
    assert!(
        read < 100_020,
        "stopped before reading every file: {read} rows read"
    );
    assert!(!table.join("_lakeload/state.json").exists(), "no state committed");
    // Every reject is in the rejects file (spilled to disk while the run went on).
    let run_id = summary["run_id"].as_str().unwrap();
    let rejects = std::fs::read(table.join(format!("_lakeload/rejects/{run_id}.jsonl.gz"))).unwrap();
    let mut text = String::new();
    std::io::Read::read_to_string(&mut flate2::read::MultiGzDecoder::new(&rejects[..]), &mut text).unwrap();
    assert_eq!(text.lines().count(), 50_000);
}

#[test]
fn output_into_a_closed_pipe_ends_quietly() {
    // `lakeload status --json | head -c 10`: the reader leaves before the output is written.
    let dir = tempdir();
    let (source, table) = (dir.path().join("in"), dir.path().join("out"));
    write_local_inputs(&source);
    let config = conf(
        dir.path(),
        &format!(
            "[source]\nurl = {}\n[target]\nurl = {}\n[run]\nmax_reject_ratio = 1\n",
            source.display(),
            table.display()
        ),
    );
    assert_exit(&Lakeload::new(dir.path()).args(["run"]).output(), 0);
    for args in [vec!["status", "--json"], vec!["status"], vec!["plan"]] {
        let mut child = Lakeload::new(dir.path())
            .args(["--config".to_string(), config.display().to_string()])
            .args(&args)
            .command()
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        drop(child.stdout.take());
        let out = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !stderr.contains("panicked") && !stderr.contains("backtrace"),
            "{args:?}: {stderr}"
        );
        assert_eq!(out.status.code(), Some(0), "{args:?}: {stderr}");
    }
}

/// The budget a run used, how it was chosen and what it spilled are in its summary, its
/// closing table and `plan`: `auto` by default, the setting when there is one.
#[test]
fn the_summary_and_plan_say_which_memory_budget_was_used_and_what_spilled() {
    let dir = tempdir();
    let source = generated_source(
        dir.path(),
        "in",
        &["--files", "4", "--rows", "5000", "--span", "10"],
    );
    let table = dir.path().join("out");
    let run = |limit: Option<&str>, json: bool| {
        let mut cmd = Lakeload::new(dir.path())
            .env("LAKELOAD_SOURCE_URL", &source)
            .env("LAKELOAD_TARGET_URL", &table)
            .args(["run", "--mode", "full"]);
        if json {
            cmd = cmd.args(["--json"]);
        }
        if let Some(l) = limit {
            cmd = cmd.env("LAKELOAD_RUN_MEMORY_LIMIT", l);
        }
        let out = cmd.output();
        assert_exit(&out, 0);
        out
    };

    let default = summary_json(&run(None, true));
    assert!(
        default["memory_limit_chosen"]
            .as_str()
            .unwrap()
            .starts_with("auto: "),
        "{default}"
    );
    assert!(default["memory_limit"].as_u64().unwrap() >= 256 << 20);
    assert_eq!(default["bytes_spilled"], 0, "20,000 lines fit the auto budget");

    let tight = summary_json(&run(Some("4KiB"), true));
    assert_eq!(tight["memory_limit"], 4096);
    assert_eq!(tight["memory_limit_chosen"], "run.memory_limit = 4KiB");
    assert!(tight["bytes_spilled"].as_u64().unwrap() > 0, "{tight}");
    assert_eq!(tight["rows_read"], default["rows_read"]);

    let table_text = stderr(&run(Some("4KiB"), false));
    assert!(
        table_text.contains("(run.memory_limit = 4KiB)") && table_text.contains("spilled to disk"),
        "{table_text}"
    );
    let plan = Lakeload::new(dir.path())
        .env("LAKELOAD_SOURCE_URL", &source)
        .env("LAKELOAD_TARGET_URL", &table)
        .args(["plan"])
        .output();
    assert_exit(&plan, 0);
    assert!(
        stdout(&plan).contains("memory") && stdout(&plan).contains("auto: "),
        "{}",
        stdout(&plan)
    );
}
