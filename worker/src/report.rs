//! Human-readable output: the short table printed at the end of a run.

use crate::summary::RunSummary;

/// `1234567` → `1,234,567`.
pub fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// `1536` → `1.5 KiB`.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

pub fn format_summary(s: &RunSummary) -> String {
    let c = &s.counts;
    let width = [
        c.rows_read,
        c.rows_inserted,
        c.rows_updated,
        c.rows_superseded,
        c.rows_rejected,
        c.rows_blank,
    ]
    .iter()
    .map(|n| thousands(*n).len())
    .max()
    .unwrap_or(1);
    let row = |label: &str, n: u64| format!("    {label:<12} {:>width$}\n", thousands(n));
    let mut out = format!(
        "lakeload run {} ({}) {} in {:.1}s\n",
        s.run_id, s.mode, s.status, s.duration_seconds
    );
    out += &format!(
        "  files read     {} ({})\n",
        thousands(s.files.len() as u64),
        bytes(s.bytes_read)
    );
    out += &format!("  rows read      {:>width$}\n", thousands(c.rows_read));
    out += &row("inserted", c.rows_inserted);
    out += &row("updated", c.rows_updated);
    out += &row("superseded", c.rows_superseded);
    out += &row("rejected", c.rows_rejected);
    out += &row("blank", c.rows_blank);
    out += &format!(
        "  dates          {} written, {} deleted ({})\n",
        s.dates_written.len(),
        s.dates_deleted.len(),
        bytes(s.bytes_written)
    );
    out += &format!("  table          {}\n", s.target_url);
    out += &format!(
        "  memory         {} ({}){}\n",
        bytes(s.memory_limit),
        s.memory_limit_chosen,
        if s.bytes_spilled > 0 {
            format!(", {} spilled to disk", bytes(s.bytes_spilled))
        } else {
            String::new()
        }
    );
    if let Some(url) = &s.rejects_url {
        out += &format!("  rejects        {url}\n");
    }
    if let Some(e) = &s.error {
        out += &format!("  error          {e}\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_read_well() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1_234_567), "1,234,567");
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(1536), "1.5 KiB");
    }
}
