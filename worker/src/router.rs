//! Route rows by the date of their partition column, within a memory budget: when the buffered
//! rows pass `run.memory_limit`, every date's rows are appended to that date's spill file on
//! local disk, and read back when the date is merged. Peak memory is then about one date's rows
//! plus the budget, however large the input.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{File, OpenOptions};
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use crate::row::{Lineage, Row};

pub struct DateRouter {
    partition_date: usize,
    memory_limit: usize,
    buckets: BTreeMap<i32, Vec<Row>>,
    bytes_in_memory: usize,
    spill_parent: Option<PathBuf>,
    spill: Option<tempfile::TempDir>,
    spilled_dates: BTreeSet<i32>,
    spilled_bytes: u64,
    total_rows: u64,
}

impl DateRouter {
    pub fn new(partition_date: usize, memory_limit: u64, spill_parent: Option<PathBuf>) -> Self {
        DateRouter {
            partition_date,
            memory_limit: memory_limit as usize,
            buckets: BTreeMap::new(),
            bytes_in_memory: 0,
            spill_parent,
            spill: None,
            spilled_dates: BTreeSet::new(),
            spilled_bytes: 0,
            total_rows: 0,
        }
    }

    pub fn push(&mut self, rows: Vec<Row>) -> std::io::Result<()> {
        for row in rows {
            let date = row
                .date(self.partition_date)
                .expect("rows always have a partition date");
            self.bytes_in_memory += row.size_estimate();
            self.total_rows += 1;
            self.buckets.entry(date).or_default().push(row);
        }
        if self.bytes_in_memory > self.memory_limit {
            self.spill_all()?;
        }
        Ok(())
    }

    /// Every date that has rows.
    pub fn dates(&self) -> BTreeSet<i32> {
        self.buckets
            .keys()
            .chain(self.spilled_dates.iter())
            .copied()
            .collect()
    }

    pub fn total_rows(&self) -> u64 {
        self.total_rows
    }

    /// Bytes written to spill files so far (0 when everything fit in memory).
    pub fn spilled_bytes(&self) -> u64 {
        self.spilled_bytes
    }

    /// Takes all rows of a date out of the router.
    pub fn take(&mut self, date: i32) -> std::io::Result<Vec<Row>> {
        let mut rows = Vec::new();
        if self.spilled_dates.remove(&date)
            && let Some(dir) = &self.spill
        {
            let path = spill_path(dir.path(), date);
            read_spill(&path, &mut rows)?;
            std::fs::remove_file(&path)?;
        }
        if let Some(mut in_memory) = self.buckets.remove(&date) {
            self.bytes_in_memory -= in_memory.iter().map(Row::size_estimate).sum::<usize>();
            rows.append(&mut in_memory);
        }
        Ok(rows)
    }

    fn spill_all(&mut self) -> std::io::Result<()> {
        if self.spill.is_none() {
            let mut builder = tempfile::Builder::new();
            builder.prefix("lakeload-spill-");
            self.spill = Some(match &self.spill_parent {
                Some(parent) => {
                    std::fs::create_dir_all(parent)?;
                    builder.tempdir_in(parent)?
                }
                None => builder.tempdir()?,
            });
        }
        let dir = self.spill.as_ref().expect("just created").path().to_path_buf();
        let buckets = std::mem::take(&mut self.buckets);
        tracing::debug!(
            "memory budget reached: spilling {} dates to {}",
            buckets.len(),
            dir.display()
        );
        for (date, rows) in buckets {
            let file = OpenOptions::new()
                .create(true)
                .append(true)
                .open(spill_path(&dir, date))?;
            let mut out = BufWriter::with_capacity(256 * 1024, file);
            for row in &rows {
                self.spilled_bytes += write_row(&mut out, row)? as u64;
            }
            out.flush()?;
            self.spilled_dates.insert(date);
        }
        self.bytes_in_memory = 0;
        Ok(())
    }
}

fn spill_path(dir: &Path, date: i32) -> PathBuf {
    dir.join(format!("{date}.rows"))
}

/// Spill encoding: column count, then per field (u32 length + bytes, `u32::MAX` = NULL), date
/// count, per date (i32, `i32::MIN` = NULL), then file (u32), line (u64), generation (u8).
fn write_row(out: &mut impl Write, row: &Row) -> std::io::Result<usize> {
    let fields = row.field_count();
    let mut written = 0;
    out.write_all(&(fields as u32).to_le_bytes())?;
    for i in 0..fields {
        match row.field(i) {
            Some(v) => {
                out.write_all(&(v.len() as u32).to_le_bytes())?;
                out.write_all(v.as_bytes())?;
                written += 4 + v.len();
            }
            None => {
                out.write_all(&u32::MAX.to_le_bytes())?;
                written += 4;
            }
        }
    }
    let dates = row.date_count();
    out.write_all(&(dates as u32).to_le_bytes())?;
    for j in 0..dates {
        out.write_all(&row.date(j).unwrap_or(i32::MIN).to_le_bytes())?;
    }
    out.write_all(&row.lineage.file.to_le_bytes())?;
    out.write_all(&row.lineage.line.to_le_bytes())?;
    out.write_all(&[row.lineage.generation])?;
    Ok(written + 8 + dates * 4 + 13)
}

fn read_spill(path: &Path, rows: &mut Vec<Row>) -> std::io::Result<()> {
    let mut input = BufReader::with_capacity(256 * 1024, File::open(path)?);
    let mut u32_buf = [0u8; 4];
    loop {
        match input.read_exact(&mut u32_buf) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
            Err(e) => return Err(e),
        }
        let fields = u32::from_le_bytes(u32_buf) as usize;
        let mut values: Vec<Option<String>> = Vec::with_capacity(fields);
        for _ in 0..fields {
            input.read_exact(&mut u32_buf)?;
            let len = u32::from_le_bytes(u32_buf);
            if len == u32::MAX {
                values.push(None);
            } else {
                let mut bytes = vec![0u8; len as usize];
                input.read_exact(&mut bytes)?;
                values.push(Some(String::from_utf8(bytes).map_err(std::io::Error::other)?));
            }
        }
        input.read_exact(&mut u32_buf)?;
        let date_count = u32::from_le_bytes(u32_buf) as usize;
        let mut dates = Vec::with_capacity(date_count);
        for _ in 0..date_count {
            input.read_exact(&mut u32_buf)?;
            let d = i32::from_le_bytes(u32_buf);
            dates.push((d != i32::MIN).then_some(d));
        }
        let mut lineage = [0u8; 13];
        input.read_exact(&mut lineage)?;
        let lineage = Lineage {
            file: u32::from_le_bytes(lineage[0..4].try_into().expect("4 bytes")),
            line: u64::from_le_bytes(lineage[4..12].try_into().expect("8 bytes")),
            generation: lineage[12],
        };
        let refs: Vec<Option<&str>> = values.iter().map(|v| v.as_deref()).collect();
        rows.push(Row::from_values(&refs, dates, lineage));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(id: &str, date: i32, line: u64) -> Row {
        Row::from_values(
            &[Some(id), None, Some("é|x")],
            vec![Some(date)],
            Lineage {
                file: 2,
                line,
                generation: 1,
            },
        )
    }

    #[test]
    fn spilled_rows_come_back_intact() {
        // A budget of one byte spills on every push.
        let mut router = DateRouter::new(0, 1, None);
        router.push(vec![row("a", 10, 1), row("b", 11, 2)]).unwrap();
        router.push(vec![row("c", 10, 3)]).unwrap();
        assert!(router.spilled_bytes() > 0);
        assert_eq!(router.dates().into_iter().collect::<Vec<_>>(), vec![10, 11]);
        let rows = router.take(10).unwrap();
        let ids: Vec<_> = rows.iter().map(|r| r.field(0).unwrap().to_string()).collect();
        assert_eq!(ids, vec!["a", "c"]);
        assert_eq!(rows[0].field(1), None);
        assert_eq!(rows[0].field(2), Some("é|x"));
        assert_eq!(
            rows[1].lineage,
            Lineage {
                file: 2,
                line: 3,
                generation: 1
            }
        );
        assert!(router.take(10).unwrap().is_empty());
        assert_eq!(router.dates().len(), 1);
    }

    #[test]
    fn rows_stay_in_memory_within_budget() {
        let mut router = DateRouter::new(0, 1 << 20, None);
        router.push(vec![row("a", 10, 1), row("b", 10, 2)]).unwrap();
        assert_eq!(router.spilled_bytes(), 0);
        assert_eq!(router.take(10).unwrap().len(), 2);
    }
}
