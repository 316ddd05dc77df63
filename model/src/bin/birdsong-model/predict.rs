//! `predict`: JSON lines for every window and file of some recordings, with the
//! species detected at the model's thresholds (an empty list is "no detection").

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use birdsong_audio::{WindowConfig, WindowStream, analyze_file};
use birdsong_model::{Backbone, FeatureVector};
use clap::Args;
use serde::Serialize;

use crate::data::{birdnet_in, load_classifier, parallel_map};

#[derive(Args)]
pub(crate) struct PredictArgs {
    /// Artifact directory (a model on any backbone: acoustic features, mel patches or
    /// BirdNET's embedding).
    #[arg(long)]
    model: PathBuf,
    /// Species listed per window and per file.
    #[arg(long, default_value_t = 3)]
    top_k: usize,
    /// Decoding threads (default: available cores; BirdNET models use one).
    #[arg(long)]
    threads: Option<usize>,
    /// BirdNET install, for models on its embedding (default: $BIRDSONG_BIRDNET_DIR,
    /// else ~/.local/share/birdsong/birdnet).
    #[arg(long)]
    birdnet_dir: Option<PathBuf>,
    /// Also write each window's embedding (a `cnn` model's pooled features, what its
    /// output layer reads), for clustering or judging how familiar windows look.
    #[arg(long)]
    embeddings: bool,
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
        /// The highest scores, detected or not.
        top: Vec<birdsong_model::Prediction>,
        /// Species at or above their thresholds; empty for "no detection".
        detections: Vec<birdsong_model::Detected>,
        /// The window's embedding, with `--embeddings`.
        #[serde(skip_serializing_if = "Option::is_none")]
        embedding: Option<Vec<f32>>,
    },
    File {
        file: &'a str,
        duration_s: f64,
        windows: usize,
        /// The highest mean scores over the windows.
        top: Vec<birdsong_model::Prediction>,
        /// Species detected in at least one window; empty for "no detection".
        detected: Vec<birdsong_model::Presence>,
        model_version: Option<&'a str>,
    },
    Error {
        file: &'a str,
        error: String,
    },
}

/// One file's windows as the model's backbone cuts them.
struct Analysed {
    duration_s: f64,
    spans: Vec<(f64, f64)>,
    vectors: Vec<FeatureVector>,
}

/// Decodes `path` and computes its windows' vectors for `backbone`, with the windows
/// a worker would use (5 s without overlap; BirdNET's 3 s).
fn analyse(path: &Path, backbone: Backbone, birdnet_dir: Option<&Path>) -> Result<Analysed> {
    let standard = WindowConfig::default();
    Ok(match backbone {
        Backbone::Acoustic => {
            let analysis = analyze_file(path, &standard)?;
            let (spans, vectors) = analysis
                .windows
                .into_iter()
                .map(|w| ((w.start_s, w.end_s), w.features.to_vec()))
                .unzip();
            Analysed {
                duration_s: analysis.info.duration_s,
                spans,
                vectors,
            }
        }
        Backbone::Mel => {
            let windows =
                birdsong_model::spectrogram::stream_windows(WindowStream::open(path, &standard)?)?;
            Analysed {
                duration_s: windows.info.duration_s,
                spans: windows.spans,
                vectors: windows.vectors,
            }
        }
        Backbone::Birdnet => {
            let windows = birdsong_birdnet::window_config(0.0)?;
            let embedded = birdnet_in(birdnet_dir)?.embed_file(path, &windows)?;
            let (spans, vectors) = embedded.spans_and_vectors();
            Analysed {
                duration_s: embedded.info.duration_s,
                spans,
                vectors,
            }
        }
    })
}

pub(crate) fn run_predict(args: PredictArgs) -> Result<()> {
    let classifier = load_classifier(&args.model)?;
    let backbone = classifier.info().features.backbone();
    if backbone == Backbone::Birdnet {
        // Load it once, before the files: a missing install is one error, not one per file.
        birdnet_in(args.birdnet_dir.as_deref()).context("this model reads BirdNET's embedding")?;
    }
    let threads = match backbone {
        Backbone::Birdnet => Some(1),
        _ => args.threads,
    };
    let analyses: Vec<(String, Result<Analysed, String>)> =
        parallel_map(&args.files, threads, |path| {
            (
                path.display().to_string(),
                analyse(path, backbone, args.birdnet_dir.as_deref()).map_err(|e| format!("{e:#}")),
            )
        });
    // All windows of all files in one call (the classifier batches its forward passes).
    let batch: Vec<&[FeatureVector]> = analyses
        .iter()
        .filter_map(|(_, a)| a.as_ref().ok())
        .map(|a| a.vectors.as_slice())
        .collect();
    let mut predictions = classifier
        .classify_recordings(&batch, args.top_k)?
        .into_iter();
    let mut embeddings = if args.embeddings {
        let windows: Vec<FeatureVector> = batch.iter().flat_map(|r| r.iter().cloned()).collect();
        Some(classifier.embed(&windows)?.into_iter())
    } else {
        None
    };
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
        for (&(start_s, end_s), p) in analysis.spans.iter().zip(prediction.windows) {
            print_line(
                &mut out,
                &PredictLine::Window {
                    file,
                    start_s,
                    end_s,
                    top: p.top,
                    detections: p.detections,
                    embedding: embeddings.as_mut().and_then(Iterator::next),
                },
            )?;
        }
        let (top, detected) = prediction
            .summary
            .map(|s| (s.top, s.detected))
            .unwrap_or_default();
        print_line(
            &mut out,
            &PredictLine::File {
                file,
                duration_s: analysis.duration_s,
                windows: analysis.spans.len(),
                top,
                detected,
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
