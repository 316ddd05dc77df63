//! Species classifier for birdsong: training, evaluation, inference and the versioned
//! model artifact.
//!
//! The audio crate turns recordings into windows of acoustic features; this crate
//! learns species from them and answers, for each window and each recording, which
//! species it hears. It is one library used by every role that touches a model, so the
//! worker, the retrainer and the `birdsong-model` CLI cannot drift apart:
//!
//! * **Training** — [`train()`] takes labelled [`Recording`]s (whole recordings, never loose
//!   windows, so that no recording is on both sides of a split) and a [`TrainConfig`], and
//!   reports each epoch to a callback. The reference architecture is `"mlp"`
//!   (95 → 512 → 256 → 128 → classes, see [`network`]); the recommended recipe trains an
//!   ensemble of several such networks from different seeds and averages their
//!   probabilities. Training is deterministic for a given seed. [`split_by_recording`] makes a reproducible stratified split when the
//!   caller has none.
//! * **Evaluation** — [`evaluate()`] scores a classifier per window and per recording
//!   (accuracy, macro and weighted precision/recall/F1, per-class figures, confusion
//!   matrix, log loss), as serialisable [`Evaluation`]s stored with the model.
//! * **Inference** — a [`Classifier`] is `Send + Sync` and predicts many windows of many
//!   files in one forward pass, with top-k species and per-recording summaries.
//! * **Artifact** — an [`Artifact`] is a directory (or two in-memory files) holding the
//!   weights and a `model.json` with everything needed to use them correctly. Loading
//!   refuses artifacts made for another feature extractor or input size, or whose weights
//!   fail their checksum.
//!
//! ```no_run
//! use birdsong_model::{Artifact, Classifier, TrainConfig, evaluate, train};
//! # fn demo(train_set: &[birdsong_model::Recording], test_set: &[birdsong_model::Recording])
//! #     -> Result<(), birdsong_model::ModelError> {
//! let config = TrainConfig { seed: 7, ..TrainConfig::default() };
//! let mut trained = train(train_set, None, &config, |e| eprintln!("epoch {} loss {:.3}", e.epoch, e.loss))?;
//! let test = evaluate(&trained.classifier, test_set)?;
//! trained.artifact.set_metrics("test", test);
//! trained.artifact.save_dir("model-v1".as_ref())?;
//!
//! // In a worker:
//! let artifact = Artifact::load_dir("model-v1".as_ref(), birdsong_model::FEATURE_VERSION, birdsong_model::FEATURE_COUNT)?;
//! let classifier = Classifier::from_artifact(&artifact)?;
//! # Ok(()) }
//! ```
//!
//! The tensor backend is burn 0.22's ndarray CPU backend by default; see [`device`] for
//! running on another one.
//!
//! Where it sits: between the audio crate (feature vectors) and the roles; the
//! retrainer trains and evaluates with it, the registry stores its artifacts, the
//! worker and the api classify with it.
//!
//! Reading order, bottom-up (each module uses only those above it): `features`,
//! [`dataset`], [`metrics`], [`scaler`], [`network`], [`config`] (the recipe) and
//! [`report`] (what evaluations produce); then [`artifact`]; [`inference`];
//! [`detection`] and [`mod@evaluate`]; [`negatives`]; [`mod@train`], the loop; and
//! [`fixed`], artifacts of layers trained elsewhere.

pub mod anchor;
pub mod artifact;
pub mod cnn;
mod cnn_inference;
pub mod cnn_train;
pub mod config;
pub mod conv;
pub mod dataset;
pub mod detection;
pub mod device;
mod error;
pub mod evaluate;
pub mod familiarity;
mod features;
pub mod fixed;
pub mod inference;
pub mod metrics;
pub mod negatives;
pub mod network;
pub mod refit;
pub mod report;
pub mod scaler;
pub mod spectrogram;
pub mod train;

pub use anchor::{ANCHOR_STRENGTH, Anchor};
pub use artifact::{Artifact, ArtifactMeta, FILE_NAMES, FORMAT_VERSION, META_FILE, WEIGHTS_FILE};
pub use cnn_train::{SpectrogramRecording, train_cnn, train_cnn_on};
pub use config::{CnnTraining, LearningRateDecay};
pub use dataset::{
    BACKGROUND_LABELS, DataSummary, Recording, class_list, is_background, k_folds, quiet_windows,
    quiet_windows_at, split_by_recording,
};
pub use detection::{
    DEFAULT_TARGET_PRECISION, DEFAULT_THRESHOLD, DetectionMetrics, OpenSet, Thresholds, calibrate,
    detection_metrics, open_set,
};
pub use error::{ModelError, Result};
pub use evaluate::{Evaluation, evaluate};
pub use familiarity::{FAMILIAR_QUANTILE, Familiarity};
pub use features::{
    BIRDNET_EMBEDDING, BIRDNET_FEATURE_VERSION, BIRDNET_VECTOR, Backbone, FEATURE_COUNT,
    FEATURE_VERSION, FeatureSet, FeatureVector, LIBROSA_FEATURE_COUNT,
};
pub use inference::{
    Classifier, Detected, ModelInfo, Prediction, Presence, RecordingPrediction, RecordingSummary,
    WindowPrediction,
};
pub use metrics::Metrics;
pub use network::{
    ANCHORED, ARCHITECTURES, CNN, LINEAR, MAX_MEMBERS, MLP, NetworkConfig, Output, SHALLOW,
};
pub use refit::{Refit, carry_over, refit_config};
pub use spectrogram::{MEL_FEATURE_VERSION, MEL_VECTOR, MelInput, Spectrogram};
pub use train::{
    CNN_CONTEXT_WINDOWS, EpochReport, MAX_CONTEXT_WINDOWS, RECOMMENDED_CONTEXT_WINDOWS, Stopping,
    TrainConfig, TrainedModel, train, train_anchored, train_on,
};
