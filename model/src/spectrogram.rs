//! The spectrogram CNN's input: log-mel patches of the standard 5 s windows.
//!
//! A patch is the audio crate's band power ([`FeatureExtractor::band_power`]: 128 Slaney
//! mel bands of a 2048-point STFT every 512 samples at 22 050 Hz, pooled 4 by 4 in
//! power into 32 bands) over the 216 frames of a 5 s window, in dB relative to the
//! patch's loudest value, floored 80 dB below it and scaled by `(dB + 40) / 40` to
//! about [-1, 1]: the PyTorch probe's input (`experiments/cnn_probe.py`). Referencing
//! each patch to its own maximum makes the network deaf to recording gain, which varies
//! between recordists far more than between species.
//!
//! A window's vector is its patch, band-major (`MEL_BANDS` rows of `PATCH_FRAMES`),
//! followed by one value: the window's level (square root of its mean band power), the
//! one number that keeps the absolute loudness, so that quiet windows between calls can
//! be told apart as the acoustic features' `rms_mean` does ([`FeatureSet::level_column`]).
//! Every parameter is recorded in the artifact ([`MelInput`]) and versioned
//! ([`MEL_FEATURE_VERSION`]), so a worker can rebuild the same input or refuse the model.
//!
//! Training does not cut windows: it keeps each recording's band power once
//! ([`Spectrogram`], 32 floats per 23 ms frame: about 5.6 MB per hour of audio) and
//! draws crops from it, so no decoded audio is held.

use std::path::Path;

use birdsong_audio::bands::{MELS_PER_BAND, N_BANDS};
use birdsong_audio::stft::{HOP, N_FFT, n_frames};
use birdsong_audio::{ANALYSIS_SAMPLE_RATE, AudioError, FeatureExtractor, N_MELS, WindowConfig};
use birdsong_audio::{WindowStream, mel::TOP_DB};
use serde::{Deserialize, Serialize};

use crate::features::FeatureVector;
use crate::{ModelError, Result};

/// Version of the mel-patch vectors: bumped when any [`MelInput`] value changes.
pub const MEL_FEATURE_VERSION: &str = "bs-mel-1";
/// Bands of a patch (the band profile's pooled bands).
pub const MEL_BANDS: usize = N_BANDS;
/// Length of the window a patch covers, seconds: the standard window.
pub const PATCH_SECONDS: f64 = 5.0;
/// Frames of a patch: those of a centred STFT of 5 s at 22 050 Hz.
pub const PATCH_FRAMES: usize = 1 + (PATCH_SECONDS as usize * ANALYSIS_SAMPLE_RATE as usize) / HOP;
/// Values of a patch.
pub const PATCH_LEN: usize = MEL_BANDS * PATCH_FRAMES;
/// Values of a window's vector: the patch, then its level.
pub const MEL_VECTOR: usize = PATCH_LEN + 1;
/// Power floor before taking decibels (librosa's `amin`).
const AMIN: f32 = 1e-10;
/// Chunks a recording is decoded in for its spectrogram: long enough that the frames
/// lost at the joins (less than one per chunk) do not matter, short enough that a
/// chunk of decoded audio (2.6 MB) is all that is held.
const CHUNK_S: f64 = 30.0;

/// Everything needed to rebuild a mel-patch model's input, stored in its artifact.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MelInput {
    /// [`MEL_FEATURE_VERSION`].
    pub feature_version: String,
    /// Sample rate the audio is resampled to, Hz.
    pub sample_rate: u32,
    /// STFT length (periodic Hann window, centred frames, zero padding).
    pub n_fft: usize,
    /// STFT hop, samples.
    pub hop: usize,
    /// Slaney mel bands of the filter bank (librosa's `htk=False, norm="slaney"`).
    pub mels: usize,
    /// Adjacent mel bands averaged (in power) into one band.
    pub mels_per_band: usize,
    /// Bands of a patch (rows).
    pub bands: usize,
    /// Frames of a patch (columns); shorter windows are padded with zero power.
    pub frames: usize,
    /// Window length, seconds.
    pub window_s: f64,
    /// Dynamic range kept below the patch's maximum, dB.
    pub top_db: f32,
    /// Patch values are `(dB relative to the patch maximum + offset) / scale`.
    pub db_offset: f32,
    /// See `db_offset`.
    pub db_scale: f32,
}

impl MelInput {
    /// This build's input.
    pub fn current() -> Self {
        Self {
            feature_version: MEL_FEATURE_VERSION.to_string(),
            sample_rate: ANALYSIS_SAMPLE_RATE,
            n_fft: N_FFT,
            hop: HOP,
            mels: N_MELS,
            mels_per_band: MELS_PER_BAND,
            bands: MEL_BANDS,
            frames: PATCH_FRAMES,
            window_s: PATCH_SECONDS,
            top_db: TOP_DB,
            db_offset: DB_OFFSET,
            db_scale: DB_SCALE,
        }
    }

    /// The windows patches are cut from: the standard length with `hop_s` between them.
    pub fn windows(&self, hop_s: f64) -> WindowConfig {
        WindowConfig {
            length_s: self.window_s,
            hop_s,
            ..WindowConfig::default()
        }
    }
}

const DB_OFFSET: f32 = 40.0;
const DB_SCALE: f32 = 40.0;

/// One recording's band power, frame-major ([`MEL_BANDS`] values per frame).
#[derive(Debug, Clone, PartialEq)]
pub struct Spectrogram {
    power: Vec<f32>,
}

impl Spectrogram {
    /// A spectrogram from frame-major band power (a multiple of [`MEL_BANDS`] values).
    pub fn from_power(power: Vec<f32>) -> Result<Self> {
        if power.is_empty() || !power.len().is_multiple_of(MEL_BANDS) {
            return Err(ModelError::InvalidDataset(format!(
                "{} band-power values are not whole frames of {MEL_BANDS}",
                power.len()
            )));
        }
        Ok(Self { power })
    }

    /// The spectrogram of a file, decoded and resampled in chunks.
    pub fn of_file(path: &Path) -> Result<Self> {
        let stream = WindowStream::open(path, &chunks()).map_err(audio_error)?;
        Self::of_stream(stream)
    }

    /// The spectrogram of an encoded file in memory.
    pub fn of_bytes(bytes: Vec<u8>) -> Result<Self> {
        let stream = WindowStream::from_bytes(bytes, &chunks()).map_err(audio_error)?;
        Self::of_stream(stream)
    }

    fn of_stream(mut stream: WindowStream) -> Result<Self> {
        let mut power = Vec::new();
        while let Some(chunk) = stream
            .next_with(|ex, _, _, y| Ok(ex.band_power(y)))
            .map_err(audio_error)?
        {
            power.extend(chunk);
        }
        Self::from_power(power)
    }

    /// Frames held.
    pub fn frames(&self) -> usize {
        self.power.len() / MEL_BANDS
    }

    /// The band power of frames `start..start + count` (fewer at the end).
    pub fn frames_from(&self, start: usize, count: usize) -> &[f32] {
        let lo = (start * MEL_BANDS).min(self.power.len());
        let hi = ((start + count) * MEL_BANDS).min(self.power.len());
        &self.power[lo..hi]
    }

    /// Non-overlapping windows of [`PATCH_FRAMES`] frames it holds, the last one
    /// possibly short: how many windows a recording counts for.
    pub fn window_count(&self) -> usize {
        self.frames().div_ceil(PATCH_FRAMES)
    }

    /// The vectors of those windows ([`vector_into`]; a short last one padded with
    /// silence), as a mel-patch model reads them.
    pub fn window_vectors(&self) -> Vec<FeatureVector> {
        (0..self.window_count())
            .map(|i| {
                let mut v = Vec::with_capacity(MEL_VECTOR);
                vector_into(self.frames_from(i * PATCH_FRAMES, PATCH_FRAMES), &mut v);
                v
            })
            .collect()
    }

    /// First frames of every crop a patch could start at (at least one).
    pub fn crop_starts(&self) -> usize {
        self.frames().saturating_sub(PATCH_FRAMES) + 1
    }
}

/// The windows a recording is decoded in for its [`Spectrogram`].
fn chunks() -> WindowConfig {
    WindowConfig {
        length_s: CHUNK_S,
        hop_s: CHUNK_S,
        min_last_s: birdsong_audio::MIN_RECORDING_S,
    }
}

fn audio_error(e: AudioError) -> ModelError {
    ModelError::InvalidDataset(format!("audio: {e}"))
}

/// Mean power of frame-major band power (0 for none): a crop's loudness.
pub fn mean_power(power: &[f32]) -> f32 {
    if power.is_empty() {
        return 0.0;
    }
    (power.iter().map(|&p| f64::from(p)).sum::<f64>() / power.len() as f64) as f32
}

/// Appends the vector of one window to `out`: the patch of frame-major band power
/// (up to [`PATCH_FRAMES`] frames; missing frames are silence), then the level
/// `sqrt(mean power)` of the frames given.
pub fn vector_into(power: &[f32], out: &mut Vec<f32>) {
    let frames = (power.len() / MEL_BANDS).min(PATCH_FRAMES);
    let power = &power[..frames * MEL_BANDS];
    let db = |p: f32| 10.0 * p.max(AMIN).log10();
    let reference = power.iter().copied().fold(AMIN, f32::max);
    let reference = db(reference);
    let floor = (-TOP_DB + DB_OFFSET) / DB_SCALE;
    let start = out.len();
    out.resize(start + PATCH_LEN, floor);
    let patch = &mut out[start..];
    for (t, frame) in power.chunks_exact(MEL_BANDS).enumerate() {
        for (b, &p) in frame.iter().enumerate() {
            let relative = (db(p) - reference).max(-TOP_DB);
            patch[b * PATCH_FRAMES + t] = (relative + DB_OFFSET) / DB_SCALE;
        }
    }
    out.push(mean_power(power).sqrt());
}

/// Subtracts from every band of a patch (`MEL_BANDS` rows of `PATCH_FRAMES`) its
/// median over the frames: steady background in a band (insects, wind, a stream, a
/// recorder's hiss) becomes zero, and what stands out of it, a call, stays. The median
/// rather than the mean, so that a band full of calls is not pulled down by them.
pub fn centre_bands(patch: &mut [f32]) {
    let mut sorted = Vec::with_capacity(PATCH_FRAMES);
    for band in patch.chunks_exact_mut(PATCH_FRAMES) {
        sorted.clear();
        sorted.extend_from_slice(band);
        let middle = sorted.len() / 2;
        let (_, median, _) = sorted.select_nth_unstable_by(middle, f32::total_cmp);
        let median = *median;
        for v in band.iter_mut() {
            *v -= median;
        }
    }
}

/// The vector of one window of mono 22 050 Hz samples (see [`vector_into`]).
pub fn window_vector(extractor: &mut FeatureExtractor, samples: &[f32]) -> FeatureVector {
    let power = extractor.band_power(samples);
    let mut out = Vec::with_capacity(MEL_VECTOR);
    vector_into(&power, &mut out);
    out
}

/// The vectors of a file's windows (`config`: the standard 5 s windows, any hop), in
/// time order: what a mel-patch model classifies.
pub fn file_vectors(path: &Path, config: &WindowConfig) -> Result<Vec<FeatureVector>> {
    check_windows(config)?;
    let stream = WindowStream::open(path, config).map_err(audio_error)?;
    stream_vectors(stream)
}

/// [`file_vectors`] of an encoded file in memory.
pub fn bytes_vectors(bytes: Vec<u8>, config: &WindowConfig) -> Result<Vec<FeatureVector>> {
    check_windows(config)?;
    let stream = WindowStream::from_bytes(bytes, config).map_err(audio_error)?;
    stream_vectors(stream)
}

fn stream_vectors(stream: WindowStream) -> Result<Vec<FeatureVector>> {
    Ok(stream_windows(stream).map_err(audio_error)?.vectors)
}

/// A recording's mel-patch windows: where each is and its vector, in time order.
#[derive(Debug, Clone)]
pub struct MelWindows {
    /// Start and end of each window, seconds.
    pub spans: Vec<(f64, f64)>,
    pub vectors: Vec<FeatureVector>,
    /// What the file is, with the decoded duration.
    pub info: birdsong_audio::AudioInfo,
}

/// Every window of a stream of standard 5 s windows (any hop): what the worker and
/// `birdsong-model predict` classify with a mel-patch model.
pub fn stream_windows(mut stream: WindowStream) -> std::result::Result<MelWindows, AudioError> {
    let mut spans = Vec::new();
    let mut vectors = Vec::new();
    while let Some((start_s, end_s, v)) = next_window(&mut stream)? {
        spans.push((start_s, end_s));
        vectors.push(v);
    }
    Ok(MelWindows {
        spans,
        vectors,
        info: stream.final_info(),
    })
}

/// The next window of a stream of standard 5 s windows: its start and end in seconds
/// and its vector; `None` after the last. Errors are the recording's (decoding).
pub fn next_window(
    stream: &mut WindowStream,
) -> std::result::Result<Option<(f64, f64, FeatureVector)>, AudioError> {
    stream.next_with(|ex, start_s, end_s, y| Ok((start_s, end_s, window_vector(ex, y))))
}

/// Refuses windows of another length than a patch's.
fn check_windows(config: &WindowConfig) -> Result<()> {
    if (config.length_s - PATCH_SECONDS).abs() > 1e-9 {
        return Err(ModelError::InvalidConfig(format!(
            "mel patches cover {PATCH_SECONDS} s windows, not {} s",
            config.length_s
        )));
    }
    Ok(())
}

/// Frames in `seconds` of audio at the analysis rate.
pub fn frames_in(seconds: f64) -> usize {
    n_frames((seconds * f64::from(ANALYSIS_SAMPLE_RATE)).round() as usize)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each band loses its median: a steady band becomes zero, a call above it stays.
    #[test]
    fn band_medians_are_subtracted() {
        let mut patch = vec![0.0f32; PATCH_LEN];
        for (b, band) in patch.chunks_exact_mut(PATCH_FRAMES).enumerate() {
            for (t, v) in band.iter_mut().enumerate() {
                // A steady level per band, and a call of 20 frames in band 3.
                *v = b as f32 * 0.01
                    + if b == 3 && (50..70).contains(&t) {
                        0.8
                    } else {
                        0.0
                    };
            }
        }
        centre_bands(&mut patch);
        for (b, band) in patch.chunks_exact(PATCH_FRAMES).enumerate() {
            for (t, v) in band.iter().enumerate() {
                let want = if b == 3 && (50..70).contains(&t) {
                    0.8
                } else {
                    0.0
                };
                assert!((v - want).abs() < 1e-6, "band {b} frame {t}: {v}");
            }
        }
    }

    /// A chirp over noise: every band has signal, levels differ from frame to frame.
    fn chirp(seconds: f64) -> Vec<f32> {
        let sr = f64::from(ANALYSIS_SAMPLE_RATE);
        let n = (seconds * sr) as usize;
        (0..n)
            .map(|i| {
                let t = i as f64 / sr;
                let f = 300.0 + 3000.0 * t;
                let noise = ((i * 7919) % 1013) as f64 / 1013.0 - 0.5;
                (0.5 * (std::f64::consts::TAU * f * t).sin() + 0.05 * noise) as f32
            })
            .collect()
    }

    #[test]
    fn a_five_second_window_fills_one_patch() {
        assert_eq!(PATCH_FRAMES, 216);
        assert_eq!(frames_in(5.0), PATCH_FRAMES);
        let mut ex = FeatureExtractor::new();
        let v = window_vector(&mut ex, &chirp(5.0));
        assert_eq!(v.len(), MEL_VECTOR);
        let patch = &v[..PATCH_LEN];
        let top = patch.iter().copied().fold(f32::MIN, f32::max);
        let bottom = patch.iter().copied().fold(f32::MAX, f32::min);
        assert!((top - 1.0).abs() < 1e-6, "the maximum is 0 dB: {top}");
        assert!(bottom >= -1.0 - 1e-6, "floored at -80 dB: {bottom}");
        assert!(v[PATCH_LEN] > 0.0);
    }

    /// The pooled bands are the mean power of four mel bands of the audio crate's
    /// mel spectrogram: band differences in dB agree wherever the mel values are
    /// above that spectrogram's floor.
    #[test]
    fn bands_pool_the_mel_spectrogram() {
        let y = chirp(2.0);
        let mel = birdsong_audio::mel_spectrogram_db(&y);
        let mut ex = FeatureExtractor::new();
        let power = ex.band_power(&y);
        let frames = mel.ncols();
        assert_eq!(power.len(), frames * MEL_BANDS);
        let pooled = |b: usize, t: usize| -> Option<f32> {
            let dbs: Vec<f32> = (0..MELS_PER_BAND)
                .map(|m| mel[[b * MELS_PER_BAND + m, t]])
                .collect();
            if dbs.iter().any(|&d| d < -60.0) {
                return None;
            }
            let mean = dbs.iter().map(|d| 10f32.powf(d / 10.0)).sum::<f32>() / 4.0;
            Some(10.0 * mean.log10())
        };
        let ours = |b: usize, t: usize| 10.0 * power[t * MEL_BANDS + b].max(AMIN).log10();
        let (b0, t0) = (0..MEL_BANDS)
            .flat_map(|b| (0..frames).map(move |t| (b, t)))
            .find(|&(b, t)| pooled(b, t).is_some())
            .expect("some band above the floor");
        let mut compared = 0;
        for b in 0..MEL_BANDS {
            for t in 0..frames {
                if let (Some(p), Some(p0)) = (pooled(b, t), pooled(b0, t0)) {
                    let expected = p - p0;
                    let got = ours(b, t) - ours(b0, t0);
                    assert!(
                        (got - expected).abs() < 0.01,
                        "{b} {t}: {got} vs {expected}"
                    );
                    compared += 1;
                }
            }
        }
        assert!(compared > 100, "{compared}");
    }

    /// A whole recording's spectrogram cut where a window starts gives that window's
    /// patch up to the reference level, except the two frames at each edge, which a
    /// window's own STFT pads with zeros.
    #[test]
    fn crops_of_a_recording_match_its_windows() {
        let y = chirp(12.0);
        let mut ex = FeatureExtractor::new();
        let whole = Spectrogram::from_power(ex.band_power(&y)).unwrap();
        let first = 200;
        let start = first * HOP;
        let window = window_vector(
            &mut ex,
            &y[start..start + 5 * ANALYSIS_SAMPLE_RATE as usize],
        );
        let mut crop = Vec::new();
        vector_into(whole.frames_from(first, PATCH_FRAMES), &mut crop);
        let (mut low, mut high) = (f32::MAX, f32::MIN);
        for b in 0..MEL_BANDS {
            for t in 2..PATCH_FRAMES - 2 {
                let i = b * PATCH_FRAMES + t;
                if crop[i] > -0.9 && window[i] > -0.9 {
                    low = low.min(crop[i] - window[i]);
                    high = high.max(crop[i] - window[i]);
                }
            }
        }
        assert!(high - low < 1e-4, "{low} {high}");
        let short = Spectrogram::from_power(vec![1.0; 10 * MEL_BANDS]).unwrap();
        assert_eq!(short.crop_starts(), 1);
        assert!(Spectrogram::from_power(vec![1.0; 5]).is_err());
    }

    #[test]
    fn the_input_is_recorded_and_windows_must_be_patches() {
        let input = MelInput::current();
        let json = serde_json::to_string(&input).unwrap();
        let back: MelInput = serde_json::from_str(&json).unwrap();
        assert_eq!(back, input);
        assert_eq!(input.bands * input.frames, PATCH_LEN);
        assert!(check_windows(&input.windows(1.25)).is_ok());
        assert!(
            check_windows(&WindowConfig {
                length_s: 3.0,
                ..WindowConfig::default()
            })
            .is_err()
        );
    }
}
