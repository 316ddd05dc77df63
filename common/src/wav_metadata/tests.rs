//! Headers as recorders write them, built byte by byte, and the ways a file
//! can be broken.

use std::io::{self, Cursor, Read, Seek, SeekFrom};

use chrono::{DateTime, FixedOffset};

use super::*;
use crate::recorded::StartTime;

/// A RIFF chunk: id, little-endian size, payload, pad byte when odd.
fn chunk(id: &[u8; 4], payload: &[u8]) -> Vec<u8> {
    let mut out = id.to_vec();
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(payload);
    if payload.len() % 2 == 1 {
        out.push(0);
    }
    out
}

/// `fmt ` of 16-bit mono PCM at `rate`.
fn fmt_chunk(rate: u32) -> Vec<u8> {
    let mut fmt = Vec::new();
    fmt.extend_from_slice(&1u16.to_le_bytes()); // PCM
    fmt.extend_from_slice(&1u16.to_le_bytes()); // channels
    fmt.extend_from_slice(&rate.to_le_bytes());
    fmt.extend_from_slice(&(rate * 2).to_le_bytes()); // bytes per second
    fmt.extend_from_slice(&2u16.to_le_bytes()); // block align
    fmt.extend_from_slice(&16u16.to_le_bytes()); // bits per sample
    chunk(b"fmt ", &fmt)
}

fn data_chunk(samples: usize) -> Vec<u8> {
    let pcm: Vec<u8> = (0..samples)
        .flat_map(|i| (((i as f32 * 0.05).sin() * 8000.0) as i16).to_le_bytes())
        .collect();
    chunk(b"data", &pcm)
}

fn riff(chunks: &[Vec<u8>]) -> Vec<u8> {
    let body: Vec<u8> = chunks.concat();
    let mut out = b"RIFF".to_vec();
    out.extend_from_slice(&((body.len() + 4) as u32).to_le_bytes());
    out.extend_from_slice(b"WAVE");
    out.extend_from_slice(&body);
    out
}

/// A `LIST`/`INFO` chunk of fixed-size, NUL-padded fields, as AudioMoth's
/// firmware lays out its header.
fn info_list(fields: &[(&[u8; 4], &str, usize)]) -> Vec<u8> {
    let mut list = b"INFO".to_vec();
    for (id, text, width) in fields {
        let mut bytes = text.as_bytes().to_vec();
        bytes.resize((*width).max(bytes.len() + 1), 0);
        list.extend_from_slice(&chunk(id, &bytes));
    }
    chunk(b"LIST", &list)
}

/// An AudioMoth file: RIFF, fmt, LIST/INFO (ICMT, IART), data.
pub(crate) fn audiomoth_wav(comment: &str, artist: &str) -> Vec<u8> {
    riff(&[
        fmt_chunk(48_000),
        info_list(&[(b"ICMT", comment, 384), (b"IART", artist, 32)]),
        data_chunk(4_800),
    ])
}

/// A Song Meter-style file: RIFF, fmt, data, then the `guan` chunk at the end.
pub(crate) fn guano_wav(guano: &str) -> Vec<u8> {
    riff(&[
        fmt_chunk(24_000),
        data_chunk(2_400),
        chunk(b"guan", guano.as_bytes()),
    ])
}

fn read_bytes(bytes: &[u8]) -> Result<Option<HeaderMetadata>, WavMetadataError> {
    read(&mut Cursor::new(bytes))
}

fn zoned(s: &str) -> StartTime {
    StartTime::Zoned(DateTime::<FixedOffset>::parse_from_rfc3339(s).unwrap())
}

const AUDIOMOTH_COMMENT: &str = "Recorded at 05:30:00 01/05/2024 (UTC+1) by AudioMoth 24F319055FDF1D8D at medium gain while battery was 4.2V and temperature was 15.3C.";

#[test]
fn audiomoth_comment_gives_time_zone_and_serial() {
    let wav = audiomoth_wav(AUDIOMOTH_COMMENT, "AudioMoth 24F319055FDF1D8D");
    let meta = read_bytes(&wav).unwrap().unwrap();
    let (time, source) = meta.recorded_at.unwrap();
    assert_eq!(source, HeaderSource::AudioMoth);
    // The comment shows the clock at UTC+1: 05:30 there is 04:30 UTC.
    assert_eq!(time, zoned("2024-05-01T05:30:00+01:00"));
    let StartTime::Zoned(t) = time else { panic!() };
    assert_eq!(t.to_utc().to_rfc3339(), "2024-05-01T04:30:00+00:00");
    assert_eq!(meta.device.as_deref(), Some("AudioMoth"));
    assert_eq!(meta.serial.as_deref(), Some("24F319055FDF1D8D"));
    assert_eq!(meta.position, None);
    assert_eq!(meta.raw["info"]["IART"], "AudioMoth 24F319055FDF1D8D");
    assert_eq!(meta.raw["info"]["ICMT"], AUDIOMOTH_COMMENT);
}

#[test]
fn every_audiomoth_zone_form_is_read() {
    for (zone, expected) in [
        ("(UTC)", "2024-05-01T05:30:00+00:00"),
        ("(UTC-5)", "2024-05-01T05:30:00-05:00"),
        ("(UTC+5:30)", "2024-05-01T05:30:00+05:30"),
        ("(UTC+10)", "2024-05-01T05:30:00+10:00"),
        ("(UTC-0:30)", "2024-05-01T05:30:00-00:30"),
        ("(UTC+0:45)", "2024-05-01T05:30:00+00:45"),
    ] {
        let comment = format!(
            "Recorded at 05:30:00 01/05/2024 {zone} by AudioMoth 0FE081F80FE081F0 at gain setting 2 while battery state was 4.6V."
        );
        let wav = audiomoth_wav(&comment, "AudioMoth 0FE081F80FE081F0");
        let meta = read_bytes(&wav).unwrap().unwrap();
        assert_eq!(
            meta.recorded_at.map(|t| t.0),
            Some(zoned(expected)),
            "{zone}"
        );
    }
    // The first firmware wrote no zone: its clock was UTC.
    let old = "Recorded at 21:15:02 31/12/2017 by AudioMoth 0FE081F80FE081F0 at gain setting 2 while battery state was 4.6V";
    let meta = read_bytes(&audiomoth_wav(old, "")).unwrap().unwrap();
    assert_eq!(
        meta.recorded_at.map(|t| t.0),
        Some(zoned("2017-12-31T21:15:02Z"))
    );
    assert_eq!(meta.serial.as_deref(), Some("0FE081F80FE081F0"));
}

#[test]
fn an_audiomoth_deployment_names_its_serial_in_the_artist_field() {
    let comment = "Recorded at 19:30:00 09/08/2025 (UTC-5) during deployment 1A2B3C4D5E6F7A8B at medium gain while battery was 4.5V and temperature was 12.3C.";
    let meta = read_bytes(&audiomoth_wav(comment, "AudioMoth 248D9B04645707D7"))
        .unwrap()
        .unwrap();
    assert_eq!(meta.serial.as_deref(), Some("248D9B04645707D7"));
    assert_eq!(
        meta.recorded_at.map(|t| t.0),
        Some(zoned("2025-08-09T19:30:00-05:00"))
    );
}

#[test]
fn a_song_meter_guano_block_at_the_end_gives_time_place_and_device() {
    let guano = "GUANO|Version:1.0\nFirmware Version:1.1\nMake:Wildlife Acoustics, Inc.\nModel:Song Meter Mini\nSerial:SMA00646\nWA|Song Meter|Prefix:SMA00646\nWA|Song Meter|Audio settings:[{\"rate\":24000,\"gain\":18}]\nLength:300.000\nOriginal Filename:SMA00646_20201017_130500.wav\nTimestamp:2020-10-17 13:05:00+1:00\nLoc Position:54.75656 -1.59106\nTemperature Int:21.25\nSamplerate:24000 \n";
    let meta = read_bytes(&guano_wav(guano)).unwrap().unwrap();
    let (time, source) = meta.recorded_at.unwrap();
    assert_eq!(source, HeaderSource::Guano);
    assert_eq!(time, zoned("2020-10-17T13:05:00+01:00"));
    assert_eq!(meta.position, Some((54.75656, -1.59106)));
    assert_eq!(
        meta.device.as_deref(),
        Some("Wildlife Acoustics, Inc. Song Meter Mini")
    );
    assert_eq!(meta.serial.as_deref(), Some("SMA00646"));
    assert_eq!(meta.raw["guano"]["Samplerate"], "24000");
    assert_eq!(meta.raw["guano"]["Temperature Int"], "21.25");
}

#[test]
fn the_guano_spec_example_with_padding_reads() {
    // Aligned with spaces, blank lines, and the block padded with spaces and
    // NULs as a writer that reserved a fixed-size block leaves it.
    let mut guano = String::from(
        "GUANO|Version:  1.0\n\nTimestamp:  2012-03-29T03:58:01+04:00\nNote:  Hand release: see notes\\nline two\nMake:  Pettersson\nModel:  D1000X\nLoc Position:  37.1878016 -86.1057312\nPET|Gain:  80\n",
    );
    guano.push_str("     \0\0\0");
    let meta = read_bytes(&guano_wav(&guano)).unwrap().unwrap();
    assert_eq!(
        meta.recorded_at.map(|t| t.0),
        Some(zoned("2012-03-29T03:58:01+04:00"))
    );
    assert_eq!(meta.position, Some((37.1878016, -86.1057312)));
    assert_eq!(meta.device.as_deref(), Some("Pettersson D1000X"));
    assert_eq!(meta.serial, None);
    // A value keeps what follows its first colon.
    assert_eq!(
        meta.raw["guano"]["Note"],
        "Hand release: see notes\\nline two"
    );
}

#[test]
fn guano_timestamps_in_every_form() {
    let local = |s: &str| {
        StartTime::Local(chrono::NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.f").unwrap())
    };
    for (text, expected) in [
        ("2015-12-31T23:59:59Z", Some(zoned("2015-12-31T23:59:59Z"))),
        (
            "2015-12-31T23:59:59.123Z",
            Some(zoned("2015-12-31T23:59:59.123Z")),
        ),
        (
            "2015-12-31T23:59:59.123456+04:00",
            Some(zoned("2015-12-31T23:59:59.123456+04:00")),
        ),
        (
            "2025-03-02 20:50:09+13:00",
            Some(zoned("2025-03-02T20:50:09+13:00")),
        ),
        (
            "2020-10-17 13:05:00-1:00",
            Some(zoned("2020-10-17T13:05:00-01:00")),
        ),
        (
            "2020-10-17T13:05:00-0530",
            Some(zoned("2020-10-17T13:05:00-05:30")),
        ),
        ("2015-12-31T23:59:59", Some(local("2015-12-31T23:59:59"))),
        (
            "2015-12-31T23:59:59.5",
            Some(local("2015-12-31T23:59:59.5")),
        ),
        ("2015-12-31T23:59", Some(local("2015-12-31T23:59:00"))),
        ("2015-12-31", None),
        ("2015-13-31T23:59:59", None),
        ("2015-12-31T25:59:59", None),
        ("2015-12-31T23:59:59+25:00", None),
        ("2015-12-31T23:59:59+04:75", None),
        ("2015-12-31T23:59:59 EST", None),
        ("31/12/2015 23:59", None),
        ("", None),
        ("2015-12-31T23:59:59+", None),
        ("2015-12-31T23:59:59é", None),
        ("é015-12-31T23:59:59", None),
    ] {
        assert_eq!(guano::parse_timestamp(text), expected, "{text:?}");
    }
}

#[test]
fn positions_outside_the_globe_are_dropped() {
    assert_eq!(
        guano::parse_position("-37.00403 174.57577"),
        Some((-37.00403, 174.57577))
    );
    assert_eq!(guano::parse_position("52.1,4.3"), Some((52.1, 4.3)));
    for bad in [
        "91 0",
        "0 181",
        "NaN 0",
        "inf 0",
        "52.1",
        "52.1 4.3 7",
        "",
        "north east",
    ] {
        assert_eq!(guano::parse_position(bad), None, "{bad:?}");
    }
}

#[test]
fn text_that_is_not_guano_is_ignored() {
    let meta = read_bytes(&guano_wav("Timestamp: 2020-10-17T13:05:00Z\n"))
        .unwrap()
        .unwrap();
    assert_eq!(meta.recorded_at, None);
    assert!(meta.is_empty());
}

#[test]
fn other_formats_and_plain_wavs() {
    assert!(read_bytes(b"fLaC\0\0\0\x22").unwrap().is_none());
    assert!(read_bytes(b"").unwrap().is_none());
    assert!(read_bytes(b"RIFF").unwrap().is_none());
    assert!(read_bytes(b"RIFF\x24\0\0\0AVI ").unwrap().is_none());
    let plain = riff(&[fmt_chunk(22_050), data_chunk(100)]);
    let meta = read_bytes(&plain).unwrap().unwrap();
    assert_eq!(
        meta,
        HeaderMetadata {
            raw: serde_json::json!({}),
            ..HeaderMetadata::default()
        }
    );
    assert!(meta.is_empty());
}

#[test]
fn an_odd_sized_chunk_is_padded_before_the_next() {
    let guano = "GUANO|Version:1.0\nTimestamp:2024-05-01T05:30:00Z\n"; // odd length
    assert_eq!(guano.len() % 2, 1);
    let wav = riff(&[
        fmt_chunk(24_000),
        chunk(b"junk", b"odd"),
        chunk(b"guan", guano.as_bytes()),
        data_chunk(10),
        info_list(&[(b"IART", "AudioMoth 00000000000000AA", 0)]),
    ]);
    let meta = read_bytes(&wav).unwrap().unwrap();
    assert_eq!(
        meta.recorded_at.map(|t| t.0),
        Some(zoned("2024-05-01T05:30:00Z"))
    );
    // GUANO named no device; the AudioMoth artist field found after the data does.
    assert_eq!(meta.device.as_deref(), Some("AudioMoth"));
    assert_eq!(meta.serial.as_deref(), Some("00000000000000AA"));
}

#[test]
fn a_metadata_chunk_cut_short_is_an_error() {
    let wav = guano_wav("GUANO|Version:1.0\nTimestamp:2024-05-01T05:30:00Z\n");
    let cut = &wav[..wav.len() - 10];
    assert!(matches!(
        read_bytes(cut),
        Err(WavMetadataError::Truncated { chunk }) if chunk == "guan"
    ));
}

#[test]
fn a_recording_cut_short_in_its_data_keeps_its_header() {
    // A recorder that lost power: the data chunk claims more than was written.
    let wav = audiomoth_wav(AUDIOMOTH_COMMENT, "AudioMoth 24F319055FDF1D8D");
    let cut = &wav[..wav.len() - 1000];
    let meta = read_bytes(cut).unwrap().unwrap();
    assert!(meta.recorded_at.is_some());
}

#[test]
fn broken_list_chunks_do_not_panic() {
    // A sub-chunk claiming more than its list holds, one with u32::MAX, and a
    // list too short for its type.
    let mut list = b"INFO".to_vec();
    list.extend_from_slice(b"ICMT");
    list.extend_from_slice(&1000u32.to_le_bytes());
    list.extend_from_slice(b"Recorded at");
    let mut huge = b"INFO".to_vec();
    huge.extend_from_slice(b"IART");
    huge.extend_from_slice(&u32::MAX.to_le_bytes());
    let wav = riff(&[
        fmt_chunk(8_000),
        chunk(b"LIST", &list),
        chunk(b"LIST", &huge),
        chunk(b"LIST", b"IN"),
        chunk(b"LIST", b""),
    ]);
    let meta = read_bytes(&wav).unwrap().unwrap();
    assert_eq!(meta.recorded_at, None);
}

#[test]
fn every_prefix_and_many_mutations_of_real_headers_are_safe() {
    let files = [
        audiomoth_wav(AUDIOMOTH_COMMENT, "AudioMoth 24F319055FDF1D8D"),
        guano_wav(
            "GUANO|Version:1.0\nTimestamp:2020-10-17 13:05:00+1:00\nLoc Position:54.7 -1.5\n",
        ),
    ];
    for wav in &files {
        for end in 0..=wav.len() {
            let _ = read_bytes(&wav[..end]);
        }
        // Deterministic pseudo-random byte flips (a small LCG, no dependency).
        let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
        for _ in 0..3_000 {
            let mut mutated = wav.clone();
            for _ in 0..4 {
                state = state
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                let at = (state >> 33) as usize % mutated.len();
                mutated[at] = (state >> 17) as u8;
            }
            let _ = read_bytes(&mutated);
        }
    }
}

/// A 3 GiB WAV that exists only as arithmetic: a header, then zeros. Counts
/// the bytes read, to show that the walk seeks past the audio.
struct Sparse {
    header: Vec<u8>,
    trailer: Vec<u8>,
    len: u64,
    pos: u64,
    read: u64,
}

impl Read for Sparse {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let remaining = self.len.saturating_sub(self.pos);
        let n = (buf.len() as u64).min(remaining) as usize;
        let trailer_start = self.len - self.trailer.len() as u64;
        for (i, b) in buf[..n].iter_mut().enumerate() {
            let at = self.pos + i as u64;
            *b = if (at as usize) < self.header.len() {
                self.header[at as usize]
            } else if at >= trailer_start {
                self.trailer[(at - trailer_start) as usize]
            } else {
                0
            };
        }
        self.pos += n as u64;
        self.read += n as u64;
        Ok(n)
    }
}

impl Seek for Sparse {
    fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
        self.pos = match to {
            SeekFrom::Start(p) => p,
            SeekFrom::End(d) => self.len.saturating_add_signed(d),
            SeekFrom::Current(d) => self.pos.saturating_add_signed(d),
        };
        Ok(self.pos)
    }
}

#[test]
fn a_huge_file_is_read_by_seeking() {
    let data_len: u32 = 3_000_000_000;
    let guano = chunk(
        b"guan",
        b"GUANO|Version:1.0\nTimestamp:2024-05-01T05:30:00+02:00\n",
    );
    let mut header = b"RIFF".to_vec();
    let total = 4 + fmt_chunk(48_000).len() as u64 + 8 + u64::from(data_len) + guano.len() as u64;
    header.extend_from_slice(&(total.min(u64::from(u32::MAX)) as u32).to_le_bytes());
    header.extend_from_slice(b"WAVE");
    header.extend_from_slice(&fmt_chunk(48_000));
    header.extend_from_slice(b"data");
    header.extend_from_slice(&data_len.to_le_bytes());
    let len = header.len() as u64 + u64::from(data_len) + guano.len() as u64;
    let mut file = Sparse {
        header,
        trailer: guano,
        len,
        pos: 0,
        read: 0,
    };
    let meta = read(&mut file).unwrap().unwrap();
    assert_eq!(
        meta.recorded_at.map(|t| t.0),
        Some(zoned("2024-05-01T05:30:00+02:00"))
    );
    assert!(file.read < 4096, "read {} bytes", file.read);
}
