//! Schemas and rows the unit tests of several stages build on (router, merge, table).

use crate::block::{Lineage, RowBlock};
use crate::config::{Config, RawConfig, SchemaConfig};

/// Three columns `id, day, v`, keyed by `(id, day)`.
pub(crate) fn schema() -> SchemaConfig {
    schema_of("id,day,v", "day", "day", "id,day")
}

/// The schema of a config with these `schema.*` settings (comma-separated lists).
pub(crate) fn schema_of(columns: &str, date_columns: &str, partition: &str, key: &str) -> SchemaConfig {
    let mut raw = RawConfig::default();
    raw.set("source.url", "/in");
    raw.set("target.url", "/out");
    raw.set("schema.columns", columns);
    raw.set("schema.date_columns", date_columns);
    raw.set("schema.partition_column", partition);
    raw.set("schema.key", key);
    Config::from_raw(&raw).unwrap().schema
}

/// Rows `first..first + rows` of [`schema`]: id `i`, day 2024-01-02, line `i + 1` of file 0.
pub(crate) fn numbered_rows(first: usize, rows: usize) -> RowBlock {
    let mut block = RowBlock::new(3, 1);
    for i in first..first + rows {
        let text = format!("{i}|2024-01-02|v");
        let id_end = text.find('|').unwrap() as u32;
        let ends = [id_end, id_end + 11, text.len() as u32];
        let lineage = Lineage {
            file: 0,
            line: i as u64 + 1,
            generation: 1,
        };
        block.push(&text, &ends, &[19724], i as u64, lineage);
    }
    block
}
