//! The band profile: where in frequency a window's loudest sounds are.
//!
//! The 95 librosa features describe the spectrum through 20 cepstral
//! coefficients averaged over every frame, so a few seconds of song in a
//! window of background noise barely move them, and a species' frequency band
//! is smeared across coefficients. The band profile keeps frequency explicit:
//! the 128 mel bands are pooled into 32 (4 adjacent bands each, power
//! averaged), converted to dB relative to the window's loudest pooled value
//! (floored 80 dB below it, librosa's `power_to_db(ref=np.max)`), and each band
//! is summarised over the window's frames by its maximum, 90th percentile,
//! median (the noise floor) and standard deviation. On the xc3 recordings these
//! 128 values separate species far better than the 95 (see the model crate's
//! README); `tests/fixtures/band_profile.py` is their definition in librosa.

use crate::mel::{self, N_MELS, TOP_DB};

/// Mel bands pooled into one profile band.
pub const MELS_PER_BAND: usize = 4;
/// Profile bands.
pub const N_BANDS: usize = N_MELS / MELS_PER_BAND;
/// Statistics per band: maximum, 90th percentile, median, standard deviation.
pub const BAND_STATS: usize = 4;
/// Number of band-profile features.
pub const BAND_FEATURE_COUNT: usize = N_BANDS * BAND_STATS;

/// Band-profile feature names, in vector order: all maxima, then all 90th
/// percentiles, medians and standard deviations, low bands first.
pub const BAND_FEATURE_NAMES: [&str; BAND_FEATURE_COUNT] = [
    "band00_max",
    "band01_max",
    "band02_max",
    "band03_max",
    "band04_max",
    "band05_max",
    "band06_max",
    "band07_max",
    "band08_max",
    "band09_max",
    "band10_max",
    "band11_max",
    "band12_max",
    "band13_max",
    "band14_max",
    "band15_max",
    "band16_max",
    "band17_max",
    "band18_max",
    "band19_max",
    "band20_max",
    "band21_max",
    "band22_max",
    "band23_max",
    "band24_max",
    "band25_max",
    "band26_max",
    "band27_max",
    "band28_max",
    "band29_max",
    "band30_max",
    "band31_max",
    "band00_p90",
    "band01_p90",
    "band02_p90",
    "band03_p90",
    "band04_p90",
    "band05_p90",
    "band06_p90",
    "band07_p90",
    "band08_p90",
    "band09_p90",
    "band10_p90",
    "band11_p90",
    "band12_p90",
    "band13_p90",
    "band14_p90",
    "band15_p90",
    "band16_p90",
    "band17_p90",
    "band18_p90",
    "band19_p90",
    "band20_p90",
    "band21_p90",
    "band22_p90",
    "band23_p90",
    "band24_p90",
    "band25_p90",
    "band26_p90",
    "band27_p90",
    "band28_p90",
    "band29_p90",
    "band30_p90",
    "band31_p90",
    "band00_median",
    "band01_median",
    "band02_median",
    "band03_median",
    "band04_median",
    "band05_median",
    "band06_median",
    "band07_median",
    "band08_median",
    "band09_median",
    "band10_median",
    "band11_median",
    "band12_median",
    "band13_median",
    "band14_median",
    "band15_median",
    "band16_median",
    "band17_median",
    "band18_median",
    "band19_median",
    "band20_median",
    "band21_median",
    "band22_median",
    "band23_median",
    "band24_median",
    "band25_median",
    "band26_median",
    "band27_median",
    "band28_median",
    "band29_median",
    "band30_median",
    "band31_median",
    "band00_std",
    "band01_std",
    "band02_std",
    "band03_std",
    "band04_std",
    "band05_std",
    "band06_std",
    "band07_std",
    "band08_std",
    "band09_std",
    "band10_std",
    "band11_std",
    "band12_std",
    "band13_std",
    "band14_std",
    "band15_std",
    "band16_std",
    "band17_std",
    "band18_std",
    "band19_std",
    "band20_std",
    "band21_std",
    "band22_std",
    "band23_std",
    "band24_std",
    "band25_std",
    "band26_std",
    "band27_std",
    "band28_std",
    "band29_std",
    "band30_std",
    "band31_std",
];

/// Averages the power of each group of [`MELS_PER_BAND`] mel bands of one
/// frame (`mel_power`: `N_MELS` values) into `out` (`N_BANDS` values), summing
/// in order in float32 as numpy's `reshape(32, 4, -1).mean(axis=1)` does.
#[inline]
pub fn pool_frame(mel_power: &[f32], out: &mut [f32]) {
    for (o, group) in out.iter_mut().zip(mel_power.chunks_exact(MELS_PER_BAND)) {
        let mut sum = 0f32;
        for &v in group {
            sum += v;
        }
        *o = sum / MELS_PER_BAND as f32;
    }
}

/// The band profile of `frames` frames of pooled power (`bands`, frame-major,
/// `N_BANDS` per frame; converted to dB in place) into `out`. `column` is
/// scratch space.
pub fn profile(bands: &mut [f32], frames: usize, column: &mut Vec<f32>, out: &mut [f32]) {
    debug_assert_eq!(bands.len(), frames * N_BANDS);
    debug_assert_eq!(out.len(), BAND_FEATURE_COUNT);
    if frames == 0 {
        out.fill(0.0);
        return;
    }
    // dB relative to the loudest value, the same float32 steps as librosa. The loudest
    // value goes through the same conversion as the rest, so it lands on exactly 0 dB
    // and librosa's floor (`max - top_db`) is -80 dB.
    let peak = bands.iter().copied().fold(0f32, f32::max);
    let mut peak_db = [peak];
    mel::power_to_db_slice(&mut peak_db);
    mel::power_to_db_slice(bands);
    for v in bands.iter_mut() {
        *v = (*v - peak_db[0]).max(-TOP_DB);
    }
    for b in 0..N_BANDS {
        column.clear();
        column.extend((0..frames).map(|t| bands[t * N_BANDS + b]));
        column.sort_unstable_by(f32::total_cmp);
        let (mut sum, mut sumsq) = (0f64, 0f64);
        for &v in column.iter() {
            sum += f64::from(v);
            sumsq += f64::from(v) * f64::from(v);
        }
        let n = frames as f64;
        let mean = sum / n;
        out[b] = column[frames - 1];
        out[N_BANDS + b] = percentile(column, 0.9);
        out[2 * N_BANDS + b] = percentile(column, 0.5);
        out[3 * N_BANDS + b] = (sumsq / n - mean * mean).max(0.0).sqrt() as f32;
    }
}

/// numpy's default (`linear`) percentile of sorted values: interpolates between
/// the two values around position `q * (n - 1)`.
fn percentile(sorted: &[f32], q: f64) -> f32 {
    let pos = q * (sorted.len() - 1) as f64;
    let lo = pos.floor() as usize;
    let hi = (lo + 1).min(sorted.len() - 1);
    let frac = pos - lo as f64;
    let (a, b) = (f64::from(sorted[lo]), f64::from(sorted[hi]));
    (a + (b - a) * frac) as f32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_match_numpy() {
        // np.percentile([1, 2, 3, 4, 10], [50, 90]) == [3.0, 7.6]
        let v = [1.0, 2.0, 3.0, 4.0, 10.0];
        assert_eq!(percentile(&v, 0.5), 3.0);
        assert!((percentile(&v, 0.9) - 7.6).abs() < 1e-6);
        assert_eq!(percentile(&[5.0], 0.9), 5.0);
    }

    #[test]
    fn a_tone_in_one_band_stands_out_of_the_others() {
        // 10 frames; band 5 is 1000x louder than the rest in every other frame.
        let frames = 10;
        let mut bands = vec![1e-3f32; frames * N_BANDS];
        for t in (0..frames).step_by(2) {
            bands[t * N_BANDS + 5] = 1.0;
        }
        let mut out = [0f32; BAND_FEATURE_COUNT];
        profile(&mut bands, frames, &mut Vec::new(), &mut out);
        assert!(out[5].abs() < 1e-4, "loudest band at 0 dB: {}", out[5]);
        assert!(
            (out[0] + 30.0).abs() < 1e-3,
            "quiet band max -30 dB: {}",
            out[0]
        );
        // Median of five 0 dB and five -30 dB values: -15 dB; std 15 dB.
        assert!((out[2 * N_BANDS + 5] + 15.0).abs() < 1e-3);
        assert!((out[3 * N_BANDS + 5] - 15.0).abs() < 1e-3);
        assert!(out[3 * N_BANDS].abs() < 1e-3, "constant band has no spread");
    }

    #[test]
    fn silence_is_floored_not_infinite() {
        let frames = 4;
        let mut bands = vec![0f32; frames * N_BANDS];
        let mut out = [1f32; BAND_FEATURE_COUNT];
        profile(&mut bands, frames, &mut Vec::new(), &mut out);
        assert!(out.iter().all(|v| v.is_finite()));
        let mut pooled = [0f32; N_BANDS];
        pool_frame(&[2.0; N_MELS], &mut pooled);
        assert!(pooled.iter().all(|&v| v == 2.0));
    }
}
