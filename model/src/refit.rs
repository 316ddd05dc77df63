//! Refitting a judged recipe on every labelled recording.
//!
//! Held-out recordings are what make detection thresholds and a promotion
//! gate honest, but with a handful of recordings per species they are also a
//! large share of what a model could learn from: the retrainer's split keeps
//! 35 % of the recordings out of training, and `birdsong-model train
//! --calibrate-split` a whole split. A refit keeps the judgement and ships a
//! model that learnt from everything. The recipe is trained first without
//! the held-out recordings (the *judged* model: its thresholds are chosen
//! and its figures measured on them); then the same recipe trains again on
//! the training and held-out recordings together, for the epochs the judged
//! run used ([`refit_config`]), and the result carries the judged model's
//! thresholds and evaluations ([`carry_over`]), saying so in
//! [`ArtifactMeta::refit`](crate::ArtifactMeta::refit).
//!
//! What that trades: the thresholds were chosen on the judged model's
//! scores, which a model that saw more data can shift; and no recording is
//! left that the served model has not heard, so its figures are the judged
//! model's, an estimate of the recipe rather than a measurement of these
//! weights. That is standard practice in model selection, and the reason the
//! retrainer keeps the judged model beside the served one: the next run's
//! gate compares against it, on recordings neither has trained on.

use serde::{Deserialize, Serialize};

use crate::artifact::Artifact;
use crate::config::{EpochReport, Stopping, TrainConfig};
use crate::{ModelError, Result};

/// How a refit model relates to the model that was judged.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Refit {
    /// Recordings the refit trained on (training and held-out together).
    pub recordings: usize,
    /// Of those, the recordings the judged model never trained on.
    pub added_recordings: usize,
    /// Epochs per network of the refit: the judged run's (its best epoch,
    /// when it stopped early).
    pub epochs: usize,
    /// SHA-256 of the judged model's weights file.
    pub judged_weights_sha256: String,
    /// SHA-256 of the judged model's `model.json`, when it is stored beside
    /// this model (the retrainer stores it under `judged/`), so a reader can
    /// fetch and verify it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub judged_meta_sha256: Option<String>,
}

/// The recipe of a refit: `config` with a fixed epoch budget, the one the
/// judged run used. Under early stopping that is, per network, the epoch
/// whose validation loss was lowest (the weights it kept); the refit takes
/// the largest of those over the ensemble's networks, since it has no
/// validation recordings left to stop on.
pub fn refit_config(config: &TrainConfig, history: &[EpochReport]) -> TrainConfig {
    let epochs = match config.stopping {
        Stopping::FixedEpochs => config.epochs,
        Stopping::EarlyStopping { .. } => best_epochs(history).unwrap_or(config.epochs),
    };
    TrainConfig {
        epochs: epochs.clamp(1, config.epochs.max(1)),
        stopping: Stopping::FixedEpochs,
        ..config.clone()
    }
}

/// Per network, the epoch of lowest validation loss; the largest over the
/// networks. `None` when no epoch was validated.
fn best_epochs(history: &[EpochReport]) -> Option<usize> {
    let mut best: std::collections::BTreeMap<usize, (f64, usize)> = Default::default();
    for r in history {
        let Some(loss) = r.validation_loss.filter(|l| l.is_finite()) else {
            continue;
        };
        let entry = best.entry(r.member).or_insert((loss, r.epoch));
        if loss < entry.0 {
            *entry = (loss, r.epoch);
        }
    }
    best.values().map(|&(_, epoch)| epoch).max()
}

/// Gives the refit model the judged model's thresholds and evaluations and
/// records the relation. Refuses a refit whose classes differ: the
/// thresholds are per class, in class order.
pub fn carry_over(judged: &Artifact, refit: &mut Artifact) -> Result<()> {
    let (j, r) = (judged.meta(), refit.meta());
    if j.classes != r.classes {
        return Err(ModelError::InvalidDataset(format!(
            "the refit learnt classes {:?}, the judged model {:?}",
            r.classes, j.classes
        )));
    }
    let relation = Refit {
        recordings: r.training_data.recordings,
        added_recordings: r
            .training_data
            .recordings
            .saturating_sub(j.training_data.recordings),
        epochs: r.training.epochs,
        judged_weights_sha256: j.weights_sha256.clone(),
        judged_meta_sha256: None,
    };
    let thresholds = j.thresholds.clone();
    let metrics = j.metrics.clone();
    let validation_data = j.validation_data.clone();
    refit.set_refit(relation, thresholds, metrics, validation_data);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(member: usize, epoch: usize, validation_loss: Option<f64>) -> EpochReport {
        EpochReport {
            epoch,
            epochs: 10,
            member,
            members: 2,
            loss: 1.0,
            validation_loss,
            validation_accuracy: None,
            validation_recording_accuracy: None,
        }
    }

    #[test]
    fn fixed_epochs_refit_for_the_same_budget() {
        let config = TrainConfig {
            epochs: 17,
            ..TrainConfig::default()
        };
        let refit = refit_config(&config, &[report(1, 3, Some(0.1))]);
        assert_eq!(refit.epochs, 17);
        assert_eq!(refit, config);
    }

    #[test]
    fn early_stopping_refits_for_the_latest_best_epoch_of_the_networks() {
        let config = TrainConfig {
            epochs: 10,
            stopping: Stopping::EarlyStopping { patience: 2 },
            ..TrainConfig::default()
        };
        let history = [
            report(1, 1, Some(0.9)),
            report(1, 2, Some(0.5)),
            report(1, 3, Some(0.6)),
            report(1, 4, Some(0.7)),
            report(2, 1, Some(0.8)),
            report(2, 2, Some(0.7)),
            report(2, 3, Some(0.4)),
            report(2, 4, Some(f64::NAN)),
            report(2, 5, Some(0.45)),
        ];
        let refit = refit_config(&config, &history);
        assert_eq!(refit.epochs, 3);
        assert_eq!(refit.stopping, Stopping::FixedEpochs);
        // Nothing validated: the whole budget.
        let unvalidated = [report(1, 1, None), report(1, 2, None)];
        assert_eq!(refit_config(&config, &unvalidated).epochs, 10);
    }
}
