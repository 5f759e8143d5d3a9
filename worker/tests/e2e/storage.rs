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

/// Where a worker's AWS credentials live: keys in the environment (every other S3 test), a web
/// identity token (IRSA on EKS: what a worker pod has when only its service account holds the
/// role), or nowhere, which is a setup mistake said in one sentence.
#[test]
fn credentials_come_from_a_web_identity_token_and_their_absence_is_said_plainly() {
    let s3 = S3Server::shared();
    let bucket = s3.bucket("irsa");
    s3.put(
        &bucket,
        "in/part-1.gz",
        &gzip(lakeload_testkit::sample_lines(3, 200, 40, 3).as_bytes()),
    );
    let dir = tempdir();
    let base = |dir: &std::path::Path| {
        Lakeload::new(dir)
            .env("LAKELOAD_AWS_ENDPOINT_URL", &s3.endpoint)
            .env("LAKELOAD_AWS_REGION", "us-east-1")
            .env("LAKELOAD_SOURCE_URL", format!("s3://{bucket}/in"))
            .env("LAKELOAD_TARGET_URL", format!("s3://{bucket}/table"))
            .args(["run", "--mode", "full", "--json"])
    };

    let nowhere = base(dir.path()).output();
    assert_exit(&nowhere, 1);
    let said = stderr(&nowhere) + &stdout(&nowhere);
    assert!(said.contains("no AWS credentials found"), "{said}");
    assert!(
        !said.contains("DispatchFailure"),
        "no dump of error types: {said}"
    );

    // A profile whose credentials come from a command: the worker is built without the SDK's
    // `credentials-process`, so the command never runs (in a pod, a tenant's ConfigMap could
    // otherwise run a shell with the run's identity).
    let ran = dir.path().join("credential-process-ran");
    let config = dir.path().join("aws-config");
    std::fs::write(
        &config,
        format!(
            "[default]\ncredential_process = sh -c 'touch {}; echo {{\"Version\": 1, \"AccessKeyId\": \"a\", \"SecretAccessKey\": \"b\"}}'\n",
            ran.display()
        ),
    )
    .unwrap();
    let process = base(dir.path()).env("AWS_CONFIG_FILE", &config).output();
    assert_ne!(process.status.code(), Some(0), "{}", stderr(&process));
    assert!(!ran.exists(), "credential_process ran: {}", stderr(&process));

    // The role is assumed with the token at STS (moto's here); no key anywhere.
    let token = dir.path().join("token");
    std::fs::write(
        &token,
        "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJzeXN0ZW06c2VydmljZWFjY291bnQ6ZXRsOndvcmtlciJ9.c2ln",
    )
    .unwrap();
    let assumed = base(dir.path())
        .env("AWS_ROLE_ARN", "arn:aws:iam::111122223333:role/lakeload-etl")
        .env("AWS_WEB_IDENTITY_TOKEN_FILE", &token)
        .env("AWS_ENDPOINT_URL_STS", &s3.endpoint)
        .env("AWS_REGION", "us-east-1")
        .output();
    assert_exit(&assumed, 0);
    assert_eq!(summary_json(&assumed)["rows_read"], 200);
}
