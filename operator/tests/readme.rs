//! The README's Kubernetes path as written, on a single-node cluster of its own (the cluster
//! tests' install sets test values; this one sets none): the "Install with Helm" block, with
//! its S3-compatible line, run by a shell, then `kubectl -n lakeload apply -f
//! deploy/etlrun.yaml` from "Run once". Only the registry, the tag and the S3 endpoint are
//! replaced by the test cluster's: the images are imported as `localhost/…:dev` and moto
//! listens on the node's pod-network address. Every other chart value is its default: no
//! host network, the API server through the `kubernetes` Service, one replica, the default
//! allow-lists and the results' admission policy.

mod common;
use common::client_for;

use std::process::Command;
use std::time::{Duration, Instant};

use kube::api::Api;
use lakeload_operator::crd::{EtlRun, Phase};
use lakeload_testkit::cluster::Cluster;
use lakeload_testkit::{S3Server, gzip};

/// The first ```sh block after the line `heading` of the README.
fn readme_block(heading: &str) -> Vec<String> {
    let readme = std::fs::read_to_string(lakeload_testkit::workspace().join("README.md")).unwrap();
    let after = readme
        .split_once(&format!("\n{heading}\n"))
        .unwrap_or_else(|| panic!("the README has no {heading}"))
        .1;
    let block = after
        .split_once("```sh\n")
        .unwrap()
        .1
        .split_once("```")
        .unwrap()
        .0;
    block.lines().map(str::to_string).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_readme_installs_the_chart_and_runs_the_sample_as_written() {
    let cluster = tokio::task::spawn_blocking(Cluster::shared).await.unwrap();
    let host = cluster.host_ip.clone();
    let s3 = tokio::task::spawn_blocking(move || S3Server::listening_on(&host))
        .await
        .unwrap();
    // The sample's buckets, with gzip files where its source points.
    for bucket in ["landing-bucket", "lake-bucket"] {
        assert_eq!(s3.request("PUT", &format!("/{bucket}"), b""), 200);
    }
    let mut lines = 0;
    for f in 0..3u64 {
        let text = lakeload_testkit::sample_lines(f + 21, 200, 60, 3);
        lines += text.lines().count();
        s3.put(
            "landing-bucket",
            &format!("events/part-{f}.gz"),
            &gzip(text.as_bytes()),
        );
    }

    // "Install with Helm": the command, and its S3-compatible line taken out of its comment.
    let block = readme_block("### Install with Helm");
    let mut install = String::new();
    for line in &block {
        let line = line.split("   # ").next().unwrap();
        match line.trim_start().strip_prefix("#   ") {
            Some(option) => install = format!("{} {option}", install.trim_end().trim_end_matches('\\')),
            None if line.trim_start().starts_with('#') => {}
            None => install += &format!("{line}\n"),
        }
    }
    let install = install
        .replace("registry.example.com/", "localhost/")
        .replace("=0.1.0", "=dev")
        .replace("http://minio.example:9000", &s3.endpoint);
    let helm = tokio::task::spawn_blocking(lakeload_testkit::helm).await.unwrap();
    let kubectl = tokio::task::spawn_blocking(lakeload_testkit::kubectl)
        .await
        .unwrap();
    let shell = |script: &str| {
        let script = format!(
            "helm() {{ '{}' \"$@\"; }}\nkubectl() {{ '{}' \"$@\"; }}\nset -e\n{script}",
            helm.display(),
            kubectl.display()
        );
        let out = Command::new("bash")
            .arg("-c")
            .arg(&script)
            .current_dir(lakeload_testkit::workspace())
            .env("KUBECONFIG", &cluster.kubeconfig)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{script}\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    assert!(install.contains("--set-json 'workerSettings="), "{install}");
    tokio::task::block_in_place(|| shell(&install));

    // "Run once": its first line applies the sample; its second lists the runs.
    let run_once = readme_block("### Run once");
    assert!(run_once[0].starts_with("kubectl -n lakeload apply -f deploy/etlrun.yaml"));
    tokio::task::block_in_place(|| shell(&run_once[0]));
    let admin = client_for(&cluster.kubeconfig).await;
    let runs: Api<EtlRun> = Api::namespaced(admin, "lakeload");
    let deadline = Instant::now() + Duration::from_secs(300);
    let run = loop {
        let run = runs.get("events-incremental").await.unwrap();
        if run
            .status
            .as_ref()
            .and_then(|s| s.phase)
            .is_some_and(Phase::is_finished)
        {
            break run;
        }
        assert!(
            Instant::now() < deadline,
            "the sample run did not finish: {:?}",
            run.status
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let status = run.status.unwrap();
    assert_eq!(status.phase, Some(Phase::Succeeded), "{status:?}");
    assert_eq!(status.rows_read, Some(lines as u64));
    assert_eq!(status.table_version, Some(0), "a Delta table, its first commit");
    let listed = tokio::task::block_in_place(|| shell(&run_once[1]));
    assert!(
        listed.contains("events-incremental") && listed.contains("Succeeded"),
        "{listed}"
    );
}
