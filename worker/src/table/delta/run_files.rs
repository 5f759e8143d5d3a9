//! The source files a run processed, kept beside its Delta commit rather than in it: a daily
//! full run over 20,000 files would put megabytes into every `commitInfo`, and every reader of
//! the log (and every run, replaying up to 99 commits after a checkpoint) would carry them.
//! The list is written once, gzip-compressed JSON, under `_lakeload/files/<sha256>.json.gz`,
//! named by the hash of its contents (so writing it again is a no-op, and a retried or
//! concurrent write cannot change it), and the commit records its [`Digest`]: the count, the
//! rows, the hash and the path. Reading it back checks all of them.

use std::io::{Read, Write};

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::error::{Error, Result};
use crate::state::FileRecord;
use crate::storage::{DynStorage, PutCondition, StorageError};

/// What a commit records of its run's file list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Digest {
    /// Files in the list.
    pub count: usize,
    /// Rows they contributed.
    pub rows: u64,
    /// SHA-256 of the list's JSON, hex.
    pub sha256: String,
    /// Where the list is, relative to the table root.
    pub path: String,
}

fn path_of(sha256: &str) -> String {
    format!("{}/files/{sha256}.json.gz", crate::bookkeeping::META_DIR)
}

/// Writes `files` (if not already there) and returns their digest.
pub async fn write(storage: &DynStorage, files: &[FileRecord]) -> Result<Digest> {
    let json = serde_json::to_vec(files).map_err(Error::other)?;
    let sha256 = hex(&Sha256::digest(&json));
    let path = path_of(&sha256);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(&json).map_err(Error::other)?;
    let body = gz.finish().map_err(Error::other)?;
    match storage
        .put_if(&path, bytes::Bytes::from(body), PutCondition::IfAbsent)
        .await
    {
        // Already there: the same bytes, as the name is their hash.
        Ok(_) | Err(StorageError::PreconditionFailed { .. }) => {}
        Err(e) => return Err(e.into()),
    }
    Ok(Digest {
        count: files.len(),
        rows: files.iter().map(|f| f.rows).sum(),
        sha256,
        path,
    })
}

/// The list a digest names, checked against it.
pub async fn read(storage: &DynStorage, digest: &Digest) -> Result<Vec<FileRecord>> {
    let url = storage.url(&digest.path);
    let Some((body, _)) = storage.get(&digest.path).await? else {
        return Err(Error::Other(format!(
            "{url}, the list of source files a Delta commit names, is missing; the state cannot \
             be rebuilt from the log without it. Restore it, or run a full refresh"
        )));
    };
    let mut json = Vec::new();
    flate2::read::GzDecoder::new(&body[..])
        .read_to_end(&mut json)
        .map_err(|e| Error::Other(format!("{url} is not gzip: {e}")))?;
    if hex(&Sha256::digest(&json)) != digest.sha256 {
        return Err(Error::Other(format!(
            "{url} does not hash to the digest its commit records (another tool changed it)"
        )));
    }
    let files: Vec<FileRecord> =
        serde_json::from_slice(&json).map_err(|e| Error::Other(format!("{url} is not a file list: {e}")))?;
    if files.len() != digest.count {
        return Err(Error::Other(format!(
            "{url} lists {} files, its commit {}",
            files.len(),
            digest.count
        )));
    }
    Ok(files)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn record(key: &str, rows: u64) -> FileRecord {
        FileRecord {
            key: key.into(),
            size: 10,
            etag: Some("e".into()),
            last_modified: chrono::DateTime::from_timestamp(1_700_000_000, 0).unwrap(),
            rows,
            rows_rejected: 0,
            dates: vec!["2024-01-01".into()],
            run_id: "r".into(),
        }
    }

    #[tokio::test]
    async fn a_list_reads_back_as_written_and_a_changed_one_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let storage: DynStorage = Arc::new(crate::storage::LocalStorage::new(dir.path().to_path_buf()));
        let files = vec![record("a.gz", 3), record("b.gz", 4)];
        let digest = write(&storage, &files).await.unwrap();
        assert_eq!((digest.count, digest.rows), (2, 7));
        assert!(digest.path.starts_with("_lakeload/files/") && digest.path.contains(&digest.sha256));
        assert_eq!(
            write(&storage, &files).await.unwrap(),
            digest,
            "written again: the same"
        );
        assert_eq!(read(&storage, &digest).await.unwrap(), files);

        let other = write(&storage, &[record("c.gz", 1)]).await.unwrap();
        let forged = Digest {
            path: other.path.clone(),
            ..digest.clone()
        };
        assert!(
            read(&storage, &forged)
                .await
                .unwrap_err()
                .to_string()
                .contains("hash")
        );
        storage.delete(&digest.path).await.unwrap();
        assert!(
            read(&storage, &digest)
                .await
                .unwrap_err()
                .to_string()
                .contains("missing")
        );
    }
}
