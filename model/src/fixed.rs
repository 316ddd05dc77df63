//! Models whose weights were not trained here: a layer someone else trained,
//! packaged as an artifact like any other.
//!
//! BirdNET's own species layer is linear on its embedding, so "BirdNET restricted to
//! my species list" is that layer's columns for those species: a user with no labels
//! yet gets BirdNET's detections for exactly their species, versioned, served, stored
//! and queried like a trained model, and can later compare it with heads trained on
//! their own labels over the same stored embeddings.

use crate::artifact::{Artifact, ArtifactMeta};
use crate::config::TrainConfig;
use crate::dataset::DataSummary;
use crate::features::FeatureSet;
use crate::network::{Ensemble, LINEAR, Network, NetworkConfig, Output};
use crate::report::Thresholds;
use crate::scaler::Scaler;
use crate::{ModelError, Result};

/// One linear layer per species, with its origin.
#[derive(Debug, Clone, PartialEq)]
pub struct LinearLayer {
    /// Species in output order.
    pub classes: Vec<String>,
    /// Row-major `features.width() × classes.len()` weights.
    pub weights: Vec<f32>,
    /// One bias per species.
    pub bias: Vec<f32>,
    /// The columns of the backbone's vectors the layer reads.
    pub features: FeatureSet,
    /// The detection threshold of every species (on the sigmoid of its logit).
    pub threshold: f32,
    /// Where the weights come from, recorded in the artifact.
    pub source: String,
}

/// The artifact of `layer`: sigmoid outputs, no input scaling (the layer reads the
/// raw vectors it was trained on), one threshold for every species.
pub fn linear_artifact(layer: LinearLayer) -> Result<Artifact> {
    let width = layer.features.width();
    let k = layer.classes.len();
    if k == 0 || layer.bias.len() != k || layer.weights.len() != width * k {
        return Err(ModelError::InvalidConfig(format!(
            "{} species, {} biases and {} weights do not make a layer on {width} inputs",
            k,
            layer.bias.len(),
            layer.weights.len()
        )));
    }
    if !(layer.threshold > 0.0 && layer.threshold < 1.0) {
        return Err(ModelError::InvalidConfig(format!(
            "threshold {} is not in (0, 1)",
            layer.threshold
        )));
    }
    let device = crate::device::cpu();
    let network = Network::linear(layer.weights, layer.bias, width, &device)?;
    let weights = Ensemble::new(vec![network])?.to_bytes()?;
    let mut config = NetworkConfig::named(LINEAR, width, k)?;
    config.output = Output::Sigmoid;
    let training = TrainConfig {
        architecture: LINEAR.into(),
        features: layer.features,
        members: 1,
        epochs: 0,
        output: Output::Sigmoid,
        quiet_margin_db: None,
        synthetic_negatives: false,
        ..TrainConfig::default()
    };
    let scaler = Scaler::identity(width);
    let mut meta = ArtifactMeta::new(
        config,
        training,
        layer.classes,
        scaler,
        layer.features.backbone().feature_version().to_string(),
        DataSummary::of(&[]),
        None,
        Vec::new(),
    );
    meta.source = Some(layer.source);
    let mut artifact = Artifact::new(meta, weights)?;
    artifact.set_thresholds(Thresholds::uniform(k, layer.threshold));
    Ok(artifact)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{BIRDNET_EMBEDDING, BIRDNET_VECTOR, Classifier};

    #[test]
    fn a_linear_layer_scores_the_sigmoid_of_its_logits() {
        let k = 2;
        let mut weights = vec![0.0; BIRDNET_EMBEDDING * k];
        // Species a reads input 0, species b input 1 (negatively).
        weights[0] = 2.0;
        // Row-major inputs × species: input 1, species 1.
        weights[k + 1] = -3.0;
        let artifact = linear_artifact(LinearLayer {
            classes: vec!["a".into(), "b".into()],
            weights,
            bias: vec![0.5, 0.0],
            features: FeatureSet::Birdnet,
            threshold: 0.4,
            source: "test".into(),
        })
        .unwrap();
        assert_eq!(artifact.meta().source.as_deref(), Some("test"));
        let files = artifact.to_files().unwrap();
        let loaded = Artifact::from_files_any_backbone(&files[0].1, &files[1].1).unwrap();
        let classifier = Classifier::from_artifact(&loaded).unwrap();
        let mut x = vec![0.0; BIRDNET_VECTOR];
        x[0] = 1.0;
        x[1] = 1.0;
        let p = classifier.predict(&[x]).unwrap();
        let sigmoid = |z: f32| 1.0 / (1.0 + (-z).exp());
        assert!((p[0][0] - sigmoid(2.5)).abs() < 1e-5, "{:?}", p[0]);
        assert!((p[0][1] - sigmoid(-3.0)).abs() < 1e-5, "{:?}", p[0]);
        assert_eq!(classifier.thresholds(), &[0.4, 0.4]);
        let found = classifier.detections(&p[0]);
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].species, "a");
    }

    #[test]
    fn a_layer_of_the_wrong_size_is_refused() {
        let err = linear_artifact(LinearLayer {
            classes: vec!["a".into()],
            weights: vec![0.0; 3],
            bias: vec![0.0],
            features: FeatureSet::Birdnet,
            threshold: 0.5,
            source: "test".into(),
        })
        .unwrap_err();
        assert!(err.to_string().contains("do not make a layer"), "{err}");
    }
}
