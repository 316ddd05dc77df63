//! Classification metrics computed from predicted probabilities.
//!
//! The definitions follow scikit-learn's, so numbers are comparable with the Python
//! pipeline's report: precision, recall and F1 of a class with no predicted (or no true)
//! members are 0; "macro" is the unweighted mean over classes, "weighted" the mean weighted
//! by support; log loss is the mean negative log probability of the true class, with
//! probabilities clipped to [1e-15, 1].

use serde::{Deserialize, Serialize};

use crate::{ModelError, Result};

/// Clipping of probabilities in the log loss (scikit-learn's choice).
const LOG_LOSS_EPS: f64 = 1e-15;

/// Precision, recall and F1 averaged over classes.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Averages {
    /// Averaged precision.
    pub precision: f64,
    /// Averaged recall.
    pub recall: f64,
    /// Averaged F1.
    pub f1: f64,
}

/// Figures of one class.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClassMetrics {
    /// Class label.
    pub class: String,
    /// Of the items predicted as this class, the share that are.
    pub precision: f64,
    /// Of the items of this class, the share predicted as it.
    pub recall: f64,
    /// Harmonic mean of precision and recall.
    pub f1: f64,
    /// Items of this class.
    pub support: usize,
}

/// Metrics of one set of predictions (windows, or recordings).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Metrics {
    /// Number of items scored.
    pub count: usize,
    /// Share of items whose most probable class is the true one.
    pub accuracy: f64,
    /// Unweighted mean over classes.
    pub macro_avg: Averages,
    /// Mean over classes weighted by support.
    pub weighted_avg: Averages,
    /// Per-class figures, in class order.
    pub per_class: Vec<ClassMetrics>,
    /// `confusion[true][predicted]` counts, rows and columns in class order.
    pub confusion: Vec<Vec<usize>>,
    /// Mean negative log probability of the true class, the scores normalised to sum
    /// to 1 first (softmax scores already do; per-species sigmoid scores are
    /// independent, and without normalising, a model scoring every species near 1
    /// would have no loss).
    pub log_loss: f64,
}

/// Index of the largest value (the first on ties); `None` for an empty slice.
pub fn argmax(values: &[f32]) -> Option<usize> {
    let mut best: Option<(usize, f32)> = None;
    for (i, &v) in values.iter().enumerate() {
        match best {
            Some((_, b)) if v <= b => {}
            _ => best = Some((i, v)),
        }
    }
    best.map(|(i, _)| i)
}

fn ratio(num: usize, den: usize) -> f64 {
    if den == 0 {
        0.0
    } else {
        num as f64 / den as f64
    }
}

impl Metrics {
    /// Scores `probabilities[i]` (one probability per class, in `classes` order) against
    /// the true class index `truth[i]`.
    pub fn compute(
        classes: &[String],
        truth: &[usize],
        probabilities: &[Vec<f32>],
    ) -> Result<Self> {
        let k = classes.len();
        if truth.len() != probabilities.len() {
            return Err(ModelError::InvalidDataset(format!(
                "{} labels for {} predictions",
                truth.len(),
                probabilities.len()
            )));
        }
        let mut confusion = vec![vec![0usize; k]; k];
        let mut log_loss = 0.0;
        for (&t, p) in truth.iter().zip(probabilities) {
            if t >= k || p.len() != k {
                return Err(ModelError::InvalidDataset(format!(
                    "label index {t} or {} probabilities do not fit {k} classes",
                    p.len()
                )));
            }
            let predicted = argmax(p).unwrap_or(0);
            confusion[t][predicted] += 1;
            // Rows that already sum to 1 (softmax, up to float32 rounding) are used as
            // they are.
            let total: f64 = p.iter().map(|&v| f64::from(v)).sum();
            let share = if (total - 1.0).abs() <= 1e-3 {
                f64::from(p[t])
            } else if total > 0.0 {
                f64::from(p[t]) / total
            } else {
                0.0
            };
            log_loss -= share.clamp(LOG_LOSS_EPS, 1.0).ln();
        }
        let n = truth.len();
        let correct: usize = (0..k).map(|i| confusion[i][i]).sum();
        let per_class: Vec<ClassMetrics> = (0..k)
            .map(|c| {
                let tp = confusion[c][c];
                let predicted: usize = (0..k).map(|t| confusion[t][c]).sum();
                let support: usize = confusion[c].iter().sum();
                let precision = ratio(tp, predicted);
                let recall = ratio(tp, support);
                let f1 = if precision + recall > 0.0 {
                    2.0 * precision * recall / (precision + recall)
                } else {
                    0.0
                };
                ClassMetrics {
                    class: classes[c].clone(),
                    precision,
                    recall,
                    f1,
                    support,
                }
            })
            .collect();
        let average = |weight: &dyn Fn(&ClassMetrics) -> f64| {
            let total: f64 = per_class.iter().map(weight).sum();
            let mean = |f: &dyn Fn(&ClassMetrics) -> f64| {
                if total > 0.0 {
                    per_class.iter().map(|c| weight(c) * f(c)).sum::<f64>() / total
                } else {
                    0.0
                }
            };
            Averages {
                precision: mean(&|c| c.precision),
                recall: mean(&|c| c.recall),
                f1: mean(&|c| c.f1),
            }
        };
        let macro_avg = average(&|_| 1.0);
        let weighted_avg = average(&|c| c.support as f64);
        Ok(Self {
            count: n,
            accuracy: ratio(correct, n),
            macro_avg,
            weighted_avg,
            per_class,
            confusion,
            log_loss: if n > 0 { log_loss / n as f64 } else { 0.0 },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-9
    }

    /// Hand-computed example. Truth / predicted over classes a, b, c:
    ///
    /// ```text
    ///            pred a  pred b  pred c
    /// true a        2       1       0      support 3
    /// true b        0       1       1      support 2
    /// true c        0       0       0      support 0
    /// ```
    /// a: P = 2/2, R = 2/3, F1 = 0.8; b: P = 1/2, R = 1/2, F1 = 0.5;
    /// c: nothing true, one predicted: P = 0/1 = 0, R = 0 (no support), F1 = 0.
    #[test]
    fn matches_hand_computed_values() {
        let classes: Vec<String> = ["a", "b", "c"].iter().map(|s| s.to_string()).collect();
        let truth = [0, 0, 0, 1, 1];
        let probs = vec![
            vec![0.8, 0.1, 0.1],
            vec![0.5, 0.3, 0.2],
            vec![0.4, 0.6, 0.0],
            vec![0.2, 0.7, 0.1],
            vec![0.1, 0.4, 0.5],
        ];
        let m = Metrics::compute(&classes, &truth, &probs).unwrap();
        assert_eq!(
            m.confusion,
            vec![vec![2, 1, 0], vec![0, 1, 1], vec![0, 0, 0]]
        );
        assert_eq!(m.count, 5);
        assert!(close(m.accuracy, 3.0 / 5.0));
        let a = &m.per_class[0];
        assert!(close(a.precision, 1.0) && close(a.recall, 2.0 / 3.0) && close(a.f1, 0.8));
        let b = &m.per_class[1];
        assert!(close(b.precision, 0.5) && close(b.recall, 0.5) && close(b.f1, 0.5));
        let c = &m.per_class[2];
        assert!(close(c.precision, 0.0) && close(c.f1, 0.0) && c.support == 0);
        assert!(close(m.macro_avg.precision, 1.5 / 3.0));
        assert!(close(m.macro_avg.recall, (2.0 / 3.0 + 0.5) / 3.0));
        assert!(close(m.macro_avg.f1, 1.3 / 3.0));
        assert!(close(m.weighted_avg.f1, (3.0 * 0.8 + 2.0 * 0.5) / 5.0));
        assert!(close(m.weighted_avg.recall, 3.0 / 5.0));
        // -(ln .8 + ln .5 + ln .4 + ln .7 + ln .4) / 5, the 0.0 is never the true class
        let expected =
            -((0.8f64).ln() + (0.5f64).ln() + (0.4f64).ln() + (0.7f64).ln() + (0.4f64).ln()) / 5.0;
        assert!(
            (m.log_loss - expected).abs() < 1e-6,
            "{} vs {expected}",
            m.log_loss
        );
    }

    #[test]
    fn log_loss_is_clipped_not_infinite() {
        let classes = vec!["a".to_string(), "b".to_string()];
        let m = Metrics::compute(&classes, &[0], &[vec![0.0, 1.0]]).unwrap();
        assert!(close(m.log_loss, -(1e-15f64).ln()));
        assert!(close(m.accuracy, 0.0));
    }

    #[test]
    fn rejects_mismatched_input() {
        let classes = vec!["a".to_string(), "b".to_string()];
        assert!(Metrics::compute(&classes, &[0, 1], &[vec![0.5, 0.5]]).is_err());
        assert!(Metrics::compute(&classes, &[2], &[vec![0.5, 0.5]]).is_err());
    }

    #[test]
    fn argmax_takes_first_of_ties() {
        assert_eq!(argmax(&[0.2, 0.4, 0.4]), Some(1));
        assert_eq!(argmax(&[]), None);
    }
}
