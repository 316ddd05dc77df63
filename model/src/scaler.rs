//! Per-feature standardisation fitted on the training windows.
//!
//! The acoustic features live on wildly different scales (Hz, dB, ratios); the
//! network trains far better on zero-mean unit-variance inputs. The statistics come
//! from the training set only and travel inside the artifact, so inference applies
//! exactly the transform the weights were trained behind.

use serde::{Deserialize, Serialize};

use crate::{ModelError, Result};

/// Smallest standard deviation used as a divisor: a constant feature is centred but not
/// blown up.
const MIN_STD: f64 = 1e-8;

/// Mean and standard deviation of every feature, as fitted on training windows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Scaler {
    /// Per-feature mean.
    pub mean: Vec<f32>,
    /// Per-feature population standard deviation (1 for constant features).
    pub std: Vec<f32>,
}

impl Scaler {
    /// The scaler that leaves `width` features as they are, for layers that read raw
    /// vectors (a pretrained layer, or a head anchored on one).
    pub fn identity(width: usize) -> Self {
        Self {
            mean: vec![0.0; width],
            std: vec![1.0; width],
        }
    }

    /// Fits the scaler on rows of `width` features (row-major `data`).
    ///
    /// Non-finite values (a feature undefined on a silent window, say) are left out of
    /// the statistics; a feature with no finite value gets mean 0 and std 1.
    pub fn fit(data: &[f32], width: usize) -> Result<Self> {
        if width == 0 || data.is_empty() || !data.len().is_multiple_of(width) {
            return Err(ModelError::InvalidDataset(format!(
                "cannot fit a scaler on {} values of width {width}",
                data.len()
            )));
        }
        let mut sum = vec![0f64; width];
        let mut count = vec![0u64; width];
        for row in data.chunks_exact(width) {
            for (j, &v) in row.iter().enumerate() {
                if v.is_finite() {
                    sum[j] += f64::from(v);
                    count[j] += 1;
                }
            }
        }
        let mean: Vec<f64> = sum
            .iter()
            .zip(&count)
            .map(|(&s, &n)| if n > 0 { s / n as f64 } else { 0.0 })
            .collect();
        let mut sq = vec![0f64; width];
        for row in data.chunks_exact(width) {
            for (j, &v) in row.iter().enumerate() {
                if v.is_finite() {
                    let d = f64::from(v) - mean[j];
                    sq[j] += d * d;
                }
            }
        }
        let std = sq
            .iter()
            .zip(&count)
            .map(|(&s, &n)| {
                let sd = if n > 0 { (s / n as f64).sqrt() } else { 1.0 };
                if sd < MIN_STD { 1.0 } else { sd as f32 }
            })
            .collect();
        Ok(Self {
            mean: mean.into_iter().map(|m| m as f32).collect(),
            std,
        })
    }

    /// Number of features the scaler was fitted on.
    pub fn width(&self) -> usize {
        self.mean.len()
    }

    /// Checks that mean and std agree in length and hold usable numbers (an artifact
    /// edited by hand or damaged must not load).
    pub fn validate(&self, width: usize) -> Result<()> {
        if self.mean.len() != width || self.std.len() != width {
            return Err(ModelError::IncompatibleArtifact(format!(
                "scaler has {} means and {} deviations, the input size is {width}",
                self.mean.len(),
                self.std.len()
            )));
        }
        if self.mean.iter().any(|m| !m.is_finite())
            || self.std.iter().any(|s| !s.is_finite() || *s <= 0.0)
        {
            return Err(ModelError::IncompatibleArtifact(
                "scaler holds non-finite or non-positive statistics".into(),
            ));
        }
        Ok(())
    }

    /// Standardises row-major `data` in place. Non-finite values become 0, the mean.
    pub fn transform_in_place(&self, data: &mut [f32]) {
        let width = self.width();
        for row in data.chunks_exact_mut(width) {
            for ((v, m), s) in row.iter_mut().zip(&self.mean).zip(&self.std) {
                *v = if v.is_finite() { (*v - m) / s } else { 0.0 };
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn standardises_to_zero_mean_unit_variance() {
        // two features, three rows
        let data = [1.0, 10.0, 2.0, 10.0, 3.0, 10.0];
        let scaler = Scaler::fit(&data, 2).unwrap();
        assert_eq!(scaler.mean, vec![2.0, 10.0]);
        let sd = (2.0f32 / 3.0).sqrt();
        assert!((scaler.std[0] - sd).abs() < 1e-6);
        // constant feature: std replaced by 1, not divided by ~0
        assert_eq!(scaler.std[1], 1.0);
        let mut x = data;
        scaler.transform_in_place(&mut x);
        assert!((x[0] + 1.0 / sd).abs() < 1e-5);
        assert_eq!(x[2], 0.0);
        assert_eq!(x[1], 0.0);
    }

    #[test]
    fn ignores_non_finite_values() {
        let data = [1.0, f32::NAN, 3.0, f32::INFINITY];
        let scaler = Scaler::fit(&data, 1).unwrap();
        assert_eq!(scaler.mean, vec![2.0]);
        let mut x = [f32::NAN];
        scaler.transform_in_place(&mut x);
        assert_eq!(x, [0.0]);
    }

    #[test]
    fn rejects_ragged_input() {
        assert!(Scaler::fit(&[1.0, 2.0, 3.0], 2).is_err());
        assert!(Scaler::fit(&[], 2).is_err());
    }
}
