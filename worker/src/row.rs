//! One source line → a table row, a reject with its reason, or a blank (SPEC §1–2).

use crate::config::SchemaConfig;
use crate::dates::DateParser;

/// A row kept compactly: the line's text once, plus where each field ends. Field `i` spans
/// `text[ends[i-1]+1 .. ends[i]]` (from 0 for the first); the one-byte gap between fields is
/// the delimiter in source rows and an arbitrary separator in rows read back from the table.
#[derive(Debug, Clone)]
pub struct Row {
    text: Box<str>,
    ends: Box<[u32]>,
    /// Parsed values of the date columns, in `schema.date_columns` order (days since epoch).
    dates: Box<[Option<i32>]>,
    pub lineage: Lineage,
}

/// Where a row came from; decides which of two duplicates is the latest (SPEC §2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lineage {
    /// Index into the run's file table (key and modified time).
    pub file: u32,
    /// 1-based line number in the (decompressed) file.
    pub line: u64,
    /// 0 for rows already in the table, 1 for rows of this run: on an exact tie (a changed file
    /// re-processed under `run.order = name`) the new version wins.
    pub generation: u8,
}

impl Row {
    /// Builds a row from field values (`None` = NULL). Used for rows read back from the table.
    pub fn from_values(values: &[Option<&str>], dates: Vec<Option<i32>>, lineage: Lineage) -> Row {
        let mut text = String::with_capacity(values.iter().map(|v| v.map_or(0, str::len) + 1).sum());
        let mut ends = Vec::with_capacity(values.len());
        for (i, v) in values.iter().enumerate() {
            if i > 0 {
                text.push('\u{1f}');
            }
            text.push_str(v.unwrap_or(""));
            ends.push(text.len() as u32);
        }
        Row {
            text: text.into(),
            ends: ends.into(),
            dates: dates.into(),
            lineage,
        }
    }

    /// The value of column `i`; an empty field is NULL.
    pub fn field(&self, i: usize) -> Option<&str> {
        let start = if i == 0 { 0 } else { self.ends[i - 1] as usize + 1 };
        let end = self.ends[i] as usize;
        (end > start).then(|| &self.text[start..end])
    }

    pub fn field_count(&self) -> usize {
        self.ends.len()
    }

    pub fn date_count(&self) -> usize {
        self.dates.len()
    }

    /// The value of the `j`-th date column.
    pub fn date(&self, j: usize) -> Option<i32> {
        self.dates[j]
    }

    /// Approximate heap + inline size, for the memory budget.
    pub fn size_estimate(&self) -> usize {
        std::mem::size_of::<Row>() + self.text.len() + self.ends.len() * 4 + self.dates.len() * 8
    }
}

/// Why a line was rejected (SPEC §2), as written in the rejects file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RejectReason {
    FieldCount,
    Encoding,
    BadDate,
    MissingPartition,
}

impl RejectReason {
    pub fn as_str(self) -> &'static str {
        match self {
            RejectReason::FieldCount => "field_count",
            RejectReason::Encoding => "encoding",
            RejectReason::BadDate => "bad_date",
            RejectReason::MissingPartition => "missing_partition",
        }
    }
}

/// A rejected line, with everything needed to find and fix it.
#[derive(Debug, Clone)]
pub struct Reject {
    pub line: u64,
    pub reason: RejectReason,
    pub detail: String,
    /// The line's bytes, without the line break.
    pub raw: Vec<u8>,
}

pub enum LineOutcome {
    Blank,
    Row(Row),
    Rejected(Reject),
}

/// Applies the schema to lines.
#[derive(Debug, Clone)]
pub struct LineParser {
    columns: usize,
    delimiter: u8,
    /// `(column index, position in date_columns)` for each date column.
    date_columns: Vec<usize>,
    /// Position of the partition column within `date_columns`.
    partition_date: usize,
    column_names: Vec<String>,
    dates: DateParser,
}

impl LineParser {
    pub fn new(schema: &SchemaConfig, delimiter: u8) -> Self {
        LineParser {
            columns: schema.columns.len(),
            delimiter,
            date_columns: schema.date_columns.clone(),
            partition_date: schema
                .date_columns
                .iter()
                .position(|c| *c == schema.partition_column)
                .expect("config validation: the partition column is a date column"),
            column_names: schema.columns.clone(),
            dates: DateParser::new(schema.timestamp_format.as_deref()),
        }
    }

    /// Position of the partition column within the row's dates.
    pub fn partition_date(&self) -> usize {
        self.partition_date
    }

    /// Parses one line (its `\n` already removed; one trailing `\r` is removed here).
    pub fn parse(&self, line: &[u8], file: u32, number: u64) -> LineOutcome {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.iter().all(u8::is_ascii_whitespace) {
            return LineOutcome::Blank;
        }
        let reject = |reason, detail: String| {
            LineOutcome::Rejected(Reject {
                line: number,
                reason,
                detail,
                raw: line.to_vec(),
            })
        };
        let Ok(text) = std::str::from_utf8(line) else {
            let at = std::str::from_utf8(line).unwrap_err().valid_up_to();
            return reject(
                RejectReason::Encoding,
                format!("invalid UTF-8 at byte {}", at + 1),
            );
        };
        let mut ends = Vec::with_capacity(self.columns);
        for (i, b) in line.iter().enumerate() {
            if *b == self.delimiter {
                ends.push(i as u32);
            }
        }
        ends.push(line.len() as u32);
        if ends.len() != self.columns {
            return reject(
                RejectReason::FieldCount,
                format!("expected {} fields, found {}", self.columns, ends.len()),
            );
        }
        let mut dates = Vec::with_capacity(self.date_columns.len());
        for &column in &self.date_columns {
            let start = if column == 0 {
                0
            } else {
                ends[column - 1] as usize + 1
            };
            let value = text[start..ends[column] as usize].trim();
            if value.is_empty() {
                dates.push(None);
                continue;
            }
            match self.dates.parse(value) {
                Some(days) => dates.push(Some(days)),
                None => {
                    return reject(
                        RejectReason::BadDate,
                        format!("{}: `{value}` is not a valid date", self.column_names[column]),
                    );
                }
            }
        }
        if dates[self.partition_date].is_none() {
            let name = &self.column_names[self.date_columns[self.partition_date]];
            return reject(RejectReason::MissingPartition, format!("{name} is empty"));
        }
        LineOutcome::Row(Row {
            text: text.into(),
            ends: ends.into(),
            dates: dates.into(),
            lineage: Lineage {
                file,
                line: number,
                generation: 1,
            },
        })
    }
}

/// The line's text for the rejects file: valid UTF-8 kept, each invalid byte as `\xNN`.
pub fn escape_invalid_utf8(raw: &[u8]) -> String {
    let mut out = String::with_capacity(raw.len());
    for chunk in raw.utf8_chunks() {
        out.push_str(chunk.valid());
        for b in chunk.invalid() {
            out.push_str(&format!("\\x{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Config, RawConfig};

    fn parser() -> LineParser {
        let mut raw = RawConfig::default();
        raw.set("source.url", "/in");
        raw.set("target.url", "/out");
        let config = Config::from_raw(&raw).unwrap();
        LineParser::new(&config.schema, b'|')
    }

    fn reason(line: &[u8]) -> &'static str {
        match parser().parse(line, 0, 1) {
            LineOutcome::Blank => "blank",
            LineOutcome::Row(_) => "row",
            LineOutcome::Rejected(r) => r.reason.as_str(),
        }
    }

    #[test]
    fn classifies_lines() {
        assert_eq!(reason(b""), "blank");
        assert_eq!(reason(b"\r"), "blank");
        assert_eq!(reason(b"  \t "), "blank");
        assert_eq!(reason(b"a|b|c|d|e|2024-01-01|2024-01-02|h"), "row");
        assert_eq!(reason(b"a|b|c|d|e|2024-01-01|2024-01-02|h\r"), "row");
        assert_eq!(reason(b"a|b|c|d|e|2024-01-01|2024-01-02"), "field_count");
        assert_eq!(reason(b"a|b|c|d|e|2024-01-01|2024-01-02|h|i"), "field_count");
        assert_eq!(reason(b"\xff|b|c|d|e|2024-01-01|2024-01-02|h"), "encoding");
        assert_eq!(reason(b"a|b|c|d|e|2024-02-30|2024-01-02|h"), "bad_date");
        assert_eq!(reason(b"a|b|c|d|e|2024-01-01||h"), "missing_partition");
        assert_eq!(reason(b"a|b|c|d|e||  2024-01-02 |h"), "row");
    }

    #[test]
    fn empty_fields_are_null_and_text_is_verbatim() {
        let LineOutcome::Row(row) = parser().parse(b"|\"q\" | |d||2024-01-01|2024-01-02T10:00:00Z|", 3, 9)
        else {
            panic!("expected a row")
        };
        assert_eq!(row.field(0), None);
        assert_eq!(row.field(1), Some("\"q\" "));
        assert_eq!(row.field(2), Some(" "));
        assert_eq!(row.field(4), None);
        assert_eq!(row.field(7), None);
        assert_eq!(
            row.date(0).map(crate::dates::format_days).as_deref(),
            Some("2024-01-01")
        );
        assert_eq!(
            row.lineage,
            Lineage {
                file: 3,
                line: 9,
                generation: 1
            }
        );
    }

    #[test]
    fn rows_rebuilt_from_values_read_back_the_same() {
        let row = Row::from_values(
            &[Some("a|b"), None, Some("")],
            vec![Some(5)],
            Lineage {
                file: 0,
                line: 1,
                generation: 0,
            },
        );
        assert_eq!(row.field(0), Some("a|b"));
        assert_eq!(row.field(1), None);
        assert_eq!(row.field(2), None);
    }

    #[test]
    fn invalid_bytes_are_escaped() {
        assert_eq!(escape_invalid_utf8(b"ok \xc3\xa9 \xff\xfe!"), "ok é \\xFF\\xFE!");
    }
}
