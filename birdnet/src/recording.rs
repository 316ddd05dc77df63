//! Whole recordings through BirdNET: decoded, resampled to 48 kHz, cut into 3-s
//! windows and embedded a batch at a time, so memory stays one batch of windows
//! whatever the recording's length.

use std::path::Path;

use birdsong_audio::{AudioInfo, WindowConfig, WindowStream};

use crate::error::{BirdnetError, Result};
use crate::{Birdnet, SAMPLE_RATE, WINDOW_SECONDS};

/// A final window shorter than this is dropped (BirdNET pads what is kept).
pub const MIN_LAST_S: f64 = 1.0;

/// BirdNET's windows with `overlap_s` seconds of overlap (BirdNET-Analyzer's
/// `--overlap`, 0 to below 3): 3-s windows every `3 − overlap_s` seconds.
pub fn window_config(overlap_s: f64) -> Result<WindowConfig> {
    if !(0.0..WINDOW_SECONDS).contains(&overlap_s) {
        return Err(BirdnetError::Config(format!(
            "overlap must be in [0, {WINDOW_SECONDS}) s, got {overlap_s}"
        )));
    }
    Ok(WindowConfig {
        length_s: WINDOW_SECONDS,
        hop_s: WINDOW_SECONDS - overlap_s,
        min_last_s: MIN_LAST_S,
    })
}

/// One window's embedding and where it is.
#[derive(Debug, Clone, PartialEq)]
pub struct EmbeddedWindow {
    pub start_s: f64,
    pub end_s: f64,
    /// BirdNET's 1024-value embedding.
    pub embedding: Vec<f32>,
    /// RMS amplitude of the window's samples: the level BirdNET's min-max scaling
    /// removes, kept so that quiet windows can be told apart.
    pub rms: f32,
}

impl EmbeddedWindow {
    /// The vector stored and classified: the embedding, then the RMS level (the model
    /// crate's `BIRDNET_VECTOR` layout).
    pub fn vector(&self) -> Vec<f32> {
        let mut v = Vec::with_capacity(self.embedding.len() + 1);
        v.extend_from_slice(&self.embedding);
        v.push(self.rms);
        v
    }
}

/// A recording's embedded windows.
#[derive(Debug, Clone)]
pub struct Embedded {
    /// What the file is; `duration_s` is the decoded duration.
    pub info: AudioInfo,
    pub windows: Vec<EmbeddedWindow>,
}

impl Embedded {
    /// Where each window is (start, end), seconds, and the vector classified for it
    /// ([`EmbeddedWindow::vector`]), in time order: what a classifier is handed.
    pub fn spans_and_vectors(&self) -> (Vec<(f64, f64)>, Vec<Vec<f32>>) {
        self.windows
            .iter()
            .map(|w| ((w.start_s, w.end_s), w.vector()))
            .unzip()
    }
}

impl Birdnet {
    /// Embeds every window of a file, cut with `window` (see [`window_config`]).
    pub fn embed_file(&self, path: &Path, window: &WindowConfig) -> Result<Embedded> {
        self.embed_stream(WindowStream::open_at(path, window, SAMPLE_RATE)?)
    }

    /// Embeds every window of an audio file in memory.
    pub fn embed_bytes(&self, bytes: Vec<u8>, window: &WindowConfig) -> Result<Embedded> {
        self.embed_stream(WindowStream::from_bytes_at(bytes, window, SAMPLE_RATE)?)
    }

    /// Embeds every window of a stream opened at [`SAMPLE_RATE`].
    pub fn embed_stream(&self, mut stream: WindowStream) -> Result<Embedded> {
        if stream.sample_rate() != SAMPLE_RATE {
            return Err(BirdnetError::Config(format!(
                "the stream is at {} Hz; BirdNET takes {SAMPLE_RATE} Hz",
                stream.sample_rate()
            )));
        }
        let batch = self.batch();
        let mut windows = Vec::new();
        let mut pending: Vec<(f64, f64, Vec<f32>)> = Vec::with_capacity(batch);
        loop {
            let next = stream
                .next_with(|_, start_s, end_s, samples| Ok((start_s, end_s, samples.to_vec())))?;
            let done = next.is_none();
            pending.extend(next);
            if pending.len() == batch || (done && !pending.is_empty()) {
                let slices: Vec<&[f32]> = pending.iter().map(|p| p.2.as_slice()).collect();
                let embeddings = self.embed(&slices)?;
                for ((start_s, end_s, samples), embedding) in pending.drain(..).zip(embeddings) {
                    windows.push(EmbeddedWindow {
                        start_s,
                        end_s,
                        embedding,
                        rms: rms(&samples),
                    });
                }
            }
            if done {
                break;
            }
        }
        Ok(Embedded {
            info: stream.final_info(),
            windows,
        })
    }
}

fn rms(x: &[f32]) -> f32 {
    if x.is_empty() {
        return 0.0;
    }
    let sum: f64 = x.iter().map(|&v| f64::from(v) * f64::from(v)).sum();
    (sum / x.len() as f64).sqrt() as f32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlap_sets_the_hop_and_is_bounded() {
        let w = window_config(1.5).unwrap();
        assert_eq!((w.length_s, w.hop_s), (3.0, 1.5));
        assert!(window_config(3.0).is_err());
        assert!(window_config(-0.5).is_err());
        assert!(window_config(f64::NAN).is_err());
    }

    #[test]
    fn rms_of_a_square_wave_is_its_amplitude() {
        let x: Vec<f32> = (0..100)
            .map(|i| if i % 2 == 0 { 0.5 } else { -0.5 })
            .collect();
        assert!((rms(&x) - 0.5).abs() < 1e-6);
        assert_eq!(rms(&[]), 0.0);
    }
}
