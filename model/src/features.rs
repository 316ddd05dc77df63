//! The input contract with the audio crate: what one window's feature vector is, and
//! which of its columns a network reads.
//!
//! Re-exported so that the model's expectations are the audio crate's by construction: a
//! build that changes the features changes `FEATURE_VERSION`, and artifacts trained on
//! the old ones are then refused instead of misread, unless the old vectors are a prefix
//! of the new ones (`PREFIX_FEATURE_VERSIONS`), in which case the model reads that prefix.

use std::fmt;
use std::ops::Range;
use std::str::FromStr;

pub use birdsong_audio::{
    FEATURE_COUNT, FEATURE_VERSION, FeatureVector, LIBROSA_FEATURE_COUNT, PREFIX_FEATURE_VERSIONS,
};
use serde::{Deserialize, Serialize};

/// Which columns of the feature vector a network reads. Stored in the training config
/// and the artifact, so a model keeps reading the columns it was trained on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FeatureSet {
    /// The 95 librosa features: the Python pipeline's input, for the reference recipe
    /// and comparisons with it. Everything artifacts of `bs-features-1` could read.
    Librosa,
    /// The 128-value band profile alone.
    Bands,
    /// The librosa features and the band profile.
    All,
}

impl FeatureSet {
    /// Every set, by name.
    pub const ALL: [FeatureSet; 3] = [FeatureSet::Librosa, FeatureSet::Bands, FeatureSet::All];

    /// The columns read, as a range of the feature vector.
    pub fn columns(self) -> Range<usize> {
        match self {
            FeatureSet::Librosa => 0..LIBROSA_FEATURE_COUNT,
            FeatureSet::Bands => LIBROSA_FEATURE_COUNT..FEATURE_COUNT,
            FeatureSet::All => 0..FEATURE_COUNT,
        }
    }

    /// Number of columns read (the network's input width).
    pub fn width(self) -> usize {
        self.columns().len()
    }

    /// The name used in configs, artifacts and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            FeatureSet::Librosa => "librosa",
            FeatureSet::Bands => "bands",
            FeatureSet::All => "all",
        }
    }

    /// What artifacts and configs written before feature sets existed read: the 95
    /// librosa features.
    pub(crate) fn legacy() -> Self {
        FeatureSet::Librosa
    }
}

impl fmt::Display for FeatureSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for FeatureSet {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        FeatureSet::ALL
            .into_iter()
            .find(|set| set.name() == s)
            .ok_or_else(|| format!("unknown feature set {s:?}; known: librosa, bands, all"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sets_cover_the_vector_and_round_trip_by_name() {
        assert_eq!(FeatureSet::Librosa.columns(), 0..95);
        assert_eq!(FeatureSet::Bands.columns(), 95..FEATURE_COUNT);
        assert_eq!(
            FeatureSet::Bands.width() + FeatureSet::Librosa.width(),
            FeatureSet::All.width()
        );
        for set in FeatureSet::ALL {
            assert_eq!(set.name().parse::<FeatureSet>(), Ok(set));
            let json = serde_json::to_string(&set).unwrap();
            assert_eq!(json, format!("\"{}\"", set.name()));
        }
        assert!("mfcc".parse::<FeatureSet>().is_err());
    }
}
