//! What a run learns as it goes (files read, rows counted, dates written, objects deleted):
//! filled in by each stage, and turned into the run's summary even when the run fails midway.

use std::collections::BTreeSet;

use crate::config::Config;
use crate::read::rejects::RejectsWriter;
use crate::summary::{ManifestEntry, RowCounts};

/// Everything a run learns as it goes; becomes the summary even when the run fails midway.
pub(crate) struct RunStats {
    pub(crate) files: Vec<ManifestEntry>,
    pub(crate) bytes_read: u64,
    pub(crate) counts: RowCounts,
    pub(crate) dates_written: BTreeSet<i32>,
    pub(crate) dates_deleted: BTreeSet<String>,
    pub(crate) objects_deleted: Vec<String>,
    pub(crate) bytes_written: u64,
    pub(crate) bytes_spilled: u64,
    pub(crate) table_changed: bool,
    /// The table version the run committed (formats with versions).
    pub(crate) table_version: Option<u64>,
    pub(crate) rejects: RejectsWriter,
}

impl RunStats {
    pub(crate) fn new(config: &Config) -> Self {
        RunStats {
            files: Vec::new(),
            bytes_read: 0,
            counts: RowCounts::default(),
            dates_written: BTreeSet::new(),
            dates_deleted: BTreeSet::new(),
            objects_deleted: Vec::new(),
            bytes_written: 0,
            bytes_spilled: 0,
            table_changed: false,
            table_version: None,
            rejects: RejectsWriter::new(config.run.spill_dir.clone()),
        }
    }
}
