//! The streaming path from bytes to windows: decode → downmix → resample →
//! cut → features, one packet at a time.
//!
//! [`WindowStream`] holds at most one window of resampled samples plus one
//! decoded packet, whatever the length of the recording, so a two-hour file
//! costs the same memory as a ten-second one. The collecting functions
//! ([`analyze_file`] and friends) are thin loops over it.

use std::io::{Read, Seek};
use std::path::Path;

use serde::Serialize;
use symphonia::core::io::MediaSource;

use crate::CLIP_SECONDS;
use crate::decode::{AudioInfo, Decoder, source_from_reader};
use crate::error::AudioError;
use crate::features::{FeatureExtractor, FeatureVector};
use crate::resample::MonoResampler;
use crate::window::{WindowConfig, WindowPlan};

/// One analysis window: where it is and its features.
#[derive(Clone, Debug, Serialize)]
pub struct Window {
    /// Start, in seconds from the beginning of the recording.
    pub start_s: f64,
    /// End, in seconds (exclusive).
    pub end_s: f64,
    /// The feature vector (see [`crate::FEATURE_NAMES`]).
    #[serde(serialize_with = "serialize_features")]
    pub features: FeatureVector,
}

fn serialize_features<S: serde::Serializer>(v: &FeatureVector, s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(v.iter())
}

/// A whole recording analysed.
#[derive(Clone, Debug, Serialize)]
pub struct Analysis {
    /// What the file is; `duration_s` is the decoded duration.
    pub info: AudioInfo,
    /// The windows, in time order.
    pub windows: Vec<Window>,
}

fn open_path(path: &Path) -> Result<Box<dyn MediaSource>, AudioError> {
    Ok(Box::new(std::fs::File::open(path)?))
}

/// Streams the windows of a recording with bounded memory.
///
/// As an [`Iterator`] it yields `Result<Window, AudioError>`; after the first
/// error it yields nothing more. [`WindowStream::next_with`] gives access to
/// each window's raw samples instead (e.g. for a mel spectrogram).
pub struct WindowStream {
    decoder: Decoder,
    resampler: MonoResampler,
    plan: WindowPlan,
    extractor: FeatureExtractor,
    native: Vec<f32>,
    /// Resampled samples; `buf[0]` is absolute sample `buf_start`.
    buf: Vec<f32>,
    buf_start: usize,
    total: usize,
    next_start: usize,
    last_end: Option<usize>,
    /// Absolute sample up to which `buf` may be discarded.
    consumed: usize,
    eof: bool,
    done: bool,
    /// Stop decoding after this many native frames (clip mode).
    frame_limit: Option<u64>,
}

impl std::fmt::Debug for WindowStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WindowStream")
            .field("info", self.decoder.info())
            .field("plan", &self.plan)
            .field("next_start", &self.next_start)
            .finish_non_exhaustive()
    }
}

impl WindowStream {
    /// Opens a file (the format is detected from its content).
    pub fn open(path: &Path, cfg: &WindowConfig) -> Result<Self, AudioError> {
        Self::from_source(open_path(path)?, cfg)
    }

    /// Streams from any seekable reader.
    pub fn from_reader<R>(reader: R, cfg: &WindowConfig) -> Result<Self, AudioError>
    where
        R: Read + Seek + Send + Sync + 'static,
    {
        Self::from_source(source_from_reader(reader)?, cfg)
    }

    /// Streams from bytes in memory.
    pub fn from_bytes(bytes: Vec<u8>, cfg: &WindowConfig) -> Result<Self, AudioError> {
        Self::from_source(Box::new(std::io::Cursor::new(bytes)), cfg)
    }

    fn from_source(source: Box<dyn MediaSource>, cfg: &WindowConfig) -> Result<Self, AudioError> {
        Self::from_source_limited(source, cfg.plan()?, None)
    }

    /// Streams from any seekable reader, resampled to `rate` instead of the analysis
    /// rate: for a model with its own input rate (BirdNET takes 48 kHz). The windows'
    /// samples are at `rate`; the feature extractor handed to
    /// [`next_with`](Self::next_with) must not be used on them.
    pub fn from_reader_at<R>(reader: R, cfg: &WindowConfig, rate: u32) -> Result<Self, AudioError>
    where
        R: Read + Seek + Send + Sync + 'static,
    {
        Self::from_source_limited(source_from_reader(reader)?, cfg.plan_at(rate)?, None)
    }

    /// Opens a file resampled to `rate`; see [`from_reader_at`](Self::from_reader_at).
    pub fn open_at(path: &Path, cfg: &WindowConfig, rate: u32) -> Result<Self, AudioError> {
        Self::from_source_limited(open_path(path)?, cfg.plan_at(rate)?, None)
    }

    /// Streams bytes resampled to `rate`; see [`from_reader_at`](Self::from_reader_at).
    pub fn from_bytes_at(
        bytes: Vec<u8>,
        cfg: &WindowConfig,
        rate: u32,
    ) -> Result<Self, AudioError> {
        Self::from_source_limited(
            Box::new(std::io::Cursor::new(bytes)),
            cfg.plan_at(rate)?,
            None,
        )
    }

    /// The rate of the samples windows hold.
    pub fn sample_rate(&self) -> u32 {
        self.plan.rate
    }

    /// `clip_seconds`: stop after that many seconds of native audio.
    fn from_source_limited(
        source: Box<dyn MediaSource>,
        plan: WindowPlan,
        clip_seconds: Option<f64>,
    ) -> Result<Self, AudioError> {
        let mut decoder = Decoder::open(source)?;
        let mut native = Vec::new();
        // The first packet settles sample rate and channels when the header
        // does not state them (and proves the stream decodes at all).
        let more = decoder.next_into(&mut native)?;
        let rate = decoder.info().sample_rate;
        if rate == 0 {
            if !more {
                return Err(AudioError::TooShort {
                    duration_s: 0.0,
                    min_s: crate::window::MIN_RECORDING_S,
                });
            }
            return Err(AudioError::InvalidSampleRate(0));
        }
        let resampler = MonoResampler::new(rate, plan.rate)?;
        // librosa's `duration`: exactly int(seconds * native rate) frames.
        let frame_limit = clip_seconds.map(|c| (c * f64::from(rate)) as u64);
        let mut more = more;
        if let Some(limit) = frame_limit
            && decoder.frames_decoded() >= limit
        {
            let excess = (decoder.frames_decoded() - limit) as usize;
            native.truncate(native.len().saturating_sub(excess));
            more = false;
        }
        let mut s = WindowStream {
            decoder,
            resampler,
            plan,
            extractor: FeatureExtractor::new(),
            native: Vec::new(),
            buf: Vec::with_capacity(plan.length + 8192),
            buf_start: 0,
            total: 0,
            next_start: 0,
            last_end: None,
            consumed: 0,
            eof: false,
            done: false,
            frame_limit,
        };
        s.feed(&native, !more)?;
        Ok(s)
    }

    /// Format, codec, native rate and channels. `duration_s` is the header's
    /// until the stream is exhausted, then the decoded duration.
    pub fn info(&self) -> &AudioInfo {
        self.decoder.info()
    }

    /// Decoded duration so far, in seconds at the native rate.
    pub fn decoded_seconds(&self) -> f64 {
        let sr = self.decoder.info().sample_rate;
        if sr == 0 {
            0.0
        } else {
            self.decoder.frames_decoded() as f64 / f64::from(sr)
        }
    }

    fn feed(&mut self, native: &[f32], last: bool) -> Result<(), AudioError> {
        let before = self.buf.len();
        self.resampler.push(native, &mut self.buf)?;
        if last {
            self.resampler.finish(&mut self.buf)?;
            self.eof = true;
        }
        self.total += self.buf.len() - before;
        Ok(())
    }

    /// Decodes until the next window is available; returns its span.
    fn next_span(&mut self) -> Result<Option<(usize, usize)>, AudioError> {
        if self.done {
            return Ok(None);
        }
        loop {
            // Drop samples no later window needs (the previous window's
            // samples are no longer borrowed once we are called again).
            let drop_to = self.consumed.min(self.buf_start + self.buf.len());
            if drop_to > self.buf_start {
                self.buf.drain(..drop_to - self.buf_start);
                self.buf_start = drop_to;
            }
            let end = self.next_start + self.plan.length;
            if end <= self.total {
                let span = (self.next_start, end);
                self.last_end = Some(end);
                self.next_start += self.plan.hop;
                self.consumed = self.next_start;
                return Ok(Some(span));
            }
            if self.eof {
                self.done = true;
                let tail = self.plan.tail(self.next_start, self.total, self.last_end)?;
                return Ok(tail);
            }
            self.native.clear();
            let more = if self
                .frame_limit
                .is_some_and(|l| self.decoder.frames_decoded() >= l)
            {
                false
            } else {
                self.decoder.next_into(&mut self.native)?
            };
            if let Some(limit) = self.frame_limit {
                // Keep exactly `limit` native frames, as librosa's `duration`.
                let seen = self.decoder.frames_decoded();
                if seen > limit {
                    let excess = (seen - limit) as usize;
                    let keep = self.native.len().saturating_sub(excess);
                    self.native.truncate(keep);
                }
            }
            let native = std::mem::take(&mut self.native);
            let fed = self.feed(&native, !more);
            self.native = native;
            fed?;
        }
    }

    /// Advances to the next window and hands its samples (mono, 22 050 Hz)
    /// to `f` together with the stream's feature extractor, so callers can
    /// compute anything per window (features, a mel spectrogram) without
    /// copying. Returns `Ok(None)` after the last window.
    pub fn next_with<T>(
        &mut self,
        f: impl FnOnce(&mut FeatureExtractor, f64, f64, &[f32]) -> Result<T, AudioError>,
    ) -> Result<Option<T>, AudioError> {
        let span = match self.next_span() {
            Ok(Some(s)) => s,
            Ok(None) => return Ok(None),
            Err(e) => {
                self.done = true;
                return Err(e);
            }
        };
        let sr = f64::from(self.plan.rate);
        let (start_s, end_s) = (span.0 as f64 / sr, span.1 as f64 / sr);
        let a = span.0.saturating_sub(self.buf_start).min(self.buf.len());
        let b = span.1.saturating_sub(self.buf_start).min(self.buf.len());
        let samples = &self.buf[a..b];
        let r = f(&mut self.extractor, start_s, end_s, samples);
        if r.is_err() {
            self.done = true;
        }
        r.map(Some)
    }

    /// The next window with its features.
    pub fn next_window(&mut self) -> Result<Option<Window>, AudioError> {
        self.next_with(|ex, start_s, end_s, y| {
            Ok(Window {
                start_s,
                end_s,
                features: ex.features(y)?,
            })
        })
    }

    /// The next window's 128-band mel spectrogram in dB (see
    /// [`FeatureExtractor::mel_spectrogram_db`]) with its start and end.
    pub fn next_mel(&mut self) -> Result<Option<(f64, f64, ndarray::Array2<f32>)>, AudioError> {
        self.next_with(|ex, a, b, y| Ok((a, b, ex.mel_spectrogram_db(y))))
    }

    /// Resampled samples currently held: at most about one window plus one
    /// decoded chunk, whatever the length of the recording.
    pub fn buffered_samples(&self) -> usize {
        self.buf.len()
    }

    /// The info with the decoded duration (call after the last window).
    pub fn final_info(&self) -> AudioInfo {
        let mut info = self.decoder.info().clone();
        info.duration_s = self.decoded_seconds();
        info
    }
}

impl Iterator for WindowStream {
    type Item = Result<Window, AudioError>;
    fn next(&mut self) -> Option<Self::Item> {
        self.next_window().transpose()
    }
}

fn collect(mut stream: WindowStream) -> Result<Analysis, AudioError> {
    let mut windows = Vec::new();
    while let Some(w) = stream.next_window()? {
        windows.push(w);
    }
    Ok(Analysis {
        info: stream.final_info(),
        windows,
    })
}

/// Analyses a file: every window's features. Streams internally; only the
/// (small) feature vectors are collected.
pub fn analyze_file(path: &Path, cfg: &WindowConfig) -> Result<Analysis, AudioError> {
    collect(WindowStream::open(path, cfg)?)
}

/// Analyses audio held in memory (short uploads).
pub fn analyze_bytes(bytes: Vec<u8>, cfg: &WindowConfig) -> Result<Analysis, AudioError> {
    collect(WindowStream::from_bytes(bytes, cfg)?)
}

/// Analyses audio from any seekable reader.
pub fn analyze_reader<R>(reader: R, cfg: &WindowConfig) -> Result<Analysis, AudioError>
where
    R: Read + Seek + Send + Sync + 'static,
{
    collect(WindowStream::from_reader(reader, cfg)?)
}

fn clip_from_source(source: Box<dyn MediaSource>) -> Result<FeatureVector, AudioError> {
    // One window as long as the clip, so the whole clip is analysed at once.
    let cfg = WindowConfig {
        length_s: CLIP_SECONDS,
        hop_s: CLIP_SECONDS,
        min_last_s: 0.0,
    };
    let mut s = WindowStream::from_source_limited(source, cfg.plan()?, Some(CLIP_SECONDS))?;
    match s.next_window()? {
        Some(w) => Ok(w.features),
        None => Err(AudioError::TooShort {
            duration_s: s.decoded_seconds(),
            min_s: crate::window::MIN_RECORDING_S,
        }),
    }
}

/// The reference clip vector of `features_reference.py`: the first 10 s,
/// mono, 22 050 Hz, silence-trimmed; the 95 librosa features, then the
/// band profile of the same samples.
pub fn clip_features(path: &Path) -> Result<FeatureVector, AudioError> {
    clip_from_source(open_path(path)?)
}

/// [`clip_features`] for audio in memory.
pub fn clip_features_bytes(bytes: Vec<u8>) -> Result<FeatureVector, AudioError> {
    clip_from_source(Box::new(std::io::Cursor::new(bytes)))
}

fn probe_source(source: Box<dyn MediaSource>) -> Result<AudioInfo, AudioError> {
    let mut decoder = Decoder::open(source)?;
    let mut scratch = Vec::new();
    // Decoding one packet proves this is audio we can read, and fills in
    // what some headers leave out (MP3 sample rate and channels).
    let got = decoder.next_into(&mut scratch)?;
    if !got && decoder.frames_decoded() == 0 {
        return Err(AudioError::TooShort {
            duration_s: 0.0,
            min_s: crate::window::MIN_RECORDING_S,
        });
    }
    if decoder.info().duration_s.is_finite() {
        return Ok(decoder.info().clone());
    }
    decoder.scan_duration()
}

/// Cheaply identifies a file as audio (by content) and reports what it is.
/// Reads the headers and decodes one packet; when the header states no
/// length, demuxes (without decoding) to the end to measure it.
pub fn probe(path: &Path) -> Result<AudioInfo, AudioError> {
    probe_source(open_path(path)?)
}

/// [`probe`] for any seekable reader.
pub fn probe_reader<R>(reader: R) -> Result<AudioInfo, AudioError>
where
    R: Read + Seek + Send + Sync + 'static,
{
    probe_source(source_from_reader(reader)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stream_at_another_rate_cuts_windows_in_that_rate() {
        let samples: Vec<f32> = (0..(4.0 * 22_050.0) as usize)
            .map(|i| 0.2 * (i as f32 * 0.05).sin())
            .collect();
        let wav = crate::wav::pcm16_mono(&samples, 22_050);
        let cfg = WindowConfig {
            length_s: 3.0,
            hop_s: 3.0,
            min_last_s: 1.0,
        };
        let mut stream = WindowStream::from_bytes_at(wav, &cfg, 48_000).unwrap();
        assert_eq!(stream.sample_rate(), 48_000);
        let mut windows = Vec::new();
        while let Some(w) = stream
            .next_with(|_, start, end, y| Ok((start, end, y.len())))
            .unwrap()
        {
            windows.push(w);
        }
        assert_eq!(windows.len(), 2, "{windows:?}");
        assert_eq!(windows[0], (0.0, 3.0, 144_000));
        // The tail: one second at 48 kHz (the resampled length rounds up).
        let (start, end, n) = windows[1];
        assert_eq!(start, 3.0);
        assert!(
            (end - 4.0).abs() < 1e-4 && (48_000..=48_001).contains(&n),
            "{end} {n}"
        );
    }
}
