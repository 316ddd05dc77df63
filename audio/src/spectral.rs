//! Spectral shape per frame (centroid, bandwidth, 85 % roll-off) from the
//! magnitude spectrum, and the two time-domain features (zero-crossing rate,
//! RMS) computed from prefix sums instead of re-framing the signal.

use crate::stft::{HOP, N_BINS, N_FFT};

/// librosa `spectral_rolloff(roll_percent=0.85)`.
const ROLL_PERCENT: f32 = 0.85;
/// librosa `zero_crossings(threshold=1e-10)`: smaller magnitudes count as +0.
const ZC_THRESHOLD: f32 = 1e-10;

/// Centroid, bandwidth (p = 2) and roll-off of one magnitude spectrum.
#[derive(Clone, Copy, Debug, Default)]
pub struct Shape {
    /// Spectral centroid in Hz.
    pub centroid: f64,
    /// Spectral bandwidth (p = 2) in Hz.
    pub bandwidth: f64,
    /// Roll-off frequency in Hz.
    pub rolloff: f64,
}

/// Computes [`Shape`] for a magnitude spectrum; `freqs` are the bin centres.
///
/// librosa normalises the column by its L1 norm in float64 (a silent column
/// stays zero, so centroid and bandwidth are 0) and accumulates the roll-off's
/// cumulative sum in float32; the roll-off is the first bin whose cumulative
/// sum reaches 85 % of the total (bin 0 for a silent column).
pub fn shape(mag: &[f32], freqs: &[f64]) -> Shape {
    debug_assert_eq!(mag.len(), N_BINS);
    let mut l1 = 0f64;
    let mut m1 = 0f64;
    let mut m2 = 0f64;
    for (&m, &f) in mag.iter().zip(freqs) {
        let m = f64::from(m);
        l1 += m;
        m1 += m * f;
        m2 += m * f * f;
    }
    let (centroid, bandwidth) = if l1 < f64::from(f32::MIN_POSITIVE) {
        (0.0, 0.0)
    } else {
        let c = m1 / l1;
        // sum(S_norm * (f - c)^2) = E[f^2] - c^2, clamped against rounding.
        let var = (m2 / l1 - c * c).max(0.0);
        (c, var.sqrt())
    };
    // Roll-off with librosa's float32 cumulative sum.
    let mut total = 0f32;
    for &m in mag {
        total += m;
    }
    let threshold = ROLL_PERCENT * total;
    let mut acc = 0f32;
    let mut bin = N_BINS - 1;
    for (k, &m) in mag.iter().enumerate() {
        acc += m;
        if acc >= threshold {
            bin = k;
            break;
        }
    }
    Shape {
        centroid,
        bandwidth,
        rolloff: freqs[bin],
    }
}

/// Per-frame zero-crossing rate of `y` with librosa's edge padding, written
/// to `out` (`1 + len / HOP` frames). `counts` is scratch space.
pub fn zero_crossing_rate(y: &[f32], counts: &mut Vec<u32>, out: &mut Vec<f64>) {
    let n = y.len();
    // counts[i] = crossings between samples j-1 and j for j in 1..=i.
    counts.clear();
    counts.reserve(n.max(1));
    counts.push(0);
    let sb = |x: f32| x < -ZC_THRESHOLD;
    let mut c = 0u32;
    for w in y.windows(2) {
        c += u32::from(sb(w[0]) != sb(w[1]));
        counts.push(c);
    }
    out.clear();
    let frames = crate::stft::n_frames(n);
    let half = (N_FFT / 2) as isize;
    for t in 0..frames {
        let s = (t * HOP) as isize;
        // Crossing positions j (sample indices of y) in [s - half + 1, s + half - 1] ∩ [1, n-1].
        let lo = (s - half + 1).max(1);
        let hi = (s + half - 1).min(n as isize - 1);
        let count = if hi >= lo {
            counts[hi as usize] - counts[lo as usize - 1]
        } else {
            0
        };
        out.push(f64::from(count) / N_FFT as f64);
    }
}

/// Prefix sums of squares, `p[i] = sum(y[..i]^2)` in float64.
pub fn square_prefix(y: &[f32], p: &mut Vec<f64>) {
    p.clear();
    p.reserve(y.len() + 1);
    let mut acc = 0f64;
    p.push(0.0);
    for &x in y {
        acc += f64::from(x) * f64::from(x);
        p.push(acc);
    }
}

/// Mean square of centred frame `t` of a signal of `n` samples whose prefix
/// sums of squares (from its first sample) are `p` (zero padding outside).
#[inline]
pub fn frame_mean_square(p: &[f64], n: usize, t: usize) -> f64 {
    let s = (t * HOP) as isize;
    let half = (N_FFT / 2) as isize;
    let lo = (s - half).max(0) as usize;
    let hi = ((s + half).max(0) as usize).min(n);
    if hi <= lo {
        return 0.0;
    }
    ((p[hi] - p[lo]) / N_FFT as f64).max(0.0)
}
