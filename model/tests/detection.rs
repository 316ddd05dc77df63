//! Scores that mean presence: per-species outputs trained with negatives say "none of
//! these" to what the model was taught is background, thresholds chosen on held-out
//! recordings travel in the artifact, and the open-set figures tell the two apart.

mod common;

use birdsong_model::{
    Artifact, Classifier, FEATURE_COUNT, FEATURE_VERSION, Output, Recording, TrainConfig,
    calibrate, class_list, detection_metrics, open_set, train,
};

/// Chirper and Trillbird are the species; Whistler's cluster is labelled `noise`.
fn with_background(seed: u64, per_class: usize) -> Vec<Recording> {
    common::corpus(seed, per_class, 8)
        .into_iter()
        .map(|mut r| {
            if r.label == common::SPECIES[2] {
                r.label = "Noise".into();
            }
            r
        })
        .collect()
}

fn config() -> TrainConfig {
    TrainConfig {
        epochs: 20,
        members: 1,
        seed: 3,
        ..TrainConfig::default()
    }
}

fn top(scores: &[f32]) -> f32 {
    scores.iter().copied().fold(0f32, f32::max)
}

#[test]
fn background_recordings_train_every_species_as_absent() {
    let train_set = with_background(10, 6);
    assert_eq!(class_list(&train_set), vec!["Chirper", "Trillbird"]);
    let trained = train(&train_set, None, &config(), |_| {}).unwrap();
    assert_eq!(trained.classifier.classes(), ["Chirper", "Trillbird"]);
    assert_eq!(trained.classifier.info().output, Output::Sigmoid);

    let test_set = with_background(20, 3);
    for r in &test_set {
        let scores = trained.classifier.predict(&r.windows).unwrap();
        let detected = scores
            .iter()
            .filter(|s| !trained.classifier.detections(s).is_empty())
            .count();
        if r.label == "Noise" {
            assert_eq!(detected, 0, "background windows must give no detection");
            assert!(scores.iter().all(|s| top(s) < 0.5), "{scores:?}");
        } else {
            assert_eq!(detected, r.windows.len(), "{}", r.label);
            let species = &trained.classifier.detections(&scores[0])[0].species;
            assert_eq!(species, &r.label);
        }
    }
}

#[test]
fn a_softmax_model_gives_every_window_a_confident_species() {
    // The behaviour per-species outputs exist to fix: a softmax must spread its unit of
    // probability over the known species, so background still gets one.
    let train_set: Vec<Recording> = with_background(10, 6)
        .into_iter()
        .filter(|r| r.label != "Noise")
        .collect();
    let softmax = TrainConfig {
        output: Output::Softmax,
        ..config()
    };
    let trained = train(&train_set, None, &softmax, |_| {}).unwrap();
    let background: Vec<Recording> = with_background(20, 3)
        .into_iter()
        .filter(|r| r.label == "Noise")
        .collect();
    for r in &background {
        for s in trained.classifier.predict(&r.windows).unwrap() {
            assert!((s.iter().sum::<f32>() - 1.0).abs() < 1e-4);
            assert!(top(&s) >= 0.5);
        }
    }
}

#[test]
fn thresholds_are_chosen_on_held_out_recordings_and_travel_in_the_artifact() {
    let train_set = with_background(10, 6);
    let mut trained = train(&train_set, None, &config(), |_| {}).unwrap();
    let held_out = with_background(30, 4);
    let thresholds = calibrate(&trained.classifier, &held_out, 0.95, None).unwrap();
    assert_eq!(thresholds.values.len(), 2);
    assert_eq!(thresholds.target_precision, 0.95);
    assert!(
        thresholds.rules.iter().all(|r| r == "precision"),
        "{thresholds:?}"
    );
    assert!(
        thresholds.values.iter().all(|t| (0.5..=0.99).contains(t)),
        "{thresholds:?}"
    );
    assert!(calibrate(&trained.classifier, &held_out, 0.0, None).is_err());

    trained.artifact.set_thresholds(thresholds.clone());
    let files = trained.artifact.to_files().unwrap();
    let file = |name: &str| files.iter().find(|(n, _)| *n == name).unwrap().1.clone();
    let loaded = Artifact::from_files(
        &file(birdsong_model::WEIGHTS_FILE),
        &file(birdsong_model::META_FILE),
        FEATURE_VERSION,
        FEATURE_COUNT,
    )
    .unwrap();
    let classifier = Classifier::from_artifact(&loaded).unwrap();
    assert_eq!(classifier.thresholds(), thresholds.values.as_slice());

    // Detections are exactly the scores at or above their species' threshold.
    let scores = classifier.predict(&held_out[0].windows).unwrap();
    for s in &scores {
        let expected: Vec<&String> = classifier
            .classes()
            .iter()
            .enumerate()
            .filter(|(c, _)| s[*c] >= thresholds.values[*c])
            .map(|(_, name)| name)
            .collect();
        let mut got: Vec<&String> = Vec::new();
        let found = classifier.detections(s);
        for d in &found {
            got.push(
                classifier
                    .classes()
                    .iter()
                    .find(|c| **c == d.species)
                    .unwrap(),
            );
        }
        got.sort();
        assert_eq!(got, expected);
    }

    let metrics = detection_metrics(&classifier, &held_out, None).unwrap();
    assert!(
        metrics.mean_average_precision.unwrap() > 0.95,
        "{metrics:?}"
    );
    assert!(metrics.precision.unwrap() >= 0.95, "{metrics:?}");
    assert_eq!(metrics.negative_windows_detected, Some(0.0), "{metrics:?}");
}

#[test]
fn open_set_figures_separate_known_from_unknown_species() {
    // Trained on Chirper and Trillbird only, with no background at all; Whistler is a
    // species it never saw.
    let train_set: Vec<Recording> = common::corpus(10, 6, 8)
        .into_iter()
        .filter(|r| r.label != common::SPECIES[2])
        .collect();
    let trained = train(&train_set, None, &config(), |_| {}).unwrap();
    let test = common::corpus(20, 3, 8);
    let (known, unknown): (Vec<Recording>, Vec<Recording>) = test
        .into_iter()
        .partition(|r| r.label != common::SPECIES[2]);
    let figures = open_set(&trained.classifier, &known, &unknown, 5.0).unwrap();
    assert_eq!(figures.known_windows, 48);
    assert_eq!(figures.unknown_windows, 24);
    let auroc = figures.auroc.unwrap();
    assert!((0.0..=1.0).contains(&auroc));
    assert_eq!(figures.known_windows_detected, Some(1.0), "{figures:?}");
    let share = figures.unknown_windows_detected.unwrap();
    let per_hour = figures.false_detections_per_hour.unwrap();
    // 24 windows of 5 s are 2 minutes: detections per hour are 30 per detected window.
    assert!((per_hour - share * 24.0 * 30.0).abs() < 1e-9, "{figures:?}");
}
