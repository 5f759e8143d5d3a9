//! One run, end to end: lock → plan → read & clean → route by date → merge each date → write →
//! commit state → summary, log and rejects (SPEC §4–6).

pub mod etlrun_result;
pub mod ingest;
pub mod stats;

use std::sync::Arc;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures::StreamExt;

use crate::block::KeyColumns;
use crate::block::{FileInfo, FileTable};
use crate::bookkeeping::{log_key, rejects_key, summary_key};
use crate::commit::lock::TableLock;
use crate::commit::ownership::Claims;
use crate::commit::{TableCommit, TableFacts, file_records};
use crate::config::{Config, Mode};
use crate::dates::format_days;
use crate::error::{Error, Result, exit_code};
use crate::merge::MergeCounts;
use crate::merge::date_merge::{DateMerge, MergeMemory};
use crate::merge::spill::DateRows;
use crate::plan::{Plan, plan};
use crate::route::budget::{date_unit_limit, ingest_budget, merge_concurrency, row_group_bytes, unit_limit};
use crate::route::router::{Compactor, DateRouter};
use crate::run::ingest::{check_reject_ratio, ingest};
use crate::run::stats::RunStats;
use crate::scratch::SpillDir;
use crate::state::settings::{SettingChange, TableSettings, changed_settings_error};
use crate::state::{Loaded, State, StoreCheck};
use crate::storage::ObjectMeta;
use crate::summary::RunSummary;
use crate::table::{KeyHashes, NewKeys, SplitByKeys, StoredRows, Transaction};
use crate::target::Target;

/// What `run` returns: the summary (absent when the run never held the lock) and the outcome.
pub struct RunReport {
    pub summary: Option<RunSummary>,
    pub result: Result<()>,
}

/// Runs the ETL once. `interactive` draws a progress bar.
pub async fn run(config: &Config, interactive: bool) -> RunReport {
    match Target::open(config).await {
        Ok(target) => run_on(config, &target, interactive).await,
        Err(e) => RunReport {
            summary: None,
            result: Err(e),
        },
    }
}

/// Runs the ETL once on already opened storage.
pub async fn run_on(config: &Config, target: &Target, interactive: bool) -> RunReport {
    let started_at = Utc::now();
    // Listen before the first write: a SIGTERM that came before the handler would kill the
    // process outright and leave its lock behind; one that comes while the lock is taken
    // waits here and stops the run as soon as it starts.
    let mut shutdown = ShutdownSignals::listen();
    let run_id = config
        .run
        .run_id
        .clone()
        .unwrap_or_else(|| crate::bookkeeping::new_run_id(started_at));
    let lease = std::time::Duration::from_secs(config.lock.lease_seconds);
    // Know the store before the first write (the lock is the first).
    let store = match check_store(config, target, &run_id).await {
        Ok(store) => store,
        Err(e) => {
            return RunReport {
                summary: None,
                result: Err(e),
            };
        }
    };
    let lock = match TableLock::acquire(target.storage.clone(), &run_id, lease).await {
        Ok(lock) => lock,
        Err(e) => {
            return RunReport {
                summary: None,
                result: Err(e),
            };
        }
    };
    tracing::info!(
        "run {run_id}: {} mode, {} → {}",
        config.run.mode,
        config.source.url,
        config.target.url
    );

    let mut stats = RunStats::new(config);
    let result = tokio::select! {
        r = execute(config, target, &lock, &run_id, store, interactive, &mut stats) => r,
        signal = shutdown.recv() => {
            tracing::warn!("received {signal}: stopping; the table keeps every date written so far");
            Err(Error::Interrupted(signal))
        }
    };
    let summary = finish(config, target, lock, &run_id, started_at, stats, &result).await;
    RunReport {
        summary: Some(summary),
        result,
    }
}

/// Checks that the store enforces conditional writes, unless the state says it was checked.
async fn check_store(config: &Config, target: &Target, run_id: &str) -> Result<StoreCheck> {
    // Read without the lock: only to learn whether this store was checked before.
    let recorded = target.state.load().await?.state.store;
    crate::commit::store_check::verify(
        &target.storage,
        run_id,
        recorded.as_ref(),
        config.lock.allow_unsafe_store,
    )
    .await
}

/// SIGTERM and SIGINT, caught from the moment they are listened for.
struct ShutdownSignals {
    /// None when the handlers could not be installed (the signals then keep their default).
    streams: Option<(tokio::signal::unix::Signal, tokio::signal::unix::Signal)>,
}

impl ShutdownSignals {
    fn listen() -> ShutdownSignals {
        use tokio::signal::unix::{SignalKind, signal};
        let streams = match (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) {
            (Ok(term), Ok(int)) => Some((term, int)),
            _ => None,
        };
        ShutdownSignals { streams }
    }

    /// The name of the first signal received (at once if one came already).
    async fn recv(&mut self) -> &'static str {
        let Some((term, int)) = &mut self.streams else {
            return std::future::pending().await;
        };
        tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        }
    }
}

/// What the run will do: the files to read and what it may write and delete.
struct Work {
    files: Vec<ObjectMeta>,
    /// `files` as the lineage columns name them; row file ids index this.
    shared_files: Arc<[FileInfo]>,
    claims: Claims,
}

/// The stages of a run, in order; each hands the next what it needs.
async fn execute(
    config: &Config,
    target: &Target,
    lock: &TableLock,
    run_id: &str,
    store: StoreCheck,
    interactive: bool,
    stats: &mut RunStats,
) -> Result<()> {
    let (loaded, table) = target.load_state(run_id).await?;
    let table = table.as_ref();
    let settings = TableSettings::of(config);
    check_settings(config, target, table, &loaded.state, &settings)?;
    let mut work = plan_work(config, target, table, &loaded).await?;
    let spill = SpillDir::new(config.run.spill_dir.clone());
    let compactor = Compactor {
        keys: KeyColumns::new(&config.schema),
        order: config.run.order,
        files: FileTable::new(work.shared_files.clone()),
    };
    let mut router = DateRouter::new(
        ingest_budget(config),
        config.run.threads,
        unit_limit(config),
        spill.clone(),
        compactor,
    );
    let per_file = ingest(
        config,
        target,
        run_id,
        &work.files,
        &mut router,
        stats,
        interactive,
    )
    .await?;
    check_reject_ratio(config, target, run_id, stats, true)?;
    crate::faults::pause_point("after_read").await;
    let dates = router.dates_largest_first();
    table.check_write(config.run.mode, &dates)?;
    let keys: Vec<String> = dates.iter().map(|d| table.key_for(*d)).collect();
    if config.run.mode == Mode::Incremental {
        let policy = config.target.existing_objects;
        work.claims
            .check_new_keys(keys.iter().cloned(), &target.storage, table, policy)
            .await?;
    }
    let mut commit = TableCommit::new(target, table, lock, run_id, loaded);
    commit.announce(&[keys, table.side_keys()].concat()).await?;
    let partitions = merge_and_write(config, &commit, &work, &mut router, &spill, stats, interactive).await?;
    if config.run.mode == Mode::Full {
        commit
            .delete_unwritten(&work.claims, &stats.dates_written.clone(), |deleted| {
                stats.table_changed = true;
                stats.objects_deleted.push(deleted.key);
                if let Some(date) = deleted.date_emptied {
                    stats.dates_deleted.insert(format_days(date));
                }
            })
            .await?;
    }
    let records = file_records(run_id, &work.files, &per_file);
    let table_version = commit.commit_table(config.run.mode, &records).await?;
    stats.table_version = table_version;
    let facts = TableFacts { settings, store };
    commit
        .commit_state(
            config.run.mode,
            Some(facts),
            records,
            table_version,
            partitions,
            &stats.dates_deleted,
        )
        .await?;
    stats.table_changed = true;
    auto_optimize(config, target, lock, run_id, &stats.dates_written).await;
    Ok(())
}

/// After a run's commit, under its lock: the dates it wrote that hold more files or deleted
/// rows than `optimize.auto_max_files` / `optimize.auto_max_deleted_share` allow are compacted
/// in a version of their own (`optimize`). The run's rows are committed whatever happens here,
/// so a compaction that fails (another writer's commit conflicting with it) is a warning: the
/// next run or `lakeload optimize` tries again.
async fn auto_optimize(
    config: &Config,
    target: &Target,
    lock: &TableLock,
    run_id: &str,
    written: &std::collections::BTreeSet<i32>,
) {
    let compacted = async {
        let (loaded, table) = target.load_state(run_id).await?;
        let files = table.stored_files();
        let due = |date: i32| {
            written.contains(&date)
                && files
                    .get(&date)
                    .is_some_and(|f| crate::maintain::optimize::due(f, &config.optimize))
        };
        let planned = crate::maintain::optimize::plan(&files, config.optimize.target_file_size, Some(&due));
        crate::maintain::optimize::compact(config, target, lock, run_id, loaded, table, &files, planned).await
    };
    match compacted.await {
        Ok(done) if !done.dates.is_empty() => tracing::info!(
            "optimized {} date(s) past optimize.auto_max_files or auto_max_deleted_share{}",
            done.dates.len(),
            done.table_version
                .map_or(String::new(), |v| format!(": version {v}"))
        ),
        Ok(_) => {}
        Err(e) => tracing::warn!(
            "the run is committed, but optimizing the dates it left with many files or deleted \
             rows failed ({e}); the next run or `lakeload optimize` tries again"
        ),
    }
}

/// An incremental run must merge under the settings the table was built with (SPEC §3): one
/// whose settings differ from those `state` recorded is refused. A state of an earlier
/// version records none: the keys of its objects still tell the layout it was built in.
pub(crate) fn check_settings(
    config: &Config,
    target: &Target,
    table: &dyn Transaction,
    state: &State,
    run: &TableSettings,
) -> Result<()> {
    if config.run.mode == Mode::Full {
        return Ok(());
    }
    let changes = match &state.settings {
        Some(recorded) => recorded.changes(run),
        None => state
            .partitions
            .values()
            .find(|p| table.date_of_key(&p.key).is_none())
            .map(|other| SettingChange {
                key: "target.layout",
                table: format!("objects such as {}", other.key),
                run: run.layout.clone(),
            })
            .into_iter()
            .collect(),
    };
    match changes.is_empty() {
        true => Ok(()),
        false => Err(changed_settings_error(
            &target.storage.root().to_string(),
            &changes,
        )),
    }
}

/// Plan: the source listing against the state (SPEC §4), and the table's objects against
/// what it owns.
async fn plan_work(
    config: &Config,
    target: &Target,
    table: &dyn Transaction,
    loaded: &Loaded,
) -> Result<Work> {
    let state = &loaded.state;
    let mode = config.run.mode;
    let listing = target.list_sources(config).await?;
    let plan: Plan = plan(mode, listing, state, config.run.on_changed_file)?;
    let files: Vec<ObjectMeta> = plan.to_process().cloned().collect();
    let shared_files = files
        .iter()
        .map(|f| FileInfo {
            key: f.key.as_str().into(),
            modified_micros: f.last_modified.timestamp_micros(),
        })
        .collect();
    let claims = Claims::survey(
        mode,
        config.target.existing_objects,
        &target.storage,
        table,
        loaded,
    )
    .await?;
    if mode == Mode::Full && files.is_empty() && !claims.present.is_empty() {
        return Err(Error::Other(format!(
            "no source file under {} matches source.pattern = {}; a full run would empty the \
             table, so it stops here. Check source.url and source.pattern",
            config.source.url, config.source.pattern
        )));
    }
    tracing::info!(
        "plan: {} file(s) to read ({} new, {} changed, {} unchanged), {} bytes",
        files.len(),
        plan.count(crate::plan::FileStatus::New),
        plan.count(crate::plan::FileStatus::Changed),
        plan.count(crate::plan::FileStatus::Unchanged),
        files.iter().map(|f| f.size).sum::<u64>()
    );
    Ok(Work {
        files,
        shared_files,
        claims,
    })
}

/// Merge each date with what the table holds and write it, `run.threads` dates at a time.
/// Returns `(date, rows, bytes)` of every date written.
#[allow(clippy::too_many_arguments)]
async fn merge_and_write(
    config: &Config,
    commit: &TableCommit<'_>,
    work: &Work,
    router: &mut DateRouter,
    spill: &Arc<SpillDir>,
    stats: &mut RunStats,
    interactive: bool,
) -> Result<Vec<(i32, u64, u64)>> {
    let mode = config.run.mode;
    let dates = router.dates_largest_first();
    tracing::info!("merging {} date(s)", dates.len());
    let date_bar = crate::read::progress::count_bar(dates.len() as u64, "dates written", interactive);
    let keys = Arc::new(KeyColumns::new(&config.schema));
    let order = config.run.order;
    let unit_limit = unit_limit(config);
    let table = commit.table();
    let compacted = router.superseded();
    let concurrency = merge_concurrency(config);
    // Four units per thread: one merging, the rest waiting for the encoder or loading.
    let memory = Arc::new(MergeMemory::new(
        (unit_limit * concurrency) as u64,
        4 * concurrency,
    ));
    let total_bytes = router.total_bytes();
    // An incremental run's date waits on storage between its steps (its stored files read,
    // its new file written): twice as many dates in flight as merge at once keep the cores
    // busy meanwhile (one more file into 30 dates of 10 M lines, deletion vectors: 0.87 →
    // 0.76 s). A date whose stored rows are merged whole holds a merge's working memory, so
    // no more of those than merge at once take their turn (`whole_merges`; without it, at
    // 256 MiB the peak went from 1.07x the limit to 1.3x): the others append new rows or
    // merge only the stored rows they mark.
    let dates_in_flight = match mode {
        Mode::Incremental => 2 * concurrency,
        Mode::Full => concurrency,
    };
    let whole_merges = Arc::new(tokio::sync::Semaphore::new(concurrency));
    // Stored rows to mark that a key check keeps decoded for its merge: half a unit per date
    // merging, shared by the dates in flight.
    let kept_room = unit_limit * concurrency / (2 * dates_in_flight);
    let group_bytes = row_group_bytes(config);
    let mut merges = futures::stream::iter(dates)
        .map(|date| {
            let rows = router.take(date);
            let unit_limit = date_unit_limit(
                unit_limit,
                rows.bytes(),
                rows.spilled_by_bucket(),
                total_bytes,
                concurrency,
            );
            let (keys, spill, memory) = (keys.clone(), spill.clone(), memory.clone());
            let whole_merges = whole_merges.clone();
            let files = FileTable::new(work.shared_files.clone());
            // Each write is conditional on the version the run merged with or found; only
            // the table's own stored rows are merged (incremental runs).
            let place = work
                .claims
                .place(&table.stored_keys(date), mode == Mode::Incremental);
            let schema = &config.schema;
            async move {
                // A format that appends checks which stored files hold the new rows' keys
                // (only while those rows are in memory): first by the files' key statistics
                // (those they rule out are not even read), then by the keys themselves.
                let checks_keys = table.appends() && !rows.spilled();
                let (stored, seen) = match place.merge {
                    true if checks_keys => {
                        let keys = NewKeys::of(rows.blocks(), schema);
                        table.read_date_for(date, &keys, &spill).await?
                    }
                    true => table.read_date(date, &spill).await?,
                    false => (None, place.seen),
                };
                let (rows, stored, to_mark) = match stored {
                    Some(stored) if checks_keys => {
                        append_or_merge(table, date, rows, stored, kept_room).await?
                    }
                    stored => (rows, stored, Vec::new()),
                };
                let _turn = match stored.is_some() && to_mark.is_empty() {
                    true => Some(whole_merges.acquire_owned().await.map_err(Error::other)?),
                    false => None,
                };
                let encoder = table.encoder(date, &spill, group_bytes).await?;
                let merged = tokio::task::spawn_blocking(move || {
                    let started = std::time::Instant::now();
                    let merge = DateMerge {
                        keys: &keys,
                        order,
                        memory: &memory,
                        threads: concurrency,
                        unit_limit,
                        spill: &spill,
                    };
                    let merged = merge.run(rows, stored, files, encoder);
                    tracing::debug!("merged {} in {:?}", format_days(date), started.elapsed());
                    merged
                })
                .await
                .map_err(Error::other)??;
                // The stored rows the new ones superseded are marked deleted; those that won
                // stay as they are.
                for (key, positions) in to_mark {
                    let stayed: std::collections::HashSet<u64> = merged
                        .stayed
                        .iter()
                        .filter(|(k, _)| *k == key)
                        .map(|(_, p)| *p)
                        .collect();
                    let lost: Vec<u64> = positions.into_iter().filter(|p| !stayed.contains(p)).collect();
                    if !lost.is_empty() {
                        table.mark_deleted(&key, &lost);
                    }
                }
                let bytes = commit.write_date(date, merged.body, seen).await?;
                Ok::<_, Error>((date, merged.counts, merged.rows, bytes))
            }
        })
        .buffer_unordered(dates_in_flight);
    let mut merged = MergeCounts {
        superseded: compacted,
        ..MergeCounts::default()
    };
    let mut partitions = Vec::new();
    while let Some(result) = merges.next().await {
        let (date, counts, rows, bytes) = result?;
        if let Some(bar) = &date_bar {
            bar.inc();
        }
        partitions.push((date, rows, bytes));
        stats.table_changed = true;
        stats.dates_written.insert(date);
        stats.bytes_written += bytes;
        merged += counts;
        stats.counts.rows_inserted = merged.inserted;
        stats.counts.rows_updated = merged.updated;
        stats.counts.rows_superseded = merged.superseded;
    }
    Ok(partitions)
}

/// A date's stored files that hold none of its new rows' keys stay as they are
/// ([`Transaction::keep`]): only the others are read whole and merged with the new rows, into
/// a file beside the kept ones (no file at all is merged when every file is kept: the new
/// rows are appended). A table that marks deletes ([`Transaction::marks_deletes`]) keeps
/// those files too: only the keys and lineage of their rows holding the new keys are read and
/// merged with the new rows; they are returned, by file, and those the merge finds superseded
/// are marked deleted where they are (the winners among them stay as they are). Only the
/// stored files' key columns are read to tell, on a blocking thread; a hash shared by two
/// different keys only sends a file (or a row) to the merge. Up to `room` bytes of the rows to
/// mark stay decoded from that read for the merge (see [`StoredRows::split_by_keys`]).
#[allow(clippy::type_complexity)]
async fn append_or_merge(
    table: &dyn Transaction,
    date: i32,
    rows: DateRows,
    stored: Box<dyn StoredRows>,
    mut room: usize,
) -> Result<(DateRows, Option<Box<dyn StoredRows>>, Vec<(String, Vec<u64>)>)> {
    let mark = table.marks_deletes();
    let (rows, split) = tokio::task::spawn_blocking(move || {
        let new: KeyHashes = rows
            .blocks()
            .iter()
            .flat_map(|block| (0..block.len()).map(move |r| block.hash(r)))
            .collect();
        let split = stored.split_by_keys(&new, mark, &mut room);
        (rows, split)
    })
    .await
    .map_err(Error::other)?;
    match split? {
        SplitByKeys::Unknown(stored) => Ok((rows, Some(stored), Vec::new())),
        SplitByKeys::Known {
            untouched,
            holding,
            marked,
        } => {
            // Files holding rows to mark stay: the date's new file goes beside them.
            let staying: Vec<String> = marked.iter().map(|(key, _)| key.clone()).collect();
            table.keep(&staying);
            if !marked.is_empty() {
                tracing::debug!(
                    "{}: {} stored row(s) in {} file(s) hold new rows' keys: compared with them, \
                     those superseded marked deleted where they are",
                    format_days(date),
                    marked.iter().map(|(_, p)| p.len()).sum::<usize>(),
                    marked.len()
                );
            }
            if !untouched.is_empty() {
                tracing::debug!(
                    "{}: {} stored file(s) hold none of the new keys and stay; {}",
                    format_days(date),
                    untouched.len(),
                    if holding.is_some() {
                        "the others are merged"
                    } else {
                        "the new rows are appended"
                    }
                );
                table.keep(&untouched);
            }
            Ok((rows, holding, marked))
        }
    }
}

/// Writes the rejects, the summary and the log, then releases the lock.
async fn finish(
    config: &Config,
    target: &Target,
    lock: TableLock,
    run_id: &str,
    started_at: DateTime<Utc>,
    stats: RunStats,
    result: &Result<()>,
) -> RunSummary {
    let storage = &target.storage;
    let rejects_url = match stats.rejects.finish() {
        Ok(None) => None,
        Ok(Some(path)) => {
            let key = rejects_key(run_id);
            match storage.put_file(&key, &path, None).await {
                Ok(()) => Some(storage.url(&key)),
                Err(e) => {
                    tracing::error!("could not write the rejects file: {e}");
                    None
                }
            }
        }
        Err(e) => {
            tracing::error!("could not read back the spilled rejects: {e}");
            None
        }
    };
    let finished_at = Utc::now();
    let (status, code, error) = match result {
        Ok(()) => ("succeeded", exit_code::OK, None),
        Err(e) => ("failed", e.exit_code(), Some(e.to_string())),
    };
    let summary = RunSummary {
        run_id: run_id.to_string(),
        mode: config.run.mode,
        status: status.to_string(),
        started_at,
        finished_at,
        duration_seconds: (finished_at - started_at).num_milliseconds() as f64 / 1000.0,
        exit_code: code,
        error,
        source_url: config.source.url.to_string(),
        target_url: config.target.url.to_string(),
        files: stats.files.iter().map(|f| f.key.clone()).collect(),
        manifest: stats.files,
        bytes_read: stats.bytes_read,
        counts: stats.counts,
        dates_written: stats.dates_written.iter().map(|d| format_days(*d)).collect(),
        dates_deleted: stats.dates_deleted.into_iter().collect(),
        objects_deleted: stats.objects_deleted,
        bytes_written: stats.bytes_written,
        memory_limit: config.run.memory_limit,
        memory_limit_chosen: config.run.memory_limit_chosen.clone(),
        bytes_spilled: stats.bytes_spilled,
        table_changed: stats.table_changed,
        table_version: stats.table_version,
        rejects_url,
        log_url: Some(storage.url(&log_key(run_id))),
        state_url: Some(target.state.url()),
        lakeload_version: env!("CARGO_PKG_VERSION").to_string(),
    };
    match &summary.error {
        None => tracing::info!("run {run_id} succeeded in {:.1}s", summary.duration_seconds),
        Some(e) => tracing::error!("run {run_id} failed: {e}"),
    }
    if let Ok(json) = serde_json::to_vec_pretty(&summary)
        && let Err(e) = storage.put(&summary_key(run_id), Bytes::from(json)).await
    {
        tracing::error!("could not write the run summary: {e}");
    }
    if let Some(capture) = crate::runlog::capture()
        && let Err(e) = storage
            .put(&log_key(run_id), Bytes::from(capture.contents()))
            .await
    {
        tracing::error!("could not upload the run log: {e}");
    }
    // Uploads cut short (an interrupted run) are aborted before the lock goes.
    storage.settle().await;
    if let Err(e) = lock.release().await {
        tracing::error!("could not release the lock: {e}; remove it with `lakeload unlock`");
    }
    summary
}
