//! SPEC §4's invariant as a property: any sequence of incremental runs gives the rows (all
//! columns) of one full run over the final sources, whatever the user varies: the schema
//! (column count, date columns in any order, the key with NULLs, a header line, a
//! `timestamp_format`), the order rule, the layout, files re-delivered with corrected rows
//! (with and without a new modification time), a memory limit small enough that every run
//! spills, other people's objects under the table root (left alone, byte for byte), and the
//! format: `parquet`, `delta` (dates gain files as new keys are appended, files holding
//! updated keys are rewritten) and `delta` with deletion vectors (superseded rows marked
//! deleted in place), read back by the test's own log replay; and for Delta, compaction between
//! runs: none, `lakeload optimize` after each run, or each run compacting what it wrote.

use std::sync::OnceLock;

use lakeload::config::Mode;
use proptest::prelude::*;

use crate::common::*;
use crate::incremental::{Place, check_accounting, runtime};

/// A schema as a user might write it in `[schema]`.
#[derive(Debug, Clone)]
struct TestSchema {
    columns: usize,
    /// Column indices, in the order `schema.date_columns` lists them.
    date_columns: Vec<usize>,
    partition: usize,
    /// Column indices, in the order `schema.key` lists them.
    key: Vec<usize>,
    timestamp_format: Option<&'static str>,
    header: bool,
}

impl TestSchema {
    fn name(i: usize) -> String {
        format!("col{}", i + 1)
    }

    fn names(columns: &[usize]) -> String {
        columns
            .iter()
            .map(|&c| Self::name(c))
            .collect::<Vec<_>>()
            .join(",")
    }

    fn settings(&self) -> Vec<(&'static str, String)> {
        let mut keys = vec![
            (
                "schema.columns",
                Self::names(&(0..self.columns).collect::<Vec<_>>()),
            ),
            ("schema.date_columns", Self::names(&self.date_columns)),
            ("schema.partition_column", Self::name(self.partition)),
            ("schema.key", Self::names(&self.key)),
            ("source.header", self.header.to_string()),
        ];
        if let Some(format) = self.timestamp_format {
            keys.push(("schema.timestamp_format", format.to_string()));
        }
        keys
    }

    /// Four valid dates (two of them the same day in different spellings, where the format
    /// allows), and one that is not a date.
    fn date_pool(&self) -> ([&'static str; 4], &'static str) {
        match self.timestamp_format {
            None => (
                [
                    "2024-01-01",
                    "2024-01-02 10:00:00",
                    "2024-02-29T00:00:00+01:00",
                    "2024-01-02",
                ],
                "2024-02-30",
            ),
            Some("%d/%m/%Y") => (
                ["01/01/2024", "02/01/2024", "29/02/2024", "31/12/2023"],
                "30/02/2024",
            ),
            Some(_) => (
                [
                    "01/01/2024 00:00",
                    "01/02/2024 10:00",
                    "02/29/2024 23:59",
                    "01/02/2024 23:00",
                ],
                "02/30/2024 10:00",
            ),
        }
    }

    /// Renders a line from its random material.
    fn render(&self, line: &LineSeed, corrected: bool) -> String {
        match line.kind {
            0 => String::new(),
            1 => "too|few".to_string(),
            _ => {
                let (dates, invalid) = self.date_pool();
                (0..self.columns)
                    .map(|c| {
                        let pick = usize::from(line.picks[c]);
                        if self.date_columns.contains(&c) {
                            match pick % 6 {
                                n @ 0..4 => dates[n].to_string(),
                                4 => String::new(),
                                _ => invalid.to_string(),
                            }
                        } else if self.key.contains(&c) {
                            ["a", "b", ""][pick % 3].to_string()
                        } else {
                            let value = if pick % 3 == 0 { "" } else { line.value.as_str() };
                            if corrected {
                                format!("{value}!")
                            } else {
                                value.to_string()
                            }
                        }
                    })
                    .collect::<Vec<_>>()
                    .join("|")
            }
        }
    }

    fn file_text(&self, lines: &[LineSeed], corrected: bool) -> String {
        let mut text = String::new();
        if self.header {
            text += &Self::names(&(0..self.columns).collect::<Vec<_>>());
            text += "\n";
        }
        for line in lines {
            text += &self.render(line, corrected);
            text += "\n";
        }
        if corrected {
            // The corrected file also gains a line, so even a file without a value to correct
            // changes size (a local file's version is its modification time and size).
            text += "\n";
        }
        text
    }
}

fn test_schema() -> impl Strategy<Value = TestSchema> {
    (3usize..=6)
        .prop_flat_map(|n| {
            (
                Just((0..n).collect::<Vec<usize>>()).prop_shuffle(),
                1usize..=2,
                any::<bool>(),
                0usize..=2,
                any::<prop::sample::Index>(),
                prop::sample::select(vec![None, Some("%d/%m/%Y"), Some("%m/%d/%Y %H:%M")]),
                any::<bool>(),
            )
        })
        .prop_map(|(order, dates, second, extra, at, timestamp_format, header)| {
            let date_columns = order[..dates].to_vec();
            let partition = date_columns[usize::from(second) % dates];
            let mut key: Vec<usize> = order
                .iter()
                .copied()
                .filter(|&c| c != partition)
                .take(extra)
                .collect();
            key.insert(at.index(key.len() + 1), partition);
            TestSchema {
                columns: order.len(),
                date_columns,
                partition,
                key,
                timestamp_format,
                header,
            }
        })
}

/// A line's random material, rendered against the case's schema.
#[derive(Debug, Clone)]
struct LineSeed {
    /// 0: blank, 1: wrong field count, else a full line.
    kind: u8,
    picks: [u8; 6],
    value: String,
}

fn line_seed() -> impl Strategy<Value = LineSeed> {
    (0u8..10, any::<[u8; 6]>(), "[a-z]{1,3}").prop_map(|(kind, picks, value)| LineSeed { kind, picks, value })
}

#[derive(Debug, Clone)]
struct SourceFile {
    key: String,
    lines: Vec<LineSeed>,
    /// Seconds after a base time; equal values give arrival ties.
    arrival: u64,
    /// Which incremental run first sees it.
    batch: usize,
    /// Re-delivered with corrected values before this run, keeping its modification time
    /// (`cp -p`, `rsync -a`) or with a new one.
    rewrite: Option<(usize, bool)>,
}

#[derive(Debug, Clone)]
struct Case {
    schema: TestSchema,
    files: Vec<SourceFile>,
    batches: usize,
    by_name: bool,
    /// Small enough that every run spills its rows to disk.
    tiny_memory: bool,
    /// `target.layout = date` instead of `ymd`.
    date_layout: bool,
    /// After the comparison, a full run of the incremental table under the other layout.
    relayout: bool,
    /// Objects of someone else's under both table roots before the first run.
    foreign: Vec<&'static str>,
    /// The table's format.
    format: TableKind,
    /// How a Delta table is compacted between runs.
    compaction: Compaction,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Compaction {
    /// Never (`optimize.auto_max_files = 0`, `auto_max_deleted_share = 1`).
    Never,
    /// `lakeload optimize` after every incremental run.
    Manual,
    /// Each run compacts the dates it wrote once they have two files or any deleted row.
    Auto,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum TableKind {
    Parquet,
    Delta,
    /// Delta with `target.deletion_vectors = true`: rows superseded in place.
    DeltaMarkingDeletes,
}

/// Other people's objects a table root may hold: nested, at the root, beside the table's own
/// dates in either layout, with names close to the table's.
const FOREIGN: &[&str] = &[
    "team-x/orders/part-0.parquet",
    "notes.parquet",
    "year=2024/month=01/day=01/extra.parquet",
    "year=2024/month=01/day=01/2024-01-01.snappy.parquet.bak",
    "col1=2024-01-01/other.parquet",
    "_lakeload.parquet",
];

fn case() -> impl Strategy<Value = Case> {
    (test_schema(), 1usize..=4).prop_flat_map(|(schema, batches)| {
        let file = (
            prop::sample::select(vec!["", "d1/", "d2/x/"]),
            prop::collection::vec(line_seed(), 0..8),
            0u64..4,
            0..batches,
            prop::option::of((any::<prop::sample::Index>(), any::<bool>())),
        );
        (
            Just(schema),
            prop::collection::vec(file, 1..6),
            Just(batches),
            any::<bool>(),
            any::<bool>(),
            (any::<bool>(), any::<bool>()),
            prop::sample::subsequence(FOREIGN, 0..=3),
            prop::sample::select(vec![
                TableKind::Parquet,
                TableKind::Delta,
                TableKind::DeltaMarkingDeletes,
            ]),
            prop::sample::select(vec![Compaction::Never, Compaction::Manual, Compaction::Auto]),
        )
            .prop_map(
                |(
                    schema,
                    files,
                    batches,
                    by_name,
                    tiny_memory,
                    (date_layout, relayout),
                    foreign,
                    format,
                    compaction,
                )| {
                    let files = files
                        .into_iter()
                        .enumerate()
                        .map(|(i, (dir, lines, arrival, batch, rewrite))| SourceFile {
                            key: format!("{dir}f{i}.gz"),
                            lines,
                            arrival,
                            batch,
                            // A later run than the first delivery, if there is one.
                            rewrite: rewrite.and_then(|(at, new_time)| {
                                let later = batches - batch - 1;
                                (later > 0).then(|| (batch + 1 + at.index(later), new_time))
                            }),
                        })
                        .collect();
                    Case {
                        schema,
                        files,
                        batches,
                        by_name,
                        tiny_memory,
                        date_layout,
                        // Layouts are of the `parquet` format.
                        relayout: relayout && format == TableKind::Parquet,
                        foreign,
                        format,
                        compaction: if format == TableKind::Parquet {
                            Compaction::Never
                        } else {
                            compaction
                        },
                    }
                },
            )
    })
}

fn incremental_equals_full(place: Place, case: Case) {
    let base = 1_800_000_000u64;
    if let Place::Local(dir) = &place {
        std::fs::create_dir_all(dir.join("src")).unwrap();
    }
    let order = if case.by_name { "name" } else { "arrival" };
    let mut settings: Vec<(&str, String)> = case.schema.settings();
    if case.tiny_memory {
        settings.push(("run.memory_limit", "1KiB".into()));
    }
    if case.date_layout {
        settings.push(("target.layout", "date".into()));
    }
    if case.format != TableKind::Parquet {
        settings.push(("target.format", "delta".into()));
    }
    if case.format == TableKind::DeltaMarkingDeletes {
        settings.push(("target.deletion_vectors", "true".into()));
    }
    let (max_files, max_deleted) = match case.compaction {
        Compaction::Auto => ("1", "0.0001"),
        _ => ("0", "1"),
    };
    settings.push(("optimize.auto_max_files", max_files.into()));
    settings.push(("optimize.auto_max_deleted_share", max_deleted.into()));
    runtime().block_on(async {
        for table in ["inc", "full"] {
            let storage = open_storage(&place.url(table), place.s3()).await;
            for key in &case.foreign {
                storage
                    .put(key, bytes::Bytes::from(format!("{table}:{key}")))
                    .await
                    .unwrap();
            }
        }
        let incremental = place.config_with("inc", Mode::Incremental, order, &settings);
        for batch in 0..case.batches {
            for f in &case.files {
                let arrival = base + f.arrival * 1000;
                if f.batch == batch {
                    let text = case.schema.file_text(&f.lines, false);
                    place.add_source(&f.key, &gzip(text.as_bytes()), arrival);
                }
                if let Some((at, new_time)) = f.rewrite
                    && at == batch
                {
                    let text = case.schema.file_text(&f.lines, true);
                    let arrival = if new_time { arrival + 500 } else { arrival };
                    place.add_source(&f.key, &gzip(text.as_bytes()), arrival);
                }
            }
            check_accounting(&lakeload::run::run(&incremental, false).await);
            if case.compaction == Compaction::Manual {
                lakeload::maintain::optimize::optimize(&incremental, false)
                    .await
                    .unwrap();
            }
        }
        let full = place.config_with("full", Mode::Full, order, &settings);
        check_accounting(&lakeload::run::run(&full, false).await);
        let mut tables = Vec::new();
        for table in ["inc", "full"] {
            tables.push(match case.format {
                TableKind::Parquet => checked_rows(&place, table, &case.foreign).await,
                _ => checked_delta_rows(&place, table, &case.foreign).await,
            });
        }
        assert_eq!(tables[0], tables[1], "incremental runs differ from one full run");
        // A full rebuild under the other layout keeps the rows and leaves nothing of the old
        // layout behind (and nothing foreign touched).
        if case.relayout {
            let mut relaid = settings.clone();
            relaid.retain(|(k, _)| *k != "target.layout");
            relaid.push((
                "target.layout",
                if case.date_layout { "ymd" } else { "date" }.into(),
            ));
            let rebuild = place.config_with("inc", Mode::Full, order, &relaid);
            check_accounting(&lakeload::run::run(&rebuild, false).await);
            assert_eq!(
                checked_rows(&place, "inc", &case.foreign).await,
                tables[1],
                "after a re-layout"
            );
        }
    });
}

/// The rows of a table's own objects, after checking that every foreign object is as it was
/// put and that no Parquet object under the root is a stray of the table's (each is recorded
/// in its state or someone else's).
async fn checked_rows(place: &Place, table: &str, foreign: &[&str]) -> Vec<TableRow> {
    let storage = open_storage(&place.url(table), place.s3()).await;
    for key in foreign {
        let (body, _) = storage.get(key).await.unwrap().expect("foreign object kept");
        assert_eq!(&body[..], format!("{table}:{key}").as_bytes(), "{key} untouched");
    }
    let recorded: std::collections::BTreeSet<String> = recorded_keys(&storage).await.into_iter().collect();
    assert!(
        storage.head("_lakeload/state.json").await.unwrap().is_some(),
        "a state"
    );
    for object in storage.list("").await.unwrap() {
        if object.key.ends_with(".parquet") && !foreign.contains(&object.key.as_str()) {
            assert!(recorded.contains(&object.key), "{} is not recorded", object.key);
        }
    }
    owned_rows(&storage).await
}

/// [`checked_rows`] of a Delta table: the rows its current version reads (deletion vectors
/// applied), after checking the foreign objects and that every Parquet object under the root
/// that is not foreign is a file some commit added.
async fn checked_delta_rows(place: &Place, table: &str, foreign: &[&str]) -> Vec<TableRow> {
    let storage = open_storage(&place.url(table), place.s3()).await;
    for key in foreign {
        let (body, _) = storage.get(key).await.unwrap().expect("foreign object kept");
        assert_eq!(&body[..], format!("{table}:{key}").as_bytes(), "{key} untouched");
    }
    let (rows, ever_added) = delta_rows(&storage).await;
    for object in storage.list("").await.unwrap() {
        if object.key.ends_with(".parquet")
            && !foreign.contains(&object.key.as_str())
            && !object.key.starts_with("_delta_log/")
        {
            assert!(ever_added.contains(&object.key), "{} is in no commit", object.key);
        }
    }
    rows
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]
    #[test]
    fn incremental_runs_equal_one_full_run_local(case in case()) {
        let dir = tempdir();
        incremental_equals_full(Place::Local(dir.path().to_path_buf()), case);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]
    #[test]
    fn incremental_runs_equal_one_full_run_s3(case in case()) {
        static CASE: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        static BUCKET: OnceLock<String> = OnceLock::new();
        let bucket = BUCKET.get_or_init(|| S3Server::shared().bucket("prop")).clone();
        let prefix = format!("case{}", CASE.fetch_add(1, std::sync::atomic::Ordering::Relaxed));
        incremental_equals_full(Place::S3 { bucket, prefix }, case);
    }
}
