//! The model a worker serves, and how it changes while the worker runs.
//!
//! The promoted version is the one row of `model_versions` with status
//! `promoted`. [`Models::sync`] makes sure that version is the one loaded:
//! the worker calls it at start and on every `model.events` message, and
//! [`Models::ensure`] with the promoted version read while claiming each
//! task, so a worker that missed an event while disconnected still converges. Loading downloads the artifact from the
//! object store, validates it (format, feature version, input size, weights
//! checksum) and swaps it in atomically; tasks already running keep the
//! `Arc` they started with. A version that fails validation is remembered as
//! refused and the current model stays in service.

use std::collections::HashSet;
use std::sync::Arc;

use arc_swap::ArcSwapOption;
use birdsong_common::store::ObjectStore;
use birdsong_model::{Artifact, Classifier, META_FILE, WEIGHTS_FILE};
use sqlx::PgPool;
use tokio::sync::Mutex;

use crate::error::TaskError;

/// A classifier with the version that identifies its results.
pub struct LoadedModel {
    pub version: String,
    pub classifier: Classifier,
}

/// The worker's current model.
pub struct Models {
    current: ArcSwapOption<LoadedModel>,
    loading: Mutex<HashSet<String>>,
    pool: PgPool,
    store: ObjectStore,
}

impl Models {
    pub fn new(pool: PgPool, store: ObjectStore) -> Self {
        Self {
            current: ArcSwapOption::empty(),
            loading: Mutex::new(HashSet::new()),
            pool,
            store,
        }
    }

    /// The model in service, if any.
    pub fn current(&self) -> Option<Arc<LoadedModel>> {
        self.current.load_full()
    }

    /// Loads the promoted version if it is not the one in service. Returns the
    /// model to use (which is the previous one if the promoted version was
    /// refused). Database and object store failures are transient errors.
    pub async fn sync(&self) -> Result<Option<Arc<LoadedModel>>, TaskError> {
        let promoted: Option<(String, String)> = sqlx::query_as(
            "SELECT version, object_prefix FROM model_versions WHERE status = 'promoted'",
        )
        .fetch_optional(&self.pool)
        .await?;
        self.ensure(promoted).await
    }

    /// [`Models::sync`] for a caller that has already read the promoted
    /// version and its object prefix (the worker reads them in the same
    /// statement that claims a task).
    pub async fn ensure(
        &self,
        promoted: Option<(String, String)>,
    ) -> Result<Option<Arc<LoadedModel>>, TaskError> {
        let Some((version, prefix)) = promoted else {
            return Ok(self.current());
        };
        if self.current().is_some_and(|m| m.version == version) {
            return Ok(self.current());
        }
        // One load at a time; the set remembers versions that failed validation.
        let mut refused = self.loading.lock().await;
        if self.current().is_some_and(|m| m.version == version) || refused.contains(&version) {
            return Ok(self.current());
        }
        match self.load(&version, &prefix).await {
            Ok(model) => {
                tracing::info!(version = %version, classes = model.classifier.classes().len(), "serving model");
                self.current.store(Some(Arc::new(model)));
            }
            Err(e) if e.is_transient() => return Err(e),
            Err(e) => {
                tracing::error!(version = %version, error = %e, "refusing model; keeping the current one");
                refused.insert(version);
            }
        }
        Ok(self.current())
    }

    async fn load(&self, version: &str, prefix: &str) -> Result<LoadedModel, TaskError> {
        let key = |file: &str| format!("{}/{file}", prefix.trim_end_matches('/'));
        let meta = self.store.get(&key(META_FILE)).await?;
        let weights = self.store.get(&key(WEIGHTS_FILE)).await?;
        let version = version.to_string();
        tokio::task::spawn_blocking(move || {
            let artifact = Artifact::from_files(
                &weights,
                &meta,
                birdsong_audio::FEATURE_VERSION,
                birdsong_audio::FEATURE_COUNT,
            )
            .map_err(|e| TaskError::permanent("invalid_model", e.to_string()))?;
            let classifier = Classifier::from_artifact(&artifact)
                .map_err(|e| TaskError::permanent("invalid_model", e.to_string()))?;
            Ok(LoadedModel {
                version,
                classifier,
            })
        })
        .await
        .map_err(|e| TaskError::transient("model", format!("model loading panicked: {e}")))?
    }
}
