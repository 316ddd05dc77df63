//! The model registry's state changes, the same from every entry point.
//!
//! The retrainer, its command line and the API all promote versions, ask for
//! retrains and reclassify recordings. The rules live here once:
//!
//! * **Promotion** is one transaction (the previously promoted version
//!   becomes `retired`, the chosen one `promoted`; the partial unique index on
//!   `model_versions` makes two promoted rows impossible), and only after the
//!   commit is the `model.promoted` event broadcast. A crash between the two
//!   loses nothing: every worker also checks the promoted row before each
//!   task. Promoting an earlier version is how a rollback is done.
//! * **Retrain requests** are a `retrain_runs` row first, then a confirmed
//!   message naming it, so a request can be followed from the moment it is
//!   accepted.
//! * **Reclassification** is an ordinary job whose tasks name recordings that
//!   already have stored window features: the worker classifies them from
//!   those features without fetching or decoding the audio.

use serde::Serialize;
use sqlx::PgPool;
use uuid::Uuid;

use birdsong_common::db::query;
use birdsong_common::jobs::{self, JobSource, SubmissionCounts};
use birdsong_common::messages::{
    ClassifyTask, ModelEvent, ModelEventKind, RetrainRequest, RetrainTrigger, SCHEMA_VERSION,
};
use birdsong_common::queue::Publisher;

use crate::error::RegistryError;

/// What [`promote`] did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Promotion {
    pub version: String,
    /// The version that was promoted before, now retired.
    pub previous: Option<String>,
    /// False when the version was already the promoted one (nothing changed,
    /// but the event is broadcast again so late workers converge).
    pub changed: bool,
}

/// Makes `version` the one every worker serves, then tells them.
///
/// `reason` is stored as the version's `status_reason` (for example "beat
/// v3 on the holdout: macro F1 0.81 > 0.78" or "rollback requested by the
/// API").
pub async fn promote(
    pool: &PgPool,
    publisher: &Publisher,
    exchange: &str,
    version: &str,
    reason: &str,
) -> Result<Promotion, RegistryError> {
    let mut tx = pool
        .begin()
        .await
        .map_err(query("starting the promotion"))?;
    // Serialises promotions: the second waits for the first to commit.
    sqlx::query("LOCK TABLE model_versions IN SHARE ROW EXCLUSIVE MODE")
        .execute(&mut *tx)
        .await
        .map_err(query("locking the model registry"))?;
    let target: Option<(String, Option<String>)> =
        sqlx::query_as("SELECT status, status_reason FROM model_versions WHERE version = $1")
            .bind(version)
            .fetch_optional(&mut *tx)
            .await
            .map_err(query("reading the model version"))?;
    let (status, status_reason) =
        target.ok_or_else(|| RegistryError::UnknownVersion(version.to_string()))?;
    if status == "rejected" {
        return Err(RegistryError::Rejected {
            version: version.to_string(),
            reason: status_reason.unwrap_or_else(|| "no reason recorded".into()),
        });
    }
    let previous: Option<String> =
        sqlx::query_scalar("SELECT version FROM model_versions WHERE status = 'promoted'")
            .fetch_optional(&mut *tx)
            .await
            .map_err(query("reading the promoted version"))?;
    let changed = previous.as_deref() != Some(version);
    if changed {
        sqlx::query("UPDATE model_versions SET status = 'retired' WHERE status = 'promoted'")
            .execute(&mut *tx)
            .await
            .map_err(query("retiring the promoted version"))?;
        sqlx::query(
            "UPDATE model_versions SET status = 'promoted', status_reason = $2, promoted_at = now()
             WHERE version = $1",
        )
        .bind(version)
        .bind(reason)
        .execute(&mut *tx)
        .await
        .map_err(query("promoting the version"))?;
    }
    tx.commit()
        .await
        .map_err(query("committing the promotion"))?;
    publisher
        .broadcast(
            exchange,
            &ModelEvent {
                schema: SCHEMA_VERSION,
                kind: ModelEventKind::Promoted,
                version: version.to_string(),
            },
        )
        .await?;
    Ok(Promotion {
        version: version.to_string(),
        previous: previous.filter(|p| p != version),
        changed,
    })
}

/// Records a retrain request and queues it. Returns the run id to follow in
/// `retrain_runs`.
/// Whether any string or key in `v` holds a NUL character.
fn has_nul(v: &serde_json::Value) -> bool {
    match v {
        serde_json::Value::String(s) => s.contains('\0'),
        serde_json::Value::Array(a) => a.iter().any(has_nul),
        serde_json::Value::Object(m) => m.iter().any(|(k, v)| k.contains('\0') || has_nul(v)),
        _ => false,
    }
}

pub async fn request_retrain(
    pool: &PgPool,
    publisher: &Publisher,
    queue: &str,
    trigger: RetrainTrigger,
    params: serde_json::Value,
    force_promote: bool,
) -> Result<Uuid, RegistryError> {
    if has_nul(&params) {
        return Err(RegistryError::NulInParams);
    }
    let run_id = Uuid::new_v4();
    let request = RetrainRequest {
        schema: SCHEMA_VERSION,
        run_id,
        trigger,
        params: if params.is_null() {
            serde_json::json!({})
        } else {
            params
        },
        force_promote,
    };
    let trigger_name = serde_json::to_value(trigger)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_else(|| "unknown".into());
    sqlx::query(
        "INSERT INTO retrain_runs (id, trigger, params, force_promote) VALUES ($1, $2, $3, $4)",
    )
    .bind(run_id)
    .bind(trigger_name)
    .bind(&request.params)
    .bind(force_promote)
    .execute(pool)
    .await
    .map_err(query("recording the retrain request"))?;
    if let Err(e) = publisher.publish(queue, &request).await {
        // Leave no request that nobody will ever pick up.
        let _ = sqlx::query(
            "UPDATE retrain_runs SET status = 'failed', error = $2, finished_at = now() WHERE id = $1",
        )
        .bind(run_id)
        .bind(format!("could not queue the request: {e}"))
        .execute(pool)
        .await;
        return Err(e.into());
    }
    Ok(run_id)
}

/// Which recordings to classify again.
#[derive(Debug, Clone)]
pub enum Selection {
    /// Every recording of one job.
    Job(Uuid),
    /// Every recording that has been analysed.
    All,
    /// These recordings (content hashes).
    Files(Vec<String>),
}

/// What [`reclassify`] queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Reclassification {
    pub job_id: Uuid,
    pub tasks: usize,
}

/// SQL that is true when the recording whose hash is the column `$sha` was
/// analysed: its windows are stored, or a model classified it.
macro_rules! analysed {
    ($sha:literal) => {
        concat!(
            "(EXISTS (SELECT 1 FROM window_features w WHERE w.file_sha256 = ",
            $sha,
            ") OR EXISTS (SELECT 1 FROM file_summaries s WHERE s.file_sha256 = ",
            $sha,
            "))"
        )
    };
}

/// Queues a `reclassify` job over the selected recordings. Only recordings
/// that were analysed are included (stored window features, or results of a
/// model whose backbone's windows are not stored, such as the CNN's mel
/// patches); the others have never been analysed, or failed. Recordings with
/// stored features of the promoted model's backbone are classified without
/// decoding; the others are decoded again.
pub async fn reclassify(
    pool: &PgPool,
    publisher: &Publisher,
    queue: &str,
    selection: &Selection,
) -> Result<Reclassification, RegistryError> {
    let (description, files): (String, Vec<(String, String)>) = match selection {
        Selection::Job(job) => {
            let exists: bool =
                sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM jobs WHERE id = $1)")
                    .bind(job)
                    .fetch_one(pool)
                    .await
                    .map_err(query("finding the job"))?;
            if !exists {
                return Err(RegistryError::UnknownJob(*job));
            }
            let files = sqlx::query_as(concat!(
                "SELECT DISTINCT t.file_sha256, t.source_path FROM tasks t
                 WHERE t.job_id = $1 AND ",
                analysed!("t.file_sha256"),
                " ORDER BY t.file_sha256"
            ))
            .bind(job)
            .fetch_all(pool)
            .await
            .map_err(query("listing the job's recordings"))?;
            (format!("reclassify job {job}"), files)
        }
        Selection::All => {
            let files = sqlx::query_as(concat!(
                "SELECT f.sha256, f.original_name FROM audio_files f WHERE ",
                analysed!("f.sha256"),
                " ORDER BY f.sha256"
            ))
            .fetch_all(pool)
            .await
            .map_err(query("listing analysed recordings"))?;
            ("reclassify all recordings".to_string(), files)
        }
        Selection::Files(hashes) => {
            let files = sqlx::query_as(concat!(
                "SELECT f.sha256, f.original_name FROM audio_files f WHERE f.sha256 = ANY($1) AND ",
                analysed!("f.sha256"),
                " ORDER BY f.sha256"
            ))
            .bind(hashes)
            .fetch_all(pool)
            .await
            .map_err(query("listing the chosen recordings"))?;
            (format!("reclassify {} recordings", hashes.len()), files)
        }
    };
    let (job_id, _) = jobs::open_job(pool, JobSource::Reclassify, &description, None).await?;
    for (sha, path) in &files {
        let task = jobs::add_task(pool, job_id, sha, path).await?;
        jobs::enqueue(pool, publisher, queue, job_id, task.id, sha).await?;
    }
    let accepted = i32::try_from(files.len()).unwrap_or(i32::MAX);
    jobs::close_job(
        pool,
        job_id,
        SubmissionCounts {
            accepted,
            ..SubmissionCounts::default()
        },
    )
    .await?;
    Ok(Reclassification {
        job_id,
        tasks: files.len(),
    })
}

/// Queues again every task that is waiting for a model (analysed while none
/// was promoted). Called after a promotion; the worker classifies them from
/// their stored features. Returns how many it queued.
pub async fn requeue_awaiting(
    pool: &PgPool,
    publisher: &Publisher,
    queue: &str,
) -> Result<usize, RegistryError> {
    let waiting: Vec<(Uuid, Uuid, String)> = sqlx::query_as(
        "SELECT id, job_id, file_sha256 FROM tasks WHERE status = 'awaiting_model' ORDER BY created_at",
    )
    .fetch_all(pool)
    .await
    .map_err(query("listing tasks awaiting a model"))?;
    for (task, job, sha) in &waiting {
        publisher
            .publish(queue, &ClassifyTask::new(*task, *job, sha.clone()))
            .await?;
    }
    Ok(waiting.len())
}

/// What [`promote_and_requeue`] did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PromotedAndRequeued {
    #[serde(flatten)]
    pub promotion: Promotion,
    /// Tasks that were waiting for a model, queued again.
    pub requeued: usize,
}

/// [`promote`], then [`requeue_awaiting`]: what every entry point that
/// promotes (the retrainer's gate, its command line, the API) does, so that
/// recordings analysed before any model existed get classified by it.
pub async fn promote_and_requeue(
    pool: &PgPool,
    publisher: &Publisher,
    queues: &birdsong_common::config::QueueConfig,
    version: &str,
    reason: &str,
) -> Result<PromotedAndRequeued, RegistryError> {
    let promotion = promote(pool, publisher, &queues.model_exchange, version, reason).await?;
    let requeued = requeue_awaiting(pool, publisher, &queues.classify).await?;
    Ok(PromotedAndRequeued {
        promotion,
        requeued,
    })
}
