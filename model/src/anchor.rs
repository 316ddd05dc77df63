//! Heads anchored on a pretrained species layer: the user's labels adjust BirdNET's
//! own columns instead of replacing them.
//!
//! A head trained from scratch on a few recordings per species learns the species the
//! user labelled, but also learns to be sure of anything it has not seen (pr18 with xc3
//! as the unknown species: open-set AUROC 0.87 for a logistic head); BirdNET's own
//! layer, restricted to the same species, knows "none of these" well (0.98) but cannot
//! name species outside its 6 522 labels and misses some calls of the ones it has. The
//! `anchored` architecture takes both:
//!
//! 1. a linear head starts from BirdNET's column for every species BirdNET knows (zero
//!    for the others) and is trained one-vs-rest, sigmoid, on the user's windows with
//!    a penalty on its squared distance from those columns ([`ANCHOR_STRENGTH`]);
//! 2. the served model is the ensemble of that head and BirdNET's columns themselves
//!    (the head's own column where BirdNET has none), so every score is the mean of
//!    the adjusted and the original layer.
//!
//! Both members are linear layers on the raw embedding (no input scaling, as BirdNET
//! reads it), so the artifact is an ordinary two-member ensemble every loader already
//! serves. Measured in `experiments/README.md` (pr18, xc3 as the unknown species).

use std::collections::BTreeMap;

use crate::{ModelError, Result};

/// Pull of the anchor against the data: the penalty is this times the squared
/// distance of the head's weights from the anchor's, weighed against the sum of the
/// training windows' (class-balanced) losses, so the more windows a user labels the
/// further the head may move. Chosen by 4-fold cross-validation over recordings of
/// pr18's training split (`experiments/anchor_strength.py`): 1 to 30 are within fold
/// noise of each other on recording accuracy (0.83–0.85), window macro F1 (0.57–0.58)
/// and open-set AUROC (0.954–0.966); at 100 the AUROC drops (0.945). 10 is the middle
/// of that plateau.
pub const ANCHOR_STRENGTH: f64 = 10.0;

/// A pretrained layer's columns by species name: the weights (one per input of the
/// feature set the head reads) and bias of every species it knows.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Anchor {
    /// Where the columns come from, recorded in the artifact.
    pub source: String,
    /// Inputs per column.
    pub width: usize,
    /// Columns by the training label they anchor.
    pub columns: BTreeMap<String, (Vec<f32>, f32)>,
}

impl Anchor {
    /// An empty anchor of `width` inputs.
    pub fn new(source: impl Into<String>, width: usize) -> Self {
        Self {
            source: source.into(),
            width,
            columns: BTreeMap::new(),
        }
    }

    /// The anchor of BirdNET V2.4's species layer, from its columns by label (as
    /// `SpeciesLayer::columns_for` gives them).
    pub fn birdnet(columns: impl IntoIterator<Item = (String, Vec<f32>, f32)>) -> Result<Self> {
        let mut anchor = Self::new("BirdNET V2.4's species layer", crate::BIRDNET_EMBEDDING);
        for (label, weights, bias) in columns {
            anchor.insert(label, weights, bias)?;
        }
        Ok(anchor)
    }

    /// Adds the column anchoring `label`; refuses one of the wrong width.
    pub fn insert(&mut self, label: impl Into<String>, weights: Vec<f32>, bias: f32) -> Result<()> {
        if weights.len() != self.width
            || !bias.is_finite()
            || weights.iter().any(|w| !w.is_finite())
        {
            return Err(ModelError::InvalidConfig(format!(
                "an anchor column needs {} finite weights, got {}",
                self.width,
                weights.len()
            )));
        }
        self.columns.insert(label.into(), (weights, bias));
        Ok(())
    }

    /// The row-major `width × classes` weights and biases for `classes`, with zeros
    /// where the anchor has no column, and which classes it anchors.
    pub(crate) fn layer(&self, classes: &[String]) -> (Vec<f32>, Vec<f32>, Vec<bool>) {
        let k = classes.len();
        let mut weights = vec![0.0; self.width * k];
        let mut bias = vec![0.0; k];
        let mut known = vec![false; k];
        for (c, class) in classes.iter().enumerate() {
            if let Some((w, b)) = self.columns.get(class) {
                for (row, value) in w.iter().enumerate() {
                    weights[row * k + c] = *value;
                }
                bias[c] = *b;
                known[c] = true;
            }
        }
        (weights, bias, known)
    }
}

/// The anchor member of the served ensemble: the anchor's columns where it has them,
/// the trained head's elsewhere (so the mean of the two is the head's score there).
pub(crate) fn anchor_member(
    anchor: (&[f32], &[f32], &[bool]),
    head: (&[f32], &[f32]),
) -> (Vec<f32>, Vec<f32>) {
    let (anchor_w, anchor_b, known) = anchor;
    let (head_w, head_b) = head;
    let k = known.len();
    let weights = anchor_w
        .iter()
        .zip(head_w)
        .enumerate()
        .map(|(i, (a, h))| if known[i % k] { *a } else { *h })
        .collect();
    let bias = known
        .iter()
        .zip(anchor_b.iter().zip(head_b))
        .map(|(&known, (a, h))| if known { *a } else { *h })
        .collect();
    (weights, bias)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::network::{ANCHORED, Ensemble, LINEAR};
    use crate::{BIRDNET_EMBEDDING, BIRDNET_VECTOR, FeatureSet, Output, Recording, TrainConfig};

    /// Three species, each a different direction of the embedding plus noise.
    fn embeddings() -> Vec<Recording> {
        let mut state = 99u64;
        let mut noise = move || {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (state >> 40) as f32 / (1u64 << 24) as f32 - 0.5
        };
        (0..9)
            .map(|i| Recording {
                id: format!("r{i}"),
                label: format!("s{}", i % 3),
                windows: (0..8)
                    .map(|_| {
                        (0..BIRDNET_VECTOR)
                            .map(|j| if j % 3 == i % 3 { 1.0 } else { 0.0 } + noise())
                            .collect()
                    })
                    .collect(),
            })
            .collect()
    }

    fn config(architecture: &str) -> TrainConfig {
        TrainConfig {
            architecture: architecture.into(),
            features: FeatureSet::Birdnet,
            members: 1,
            epochs: 8,
            output: Output::Sigmoid,
            ..TrainConfig::default()
        }
    }

    /// An anchor for s0 only, pointing at a direction the data does not use.
    fn anchor() -> Anchor {
        let mut anchor = Anchor::new("test layer", BIRDNET_EMBEDDING);
        let weights = (0..BIRDNET_EMBEDDING)
            .map(|j| if j % 5 == 4 { 0.3 } else { 0.0 })
            .collect();
        anchor.insert("s0", weights, -1.0).unwrap();
        anchor
    }

    fn members(artifact: &crate::Artifact) -> Vec<(Vec<f32>, Vec<f32>)> {
        let ensemble = Ensemble::from_bytes(
            &artifact.meta().network,
            artifact.weights(),
            &crate::device::cpu(),
        )
        .unwrap();
        ensemble
            .members()
            .iter()
            .map(|m| m.output_layer().unwrap())
            .collect()
    }

    fn column(weights: &[f32], k: usize, c: usize) -> Vec<f32> {
        weights.iter().skip(c).step_by(k).copied().collect()
    }

    fn distance(a: &[f32], b: &[f32]) -> f32 {
        a.iter().zip(b).map(|(x, y)| (x - y) * (x - y)).sum()
    }

    #[test]
    fn the_served_model_is_the_head_and_the_anchor_averaged() {
        let recordings = embeddings();
        let anchor = anchor();
        let trained =
            crate::train_anchored(&recordings, None, &config(ANCHORED), &anchor, |_| {}).unwrap();
        let meta = trained.artifact.meta();
        assert_eq!(meta.architecture, ANCHORED);
        assert_eq!(meta.network.members, 2);
        assert!(
            meta.source
                .as_deref()
                .unwrap()
                .contains("test layer (1 of 3 species)")
        );
        let files = trained.artifact.to_files().unwrap();
        let loaded = crate::Artifact::from_files_any_backbone(&files[0].1, &files[1].1).unwrap();
        let layers = members(&loaded);
        let (head_w, head_b) = &layers[0];
        let (anchor_w, anchor_b) = &layers[1];
        // s0 is the anchor's own column; s1 and s2, which it lacks, the head's.
        assert_eq!(column(anchor_w, 3, 0), anchor.columns["s0"].0);
        assert_eq!(anchor_b[0], -1.0);
        for c in 1..3 {
            assert_eq!(column(anchor_w, 3, c), column(head_w, 3, c));
            assert_eq!(anchor_b[c], head_b[c]);
        }
        // And the classifier serves the mean of the two members' sigmoids.
        let classifier = crate::Classifier::from_artifact(&loaded).unwrap();
        let x = &recordings[0].windows[0];
        let p = classifier.predict(std::slice::from_ref(x)).unwrap();
        let sigmoid = |z: f32| 1.0 / (1.0 + (-z).exp());
        let logit = |w: &[f32], b: f32| w.iter().zip(x).map(|(w, x)| w * x).sum::<f32>() + b;
        let expected = (sigmoid(logit(&column(head_w, 3, 0), head_b[0]))
            + sigmoid(logit(&anchor.columns["s0"].0, -1.0)))
            / 2.0;
        assert!(
            (p[0][0] - expected).abs() < 1e-4,
            "{} vs {expected}",
            p[0][0]
        );
    }

    #[test]
    fn the_head_stays_near_the_anchor_that_a_free_head_leaves() {
        let recordings = embeddings();
        let anchor = anchor();
        let anchored =
            crate::train_anchored(&recordings, None, &config(ANCHORED), &anchor, |_| {}).unwrap();
        let free = crate::train(&recordings, None, &config(LINEAR), |_| {}).unwrap();
        let target = &anchor.columns["s0"].0;
        let near = distance(&column(&members(&anchored.artifact)[0].0, 3, 0), target);
        // The free head reads standardised inputs: compare it in raw units.
        let scaler = &free.artifact.meta().scaler;
        let free_w: Vec<f32> = column(&members(&free.artifact)[0].0, 3, 0)
            .iter()
            .zip(&scaler.std)
            .map(|(w, s)| w / s)
            .collect();
        let far = distance(&free_w, target);
        assert!(near < far / 4.0, "anchored {near}, free {far}");
    }

    #[test]
    fn an_anchor_goes_with_the_anchored_architecture_only() {
        let recordings = embeddings();
        let anchor = anchor();
        assert!(crate::train(&recordings, None, &config(ANCHORED), |_| {}).is_err());
        assert!(
            crate::train_anchored(&recordings, None, &config(LINEAR), &anchor, |_| {}).is_err()
        );
        let several = TrainConfig {
            members: 3,
            ..config(ANCHORED)
        };
        assert!(crate::train_anchored(&recordings, None, &several, &anchor, |_| {}).is_err());
        let narrow = Anchor::new("narrow", 10);
        assert!(
            crate::train_anchored(&recordings, None, &config(ANCHORED), &narrow, |_| {}).is_err()
        );
    }

    #[test]
    fn unknown_species_take_the_heads_column() {
        let mut anchor = Anchor::new("test", 2);
        anchor.insert("b", vec![1.0, 2.0], 3.0).unwrap();
        assert!(anchor.insert("c", vec![1.0], 0.0).is_err());
        let classes = vec!["a".to_string(), "b".to_string()];
        let (w, b, known) = anchor.layer(&classes);
        assert_eq!(w, vec![0.0, 1.0, 0.0, 2.0]);
        assert_eq!(b, vec![0.0, 3.0]);
        assert_eq!(known, vec![false, true]);
        let head_w = [5.0, 6.0, 7.0, 8.0];
        let head_b = [9.0, 10.0];
        let (mw, mb) = anchor_member((&w, &b, &known), (&head_w, &head_b));
        assert_eq!(mw, vec![5.0, 1.0, 7.0, 2.0]);
        assert_eq!(mb, vec![9.0, 3.0]);
    }
}
