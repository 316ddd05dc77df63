//! Logging set-up shared by every binary.
//!
//! Human-readable lines by default (what a person running `stack.sh` wants to
//! read); one JSON object per line with `BIRDSONG_LOG_FORMAT=json` (what a
//! log shipper wants). The filter uses tracing's `EnvFilter` syntax from
//! `BIRDSONG_LOG`.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

/// Installs the global subscriber. Calling it twice is harmless (the second
/// call is ignored), which keeps tests that start several roles simple.
pub fn init(filter: &str, format: LogFormat) {
    let filter =
        EnvFilter::try_new(with_quiet_libraries(filter)).unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}

/// The decoder library logs every skipped ID3 tag and bitrate estimate at
/// info/warn; in an archive of thousands of MP3s that buries everything
/// else. Unless the filter mentions it, keep it to errors (decoding errors
/// reach the user through the task row anyway). Likewise PostgreSQL's notices
/// (sqlx logs "relation \"_sqlx_migrations\" already exists, skipping" at info on
/// every start): kept to warnings unless the filter mentions sqlx.
fn with_quiet_libraries(filter: &str) -> String {
    let mut out = filter.to_string();
    if !filter.contains("symphonia") {
        let quiet = [
            "symphonia_core",
            "symphonia_bundle_mp3",
            "symphonia_bundle_flac",
            "symphonia_format_riff",
            "symphonia_format_ogg",
            "symphonia_format_isomp4",
            "symphonia_codec_aac",
            "symphonia_codec_vorbis",
        ];
        for target in quiet {
            out.push_str(&format!(",{target}=error"));
        }
    }
    if !filter.contains("sqlx") {
        out.push_str(",sqlx::postgres::notice=warn");
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn library_noise_is_quietened_unless_asked_for() {
        let f = super::with_quiet_libraries("info");
        assert!(f.starts_with("info,") && f.contains("symphonia_core=error"));
        assert!(f.ends_with(",sqlx::postgres::notice=warn"));
        assert_eq!(
            super::with_quiet_libraries("symphonia_core=debug,sqlx=debug"),
            "symphonia_core=debug,sqlx=debug"
        );
        assert!(tracing_subscriber::EnvFilter::try_new(f).is_ok());
    }
}
