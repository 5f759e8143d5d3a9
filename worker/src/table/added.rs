//! Columns another engine added to a shared table (`ALTER TABLE … ADD COLUMNS`, then maybe a
//! back-fill), which lakeload's schema does not name, carried through lakeload's rewrites.
//!
//! Every row lakeload stores names its source line (`_source_file`, `_source_line`,
//! `_source_modified`: one row per line, so unique in a date). When lakeload writes a date
//! again, a row that comes from the same source line as a stored row is that row kept, and
//! gets the stored row's values in the added columns; a row from a new line (a new key, or a
//! newer row superseding an old one) gets nulls, as a column the source lacks gets in Delta's
//! `MERGE … INSERT *`. A full run keeps them the same way, so full and incremental runs still
//! agree.

use std::collections::HashMap;
use std::path::Path;

use polars::prelude::*;

use super::frame::without_time_zone;
use super::{LINEAGE_FILE, LINEAGE_LINE, LINEAGE_MODIFIED};
use crate::error::{Error, Result};

/// The columns of a table's schema that lakeload's does not name, in the table's order, with
/// the types lakeload writes them in.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AddedColumns {
    pub columns: Vec<(String, DataType)>,
    /// Added columns lakeload cannot carry, with why (their Delta type, or NOT NULL).
    pub unsupported: Vec<(String, String)>,
}

impl AddedColumns {
    /// The fields of Delta schema string `table` that `ours` (lakeload's) does not have.
    pub fn of_delta_schema(table: &str, ours: &str) -> Result<AddedColumns> {
        let parse = |schema: &str| -> Result<Vec<serde_json::Value>> {
            let value: serde_json::Value = serde_json::from_str(schema)
                .map_err(|e| Error::Other(format!("unreadable Delta schemaString: {e}")))?;
            Ok(value["fields"].as_array().cloned().unwrap_or_default())
        };
        let ours = parse(ours)?;
        let mut added = AddedColumns::default();
        for field in parse(table)? {
            let name = field["name"].as_str().unwrap_or_default();
            if ours.iter().any(|f| f["name"] == field["name"]) {
                continue;
            }
            let kind = &field["type"];
            match kind.as_str().and_then(delta_type) {
                Some(_) if field["nullable"] == false => added
                    .unsupported
                    .push((name.to_string(), "NOT NULL (new rows would need a value)".into())),
                Some(dtype) => added.columns.push((name.to_string(), dtype)),
                None => added.unsupported.push((name.to_string(), format!("type {kind}"))),
            }
        }
        Ok(added)
    }

    pub fn is_empty(&self) -> bool {
        self.columns.is_empty()
    }

    /// The added columns as fields of a file's schema.
    pub fn fields(&self) -> impl Iterator<Item = Field> + '_ {
        self.columns
            .iter()
            .map(|(name, dtype)| Field::new(name.as_str().into(), dtype.clone()))
    }
}

/// The polars type lakeload reads and writes a Delta primitive type as; `None` for a type it
/// does not carry (nested types, decimals, and the integer widths this build's polars lacks).
fn delta_type(kind: &str) -> Option<DataType> {
    Some(match kind {
        "string" => DataType::String,
        "long" => DataType::Int64,
        "integer" => DataType::Int32,
        "double" => DataType::Float64,
        "float" => DataType::Float32,
        "boolean" => DataType::Boolean,
        "binary" => DataType::Binary,
        "date" => DataType::Date,
        "timestamp" => DataType::Datetime(TimeUnit::Microseconds, Some(TimeZone::UTC)),
        "timestamp_ntz" => DataType::Datetime(TimeUnit::Microseconds, None),
        _ => return None,
    })
}

/// A date's stored values of the added columns, by the source line of their row.
pub struct CarriedValues {
    columns: AddedColumns,
    files: HashMap<String, u32>,
    rows: HashMap<(u32, i64, i64), IdxSize>,
    /// The added columns of every stored row, in the order `rows` numbers them.
    values: DataFrame,
}

impl CarriedValues {
    /// Reads the lineage and added columns of the date's stored files (local copies; `url`
    /// names each in errors). A file written before the columns were added holds nulls there.
    pub fn read(columns: &AddedColumns, stored: &[(&Path, String)]) -> Result<CarriedValues> {
        let mut carried = CarriedValues {
            columns: columns.clone(),
            files: HashMap::new(),
            rows: HashMap::new(),
            values: DataFrame::empty_with_schema(&Schema::from_iter(columns.fields())),
        };
        for (path, url) in stored {
            carried
                .read_file(path)
                .map_err(|e| Error::Other(format!("cannot read table object {url}: {e}")))?;
        }
        carried.values.rechunk_mut();
        Ok(carried)
    }

    fn read_file(&mut self, path: &Path) -> Result<()> {
        let open = || std::fs::File::open(path).map_err(Error::scratch("cannot read a scratch file"));
        let present = ParquetReader::new(open()?).schema()?;
        let wanted: Vec<String> = [LINEAGE_FILE, LINEAGE_LINE, LINEAGE_MODIFIED]
            .into_iter()
            .map(String::from)
            .chain(
                self.columns
                    .columns
                    .iter()
                    .map(|(name, _)| name.clone())
                    .filter(|name| present.contains(name)),
            )
            .collect();
        let frame = ParquetReader::new(open()?).with_columns(Some(wanted)).finish()?;
        let height = frame.height();
        let files = frame.column(LINEAGE_FILE)?.cast(&DataType::String)?;
        let lines = frame.column(LINEAGE_LINE)?.cast(&DataType::Int64)?;
        let modified = micros(frame.column(LINEAGE_MODIFIED)?)?;
        let first = self.values.height() as IdxSize;
        for (r, ((file, line), modified)) in files
            .str()?
            .iter()
            .zip(lines.i64()?.iter())
            .zip(modified.i64()?.iter())
            .enumerate()
        {
            let (Some(file), Some(line), Some(modified)) = (file, line, modified) else {
                continue;
            };
            let next = self.files.len() as u32;
            let id = *self.files.entry(file.to_string()).or_insert(next);
            self.rows.insert((id, line, modified), first + r as IdxSize);
        }
        let values = self
            .columns
            .columns
            .iter()
            .map(|(name, dtype)| match frame.column(name) {
                Ok(column) => convert(column, dtype),
                Err(_) => Ok(Column::full_null(name.as_str().into(), height, dtype)),
            })
            .collect::<Result<Vec<Column>>>()?;
        self.values.vstack_mut_owned(DataFrame::new(height, values)?)?;
        Ok(())
    }

    /// Appends the added columns to `frame` (lakeload's columns and lineage, `_source_modified`
    /// without a time zone): each row gets the values of the stored row of its source line,
    /// or nulls.
    pub fn attach(&self, frame: &mut DataFrame) -> Result<()> {
        let files = frame.column(LINEAGE_FILE)?.str()?.clone();
        let lines = frame.column(LINEAGE_LINE)?.i64()?.clone();
        let modified = micros(frame.column(LINEAGE_MODIFIED)?)?;
        let at: IdxCa = files
            .iter()
            .zip(lines.iter())
            .zip(modified.i64()?.iter())
            .map(|((file, line), modified)| {
                let id = self.files.get(file?)?;
                self.rows.get(&(*id, line?, modified?)).copied()
            })
            .collect();
        for column in self.values.take(&at)?.into_columns() {
            frame.with_column(column)?;
        }
        Ok(())
    }

    /// The columns carried.
    pub fn columns(&self) -> &AddedColumns {
        &self.columns
    }

    /// Memory the values and their index hold, roughly.
    pub fn memory_bytes(&self) -> usize {
        self.values.estimated_size()
            + self.rows.len() * 40
            + self.files.keys().map(|k| k.len() + 40).sum::<usize>()
    }
}

/// A lineage time as microseconds since the epoch, whatever unit and zone a writer gave it.
fn micros(column: &Column) -> Result<Column> {
    Ok(without_time_zone(column)
        .cast(&DataType::Datetime(TimeUnit::Microseconds, None))?
        .cast(&DataType::Int64)?)
}

/// A stored column in the type lakeload writes it as. Timestamps are converted as instants
/// (polars would need its time-zone database to convert zones).
fn convert(column: &Column, dtype: &DataType) -> Result<Column> {
    Ok(match dtype {
        DataType::Datetime(unit, zone) => without_time_zone(column)
            .cast(&DataType::Datetime(*unit, None))?
            .as_materialized_series()
            .clone()
            .into_datetime(*unit, zone.clone())
            .into_column(),
        _ => column.cast(dtype)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field(name: &str, kind: serde_json::Value, nullable: bool) -> serde_json::Value {
        serde_json::json!({ "name": name, "type": kind, "nullable": nullable, "metadata": {} })
    }

    fn schema(fields: Vec<serde_json::Value>) -> String {
        serde_json::json!({ "type": "struct", "fields": fields }).to_string()
    }

    #[test]
    fn added_columns_are_those_lakeloads_schema_lacks_and_odd_types_are_named() {
        let ours = schema(vec![field("id", "string".into(), true)]);
        let table = schema(vec![
            field("id", "string".into(), true),
            field("note", "string".into(), true),
            field("score", "long".into(), true),
            field("seen", "timestamp".into(), true),
            field(
                "tags",
                serde_json::json!({ "type": "array", "elementType": "string", "containsNull": true }),
                true,
            ),
            field("strict", "string".into(), false),
        ]);
        let added = AddedColumns::of_delta_schema(&table, &ours).unwrap();
        let names: Vec<&str> = added.columns.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["note", "score", "seen"]);
        let refused: Vec<&str> = added.unsupported.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(refused, ["tags", "strict"]);
        assert!(added.unsupported[0].1.contains("array"));
    }

    /// A row whose source line is stored gets its values; any other row, nulls. Files older
    /// than the column hold nulls.
    #[test]
    fn rows_of_stored_lines_keep_their_values_and_others_get_nulls() {
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, mut frame: DataFrame| {
            let path = dir.path().join(name);
            ParquetWriter::new(std::fs::File::create(&path).unwrap())
                .finish(&mut frame)
                .unwrap();
            path
        };
        let lineage = |files: &[&str], lines: &[i64], modified: &[i64]| -> Vec<Column> {
            vec![
                Column::new(LINEAGE_FILE.into(), files),
                Column::new(LINEAGE_LINE.into(), lines),
                Int64Chunked::from_slice(LINEAGE_MODIFIED.into(), modified)
                    .into_datetime(TimeUnit::Microseconds, Some(TimeZone::UTC))
                    .into_column(),
            ]
        };
        let mut with_note = lineage(&["a.gz", "a.gz"], &[1, 2], &[10, 10]);
        with_note.push(Column::new("note".into(), &["first", "second"]));
        let new = write("new.parquet", DataFrame::new(2, with_note).unwrap());
        let old = write(
            "old.parquet",
            DataFrame::new(1, lineage(&["b.gz"], &[1], &[20])).unwrap(),
        );
        let added = AddedColumns {
            columns: vec![("note".into(), DataType::String)],
            unsupported: vec![],
        };
        let carried = CarriedValues::read(&added, &[(&new, "new".into()), (&old, "old".into())]).unwrap();

        let mut frame = DataFrame::new(
            4,
            vec![
                Column::new(LINEAGE_FILE.into(), &["a.gz", "b.gz", "a.gz", "c.gz"]),
                Column::new(LINEAGE_LINE.into(), &[2i64, 1, 1, 1]),
                Int64Chunked::from_slice(LINEAGE_MODIFIED.into(), &[10, 20, 11, 10])
                    .into_datetime(TimeUnit::Microseconds, None)
                    .into_column(),
            ],
        )
        .unwrap();
        carried.attach(&mut frame).unwrap();
        let notes: Vec<Option<&str>> = frame.column("note").unwrap().str().unwrap().iter().collect();
        // a.gz line 1 was modified since (another `_source_modified`): a new row.
        assert_eq!(notes, [Some("second"), None, None, None]);
    }
}
