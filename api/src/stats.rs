//! `GET /v1/stats`: the numbers behind the dashboard's charts.
//!
//! Over one job (`?job=`) or over every recording's newest result: how many
//! detections of each species, how confident they are (a histogram and an
//! hourly trend), and at what hour of the day they were made. "When" is
//! the recording's `recorded_at` plus the window's offset when the
//! recording's time is known, and the time of classification otherwise;
//! hours of the day are on the recorder's clock where its UTC offset is
//! known (a header or an ingest time zone said so), UTC otherwise. The
//! aggregation runs in PostgreSQL, so the answer stays
//! small however many detections there are.
//!
//! Only detections count: window scores that reached their species'
//! threshold (the `detections` table). Windows without one are not "low
//! confidence detections" of their best species but no detection at all,
//! so the histogram starts at the lowest threshold, and the recordings
//! without any detection are counted apart (`recordings` minus
//! `recordings_with_detections`) rather than spread over the species.

use axum::Json;
use axum::extract::State;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::AssertSqlSafe;
use uuid::Uuid;

use crate::AppState;
use crate::extract::ApiQuery;
use crate::problem::ApiResult;
use crate::results::{job_id, require_job};
use schemars::JsonSchema;

/// Bins of the confidence histogram (each 0.1 wide).
const BINS: usize = 10;
/// Species listed; the rest are summed into `other_detections`.
const TOP_SPECIES: i64 = 30;
/// Hourly points of the trend, the most recent ones.
const TREND_POINTS: i64 = 72;

#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StatsQuery {
    /// A job id; without it, every recording's newest result.
    pub job: Option<String>,
}

#[derive(Debug, Serialize, sqlx::FromRow, JsonSchema)]
pub struct SpeciesCount {
    pub species: String,
    pub detections: i64,
    pub mean_confidence: f64,
}

#[derive(Debug, Serialize, sqlx::FromRow, JsonSchema)]
pub struct TrendPoint {
    pub hour: DateTime<Utc>,
    pub detections: i64,
    pub mean_confidence: f64,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct Stats {
    pub job_id: Option<Uuid>,
    /// Recordings classified in the scope.
    pub recordings: i64,
    /// Those in which at least one species was detected; the others are
    /// "no detection".
    pub recordings_with_detections: i64,
    pub detections: i64,
    pub species: Vec<SpeciesCount>,
    pub other_detections: i64,
    /// Detections with confidence in `[i/10, (i+1)/10)` (the last bin
    /// includes 1).
    pub confidence_histogram: Vec<i64>,
    pub confidence_trend: Vec<TrendPoint>,
    /// Detections per hour of the day, 0-23, on the recorder's clock (UTC
    /// when its zone is unknown): dawn chorus lands at dawn wherever the
    /// recorder was.
    pub by_hour: Vec<i64>,
}

/// The detections counted, with when they happened. The queries below are
/// built only from this and constants (never from input), hence
/// `AssertSqlSafe`.
fn scope(job: bool) -> &'static str {
    if job {
        "WITH d AS (
            SELECT d.species, d.confidence,
                   coalesce(f.recorded_at + d.start_s * interval '1 second', d.created_at) AS at,
                   coalesce(f.utc_offset_minutes, 0) AS offset_min
            FROM tasks t
            JOIN jobs j ON j.id = t.job_id
            JOIN detections d ON d.file_sha256 = t.file_sha256 AND d.model_version = t.model_version
            JOIN audio_files f ON f.sha256 = t.file_sha256
            WHERE t.job_id = $1
              AND job_reports(j.species_list, j.min_confidence, d.species, d.confidence))"
    } else {
        "WITH d AS (
            SELECT d.species, d.confidence,
                   coalesce(f.recorded_at + d.start_s * interval '1 second', d.created_at) AS at,
                   coalesce(f.utc_offset_minutes, 0) AS offset_min
            FROM latest_file_results r
            JOIN detections d ON d.file_sha256 = r.file_sha256 AND d.model_version = r.model_version
            JOIN audio_files f ON f.sha256 = r.file_sha256
            WHERE $1::uuid IS NULL)"
    }
}

pub async fn stats(
    State(state): State<AppState>,
    ApiQuery(q): ApiQuery<StatsQuery>,
) -> ApiResult<Json<Stats>> {
    let job = match q.job.as_deref() {
        Some(raw) => {
            let id = job_id(raw)?;
            require_job(&state, id).await?;
            Some(id)
        }
        None => None,
    };
    let with = scope(job.is_some());
    let pool = &state.pool;
    let (recordings, recordings_with_detections): (i64, i64) = sqlx::query_as(if job.is_some() {
        "SELECT count(*) FILTER (WHERE detected IS NOT NULL),
                count(*) FILTER (WHERE jsonb_array_length(detected) > 0)
         FROM job_file_results WHERE job_id = $1"
    } else {
        "SELECT count(*), count(*) FILTER (WHERE jsonb_array_length(detected) > 0)
         FROM latest_file_results WHERE $1::uuid IS NULL"
    })
    .bind(job)
    .fetch_one(pool)
    .await?;
    let species: Vec<SpeciesCount> = sqlx::query_as(AssertSqlSafe(format!(
        "{with} SELECT species, count(*) AS detections, avg(confidence)::float8 AS mean_confidence
         FROM d GROUP BY species ORDER BY detections DESC, species LIMIT $2"
    )))
    .bind(job)
    .bind(TOP_SPECIES)
    .fetch_all(pool)
    .await?;
    let bins: Vec<(i32, i64)> = sqlx::query_as(AssertSqlSafe(format!(
        "{with} SELECT least(width_bucket(confidence::float8, 0, 1, {BINS}), {BINS}) AS bin,
                       count(*)
         FROM d GROUP BY 1"
    )))
    .bind(job)
    .fetch_all(pool)
    .await?;
    let mut confidence_histogram = vec![0i64; BINS];
    for (bin, n) in &bins {
        if let Some(slot) = usize::try_from(*bin - 1)
            .ok()
            .and_then(|i| confidence_histogram.get_mut(i))
        {
            *slot += n;
        }
    }
    let detections: i64 = confidence_histogram.iter().sum();
    let listed: i64 = species.iter().map(|s| s.detections).sum();
    let mut confidence_trend: Vec<TrendPoint> = sqlx::query_as(AssertSqlSafe(format!(
        "{with} SELECT date_trunc('hour', at) AS hour, count(*) AS detections,
                       avg(confidence)::float8 AS mean_confidence
         FROM d GROUP BY 1 ORDER BY 1 DESC LIMIT $2"
    )))
    .bind(job)
    .bind(TREND_POINTS)
    .fetch_all(pool)
    .await?;
    confidence_trend.reverse();
    let hours: Vec<(i32, i64)> = sqlx::query_as(AssertSqlSafe(format!(
        "{with} SELECT extract(hour FROM (at AT TIME ZONE 'UTC')
                                  + offset_min * interval '1 minute')::int AS hour, count(*)
         FROM d GROUP BY 1"
    )))
    .bind(job)
    .fetch_all(pool)
    .await?;
    let mut by_hour = vec![0i64; 24];
    for (h, n) in hours {
        if let Some(slot) = usize::try_from(h).ok().and_then(|i| by_hour.get_mut(i)) {
            *slot += n;
        }
    }
    Ok(Json(Stats {
        job_id: job,
        recordings,
        recordings_with_detections,
        detections,
        other_detections: detections - listed,
        species,
        confidence_histogram,
        confidence_trend,
        by_hour,
    }))
}
