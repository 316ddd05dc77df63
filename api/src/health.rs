//! Liveness, readiness, metrics and the OpenAPI document.
//!
//! `/healthz` answers as long as the process serves HTTP; `/readyz` checks
//! each service a request may need, each with a short timeout, so that a
//! load balancer stops sending traffic to an instance that cannot reach one
//! of them instead of letting requests fail one by one.

use axum::Json;
use axum::extract::{Extension, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
pub use birdsong_common::health::{Alive, Readiness};

use crate::{AppState, Spec};

pub async fn healthz() -> Json<Alive> {
    Json(Alive { status: "ok" })
}

/// Database, broker and object store, each checked with a short timeout.
pub async fn readyz(State(state): State<AppState>) -> Response {
    state.health.answer().await
}

pub async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(),
    )
}

pub async fn openapi(Extension(spec): Extension<Spec>) -> Json<serde_json::Value> {
    Json((*spec.0).clone())
}
