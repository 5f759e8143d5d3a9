//! Kubernetes retries a pod with the same arguments: a worker killed after writing some dates
//! (an OOM kill, a node drain, a Kueue eviction) is started again with the same `--run-id`,
//! often after more source files landed. The retry must finish, and the table must be exactly
//! what one uninterrupted run would have made.

use std::path::Path;

use lakeload_testkit::S3Server;

use crate::common::*;
use crate::delta::{delta_at_equals, first_files, land_file, s3_options};

/// The run id the operator gives every pod of one EtlRun.
const RUN_ID: &str = "etlrun-nightly-7f3a";

/// The worker on `source` and the table at `target` (`env` points at its server).
fn worker(dir: &Path, source: &Path, target: &str, env: &[(String, String)], format: &str) -> Lakeload {
    Lakeload::new(dir)
        .envs(env.to_vec())
        .env("LAKELOAD_SOURCE_URL", source)
        .env("LAKELOAD_TARGET_URL", target)
        .env("LAKELOAD_TARGET_FORMAT", format)
        .env("LAKELOAD_RUN_THREADS", "2")
}

fn run_ok(cmd: Lakeload, args: &[&str]) -> serde_json::Value {
    let out = cmd.args(args).args(["--json"]).output();
    assert_exit(&out, 0);
    summary_json(&out)
}

/// Local and S3, `delta` and `parquet`: the first attempt is killed (SIGKILL, its lock left
/// behind) right after writing its first date; a file lands; the second attempt, same run id,
/// succeeds and loads both new files once, and the table equals the `parquet` table an
/// uninterrupted full and incremental run give. The killed attempt's Delta files are no part
/// of any version: they stay announced in the state, for `vacuum`.
#[test]
fn a_killed_run_retried_with_its_run_id_after_a_new_file_landed_is_exact() {
    let s3 = S3Server::shared();
    for format in ["delta", "parquet"] {
        for on_s3 in [false, true] {
            let case = format!("{format} on {}", if on_s3 { "S3" } else { "local disk" });
            let dir = tempdir();
            let dir = dir.path();
            let source = first_files(dir, 4, 1000);
            let (target, env) = match on_s3 {
                true => (
                    format!("s3://{}/tables/sales", s3.bucket(&format!("retry-{format}"))),
                    s3.env(),
                ),
                false => (path_str(&dir.join("table")), Vec::new()),
            };
            let oracle = dir.join("oracle");
            let on_target = || worker(dir, &source, &target, &env, format);
            let oracle_url = path_str(&oracle);
            let on_oracle = || worker(dir, &source, &oracle_url, &[], "parquet");
            run_ok(on_target(), &["run", "--mode", "full"]);
            run_ok(on_oracle(), &["run", "--mode", "full"]);

            land_file(dir, "2026-11-02", 10, 1000, &["--seed", "9"]);
            let mut first = Running::spawn(
                on_target()
                    .env("LAKELOAD_TEST_PAUSE_AT", "after_date_write:1")
                    .args(["run", "--mode", "incremental", "--run-id", RUN_ID]),
            );
            first.wait_for("lakeload-test-paused-at", std::time::Duration::from_secs(60));
            first.signal("KILL");
            first.finish();

            land_file(dir, "2026-11-03", 11, 1000, &["--seed", "10"]);
            let retry = run_ok(on_target(), &["run", "--mode", "incremental", "--run-id", RUN_ID]);
            assert_eq!(retry["run_id"], RUN_ID, "{case}");
            assert_eq!(
                retry["files"].as_array().unwrap().len(),
                2,
                "{case}: both new files loaded by the retry: {retry}"
            );
            let oracle_run = run_ok(on_oracle(), &["run", "--mode", "incremental"]);
            assert_eq!(retry["counts"], oracle_run["counts"], "{case}");

            let rt = tokio::runtime::Runtime::new().unwrap();
            let storage = rt.block_on(open_storage(&target, on_s3.then_some(s3)));
            match format {
                "delta" => {
                    let options = on_s3.then(|| s3_options(s3));
                    assert!(
                        delta_at_equals(&target, options.as_ref(), None, &oracle),
                        "{case}: the table equals an uninterrupted run's"
                    );
                    let (state, _) = rt.block_on(storage.get("_lakeload/state.json")).unwrap().unwrap();
                    let state: serde_json::Value = serde_json::from_slice(&state).unwrap();
                    assert_eq!(state["table_version"], 1, "{case}: one version per run");
                    let live: Vec<&str> = state["partitions"]
                        .as_object()
                        .unwrap()
                        .values()
                        .map(|p| p["key"].as_str().unwrap())
                        .collect();
                    let left: Vec<&str> = state["unconfirmed"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|k| k.as_str().unwrap())
                        .collect();
                    assert!(
                        !left.is_empty() && left.iter().all(|k| k.contains(RUN_ID) && !live.contains(k)),
                        "{case}: the killed attempt's files stay announced, none of them live: {state}"
                    );
                    let written = left
                        .iter()
                        .filter(|k| rt.block_on(storage.head(k)).unwrap().is_some())
                        .count();
                    assert!(written >= 1, "{case}: its written file is left for vacuum");
                }
                _ => {
                    let oracle_storage = rt.block_on(open_storage(&path_str(&oracle), None));
                    assert_eq!(
                        rt.block_on(owned_rows(&storage)),
                        rt.block_on(owned_rows(&oracle_storage)),
                        "{case}: the table equals an uninterrupted run's"
                    );
                }
            }
        }
    }
}
