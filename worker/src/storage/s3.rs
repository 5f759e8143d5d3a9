//! S3 and S3-compatible stores through `aws-sdk-s3`.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aws_sdk_s3::Client;
use aws_sdk_s3::config::http::HttpResponse;
use aws_sdk_s3::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};

/// How the AWS SDK says that no provider of its default chain had credentials.
const NO_CREDENTIALS: &str = "no providers in chain provided credentials";
use aws_sdk_s3::operation::put_object::builders::PutObjectFluentBuilder;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures::{StreamExt, TryStreamExt};

use super::{ObjectMeta, ObjectReader, PutCondition, Storage, StorageError, StorageResult};
use crate::location::Location;
use crate::secret::Secret;

/// How to reach S3: the `[aws]` settings (SPEC §7). Unset credentials mean the standard AWS
/// chain. The timeouts bound every request, so a hung connection cannot stall a run past its
/// lock lease; retries stop at `max_attempts` or at `operation_timeout`, whichever comes first.
#[derive(Debug, Clone)]
pub struct AwsConfig {
    pub region: Option<String>,
    pub endpoint_url: Option<String>,
    pub access_key_id: Option<String>,
    pub secret_access_key: Option<Secret>,
    pub session_token: Option<Secret>,
    pub profile: Option<String>,
    pub force_path_style: Option<bool>,
    /// Time to open a connection.
    pub connect_timeout: Duration,
    /// Longest wait for the next bytes of a reply.
    pub read_timeout: Duration,
    /// One attempt of one request.
    pub attempt_timeout: Duration,
    /// One request, all attempts and back-off included.
    pub operation_timeout: Duration,
    pub max_attempts: u32,
    /// Multipart uploads send parts of this many MiB; objects over two parts use them.
    pub part_size_mib: usize,
}

impl Default for AwsConfig {
    fn default() -> Self {
        AwsConfig {
            region: None,
            endpoint_url: None,
            access_key_id: None,
            secret_access_key: None,
            session_token: None,
            profile: None,
            force_path_style: None,
            connect_timeout: Duration::from_secs(5),
            read_timeout: Duration::from_secs(30),
            attempt_timeout: Duration::from_secs(120),
            operation_timeout: Duration::from_secs(300),
            max_attempts: 5,
            part_size_mib: 16,
        }
    }
}

#[derive(Debug)]
pub struct S3Storage {
    client: Client,
    bucket: String,
    /// The key prefix of the root, with a trailing `/` unless empty.
    prefix: String,
    location: Location,
    clock: StoreClock,
    /// Multipart part size in bytes; objects above two parts are uploaded in parts.
    part_size: usize,
    /// Aborts of multipart uploads that were cut short, running in the background.
    aborts: Arc<Mutex<Vec<tokio::task::JoinHandle<()>>>>,
    /// `aws.endpoint_url`, or AWS S3 itself, for messages about the store.
    endpoint: String,
}

/// Multipart parts in flight at once for one object.
const PARALLEL_PARTS: usize = 4;

/// Bytes a source read fetches ahead of the decompressor (see [`prefetch`]).
const PREFETCH_CHUNK: usize = 1 << 20;
const PREFETCH_CHUNKS: usize = 8;

/// Reads `body` on the runtime, up to `PREFETCH_CHUNKS` chunks ahead of the blocking reader
/// that consumes it, so network transfer overlaps decompression and parsing.
fn prefetch(body: std::pin::Pin<Box<dyn tokio::io::AsyncRead + Send>>) -> ObjectReader {
    use tokio::io::AsyncReadExt;
    let (sender, receiver) = tokio::sync::mpsc::channel::<std::io::Result<Bytes>>(PREFETCH_CHUNKS);
    tokio::spawn(async move {
        let mut body = body;
        loop {
            let mut chunk = bytes::BytesMut::with_capacity(PREFETCH_CHUNK);
            let read = loop {
                match body.read_buf(&mut chunk).await {
                    Ok(0) => break Ok(chunk.len()),
                    Ok(_) if chunk.len() < PREFETCH_CHUNK => continue,
                    Ok(_) => break Ok(chunk.len()),
                    Err(e) => break Err(e),
                }
            };
            let (done, message) = match read {
                Ok(0) => (true, None),
                Ok(_) => (false, Some(Ok(chunk.freeze()))),
                Err(e) => (true, Some(Err(e))),
            };
            if let Some(message) = message
                && sender.send(message).await.is_err()
            {
                return;
            }
            if done {
                return;
            }
        }
    });
    ObjectReader(Box::new(PrefetchedReader {
        receiver,
        current: Bytes::new(),
    }))
}

/// The blocking end of [`prefetch`].
struct PrefetchedReader {
    receiver: tokio::sync::mpsc::Receiver<std::io::Result<Bytes>>,
    current: Bytes,
}

impl std::io::Read for PrefetchedReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.current.is_empty() {
            match self.receiver.blocking_recv() {
                Some(Ok(chunk)) => self.current = chunk,
                Some(Err(e)) => return Err(e),
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current.split_to(n));
        Ok(n)
    }
}

/// The store's time from a reply's `Date` header, and the local instant the reply arrived.
type StoreReading = (DateTime<Utc>, Instant);

/// The store's clock as its replies' `Date` headers tell it.
#[derive(Debug, Clone, Default)]
struct StoreClock(Arc<Mutex<Option<StoreReading>>>);

impl StoreClock {
    fn now(&self) -> Option<DateTime<Utc>> {
        let (date, seen) = (*self.0.lock().ok()?)?;
        Some(date + seen.elapsed())
    }
}

impl aws_sdk_s3::config::Intercept for StoreClock {
    fn name(&self) -> &'static str {
        "lakeload-store-clock"
    }

    fn read_after_transmit(
        &self,
        context: &aws_sdk_s3::config::interceptors::BeforeDeserializationInterceptorContextRef<'_>,
        _components: &aws_sdk_s3::config::RuntimeComponents,
        _cfg: &mut aws_sdk_s3::config::ConfigBag,
    ) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        let date = context
            .response()
            .headers()
            .get("date")
            .and_then(|d| DateTime::parse_from_rfc2822(d).ok());
        if let (Some(date), Ok(mut clock)) = (date, self.0.lock()) {
            *clock = Some((date.with_timezone(&Utc), Instant::now()));
        }
        Ok(())
    }
}

/// Aborts a multipart upload unless disarmed: a date write cut short (SIGTERM, another date's
/// error) must not leave parts behind that the bucket bills for.
struct AbortOnDrop {
    client: Client,
    bucket: String,
    key: String,
    upload_id: String,
    aborts: Arc<Mutex<Vec<tokio::task::JoinHandle<()>>>>,
    armed: bool,
}

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let request = self
            .client
            .abort_multipart_upload()
            .bucket(&self.bucket)
            .key(&self.key)
            .upload_id(&self.upload_id);
        let key = self.key.clone();
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let task = runtime.spawn(async move {
                if let Err(e) = request.send().await {
                    tracing::warn!("could not abort the multipart upload of {key}: {e}");
                }
            });
            if let Ok(mut aborts) = self.aborts.lock() {
                aborts.push(task);
            }
        }
    }
}

impl S3Storage {
    pub async fn connect(
        location: Location,
        bucket: &str,
        prefix: &str,
        aws: &AwsConfig,
    ) -> StorageResult<Self> {
        let clock = StoreClock::default();
        Ok(S3Storage {
            client: client(aws, clock.clone()).await,
            bucket: bucket.to_string(),
            prefix: if prefix.is_empty() {
                String::new()
            } else {
                format!("{prefix}/")
            },
            location,
            clock,
            part_size: aws.part_size_mib * 1024 * 1024,
            aborts: Arc::default(),
            endpoint: aws
                .endpoint_url
                .clone()
                .unwrap_or_else(|| "AWS S3 (no aws.endpoint_url)".into()),
        })
    }

    fn full_key(&self, key: &str) -> String {
        format!("{}{key}", self.prefix)
    }

    /// A single-request PUT of `key`, under `condition` if any.
    fn put_object(&self, key: &str, condition: Option<&PutCondition>) -> PutObjectFluentBuilder {
        let request = self
            .client
            .put_object()
            .bucket(&self.bucket)
            .key(self.full_key(key));
        match condition {
            None => request,
            Some(PutCondition::IfAbsent) => request.if_none_match("*"),
            Some(PutCondition::IfMatch(etag)) => request.if_match(format!("\"{etag}\"")),
        }
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
            _ => {
                let context = DisplayErrorContext(&e).to_string();
                // The SDK's words when its whole credential chain came up empty: a setup
                // mistake, said as one (its own text is a dump of nested error types).
                let message = if context.contains(NO_CREDENTIALS) {
                    "no AWS credentials found: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY \
                     (aws.access_key_id / aws.secret_access_key in the config), name a profile \
                     with aws.profile, or run with a role (IRSA or Pod Identity on EKS, an EC2 \
                     instance profile)"
                        .to_string()
                } else {
                    context
                };
                StorageError::Other { op, url, message }
            }
        }
    }

    /// Uploads in parts; the condition, if any, applies when the parts are put together, so
    /// the object changes at once or not at all.
    async fn put_multipart(
        &self,
        key: &str,
        body: Bytes,
        condition: Option<&PutCondition>,
    ) -> StorageResult<String> {
        let parts: Vec<StorageResult<Bytes>> = body
            .chunks(self.part_size)
            .map(|chunk| Ok(body.slice_ref(chunk)))
            .collect();
        self.put_parts(key, futures::stream::iter(parts), condition).await
    }

    /// A multipart upload of the parts `parts` yields, in order.
    async fn put_parts(
        &self,
        key: &str,
        parts: impl futures::Stream<Item = StorageResult<Bytes>>,
        condition: Option<&PutCondition>,
    ) -> StorageResult<String> {
        let full = self.full_key(key);
        let created = self
            .client
            .create_multipart_upload()
            .bucket(&self.bucket)
            .key(&full)
            .send()
            .await
            .map_err(|e| self.err("put", key, e))?;
        let mut guard = AbortOnDrop {
            client: self.client.clone(),
            bucket: self.bucket.clone(),
            key: full.clone(),
            upload_id: created.upload_id().unwrap_or_default().to_string(),
            aborts: self.aborts.clone(),
            armed: true,
        };
        let upload_id = guard.upload_id.clone();
        // Parts go up `PARALLEL_PARTS` at a time; `buffered` keeps them in part order.
        let uploads = parts.enumerate().map(|(i, chunk)| {
            let number = i as i32 + 1;
            let request = chunk.map(|chunk| {
                self.client
                    .upload_part()
                    .bucket(&self.bucket)
                    .key(&full)
                    .upload_id(&upload_id)
                    .part_number(number)
                    .body(ByteStream::from(chunk))
            });
            async move {
                let part = request?.send().await.map_err(|e| self.err("put", key, e))?;
                crate::faults::pause_point("multipart_part_uploaded").await;
                Ok::<_, StorageError>(
                    CompletedPart::builder()
                        .set_e_tag(part.e_tag)
                        .part_number(number)
                        .build(),
                )
            }
        });
        let parts: Vec<CompletedPart> = uploads.buffered(PARALLEL_PARTS).try_collect().await?;
        let request = self
            .client
            .complete_multipart_upload()
            .bucket(&self.bucket)
            .key(&full)
            .upload_id(&upload_id)
            .multipart_upload(CompletedMultipartUpload::builder().set_parts(Some(parts)).build());
        let request = match condition {
            None => request,
            Some(PutCondition::IfAbsent) => request.if_none_match("*"),
            Some(PutCondition::IfMatch(etag)) => request.if_match(format!("\"{etag}\"")),
        };
        let output = request.send().await.map_err(|e| self.err("put", key, e))?;
        guard.armed = false;
        Ok(clean_etag(output.e_tag()).unwrap_or_default())
    }

    /// A conditional write came back 412: if the object holds exactly `body`, it is our own
    /// write whose reply was lost and that the SDK retried; anything else lost the race.
    async fn recognise_own_write(&self, key: &str, body: &Bytes) -> StorageResult<String> {
        match self.get(key).await? {
            Some((stored, meta)) if stored == *body => {
                tracing::debug!(
                    "{}: the conditional write had landed; its reply was lost",
                    self.url(key)
                );
                Ok(meta.etag.unwrap_or_default())
            }
            _ => Err(StorageError::PreconditionFailed { url: self.url(key) }),
        }
    }
}

impl S3Storage {
    /// [`S3Storage::recognise_own_write`] for an object sent from a file: the stored object is
    /// compared with the file a part at a time.
    async fn recognise_own_file_write(&self, key: &str, path: &Path) -> StorageResult<()> {
        let lost = || StorageError::PreconditionFailed { url: self.url(key) };
        let stored = match self.open_at(key, 0, None).await {
            Ok(stored) => stored,
            Err(StorageError::NotFound { .. }) => return Err(lost()),
            Err(e) => return Err(e),
        };
        let (path, part_size) = (path.to_path_buf(), self.part_size);
        let same = tokio::task::spawn_blocking(move || -> std::io::Result<bool> {
            let mut stored = stored.into_blocking();
            let mut file = std::fs::File::open(&path)?;
            let (mut a, mut b) = (vec![0u8; part_size], vec![0u8; part_size]);
            loop {
                let n = read_full(&mut file, &mut a)?;
                let m = read_full(&mut stored, &mut b)?;
                if n != m || a[..n] != b[..m] {
                    return Ok(false);
                }
                if n == 0 {
                    return Ok(true);
                }
            }
        })
        .await;
        let other = |message: String| StorageError::Other {
            op: "put",
            url: self.url(key),
            message,
        };
        let same = same
            .map_err(|e| other(e.to_string()))?
            .map_err(|e| other(e.to_string()))?;
        if same {
            tracing::debug!(
                "{}: the conditional write had landed; its reply was lost",
                self.url(key)
            );
            Ok(())
        } else {
            Err(lost())
        }
    }
}

/// The file's bytes in parts of `part_size` (the last one shorter).
fn file_parts(
    file: tokio::fs::File,
    part_size: usize,
) -> impl futures::Stream<Item = std::io::Result<Bytes>> + Send + 'static {
    futures::stream::try_unfold(file, move |mut file| async move {
        use tokio::io::AsyncReadExt;
        let mut part = Vec::with_capacity(part_size);
        (&mut file).take(part_size as u64).read_to_end(&mut part).await?;
        Ok((!part.is_empty()).then(|| (Bytes::from(part), file)))
    })
}

/// Reads until `buf` is full or the input ends; returns the bytes read.
fn read_full(input: &mut impl std::io::Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match input.read(&mut buf[filled..])? {
            0 => break,
            n => filled += n,
        }
    }
    Ok(filled)
}

/// Builds a client: static credentials from `[aws]` if set, else the standard AWS chain; the
/// timeouts and retry budget of `[aws]`; `clock` hears every reply's `Date`.
async fn client(aws: &AwsConfig, clock: StoreClock) -> Client {
    use aws_config::meta::region::RegionProviderChain;
    use aws_sdk_s3::config::{Credentials, Region};

    let region = RegionProviderChain::first_try(aws.region.clone().map(Region::new))
        .or_default_provider()
        .or_else(Region::new("us-east-1"));
    let timeouts = aws_config::timeout::TimeoutConfig::builder()
        .connect_timeout(aws.connect_timeout)
        .read_timeout(aws.read_timeout)
        .operation_attempt_timeout(aws.attempt_timeout)
        .operation_timeout(aws.operation_timeout)
        .build();
    let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(region)
        .timeout_config(timeouts)
        .retry_config(aws_config::retry::RetryConfig::standard().with_max_attempts(aws.max_attempts));
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
        .interceptor(clock)
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

    fn endpoint(&self) -> String {
        self.endpoint.clone()
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

    async fn open_at(&self, key: &str, offset: u64, etag: Option<&str>) -> StorageResult<ObjectReader> {
        let mut request = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(self.full_key(key));
        if offset > 0 {
            request = request.range(format!("bytes={offset}-"));
        }
        if let Some(etag) = etag {
            request = request.if_match(format!("\"{etag}\""));
        }
        let output = request.send().await.map_err(|e| self.err("get", key, e))?;
        Ok(prefetch(Box::pin(output.body.into_async_read())))
    }

    async fn put(&self, key: &str, body: Bytes) -> StorageResult<()> {
        if body.len() > 2 * self.part_size {
            return self.put_multipart(key, body, None).await.map(drop);
        }
        self.put_object(key, None)
            .body(ByteStream::from(body))
            .send()
            .await
            .map_err(|e| self.err("put", key, e))?;
        Ok(())
    }

    async fn put_if(&self, key: &str, body: Bytes, condition: PutCondition) -> StorageResult<String> {
        let written = if body.len() > 2 * self.part_size {
            self.put_multipart(key, body.clone(), Some(&condition)).await
        } else {
            self.put_object(key, Some(&condition))
                .body(ByteStream::from(body.clone()))
                .send()
                .await
                .map(|output| clean_etag(output.e_tag()).unwrap_or_default())
                .map_err(|e| self.err("put", key, e))
        };
        match written {
            Err(StorageError::PreconditionFailed { .. }) => self.recognise_own_write(key, &body).await,
            other => other,
        }
    }

    async fn put_file(&self, key: &str, path: &Path, condition: Option<PutCondition>) -> StorageResult<()> {
        let local_error = |e: std::io::Error| StorageError::Other {
            op: "put",
            url: self.url(key),
            message: format!("cannot read {}: {e}", path.display()),
        };
        let size = tokio::fs::metadata(path).await.map_err(local_error)?.len();
        let written = if size <= 2 * self.part_size as u64 {
            // One PUT whose body the SDK streams from the file: never read into memory whole.
            let body = ByteStream::from_path(path)
                .await
                .map_err(|e| local_error(std::io::Error::other(e)))?;
            self.put_object(key, condition.as_ref())
                .content_length(size as i64)
                .body(body)
                .send()
                .await
                .map(drop)
                .map_err(|e| self.err("put", key, e))
        } else {
            // Parts are read from the file as they are sent: at most `PARALLEL_PARTS` in memory.
            let file = tokio::fs::File::open(path).await.map_err(local_error)?;
            let (url, shown) = (self.url(key), path.display().to_string());
            let parts = file_parts(file, self.part_size).map_err(move |e| StorageError::Other {
                op: "put",
                url: url.clone(),
                message: format!("cannot read {shown}: {e}"),
            });
            self.put_parts(key, parts, condition.as_ref()).await.map(drop)
        };
        match written {
            Err(StorageError::PreconditionFailed { .. }) if condition.is_some() => {
                self.recognise_own_file_write(key, path).await
            }
            other => other,
        }
    }

    async fn delete(&self, key: &str) -> StorageResult<()> {
        self.delete_matching(key, None).await
    }

    async fn delete_if(&self, key: &str, etag: &str) -> StorageResult<()> {
        self.delete_matching(key, Some(etag)).await
    }

    fn store_now(&self) -> Option<DateTime<Utc>> {
        self.clock.now()
    }

    async fn settle(&self) {
        let pending: Vec<_> = self
            .aborts
            .lock()
            .map(|mut a| std::mem::take(&mut *a))
            .unwrap_or_default();
        for task in pending {
            let _ = task.await;
        }
    }
}

impl S3Storage {
    /// DeleteObject, with `If-Match` when `etag` is given. A missing object is not an error:
    /// that is also how a retried delete whose first reply was lost comes back.
    async fn delete_matching(&self, key: &str, etag: Option<&str>) -> StorageResult<()> {
        let mut request = self
            .client
            .delete_object()
            .bucket(&self.bucket)
            .key(self.full_key(key));
        if let Some(etag) = etag {
            request = request.if_match(format!("\"{etag}\""));
        }
        match request.send().await {
            Ok(_) => Ok(()),
            Err(e) => match self.err("delete", key, e) {
                StorageError::NotFound { .. } => Ok(()),
                other => Err(other),
            },
        }
    }
}
