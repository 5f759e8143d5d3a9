//! A local folder as object storage: atomic replace by rename, create-if-absent by hard link.

use std::fs;
use std::io::{ErrorKind, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use chrono::{DateTime, Utc};

use super::{ObjectMeta, ObjectReader, PutCondition, Storage, StorageError, StorageResult};
use crate::location::Location;

/// Names of our own scratch files start with this; listings skip them.
const TEMP_PREFIX: &str = ".lakeload-tmp-";

static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

#[derive(Debug)]
pub struct LocalStorage {
    root: PathBuf,
    location: Location,
}

impl LocalStorage {
    pub fn new(root: PathBuf) -> Self {
        let location = Location::Local(root.clone());
        LocalStorage { root, location }
    }

    fn path(&self, key: &str) -> PathBuf {
        self.root.join(key)
    }

    fn err(&self, op: &'static str, key: &str, e: impl std::fmt::Display) -> StorageError {
        StorageError::Other {
            op,
            url: self.url(key),
            message: e.to_string(),
        }
    }

    fn meta(key: String, m: &fs::Metadata) -> ObjectMeta {
        let modified: DateTime<Utc> = m.modified().map(DateTime::from).unwrap_or_default();
        let modified = super::to_micros_precision(modified);
        ObjectMeta {
            // The change time is in the version because `cp -p` and `rsync -a` restore the
            // modification time, and a corrected value can keep the size: only the ctime,
            // which no user tool can set back, then tells the two versions apart.
            etag: Some(format!(
                "{:x}-{:x}-{:x}.{:x}",
                modified.timestamp_micros(),
                m.len(),
                m.ctime(),
                m.ctime_nsec()
            )),
            key,
            size: m.len(),
            last_modified: modified,
        }
    }

    /// Writes `body` to a scratch file beside `path` and returns the scratch file's path.
    fn write_temp(&self, path: &Path, body: &[u8]) -> std::io::Result<PathBuf> {
        self.fill_temp(path, |file| file.write_all(body))
    }

    /// A scratch file beside `path`, filled by `fill` and synced; returns its path.
    fn fill_temp(
        &self,
        path: &Path,
        fill: impl FnOnce(&mut fs::File) -> std::io::Result<()>,
    ) -> std::io::Result<PathBuf> {
        let dir = path.parent().unwrap_or(&self.root);
        fs::create_dir_all(dir)?;
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("object");
        let temp = dir.join(format!(
            // Never ending in `.parquet`: a reader's glob must not pick up a half-written file
            // or one a crash left behind.
            "{TEMP_PREFIX}{}-{}-{name}.partial",
            std::process::id(),
            TEMP_COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        let mut file = fs::File::create(&temp)?;
        if let Err(e) = fill(&mut file).and_then(|()| file.sync_all()) {
            let _ = fs::remove_file(&temp);
            return Err(e);
        }
        Ok(temp)
    }

    fn put_blocking(&self, key: &str, body: &[u8]) -> StorageResult<()> {
        let path = self.path(key);
        let temp = self
            .write_temp(&path, body)
            .map_err(|e| self.err("put", key, e))?;
        fs::rename(&temp, &path).map_err(|e| {
            let _ = fs::remove_file(&temp);
            self.err("put", key, e)
        })
    }

    fn put_if_blocking(&self, key: &str, body: &[u8], condition: PutCondition) -> StorageResult<String> {
        let path = self.path(key);
        let temp = self
            .write_temp(&path, body)
            .map_err(|e| self.err("put", key, e))?;
        self.place_if(key, temp, condition)
    }

    /// Copies local file `source` into place under `condition` (or unconditionally).
    fn put_file_blocking(
        &self,
        key: &str,
        source: &Path,
        condition: Option<PutCondition>,
    ) -> StorageResult<()> {
        let path = self.path(key);
        let temp = self
            .fill_temp(&path, |file| {
                std::io::copy(&mut fs::File::open(source)?, file).map(drop)
            })
            .map_err(|e| self.err("put", key, e))?;
        match condition {
            Some(condition) => self.place_if(key, temp, condition).map(drop),
            None => fs::rename(&temp, &path).map_err(|e| {
                let _ = fs::remove_file(&temp);
                self.err("put", key, e)
            }),
        }
    }

    /// Moves the scratch file `temp` to `key` if `condition` holds; returns the new ETag.
    fn place_if(&self, key: &str, temp: PathBuf, condition: PutCondition) -> StorageResult<String> {
        let path = self.path(key);
        let result = match condition {
            PutCondition::IfAbsent => match fs::hard_link(&temp, &path) {
                // A hard link is created whole or not at all, and fails if the name exists:
                // an atomic create-if-absent that never shows a half-written object.
                Ok(()) => Ok(()),
                Err(e) if e.kind() == ErrorKind::AlreadyExists => {
                    Err(StorageError::PreconditionFailed { url: self.url(key) })
                }
                Err(e) => Err(self.err("put", key, e)),
            },
            PutCondition::IfMatch(expected) => self.compare_and(key, "put", &expected, || {
                fs::rename(&temp, &path).map_err(|e| self.err("put", key, e))
            }),
        };
        let _ = fs::remove_file(&temp);
        result?;
        let meta = fs::metadata(&path).map_err(|e| self.err("put", key, e))?;
        Ok(Self::meta(key.to_string(), &meta).etag.unwrap_or_default())
    }

    /// Runs `action` only if the object's ETag is `expected`, serialised between processes
    /// with an advisory lock on a sidecar file: the check and the action happen under it.
    fn compare_and(
        &self,
        key: &str,
        op: &'static str,
        expected: &str,
        action: impl FnOnce() -> StorageResult<()>,
    ) -> StorageResult<()> {
        let path = self.path(key);
        // One guard file per key, all in one hidden folder at the root (skipped by listings),
        // so table partitions hold nothing but their Parquet object. Never removed: removing
        // a guard another process holds would let a third take a second one.
        let guards = self.root.join(format!("{TEMP_PREFIX}cas"));
        fs::create_dir_all(&guards).map_err(|e| self.err(op, key, e))?;
        // The suffix keeps a reader's `**/*.parquet` glob off the guards.
        let guard_path = guards.join(format!("{}.guard", key.replace('%', "%25").replace('/', "%2F")));
        let guard = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&guard_path)
            .map_err(|e| self.err(op, key, e))?;
        guard.lock().map_err(|e| self.err(op, key, e))?;
        let current = fs::metadata(&path).ok().map(|m| Self::meta(key.to_string(), &m));
        match current.and_then(|m| m.etag) {
            Some(etag) if etag == expected => action(),
            _ => Err(StorageError::PreconditionFailed { url: self.url(key) }),
        }
    }

    fn delete_if_blocking(&self, key: &str, etag: &str) -> StorageResult<()> {
        if !self.path(key).exists() {
            return Ok(());
        }
        self.compare_and(key, "delete", etag, || self.delete_blocking(key))
    }

    fn list_blocking(&self, prefix: &str) -> StorageResult<Vec<ObjectMeta>> {
        // Start the walk at the deepest folder the prefix names.
        let start_rel = match prefix.rfind('/') {
            Some(i) => &prefix[..i],
            None => "",
        };
        let mut out = Vec::new();
        let mut stack = vec![self.root.join(start_rel)];
        while let Some(dir) = stack.pop() {
            let entries = match fs::read_dir(&dir) {
                Ok(entries) => entries,
                Err(e) if e.kind() == ErrorKind::NotFound => continue,
                Err(e) => return Err(self.err("list", prefix, format!("{}: {e}", dir.display()))),
            };
            for entry in entries {
                let entry = entry.map_err(|e| self.err("list", prefix, e))?;
                let name = entry.file_name();
                let Some(name) = name.to_str() else { continue };
                if name.starts_with(TEMP_PREFIX) {
                    continue;
                }
                let path = entry.path();
                // fs::metadata follows symbolic links, as a reader of the folder would.
                let Ok(meta) = fs::metadata(&path) else {
                    continue;
                };
                let Ok(rel) = path.strip_prefix(&self.root) else {
                    continue;
                };
                let key = rel
                    .components()
                    .map(|c| c.as_os_str().to_string_lossy())
                    .collect::<Vec<_>>()
                    .join("/");
                if meta.is_dir() {
                    // Only folders that can hold keys with the prefix are walked.
                    let folder = format!("{key}/");
                    if folder.starts_with(prefix) || prefix.starts_with(&folder) {
                        stack.push(path);
                    }
                    continue;
                }
                if key.starts_with(prefix) {
                    out.push(Self::meta(key, &meta));
                }
            }
        }
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }

    fn delete_blocking(&self, key: &str) -> StorageResult<()> {
        let path = self.path(key);
        match fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(self.err("delete", key, e)),
        }
        // Tidy up folders left empty (e.g. a deleted date partition), never the root.
        let mut dir = path.parent();
        while let Some(d) = dir {
            if d == self.root || !d.starts_with(&self.root) || fs::remove_dir(d).is_err() {
                break;
            }
            dir = d.parent();
        }
        Ok(())
    }
}

/// Runs blocking file-system work off the async threads.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f)
        .await
        .expect("storage task panicked")
}

#[async_trait::async_trait]
impl Storage for LocalStorage {
    fn root(&self) -> &Location {
        &self.location
    }

    async fn list(&self, prefix: &str) -> StorageResult<Vec<ObjectMeta>> {
        let this = LocalStorage::new(self.root.clone());
        let prefix = prefix.to_string();
        blocking(move || this.list_blocking(&prefix)).await
    }

    async fn head(&self, key: &str) -> StorageResult<Option<ObjectMeta>> {
        match fs::metadata(self.path(key)) {
            Ok(m) if m.is_file() => Ok(Some(Self::meta(key.to_string(), &m))),
            Ok(_) => Ok(None),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
            Err(e) => Err(self.err("head", key, e)),
        }
    }

    async fn get(&self, key: &str) -> StorageResult<Option<(Bytes, ObjectMeta)>> {
        let path = self.path(key);
        let Some(meta) = self.head(key).await? else {
            return Ok(None);
        };
        match tokio::fs::read(&path).await {
            Ok(bytes) => Ok(Some((Bytes::from(bytes), meta))),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
            Err(e) => Err(self.err("get", key, e)),
        }
    }

    async fn open_at(&self, key: &str, offset: u64, etag: Option<&str>) -> StorageResult<ObjectReader> {
        use std::io::{Seek, SeekFrom};
        let mut file = match fs::File::open(self.path(key)) {
            Ok(f) => f,
            Err(e) if e.kind() == ErrorKind::NotFound => {
                return Err(StorageError::NotFound { url: self.url(key) });
            }
            Err(e) => return Err(self.err("get", key, e)),
        };
        if let Some(expected) = etag {
            let meta = file.metadata().map_err(|e| self.err("get", key, e))?;
            if Self::meta(key.to_string(), &meta).etag.as_deref() != Some(expected) {
                return Err(StorageError::PreconditionFailed { url: self.url(key) });
            }
        }
        if offset > 0 {
            file.seek(SeekFrom::Start(offset))
                .map_err(|e| self.err("get", key, e))?;
        }
        Ok(ObjectReader(Box::new(file)))
    }

    async fn put(&self, key: &str, body: Bytes) -> StorageResult<()> {
        let this = LocalStorage::new(self.root.clone());
        let key = key.to_string();
        blocking(move || this.put_blocking(&key, &body)).await
    }

    async fn put_if(&self, key: &str, body: Bytes, condition: PutCondition) -> StorageResult<String> {
        let this = LocalStorage::new(self.root.clone());
        let key = key.to_string();
        blocking(move || this.put_if_blocking(&key, &body, condition)).await
    }

    async fn put_file(&self, key: &str, path: &Path, condition: Option<PutCondition>) -> StorageResult<()> {
        let this = LocalStorage::new(self.root.clone());
        let (key, path) = (key.to_string(), path.to_path_buf());
        blocking(move || this.put_file_blocking(&key, &path, condition)).await
    }

    async fn delete(&self, key: &str) -> StorageResult<()> {
        let this = LocalStorage::new(self.root.clone());
        let key = key.to_string();
        blocking(move || this.delete_blocking(&key)).await
    }

    async fn delete_if(&self, key: &str, etag: &str) -> StorageResult<()> {
        let this = LocalStorage::new(self.root.clone());
        let (key, etag) = (key.to_string(), etag.to_string());
        blocking(move || this.delete_if_blocking(&key, &etag)).await
    }

    /// Local files are stamped by this machine's clock.
    fn store_now(&self) -> Option<DateTime<Utc>> {
        Some(Utc::now())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn conditional_writes_and_listing() {
        let dir = tempfile::tempdir().unwrap();
        let s = LocalStorage::new(dir.path().to_path_buf());
        let etag = s
            .put_if("a/lock", Bytes::from_static(b"1"), PutCondition::IfAbsent)
            .await
            .unwrap();
        let again = s
            .put_if("a/lock", Bytes::from_static(b"2"), PutCondition::IfAbsent)
            .await;
        assert!(matches!(again, Err(StorageError::PreconditionFailed { .. })));
        let stale = s
            .put_if(
                "a/lock",
                Bytes::from_static(b"3"),
                PutCondition::IfMatch("nope".into()),
            )
            .await;
        assert!(matches!(stale, Err(StorageError::PreconditionFailed { .. })));
        s.put_if("a/lock", Bytes::from_static(b"four"), PutCondition::IfMatch(etag))
            .await
            .unwrap();
        s.put("b/c/d.txt", Bytes::from_static(b"x")).await.unwrap();
        let keys: Vec<String> = s.list("").await.unwrap().into_iter().map(|m| m.key).collect();
        assert_eq!(keys, vec!["a/lock", "b/c/d.txt"], "guard files are not listed");
        assert_eq!(s.list("b/").await.unwrap().len(), 1);
        assert_eq!(&s.get("a/lock").await.unwrap().unwrap().0[..], b"four");
        let stale = s.delete_if("a/lock", "not-the-etag").await;
        assert!(matches!(stale, Err(StorageError::PreconditionFailed { .. })));
        let current = s.head("a/lock").await.unwrap().unwrap().etag.unwrap();
        s.delete_if("a/lock", &current).await.unwrap();
        assert!(s.head("a/lock").await.unwrap().is_none());
        s.delete_if("a/lock", &current).await.unwrap();
        s.delete("b/c/d.txt").await.unwrap();
        assert!(!dir.path().join("b").exists(), "empty folders are removed");
        s.delete("b/c/d.txt").await.unwrap();
    }
}
