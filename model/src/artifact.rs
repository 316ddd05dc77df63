//! The model artifact: one directory with the weights and a `model.json` describing them.
//!
//! ```text
//! <dir>/
//!   weights.bpk   burn record (burnpack) of the network's parameters (of every
//!                 member's, for an ensemble)
//!   model.json    format version, architecture and its config, class list, scaler,
//!                 feature-extractor version, input size, training data summary,
//!                 training config and history, metrics, creation time, and the
//!                 SHA-256 of weights.bpk
//! ```
//!
//! The worker downloads the same two files from `models/<version>/` and builds the artifact
//! from memory with [`Artifact::from_files`]. Loading refuses, with a typed error, an
//! artifact whose format version, feature-extractor version or input size differs from
//! what the loader expects, or whose weights do not match their recorded checksum: a model
//! fed features it was not trained on would not fail, it would quietly classify wrong.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::config::{EpochReport, TrainConfig};
use crate::dataset::DataSummary;
use crate::familiarity::Familiarity;
use crate::features::{FEATURE_VERSION, FeatureSet, PREFIX_FEATURE_VERSIONS};
use crate::network::{CNN, NetworkConfig};
use crate::refit::Refit;
use crate::report::{Evaluation, Thresholds};
use crate::scaler::Scaler;
use crate::spectrogram::MelInput;
use crate::{ModelError, Result};

/// Newest artifact layout, bumped on any change an older loader cannot read. Version 2
/// added ensembles (`network.members` above 1, and a weights record holding every
/// member); an artifact of one network is still written as version 1, which builds from
/// before ensembles read, and an ensemble as version 2, which they refuse by its version
/// instead of misreading its weights.
pub const FORMAT_VERSION: u32 = 2;
/// Layout of an artifact holding a single network.
const SINGLE_NETWORK_FORMAT_VERSION: u32 = 1;
/// Name of the metadata file.
pub const META_FILE: &str = "model.json";
/// Name of the weights file.
pub const WEIGHTS_FILE: &str = "weights.bpk";
/// Every file of an artifact, in upload order: weights first, so that a reader who finds
/// `model.json` finds complete weights too.
pub const FILE_NAMES: [&str; 2] = [WEIGHTS_FILE, META_FILE];

/// Contents of `model.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ArtifactMeta {
    /// Artifact layout version (1 for one network, [`FORMAT_VERSION`] for an ensemble).
    pub format_version: u32,
    /// Version assigned by the publisher (the retrainer), if any.
    pub version: Option<String>,
    /// Architecture name; the same as `network.architecture`.
    pub architecture: String,
    /// Shape of the network.
    pub network: NetworkConfig,
    /// Class labels in output order.
    pub classes: Vec<String>,
    /// Input standardisation fitted on the training windows.
    pub scaler: Scaler,
    /// Version of the feature extractor the model was trained on.
    pub feature_version: String,
    /// Features per window the extractor produced (the vector the model is fed).
    pub input_size: usize,
    /// The columns of each vector the network reads (`network.input_size` of them).
    /// Artifacts written before feature sets existed read the librosa features.
    #[serde(default = "FeatureSet::legacy")]
    pub features: FeatureSet,
    /// Hyper-parameters of the training run.
    pub training: TrainConfig,
    /// What the model was trained on.
    pub training_data: DataSummary,
    /// What the model was validated on during training, if anything.
    pub validation_data: Option<DataSummary>,
    /// Loss and validation figures per epoch.
    pub history: Vec<EpochReport>,
    /// Evaluations by set name (`"validation"`, `"test"`, ...).
    pub metrics: BTreeMap<String, Evaluation>,
    /// Creation time, RFC 3339 UTC.
    pub created_at: String,
    /// SHA-256 (hex) of the weights file.
    pub weights_sha256: String,
    /// Per-species detection thresholds chosen on held-out recordings; a model
    /// without them detects at [`crate::report::DEFAULT_THRESHOLD`].
    #[serde(default)]
    pub thresholds: Option<Thresholds>,
    /// Where the weights come from when they were not trained here (e.g. BirdNET's
    /// species layer restricted to a list); `None` for a trained model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// How a spectrogram model's input is computed from audio (every parameter of its
    /// mel patches), so a reader can rebuild it; `None` for models on feature vectors.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input: Option<MelInput>,
    /// For a model refit on its held-out recordings: how it relates to the
    /// judged model whose `thresholds` and `metrics` it carries (see
    /// [`crate::refit`]); `None` for a model that is its own judge.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refit: Option<Refit>,
    /// For a spectrogram CNN: each species' reference calls in the network's
    /// embedding and how far from them its scores still count
    /// ([`crate::familiarity`]); `None` for models that serve their scores as they are.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub familiarity: Option<Familiarity>,
}

/// Only the field every format version has, and names a newer build may add to, read
/// first so that a future layout or feature set is refused as such rather than as
/// malformed JSON.
#[derive(Deserialize)]
struct FormatProbe {
    format_version: u32,
    #[serde(default)]
    features: Option<String>,
}

impl ArtifactMeta {
    /// Metadata for freshly trained weights (checksum filled in by [`Artifact::new`]).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        network: NetworkConfig,
        training: TrainConfig,
        classes: Vec<String>,
        scaler: Scaler,
        feature_version: String,
        training_data: DataSummary,
        validation_data: Option<DataSummary>,
        history: Vec<EpochReport>,
    ) -> Self {
        Self {
            format_version: if network.members > 1 {
                FORMAT_VERSION
            } else {
                SINGLE_NETWORK_FORMAT_VERSION
            },
            version: None,
            architecture: network.architecture.clone(),
            input_size: training.features.vector_len(),
            input: (training.features == FeatureSet::Mel).then(MelInput::current),
            features: training.features,
            network,
            classes,
            scaler,
            feature_version,
            training,
            training_data,
            validation_data,
            history,
            metrics: BTreeMap::new(),
            created_at: rfc3339_now(),
            weights_sha256: String::new(),
            thresholds: None,
            source: None,
            refit: None,
            familiarity: None,
        }
    }

    /// Checks internal consistency (also of a `model.json` written by someone else).
    fn validate(&self) -> Result<()> {
        self.network.validate()?;
        if self.network.members > 1 && self.format_version < FORMAT_VERSION {
            return Err(ModelError::IncompatibleArtifact(format!(
                "an ensemble of {} networks in a format version {} artifact, which holds one",
                self.network.members, self.format_version
            )));
        }
        let features = self.features;
        let mel = features == FeatureSet::Mel;
        if (self.architecture == CNN) != mel {
            return Err(ModelError::IncompatibleArtifact(format!(
                "architecture {:?} on feature set {features}: the cnn reads mel patches, \
                 and only it does",
                self.architecture
            )));
        }
        if mel && self.input.as_ref() != Some(&MelInput::current()) {
            return Err(ModelError::IncompatibleArtifact(format!(
                "mel input {:?} is not the one this build computes ({:?})",
                self.input,
                MelInput::current()
            )));
        }
        if self.architecture != self.network.architecture
            || features.width() != self.network.input_size
            || features.end() > self.input_size
            || self.classes.len() != self.network.num_classes
        {
            return Err(ModelError::IncompatibleArtifact(format!(
                "metadata disagrees with itself: architecture {:?}/{:?}, feature set {} ({} columns) of {} features for {} inputs, {} classes for {} outputs",
                self.architecture,
                self.network.architecture,
                self.features,
                features.width(),
                self.input_size,
                self.network.input_size,
                self.classes.len(),
                self.network.num_classes
            )));
        }
        if let Some(f) = &self.familiarity
            && (self.architecture != CNN || f.species.len() != self.classes.len())
        {
            return Err(ModelError::IncompatibleArtifact(format!(
                "familiarity of {} species on a {} model of {} classes: only a cnn has \
                 the embedding it needs, with one entry per class",
                f.species.len(),
                self.architecture,
                self.classes.len()
            )));
        }
        self.scaler.validate(self.network.input_size)
    }
}

/// A model's weights and metadata, in memory.
#[derive(Debug, Clone, PartialEq)]
pub struct Artifact {
    meta: ArtifactMeta,
    weights: Vec<u8>,
    /// Length of the vectors the loader feeds: `meta.input_size`, or longer when the
    /// artifact was trained on a prefix of today's features.
    input_size: usize,
}

impl Artifact {
    /// Pairs metadata with weights, recording the weights' checksum.
    pub(crate) fn new(mut meta: ArtifactMeta, weights: Vec<u8>) -> Result<Self> {
        meta.weights_sha256 = sha256_hex(&weights);
        meta.validate()?;
        let input_size = meta.input_size;
        Ok(Self {
            meta,
            weights,
            input_size,
        })
    }

    /// The metadata (what `model.json` holds).
    pub fn meta(&self) -> &ArtifactMeta {
        &self.meta
    }

    /// Features per window a classifier built from this artifact expects from its caller.
    pub fn input_size(&self) -> usize {
        self.input_size
    }

    /// The weights file's bytes.
    pub fn weights(&self) -> &[u8] {
        &self.weights
    }

    /// Sets the version the publisher assigns (e.g. the retrainer's version string).
    pub fn set_version(&mut self, version: impl Into<String>) {
        self.meta.version = Some(version.into());
    }

    /// Sets the per-species detection thresholds (chosen on held-out recordings with
    /// [`crate::detection::calibrate`]); every role that loads the artifact detects
    /// with them.
    pub fn set_thresholds(&mut self, thresholds: Thresholds) {
        self.meta.thresholds = Some(thresholds);
    }

    /// Sets how familiar windows must look for their scores to count (fitted on the
    /// training windows by [`crate::train_cnn`]).
    pub(crate) fn set_familiarity(&mut self, familiarity: Option<Familiarity>) {
        self.meta.familiarity = familiarity;
    }

    /// Stores an evaluation under `set` (e.g. `"test"`), replacing one of the same name.
    pub fn set_metrics(&mut self, set: impl Into<String>, evaluation: Evaluation) {
        self.meta.metrics.insert(set.into(), evaluation);
    }

    /// Makes this refit model carry the judged model's thresholds, evaluations
    /// and validation summary (see [`crate::refit::carry_over`]).
    pub(crate) fn set_refit(
        &mut self,
        refit: Refit,
        thresholds: Option<Thresholds>,
        metrics: BTreeMap<String, Evaluation>,
        validation_data: Option<DataSummary>,
    ) {
        self.meta.refit = Some(refit);
        self.meta.thresholds = thresholds;
        self.meta.metrics = metrics;
        self.meta.validation_data = validation_data;
    }

    /// Records the checksum of the judged model's `model.json` stored beside
    /// this refit model, so a reader can verify it, or `None` where it is not
    /// stored; no-op for a model that was not refit.
    pub fn set_judged_meta_sha256(&mut self, sha256: Option<String>) {
        if let Some(refit) = &mut self.meta.refit {
            refit.judged_meta_sha256 = sha256;
        }
    }

    /// The artifact's files as (name, bytes), in [`FILE_NAMES`] order, ready to upload.
    pub fn to_files(&self) -> Result<Vec<(&'static str, Vec<u8>)>> {
        let meta = serde_json::to_vec_pretty(&self.meta)?;
        Ok(vec![
            (WEIGHTS_FILE, self.weights.clone()),
            (META_FILE, meta),
        ])
    }

    /// Writes the artifact into `dir` (created if missing). Weights go first, then
    /// `model.json`, each through a temporary file and a rename, so a reader never sees a
    /// half-written file.
    pub fn save_dir(&self, dir: &Path) -> Result<()> {
        std::fs::create_dir_all(dir).map_err(|source| ModelError::Io {
            path: dir.to_path_buf(),
            source,
        })?;
        for (name, bytes) in self.to_files()? {
            let path = dir.join(name);
            let tmp = dir.join(format!(".{name}.tmp"));
            std::fs::write(&tmp, &bytes)
                .and_then(|()| std::fs::rename(&tmp, &path))
                .map_err(|source| ModelError::Io { path, source })?;
        }
        Ok(())
    }

    /// Reads and validates the artifact in `dir` for whichever backbone it was trained
    /// on; see [`from_files_any_backbone`](Self::from_files_any_backbone).
    pub fn load_dir_any_backbone(dir: &Path) -> Result<Self> {
        let read = |name: &str| {
            let path = dir.join(name);
            std::fs::read(&path).map_err(|source| ModelError::Io { path, source })
        };
        let meta = read(META_FILE)?;
        let weights = read(WEIGHTS_FILE)?;
        Self::from_files_any_backbone(&weights, &meta)
    }

    /// Builds and validates an artifact of any [`Backbone`](crate::Backbone) this build
    /// knows: the backbone comes from the artifact's feature set, and the feature
    /// version and input size must be that backbone's (see
    /// [`from_files`](Self::from_files)). The caller must feed it that backbone's
    /// vectors: check `meta().features.backbone()` before classifying.
    pub fn from_files_any_backbone(weights: &[u8], meta_json: &[u8]) -> Result<Self> {
        let backbone = probe_features(meta_json)?.backbone();
        Self::from_files(
            weights,
            meta_json,
            backbone.feature_version(),
            backbone.vector_len(),
        )
    }

    /// Reads and validates the artifact in `dir`; see [`from_files`](Self::from_files).
    pub fn load_dir(dir: &Path, feature_version: &str, input_size: usize) -> Result<Self> {
        let read = |name: &str| {
            let path = dir.join(name);
            std::fs::read(&path).map_err(|source| ModelError::Io { path, source })
        };
        let meta = read(META_FILE)?;
        let weights = read(WEIGHTS_FILE)?;
        Self::from_files(&weights, &meta, feature_version, input_size)
    }

    /// Builds and validates an artifact from the contents of its two files.
    ///
    /// Refuses with [`ModelError::IncompatibleArtifact`] a different format version, a
    /// feature version other than `feature_version`, an input size other than
    /// `input_size`, an unknown architecture or inconsistent metadata; with
    /// [`ModelError::ChecksumMismatch`] weights that are not the ones `model.json`
    /// describes. Pass the audio crate's `FEATURE_VERSION` and `FEATURE_COUNT`. An
    /// artifact of an older feature version whose vectors are a prefix of today's
    /// (`PREFIX_FEATURE_VERSIONS`) is accepted and reads that prefix.
    pub fn from_files(
        weights: &[u8],
        meta_json: &[u8],
        feature_version: &str,
        input_size: usize,
    ) -> Result<Self> {
        let probe: FormatProbe = serde_json::from_slice(meta_json)?;
        if !(SINGLE_NETWORK_FORMAT_VERSION..=FORMAT_VERSION).contains(&probe.format_version) {
            return Err(ModelError::IncompatibleArtifact(format!(
                "artifact format version {} is not one this build reads \
                 ({SINGLE_NETWORK_FORMAT_VERSION} to {FORMAT_VERSION})",
                probe.format_version
            )));
        }
        if let Some(features) = probe.features
            && let Err(unknown) = features.parse::<FeatureSet>()
        {
            return Err(ModelError::IncompatibleArtifact(format!(
                "{unknown} (the artifact was made by a newer build?)"
            )));
        }
        let meta: ArtifactMeta = serde_json::from_slice(meta_json)?;
        // Vectors of an older version that are a prefix of today's still fit.
        let prefix = feature_version == FEATURE_VERSION
            && PREFIX_FEATURE_VERSIONS.iter().any(|&(v, n)| {
                v == meta.feature_version && n == meta.input_size && n <= input_size
            });
        if meta.feature_version != feature_version && !prefix {
            return Err(ModelError::IncompatibleArtifact(format!(
                "model was trained on features version {:?}, this build computes {feature_version:?}",
                meta.feature_version
            )));
        }
        if meta.input_size != input_size && !prefix {
            return Err(ModelError::IncompatibleArtifact(format!(
                "model expects {} features per window, this build computes {input_size}",
                meta.input_size
            )));
        }
        meta.validate()?;
        let actual = sha256_hex(weights);
        if actual != meta.weights_sha256 {
            return Err(ModelError::ChecksumMismatch {
                expected: meta.weights_sha256,
                actual,
            });
        }
        Ok(Self {
            meta,
            weights: weights.to_vec(),
            input_size,
        })
    }
}

/// The feature set a `model.json` names (the legacy one when it names none).
fn probe_features(meta_json: &[u8]) -> Result<FeatureSet> {
    let probe: FormatProbe = serde_json::from_slice(meta_json)?;
    match probe.features {
        None => Ok(FeatureSet::legacy()),
        Some(name) => name.parse::<FeatureSet>().map_err(|unknown| {
            ModelError::IncompatibleArtifact(format!(
                "{unknown} (the artifact was made by a newer build?)"
            ))
        }),
    }
}

/// Lower-case hex SHA-256, the form every checksum of an artifact's files is
/// recorded in (weights in `model.json`, a judged model's `model.json` in
/// [`Refit`]).
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// The current time as RFC 3339 UTC, without a date library.
fn rfc3339_now() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    rfc3339(secs)
}

/// Formats seconds since the Unix epoch as `YYYY-MM-DDTHH:MM:SSZ` (Howard Hinnant's
/// days-to-civil algorithm).
fn rfc3339(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_dates() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_700_000_000), "2023-11-14T22:13:20Z");
    }
}
