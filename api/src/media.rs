//! A stretch of a stored recording, as sound and as a picture.
//!
//! `GET /v1/files/{sha256}/audio` answers a 16-bit mono WAV of `start..end`
//! and `GET /v1/files/{sha256}/spectrogram` the 128-band mel spectrogram
//! (dB) of the same stretch, so that a person checking a detection can hear
//! and see the window the model called. Both decode the stored object with
//! the audio library (the same decoder the workers use, so what is played is
//! what was classified), and both are held to [`MAX_RANGE_S`]: a request can
//! never make the API decode and send a whole two-hour recording at once.

use std::io::Cursor;

use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use birdsong_audio::decode::Decoder;
use birdsong_audio::resample::MonoResampler;
use birdsong_audio::{ANALYSIS_SAMPLE_RATE, AudioError, N_MELS};
use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::AppState;
use crate::extract::{ApiPath, ApiQuery};
use crate::problem::{ApiResult, Problem};
use schemars::JsonSchema;

/// Longest stretch one request may ask for, in seconds.
pub const MAX_RANGE_S: f64 = 30.0;

/// Hop of the spectrogram's frames, in samples at the analysis rate (the
/// audio library's STFT hop).
const HOP_LENGTH: usize = 512;

/// `start` and `end`, in seconds from the beginning of the recording.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RangeQuery {
    /// Seconds from the beginning (default 0).
    #[schemars(range(min = 0.0))]
    pub start: Option<f64>,
    /// Seconds from the beginning (default `start` + 5; at most 30 s after
    /// `start`).
    #[schemars(range(min = 0.0))]
    pub end: Option<f64>,
}

/// A checked stretch of a known recording.
struct Stretch {
    object_key: String,
    start_s: f64,
    end_s: f64,
}

/// Checks the id and the range against the recording's duration; 400 for a
/// malformed id, 404 for an unknown recording, 422 for a range that is
/// empty, negative, longer than [`MAX_RANGE_S`] or past the end.
async fn stretch(state: &AppState, sha: &str, q: &RangeQuery) -> Result<Stretch, Problem> {
    if !birdsong_common::store::is_sha256_hex(sha) {
        return Err(Problem::bad_request(
            "invalid-id",
            "a recording is named by the SHA-256 of its bytes: 64 lower-case hex characters",
        ));
    }
    let row: Option<(String, Option<f64>)> =
        sqlx::query_as("SELECT object_key, duration_s FROM audio_files WHERE sha256 = $1")
            .bind(sha)
            .fetch_optional(&state.pool)
            .await?;
    let (object_key, duration) =
        row.ok_or_else(|| Problem::not_found(format!("there is no recording {sha}")))?;
    let start_s = q.start.unwrap_or(0.0);
    let end_s = q.end.unwrap_or(start_s + 5.0);
    let bad = |detail: String| Problem::unprocessable("invalid-range", detail);
    if !start_s.is_finite() || !end_s.is_finite() || start_s < 0.0 {
        return Err(bad(
            "start and end must be finite and start at least 0".into()
        ));
    }
    if end_s <= start_s {
        return Err(bad(format!(
            "end ({end_s}) must be after start ({start_s})"
        )));
    }
    if end_s - start_s > MAX_RANGE_S {
        return Err(bad(format!(
            "at most {MAX_RANGE_S} s can be asked for at once (asked for {:.1} s)",
            end_s - start_s
        )));
    }
    let duration = duration.unwrap_or(f64::INFINITY);
    if start_s >= duration {
        return Err(bad(format!(
            "the recording lasts {duration:.2} s; start {start_s} is past its end"
        )));
    }
    Ok(Stretch {
        object_key,
        start_s,
        end_s: end_s.min(duration),
    })
}

/// Mono samples of `start_s..end_s` at the recording's own rate, decoding
/// only up to `end_s`.
fn decode_range(bytes: Bytes, start_s: f64, end_s: f64) -> Result<(Vec<f32>, u32), AudioError> {
    let mut decoder = Decoder::open(Box::new(Cursor::new(bytes)))?;
    let mut native = Vec::new();
    let mut kept = Vec::new();
    let mut seen: u64 = 0;
    loop {
        native.clear();
        let more = decoder.next_into(&mut native)?;
        let rate = f64::from(decoder.info().sample_rate.max(1));
        let (first, last) = ((start_s * rate) as u64, (end_s * rate).ceil() as u64);
        let chunk_start = seen;
        seen += native.len() as u64;
        let a = first.saturating_sub(chunk_start).min(native.len() as u64) as usize;
        let b = last.saturating_sub(chunk_start).min(native.len() as u64) as usize;
        if a < b {
            kept.extend_from_slice(&native[a..b]);
        }
        if !more || seen >= last {
            break;
        }
    }
    Ok((kept, decoder.info().sample_rate))
}

async fn load(state: &AppState, s: &Stretch) -> Result<(Vec<f32>, u32), Problem> {
    let bytes = state.store.get(&s.object_key).await.map_err(|e| {
        Problem::unavailable(
            "object-store",
            format!("the recording could not be read from the object store: {e}"),
        )
    })?;
    let (start_s, end_s) = (s.start_s, s.end_s);
    tokio::task::spawn_blocking(move || decode_range(bytes, start_s, end_s))
        .await
        .map_err(|e| Problem::internal("decoding", e))?
        .map_err(|e| {
            Problem::unprocessable(
                "undecodable",
                format!("the recording could not be decoded: {e}"),
            )
        })
}

/// `GET /v1/files/{sha256}/audio?start=&end=`: the stretch as a WAV at the
/// recording's own sample rate.
pub async fn audio(
    State(state): State<AppState>,
    ApiPath(sha): ApiPath<String>,
    ApiQuery(q): ApiQuery<RangeQuery>,
) -> ApiResult<Response> {
    let s = stretch(&state, &sha, &q).await?;
    let (samples, rate) = load(&state, &s).await?;
    let mut response = birdsong_audio::wav::pcm16_mono(&samples, rate).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("audio/wav"));
    // A stored recording never changes (it is named by its hash).
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("private, max-age=86400, immutable"),
    );
    Ok(response)
}

/// The mel spectrogram of a stretch.
#[derive(Debug, Serialize, JsonSchema)]
pub struct Spectrogram {
    pub start_s: f64,
    pub end_s: f64,
    pub sample_rate: u32,
    pub hop_length: usize,
    pub n_mels: usize,
    pub frames: usize,
    /// Lowest and highest value in `db` (the top is 0 dB: the values are
    /// relative to the stretch's maximum, floored 80 dB below it).
    pub min_db: f32,
    pub max_db: f32,
    /// `db[band][frame]`, band 0 the lowest frequency, rounded to 0.1 dB.
    pub db: Vec<Vec<f32>>,
}

/// `GET /v1/files/{sha256}/spectrogram?start=&end=`: the 128-band mel
/// spectrogram in dB of the stretch, at the analysis rate.
pub async fn spectrogram(
    State(state): State<AppState>,
    ApiPath(sha): ApiPath<String>,
    ApiQuery(q): ApiQuery<RangeQuery>,
) -> ApiResult<axum::Json<Spectrogram>> {
    let s = stretch(&state, &sha, &q).await?;
    let (samples, rate) = load(&state, &s).await?;
    let (start_s, end_s) = (s.start_s, s.end_s);
    let spec = tokio::task::spawn_blocking(move || {
        let mut resampler = MonoResampler::new(rate, ANALYSIS_SAMPLE_RATE)?;
        let mut y = Vec::with_capacity(samples.len());
        resampler.push(&samples, &mut y)?;
        resampler.finish(&mut y)?;
        let mel = birdsong_audio::mel_spectrogram_db(&y);
        let (bands, frames) = mel.dim();
        let mut min_db = f32::INFINITY;
        let mut max_db = f32::NEG_INFINITY;
        let db = (0..bands)
            .map(|b| {
                (0..frames)
                    .map(|f| {
                        let v = mel[[b, f]];
                        min_db = min_db.min(v);
                        max_db = max_db.max(v);
                        (v * 10.0).round() / 10.0
                    })
                    .collect()
            })
            .collect();
        Ok::<_, AudioError>(Spectrogram {
            start_s,
            end_s,
            sample_rate: ANALYSIS_SAMPLE_RATE,
            hop_length: HOP_LENGTH,
            n_mels: N_MELS,
            frames,
            min_db: if min_db.is_finite() { min_db } else { 0.0 },
            max_db: if max_db.is_finite() { max_db } else { 0.0 },
            db,
        })
    })
    .await
    .map_err(|e| Problem::internal("computing a spectrogram", e))?
    .map_err(|e| {
        Problem::unprocessable(
            "undecodable",
            format!("the spectrogram could not be computed: {e}"),
        )
    })?;
    Ok(axum::Json(spec))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wav_header_and_samples() {
        let wav = birdsong_audio::wav::pcm16_mono(&[0.0, 1.0, -1.0, 2.0], 8000);
        assert_eq!(&wav[0..4], b"RIFF");
        assert_eq!(wav.len(), 44 + 8);
        assert_eq!(
            u32::from_le_bytes([wav[24], wav[25], wav[26], wav[27]]),
            8000
        );
        assert_eq!(i16::from_le_bytes([wav[46], wav[47]]), i16::MAX);
        assert_eq!(i16::from_le_bytes([wav[48], wav[49]]), -i16::MAX);
        assert_eq!(i16::from_le_bytes([wav[50], wav[51]]), i16::MAX);
    }

    #[test]
    fn decodes_only_the_range() {
        let rate = 8000u32;
        let samples: Vec<f32> = (0..rate * 3)
            .map(|i| (i as f32 / 1000.0).sin() * 0.5)
            .collect();
        let wav = birdsong_audio::wav::pcm16_mono(&samples, rate);
        let (got, r) = decode_range(Bytes::from(wav), 1.0, 2.0).unwrap();
        assert_eq!(r, rate);
        assert_eq!(got.len(), rate as usize);
        assert!((got[0] - samples[rate as usize]).abs() < 1e-3);
    }
}
