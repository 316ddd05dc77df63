//! `birdsong-worker`: turns queued recordings into detections.
//!
//! Where it sits: after ingestion (the `ingest` library queued the task and
//! stored the audio) and before the queries (its rows are what the views,
//! the api and the retrainer read). It serves the model the registry
//! promoted.
//!
//! A worker consumes the `classify` queue and, for each task, decodes the
//! recording, computes its window features, classifies every window with the
//! promoted model and commits the results in one transaction before
//! acknowledging the message. Run as many workers as you like, on as many
//! machines: the queue spreads the tasks, and the database's unique keys make
//! every result exactly-once even though delivery is at-least-once.
//!
//! * [`consumer`]: the queue loop, message dispositions, reconnection, shutdown.
//! * [`pipeline`]: one task from message to committed rows.
//! * the model in service and its hot reload: `birdsong_registry::Models`
//!   (checksum-verified, shared with the api).
//! * [`metrics`]: Prometheus counters.
//! * [`error`]: permanent versus transient failures.

// The consumer's future nests the pipeline's, the registry's and lapin's;
// computing its layout from a cold cache exceeds rustc's default query depth.
#![recursion_limit = "256"]

pub mod consumer;
pub mod error;
pub mod metrics;
pub mod pipeline;

use std::sync::Arc;

use anyhow::Context;
use birdsong_common::health::Health;
use birdsong_common::retry::until_ready;
use birdsong_common::store::ObjectStore;
use birdsong_common::{Config, db};
use tokio::sync::{Semaphore, watch};

use crate::metrics::Metrics;
use crate::pipeline::Pipeline;
use birdsong_analysis::{Analyzer, Settings};
use birdsong_registry::Models;

/// Runs a worker until `shutdown` becomes true, then finishes in-flight tasks
/// and returns. Waits (with back-off) for the database and object store if
/// they are not reachable yet, so workers can start before the services.
pub async fn run(config: Config, mut shutdown: watch::Receiver<bool>) -> anyhow::Result<()> {
    let name = format!(
        "worker-{}-{}",
        std::env::var("HOSTNAME").unwrap_or_else(|_| "local".into()),
        std::process::id()
    );
    // Health and metrics answer from the start: an orchestrator must see a
    // live process that is waiting for its database, not a dead one.
    let health = Health::default();
    let metrics = Arc::new(Metrics::default());
    if let Some(addr) = config.worker.metrics_listen {
        birdsong_common::health::spawn_server(
            addr,
            metrics::router(metrics.clone()).merge(health.router()),
            "worker",
        );
    }
    let Some(pool) = until_ready("PostgreSQL", &mut shutdown, || {
        db::prepare(&config.database)
    })
    .await
    else {
        return Ok(());
    };
    let store = ObjectStore::new(&config.s3);
    if until_ready("the object store", &mut shutdown, || store.ensure_bucket())
        .await
        .is_none()
    {
        return Ok(());
    }
    health.set_database(pool.clone());
    health.set_store(store.clone());
    let threads = config.cpu_threads();
    config
        .worker
        .window()
        .plan()
        .context("BIRDSONG_WINDOW_SECONDS / BIRDSONG_WINDOW_HOP_SECONDS")?;
    let analyzer = Arc::new(Analyzer::new(Settings::from_config(&config.worker)));
    let default_backbone = birdsong_analysis::default_backbone(&config.worker);
    // A worker told to analyse with BirdNET must be able to: find out now, not
    // on every task.
    let check = analyzer.clone();
    tokio::task::spawn_blocking(move || check.ensure(default_backbone))
        .await
        .context("checking the backbone")?
        .context("BIRDSONG_BACKBONE")?;
    let pipeline = Arc::new(Pipeline {
        models: Arc::new(Models::new(pool.clone(), store.clone(), analyzer)),
        pool,
        store,
        cpu: Arc::new(Semaphore::new(threads)),
        default_backbone,
        max_file_bytes: config.max_file_bytes,
        worker_name: name.clone(),
        metrics,
        max_interruptions: config.queues.delivery_limit.max(1),
    });
    tracing::info!(worker = %name, cpu_threads = threads, "worker started");
    consumer::consume_forever(pipeline, &config, &health, &mut shutdown).await;
    tracing::info!(worker = %name, "worker stopped");
    Ok(())
}
