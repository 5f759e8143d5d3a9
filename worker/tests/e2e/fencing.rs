//! SPEC §5's fencing, run for real: a run that lost its lock writes nothing more; writes whose
//! replies were lost are recognised; source reads resume; interrupted uploads are aborted; a
//! table inside its own source never reads itself.

use std::collections::BTreeMap;
use std::time::Duration;

use lakeload::config::Mode;
use lakeload::faults;
use lakeload_testkit::faultproxy::{Fault, FaultProxy, Match};

use crate::common::*;
use crate::incremental::{Place, check_accounting, runtime};

const PAUSE_TIMEOUT: Duration = Duration::from_secs(120);

/// `n` lines over four dates, keys repeating across files, values varied enough that gzip
/// leaves some kilobytes.
fn lines(seed: u64, n: usize) -> String {
    let mut x = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    let mut text = String::new();
    for _ in 0..n {
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let key = (x >> 33) % 40;
        let day = 1 + (x >> 40) % 4;
        text += &format!("k{key}|v{x:x}|||{}|2024-01-0{day}|2024-01-0{day}|x\n", x >> 50);
    }
    text
}

fn add(place: &Place, key: &str, seed: u64, n: usize, arrival: u64) {
    place.add_source(key, &gzip(lines(seed, n).as_bytes()), arrival);
}

fn worker(place: &Place, table: &str, run_id: &str) -> Lakeload {
    Lakeload::new(std::path::Path::new("/"))
        .envs(place.env())
        .env("LAKELOAD_SOURCE_URL", place.url("src"))
        .env("LAKELOAD_TARGET_URL", place.url(table))
        .args(["run", "--mode", "incremental", "--json", "--run-id", run_id])
}

fn places(hint: &str, dir: &std::path::Path) -> [Place; 2] {
    [
        Place::Local(dir.to_path_buf()),
        Place::S3 {
            bucket: S3Server::shared().bucket(hint),
            prefix: "p".into(),
        },
    ]
}

/// Every object a run could write as table data or state (the lock, which the holder renews,
/// and per-run summaries and logs, which a run writes under its own id, left out).
fn snapshot(place: &Place, table: &str) -> BTreeMap<String, (u64, Option<String>)> {
    runtime().block_on(async {
        let storage = open_storage(&place.url(table), place.s3()).await;
        storage
            .list("")
            .await
            .unwrap()
            .into_iter()
            .filter(|m| {
                m.key != "_lakeload/lock"
                    && !m.key.starts_with("_lakeload/runs/")
                    && !m.key.starts_with("_lakeload/logs/")
            })
            .map(|m| (m.key, (m.size, m.etag)))
            .collect()
    })
}

/// The rows one full run over the same sources gives.
fn reference(place: &Place) -> Vec<TableRow> {
    runtime().block_on(async {
        let table = format!("ref-{}", std::process::id());
        check_accounting(&lakeload::run::run(&place.config(&table, Mode::Full, "arrival"), false).await);
        place.rows(&table).await
    })
}

fn lock_exists(place: &Place, table: &str) -> bool {
    runtime().block_on(async {
        let storage = open_storage(&place.url(table), place.s3()).await;
        storage.head("_lakeload/lock").await.unwrap().is_some()
    })
}

/// Waits until the lease of the run holding `table`'s lock has ended, as a run taking the
/// lock over would judge it (the store's clock against the lock's Last-Modified, where the
/// store gives one).
fn outlive_lease(place: &Place, table: &str) {
    use lakeload::commit::lock::{Holder, current_holder};
    let storage = runtime().block_on(open_storage(&place.url(table), place.s3()));
    wait_until("the stopped run's lease to end", Duration::from_secs(60), || {
        let holder = runtime().block_on(current_holder(&storage)).unwrap();
        !matches!(holder, Holder::Held { expired: false, .. })
    });
}

#[test]
fn a_run_paused_past_its_lease_writes_nothing_and_names_the_new_holder() {
    let dir = tempdir();
    for place in places("lost-lease", dir.path()) {
        add(&place, "a.gz", 1, 300, 1_000);
        add(&place, "b.gz", 2, 300, 2_000);

        // Run A stops (SIGSTOP: nothing runs, renewal included) just before its first write.
        let mut a = Running::spawn(
            worker(&place, "t", "run-a")
                .env("LAKELOAD_LOCK_LEASE_SECONDS", "5")
                .env(faults::ENV, "before_date_write:1:stop"),
        );
        a.wait_for(faults::MARKER, PAUSE_TIMEOUT);
        outlive_lease(&place, "t");

        // Run B takes the lock over and holds it, sleeping after its read.
        let mut b = Running::spawn(worker(&place, "t", "run-b").env(faults::ENV, "after_read:1:sleep8000"));
        b.wait_for(faults::MARKER, PAUSE_TIMEOUT);
        let before = snapshot(&place, "t");

        a.resume();
        let (code, _, stderr) = a.finish();
        assert_eq!(code, Some(1), "{stderr}");
        assert!(
            stderr.contains("run run-b") && stderr.contains(&format!("(pid {})", b.pid())),
            "names the new holder:\n{stderr}"
        );
        assert_eq!(snapshot(&place, "t"), before, "run A wrote after losing its lock");

        let (code, stdout, stderr) = b.finish();
        assert_eq!(code, Some(0), "{stdout}\n{stderr}");
        assert!(stderr.contains("took over the lock of run-a"), "{stderr}");
        assert_eq!(place.rows_blocking("t"), reference(&place));
        assert!(!lock_exists(&place, "t"), "run B released the lock");
    }
}

#[test]
fn a_retry_under_the_same_run_id_takes_over_the_lock_its_killed_attempt_left() {
    // A Kubernetes Job's next pod runs with the same --run-id after the previous pod was
    // killed (OOM, node drain) while it held the table's lock.
    let dir = tempdir();
    for place in places("same-run-retry", dir.path()) {
        add(&place, "a.gz", 5, 300, 1_000);
        add(&place, "b.gz", 6, 300, 2_000);
        let mut first = Running::spawn(
            worker(&place, "t", "run-job")
                .env("LAKELOAD_LOCK_LEASE_SECONDS", "600")
                .env(faults::ENV, "before_date_write:1:stop"),
        );
        first.wait_for(faults::MARKER, PAUSE_TIMEOUT);
        first.signal("KILL");
        let _ = first.finish();
        assert!(lock_exists(&place, "t"), "the killed attempt left its lock");

        // Another run is still refused: the lease has 10 minutes to go.
        let other = worker(&place, "t", "run-other").output();
        assert_exit(&other, 75);

        let retry = worker(&place, "t", "run-job").output();
        assert_exit(&retry, 0);
        assert!(
            stderr(&retry).contains("an earlier attempt of this run (run run-job"),
            "{}",
            stderr(&retry)
        );
        assert_eq!(place.rows_blocking("t"), reference(&place));
        assert!(!lock_exists(&place, "t"), "the retry released the lock");
    }
}

#[test]
fn a_write_stalled_after_the_lease_check_is_abandoned_once_the_lease_has_run_out() {
    let dir = tempdir();
    for place in places("stalled-write", dir.path()) {
        add(&place, "a.gz", 3, 300, 1_000);
        let (code, out, err) = Running::spawn(worker(&place, "t", "first")).finish();
        assert_eq!(code, Some(0), "{out}\n{err}");
        add(&place, "b.gz", 4, 300, 2_000);

        // Run A checks its lease, then stalls before its PUT is sent.
        let mut a = Running::spawn(
            worker(&place, "t", "run-a")
                .env("LAKELOAD_LOCK_LEASE_SECONDS", "5")
                .env("LAKELOAD_RUN_THREADS", "1")
                .env(faults::ENV, "date_write_checked:1:stop"),
        );
        a.wait_for(faults::MARKER, PAUSE_TIMEOUT);
        outlive_lease(&place, "t");
        // Run B loads that file and one more to the end, so every date A read has changed.
        // (Had B written the very bytes A was about to, A's PUT would be recognised as its own
        // write whose reply was lost, which is harmless: the object holds what A meant.)
        add(&place, "c.gz", 11, 300, 3_000);
        let (code, out, err) = Running::spawn(worker(&place, "t", "run-b")).finish();
        assert_eq!(code, Some(0), "{out}\n{err}");
        let before = snapshot(&place, "t");

        // Run A wakes up with its write not yet sent: its lease has run out, so the write is
        // abandoned rather than sent (had it reached the store, the store would refuse it: the
        // date changed; `conditional_writes_whose_replies_were_lost_are_recognised` and the
        // store check cover that side).
        a.resume();
        let (code, _, stderr) = a.finish();
        assert_eq!(code, Some(1), "{stderr}");
        assert!(stderr.contains("ran out before its write"), "{stderr}");
        assert_eq!(snapshot(&place, "t"), before, "run A's late write landed");
        assert_eq!(place.rows_blocking("t"), reference(&place));
    }
}

#[test]
fn conditional_writes_whose_replies_were_lost_are_recognised() {
    let place = Place::S3 {
        bucket: S3Server::shared().bucket("lost-replies"),
        prefix: "p".into(),
    };
    add(&place, "a.gz", 5, 300, 1_000);
    add(&place, "b.gz", 6, 300, 2_000);
    let proxy = FaultProxy::start(&S3Server::shared().endpoint);
    let put = |suffix: &str, header| Match {
        method: "PUT",
        path_suffix: suffix.to_string(),
        header,
    };
    let acquire = proxy.inject(put("/_lakeload/lock", Some("if-none-match")), Fault::DropReply, 1);
    let renew = proxy.inject(put("/_lakeload/lock", Some("if-match")), Fault::DropReply, 1);
    let date = proxy.inject(put(".snappy.parquet", None), Fault::DropReply, 1);
    let state = proxy.inject(put("/_lakeload/state.json", None), Fault::DropReply, 1);

    // A 9 s lease renews every 3 s: the pause after the read lets one renewal happen.
    let (code, stdout, stderr) = Running::spawn(
        worker(&place, "t", "lossy")
            .env("LAKELOAD_AWS_ENDPOINT_URL", &proxy.endpoint)
            .env("LAKELOAD_LOCK_LEASE_SECONDS", "9")
            .env(faults::ENV, "after_read:1:sleep4000"),
    )
    .finish();
    assert_eq!(code, Some(0), "{stdout}\n{stderr}");
    for (what, rule) in [
        ("acquire", acquire),
        ("renewal", renew),
        ("date write", date),
        ("state commit", state),
    ] {
        assert_eq!(proxy.fired(rule), 1, "the {what} reply was dropped once");
    }
    assert_eq!(place.rows_blocking("t"), reference(&place));
    assert!(!lock_exists(&place, "t"), "the lock was released");
    let summary = summary_json_text(&stdout);
    assert_eq!(summary["files"].as_array().unwrap().len(), 2);
}

#[test]
fn a_read_cut_off_resumes_and_a_dead_store_is_a_read_error() {
    let place = Place::S3 {
        bucket: S3Server::shared().bucket("cut-reads"),
        prefix: "p".into(),
    };
    add(&place, "a.gz", 7, 2_000, 1_000);
    add(&place, "b.gz", 8, 2_000, 2_000);
    let proxy = FaultProxy::start(&S3Server::shared().endpoint);
    let get = |suffix: &str| Match {
        method: "GET",
        path_suffix: suffix.to_string(),
        header: None,
    };
    // Twice, a few kilobytes in: the read resumes with a ranged GET each time.
    let cut = proxy.inject(get("/src/a.gz"), Fault::CutBody { after: 4_000 }, 2);
    let (code, stdout, stderr) =
        Running::spawn(worker(&place, "t", "resumed").env("LAKELOAD_AWS_ENDPOINT_URL", &proxy.endpoint))
            .finish();
    assert_eq!(code, Some(0), "{stdout}\n{stderr}");
    assert_eq!(proxy.fired(cut), 2);
    assert!(stderr.contains("resuming"), "{stderr}");
    assert_eq!(place.rows_blocking("t"), reference(&place));

    // The stored dates an incremental run merges into are streamed to scratch disk: a table
    // object read cut off resumes the same way.
    add(&place, "d.gz", 10, 2_000, 2_500);
    let cut = proxy.inject(get(".snappy.parquet"), Fault::CutBody { after: 4_000 }, 2);
    let (code, stdout, stderr) = Running::spawn(
        worker(&place, "t", "stored-resumed").env("LAKELOAD_AWS_ENDPOINT_URL", &proxy.endpoint),
    )
    .finish();
    assert_eq!(code, Some(0), "{stdout}\n{stderr}");
    assert_eq!(proxy.fired(cut), 2);
    assert!(
        stderr.contains("resuming") && stderr.contains(".snappy.parquet"),
        "{stderr}"
    );
    assert_eq!(place.rows_blocking("t"), reference(&place));

    // A store that breaks every read of a file: a read error, not "not gzip".
    add(&place, "c.gz", 9, 2_000, 3_000);
    let cut = proxy.inject(get("/src/c.gz"), Fault::CutBody { after: 1_000 }, 100);
    let (code, stdout, stderr) =
        Running::spawn(worker(&place, "t", "broken").env("LAKELOAD_AWS_ENDPOINT_URL", &proxy.endpoint))
            .finish();
    assert_eq!(code, Some(1), "{stdout}\n{stderr}");
    assert!(proxy.fired(cut) >= 5, "first read and four retries");
    let error = summary_json_text(&stdout)["error"].as_str().unwrap().to_string();
    assert!(
        error.contains("c.gz") && error.contains("after 4 retries") && !error.contains("gzip"),
        "{error}"
    );
}

#[test]
fn an_interrupted_multipart_upload_is_aborted() {
    let server = S3Server::shared();
    let bucket = server.bucket("multipart");
    let place = Place::S3 {
        bucket: bucket.clone(),
        prefix: "p".into(),
    };
    // One date whose Parquet file is well over two 5 MiB parts: distinct, incompressible values.
    let mut text = String::new();
    let mut x = 99u64;
    for i in 0..400_000 {
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        text += &format!("k{i}|{x:016x}{:016x}|||||2024-01-01|x\n", x.rotate_left(17));
    }
    place.add_source("big.gz", &gzip(text.as_bytes()), 1_000);
    let mut run = Running::spawn(
        worker(&place, "t", "cut-short")
            .env("LAKELOAD_AWS_MULTIPART_PART_SIZE_MIB", "5")
            .env(faults::ENV, "multipart_part_uploaded:1"),
    );
    run.wait_for(faults::MARKER, PAUSE_TIMEOUT);
    let uploads = || server.exchange("GET", &format!("/{bucket}?uploads"), b"").1;
    assert!(
        uploads().contains("<UploadId>"),
        "an upload is in flight: {}",
        uploads()
    );
    run.signal("TERM");
    let (code, stdout, stderr) = run.finish();
    assert_eq!(code, Some(1), "{stdout}\n{stderr}");
    assert!(
        !uploads().contains("<UploadId>"),
        "the upload was aborted: {}",
        uploads()
    );
    assert!(place.rows_blocking("t").is_empty(), "no data object");
}

#[test]
fn a_source_inside_the_table_is_refused_and_a_table_inside_the_source_is_not_read() {
    let dir = tempdir();
    for place in places("overlap", dir.path()) {
        // The table's folder inside the source: its rejects files must not become source files.
        add(&place, "a.gz", 10, 50, 1_000);
        place.add_source("bad.gz", &gzip(b"too|few\nalso|bad\n"), 1_500);
        let inside = Lakeload::new(std::path::Path::new("/"))
            .envs(place.env())
            .env("LAKELOAD_SOURCE_URL", place.url("src"))
            .env("LAKELOAD_TARGET_URL", place.url("src/table"))
            .env("LAKELOAD_RUN_MAX_REJECT_RATIO", "1");
        let first = inside.args(["run", "--mode", "full", "--json"]).output();
        assert_exit(&first, 0);
        assert_eq!(summary_json(&first)["rows_rejected"], 2);
        let table = runtime().block_on(open_storage(&place.url("src/table"), place.s3()));
        let listed = runtime().block_on(table.list("_lakeload/rejects/")).unwrap();
        assert_eq!(
            listed.len(),
            1,
            "a rejects file under the table, inside the source"
        );

        for mode in ["incremental", "full"] {
            let again = Lakeload::new(std::path::Path::new("/"))
                .envs(place.env())
                .env("LAKELOAD_SOURCE_URL", place.url("src"))
                .env("LAKELOAD_TARGET_URL", place.url("src/table"))
                .env("LAKELOAD_RUN_MAX_REJECT_RATIO", "1")
                .args(["run", "--mode", mode, "--json"])
                .output();
            assert_exit(&again, 0);
            let files: Vec<String> = summary_json(&again)["files"]
                .as_array()
                .unwrap()
                .iter()
                .map(|f| f.as_str().unwrap().to_string())
                .collect();
            let expected: Vec<String> = match mode {
                "incremental" => vec![],
                _ => vec!["a.gz".into(), "bad.gz".into()],
            };
            assert_eq!(files, expected, "{mode}: only the source's own files");
        }

        // The source inside the table: a config error on target.url, nothing written.
        let out = Lakeload::new(std::path::Path::new("/"))
            .envs(place.env())
            .env("LAKELOAD_SOURCE_URL", place.url("src"))
            .env("LAKELOAD_TARGET_URL", place.url(""))
            .args(["run"])
            .output();
        assert_exit(&out, 2);
        assert!(
            stderr(&out).contains("target.url") && stderr(&out).contains("contains source.url"),
            "{}",
            stderr(&out)
        );
    }
}

fn summary_json_text(stdout: &str) -> serde_json::Value {
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("summary JSON ({e}): {stdout}"))
}
