//! Logging set-up shared by every binary.
//!
//! Human-readable lines by default (what a person running `stack.sh` wants to
//! read); one JSON object per line with `BIRDSONG_LOG_FORMAT=json` (what a
//! log shipper wants). The filter uses tracing's `EnvFilter` syntax from
//! `BIRDSONG_LOG`.

use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

/// Installs the global subscriber. Calling it twice is harmless (the second
/// call is ignored), which keeps tests that start several roles simple.
pub fn init(filter: &str, format: LogFormat) {
    let filter = EnvFilter::try_new(filter).unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}
