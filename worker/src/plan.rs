//! Plan: compare the source listing with the state and decide which files a run processes
//! (SPEC §4).

use serde::Serialize;

use crate::config::{Mode, OnChangedFile};
use crate::error::{Error, Result};
use crate::state::{FileRecord, State};
use crate::storage::ObjectMeta;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FileStatus {
    New,
    Changed,
    Unchanged,
}

#[derive(Debug, Clone, Serialize)]
pub struct PlannedFile {
    #[serde(flatten)]
    pub meta: ObjectMeta,
    pub status: FileStatus,
    /// Whether the run reads it.
    pub process: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct Plan {
    pub mode: Mode,
    /// Every source file, sorted by key.
    pub files: Vec<PlannedFile>,
    /// Keys in the state that are no longer in the source.
    pub deleted: Vec<String>,
}

impl Plan {
    pub fn to_process(&self) -> impl Iterator<Item = &ObjectMeta> {
        self.files.iter().filter(|f| f.process).map(|f| &f.meta)
    }

    pub fn count(&self, status: FileStatus) -> usize {
        self.files.iter().filter(|f| f.status == status).count()
    }
}

/// A file changed if its size or ETag (local: modification time) differs from the state's record.
pub fn has_changed(meta: &ObjectMeta, record: &FileRecord) -> bool {
    meta.size != record.size || (meta.etag.is_some() && record.etag.is_some() && meta.etag != record.etag)
}

pub fn plan(
    mode: Mode,
    mut listing: Vec<ObjectMeta>,
    state: &State,
    on_changed: OnChangedFile,
) -> Result<Plan> {
    listing.sort_by(|a, b| a.key.cmp(&b.key));
    let known = state.by_key();
    let mut files = Vec::with_capacity(listing.len());
    for meta in listing {
        let status = match known.get(meta.key.as_str()) {
            None => FileStatus::New,
            Some(record) if has_changed(&meta, record) => FileStatus::Changed,
            Some(_) => FileStatus::Unchanged,
        };
        let process = match (mode, status) {
            (Mode::Full, _) | (_, FileStatus::New) => true,
            (Mode::Incremental, FileStatus::Changed) => on_changed == OnChangedFile::Reprocess,
            (Mode::Incremental, FileStatus::Unchanged) => false,
        };
        files.push(PlannedFile {
            meta,
            status,
            process,
        });
    }
    let listed: std::collections::BTreeSet<&str> = files.iter().map(|f| f.meta.key.as_str()).collect();
    let deleted = known
        .keys()
        .filter(|k| !listed.contains(*k))
        .map(|k| k.to_string())
        .collect();
    let plan = Plan { mode, files, deleted };

    if mode == Mode::Incremental {
        let changed: Vec<&str> = plan
            .files
            .iter()
            .filter(|f| f.status == FileStatus::Changed)
            .map(|f| f.meta.key.as_str())
            .collect();
        if !changed.is_empty() {
            let shown = changed.iter().take(20).copied().collect::<Vec<_>>().join(", ");
            let more = if changed.len() > 20 {
                format!(" and {} more", changed.len() - 20)
            } else {
                String::new()
            };
            match on_changed {
                OnChangedFile::Reprocess => tracing::warn!(
                    "{} loaded file(s) changed since they were loaded and will be re-processed \
                     (their new rows win ties): {shown}{more}",
                    changed.len()
                ),
                OnChangedFile::Ignore => tracing::warn!(
                    "{} loaded file(s) changed and are ignored (run.on_changed_file = ignore): {shown}{more}",
                    changed.len()
                ),
                OnChangedFile::Fail => {
                    return Err(Error::Other(format!(
                        "{} loaded file(s) changed since they were loaded: {shown}{more}; \
                         run.on_changed_file = fail stops here (set it to reprocess or ignore, \
                         or run --mode full)",
                        changed.len()
                    )));
                }
            }
        }
    }
    Ok(plan)
}
