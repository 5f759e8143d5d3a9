//! One run, end to end: lock → plan → read & clean → route by date → merge each date → write →
//! commit state → summary, log and rejects (SPEC §4–6).

use std::collections::BTreeSet;
use std::sync::Arc;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures::{StreamExt, TryStreamExt};

use crate::block::KeyColumns;
use crate::config::{Config, Mode};
use crate::date_merge::{DateMerge, MergeMemory};
use crate::dates::format_days;
use crate::error::{Error, Result, exit_code};
use crate::lock::TableLock;
use crate::merge::{FileInfo, FileTable, MergeCounts};
use crate::ownership::{Claims, Owned};
use crate::plan::{Plan, plan};
use crate::reader::{DateBlocks, FileCounts, ReadOptions, read_source};
use crate::rejects::{RejectGate, RejectsWriter, rejects_key};
use crate::router::{Compactor, DateRouter};
use crate::row::{LineParser, Reject};
use crate::settings::TableSettings;
use crate::spill::SpillDir;
use crate::state::{
    FileRecord, JsonStateStore, Loaded, PartitionRecord, STATE_VERSION, State, StateStore, StoreCheck,
};
use crate::storage::{self, DynStorage, ObjectMeta};
use crate::summary::{ManifestEntry, RowCounts, RunSummary};
use crate::table::{ParquetTable, Table};

/// A new run id: sortable by start time, unique enough to never collide in one table.
pub fn new_run_id(now: DateTime<Utc>) -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(now.timestamp_nanos_opt().unwrap_or_default() as u128);
    h.write_u32(std::process::id());
    format!(
        "{}-{:06x}",
        now.format("%Y%m%dT%H%M%S%3fZ"),
        h.finish() & 0xff_ffff
    )
}

pub fn summary_key(run_id: &str) -> String {
    format!("_lakeload/runs/{run_id}.json")
}

pub fn log_key(run_id: &str) -> String {
    format!("_lakeload/logs/{run_id}.log")
}

/// Storage, table and state of one configuration.
pub struct Target {
    pub source: DynStorage,
    pub storage: DynStorage,
    pub table: Arc<dyn Table>,
    pub state: Arc<dyn StateStore>,
}

impl Target {
    pub async fn open(config: &Config) -> Result<Target> {
        let source = storage::open(&config.source.url, &config.aws).await?;
        let storage = storage::open(&config.target.url, &config.aws).await?;
        Ok(Target::new(config, source, storage))
    }

    /// A target over given storage (e.g. instrumented in tests).
    pub fn new(config: &Config, source: DynStorage, storage: DynStorage) -> Target {
        let schema = Arc::new(config.schema.clone());
        Target {
            source,
            table: Arc::new(ParquetTable::new(storage.clone(), config.target.layout, schema)),
            state: Arc::new(JsonStateStore::new(storage.clone())),
            storage,
        }
    }

    /// Source files matching `source.pattern`, at any depth. A table root inside the source
    /// folder is skipped whole: its rejects (`*.jsonl.gz`) and data are never read as source.
    pub async fn list_sources(&self, config: &Config) -> Result<Vec<ObjectMeta>> {
        if let crate::location::Location::Local(path) = &config.source.url
            && !path.is_dir()
        {
            return Err(Error::Config(format!(
                "source.url = {}: no such folder; point it at the folder holding the .gz files",
                path.display()
            )));
        }
        let table_root = crate::location::relative_under(&config.source.url, &config.target.url)
            .map(|rel| format!("{rel}/"));
        let listing = self.source.list("").await?;
        Ok(listing
            .into_iter()
            .filter(|o| {
                table_root
                    .as_ref()
                    .is_none_or(|root| !o.key.starts_with(root.as_str()))
            })
            .filter(|o| config.source.pattern.matches(storage::file_name(&o.key)))
            .collect())
    }
}

/// Everything a run learns as it goes; becomes the summary even when the run fails midway.
struct RunStats {
    files: Vec<ManifestEntry>,
    bytes_read: u64,
    counts: RowCounts,
    dates_written: BTreeSet<i32>,
    dates_deleted: BTreeSet<String>,
    objects_deleted: Vec<String>,
    bytes_written: u64,
    bytes_spilled: u64,
    table_changed: bool,
    rejects: RejectsWriter,
}

impl RunStats {
    fn new(config: &Config) -> Self {
        RunStats {
            files: Vec::new(),
            bytes_read: 0,
            counts: RowCounts::default(),
            dates_written: BTreeSet::new(),
            dates_deleted: BTreeSet::new(),
            objects_deleted: Vec::new(),
            bytes_written: 0,
            bytes_spilled: 0,
            table_changed: false,
            rejects: RejectsWriter::new(config.run.spill_dir.clone()),
        }
    }
}

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
    let run_id = config
        .run
        .run_id
        .clone()
        .unwrap_or_else(|| new_run_id(started_at));
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
        signal = shutdown_signal() => {
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
    crate::store_check::verify(
        &target.storage,
        run_id,
        recorded.as_ref(),
        config.lock.allow_unsafe_store,
    )
    .await
}

async fn shutdown_signal() -> &'static str {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt()))
    else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    }
}

/// What the run will do: the files to read and what it may write and delete.
struct Work {
    files: Vec<ObjectMeta>,
    /// `files` as the lineage columns name them; row file ids index this.
    shared_files: Arc<[FileInfo]>,
    claims: Claims,
}

/// How `run.memory_limit` is shared out. Reading buffers rows up to half of it (the rest of
/// the process — decoders, batches in flight, polars — lives in the other half); merging
/// takes one unit per concurrent date, each a quarter of its share, because a unit's merge
/// holds its rows, their key tables, the kept rows' columns and the encoded object at once.
fn ingest_budget(config: &Config) -> u64 {
    config.run.memory_limit / 2
}

/// Files read at once: `run.threads`, as far as a quarter of the budget holds each reader
/// ([`crate::reader::READER_BYTES`]) and one batch in flight
/// ([`crate::reader::BATCH_BYTES`]); at least one.
pub fn reader_threads(config: &Config) -> usize {
    let each = crate::reader::READER_BYTES + crate::reader::BATCH_BYTES as u64;
    let fit = (config.run.memory_limit / 4 / each).max(1) as usize;
    config.run.threads.clamp(1, fit)
}

fn merge_concurrency(config: &Config) -> usize {
    config.run.threads.clamp(1, 8)
}

fn unit_limit(config: &Config) -> usize {
    (config.run.memory_limit as usize / 2 / merge_concurrency(config) / 4).max(4 << 10)
}

/// Rows an encoder holds before it writes a row group short of [`crate::table`]'s row count:
/// a share of the budget beside the merge units (two dates encode at once by default).
fn row_group_bytes(config: &Config) -> usize {
    (config.run.memory_limit / 32) as usize
}

/// The unit limit for one date of `date_bytes` (`spilled` if some are on disk), when the run
/// holds `total_bytes` and merges on `threads`.
///
/// Spilled rows come back in key-hash order, so merging and encoding them in lineage order
/// visits them scattered: a unit small enough to stay in the cache is much faster (late data
/// at 512 MiB: 7.5 s with 32 MiB units, 6.4 s with 4 MiB ones), but no smaller than a
/// level-0 hash bucket of the date, since a bucket cut again is written and read once more.
///
/// A date in memory and larger than one thread's share of the run is cut finer than the
/// budget asks: its units then merge on every thread side by side and are encoded as they
/// come, where one large unit would merge, then encode, on one core. Other dates in memory
/// keep whole units (cutting costs a copy of their rows, and other dates keep the threads
/// busy).
fn date_unit_limit(
    budget_limit: usize,
    date_bytes: u64,
    spilled: bool,
    total_bytes: u64,
    threads: usize,
) -> usize {
    if spilled {
        let bucket = date_bytes / crate::spill::BUCKETS as u64;
        return budget_limit.min((bucket + bucket / 4).max(SPILLED_UNIT) as usize);
    }
    let share = total_bytes / threads.max(1) as u64;
    if threads < 2 || date_bytes <= share {
        return budget_limit;
    }
    budget_limit.min((share / CUTS_PER_SHARE).max(MIN_CUT_UNIT) as usize)
}

/// Units of a spilled date are no larger than this when its hash buckets are smaller.
const SPILLED_UNIT: u64 = 4 << 20;

/// Units per thread's share of a date cut for parallelism: enough that the last unit's merge
/// and encoding are a small tail (one date of 16 M rows on 2 cores: 4 → 9.4 s, 8 → 8.0 s,
/// 16 → 7.6 s, 32 → 7.8 s).
const CUTS_PER_SHARE: u64 = 16;

/// Units of a date cut for parallelism are no smaller than this: below it, the fixed costs of
/// a unit (a key table, a row group) stop paying for themselves.
const MIN_CUT_UNIT: u64 = 32 << 20;

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
    let mut loaded = target.state.load().await?;
    let settings = TableSettings::of(config);
    check_settings(config, target, &loaded.state, &settings)?;
    let mut work = plan_work(config, target, &loaded).await?;
    let spill = SpillDir::new(config.run.spill_dir.clone());
    let compactor = Compactor {
        keys: KeyColumns::new(&config.schema),
        order: config.run.order,
        files: FileTable::new(work.shared_files.clone()),
    };
    let mut router = DateRouter::new(
        ingest_budget(config),
        config.run.threads,
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
    let keys: Vec<String> = router
        .dates_largest_first()
        .into_iter()
        .map(|d| target.table.key_for(d))
        .collect();
    if config.run.mode == Mode::Incremental {
        let policy = config.target.existing_objects;
        work.claims
            .check_new_keys(
                keys.iter().cloned(),
                &target.storage,
                target.table.as_ref(),
                policy,
            )
            .await?;
    }
    announce(target, lock, run_id, &mut loaded, &keys).await?;
    let partitions = merge_and_write(
        config,
        target,
        lock,
        &work,
        &mut router,
        &spill,
        stats,
        interactive,
    )
    .await?;
    if config.run.mode == Mode::Full {
        delete_unwritten(target, lock, &work.claims, stats).await?;
    }
    let facts = TableFacts { settings, store };
    commit_state(
        target,
        lock,
        run_id,
        config.run.mode,
        loaded,
        facts,
        &work.files,
        &per_file,
        partitions,
        stats,
    )
    .await
}

/// An incremental run must merge under the settings the table was built with (SPEC §3).
pub(crate) fn check_settings(
    config: &Config,
    target: &Target,
    state: &State,
    settings: &TableSettings,
) -> Result<()> {
    match config.run.mode {
        Mode::Full => Ok(()),
        Mode::Incremental => crate::settings::check_incremental(
            state,
            settings,
            target.table.as_ref(),
            &target.storage.root().to_string(),
        ),
    }
}

/// Before the first data write: the keys this run will write that the table does not own
/// yet go into the state's announced writes, so a crash after writing them leaves objects
/// the table knows as its own. The announcement changes nothing else in the state.
async fn announce(
    target: &Target,
    lock: &TableLock,
    run_id: &str,
    loaded: &mut Loaded,
    keys: &[String],
) -> Result<()> {
    let owned = Owned::of(&loaded.state);
    let new: Vec<String> = keys.iter().filter(|k| !owned.contains(k)).cloned().collect();
    if new.is_empty() {
        return Ok(());
    }
    let announced = new.len();
    let mut state = loaded.state.clone();
    state.unconfirmed.extend(new);
    state.unconfirmed.sort();
    state.unconfirmed.dedup();
    state.version = STATE_VERSION;
    state.updated_at = Some(Utc::now());
    let url = target.state.url();
    let etag = lock
        .fenced(&url, target.state.commit(&state, loaded.etag.as_deref()))
        .await?;
    tracing::debug!("run {run_id} announced {announced} new object(s) in the state");
    *loaded = Loaded {
        state,
        etag: Some(etag),
    };
    Ok(())
}

/// Plan: the source listing against the state (SPEC §4), and the table's objects against
/// what it owns.
async fn plan_work(config: &Config, target: &Target, loaded: &Loaded) -> Result<Work> {
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
        target.table.as_ref(),
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

/// Read & clean every file into the router, and count what was read.
async fn ingest(
    config: &Config,
    target: &Target,
    run_id: &str,
    files: &[ObjectMeta],
    router: &mut DateRouter,
    stats: &mut RunStats,
    interactive: bool,
) -> Result<Vec<FileCounts>> {
    let per_file = read_all(config, target, run_id, files, router, stats, interactive).await?;
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
fn check_reject_ratio(
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

/// Merge each date with what the table holds and write it, `run.threads` dates at a time.
/// Returns `(date, rows, bytes)` of every date written.
#[allow(clippy::too_many_arguments)]
async fn merge_and_write(
    config: &Config,
    target: &Target,
    lock: &TableLock,
    work: &Work,
    router: &mut DateRouter,
    spill: &Arc<SpillDir>,
    stats: &mut RunStats,
    interactive: bool,
) -> Result<Vec<(i32, u64, u64)>> {
    let mode = config.run.mode;
    let dates = router.dates_largest_first();
    tracing::info!("merging {} date(s)", dates.len());
    let date_bar = crate::progress::count_bar(dates.len() as u64, "dates written", interactive);
    let keys = Arc::new(KeyColumns::new(&config.schema));
    let order = config.run.order;
    let unit_limit = unit_limit(config);
    let table = target.table.clone();
    let compacted = router.superseded();
    let concurrency = merge_concurrency(config);
    // Bytes of units in memory at once, across all dates: what `unit_limit` is sized for.
    let memory = Arc::new(MergeMemory::new((unit_limit * concurrency) as u64));
    let total_bytes = router.total_bytes();
    let group_bytes = row_group_bytes(config);
    let mut merges = futures::stream::iter(dates)
        .map(|date| {
            let rows = router.take(date);
            let unit_limit =
                date_unit_limit(unit_limit, rows.bytes(), rows.spilled(), total_bytes, concurrency);
            let (keys, table, spill, memory) = (keys.clone(), table.clone(), spill.clone(), memory.clone());
            let files = FileTable::new(work.shared_files.clone());
            // Each write is conditional on the version the run merged with or found; only
            // the table's own stored rows are merged (incremental runs).
            let key = table.key_for(date);
            let place = work.claims.place(&key, mode == Mode::Incremental);
            async move {
                let (stored, seen) = match place.merge {
                    true => table.read_date(date, &spill).await?,
                    false => (None, place.seen),
                };
                let encoder = table.encoder(&spill, group_bytes)?;
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
                crate::faults::pause_point("before_date_write").await;
                lock.ensure_held().await?;
                // A stall here (after the check, before the PUT lands) is what the conditional
                // write in `write_date` guards against.
                crate::faults::pause_point("date_write_checked").await;
                let url = target.storage.url(&key);
                let bytes = lock
                    .bounded(&url, table.write_date(date, merged.body, seen))
                    .await?;
                crate::faults::pause_point("after_date_write").await;
                Ok::<_, Error>((date, merged.counts, merged.rows, bytes))
            }
        })
        .buffer_unordered(concurrency);
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

/// Full mode: the table's objects this run did not rewrite (dates with no rows left, objects
/// of an earlier layout, announced writes of a crashed run) go last. Nothing else is touched.
async fn delete_unwritten(
    target: &Target,
    lock: &TableLock,
    claims: &Claims,
    stats: &mut RunStats,
) -> Result<()> {
    let written: BTreeSet<String> = stats
        .dates_written
        .iter()
        .map(|d| target.table.key_for(*d))
        .collect();
    for (key, etag) in claims.unwritten(&written) {
        crate::faults::pause_point("before_delete").await;
        let url = target.storage.url(&key);
        lock.fenced(&url, target.table.delete(&key, etag.as_deref()))
            .await?;
        stats.table_changed = true;
        stats.objects_deleted.push(key.clone());
        if let Some(date) = crate::table::date_of_file_name(&key)
            && !stats.dates_written.contains(&date)
        {
            stats.dates_deleted.insert(format_days(date));
        }
    }
    Ok(())
}

/// What the state records about the table besides its files: how it was built and what
/// its store guarantees.
struct TableFacts {
    settings: TableSettings,
    store: StoreCheck,
}

/// Commit the state: every processed file, after its rows are in the table; conditional on
/// the state this run loaded, so a run that lost its lock cannot overwrite a newer state.
#[allow(clippy::too_many_arguments)]
async fn commit_state(
    target: &Target,
    lock: &TableLock,
    run_id: &str,
    mode: Mode,
    loaded: Loaded,
    facts: TableFacts,
    files: &[ObjectMeta],
    per_file: &[FileCounts],
    partitions: Vec<(i32, u64, u64)>,
    stats: &mut RunStats,
) -> Result<()> {
    let records = files.iter().zip(per_file).map(|(meta, counts)| FileRecord {
        key: meta.key.clone(),
        size: meta.size,
        etag: meta.etag.clone(),
        last_modified: meta.last_modified,
        rows: counts.rows,
        rows_rejected: counts.rejected,
        dates: counts.dates.iter().map(|d| format_days(*d)).collect(),
        run_id: run_id.to_string(),
    });
    let mut state = match mode {
        Mode::Full => State::default(),
        Mode::Incremental => loaded.state,
    };
    state.settings = Some(facts.settings);
    state.store = Some(facts.store);
    state.upsert(records);
    for (date, rows, bytes) in partitions {
        let record = PartitionRecord {
            key: target.table.key_for(date),
            rows,
            bytes,
            run_id: run_id.to_string(),
        };
        state.partitions.insert(format_days(date), record);
    }
    for date in &stats.dates_deleted {
        state.partitions.remove(date);
    }
    // Announced writes are confirmed by the partition records (a full run also deleted
    // every owned object it did not write).
    let recorded: BTreeSet<&str> = state.partitions.values().map(|p| p.key.as_str()).collect();
    let confirmed: Vec<String> = state
        .unconfirmed
        .iter()
        .filter(|k| !recorded.contains(k.as_str()))
        .cloned()
        .collect();
    state.unconfirmed = confirmed;
    state.version = STATE_VERSION;
    state.updated_at = Some(Utc::now());
    state.last_run_id = Some(run_id.to_string());
    crate::faults::pause_point("before_state_commit").await;
    let url = target.state.url();
    lock.fenced(&url, target.state.commit(&state, loaded.etag.as_deref()))
        .await?;
    stats.table_changed = true;
    Ok(())
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
    let progress = crate::progress::Progress::start(
        files.len() as u64,
        files.iter().map(|f| f.size).sum(),
        interactive,
    );
    // One batch in flight per reader: the channel's depth follows the budget too.
    let readers = reader_threads(config);
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Ingested>(readers);
    let options = ReadOptions::for_files(config, files.len());
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
                            .map_err(|e| {
                                Error::Other(format!("cannot spill rejects to disk (run.spill_dir): {e}"))
                            })?;
                    }
                    tokio::task::block_in_place(|| router.push(blocks)).map_err(|e| {
                        Error::Other(format!("cannot spill rows to disk (run.spill_dir): {e}"))
                    })?;
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

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    /// Many similar dates keep the budget's units; one date that dominates the run is cut
    /// finer, never below the floor and never above the budget's unit.
    #[test]
    fn only_a_dominant_date_is_cut_finer() {
        let budget = 1 << 30;
        // 30 dates of 100 MiB on 2 threads: none holds a thread's share.
        assert_eq!(date_unit_limit(budget, 100 * MIB, false, 3000 * MIB, 2), budget);
        // One date of 3.2 GiB: 16 units per thread's share.
        assert_eq!(
            date_unit_limit(budget, 3200 * MIB, false, 3200 * MIB, 2),
            (100 * MIB) as usize
        );
        // A small run's one date: cut, but not below the floor.
        assert_eq!(
            date_unit_limit(budget, 40 * MIB, false, 40 * MIB, 2),
            MIN_CUT_UNIT as usize
        );
        // A tight budget's units are already small.
        assert_eq!(
            date_unit_limit(16 << 20, 3200 * MIB, false, 3200 * MIB, 2),
            16 << 20
        );
        // One thread: nothing runs beside the date, so cutting it gains nothing.
        assert_eq!(date_unit_limit(budget, 3200 * MIB, false, 3200 * MIB, 1), budget);
    }

    /// A spilled date merges in small units, but each holds at least a whole hash bucket of
    /// it, and never more than the budget allows.
    #[test]
    fn a_spilled_date_merges_in_small_units_of_whole_buckets() {
        let budget = 32 << 20;
        assert_eq!(
            date_unit_limit(budget, 40 * MIB, true, 2000 * MIB, 2),
            SPILLED_UNIT as usize
        );
        // 2 GiB spilled: a bucket is 8 MiB; a unit takes it with room to spare.
        let unit = date_unit_limit(budget, 2048 * MIB, true, 2048 * MIB, 2);
        assert_eq!(unit, (10 * MIB) as usize);
        assert_eq!(
            date_unit_limit(budget, 64 * 1024 * MIB, true, 64 * 1024 * MIB, 2),
            budget
        );
    }
}
