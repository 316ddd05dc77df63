//! Why a retrain run failed.
//!
//! Every failure ends up as text in `retrain_runs.error`, read by whoever
//! asked for the run, so each variant says what to do about it: fix the
//! parameters, label more recordings, or look at a service.

use birdsong_common::db::QueryError;
use birdsong_common::store::StoreError;
use birdsong_registry::RegistryError;

/// A run that could not complete.
#[derive(Debug, thiserror::Error)]
pub enum RetrainError {
    /// The request's parameters are unusable; nothing was trained.
    #[error("invalid parameters: {0}")]
    Params(String),
    /// The labelled data cannot make a model.
    #[error("not enough data: {0}")]
    Data(String),
    #[error(transparent)]
    Db(#[from] QueryError),
    #[error("object store error while {doing}: {source}")]
    Store { doing: String, source: StoreError },
    #[error("training failed: {0}")]
    Model(#[from] birdsong_model::ModelError),
    #[error(transparent)]
    Registry(#[from] RegistryError),
    #[error("{0}")]
    Internal(String),
}

/// Maps an object store error to [`RetrainError::Store`].
pub(crate) fn store(doing: impl Into<String>) -> impl FnOnce(StoreError) -> RetrainError {
    let doing = doing.into();
    move |source| RetrainError::Store { doing, source }
}
