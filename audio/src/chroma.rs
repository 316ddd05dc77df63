//! Chroma: the spectrum folded onto the 12 pitch classes, with librosa's
//! tuning estimate (`feature.chroma_stft` → `estimate_tuning` → `piptrack`).
//!
//! The tuning (a deviation from A440 in fractions of a semitone, quantised to
//! 0.01) depends on the peaks of *all* frames of the signal, so it is known
//! only after the STFT loop: peaks are collected per frame, the tuning is
//! estimated once, and the chroma filter bank for that tuning (one of 101;
//! cached) is applied to the stored power spectrogram in one matrix product.

use crate::mel::linspace;
use crate::stft::{N_BINS, N_FFT};

/// Pitch classes.
pub const N_CHROMA: usize = 12;
/// `piptrack` frequency range (librosa defaults fmin 150 Hz, fmax 4 kHz).
const PIP_FMIN: f64 = 150.0;
const PIP_FMAX: f64 = 4000.0;
/// `piptrack` threshold relative to the frame maximum.
const PIP_THRESHOLD: f32 = 0.1;
/// Tuning histogram resolution (librosa `resolution=0.01`).
pub const TUNING_BINS: usize = 100;

/// Bin range `[lo, hi)` where `fmin <= f < fmax` (the piptrack mask).
pub fn piptrack_range(sr: f64) -> (usize, usize) {
    let freqs = crate::mel::fft_frequencies(sr);
    let fmax = PIP_FMAX.min(sr / 2.0);
    let lo = freqs.iter().position(|&f| f >= PIP_FMIN).unwrap_or(N_BINS);
    let hi = freqs.iter().rposition(|&f| f < fmax).map_or(lo, |p| p + 1);
    (lo.max(1), hi.min(N_BINS - 1).max(lo.max(1)))
}

/// Appends the `(pitch, magnitude)` of every `piptrack` peak of one frame of
/// the power spectrum `s` (librosa treats the power spectrogram as `S`).
/// `max` is the frame's largest value (from [`crate::stft::Stft::frame`]).
#[inline(always)]
pub fn piptrack_frame(
    s: &[f32],
    max: f32,
    range: (usize, usize),
    sr: f64,
    peaks: &mut Vec<(f32, f32)>,
) {
    let reference = PIP_THRESHOLD * max;
    let x = |k: usize| if s[k] > reference { s[k] } else { 0.0 };
    let scale = sr / N_FFT as f64;
    for k in range.0..range.1 {
        // Fast path: a bin at or below the threshold is zeroed, never a peak.
        if s[k] <= reference {
            continue;
        }
        let xk = s[k];
        if !(xk > x(k - 1) && xk >= x(k + 1)) {
            continue;
        }
        // Parabolic interpolation (numba stencil: float64 intermediates).
        let (prev, cur, next) = (f64::from(s[k - 1]), f64::from(s[k]), f64::from(s[k + 1]));
        let a = next + prev - 2.0 * cur;
        let b = (next - prev) / 2.0;
        let shift = if b.abs() >= a.abs() {
            0f32
        } else {
            (-b / a) as f32
        };
        // np.gradient (interior: central difference), float32.
        let avg = (s[k + 1] - s[k - 1]) / 2.0;
        let dskew = 0.5 * avg * shift;
        let pitch = ((k as f64 + f64::from(shift)) * scale) as f32;
        peaks.push((pitch, s[k] + dskew));
    }
}

/// librosa `estimate_tuning` from the collected peaks, as a histogram bin
/// index in `0..=100` (tuning = `-0.5 + 0.01 * index`).
pub fn estimate_tuning_index(peaks: &mut [(f32, f32)], scratch: &mut Vec<f32>) -> usize {
    // pitch > 0 always holds for piptrack peaks (fmin = 150 Hz).
    scratch.clear();
    scratch.extend(peaks.iter().filter(|p| p.0 > 0.0).map(|p| p.1));
    if scratch.is_empty() {
        return TUNING_BINS / 2; // tuning 0.0
    }
    let threshold = median(scratch);
    let edges = linspace(-0.5, 0.5, TUNING_BINS + 1);
    let mut counts = [0u32; TUNING_BINS];
    let mut any = false;
    for &(pitch, mag) in peaks.iter() {
        if !(pitch > 0.0 && mag >= threshold) {
            continue;
        }
        any = true;
        // hz_to_octs in float32, then mod 1 in float32 (numpy semantics).
        let octs = (pitch / (440.0f32 / 16.0)).log2();
        let v = 12.0f32 * octs;
        let mut residual = v - (v / 1.0).floor();
        if residual >= 1.0 {
            residual -= 1.0;
        }
        if residual >= 0.5 {
            residual -= 1.0;
        }
        let r = f64::from(residual);
        if !(edges[0]..=edges[TUNING_BINS]).contains(&r) {
            continue;
        }
        // np.histogram: edges[i] <= r < edges[i+1], last bin closed.
        let mut i = (((r + 0.5) * TUNING_BINS as f64) as usize).min(TUNING_BINS - 1);
        while i > 0 && r < edges[i] {
            i -= 1;
        }
        while i + 1 < TUNING_BINS && r >= edges[i + 1] {
            i += 1;
        }
        counts[i] += 1;
    }
    if !any {
        return TUNING_BINS / 2;
    }
    let mut best = 0;
    for (i, &c) in counts.iter().enumerate() {
        if c > counts[best] {
            best = i;
        }
    }
    best
}

/// `np.median` of float32 values (mean of the two middle values for an even count).
fn median(v: &mut [f32]) -> f32 {
    let n = v.len();
    let cmp = |a: &f32, b: &f32| a.total_cmp(b);
    let (_, hi, _) = v.select_nth_unstable_by(n / 2, cmp);
    let hi = *hi;
    if n % 2 == 1 {
        hi
    } else {
        let lo = v[..n / 2].iter().copied().fold(f32::NEG_INFINITY, f32::max);
        (lo + hi) / 2.0
    }
}

/// The tuning value of a histogram index.
pub fn tuning_of_index(index: usize) -> f64 {
    linspace(-0.5, 0.5, TUNING_BINS + 1)[index.min(TUNING_BINS)]
}

/// librosa `filters.chroma(sr, n_fft=2048, tuning)`: `N_CHROMA × N_BINS`
/// row-major float32 weights.
pub fn chroma_bank(sr: f64, tuning: f64) -> Vec<f32> {
    let nc = N_CHROMA as f64;
    let step = sr / N_FFT as f64;
    let a440 = 440.0 * 2f64.powf(tuning / nc);
    let hz_to_octs = |f: f64| (f / (a440 / 16.0)).log2();
    let mut frqbins = Vec::with_capacity(N_FFT);
    for k in 1..N_FFT {
        frqbins.push(nc * hz_to_octs(k as f64 * step));
    }
    frqbins.insert(0, frqbins[0] - 1.5 * nc);
    let mut binwidth: Vec<f64> = frqbins.windows(2).map(|w| (w[1] - w[0]).max(1.0)).collect();
    binwidth.push(1.0);
    let n_chroma2 = (nc / 2.0).round();
    // wts[c][k], then column-normalised (L2), octave-weighted.
    let mut wts = vec![0f64; N_CHROMA * N_FFT];
    for c in 0..N_CHROMA {
        for k in 0..N_FFT {
            let d = frqbins[k] - c as f64;
            let x = d + n_chroma2 + 10.0 * nc;
            let mut r = x % nc;
            if r != 0.0 && r < 0.0 {
                r += nc;
            }
            let d = r - n_chroma2;
            wts[c * N_FFT + k] = (-0.5 * (2.0 * d / binwidth[k]).powi(2)).exp();
        }
    }
    for k in 0..N_FFT {
        let norm = (0..N_CHROMA)
            .map(|c| wts[c * N_FFT + k].powi(2))
            .sum::<f64>()
            .powf(0.5);
        let octw = (-0.5 * ((frqbins[k] / nc - 5.0) / 2.0).powi(2)).exp();
        for c in 0..N_CHROMA {
            let w = &mut wts[c * N_FFT + k];
            if norm >= f64::from(f32::MIN_POSITIVE) {
                *w /= norm;
            }
            *w *= octw;
        }
    }
    // base_c: roll by -3 rows, keep the first N_BINS columns.
    let mut out = vec![0f32; N_CHROMA * N_BINS];
    for r in 0..N_CHROMA {
        let src = (r + 3) % N_CHROMA;
        for k in 0..N_BINS {
            out[r * N_BINS + k] = wts[src * N_FFT + k] as f32;
        }
    }
    out
}
