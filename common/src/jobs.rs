//! Turning recordings into queued tasks, the same way from every entry point.
//!
//! The producer, the API and the tests all submit work through these
//! functions, so that the order that makes submission crash-safe lives in one
//! place:
//!
//! 1. the bytes are in the object store (content-addressed) before any row
//!    points at them;
//! 2. the file, job and task rows are upserted (unique keys: re-running a
//!    submission finds the rows it made before);
//! 3. the `classify` message is published with a confirm, and only then is
//!    the task stamped `queued_at`. A crash between 2 and 3 leaves a task
//!    without `queued_at`, which the next run publishes; a crash between the
//!    confirm and the stamp publishes the task twice, which the worker
//!    absorbs (it acks a task that is already done).

use sqlx::PgPool;
use uuid::Uuid;

use crate::db::{QueryError, query};
use crate::messages::ClassifyTask;
use crate::queue::{Publisher, QueueError};
use crate::store::audio_key;

/// Where a submission came from (the `jobs.source` column).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobSource {
    Producer,
    Api,
    Reclassify,
}

impl JobSource {
    pub fn as_str(self) -> &'static str {
        match self {
            JobSource::Producer => "producer",
            JobSource::Api => "api",
            JobSource::Reclassify => "reclassify",
        }
    }
}

/// A failure while submitting work.
#[derive(Debug, thiserror::Error)]
pub enum SubmitError {
    #[error(transparent)]
    Db(#[from] QueryError),
    #[error(transparent)]
    Queue(#[from] QueueError),
}

/// Creates a job, or finds the one created earlier with the same
/// idempotency key (a re-run of the same ingest). Returns its id and whether
/// it already existed.
pub async fn open_job(
    pool: &PgPool,
    source: JobSource,
    description: &str,
    idempotency_key: Option<&str>,
) -> Result<(Uuid, bool), SubmitError> {
    let id = Uuid::new_v4();
    let row: (Uuid, bool) = sqlx::query_as(
        "INSERT INTO jobs (id, source, description, idempotency_key)
         VALUES ($1, $2, $3, $4)
         ON CONFLICT (idempotency_key) DO UPDATE SET updated_at = now()
         RETURNING id, (xmax <> 0) AS existed",
    )
    .bind(id)
    .bind(source.as_str())
    .bind(description)
    .bind(idempotency_key)
    .fetch_one(pool)
    .await
    .map_err(query("opening the job"))?;
    Ok(row)
}

/// What is known about a recording when it is registered.
#[derive(Debug, Clone)]
pub struct NewFile<'a> {
    pub sha256: &'a str,
    pub original_name: &'a str,
    pub size_bytes: u64,
    pub site: Option<&'a str>,
}

/// Records a recording whose bytes are already stored under its content key.
/// Idempotent: the first name and metadata seen are kept. The start time is read
/// from the name ([`crate::recorded::from_file_name`]) when it has one.
pub async fn register_file(pool: &PgPool, file: &NewFile<'_>) -> Result<(), SubmitError> {
    sqlx::query(
        "INSERT INTO audio_files (sha256, object_key, original_name, size_bytes, site, recorded_at)
         VALUES ($1, $2, $3, $4, $5, $6)
         ON CONFLICT (sha256) DO UPDATE SET
             site = coalesce(audio_files.site, EXCLUDED.site),
             recorded_at = coalesce(audio_files.recorded_at, EXCLUDED.recorded_at)",
    )
    .bind(file.sha256)
    .bind(audio_key(file.sha256))
    .bind(file.original_name)
    .bind(i64::try_from(file.size_bytes).unwrap_or(i64::MAX))
    .bind(file.site)
    .bind(crate::recorded::from_file_name(file.original_name))
    .execute(pool)
    .await
    .map_err(query("registering the file"))?;
    Ok(())
}

/// A task as [`add_task`] found or created it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct TaskRow {
    pub id: Uuid,
    pub status: String,
    /// Whether its message has been confirmed by the broker.
    pub queued: bool,
    /// False when this submission met a task made earlier for the same
    /// recording in the same job (a duplicate, or a re-run).
    pub created: bool,
}

/// Adds the task for `sha256` in `job`, or returns the existing one.
pub async fn add_task(
    pool: &PgPool,
    job: Uuid,
    sha256: &str,
    source_path: &str,
) -> Result<TaskRow, SubmitError> {
    sqlx::query_as(
        "INSERT INTO tasks (id, job_id, file_sha256, source_path)
         VALUES ($1, $2, $3, $4)
         ON CONFLICT (job_id, file_sha256) DO UPDATE SET updated_at = tasks.updated_at
         RETURNING id, status, queued_at IS NOT NULL AS queued, (xmax = 0) AS created",
    )
    .bind(Uuid::new_v4())
    .bind(job)
    .bind(sha256)
    .bind(source_path)
    .fetch_one(pool)
    .await
    .map_err(|e| query("adding the task")(e).into())
}

/// Publishes the task's message (with a confirm) and stamps it queued.
pub async fn enqueue(
    pool: &PgPool,
    publisher: &Publisher,
    queue: &str,
    job: Uuid,
    task: Uuid,
    sha256: &str,
) -> Result<(), SubmitError> {
    publisher
        .publish(queue, &ClassifyTask::new(task, job, sha256.to_string()))
        .await?;
    sqlx::query(
        "UPDATE tasks SET queued_at = coalesce(queued_at, now()), updated_at = now() WHERE id = $1",
    )
    .bind(task)
    .execute(pool)
    .await
    .map_err(query("marking the task queued"))?;
    Ok(())
}

/// Publishes every task of `job` that has no confirmed message yet (what a
/// crashed submission left behind). Returns how many it published.
pub async fn enqueue_pending(
    pool: &PgPool,
    publisher: &Publisher,
    queue: &str,
    job: Uuid,
) -> Result<usize, SubmitError> {
    let pending: Vec<(Uuid, String)> = sqlx::query_as(
        "SELECT id, file_sha256 FROM tasks WHERE job_id = $1 AND queued_at IS NULL AND status = 'queued'",
    )
    .bind(job)
    .fetch_all(pool)
    .await
    .map_err(query("listing unqueued tasks"))?;
    for (task, sha) in &pending {
        enqueue(pool, publisher, queue, job, *task, sha).await?;
    }
    Ok(pending.len())
}

/// Records an entry of a submission that was refused, with the reason.
pub async fn reject(pool: &PgPool, job: Uuid, path: &str, reason: &str) -> Result<(), SubmitError> {
    sqlx::query(
        "INSERT INTO job_rejections (job_id, path, reason) VALUES ($1, $2, $3)
         ON CONFLICT (job_id, path) DO UPDATE SET reason = EXCLUDED.reason",
    )
    .bind(job)
    .bind(path)
    .bind(reason)
    .execute(pool)
    .await
    .map_err(query("recording a rejected entry"))?;
    Ok(())
}

/// Counts of a finished submission, stored on the job row.
#[derive(Debug, Clone, Copy, Default)]
pub struct SubmissionCounts {
    pub accepted: i32,
    pub duplicate: i32,
    pub rejected: i32,
    pub bytes: i64,
}

/// Marks the job fully submitted (every task has a confirmed message) and
/// stores its counts.
pub async fn close_job(
    pool: &PgPool,
    job: Uuid,
    counts: SubmissionCounts,
) -> Result<(), SubmitError> {
    sqlx::query(
        "UPDATE jobs SET files_accepted = $2, files_duplicate = $3, files_rejected = $4,
                bytes_accepted = $5, submitted_at = coalesce(submitted_at, now()), updated_at = now()
         WHERE id = $1",
    )
    .bind(job)
    .bind(counts.accepted)
    .bind(counts.duplicate)
    .bind(counts.rejected)
    .bind(counts.bytes)
    .execute(pool)
    .await
    .map_err(query("closing the job"))?;
    Ok(())
}

/// Records a species label for a recording (training data).
pub async fn label(
    pool: &PgPool,
    sha256: &str,
    species: &str,
    source: &str,
) -> Result<(), SubmitError> {
    let mut tx = pool.begin().await.map_err(query("labelling"))?;
    sqlx::query("INSERT INTO species (name) VALUES ($1) ON CONFLICT (name) DO NOTHING")
        .bind(species)
        .execute(&mut *tx)
        .await
        .map_err(query("recording the species"))?;
    sqlx::query(
        "INSERT INTO labels (file_sha256, source, species) VALUES ($1, $2, $3)
         ON CONFLICT (file_sha256, source) DO UPDATE
           SET species = EXCLUDED.species,
               updated_at = CASE WHEN labels.species = EXCLUDED.species THEN labels.updated_at ELSE now() END",
    )
    .bind(sha256)
    .bind(source)
    .bind(species)
    .execute(&mut *tx)
    .await
    .map_err(query("recording the label"))?;
    tx.commit().await.map_err(query("committing the label"))?;
    Ok(())
}
