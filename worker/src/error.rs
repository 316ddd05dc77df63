//! What can go wrong with one task, sorted by what to do about it.
//!
//! A permanent error (the recording is not audio, is truncated, …) is the
//! user's to see: the task is marked failed with the reason and the message
//! is acknowledged, so it never loops. A transient error (object store,
//! database or broker unavailable) is retried with back-off and, if it
//! persists, handed back to the broker, which dead-letters the message after
//! the delivery limit.

use birdsong_analysis::AnalysisError;
use birdsong_audio::AudioError;
use birdsong_common::store::StoreError;

/// The failure of one task.
#[derive(Debug, thiserror::Error)]
pub enum TaskError {
    /// Retrying cannot help; recorded on the task row.
    #[error("{message}")]
    Permanent { kind: &'static str, message: String },
    /// A service was unavailable; worth another attempt.
    #[error("{message}")]
    Transient { kind: &'static str, message: String },
}

impl TaskError {
    /// Short machine-readable category (the `error_kind` column and metric label).
    pub fn kind(&self) -> &'static str {
        match self {
            TaskError::Permanent { kind, .. } | TaskError::Transient { kind, .. } => kind,
        }
    }

    pub fn is_transient(&self) -> bool {
        matches!(self, TaskError::Transient { .. })
    }

    pub fn permanent(kind: &'static str, message: impl Into<String>) -> Self {
        TaskError::Permanent {
            kind,
            message: message.into(),
        }
    }

    pub fn transient(kind: &'static str, message: impl Into<String>) -> Self {
        TaskError::Transient {
            kind,
            message: message.into(),
        }
    }
}

impl From<AudioError> for TaskError {
    fn from(e: AudioError) -> Self {
        if e.is_permanent() {
            TaskError::permanent("bad_audio", e.to_string())
        } else {
            TaskError::transient("io", e.to_string())
        }
    }
}

impl From<AnalysisError> for TaskError {
    fn from(e: AnalysisError) -> Self {
        match e {
            AnalysisError::Audio(e) => e.into(),
            // The model in service needs it, so it loaded before: retry, and let
            // the delivery limit surface a backbone that broke since.
            AnalysisError::Unavailable { .. } | AnalysisError::Failed { .. } => {
                TaskError::transient("backbone", e.to_string())
            }
        }
    }
}

impl From<StoreError> for TaskError {
    fn from(e: StoreError) -> Self {
        match e {
            // The producer stores the bytes before any row points at them, so a
            // missing object will not appear by waiting.
            StoreError::NotFound { .. } => TaskError::permanent("missing_object", e.to_string()),
            // Refusals are configuration problems (credentials, bucket): retry and
            // let the delivery limit surface them rather than failing good files.
            _ => TaskError::transient("object_store", e.to_string()),
        }
    }
}

impl From<birdsong_registry::LoadError> for TaskError {
    fn from(e: birdsong_registry::LoadError) -> Self {
        if e.is_transient() {
            TaskError::transient("model", e.to_string())
        } else {
            TaskError::permanent("invalid_model", e.to_string())
        }
    }
}

impl From<sqlx::Error> for TaskError {
    fn from(e: sqlx::Error) -> Self {
        TaskError::transient("database", e.to_string())
    }
}

impl From<birdsong_model::ModelError> for TaskError {
    fn from(e: birdsong_model::ModelError) -> Self {
        TaskError::transient("model", e.to_string())
    }
}
