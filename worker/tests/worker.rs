//! The worker against real PostgreSQL, RabbitMQ and an S3-protocol server.

mod support;

use std::time::Duration;

use birdsong_common::config::QueueConfig;
use birdsong_common::queue::Publisher;
use birdsong_testkit::TestEnv;
use birdsong_testkit::audio::synthetic_wav;
use lapin::options::BasicGetOptions;
use support::*;

const LIMIT: Duration = Duration::from_secs(120);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_model_features_are_stored_and_bad_files_fail_with_reasons() {
    let env = TestEnv::start().await.expect("test environment");
    let job = new_job(&env).await;
    let (short, short_sha) = submit(&env, job, "short.wav", synthetic_wav(0, 3.0, 1)).await;
    let (long, long_sha) = submit(&env, job, "long.wav", synthetic_wav(1, 12.0, 2)).await;
    let (bad, _) = submit(&env, job, "notes.wav", b"field notes, not audio".repeat(50)).await;
    let (empty, _) = submit(&env, job, "empty.mp3", Vec::new()).await;

    let worker = start_worker(&env);
    wait_for_job(&env, job, LIMIT).await;
    worker.shutdown().await;

    let status = |id| {
        let pool = env.pool.clone();
        async move {
            sqlx::query_as::<_, (String, Option<String>, Option<String>)>(
                "SELECT status, error, error_kind FROM tasks WHERE id = $1",
            )
            .bind(id)
            .fetch_one(&pool)
            .await
            .unwrap()
        }
    };
    assert_eq!(status(short).await.0, "awaiting_model");
    assert_eq!(status(long).await.0, "awaiting_model");
    for id in [bad, empty] {
        let (s, error, kind) = status(id).await;
        assert_eq!(s, "failed");
        assert_eq!(kind.as_deref(), Some("bad_audio"));
        assert!(!error.unwrap_or_default().is_empty());
    }
    for (sha, seconds) in [(&short_sha, 3.0), (&long_sha, 12.0)] {
        let n: i64 =
            sqlx::query_scalar("SELECT count(*) FROM window_features WHERE file_sha256 = $1")
                .bind(sha)
                .fetch_one(&env.pool)
                .await
                .unwrap();
        assert_eq!(
            n,
            expected_windows(seconds),
            "windows of a {seconds} s recording"
        );
        let (rate, duration): (Option<i32>, Option<f64>) =
            sqlx::query_as("SELECT sample_rate, duration_s FROM audio_files WHERE sha256 = $1")
                .bind(sha)
                .fetch_one(&env.pool)
                .await
                .unwrap();
        assert_eq!(rate, Some(22_050));
        assert!((duration.unwrap() - seconds).abs() < 0.05);
    }
    // Bad audio is the user's problem, not the queue's: nothing dead-lettered.
    let ch = env.amqp.create_channel().await.unwrap();
    let dead = QueueConfig::dead_letter(&env.config.queues.classify);
    assert!(
        ch.basic_get(dead.as_str().into(), BasicGetOptions { no_ack: true })
            .await
            .unwrap()
            .is_none()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_promoted_model_calls_are_detected_and_noise_is_not() {
    let env = TestEnv::start().await.expect("test environment");
    publish_model(&env, "v1", 3).await;
    let job = new_job(&env).await;
    // No bird at all: white noise and a recorder's near-silence. The model was never
    // shown either (only the synthetic background every model trains against).
    let mut state = 0x2545_F491_4F6C_DD1Du64;
    let mut noise = |amplitude: f32| -> Vec<f32> {
        (0..22_050 * 8)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                ((state >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * amplitude
            })
            .collect()
    };
    let mut backgrounds = Vec::new();
    for (name, amplitude) in [("white-noise.wav", 0.3), ("near-silence.wav", 0.0003)] {
        let wav = birdsong_testkit::audio::wav_pcm16(&noise(amplitude), 22_050);
        backgrounds.push(submit(&env, job, name, wav).await);
    }
    let mut submitted = Vec::new();
    for species in 0..3 {
        for seed in 0..2 {
            let seconds = 6.0 + 4.0 * seed as f32;
            let (task, sha) = submit(
                &env,
                job,
                &format!("s{species}-{seed}.wav"),
                synthetic_wav(species, seconds, 50 + seed as u64),
            )
            .await;
            submitted.push((task, sha, species, seconds));
        }
    }
    let worker = start_worker(&env);
    wait_for_job(&env, job, LIMIT).await;
    worker.shutdown().await;

    let mut right = 0;
    for (task, sha, species, seconds) in &submitted {
        let (status, version): (String, Option<String>) =
            sqlx::query_as("SELECT status, model_version FROM tasks WHERE id = $1")
                .bind(task)
                .fetch_one(&env.pool)
                .await
                .unwrap();
        assert_eq!(status, "done");
        assert_eq!(version.as_deref(), Some("v1"));
        let scored: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM window_scores WHERE file_sha256 = $1 AND model_version = 'v1'",
        )
        .bind(sha)
        .fetch_one(&env.pool)
        .await
        .unwrap();
        assert_eq!(scored, expected_windows(f64::from(*seconds)));
        // Detections are exactly the scores that reached their species' threshold.
        let (detections, below): (i64, i64) = sqlx::query_as(
            "SELECT count(*), count(*) FILTER (WHERE confidence < threshold)
             FROM detections WHERE file_sha256 = $1 AND model_version = 'v1'",
        )
        .bind(sha)
        .fetch_one(&env.pool)
        .await
        .unwrap();
        assert_eq!(below, 0);
        assert!(detections <= scored * 3);
        let (predicted, confidence, top_k, detected): (
            Option<String>,
            Option<f32>,
            serde_json::Value,
            serde_json::Value,
        ) = sqlx::query_as(
            "SELECT species, confidence, top_k, detected FROM file_summaries WHERE file_sha256 = $1",
        )
        .bind(sha)
        .fetch_one(&env.pool)
        .await
        .unwrap();
        assert!(confidence.is_none_or(|c| (0.0..=1.0).contains(&c)));
        assert_eq!(top_k.as_array().map(Vec::len), Some(3));
        // The recording's call is the species detected in the most windows, or none.
        let first = detected
            .as_array()
            .and_then(|d| d.first())
            .and_then(|d| d["species"].as_str())
            .map(str::to_string);
        assert_eq!(predicted, first);
        assert_eq!(predicted.is_some(), detections > 0);
        if predicted == Some(format!("species-{species}")) {
            right += 1;
        }
    }
    // Clearly different synthetic species: a working pipeline gets them right.
    assert!(right >= 5, "only {right} of 6 recordings classified right");
    for (_, sha) in &backgrounds {
        let (species, detected, top_k): (Option<String>, serde_json::Value, serde_json::Value) =
            sqlx::query_as(
                "SELECT species, detected, top_k FROM file_summaries WHERE file_sha256 = $1",
            )
            .bind(sha)
            .fetch_one(&env.pool)
            .await
            .unwrap();
        assert_eq!(species, None, "no detection expected; scores {top_k}");
        assert_eq!(detected, serde_json::json!([]));
        // Its scores are still there to query.
        assert_eq!(top_k.as_array().map(Vec::len), Some(3));
    }

    // The views answer the job's questions.
    let (tasks, done, finished): (i64, i64, bool) =
        sqlx::query_as("SELECT tasks, done, finished FROM job_progress WHERE job_id = $1")
            .bind(job)
            .fetch_one(&env.pool)
            .await
            .unwrap();
    assert_eq!((tasks, done, finished), (8, 8, true));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicate_deliveries_and_malformed_messages_change_nothing() {
    let env = TestEnv::start().await.expect("test environment");
    publish_model(&env, "v1", 2).await;
    let job = new_job(&env).await;
    let (task, sha) = submit(&env, job, "a.wav", synthetic_wav(0, 11.0, 9)).await;
    // The same task published twice more (a producer re-run, a redelivery).
    let publisher = Publisher::new(&env.amqp).await.unwrap();
    let msg = birdsong_common::messages::ClassifyTask::new(task, job, sha.clone());
    publisher
        .publish(&env.config.queues.classify, &msg)
        .await
        .unwrap();
    publisher
        .publish(&env.config.queues.classify, &msg)
        .await
        .unwrap();
    // Poison: not JSON, wrong schema, over the size limit, a task that does
    // not exist.
    let q = &env.config.queues.classify;
    publisher
        .publish_raw("", q, b"{not json", true)
        .await
        .unwrap();
    publisher
        .publish_raw("", q, br#"{"schema":99,"task_id":"x"}"#, true)
        .await
        .unwrap();
    let oversized = format!(
        r#"{{"schema":1,"padding":"{}"}}"#,
        "x".repeat(birdsong_common::messages::MAX_MESSAGE_BYTES)
    );
    publisher
        .publish_raw("", q, oversized.as_bytes(), true)
        .await
        .unwrap();
    let ghost =
        birdsong_common::messages::ClassifyTask::new(uuid::Uuid::new_v4(), job, sha.clone());
    publisher.publish(q, &ghost).await.unwrap();

    let worker = start_worker(&env);
    wait_for_job(&env, job, LIMIT).await;
    // Let the worker drain the rest of the queue.
    let ch = env.amqp.create_channel().await.unwrap();
    let dead = QueueConfig::dead_letter(q);
    let mut dead_letters = 0;
    for _ in 0..200 {
        while ch
            .basic_get(dead.as_str().into(), BasicGetOptions { no_ack: true })
            .await
            .unwrap()
            .is_some()
        {
            dead_letters += 1;
        }
        if dead_letters >= 4 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    worker.shutdown().await;
    assert_eq!(
        dead_letters, 4,
        "the four poison messages are dead-lettered"
    );

    let (scored, summaries, features) = result_rows(&env, &sha).await;
    assert_eq!((scored, summaries, features), (3, 1, 3));
    let status: String = sqlx::query_scalar("SELECT status FROM tasks WHERE id = $1")
        .bind(task)
        .fetch_one(&env.pool)
        .await
        .unwrap();
    assert_eq!(status, "done");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_mid_batch_loses_and_duplicates_nothing() {
    let env = TestEnv::start().await.expect("test environment");
    publish_model(&env, "v1", 2).await;
    let job = new_job(&env).await;
    let mut files = Vec::new();
    for i in 0..24 {
        let seconds = 5.0 + (i % 4) as f32 * 3.0;
        let (_, sha) = submit(
            &env,
            job,
            &format!("f{i}.wav"),
            synthetic_wav(i % 2, seconds, 300 + i as u64),
        )
        .await;
        files.push((sha, seconds));
    }
    let mut victim = spawn_worker_process(&env);
    // Kill it once some, but not all, tasks are done.
    let started = std::time::Instant::now();
    loop {
        let done: i64 =
            sqlx::query_scalar("SELECT count(*) FROM tasks WHERE job_id = $1 AND status = 'done'")
                .bind(job)
                .fetch_one(&env.pool)
                .await
                .unwrap();
        if done >= 3 {
            break;
        }
        assert!(
            started.elapsed() < LIMIT,
            "the first worker made no progress"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    victim.kill().unwrap(); // SIGKILL
    victim.wait().unwrap();
    let done_at_kill: i64 =
        sqlx::query_scalar("SELECT count(*) FROM tasks WHERE job_id = $1 AND status = 'done'")
            .bind(job)
            .fetch_one(&env.pool)
            .await
            .unwrap();
    eprintln!("killed the worker with {done_at_kill} of 24 tasks done");
    assert!(done_at_kill < 24, "the kill must happen mid-batch");

    let mut survivor = spawn_worker_process(&env);
    wait_for_job(&env, job, LIMIT).await;
    terminate(&mut survivor);

    for (sha, seconds) in &files {
        let (scored, summaries, _) = result_rows(&env, sha).await;
        assert_eq!(scored, expected_windows(f64::from(*seconds)));
        assert_eq!(summaries, 1);
    }
    let done: i64 =
        sqlx::query_scalar("SELECT count(*) FROM tasks WHERE job_id = $1 AND status = 'done'")
            .bind(job)
            .fetch_one(&env.pool)
            .await
            .unwrap();
    assert_eq!(done, 24);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_that_keeps_being_cut_off_fails_with_a_reason_instead_of_vanishing() {
    let env = TestEnv::start().await.expect("test environment");
    let limit = env.config.queues.delivery_limit as i32;
    let job = new_job(&env).await;
    let (cut_off, _) = submit(&env, job, "cursed.wav", synthetic_wav(0, 6.0, 41)).await;
    let (once, _) = submit(&env, job, "unlucky.wav", synthetic_wav(1, 6.0, 42)).await;
    // What earlier deliveries that were killed mid-task leave behind: the
    // task still `processing`. One has been cut off limit - 1 times before,
    // the other never.
    sqlx::query("UPDATE tasks SET status = 'processing', interruptions = $2 WHERE id = $1")
        .bind(cut_off)
        .bind(limit - 1)
        .execute(&env.pool)
        .await
        .unwrap();
    sqlx::query("UPDATE tasks SET status = 'processing' WHERE id = $1")
        .bind(once)
        .execute(&env.pool)
        .await
        .unwrap();

    let worker = start_worker(&env);
    wait_for_job(&env, job, LIMIT).await;
    worker.shutdown().await;

    let row = |id| {
        let pool = env.pool.clone();
        async move {
            sqlx::query_as::<_, (String, Option<String>, Option<String>, i32)>(
                "SELECT status, error_kind, error, interruptions FROM tasks WHERE id = $1",
            )
            .bind(id)
            .fetch_one(&pool)
            .await
            .unwrap()
        }
    };
    let (status, kind, error, n) = row(cut_off).await;
    eprintln!("after {n} interruptions: {status}: {error:?}");
    assert_eq!(
        (status.as_str(), kind.as_deref(), n),
        ("failed", Some("interrupted"), limit)
    );
    assert!(error.unwrap_or_default().contains("interrupted"));
    let (status, _, error, n) = row(once).await;
    assert_eq!((status.as_str(), n), ("awaiting_model", 1), "{error:?}");
}

/// SIGTERM and wait: the graceful path, which must exit 0.
fn terminate(child: &mut std::process::Child) {
    let pid = child.id() as i32;
    let status = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let exit = child.wait().unwrap();
    assert!(exit.success(), "worker exited with {exit} on SIGTERM");
}
