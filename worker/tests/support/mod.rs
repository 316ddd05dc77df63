//! Shared set-up for the worker's integration tests: submitting recordings
//! the way the producer does, publishing a trained model the way the
//! retrainer does, running workers, and waiting for jobs.

#![allow(dead_code)]

use std::time::Duration;

use birdsong_common::jobs::{self, JobSource, NewFile};
use birdsong_common::queue::Publisher;
use birdsong_testkit::TestEnv;
use bytes::Bytes;
use tokio::sync::watch;
use uuid::Uuid;

/// Uploads `bytes`, registers it and queues a task in `job`.
pub async fn submit(env: &TestEnv, job: Uuid, name: &str, bytes: Vec<u8>) -> (Uuid, String) {
    let size = bytes.len() as u64;
    let (sha, _) = env.store.put_audio(Bytes::from(bytes)).await.unwrap();
    (register_and_enqueue(env, job, name, &sha, size).await, sha)
}

/// Registers a recording already stored under its content key and queues a
/// task for it in `job`.
pub async fn register_and_enqueue(
    env: &TestEnv,
    job: Uuid,
    name: &str,
    sha: &str,
    size: u64,
) -> Uuid {
    jobs::register_file(
        &env.pool,
        &NewFile {
            sha256: sha,
            original_name: name,
            size_bytes: size,
            site: None,
        },
    )
    .await
    .unwrap();
    let publisher = Publisher::new(&env.amqp).await.unwrap();
    env.enqueue_task(&publisher, job, sha, name).await
}

pub async fn new_job(env: &TestEnv) -> Uuid {
    let (job, _) = jobs::open_job(&env.pool, JobSource::Api, "test", None)
        .await
        .unwrap();
    jobs::close_job(&env.pool, job, Default::default())
        .await
        .unwrap();
    job
}

/// A worker running in this process; dropping the sender stops it.
pub struct InProcessWorker {
    pub stop: watch::Sender<bool>,
    pub handle: tokio::task::JoinHandle<anyhow::Result<()>>,
}

pub fn start_worker(env: &TestEnv) -> InProcessWorker {
    start_worker_with(env.config.clone())
}

/// A worker with its own configuration (e.g. pointed at a fault proxy).
pub fn start_worker_with(config: birdsong_common::Config) -> InProcessWorker {
    let (stop, stopped) = watch::channel(false);
    let handle = tokio::spawn(birdsong_worker::run(config, stopped));
    InProcessWorker { stop, handle }
}

impl InProcessWorker {
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        self.handle.await.unwrap().unwrap();
    }
}

/// A worker as a child process (so a test can kill -9 it).
pub fn spawn_worker_process(env: &TestEnv) -> std::process::Child {
    std::process::Command::new(env!("CARGO_BIN_EXE_birdsong-worker"))
        .envs(&env.vars)
        .env("BIRDSONG_LOG", "warn")
        .env("BIRDSONG_WORKER_THREADS", "1")
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("start birdsong-worker")
}

/// Waits until no task of `job` is queued or processing.
pub async fn wait_for_job(env: &TestEnv, job: Uuid, limit: Duration) {
    env.wait_for_tasks(job, &["queued", "processing"], limit)
        .await;
}

/// Expected window count for a recording of `seconds` with the default
/// 5 s windows, no overlap, a final window kept from 1 s.
pub fn expected_windows(seconds: f64) -> i64 {
    if seconds <= 5.0 {
        return 1;
    }
    let full = (seconds / 5.0).floor() as i64;
    let rest = seconds - full as f64 * 5.0;
    full + i64::from(rest >= 1.0 - 1e-9)
}

/// Trains a small model on synthetic species 0..classes, stores its
/// artifact under `models/<version>/` and promotes it, as the retrainer does.
pub async fn publish_model(env: &TestEnv, version: &str, classes: usize) {
    birdsong_testkit::models::publish_model(env, version, classes)
        .await
        .expect("publishing a model");
}

/// Rows a recording has: (window scores, file summaries, window features).
/// Every analysed window has exactly one score row, detected or not.
pub async fn result_rows(env: &TestEnv, sha: &str) -> (i64, i64, i64) {
    sqlx::query_as(
        "SELECT (SELECT count(*) FROM window_scores WHERE file_sha256 = $1),
                (SELECT count(*) FROM file_summaries WHERE file_sha256 = $1),
                (SELECT count(*) FROM window_features WHERE file_sha256 = $1)",
    )
    .bind(sha)
    .fetch_one(&env.pool)
    .await
    .unwrap()
}
