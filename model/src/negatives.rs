//! Sound that is no bird, made here: the negatives every per-species model is
//! trained with, whatever the user labelled.
//!
//! A model trained only on recordings of its species has never seen a window of
//! plain noise, and a window far from everything it was shown can land anywhere:
//! a model trained on synthetic calls scored digital silence and white noise near
//! 1.0 for one of its species. Recorders spend most of their time on exactly such
//! windows (wind, rain, hiss, hum, an empty night), so a handful of them are
//! synthesised, run through the same feature extractor as real audio, and trained
//! as "no species present". They cost a second of extraction per training run.

use birdsong_audio::{ANALYSIS_SAMPLE_RATE, WindowConfig};

use crate::features::FeatureVector;
use crate::{ModelError, Result};

/// Seconds of each synthetic clip.
const CLIP_SECONDS: f32 = 10.0;

/// Peak amplitudes the noises are made at: from a quiet night to a loud gust.
const LEVELS: [f32; 4] = [0.002, 0.02, 0.1, 0.5];

/// A tiny deterministic generator (xorshift), so that training stays reproducible.
struct Noise(u64);

impl Noise {
    fn uniform(&mut self) -> f32 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        ((self.0 >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }
}

/// The kinds of background synthesised.
#[derive(Clone, Copy)]
enum Kind {
    White,
    /// 1/f: most natural background (wind in leaves, distant surf) is close to it.
    Pink,
    /// 1/f²: the rumble of wind on a microphone, traffic far away.
    Brown,
    /// Mains hum with harmonics, from a recorder's power supply.
    Hum,
}

fn clip(kind: Kind, level: f32, seed: u64) -> Vec<f32> {
    let n = (CLIP_SECONDS * ANALYSIS_SAMPLE_RATE as f32) as usize;
    let mut noise = Noise(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    let mut out = Vec::with_capacity(n);
    // Paul Kellet's economy pink filter state, and a leaky integrator for brown.
    let (mut b0, mut b1, mut b2, mut brown) = (0f32, 0f32, 0f32, 0f32);
    for i in 0..n {
        let white = noise.uniform();
        let v = match kind {
            Kind::White => white,
            Kind::Pink => {
                b0 = 0.99765 * b0 + white * 0.099_046;
                b1 = 0.963 * b1 + white * 0.296_516_4;
                b2 = 0.57 * b2 + white * 1.052_691_3;
                (b0 + b1 + b2 + white * 0.1848) * 0.25
            }
            Kind::Brown => {
                brown = 0.995 * brown + white * 0.1;
                brown
            }
            Kind::Hum => {
                let t = i as f32 / ANALYSIS_SAMPLE_RATE as f32;
                let w = std::f32::consts::TAU * 50.0 * t;
                0.6 * w.sin() + 0.3 * (3.0 * w).sin() + 0.1 * (5.0 * w).sin() + 0.01 * white
            }
        };
        out.push(v);
    }
    let peak = out.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-12);
    out.iter_mut().for_each(|v| *v *= level / peak);
    out
}

/// Synthetic background as 16-bit mono WAV files at the analysis rate (silence with
/// dither; white, pink and brown noise and mains hum at several levels, 10 s each):
/// for callers that embed it with another backbone and train it as background.
pub fn synthetic_clips() -> Vec<Vec<u8>> {
    clips()
        .into_iter()
        .map(|samples| birdsong_audio::wav::pcm16_mono(&samples, ANALYSIS_SAMPLE_RATE))
        .collect()
}

/// Feature vectors of synthetic background (the clips of [`synthetic_clips`]), cut
/// with `window`.
pub fn synthetic_background(window: &WindowConfig) -> Result<Vec<FeatureVector>> {
    let mut windows = Vec::new();
    for wav in synthetic_clips() {
        let analysis = birdsong_audio::analyze_bytes(wav, window)
            .map_err(|e| ModelError::InvalidDataset(format!("synthetic background: {e}")))?;
        windows.extend(analysis.windows.into_iter().map(|w| w.features.to_vec()));
    }
    Ok(windows)
}

fn clips() -> Vec<Vec<f32>> {
    let mut clips: Vec<Vec<f32>> = Vec::new();
    let mut seed = 1u64;
    // Near-silence: a recorder's self-noise with nothing in front of it.
    clips.push(clip(Kind::White, 0.000_05, seed));
    for kind in [Kind::White, Kind::Pink, Kind::Brown, Kind::Hum] {
        for level in LEVELS {
            seed += 1;
            clips.push(clip(kind, level, seed));
        }
    }
    clips
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_and_level_yields_windows_deterministically() {
        let cfg = WindowConfig::default();
        let a = synthetic_background(&cfg).unwrap();
        // 17 clips of 10 s in 5 s windows; trimming may shorten the quietest.
        assert!(a.len() >= 30, "{} windows", a.len());
        let b = synthetic_background(&cfg).unwrap();
        assert_eq!(a, b);
        for w in &a {
            assert!(w.iter().all(|v| v.is_finite()));
        }
    }
}
