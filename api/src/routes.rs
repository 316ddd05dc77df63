//! The route table, from which both the router and the OpenAPI document are
//! built.
//!
//! Every endpoint is added through [`Routes::add`] with its [`Doc`]: the
//! same call registers the handler, wraps it in the access check and the
//! metrics, and records the operation for `/v1/openapi.json`. There is no
//! other way to add a route, so the document cannot fall behind the code.

use std::time::Instant;

use axum::Router;
use axum::extract::{ConnectInfo, Request};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::MethodRouter;
use serde_json::{Map, Value, json};

use crate::AppState;
use crate::access::{Caller, presented_key};
use crate::problem::Problem;

/// Who may call an endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Health and metrics: no key, no rate limit.
    Public,
    /// Reads: a key unless reads are open.
    Read,
    /// Writes: always a key.
    Write,
}

/// One operation, as documented.
#[derive(Debug, Clone)]
pub struct Doc {
    pub method: &'static str,
    pub path: &'static str,
    pub summary: &'static str,
    pub access: Access,
    /// Request body media types and what they carry.
    pub body: &'static [(&'static str, &'static str)],
    /// Query parameters: name and meaning.
    pub query: &'static [(&'static str, &'static str)],
    /// Success status, its media type and meaning.
    pub ok: (u16, &'static str, &'static str),
    /// Error statuses this operation answers with a problem document.
    pub errors: &'static [u16],
}

/// The router under construction and the operations it holds.
pub struct Routes {
    router: Router<AppState>,
    docs: Vec<Doc>,
    state: AppState,
}

impl Routes {
    pub fn new(state: AppState) -> Self {
        Self {
            router: Router::new(),
            docs: Vec::new(),
            state,
        }
    }

    /// Registers `handler` (a method router for `doc.method`) at `doc.path`.
    pub fn add(mut self, doc: Doc, handler: MethodRouter<AppState>) -> Self {
        let state = self.state.clone();
        let (route, access) = (doc.path, doc.access);
        let handler = handler.layer(middleware::from_fn(move |req: Request, next: Next| {
            guard(state.clone(), route, access, req, next)
        }));
        self.router = self.router.route(doc.path, handler);
        self.docs.push(doc);
        self
    }

    pub fn docs(&self) -> &[Doc] {
        &self.docs
    }

    /// The finished router and the OpenAPI document describing it.
    pub fn finish(self) -> (Router<AppState>, Value) {
        let spec = openapi(&self.docs);
        (self.router, spec)
    }
}

/// Rate limit, access check and metrics around one handler.
async fn guard(
    state: AppState,
    route: &'static str,
    access: Access,
    req: Request,
    next: Next,
) -> Response {
    let start = Instant::now();
    let method = req.method().as_str().to_string();
    let response = match admit(&state, access, &req) {
        Ok(()) => next.run(req).await,
        Err(refusal) => *refusal,
    };
    state
        .metrics
        .observe(&method, route, response.status().as_u16(), start.elapsed());
    response
}

fn admit(state: &AppState, access: Access, req: &Request) -> Result<(), Box<Response>> {
    if access == Access::Public {
        return Ok(());
    }
    let key = presented_key(req.headers()).and_then(|k| state.keys.find(k));
    let caller = match key {
        Some(i) => Caller::Key(i),
        None => Caller::Address(
            req.extensions()
                .get::<ConnectInfo<std::net::SocketAddr>>()
                .map(|c| c.0.ip())
                .unwrap_or(std::net::IpAddr::from([0, 0, 0, 0])),
        ),
    };
    if let Err(wait) = state.limiter.take(caller) {
        let secs = wait.ceil().max(1.0) as u64;
        let mut response = Problem::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate-limited",
            format!("too many requests; retry in {secs} s"),
        )
        .into_response();
        if let Ok(v) = secs.to_string().parse() {
            response.headers_mut().insert("retry-after", v);
        }
        return Err(Box::new(response));
    }
    let needs_key = access == Access::Write || !state.config.api.open_reads;
    if needs_key && key.is_none() {
        return Err(Box::new(Problem::unauthorized().into_response()));
    }
    Ok(())
}

/// An OpenAPI 3.1 document for `docs`.
pub fn openapi(docs: &[Doc]) -> Value {
    let mut paths = Map::new();
    for doc in docs {
        let mut params: Vec<Value> = doc
            .path
            .split('/')
            .filter_map(|seg| seg.strip_prefix('{')?.strip_suffix('}'))
            .map(|name| {
                json!({"name": name, "in": "path", "required": true, "schema": {"type": "string"}})
            })
            .collect();
        params.extend(doc.query.iter().map(|(name, what)| {
            json!({"name": name, "in": "query", "required": false,
                   "description": what, "schema": {"type": "string"}})
        }));
        let mut responses = Map::new();
        let (status, media, what) = doc.ok;
        responses.insert(
            status.to_string(),
            json!({"description": what, "content": {media: {}}}),
        );
        let mut errors: Vec<u16> = doc.errors.to_vec();
        if doc.access != Access::Public {
            errors.extend([401, 429]);
        }
        errors.sort_unstable();
        errors.dedup();
        for code in errors {
            let reason = StatusCode::from_u16(code)
                .ok()
                .and_then(|s| s.canonical_reason())
                .unwrap_or("error");
            responses.insert(
                code.to_string(),
                json!({"description": reason, "content": {"application/problem+json": {
                    "schema": {"$ref": "#/components/schemas/Problem"}}}}),
            );
        }
        let mut op = json!({
            "summary": doc.summary,
            "operationId": operation_id(doc),
            "parameters": params,
            "responses": responses,
        });
        if doc.access == Access::Write {
            op["security"] = json!([{"apiKey": []}]);
        } else if doc.access == Access::Read {
            // Keyed or open, depending on the deployment.
            op["security"] = json!([{"apiKey": []}, {}]);
        }
        if !doc.body.is_empty() {
            let content: Map<String, Value> = doc
                .body
                .iter()
                .map(|(media, what)| (media.to_string(), json!({"description": what})))
                .collect();
            op["requestBody"] = json!({"required": true, "content": content});
        }
        let entry = paths
            .entry(doc.path.to_string())
            .or_insert_with(|| Value::Object(Map::new()));
        if let Value::Object(methods) = entry {
            methods.insert(doc.method.to_string(), op);
        }
    }
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "birdsong API",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Bird species classification of field recordings: submit audio, follow jobs, read and export results, manage labels and models.",
        },
        "paths": paths,
        "components": {
            "securitySchemes": {
                "apiKey": {"type": "http", "scheme": "bearer",
                           "description": "an API key from BIRDSONG_API_KEYS (also accepted as X-Api-Key)"}
            },
            "schemas": {
                "Problem": {
                    "type": "object",
                    "required": ["type", "title", "status", "detail"],
                    "properties": {
                        "type": {"type": "string"},
                        "title": {"type": "string"},
                        "status": {"type": "integer"},
                        "detail": {"type": "string"}
                    }
                }
            }
        }
    })
}

fn operation_id(doc: &Doc) -> String {
    let mut id = doc.method.to_string();
    for seg in doc.path.split('/').filter(|s| !s.is_empty() && *s != "v1") {
        let seg = seg.trim_start_matches('{').trim_end_matches('}');
        id.push('_');
        id.extend(
            seg.chars()
                .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' }),
        );
    }
    id
}
