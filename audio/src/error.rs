//! The one error type of the crate.
//!
//! Messages are written for the person who uploaded the file, not for the
//! developer: "not an audio file", "truncated at 3.2 s". The worker stores the
//! message on the task row, and uses [`AudioError::is_permanent`] to decide
//! between retrying and failing the task for good.

/// Everything that can go wrong turning bytes into features.
#[derive(Debug, thiserror::Error)]
pub enum AudioError {
    /// The bytes are not in any audio container or stream format we can read.
    #[error("not an audio file (no known audio format recognised in the content)")]
    NotAudio,
    /// The container was recognised but it holds no audio track.
    #[error("the file contains no audio track")]
    NoAudioTrack,
    /// The audio is encoded with a codec (or codec feature) we cannot decode.
    #[error("unsupported audio codec or feature: {0}")]
    UnsupportedCodec(String),
    /// The stream ends, or breaks, before its headers said it would.
    #[error("the audio is truncated or corrupt at {at_s:.1} s ({detail})")]
    Truncated {
        /// Seconds of audio successfully decoded before the break.
        at_s: f64,
        /// What the decoder reported.
        detail: String,
    },
    /// The stream is damaged so badly that no audio could be decoded from it.
    #[error("the audio stream is corrupt: {0}")]
    Corrupt(String),
    /// The header declares no channels at all.
    #[error("the audio declares zero channels")]
    ZeroChannels,
    /// The header declares more channels than any real recording has.
    #[error("the audio declares {0} channels, more than the supported {max}", max = crate::decode::MAX_CHANNELS)]
    TooManyChannels(usize),
    /// The sample rate is missing, zero, or outside what we analyse.
    #[error("invalid sample rate {0} Hz (supported: {min}..={max} Hz)", min = crate::decode::MIN_SAMPLE_RATE, max = crate::decode::MAX_SAMPLE_RATE)]
    InvalidSampleRate(u32),
    /// The recording is too short to analyse.
    #[error("the recording is too short: {duration_s:.3} s (minimum {min_s} s)")]
    TooShort {
        /// Decoded duration in seconds.
        duration_s: f64,
        /// The minimum we accept.
        min_s: f64,
    },
    /// Nothing is left after removing silence (only an empty signal can do this).
    #[error("nothing left after trimming silence")]
    EmptyAfterTrim,
    /// The window configuration is not usable.
    #[error("invalid window configuration: {0}")]
    InvalidConfig(String),
    /// The resampler refused the conversion or failed on the stream.
    #[error("resampling failed: {0}")]
    Resampler(String),
    /// Reading the input failed (file missing, permission, disk error).
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
}

impl AudioError {
    /// True when retrying cannot help because the audio itself is bad (or
    /// the request is): the worker marks the task failed instead of retrying.
    /// Only I/O errors are worth a retry (a network file system hiccup, a
    /// file still being written).
    pub fn is_permanent(&self) -> bool {
        !matches!(self, AudioError::Io(_))
    }
}
