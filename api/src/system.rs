//! `GET /v1/system`: what the pipeline is doing right now.
//!
//! Workers are not registered anywhere: a worker is "seen" when it finished
//! a task, so the list is derived from `tasks.worker` and `finished_at`
//! (an idle worker drops out after [`WORKER_WINDOW_MIN`] minutes, which is
//! what an operator asking "who is working?" wants). Queue depths come from
//! a passive declare on the API's own broker channel — no management plugin
//! needed. Throughput is bucketed per minute over the last hour from the
//! task rows, and failures come from the `failed_tasks` view.

use axum::Json;
use axum::extract::State;
use chrono::{DateTime, Utc};
use serde::Serialize;
use uuid::Uuid;

use crate::AppState;
use crate::problem::ApiResult;
use schemars::JsonSchema;

/// Minutes after its last finished task during which a worker is listed.
pub const WORKER_WINDOW_MIN: i64 = 15;
/// Failures listed.
const RECENT_FAILURES: i64 = 20;

#[derive(Debug, Serialize, sqlx::FromRow, JsonSchema)]
pub struct WorkerSeen {
    pub worker: String,
    pub last_seen: DateTime<Utc>,
    /// Tasks it finished in the last hour.
    pub tasks_last_hour: i64,
    pub processing: i64,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct QueueDepth {
    pub queue: String,
    /// `None` when the queue could not be inspected (broker down).
    pub messages: Option<u32>,
    pub consumers: Option<u32>,
}

#[derive(Debug, Serialize, sqlx::FromRow, JsonSchema)]
pub struct Minute {
    pub minute: DateTime<Utc>,
    pub files: i64,
    pub audio_seconds: f64,
    pub failed: i64,
}

#[derive(Debug, Serialize, sqlx::FromRow, JsonSchema)]
pub struct Failure {
    pub job_id: Uuid,
    pub task_id: Uuid,
    pub source_path: String,
    pub file_sha256: String,
    pub error_kind: Option<String>,
    pub error: Option<String>,
    pub attempts: i32,
    pub finished_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Serialize, sqlx::FromRow, JsonSchema)]
pub struct TaskCounts {
    pub queued: i64,
    pub processing: i64,
    pub awaiting_model: i64,
    pub failed: i64,
    pub done: i64,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct System {
    pub now: DateTime<Utc>,
    pub workers: Vec<WorkerSeen>,
    pub queues: Vec<QueueDepth>,
    pub tasks: TaskCounts,
    /// One bucket per minute of the last hour that finished anything.
    pub throughput: Vec<Minute>,
    pub failures: Vec<Failure>,
}

/// A channel of its own for passive declares: a declare of a queue that
/// does not exist closes the channel it is made on, which must never be the
/// publisher's. Opened on first use, opened again after it closes.
#[derive(Default)]
pub struct Inspector {
    conn: tokio::sync::Mutex<Option<(lapin::Connection, lapin::Channel)>>,
}

impl Inspector {
    async fn channel(&self, amqp_url: &str) -> Result<lapin::Channel, String> {
        let mut held = self.conn.lock().await;
        if let Some((conn, channel)) = held.as_ref()
            && conn.status().connected()
            && channel.status().connected()
        {
            return Ok(channel.clone());
        }
        if let Some((conn, _)) = held.take() {
            let _ = conn.close(200, "reopening".into()).await;
        }
        let conn = birdsong_common::queue::connect(amqp_url, "birdsong-api-inspect")
            .await
            .map_err(|e| e.to_string())?;
        let channel = conn.create_channel().await.map_err(|e| e.to_string())?;
        *held = Some((conn, channel.clone()));
        Ok(channel)
    }
}

async fn depth(state: &AppState, queue: &str) -> QueueDepth {
    let unknown = || QueueDepth {
        queue: queue.to_string(),
        messages: None,
        consumers: None,
    };
    let channel = match state.inspector.channel(&state.config.queues.amqp_url).await {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(error = %e, "could not open a channel to inspect queues");
            return unknown();
        }
    };
    let declared = channel
        .queue_declare(
            queue.into(),
            lapin::options::QueueDeclareOptions {
                passive: true,
                ..Default::default()
            },
            Default::default(),
        )
        .await;
    match declared {
        Ok(q) => QueueDepth {
            queue: queue.to_string(),
            messages: Some(q.message_count()),
            consumers: Some(q.consumer_count()),
        },
        Err(e) => {
            tracing::warn!(error = %e, queue, "could not inspect a queue");
            unknown()
        }
    }
}

pub async fn system(State(state): State<AppState>) -> ApiResult<Json<System>> {
    let pool = &state.pool;
    let workers: Vec<WorkerSeen> = sqlx::query_as(
        "SELECT worker, max(coalesce(finished_at, started_at)) AS last_seen,
                count(*) FILTER (WHERE finished_at > now() - interval '1 hour') AS tasks_last_hour,
                count(*) FILTER (WHERE status = 'processing') AS processing
         FROM tasks
         WHERE worker IS NOT NULL
           AND (finished_at > now() - make_interval(mins => $1::int)
                OR status = 'processing')
         GROUP BY worker
         ORDER BY last_seen DESC, worker",
    )
    .bind(WORKER_WINDOW_MIN as i32)
    .fetch_all(pool)
    .await?;
    let tasks: TaskCounts = sqlx::query_as(
        "SELECT count(*) FILTER (WHERE status = 'queued') AS queued,
                count(*) FILTER (WHERE status = 'processing') AS processing,
                count(*) FILTER (WHERE status = 'awaiting_model') AS awaiting_model,
                count(*) FILTER (WHERE status = 'failed') AS failed,
                count(*) FILTER (WHERE status = 'done') AS done
         FROM tasks",
    )
    .fetch_one(pool)
    .await?;
    let throughput: Vec<Minute> = sqlx::query_as(
        "SELECT date_trunc('minute', t.finished_at) AS minute,
                count(*) FILTER (WHERE t.status <> 'failed') AS files,
                coalesce(sum(f.duration_s) FILTER (WHERE t.status <> 'failed'), 0)::float8
                    AS audio_seconds,
                count(*) FILTER (WHERE t.status = 'failed') AS failed
         FROM tasks t JOIN audio_files f ON f.sha256 = t.file_sha256
         WHERE t.finished_at > now() - interval '1 hour'
         GROUP BY 1 ORDER BY 1",
    )
    .fetch_all(pool)
    .await?;
    let failures: Vec<Failure> = sqlx::query_as(
        "SELECT job_id, task_id, source_path, file_sha256, error_kind, error, attempts, finished_at
         FROM failed_tasks ORDER BY finished_at DESC NULLS LAST LIMIT $1",
    )
    .bind(RECENT_FAILURES)
    .fetch_all(pool)
    .await?;
    let q = &state.config.queues;
    let names = [
        q.classify.clone(),
        birdsong_common::config::QueueConfig::dead_letter(&q.classify),
        q.retrain.clone(),
    ];
    let mut queues = Vec::with_capacity(names.len());
    for name in &names {
        queues.push(depth(&state, name).await);
    }
    Ok(Json(System {
        now: Utc::now(),
        workers,
        queues,
        tasks,
        throughput,
        failures,
    }))
}
