//! Where one configuration's run reads and writes: the source's storage, the table's storage,
//! the table (by format) and its state store.

use std::sync::Arc;

use crate::config::{Config, TableFormat};
use crate::error::{Error, Result};
use crate::state::settings::TableSettings;
use crate::state::{JsonStateStore, Loaded, StateStore};
use crate::storage::{self, DynStorage, ObjectMeta};
use crate::table::{DeltaTable, ParquetTable, Table, Transaction};

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
            table: match config.target.format {
                TableFormat::Parquet => {
                    Arc::new(ParquetTable::new(storage.clone(), config.target.layout, schema))
                }
                TableFormat::Delta => Arc::new(
                    DeltaTable::new(storage.clone(), schema)
                        .recording_settings(serde_json::to_value(TableSettings::of(config)).ok())
                        .marking_deletes(config.target.deletion_vectors),
                ),
            },
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

    /// The state a run starts from and its transaction on the table (`Table::begin`, which reads
    /// the table's log): the stored state, caught up with the log when a run stopped between its
    /// table commit and its state commit. `plan` starts from the same, so it says what a run
    /// would do.
    pub async fn load_state(&self, run_id: &str) -> Result<(Loaded, Arc<dyn Transaction>)> {
        let mut loaded = self.state.load().await?;
        let table = self.table.begin(run_id).await?;
        if let Some(state) = table.state_from_log(&loaded.state).await? {
            tracing::warn!(
                "the state caught up with version {} of the table's log (a run stopped between \
                 its table commit and its state commit)",
                state.table_version.map_or("-".into(), |v| v.to_string())
            );
            loaded.state = state;
        }
        Ok((loaded, table))
    }
}
