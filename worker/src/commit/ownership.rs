//! What a table owns (SPEC §3): the data objects its state records — one per date — and those
//! a run announced in the state before writing them (so a crash between the write and the
//! state commit leaves nothing the table cannot recognise as its own). Runs replace or delete
//! only these; every other object under the table root belongs to someone else and is left
//! alone, byte for byte, whatever the configuration says.
//!
//! An object that sits exactly where the table would store one of its dates but that the
//! table did not write is *in the way*: a run refuses to touch it unless
//! `target.existing_objects` says to adopt or replace it.

use std::collections::{BTreeSet, HashMap};

use futures::{StreamExt, TryStreamExt};
use serde::Serialize;

use crate::bookkeeping::META_DIR;
use crate::config::{ExistingObjects, Mode};
use crate::error::{Error, Result};
use crate::state::{Loaded, State};
use crate::storage::{DynStorage, ObjectMeta};
use crate::table::{Seen, Transaction};

/// The keys (relative to the table root) of every data object the table owns.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Owned(BTreeSet<String>);

impl Owned {
    pub fn of(state: &State) -> Owned {
        let recorded = state
            .partitions
            .values()
            .flat_map(|p| p.keys().map(str::to_string));
        Owned(recorded.chain(state.unconfirmed.iter().cloned()).collect())
    }

    pub fn contains(&self, key: &str) -> bool {
        self.0.contains(key)
    }

    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.0.iter().map(String::as_str)
    }

    pub fn insert(&mut self, key: String) {
        self.0.insert(key);
    }
}

/// Everything under a table root, sorted by whose it is.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Survey {
    /// Data objects the table owns.
    pub owned: Vec<ObjectMeta>,
    /// Objects exactly where the table stores a date, that it did not write.
    pub in_the_way: Vec<ObjectMeta>,
    /// Everything else outside `_lakeload/`: never read, replaced or deleted.
    pub foreign: Vec<ObjectMeta>,
}

impl Survey {
    /// Sorts a listing of the table root (or of part of it).
    pub fn of(listing: Vec<ObjectMeta>, owned: &Owned, table: &dyn Transaction) -> Survey {
        let mut survey = Survey::default();
        for object in listing {
            if object.key.starts_with(&format!("{META_DIR}/")) || table.is_bookkeeping(&object.key) {
                continue;
            }
            if owned.contains(&object.key) {
                survey.owned.push(object);
            } else if table.is_place(&object.key) {
                survey.in_the_way.push(object);
            } else {
                survey.foreign.push(object);
            }
        }
        survey
    }
}

/// A short list of keys for a message: the first few, and how many more.
pub fn some_keys<'a>(keys: impl IntoIterator<Item = &'a str>, shown: usize) -> String {
    let keys: Vec<&str> = keys.into_iter().collect();
    let mut text = keys.iter().take(shown).copied().collect::<Vec<_>>().join(", ");
    if keys.len() > shown {
        text += &format!(" and {} more", keys.len() - shown);
    }
    text
}

/// The refusal to touch objects in the way: names them, who wrote them when the table knows
/// (`last_writer`), and the setting.
pub fn in_the_way_error(table_url: &str, objects: &[ObjectMeta], last_writer: Option<String>) -> Error {
    let whose = match last_writer {
        Some(writer) => format!(
            "are files of the table's current version that lakeload did not write (the table's \
             last writer is {writer})"
        ),
        None => "sit where this table stores its dates, but the table did not write them".into(),
    };
    Error::Config(format!(
        "{} object(s) under {table_url} {whose}: {}. lakeload changes only objects its table \
         wrote, so nothing was written. Set target.existing_objects = adopt to take them in as \
         the table's own (an incremental run merges their rows; they must be Parquet files \
         with the table's columns), or target.existing_objects = replace to overwrite them \
         with this run's rows, or point target.url elsewhere",
        objects.len(),
        some_keys(objects.iter().map(|o| o.key.as_str()), 5)
    ))
}

/// What a run may write and delete, decided before it writes anything: the table's own
/// objects, and the versions of those present.
#[derive(Debug, Clone, Default)]
pub struct Claims {
    /// Keys the table owns, objects this run took in included.
    pub owned: Owned,
    /// Versions of the owned objects found present (key → ETag).
    pub present: HashMap<String, Option<String>>,
    /// Objects this run took in under `replace`: overwritten, their rows not read.
    pub replaced: BTreeSet<String>,
    /// Whether every place of the table was listed (then `present` knows every object there
    /// and new keys need no lookup).
    pub listed_places: bool,
}

impl Claims {
    pub fn new(owned: Owned) -> Claims {
        Claims {
            owned,
            ..Claims::default()
        }
    }

    /// What the table owns and which of it is present, before a run writes anything. A first
    /// run (no state yet) looks at everything under the root and says what it found; a full
    /// run lists the table's places (every date's object, its own or in the way) and looks up
    /// owned objects elsewhere (an earlier layout) so it can remove them. Objects in the way
    /// are refused or taken in as `policy` says.
    pub async fn survey(
        mode: Mode,
        policy: ExistingObjects,
        storage: &DynStorage,
        table: &dyn Transaction,
        loaded: &Loaded,
    ) -> Result<Claims> {
        let mut claims = Claims::new(Owned::of(&loaded.state));
        let table_url = storage.root().to_string();
        if loaded.etag.is_none() {
            let listing = storage.list("").await?;
            let places: Vec<ObjectMeta> = listing
                .iter()
                .filter(|o| table.is_place(&o.key))
                .cloned()
                .collect();
            let survey = Survey::of(listing, &claims.owned, table);
            if !survey.foreign.is_empty() {
                tracing::warn!(
                    "{table_url} already holds {} object(s) ({} bytes) this table did not write, \
                     e.g. {}; lakeload leaves them alone",
                    survey.foreign.len(),
                    survey.foreign.iter().map(|o| o.size).sum::<u64>(),
                    some_keys(survey.foreign.iter().map(|o| o.key.as_str()), 3)
                );
            }
            claims.take_in(places, table, policy, &table_url)?;
            claims.listed_places = true;
        } else if mode == Mode::Full {
            claims.take_in(table.list().await?, table, policy, &table_url)?;
            claims.listed_places = true;
        }
        if mode == Mode::Full {
            claims.find_owned(storage).await?;
        }
        Ok(claims)
    }

    /// Sorts objects found where the table stores its dates (a listing of the table's places
    /// or of the whole root): the table's own are noted with their version; the rest are
    /// refused or taken in as `policy` says.
    pub fn take_in(
        &mut self,
        found: Vec<ObjectMeta>,
        table: &dyn Transaction,
        policy: ExistingObjects,
        table_url: &str,
    ) -> Result<()> {
        let survey = Survey::of(found, &self.owned, table);
        if !survey.in_the_way.is_empty() {
            if policy == ExistingObjects::Refuse {
                return Err(in_the_way_error(
                    table_url,
                    &survey.in_the_way,
                    table.last_writer(),
                ));
            }
            tracing::warn!(
                "target.existing_objects = {}: taking in {} object(s) the table did not write: {}",
                if policy == ExistingObjects::Adopt {
                    "adopt"
                } else {
                    "replace"
                },
                survey.in_the_way.len(),
                some_keys(survey.in_the_way.iter().map(|o| o.key.as_str()), 5)
            );
        }
        for object in survey.in_the_way {
            if policy == ExistingObjects::Replace {
                self.replaced.insert(object.key.clone());
            }
            self.owned.insert(object.key.clone());
            self.present.insert(object.key, object.etag);
        }
        for object in survey.owned {
            self.present.insert(object.key, object.etag);
        }
        Ok(())
    }

    /// Looks up the keys `keys` that the table does not own yet (an incremental run's new
    /// dates): any that exists is in the way.
    pub async fn check_new_keys(
        &mut self,
        keys: impl IntoIterator<Item = String>,
        storage: &DynStorage,
        table: &dyn Transaction,
        policy: ExistingObjects,
    ) -> Result<()> {
        if self.listed_places {
            return Ok(());
        }
        let new: Vec<String> = keys.into_iter().filter(|k| !self.owned.contains(k)).collect();
        self.take_in(
            head_all(storage, &new).await?,
            table,
            policy,
            &storage.root().to_string(),
        )
    }

    /// Looks up the owned keys not yet known to be present (objects of an earlier layout,
    /// announced writes of a crashed run), so a full run can delete them.
    pub async fn find_owned(&mut self, storage: &DynStorage) -> Result<()> {
        let unknown: Vec<String> = self
            .owned
            .keys()
            .filter(|k| !self.present.contains_key(*k))
            .map(str::to_string)
            .collect();
        for object in head_all(storage, &unknown).await? {
            self.present.insert(object.key, object.etag);
        }
        Ok(())
    }

    /// How a date stored at `keys` (its first object, then any others) is written: the
    /// version the write is conditional on (the first object's), and whether its stored rows
    /// are merged first (incremental runs, the table's own objects: any of them).
    pub fn place(&self, keys: &[String], merge_stored: bool) -> Place {
        let seen = match keys.first().and_then(|key| self.present.get(key)) {
            Some(etag) => Seen::of(etag.clone()),
            None => Seen::Absent,
        };
        let merge = merge_stored
            && keys
                .iter()
                .any(|key| self.owned.contains(key) && !self.replaced.contains(key));
        Place { seen, merge }
    }

    /// Owned objects present that a full run which wrote `written` leaves behind.
    pub fn unwritten(&self, written: &BTreeSet<String>) -> Vec<(String, Option<String>)> {
        let mut left: Vec<(String, Option<String>)> = self
            .present
            .iter()
            .filter(|(key, _)| self.owned.contains(key) && !written.contains(*key))
            .map(|(key, etag)| (key.clone(), etag.clone()))
            .collect();
        left.sort();
        left
    }
}

/// The objects among `keys` that exist, looked up 16 at a time.
async fn head_all(storage: &DynStorage, keys: &[String]) -> Result<Vec<ObjectMeta>> {
    let found: Vec<Option<ObjectMeta>> = futures::stream::iter(keys)
        .map(|key| storage.head(key))
        .buffered(16)
        .try_collect()
        .await?;
    Ok(found.into_iter().flatten().collect())
}

/// How one date's object is written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Place {
    /// The version the write is conditional on (when the stored rows are merged, the version
    /// read replaces it).
    pub seen: Seen,
    /// Whether the stored rows are read and merged with the new ones.
    pub merge: bool,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Layout, Origin, RawConfig};
    use crate::state::PartitionRecord;
    use crate::table::ParquetTable;
    use std::sync::Arc;

    fn table() -> ParquetTable {
        let ini = "[source]\nurl = /in\n[target]\nurl = /out\n";
        let config =
            crate::Config::from_raw(&RawConfig::from_ini_str(ini, Origin::File("t".into())).unwrap())
                .unwrap();
        let storage: DynStorage = Arc::new(crate::storage::LocalStorage::new("/nonexistent".into()));
        ParquetTable::new(storage, Layout::Ymd, Arc::new(config.schema))
    }

    fn object(key: &str) -> ObjectMeta {
        ObjectMeta {
            key: key.into(),
            size: 1,
            etag: Some(format!("etag-of-{key}")),
            last_modified: chrono::Utc::now(),
        }
    }

    const OWN: &str = "year=2024/month=01/day=01/2024-01-01.snappy.parquet";
    const ANNOUNCED: &str = "year=2024/month=01/day=03/2024-01-03.snappy.parquet";
    const IN_THE_WAY: &str = "year=2024/month=01/day=02/2024-01-02.snappy.parquet";

    fn state() -> State {
        let mut state = State::default();
        let record = PartitionRecord {
            key: OWN.into(),
            rows: 1,
            bytes: 1,
            run_id: "r".into(),
            more_keys: Vec::new(),
            deleted_rows: 0,
        };
        state.partitions.insert("2024-01-01".into(), record);
        state.unconfirmed.push(ANNOUNCED.into());
        state
    }

    #[test]
    fn objects_are_sorted_by_whose_they_are() {
        let table = table();
        let listing = [
            OWN,
            ANNOUNCED,
            IN_THE_WAY,
            "year=2024/month=01/day=01/extra.parquet",
            "year=2024/month=01/day=02/2024-01-03.snappy.parquet",
            "team-x/part-0.parquet",
            "_lakeload/state.json",
        ];
        let survey = Survey::of(
            listing.iter().map(|k| object(k)).collect(),
            &Owned::of(&state()),
            &table,
        );
        let keys = |v: &[ObjectMeta]| v.iter().map(|o| o.key.clone()).collect::<Vec<_>>();
        assert_eq!(keys(&survey.owned), [OWN, ANNOUNCED]);
        assert_eq!(keys(&survey.in_the_way), [IN_THE_WAY]);
        // A date's name in another date's folder is not where the table stores it: foreign.
        assert_eq!(survey.foreign.len(), 3, "{:?}", keys(&survey.foreign));
    }

    #[test]
    fn objects_in_the_way_are_refused_adopted_or_replaced() {
        let table = table();
        let found = || vec![object(OWN), object(IN_THE_WAY)];
        let mut claims = Claims::new(Owned::of(&state()));
        let e = claims
            .take_in(found(), &table, ExistingObjects::Refuse, "/out")
            .unwrap_err();
        assert!(e.to_string().contains(IN_THE_WAY) && e.to_string().contains("target.existing_objects"));
        assert_eq!(e.exit_code(), 2);

        let mut adopted = Claims::new(Owned::of(&state()));
        adopted
            .take_in(found(), &table, ExistingObjects::Adopt, "/out")
            .unwrap();
        let expected = Place {
            seen: Seen::Version(format!("etag-of-{IN_THE_WAY}")),
            merge: true,
        };
        assert_eq!(adopted.place(&[IN_THE_WAY.into()], true), expected);

        let mut replaced = Claims::new(Owned::of(&state()));
        replaced
            .take_in(found(), &table, ExistingObjects::Replace, "/out")
            .unwrap();
        assert!(
            !replaced.place(&[IN_THE_WAY.into()], true).merge,
            "replaced objects are not read"
        );
        assert!(replaced.place(&[OWN.into()], true).merge);
        // A date new to the table is written only if nothing is there.
        assert_eq!(
            replaced
                .place(
                    &["year=2024/month=02/day=01/2024-02-01.snappy.parquet".into()],
                    true
                )
                .seen,
            Seen::Absent
        );
        // A full run that wrote only the owned date deletes what it took in and nothing else.
        let written = [OWN.to_string()].into_iter().collect();
        let left: Vec<String> = replaced.unwritten(&written).into_iter().map(|(k, _)| k).collect();
        assert_eq!(left, [IN_THE_WAY]);
    }
}
