//! `_lakeload/rejects/<run_id>.jsonl.gz`: one JSON object per rejected line (SPEC §6).

use std::io::Write;

use bytes::Bytes;
use flate2::Compression;
use flate2::write::GzEncoder;
use serde::{Deserialize, Serialize};

use crate::row::{Reject, escape_invalid_utf8};

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

pub fn rejects_key(run_id: &str) -> String {
    format!("_lakeload/rejects/{run_id}.jsonl.gz")
}

/// Collects rejects (compressed as they arrive, so they stay small in memory).
pub struct RejectsWriter {
    encoder: GzEncoder<Vec<u8>>,
    count: u64,
}

impl Default for RejectsWriter {
    fn default() -> Self {
        RejectsWriter {
            encoder: GzEncoder::new(Vec::new(), Compression::default()),
            count: 0,
        }
    }
}

impl RejectsWriter {
    pub fn add(&mut self, file: &str, rejects: &[Reject]) {
        for r in rejects {
            let record = RejectRecord {
                file: file.to_string(),
                line: r.line,
                reason: r.reason.as_str().to_string(),
                detail: r.detail.clone(),
                raw: escape_invalid_utf8(&r.raw),
            };
            // Writing to a Vec cannot fail.
            let _ = serde_json::to_writer(&mut self.encoder, &record);
            let _ = self.encoder.write_all(b"\n");
            self.count += 1;
        }
    }

    pub fn count(&self) -> u64 {
        self.count
    }

    pub fn finish(self) -> Bytes {
        Bytes::from(self.encoder.finish().unwrap_or_default())
    }
}
