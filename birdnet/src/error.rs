use std::path::PathBuf;

/// Why BirdNET could not be loaded or run. Messages name the file and say what to do,
/// since the usual cause is an install that is missing or incomplete.
#[derive(Debug, thiserror::Error)]
pub enum BirdnetError {
    /// Nothing is installed where we looked.
    #[error(
        "BirdNET is not installed in {dir} ({missing} is missing); install it with \
         `scripts/birdnet/install.sh --accept-license` (CC BY-NC-SA 4.0) or point \
         BIRDSONG_BIRDNET_DIR at an install"
    )]
    NotInstalled { dir: PathBuf, missing: String },
    /// A file of the install could not be read.
    #[error("reading {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// `manifest.json` is not what the installer writes.
    #[error("{path} is not a BirdNET install manifest: {reason}")]
    Manifest { path: PathBuf, reason: String },
    /// The network file is not the one the manifest records.
    #[error(
        "{path} has sha256 {actual}, the install manifest records {expected}; \
         reinstall with `scripts/birdnet/install.sh --accept-license --force`"
    )]
    Checksum {
        path: PathBuf,
        expected: String,
        actual: String,
    },
    /// The network is not the BirdNET V2.4 graph this crate knows how to run.
    #[error("{path} is not the BirdNET V2.4 graph this build runs: {reason}")]
    UnexpectedGraph { path: PathBuf, reason: String },
    /// The recording could not be decoded.
    #[error(transparent)]
    Audio(#[from] birdsong_audio::AudioError),
    /// A setting is out of range.
    #[error("{0}")]
    Config(String),
    /// tract failed to build or run the network.
    #[error("BirdNET network: {0}")]
    Runtime(String),
}

/// Result with [`BirdnetError`].
pub type Result<T, E = BirdnetError> = std::result::Result<T, E>;

impl BirdnetError {
    pub(crate) fn runtime(e: impl std::fmt::Display) -> Self {
        BirdnetError::Runtime(format!("{e:#}"))
    }
}
