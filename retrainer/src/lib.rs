//! `birdsong-retrainer`: learns the user's species from the user's labels.
//!
//! Where it sits: downstream of the workers (it trains on the window
//! features they stored and the labels users gave) and upstream of them (the
//! model it promotes is the one they serve next).
//!
//! The retrainer consumes retrain requests, trains a new model on every
//! labelled recording (from the window features the workers stored),
//! compares it with the promoted model on a holdout that stays the same
//! from run to run, and promotes it only if it is better (or if the request
//! forces it). The registry operations themselves (promotion, requests,
//! reclassification, publishing and loading artifacts) live in the
//! `birdsong_registry` library, shared with the API, the worker and the
//! tests; this crate decides *when* to use them.
//!
//! * [`consumer`]: the queue loop, dispositions, reconnection, shutdown.
//! * [`mod@run`]: one run, step by step (the promotion decision is in [`gate`]).
//! * [`dataset`]: labelled recordings and their features.
//! * [`split`]: the stable train / validation / holdout split.
//! * [`gate`]: scores on the holdout and the metric that decides.
//! * [`params`]: the hyper-parameters a request may set.
//! * [`lock`]: one training at a time across processes.
//! * [`progress`]: the run row as a live progress report.

pub mod consumer;
pub mod dataset;
pub mod error;
pub mod gate;
pub mod lock;
pub mod params;
pub mod progress;
pub mod run;
pub mod split;

use birdsong_common::health::Health;
use birdsong_common::retry::until_ready;
use birdsong_common::store::ObjectStore;
use birdsong_common::{Config, db};
use tokio::sync::watch;

pub use error::RetrainError;
pub use run::Retrainer;

/// Runs a retrainer until `shutdown` becomes true (a run in progress is
/// finished first). Waits for PostgreSQL and the object store if they are
/// not reachable yet.
pub async fn run(config: Config, mut shutdown: watch::Receiver<bool>) -> anyhow::Result<()> {
    // Answers from the start, while still waiting for the services.
    let health = Health::default();
    if let Some(addr) = config.retrainer_listen {
        birdsong_common::health::spawn_server(addr, health.router(), "retrainer");
    }
    let Some(pool) = until_ready("PostgreSQL", &mut shutdown, || {
        db::prepare(&config.database)
    })
    .await
    else {
        return Ok(());
    };
    let objects = ObjectStore::new(&config.s3);
    if until_ready("the object store", &mut shutdown, || {
        objects.ensure_bucket()
    })
    .await
    .is_none()
    {
        return Ok(());
    }
    health.set_database(pool.clone());
    health.set_store(objects.clone());
    match lock::recover(&config.database.url).await {
        Ok(n) if n > 0 => tracing::warn!(runs = n, "runs of a stopped retrainer marked failed"),
        Ok(_) => {}
        Err(e) => tracing::warn!(error = %e, "could not check for abandoned runs"),
    }
    let retrainer = Retrainer::new(pool, objects, config);
    consumer::consume_forever(&retrainer, &health, &mut shutdown).await;
    tracing::info!("retrainer stopped");
    Ok(())
}
