//! `birdsong-features`: prints the features of audio files as JSON lines.
//!
//! One object per file: `{"path","sample_rate","channels","duration_s",
//! "windows":[{"start_s","end_s","features":[223 numbers]}]}`, or with
//! `--clip` the reference clip vector `{"path",...,"features":[223]}`. A file
//! that cannot be analysed prints `{"path","error"}`; the tool goes on with
//! the next file and exits with status 1 at the end if any failed.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use birdsong_audio::{WindowConfig, analyze_file, clip_features, probe};
use clap::Parser;
use serde_json::json;

/// Compute birdsong's acoustic features (librosa's 95 and the band profile) for audio files.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// Audio files (any supported format, detected from content).
    #[arg(required = true)]
    paths: Vec<PathBuf>,
    /// Print the reference clip vector (first 10 s, trimmed) instead of windows.
    #[arg(long)]
    clip: bool,
    /// Window length in seconds.
    #[arg(long, default_value_t = 5.0)]
    window: f64,
    /// Hop between window starts in seconds (default: the window length).
    #[arg(long)]
    hop: Option<f64>,
    /// A final window shorter than this (seconds) is dropped.
    #[arg(long, default_value_t = 1.0)]
    min_last: f64,
}

fn one(
    path: &std::path::Path,
    args: &Args,
    cfg: &WindowConfig,
) -> anyhow::Result<serde_json::Value> {
    if args.clip {
        let info = probe(path)?;
        let features = clip_features(path)?;
        Ok(json!({
            "path": path.display().to_string(),
            "sample_rate": info.sample_rate,
            "channels": info.channels,
            "duration_s": info.duration_s,
            "features": features.to_vec(),
        }))
    } else {
        let a = analyze_file(path, cfg)?;
        Ok(json!({
            "path": path.display().to_string(),
            "sample_rate": a.info.sample_rate,
            "channels": a.info.channels,
            "duration_s": a.info.duration_s,
            "windows": a.windows,
        }))
    }
}

fn main() -> anyhow::Result<ExitCode> {
    let args = Args::parse();
    let cfg = WindowConfig {
        length_s: args.window,
        hop_s: args.hop.unwrap_or(args.window),
        min_last_s: args.min_last,
    };
    cfg.plan().context("invalid --window/--hop/--min-last")?;
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let mut failed = 0usize;
    for path in &args.paths {
        let line = match one(path, &args, &cfg) {
            Ok(v) => v,
            Err(e) => {
                failed += 1;
                json!({"path": path.display().to_string(), "error": format!("{e:#}")})
            }
        };
        serde_json::to_writer(&mut out, &line)?;
        writeln!(out)?;
    }
    out.flush()?;
    if failed > 0 {
        eprintln!("{failed} of {} file(s) failed", args.paths.len());
        Ok(ExitCode::FAILURE)
    } else {
        Ok(ExitCode::SUCCESS)
    }
}
