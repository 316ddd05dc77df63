//! Labels, species, retrain requests and model versions.
//!
//! Thin on purpose: every state change goes through
//! `birdsong_common::jobs` and the `birdsong_registry` library, the same
//! functions the producer and the retrainer use, so the API cannot promote, label or queue differently
//! from them.

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use birdsong_common::jobs;
use birdsong_common::messages::RetrainTrigger;
use birdsong_registry::{self as registry, RegistryError, Selection};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::AppState;
use crate::extract::{ApiJson, ApiPath};
use crate::problem::{ApiResult, Problem};
use crate::submit::LABEL_SOURCE;
use schemars::JsonSchema;

fn registry_problem(doing: &str, e: RegistryError) -> Problem {
    match e {
        RegistryError::UnknownVersion(v) => {
            Problem::not_found(format!("there is no model version {v:?}"))
        }
        RegistryError::UnknownJob(j) => Problem::not_found(format!("there is no job {j}")),
        e @ RegistryError::NulInParams => Problem::unprocessable("invalid-params", e.to_string()),
        RegistryError::Rejected { version, reason } => Problem::new(
            StatusCode::CONFLICT,
            "model-rejected",
            format!("model version {version:?} was rejected ({reason}) and cannot be promoted"),
        ),
        RegistryError::Queue(e) => {
            tracing::error!(error = %e, "broker unavailable while {doing}");
            Problem::unavailable(
                "broker",
                "the message broker could not be reached; try again later",
            )
        }
        other => Problem::internal(doing, other),
    }
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LabelsRequest {
    pub labels: Vec<LabelItem>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LabelItem {
    pub sha256: String,
    pub species: String,
}

/// The answer to a labelling request.
#[derive(Debug, Serialize, JsonSchema)]
pub struct Labelled {
    /// Labels recorded.
    pub labelled: usize,
    /// The source they are recorded under (`api`).
    pub source: &'static str,
}

pub async fn labels(
    State(state): State<AppState>,
    ApiJson(body): ApiJson<LabelsRequest>,
) -> ApiResult<Json<Labelled>> {
    if body.labels.is_empty() {
        return Err(Problem::unprocessable("no-labels", "labels is empty"));
    }
    // Check everything first: a request is applied whole or not at all.
    for item in &body.labels {
        if !birdsong_common::store::is_sha256_hex(&item.sha256) {
            return Err(Problem::unprocessable(
                "invalid-id",
                format!(
                    "{:?} is not a SHA-256 (64 lower-case hex characters)",
                    item.sha256
                ),
            ));
        }
        let n = item.species.trim().chars().count();
        if n == 0 || n > 200 || item.species.contains('\0') {
            return Err(Problem::unprocessable(
                "invalid-labels",
                "a species name is 1 to 200 characters",
            ));
        }
    }
    let hashes: Vec<&str> = body.labels.iter().map(|l| l.sha256.as_str()).collect();
    let known: Vec<String> =
        sqlx::query_scalar("SELECT sha256 FROM audio_files WHERE sha256 = ANY($1)")
            .bind(&hashes)
            .fetch_all(&state.pool)
            .await?;
    if let Some(missing) = hashes.iter().find(|h| !known.iter().any(|k| k == *h)) {
        return Err(Problem::not_found(format!(
            "there is no recording {missing}"
        )));
    }
    for item in &body.labels {
        jobs::label(&state.pool, &item.sha256, item.species.trim(), LABEL_SOURCE)
            .await
            .map_err(|e| Problem::internal("recording a label", e))?;
    }
    Ok(Json(Labelled {
        labelled: body.labels.len(),
        source: LABEL_SOURCE,
    }))
}

#[derive(Debug, Serialize, sqlx::FromRow, JsonSchema)]
pub struct Species {
    pub name: String,
    pub scientific_name: Option<String>,
    pub labelled_recordings: i64,
    pub in_promoted_model: bool,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct SpeciesList {
    pub species: Vec<Species>,
}

pub async fn species(State(state): State<AppState>) -> ApiResult<Json<SpeciesList>> {
    let rows: Vec<Species> = sqlx::query_as(
        "WITH promoted AS (
             SELECT jsonb_array_elements_text(classes) AS name FROM promoted_model)
         SELECT n.name, s.scientific_name,
                (SELECT count(*) FROM current_labels l WHERE l.species = n.name) AS labelled_recordings,
                EXISTS (SELECT 1 FROM promoted p WHERE p.name = n.name) AS in_promoted_model
         FROM (SELECT name FROM species UNION SELECT name FROM promoted) n
         LEFT JOIN species s ON s.name = n.name
         ORDER BY n.name",
    )
    .fetch_all(&state.pool)
    .await?;
    Ok(Json(SpeciesList { species: rows }))
}

#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RetrainBody {
    /// Training parameters (see `birdsong-retrainer request --help`).
    #[serde(default)]
    #[schemars(with = "Option<std::collections::BTreeMap<String, serde_json::Value>>")]
    pub params: serde_json::Value,
    /// Promote the new model even if it scores below the promoted one.
    #[serde(default)]
    pub force_promote: bool,
}

/// An optional JSON body: empty means the defaults.
fn optional_json<T: Default + serde::de::DeserializeOwned>(body: &Bytes) -> Result<T, Problem> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(body).map_err(|e| Problem::bad_request("invalid-json", e.to_string()))
}

/// The answer to a retrain request.
#[derive(Debug, Serialize, JsonSchema)]
pub struct RetrainAccepted {
    pub run_id: Uuid,
    /// Where the run's progress and outcome can be followed.
    pub status_url: String,
}

pub async fn retrain(State(state): State<AppState>, body: Bytes) -> ApiResult<Response> {
    let body: RetrainBody = optional_json(&body)?;
    if !(body.params.is_null() || body.params.is_object()) {
        return Err(Problem::unprocessable(
            "invalid-params",
            "params must be a JSON object",
        ));
    }
    let run = registry::request_retrain(
        &state.pool,
        &state.publisher,
        &state.config.queues.retrain,
        RetrainTrigger::Api,
        body.params,
        body.force_promote,
    )
    .await
    .map_err(|e| registry_problem("requesting a retrain", e))?;
    let url = format!("/v1/retrain/{run}");
    Ok((
        StatusCode::ACCEPTED,
        [(axum::http::header::LOCATION, url.clone())],
        Json(RetrainAccepted {
            run_id: run,
            status_url: url,
        }),
    )
        .into_response())
}

#[derive(Debug, Serialize, sqlx::FromRow, JsonSchema)]
pub struct RetrainRun {
    pub id: Uuid,
    pub trigger: String,
    pub params: serde_json::Value,
    pub force_promote: bool,
    pub status: String,
    pub progress: Option<serde_json::Value>,
    pub data_summary: Option<serde_json::Value>,
    pub metrics: Option<serde_json::Value>,
    pub model_version: Option<String>,
    pub promoted: Option<bool>,
    pub error: Option<String>,
    pub requested_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
}

pub async fn retrain_status(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<RetrainRun>> {
    let id = Uuid::parse_str(&id).map_err(|_| {
        Problem::bad_request("invalid-id", format!("{id:?} is not a retrain id (a UUID)"))
    })?;
    let run: Option<RetrainRun> = sqlx::query_as(
        "SELECT id, trigger, params, force_promote, status, progress, data_summary, metrics,
                model_version, promoted, error, requested_at, started_at, finished_at
         FROM retrain_runs WHERE id = $1",
    )
    .bind(id)
    .fetch_optional(&state.pool)
    .await?;
    run.map(Json)
        .ok_or_else(|| Problem::not_found(format!("there is no retrain request {id}")))
}

#[derive(Debug, Serialize, sqlx::FromRow, JsonSchema)]
pub struct ModelVersion {
    pub version: String,
    pub status: String,
    pub status_reason: Option<String>,
    pub architecture: String,
    pub feature_version: String,
    pub classes: serde_json::Value,
    pub metrics: serde_json::Value,
    pub retrain_run_id: Option<Uuid>,
    pub created_at: DateTime<Utc>,
    pub promoted_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct ModelList {
    /// The version workers classify with; null before the first promotion.
    pub promoted: Option<String>,
    /// Newest first.
    pub models: Vec<ModelVersion>,
}

pub async fn models(State(state): State<AppState>) -> ApiResult<Json<ModelList>> {
    let rows: Vec<ModelVersion> = sqlx::query_as(
        "SELECT version, status, status_reason, architecture, feature_version, classes, metrics,
                retrain_run_id, created_at, promoted_at
         FROM model_versions ORDER BY created_at DESC, version",
    )
    .fetch_all(&state.pool)
    .await?;
    let promoted = rows
        .iter()
        .find(|m| m.status == "promoted")
        .map(|m| m.version.clone());
    Ok(Json(ModelList {
        promoted,
        models: rows,
    }))
}

#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PromoteBody {
    pub reason: Option<String>,
}

/// The answer to a promotion.
#[derive(Debug, Serialize, JsonSchema)]
pub struct Promoted {
    pub version: String,
    /// The version promoted before, now retired.
    pub previous: Option<String>,
    /// False when the version was already the promoted one.
    pub changed: bool,
    /// Tasks that were waiting for a model, queued again.
    pub requeued_tasks: usize,
}

pub async fn promote(
    State(state): State<AppState>,
    ApiPath(version): ApiPath<String>,
    body: Bytes,
) -> ApiResult<Json<Promoted>> {
    let body: PromoteBody = optional_json(&body)?;
    let reason = body
        .reason
        .unwrap_or_else(|| "promoted through the API".to_string());
    let done = registry::promote_and_requeue(
        &state.pool,
        &state.publisher,
        &state.config.queues,
        &version,
        &reason,
    )
    .await
    .map_err(|e| registry_problem("promoting a model", e))?;
    let (promotion, requeued) = (done.promotion, done.requeued);
    Ok(Json(Promoted {
        version: promotion.version,
        previous: promotion.previous,
        changed: promotion.changed,
        requeued_tasks: requeued,
    }))
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ReclassifyBody {
    pub job_id: Option<Uuid>,
    pub files: Option<Vec<String>>,
    #[serde(default)]
    pub all: bool,
}

/// The answer to a reclassification request: the job that carries it.
#[derive(Debug, Serialize, JsonSchema)]
pub struct Reclassifying {
    pub job_id: Uuid,
    /// Tasks queued.
    pub tasks: usize,
    pub status_url: String,
}

pub async fn reclassify(
    State(state): State<AppState>,
    ApiJson(body): ApiJson<ReclassifyBody>,
) -> ApiResult<Response> {
    let selection = match (body.job_id, body.files, body.all) {
        (Some(job), None, false) => Selection::Job(job),
        (None, Some(files), false) if !files.is_empty() => {
            if let Some(bad) = files
                .iter()
                .find(|f| !birdsong_common::store::is_sha256_hex(f))
            {
                return Err(Problem::unprocessable(
                    "invalid-id",
                    format!("{bad:?} is not a SHA-256"),
                ));
            }
            Selection::Files(files)
        }
        (None, None, true) => Selection::All,
        _ => {
            return Err(Problem::unprocessable(
                "invalid-selection",
                "give exactly one of job_id, a non-empty files list, or all: true",
            ));
        }
    };
    let done = registry::reclassify(
        &state.pool,
        &state.publisher,
        &state.config.queues.classify,
        &selection,
    )
    .await
    .map_err(|e| registry_problem("queueing a reclassification", e))?;
    Ok((
        StatusCode::ACCEPTED,
        Json(Reclassifying {
            job_id: done.job_id,
            tasks: done.tasks,
            status_url: format!("/v1/jobs/{}", done.job_id),
        }),
    )
        .into_response())
}
