//! The OpenAPI document covers every route, and every documented operation
//! is a real route.

mod support;

use birdsong_testkit::TestEnv;
use hyper::Method;
use serde_json::Value;
use support::*;

/// The endpoints the service promises. Adding a route without
/// documenting it is impossible (routes are only added with their `Doc`);
/// this list catches a promised endpoint that goes missing.
const PROMISED: &[(&str, &str)] = &[
    ("post", "/v1/jobs"),
    ("get", "/v1/jobs/{id}"),
    ("get", "/v1/jobs/{id}/results"),
    ("get", "/v1/jobs/{id}/export"),
    ("get", "/v1/files/{sha256}"),
    ("post", "/v1/classify"),
    ("post", "/v1/labels"),
    ("get", "/v1/species"),
    ("post", "/v1/retrain"),
    ("get", "/v1/retrain/{id}"),
    ("get", "/v1/models"),
    ("post", "/v1/models/{version}/promote"),
    ("post", "/v1/reclassify"),
    ("get", "/v1/openapi.json"),
    ("get", "/healthz"),
    ("get", "/readyz"),
    ("get", "/metrics"),
    // The dashboard and the reads it is built on.
    ("get", "/"),
    ("get", "/assets/{name}"),
    ("get", "/v1/jobs"),
    ("get", "/v1/files/{sha256}/audio"),
    ("get", "/v1/files/{sha256}/spectrogram"),
    ("get", "/v1/stats"),
    ("get", "/v1/system"),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_document_is_valid_and_covers_every_route() {
    let env = TestEnv::start().await.expect("test environment");
    let api = start_api(&env, |_| {}).await;
    let doc = api.get("/v1/openapi.json").await;
    assert_eq!(doc.status, 200);
    let doc = doc.json();
    assert_eq!(doc["openapi"], "3.1.0");
    assert!(doc["info"]["title"].is_string());
    let paths = doc["paths"].as_object().unwrap();
    let mut documented = Vec::new();
    for (path, methods) in paths {
        for (method, op) in methods.as_object().unwrap() {
            assert!(op["summary"].as_str().is_some_and(|s| !s.is_empty()));
            assert!(op["operationId"].is_string());
            assert!(!op["responses"].as_object().unwrap().is_empty());
            // Path parameters are declared.
            for seg in path.split('/').filter(|s| s.starts_with('{')) {
                let name = seg.trim_matches(|c| c == '{' || c == '}');
                assert!(
                    op["parameters"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .any(|p| p["name"] == name && p["in"] == "path"),
                    "{method} {path} does not declare {name}"
                );
            }
            documented.push((method.clone(), path.clone()));
        }
    }
    for (method, path) in PROMISED {
        assert!(
            documented.iter().any(|(m, p)| m == method && p == path),
            "{method} {path} is not documented"
        );
    }
    assert_eq!(documented.len(), PROMISED.len(), "{documented:?}");
    // Every documented operation is routed (the fallback answers
    // `no-route` for anything else).
    for (method, path) in &documented {
        let concrete = path
            .replace("{id}", "00000000-0000-0000-0000-000000000000")
            .replace("{sha256}", &"0".repeat(64))
            .replace("{version}", "v0");
        let m = if method == "get" {
            Method::GET
        } else {
            Method::POST
        };
        let answer = api.call(m, &concrete, Some(KEY), None, Vec::new()).await;
        let text = String::from_utf8_lossy(&answer.body).to_string();
        assert!(
            !text.contains("problems/no-route"),
            "{method} {path} is not routed"
        );
        assert_ne!(answer.status, 405, "{method} {path}");
    }
    assert!(doc["components"]["schemas"]["Problem"].is_object());
    every_part_has_a_schema(&doc);
    api.stop().await;
}

/// Collects every `$ref` under `v`.
fn refs<'a>(v: &'a Value, out: &mut Vec<&'a str>) {
    match v {
        Value::Object(m) => {
            if let Some(Value::String(r)) = m.get("$ref") {
                out.push(r);
            }
            m.values().for_each(|x| refs(x, out));
        }
        Value::Array(a) => a.iter().for_each(|x| refs(x, out)),
        _ => {}
    }
}

/// Request bodies, parameters and JSON answers all carry schemas, and every
/// reference resolves: what a client generator needs.
fn every_part_has_a_schema(doc: &Value) {
    for (path, methods) in doc["paths"].as_object().unwrap() {
        for (method, op) in methods.as_object().unwrap() {
            let at = format!("{method} {path}");
            for p in op["parameters"].as_array().unwrap() {
                assert!(p["schema"].is_object(), "{at}: parameter {p}");
                let typed = p["schema"].get("type").is_some()
                    || p["schema"].get("$ref").is_some()
                    || p["schema"].get("enum").is_some()
                    || p["schema"].get("oneOf").is_some();
                assert!(typed, "{at}: untyped parameter {p}");
            }
            if let Some(body) = op.get("requestBody") {
                for (media, object) in body["content"].as_object().unwrap() {
                    assert!(object["schema"].is_object(), "{at}: {media} body");
                    assert_eq!(object.as_object().unwrap().len(), 1, "{at}: {object}");
                }
            }
            for (status, answer) in op["responses"].as_object().unwrap() {
                for (media, object) in answer["content"].as_object().unwrap() {
                    let json = media == "application/json" || media.ends_with("+json");
                    if json && path != "/v1/openapi.json" {
                        assert!(object["schema"].is_object(), "{at} {status} {media}");
                    }
                }
            }
        }
    }
    let mut all = Vec::new();
    refs(doc, &mut all);
    assert!(!all.is_empty());
    for r in all {
        let name = r
            .strip_prefix("#/components/schemas/")
            .unwrap_or_else(|| panic!("{r} points outside components/schemas"));
        assert!(
            doc["components"]["schemas"][name].is_object(),
            "{r} does not resolve"
        );
    }
}
