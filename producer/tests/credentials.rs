//! Object store credentials from the standard AWS chain: the producer run as
//! a child process with `BIRDSONG_S3_ACCESS_KEY` / `BIRDSONG_S3_SECRET_KEY`
//! empty and the keys given the way a cluster or a workstation gives them
//! (`AWS_*` variables, a shared credentials file), against the test S3
//! server, which checks every request's signature as real S3 does.
//!
//! Only the children's environments are set; the test process's own is
//! never changed (other tests run beside it).

use std::path::Path;
use std::process::{Command, Output, Stdio};

use birdsong_common::store::{audio_key, sha256_hex};
use birdsong_testkit::TestEnv;

/// A short chirp, different for every `seed`, so each run uploads new bytes.
fn recording(dir: &Path, seed: u32) -> (std::path::PathBuf, String) {
    let rate = 16_000u32;
    let f = 400.0 + f64::from(seed) * 150.0;
    let samples = (0..rate).map(|i| {
        let t = f64::from(i) / f64::from(rate);
        ((2.0 * std::f64::consts::PI * f * t).sin() * 8000.0) as i16
    });
    let bytes = birdsong_testkit::audio::wav_i16(samples, rate);
    let folder = dir.join(format!("run{seed}"));
    std::fs::create_dir_all(&folder).unwrap();
    std::fs::write(folder.join("call.wav"), &bytes).unwrap();
    (folder, sha256_hex(&bytes))
}

/// `birdsong-producer ingest <folder>` with the environment's settings, the
/// static keys emptied, no `AWS_*` variable inherited from the machine, the
/// shared files pointed at `dir` (so `~/.aws` is never read) and the instance
/// metadata service off (so a failing chain fails at once), plus `aws`.
fn producer(env: &TestEnv, dir: &Path, folder: &Path, aws: &[(&str, &str)]) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_birdsong-producer"));
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("AWS_") {
            c.env_remove(name);
        }
    }
    c.envs(&env.vars)
        .env("BIRDSONG_LOG", "warn")
        .env("BIRDSONG_S3_ACCESS_KEY", "")
        .env("BIRDSONG_S3_SECRET_KEY", "")
        .env("AWS_CONFIG_FILE", dir.join("empty"))
        .env("AWS_SHARED_CREDENTIALS_FILE", dir.join("empty"))
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .envs(aws.iter().copied())
        .args(["ingest", "--progress", "none", "--json"])
        .arg(folder)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    c.output().expect("running birdsong-producer")
}

fn assert_uploaded(out: &Output) {
    assert!(
        out.status.success(),
        "the producer failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(summary["accepted"], 1, "{summary}");
}

fn assert_refused(out: &Output, expected: &str) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(!out.status.success(), "the producer succeeded: {stderr}");
    assert!(
        stderr.contains(expected),
        "stderr should say {expected:?}: {stderr}"
    );
    stderr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn empty_static_keys_use_the_aws_credential_chain() {
    let env = TestEnv::start().await.expect("test environment");
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("empty"), "").unwrap();
    let (access, secret) = (
        env.config.s3.access_key.as_str(),
        env.config.s3.secret_key.as_str(),
    );

    // The environment variables of the chain, with the right keys.
    let (folder, sha) = recording(dir.path(), 1);
    let out = producer(
        &env,
        dir.path(),
        &folder,
        &[
            ("AWS_ACCESS_KEY_ID", access),
            ("AWS_SECRET_ACCESS_KEY", secret),
        ],
    );
    assert_uploaded(&out);
    assert!(env.store.head(&audio_key(&sha)).await.unwrap().is_some());

    // The same with a wrong secret: refused by the server, said plainly.
    let (folder, sha) = recording(dir.path(), 2);
    let out = producer(
        &env,
        dir.path(),
        &folder,
        &[
            ("AWS_ACCESS_KEY_ID", access),
            ("AWS_SECRET_ACCESS_KEY", "not-the-secret"),
        ],
    );
    // (The producer's first request is a HEAD of the bucket, whose answer
    // has no body to carry S3's `SignatureDoesNotMatch`.)
    assert_refused(
        &out,
        "HTTP 403: the store refused the request's credentials",
    );
    assert_eq!(env.store.head(&audio_key(&sha)).await.unwrap(), None);

    // A named profile in a shared credentials file.
    let credentials = dir.path().join("credentials");
    std::fs::write(
        &credentials,
        format!(
            "[default]\naws_access_key_id = wrong\naws_secret_access_key = wrong\n\n\
             [birdsong-test]\naws_access_key_id = {access}\naws_secret_access_key = {secret}\n"
        ),
    )
    .unwrap();
    let credentials = credentials.to_string_lossy().to_string();
    let (folder, sha) = recording(dir.path(), 3);
    let out = producer(
        &env,
        dir.path(),
        &folder,
        &[
            ("AWS_SHARED_CREDENTIALS_FILE", credentials.as_str()),
            ("AWS_PROFILE", "birdsong-test"),
        ],
    );
    assert_uploaded(&out);
    assert!(env.store.head(&audio_key(&sha)).await.unwrap().is_some());

    // Nowhere to find credentials: a clear failure, not a hang.
    let (folder, _) = recording(dir.path(), 4);
    let started = std::time::Instant::now();
    let out = producer(&env, dir.path(), &folder, &[]);
    let stderr = assert_refused(&out, "no credentials found in chain");
    // Not worth retrying: nothing will put credentials there.
    assert!(stderr.contains("object store refused"), "{stderr}");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(60),
        "took {:?}: {stderr}",
        started.elapsed()
    );
}

#[test]
fn one_static_key_without_the_other_is_a_configuration_error() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_birdsong-producer"))
        .env("BIRDSONG_S3_ACCESS_KEY", "AKIDEXAMPLE")
        .env("BIRDSONG_S3_SECRET_KEY", "")
        .args(["ingest", "--progress", "none"])
        .arg(dir.path())
        .output()
        .expect("running birdsong-producer");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("BIRDSONG_S3_SECRET_KEY")
            && stderr.contains("BIRDSONG_S3_ACCESS_KEY is set"),
        "{stderr}"
    );
}
