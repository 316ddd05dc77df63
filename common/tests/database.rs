//! The schema applies cleanly, repeatedly and concurrently, and its keys make
//! writes idempotent.

use std::process::Stdio;

use birdsong_common::db;
use birdsong_testkit::TestEnv;

#[tokio::test]
async fn migrations_apply_twice_without_error() {
    let env = TestEnv::start().await.expect("test environment");
    // TestEnv already migrated once; a second run finds nothing to do.
    db::migrate(&env.pool).await.expect("second migration run");
    let applied: i64 = sqlx::query_scalar("SELECT count(*) FROM _sqlx_migrations")
        .fetch_one(&env.pool)
        .await
        .unwrap();
    assert_eq!(applied as usize, db::MIGRATOR.iter().count());
}

#[tokio::test]
async fn migrations_from_two_processes_at_once() {
    let env = TestEnv::start().await.expect("test environment");
    // A database that nobody has migrated yet, prepared by two processes
    // started at the same moment.
    let fresh = format!("{}_fresh", env.id);
    let url = birdsong_testkit::with_database(&env.config.database.url, &fresh);
    let spawn = || {
        std::process::Command::new(env!("CARGO_BIN_EXE_birdsong-migrate"))
            .env("BIRDSONG_DATABASE_URL", &url)
            .env("BIRDSONG_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start birdsong-migrate")
    };
    let (a, b) = (spawn(), spawn());
    let (a, b) = (a.wait_with_output().unwrap(), b.wait_with_output().unwrap());
    assert!(a.status.success(), "{}", String::from_utf8_lossy(&a.stderr));
    assert!(b.status.success(), "{}", String::from_utf8_lossy(&b.stderr));

    let cfg = birdsong_common::config::DatabaseConfig {
        url: url.clone(),
        max_connections: 1,
    };
    let pool = db::connect(&cfg).await.unwrap();
    let rows: Vec<(i64, bool)> =
        sqlx::query_as("SELECT version, success FROM _sqlx_migrations ORDER BY version")
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(
        rows.len(),
        db::MIGRATOR.iter().count(),
        "each migration once"
    );
    assert!(rows.iter().all(|(_, ok)| *ok));
    pool.close().await;
    let mut admin = <sqlx::PgConnection as sqlx::Connection>::connect(
        &birdsong_testkit::with_database(&env.config.database.url, "postgres"),
    )
    .await
    .unwrap();
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "DROP DATABASE \"{fresh}\" WITH (FORCE)"
    )))
    .execute(&mut admin)
    .await
    .unwrap();
}

#[tokio::test]
async fn invalid_configuration_fails_fast_naming_the_variable() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_birdsong-migrate"))
        .env("BIRDSONG_DATABASE_MAX_CONNECTIONS", "many")
        .output()
        .expect("run birdsong-migrate");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("BIRDSONG_DATABASE_MAX_CONNECTIONS") && stderr.contains("many"),
        "{stderr}"
    );
}

#[tokio::test]
async fn unique_keys_make_result_writes_idempotent() {
    let env = TestEnv::start().await.expect("test environment");
    let sha = "b".repeat(64);
    sqlx::query(
        "INSERT INTO audio_files (sha256, object_key, original_name, size_bytes) VALUES ($1, $2, 'a.wav', 10)",
    )
    .bind(&sha)
    .bind(format!("audio/{sha}"))
    .execute(&env.pool)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO model_versions (version, object_prefix, architecture, feature_version, input_size, classes, checksum)
         VALUES ('v1', 'models/v1/', 'mlp', 'f1', 95, '[\"a\"]', 'x')",
    )
    .execute(&env.pool)
    .await
    .unwrap();
    for _ in 0..2 {
        sqlx::query(
            "INSERT INTO window_scores (file_sha256, model_version, window_index, start_s, end_s, species, confidence, top_k)
             VALUES ($1, 'v1', 0, 0, 5, 'a', 0.9, '[]')
             ON CONFLICT (file_sha256, model_version, window_index) DO UPDATE SET confidence = EXCLUDED.confidence",
        )
        .bind(&sha)
        .execute(&env.pool)
        .await
        .unwrap();
        sqlx::query(
            "INSERT INTO detections (file_sha256, model_version, window_index, start_s, end_s, species, confidence, threshold, top_k)
             VALUES ($1, 'v1', 0, 0, 5, 'a', 0.9, 0.5, '[]')
             ON CONFLICT (file_sha256, model_version, window_index, species) DO UPDATE SET confidence = EXCLUDED.confidence",
        )
        .bind(&sha)
        .execute(&env.pool)
        .await
        .unwrap();
    }
    for table in ["window_scores", "detections"] {
        let n: i64 =
            sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT count(*) FROM {table}")))
                .fetch_one(&env.pool)
                .await
                .unwrap();
        assert_eq!(n, 1, "{table}");
    }
    // Only one promoted model at a time.
    sqlx::query("UPDATE model_versions SET status = 'promoted'")
        .execute(&env.pool)
        .await
        .unwrap();
    let second = sqlx::query(
        "INSERT INTO model_versions (version, object_prefix, architecture, feature_version, input_size, classes, checksum, status)
         VALUES ('v2', 'models/v2/', 'mlp', 'f1', 95, '[\"a\"]', 'x', 'promoted')",
    )
    .execute(&env.pool)
    .await;
    assert!(second.is_err(), "two promoted models must be refused");
    // A failed task must say why.
    let job = uuid::Uuid::new_v4();
    sqlx::query("INSERT INTO jobs (id, source) VALUES ($1, 'api')")
        .bind(job)
        .execute(&env.pool)
        .await
        .unwrap();
    let silent_failure = sqlx::query(
        "INSERT INTO tasks (id, job_id, file_sha256, source_path, status) VALUES ($1, $2, $3, 'a.wav', 'failed')",
    )
    .bind(uuid::Uuid::new_v4())
    .bind(job)
    .bind(&sha)
    .execute(&env.pool)
    .await;
    assert!(
        silent_failure.is_err(),
        "a failed task without an error must be refused"
    );
}

#[tokio::test]
async fn a_recorders_file_name_gives_the_recording_its_start_time() {
    use birdsong_common::jobs::{NewFile, register_file};
    let env = TestEnv::start().await.expect("test environment");
    let recorded_at = |sha: String| {
        let pool = env.pool.clone();
        async move {
            sqlx::query_scalar::<_, Option<chrono::DateTime<chrono::Utc>>>(
                "SELECT recorded_at FROM audio_files WHERE sha256 = $1",
            )
            .bind(sha)
            .fetch_one(&pool)
            .await
            .unwrap()
            .map(|t| t.to_rfc3339())
        }
    };
    let (named, plain) = ("c".repeat(64), "d".repeat(64));
    for (sha, name) in [
        (&named, "site3/SMM01234_20240501_053000.wav"),
        // The same bytes again under a name with another time: the first is kept.
        (&named, "20250101_000000.wav"),
        (&plain, "XC123456.mp3"),
    ] {
        register_file(
            &env.pool,
            &NewFile {
                sha256: sha,
                original_name: name,
                size_bytes: 10,
                site: None,
            },
        )
        .await
        .unwrap();
    }
    assert_eq!(
        recorded_at(named).await.as_deref(),
        Some("2024-05-01T05:30:00+00:00")
    );
    assert_eq!(recorded_at(plain).await, None);
}
