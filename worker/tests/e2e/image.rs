//! The worker's container image (./Dockerfile, built by tests/images/build.sh with podman from
//! this checkout's binaries) run as users run it: `docker run -v common.conf:/app/common.conf`
//! against an S3 server (moto on the host network), as a non-root user on a read-only root
//! filesystem, with the exit codes scripts and Kubernetes act on.

use std::path::Path;
use std::process::{Command, Output};

use crate::common::*;

const IMAGE: &str = "localhost/lakeload:dev";

/// `podman …` with the project's podman configuration (tests/images/podman-env.sh).
fn podman(args: &[&str]) -> Output {
    let env = lakeload_testkit::workspace().join("tests/images/podman-env.sh");
    let quoted: Vec<String> = args
        .iter()
        .map(|a| format!("'{}'", a.replace('\'', "'\\''")))
        .collect();
    Command::new("bash")
        .arg("-c")
        .arg(format!(
            "source '{}' && podman {}",
            env.display(),
            quoted.join(" ")
        ))
        .output()
        .expect("run podman")
}

fn image_exists() {
    let out = podman(&["image", "exists", IMAGE]);
    assert!(
        out.status.success(),
        "{IMAGE} is missing: build it with tests/images/build.sh (tests/run-all.sh does)"
    );
}

/// `docker run --rm --network host --read-only -v <conf>:/app/common.conf:ro lakeload <args>`
fn run_image(conf: &Path, args: &[&str]) -> Output {
    let mount = format!("{}:/app/common.conf:ro", conf.display());
    let mut all = vec![
        "run",
        "--rm",
        "--network",
        "host",
        "--read-only",
        "-v",
        &mount,
        IMAGE,
    ];
    all.extend_from_slice(args);
    podman(&all)
}

fn lines(seed: u64, n: usize) -> String {
    lakeload_testkit::sample_lines(seed, n, 80, 5)
}

fn conf(dir: &Path, bucket: &str, table: &str, extra: &str) -> std::path::PathBuf {
    let s3 = S3Server::shared();
    let path = dir.join(format!("{table}.conf"));
    std::fs::write(
        &path,
        format!(
            "[source]\nurl = s3://{bucket}/src\n[target]\nurl = s3://{bucket}/{table}\n\
             [aws]\nendpoint_url = {}\nregion = us-east-1\naccess_key_id = testing\n\
             secret_access_key = testing\n{extra}",
            s3.endpoint
        ),
    )
    .unwrap();
    path
}

fn table(bucket: &str, name: &str) -> Vec<TableRow> {
    let s3 = S3Server::shared();
    crate::incremental::runtime()
        .block_on(async { table_rows(&open_storage(&format!("s3://{bucket}/{name}"), Some(s3)).await).await })
}

#[test]
fn the_worker_image_loads_full_then_incremental_as_non_root_on_a_read_only_root() {
    image_exists();
    let inspect = podman(&["image", "inspect", "--format", "{{.Config.User}}", IMAGE]);
    assert_eq!(String::from_utf8_lossy(&inspect.stdout).trim(), "10001:10001");
    let id = podman(&["run", "--rm", "--entrypoint", "id", IMAGE, "-u"]);
    assert_eq!(
        String::from_utf8_lossy(&id.stdout).trim(),
        "10001",
        "the process is not root"
    );

    let s3 = S3Server::shared();
    let bucket = s3.bucket("image");
    let dir = tempdir();
    for f in 0..3 {
        s3.put(&bucket, &format!("src/a{f}.gz"), &gzip(lines(f, 400).as_bytes()));
    }
    // A tiny memory limit makes the run spill: into TMPDIR (/tmp), the one writable place.
    let image_conf = conf(dir.path(), &bucket, "table", "[run]\nmemory_limit = 64KiB\n");
    let full = run_image(&image_conf, &["run", "--mode", "full", "--json"]);
    assert_exit(&full, 0);
    assert_eq!(summary_json(&full)["rows_read"], 1200);

    s3.put(&bucket, "src/b.gz", &gzip(lines(9, 300).as_bytes()));
    let incremental = run_image(&image_conf, &["run", "--json"]);
    assert_exit(&incremental, 0);
    let summary = summary_json(&incremental);
    assert_eq!(summary["mode"], "incremental");
    assert_eq!(summary["rows_read"], 300, "only the new file is read");

    // The same full load on this host, by the binary the image was built from.
    let host_conf = conf(dir.path(), &bucket, "reference", "");
    let reference = Lakeload::new(dir.path())
        .args(["--config".to_string(), host_conf.display().to_string()])
        .args(["run", "--mode", "full"])
        .output();
    assert_exit(&reference, 0);
    assert_eq!(table(&bucket, "table"), table(&bucket, "reference"));
}

#[test]
fn the_worker_image_exits_2_on_a_config_mistake_and_75_when_the_table_is_locked() {
    image_exists();
    let s3 = S3Server::shared();
    let bucket = s3.bucket("image-codes");
    let dir = tempdir();
    s3.put(&bucket, "src/a.gz", &gzip(lines(1, 50).as_bytes()));

    let bad = run_image(
        &conf(dir.path(), &bucket, "t", "[run]\norder = sideways\n"),
        &["run"],
    );
    assert_exit(&bad, 2);
    assert!(stderr(&bad).contains("run.order"), "{}", stderr(&bad));

    // Another writer (a laptop, say) holds the table's lock for an hour.
    s3.put(
        &bucket,
        "t/_lakeload/lock",
        lakeload_testkit::foreign_lock("laptop-run").as_bytes(),
    );
    let locked = run_image(&conf(dir.path(), &bucket, "t", ""), &["run"]);
    assert_exit(&locked, 75);
    assert!(stderr(&locked).contains("laptop-run"), "{}", stderr(&locked));
}

#[test]
fn the_default_memory_budget_follows_the_containers_memory_limit() {
    image_exists();
    let s3 = S3Server::shared();
    let bucket = s3.bucket("budget");
    s3.put(&bucket, "src/a.gz", &gzip(lines(1, 100).as_bytes()));
    let dir = tempdir();
    let conf = conf(dir.path(), &bucket, "table", "");
    let mount = format!("{}:/app/common.conf:ro", conf.display());
    let plan = |memory: Option<&str>| {
        let mut args = vec!["run", "--rm", "--network", "host", "--read-only", "-v", &mount];
        if let Some(m) = memory {
            args.extend(["--memory", m]);
        }
        args.extend([IMAGE, "plan", "--json"]);
        let out = podman(&args);
        assert_exit(&out, 0);
        let json: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
        (
            json["memory_limit"].as_u64().unwrap(),
            json["memory_limit_chosen"].as_str().unwrap().to_string(),
        )
    };
    // `docker run --memory 768m`: three quarters of it, as the operator gives a Job.
    let (bytes, chosen) = plan(Some("768m"));
    assert_eq!(bytes, 576 << 20);
    assert!(chosen.contains("3/4 of the container's memory limit"), "{chosen}");
    // No limit: a share of the machine.
    let (bytes, chosen) = plan(None);
    assert!(chosen.contains("of this machine's"), "{chosen}");
    assert!(bytes > 576 << 20);
}
