//! The promotion gate: is the new model better than the one in service?
//!
//! Both models are scored on the same holdout recordings. The scores are
//! computed here rather than with `birdsong_model::evaluate` because the two
//! models need not know the same species: when a species is added, the old
//! model cannot name it, and that must count against it (its recall on that
//! species is zero) instead of making the comparison impossible. Macro F1 is
//! averaged over the species present in the holdout, so both models are
//! judged on exactly the same questions.
//!
//! The default metric is recording-level macro F1 (the mean probability over
//! a recording's windows decides its species, as in a file summary): that is
//! the answer users read, and it weighs every recording the same however
//! long it is.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use birdsong_model::{Classifier, Recording};
use serde::{Deserialize, Serialize};

/// Which score decides the gate.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GateMetric {
    #[default]
    RecordingMacroF1,
    WindowMacroF1,
    RecordingAccuracy,
    WindowAccuracy,
}

impl GateMetric {
    pub const ALL: [GateMetric; 4] = [
        GateMetric::RecordingMacroF1,
        GateMetric::WindowMacroF1,
        GateMetric::RecordingAccuracy,
        GateMetric::WindowAccuracy,
    ];

    pub fn name(self) -> &'static str {
        match self {
            GateMetric::RecordingMacroF1 => "recording_macro_f1",
            GateMetric::WindowMacroF1 => "window_macro_f1",
            GateMetric::RecordingAccuracy => "recording_accuracy",
            GateMetric::WindowAccuracy => "window_accuracy",
        }
    }

    /// This metric's value in `scores`.
    pub fn of(self, scores: &Scores) -> f64 {
        match self {
            GateMetric::RecordingMacroF1 => scores.recording_macro_f1,
            GateMetric::WindowMacroF1 => scores.window_macro_f1,
            GateMetric::RecordingAccuracy => scores.recording_accuracy,
            GateMetric::WindowAccuracy => scores.window_accuracy,
        }
    }
}

impl fmt::Display for GateMetric {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for GateMetric {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        GateMetric::ALL
            .into_iter()
            .find(|m| m.name() == s)
            .ok_or_else(|| {
                let names: Vec<&str> = GateMetric::ALL.iter().map(|m| m.name()).collect();
                format!("unknown gate metric {s:?} (known: {})", names.join(", "))
            })
    }
}

/// One model's scores on the holdout.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Scores {
    pub recordings: usize,
    pub windows: usize,
    pub recording_accuracy: f64,
    pub recording_macro_f1: f64,
    pub window_accuracy: f64,
    pub window_macro_f1: f64,
}

/// Scores `classifier` on `holdout`; `None` if the holdout has no windows.
pub fn score(
    classifier: &Classifier,
    holdout: &[Recording],
) -> Result<Option<Scores>, birdsong_model::ModelError> {
    let scored: Vec<&Recording> = holdout.iter().filter(|r| !r.windows.is_empty()).collect();
    if scored.is_empty() {
        return Ok(None);
    }
    let inputs: Vec<&[birdsong_model::FeatureVector]> =
        scored.iter().map(|r| r.windows.as_slice()).collect();
    let predictions = classifier.classify_recordings(&inputs, 1)?;
    let mut recording_pairs = Vec::with_capacity(scored.len());
    let mut window_pairs = Vec::new();
    for (r, p) in scored.iter().zip(&predictions) {
        let best = |top: &[birdsong_model::Prediction]| {
            top.first().map(|t| t.species.clone()).unwrap_or_default()
        };
        for w in &p.windows {
            window_pairs.push((r.label.as_str(), best(&w.top)));
        }
        let summary = p.summary.as_ref().map(|s| best(&s.top)).unwrap_or_default();
        recording_pairs.push((r.label.as_str(), summary));
    }
    Ok(Some(Scores {
        recordings: recording_pairs.len(),
        windows: window_pairs.len(),
        recording_accuracy: accuracy(&recording_pairs),
        recording_macro_f1: macro_f1(&recording_pairs),
        window_accuracy: accuracy(&window_pairs),
        window_macro_f1: macro_f1(&window_pairs),
    }))
}

/// Share of (truth, prediction) pairs that agree.
pub fn accuracy(pairs: &[(&str, String)]) -> f64 {
    if pairs.is_empty() {
        return 0.0;
    }
    let right = pairs.iter().filter(|(t, p)| *t == p.as_str()).count();
    right as f64 / pairs.len() as f64
}

/// F1 averaged over the true classes present in `pairs`. A class that is
/// never predicted has F1 0; predictions of classes absent from the truth
/// lower the precision of no class but are wrong answers all the same
/// (they lower the recall of the true class).
pub fn macro_f1(pairs: &[(&str, String)]) -> f64 {
    let mut support: BTreeMap<&str, usize> = BTreeMap::new();
    for (t, _) in pairs {
        *support.entry(t).or_default() += 1;
    }
    if support.is_empty() {
        return 0.0;
    }
    let total: f64 = support
        .iter()
        .map(|(&class, &n)| {
            let tp = pairs
                .iter()
                .filter(|(t, p)| *t == class && p == class)
                .count();
            let predicted = pairs.iter().filter(|(_, p)| p == class).count();
            if tp == 0 {
                return 0.0;
            }
            let precision = tp as f64 / predicted as f64;
            let recall = tp as f64 / n as f64;
            2.0 * precision * recall / (precision + recall)
        })
        .sum();
    total / support.len() as f64
}

/// The gate's verdict.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    pub promote: bool,
    pub reason: String,
}

/// The promotion decision: a forced request or the first model is promoted;
/// otherwise the new model must beat the promoted one on `metric` over the
/// same holdout (a tie keeps the promoted one), and without a holdout to
/// compare on it stays a candidate.
pub fn decide(
    metric: GateMetric,
    force: bool,
    new: Option<&Scores>,
    current_version: Option<&str>,
    current: Option<&Scores>,
) -> Decision {
    let fmt = |s: Option<&Scores>| s.map_or("n/a".to_string(), |s| format!("{:.4}", metric.of(s)));
    let on = new.map_or(String::new(), |s| {
        format!(" ({} holdout recordings)", s.recordings)
    });
    match (current_version, new, current) {
        _ if force => Decision {
            promote: true,
            reason: format!(
                "promotion forced: {metric} {} (new) vs {} ({}){on}",
                fmt(new),
                fmt(current),
                current_version.unwrap_or("no promoted model"),
            ),
        },
        (None, _, _) => Decision {
            promote: true,
            reason: format!(
                "first model: no version was promoted; {metric} {} on the holdout{on}",
                fmt(new)
            ),
        },
        (Some(cur), None, _) => Decision {
            promote: false,
            reason: format!("no holdout recordings to compare with {cur} on; kept as a candidate"),
        },
        (Some(cur), Some(n), None) => Decision {
            promote: true,
            reason: format!(
                "{cur} could not be loaded to compare with; {metric} {} (new){on}",
                fmt(Some(n))
            ),
        },
        (Some(cur), Some(n), Some(c)) if metric.of(n) > metric.of(c) => Decision {
            promote: true,
            reason: format!(
                "beat {cur} on the holdout: {metric} {} > {}{on}",
                fmt(Some(n)),
                fmt(Some(c))
            ),
        },
        (Some(cur), Some(n), Some(c)) => Decision {
            promote: false,
            reason: format!(
                "did not beat {cur} on the holdout: {metric} {} <= {}{on}",
                fmt(Some(n)),
                fmt(Some(c))
            ),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(v: &[(&'static str, &str)]) -> Vec<(&'static str, String)> {
        v.iter().map(|(t, p)| (*t, p.to_string())).collect()
    }

    #[test]
    fn perfect_and_hand_computed_scores() {
        let all_right = pairs(&[("a", "a"), ("b", "b"), ("c", "c")]);
        assert_eq!(macro_f1(&all_right), 1.0);
        assert_eq!(accuracy(&all_right), 1.0);
        // a: tp 1, predicted 2, support 2 → p 0.5 r 0.5 f1 0.5
        // c: never right → 0.
        let mixed = pairs(&[("a", "a"), ("a", "b"), ("b", "b"), ("c", "a")]);
        // (b is predicted twice, a→b and b→b: p 0.5 r 1 f1 2/3.)
        let f1 = macro_f1(&mixed);
        assert!((f1 - (0.5 + 2.0 / 3.0 + 0.0) / 3.0).abs() < 1e-12, "{f1}");
        assert_eq!(accuracy(&mixed), 0.5);
    }

    #[test]
    fn a_class_the_model_does_not_know_counts_as_wrong() {
        // The old model knows only a and b; the holdout has c too.
        let old = pairs(&[("a", "a"), ("b", "b"), ("c", "a")]);
        let new = pairs(&[("a", "a"), ("b", "b"), ("c", "c")]);
        assert!(macro_f1(&new) > macro_f1(&old));
    }

    #[test]
    fn metric_names_round_trip() {
        for m in GateMetric::ALL {
            assert_eq!(m.name().parse::<GateMetric>().unwrap(), m);
        }
        assert!("f2".parse::<GateMetric>().is_err());
    }

    fn scores(f1: f64) -> Scores {
        Scores {
            recordings: 3,
            windows: 6,
            recording_accuracy: f1,
            recording_macro_f1: f1,
            window_accuracy: f1,
            window_macro_f1: f1,
        }
    }

    #[test]
    fn the_gate() {
        let p = GateMetric::default();
        let better = decide(p, false, Some(&scores(0.9)), Some("v1"), Some(&scores(0.8)));
        assert!(better.promote);
        assert!(
            better.reason.contains("0.9000 > 0.8000"),
            "{}",
            better.reason
        );
        let tie = decide(p, false, Some(&scores(0.8)), Some("v1"), Some(&scores(0.8)));
        assert!(!tie.promote);
        assert!(tie.reason.contains("did not beat v1"), "{}", tie.reason);
        let forced = decide(p, true, Some(&scores(0.1)), Some("v1"), Some(&scores(0.8)));
        assert!(forced.promote);
        assert!(decide(p, false, Some(&scores(0.1)), None, None).promote);
        assert!(!decide(p, false, None, Some("v1"), Some(&scores(0.8))).promote);
    }
}
