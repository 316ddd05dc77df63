//! One task, from message to committed rows.
//!
//! 1. Read the task row; a task that is already finished was delivered
//!    twice and only needs its message acknowledged.
//! 2. Reuse the recording's stored window features if it was analysed before
//!    with the same feature version and windowing; otherwise fetch it from the
//!    object store and decode and analyse it on the CPU pool.
//! 3. Classify all its windows in one forward pass with the model in service.
//! 4. In **one transaction**: the file's audio facts, the window features, one
//!    detection per window, the per-file summary and the task's final status.
//!
//! Every insert is an upsert on the table's unique key, so running a task
//! twice (a redelivery after a crash) leaves the same rows as running it once.

use std::sync::Arc;
use std::time::Instant;

use birdsong_audio::{
    Analysis, AudioInfo, FEATURE_COUNT, FEATURE_VERSION, FeatureVector, WindowConfig,
};
use birdsong_common::messages::ClassifyTask;
use birdsong_common::store::{ObjectStore, audio_key};
use serde_json::json;
use sqlx::{PgPool, Postgres, QueryBuilder};
use tokio::sync::Semaphore;
use uuid::Uuid;

use crate::error::TaskError;
use crate::metrics::Metrics;
use crate::models::{LoadedModel, Models};

/// Recordings up to this size are fetched into memory (a 16 MiB WAV is
/// about three minutes at 48 kHz); larger ones are spooled to a temporary
/// file and decoded from there, so a task's memory does not grow with the
/// recording.
const IN_MEMORY_BYTES: u64 = 16 * 1024 * 1024;

/// Species kept per window and per recording in `top_k`.
const TOP_K: usize = 3;

/// Rows per multi-row INSERT (PostgreSQL allows 65 535 bind parameters).
const ROWS_PER_INSERT: usize = 1000;

/// How a task ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Classified by this model version.
    Done { model_version: String },
    /// Features stored; no model has been promoted yet.
    AwaitingModel,
    /// The task had already finished (a duplicate delivery).
    AlreadyFinished,
    /// The recording cannot be classified; the reason is on the task row.
    Failed { kind: String, reason: String },
}

/// Everything a task needs, shared by all tasks of a worker.
pub struct Pipeline {
    pub pool: PgPool,
    pub store: ObjectStore,
    pub models: Arc<Models>,
    /// Bounds CPU-heavy work (decode, features, inference) to the cores.
    pub cpu: Arc<Semaphore>,
    pub window: WindowConfig,
    pub max_file_bytes: u64,
    pub worker_name: String,
    pub metrics: Arc<Metrics>,
    /// Interruptions after which a task is failed rather than retried (the
    /// queue's delivery limit).
    pub max_interruptions: u32,
}

struct TaskState {
    status: String,
    file_sha256: String,
    size_bytes: i64,
}

/// Windows of one recording, whether computed now or read back.
struct Windows {
    info: Option<AudioInfo>,
    fresh: bool,
    spans: Vec<(f64, f64)>,
    features: Vec<FeatureVector>,
}

impl Pipeline {
    /// Runs one task to a final state. `Err` only for transient failures;
    /// permanent ones are recorded and returned as [`Outcome::Failed`].
    pub async fn process(&self, msg: &ClassifyTask) -> Result<Outcome, TaskError> {
        let started = Instant::now();
        let Some(task) = self.task_state(msg.task_id).await? else {
            return Err(TaskError::permanent(
                "unknown_task",
                format!("task {} does not exist", msg.task_id),
            ));
        };
        if task.file_sha256 != msg.file_sha256 {
            return Err(TaskError::permanent(
                "inconsistent_message",
                format!(
                    "message names recording {} but task {} is for {}",
                    msg.file_sha256, msg.task_id, task.file_sha256
                ),
            ));
        }
        let model = self.models.sync().await?;
        match task.status.as_str() {
            "done" | "failed" => return Ok(Outcome::AlreadyFinished),
            "awaiting_model" if model.is_none() => return Ok(Outcome::AlreadyFinished),
            _ => {}
        }
        // A task found `processing` was cut off mid-way by an earlier
        // delivery (transient failures hand it back as `queued`).
        let interruptions: Option<i32> = sqlx::query_scalar(
            "UPDATE tasks SET status = 'processing', attempts = attempts + 1,
                    interruptions = interruptions + (status = 'processing')::int,
                    started_at = coalesce(started_at, now()), worker = $2, updated_at = now()
             WHERE id = $1 AND status IN ('queued', 'processing', 'awaiting_model')
             RETURNING interruptions",
        )
        .bind(msg.task_id)
        .bind(&self.worker_name)
        .fetch_optional(&self.pool)
        .await?;
        let Some(interruptions) = interruptions else {
            return Ok(Outcome::AlreadyFinished);
        };
        if u32::try_from(interruptions).unwrap_or(0) >= self.max_interruptions {
            let reason = format!(
                "processing was interrupted {interruptions} times without finishing \
                 (the worker was killed, crashed or lost its services while on this recording); \
                 gave up so that the job can finish"
            );
            self.finish_failed(msg.task_id, "interrupted", &reason)
                .await?;
            self.metrics.file_failed("interrupted");
            return Ok(Outcome::Failed {
                kind: "interrupted".into(),
                reason,
            });
        }
        match self.run_claimed(msg, &task, model, started).await {
            Err(e) if e.is_transient() => {
                // Hand the task back so the next delivery does not count
                // this as an interruption. Best effort: if the database is
                // what failed, it counts as one.
                let _ = sqlx::query(
                    "UPDATE tasks SET status = 'queued', updated_at = now()
                     WHERE id = $1 AND status = 'processing'",
                )
                .bind(msg.task_id)
                .execute(&self.pool)
                .await;
                Err(e)
            }
            other => other,
        }
    }

    /// Steps 2 to 4 for a task this worker has claimed.
    async fn run_claimed(
        &self,
        msg: &ClassifyTask,
        task: &TaskState,
        model: Option<Arc<LoadedModel>>,
        started: Instant,
    ) -> Result<Outcome, TaskError> {
        // The same recording classified by the same model for another job:
        // nothing to compute.
        if let Some(m) = &model {
            let known: Option<i32> = sqlx::query_scalar(
                "SELECT 1 FROM file_summaries WHERE file_sha256 = $1 AND model_version = $2",
            )
            .bind(&task.file_sha256)
            .bind(&m.version)
            .fetch_optional(&self.pool)
            .await?;
            if known.is_some() {
                self.finish_done(msg.task_id, &m.version).await?;
                self.metrics.file_done(started.elapsed(), 0.0);
                return Ok(Outcome::Done {
                    model_version: m.version.clone(),
                });
            }
        }

        let windows = match self.windows(task).await {
            Ok(w) => w,
            Err(TaskError::Permanent { kind, message }) => {
                self.finish_failed(msg.task_id, kind, &message).await?;
                self.metrics.file_failed(kind);
                return Ok(Outcome::Failed {
                    kind: kind.to_string(),
                    reason: message,
                });
            }
            Err(e) => return Err(e),
        };
        let audio_seconds = windows.info.as_ref().map(|i| i.duration_s).unwrap_or(0.0);
        let classified = match &model {
            Some(m) => Some(self.classify(m.clone(), &windows.features).await?),
            None => None,
        };
        self.persist(
            msg.task_id,
            &task.file_sha256,
            &windows,
            model.as_deref(),
            classified,
        )
        .await?;
        self.metrics.file_done(started.elapsed(), audio_seconds);
        Ok(match model {
            Some(m) => Outcome::Done {
                model_version: m.version.clone(),
            },
            None => Outcome::AwaitingModel,
        })
    }

    async fn task_state(&self, id: Uuid) -> Result<Option<TaskState>, TaskError> {
        let row: Option<(String, String, i64)> = sqlx::query_as(
            "SELECT t.status, t.file_sha256, f.size_bytes
             FROM tasks t JOIN audio_files f ON f.sha256 = t.file_sha256 WHERE t.id = $1",
        )
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|(status, file_sha256, size_bytes)| TaskState {
            status,
            file_sha256,
            size_bytes,
        }))
    }

    async fn windows(&self, task: &TaskState) -> Result<Windows, TaskError> {
        let stored: Vec<(f64, f64, Vec<f32>)> = sqlx::query_as(
            "SELECT start_s, end_s, features FROM window_features
             WHERE file_sha256 = $1 AND feature_version = $2 AND window_s = $3 AND hop_s = $4
             ORDER BY window_index",
        )
        .bind(&task.file_sha256)
        .bind(FEATURE_VERSION)
        .bind(self.window.length_s as f32)
        .bind(self.window.hop_s as f32)
        .fetch_all(&self.pool)
        .await?;
        if !stored.is_empty() {
            let mut spans = Vec::with_capacity(stored.len());
            let mut features = Vec::with_capacity(stored.len());
            for (start, end, f) in stored {
                let v: FeatureVector = f.try_into().map_err(|f: Vec<f32>| {
                    TaskError::permanent(
                        "bad_features",
                        format!(
                            "stored window has {} features, expected {FEATURE_COUNT}",
                            f.len()
                        ),
                    )
                })?;
                spans.push((start, end));
                features.push(v);
            }
            return Ok(Windows {
                info: None,
                fresh: false,
                spans,
                features,
            });
        }
        let size = u64::try_from(task.size_bytes).unwrap_or(0);
        if size > self.max_file_bytes {
            return Err(TaskError::permanent(
                "too_large",
                format!(
                    "recording is {size} bytes; the limit (BIRDSONG_MAX_FILE_BYTES) is {}",
                    self.max_file_bytes
                ),
            ));
        }
        let key = audio_key(&task.file_sha256);
        let cfg = self.window.clone();
        let analysis: Analysis = if size <= IN_MEMORY_BYTES {
            let bytes = self.store.get(&key).await?;
            self.on_cpu(move || birdsong_audio::analyze_reader(std::io::Cursor::new(bytes), &cfg))
                .await??
        } else {
            let spool = tempfile::NamedTempFile::new().map_err(|e| {
                TaskError::transient("io", format!("cannot create a spool file: {e}"))
            })?;
            self.store.get_to_file(&key, spool.path()).await?;
            self.on_cpu(move || birdsong_audio::analyze_file(spool.path(), &cfg))
                .await??
        };
        if analysis.windows.is_empty() {
            return Err(TaskError::permanent(
                "no_windows",
                "the recording produced no analysis window",
            ));
        }
        Ok(Windows {
            spans: analysis
                .windows
                .iter()
                .map(|w| (w.start_s, w.end_s))
                .collect(),
            features: analysis.windows.iter().map(|w| w.features).collect(),
            info: Some(analysis.info),
            fresh: true,
        })
    }

    /// Runs CPU-heavy work on the blocking pool, at most one job per permit.
    async fn on_cpu<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, TaskError> {
        let permit = self
            .cpu
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| TaskError::transient("shutdown", "the CPU pool is closed"))?;
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            f()
        })
        .await
        .map_err(|e| TaskError::permanent("panic", format!("analysis panicked: {e}")))
    }

    async fn classify(
        &self,
        model: Arc<LoadedModel>,
        features: &[FeatureVector],
    ) -> Result<Vec<Vec<f32>>, TaskError> {
        let features = features.to_vec();
        Ok(self
            .on_cpu(move || model.classifier.predict(&features))
            .await??)
    }

    async fn persist(
        &self,
        task_id: Uuid,
        sha: &str,
        windows: &Windows,
        model: Option<&LoadedModel>,
        probabilities: Option<Vec<Vec<f32>>>,
    ) -> Result<(), TaskError> {
        let mut tx = self.pool.begin().await?;
        if let Some(info) = &windows.info {
            sqlx::query(
                "UPDATE audio_files SET format = $2, codec = $3, sample_rate = $4, channels = $5, duration_s = $6
                 WHERE sha256 = $1",
            )
            .bind(sha)
            .bind(&info.format)
            .bind(&info.codec)
            .bind(i32::try_from(info.sample_rate).unwrap_or(i32::MAX))
            .bind(i16::try_from(info.channels).unwrap_or(i16::MAX))
            .bind(info.duration_s)
            .execute(&mut *tx)
            .await?;
        }
        if windows.fresh {
            for (chunk_no, chunk) in windows.features.chunks(ROWS_PER_INSERT).enumerate() {
                let base = chunk_no * ROWS_PER_INSERT;
                let mut q: QueryBuilder<Postgres> = QueryBuilder::new(
                    "INSERT INTO window_features (file_sha256, feature_version, window_s, hop_s, window_index, start_s, end_s, features) ",
                );
                q.push_values(chunk.iter().enumerate(), |mut row, (i, f)| {
                    let (start, end) = windows.spans[base + i];
                    row.push_bind(sha)
                        .push_bind(FEATURE_VERSION)
                        .push_bind(self.window.length_s as f32)
                        .push_bind(self.window.hop_s as f32)
                        .push_bind((base + i) as i32)
                        .push_bind(start)
                        .push_bind(end)
                        .push_bind(f.to_vec());
                });
                q.push(" ON CONFLICT DO NOTHING");
                q.build().execute(&mut *tx).await?;
            }
        }
        match (model, probabilities) {
            (Some(model), Some(probs)) => {
                let classifier = &model.classifier;
                for (chunk_no, chunk) in probs.chunks(ROWS_PER_INSERT).enumerate() {
                    let base = chunk_no * ROWS_PER_INSERT;
                    let mut q: QueryBuilder<Postgres> = QueryBuilder::new(
                        "INSERT INTO detections (file_sha256, model_version, window_index, start_s, end_s, species, confidence, top_k) ",
                    );
                    q.push_values(chunk.iter().enumerate(), |mut row, (i, p)| {
                        let (start, end) = windows.spans[base + i];
                        let top = classifier.top_k(p, TOP_K);
                        let (species, confidence) = top
                            .first()
                            .map(|t| (t.species.clone(), t.probability.clamp(0.0, 1.0)))
                            .unwrap_or_default();
                        row.push_bind(sha)
                            .push_bind(&model.version)
                            .push_bind((base + i) as i32)
                            .push_bind(start)
                            .push_bind(end)
                            .push_bind(species)
                            .push_bind(confidence)
                            .push_bind(top_k_json(&top));
                    });
                    q.push(
                        " ON CONFLICT (file_sha256, model_version, window_index) DO UPDATE
                          SET species = EXCLUDED.species, confidence = EXCLUDED.confidence, top_k = EXCLUDED.top_k",
                    );
                    q.build().execute(&mut *tx).await?;
                }
                let summary = classifier
                    .summarize(&probs, TOP_K)
                    .ok_or_else(|| TaskError::permanent("no_windows", "nothing to summarise"))?;
                let (species, confidence) = summary
                    .top
                    .first()
                    .map(|t| (t.species.clone(), t.probability.clamp(0.0, 1.0)))
                    .unwrap_or_default();
                sqlx::query(
                    "INSERT INTO file_summaries (file_sha256, model_version, species, confidence, top_k, windows)
                     VALUES ($1, $2, $3, $4, $5, $6)
                     ON CONFLICT (file_sha256, model_version) DO UPDATE
                     SET species = EXCLUDED.species, confidence = EXCLUDED.confidence,
                         top_k = EXCLUDED.top_k, windows = EXCLUDED.windows",
                )
                .bind(sha)
                .bind(&model.version)
                .bind(species)
                .bind(confidence)
                .bind(top_k_json(&summary.top))
                .bind(summary.windows as i32)
                .execute(&mut *tx)
                .await?;
                mark_done(&mut tx, task_id, &model.version).await?;
            }
            _ => {
                sqlx::query(
                    "UPDATE tasks SET status = 'awaiting_model', error = NULL, error_kind = NULL,
                            finished_at = now(), updated_at = now()
                     WHERE id = $1",
                )
                .bind(task_id)
                .execute(&mut *tx)
                .await?;
            }
        }
        tx.commit().await?;
        Ok(())
    }

    async fn finish_done(&self, task_id: Uuid, version: &str) -> Result<(), TaskError> {
        let mut tx = self.pool.begin().await?;
        mark_done(&mut tx, task_id, version).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Records a permanent failure on the task row.
    pub async fn finish_failed(
        &self,
        task_id: Uuid,
        kind: &str,
        reason: &str,
    ) -> Result<(), TaskError> {
        sqlx::query(
            "UPDATE tasks SET status = 'failed', error = $2, error_kind = $3,
                    finished_at = now(), updated_at = now()
             WHERE id = $1 AND status <> 'done'",
        )
        .bind(task_id)
        .bind(reason)
        .bind(kind)
        .execute(&self.pool)
        .await?;
        Ok(())
    }
}

async fn mark_done(
    tx: &mut sqlx::Transaction<'_, Postgres>,
    task_id: Uuid,
    version: &str,
) -> Result<(), TaskError> {
    sqlx::query(
        "UPDATE tasks SET status = 'done', model_version = $2, error = NULL, error_kind = NULL,
                finished_at = now(), updated_at = now()
         WHERE id = $1",
    )
    .bind(task_id)
    .bind(version)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

fn top_k_json(top: &[birdsong_model::inference::Prediction]) -> serde_json::Value {
    serde_json::Value::Array(
        top.iter()
            .map(|p| json!({"species": p.species, "confidence": p.probability}))
            .collect(),
    )
}
