//! Bad input fails fast, in bounded memory, and says why: a wrong delimiter, a date form the
//! rule does not read, an undeclared header. The run stops after the first lines of a file,
//! names the likely cause and the setting, and commits nothing; `plan` says the same first.

use std::process::Stdio;

use crate::common::*;

/// Generated source files (ISO dates, `|`-separated, a few bad lines) in `dir/<folder>`.
fn generate(dir: &std::path::Path, folder: &str, files: usize, rows: usize) -> std::path::PathBuf {
    let (files, rows) = (files.to_string(), rows.to_string());
    generated_source(
        dir,
        folder,
        &["--files", &files, "--rows", &rows, "--bad-ratio", "0.001"],
    )
}

/// Runs the worker; returns its output and its peak resident memory in bytes (wait4).
// The child is reaped by wait4, which also gives its resource usage; `Child::wait` cannot.
#[allow(clippy::zombie_processes)]
fn run_measured(cmd: Lakeload) -> (i32, String, String, u64) {
    let child = cmd
        .command()
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start lakeload");
    let pid = child.id() as libc::pid_t;
    let (mut out, mut err) = (child.stdout.unwrap(), child.stderr.unwrap());
    let out_reader = std::thread::spawn(move || {
        let mut text = String::new();
        std::io::Read::read_to_string(&mut out, &mut text).unwrap();
        text
    });
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut err, &mut stderr).unwrap();
    let mut status = 0;
    // SAFETY: `usage` is a plain C struct the call fills in; `pid` is our own child, waited
    // for once.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let waited = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    assert_eq!(waited, pid);
    let code = if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else {
        -1
    };
    (
        code,
        out_reader.join().unwrap(),
        stderr,
        usage.ru_maxrss as u64 * 1024,
    )
}

fn worker(dir: &std::path::Path, source: &std::path::Path, table: &str, settings: &[&str]) -> Lakeload {
    let mut cmd = Lakeload::new(dir)
        .env("LAKELOAD_SOURCE_URL", source)
        .env("LAKELOAD_TARGET_URL", dir.join(table))
        .args(["run", "--mode", "full", "--json"]);
    for s in settings {
        cmd = cmd.args(["--set", s]);
    }
    cmd
}

#[test]
fn a_wrong_delimiter_stops_after_the_first_lines_within_the_memory_limit() {
    let dir = tempdir();
    let source = generate(dir.path(), "in", 4, 200_000);
    let limit = 64u64 << 20;
    let (code, stdout, stderr, peak) = run_measured(worker(
        dir.path(),
        &source,
        "t",
        &["source.delimiter=,", "run.memory_limit=64MiB", "run.threads=4"],
    ));
    assert_eq!(code, 65, "{stderr}");
    assert!(
        stderr.contains("source.delimiter ',' finds 1 field where 8 are expected; '|' finds 8"),
        "{stderr}"
    );
    assert!(
        peak <= limit + limit / 4,
        "peak RSS {} MiB is above run.memory_limit + 25 % ({} MiB)",
        peak >> 20,
        (limit + limit / 4) >> 20
    );
    let summary: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(summary["exit_code"], 65);
    // The summary counts the sample that decided.
    assert_eq!(
        (summary["rows_read"].as_u64(), summary["rows_rejected"].as_u64()),
        (Some(1000), Some(1000))
    );
    assert!(
        !dir.path().join("t/_lakeload/state.json").exists(),
        "nothing committed"
    );
    assert!(
        !std::fs::read_dir(dir.path().join("t")).unwrap().any(|e| e
            .unwrap()
            .file_name()
            .to_string_lossy()
            .starts_with("year=")),
        "no data written"
    );

    // The same files with the right delimiter load (the diagnosis was right).
    let (code, _, stderr, _) = run_measured(worker(dir.path(), &source, "ok", &["run.memory_limit=64MiB"]));
    assert_eq!(code, 0, "{stderr}");
}

#[test]
fn a_date_form_the_rule_does_not_read_names_the_format_and_plan_says_it_first() {
    let dir = tempdir();
    let source = dir.path().join("in");
    let mut text = String::new();
    for i in 0..3000 {
        let day = 1 + i % 28;
        text += &format!("k{i}|a|b|c|d|{day:02}/03/2024 10:00:00|{day:02}/03/2024 23:59:59|x\n");
    }
    write_file(&source, "eu-dates.gz", &gzip(text.as_bytes()), 1_000);

    let plan = Lakeload::new(dir.path())
        .env("LAKELOAD_SOURCE_URL", &source)
        .env("LAKELOAD_TARGET_URL", dir.path().join("t"))
        .args(["plan"])
        .output();
    assert_exit(&plan, 65);
    assert!(
        stderr(&plan).contains("%d/%m/%Y %H:%M:%S reads it"),
        "{}",
        stderr(&plan)
    );

    let (code, _, stderr, _) = run_measured(worker(dir.path(), &source, "t", &[]));
    assert_eq!(code, 65, "{stderr}");
    assert!(
        stderr.contains("date column `c6` holds `01/03/2024 10:00:00`"),
        "{stderr}"
    );
    assert!(stderr.contains("first 1000 lines"), "{stderr}");

    // The format it names loads the file; a wrong one for ISO files is named too.
    let (code, _, stderr, _) = run_measured(worker(
        dir.path(),
        &source,
        "t",
        &["schema.timestamp_format=%d/%m/%Y %H:%M:%S"],
    ));
    assert_eq!(code, 0, "{stderr}");
    // In a folder of their own: beside the file above, which of the two stops the run first
    // would be a race.
    let iso = generate(dir.path(), "iso-in", 1, 2_000);
    let (code, _, stderr, _) = run_measured(worker(
        dir.path(),
        &iso,
        "iso",
        &["schema.timestamp_format=%d/%m/%Y"],
    ));
    assert_eq!(code, 65, "{stderr}");
    assert!(stderr.contains("remove schema.timestamp_format"), "{stderr}");
}

#[test]
fn an_undeclared_header_is_a_config_error_and_a_declared_one_loads() {
    let dir = tempdir();
    let source = dir.path().join("in");
    for f in 0..3 {
        let mut text = "customer|event|product|price|coupon|ts|day|session\n".to_string();
        for i in 0..100 {
            text += &format!("k{i}|a|b|c|d|2024-01-0{}|2024-01-0{}|x\n", 1 + f, 1 + f);
        }
        write_file(
            &source,
            &format!("f{f}.gz"),
            &gzip(text.as_bytes()),
            1_000 + f as u64,
        );
    }
    let (code, _, stderr, _) = run_measured(worker(dir.path(), &source, "t", &[]));
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("line 1 looks like a header"), "{stderr}");
    assert!(stderr.contains("source.header = true"), "{stderr}");
    let (code, stdout, stderr, _) = run_measured(worker(dir.path(), &source, "t", &["source.header=true"]));
    assert_eq!(code, 0, "{stderr}");
    let summary: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(summary["rows_rejected"], 0);
    assert_eq!(summary["rows_inserted"], 300);
}
