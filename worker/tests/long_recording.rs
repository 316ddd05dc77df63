//! An hour-long recording: the right number of windows, and the worker's
//! memory stays bounded (the recording is spooled to disk and decoded as a
//! stream, never held whole).

mod support;

use std::io::Write;
use std::time::Duration;

use birdsong_common::jobs::{self, NewFile};
use birdsong_common::queue::Publisher;
use birdsong_common::store::audio_key;
use birdsong_testkit::TestEnv;
use birdsong_testkit::audio::synthetic_call;
use sha2::{Digest, Sha256};
use support::*;

const SECONDS: u32 = 3600;
const RATE: u32 = 22_050;

/// Writes an hour of 16-bit mono WAV ten seconds at a time; returns its
/// SHA-256 and size.
fn write_long_wav(path: &std::path::Path) -> (String, u64) {
    let data_len = SECONDS * RATE * 2;
    let mut header = Vec::with_capacity(44);
    header.extend_from_slice(b"RIFF");
    header.extend_from_slice(&(36 + data_len).to_le_bytes());
    header.extend_from_slice(b"WAVEfmt ");
    header.extend_from_slice(&16u32.to_le_bytes());
    header.extend_from_slice(&1u16.to_le_bytes());
    header.extend_from_slice(&1u16.to_le_bytes());
    header.extend_from_slice(&RATE.to_le_bytes());
    header.extend_from_slice(&(RATE * 2).to_le_bytes());
    header.extend_from_slice(&2u16.to_le_bytes());
    header.extend_from_slice(&16u16.to_le_bytes());
    header.extend_from_slice(b"data");
    header.extend_from_slice(&data_len.to_le_bytes());
    let mut file = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    let mut hash = Sha256::new();
    file.write_all(&header).unwrap();
    hash.update(&header);
    for chunk in 0..SECONDS / 10 {
        let samples = synthetic_call((chunk % 3) as usize, 10.0, RATE, u64::from(chunk));
        let bytes: Vec<u8> = samples
            .iter()
            .flat_map(|s| ((s.clamp(-1.0, 1.0) * 32767.0) as i16).to_le_bytes())
            .collect();
        file.write_all(&bytes).unwrap();
        hash.update(&bytes);
    }
    file.flush().unwrap();
    (hex::encode(hash.finalize()), u64::from(44 + data_len))
}

/// Peak resident memory of a process, in bytes.
fn peak_rss(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_hour_long_recording_gets_every_window_with_bounded_memory() {
    let env = TestEnv::start().await.expect("test environment");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("hour.wav");
    let (sha, size) = tokio::task::spawn_blocking({
        let path = path.clone();
        move || write_long_wav(&path)
    })
    .await
    .unwrap();
    env.store.put_file(&audio_key(&sha), &path).await.unwrap();
    std::fs::remove_file(&path).unwrap();
    jobs::register_file(
        &env.pool,
        &NewFile {
            sha256: &sha,
            original_name: "hour.wav",
            size_bytes: size,
            site: None,
        },
    )
    .await
    .unwrap();
    let job = new_job(&env).await;
    let task = jobs::add_task(&env.pool, job, &sha, "hour.wav")
        .await
        .unwrap();
    let publisher = Publisher::new(&env.amqp).await.unwrap();
    jobs::enqueue(
        &env.pool,
        &publisher,
        &env.config.queues.classify,
        job,
        task.id,
        &sha,
    )
    .await
    .unwrap();

    let mut worker = spawn_worker_process(&env);
    wait_for_job(&env, job, Duration::from_secs(300)).await;
    let peak = peak_rss(worker.id()).expect("worker memory from /proc");
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &worker.id().to_string()])
        .status();
    assert!(worker.wait().unwrap().success());

    let (status, windows): (String, i64) = sqlx::query_as(
        "SELECT t.status, (SELECT count(*) FROM window_features w WHERE w.file_sha256 = t.file_sha256)
         FROM tasks t WHERE t.id = $1",
    )
    .bind(task.id)
    .fetch_one(&env.pool)
    .await
    .unwrap();
    assert_eq!(status, "awaiting_model");
    assert_eq!(windows, i64::from(SECONDS / 5));
    // The file is 159 MB and decodes to 317 MB of samples; a worker that
    // held either would peak far above this.
    eprintln!(
        "worker peak RSS on a {size}-byte hour-long recording: {} MB",
        peak / 1_000_000
    );
    assert!(peak < 120_000_000, "worker peaked at {peak} bytes");
}
