//! How familiar a window looks: a species' score counts only where the window lies
//! near that species' own training calls in the network's embedding.
//!
//! A per-species sigmoid learns a species *against the others it was shown*: a bird
//! from elsewhere that looks more like one of them than like the rest scores high for
//! it, and no threshold tells the two apart (the pr18 CNN detected 24 % of xc3's
//! windows at 0.5). The embedding the output layer reads ([`crate::Classifier::embed`])
//! keeps what the scores throw away: how far the window is from anything the species
//! sounded like in training. So training keeps, for each species, its calling training
//! windows (those scoring at least [`REFERENCE_MIN_SCORE`] for it) as references, and
//! a radius: the [`FAMILIAR_QUANTILE`] quantile of each reference's cosine distance
//! to the nearest reference *from another recording* of the species, which is how far
//! a new recording's calls of it can be expected to lie. A served window farther than
//! that from every reference of a species gets a score for it below every detection
//! threshold ([`unfamiliar`]). Thresholds, evaluations and the worker all see the
//! gated scores, so "none of these" is a window whose familiar species all score
//! low, or that is familiar to none.
//!
//! Measured (model README, "Familiarity"; same weights with and without the gate,
//! thresholds 0.5): the xc3 CNN detected 12 % of pr18's windows instead of 69 %, and
//! named 27 of 28 test recordings instead of 25; the pr18 CNN 15 % of xc3's instead
//! of 24 %, naming as many, with a lower window recall (0.475 against 0.506).
//!
//! The references are stored in the artifact as unit vectors quantised to a byte per
//! value (the embedding is pooled ReLU activations, never negative), at most
//! [`MAX_REFERENCES`] per species.

use ndarray::linalg::general_mat_mul;
use ndarray::{ArrayView2, ArrayViewMut2};
use serde::{Deserialize, Serialize};

use crate::{ModelError, Result};

/// Share of a species' references within its radius, each measured against the
/// references from the species' other recordings. Chosen on xc3 and pr18's training
/// splits against two sets of unknown species (experiments README).
pub const FAMILIAR_QUANTILE: f64 = 0.8;
/// A training window scoring at least this for its recording's species is one of
/// the species' calls (the rest are the recording's quiet stretches and other sounds).
pub const REFERENCE_MIN_SCORE: f32 = 0.5;
/// References kept per species, evenly spaced over its calling windows: bounds the
/// artifact (a 512-value embedding takes 1 kB as hex) and the distance computations
/// per served window. 128 separated as well as every window on xc3 (253 per species).
pub const MAX_REFERENCES: usize = 128;

/// What the artifact stores (`ArtifactMeta::familiarity`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Familiarity {
    /// The quantile the radii were chosen at.
    pub quantile: f64,
    /// Values per embedding.
    pub width: usize,
    /// One per class, in class order.
    pub species: Vec<FamiliarSpecies>,
}

/// One species' references and radius.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FamiliarSpecies {
    /// Cosine distance from the nearest reference beyond which a window's score for
    /// the species is lowered below every threshold; `None` where the species' references come from fewer than two
    /// recordings, so that no distance between recordings could be measured, and its
    /// scores are not gated.
    pub radius: Option<f32>,
    /// Recordings the references come from.
    pub recordings: usize,
    /// The references: unit-length embeddings, each value × 255 rounded to a byte,
    /// hex-encoded, `width` bytes each.
    pub references: String,
}

/// One training window for [`Familiarity::fit`].
pub(crate) struct TrainingWindow<'a> {
    /// Index of its recording (any id unique per recording).
    pub recording: usize,
    /// Its recording's class.
    pub class: usize,
    /// Its score for that class.
    pub score: f32,
    /// Its embedding.
    pub embedding: &'a [f32],
}

/// Unit length (all zeros stay zeros).
fn normalised(v: &[f32]) -> Vec<f32> {
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm > 0.0 {
        v.iter().map(|x| x / norm).collect()
    } else {
        v.to_vec()
    }
}

fn quantise(unit: &[f32]) -> Vec<u8> {
    unit.iter()
        .map(|v| (v.clamp(0.0, 1.0) * 255.0).round() as u8)
        .collect()
}

fn dequantise(bytes: &[u8]) -> Vec<f32> {
    normalised(
        &bytes
            .iter()
            .map(|&b| f32::from(b) / 255.0)
            .collect::<Vec<_>>(),
    )
}

fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// The `q` quantile of `values` with linear interpolation between order statistics
/// (numpy's default), `None` for none.
fn quantile(mut values: Vec<f32>, q: f64) -> Option<f32> {
    if values.is_empty() {
        return None;
    }
    values.sort_by(f32::total_cmp);
    let position = q.clamp(0.0, 1.0) * (values.len() - 1) as f64;
    let (lo, hi) = (position.floor() as usize, position.ceil() as usize);
    let fraction = (position - lo as f64) as f32;
    Some(values[lo] + (values[hi] - values[lo]) * fraction)
}

impl Familiarity {
    /// References and radii from `windows` of `classes` classes: each species' calling
    /// windows (at most [`MAX_REFERENCES`], evenly spaced), as they will be served
    /// (quantised), and the `quantile` of their distances to the species' other
    /// recordings.
    pub(crate) fn fit(
        windows: &[TrainingWindow<'_>],
        classes: usize,
        width: usize,
        quantile_at: f64,
    ) -> Result<Self> {
        if !(quantile_at > 0.0 && quantile_at <= 1.0) {
            return Err(ModelError::InvalidConfig(format!(
                "familiarity quantile {quantile_at} must be in (0, 1]"
            )));
        }
        if let Some(w) = windows.iter().find(|w| w.embedding.len() != width) {
            return Err(ModelError::InputSize {
                expected: width,
                actual: w.embedding.len(),
            });
        }
        let mut species = Vec::with_capacity(classes);
        for class in 0..classes {
            let calls: Vec<&TrainingWindow<'_>> = windows
                .iter()
                .filter(|w| w.class == class && w.score >= REFERENCE_MIN_SCORE)
                .collect();
            let kept: Vec<&TrainingWindow<'_>> = if calls.len() > MAX_REFERENCES {
                (0..MAX_REFERENCES)
                    .map(|i| calls[i * calls.len() / MAX_REFERENCES])
                    .collect()
            } else {
                calls
            };
            let bytes: Vec<Vec<u8>> = kept
                .iter()
                .map(|w| quantise(&normalised(w.embedding)))
                .collect();
            let served: Vec<Vec<f32>> = bytes.iter().map(|b| dequantise(b)).collect();
            let distances: Vec<f32> = kept
                .iter()
                .enumerate()
                .filter_map(|(i, w)| {
                    kept.iter()
                        .zip(&served)
                        .filter(|(o, _)| o.recording != w.recording)
                        .map(|(_, r)| 1.0 - dot(&served[i], r))
                        .min_by(f32::total_cmp)
                })
                .collect();
            let mut recordings: Vec<usize> = kept.iter().map(|w| w.recording).collect();
            recordings.sort_unstable();
            recordings.dedup();
            species.push(FamiliarSpecies {
                radius: quantile(distances, quantile_at),
                recordings: recordings.len(),
                references: hex::encode(bytes.concat()),
            });
        }
        Ok(Self {
            quantile: quantile_at,
            width,
            species,
        })
    }
}

/// A species' score for a window at cosine `distance` from its nearest reference:
/// unchanged within `radius`; beyond it, halved and scaled by `radius / distance`.
/// Every detection threshold is at least 0.5 (`detection::THRESHOLD_RANGE`), so an
/// unfamiliar window is never detected, whatever the network says; but its score
/// still ranks it, lower the farther it lies, so top-k lists, average precision and
/// a window's best species keep what the network knows. (Zeroing them cost pr18's
/// CNN 0.09 of mean average precision and xc3's 8 points of window accuracy.)
pub(crate) fn unfamiliar(score: f32, distance: f32, radius: f32) -> f32 {
    if distance <= radius {
        score
    } else {
        score * 0.5 * (radius / distance).clamp(0.0, 1.0)
    }
}

/// [`Familiarity`] ready to serve: the references decoded into one matrix.
#[derive(Debug, Clone)]
pub(crate) struct Gate {
    width: usize,
    /// Every species' references, row-major `[rows, width]`, unit length.
    references: Vec<f32>,
    /// Per class: its rows of `references` and its radius.
    spans: Vec<(std::ops::Range<usize>, Option<f32>)>,
}

impl Gate {
    /// Decodes `familiarity` for a model of `classes` classes whose embedding has
    /// `width` values; refuses one made for another shape.
    pub(crate) fn new(familiarity: &Familiarity, classes: usize, width: usize) -> Result<Self> {
        let incompatible = ModelError::IncompatibleArtifact;
        if familiarity.width != width || familiarity.species.len() != classes {
            return Err(incompatible(format!(
                "familiarity for {} classes of {}-value embeddings, the network has {classes} \
                 and {width}",
                familiarity.species.len(),
                familiarity.width
            )));
        }
        let mut references = Vec::new();
        let mut spans = Vec::with_capacity(classes);
        for (class, s) in familiarity.species.iter().enumerate() {
            let bytes = hex::decode(&s.references)
                .map_err(|e| incompatible(format!("class {class}'s references: {e}")))?;
            if !bytes.is_empty() && (width == 0 || !bytes.len().is_multiple_of(width)) {
                return Err(incompatible(format!(
                    "class {class}'s references are {} bytes, not whole {width}-value rows",
                    bytes.len()
                )));
            }
            if s.radius.is_some_and(|r| !r.is_finite()) {
                return Err(incompatible(format!(
                    "class {class}'s radius is not finite"
                )));
            }
            let start = references.len() / width.max(1);
            if !bytes.is_empty() {
                for row in bytes.chunks_exact(width) {
                    references.extend(dequantise(row));
                }
            }
            spans.push((start..references.len() / width.max(1), s.radius));
        }
        Ok(Self {
            width,
            references,
            spans,
        })
    }

    /// Lowers each score of `scores` (`classes` per window) whose window, by its row
    /// of `embeddings` (`width` per window), lies beyond its species' radius from
    /// every reference of the species: see [`unfamiliar`].
    pub(crate) fn apply(&self, scores: &mut [f32], embeddings: &[f32]) -> Result<()> {
        let classes = self.spans.len();
        let windows = embeddings.len() / self.width.max(1);
        if classes == 0 || windows == 0 {
            return Ok(());
        }
        if scores.len() != windows * classes || embeddings.len() != windows * self.width {
            return Err(ModelError::Backend(format!(
                "{} scores and {} embedding values for {classes} classes of {}-value embeddings",
                scores.len(),
                embeddings.len(),
                self.width
            )));
        }
        let rows = self.references.len() / self.width;
        let units: Vec<f32> = embeddings
            .chunks_exact(self.width)
            .flat_map(normalised)
            .collect();
        let shape_error = |e: ndarray::ShapeError| ModelError::Backend(e.to_string());
        let a = ArrayView2::from_shape((windows, self.width), &units).map_err(shape_error)?;
        let b = ArrayView2::from_shape((rows, self.width), &self.references)
            .map_err(shape_error)?
            .reversed_axes();
        let mut similarity = vec![0.0f32; windows * rows];
        let mut c =
            ArrayViewMut2::from_shape((windows, rows), &mut similarity).map_err(shape_error)?;
        general_mat_mul(1.0, &a, &b, 0.0, &mut c);
        for (window, row_scores) in scores.chunks_exact_mut(classes).enumerate() {
            let similar = &similarity[window * rows..(window + 1) * rows];
            for ((span, radius), score) in self.spans.iter().zip(row_scores.iter_mut()) {
                let Some(radius) = radius else { continue };
                let nearest = similar[span.clone()]
                    .iter()
                    .copied()
                    .fold(f32::NEG_INFINITY, f32::max);
                *score = unfamiliar(*score, 1.0 - nearest, *radius);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An embedding pointing mostly along axis `axis` of 4, nudged by `jitter`.
    fn near(axis: usize, jitter: f32) -> Vec<f32> {
        let mut v = vec![0.05; 4];
        v[axis] = 1.0;
        v[(axis + 1) % 4] += jitter;
        v
    }

    #[test]
    fn unfamiliar_scores_fall_below_every_threshold_and_keep_their_order() {
        assert_eq!(unfamiliar(0.9, 0.1, 0.2), 0.9);
        assert_eq!(unfamiliar(0.9, 0.2, 0.2), 0.9);
        assert!((unfamiliar(1.0, 0.4, 0.2) - 0.25).abs() < 1e-6);
        assert!(unfamiliar(1.0, 0.2001, 0.2) < 0.5);
        assert!(unfamiliar(0.9, 0.3, 0.2) > unfamiliar(0.8, 0.3, 0.2));
        assert!(unfamiliar(0.9, 0.3, 0.2) > unfamiliar(0.9, 0.6, 0.2));
        assert_eq!(unfamiliar(0.9, 0.3, 0.0), 0.0);
    }

    #[test]
    fn quantile_interpolates_like_numpy() {
        assert_eq!(quantile(vec![3.0, 1.0, 2.0], 0.5), Some(2.0));
        assert_eq!(quantile(vec![0.0, 1.0], 0.8), Some(0.8));
        assert_eq!(quantile(vec![], 0.8), None);
    }

    /// Two species along two axes, three recordings each: windows near a species'
    /// calls keep their score for it, a window along an axis no species occupies
    /// loses it, and a species with one recording is never gated.
    #[test]
    fn gates_scores_of_windows_far_from_a_species_calls() {
        let embeddings: Vec<Vec<f32>> = (0..6).map(|i| near(i / 3, 0.1 * (i % 3) as f32)).collect();
        let mut windows: Vec<TrainingWindow<'_>> = embeddings
            .iter()
            .enumerate()
            .map(|(i, e)| TrainingWindow {
                recording: i,
                class: i / 3,
                score: 0.9,
                embedding: e,
            })
            .collect();
        // A quiet window of the first species, far off: not a reference.
        let far = near(3, 0.0);
        windows.push(TrainingWindow {
            recording: 0,
            class: 0,
            score: 0.2,
            embedding: &far,
        });
        let fitted = Familiarity::fit(&windows, 3, 4, FAMILIAR_QUANTILE).unwrap();
        assert_eq!(fitted.species[0].recordings, 3);
        assert_eq!(fitted.species[0].references.len(), 3 * 4 * 2);
        assert!(fitted.species[0].radius.is_some_and(|r| r < 0.01));
        assert_eq!(fitted.species[2].radius, None);

        let gate = Gate::new(&fitted, 3, 4).unwrap();
        let served = [near(0, 0.05), near(1, 0.15), near(2, 0.0)].concat();
        let network = vec![0.9, 0.8, 0.7, 0.9, 0.8, 0.7, 0.9, 0.8, 0.7];
        let mut got = network.clone();
        gate.apply(&mut got, &served).unwrap();
        let familiar = [true, false, true, false, true, true, false, false, true];
        for ((g, n), f) in got.iter().zip(&network).zip(familiar) {
            if f {
                assert_eq!(g, n);
            } else {
                assert!(*g > 0.0 && *g < 0.05 * n, "{got:?}");
            }
        }

        // Through JSON, as the artifact stores it.
        let json = serde_json::to_string(&fitted).unwrap();
        let back: Familiarity = serde_json::from_str(&json).unwrap();
        assert_eq!(back, fitted);
    }

    #[test]
    fn refuses_familiarity_of_another_shape() {
        let fitted = Familiarity {
            quantile: 0.8,
            width: 4,
            species: vec![FamiliarSpecies {
                radius: Some(0.1),
                recordings: 2,
                references: "00ff00".into(),
            }],
        };
        assert!(
            Gate::new(&fitted, 1, 4).is_err(),
            "3 bytes are not a 4-value row"
        );
        assert!(Gate::new(&fitted, 2, 4).is_err());
        assert!(Gate::new(&fitted, 1, 8).is_err());
        assert!(Familiarity::fit(&[], 1, 4, 0.0).is_err());
    }

    #[test]
    fn keeps_at_most_max_references_evenly_spaced() {
        let embeddings: Vec<Vec<f32>> = (0..3 * MAX_REFERENCES)
            .map(|i| near(0, i as f32 / (3 * MAX_REFERENCES) as f32))
            .collect();
        let windows: Vec<TrainingWindow<'_>> = embeddings
            .iter()
            .enumerate()
            .map(|(i, e)| TrainingWindow {
                recording: i % 7,
                class: 0,
                score: 1.0,
                embedding: e,
            })
            .collect();
        let fitted = Familiarity::fit(&windows, 1, 4, 0.8).unwrap();
        assert_eq!(fitted.species[0].references.len(), MAX_REFERENCES * 4 * 2);
        assert_eq!(fitted.species[0].recordings, 7);
    }
}
