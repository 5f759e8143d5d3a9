//! `lakeload generate`: realistic synthetic source files, for the demo, tests and benchmarks.
//!
//! Each file "lands" on a day and mostly holds that day's events, with some late rows for
//! earlier days, re-sent rows (same key, newer values), and optionally a few bad lines of
//! every reject kind and blank lines.

use std::io::Write;
use std::path::{Path, PathBuf};

use chrono::{Days, NaiveDate};
use flate2::Compression;
use flate2::write::GzEncoder;

#[derive(Debug, Clone)]
pub struct GenerateOptions {
    pub dir: PathBuf,
    pub files: usize,
    pub rows_per_file: usize,
    /// Files landing per day: file `n` lands on `start + n / files_per_day`.
    pub files_per_day: usize,
    pub start: NaiveDate,
    pub seed: u64,
    /// Share of rows that re-send an earlier key with new values.
    pub duplicate_ratio: f64,
    /// Share of lines that are bad (wrong field count, bad date, no partition date, bad UTF-8).
    pub bad_ratio: f64,
    /// Numbering of the first file, so later batches do not overwrite earlier ones.
    pub first_file: usize,
    /// Distinct customers; each has up to `sessions` sessions a day, so keys per day ≤
    /// sessions × customers.
    pub customers: u64,
    /// Sessions per customer and day.
    pub sessions: u64,
    /// When not 0, landing days wrap around after this many days (1: every row on one date).
    pub days: usize,
    /// Characters of filler added to each line's second field: wide rows.
    pub pad: usize,
    /// When not 0, every row's date is one of this many days from `start`, whatever day its
    /// file lands on: late data, every file carrying rows of every date.
    pub span: u64,
}

impl Default for GenerateOptions {
    fn default() -> Self {
        GenerateOptions {
            dir: PathBuf::from("source"),
            files: 10,
            rows_per_file: 10_000,
            files_per_day: 4,
            start: NaiveDate::from_ymd_opt(2026, 11, 1).expect("valid date"),
            seed: 42,
            duplicate_ratio: 0.05,
            bad_ratio: 0.001,
            first_file: 0,
            customers: 20_000,
            sessions: 10,
            days: 0,
            pad: 0,
            span: 0,
        }
    }
}

#[derive(Debug, Default, Clone, Copy)]
pub struct GenerateReport {
    pub files: usize,
    pub lines: u64,
    pub bytes: u64,
}

/// SplitMix64: tiny, fast and reproducible from a seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    fn chance(&mut self, p: f64) -> bool {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64 <= p && p > 0.0
    }
}

const EVENTS: &[&str] = &["view", "click", "add_to_cart", "purchase", "refund"];

/// A key that may be re-sent later: (customer, date, session).
#[derive(Clone)]
struct SentKey {
    customer: u64,
    date: NaiveDate,
    session: u64,
}

pub fn generate(options: &GenerateOptions) -> std::io::Result<GenerateReport> {
    let mut rng = Rng(options.seed ^ (options.first_file as u64).wrapping_mul(0x2545_F491_4F6C_DD1D));
    let mut recent: Vec<SentKey> = Vec::with_capacity(4096);
    let mut report = GenerateReport::default();
    let mut line = String::with_capacity(256 + options.pad);
    // Wide rows take a window of this random text, at a random offset.
    let filler: String = match options.pad {
        0 => String::new(),
        pad => (0..pad + 4096)
            .map(|_| (b'a' + rng.below(26) as u8) as char)
            .collect(),
    };
    for i in 0..options.files {
        let index = options.first_file + i;
        let mut day_offset = (index / options.files_per_day.max(1)) as u64;
        if options.days > 0 {
            day_offset %= options.days as u64;
        }
        let landing = options.start + Days::new(day_offset);
        let path = options
            .dir
            .join(landing.format("%Y/%m/%d").to_string())
            .join(format!("events-{index:06}.gz"));
        std::fs::create_dir_all(path.parent().unwrap_or(Path::new(".")))?;
        let mut out = GzEncoder::new(
            std::io::BufWriter::new(std::fs::File::create(&path)?),
            Compression::fast(),
        );
        for _ in 0..options.rows_per_file {
            line.clear();
            let key = if !recent.is_empty() && rng.chance(options.duplicate_ratio) {
                recent[rng.below(recent.len() as u64) as usize].clone()
            } else {
                // Most rows are for the landing day; some arrive late for an earlier day.
                let late = if rng.chance(0.1) {
                    rng.below(day_offset.min(7) + 1)
                } else {
                    0
                };
                let date = match options.span {
                    0 => landing - Days::new(late),
                    span => options.start + Days::new(rng.below(span)),
                };
                let key = SentKey {
                    customer: rng.below(options.customers),
                    date,
                    // Few sessions per customer and day: some keys recur by chance, as re-sent rows do.
                    session: rng.below(options.sessions.max(1)),
                };
                if recent.len() < 4096 {
                    recent.push(key.clone());
                } else {
                    let slot = rng.below(4096) as usize;
                    recent[slot] = key.clone();
                }
                key
            };
            let (h, m, s) = (rng.below(24), rng.below(60), rng.below(60));
            let date = key.date.format("%Y-%m-%d");
            let mut event = EVENTS[rng.below(EVENTS.len() as u64) as usize].to_string();
            if options.pad > 0 {
                let at = rng.below(4096) as usize;
                event.push('-');
                event.push_str(&filler[at..at + options.pad]);
            }
            let product = rng.below(5_000);
            let cents = rng.below(100_000);
            // An empty field now and then: it becomes NULL.
            let coupon = if rng.chance(0.3) {
                String::new()
            } else {
                format!("SAVE{}", rng.below(50))
            };
            use std::fmt::Write as _;
            let _ = write!(
                line,
                "C{:06}|{event}|P{product:05}|{}.{:02}|{coupon}|{date}T{h:02}:{m:02}:{s:02}Z|{date}|S{:08}",
                key.customer,
                cents / 100,
                cents % 100,
                key.session
            );
            if rng.chance(options.bad_ratio) {
                out.write_all(&corrupt(&line, &mut rng))?;
            } else {
                out.write_all(line.as_bytes())?;
            }
            out.write_all(b"\n")?;
            report.lines += 1;
            if rng.chance(options.bad_ratio / 2.0) {
                out.write_all(b"\n")?;
                report.lines += 1;
            }
        }
        out.finish()?.flush()?;
        report.files += 1;
        report.bytes += std::fs::metadata(&path)?.len();
    }
    Ok(report)
}

/// Turns a good line into one bad line of a random kind.
fn corrupt(line: &str, rng: &mut Rng) -> Vec<u8> {
    let mut fields: Vec<String> = line.split('|').map(str::to_string).collect();
    match rng.below(4) {
        0 => {
            fields.pop();
        }
        // February 30th: well-formed, but not a calendar date.
        1 => fields[6] = format!("{}-02-30", &fields[6][..4]),
        2 => fields[6].clear(),
        _ => {
            // A Latin-1 byte in a UTF-8 file.
            let mut bytes = fields.join("|").into_bytes();
            bytes.splice(1..1, [0xE9]);
            return bytes;
        }
    }
    fields.join("|").into_bytes()
}
