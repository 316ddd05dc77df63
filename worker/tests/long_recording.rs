//! An hour-long recording: the right number of windows, and the worker's
//! memory stays bounded (the recording is spooled to disk and decoded as a
//! stream, never held whole).

mod support;

use std::io::Write;
use std::time::Duration;

use birdsong_common::store::audio_key;
use birdsong_testkit::TestEnv;
use birdsong_testkit::audio::{pcm16, synthetic_call, wav_header};
use sha2::{Digest, Sha256};
use support::*;

const SECONDS: u32 = 3600;
const RATE: u32 = 22_050;

/// Writes an hour of 16-bit mono WAV ten seconds at a time; returns its
/// SHA-256 and size.
fn write_long_wav(path: &std::path::Path) -> (String, u64) {
    let data_len = SECONDS * RATE * 2;
    let header = wav_header(RATE, data_len);
    let mut file = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    let mut hash = Sha256::new();
    file.write_all(&header).unwrap();
    hash.update(&header);
    for chunk in 0..SECONDS / 10 {
        let samples = synthetic_call((chunk % 3) as usize, 10.0, RATE, u64::from(chunk));
        let bytes = pcm16(&samples);
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
    let job = new_job(&env).await;
    let task = register_and_enqueue(&env, job, "hour.wav", &sha, size).await;

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
    .bind(task)
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
