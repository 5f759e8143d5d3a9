//! Bad input fails fast and says why. The first lines of every file are watched: when nearly
//! all of them fail the same way (a wrong `source.delimiter`, a date form the rule does not
//! read, an undeclared header line), reading stops there — after a small part of the input,
//! not after all of it — with the likely cause and the setting that fixes it. Ordinary data
//! with scattered bad lines never trips this; `run.max_reject_ratio` judges it exactly.

use crate::dates::DateParser;
use crate::error::Diagnosis;
use crate::read::rejects::{Reject, RejectReason};

/// Non-blank lines of a file looked at before its verdict.
pub const SAMPLE_LINES: u64 = 1000;

/// A file with fewer lines is judged on all of them, if it has at least this many.
const MIN_SAMPLE: u64 = 20;

/// "Nearly all": the share of sampled lines rejected, and the share of those with one reason.
const NEARLY_ALL: f64 = 0.9;

/// Rejected lines kept to work out the cause.
const KEPT: usize = 50;

/// Delimiters tried when the field count is wrong.
const DELIMITERS: &[u8] = b"|,;\t^~:";

/// Date forms tried when dates do not parse (strptime, as `schema.timestamp_format` takes).
const DATE_FORMS: &[&str] = &[
    "%d/%m/%Y",
    "%m/%d/%Y",
    "%Y/%m/%d",
    "%d.%m.%Y",
    "%d-%m-%Y",
    "%Y%m%d",
    "%d/%m/%Y %H:%M:%S",
    "%m/%d/%Y %H:%M:%S",
    "%Y/%m/%d %H:%M:%S",
    "%d.%m.%Y %H:%M:%S",
    "%d/%m/%Y %H:%M",
    "%m/%d/%Y %H:%M",
    "%Y%m%d%H%M%S",
    "%d-%b-%Y",
    "%d %b %Y",
    "%b %d %Y",
    "%Y-%m-%d %H:%M:%S%.f",
];

/// What the schema expects of a line (the reader gathers it from the configuration).
#[derive(Debug, Clone)]
pub struct Expectation {
    pub columns: Vec<String>,
    pub date_columns: Vec<usize>,
    pub partition_column: usize,
    pub delimiter: u8,
    pub timestamp_format: Option<String>,
    /// `run.max_reject_ratio`: a file is stopped only when its sample is over it.
    pub max_reject_ratio: f64,
    /// `source.header` is set: line 1 was skipped.
    pub header: bool,
}

/// Watches the first lines of one file (the reader drops it once it has its verdict).
#[derive(Debug, Default)]
pub struct Sniffer {
    sampled: u64,
    /// Rejected lines by reason, in [`REASONS`] order.
    rejected: [u64; 4],
    kept: Vec<Reject>,
    /// Line 1, when it was rejected.
    first_rejected: Option<Reject>,
}

const REASONS: [RejectReason; 4] = [
    RejectReason::FieldCount,
    RejectReason::Encoding,
    RejectReason::BadDate,
    RejectReason::MissingPartition,
];

fn slot(reason: RejectReason) -> usize {
    REASONS
        .iter()
        .position(|r| *r == reason)
        .expect("every reason is listed")
}

impl Sniffer {
    /// Whether the sample is complete (the verdict is due).
    pub fn full(&self) -> bool {
        self.sampled >= SAMPLE_LINES
    }

    pub fn row(&mut self) {
        self.sampled += 1;
    }

    pub fn reject(&mut self, reject: &Reject) {
        self.sampled += 1;
        self.rejected[slot(reject.reason)] += 1;
        if reject.line == 1 {
            self.first_rejected = Some(reject.clone());
        }
        if self.kept.len() < KEPT {
            self.kept.push(reject.clone());
        }
    }

    /// The verdict on what was seen (at `SAMPLE_LINES`, or at the end of a shorter file).
    pub fn verdict(&self, expect: &Expectation) -> Option<Diagnosis> {
        if self.sampled < MIN_SAMPLE {
            return None;
        }
        let rejected: u64 = self.rejected.iter().sum();
        let share = rejected as f64 / self.sampled as f64;
        if share >= NEARLY_ALL && share > expect.max_reject_ratio {
            let (top, count) = REASONS
                .iter()
                .map(|r| (*r, self.rejected[slot(*r)]))
                .max_by_key(|(_, n)| *n)
                .expect("four reasons");
            if count as f64 >= NEARLY_ALL * rejected as f64 {
                return Some(Diagnosis {
                    config_error: false,
                    reason: Some(top.as_str()),
                    rejected,
                    sampled: self.sampled,
                    cause: self.cause(top, expect),
                });
            }
            return Some(Diagnosis {
                config_error: false,
                reason: None,
                rejected,
                sampled: self.sampled,
                cause: format!(
                    "{rejected} of the first {} lines were rejected, for several reasons; check \
                     source.delimiter, schema.columns and the date columns against the file",
                    self.sampled
                ),
            });
        }
        // Only line 1 fails, and it reads like column names: a header nobody declared.
        if rejected == 1
            && !expect.header
            && let Some(first) = &self.first_rejected
            && let Some(names) = header_names(first, expect)
        {
            return Some(Diagnosis {
                config_error: true,
                reason: Some(first.reason.as_str()),
                rejected,
                sampled: self.sampled,
                cause: format!(
                    "line 1 looks like a header (`{names}`) and every other line of the first \
                     {} is a row; set source.header = true to skip the first line of every file",
                    self.sampled
                ),
            });
        }
        None
    }

    fn cause(&self, reason: RejectReason, expect: &Expectation) -> String {
        let samples: Vec<&Reject> = self.kept.iter().filter(|r| r.reason == reason).collect();
        match reason {
            RejectReason::FieldCount => delimiter_cause(&samples, expect),
            RejectReason::BadDate => date_cause(&samples, expect),
            RejectReason::Encoding => {
                "the lines are not UTF-8 text: convert the files to UTF-8 (e.g. with iconv) \
                 before they land"
                    .into()
            }
            RejectReason::MissingPartition => format!(
                "the partition column `{}` is empty on nearly every line; check \
                 schema.partition_column and schema.columns",
                partition_name(expect)
            ),
        }
    }
}

fn partition_name(expect: &Expectation) -> &str {
    &expect.columns[expect.partition_column]
}

fn shown(delimiter: u8) -> String {
    match delimiter {
        b'\t' => "\\t".into(),
        d => (d as char).to_string(),
    }
}

/// The field count most of `lines` have under `delimiter`, and how many have it.
fn modal_count(lines: &[&Reject], delimiter: u8) -> (usize, usize) {
    let mut counts = std::collections::BTreeMap::<usize, usize>::new();
    for r in lines {
        *counts
            .entry(memchr::memchr_iter(delimiter, &r.raw).count() + 1)
            .or_default() += 1;
    }
    counts.into_iter().max_by_key(|(_, n)| *n).unwrap_or((0, 0))
}

fn delimiter_cause(samples: &[&Reject], expect: &Expectation) -> String {
    let expected = expect.columns.len();
    let (found, _) = modal_count(samples, expect.delimiter);
    let mut text = format!(
        "source.delimiter '{}' finds {found} field{} where {expected} are expected",
        shown(expect.delimiter),
        if found == 1 { "" } else { "s" }
    );
    let fits = DELIMITERS
        .iter()
        .copied()
        .filter(|d| *d != expect.delimiter)
        .find(|d| {
            let (count, lines) = modal_count(samples, *d);
            count == expected && lines as f64 >= NEARLY_ALL * samples.len() as f64
        });
    match fits {
        Some(d) => {
            text += &format!(
                "; '{}' finds {expected}: set source.delimiter = {}",
                shown(d),
                shown(d)
            )
        }
        None => {
            text += &format!(
                "; no other usual delimiter finds {expected} either: check schema.columns \
                 against the file"
            )
        }
    }
    text
}

fn date_cause(samples: &[&Reject], expect: &Expectation) -> String {
    // The date fields that fail under the current rule.
    let parser = DateParser::new(expect.timestamp_format.as_deref());
    let mut failing: Vec<(usize, String)> = Vec::new();
    for r in samples {
        let Ok(text) = std::str::from_utf8(&r.raw) else {
            continue;
        };
        let fields: Vec<&str> = text
            .trim_end_matches('\r')
            .split(expect.delimiter as char)
            .collect();
        for &column in &expect.date_columns {
            if let Some(value) = fields.get(column).map(|v| v.trim())
                && !value.is_empty()
                && parser.parse(value).is_none()
            {
                failing.push((column, value.to_string()));
            }
        }
    }
    let Some((column, example)) = failing.first().cloned() else {
        return "nearly every line has a date that is not a real calendar date; check the date \
                columns (schema.date_columns)"
            .into();
    };
    let rule = match &expect.timestamp_format {
        Some(format) => format!("schema.timestamp_format = {format} does not read it"),
        None => "it is not an ISO date (YYYY-MM-DD, optionally with a time)".into(),
    };
    let mut text = format!(
        "date column `{}` holds `{example}`: {rule}",
        expect.columns[column]
    );
    let values: Vec<&str> = failing.iter().map(|(_, v)| v.as_str()).collect();
    let reads = |form: &str| {
        let parser = DateParser::Format(form.to_string());
        values.iter().filter(|v| parser.parse(v).is_some()).count() as f64 >= NEARLY_ALL * values.len() as f64
    };
    let iso = DateParser::Iso;
    let iso_reads =
        values.iter().filter(|v| iso.parse(v).is_some()).count() as f64 >= NEARLY_ALL * values.len() as f64;
    if expect.timestamp_format.is_some() && iso_reads {
        text += "; the built-in ISO rule reads it: remove schema.timestamp_format";
        return text;
    }
    match DATE_FORMS.iter().find(|form| reads(form)) {
        Some(form) => text += &format!("; schema.timestamp_format = {form} reads it"),
        None => text += "; set schema.timestamp_format to a strptime format that reads it",
    }
    text
}

/// Line 1's fields, if they read like column names: the schema's field count, every field a
/// word-like name, none of the date columns a date.
fn header_names(first: &Reject, expect: &Expectation) -> Option<String> {
    let text = std::str::from_utf8(&first.raw).ok()?.trim_end_matches('\r');
    let fields: Vec<&str> = text.split(expect.delimiter as char).collect();
    if fields.len() != expect.columns.len() || first.reason != RejectReason::BadDate {
        return None;
    }
    let name_like = |f: &str| {
        let f = f.trim();
        f.chars().next().is_some_and(|c| c.is_alphabetic() || c == '_')
            && f.chars().all(|c| c.is_alphanumeric() || " _-.".contains(c))
    };
    fields
        .iter()
        .all(|f| name_like(f))
        .then(|| fields.join(&(expect.delimiter as char).to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Origin, RawConfig};
    use crate::read::row::{LineOutcome, LineParser, ParsedLine};

    fn expectation(extra: &str) -> (LineParser, Expectation) {
        let ini = format!("[source]\nurl = /in\n[target]\nurl = /out\n{extra}");
        let config =
            crate::Config::from_raw(&RawConfig::from_ini_str(&ini, Origin::File("t".into())).unwrap())
                .unwrap();
        let parser = LineParser::new(&config.schema, config.source.delimiter);
        (parser, crate::read::reader::expectation(&config))
    }

    fn sniff(lines: &[String], extra: &str) -> Option<Diagnosis> {
        let (parser, expect) = expectation(extra);
        let mut sniffer = Sniffer::default();
        let mut parsed = ParsedLine::default();
        for (i, line) in lines.iter().enumerate() {
            match parser.parse(line.as_bytes(), i as u64 + 1, &mut parsed) {
                LineOutcome::Row(_) => sniffer.row(),
                LineOutcome::Rejected(r) => sniffer.reject(&r),
                LineOutcome::Blank => {}
            }
            if sniffer.full() {
                break;
            }
        }
        sniffer.verdict(&expect)
    }

    fn lines(n: usize, delimiter: &str, date: &str) -> Vec<String> {
        (0..n)
            .map(|i| ["k", &i.to_string(), "a", "b", "c", date, date, "x"].join(delimiter))
            .collect()
    }

    #[test]
    fn a_wrong_delimiter_is_named_with_the_one_that_fits() {
        let d = sniff(&lines(2000, "|", "2024-01-02"), "[source]\ndelimiter = ,\n").unwrap();
        assert_eq!(d.reason, Some(RejectReason::FieldCount.as_str()));
        assert!(!d.config_error);
        assert_eq!(d.sampled, SAMPLE_LINES);
        assert!(
            d.cause
                .contains("source.delimiter ',' finds 1 field where 8 are expected; '|' finds 8"),
            "{}",
            d.cause
        );
        let d = sniff(&lines(100, "\t", "2024-01-02"), "").unwrap();
        assert!(d.cause.contains("set source.delimiter = \\t"), "{}", d.cause);
    }

    #[test]
    fn a_date_form_the_rule_does_not_read_is_named_with_a_format_that_does() {
        let d = sniff(&lines(500, "|", "31/01/2024 10:00:00"), "").unwrap();
        assert_eq!(d.reason, Some(RejectReason::BadDate.as_str()));
        assert!(d.cause.contains("`31/01/2024 10:00:00`"), "{}", d.cause);
        assert!(
            d.cause
                .contains("schema.timestamp_format = %d/%m/%Y %H:%M:%S reads it"),
            "{}",
            d.cause
        );
        let d = sniff(
            &lines(500, "|", "2024-01-31"),
            "[schema]\ntimestamp_format = %d/%m/%Y\n",
        )
        .unwrap();
        assert!(d.cause.contains("%d/%m/%Y does not read it"), "{}", d.cause);
        assert!(d.cause.contains("remove schema.timestamp_format"), "{}", d.cause);
    }

    #[test]
    fn an_undeclared_header_is_a_config_error_and_a_declared_one_is_not() {
        let mut with_header = vec!["id|v1|v2|v3|v4|created|event_date|kind".to_string()];
        with_header.extend(lines(200, "|", "2024-01-02"));
        let d = sniff(&with_header, "").unwrap();
        assert!(d.config_error);
        assert!(d.cause.contains("source.header = true"), "{}", d.cause);
        // Only the header failed, so this is not about ratios; with header = true the parser
        // never sees line 1.
        let mut e = expectation("").1;
        e.header = true;
        let (parser, _) = expectation("");
        let mut sniffer = Sniffer::default();
        let mut parsed = ParsedLine::default();
        if let LineOutcome::Rejected(r) = parser.parse(with_header[0].as_bytes(), 1, &mut parsed) {
            sniffer.reject(&r);
        }
        for _ in 0..100 {
            sniffer.row();
        }
        assert_eq!(sniffer.verdict(&e), None);
    }

    #[test]
    fn scattered_bad_lines_and_small_files_are_left_to_the_ratio_rule() {
        let mut mixed = lines(1000, "|", "2024-01-02");
        for i in (0..1000).step_by(20) {
            mixed[i] = "broken".into();
        }
        assert_eq!(
            sniff(&mixed, ""),
            None,
            "5 % bad is for run.max_reject_ratio to judge"
        );
        assert_eq!(
            sniff(&lines(10, ",", "2024-01-02"), ""),
            None,
            "10 lines are too few to judge"
        );
        // A run that accepts nearly everything being rejected is not stopped.
        assert_eq!(
            sniff(&lines(100, ",", "2024-01-02"), "[run]\nmax_reject_ratio = 1\n"),
            None
        );
    }
}
