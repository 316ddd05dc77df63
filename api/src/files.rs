//! `GET /v1/files/{sha256}`: one recording, from every table that knows it.
//!
//! Its results say what was detected (`species` null and `detected` empty:
//! no detection) and its `detections` are the above-threshold windows of the
//! newest result; `?windows=all` adds every window's scores of that result,
//! so that a recording without detections can still be looked into.

use axum::Json;
use axum::extract::State;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::AppState;
use crate::extract::{ApiPath, ApiQuery};
use crate::problem::{ApiResult, Problem};
use crate::results::{DetectedSpecies, Detection, Scored, WindowScore, Windows};
use schemars::JsonSchema;

#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FileQuery {
    /// `detections` (default), or `all`: also `window_scores`, every
    /// window's scores under the newest result's model version.
    pub windows: Option<Windows>,
}

#[derive(Debug, Serialize, sqlx::FromRow, JsonSchema)]
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
    /// When the recording started (UTC), from its header or file name.
    pub recorded_at: Option<DateTime<Utc>>,
    /// Where `recorded_at` came from: `guano`, `audiomoth` or `file_name`.
    pub recorded_at_source: Option<String>,
    /// The recorder clock's offset from UTC, when known.
    pub utc_offset_minutes: Option<i32>,
    /// WGS84 degrees, from a GUANO header.
    pub latitude: Option<f64>,
    pub longitude: Option<f64>,
    /// The recorder's make and model, and its serial.
    pub device: Option<String>,
    pub device_serial: Option<String>,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Serialize, sqlx::FromRow, JsonSchema)]
pub struct Label {
    pub source: String,
    pub species: String,
    pub updated_at: DateTime<Utc>,
}

/// One model version's verdict on the recording.
#[derive(Debug, Serialize, sqlx::FromRow, JsonSchema)]
pub struct Summary {
    pub model_version: String,
    /// The species detected in the most windows; null: no detection.
    pub species: Option<String>,
    /// Its highest window score; null with `species`.
    pub confidence: Option<f32>,
    /// Every species detected, most windows first; empty: no detection.
    #[sqlx(json)]
    pub detected: Vec<DetectedSpecies>,
    /// The highest mean scores, detected or not.
    #[schemars(with = "Vec<Scored>")]
    pub top_k: serde_json::Value,
    pub windows: i32,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Serialize, sqlx::FromRow, JsonSchema)]
pub struct Task {
    pub job_id: Uuid,
    pub task_id: Uuid,
    pub source_path: String,
    pub status: String,
    pub error: Option<String>,
    pub model_version: Option<String>,
    pub finished_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct FileDetails {
    #[serde(flatten)]
    pub file: FileRow,
    pub labels: Vec<Label>,
    /// Recording-level results, newest first (one per model version).
    pub results: Vec<Summary>,
    /// The detections (scores above threshold) of the newest result's model
    /// version, by window then score.
    pub detections: Vec<Detection>,
    /// Every window's scores under the newest result's model version; only
    /// with `windows=all`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub window_scores: Option<Vec<WindowScore>>,
    pub tasks: Vec<Task>,
}

pub async fn file(
    State(state): State<AppState>,
    ApiPath(sha): ApiPath<String>,
    ApiQuery(q): ApiQuery<FileQuery>,
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
                duration_s, site, recorded_at, recorded_at_source, utc_offset_minutes,
                latitude, longitude, device, device_serial, created_at
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
        "SELECT model_version, species, confidence, detected, top_k, windows, created_at
         FROM file_summaries WHERE file_sha256 = $1 ORDER BY created_at DESC, model_version",
    )
    .bind(&sha)
    .fetch_all(pool)
    .await?;
    let latest = results.first().map(|r| r.model_version.as_str());
    let detections = match latest {
        Some(version) => {
            sqlx::query_as(
                "SELECT window_index, start_s, end_s, species, confidence, threshold, top_k
                 FROM detections WHERE file_sha256 = $1 AND model_version = $2
                 ORDER BY window_index, confidence DESC, species",
            )
            .bind(&sha)
            .bind(version)
            .fetch_all(pool)
            .await?
        }
        None => Vec::new(),
    };
    let window_scores = match (q.windows.unwrap_or_default(), latest) {
        (Windows::Detections, _) => None,
        (Windows::All, None) => Some(Vec::new()),
        (Windows::All, Some(version)) => Some(
            sqlx::query_as(
                "SELECT w.window_index, w.start_s, w.end_s, w.species AS top_species,
                        w.confidence AS top_score, w.top_k,
                        coalesce((SELECT jsonb_agg(jsonb_build_object('species', d.species,
                                                                      'confidence', d.confidence)
                                                   ORDER BY d.confidence DESC)
                                  FROM detections d
                                  WHERE d.file_sha256 = w.file_sha256
                                    AND d.model_version = w.model_version
                                    AND d.window_index = w.window_index), '[]') AS detected
                 FROM window_scores w
                 WHERE w.file_sha256 = $1 AND w.model_version = $2
                 ORDER BY w.window_index",
            )
            .bind(&sha)
            .bind(version)
            .fetch_all(pool)
            .await?,
        ),
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
        window_scores,
        tasks,
    }))
}
