//! Rows to and from the table's columns: the codec between row blocks and polars frames.

use polars::prelude::*;

use super::{LINEAGE_FILE, LINEAGE_LINE, LINEAGE_MODIFIED};
use crate::block::{FileTable, RowRef};
use crate::block::{Lineage, NULL_DATE, RowBlock, RowBuilder};
use crate::config::SchemaConfig;
use crate::error::{Error, Result};

/// The table's columns and types.
pub(super) fn frame_schema(schema: &SchemaConfig) -> Schema {
    let mut fields: Vec<Field> = schema
        .columns
        .iter()
        .enumerate()
        .map(|(i, name)| {
            let dtype = match schema.date_slot(i) {
                Some(_) => DataType::Date,
                None => DataType::String,
            };
            Field::new(name.as_str().into(), dtype)
        })
        .collect();
    fields.push(Field::new(LINEAGE_FILE.into(), DataType::String));
    fields.push(Field::new(LINEAGE_LINE.into(), DataType::Int64));
    fields.push(Field::new(
        LINEAGE_MODIFIED.into(),
        DataType::Datetime(TimeUnit::Microseconds, None),
    ));
    Schema::from_iter(fields)
}

/// The rows `at` of `blocks` → a data frame of the table's columns. Built in one pass over
/// the rows, every column at once: a row's text and field ends are fetched from memory once
/// (the rows lie scattered over many blocks, in lineage order), not once per column.
pub(super) fn frame(
    blocks: &[RowBlock],
    at: &[RowRef],
    schema: &SchemaConfig,
    files: &FileTable,
) -> Result<DataFrame> {
    enum Builder {
        Text(usize, StringChunkedBuilder),
        Date(usize, Vec<Option<i32>>),
    }
    let mut builders: Vec<Builder> = schema
        .columns
        .iter()
        .enumerate()
        .map(|(i, name)| match schema.date_slot(i) {
            Some(slot) => Builder::Date(slot, Vec::with_capacity(at.len())),
            None => Builder::Text(i, StringChunkedBuilder::new(name.as_str().into(), at.len())),
        })
        .collect();
    let mut file_keys = StringChunkedBuilder::new(LINEAGE_FILE.into(), at.len());
    let mut lines = Vec::with_capacity(at.len());
    let mut modified = Vec::with_capacity(at.len());
    for &(b, r) in at {
        let (block, r) = (&blocks[b as usize], r as usize);
        let row = block.row(r);
        for builder in &mut builders {
            match builder {
                Builder::Text(i, values) => values.append_option(row.field_str(*i)),
                Builder::Date(slot, days) => {
                    days.push(Some(block.date(r, *slot)).filter(|d| *d != NULL_DATE))
                }
            }
        }
        let file = files.get(block.file(r));
        file_keys.append_value(&*file.key);
        lines.push(block.line(r) as i64);
        modified.push(file.modified_micros);
    }
    let mut columns: Vec<Column> = builders
        .into_iter()
        .zip(&schema.columns)
        .map(|(builder, name)| match builder {
            Builder::Text(_, values) => values.finish().into_series().into_column(),
            Builder::Date(_, days) => Int32Chunked::from_iter_options(name.as_str().into(), days.into_iter())
                .into_series()
                .into_date()
                .into_column(),
        })
        .collect();
    columns.push(file_keys.finish().into_series().into_column());
    columns.push(
        Int64Chunked::from_vec(LINEAGE_LINE.into(), lines)
            .into_series()
            .into_column(),
    );
    columns.push(
        Int64Chunked::from_vec(LINEAGE_MODIFIED.into(), modified)
            .into_series()
            .into_datetime(TimeUnit::Microseconds, None)
            .into_column(),
    );
    Ok(DataFrame::new(at.len(), columns)?)
}

/// A timestamp column as the same instants without a time zone (a Delta file's UTC lineage
/// time): polars converts between zones only with its time-zone database, which this build
/// leaves out, and the instants need no conversion.
pub(super) fn without_time_zone(column: &Column) -> Column {
    match column.dtype() {
        DataType::Datetime(unit, Some(_)) => column
            .as_materialized_series()
            .clone()
            .into_datetime(*unit, None)
            .into_column(),
        _ => column.clone(),
    }
}

/// A decoded table object.
pub struct Decoded {
    /// Lineage file ids index `files`.
    pub rows: RowBlock,
    /// `(_source_file, _source_modified)` pairs named by the rows.
    pub files: Vec<(String, i64)>,
}

/// A table object → rows.
#[cfg(test)]
pub fn decode(bytes: &[u8], schema: &SchemaConfig) -> Result<Decoded> {
    decode_frame(
        &ParquetReader::new(std::io::Cursor::new(bytes)).finish()?,
        schema,
        Fields::All,
    )
}

/// Table rows as polars read them → rows, with the text `fields` asked for (the others NULL).
pub(super) fn decode_frame(frame: &DataFrame, schema: &SchemaConfig, fields: Fields) -> Result<Decoded> {
    let n = frame.height();
    let text_column = |name: &str| -> Result<StringChunked> {
        Ok(frame.column(name)?.cast(&DataType::String)?.str()?.clone())
    };
    let int_column = |name: &str, dtype: DataType| -> Result<Int64Chunked> {
        Ok(without_time_zone(frame.column(name)?)
            .cast(&dtype)?
            .cast(&DataType::Int64)?
            .i64()?
            .clone())
    };
    let mut texts: Vec<Option<StringChunked>> = Vec::with_capacity(schema.columns.len());
    for (i, name) in schema.columns.iter().enumerate() {
        let wanted = fields == Fields::All || schema.key.contains(&i);
        texts.push(match schema.date_slot(i) {
            None if wanted => Some(text_column(name)?),
            _ => None,
        });
    }
    // In `date_columns` order, as the line parser fills them (see `SchemaConfig::date_slot`).
    let dates: Vec<Int64Chunked> = schema
        .date_columns
        .iter()
        .map(|&column| int_column(&schema.columns[column], DataType::Int32))
        .collect::<Result<_>>()?;
    let file_keys = text_column(LINEAGE_FILE)?;
    let lines = int_column(LINEAGE_LINE, DataType::Int64)?;
    let modified = int_column(LINEAGE_MODIFIED, DataType::Datetime(TimeUnit::Microseconds, None))?;

    let mut text_iters: Vec<Option<_>> = texts.iter().map(|c| c.as_ref().map(|c| c.iter())).collect();
    let mut date_iters: Vec<_> = dates.iter().map(|c| c.iter()).collect();
    let (mut file_iter, mut line_iter, mut modified_iter) = (file_keys.iter(), lines.iter(), modified.iter());

    let mut lineage_files: Vec<(String, i64)> = Vec::new();
    let mut lineage_ids: std::collections::HashMap<(&str, i64), usize> = Default::default();
    let mut previous: Option<(&str, i64, usize)> = None;
    let mut builder = RowBuilder::new(schema);
    let mut rows = RowBlock::new(schema.columns.len(), schema.date_columns.len());
    let mut values: Vec<Option<&str>> = vec![None; schema.columns.len()];
    let mut row_dates: Vec<i32> = vec![NULL_DATE; schema.date_columns.len()];
    for r in 0..n {
        for (value, column) in values.iter_mut().zip(text_iters.iter_mut()) {
            *value = column.as_mut().and_then(|c| c.next().flatten());
        }
        for (date, column) in row_dates.iter_mut().zip(date_iters.iter_mut()) {
            *date = column.next().flatten().map_or(NULL_DATE, |d| d as i32);
        }
        let (Some(key), Some(line), Some(modified)) = (
            file_iter.next().flatten(),
            line_iter.next().flatten(),
            modified_iter.next().flatten(),
        ) else {
            return Err(Error::Other(format!(
                "row {r} has no lineage; the object was not written by lakeload"
            )));
        };
        // Rows come sorted by file: most rows name the file the row before them named.
        let file = match previous {
            Some((k, m, id)) if k == key && m == modified => id,
            _ => {
                let id = *lineage_ids.entry((key, modified)).or_insert_with(|| {
                    lineage_files.push((key.to_string(), modified));
                    lineage_files.len() - 1
                });
                previous = Some((key, modified, id));
                id
            }
        };
        let lineage = Lineage {
            file: file as u32,
            line: line as u64,
            generation: 0,
        };
        builder.push(&mut rows, &values, &row_dates, lineage);
    }
    Ok(Decoded {
        rows,
        files: lineage_files,
    })
}

/// The merge's key hash of each row of `frame`, the hash [`decode_frame`]'s rows carry, from
/// the key's columns alone (no lineage, no other field): what the key check of a stored file
/// reads. An empty text is NULL, as in a decoded row.
pub(super) fn key_hashes(frame: &DataFrame, schema: &SchemaConfig) -> Result<Vec<u64>> {
    // A column at a time, each row's hasher fed its parts in the key's order: no row is
    // gathered from its columns first.
    let keys = crate::block::KeyColumns::new(schema);
    let mut hashers = vec![crate::block::KeyColumns::hasher(); frame.height()];
    for part in keys.parts() {
        match part {
            Ok(column) => {
                let values = frame.column(&schema.columns[column])?;
                let text = match values.dtype() {
                    DataType::String => values.clone(),
                    _ => values.cast(&DataType::String)?,
                };
                let rows = hashers.iter_mut().zip(text.str()?.iter());
                for (h, value) in rows {
                    let value = value.filter(|v| !v.is_empty()).map(str::as_bytes);
                    crate::block::KeyColumns::write_text(h, value);
                }
            }
            Err(slot) => {
                let name = &schema.columns[schema.date_columns[slot]];
                let days = without_time_zone(frame.column(name)?).cast(&DataType::Int32)?;
                for (h, day) in hashers.iter_mut().zip(days.i32()?.iter()) {
                    crate::block::KeyColumns::write_date(h, day.unwrap_or(NULL_DATE));
                }
            }
        }
    }
    Ok(hashers
        .into_iter()
        .map(|h| std::hash::Hasher::finish(&h))
        .collect())
}

/// Which text fields a decode fills.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Fields {
    All,
    Key,
}

/// A decoded object's columns → the table's columns, in its order and types (a missing
/// column is an error: the object was not written by lakeload with this schema).
pub(super) fn conform(frame: DataFrame, schema: &SchemaConfig) -> Result<DataFrame> {
    let height = frame.height();
    let columns = frame_schema(schema)
        .iter()
        .map(|(name, dtype)| Ok(without_time_zone(frame.column(name)?).cast(dtype)?))
        .collect::<Result<Vec<Column>>>()?;
    Ok(DataFrame::new(height, columns)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::block::FileInfo;
    use crate::read::row::{LineOutcome, LineParser, ParsedLine};
    use crate::table::encode;
    use std::sync::Arc;

    /// Issue 7 (2): date columns listed out of column order must decode into the slots they
    /// were parsed into, or stored rows swap their dates and stop matching their keys.
    #[test]
    fn rows_read_back_equal_rows_written_whatever_the_date_column_order() {
        for date_columns in ["c2,c4", "c4,c2", "c4,c3,c2"] {
            let schema = crate::test_fixtures::schema_of("c1,c2,c3,c4", date_columns, "c4", "c1,c4,c2");
            let parser = LineParser::new(&schema, b'|');
            let line = if date_columns.contains("c3") {
                "k|2024-01-02|2024-01-03|2024-01-04"
            } else if date_columns == "c4,c2" {
                // A NULL key field (empty) hashes the same way too.
                "|2024-01-02|text|2024-01-04"
            } else {
                "k|2024-01-02|text|2024-01-04"
            };
            let mut parsed = ParsedLine::default();
            let LineOutcome::Row(text) = parser.parse(line.as_bytes(), 1, &mut parsed) else {
                panic!("{line} parses")
            };
            let mut row = RowBlock::new(4, schema.date_columns.len());
            let lineage = Lineage {
                file: 0,
                line: 1,
                generation: 1,
            };
            row.push(text, &parsed.ends, &parsed.dates, parsed.hash, lineage);
            let files = FileTable::new(std::sync::Arc::from(vec![FileInfo {
                key: "f.gz".into(),
                modified_micros: 7,
            }]));
            let bytes = encode(&row, &Arc::new(schema.clone()), &files).unwrap();
            let decoded = decode(&bytes, &schema).unwrap();
            let back = &decoded.rows;
            for slot in 0..schema.date_columns.len() {
                assert_eq!(
                    back.date(0, slot),
                    row.date(0, slot),
                    "{date_columns}: date slot {slot}"
                );
            }
            assert_eq!(back.field_str(0, 0), Some("k").filter(|_| !line.starts_with('|')));
            assert_eq!(
                back.hash(0),
                row.hash(0),
                "{date_columns}: stored rows hash like parsed ones"
            );
            let frame = ParquetReader::new(std::io::Cursor::new(bytes.clone()))
                .finish()
                .unwrap();
            assert_eq!(
                key_hashes(&frame, &schema).unwrap(),
                [row.hash(0)],
                "{date_columns}: the key check hashes from the key's columns as the merge does"
            );
            assert_eq!(decoded.files, vec![("f.gz".to_string(), 7)]);
        }
    }
}
