//! A 3×3 "same" convolution computed as one matrix multiply (im2col), for spectrogram
//! networks trained on the CPU.
//!
//! Why not burn's `Conv2d`: on the ndarray backend its training step for a small
//! spectrogram CNN took 6.7–8.9 s per batch of 32 maps against 0.53–0.66 s for the same
//! convolution as a matrix multiply (`experiments/conv_timing/`). Here the input is
//! padded by one, its nine shifted copies are stacked along the channels and one
//! matrix multiply with the `[9 × in, out]` kernel gives every output position. Only
//! tensor operations burn differentiates are used (pad, slice, cat, reshape, matmul),
//! so the backward pass comes from autodiff, and the tests check it against `Conv2d`'s.

use burn::module::{Module, Param, ParamId};
use burn::nn::conv::Conv2d;
use burn::tensor::ops::PadMode;
use burn::tensor::{Device, Distribution, Tensor, TensorData};
use rand::Rng;
use rand::rngs::StdRng;

/// Kernel side: 3×3, with one cell of zero padding so that the output keeps the input's
/// bands × frames.
const SIDE: usize = 3;

/// A 3×3 convolution with stride 1 and zero padding 1 over `[batch, in, height, width]`
/// maps.
#[derive(Module, Debug)]
pub struct Im2colConv2d {
    /// `[9 × in_channels, out_channels]`, rows ordered (dy, dx, in_channel).
    kernel: Param<Tensor<2>>,
    /// `[out_channels]`.
    bias: Param<Tensor<1>>,
}

impl Im2colConv2d {
    /// A convolution from `input` to `output` channels, with weights drawn as burn's
    /// `Conv2d` draws them by default (uniform in ±1/√fan-in, fan-in = 9 × input).
    pub fn new(input: usize, output: usize, device: &Device) -> Self {
        let bound = 1.0 / ((SIDE * SIDE * input) as f64).sqrt();
        let uniform = Distribution::Uniform(-bound, bound);
        Self {
            kernel: Param::from_tensor(Tensor::random(
                [SIDE * SIDE * input, output],
                uniform,
                device,
            )),
            bias: Param::from_tensor(Tensor::random([output], uniform, device)),
        }
    }

    /// Like [`new`](Self::new), drawn from `rng` with the given parameter ids: a network
    /// seeded with our own generator gets the same weights, and the same weights file,
    /// whatever else runs in the process (burn's backend generator is process-wide).
    pub(crate) fn seeded(
        input: usize,
        output: usize,
        rng: &mut StdRng,
        kernel_id: ParamId,
        bias_id: ParamId,
        device: &Device,
    ) -> Self {
        let bound = 1.0 / ((SIDE * SIDE * input) as f64).sqrt() as f32;
        let mut draw =
            |n: usize| -> Vec<f32> { (0..n).map(|_| rng.random_range(-bound..bound)).collect() };
        let kernel = draw(SIDE * SIDE * input * output);
        let bias = draw(output);
        let kernel = Tensor::<2>::from_data(
            TensorData::new(kernel, [SIDE * SIDE * input, output]),
            device,
        );
        let bias = Tensor::<1>::from_data(TensorData::new(bias, [output]), device);
        Self {
            kernel: Param::initialized(kernel_id, kernel).set_require_grad(true),
            bias: Param::initialized(bias_id, bias).set_require_grad(true),
        }
    }

    /// Sum of the squared kernel weights (the bias excluded): its share of an L2 penalty.
    pub(crate) fn kernel_square_sum(&self) -> Tensor<1> {
        self.kernel.val().square().sum()
    }

    /// The same convolution as a 3×3 `Conv2d` with stride 1 and padding 1 (its
    /// `[out, in, 3, 3]` weights rearranged); a `Conv2d` without bias gets a zero one.
    pub fn from_conv2d(conv: &Conv2d) -> Self {
        let weight = conv.weight.val();
        let [output, input, _, _] = weight.dims();
        // [out, in, dy, dx] -> [dy, dx, in, out] -> [9 in, out]
        let kernel = weight
            .permute([2, 3, 1, 0])
            .reshape([SIDE * SIDE * input, output]);
        let bias = conv
            .bias
            .as_ref()
            .map(|b| b.val())
            .unwrap_or_else(|| Tensor::zeros([output], &kernel.device()));
        // New leaves: the copy trains on its own.
        Self {
            kernel: Param::from_tensor(kernel.detach()).set_require_grad(true),
            bias: Param::from_tensor(bias.detach()).set_require_grad(true),
        }
    }

    /// The kernel, `[9 × in, out]` with rows ordered (dy, dx, in_channel), and the bias:
    /// what [`crate::cnn_inference`] multiplies by without burn's tensors.
    pub(crate) fn parameters(&self) -> (Tensor<2>, Tensor<1>) {
        (self.kernel.val(), self.bias.val())
    }

    /// Output channels.
    pub fn output_channels(&self) -> usize {
        self.bias.dims()[0]
    }

    /// `[batch, in, height, width]` → `[batch, out, height, width]`.
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let [batch, channels, height, width] = x.dims();
        let output = self.output_channels();
        let padded = x.pad((1, 1, 1, 1), PadMode::Constant(0.0));
        let mut shifted = Vec::with_capacity(SIDE * SIDE);
        for dy in 0..SIDE {
            for dx in 0..SIDE {
                shifted.push(padded.clone().slice([
                    0..batch,
                    0..channels,
                    dy..dy + height,
                    dx..dx + width,
                ]));
            }
        }
        // [batch, 9 in, positions]: each position's 3×3 neighbourhood as one column.
        let columns =
            Tensor::cat(shifted, 1).reshape([batch, SIDE * SIDE * channels, height * width]);
        let kernel = self.kernel.val().transpose().unsqueeze::<3>();
        let y = kernel.matmul(columns) + self.bias.val().reshape([1, output, 1]);
        y.reshape([batch, output, height, width])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::nn::PaddingConfig2d;
    use burn::nn::conv::Conv2dConfig;

    fn largest_difference<const D: usize>(a: Tensor<D>, b: Tensor<D>) -> f32 {
        (a - b).abs().max().into_scalar::<f32>()
    }

    fn input(device: &Device) -> Tensor<4> {
        // Deterministic, not symmetric: every shift gives different values.
        let values: Vec<f32> = (0..2 * 3 * 7 * 11)
            .map(|i| ((i * 7919) % 1013) as f32 / 1013.0 - 0.5)
            .collect();
        Tensor::from_data(TensorData::new(values, [2, 3, 7, 11]), device)
    }

    fn reference(device: &Device) -> Conv2d {
        Conv2dConfig::new([3, 5], [3, 3])
            .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
            .init(device)
    }

    /// The same weights give the same outputs as burn's `Conv2d`.
    #[test]
    fn forward_matches_conv2d() {
        let device = crate::device::cpu();
        let conv = reference(&device);
        let fast = Im2colConv2d::from_conv2d(&conv);
        let x = input(&device);
        let expected = conv.forward(x.clone());
        let got = fast.forward(x);
        assert_eq!(got.dims(), [2, 5, 7, 11]);
        let difference = largest_difference(got, expected);
        assert!(difference < 1e-5, "largest difference {difference:e}");
    }

    /// The backward pass gives `Conv2d`'s gradients, for the input, the kernel and the
    /// bias, on a loss that weighs every output differently.
    #[test]
    fn gradients_match_conv2d() {
        let device = crate::device::cpu().autodiff();
        let conv = reference(&device);
        let fast = Im2colConv2d::from_conv2d(&conv);
        let weights: Vec<f32> = (0..2 * 5 * 7 * 11)
            .map(|i| ((i * 31) % 17) as f32 / 17.0)
            .collect();
        let loss_weights = Tensor::<4>::from_data(TensorData::new(weights, [2, 5, 7, 11]), &device);

        let x1 = input(&device).require_grad();
        let grads1 = (conv.forward(x1.clone()) * loss_weights.clone())
            .sum()
            .backward();
        let x2 = input(&device).require_grad();
        let grads2 = (fast.forward(x2.clone()) * loss_weights).sum().backward();

        let dx = largest_difference(
            x1.grad(&grads1).expect("input gradient"),
            x2.grad(&grads2).expect("input gradient"),
        );
        assert!(dx < 1e-5, "input gradients differ by {dx:e}");
        let dw_reference = conv
            .weight
            .val()
            .grad(&grads1)
            .expect("weight gradient")
            .permute([2, 3, 1, 0])
            .reshape([27, 5]);
        let dw = largest_difference(
            fast.kernel.val().grad(&grads2).expect("kernel gradient"),
            dw_reference,
        );
        assert!(dw < 1e-5, "weight gradients differ by {dw:e}");
        let bias = conv.bias.as_ref().expect("Conv2d has a bias by default");
        let db = largest_difference(
            fast.bias.val().grad(&grads2).expect("bias gradient"),
            bias.val().grad(&grads1).expect("bias gradient"),
        );
        assert!(db < 1e-5, "bias gradients differ by {db:e}");
    }

    /// Fresh weights are drawn within ±1/√(9 × in).
    #[test]
    fn new_weights_are_scaled_to_the_fan_in() {
        let device = crate::device::cpu();
        let conv = Im2colConv2d::new(4, 8, &device);
        let bound = 1.0 / 6.0;
        let largest = conv.kernel.val().abs().max().into_scalar::<f32>();
        assert!(
            largest <= bound + 1e-6 && largest > bound / 2.0,
            "{largest}"
        );
        assert_eq!(conv.output_channels(), 8);
    }
}
