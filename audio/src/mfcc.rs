//! Mel-frequency cepstral coefficients: an orthonormal DCT-II of the mel
//! spectrum in dB (librosa `feature.mfcc`, i.e. `scipy.fftpack.dct(type=2,
//! norm="ortho")` keeping the first 20 coefficients).
//!
//! Only 20 of 128 outputs are kept, so a precomputed 20×128 matrix is cheaper
//! than a fast DCT.

use crate::mel::N_MELS;

/// Coefficients kept (librosa `n_mfcc`).
pub const N_MFCC: usize = 20;

/// The first `N_MFCC` rows of the orthonormal DCT-II matrix of size `N_MELS`,
/// row-major.
pub fn dct_matrix() -> Vec<f32> {
    let n = N_MELS as f64;
    let mut m = Vec::with_capacity(N_MFCC * N_MELS);
    for k in 0..N_MFCC {
        let scale = if k == 0 {
            (1.0 / n).sqrt()
        } else {
            (2.0 / n).sqrt()
        };
        for i in 0..N_MELS {
            let c = (std::f64::consts::PI * k as f64 * (2 * i + 1) as f64 / (2.0 * n)).cos();
            m.push((scale * c) as f32);
        }
    }
    m
}
