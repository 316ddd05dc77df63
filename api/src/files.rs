//! `GET /v1/files/{sha256}`: one recording, from every table that knows it.

use axum::Json;
use axum::extract::State;
use chrono::{DateTime, Utc};
use serde::Serialize;
use uuid::Uuid;

use crate::AppState;
use crate::extract::ApiPath;
use crate::problem::{ApiResult, Problem};
use crate::results::Detection;

#[derive(Debug, Serialize, sqlx::FromRow)]
pub struct FileRow {
    pub sha256: String,
    pub original_name: String,
    pub size_bytes: i64,
    pub format: Option<String>,
    pub codec: Option<String>,
    pub sample_rate: Option<i32>,
    pub channels: Option<i16>,
    pub duration_s: Option<f64>,
    pub site: Option<String>,
    pub recorded_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Serialize, sqlx::FromRow)]
pub struct Label {
    pub source: String,
    pub species: String,
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Serialize, sqlx::FromRow)]
pub struct Summary {
    pub model_version: String,
    pub species: String,
    pub confidence: f32,
    pub top_k: serde_json::Value,
    pub windows: i32,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Serialize, sqlx::FromRow)]
pub struct Task {
    pub job_id: Uuid,
    pub task_id: Uuid,
    pub source_path: String,
    pub status: String,
    pub error: Option<String>,
    pub model_version: Option<String>,
    pub finished_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Serialize)]
pub struct FileDetails {
    #[serde(flatten)]
    pub file: FileRow,
    pub labels: Vec<Label>,
    /// Recording-level results, newest first (one per model version).
    pub results: Vec<Summary>,
    /// The detections of the newest result's model version.
    pub detections: Vec<Detection>,
    pub tasks: Vec<Task>,
}

pub async fn file(
    State(state): State<AppState>,
    ApiPath(sha): ApiPath<String>,
) -> ApiResult<Json<FileDetails>> {
    if !birdsong_common::store::is_sha256_hex(&sha) {
        return Err(Problem::bad_request(
            "invalid-id",
            "a recording is named by the SHA-256 of its bytes: 64 lower-case hex characters",
        ));
    }
    let pool = &state.pool;
    let file: FileRow = sqlx::query_as(
        "SELECT sha256, original_name, size_bytes, format, codec, sample_rate, channels,
                duration_s, site, recorded_at, created_at
         FROM audio_files WHERE sha256 = $1",
    )
    .bind(&sha)
    .fetch_optional(pool)
    .await?
    .ok_or_else(|| Problem::not_found(format!("there is no recording {sha}")))?;
    let labels = sqlx::query_as(
        "SELECT source, species, updated_at FROM labels WHERE file_sha256 = $1 ORDER BY updated_at DESC",
    )
    .bind(&sha)
    .fetch_all(pool)
    .await?;
    let results: Vec<Summary> = sqlx::query_as(
        "SELECT model_version, species, confidence, top_k, windows, created_at
         FROM file_summaries WHERE file_sha256 = $1 ORDER BY created_at DESC, model_version",
    )
    .bind(&sha)
    .fetch_all(pool)
    .await?;
    let detections = match results.first() {
        Some(latest) => {
            sqlx::query_as(
                "SELECT window_index, start_s, end_s, species, confidence, top_k
                 FROM detections WHERE file_sha256 = $1 AND model_version = $2
                 ORDER BY window_index",
            )
            .bind(&sha)
            .bind(&latest.model_version)
            .fetch_all(pool)
            .await?
        }
        None => Vec::new(),
    };
    let tasks = sqlx::query_as(
        "SELECT job_id, id AS task_id, source_path, status, error, model_version, finished_at
         FROM tasks WHERE file_sha256 = $1 ORDER BY created_at",
    )
    .bind(&sha)
    .fetch_all(pool)
    .await?;
    Ok(Json(FileDetails {
        file,
        labels,
        results,
        detections,
        tasks,
    }))
}
