//! How long a Delta table keeps the files its versions no longer read: its
//! `delta.deletedFileRetentionDuration` (a Delta interval), 7 days unless it sets one. Versions
//! within it stay readable (vacuum keeps their files), and tombstones older than it leave the
//! snapshot and the checkpoints, so years of history do not grow them without bound.

use std::time::Duration;

use super::log::Metadata;

/// How long a table keeps removed files when it does not say: Delta's default for
/// `delta.deletedFileRetentionDuration`.
pub const DEFAULT_RETENTION: Duration = Duration::from_secs(7 * 86_400);

/// The table property that sets the retention.
pub const RETENTION_PROPERTY: &str = "delta.deletedFileRetentionDuration";

/// A Delta interval (`interval 1 week`, `interval 168 hours`, `30 days`, `1 day 12 hours`) as
/// a duration.
pub fn parse_interval(text: &str) -> std::result::Result<Duration, String> {
    let lower = text.trim().to_ascii_lowercase();
    let body = lower.strip_prefix("interval").unwrap_or(&lower);
    let words: Vec<&str> = body.split_whitespace().collect();
    if words.is_empty() || !words.len().is_multiple_of(2) {
        return Err(format!("{text:?}: expected e.g. `interval 7 days`"));
    }
    let mut total = Duration::ZERO;
    for pair in words.chunks(2) {
        let n: u64 = pair[0]
            .parse()
            .map_err(|_| format!("{text:?}: {:?} is not a whole number", pair[0]))?;
        let unit_seconds: f64 = match pair[1].trim_end_matches('s') {
            "microsecond" => 1e-6,
            "millisecond" => 1e-3,
            "second" => 1.0,
            "minute" => 60.0,
            "hour" => 3600.0,
            "day" => 86_400.0,
            "week" => 7.0 * 86_400.0,
            other => return Err(format!("{text:?}: unknown unit {other:?}")),
        };
        total += Duration::from_secs_f64(n as f64 * unit_seconds);
    }
    Ok(total)
}

/// The retention `metadata` sets, or Delta's default; `Err` names a value that is not an
/// interval.
pub fn of(metadata: Option<&Metadata>) -> std::result::Result<Duration, String> {
    match metadata.and_then(|m| m.configuration.get(RETENTION_PROPERTY)) {
        None => Ok(DEFAULT_RETENTION),
        Some(value) => parse_interval(value),
    }
}
