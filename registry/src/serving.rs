//! The model a role serves, and how it changes while the role runs.
//!
//! The promoted version is the one row of `model_versions` with status
//! `promoted`. [`Models::sync`] makes sure that version is the one loaded:
//! workers call it at start and on every `model.events` message, and
//! [`Models::ensure`] with the promoted version read while claiming each
//! task, so a worker that missed an event while disconnected still
//! converges; the API calls it before classifying an upload. Loading goes
//! through [`crate::artifacts::load`] (every byte checked against the
//! registry's checksums, then format, feature version and input size) and
//! swaps the model in atomically; work already running keeps the `Arc` it
//! started with. A version that fails verification is remembered as
//! refused, counted in [`Models::refused`], and the current model stays in
//! service. So is a model whose backbone this process cannot run (a BirdNET
//! model on a worker without BirdNET installed): the process keeps serving
//! what it has rather than failing every task.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use arc_swap::ArcSwapOption;
use birdsong_analysis::{Analyzer, Backbone};
use birdsong_common::store::ObjectStore;
use birdsong_model::Classifier;
use sqlx::PgPool;
use tokio::sync::Mutex;

use crate::artifacts::{self, StoredVersion};
use crate::error::{LoadError, RegistryError};

/// A classifier with the version that identifies its results.
pub struct LoadedModel {
    pub version: String,
    pub classifier: Classifier,
    /// What the classifier's windows must be analysed with.
    pub backbone: Backbone,
}

/// The role's current model.
pub struct Models {
    current: ArcSwapOption<LoadedModel>,
    loading: Mutex<HashSet<String>>,
    refused: AtomicU64,
    pool: PgPool,
    store: ObjectStore,
    analyzer: Arc<Analyzer>,
}

impl Models {
    /// Models served with `analyzer`: a model is only loaded if its backbone runs on it.
    pub fn new(pool: PgPool, store: ObjectStore, analyzer: Arc<Analyzer>) -> Self {
        Self {
            current: ArcSwapOption::empty(),
            loading: Mutex::new(HashSet::new()),
            refused: AtomicU64::new(0),
            pool,
            store,
            analyzer,
        }
    }

    /// The analyzer models are fed from.
    pub fn analyzer(&self) -> &Arc<Analyzer> {
        &self.analyzer
    }

    /// The model in service, if any.
    pub fn current(&self) -> Option<Arc<LoadedModel>> {
        self.current.load_full()
    }

    /// Versions refused since start (checksum mismatch, invalid artifact):
    /// exported as a metric, since a refusal means the store holds bytes the
    /// registry did not publish.
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }

    /// Loads the promoted version if it is not the one in service. Returns
    /// the model to use (the previous one if the promoted version was
    /// refused). Database and object store failures are transient errors.
    pub async fn sync(&self) -> Result<Option<Arc<LoadedModel>>, LoadError> {
        let promoted = artifacts::promoted(&self.pool)
            .await
            .map_err(|e| unavailable("promoted", e))?;
        self.ensure(promoted.map(|p| p.version)).await
    }

    /// [`Models::sync`] for a caller that has already read the promoted
    /// version's name (the worker reads it in the statement that claims a
    /// task).
    pub async fn ensure(
        &self,
        promoted: Option<String>,
    ) -> Result<Option<Arc<LoadedModel>>, LoadError> {
        let Some(version) = promoted else {
            return Ok(self.current());
        };
        if self.current().is_some_and(|m| m.version == version) {
            return Ok(self.current());
        }
        // One load at a time; the set remembers versions that were refused.
        let mut refused = self.loading.lock().await;
        if self.current().is_some_and(|m| m.version == version) || refused.contains(&version) {
            return Ok(self.current());
        }
        let stored = artifacts::stored(&self.pool, &version)
            .await
            .map_err(|e| unavailable(&version, e))?
            .ok_or_else(|| LoadError::Invalid {
                version: version.clone(),
                message: "no such version in model_versions".into(),
            });
        let loaded = match stored {
            Ok(stored) => self.load(stored).await,
            Err(e) => Err(e),
        };
        match loaded {
            Ok(model) => {
                tracing::info!(version = %version, classes = model.classifier.classes().len(), "serving model");
                self.current.store(Some(Arc::new(model)));
            }
            Err(e) if e.is_transient() => return Err(e),
            Err(e) => {
                tracing::error!(version = %version, kind = e.kind(), error = %e, "refusing model; keeping the current one");
                self.refused.fetch_add(1, Ordering::Relaxed);
                refused.insert(version);
            }
        }
        Ok(self.current())
    }

    async fn load(&self, stored: StoredVersion) -> Result<LoadedModel, LoadError> {
        let artifact = artifacts::load(&self.store, &stored).await?;
        let version = stored.version;
        let classifier = Classifier::from_artifact(&artifact).map_err(|e| LoadError::Invalid {
            version: version.clone(),
            message: e.to_string(),
        })?;
        let backbone = classifier.info().features.backbone();
        let analyzer = self.analyzer.clone();
        artifacts::on_blocking(&version, move || analyzer.ensure(backbone))
            .await?
            .map_err(|e| LoadError::Invalid {
                version: version.clone(),
                message: format!(
                    "it was trained on the {backbone} backbone, which cannot run here: {e}"
                ),
            })?;
        Ok(LoadedModel {
            version,
            classifier,
            backbone,
        })
    }
}

fn unavailable(version: &str, e: RegistryError) -> LoadError {
    LoadError::Unavailable {
        version: version.to_string(),
        message: e.to_string(),
    }
}
