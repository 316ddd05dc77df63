//! `calibrate`: a model's detection thresholds chosen on one split.

use std::path::PathBuf;

use anyhow::{Context, Result};
use birdsong_audio::WindowConfig;
use birdsong_model::evaluate::EVALUATION_QUIET_MARGIN_DB;
use birdsong_model::{Artifact, Classifier, calibrate};
use clap::Args;

use crate::data::{DataArgs, extract, read_manifest};

#[derive(Args)]
pub(crate) struct CalibrateArgs {
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

pub(crate) fn run_calibrate(args: CalibrateArgs) -> Result<()> {
    let mut artifact = Artifact::load_dir_any_backbone(&args.model)
        .with_context(|| format!("loading the model in {}", args.model.display()))?;
    let classifier = Classifier::from_artifact(&artifact)?;
    let rows = read_manifest(&args.data.manifest, &args.split)?;
    let backbone = classifier.info().features.backbone();
    let recordings = extract(&rows, &args.data, &WindowConfig::default(), backbone)?;
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
