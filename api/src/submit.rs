//! `POST /v1/jobs`: uploads become a job.
//!
//! Everything that can refuse a request is checked before the job row
//! exists: the body and per-file size limits and the number of files while
//! the parts stream to disk, the labels' shape, and that every part that is
//! not an archive decodes as audio. Only then is the job opened and the
//! parts handed to the ingest library's session (archive walking with its safety
//! checks, content hashing, probing, upload, rows, confirmed messages), so a
//! file is judged by the same rules whichever way it arrives. Entries inside
//! an archive that turn out not to be audio are recorded as rejections of
//! the job, as for the producer; a failure after the job was opened
//! deletes it, so a refused request leaves nothing behind.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::Json;
use axum::extract::{FromRequest, Multipart, Request, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use birdsong_common::jobs::{self, JobSource, Reporting, SubmissionCounts};
use birdsong_common::recorded::{TimeZone, TimeZoneError};
use birdsong_ingest::session;
use birdsong_ingest::source::{Entry, Event, Limits, Payload, Root, Sniffed, sniff};
use birdsong_ingest::upload::Context;
use birdsong_ingest::{DEFAULT_MAX_EXPANSION_RATIO, DEFAULT_MEMORY_ENTRY_BYTES, Labeler, Stats};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use uuid::Uuid;

use crate::AppState;
use crate::extract::ApiJson;
use crate::problem::{ApiResult, Problem};
use crate::spool::{FilePart, Spool, Spooled, multipart_problem};
use schemars::JsonSchema;

/// Label source recorded for labels sent through the API.
pub const LABEL_SOURCE: &str = "api";

/// Longest species name the schema accepts.
const MAX_SPECIES_CHARS: usize = 200;

/// Recordings uploaded and submitted at once within one request.
const CONCURRENCY: usize = 4;

/// A JSON submission: objects already in the bucket.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ObjectSubmission {
    pub objects: Vec<ObjectRef>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    pub site: Option<String>,
    /// The zone the recorders kept time in (`+01:00`, `Europe/Berlin`), for
    /// start times that name none; see [`TimeZone`].
    pub time_zone: Option<String>,
    pub description: Option<String>,
    /// Report only these species (names as the model's classes).
    #[schemars(length(min = 1, max = 10000))]
    pub species_list: Option<Vec<String>>,
    /// Report only detections at or above this confidence.
    #[schemars(range(min = 0.0, max = 1.0))]
    pub min_confidence: Option<f32>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ObjectRef {
    /// The object's key in the bucket.
    #[schemars(length(min = 1, max = 1024))]
    pub key: String,
    /// The name the recording gets in the job (default: the key's last
    /// component).
    pub name: Option<String>,
}

/// The multipart form of `POST /v1/jobs`, for the OpenAPI document:
/// [`read_multipart`] reads it part by part, taking every part with a file
/// name as a recording or archive, whatever the part is called.
#[derive(JsonSchema)]
pub struct UploadForm {
    /// Recordings (WAV, FLAC, MP3, OGG, ...) or zip, tar and tar.gz archives
    /// of them; one part each.
    pub file: Vec<FilePart>,
    /// A JSON object of file name (as in the job) to species.
    pub labels: Option<String>,
    /// The site the recordings come from.
    pub site: Option<String>,
    /// The time zone the recorders' clocks kept, for start times read from
    /// file names: an offset (`+01:00`) or an IANA name (`Europe/Berlin`).
    pub time_zone: Option<String>,
    /// A description of the job, shown in the job list.
    pub description: Option<String>,
    /// Report only these species: one per line, as in BirdNET-Analyzer's
    /// species list files (`Genus species_Common name` lines name the
    /// common name); names as the model's classes.
    pub species_list: Option<String>,
    /// Report only detections at or above this confidence (0 to 1).
    pub min_confidence: Option<String>,
}

/// The text parts of a submission.
#[derive(Debug, Default)]
struct Form {
    labels: BTreeMap<String, String>,
    site: Option<String>,
    time_zone: Option<String>,
    description: Option<String>,
    reporting: Reporting,
}

/// An entry that did not become a task.
#[derive(Debug, Serialize, JsonSchema)]
pub struct Rejection {
    pub path: String,
    pub reason: String,
}

/// The 202 answer.
#[derive(Debug, Serialize, JsonSchema)]
pub struct Accepted {
    pub job_id: Uuid,
    pub status_url: String,
    pub results_url: String,
    /// New tasks queued.
    pub accepted: u64,
    /// Entries with the same content as another entry of this job.
    pub duplicate: u64,
    pub rejected: Vec<Rejection>,
    pub labelled: u64,
    /// Label names that matched no recording of the job.
    pub unmatched_labels: Vec<String>,
}

pub async fn submit(State(state): State<AppState>, req: Request) -> ApiResult<Response> {
    let content_type = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase();
    let mut spool = Spool::new(state.config.max_file_bytes, state.config.api.max_files)?;
    let mut form = if content_type.starts_with("multipart/form-data") {
        let multipart = Multipart::from_request(req, &state)
            .await
            .map_err(|e| Problem::bad_request("invalid-multipart", e.body_text()))?;
        read_multipart(multipart, &mut spool).await?
    } else if content_type.starts_with("application/json") {
        let ApiJson(body) = ApiJson::<ObjectSubmission>::from_request(req, &state).await?;
        for object in &body.objects {
            spool
                .add_object(&state.store, &object.key, object.name.as_deref())
                .await?;
        }
        Form {
            labels: body.labels,
            site: body.site,
            time_zone: body.time_zone,
            description: body.description,
            reporting: Reporting {
                species_list: body.species_list,
                min_confidence: body.min_confidence,
            },
        }
    } else {
        return Err(Problem::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported-media-type",
            "send multipart/form-data with file parts, or application/json naming objects",
        ));
    };
    if spool.files.is_empty() {
        return Err(Problem::unprocessable(
            "no-files",
            "the request contains no files",
        ));
    }
    check_labels(&form.labels)?;
    let reporting = std::mem::take(&mut form.reporting)
        .checked()
        .map_err(|e| Problem::unprocessable("invalid-reporting", e.to_string()))?;
    let time_zone = parse_time_zone(&state, form.time_zone.as_deref()).await?;
    check_parts(&spool).await?;

    let description = form
        .description
        .clone()
        .unwrap_or_else(|| {
            let names: Vec<&str> = spool.files.iter().map(|f| f.name.as_str()).collect();
            format!("api upload: {}", names.join(", "))
        })
        .chars()
        .take(1000)
        .collect::<String>();
    let (job, _) = jobs::open_job(&state.pool, JobSource::Api, &description, None)
        .await
        .map_err(|e| Problem::internal("opening the job", e))?;
    // Before any task exists, so that no reader sees the job unfiltered.
    if reporting != Reporting::default() {
        jobs::set_reporting(&state.pool, job, &reporting)
            .await
            .map_err(|e| Problem::internal("setting what the job reports", e))?;
    }
    match run(&state, job, spool, &form, time_zone.as_ref()).await {
        Ok(accepted) => {
            tracing::info!(%job, accepted = accepted.accepted, rejected = accepted.rejected.len(), "job submitted");
            let location = accepted.status_url.clone();
            let mut response = (StatusCode::ACCEPTED, Json(accepted)).into_response();
            if let Ok(v) = location.parse() {
                response.headers_mut().insert(header::LOCATION, v);
            }
            Ok(response)
        }
        Err(problem) => {
            // Leave no partial job behind; messages already published name
            // tasks that no longer exist, which workers drop.
            if let Err(e) = sqlx::query("DELETE FROM jobs WHERE id = $1")
                .bind(job)
                .execute(&state.pool)
                .await
            {
                tracing::error!(%job, error = %e, "could not delete a failed submission's job");
            }
            Err(problem)
        }
    }
}

async fn read_multipart(mut multipart: Multipart, spool: &mut Spool) -> Result<Form, Problem> {
    let mut form = Form::default();
    while let Some(mut field) = multipart.next_field().await.map_err(multipart_problem)? {
        let name = field.name().unwrap_or("").to_string();
        if let Some(file_name) = field.file_name().map(str::to_string) {
            spool.add_field(&mut field, &file_name).await?;
            continue;
        }
        let text = field.text().await.map_err(multipart_problem)?;
        match name.as_str() {
            "labels" => {
                form.labels = serde_json::from_str(&text).map_err(|e| {
                    Problem::unprocessable(
                        "invalid-labels",
                        format!(
                            "the labels part must be a JSON object of file name to species: {e}"
                        ),
                    )
                })?;
            }
            "site" => form.site = Some(text),
            "time_zone" => form.time_zone = Some(text),
            "species_list" => form.reporting.species_list = Some(Reporting::parse_list(&text)),
            "min_confidence" => {
                let c = text.trim().parse::<f32>().map_err(|_| {
                    Problem::unprocessable(
                        "invalid-reporting",
                        format!("min_confidence must be a number between 0 and 1, not {text:?}"),
                    )
                })?;
                form.reporting.min_confidence = Some(c);
            }
            "description" => form.description = Some(text),
            other => {
                return Err(Problem::unprocessable(
                    "unknown-field",
                    format!(
                        "unknown form field {other:?} (expected file parts, labels, site, time_zone, description, species_list, min_confidence)"
                    ),
                ));
            }
        }
    }
    Ok(form)
}

fn check_labels(labels: &BTreeMap<String, String>) -> Result<(), Problem> {
    for (name, species) in labels {
        let n = species.trim().chars().count();
        if n == 0 || n > MAX_SPECIES_CHARS || species.contains('\0') {
            return Err(Problem::unprocessable(
                "invalid-labels",
                format!("the species for {name:?} must be 1 to {MAX_SPECIES_CHARS} characters"),
            ));
        }
    }
    Ok(())
}

/// The `time_zone` part or field: an offset, or an IANA name PostgreSQL knows.
/// Empty means none (a form's blank field).
async fn parse_time_zone(
    state: &AppState,
    text: Option<&str>,
) -> Result<Option<TimeZone>, Problem> {
    let Some(text) = text.map(str::trim).filter(|t| !t.is_empty()) else {
        return Ok(None);
    };
    let invalid = |detail: String| Problem::unprocessable("invalid-time-zone", detail);
    let zone: TimeZone = text
        .parse()
        .map_err(|e: TimeZoneError| invalid(e.to_string()))?;
    let known = jobs::known_time_zone(&state.pool, &zone)
        .await
        .map_err(|e| Problem::internal("looking up the time zone", e))?;
    if !known {
        return Err(invalid(format!(
            "unknown time zone \"{zone}\": use an offset such as +01:00, or an IANA name such as Europe/Berlin"
        )));
    }
    Ok(Some(zone))
}

/// Every part must be an archive or decodable audio.
async fn check_parts(spool: &Spool) -> Result<(), Problem> {
    for part in &spool.files {
        if part.size == 0 {
            return Err(Problem::unprocessable(
                "empty-file",
                format!("{:?} is empty", part.name),
            ));
        }
        if sniff(&part.head) != Sniffed::Other {
            continue;
        }
        let path = part.file.path().to_path_buf();
        let probed = tokio::task::spawn_blocking(move || birdsong_audio::probe(&path))
            .await
            .map_err(|e| Problem::internal("probing a file", e))?;
        if let Err(e) = probed {
            return Err(Problem::unprocessable(
                "not-audio",
                format!("{:?} is not audio this service can decode: {e}", part.name),
            ));
        }
    }
    Ok(())
}

/// Hands the spooled parts to an ingest session, then labels and closes
/// the job.
async fn run(
    state: &AppState,
    job: Uuid,
    spool: Spool,
    form: &Form,
    time_zone: Option<&TimeZone>,
) -> Result<Accepted, Problem> {
    let stats = Stats::default();
    let labeler = Labeler::none();
    let ctx = Context {
        services: &state.services,
        job,
        labeler: &labeler,
        site: form.site.as_deref(),
        time_zone,
        stats: &stats,
    };
    let (dir, files) = spool.into_parts();
    let (archives, audio): (Vec<Spooled>, Vec<Spooled>) = files
        .into_iter()
        .partition(|f| sniff(&f.head) != Sniffed::Other);
    // Inside an archive the walk names entries `<temporary path>!/<entry>`;
    // the job shows `<uploaded name>!/<entry>`.
    let renames: Vec<(String, String)> = archives
        .iter()
        .map(|a| (a.file.path().to_string_lossy().into_owned(), a.name.clone()))
        .collect();
    let limits = Limits {
        max_file_bytes: state.config.max_file_bytes,
        max_expansion_ratio: DEFAULT_MAX_EXPANSION_RATIO,
        max_archive_bytes: None,
        memory_entry_bytes: DEFAULT_MEMORY_ENTRY_BYTES,
    };
    let (tx, rx) = mpsc::channel::<Event>(CONCURRENCY);
    // The directory outlives both the walk and the uploads (`dir` is
    // dropped at the end of this function).
    let temp_dir = dir.path().to_path_buf();
    let feed = async move {
        for part in audio {
            let entry = Entry {
                path: part.name.clone(),
                relative: part.name,
                folder: None,
                size: part.size,
                payload: Payload::Spilled {
                    file: part.file,
                    sha256: part.sha256,
                },
                credit: 0,
            };
            if tx.send(Event::Entry(entry)).await.is_err() {
                return Ok(());
            }
        }
        if archives.is_empty() {
            return Ok(());
        }
        let roots: Vec<Root> = archives
            .iter()
            .map(|a| Root {
                path: a.file.path().to_path_buf(),
                is_dir: false,
            })
            .collect();
        // `archives` (and so the files) live until the walk is over.
        session::walk(
            roots,
            limits,
            Arc::default(),
            temp_dir,
            Arc::default(),
            tx,
            archives,
        )
        .await
    };
    let renamed = |path: String| rename(path, &renames);
    let handled = session::consume(&ctx, rx, CONCURRENCY, &renamed);
    let (fed, handled) = tokio::join!(feed, handled);
    let tally = handled.map_err(|e| {
        Problem::unavailable(
            "submission-failed",
            format!("the recording could not be stored or queued: {e}"),
        )
    })?;
    fed.map_err(|e| Problem::internal("reading an archive", e))?;
    drop(dir);
    let rejected: Vec<Rejection> = tally
        .rejections
        .into_iter()
        .map(|r| Rejection {
            path: r.path,
            reason: r.reason,
        })
        .collect();

    let mut labelled = 0u64;
    let mut unmatched_labels = Vec::new();
    for (name, species) in &form.labels {
        let shas: Vec<String> = sqlx::query_scalar(
            "SELECT DISTINCT file_sha256 FROM tasks WHERE job_id = $1 AND source_path = $2",
        )
        .bind(job)
        .bind(name)
        .fetch_all(&state.pool)
        .await?;
        if shas.is_empty() {
            unmatched_labels.push(name.clone());
        }
        for sha in shas {
            jobs::label(&state.pool, &sha, species.trim(), LABEL_SOURCE)
                .await
                .map_err(|e| Problem::internal("recording a label", e))?;
            labelled += 1;
        }
    }
    let accepted = stats.accepted.load(Ordering::Relaxed);
    let duplicate = stats.duplicate.load(Ordering::Relaxed);
    let clamp = |n: u64| i32::try_from(n).unwrap_or(i32::MAX);
    let bytes: i64 = sqlx::query_scalar(
        "SELECT coalesce(sum(f.size_bytes), 0)::bigint FROM tasks t
         JOIN audio_files f ON f.sha256 = t.file_sha256 WHERE t.job_id = $1",
    )
    .bind(job)
    .fetch_one(&state.pool)
    .await?;
    jobs::close_job(
        &state.pool,
        job,
        SubmissionCounts {
            accepted: clamp(accepted),
            duplicate: clamp(duplicate),
            rejected: clamp(rejected.len() as u64),
            bytes,
        },
    )
    .await
    .map_err(|e| Problem::internal("closing the job", e))?;
    Ok(Accepted {
        job_id: job,
        status_url: format!("/v1/jobs/{job}"),
        results_url: format!("/v1/jobs/{job}/results"),
        accepted,
        duplicate,
        rejected,
        labelled,
        unmatched_labels,
    })
}

fn rename(path: String, renames: &[(String, String)]) -> String {
    for (temp, name) in renames {
        if let Some(rest) = path.strip_prefix(temp.as_str()) {
            return format!("{name}{rest}");
        }
    }
    path
}
