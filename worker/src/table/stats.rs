//! Per-file column statistics as a Delta `add` action carries them (`numRecords`,
//! `minValues`, `maxValues`, `nullCount`), gathered from the frames an encoder writes. Readers
//! use them to skip files a filter cannot match, so a bound must never be narrower than the
//! file's values: a string longer than [`STRING_PREFIX`] characters keeps a truncated
//! minimum (a prefix sorts first) and no maximum; a timestamp's bounds are widened to whole
//! milliseconds, the precision the stats are written in.

use std::collections::BTreeMap;

use polars::prelude::*;

use crate::dates::format_days;
use crate::error::Result;

/// Characters of a string bound kept, as Delta writers do by default.
const STRING_PREFIX: usize = 32;

/// A column's bounds so far, in its physical type.
#[derive(Debug, Clone)]
enum Bounds {
    /// Strings compare by their bytes (UTF-8 order is code point order).
    Text { min: String, max: Option<String> },
    /// Days for dates, microseconds for timestamps, the value for integers.
    Number { min: i64, max: i64 },
}

#[derive(Debug, Clone)]
struct ColumnStats {
    dtype: DataType,
    bounds: Option<Bounds>,
    nulls: u64,
}

/// The statistics of one data file, built up frame by frame.
#[derive(Debug, Clone, Default)]
pub struct FileStats {
    rows: u64,
    /// In the file's column order.
    columns: Vec<(String, ColumnStats)>,
}

impl FileStats {
    /// Adds the rows of `frame` (a frame of the file's columns).
    pub fn observe(&mut self, frame: &DataFrame) -> Result<()> {
        self.rows += frame.height() as u64;
        if self.columns.is_empty() {
            self.columns = frame
                .columns()
                .iter()
                .map(|c| {
                    let stats = ColumnStats {
                        dtype: c.dtype().clone(),
                        bounds: None,
                        nulls: 0,
                    };
                    (c.name().to_string(), stats)
                })
                .collect();
        }
        for ((_, stats), column) in self.columns.iter_mut().zip(frame.columns()) {
            stats.nulls += column.null_count() as u64;
            let found = match column.dtype() {
                DataType::String => {
                    let text = column.str()?.as_binary();
                    match (text.min_binary(), text.max_binary()) {
                        (Some(min), Some(max)) => Some(Bounds::Text {
                            min: String::from_utf8_lossy(min).into_owned(),
                            max: Some(String::from_utf8_lossy(max).into_owned()),
                        }),
                        _ => None,
                    }
                }
                DataType::Date | DataType::Datetime(_, _) | DataType::Int64 | DataType::Int32 => {
                    let numbers = column.to_physical_repr().cast(&DataType::Int64)?;
                    let numbers = numbers.i64()?;
                    numbers
                        .min()
                        .zip(numbers.max())
                        .map(|(min, max)| Bounds::Number { min, max })
                }
                // Other types get a null count only.
                _ => None,
            };
            stats.bounds = match (stats.bounds.take(), found) {
                (None, found) => found,
                (bounds, None) => bounds,
                (Some(Bounds::Number { min: a, max: b }), Some(Bounds::Number { min: c, max: d })) => {
                    Some(Bounds::Number {
                        min: a.min(c),
                        max: b.max(d),
                    })
                }
                (Some(Bounds::Text { min: a, max: b }), Some(Bounds::Text { min: c, max: d })) => {
                    Some(Bounds::Text {
                        min: a.min(c),
                        max: b.max(d),
                    })
                }
                (bounds, Some(_)) => bounds,
            };
        }
        Ok(())
    }

    pub fn rows(&self) -> u64 {
        self.rows
    }

    /// The `stats` string of the file's `add` action.
    pub fn to_json(&self) -> String {
        let mut min_values = serde_json::Map::new();
        let mut max_values = serde_json::Map::new();
        let mut null_count = serde_json::Map::new();
        for (name, stats) in &self.columns {
            null_count.insert(name.clone(), stats.nulls.into());
            let Some(bounds) = &stats.bounds else {
                continue;
            };
            let (min, max) = match bounds {
                Bounds::Text { min, max } => text_bounds(min, max.as_deref()),
                Bounds::Number { min, max } => number_bounds(&stats.dtype, *min, *max),
            };
            if let Some(min) = min {
                min_values.insert(name.clone(), min);
            }
            if let Some(max) = max {
                max_values.insert(name.clone(), max);
            }
        }
        let stats: BTreeMap<&str, serde_json::Value> = BTreeMap::from([
            ("numRecords", self.rows.into()),
            ("minValues", min_values.into()),
            ("maxValues", max_values.into()),
            ("nullCount", null_count.into()),
        ]);
        serde_json::to_string(&stats).unwrap_or_default()
    }
}

/// A long minimum becomes its prefix (still not above any value); a long maximum is left
/// out (its prefix would be below the value).
fn text_bounds(min: &str, max: Option<&str>) -> (Option<serde_json::Value>, Option<serde_json::Value>) {
    let prefix: String = min.chars().take(STRING_PREFIX).collect();
    let max = max.filter(|m| m.chars().nth(STRING_PREFIX).is_none());
    (Some(prefix.into()), max.map(Into::into))
}

fn number_bounds(
    dtype: &DataType,
    min: i64,
    max: i64,
) -> (Option<serde_json::Value>, Option<serde_json::Value>) {
    match dtype {
        DataType::Date => {
            let day = |d: i64| i32::try_from(d).ok().map(|d| format_days(d).into());
            (day(min), day(max))
        }
        DataType::Datetime(unit, _) => {
            let per_milli = match unit {
                TimeUnit::Nanoseconds => 1_000_000,
                TimeUnit::Microseconds => 1_000,
                TimeUnit::Milliseconds => 1,
            };
            let millis = |m: i64| {
                chrono::DateTime::from_timestamp_millis(m)
                    .map(|t| t.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string().into())
            };
            (
                millis(min.div_euclid(per_milli)),
                millis(max.div_euclid(per_milli) + i64::from(max.rem_euclid(per_milli) != 0)),
            )
        }
        _ => (Some(min.into()), Some(max.into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Bounds cover every value of every frame observed; nulls are counted, not bounded; a
    /// long string keeps a prefix as its minimum and no maximum; timestamps widen to whole
    /// milliseconds.
    #[test]
    fn bounds_cover_every_frame() {
        let long = "x".repeat(40);
        let first = df!(
            "id" => [Some("b"), None, Some("m")],
            "note" => [Some("a"), Some(long.as_str()), None],
            "day" => [19_724i32, 19_730, 19_725],
            "line" => [5i64, 2, 9],
            "at" => [1_500i64, 2_000, 1_000_001],
        )
        .unwrap();
        let mut first = first;
        first.apply("day", |c| c.cast(&DataType::Date).unwrap()).unwrap();
        first
            .apply("at", |c| {
                c.cast(&DataType::Datetime(TimeUnit::Microseconds, None)).unwrap()
            })
            .unwrap();
        let mut second = first.slice(0, 1);
        second.apply("id", |_| Column::new("id".into(), ["a"])).unwrap();
        let mut stats = FileStats::default();
        stats.observe(&first).unwrap();
        stats.observe(&second).unwrap();
        let json: serde_json::Value = serde_json::from_str(&stats.to_json()).unwrap();
        assert_eq!(json["numRecords"], 4);
        assert_eq!(json["minValues"]["id"], "a");
        assert_eq!(json["maxValues"]["id"], "m");
        assert_eq!(json["nullCount"]["id"], 1);
        assert_eq!(json["minValues"]["note"], "a");
        assert!(json["maxValues"].get("note").is_none(), "{json}");
        assert_eq!(json["nullCount"]["note"], 1);
        assert_eq!(json["minValues"]["day"], "2024-01-02");
        assert_eq!(json["maxValues"]["day"], "2024-01-08");
        assert_eq!(json["minValues"]["line"], 2);
        assert_eq!(json["maxValues"]["line"], 9);
        assert_eq!(json["minValues"]["at"], "1970-01-01T00:00:00.001Z");
        assert_eq!(json["maxValues"]["at"], "1970-01-01T00:00:01.001Z");
    }
}
