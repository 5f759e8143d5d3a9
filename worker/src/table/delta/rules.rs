//! What a table another engine shares asks of lakeload before it writes: keep the table's
//! own schema (adding only lakeload's missing columns), honour `delta.appendOnly`, and refuse
//! columns it cannot keep (invariants, added columns of types it does not carry).

use super::log::Metadata;
use crate::error::{Error, Result};
use crate::table::added::AddedColumns;

/// The table's schema after a lakeload commit: the table's own, as another writer may have
/// left it (column comments and other field metadata, field order), with the columns of
/// lakeload's schema it lacks added at the end. The same string when nothing is missing.
pub(super) fn kept_schema(table: &str, ours: &str) -> String {
    let (Ok(mut table_schema), Ok(ours_schema)) = (
        serde_json::from_str::<serde_json::Value>(table),
        serde_json::from_str::<serde_json::Value>(ours),
    ) else {
        return ours.to_string();
    };
    let Some(fields) = table_schema["fields"].as_array_mut() else {
        return ours.to_string();
    };
    let missing: Vec<serde_json::Value> = ours_schema["fields"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|f| !fields.iter().any(|t| t["name"] == f["name"]))
        .cloned()
        .collect();
    if missing.is_empty() {
        return table.to_string();
    }
    fields.extend(missing);
    table_schema.to_string()
}

/// Whether the table forbids removing files (`delta.appendOnly`, which writer version 2 makes
/// every writer honour).
pub(super) fn is_append_only(metadata: &Metadata) -> bool {
    metadata
        .configuration
        .get("delta.appendOnly")
        .is_some_and(|v| v.eq_ignore_ascii_case("true"))
}

/// Refuses a table whose columns lakeload cannot keep: a column with `delta.invariants` (a
/// check every writer of protocol 2 must enforce; lakeload enforces none), or a column another
/// writer added that lakeload cannot carry through its rewrites (`added.unsupported`: a type it
/// does not write, or NOT NULL).
pub(super) fn check_columns(metadata: &Metadata, added: &AddedColumns, url: &str) -> Result<()> {
    let table_schema: serde_json::Value = serde_json::from_str(&metadata.schema_string).map_err(|e| {
        Error::Other(format!(
            "the Delta table at {url} has an unreadable schemaString: {e}"
        ))
    })?;
    for field in table_schema["fields"].as_array().into_iter().flatten() {
        let name = field["name"].as_str().unwrap_or_default();
        if field["metadata"].get("delta.invariants").is_some() {
            return Err(Error::Config(format!(
                "column {name} of the Delta table at {url} has an invariant (delta.invariants), \
                 which every writer must check; lakeload checks none, so it does not write this \
                 table. Nothing was written. Drop the invariant, or point target.url elsewhere"
            )));
        }
    }
    if let Some((name, why)) = added.unsupported.first() {
        return Err(Error::Config(format!(
            "the Delta table at {url} has a column lakeload's schema does not name: {name} \
             (another writer added it), and lakeload cannot carry its values through the dates \
             it rewrites: {why}. lakeload carries added columns of the primitive types string, \
             long, integer, double, float, boolean, binary, date, timestamp and timestamp_ntz, \
             nullable. Nothing was written. Change the column with the engine that added it, or \
             point target.url elsewhere"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_keeps_its_schema_and_gains_only_missing_columns() {
        let field = |name: &str, meta: serde_json::Value| serde_json::json!({ "name": name, "type": "string", "nullable": true, "metadata": meta });
        let ours = serde_json::json!({ "type": "struct", "fields": [field("a", serde_json::json!({})), field("b", serde_json::json!({}))] })
            .to_string();
        // Another writer commented a column: its schema stays, byte for byte.
        let commented = serde_json::json!({ "type": "struct", "fields": [field("b", serde_json::json!({ "comment": "the b" })), field("a", serde_json::json!({}))] })
            .to_string();
        assert_eq!(kept_schema(&commented, &ours), commented);
        // A table without lakeload's column b gets it at the end.
        let only_a = serde_json::json!({ "type": "struct", "fields": [field("a", serde_json::json!({ "comment": "x" }))] })
            .to_string();
        let kept: serde_json::Value = serde_json::from_str(&kept_schema(&only_a, &ours)).unwrap();
        let names: Vec<&str> = kept["fields"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["a", "b"]);
        assert_eq!(kept["fields"][0]["metadata"]["comment"], "x");
    }
}
