//! The short-time Fourier transform every spectral feature is derived from.
//!
//! librosa's defaults: `n_fft = 2048`, `hop = 512`, periodic Hann window,
//! frames centred on `t * hop` with the signal padded by `n_fft / 2` zeros on
//! both sides (`pad_mode="constant"`), so a signal of `n` samples has
//! `1 + n / hop` frames. The FFT plan, window and buffers are created once and
//! reused for every frame of every window.

use std::sync::Arc;

use realfft::num_complex::Complex;
use realfft::{RealFftPlanner, RealToComplex};

/// FFT length (librosa `n_fft`).
pub const N_FFT: usize = 2048;
/// Hop between frames (librosa `hop_length`).
pub const HOP: usize = 512;
/// Number of frequency bins, `1 + n_fft / 2`.
pub const N_BINS: usize = N_FFT / 2 + 1;

/// Frames in a centred STFT of `n` samples.
pub fn n_frames(n: usize) -> usize {
    1 + n / HOP
}

/// A reusable real-input STFT with a periodic Hann window.
pub struct Stft {
    fft: Arc<dyn RealToComplex<f32>>,
    window: Vec<f32>,
    input: Vec<f32>,
    spectrum: Vec<Complex<f32>>,
    scratch: Vec<Complex<f32>>,
}

impl Default for Stft {
    fn default() -> Self {
        Self::new()
    }
}

impl Stft {
    /// Plans the FFT and computes the window.
    pub fn new() -> Self {
        let fft = RealFftPlanner::<f32>::new().plan_fft_forward(N_FFT);
        // scipy.signal.get_window("hann", N, fftbins=True): periodic Hann.
        let window = (0..N_FFT)
            .map(|n| {
                (0.5 - 0.5 * (2.0 * std::f64::consts::PI * n as f64 / N_FFT as f64).cos()) as f32
            })
            .collect();
        let input = fft.make_input_vec();
        let spectrum = fft.make_output_vec();
        let scratch = fft.make_scratch_vec();
        Stft {
            fft,
            window,
            input,
            spectrum,
            scratch,
        }
    }

    /// Computes frame `t` of the centred STFT of `y` and writes the power
    /// `|X|^2` and magnitude `|X|` of its `N_BINS` bins.
    pub fn frame(&mut self, y: &[f32], t: usize, power: &mut [f32], magnitude: &mut [f32]) {
        let n = y.len() as isize;
        let start = (t * HOP) as isize - (N_FFT / 2) as isize;
        let lo = start.max(0);
        let hi = (start + N_FFT as isize).min(n);
        self.input.fill(0.0);
        if hi > lo {
            let off = (lo - start) as usize;
            let src = &y[lo as usize..hi as usize];
            let dst = &mut self.input[off..off + src.len()];
            let win = &self.window[off..off + src.len()];
            for ((d, s), w) in dst.iter_mut().zip(src).zip(win) {
                *d = s * w;
            }
        }
        // Lengths match the plan by construction; on the impossible error the
        // spectrum stays as it was rather than panicking.
        let _ =
            self.fft
                .process_with_scratch(&mut self.input, &mut self.spectrum, &mut self.scratch);
        for ((c, p), m) in self
            .spectrum
            .iter()
            .zip(power.iter_mut())
            .zip(magnitude.iter_mut())
        {
            let pw = c.re * c.re + c.im * c.im;
            let mg = pw.sqrt();
            *m = mg;
            *p = mg * mg;
        }
    }
}
