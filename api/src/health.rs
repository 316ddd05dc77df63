//! Liveness, readiness, metrics and the OpenAPI document.
//!
//! `/healthz` answers as long as the process serves HTTP; `/readyz` checks
//! each service a request may need, each with a short timeout, so that a
//! load balancer stops sending traffic to an instance that cannot reach one
//! of them instead of letting requests fail one by one.

use std::time::Duration;

use axum::Json;
use axum::extract::{Extension, State};
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use serde_json::json;

use crate::{AppState, Spec};

const CHECK_TIMEOUT: Duration = Duration::from_secs(3);

pub async fn healthz() -> Json<serde_json::Value> {
    Json(json!({"status": "ok"}))
}

async fn check<F, E>(f: F) -> Result<(), String>
where
    F: std::future::Future<Output = Result<(), E>>,
    E: std::fmt::Display,
{
    match tokio::time::timeout(CHECK_TIMEOUT, f).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("timed out".into()),
    }
}

pub async fn readyz(State(state): State<AppState>) -> impl IntoResponse {
    let database = check(async {
        sqlx::query("SELECT 1")
            .execute(&state.pool)
            .await
            .map(|_| ())
    });
    let broker = async {
        if state.publisher.channel().status().connected() {
            Ok(())
        } else {
            Err("the channel to the broker is closed".to_string())
        }
    };
    let store = check(async { state.store.head("readyz").await.map(|_| ()) });
    let (database, broker, store) = tokio::join!(database, broker, store);
    let mut body = serde_json::Map::new();
    let mut ready = true;
    for (name, result) in [
        ("database", database),
        ("broker", broker),
        ("object_store", store),
    ] {
        match result {
            Ok(()) => {
                body.insert(name.into(), json!("ok"));
            }
            Err(e) => {
                tracing::warn!(service = name, error = %e, "not ready");
                ready = false;
                body.insert(name.into(), json!("unreachable"));
            }
        }
    }
    body.insert(
        "status".into(),
        json!(if ready { "ready" } else { "not ready" }),
    );
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(serde_json::Value::Object(body)))
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
