//! Spectral shape per frame (centroid, bandwidth, 85 % roll-off) from the
//! magnitude spectrum, and the two time-domain features (zero-crossing rate,
//! RMS) computed from per-block sums instead of re-framing the signal.

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
#[inline(always)]
pub fn shape(mag: &[f32], freqs: &[f64]) -> Shape {
    debug_assert_eq!(mag.len(), N_BINS);
    // Eight lanes per sum (three independent sums): vectorised, and short
    // dependency chains. Block sums of the magnitudes are kept for the roll-off.
    const L: usize = 8;
    let mut l1 = [0f64; L];
    let mut m1 = [0f64; L];
    let mut m2 = [0f64; L];
    let mut blocks = [0f64; N_BINS / L + 1];
    let mc = mag.chunks_exact(L);
    let fc = freqs.chunks_exact(L);
    let (mr, fr) = (mc.remainder(), fc.remainder());
    for ((m, f), b) in mc.zip(fc).zip(blocks.iter_mut()) {
        let mut bs = 0f64;
        for i in 0..L {
            let v = f64::from(m[i]);
            l1[i] += v;
            m1[i] += v * f[i];
            m2[i] += v * f[i] * f[i];
            bs += v;
        }
        *b = bs;
    }
    let mut tail = 0f64;
    let (mut s1, mut s2) = (0f64, 0f64);
    for (&m, &f) in mr.iter().zip(fr) {
        let v = f64::from(m);
        tail += v;
        s1 += v * f;
        s2 += v * f * f;
    }
    let n_blocks = N_BINS / L;
    blocks[n_blocks] = tail;
    let total = l1.iter().sum::<f64>() + tail;
    let m1 = m1.iter().sum::<f64>() + s1;
    let m2 = m2.iter().sum::<f64>() + s2;
    let (centroid, bandwidth) = if total < f64::from(f32::MIN_POSITIVE) {
        (0.0, 0.0)
    } else {
        let c = m1 / total;
        // sum(S_norm * (f - c)^2) = E[f^2] - c^2, clamped against rounding.
        let var = (m2 / total - c * c).max(0.0);
        (c, var.sqrt())
    };
    // Roll-off: the first bin whose cumulative sum reaches 85 % of the total
    // (bin 0 for a silent frame, where 0 >= 0). Whole blocks are skipped
    // while they stay below the threshold.
    let threshold = f64::from(ROLL_PERCENT) * total;
    let mut acc = 0f64;
    let mut bin = N_BINS - 1;
    'scan: for (b, &bs) in blocks.iter().enumerate() {
        if acc + bs < threshold && b < n_blocks {
            acc += bs;
            continue;
        }
        let end = ((b + 1) * L).min(N_BINS);
        for (k, &m) in mag.iter().enumerate().take(end).skip(b * L) {
            acc += f64::from(m);
            if acc >= threshold {
                bin = k;
                break 'scan;
            }
        }
    }
    // librosa accumulates in float32, whose rounding (~1e-6 of the total)
    // decides near-ties differently from our float64 sums. When the
    // threshold falls that close to a bin edge, redo the scan in float32
    // exactly as numpy's sequential cumsum does (rare, so cheap on average).
    let margin = ROLLOFF_TIE_MARGIN * total;
    let below = acc - f64::from(mag[bin]);
    if (acc - threshold).abs() < margin || (threshold - below).abs() < margin {
        bin = rolloff_f32(mag);
    }
    Shape {
        centroid,
        bandwidth,
        rolloff: freqs[bin],
    }
}

/// Relative distance to the threshold below which the roll-off is
/// recomputed with librosa's float32 arithmetic.
const ROLLOFF_TIE_MARGIN: f64 = 2e-5;

/// The roll-off bin with numpy's float32 sequential cumulative sum.
fn rolloff_f32(mag: &[f32]) -> usize {
    let mut total = 0f32;
    for &m in mag {
        total += m;
    }
    let threshold = ROLL_PERCENT * total;
    let mut acc = 0f32;
    for (k, &m) in mag.iter().enumerate() {
        acc += m;
        if acc >= threshold {
            return k;
        }
    }
    mag.len() - 1
}

/// Per-frame zero-crossing rate of `y` with librosa's edge padding, written
/// to `out` (`1 + len / HOP` frames). `counts` is scratch space.
///
/// A crossing at sample `j` (sign of `y[j]` differs from `y[j-1]`, values
/// within 1e-10 of zero counting as positive) belongs to block `(j-1) / HOP`.
/// Frame `t` (edge padding adds no crossings) counts the crossings at
/// `j` in `[HOP*t - 1023, HOP*t + 1023]`: blocks `t-2 ..= t+1` minus the one
/// at `j = HOP*(t+2)`. Block counts are a single vectorisable pass.
pub fn zero_crossing_rate(y: &[f32], counts: &mut Vec<u32>, out: &mut Vec<f64>) {
    let n = y.len();
    let sb = |x: f32| u32::from(x < -ZC_THRESHOLD);
    counts.clear();
    if n > 1 {
        // Block b holds crossings at j in [HOP*b + 1, HOP*b + HOP].
        let mut start = 1;
        while start < n {
            let end = (start + HOP).min(n);
            let mut c = 0u32;
            for w in y[start - 1..end].windows(2) {
                c += sb(w[0]) ^ sb(w[1]);
            }
            counts.push(c);
            start = end;
        }
    }
    let crossing_at = |j: usize| -> u32 {
        if j >= 1 && j < n {
            sb(y[j]) ^ sb(y[j - 1])
        } else {
            0
        }
    };
    out.clear();
    let frames = crate::stft::n_frames(n);
    const BLOCKS_BEFORE: usize = N_FFT / 2 / HOP;
    for t in 0..frames {
        let lo = t.saturating_sub(BLOCKS_BEFORE);
        let hi = (t + BLOCKS_BEFORE).min(counts.len());
        let mut c: u32 = if hi > lo {
            counts[lo..hi].iter().sum()
        } else {
            0
        };
        // The window ends at j = HOP*t + 1023: drop j = HOP*(t+2) if counted.
        if t + BLOCKS_BEFORE <= counts.len() {
            c -= crossing_at(HOP * (t + BLOCKS_BEFORE));
        }
        out.push(f64::from(c) / N_FFT as f64);
    }
}

/// Sums of squares of consecutive blocks of `HOP` samples (the last block
/// may be partial), in float64. A centred frame is four blocks, so frame
/// energies need no second pass over the samples; a trimmed signal starts
/// and ends on block boundaries (or at the signal's end), so its blocks are
/// a sub-slice of these.
pub fn block_squares(y: &[f32], out: &mut Vec<f64>) {
    out.clear();
    for block in y.chunks(HOP) {
        let mut lanes = [0f64; 8];
        let chunks = block.chunks_exact(8);
        let rest = chunks.remainder();
        for c in chunks {
            for i in 0..8 {
                lanes[i] += f64::from(c[i]) * f64::from(c[i]);
            }
        }
        let mut s: f64 = lanes.iter().sum();
        for &x in rest {
            s += f64::from(x) * f64::from(x);
        }
        out.push(s);
    }
}

/// Mean square of centred frame `t` (2048 samples, zero padded) of a signal
/// whose block sums of squares are `blocks`.
#[inline]
pub fn frame_mean_square(blocks: &[f64], t: usize) -> f64 {
    const BLOCKS_BEFORE: usize = N_FFT / 2 / HOP;
    let lo = t.saturating_sub(BLOCKS_BEFORE);
    let hi = (t + BLOCKS_BEFORE).min(blocks.len());
    if hi <= lo {
        return 0.0;
    }
    blocks[lo..hi].iter().sum::<f64>() / N_FFT as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    /// librosa's definition, spelled out: edge-pad by 1024, frame, count
    /// sign changes between consecutive samples of each frame.
    fn zcr_naive(y: &[f32]) -> Vec<f64> {
        let n = y.len() as isize;
        let at = |i: isize| y[i.clamp(0, n - 1) as usize];
        let sb = |x: f32| !(-ZC_THRESHOLD..=ZC_THRESHOLD).contains(&x) && x < 0.0;
        (0..crate::stft::n_frames(y.len()))
            .map(|t| {
                let s = (t * HOP) as isize - 1024;
                let c = (1..N_FFT as isize)
                    .filter(|&j| sb(at(s + j)) != sb(at(s + j - 1)))
                    .count();
                c as f64 / N_FFT as f64
            })
            .collect()
    }

    #[test]
    fn zero_crossing_rate_matches_the_definition() {
        let mut state = 7u32;
        for len in [1usize, 2, 511, 512, 513, 1500, 2048, 5000, 12_345] {
            let y: Vec<f32> = (0..len)
                .map(|i| {
                    state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                    match i % 17 {
                        0 => 0.0,
                        1 => -1e-11, // within the threshold: counts as positive
                        _ => (state >> 8) as f32 / (1u32 << 24) as f32 - 0.5,
                    }
                })
                .collect();
            let (mut counts, mut out) = (Vec::new(), Vec::new());
            zero_crossing_rate(&y, &mut counts, &mut out);
            assert_eq!(out, zcr_naive(&y), "length {len}");
        }
    }

    #[test]
    fn frame_energy_from_blocks_matches_direct_sum() {
        let y: Vec<f32> = (0..7000)
            .map(|i| ((i * 7919) % 1000) as f32 / 1000.0 - 0.5)
            .collect();
        let mut blocks = Vec::new();
        block_squares(&y, &mut blocks);
        for t in 0..crate::stft::n_frames(y.len()) {
            let s = (t * HOP) as isize - 1024;
            let direct: f64 = (s..s + N_FFT as isize)
                .filter(|&i| i >= 0 && (i as usize) < y.len())
                .map(|i| f64::from(y[i as usize]).powi(2))
                .sum::<f64>()
                / N_FFT as f64;
            assert!(
                (frame_mean_square(&blocks, t) - direct).abs() < 1e-12,
                "frame {t}"
            );
        }
    }
}
