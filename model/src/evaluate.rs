//! Scoring a classifier on labelled recordings, window by window and recording by recording.

use crate::dataset::{Recording, is_background};
use crate::detection::detection_metrics_of;
use crate::inference::{Classifier, mean_probabilities};
use crate::metrics::Metrics;
pub use crate::report::{EVALUATION_QUIET_MARGIN_DB, Evaluation};
use crate::{ModelError, Result};

/// Evaluates `classifier` on `recordings` in one batched pass over all their windows,
/// on the scores it serves ([`Classifier::score_recordings`]).
///
/// Fails with [`ModelError::UnknownLabel`] if a label is not one of the classifier's
/// classes: such a recording can never be right, and silently scoring it would mix two
/// questions (is the model good, does it know this species).
///
/// Background-labelled recordings ([`crate::dataset::BACKGROUND_LABELS`]) take no part
/// in the closed-set figures and serve as negatives in the detection figures.
pub fn evaluate(classifier: &Classifier, recordings: &[Recording]) -> Result<Evaluation> {
    let classes = classifier.classes();
    // One forward pass over every window, background recordings' too: the
    // closed-set figures read the labelled ones, the detection figures all.
    let kept: Vec<&Recording> = recordings
        .iter()
        .filter(|r| !r.windows.is_empty())
        .collect();
    let windows: Vec<&[_]> = kept.iter().map(|r| r.windows.as_slice()).collect();
    let all_scores = classifier.score_recordings(&windows)?;
    let mut probabilities = Vec::with_capacity(all_scores.len());
    let mut offset = 0;
    for r in &kept {
        let rows = &all_scores[offset..offset + r.windows.len()];
        if !is_background(&r.label) {
            probabilities.extend(rows.iter().cloned());
        }
        offset += r.windows.len();
    }
    let scored: Vec<&Recording> = kept
        .iter()
        .copied()
        .filter(|r| !is_background(&r.label))
        .collect();
    let background = kept.len() - scored.len();
    let mut labels = Vec::with_capacity(scored.len());
    for r in &scored {
        let label = classes
            .iter()
            .position(|c| *c == r.label)
            .ok_or_else(|| ModelError::UnknownLabel(r.label.clone()))?;
        labels.push(label);
    }
    let mut window_truth = Vec::with_capacity(probabilities.len());
    let mut recording_probabilities = Vec::with_capacity(scored.len());
    let mut start = 0;
    for (r, &label) in scored.iter().zip(&labels) {
        let end = start + r.windows.len();
        window_truth.extend(std::iter::repeat_n(label, r.windows.len()));
        let mean = mean_probabilities(&probabilities[start..end], classes.len())
            .ok_or_else(|| ModelError::InvalidDataset("recording without windows".into()))?;
        recording_probabilities.push(mean);
        start = end;
    }
    Ok(Evaluation {
        window: Metrics::compute(classes, &window_truth, &probabilities)?,
        recording: Metrics::compute(classes, &labels, &recording_probabilities)?,
        skipped_recordings: recordings.len() - scored.len() - background,
        detection: Some(detection_metrics_of(
            classifier,
            &kept,
            all_scores,
            Some(EVALUATION_QUIET_MARGIN_DB),
        )),
    })
}
