//! BirdNET's spectrogram front-end, computed in Rust.
//!
//! BirdNET V2.4 turns a 3-s window at 48 kHz into two power-compressed mel spectrograms
//! (a 2048-sample frame for low frequencies, a 1024-sample one for high), 511 frames ×
//! 96 bands each, before its convolutional network. In the converted graph the DFT is a
//! float64 matrix product that alone takes most of the run time (about 90 of 115 ms per
//! window under tract here); the same arithmetic with a real FFT takes a few
//! milliseconds. The constants (frame windows, mel filterbanks, compression exponents)
//! are read from the installed graph itself, so nothing of BirdNET is in this source.
//!
//! Every step follows the graph's types: min-max normalisation and windowing in
//! float32, the transform in float64 (float32 loses the parity), its real part (the
//! original model keeps only that) back to float32, then the filterbank, squaring and the
//! power. The tests compare the result with the whole graph run by tract.

use std::sync::Arc;

use realfft::{RealFftPlanner, RealToComplex};

use crate::WINDOW_SAMPLES;
use crate::error::Result;
use crate::graph::Initializers;

/// Frames per spectrogram.
pub const FRAMES: usize = 511;
/// Mel bands per spectrogram.
pub const MELS: usize = 96;

/// One of the two spectrograms: frame length and hop, and its constants.
struct Branch {
    frame: usize,
    hop: usize,
    window: Vec<f32>,
    /// Per mel band, the first bin its filter covers and its non-zero weights: the
    /// filterbank is ~99 % zeros.
    filters: Vec<(usize, Vec<f32>)>,
    exponent: f32,
    fft: Arc<dyn RealToComplex<f64>>,
}

/// The front-end; immutable, shared by every thread.
pub struct Frontend {
    branches: [Branch; 2],
}

impl std::fmt::Debug for Frontend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Frontend").finish_non_exhaustive()
    }
}

impl Frontend {
    /// Reads the constants of both branches from the graph.
    pub(crate) fn from_graph(graph: &Initializers<'_>) -> Result<Self> {
        let mut planner = RealFftPlanner::<f64>::new();
        // (frame, hop, window, filterbank, exponent, the Pow node that reads it)
        let specs = [
            (2048, 278, "c20", "c32", "c34", "n66_Pow"),
            (1024, 280, "c43", "c51", "c52", "n125_Pow"),
        ];
        let mut branches = Vec::with_capacity(2);
        for (frame, hop, window, filterbank, exponent, pow) in specs {
            graph.expect_input(pow, 1, exponent)?;
            let bins = frame / 2 + 1;
            let dense = graph.f32(filterbank, &[bins, MELS])?;
            let filters = (0..MELS)
                .map(|m| {
                    let column: Vec<f32> = (0..bins).map(|k| dense[k * MELS + m]).collect();
                    let first = column.iter().position(|&w| w != 0.0).unwrap_or(0);
                    let last = column.iter().rposition(|&w| w != 0.0).unwrap_or(0);
                    (first, column[first..=last.max(first)].to_vec())
                })
                .collect();
            branches.push(Branch {
                frame,
                hop,
                window: graph.f32(window, &[frame])?,
                filters,
                exponent: graph.f32(exponent, &[])?[0],
                fft: planner.plan_fft_forward(frame),
            });
        }
        let [low, high]: [Branch; 2] = branches
            .try_into()
            .map_err(|_| crate::error::BirdnetError::runtime("two branches"))?;
        Ok(Self {
            branches: [low, high],
        })
    }

    /// The two spectrograms of one window of exactly [`WINDOW_SAMPLES`] samples, each
    /// `FRAMES × MELS` row-major, appended to `low` and `high`.
    pub fn spectrograms(&self, window: &[f32], low: &mut Vec<f32>, high: &mut Vec<f32>) {
        debug_assert_eq!(window.len(), WINDOW_SAMPLES);
        let normalised = normalise(window);
        self.branches[0].compute(&normalised, low);
        self.branches[1].compute(&normalised, high);
    }
}

/// The graph's min-max scaling to [-1, 1] (with its 1e-6 guard against silence).
fn normalise(x: &[f32]) -> Vec<f32> {
    let min = x.iter().copied().fold(f32::INFINITY, f32::min);
    let max = x.iter().map(|v| v - min).fold(f32::NEG_INFINITY, f32::max);
    let scale = max + 1e-6;
    x.iter().map(|v| ((v - min) / scale - 0.5) * 2.0).collect()
}

impl Branch {
    fn compute(&self, x: &[f32], out: &mut Vec<f32>) {
        let mut input = self.fft.make_input_vec();
        let mut spectrum = self.fft.make_output_vec();
        let mut scratch = self.fft.make_scratch_vec();
        let mut real = vec![0f32; spectrum.len()];
        out.reserve(FRAMES * MELS);
        for f in 0..FRAMES {
            let start = f * self.hop;
            for ((dst, &s), &w) in input
                .iter_mut()
                .zip(&x[start..start + self.frame])
                .zip(&self.window)
            {
                *dst = f64::from(s * w);
            }
            // Lengths come from the plan itself, so this cannot fail.
            let _ = self
                .fft
                .process_with_scratch(&mut input, &mut spectrum, &mut scratch);
            for (r, c) in real.iter_mut().zip(&spectrum) {
                *r = c.re as f32;
            }
            for (first, weights) in &self.filters {
                let band: f32 = real[*first..first + weights.len()]
                    .iter()
                    .zip(weights)
                    .map(|(a, b)| a * b)
                    .sum();
                out.push((band * band).powf(self.exponent));
            }
        }
    }
}
