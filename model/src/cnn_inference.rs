//! The spectrogram CNN's forward pass for serving: plain buffers, batch norm folded
//! into the convolutions, one matrix multiply per block.
//!
//! Why not burn's tensors: the forward pass a worker runs never changes (no gradients,
//! batch norm from its running statistics, no dropout), and through burn's generic
//! operations most of its time went to copies: padding, nine shifted slices and their
//! concatenation per block, reshapes, pooling. A profile of the serving bench put the
//! matrix multiply itself at about a tenth of the CNN's time. Here the activations of
//! one patch stay in two reused buffers laid out band × frame × channel, so each
//! position's 3×3 neighbourhood is nine contiguous copies of its channels; batch norm
//! becomes a scale of the kernel's columns and a bias; ReLU and the 2×2 pooling are
//! single passes. burn's network ([`crate::cnn::Cnn`]) stays what trains and what this
//! is tested against.

use burn::tensor::Tensor;
use ndarray::linalg::general_mat_mul;
use ndarray::{ArrayView2, ArrayViewMut2};

use crate::cnn::{Cnn, CnnEnsemble};
use crate::network::{NetworkConfig, Output};
use crate::spectrogram::{MEL_BANDS, PATCH_FRAMES, PATCH_LEN, centre_bands};
use crate::{ModelError, Result};

/// Kernel positions of a 3×3 convolution.
const TAPS: usize = 9;

/// One block: a 3×3 convolution with batch norm folded in, ReLU, then 2×2 max pooling
/// unless it is the last.
#[derive(Debug, Clone)]
struct Block {
    input: usize,
    output: usize,
    /// `[9 × input, output]`, rows ordered (dy, dx, input channel), each column
    /// multiplied by its channel's batch-norm scale.
    kernel: Vec<f32>,
    /// The convolution's bias through batch norm.
    bias: Vec<f32>,
    pool: bool,
}

/// One network of the ensemble.
#[derive(Debug, Clone)]
struct Member {
    blocks: Vec<Block>,
    /// `[features, classes]`, as burn's `Linear` stores it.
    weight: Vec<f32>,
    bias: Vec<f32>,
}

/// A CNN ensemble's weights, ready for [`CnnInference::probabilities`].
#[derive(Debug, Clone)]
pub(crate) struct CnnInference {
    members: Vec<Member>,
    classes: usize,
    /// Subtract each band's median first (`NetworkConfig::band_medians`).
    band_medians: bool,
}

/// Reusable buffers for one patch's pass (the largest block sets their size once).
#[derive(Default)]
struct Scratch {
    activations: Vec<f32>,
    convolved: Vec<f32>,
    columns: Vec<f32>,
    features: Vec<f32>,
    logits: Vec<f32>,
}

fn values<const D: usize>(t: Tensor<D>) -> Result<Vec<f32>> {
    t.into_data()
        .try_into_vec::<f32>()
        .map_err(|e| ModelError::Backend(format!("{e:?}")))
}

impl Member {
    fn new(network: &Cnn) -> Result<Self> {
        let last = network.blocks.len().saturating_sub(1);
        let mut blocks = Vec::with_capacity(network.blocks.len());
        for (i, block) in network.blocks.iter().enumerate() {
            let (kernel, bias) = block.conv.parameters();
            let [rows, output] = kernel.dims();
            let mut kernel = values(kernel)?;
            let mut bias = values(bias)?;
            let norm = &block.norm;
            let gamma = values(norm.gamma.val())?;
            let beta = values(norm.beta.val())?;
            let mean = values(norm.running_mean.value())?;
            let var = values(norm.running_var.value())?;
            let scale: Vec<f32> = gamma
                .iter()
                .zip(&var)
                .map(|(g, v)| g / (v + norm.epsilon as f32).sqrt())
                .collect();
            for row in kernel.chunks_exact_mut(output) {
                for (w, s) in row.iter_mut().zip(&scale) {
                    *w *= s;
                }
            }
            for (o, b) in bias.iter_mut().enumerate() {
                *b = (*b - mean[o]) * scale[o] + beta[o];
            }
            blocks.push(Block {
                input: rows / TAPS,
                output,
                kernel,
                bias,
                pool: i < last,
            });
        }
        let weight = values(network.output.weight.val())?;
        let bias = match &network.output.bias {
            Some(b) => values(b.val())?,
            None => vec![0.0; network.output.weight.dims()[1]],
        };
        Ok(Self {
            blocks,
            weight,
            bias,
        })
    }

    /// The pooled features of one patch (band × frame) into `scratch.features`, then
    /// its logits into `scratch.logits`.
    fn logits(&self, patch: &[f32], scratch: &mut Scratch) -> Result<()> {
        let (mut height, mut width, mut channels) = (MEL_BANDS, PATCH_FRAMES, 1);
        scratch.activations.clear();
        scratch.activations.extend_from_slice(patch);
        for block in &self.blocks {
            let positions = height * width;
            im2col(
                &scratch.activations,
                (height, width, channels),
                &mut scratch.columns,
            );
            let out = &mut scratch.convolved;
            out.clear();
            for _ in 0..positions {
                out.extend_from_slice(&block.bias);
            }
            let shape_error = |e: ndarray::ShapeError| ModelError::Backend(e.to_string());
            let a = ArrayView2::from_shape((positions, TAPS * block.input), &scratch.columns)
                .map_err(shape_error)?;
            let b = ArrayView2::from_shape((TAPS * block.input, block.output), &block.kernel)
                .map_err(shape_error)?;
            let mut c =
                ArrayViewMut2::from_shape((positions, block.output), out).map_err(shape_error)?;
            general_mat_mul(1.0, &a, &b, 1.0, &mut c);
            for v in out.iter_mut() {
                *v = v.max(0.0);
            }
            channels = block.output;
            if block.pool {
                pool(out, (height, width, channels), &mut scratch.activations);
                height /= 2;
                width /= 2;
            } else {
                std::mem::swap(&mut scratch.activations, out);
            }
        }
        // Per channel and band, the maximum then the mean over time, channel-major
        // (the burn network's `[channels × bands]` order).
        let h = &scratch.activations;
        let features = &mut scratch.features;
        features.clear();
        features.resize(2 * channels * height, 0.0);
        let (max, mean) = features.split_at_mut(channels * height);
        for band in 0..height {
            for c in 0..channels {
                let mut m = f32::NEG_INFINITY;
                let mut sum = 0.0;
                for frame in 0..width {
                    let v = h[(band * width + frame) * channels + c];
                    m = m.max(v);
                    sum += v;
                }
                max[c * height + band] = m;
                mean[c * height + band] = sum / width as f32;
            }
        }
        let classes = self.bias.len();
        scratch.logits.clear();
        scratch.logits.extend_from_slice(&self.bias);
        for (f, row) in features.iter().zip(self.weight.chunks_exact(classes)) {
            for (l, w) in scratch.logits.iter_mut().zip(row) {
                *l += f * w;
            }
        }
        Ok(())
    }
}

/// Each position's 3×3 neighbourhood (zero outside the map) as one row of
/// `9 × channels` values, ordered (dy, dx, channel) like the kernel's rows.
fn im2col(input: &[f32], (height, width, channels): (usize, usize, usize), out: &mut Vec<f32>) {
    let row = TAPS * channels;
    out.clear();
    out.resize(height * width * row, 0.0);
    for y in 0..height {
        for x in 0..width {
            let base = (y * width + x) * row;
            for dy in 0..3 {
                let Some(sy) = (y + dy).checked_sub(1).filter(|s| *s < height) else {
                    continue;
                };
                for dx in 0..3 {
                    let Some(sx) = (x + dx).checked_sub(1).filter(|s| *s < width) else {
                        continue;
                    };
                    let from = (sy * width + sx) * channels;
                    let to = base + (dy * 3 + dx) * channels;
                    out[to..to + channels].copy_from_slice(&input[from..from + channels]);
                }
            }
        }
    }
}

/// 2×2 max pooling with stride 2, odd edges dropped (burn's floor mode).
fn pool(input: &[f32], (height, width, channels): (usize, usize, usize), out: &mut Vec<f32>) {
    let (h2, w2) = (height / 2, width / 2);
    out.clear();
    out.resize(h2 * w2 * channels, 0.0);
    for y in 0..h2 {
        for x in 0..w2 {
            let to = (y * w2 + x) * channels;
            let at = |yy: usize, xx: usize| ((2 * y + yy) * width + 2 * x + xx) * channels;
            let (a, b, c, d) = (at(0, 0), at(0, 1), at(1, 0), at(1, 1));
            for ch in 0..channels {
                out[to + ch] = input[a + ch]
                    .max(input[b + ch])
                    .max(input[c + ch])
                    .max(input[d + ch]);
            }
        }
    }
}

impl CnnInference {
    /// Copies an ensemble's weights out of burn, folding each batch norm into its
    /// convolution.
    pub(crate) fn new(ensemble: &CnnEnsemble, config: &NetworkConfig) -> Result<Self> {
        let members = ensemble
            .members()
            .iter()
            .map(Member::new)
            .collect::<Result<Vec<_>>>()?;
        let classes = members.first().map_or(0, |m| m.bias.len());
        Ok(Self {
            members,
            classes,
            band_medians: config.band_medians,
        })
    }

    /// Scores of `patches` (`PATCH_LEN` values each, band-major), averaged over the
    /// members: `classes` values per patch.
    pub(crate) fn probabilities(&self, patches: &[f32], output: Output) -> Result<Vec<f32>> {
        self.scores(patches, output, None)
    }

    /// Values per patch of [`scores`](Self::scores)' embeddings: every member's pooled
    /// features, side by side.
    pub(crate) fn embedding_width(&self) -> usize {
        self.members
            .iter()
            .map(|m| m.weight.len() / m.bias.len().max(1))
            .sum()
    }

    /// [`probabilities`](Self::probabilities), and with `embeddings` each patch's
    /// pooled features (what the output layer reads, [`embedding_width`](Self::embedding_width)
    /// values per patch) appended to it: the same pass yields both, so a caller that
    /// judges how familiar a window looks pays nothing for a second forward.
    pub(crate) fn scores(
        &self,
        patches: &[f32],
        output: Output,
        mut embeddings: Option<&mut Vec<f32>>,
    ) -> Result<Vec<f32>> {
        if !patches.len().is_multiple_of(PATCH_LEN) {
            return Err(ModelError::InputSize {
                expected: PATCH_LEN,
                actual: patches.len() % PATCH_LEN,
            });
        }
        let k = self.classes;
        let mut scores = vec![0.0f32; patches.len() / PATCH_LEN * k];
        let mut scratch = Scratch::default();
        let share = 1.0 / self.members.len().max(1) as f32;
        let mut centred = Vec::new();
        for (patch, out) in patches
            .chunks_exact(PATCH_LEN)
            .zip(scores.chunks_exact_mut(k))
        {
            let patch = if self.band_medians {
                centred.clear();
                centred.extend_from_slice(patch);
                centre_bands(&mut centred);
                centred.as_slice()
            } else {
                patch
            };
            for member in &self.members {
                member.logits(patch, &mut scratch)?;
                if let Some(e) = embeddings.as_deref_mut() {
                    e.extend_from_slice(&scratch.features);
                }
                let logits = &scratch.logits;
                match output {
                    Output::Sigmoid => {
                        for (o, l) in out.iter_mut().zip(logits) {
                            *o += share / (1.0 + (-l).exp());
                        }
                    }
                    Output::Softmax => {
                        let top = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                        let total: f32 = logits.iter().map(|l| (l - top).exp()).sum();
                        for (o, l) in out.iter_mut().zip(logits) {
                            *o += share * (l - top).exp() / total;
                        }
                    }
                }
            }
        }
        Ok(scores)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::network::CNN;
    use burn::module::Module;
    use burn::tensor::{Device, TensorData};

    fn patches(n: usize) -> Vec<f32> {
        (0..n * PATCH_LEN)
            .map(|i| ((i * 7919) % 1013) as f32 / 506.5 - 1.0)
            .collect()
    }

    fn reference(ensemble: &CnnEnsemble, x: &[f32], output: Output, device: &Device) -> Vec<f32> {
        let n = x.len() / PATCH_LEN;
        let t = Tensor::<2>::from_data(TensorData::new(x.to_vec(), [n, PATCH_LEN]), device);
        values(ensemble.probabilities(t, output)).unwrap()
    }

    fn largest_difference(a: &[f32], b: &[f32]) -> f32 {
        assert_eq!(a.len(), b.len());
        a.iter()
            .zip(b)
            .map(|(p, q)| (p - q).abs())
            .fold(0.0, f32::max)
    }

    /// Networks whose batch norm has moved off identity (a few training passes update
    /// its running statistics; gamma and beta are set away from 1 and 0), so folding
    /// it into the kernels is exercised.
    fn trained_ensemble(members: usize, classes: usize) -> (CnnEnsemble, NetworkConfig) {
        let device = crate::device::cpu();
        let ad = device.clone().autodiff();
        let mut config = NetworkConfig::named(CNN, PATCH_LEN, classes).unwrap();
        config.members = members;
        let nets = (0..members)
            .map(|m| {
                let mut net = Cnn::init(&config, 11 + m as u64, &ad);
                for block in &mut net.blocks {
                    let out = block.norm.gamma.dims()[0];
                    let g: Vec<f32> = (0..out).map(|i| 0.5 + (i % 7) as f32 * 0.2).collect();
                    let b: Vec<f32> = (0..out).map(|i| (i % 5) as f32 * 0.1 - 0.2).collect();
                    block.norm.gamma = burn::module::Param::from_tensor(Tensor::from_data(
                        TensorData::new(g, [out]),
                        &ad,
                    ));
                    block.norm.beta = burn::module::Param::from_tensor(Tensor::from_data(
                        TensorData::new(b, [out]),
                        &ad,
                    ));
                }
                for _ in 0..3 {
                    let x =
                        Tensor::<2>::from_data(TensorData::new(patches(4), [4, PATCH_LEN]), &ad);
                    let _ = net.forward_train(x.mul_scalar(1.5).add_scalar(0.3), None);
                }
                net.valid()
            })
            .collect();
        (CnnEnsemble::new(nets).unwrap(), config)
    }

    #[test]
    fn matches_the_burn_network() {
        let device = crate::device::cpu();
        for (members, output) in [
            (1, Output::Sigmoid),
            (2, Output::Softmax),
            (3, Output::Sigmoid),
        ] {
            let (ensemble, config) = trained_ensemble(members, 5);
            let fast = CnnInference::new(&ensemble, &config).unwrap();
            let x = patches(3);
            let want = reference(&ensemble, &x, output, &device);
            let got = fast.probabilities(&x, output).unwrap();
            let difference = largest_difference(&got, &want);
            assert!(
                difference < 1e-5,
                "{members} members, {output:?}: largest difference {difference:e}"
            );
            // The scores are not all alike (a network that ignores its input would
            // also match).
            assert!(largest_difference(&got[..5], &got[5..10]) > 1e-4);
        }
    }

    /// The embeddings are each member's pooled features as burn computes them, side
    /// by side, and asking for them leaves the scores as they were.
    #[test]
    fn embeddings_are_the_members_pooled_features() {
        let device = crate::device::cpu();
        let (ensemble, config) = trained_ensemble(2, 4);
        let fast = CnnInference::new(&ensemble, &config).unwrap();
        let width = fast.embedding_width();
        assert_eq!(width, 2 * 2 * 64 * 4);
        let x = patches(3);
        let mut embeddings = Vec::new();
        let scores = fast
            .scores(&x, Output::Sigmoid, Some(&mut embeddings))
            .unwrap();
        assert_eq!(scores, fast.probabilities(&x, Output::Sigmoid).unwrap());
        assert_eq!(embeddings.len(), 3 * width);
        let t = Tensor::<2>::from_data(TensorData::new(x.clone(), [3, PATCH_LEN]), &device);
        let per_member: Vec<Vec<f32>> = ensemble
            .members()
            .iter()
            .map(|m| values(m.features(t.clone())).unwrap())
            .collect();
        let half = width / 2;
        for patch in 0..3 {
            let got = &embeddings[patch * width..(patch + 1) * width];
            for (m, want) in per_member.iter().enumerate() {
                let want = &want[patch * half..(patch + 1) * half];
                let difference = largest_difference(&got[m * half..(m + 1) * half], want);
                assert!(
                    difference < 1e-4,
                    "member {m}: largest difference {difference:e}"
                );
            }
        }
    }

    /// With band medians, the network sees each patch less its bands' medians.
    #[test]
    fn subtracts_band_medians_when_configured() {
        let device = crate::device::cpu();
        let (ensemble, mut config) = trained_ensemble(1, 4);
        config.band_medians = true;
        let fast = CnnInference::new(&ensemble, &config).unwrap();
        let x = patches(2);
        let mut centred = x.clone();
        for patch in centred.chunks_exact_mut(PATCH_LEN) {
            centre_bands(patch);
        }
        let want = reference(&ensemble, &centred, Output::Sigmoid, &device);
        let got = fast.probabilities(&x, Output::Sigmoid).unwrap();
        assert!(largest_difference(&got, &want) < 1e-5);
        let plain = reference(&ensemble, &x, Output::Sigmoid, &device);
        assert!(largest_difference(&got, &plain) > 1e-4);
    }

    #[test]
    fn refuses_partial_patches_and_takes_none() {
        let (ensemble, config) = trained_ensemble(1, 3);
        let fast = CnnInference::new(&ensemble, &config).unwrap();
        assert!(
            fast.probabilities(&patches(1)[1..], Output::Sigmoid)
                .is_err()
        );
        assert!(fast.probabilities(&[], Output::Sigmoid).unwrap().is_empty());
    }

    #[test]
    fn pooling_and_neighbourhoods() {
        // 3 × 5 map of 2 channels: pooling drops the odd row and column.
        let input: Vec<f32> = (0..30).map(|i| i as f32).collect();
        let mut out = Vec::new();
        pool(&input, (3, 5, 2), &mut out);
        assert_eq!(out, vec![12.0, 13.0, 16.0, 17.0]);
        // The corner's neighbourhood: zeros above and left, then the map.
        im2col(&input, (3, 5, 2), &mut out);
        assert_eq!(out.len(), 15 * 18);
        assert_eq!(
            &out[..18],
            &[
                0., 0., 0., 0., 0., 0., 0., 0., 0., 1., 2., 3., 0., 0., 10., 11., 12., 13.
            ]
        );
    }
}
