//! Configuration: `common.conf` (INI), overridden by `LAKELOAD_<SECTION>_<KEY>` environment
//! variables, overridden by `--set section.key=value` (SPEC §7).
//!
//! Every key is declared once in [`KEYS`]; loading collects raw strings with their origin,
//! then [`Config::from_raw`] validates each one, so an error can always name the key, where it
//! came from and how to fix it.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::location::Location;
pub use crate::secret::Secret;
pub use crate::storage::AwsConfig;

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
        "parquet (delta is planned, not available yet)"
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
        Some("1GiB"),
        "memory for buffered rows before they spill to disk, e.g. 512MiB, 4GiB"
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
    key!("logging", "format", Some("text"), "text or json"),
    key!(
        "logging",
        "level",
        Some("info"),
        "error, warn, info, debug or trace"
    ),
];

/// Keys of the original job's `[aws_params]` section and the key each one stands for.
const AWS_PARAMS_ALIASES: &[(&str, &str)] = &[
    ("s3_source_bucket", "source.url"),
    ("s3_target_bucket", "target.url"),
    ("aws_key", "aws.access_key_id"),
    ("aws_secret_key", "aws.secret_access_key"),
    ("aws_region", "aws.region"),
];

const SECRET_KEYS: &[&str] = &["aws.secret_access_key", "aws.session_token"];

/// Where a raw value came from, so errors can point at it.
#[derive(Debug, Clone, PartialEq)]
pub enum Origin {
    Default,
    File(PathBuf),
    Env(String),
    Set,
    Program,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Default => write!(f, "the default"),
            Origin::File(p) => write!(f, "{}", p.display()),
            Origin::Env(var) => write!(f, "environment variable {var}"),
            Origin::Set => write!(f, "--set"),
            Origin::Program => write!(f, "the program"),
        }
    }
}

/// Raw `section.key → (value, origin)` pairs, before validation.
#[derive(Debug, Default, Clone)]
pub struct RawConfig {
    values: BTreeMap<String, (String, Origin)>,
}

impl RawConfig {
    /// Reads an INI file. Accepts the original job's `[aws_params]` section.
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            Error::Config(format!(
                "cannot read config file {}: {e}; pass an existing file with --config PATH \
                 or LAKELOAD_CONFIG",
                path.display()
            ))
        })?;
        Self::from_ini_str(&text, Origin::File(path.to_path_buf()))
    }

    pub fn from_ini_str(text: &str, origin: Origin) -> Result<Self> {
        let options = ini::ParseOption {
            enabled_quote: true,
            // Backslashes stay literal: Windows-style paths, `\t` delimiters, strptime formats.
            enabled_escape: false,
            enabled_indented_mutiline_value: false,
            enabled_preserve_key_leading_whitespace: false,
        };
        let ini = ini::Ini::load_from_str_opt(text, options)
            .map_err(|e| Error::Config(format!("{origin}: not a valid INI file: {e}")))?;
        let mut raw = RawConfig::default();
        for (section, props) in ini.iter() {
            let Some(section) = section else {
                if let Some((key, _)) = props.iter().next() {
                    return Err(Error::Config(format!(
                        "{origin}: key `{key}` is outside any section; put it under one of \
                         [source] [target] [schema] [run] [aws] [lock] [logging]"
                    )));
                }
                continue;
            };
            let section = section.trim().to_ascii_lowercase();
            for (key, value) in props.iter() {
                let key = key.trim().to_ascii_lowercase();
                let name = if section == "aws_params" {
                    let Some((_, canonical)) = AWS_PARAMS_ALIASES.iter().find(|(alias, _)| *alias == key)
                    else {
                        return Err(Error::Config(format!(
                            "{origin}: unknown key `aws_params.{key}`; [aws_params] accepts {}",
                            AWS_PARAMS_ALIASES
                                .iter()
                                .map(|(a, _)| *a)
                                .collect::<Vec<_>>()
                                .join(", ")
                        )));
                    };
                    let value = if canonical.ends_with(".url") {
                        bucket_to_url(value)
                    } else {
                        value.to_string()
                    };
                    raw.insert_checked(canonical, value, origin.clone(), &format!("aws_params.{key}"))?;
                    continue;
                } else {
                    format!("{section}.{key}")
                };
                lookup_key(&name, &origin)?;
                raw.insert_checked(&name, value.to_string(), origin.clone(), &name)?;
            }
        }
        Ok(raw)
    }

    fn insert_checked(&mut self, name: &str, value: String, origin: Origin, spelled: &str) -> Result<()> {
        if let Some((_, previous)) = self.values.get(name)
            && *previous == origin
        {
            return Err(Error::Config(format!(
                "{origin}: `{spelled}` sets `{name}`, which is already set in the same file; keep one"
            )));
        }
        self.values.insert(name.to_string(), (value, origin));
        Ok(())
    }

    /// Applies `LAKELOAD_<SECTION>_<KEY>` variables. `LAKELOAD_CONFIG` is the config path, not a key.
    pub fn apply_env<I: IntoIterator<Item = (String, String)>>(&mut self, vars: I) -> Result<()> {
        for (var, value) in vars {
            let Some(rest) = var.strip_prefix("LAKELOAD_") else {
                continue;
            };
            if rest == "CONFIG" || var == crate::faults::ENV {
                continue;
            }
            let lower = rest.to_ascii_lowercase();
            // Only variables naming one of our sections are settings; others that happen to
            // share the prefix (LAKELOAD_VENV, LAKELOAD_OPERATOR_…) belong to other tools.
            let Some((section, key)) = lower
                .split_once('_')
                .filter(|(s, _)| KEYS.iter().any(|k| k.section == *s))
            else {
                continue;
            };
            let name = format!("{section}.{key}");
            lookup_key(&name, &Origin::Env(var.clone()))?;
            self.values.insert(name, (value, Origin::Env(var)));
        }
        Ok(())
    }

    /// Applies `--set section.key=value` arguments.
    pub fn apply_sets(&mut self, sets: &[String]) -> Result<()> {
        for set in sets {
            let Some((name, value)) = set.split_once('=') else {
                return Err(Error::Config(format!(
                    "--set {set}: expected section.key=value, e.g. --set run.mode=full"
                )));
            };
            let name = name.trim().to_ascii_lowercase();
            lookup_key(&name, &Origin::Set)?;
            self.values.insert(name, (value.trim().to_string(), Origin::Set));
        }
        Ok(())
    }

    /// Sets a value from code (the demo, tests).
    pub fn set(&mut self, name: &str, value: impl Into<String>) {
        self.values
            .insert(name.to_string(), (value.into(), Origin::Program));
    }

    fn get(&self, name: &str) -> Option<(&str, &Origin)> {
        if let Some((v, o)) = self.values.get(name) {
            return Some((v.as_str(), o));
        }
        let spec = KEYS.iter().find(|k| format!("{}.{}", k.section, k.key) == name)?;
        spec.default.map(|d| (d, &Origin::Default))
    }

    /// The effective settings, secrets masked, for `lakeload config` style output and logs.
    pub fn describe(&self) -> Vec<(String, String, String)> {
        KEYS.iter()
            .filter_map(|spec| {
                let name = format!("{}.{}", spec.section, spec.key);
                let (value, origin) = self.get(&name)?;
                let shown = if SECRET_KEYS.contains(&name.as_str()) {
                    "****".to_string()
                } else {
                    value.to_string()
                };
                Some((name, shown, origin.to_string()))
            })
            .collect()
    }
}

/// `bucket`, `bucket/prefix` or `s3://bucket/prefix` → `s3://bucket/prefix`.
fn bucket_to_url(value: &str) -> String {
    let value = value.trim();
    if value.contains("://") {
        value.to_string()
    } else {
        format!("s3://{value}")
    }
}

fn lookup_key(name: &str, origin: &Origin) -> Result<&'static KeySpec> {
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

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    Full,
    Incremental,
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Mode::Full => "full",
            Mode::Incremental => "incremental",
        })
    }
}

impl std::str::FromStr for Mode {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "full" => Ok(Mode::Full),
            "incremental" => Ok(Mode::Incremental),
            _ => Err("expected full or incremental".into()),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Order {
    /// (source file last-modified, file key, line)
    Arrival,
    /// (file key, line)
    Name,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// `year=YYYY/month=MM/day=DD/YYYY-MM-DD.snappy.parquet`
    Ymd,
    /// `<partition column>=YYYY-MM-DD/YYYY-MM-DD.snappy.parquet`
    Date,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnChangedFile {
    Reprocess,
    Ignore,
    Fail,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone)]
pub struct SourceConfig {
    pub url: Location,
    pub pattern: glob::Pattern,
    pub delimiter: u8,
    pub header: bool,
}

#[derive(Debug, Clone)]
pub struct TargetConfig {
    pub url: Location,
    pub layout: Layout,
}

#[derive(Debug, Clone)]
pub struct SchemaConfig {
    pub columns: Vec<String>,
    /// Indexes into `columns`.
    pub date_columns: Vec<usize>,
    pub key: Vec<usize>,
    pub partition_column: usize,
    pub timestamp_format: Option<String>,
}

impl SchemaConfig {
    /// Where column `column`'s value sits among a row's parsed dates, if it is a date column.
    /// Rows keep their dates in `date_columns` order (the order the user listed them), and
    /// every reader and writer of rows goes through this one mapping.
    pub fn date_slot(&self, column: usize) -> Option<usize> {
        self.date_columns.iter().position(|c| *c == column)
    }
}

#[derive(Debug, Clone)]
pub struct RunConfig {
    pub mode: Mode,
    pub order: Order,
    pub memory_limit: u64,
    pub max_reject_ratio: f64,
    pub on_changed_file: OnChangedFile,
    pub threads: usize,
    pub spill_dir: Option<PathBuf>,
    /// Set by `lakeload run --run-id` (the operator names runs so it can find their summary);
    /// otherwise each run makes its own.
    pub run_id: Option<String>,
}

#[derive(Debug, Clone)]
pub struct LockConfig {
    pub lease_seconds: u64,
}

#[derive(Debug, Clone)]
pub struct LoggingConfig {
    pub format: LogFormat,
    pub level: String,
}

/// The validated configuration of a run.
#[derive(Debug, Clone)]
pub struct Config {
    pub source: SourceConfig,
    pub target: TargetConfig,
    pub schema: SchemaConfig,
    pub run: RunConfig,
    pub aws: AwsConfig,
    pub lock: LockConfig,
    pub logging: LoggingConfig,
}

/// Where to look for the config file: `--config`, then `LAKELOAD_CONFIG`, then `./common.conf`.
pub fn config_path(explicit: Option<&Path>, env_value: Option<&str>) -> Option<PathBuf> {
    if let Some(p) = explicit {
        return Some(p.to_path_buf());
    }
    if let Some(p) = env_value.filter(|p| !p.is_empty()) {
        return Some(PathBuf::from(p));
    }
    let local = PathBuf::from("common.conf");
    local.exists().then_some(local)
}

/// Loads file + environment + `--set` into raw values (not yet validated).
pub fn load_raw(explicit: Option<&Path>, sets: &[String]) -> Result<RawConfig> {
    let env_config = std::env::var("LAKELOAD_CONFIG").ok();
    let mut raw = match config_path(explicit, env_config.as_deref()) {
        Some(path) => RawConfig::from_file(&path)?,
        None => RawConfig::default(),
    };
    raw.apply_env(std::env::vars())?;
    raw.apply_sets(sets)?;
    Ok(raw)
}

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

fn parse_delimiter(s: &str) -> std::result::Result<u8, String> {
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
        };
        r.parse("target.format", |s| match s.to_ascii_lowercase().as_str() {
            "parquet" => Ok(()),
            "delta" => Err("Delta Lake output is planned but not available yet; use parquet".into()),
            _ => Err("expected parquet".into()),
        })?;
        if let Some(why) = crate::location::overlap_error(&source.url, &target.url) {
            return Err(r.bad("target.url", why));
        }

        let run = RunConfig {
            mode: r.parse("run.mode", |s| s.parse())?,
            order: r.parse("run.order", |s| match s.to_ascii_lowercase().as_str() {
                "arrival" => Ok(Order::Arrival),
                "name" => Ok(Order::Name),
                _ => Err("expected arrival or name".into()),
            })?,
            memory_limit: r.parse("run.memory_limit", |s| {
                let bytes = parse_size(s)?;
                // Tiny budgets are allowed (they spill nearly every batch): the tests run the
                // spill path that way.
                if bytes < 1024 {
                    return Err("must be at least 1KiB (1GiB or more suits most runs)".into());
                }
                Ok(bytes)
            })?,
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

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(ini: &str) -> RawConfig {
        RawConfig::from_ini_str(ini, Origin::File("common.conf".into())).unwrap()
    }

    fn err(result: Result<impl fmt::Debug>) -> String {
        result.unwrap_err().to_string()
    }

    const MINIMAL: &str = "[source]\nurl = s3://in/data\n[target]\nurl = s3://out/table\n";

    #[test]
    fn defaults_fill_every_unset_key() {
        let config = Config::from_raw(&raw(MINIMAL)).unwrap();
        assert_eq!(config.schema.columns.len(), 8);
        assert_eq!(config.schema.key, vec![0, 6, 7]);
        assert_eq!(config.schema.date_columns, vec![5, 6]);
        assert_eq!(config.source.delimiter, b'|');
        assert_eq!(config.run.mode, Mode::Incremental);
        assert_eq!(config.run.max_reject_ratio, 0.01);
    }

    #[test]
    fn env_overrides_file_and_set_overrides_env() {
        let mut r = raw(&format!("{MINIMAL}[run]\nmode = incremental\norder = name\n"));
        r.apply_env([("LAKELOAD_RUN_MODE".to_string(), "full".to_string())])
            .unwrap();
        assert_eq!(Config::from_raw(&r).unwrap().run.mode, Mode::Full);
        r.apply_sets(&["run.mode=incremental".to_string()]).unwrap();
        let config = Config::from_raw(&r).unwrap();
        assert_eq!(config.run.mode, Mode::Incremental);
        assert_eq!(config.run.order, Order::Name);
    }

    #[test]
    fn unknown_keys_are_named_with_a_hint() {
        let e = err(RawConfig::from_ini_str(
            "[run]\nmdoe = full\n",
            Origin::File("common.conf".into()),
        ));
        assert!(e.contains("`run.mdoe`") && e.contains("run.mode"), "{e}");
        let e = err(RawConfig::default().apply_env([("LAKELOAD_RUN_COLOUR".into(), "x".into())]));
        assert!(
            e.contains("run.colour") && e.contains("LAKELOAD_RUN_COLOUR"),
            "{e}"
        );
        let e = err(RawConfig::default().apply_sets(&["nosection.x=1".into()]));
        assert!(e.contains("nosection.x"), "{e}");
    }

    #[test]
    fn bad_values_name_key_value_and_origin() {
        let e = err(Config::from_raw(&raw(&format!(
            "{MINIMAL}[run]\nmax_reject_ratio = lots\n"
        ))));
        assert!(
            e.contains("run.max_reject_ratio") && e.contains("lots") && e.contains("common.conf"),
            "{e}"
        );
        let e = err(Config::from_raw(&raw("[target]\nurl = /tmp/t\n")));
        assert!(
            e.contains("source.url is not set") && e.contains("LAKELOAD_SOURCE_URL"),
            "{e}"
        );
    }

    #[test]
    fn original_aws_params_shape_is_accepted() {
        let r = raw(
            "[aws_params]\ns3_source_bucket = landing\ns3_target_bucket = s3://lake/events\n\
             aws_key = AKIAEXAMPLE\naws_secret_key = very-secret\naws_region = eu-west-1\n",
        );
        let config = Config::from_raw(&r).unwrap();
        assert_eq!(config.source.url.to_string(), "s3://landing");
        assert_eq!(config.target.url.to_string(), "s3://lake/events");
        assert_eq!(config.aws.region.as_deref(), Some("eu-west-1"));
        assert_eq!(
            config.aws.secret_access_key.as_ref().unwrap().expose(),
            "very-secret"
        );
        assert!(!format!("{config:?}").contains("very-secret"));
        let described = format!("{:?}", r.describe());
        assert!(!described.contains("very-secret"), "{described}");
    }

    #[test]
    fn key_must_contain_the_partition_column() {
        let e = err(Config::from_raw(&raw(&format!(
            "{MINIMAL}[schema]\nkey = c1,c8\n"
        ))));
        assert!(e.contains("schema.key") && e.contains("c7"), "{e}");
    }

    #[test]
    fn sizes_and_delimiters() {
        assert_eq!(parse_size("512MiB").unwrap(), 512 << 20);
        assert_eq!(parse_size("2g").unwrap(), 2 << 30);
        assert!(parse_size("lots").is_err());
        assert_eq!(parse_delimiter("\\t").unwrap(), b'\t');
        assert_eq!(parse_delimiter(",").unwrap(), b',');
        assert!(parse_delimiter("||").is_err());
    }
}
