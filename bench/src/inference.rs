//! Is batching windows of several files into one forward pass faster?
//!
//! The worker classifies each recording's windows in one forward pass. A
//! 10-second clip has two windows; batching many clips together would
//! amortise the per-call overhead of the network. This measures the cost per
//! window at each batch size so the answer is a number, not a guess.

use std::time::Instant;

use anyhow::Context;
use birdsong_model::Classifier;
use birdsong_model::FeatureVector;

/// Microseconds per window at each batch size.
pub fn per_window_micros(
    classifier: &Classifier,
    window: FeatureVector,
    sizes: &[usize],
) -> anyhow::Result<Vec<(usize, f64)>> {
    let mut out = Vec::new();
    for &size in sizes {
        let batch = vec![window.clone(); size];
        classifier.predict(&batch).context("warm-up")?;
        let started = Instant::now();
        let mut windows = 0usize;
        while started.elapsed().as_secs_f64() < 0.4 || windows < 4 * size {
            classifier.predict(&batch).context("forward pass")?;
            windows += size;
        }
        out.push((size, started.elapsed().as_secs_f64() * 1e6 / windows as f64));
    }
    Ok(out)
}
