//! `evaluate`: a model's figures on one split, and against species it does
//! not know.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{Context, Result};
use birdsong_audio::WindowConfig;
use birdsong_model::{evaluate, open_set};
use clap::Args;

use crate::data::{
    DataArgs, backbone_windows, create_file, extract, extract_folder, load_classifier,
    read_manifest, write_predictions,
};

#[derive(Args)]
pub(crate) struct EvaluateArgs {
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

pub(crate) fn run_evaluate(args: EvaluateArgs) -> Result<()> {
    let classifier = load_classifier(&args.model)?;
    let rows = read_manifest(&args.data.manifest, &args.split)?;
    // Created first, so that a bad path fails before the features are extracted.
    let predictions = args.predictions.as_deref().map(create_file).transpose()?;
    let config = WindowConfig {
        hop_s: args.hop_s,
        ..WindowConfig::default()
    };
    let backbone = classifier.info().features.backbone();
    let recordings = extract(&rows, &args.data, &config, backbone)?;
    let evaluation = evaluate(&classifier, &recordings).context("evaluation failed")?;
    if let Some(mut out) = predictions {
        write_predictions(&mut out, None, &classifier, &recordings)?;
        out.flush().context("writing predictions")?;
    }
    let open_set = match &args.unknown {
        Some(dir) => {
            let unknown = extract_folder(dir, &args.data, &config, backbone)?;
            let hop_s = backbone_windows(backbone, &config)?.hop_s;
            Some(open_set(&classifier, &recordings, &unknown, hop_s)?)
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
