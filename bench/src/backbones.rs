//! Per-core speed of each backbone: what one worker thread does per recording
//! (read the bytes, decode, cut the backbone's windows, compute their vectors,
//! one forward pass of a model on them), with no services, on one thread.
//!
//! Both backbones run on the same files in the same process, so their ratio
//! holds whatever else the machine is doing; the rate is audio seconds per
//! CPU second of this process (the sampler's ticks), i.e. per core.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context;
use birdsong_analysis::{Analyzer, Backbone};
use birdsong_model::Classifier;

use crate::sampler::{TICKS_PER_S, process_ticks};

/// One backbone's run.
pub struct Rate {
    pub files: usize,
    pub windows: usize,
    pub audio_s: f64,
    pub wall_s: f64,
    pub cpu_s: Option<f64>,
}

impl Rate {
    /// Audio seconds per CPU second (per wall second when CPU time is unknown).
    pub fn per_core(&self) -> f64 {
        self.audio_s / self.cpu_s.unwrap_or(self.wall_s).max(1e-9)
    }
}

/// Runs every file through `backbone` and `classifier` on this thread.
pub fn run(
    files: &[PathBuf],
    analyzer: &Analyzer,
    backbone: Backbone,
    classifier: &Classifier,
) -> anyhow::Result<Rate> {
    // Loading BirdNET (seconds) is start-up, not per-recording work.
    analyzer
        .ensure(backbone)
        .with_context(|| format!("the {backbone} backbone"))?;
    let started = Instant::now();
    let ticks = process_ticks(std::process::id());
    let mut rate = Rate {
        files: 0,
        windows: 0,
        audio_s: 0.0,
        wall_s: 0.0,
        cpu_s: None,
    };
    for path in files {
        let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        let analysed = analyzer
            .analyse_reader(backbone, std::io::Cursor::new(bytes))
            .with_context(|| format!("analysing {}", path.display()))?;
        classifier
            .classify_recordings(&[analysed.vectors.as_slice()], 3)
            .context("classifying")?;
        rate.files += 1;
        rate.windows += analysed.spans.len();
        rate.audio_s += analysed.info.duration_s;
    }
    rate.wall_s = started.elapsed().as_secs_f64();
    if let (Some(t0), Some(t1)) = (ticks, process_ticks(std::process::id())) {
        rate.cpu_s = Some(t1.saturating_sub(t0) as f64 / TICKS_PER_S);
    }
    Ok(rate)
}
