//! The feature vector of one stretch of audio (librosa's 95 values followed
//! by the 128-value band profile), and the reusable extractor that computes it.
//!
//! What does not depend on the signal (FFT plan, window, mel and DCT
//! matrices, the chroma banks) is built once per process and shared;
//! [`FeatureExtractor`] owns the buffers, so analysing a window allocates
//! nothing once they have grown to the window size. One STFT per window
//! feeds all spectral features; the time-domain ones (ZCR, RMS, the trim)
//! use per-block sums (a centred frame is four 512-sample blocks).

use std::sync::OnceLock;

use ndarray::{ArrayView2, ArrayViewMut2, linalg::general_mat_mul};

use crate::bands::{self, BAND_FEATURE_COUNT, BAND_FEATURE_NAMES, N_BANDS};
use crate::chroma::{self, N_CHROMA};
use crate::error::AudioError;
use crate::mel::{self, MelBank, N_MELS, TOP_DB};
use crate::mfcc::{self, N_MFCC};
use crate::spectral::{self, Shape};
use crate::stft::{self, HOP, N_BINS, Stft, n_frames};
use crate::trim;

/// Number of librosa features: the first values of every vector, the
/// definition of `features_reference.py` and the Python pipeline's input.
pub const LIBROSA_FEATURE_COUNT: usize = 95;
/// Number of features: the librosa features, then the band profile.
pub const FEATURE_COUNT: usize = LIBROSA_FEATURE_COUNT + BAND_FEATURE_COUNT;
/// The feature vector.
pub type FeatureVector = [f32; FEATURE_COUNT];

const fn mfcc_name(stat: usize, i: usize) -> &'static str {
    const MEAN: [&str; 20] = [
        "mfcc0_mean",
        "mfcc1_mean",
        "mfcc2_mean",
        "mfcc3_mean",
        "mfcc4_mean",
        "mfcc5_mean",
        "mfcc6_mean",
        "mfcc7_mean",
        "mfcc8_mean",
        "mfcc9_mean",
        "mfcc10_mean",
        "mfcc11_mean",
        "mfcc12_mean",
        "mfcc13_mean",
        "mfcc14_mean",
        "mfcc15_mean",
        "mfcc16_mean",
        "mfcc17_mean",
        "mfcc18_mean",
        "mfcc19_mean",
    ];
    const STD: [&str; 20] = [
        "mfcc0_std",
        "mfcc1_std",
        "mfcc2_std",
        "mfcc3_std",
        "mfcc4_std",
        "mfcc5_std",
        "mfcc6_std",
        "mfcc7_std",
        "mfcc8_std",
        "mfcc9_std",
        "mfcc10_std",
        "mfcc11_std",
        "mfcc12_std",
        "mfcc13_std",
        "mfcc14_std",
        "mfcc15_std",
        "mfcc16_std",
        "mfcc17_std",
        "mfcc18_std",
        "mfcc19_std",
    ];
    const MAX: [&str; 20] = [
        "mfcc0_max",
        "mfcc1_max",
        "mfcc2_max",
        "mfcc3_max",
        "mfcc4_max",
        "mfcc5_max",
        "mfcc6_max",
        "mfcc7_max",
        "mfcc8_max",
        "mfcc9_max",
        "mfcc10_max",
        "mfcc11_max",
        "mfcc12_max",
        "mfcc13_max",
        "mfcc14_max",
        "mfcc15_max",
        "mfcc16_max",
        "mfcc17_max",
        "mfcc18_max",
        "mfcc19_max",
    ];
    const MIN: [&str; 20] = [
        "mfcc0_min",
        "mfcc1_min",
        "mfcc2_min",
        "mfcc3_min",
        "mfcc4_min",
        "mfcc5_min",
        "mfcc6_min",
        "mfcc7_min",
        "mfcc8_min",
        "mfcc9_min",
        "mfcc10_min",
        "mfcc11_min",
        "mfcc12_min",
        "mfcc13_min",
        "mfcc14_min",
        "mfcc15_min",
        "mfcc16_min",
        "mfcc17_min",
        "mfcc18_min",
        "mfcc19_min",
    ];
    match stat {
        0 => MEAN[i],
        1 => STD[i],
        2 => MAX[i],
        _ => MIN[i],
    }
}

const fn build_names() -> [&'static str; FEATURE_COUNT] {
    let mut names = [""; FEATURE_COUNT];
    let mut b = 0;
    while b < BAND_FEATURE_COUNT {
        names[LIBROSA_FEATURE_COUNT + b] = BAND_FEATURE_NAMES[b];
        b += 1;
    }
    let mut s = 0;
    while s < 4 {
        let mut i = 0;
        while i < N_MFCC {
            names[s * N_MFCC + i] = mfcc_name(s, i);
            i += 1;
        }
        s += 1;
    }
    let rest = [
        "centroid_mean",
        "centroid_std",
        "centroid_max",
        "rolloff_mean",
        "rolloff_std",
        "zcr_mean",
        "zcr_std",
        "chroma_mean",
        "chroma_std",
        "melspec_db_mean",
        "melspec_db_std",
        "melspec_db_max",
        "bandwidth_mean",
        "bandwidth_std",
        "rms_mean",
    ];
    let mut j = 0;
    while j < rest.len() {
        names[4 * N_MFCC + j] = rest[j];
        j += 1;
    }
    names
}

/// Feature names, in vector order (the first [`LIBROSA_FEATURE_COUNT`] are
/// those of `librosa_features.json`).
pub const FEATURE_NAMES: [&str; FEATURE_COUNT] = build_names();

/// Mean, population standard deviation, maximum and minimum of a series,
/// accumulated in float64.
#[derive(Clone, Copy, Debug)]
pub struct Stats {
    n: u64,
    sum: f64,
    sumsq: f64,
    max: f64,
    min: f64,
}

impl Default for Stats {
    fn default() -> Self {
        Stats {
            n: 0,
            sum: 0.0,
            sumsq: 0.0,
            max: f64::NEG_INFINITY,
            min: f64::INFINITY,
        }
    }
}

impl Stats {
    /// Adds one value.
    #[inline]
    pub fn push(&mut self, x: f64) {
        self.n += 1;
        self.sum += x;
        self.sumsq += x * x;
        self.max = self.max.max(x);
        self.min = self.min.min(x);
    }
    /// Adds `n` values given by their sum, sum of squares and maximum (the
    /// minimum is not tracked by this path).
    pub fn merge(&mut self, n: u64, sum: f64, sumsq: f64, max: f64) {
        if n == 0 {
            return;
        }
        self.n += n;
        self.sum += sum;
        self.sumsq += sumsq;
        self.max = self.max.max(max);
    }
    /// Arithmetic mean (0 for no values).
    pub fn mean(&self) -> f64 {
        if self.n == 0 {
            0.0
        } else {
            self.sum / self.n as f64
        }
    }
    /// Population standard deviation (numpy `ddof=0`).
    pub fn std(&self) -> f64 {
        if self.n == 0 {
            return 0.0;
        }
        let m = self.mean();
        (self.sumsq / self.n as f64 - m * m).max(0.0).sqrt()
    }
    /// Maximum (0 for no values).
    pub fn max(&self) -> f64 {
        if self.n == 0 { 0.0 } else { self.max }
    }
    /// Minimum (0 for no values).
    pub fn min(&self) -> f64 {
        if self.n == 0 { 0.0 } else { self.min }
    }
}

/// Everything that depends only on the analysis rate, built once per
/// process and shared by all extractors (a worker analyses many short files).
struct Tables {
    freqs: Vec<f64>,
    mel: MelBank,
    dct: Vec<f32>,
    pip_range: (usize, usize),
    /// One chroma filter bank per tuning histogram bin, built on first use.
    chroma: [OnceLock<Box<[f32]>>; chroma::TUNING_BINS + 1],
}

fn tables() -> &'static Tables {
    static TABLES: OnceLock<Tables> = OnceLock::new();
    TABLES.get_or_init(|| {
        let sr = f64::from(crate::ANALYSIS_SAMPLE_RATE);
        Tables {
            freqs: mel::fft_frequencies(sr),
            mel: MelBank::new(sr),
            dct: mfcc::dct_matrix(),
            pip_range: chroma::piptrack_range(sr),
            chroma: [const { OnceLock::new() }; chroma::TUNING_BINS + 1],
        }
    })
}

/// Computes feature vectors and mel spectrograms at the analysis rate,
/// reusing plans, filter banks and buffers across calls. It is scratch
/// space (every method takes `&mut self`): keep one per thread. It is
/// `Send`, and cheap to create (the shared tables are built once).
pub struct FeatureExtractor {
    sr: f64,
    stft: Stft,
    tables: &'static Tables,
    // Buffers.
    blocks: Vec<f64>,
    power: Vec<f32>,
    mag: Vec<f32>,
    mel_db: Vec<f32>,
    bands: Vec<f32>,
    band_column: Vec<f32>,
    mfcc: Vec<f32>,
    raw_chroma: Vec<f32>,
    shapes: Vec<Shape>,
    peaks: Vec<(f32, f32)>,
    scratch_f32: Vec<f32>,
    zc_counts: Vec<u32>,
    zcr: Vec<f64>,
}

impl Default for FeatureExtractor {
    fn default() -> Self {
        Self::new()
    }
}

impl FeatureExtractor {
    /// An extractor for audio at [`crate::ANALYSIS_SAMPLE_RATE`].
    pub fn new() -> Self {
        let sr = f64::from(crate::ANALYSIS_SAMPLE_RATE);
        FeatureExtractor {
            sr,
            stft: Stft::new(),
            tables: tables(),
            blocks: Vec::new(),
            power: Vec::new(),
            mag: vec![0.0; N_BINS],
            mel_db: Vec::new(),
            bands: Vec::new(),
            band_column: Vec::new(),
            mfcc: Vec::new(),
            raw_chroma: Vec::new(),
            shapes: Vec::new(),
            peaks: Vec::new(),
            scratch_f32: Vec::new(),
            zc_counts: Vec::new(),
            zcr: Vec::new(),
        }
    }

    /// The per-frame pass: STFT, spectral shape, piptrack peaks, pooled
    /// profile bands, mel bands in dB. Returns the largest mel power. On x86-64 CPUs with AVX2 the same
    /// code is compiled for AVX2 and chosen at run time (the crate is built
    /// for the x86-64 baseline); results are bit-identical, since no
    /// floating-point operation changes, only the vector width.
    fn frame_loop(&mut self, y: &[f32], frames: usize) -> f32 {
        #[cfg(target_arch = "x86_64")]
        if std::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU supports AVX2, checked just above.
            return unsafe { self.frame_loop_avx2(y, frames) };
        }
        self.frame_loop_body(y, frames)
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    fn frame_loop_avx2(&mut self, y: &[f32], frames: usize) -> f32 {
        self.frame_loop_body(y, frames)
    }

    #[inline(always)]
    fn frame_loop_body(&mut self, y: &[f32], frames: usize) -> f32 {
        let tables = self.tables;
        let mut mel_max = f32::NEG_INFINITY;
        for t in 0..frames {
            let p = &mut self.power[t * N_BINS..(t + 1) * N_BINS];
            let pmax = self.stft.frame(y, t, p, &mut self.mag);
            self.shapes.push(spectral::shape(&self.mag, &tables.freqs));
            chroma::piptrack_frame(p, pmax, tables.pip_range, self.sr, &mut self.peaks);
            let m = &mut self.mel_db[t * N_MELS..(t + 1) * N_MELS];
            tables.mel.apply(p, m);
            bands::pool_frame(m, &mut self.bands[t * N_BANDS..(t + 1) * N_BANDS]);
            mel_max = mel_max.max(stft::max_lanes(m));
            mel::power_to_db_slice(m);
        }
        mel_max
    }

    /// The features of `y` (mono, 22 050 Hz), after trimming silence: the
    /// definition of `features_reference.py`, then the band profile.
    pub fn features(&mut self, y: &[f32]) -> Result<FeatureVector, AudioError> {
        spectral::block_squares(y, &mut self.blocks);
        let (start, end) = trim::trim_bounds(&self.blocks, y.len());
        if end <= start {
            return Err(AudioError::EmptyAfterTrim);
        }
        let y = &y[start..end];
        let frames = n_frames(y.len());
        let tables = self.tables;

        // One STFT: power spectrogram kept (chroma needs the tuning first),
        // mel bands, spectral shape and piptrack peaks per frame.
        self.power.resize(frames * N_BINS, 0.0);
        self.mel_db.resize(frames * N_MELS, 0.0);
        self.bands.resize(frames * N_BANDS, 0.0);
        self.shapes.clear();
        self.peaks.clear();
        let mel_max = self.frame_loop(y, frames);

        let mut out = [0f32; FEATURE_COUNT];

        // MFCC: dB with ref 1.0 and top_db 80, DCT-II, statistics per coefficient.
        // The same conversion as the values, so the maximum maps to exactly 0 dB.
        let mut db_max = [mel_max];
        mel::power_to_db_slice(&mut db_max);
        let db_max = db_max[0];
        let floor = db_max - TOP_DB;
        // melspec_db: ref = max, top_db 80 (float32 subtraction as librosa).
        // Eight lanes: a single running sum over ~28 000 values would be one
        // long chain of dependent additions.
        let (mut sum, mut sumsq, mut max) = ([0f64; 8], [0f64; 8], [f64::NEG_INFINITY; 8]);
        let mut chunks = self.mel_db.chunks_exact_mut(8);
        for c in &mut chunks {
            for i in 0..8 {
                c[i] = c[i].max(floor);
                let d = f64::from(c[i] - db_max);
                sum[i] += d;
                sumsq[i] += d * d;
                max[i] = if d > max[i] { d } else { max[i] };
            }
        }
        let mut mel_stats = Stats::default();
        for v in chunks.into_remainder() {
            *v = v.max(floor);
            mel_stats.push(f64::from(*v - db_max));
        }
        let n_lanes = (self.mel_db.len() / 8 * 8) as u64;
        mel_stats.merge(
            n_lanes,
            sum.iter().sum(),
            sumsq.iter().sum(),
            max.iter().copied().fold(f64::NEG_INFINITY, f64::max),
        );
        self.mfcc.resize(frames * N_MFCC, 0.0);
        let db = ArrayView2::from_shape((frames, N_MELS), &self.mel_db[..]).map_err(shape_err)?;
        let dct = ArrayView2::from_shape((N_MFCC, N_MELS), &tables.dct[..]).map_err(shape_err)?;
        let mut mfcc =
            ArrayViewMut2::from_shape((frames, N_MFCC), &mut self.mfcc[..]).map_err(shape_err)?;
        general_mat_mul(1.0, &db, &dct.t(), 0.0, &mut mfcc);
        let mut mstats = [Stats::default(); N_MFCC];
        for row in self.mfcc.chunks_exact(N_MFCC) {
            for (s, &v) in mstats.iter_mut().zip(row) {
                s.push(f64::from(v));
            }
        }
        for (i, s) in mstats.iter().enumerate() {
            out[i] = s.mean() as f32;
            out[N_MFCC + i] = s.std() as f32;
            out[2 * N_MFCC + i] = s.max() as f32;
            out[3 * N_MFCC + i] = s.min() as f32;
        }

        // Spectral shape.
        let (mut cent, mut roll, mut bw) = (Stats::default(), Stats::default(), Stats::default());
        for s in &self.shapes {
            cent.push(s.centroid);
            roll.push(s.rolloff);
            bw.push(s.bandwidth);
        }

        // Zero-crossing rate and RMS of the trimmed signal.
        spectral::zero_crossing_rate(y, &mut self.zc_counts, &mut self.zcr);
        let mut zcr = Stats::default();
        for &z in &self.zcr {
            zcr.push(z);
        }
        // The trimmed signal's blocks: it starts on a block boundary and ends
        // on one or at the end of `y`.
        let blocks = &self.blocks[start / HOP..end.div_ceil(HOP)];
        let mut rms = Stats::default();
        for t in 0..frames {
            rms.push(f64::from(
                (spectral::frame_mean_square(blocks, t) as f32).sqrt(),
            ));
        }

        // Chroma with the estimated tuning.
        let idx = chroma::estimate_tuning_index(&mut self.peaks, &mut self.scratch_f32);
        let sr = self.sr;
        let bank = tables.chroma[idx.min(chroma::TUNING_BINS)]
            .get_or_init(|| chroma::chroma_bank(sr, chroma::tuning_of_index(idx)).into());
        self.raw_chroma.resize(frames * N_CHROMA, 0.0);
        let power = ArrayView2::from_shape((frames, N_BINS), &self.power[..]).map_err(shape_err)?;
        let bank = ArrayView2::from_shape((N_CHROMA, N_BINS), &bank[..]).map_err(shape_err)?;
        let mut raw = ArrayViewMut2::from_shape((frames, N_CHROMA), &mut self.raw_chroma[..])
            .map_err(shape_err)?;
        general_mat_mul(1.0, &power, &bank.t(), 0.0, &mut raw);
        let mut chroma_stats = Stats::default();
        for col in self.raw_chroma.chunks_exact(N_CHROMA) {
            let norm = col.iter().fold(0f32, |m, v| m.max(v.abs()));
            let norm = if norm < f32::MIN_POSITIVE { 1.0 } else { norm };
            for &v in col {
                chroma_stats.push(f64::from(v / norm));
            }
        }

        let tail = [
            cent.mean(),
            cent.std(),
            cent.max(),
            roll.mean(),
            roll.std(),
            zcr.mean(),
            zcr.std(),
            chroma_stats.mean(),
            chroma_stats.std(),
            mel_stats.mean(),
            mel_stats.std(),
            mel_stats.max(),
            bw.mean(),
            bw.std(),
            rms.mean(),
        ];
        for (o, v) in out[4 * N_MFCC..LIBROSA_FEATURE_COUNT].iter_mut().zip(tail) {
            *o = v as f32;
        }
        bands::profile(
            &mut self.bands,
            frames,
            &mut self.band_column,
            &mut out[LIBROSA_FEATURE_COUNT..],
        );
        if out.iter().any(|v| !v.is_finite()) {
            return Err(AudioError::Corrupt(
                "sample values out of range (features are not finite)".to_owned(),
            ));
        }
        Ok(out)
    }

    /// The band profile's pooled mel power of every frame of `y`, frame-major:
    /// [`N_BANDS`] values per frame (each the mean power of
    /// [`bands::MELS_PER_BAND`] adjacent mel bands, low bands first), over
    /// `1 + len / 512` centred frames, untrimmed and unreferenced. The input of
    /// the model crate's spectrogram CNN: it keeps the absolute level (a whole
    /// recording's frames can be cut into windows, mixed and referenced later)
    /// at a quarter of the 128 bands' memory.
    pub fn band_power(&mut self, y: &[f32]) -> Vec<f32> {
        let frames = n_frames(y.len());
        let mut out = vec![0f32; frames * N_BANDS];
        self.power.resize(N_BINS, 0.0);
        let mut column = [0f32; N_MELS];
        for (t, bands_out) in out.chunks_exact_mut(N_BANDS).enumerate() {
            self.stft
                .frame(y, t, &mut self.power[..N_BINS], &mut self.mag);
            self.tables.mel.apply(&self.power[..N_BINS], &mut column);
            bands::pool_frame(&column, bands_out);
        }
        out
    }

    /// The 128-band mel spectrogram of `y` in dB relative to its maximum,
    /// floored 80 dB below it (librosa `power_to_db(melspectrogram(y),
    /// ref=np.max)`), untrimmed so that equal-length windows give equal
    /// shapes: `N_MELS` rows × `1 + len / 512` frames.
    pub fn mel_spectrogram_db(&mut self, y: &[f32]) -> ndarray::Array2<f32> {
        let frames = n_frames(y.len());
        let mut out = ndarray::Array2::<f32>::zeros((N_MELS, frames));
        self.power.resize(N_BINS, 0.0);
        let mut column = [0f32; N_MELS];
        let mut max = 0f32;
        for t in 0..frames {
            self.stft
                .frame(y, t, &mut self.power[..N_BINS], &mut self.mag);
            self.tables.mel.apply(&self.power[..N_BINS], &mut column);
            max = max.max(stft::max_lanes(&column));
            mel::power_to_db_slice(&mut column);
            for (m, &v) in column.iter().enumerate() {
                out[[m, t]] = v;
            }
        }
        let mut db_max = [max];
        mel::power_to_db_slice(&mut db_max);
        let db_max = db_max[0];
        out.mapv_inplace(|v| (v - db_max).max(-TOP_DB));
        out
    }
}

fn shape_err(e: ndarray::ShapeError) -> AudioError {
    AudioError::Corrupt(format!("internal shape error: {e}"))
}
