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
use schemars::generate::SchemaSettings;
use schemars::{JsonSchema, Schema, SchemaGenerator};
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

/// Writes the JSON Schema of one type into the document's components and
/// returns the schema (usually a `$ref`) to use where the type appears.
///
/// Operations hold these instead of schemas so that the schemas come from
/// the very types the handlers parse and serialise (`schemars` derives them),
/// and cannot drift from them.
pub type SchemaOf = fn(&mut SchemaGenerator) -> Schema;

/// [`SchemaOf`] for `T`, referenced from the components.
pub fn schema<T: JsonSchema>(g: &mut SchemaGenerator) -> Schema {
    g.subschema_for::<T>()
}

/// [`SchemaOf`] for a query struct `T`, inline: its properties become the
/// operation's query parameters.
pub fn query<T: JsonSchema>(g: &mut SchemaGenerator) -> Schema {
    T::json_schema(g)
}

/// A request body of one media type.
#[derive(Debug, Clone, Copy)]
pub struct Body {
    pub media: &'static str,
    pub schema: SchemaOf,
}

/// The success answer: status, meaning, and the media types it may come in
/// (with a schema where the body is structured).
#[derive(Debug, Clone, Copy)]
pub struct Reply {
    pub status: u16,
    pub what: &'static str,
    pub content: &'static [(&'static str, Option<SchemaOf>)],
}

/// One operation, as documented.
#[derive(Debug, Clone)]
pub struct Doc {
    pub method: &'static str,
    pub path: &'static str,
    pub summary: &'static str,
    pub access: Access,
    /// What the request body carries (for every media type), and its types.
    pub body: (&'static str, &'static [Body]),
    /// The query struct the handler parses, if any.
    pub query: Option<SchemaOf>,
    pub ok: Reply,
    /// Other answers that are not problem documents.
    pub other: &'static [Reply],
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

/// The schema of a path parameter, by its name in the route.
fn path_parameter(name: &str) -> Value {
    match name {
        "id" => json!({"type": "string", "format": "uuid"}),
        "sha256" => json!({"type": "string", "pattern": "^[0-9a-f]{64}$",
                           "description": "the recording's SHA-256, 64 lower-case hex characters"}),
        _ => json!({"type": "string"}),
    }
}

/// A query property's schema as a parameter's: an absent parameter is how a
/// query says "none", so the `null` that `Option` adds is dropped.
fn without_null(mut schema: Value) -> Value {
    if let Some(Value::Array(types)) = schema.get_mut("type") {
        types.retain(|t| t != "null");
        if types.len() == 1 {
            let only = types[0].clone();
            schema["type"] = only;
        }
    }
    for key in ["anyOf", "oneOf"] {
        let Some(Value::Array(options)) = schema.get_mut(key) else {
            continue;
        };
        options.retain(|o| o.get("type").is_none_or(|t| t != "null"));
        if options.len() == 1 {
            let only = options[0].clone();
            let rest: Map<String, Value> = schema
                .as_object()
                .map(|m| {
                    m.iter()
                        .filter(|(k, _)| *k != key)
                        .map(|(k, v)| (k.clone(), v.clone()))
                        .collect()
                })
                .unwrap_or_default();
            let mut merged = only;
            if let Value::Object(m) = &mut merged {
                for (k, v) in rest {
                    m.entry(k).or_insert(v);
                }
            }
            return merged;
        }
    }
    schema
}

/// The query parameters described by a query struct's schema.
fn query_parameters(schema: &Schema) -> Vec<Value> {
    let value = schema.as_value();
    let required: Vec<&str> = value
        .get("required")
        .and_then(Value::as_array)
        .map(|r| r.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let Some(properties) = value.get("properties").and_then(Value::as_object) else {
        return Vec::new();
    };
    properties
        .iter()
        .map(|(name, property)| {
            let mut property = without_null(property.clone());
            let description = property
                .as_object_mut()
                .and_then(|m| m.remove("description"));
            let mut p = json!({"name": name, "in": "query",
                               "required": required.contains(&name.as_str()),
                               "schema": property});
            if let Some(d) = description {
                p["description"] = d;
            }
            p
        })
        .collect()
}

/// An OpenAPI 3.1 document for `docs`.
pub fn openapi(docs: &[Doc]) -> Value {
    // Requests are described as the handlers deserialise them, answers as
    // they are serialised; both land in `components/schemas`.
    let settings = |s: SchemaSettings| {
        s.with(|s| {
            s.definitions_path = "/components/schemas".into();
            s.meta_schema = None;
        })
    };
    let mut requests =
        SchemaGenerator::new(settings(SchemaSettings::draft2020_12().for_deserialize()));
    let mut answers =
        SchemaGenerator::new(settings(SchemaSettings::draft2020_12().for_serialize()));
    let problem = answers.subschema_for::<Problem>();
    let mut paths = Map::new();
    for doc in docs {
        let mut params: Vec<Value> = doc
            .path
            .split('/')
            .filter_map(|seg| seg.strip_prefix('{')?.strip_suffix('}'))
            .map(|name| {
                json!({"name": name, "in": "path", "required": true, "schema": path_parameter(name)})
            })
            .collect();
        if let Some(q) = doc.query {
            params.extend(query_parameters(&q(&mut requests)));
        }
        let mut responses = Map::new();
        for reply in std::iter::once(&doc.ok).chain(doc.other) {
            let content: Map<String, Value> = reply
                .content
                .iter()
                .map(|(media, schema)| {
                    let object = match schema {
                        Some(s) => json!({"schema": s(&mut answers)}),
                        None => json!({}),
                    };
                    (media.to_string(), object)
                })
                .collect();
            responses.insert(
                reply.status.to_string(),
                json!({"description": reply.what, "content": content}),
            );
        }
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
                    "schema": problem}}}),
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
        let (what, bodies) = doc.body;
        if !bodies.is_empty() {
            let content: Map<String, Value> = bodies
                .iter()
                .map(|b| {
                    (
                        b.media.to_string(),
                        json!({"schema": (b.schema)(&mut requests)}),
                    )
                })
                .collect();
            op["requestBody"] = json!({"description": what, "required": true, "content": content});
        }
        let entry = paths
            .entry(doc.path.to_string())
            .or_insert_with(|| Value::Object(Map::new()));
        if let Value::Object(methods) = entry {
            methods.insert(doc.method.to_string(), op);
        }
    }
    let mut schemas = requests.take_definitions(true);
    for (name, schema) in answers.take_definitions(true) {
        let clash = schemas.get(&name).is_some_and(|s| *s != schema);
        // Names are type names; a type whose request and answer forms
        // differ would need one of them renamed (a test checks this).
        if clash {
            tracing::warn!(name, "a schema differs between requests and answers");
        }
        schemas.insert(name, schema);
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
            "schemas": schemas,
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
