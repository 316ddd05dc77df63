//! Shared set-up for the API's integration tests: the API on a real port
//! against the test environment's services, a small HTTP client, multipart
//! bodies, and an in-process worker.

#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use birdsong_api::AppState;
use birdsong_common::Config;
use birdsong_common::queue::Publisher;
use birdsong_testkit::TestEnv;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request, StatusCode};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;
use tokio::sync::{oneshot, watch};

pub const KEY: &str = "test-key-1";

/// A running API.
pub struct Api {
    pub base: String,
    stop: Option<oneshot::Sender<()>>,
    handle: tokio::task::JoinHandle<std::io::Result<()>>,
    client: Client<HttpConnector, Full<Bytes>>,
}

/// Starts the API on 127.0.0.1:0 with the environment's services, after
/// `tweak` adjusts the configuration.
pub async fn start_api(env: &TestEnv, tweak: impl FnOnce(&mut Config)) -> Api {
    let publisher = Publisher::new(&env.amqp).await.unwrap();
    start_api_with(env, tweak, publisher).await
}

/// [`start_api`] publishing through `publisher`.
pub async fn start_api_with(
    env: &TestEnv,
    tweak: impl FnOnce(&mut Config),
    publisher: Publisher,
) -> Api {
    let mut config = env.config.clone();
    config.api.keys = vec![KEY.to_string(), "other-key".to_string()];
    tweak(&mut config);
    let state = AppState::new(config, env.pool.clone(), env.store.clone(), publisher);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr: SocketAddr = listener.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let handle = tokio::spawn(birdsong_api::serve(listener, state, async {
        let _ = stopped.await;
    }));
    Api {
        base: format!("http://{addr}"),
        stop: Some(stop),
        handle,
        // One connection per request: a refused request's connection is closed by the
        // server once it has answered, and a pooled client could send the next
        // request down it before noticing (a broken pipe while writing the body).
        client: Client::builder(TokioExecutor::new())
            .pool_max_idle_per_host(0)
            .build_http(),
    }
}

/// An answer.
pub struct Answer {
    pub status: StatusCode,
    pub headers: hyper::HeaderMap,
    pub body: Bytes,
}

impl Answer {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }
    pub fn text(&self) -> String {
        String::from_utf8(self.body.to_vec()).unwrap()
    }
    /// Asserts a problem document with this status.
    pub fn problem(&self, status: u16) -> Value {
        assert_eq!(
            self.status.as_u16(),
            status,
            "body: {}",
            String::from_utf8_lossy(&self.body)
        );
        assert_eq!(
            self.headers.get("content-type").unwrap(),
            "application/problem+json"
        );
        let p = self.json();
        assert_eq!(p["status"], status);
        for field in ["type", "title", "detail"] {
            assert!(
                p[field].as_str().is_some_and(|s| !s.is_empty()),
                "{field} in {p}"
            );
        }
        p
    }
}

impl Api {
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        key: Option<&str>,
        content_type: Option<&str>,
        body: Vec<u8>,
    ) -> Answer {
        let body = Bytes::from(body);
        // A request refused for its size is answered before its body is
        // read to the end; the server then closes the connection, and on a
        // loaded machine the close can overtake the answer on the client
        // side (no lingering close in the server yet). Such a request
        // changes nothing, so sending it again is harmless.
        let mut attempts = 0;
        let resp = loop {
            let mut req = Request::builder()
                .method(method.clone())
                .uri(format!("{}{path}", self.base));
            if let Some(k) = key {
                req = req.header("authorization", format!("Bearer {k}"));
            }
            if let Some(ct) = content_type {
                req = req.header("content-type", ct);
            }
            match self
                .client
                .request(req.body(Full::new(body.clone())).unwrap())
                .await
            {
                Ok(resp) => break resp,
                Err(e) if attempts < 5 && format!("{e:?}").contains("IncompleteMessage") => {
                    attempts += 1;
                }
                Err(e) => panic!("{method} {path}: {e:?}"),
            }
        };
        let status = resp.status();
        let headers = resp.headers().clone();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        Answer {
            status,
            headers,
            body,
        }
    }

    pub async fn get(&self, path: &str) -> Answer {
        self.call(Method::GET, path, Some(KEY), None, Vec::new())
            .await
    }

    pub async fn post_json(&self, path: &str, key: Option<&str>, body: &Value) -> Answer {
        self.call(
            Method::POST,
            path,
            key,
            Some("application/json"),
            serde_json::to_vec(body).unwrap(),
        )
        .await
    }

    pub async fn post_multipart(&self, path: &str, key: Option<&str>, parts: &[Part]) -> Answer {
        let (ct, body) = multipart(parts);
        self.call(Method::POST, path, key, Some(&ct), body).await
    }

    pub async fn stop(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        self.handle.await.unwrap().unwrap();
    }
}

/// One multipart part: a file (with a file name) or a text field.
pub enum Part {
    File(String, Vec<u8>),
    Text(String, String),
}

const BOUNDARY: &str = "birdsong-test-boundary-7d1e";

pub fn multipart(parts: &[Part]) -> (String, Vec<u8>) {
    let mut body = Vec::new();
    for part in parts {
        body.extend_from_slice(format!("--{BOUNDARY}\r\n").as_bytes());
        match part {
            Part::File(name, bytes) => {
                body.extend_from_slice(
                    format!(
                        "Content-Disposition: form-data; name=\"file\"; filename=\"{}\"\r\nContent-Type: application/octet-stream\r\n\r\n",
                        name.replace('"', "%22")
                    )
                    .as_bytes(),
                );
                body.extend_from_slice(bytes);
            }
            Part::Text(name, text) => {
                body.extend_from_slice(
                    format!("Content-Disposition: form-data; name=\"{name}\"\r\n\r\n").as_bytes(),
                );
                body.extend_from_slice(text.as_bytes());
            }
        }
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{BOUNDARY}--\r\n").as_bytes());
    (format!("multipart/form-data; boundary={BOUNDARY}"), body)
}

/// A tar.gz holding `entries`.
pub fn tar_gz(entries: &[(&str, &[u8])]) -> Vec<u8> {
    let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    let mut tar = tar::Builder::new(gz);
    for (name, bytes) in entries {
        let mut header = tar::Header::new_gnu();
        header.set_size(bytes.len() as u64);
        header.set_mode(0o644);
        header.set_cksum();
        tar.append_data(&mut header, name, *bytes).unwrap();
    }
    tar.into_inner().unwrap().finish().unwrap()
}

/// A worker running in this process.
pub struct Worker {
    stop: watch::Sender<bool>,
    handle: tokio::task::JoinHandle<anyhow::Result<()>>,
}

pub fn start_worker(env: &TestEnv) -> Worker {
    let (stop, stopped) = watch::channel(false);
    let handle = tokio::spawn(birdsong_worker::run(env.config.clone(), stopped));
    Worker { stop, handle }
}

impl Worker {
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        self.handle.await.unwrap().unwrap();
    }
}

/// Polls the job's status over HTTP until it is finished.
pub async fn wait_finished(api: &Api, job: &str, limit: Duration) -> Value {
    let start = Instant::now();
    loop {
        let status = api.get(&format!("/v1/jobs/{job}")).await;
        assert_eq!(status.status, 200, "{}", status.text());
        let s = status.json();
        if s["status"] == "finished" {
            return s;
        }
        assert!(
            start.elapsed() < limit,
            "job not finished after {limit:?}: {s}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Rows in the job tables (a refused request must leave none).
pub async fn job_rows(env: &TestEnv) -> (i64, i64) {
    sqlx::query_as("SELECT (SELECT count(*) FROM jobs), (SELECT count(*) FROM tasks)")
        .fetch_one(&env.pool)
        .await
        .unwrap()
}

/// Messages waiting in the classify queue.
pub async fn queued_messages(env: &TestEnv) -> u32 {
    let channel = env.amqp.create_channel().await.unwrap();
    let q = channel
        .queue_declare(
            env.config.queues.classify.as_str().into(),
            lapin::options::QueueDeclareOptions {
                passive: true,
                ..Default::default()
            },
            Default::default(),
        )
        .await
        .unwrap();
    q.message_count()
}

/// White noise at `amplitude` (in 16-bit units), 22 050 Hz: what a field
/// recorder hears when no bird calls.
pub fn noise_wav(seconds: f32, seed: u64, amplitude: f32) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let n = (seconds * 22_050.0) as usize;
    birdsong_testkit::audio::wav_i16(
        (0..n).map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let u = (x >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0;
            (u * amplitude) as i16
        }),
        22_050,
    )
}

/// Trains a model of synthetic species 0-2 that has also heard background
/// (recordings of noise at several levels, labelled `noise`, which train
/// every species as absent), publishes it as `version` and promotes it.
///
/// `birdsong_testkit::models::publish_model` trains on calls only, and its
/// model scores silence or noise near 1 for some species, as a network
/// that never heard "nothing" does; this one answers such recordings with
/// scores far below every threshold, so tests can count on "no detection".
pub async fn publish_model_with_background(env: &TestEnv, version: &str) {
    let artifact = tokio::task::spawn_blocking(|| {
        let mut recordings =
            birdsong_testkit::models::synthetic_recordings(3, 4, 10.0, 1000).unwrap();
        let cfg = birdsong_audio::WindowConfig::default();
        for (i, amplitude) in [30.0f32, 60.0, 100.0, 300.0, 1000.0, 3000.0]
            .into_iter()
            .enumerate()
        {
            let wav = noise_wav(10.0, 5000 + i as u64, amplitude);
            let analysis = birdsong_audio::analyze_bytes(wav, &cfg).unwrap();
            recordings.push(birdsong_model::Recording {
                id: format!("noise-{i}"),
                label: "noise".into(),
                windows: analysis
                    .windows
                    .iter()
                    .map(|w| w.features.to_vec())
                    .collect(),
            });
        }
        let config = birdsong_model::TrainConfig {
            epochs: 40,
            seed: 1,
            ..birdsong_model::TrainConfig::default()
        };
        birdsong_model::train(&recordings, None, &config, |_| {})
            .unwrap()
            .artifact
    })
    .await
    .unwrap();
    birdsong_testkit::models::store_model(env, version, artifact)
        .await
        .unwrap();
    let publisher = Publisher::new(&env.amqp).await.unwrap();
    birdsong_registry::promote(
        &env.pool,
        &publisher,
        &env.config.queues.model_exchange,
        version,
        "published by a test",
    )
    .await
    .unwrap();
}

/// What every classified result must satisfy, whatever the model: `species`
/// is null exactly when `detected` is empty, it is the first of `detected`,
/// and every detection reached its threshold. With `complete` (no filters),
/// `detected` is exactly the detections counted per species.
pub fn check_result(item: &Value, complete: bool) {
    let detected = item["detected"]
        .as_array()
        .unwrap_or_else(|| panic!("a classified result has a detected array: {item}"));
    assert_eq!(item["species"].is_null(), detected.is_empty(), "{item}");
    assert_eq!(item["confidence"].is_null(), detected.is_empty(), "{item}");
    if let Some(first) = detected.first() {
        assert_eq!(item["species"], first["species"], "{item}");
        assert_eq!(item["confidence"], first["max_score"], "{item}");
    }
    let detections = item["detections"].as_array().unwrap();
    for d in detections {
        let (c, t) = (
            d["confidence"].as_f64().unwrap(),
            d["threshold"].as_f64().unwrap(),
        );
        assert!(c >= t, "a detection below its threshold: {d}");
        assert!((0.0..=1.0).contains(&t), "{d}");
        assert!(d["top_k"].is_array(), "{d}");
    }
    if complete {
        let mut counted: BTreeMap<&str, (i64, f64)> = BTreeMap::new();
        for d in detections {
            let e = counted
                .entry(d["species"].as_str().unwrap())
                .or_insert((0, 0.0));
            e.0 += 1;
            e.1 = e.1.max(d["confidence"].as_f64().unwrap());
        }
        let listed: BTreeMap<&str, (i64, f64)> = detected
            .iter()
            .map(|p| {
                (
                    p["species"].as_str().unwrap(),
                    (
                        p["windows"].as_i64().unwrap(),
                        p["max_score"].as_f64().unwrap(),
                    ),
                )
            })
            .collect();
        assert_eq!(
            counted.keys().collect::<Vec<_>>(),
            listed.keys().collect::<Vec<_>>(),
            "{item}"
        );
        for (species, (windows, max)) in &listed {
            let (n, best) = counted[species];
            assert_eq!(n, *windows, "{species} in {item}");
            assert!((best - max).abs() < 1e-4, "{species} in {item}");
        }
    }
}

/// Every window's scores agree with the detections: one entry per window,
/// in order, and the (window, species) pairs detected in them are exactly
/// the detections.
pub fn check_windows(item: &Value) {
    let windows = item["window_scores"]
        .as_array()
        .unwrap_or_else(|| panic!("window_scores asked for: {item}"));
    assert_eq!(windows.len() as i64, item["windows"].as_i64().unwrap());
    let mut pairs = BTreeSet::new();
    for (i, w) in windows.iter().enumerate() {
        assert_eq!(w["window_index"], i as i64, "{w}");
        assert!(w["end_s"].as_f64() > w["start_s"].as_f64(), "{w}");
        let top = w["top_k"].as_array().unwrap();
        assert!(!top.is_empty(), "{w}");
        assert_eq!(w["top_species"], top[0]["species"], "{w}");
        for d in w["detected"].as_array().unwrap() {
            pairs.insert((i as i64, d["species"].as_str().unwrap().to_string()));
        }
    }
    let detections: BTreeSet<(i64, String)> = item["detections"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                d["window_index"].as_i64().unwrap(),
                d["species"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(pairs, detections, "{item}");
}
