//! Sample-rate conversion to the analysis rate with rubato.
//!
//! librosa resamples with soxr at "HQ" quality. We use rubato's windowed-sinc
//! resampler with its cut-off placed where soxr HQ's transition band is, as
//! an exact polyphase filter for all the rates recorders use (8, 16, 32,
//! 44.1, 48, 96, 192, 384 kHz…). rubato's FFT resampler is faster but its
//! fixed, near-Nyquist cut-off keeps content soxr removes, which moved the
//! spectral features four times further from librosa's. Work is chunked so
//! streams of any length need a few kilobytes. The output is aligned (the
//! resampler's delay is removed, to the nearest output sample) and has
//! exactly `ceil(n_in * ratio)` samples, as `librosa.resample` does.

use rubato::{
    Resampler, SincFixedIn, SincInterpolationParameters, SincInterpolationType, WindowFunction,
};

use crate::error::AudioError;

/// Filter length in input samples at a 2:1 decimation (scaled with the
/// ratio). Measured against librosa on the fixtures (worst spectral-feature
/// error): 128 taps 2.4e-2, 192 1.1e-2, 256 6.1e-3, 384 4.1e-3, 512 2.1e-3;
/// the cost is proportional. 256 is as close to soxr HQ as soxr VHQ is.
const SINC_TAPS: usize = 256;
/// Cut-off relative to the output Nyquist frequency: the middle of soxr HQ's
/// transition band (pass band to 0.913, stop band from 1.0), so the same
/// frequencies are kept and removed as in librosa.
const CUTOFF: f32 = 0.9565;
/// Most filter phases tabulated for exact polyphase resampling.
const MAX_PHASES: usize = 4096;
/// Input chunk size.
const CHUNK_IN: usize = 4096;

enum Kind {
    Passthrough,
    Sinc(Box<SincFixedIn<f32>>),
}

/// A streaming mono resampler from one fixed rate to another.
pub struct MonoResampler {
    kind: Kind,
    ratio: f64,
    pending: Vec<f32>,
    chunk_out: Vec<f32>,
    delay_left: usize,
    total_in: u64,
    total_out: u64,
}

fn gcd(mut a: u64, mut b: u64) -> u64 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

impl MonoResampler {
    /// A resampler from `rate_in` to `rate_out` Hz.
    pub fn new(rate_in: u32, rate_out: u32) -> Result<Self, AudioError> {
        if rate_in == 0 || rate_out == 0 {
            return Err(AudioError::InvalidSampleRate(rate_in));
        }
        let ratio = f64::from(rate_out) / f64::from(rate_in);
        let kind = if rate_in == rate_out {
            Kind::Passthrough
        } else {
            let g = gcd(u64::from(rate_in), u64::from(rate_out));
            let phases = (u64::from(rate_out) / g) as usize;
            // Scale the filter with the decimation factor so the transition
            // band stays the same width in Hz at the output.
            let decimation = (f64::from(rate_in) / f64::from(rate_out)).max(1.0);
            let sinc_len = ((SINC_TAPS as f64 * decimation / 2.0).ceil() as usize).max(SINC_TAPS);
            // Exact polyphase filtering when the output positions fall on a
            // grid of at most MAX_PHASES fractions of an input sample (all
            // common rates: 147 phases for 48 kHz, 1 for 44.1 kHz); otherwise
            // cubic interpolation between 256 phases.
            let exact = phases <= MAX_PHASES;
            let params = SincInterpolationParameters {
                sinc_len,
                f_cutoff: CUTOFF,
                interpolation: if exact {
                    SincInterpolationType::Nearest
                } else {
                    SincInterpolationType::Cubic
                },
                oversampling_factor: if exact { phases } else { 256 },
                window: WindowFunction::BlackmanHarris2,
            };
            let r = SincFixedIn::<f32>::new(ratio, 1.0, params, CHUNK_IN, 1)
                .map_err(|_| AudioError::InvalidSampleRate(rate_in))?;
            Kind::Sinc(Box::new(r))
        };
        let out_max = match &kind {
            Kind::Passthrough => 0,
            Kind::Sinc(r) => r.output_frames_max(),
        };
        // Alignment. rubato 0.16's SincFixedIn puts output m at input time
        // (m + 1) / ratio - 1 + 1 / F (F = filter phases), measured with an
        // impulse; its `output_delay()` (taps * ratio / 2) does not apply.
        // We want output n at input n / ratio: prepend P zeros and skip D
        // outputs with (D + 1) / ratio = P + 1 - 1 / F, P and D whole, which
        // has an exact solution on the polyphase grid.
        let mut pending = Vec::new();
        let mut delay = 0usize;
        if let Kind::Sinc(_) = &kind {
            let g = gcd(u64::from(rate_in), u64::from(rate_out));
            let period = u64::from(rate_in) / g;
            let phases = u64::from(rate_out) / g;
            if phases as usize <= MAX_PHASES {
                // (P + 1) * phases = 1 + (D + 1) * period, D >= 0.
                let mut p1 = 1u64;
                while !((p1 * phases) % period == 1 % period && p1 * phases > period) {
                    p1 += 1;
                }
                pending.resize((p1 - 1) as usize, 0.0);
                delay = ((p1 * phases - 1) / period - 1) as usize;
            } else {
                // Cubic interpolation between 256 phases: nearest whole sample.
                let f = 256.0;
                let mut p = 0usize;
                while ratio * (p as f64 + 1.0 - 1.0 / f) - 1.0 < -0.5 {
                    p += 1;
                }
                pending.resize(p, 0.0);
                delay = (ratio * (p as f64 + 1.0 - 1.0 / f) - 1.0).round().max(0.0) as usize;
            }
        }
        Ok(MonoResampler {
            kind,
            ratio,
            pending,
            chunk_out: vec![0.0; out_max],
            delay_left: delay,
            total_in: 0,
            total_out: 0,
        })
    }

    /// Output samples owed for the input seen so far (librosa's length).
    fn target_len(&self) -> u64 {
        (self.total_in as f64 * self.ratio).ceil() as u64
    }

    fn emit(&mut self, produced: usize, out: &mut Vec<f32>, limit: Option<u64>) {
        let skip = self.delay_left.min(produced);
        self.delay_left -= skip;
        let mut chunk = &self.chunk_out[skip..produced];
        if let Some(limit) = limit {
            let room = limit.saturating_sub(self.total_out) as usize;
            chunk = &chunk[..chunk.len().min(room)];
        }
        out.extend_from_slice(chunk);
        self.total_out += chunk.len() as u64;
    }

    fn process_chunk(kind: &mut Kind, chunk_out: &mut [f32], input: Option<&[f32]>) -> usize {
        let mut out = [chunk_out];
        let res = match (kind, input) {
            (Kind::Passthrough, _) => return 0,
            (Kind::Sinc(r), Some(i)) => r.process_into_buffer(&[i], &mut out, None),
            (Kind::Sinc(r), None) => {
                r.process_partial_into_buffer(None::<&[&[f32]]>, &mut out, None)
            }
        };
        // Buffers are sized from the resampler's own figures, so an error here
        // would be a bug; produce nothing rather than panic.
        res.map(|(_, produced)| produced).unwrap_or(0)
    }

    fn frames_next(&self) -> usize {
        match &self.kind {
            Kind::Passthrough => 0,
            Kind::Sinc(r) => r.input_frames_next(),
        }
    }

    /// Feeds input samples; appends whatever output is ready to `out`.
    pub fn push(&mut self, input: &[f32], out: &mut Vec<f32>) {
        self.total_in += input.len() as u64;
        if matches!(self.kind, Kind::Passthrough) {
            out.extend_from_slice(input);
            self.total_out += input.len() as u64;
            return;
        }
        self.pending.extend_from_slice(input);
        let mut start = 0;
        loop {
            let need = self.frames_next();
            if need == 0 || self.pending.len() - start < need {
                break;
            }
            let produced = Self::process_chunk(
                &mut self.kind,
                &mut self.chunk_out,
                Some(&self.pending[start..start + need]),
            );
            start += need;
            self.emit(produced, out, None);
        }
        self.pending.drain(..start);
    }

    /// Flushes the tail: the remaining input padded with zeros, then the
    /// resampler's delay line, cut to exactly `ceil(n_in * ratio)` samples.
    pub fn finish(&mut self, out: &mut Vec<f32>) {
        if matches!(self.kind, Kind::Passthrough) {
            return;
        }
        let target = self.target_len();
        let need = self.frames_next();
        let mut last = std::mem::take(&mut self.pending);
        last.resize(need.max(last.len()), 0.0);
        let produced =
            Self::process_chunk(&mut self.kind, &mut self.chunk_out, Some(&last[..need]));
        self.emit(produced, out, Some(target));
        // The delay line holds at most a couple of chunks; bound the loop anyway.
        let mut guard = 0;
        while self.total_out < target && guard < 64 {
            let produced = Self::process_chunk(&mut self.kind, &mut self.chunk_out, None);
            if produced == 0 {
                break;
            }
            self.emit(produced, out, Some(target));
            guard += 1;
        }
        // Pad in the (theoretical) case the resampler produced fewer samples.
        while self.total_out < target {
            out.push(0.0);
            self.total_out += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sine(rate: u32, freq: f64, n: usize) -> Vec<f32> {
        (0..n)
            .map(|i| {
                (0.5 * (2.0 * std::f64::consts::PI * freq * i as f64 / f64::from(rate)).sin())
                    as f32
            })
            .collect()
    }

    fn run(rate_in: u32, input: &[f32], piece: usize) -> Vec<f32> {
        let mut r = MonoResampler::new(rate_in, 22_050).unwrap();
        let mut out = Vec::new();
        for chunk in input.chunks(piece) {
            r.push(chunk, &mut out);
        }
        r.finish(&mut out);
        out
    }

    #[test]
    fn output_length_is_librosas() {
        for rate in [
            8_000u32, 16_000, 22_050, 32_000, 44_100, 48_000, 96_000, 192_000, 384_000, 44_056,
        ] {
            for n in [1usize, 999, 44_100, 100_003] {
                let out = run(rate, &vec![0.1; n], 1152);
                let expected = (n as f64 * 22_050.0 / f64::from(rate)).ceil() as usize;
                assert_eq!(out.len(), expected, "{rate} Hz, {n} samples");
            }
        }
    }

    #[test]
    fn a_sine_comes_out_aligned_and_undistorted() {
        // 1 kHz is far inside the pass band: the output must be the same sine
        // sampled at 22 050 Hz, with no delay (a shift of 0.01 sample would be
        // an error of 1.4e-3) and unit gain.
        for rate in [16_000u32, 32_000, 44_100, 48_000, 96_000, 384_000] {
            let input = sine(rate, 1000.0, rate as usize);
            let out = run(rate, &input, 4000);
            let expected = sine(22_050, 1000.0, out.len());
            let mid = &out[2000..out.len() - 2000];
            let err = mid
                .iter()
                .zip(&expected[2000..])
                .map(|(a, b)| (a - b).abs())
                .fold(0f32, f32::max);
            assert!(err < 1e-4, "{rate} Hz: max error {err}");
        }
    }

    #[test]
    fn content_above_the_new_nyquist_is_removed() {
        // 15 kHz at 48 kHz would alias to 7.05 kHz: it must be attenuated.
        let out = run(48_000, &sine(48_000, 15_000.0, 48_000), 4096);
        let rms = (out[2000..out.len() - 2000]
            .iter()
            .map(|x| x * x)
            .sum::<f32>()
            / (out.len() - 4000) as f32)
            .sqrt();
        assert!(rms < 1e-3, "alias rms {rms}");
    }
}
