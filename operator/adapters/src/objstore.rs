//! S3-compatible object stores (IO, aws-sdk-s3): listing a prefix, small JSON documents (manifests), and
//! the streaming copy of one object between two stores — single PUT up to the part size, multipart above
//! it — with checksums verified on both ends: the source bytes against the source ETag (when it is a plain
//! MD5), every uploaded part by `Content-MD5`, and the ETag the replica reports against the one computed
//! locally. The source bytes are verified *before* the replica is replaced (before the single PUT, or
//! before completing the multipart upload, which is aborted otherwise), so a good replica is never
//! overwritten with bytes that do not match the source. Every call has an operation deadline, and each
//! store bounds its requests in flight, so a hung store holds only its own work. A SHA-256 of the bytes is
//! returned for the manifest.

use std::time::Duration;

use aws_sdk_s3::Client;
use aws_sdk_s3::config::{
    BehaviorVersion, Credentials, Region, RequestChecksumCalculation, ResponseChecksumValidation,
};
use aws_sdk_s3::error::DisplayErrorContext;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use aws_smithy_http_client::tls::{self, rustls_provider::CryptoMode};
use aws_smithy_types::timeout::TimeoutConfig;
use azora_core::replication::{SourceObject, TargetObject, hex, multipart_etag};
use base64::Engine as _;
use md5::{Digest as _, Md5};
use sha2::Sha256;

/// Size of a multipart part, and the largest object copied with a single PUT.
pub const PART_SIZE: usize = 8 * 1024 * 1024;

/// Where a store is and how to sign for it. Credentials are never printed (Debug redacts them).
#[derive(Clone, PartialEq, Eq)]
pub struct StoreConfig {
    /// Endpoint URL.
    pub endpoint: String,
    /// Bucket.
    pub bucket: String,
    /// Signing region.
    pub signing_region: String,
    /// Path-style addressing.
    pub force_path_style: bool,
    /// Access key id and secret access key.
    pub credentials: (String, String),
}

impl std::fmt::Debug for StoreConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreConfig")
            .field("endpoint", &self.endpoint)
            .field("bucket", &self.bucket)
            .field("credentials", &"<redacted>")
            .finish()
    }
}

/// Object-store errors. Messages name the store and key, never credentials.
#[derive(Debug, thiserror::Error, strum::IntoStaticStr)]
pub enum StoreError {
    /// A request failed.
    #[error("{op} {bucket}/{key}: {message}")]
    Request {
        /// Operation.
        op: &'static str,
        /// Bucket.
        bucket: String,
        /// Key or prefix.
        key: String,
        /// Error text.
        message: String,
    },
    /// A checksum did not match.
    #[error("checksum mismatch on {key}: {what}")]
    Checksum {
        /// Key.
        key: String,
        /// What differed.
        what: String,
    },
}

impl StoreError {
    /// Fixed category for metrics.
    pub fn category(&self) -> &'static str {
        self.into()
    }
}

/// Deadline of one request attempt, and of one whole operation (retries included).
pub const ATTEMPT_DEADLINE: Duration = Duration::from_secs(20);
/// Deadline of one whole operation (all attempts).
pub const OPERATION_DEADLINE: Duration = Duration::from_secs(45);
/// Requests in flight per store.
pub const STORE_CONCURRENCY: usize = 8;
/// Streamed reads in flight per store (a download of a large archive lasts minutes: these have their own
/// budget, as large as the short requests' — so neither waits longer than before for the other).
pub const STREAM_CONCURRENCY: usize = STORE_CONCURRENCY;

/// One bucket of one store.
#[derive(Clone, Debug)]
pub struct ObjectStore {
    client: Client,
    bucket: String,
    permits: std::sync::Arc<tokio::sync::Semaphore>,
    streams: std::sync::Arc<tokio::sync::Semaphore>,
}

/// What a completed copy produced.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Copied {
    /// ETag of the replica.
    pub target_etag: String,
    /// SHA-256 of the bytes (hex).
    pub sha256: String,
    /// Bytes copied.
    pub size: u64,
}

fn md5_of(b: &[u8]) -> [u8; 16] {
    Md5::digest(b).into()
}

fn unquote(etag: &str) -> String {
    etag.trim_matches('"').to_string()
}

impl ObjectStore {
    /// A client for `cfg` (rustls with ring; 3 s connect, 30 s read timeouts, 20 s per attempt and 45 s
    /// per operation; standard retries; at most `STORE_CONCURRENCY` requests in flight).
    pub fn new(cfg: &StoreConfig) -> Self {
        let http = aws_smithy_http_client::Builder::new()
            .tls_provider(tls::Provider::Rustls(CryptoMode::Ring))
            .build_https();
        let creds = Credentials::new(&cfg.credentials.0, &cfg.credentials.1, None, None, "azora");
        let conf = aws_sdk_s3::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .http_client(http)
            .region(Region::new(cfg.signing_region.clone()))
            .endpoint_url(&cfg.endpoint)
            .force_path_style(cfg.force_path_style)
            .credentials_provider(creds)
            .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
            .response_checksum_validation(ResponseChecksumValidation::WhenRequired)
            .timeout_config(
                TimeoutConfig::builder()
                    .connect_timeout(Duration::from_secs(3))
                    .read_timeout(Duration::from_secs(30))
                    .operation_attempt_timeout(ATTEMPT_DEADLINE)
                    .operation_timeout(OPERATION_DEADLINE)
                    .build(),
            )
            .build();
        Self {
            client: Client::from_conf(conf),
            bucket: cfg.bucket.clone(),
            permits: std::sync::Arc::new(tokio::sync::Semaphore::new(STORE_CONCURRENCY)),
            streams: std::sync::Arc::new(tokio::sync::Semaphore::new(STREAM_CONCURRENCY)),
        }
    }

    /// Waits for a request slot of this store.
    async fn slot(&self) -> Option<tokio::sync::SemaphorePermit<'_>> {
        self.permits.acquire().await.ok()
    }

    /// The bucket name.
    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    fn err(&self, op: &'static str, key: &str, e: impl std::error::Error) -> StoreError {
        StoreError::Request {
            op,
            bucket: self.bucket.clone(),
            key: key.to_string(),
            message: DisplayErrorContext(e).to_string(),
        }
    }

    /// Creates the bucket unless it exists (tests and first-time setup).
    pub async fn ensure_bucket(&self) -> Result<(), StoreError> {
        if self
            .client
            .head_bucket()
            .bucket(&self.bucket)
            .send()
            .await
            .is_ok()
        {
            return Ok(());
        }
        self.client
            .create_bucket()
            .bucket(&self.bucket)
            .send()
            .await
            .map(|_| ())
            .map_err(|e| self.err("CreateBucket", "", e))
    }

    /// Every object under `prefix`, paginated.
    pub async fn list(&self, prefix: &str) -> Result<Vec<SourceObject>, StoreError> {
        let _slot = self.slot().await;
        let mut out = Vec::new();
        let mut pages = self
            .client
            .list_objects_v2()
            .bucket(&self.bucket)
            .prefix(prefix)
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| self.err("ListObjectsV2", prefix, e))?;
            for o in page.contents() {
                let Some(key) = o.key() else { continue };
                let modified = o
                    .last_modified()
                    .and_then(|d| jiff::Timestamp::new(d.secs(), d.subsec_nanos() as i32).ok())
                    .unwrap_or_else(jiff::Timestamp::now);
                out.push(SourceObject {
                    key: key.to_string(),
                    size: o.size().unwrap_or(0).max(0) as u64,
                    etag: o.e_tag().map(unquote).unwrap_or_default(),
                    last_modified: modified,
                });
            }
        }
        Ok(out)
    }

    /// Listing as replica objects by key.
    pub async fn list_targets(
        &self,
        prefix: &str,
    ) -> Result<std::collections::BTreeMap<String, TargetObject>, StoreError> {
        Ok(self
            .list(prefix)
            .await?
            .into_iter()
            .map(|o| {
                (
                    o.key,
                    TargetObject {
                        size: o.size,
                        etag: o.etag,
                    },
                )
            })
            .collect())
    }

    /// Reads a whole (small) object; `None` when it does not exist.
    pub async fn get_bytes(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let _slot = self.slot().await;
        match self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
        {
            Ok(out) => {
                let data = out
                    .body
                    .collect()
                    .await
                    .map_err(|e| self.err("GetObject", key, e))?;
                Ok(Some(data.into_bytes().to_vec()))
            }
            Err(e) if e.as_service_error().is_some_and(|s| s.is_no_such_key()) => Ok(None),
            Err(e) => Err(self.err("GetObject", key, e)),
        }
    }

    /// Writes a whole (small) object with `Content-MD5`; returns its ETag.
    pub async fn put_bytes(&self, key: &str, bytes: Vec<u8>) -> Result<String, StoreError> {
        let _slot = self.slot().await;
        let md5 = md5_of(&bytes);
        let out = self
            .client
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .content_md5(base64::engine::general_purpose::STANDARD.encode(md5))
            .body(ByteStream::from(bytes))
            .send()
            .await
            .map_err(|e| self.err("PutObject", key, e))?;
        let etag = out.e_tag().map(unquote).unwrap_or_default();
        if etag != hex(&md5) {
            return Err(StoreError::Checksum {
                key: key.to_string(),
                what: format!("stored ETag {etag} is not the MD5 of the bytes sent"),
            });
        }
        Ok(etag)
    }

    /// Deletes an object (absent is fine).
    pub async fn delete(&self, key: &str) -> Result<(), StoreError> {
        let _slot = self.slot().await;
        self.client
            .delete_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
            .map(|_| ())
            .map_err(|e| self.err("DeleteObject", key, e))
    }

    async fn upload_part(
        &self,
        key: &str,
        upload_id: &str,
        n: i32,
        part: Vec<u8>,
    ) -> Result<([u8; 16], String), StoreError> {
        let _slot = self.slot().await;
        let md5 = md5_of(&part);
        let out = self
            .client
            .upload_part()
            .bucket(&self.bucket)
            .key(key)
            .upload_id(upload_id)
            .part_number(n)
            .content_md5(base64::engine::general_purpose::STANDARD.encode(md5))
            .body(ByteStream::from(part))
            .send()
            .await
            .map_err(|e| self.err("UploadPart", key, e))?;
        Ok((md5, out.e_tag().map(unquote).unwrap_or_default()))
    }

    async fn multipart<P: Parts>(
        &self,
        key: &str,
        first: Vec<u8>,
        rest: &mut P,
        verify: &VerifySource<'_, P>,
    ) -> Result<(String, String, u64), StoreError> {
        let created = self
            .client
            .create_multipart_upload()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| self.err("CreateMultipartUpload", key, e))?;
        let upload_id = created.upload_id().unwrap_or_default().to_string();
        // Aborted unless completed: on an error, and also when the caller is cancelled mid-upload (a run
        // deadline, a term ending) — an upload left open holds its parts in the store, unseen by listings.
        let mut guard = AbortOnDrop {
            client: self.client.clone(),
            bucket: self.bucket.clone(),
            key: key.to_string(),
            upload_id: upload_id.clone(),
            armed: true,
        };
        let result = self.multipart_parts(key, &upload_id, first, rest, verify).await;
        if result.is_ok() {
            guard.armed = false;
        }
        result
    }

    async fn multipart_parts<P: Parts>(
        &self,
        key: &str,
        upload_id: &str,
        first: Vec<u8>,
        rest: &mut P,
        verify: &VerifySource<'_, P>,
    ) -> Result<(String, String, u64), StoreError> {
        let mut md5s = Vec::new();
        let mut parts = Vec::new();
        let mut part = Some(first);
        let mut n = 0;
        while let Some(p) = part.take() {
            n += 1;
            let (md5, etag) = self.upload_part(key, upload_id, n, p).await?;
            md5s.push(md5);
            parts.push(CompletedPart::builder().part_number(n).e_tag(etag).build());
            let next = rest.next_part().await?;
            if !next.is_empty() {
                part = Some(next);
            }
        }
        // The parts are uploaded but the replica is not replaced until completion: verify the source bytes
        // first (an error here aborts the upload and leaves the current replica as it was).
        verify(rest, &md5s)?;
        let out = self
            .client
            .complete_multipart_upload()
            .bucket(&self.bucket)
            .key(key)
            .upload_id(upload_id)
            .multipart_upload(CompletedMultipartUpload::builder().set_parts(Some(parts)).build())
            .send()
            .await
            .map_err(|e| self.err("CompleteMultipartUpload", key, e))?;
        let got = out.e_tag().map(unquote).unwrap_or_default();
        let want = multipart_etag(&md5s, md5_of);
        if got != want {
            return Err(StoreError::Checksum {
                key: key.to_string(),
                what: format!("multipart ETag {got}, expected {want}"),
            });
        }
        Ok((got, rest.sha256(), rest.total()))
    }

    /// Uploads a local file (a backup archive) under `key`: one PUT up to [`PART_SIZE`], multipart above it
    /// (aborted on any error, so no half-written upload stays behind). Memory holds one part. Every part
    /// goes with its `Content-MD5` and the ETag the store reports is checked. Returns the SHA-256 (hex) and
    /// size of what was sent.
    pub async fn put_file(&self, key: &str, path: &std::path::Path) -> Result<(String, u64), StoreError> {
        let file = tokio::fs::File::open(path)
            .await
            .map_err(|e| self.err("ReadFile", key, e))?;
        let remaining = file
            .metadata()
            .await
            .map_err(|e| self.err("ReadFile", key, e))?
            .len();
        let mut parts = FileParts {
            file,
            remaining,
            sha: Sha256::new(),
            total: 0,
            key,
            store: self,
        };
        let first = parts.next_part().await?;
        if first.len() == PART_SIZE {
            let (_, sha, size) = self.multipart(key, first, &mut parts, &|_, _| Ok(())).await?;
            Ok((sha, size))
        } else {
            self.put_bytes(key, first).await?;
            Ok((parts.sha256(), parts.total))
        }
    }

    /// Streams an object: into `sink` when given, hashing as it goes. `None` when it does not exist;
    /// otherwise its SHA-256 (hex) and size. Memory holds one chunk of the body.
    async fn stream_get(
        &self,
        key: &str,
        mut sink: Option<&mut tokio::fs::File>,
    ) -> Result<Option<(String, u64)>, StoreError> {
        use tokio::io::AsyncWriteExt as _;
        // Its own budget: the stream may last minutes, short requests keep their slots meanwhile.
        let _slot = self.streams.acquire().await.ok();
        let mut body = match self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
        {
            Ok(out) => out.body,
            Err(e) if e.as_service_error().is_some_and(|s| s.is_no_such_key()) => return Ok(None),
            Err(e) => return Err(self.err("GetObject", key, e)),
        };
        let mut sha = Sha256::new();
        let mut total = 0u64;
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|e| self.err("GetObject", key, e))?;
            sha.update(&chunk);
            total += chunk.len() as u64;
            if let Some(f) = sink.as_deref_mut() {
                f.write_all(&chunk)
                    .await
                    .map_err(|e| self.err("WriteFile", key, e))?;
            }
        }
        if let Some(f) = sink {
            f.flush().await.map_err(|e| self.err("WriteFile", key, e))?;
        }
        Ok(Some((hex(&sha.finalize()), total)))
    }

    /// How many multipart uploads under `prefix` were begun and neither completed nor aborted.
    pub async fn open_uploads(&self, prefix: &str) -> Result<usize, StoreError> {
        let _slot = self.slot().await;
        let out = self
            .client
            .list_multipart_uploads()
            .bucket(&self.bucket)
            .prefix(prefix)
            .send()
            .await
            .map_err(|e| self.err("ListMultipartUploads", prefix, e))?;
        Ok(out.uploads().len())
    }

    /// Downloads an object into `path` (created or truncated), streaming; `None` when it does not exist,
    /// otherwise the SHA-256 (hex) and size of what was written.
    pub async fn get_to_file(
        &self,
        key: &str,
        path: &std::path::Path,
    ) -> Result<Option<(String, u64)>, StoreError> {
        let mut f = tokio::fs::File::create(path)
            .await
            .map_err(|e| self.err("WriteFile", key, e))?;
        self.stream_get(key, Some(&mut f)).await
    }

    /// The SHA-256 (hex) and size of an object, read as a stream and kept nowhere; `None` when it does not
    /// exist.
    pub async fn sha256_of(&self, key: &str) -> Result<Option<(String, u64)>, StoreError> {
        self.stream_get(key, None).await
    }
}

/// Aborts a multipart upload when dropped while armed (in the background: drop cannot wait).
struct AbortOnDrop {
    client: Client,
    bucket: String,
    key: String,
    upload_id: String,
    armed: bool,
}

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let abort = self
            .client
            .abort_multipart_upload()
            .bucket(&self.bucket)
            .key(&self.key)
            .upload_id(&self.upload_id);
        rt.spawn(async move {
            let _ = tokio::time::timeout(OPERATION_DEADLINE, abort.send()).await;
        });
    }
}

/// A source of upload parts, hashing what it yields.
trait Parts {
    /// The next part (at most `PART_SIZE` bytes); empty at the end.
    async fn next_part(&mut self) -> Result<Vec<u8>, StoreError>;
    /// SHA-256 (hex) of what was read.
    fn sha256(&self) -> String;
    /// Bytes read.
    fn total(&self) -> u64;
}

/// Checks the bytes read (their hashes so far, and the part MD5s) before a replica is replaced.
type VerifySource<'v, P> = dyn Fn(&P, &[[u8; 16]]) -> Result<(), StoreError> + Sync + 'v;

/// Reads a local file in parts of [`PART_SIZE`].
struct FileParts<'a> {
    file: tokio::fs::File,
    /// Bytes not read yet (by the size at open): a part buffer is never larger than what is left, so a
    /// small archive never costs a part-sized allocation.
    remaining: u64,
    sha: Sha256,
    total: u64,
    key: &'a str,
    store: &'a ObjectStore,
}

impl Parts for FileParts<'_> {
    async fn next_part(&mut self) -> Result<Vec<u8>, StoreError> {
        use tokio::io::AsyncReadExt as _;
        let want = PART_SIZE.min(usize::try_from(self.remaining).unwrap_or(PART_SIZE));
        let mut buf = vec![0u8; want];
        let mut filled = 0;
        while filled < want {
            let n = self
                .file
                .read(&mut buf[filled..])
                .await
                .map_err(|e| self.store.err("ReadFile", self.key, e))?;
            if n == 0 {
                break;
            }
            filled += n;
        }
        buf.truncate(filled);
        self.sha.update(&buf);
        self.total += filled as u64;
        self.remaining = self.remaining.saturating_sub(filled as u64);
        Ok(buf)
    }

    fn sha256(&self) -> String {
        hex(&self.sha.clone().finalize())
    }

    fn total(&self) -> u64 {
        self.total
    }
}

/// Reads a GetObject body in parts of [`PART_SIZE`], hashing as it goes.
struct Chunks<'a> {
    body: ByteStream,
    carry: Vec<u8>,
    sha: Sha256,
    md5: Md5,
    total: u64,
    key: &'a str,
    src: &'a ObjectStore,
}

impl Parts for Chunks<'_> {
    async fn next_part(&mut self) -> Result<Vec<u8>, StoreError> {
        while self.carry.len() < PART_SIZE {
            match self.body.next().await {
                Some(Ok(b)) => {
                    self.sha.update(&b);
                    self.md5.update(&b);
                    self.total += b.len() as u64;
                    self.carry.extend_from_slice(&b);
                }
                Some(Err(e)) => return Err(self.src.err("GetObject", self.key, e)),
                None => break,
            }
        }
        let take = self.carry.len().min(PART_SIZE);
        let rest = self.carry.split_off(take);
        Ok(std::mem::replace(&mut self.carry, rest))
    }

    fn sha256(&self) -> String {
        hex(&self.sha.clone().finalize())
    }

    fn total(&self) -> u64 {
        self.total
    }
}

impl Chunks<'_> {
    fn md5(&self) -> String {
        hex(&self.md5.clone().finalize())
    }
}

/// Checks the bytes read against what the listing said of the source object: the size, and the ETag —
/// a plain ETag is the MD5 of the bytes; a multipart ETag (`<md5>-<parts>`) can be checked when the source
/// was uploaded with the same part size (otherwise the size and the `If-Match` pinned read stand).
fn verify_source(
    object: &SourceObject,
    size: u64,
    md5: &str,
    part_md5s: &[[u8; 16]],
) -> Result<(), StoreError> {
    let key = object.key.as_str();
    if size != object.size {
        return Err(StoreError::Checksum {
            key: key.to_string(),
            what: format!("read {size} bytes, listing said {}", object.size),
        });
    }
    let plain = !object.etag.contains('-') && object.etag.len() == 32;
    if plain && md5 != object.etag {
        return Err(StoreError::Checksum {
            key: key.to_string(),
            what: "bytes read do not match the source ETag".into(),
        });
    }
    if !plain
        && etag_part_size_matches(object, part_md5s.len())
        && multipart_etag(part_md5s, md5_of) != object.etag
    {
        return Err(StoreError::Checksum {
            key: key.to_string(),
            what: "bytes read do not match the source's multipart ETag".into(),
        });
    }
    Ok(())
}

/// Whether a multipart source ETag can have come from parts of our `PART_SIZE`: its part count is the one
/// our part size gives for this size, and the one we read.
fn etag_part_size_matches(object: &SourceObject, parts_read: usize) -> bool {
    object
        .etag
        .split_once('-')
        .and_then(|(_, n)| n.parse::<u64>().ok())
        .is_some_and(|n| n == object.size.div_ceil(PART_SIZE as u64) && n == parts_read as u64)
}

/// Copies `object` from `src` to `dst` under the same key, streaming: memory use is bounded by one part.
/// The read is pinned to the listed ETag (`If-Match`), so an object changing mid-copy fails this round
/// and is copied again next round. The source bytes are verified before the replica is replaced.
pub async fn copy(src: &ObjectStore, dst: &ObjectStore, object: &SourceObject) -> Result<Copied, StoreError> {
    // The whole copy has a deadline that grows with the size (at least 1 MiB/s after a 45 s start).
    let deadline = OPERATION_DEADLINE + Duration::from_secs(object.size / (1024 * 1024));
    match tokio::time::timeout(deadline, copy_inner(src, dst, object)).await {
        Ok(r) => r,
        Err(_) => Err(StoreError::Request {
            op: "Copy",
            bucket: dst.bucket.clone(),
            key: object.key.clone(),
            message: format!("did not finish within {}s", deadline.as_secs()),
        }),
    }
}

async fn copy_inner(
    src: &ObjectStore,
    dst: &ObjectStore,
    object: &SourceObject,
) -> Result<Copied, StoreError> {
    let key = object.key.as_str();
    let out = {
        let _slot = src.slot().await;
        src.client
            .get_object()
            .bucket(&src.bucket)
            .key(key)
            .if_match(format!("\"{}\"", object.etag))
            .send()
            .await
            .map_err(|e| src.err("GetObject", key, e))?
    };
    let mut chunks = Chunks {
        body: out.body,
        carry: Vec::new(),
        sha: Sha256::new(),
        md5: Md5::new(),
        total: 0,
        key,
        src,
    };
    let first = chunks.next_part().await?;
    // A full first part means there may be more: multipart (a lone full part is a one-part upload).
    let more = first.len() == PART_SIZE;
    let (target_etag, sha256, size) = if more {
        let verify = |c: &Chunks<'_>, md5s: &[[u8; 16]]| verify_source(object, c.total, &c.md5(), md5s);
        let verify: &VerifySource<'_, Chunks<'_>> = &verify;
        dst.multipart(key, first, &mut chunks, verify).await?
    } else {
        // Everything is read: verify before the PUT replaces the replica.
        verify_source(object, chunks.total, &chunks.md5(), &[md5_of(&first)])?;
        let etag = dst.put_bytes(key, first).await?;
        (etag, chunks.sha256(), chunks.total)
    };
    Ok(Copied {
        target_etag,
        sha256,
        size,
    })
}

#[cfg(test)]
mod verify_tests {
    use super::*;

    fn obj(etag: &str, size: u64) -> SourceObject {
        SourceObject {
            key: "tenants/a/x".into(),
            size,
            etag: etag.into(),
            last_modified: jiff::Timestamp::UNIX_EPOCH,
        }
    }

    #[test]
    fn bytes_that_do_not_match_the_source_are_refused_before_any_write() {
        let good = hex(&md5_of(b"hello"));
        assert!(verify_source(&obj(&good, 5), 5, &good, &[]).is_ok());
        let other = hex(&md5_of(b"hellO"));
        assert!(matches!(
            verify_source(&obj(&good, 5), 5, &other, &[]),
            Err(StoreError::Checksum { .. })
        ));
        assert!(matches!(
            verify_source(&obj(&good, 5), 4, &good, &[]),
            Err(StoreError::Checksum { .. })
        ));
    }

    #[test]
    fn a_multipart_source_etag_is_checked_when_the_part_size_matches() {
        let size = PART_SIZE as u64 + 10;
        let parts = [[1u8; 16], [2u8; 16]];
        let etag = multipart_etag(&parts, md5_of);
        assert!(verify_source(&obj(&etag, size), size, "ignored", &parts).is_ok());
        let wrong = [[1u8; 16], [3u8; 16]];
        assert!(matches!(
            verify_source(&obj(&etag, size), size, "ignored", &wrong),
            Err(StoreError::Checksum { .. })
        ));
        // Uploaded with another part size (3 parts for 8 MiB + 10 bytes): cannot be checked by ETag.
        let foreign = format!("{}-3", "ab".repeat(16));
        assert!(verify_source(&obj(&foreign, size), size, "ignored", &parts).is_ok());
    }
}
