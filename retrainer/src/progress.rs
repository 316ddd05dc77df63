//! Live progress of a run in its `retrain_runs` row.
//!
//! Training runs on a blocking thread and reports every epoch; decoding
//! reports every file. Neither may wait for the database, so reports go
//! through a channel to a task that writes only the newest one: a slow
//! database makes the row lag, never the training.

use serde_json::Value;
use sqlx::PgPool;
use tokio::sync::mpsc;
use uuid::Uuid;

/// Sends progress reports for one run.
#[derive(Clone)]
pub struct Progress {
    tx: mpsc::UnboundedSender<Value>,
}

/// The task writing the reports; [`ProgressWriter::finish`] waits for the
/// last one to be written.
pub struct ProgressWriter {
    handle: tokio::task::JoinHandle<()>,
}

impl Progress {
    pub fn start(pool: PgPool, run: Uuid) -> (Progress, ProgressWriter) {
        let (tx, mut rx) = mpsc::unbounded_channel::<Value>();
        let handle = tokio::spawn(async move {
            while let Some(mut latest) = rx.recv().await {
                while let Ok(newer) = rx.try_recv() {
                    latest = newer;
                }
                if let Err(e) = sqlx::query("UPDATE retrain_runs SET progress = $2 WHERE id = $1")
                    .bind(run)
                    .bind(&latest)
                    .execute(&pool)
                    .await
                {
                    tracing::warn!(%run, error = %e, "could not record the run's progress");
                }
            }
        });
        (Progress { tx }, ProgressWriter { handle })
    }

    /// Reports `value` (a JSON object with at least a `stage`).
    pub fn report(&self, value: Value) {
        // The writer only stops after every sender is gone.
        let _ = self.tx.send(value);
    }
}

impl ProgressWriter {
    /// Waits until every report sent before `progress` was dropped is written.
    pub async fn finish(self, progress: Progress) {
        drop(progress);
        let _ = self.handle.await;
    }
}
