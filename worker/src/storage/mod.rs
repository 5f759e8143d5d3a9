//! Object storage behind one small trait: S3 (and S3-compatible stores) or a local folder.
//!
//! Keys are `/`-separated paths relative to the storage root (the URL's prefix or folder).
//! Writes are whole-object replacements; `put_if` and `delete_if` add the conditional writes
//! that fence a run's writes (create-if-absent and compare-and-swap on the ETag): the lock, the
//! state and every table object are written only if they are still what the run last saw.

mod local;
mod resume;
mod s3;

use std::io::Read;
use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use chrono::{DateTime, Utc};

pub use local::LocalStorage;
pub use resume::{ResumingReader, StoreReadError};
pub use s3::{AwsConfig, S3Storage};

use crate::location::Location;

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("{url}: not found")]
    NotFound { url: String },
    /// A conditional write lost: the object exists (`IfAbsent`) or changed (`IfMatch`).
    #[error("{url}: precondition failed (the object was created or changed by someone else)")]
    PreconditionFailed { url: String },
    #[error("{op} {url}: {message}")]
    Other {
        op: &'static str,
        url: String,
        message: String,
    },
}

/// What a listing or a HEAD knows about an object.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ObjectMeta {
    /// Path relative to the storage root, `/`-separated.
    pub key: String,
    pub size: u64,
    /// S3: the ETag without quotes. Local: modification time, size and change time (ctime):
    /// any rewrite changes the ctime, even one that restores the modification time.
    pub etag: Option<String>,
    /// Truncated to microseconds: the precision the table's `_source_modified` column keeps,
    /// so order comparisons agree between fresh and stored rows.
    pub last_modified: DateTime<Utc>,
}

/// Condition for [`Storage::put_if`].
#[derive(Debug, Clone)]
pub enum PutCondition {
    /// Only if no object exists under the key (S3 `If-None-Match: *`).
    IfAbsent,
    /// Only if the object's current ETag is this one (S3 `If-Match`).
    IfMatch(String),
}

/// A streaming reader over an object's bytes, to be read on a blocking thread (e.g. in
/// `spawn_blocking`): an S3 body arrives through a channel filled by the runtime.
pub struct ObjectReader(pub Box<dyn Read + Send>);

impl ObjectReader {
    pub fn into_blocking(self) -> Box<dyn Read + Send> {
        self.0
    }
}

pub type StorageResult<T> = Result<T, StorageError>;

#[async_trait::async_trait]
pub trait Storage: Send + Sync + std::fmt::Debug {
    /// The root of this storage, as a URL (for messages and summaries).
    fn root(&self) -> &Location;

    /// The service behind this storage (an S3 endpoint, or `local folder`), for messages
    /// about what the store guarantees.
    fn endpoint(&self) -> String {
        "local folder".into()
    }

    /// The URL of one key.
    fn url(&self, key: &str) -> String {
        self.root().join(key)
    }

    /// Every object under `prefix` (`""` = everything), at any depth, paging as needed.
    async fn list(&self, prefix: &str) -> StorageResult<Vec<ObjectMeta>>;

    async fn head(&self, key: &str) -> StorageResult<Option<ObjectMeta>>;

    /// The whole object, or `None` if it does not exist.
    async fn get(&self, key: &str) -> StorageResult<Option<(Bytes, ObjectMeta)>>;

    /// Streams the object.
    async fn open(&self, key: &str) -> StorageResult<ObjectReader> {
        self.open_at(key, 0, None).await
    }

    /// Streams the object from byte `offset` on; with `etag`, only if it is still that
    /// version (`PreconditionFailed` otherwise), so a resumed read never splices two versions.
    async fn open_at(&self, key: &str, offset: u64, etag: Option<&str>) -> StorageResult<ObjectReader>;

    /// Replaces the object as a whole (readers see the old or the new object, never a mix).
    async fn put(&self, key: &str, body: Bytes) -> StorageResult<()>;

    /// A conditional write; returns the new ETag. A write whose first attempt succeeded but
    /// whose reply was lost is recognised as this caller's own (the object holds exactly
    /// `body`) instead of being reported as `PreconditionFailed`.
    async fn put_if(&self, key: &str, body: Bytes, condition: PutCondition) -> StorageResult<String>;

    /// Writes the contents of the local file `path` as the object: unconditionally (`None`,
    /// like [`Storage::put`]) or under `condition` (like [`Storage::put_if`], own lost replies
    /// recognised alike). Large objects are sent without being read into memory whole.
    async fn put_file(&self, key: &str, path: &Path, condition: Option<PutCondition>) -> StorageResult<()> {
        put_file_in_memory(self, key, path, condition).await
    }

    /// Removes the object; removing a missing object is not an error.
    async fn delete(&self, key: &str) -> StorageResult<()>;

    /// Removes the object only if its ETag is still `etag` (`PreconditionFailed` otherwise);
    /// a missing object is not an error.
    async fn delete_if(&self, key: &str, etag: &str) -> StorageResult<()>;

    /// The store's own clock now, as far as its recent replies tell (`None`: unknown). Lock
    /// leases are judged by it, so a contender's skewed clock cannot take a live lock.
    fn store_now(&self) -> Option<DateTime<Utc>> {
        None
    }

    /// Waits for background clean-up, such as aborting multipart uploads that were cut short.
    async fn settle(&self) {}
}

pub type DynStorage = Arc<dyn Storage>;

/// Copies object `key` into the local file `out` (streamed, never whole in memory, resuming a
/// broken read) and returns the version copied; `None` if there is no object.
pub async fn get_to_file(
    storage: &DynStorage,
    key: &str,
    out: std::fs::File,
) -> StorageResult<Option<ObjectMeta>> {
    // An object replaced between the HEAD and the GET is looked up again.
    for _ in 0..3 {
        let Some(meta) = storage.head(key).await? else {
            return Ok(None);
        };
        let reader = match storage.open_at(key, 0, meta.etag.as_deref()).await {
            Ok(reader) => reader,
            Err(StorageError::PreconditionFailed { .. } | StorageError::NotFound { .. }) => continue,
            Err(e) => return Err(e),
        };
        let mut input = ResumingReader::new(storage.clone(), key, meta.etag.clone(), reader);
        let copied = tokio::task::spawn_blocking(move || -> std::io::Result<()> {
            let mut out = std::io::BufWriter::with_capacity(1 << 20, out);
            std::io::copy(&mut input, &mut out)?;
            std::io::Write::flush(&mut out)
        })
        .await
        .map_err(|e| std::io::Error::other(e.to_string()))
        .and_then(|copied| copied);
        return match copied {
            Ok(()) => Ok(Some(meta)),
            Err(e) => Err(StorageError::Other {
                op: "get",
                url: storage.url(key),
                message: e.to_string(),
            }),
        };
    }
    Err(StorageError::Other {
        op: "get",
        url: storage.url(key),
        message: "the object kept changing while it was read".into(),
    })
}

/// [`Storage::put_file`] by reading the whole file and sending it with `put` or `put_if`: the
/// trait's default, for a backend that cannot stream (the local and S3 backends both do).
pub async fn put_file_in_memory<S: Storage + ?Sized>(
    storage: &S,
    key: &str,
    path: &Path,
    condition: Option<PutCondition>,
) -> StorageResult<()> {
    let body = tokio::fs::read(path).await.map_err(|e| StorageError::Other {
        op: "put",
        url: storage.url(key),
        message: format!("cannot read {}: {e}", path.display()),
    })?;
    match condition {
        None => storage.put(key, Bytes::from(body)).await,
        Some(condition) => storage.put_if(key, Bytes::from(body), condition).await.map(drop),
    }
}

/// Opens the storage for a location.
pub async fn open(location: &Location, aws: &AwsConfig) -> StorageResult<DynStorage> {
    Ok(match location {
        Location::Local(path) => Arc::new(LocalStorage::new(path.clone())),
        Location::S3 { bucket, prefix } => {
            Arc::new(S3Storage::connect(location.clone(), bucket, prefix, aws).await?)
        }
    })
}

/// Truncates to microseconds, the precision of stored timestamps.
pub fn to_micros_precision(t: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(t.timestamp_micros()).unwrap_or(t)
}

/// The last path segment of a key.
pub fn file_name(key: &str) -> &str {
    key.rsplit('/').next().unwrap_or(key)
}
