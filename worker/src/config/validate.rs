//! Validation: raw strings into a typed [`Config`], every error naming its key, its value,
//! where the value came from and the fix.

use std::fmt;
use std::path::PathBuf;

use crate::error::{Error, Result};
use crate::location::Location;

use super::keys::SECRET_KEYS;
use super::layers::RawConfig;
use super::*;

struct Reader<'a> {
    raw: &'a RawConfig,
}

impl Reader<'_> {
    fn bad(&self, name: &str, why: impl fmt::Display) -> Error {
        match self.raw.get(name) {
            Some((value, origin)) => {
                let shown = if SECRET_KEYS.contains(&name) {
                    "****"
                } else {
                    value
                };
                Error::Config(format!("{name} = `{shown}` (from {origin}): {why}"))
            }
            None => Error::Config(format!("{name}: {why}")),
        }
    }

    fn optional(&self, name: &str) -> Option<String> {
        self.raw
            .get(name)
            .map(|(v, _)| v.trim().to_string())
            .filter(|v| !v.is_empty())
    }

    fn required(&self, name: &str) -> Result<String> {
        self.optional(name).ok_or_else(|| {
            let (section, key) = name.split_once('.').unwrap_or((name, ""));
            Error::Config(format!(
                "{name} is not set: add `{key} = …` under [{section}] in common.conf, or set \
                 LAKELOAD_{}_{}, or pass --set {name}=…",
                section.to_ascii_uppercase(),
                key.to_ascii_uppercase()
            ))
        })
    }

    fn string(&self, name: &str) -> String {
        self.optional(name).unwrap_or_default()
    }

    fn parse<T>(&self, name: &str, parse: impl FnOnce(&str) -> std::result::Result<T, String>) -> Result<T> {
        let value = self.string(name);
        parse(&value).map_err(|why| self.bad(name, why))
    }

    fn bool(&self, name: &str) -> Result<bool> {
        self.parse(name, parse_bool)
    }

    fn location(&self, name: &str) -> Result<Location> {
        let value = self.required(name)?;
        Location::parse(&value).map_err(|why| self.bad(name, why))
    }

    fn columns(&self, name: &str, all: &[String]) -> Result<Vec<usize>> {
        let value = self.string(name);
        let mut out = Vec::new();
        for part in value.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let Some(index) = all.iter().position(|c| c == part) else {
                return Err(self.bad(
                    name,
                    format!("`{part}` is not a column; schema.columns = {}", all.join(",")),
                ));
            };
            if out.contains(&index) {
                return Err(self.bad(name, format!("`{part}` is listed twice")));
            }
            out.push(index);
        }
        Ok(out)
    }
}

fn parse_bool(s: &str) -> std::result::Result<bool, String> {
    match s.trim().to_ascii_lowercase().as_str() {
        "true" | "yes" | "on" | "1" => Ok(true),
        "false" | "no" | "off" | "0" => Ok(false),
        _ => Err("expected true or false".into()),
    }
}

/// `512MiB`, `4GiB`, `2GB`, `1g`, `1048576` → bytes.
pub fn parse_size(s: &str) -> std::result::Result<u64, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (number, unit) = s.split_at(split);
    let number: f64 = number
        .parse()
        .map_err(|_| "expected a size such as 512MiB, 4GiB or 1073741824".to_string())?;
    let multiplier: f64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "k" | "kb" | "kib" => 1024.0,
        "m" | "mb" | "mib" => 1024.0 * 1024.0,
        "g" | "gb" | "gib" => 1024.0 * 1024.0 * 1024.0,
        "t" | "tb" | "tib" => 1024.0_f64.powi(4),
        other => return Err(format!("unknown unit `{other}`; use KiB, MiB, GiB or TiB")),
    };
    Ok((number * multiplier) as u64)
}

pub(super) fn parse_delimiter(s: &str) -> std::result::Result<u8, String> {
    // Read untrimmed: a space or tab may be the delimiter itself.
    match s {
        "\\t" | "tab" | "\t" => Ok(b'\t'),
        _ if s.len() == 1 && s.is_ascii() && s != "\n" && s != "\r" => Ok(s.as_bytes()[0]),
        _ => Err("expected one ASCII character such as | , ; or \\t".into()),
    }
}

impl Config {
    /// Validates raw values into a configuration; every error names its key.
    pub fn from_raw(raw: &RawConfig) -> Result<Config> {
        let r = Reader { raw };

        let columns: Vec<String> = r
            .string("schema.columns")
            .split(',')
            .map(|c| c.trim().to_string())
            .filter(|c| !c.is_empty())
            .collect();
        if columns.is_empty() {
            return Err(r.bad("schema.columns", "needs at least one column name"));
        }
        for (i, c) in columns.iter().enumerate() {
            if columns[..i].contains(c) {
                return Err(r.bad("schema.columns", format!("`{c}` is listed twice")));
            }
            if c.starts_with("_source_") {
                return Err(r.bad(
                    "schema.columns",
                    format!("`{c}`: names starting with _source_ are the lineage columns"),
                ));
            }
        }
        let date_columns = r.columns("schema.date_columns", &columns)?;
        let key = r.columns("schema.key", &columns)?;
        if key.is_empty() {
            return Err(r.bad("schema.key", "needs at least one column"));
        }
        let partition = r.columns("schema.partition_column", &columns)?;
        let [partition_column] = partition[..] else {
            return Err(r.bad("schema.partition_column", "expected exactly one column"));
        };
        if !date_columns.contains(&partition_column) {
            return Err(r.bad(
                "schema.partition_column",
                "must be one of schema.date_columns (rows are partitioned by its date)",
            ));
        }
        if !key.contains(&partition_column) {
            // Duplicates are resolved inside one date partition, so the key must contain the
            // partition column; otherwise two versions of a row could live in two partitions.
            return Err(r.bad(
                "schema.key",
                format!(
                    "must include the partition column `{}`",
                    columns[partition_column]
                ),
            ));
        }

        let source = SourceConfig {
            url: r.location("source.url")?,
            pattern: r.parse("source.pattern", |s| {
                glob::Pattern::new(s).map_err(|e| format!("not a valid glob: {e}"))
            })?,
            delimiter: {
                let value = raw
                    .get("source.delimiter")
                    .map(|(v, _)| v.to_string())
                    .unwrap_or_default();
                parse_delimiter(&value).map_err(|why| r.bad("source.delimiter", why))?
            },
            header: r.bool("source.header")?,
        };
        let target = TargetConfig {
            url: r.location("target.url")?,
            layout: r.parse("target.layout", |s| match s.to_ascii_lowercase().as_str() {
                "ymd" => Ok(Layout::Ymd),
                "date" => Ok(Layout::Date),
                _ => Err("expected ymd or date".into()),
            })?,
            existing_objects: r.parse("target.existing_objects", |s| s.parse())?,
            format: r.parse("target.format", |s| match s.to_ascii_lowercase().as_str() {
                "parquet" => Ok(TableFormat::Parquet),
                "delta" => Ok(TableFormat::Delta),
                _ => Err("expected parquet or delta".into()),
            })?,
            deletion_vectors: r.bool("target.deletion_vectors")?,
        };
        if target.deletion_vectors && target.format != TableFormat::Delta {
            return Err(r.bad(
                "target.deletion_vectors",
                "deletion vectors are a Delta Lake feature; set target.format = delta, or \
                 target.deletion_vectors = false for a parquet table",
            ));
        }
        if let Some(why) = crate::location::overlap_error(&source.url, &target.url) {
            return Err(r.bad("target.url", why));
        }

        let memory = r.parse("run.memory_limit", |s| {
            if s.trim().eq_ignore_ascii_case("auto") {
                return Ok(crate::config::memory::auto());
            }
            let bytes = parse_size(s)?;
            // Tiny budgets are allowed (they spill nearly every batch): the tests run the
            // spill path that way.
            if bytes < 1024 {
                return Err("must be auto or at least 1KiB (1GiB or more suits most runs)".into());
            }
            Ok(crate::config::memory::MemoryBudget {
                bytes,
                chosen: format!("run.memory_limit = {}", s.trim()),
            })
        })?;
        let run = RunConfig {
            mode: r.parse("run.mode", |s| s.parse())?,
            order: r.parse("run.order", |s| match s.to_ascii_lowercase().as_str() {
                "arrival" => Ok(Order::Arrival),
                "name" => Ok(Order::Name),
                _ => Err("expected arrival or name".into()),
            })?,
            memory_limit: memory.bytes,
            memory_limit_chosen: memory.chosen,
            max_reject_ratio: r.parse("run.max_reject_ratio", |s| match s.parse::<f64>() {
                Ok(v) if (0.0..=1.0).contains(&v) => Ok(v),
                _ => Err("expected a number from 0 to 1, e.g. 0.01".into()),
            })?,
            on_changed_file: r.parse("run.on_changed_file", |s| match s.to_ascii_lowercase().as_str() {
                "reprocess" => Ok(OnChangedFile::Reprocess),
                "ignore" => Ok(OnChangedFile::Ignore),
                "fail" => Ok(OnChangedFile::Fail),
                _ => Err("expected reprocess, ignore or fail".into()),
            })?,
            threads: r.parse("run.threads", |s| {
                let n: usize = s
                    .parse()
                    .map_err(|_| "expected a whole number (0 = one per core)".to_string())?;
                Ok(if n == 0 {
                    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2)
                } else {
                    n
                })
            })?,
            spill_dir: r.optional("run.spill_dir").map(PathBuf::from),
            run_id: None,
        };

        let seconds = |name: &str| {
            r.parse(name, |s| match s.parse::<f64>() {
                Ok(v) if v > 0.0 && v <= 86_400.0 => Ok(std::time::Duration::from_secs_f64(v)),
                _ => Err("expected a number of seconds above 0, e.g. 30".to_string()),
            })
        };
        let aws = AwsConfig {
            region: r.optional("aws.region"),
            endpoint_url: r.optional("aws.endpoint_url"),
            access_key_id: r.optional("aws.access_key_id"),
            secret_access_key: r.optional("aws.secret_access_key").map(Secret::new),
            session_token: r.optional("aws.session_token").map(Secret::new),
            profile: r.optional("aws.profile"),
            force_path_style: match r.optional("aws.force_path_style") {
                None => None,
                Some(_) => Some(r.bool("aws.force_path_style")?),
            },
            connect_timeout: seconds("aws.connect_timeout_seconds")?,
            read_timeout: seconds("aws.read_timeout_seconds")?,
            attempt_timeout: seconds("aws.attempt_timeout_seconds")?,
            operation_timeout: seconds("aws.operation_timeout_seconds")?,
            max_attempts: r.parse("aws.max_attempts", |s| match s.parse::<u32>() {
                Ok(v) if (1..=20).contains(&v) => Ok(v),
                _ => Err("expected a whole number from 1 to 20".to_string()),
            })?,
            part_size_mib: r.parse("aws.multipart_part_size_mib", |s| match s.parse::<usize>() {
                // S3 refuses parts under 5 MiB (but the last) and allows 5 GiB at most.
                Ok(v) if (5..=5120).contains(&v) => Ok(v),
                _ => Err("expected a whole number of MiB from 5 to 5120 (S3's part size limits)".to_string()),
            })?,
        };
        if aws.attempt_timeout > aws.operation_timeout {
            return Err(r.bad(
                "aws.attempt_timeout_seconds",
                "is longer than aws.operation_timeout_seconds, which bounds all attempts together; \
                 raise aws.operation_timeout_seconds or lower this",
            ));
        }
        if aws.access_key_id.is_some() != aws.secret_access_key.is_some() {
            return Err(Error::Config(
                "aws.access_key_id and aws.secret_access_key go together: set both, or neither \
                 to use the AWS credential chain"
                    .into(),
            ));
        }

        let lock = LockConfig {
            lease_seconds: r.parse("lock.lease_seconds", |s| match s.parse::<u64>() {
                Ok(v) if v >= 5 => Ok(v),
                _ => Err("expected a whole number of seconds, at least 5".into()),
            })?,
            allow_unsafe_store: r.bool("lock.allow_unsafe_store")?,
        };
        let optimize = OptimizeConfig {
            target_file_size: r.parse("optimize.target_file_size", |s| {
                parse_size(s).and_then(|bytes| match bytes >= 1 << 20 {
                    true => Ok(bytes),
                    false => Err("must be at least 1MiB (128MiB suits most tables)".into()),
                })
            })?,
            auto_max_files: r.parse("optimize.auto_max_files", |s| {
                s.parse::<usize>()
                    .map_err(|_| "expected a whole number of files, or 0 for never".to_string())
            })?,
            auto_max_deleted_share: r.parse("optimize.auto_max_deleted_share", |s| {
                match s.parse::<f64>() {
                    Ok(v) if v > 0.0 && v <= 1.0 => Ok(v),
                    _ => Err("expected a share above 0 and at most 1 (1: never), e.g. 0.2".into()),
                }
            })?,
        };
        let logging = LoggingConfig {
            format: r.parse("logging.format", |s| match s.to_ascii_lowercase().as_str() {
                "text" => Ok(LogFormat::Text),
                "json" => Ok(LogFormat::Json),
                _ => Err("expected text or json".into()),
            })?,
            level: r.parse("logging.level", |s| {
                let level = s.to_ascii_lowercase();
                match level.as_str() {
                    "error" | "warn" | "info" | "debug" | "trace" => Ok(level),
                    _ => Err("expected error, warn, info, debug or trace".into()),
                }
            })?,
        };

        Ok(Config {
            source,
            target,
            schema: SchemaConfig {
                columns,
                date_columns,
                key,
                partition_column,
                timestamp_format: r.optional("schema.timestamp_format"),
            },
            run,
            aws,
            lock,
            optimize,
            logging,
        })
    }
}

/// A run id given from outside: 1–100 of `A-Z a-z 0-9 . _ -` (it becomes part of object keys).
pub fn validate_run_id(id: &str) -> Result<()> {
    let ok = !id.is_empty()
        && id.len() <= 100
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if ok {
        Ok(())
    } else {
        Err(Error::Config(format!(
            "--run-id `{id}`: use 1 to 100 letters, digits, `.`, `_` or `-`"
        )))
    }
}
