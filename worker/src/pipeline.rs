//! One task, from message to committed rows.
//!
//! 1. Claim the task in one statement, which also reads what the rest needs:
//!    the recording's size, the promoted model version, whether that version
//!    has already classified the recording, and whether its window features
//!    are stored. A task that is already finished was delivered twice and
//!    only needs its message acknowledged.
//! 2. Reuse the recording's stored window features if it was analysed before
//!    with the same feature version and windowing; otherwise fetch it from the
//!    object store and decode and analyse it on the CPU pool. (Mel patches, the
//!    spectrogram CNN's input, are never stored: see `Backbone::stores_windows`.)
//! 3. Classify all its windows in one forward pass with the model in service.
//! 4. In **one statement** (so one atomic commit): the file's audio facts, the
//!    window features, one detection per window, the per-file summary and the
//!    task's final status.
//!
//! Per-row data travel as arrays that the statements `unnest`, so every task
//! runs the same few prepared statements whatever its window count, and a
//! fresh recording costs two round trips to the database. Every insert is an
//! upsert on the table's unique key, so running a task twice (a redelivery
//! after a crash) leaves the same rows as running it once.

use std::sync::Arc;
use std::time::Instant;

use birdsong_analysis::{Analysed, Backbone};
use birdsong_audio::AudioInfo;
use birdsong_common::messages::ClassifyTask;
use birdsong_common::store::{ObjectStore, audio_key};
use birdsong_model::FeatureVector;
use serde_json::json;
use sqlx::postgres::PgArguments;
use sqlx::{Arguments, PgPool, Postgres};
use tokio::sync::Semaphore;
use uuid::Uuid;

use birdsong_registry::{LoadedModel, Models};

use crate::error::TaskError;
use crate::metrics::Metrics;

/// Recordings up to this size are fetched into memory (a 16 MiB WAV is
/// about three minutes at 48 kHz); larger ones are spooled to a temporary
/// file and decoded from there, so a task's memory does not grow with the
/// recording.
const IN_MEMORY_BYTES: u64 = 16 * 1024 * 1024;

/// Species kept per window and per recording in `top_k`.
const TOP_K: usize = 3;

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
    /// What recordings are analysed with while no model is in service
    /// (`BIRDSONG_BACKBONE`); a model in service always gets its own.
    pub default_backbone: Backbone,
    pub max_file_bytes: u64,
    pub worker_name: String,
    pub metrics: Arc<Metrics>,
    /// Interruptions after which a task is failed rather than retried (the
    /// queue's delivery limit).
    pub max_interruptions: u32,
}

/// What claiming a task found out.
struct Claimed {
    file_sha256: String,
    size_bytes: i64,
    interruptions: i32,
    /// The promoted model version.
    promoted: Option<String>,
    /// The promoted version has already classified this recording.
    known: bool,
}

/// Windows of one recording, whether computed now or read back.
struct Windows {
    info: Option<AudioInfo>,
    fresh: bool,
    /// What the vectors are.
    backbone: Backbone,
    spans: Vec<(f64, f64)>,
    vectors: Vec<FeatureVector>,
}

impl Pipeline {
    /// Runs one task to a final state. `Err` only for transient failures;
    /// permanent ones are recorded and returned as [`Outcome::Failed`].
    pub async fn process(&self, msg: &ClassifyTask) -> Result<Outcome, TaskError> {
        let started = Instant::now();
        let Some(task) = self.claim(msg).await? else {
            return self.unclaimable(msg).await;
        };
        if u32::try_from(task.interruptions).unwrap_or(0) >= self.max_interruptions {
            let reason = format!(
                "processing was interrupted {} times without finishing \
                 (the worker was killed, crashed or lost its services while on this recording); \
                 gave up so that the job can finish",
                task.interruptions
            );
            self.finish_failed(msg.task_id, "interrupted", &reason)
                .await?;
            self.metrics.file_failed("interrupted");
            return Ok(Outcome::Failed {
                kind: "interrupted".into(),
                reason,
            });
        }
        let ensured = self.models.ensure(task.promoted.clone()).await;
        self.metrics.set_models_refused(self.models.refused());
        let result = match ensured {
            Ok(model) => self.run_claimed(msg, &task, model, started).await,
            Err(e) => Err(e.into()),
        };
        match result {
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

    /// Marks the task `processing` (counting an interruption if an earlier
    /// delivery left it so) and reads everything the task needs, in one
    /// statement. `None` when the task cannot be claimed: it does not exist,
    /// the message does not match it, or it is already finished (an
    /// `awaiting_model` task is finished until a model is promoted).
    async fn claim(&self, msg: &ClassifyTask) -> Result<Option<Claimed>, TaskError> {
        type Row = (String, i64, i32, Option<String>, bool);
        let row: Option<Row> = sqlx::query_as(
            "WITH promoted AS (
                 SELECT version FROM model_versions WHERE status = 'promoted'
             )
             UPDATE tasks t
             SET status = 'processing', attempts = t.attempts + 1,
                 interruptions = t.interruptions + (t.status = 'processing')::int,
                 started_at = coalesce(t.started_at, now()), worker = $3, updated_at = now()
             FROM audio_files f
             WHERE t.id = $1 AND t.file_sha256 = $2 AND f.sha256 = t.file_sha256
               AND (t.status IN ('queued', 'processing')
                    OR (t.status = 'awaiting_model' AND EXISTS (SELECT 1 FROM promoted)))
             RETURNING t.file_sha256, f.size_bytes, t.interruptions,
                 (SELECT version FROM promoted),
                 EXISTS (SELECT 1 FROM file_summaries s JOIN promoted p ON p.version = s.model_version
                         WHERE s.file_sha256 = t.file_sha256)",
        )
        .bind(msg.task_id)
        .bind(&msg.file_sha256)
        .bind(&self.worker_name)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(
            |(file_sha256, size_bytes, interruptions, promoted, known)| Claimed {
                file_sha256,
                size_bytes,
                interruptions,
                promoted,
                known,
            },
        ))
    }

    /// Why a task could not be claimed: a permanent error for a message that
    /// names no task or the wrong recording, otherwise a duplicate delivery.
    async fn unclaimable(&self, msg: &ClassifyTask) -> Result<Outcome, TaskError> {
        let sha: Option<String> = sqlx::query_scalar("SELECT file_sha256 FROM tasks WHERE id = $1")
            .bind(msg.task_id)
            .fetch_optional(&self.pool)
            .await?;
        match sha {
            None => Err(TaskError::permanent(
                "unknown_task",
                format!("task {} does not exist", msg.task_id),
            )),
            Some(sha) if sha != msg.file_sha256 => Err(TaskError::permanent(
                "inconsistent_message",
                format!(
                    "message names recording {} but task {} is for {}",
                    msg.file_sha256, msg.task_id, sha
                ),
            )),
            Some(_) => Ok(Outcome::AlreadyFinished),
        }
    }

    /// Steps 2 to 4 for a task this worker has claimed.
    async fn run_claimed(
        &self,
        msg: &ClassifyTask,
        task: &Claimed,
        model: Option<Arc<LoadedModel>>,
        started: Instant,
    ) -> Result<Outcome, TaskError> {
        // The same recording classified by the same model for another job:
        // nothing to compute. (`known` is about the promoted version; if that
        // one was refused and an older model serves, compute as usual.)
        if let Some(m) = &model
            && task.known
            && task.promoted.as_ref().is_some_and(|v| *v == m.version)
        {
            self.finish_done(msg.task_id, &m.version).await?;
            self.metrics.file_done(started.elapsed(), 0.0);
            return Ok(Outcome::Done {
                model_version: m.version.clone(),
            });
        }

        let backbone = model.as_ref().map_or(self.default_backbone, |m| m.backbone);
        let windows = match self.windows(task, backbone).await {
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
            Some(m) => Some(self.classify(m.clone(), &windows.vectors).await?),
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

    /// The recording's windows for `backbone`: read back if stored (this
    /// recording was analysed before, for another job or another model of the
    /// same backbone), otherwise computed now.
    async fn windows(&self, task: &Claimed, backbone: Backbone) -> Result<Windows, TaskError> {
        if !backbone.stores_windows() {
            return self.analyse(task, backbone).await;
        }
        match self.stored_windows(&task.file_sha256, backbone).await? {
            Some(stored) => Ok(stored),
            None => self.analyse(task, backbone).await,
        }
    }

    /// The recording's windows read back from `window_features`, if any.
    async fn stored_windows(
        &self,
        sha: &str,
        backbone: Backbone,
    ) -> Result<Option<Windows>, TaskError> {
        let window = self.models.analyzer().windowing(backbone);
        let stored: Vec<(f64, f64, Vec<f32>)> = sqlx::query_as(
            "SELECT start_s, end_s, features FROM window_features
             WHERE file_sha256 = $1 AND feature_version = $2 AND window_s = $3 AND hop_s = $4
             ORDER BY window_index",
        )
        .bind(sha)
        .bind(backbone.feature_version())
        .bind(window.length_s as f32)
        .bind(window.hop_s as f32)
        .fetch_all(&self.pool)
        .await?;
        if stored.is_empty() {
            return Ok(None);
        }
        let expected = backbone.vector_len();
        let mut spans = Vec::with_capacity(stored.len());
        let mut vectors = Vec::with_capacity(stored.len());
        for (start, end, v) in stored {
            if v.len() != expected {
                return Err(TaskError::permanent(
                    "bad_features",
                    format!(
                        "a stored {backbone} window has {} values, expected {expected}",
                        v.len()
                    ),
                ));
            }
            spans.push((start, end));
            vectors.push(v);
        }
        Ok(Some(Windows {
            info: None,
            fresh: false,
            backbone,
            spans,
            vectors,
        }))
    }

    /// The recording fetched from the object store and analysed.
    async fn analyse(&self, task: &Claimed, backbone: Backbone) -> Result<Windows, TaskError> {
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
        let analyzer = self.models.analyzer().clone();
        let analysed: Analysed = if size <= IN_MEMORY_BYTES {
            let bytes = self.store.get(&key).await?;
            self.on_cpu(move || analyzer.analyse_reader(backbone, std::io::Cursor::new(bytes)))
                .await??
        } else {
            let spool = tempfile::NamedTempFile::new().map_err(|e| {
                TaskError::transient("io", format!("cannot create a spool file: {e}"))
            })?;
            self.store.get_to_file(&key, spool.path()).await?;
            self.on_cpu(move || analyzer.analyse_file(backbone, spool.path()))
                .await??
        };
        if analysed.spans.is_empty() {
            return Err(TaskError::permanent(
                "no_windows",
                "the recording produced no analysis window",
            ));
        }
        Ok(Windows {
            spans: analysed.spans,
            vectors: analysed.vectors,
            info: Some(analysed.info),
            fresh: true,
            backbone,
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
            .on_cpu(move || model.classifier.score_recordings(&[&features]))
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
        let n = windows.spans.len();
        let index: Vec<i32> = (0..n)
            .map(|i| i32::try_from(i).unwrap_or(i32::MAX))
            .collect();
        let starts: Vec<f64> = windows.spans.iter().map(|s| s.0).collect();
        let ends: Vec<f64> = windows.spans.iter().map(|s| s.1).collect();
        // Stored features are not written again, nor are those of a backbone whose
        // windows are not kept.
        let store = windows.fresh && windows.backbone.stores_windows();
        let flat: Vec<f32> = if store {
            windows.vectors.iter().flatten().copied().collect()
        } else {
            Vec::new()
        };
        let info = windows.info.as_ref();
        let window = self.models.analyzer().windowing(windows.backbone);
        let mut q = Statement::default();
        let file = AnalysedFile {
            sha: q.bind(sha)?,
            format: q.bind(info.map(|i| i.format.clone()))?,
            codec: q.bind(info.map(|i| i.codec.clone()))?,
            sample_rate: q.bind(info.map(|i| i32::try_from(i.sample_rate).unwrap_or(i32::MAX)))?,
            channels: q.bind(info.map(|i| i16::try_from(i.channels).unwrap_or(i16::MAX)))?,
            duration: q.bind(info.map(|i| i.duration_s))?,
            fresh: q.bind(windows.fresh)?,
            store: q.bind(store)?,
            feature_version: q.bind(windows.backbone.feature_version())?,
            window_s: q.bind(window.length_s as f32)?,
            hop_s: q.bind(window.hop_s as f32)?,
            index: q.bind(&index)?,
            starts: q.bind(&starts)?,
            ends: q.bind(&ends)?,
            features: q.bind(&flat)?,
            width: q.bind(i32::try_from(windows.backbone.vector_len()).unwrap_or(i32::MAX))?,
        };
        let task = q.bind(task_id)?;
        let analysed = analysed_cte(&file);
        let sql = match (model, probabilities) {
            (Some(model), Some(probs)) => {
                let classifier = &model.classifier;
                let mut species = Vec::with_capacity(n);
                let mut confidence = Vec::with_capacity(n);
                let mut top_k = Vec::with_capacity(n);
                let mut found = Found::default();
                for (i, p) in probs.iter().enumerate() {
                    let top = classifier.top_k(p, TOP_K);
                    let (s, c) = best(&top);
                    species.push(s);
                    confidence.push(c);
                    top_k.push(top_k_json(&top).to_string());
                    for d in classifier.detections(p) {
                        found.window.push(index[i]);
                        found.threshold.push(d.threshold);
                        found.confidence.push(d.probability.clamp(0.0, 1.0));
                        found.species.push(d.species);
                    }
                }
                let summary = classifier
                    .summarize(&probs, TOP_K)
                    .ok_or_else(|| TaskError::permanent("no_windows", "nothing to summarise"))?;
                // The recording's call: the species detected in the most windows, or
                // none ("no detection").
                let call = summary.detected.first();
                let detected = serde_json::to_value(&summary.detected)
                    .map_err(|e| TaskError::permanent("internal", e.to_string()))?;
                let version = q.bind(&model.version)?;
                let scored = ScoredWindows {
                    species: q.bind(&species)?,
                    confidence: q.bind(&confidence)?,
                    top_k: q.bind(&top_k)?,
                };
                let summary = FileSummary {
                    species: q.bind(call.map(|c| c.species.clone()))?,
                    confidence: q.bind(call.map(|c| c.max_score.clamp(0.0, 1.0)))?,
                    top_k: q.bind(top_k_json(&summary.top))?,
                    windows: q.bind(i32::try_from(summary.windows).unwrap_or(i32::MAX))?,
                    detected: q.bind(detected)?,
                };
                let detections = Detections {
                    window: q.bind(&found.window)?,
                    species: q.bind(&found.species)?,
                    confidence: q.bind(&found.confidence)?,
                    threshold: q.bind(&found.threshold)?,
                };
                persist_classified(
                    &analysed,
                    &file,
                    &version,
                    &scored,
                    &summary,
                    &detections,
                    &task,
                )
            }
            _ => persist_awaiting(&analysed, &task),
        };
        q.execute(&self.pool, sql).await?;
        Ok(())
    }

    async fn finish_done(&self, task_id: Uuid, version: &str) -> Result<(), TaskError> {
        sqlx::query(
            "UPDATE tasks SET status = 'done', model_version = $2, error = NULL, error_kind = NULL,
                    finished_at = now(), updated_at = now()
             WHERE id = $1",
        )
        .bind(task_id)
        .bind(version)
        .execute(&self.pool)
        .await?;
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

/// The detections of one recording, as the columns of their rows.
#[derive(Default)]
struct Found {
    window: Vec<i32>,
    species: Vec<String>,
    confidence: Vec<f32>,
    threshold: Vec<f32>,
}

fn top_k_json(top: &[birdsong_model::inference::Prediction]) -> serde_json::Value {
    serde_json::Value::Array(
        top.iter()
            .map(|p| json!({"species": p.species, "confidence": p.probability}))
            .collect(),
    )
}

/// The top species and its confidence (clamped into the column's range).
fn best(top: &[birdsong_model::inference::Prediction]) -> (String, f32) {
    top.first()
        .map(|t| (t.species.clone(), t.probability.clamp(0.0, 1.0)))
        .unwrap_or_default()
}

/// One statement's text and arguments, built together: [`Statement::bind`]
/// adds a value and returns its placeholder (`$n`), which the text then names
/// through a variable. No placeholder number is written by hand, so
/// reordering or adding a value cannot bind it to the wrong column.
#[derive(Default)]
struct Statement {
    args: PgArguments,
    count: usize,
}

impl Statement {
    fn bind<'q, T>(&mut self, value: T) -> Result<String, TaskError>
    where
        T: sqlx::Encode<'q, Postgres> + sqlx::Type<Postgres> + 'q,
    {
        self.args
            .add(value)
            .map_err(|e| TaskError::permanent("internal", format!("encoding a value: {e}")))?;
        self.count += 1;
        Ok(format!("${}", self.count))
    }

    async fn execute(self, pool: &sqlx::PgPool, sql: String) -> Result<(), TaskError> {
        // The text holds only placeholders and fixed SQL, never a value.
        sqlx::query_with(sqlx::AssertSqlSafe(sql), self.args)
            .execute(pool)
            .await?;
        Ok(())
    }
}

/// Placeholders of what analysis found: the file's audio facts and, for a
/// fresh analysis, its window features (one flat array, `width` per window).
struct AnalysedFile {
    sha: String,
    format: String,
    codec: String,
    sample_rate: String,
    channels: String,
    duration: String,
    fresh: String,
    /// The window features are to be stored.
    store: String,
    feature_version: String,
    window_s: String,
    hop_s: String,
    index: String,
    starts: String,
    ends: String,
    features: String,
    width: String,
}

/// Placeholders of every window's best species, score and top-k (text arrays
/// of JSON, one per window).
struct ScoredWindows {
    species: String,
    confidence: String,
    top_k: String,
}

/// Placeholders of the recording's summary.
struct FileSummary {
    species: String,
    confidence: String,
    top_k: String,
    windows: String,
    detected: String,
}

/// Placeholders of the detections above threshold (parallel arrays).
struct Detections {
    window: String,
    species: String,
    confidence: String,
    threshold: String,
}

/// The part of both result statements that records what analysis found.
fn analysed_cte(f: &AnalysedFile) -> String {
    let AnalysedFile {
        sha,
        format,
        codec,
        sample_rate,
        channels,
        duration,
        fresh,
        store,
        feature_version,
        window_s,
        hop_s,
        index,
        starts,
        ends,
        features,
        width,
    } = f;
    format!(
        "WITH file AS (
             UPDATE audio_files
             SET format = {format}, codec = {codec}, sample_rate = {sample_rate},
                 channels = {channels}, duration_s = {duration}
             WHERE sha256 = {sha} AND {fresh}
         ), features AS (
             INSERT INTO window_features
                 (file_sha256, feature_version, window_s, hop_s, window_index, start_s, end_s, features)
             SELECT {sha}::text, {feature_version}::text, {window_s}::real, {hop_s}::real,
                    w.i, w.s, w.e, ({features}::real[])[w.i * {width} + 1 : (w.i + 1) * {width}]
             FROM unnest({index}::int[], {starts}::float8[], {ends}::float8[]) AS w (i, s, e)
             WHERE {store}
             ON CONFLICT DO NOTHING
         )"
    )
}

/// A classified recording: every window's scores, its summary, the
/// detections above threshold and the task done, atomically.
fn persist_classified(
    analysed: &str,
    f: &AnalysedFile,
    version: &str,
    w: &ScoredWindows,
    s: &FileSummary,
    d: &Detections,
    task: &str,
) -> String {
    let AnalysedFile {
        sha,
        index,
        starts,
        ends,
        ..
    } = f;
    format!(
        "{analysed}, scored AS (
             INSERT INTO window_scores
                 (file_sha256, model_version, window_index, start_s, end_s, species, confidence, top_k)
             SELECT {sha}::text, {version}::text, x.i, x.s, x.e, x.species, x.confidence, x.top_k::jsonb
             FROM unnest({index}::int[], {starts}::float8[], {ends}::float8[], {w_species}::text[],
                         {w_confidence}::real[], {w_top_k}::text[])
                 AS x (i, s, e, species, confidence, top_k)
             ON CONFLICT (file_sha256, model_version, window_index) DO UPDATE
             SET species = EXCLUDED.species, confidence = EXCLUDED.confidence, top_k = EXCLUDED.top_k
         ), detected AS (
             INSERT INTO detections
                 (file_sha256, model_version, window_index, start_s, end_s, species, confidence,
                  threshold, top_k)
             SELECT {sha}::text, {version}::text, x.i, ({starts}::float8[])[x.i + 1],
                    ({ends}::float8[])[x.i + 1], x.species, x.confidence, x.threshold,
                    (({w_top_k}::text[])[x.i + 1])::jsonb
             FROM unnest({d_window}::int[], {d_species}::text[], {d_confidence}::real[],
                         {d_threshold}::real[])
                 AS x (i, species, confidence, threshold)
             ON CONFLICT (file_sha256, model_version, window_index, species) DO UPDATE
             SET confidence = EXCLUDED.confidence, threshold = EXCLUDED.threshold
         ), summary AS (
             INSERT INTO file_summaries
                 (file_sha256, model_version, species, confidence, top_k, windows, detected)
             VALUES ({sha}, {version}, {s_species}, {s_confidence}, {s_top_k}, {s_windows}, {s_detected})
             ON CONFLICT (file_sha256, model_version) DO UPDATE
             SET species = EXCLUDED.species, confidence = EXCLUDED.confidence,
                 top_k = EXCLUDED.top_k, windows = EXCLUDED.windows, detected = EXCLUDED.detected
         )
         UPDATE tasks SET status = 'done', model_version = {version}, error = NULL, error_kind = NULL,
                finished_at = now(), updated_at = now()
         WHERE id = {task}",
        w_species = w.species,
        w_confidence = w.confidence,
        w_top_k = w.top_k,
        d_window = d.window,
        d_species = d.species,
        d_confidence = d.confidence,
        d_threshold = d.threshold,
        s_species = s.species,
        s_confidence = s.confidence,
        s_top_k = s.top_k,
        s_windows = s.windows,
        s_detected = s.detected,
    )
}

/// Features stored, no model yet: the task waits for one, atomically.
fn persist_awaiting(analysed: &str, task: &str) -> String {
    format!(
        "{analysed} UPDATE tasks SET status = 'awaiting_model', error = NULL, error_kind = NULL,
                finished_at = now(), updated_at = now()
         WHERE id = {task}"
    )
}
