//! The artifact round-trips and refuses what a worker must not load.

mod common;

use std::path::PathBuf;

use birdsong_model::{
    Artifact, Classifier, FEATURE_COUNT, FEATURE_VERSION, FILE_NAMES, FORMAT_VERSION, FeatureSet,
    META_FILE, ModelError, Recording, TrainConfig, WEIGHTS_FILE, evaluate, train,
};

fn trained() -> (birdsong_model::TrainedModel, Vec<birdsong_model::Recording>) {
    let data = common::corpus(70, 3, 5);
    let config = TrainConfig {
        seed: 9,
        epochs: 3,
        ..TrainConfig::default()
    };
    (train(&data, None, &config, |_| {}).unwrap(), data)
}

fn scratch_dir(name: &str) -> PathBuf {
    let dir =
        std::env::temp_dir().join(format!("birdsong-model-test-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// Both classifiers give the same probabilities for every window of `data`.
fn assert_same_predictions(a: &Classifier, b: &Classifier, data: &[Recording]) {
    let windows: Vec<_> = data
        .iter()
        .flat_map(|r| r.windows.iter().cloned())
        .collect();
    assert_eq!(a.predict(&windows).unwrap(), b.predict(&windows).unwrap());
}

#[test]
fn round_trip_gives_identical_predictions() {
    let (mut trained, data) = trained();
    let evaluation = evaluate(&trained.classifier, &data).unwrap();
    trained.artifact.set_metrics("test", evaluation.clone());
    trained.artifact.set_version("v7");
    let dir = scratch_dir("round-trip");
    trained.artifact.save_dir(&dir).unwrap();
    for name in FILE_NAMES {
        assert!(dir.join(name).is_file(), "{name} missing");
    }

    let loaded = Artifact::load_dir(&dir, FEATURE_VERSION, FEATURE_COUNT).unwrap();
    common::assert_same_artifact(&loaded, &trained.artifact);
    common::assert_json_close(
        &serde_json::to_value(&loaded.meta().metrics["test"]).unwrap(),
        &serde_json::to_value(&evaluation).unwrap(),
    );
    let classifier = Classifier::from_artifact(&loaded).unwrap();
    assert_eq!(classifier.info().version.as_deref(), Some("v7"));
    assert_eq!(classifier.info().architecture, "mlp");
    assert_eq!(classifier.classes(), trained.classifier.classes());
    assert_same_predictions(&classifier, &trained.classifier, &data);
    // The served scores' temporal context travels with the model.
    assert_eq!(classifier.info().context_windows, 1);
    let windows = data[0].windows.as_slice();
    assert_eq!(
        classifier.score_recordings(&[windows]).unwrap(),
        trained.classifier.score_recordings(&[windows]).unwrap()
    );

    // The in-memory path the worker uses gives the same artifact.
    let files = trained.artifact.to_files().unwrap();
    let weights = &files.iter().find(|(n, _)| *n == WEIGHTS_FILE).unwrap().1;
    let meta = &files.iter().find(|(n, _)| *n == META_FILE).unwrap().1;
    let from_memory = Artifact::from_files(weights, meta, FEATURE_VERSION, FEATURE_COUNT).unwrap();
    common::assert_same_artifact(&from_memory, &trained.artifact);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn one_network_keeps_the_first_layout_and_an_ensemble_is_never_misread() {
    let (ensemble, data) = trained();
    let config = TrainConfig {
        seed: 9,
        epochs: 3,
        members: 1,
        ..TrainConfig::default()
    };
    let single = train(&data, None, &config, |_| {}).unwrap();
    // Builds from before ensembles read one-network artifacts (layout 1) and refuse
    // ensembles by their layout version rather than misreading their weights.
    assert_eq!(single.artifact.meta().format_version, 1);
    assert_eq!(ensemble.artifact.meta().format_version, FORMAT_VERSION);
    assert_ne!(FORMAT_VERSION, 1);
    let files = single.artifact.to_files().unwrap();
    let loaded =
        Artifact::from_files(&files[0].1, &files[1].1, FEATURE_VERSION, FEATURE_COUNT).unwrap();
    let classifier = Classifier::from_artifact(&loaded).unwrap();
    assert_same_predictions(&classifier, &single.classifier, &data);

    let files = ensemble.artifact.to_files().unwrap();
    let (weights, meta) = (&files[0].1, &files[1].1);
    // An ensemble's weights described as one network do not load.
    let mut json: serde_json::Value = serde_json::from_slice(meta).unwrap();
    json["network"]["members"] = 1.into();
    let one = serde_json::to_vec(&json).unwrap();
    let artifact = Artifact::from_files(weights, &one, FEATURE_VERSION, FEATURE_COUNT).unwrap();
    let err = Classifier::from_artifact(&artifact).unwrap_err();
    assert!(matches!(err, ModelError::InvalidWeights(_)), "{err}");
    // Nor does an ensemble claiming the one-network layout.
    json["network"]["members"] = ensemble.artifact.meta().network.members.into();
    json["format_version"] = 1.into();
    let old = serde_json::to_vec(&json).unwrap();
    let err = Artifact::from_files(weights, &old, FEATURE_VERSION, FEATURE_COUNT).unwrap_err();
    assert!(matches!(err, ModelError::IncompatibleArtifact(_)), "{err}");
}

#[test]
fn refuses_mismatched_or_corrupted_artifacts() {
    let (trained, _) = trained();
    let files = trained.artifact.to_files().unwrap();
    let (weights, meta) = (&files[0].1, &files[1].1);

    let err = Artifact::from_files(weights, meta, "other-features-v9", FEATURE_COUNT).unwrap_err();
    assert!(matches!(err, ModelError::IncompatibleArtifact(_)), "{err}");
    assert!(err.to_string().contains("other-features-v9"));

    let err = Artifact::from_files(weights, meta, FEATURE_VERSION, FEATURE_COUNT + 1).unwrap_err();
    assert!(matches!(err, ModelError::IncompatibleArtifact(_)), "{err}");

    let mut corrupted = weights.clone();
    let middle = corrupted.len() / 2;
    corrupted[middle] ^= 0x01;
    let err = Artifact::from_files(&corrupted, meta, FEATURE_VERSION, FEATURE_COUNT).unwrap_err();
    assert!(matches!(err, ModelError::ChecksumMismatch { .. }), "{err}");
    let err =
        Artifact::from_files(&weights[..10], meta, FEATURE_VERSION, FEATURE_COUNT).unwrap_err();
    assert!(matches!(err, ModelError::ChecksumMismatch { .. }), "{err}");

    let mut json: serde_json::Value = serde_json::from_slice(meta).unwrap();
    json["format_version"] = serde_json::json!(99);
    let future = serde_json::to_vec(&json).unwrap();
    let err = Artifact::from_files(weights, &future, FEATURE_VERSION, FEATURE_COUNT).unwrap_err();
    assert!(matches!(err, ModelError::IncompatibleArtifact(_)), "{err}");

    let mut json: serde_json::Value = serde_json::from_slice(meta).unwrap();
    json["classes"].as_array_mut().unwrap().pop();
    let inconsistent = serde_json::to_vec(&json).unwrap();
    let err =
        Artifact::from_files(weights, &inconsistent, FEATURE_VERSION, FEATURE_COUNT).unwrap_err();
    assert!(matches!(err, ModelError::IncompatibleArtifact(_)), "{err}");

    // A feature set whose width is not the network's input.
    let mut json: serde_json::Value = serde_json::from_slice(meta).unwrap();
    json["features"] = "all".into();
    let inconsistent = serde_json::to_vec(&json).unwrap();
    let err =
        Artifact::from_files(weights, &inconsistent, FEATURE_VERSION, FEATURE_COUNT).unwrap_err();
    assert!(matches!(err, ModelError::IncompatibleArtifact(_)), "{err}");

    // A feature set of a newer build.
    let mut json: serde_json::Value = serde_json::from_slice(meta).unwrap();
    json["features"] = "bands_v9".into();
    let future = serde_json::to_vec(&json).unwrap();
    let err = Artifact::from_files(weights, &future, FEATURE_VERSION, FEATURE_COUNT).unwrap_err();
    assert!(matches!(err, ModelError::IncompatibleArtifact(_)), "{err}");
    assert!(err.to_string().contains("bands_v9"), "{err}");

    let err =
        Artifact::from_files(weights, b"{not json", FEATURE_VERSION, FEATURE_COUNT).unwrap_err();
    assert!(matches!(err, ModelError::InvalidMetadata(_)), "{err}");

    // A missing file on disk is an I/O error naming the file.
    let dir = scratch_dir("missing");
    trained.artifact.save_dir(&dir).unwrap();
    std::fs::remove_file(dir.join(WEIGHTS_FILE)).unwrap();
    let err = Artifact::load_dir(&dir, FEATURE_VERSION, FEATURE_COUNT).unwrap_err();
    assert!(
        matches!(err, ModelError::Io { .. }) && err.to_string().contains(WEIGHTS_FILE),
        "{err}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn rejects_wrong_input_size_at_inference() {
    let (trained, _) = trained();
    let err = trained
        .classifier
        .predict_rows(vec![0.0; 10], 10)
        .unwrap_err();
    assert!(
        matches!(
            err,
            ModelError::InputSize {
                expected: FEATURE_COUNT,
                actual: 10
            }
        ),
        "{err}"
    );
    assert!(trained.classifier.predict(&[]).unwrap().is_empty());
}

/// The `model.json` an artifact of `bs-features-1` had: 95 inputs, no feature set.
fn as_legacy(meta: &[u8]) -> Vec<u8> {
    let mut v: serde_json::Value = serde_json::from_slice(meta).unwrap();
    v["feature_version"] = "bs-features-1".into();
    v["input_size"] = 95.into();
    v.as_object_mut().unwrap().remove("features");
    v["training"].as_object_mut().unwrap().remove("features");
    serde_json::to_vec(&v).unwrap()
}

#[test]
fn a_model_written_before_the_temporal_context_scores_windows_alone() {
    let (trained, data) = trained();
    let files = trained.artifact.to_files().unwrap();
    let weights = &files.iter().find(|(n, _)| *n == WEIGHTS_FILE).unwrap().1;
    let meta = &files.iter().find(|(n, _)| *n == META_FILE).unwrap().1;
    let mut json: serde_json::Value = serde_json::from_slice(meta).unwrap();
    json["training"]
        .as_object_mut()
        .unwrap()
        .remove("context_windows")
        .expect("the context is recorded with the recipe");
    let old = Artifact::from_files(
        weights,
        &serde_json::to_vec(&json).unwrap(),
        FEATURE_VERSION,
        FEATURE_COUNT,
    )
    .unwrap();
    let classifier = Classifier::from_artifact(&old).unwrap();
    assert_eq!(classifier.info().context_windows, 0);
    let windows = data[0].windows.as_slice();
    assert_eq!(
        classifier.score_recordings(&[windows]).unwrap(),
        classifier.predict(windows).unwrap()
    );
}

#[test]
fn a_model_of_the_librosa_prefix_version_still_loads_and_reads_that_prefix() {
    let data = common::corpus(70, 3, 5);
    let config = TrainConfig {
        seed: 9,
        epochs: 3,
        ..TrainConfig::reference()
    };
    let trained = train(&data, None, &config, |_| {}).unwrap();
    let files = trained.artifact.to_files().unwrap();
    let (weights, legacy) = (&files[0].1, as_legacy(&files[1].1));

    let loaded = Artifact::from_files(weights, &legacy, FEATURE_VERSION, FEATURE_COUNT).unwrap();
    assert_eq!(loaded.meta().feature_version, "bs-features-1");
    assert_eq!(loaded.meta().features, FeatureSet::Librosa);
    assert_eq!(loaded.input_size(), FEATURE_COUNT);
    let classifier = Classifier::from_artifact(&loaded).unwrap();
    assert_eq!(classifier.info().input_size, FEATURE_COUNT);
    assert_same_predictions(&classifier, &trained.classifier, &data);

    // Only as a prefix of the version it belongs to, and only that long.
    let err = Artifact::from_files(weights, &legacy, "bs-features-9", FEATURE_COUNT).unwrap_err();
    assert!(matches!(err, ModelError::IncompatibleArtifact(_)), "{err}");
    let mut longer: serde_json::Value = serde_json::from_slice(&legacy).unwrap();
    longer["input_size"] = 96.into();
    let longer = serde_json::to_vec(&longer).unwrap();
    let err = Artifact::from_files(weights, &longer, FEATURE_VERSION, FEATURE_COUNT).unwrap_err();
    assert!(matches!(err, ModelError::IncompatibleArtifact(_)), "{err}");
}

#[test]
fn a_network_reads_only_the_columns_of_its_feature_set() {
    let data = common::corpus(70, 3, 5);
    let windows: Vec<_> = data
        .iter()
        .flat_map(|r| r.windows.iter().cloned())
        .collect();
    // Scramble every column outside one set: a network must see the change if and only
    // if it reads a scrambled column.
    let scramble = |kept: FeatureSet| -> Vec<_> {
        windows
            .iter()
            .map(|w| {
                let mut w = w.clone();
                for (j, v) in w.iter_mut().enumerate() {
                    if !kept.reads(j) {
                        *v = -1e6 * (j as f32 + 1.0);
                    }
                }
                w
            })
            .collect()
    };
    for (features, width) in [
        (FeatureSet::Bands, FEATURE_COUNT - 95),
        (FeatureSet::BandsNoMedian, FEATURE_COUNT - 95 - 32),
        (FeatureSet::All, FEATURE_COUNT),
    ] {
        let config = TrainConfig {
            seed: 9,
            epochs: 3,
            features,
            ..TrainConfig::default()
        };
        let trained = train(&data, None, &config, |_| {}).unwrap();
        let meta = trained.artifact.meta();
        assert_eq!((meta.features, meta.network.input_size), (features, width));
        assert_eq!(meta.input_size, FEATURE_COUNT);
        let predictions = trained.classifier.predict(&windows).unwrap();
        for kept in [FeatureSet::Bands, FeatureSet::BandsNoMedian] {
            let scrambled = trained.classifier.predict(&scramble(kept)).unwrap();
            let unchanged = (0..FEATURE_COUNT).all(|j| !features.reads(j) || kept.reads(j));
            assert_eq!(
                predictions == scrambled,
                unchanged,
                "{features} keeping {kept}"
            );
        }
    }
}
