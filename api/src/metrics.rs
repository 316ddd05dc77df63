//! Prometheus counters for the HTTP surface.
//!
//! Requests are counted by route template (`/v1/jobs/{id}`, never the
//! concrete id, which would make one series per job) and status, with one
//! latency histogram per route; that is enough to see which endpoint is
//! slow or failing without a tracing backend.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::time::Duration;

/// Upper bounds of the latency buckets, in seconds.
const BUCKETS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
];

#[derive(Default)]
struct Histogram {
    counts: [u64; BUCKETS.len()],
    count: u64,
    sum: f64,
}

#[derive(Default)]
struct State {
    requests: BTreeMap<(String, String, u16), u64>,
    latency: BTreeMap<String, Histogram>,
}

/// The API's request metrics.
#[derive(Default)]
pub struct Metrics {
    state: Mutex<State>,
}

impl Metrics {
    /// Records one answered request.
    pub fn observe(&self, method: &str, route: &str, status: u16, took: Duration) {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        *s.requests
            .entry((method.to_string(), route.to_string(), status))
            .or_default() += 1;
        let h = s.latency.entry(route.to_string()).or_default();
        let secs = took.as_secs_f64();
        for (i, bound) in BUCKETS.iter().enumerate() {
            if secs <= *bound {
                h.counts[i] += 1;
            }
        }
        h.count += 1;
        h.sum += secs;
    }

    /// The text exposition format.
    pub fn render(&self) -> String {
        let s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let mut out = String::new();
        let _ = writeln!(
            out,
            "# HELP birdsong_api_requests_total HTTP requests answered."
        );
        let _ = writeln!(out, "# TYPE birdsong_api_requests_total counter");
        for ((method, route, status), n) in &s.requests {
            let _ = writeln!(
                out,
                "birdsong_api_requests_total{{method=\"{method}\",route=\"{route}\",status=\"{status}\"}} {n}"
            );
        }
        let _ = writeln!(
            out,
            "# HELP birdsong_api_request_seconds Time to answer a request."
        );
        let _ = writeln!(out, "# TYPE birdsong_api_request_seconds histogram");
        for (route, h) in &s.latency {
            for (bound, n) in BUCKETS.iter().zip(h.counts.iter()) {
                let _ = writeln!(
                    out,
                    "birdsong_api_request_seconds_bucket{{route=\"{route}\",le=\"{bound}\"}} {n}"
                );
            }
            let _ = writeln!(
                out,
                "birdsong_api_request_seconds_bucket{{route=\"{route}\",le=\"+Inf\"}} {}",
                h.count
            );
            let _ = writeln!(
                out,
                "birdsong_api_request_seconds_sum{{route=\"{route}\"}} {:.6}",
                h.sum
            );
            let _ = writeln!(
                out,
                "birdsong_api_request_seconds_count{{route=\"{route}\"}} {}",
                h.count
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_by_route_and_status() {
        let m = Metrics::default();
        m.observe("GET", "/v1/jobs/{id}", 200, Duration::from_millis(3));
        m.observe("GET", "/v1/jobs/{id}", 404, Duration::from_millis(30));
        let text = m.render();
        assert!(text.contains(
            "birdsong_api_requests_total{method=\"GET\",route=\"/v1/jobs/{id}\",status=\"404\"} 1"
        ));
        assert!(text.contains(
            "birdsong_api_request_seconds_bucket{route=\"/v1/jobs/{id}\",le=\"0.005\"} 1"
        ));
        assert!(text.contains(
            "birdsong_api_request_seconds_bucket{route=\"/v1/jobs/{id}\",le=\"0.05\"} 2"
        ));
        assert!(text.contains("birdsong_api_request_seconds_count{route=\"/v1/jobs/{id}\"} 2"));
    }
}
