//! What a small spectrogram CNN costs on burn's ndarray backend, before one is built in.
//!
//! The network is `experiments/cnn_probe.py`'s: four 3×3 convolutions (16, 32, 64, 64
//! channels) with batch norm and ReLU, 2×2 max pooling after the first three, max and mean
//! over time, a linear layer; input batches of 32 maps of 32 bands × 216 frames (5 s).
//! It times one Adam training step and one forward pass with two implementations of the
//! convolution: burn's `Conv2d`, and the same convolution written as nine shifted copies
//! of the input concatenated along channels and multiplied by the kernel matrix (im2col),
//! which runs on the backend's matrix multiply. It first checks that both compute the same
//! thing.
//!
//! ```text
//! cargo run --release --manifest-path experiments/conv_timing/Cargo.toml [-- ITERATIONS]
//! ```

use std::time::Instant;

use burn::module::{Module, Param};
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::pool::{MaxPool2d, MaxPool2dConfig};
use burn::nn::{BatchNorm, BatchNormConfig, Linear, LinearConfig, PaddingConfig2d};
use burn::optim::{AdamConfig, GradientsParams};
use burn::tensor::activation::{log_softmax, relu};
use burn::tensor::ops::PadMode;
use burn::tensor::{Device, Tensor, TensorData};

const CHANNELS: [usize; 4] = [16, 32, 64, 64];
const BATCH: usize = 32;
const BANDS: usize = 32;
const FRAMES: usize = 216;
const CLASSES: usize = 3;

/// A 3×3 "same" convolution as one matrix multiply over shifted copies of the input.
#[derive(Module, Debug)]
struct Im2colConv {
    /// `[9 × in_channels, out_channels]`, rows ordered (dy, dx, in_channel).
    kernel: Param<Tensor<2>>,
    bias: Param<Tensor<1>>,
}

impl Im2colConv {
    /// The same weights as `conv` (burn's `[out, in, 3, 3]` layout, rearranged).
    fn from_conv(conv: &Conv2d) -> Self {
        let weight = conv.weight.val();
        let [out, input, _, _] = weight.dims();
        // [out, in, dy, dx] -> [dy, dx, in, out] -> [9 in, out]
        let kernel = weight.permute([2, 3, 1, 0]).reshape([9 * input, out]);
        let bias = conv
            .bias
            .as_ref()
            .map(|b| b.val())
            .unwrap_or_else(|| Tensor::zeros([out], &kernel.device()));
        // New leaves: the copies train on their own.
        Self {
            kernel: Param::from_tensor(kernel.detach()).set_require_grad(true),
            bias: Param::from_tensor(bias.detach()).set_require_grad(true),
        }
    }

    fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let [b, c, h, w] = x.dims();
        let out = self.bias.dims()[0];
        let padded = x.pad((1, 1, 1, 1), PadMode::Constant(0.0));
        let mut shifted = Vec::with_capacity(9);
        for dy in 0..3 {
            for dx in 0..3 {
                shifted.push(padded.clone().slice([0..b, 0..c, dy..dy + h, dx..dx + w]));
            }
        }
        let columns = Tensor::cat(shifted, 1).reshape([b, 9 * c, h * w]);
        let kernel = self.kernel.val().transpose().unsqueeze::<3>();
        let y = kernel.matmul(columns) + self.bias.val().reshape([1, out, 1]);
        y.reshape([b, out, h, w])
    }
}

/// Either convolution, so that one network definition serves both timings.
#[derive(Module, Debug)]
enum Conv {
    Burn(Conv2d),
    Im2col(Im2colConv),
}

impl Conv {
    fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        match self {
            Conv::Burn(c) => c.forward(x),
            Conv::Im2col(c) => c.forward(x),
        }
    }
}

#[derive(Module, Debug)]
struct Cnn {
    convs: Vec<Conv>,
    norms: Vec<BatchNorm>,
    pool: MaxPool2d,
    output: Linear,
}

impl Cnn {
    fn new(device: &Device) -> Self {
        let mut convs = Vec::new();
        let mut norms = Vec::new();
        let mut input = 1;
        for c in CHANNELS {
            let conv = Conv2dConfig::new([input, c], [3, 3])
                .with_padding(PaddingConfig2d::Same)
                .init(device);
            convs.push(Conv::Burn(conv));
            norms.push(BatchNormConfig::new(c).init(device));
            input = c;
        }
        let bands = BANDS >> (CHANNELS.len() - 1);
        Self {
            convs,
            norms,
            pool: MaxPool2dConfig::new([2, 2]).with_strides([2, 2]).init(),
            output: LinearConfig::new(input * bands * 2, CLASSES).init(device),
        }
    }

    /// The same network with every convolution rewritten as im2col.
    fn im2col(&self) -> Self {
        let mut net = self.clone();
        for conv in &mut net.convs {
            if let Conv::Burn(c) = conv {
                *conv = Conv::Im2col(Im2colConv::from_conv(c));
            }
        }
        net
    }

    fn forward(&self, mut x: Tensor<4>) -> Tensor<2> {
        let last = self.convs.len() - 1;
        for (i, (conv, norm)) in self.convs.iter().zip(&self.norms).enumerate() {
            x = relu(norm.forward(conv.forward(x)));
            if i < last {
                x = self.pool.forward(x);
            }
        }
        let [b, c, f, _] = x.dims();
        let max = x.clone().max_dim(3).reshape([b, c * f]);
        let mean = x.mean_dim(3).reshape([b, c * f]);
        self.output.forward(Tensor::cat(vec![max, mean], 1))
    }
}

/// A deterministic batch of inputs in [0, 1) and one-hot targets.
fn batch(device: &Device) -> (Tensor<4>, Tensor<2>) {
    let x: Vec<f32> = (0..BATCH * BANDS * FRAMES)
        .map(|i| ((i * 7919) % 1000) as f32 / 1000.0)
        .collect();
    let mut target = vec![0f32; BATCH * CLASSES];
    for row in 0..BATCH {
        target[row * CLASSES + row % CLASSES] = 1.0;
    }
    (
        Tensor::from_data(TensorData::new(x, [BATCH, 1, BANDS, FRAMES]), device),
        Tensor::from_data(TensorData::new(target, [BATCH, CLASSES]), device),
    )
}

/// Milliseconds per training step and per forward pass (no autodiff), over `iterations`;
/// `net` lives on the autodiff decoration of `device`.
fn time(mut net: Cnn, device: &Device, iterations: usize) -> (f64, f64) {
    let training = device.clone().autodiff();
    let mut optimizer = AdamConfig::new().init();
    let (x, target) = batch(&training);
    let start = Instant::now();
    for _ in 0..iterations {
        let loss = log_softmax(net.forward(x.clone()), 1)
            .mul(target.clone())
            .sum()
            .neg()
            .div_scalar(BATCH as f64);
        let grads = GradientsParams::from_grads(loss.backward(), &net);
        net = optimizer.step(1e-3, net, grads);
    }
    let step = start.elapsed().as_secs_f64() * 1e3 / iterations as f64;
    let net = net.valid();
    let (x, _) = batch(device);
    let start = Instant::now();
    for _ in 0..iterations {
        let _ = net.forward(x.clone()).into_data();
    }
    let forward = start.elapsed().as_secs_f64() * 1e3 / iterations as f64;
    (step, forward)
}

fn main() -> Result<(), String> {
    let iterations = match std::env::args().nth(1) {
        Some(n) => n.parse().map_err(|e| format!("ITERATIONS {n:?}: {e}"))?,
        None => 5,
    };
    let device = birdsong_model::device::cpu();
    let net = Cnn::new(&device.clone().autodiff());
    let fast = net.im2col();
    let (x, _) = batch(&device);
    let difference = (net.valid().forward(x.clone()) - fast.valid().forward(x))
        .abs()
        .max()
        .into_scalar::<f32>();
    println!("largest difference between the two convolutions' logits: {difference:.2e}");
    for (name, net) in [("burn Conv2d", net), ("im2col matmul", fast)] {
        let (step, forward) = time(net, &device, iterations);
        println!(
            "{name:>14}: training step {step:8.1} ms, forward {forward:8.1} ms \
             per batch of {BATCH} maps of {BANDS}x{FRAMES}"
        );
    }
    Ok(())
}
