//! `birdsong-api`: the HTTP face of birdsong.
//!
//! Where it sits: beside the producer at the start of the flow (uploads go
//! through the same `ingest` session, so a file is judged by the same rules
//! whichever way it arrives), and at the end (every read is a query on the
//! schema's views); model and retrain operations go through the `registry`
//! library. It does no classification of its own except the small
//! synchronous `POST /v1/classify`. Anything the endpoints do not answer can be asked
//! of those views directly in SQL.
//!
//! * [`routes()`], in this file: the route table, every endpoint with its
//!   path, handler, access level and documentation; [`app`] builds the
//!   router from it.
//! * [`routes`](mod@routes): what the table is built with ([`Routes`]): the
//!   access check and metrics around every handler, and the OpenAPI document
//!   built from the same table.
//! * [`access`]: API keys and rate limiting.
//! * [`submit`] and [`spool`]: `POST /v1/jobs`.
//! * [`results`], [`export`], [`files`]: job status, results and exports.
//! * [`classify`]: synchronous classification of one short file.
//! * [`registry`]: labels, species, retrains and model versions.
//! * [`health`]: liveness, readiness and metrics.
//! * [`problem`] and [`extract`]: one error shape for every refusal.
//! * [`dashboard`]: the web page at `/`, and the read endpoints it is built
//!   on: [`jobs`] (the job list), [`media`] (a stretch of a recording as
//!   audio or a spectrogram), [`stats`] (chart data) and [`system`]
//!   (workers, queues, throughput, failures).

pub mod access;
pub mod classify;
pub mod dashboard;
pub mod export;
pub mod extract;
pub mod files;
pub mod health;
pub mod jobs;
pub mod media;
pub mod metrics;
pub mod problem;
pub mod registry;
pub mod results;
pub mod routes;
pub mod spool;
pub mod stats;
pub mod submit;
pub mod system;

use std::net::SocketAddr;
use std::ops::Deref;
use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::StatusCode;
use axum::routing::{get, post};
use birdsong_common::Config;
use birdsong_common::queue::Publisher;
use birdsong_common::store::ObjectStore;
use birdsong_ingest::Services;
use birdsong_registry::Models;
use sqlx::PgPool;
use tokio::sync::Semaphore;

use crate::access::{Keys, RateLimiter};
use crate::metrics::Metrics;
use birdsong_common::health::Health;

use crate::problem::Problem;
use crate::routes::{Access, Body, Doc, Reply, Routes, query, schema};

/// What every handler shares.
pub struct Inner {
    pub config: Config,
    pub pool: PgPool,
    pub store: ObjectStore,
    pub publisher: Publisher,
    /// The producer's view of the services (its upload code is reused).
    pub services: Services,
    /// The promoted classifier, for `POST /v1/classify`.
    pub models: Models,
    /// Bounds CPU-heavy synchronous classifications.
    pub cpu: Semaphore,
    pub keys: Keys,
    pub limiter: RateLimiter,
    pub metrics: Metrics,
    /// A broker channel of its own for reading queue depths.
    pub inspector: system::Inspector,
    /// What `/readyz` checks.
    pub health: Health,
}

/// Cheap-to-clone handle on [`Inner`].
#[derive(Clone)]
pub struct AppState(Arc<Inner>);

impl Deref for AppState {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.0
    }
}

impl AppState {
    /// Uses connections made by the caller; the schema, bucket and queues
    /// must exist (see `main.rs` for a process that creates them).
    pub fn new(config: Config, pool: PgPool, store: ObjectStore, publisher: Publisher) -> Self {
        let services = Services::new(&config, pool.clone(), store.clone(), publisher.clone());
        let analyzer = birdsong_analysis::Analyzer::new(birdsong_analysis::Settings::from_config(
            &config.worker,
        ));
        let models = Models::new(pool.clone(), store.clone(), Arc::new(analyzer));
        let keys = Keys::new(&config.api.keys);
        let limiter = RateLimiter::new(config.api.rate_per_second, config.api.rate_burst);
        let cpu = Semaphore::new(config.cpu_threads());
        let health = Health::default();
        health.set_database(pool.clone());
        health.set_store(store.clone());
        let link = publisher.clone();
        health.set_broker_check(move || link.channel().status().connected());
        Self(Arc::new(Inner {
            config,
            pool,
            store,
            publisher,
            services,
            models,
            cpu,
            keys,
            limiter,
            metrics: Metrics::default(),
            inspector: system::Inspector::default(),
            health,
        }))
    }
}

const JSON: &str = "application/json";

/// The route table. Adding an endpoint here documents it.
pub fn routes(state: AppState) -> Routes {
    let body_limit = usize::try_from(state.config.api.max_body_bytes).unwrap_or(usize::MAX);
    let classify_limit = usize::try_from(
        state
            .config
            .api
            .classify_max_bytes
            .saturating_add(64 * 1024),
    )
    .unwrap_or(usize::MAX);
    let ok = Reply {
        status: 200,
        what: "success",
        content: &[],
    };
    let r = |method, path, summary, access| Doc {
        method,
        path,
        summary,
        access,
        body: ("", &[]),
        query: None,
        ok,
        other: &[],
        errors: &[],
    };
    Routes::new(state)
        .add(
            Doc {
                body: (
                    "recordings uploaded as a multipart form, or (JSON) objects already in the bucket",
                    &[
                        Body { media: "multipart/form-data", schema: schema::<submit::UploadForm> },
                        Body { media: JSON, schema: schema::<submit::ObjectSubmission> },
                    ],
                ),
                ok: Reply { status: 202, what: "job accepted; follow status_url", content: &[(JSON, Some(schema::<submit::Accepted>))] },
                errors: &[400, 413, 415, 422, 503],
                ..r("post", "/v1/jobs", "Submit recordings for classification", Access::Write)
            },
            post(submit::submit).layer(DefaultBodyLimit::max(body_limit)),
        )
        .add(
            Doc {
                query: Some(query::<jobs::ListQuery>),
                ok: Reply { content: &[(JSON, Some(schema::<jobs::JobList>))], ..ok },
                errors: &[400],
                ..r("get", "/v1/jobs", "Jobs, newest first, with their counts", Access::Read)
            },
            get(jobs::list),
        )
        .add(
            Doc {
                ok: Reply { content: &[(JSON, Some(schema::<results::JobStatus>))], ..ok },
                errors: &[400, 404],
                ..r("get", "/v1/jobs/{id}", "Job status, counts, timestamps and throughput", Access::Read)
            },
            get(results::status),
        )
        .add(
            Doc {
                query: Some(query::<results::ResultsQuery>),
                ok: Reply {
                    what: "items: one per file, with species and confidence (the species detected in the most windows and its highest score; both null when nothing was detected), detected ([] = no detection, null = not classified yet), top_k (highest mean scores, detected or not), and detections: only the windows whose score reached the species' threshold",
                    content: &[(JSON, Some(schema::<results::ResultsPage>))],
                    ..ok
                },
                errors: &[400, 404],
                ..r("get", "/v1/jobs/{id}/results", "Per-file results and above-threshold detections, paginated", Access::Read)
            },
            get(results::results),
        )
        .add(
            Doc {
                query: Some(query::<export::ExportQuery>),
                ok: Reply {
                    status: 200,
                    what: "one row per detection (a window whose score for a species reached that species' threshold), streamed; recordings without detections have no rows",
                    content: &[
                        ("text/csv", None),
                        ("text/tab-separated-values", None),
                        ("text/plain", None),
                        ("application/x-ndjson", None),
                        ("application/vnd.apache.parquet", None),
                    ],
                },
                errors: &[400, 404],
                ..r("get", "/v1/jobs/{id}/export", "Export a job's above-threshold detections", Access::Read)
            },
            get(export::export),
        )
        .add(
            Doc {
                query: Some(query::<files::FileQuery>),
                ok: Reply {
                    what: "the recording, its labels, results per model version (species and confidence null with detected [] when nothing was detected), the newest result's above-threshold detections and its tasks",
                    content: &[(JSON, Some(schema::<files::FileDetails>))],
                    ..ok
                },
                errors: &[400, 404],
                ..r("get", "/v1/files/{sha256}", "Everything known about one recording", Access::Read)
            },
            get(files::file),
        )
        .add(
            Doc {
                query: Some(query::<media::RangeQuery>),
                ok: Reply { status: 200, what: "16-bit mono PCM at the recording's sample rate", content: &[("audio/wav", None)] },
                errors: &[400, 404, 422, 503],
                ..r("get", "/v1/files/{sha256}/audio", "A stretch of a recording as WAV", Access::Read)
            },
            get(media::audio),
        )
        .add(
            Doc {
                query: Some(query::<media::RangeQuery>),
                ok: Reply { content: &[(JSON, Some(schema::<media::Spectrogram>))], ..ok },
                errors: &[400, 404, 422, 503],
                ..r("get", "/v1/files/{sha256}/spectrogram", "The 128-band mel spectrogram (dB) of a stretch of a recording", Access::Read)
            },
            get(media::spectrogram),
        )
        .add(
            Doc {
                query: Some(query::<stats::StatsQuery>),
                ok: Reply {
                    what: "above-threshold detections by species, confidence (histogram, hourly trend) and hour of the day; recordings classified and recordings_with_detections (the rest: no detection)",
                    content: &[(JSON, Some(schema::<stats::Stats>))],
                    ..ok
                },
                errors: &[400, 404],
                ..r("get", "/v1/stats", "Detections by species, confidence and hour of the day", Access::Read)
            },
            get(stats::stats),
        )
        .add(
            Doc {
                ok: Reply { content: &[(JSON, Some(schema::<system::System>))], ..ok },
                ..r("get", "/v1/system", "Workers seen recently, queue depths, throughput over the last hour, recent failures", Access::Read)
            },
            get(system::system),
        )
        .add(
            Doc {
                body: ("the recording", &[Body { media: "multipart/form-data", schema: schema::<classify::ClassifyForm> }]),
                ok: Reply {
                    what: "one results item: species/confidence null and detected [] when nothing reached its threshold, detections above threshold, and window_scores for every window",
                    content: &[(JSON, Some(schema::<results::FileResult>))],
                    ..ok
                },
                errors: &[400, 413, 415, 422, 503],
                ..r("post", "/v1/classify", "Classify one short recording synchronously", Access::Write)
            },
            post(classify::classify).layer(DefaultBodyLimit::max(classify_limit)),
        )
        .add(
            Doc {
                body: ("labels by recording hash", &[Body { media: JSON, schema: schema::<registry::LabelsRequest> }]),
                ok: Reply { content: &[(JSON, Some(schema::<registry::Labelled>))], ..ok },
                errors: &[400, 404, 413, 415, 422],
                ..r("post", "/v1/labels", "Label recordings with their species", Access::Write)
            },
            post(registry::labels),
        )
        .add(
            Doc {
                ok: Reply { content: &[(JSON, Some(schema::<registry::SpeciesList>))], ..ok },
                ..r("get", "/v1/species", "Known species, label counts and the promoted model's classes", Access::Read)
            },
            get(registry::species),
        )
        .add(
            Doc {
                body: ("what to train (an empty body: the defaults)", &[Body { media: JSON, schema: schema::<registry::RetrainBody> }]),
                ok: Reply { status: 202, what: "retrain requested; follow status_url", content: &[(JSON, Some(schema::<registry::RetrainAccepted>))] },
                errors: &[400, 413, 422, 503],
                ..r("post", "/v1/retrain", "Request a retrain", Access::Write)
            },
            post(registry::retrain),
        )
        .add(
            Doc {
                ok: Reply { content: &[(JSON, Some(schema::<registry::RetrainRun>))], ..ok },
                errors: &[400, 404],
                ..r("get", "/v1/retrain/{id}", "State of a retrain request", Access::Read)
            },
            get(registry::retrain_status),
        )
        .add(
            Doc {
                ok: Reply { content: &[(JSON, Some(schema::<registry::ModelList>))], ..ok },
                ..r("get", "/v1/models", "Model versions and their status", Access::Read)
            },
            get(registry::models),
        )
        .add(
            Doc {
                body: ("why (the body may be omitted)", &[Body { media: JSON, schema: schema::<registry::PromoteBody> }]),
                ok: Reply { content: &[(JSON, Some(schema::<registry::Promoted>))], ..ok },
                errors: &[400, 404, 409, 413, 503],
                ..r("post", "/v1/models/{version}/promote", "Promote (or roll back to) a model version", Access::Write)
            },
            post(registry::promote),
        )
        .add(
            Doc {
                body: ("exactly one of job_id, files (hashes) or all: true", &[Body { media: JSON, schema: schema::<registry::ReclassifyBody> }]),
                ok: Reply { status: 202, what: "reclassification job queued", content: &[(JSON, Some(schema::<registry::Reclassifying>))] },
                errors: &[400, 404, 413, 415, 422, 503],
                ..r("post", "/v1/reclassify", "Classify recordings again with the promoted model (from their stored features where it can)", Access::Write)
            },
            post(registry::reclassify),
        )
        .add(
            Doc {
                ok: Reply { status: 200, what: "the dashboard", content: &[("text/html", None)] },
                ..r("get", "/", "The web dashboard", Access::Public)
            },
            get(dashboard::index),
        )
        .add(
            Doc {
                ok: Reply {
                    status: 200,
                    what: "a script, style sheet or icon of the dashboard",
                    content: &[("text/javascript", None), ("text/css", None), ("image/svg+xml", None)],
                },
                errors: &[404],
                ..r("get", "/assets/{name}", "The dashboard's static files", Access::Public)
            },
            get(dashboard::asset),
        )
        .add(
            Doc {
                ok: Reply { content: &[(JSON, None)], ..ok },
                ..r("get", "/v1/openapi.json", "This document", Access::Public)
            },
            get(health::openapi),
        )
        .add(
            Doc {
                ok: Reply { content: &[(JSON, Some(schema::<health::Alive>))], ..ok },
                ..r("get", "/healthz", "The process is up", Access::Public)
            },
            get(health::healthz),
        )
        .add(
            Doc {
                ok: Reply { content: &[(JSON, Some(schema::<health::Readiness>))], ..ok },
                other: &[Reply {
                    status: 503,
                    what: "a service is unreachable",
                    content: &[(JSON, Some(schema::<health::Readiness>))],
                }],
                ..r("get", "/readyz", "Database, broker and object store are reachable", Access::Public)
            },
            get(health::readyz),
        )
        .add(
            Doc {
                ok: Reply { status: 200, what: "Prometheus text format", content: &[("text/plain", None)] },
                ..r("get", "/metrics", "Request counts and latencies", Access::Public)
            },
            get(health::metrics),
        )
}

/// The OpenAPI document, shared with its handler.
#[derive(Clone)]
pub struct Spec(pub Arc<serde_json::Value>);

/// The application: every route, the OpenAPI document, a problem-document
/// fallback.
pub fn app(state: AppState) -> Router {
    let (router, spec) = routes(state.clone()).finish();
    router
        .fallback(|| async { Problem::new(StatusCode::NOT_FOUND, "no-route", "no such endpoint") })
        .layer(axum::Extension(Spec(Arc::new(spec))))
        .with_state(state)
}

/// Serves `app` on `listener` until `shutdown` resolves, then lets requests
/// in progress finish.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AppState,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(
        listener,
        app(state).into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown)
    .await
}
