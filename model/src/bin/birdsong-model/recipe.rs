//! The training recipe's options, shared by `train` and `cross-validate`.

use birdsong_model::{EpochReport, FeatureSet, LearningRateDecay, Output, Stopping, TrainConfig};
use clap::Args;

/// The recipe the other options start from.
#[derive(Clone, Copy, Debug, PartialEq, clap::ValueEnum)]
pub(crate) enum Recipe {
    /// Five networks on the band profile without medians, windows every 1.25 s, L2
    /// 1.6e-5 (`TrainConfig::default()`).
    Recommended,
    /// The Python pipeline's: one network on librosa's 95 features, windows every 5 s,
    /// L2 1e-3 (`TrainConfig::reference()`).
    Reference,
}

/// How to train: shared by `train` and `cross-validate`.
#[derive(Args)]
pub(crate) struct RecipeArgs {
    /// Recipe whose features, L2, training hop and number of networks apply unless set
    /// below.
    #[arg(long, value_enum, default_value_t = Recipe::Recommended)]
    pub(crate) recipe: Recipe,
    /// Seed of the validation split, initialisation, shuffling and dropout.
    #[arg(long, default_value_t = 0)]
    pub(crate) seed: u64,
    /// Epochs (the fixed budget, or the maximum with --patience; default: the
    /// recipe's, 60, or 30 for `--architecture cnn`).
    #[arg(long)]
    pub(crate) epochs: Option<usize>,
    /// Windows per minibatch.
    #[arg(long, default_value_t = 32)]
    pub(crate) batch_size: usize,
    /// Adam learning rate.
    #[arg(long, default_value_t = 1e-3)]
    pub(crate) learning_rate: f64,
    /// L2 penalty on kernel weights (default: the recipe's).
    #[arg(long)]
    l2: Option<f64>,
    /// Standard deviation of Gaussian noise added to standardised training inputs.
    #[arg(long, default_value_t = 0.0)]
    pub(crate) input_noise: f32,
    /// Average the weights of the last N epochs (stochastic weight averaging); 0 = off.
    #[arg(long, default_value_t = 0)]
    pub(crate) average_last_epochs: usize,
    /// Network architecture: `mlp`, `shallow`, `linear`, `anchored`, or `cnn` (a
    /// convolutional network on each window's log-mel patch, trained from whole
    /// recordings' spectrograms with `TrainConfig::cnn()`'s recipe, whatever --recipe
    /// says).
    #[arg(long, default_value = birdsong_model::MLP)]
    pub(crate) architecture: String,
    /// With `cnn`: training crops per epoch for each second of training audio.
    #[arg(long)]
    pub(crate) crops_per_second: Option<f64>,
    /// With `cnn`: share of crops another recording's quiet stretch is mixed into.
    #[arg(long)]
    pub(crate) mix_probability: Option<f64>,
    /// With `cnn`: share of crops another species' call is mixed into, both labelled
    /// present (sigmoid outputs).
    #[arg(long)]
    pub(crate) species_mix_probability: Option<f64>,
    /// With `cnn`: subtract each band's median from every patch (steady background
    /// reads as zero), in training and wherever the model is served.
    #[arg(long)]
    pub(crate) band_medians: bool,
    /// With `cnn`: the learning rate's course, `constant` or `cosine` (a half cosine
    /// to zero over the planned epochs; default: the recipe's).
    #[arg(long)]
    pub(crate) learning_rate_decay: Option<LearningRateDecay>,
    /// With `cnn`: the share of each species' training calls within the radius
    /// beyond which a window's score for it is set to 0 (default: the recipe's, 0.8).
    #[arg(long, conflicts_with = "no_familiarity")]
    pub(crate) familiar_quantile: Option<f64>,
    /// With `cnn`: serve the network's scores without judging how familiar each
    /// window looks.
    #[arg(long)]
    pub(crate) no_familiarity: bool,
    /// Which features the network reads (default: the recipe's):
    /// `bands_no_median` (the band profile without its per-band medians), `bands` (the
    /// band profile), `all` (librosa's 95 and the band profile) or `librosa` (the
    /// reference recipe's 95).
    #[arg(long)]
    pub(crate) features: Option<FeatureSet>,
    /// Weight windows so that every recording counts the same, however long.
    #[arg(long)]
    pub(crate) balance_recordings: bool,
    /// Turn off balanced class weights.
    #[arg(long)]
    pub(crate) no_class_weights: bool,
    /// Hop between training windows in seconds (default: the recipe's);
    /// below the 5 s window length, windows overlap and the network sees more (shifted)
    /// examples. Evaluation always uses the standard non-overlapping windows.
    #[arg(long)]
    pub(crate) train_hop_s: Option<f64>,
    /// Networks to train from different seeds and average (default: the recipe's).
    /// Each costs a full training run.
    #[arg(long)]
    pub(crate) members: Option<usize>,
    /// How outputs become scores (default: the recipe's): `sigmoid` (one presence
    /// score per species, trained one-vs-rest) or `softmax` (one distribution).
    #[arg(long)]
    pub(crate) output: Option<Output>,
    /// With sigmoid outputs, train windows this many dB below their recording's
    /// loudest as negatives (default: the recipe's).
    #[arg(long, conflicts_with = "no_quiet_negatives")]
    pub(crate) quiet_margin_db: Option<f32>,
    /// Train every window as its recording's label, quiet or not.
    #[arg(long)]
    pub(crate) no_quiet_negatives: bool,
    /// Do not train synthetic background (silence, noise, hum) as negatives.
    #[arg(long)]
    pub(crate) no_synthetic_negatives: bool,
    /// Neighbouring windows each side averaged into a window's served scores
    /// (default: the recipe's, 1 for `recommended`, 0 for `reference`).
    #[arg(long)]
    pub(crate) context_windows: Option<usize>,
}

impl RecipeArgs {
    pub(crate) fn config(&self, patience: Option<usize>) -> TrainConfig {
        let cnn = self.architecture == birdsong_model::CNN;
        let recipe = match self.recipe {
            _ if cnn => TrainConfig::cnn(),
            Recipe::Recommended => TrainConfig::default(),
            Recipe::Reference => TrainConfig::reference(),
        };
        let spectrogram = recipe.spectrogram.clone().map(|mut s| {
            if let Some(c) = self.crops_per_second {
                s.crops_per_second = c;
            }
            if let Some(p) = self.mix_probability {
                s.mix_probability = p;
            }
            if let Some(p) = self.species_mix_probability {
                s.species_mix_probability = p;
            }
            s.band_medians |= self.band_medians;
            if let Some(d) = self.learning_rate_decay {
                s.learning_rate_decay = d;
            }
            if self.no_familiarity {
                s.familiar_quantile = None;
            } else if let Some(q) = self.familiar_quantile {
                s.familiar_quantile = Some(q);
            }
            s
        });
        // An anchored head is one network on BirdNET's embedding (the anchor is the
        // ensemble's second member).
        let anchored = self.architecture == birdsong_model::ANCHORED;
        let (recipe_features, recipe_members) = if anchored {
            (FeatureSet::Birdnet, 1)
        } else {
            (recipe.features, recipe.members)
        };
        TrainConfig {
            architecture: self.architecture.clone(),
            features: self.features.unwrap_or(recipe_features),
            epochs: self.epochs.unwrap_or(recipe.epochs),
            batch_size: self.batch_size,
            learning_rate: self.learning_rate,
            l2: self.l2.unwrap_or(recipe.l2),
            class_weighting: recipe.class_weighting && !self.no_class_weights,
            balance_recordings: self.balance_recordings,
            input_noise: self.input_noise,
            average_last_epochs: self.average_last_epochs,
            train_hop_s: self.train_hop_s.unwrap_or(recipe.train_hop_s),
            members: self.members.unwrap_or(recipe_members),
            output: self.output.unwrap_or(recipe.output),
            quiet_margin_db: if self.no_quiet_negatives {
                None
            } else {
                self.quiet_margin_db.or(recipe.quiet_margin_db)
            },
            synthetic_negatives: recipe.synthetic_negatives && !self.no_synthetic_negatives,
            stopping: match patience {
                Some(patience) => Stopping::EarlyStopping { patience },
                None => Stopping::FixedEpochs,
            },
            seed: self.seed,
            context_windows: self.context_windows.unwrap_or(recipe.context_windows),
            spectrogram,
        }
    }
}

pub(crate) fn epoch_message(r: &EpochReport) -> String {
    let mut msg = match r.members {
        1 => String::new(),
        n => format!("network {}/{n} ", r.member),
    };
    msg.push_str(&format!("loss {:.4}", r.loss));
    if let (Some(acc), Some(rec)) = (r.validation_accuracy, r.validation_recording_accuracy) {
        msg.push_str(&format!(" val acc {acc:.3} (recordings {rec:.3})"));
    }
    msg
}
