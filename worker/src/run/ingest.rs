//! Read & clean: every source file inflated and parsed on `run.threads` readers, their rows
//! routed by date within the budget, rejects gathered, and the run stopped early once the
//! reject ratio can no longer end under `run.max_reject_ratio`.

use std::sync::Arc;

use futures::{StreamExt, TryStreamExt};

use crate::bookkeeping::rejects_key;
use crate::config::Config;
use crate::error::{Error, Result};
use crate::read::reader::{DateBlocks, FileCounts, ReadOptions, read_source};
use crate::read::rejects::{Reject, RejectGate};
use crate::read::row::LineParser;
use crate::route::budget::reader_threads;
use crate::route::router::DateRouter;
use crate::run::stats::RunStats;
use crate::storage::ObjectMeta;
use crate::summary::ManifestEntry;
use crate::target::Target;

/// Read & clean every file into the router, and count what was read.
pub(crate) async fn ingest(
    config: &Config,
    target: &Target,
    run_id: &str,
    files: &[ObjectMeta],
    router: &mut DateRouter,
    stats: &mut RunStats,
    interactive: bool,
) -> Result<Vec<FileCounts>> {
    let per_file = read_all(config, target, run_id, files, router, stats, interactive).await?;
    router
        .finish_reading()
        .map_err(Error::scratch("cannot spill rows to disk"))?;
    for (meta, counts) in files.iter().zip(&per_file) {
        stats.files.push(ManifestEntry {
            key: meta.key.clone(),
            size: meta.size,
            etag: meta.etag.clone(),
            rows: counts.rows,
        });
        stats.bytes_read += counts.bytes;
        stats.counts.rows_read += counts.lines;
        stats.counts.rows_blank += counts.blank;
        stats.counts.rows_rejected += counts.rejected;
    }
    stats.bytes_spilled = router.spilled_bytes();
    if router.spilled_bytes() > 0 {
        tracing::info!(
            "rows above run.memory_limit were spilled to disk: {} bytes",
            router.spilled_bytes()
        );
    }
    Ok(per_file)
}

/// Too many rejects: stop before anything is committed. `complete`: every file was read.
pub(crate) fn check_reject_ratio(
    config: &Config,
    target: &Target,
    run_id: &str,
    stats: &RunStats,
    complete: bool,
) -> Result<()> {
    let (read, rejected) = (stats.counts.rows_read, stats.counts.rows_rejected);
    let ratio = if read == 0 {
        0.0
    } else {
        rejected as f64 / read as f64
    };
    if ratio > config.run.max_reject_ratio {
        return Err(too_many_rejects(config, target, run_id, rejected, read, complete));
    }
    Ok(())
}

fn too_many_rejects(
    config: &Config,
    target: &Target,
    run_id: &str,
    rejected: u64,
    read: u64,
    complete: bool,
) -> Error {
    Error::TooManyRejects {
        rejected,
        read,
        ratio: if read == 0 {
            1.0
        } else {
            rejected as f64 / read as f64
        },
        limit: config.run.max_reject_ratio,
        rejects_file: target.storage.url(&rejects_key(run_id)),
        complete,
    }
}

/// What readers hand the collector.
enum Ingested {
    Batch {
        file: u32,
        blocks: DateBlocks,
        rejects: Vec<Reject>,
    },
    /// The file was read to the end: its line count is exact.
    Done { file: u32, lines: u64 },
}

/// Reads every file in parallel (`run.threads` gzip streams at a time) into the router,
/// stopping early once the reject ratio can no longer end under `run.max_reject_ratio`.
async fn read_all(
    config: &Config,
    target: &Target,
    run_id: &str,
    files: &[ObjectMeta],
    router: &mut DateRouter,
    stats: &mut RunStats,
    interactive: bool,
) -> Result<Vec<FileCounts>> {
    let parser = Arc::new(LineParser::new(&config.schema, config.source.delimiter));
    let progress = crate::read::progress::Progress::start(
        files.len() as u64,
        files.iter().map(|f| f.size).sum(),
        interactive,
    );
    // One batch in flight per reader: the channel's depth follows the budget too.
    let readers = reader_threads(config);
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Ingested>(readers);
    let options = ReadOptions::for_files(config, files.len(), readers);
    let readers = {
        let progress = progress.clone();
        let source = target.source.clone();
        async move {
            let results: Vec<(usize, FileCounts)> = futures::stream::iter(files.iter().enumerate())
                .map(|(id, meta)| {
                    let (tx, parser, source, progress, options) = (
                        tx.clone(),
                        parser.clone(),
                        source.clone(),
                        progress.clone(),
                        options.clone(),
                    );
                    async move {
                        let file = id as u32;
                        let batches = tx.clone();
                        let emit = move |blocks, rejects| {
                            batches
                                .blocking_send(Ingested::Batch {
                                    file,
                                    blocks,
                                    rejects,
                                })
                                .map_err(|_| std::io::Error::other("the run stopped"))
                        };
                        let counts =
                            read_source(&source, meta, parser, file, options, progress.counters(), emit)
                                .await?;
                        progress.file_done();
                        tracing::debug!(
                            "read {}: {} lines, {} rows, {} rejected, {} blank",
                            meta.key,
                            counts.lines,
                            counts.rows,
                            counts.rejected,
                            counts.blank
                        );
                        let done = Ingested::Done {
                            file,
                            lines: counts.lines,
                        };
                        tx.send(done).await.map_err(|_| Error::other("the run stopped"))?;
                        Ok::<_, Error>((id, counts))
                    }
                })
                .buffer_unordered(readers)
                .try_collect()
                .await?;
            Ok::<_, Error>(results)
        }
    };
    // A reborrow moves into the collector, so the counts can be set after it is done.
    let collected = &mut *stats;
    let collect = async move {
        let stats = collected;
        let mut gate = RejectGate::new(config.run.max_reject_ratio, files.iter().map(|f| f.size));
        let mut rejected_so_far = 0u64;
        let mut lines_so_far = 0u64;
        while let Some(message) = rx.recv().await {
            match message {
                Ingested::Batch {
                    file,
                    blocks,
                    rejects,
                } => {
                    if !rejects.is_empty() {
                        gate.rejected(rejects.len() as u64);
                        rejected_so_far += rejects.len() as u64;
                        stats
                            .rejects
                            .add(&files[file as usize].key, &rejects)
                            .map_err(Error::scratch("cannot spill rejects to disk"))?;
                    }
                    tokio::task::block_in_place(|| router.push(blocks))
                        .map_err(Error::scratch("cannot spill rows to disk"))?;
                }
                Ingested::Done { file, lines } => {
                    gate.file_done(files[file as usize].size, lines);
                    lines_so_far += lines;
                }
            }
            if gate.certainly_exceeded() {
                stats.counts.rows_read = lines_so_far;
                stats.counts.rows_rejected = rejected_so_far;
                return Err(too_many_rejects(
                    config,
                    target,
                    run_id,
                    rejected_so_far,
                    lines_so_far,
                    false,
                ));
            }
        }
        Ok::<_, Error>(())
    };
    let outcome = futures::future::try_join(readers, collect).await;
    progress.finish();
    if let Err(Error::BadInput { diagnosis, .. }) = &outcome {
        // The summary counts the sample that decided (what other readers had read is not
        // counted: nothing of it is kept).
        stats.counts.rows_read = diagnosis.sampled;
        stats.counts.rows_rejected = diagnosis.rejected;
    }
    let (read, ()) = outcome?;
    let mut per_file = read;
    per_file.sort_by_key(|(id, _)| *id);
    Ok(per_file.into_iter().map(|(_, c)| c).collect())
}
