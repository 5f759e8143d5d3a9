//! Read & clean one source file: gzip (multi-member) → lines → rows, rejects and counts.

use std::collections::HashMap;
use std::io::Read;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use flate2::read::MultiGzDecoder;

use crate::block::{Lineage, RowBlock};
use crate::error::{Error, Result};
use crate::row::{LineOutcome, LineParser, ParsedLine, Reject};
use crate::storage::{DynStorage, ObjectMeta};

/// Rows are handed on in batches of this many, so a large file is never held whole.
pub const BATCH_ROWS: usize = 32 * 1024;

/// What reading one file produced, besides the rows and rejects it handed on.
#[derive(Debug, Default, Clone)]
pub struct FileCounts {
    /// Lines read, blank ones included (the header line, if configured, is not a row).
    pub lines: u64,
    pub blank: u64,
    pub rows: u64,
    pub rejected: u64,
    /// Compressed bytes read.
    pub bytes: u64,
    /// Partition dates of the file's rows.
    pub dates: std::collections::BTreeSet<i32>,
}

/// Live counters the progress display reads while files are being read.
#[derive(Debug, Default)]
pub struct ReadProgress {
    pub bytes: AtomicU64,
    pub lines: AtomicU64,
}

/// Counts the compressed bytes flowing through, for progress and the summary.
struct CountingReader<R> {
    inner: R,
    total: u64,
    progress: Arc<ReadProgress>,
}

impl<R: Read> Read for CountingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.total += n as u64;
        self.progress.bytes.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

/// Rows of one batch, one block per partition date.
pub type DateBlocks = Vec<(i32, RowBlock)>;

/// Collects parsed rows into one block per partition date.
struct BatchBuilder {
    columns: usize,
    date_slots: usize,
    blocks: DateBlocks,
    index: HashMap<i32, usize>,
    last: Option<(i32, usize)>,
    rows: usize,
}

impl BatchBuilder {
    fn new(parser: &LineParser) -> Self {
        BatchBuilder {
            columns: parser.columns(),
            date_slots: parser.date_slots(),
            blocks: Vec::new(),
            index: HashMap::new(),
            last: None,
            rows: 0,
        }
    }

    fn block_for(&mut self, date: i32) -> &mut RowBlock {
        let at = match self.last {
            Some((d, at)) if d == date => at,
            _ => {
                let at = match self.index.get(&date) {
                    Some(at) => *at,
                    None => {
                        self.blocks
                            .push((date, RowBlock::new(self.columns, self.date_slots)));
                        self.index.insert(date, self.blocks.len() - 1);
                        self.blocks.len() - 1
                    }
                };
                self.last = Some((date, at));
                at
            }
        };
        self.rows += 1;
        &mut self.blocks[at].1
    }

    /// The batch so far; its dates are added to `dates`.
    fn take(&mut self, dates: &mut std::collections::BTreeSet<i32>) -> DateBlocks {
        dates.extend(self.blocks.iter().map(|(d, _)| *d));
        self.index.clear();
        self.last = None;
        self.rows = 0;
        std::mem::take(&mut self.blocks)
    }
}

/// Bytes decompressed per read; lines are parsed straight out of this buffer.
const CHUNK_BYTES: usize = 1 << 20;

/// Decompresses and parses a whole file, handing rows (grouped by partition date) and rejects
/// to `emit` in batches. Runs on a blocking thread.
pub fn read_file(
    input: Box<dyn Read + Send>,
    parser: &LineParser,
    file: u32,
    skip_header: bool,
    progress: Arc<ReadProgress>,
    emit: &mut dyn FnMut(DateBlocks, Vec<Reject>) -> std::io::Result<()>,
) -> std::io::Result<FileCounts> {
    let mut counting = CountingReader {
        inner: input,
        total: 0,
        progress: progress.clone(),
    };
    let mut out = FileCounts::default();
    let mut batch = BatchBuilder::new(parser);
    let mut rejects = Vec::new();
    let mut parsed = ParsedLine::default();
    {
        let mut decoder = MultiGzDecoder::new(&mut counting);
        let mut buf = vec![0u8; CHUNK_BYTES];
        // `buf[..filled]` holds decompressed bytes; `buf[..pending]` of them start a line
        // whose end has not been read yet.
        let mut filled = 0usize;
        let mut number = 0u64;
        let mut at_end = false;
        while !at_end {
            if filled == buf.len() {
                // One line longer than the buffer: make room for it.
                buf.resize(buf.len() * 2, 0);
            }
            let n = decoder.read(&mut buf[filled..])?;
            if n == 0 {
                at_end = true;
            }
            filled += n;
            let mut consumed = 0usize;
            // A last line without `\n` is still a line; a final `\n` does not start another.
            loop {
                let line = match memchr::memchr(b'\n', &buf[consumed..filled]) {
                    Some(i) => {
                        let line = &buf[consumed..consumed + i];
                        consumed += i + 1;
                        line
                    }
                    None if at_end && consumed < filled => {
                        let line = &buf[consumed..filled];
                        consumed = filled;
                        line
                    }
                    None => break,
                };
                number += 1;
                if skip_header && number == 1 {
                    continue;
                }
                out.lines += 1;
                if number.is_multiple_of(4096) {
                    progress.lines.fetch_add(4096, Ordering::Relaxed);
                }
                match parser.parse(line, number, &mut parsed) {
                    LineOutcome::Blank => out.blank += 1,
                    LineOutcome::Row(text) => {
                        out.rows += 1;
                        let lineage = Lineage {
                            file,
                            line: number,
                            generation: 1,
                        };
                        batch.block_for(parser.partition_day(&parsed)).push(
                            text,
                            &parsed.ends,
                            &parsed.dates,
                            parsed.hash,
                            lineage,
                        );
                    }
                    LineOutcome::Rejected(reject) => {
                        out.rejected += 1;
                        rejects.push(reject);
                    }
                }
                if batch.rows == BATCH_ROWS {
                    emit(batch.take(&mut out.dates), std::mem::take(&mut rejects))?;
                }
            }
            buf.copy_within(consumed..filled, 0);
            filled -= consumed;
        }
        emit(batch.take(&mut out.dates), rejects)?;
        progress.lines.fetch_add(number % 4096, Ordering::Relaxed);
    }
    // Drain any trailing bytes the decoder did not need, so the byte count is the object size.
    std::io::copy(&mut counting, &mut std::io::sink())?;
    out.bytes = counting.total;
    Ok(out)
}

/// A read from the store failed (after retries), as opposed to the bytes not being gzip'd text.
#[derive(Debug)]
struct StoreReadError(String);

impl std::fmt::Display for StoreReadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for StoreReadError {}

/// Attempts to resume a source read after its connection failed.
const READ_RETRIES: u32 = 4;

/// A source object read to the end, resuming from the last byte received when the stream
/// breaks (a reset connection, a read timeout): a ranged GET pinned to the listed version, so
/// a resumed read never splices two versions of a file.
struct ResumingReader {
    storage: DynStorage,
    key: String,
    etag: Option<String>,
    runtime: tokio::runtime::Handle,
    inner: Box<dyn Read + Send>,
    offset: u64,
    retries_left: u32,
}

impl ResumingReader {
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
                Err(crate::storage::StorageError::PreconditionFailed { .. }) => {
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

/// Opens source object `meta` and reads it with [`read_file`] on a blocking thread; used by
/// runs and by `plan`, so both fail alike on a file that is not gzip'd text.
pub async fn read_source(
    source: &DynStorage,
    meta: &ObjectMeta,
    parser: Arc<LineParser>,
    file: u32,
    skip_header: bool,
    progress: Arc<ReadProgress>,
    mut emit: impl FnMut(DateBlocks, Vec<Reject>) -> std::io::Result<()> + Send + 'static,
) -> Result<FileCounts> {
    let key = meta.key.as_str();
    // Pinned to the listed version: the state records that version, so its rows must be the
    // ones read.
    let input = match source.open_at(key, 0, meta.etag.as_deref()).await {
        Err(crate::storage::StorageError::PreconditionFailed { .. }) => {
            return Err(Error::Other(format!(
                "source file {} changed while this run was reading it (after it was listed); \
                 the next run reads the new version",
                source.url(key)
            )));
        }
        other => other?,
    };
    let (storage, key_owned, etag) = (source.clone(), key.to_string(), meta.etag.clone());
    let runtime = tokio::runtime::Handle::current();
    tokio::task::spawn_blocking(move || {
        let input = ResumingReader {
            storage,
            key: key_owned,
            etag,
            runtime,
            inner: input.into_blocking(),
            offset: 0,
            retries_left: READ_RETRIES,
        };
        read_file(Box::new(input), &parser, file, skip_header, progress, &mut emit)
    })
    .await
    .map_err(Error::other)?
    .map_err(|e| {
        let url = source.url(key);
        let store_error = e
            .get_ref()
            .and_then(|inner| inner.downcast_ref::<StoreReadError>());
        match store_error {
            Some(cause) => Error::Other(format!(
                "cannot read source file {url}: {cause}; check the connection to the store \
                 and run again"
            )),
            None if matches!(
                e.kind(),
                std::io::ErrorKind::InvalidData
                    | std::io::ErrorKind::InvalidInput
                    | std::io::ErrorKind::UnexpectedEof
            ) =>
            {
                Error::Other(format!(
                    "cannot read source file {url}: {e}; it must be gzip-compressed text \
                     (fix or remove the file, or narrow source.pattern)"
                ))
            }
            None => Error::Other(format!("cannot read source file {url}: {e}")),
        }
    })
}
