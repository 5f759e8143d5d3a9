//! A date's new rows' key values, column by column, so that a stored file whose statistics
//! (a Delta `add`'s `minValues`, `maxValues` and `nullCount`) show it holds none of them is
//! left as it is without being read at all. Statistics only ever widen a file's true range
//! (a truncated string minimum is a prefix; lakeload's own maximum is left out when it would
//! be truncated), so a file they rule out really holds none of the keys.

use serde_json::Value;

use crate::block::{NULL_DATE, RowBlock};
use crate::config::SchemaConfig;

/// The new rows' distinct values of one key column, sorted.
#[derive(Debug)]
enum Values<'a> {
    Text(Vec<&'a [u8]>),
    /// Days since the epoch.
    Date(Vec<i32>),
}

#[derive(Debug)]
struct ColumnValues<'a> {
    name: String,
    values: Values<'a>,
    /// Whether a new row holds NULL there (NULL keys equal NULL keys).
    null: bool,
}

/// The new rows' values of each key column but the partition column (every row of a date
/// holds the same one there, and a Delta file's statistics leave it out).
#[derive(Debug)]
pub struct NewKeys<'a> {
    columns: Vec<ColumnValues<'a>>,
}

impl<'a> NewKeys<'a> {
    pub fn of(blocks: &'a [RowBlock], schema: &SchemaConfig) -> NewKeys<'a> {
        let columns = schema
            .key
            .iter()
            .filter(|&&c| c != schema.partition_column)
            .map(|&c| {
                let rows = || blocks.iter().flat_map(|b| (0..b.len()).map(move |r| (b, r)));
                let (values, null) = match schema.date_slot(c) {
                    Some(slot) => {
                        let mut days: Vec<i32> = rows().map(|(b, r)| b.date(r, slot)).collect();
                        let null = days.contains(&NULL_DATE);
                        days.retain(|&d| d != NULL_DATE);
                        days.sort_unstable();
                        days.dedup();
                        (Values::Date(days), null)
                    }
                    None => {
                        let mut texts: Vec<&[u8]> = rows().filter_map(|(b, r)| b.field(r, c)).collect();
                        let null = texts.len() < blocks.iter().map(RowBlock::len).sum();
                        texts.sort_unstable();
                        texts.dedup();
                        (Values::Text(texts), null)
                    }
                };
                ColumnValues {
                    name: schema.columns[c].clone(),
                    values,
                    null,
                }
            })
            .collect();
        NewKeys { columns }
    }

    /// Whether a file with these statistics (the JSON of a Delta `add`'s `stats`) holds none
    /// of the keys: on some key column, no new value lies within the file's bounds, and the
    /// file holds no NULL there or no new row does. Missing statistics tell nothing.
    pub fn none_within(&self, stats: &Value) -> bool {
        self.columns.iter().any(|column| column.none_within(stats))
    }
}

impl ColumnValues<'_> {
    fn none_within(&self, stats: &Value) -> bool {
        let nulls = stats["nullCount"][&self.name].as_i64();
        if self.null && nulls != Some(0) {
            return false;
        }
        let (min, max) = (&stats["minValues"][&self.name], &stats["maxValues"][&self.name]);
        let Some(min) = min.as_str() else {
            // No bounds: only a column of NULLs alone rules out non-NULL values.
            return !self.null && nulls.is_some() && nulls == stats["numRecords"].as_i64();
        };
        let max = max.as_str();
        match &self.values {
            Values::Text(values) => {
                // The first new value at or past the minimum, if any, lies past the maximum.
                let first = values.partition_point(|v| *v < min.as_bytes());
                match (values.get(first), max) {
                    (None, _) => true,
                    (Some(v), Some(max)) => *v > max.as_bytes(),
                    (Some(_), None) => false,
                }
            }
            Values::Date(values) => {
                let (Some(min), Some(max)) = (day(min), max.and_then(day)) else {
                    return false;
                };
                let first = values.partition_point(|&v| v < min);
                values.get(first).is_none_or(|&v| v > max)
            }
        }
    }
}

/// A date as statistics write it (`2024-01-31`) in days since the epoch.
fn day(text: &str) -> Option<i32> {
    chrono::NaiveDate::parse_from_str(text, "%Y-%m-%d")
        .ok()
        .map(crate::dates::days_since_epoch)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::block::RowBuilder;
    use serde_json::json;

    /// `id, day, other, v`, keyed by `(id, day, other)`, `other` a date, `day` the partition.
    fn schema() -> SchemaConfig {
        crate::test_fixtures::schema_of("id,day,other,v", "day,other", "day", "id,day,other")
    }

    fn new_keys(rows: &[(Option<&str>, i32)]) -> NewKeys<'static> {
        let schema = schema();
        let mut block = RowBlock::new(4, 2);
        for (line, (id, other)) in rows.iter().enumerate() {
            RowBuilder::new(&schema).push(
                &mut block,
                &[*id, Some("2024-01-02"), Some("x"), Some("v")],
                &[19724, *other],
                crate::block::Lineage {
                    file: 0,
                    line: line as u64,
                    generation: 1,
                },
            );
        }
        NewKeys::of(Box::leak(Box::new([block])), &schema)
    }

    fn stats(id: (&str, Option<&str>), other: (&str, &str), id_nulls: i64) -> Value {
        let mut max = json!({"other": other.1});
        if let Some(m) = id.1 {
            max["id"] = json!(m);
        }
        json!({"numRecords": 10, "minValues": {"id": id.0, "other": other.0},
               "maxValues": max, "nullCount": {"id": id_nulls, "other": 0}})
    }

    /// A file is ruled out only when a key column's new values all lie outside its bounds,
    /// with NULLs on neither side; a value in between the new ones, an open maximum, a NULL on
    /// both sides or missing statistics keep it in.
    #[test]
    fn a_file_is_ruled_out_only_when_its_bounds_exclude_every_new_key() {
        let keys = new_keys(&[(Some("a5"), 19000), (Some("z1"), 19000)]);
        // 2022-01-08 is day 19000: the other date column does not rule anything out here.
        let year_2022 = ("2022-01-01", "2022-12-31");
        // Every new id is outside [b, y].
        assert!(keys.none_within(&stats(("b", Some("y")), year_2022, 0)));
        // a5 lies within [a, b].
        assert!(!keys.none_within(&stats(("a", Some("b")), year_2022, 0)));
        // z1 lies within [c, …) when the maximum was left out.
        assert!(!keys.none_within(&stats(("c", None), year_2022, 0)));
        // The ids match but the other date column rules the file out.
        assert!(keys.none_within(&stats(("a", Some("zz")), ("2024-01-01", "2024-01-31"), 0)));
        assert!(!keys.none_within(&stats(("a", Some("zz")), year_2022, 0)));
        // No statistics: read.
        assert!(!keys.none_within(&json!({"numRecords": 10})));
        assert!(!keys.none_within(&Value::Null));

        // A NULL id among the new rows can match a file's NULL ids.
        let with_null = new_keys(&[(None, 19000), (Some("z1"), 19000)]);
        assert!(!with_null.none_within(&stats(("b", Some("y")), year_2022, 1)));
        assert!(with_null.none_within(&stats(("b", Some("y")), year_2022, 0)));
        // ... and a file of NULL ids only, when none of the new ids is NULL, holds none.
        let nulls_only = json!({"numRecords": 10, "minValues": {}, "maxValues": {},
                                "nullCount": {"id": 10}});
        assert!(keys.none_within(&nulls_only));
        assert!(!with_null.none_within(&nulls_only));
    }
}
