//! S3 and S3-compatible stores through `aws-sdk-s3`.

use aws_sdk_s3::Client;
use aws_sdk_s3::config::http::HttpResponse;
use aws_sdk_s3::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use bytes::Bytes;
use chrono::{DateTime, Utc};

use super::{ObjectMeta, ObjectReader, PutCondition, Storage, StorageError, StorageResult};
use crate::config::AwsConfig;
use crate::location::Location;

/// Objects above this size are uploaded in parts.
const MULTIPART_THRESHOLD: usize = 32 * 1024 * 1024;
const PART_SIZE: usize = 16 * 1024 * 1024;

#[derive(Debug)]
pub struct S3Storage {
    client: Client,
    bucket: String,
    /// The key prefix of the root, with a trailing `/` unless empty.
    prefix: String,
    location: Location,
}

impl S3Storage {
    pub async fn connect(
        location: Location,
        bucket: &str,
        prefix: &str,
        aws: &AwsConfig,
    ) -> StorageResult<Self> {
        Ok(S3Storage {
            client: client(aws).await,
            bucket: bucket.to_string(),
            prefix: if prefix.is_empty() {
                String::new()
            } else {
                format!("{prefix}/")
            },
            location,
        })
    }

    fn full_key(&self, key: &str) -> String {
        format!("{}{key}", self.prefix)
    }

    fn err<E>(&self, op: &'static str, key: &str, e: SdkError<E, HttpResponse>) -> StorageError
    where
        E: std::error::Error + ProvideErrorMetadata + Send + Sync + 'static,
    {
        let url = self.url(key);
        match status_of(&e) {
            Some(412) => StorageError::PreconditionFailed { url },
            // 409 ConditionalRequestConflict: a concurrent conditional write is in flight; the
            // caller treats it like a lost race.
            Some(409) if e.code() == Some("ConditionalRequestConflict") => {
                StorageError::PreconditionFailed { url }
            }
            Some(404) => StorageError::NotFound { url },
            _ => StorageError::Other {
                op,
                url,
                message: DisplayErrorContext(&e).to_string(),
            },
        }
    }

    async fn put_multipart(&self, key: &str, body: Bytes) -> StorageResult<()> {
        let full = self.full_key(key);
        let created = self
            .client
            .create_multipart_upload()
            .bucket(&self.bucket)
            .key(&full)
            .send()
            .await
            .map_err(|e| self.err("put", key, e))?;
        let upload_id = created.upload_id().unwrap_or_default().to_string();
        let result = async {
            let mut parts = Vec::new();
            for (i, chunk) in body.chunks(PART_SIZE).enumerate() {
                let number = i as i32 + 1;
                let part = self
                    .client
                    .upload_part()
                    .bucket(&self.bucket)
                    .key(&full)
                    .upload_id(&upload_id)
                    .part_number(number)
                    .body(ByteStream::from(body.slice_ref(chunk)))
                    .send()
                    .await
                    .map_err(|e| self.err("put", key, e))?;
                parts.push(
                    CompletedPart::builder()
                        .set_e_tag(part.e_tag)
                        .part_number(number)
                        .build(),
                );
            }
            self.client
                .complete_multipart_upload()
                .bucket(&self.bucket)
                .key(&full)
                .upload_id(&upload_id)
                .multipart_upload(CompletedMultipartUpload::builder().set_parts(Some(parts)).build())
                .send()
                .await
                .map_err(|e| self.err("put", key, e))?;
            Ok(())
        }
        .await;
        if result.is_err() {
            let _ = self
                .client
                .abort_multipart_upload()
                .bucket(&self.bucket)
                .key(&full)
                .upload_id(&upload_id)
                .send()
                .await;
        }
        result
    }
}

/// Builds a client: static credentials from `[aws]` if set, else the standard AWS chain.
async fn client(aws: &AwsConfig) -> Client {
    use aws_config::meta::region::RegionProviderChain;
    use aws_sdk_s3::config::{Credentials, Region};

    let region = RegionProviderChain::first_try(aws.region.clone().map(Region::new))
        .or_default_provider()
        .or_else(Region::new("us-east-1"));
    let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest()).region(region);
    if let Some(profile) = &aws.profile {
        loader = loader.profile_name(profile);
    }
    if let (Some(id), Some(secret)) = (&aws.access_key_id, &aws.secret_access_key) {
        let token = aws.session_token.as_ref().map(|t| t.expose().to_string());
        loader = loader.credentials_provider(Credentials::new(
            id,
            secret.expose(),
            token,
            None,
            "lakeload-config",
        ));
    }
    if let Some(endpoint) = &aws.endpoint_url {
        loader = loader.endpoint_url(endpoint);
    }
    let shared = loader.load().await;
    let path_style = aws.force_path_style.unwrap_or(aws.endpoint_url.is_some());
    let config = aws_sdk_s3::config::Builder::from(&shared)
        .force_path_style(path_style)
        .build();
    Client::from_conf(config)
}

fn status_of<E>(e: &SdkError<E, HttpResponse>) -> Option<u16> {
    match e {
        SdkError::ServiceError(se) => Some(se.raw().status().as_u16()),
        SdkError::ResponseError(re) => Some(re.raw().status().as_u16()),
        _ => None,
    }
}

fn to_chrono(t: Option<&aws_sdk_s3::primitives::DateTime>) -> DateTime<Utc> {
    t.and_then(|t| DateTime::from_timestamp(t.secs(), t.subsec_nanos()))
        .map(super::to_micros_precision)
        .unwrap_or_default()
}

fn clean_etag(etag: Option<&str>) -> Option<String> {
    etag.map(|e| e.trim_matches('"').to_string())
}

#[async_trait::async_trait]
impl Storage for S3Storage {
    fn root(&self) -> &Location {
        &self.location
    }

    async fn list(&self, prefix: &str) -> StorageResult<Vec<ObjectMeta>> {
        let mut pages = self
            .client
            .list_objects_v2()
            .bucket(&self.bucket)
            .prefix(self.full_key(prefix))
            .into_paginator()
            .send();
        let mut out = Vec::new();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| self.err("list", prefix, e))?;
            for object in page.contents() {
                let Some(full) = object.key() else { continue };
                let Some(key) = full.strip_prefix(&self.prefix) else {
                    continue;
                };
                if key.is_empty() || key.ends_with('/') {
                    continue; // "folder" placeholder objects
                }
                out.push(ObjectMeta {
                    key: key.to_string(),
                    size: object.size().unwrap_or(0).max(0) as u64,
                    etag: clean_etag(object.e_tag()),
                    last_modified: to_chrono(object.last_modified()),
                });
            }
        }
        Ok(out)
    }

    async fn head(&self, key: &str) -> StorageResult<Option<ObjectMeta>> {
        match self
            .client
            .head_object()
            .bucket(&self.bucket)
            .key(self.full_key(key))
            .send()
            .await
        {
            Ok(o) => Ok(Some(ObjectMeta {
                key: key.to_string(),
                size: o.content_length().unwrap_or(0).max(0) as u64,
                etag: clean_etag(o.e_tag()),
                last_modified: to_chrono(o.last_modified()),
            })),
            Err(e) => match self.err("head", key, e) {
                StorageError::NotFound { .. } => Ok(None),
                other => Err(other),
            },
        }
    }

    async fn get(&self, key: &str) -> StorageResult<Option<(Bytes, ObjectMeta)>> {
        let output = match self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(self.full_key(key))
            .send()
            .await
        {
            Ok(o) => o,
            Err(e) => {
                return match self.err("get", key, e) {
                    StorageError::NotFound { .. } => Ok(None),
                    other => Err(other),
                };
            }
        };
        let meta = ObjectMeta {
            key: key.to_string(),
            size: output.content_length().unwrap_or(0).max(0) as u64,
            etag: clean_etag(output.e_tag()),
            last_modified: to_chrono(output.last_modified()),
        };
        let bytes = output.body.collect().await.map_err(|e| StorageError::Other {
            op: "get",
            url: self.url(key),
            message: e.to_string(),
        })?;
        Ok(Some((bytes.into_bytes(), meta)))
    }

    async fn open(&self, key: &str) -> StorageResult<ObjectReader> {
        let output = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(self.full_key(key))
            .send()
            .await
            .map_err(|e| self.err("get", key, e))?;
        Ok(ObjectReader::Async(Box::pin(output.body.into_async_read())))
    }

    async fn put(&self, key: &str, body: Bytes) -> StorageResult<()> {
        if body.len() > MULTIPART_THRESHOLD {
            return self.put_multipart(key, body).await;
        }
        self.client
            .put_object()
            .bucket(&self.bucket)
            .key(self.full_key(key))
            .body(ByteStream::from(body))
            .send()
            .await
            .map_err(|e| self.err("put", key, e))?;
        Ok(())
    }

    async fn put_if(&self, key: &str, body: Bytes, condition: PutCondition) -> StorageResult<String> {
        let request = self
            .client
            .put_object()
            .bucket(&self.bucket)
            .key(self.full_key(key));
        let request = match condition {
            PutCondition::IfAbsent => request.if_none_match("*"),
            PutCondition::IfMatch(etag) => request.if_match(format!("\"{etag}\"")),
        };
        let output = request
            .body(ByteStream::from(body))
            .send()
            .await
            .map_err(|e| self.err("put", key, e))?;
        Ok(clean_etag(output.e_tag()).unwrap_or_default())
    }

    async fn delete(&self, key: &str) -> StorageResult<()> {
        match self
            .client
            .delete_object()
            .bucket(&self.bucket)
            .key(self.full_key(key))
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(e) => match self.err("delete", key, e) {
                StorageError::NotFound { .. } => Ok(()),
                other => Err(other),
            },
        }
    }
}
