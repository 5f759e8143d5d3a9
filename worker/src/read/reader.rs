//! Read & clean one source file: gzip (multi-member) → lines → rows, rejects and counts.

use std::collections::HashMap;
use std::io::Read;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use flate2::read::MultiGzDecoder;

use crate::block::{Lineage, RowBlock};
use crate::config::Config;
use crate::error::{Diagnosis, Error, Result};
use crate::read::diagnose::{Expectation, Sniffer};
use crate::read::rejects::Reject;
use crate::read::row::{LineOutcome, LineParser, ParsedLine};
use crate::storage::{DynStorage, ObjectMeta, ResumingReader, StoreReadError};

/// Rows are handed on in batches of this many, so a large file is never held whole.
pub const BATCH_ROWS: usize = 32 * 1024;

/// A batch is handed on at this size too, so wide rows do not make batches large.
pub const BATCH_BYTES: usize = 4 << 20;

/// What one reader holds besides its batch: the inflate buffer and the chunks read ahead,
/// the store's read-ahead (8 MiB on S3), the gzip state. Readers are as many as the budget
/// allows, never more than `run.threads`.
pub const READER_BYTES: u64 = 16 << 20;

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
    /// Memory the batch's rows take, roughly: text, field ends, dates, hash and lineage.
    bytes: usize,
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
            bytes: 0,
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
        self.bytes = 0;
        std::mem::take(&mut self.blocks)
    }
}

/// Bytes decompressed per read; lines are parsed straight out of this buffer.
const CHUNK_BYTES: usize = 1 << 20;

/// What the schema and source settings expect of a file's first lines.
pub fn expectation(config: &Config) -> Expectation {
    let schema = &config.schema;
    Expectation {
        columns: schema.columns.clone(),
        date_columns: schema.date_columns.clone(),
        partition_column: schema.partition_column,
        delimiter: config.source.delimiter,
        timestamp_format: schema.timestamp_format.clone(),
        max_reject_ratio: config.run.max_reject_ratio,
        header: config.source.header,
    }
}

/// How a file is read.
#[derive(Debug, Clone)]
pub struct ReadOptions {
    /// The first line is a header, not a row.
    pub skip_header: bool,
    /// Decompress on a thread of its own, a chunk ahead of the parser. Inflating is about
    /// half the work of reading a file, so a file read while cores would otherwise idle
    /// (fewer files than `run.threads`) is read in a little over half the time.
    pub inflate_ahead: bool,
    /// Watch the first lines and stop early when nearly all fail the same way (`diagnose`).
    pub diagnose: Option<Arc<Expectation>>,
}

impl ReadOptions {
    /// How each of `files` files is read, `readers` at a time (the budget's
    /// `reader_threads`; runs and `plan` alike).
    pub fn for_files(config: &Config, files: usize, readers: usize) -> Self {
        ReadOptions {
            skip_header: config.source.header,
            inflate_ahead: files < readers,
            diagnose: Some(Arc::new(expectation(config))),
        }
    }
}

/// Rejects are handed on once their text reaches this size (or with the rows' batch), so a
/// file of long bad lines is never held in memory whole.
const REJECT_BATCH_BYTES: usize = 256 << 10;

/// Decompressed chunks in flight between the inflating thread and the parser.
const CHUNKS_AHEAD: usize = 2;

/// The reading end of [`ReadAhead::spawn`]: chunks come from `inner`, read on another thread.
struct ReadAhead {
    chunks: std::sync::mpsc::Receiver<std::io::Result<Vec<u8>>>,
    chunk: Vec<u8>,
    at: usize,
}

impl ReadAhead {
    /// Reads `inner` to its end on a thread of `scope`, up to [`CHUNKS_AHEAD`] chunks ahead
    /// of the reader; stops early if the reader is dropped.
    fn spawn<'scope, R: Read + Send + 'scope>(
        scope: &'scope std::thread::Scope<'scope, '_>,
        mut inner: R,
    ) -> ReadAhead {
        let (sender, chunks) = std::sync::mpsc::sync_channel(CHUNKS_AHEAD);
        scope.spawn(move || {
            loop {
                let mut chunk = vec![0u8; CHUNK_BYTES];
                let filled = fill(&mut inner, &mut chunk);
                let done = !matches!(filled, Ok(n) if n > 0);
                let sent = sender.send(filled.map(|n| {
                    chunk.truncate(n);
                    chunk
                }));
                if done || sent.is_err() {
                    return;
                }
            }
        });
        ReadAhead {
            chunks,
            chunk: Vec::new(),
            at: 0,
        }
    }
}

/// Reads until `buf` is full or the input ends.
fn fill(input: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match input.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

impl Read for ReadAhead {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.at == self.chunk.len() {
            self.chunk = match self.chunks.recv() {
                Ok(chunk) => chunk?,
                // The inflating thread has finished: the end was sent before it stopped.
                Err(_) => return Ok(0),
            };
            self.at = 0;
        }
        let n = buf.len().min(self.chunk.len() - self.at);
        buf[..n].copy_from_slice(&self.chunk[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

/// Decompresses and parses a whole file, handing rows (grouped by partition date) and rejects
/// to `emit` in batches. Runs on a blocking thread.
pub fn read_file(
    input: Box<dyn Read + Send>,
    parser: &LineParser,
    file: u32,
    options: ReadOptions,
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
    let mut reject_bytes = 0usize;
    let mut parsed = ParsedLine::default();
    let mut sniffer = options.diagnose.as_ref().map(|_| Sniffer::default());
    std::thread::scope(|scope| -> std::io::Result<()> {
        let decoder = MultiGzDecoder::new(&mut counting);
        let mut decoder: Box<dyn Read + Send> = match options.inflate_ahead {
            true => Box::new(ReadAhead::spawn(scope, decoder)),
            false => Box::new(decoder),
        };
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
                if options.skip_header && number == 1 {
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
                        if let Some(sniffer) = &mut sniffer {
                            sniffer.row();
                        }
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
                        batch.bytes += text.len() + 4 * (parsed.ends.len() + parsed.dates.len()) + 32;
                    }
                    LineOutcome::Rejected(reject) => {
                        out.rejected += 1;
                        if let Some(sniffer) = &mut sniffer {
                            sniffer.reject(&reject);
                        }
                        reject_bytes += reject.raw.len() + reject.detail.len();
                        rejects.push(reject);
                    }
                }
                if sniffer.as_ref().is_some_and(Sniffer::full) {
                    judge(&mut sniffer, &options, &mut batch, &mut out, &mut rejects, emit)?;
                }
                if batch.rows == BATCH_ROWS
                    || batch.bytes >= BATCH_BYTES
                    || reject_bytes >= REJECT_BATCH_BYTES
                {
                    emit(batch.take(&mut out.dates), std::mem::take(&mut rejects))?;
                    reject_bytes = 0;
                }
            }
            buf.copy_within(consumed..filled, 0);
            filled -= consumed;
        }
        judge(&mut sniffer, &options, &mut batch, &mut out, &mut rejects, emit)?;
        emit(batch.take(&mut out.dates), rejects)?;
        progress.lines.fetch_add(number % 4096, Ordering::Relaxed);
        Ok(())
    })?;
    // Drain any trailing bytes the decoder did not need, so the byte count is the object size.
    std::io::copy(&mut counting, &mut std::io::sink())?;
    out.bytes = counting.total;
    Ok(out)
}

/// The verdict on a file's first lines, once: reading stops with the diagnosis (the rejects
/// seen so far handed on first, for the rejects file) when nearly all of them failed alike.
fn judge(
    sniffer: &mut Option<Sniffer>,
    options: &ReadOptions,
    batch: &mut BatchBuilder,
    out: &mut FileCounts,
    rejects: &mut Vec<Reject>,
    emit: &mut dyn FnMut(DateBlocks, Vec<Reject>) -> std::io::Result<()>,
) -> std::io::Result<()> {
    let (Some(watching), Some(expect)) = (sniffer.take(), options.diagnose.as_ref()) else {
        return Ok(());
    };
    let verdict = watching.verdict(expect);
    match verdict {
        None => Ok(()),
        Some(diagnosis) => {
            emit(batch.take(&mut out.dates), std::mem::take(rejects))?;
            Err(std::io::Error::other(diagnosis))
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
    options: ReadOptions,
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
    let input = ResumingReader::new(source.clone(), key, meta.etag.clone(), input);
    tokio::task::spawn_blocking(move || {
        read_file(Box::new(input), &parser, file, options, progress, &mut emit)
    })
    .await
    .map_err(Error::other)?
    .map_err(|e| {
        let url = source.url(key);
        if let Some(diagnosis) = e.get_ref().and_then(|inner| inner.downcast_ref::<Diagnosis>()) {
            return Error::BadInput {
                file: url,
                diagnosis: diagnosis.clone(),
            };
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::read::row::tests::parser;
    use std::io::Write;

    fn gzip(text: &[u8]) -> Vec<u8> {
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        encoder.write_all(text).unwrap();
        encoder.finish().unwrap()
    }

    /// What a read gave: rows (key, date, line), reject line numbers, compressed bytes.
    type Outcome = (Vec<(String, i32, u64)>, Vec<u64>, u64);

    fn read(bytes: Vec<u8>, inflate_ahead: bool) -> std::io::Result<Outcome> {
        let (parser, mut rows, mut rejects) = (parser(), Vec::new(), Vec::new());
        let mut emit = |blocks: DateBlocks, batch_rejects: Vec<Reject>| {
            for (date, block) in blocks {
                for r in 0..block.len() {
                    rows.push((block.field_str(r, 0).unwrap().to_string(), date, block.line(r)));
                }
            }
            rejects.extend(batch_rejects.iter().map(|r| r.line));
            Ok(())
        };
        let options = ReadOptions {
            skip_header: false,
            inflate_ahead,
            diagnose: None,
        };
        let progress = Arc::new(ReadProgress::default());
        let counts = read_file(
            Box::new(std::io::Cursor::new(bytes)),
            &parser,
            0,
            options,
            progress,
            &mut emit,
        )?;
        Ok((rows, rejects, counts.bytes))
    }

    /// Decompressing on a thread of its own reads the same rows, in the same order, as
    /// decompressing in line: several chunks' worth of text, a last line without a line
    /// break, a bad line; and a file that is not gzip fails the same way.
    #[test]
    fn inflating_ahead_reads_what_inflating_in_line_reads() {
        let mut text = String::new();
        for n in 0..60_000 {
            text += &format!(
                "C{n:06}|view|P{n}|1.00||2026-11-01T00:00:00Z|2026-11-{:02}|S{n}\n",
                1 + n % 28
            );
        }
        text += "bad|line\nlast|view|P|1.00||2026-11-01T00:00:00Z|2026-11-02|S";
        assert!(text.len() > 3 * CHUNK_BYTES);
        let bytes = gzip(text.as_bytes());
        let ahead = read(bytes.clone(), true).unwrap();
        let in_line = read(bytes.clone(), false).unwrap();
        assert_eq!(ahead.0.len(), 60_001);
        assert_eq!(ahead.1, vec![60_001]);
        assert_eq!(ahead.2, bytes.len() as u64, "every compressed byte counted");
        assert_eq!(ahead, in_line);

        let mut broken = bytes[..bytes.len() / 2].to_vec();
        broken.extend_from_slice(b"not gzip at all");
        let (ahead, in_line) = (read(broken.clone(), true), read(broken, false));
        let (ahead, in_line) = (ahead.unwrap_err(), in_line.unwrap_err());
        assert_eq!(
            (ahead.kind(), ahead.to_string()),
            (in_line.kind(), in_line.to_string())
        );
    }
}
