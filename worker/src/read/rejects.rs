//! Rejected lines: why a line was rejected (SPEC §2), and the run's rejects file,
//! `_lakeload/rejects/<run_id>.jsonl.gz`, one JSON object per rejected line (SPEC §6).

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::PathBuf;

use flate2::Compression;
use flate2::write::GzEncoder;
use serde::{Deserialize, Serialize};

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

/// One line of the rejects file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RejectRecord {
    pub file: String,
    pub line: u64,
    pub reason: String,
    pub detail: String,
    /// The line's text; invalid UTF-8 bytes are written as `\xNN`.
    pub raw: String,
}

/// Collects rejects, compressed as they arrive into a scratch file (in `run.spill_dir`), so
/// a run with millions of bad lines holds none of them in memory.
pub struct RejectsWriter {
    spill_dir: Option<PathBuf>,
    encoder: Option<(GzEncoder<BufWriter<File>>, tempfile::TempPath)>,
    count: u64,
}

impl RejectsWriter {
    pub fn new(spill_dir: Option<PathBuf>) -> Self {
        RejectsWriter {
            spill_dir,
            encoder: None,
            count: 0,
        }
    }

    pub fn add(&mut self, file: &str, rejects: &[Reject]) -> std::io::Result<()> {
        if rejects.is_empty() {
            return Ok(());
        }
        let (encoder, _) = match &mut self.encoder {
            Some(open) => open,
            None => {
                let scratch = match &self.spill_dir {
                    Some(dir) => {
                        std::fs::create_dir_all(dir)?;
                        tempfile::NamedTempFile::with_prefix_in(".lakeload-tmp-rejects-", dir)?
                    }
                    None => tempfile::NamedTempFile::with_prefix(".lakeload-tmp-rejects-")?,
                };
                let (file, path) = scratch.into_parts();
                self.encoder
                    .insert((GzEncoder::new(BufWriter::new(file), Compression::default()), path))
            }
        };
        for r in rejects {
            let record = RejectRecord {
                file: file.to_string(),
                line: r.line,
                reason: r.reason.as_str().to_string(),
                detail: r.detail.clone(),
                raw: escape_invalid_utf8(&r.raw),
            };
            serde_json::to_writer(&mut *encoder, &record)?;
            encoder.write_all(b"\n")?;
            self.count += 1;
        }
        Ok(())
    }

    pub fn count(&self) -> u64 {
        self.count
    }

    /// The finished `.jsonl.gz` scratch file (removed when the path is dropped), to be
    /// uploaded from disk; `None` when there was no reject.
    pub fn finish(self) -> std::io::Result<Option<tempfile::TempPath>> {
        let Some((encoder, path)) = self.encoder else {
            return Ok(None);
        };
        let file = encoder.finish()?.into_inner().map_err(|e| e.into_error())?;
        file.sync_data()?;
        Ok(Some(path))
    }
}

/// Deflate expands a byte to at most 1032 bytes, and a line takes at least one byte: so a
/// gzip file of `n` bytes holds at most `1032 n + 1` lines. This bounds the lines still to come.
const MAX_LINES_PER_GZIP_BYTE: u64 = 1032;

/// `run.max_reject_ratio`, checked as rows stream in: the run stops as soon as the ratio can
/// no longer end under the limit, however the files still being read turn out.
#[derive(Debug)]
pub struct RejectGate {
    limit: f64,
    rejected: u64,
    /// Lines of the files read to the end.
    lines_done: u64,
    /// Upper bound on the lines of the files not read to the end yet.
    lines_pending_bound: u64,
}

impl RejectGate {
    /// `sizes`: the compressed sizes of every file the run reads.
    pub fn new(limit: f64, sizes: impl IntoIterator<Item = u64>) -> Self {
        RejectGate {
            limit,
            rejected: 0,
            lines_done: 0,
            lines_pending_bound: sizes.into_iter().map(Self::bound).fold(0, u64::saturating_add),
        }
    }

    fn bound(size: u64) -> u64 {
        size.saturating_mul(MAX_LINES_PER_GZIP_BYTE).saturating_add(1)
    }

    pub fn rejected(&mut self, n: u64) {
        self.rejected += n;
    }

    /// A file of `size` compressed bytes was read to the end: `lines` is now exact.
    pub fn file_done(&mut self, size: u64, lines: u64) {
        self.lines_pending_bound = self.lines_pending_bound.saturating_sub(Self::bound(size));
        self.lines_done += lines;
    }

    /// Whether the final ratio is certain to exceed the limit.
    pub fn certainly_exceeded(&self) -> bool {
        let most_lines = self.lines_done.saturating_add(self.lines_pending_bound);
        self.rejected > 0 && self.rejected as f64 > self.limit * most_lines as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_gate_stops_only_once_the_outcome_is_certain() {
        // Two files of 10 bytes; the first, all bad, has 100 lines.
        let mut gate = RejectGate::new(0.5, [10, 10]);
        gate.rejected(100);
        assert!(
            !gate.certainly_exceeded(),
            "the second file may hold 10,321 good lines"
        );
        gate.file_done(10, 100);
        assert!(!gate.certainly_exceeded());
        gate.file_done(10, 50);
        assert!(gate.certainly_exceeded(), "100 of 150 > 0.5");
        let mut fine = RejectGate::new(0.9, [10]);
        fine.rejected(1);
        fine.file_done(10, 100);
        assert!(!fine.certainly_exceeded());
        // A tiny remaining file cannot rescue a huge reject count.
        let mut early = RejectGate::new(0.01, [1_000_000, 10]);
        early.rejected(900_000);
        early.file_done(1_000_000, 1_000_000);
        assert!(early.certainly_exceeded(), "10 bytes hold at most 10,321 lines");
    }

    #[test]
    fn rejects_are_spilled_and_read_back() {
        use std::io::Read;
        let mut w = RejectsWriter::new(None);
        assert!(w.add("f.gz", &[]).is_ok());
        let reject = Reject {
            line: 3,
            reason: RejectReason::FieldCount,
            detail: "expected 8 fields".into(),
            raw: b"a|\xff".to_vec(),
        };
        w.add("f.gz", &[reject.clone(), reject]).unwrap();
        assert_eq!(w.count(), 2);
        let path = w.finish().unwrap().unwrap();
        let bytes = std::fs::read(&path).unwrap();
        let mut text = String::new();
        flate2::read::GzDecoder::new(&bytes[..])
            .read_to_string(&mut text)
            .unwrap();
        let first: RejectRecord = serde_json::from_str(text.lines().next().unwrap()).unwrap();
        assert_eq!((first.line, first.raw.as_str()), (3, "a|\\xFF"));
        assert_eq!(text.lines().count(), 2);
        assert!(RejectsWriter::new(None).finish().unwrap().is_none());
    }

    #[test]
    fn invalid_bytes_are_escaped() {
        assert_eq!(escape_invalid_utf8(b"ok \xc3\xa9 \xff\xfe!"), "ok é \\xFF\\xFE!");
    }
}
