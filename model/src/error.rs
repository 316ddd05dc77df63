//! The library's error type.

use std::path::PathBuf;

/// Everything that can go wrong while training, evaluating, loading or running a model.
///
/// Callers branch on the variant: a worker that receives an
/// [`IncompatibleArtifact`](ModelError::IncompatibleArtifact) keeps its current model and
/// reports the refusal, while an [`Io`](ModelError::Io) error may be worth a retry.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// The artifact was produced for other inputs than this build computes, or by an
    /// unknown artifact format: using it would give silently wrong predictions.
    #[error("incompatible model artifact: {0}")]
    IncompatibleArtifact(String),

    /// The weights file does not have the checksum recorded in `model.json`
    /// (truncated download, corruption, or files from two different artifacts).
    #[error(
        "weights checksum mismatch: model.json records {expected}, the weights file hashes to {actual}"
    )]
    ChecksumMismatch {
        /// SHA-256 recorded in `model.json`.
        expected: String,
        /// SHA-256 of the bytes actually read.
        actual: String,
    },

    /// `model.json` is not valid JSON of the expected shape.
    #[error("invalid model metadata: {0}")]
    InvalidMetadata(#[from] serde_json::Error),

    /// The weights could not be decoded into the network the metadata describes.
    #[error("invalid model weights: {0}")]
    InvalidWeights(String),

    /// A file of the artifact could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory concerned.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },

    /// The training or evaluation data cannot be used as given.
    #[error("invalid dataset: {0}")]
    InvalidDataset(String),

    /// A configuration value is out of range.
    #[error("invalid configuration: {0}")]
    InvalidConfig(String),

    /// The input does not have the size the model was trained on.
    #[error("input has {actual} features, the model expects {expected}")]
    InputSize {
        /// Features per window the model was trained on.
        expected: usize,
        /// Features per window given.
        actual: usize,
    },

    /// An evaluation label is not one of the model's classes.
    #[error("label {0:?} is not one of the model's classes")]
    UnknownLabel(String),

    /// The tensor backend failed (reading a result back from the device).
    #[error("tensor backend: {0}")]
    Backend(String),
}

/// Result alias for this crate.
pub type Result<T, E = ModelError> = std::result::Result<T, E>;
