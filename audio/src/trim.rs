//! Leading and trailing silence removal (librosa `effects.trim(top_db=23)`).
//!
//! A frame is silent when its RMS is more than 23 dB below the loudest
//! frame's (frames as in the STFT: 2048 samples, hop 512, centred, zero
//! padded). The kept span runs from the first non-silent frame's start to one
//! hop past the last non-silent frame. Levels are relative to the signal's
//! own maximum, so a window of digital silence is *not* trimmed at all (every
//! frame is at 0 dB relative to the all-zero maximum, after the 1e-10 power
//! floor): librosa's definition is kept as is.

use crate::spectral::frame_mean_square;
use crate::stft::{HOP, n_frames};

/// The silence threshold below the peak, in dB.
pub const TOP_DB: f64 = 23.0;
/// librosa `amplitude_to_db`'s amin (1e-5) squared: the power floor.
const POWER_FLOOR: f64 = 1e-10;

/// Returns `[start, end)` of the non-silent part of a signal of `n` samples
/// whose block sums of squares are `blocks` (see
/// [`crate::spectral::block_squares`]). `start` is a multiple of `HOP`; `end`
/// too, or `n`.
pub fn trim_bounds(blocks: &[f64], n: usize) -> (usize, usize) {
    if n == 0 {
        return (0, 0);
    }
    let frames = n_frames(n);
    // librosa computes the RMS in float32 and squares it again.
    let power = |t: usize| {
        let rms = (frame_mean_square(blocks, t) as f32).sqrt();
        f64::from(rms * rms)
    };
    let mut max = 0f64;
    for t in 0..frames {
        max = max.max(power(t));
    }
    let ref_db = 10.0 * max.max(POWER_FLOOR).log10();
    let loud = |t: usize| 10.0 * power(t).max(POWER_FLOOR).log10() - ref_db > -TOP_DB;
    let first = (0..frames).find(|&t| loud(t));
    let last = (0..frames).rev().find(|&t| loud(t));
    match (first, last) {
        (Some(a), Some(b)) => (a * HOP, ((b + 1) * HOP).min(n)),
        _ => (0, 0),
    }
}
