//! Container and codec decoding with symphonia, down to mono `f32` at the
//! file's own sample rate.
//!
//! The format is recognised from the bytes (symphonia's probe), never from the
//! file name: archives contain WAV files named `.mp3`. Decoding is pull-based,
//! one packet at a time, so a two-hour recording never sits in memory whole.
//! Channels are averaged into mono here, before resampling, exactly as
//! librosa's `to_mono` does before it resamples.

use std::io::{Read, Seek, SeekFrom};

use serde::Serialize;
use symphonia::core::codecs::audio::{AudioDecoder, AudioDecoderOptions};
use symphonia::core::errors::Error as SymError;
use symphonia::core::formats::probe::Hint;
use symphonia::core::formats::{FormatOptions, FormatReader, TrackType};
use symphonia::core::io::{MediaSource, MediaSourceStream};
use symphonia::core::meta::MetadataOptions;

use crate::error::AudioError;

/// Lowest sample rate we analyse. Below this no bird song survives anyway,
/// and absurd rates (1 Hz) would make the resampler allocate gigabytes.
pub const MIN_SAMPLE_RATE: u32 = 1_000;
/// Highest sample rate we analyse (ultrasonic recorders go to 384 kHz).
pub const MAX_SAMPLE_RATE: u32 = 1_536_000;
/// More channels than any microphone array we expect; guards the downmix
/// buffers against a header claiming 65 535 channels.
pub const MAX_CHANNELS: usize = 64;
/// Consecutive undecodable packets tolerated (and skipped) before the stream
/// is declared corrupt. Real MP3 archives contain the odd damaged frame.
const MAX_CONSECUTIVE_DECODE_ERRORS: usize = 16;

/// What a file is, as far as its content tells.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct AudioInfo {
    /// Container format detected from the content: "wav", "mp3", "flac",
    /// "ogg", "m4a", "aiff", …
    pub format: String,
    /// Codec of the audio track, e.g. "pcm_s16le", "mp3", "vorbis", "aac".
    pub codec: String,
    /// Native sample rate in Hz (before resampling to the analysis rate).
    pub sample_rate: u32,
    /// Native channel count (before the downmix to mono).
    pub channels: u16,
    /// Duration in seconds. From the header in [`crate::probe`] (or a scan of
    /// the packets when the header has none); from the decoded samples in
    /// [`crate::Analysis`].
    pub duration_s: f64,
}

/// A `Read + Seek` adaptor that tells symphonia the stream length, so that
/// readers can find trailing metadata and bound their reads.
struct SeekableSource<R> {
    inner: R,
    len: Option<u64>,
}

impl<R: Read + Seek> SeekableSource<R> {
    fn new(mut inner: R) -> std::io::Result<Self> {
        let pos = inner.stream_position()?;
        let end = inner.seek(SeekFrom::End(0))?;
        inner.seek(SeekFrom::Start(pos))?;
        Ok(SeekableSource {
            inner,
            len: Some(end.saturating_sub(pos)),
        })
    }
}

impl<R: Read> Read for SeekableSource<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.inner.read(buf)
    }
}

impl<R: Seek> Seek for SeekableSource<R> {
    fn seek(&mut self, pos: SeekFrom) -> std::io::Result<u64> {
        self.inner.seek(pos)
    }
}

impl<R: Read + Seek + Send + Sync> MediaSource for SeekableSource<R> {
    fn is_seekable(&self) -> bool {
        true
    }
    fn byte_len(&self) -> Option<u64> {
        self.len
    }
}

/// Wraps any seekable reader as a symphonia media source.
pub(crate) fn source_from_reader<R>(reader: R) -> Result<Box<dyn MediaSource>, AudioError>
where
    R: Read + Seek + Send + Sync + 'static,
{
    Ok(Box::new(SeekableSource::new(reader)?))
}

fn format_name(short: &str) -> String {
    match short {
        "wave" => "wav".to_owned(),
        "isomp4" => "m4a".to_owned(),
        other => other.to_owned(),
    }
}

/// Pulls packets, decodes them and appends mono samples at the native rate.
pub struct Decoder {
    format: Box<dyn FormatReader>,
    decoder: Box<dyn AudioDecoder>,
    track_id: u32,
    info: AudioInfo,
    header_frames: Option<u64>,
    open_ended: bool,
    frames_decoded: u64,
    planar: Vec<Vec<f32>>,
    finished: bool,
}

fn map_open_error(err: SymError) -> AudioError {
    match err {
        SymError::IoError(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
            AudioError::NotAudio
        }
        SymError::IoError(e) => AudioError::Io(e),
        SymError::Unsupported(what) if what.contains("no suitable format reader") => {
            AudioError::NotAudio
        }
        SymError::Unsupported(what) => AudioError::UnsupportedCodec(what.to_owned()),
        SymError::DecodeError(what) => AudioError::Corrupt(what.to_owned()),
        SymError::LimitError(what) => AudioError::Corrupt(format!("limit reached: {what}")),
        _ => AudioError::Corrupt("could not read the stream headers".to_owned()),
    }
}

impl Decoder {
    /// Opens a media source: probes the format from its content, picks the
    /// first audio track and builds its decoder. Reads only the headers.
    pub fn open(mut source: Box<dyn MediaSource>) -> Result<Self, AudioError> {
        let wav_channels = sniff_wav_channels(&mut source);
        // Checked before symphonia sees the header: its WAV reader multiplies
        // the channel count in 16 bits (65 535 channels overflow; found by
        // the fuzz target).
        match wav_channels {
            Some(0) => return Err(AudioError::ZeroChannels),
            Some(n) if usize::from(n) > MAX_CHANNELS => {
                return Err(AudioError::TooManyChannels(usize::from(n)));
            }
            _ => {}
        }
        let mss = MediaSourceStream::new(source, Default::default());
        let probed = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            symphonia::default::get_probe().probe(
                &Hint::new(),
                mss,
                FormatOptions::default(),
                MetadataOptions::default(),
            )
        }))
        .map_err(|_| AudioError::Corrupt("the headers could not be parsed".to_owned()))?;
        let format = probed.map_err(|e| match (e, wav_channels) {
            (SymError::DecodeError(m), Some(0)) if m.contains("channel count") => {
                AudioError::ZeroChannels
            }
            (SymError::DecodeError(m), Some(n)) if m.contains("channel count") => {
                AudioError::TooManyChannels(usize::from(n))
            }
            (e, _) => map_open_error(e),
        })?;
        let track = format
            .default_track(TrackType::Audio)
            .or_else(|| format.first_track(TrackType::Audio))
            .ok_or(AudioError::NoAudioTrack)?;
        let params = track
            .codec_params
            .as_ref()
            .and_then(|p| p.audio())
            .ok_or(AudioError::NoAudioTrack)?
            .clone();
        let track_id = track.id;
        let header_frames = track.num_frames;
        // Without an announced length (a WAV written by a recorder that never
        // finalised its header says 0xFFFFFFFF bytes; MP3 without a Xing
        // header), the real length is wherever the data ends, so reaching
        // the end of the file mid-packet is the normal end, not truncation.
        let open_ended = header_frames.is_none();
        let mut opts = AudioDecoderOptions::default();
        opts.gapless = true;
        let decoder = symphonia::default::get_codecs()
            .make_audio_decoder(&params, &opts)
            .map_err(|e| match e {
                SymError::Unsupported(what) => AudioError::UnsupportedCodec(what.to_owned()),
                other => map_open_error(other),
            })?;
        let channels = match &params.channels {
            Some(ch) => {
                let n = ch.count();
                if n == 0 {
                    return Err(AudioError::ZeroChannels);
                }
                n
            }
            None => 0,
        };
        if channels > MAX_CHANNELS {
            return Err(AudioError::TooManyChannels(channels));
        }
        let sample_rate = params.sample_rate.unwrap_or(0);
        if sample_rate != 0 {
            check_rate(sample_rate)?;
        }
        let info = AudioInfo {
            format: format_name(format.format_info().short_name),
            codec: decoder.codec_info().short_name.to_owned(),
            sample_rate,
            channels: u16::try_from(channels).unwrap_or(u16::MAX),
            duration_s: match (header_frames, sample_rate) {
                (Some(n), sr) if sr > 0 => n as f64 / f64::from(sr),
                _ => f64::NAN,
            },
        };
        Ok(Decoder {
            format,
            decoder,
            track_id,
            info,
            header_frames,
            open_ended,
            frames_decoded: 0,
            planar: Vec::new(),
            finished: false,
        })
    }

    /// What the headers (and the packets decoded so far) say.
    pub fn info(&self) -> &AudioInfo {
        &self.info
    }

    /// Frames (samples per channel) decoded so far.
    pub fn frames_decoded(&self) -> u64 {
        self.frames_decoded
    }

    /// Frame count announced by the header, if any.
    pub fn header_frames(&self) -> Option<u64> {
        self.header_frames
    }

    fn decoded_seconds(&self) -> f64 {
        if self.info.sample_rate == 0 {
            0.0
        } else {
            self.frames_decoded as f64 / f64::from(self.info.sample_rate)
        }
    }

    fn broken(&self, detail: String) -> AudioError {
        if self.frames_decoded == 0 {
            AudioError::Corrupt(detail)
        } else {
            AudioError::Truncated {
                at_s: self.decoded_seconds(),
                detail,
            }
        }
    }

    /// At the end of the stream: a header that announced more audio than
    /// there was means the file was cut short (a truncated MP3 just ends,
    /// frame by frame, without any decoding error).
    fn check_complete(&self) -> Result<bool, AudioError> {
        if let Some(announced) = self.header_frames {
            let sr = u64::from(self.info.sample_rate);
            // Encoders' frame counts are often slightly off (one xeno-canto
            // MP3 announces 0.1 s more than any decoder finds, libsndfile
            // included): a shortfall under half a second is accepted.
            let slack = (sr / 2).max(2304);
            if self.frames_decoded.saturating_add(slack) < announced {
                return Err(AudioError::Truncated {
                    at_s: self.decoded_seconds(),
                    detail: format!(
                        "the header announces {:.1} s",
                        announced as f64 / sr.max(1) as f64
                    ),
                });
            }
        }
        Ok(false)
    }

    /// Decodes the next packet of the audio track and appends its samples,
    /// averaged over channels, to `out`. Returns `Ok(false)` at the end of
    /// the stream. Undecodable packets are skipped, up to a limit.
    pub fn next_into(&mut self, out: &mut Vec<f32>) -> Result<bool, AudioError> {
        let mut consecutive_errors = 0usize;
        loop {
            if self.finished {
                return Ok(false);
            }
            let packet = match self.format.next_packet() {
                Ok(Some(p)) => p,
                Ok(None) | Err(SymError::ResetRequired) => {
                    self.finished = true;
                    return self.check_complete();
                }
                Err(SymError::IoError(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                    self.finished = true;
                    if self.open_ended {
                        return Ok(false);
                    }
                    return Err(self.broken("the file ends in the middle of the data".to_owned()));
                }
                Err(SymError::IoError(e)) => return Err(AudioError::Io(e)),
                Err(e) => {
                    self.finished = true;
                    return Err(self.broken(e.to_string()));
                }
            };
            if packet.track_id != self.track_id {
                continue;
            }
            // A decoder bug must not take the worker down: a panic on hostile
            // data (symphonia is not fuzzed for every codec) fails the file.
            let decoded = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                self.decoder.decode(&packet).map(|buf| {
                    let spec = buf.spec().clone();
                    let frames = buf.frames();
                    if frames > 0 {
                        buf.copy_to_vecs_planar::<f32>(&mut self.planar);
                    }
                    (spec, frames)
                })
            }));
            let decoded = match decoded {
                Ok(r) => r,
                Err(_) => {
                    self.finished = true;
                    return Err(self.broken("the decoder failed on this data".to_owned()));
                }
            };
            match decoded {
                Ok((spec, frames)) => {
                    let rate = spec.rate();
                    let nch = spec.channels().count();
                    if self.info.sample_rate == 0 {
                        check_rate(rate)?;
                        self.info.sample_rate = rate;
                    } else if rate != self.info.sample_rate {
                        self.finished = true;
                        return Err(self.broken(format!(
                            "sample rate changes from {} to {rate} Hz mid-stream",
                            self.info.sample_rate
                        )));
                    }
                    if nch == 0 {
                        return Err(AudioError::ZeroChannels);
                    }
                    if nch > MAX_CHANNELS {
                        return Err(AudioError::TooManyChannels(nch));
                    }
                    if self.info.channels == 0 {
                        self.info.channels = u16::try_from(nch).unwrap_or(u16::MAX);
                    }
                    if frames == 0 {
                        continue;
                    }
                    let start = out.len();
                    downmix(&self.planar[..nch.min(self.planar.len())], frames, out);
                    // Float formats can carry NaN or infinity; no feature is
                    // defined on them (librosa refuses such buffers too).
                    if !out[start..].iter().all(|x| x.is_finite()) {
                        self.finished = true;
                        return Err(AudioError::Corrupt(format!(
                            "non-finite sample values at {:.1} s",
                            self.decoded_seconds()
                        )));
                    }
                    self.frames_decoded += frames as u64;
                    return Ok(true);
                }
                Err(SymError::DecodeError(what)) => {
                    consecutive_errors += 1;
                    if consecutive_errors > MAX_CONSECUTIVE_DECODE_ERRORS {
                        self.finished = true;
                        return Err(self.broken(format!("undecodable packets: {what}")));
                    }
                }
                Err(SymError::IoError(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                    self.finished = true;
                    return Err(self.broken("a packet ends early".to_owned()));
                }
                Err(SymError::IoError(e)) => return Err(AudioError::Io(e)),
                Err(SymError::Unsupported(what)) => {
                    return Err(AudioError::UnsupportedCodec(what.to_owned()));
                }
                Err(SymError::ResetRequired) => {
                    self.finished = true;
                    return Ok(false);
                }
                Err(e) => {
                    self.finished = true;
                    return Err(self.broken(e.to_string()));
                }
            }
        }
    }

    /// Demuxes (without decoding) to the end to count frames, for headers
    /// that do not state a length. Consumes the decoder.
    pub(crate) fn scan_duration(mut self) -> Result<AudioInfo, AudioError> {
        let mut frames: u64 = 0;
        loop {
            match self.format.next_packet() {
                Ok(Some(p)) if p.track_id == self.track_id => {
                    frames = frames.saturating_add(p.dur.get());
                }
                Ok(Some(_)) => {}
                Ok(None) | Err(_) => break,
            }
        }
        if self.info.sample_rate > 0 {
            self.info.duration_s = frames as f64 / f64::from(self.info.sample_rate);
        }
        Ok(self.info)
    }
}

/// How far [`sniff_wav_channels`] looks for a WAV header. symphonia's probe
/// scans up to 1 MB for a format marker, so a RIFF header can sit behind
/// junk (a fuzzed input hid one behind an MP3 frame header at byte 17); this
/// covers every input the fuzz target tries, and release builds, where the
/// multiplication wraps instead of panicking, are guarded by `catch_unwind`.
const WAV_SNIFF_BYTES: usize = 64 * 1024;

/// The channel count of the first WAV `fmt ` chunk in the first
/// [`WAV_SNIFF_BYTES`] (symphonia reports 0 and "too many" channels alike);
/// rewinds the source.
fn sniff_wav_channels(source: &mut Box<dyn MediaSource>) -> Option<u16> {
    let mut head = vec![0u8; WAV_SNIFF_BYTES];
    let mut n = 0;
    while n < head.len() {
        match source.read(&mut head[n..]) {
            Ok(0) | Err(_) => break,
            Ok(k) => n += k,
        }
    }
    source.seek(SeekFrom::Start(0)).ok()?;
    let head = &head[..n];
    let riff = head
        .windows(12)
        .position(|w| &w[0..4] == b"RIFF" && &w[8..12] == b"WAVE")?;
    let chunks = &head[riff + 12..];
    let pos = chunks.windows(4).position(|w| w == b"fmt ")?;
    let ch = chunks.get(pos + 10..pos + 12)?;
    Some(u16::from_le_bytes([ch[0], ch[1]]))
}

fn check_rate(rate: u32) -> Result<(), AudioError> {
    if (MIN_SAMPLE_RATE..=MAX_SAMPLE_RATE).contains(&rate) {
        Ok(())
    } else {
        Err(AudioError::InvalidSampleRate(rate))
    }
}

/// Averages channel planes into mono, as `numpy.mean(y, axis=0)` in float32.
fn downmix(planes: &[Vec<f32>], frames: usize, out: &mut Vec<f32>) {
    match planes {
        [] => {}
        [mono] => out.extend_from_slice(&mono[..frames.min(mono.len())]),
        [l, r] => out.extend(
            l.iter()
                .zip(r.iter())
                .take(frames)
                .map(|(a, b)| (a + b) / 2.0),
        ),
        many => {
            let n = many.len() as f32;
            let start = out.len();
            out.extend_from_slice(&many[0][..frames.min(many[0].len())]);
            let len = out.len() - start;
            for plane in &many[1..] {
                for (o, s) in out[start..].iter_mut().zip(plane.iter()) {
                    *o += *s;
                }
            }
            for o in &mut out[start..start + len] {
                *o /= n;
            }
        }
    }
}
