//! Errors as RFC 9457 problem documents.
//!
//! Every refusal the API makes, from a bad cursor to a missing model, is
//! answered with the same small JSON shape (`type`, `title`, `status`,
//! `detail`) and the `application/problem+json` media type, so that a client
//! has one thing to parse. Internal failures are logged in full here and
//! answered with a generic detail: database or broker messages can name
//! hosts and tables that a caller has no business seeing.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use schemars::JsonSchema;
use serde::Serialize;

/// An error answer.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct Problem {
    #[serde(rename = "type")]
    pub kind: String,
    pub title: &'static str,
    pub status: u16,
    pub detail: String,
}

impl Problem {
    /// A problem of `kind` (a short slug, made into the `type` URI).
    pub fn new(status: StatusCode, kind: &str, detail: impl Into<String>) -> Self {
        Self {
            kind: format!("https://birdsong.dev/problems/{kind}"),
            title: status.canonical_reason().unwrap_or("Error"),
            status: status.as_u16(),
            detail: detail.into(),
        }
    }

    pub fn bad_request(kind: &str, detail: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, kind, detail)
    }

    pub fn unprocessable(kind: &str, detail: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, kind, detail)
    }

    pub fn not_found(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not-found", detail)
    }

    pub fn too_large(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::PAYLOAD_TOO_LARGE, "too-large", detail)
    }

    /// 401 with nothing that says which part of the credential was wrong.
    pub fn unauthorized() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "a valid API key is required",
        )
    }

    /// Logs `error` and answers 500 without its text.
    pub fn internal(doing: &str, error: impl std::fmt::Display) -> Self {
        tracing::error!(error = %error, "failed while {doing}");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            format!("an internal error occurred while {doing}"),
        )
    }

    /// A dependency is down: 503, logged.
    pub fn unavailable(kind: &str, detail: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, kind, detail)
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let body = serde_json::to_vec(&self).unwrap_or_default();
        let mut response = (status, body).into_response();
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        response
    }
}

impl From<sqlx::Error> for Problem {
    fn from(e: sqlx::Error) -> Self {
        Problem::internal("querying the database", e)
    }
}

/// Handler result.
pub type ApiResult<T> = Result<T, Problem>;
