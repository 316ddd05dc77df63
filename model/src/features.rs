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

use birdsong_audio::bands::N_BANDS;

use crate::spectrogram::{MEL_FEATURE_VERSION, MEL_VECTOR, PATCH_LEN};
pub use birdsong_audio::{
    FEATURE_COUNT, FEATURE_VERSION, LIBROSA_FEATURE_COUNT, PREFIX_FEATURE_VERSIONS,
};

/// One window's vector, as its backbone made it: the audio crate's features
/// ([`FEATURE_COUNT`] values) or a BirdNET embedding with its level
/// ([`BIRDNET_VECTOR`] values). Its length is checked against the model's input size.
pub type FeatureVector = Vec<f32>;

/// Feature version of vectors made from BirdNET V2.4 embeddings (the `birdnet` crate's
/// `FEATURE_VERSION`).
pub const BIRDNET_FEATURE_VERSION: &str = "birdnet-v2.4";
/// Values of a BirdNET embedding.
pub const BIRDNET_EMBEDDING: usize = 1024;
/// A BirdNET window's vector: the embedding, then the window's RMS amplitude (linear),
/// which tells quiet windows apart the way the acoustic features' `rms_mean` does.
pub const BIRDNET_VECTOR: usize = BIRDNET_EMBEDDING + 1;

/// What turns a window of audio into the vector a model reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Backbone {
    /// The audio crate's features at 22 050 Hz, in the worker's windows: no
    /// pretrained network, no licence to accept.
    Acoustic,
    /// BirdNET V2.4's embedding of 3-s windows at 48 kHz (installed by the user,
    /// CC BY-NC-SA 4.0).
    Birdnet,
    /// Log-mel patches of 5-s windows at 22 050 Hz ([`crate::spectrogram`]), the
    /// spectrogram CNN's input: the same decoding and STFT as the acoustic features,
    /// no pretrained network.
    Mel,
}

impl Backbone {
    /// Every backbone.
    pub const ALL: [Backbone; 3] = [Backbone::Acoustic, Backbone::Birdnet, Backbone::Mel];

    /// The feature version its vectors are stored and trained under.
    pub fn feature_version(self) -> &'static str {
        match self {
            Backbone::Acoustic => FEATURE_VERSION,
            Backbone::Birdnet => BIRDNET_FEATURE_VERSION,
            Backbone::Mel => MEL_FEATURE_VERSION,
        }
    }

    /// Length of its vectors.
    pub fn vector_len(self) -> usize {
        match self {
            Backbone::Acoustic => FEATURE_COUNT,
            Backbone::Birdnet => BIRDNET_VECTOR,
            Backbone::Mel => MEL_VECTOR,
        }
    }

    /// Column holding the window's linear RMS level.
    pub fn level_column(self) -> usize {
        match self {
            Backbone::Acoustic => birdsong_audio::FEATURE_NAMES
                .iter()
                .position(|n| *n == "rms_mean")
                .unwrap_or(LIBROSA_FEATURE_COUNT - 1),
            Backbone::Birdnet => BIRDNET_EMBEDDING,
            Backbone::Mel => PATCH_LEN,
        }
    }

    /// The backbone whose vectors a feature version names (older acoustic versions
    /// whose vectors are a prefix of today's included).
    pub fn of_version(version: &str) -> Option<Backbone> {
        if version == BIRDNET_FEATURE_VERSION {
            Some(Backbone::Birdnet)
        } else if version == MEL_FEATURE_VERSION {
            Some(Backbone::Mel)
        } else if version == FEATURE_VERSION
            || PREFIX_FEATURE_VERSIONS.iter().any(|(v, _)| *v == version)
        {
            Some(Backbone::Acoustic)
        } else {
            None
        }
    }

    /// The name used in requests, settings and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Backbone::Acoustic => "acoustic",
            Backbone::Birdnet => "birdnet",
            Backbone::Mel => "mel",
        }
    }

    /// Whether workers keep its window vectors in `window_features`, so that another
    /// model or a retraining on the same backbone reads them instead of decoding the
    /// recording again. Not mel patches: at 6 913 values (27 KB) per 5-s window, 20 MB
    /// per hour of audio, an archive's patches would outgrow the database, and
    /// recomputing them costs about what decoding does.
    pub fn stores_windows(self) -> bool {
        self != Backbone::Mel
    }
}

impl fmt::Display for Backbone {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Backbone {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Backbone::ALL
            .into_iter()
            .find(|b| b.name() == s)
            .ok_or_else(|| {
                let known: Vec<&str> = Backbone::ALL.iter().map(|b| b.name()).collect();
                format!("unknown backbone {s:?}; known: {}", known.join(", "))
            })
    }
}
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
    /// The band profile without its 32 per-band medians: each band's maximum, 90th
    /// percentile and standard deviation. The median is the level a band sits at for
    /// most of the window relative to its loudest moment, so it says how much of the
    /// window is calling and how loud the background is, which describes how a
    /// recording was made as much as the species (the xc3 training woodpeckers trill
    /// through whole windows; test woodpeckers that call sparsely have vireo-like
    /// medians). Cross-validation on xc3 preferred the profile without them (model
    /// README).
    BandsNoMedian,
    /// The BirdNET embedding (of the [`Backbone::Birdnet`] vector, without its level).
    Birdnet,
    /// The log-mel patch of the window (of the [`Backbone::Mel`] vector, without its
    /// level), read by the spectrogram CNN.
    Mel,
}

/// First column of the band profile in the feature vector.
const BANDS_START: usize = LIBROSA_FEATURE_COUNT;
/// The band profile's per-band medians (third block of `N_BANDS` values).
const MEDIANS: Range<usize> = BANDS_START + 2 * N_BANDS..BANDS_START + 3 * N_BANDS;

impl FeatureSet {
    /// Every set, by name.
    pub const ALL: [FeatureSet; 6] = [
        FeatureSet::Librosa,
        FeatureSet::Bands,
        FeatureSet::All,
        FeatureSet::BandsNoMedian,
        FeatureSet::Birdnet,
        FeatureSet::Mel,
    ];

    /// The backbone whose vectors the set reads columns of.
    pub fn backbone(self) -> Backbone {
        match self {
            FeatureSet::Birdnet => Backbone::Birdnet,
            FeatureSet::Mel => Backbone::Mel,
            _ => Backbone::Acoustic,
        }
    }

    /// The version of the vectors the set reads from.
    pub fn feature_version(self) -> &'static str {
        self.backbone().feature_version()
    }

    /// Length of the vectors the set reads from.
    pub fn vector_len(self) -> usize {
        self.backbone().vector_len()
    }

    /// Column of those vectors holding the window's linear level (for quiet windows).
    pub fn level_column(self) -> usize {
        self.backbone().level_column()
    }

    /// The columns read, as ranges of the feature vector in the order the network sees
    /// them.
    pub fn ranges(self) -> &'static [Range<usize>] {
        const LIBROSA: &[Range<usize>] = &[Range {
            start: 0,
            end: LIBROSA_FEATURE_COUNT,
        }];
        const BANDS: &[Range<usize>] = &[Range {
            start: BANDS_START,
            end: FEATURE_COUNT,
        }];
        const ALL: &[Range<usize>] = &[Range {
            start: 0,
            end: FEATURE_COUNT,
        }];
        const NO_MEDIAN: &[Range<usize>] =
            &[BANDS_START..MEDIANS.start, MEDIANS.end..FEATURE_COUNT];
        const BIRDNET: &[Range<usize>] = &[Range {
            start: 0,
            end: BIRDNET_EMBEDDING,
        }];
        const MEL: &[Range<usize>] = &[Range {
            start: 0,
            end: PATCH_LEN,
        }];
        match self {
            FeatureSet::Librosa => LIBROSA,
            FeatureSet::Bands => BANDS,
            FeatureSet::All => ALL,
            FeatureSet::BandsNoMedian => NO_MEDIAN,
            FeatureSet::Birdnet => BIRDNET,
            FeatureSet::Mel => MEL,
        }
    }

    /// Number of columns read (the network's input width).
    pub fn width(self) -> usize {
        self.ranges().iter().map(|r| r.len()).sum()
    }

    /// One past the last column read: feature vectors must be at least this long.
    pub fn end(self) -> usize {
        self.ranges().iter().map(|r| r.end).max().unwrap_or(0)
    }

    /// Whether the network reads column `column`.
    pub fn reads(self, column: usize) -> bool {
        self.ranges().iter().any(|r| r.contains(&column))
    }

    /// Appends the columns read from one feature vector to `out`.
    pub fn select_into(self, row: &[f32], out: &mut Vec<f32>) {
        for range in self.ranges() {
            out.extend_from_slice(&row[range.clone()]);
        }
    }

    /// The name used in configs, artifacts and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            FeatureSet::Librosa => "librosa",
            FeatureSet::Bands => "bands",
            FeatureSet::All => "all",
            FeatureSet::BandsNoMedian => "bands_no_median",
            FeatureSet::Birdnet => "birdnet",
            FeatureSet::Mel => "mel",
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
            .ok_or_else(|| {
                let known: Vec<_> = FeatureSet::ALL.iter().map(|set| set.name()).collect();
                format!("unknown feature set {s:?}; known: {}", known.join(", "))
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use birdsong_audio::FEATURE_NAMES;

    #[test]
    fn sets_cover_the_vector_and_round_trip_by_name() {
        assert!(matches!(FeatureSet::Librosa.ranges(), [r] if *r == (0..95)));
        assert!(matches!(FeatureSet::Bands.ranges(), [r] if *r == (95..FEATURE_COUNT)));
        assert_eq!(
            FeatureSet::Bands.width() + FeatureSet::Librosa.width(),
            FeatureSet::All.width()
        );
        for set in FeatureSet::ALL {
            assert_eq!(set.name().parse::<FeatureSet>(), Ok(set));
            let json = serde_json::to_string(&set).unwrap();
            assert_eq!(json, format!("\"{}\"", set.name()));
            assert!(set.end() <= set.vector_len(), "{set}");
            assert!(set.level_column() < set.vector_len(), "{set}");
            assert_eq!(
                Backbone::of_version(set.backbone().feature_version()),
                Some(set.backbone())
            );
        }
        let err = "mfcc".parse::<FeatureSet>().unwrap_err();
        assert!(err.contains("bands_no_median"), "{err}");
    }

    #[test]
    fn bands_without_medians_read_every_band_column_but_the_medians() {
        let set = FeatureSet::BandsNoMedian;
        assert_eq!(set.width(), 3 * N_BANDS);
        for (column, name) in FEATURE_NAMES.iter().enumerate() {
            // Band-profile names are `bandNN_stat` (librosa's `bandwidth_*` are not).
            let band = name
                .strip_prefix("band")
                .is_some_and(|rest| rest.starts_with(|c: char| c.is_ascii_digit()));
            assert_eq!(
                set.reads(column),
                band && !name.ends_with("_median"),
                "{name}"
            );
        }
        let row: Vec<f32> = (0..FEATURE_COUNT).map(|i| i as f32).collect();
        let mut out = Vec::new();
        set.select_into(&row, &mut out);
        let expected: Vec<f32> = (0..FEATURE_COUNT)
            .filter(|&i| set.reads(i))
            .map(|i| i as f32)
            .collect();
        assert_eq!(out, expected);
    }
}
