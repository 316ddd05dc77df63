//! The retrainer against the real services: PostgreSQL, RabbitMQ, an S3
//! server, in-process workers and the retrainer binary itself.
//!
//! Recordings are synthetic calls of "species" that differ in pitch, sweep
//! and rhythm (`birdsong_testkit::audio`), ten seconds each (two windows),
//! so that training takes a moment on two cores.

use std::collections::{BTreeSet, HashSet};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use birdsong_common::jobs::{self, JobSource, NewFile};
use birdsong_common::messages::RetrainTrigger;
use birdsong_common::queue::Publisher;
use birdsong_registry as registry;
use birdsong_testkit::TestEnv;
use birdsong_testkit::audio::synthetic_wav;
use bytes::Bytes;
use serde_json::{Value, json};
use tokio::sync::{Mutex, watch};
use uuid::Uuid;

/// How long a wait may take before the test calls it a hang: a guard, not a
/// performance bound (a CNN run trains twice, judged and refit, in a debug
/// build, beside the other tests).
const LIMIT: Duration = Duration::from_secs(600);

/// Stores a synthetic recording of `species`, registers it and, if `label`,
/// labels it. Returns its content hash.
async fn add_recording(env: &TestEnv, species: usize, seed: u64, label: bool) -> String {
    let wav = synthetic_wav(species, 10.0, seed);
    let size = wav.len() as u64;
    let (sha, _) = env.store.put_audio(Bytes::from(wav)).await.unwrap();
    let name = format!("s{species}-{seed}.wav");
    jobs::register_file(
        &env.pool,
        &NewFile {
            sha256: &sha,
            original_name: &name,
            size_bytes: size,
            site: None,
        },
    )
    .await
    .unwrap();
    if label {
        jobs::label(&env.pool, &sha, &format!("species-{species}"), "test")
            .await
            .unwrap();
    }
    sha
}

async fn new_job(env: &TestEnv) -> Uuid {
    let (job, _) = jobs::open_job(&env.pool, JobSource::Api, "test", None)
        .await
        .unwrap();
    jobs::close_job(&env.pool, job, Default::default())
        .await
        .unwrap();
    job
}

/// Queues a classify task for a stored recording.
async fn enqueue(env: &TestEnv, publisher: &Publisher, job: Uuid, sha: &str) -> Uuid {
    env.enqueue_task(publisher, job, sha, sha).await
}

/// Labelled recordings `first..first + n` of `species`, each in `job` if given.
async fn labelled(
    env: &TestEnv,
    job: Option<Uuid>,
    species: usize,
    n: usize,
    first: u64,
) -> Vec<String> {
    let publisher = Publisher::new(&env.amqp).await.unwrap();
    let mut out = Vec::new();
    for i in 0..n as u64 {
        let sha = add_recording(env, species, first + i, true).await;
        if let Some(job) = job {
            enqueue(env, &publisher, job, &sha).await;
        }
        out.push(sha);
    }
    out
}

/// `params` with the MLP asked for by name: the tests that are about the
/// retrain lifecycle train it because it is quick to train in a debug build and
/// trains from the windows the workers stored (the default CNN re-decodes).
fn mlp(mut params: Value) -> Value {
    params["architecture"] = json!("mlp");
    params
}

async fn request(env: &TestEnv, params: Value, force: bool) -> Uuid {
    let publisher = Publisher::new(&env.amqp).await.unwrap();
    registry::request_retrain(
        &env.pool,
        &publisher,
        &env.config.queues.retrain,
        RetrainTrigger::Cli,
        params,
        force,
    )
    .await
    .unwrap()
}

#[derive(Debug, sqlx::FromRow)]
struct Run {
    status: String,
    model_version: Option<String>,
    promoted: Option<bool>,
    error: Option<String>,
    data_summary: Option<Value>,
    metrics: Option<Value>,
    started_at: Option<chrono::DateTime<chrono::Utc>>,
    finished_at: Option<chrono::DateTime<chrono::Utc>>,
}

async fn run_row(env: &TestEnv, run: Uuid) -> Run {
    sqlx::query_as(
        "SELECT status, model_version, promoted, error, data_summary, metrics, started_at, finished_at
         FROM retrain_runs WHERE id = $1",
    )
    .bind(run)
    .fetch_one(&env.pool)
    .await
    .unwrap()
}

/// Waits for the run to reach a final status.
async fn wait_run(env: &TestEnv, run: Uuid) -> Run {
    let start = Instant::now();
    loop {
        let row = run_row(env, run).await;
        if ["succeeded", "failed", "skipped"].contains(&row.status.as_str()) {
            return row;
        }
        assert!(start.elapsed() < LIMIT, "run {run} still {row:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn promoted(env: &TestEnv) -> Option<String> {
    sqlx::query_scalar("SELECT version FROM model_versions WHERE status = 'promoted'")
        .fetch_optional(&env.pool)
        .await
        .unwrap()
}

async fn classes(env: &TestEnv, version: &str) -> usize {
    let v: Value = sqlx::query_scalar("SELECT classes FROM model_versions WHERE version = $1")
        .bind(version)
        .fetch_one(&env.pool)
        .await
        .unwrap();
    v.as_array().unwrap().len()
}

/// Waits until every task of `job` is done or failed (not queued,
/// processing or awaiting a model).
async fn wait_done(env: &TestEnv, job: Uuid) {
    env.wait_for_tasks(job, &["queued", "processing", "awaiting_model"], LIMIT)
        .await;
}

/// Task status → count for `job`.
async fn statuses(env: &TestEnv, job: Uuid) -> Vec<(String, Option<String>, i64)> {
    sqlx::query_as(
        "SELECT status, model_version, count(*) FROM tasks WHERE job_id = $1
         GROUP BY 1, 2 ORDER BY 1, 2",
    )
    .bind(job)
    .fetch_all(&env.pool)
    .await
    .unwrap()
}

struct InProcess {
    stop: watch::Sender<bool>,
    handle: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl InProcess {
    fn worker(env: &TestEnv) -> Self {
        let (stop, stopped) = watch::channel(false);
        let handle = tokio::spawn(birdsong_worker::run(env.config.clone(), stopped));
        Self { stop, handle }
    }

    fn retrainer(env: &TestEnv) -> Self {
        let (stop, stopped) = watch::channel(false);
        let handle = tokio::spawn(birdsong_retrainer::run(env.config.clone(), stopped));
        Self { stop, handle }
    }

    async fn shutdown(self) {
        let _ = self.stop.send(true);
        self.handle.await.unwrap().unwrap();
    }
}

fn retrainer_process(env: &TestEnv, args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_birdsong-retrainer"));
    cmd.args(args)
        .envs(&env.vars)
        .env("BIRDSONG_LOG", "warn")
        .stdout(Stdio::piped());
    cmd
}

fn spawn_retrainer(env: &TestEnv) -> Child {
    retrainer_process(env, &["run"])
        .stdout(Stdio::null())
        .spawn()
        .expect("start birdsong-retrainer")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_species_then_a_fourth_while_tasks_keep_flowing() {
    let env = TestEnv::start().await.expect("test environment");
    let worker = InProcess::worker(&env);
    let retrainer = InProcess::retrainer(&env);

    // Recordings analysed while no model exists wait for one, with their
    // features stored.
    let first = new_job(&env).await;
    for species in 0..3 {
        labelled(&env, Some(first), species, 5, 100 * species as u64).await;
    }
    let start = Instant::now();
    loop {
        let s = statuses(&env, first).await;
        if s == vec![("awaiting_model".to_string(), None, 15)] {
            break;
        }
        assert!(start.elapsed() < LIMIT, "first job: {s:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    let run = wait_run(&env, request(&env, mlp(json!({})), false).await).await;
    assert_eq!(run.status, "succeeded", "{run:?}");
    assert_eq!(run.model_version.as_deref(), Some("v1"));
    assert_eq!(run.promoted, Some(true));
    let summary = run.data_summary.unwrap();
    assert_eq!(summary["recordings"], 15);
    assert_eq!(summary["windows"], 30);
    assert_eq!(summary["decoded"], 0, "trained from the workers' features");
    assert_eq!(summary["classes"].as_object().unwrap().len(), 3);
    // The recommended recipe trains on overlapping windows, which no worker
    // stored: the retrainer analysed the training recordings once more, and
    // stored what it found.
    let training = &summary["training_windows"];
    let train_split = &summary["splits"]["train"];
    assert_eq!(training["hop_s"], 1.25, "{summary}");
    assert_eq!(training["decoded"], train_split["recordings"], "{summary}");
    // Ten seconds: 5 s windows starting every 1.25 s up to 5 s, against 2.
    assert_eq!(
        training["windows"].as_u64().unwrap() * 2,
        5 * train_split["windows"].as_u64().unwrap(),
        "{summary}"
    );
    // The refit trained on every recording with those windows too.
    let stored: i64 = sqlx::query_scalar(
        "SELECT count(DISTINCT file_sha256) FROM window_features WHERE hop_s = 1.25",
    )
    .fetch_one(&env.pool)
    .await
    .unwrap();
    assert_eq!(stored, 15);
    assert_eq!(promoted(&env).await.as_deref(), Some("v1"));
    assert_eq!(classes(&env, "v1").await, 3);
    // Its detection thresholds were chosen on the holdout and travel with it.
    let stored = registry::artifacts::promoted(&env.pool)
        .await
        .unwrap()
        .expect("a promoted version");
    let artifact = registry::artifacts::load(&env.store, &stored)
        .await
        .unwrap();
    let thresholds = artifact.meta().thresholds.clone().expect("thresholds");
    assert_eq!(thresholds.values.len(), 3);
    assert!(thresholds.windows > 0);
    assert!(thresholds.values.iter().all(|t| (0.5..=0.99).contains(t)));
    // The served model was refit on all 15 recordings; the judged one, trained on
    // the training split alone, is stored beside it, verified, and carries the
    // same thresholds and holdout figures.
    let refit = artifact.meta().refit.clone().expect("a refit model");
    let held = 15 - train_split["recordings"].as_u64().unwrap() as usize;
    assert_eq!((refit.recordings, refit.added_recordings), (15, held));
    assert!(held > 0, "{summary}");
    assert_eq!(artifact.meta().training_data.recordings, 15);
    assert_eq!(run.metrics.as_ref().unwrap()["refit"]["recordings"], 15);
    let judged = registry::artifacts::load_judged(&env.store, &stored, &artifact)
        .await
        .unwrap()
        .expect("the judged model");
    assert_eq!(
        judged.meta().training_data.recordings as u64,
        train_split["recordings"].as_u64().unwrap()
    );
    assert_eq!(judged.meta().thresholds.as_ref(), Some(&thresholds));
    assert_eq!(judged.meta().metrics, artifact.meta().metrics);
    assert!(artifact.meta().metrics.contains_key("holdout"));
    assert_ne!(judged.meta().weights_sha256, artifact.meta().weights_sha256);
    // The waiting tasks were queued again and classified with v1.
    wait_done(&env, first).await;
    assert_eq!(
        statuses(&env, first).await,
        vec![("done".to_string(), Some("v1".to_string()), 15)]
    );

    // A stream of classification tasks runs through the second retrain.
    let stream_job = new_job(&env).await;
    let stop = Arc::new(AtomicBool::new(false));
    let submitted: Arc<Mutex<Vec<(Uuid, Instant)>>> = Arc::default();
    let stream = {
        let stop = stop.clone();
        let submitted = submitted.clone();
        let config = env.config.clone();
        let pool = env.pool.clone();
        let store = env.store.clone();
        let amqp_url = env.config.queues.amqp_url.clone();
        tokio::spawn(async move {
            let conn = birdsong_common::queue::connect(&amqp_url, "stream")
                .await
                .unwrap();
            let publisher = Publisher::new(&conn).await.unwrap();
            let mut seed = 5_000u64;
            while !stop.load(Ordering::Relaxed) {
                let wav = synthetic_wav((seed % 3) as usize, 6.0, seed);
                let size = wav.len() as u64;
                let (sha, _) = store.put_audio(Bytes::from(wav)).await.unwrap();
                jobs::register_file(
                    &pool,
                    &NewFile {
                        sha256: &sha,
                        original_name: "stream.wav",
                        size_bytes: size,
                        site: None,
                    },
                )
                .await
                .unwrap();
                let task = jobs::add_task(&pool, stream_job, &sha, &sha).await.unwrap();
                jobs::enqueue(
                    &pool,
                    &publisher,
                    &config.queues.classify,
                    stream_job,
                    task.id,
                    &sha,
                )
                .await
                .unwrap();
                submitted.lock().await.push((task.id, Instant::now()));
                seed += 1;
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        })
    };

    // A fourth species, labelled; the worker classifies it with v1 (wrongly)
    // and stores its features.
    let second = new_job(&env).await;
    let fourth = labelled(&env, Some(second), 3, 5, 300).await;
    // The gate compares v1 and v2 on the holdout; only a holdout holding a
    // recording of the new species can tell them apart. Which recordings
    // the holdout gets follows from their content hashes, so say so plainly
    // if a change to the generated audio moves them all out.
    let fourth_split: Vec<(&str, &str)> = fourth.iter().map(|s| (s.as_str(), "4")).collect();
    assert!(
        birdsong_retrainer::split::assign(&fourth_split)
            .contains(&birdsong_retrainer::split::Split::Holdout),
        "no recording of the fourth species falls in the holdout: change the seeds of `labelled` above"
    );
    wait_done(&env, second).await;
    let run = wait_run(&env, request(&env, mlp(json!({})), false).await).await;
    let promoted_seen = Instant::now();
    assert_eq!(run.status, "succeeded", "{run:?}");
    assert_eq!(run.model_version.as_deref(), Some("v2"));
    assert_eq!(run.promoted, Some(true), "{:?}", run.metrics);
    assert_eq!(promoted(&env).await.as_deref(), Some("v2"));
    assert_eq!(classes(&env, "v2").await, 4);
    // Only recordings of the new species can lack stored training windows.
    let decoded = &run.data_summary.as_ref().unwrap()["training_windows"]["decoded"];
    assert!(decoded.as_u64().unwrap() <= 5, "{decoded}");
    let reason: String =
        sqlx::query_scalar("SELECT status_reason FROM model_versions WHERE version = 'v2'")
            .fetch_one(&env.pool)
            .await
            .unwrap();
    assert!(reason.contains("beat v1 on the holdout"), "{reason}");
    // Keep the stream going for a while on v2, then stop it.
    tokio::time::sleep(Duration::from_secs(3)).await;
    stop.store(true, Ordering::Relaxed);
    stream.await.unwrap();
    wait_done(&env, stream_job).await;

    let submitted = submitted.lock().await.clone();
    let rows: Vec<(Uuid, String, Option<String>)> =
        sqlx::query_as("SELECT id, status, model_version FROM tasks WHERE job_id = $1")
            .bind(stream_job)
            .fetch_all(&env.pool)
            .await
            .unwrap();
    assert_eq!(rows.len(), submitted.len(), "no task lost");
    assert!(submitted.len() >= 10, "the stream ran: {}", submitted.len());
    let late: HashSet<Uuid> = submitted
        .iter()
        .filter(|(_, at)| *at > promoted_seen)
        .map(|(id, _)| *id)
        .collect();
    assert!(!late.is_empty());
    for (id, status, version) in &rows {
        assert_eq!(status, "done", "task {id} ended {status}");
        let version = version.as_deref().unwrap();
        assert!(version == "v1" || version == "v2", "{version}");
        if late.contains(id) {
            assert_eq!(version, "v2", "a task queued after the promotion");
        }
    }
    // The fourth species is now known: reclassify its job from stored
    // features and see v2 name it.
    let publisher = Publisher::new(&env.amqp).await.unwrap();
    let again = registry::reclassify(
        &env.pool,
        &publisher,
        &env.config.queues.classify,
        &registry::Selection::Job(second),
    )
    .await
    .unwrap();
    assert_eq!(again.tasks, 5);
    wait_done(&env, again.job_id).await;
    let right: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM job_file_results WHERE job_id = $1 AND model_version = 'v2'
           AND species = 'species-3'",
    )
    .bind(again.job_id)
    .fetch_one(&env.pool)
    .await
    .unwrap();
    assert!(right >= 4, "v2 recognises the fourth species ({right}/5)");

    retrainer.shutdown().await;
    worker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worse_model_is_kept_a_forced_one_promoted_and_rollback_restores() {
    let env = TestEnv::start().await.expect("test environment");
    let retrainer = InProcess::retrainer(&env);
    // Labelled but never analysed: the retrainer decodes them itself.
    for species in 0..3 {
        labelled(&env, None, species, 5, 1_000 + 100 * species as u64).await;
    }
    let v1 = wait_run(&env, request(&env, mlp(json!({})), false).await).await;
    assert_eq!(v1.status, "succeeded", "{v1:?}");
    assert_eq!(v1.promoted, Some(true));
    assert_eq!(v1.data_summary.as_ref().unwrap()["decoded"], 15);
    let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM window_features WHERE hop_s = 5")
        .fetch_one(&env.pool)
        .await
        .unwrap();
    assert_eq!(stored, 30, "the decoded features are kept");

    // Unknown parameters fail the run before anything is trained.
    let bad = wait_run(&env, request(&env, json!({"epoch": 3}), false).await).await;
    assert_eq!(bad.status, "failed");
    assert!(bad.error.unwrap().contains("unknown parameter \"epoch\""));

    // An untrained network (learning rate ~0) does not beat v1...
    let worse = mlp(json!({"learning_rate": 1e-9, "epochs": 2}));
    let v2 = wait_run(&env, request(&env, worse.clone(), false).await).await;
    assert_eq!(v2.status, "succeeded", "{v2:?}");
    assert_eq!(v2.model_version.as_deref(), Some("v2"));
    assert_eq!(v2.promoted, Some(false));
    assert_eq!(v2.data_summary.as_ref().unwrap()["decoded"], 0);
    let m = v2.metrics.unwrap();
    let new = m["new"]["recording_macro_f1"].as_f64().unwrap();
    let cur = m["current"]["scores"]["recording_macro_f1"]
        .as_f64()
        .unwrap();
    assert!(new < cur, "untrained {new} vs v1 {cur}");
    // v1 was refit on the holdout: the gate scored the model judged there.
    assert_eq!(m["current"]["scored"], "its judged model", "{m}");
    let (status, reason): (String, String) =
        sqlx::query_as("SELECT status, status_reason FROM model_versions WHERE version = 'v2'")
            .fetch_one(&env.pool)
            .await
            .unwrap();
    assert_eq!(status, "candidate");
    assert!(reason.contains("did not beat v1"), "{reason}");
    assert_eq!(promoted(&env).await.as_deref(), Some("v1"));

    // ...unless forced. Without a refit, the judged model is the one served.
    let mut forced = worse;
    forced["refit"] = json!(false);
    let v3 = wait_run(&env, request(&env, forced, true).await).await;
    assert_eq!(v3.status, "succeeded", "{v3:?}");
    assert_eq!(v3.promoted, Some(true));
    assert_eq!(promoted(&env).await.as_deref(), Some("v3"));
    let stored = registry::artifacts::stored(&env.pool, "v3")
        .await
        .unwrap()
        .expect("v3");
    let artifact = registry::artifacts::load(&env.store, &stored)
        .await
        .unwrap();
    assert_eq!(artifact.meta().refit, None);
    assert!(
        registry::artifacts::load_judged(&env.store, &stored, &artifact)
            .await
            .unwrap()
            .is_none()
    );
    assert!(v3.metrics.as_ref().unwrap()["refit"].is_null());

    // Rollback from the command line; a worker serves v1 again.
    let out = retrainer_process(&env, &["promote", "v1"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("v1 promoted (v3 retired)"));
    assert_eq!(promoted(&env).await.as_deref(), Some("v1"));
    let worker = InProcess::worker(&env);
    let job = new_job(&env).await;
    let publisher = Publisher::new(&env.amqp).await.unwrap();
    let sha = add_recording(&env, 2, 9_999, false).await;
    enqueue(&env, &publisher, job, &sha).await;
    wait_done(&env, job).await;
    assert_eq!(
        statuses(&env, job).await,
        vec![("done".to_string(), Some("v1".to_string()), 1)]
    );
    let species: String =
        sqlx::query_scalar("SELECT species FROM job_file_results WHERE job_id = $1")
            .bind(job)
            .fetch_one(&env.pool)
            .await
            .unwrap();
    assert_eq!(species, "species-2");

    // The registry listing shows all three.
    let out = retrainer_process(&env, &["models", "--json"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let models: Value = serde_json::from_slice(&out.stdout).unwrap();
    let listed: Vec<(&str, &str)> = models
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["version"].as_str().unwrap(),
                m["status"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        listed,
        vec![("v1", "promoted"), ("v2", "candidate"), ("v3", "retired")]
    );

    worker.shutdown().await;
    retrainer.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_requests_never_train_at_once() {
    let env = TestEnv::start().await.expect("test environment");
    for species in 0..3 {
        labelled(&env, None, species, 4, 2_000 + 100 * species as u64).await;
    }
    // A malformed request goes to the dead-letter queue.
    let publisher = Publisher::new(&env.amqp).await.unwrap();
    publisher
        .publish_raw(
            "",
            &env.config.queues.retrain,
            b"{\"not\": \"a request\"}",
            true,
        )
        .await
        .unwrap();
    // Two identical requests and a different one, all queued before any
    // retrainer runs; two retrainers then compete for them.
    let same = mlp(json!({"epochs": 20}));
    let a = request(&env, same.clone(), false).await;
    let b = request(&env, same, false).await;
    let c = request(&env, mlp(json!({"epochs": 25})), false).await;
    let first = InProcess::retrainer(&env);
    let second = InProcess::retrainer(&env);
    let runs = [
        wait_run(&env, a).await,
        wait_run(&env, b).await,
        wait_run(&env, c).await,
    ];
    let outcomes: BTreeSet<&str> = runs[..2].iter().map(|r| r.status.as_str()).collect();
    assert_eq!(
        outcomes,
        BTreeSet::from(["skipped", "succeeded"]),
        "{runs:?}"
    );
    let skipped = runs[..2].iter().find(|r| r.status == "skipped").unwrap();
    let other = if runs[0].status == "skipped" { b } else { a };
    assert!(
        skipped
            .error
            .as_deref()
            .unwrap()
            .contains(&other.to_string()),
        "{skipped:?}"
    );
    assert_eq!(runs[2].status, "succeeded", "{:?}", runs[2]);
    // The two trainings did not overlap.
    let mut spans: Vec<_> = runs
        .iter()
        .filter(|r| r.status == "succeeded")
        .map(|r| (r.started_at.unwrap(), r.finished_at.unwrap()))
        .collect();
    spans.sort();
    assert_eq!(spans.len(), 2);
    assert!(spans[0].1 <= spans[1].0, "trainings overlapped: {spans:?}");

    let dead = env
        .amqp
        .create_channel()
        .await
        .unwrap()
        .basic_get(
            birdsong_common::config::QueueConfig::dead_letter(&env.config.queues.retrain)
                .as_str()
                .into(),
            Default::default(),
        )
        .await
        .unwrap();
    assert!(
        dead.is_some_and(|m| m.delivery.data.starts_with(b"{\"not\"")),
        "the malformed request is dead-lettered"
    );
    first.shutdown().await;
    second.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retrainer_killed_mid_training_changes_nothing() {
    let env = TestEnv::start().await.expect("test environment");
    birdsong_testkit::models::publish_model(&env, "v1", 3)
        .await
        .unwrap();
    for species in 0..3 {
        labelled(&env, None, species, 4, 3_000 + 100 * species as u64).await;
    }
    let mut child = spawn_retrainer(&env);
    let run = request(&env, mlp(json!({"epochs": 100000})), false).await;
    let start = Instant::now();
    loop {
        let row: (String, Option<Value>) =
            sqlx::query_as("SELECT status, progress FROM retrain_runs WHERE id = $1")
                .bind(run)
                .fetch_one(&env.pool)
                .await
                .unwrap();
        let epoch = row
            .1
            .as_ref()
            .and_then(|p| p.get("epoch"))
            .and_then(Value::as_u64)
            .unwrap_or(0);
        if row.0 == "running" && epoch >= 1 {
            break;
        }
        assert!(
            start.elapsed() < LIMIT,
            "run never started training: {row:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(run_row(&env, run).await.status, "running");
    assert_eq!(promoted(&env).await.as_deref(), Some("v1"));
    let versions: i64 = sqlx::query_scalar("SELECT count(*) FROM model_versions")
        .fetch_one(&env.pool)
        .await
        .unwrap();
    assert_eq!(versions, 1);

    // The next retrainer marks the run failed (and does not train it again
    // when the broker redelivers its request).
    let mut child = spawn_retrainer(&env);
    let dead = wait_run(&env, run).await;
    assert_eq!(dead.status, "failed");
    assert_eq!(
        dead.error.as_deref(),
        Some(birdsong_retrainer::lock::STALE_ERROR)
    );
    let next = wait_run(&env, request(&env, mlp(json!({"epochs": 30})), true).await).await;
    assert_eq!(next.status, "succeeded", "{next:?}");
    assert_eq!(next.model_version.as_deref(), Some("v2"));
    assert_eq!(promoted(&env).await.as_deref(), Some("v2"));
    assert_eq!(run_row(&env, run).await.status, "failed");

    // SIGTERM: a clean exit.
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    assert!(child.wait().unwrap().success());
}

/// A model trained elsewhere (here: a head on the BirdNET backbone, as
/// `birdsong-model restrict` writes one) is published and promoted from its
/// artifact directory; a second publish of the same version is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_artifact_directory_is_published_and_promoted_from_the_command_line() {
    let env = TestEnv::start().await.expect("test environment");
    let artifact =
        tokio::task::spawn_blocking(|| birdsong_testkit::models::train_embedding_head(2))
            .await
            .unwrap()
            .unwrap();
    let dir = tempfile::tempdir().unwrap();
    artifact.save_dir(dir.path()).unwrap();
    let path = dir.path().to_string_lossy().to_string();
    let out = retrainer_process(&env, &["publish", &path, "--version", "bn1", "--promote"])
        .output()
        .expect("run birdsong-retrainer publish");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(stdout.contains("birdnet backbone, 2 species"), "{stdout}");
    let (status, feature_version): (String, String) =
        sqlx::query_as("SELECT status, feature_version FROM model_versions WHERE version = 'bn1'")
            .fetch_one(&env.pool)
            .await
            .unwrap();
    assert_eq!(
        (status.as_str(), feature_version.as_str()),
        ("promoted", birdsong_model::BIRDNET_FEATURE_VERSION)
    );
    let again = retrainer_process(&env, &["publish", &path, "--version", "bn1"])
        .output()
        .expect("run birdsong-retrainer publish");
    assert!(!again.status.success(), "a version is published once");
}

/// The anchored architecture: a head on BirdNET's embeddings trained from BirdNET's
/// own columns for the labels it knows (here one, by the name mapping the request
/// gives), published with that recorded. Needs BirdNET
/// (`scripts/birdnet/install.sh --accept-license`); says it skipped without it,
/// unless `BIRDSONG_REQUIRE_BIRDNET=1`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_anchored_head_trains_from_birdnets_own_columns() {
    if birdsong_birdnet::install::for_test()
        .expect("a complete, verified install")
        .is_none()
    {
        return;
    }
    let env = TestEnv::start().await.expect("test environment");
    let retrainer = InProcess::retrainer(&env);
    for species in 0..3 {
        labelled(&env, None, species, 4, 7_000 + 100 * species as u64).await;
    }
    let params = json!({"architecture": "anchored", "epochs": 5,
                        "birdnet_names": {"species-1": "Gray Kingbird"}});
    let run = wait_run(&env, request(&env, params, true).await).await;
    assert_eq!(run.status, "succeeded", "{run:?}");
    let version = run.model_version.expect("a version");
    let (architecture, feature_version): (String, String) = sqlx::query_as(
        "SELECT architecture, feature_version FROM model_versions WHERE version = $1",
    )
    .bind(&version)
    .fetch_one(&env.pool)
    .await
    .unwrap();
    assert_eq!(architecture, birdsong_model::ANCHORED);
    assert_eq!(feature_version, birdsong_model::BIRDNET_FEATURE_VERSION);
    let stored = registry::artifacts::stored(&env.pool, &version)
        .await
        .unwrap()
        .expect("the stored version");
    let artifact = registry::artifacts::load(&env.store, &stored)
        .await
        .unwrap();
    let meta = artifact.meta();
    assert_eq!(meta.network.members, 2, "the head and BirdNET's columns");
    let source = meta.source.as_deref().unwrap_or_default();
    assert!(source.contains("(1 of 3 species)"), "{source}");
    retrainer.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spectrogram_cnn_trains_on_the_recordings_and_workers_serve_it() {
    let env = TestEnv::start().await.expect("test environment");
    let worker = InProcess::worker(&env);
    let retrainer = InProcess::retrainer(&env);
    let mel_windows_stored = || async {
        sqlx::query_scalar::<_, i64>(
            "SELECT count(*) FROM window_features WHERE feature_version = $1",
        )
        .bind(birdsong_model::MEL_FEATURE_VERSION)
        .fetch_one(&env.pool)
        .await
        .unwrap()
    };

    // Three species analysed while no model exists, then the default MLP.
    let first = new_job(&env).await;
    for species in 0..3 {
        labelled(&env, Some(first), species, 5, 2_000 + 100 * species as u64).await;
    }
    let start = Instant::now();
    while statuses(&env, first).await != vec![("awaiting_model".to_string(), None, 15)] {
        assert!(start.elapsed() < LIMIT, "{:?}", statuses(&env, first).await);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let v1 = wait_run(&env, request(&env, mlp(json!({"members": 1})), false).await).await;
    assert_eq!(v1.status, "succeeded", "{v1:?}");
    wait_done(&env, first).await;

    // The CNN, the default when a request names no architecture. Forced: this
    // test is about training and serving it, not about which model wins on
    // synthetic calls.
    let params = json!({"epochs": 8, "crops_per_second": 2.0, "seed": 3});
    let v2 = wait_run(&env, request(&env, params, true).await).await;
    assert_eq!(v2.status, "succeeded", "{v2:?}");
    assert_eq!(v2.model_version.as_deref(), Some("v2"));
    assert_eq!(v2.promoted, Some(true));
    // It trained on the training recordings' whole spectrograms.
    let summary = v2.data_summary.unwrap();
    let training = &summary["training_windows"];
    assert_eq!(
        training["spectrograms"], summary["splits"]["train"]["recordings"],
        "{summary}"
    );
    // Ten seconds at 512 samples per frame: 431 frames each.
    assert_eq!(
        training["frames"].as_u64().unwrap(),
        431 * training["spectrograms"].as_u64().unwrap(),
        "{summary}"
    );
    // v1 was scored on its own acoustic windows of the same holdout.
    let metrics = v2.metrics.unwrap();
    assert!(
        metrics["current"]["scores"].is_object() && metrics["current"]["load_error"].is_null(),
        "{metrics}"
    );
    let (architecture, feature_version): (String, String) = sqlx::query_as(
        "SELECT architecture, feature_version FROM model_versions WHERE version = 'v2'",
    )
    .fetch_one(&env.pool)
    .await
    .unwrap();
    assert_eq!(
        (architecture.as_str(), feature_version.as_str()),
        ("cnn", birdsong_model::MEL_FEATURE_VERSION)
    );
    assert_eq!(mel_windows_stored().await, 0, "mel patches are not stored");
    // Refit on the spectrograms of all 15 recordings; v1, refit too, was
    // scored through its judged model.
    assert_eq!(metrics["refit"]["recordings"], 15, "{metrics}");
    assert_eq!(
        metrics["current"]["scored"], "its judged model",
        "{metrics}"
    );

    // Workers serve it: new recordings get its scores, detections and summaries.
    let served = new_job(&env).await;
    let publisher = Publisher::new(&env.amqp).await.unwrap();
    for species in 0..3 {
        let sha = add_recording(&env, species, 2_900 + species as u64, false).await;
        enqueue(&env, &publisher, served, &sha).await;
    }
    wait_done(&env, served).await;
    assert_eq!(
        statuses(&env, served).await,
        vec![("done".to_string(), Some("v2".to_string()), 3)]
    );
    let scored: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM window_scores s JOIN tasks t ON t.file_sha256 = s.file_sha256
         WHERE t.job_id = $1 AND s.model_version = 'v2'",
    )
    .bind(served)
    .fetch_one(&env.pool)
    .await
    .unwrap();
    assert_eq!(scored, 6, "two 5-s windows per recording");
    let calls: Vec<(String, Option<String>)> = sqlx::query_as(
        "SELECT f.original_name, r.species FROM job_file_results r
         JOIN audio_files f ON f.sha256 = r.file_sha256
         WHERE r.job_id = $1 ORDER BY 1",
    )
    .bind(served)
    .fetch_all(&env.pool)
    .await
    .unwrap();
    let right = calls
        .iter()
        .filter(|(name, species)| {
            species
                .as_deref()
                .is_some_and(|s| name.starts_with(&format!("s{}-", &s["species-".len()..])))
        })
        .count();
    assert!(right >= 2, "the cnn names the species: {calls:?}");

    // Recordings only the CNN analysed have no stored windows, and can still
    // be classified again: the worker decodes them once more.
    let again = registry::reclassify(
        &env.pool,
        &publisher,
        &env.config.queues.classify,
        &registry::Selection::Job(served),
    )
    .await
    .unwrap();
    assert_eq!(again.tasks, 3);
    wait_done(&env, again.job_id).await;
    assert_eq!(
        statuses(&env, again.job_id).await,
        vec![("done".to_string(), Some("v2".to_string()), 3)]
    );
    assert_eq!(mel_windows_stored().await, 0);

    retrainer.shutdown().await;
    worker.shutdown().await;
}
