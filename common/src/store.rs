//! The object store: audio by content hash, model artifacts by version.
//!
//! Audio lives under `audio/<sha256>`, so one recording uploaded twice is
//! stored (and classified) once; [`ObjectStore::put_if_absent`] checks for the
//! object before sending any bytes. Model artifacts live under
//! `models/…`, named and verified by the registry crate, written with
//! [`ObjectStore::put_new`] so that none is ever replaced. The client is aws-sdk-s3 with a configurable
//! endpoint and path-style addressing, so the same code talks to MinIO, the
//! bundled `birdsong-s3` server and AWS.
//!
//! Credentials are the static `BIRDSONG_S3_ACCESS_KEY` / `BIRDSONG_S3_SECRET_KEY`
//! pair, or, when both are empty, the standard AWS chain ([`ChainCredentials`]):
//! what a pod with a service-account role or an instance with a profile has
//! instead of keys.

use std::path::Path;
use std::sync::Arc;

use aws_config::default_provider::credentials::DefaultCredentialsChain;
use aws_credential_types::provider::{ProvideCredentials, future};
use aws_sdk_s3::Client;
use aws_sdk_s3::config::retry::RetryConfig;
use aws_sdk_s3::config::timeout::TimeoutConfig;
use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::{ByteStream, Length};
use aws_sdk_s3::types::{ChecksumAlgorithm, CompletedMultipartUpload, CompletedPart};
use bytes::Bytes;
use sha2::{Digest, Sha256};

use crate::config::{MIN_S3_PART_BYTES, S3Config};

/// An object store failure, classified so that callers know whether to retry.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The object does not exist.
    #[error("object {key} not found in bucket {bucket}")]
    NotFound { bucket: String, key: String },
    /// The store could not be reached, timed out or answered with a server
    /// error: worth retrying later.
    #[error("object store unavailable during {operation} {key}: {message}")]
    Unavailable {
        operation: &'static str,
        key: String,
        message: String,
    },
    /// The store refused the request (credentials, bucket, policy): retrying
    /// the same request will not help.
    #[error("object store refused {operation} {key}: {message}")]
    Refused {
        operation: &'static str,
        key: String,
        message: String,
    },
    /// A conditional write found an object already there.
    #[error("object {key} already exists in bucket {bucket}; it is never overwritten")]
    Exists { bucket: String, key: String },
    /// A local file could not be read.
    #[error("cannot read {path}: {source}")]
    Local {
        path: String,
        source: std::io::Error,
    },
}

impl StoreError {
    /// Whether a later attempt may succeed.
    pub fn is_transient(&self) -> bool {
        matches!(self, StoreError::Unavailable { .. })
    }
}

/// The key of a recording's bytes.
pub fn audio_key(sha256: &str) -> String {
    format!("audio/{sha256}")
}

/// Lower-case hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Whether `s` is a lower-case hex SHA-256 digest (64 characters).
pub fn is_sha256_hex(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// The standard AWS credential chain, built on first use.
///
/// The chain looks, in order, at the `AWS_ACCESS_KEY_ID` /
/// `AWS_SECRET_ACCESS_KEY` (/ `AWS_SESSION_TOKEN`) variables, the shared
/// config and credentials files (`AWS_PROFILE`, `AWS_CONFIG_FILE`,
/// `AWS_SHARED_CREDENTIALS_FILE`), a web identity token (`AWS_ROLE_ARN` with
/// `AWS_WEB_IDENTITY_TOKEN_FILE`: Kubernetes service-account roles), the
/// container endpoint (ECS, EKS Pod Identity) and the EC2 instance profile.
///
/// Building the chain is async (it reads the profile files) while
/// [`ObjectStore::new`] is not and is called from many places, so the chain
/// is built by the first request that needs credentials and kept for the
/// life of the store. The SDK's identity cache in front of it keeps the
/// credentials themselves and refreshes them before they expire.
#[derive(Debug, Clone)]
pub struct ChainCredentials {
    region: Region,
    chain: Arc<tokio::sync::OnceCell<DefaultCredentialsChain>>,
}

impl ChainCredentials {
    /// A chain for `region` (STS, for web identity, is called there).
    pub fn new(region: &str) -> Self {
        Self {
            region: Region::new(region.to_string()),
            chain: Arc::new(tokio::sync::OnceCell::new()),
        }
    }
}

impl ProvideCredentials for ChainCredentials {
    fn provide_credentials<'a>(&'a self) -> future::ProvideCredentials<'a>
    where
        Self: 'a,
    {
        future::ProvideCredentials::new(async move {
            let chain = self
                .chain
                .get_or_init(|| {
                    DefaultCredentialsChain::builder()
                        .region(self.region.clone())
                        .build()
                })
                .await;
            chain.provide_credentials().await
        })
    }
}

/// S3 allows at most this many parts in one upload.
const MAX_PARTS: u64 = 10_000;

/// The part size for a `size`-byte file: `configured`, or larger when the
/// file would otherwise need more parts than S3 allows.
fn part_size(size: u64, configured: u64) -> u64 {
    configured.max(size.div_ceil(MAX_PARTS))
}

/// A handle on one bucket. Cheap to clone.
#[derive(Clone, Debug)]
pub struct ObjectStore {
    client: Client,
    bucket: String,
    /// Files above this size are uploaded in parts of (about) this size.
    part_bytes: u64,
}

impl ObjectStore {
    /// Builds a client for the configured endpoint. Does not contact the
    /// store; [`ObjectStore::ensure_bucket`] does.
    pub fn new(cfg: &S3Config) -> Self {
        let builder = aws_sdk_s3::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .endpoint_url(&cfg.endpoint)
            .region(Region::new(cfg.region.clone()));
        let builder = if cfg.uses_credential_chain() {
            builder.credentials_provider(ChainCredentials::new(&cfg.region))
        } else {
            builder.credentials_provider(Credentials::new(
                &cfg.access_key,
                &cfg.secret_key,
                None,
                None,
                "birdsong-config",
            ))
        };
        let conf = builder
            .force_path_style(cfg.path_style)
            .retry_config(RetryConfig::standard().with_max_attempts(3))
            .timeout_config(
                TimeoutConfig::builder()
                    .connect_timeout(std::time::Duration::from_secs(5))
                    .operation_timeout(cfg.timeout)
                    .build(),
            )
            .build();
        Self {
            client: Client::from_conf(conf),
            bucket: cfg.bucket.clone(),
            part_bytes: cfg.part_bytes.max(MIN_S3_PART_BYTES),
        }
    }

    /// The bucket this store writes to.
    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    /// Creates the bucket if it does not exist (idempotent; safe from
    /// several processes at once).
    pub async fn ensure_bucket(&self) -> Result<(), StoreError> {
        match self.client.head_bucket().bucket(&self.bucket).send().await {
            Ok(_) => return Ok(()),
            Err(e) if status(&e) == Some(404) => {}
            Err(e) => return Err(classify("head_bucket", &self.bucket, e)),
        }
        match self
            .client
            .create_bucket()
            .bucket(&self.bucket)
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(e)
                if matches!(
                    e.code(),
                    Some("BucketAlreadyOwnedByYou") | Some("BucketAlreadyExists")
                ) =>
            {
                Ok(())
            }
            Err(e) => Err(classify("create_bucket", &self.bucket, e)),
        }
    }

    /// The object's size, or `None` if it does not exist.
    pub async fn head(&self, key: &str) -> Result<Option<u64>, StoreError> {
        match self
            .client
            .head_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
        {
            Ok(out) => Ok(Some(out.content_length().unwrap_or(0).max(0) as u64)),
            Err(e) if is_not_found(&e) => Ok(None),
            Err(e) => Err(classify("head", key, e)),
        }
    }

    /// Stores `bytes` under `key`, replacing any object there.
    pub async fn put(&self, key: &str, bytes: Bytes) -> Result<(), StoreError> {
        self.client
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .content_type("application/octet-stream")
            .body(ByteStream::from(bytes))
            .send()
            .await
            .map(|_| ())
            .map_err(|e| classify("put", key, e))
    }

    /// Stores `bytes` under `key` only if nothing is there: the write is
    /// conditional (`If-None-Match: *`) where the store honours it, and
    /// checked with a HEAD first where it may not. For objects that must
    /// never be replaced, such as model artifacts.
    pub async fn put_new(&self, key: &str, bytes: Bytes) -> Result<(), StoreError> {
        let exists = || StoreError::Exists {
            bucket: self.bucket.clone(),
            key: key.to_string(),
        };
        if self.head(key).await?.is_some() {
            return Err(exists());
        }
        match self
            .client
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .if_none_match("*")
            .content_type("application/octet-stream")
            .body(ByteStream::from(bytes))
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if status(&e) == Some(412) => Err(exists()),
            Err(e) => Err(classify("put", key, e)),
        }
    }

    /// Streams a local file to `key` without reading it into memory,
    /// replacing any object there (like [`ObjectStore::put`]; callers of
    /// content-addressed keys check with [`ObjectStore::head`] first).
    ///
    /// A file larger than the part size goes up as a multipart upload, one
    /// part at a time, each part a request of its own under the operation
    /// timeout: a 2 GiB recording over a slow link is not one PUT racing one
    /// timeout, and a failed part is retried alone. The object appears only
    /// when the upload completes, so readers never see part of it; on any
    /// failure the upload is aborted so that its parts are not kept (and
    /// billed) by the store.
    pub async fn put_file(&self, key: &str, path: &Path) -> Result<(), StoreError> {
        let local = |source| StoreError::Local {
            path: path.display().to_string(),
            source,
        };
        let size = tokio::fs::metadata(path).await.map_err(local)?.len();
        if size > self.part_bytes {
            return self.put_file_in_parts(key, path, size).await;
        }
        let body = ByteStream::from_path(path)
            .await
            .map_err(|e| local(std::io::Error::other(e)))?;
        self.client
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .content_type("application/octet-stream")
            .body(body)
            .send()
            .await
            .map(|_| ())
            .map_err(|e| classify("put", key, e))
    }

    /// The multipart half of [`ObjectStore::put_file`]: create, upload the
    /// parts, complete; abort on any failure.
    async fn put_file_in_parts(&self, key: &str, path: &Path, size: u64) -> Result<(), StoreError> {
        let created = self
            .client
            .create_multipart_upload()
            .bucket(&self.bucket)
            .key(key)
            .content_type("application/octet-stream")
            .checksum_algorithm(ChecksumAlgorithm::Crc32)
            .send()
            .await
            .map_err(|e| classify("create_multipart_upload", key, e))?;
        let Some(upload_id) = created.upload_id() else {
            return Err(StoreError::Refused {
                operation: "create_multipart_upload",
                key: key.to_string(),
                message: "the store answered without an upload id".to_string(),
            });
        };
        let result = self.upload_parts(key, path, size, upload_id).await;
        if result.is_err() {
            // The bucket's lifecycle rule for incomplete uploads (if any) is
            // the backstop when even the abort fails; the upload's own error
            // is the one worth reporting.
            if let Err(e) = self
                .client
                .abort_multipart_upload()
                .bucket(&self.bucket)
                .key(key)
                .upload_id(upload_id)
                .send()
                .await
            {
                tracing::warn!(
                    key,
                    upload_id,
                    error = %classify("abort_multipart_upload", key, e),
                    "could not abort a failed multipart upload; its parts stay in the store \
                     until a lifecycle rule removes them"
                );
            }
        }
        result
    }

    async fn upload_parts(
        &self,
        key: &str,
        path: &Path,
        size: u64,
        upload_id: &str,
    ) -> Result<(), StoreError> {
        let part_bytes = part_size(size, self.part_bytes);
        let mut parts = Vec::new();
        let mut offset = 0u64;
        let mut number = 1i32;
        while offset < size {
            let length = part_bytes.min(size - offset);
            // Each part is streamed from the file (and re-read on a retry),
            // never held in memory; `Exact` fails if the file shrank.
            let body = ByteStream::read_from()
                .path(path)
                .offset(offset)
                .length(Length::Exact(length))
                .build()
                .await
                .map_err(|e| StoreError::Local {
                    path: path.display().to_string(),
                    source: std::io::Error::other(e),
                })?;
            let uploaded = self
                .client
                .upload_part()
                .bucket(&self.bucket)
                .key(key)
                .upload_id(upload_id)
                .part_number(number)
                .content_length(length as i64)
                .checksum_algorithm(ChecksumAlgorithm::Crc32)
                .body(body)
                .send()
                .await
                .map_err(|e| classify("upload_part", key, e))?;
            parts.push(
                CompletedPart::builder()
                    .part_number(number)
                    .set_e_tag(uploaded.e_tag().map(str::to_string))
                    .set_checksum_crc32(uploaded.checksum_crc32().map(str::to_string))
                    .build(),
            );
            offset += length;
            number += 1;
        }
        self.client
            .complete_multipart_upload()
            .bucket(&self.bucket)
            .key(key)
            .upload_id(upload_id)
            .multipart_upload(
                CompletedMultipartUpload::builder()
                    .set_parts(Some(parts))
                    .build(),
            )
            .send()
            .await
            .map(|_| ())
            .map_err(|e| classify("complete_multipart_upload", key, e))
    }

    /// Stores `bytes` under `key` unless an object is already there.
    /// Returns whether it uploaded. Used for content-addressed keys, where
    /// an existing object is by construction the same bytes.
    pub async fn put_if_absent(&self, key: &str, bytes: Bytes) -> Result<bool, StoreError> {
        if self.head(key).await?.is_some() {
            return Ok(false);
        }
        self.put(key, bytes).await?;
        Ok(true)
    }

    /// Stores a recording under its content key. Returns the SHA-256 and
    /// whether it was uploaded (false: the same bytes were already stored).
    pub async fn put_audio(&self, bytes: Bytes) -> Result<(String, bool), StoreError> {
        let sha = sha256_hex(&bytes);
        let uploaded = self.put_if_absent(&audio_key(&sha), bytes).await?;
        Ok((sha, uploaded))
    }

    /// Reads a whole object into memory.
    pub async fn get(&self, key: &str) -> Result<Bytes, StoreError> {
        let out = self.open(key).await?;
        let data = out
            .body
            .collect()
            .await
            .map_err(|e| StoreError::Unavailable {
                operation: "get",
                key: key.to_string(),
                message: e.to_string(),
            })?;
        Ok(data.into_bytes())
    }

    /// Streams an object into a local file (for recordings too large to hold
    /// in memory). Returns the number of bytes written.
    pub async fn get_to_file(&self, key: &str, path: &Path) -> Result<u64, StoreError> {
        use tokio::io::AsyncWriteExt;
        let out = self.open(key).await?;
        let local = |source| StoreError::Local {
            path: path.display().to_string(),
            source,
        };
        let mut file = tokio::fs::File::create(path).await.map_err(local)?;
        let mut body = out.body;
        let mut written = 0u64;
        while let Some(chunk) =
            body.next()
                .await
                .transpose()
                .map_err(|e| StoreError::Unavailable {
                    operation: "get",
                    key: key.to_string(),
                    message: e.to_string(),
                })?
        {
            file.write_all(&chunk).await.map_err(local)?;
            written += chunk.len() as u64;
        }
        file.flush().await.map_err(local)?;
        Ok(written)
    }

    async fn open(
        &self,
        key: &str,
    ) -> Result<aws_sdk_s3::operation::get_object::GetObjectOutput, StoreError> {
        self.client
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| {
                if is_not_found(&e) {
                    StoreError::NotFound {
                        bucket: self.bucket.clone(),
                        key: key.to_string(),
                    }
                } else {
                    classify("get", key, e)
                }
            })
    }
}

fn status<E>(e: &SdkError<E>) -> Option<u16> {
    e.raw_response().map(|r| r.status().as_u16())
}

fn is_not_found<E: ProvideErrorMetadata>(e: &SdkError<E>) -> bool {
    status(e) == Some(404) || matches!(e.code(), Some("NoSuchKey") | Some("NotFound"))
}

/// Whether `e` failed because the credential chain found no credentials
/// at all or a profile is malformed: a deployment mistake that retrying will
/// not mend (unlike a credential endpoint timing out, which is transient).
/// The SDK reports either as a dispatch failure, so look inside.
fn no_credentials(e: &(dyn std::error::Error + 'static)) -> bool {
    use aws_credential_types::provider::error::CredentialsError;
    let mut cause = Some(e);
    while let Some(err) = cause {
        if let Some(c) = err.downcast_ref::<CredentialsError>() {
            return matches!(
                c,
                CredentialsError::CredentialsNotLoaded(_)
                    | CredentialsError::InvalidConfiguration(_)
            );
        }
        cause = err.source();
    }
    false
}

fn classify<E>(operation: &'static str, key: &str, e: SdkError<E>) -> StoreError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    let message = match (e.code(), status(&e)) {
        (Some(code), _) => format!("{code}: {}", e.message().unwrap_or("no message")),
        // Answers to HEAD have no body, hence no error code: say what a bare
        // 403 means rather than dump the SDK's "unhandled error".
        (None, Some(s @ (401 | 403))) => format!(
            "HTTP {s}: the store refused the request's credentials or their permissions \
             (wrong keys, or a role without access to the bucket)"
        ),
        (None, _) => aws_sdk_s3::error::DisplayErrorContext(&e).to_string(),
    };
    let transient = match &e {
        _ if no_credentials(&e) => false,
        SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) | SdkError::ResponseError(_) => {
            true
        }
        _ => matches!(status(&e), Some(s) if s >= 500 || s == 429 || s == 408),
    };
    if transient {
        StoreError::Unavailable {
            operation,
            key: key.to_string(),
            message,
        }
    } else {
        StoreError::Refused {
            operation,
            key: key.to_string(),
            message,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_grow_only_when_a_file_would_need_more_than_s3_allows() {
        let mib = 1024 * 1024;
        assert_eq!(part_size(2048 * mib, 64 * mib), 64 * mib);
        // 1 TiB in 64 MiB parts would be 16 384 parts.
        let tib = 1024 * 1024 * mib;
        let part = part_size(tib, 64 * mib);
        assert!(part > 64 * mib);
        assert!(tib.div_ceil(part) <= MAX_PARTS);
    }
}
