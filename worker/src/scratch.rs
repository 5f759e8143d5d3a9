//! The run's scratch folder on local disk (`run.spill_dir`): spilled rows and encoded objects
//! before their upload. The stages that need disk (routing, merging, writing) take their files
//! here, so one setting moves them all and the folder goes when the run ends.

use std::fs::File;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// The run's spill folder, created on first use under `run.spill_dir` (or the system's
/// temporary folder) and removed with everything in it when the run ends.
#[derive(Debug)]
pub struct SpillDir {
    parent: Option<PathBuf>,
    dir: Mutex<Option<tempfile::TempDir>>,
    next: AtomicU64,
    written: AtomicU64,
}

impl SpillDir {
    pub fn new(parent: Option<PathBuf>) -> Arc<Self> {
        Arc::new(SpillDir {
            parent,
            dir: Mutex::new(None),
            next: AtomicU64::new(0),
            written: AtomicU64::new(0),
        })
    }

    /// Counts `n` bytes written to a spill file.
    pub(crate) fn count_written(&self, n: u64) {
        self.written.fetch_add(n, Ordering::Relaxed);
    }

    /// Bytes written to spill files so far.
    pub fn bytes_written(&self) -> u64 {
        self.written.load(Ordering::Relaxed)
    }

    /// A new scratch file in the spill folder, removed when its path is dropped.
    pub fn create_file(&self, what: &str) -> std::io::Result<(File, tempfile::TempPath)> {
        let path = self.new_path(what)?;
        let file = File::create(&path)?;
        Ok((file, tempfile::TempPath::try_from_path(path)?))
    }

    /// A new file name in the spill folder.
    pub(crate) fn new_path(&self, what: &str) -> std::io::Result<PathBuf> {
        let mut dir = self.dir.lock().unwrap_or_else(|e| e.into_inner());
        if dir.is_none() {
            let mut builder = tempfile::Builder::new();
            builder.prefix("lakeload-spill-");
            *dir = Some(match &self.parent {
                Some(parent) => {
                    std::fs::create_dir_all(parent)?;
                    builder.tempdir_in(parent)?
                }
                None => builder.tempdir()?,
            });
        }
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        Ok(dir
            .as_ref()
            .expect("just created")
            .path()
            .join(format!("{what}-{n}.rows")))
    }
}
