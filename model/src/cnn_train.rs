//! Training the spectrogram CNN from whole recordings' spectrograms.
//!
//! The MLP trains on windows cut once; the CNN, with far more weights per recording,
//! would learn those few windows by heart. Here every epoch draws new crops from each
//! recording's band power ([`CnnTraining`]): a random start (every frame is a possible
//! window), the class first when classes are balanced, SpecAugment-style time and
//! frequency masks, another recording's quiet stretch mixed in under the crop and,
//! optionally, another species' call mixed in with both labelled present. The
//! outputs, negatives and stopping rules are the other architectures' ([`Output`],
//! [`Stopping`](crate::config::Stopping)): with sigmoid outputs, background recordings, synthetic background
//! (`negatives`) and crops more than the quiet margin below their recording's loudest
//! train every species as absent; early stopping watches the validation recordings'
//! log loss (a holdout by recording) and keeps the best epoch.
//!
//! Deterministic for a seed, as [`mod@crate::train`] is: crops, masks, mixing and
//! dropout come from generators seeded from [`TrainConfig::seed`].

use burn::module::Module;
use burn::optim::{AdamConfig, GradientsParams};
use burn::tensor::{Device, Tensor, TensorData};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::artifact::{Artifact, ArtifactMeta};
use crate::cnn::{Cnn, CnnEnsemble};
use crate::config::{CnnTraining, EpochReport, TrainConfig};
use crate::dataset::{DataSummary, Recording, class_list, is_background};
use crate::evaluate::{Evaluation, evaluate};
use crate::familiarity::{Familiarity, TrainingWindow};
use crate::features::FeatureSet;
use crate::inference::{Classifier, ModelInfo, Networks};
use crate::negatives::synthetic_clips;
use crate::network::{CNN, NetworkConfig, Output};
use crate::scaler::Scaler;
use crate::spectrogram::{
    MEL_BANDS, MEL_FEATURE_VERSION, MEL_VECTOR, PATCH_FRAMES, PATCH_LEN, Spectrogram, centre_bands,
    frames_in, mean_power, vector_into,
};
use crate::train::{EarlyStop, epoch_report};
use crate::train::{TrainedModel, batch_loss, dropout_mask, validate_config};
use crate::{ModelError, Result};

/// One labelled recording as the CNN trains on it: its band power, not its windows.
#[derive(Debug, Clone, PartialEq)]
pub struct SpectrogramRecording {
    /// Stable identifier, as [`Recording::id`].
    pub id: String,
    /// Species label (or a background label) of the whole recording.
    pub label: String,
    /// Its band power.
    pub spectrogram: Spectrogram,
}

impl SpectrogramRecording {
    /// Its id and label as a [`Recording`] without windows: what splits by recording
    /// and class lists read.
    pub fn stub(&self) -> Recording {
        Recording {
            id: self.id.clone(),
            label: self.label.clone(),
            windows: Vec::new(),
        }
    }
}

/// Spacing of the crops a recording's loudness and its quiet stretches are measured
/// on: 1.25 s.
const GRID_FRAMES: usize = PATCH_FRAMES / 4;
/// Draws [`CropData::other_species_call`] makes before giving up on a mix.
const SPECIES_MIX_DRAWS: usize = 8;
/// Largest level difference, dB, between a crop and another species' call mixed in.
const SPECIES_MIX_DB: f32 = 6.0;
/// Quiet margin used for mixing when the recipe trains no quiet negatives.
const DEFAULT_QUIET_MARGIN_DB: f32 = 20.0;

/// Trains a `cnn` ([`TrainConfig::cnn`]) on the default CPU device; see [`train_cnn_on`].
pub fn train_cnn(
    train_set: &[SpectrogramRecording],
    validation_set: Option<&[Recording]>,
    config: &TrainConfig,
    progress: impl FnMut(&EpochReport),
) -> Result<TrainedModel> {
    train_cnn_on(
        &crate::device::cpu(),
        train_set,
        validation_set,
        config,
        progress,
    )
}

/// Trains a `cnn` on `train_set`'s spectrograms on `device`, calling `progress` after
/// each epoch. `validation_set` holds other recordings' mel-patch windows
/// ([`crate::spectrogram::file_vectors`]): reported each epoch, watched by early
/// stopping, evaluated into the artifact as `"validation"`.
pub fn train_cnn_on(
    device: &Device,
    train_set: &[SpectrogramRecording],
    validation_set: Option<&[Recording]>,
    config: &TrainConfig,
    mut progress: impl FnMut(&EpochReport),
) -> Result<TrainedModel> {
    validate_config(config, validation_set.is_some())?;
    let settings = match (&config.spectrogram, config.architecture == CNN) {
        (Some(s), true) => s.clone(),
        _ => {
            return Err(ModelError::InvalidConfig(format!(
                "train_cnn trains the {CNN} architecture with spectrogram settings, not {:?}",
                config.architecture
            )));
        }
    };
    let labels: Vec<Recording> = train_set.iter().map(SpectrogramRecording::stub).collect();
    let classes = class_list(&labels);
    if classes.len() < 2 {
        return Err(ModelError::InvalidDataset(format!(
            "training needs recordings of at least two labels, got {classes:?}"
        )));
    }
    let validation_set = validation_set.filter(|v| !v.is_empty());
    if let Some(v) = validation_set {
        if let Some(r) = v.iter().find(|r| !classes.contains(&r.label)) {
            return Err(ModelError::UnknownLabel(r.label.clone()));
        }
        if let Some(w) = v
            .iter()
            .flat_map(|r| &r.windows)
            .find(|w| w.len() != MEL_VECTOR)
        {
            return Err(ModelError::InputSize {
                expected: MEL_VECTOR,
                actual: w.len(),
            });
        }
    }
    let k = classes.len();
    let sigmoid = config.output == Output::Sigmoid;

    let synthetic = if sigmoid && config.synthetic_negatives {
        synthetic_clips()
            .into_iter()
            .map(Spectrogram::of_bytes)
            .collect::<Result<Vec<_>>>()?
    } else {
        Vec::new()
    };
    let mut sources = Vec::with_capacity(train_set.len() + synthetic.len());
    for r in train_set {
        let label = if is_background(&r.label) {
            k
        } else {
            classes
                .binary_search(&r.label)
                .map_err(|_| ModelError::UnknownLabel(r.label.clone()))?
        };
        sources.push(Source::new(&r.spectrogram, label, true));
    }
    sources.extend(synthetic.iter().map(|s| Source::new(s, k, false)));
    let margin = config.quiet_margin_db.unwrap_or(DEFAULT_QUIET_MARGIN_DB);
    let quiet_negatives = sigmoid && config.quiet_margin_db.is_some();
    let data = CropData::new(sources, k, sigmoid, margin, &settings, quiet_negatives);
    let real_seconds: f64 = train_set
        .iter()
        .map(|r| r.spectrogram.frames() as f64 / frames_in(1.0) as f64)
        .sum();
    let crops =
        ((real_seconds * settings.crops_per_second).round() as usize).max(config.batch_size);

    let mut network_config = NetworkConfig::named(CNN, PATCH_LEN, k)?;
    network_config.members = config.members;
    network_config.output = config.output;
    network_config.band_medians = settings.band_medians;
    network_config.validate()?;
    let info = |weights_sha256: String| ModelInfo {
        architecture: CNN.to_string(),
        feature_version: MEL_FEATURE_VERSION.to_string(),
        input_size: MEL_VECTOR,
        features: FeatureSet::Mel,
        version: None,
        weights_sha256,
        output: config.output,
        context_windows: config.context_windows,
    };
    let scaler = Scaler::identity(PATCH_LEN);
    let validate = |network: &Cnn| -> Result<Option<Evaluation>> {
        let Some(v) = validation_set else {
            return Ok(None);
        };
        let classifier = Classifier::from_parts(
            Networks::cnn(CnnEnsemble::new(vec![network.valid()])?, &network_config)?,
            device.clone(),
            scaler.clone(),
            classes.clone(),
            info(String::new()),
        );
        evaluate(&classifier, v).map(Some)
    };

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
            crops,
            (member, init_seed, rng_seed),
            &validate,
            &mut |report: &EpochReport| {
                progress(report);
                history.push(report.clone());
            },
        )?;
        members.push(network);
    }

    let ensemble = CnnEnsemble::new(members)?;
    let weights = ensemble.to_bytes()?;
    let training_data = DataSummary::of_counts(train_set.iter().map(|r| {
        (
            r.id.as_str(),
            r.label.as_str(),
            r.spectrogram.window_count(),
        )
    }));
    let meta = ArtifactMeta::new(
        network_config.clone(),
        config.clone(),
        classes.clone(),
        scaler.clone(),
        MEL_FEATURE_VERSION.to_string(),
        training_data,
        validation_set.map(DataSummary::of),
        history,
    );
    let mut artifact = Artifact::new(meta, weights)?;
    let classifier = Classifier::from_parts(
        Networks::cnn(ensemble, &network_config)?,
        device.clone(),
        scaler,
        classes,
        info(artifact.meta().weights_sha256.clone()),
    );
    let familiarity = settings
        .familiar_quantile
        .map(|q| fit_familiarity(&classifier, train_set, q))
        .transpose()?;
    let classifier = classifier.with_familiarity(familiarity.as_ref())?;
    artifact.set_familiarity(familiarity);
    if let Some(v) = validation_set {
        artifact.set_metrics("validation", evaluate(&classifier, v)?);
    }
    Ok(TrainedModel {
        artifact,
        classifier,
    })
}

/// Each species' reference calls and radius ([`crate::familiarity`]) from the
/// training recordings' windows as the trained network scores and embeds them: the
/// standard non-overlapping 5-s windows, cut from the spectrograms training read.
fn fit_familiarity(
    classifier: &Classifier,
    train_set: &[SpectrogramRecording],
    quantile: f64,
) -> Result<Familiarity> {
    let k = classifier.classes().len();
    let mut scores = Vec::new();
    let mut embeddings = Vec::new();
    let mut owners = Vec::new();
    let mut width = 0;
    for (recording, r) in train_set.iter().enumerate() {
        let Ok(class) = classifier.classes().binary_search(&r.label) else {
            continue; // background: no species of its own
        };
        let windows = r.spectrogram.window_vectors();
        let (s, e, w) = classifier.network_scores_and_embeddings(&windows)?;
        width = w;
        owners.extend(std::iter::repeat_n((recording, class), windows.len()));
        scores.extend(s);
        embeddings.extend(e);
    }
    let windows: Vec<TrainingWindow<'_>> = owners
        .iter()
        .zip(scores.chunks_exact(k))
        .zip(embeddings.chunks_exact(width.max(1)))
        .map(
            |((&(recording, class), scores), embedding)| TrainingWindow {
                recording,
                class,
                score: scores[class],
                embedding,
            },
        )
        .collect();
    Familiarity::fit(&windows, k, width, quantile)
}

/// A recording crops are drawn from.
struct Source<'a> {
    spectrogram: &'a Spectrogram,
    /// Class index, `k` for background.
    label: usize,
    /// Level of its loudest crop on the grid, dB.
    loudest_db: f32,
    /// A real recording (its quiet stretches may be mixed into others).
    real: bool,
}

impl<'a> Source<'a> {
    fn new(spectrogram: &'a Spectrogram, label: usize, real: bool) -> Self {
        let loudest_db = grid(spectrogram)
            .map(|start| level_db(spectrogram.frames_from(start, PATCH_FRAMES)))
            .fold(f32::NEG_INFINITY, f32::max);
        Self {
            spectrogram,
            label,
            loudest_db,
            real,
        }
    }
}

/// Crop starts every [`GRID_FRAMES`] frames.
fn grid(s: &Spectrogram) -> impl Iterator<Item = usize> {
    (0..s.crop_starts()).step_by(GRID_FRAMES)
}

/// Mean power of band power in dB.
fn level_db(power: &[f32]) -> f32 {
    10.0 * mean_power(power).max(1e-10).log10()
}

/// Everything crops are drawn from: the recordings, who may be drawn for which
/// group, and the quiet stretches to mix in.
struct CropData<'a> {
    sources: Vec<Source<'a>>,
    /// Per group (class, then background), its recordings and their cumulative crop
    /// counts (for drawing a recording by length).
    groups: Vec<(Vec<usize>, Vec<u64>)>,
    /// (recording, start) of the quiet crops of real recordings.
    quiet: Vec<(usize, usize)>,
    /// Real recordings of a species, for species mixing (empty with softmax outputs
    /// or mixing off).
    species: Vec<usize>,
    k: usize,
    margin_db: f32,
    settings: CnnTraining,
    /// Train quiet crops as negatives.
    quiet_negatives: bool,
}

impl<'a> CropData<'a> {
    fn new(
        sources: Vec<Source<'a>>,
        k: usize,
        sigmoid: bool,
        margin_db: f32,
        settings: &CnnTraining,
        quiet_negatives: bool,
    ) -> Self {
        let usable = |s: &Source<'_>| sigmoid || s.label < k;
        let mut by_group: Vec<Vec<usize>> = vec![Vec::new(); k + 1];
        for (i, s) in sources.iter().enumerate() {
            if usable(s) {
                let group = if settings.class_balanced { s.label } else { 0 };
                by_group[group].push(i);
            }
        }
        let groups = by_group
            .into_iter()
            .filter(|g| !g.is_empty())
            .map(|members| {
                let mut total = 0u64;
                let cumulative = members
                    .iter()
                    .map(|&i| {
                        total += sources[i].spectrogram.crop_starts() as u64;
                        total
                    })
                    .collect();
                (members, cumulative)
            })
            .collect();
        let mut quiet = Vec::new();
        for (i, s) in sources.iter().enumerate().filter(|(_, s)| s.real) {
            for start in grid(s.spectrogram) {
                let level = level_db(s.spectrogram.frames_from(start, PATCH_FRAMES));
                if s.label == k || level < s.loudest_db - margin_db {
                    quiet.push((i, start));
                }
            }
        }
        // Empty unless mixing is asked for, so that the recipe without it draws
        // the same random stream (and trains the same network) as before it existed.
        let species = if sigmoid && settings.species_mix_probability > 0.0 {
            (0..sources.len())
                .filter(|&i| sources[i].real && sources[i].label < k)
                .collect()
        } else {
            Vec::new()
        };
        Self {
            sources,
            groups,
            quiet,
            species,
            k,
            margin_db,
            settings: settings.clone(),
            quiet_negatives,
        }
    }

    /// A loud crop (within the quiet margin of its recording's loudest) of a real
    /// recording of another species than `label`, as (recording, start); `None`
    /// when a few draws found none.
    fn other_species_call(&self, rng: &mut StdRng, label: usize) -> Option<(usize, usize)> {
        for _ in 0..SPECIES_MIX_DRAWS {
            let index = *self
                .species
                .get(rng.random_range(0..self.species.len().max(1)))?;
            let source = &self.sources[index];
            if source.label == label {
                continue;
            }
            let start = rng.random_range(0..source.spectrogram.crop_starts());
            let level = level_db(source.spectrogram.frames_from(start, PATCH_FRAMES));
            if level >= source.loudest_db - self.margin_db {
                return Some((index, start));
            }
        }
        None
    }

    /// Draws one training crop: appends its patch to `x` and returns its class (`k`:
    /// negative) and the class of another species' call mixed into it, if any.
    fn draw(
        &self,
        rng: &mut StdRng,
        x: &mut Vec<f32>,
        buffer: &mut Vec<f32>,
    ) -> (usize, Option<usize>) {
        let (members, cumulative) = &self.groups[rng.random_range(0..self.groups.len())];
        let total = cumulative.last().copied().unwrap_or(1).max(1);
        let pick = rng.random_range(0..total);
        let index = members[cumulative
            .partition_point(|&c| c <= pick)
            .min(members.len() - 1)];
        let source = &self.sources[index];
        let start = rng.random_range(0..source.spectrogram.crop_starts());
        buffer.clear();
        buffer.extend_from_slice(source.spectrogram.frames_from(start, PATCH_FRAMES));
        let quiet = level_db(buffer) < source.loudest_db - self.margin_db;
        let label = if self.quiet_negatives && quiet {
            self.k
        } else {
            source.label
        };
        let mut mixed = None;
        if !self.species.is_empty()
            && rng.random_bool(self.settings.species_mix_probability)
            && let Some((other, other_start)) = self.other_species_call(rng, label)
        {
            let call = self.sources[other]
                .spectrogram
                .frames_from(other_start, PATCH_FRAMES);
            // Either call may be the louder, by up to SPECIES_MIX_DB.
            let relative = rng.random_range(-SPECIES_MIX_DB..=SPECIES_MIX_DB);
            add_in_power(buffer, call, relative);
            mixed = Some(self.sources[other].label);
        }
        if !self.quiet.is_empty() && rng.random_bool(self.settings.mix_probability) {
            let (other, other_start) = self.quiet[rng.random_range(0..self.quiet.len())];
            if other != index {
                let background = self.sources[other]
                    .spectrogram
                    .frames_from(other_start, PATCH_FRAMES);
                let below = rng.random_range(self.settings.mix_min_db..=self.settings.mix_max_db);
                add_in_power(buffer, background, -below);
            }
        }
        let start = x.len();
        vector_into(buffer, x);
        x.truncate(start + PATCH_LEN);
        if self.settings.band_medians {
            centre_bands(&mut x[start..]);
        }
        mask(rng, &mut x[start..], &self.settings);
        (label, mixed)
    }
}

/// Adds `added` to `crop`, in power, scaled so that its mean power is `relative_db`
/// from the crop's.
fn add_in_power(crop: &mut [f32], added: &[f32], relative_db: f32) {
    let gain = mean_power(crop) / mean_power(added).max(1e-20) * 10f32.powf(relative_db / 10.0);
    for (p, a) in crop.iter_mut().zip(added) {
        *p += gain * a;
    }
}

/// SpecAugment: runs of frames and of bands set to the patch's mean.
fn mask(rng: &mut StdRng, patch: &mut [f32], s: &CnnTraining) {
    let mean = patch.iter().sum::<f32>() / patch.len().max(1) as f32;
    for _ in 0..s.time_masks {
        let width = rng.random_range(0..=s.max_time_mask);
        let t0 = rng.random_range(0..=PATCH_FRAMES - width);
        for band in patch.chunks_exact_mut(PATCH_FRAMES) {
            band[t0..t0 + width].fill(mean);
        }
    }
    for _ in 0..s.frequency_masks {
        let width = rng.random_range(0..=s.max_frequency_mask);
        let b0 = rng.random_range(0..=MEL_BANDS - width);
        patch[b0 * PATCH_FRAMES..(b0 + width) * PATCH_FRAMES].fill(mean);
    }
}

/// Trains one network on `crops` fresh crops per epoch; returns it without autodiff.
#[allow(clippy::too_many_arguments)]
fn train_member(
    device: &Device,
    network_config: &NetworkConfig,
    config: &TrainConfig,
    data: &CropData<'_>,
    crops: usize,
    (number, init_seed, rng_seed): (usize, u64, u64),
    validate: &dyn Fn(&Cnn) -> Result<Option<Evaluation>>,
    progress: &mut dyn FnMut(&EpochReport),
) -> Result<Cnn> {
    let ad_device = device.clone().autodiff();
    let mut network = Cnn::init(network_config, init_seed, &ad_device);
    let mut rng = StdRng::seed_from_u64(rng_seed);
    let mut optimizer = AdamConfig::new().with_epsilon(1e-7).init();
    let k = data.k;
    let rate = network_config.dropout.last().copied().unwrap_or(0.0);
    let mut stopper = EarlyStop::new(&config.stopping);
    let mut buffer = Vec::with_capacity(PATCH_LEN);
    let decay = data.settings.learning_rate_decay;
    let steps = config.epochs * crops.div_ceil(config.batch_size.max(1));
    let mut step = 0;
    for epoch in 1..=config.epochs {
        let mut loss_sum = 0.0;
        let mut done = 0;
        while done < crops {
            let b = config.batch_size.min(crops - done);
            let mut x = Vec::with_capacity(b * (PATCH_LEN + 1));
            let mut target = vec![0f32; b * k];
            for row in 0..b {
                let (label, mixed) = data.draw(&mut rng, &mut x, &mut buffer);
                for class in std::iter::once(label).chain(mixed) {
                    if class < k {
                        target[row * k + class] = 1.0;
                    }
                }
            }
            let x = Tensor::<2>::from_data(TensorData::new(x, [b, PATCH_LEN]), &ad_device);
            let target = Tensor::<2>::from_data(TensorData::new(target, [b, k]), &ad_device);
            let mask = (rate > 0.0)
                .then(|| dropout_mask(&mut rng, b, network.feature_width(), rate, &ad_device));
            let logits = network.forward_train(x, mask);
            let loss = batch_loss(logits, target, vec![1.0; b], config.output)
                + network.l2_sum().mul_scalar(config.l2);
            loss_sum += f64::from(loss.clone().into_scalar::<f32>()) * b as f64;
            let grads = GradientsParams::from_grads(loss.backward(), &network);
            let learning_rate = decay.rate_at(config.learning_rate, step, steps);
            network = optimizer.step(learning_rate, network, grads);
            step += 1;
            done += b;
        }
        let report = epoch_report(
            config,
            epoch,
            number,
            loss_sum / crops as f64,
            validate(&network)?,
        );
        progress(&report);
        if stopper.should_stop(report.validation_loss, &network) {
            break;
        }
    }
    Ok(stopper.best_or(network).valid())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Steady band power: 1 in `band`, a faint floor elsewhere.
    fn steady(band: usize) -> Spectrogram {
        let frames = 3 * PATCH_FRAMES;
        let power = (0..frames * MEL_BANDS)
            .map(|i| if i % MEL_BANDS == band { 1.0 } else { 1e-6 })
            .collect();
        Spectrogram::from_power(power).unwrap()
    }

    fn settings(species_mix_probability: f64) -> CnnTraining {
        CnnTraining {
            time_masks: 0,
            frequency_masks: 0,
            mix_probability: 0.0,
            species_mix_probability,
            ..CnnTraining::default()
        }
    }

    /// Mean of a patch's row for `band`.
    fn band_level(patch: &[f32], band: usize) -> f32 {
        let row = &patch[band * PATCH_FRAMES..(band + 1) * PATCH_FRAMES];
        row.iter().sum::<f32>() / row.len() as f32
    }

    #[test]
    fn species_mixing_adds_the_other_species_call_and_its_label() {
        let (a, b) = (steady(5), steady(20));
        let sources = vec![Source::new(&a, 0, true), Source::new(&b, 1, true)];
        let data = CropData::new(sources, 2, true, 20.0, &settings(1.0), false);
        let mut rng = StdRng::seed_from_u64(7);
        let (mut x, mut buffer) = (Vec::new(), Vec::new());
        for _ in 0..20 {
            x.clear();
            let (label, mixed) = data.draw(&mut rng, &mut x, &mut buffer);
            assert_eq!(mixed, Some(1 - label), "the other species, labelled");
            let quiet_band = band_level(&x, 12);
            assert!(
                band_level(&x, 5) > quiet_band + 0.3,
                "{label}: band 5 holds a call"
            );
            assert!(
                band_level(&x, 20) > quiet_band + 0.3,
                "{label}: band 20 holds a call"
            );
        }
    }

    #[test]
    fn no_species_mixing_when_off_or_with_softmax() {
        let (a, b) = (steady(5), steady(20));
        let sources = || vec![Source::new(&a, 0, true), Source::new(&b, 1, true)];
        let off = CropData::new(sources(), 2, true, 20.0, &settings(0.0), false);
        let softmax = CropData::new(sources(), 2, false, 20.0, &settings(1.0), false);
        let mut rng = StdRng::seed_from_u64(7);
        let (mut x, mut buffer) = (Vec::new(), Vec::new());
        for data in [&off, &softmax] {
            for _ in 0..20 {
                x.clear();
                let (label, mixed) = data.draw(&mut rng, &mut x, &mut buffer);
                assert_eq!(mixed, None);
                let other = if label == 0 { 20 } else { 5 };
                assert!(band_level(&x, other) < band_level(&x, 12) + 0.3);
            }
        }
    }
}
