//! The `parquet` format: one snappy Parquet object per date, in a `ymd` or `date` layout.

use std::sync::Arc;

use super::encoder::ParquetEncoder;
use super::stored::StoredParquet;
use super::{DateEncoder, EncodedObject, Seen, StoredRows, Table, Transaction, fenced};
use crate::config::{Layout, SchemaConfig};
use crate::dates::{days_since_epoch, format_days};
use crate::error::{Error, Result};
use crate::scratch::SpillDir;
use crate::storage::{DynStorage, ObjectMeta, PutCondition, StorageError};

/// Parquet files in a `ymd` or `date` layout. Each date's object is live as it lands and
/// nothing is read beside the data, so a run's transaction is the table itself.
#[derive(Clone)]
pub struct ParquetTable {
    storage: DynStorage,
    layout: Layout,
    schema: Arc<SchemaConfig>,
}

impl ParquetTable {
    pub fn new(storage: DynStorage, layout: Layout, schema: Arc<SchemaConfig>) -> Self {
        ParquetTable {
            storage,
            layout,
            schema,
        }
    }

    fn partition_name(&self) -> &str {
        &self.schema.columns[self.schema.partition_column]
    }
}

/// `…/2024-01-31.snappy.parquet` → the date its file name states, in any layout.
pub fn date_of_file_name(key: &str) -> Option<i32> {
    let name = crate::storage::file_name(key);
    let date = name.strip_suffix(".snappy.parquet")?;
    chrono::NaiveDate::parse_from_str(date, "%Y-%m-%d")
        .ok()
        .map(days_since_epoch)
}

#[async_trait::async_trait]
impl Table for ParquetTable {
    async fn begin(&self, _run_id: &str) -> Result<Arc<dyn Transaction>> {
        Ok(Arc::new(self.clone()))
    }
}

#[async_trait::async_trait]
impl Transaction for ParquetTable {
    fn key_for(&self, date: i32) -> String {
        let day = format_days(date);
        match self.layout {
            Layout::Ymd => format!(
                "year={}/month={}/day={}/{day}.snappy.parquet",
                &day[0..4],
                &day[5..7],
                &day[8..10]
            ),
            Layout::Date => format!("{}={day}/{day}.snappy.parquet", self.partition_name()),
        }
    }

    fn date_of_key(&self, key: &str) -> Option<i32> {
        date_of_file_name(key).filter(|date| self.key_for(*date) == key)
    }

    fn places_prefix(&self) -> String {
        match self.layout {
            Layout::Ymd => "year=".into(),
            Layout::Date => format!("{}=", self.partition_name()),
        }
    }

    async fn list(&self) -> Result<Vec<ObjectMeta>> {
        let objects = self.storage.list(&self.places_prefix()).await?;
        Ok(objects
            .into_iter()
            .filter(|o| self.date_of_key(&o.key).is_some())
            .collect())
    }

    async fn read_date(&self, date: i32, scratch: &SpillDir) -> Result<(Option<Box<dyn StoredRows>>, Seen)> {
        let key = self.key_for(date);
        let url = self.storage.url(&key);
        let (file, path) = scratch
            .create_file("stored")
            .map_err(Error::scratch("cannot create a scratch file"))?;
        let Some(meta) = crate::storage::get_to_file(&self.storage, &key, file).await? else {
            return Ok((None, Seen::Absent));
        };
        let stored = StoredParquet::open(path, self.schema.clone(), url)?;
        Ok((Some(Box::new(stored)), Seen::of(meta.etag)))
    }

    async fn encoder(
        &self,
        _date: i32,
        scratch: &SpillDir,
        group_bytes: usize,
    ) -> Result<Box<dyn DateEncoder>> {
        Ok(Box::new(ParquetEncoder::new(
            self.schema.clone(),
            scratch,
            group_bytes,
        )?))
    }

    async fn write_date(&self, date: i32, body: EncodedObject, seen: Seen) -> Result<u64> {
        let key = self.key_for(date);
        let condition = match seen {
            Seen::Absent => Some(PutCondition::IfAbsent),
            Seen::Version(etag) => Some(PutCondition::IfMatch(etag)),
            Seen::Unknown => None,
        };
        match self.storage.put_file(&key, body.path(), condition).await {
            Ok(()) => Ok(body.size),
            Err(StorageError::PreconditionFailed { url }) => Err(fenced(&url)),
            Err(e) => Err(e.into()),
        }
    }

    async fn delete(&self, key: &str, etag: Option<&str>) -> Result<()> {
        let deleted = match etag {
            Some(etag) => self.storage.delete_if(key, etag).await,
            None => self.storage.delete(key).await,
        };
        match deleted {
            Err(StorageError::PreconditionFailed { url }) => Err(fenced(&url)),
            other => Ok(other?),
        }
    }
}
