//! Synthetic labelled recordings: feature clusters standing in for species.
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
