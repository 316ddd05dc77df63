//! The worker on the BirdNET backbone: BirdNET's 3-s windows stored as
//! embeddings, classified by a model trained on embeddings, and a worker told to
//! use BirdNET without it installed refusing to start with a message that says
//! how to install it.
//!
//! The first test needs BirdNET (`scripts/birdnet/install.sh --accept-license`)
//! and says it skipped without it, unless `BIRDSONG_REQUIRE_BIRDNET=1`.

mod support;

use std::time::Duration;

use birdsong_testkit::TestEnv;
use birdsong_testkit::audio::synthetic_wav;
use birdsong_testkit::models::{store_model, train_embedding_head};
use support::*;

const LIMIT: Duration = Duration::from_secs(180);

fn birdnet_installed() -> bool {
    birdsong_birdnet::install::for_test()
        .expect("a complete, verified install")
        .is_some()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn birdnet_windows_are_stored_as_embeddings_and_classified_without_decoding_again() {
    if !birdnet_installed() {
        return;
    }
    let env = TestEnv::start().await.expect("test environment");
    let mut config = env.config.clone();
    config.worker.backbone = "birdnet".into();

    // No model yet: BirdNET's windows are embedded and stored.
    let job = new_job(&env).await;
    let (task, sha) = submit(&env, job, "seven.wav", synthetic_wav(0, 7.0, 1)).await;
    let worker = start_worker_with(config.clone());
    wait_for_job(&env, job, LIMIT).await;
    let status: String = sqlx::query_scalar("SELECT status FROM tasks WHERE id = $1")
        .bind(task)
        .fetch_one(&env.pool)
        .await
        .unwrap();
    assert_eq!(status, "awaiting_model");
    let rows: Vec<(f32, f32, f64, f64, i32)> = sqlx::query_as(
        "SELECT window_s, hop_s, start_s, end_s, cardinality(features) FROM window_features
         WHERE file_sha256 = $1 AND feature_version = $2 ORDER BY window_index",
    )
    .bind(&sha)
    .bind(birdsong_model::BIRDNET_FEATURE_VERSION)
    .fetch_all(&env.pool)
    .await
    .unwrap();
    // 0–3, 3–6 and the 1-s tail, each a 1024-value embedding and its level.
    assert_eq!(rows.len(), 3, "{rows:?}");
    for (window_s, hop_s, _, _, values) in &rows {
        assert_eq!((*window_s, *hop_s), (3.0, 3.0));
        assert_eq!(*values as usize, birdsong_model::BIRDNET_VECTOR);
    }
    assert!((rows[2].3 - 7.0).abs() < 0.01);

    // A model on embeddings is promoted: the same recording in a new job is
    // classified from the stored embeddings.
    let head = tokio::task::spawn_blocking(|| train_embedding_head(2))
        .await
        .unwrap()
        .unwrap();
    store_model(&env, "v1", head).await.unwrap();
    let publisher = birdsong_common::queue::Publisher::new(&env.amqp)
        .await
        .unwrap();
    birdsong_registry::promote(
        &env.pool,
        &publisher,
        &env.config.queues.model_exchange,
        "v1",
        "test",
    )
    .await
    .unwrap();
    let again = new_job(&env).await;
    let size = synthetic_wav(0, 7.0, 1).len() as u64;
    let task = register_and_enqueue(&env, again, "seven-again.wav", &sha, size).await;
    wait_for_job(&env, again, LIMIT).await;
    worker.shutdown().await;
    let (status, version): (String, Option<String>) =
        sqlx::query_as("SELECT status, model_version FROM tasks WHERE id = $1")
            .bind(task)
            .fetch_one(&env.pool)
            .await
            .unwrap();
    assert_eq!((status.as_str(), version.as_deref()), ("done", Some("v1")));
    let scored: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM window_scores WHERE file_sha256 = $1 AND model_version = 'v1'",
    )
    .bind(&sha)
    .fetch_one(&env.pool)
    .await
    .unwrap();
    assert_eq!(scored, 3);
    let stored: i64 =
        sqlx::query_scalar("SELECT count(*) FROM window_features WHERE file_sha256 = $1")
            .bind(&sha)
            .fetch_one(&env.pool)
            .await
            .unwrap();
    assert_eq!(stored, 3, "embeddings are stored once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_told_to_use_a_missing_birdnet_refuses_to_start() {
    let env = TestEnv::start().await.expect("test environment");
    let mut config = env.config.clone();
    config.worker.backbone = "birdnet".into();
    config.worker.birdnet_dir = Some(std::env::temp_dir().join("birdsong-no-birdnet-install"));
    let (_stop, stopped) = tokio::sync::watch::channel(false);
    let err = tokio::time::timeout(LIMIT, birdsong_worker::run(config, stopped))
        .await
        .expect("the worker stops at once")
        .expect_err("a worker without BirdNET cannot analyse with it");
    let text = format!("{err:#}");
    assert!(text.contains("BIRDSONG_BACKBONE"), "{text}");
    assert!(text.contains("install.sh"), "{text}");
}
