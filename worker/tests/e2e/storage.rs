//! The storage contract both backends keep: conditional writes, large (multipart) objects,
//! listing, deletes. S3 is moto over HTTP; local is a temporary folder.

use bytes::Bytes;
use lakeload::storage::{PutCondition, StorageError};

use crate::common::*;

async fn contract(url: &str, s3: Option<&S3Server>) {
    let storage = open_storage(url, s3).await;
    let first = storage
        .put_if(
            "_lakeload/lock",
            Bytes::from_static(b"one"),
            PutCondition::IfAbsent,
        )
        .await
        .unwrap();
    let again = storage
        .put_if(
            "_lakeload/lock",
            Bytes::from_static(b"two"),
            PutCondition::IfAbsent,
        )
        .await;
    assert!(
        matches!(again, Err(StorageError::PreconditionFailed { .. })),
        "create-if-absent loses: {again:?}"
    );
    let stale = storage
        .put_if(
            "_lakeload/lock",
            Bytes::from_static(b"x"),
            PutCondition::IfMatch("0123".into()),
        )
        .await;
    assert!(
        matches!(stale, Err(StorageError::PreconditionFailed { .. })),
        "stale ETag loses: {stale:?}"
    );
    let second = storage
        .put_if(
            "_lakeload/lock",
            Bytes::from_static(b"three"),
            PutCondition::IfMatch(first.clone()),
        )
        .await
        .unwrap();
    assert_ne!(first, second);
    let old = storage
        .put_if(
            "_lakeload/lock",
            Bytes::from_static(b"four"),
            PutCondition::IfMatch(first),
        )
        .await;
    assert!(
        matches!(old, Err(StorageError::PreconditionFailed { .. })),
        "a replaced ETag loses: {old:?}"
    );
    assert_eq!(
        &storage.get("_lakeload/lock").await.unwrap().unwrap().0[..],
        b"three"
    );

    // 40 MiB: above the multipart threshold on S3.
    let big: Vec<u8> = (0..40 * 1024 * 1024u32).map(|i| (i % 251) as u8).collect();
    storage
        .put("data/big.bin", Bytes::from(big.clone()))
        .await
        .unwrap();
    let meta = storage.head("data/big.bin").await.unwrap().unwrap();
    assert_eq!(meta.size, big.len() as u64);
    let (back, _) = storage.get("data/big.bin").await.unwrap().unwrap();
    assert!(back[..] == big[..], "the large object reads back intact");

    let keys: Vec<String> = storage
        .list("")
        .await
        .unwrap()
        .into_iter()
        .map(|m| m.key)
        .collect();
    assert_eq!(keys, ["_lakeload/lock", "data/big.bin"]);
    storage.delete("data/big.bin").await.unwrap();
    storage.delete("data/big.bin").await.unwrap();
    assert!(storage.head("data/big.bin").await.unwrap().is_none());
    assert!(storage.get("missing").await.unwrap().is_none());
}

#[tokio::test(flavor = "multi_thread")]
async fn s3_storage_keeps_the_contract() {
    let s3 = S3Server::shared();
    contract(&format!("s3://{}/root", s3.bucket("contract")), Some(s3)).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn local_storage_keeps_the_contract() {
    let dir = tempdir();
    contract(&path_str(&dir.path().join("root")), None).await;
}
