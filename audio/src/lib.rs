//! Audio in, numbers out: decoding, resampling, windowing and the acoustic
//! features birdsong classifies on (librosa's 95 and a 128-value band
//! profile), at native speed and with librosa parity.
//!
//! Where it sits: at the bottom, under the model library and the roles; it
//! depends on nothing of birdsong's. This crate is the hot path of every
//! worker. It is pure and synchronous:
//! bytes (a file, a reader, a buffer) go in; per-window feature vectors come
//! out. There is no I/O beyond reading the input, no async, no global state,
//! and every type is `Send` so the worker can run it on blocking threads.
//!
//! # Layout
//!
//! The pipeline, in the order data flows through it:
//!
//! * [`decode`]: symphonia. The format is detected from the content, never
//!   from the file name; channels are averaged to mono.
//! * [`resample`]: libsoxr at librosa's settings, to the analysis rate of 22 050 Hz, streamed.
//! * [`window`]: how a recording is cut into windows (default 5 s, no
//!   overlap, a final window under 1 s dropped).
//! * [`pipeline`]: the streaming driver ([`WindowStream`]) that keeps only
//!   one window of samples in memory, and the collecting entry points
//!   ([`analyze_file`], [`analyze_bytes`], [`analyze_reader`],
//!   [`clip_features`], [`probe`]).
//! * [`features`]: the [`FEATURE_COUNT`]-value vector of one window
//!   ([`FeatureExtractor`]): librosa's 95, built from [`trim`] (silence
//!   removal), [`stft`], [`mel`], [`mfcc`], [`chroma`] and [`spectral`], then
//!   the band profile ([`bands`]).
//! * [`wav`]: writing 16-bit PCM WAV (window playback, test recordings).
//! * [`error`]: one error type whose messages are meant for users.
//!
//! # Parity
//!
//! The reference definition of librosa's 95 is `features_reference.py`
//! (librosa 0.11), which is not in this repository: it is in the shared
//! folder beside it, `../shared/reference/features_reference.py` (the tests
//! find that folder at `../../shared` from this crate, or through
//! `BIRDSONG_SHARED_DIR`). The band profile's is
//! `tests/fixtures/band_profile.py`. Every formula here follows librosa's
//! source, including its padding, its float32 intermediate types and its
//! tuning estimate. The tests compare all 95 values with librosa's on 20
//! reference clips and on resampled, stereo, FLAC, OGG and MP3 variants, and
//! the band profile on the same clips and fixtures; `README.md` lists the
//! tolerances and why.
//!
//! # Example
//!
//! ```no_run
//! use birdsong_audio::{analyze_file, WindowConfig};
//! let analysis = analyze_file("song.mp3".as_ref(), &WindowConfig::default())?;
//! for w in &analysis.windows {
//!     println!("{:.1}-{:.1} s: centroid {:.0} Hz", w.start_s, w.end_s, w.features[80]);
//! }
//! # Ok::<(), birdsong_audio::AudioError>(())
//! ```

pub mod bands;
pub mod chroma;
pub mod decode;
pub mod error;
pub mod features;
pub mod mel;
pub mod mfcc;
pub mod pipeline;
pub mod resample;
pub mod spectral;
pub mod stft;
pub mod trim;
pub mod wav;
pub mod window;

pub use decode::AudioInfo;
pub use error::AudioError;
pub use features::{
    FEATURE_COUNT, FEATURE_NAMES, FeatureExtractor, FeatureVector, LIBROSA_FEATURE_COUNT,
};
pub use pipeline::{
    Analysis, Window, WindowStream, analyze_bytes, analyze_file, analyze_reader, clip_features,
    clip_features_bytes, probe, probe_reader,
};
pub use window::{MIN_RECORDING_S, WindowConfig};

/// The rate every signal is resampled to before analysis (librosa's default).
pub const ANALYSIS_SAMPLE_RATE: u32 = 22_050;

/// Bumped whenever feature values change; stored in model artifacts so a
/// worker refuses a model trained on other features. Version 2 appended the
/// band profile to version 1's 95 librosa values, which are unchanged.
pub const FEATURE_VERSION: &str = "bs-features-2";

/// Earlier feature versions whose vectors are a prefix of the current one:
/// (version, length). A model trained on one of them reads the first `length`
/// values of today's vectors and gets exactly what it was trained on.
pub const PREFIX_FEATURE_VERSIONS: &[(&str, usize)] = &[("bs-features-1", LIBROSA_FEATURE_COUNT)];

/// Length of the reference clip ([`clip_features`]): librosa's
/// `load(duration=10)`.
pub const CLIP_SECONDS: f64 = 10.0;

/// Number of mel bands of [`mel_spectrogram_db`].
pub const N_MELS: usize = mel::N_MELS;

/// The 128-band mel spectrogram (dB relative to the maximum, floored at
/// -80 dB) of mono 22 050 Hz samples, `N_MELS` × `1 + len / 512` frames: the
/// input the CNN model is meant to take. For many windows, reuse a
/// [`FeatureExtractor`] (or [`WindowStream::next_mel`]) instead: this
/// convenience builds a new one per call.
pub fn mel_spectrogram_db(samples: &[f32]) -> ndarray::Array2<f32> {
    FeatureExtractor::new().mel_spectrogram_db(samples)
}

#[cfg(test)]
mod send_check {
    fn is_send<T: Send>() {}
    #[test]
    fn public_types_are_send() {
        is_send::<crate::WindowStream>();
        is_send::<crate::FeatureExtractor>();
        is_send::<crate::AudioError>();
        is_send::<crate::Analysis>();
    }
}
