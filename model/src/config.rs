//! How a model is trained: the recipe ([`TrainConfig`]) and what each epoch
//! reports. Types only, stored in the artifact, so that the artifact, the
//! training loop and the command line all read them from here (the loop is
//! in [`mod@crate::train`]).

use birdsong_audio::WindowConfig;
use serde::{Deserialize, Serialize};

use crate::features::FeatureSet;
use crate::network::{CNN, MLP, Output, check_members, one};
use crate::{ModelError, Result};

/// Hop of the recommended recipe's training windows: a quarter of the standard 5 s
/// window, so that every call is seen at four offsets.
pub const RECOMMENDED_TRAIN_HOP_S: f64 = 1.25;

/// L2 penalty of the recommended recipe, added to the mean minibatch loss as `l2 × Σ w²`.
/// It is the penalty scikit-learn's `MLPClassifier` applies with `alpha` 1e-3 and batches
/// of 32 (`alpha / 2 / batch`), which did better than our Keras-style network in a
/// prototype on the band profile. Keras's 1e-3 ([`REFERENCE_L2`]) held the network back:
/// with this one, cross-validation on xc3 gained a point of window accuracy and macro F1
/// (model README).
pub const RECOMMENDED_L2: f64 = 1.6e-5;

/// Networks in the recommended recipe's ensemble: averaging them cut cross-validated log
/// loss on xc3 by a quarter and narrowed the spread between seeds (model README), for
/// that many times the training time; the extra forward passes do not show next to
/// decoding and feature extraction.
pub const RECOMMENDED_MEMBERS: usize = 5;

/// Windows this far below their recording's loudest are trained as negatives by the
/// recommended recipe (see [`TrainConfig::quiet_margin_db`]).
pub const RECOMMENDED_QUIET_MARGIN_DB: f32 = 20.0;

/// L2 penalty of the reference recipe (Keras's `l2(1e-3)` on every kernel).
pub const REFERENCE_L2: f64 = 1e-3;

/// When training ends.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "rule", rename_all = "snake_case")]
pub enum Stopping {
    /// Train exactly [`TrainConfig::epochs`] epochs (the default; see the module docs).
    FixedEpochs,
    /// Stop when validation loss has not improved for `patience` epochs (at most
    /// [`TrainConfig::epochs`]) and keep the weights of the best epoch. Needs a
    /// validation set.
    EarlyStopping {
        /// Epochs without improvement before stopping.
        patience: usize,
    },
}

/// Hyper-parameters of a training run; stored in the artifact.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainConfig {
    /// Architecture name (see [`crate::network::ARCHITECTURES`]).
    pub architecture: String,
    /// Which columns of the feature vector the network reads. Configs written before
    /// feature sets existed read the librosa features.
    #[serde(default = "FeatureSet::legacy")]
    pub features: FeatureSet,
    /// Epochs to train (the maximum, with early stopping).
    pub epochs: usize,
    /// Windows per minibatch.
    pub batch_size: usize,
    /// Adam learning rate.
    pub learning_rate: f64,
    /// L2 penalty on kernel weights, added to the loss as `l2 × Σ w²`.
    pub l2: f64,
    /// Weight each window's loss by `n / (classes × n_class)` so that every class counts
    /// the same however many windows it has.
    pub class_weighting: bool,
    /// Weight each window by `1 / windows of its recording`, so that every recording
    /// counts the same however long it is (a 3-minute recording would otherwise outweigh
    /// thirty 5-second ones and the network would learn that recording's background).
    /// Combined with `class_weighting`, classes are balanced on these weights.
    #[serde(default)]
    pub balance_recordings: bool,
    /// Standard deviation of Gaussian noise added to the standardised inputs of each
    /// training batch (0 = none): a cheap augmentation against memorising recordings.
    #[serde(default)]
    pub input_noise: f32,
    /// Average the weights of the last this many epochs (stochastic weight averaging)
    /// instead of keeping the last epoch's; 0 = off. Smooths out where the last
    /// minibatches happened to leave the weights. Only with [`Stopping::FixedEpochs`].
    #[serde(default)]
    pub average_last_epochs: usize,
    /// Hop between the training windows in seconds (the window length stays the
    /// extractor's). Below the window length, windows overlap and the network sees every
    /// call at several offsets, which cross-validation on xc3 rewarded (model README);
    /// evaluation keeps the standard non-overlapping windows whatever this is. Training
    /// itself takes windows already extracted: whoever extracts them (the CLI, the
    /// retrainer) reads this through [`TrainConfig::training_windows`]. Configs written
    /// before this existed trained on the standard hop.
    #[serde(default = "standard_hop_s")]
    pub train_hop_s: f64,
    /// Networks to train, each from its own seeds, whose probabilities the model
    /// averages (`network::Ensemble`); each costs a full training run. Configs
    /// written before ensembles existed trained one.
    #[serde(default = "one")]
    pub members: usize,
    /// How outputs become scores: per-species sigmoids trained one-vs-rest (the
    /// default, whose scores can say "none of these") or one softmax over the species
    /// (the Python pipeline's). Configs written before this existed trained softmax.
    #[serde(default = "Output::legacy")]
    pub output: Output,
    /// With sigmoid outputs, train windows more than this many dB below their
    /// recording's loudest window as negatives for every species rather than as the
    /// recording's label ([`crate::dataset::quiet_windows`]); `None` = every window
    /// carries its recording's label.
    #[serde(default)]
    pub quiet_margin_db: Option<f32>,
    /// With sigmoid outputs, also train synthetic background (near-silence, white,
    /// pink and brown noise, mains hum; [`crate::negatives`]) as negatives.
    #[serde(default)]
    pub synthetic_negatives: bool,
    /// Stopping rule (each member's).
    pub stopping: Stopping,
    /// Seed of weight initialisation, shuffling and dropout.
    pub seed: u64,
    /// Temporal context of the served scores: each window's scores are the mean of its
    /// own and those of this many neighbouring windows on each side in the same
    /// recording (fewer at its ends); 0 scores every window alone. A call rarely fits
    /// one window, and the windows around it say whether a species is singing there:
    /// one neighbour each side raised window macro F1 in every cross-validation fold on
    /// pr18 ([`RECOMMENDED_CONTEXT_WINDOWS`]). Applied by
    /// [`crate::Classifier::score_recordings`] wherever a model scores recordings
    /// (worker, api, evaluation, threshold calibration), so thresholds are chosen on
    /// the scores that are served. Configs written before this existed scored windows
    /// alone.
    #[serde(default)]
    pub context_windows: usize,
    /// How the spectrogram CNN draws and augments its training crops (`cnn` only;
    /// `None` for the other architectures, which train on windows already cut).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spectrogram: Option<CnnTraining>,
}

/// How the spectrogram CNN is fed during training ([`crate::train_cnn`]): fresh crops of
/// each recording every epoch, masked and mixed with other recordings' background, with
/// classes drawn equally often. Each kind of augmentation makes the few recordings of a
/// species look like more: a call at another offset, partly hidden, over another site's
/// background.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CnnTraining {
    /// Crops drawn per epoch for each second of training audio (0.2: as many as there
    /// are non-overlapping 5 s windows). Each crop starts at a random frame of its
    /// recording, drawn anew every epoch.
    pub crops_per_second: f64,
    /// Draw each crop's class first, uniformly (the background group counting as one
    /// class), then a recording of it by length: every species is seen equally often
    /// however many recordings it has. Otherwise crops are drawn by length over all
    /// recordings.
    pub class_balanced: bool,
    /// Time masks per crop (SpecAugment): runs of frames set to the patch's mean.
    pub time_masks: usize,
    /// Longest time mask, frames (23 ms each).
    pub max_time_mask: usize,
    /// Frequency masks per crop: runs of bands set to the patch's mean.
    pub frequency_masks: usize,
    /// Widest frequency mask, bands (of 32).
    pub max_frequency_mask: usize,
    /// Probability of adding another recording's quiet crop (a stretch more than the
    /// quiet margin below that recording's loudest, or a background recording's) to a
    /// crop, in power.
    pub mix_probability: f64,
    /// The added background's mean power is this many dB below the crop's, at least...
    pub mix_min_db: f32,
    /// ...and at most.
    pub mix_max_db: f32,
    /// Probability of adding a loud crop of another species' recording to a crop,
    /// both species then labelled present (sigmoid outputs only; ignored with
    /// softmax). Field recordings often hold several species at once, but each
    /// training recording is labelled with one: without mixing, the network only
    /// ever sees a species alone, and a second singer in a served window can hide
    /// it. 0 turns it off; configs written before this existed did not mix.
    #[serde(default)]
    pub species_mix_probability: f64,
    /// Subtract each band's median from every patch (training crops and served
    /// windows alike; stored with the network, `NetworkConfig::band_medians`).
    #[serde(default)]
    pub band_medians: bool,
    /// How the learning rate moves over the planned epochs. Configs written before
    /// this existed kept it constant.
    #[serde(default)]
    pub learning_rate_decay: LearningRateDecay,
    /// Gate each species' served scores by how near a window lies to the species'
    /// training calls in the network's embedding, with radii at this quantile
    /// ([`crate::familiarity`]); `None` serves the scores as they are. Configs written
    /// before this existed did not gate.
    #[serde(default)]
    pub familiar_quantile: Option<f64>,
}

/// The learning rate's course over training ([`CnnTraining::learning_rate_decay`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LearningRateDecay {
    /// The configured rate at every step.
    #[default]
    Constant,
    /// A half cosine from the configured rate at the first step to zero after the last
    /// step of the planned epochs. Fresh crops, masks and mixes make every step's
    /// gradient noisy: at a constant rate the weights keep wandering up to the last
    /// epoch, and where they stop is partly luck; a falling rate lets them settle.
    Cosine,
}

impl LearningRateDecay {
    /// The rate for step `step` (from 0) of `steps`, starting from `rate`.
    pub fn rate_at(self, rate: f64, step: usize, steps: usize) -> f64 {
        match self {
            Self::Constant => rate,
            Self::Cosine => {
                let progress = step as f64 / steps.max(1) as f64;
                rate * 0.5 * (1.0 + (std::f64::consts::PI * progress.min(1.0)).cos())
            }
        }
    }
}

impl std::str::FromStr for LearningRateDecay {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, Self::Err> {
        match s {
            "constant" => Ok(Self::Constant),
            "cosine" => Ok(Self::Cosine),
            other => Err(format!(
                "unknown learning rate decay {other:?}: `constant` or `cosine`"
            )),
        }
    }
}

impl Default for CnnTraining {
    /// One crop per 5 s of audio per epoch, classes balanced, two time masks of up to
    /// 20 frames and two frequency masks of up to 4 bands, background mixed into half
    /// of the crops 0 to 12 dB below them.
    fn default() -> Self {
        Self {
            crops_per_second: 0.2,
            class_balanced: true,
            time_masks: 2,
            max_time_mask: 20,
            frequency_masks: 2,
            max_frequency_mask: 4,
            mix_probability: 0.5,
            mix_min_db: 0.0,
            mix_max_db: 12.0,
            species_mix_probability: 0.0,
            band_medians: false,
            learning_rate_decay: LearningRateDecay::Constant,
            familiar_quantile: Some(crate::familiarity::FAMILIAR_QUANTILE),
        }
    }
}

impl CnnTraining {
    fn validate(&self) -> Result<()> {
        let ok = self.crops_per_second > 0.0
            && self.crops_per_second.is_finite()
            && (0.0..=1.0).contains(&self.mix_probability)
            && (0.0..=1.0).contains(&self.species_mix_probability)
            && self.mix_min_db.is_finite()
            && self.mix_max_db.is_finite()
            && self.mix_min_db <= self.mix_max_db
            && self.max_frequency_mask < crate::spectrogram::MEL_BANDS
            && self.max_time_mask < crate::spectrogram::PATCH_FRAMES
            && self.familiar_quantile.is_none_or(|q| q > 0.0 && q <= 1.0);
        if ok {
            Ok(())
        } else {
            Err(ModelError::InvalidConfig(format!(
                "spectrogram training settings out of range: {self:?}"
            )))
        }
    }
}

/// Most neighbouring windows each side [`TrainConfig::context_windows`] may average.
pub const MAX_CONTEXT_WINDOWS: usize = 10;

/// The recommended recipe's [`TrainConfig::context_windows`]: one window each side.
/// In cross-validation on pr18's training recordings it raised window macro F1 in every
/// fold, both for the default model on the acoustic backbone (4 folds, mean 0.31 to
/// 0.35) and for the anchored head on BirdNET's embedding (mean 0.58 to 0.71, open-set
/// AUROC 0.96 to 0.98); two or three each side were no better on every fold
/// (`experiments/temporal_context.py`, model README).
pub const RECOMMENDED_CONTEXT_WINDOWS: usize = 1;

/// Epochs of the spectrogram CNN's recipe. Every epoch draws fresh crops, masks and
/// mixes, so the network does not see the same input twice and its training loss was
/// still falling at 30 epochs; 60 named more held-out recordings of pr18 in
/// cross-validation and on the test split, for twice the training time (model README).
pub const CNN_EPOCHS: usize = 60;

/// The spectrogram CNN's [`TrainConfig::context_windows`]: none, every window scored
/// alone. Its 5-s windows do not overlap, so one neighbour each side averages 15 s,
/// and its scores for a species peak in the windows where the bird calls; averaged
/// with quieter neighbours, few peaks stay above a threshold and many recordings of
/// the user's species get no detection at all. Out of fold on pr18 (4 folds, 60
/// epochs) scoring windows alone gave a right detection to 63 of 111
/// recordings against 50 with one neighbour, for 22.4 % of xc3's
/// windows detected against 17.7 %; the neighbours' gain is in the top species
/// of each window, which `top_k` keeps whatever the context (model README,
/// "Temporal context").
pub const CNN_CONTEXT_WINDOWS: usize = 0;

/// The hop of the standard (evaluation and detection) windows.
fn standard_hop_s() -> f64 {
    WindowConfig::default().hop_s
}

impl TrainConfig {
    /// The windows to extract for training: `standard` (the extractor's window length
    /// and settings) with this recipe's hop.
    pub fn training_windows(&self, standard: &WindowConfig) -> WindowConfig {
        WindowConfig {
            hop_s: self.train_hop_s,
            ..standard.clone()
        }
    }

    /// The reference recipe, the Python pipeline's: [`Default`] on the 95 librosa
    /// features only, with Keras's L2 1e-3, trained on the standard non-overlapping
    /// windows. Kept for comparisons with that pipeline.
    pub fn reference() -> Self {
        Self {
            features: FeatureSet::Librosa,
            l2: REFERENCE_L2,
            train_hop_s: standard_hop_s(),
            members: 1,
            output: Output::Softmax,
            quiet_margin_db: None,
            synthetic_negatives: false,
            context_windows: 0,
            ..Self::default()
        }
    }

    /// The spectrogram CNN's recipe: one `cnn` on mel patches, [`CNN_EPOCHS`] epochs of
    /// fresh crops ([`CnnTraining::default`]), batch 32, Adam 1e-3, L2 1e-5, per-species
    /// sigmoids with quiet crops and synthetic background as negatives, every window
    /// scored alone ([`CNN_CONTEXT_WINDOWS`]). Class balance comes from sampling, so no
    /// class weights.
    pub fn cnn() -> Self {
        Self {
            architecture: CNN.to_string(),
            features: FeatureSet::Mel,
            epochs: CNN_EPOCHS,
            l2: 1e-5,
            class_weighting: false,
            train_hop_s: standard_hop_s(),
            members: 1,
            context_windows: CNN_CONTEXT_WINDOWS,
            spectrogram: Some(CnnTraining::default()),
            ..Self::default()
        }
    }
}

impl Default for TrainConfig {
    /// The recommended recipe: `mlp` on the band profile without its medians, training
    /// windows every 1.25 s, 60 epochs, batch 32, Adam 1e-3, L2 [`RECOMMENDED_L2`],
    /// balanced class weights, fixed epochs. The band profile beat both the librosa
    /// features and all features together, overlapping training windows beat every other
    /// variant tried, and the lighter penalty and leaving out the medians each raised
    /// window accuracy and macro F1, in cross-validation on xc3 (model README).
    fn default() -> Self {
        Self {
            architecture: MLP.to_string(),
            features: FeatureSet::BandsNoMedian,
            epochs: 60,
            batch_size: 32,
            learning_rate: 1e-3,
            l2: RECOMMENDED_L2,
            class_weighting: true,
            balance_recordings: false,
            input_noise: 0.0,
            average_last_epochs: 0,
            train_hop_s: RECOMMENDED_TRAIN_HOP_S,
            members: RECOMMENDED_MEMBERS,
            output: Output::Sigmoid,
            quiet_margin_db: Some(RECOMMENDED_QUIET_MARGIN_DB),
            synthetic_negatives: true,
            stopping: Stopping::FixedEpochs,
            seed: 0,
            context_windows: RECOMMENDED_CONTEXT_WINDOWS,
            spectrogram: None,
        }
    }
}

/// Progress after one epoch, passed to the progress callback and kept in the artifact.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EpochReport {
    /// 1-based epoch number.
    pub epoch: usize,
    /// Epochs this run will train at most.
    pub epochs: usize,
    /// 1-based number of the ensemble member being trained (reports written before
    /// ensembles existed are of the only one).
    #[serde(default = "one")]
    pub member: usize,
    /// Members the run trains, one after the other.
    #[serde(default = "one")]
    pub members: usize,
    /// Mean training loss over the epoch's minibatches (class-weighted cross entropy
    /// plus the L2 term), measured with dropout on.
    pub loss: f64,
    /// Validation log loss over windows, if there is a validation set.
    pub validation_loss: Option<f64>,
    /// Validation window accuracy, if there is a validation set.
    pub validation_accuracy: Option<f64>,
    /// Validation recording accuracy, if there is a validation set.
    pub validation_recording_accuracy: Option<f64>,
}

impl TrainConfig {
    /// Checks the hyper-parameters on their own, so that a request (the retrainer's
    /// parameters, the CLI) is refused before any data is loaded. Training also checks
    /// that early stopping has a validation set.
    pub fn validate(&self) -> Result<()> {
        if self.epochs == 0 || self.batch_size == 0 {
            return Err(ModelError::InvalidConfig(
                "epochs and batch size must be positive".into(),
            ));
        }
        let rate_ok = self.learning_rate > 0.0 && self.learning_rate.is_finite();
        let l2_ok = self.l2 >= 0.0 && self.l2.is_finite();
        if !(rate_ok && l2_ok) {
            return Err(ModelError::InvalidConfig(format!(
                "learning rate {} must be positive and L2 {} non-negative",
                self.learning_rate, self.l2
            )));
        }
        if !(self.input_noise >= 0.0 && self.input_noise.is_finite()) {
            return Err(ModelError::InvalidConfig(format!(
                "input noise {} must be a non-negative number",
                self.input_noise
            )));
        }
        if let Some(margin) = self.quiet_margin_db
            && !(margin > 0.0 && margin.is_finite())
        {
            return Err(ModelError::InvalidConfig(format!(
                "the quiet-window margin {margin} dB must be a positive number"
            )));
        }
        if let Err(e) = self.training_windows(&WindowConfig::default()).plan() {
            return Err(ModelError::InvalidConfig(format!("training windows: {e}")));
        }
        check_members(self.members)?;
        let cnn = self.architecture == CNN;
        if cnn != (self.features == FeatureSet::Mel) || cnn != self.spectrogram.is_some() {
            return Err(ModelError::InvalidConfig(format!(
                "architecture {} on feature set {}: the cnn, and only it, reads mel \
                 patches and has spectrogram training settings",
                self.architecture, self.features
            )));
        }
        if let Some(s) = &self.spectrogram {
            s.validate()?;
        }
        if self.context_windows > MAX_CONTEXT_WINDOWS {
            return Err(ModelError::InvalidConfig(format!(
                "context of {} windows each side; at most {MAX_CONTEXT_WINDOWS}",
                self.context_windows
            )));
        }
        if self.average_last_epochs > self.epochs {
            return Err(ModelError::InvalidConfig(format!(
                "cannot average the last {} of {} epochs",
                self.average_last_epochs, self.epochs
            )));
        }
        if let Stopping::EarlyStopping { patience } = self.stopping {
            if self.average_last_epochs > 0 {
                return Err(ModelError::InvalidConfig(
                    "weight averaging needs a fixed epoch budget, not early stopping".into(),
                ));
            }
            if patience == 0 {
                return Err(ModelError::InvalidConfig(
                    "early stopping patience must be positive".into(),
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cosine_decay_falls_from_the_rate_to_zero_and_a_constant_one_stays() {
        let cosine = LearningRateDecay::Cosine;
        assert_eq!(cosine.rate_at(1e-3, 0, 100), 1e-3);
        assert!((cosine.rate_at(1e-3, 50, 100) - 5e-4).abs() < 1e-12);
        assert!(cosine.rate_at(1e-3, 99, 100) < 1e-6);
        let rates: Vec<f64> = (0..100).map(|s| cosine.rate_at(1e-3, s, 100)).collect();
        assert!(rates.windows(2).all(|w| w[1] < w[0]), "{rates:?}");
        assert_eq!(cosine.rate_at(1e-3, 200, 100), 0.0);
        assert_eq!(LearningRateDecay::Constant.rate_at(1e-3, 99, 100), 1e-3);
    }

    #[test]
    fn the_decay_is_named_in_configs_and_on_the_command_line() {
        assert_eq!("cosine".parse(), Ok(LearningRateDecay::Cosine));
        assert!("linear".parse::<LearningRateDecay>().is_err());
        let json = serde_json::to_string(&LearningRateDecay::Cosine).unwrap();
        assert_eq!(json, "\"cosine\"");
        // Settings written before the option existed kept the rate constant.
        let mut old = serde_json::to_value(CnnTraining::default()).unwrap();
        old.as_object_mut().unwrap().remove("learning_rate_decay");
        let old: CnnTraining = serde_json::from_value(old).unwrap();
        assert_eq!(old.learning_rate_decay, LearningRateDecay::Constant);
    }
}
