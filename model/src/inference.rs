//! Running a trained model: batched window probabilities, top-k and per-recording summaries.
//!
//! A [`Classifier`] is immutable and `Send + Sync`, so a worker keeps one behind an
//! `Arc` (or `arc-swap`) and calls it from any number of blocking threads; a model reload
//! swaps the whole value and in-flight calls finish on the one they started with.

use burn::tensor::{Device, Tensor, TensorData};
use serde::{Deserialize, Serialize};

use crate::artifact::Artifact;
use crate::cnn::CnnEnsemble;
use crate::cnn_inference::CnnInference;
use crate::familiarity::{Familiarity, Gate};
use crate::features::{FeatureSet, FeatureVector};
use crate::metrics::argmax;
use crate::network::{CNN, Ensemble, NetworkConfig, Output};
use crate::report::DEFAULT_THRESHOLD;
use crate::scaler::Scaler;
use crate::{ModelError, Result};

/// Windows per forward pass: large enough to amortise per-call overhead, small enough to
/// bound memory (4096 × 512 activations ≈ 8 MB).
const MAX_BATCH: usize = 4096;
/// Windows per forward pass of a spectrogram CNN, whose activations are about 0.7 MB
/// per window (the first block's): 64 windows stay under 50 MB.
const MAX_CNN_BATCH: usize = 64;

/// The networks of a model: dense networks on feature vectors, or spectrogram CNNs.
#[derive(Debug)]
pub(crate) enum Networks {
    /// `mlp`, `linear`, `shallow`, `anchored`.
    Dense(Ensemble),
    /// `cnn`, served by its own forward pass ([`CnnInference`]).
    Cnn(CnnInference),
}

impl From<Ensemble> for Networks {
    fn from(e: Ensemble) -> Self {
        Networks::Dense(e)
    }
}

impl Networks {
    /// A CNN ensemble of the shape `config` describes, ready to serve.
    pub(crate) fn cnn(ensemble: CnnEnsemble, config: &NetworkConfig) -> Result<Self> {
        Ok(Networks::Cnn(CnnInference::new(&ensemble, config)?))
    }

    /// The networks `config` describes, from their weights file.
    pub(crate) fn from_bytes(
        config: &NetworkConfig,
        bytes: &[u8],
        device: &Device,
    ) -> Result<Self> {
        if config.architecture == CNN {
            Self::cnn(CnnEnsemble::from_bytes(config, bytes, device)?, config)
        } else {
            Ok(Networks::Dense(Ensemble::from_bytes(
                config, bytes, device,
            )?))
        }
    }

    /// Averaged scores of `rows` network inputs of `width` values each, `k` per row,
    /// through `gate` where there is one (a CNN's only).
    fn probabilities(
        &self,
        data: &[f32],
        rows: usize,
        width: usize,
        output: Output,
        device: &Device,
        gate: Option<&Gate>,
    ) -> Result<Vec<f32>> {
        match self {
            Networks::Dense(e) => {
                let x =
                    Tensor::<2>::from_data(TensorData::new(data.to_vec(), [rows, width]), device);
                e.probabilities(x, output)
                    .into_data()
                    .try_into_vec::<f32>()
                    .map_err(|e| ModelError::Backend(format!("{e:?}")))
            }
            Networks::Cnn(c) => match gate {
                Some(gate) => {
                    let mut embeddings = Vec::with_capacity(rows * c.embedding_width());
                    let mut scores = c.scores(data, output, Some(&mut embeddings))?;
                    gate.apply(&mut scores, &embeddings)?;
                    Ok(scores)
                }
                None => c.probabilities(data, output),
            },
        }
    }

    /// Windows per forward pass.
    fn max_batch(&self) -> usize {
        match self {
            Networks::Dense(_) => MAX_BATCH,
            Networks::Cnn(_) => MAX_CNN_BATCH,
        }
    }
}

/// The gate `familiarity` describes for `network` of `classes` classes; refused for
/// networks without an embedding, or whose embedding or classes it does not fit.
fn gate_for(
    familiarity: Option<&Familiarity>,
    network: &Networks,
    classes: usize,
    architecture: &str,
) -> Result<Option<Gate>> {
    match (familiarity, network) {
        (None, _) => Ok(None),
        (Some(f), Networks::Cnn(cnn)) => Gate::new(f, classes, cnn.embedding_width()).map(Some),
        (Some(_), Networks::Dense(_)) => Err(ModelError::IncompatibleArtifact(format!(
            "familiarity on a {architecture} model, which has no embedding"
        ))),
    }
}

/// A species and its probability.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Prediction {
    /// Class label.
    pub species: String,
    /// Probability in [0, 1].
    pub probability: f32,
}

/// A species whose score in one window reached its threshold.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Detected {
    pub species: String,
    /// Its score, in [0, 1].
    pub probability: f32,
    /// The threshold it reached (the species' own).
    pub threshold: f32,
}

/// A species detected in a recording: in how many windows, and how surely.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Presence {
    pub species: String,
    /// Windows in which its score reached its threshold.
    pub windows: usize,
    /// Its highest window score.
    pub max_score: f32,
}

/// The verdict on a whole recording.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecordingSummary {
    /// Windows summarised.
    pub windows: usize,
    /// Mean score of each class over the windows, in [`Classifier::classes`] order.
    pub probabilities: Vec<f32>,
    /// The `k` classes with the highest mean score, highest first: the best guess at
    /// *which* species a recording is, if it is one of them.
    pub top: Vec<Prediction>,
    /// Species detected in at least one window, most windows first: empty when no
    /// window reached any threshold ("no detection").
    pub detected: Vec<Presence>,
}

/// Predictions for one window.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WindowPrediction {
    /// Score of each class, in [`Classifier::classes`] order.
    pub probabilities: Vec<f32>,
    /// The `k` highest-scoring classes, highest first, detected or not.
    pub top: Vec<Prediction>,
    /// Classes whose score reached their threshold, highest first; empty for "no
    /// detection".
    pub detections: Vec<Detected>,
}

/// Predictions for one recording: each window's, and the recording's summary.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecordingPrediction {
    /// One entry per input window, in input order.
    pub windows: Vec<WindowPrediction>,
    /// Mean over the windows; `None` for a recording without windows.
    pub summary: Option<RecordingSummary>,
}

/// What a loaded model is, for logs, result rows and health endpoints.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelInfo {
    /// Architecture name (e.g. `"mlp"`).
    pub architecture: String,
    /// Version of the feature extractor the model expects.
    pub feature_version: String,
    /// Features per window the model expects from its caller (the whole vector; the
    /// network reads `features` of it).
    pub input_size: usize,
    /// The columns of each window the network reads.
    pub features: FeatureSet,
    /// Model version assigned by whoever published it (the retrainer), if any.
    pub version: Option<String>,
    /// SHA-256 of the weights file, identifying the exact weights.
    pub weights_sha256: String,
    /// How the network's outputs become scores.
    #[serde(default = "Output::legacy")]
    pub output: Output,
    /// Neighbouring windows each side averaged into a window's served scores
    /// ([`crate::TrainConfig::context_windows`]); 0 for a model that scores windows alone.
    #[serde(default)]
    pub context_windows: usize,
}

/// A trained network with its scaler and class list, ready to classify windows.
#[derive(Debug)]
pub struct Classifier {
    network: Networks,
    device: Device,
    scaler: Scaler,
    classes: Vec<String>,
    info: ModelInfo,
    thresholds: Vec<f32>,
    /// Lowers the scores of windows unlike a species' training calls.
    gate: Option<Gate>,
}

// Workers share one classifier across threads; keep that a compile-time guarantee.
const _: fn() = || {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Classifier>();
};

impl Classifier {
    /// Assembles a classifier from parts that are already consistent (used by training).
    pub(crate) fn from_parts(
        network: impl Into<Networks>,
        device: Device,
        scaler: Scaler,
        classes: Vec<String>,
        info: ModelInfo,
    ) -> Self {
        let thresholds = vec![DEFAULT_THRESHOLD; classes.len()];
        Self {
            network: network.into(),
            device,
            scaler,
            classes,
            info,
            thresholds,
            gate: None,
        }
    }

    /// Builds the classifier an artifact describes, on the default CPU device.
    pub fn from_artifact(artifact: &Artifact) -> Result<Self> {
        Self::from_artifact_on(artifact, &crate::device::cpu())
    }

    /// Builds the classifier an artifact describes, on `device` (a GPU, once enabled).
    ///
    /// Fails if the weights do not fit the network the metadata describes.
    pub fn from_artifact_on(artifact: &Artifact, device: &Device) -> Result<Self> {
        let meta = artifact.meta();
        let network = Networks::from_bytes(&meta.network, artifact.weights(), device)?;
        let thresholds = match &meta.thresholds {
            Some(t) if t.values.len() == meta.classes.len() => t.values.clone(),
            Some(t) => {
                return Err(ModelError::IncompatibleArtifact(format!(
                    "{} thresholds for {} classes",
                    t.values.len(),
                    meta.classes.len()
                )));
            }
            None => vec![DEFAULT_THRESHOLD; meta.classes.len()],
        };
        let gate = gate_for(
            meta.familiarity.as_ref(),
            &network,
            meta.classes.len(),
            &meta.architecture,
        )?;
        Ok(Self {
            thresholds,
            gate,
            network,
            device: device.clone(),
            scaler: meta.scaler.clone(),
            classes: meta.classes.clone(),
            info: ModelInfo {
                architecture: meta.architecture.clone(),
                feature_version: meta.feature_version.clone(),
                input_size: artifact.input_size(),
                features: meta.features,
                version: meta.version.clone(),
                weights_sha256: meta.weights_sha256.clone(),
                output: meta.network.output,
                context_windows: meta.training.context_windows,
            },
        })
    }

    /// Each class's detection threshold, in [`classes`](Self::classes) order: the
    /// artifact's calibrated ones, or [`DEFAULT_THRESHOLD`] for a model without.
    pub fn thresholds(&self) -> &[f32] {
        &self.thresholds
    }

    /// The same classifier deciding with other thresholds (one per class).
    pub fn with_thresholds(mut self, thresholds: Vec<f32>) -> Result<Self> {
        if thresholds.len() != self.classes.len() {
            return Err(ModelError::InvalidConfig(format!(
                "{} thresholds for {} classes",
                thresholds.len(),
                self.classes.len()
            )));
        }
        self.thresholds = thresholds;
        Ok(self)
    }

    /// The same classifier with its scores gated by `familiarity` (none: served as
    /// the network gives them); only a CNN has the embedding it needs.
    pub(crate) fn with_familiarity(mut self, familiarity: Option<&Familiarity>) -> Result<Self> {
        self.gate = gate_for(
            familiarity,
            &self.network,
            self.classes.len(),
            &self.info.architecture,
        )?;
        Ok(self)
    }

    /// Whether scores of windows unlike a species' training calls are lowered below
    /// every threshold ([`crate::familiarity`]).
    pub fn gates_unfamiliar(&self) -> bool {
        self.gate.is_some()
    }

    /// The classes of one score vector that reach their thresholds, highest first.
    pub fn detections(&self, probabilities: &[f32]) -> Vec<Detected> {
        let mut found: Vec<Detected> = probabilities
            .iter()
            .zip(&self.thresholds)
            .zip(&self.classes)
            .filter(|((p, t), _)| *p >= *t)
            .map(|((p, t), c)| Detected {
                species: c.clone(),
                probability: *p,
                threshold: *t,
            })
            .collect();
        found.sort_by(|a, b| b.probability.total_cmp(&a.probability));
        found
    }

    /// The class labels, in the order of every probability vector this classifier returns.
    pub fn classes(&self) -> &[String] {
        &self.classes
    }

    /// Architecture, feature version, input size and version of the model.
    pub fn info(&self) -> &ModelInfo {
        &self.info
    }

    /// The scores this model serves for the windows of each recording (each recording's
    /// windows in time order), as one list of rows in the same order: the network's
    /// scores ([`predict`](Self::predict), all recordings in as few forward passes as
    /// possible), then each window's averaged with its
    /// [`context_windows`](ModelInfo::context_windows) neighbours each side within its own
    /// recording. Everything that turns windows of a recording into detections calls
    /// this, so that thresholds, evaluations and the worker's results see the same
    /// scores.
    pub fn score_recordings(&self, recordings: &[&[FeatureVector]]) -> Result<Vec<Vec<f32>>> {
        let all: Vec<f32> = recordings
            .iter()
            .flat_map(|r| r.iter().flat_map(|w| w.iter().copied()))
            .collect();
        let width = recordings
            .iter()
            .find_map(|r| r.first())
            .map_or(0, |w| w.len());
        let mut scores = self.predict_rows(all, width)?;
        let mut start = 0;
        for r in recordings {
            let end = start + r.len();
            if let Some(rows) = scores.get_mut(start..end) {
                with_context(rows, self.info.context_windows);
            }
            start = end;
        }
        Ok(scores)
    }

    /// Class probabilities of each window (rows sum to 1), in [`classes`](Self::classes)
    /// order. All windows go through the network in as few forward passes as possible, so
    /// pass the windows of many files at once. Each window is scored alone: for the
    /// scores a model serves for a recording, see [`score_recordings`](Self::score_recordings).
    pub fn predict(&self, windows: &[FeatureVector]) -> Result<Vec<Vec<f32>>> {
        let flat: Vec<f32> = windows.iter().flat_map(|w| w.iter().copied()).collect();
        self.predict_rows(flat, windows.first().map_or(0, |w| w.len()))
    }

    /// Like [`predict`](Self::predict), for row-major `data` of `width` features per row.
    pub fn predict_rows(&self, data: Vec<f32>, width: usize) -> Result<Vec<Vec<f32>>> {
        if data.is_empty() {
            return Ok(Vec::new());
        }
        let (data, width) = self.network_input(data, width)?;
        let k = self.classes.len();
        let mut out = Vec::with_capacity(data.len() / width);
        for chunk in data.chunks(self.network.max_batch() * width) {
            let rows = chunk.len() / width;
            let probs = self.network.probabilities(
                chunk,
                rows,
                width,
                self.info.output,
                &self.device,
                self.gate.as_ref(),
            )?;
            out.extend(probs.chunks_exact(k).map(<[f32]>::to_vec));
        }
        Ok(out)
    }

    /// Each window's embedding: what the network's output layer reads (for a `cnn`,
    /// its pooled features, every member's side by side). Species the model learnt
    /// sit in their own regions of this space and unfamiliar sounds away from them,
    /// which scores alone cannot show; exported for clustering, similarity search and
    /// judging how familiar a window is. Only spectrogram CNNs have one here (a model
    /// on BirdNET's backbone reads its embedding as input).
    pub fn embed(&self, windows: &[FeatureVector]) -> Result<Vec<Vec<f32>>> {
        let (_, embeddings, width) = self.network_scores_and_embeddings(windows)?;
        Ok(embeddings
            .chunks_exact(width.max(1))
            .map(<[f32]>::to_vec)
            .collect())
    }

    /// Each window's scores as the network gives them (alone, ungated), `classes`
    /// per window, its embedding, and the embedding's width, from one pass.
    pub(crate) fn network_scores_and_embeddings(
        &self,
        windows: &[FeatureVector],
    ) -> Result<(Vec<f32>, Vec<f32>, usize)> {
        let Networks::Cnn(cnn) = &self.network else {
            return Err(ModelError::InvalidConfig(format!(
                "a {} model has no embedding to export; only a cnn has",
                self.info.architecture
            )));
        };
        let embedding_width = cnn.embedding_width();
        let Some(width) = windows.first().map(|w| w.len()) else {
            return Ok((Vec::new(), Vec::new(), embedding_width));
        };
        let flat: Vec<f32> = windows.iter().flat_map(|w| w.iter().copied()).collect();
        let (data, width) = self.network_input(flat, width)?;
        let mut scores = Vec::with_capacity(data.len() / width * self.classes.len());
        let mut embeddings = Vec::with_capacity(data.len() / width * embedding_width);
        for chunk in data.chunks(MAX_CNN_BATCH * width) {
            scores.extend(cnn.scores(chunk, self.info.output, Some(&mut embeddings))?);
        }
        Ok((scores, embeddings, embedding_width))
    }

    /// `data` as the network reads it: the columns it was trained on, standardised.
    fn network_input(&self, data: Vec<f32>, width: usize) -> Result<(Vec<f32>, usize)> {
        let expected = self.info.input_size;
        if width != expected || !data.len().is_multiple_of(expected) {
            return Err(ModelError::InputSize {
                expected,
                actual: width,
            });
        }
        let features = self.info.features;
        let mut data = if matches!(features.ranges(), [all] if *all == (0..width)) {
            data
        } else {
            let mut selected = Vec::with_capacity(data.len() / width * features.width());
            for row in data.chunks_exact(width) {
                features.select_into(row, &mut selected);
            }
            selected
        };
        self.scaler.transform_in_place(&mut data);
        Ok((data, features.width()))
    }

    /// The `k` most probable classes of one probability vector, most probable first.
    pub fn top_k(&self, probabilities: &[f32], k: usize) -> Vec<Prediction> {
        let mut order: Vec<usize> = (0..probabilities.len().min(self.classes.len())).collect();
        order.sort_by(|&a, &b| {
            probabilities[b]
                .total_cmp(&probabilities[a])
                .then(a.cmp(&b))
        });
        order
            .into_iter()
            .take(k)
            .map(|i| Prediction {
                species: self.classes[i].clone(),
                probability: probabilities[i],
            })
            .collect()
    }

    /// Summarises one recording from its windows' probabilities: the mean probability of
    /// each class (which weighs every window equally and, unlike a vote, keeps how sure
    /// each window was). `None` when there are no windows.
    pub fn summarize(
        &self,
        window_probabilities: &[Vec<f32>],
        k: usize,
    ) -> Option<RecordingSummary> {
        let probabilities = mean_probabilities(window_probabilities, self.classes.len())?;
        let mut detected: Vec<Presence> = Vec::new();
        for (c, species) in self.classes.iter().enumerate() {
            let scores = window_probabilities.iter().map(|w| w[c]);
            let windows = scores.clone().filter(|s| *s >= self.thresholds[c]).count();
            if windows > 0 {
                detected.push(Presence {
                    species: species.clone(),
                    windows,
                    max_score: scores.fold(0f32, f32::max),
                });
            }
        }
        detected.sort_by(|a, b| {
            b.windows
                .cmp(&a.windows)
                .then(b.max_score.total_cmp(&a.max_score))
        });
        Some(RecordingSummary {
            windows: window_probabilities.len(),
            top: self.top_k(&probabilities, k),
            probabilities,
            detected,
        })
    }

    /// Classifies several recordings at once: all their windows go through the network
    /// together (what a worker holding a batch of files wants), and come back split per
    /// recording with top-`k` species per window and a per-recording summary.
    pub fn classify_recordings(
        &self,
        recordings: &[&[FeatureVector]],
        k: usize,
    ) -> Result<Vec<RecordingPrediction>> {
        let mut probabilities = self.score_recordings(recordings)?.into_iter();
        Ok(recordings
            .iter()
            .map(|r| {
                let probs: Vec<Vec<f32>> = probabilities.by_ref().take(r.len()).collect();
                RecordingPrediction {
                    summary: self.summarize(&probs, k),
                    windows: probs
                        .into_iter()
                        .map(|p| WindowPrediction {
                            top: self.top_k(&p, k),
                            detections: self.detections(&p),
                            probabilities: p,
                        })
                        .collect(),
                }
            })
            .collect())
    }

    /// Index of the most probable class of a probability vector.
    pub fn best(&self, probabilities: &[f32]) -> Option<usize> {
        argmax(probabilities)
    }
}

/// Replaces each row of one recording's scores (in time order) by the mean of itself
/// and up to `k` rows on each side; rows near the ends average the neighbours they
/// have. `k = 0` leaves the scores as they are.
pub(crate) fn with_context(rows: &mut [Vec<f32>], k: usize) {
    if k == 0 || rows.len() < 2 {
        return;
    }
    let width = rows[0].len();
    // Prefix sums in f64, so the mean of a long recording's windows loses nothing.
    let mut prefix = Vec::with_capacity(rows.len() + 1);
    let mut running = vec![0f64; width];
    prefix.push(running.clone());
    for row in rows.iter() {
        for (sum, v) in running.iter_mut().zip(row) {
            *sum += f64::from(*v);
        }
        prefix.push(running.clone());
    }
    for (i, row) in rows.iter_mut().enumerate() {
        let lo = i.saturating_sub(k);
        let hi = (i + k + 1).min(prefix.len() - 1);
        let n = (hi - lo) as f64;
        for ((v, high), low) in row.iter_mut().zip(&prefix[hi]).zip(&prefix[lo]) {
            *v = ((high - low) / n) as f32;
        }
    }
}

/// Mean of probability vectors of length `k`; `None` for no vectors.
pub(crate) fn mean_probabilities(rows: &[Vec<f32>], k: usize) -> Option<Vec<f32>> {
    if rows.is_empty() {
        return None;
    }
    let mut sum = vec![0f64; k];
    for row in rows {
        for (s, &p) in sum.iter_mut().zip(row) {
            *s += f64::from(p);
        }
    }
    Some(
        sum.into_iter()
            .map(|s| (s / rows.len() as f64) as f32)
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::with_context;

    #[test]
    fn context_averages_each_window_with_its_neighbours_in_the_recording() {
        let mut rows = vec![
            vec![0.0, 1.0],
            vec![0.3, 0.4],
            vec![0.9, 0.1],
            vec![0.6, 0.6],
        ];
        with_context(&mut rows, 1);
        let expected = [[0.15, 0.7], [0.4, 0.5], [0.6, 0.366_666_7], [0.75, 0.35]];
        for (got, want) in rows.iter().zip(expected) {
            for (g, w) in got.iter().zip(want) {
                assert!((g - w).abs() < 1e-6, "{rows:?}");
            }
        }
        let mut alone = vec![vec![0.2, 0.8], vec![0.9, 0.1]];
        with_context(&mut alone, 0);
        assert_eq!(alone, vec![vec![0.2, 0.8], vec![0.9, 0.1]]);
        // A context wider than the recording is its mean everywhere.
        let mut short = vec![vec![0.2], vec![0.4], vec![0.9]];
        with_context(&mut short, 5);
        assert!(short.iter().all(|r| (r[0] - 0.5).abs() < 1e-6), "{short:?}");
    }
}
