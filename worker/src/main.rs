//! The worker process: configuration, logging and signal handling around
//! [`birdsong_worker::run`]. SIGTERM or SIGINT stops consumption, lets the
//! tasks in flight commit and acknowledge, and exits 0.

use anyhow::Context;
use birdsong_common::{Config, shutdown, telemetry};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    birdsong_common::cli::service_args(
        "birdsong-worker",
        env!("CARGO_PKG_VERSION"),
        "Classifies recordings: takes tasks from the classify queue, analyses the audio \
         with the model in service and writes windows, scores and detections to PostgreSQL.",
    );
    let config = Config::from_env().context("invalid configuration")?;
    telemetry::init(&config.log_filter, config.log_format);
    let stopped = shutdown::on_signal("stop requested").context("installing signal handlers")?;
    birdsong_worker::run(config, stopped).await
}
