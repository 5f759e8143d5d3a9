//! The source files rows came from, by the id a row's lineage records: which file and when it
//! was modified decide which of two rows with one key is the latest (SPEC §2).

use std::sync::Arc;

/// A source file as the lineage columns record it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileInfo {
    pub key: Arc<str>,
    /// `_source_modified`, microseconds since the Unix epoch (UTC).
    pub modified_micros: i64,
}

/// The files rows refer to: the run's source files (shared, read-only), then files named by
/// rows read back from the table for this date (local to one merge).
#[derive(Debug, Clone)]
pub struct FileTable {
    shared: Arc<[FileInfo]>,
    local: Vec<FileInfo>,
}

impl FileTable {
    pub fn new(shared: Arc<[FileInfo]>) -> Self {
        FileTable {
            shared,
            local: Vec::new(),
        }
    }

    /// How many file ids there are.
    pub fn len(&self) -> usize {
        self.shared.len() + self.local.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn get(&self, id: u32) -> &FileInfo {
        let id = id as usize;
        match self.shared.get(id) {
            Some(f) => f,
            None => &self.local[id - self.shared.len()],
        }
    }

    /// The id of a file named by a stored row, adding it if new.
    pub fn intern(&mut self, key: &str, modified_micros: i64) -> u32 {
        let found = self
            .local
            .iter()
            .position(|f| f.modified_micros == modified_micros && &*f.key == key);
        let index = found.unwrap_or_else(|| {
            self.local.push(FileInfo {
                key: key.into(),
                modified_micros,
            });
            self.local.len() - 1
        });
        (self.shared.len() + index) as u32
    }
}
