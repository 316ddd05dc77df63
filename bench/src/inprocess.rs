//! The baseline: what the worker's computation does with no services.
//!
//! The same steps a worker runs per task (read the bytes, decode, window
//! features, one forward pass over the recording's windows), on the same
//! number of CPU threads the distributed run gives its workers in total,
//! with files read from the page cache. The distributed path cannot beat
//! this; the question is how much of it the queue, the object store and the
//! database leave.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use anyhow::Context;
use birdsong_analysis::{Analyzer, Backbone};
use birdsong_model::Classifier;

use crate::report::Measurement;
use crate::sampler::{TICKS_PER_S, process_ticks};

/// Runs every file through decode + `backbone`'s vectors + inference on `threads`.
pub fn run(
    files: &[PathBuf],
    analyzer: &Arc<Analyzer>,
    backbone: Backbone,
    classifier: &Arc<Classifier>,
    threads: usize,
) -> anyhow::Result<Measurement> {
    // Loading BirdNET is start-up, as in a worker, not per-recording work.
    analyzer
        .ensure(backbone)
        .with_context(|| format!("the {backbone} backbone"))?;
    let next = Arc::new(AtomicUsize::new(0));
    let files = Arc::new(files.to_vec());
    let started = Instant::now();
    let ticks_before = process_ticks(std::process::id());
    let handles: Vec<_> = (0..threads.max(1))
        .map(|_| {
            let (next, files, classifier) = (next.clone(), files.clone(), classifier.clone());
            let analyzer = analyzer.clone();
            std::thread::spawn(move || -> anyhow::Result<(usize, f64, usize)> {
                let (mut done, mut seconds, mut failed) = (0, 0.0, 0);
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(path) = files.get(i) else { break };
                    let bytes = std::fs::read(path)
                        .with_context(|| format!("reading {}", path.display()))?;
                    match analyzer.analyse_reader(backbone, std::io::Cursor::new(bytes)) {
                        Ok(analysed) => {
                            classifier
                                .classify_recordings(&[analysed.vectors.as_slice()], 3)
                                .context("classifying")?;
                            seconds += analysed.info.duration_s;
                            done += 1;
                        }
                        Err(_) => failed += 1,
                    }
                }
                Ok((done, seconds, failed))
            })
        })
        .collect();
    let mut m = Measurement::default();
    for h in handles {
        let (done, seconds, failed) = h
            .join()
            .map_err(|_| anyhow::anyhow!("a benchmark thread panicked"))??;
        m.files += done;
        m.audio_s += seconds;
        m.failed += failed;
    }
    m.wall_s = started.elapsed().as_secs_f64();
    if let (Some(t0), Some(t1)) = (ticks_before, process_ticks(std::process::id())) {
        m.cpu_by_role.insert(
            "in-process".into(),
            t1.saturating_sub(t0) as f64 / TICKS_PER_S,
        );
    }
    Ok(m)
}
