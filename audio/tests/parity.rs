//! Parity with librosa on the 20 reference clips of `../shared/reference`.
//!
//! Tolerances, per feature group (|ours - librosa| <= tol):
//!
//! * Everything but the MFCCs: relative 1e-5. Same maths as librosa, and
//!   float32 where librosa is float32; the measured worst case is 1.6e-7
//!   (mel dB mean), the rest below 1.1e-7. The margin absorbs summation
//!   order (numpy sums pairwise in float32, we accumulate in float64).
//! * MFCC statistics: 1e-4 × max(|librosa|, 1 dB). Each coefficient is a DCT
//!   of 128 dB values of magnitude ~10-100 computed in float32, so the
//!   absolute error is ~1e-5 dB whatever the coefficient's value; relative
//!   error is meaningless for coefficients near zero (e.g. mfcc3_min = 0.0135
//!   on clip_18). Measured worst: 5.1e-5 of max(|librosa|, 1 dB), 1.6e-4 dB
//!   absolute.

mod common;

use birdsong_audio::{FEATURE_NAMES, LIBROSA_FEATURE_COUNT, clip_features};

/// Tolerance for feature `i` given the reference value.
pub fn tolerance(i: usize, reference: f64) -> f64 {
    if i < 80 {
        1e-4 * reference.abs().max(1.0)
    } else {
        1e-5 * reference.abs()
    }
}

#[test]
fn feature_names_match_reference() {
    let (names, _) =
        common::load_reference(&common::shared_dir().join("reference/librosa_features.json"));
    assert_eq!(names.len(), LIBROSA_FEATURE_COUNT);
    for (a, b) in names.iter().zip(FEATURE_NAMES.iter()) {
        assert_eq!(a, b);
    }
}

#[test]
fn twenty_reference_clips_match_librosa() {
    let shared = common::shared_dir();
    let (_, rows) = common::load_reference(&shared.join("reference/librosa_features.json"));
    assert_eq!(rows.len(), 20, "expected the 20 reference clips");
    let mut worst = [0f64; LIBROSA_FEATURE_COUNT];
    let mut failures = Vec::new();
    for (file, reference) in &rows {
        let path = shared.join("reference/clips").join(file);
        let ours = clip_features(&path).unwrap_or_else(|e| panic!("{file}: {e}"));
        for i in 0..LIBROSA_FEATURE_COUNT {
            let (a, b) = (f64::from(ours[i]), reference[i]);
            let err = (a - b).abs();
            worst[i] = worst[i].max(err / b.abs().max(1e-12));
            if err > tolerance(i, b) {
                failures.push(format!("{file} {}: ours {a} librosa {b}", FEATURE_NAMES[i]));
            }
        }
    }
    for (i, w) in worst.iter().enumerate() {
        eprintln!("{:16} worst relative error {w:.2e}", FEATURE_NAMES[i]);
    }
    assert!(
        failures.is_empty(),
        "out of tolerance:\n{}",
        failures.join("\n")
    );
}
