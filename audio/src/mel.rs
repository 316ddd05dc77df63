//! The Slaney mel filter bank and decibel conversion (librosa
//! `filters.mel(htk=False, norm="slaney")`, `power_to_db`).
//!
//! Each mel band covers a few dozen FFT bins at most, so the bank is stored
//! sparsely (first bin + weights): applying it costs two multiply-adds per
//! bin instead of 128.

use crate::stft::{N_BINS, N_FFT};

/// Mel bands (librosa `n_mels`).
pub const N_MELS: usize = 128;
/// Floor of `power_to_db` (librosa `amin`).
pub const AMIN: f32 = 1e-10;
/// Dynamic range kept by `power_to_db` (librosa `top_db`).
pub const TOP_DB: f32 = 80.0;

const F_SP: f64 = 200.0 / 3.0;
const MIN_LOG_HZ: f64 = 1000.0;
const MIN_LOG_MEL: f64 = MIN_LOG_HZ / F_SP;

fn logstep() -> f64 {
    6.4f64.ln() / 27.0
}

/// Slaney's Hz → mel (linear below 1 kHz, logarithmic above).
pub fn hz_to_mel(f: f64) -> f64 {
    if f >= MIN_LOG_HZ {
        MIN_LOG_MEL + (f / MIN_LOG_HZ).ln() / logstep()
    } else {
        f / F_SP
    }
}

/// Slaney's mel → Hz.
pub fn mel_to_hz(m: f64) -> f64 {
    if m >= MIN_LOG_MEL {
        MIN_LOG_HZ * (logstep() * (m - MIN_LOG_MEL)).exp()
    } else {
        F_SP * m
    }
}

/// `numpy.linspace(start, stop, num)` with numpy's exact arithmetic.
pub fn linspace(start: f64, stop: f64, num: usize) -> Vec<f64> {
    if num == 0 {
        return Vec::new();
    }
    if num == 1 {
        return vec![start];
    }
    let step = (stop - start) / (num - 1) as f64;
    let mut v: Vec<f64> = (0..num).map(|i| i as f64 * step + start).collect();
    v[num - 1] = stop;
    v
}

/// `librosa.fft_frequencies(sr, n_fft)`: the centre frequency of each bin.
pub fn fft_frequencies(sr: f64) -> Vec<f64> {
    linspace(0.0, sr / 2.0, N_BINS)
}

/// A sparse mel filter bank.
pub struct MelBank {
    /// First bin of each band.
    start: Vec<usize>,
    /// Weights of each band from its first bin on.
    weights: Vec<Vec<f32>>,
}

impl MelBank {
    /// librosa `filters.mel(sr=sr, n_fft=2048, n_mels=128)` (fmin 0, fmax
    /// sr/2, Slaney scale and area normalisation, float32 weights).
    pub fn new(sr: f64) -> Self {
        let fftfreqs = fft_frequencies(sr);
        let mel_f: Vec<f64> = linspace(hz_to_mel(0.0), hz_to_mel(sr / 2.0), N_MELS + 2)
            .into_iter()
            .map(mel_to_hz)
            .collect();
        let fdiff: Vec<f64> = mel_f.windows(2).map(|w| w[1] - w[0]).collect();
        let mut start = Vec::with_capacity(N_MELS);
        let mut weights = Vec::with_capacity(N_MELS);
        for i in 0..N_MELS {
            let enorm = 2.0 / (mel_f[i + 2] - mel_f[i]);
            let row: Vec<f32> = fftfreqs
                .iter()
                .map(|&f| {
                    let lower = -(mel_f[i] - f) / fdiff[i];
                    let upper = (mel_f[i + 2] - f) / fdiff[i + 1];
                    let w = 0f64.max(lower.min(upper)) as f32;
                    (f64::from(w) * enorm) as f32
                })
                .collect();
            let first = row.iter().position(|&w| w != 0.0).unwrap_or(0);
            let last = row.iter().rposition(|&w| w != 0.0).map_or(first, |p| p + 1);
            start.push(first);
            weights.push(row[first..last].to_vec());
        }
        MelBank { start, weights }
    }

    /// Applies the bank to one power spectrum (`N_BINS` values).
    pub fn apply(&self, power: &[f32], out: &mut [f32]) {
        for ((o, &s), w) in out.iter_mut().zip(&self.start).zip(&self.weights) {
            let p = &power[s..s + w.len()];
            // Four lanes break the dependency chain of the dot product.
            let mut lanes = [0f32; 4];
            let (pc, wc) = (p.chunks_exact(4), w.chunks_exact(4));
            let (pr, wr) = (pc.remainder(), wc.remainder());
            for (a, b) in pc.zip(wc) {
                for i in 0..4 {
                    lanes[i] += a[i] * b[i];
                }
            }
            let mut acc = (lanes[0] + lanes[1]) + (lanes[2] + lanes[3]);
            for (a, b) in pr.iter().zip(wr) {
                acc += a * b;
            }
            *o = acc;
        }
    }

    /// The dense matrix (`N_MELS × N_BINS`), for tests and inspection.
    pub fn dense(&self) -> Vec<Vec<f32>> {
        (0..N_MELS)
            .map(|i| {
                let mut row = vec![0f32; N_BINS];
                row[self.start[i]..self.start[i] + self.weights[i].len()]
                    .copy_from_slice(&self.weights[i]);
                row
            })
            .collect()
    }
}

/// `10 * log10(max(amin, x))`, the first step of librosa's `power_to_db`.
#[inline]
pub fn power_to_db(x: f32) -> f32 {
    10.0 * x.max(AMIN).log10()
}

const _: () = assert!(N_FFT == 2 * (N_BINS - 1));
