//! The networks: their configuration (what goes into `model.json`) and the burn modules.
//!
//! Architectures are looked up by name so that an artifact says which one it holds and a
//! newer build can add architectures without breaking old artifacts. The reference
//! architecture is `"mlp"`: 95 → 512 → 256 → 128 → classes with ReLU and dropout
//! 0.5 / 0.4 / 0.3, the network the Python pipeline used.
//!
//! A model holds one network or an ensemble of several of the same shape, trained from
//! different seeds, whose class probabilities are averaged (`Ensemble`).
//!
//! Weights are initialised here from our own seeded generator (Glorot uniform kernels,
//! zero biases, as Keras does) rather than burn's backend RNG: burn seeds the ndarray
//! backend through one process-wide generator, which two trainings running in parallel
//! (tests, a retrainer) would share, and then the same seed would no longer give the same
//! weights.

use burn::module::{Module, Param, ParamId};
use burn::nn::Linear;
use burn::store::ModuleRecord;
use burn::tensor::activation::{relu, sigmoid, softmax};
use burn::tensor::{Bytes, Device, Tensor, TensorData};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

use crate::{ModelError, Result};

/// Name of the reference architecture.
pub const MLP: &str = "mlp";
/// One linear layer per species on the input: logistic regression, the head BirdNET
/// itself puts on its embedding, and the one that overfits least on few recordings.
pub const LINEAR: &str = "linear";
/// One hidden layer of 256 with dropout 0.5: BirdNET-Analyzer's custom classifier with
/// hidden units, for embeddings.
pub const SHALLOW: &str = "shallow";
/// A linear head on BirdNET's embedding trained from, and served averaged with,
/// BirdNET's own species layer (see [`crate::anchor`]).
pub const ANCHORED: &str = "anchored";

/// A convolutional network over each window's log-mel patch ([`crate::cnn`]), trained
/// from recordings' spectrograms ([`crate::train_cnn`]).
pub const CNN: &str = "cnn";

/// Every architecture this build can build, by name.
pub const ARCHITECTURES: &[&str] = &[MLP, LINEAR, SHALLOW, ANCHORED, CNN];

/// Most networks one ensemble may hold: each costs a full training run and a forward
/// pass per window, and averaging beyond a handful changes little.
pub const MAX_MEMBERS: usize = 16;

/// Shape of a network: stored in the artifact and enough to rebuild the module before its
/// weights are loaded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NetworkConfig {
    /// Architecture name (one of [`ARCHITECTURES`]).
    pub architecture: String,
    /// Features per window.
    pub input_size: usize,
    /// Width of each hidden layer, input side first (for `cnn`: the output channels of
    /// each convolution block).
    pub hidden: Vec<usize>,
    /// Dropout rate after each hidden layer (training only; for `cnn`, only the last
    /// block's may be non-zero, applied to its features pooled over time).
    pub dropout: Vec<f32>,
    /// Number of output classes.
    pub num_classes: usize,
    /// Networks of this shape in the model, whose probabilities are averaged
    /// (configurations written before ensembles existed hold one).
    #[serde(default = "one")]
    pub members: usize,
    /// How the outputs become scores (configurations written before per-species
    /// outputs existed are softmax networks).
    #[serde(default = "Output::legacy")]
    pub output: Output,
    /// For `cnn`: subtract from every band of a patch its median over the patch's
    /// frames before the network sees it ([`crate::spectrogram::centre_bands`]), so a
    /// site's steady noise (insects, wind, a stream) in some bands reads as zero
    /// rather than as part of the call. Configurations written before it existed read
    /// patches as they are.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub band_medians: bool,
}

/// How a network's outputs become scores.
///
/// A softmax spreads one unit of probability over the known species, so a window of
/// wind, or of a species the model was never shown, still gives some species a score
/// near 1: the scores say which species is likeliest *if* one of them is calling, never
/// whether one is. Per-species sigmoid outputs, trained one-vs-rest with windows of
/// other species, quiet windows and labelled background as negatives, each say whether
/// that species is present, so "none of these" is every score being low.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Output {
    /// One probability distribution over the species (rows sum to 1).
    Softmax,
    /// An independent presence score per species.
    #[default]
    Sigmoid,
}

impl Output {
    /// What artifacts written before this setting existed use.
    pub(crate) fn legacy() -> Self {
        Output::Softmax
    }

    /// The name used in configurations and reports.
    pub fn name(self) -> &'static str {
        match self {
            Output::Softmax => "softmax",
            Output::Sigmoid => "sigmoid",
        }
    }
}

impl std::str::FromStr for Output {
    type Err = ModelError;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "softmax" => Ok(Output::Softmax),
            "sigmoid" => Ok(Output::Sigmoid),
            other => Err(ModelError::InvalidConfig(format!(
                "unknown output {other:?} (softmax or sigmoid)"
            ))),
        }
    }
}

/// Serde default of member counts written before ensembles existed.
pub(crate) fn one() -> usize {
    1
}

/// Refuses an ensemble size outside 1..=[`MAX_MEMBERS`].
pub(crate) fn check_members(members: usize) -> Result<()> {
    if (1..=MAX_MEMBERS).contains(&members) {
        Ok(())
    } else {
        Err(ModelError::InvalidConfig(format!(
            "an ensemble holds 1 to {MAX_MEMBERS} networks, not {members}"
        )))
    }
}

impl NetworkConfig {
    /// The configuration of the architecture called `name`.
    pub fn named(name: &str, input_size: usize, num_classes: usize) -> Result<Self> {
        let (hidden, dropout) = match name {
            MLP => (vec![512, 256, 128], vec![0.5, 0.4, 0.3]),
            LINEAR | ANCHORED => (Vec::new(), Vec::new()),
            SHALLOW => (vec![256], vec![0.5]),
            CNN => {
                let mut dropout = vec![0.0; crate::cnn::CNN_CHANNELS.len()];
                if let Some(last) = dropout.last_mut() {
                    *last = crate::cnn::CNN_DROPOUT;
                }
                (crate::cnn::CNN_CHANNELS.to_vec(), dropout)
            }
            other => {
                return Err(ModelError::InvalidConfig(format!(
                    "unknown architecture {other:?}; known: {ARCHITECTURES:?}"
                )));
            }
        };
        let config = Self {
            architecture: name.to_string(),
            input_size,
            hidden,
            dropout,
            num_classes,
            members: 1,
            output: Output::default(),
            band_medians: false,
        };
        config.validate()?;
        Ok(config)
    }

    /// Checks the configuration is buildable (also run on configurations read from disk).
    pub fn validate(&self) -> Result<()> {
        if !ARCHITECTURES.contains(&self.architecture.as_str()) {
            return Err(ModelError::IncompatibleArtifact(format!(
                "architecture {:?} is not known to this build (known: {ARCHITECTURES:?})",
                self.architecture
            )));
        }
        if self.input_size == 0 || self.num_classes < 2 {
            return Err(ModelError::InvalidConfig(format!(
                "a network needs inputs and at least two classes (input {}, classes {})",
                self.input_size, self.num_classes
            )));
        }
        if self.hidden.len() != self.dropout.len()
            || self.hidden.contains(&0)
            || self.dropout.iter().any(|p| !(0.0..1.0).contains(p))
        {
            return Err(ModelError::InvalidConfig(format!(
                "hidden layers {:?} and dropout rates {:?} do not match",
                self.hidden, self.dropout
            )));
        }
        if self.architecture == CNN {
            crate::cnn::validate(self)?;
        } else if self.band_medians {
            return Err(ModelError::InvalidConfig(format!(
                "band medians are subtracted from a cnn's patches, not from {} inputs",
                self.architecture
            )));
        }
        check_members(self.members)
    }

    /// Builds the network with freshly initialised weights (Glorot uniform, zero biases)
    /// drawn from `seed`, on `device`.
    pub(crate) fn init(&self, seed: u64, device: &Device) -> Network {
        let mut rng = StdRng::seed_from_u64(seed);
        let mut ids = 0u64;
        let mut layer = |d_in: usize, d_out: usize, rng: &mut StdRng| {
            let limit = (6.0 / (d_in + d_out) as f64).sqrt() as f32;
            let weights: Vec<f32> = (0..d_in * d_out)
                .map(|_| rng.random_range(-limit..limit))
                .collect();
            let weight = Tensor::<2>::from_data(TensorData::new(weights, [d_in, d_out]), device);
            let bias = Tensor::<1>::zeros([d_out], device);
            // Fixed parameter ids keep the weights file byte-identical for a given seed.
            let weight = Param::initialized(ParamId::from(ids), weight).set_require_grad(true);
            let bias = Param::initialized(ParamId::from(ids + 1), bias).set_require_grad(true);
            ids += 2;
            Linear {
                weight,
                bias: Some(bias),
            }
        };
        let mut hidden = Vec::with_capacity(self.hidden.len());
        let mut width = self.input_size;
        for &h in &self.hidden {
            hidden.push(layer(width, h, &mut rng));
            width = h;
        }
        let output = layer(width, self.num_classes, &mut rng);
        Network { hidden, output }
    }
}

/// A feed-forward network: hidden ReLU layers and a linear output producing logits.
#[derive(Module, Debug)]
pub(crate) struct Network {
    hidden: Vec<Linear>,
    output: Linear,
}

impl Network {
    /// A network of one linear layer with the given weights (row-major
    /// `inputs × outputs`) and biases: a layer trained elsewhere.
    pub(crate) fn linear(
        weights: Vec<f32>,
        bias: Vec<f32>,
        inputs: usize,
        device: &Device,
    ) -> Result<Self> {
        let outputs = bias.len();
        if inputs == 0 || outputs == 0 || weights.len() != inputs * outputs {
            return Err(ModelError::InvalidConfig(format!(
                "{} weights and {outputs} biases do not make a layer of {inputs} inputs",
                weights.len()
            )));
        }
        let weight = Tensor::<2>::from_data(TensorData::new(weights, [inputs, outputs]), device);
        let bias = Tensor::<1>::from_data(TensorData::new(bias, [outputs]), device);
        // Trainable when `device` records gradients (an anchored head starts here).
        Ok(Network {
            hidden: Vec::new(),
            output: Linear {
                weight: Param::initialized(ParamId::from(0u64), weight).set_require_grad(true),
                bias: Some(Param::initialized(ParamId::from(1u64), bias).set_require_grad(true)),
            },
        })
    }

    /// The output layer's weights (row-major `inputs × outputs`) and biases.
    pub(crate) fn output_layer(&self) -> Result<(Vec<f32>, Vec<f32>)> {
        let invalid = |e| ModelError::InvalidWeights(format!("reading a layer: {e:?}"));
        let weights = self
            .output
            .weight
            .val()
            .into_data()
            .try_into_vec::<f32>()
            .map_err(invalid)?;
        let bias = match &self.output.bias {
            Some(b) => b.val().into_data().try_into_vec::<f32>().map_err(invalid)?,
            None => vec![0.0; self.output.weight.val().dims()[1]],
        };
        Ok((weights, bias))
    }

    /// Squared distance of the output layer's kernel from `anchor` (biases excluded),
    /// the penalty of an anchored head.
    pub(crate) fn anchor_distance(&self, anchor: Tensor<2>) -> Tensor<1> {
        (self.output.weight.val() - anchor).square().sum()
    }

    /// Logits for a batch of standardised inputs `[batch, input_size]` (no dropout).
    pub(crate) fn forward(&self, mut x: Tensor<2>) -> Tensor<2> {
        for layer in &self.hidden {
            x = relu(layer.forward(x));
        }
        self.output.forward(x)
    }

    /// Logits with dropout: `masks[i]` multiplies the activations of hidden layer `i`
    /// (already scaled by `1 / (1 - rate)`, "inverted dropout").
    pub(crate) fn forward_train(&self, mut x: Tensor<2>, masks: Vec<Tensor<2>>) -> Tensor<2> {
        for (layer, mask) in self.hidden.iter().zip(masks) {
            x = relu(layer.forward(x)).mul(mask);
        }
        self.output.forward(x)
    }

    /// The element-wise mean of several networks of the same shape (stochastic weight
    /// averaging over the last epochs of one run: the weights stay in one basin, so their
    /// mean is a network, unlike the mean of independently trained ones). Parameter ids
    /// are the first network's. `None` for no networks.
    pub(crate) fn average(nets: &[Network]) -> Option<Network> {
        let first = nets.first()?;
        let n = nets.len() as f64;
        let mean_linear = |pick: &dyn Fn(&Network) -> &Linear| -> Linear {
            let base = pick(first);
            let rest = &nets[1..];
            let weight = rest
                .iter()
                .fold(base.weight.val(), |sum, net| sum + pick(net).weight.val())
                .div_scalar(n);
            let bias = base.bias.as_ref().map(|b0| {
                let sum = rest
                    .iter()
                    .filter_map(|net| pick(net).bias.as_ref())
                    .fold(b0.val(), |sum, b| sum + b.val());
                Param::initialized(b0.id, sum.div_scalar(n))
            });
            Linear {
                weight: Param::initialized(base.weight.id, weight),
                bias,
            }
        };
        let hidden = (0..first.hidden.len())
            .map(|i| mean_linear(&|net: &Network| &net.hidden[i]))
            .collect();
        let output = mean_linear(&|net: &Network| &net.output);
        Some(Network { hidden, output })
    }

    /// Sum of the squared kernel weights (biases excluded), the L2 penalty as Keras'
    /// `kernel_regularizer=l2(..)` defines it.
    pub(crate) fn l2_sum(&self) -> Tensor<1> {
        self.hidden
            .iter()
            .chain(std::iter::once(&self.output))
            .map(|layer| layer.weight.val().square().sum())
            .reduce(|a, b| a + b)
            .unwrap_or_else(|| Tensor::zeros([1], &self.output.weight.val().device()))
    }
}

/// Networks of one shape trained from different seeds; a model's class probabilities are
/// the mean of theirs.
///
/// A network trained on a few dozen recordings ends up certain of windows it has no
/// grounds to be certain about, and which windows those are changes with the seed: one
/// seed calls a window a vireo with probability 1.00, the next a woodpecker with 1.00.
/// Averaging several such networks keeps what they agree on and turns their
/// disagreements into honest, middling probabilities, which is what a user thresholding
/// detections in SQL needs (model README: cross-validated log loss and accuracy).
#[derive(Module, Debug)]
pub(crate) struct Ensemble {
    members: Vec<Network>,
}

impl Ensemble {
    /// An ensemble of the given networks (at least one).
    pub(crate) fn new(members: Vec<Network>) -> Result<Self> {
        check_members(members.len())?;
        Ok(Self { members })
    }

    /// The member networks, in order.
    #[cfg(test)]
    pub(crate) fn members(&self) -> &[Network] {
        &self.members
    }

    /// Scores for a batch of standardised inputs: each member's softmax or sigmoid
    /// (`output`), averaged over the members.
    pub(crate) fn probabilities(&self, x: Tensor<2>, output: Output) -> Tensor<2> {
        let n = self.members.len();
        let mut members = self.members.iter();
        let Some(first) = members.next() else {
            return x;
        };
        let score = |logits: Tensor<2>| match output {
            Output::Softmax => softmax(logits, 1),
            Output::Sigmoid => sigmoid(logits),
        };
        // Dividing by 1 is exact: one network's scores are unchanged.
        members
            .fold(score(first.forward(x.clone())), |sum, m| {
                sum + score(m.forward(x.clone()))
            })
            .div_scalar(n as f64)
    }

    /// The weights file's bytes: a single network is stored exactly as before ensembles
    /// existed (so its artifact reads anywhere), several as one record of all members.
    pub(crate) fn to_bytes(&self) -> Result<Vec<u8>> {
        let bytes = match self.members.as_slice() {
            [single] => single.clone().into_record().into_bytes(),
            _ => self.clone().into_record().into_bytes(),
        };
        bytes
            .map(|b| b.to_vec())
            .map_err(|e| ModelError::InvalidWeights(e.to_string()))
    }

    /// Rebuilds the ensemble `config` describes from a weights file written by
    /// [`to_bytes`](Self::to_bytes); fails if the weights do not fit it.
    pub(crate) fn from_bytes(
        config: &NetworkConfig,
        bytes: &[u8],
        device: &Device,
    ) -> Result<Self> {
        let record = ModuleRecord::from_bytes(Bytes::from_bytes_vec(bytes.to_vec()))
            .map_err(|e| ModelError::InvalidWeights(e.to_string()))?;
        let invalid = |e: burn::store::RecordError| ModelError::InvalidWeights(e.to_string());
        let members = if config.members == 1 {
            vec![
                config
                    .init(0, device)
                    .try_load_record(record)
                    .map_err(invalid)?
                    .valid(),
            ]
        } else {
            let empty = Self {
                members: (0..config.members)
                    .map(|_| config.init(0, device))
                    .collect(),
            };
            empty
                .try_load_record(record)
                .map_err(invalid)?
                .valid()
                .members
        };
        Self::new(members)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mlp_is_the_reference_shape() {
        let c = NetworkConfig::named("mlp", 95, 3).unwrap();
        assert_eq!(c.hidden, vec![512, 256, 128]);
        assert_eq!(c.dropout, vec![0.5, 0.4, 0.3]);
        assert!(NetworkConfig::named("transformer", 95, 3).is_err());
        assert!(NetworkConfig::named("mlp", 95, 1).is_err());
        assert_eq!(c.members, 1);
        for (members, ok) in [(0, false), (MAX_MEMBERS, true), (MAX_MEMBERS + 1, false)] {
            let config = NetworkConfig {
                members,
                ..c.clone()
            };
            assert_eq!(config.validate().is_ok(), ok, "{members} members");
        }
    }

    #[test]
    fn forward_gives_one_logit_per_class() {
        let device = crate::device::cpu();
        let net = NetworkConfig::named("mlp", 7, 4).unwrap().init(1, &device);
        let out = net.forward(Tensor::<2>::zeros([5, 7], &device));
        assert_eq!(out.dims(), [5, 4]);
        assert_eq!(
            net.num_params(),
            7 * 512 + 512 + 512 * 256 + 256 + 256 * 128 + 128 + 128 * 4 + 4
        );
    }

    #[test]
    fn an_ensemble_averages_its_members_probabilities() {
        let device = crate::device::cpu();
        let mut config = NetworkConfig::named("mlp", 3, 2).unwrap();
        let (a, b) = (config.init(1, &device), config.init(2, &device));
        let x = Tensor::<2>::from_data(
            TensorData::new(vec![0.5f32, -1.0, 2.0, 3.0, 0.0, -0.5], [2, 3]),
            &device,
        );
        let probs = |t: Tensor<2>| t.into_data().try_into_vec::<f32>().unwrap();
        let (pa, pb) = (
            probs(softmax(a.forward(x.clone()), 1)),
            probs(softmax(b.forward(x.clone()), 1)),
        );
        let pair = Ensemble::new(vec![a.clone(), b]).unwrap();
        for ((m, x1), x2) in probs(pair.probabilities(x.clone(), Output::Softmax))
            .iter()
            .zip(&pa)
            .zip(&pb)
        {
            assert!((m - (x1 + x2) / 2.0).abs() < 1e-6);
        }

        // Weights round trip; a single network is stored as it always was.
        config.members = 2;
        let bytes = pair.to_bytes().unwrap();
        let back = Ensemble::from_bytes(&config, &bytes, &device).unwrap();
        assert_eq!(
            probs(back.probabilities(x.clone(), Output::Softmax)),
            probs(pair.probabilities(x.clone(), Output::Softmax))
        );
        let single = Ensemble::new(vec![a.clone()]).unwrap();
        let single_bytes = single.to_bytes().unwrap();
        assert_eq!(
            single_bytes,
            a.clone().into_record().into_bytes().unwrap().to_vec()
        );
        config.members = 1;
        let back = Ensemble::from_bytes(&config, &single_bytes, &device).unwrap();
        assert_eq!(probs(back.probabilities(x.clone(), Output::Softmax)), pa);
        // An ensemble's weights are not one network's, nor the other way round.
        assert!(Ensemble::from_bytes(&config, &bytes, &device).is_err());
        config.members = 2;
        assert!(Ensemble::from_bytes(&config, &single_bytes, &device).is_err());
        assert!(Ensemble::new(Vec::new()).is_err());
    }

    #[test]
    fn the_average_of_networks_averages_every_parameter() {
        let device = crate::device::cpu();
        let config = NetworkConfig::named("mlp", 3, 2).unwrap();
        let (a, b) = (config.init(1, &device), config.init(2, &device));
        let mean = Network::average(&[a.clone(), b.clone()]).unwrap();
        let x = Tensor::<2>::from_data(TensorData::new(vec![0.5f32, -1.0, 2.0], [1, 3]), &device);
        // Check the first layer directly and the whole stack through a forward pass of
        // a network averaged with itself.
        let w = |net: &Network| {
            net.hidden[0]
                .weight
                .val()
                .into_data()
                .try_into_vec::<f32>()
                .unwrap()
        };
        for ((m, x1), x2) in w(&mean).iter().zip(w(&a)).zip(w(&b)) {
            assert!((m - (x1 + x2) / 2.0).abs() < 1e-6);
        }
        let same = Network::average(&[a.clone(), a.clone(), a.clone()]).unwrap();
        let (ya, ys) = (a.forward(x.clone()), same.forward(x));
        let diff: f32 = (ya - ys).abs().max().into_scalar();
        assert!(diff < 1e-5, "{diff}");
        assert!(Network::average(&[]).is_none());
    }
}
