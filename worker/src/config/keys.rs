//! The key table: every key lakeload understands, declared once, with its default and help,
//! and the lookup that turns a misspelt key into a suggestion.

use crate::error::{Error, Result};

use super::layers::Origin;

/// One configuration key: its section, name, default and a short help text.
pub struct KeySpec {
    pub section: &'static str,
    pub key: &'static str,
    pub default: Option<&'static str>,
    pub help: &'static str,
}

macro_rules! key {
    ($section:literal, $key:literal, $default:expr, $help:literal) => {
        KeySpec {
            section: $section,
            key: $key,
            default: $default,
            help: $help,
        }
    };
}

/// Every key lakeload understands, in the order the README documents them.
pub const KEYS: &[KeySpec] = &[
    key!(
        "source",
        "url",
        None,
        "s3://bucket/prefix, file:///abs/path or a plain folder path"
    ),
    key!(
        "source",
        "pattern",
        Some("*.gz"),
        "glob matched against each object's file name"
    ),
    key!(
        "source",
        "delimiter",
        Some("|"),
        "field separator: one ASCII character, or \\t / tab"
    ),
    key!(
        "source",
        "header",
        Some("false"),
        "true: the first line of every file is a header and is skipped"
    ),
    key!(
        "target",
        "url",
        None,
        "s3://bucket/prefix, file:///abs/path or a plain folder path"
    ),
    key!(
        "target",
        "layout",
        Some("ymd"),
        "ymd: year=YYYY/month=MM/day=DD/…; date: <partition column>=YYYY-MM-DD/…"
    ),
    key!(
        "target",
        "format",
        Some("parquet"),
        "parquet: one object per date (target.layout); delta: a Delta Lake table, one commit per run"
    ),
    key!(
        "target",
        "deletion_vectors",
        Some("false"),
        "delta only: mark the stored rows new rows supersede deleted (deletion vectors) instead of \
         rewriting their files; readers must support them (reader 3 / writer 7)"
    ),
    key!(
        "target",
        "existing_objects",
        Some("refuse"),
        "objects where the table stores its dates that it did not write: refuse, adopt or replace"
    ),
    key!(
        "schema",
        "columns",
        Some("c1,c2,c3,c4,c5,c6,c7,c8"),
        "column names, in file order"
    ),
    key!("schema", "date_columns", Some("c6,c7"), "columns parsed as dates"),
    key!(
        "schema",
        "key",
        Some("c1,c7,c8"),
        "columns whose values identify a row; the latest row per key is kept"
    ),
    key!(
        "schema",
        "partition_column",
        Some("c7"),
        "the date column that decides each row's partition"
    ),
    key!(
        "schema",
        "timestamp_format",
        None,
        "strptime format for date columns, replacing the built-in ISO rule"
    ),
    key!("run", "mode", Some("incremental"), "incremental or full"),
    key!(
        "run",
        "order",
        Some("arrival"),
        "arrival (file modified time, key, line) or name (file key, line)"
    ),
    key!(
        "run",
        "memory_limit",
        Some("auto"),
        "memory for buffered rows before they spill to disk: auto (3/4 of a container's limit, \
         else 60 % of the machine's memory), or e.g. 512MiB, 4GiB"
    ),
    key!(
        "run",
        "max_reject_ratio",
        Some("0.01"),
        "a run whose rejected/read ratio is above this fails with exit 65"
    ),
    key!(
        "run",
        "on_changed_file",
        Some("reprocess"),
        "reprocess, ignore or fail when a loaded file changed"
    ),
    key!(
        "run",
        "threads",
        Some("0"),
        "files read in parallel; 0 = one per core"
    ),
    key!(
        "run",
        "spill_dir",
        None,
        "folder for spilled rows (default: the system temp folder)"
    ),
    key!(
        "aws",
        "region",
        None,
        "AWS region (default: the AWS chain, else us-east-1)"
    ),
    key!(
        "aws",
        "endpoint_url",
        None,
        "endpoint of an S3-compatible store, e.g. http://127.0.0.1:9000"
    ),
    key!(
        "aws",
        "access_key_id",
        None,
        "static credentials (default: the AWS credential chain)"
    ),
    key!(
        "aws",
        "secret_access_key",
        None,
        "static credentials (never printed)"
    ),
    key!(
        "aws",
        "session_token",
        None,
        "static session token (never printed)"
    ),
    key!("aws", "profile", None, "profile from ~/.aws/config"),
    key!(
        "aws",
        "force_path_style",
        None,
        "true for path-style URLs (default: true when endpoint_url is set)"
    ),
    key!(
        "aws",
        "connect_timeout_seconds",
        Some("5"),
        "time to open a connection to S3"
    ),
    key!(
        "aws",
        "read_timeout_seconds",
        Some("30"),
        "longest wait for the next bytes of an S3 reply"
    ),
    key!(
        "aws",
        "attempt_timeout_seconds",
        Some("120"),
        "one attempt of one S3 request"
    ),
    key!(
        "aws",
        "operation_timeout_seconds",
        Some("300"),
        "one S3 request, all retries included"
    ),
    key!(
        "aws",
        "max_attempts",
        Some("5"),
        "attempts per S3 request (transient errors are retried)"
    ),
    key!(
        "aws",
        "multipart_part_size_mib",
        Some("16"),
        "part size of multipart uploads; objects over twice this size are sent in parts"
    ),
    key!(
        "lock",
        "lease_seconds",
        Some("120"),
        "lock lease; renewed while the run lives, taken over after it expires"
    ),
    key!(
        "lock",
        "allow_unsafe_store",
        Some("false"),
        "true: run even on a store that ignores conditional writes (If-None-Match, If-Match)"
    ),
    key!(
        "optimize",
        "target_file_size",
        Some("128MiB"),
        "`lakeload optimize` packs a date's files smaller than this into one, up to this size"
    ),
    key!(
        "optimize",
        "auto_max_files",
        Some("16"),
        "after a run, optimize each date it wrote that holds more files than this (0: never)"
    ),
    key!(
        "optimize",
        "auto_max_deleted_share",
        Some("0.2"),
        "after a run, optimize each date it wrote whose files hold more deleted rows than this \
         share of their rows (1: never)"
    ),
    key!("logging", "format", Some("text"), "text or json"),
    key!(
        "logging",
        "level",
        Some("info"),
        "error, warn, info, debug or trace"
    ),
];

/// Keys whose values are never printed or logged.
pub const SECRET_KEYS: &[&str] = &["aws.secret_access_key", "aws.session_token"];

pub(super) fn lookup_key(name: &str, origin: &Origin) -> Result<&'static KeySpec> {
    if let Some(spec) = KEYS.iter().find(|k| format!("{}.{}", k.section, k.key) == name) {
        return Ok(spec);
    }
    let (section, key) = name.split_once('.').unwrap_or((name, ""));
    let in_section: Vec<&str> = KEYS
        .iter()
        .filter(|k| k.section == section)
        .map(|k| k.key)
        .collect();
    let hint = if in_section.is_empty() {
        "sections are [source] [target] [schema] [run] [aws] [lock] [logging]".to_string()
    } else if let Some(close) = in_section.iter().find(|k| is_close(k, key)) {
        format!("did you mean `{section}.{close}`?")
    } else {
        format!("[{section}] accepts {}", in_section.join(", "))
    };
    Err(Error::Config(format!("unknown key `{name}` in {origin}; {hint}")))
}

/// Edit distance of at most 2: enough to catch a typo.
fn is_close(a: &str, b: &str) -> bool {
    let (a, b): (Vec<char>, Vec<char>) = (a.chars().collect(), b.chars().collect());
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.iter().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != cb);
            cur.push((prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()] <= 2
}
