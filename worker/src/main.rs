//! The worker process: configuration, logging and signal handling around
//! [`birdsong_worker::run`]. SIGTERM or SIGINT stops consumption, lets the
//! tasks in flight commit and acknowledge, and exits 0.

use anyhow::Context;
use birdsong_common::{Config, telemetry};
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::watch;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = Config::from_env().context("invalid configuration")?;
    telemetry::init(&config.log_filter, config.log_format);
    let (stop, stopped) = watch::channel(false);
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    tokio::spawn(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        tracing::info!("stop requested");
        let _ = stop.send(true);
    });
    birdsong_worker::run(config, stopped).await
}
