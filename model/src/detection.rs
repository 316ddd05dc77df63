//! From scores to detections: per-species thresholds chosen on held-out recordings,
//! and the figures that say whether a detection can be trusted.
//!
//! A score is not a detection. Each species gets its own threshold, chosen on windows
//! the model was not trained on as the lowest score at which that species' detections
//! reach a stated precision, and a window whose scores are all below their thresholds
//! yields no detection at all, which is the normal answer for most windows of a field
//! archive. The thresholds travel in the artifact, so every role detects the same way.
//!
//! The figures here rank models the way users feel them: per-species average precision
//! (how well scores order windows of a species above the rest, threshold-free), the
//! precision and recall the thresholds actually give, and the open-set figures: how
//! well the top score separates windows of known species from windows of species the
//! model never saw, and how many of the latter would be reported as detections.

use crate::dataset::{Recording, is_background, quiet_windows_at};
use crate::inference::Classifier;
pub use crate::report::{
    DEFAULT_TARGET_PRECISION, DEFAULT_THRESHOLD, DetectionMetrics, OpenSet, SpeciesDetection,
    Thresholds,
};
use crate::{ModelError, Result};

/// Positive windows a species needs on the calibration set for its own threshold.
const MIN_POSITIVES: usize = 5;

/// Thresholds are kept within this range. Below 0.5 a per-species score says the
/// species is more likely absent than present, and a held-out set only ever holds the
/// user's own species, never the many others a field archive has: a threshold that
/// low reaches its precision there and reports every bird it was not taught (on pr18,
/// thresholds floored at 0.1 detected 78 % of xc3's windows; see the model README).
/// Near 1 almost nothing is reported, which no small holdout can justify either.
const THRESHOLD_RANGE: (f32, f32) = (0.5, 0.99);

/// Which windows of `recordings` are positive for which class: `Some(class)` for a
/// window of a known species that is not quiet, `None` for a negative (background
/// recordings, quiet windows, species the classifier does not know). Quiet windows of a
/// labelled recording are left out entirely (`Err(())`): whether the bird calls in them
/// is unknown.
fn window_truth(
    classifier: &Classifier,
    recordings: &[&Recording],
    quiet_margin_db: Option<f32>,
) -> Vec<std::result::Result<Option<usize>, ()>> {
    let mut truth = Vec::new();
    for r in recordings {
        let class = classifier.classes().iter().position(|c| *c == r.label);
        let quiet = match quiet_margin_db {
            Some(m) if class.is_some() => {
                quiet_windows_at(&r.windows, classifier.info().features.level_column(), m)
            }
            _ => vec![false; r.windows.len()],
        };
        for q in quiet {
            truth.push(match (class, q) {
                (Some(_), true) => Err(()),
                (c, false) => Ok(c),
                (None, true) => Ok(None),
            });
        }
    }
    truth
}

/// Scores and truth of every usable window of `recordings`.
struct Scored {
    scores: Vec<Vec<f32>>,
    truth: Vec<Option<usize>>,
}

impl Scored {
    /// One class's view: each window's score for it, and whether the window
    /// is one of its positives.
    fn pairs(&self, class: usize) -> Vec<(f32, bool)> {
        self.scores
            .iter()
            .zip(&self.truth)
            .map(|(s, t)| (s[class], *t == Some(class)))
            .collect()
    }
}

fn score(
    classifier: &Classifier,
    recordings: &[Recording],
    quiet_margin_db: Option<f32>,
) -> Result<Scored> {
    let kept: Vec<&Recording> = recordings
        .iter()
        .filter(|r| !r.windows.is_empty())
        .collect();
    let windows: Vec<&[_]> = kept.iter().map(|r| r.windows.as_slice()).collect();
    let all_scores = classifier.score_recordings(&windows)?;
    Ok(scored(classifier, &kept, all_scores, quiet_margin_db))
}

/// [`score`] for windows already scored: `all_scores` holds one row per window of
/// `kept`, in order.
fn scored(
    classifier: &Classifier,
    kept: &[&Recording],
    all_scores: Vec<Vec<f32>>,
    quiet_margin_db: Option<f32>,
) -> Scored {
    let all_truth = window_truth(classifier, kept, quiet_margin_db);
    let (mut scores, mut truth) = (Vec::new(), Vec::new());
    for (s, t) in all_scores.into_iter().zip(all_truth) {
        if let Ok(t) = t {
            scores.push(s);
            truth.push(t);
        }
    }
    Scored { scores, truth }
}

/// Chooses each species' threshold on `recordings` (which the model must not have
/// been trained on): the lowest score at which that species' window detections reach
/// `target_precision`; where no score does, the one with the best F1; where the set
/// has fewer than a handful of the species' windows, [`DEFAULT_THRESHOLD`].
/// Recordings of species the model does not know and background recordings count as
/// negatives for every species; quiet windows of labelled recordings are left out.
pub fn calibrate(
    classifier: &Classifier,
    recordings: &[Recording],
    target_precision: f64,
    quiet_margin_db: Option<f32>,
) -> Result<Thresholds> {
    if !(target_precision > 0.0 && target_precision <= 1.0) {
        return Err(ModelError::InvalidConfig(format!(
            "target precision {target_precision} must be in (0, 1]"
        )));
    }
    let k = classifier.classes().len();
    let scored = score(classifier, recordings, quiet_margin_db)?;
    let mut values = Vec::with_capacity(k);
    let mut rules = Vec::with_capacity(k);
    for class in 0..k {
        let mut pairs = scored.pairs(class);
        let positives = pairs.iter().filter(|(_, p)| *p).count();
        if positives < MIN_POSITIVES {
            values.push(DEFAULT_THRESHOLD);
            rules.push("default".into());
            continue;
        }
        // Highest score first: each prefix is the set detected at that threshold.
        pairs.sort_by(|a, b| b.0.total_cmp(&a.0));
        let (mut tp, mut fp) = (0usize, 0usize);
        let mut reaching: Option<f32> = None;
        let mut best_f1 = (f64::NEG_INFINITY, DEFAULT_THRESHOLD);
        for (i, &(s, positive)) in pairs.iter().enumerate() {
            if positive {
                tp += 1;
            } else {
                fp += 1;
            }
            // Only where the next score differs is `s` a threshold of its own.
            if pairs.get(i + 1).is_some_and(|n| n.0 == s) {
                continue;
            }
            let precision = tp as f64 / (tp + fp) as f64;
            let recall = tp as f64 / positives as f64;
            if precision >= target_precision {
                reaching = Some(s);
            }
            let f1 = if tp == 0 {
                0.0
            } else {
                2.0 * precision * recall / (precision + recall)
            };
            if f1 > best_f1.0 {
                best_f1 = (f1, s);
            }
        }
        let (value, rule) = match reaching {
            Some(s) => (s, "precision"),
            None => (best_f1.1, "best_f1"),
        };
        values.push(value.clamp(THRESHOLD_RANGE.0, THRESHOLD_RANGE.1));
        rules.push(rule.into());
    }
    Ok(Thresholds {
        target_precision,
        values,
        rules,
        windows: scored.truth.len(),
    })
}

/// Average precision of `scores` where `positive` marks the positives (the mean of the
/// precision at each positive, ranks ordered by score, ties broken pessimistically).
pub fn average_precision(pairs: &mut [(f32, bool)]) -> Option<f64> {
    let positives = pairs.iter().filter(|(_, p)| *p).count();
    if positives == 0 {
        return None;
    }
    // Ties: negatives first, so that a constant score is not rewarded.
    pairs.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
    let (mut tp, mut sum) = (0usize, 0f64);
    for (i, &(_, positive)) in pairs.iter().enumerate() {
        if positive {
            tp += 1;
            sum += tp as f64 / (i + 1) as f64;
        }
    }
    Some(sum / positives as f64)
}

/// Area under the ROC curve: the probability that a random positive scores above a
/// random negative (ties count half). `None` if either side is empty.
pub fn auroc(positives: &[f32], negatives: &[f32]) -> Option<f64> {
    if positives.is_empty() || negatives.is_empty() {
        return None;
    }
    let mut all: Vec<(f32, bool)> = positives
        .iter()
        .map(|&s| (s, true))
        .chain(negatives.iter().map(|&s| (s, false)))
        .collect();
    all.sort_by(|a, b| a.0.total_cmp(&b.0));
    // Mann-Whitney U with average ranks for ties.
    let mut rank_sum = 0f64;
    let mut i = 0;
    while i < all.len() {
        let mut j = i;
        while j + 1 < all.len() && all[j + 1].0 == all[i].0 {
            j += 1;
        }
        let average_rank = (i + j) as f64 / 2.0 + 1.0;
        rank_sum += average_rank * all[i..=j].iter().filter(|(_, p)| *p).count() as f64;
        i = j + 1;
    }
    let (p, n) = (positives.len() as f64, negatives.len() as f64);
    Some((rank_sum - p * (p + 1.0) / 2.0) / (p * n))
}

/// Detection figures of `classifier`, at its thresholds, on `recordings`.
pub fn detection_metrics(
    classifier: &Classifier,
    recordings: &[Recording],
    quiet_margin_db: Option<f32>,
) -> Result<DetectionMetrics> {
    let scored = score(classifier, recordings, quiet_margin_db)?;
    Ok(metrics_of(classifier, &scored))
}

/// [`detection_metrics`] of `kept` (recordings with windows) whose windows were
/// already scored, one row per window in order: for an evaluation that has the
/// scores for its closed-set figures anyway.
pub(crate) fn detection_metrics_of(
    classifier: &Classifier,
    kept: &[&Recording],
    all_scores: Vec<Vec<f32>>,
    quiet_margin_db: Option<f32>,
) -> DetectionMetrics {
    metrics_of(
        classifier,
        &scored(classifier, kept, all_scores, quiet_margin_db),
    )
}

fn metrics_of(classifier: &Classifier, scored: &Scored) -> DetectionMetrics {
    let thresholds = classifier.thresholds();
    let mut per_species = Vec::new();
    let (mut tp_all, mut fp_all, mut pos_all) = (0usize, 0usize, 0usize);
    for (class, species) in classifier.classes().iter().enumerate() {
        let threshold = thresholds[class];
        let mut pairs = scored.pairs(class);
        let positives = pairs.iter().filter(|(_, p)| *p).count();
        let tp = pairs.iter().filter(|(s, p)| *p && *s >= threshold).count();
        let fp = pairs.iter().filter(|(s, p)| !*p && *s >= threshold).count();
        tp_all += tp;
        fp_all += fp;
        pos_all += positives;
        per_species.push(SpeciesDetection {
            species: species.clone(),
            average_precision: average_precision(&mut pairs),
            threshold,
            precision: (tp + fp > 0).then(|| tp as f64 / (tp + fp) as f64),
            recall: (positives > 0).then(|| tp as f64 / positives as f64),
            positives,
        });
    }
    let aps: Vec<f64> = per_species
        .iter()
        .filter_map(|s| s.average_precision)
        .collect();
    let negatives: Vec<&Vec<f32>> = scored
        .scores
        .iter()
        .zip(&scored.truth)
        .filter(|(_, t)| t.is_none())
        .map(|(s, _)| s)
        .collect();
    let detected = |s: &Vec<f32>| s.iter().zip(thresholds).any(|(v, t)| v >= t);
    DetectionMetrics {
        mean_average_precision: (!aps.is_empty())
            .then(|| aps.iter().sum::<f64>() / aps.len() as f64),
        precision: (tp_all + fp_all > 0).then(|| tp_all as f64 / (tp_all + fp_all) as f64),
        recall: (pos_all > 0).then(|| tp_all as f64 / pos_all as f64),
        negative_windows_detected: (!negatives.is_empty()).then(|| {
            negatives.iter().filter(|s| detected(s)).count() as f64 / negatives.len() as f64
        }),
        per_species,
        windows: scored.truth.len(),
    }
}

/// Open-set figures: `known` are recordings of the model's species (their windows are
/// the positives; background-labelled ones are left out), `unknown` recordings of
/// species it does not know or of no species. `window_hop_s` converts windows into
/// hours of audio.
pub fn open_set(
    classifier: &Classifier,
    known: &[Recording],
    unknown: &[Recording],
    window_hop_s: f64,
) -> Result<OpenSet> {
    // Each recording's windows on their own: the served scores of a window depend
    // on its neighbours in the same recording.
    fn windows<'a>(
        rs: &'a [Recording],
        keep: &dyn Fn(&Recording) -> bool,
    ) -> Vec<&'a [crate::FeatureVector]> {
        rs.iter()
            .filter(|r| keep(r))
            .map(|r| r.windows.as_slice())
            .collect()
    }
    let classes = classifier.classes();
    let known_windows = windows(known, &|r| classes.contains(&r.label));
    let unknown_windows = windows(unknown, &|r| {
        !classes.contains(&r.label) || is_background(&r.label)
    });
    let thresholds = classifier.thresholds();
    let summarise = |ws: &[&[crate::FeatureVector]]| -> Result<(Vec<f32>, usize)> {
        let scores = classifier.score_recordings(ws)?;
        let top: Vec<f32> = scores
            .iter()
            .map(|s| s.iter().copied().fold(0f32, f32::max))
            .collect();
        let detected = scores
            .iter()
            .filter(|s| s.iter().zip(thresholds).any(|(v, t)| v >= t))
            .count();
        Ok((top, detected))
    };
    let (known_top, known_detected) = summarise(&known_windows)?;
    let (unknown_top, unknown_detected) = summarise(&unknown_windows)?;
    let share = |d: usize, n: usize| (n > 0).then(|| d as f64 / n as f64);
    let count = |rs: &[&[crate::FeatureVector]]| rs.iter().map(|r| r.len()).sum::<usize>();
    let (known_count, unknown_count) = (count(&known_windows), count(&unknown_windows));
    let hours = unknown_count as f64 * window_hop_s / 3600.0;
    Ok(OpenSet {
        auroc: auroc(&known_top, &unknown_top),
        unknown_windows_detected: share(unknown_detected, unknown_count),
        known_windows_detected: share(known_detected, known_count),
        false_detections_per_hour: (hours > 0.0).then(|| unknown_detected as f64 / hours),
        unknown_median_top_score: median(unknown_top),
        known_median_top_score: median(known_top),
        unknown_windows: unknown_count,
        known_windows: known_count,
    })
}

fn median(mut v: Vec<f32>) -> Option<f32> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f32::total_cmp);
    Some(v[v.len() / 2])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auroc_is_the_chance_a_positive_outranks_a_negative() {
        assert_eq!(auroc(&[0.9, 0.8], &[0.1, 0.2]), Some(1.0));
        assert_eq!(auroc(&[0.1, 0.2], &[0.9, 0.8]), Some(0.0));
        assert_eq!(auroc(&[0.5], &[0.5]), Some(0.5));
        // One of the four pairs is out of order.
        assert_eq!(auroc(&[0.9, 0.3], &[0.1, 0.5]), Some(0.75));
        assert_eq!(auroc(&[], &[0.5]), None);
    }

    #[test]
    fn average_precision_rewards_positives_ranked_first() {
        let mut perfect = vec![(0.9, true), (0.8, true), (0.1, false)];
        assert_eq!(average_precision(&mut perfect), Some(1.0));
        // Positives at ranks 2 and 3: (1/2 + 2/3) / 2.
        let mut late = vec![(0.9, false), (0.8, true), (0.7, true)];
        let ap = average_precision(&mut late).unwrap();
        assert!((ap - (0.5 + 2.0 / 3.0) / 2.0).abs() < 1e-12);
        // A constant score ranks no positive above a negative.
        let mut flat = vec![(0.5, true), (0.5, false)];
        assert_eq!(average_precision(&mut flat), Some(0.5));
        assert_eq!(average_precision(&mut [(0.5, false)]), None);
    }
}
