//! Prometheus metrics, served as text on `BIRDSONG_METRICS_LISTEN`.
//!
//! A handful of counters and one histogram do not justify a metrics
//! framework; they are atomics rendered in the Prometheus text format.

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds of the processing-time histogram, in seconds.
const BUCKETS: [f64; 10] = [0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 120.0];

/// The worker's counters.
#[derive(Default)]
pub struct Metrics {
    files_done: AtomicU64,
    files_failed: AtomicU64,
    /// Audio seconds processed, in milliseconds (atomics hold integers).
    audio_ms: AtomicU64,
    failures: Mutex<Vec<(String, u64)>>,
    retries: AtomicU64,
    bucket_counts: [AtomicU64; BUCKETS.len()],
    duration_count: AtomicU64,
    duration_us: AtomicU64,
    model_version: Mutex<Option<String>>,
    models_refused: AtomicU64,
}

impl Metrics {
    pub fn file_done(&self, took: Duration, audio_seconds: f64) {
        self.files_done.fetch_add(1, Ordering::Relaxed);
        self.audio_ms
            .fetch_add((audio_seconds * 1000.0).max(0.0) as u64, Ordering::Relaxed);
        self.observe(took);
    }

    pub fn file_failed(&self, kind: &str) {
        self.files_failed.fetch_add(1, Ordering::Relaxed);
        self.failure(kind);
    }

    /// A failure of any kind, including transient ones that will be retried.
    pub fn failure(&self, kind: &str) {
        if let Ok(mut f) = self.failures.lock() {
            match f.iter_mut().find(|(k, _)| k == kind) {
                Some((_, n)) => *n += 1,
                None => f.push((kind.to_string(), 1)),
            }
        }
    }

    pub fn retry(&self) {
        self.retries.fetch_add(1, Ordering::Relaxed);
    }

    /// How many promoted versions were refused since start (their stored
    /// bytes did not match the registry's checksums, or were not a model).
    pub fn set_models_refused(&self, n: u64) {
        self.models_refused.store(n, Ordering::Relaxed);
    }

    pub fn set_model(&self, version: Option<&str>) {
        if let Ok(mut m) = self.model_version.lock() {
            *m = version.map(str::to_string);
        }
    }

    fn observe(&self, took: Duration) {
        let secs = took.as_secs_f64();
        for (i, bound) in BUCKETS.iter().enumerate() {
            if secs <= *bound {
                self.bucket_counts[i].fetch_add(1, Ordering::Relaxed);
            }
        }
        self.duration_count.fetch_add(1, Ordering::Relaxed);
        self.duration_us
            .fetch_add(took.as_micros() as u64, Ordering::Relaxed);
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        use std::fmt::Write;
        let mut out = String::new();
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let _ = writeln!(
            out,
            "# HELP birdsong_files_processed_total Recordings finished, by outcome."
        );
        let _ = writeln!(out, "# TYPE birdsong_files_processed_total counter");
        let _ = writeln!(
            out,
            "birdsong_files_processed_total{{outcome=\"done\"}} {}",
            load(&self.files_done)
        );
        let _ = writeln!(
            out,
            "birdsong_files_processed_total{{outcome=\"failed\"}} {}",
            load(&self.files_failed)
        );
        let _ = writeln!(
            out,
            "# HELP birdsong_audio_seconds_total Seconds of audio analysed."
        );
        let _ = writeln!(out, "# TYPE birdsong_audio_seconds_total counter");
        let _ = writeln!(
            out,
            "birdsong_audio_seconds_total {:.3}",
            load(&self.audio_ms) as f64 / 1000.0
        );
        let _ = writeln!(
            out,
            "# HELP birdsong_failures_total Task failures by kind, including retried ones."
        );
        let _ = writeln!(out, "# TYPE birdsong_failures_total counter");
        if let Ok(f) = self.failures.lock() {
            for (kind, n) in f.iter() {
                let _ = writeln!(out, "birdsong_failures_total{{kind=\"{kind}\"}} {n}");
            }
        }
        let _ = writeln!(
            out,
            "# HELP birdsong_task_retries_total Transient failures retried."
        );
        let _ = writeln!(out, "# TYPE birdsong_task_retries_total counter");
        let _ = writeln!(out, "birdsong_task_retries_total {}", load(&self.retries));
        let _ = writeln!(
            out,
            "# HELP birdsong_task_seconds Time to process one recording."
        );
        let _ = writeln!(out, "# TYPE birdsong_task_seconds histogram");
        for (i, bound) in BUCKETS.iter().enumerate() {
            let _ = writeln!(
                out,
                "birdsong_task_seconds_bucket{{le=\"{bound}\"}} {}",
                load(&self.bucket_counts[i])
            );
        }
        let count = load(&self.duration_count);
        let _ = writeln!(out, "birdsong_task_seconds_bucket{{le=\"+Inf\"}} {count}");
        let _ = writeln!(
            out,
            "birdsong_task_seconds_sum {:.6}",
            load(&self.duration_us) as f64 / 1e6
        );
        let _ = writeln!(out, "birdsong_task_seconds_count {count}");
        let _ = writeln!(
            out,
            "# HELP birdsong_model_info The model version in service (1 when one is loaded)."
        );
        let _ = writeln!(out, "# TYPE birdsong_model_info gauge");
        match self.model_version.lock().ok().and_then(|m| m.clone()) {
            Some(v) => {
                let _ = writeln!(out, "birdsong_model_info{{version=\"{v}\"}} 1");
            }
            None => {
                let _ = writeln!(out, "birdsong_model_info{{version=\"\"}} 0");
            }
        }
        let _ = writeln!(
            out,
            "# HELP birdsong_models_refused_total Promoted model versions refused (checksum mismatch or invalid artifact)."
        );
        let _ = writeln!(out, "# TYPE birdsong_models_refused_total counter");
        let _ = writeln!(
            out,
            "birdsong_models_refused_total {}",
            load(&self.models_refused)
        );
        out
    }
}

/// Serves `/metrics` until the process ends.
/// `/metrics`, to serve beside `/healthz` and `/readyz`.
pub fn router(metrics: Arc<Metrics>) -> axum::Router {
    use axum::routing::get;
    axum::Router::new().route(
        "/metrics",
        get(move || {
            let m = metrics.clone();
            async move { ([("content-type", "text/plain; version=0.0.4")], m.render()) }
        }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_and_histogram() {
        let m = Metrics::default();
        m.file_done(Duration::from_millis(300), 10.0);
        m.file_failed("bad_audio");
        m.set_model(Some("v3"));
        let text = m.render();
        assert!(text.contains("birdsong_files_processed_total{outcome=\"done\"} 1"));
        assert!(text.contains("birdsong_failures_total{kind=\"bad_audio\"} 1"));
        assert!(text.contains("birdsong_audio_seconds_total 10.000"));
        assert!(text.contains("birdsong_task_seconds_bucket{le=\"0.25\"} 0"));
        assert!(text.contains("birdsong_task_seconds_bucket{le=\"0.5\"} 1"));
        assert!(text.contains("birdsong_model_info{version=\"v3\"} 1"));
    }
}
