//! Streaming reads that survive a broken connection.

use std::io::Read;

use super::{DynStorage, ObjectReader, StorageError};

/// A read from the store failed (after retries), as opposed to the bytes read being wrong.
#[derive(Debug)]
pub struct StoreReadError(String);

impl std::fmt::Display for StoreReadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for StoreReadError {}

/// Attempts to resume a read after its connection failed.
const READ_RETRIES: u32 = 4;

/// An object read to the end, resuming from the last byte received when the stream breaks (a
/// reset connection, a read timeout): a ranged GET pinned to the version first read, so a
/// resumed read never splices two versions of an object. Read it on a blocking thread.
pub struct ResumingReader {
    storage: DynStorage,
    key: String,
    etag: Option<String>,
    runtime: tokio::runtime::Handle,
    inner: Box<dyn Read + Send>,
    offset: u64,
    retries_left: u32,
}

impl ResumingReader {
    /// `reader`, opened from the start of `key` at version `etag`; called on the runtime.
    pub fn new(storage: DynStorage, key: &str, etag: Option<String>, reader: ObjectReader) -> Self {
        ResumingReader {
            storage,
            key: key.to_string(),
            etag,
            runtime: tokio::runtime::Handle::current(),
            inner: reader.into_blocking(),
            offset: 0,
            retries_left: READ_RETRIES,
        }
    }

    fn give_up(&self, e: impl std::fmt::Display) -> std::io::Error {
        std::io::Error::other(StoreReadError(format!(
            "reading failed at byte {} after {READ_RETRIES} retries: {e}",
            self.offset
        )))
    }
}

impl Read for ResumingReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        loop {
            let error = match self.inner.read(buf) {
                Ok(n) => {
                    self.offset += n as u64;
                    return Ok(n);
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => e,
            };
            if self.retries_left == 0 {
                return Err(self.give_up(error));
            }
            let attempt = READ_RETRIES - self.retries_left + 1;
            self.retries_left -= 1;
            tracing::warn!(
                "reading {} broke off at byte {} ({error}); resuming (retry {attempt} of {READ_RETRIES})",
                self.storage.url(&self.key),
                self.offset
            );
            std::thread::sleep(std::time::Duration::from_millis(200 * u64::from(attempt)));
            let reopened =
                self.runtime
                    .block_on(self.storage.open_at(&self.key, self.offset, self.etag.as_deref()));
            match reopened {
                Ok(reader) => self.inner = reader.into_blocking(),
                Err(StorageError::PreconditionFailed { .. }) => {
                    return Err(std::io::Error::other(StoreReadError(format!(
                        "it changed while this run was reading it (at byte {}); the next run \
                         reads the new version",
                        self.offset
                    ))));
                }
                Err(e) if self.retries_left == 0 => return Err(self.give_up(e)),
                Err(_) => {}
            }
        }
    }
}
