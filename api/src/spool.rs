//! Uploaded parts on their way to the object store.
//!
//! An upload can be gigabytes, so no part is ever held in memory: each is
//! written to an anonymous file in a private temporary directory as it
//! arrives, hashed on the way, and held to the per-file size limit while it
//! streams (the first byte over the limit ends the request with 413). The
//! files disappear with the [`Spool`], whatever way the request ends.

use std::path::Path;

use axum::extract::multipart::{Field, MultipartError};
use axum::http::StatusCode;
use birdsong_common::store::{ObjectStore, StoreError};
use sha2::{Digest, Sha256};
use tempfile::{NamedTempFile, TempDir};
use tokio::io::AsyncWriteExt;

use crate::problem::Problem;

/// Bytes kept from the start of each part to recognise archives.
const HEAD_BYTES: usize = 512;

/// One part, on disk.
pub struct Spooled {
    /// The name the client gave it (its last path component).
    pub name: String,
    pub file: NamedTempFile,
    pub sha256: String,
    pub size: u64,
    pub head: Vec<u8>,
}

/// The parts of one request.
pub struct Spool {
    dir: TempDir,
    max_file_bytes: u64,
    max_files: usize,
    pub files: Vec<Spooled>,
}

impl Spool {
    pub fn new(max_file_bytes: u64, max_files: usize) -> Result<Self, Problem> {
        let dir = tempfile::Builder::new()
            .prefix("birdsong-api-")
            .tempdir()
            .map_err(|e| Problem::internal("creating a temporary directory", e))?;
        Ok(Self {
            dir,
            max_file_bytes,
            max_files,
            files: Vec::new(),
        })
    }

    /// The directory (which must outlive the files' use) and the files.
    pub fn into_parts(self) -> (TempDir, Vec<Spooled>) {
        (self.dir, self.files)
    }

    /// Refuses the part that would pass the files-per-request limit, before
    /// reading it.
    fn admit(&self, name: &str) -> Result<String, Problem> {
        if self.files.len() >= self.max_files {
            return Err(Problem::unprocessable(
                "too-many-files",
                format!(
                    "at most {} files may be sent in one request",
                    self.max_files
                ),
            ));
        }
        let name = client_name(name, self.files.len());
        if self.files.iter().any(|f| f.name == name) {
            return Err(Problem::unprocessable(
                "duplicate-name",
                format!("two parts are named {name:?}; names must be unique within a request"),
            ));
        }
        Ok(name)
    }

    fn too_large(&self, name: &str) -> Problem {
        Problem::too_large(format!(
            "{name:?} is larger than the limit of {} bytes per file",
            self.max_file_bytes
        ))
    }

    fn temp_file(&self) -> Result<NamedTempFile, Problem> {
        NamedTempFile::new_in(self.dir.path())
            .map_err(|e| Problem::internal("creating a temporary file", e))
    }

    /// Streams a multipart file part to disk.
    pub async fn add_field(
        &mut self,
        field: &mut Field<'_>,
        raw_name: &str,
    ) -> Result<(), Problem> {
        let name = self.admit(raw_name)?;
        let temp = self.temp_file()?;
        let mut out = tokio::fs::File::from_std(
            temp.reopen()
                .map_err(|e| Problem::internal("opening a temporary file", e))?,
        );
        let mut hasher = Sha256::new();
        let mut head = Vec::with_capacity(HEAD_BYTES);
        let mut size = 0u64;
        while let Some(chunk) = field.chunk().await.map_err(multipart_problem)? {
            size += chunk.len() as u64;
            if size > self.max_file_bytes {
                return Err(self.too_large(&name));
            }
            if head.len() < HEAD_BYTES {
                let take = (HEAD_BYTES - head.len()).min(chunk.len());
                head.extend_from_slice(&chunk[..take]);
            }
            hasher.update(&chunk);
            out.write_all(&chunk)
                .await
                .map_err(|e| Problem::internal("writing a temporary file", e))?;
        }
        out.flush()
            .await
            .map_err(|e| Problem::internal("writing a temporary file", e))?;
        self.files.push(Spooled {
            name,
            file: temp,
            sha256: hex::encode(hasher.finalize()),
            size,
            head,
        });
        Ok(())
    }

    /// Copies an object of the bucket to disk (a JSON submission names
    /// objects rather than sending bytes).
    pub async fn add_object(
        &mut self,
        store: &ObjectStore,
        key: &str,
        name: Option<&str>,
    ) -> Result<(), Problem> {
        check_object_key(key)?;
        let shown = name.unwrap_or_else(|| key.rsplit('/').next().unwrap_or(key));
        let name = self.admit(shown)?;
        let size = match store.head(key).await {
            Ok(Some(size)) => size,
            Ok(None) => {
                return Err(Problem::unprocessable(
                    "no-such-object",
                    format!("there is no object {key:?} in the bucket"),
                ));
            }
            Err(e @ StoreError::Refused { .. }) => {
                return Err(Problem::unprocessable(
                    "object-refused",
                    format!("the object store refused to look up {key:?}: {e}"),
                ));
            }
            Err(e) => {
                tracing::warn!(error = %e, key, "object store unavailable");
                return Err(Problem::unavailable(
                    "object-store",
                    "the object store could not be reached; try again later",
                ));
            }
        };
        if size > self.max_file_bytes {
            return Err(self.too_large(&name));
        }
        let temp = self.temp_file()?;
        store
            .get_to_file(key, temp.path())
            .await
            .map_err(|e| Problem::internal("fetching an object", e))?;
        let path = temp.path().to_path_buf();
        let (sha256, size, head) = tokio::task::spawn_blocking(move || hash_file(&path))
            .await
            .map_err(|e| Problem::internal("hashing an object", e))?
            .map_err(|e| Problem::internal("hashing an object", e))?;
        if size > self.max_file_bytes {
            return Err(self.too_large(&name));
        }
        self.files.push(Spooled {
            name,
            file: temp,
            sha256,
            size,
            head,
        });
        Ok(())
    }
}

fn hash_file(path: &Path) -> std::io::Result<(String, u64, Vec<u8>)> {
    use std::io::Read;
    let mut file = std::fs::File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut head = Vec::new();
    let mut size = 0u64;
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        if head.len() < HEAD_BYTES {
            head.extend_from_slice(&buf[..n.min(HEAD_BYTES - head.len())]);
        }
        size += n as u64;
        hasher.update(&buf[..n]);
    }
    Ok((hex::encode(hasher.finalize()), size, head))
}

/// The name a part is known by: its last path component, verbatim except
/// for characters no file name or database text may hold.
pub fn client_name(raw: &str, index: usize) -> String {
    let last = raw.rsplit(['/', '\\']).next().unwrap_or("");
    let cleaned: String = last
        .chars()
        .map(|c| if c == '\0' { '_' } else { c })
        .take(255)
        .collect();
    if cleaned.is_empty() || cleaned == "." || cleaned == ".." {
        format!("upload-{}", index + 1)
    } else {
        cleaned
    }
}

/// A multipart framing error or a body over the limit.
pub fn multipart_problem(e: MultipartError) -> Problem {
    let status = e.status();
    if status == StatusCode::PAYLOAD_TOO_LARGE {
        Problem::too_large(format!("the request body is too large: {}", e.body_text()))
    } else {
        Problem::bad_request("invalid-multipart", e.body_text())
    }
}

/// Longest object key S3 accepts, in bytes.
const MAX_OBJECT_KEY_BYTES: usize = 1024;

/// Refuses keys no S3 server stores: empty, over 1 024 bytes, or with
/// control characters; and `.`/`..` segments, which path-based stores
/// (MinIO, the bundled server) resolve as directories. Such a key is the
/// request's fault (422), not an outage of the store (503).
fn check_object_key(key: &str) -> Result<(), Problem> {
    let problem =
        |why: &str| Problem::unprocessable("invalid-key", format!("object key {key:?} {why}"));
    if key.is_empty() || key.len() > MAX_OBJECT_KEY_BYTES {
        return Err(problem("must be 1 to 1024 bytes"));
    }
    if key.chars().any(char::is_control) {
        return Err(problem("has control characters"));
    }
    if key.split('/').any(|seg| seg == "." || seg == "..") {
        return Err(problem("has a '.' or '..' segment"));
    }
    Ok(())
}

/// A file part of a multipart form, as the OpenAPI document describes it:
/// bytes with a file name. Parts are streamed to the spool, never held as a
/// value, so this type exists for the document alone.
pub struct FilePart;

impl schemars::JsonSchema for FilePart {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "FilePart".into()
    }

    fn inline_schema() -> bool {
        true
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "format": "binary",
            "contentMediaType": "application/octet-stream",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_keep_their_text_but_not_their_folders() {
        assert_eq!(
            client_name("a'; DROP TABLE jobs;--.wav", 0),
            "a'; DROP TABLE jobs;--.wav"
        );
        assert_eq!(client_name("../../etc/passwd", 0), "passwd");
        assert_eq!(client_name("C:\\rec\\x.wav", 0), "x.wav");
        assert_eq!(client_name("..", 2), "upload-3");
        assert_eq!(client_name("a\0b", 0), "a_b");
    }
}
