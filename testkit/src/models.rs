//! Trained models for tests and benchmarks, published the way the
//! retrainer publishes them.
//!
//! Tests of the worker, the API and the retrainer need a real promoted model
//! in the registry: weights and metadata in the object store, a
//! `model_versions` row, and the promotion announced on the model-events
//! exchange, all written by the registry library itself. [`publish_model`] trains the reference
//! network on synthetic calls of `classes` species (a few seconds on one
//! core) and goes through [`registry::promote`], so what a test exercises is
//! the production path, not a shortcut.
//!
//! Behind the `models` feature, so that crates which only need a database do
//! not build the model library.

use anyhow::Context;
use birdsong_audio::WindowConfig;
use birdsong_common::queue::Publisher;
use birdsong_model::{Artifact, Recording, TrainConfig};
use birdsong_registry::{self as registry, NewVersion, StoredVersion};

use crate::TestEnv;
use crate::audio::synthetic_wav;

/// Recordings of synthetic species `0..classes`, `per_class` each, labelled
/// `species-<n>`, analysed with the default windowing.
pub fn synthetic_recordings(
    classes: usize,
    per_class: usize,
    seconds: f32,
    seed: u64,
) -> anyhow::Result<Vec<Recording>> {
    let cfg = WindowConfig::default();
    let mut out = Vec::with_capacity(classes * per_class);
    for species in 0..classes {
        for i in 0..per_class {
            let wav = synthetic_wav(species, seconds, seed + (species * per_class + i) as u64);
            let analysis = birdsong_audio::analyze_bytes(wav, &cfg)
                .with_context(|| format!("analysing synthetic species {species}"))?;
            out.push(Recording {
                id: format!("s{species}-{i}"),
                label: format!("species-{species}"),
                windows: analysis
                    .windows
                    .iter()
                    .map(|w| w.features.to_vec())
                    .collect(),
            });
        }
    }
    Ok(out)
}

/// Trains the default network on synthetic species `0..classes`.
pub fn train_synthetic(classes: usize) -> anyhow::Result<Artifact> {
    let recordings = synthetic_recordings(classes, 4, 10.0, 1000)?;
    let config = TrainConfig {
        epochs: 40,
        seed: 1,
        ..TrainConfig::default()
    };
    let trained = birdsong_model::train(&recordings, None, &config, |_| {})
        .context("training the synthetic model")?;
    Ok(trained.artifact)
}

/// A spectrogram CNN trained briefly on synthetic species `0..classes` (their
/// recordings' band power): what the worker serves and the benchmarks time for
/// the mel backbone. A few epochs: enough to tell the synthetic calls apart.
pub fn train_cnn_synthetic(classes: usize) -> anyhow::Result<Artifact> {
    use birdsong_model::{Spectrogram, SpectrogramRecording};
    let mut recordings = Vec::with_capacity(classes * 3);
    for species in 0..classes {
        for i in 0..3 {
            let wav = synthetic_wav(species, 10.0, 1000 + (species * 3 + i) as u64);
            recordings.push(SpectrogramRecording {
                id: format!("s{species}-{i}"),
                label: format!("species-{species}"),
                spectrogram: Spectrogram::of_bytes(wav)
                    .with_context(|| format!("synthetic species {species}"))?,
            });
        }
    }
    let mut config = TrainConfig {
        epochs: 6,
        seed: 1,
        ..TrainConfig::cnn()
    };
    if let Some(s) = config.spectrogram.as_mut() {
        s.crops_per_second = 1.0;
    }
    let trained = birdsong_model::train_cnn(&recordings, None, &config, |_| {})
        .context("training the synthetic cnn")?;
    Ok(trained.artifact)
}

/// A model for `backbone`, trained on synthetic data ([`train_synthetic`],
/// [`train_cnn_synthetic`], [`train_embedding_head`]).
pub fn train_for(backbone: birdsong_model::Backbone, classes: usize) -> anyhow::Result<Artifact> {
    match backbone {
        birdsong_model::Backbone::Acoustic => train_synthetic(classes),
        birdsong_model::Backbone::Mel => train_cnn_synthetic(classes),
        birdsong_model::Backbone::Birdnet => train_embedding_head(classes),
    }
}

/// A model on the BirdNET backbone, trained on made-up embeddings (each species
/// a different mean, with noise): for testing what a process does with a model
/// whose backbone it may not be able to run, without BirdNET installed.
pub fn train_embedding_head(classes: usize) -> anyhow::Result<Artifact> {
    use birdsong_model::{BIRDNET_VECTOR, FeatureSet, Output};
    let mut state = 12_345u64;
    let mut noise = move || {
        state = state
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (state >> 40) as f32 / (1u64 << 24) as f32 - 0.5
    };
    let recordings: Vec<Recording> = (0..classes * 3)
        .map(|i| {
            let species = i % classes;
            Recording {
                id: format!("e{i}"),
                label: format!("species-{species}"),
                windows: (0..6)
                    .map(|_| {
                        (0..BIRDNET_VECTOR)
                            .map(|j| if j % classes == species { 1.0 } else { 0.0 } + noise())
                            .collect()
                    })
                    .collect(),
            }
        })
        .collect();
    let config = TrainConfig {
        features: FeatureSet::Birdnet,
        architecture: birdsong_model::network::LINEAR.into(),
        members: 1,
        epochs: 5,
        output: Output::Sigmoid,
        ..TrainConfig::default()
    };
    let trained = birdsong_model::train(&recordings, None, &config, |_| {})
        .context("training the embedding head")?;
    Ok(trained.artifact)
}

/// Publishes `artifact` as `version` through the registry (immutable
/// objects, then the `model_versions` row) without promoting it.
pub async fn store_model(
    env: &TestEnv,
    version: &str,
    mut artifact: Artifact,
) -> anyhow::Result<StoredVersion> {
    registry::artifacts::publish(
        &env.pool,
        &env.store,
        &mut artifact,
        &NewVersion {
            version: version.to_string(),
            status_reason: Some("published by a test".into()),
            ..NewVersion::default()
        },
    )
    .await
    .with_context(|| format!("publishing model {version}"))
}

/// Trains a model of `classes` synthetic species, publishes it as `version`
/// and promotes it (announcing it to the workers).
pub async fn publish_model(env: &TestEnv, version: &str, classes: usize) -> anyhow::Result<()> {
    let artifact = tokio::task::spawn_blocking(move || train_synthetic(classes))
        .await
        .context("training thread")??;
    store_model(env, version, artifact).await?;
    let publisher = Publisher::new(&env.amqp).await?;
    registry::promote(
        &env.pool,
        &publisher,
        &env.config.queues.model_exchange,
        version,
        "published by a test",
    )
    .await?;
    Ok(())
}
