//! `lakeload plan`: what a run would do, without changing anything or taking the lock.
//!
//! The files to process are read and parsed (nothing is kept) so the dates they touch are the
//! exact dates the run would rewrite, not a guess from file names.

use std::collections::BTreeSet;
use std::sync::Arc;

use futures::{StreamExt, TryStreamExt};
use serde::Serialize;

use crate::commit::ownership::{Owned, Survey};
use crate::config::{Config, Mode};
use crate::dates::format_days;
use crate::error::Result;
use crate::plan::{FileStatus, PlannedFile, plan};
use crate::read::reader::{ReadOptions, ReadProgress, read_source};
use crate::read::row::LineParser;
use crate::report::{bytes, thousands};
use crate::state::settings::{SettingChange, TableSettings};
use crate::target::Target;

#[derive(Debug, Clone, Serialize)]
pub struct Preview {
    pub mode: Mode,
    pub files_new: usize,
    pub files_changed: usize,
    pub files_unchanged: usize,
    /// Files in the state that are gone from the source (kept in incremental mode, removed by full).
    pub files_deleted: Vec<String>,
    /// Files the run would read.
    pub files: Vec<PlannedFile>,
    pub bytes_to_read: u64,
    pub rows_to_read: u64,
    /// Dates whose object the run would write.
    pub dates_to_write: Vec<String>,
    /// Dates whose object a full run would delete (no rows left).
    pub dates_to_delete: Vec<String>,
    /// Size of the existing objects the run would read and replace (incremental) or replace.
    pub bytes_to_rewrite: u64,
    /// Keys of the table's own objects the run would delete (full mode: dates with no rows
    /// left, objects of an earlier layout).
    pub objects_to_delete: Vec<String>,
    /// Objects under the table root that the table did not write and that no run touches.
    pub foreign_objects: Vec<String>,
    /// Objects where the table stores its dates that it did not write (see
    /// `target.existing_objects`).
    pub objects_in_the_way: Vec<String>,
    /// Settings that differ from those the table was built with (a full run rebuilds under
    /// the new ones; an incremental run is refused).
    pub settings_changes: Vec<SettingChange>,
    /// The run's memory budget in bytes, and how it was chosen (`run.memory_limit`).
    pub memory_limit: u64,
    pub memory_limit_chosen: String,
    /// The table's current version (`target.format = delta`; none before the first run).
    pub table_version: Option<u64>,
    /// Dates holding more files or deleted rows than `optimize.auto_max_files` /
    /// `auto_max_deleted_share` allow now: a run that writes them compacts them after its
    /// commit; `lakeload optimize` compacts them (and any date of small files) at once.
    pub dates_to_optimize: Vec<String>,
}

pub async fn preview(config: &Config) -> Result<Preview> {
    let target = Target::open(config).await?;
    let (loaded, table) = target.load_state("plan").await?;
    let table = table.as_ref();
    let settings = TableSettings::of(config);
    crate::run::check_settings(config, &target, table, &loaded.state, &settings)?;
    let listing = target.list_sources(config).await?;
    let plan = plan(
        config.run.mode,
        listing,
        &loaded.state,
        config.run.on_changed_file,
    )?;
    let to_read: Vec<PlannedFile> = plan.files.iter().filter(|f| f.process).cloned().collect();

    let parser = Arc::new(LineParser::new(&config.schema, config.source.delimiter));
    let readers = crate::route::budget::reader_threads(config);
    let options = ReadOptions::for_files(config, to_read.len(), readers);
    let counts: Vec<crate::read::reader::FileCounts> = futures::stream::iter(to_read.iter().enumerate())
        .map(|(id, f)| {
            let (parser, source, meta, options) = (
                parser.clone(),
                target.source.clone(),
                f.meta.clone(),
                options.clone(),
            );
            async move {
                let progress = Arc::new(ReadProgress::default());
                read_source(
                    &source,
                    &meta,
                    parser,
                    id as u32,
                    options,
                    progress,
                    |_, _| Ok(()),
                )
                .await
            }
        })
        .buffered(readers)
        .try_collect()
        .await?;

    let dates: BTreeSet<String> = counts
        .iter()
        .flat_map(|c| c.dates.iter().map(|d| format_days(*d)))
        .collect();
    let existing = &loaded.state.partitions;
    let dates_to_delete: Vec<String> = match config.run.mode {
        Mode::Full => existing.keys().filter(|d| !dates.contains(*d)).cloned().collect(),
        Mode::Incremental => Vec::new(),
    };
    let bytes_to_rewrite = dates
        .iter()
        .filter_map(|d| existing.get(d))
        .map(|p| p.bytes)
        .sum();
    // Everything under the table root, sorted by whose it is.
    let mut owned = Owned::of(&loaded.state);
    let history: BTreeSet<String> = table.kept_for_history().into_iter().collect();
    for key in &history {
        owned.insert(key.clone());
    }
    let listing = target.storage.list("").await?;
    let survey = Survey::of(listing, &owned, table);
    let keys_to_write: BTreeSet<String> = counts
        .iter()
        .flat_map(|c| c.dates.iter().map(|d| table.key_for(*d)))
        .collect();
    let objects_to_delete = match config.run.mode {
        Mode::Full => survey
            .owned
            .iter()
            .map(|o| o.key.clone())
            // A format with versions keeps what it replaces for the versions before.
            .filter(|k| !keys_to_write.contains(k) && !history.contains(k) && !table.drops_by_record(k))
            .collect(),
        Mode::Incremental => Vec::new(),
    };
    // A first or full run refuses every object in the way; an incremental one those at the
    // dates it writes.
    let objects_in_the_way: Vec<String> = survey
        .in_the_way
        .iter()
        .map(|o| o.key.clone())
        .filter(|k| loaded.etag.is_none() || config.run.mode == Mode::Full || keys_to_write.contains(k))
        .collect();
    let settings_changes = match &loaded.state.settings {
        Some(recorded) => recorded.changes(&settings),
        None => Vec::new(),
    };
    let dates_to_optimize = table
        .stored_files()
        .iter()
        .filter(|(_, files)| crate::maintain::optimize::due(files, &config.optimize))
        .map(|(date, _)| format_days(*date))
        .collect();
    Ok(Preview {
        dates_to_optimize,
        mode: config.run.mode,
        files_new: plan.count(FileStatus::New),
        files_changed: plan.count(FileStatus::Changed),
        files_unchanged: plan.count(FileStatus::Unchanged),
        files_deleted: plan.deleted.clone(),
        bytes_to_read: to_read.iter().map(|f| f.meta.size).sum(),
        rows_to_read: counts.iter().map(|c| c.lines).sum(),
        files: to_read,
        dates_to_write: dates.into_iter().collect(),
        dates_to_delete,
        bytes_to_rewrite,
        objects_to_delete,
        foreign_objects: survey.foreign.into_iter().map(|o| o.key).collect(),
        objects_in_the_way,
        settings_changes,
        memory_limit: config.run.memory_limit,
        memory_limit_chosen: config.run.memory_limit_chosen.clone(),
        table_version: table.version(),
    })
}

pub fn format_preview(p: &Preview) -> String {
    let mut out = format!(
        "{} run would read {} file(s), {} ({} lines)\n",
        p.mode,
        p.files.len(),
        bytes(p.bytes_to_read),
        thousands(p.rows_to_read)
    );
    out += &format!(
        "  source files   {} new, {} changed, {} unchanged, {} gone from the source\n",
        p.files_new,
        p.files_changed,
        p.files_unchanged,
        p.files_deleted.len()
    );
    out += &format!(
        "  memory         {} ({})\n",
        bytes(p.memory_limit),
        p.memory_limit_chosen
    );
    if let Some(version) = p.table_version {
        out += &format!(
            "  table version  {version} (a run that changes the table commits {})\n",
            version + 1
        );
    }
    out += &format!(
        "  dates          {} to write ({} of existing objects rewritten), {} to delete\n",
        p.dates_to_write.len(),
        bytes(p.bytes_to_rewrite),
        p.dates_to_delete.len()
    );
    let files = p.files.iter().map(|f| {
        let status = match f.status {
            FileStatus::New => "new",
            FileStatus::Changed => "changed",
            FileStatus::Unchanged => "unchanged",
        };
        format!("{status:<9} {:>10}  {}", bytes(f.meta.size), f.meta.key)
    });
    push_some(&mut out, files, 50);
    if !p.dates_to_optimize.is_empty() {
        out += &format!(
            "  to optimize    {} (past optimize.auto_max_files or auto_max_deleted_share: compacted \
             after a run that writes them, or by `lakeload optimize`)\n",
            summarize_dates(&p.dates_to_optimize)
        );
    }
    if !p.dates_to_write.is_empty() {
        out += &format!("  writes         {}\n", summarize_dates(&p.dates_to_write));
    }
    if !p.dates_to_delete.is_empty() {
        out += &format!("  deletes        {}\n", summarize_dates(&p.dates_to_delete));
    }
    out += &format!(
        "  table objects  {} to delete, {} not the table's (left alone)\n",
        p.objects_to_delete.len(),
        p.foreign_objects.len()
    );
    push_some(
        &mut out,
        p.objects_to_delete.iter().map(|k| format!("delete    {k}")),
        20,
    );
    push_some(
        &mut out,
        p.foreign_objects.iter().map(|k| format!("ignore    {k}")),
        20,
    );
    if !p.objects_in_the_way.is_empty() {
        out += &format!(
            "  in the way     {} object(s) where the table stores its dates, not written by it: \
             a run stops unless target.existing_objects is adopt or replace\n",
            p.objects_in_the_way.len()
        );
        push_some(
            &mut out,
            p.objects_in_the_way.iter().map(|k| format!("in the way {k}")),
            20,
        );
    }
    for change in &p.settings_changes {
        out += &format!(
            "  setting        {}: the table has `{}`, this run `{}` (a full run rebuilds)\n",
            change.key, change.table, change.run
        );
    }
    out
}

/// The first `shown` of `lines`, indented, then how many more there are.
fn push_some(out: &mut String, lines: impl ExactSizeIterator<Item = String>, shown: usize) {
    let total = lines.len();
    for line in lines.take(shown) {
        *out += &format!("    {line}\n");
    }
    if total > shown {
        *out += &format!("    … and {} more\n", total - shown);
    }
}

fn summarize_dates(dates: &[String]) -> String {
    if dates.len() <= 10 {
        dates.join(", ")
    } else {
        format!(
            "{} … {} ({} dates)",
            dates[..5].join(", "),
            dates[dates.len() - 1],
            dates.len()
        )
    }
}
