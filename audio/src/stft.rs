//! The short-time Fourier transform every spectral feature is derived from.
//!
//! librosa's defaults: `n_fft = 2048`, `hop = 512`, periodic Hann window,
//! frames centred on `t * hop` with the signal padded by `n_fft / 2` zeros on
//! both sides (`pad_mode="constant"`), so a signal of `n` samples has
//! `1 + n / hop` frames. The FFT plan, window and buffers are created once and
//! reused for every frame of every window.

use std::sync::{Arc, OnceLock};

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

/// A shared forward FFT plan.
type Plan = Arc<dyn RealToComplex<f32>>;

/// A reusable real-input STFT with a periodic Hann window.
pub struct Stft {
    fft: Arc<dyn RealToComplex<f32>>,
    window: Arc<[f32]>,
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
    /// Buffers for a new STFT; the FFT plan and the window are computed once
    /// per process and shared.
    pub fn new() -> Self {
        static PLAN: OnceLock<(Plan, Arc<[f32]>)> = OnceLock::new();
        let (fft, window) = PLAN
            .get_or_init(|| {
                let fft = RealFftPlanner::<f32>::new().plan_fft_forward(N_FFT);
                // scipy.signal.get_window("hann", N, fftbins=True): periodic Hann.
                let window = (0..N_FFT)
                    .map(|n| {
                        let x = 2.0 * std::f64::consts::PI * n as f64 / N_FFT as f64;
                        (0.5 - 0.5 * x.cos()) as f32
                    })
                    .collect();
                (fft, window)
            })
            .clone();
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
    /// `|X|^2` and magnitude `|X|` of its `N_BINS` bins. Returns the largest
    /// power of the frame (piptrack's reference).
    #[inline(always)]
    pub fn frame(&mut self, y: &[f32], t: usize, power: &mut [f32], magnitude: &mut [f32]) -> f32 {
        let n = y.len() as isize;
        let start = (t * HOP) as isize - (N_FFT / 2) as isize;
        let lo = start.max(0);
        let hi = (start + N_FFT as isize).min(n);
        let off = (lo - start).max(0) as usize;
        let len = (hi - lo).max(0) as usize;
        self.input[..off].fill(0.0);
        self.input[off + len..].fill(0.0);
        if len > 0 {
            let src = &y[lo as usize..hi as usize];
            let dst = &mut self.input[off..off + len];
            let win = &self.window[off..off + len];
            for ((d, s), w) in dst.iter_mut().zip(src).zip(win) {
                *d = s * w;
            }
        }
        // Lengths match the plan by construction; on the impossible error the
        // spectrum stays as it was rather than panicking.
        let _ =
            self.fft
                .process_with_scratch(&mut self.input, &mut self.spectrum, &mut self.scratch);
        let power = &mut power[..N_BINS];
        let magnitude = &mut magnitude[..N_BINS];
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
        max_lanes(power)
    }
}

/// Maximum of non-negative values with eight independent lanes, so the
/// compiler vectorises it (a plain fold is one long dependency chain).
#[inline(always)]
pub fn max_lanes(v: &[f32]) -> f32 {
    let mut lanes = [0f32; 8];
    let chunks = v.chunks_exact(8);
    let rest = chunks.remainder();
    for c in chunks {
        for i in 0..8 {
            lanes[i] = if c[i] > lanes[i] { c[i] } else { lanes[i] };
        }
    }
    let mut m = 0f32;
    for &x in lanes.iter().chain(rest) {
        m = if x > m { x } else { m };
    }
    m
}
