//! Training end to end on synthetic species: it learns, it is deterministic, it reports.

mod common;

use birdsong_model::{
    Classifier, EpochReport, ModelError, Recording, Stopping, TrainConfig, evaluate,
    split_by_recording, train,
};

/// Evaluates `classifier` on `test_set` and asserts that it learned the synthetic
/// species: over 95 % of windows and every recording right.
fn assert_classifies_well(
    classifier: &Classifier,
    test_set: &[Recording],
) -> birdsong_model::Evaluation {
    let evaluation = evaluate(classifier, test_set).unwrap();
    assert!(
        evaluation.window.accuracy > 0.95,
        "window accuracy {}",
        evaluation.window.accuracy
    );
    assert_eq!(evaluation.recording.accuracy, 1.0);
    evaluation
}

fn quick_config(seed: u64, epochs: usize) -> TrainConfig {
    TrainConfig {
        seed,
        epochs,
        ..TrainConfig::default()
    }
}

#[test]
fn learns_clearly_different_species() {
    let train_set = common::corpus(10, 8, 12);
    let test_set = common::corpus(20, 4, 12);
    let mut reports: Vec<EpochReport> = Vec::new();
    let (fit, val) = split_by_recording(train_set, 0.25, 3).unwrap();
    let trained = train(&fit, Some(&val), &quick_config(5, 15), |r| {
        reports.push(r.clone())
    })
    .unwrap();

    // The callback saw every epoch of every network of the default ensemble, with
    // validation figures, and each network's loss went down.
    let members = TrainConfig::default().members;
    assert!(members > 1);
    assert_eq!(reports.len(), 15 * members);
    assert!(
        reports
            .iter()
            .all(|r| r.validation_accuracy.is_some() && r.members == members)
    );
    for (m, network) in reports.chunks(15).enumerate() {
        assert!(network.iter().all(|r| r.member == m + 1));
        assert_eq!(
            network.iter().map(|r| r.epoch).collect::<Vec<_>>(),
            (1..=15).collect::<Vec<_>>()
        );
        assert!(
            network[14].loss < network[0].loss * 0.5,
            "loss of network {} did not fall: {} -> {}",
            m + 1,
            network[0].loss,
            network[14].loss
        );
    }

    let evaluation = assert_classifies_well(&trained.classifier, &test_set);
    assert!(evaluation.window.macro_avg.f1 > 0.95);
    assert!(
        evaluation.window.log_loss < 0.3,
        "log loss {}",
        evaluation.window.log_loss
    );
    assert_eq!(evaluation.recording.count, 12);

    // The artifact says what it was trained and validated on.
    let meta = trained.artifact.meta();
    assert_eq!(meta.classes, common::SPECIES);
    assert_eq!(meta.training_data.recordings, fit.len());
    assert_eq!(
        meta.validation_data.as_ref().map(|d| d.recordings),
        Some(val.len())
    );
    assert_eq!(meta.history.len(), 15 * members);
    assert_eq!(meta.network.members, members);
    assert!(meta.metrics.contains_key("validation"));

    // The served scores are the network's, each window averaged with its
    // neighbours in the recording (the recommended context, one each side).
    let k = trained.classifier.info().context_windows;
    assert_eq!(k, birdsong_model::RECOMMENDED_CONTEXT_WINDOWS);
    let raw = trained.classifier.predict(&test_set[0].windows).unwrap();
    let probs = trained
        .classifier
        .score_recordings(&[&test_set[0].windows])
        .unwrap();
    assert_eq!(probs.len(), raw.len());
    for (i, served) in probs.iter().enumerate() {
        let near = &raw[i.saturating_sub(k)..(i + k + 1).min(raw.len())];
        for (c, v) in served.iter().enumerate() {
            let mean = near.iter().map(|r| r[c]).sum::<f32>() / near.len() as f32;
            assert!((v - mean).abs() < 1e-6, "window {i}, class {c}");
        }
    }

    // Top-k and the recording summary agree with the probabilities.
    assert!(
        probs
            .iter()
            .all(|p| (p.iter().sum::<f32>() - 1.0).abs() < 1e-4)
    );
    let top = trained.classifier.top_k(&probs[0], 2);
    assert_eq!(top.len(), 2);
    assert!(top[0].probability >= top[1].probability);
    let summary = trained.classifier.summarize(&probs, 1).unwrap();
    assert_eq!(summary.windows, 12);
    assert_eq!(summary.top[0].species, test_set[0].label);

    // Many recordings in one pass give the same answers as one at a time.
    let batch: Vec<&[_]> = vec![&test_set[0].windows, &[], &test_set[5].windows];
    let together = trained.classifier.classify_recordings(&batch, 2).unwrap();
    assert_eq!(together.len(), 3);
    assert!(together[1].windows.is_empty() && together[1].summary.is_none());
    let batch_summary = together[0].summary.as_ref().unwrap();
    assert_eq!(batch_summary.top[0].species, summary.top[0].species);
    for (a, b) in batch_summary
        .probabilities
        .iter()
        .zip(&summary.probabilities)
    {
        assert!((a - b).abs() < 1e-6);
    }
    let alone = trained
        .classifier
        .score_recordings(&[&test_set[5].windows])
        .unwrap();
    let from_batch: Vec<Vec<f32>> = together[2]
        .windows
        .iter()
        .map(|w| w.probabilities.clone())
        .collect();
    for (a, b) in alone.iter().flatten().zip(from_batch.iter().flatten()) {
        assert!((a - b).abs() < 1e-6);
    }
    assert_eq!(together[2].windows[0].top.len(), 2);
}

#[test]
fn same_seed_same_weights_other_seed_other_weights() {
    let data = common::corpus(30, 3, 6);
    let a = train(&data, None, &quick_config(42, 2), |_| {}).unwrap();
    let b = train(&data, None, &quick_config(42, 2), |_| {}).unwrap();
    let c = train(&data, None, &quick_config(43, 2), |_| {}).unwrap();
    assert_eq!(a.artifact.weights(), b.artifact.weights());
    assert_eq!(
        a.artifact.meta().weights_sha256,
        b.artifact.meta().weights_sha256
    );
    assert_eq!(a.artifact.meta().history, b.artifact.meta().history);
    assert_ne!(a.artifact.weights(), c.artifact.weights());
    let windows = &data[0].windows;
    assert_eq!(
        a.classifier.predict(windows).unwrap(),
        b.classifier.predict(windows).unwrap()
    );
}

#[test]
fn weight_averaging_learns_and_changes_the_weights() {
    // Averaging the last epochs must still give a working classifier, and a different
    // one from the last epoch's weights (else the option does nothing).
    let train_set = common::corpus(10, 8, 12);
    let test_set = common::corpus(20, 4, 12);
    let last = train(&train_set, None, &quick_config(5, 15), |_| {}).unwrap();
    let averaged_config = TrainConfig {
        average_last_epochs: 5,
        ..quick_config(5, 15)
    };
    let averaged = train(&train_set, None, &averaged_config, |_| {}).unwrap();
    assert_ne!(last.artifact.weights(), averaged.artifact.weights());
    let again = train(&train_set, None, &averaged_config, |_| {}).unwrap();
    assert_eq!(averaged.artifact.weights(), again.artifact.weights());
    assert_eq!(averaged.artifact.meta().training.average_last_epochs, 5);
    assert_classifies_well(&averaged.classifier, &test_set);
}

#[test]
fn early_stopping_stops_and_needs_validation() {
    let data = common::corpus(40, 4, 6);
    // Softmax: its validation loss on these clusters is noisy from epoch to epoch, so
    // patience 1 must stop it (sigmoid outputs improve smoothly on separable data).
    let config = TrainConfig {
        stopping: Stopping::EarlyStopping { patience: 1 },
        output: birdsong_model::Output::Softmax,
        ..quick_config(1, 200)
    };
    let err = train(&data, None, &config, |_| {}).unwrap_err();
    assert!(matches!(err, ModelError::InvalidConfig(_)), "{err}");
    let (fit, val) = split_by_recording(data, 0.25, 1).unwrap();
    let trained = train(&fit, Some(&val), &config, |_| {}).unwrap();
    // Validation loss on separable clusters cannot improve for 200 epochs straight; each
    // network of the ensemble stops on its own.
    let history = &trained.artifact.meta().history;
    for member in 1..=config.members {
        let epochs = history.iter().filter(|r| r.member == member).count();
        assert!(
            (1..200).contains(&epochs),
            "network {member}: {epochs} epochs"
        );
    }
}

#[test]
fn refuses_unusable_training_sets() {
    let one_class: Vec<Recording> = common::corpus(50, 2, 3)
        .into_iter()
        .filter(|r| r.label == common::SPECIES[0])
        .collect();
    assert!(matches!(
        train(&one_class, None, &quick_config(1, 1), |_| {}),
        Err(ModelError::InvalidDataset(_))
    ));
    let data = common::corpus(50, 2, 3);
    let mut stranger = data[0].clone();
    stranger.label = "Unknown warbler".into();
    assert!(matches!(
        train(
            &data,
            Some(&[stranger.clone()]),
            &quick_config(1, 1),
            |_| {}
        ),
        Err(ModelError::UnknownLabel(_))
    ));
    let trained = train(&data, None, &quick_config(1, 1), |_| {}).unwrap();
    assert!(matches!(
        evaluate(&trained.classifier, &[stranger]),
        Err(ModelError::UnknownLabel(_))
    ));
}

#[test]
fn classifier_is_usable_from_many_threads() {
    let data = common::corpus(60, 2, 4);
    let trained = train(&data, None, &quick_config(3, 1), |_| {}).unwrap();
    let classifier: std::sync::Arc<Classifier> = std::sync::Arc::new(trained.classifier);
    let expected = classifier.predict(&data[0].windows).unwrap();
    std::thread::scope(|s| {
        for _ in 0..4 {
            let c = classifier.clone();
            let windows = &data[0].windows;
            let expected = &expected;
            s.spawn(move || assert_eq!(&c.predict(windows).unwrap(), expected));
        }
    });
}

#[test]
fn an_ensembles_first_network_is_the_one_network_model_and_the_others_change_it() {
    let train_set = common::corpus(10, 8, 12);
    let test_set = common::corpus(20, 4, 12);
    let with_members = |members| {
        let config = TrainConfig {
            members,
            ..quick_config(5, 15)
        };
        train(&train_set, None, &config, |_| {}).unwrap()
    };
    let (single, ensemble) = (with_members(1), with_members(3));
    // The first network draws the same seeds whatever the ensemble size, so a
    // one-network model is what it was before ensembles existed; the other two change
    // the answer.
    let losses = |history: &[birdsong_model::EpochReport]| -> Vec<f64> {
        history.iter().map(|r| r.loss).collect()
    };
    let history = &ensemble.artifact.meta().history;
    assert_eq!(
        losses(&single.artifact.meta().history),
        losses(&history[..15])
    );
    assert!(history.iter().all(|r| r.members == 3));
    assert_ne!(losses(&history[..15]), losses(&history[15..30]));
    assert_eq!(single.artifact.meta().network.members, 1);
    assert_eq!(ensemble.artifact.meta().network.members, 3);
    assert_ne!(
        single.classifier.predict(&test_set[0].windows).unwrap(),
        ensemble.classifier.predict(&test_set[0].windows).unwrap()
    );
    let evaluation = assert_classifies_well(&ensemble.classifier, &test_set);
    assert!(evaluation.window.macro_avg.f1 > 0.95);
}

#[test]
fn a_refit_learns_from_the_held_out_recordings_and_carries_the_judged_figures() {
    let data = common::corpus(41, 4, 6);
    let test_set = common::corpus(42, 2, 6);
    let config = TrainConfig {
        stopping: Stopping::EarlyStopping { patience: 1 },
        output: birdsong_model::Output::Softmax,
        members: 2,
        ..quick_config(1, 200)
    };
    let (fit, held) = split_by_recording(data.clone(), 0.25, 1).unwrap();
    let mut judged = train(&fit, Some(&held), &config, |_| {}).unwrap();
    let thresholds = birdsong_model::calibrate(&judged.classifier, &held, 0.9, None).unwrap();
    judged.artifact.set_thresholds(thresholds.clone());
    judged
        .artifact
        .set_metrics("holdout", evaluate(&judged.classifier, &held).unwrap());

    let refit_config = birdsong_model::refit_config(&config, &judged.artifact.meta().history);
    assert_eq!(refit_config.stopping, Stopping::FixedEpochs);
    let judged_epochs = judged.artifact.meta().history.len();
    assert!(
        (1..=judged_epochs).contains(&refit_config.epochs),
        "{} of {judged_epochs}",
        refit_config.epochs
    );
    let mut refit = train(&data, None, &refit_config, |_| {}).unwrap();
    assert_eq!(
        refit.artifact.meta().history.len(),
        refit_config.epochs * config.members
    );
    birdsong_model::carry_over(&judged.artifact, &mut refit.artifact).unwrap();
    let meta = refit.artifact.meta();
    let relation = meta.refit.clone().expect("refit recorded");
    assert_eq!(relation.recordings, data.len());
    assert_eq!(relation.added_recordings, held.len());
    assert_eq!(relation.epochs, refit_config.epochs);
    assert_eq!(
        relation.judged_weights_sha256,
        judged.artifact.meta().weights_sha256
    );
    assert_eq!(meta.thresholds.as_ref(), Some(&thresholds));
    assert_eq!(meta.metrics, judged.artifact.meta().metrics);
    assert_eq!(meta.training_data.recordings, data.len());
    assert_ne!(refit.artifact.weights(), judged.artifact.weights());
    // The served model detects with the judged thresholds and still classifies.
    let served = Classifier::from_artifact(&refit.artifact).unwrap();
    assert_classifies_well(&served, &test_set);
}
