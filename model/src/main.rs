//! `birdsong-model`: train, evaluate and run species classifiers from the command line.
//!
//! ```text
//! birdsong-model train    --manifest data/xc3/manifest.csv --audio-root data/xc3 --out models/v1 --seed 1
//! birdsong-model evaluate --model models/v1 --manifest data/xc3/manifest.csv --audio-root data/xc3 --split test
//! birdsong-model predict  --model models/v1 recording.mp3 other.wav
//! ```
//!
//! It is a thin shell over the `birdsong_model` library (the same code the worker and the
//! retrainer run) and the `birdsong_audio` feature extractor.

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use birdsong_audio::{Analysis, WindowConfig, analyze_file};
use birdsong_model::evaluate::EVALUATION_QUIET_MARGIN_DB;
use birdsong_model::{
    Artifact, Classifier, EpochReport, FEATURE_COUNT, FEATURE_VERSION, FeatureSet, Output,
    Recording, Stopping, TrainConfig, calibrate, evaluate, open_set, split_by_recording, train,
};
use clap::{Args, Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use serde::{Deserialize, Serialize};

#[derive(Parser)]
#[command(
    name = "birdsong-model",
    version,
    about = "Train, evaluate and run birdsong species classifiers"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Train a model on the manifest's training recordings and write its artifact.
    Train(TrainArgs),
    /// Score a model on the manifest's recordings of one split; prints metrics JSON.
    Evaluate(EvaluateArgs),
    /// Choose a model's per-species detection thresholds on one split of the manifest
    /// (recordings it was not trained on) and write them into its artifact.
    Calibrate(CalibrateArgs),
    /// Classify audio files; prints one JSON line per window and one per file.
    Predict(PredictArgs),
    /// Estimate a recipe's quality by k-fold cross-validation over recordings of one
    /// split (to compare recipes without touching the test split); prints JSON.
    CrossValidate(CrossValidateArgs),
    /// Write the windows' features of one split as CSV (recording, label and every
    /// named feature), to train other tools on exactly the same inputs. Keep it out of
    /// the repository when the audio is licensed.
    Features(FeaturesArgs),
}

#[derive(Args)]
struct FeaturesArgs {
    #[command(flatten)]
    data: DataArgs,
    /// Split of the manifest to export.
    #[arg(long)]
    split: String,
    /// Hop between windows in seconds.
    #[arg(long, default_value_t = 5.0)]
    hop_s: f64,
    /// CSV file to write.
    #[arg(long)]
    out: PathBuf,
}

#[derive(Args)]
struct DataArgs {
    /// CSV with at least the columns path, species, split (other columns are ignored).
    #[arg(long)]
    manifest: PathBuf,
    /// Directory the manifest's paths are relative to.
    #[arg(long)]
    audio_root: PathBuf,
    /// Feature-extraction threads (default: available cores).
    #[arg(long)]
    threads: Option<usize>,
}

#[derive(Args)]
struct TrainArgs {
    #[command(flatten)]
    data: DataArgs,
    /// Directory to write the artifact to.
    #[arg(long)]
    out: PathBuf,
    /// Split of the manifest to train on.
    #[arg(long, default_value = "train")]
    split: String,
    #[command(flatten)]
    recipe: RecipeArgs,
    /// Share of the training recordings held out (by recording, stratified) to report
    /// validation figures during training. 0 trains on all of them.
    #[arg(long, default_value_t = 0.0)]
    validation_fraction: f64,
    /// Stop when validation loss has not improved for this many epochs (needs
    /// --validation-fraction > 0). Off by default: see the crate docs on the stopping rule.
    #[arg(long)]
    patience: Option<usize>,
    /// Also evaluate on this split of the manifest and store the result in the artifact.
    #[arg(long)]
    evaluate_split: Option<String>,
    /// Version string recorded in the artifact.
    #[arg(long)]
    model_version: Option<String>,
    /// Choose the per-species detection thresholds on this split of the manifest
    /// (default: on the validation recordings, if --validation-fraction is set; else
    /// every species detects at the default threshold).
    #[arg(long)]
    calibrate_split: Option<String>,
    /// Precision each species' threshold is chosen to reach.
    #[arg(long, default_value_t = birdsong_model::DEFAULT_TARGET_PRECISION)]
    target_precision: f64,
}

/// The recipe the other options start from.
#[derive(Clone, Copy, Debug, PartialEq, clap::ValueEnum)]
enum Recipe {
    /// Five networks on the band profile without medians, windows every 1.25 s, L2
    /// 1.6e-5 (`TrainConfig::default()`).
    Recommended,
    /// The Python pipeline's: one network on librosa's 95 features, windows every 5 s,
    /// L2 1e-3 (`TrainConfig::reference()`).
    Reference,
}

/// How to train: shared by `train` and `cross-validate`.
#[derive(Args)]
struct RecipeArgs {
    /// Recipe whose features, L2, training hop and number of networks apply unless set
    /// below.
    #[arg(long, value_enum, default_value_t = Recipe::Recommended)]
    recipe: Recipe,
    /// Seed of the validation split, initialisation, shuffling and dropout.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Epochs (the fixed budget, or the maximum with --patience).
    #[arg(long, default_value_t = 60)]
    epochs: usize,
    /// Windows per minibatch.
    #[arg(long, default_value_t = 32)]
    batch_size: usize,
    /// Adam learning rate.
    #[arg(long, default_value_t = 1e-3)]
    learning_rate: f64,
    /// L2 penalty on kernel weights (default: the recipe's).
    #[arg(long)]
    l2: Option<f64>,
    /// Standard deviation of Gaussian noise added to standardised training inputs.
    #[arg(long, default_value_t = 0.0)]
    input_noise: f32,
    /// Average the weights of the last N epochs (stochastic weight averaging); 0 = off.
    #[arg(long, default_value_t = 0)]
    average_last_epochs: usize,
    /// Network architecture.
    #[arg(long, default_value = birdsong_model::MLP)]
    architecture: String,
    /// Which features the network reads (default: the recipe's):
    /// `bands_no_median` (the band profile without its per-band medians), `bands` (the
    /// band profile), `all` (librosa's 95 and the band profile) or `librosa` (the
    /// reference recipe's 95).
    #[arg(long)]
    features: Option<FeatureSet>,
    /// Weight windows so that every recording counts the same, however long.
    #[arg(long)]
    balance_recordings: bool,
    /// Turn off balanced class weights.
    #[arg(long)]
    no_class_weights: bool,
    /// Hop between training windows in seconds (default: the recipe's);
    /// below the 5 s window length, windows overlap and the network sees more (shifted)
    /// examples. Evaluation always uses the standard non-overlapping windows.
    #[arg(long)]
    train_hop_s: Option<f64>,
    /// Networks to train from different seeds and average (default: the recipe's).
    /// Each costs a full training run.
    #[arg(long)]
    members: Option<usize>,
    /// How outputs become scores (default: the recipe's): `sigmoid` (one presence
    /// score per species, trained one-vs-rest) or `softmax` (one distribution).
    #[arg(long)]
    output: Option<Output>,
    /// With sigmoid outputs, train windows this many dB below their recording's
    /// loudest as negatives (default: the recipe's).
    #[arg(long, conflicts_with = "no_quiet_negatives")]
    quiet_margin_db: Option<f32>,
    /// Train every window as its recording's label, quiet or not.
    #[arg(long)]
    no_quiet_negatives: bool,
    /// Do not train synthetic background (silence, noise, hum) as negatives.
    #[arg(long)]
    no_synthetic_negatives: bool,
}

impl RecipeArgs {
    fn config(&self, patience: Option<usize>) -> TrainConfig {
        let recipe = match self.recipe {
            Recipe::Recommended => TrainConfig::default(),
            Recipe::Reference => TrainConfig::reference(),
        };
        TrainConfig {
            architecture: self.architecture.clone(),
            features: self.features.unwrap_or(recipe.features),
            epochs: self.epochs,
            batch_size: self.batch_size,
            learning_rate: self.learning_rate,
            l2: self.l2.unwrap_or(recipe.l2),
            class_weighting: !self.no_class_weights,
            balance_recordings: self.balance_recordings,
            input_noise: self.input_noise,
            average_last_epochs: self.average_last_epochs,
            train_hop_s: self.train_hop_s.unwrap_or(recipe.train_hop_s),
            members: self.members.unwrap_or(recipe.members),
            output: self.output.unwrap_or(recipe.output),
            quiet_margin_db: if self.no_quiet_negatives {
                None
            } else {
                self.quiet_margin_db.or(recipe.quiet_margin_db)
            },
            synthetic_negatives: recipe.synthetic_negatives && !self.no_synthetic_negatives,
            stopping: match patience {
                Some(patience) => Stopping::EarlyStopping { patience },
                None => Stopping::FixedEpochs,
            },
            seed: self.seed,
        }
    }
}

#[derive(Args)]
struct CrossValidateArgs {
    #[command(flatten)]
    data: DataArgs,
    #[command(flatten)]
    recipe: RecipeArgs,
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

#[derive(Args)]
struct EvaluateArgs {
    #[command(flatten)]
    data: DataArgs,
    /// Artifact directory.
    #[arg(long)]
    model: PathBuf,
    /// Split of the manifest to evaluate on.
    #[arg(long, default_value = "test")]
    split: String,
    /// Hop between windows in seconds. Below 5 s windows overlap: window-level figures
    /// are then over more (overlapping) windows, recording-level ones average more views.
    #[arg(long, default_value_t = 5.0)]
    hop_s: f64,
    /// Also write every window's class probabilities here as JSON lines, one line per
    /// recording.
    #[arg(long)]
    predictions: Option<PathBuf>,
    /// A folder of recordings of species the model does not know (searched
    /// recursively for audio files): adds the open-set figures (how well the top score
    /// separates them from the split's windows, and how many of their windows would
    /// be detections).
    #[arg(long)]
    unknown: Option<PathBuf>,
}

#[derive(Args)]
struct CalibrateArgs {
    #[command(flatten)]
    data: DataArgs,
    /// Artifact directory (rewritten in place with the new thresholds).
    #[arg(long)]
    model: PathBuf,
    /// Split of the manifest to choose the thresholds on.
    #[arg(long)]
    split: String,
    /// Precision each species' threshold is chosen to reach.
    #[arg(long, default_value_t = birdsong_model::DEFAULT_TARGET_PRECISION)]
    target_precision: f64,
}

#[derive(Args)]
struct PredictArgs {
    /// Artifact directory.
    #[arg(long)]
    model: PathBuf,
    /// Species listed per window and per file.
    #[arg(long, default_value_t = 3)]
    top_k: usize,
    /// Audio files to classify.
    #[arg(required = true)]
    files: Vec<PathBuf>,
}

/// One manifest row; columns other than these are ignored.
#[derive(Deserialize)]
struct ManifestRow {
    path: String,
    species: String,
    split: String,
}

fn main() -> Result<()> {
    match Cli::parse().command {
        Command::Train(args) => run_train(args),
        Command::Evaluate(args) => run_evaluate(args),
        Command::Calibrate(args) => run_calibrate(args),
        Command::Predict(args) => run_predict(args),
        Command::CrossValidate(args) => run_cross_validate(args),
        Command::Features(args) => run_features(args),
    }
}

fn run_features(args: FeaturesArgs) -> Result<()> {
    let rows = read_manifest(&args.data.manifest, &args.split)?;
    let config = WindowConfig {
        hop_s: args.hop_s,
        ..WindowConfig::default()
    };
    let recordings = extract(&rows, &args.data, &config)?;
    let mut writer = csv::Writer::from_path(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;
    let mut header = vec!["recording".to_string(), "label".to_string()];
    header.extend(birdsong_audio::FEATURE_NAMES.iter().map(|n| n.to_string()));
    writer.write_record(&header)?;
    for r in &recordings {
        for w in &r.windows {
            let mut record = vec![r.id.clone(), r.label.clone()];
            record.extend(w.iter().map(|v| v.to_string()));
            writer.write_record(&record)?;
        }
    }
    writer.flush()?;
    Ok(())
}

fn run_train(args: TrainArgs) -> Result<()> {
    let config = args.recipe.config(args.patience);
    config.validate().context("invalid training recipe")?;
    let rows = read_manifest(&args.data.manifest, &args.split)?;
    let training_window = config.training_windows(&WindowConfig::default());
    let recordings = extract(&rows, &args.data, &training_window)?;
    let (train_set, validation_set) =
        split_by_recording(recordings, args.validation_fraction, args.recipe.seed)?;
    let windows: usize = train_set.iter().map(|r| r.windows.len()).sum();
    eprintln!(
        "training {} on {} recordings ({windows} windows), validating on {}",
        config.architecture,
        train_set.len(),
        validation_set.len()
    );
    let bar = progress_bar(
        (config.epochs * config.members) as u64,
        "{elapsed_precise} [{bar:30}] epoch {pos}/{len} {msg}",
    );
    let started = Instant::now();
    let validation = (!validation_set.is_empty()).then_some(validation_set.as_slice());
    let mut trained = train(&train_set, validation, &config, |r: &EpochReport| {
        bar.set_position(((r.member - 1) * r.epochs + r.epoch) as u64);
        bar.set_message(epoch_message(r));
    })
    .context("training failed")?;
    bar.finish_and_clear();
    let seconds = started.elapsed().as_secs_f64();
    if let Some(last) = trained.artifact.meta().history.last() {
        let members = match last.members {
            1 => String::new(),
            n => format!(" × {n} networks"),
        };
        eprintln!(
            "trained {} epochs{members} in {seconds:.1} s; {}",
            last.epoch,
            epoch_message(last)
        );
    }
    if let Some(split) = &args.evaluate_split {
        let rows = read_manifest(&args.data.manifest, split)?;
        let recordings = extract(&rows, &args.data, &WindowConfig::default())?;
        let evaluation = evaluate(&trained.classifier, &recordings)?;
        eprintln!(
            "{split}: window accuracy {:.3}, window macro F1 {:.3}, recording accuracy {:.3}",
            evaluation.window.accuracy,
            evaluation.window.macro_avg.f1,
            evaluation.recording.accuracy
        );
        trained.artifact.set_metrics(split.clone(), evaluation);
    }
    let calibration = match &args.calibrate_split {
        Some(split) => {
            let rows = read_manifest(&args.data.manifest, split)?;
            Some((
                split.clone(),
                extract(&rows, &args.data, &WindowConfig::default())?,
            ))
        }
        None if !validation_set.is_empty() => {
            // The validation recordings were cut with the training hop; thresholds
            // apply to the standard windows.
            let ids: Vec<&str> = validation_set.iter().map(|r| r.id.as_str()).collect();
            let rows: Vec<ManifestRow> = read_manifest(&args.data.manifest, &args.split)?
                .into_iter()
                .filter(|r| ids.contains(&r.path.as_str()))
                .collect();
            Some((
                "validation".to_string(),
                extract(&rows, &args.data, &WindowConfig::default())?,
            ))
        }
        None => None,
    };
    if let Some((name, recordings)) = calibration {
        let thresholds = calibrate(
            &trained.classifier,
            &recordings,
            args.target_precision,
            Some(EVALUATION_QUIET_MARGIN_DB),
        )?;
        eprintln!(
            "thresholds for precision {} chosen on {name} ({} windows): {:?}",
            args.target_precision, thresholds.windows, thresholds.values
        );
        trained.artifact.set_thresholds(thresholds);
    }
    if let Some(version) = args.model_version {
        trained.artifact.set_version(version);
    }
    trained
        .artifact
        .save_dir(&args.out)
        .with_context(|| format!("writing the artifact to {}", args.out.display()))?;
    eprintln!("model written to {}", args.out.display());
    Ok(())
}

/// Figures of one cross-validation fold.
#[derive(Serialize)]
struct FoldResult {
    fold: usize,
    held_out_recordings: usize,
    window_accuracy: f64,
    window_macro_f1: f64,
    recording_accuracy: f64,
    /// Epochs each network of the fold's model trained (fewer than configured where
    /// early stopping ended it).
    epochs: Vec<usize>,
}

fn run_cross_validate(args: CrossValidateArgs) -> Result<()> {
    let config = args.recipe.config(args.patience);
    config.validate().context("invalid training recipe")?;
    let rows = read_manifest(&args.data.manifest, &args.split)?;
    // Training folds use the recipe's windows; held-out folds the standard ones.
    let standard_window = WindowConfig::default();
    let training_window = config.training_windows(&standard_window);
    let train_windows = extract(&rows, &args.data, &training_window)?;
    let standard = if training_window == standard_window {
        train_windows.clone()
    } else {
        extract(&rows, &args.data, &standard_window)?
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
        let train_set: Vec<Recording> = train_windows
            .iter()
            .filter(|r| held_out.iter().all(|h| h.id != r.id))
            .cloned()
            .collect();
        let trained = match args.validation_fraction {
            Some(fraction) => {
                let (fit, validation) = split_by_recording(train_set, fraction, args.recipe.seed)?;
                train(&fit, Some(&validation), &config, |_| {})
            }
            None => train(&train_set, None, &config, |_| {}),
        }
        .context("training failed")?;
        let epochs = epochs_per_network(&trained.artifact.meta().history, config.members);
        let e = evaluate(&trained.classifier, held_out)?;
        if let Some(out) = predictions.as_mut() {
            write_predictions(out, Some(fold), &trained.classifier, held_out)?;
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
    if let Some(mut out) = predictions {
        out.flush().context("writing predictions")?;
    }
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

/// How many epochs each of `members` networks ran, read from a training history whose
/// reports carry the network they belong to.
fn epochs_per_network(history: &[EpochReport], members: usize) -> Vec<usize> {
    let mut epochs = vec![0; members];
    for report in history {
        if let Some(n) = report.member.checked_sub(1).and_then(|i| epochs.get_mut(i)) {
            *n = (*n).max(report.epoch);
        }
    }
    epochs
}

/// A buffered writer on a new file at `path`.
fn create_file(path: &Path) -> Result<std::io::BufWriter<std::fs::File>> {
    let file =
        std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
    Ok(std::io::BufWriter::new(file))
}

/// One JSON line per recording: its fold (in cross-validation), label and every
/// window's probabilities.
fn write_predictions(
    out: &mut impl Write,
    fold: Option<usize>,
    classifier: &Classifier,
    recordings: &[Recording],
) -> Result<()> {
    for r in recordings {
        let probabilities = classifier.predict(&r.windows)?;
        let line = serde_json::json!({
            "fold": fold,
            "recording": r.id,
            "label": r.label,
            "classes": classifier.classes(),
            "windows": probabilities,
        });
        serde_json::to_writer(&mut *out, &line)?;
        writeln!(out)?;
    }
    Ok(())
}

fn epoch_message(r: &EpochReport) -> String {
    let mut msg = match r.members {
        1 => String::new(),
        n => format!("network {}/{n} ", r.member),
    };
    msg.push_str(&format!("loss {:.4}", r.loss));
    if let (Some(acc), Some(rec)) = (r.validation_accuracy, r.validation_recording_accuracy) {
        msg.push_str(&format!(" val acc {acc:.3} (recordings {rec:.3})"));
    }
    msg
}

fn run_evaluate(args: EvaluateArgs) -> Result<()> {
    let classifier = load_classifier(&args.model)?;
    let rows = read_manifest(&args.data.manifest, &args.split)?;
    // Created first, so that a bad path fails before the features are extracted.
    let predictions = args.predictions.as_deref().map(create_file).transpose()?;
    let config = WindowConfig {
        hop_s: args.hop_s,
        ..WindowConfig::default()
    };
    let recordings = extract(&rows, &args.data, &config)?;
    let evaluation = evaluate(&classifier, &recordings).context("evaluation failed")?;
    if let Some(mut out) = predictions {
        write_predictions(&mut out, None, &classifier, &recordings)?;
        out.flush().context("writing predictions")?;
    }
    let open_set = match &args.unknown {
        Some(dir) => {
            let unknown = extract_folder(dir, &args.data, &config)?;
            Some(open_set(&classifier, &recordings, &unknown, config.hop_s)?)
        }
        None => None,
    };
    let mut report = serde_json::to_value(&evaluation)?;
    if let Some(open_set) = open_set {
        report["open_set"] = serde_json::to_value(open_set)?;
    }
    let mut out = std::io::stdout().lock();
    serde_json::to_writer_pretty(&mut out, &report)?;
    writeln!(out)?;
    Ok(())
}

fn run_calibrate(args: CalibrateArgs) -> Result<()> {
    let mut artifact = Artifact::load_dir(&args.model, FEATURE_VERSION, FEATURE_COUNT)
        .with_context(|| format!("loading the model in {}", args.model.display()))?;
    let classifier = Classifier::from_artifact(&artifact)?;
    let rows = read_manifest(&args.data.manifest, &args.split)?;
    let recordings = extract(&rows, &args.data, &WindowConfig::default())?;
    let thresholds = calibrate(
        &classifier,
        &recordings,
        args.target_precision,
        Some(EVALUATION_QUIET_MARGIN_DB),
    )?;
    eprintln!(
        "thresholds for precision {} chosen on {} ({} windows): {:?}",
        args.target_precision, args.split, thresholds.windows, thresholds.values
    );
    artifact.set_thresholds(thresholds);
    artifact
        .save_dir(&args.model)
        .with_context(|| format!("writing the artifact to {}", args.model.display()))?;
    Ok(())
}

/// One line of `predict` output.
#[derive(Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
enum PredictLine<'a> {
    Window {
        file: &'a str,
        start_s: f64,
        end_s: f64,
        top: Vec<birdsong_model::Prediction>,
    },
    File {
        file: &'a str,
        duration_s: f64,
        windows: usize,
        top: Vec<birdsong_model::Prediction>,
        model_version: Option<&'a str>,
    },
    Error {
        file: &'a str,
        error: String,
    },
}

fn run_predict(args: PredictArgs) -> Result<()> {
    let classifier = load_classifier(&args.model)?;
    let config = WindowConfig::default();
    let analyses: Vec<(String, Result<Analysis, String>)> =
        parallel_map(&args.files, None, |path| {
            (
                path.display().to_string(),
                analyze_file(path, &config).map_err(|e| e.to_string()),
            )
        });
    // All windows of all files in one forward pass.
    let features: Vec<Vec<birdsong_model::FeatureVector>> = analyses
        .iter()
        .filter_map(|(_, a)| a.as_ref().ok())
        .map(|a| a.windows.iter().map(|w| w.features).collect())
        .collect();
    let batch: Vec<&[birdsong_model::FeatureVector]> = features.iter().map(Vec::as_slice).collect();
    let mut predictions = classifier
        .classify_recordings(&batch, args.top_k)?
        .into_iter();
    let mut out = std::io::stdout().lock();
    let mut failures = 0;
    let version = classifier.info().version.as_deref();
    for (file, analysis) in &analyses {
        let (analysis, prediction) = match (analysis, predictions.next()) {
            (Ok(a), Some(p)) => (a, p),
            (Err(error), _) => {
                failures += 1;
                print_line(
                    &mut out,
                    &PredictLine::Error {
                        file,
                        error: error.clone(),
                    },
                )?;
                continue;
            }
            (Ok(_), None) => bail!("internal error: fewer predictions than analysed files"),
        };
        for (window, p) in analysis.windows.iter().zip(prediction.windows) {
            print_line(
                &mut out,
                &PredictLine::Window {
                    file,
                    start_s: window.start_s,
                    end_s: window.end_s,
                    top: p.top,
                },
            )?;
        }
        print_line(
            &mut out,
            &PredictLine::File {
                file,
                duration_s: analysis.info.duration_s,
                windows: analysis.windows.len(),
                top: prediction.summary.map(|s| s.top).unwrap_or_default(),
                model_version: version,
            },
        )?;
    }
    if failures == analyses.len() {
        bail!("none of the {failures} files could be analysed");
    }
    Ok(())
}

fn print_line(out: &mut impl Write, line: &PredictLine<'_>) -> Result<()> {
    serde_json::to_writer(&mut *out, line)?;
    writeln!(out)?;
    Ok(())
}

fn load_classifier(dir: &Path) -> Result<Classifier> {
    let artifact = Artifact::load_dir(dir, FEATURE_VERSION, FEATURE_COUNT)
        .with_context(|| format!("loading the model in {}", dir.display()))?;
    Classifier::from_artifact(&artifact)
        .with_context(|| format!("loading the model in {}", dir.display()))
}

fn read_manifest(path: &Path, split: &str) -> Result<Vec<ManifestRow>> {
    let mut reader = csv::Reader::from_path(path)
        .with_context(|| format!("opening manifest {}", path.display()))?;
    let mut rows = Vec::new();
    for (i, row) in reader.deserialize::<ManifestRow>().enumerate() {
        let row = row.with_context(|| format!("{}: row {}", path.display(), i + 2))?;
        if row.split == split {
            rows.push(row);
        }
    }
    if rows.is_empty() {
        bail!("{} has no rows with split {split:?}", path.display());
    }
    Ok(rows)
}

/// Extracts the windows of every manifest row, in parallel, failing on the first file
/// that cannot be analysed (a silently smaller dataset would skew every number).
fn extract(rows: &[ManifestRow], data: &DataArgs, config: &WindowConfig) -> Result<Vec<Recording>> {
    let bar = progress_bar(
        rows.len() as u64,
        "{elapsed_precise} [{bar:30}] {pos}/{len} files analysed",
    );
    let results = parallel_map(rows, data.threads, |row| {
        let path = data.audio_root.join(&row.path);
        let analysis =
            analyze_file(&path, config).with_context(|| format!("analysing {}", path.display()));
        bar.inc(1);
        analysis.map(|a| Recording {
            id: row.path.clone(),
            label: row.species.clone(),
            windows: a.windows.into_iter().map(|w| w.features).collect(),
        })
    });
    bar.finish_and_clear();
    let recordings = results.into_iter().collect::<Result<Vec<_>>>()?;
    let mut per_species: BTreeMap<&str, usize> = BTreeMap::new();
    for r in &recordings {
        *per_species.entry(r.label.as_str()).or_default() += r.windows.len();
    }
    eprintln!(
        "{} recordings, windows per species: {per_species:?}",
        recordings.len()
    );
    Ok(recordings)
}

/// Extracts every audio file under `dir` (by extension, recursively), labelled with
/// its folder's name: recordings for the open-set figures.
fn extract_folder(dir: &Path, data: &DataArgs, config: &WindowConfig) -> Result<Vec<Recording>> {
    const AUDIO: [&str; 6] = ["mp3", "wav", "flac", "ogg", "m4a", "aiff"];
    let mut files = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).with_context(|| format!("reading {}", d.display()))? {
            let path = entry?.path();
            if path.is_dir() {
                stack.push(path);
            } else if path
                .extension()
                .and_then(|e| e.to_str())
                .is_some_and(|e| AUDIO.contains(&e.to_ascii_lowercase().as_str()))
            {
                files.push(path);
            }
        }
    }
    files.sort();
    if files.is_empty() {
        bail!("no audio files under {}", dir.display());
    }
    let rows: Vec<ManifestRow> = files
        .iter()
        .map(|p| ManifestRow {
            path: p.display().to_string(),
            species: p
                .parent()
                .and_then(|f| f.file_name())
                .map(|f| format!("unknown: {}", f.to_string_lossy()))
                .unwrap_or_else(|| "unknown".into()),
            split: String::new(),
        })
        .collect();
    let absolute = DataArgs {
        manifest: data.manifest.clone(),
        audio_root: PathBuf::from("/"),
        threads: data.threads,
    };
    extract(&rows, &absolute, config)
}

/// Maps `f` over `items` on scoped threads (work-stealing by index), keeping input order.
fn parallel_map<T: Sync, R: Send>(
    items: &[T],
    threads: Option<usize>,
    f: impl Fn(&T) -> R + Sync,
) -> Vec<R> {
    let threads = threads
        .or_else(|| std::thread::available_parallelism().ok().map(|n| n.get()))
        .unwrap_or(1)
        .clamp(1, items.len().max(1));
    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<Option<R>>> = Mutex::new((0..items.len()).map(|_| None).collect());
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(item) = items.get(i) else { break };
                    let r = f(item);
                    if let Ok(mut slots) = results.lock() {
                        slots[i] = Some(r);
                    }
                }
            });
        }
    });
    results
        .into_inner()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .into_iter()
        .flatten()
        .collect()
}

fn progress_bar(len: u64, template: &str) -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(len);
    if let Ok(style) = ProgressStyle::with_template(template) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A `train` command line with every required option.
    const TRAIN: [&str; 8] = [
        "birdsong-model",
        "train",
        "--manifest",
        "m",
        "--audio-root",
        "r",
        "--out",
        "o",
    ];

    fn recipe_of(args: &[&str]) -> TrainConfig {
        let cli = Cli::try_parse_from(TRAIN.iter().chain(args)).unwrap();
        match cli.command {
            Command::Train(train) => train.recipe.config(None),
            _ => unreachable!("parsed a train command"),
        }
    }

    #[test]
    fn recipes_are_the_librarys_and_options_override_them() {
        assert_eq!(recipe_of(&[]), TrainConfig::default());
        assert_eq!(
            recipe_of(&["--recipe", "reference"]),
            TrainConfig::reference()
        );
        let mixed = recipe_of(&["--recipe", "reference", "--members", "3", "--seed", "4"]);
        assert_eq!(
            mixed,
            TrainConfig {
                members: 3,
                seed: 4,
                ..TrainConfig::reference()
            }
        );
        assert!(Cli::try_parse_from(TRAIN.iter().chain(&["--recipe", "keras"])).is_err());
    }

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
