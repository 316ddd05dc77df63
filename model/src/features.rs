//! The input contract with the audio crate: what one window's feature vector is.
//!
//! Re-exported so that the model's expectations are the audio crate's by construction: a
//! build that changes the features changes `FEATURE_VERSION`, and artifacts trained on
//! the old ones are then refused instead of misread.

pub use birdsong_audio::{FEATURE_COUNT, FEATURE_VERSION, FeatureVector};
