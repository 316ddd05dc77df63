//! Model artifacts in the object store: where they go, how they are written
//! and how they are read back.
//!
//! A stored model is never overwritten. Its objects live under a prefix no
//! other publication can produce (`models/<version>-<random id>/`), so two
//! deployments sharing a bucket, or a database restored over a bucket that
//! moved on, can both have a `v1` without touching each other's. Each
//! object is written with a conditional put (`If-None-Match: *`) where the
//! store honours it, and only after every object is stored does the
//! `model_versions` row name them, with the SHA-256 of each file.
//!
//! Every load checks the bytes it fetched against those checksums before
//! parsing them: a model whose objects were replaced is refused with a
//! [`LoadError::Tampered`] naming both digests, never served.

use birdsong_common::db::query;
use birdsong_common::store::{ObjectStore, StoreError, sha256_hex};
use birdsong_model::{Artifact, META_FILE, WEIGHTS_FILE};
use bytes::Bytes;
use sqlx::PgPool;
use uuid::Uuid;

use crate::error::{LoadError, RegistryError};

/// The key of one file of a stored model.
pub fn object_key(prefix: &str, file: &str) -> String {
    format!("{}/{file}", prefix.trim_end_matches('/'))
}

/// A fresh prefix for a publication of `version`: the random part makes it
/// unique to this publication, whatever other deployment shares the bucket.
fn new_prefix(version: &str) -> String {
    format!("models/{version}-{}/", Uuid::new_v4().simple())
}

/// What a new version is registered with, beyond the artifact itself.
#[derive(Debug, Clone, Default)]
pub struct NewVersion {
    /// The version name (unique in this deployment's `model_versions`).
    pub version: String,
    /// Stored as `model_versions.metrics`.
    pub metrics: serde_json::Value,
    /// Why it exists or what the gate said (`status_reason`).
    pub status_reason: Option<String>,
    /// The retrain run that trained it, if any.
    pub retrain_run_id: Option<Uuid>,
}

/// A registered model's row: enough to find and verify its objects.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct StoredVersion {
    pub version: String,
    pub object_prefix: String,
    /// SHA-256 of the weights file.
    pub checksum: String,
    /// SHA-256 of the metadata file; absent for versions published before
    /// it was recorded, whose metadata is then checked only against the
    /// weights digest it names.
    pub meta_sha256: Option<String>,
}

/// Where a refit model's judged model is stored, under the version's prefix.
pub const JUDGED_DIR: &str = "judged";

/// Stores `artifact` as `new.version` and registers it as a candidate.
/// Weights first, metadata last, the row after both: a reader that finds
/// the row finds both objects.
pub async fn publish(
    pool: &PgPool,
    store: &ObjectStore,
    artifact: &mut Artifact,
    new: &NewVersion,
) -> Result<StoredVersion, RegistryError> {
    publish_refit(pool, store, artifact, None, new).await
}

/// [`publish`], for a model refit on its held-out recordings: the model the
/// gate judged goes first, under `judged/` in the same prefix, and the refit
/// model's metadata records its `model.json` checksum, so that the chain of
/// checksums from the registry row covers it (see [`load_judged`]).
pub async fn publish_refit(
    pool: &PgPool,
    store: &ObjectStore,
    artifact: &mut Artifact,
    judged: Option<&Artifact>,
    new: &NewVersion,
) -> Result<StoredVersion, RegistryError> {
    artifact.set_version(new.version.clone());
    let prefix = new_prefix(&new.version);
    // The metadata names only a judged model stored here.
    artifact.set_judged_meta_sha256(None);
    if let Some(judged) = judged {
        let mut judged = judged.clone();
        judged.set_version(new.version.clone());
        let judged_prefix = object_key(&prefix, JUDGED_DIR);
        for (name, bytes) in judged.to_files()? {
            if name == META_FILE {
                artifact.set_judged_meta_sha256(Some(sha256_hex(&bytes)));
            }
            store
                .put_new(&object_key(&judged_prefix, name), Bytes::from(bytes))
                .await?;
        }
    }
    let mut meta_sha256 = String::new();
    for (name, bytes) in artifact.to_files()? {
        if name == META_FILE {
            meta_sha256 = sha256_hex(&bytes);
        }
        store
            .put_new(&object_key(&prefix, name), Bytes::from(bytes))
            .await?;
    }
    let meta = artifact.meta();
    sqlx::query(
        "INSERT INTO model_versions (version, object_prefix, architecture, feature_version,
                                     input_size, classes, metrics, checksum, meta_sha256,
                                     status_reason, retrain_run_id)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
    )
    .bind(&new.version)
    .bind(&prefix)
    .bind(&meta.architecture)
    .bind(&meta.feature_version)
    .bind(i32::try_from(meta.input_size).unwrap_or(i32::MAX))
    .bind(serde_json::json!(meta.classes))
    .bind(if new.metrics.is_null() {
        serde_json::json!({})
    } else {
        new.metrics.clone()
    })
    .bind(&meta.weights_sha256)
    .bind(&meta_sha256)
    .bind(&new.status_reason)
    .bind(new.retrain_run_id)
    .execute(pool)
    .await
    .map_err(query("registering the model version"))?;
    Ok(StoredVersion {
        version: new.version.clone(),
        object_prefix: prefix,
        checksum: meta.weights_sha256.clone(),
        meta_sha256: Some(meta_sha256),
    })
}

/// The promoted version's row, if a version is promoted.
pub async fn promoted(pool: &PgPool) -> Result<Option<StoredVersion>, RegistryError> {
    sqlx::query_as(
        "SELECT version, object_prefix, checksum, meta_sha256 FROM model_versions
         WHERE status = 'promoted'",
    )
    .fetch_optional(pool)
    .await
    .map_err(|e| query("reading the promoted model version")(e).into())
}

/// One version's row.
pub async fn stored(pool: &PgPool, version: &str) -> Result<Option<StoredVersion>, RegistryError> {
    sqlx::query_as(
        "SELECT version, object_prefix, checksum, meta_sha256 FROM model_versions
         WHERE version = $1",
    )
    .bind(version)
    .fetch_optional(pool)
    .await
    .map_err(|e| query("reading a model version")(e).into())
}

/// Fetches a stored model and checks every byte against the registry's
/// checksums before parsing it for this build's feature extractor.
pub async fn load(store: &ObjectStore, stored: &StoredVersion) -> Result<Artifact, LoadError> {
    let version = &stored.version;
    let (weights, meta) = fetch_files(store, version, &stored.object_prefix).await?;
    verify(version, WEIGHTS_FILE, &stored.checksum, &weights)?;
    if let Some(expected) = &stored.meta_sha256 {
        verify(version, META_FILE, expected, &meta)?;
    }
    let artifact = on_blocking(version, move || {
        Artifact::from_files_any_backbone(&weights, &meta)
    })
    .await?
    .map_err(|e| LoadError::Invalid {
        version: version.clone(),
        message: e.to_string(),
    })?;
    if let Some(named) = &artifact.meta().version
        && named != version
    {
        return Err(LoadError::Invalid {
            version: version.clone(),
            message: format!("its metadata names version {named:?}"),
        });
    }
    Ok(artifact)
}

/// The model the gate judged when `artifact` (the loaded `stored` version)
/// was refit on its held-out recordings; `None` for a model that is its own
/// judge, or one whose judged model was not stored. Both files are checked
/// against the checksums the served model's verified metadata records.
pub async fn load_judged(
    store: &ObjectStore,
    stored: &StoredVersion,
    artifact: &Artifact,
) -> Result<Option<Artifact>, LoadError> {
    let Some(refit) = &artifact.meta().refit else {
        return Ok(None);
    };
    let Some(meta_sha256) = refit.judged_meta_sha256.clone() else {
        return Ok(None);
    };
    let version = &stored.version;
    let prefix = object_key(&stored.object_prefix, JUDGED_DIR);
    let (weights, meta) = fetch_files(store, version, &prefix).await?;
    verify(
        version,
        WEIGHTS_FILE,
        &refit.judged_weights_sha256,
        &weights,
    )?;
    verify(version, META_FILE, &meta_sha256, &meta)?;
    let judged = on_blocking(version, move || {
        Artifact::from_files_any_backbone(&weights, &meta)
    })
    .await?
    .map_err(|e| LoadError::Invalid {
        version: version.clone(),
        message: format!("its judged model: {e}"),
    })?;
    Ok(Some(judged))
}

/// The weights and metadata files under `prefix`: a missing object makes
/// the version invalid, any other store error is worth retrying.
async fn fetch_files(
    store: &ObjectStore,
    version: &str,
    prefix: &str,
) -> Result<(Bytes, Bytes), LoadError> {
    let fetch = |file: &'static str| {
        let key = object_key(prefix, file);
        async move {
            store.get(&key).await.map_err(|e| match e {
                StoreError::NotFound { .. } => LoadError::Invalid {
                    version: version.to_string(),
                    message: format!("its object {key} is missing"),
                },
                e => LoadError::Unavailable {
                    version: version.to_string(),
                    message: e.to_string(),
                },
            })
        }
    };
    Ok((fetch(WEIGHTS_FILE).await?, fetch(META_FILE).await?))
}

/// Runs CPU-heavy loading work of `version` off the async threads; a thread that
/// died is worth retrying.
pub(crate) async fn on_blocking<T: Send + 'static>(
    version: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, LoadError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| LoadError::Unavailable {
            version: version.to_string(),
            message: format!("loading thread failed: {e}"),
        })
}

fn verify(
    version: &str,
    file: &'static str,
    expected: &str,
    bytes: &[u8],
) -> Result<(), LoadError> {
    let actual = sha256_hex(bytes);
    if actual == expected {
        Ok(())
    } else {
        Err(LoadError::Tampered {
            version: version.to_string(),
            file,
            expected: expected.to_string(),
            actual,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_publication_gets_its_own_prefix() {
        let a = new_prefix("v1");
        let b = new_prefix("v1");
        assert_ne!(a, b);
        assert!(a.starts_with("models/v1-") && a.ends_with('/'));
        assert_eq!(object_key(&a, "model.json"), format!("{a}model.json"));
    }

    #[test]
    fn verification_names_both_digests() {
        let bytes = b"weights";
        let good = sha256_hex(bytes);
        assert!(verify("v1", WEIGHTS_FILE, &good, bytes).is_ok());
        let err = verify("v1", WEIGHTS_FILE, &good, b"other").unwrap_err();
        assert_eq!(err.kind(), "checksum_mismatch");
        assert!(!err.is_transient());
        let text = err.to_string();
        assert!(
            text.contains(&good) && text.contains(&sha256_hex(b"other")),
            "{text}"
        );
    }
}
