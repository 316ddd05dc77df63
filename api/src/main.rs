//! The API process: configuration, logging, connections and signal
//! handling around [`birdsong_api::serve`]. SIGTERM or SIGINT stops
//! accepting connections, lets requests in progress finish, and exits 0.

use anyhow::Context;
use birdsong_api::AppState;
use birdsong_common::queue::{self, Publisher};
use birdsong_common::store::ObjectStore;
use birdsong_common::{Config, db, shutdown, telemetry};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    birdsong_common::cli::service_args(
        "birdsong-api",
        env!("CARGO_PKG_VERSION"),
        "Serves birdsong's HTTP API and dashboard: job submission, results, exports, \
         labels and models (the contract at /v1/openapi.json).",
    );
    let config = Config::from_env().context("invalid configuration")?;
    telemetry::init(&config.log_filter, config.log_format);
    if config.api.keys.is_empty() {
        tracing::warn!("BIRDSONG_API_KEYS is empty: every write will be refused");
    }
    let pool = db::prepare(&config.database)
        .await
        .context("preparing the database")?;
    let store = ObjectStore::new(&config.s3);
    store
        .ensure_bucket()
        .await
        .context("preparing the object store bucket")?;
    // Reconnects by itself after a broker restart.
    let publisher = Publisher::connect(&config.queues.amqp_url, "birdsong-api")
        .await
        .context("connecting to the broker")?;
    queue::declare_topology(&publisher.channel(), &config.queues)
        .await
        .context("declaring the queues")?;
    let listen = config.api.listen;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("listening on {listen}"))?;
    let mut stopped = shutdown::on_signal("stop requested; finishing requests in progress")
        .context("installing signal handlers")?;
    let shutdown = async move {
        let _ = stopped.wait_for(|stop| *stop).await;
    };
    tracing::info!(%listen, "api listening");
    let state = AppState::new(config, pool, store, publisher);
    birdsong_api::serve(listener, state, shutdown)
        .await
        .context("serving HTTP")?;
    tracing::info!("api stopped");
    Ok(())
}
