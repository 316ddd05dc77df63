//! What a registry operation can fail with.

use birdsong_common::db::QueryError;
use birdsong_common::jobs::SubmitError;
use birdsong_common::queue::QueueError;
use birdsong_common::store::StoreError;
use uuid::Uuid;

/// A registry operation that could not be done.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("model version {0:?} does not exist")]
    UnknownVersion(String),
    #[error("model version {version:?} was rejected ({reason}) and cannot be promoted")]
    Rejected { version: String, reason: String },
    #[error("job {0} does not exist")]
    UnknownJob(Uuid),
    /// Retrain parameters that cannot be stored: PostgreSQL's `jsonb`
    /// refuses the NUL character in any string or key.
    #[error("retrain params must not contain the NUL character (\\u0000)")]
    NulInParams,
    #[error(transparent)]
    Db(#[from] QueryError),
    #[error(transparent)]
    Queue(#[from] QueueError),
    #[error(transparent)]
    Submit(#[from] SubmitError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cannot serialise the model artifact: {0}")]
    Artifact(#[from] birdsong_model::ModelError),
}

/// Why a stored model could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The object store or the database could not be read: worth retrying.
    #[error("cannot read model {version}: {message}")]
    Unavailable { version: String, message: String },
    /// An object's bytes are not the ones the registry recorded: the object
    /// was overwritten or altered after publication (or belongs to another
    /// deployment).
    #[error(
        "model {version} is refused: {file} has sha256 {actual}, but the registry recorded \
         {expected} (the stored object was replaced or altered after publication)"
    )]
    Tampered {
        version: String,
        file: &'static str,
        expected: String,
        actual: String,
    },
    /// The objects are missing or not a model this build can serve.
    #[error("model {version} is refused: {message}")]
    Invalid { version: String, message: String },
}

impl LoadError {
    /// Whether a later attempt may succeed (the same bytes checked again
    /// will fail the same way).
    pub fn is_transient(&self) -> bool {
        matches!(self, LoadError::Unavailable { .. })
    }

    /// Short machine-readable category, for logs and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            LoadError::Unavailable { .. } => "unavailable",
            LoadError::Tampered { .. } => "checksum_mismatch",
            LoadError::Invalid { .. } => "invalid_model",
        }
    }
}
