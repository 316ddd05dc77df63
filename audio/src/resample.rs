//! Sample-rate conversion to the analysis rate with libsoxr.
//!
//! librosa resamples with soxr at "HQ" quality (`soxr.resample(y, sr_in,
//! sr_out, 'HQ')`, float32 samples). We call the same library with the same
//! settings (libsoxr's defaults: HQ, float32, one thread), so a recording
//! resampled here holds the samples librosa analyses, and the features of a
//! 44.1 or 48 kHz recording match librosa's as closely as those of a native
//! 22.05 kHz one. soxr filters in the frequency domain, which also makes it
//! several times cheaper than a time-domain polyphase filter of the same
//! sharpness.
//!
//! libsoxr is a stream resampler: its output does not depend on how the
//! input is cut into pieces, it removes its own delay (output sample `n`
//! sits at input time `n / ratio`), and it holds a bounded amount of state,
//! so streams of any length need a few hundred kilobytes. We cut the output
//! to exactly `ceil(n_in * ratio)` samples, as `librosa.resample` does.

use std::ffi::{CStr, c_char};
use std::ptr::{self, NonNull};

use crate::error::AudioError;

/// Output samples asked of libsoxr per call.
const CHUNK_OUT: usize = 8192;

/// The four functions of libsoxr's C API we call (`soxr.h`, libsoxr 0.1.x).
/// Passing null specs selects libsoxr's defaults, which are the settings
/// python-soxr uses for `quality='HQ'`: float32 interleaved I/O,
/// `soxr_quality_spec(SOXR_HQ, 0)`, `soxr_runtime_spec(1)`.
mod ffi {
    use std::ffi::{c_char, c_double, c_uint, c_void};

    /// The opaque `struct soxr`.
    #[repr(C)]
    pub struct Soxr {
        _private: [u8; 0],
    }

    // Linked by build.rs (pkg-config, else -lsoxr).
    unsafe extern "C" {
        pub fn soxr_create(
            input_rate: c_double,
            output_rate: c_double,
            num_channels: c_uint,
            error: *mut *const c_char,
            io_spec: *const c_void,
            quality_spec: *const c_void,
            runtime_spec: *const c_void,
        ) -> *mut Soxr;
        pub fn soxr_process(
            resampler: *mut Soxr,
            input: *const c_void,
            ilen: usize,
            idone: *mut usize,
            output: *mut c_void,
            olen: usize,
            odone: *mut usize,
        ) -> *const c_char;
        pub fn soxr_delete(resampler: *mut Soxr);
        pub fn soxr_version() -> *const c_char;
    }
}

/// The libsoxr version linked in (e.g. "libsoxr-0.1.3"), for reports.
pub fn soxr_version() -> String {
    // SAFETY: soxr_version returns a pointer to a static NUL-terminated string.
    let v = unsafe { ffi::soxr_version() };
    if v.is_null() {
        return "libsoxr (unknown version)".to_owned();
    }
    // SAFETY: non-null, static and NUL-terminated per soxr.h.
    unsafe { CStr::from_ptr(v) }.to_string_lossy().into_owned()
}

fn soxr_message(e: *const c_char) -> String {
    if e.is_null() {
        return "unknown error".to_owned();
    }
    // SAFETY: libsoxr errors are static NUL-terminated strings.
    unsafe { CStr::from_ptr(e) }.to_string_lossy().into_owned()
}

/// One mono libsoxr stream, deleted on drop.
struct Soxr(NonNull<ffi::Soxr>);

// SAFETY: a soxr stream created with one thread keeps no thread-local state;
// it is only used through `&mut self`, so moving it to another thread is sound.
unsafe impl Send for Soxr {}

impl Drop for Soxr {
    fn drop(&mut self) {
        // SAFETY: the pointer came from soxr_create and is deleted once.
        unsafe { ffi::soxr_delete(self.0.as_ptr()) }
    }
}

impl Soxr {
    fn new(rate_in: u32, rate_out: u32) -> Result<Self, AudioError> {
        let mut error: *const c_char = ptr::null();
        // SAFETY: plain values, a valid out-pointer for the error, and null
        // specs (documented as "use the defaults").
        let raw = unsafe {
            ffi::soxr_create(
                f64::from(rate_in),
                f64::from(rate_out),
                1,
                &mut error,
                ptr::null(),
                ptr::null(),
                ptr::null(),
            )
        };
        // A stream returned with an error is dropped (deleted) here.
        match (NonNull::new(raw).map(Soxr), error.is_null()) {
            (Some(stream), true) => Ok(stream),
            _ => Err(AudioError::Resampler(format!(
                "cannot convert {rate_in} Hz to {rate_out} Hz: {}",
                soxr_message(error)
            ))),
        }
    }

    /// Feeds `input` (`None`: end of input, drain the tail) and fills
    /// `output`; returns (input samples consumed, output samples written).
    fn process(
        &mut self,
        input: Option<&[f32]>,
        output: &mut [f32],
    ) -> Result<(usize, usize), AudioError> {
        let (ip, ilen) = match input {
            Some(i) => (i.as_ptr().cast(), i.len()),
            None => (ptr::null(), 0),
        };
        let (mut idone, mut odone) = (0usize, 0usize);
        // SAFETY: the stream is live; `ip` points to `ilen` readable f32s (or
        // is null for end of input); `output` has `output.len()` writable f32s,
        // and libsoxr writes at most `olen` samples and reads at most `ilen`.
        let error = unsafe {
            ffi::soxr_process(
                self.0.as_ptr(),
                ip,
                ilen,
                &mut idone,
                output.as_mut_ptr().cast(),
                output.len(),
                &mut odone,
            )
        };
        if !error.is_null() {
            return Err(AudioError::Resampler(soxr_message(error)));
        }
        Ok((idone.min(ilen), odone.min(output.len())))
    }
}

/// A streaming mono resampler from one fixed rate to another.
pub struct MonoResampler {
    /// `None` when the rates are equal: samples pass through untouched.
    soxr: Option<Soxr>,
    ratio: f64,
    chunk_out: Vec<f32>,
    total_in: u64,
    total_out: u64,
}

impl MonoResampler {
    /// A resampler from `rate_in` to `rate_out` Hz.
    pub fn new(rate_in: u32, rate_out: u32) -> Result<Self, AudioError> {
        if rate_in == 0 || rate_out == 0 {
            return Err(AudioError::InvalidSampleRate(rate_in));
        }
        let soxr = if rate_in == rate_out {
            None
        } else {
            Some(Soxr::new(rate_in, rate_out)?)
        };
        Ok(MonoResampler {
            chunk_out: if soxr.is_some() {
                vec![0.0; CHUNK_OUT]
            } else {
                Vec::new()
            },
            soxr,
            ratio: f64::from(rate_out) / f64::from(rate_in),
            total_in: 0,
            total_out: 0,
        })
    }

    /// Output samples owed for the input seen so far (librosa's length).
    fn target_len(&self) -> u64 {
        (self.total_in as f64 * self.ratio).ceil() as u64
    }

    /// Feeds input samples; appends whatever output is ready to `out`.
    pub fn push(&mut self, input: &[f32], out: &mut Vec<f32>) -> Result<(), AudioError> {
        self.total_in += input.len() as u64;
        let Some(soxr) = self.soxr.as_mut() else {
            out.extend_from_slice(input);
            self.total_out += input.len() as u64;
            return Ok(());
        };
        let mut rest = input;
        while !rest.is_empty() {
            let (used, made) = soxr.process(Some(rest), &mut self.chunk_out)?;
            out.extend_from_slice(&self.chunk_out[..made]);
            self.total_out += made as u64;
            rest = &rest[used..];
            if used == 0 && made == 0 {
                // libsoxr always takes input while it has output room; never spin.
                return Err(AudioError::Resampler(
                    "libsoxr made no progress on its input".to_owned(),
                ));
            }
        }
        Ok(())
    }

    /// Flushes the tail (libsoxr's delay line), cut or padded with zeros to
    /// exactly `ceil(n_in * ratio)` samples, as `librosa.util.fix_length`.
    pub fn finish(&mut self, out: &mut Vec<f32>) -> Result<(), AudioError> {
        let target = self.target_len();
        if let Some(soxr) = self.soxr.as_mut() {
            // The tail is a few filter lengths; bound the loop anyway.
            for _ in 0..1024 {
                if self.total_out >= target {
                    break;
                }
                let (_, made) = soxr.process(None, &mut self.chunk_out)?;
                if made == 0 {
                    break;
                }
                let room = (target - self.total_out) as usize;
                let take = made.min(room);
                out.extend_from_slice(&self.chunk_out[..take]);
                self.total_out += take as u64;
            }
        }
        while self.total_out < target {
            out.push(0.0);
            self.total_out += 1;
        }
        Ok(())
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
            r.push(chunk, &mut out).unwrap();
        }
        r.finish(&mut out).unwrap();
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
    fn output_does_not_depend_on_how_the_input_is_cut() {
        // Windows are cut from a stream fed one decoder packet at a time;
        // librosa resamples the whole file at once. Both must agree exactly.
        let mut input = sine(44_100, 1234.5, 200_000);
        for (i, x) in input.iter_mut().enumerate() {
            *x += ((i * 7919) % 1000) as f32 * 1e-4;
        }
        let whole = run(44_100, &input, input.len());
        for piece in [1usize, 1152, 4096, 65_537] {
            assert_eq!(run(44_100, &input, piece), whole, "pieces of {piece}");
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

    #[test]
    fn the_linked_library_reports_its_version() {
        assert!(soxr_version().starts_with("libsoxr"), "{}", soxr_version());
    }
}
