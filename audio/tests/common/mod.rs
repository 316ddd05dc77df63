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
            let f = 2000.0 + 1500.0 * (2.0 * std::f64::consts::PI * 0.5 * t).sin();
            state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            let noise = (f64::from(state >> 8) / f64::from(1u32 << 24) - 0.5) * 0.01;
            (0.5 * (2.0 * std::f64::consts::PI * f * t).sin() + noise) as f32
        })
        .collect()
}
