//! `lakeload plan`: what a run would do, without changing anything or taking the lock.
//!
//! The files to process are read and parsed (nothing is kept) so the dates they touch are the
//! exact dates the run would rewrite, not a guess from file names.

use std::collections::BTreeSet;
use std::sync::Arc;

use futures::{StreamExt, TryStreamExt};
use serde::Serialize;

use crate::config::{Config, Mode};
use crate::dates::format_days;
use crate::error::Result;
use crate::plan::{FileStatus, PlannedFile, plan};
use crate::reader::{ReadOptions, ReadProgress, read_source};
use crate::report::{bytes, thousands};
use crate::row::LineParser;
use crate::run::Target;

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
}

pub async fn preview(config: &Config) -> Result<Preview> {
    let target = Target::open(config).await?;
    let loaded = target.state.load().await?;
    let listing = target.list_sources(config).await?;
    let plan = plan(
        config.run.mode,
        listing,
        &loaded.state,
        config.run.on_changed_file,
    )?;
    let to_read: Vec<PlannedFile> = plan.files.iter().filter(|f| f.process).cloned().collect();

    let parser = Arc::new(LineParser::new(&config.schema, config.source.delimiter));
    let options = ReadOptions::for_files(config, to_read.len());
    let counts: Vec<crate::reader::FileCounts> = futures::stream::iter(to_read.iter().enumerate())
        .map(|(id, f)| {
            let (parser, source, meta) = (parser.clone(), target.source.clone(), f.meta.clone());
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
        .buffered(config.run.threads)
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
    Ok(Preview {
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
        "  dates          {} to write ({} of existing objects rewritten), {} to delete\n",
        p.dates_to_write.len(),
        bytes(p.bytes_to_rewrite),
        p.dates_to_delete.len()
    );
    for f in p.files.iter().take(50) {
        let status = match f.status {
            FileStatus::New => "new",
            FileStatus::Changed => "changed",
            FileStatus::Unchanged => "unchanged",
        };
        out += &format!("    {status:<9} {:>10}  {}\n", bytes(f.meta.size), f.meta.key);
    }
    if p.files.len() > 50 {
        out += &format!("    … and {} more\n", p.files.len() - 50);
    }
    if !p.dates_to_write.is_empty() {
        out += &format!("  writes         {}\n", summarize_dates(&p.dates_to_write));
    }
    if !p.dates_to_delete.is_empty() {
        out += &format!("  deletes        {}\n", summarize_dates(&p.dates_to_delete));
    }
    out
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
