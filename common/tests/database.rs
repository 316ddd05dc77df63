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

#[tokio::test]
async fn a_wav_header_and_the_ingest_time_zone_fill_the_recording_columns() {
    use birdsong_common::jobs::{NewFile, Provenance, known_time_zone, register_recording};
    use birdsong_common::recorded::TimeZone;
    use birdsong_common::wav_metadata;
    use birdsong_testkit::audio::{wav_i16, with_audiomoth_header, with_guano};

    let env = TestEnv::start().await.expect("test environment");
    let pool = &env.pool;
    let base = wav_i16(
        (0..22_050).map(|i| ((i as f32 * 0.1).sin() * 3000.0) as i16),
        22_050,
    );
    let moth = with_audiomoth_header(
        &base,
        "Recorded at 05:30:00 01/05/2024 (UTC+1) by AudioMoth 24F319055FDF1D8D at medium gain while battery was 4.2V and temperature was 15.3C.",
        "AudioMoth 24F319055FDF1D8D",
    );
    let song_meter = with_guano(
        &base,
        "GUANO|Version:1.0\nFirmware Version:1.1\nMake:Wildlife Acoustics, Inc.\nModel:Song Meter Mini\nSerial:SMA00646\nOriginal Filename:SMA00646_20201017_130500.wav\nTimestamp:2020-10-17 13:05:00+1:00\nLoc Position:54.75656 -1.59106\nTemperature Int:21.25\nSamplerate:22050\n",
    );
    // Both still decode: the metadata chunks are where recorders put them.
    for wav in [&moth, &song_meter] {
        birdsong_audio::probe_reader(std::io::Cursor::new(wav.clone())).expect("decodable");
    }
    let header = |wav: &[u8]| {
        wav_metadata::read(&mut std::io::Cursor::new(wav))
            .unwrap()
            .unwrap()
    };
    let (moth_header, guano_header) = (header(&moth), header(&song_meter));
    let berlin: TimeZone = "Europe/Berlin".parse().unwrap();
    let new_york: TimeZone = "America/New_York".parse().unwrap();
    let plus_two: TimeZone = "+02:00".parse().unwrap();
    assert!(known_time_zone(pool, &berlin).await.unwrap());
    assert!(known_time_zone(pool, &plus_two).await.unwrap());
    assert!(
        !known_time_zone(pool, &"Mars/Olympus_Mons".parse().unwrap())
            .await
            .unwrap()
    );

    let sha = |c: char| c.to_string().repeat(64);
    let register = |sha: String, name: &'static str, header, zone| async move {
        register_recording(
            pool,
            &NewFile {
                sha256: &sha,
                original_name: name,
                size_bytes: 10,
                site: Some("marsh"),
            },
            Provenance {
                header,
                time_zone: zone,
            },
        )
        .await
        .unwrap();
    };
    // The header beats the name and the ingest's zone.
    register(
        sha('1'),
        "20240501_053000.WAV",
        Some(&moth_header),
        Some(&berlin),
    )
    .await;
    register(
        sha('2'),
        "SMA00646_20201017_130500.wav",
        Some(&guano_header),
        None,
    )
    .await;
    // Names in a named zone: daylight saving time applies.
    register(
        sha('3'),
        "SMM01234_20240101_053000.wav",
        None,
        Some(&new_york),
    )
    .await;
    register(sha('4'), "20240701_053000.wav", None, Some(&berlin)).await;
    // A name read as UTC, then the same bytes with a zone: the zone improves it;
    // then again without one: kept.
    register(sha('5'), "20240501_053000.wav", None, None).await;
    register(sha('5'), "20240501_053000.wav", None, Some(&plus_two)).await;
    register(sha('5'), "20240501_053000.wav", None, None).await;
    // No time anywhere.
    register(sha('6'), "XC123456.mp3", None, Some(&berlin)).await;

    type Columns = (
        Option<String>,
        Option<i32>,
        Option<String>,
        Option<f64>,
        Option<f64>,
        Option<String>,
        Option<String>,
        Option<String>,
    );
    let columns = |c: char| async move {
        sqlx::query_as::<_, Columns>(
            "SELECT to_char(recorded_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS'),
                    utc_offset_minutes, recorded_at_source, latitude, longitude, device,
                    device_serial, header_metadata->'guano'->>'Temperature Int'
             FROM audio_files WHERE sha256 = $1",
        )
        .bind(sha(c))
        .fetch_one(pool)
        .await
        .unwrap()
    };
    let s = |v: &str| Some(v.to_string());
    assert_eq!(
        columns('1').await,
        (
            s("2024-05-01T04:30:00"),
            Some(60),
            s("audiomoth"),
            None,
            None,
            s("AudioMoth"),
            s("24F319055FDF1D8D"),
            None
        )
    );
    assert_eq!(
        columns('2').await,
        (
            s("2020-10-17T12:05:00"),
            Some(60),
            s("guano"),
            Some(54.75656),
            Some(-1.59106),
            s("Wildlife Acoustics, Inc. Song Meter Mini"),
            s("SMA00646"),
            s("21.25")
        )
    );
    let time = |c: char| async move {
        let all = columns(c).await;
        (all.0, all.1, all.2)
    };
    assert_eq!(
        time('3').await,
        (s("2024-01-01T10:30:00"), Some(-300), s("file_name"))
    );
    assert_eq!(
        time('4').await,
        (s("2024-07-01T03:30:00"), Some(120), s("file_name"))
    );
    assert_eq!(
        time('5').await,
        (s("2024-05-01T03:30:00"), Some(120), s("file_name"))
    );
    assert_eq!(time('6').await, (None, None, None));

    // A detection 3 s into the AudioMoth recording happened at 04:30:03 UTC,
    // 05:30:03 on the recorder's clock.
    sqlx::query(
        "INSERT INTO model_versions (version, object_prefix, architecture, feature_version, input_size, classes, checksum)
         VALUES ('v1', 'models/v1/', 'mlp', 'f1', 95, '[\"a\"]', 'x')",
    )
    .execute(pool)
    .await
    .unwrap();
    let job = uuid::Uuid::new_v4();
    sqlx::query("INSERT INTO jobs (id, source) VALUES ($1, 'api')")
        .bind(job)
        .execute(pool)
        .await
        .unwrap();
    for (c, path) in [('1', "moth.wav"), ('6', "unknown.mp3")] {
        sqlx::query(
            "INSERT INTO tasks (id, job_id, file_sha256, source_path, status, model_version)
             VALUES ($1, $2, $3, $4, 'done', 'v1')",
        )
        .bind(uuid::Uuid::new_v4())
        .bind(job)
        .bind(sha(c))
        .bind(path)
        .execute(pool)
        .await
        .unwrap();
        sqlx::query(
            "INSERT INTO detections (file_sha256, model_version, window_index, start_s, end_s, species, confidence, threshold, top_k)
             VALUES ($1, 'v1', 1, 3, 6, 'a', 0.9, 0.5, '[]')",
        )
        .bind(sha(c))
        .execute(pool)
        .await
        .unwrap();
    }
    type Detection = (String, Option<String>, Option<String>, Option<String>);
    let detections: Vec<Detection> = sqlx::query_as(
        "SELECT source_path,
                    to_char(start_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS'),
                    to_char(end_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS'),
                    to_char(start_local, 'YYYY-MM-DD\"T\"HH24:MI:SS')
             FROM job_detections WHERE job_id = $1 ORDER BY source_path",
    )
    .bind(job)
    .fetch_all(pool)
    .await
    .unwrap();
    assert_eq!(
        detections,
        vec![
            (
                "moth.wav".to_string(),
                s("2024-05-01T04:30:03"),
                s("2024-05-01T04:30:06"),
                s("2024-05-01T05:30:03")
            ),
            ("unknown.mp3".to_string(), None, None, None),
        ]
    );
}
