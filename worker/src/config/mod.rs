//! Configuration: `common.conf` (INI), overridden by `LAKELOAD_<SECTION>_<KEY>` environment
//! variables, overridden by `--set section.key=value` (SPEC §7).
//!
//! Every key is declared once in [`KEYS`]; loading collects raw strings with their origin,
//! then [`Config::from_raw`] validates each one, so an error can always name the key, where it
//! came from and how to fix it.
//!
//! One module per job: [`keys`] (the key table), [`layers`] (file, environment, `--set`),
//! [`legacy`] (the original `[aws_params]` shape) and [`validate`] (raw values → [`Config`]).

mod keys;
mod layers;
mod legacy;
pub mod memory;
mod validate;

use std::path::PathBuf;

use crate::location::Location;
pub use crate::secret::Secret;
pub use crate::storage::AwsConfig;
pub use keys::{KEYS, KeySpec};
pub use lakeload_types::Mode;
pub use layers::{Origin, RawConfig, config_path, load_raw};
pub use validate::{parse_size, validate_run_id};

/// What to do with objects in the way (`target.existing_objects`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExistingObjects {
    /// Stop before writing anything (exit 2).
    Refuse,
    /// Take them in as the table's own: an incremental run merges their rows with the new
    /// ones (they must be lakeload Parquet files with the table's columns); a full run
    /// replaces them, or deletes them when their date has no rows.
    Adopt,
    /// Overwrite them with this run's rows without reading them; a full run also deletes
    /// those whose date has no rows.
    Replace,
}

impl std::str::FromStr for ExistingObjects {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "refuse" => Ok(ExistingObjects::Refuse),
            "adopt" => Ok(ExistingObjects::Adopt),
            "replace" => Ok(ExistingObjects::Replace),
            _ => Err("expected refuse, adopt or replace".into()),
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

/// How the table is stored (`target.format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TableFormat {
    /// One Parquet object per date, replaced in place (`target.layout`).
    Parquet,
    /// A Delta Lake table: immutable data files, one log commit per run.
    Delta,
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
    pub format: TableFormat,
    /// Whether a Delta run marks superseded stored rows deleted (deletion vectors) rather than
    /// rewriting the files that hold them.
    pub deletion_vectors: bool,
    /// Objects where the table stores its dates that it did not write.
    pub existing_objects: ExistingObjects,
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
    /// How `memory_limit` was chosen (`auto: …`, or the setting), for the summary and `plan`.
    pub memory_limit_chosen: String,
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
    /// Run even on a store that ignores conditional writes.
    pub allow_unsafe_store: bool,
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
    pub optimize: OptimizeConfig,
    pub logging: LoggingConfig,
}

/// How `lakeload optimize` packs a date's files, and when a run optimizes after itself.
#[derive(Debug, Clone)]
pub struct OptimizeConfig {
    pub target_file_size: u64,
    /// A run optimizes a date it wrote holding more files than this (0: never).
    pub auto_max_files: usize,
    /// … or whose deleted rows pass this share of its rows (1: never).
    pub auto_max_deleted_share: f64,
}

#[cfg(test)]
mod tests {
    use std::fmt;

    use super::validate::parse_delimiter;
    use super::*;
    use crate::error::Result;

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
