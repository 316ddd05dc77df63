//! `train`: a model from a manifest's split, with optional evaluation,
//! threshold calibration and refit, written as an artifact directory.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use birdsong_audio::WindowConfig;
use birdsong_model::artifact::sha256_hex;
use birdsong_model::evaluate::EVALUATION_QUIET_MARGIN_DB;
use birdsong_model::{
    ANCHORED, Anchor, Backbone, CNN, Classifier, EpochReport, META_FILE, Recording, TrainConfig,
    TrainedModel, calibrate, carry_over, class_list, evaluate, refit_config, split_by_recording,
    train, train_anchored, train_cnn,
};
use clap::Args;

use crate::data::{
    DataArgs, ManifestRow, extract, extract_spectrograms, progress_bar, read_manifest,
    synthetic_background,
};
use crate::recipe::{RecipeArgs, epoch_message};

#[derive(Args)]
pub(crate) struct TrainArgs {
    #[command(flatten)]
    pub(crate) data: DataArgs,
    /// Directory to write the artifact to.
    #[arg(long)]
    pub(crate) out: PathBuf,
    /// Split of the manifest to train on.
    #[arg(long, default_value = "train")]
    pub(crate) split: String,
    #[command(flatten)]
    pub(crate) recipe: RecipeArgs,
    /// Share of the training recordings held out (by recording, stratified) to report
    /// validation figures during training. 0 trains on all of them.
    #[arg(long, default_value_t = 0.0)]
    pub(crate) validation_fraction: f64,
    /// Stop when validation loss has not improved for this many epochs (needs
    /// --validation-fraction > 0). Off by default: see the crate docs on the stopping rule.
    #[arg(long)]
    pub(crate) patience: Option<usize>,
    /// Also evaluate on this split of the manifest and store the result in the artifact.
    #[arg(long)]
    pub(crate) evaluate_split: Option<String>,
    /// Version string recorded in the artifact.
    #[arg(long)]
    pub(crate) model_version: Option<String>,
    /// Choose the per-species detection thresholds on this split of the manifest
    /// (default: on the validation recordings, if --validation-fraction is set; else
    /// every species detects at the default threshold).
    #[arg(long)]
    pub(crate) calibrate_split: Option<String>,
    /// Precision each species' threshold is chosen to reach.
    #[arg(long, default_value_t = birdsong_model::DEFAULT_TARGET_PRECISION)]
    pub(crate) target_precision: f64,
    /// Once thresholds are chosen, train the recipe again on the training split and
    /// the held-out recordings together (the calibration split, or the validation
    /// recordings) and write that model, carrying the first model's thresholds and
    /// figures; the first is kept in `<out>/judged/`. With few recordings per species
    /// the held-out ones are much of what there is to learn from.
    #[arg(long)]
    pub(crate) refit: bool,
    #[command(flatten)]
    pub(crate) anchor: AnchorArgs,
}

/// Where an `anchored` head's anchor comes from (shared by `train` and
/// `cross-validate`, so both train the same model).
#[derive(Args)]
pub(crate) struct AnchorArgs {
    /// With `--architecture anchored`: a label whose BirdNET name differs, as
    /// `LABEL=BIRDNET NAME` (common or scientific name); repeat for several. Labels are
    /// otherwise looked up as they are; those BirdNET lacks train from zero.
    #[arg(long = "birdnet-name", value_name = "LABEL=BIRDNET NAME")]
    pub(crate) birdnet_names: Vec<String>,
}

impl AnchorArgs {
    /// BirdNET's species-layer columns for the training labels, for `anchored`.
    pub(crate) fn anchor(&self, data: &DataArgs, train_set: &[Recording]) -> Result<Anchor> {
        let mut aliases = BTreeMap::new();
        for entry in &self.birdnet_names {
            let Some((label, name)) = entry.split_once('=') else {
                bail!("--birdnet-name {entry:?} is not LABEL=BIRDNET NAME");
            };
            aliases.insert(label.trim().to_string(), name.trim().to_string());
        }
        let birdnet = crate::data::birdnet(data)?;
        let labels = class_list(train_set);
        let anchor = Anchor::birdnet(birdnet.species().columns_for(&labels, &aliases))?;
        let missing: Vec<&String> = labels
            .iter()
            .filter(|l| !anchor.columns.contains_key(*l))
            .collect();
        eprintln!(
            "anchored on BirdNET for {} of {} species; from zero: {missing:?}",
            anchor.columns.len(),
            labels.len()
        );
        Ok(anchor)
    }
}

pub(crate) fn run_train(args: TrainArgs) -> Result<()> {
    let config = args.recipe.config(args.patience);
    config.validate().context("invalid training recipe")?;
    if config.architecture == CNN {
        return run_train_cnn(args, config);
    }
    let rows = read_manifest(&args.data.manifest, &args.split)?;
    let training_window = config.training_windows(&WindowConfig::default());
    let backbone = config.features.backbone();
    let recordings = extract(&rows, &args.data, &training_window, backbone)?;
    let (mut train_set, validation_set) =
        split_by_recording(recordings, args.validation_fraction, args.recipe.seed)?;
    if config.synthetic_negatives && backbone != Backbone::Acoustic {
        // Training adds synthetic background itself only as acoustic features.
        train_set.push(synthetic_background(
            backbone,
            &args.data,
            &training_window,
        )?);
    }
    let windows: usize = train_set.iter().map(|r| r.windows.len()).sum();
    eprintln!(
        "training {} on {} recordings ({windows} windows), validating on {}",
        config.architecture,
        train_set.len(),
        validation_set.len()
    );
    let bar = epoch_bar(&config);
    let started = Instant::now();
    let validation = (!validation_set.is_empty()).then_some(validation_set.as_slice());
    let report = on_epoch(&bar);
    let trained =
        train_windows(&args, &train_set, validation, &config, report).context("training failed")?;
    bar.finish_and_clear();
    let validation_ids = validation_set.iter().map(|r| r.id.clone()).collect();
    finish(&args, trained, started, validation_ids, backbone)
}

/// Trains an architecture that reads cut windows (every one but the CNN),
/// looking up BirdNET's columns for an anchored head.
fn train_windows(
    args: &TrainArgs,
    set: &[Recording],
    validation: Option<&[Recording]>,
    config: &TrainConfig,
    report: impl FnMut(&EpochReport),
) -> Result<TrainedModel> {
    Ok(if config.architecture == ANCHORED {
        let anchor = args.anchor.anchor(&args.data, set)?;
        train_anchored(set, validation, config, &anchor, report)?
    } else {
        train(set, validation, config, report)?
    })
}

/// Moves `bar` to an epoch's place among all networks' epochs.
fn on_epoch(bar: &indicatif::ProgressBar) -> impl Fn(&EpochReport) + '_ {
    move |r| {
        bar.set_position(((r.member - 1) * r.epochs + r.epoch) as u64);
        bar.set_message(epoch_message(r));
    }
}

fn epoch_bar(config: &TrainConfig) -> indicatif::ProgressBar {
    progress_bar(
        (config.epochs * config.members) as u64,
        "{elapsed_precise} [{bar:30}] epoch {pos}/{len} {msg}",
    )
}

/// `train --architecture cnn`: the training recordings' spectrograms (each file decoded
/// once), a holdout of whole recordings as mel-patch windows, `train_cnn`.
fn run_train_cnn(args: TrainArgs, config: TrainConfig) -> Result<()> {
    let rows = read_manifest(&args.data.manifest, &args.split)?;
    // The same stratified split by recording as the other architectures', made on the
    // manifest rows so that each file is decoded once, for one side only.
    let stubs: Vec<Recording> = rows
        .iter()
        .map(|r| Recording {
            id: r.path.clone(),
            label: r.species.clone(),
            windows: Vec::new(),
        })
        .collect();
    let (_, held) = split_by_recording(stubs, args.validation_fraction, args.recipe.seed)?;
    let held: Vec<String> = held.into_iter().map(|r| r.id).collect();
    let (validation_rows, train_rows): (Vec<ManifestRow>, Vec<ManifestRow>) =
        rows.into_iter().partition(|r| held.contains(&r.path));
    let train_set = extract_spectrograms(&train_rows, &args.data)?;
    let validation_set = if validation_rows.is_empty() {
        Vec::new()
    } else {
        extract(
            &validation_rows,
            &args.data,
            &WindowConfig::default(),
            Backbone::Mel,
        )?
    };
    eprintln!(
        "training {CNN} on {} recordings, validating on {}",
        train_set.len(),
        validation_set.len()
    );
    let bar = epoch_bar(&config);
    let started = Instant::now();
    let validation = (!validation_set.is_empty()).then_some(validation_set.as_slice());
    let trained = train_cnn(&train_set, validation, &config, |r: &EpochReport| {
        bar.set_position(((r.member - 1) * r.epochs + r.epoch) as u64);
        bar.set_message(epoch_message(r));
        if bar.is_hidden() {
            eprintln!(
                "{:.1} s: epoch {}/{} {}",
                started.elapsed().as_secs_f64(),
                r.epoch,
                r.epochs,
                epoch_message(r)
            );
        }
    })
    .context("training failed")?;
    bar.finish_and_clear();
    drop(train_set);
    finish(&args, trained, started, held, Backbone::Mel)
}

/// What every architecture does after training: report, evaluate on a split,
/// calibrate thresholds, write the artifact.
fn finish(
    args: &TrainArgs,
    mut trained: TrainedModel,
    started: Instant,
    validation_ids: Vec<String>,
    backbone: Backbone,
) -> Result<()> {
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
    if let Some(f) = &trained.artifact.meta().familiarity {
        let references: usize = f
            .species
            .iter()
            .map(|s| s.references.len() / (2 * f.width.max(1)))
            .sum();
        let gated = f.species.iter().filter(|s| s.radius.is_some()).count();
        eprintln!(
            "familiarity: {references} reference calls; {gated} of {} species gated at \
             quantile {}",
            f.species.len(),
            f.quantile
        );
    }
    let calibration = match &args.calibrate_split {
        Some(split) => {
            let rows = read_manifest(&args.data.manifest, split)?;
            Some((
                split.clone(),
                extract(&rows, &args.data, &WindowConfig::default(), backbone)?,
            ))
        }
        None if !validation_ids.is_empty() => {
            // The validation recordings were cut with the training hop; thresholds
            // apply to the standard windows.
            let rows: Vec<ManifestRow> = read_manifest(&args.data.manifest, &args.split)?
                .into_iter()
                .filter(|r| validation_ids.contains(&r.path))
                .collect();
            Some((
                "validation".to_string(),
                extract(&rows, &args.data, &WindowConfig::default(), backbone)?,
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
        trained.classifier = Classifier::from_artifact(&trained.artifact)?;
    } else if args.refit {
        bail!("--refit needs held-out recordings: --calibrate-split or --validation-fraction");
    }
    if args.refit {
        let judged_dir = args.out.join("judged");
        trained
            .artifact
            .save_dir(&judged_dir)
            .with_context(|| format!("writing the judged model to {}", judged_dir.display()))?;
        let judged_meta = std::fs::read(judged_dir.join(META_FILE))
            .with_context(|| format!("reading back {}", judged_dir.display()))?;
        let mut refit = refit_model(args, &trained, backbone)?;
        refit
            .artifact
            .set_judged_meta_sha256(Some(sha256_hex(&judged_meta)));
        trained = refit;
    }
    if let Some(split) = &args.evaluate_split {
        let rows = read_manifest(&args.data.manifest, split)?;
        let recordings = extract(&rows, &args.data, &WindowConfig::default(), backbone)?;
        let evaluation = evaluate(&trained.classifier, &recordings)?;
        eprintln!(
            "{split}: window accuracy {:.3}, window macro F1 {:.3}, recording accuracy {:.3}",
            evaluation.window.accuracy,
            evaluation.window.macro_avg.f1,
            evaluation.recording.accuracy
        );
        trained.artifact.set_metrics(split.clone(), evaluation);
    }
    if let Some(version) = &args.model_version {
        trained.artifact.set_version(version);
    }
    trained
        .artifact
        .save_dir(&args.out)
        .with_context(|| format!("writing the artifact to {}", args.out.display()))?;
    eprintln!("model written to {}", args.out.display());
    Ok(())
}

/// `--refit`: the judged model's recipe trained again on the training split and its
/// held-out recordings together, carrying the judged model's thresholds and figures.
fn refit_model(
    args: &TrainArgs,
    judged: &TrainedModel,
    backbone: Backbone,
) -> Result<TrainedModel> {
    let mut rows = read_manifest(&args.data.manifest, &args.split)?;
    if let Some(split) = &args.calibrate_split {
        rows.extend(read_manifest(&args.data.manifest, split)?);
    }
    let config = refit_config(
        &judged.artifact.meta().training,
        &judged.artifact.meta().history,
    );
    eprintln!(
        "refitting on {} recordings for {} epochs",
        rows.len(),
        config.epochs
    );
    let bar = epoch_bar(&config);
    let started = Instant::now();
    let report = on_epoch(&bar);
    let mut refit = if config.architecture == CNN {
        let set = extract_spectrograms(&rows, &args.data)?;
        train_cnn(&set, None, &config, report).context("refitting failed")?
    } else {
        let training_window = config.training_windows(&WindowConfig::default());
        let mut set = extract(&rows, &args.data, &training_window, backbone)?;
        if config.synthetic_negatives && backbone != Backbone::Acoustic {
            set.push(synthetic_background(
                backbone,
                &args.data,
                &training_window,
            )?);
        }
        train_windows(args, &set, None, &config, report).context("refitting failed")?
    };
    bar.finish_and_clear();
    carry_over(&judged.artifact, &mut refit.artifact).context("refitting")?;
    refit.classifier = Classifier::from_artifact(&refit.artifact)?;
    eprintln!("refit in {:.1} s", started.elapsed().as_secs_f64());
    Ok(refit)
}
