//! Liveness and readiness over HTTP for the roles that have no API of their
//! own (worker, retrainer), with the same paths and answers as the api's.
//!
//! An orchestrator restarts a process whose `/healthz` stops answering and
//! keeps traffic (or, for a consumer, attention) away from one whose
//! `/readyz` says a service is unreachable. So `/healthz` must answer from
//! the first instant, while the role still waits for its database, and
//! `/readyz` must say which service is missing: each service is registered
//! here once the role has it, and checked on every request with a short
//! timeout.

use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use schemars::JsonSchema;
use serde::Serialize;
use sqlx::PgPool;

use crate::store::ObjectStore;

/// How long one service may take to answer a readiness check.
pub const CHECK_TIMEOUT: Duration = Duration::from_secs(3);

/// What a role has reached so far. Cheap to clone; all clones share state.
#[derive(Clone, Default)]
pub struct Health {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    database: OnceLock<PgPool>,
    store: OnceLock<ObjectStore>,
    broker: Mutex<Option<BrokerCheck>>,
}

/// Says whether the role's link to the broker is up right now.
type BrokerCheck = Box<dyn Fn() -> bool + Send + Sync>;

/// The `/healthz` answer.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct Alive {
    /// Always `ok`: answering at all is the signal.
    pub status: &'static str,
}

/// Whether one service answered.
#[derive(Debug, Clone, Copy, Serialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Reach {
    Ok,
    Unreachable,
}

/// The `/readyz` answer: each service, and `ready` only when all answered.
#[derive(Debug, Clone, Serialize, JsonSchema, PartialEq, Eq)]
pub struct Readiness {
    /// `ready` or `not ready`.
    pub status: &'static str,
    pub database: Reach,
    pub broker: Reach,
    pub object_store: Reach,
}

impl Readiness {
    pub fn ready(&self) -> bool {
        self.status == "ready"
    }
}

impl Health {
    /// The role's database pool, once it could connect.
    pub fn set_database(&self, pool: PgPool) {
        let _ = self.inner.database.set(pool);
    }

    /// The role's object store, once it answered.
    pub fn set_store(&self, store: ObjectStore) {
        let _ = self.inner.store.set(store);
    }

    /// The connection the role consumes on; replaced at every reconnect.
    pub fn set_broker(&self, status: lapin::ConnectionStatus) {
        self.set_broker_check(move || status.connected());
    }

    /// How to tell whether the broker link is up, for a role whose link is
    /// not one connection (the api publishes on a channel it reopens).
    pub fn set_broker_check(&self, check: impl Fn() -> bool + Send + Sync + 'static) {
        if let Ok(mut b) = self.inner.broker.lock() {
            *b = Some(Box::new(check));
        }
    }

    /// Checks every service now.
    pub async fn readiness(&self) -> Readiness {
        let database = async {
            match self.inner.database.get() {
                Some(pool) => timed(sqlx::query("SELECT 1").execute(pool)).await,
                None => Reach::Unreachable,
            }
        };
        let store = async {
            match self.inner.store.get() {
                Some(store) => timed(store.head("readyz")).await,
                None => Reach::Unreachable,
            }
        };
        let broker = match self.inner.broker.lock() {
            Ok(b) if b.as_ref().is_some_and(|check| check()) => Reach::Ok,
            _ => Reach::Unreachable,
        };
        let (database, object_store) = tokio::join!(database, store);
        let ready = [database, broker, object_store]
            .iter()
            .all(|r| *r == Reach::Ok);
        Readiness {
            status: if ready { "ready" } else { "not ready" },
            database,
            broker,
            object_store,
        }
    }

    /// `/readyz`'s answer: 200 when ready, 503 otherwise.
    pub async fn answer(&self) -> axum::response::Response {
        let r = self.readiness().await;
        let status = if r.ready() {
            StatusCode::OK
        } else {
            StatusCode::SERVICE_UNAVAILABLE
        };
        (status, Json(r)).into_response()
    }

    /// `/healthz` and `/readyz`, to merge into the role's HTTP server.
    pub fn router(&self) -> Router {
        let health = self.clone();
        Router::new()
            .route("/healthz", get(|| async { Json(Alive { status: "ok" }) }))
            .route(
                "/readyz",
                get(move || {
                    let health = health.clone();
                    async move { health.answer().await }
                }),
            )
    }
}

async fn timed<T, E: std::fmt::Display>(f: impl Future<Output = Result<T, E>>) -> Reach {
    match tokio::time::timeout(CHECK_TIMEOUT, f).await {
        Ok(Ok(_)) => Reach::Ok,
        Ok(Err(e)) => {
            tracing::debug!(error = %e, "readiness check failed");
            Reach::Unreachable
        }
        Err(_) => Reach::Unreachable,
    }
}

/// Serves `router` on `addr` until the process ends. A role whose address is
/// taken logs it and carries on: the health port is for its orchestrator,
/// not a reason to stop classifying.
pub fn spawn_server(addr: std::net::SocketAddr, router: Router, role: &'static str) {
    tokio::spawn(async move {
        let served = async {
            let listener = tokio::net::TcpListener::bind(addr).await?;
            axum::serve(listener, router).await
        };
        if let Err(e) = served.await {
            tracing::warn!(%addr, role, error = %e, "health and metrics endpoint unavailable");
        }
    });
}
