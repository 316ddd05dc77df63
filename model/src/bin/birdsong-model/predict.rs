//! `predict`: JSON lines for every window and file of some recordings.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{Result, bail};
use birdsong_audio::{Analysis, WindowConfig, analyze_file};
use clap::Args;
use serde::Serialize;

use crate::data::{load_classifier, parallel_map};

#[derive(Args)]
pub(crate) struct PredictArgs {
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

/// One line of `predict` output.
#[derive(Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub(crate) enum PredictLine<'a> {
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

pub(crate) fn run_predict(args: PredictArgs) -> Result<()> {
    let classifier = load_classifier(&args.model)?;
    let backbone = classifier.info().features.backbone();
    if backbone != birdsong_model::Backbone::Acoustic {
        bail!(
            "predict runs acoustic models; this one reads {backbone} vectors              (classify with the worker or the api, or score it with evaluate)"
        );
    }
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
        .map(|a| a.windows.iter().map(|w| w.features.to_vec()).collect())
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

pub(crate) fn print_line(out: &mut impl Write, line: &PredictLine<'_>) -> Result<()> {
    serde_json::to_writer(&mut *out, line)?;
    writeln!(out)?;
    Ok(())
}
