//! Job status and paginated results, read from the schema's views.
//!
//! Pages are keyset-paginated on the task id, so a page costs the same at
//! the end of a 100 000-file job as at its start and rows that finish while
//! a client walks the pages are neither skipped nor repeated. The cursor is
//! opaque to clients (hex of a versioned string naming the job and the last
//! task) and is refused if it was made for another job.
//!
//! A score is not a detection. Each file's `species` is the species detected
//! in the most windows (a window score at or above that species' threshold),
//! and is null when nothing was: "no detection" is an answer, and the most
//! common one for a field archive. `detections` are only the above-threshold
//! (window, species) pairs; what the model thought of every window, detected
//! or not, is there on request (`?windows=all`, from `job_window_scores`),
//! so that a recording without detections can still be looked into.

use std::collections::HashMap;

use axum::Json;
use axum::extract::State;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::AppState;
use crate::extract::{ApiPath, ApiQuery};
use crate::problem::{ApiResult, Problem};
use schemars::JsonSchema;

/// Default and largest page size.
const DEFAULT_LIMIT: u32 = 100;
const MAX_LIMIT: u32 = 500;
/// Default and largest page size with every window's scores (`windows=all`):
/// a file of an hour has over a thousand windows, each with its top-k, so
/// pages of files are kept smaller to keep answers of a few megabytes.
const DEFAULT_LIMIT_ALL_WINDOWS: u32 = 20;
const MAX_LIMIT_ALL_WINDOWS: u32 = 100;

/// Parses a job id from the path.
pub fn job_id(raw: &str) -> Result<Uuid, Problem> {
    Uuid::parse_str(raw).map_err(|_| {
        Problem::bad_request("invalid-id", format!("{raw:?} is not a job id (a UUID)"))
    })
}

/// 404 unless the job exists.
pub async fn require_job(state: &AppState, job: Uuid) -> Result<(), Problem> {
    let exists: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM jobs WHERE id = $1)")
        .bind(job)
        .fetch_one(&state.pool)
        .await?;
    if exists {
        Ok(())
    } else {
        Err(Problem::not_found(format!("there is no job {job}")))
    }
}

#[derive(Debug, sqlx::FromRow)]
struct ProgressRow {
    source: String,
    description: String,
    created_at: DateTime<Utc>,
    submitted_at: Option<DateTime<Utc>>,
    tasks: i64,
    queued: i64,
    processing: i64,
    done: i64,
    awaiting_model: i64,
    failed: i64,
    files_duplicate: i32,
    files_rejected: i32,
    audio_seconds_done: f64,
    first_started_at: Option<DateTime<Utc>>,
    last_finished_at: Option<DateTime<Utc>>,
    finished: bool,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct Counts {
    pub tasks: i64,
    pub queued: i64,
    pub processing: i64,
    pub done: i64,
    pub failed: i64,
    pub awaiting_model: i64,
    pub duplicate: i32,
    pub rejected: i32,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct Throughput {
    pub elapsed_s: f64,
    pub files_per_second: f64,
    pub audio_seconds_per_second: f64,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct JobStatus {
    pub job_id: Uuid,
    /// `submitting`, `queued`, `running` or `finished`.
    pub status: &'static str,
    pub source: String,
    pub description: String,
    pub counts: Counts,
    pub audio_seconds_done: f64,
    pub created_at: DateTime<Utc>,
    pub submitted_at: Option<DateTime<Utc>>,
    pub first_started_at: Option<DateTime<Utc>>,
    pub last_finished_at: Option<DateTime<Utc>>,
    pub throughput: Option<Throughput>,
    /// The species the job reports (null: all of the model's).
    pub species_list: Option<Vec<String>>,
    /// The lowest confidence it reports (null: each species' threshold).
    pub min_confidence: Option<f32>,
    pub results_url: String,
    pub export_url: String,
}

pub async fn status(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<JobStatus>> {
    let job = job_id(&id)?;
    let row: Option<ProgressRow> = sqlx::query_as(
        "SELECT source, description, created_at, submitted_at, tasks, queued, processing, done,
                awaiting_model, failed, files_duplicate, files_rejected,
                audio_seconds_done::float8 AS audio_seconds_done,
                first_started_at, last_finished_at, finished
         FROM job_progress WHERE job_id = $1",
    )
    .bind(job)
    .fetch_optional(&state.pool)
    .await?;
    let row = row.ok_or_else(|| Problem::not_found(format!("there is no job {job}")))?;
    let (species_list, min_confidence): (Option<Vec<String>>, Option<f32>) =
        sqlx::query_as("SELECT species_list, min_confidence FROM jobs WHERE id = $1")
            .bind(job)
            .fetch_optional(&state.pool)
            .await?
            .unwrap_or_default();
    let status = if row.submitted_at.is_none() {
        "submitting"
    } else if row.finished {
        "finished"
    } else if row.processing == 0 && row.done + row.failed + row.awaiting_model == 0 {
        "queued"
    } else {
        "running"
    };
    let throughput = match (row.first_started_at, row.last_finished_at) {
        (Some(first), Some(last)) if last > first => {
            let elapsed = (last - first).num_milliseconds() as f64 / 1000.0;
            let finished = (row.done + row.failed + row.awaiting_model) as f64;
            Some(Throughput {
                elapsed_s: elapsed,
                files_per_second: finished / elapsed,
                audio_seconds_per_second: row.audio_seconds_done / elapsed,
            })
        }
        _ => None,
    };
    Ok(Json(JobStatus {
        job_id: job,
        status,
        source: row.source,
        description: row.description,
        counts: Counts {
            tasks: row.tasks,
            queued: row.queued,
            processing: row.processing,
            done: row.done,
            failed: row.failed,
            awaiting_model: row.awaiting_model,
            duplicate: row.files_duplicate,
            rejected: row.files_rejected,
        },
        audio_seconds_done: row.audio_seconds_done,
        created_at: row.created_at,
        submitted_at: row.submitted_at,
        first_started_at: row.first_started_at,
        last_finished_at: row.last_finished_at,
        throughput,
        species_list,
        min_confidence,
        results_url: format!("/v1/jobs/{job}/results"),
        export_url: format!("/v1/jobs/{job}/export?format=csv"),
    }))
}

/// Which windows a result lists besides its detections.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Windows {
    /// Only the detections (the default): small answers, and what most
    /// clients want.
    #[default]
    Detections,
    /// Also `window_scores`: every window's top-k scores and what was
    /// detected in it, detected or not.
    All,
}

/// The query of `GET /v1/jobs/{id}/results`. `species` and
/// `min_confidence` filter detections (and keep only the files that have a
/// matching one); they never filter `window_scores`, which are every window
/// of the files returned.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ResultsQuery {
    /// Files per page: default 100; with `windows=all` at most 100, default 20.
    #[schemars(range(min = 1, max = 500))]
    pub limit: Option<u32>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
    /// Only detections (and files with detections) of this species.
    pub species: Option<String>,
    /// Only detections at or above this confidence.
    #[schemars(range(min = 0.0, max = 1.0))]
    pub min_confidence: Option<f32>,
    /// `detections` (default), or `all`: also every window's scores
    /// (`window_scores`), detected or not, unfiltered.
    pub windows: Option<Windows>,
}

/// Checks a confidence threshold.
pub fn check_confidence(c: Option<f32>) -> Result<(), Problem> {
    match c {
        Some(c) if !(0.0..=1.0).contains(&c) => Err(Problem::bad_request(
            "invalid-query",
            "min_confidence must be between 0 and 1",
        )),
        _ => Ok(()),
    }
}

/// A detection: one window in which one species' score reached that
/// species' threshold. A window can hold several (two species calling at
/// once), and most windows hold none.
#[derive(Debug, Clone, Serialize, sqlx::FromRow, JsonSchema)]
pub struct Detection {
    pub window_index: i32,
    pub start_s: f64,
    pub end_s: f64,
    pub species: String,
    /// The species' score in this window (at least `threshold`).
    pub confidence: f32,
    /// The species' threshold in the model that scored the window.
    pub threshold: f32,
    /// The window's highest scores, detected or not, for context.
    #[schemars(with = "Vec<Scored>")]
    pub top_k: serde_json::Value,
}

/// A species detected in a recording: in how many windows, and its highest
/// score (an element of `file_summaries.detected`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct DetectedSpecies {
    pub species: String,
    pub windows: i64,
    pub max_score: f32,
}

impl From<&birdsong_model::inference::Presence> for DetectedSpecies {
    fn from(p: &birdsong_model::inference::Presence) -> Self {
        Self {
            species: p.species.clone(),
            windows: i64::try_from(p.windows).unwrap_or(i64::MAX),
            max_score: p.max_score.clamp(0.0, 1.0),
        }
    }
}

/// One of the `k` highest scores in a `top_k` list. `top_k` columns are
/// stored as JSON by the worker; this is their documented shape.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Scored {
    pub species: String,
    pub confidence: f32,
}

/// A species detected in one window, with its score.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct WindowDetection {
    pub species: String,
    pub confidence: f32,
}

/// What the model thought of one window, detected or not: the answer to
/// "why was nothing detected here?".
#[derive(Debug, Clone, Serialize, sqlx::FromRow, JsonSchema)]
pub struct WindowScore {
    pub window_index: i32,
    pub start_s: f64,
    pub end_s: f64,
    /// The best-scoring species, whether or not it reached its threshold.
    pub top_species: String,
    pub top_score: f32,
    /// The `k` highest scores, highest first.
    #[schemars(with = "Vec<Scored>")]
    pub top_k: serde_json::Value,
    /// The species detected in the window, highest score first; empty for
    /// no detection.
    #[sqlx(json)]
    pub detected: Vec<WindowDetection>,
}

/// One recording's result: the recording-level call and its detections.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct FileResult {
    /// Absent for a synchronous classification.
    pub task_id: Option<Uuid>,
    pub source_path: String,
    pub file_sha256: String,
    pub status: String,
    pub error: Option<String>,
    /// The species detected in the most windows (then the highest score);
    /// null when nothing was detected (`detected` is then `[]`) or the file
    /// is not classified yet (`detected` is then null too).
    pub species: Option<String>,
    /// `species`' highest window score; null with it.
    pub confidence: Option<f32>,
    /// Every species detected, most windows first: `[]` is "no detection",
    /// null "not classified" (see `status`).
    pub detected: Option<Vec<DetectedSpecies>>,
    /// The highest mean scores over the recording, detected or not: the
    /// best guesses when nothing was detected.
    #[schemars(with = "Option<Vec<Scored>>")]
    pub top_k: Option<serde_json::Value>,
    /// Windows analysed.
    pub windows: Option<i32>,
    pub model_version: Option<String>,
    pub duration_s: Option<f64>,
    /// Above-threshold (window, species) pairs, by window then score.
    pub detections: Vec<Detection>,
    /// Every window's scores; only with `windows=all` (and always from
    /// `POST /v1/classify`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub window_scores: Option<Vec<WindowScore>>,
}

#[derive(Debug, sqlx::FromRow)]
struct FileRow {
    task_id: Uuid,
    source_path: String,
    file_sha256: String,
    status: String,
    error: Option<String>,
    species: Option<String>,
    confidence: Option<f32>,
    #[sqlx(json(nullable))]
    detected: Option<Vec<DetectedSpecies>>,
    top_k: Option<serde_json::Value>,
    windows: Option<i32>,
    model_version: Option<String>,
    duration_s: Option<f64>,
}

#[derive(Debug, sqlx::FromRow)]
struct DetectionRow {
    file_sha256: String,
    #[sqlx(flatten)]
    detection: Detection,
}

#[derive(Debug, sqlx::FromRow)]
struct WindowScoreRow {
    file_sha256: String,
    #[sqlx(flatten)]
    score: WindowScore,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct ResultsPage {
    pub job_id: Uuid,
    pub items: Vec<FileResult>,
    /// Pass as `cursor` for the next page; absent on the last page.
    pub next_cursor: Option<String>,
}

fn encode_cursor(job: Uuid, last: Uuid) -> String {
    hex::encode(format!("r1|{job}|{last}"))
}

fn decode_cursor(job: Uuid, cursor: &str) -> Result<Uuid, Problem> {
    let bad = || {
        Problem::bad_request(
            "invalid-cursor",
            "the cursor is not one this API issued for this job",
        )
    };
    let bytes = hex::decode(cursor).map_err(|_| bad())?;
    let text = String::from_utf8(bytes).map_err(|_| bad())?;
    let mut parts = text.split('|');
    match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some("r1"), Some(j), Some(last), None) if j == job.to_string() => {
            Uuid::parse_str(last).map_err(|_| bad())
        }
        _ => Err(bad()),
    }
}

pub async fn results(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
    ApiQuery(q): ApiQuery<ResultsQuery>,
) -> ApiResult<Json<ResultsPage>> {
    let job = job_id(&id)?;
    check_confidence(q.min_confidence)?;
    let windows = q.windows.unwrap_or_default();
    let limit = check_limit(q.limit, windows)?;
    let after = q
        .cursor
        .as_deref()
        .map(|c| decode_cursor(job, c))
        .transpose()?;
    require_job(&state, job).await?;
    let filtered = q.species.is_some() || q.min_confidence.is_some();
    let rows: Vec<FileRow> = sqlx::query_as(
        "SELECT r.task_id, r.source_path, r.file_sha256, r.status, r.error, r.species,
                r.confidence, r.detected, r.top_k, r.windows, r.model_version, r.duration_s
         FROM job_file_results r
         WHERE r.job_id = $1
           AND ($2::uuid IS NULL OR r.task_id > $2)
           AND (NOT $3 OR EXISTS (
                SELECT 1 FROM detections d
                WHERE d.file_sha256 = r.file_sha256 AND d.model_version = r.model_version
                  AND ($4::text IS NULL OR d.species = $4)
                  AND ($5::real IS NULL OR d.confidence >= $5)))
         ORDER BY r.task_id
         LIMIT $6",
    )
    .bind(job)
    .bind(after)
    .bind(filtered)
    .bind(q.species.as_deref())
    .bind(q.min_confidence)
    .bind(i64::from(limit) + 1)
    .fetch_all(&state.pool)
    .await?;
    let more = rows.len() > limit as usize;
    let rows: Vec<FileRow> = rows.into_iter().take(limit as usize).collect();
    let shas: Vec<String> = rows.iter().map(|r| r.file_sha256.clone()).collect();
    // A job names each recording once (tasks are unique per job and file),
    // so the recording identifies its rows within the job.
    let detections: Vec<DetectionRow> = sqlx::query_as(
        "SELECT file_sha256, window_index, start_s, end_s, species, confidence, threshold, top_k
         FROM job_detections
         WHERE job_id = $1 AND file_sha256 = ANY($2)
           AND ($3::text IS NULL OR species = $3)
           AND ($4::real IS NULL OR confidence >= $4)
         ORDER BY file_sha256, window_index, confidence DESC, species",
    )
    .bind(job)
    .bind(&shas)
    .bind(q.species.as_deref())
    .bind(q.min_confidence)
    .fetch_all(&state.pool)
    .await?;
    let mut by_file: HashMap<String, Vec<Detection>> = HashMap::new();
    for d in detections {
        by_file.entry(d.file_sha256).or_default().push(d.detection);
    }
    let mut scores_by_file: Option<HashMap<String, Vec<WindowScore>>> = match windows {
        Windows::Detections => None,
        Windows::All => {
            let scores: Vec<WindowScoreRow> = sqlx::query_as(
                "SELECT file_sha256, window_index, start_s, end_s, top_species, top_score, top_k,
                        detected
                 FROM job_window_scores
                 WHERE job_id = $1 AND file_sha256 = ANY($2)
                 ORDER BY file_sha256, window_index",
            )
            .bind(job)
            .bind(&shas)
            .fetch_all(&state.pool)
            .await?;
            let mut map: HashMap<String, Vec<WindowScore>> = HashMap::new();
            for w in scores {
                map.entry(w.file_sha256).or_default().push(w.score);
            }
            Some(map)
        }
    };
    let next_cursor = if more {
        rows.last().map(|r| encode_cursor(job, r.task_id))
    } else {
        None
    };
    let items = rows
        .into_iter()
        .map(|r| FileResult {
            detections: by_file.remove(&r.file_sha256).unwrap_or_default(),
            window_scores: scores_by_file
                .as_mut()
                .map(|m| m.remove(&r.file_sha256).unwrap_or_default()),
            task_id: Some(r.task_id),
            source_path: r.source_path,
            file_sha256: r.file_sha256,
            status: r.status,
            error: r.error,
            species: r.species,
            confidence: r.confidence,
            detected: r.detected,
            top_k: r.top_k,
            windows: r.windows,
            model_version: r.model_version,
            duration_s: r.duration_s,
        })
        .collect();
    Ok(Json(ResultsPage {
        job_id: job,
        items,
        next_cursor,
    }))
}

/// The page size asked for, or the default; smaller with every window's
/// scores.
fn check_limit(limit: Option<u32>, windows: Windows) -> Result<u32, Problem> {
    let (default, max) = match windows {
        Windows::Detections => (DEFAULT_LIMIT, MAX_LIMIT),
        Windows::All => (DEFAULT_LIMIT_ALL_WINDOWS, MAX_LIMIT_ALL_WINDOWS),
    };
    let limit = limit.unwrap_or(default);
    if (1..=max).contains(&limit) {
        Ok(limit)
    } else {
        let with = match windows {
            Windows::Detections => "",
            Windows::All => " with windows=all",
        };
        Err(Problem::bad_request(
            "invalid-query",
            format!("limit must be between 1 and {max}{with}"),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_are_bound_to_their_job() {
        let (job, other, task) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
        let c = encode_cursor(job, task);
        assert_eq!(decode_cursor(job, &c).unwrap(), task);
        assert_eq!(decode_cursor(other, &c).unwrap_err().status, 400);
        assert_eq!(decode_cursor(job, "zz").unwrap_err().status, 400);
        assert_eq!(
            decode_cursor(job, &hex::encode("r1|x|y"))
                .unwrap_err()
                .status,
            400
        );
    }

    #[test]
    fn pages_with_every_window_are_smaller() {
        assert_eq!(
            check_limit(None, Windows::Detections).unwrap(),
            DEFAULT_LIMIT
        );
        assert_eq!(
            check_limit(None, Windows::All).unwrap(),
            DEFAULT_LIMIT_ALL_WINDOWS
        );
        assert_eq!(check_limit(Some(500), Windows::Detections).unwrap(), 500);
        assert_eq!(
            check_limit(Some(500), Windows::All).unwrap_err().status,
            400
        );
        assert_eq!(
            check_limit(Some(0), Windows::Detections)
                .unwrap_err()
                .status,
            400
        );
    }
}
