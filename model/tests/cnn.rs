//! The spectrogram CNN end to end on synthetic spectrograms: it learns two species
//! whose calls sit in different bands, is deterministic for a seed, and its artifact
//! round-trips and is refused by loaders that feed other vectors.

mod common;

use birdsong_model::spectrogram::{MEL_BANDS, PATCH_FRAMES, vector_into};
use birdsong_model::{
    Artifact, Backbone, Classifier, FEATURE_COUNT, FEATURE_VERSION, ModelError, Recording,
    Spectrogram, SpectrogramRecording, TrainConfig, evaluate, train_cnn,
};

/// A small deterministic generator (no rand dependency in the tests' data).
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> f32 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 40) as f32 / (1u64 << 24) as f32
    }
}

/// Band power of `seconds` of a species calling in `band` (and its neighbour) in
/// bursts of 15 frames, over noise in every band.
fn power(band: usize, frames: usize, seed: u64) -> Vec<f32> {
    let mut rng = Lcg(seed);
    let mut p: Vec<f32> = (0..frames * MEL_BANDS)
        .map(|_| 1e-4 * (0.5 + rng.next()))
        .collect();
    let mut t = (rng.next() * 30.0) as usize;
    while t + 15 < frames {
        for f in t..t + 15 {
            p[f * MEL_BANDS + band] += 1.0 + rng.next();
            p[f * MEL_BANDS + band + 1] += 0.3 * rng.next();
        }
        t += 40 + (rng.next() * 40.0) as usize;
    }
    p
}

const BANDS: [usize; 2] = [5, 20];

fn training_set() -> Vec<SpectrogramRecording> {
    (0..6)
        .map(|i| SpectrogramRecording {
            id: format!("r{i}"),
            label: format!("species {}", i % 2),
            spectrogram: Spectrogram::from_power(power(BANDS[i % 2], 900 + 100 * i, i as u64))
                .unwrap(),
        })
        .collect()
}

/// 15 s of a bird calling in `band` as the CLI cuts them: 5 s patches with their
/// level.
fn windows_in(band: usize, seed: u64) -> Vec<Vec<f32>> {
    power(band, 3 * PATCH_FRAMES, seed)
        .chunks(PATCH_FRAMES * MEL_BANDS)
        .map(|w| {
            let mut v = Vec::new();
            vector_into(w, &mut v);
            v
        })
        .collect()
}

/// Held-out recordings of the two species.
fn held_out() -> Vec<Recording> {
    (0..4)
        .map(|i| Recording {
            id: format!("h{i}"),
            label: format!("species {}", i % 2),
            windows: windows_in(BANDS[i % 2], 100 + i as u64),
        })
        .collect()
}

fn config(seed: u64, epochs: usize) -> TrainConfig {
    let mut config = TrainConfig {
        seed,
        epochs,
        ..TrainConfig::cnn()
    };
    if let Some(s) = config.spectrogram.as_mut() {
        s.crops_per_second = 1.0;
    }
    config
}

#[test]
fn learns_two_species_and_round_trips() {
    let train = training_set();
    let held = held_out();
    let mut losses = Vec::new();
    let trained = train_cnn(&train, Some(&held), &config(1, 6), |r| losses.push(r.loss)).unwrap();
    assert_eq!(losses.len(), 6);
    assert!(
        losses[5] < losses[0] * 0.7,
        "the loss did not fall: {losses:?}"
    );
    let evaluation = evaluate(&trained.classifier, &held).unwrap();
    assert_eq!(evaluation.recording.accuracy, 1.0, "{evaluation:?}");
    assert!(evaluation.window.accuracy >= 0.9, "{evaluation:?}");

    // Saved and loaded through the artifact: same metadata, same scores.
    let files = trained.artifact.to_files().unwrap();
    let (weights, meta) = (&files[0].1, &files[1].1);
    let loaded = Artifact::from_files_any_backbone(weights, meta).unwrap();
    common::assert_same_artifact(&loaded, &trained.artifact);
    assert_eq!(loaded.meta().features.backbone(), Backbone::Mel);
    assert_eq!(
        loaded.meta().input,
        Some(birdsong_model::MelInput::current())
    );
    let classifier = Classifier::from_artifact(&loaded).unwrap();
    let windows: Vec<_> = held.iter().flat_map(|r| r.windows.clone()).collect();
    assert_eq!(
        classifier.predict(&windows).unwrap(),
        trained.classifier.predict(&windows).unwrap()
    );
    // A loader that feeds the acoustic features refuses it rather than misfeed it.
    assert!(matches!(
        Artifact::from_files(weights, meta, FEATURE_VERSION, FEATURE_COUNT),
        Err(ModelError::IncompatibleArtifact(_))
    ));
    // And it refuses vectors of the wrong length.
    assert!(classifier.predict(&[vec![0.0; FEATURE_COUNT]]).is_err());
}

#[test]
fn same_seed_same_weights() {
    let train = training_set();
    let weights = |seed| {
        train_cnn(&train, None, &config(seed, 1), |_| {})
            .unwrap()
            .artifact
            .weights()
            .to_vec()
    };
    let a = weights(3);
    assert_eq!(a, weights(3));
    assert_ne!(a, weights(4));
}

#[test]
fn refuses_what_it_cannot_train() {
    let train = training_set();
    let mlp = TrainConfig::default();
    assert!(train_cnn(&train, None, &mlp, |_| {}).is_err());
    let one_species: Vec<_> = train
        .into_iter()
        .filter(|r| r.label == "species 0")
        .collect();
    assert!(train_cnn(&one_species, None, &config(1, 1), |_| {}).is_err());
    // The vector trainer sends the cnn here.
    assert!(birdsong_model::train(&[], None, &config(1, 1), |_| {}).is_err());
}

/// A fresh temporary directory `name`-<pid> holding a briefly trained model in
/// `model/`, for the command line to read.
fn saved_model(name: &str) -> std::path::PathBuf {
    let trained = train_cnn(&training_set(), None, &config(1, 1), |_| {}).unwrap();
    let dir = std::env::temp_dir().join(format!("{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    trained.artifact.save_dir(&dir.join("model")).unwrap();
    dir
}

/// `birdsong-model predict` classifies files with a CNN: every 5-s window with its
/// top scores and detections, a line per file with the species detected, and an
/// error line for a file that is not audio, without failing the others.
#[test]
fn predict_runs_a_cnn_on_audio_files() {
    let dir = saved_model("birdsong-predict-cnn");
    // 12 s of a warbling tone at 22.05 kHz: two full windows and a 2-s tail.
    let samples: Vec<f32> = (0..12 * 22_050)
        .map(|i| {
            let t = i as f32 / 22_050.0;
            0.3 * (2.0 * std::f32::consts::PI * (3_000.0 + 500.0 * (7.0 * t).sin()) * t).sin()
        })
        .collect();
    let audio = dir.join("tone.wav");
    std::fs::write(&audio, birdsong_audio::wav::pcm16_mono(&samples, 22_050)).unwrap();
    let junk = dir.join("junk.wav");
    std::fs::write(&junk, b"RIFF, but not really").unwrap();

    let output = std::process::Command::new(env!("CARGO_BIN_EXE_birdsong-model"))
        .arg("predict")
        .arg("--model")
        .arg(dir.join("model"))
        .args(["--top-k", "1"])
        .arg(&audio)
        .arg(&junk)
        .output()
        .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(output.status.success(), "{output:?}");
    let lines: Vec<serde_json::Value> = String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let kinds: Vec<&str> = lines.iter().map(|l| l["kind"].as_str().unwrap()).collect();
    assert_eq!(
        kinds,
        ["window", "window", "window", "file", "error"],
        "{lines:?}"
    );
    let spans: Vec<(f64, f64)> = lines[..3]
        .iter()
        .map(|l| (l["start_s"].as_f64().unwrap(), l["end_s"].as_f64().unwrap()))
        .collect();
    assert_eq!(spans[..2], [(0.0, 5.0), (5.0, 10.0)]);
    assert_eq!(spans[2].0, 10.0);
    for window in &lines[..3] {
        assert_eq!(window["top"].as_array().unwrap().len(), 1);
        assert!(window["detections"].is_array(), "{window}");
    }
    assert_eq!(lines[3]["windows"], 3);
    assert!(lines[3]["detected"].is_array());
    assert!((lines[3]["duration_s"].as_f64().unwrap() - 12.0).abs() < 0.05);
    assert!(lines[4]["file"].as_str().unwrap().ends_with("junk.wav"));
}

/// The artifact as loaded without its familiarity: the network's scores ungated.
fn without_familiarity(artifact: &Artifact) -> Classifier {
    let files = artifact.to_files().unwrap();
    let mut meta: serde_json::Value = serde_json::from_slice(&files[1].1).unwrap();
    meta.as_object_mut().unwrap().remove("familiarity");
    let meta = serde_json::to_vec(&meta).unwrap();
    Classifier::from_artifact(&Artifact::from_files_any_backbone(&files[0].1, &meta).unwrap())
        .unwrap()
}

/// Training keeps each species' calls as references, and served scores of windows
/// unlike any of a species' calls fall below every threshold: a bird calling in a
/// band neither species uses is detected as neither, while the species' own
/// windows keep their scores.
#[test]
fn scores_count_only_for_windows_like_the_species_calls() {
    let trained = train_cnn(&training_set(), None, &config(1, 6), |_| {}).unwrap();
    let familiarity = trained
        .artifact
        .meta()
        .familiarity
        .clone()
        .expect("the cnn recipe fits familiarity");
    assert_eq!(familiarity.quantile, birdsong_model::FAMILIAR_QUANTILE);
    assert_eq!(familiarity.species.len(), 2);
    for s in &familiarity.species {
        assert_eq!(s.recordings, 3, "{s:?}");
        assert!(s.radius.is_some_and(|r| r > 0.0 && r < 1.0), "{s:?}");
    }
    assert!(trained.classifier.gates_unfamiliar());
    let ungated = without_familiarity(&trained.artifact);
    assert!(!ungated.gates_unfamiliar());

    let known: Vec<Vec<f32>> = held_out().into_iter().flat_map(|r| r.windows).collect();
    let stranger = windows_in(28, 7);
    for windows in [&known, &stranger] {
        let gated = trained.classifier.predict(windows).unwrap();
        let plain = ungated.predict(windows).unwrap();
        for (g, p) in gated.iter().flatten().zip(plain.iter().flatten()) {
            assert!(*g == *p || *g < 0.5 * *p, "gated {g}, network {p}");
        }
    }
    // The known species' windows keep their own species' scores...
    let own = trained.classifier.predict(&known).unwrap();
    let kept = held_out()
        .iter()
        .flat_map(|r| {
            let class: usize = r.label["species ".len()..].parse().unwrap();
            r.windows.iter().map(move |_| class)
        })
        .zip(&own)
        .filter(|(class, scores)| scores[*class] >= 0.5)
        .count();
    assert!(
        kept * 10 >= known.len() * 9,
        "{kept} of {} kept",
        known.len()
    );
    // ...and the stranger's are gated for every species.
    let strange = trained.classifier.predict(&stranger).unwrap();
    assert!(
        strange.iter().flatten().all(|s| *s < 0.5),
        "{strange:?} (network: {:?})",
        ungated.predict(&stranger).unwrap()
    );

    // An artifact whose familiarity does not fit its network is refused.
    let files = trained.artifact.to_files().unwrap();
    let mut meta: serde_json::Value = serde_json::from_slice(&files[1].1).unwrap();
    meta["familiarity"]["width"] = 7.into();
    let meta = serde_json::to_vec(&meta).unwrap();
    let loaded = Artifact::from_files_any_backbone(&files[0].1, &meta).unwrap();
    assert!(matches!(
        Classifier::from_artifact(&loaded),
        Err(ModelError::IncompatibleArtifact(_))
    ));
    // Without the gate the recipe serves the network's scores.
    let mut plain_config = config(1, 1);
    if let Some(s) = plain_config.spectrogram.as_mut() {
        s.familiar_quantile = None;
    }
    let plain = train_cnn(&training_set(), None, &plain_config, |_| {}).unwrap();
    assert!(plain.artifact.meta().familiarity.is_none());
    assert!(!plain.classifier.gates_unfamiliar());
}

/// `predict --embeddings` writes each window's embedding: every member's pooled
/// features, 512 values for the recipe's one network.
#[test]
fn predict_writes_embeddings_on_request() {
    let dir = saved_model("birdsong-embed-cnn");
    let samples: Vec<f32> = (0..7 * 22_050)
        .map(|i| 0.3 * (2.0 * std::f32::consts::PI * 2_500.0 * i as f32 / 22_050.0).sin())
        .collect();
    let audio = dir.join("tone.wav");
    std::fs::write(&audio, birdsong_audio::wav::pcm16_mono(&samples, 22_050)).unwrap();
    let run = |extra: &[&str]| {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_birdsong-model"))
            .arg("predict")
            .arg("--model")
            .arg(dir.join("model"))
            .args(extra)
            .arg(&audio)
            .output()
            .unwrap();
        assert!(output.status.success(), "{output:?}");
        String::from_utf8(output.stdout)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
            .filter(|l| l["kind"] == "window")
            .collect::<Vec<_>>()
    };
    let with = run(&["--embeddings"]);
    let without = run(&[]);
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(with.len(), 2);
    for (w, plain) in with.iter().zip(&without) {
        let embedding = w["embedding"].as_array().unwrap();
        assert_eq!(embedding.len(), 512);
        assert!(embedding.iter().all(|v| v.as_f64().unwrap() >= 0.0));
        assert!(plain.get("embedding").is_none());
        assert_eq!(w["top"], plain["top"]);
    }
}
