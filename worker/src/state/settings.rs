//! How a table was built: the settings that shape its rows and layout (SPEC §3), recorded in
//! the state by every run. Rows merged under one key, order or layout cannot be merged with
//! rows of another, so an incremental run under other settings is refused and names each
//! difference; a full run rebuilds the table under the new ones.

use serde::{Deserialize, Serialize};

use crate::config::{Config, Layout, Order, TableFormat};
use crate::error::Error;

/// The row- and layout-shaping settings of a table, by name (not by index), as the state
/// records them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableSettings {
    pub columns: Vec<String>,
    pub date_columns: Vec<String>,
    pub key: Vec<String>,
    pub partition_column: String,
    pub timestamp_format: Option<String>,
    /// `arrival` or `name`.
    pub order: String,
    /// `ymd` or `date`.
    pub layout: String,
    /// `parquet`.
    pub format: String,
}

/// One setting whose value differs between the table and this run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SettingChange {
    /// The configuration key, e.g. `schema.key`.
    pub key: &'static str,
    pub table: String,
    pub run: String,
}

impl TableSettings {
    pub fn of(config: &Config) -> TableSettings {
        let schema = &config.schema;
        let names = |indexes: &[usize]| indexes.iter().map(|i| schema.columns[*i].clone()).collect();
        TableSettings {
            columns: schema.columns.clone(),
            date_columns: names(&schema.date_columns),
            key: names(&schema.key),
            partition_column: schema.columns[schema.partition_column].clone(),
            timestamp_format: schema.timestamp_format.clone(),
            order: match config.run.order {
                Order::Arrival => "arrival",
                Order::Name => "name",
            }
            .into(),
            layout: match config.target.layout {
                Layout::Ymd => "ymd",
                Layout::Date => "date",
            }
            .into(),
            format: match config.target.format {
                TableFormat::Parquet => "parquet",
                TableFormat::Delta => "delta",
            }
            .into(),
        }
    }

    /// Every setting of `run` that differs from `self` (the table's), in the README's order.
    pub fn changes(&self, run: &TableSettings) -> Vec<SettingChange> {
        let list = |v: &[String]| v.join(",");
        let optional = |v: &Option<String>| v.clone().unwrap_or_else(|| "(not set)".into());
        let pairs: [(&'static str, String, String); 8] = [
            ("schema.columns", list(&self.columns), list(&run.columns)),
            (
                "schema.date_columns",
                list(&self.date_columns),
                list(&run.date_columns),
            ),
            ("schema.key", list(&self.key), list(&run.key)),
            (
                "schema.partition_column",
                self.partition_column.clone(),
                run.partition_column.clone(),
            ),
            (
                "schema.timestamp_format",
                optional(&self.timestamp_format),
                optional(&run.timestamp_format),
            ),
            ("run.order", self.order.clone(), run.order.clone()),
            ("target.layout", self.layout.clone(), run.layout.clone()),
            ("target.format", self.format.clone(), run.format.clone()),
        ];
        pairs
            .into_iter()
            .filter(|(_, table, run)| table != run)
            .map(|(key, table, run)| SettingChange { key, table, run })
            .collect()
    }
}

/// The refusal of an incremental run under settings other than the table's.
pub fn changed_settings_error(table_url: &str, changes: &[SettingChange]) -> Error {
    let lines: String = changes
        .iter()
        .map(|c| {
            format!(
                "\n  {}: the table has `{}`, this run has `{}`",
                c.key, c.table, c.run
            )
        })
        .collect();
    Error::Config(format!(
        "the table at {table_url} was built with other settings; an incremental run would mix \
         two tables in one:{lines}\nRun `lakeload run --mode full` to rebuild the table under the \
         new settings (it removes the table's objects of the old layout), or set these keys back \
         to the table's values"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Origin, RawConfig};

    fn config(extra: &str) -> Config {
        let ini = format!("[source]\nurl = /in\n[target]\nurl = /out\n{extra}");
        Config::from_raw(&RawConfig::from_ini_str(&ini, Origin::File("t".into())).unwrap()).unwrap()
    }

    #[test]
    fn equal_settings_have_no_changes_and_every_shaping_key_is_compared() {
        let base = TableSettings::of(&config(""));
        assert!(base.changes(&base).is_empty());
        let cases = [
            (
                "[schema]\ncolumns = c1,c2,c3,c4,c5,c6,c7,c9\nkey = c1,c7\n",
                vec!["schema.columns", "schema.key"],
            ),
            ("[schema]\ndate_columns = c7\n", vec!["schema.date_columns"]),
            ("[schema]\nkey = c1,c7\n", vec!["schema.key"]),
            (
                "[schema]\npartition_column = c6\nkey = c1,c6\n",
                vec!["schema.key", "schema.partition_column"],
            ),
            (
                "[schema]\ntimestamp_format = %d/%m/%Y\n",
                vec!["schema.timestamp_format"],
            ),
            ("[run]\norder = name\n", vec!["run.order"]),
            ("[target]\nlayout = date\n", vec!["target.layout"]),
        ];
        for (extra, expected) in cases {
            let changed = base.changes(&TableSettings::of(&config(extra)));
            let keys: Vec<&str> = changed.iter().map(|c| c.key).collect();
            assert_eq!(keys, expected, "{extra}");
        }
        // Settings that do not shape rows (the delimiter, the memory limit) are not recorded.
        assert!(
            base.changes(&TableSettings::of(&config(
                "[source]\ndelimiter = ,\n[run]\nmemory_limit = 64MiB\n"
            )))
            .is_empty()
        );
    }

    #[test]
    fn the_refusal_names_each_difference_and_the_fix() {
        let base = TableSettings::of(&config(""));
        let other = TableSettings::of(&config("[target]\nlayout = date\n[run]\norder = name\n"));
        let e = changed_settings_error("/out", &base.changes(&other));
        let text = e.to_string();
        assert_eq!(e.exit_code(), 2);
        assert!(
            text.contains("target.layout: the table has `ymd`, this run has `date`"),
            "{text}"
        );
        assert!(
            text.contains("run.order: the table has `arrival`, this run has `name`"),
            "{text}"
        );
        assert!(text.contains("--mode full"), "{text}");
    }
}
