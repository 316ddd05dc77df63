//! The Rust front-end and the cut network against the whole installed graph, run by
//! tract with its float64 DFT: the embedding and BirdNET's own logits must agree.
//!
//! Needs an install (`scripts/birdnet/install.sh --accept-license`); without one each
//! test says it skipped, unless `BIRDSONG_REQUIRE_BIRDNET=1` makes that a failure.

use birdsong_birdnet::{Birdnet, EMBEDDING_SIZE, Install, WINDOW_SAMPLES, install};
use tract_onnx::prelude::*;

fn installed() -> Option<Install> {
    install::for_test().expect("a complete, verified install")
}

/// A 3-s test signal: two chirps and a little noise (deterministic).
fn signal(seed: u32) -> Vec<f32> {
    let mut state = seed.wrapping_mul(2_654_435_761).max(1);
    (0..WINDOW_SAMPLES)
        .map(|i| {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            let noise = (state as f32 / u32::MAX as f32 - 0.5) * 0.02;
            let t = i as f32 / 48_000.0;
            let f = 2_000.0 + 1_500.0 * t + 300.0 * seed as f32;
            0.3 * (std::f32::consts::TAU * f * t).sin() * (t * 7.0).sin().abs() + noise
        })
        .collect()
}

#[test]
fn embeddings_and_logits_match_the_whole_graph() {
    let Some(install) = installed() else { return };
    let birdnet = Birdnet::from_install(&install, 1).unwrap();
    let whole = tract_onnx::onnx()
        .model_for_path(&install.onnx_path)
        .unwrap()
        .with_input_fact(0, f32::fact([1, WINDOW_SAMPLES]).into())
        .unwrap()
        .into_optimized()
        .unwrap()
        .into_runnable()
        .unwrap();
    let species = birdnet.species();
    for seed in 0..2 {
        let x = signal(seed);
        let ours = &birdnet.embed(&[&x]).unwrap()[0];
        let input = Tensor::from_shape(&[1, WINDOW_SAMPLES], &x).unwrap();
        let out = whole.run(tvec![input.into()]).unwrap();
        // Outputs in graph order: logits, embedding.
        let logits: Vec<f32> = out[0]
            .to_plain_array_view::<f32>()
            .unwrap()
            .iter()
            .copied()
            .collect();
        let reference: Vec<f32> = out[1]
            .to_plain_array_view::<f32>()
            .unwrap()
            .iter()
            .copied()
            .collect();
        assert_eq!(reference.len(), EMBEDDING_SIZE);
        let diff = ours
            .iter()
            .zip(&reference)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        assert!(diff < 1e-3, "seed {seed}: embedding differs by {diff}");
        let worst = (0..species.labels().len())
            .map(|i| (species.logit(ours, i).unwrap() - logits[i]).abs())
            .fold(0f32, f32::max);
        assert!(worst < 5e-3, "seed {seed}: logits differ by {worst}");
        eprintln!("seed {seed}: embedding max|diff| {diff:.2e}, logits max|diff| {worst:.2e}");
    }
}

#[test]
fn batches_give_the_embeddings_of_single_windows() {
    let Some(install) = installed() else { return };
    let single = Birdnet::from_install(&install, 1).unwrap();
    let batched = Birdnet::from_install(&install, 4).unwrap();
    let windows: Vec<Vec<f32>> = (0..5).map(signal).collect();
    // A short last window is padded with silence.
    let short = &windows[4][..WINDOW_SAMPLES / 3];
    let refs: Vec<&[f32]> = windows[..4]
        .iter()
        .map(Vec::as_slice)
        .chain([short])
        .collect();
    let a = single.embed(&refs).unwrap();
    let b = batched.embed(&refs).unwrap();
    assert_eq!((a.len(), b.len()), (5, 5));
    for (x, y) in a.iter().zip(&b) {
        let diff = x
            .iter()
            .zip(y)
            .map(|(p, q)| (p - q).abs())
            .fold(0f32, f32::max);
        assert!(diff < 1e-4, "{diff}");
    }
}

#[test]
fn species_are_found_by_any_of_their_names() {
    let Some(install) = installed() else { return };
    let birdnet = Birdnet::from_install(&install, 1).unwrap();
    let species = birdnet.species();
    let by_common = species
        .find("puerto rican tody")
        .expect("a Puerto Rican species");
    assert_eq!(species.find("Todus mexicanus"), Some(by_common));
    assert_eq!(
        species.find("Todus_mexicanus_Puerto Rican Tody"),
        Some(by_common)
    );
    assert_eq!(
        species.find("Elfin-woods Warbler, surely not a label"),
        None
    );
}
