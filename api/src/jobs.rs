//! `GET /v1/jobs`: the jobs, newest first, with their counts.
//!
//! The dashboard's job list, and the way to find a job whose id was not
//! kept. Keyset-paginated on `(created_at, id)` like the results, so a page
//! costs the same however many jobs exist and a job created while a client
//! walks the pages does not shift the later pages.

use axum::Json;
use axum::extract::State;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::AppState;
use crate::extract::ApiQuery;
use crate::problem::{ApiResult, Problem};
use schemars::JsonSchema;

const DEFAULT_LIMIT: u32 = 20;
const MAX_LIMIT: u32 = 200;
const CURSOR_VERSION: &str = "j1";

#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// Jobs per page (default 20).
    #[schemars(range(min = 1, max = 200))]
    pub limit: Option<u32>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

/// One job in the list.
#[derive(Debug, Serialize, sqlx::FromRow, JsonSchema)]
pub struct JobSummary {
    pub job_id: Uuid,
    pub source: String,
    pub description: String,
    pub created_at: DateTime<Utc>,
    pub submitted_at: Option<DateTime<Utc>>,
    pub tasks: i64,
    pub queued: i64,
    pub processing: i64,
    pub done: i64,
    pub awaiting_model: i64,
    pub failed: i64,
    pub duplicate: i32,
    pub rejected: i32,
    pub audio_seconds_done: f64,
    pub last_finished_at: Option<DateTime<Utc>>,
    /// `submitting`, `queued`, `running` or `finished`, as `GET /v1/jobs/{id}`.
    #[sqlx(skip)]
    pub status: &'static str,
    #[serde(skip)]
    pub finished: bool,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct JobList {
    pub jobs: Vec<JobSummary>,
    pub next_cursor: Option<String>,
}

fn encode_cursor(at: DateTime<Utc>, id: Uuid) -> String {
    hex::encode(format!("{CURSOR_VERSION}|{}|{id}", at.timestamp_micros()))
}

fn decode_cursor(raw: &str) -> Option<(DateTime<Utc>, Uuid)> {
    let text = String::from_utf8(hex::decode(raw).ok()?).ok()?;
    let mut parts = text.split('|');
    if parts.next()? != CURSOR_VERSION {
        return None;
    }
    let micros: i64 = parts.next()?.parse().ok()?;
    let id = Uuid::parse_str(parts.next()?).ok()?;
    if parts.next().is_some() {
        return None;
    }
    Some((DateTime::from_timestamp_micros(micros)?, id))
}

pub async fn list(
    State(state): State<AppState>,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> ApiResult<Json<JobList>> {
    let limit = q.limit.unwrap_or(DEFAULT_LIMIT);
    if !(1..=MAX_LIMIT).contains(&limit) {
        return Err(Problem::bad_request(
            "invalid-query",
            format!("limit must be between 1 and {MAX_LIMIT}"),
        ));
    }
    let after = match q.cursor.as_deref() {
        None => None,
        Some(raw) => Some(decode_cursor(raw).ok_or_else(|| {
            Problem::bad_request("invalid-cursor", "the cursor is not one this API issued")
        })?),
    };
    // created_at is stored with microseconds, so the cursor compares exactly.
    let mut jobs: Vec<JobSummary> = sqlx::query_as(
        "SELECT job_id, source, description, created_at, submitted_at, tasks, queued, processing,
                done, awaiting_model, failed, files_duplicate AS duplicate,
                files_rejected AS rejected, audio_seconds_done::float8 AS audio_seconds_done,
                last_finished_at, finished
         FROM job_progress
         WHERE $1::timestamptz IS NULL OR (created_at, job_id) < ($1, $2)
         ORDER BY created_at DESC, job_id DESC
         LIMIT $3",
    )
    .bind(after.map(|a| a.0))
    .bind(after.map(|a| a.1))
    .bind(i64::from(limit) + 1)
    .fetch_all(&state.pool)
    .await?;
    let next_cursor = if jobs.len() > limit as usize {
        jobs.truncate(limit as usize);
        jobs.last().map(|j| encode_cursor(j.created_at, j.job_id))
    } else {
        None
    };
    for j in &mut jobs {
        j.status = if j.submitted_at.is_none() {
            "submitting"
        } else if j.finished {
            "finished"
        } else if j.processing == 0 && j.done + j.failed + j.awaiting_model == 0 {
            "queued"
        } else {
            "running"
        };
    }
    Ok(Json(JobList { jobs, next_cursor }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursor_round_trips_and_refuses_garbage() {
        let at = DateTime::from_timestamp_micros(1_700_000_000_123_456).unwrap();
        let id = Uuid::new_v4();
        assert_eq!(decode_cursor(&encode_cursor(at, id)), Some((at, id)));
        assert_eq!(decode_cursor("zz"), None);
        assert_eq!(decode_cursor(&hex::encode("r1|1|x")), None);
        assert_eq!(decode_cursor(&hex::encode(format!("j1|1|{id}|x"))), None);
    }
}
