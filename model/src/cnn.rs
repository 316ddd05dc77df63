//! The spectrogram CNN (`"cnn"`): 3×3 convolutions over a window's log-mel patch.
//!
//! Four blocks of a 3×3 convolution ([`Im2colConv2d`], one matrix multiply each, forward
//! and backward), batch norm and ReLU, with 2×2 max pooling after all but the last
//! (32 bands × 216 frames → 4 × 27); then, for every channel and remaining band, the
//! maximum and the mean over time (a call counts wherever it falls in the window), and
//! one linear layer to the species' logits, with dropout before it while training. The
//! shape is the PyTorch probe's (`experiments/cnn_probe.py`), so their training times
//! compare. Outputs become scores as every architecture's do ([`crate::network::Output`]): per-species
//! sigmoids by default, so "none of these" is every score being low.
//!
//! Weights are drawn from our own seeded generator with fixed parameter ids, like the
//! other networks', so the same seed gives the same weights file.

use burn::module::{Flag, Module, Param, ParamId, RunningState};
use burn::nn::{BatchNorm, Linear};
use burn::store::ModuleRecord;
use burn::tensor::activation::relu;
use burn::tensor::module::max_pool2d;
use burn::tensor::ops::MaxPoolOptions;
use burn::tensor::{Bytes, Device, Tensor, TensorData};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::conv::Im2colConv2d;
use crate::network::{NetworkConfig, check_members};
use crate::spectrogram::{MEL_BANDS, PATCH_FRAMES, PATCH_LEN};
use crate::{ModelError, Result};

/// Output channels of the four convolution blocks (the probe's).
pub const CNN_CHANNELS: [usize; 4] = [16, 32, 64, 64];
/// Dropout on the pooled features, before the output layer (the probe's).
pub const CNN_DROPOUT: f32 = 0.5;
/// Batch norm's running-statistics momentum and epsilon (PyTorch's and burn's defaults).
const BN_MOMENTUM: f64 = 0.1;
const BN_EPSILON: f64 = 1e-5;

/// One block: convolution, batch norm, ReLU (pooling is applied by [`Cnn`]).
#[derive(Module, Debug)]
pub(crate) struct ConvBlock {
    pub(crate) conv: Im2colConv2d,
    pub(crate) norm: BatchNorm,
}

/// The network: convolution blocks, pooling over time, a linear output.
#[derive(Module, Debug)]
pub(crate) struct Cnn {
    pub(crate) blocks: Vec<ConvBlock>,
    pub(crate) output: Linear,
}

/// Bands left after the blocks' pooling.
fn pooled_bands(blocks: usize) -> usize {
    MEL_BANDS >> blocks.saturating_sub(1)
}

impl Cnn {
    /// A network of `config`'s shape (`hidden`: the channels of each block) with fresh
    /// weights drawn from `seed`: convolutions uniform in ±1/√fan-in as burn's and
    /// PyTorch's `Conv2d` draw them, batch norm at identity, a Glorot-uniform output
    /// layer with zero biases.
    pub(crate) fn init(config: &NetworkConfig, seed: u64, device: &Device) -> Self {
        let mut rng = StdRng::seed_from_u64(seed);
        let mut ids = 0u64;
        let mut next_id = || {
            ids += 1;
            ParamId::from(ids - 1)
        };
        let mut blocks = Vec::with_capacity(config.hidden.len());
        let mut channels = 1;
        for &out in &config.hidden {
            let conv = Im2colConv2d::seeded(channels, out, &mut rng, next_id(), next_id(), device);
            let param =
                |id: ParamId, t: Tensor<1>| Param::initialized(id, t).set_require_grad(true);
            let norm = BatchNorm {
                gamma: param(next_id(), Tensor::ones([out], device)),
                beta: param(next_id(), Tensor::zeros([out], device)),
                training: Param::initialized(next_id(), Flag::new(true)),
                running_mean: RunningState::with_id(next_id(), Tensor::zeros([out], device)),
                running_var: RunningState::with_id(next_id(), Tensor::ones([out], device)),
                momentum: BN_MOMENTUM,
                epsilon: BN_EPSILON,
            };
            blocks.push(ConvBlock { conv, norm });
            channels = out;
        }
        let features = 2 * channels * pooled_bands(config.hidden.len());
        let k = config.num_classes;
        let limit = (6.0 / (features + k) as f64).sqrt() as f32;
        let weights: Vec<f32> = (0..features * k)
            .map(|_| rng.random_range(-limit..limit))
            .collect();
        let weight = Tensor::<2>::from_data(TensorData::new(weights, [features, k]), device);
        let output = Linear {
            weight: Param::initialized(next_id(), weight).set_require_grad(true),
            bias: Some(
                Param::initialized(next_id(), Tensor::zeros([k], device)).set_require_grad(true),
            ),
        };
        Self { blocks, output }
    }

    /// The pooled features of a batch of patches `[batch, PATCH_LEN]`:
    /// `[batch, 2 × channels × bands]`.
    pub(crate) fn features(&self, x: Tensor<2>) -> Tensor<2> {
        let [batch, _] = x.dims();
        let mut h = x.reshape([batch, 1, MEL_BANDS, PATCH_FRAMES]);
        let last = self.blocks.len().saturating_sub(1);
        for (i, block) in self.blocks.iter().enumerate() {
            h = relu(block.norm.forward(block.conv.forward(h)));
            if i < last {
                h = max_pool2d(h, MaxPoolOptions::new([2, 2]));
            }
        }
        let [batch, channels, bands, frames] = h.dims();
        let over_time = h.reshape([batch, channels * bands, frames]);
        let max = over_time.clone().max_dim(2);
        let mean = over_time.mean_dim(2);
        Tensor::cat(vec![max, mean], 1).reshape([batch, 2 * channels * bands])
    }

    /// Logits of a batch of patches (no dropout; batch norm from its running
    /// statistics unless the device records gradients): the reference for
    /// [`crate::cnn_inference`], which serves the network.
    #[cfg(test)]
    pub(crate) fn forward(&self, x: Tensor<2>) -> Tensor<2> {
        self.output.forward(self.features(x))
    }

    /// Logits with `mask` (inverted dropout, already scaled) on the pooled features.
    pub(crate) fn forward_train(&self, x: Tensor<2>, mask: Option<Tensor<2>>) -> Tensor<2> {
        let features = self.features(x);
        let features = match mask {
            Some(m) => features.mul(m),
            None => features,
        };
        self.output.forward(features)
    }

    /// Width of the pooled features (the dropout mask's).
    pub(crate) fn feature_width(&self) -> usize {
        self.output.weight.val().dims()[0]
    }

    /// Sum of squared convolution kernels and output weights (biases and batch norm
    /// excluded): the L2 penalty.
    pub(crate) fn l2_sum(&self) -> Tensor<1> {
        self.blocks
            .iter()
            .map(|b| b.conv.kernel_square_sum())
            .fold(self.output.weight.val().square().sum(), |a, b| a + b)
    }
}

/// Spectrogram CNNs of one shape trained from different seeds, whose scores are
/// averaged (see [`crate::network`]'s ensembles for why).
#[derive(Module, Debug)]
pub(crate) struct CnnEnsemble {
    members: Vec<Cnn>,
}

impl CnnEnsemble {
    /// An ensemble of the given networks (at least one).
    pub(crate) fn new(members: Vec<Cnn>) -> Result<Self> {
        check_members(members.len())?;
        Ok(Self { members })
    }

    /// The networks whose scores are averaged.
    pub(crate) fn members(&self) -> &[Cnn] {
        &self.members
    }

    /// Scores of a batch of patches `[batch, PATCH_LEN]`, averaged over the members,
    /// through burn: the reference [`crate::cnn_inference`] is tested against.
    #[cfg(test)]
    pub(crate) fn probabilities(&self, x: Tensor<2>, output: crate::network::Output) -> Tensor<2> {
        use crate::network::Output;
        use burn::tensor::activation::{sigmoid, softmax};
        let score = |logits: Tensor<2>| match output {
            Output::Softmax => softmax(logits, 1),
            Output::Sigmoid => sigmoid(logits),
        };
        let n = self.members.len() as f64;
        let mut members = self.members.iter();
        let Some(first) = members.next() else {
            return x;
        };
        members
            .fold(score(first.forward(x.clone())), |sum, m| {
                sum + score(m.forward(x.clone()))
            })
            .div_scalar(n)
    }

    /// The weights file's bytes (one network's record alone, as for the MLP).
    pub(crate) fn to_bytes(&self) -> Result<Vec<u8>> {
        let bytes = match self.members.as_slice() {
            [single] => single.clone().into_record().into_bytes(),
            _ => self.clone().into_record().into_bytes(),
        };
        bytes
            .map(|b| b.to_vec())
            .map_err(|e| ModelError::InvalidWeights(e.to_string()))
    }

    /// Rebuilds the ensemble `config` describes from [`to_bytes`](Self::to_bytes).
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
                Cnn::init(config, 0, device)
                    .try_load_record(record)
                    .map_err(invalid)?
                    .valid(),
            ]
        } else {
            Self {
                members: (0..config.members)
                    .map(|_| Cnn::init(config, 0, device))
                    .collect(),
            }
            .try_load_record(record)
            .map_err(invalid)?
            .valid()
            .members
        };
        Self::new(members)
    }
}

/// Checks a `cnn` configuration: patches in, one channel count per block, dropout only
/// on the pooled features.
pub(crate) fn validate(config: &NetworkConfig) -> Result<()> {
    let rates_ok = config
        .dropout
        .split_last()
        .is_some_and(|(last, rest)| (0.0..1.0).contains(last) && rest.iter().all(|r| *r == 0.0));
    if config.input_size != PATCH_LEN
        || config.hidden.is_empty()
        || config.hidden.len() > 1 + MEL_BANDS.trailing_zeros() as usize
        || config.hidden.contains(&0)
        || config.hidden.len() != config.dropout.len()
        || !rates_ok
    {
        return Err(ModelError::InvalidConfig(format!(
            "a cnn reads {PATCH_LEN}-value patches through 1 to {} blocks with dropout on \
             the pooled features only; got {} inputs, channels {:?}, dropout {:?}",
            1 + MEL_BANDS.trailing_zeros(),
            config.input_size,
            config.hidden,
            config.dropout
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::network::{CNN, Output};

    fn patches(n: usize, device: &Device) -> Tensor<2> {
        let values: Vec<f32> = (0..n * PATCH_LEN)
            .map(|i| ((i * 7919) % 1013) as f32 / 506.5 - 1.0)
            .collect();
        Tensor::from_data(TensorData::new(values, [n, PATCH_LEN]), device)
    }

    fn values(t: Tensor<2>) -> Vec<f32> {
        t.into_data().try_into_vec::<f32>().unwrap()
    }

    #[test]
    fn cnn_shape_and_parameters() {
        let device = crate::device::cpu();
        let config = NetworkConfig::named(CNN, PATCH_LEN, 5).unwrap();
        assert_eq!(config.hidden, CNN_CHANNELS.to_vec());
        let net = Cnn::init(&config, 1, &device);
        assert_eq!(net.forward(patches(3, &device)).dims(), [3, 5]);
        assert_eq!(net.feature_width(), 2 * 64 * 4);
        // Convolutions (kernel and bias), batch norm (gamma, beta and the running mean
        // and variance, which burn counts), output layer.
        let conv: usize = [(1, 16), (16, 32), (32, 64), (64, 64)]
            .iter()
            .map(|&(i, o)| 9 * i * o + o + 4 * o)
            .sum();
        assert_eq!(net.num_params(), conv + 512 * 5 + 5);
        let mut bad = config.clone();
        bad.dropout = vec![0.5, 0.0, 0.0, 0.5];
        assert!(bad.validate().is_err());
        bad = config.clone();
        bad.input_size = 100;
        assert!(bad.validate().is_err());
    }

    #[test]
    fn same_seed_same_weights_and_round_trip() {
        let device = crate::device::cpu();
        let mut config = NetworkConfig::named(CNN, PATCH_LEN, 3).unwrap();
        let a = CnnEnsemble::new(vec![Cnn::init(&config, 7, &device)]).unwrap();
        let b = CnnEnsemble::new(vec![Cnn::init(&config, 7, &device)]).unwrap();
        let c = CnnEnsemble::new(vec![Cnn::init(&config, 8, &device)]).unwrap();
        let bytes = a.to_bytes().unwrap();
        assert_eq!(bytes, b.to_bytes().unwrap());
        assert_ne!(bytes, c.to_bytes().unwrap());
        let x = patches(2, &device);
        let back = CnnEnsemble::from_bytes(&config, &bytes, &device).unwrap();
        assert_eq!(
            values(back.probabilities(x.clone(), Output::Sigmoid)),
            values(a.probabilities(x.clone(), Output::Sigmoid))
        );
        // Two members average; their weights do not load as one network.
        config.members = 2;
        let pair = CnnEnsemble::new(vec![
            Cnn::init(&config, 7, &device),
            Cnn::init(&config, 8, &device),
        ])
        .unwrap();
        let expected: Vec<f32> = values(a.probabilities(x.clone(), Output::Sigmoid))
            .iter()
            .zip(values(c.probabilities(x.clone(), Output::Sigmoid)))
            .map(|(p, q)| (p + q) / 2.0)
            .collect();
        for (got, want) in values(pair.probabilities(x.clone(), Output::Sigmoid))
            .iter()
            .zip(&expected)
        {
            assert!((got - want).abs() < 1e-6);
        }
        let pair_bytes = pair.to_bytes().unwrap();
        assert!(CnnEnsemble::from_bytes(&config, &pair_bytes, &device).is_ok());
        config.members = 1;
        assert!(CnnEnsemble::from_bytes(&config, &pair_bytes, &device).is_err());
    }

    /// Batch norm normalises with the batch's statistics while training and moves its
    /// running statistics towards them, which inference then uses.
    #[test]
    fn batch_norm_trains_and_infers_differently() {
        let device = crate::device::cpu();
        let ad = device.clone().autodiff();
        let config = NetworkConfig::named(CNN, PATCH_LEN, 3).unwrap();
        let net = Cnn::init(&config, 3, &ad);
        let x = patches(4, &ad);
        let before = values(net.valid().forward(patches(4, &device)));
        let _ = net.forward_train(x, None);
        let after = values(net.valid().forward(patches(4, &device)));
        assert_ne!(before, after, "running statistics were not updated");
    }
}
