//! `cross-validate`: a recipe's quality by k-fold cross-validation over
//! recordings.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{Context, Result};
use birdsong_audio::WindowConfig;
use birdsong_model::{
    ANCHORED, Backbone, CNN, EpochReport, Recording, SpectrogramRecording, TrainConfig,
    TrainedModel, evaluate, split_by_recording, train, train_anchored, train_cnn,
};
use clap::Args;
use serde::Serialize;

use crate::data::{
    DataArgs, create_file, extract, extract_spectrograms, progress_bar, read_manifest,
    synthetic_background, write_predictions,
};
use crate::recipe::RecipeArgs;
use crate::train::AnchorArgs;

#[derive(Args)]
pub(crate) struct CrossValidateArgs {
    #[command(flatten)]
    data: DataArgs,
    #[command(flatten)]
    recipe: RecipeArgs,
    #[command(flatten)]
    anchor: AnchorArgs,
    /// Split of the manifest to cross-validate on.
    #[arg(long, default_value = "train")]
    split: String,
    /// Number of folds (by recording, stratified by species).
    #[arg(long, default_value_t = 5)]
    folds: usize,
    /// Early-stop each fold's training on this share of its training recordings, with
    /// --patience epochs (to measure what early stopping costs or gains).
    #[arg(long, requires = "patience")]
    validation_fraction: Option<f64>,
    /// Patience for early stopping (see --validation-fraction).
    #[arg(long, requires = "validation_fraction")]
    patience: Option<usize>,
    /// Seed of the fold assignment (default: --seed). Fix it while varying --seed to
    /// compare or combine training runs on exactly the same folds.
    #[arg(long)]
    fold_seed: Option<u64>,
    /// Write every held-out window's class probabilities here as JSON lines, one line per
    /// recording, to study aggregation rules or ensembles out of fold.
    #[arg(long)]
    predictions: Option<PathBuf>,
}

/// Figures of one cross-validation fold.
#[derive(Serialize)]
pub(crate) struct FoldResult {
    fold: usize,
    held_out_recordings: usize,
    window_accuracy: f64,
    window_macro_f1: f64,
    recording_accuracy: f64,
    /// Epochs each network of the fold's model trained (fewer than configured where
    /// early stopping ended it).
    epochs: Vec<usize>,
}

pub(crate) fn run_cross_validate(args: CrossValidateArgs) -> Result<()> {
    let config = args.recipe.config(args.patience);
    config.validate().context("invalid training recipe")?;
    let rows = read_manifest(&args.data.manifest, &args.split)?;
    // Training folds use the recipe's windows (the CNN: each recording's whole
    // spectrogram); held-out folds the standard ones.
    let standard_window = WindowConfig::default();
    let training_window = config.training_windows(&standard_window);
    let backbone = config.features.backbone();
    let cnn = config.architecture == CNN;
    let spectrograms = if cnn {
        extract_spectrograms(&rows, &args.data)?
    } else {
        Vec::new()
    };
    let train_windows = if cnn {
        Vec::new()
    } else {
        extract(&rows, &args.data, &training_window, backbone)?
    };
    let standard = if !cnn && training_window == standard_window {
        train_windows.clone()
    } else {
        extract(&rows, &args.data, &standard_window, backbone)?
    };
    // As `train` does: synthetic background as negatives for BirdNET's embedding (the
    // acoustic and spectrogram trainings add their own).
    let background = if config.synthetic_negatives && backbone == Backbone::Birdnet {
        Some(synthetic_background(
            backbone,
            &args.data,
            &training_window,
        )?)
    } else {
        None
    };
    let fold_seed = args.fold_seed.unwrap_or(args.recipe.seed);
    let folds = birdsong_model::k_folds(&standard, args.folds, fold_seed)?;
    let mut predictions = args.predictions.as_deref().map(create_file).transpose()?;
    let bar = progress_bar(
        args.folds as u64,
        "{elapsed_precise} [{bar:30}] fold {pos}/{len}",
    );
    let mut results = Vec::new();
    for (fold, (_, held_out)) in folds.iter().enumerate() {
        let held = |id: &str| held_out.iter().any(|h| h.id == id);
        let trained = if cnn {
            let fit: Vec<SpectrogramRecording> = spectrograms
                .iter()
                .filter(|r| !held(&r.id))
                .cloned()
                .collect();
            train_cnn_fold(fit, &standard, &config, &args)?
        } else {
            let train_set: Vec<Recording> = train_windows
                .iter()
                .filter(|r| !held(&r.id))
                .cloned()
                .collect();
            let (mut fit, validation) = match args.validation_fraction {
                Some(fraction) => {
                    let (fit, validation) =
                        split_by_recording(train_set, fraction, args.recipe.seed)?;
                    (fit, Some(validation))
                }
                None => (train_set, None),
            };
            fit.extend(background.clone());
            if config.architecture == ANCHORED {
                let anchor = args.anchor.anchor(&args.data, &fit)?;
                train_anchored(&fit, validation.as_deref(), &config, &anchor, |_| {})
            } else {
                train(&fit, validation.as_deref(), &config, |_| {})
            }
            .context("training failed")?
        };
        let epochs = epochs_per_network(&trained.artifact.meta().history, config.members);
        let e = evaluate(&trained.classifier, held_out)?;
        if let Some(out) = predictions.as_mut() {
            write_predictions(out, Some(fold), &trained.classifier, held_out)?;
            // A fold takes minutes to hours: make its lines readable as soon as it ends.
            out.flush().context("writing predictions")?;
        }
        results.push(FoldResult {
            fold,
            held_out_recordings: held_out.len(),
            window_accuracy: e.window.accuracy,
            window_macro_f1: e.window.macro_avg.f1,
            recording_accuracy: e.recording.accuracy,
            epochs,
        });
        bar.inc(1);
    }
    bar.finish_and_clear();
    let mean =
        |f: fn(&FoldResult) -> f64| results.iter().map(f).sum::<f64>() / results.len() as f64;
    let summary = serde_json::json!({
        "config": config,
        "fold_seed": fold_seed,
        "folds": results,
        "mean": {
            "window_accuracy": mean(|r| r.window_accuracy),
            "window_macro_f1": mean(|r| r.window_macro_f1),
            "recording_accuracy": mean(|r| r.recording_accuracy),
        }
    });
    let mut out = std::io::stdout().lock();
    serde_json::to_writer_pretty(&mut out, &summary)?;
    writeln!(out)?;
    Ok(())
}

/// Trains one fold's CNN on `fit`'s spectrograms; with `--validation-fraction`, a
/// share of them (split by recording as for the other architectures) is held back
/// and early stopping watches their standard windows, taken from `standard`.
fn train_cnn_fold(
    fit: Vec<SpectrogramRecording>,
    standard: &[Recording],
    config: &TrainConfig,
    args: &CrossValidateArgs,
) -> Result<TrainedModel> {
    let Some(fraction) = args.validation_fraction else {
        return train_cnn(&fit, None, config, |_| {}).context("training failed");
    };
    let stubs: Vec<Recording> = fit.iter().map(SpectrogramRecording::stub).collect();
    let (_, held) = split_by_recording(stubs, fraction, args.recipe.seed)?;
    let is_held = |id: &str| held.iter().any(|h| h.id == id);
    let validation: Vec<Recording> = standard
        .iter()
        .filter(|r| is_held(&r.id))
        .cloned()
        .collect();
    let fit: Vec<SpectrogramRecording> = fit.into_iter().filter(|r| !is_held(&r.id)).collect();
    train_cnn(&fit, Some(&validation), config, |_| {}).context("training failed")
}

/// How many epochs each of `members` networks ran, read from a training history whose
/// reports carry the network they belong to.
pub(crate) fn epochs_per_network(history: &[EpochReport], members: usize) -> Vec<usize> {
    let mut epochs = vec![0; members];
    for report in history {
        if let Some(n) = report.member.checked_sub(1).and_then(|i| epochs.get_mut(i)) {
            *n = (*n).max(report.epoch);
        }
    }
    epochs
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn epochs_are_counted_per_network() {
        let report = |member, epoch| EpochReport {
            epoch,
            epochs: 60,
            member,
            members: 3,
            loss: 0.0,
            validation_loss: None,
            validation_accuracy: None,
            validation_recording_accuracy: None,
        };
        // Network 2 stopped early after 2 epochs; network 3 never reported.
        let history = [1, 2, 3].map(|e| report(1, e));
        let history: Vec<_> = history
            .into_iter()
            .chain([report(2, 1), report(2, 2)])
            .collect();
        assert_eq!(epochs_per_network(&history, 3), vec![3, 2, 0]);
        assert_eq!(epochs_per_network(&history[..3], 1), vec![3]);
    }
}
