//! Merge the rows of one date: keep the latest row per key (SPEC §2), and count what happened.
//!
//! Deduplication sorts by (key, order) instead of hashing: no per-row key allocation, and the
//! winner of each key group is simply its last row.

use std::cmp::Ordering;
use std::sync::Arc;

use crate::config::{Order, SchemaConfig};
use crate::row::Row;

/// A source file as the lineage columns record it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileInfo {
    pub key: Arc<str>,
    /// `_source_modified`, microseconds since the Unix epoch (UTC).
    pub modified_micros: i64,
}

/// The files rows refer to: the run's source files (shared, read-only), then files named by
/// rows read back from the table for this date (local to one merge).
#[derive(Debug, Clone)]
pub struct FileTable {
    shared: Arc<[FileInfo]>,
    local: Vec<FileInfo>,
}

impl FileTable {
    pub fn new(shared: Arc<[FileInfo]>) -> Self {
        FileTable {
            shared,
            local: Vec::new(),
        }
    }

    /// How many file ids there are.
    pub fn len(&self) -> usize {
        self.shared.len() + self.local.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn get(&self, id: u32) -> &FileInfo {
        let id = id as usize;
        match self.shared.get(id) {
            Some(f) => f,
            None => &self.local[id - self.shared.len()],
        }
    }

    /// The id of a file named by a stored row, adding it if new.
    pub fn intern(&mut self, key: &str, modified_micros: i64) -> u32 {
        let found = self
            .local
            .iter()
            .position(|f| f.modified_micros == modified_micros && &*f.key == key);
        let index = found.unwrap_or_else(|| {
            self.local.push(FileInfo {
                key: key.into(),
                modified_micros,
            });
            self.local.len() - 1
        });
        (self.shared.len() + index) as u32
    }
}

/// Counts of one merge, per SPEC §6.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct MergeCounts {
    /// New rows whose key was not in the table.
    pub inserted: u64,
    /// New rows that replaced a row already in the table.
    pub updated: u64,
    /// New rows that lost to a later row (new or already in the table).
    pub superseded: u64,
}

impl std::ops::AddAssign for MergeCounts {
    fn add_assign(&mut self, o: Self) {
        self.inserted += o.inserted;
        self.updated += o.updated;
        self.superseded += o.superseded;
    }
}

pub struct Merger<'a> {
    pub schema: &'a SchemaConfig,
    pub order: Order,
    pub files: &'a FileTable,
}

impl Merger<'_> {
    fn key_cmp(&self, a: &Row, b: &Row) -> Ordering {
        for &column in &self.schema.key {
            let ord = match self.schema.date_slot(column) {
                Some(j) => a.date(j).cmp(&b.date(j)),
                None => a.field(column).cmp(&b.field(column)),
            };
            if ord != Ordering::Equal {
                return ord;
            }
        }
        Ordering::Equal
    }

    /// Rank of every file id under `key` (ids are dense: shared first, then local). Files that
    /// `key` finds equal get the same rank: a stored row's file and this run's file of the same
    /// name (and, by arrival, the same modified time) are one position in the order, and the
    /// tie goes on to the line number and then the generation, exactly as SPEC §2 orders them.
    fn ranks(&self, key: impl Fn(&FileInfo, &FileInfo) -> Ordering) -> Vec<u32> {
        let count = self.files.len();
        let mut ids: Vec<u32> = (0..count as u32).collect();
        ids.sort_by(|a, b| key(self.files.get(*a), self.files.get(*b)));
        let mut rank = vec![0u32; count];
        let mut current = 0u32;
        for (position, pair) in ids.iter().enumerate() {
            if position > 0
                && key(self.files.get(ids[position - 1]), self.files.get(*pair)) != Ordering::Equal
            {
                current += 1;
            }
            rank[*pair as usize] = current;
        }
        rank
    }

    fn key_hash(&self, row: &Row) -> u64 {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        for &column in &self.schema.key {
            match self.schema.date_slot(column) {
                Some(j) => row.date(j).hash(&mut h),
                None => row.field(column).hash(&mut h),
            }
        }
        h.finish()
    }

    /// Merges rows already in the table (generation 0) with new rows (generation 1). Returns the
    /// kept rows in lineage order (file key, line), which makes the written file deterministic.
    ///
    /// Rows are sorted by (key hash, key, order): the hash and the precomputed file ranks turn
    /// almost every comparison into integer comparisons; equal keys still end up adjacent, and
    /// the order within a key is exactly SPEC §2's.
    pub fn merge(&self, rows: Vec<Row>) -> (Vec<Row>, MergeCounts) {
        let order_rank = self.ranks(|a, b| match self.order {
            Order::Arrival => a
                .modified_micros
                .cmp(&b.modified_micros)
                .then_with(|| a.key.cmp(&b.key)),
            Order::Name => a.key.cmp(&b.key),
        });
        let mut keyed: Vec<(u64, u32, Row)> = rows
            .into_iter()
            .map(|r| (self.key_hash(&r), order_rank[r.lineage.file as usize], r))
            .collect();
        keyed.sort_unstable_by(|(ha, ra, a), (hb, rb, b)| {
            ha.cmp(hb).then_with(|| self.key_cmp(a, b)).then_with(|| {
                ra.cmp(rb)
                    .then(a.lineage.line.cmp(&b.lineage.line))
                    .then(a.lineage.generation.cmp(&b.lineage.generation))
            })
        });
        let mut counts = MergeCounts::default();
        let mut kept = Vec::with_capacity(keyed.len());
        let mut group: Vec<Row> = Vec::new();
        let mut flush = |group: &mut Vec<Row>, kept: &mut Vec<Row>| {
            let Some(winner) = group.pop() else { return };
            let new_losers = group.iter().filter(|r| r.lineage.generation > 0).count() as u64;
            counts.superseded += new_losers;
            if winner.lineage.generation > 0 {
                if group.iter().any(|r| r.lineage.generation == 0) {
                    counts.updated += 1;
                } else {
                    counts.inserted += 1;
                }
            }
            kept.push(winner);
            group.clear();
        };
        let mut last_hash = None;
        for (hash, _, row) in keyed {
            if let Some(last) = group.last()
                && (last_hash != Some(hash) || self.key_cmp(last, &row) != Ordering::Equal)
            {
                flush(&mut group, &mut kept);
            }
            last_hash = Some(hash);
            group.push(row);
        }
        flush(&mut group, &mut kept);
        let name_rank = self.ranks(|a, b| a.key.cmp(&b.key).then(a.modified_micros.cmp(&b.modified_micros)));
        kept.sort_unstable_by_key(|r| {
            (
                name_rank[r.lineage.file as usize],
                r.lineage.line,
                r.lineage.generation,
            )
        });
        (kept, counts)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Config, RawConfig};
    use crate::row::Lineage;

    fn schema() -> SchemaConfig {
        let mut raw = RawConfig::default();
        raw.set("source.url", "/in");
        raw.set("target.url", "/out");
        raw.set("schema.columns", "id,day,v");
        raw.set("schema.date_columns", "day");
        raw.set("schema.partition_column", "day");
        raw.set("schema.key", "id,day");
        Config::from_raw(&raw).unwrap().schema
    }

    fn row(id: Option<&str>, v: &str, file: u32, line: u64, generation: u8) -> Row {
        Row::from_values(
            &[id, Some("x"), Some(v)],
            vec![Some(1)],
            Lineage {
                file,
                line,
                generation,
            },
        )
    }

    fn files() -> FileTable {
        // b.gz arrived first, a.gz later: arrival and name order disagree.
        FileTable::new(Arc::from(vec![
            FileInfo {
                key: "a.gz".into(),
                modified_micros: 200,
            },
            FileInfo {
                key: "b.gz".into(),
                modified_micros: 100,
            },
        ]))
    }

    fn values(rows: &[Row]) -> Vec<&str> {
        rows.iter().map(|r| r.field(2).unwrap()).collect()
    }

    #[test]
    fn latest_by_arrival_or_by_name() {
        let schema = schema();
        let files = files();
        let rows = || {
            vec![
                row(Some("k"), "from-a", 0, 1, 1),
                row(Some("k"), "from-b", 1, 1, 1),
            ]
        };
        let arrival = Merger {
            schema: &schema,
            order: Order::Arrival,
            files: &files,
        };
        let (kept, counts) = arrival.merge(rows());
        assert_eq!(values(&kept), vec!["from-a"]);
        assert_eq!(
            counts,
            MergeCounts {
                inserted: 1,
                updated: 0,
                superseded: 1
            }
        );
        let name = Merger {
            schema: &schema,
            order: Order::Name,
            files: &files,
        };
        assert_eq!(values(&name.merge(rows()).0), vec!["from-b"]);
    }

    #[test]
    fn null_keys_are_equal_and_later_lines_win() {
        let schema = schema();
        let files = files();
        let m = Merger {
            schema: &schema,
            order: Order::Arrival,
            files: &files,
        };
        let (kept, counts) = m.merge(vec![
            row(None, "1", 0, 1, 1),
            row(None, "2", 0, 2, 1),
            row(Some("x"), "3", 0, 3, 1),
        ]);
        assert_eq!(values(&kept), vec!["2", "3"]);
        assert_eq!(counts.superseded, 1);
    }

    /// Issue 7 (1): the stored row names its file through the table's lineage columns, so it
    /// gets a file id of its own; the re-processed version must still win the tie.
    #[test]
    fn a_changed_file_wins_ties_against_its_stored_version() {
        let schema = schema();
        for order in [Order::Name, Order::Arrival] {
            let mut files = files();
            // a.gz as stored: same key, same modified time (a `cp -p` re-delivery).
            let stored = files.intern("a.gz", 200);
            assert_ne!(stored, 0, "the stored file gets its own id");
            let m = Merger {
                schema: &schema,
                order,
                files: &files,
            };
            let (kept, counts) = m.merge(vec![
                row(Some("k"), "old", stored, 1, 0),
                row(Some("k"), "corrected", 0, 1, 1),
                row(Some("j"), "old-later-line", stored, 5, 0),
                row(Some("j"), "new-earlier-line", 0, 4, 1),
            ]);
            assert_eq!(
                values(&kept),
                vec!["corrected", "old-later-line"],
                "{order:?}: the tuple (…, file, line) decides first, the version last"
            );
            assert_eq!(
                counts,
                MergeCounts {
                    inserted: 0,
                    updated: 1,
                    superseded: 1
                }
            );
        }
    }

    #[test]
    fn a_newer_modified_time_wins_by_arrival_whatever_the_line() {
        let schema = schema();
        let mut files = files();
        let stored = files.intern("a.gz", 100);
        let m = Merger {
            schema: &schema,
            order: Order::Arrival,
            files: &files,
        };
        let (kept, _) = m.merge(vec![
            row(Some("k"), "old", stored, 9, 0),
            row(Some("k"), "new", 0, 1, 1),
        ]);
        assert_eq!(values(&kept), vec!["new"]);
    }

    #[test]
    fn stored_rows_count_updates_and_lose_exact_ties() {
        let schema = schema();
        let files = files();
        let m = Merger {
            schema: &schema,
            order: Order::Name,
            files: &files,
        };
        let (kept, counts) = m.merge(vec![
            row(Some("k"), "old", 0, 1, 0),
            row(Some("k"), "new", 0, 1, 1),
            row(Some("j"), "kept", 1, 1, 0),
            row(Some("j"), "older", 0, 9, 1),
        ]);
        assert_eq!(values(&kept), vec!["new", "kept"]);
        assert_eq!(
            counts,
            MergeCounts {
                inserted: 0,
                updated: 1,
                superseded: 1
            }
        );
    }
}
