//! When, where and on what a recording was made, as its WAV header says.
//!
//! Recorders write this into the file: GUANO (`guan` chunk: start time with
//! its UTC offset, position, make, model, serial) and AudioMoth (the `ICMT`
//! comment: start time and zone, serial). The header is the best source there
//! is: it travels with the bytes through renames and copies, and carries the
//! zone that a file name leaves out. Only the chunk headers and the small
//! metadata chunks are read, by seeking ([`riff`]), so a multi-gigabyte file
//! costs a few reads. Files are untrusted: malformed input is an error or
//! `None`, never a panic, and every size is bounded.

mod audiomoth;
mod guano;
mod riff;

use std::collections::BTreeMap;
use std::io::{Read, Seek};
use std::path::Path;

pub use guano::{MAX_OFFSET_MINUTES, parse_offset};
pub use riff::MAX_METADATA_CHUNK;

use crate::recorded::StartTime;

/// Why a header could not be read.
#[derive(Debug, thiserror::Error)]
pub enum WavMetadataError {
    #[error("reading the file: {0}")]
    Io(#[from] std::io::Error),
    #[error("the {chunk:?} chunk runs past the end of the file")]
    Truncated { chunk: String },
}

/// Which header a start time came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeaderSource {
    Guano,
    AudioMoth,
}

impl HeaderSource {
    /// The `audio_files.recorded_at_source` value.
    pub fn as_str(self) -> &'static str {
        match self {
            HeaderSource::Guano => "guano",
            HeaderSource::AudioMoth => "audiomoth",
        }
    }
}

/// What a WAV header says about its recording; every field is optional.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HeaderMetadata {
    /// The start of the recording and the header it came from.
    pub recorded_at: Option<(StartTime, HeaderSource)>,
    /// WGS84 latitude and longitude, in degrees.
    pub position: Option<(f64, f64)>,
    /// The recorder's make and model (`Wildlife Acoustics, Inc. Song Meter
    /// Mini`, `AudioMoth`).
    pub device: Option<String>,
    pub serial: Option<String>,
    /// Every field read, for what has no column: `{"guano": {key: value},
    /// "info": {"ICMT": …, "IART": …}}`.
    pub raw: serde_json::Value,
}

impl HeaderMetadata {
    /// Whether the header said anything at all.
    pub fn is_empty(&self) -> bool {
        self.raw.as_object().is_none_or(|o| o.is_empty())
    }
}

/// Reads the metadata of a RIFF/WAVE file; `Ok(None)` for other formats.
pub fn read<R: Read + Seek>(reader: &mut R) -> Result<Option<HeaderMetadata>, WavMetadataError> {
    let Some(chunks) = riff::read_chunks(reader)? else {
        return Ok(None);
    };
    let guano = chunks
        .guano
        .as_deref()
        .and_then(|bytes| guano::parse_fields(&String::from_utf8_lossy(bytes)));
    let info: BTreeMap<String, String> = chunks
        .info
        .iter()
        .filter_map(|(id, text)| {
            let id = std::str::from_utf8(id).ok()?;
            let text = String::from_utf8_lossy(text);
            let text = text.trim_matches(|c: char| c == '\0' || c.is_whitespace());
            Some((id.to_string(), text.to_string()))
        })
        .collect();
    Ok(Some(interpret(guano.as_ref(), &info)))
}

/// Reads the metadata of the file at `path`; `Ok(None)` when it is not WAV.
pub fn read_path(path: &Path) -> Result<Option<HeaderMetadata>, WavMetadataError> {
    let mut file = std::io::BufReader::with_capacity(4096, std::fs::File::open(path)?);
    read(&mut file)
}

/// GUANO first (it names its zone and its fields), AudioMoth's comment for
/// whatever GUANO left open.
fn interpret(
    guano: Option<&BTreeMap<String, String>>,
    info: &BTreeMap<String, String>,
) -> HeaderMetadata {
    let field = |key: &str| {
        guano
            .and_then(|g| g.get(key))
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    };
    let mut meta = HeaderMetadata {
        recorded_at: field("Timestamp")
            .and_then(guano::parse_timestamp)
            .map(|t| (t, HeaderSource::Guano)),
        position: field("Loc Position").and_then(guano::parse_position),
        device: match (field("Make"), field("Model")) {
            (Some(make), Some(model)) => Some(format!("{make} {model}")),
            (make, model) => make.or(model).map(str::to_string),
        },
        serial: field("Serial").map(str::to_string),
        raw: serde_json::Value::Object(serde_json::Map::new()),
    };
    let comment = info.get("ICMT").map(String::as_str);
    let artist = info.get("IART").map(String::as_str);
    if audiomoth::is_audiomoth(comment, artist) {
        if meta.recorded_at.is_none() {
            meta.recorded_at = comment
                .and_then(audiomoth::parse_time)
                .map(|t| (t, HeaderSource::AudioMoth));
        }
        meta.device.get_or_insert_with(|| "AudioMoth".to_string());
        if meta.serial.is_none() {
            meta.serial = audiomoth::serial(comment, artist);
        }
    }
    let mut raw = serde_json::Map::new();
    if let Some(g) = guano {
        raw.insert("guano".into(), serde_json::json!(g));
    }
    if !info.is_empty() {
        raw.insert("info".into(), serde_json::json!(info));
    }
    meta.raw = serde_json::Value::Object(raw);
    meta
}

#[cfg(test)]
mod tests;
