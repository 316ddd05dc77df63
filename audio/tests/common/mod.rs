//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::path::PathBuf;

/// The shared folder (`../shared` from the repository root), overridable
/// with `BIRDSONG_SHARED_DIR`.
pub fn shared_dir() -> PathBuf {
    match std::env::var_os("BIRDSONG_SHARED_DIR") {
        Some(p) => PathBuf::from(p),
        None => PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared")),
    }
}

/// The committed fixtures of this crate.
pub fn fixtures_dir() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures"))
}

/// Reference vectors: `(feature_names, [(file name, values)])`.
pub fn load_reference(path: &std::path::Path) -> (Vec<String>, Vec<(String, Vec<f64>)>) {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("cannot read reference {}: {e}", path.display()));
    let v: serde_json::Value = serde_json::from_str(&text).expect("reference JSON");
    let names = v["feature_names"]
        .as_array()
        .expect("feature_names")
        .iter()
        .map(|n| n.as_str().expect("name").to_owned())
        .collect();
    let mut rows: Vec<(String, Vec<f64>)> = v["features"]
        .as_object()
        .expect("features")
        .iter()
        .map(|(k, vals)| {
            let vals = vals
                .as_array()
                .expect("values")
                .iter()
                .map(|x| x.as_f64().expect("number"))
                .collect();
            (k.clone(), vals)
        })
        .collect();
    rows.sort_by(|a, b| a.0.cmp(&b.0));
    (names, rows)
}

/// Writes a 16-bit PCM WAV (or a float WAV when `float` is set) with
/// interleaved samples in `-1..1`.
pub fn wav_bytes(samples: &[f32], rate: u32, channels: u16, float: bool) -> Vec<u8> {
    let bytes_per = if float { 4u16 } else { 2 };
    let data_len = (samples.len() * bytes_per as usize) as u32;
    let mut out = Vec::with_capacity(44 + data_len as usize);
    out.extend_from_slice(b"RIFF");
    out.extend_from_slice(&(36 + data_len).to_le_bytes());
    out.extend_from_slice(b"WAVEfmt ");
    out.extend_from_slice(&16u32.to_le_bytes());
    out.extend_from_slice(&(if float { 3u16 } else { 1 }).to_le_bytes());
    out.extend_from_slice(&channels.to_le_bytes());
    out.extend_from_slice(&rate.to_le_bytes());
    let block = u32::from(channels) * u32::from(bytes_per);
    out.extend_from_slice(&(rate.wrapping_mul(block)).to_le_bytes());
    out.extend_from_slice(&(block as u16).to_le_bytes());
    out.extend_from_slice(&(bytes_per * 8).to_le_bytes());
    out.extend_from_slice(b"data");
    out.extend_from_slice(&data_len.to_le_bytes());
    for &s in samples {
        if float {
            out.extend_from_slice(&s.to_le_bytes());
        } else {
            let v = (s.clamp(-1.0, 1.0) * 32767.0).round() as i16;
            out.extend_from_slice(&v.to_le_bytes());
        }
    }
    out
}

/// A deterministic test signal: a chirping tone over low noise (LCG noise,
/// no dependency), `seconds` long at `rate`.
pub fn chirp(seconds: f64, rate: u32) -> Vec<f32> {
    let n = (seconds * f64::from(rate)) as usize;
    let mut state: u32 = 12345;
    (0..n)
        .map(|i| {
            let t = i as f64 / f64::from(rate);
            // Instantaneous frequency 2000 + 1500 sin(pi t) Hz (phase integrated).
            let pi = std::f64::consts::PI;
            let phase = 2.0 * pi * (2000.0 * t - 1500.0 / pi * (pi * t).cos());
            state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            let noise = (f64::from(state >> 8) / f64::from(1u32 << 24) - 0.5) * 0.01;
            (0.5 * phase.sin() + noise) as f32
        })
        .collect()
}

/// A WAV file of any length produced on the fly (16-bit PCM): a tone that
/// glides between 1.5 and 5 kHz with a 1 s silence every minute, plus
/// low noise. Never held in memory, so a two-hour recording costs nothing.
pub struct SyntheticWav {
    rate: u32,
    channels: u16,
    frames: u64,
    pos: u64,
    header: Vec<u8>,
}

impl SyntheticWav {
    /// `seconds` of audio at `rate` Hz with `channels` channels.
    pub fn new(seconds: f64, rate: u32, channels: u16) -> Self {
        let frames = (seconds * f64::from(rate)) as u64;
        let data_len = frames * u64::from(channels) * 2;
        let mut h = wav_bytes(&[], rate, channels, false);
        let riff = u32::try_from(36 + data_len).unwrap_or(u32::MAX);
        h[4..8].copy_from_slice(&riff.to_le_bytes());
        let d = u32::try_from(data_len).unwrap_or(u32::MAX);
        h[40..44].copy_from_slice(&d.to_le_bytes());
        SyntheticWav {
            rate,
            channels,
            frames,
            pos: 0,
            header: h,
        }
    }

    fn len(&self) -> u64 {
        self.header.len() as u64 + self.frames * u64::from(self.channels) * 2
    }

    fn sample(&self, frame: u64, ch: u16) -> i16 {
        let sec = frame / u64::from(self.rate);
        if sec.is_multiple_of(60) {
            return 0; // one second of digital silence every minute
        }
        let t = (frame % u64::from(self.rate)) as f64 / f64::from(self.rate);
        let f = 1500.0 + (sec % 7) as f64 * 500.0;
        let mut x = frame
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(u64::from(ch));
        x ^= x >> 33;
        let noise = (x % 2001) as f64 / 1000.0 - 1.0;
        let v = 0.4 * (2.0 * std::f64::consts::PI * f * t).sin() + 0.01 * noise;
        (v * 32767.0) as i16
    }
}

impl std::io::Read for SyntheticWav {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let len = self.len();
        let hlen = self.header.len() as u64;
        let mut n = 0;
        while n < buf.len() && self.pos < len {
            let p = self.pos;
            if p < hlen {
                buf[n] = self.header[p as usize];
                n += 1;
                self.pos += 1;
                continue;
            }
            let off = p - hlen;
            let idx = off / 2;
            let frame = idx / u64::from(self.channels);
            let ch = (idx % u64::from(self.channels)) as u16;
            let bytes = self.sample(frame, ch).to_le_bytes();
            if off.is_multiple_of(2) && n + 1 < buf.len() {
                buf[n..n + 2].copy_from_slice(&bytes);
                n += 2;
                self.pos += 2;
            } else {
                buf[n] = bytes[(off % 2) as usize];
                n += 1;
                self.pos += 1;
            }
        }
        Ok(n)
    }
}

impl std::io::Seek for SyntheticWav {
    fn seek(&mut self, pos: std::io::SeekFrom) -> std::io::Result<u64> {
        let len = self.len() as i128;
        let new = match pos {
            std::io::SeekFrom::Start(p) => i128::from(p),
            std::io::SeekFrom::End(d) => len + i128::from(d),
            std::io::SeekFrom::Current(d) => i128::from(self.pos) + i128::from(d),
        };
        if new < 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "seek before start",
            ));
        }
        self.pos = new as u64;
        Ok(self.pos)
    }
}
