//! The training loop: standardise, weight classes, minibatch Adam with dropout and L2,
//! once per network of the ensemble ([`TrainConfig::members`]).
//!
//! # Stopping rule
//!
//! The default is a **fixed epoch budget** (60, the Python pipeline's best setting), with
//! the validation set, when one is given, used to *report* progress rather than to stop.
//! Early stopping needs a validation signal less noisy than the differences it is meant to
//! detect. On xc3 a 10 % validation split is about eight recordings: recording accuracy
//! moves in steps of 12.5 %, the windows inside a recording are strongly correlated, and
//! the best epoch on those few recordings is mostly chance; the Python pipeline lost 13
//! points of recording accuracy that way (0.786 against 0.917). Stopping early also
//! removes those recordings from the training set, which for a class of 21 recordings
//! costs real signal. Dropout and L2 already regularise the network. Measured on the xc3
//! train split by 5-fold cross-validation over recordings: early stopping on 10 % of each
//! fold's recordings stopped after 11–25 epochs and reached 0.660 recording accuracy,
//! fixed budgets of 30, 60 and 120 epochs 0.698–0.735 (indistinguishable from each other
//! at this data size; 60 is the Python recipe's). [`Stopping::EarlyStopping`] remains available for
//! corpora with large validation sets; it monitors validation loss (smooth, unlike
//! accuracy) and restores the best epoch's weights.
//!
//! # Determinism
//!
//! Weight initialisation, shuffling and dropout masks come from generators seeded from
//! [`TrainConfig::seed`] (not burn's process-wide backend RNG), and the ndarray backend
//! computes on one thread, so the same data and configuration give the same weights, bit
//! for bit.

use birdsong_audio::WindowConfig;
use burn::module::Module;
use burn::optim::{AdamConfig, GradientsParams};
use burn::tensor::activation::{log_sigmoid, log_softmax};
use burn::tensor::{Device, Tensor, TensorData};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};

use crate::anchor::{ANCHOR_STRENGTH, Anchor, anchor_member};
use crate::artifact::{Artifact, ArtifactMeta};
use crate::dataset::{DataSummary, Recording, class_list};
use crate::dataset::{is_background, quiet_windows};
use crate::evaluate::{Evaluation, evaluate};
use crate::features::Backbone;
use crate::inference::{Classifier, ModelInfo};
use crate::negatives::synthetic_background;
use crate::network::{ANCHORED, CNN, Ensemble, Network, NetworkConfig, Output};
use crate::scaler::Scaler;
use crate::{ModelError, Result};

pub use crate::config::{
    CNN_CONTEXT_WINDOWS, CnnTraining, EpochReport, MAX_CONTEXT_WINDOWS,
    RECOMMENDED_CONTEXT_WINDOWS, RECOMMENDED_L2, RECOMMENDED_MEMBERS, RECOMMENDED_QUIET_MARGIN_DB,
    RECOMMENDED_TRAIN_HOP_S, REFERENCE_L2, Stopping, TrainConfig,
};

/// The outcome of training: the artifact to save or upload and a classifier to use now.
#[derive(Debug)]
pub struct TrainedModel {
    /// Weights and metadata (with the training history and, if a validation set was
    /// given, its evaluation under the name `"validation"`).
    pub artifact: Artifact,
    /// The same model, ready for inference.
    pub classifier: Classifier,
}

/// Trains on the default CPU device. See [`train_on`].
pub fn train(
    train_set: &[Recording],
    validation_set: Option<&[Recording]>,
    config: &TrainConfig,
    progress: impl FnMut(&EpochReport),
) -> Result<TrainedModel> {
    train_on(
        &crate::device::cpu(),
        train_set,
        validation_set,
        config,
        progress,
    )
}

/// Trains a model on `train_set` (every window labelled with its recording's label) on
/// `device`, calling `progress` after each epoch.
///
/// The class list is the sorted set of training labels; validation recordings must use
/// those labels. Recordings without windows are ignored. The caller chooses the split
/// (see [`crate::split_by_recording`]); nothing here moves windows between sets.
pub fn train_on(
    device: &Device,
    train_set: &[Recording],
    validation_set: Option<&[Recording]>,
    config: &TrainConfig,
    progress: impl FnMut(&EpochReport),
) -> Result<TrainedModel> {
    fit(device, train_set, validation_set, config, None, progress)
}

/// Trains the [`ANCHORED`] architecture on the default CPU device: a linear head that
/// starts from `anchor`'s columns and is pulled towards them, served averaged with
/// them (see [`crate::anchor`]). `config.members` must be 1 (the second member is the
/// anchor); `config.l2` is not used (the anchor is the penalty).
pub fn train_anchored(
    train_set: &[Recording],
    validation_set: Option<&[Recording]>,
    config: &TrainConfig,
    anchor: &Anchor,
    progress: impl FnMut(&EpochReport),
) -> Result<TrainedModel> {
    fit(
        &crate::device::cpu(),
        train_set,
        validation_set,
        config,
        Some(anchor),
        progress,
    )
}

fn fit(
    device: &Device,
    train_set: &[Recording],
    validation_set: Option<&[Recording]>,
    config: &TrainConfig,
    anchor: Option<&Anchor>,
    mut progress: impl FnMut(&EpochReport),
) -> Result<TrainedModel> {
    validate_config(config, validation_set.is_some())?;
    if config.architecture == CNN {
        return Err(ModelError::InvalidConfig(
            "the cnn trains on recordings' spectrograms (train_cnn), not on cut windows".into(),
        ));
    }
    let anchored = config.architecture == ANCHORED;
    match (anchored, anchor) {
        (true, None) => {
            return Err(ModelError::InvalidConfig(
                "the anchored architecture trains from BirdNET's species layer, which \
                 `birdsong-model train` and the retrainer provide (train_anchored)"
                    .into(),
            ));
        }
        (false, Some(_)) => {
            return Err(ModelError::InvalidConfig(format!(
                "an anchor is used by the {ANCHORED} architecture only, not {:?}",
                config.architecture
            )));
        }
        (true, Some(a)) => {
            if config.output != Output::Sigmoid || config.members != 1 {
                return Err(ModelError::InvalidConfig(format!(
                    "the {ANCHORED} architecture trains one sigmoid head (the anchor is the \
                     second member), not {} {} network(s)",
                    config.members,
                    config.output.name()
                )));
            }
            if a.width != config.features.width() {
                return Err(ModelError::InvalidConfig(format!(
                    "the anchor's columns read {} inputs, the feature set {} has {}",
                    a.width,
                    config.features,
                    config.features.width()
                )));
            }
        }
        (false, None) => {}
    }
    let train_set: Vec<Recording> = train_set
        .iter()
        .filter(|r| !r.windows.is_empty())
        .cloned()
        .collect();
    let validation_set: Option<Vec<Recording>> = validation_set
        .map(|v| {
            v.iter()
                .filter(|r| !r.windows.is_empty())
                .cloned()
                .collect::<Vec<_>>()
        })
        .filter(|v| !v.is_empty());
    let classes = class_list(&train_set);
    if classes.len() < 2 {
        return Err(ModelError::InvalidDataset(format!(
            "training needs recordings of at least two labels, got {classes:?}"
        )));
    }
    if let Some(v) = &validation_set
        && let Some(r) = v.iter().find(|r| !classes.contains(&r.label))
    {
        return Err(ModelError::UnknownLabel(r.label.clone()));
    }

    let features = config.features;
    let width = features.width();
    let k = classes.len();
    let sigmoid = config.output == Output::Sigmoid;
    // `k` marks a negative window: no species present (sigmoid outputs only).
    let mut x: Vec<f32> = Vec::new();
    let mut y: Vec<usize> = Vec::new();
    let mut recording_of: Vec<usize> = Vec::new();
    for (index, r) in train_set.iter().enumerate() {
        let label = if is_background(&r.label) {
            if !sigmoid {
                // A softmax has no "none of these" to learn it as.
                continue;
            }
            k
        } else {
            classes
                .binary_search(&r.label)
                .map_err(|_| ModelError::UnknownLabel(r.label.clone()))?
        };
        let quiet = match config.quiet_margin_db {
            Some(margin) if sigmoid => quiet_windows(&r.windows, features.backbone(), margin),
            _ => vec![false; r.windows.len()],
        };
        for (w, quiet) in r.windows.iter().zip(quiet) {
            features.select_into(w, &mut x);
            y.push(if quiet { k } else { label });
            recording_of.push(index);
        }
    }
    // Synthetic background exists as acoustic features only; callers training on
    // another backbone add it as background recordings they embedded themselves
    // (`negatives::synthetic_clips`).
    if sigmoid && config.synthetic_negatives && features.backbone() == Backbone::Acoustic {
        // One pseudo-recording after the real ones.
        let index = train_set.len();
        for w in synthetic_background(&config.training_windows(&WindowConfig::default()))? {
            features.select_into(&w, &mut x);
            y.push(k);
            recording_of.push(index);
        }
    }
    // An anchored head reads the raw vectors, as the layer it starts from does.
    let scaler = if anchored {
        Scaler::identity(width)
    } else {
        let scaler = Scaler::fit(&x, width)?;
        scaler.transform_in_place(&mut x);
        scaler
    };
    let sample_weights = sample_weights(&y, &recording_of, k + 1, config);

    let mut network_config = NetworkConfig::named(&config.architecture, width, k)?;
    network_config.members = config.members;
    network_config.output = config.output;
    network_config.validate()?;
    let info = |weights_sha256: String| ModelInfo {
        architecture: network_config.architecture.clone(),
        feature_version: features.backbone().feature_version().to_string(),
        input_size: features.backbone().vector_len(),
        features: config.features,
        version: None,
        weights_sha256,
        output: config.output,
        context_windows: config.context_windows,
    };
    let anchor_layer = anchor.map(|a| a.layer(&classes));
    let data = TrainingData {
        x: &x,
        y: &y,
        weights: &sample_weights,
        width,
        k,
        anchor: anchor_layer
            .as_ref()
            .map(|(w, b, _)| (w.as_slice(), b.as_slice())),
    };
    // Validation figures during training are each member's own.
    let validate = |network: &Network| -> Result<Option<Evaluation>> {
        let Some(v) = &validation_set else {
            return Ok(None);
        };
        let classifier = Classifier::from_parts(
            Ensemble::new(vec![network.valid()])?,
            device.clone(),
            scaler.clone(),
            classes.clone(),
            info(String::new()),
        );
        evaluate(&classifier, v).map(Some)
    };

    // Member 1 draws its seeds first, so a one-network model is what it always was.
    let mut seeds = StdRng::seed_from_u64(config.seed);
    let mut members = Vec::with_capacity(config.members);
    let mut history = Vec::new();
    for member in 1..=config.members {
        let init_seed = seeds.random();
        let rng_seed = seeds.random();
        let network = train_member(
            device,
            &network_config,
            config,
            &data,
            Member {
                number: member,
                init_seed,
                rng_seed,
            },
            &validate,
            &mut |report: &EpochReport| {
                progress(report);
                history.push(report.clone());
            },
        )?;
        members.push(network);
    }

    if let (Some((anchor_w, anchor_b, known)), Some(head)) = (&anchor_layer, members.first()) {
        let (head_w, head_b) = head.output_layer()?;
        let (w, b) = anchor_member((anchor_w, anchor_b, known), (&head_w, &head_b));
        members.push(Network::linear(w, b, width, device)?);
        network_config.members = members.len();
    }
    let final_network = Ensemble::new(members)?;
    let weights = final_network.to_bytes()?;
    let mut meta = ArtifactMeta::new(
        network_config.clone(),
        config.clone(),
        classes.clone(),
        scaler.clone(),
        features.backbone().feature_version().to_string(),
        DataSummary::of(&train_set),
        validation_set.as_deref().map(DataSummary::of),
        history,
    );
    if let Some(a) = anchor {
        meta.source = Some(format!(
            "a linear head trained from {} ({} of {} species), averaged with it",
            a.source,
            anchor_layer
                .as_ref()
                .map_or(0, |(_, _, known)| known.iter().filter(|k| **k).count()),
            classes.len()
        ));
    }
    let mut artifact = Artifact::new(meta, weights)?;
    let classifier = Classifier::from_parts(
        final_network,
        device.clone(),
        scaler,
        classes,
        info(artifact.meta().weights_sha256.clone()),
    );
    if let Some(v) = &validation_set {
        let evaluation: Evaluation = evaluate(&classifier, v)?;
        artifact.set_metrics("validation", evaluation);
    }
    Ok(TrainedModel {
        artifact,
        classifier,
    })
}

/// Standardised training windows with their labels and loss weights.
struct TrainingData<'a> {
    /// Row-major, `width` values per window.
    x: &'a [f32],
    y: &'a [usize],
    weights: &'a [f32],
    width: usize,
    /// Number of classes.
    k: usize,
    /// An anchored head's starting weights (row-major `width × k`) and biases, which
    /// its weights are pulled towards instead of towards zero.
    anchor: Option<(&'a [f32], &'a [f32])>,
}

/// Which member of an ensemble is being trained, and its seeds.
struct Member {
    /// 1-based.
    number: usize,
    init_seed: u64,
    rng_seed: u64,
}

/// Trains one network: minibatch Adam with dropout, L2 and the configured stopping rule
/// and weight averaging; returns it without autodiff.
fn train_member(
    device: &Device,
    network_config: &NetworkConfig,
    config: &TrainConfig,
    data: &TrainingData<'_>,
    member: Member,
    validate: &dyn Fn(&Network) -> Result<Option<Evaluation>>,
    progress: &mut dyn FnMut(&EpochReport),
) -> Result<Network> {
    let TrainingData {
        x,
        y,
        weights,
        width,
        k,
        anchor,
    } = *data;
    let ad_device = device.clone().autodiff();
    let mut network = match anchor {
        Some((w, b)) => Network::linear(w.to_vec(), b.to_vec(), width, &ad_device)?,
        None => network_config.init(member.init_seed, &ad_device),
    };
    // The anchor's pull per window: ANCHOR_STRENGTH against the sum of the window
    // losses is ANCHOR_STRENGTH / n against their mean, which the loss below is.
    let anchor_penalty = anchor.map(|(w, _)| {
        (
            Tensor::<2>::from_data(TensorData::new(w.to_vec(), [width, k]), &ad_device),
            ANCHOR_STRENGTH / y.len().max(1) as f64,
        )
    });
    let mut rng = StdRng::seed_from_u64(member.rng_seed);
    let mut optimizer = AdamConfig::new().with_epsilon(1e-7).init();

    let n = y.len();
    let mut order: Vec<usize> = (0..n).collect();
    let mut stopper = EarlyStop::new(&config.stopping);
    let mut averaged: Vec<Network> = Vec::with_capacity(config.average_last_epochs);
    for epoch in 1..=config.epochs {
        order.shuffle(&mut rng);
        let mut loss_sum = 0.0;
        for batch in order.chunks(config.batch_size) {
            let b = batch.len();
            let mut xb = Vec::with_capacity(b * width);
            let mut target = vec![0f32; b * k];
            let mut row_weights = vec![0f32; b];
            for (row, &i) in batch.iter().enumerate() {
                xb.extend_from_slice(&x[i * width..(i + 1) * width]);
                row_weights[row] = weights[i];
                if y[i] < k {
                    target[row * k + y[i]] = match config.output {
                        Output::Softmax => weights[i],
                        Output::Sigmoid => 1.0,
                    };
                }
            }
            if config.input_noise > 0.0 {
                add_gaussian_noise(&mut rng, &mut xb, config.input_noise);
            }
            let xb = Tensor::<2>::from_data(TensorData::new(xb, [b, width]), &ad_device);
            let target = Tensor::<2>::from_data(TensorData::new(target, [b, k]), &ad_device);
            let masks = network_config
                .hidden
                .iter()
                .zip(&network_config.dropout)
                .map(|(&h, &p)| dropout_mask(&mut rng, b, h, p, &ad_device))
                .collect();
            let logits = network.forward_train(xb, masks);
            let cross_entropy = batch_loss(logits, target, row_weights, config.output);
            let penalty = match &anchor_penalty {
                Some((anchor, strength)) => network
                    .anchor_distance(anchor.clone())
                    .mul_scalar(*strength),
                None => network.l2_sum().mul_scalar(config.l2),
            };
            let loss = cross_entropy + penalty;
            loss_sum += f64::from(loss.clone().into_scalar::<f32>()) * b as f64;
            let grads = GradientsParams::from_grads(loss.backward(), &network);
            network = optimizer.step(config.learning_rate, network, grads);
        }
        if epoch + config.average_last_epochs > config.epochs {
            averaged.push(network.valid());
        }

        let report = epoch_report(
            config,
            epoch,
            member.number,
            loss_sum / n as f64,
            validate(&network)?,
        );
        progress(&report);
        if stopper.should_stop(report.validation_loss, &network) {
            break;
        }
    }
    let network = stopper.best_or(network);
    Ok(Network::average(&averaged).unwrap_or_else(|| network.valid()))
}

/// Weighted cross entropy averaged over the batch (Keras' class_weight semantics; the L2
/// penalty is added by the caller). Softmax: `target` rows are one-hot times the
/// window's weight. Sigmoid: one binary cross entropy per species,
/// -(t log σ(z) + (1 - t) log σ(-z)), summed over the species and weighted per window
/// by `row_weights`; an all-zero row is a negative window.
pub(crate) fn batch_loss(
    logits: Tensor<2>,
    target: Tensor<2>,
    row_weights: Vec<f32>,
    output: Output,
) -> Tensor<1> {
    let b = row_weights.len();
    match output {
        Output::Softmax => log_softmax(logits, 1)
            .mul(target)
            .sum()
            .neg()
            .div_scalar(b as f64),
        Output::Sigmoid => {
            let device = logits.device();
            let row_weights = Tensor::<2>::from_data(TensorData::new(row_weights, [b, 1]), &device);
            let absent = target.clone().neg().add_scalar(1.0);
            let per_class = log_sigmoid(logits.clone())
                .mul(target)
                .add(log_sigmoid(logits.neg()).mul(absent));
            per_class.mul(row_weights).sum().neg().div_scalar(b as f64)
        }
    }
}

/// The report of one epoch, with the holdout's figures when there is one.
pub(crate) fn epoch_report(
    config: &TrainConfig,
    epoch: usize,
    member: usize,
    loss: f64,
    validation: Option<Evaluation>,
) -> EpochReport {
    EpochReport {
        epoch,
        epochs: config.epochs,
        member,
        members: config.members,
        loss,
        validation_loss: validation.as_ref().map(|e| e.window.log_loss),
        validation_accuracy: validation.as_ref().map(|e| e.window.accuracy),
        validation_recording_accuracy: validation.as_ref().map(|e| e.recording.accuracy),
    }
}

/// Early stopping on the holdout's loss, shared by every training loop: it
/// keeps the best network seen and says when `patience` epochs in a row
/// have not improved on it.
pub(crate) struct EarlyStop<N> {
    patience: Option<usize>,
    best: Option<(f64, N)>,
    since_best: usize,
}

impl<N: Clone> EarlyStop<N> {
    pub(crate) fn new(stopping: &Stopping) -> Self {
        let patience = match stopping {
            Stopping::EarlyStopping { patience } => Some(*patience),
            _ => None,
        };
        EarlyStop {
            patience,
            best: None,
            since_best: 0,
        }
    }

    /// Records an epoch's holdout loss; true when training should stop.
    pub(crate) fn should_stop(&mut self, loss: Option<f64>, network: &N) -> bool {
        let (Some(patience), Some(loss)) = (self.patience, loss) else {
            return false;
        };
        if self.best.as_ref().is_none_or(|(b, _)| loss < *b) {
            self.best = Some((loss, network.clone()));
            self.since_best = 0;
            false
        } else {
            self.since_best += 1;
            self.since_best >= patience
        }
    }

    /// The best network seen, or `last` when early stopping never ran.
    pub(crate) fn best_or(self, last: N) -> N {
        self.best.map_or(last, |(_, best)| best)
    }
}

pub(crate) fn validate_config(config: &TrainConfig, has_validation: bool) -> Result<()> {
    config.validate()?;
    if matches!(config.stopping, Stopping::EarlyStopping { .. }) && !has_validation {
        return Err(ModelError::InvalidConfig(
            "early stopping needs a validation set".into(),
        ));
    }
    Ok(())
}

/// Loss weight of every training window.
///
/// Starts from 1 per window, or `1 / windows of its recording` with
/// [`TrainConfig::balance_recordings`]; with [`TrainConfig::class_weighting`] each class's
/// weights are then scaled so that every class carries `n / k` ("balanced", scikit-learn's
/// `n / (k × n_c)` when windows weigh 1). Without class weighting the weights are
/// rescaled to a mean of 1, so the loss keeps its usual scale.
fn sample_weights(
    labels: &[usize],
    recording_of: &[usize],
    k: usize,
    config: &TrainConfig,
) -> Vec<f32> {
    let n = labels.len();
    let mut weights = vec![1f64; n];
    if config.balance_recordings {
        let mut windows = std::collections::HashMap::<usize, usize>::new();
        for &r in recording_of {
            *windows.entry(r).or_default() += 1;
        }
        for (w, r) in weights.iter_mut().zip(recording_of) {
            *w = 1.0 / windows[r] as f64;
        }
    }
    if config.class_weighting {
        let mut mass = vec![0f64; k];
        for (&l, &w) in labels.iter().zip(&weights) {
            mass[l] += w;
        }
        // Groups (classes, and the negatives) that have windows at all.
        let groups = mass.iter().filter(|&&m| m > 0.0).count().max(1);
        for (w, &l) in weights.iter_mut().zip(labels) {
            *w *= n as f64 / (groups as f64 * mass[l]);
        }
    } else {
        let total: f64 = weights.iter().sum();
        for w in &mut weights {
            *w *= n as f64 / total;
        }
    }
    weights.into_iter().map(|w| w as f32).collect()
}

/// Adds N(0, sigma²) noise to every value (Box-Muller over the seeded generator).
fn add_gaussian_noise(rng: &mut StdRng, values: &mut [f32], sigma: f32) {
    for pair in values.chunks_mut(2) {
        let u1: f32 = rng.random_range(f32::EPSILON..1.0);
        let u2: f32 = rng.random();
        let r = sigma * (-2.0 * u1.ln()).sqrt();
        let theta = std::f32::consts::TAU * u2;
        pair[0] += r * theta.cos();
        if let Some(second) = pair.get_mut(1) {
            *second += r * theta.sin();
        }
    }
}

/// An inverted-dropout mask: each unit kept with probability `1 - p` and scaled by
/// `1 / (1 - p)`, so inference needs no rescaling.
pub(crate) fn dropout_mask(
    rng: &mut StdRng,
    rows: usize,
    cols: usize,
    p: f32,
    device: &Device,
) -> Tensor<2> {
    let keep = 1.0 / (1.0 - p);
    let mask: Vec<f32> = (0..rows * cols)
        .map(|_| if rng.random::<f32>() < p { 0.0 } else { keep })
        .collect();
    Tensor::<2>::from_data(TensorData::new(mask, [rows, cols]), device)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::features::FeatureSet;

    #[test]
    fn balanced_weights_equalise_classes() {
        let config = TrainConfig::default();
        let w = sample_weights(&[0, 0, 0, 1], &[0, 0, 1, 2], 2, &config);
        // scikit-learn's "balanced": n / (k × n_c) = 4 / 6 and 4 / 2
        assert!((w[0] - 4.0 / 6.0).abs() < 1e-6 && (w[3] - 2.0).abs() < 1e-6);
        let plain = TrainConfig {
            class_weighting: false,
            ..config.clone()
        };
        assert_eq!(sample_weights(&[0, 1], &[0, 1], 2, &plain), vec![1.0, 1.0]);
    }

    #[test]
    fn recording_balance_makes_recordings_count_equally() {
        // class 0: one recording of 3 windows and one of 1; class 1: one of 2 windows.
        let labels = [0, 0, 0, 0, 1, 1];
        let recordings = [0, 0, 0, 1, 2, 2];
        let config = TrainConfig {
            balance_recordings: true,
            class_weighting: false,
            ..TrainConfig::default()
        };
        let w = sample_weights(&labels, &recordings, 2, &config);
        let per_recording = |r: usize| -> f32 {
            w.iter()
                .zip(&recordings)
                .filter(|(_, x)| **x == r)
                .map(|(w, _)| w)
                .sum()
        };
        assert!((per_recording(0) - per_recording(1)).abs() < 1e-6);
        assert!((per_recording(1) - per_recording(2)).abs() < 1e-6);
        assert!((w.iter().sum::<f32>() - 6.0).abs() < 1e-5);
        // with class weighting too, each class carries n / k = 3
        let both = TrainConfig {
            class_weighting: true,
            ..config
        };
        let w = sample_weights(&labels, &recordings, 2, &both);
        assert!((w[..4].iter().sum::<f32>() - 3.0).abs() < 1e-5);
        assert!((w[4..].iter().sum::<f32>() - 3.0).abs() < 1e-5);
        assert!((w[0] * 3.0 - w[3]).abs() < 1e-6);
    }

    #[test]
    fn gaussian_noise_has_the_requested_spread() {
        let mut rng = StdRng::seed_from_u64(3);
        let mut v = vec![0f32; 20_001];
        add_gaussian_noise(&mut rng, &mut v, 0.5);
        let n = v.len() as f64;
        let mean = v.iter().map(|&x| f64::from(x)).sum::<f64>() / n;
        let sd = (v
            .iter()
            .map(|&x| (f64::from(x) - mean).powi(2))
            .sum::<f64>()
            / n)
            .sqrt();
        assert!(mean.abs() < 0.02, "mean {mean}");
        assert!((sd - 0.5).abs() < 0.02, "sd {sd}");
    }

    #[test]
    fn rejects_bad_configs() {
        let bad = TrainConfig {
            epochs: 0,
            ..TrainConfig::default()
        };
        assert!(validate_config(&bad, false).is_err());
        let early = TrainConfig {
            stopping: Stopping::EarlyStopping { patience: 3 },
            ..TrainConfig::default()
        };
        assert!(validate_config(&early, false).is_err());
        assert!(validate_config(&early, true).is_ok());
        let averaged_early = TrainConfig {
            average_last_epochs: 2,
            ..early
        };
        assert!(validate_config(&averaged_early, true).is_err());
        let too_many = TrainConfig {
            average_last_epochs: 61,
            ..TrainConfig::default()
        };
        assert!(validate_config(&too_many, false).is_err());
        for hop in [0.0, 0.01, -1.0, f64::NAN, f64::INFINITY] {
            let bad_hop = TrainConfig {
                train_hop_s: hop,
                ..TrainConfig::default()
            };
            assert!(validate_config(&bad_hop, false).is_err(), "hop {hop}");
        }
    }

    #[test]
    fn training_windows_change_only_the_hop() {
        let standard = WindowConfig {
            length_s: 3.0,
            hop_s: 3.0,
            min_last_s: 0.5,
        };
        let windows = TrainConfig::default().training_windows(&standard);
        assert_eq!(windows.hop_s, RECOMMENDED_TRAIN_HOP_S);
        assert_eq!((windows.length_s, windows.min_last_s), (3.0, 0.5));
        assert_eq!(TrainConfig::reference().train_hop_s, 5.0);
    }

    #[test]
    fn the_reference_recipe_keeps_the_python_pipelines_penalty() {
        let reference = TrainConfig::reference();
        assert_eq!(reference.l2, 1e-3);
        assert_eq!(reference.features, FeatureSet::Librosa);
        assert_eq!(TrainConfig::default().l2, RECOMMENDED_L2);
        assert!(RECOMMENDED_L2 < reference.l2);
    }

    #[test]
    fn configs_without_a_training_hop_trained_on_the_standard_windows() {
        let mut json = serde_json::to_value(TrainConfig::default()).unwrap();
        json.as_object_mut().unwrap().remove("train_hop_s");
        let old: TrainConfig = serde_json::from_value(json).unwrap();
        assert_eq!(old.train_hop_s, WindowConfig::default().hop_s);
    }
}
