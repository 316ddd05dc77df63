//! How a recording is cut into analysis windows.
//!
//! Windows start every `hop` seconds and last `length` seconds (default 5 s,
//! no overlap), in the resampled 22 050 Hz timeline. The last window may be
//! shorter: it is kept when it is at least `min_last_s` long and covers audio
//! no earlier window covered. A recording shorter than one window is a single
//! window, provided it lasts at least [`MIN_RECORDING_S`]; otherwise
//! [`AudioError::TooShort`].

use crate::ANALYSIS_SAMPLE_RATE;
use crate::error::AudioError;

/// Shortest recording we analyse: one FFT frame (2048 samples, 93 ms) is the
/// smallest unit any feature is defined on; 0.1 s keeps a short call.
pub const MIN_RECORDING_S: f64 = 0.1;
/// Longest window: per-window buffers grow with the window (about 180 kB
/// per second), and a bound keeps memory predictable on any input.
pub const MAX_WINDOW_S: f64 = 120.0;

/// Smallest hop between windows.
pub const MIN_HOP_S: f64 = 0.1;

/// Window length, hop and the shortest final window kept.
#[derive(Clone, Debug, PartialEq)]
pub struct WindowConfig {
    /// Window length in seconds.
    pub length_s: f64,
    /// Distance between window starts in seconds (`== length_s`: no overlap).
    pub hop_s: f64,
    /// A final, shorter window is dropped below this many seconds.
    pub min_last_s: f64,
}

impl Default for WindowConfig {
    fn default() -> Self {
        WindowConfig {
            length_s: 5.0,
            hop_s: 5.0,
            min_last_s: 1.0,
        }
    }
}

/// A window config converted to sample counts at one sample rate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WindowPlan {
    /// The sample rate the counts are at.
    pub rate: u32,
    /// Window length in samples.
    pub length: usize,
    /// Hop in samples.
    pub hop: usize,
    /// Minimum final window in samples.
    pub min_last: usize,
    /// Minimum recording in samples.
    pub min_recording: usize,
}

fn samples(s: f64, rate: u32) -> usize {
    (s * f64::from(rate)).round() as usize
}

impl WindowConfig {
    /// Checks the configuration and converts it to samples at the analysis rate.
    pub fn plan(&self) -> Result<WindowPlan, AudioError> {
        self.plan_at(ANALYSIS_SAMPLE_RATE)
    }

    /// Checks the configuration and converts it to samples at `rate` (a model that
    /// takes another rate than the features, such as BirdNET's 48 kHz).
    pub fn plan_at(&self, rate: u32) -> Result<WindowPlan, AudioError> {
        if rate == 0 {
            return Err(AudioError::InvalidSampleRate(0));
        }
        let within = |v: f64, lo: f64, hi: f64| v.is_finite() && (lo..=hi).contains(&v);
        if !within(self.length_s, MIN_RECORDING_S, MAX_WINDOW_S) {
            return Err(AudioError::InvalidConfig(format!(
                "window length must be in [{MIN_RECORDING_S}, {MAX_WINDOW_S}] s, got {}",
                self.length_s
            )));
        }
        // A tiny hop would multiply the work without bound (every window is
        // analysed in full).
        if !within(self.hop_s, MIN_HOP_S, 3600.0) {
            return Err(AudioError::InvalidConfig(format!(
                "hop must be in [{MIN_HOP_S}, 3600] s, got {}",
                self.hop_s
            )));
        }
        if !(self.min_last_s.is_finite() && self.min_last_s >= 0.0) {
            return Err(AudioError::InvalidConfig(format!(
                "min_last_s must be >= 0, got {}",
                self.min_last_s
            )));
        }
        Ok(WindowPlan {
            rate,
            length: samples(self.length_s, rate).max(1),
            hop: samples(self.hop_s, rate).max(1),
            min_last: samples(self.min_last_s, rate),
            min_recording: samples(MIN_RECORDING_S, rate),
        })
    }
}

impl WindowPlan {
    /// All window spans `[start, end)` of a recording of `total` samples, in
    /// order. The streaming analysis produces exactly these spans.
    pub fn spans(&self, total: usize) -> Result<Vec<(usize, usize)>, AudioError> {
        let mut spans = Vec::new();
        let mut start = 0;
        while start + self.length <= total {
            spans.push((start, start + self.length));
            start += self.hop;
        }
        match self.tail(start, total, spans.last().map(|s| s.1)) {
            Ok(Some(span)) => spans.push(span),
            Ok(None) => {}
            Err(e) => return Err(e),
        }
        Ok(spans)
    }

    /// The final partial window starting at `start`, if kept, given the end
    /// of the last full window emitted (`None` when there was none).
    pub fn tail(
        &self,
        start: usize,
        total: usize,
        last_end: Option<usize>,
    ) -> Result<Option<(usize, usize)>, AudioError> {
        match last_end {
            None => {
                if total >= self.min_recording && total > 0 {
                    Ok(Some((0, total)))
                } else {
                    Err(AudioError::TooShort {
                        duration_s: total as f64 / f64::from(self.rate),
                        min_s: MIN_RECORDING_S,
                    })
                }
            }
            Some(end) => {
                if start < total && total > end && total - start >= self.min_last.max(1) {
                    Ok(Some((start, total)))
                } else {
                    Ok(None)
                }
            }
        }
    }
}
