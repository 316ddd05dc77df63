//! Parity of the band profile (features 95..222) with its librosa definition,
//! `tests/fixtures/band_profile.py`, on the 20 shared reference clips and on
//! our fixtures (16, 22.05, 44.1 and 48 kHz; WAV, FLAC, Ogg and MP3; mono and
//! stereo).
//!
//! Tolerance: 2e-3 dB absolute on every value. The values are dB relative to
//! the window's maximum, in [-80, 0], so a relative tolerance would be
//! meaningless near 0 dB. Each is one pooled mel power through float32 `log10`
//! (our polynomial and numpy's differ in the last bits), and the 90th
//! percentile and median interpolate between two such values.

mod common;

use birdsong_audio::bands::{BAND_FEATURE_COUNT, BAND_FEATURE_NAMES};
use birdsong_audio::{FEATURE_NAMES, LIBROSA_FEATURE_COUNT, clip_features};

const TOLERANCE_DB: f64 = 2e-3;

#[test]
fn names_follow_the_librosa_features() {
    assert_eq!(
        &FEATURE_NAMES[LIBROSA_FEATURE_COUNT..],
        &BAND_FEATURE_NAMES[..]
    );
    assert_eq!(BAND_FEATURE_NAMES[0], "band00_max");
    assert_eq!(BAND_FEATURE_NAMES[BAND_FEATURE_COUNT - 1], "band31_std");
}

#[test]
fn band_profiles_match_librosa() {
    let text = std::fs::read_to_string(common::fixtures_dir().join("band_profile_reference.json"))
        .expect("band_profile_reference.json");
    let v: serde_json::Value = serde_json::from_str(&text).expect("reference JSON");
    let profiles = v["profiles"].as_object().expect("profiles");
    assert_eq!(profiles.len(), 28, "20 shared clips and 8 fixtures");
    let mut worst = 0f64;
    let mut failures = Vec::new();
    for (file, reference) in profiles {
        let shared = common::shared_dir().join("reference/clips").join(file);
        let path = if shared.exists() {
            shared
        } else {
            common::fixtures_dir().join(file)
        };
        let ours = clip_features(&path).unwrap_or_else(|e| panic!("{file}: {e}"));
        let reference = reference.as_array().expect("values");
        assert_eq!(reference.len(), BAND_FEATURE_COUNT, "{file}");
        for (i, r) in reference.iter().enumerate() {
            let r = r.as_f64().expect("number");
            let ours = f64::from(ours[LIBROSA_FEATURE_COUNT + i]);
            let err = (ours - r).abs();
            worst = worst.max(err);
            if err > TOLERANCE_DB {
                failures.push(format!(
                    "{file} {}: ours {ours} librosa {r}",
                    BAND_FEATURE_NAMES[i]
                ));
            }
        }
    }
    eprintln!("worst band-profile error {worst:.2e} dB");
    assert!(
        failures.is_empty(),
        "{} values out of tolerance:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
