//! Deletion vectors: the rows of a data file a version no longer reads, named by their
//! positions in the file (0-based physical row index), so a run can supersede a few rows of a
//! large file without rewriting it (table feature `deletionVectors`, reader 3 / writer 7).
//!
//! A vector is a 64-bit Roaring bitmap: the magic number 1681511377 (u32 little-endian), then
//! the bitmap in the portable serialization (u64 count of 32-bit buckets, each a u32 key and a
//! 32-bit Roaring bitmap). A file's `deletionVector` descriptor says where its vector lies:
//! - `u`: in `<prefix>/deletion_vector_<uuid>.bin` under the table root, `pathOrInlineDv`
//!   being the prefix followed by the UUID's 16 bytes in Z85 (20 characters); the file is a
//!   version byte (1) and, for each vector at its `offset`, a big-endian u32 size, the vector,
//!   and a big-endian CRC-32 of the vector;
//! - `i`: the vector itself, in Z85, inline;
//! - `p`: an absolute path (refused: lakeload reads only what lies under the table root).
//!
//! The same data file with another vector is another logical file: a commit that deletes more
//! of a file's rows removes it with its old vector and adds it with the union.

use std::collections::HashMap;

use roaring::RoaringTreemap;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::storage::DynStorage;

/// The magic number opening every serialized vector.
const MAGIC: u32 = 1681511377;

/// The first byte of a deletion vector file: its format version.
const FILE_VERSION: u8 = 1;

/// Where a file's deletion vector is, as an `add` or `remove` names it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeletionVector {
    pub storage_type: String,
    pub path_or_inline_dv: String,
    /// Where the vector starts in its file (`u`, `p`); readers disagree about a missing one, so
    /// lakeload always writes it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offset: Option<i32>,
    /// The serialized vector's size (magic number included).
    pub size_in_bytes: i32,
    /// Rows it deletes.
    pub cardinality: i64,
}

impl DeletionVector {
    /// What tells two vectors apart (PROTOCOL.md: the storage type, the path or inline data,
    /// and the offset when there is one).
    pub fn unique_id(&self) -> String {
        match self.offset {
            Some(offset) => format!("{}{}@{offset}", self.storage_type, self.path_or_inline_dv),
            None => format!("{}{}", self.storage_type, self.path_or_inline_dv),
        }
    }

    /// The key under the table root of the file holding the vector (`None` when inline).
    pub fn file_key(&self) -> Result<Option<String>> {
        match self.storage_type.as_str() {
            "i" => Ok(None),
            "u" => {
                let text = &self.path_or_inline_dv;
                let split = text.len().checked_sub(20).filter(|&at| text.is_char_boundary(at));
                let Some(split) = split else {
                    return Err(self.unreadable("its path is shorter than a Z85 UUID"));
                };
                let (prefix, encoded) = text.split_at(split);
                let bytes = z85::decode(encoded).map_err(|e| self.unreadable(&format!("{e:?}")))?;
                let uuid = uuid::Uuid::from_slice(&bytes).map_err(|e| self.unreadable(&e.to_string()))?;
                let name = format!("deletion_vector_{uuid}.bin");
                Ok(Some(match prefix.is_empty() {
                    true => name,
                    false => format!("{prefix}/{name}"),
                }))
            }
            other => Err(Error::Other(format!(
                "a deletion vector of storage type {other:?} ({}): lakeload reads only vectors \
                 stored inline or beside the table (types `i` and `u`)",
                self.path_or_inline_dv
            ))),
        }
    }

    /// The key of the vector file `vector` (if any) lies in, when lakeload can tell: what
    /// `vacuum` weighs (a vector stored inline, or one it cannot locate, names no file).
    pub fn file_of(vector: Option<&DeletionVector>) -> Option<String> {
        vector?.file_key().ok().flatten()
    }

    fn unreadable(&self, why: &str) -> Error {
        Error::Other(format!(
            "the deletion vector {} cannot be read: {why}",
            self.unique_id()
        ))
    }

    /// The vector's row positions, its file read through `files` (each file read once).
    pub async fn read(
        &self,
        storage: &DynStorage,
        files: &mut DeletionVectorFiles,
    ) -> Result<RoaringTreemap> {
        let Some(key) = self.file_key()? else {
            let bytes =
                z85::decode(&self.path_or_inline_dv).map_err(|e| self.unreadable(&format!("{e:?}")))?;
            let size = (self.size_in_bytes.max(0) as usize).min(bytes.len());
            return self.checked(decode_bitmap(&bytes[..size]));
        };
        let body = files.get(storage, &key).await?;
        let offset = self.offset.unwrap_or(1).max(0) as usize;
        let size = self.size_in_bytes.max(0) as usize;
        let Some(framed) = body.get(offset..offset + 4 + size + 4) else {
            return Err(self.unreadable(&format!("{key} ends before the vector does")));
        };
        let stated = u32::from_be_bytes(framed[0..4].try_into().unwrap_or_default()) as usize;
        if stated != size {
            return Err(self.unreadable(&format!("{key} states a size of {stated}, the log {size}")));
        }
        let vector = &framed[4..4 + size];
        let crc = u32::from_be_bytes(framed[4 + size..].try_into().unwrap_or_default());
        if crc32fast::hash(vector) != crc {
            return Err(self.unreadable(&format!("its checksum in {key} does not match")));
        }
        self.checked(decode_bitmap(vector))
    }

    /// `bitmap`, if it deletes as many rows as the descriptor says.
    fn checked(&self, bitmap: Result<RoaringTreemap>) -> Result<RoaringTreemap> {
        let bitmap = bitmap.map_err(|e| self.unreadable(&e.to_string()))?;
        if bitmap.len() != self.cardinality.max(0) as u64 {
            return Err(self.unreadable(&format!(
                "it holds {} rows, the log says {}",
                bitmap.len(),
                self.cardinality
            )));
        }
        Ok(bitmap)
    }
}

/// Deletion vector files read so far, by key: a file holds the vectors of many data files.
#[derive(Default)]
pub struct DeletionVectorFiles {
    read: HashMap<String, bytes::Bytes>,
}

impl DeletionVectorFiles {
    async fn get(&mut self, storage: &DynStorage, key: &str) -> Result<bytes::Bytes> {
        if let Some(body) = self.read.get(key) {
            return Ok(body.clone());
        }
        let Some((body, _)) = storage.get(key).await? else {
            return Err(Error::Other(format!(
                "{} is named by the Delta log as a deletion vector file but is missing",
                storage.url(key)
            )));
        };
        if body.first() != Some(&FILE_VERSION) {
            return Err(Error::Other(format!(
                "{} is not a deletion vector file of version {FILE_VERSION}",
                storage.url(key)
            )));
        }
        self.read.insert(key.to_string(), body.clone());
        Ok(body)
    }
}

/// A vector's bytes: the magic number and the portable serialization.
pub fn encode_bitmap(bitmap: &RoaringTreemap) -> Vec<u8> {
    let mut out = Vec::with_capacity(4 + bitmap.serialized_size());
    out.extend_from_slice(&MAGIC.to_le_bytes());
    // Writing into a Vec cannot fail.
    let _ = bitmap.serialize_into(&mut out);
    out
}

pub fn decode_bitmap(bytes: &[u8]) -> Result<RoaringTreemap> {
    let magic = bytes
        .get(0..4)
        .map(|m| u32::from_le_bytes(m.try_into().unwrap_or_default()));
    if magic != Some(MAGIC) {
        return Err(Error::Other(
            "not a Roaring bitmap array (wrong magic number)".into(),
        ));
    }
    RoaringTreemap::deserialize_from(&bytes[4..])
        .map_err(|e| Error::Other(format!("not a Roaring bitmap array: {e}")))
}

/// A new deletion vector file being filled: one per commit, holding the vectors of every file
/// whose rows it deletes.
pub struct DeletionVectorFile {
    id: uuid::Uuid,
    body: Vec<u8>,
}

impl Default for DeletionVectorFile {
    fn default() -> Self {
        DeletionVectorFile::new(uuid::Uuid::new_v4())
    }
}

impl DeletionVectorFile {
    /// An empty file with id `id`: a run picks its file's id when it begins, so that it can
    /// announce the file before writing it.
    pub fn new(id: uuid::Uuid) -> Self {
        DeletionVectorFile {
            id,
            body: vec![FILE_VERSION],
        }
    }

    /// The key under the table root (no prefix) of the file with id `id`.
    pub fn key_of(id: uuid::Uuid) -> String {
        format!("deletion_vector_{id}.bin")
    }

    /// Its key under the table root (no prefix).
    pub fn key(&self) -> String {
        DeletionVectorFile::key_of(self.id)
    }

    /// Appends `bitmap`; returns the descriptor naming it.
    pub fn push(&mut self, bitmap: &RoaringTreemap) -> DeletionVector {
        let vector = encode_bitmap(bitmap);
        let offset = self.body.len();
        self.body.extend_from_slice(&(vector.len() as u32).to_be_bytes());
        self.body.extend_from_slice(&vector);
        self.body
            .extend_from_slice(&crc32fast::hash(&vector).to_be_bytes());
        DeletionVector {
            storage_type: "u".into(),
            path_or_inline_dv: z85::encode(self.id.as_bytes()),
            offset: Some(offset as i32),
            size_in_bytes: vector.len() as i32,
            cardinality: bitmap.len() as i64,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.body.len() <= 1
    }

    pub fn into_body(self) -> bytes::Bytes {
        bytes::Bytes::from(self.body)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    /// Vectors written to a file read back as the same positions, each by its descriptor, the
    /// file's key derived from the descriptor's Z85 id; an inline vector reads too.
    #[tokio::test]
    async fn vectors_read_back_from_their_file_and_inline() {
        let dir = tempfile::tempdir().unwrap();
        let storage: DynStorage = Arc::new(crate::storage::LocalStorage::new(dir.path().to_path_buf()));
        let first: RoaringTreemap = [0u64, 3, 7, 1 << 33].into_iter().collect();
        let second: RoaringTreemap = (100u64..5000).collect();
        let mut file = DeletionVectorFile::default();
        let (a, b) = (file.push(&first), file.push(&second));
        assert_eq!(a.offset, Some(1), "the first vector follows the version byte");
        assert_eq!(a.path_or_inline_dv.len(), 20);
        let key = file.key();
        assert_eq!(a.file_key().unwrap(), Some(key.clone()));
        storage.put(&key, file.into_body()).await.unwrap();
        let mut files = DeletionVectorFiles::default();
        assert_eq!(a.read(&storage, &mut files).await.unwrap(), first);
        assert_eq!(b.read(&storage, &mut files).await.unwrap(), second);
        assert_eq!(b.cardinality, 4900);

        let inline = DeletionVector {
            storage_type: "i".into(),
            path_or_inline_dv: z85::encode(encode_bitmap(&first)),
            offset: None,
            size_in_bytes: encode_bitmap(&first).len() as i32,
            cardinality: 4,
        };
        assert_eq!(inline.read(&storage, &mut files).await.unwrap(), first);

        let wrong = DeletionVector { cardinality: 5, ..a };
        assert!(
            wrong.read(&storage, &mut files).await.is_err(),
            "a count that does not match is refused"
        );
    }

    /// The bytes of a known vector, as Delta's reference implementation lays them out: the magic
    /// number, one bucket, key 0, then a 32-bit bitmap of {1, 2}.
    #[test]
    fn a_vector_is_laid_out_as_delta_reads_it() {
        let bitmap: RoaringTreemap = [1u64, 2].into_iter().collect();
        let bytes = encode_bitmap(&bitmap);
        assert_eq!(&bytes[0..4], &MAGIC.to_le_bytes());
        assert_eq!(&bytes[4..12], &1u64.to_le_bytes(), "one bucket");
        assert_eq!(&bytes[12..16], &0u32.to_le_bytes(), "its key");
        assert_eq!(decode_bitmap(&bytes).unwrap(), bitmap);
    }
}
