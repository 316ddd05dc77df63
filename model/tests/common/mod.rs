//! Shared by the tests: synthetic labelled recordings (feature clusters standing in for
//! species) and artifact comparisons that tolerate serde_json's float parsing.
#![allow(dead_code)]

use birdsong_model::{FEATURE_COUNT, FeatureVector, Recording};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Species names of the synthetic corpus.
pub const SPECIES: [&str; 3] = ["Chirper", "Trillbird", "Whistler"];

/// A corpus of `per_class` recordings per species, `windows` windows each.
///
/// Each species has its own centre in feature space; each recording is shifted from it by a
/// recording-level offset (microphone, distance) and each window adds noise. Features live
/// on very different scales (1 to 10 000), as the real ones do, so an unscaled network
/// would struggle. Class separation is large compared with the noise: a trained model
/// classifies nearly everything right, a broken one does not.
pub fn corpus(seed: u64, per_class: usize, windows: usize) -> Vec<Recording> {
    // Centres are fixed (seed 1) so that train and test corpora share species.
    let mut centre_rng = StdRng::seed_from_u64(1);
    let scales: Vec<f32> = (0..FEATURE_COUNT)
        .map(|j| 10f32.powi((j % 5) as i32))
        .collect();
    let centres: Vec<Vec<f32>> = SPECIES
        .iter()
        .map(|_| {
            (0..FEATURE_COUNT)
                .map(|_| centre_rng.random_range(-1.0..1.0))
                .collect()
        })
        .collect();
    let mut rng = StdRng::seed_from_u64(seed);
    let mut out = Vec::new();
    for (c, species) in SPECIES.iter().enumerate() {
        for r in 0..per_class {
            let offset: Vec<f32> = (0..FEATURE_COUNT)
                .map(|_| rng.random_range(-0.3..0.3))
                .collect();
            let windows = (0..windows)
                .map(|_| {
                    let mut w: FeatureVector = vec![0.0; FEATURE_COUNT];
                    for j in 0..FEATURE_COUNT {
                        let noise: f32 = rng.random_range(-0.8..0.8);
                        w[j] = (centres[c][j] + offset[j] + noise) * scales[j] + 3.0 * scales[j];
                    }
                    w
                })
                .collect();
            out.push(Recording {
                id: format!("{seed}-{species}-{r}"),
                label: species.to_string(),
                windows,
            });
        }
    }
    out
}

/// Equal artifacts, but for the last bit of floats in `model.json`: serde_json's default
/// float parser may land one ulp away from the value that was written (its exact
/// parser is the `float_roundtrip` feature, which the workspace does not enable).
pub fn assert_same_artifact(a: &birdsong_model::Artifact, b: &birdsong_model::Artifact) {
    assert_eq!(a.weights(), b.weights());
    assert_eq!(a.input_size(), b.input_size());
    assert_json_close(
        &serde_json::to_value(a.meta()).unwrap(),
        &serde_json::to_value(b.meta()).unwrap(),
    );
}

/// Equal JSON values, floats to 1e-12 relative ([`assert_same_artifact`]).
pub fn assert_json_close(a: &serde_json::Value, b: &serde_json::Value) {
    use serde_json::Value;
    match (a, b) {
        (Value::Number(x), Value::Number(y)) if x.is_f64() || y.is_f64() => {
            let (x, y) = (x.as_f64().unwrap(), y.as_f64().unwrap());
            assert!((x - y).abs() <= 1e-12 * x.abs().max(1e-300), "{x} != {y}");
        }
        (Value::Array(x), Value::Array(y)) => {
            assert_eq!(x.len(), y.len());
            x.iter().zip(y).for_each(|(x, y)| assert_json_close(x, y));
        }
        (Value::Object(x), Value::Object(y)) => {
            assert_eq!(x.keys().collect::<Vec<_>>(), y.keys().collect::<Vec<_>>());
            x.iter()
                .zip(y.values())
                .for_each(|((_, x), y)| assert_json_close(x, y));
        }
        _ => assert_eq!(a, b),
    }
}
