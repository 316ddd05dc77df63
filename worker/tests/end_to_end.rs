//! Producer → object store → queue → two workers → PostgreSQL, end to end,
//! with good and bad files in a folder and in a tar.gz.

mod support;

use std::time::Duration;

use birdsong_ingest::{IngestOptions, Services, ingest};
use birdsong_testkit::TestEnv;
use birdsong_testkit::audio::synthetic_wav;
use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_folder_and_an_archive_are_classified_by_two_workers() {
    let env = TestEnv::start().await.expect("test environment");
    publish_model(&env, "v1", 3).await;

    let dir = tempfile::tempdir().unwrap();
    let folder = dir.path().join("survey");
    let packed = dir.path().join("packed");
    std::fs::create_dir_all(&folder).unwrap();
    std::fs::create_dir_all(&packed).unwrap();
    let mut good = Vec::new();
    for i in 0..9usize {
        let seconds = 4.0 + (i % 3) as f32 * 4.0;
        let wav = synthetic_wav(i % 3, seconds, 700 + i as u64);
        let target = if i < 6 { &folder } else { &packed };
        std::fs::write(target.join(format!("rec{i}.wav")), &wav).unwrap();
        good.push((birdsong_common::store::sha256_hex(&wav), seconds));
    }
    std::fs::write(folder.join("notes.wav"), b"not audio at all".repeat(20)).unwrap();
    std::fs::write(packed.join("empty.flac"), b"").unwrap();
    std::fs::write(packed.join("noise.mp3"), [7u8; 3000]).unwrap();
    let archive = dir.path().join("packed.tar.gz");
    let status = std::process::Command::new("tar")
        .arg("-czf")
        .arg(&archive)
        .arg("-C")
        .arg(&packed)
        .arg(".")
        .status()
        .expect("tar");
    assert!(status.success());

    let workers = [start_worker(&env), start_worker(&env)];
    let services = Services::connect(&env.config).await.unwrap();
    let opts = IngestOptions::new(vec![folder.clone(), archive.clone()]);
    let summary = ingest(&services, &opts).await.unwrap();
    assert_eq!(summary.accepted, 9);
    // The text file is refused by content; the empty file and the noise
    // too. Which entries the producer refuses and which the worker fails
    // does not matter here: each must end with a reason.
    wait_for_job(&env, summary.job_id, Duration::from_secs(180)).await;
    for w in workers {
        w.shutdown().await;
    }

    let rows: Vec<(String, Option<String>)> =
        sqlx::query_as("SELECT status, error FROM tasks WHERE job_id = $1")
            .bind(summary.job_id)
            .fetch_all(&env.pool)
            .await
            .unwrap();
    for (status, error) in &rows {
        assert!(
            status == "done"
                || (status == "failed" && error.as_deref().is_some_and(|e| !e.is_empty())),
            "task ended {status} {error:?}"
        );
    }
    let rejected: i64 = sqlx::query_scalar("SELECT count(*) FROM job_rejections WHERE job_id = $1")
        .bind(summary.job_id)
        .fetch_one(&env.pool)
        .await
        .unwrap();
    let failed = rows.iter().filter(|(s, _)| s == "failed").count() as i64;
    assert_eq!(
        rejected + failed,
        3,
        "every bad file is refused or failed with a reason"
    );

    for (sha, seconds) in &good {
        let (scored, summaries, _) = result_rows(&env, sha).await;
        assert_eq!(
            scored,
            expected_windows(f64::from(*seconds)),
            "no lost or duplicated windows"
        );
        assert_eq!(summaries, 1);
    }

    // Running the same ingest again adds nothing.
    let again = ingest(&services, &opts).await.unwrap();
    assert_eq!(again.job_id, summary.job_id);
    assert_eq!(again.accepted, 0);
    let tasks: i64 = sqlx::query_scalar("SELECT count(*) FROM tasks WHERE job_id = $1")
        .bind(summary.job_id)
        .fetch_one(&env.pool)
        .await
        .unwrap();
    assert_eq!(tasks as usize, rows.len());
}
