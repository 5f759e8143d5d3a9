//! Date columns: the built-in ISO rule of SPEC §2, or a configured strptime format.
//!
//! The built-in rule checks fixed byte positions instead of running a regex per value; the
//! calendar check is chrono's. A value becomes the calendar date as written: the time and any
//! zone are validated, then ignored (no time-zone conversion).

use chrono::{NaiveDate, NaiveDateTime};

/// Days from 0001-01-01 (chrono's day 1 of the common era) to 1970-01-01.
const UNIX_EPOCH_DAYS_FROM_CE: i32 = 719_163;

/// Parses date values into days since 1970-01-01 (Parquet `DATE`).
#[derive(Debug, Clone)]
pub enum DateParser {
    Iso,
    Format(String),
}

impl DateParser {
    pub fn new(timestamp_format: Option<&str>) -> Self {
        match timestamp_format {
            Some(f) => DateParser::Format(f.to_string()),
            None => DateParser::Iso,
        }
    }

    /// `value` is already trimmed and non-empty. `None` means it is not a valid date.
    pub fn parse(&self, value: &str) -> Option<i32> {
        match self {
            DateParser::Iso => parse_iso(value.as_bytes()),
            DateParser::Format(format) => NaiveDateTime::parse_from_str(value, format)
                .map(|dt| dt.date())
                .or_else(|_| NaiveDate::parse_from_str(value, format))
                .ok()
                .map(days_since_epoch),
        }
    }
}

pub fn days_since_epoch(date: NaiveDate) -> i32 {
    use chrono::Datelike;
    date.num_days_from_ce() - UNIX_EPOCH_DAYS_FROM_CE
}

pub fn date_from_days(days: i32) -> NaiveDate {
    NaiveDate::from_num_days_from_ce_opt(days + UNIX_EPOCH_DAYS_FROM_CE).unwrap_or_default()
}

/// `YYYY-MM-DD` for a day number.
pub fn format_days(days: i32) -> String {
    date_from_days(days).format("%Y-%m-%d").to_string()
}

fn digits(bytes: &[u8]) -> Option<u32> {
    if bytes.is_empty() || !bytes.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(bytes.iter().fold(0, |n, b| n * 10 + u32::from(b - b'0')))
}

/// Days since 1970-01-01 of a proleptic Gregorian calendar date, `None` if there is no such
/// day. Every source date goes through here, so it is plain arithmetic (the civil-from-days
/// inverse of the well-known era algorithm) rather than a general calendar library call; the
/// tests hold it to chrono's answer for every day of years 0–9999.
fn civil_days(year: i32, month: u32, day: u32) -> Option<i32> {
    let leap = year % 4 == 0 && (year % 100 != 0 || year % 400 == 0);
    let month_days = match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if leap => 29,
        2 => 28,
        _ => return None,
    };
    if day == 0 || day > month_days {
        return None;
    }
    // Years counted from March, so the leap day ends the year.
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let year_of_era = y - era * 400;
    let m = month as i32;
    let day_of_year = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + day as i32 - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    Some(era * 146_097 + day_of_era - 719_468)
}

/// `YYYY-MM-DD`, optionally followed by (` ` | `T`) `HH:MM:SS`, an optional `.fraction` of 1–9
/// digits and an optional zone (`Z`, `±HH:MM`, `±HHMM`).
fn parse_iso(b: &[u8]) -> Option<i32> {
    if b.len() < 10 || b[4] != b'-' || b[7] != b'-' {
        return None;
    }
    let date = civil_days(digits(&b[0..4])? as i32, digits(&b[5..7])?, digits(&b[8..10])?)?;
    if b.len() == 10 {
        return Some(date);
    }
    if !(b[10] == b' ' || b[10] == b'T') || b.len() < 19 || b[13] != b':' || b[16] != b':' {
        return None;
    }
    let (hour, minute, second) = (digits(&b[11..13])?, digits(&b[14..16])?, digits(&b[17..19])?);
    // Second 60 is a leap second, which ISO 8601 allows.
    if hour > 23 || minute > 59 || second > 60 {
        return None;
    }
    let mut rest = &b[19..];
    if let Some(after_dot) = rest.strip_prefix(b".") {
        let n = after_dot.iter().take_while(|c| c.is_ascii_digit()).count();
        if !(1..=9).contains(&n) {
            return None;
        }
        rest = &after_dot[n..];
    }
    match rest {
        [] | [b'Z'] => Some(date),
        [b'+' | b'-', zone @ ..] => {
            let (h, m) = match zone {
                [h1, h2, b':', m1, m2] | [h1, h2, m1, m2] => (digits(&[*h1, *h2])?, digits(&[*m1, *m2])?),
                _ => return None,
            };
            (h <= 23 && m <= 59).then_some(date)
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn iso(s: &str) -> Option<String> {
        DateParser::Iso.parse(s).map(format_days)
    }

    #[test]
    fn calendar_arithmetic_agrees_with_chrono_on_every_day_of_years_0_to_9999() {
        for year in 0..=9999 {
            for month in 0..=13 {
                for day in 0..=32 {
                    let expected = NaiveDate::from_ymd_opt(year, month, day).map(days_since_epoch);
                    assert_eq!(civil_days(year, month, day), expected, "{year}-{month}-{day}");
                }
            }
        }
    }

    #[test]
    fn accepts_every_documented_form() {
        for s in [
            "2024-02-29",
            "2024-02-29 23:59:59",
            "2024-02-29T00:00:00",
            "2024-02-29T12:30:45.1",
            "2024-02-29T12:30:45.123456789",
            "2024-02-29T12:30:45Z",
            "2024-02-29 12:30:45+05:30",
            "2024-02-29T12:30:45.5-0800",
        ] {
            assert_eq!(iso(s).as_deref(), Some("2024-02-29"), "{s}");
        }
    }

    #[test]
    fn date_is_as_written_without_zone_conversion() {
        assert_eq!(iso("2024-03-01T23:30:00-05:00").as_deref(), Some("2024-03-01"));
        assert_eq!(iso("2024-03-01T00:30:00+09:00").as_deref(), Some("2024-03-01"));
    }

    #[test]
    fn rejects_impossible_or_malformed_values() {
        for s in [
            "2023-02-29",
            "2024-13-01",
            "2024-04-31",
            "2024-00-10",
            "24-01-01",
            "2024/01/01",
            "2024-1-01",
            "2024-01-01x",
            "2024-01-01 24:00:00",
            "2024-01-01T10:60:00",
            "2024-01-01T10:00",
            "2024-01-01T10:00:00.",
            "2024-01-01T10:00:00.1234567890",
            "2024-01-01T10:00:00+5",
            "2024-01-01T10:00:00+25:00",
            "2024-01-01T10:00:00 Z",
            "2024-01-01t10:00:00",
            "yesterday",
        ] {
            assert_eq!(iso(s), None, "{s}");
        }
    }

    #[test]
    fn configured_format_replaces_the_iso_rule() {
        let p = DateParser::new(Some("%d/%m/%Y %H:%M"));
        assert_eq!(
            p.parse("29/02/2024 10:15").map(format_days).as_deref(),
            Some("2024-02-29")
        );
        assert_eq!(p.parse("2024-02-29"), None);
        let d = DateParser::new(Some("%Y%m%d"));
        assert_eq!(
            d.parse("20240229").map(format_days).as_deref(),
            Some("2024-02-29")
        );
        assert_eq!(d.parse("20230229"), None);
    }

    #[test]
    fn day_numbers_round_trip() {
        assert_eq!(DateParser::Iso.parse("1970-01-01"), Some(0));
        assert_eq!(DateParser::Iso.parse("1969-12-31"), Some(-1));
        assert_eq!(format_days(19_782), "2024-02-29");
    }
}
