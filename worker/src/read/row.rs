//! One source line → a table row, a reject with its reason, or a blank (SPEC §1–2).

use crate::block::{KeyColumns, NULL_DATE, field_of, field_span};
use crate::config::SchemaConfig;
use crate::dates::DateParser;
use crate::read::rejects::{Reject, RejectReason};

pub enum LineOutcome<'a> {
    Blank,
    /// The line's text (without a trailing `\r`); its fields, dates and key hash are in the
    /// [`ParsedLine`] passed to [`LineParser::parse`].
    Row(&'a str),
    Rejected(Reject),
}

/// The parts of a row that parsing works out, reused from line to line.
#[derive(Debug, Default)]
pub struct ParsedLine {
    /// Where each field ends, relative to the line's start.
    pub ends: Vec<u32>,
    /// Date slots in `schema.date_columns` order, [`NULL_DATE`] for NULL.
    pub dates: Vec<i32>,
    pub hash: u64,
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
    keys: KeyColumns,
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
            keys: KeyColumns::new(schema),
        }
    }

    /// Position of the partition column within the row's dates.
    pub fn partition_date(&self) -> usize {
        self.partition_date
    }

    /// The partition date of a parsed row.
    pub fn partition_day(&self, parsed: &ParsedLine) -> i32 {
        parsed.dates[self.partition_date]
    }

    pub fn columns(&self) -> usize {
        self.columns
    }

    pub fn date_slots(&self) -> usize {
        self.date_columns.len()
    }

    /// Parses one line (its `\n` already removed; one trailing `\r` is removed here). A row's
    /// field ends, dates and key hash land in `out`.
    pub fn parse<'a>(&self, line: &'a [u8], number: u64, out: &mut ParsedLine) -> LineOutcome<'a> {
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
        let text = match std::str::from_utf8(line) {
            Ok(text) => text,
            Err(e) => {
                return reject(
                    RejectReason::Encoding,
                    format!("invalid UTF-8 at byte {}", e.valid_up_to() + 1),
                );
            }
        };
        let ends = &mut out.ends;
        ends.clear();
        ends.extend(memchr::memchr_iter(self.delimiter, line).map(|i| i as u32));
        ends.push(line.len() as u32);
        if ends.len() != self.columns {
            return reject(
                RejectReason::FieldCount,
                format!("expected {} fields, found {}", self.columns, ends.len()),
            );
        }
        out.dates.clear();
        for &column in &self.date_columns {
            let value = text[field_span(ends, column)].trim();
            if value.is_empty() {
                out.dates.push(NULL_DATE);
                continue;
            }
            match self.dates.parse(value) {
                Some(days) => out.dates.push(days),
                None => {
                    return reject(
                        RejectReason::BadDate,
                        format!("{}: `{value}` is not a valid date", self.column_names[column]),
                    );
                }
            }
        }
        if out.dates[self.partition_date] == NULL_DATE {
            let name = &self.column_names[self.date_columns[self.partition_date]];
            return reject(RejectReason::MissingPartition, format!("{name} is empty"));
        }
        let ends = &out.ends;
        out.hash = self
            .keys
            .hash(|i| field_of(line, ends, i), |slot| out.dates[slot]);
        LineOutcome::Row(text)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::config::{Config, RawConfig};

    /// The default schema's parser, `|`-separated; shared by the reader's tests.
    pub(crate) fn parser() -> LineParser {
        let mut raw = RawConfig::default();
        raw.set("source.url", "/in");
        raw.set("target.url", "/out");
        let config = Config::from_raw(&raw).unwrap();
        LineParser::new(&config.schema, b'|')
    }

    fn reason(line: &[u8]) -> &'static str {
        match parser().parse(line, 1, &mut ParsedLine::default()) {
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
        let parser = parser();
        let mut parsed = ParsedLine::default();
        let line = b"|\"q\" | |d||2024-01-01|2024-01-02T10:00:00Z|";
        let LineOutcome::Row(text) = parser.parse(line, 9, &mut parsed) else {
            panic!("expected a row")
        };
        let mut block = crate::block::RowBlock::new(8, 2);
        let lineage = crate::block::Lineage {
            file: 3,
            line: 9,
            generation: 1,
        };
        block.push(text, &parsed.ends, &parsed.dates, parsed.hash, lineage);
        assert_eq!(block.field(0, 0), None);
        assert_eq!(block.field_str(0, 1), Some("\"q\" "));
        assert_eq!(block.field_str(0, 2), Some(" "));
        assert_eq!(block.field(0, 4), None);
        assert_eq!(block.field(0, 7), None);
        assert_eq!(crate::dates::format_days(block.date(0, 0)), "2024-01-01");
        assert_eq!(
            crate::dates::format_days(parser.partition_day(&parsed)),
            "2024-01-02"
        );
        assert_eq!(block.lineage(0), lineage);
    }

    #[test]
    fn equal_keys_hash_alike_and_nulls_differ_from_empty_values() {
        let parser = parser();
        let hash = |line: &[u8]| {
            let mut parsed = ParsedLine::default();
            assert!(matches!(parser.parse(line, 1, &mut parsed), LineOutcome::Row(_)));
            parsed.hash
        };
        let a = hash(b"k|b|c|d|e|2024-01-01|2024-01-02|h");
        assert_eq!(
            a,
            hash(b"k|x|y|z|w||2024-01-02T23:00:00Z|h"),
            "only c1, c7, c8 count"
        );
        assert_ne!(a, hash(b"k|b|c|d|e|2024-01-01|2024-01-03|h"));
        assert_ne!(
            hash(b"|b|c|d|e|2024-01-01|2024-01-02|kh"),
            hash(b"k|b|c|d|e|2024-01-01|2024-01-02|h")
        );
    }
}
