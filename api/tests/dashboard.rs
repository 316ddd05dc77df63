//! The dashboard end to end in a real headless browser, and the read
//! endpoints it is built on (including their refusals).
//!
//! The browser part needs Debian's `chromium` and `node`; without them it is
//! skipped loudly, except under CI (`CI` set), where it fails so that a CI
//! run cannot pass without having run it.

mod support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use birdsong_testkit::TestEnv;
use birdsong_testkit::audio::synthetic_wav;
use serde_json::Value;
use support::*;

const CHROMIUM: &str = "/usr/bin/chromium";

fn browser_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser")
}

/// `Some(reason)` when the browser test cannot run here.
fn missing_tools() -> Option<String> {
    let chromium = std::env::var("BIRDSONG_CHROMIUM").unwrap_or_else(|_| CHROMIUM.to_string());
    if !Path::new(&chromium).exists() {
        return Some(format!(
            "{chromium} is not installed (apt-get install chromium)"
        ));
    }
    let node = std::process::Command::new("node").arg("--version").output();
    if !node.is_ok_and(|o| o.status.success()) {
        return Some("node is not installed".into());
    }
    None
}

/// Installs the script's node packages from the lock file if needed.
async fn npm_ci(dir: &Path) {
    if dir
        .join("node_modules/playwright-core/package.json")
        .exists()
    {
        return;
    }
    let out = tokio::process::Command::new("npm")
        .args(["ci", "--no-audit", "--no-fund", "--prefix"])
        .arg(dir)
        .output()
        .await
        .expect("running npm");
    assert!(
        out.status.success(),
        "npm ci failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_in_a_headless_browser() {
    if let Some(reason) = missing_tools() {
        if std::env::var_os("CI").is_some() {
            panic!("the dashboard browser test cannot run under CI: {reason}");
        }
        eprintln!(
            "\n!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!\n\
             SKIPPED the dashboard browser test: {reason}.\n\
             (Under CI, with CI set, this is a failure.)\n\
             !!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!\n"
        );
        return;
    }
    let dir = browser_dir();
    npm_ci(&dir).await;

    let env = TestEnv::start().await.expect("test environment");
    // A model that has heard background, so that the quiet recording gets
    // "no detection" and the page must say so.
    publish_model_with_background(&env, "v1").await;
    let api = start_api(&env, |_| {}).await;
    let worker = start_worker(&env);

    let tmp = tempfile::tempdir().unwrap();
    let clip = tmp.path().join("dawn-chorus.wav");
    std::fs::write(&clip, synthetic_wav(1, 12.0, 7)).unwrap();
    let quiet = tmp.path().join("empty-meadow.wav");
    std::fs::write(&quiet, noise_wav(9.0, 4242, 150.0)).unwrap();
    let shots = dir.join("screenshots");
    let chromium = std::env::var("BIRDSONG_CHROMIUM").unwrap_or_else(|_| CHROMIUM.to_string());
    let out = tokio::process::Command::new("node")
        .arg(dir.join("dashboard.mjs"))
        .env("BASE", &api.base)
        .env("KEY", KEY)
        .env("CLIP", &clip)
        .env("QUIET", &quiet)
        .env("SHOTS", &shots)
        .env("CHROMIUM", chromium)
        .kill_on_drop(true)
        .output()
        .await
        .expect("running node");
    let stdout = String::from_utf8_lossy(&out.stdout);
    println!("{stdout}");
    eprintln!("{}", String::from_utf8_lossy(&out.stderr));
    println!("dashboard screenshots: {}", shots.display());
    assert!(out.status.success(), "the browser script failed");

    // What the browser saw is what the API says.
    let jobs = api.get("/v1/jobs?limit=5").await;
    assert_eq!(jobs.status, 200, "{}", jobs.text());
    let jobs = jobs.json();
    // The newest job is the filtered re-upload of the clip; the first
    // upload is the one the browser inspected.
    let filtered = jobs["jobs"][0]["job_id"].as_str().unwrap();
    let filtered = api.get(&format!("/v1/jobs/{filtered}")).await.json();
    assert_eq!(filtered["min_confidence"], 0.75, "{filtered}");
    let job = &jobs["jobs"][1];
    assert_eq!(job["status"], "finished", "{jobs}");
    assert_eq!(job["done"], 2, "{jobs}");
    let id = job["job_id"].as_str().unwrap();
    let results = api.get(&format!("/v1/jobs/{id}/results")).await.json();
    let item = |name: &str| {
        results["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|i| i["source_path"] == name)
            .unwrap_or_else(|| panic!("{name} in {results}"))
            .clone()
    };
    let species = item("dawn-chorus.wav")["detections"][0]["species"]
        .as_str()
        .expect("the call is detected")
        .to_string();
    assert!(stdout.contains(&format!("species: {species}")), "{stdout}");
    let quiet = item("empty-meadow.wav");
    assert!(quiet["species"].is_null(), "{quiet}");
    assert!(stdout.contains("quiet: no detection"), "{stdout}");
    let system = api.get("/v1/system").await.json();
    assert!(
        !system["workers"].as_array().unwrap().is_empty(),
        "{system}"
    );
    worker.shutdown().await;
    api.stop().await;
}

/// Walks every page of `/v1/jobs`.
async fn all_jobs(api: &Api, limit: u32) -> Vec<Value> {
    let mut jobs = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/v1/jobs?limit={limit}&cursor={c}"),
            None => format!("/v1/jobs?limit={limit}"),
        };
        let page = api.get(&path).await;
        assert_eq!(page.status, 200, "{}", page.text());
        let page = page.json();
        jobs.extend(page["jobs"].as_array().unwrap().iter().cloned());
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => return jobs,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_endpoints_answer_and_refuse() {
    let env = TestEnv::start().await.expect("test environment");
    birdsong_testkit::models::publish_model(&env, "v1", 3)
        .await
        .unwrap();
    let api = start_api(&env, |_| {}).await;

    // The page and its assets.
    let page = api.get("/").await;
    assert_eq!(page.status, 200);
    assert_eq!(page.headers["content-type"], "text/html; charset=utf-8");
    assert!(
        page.headers["content-security-policy"]
            .to_str()
            .unwrap()
            .contains("default-src 'none'")
    );
    let etag = page.headers["etag"].to_str().unwrap().to_string();
    let again = api
        .call(hyper::Method::GET, "/", None, None, Vec::new())
        .await;
    assert_eq!(again.headers["etag"].to_str().unwrap(), etag);
    for (asset, media) in [
        ("app.js", "text/javascript; charset=utf-8"),
        ("charts.js", "text/javascript; charset=utf-8"),
        ("app.css", "text/css; charset=utf-8"),
        ("icon.svg", "image/svg+xml"),
    ] {
        let a = api.get(&format!("/assets/{asset}")).await;
        assert_eq!(a.status, 200, "{asset}");
        assert_eq!(a.headers["content-type"], media, "{asset}");
        assert_eq!(a.headers["cache-control"], "no-cache");
    }
    api.get("/assets/nope.js").await.problem(404);
    api.get("/assets/..%2FCargo.toml").await.problem(404);

    // Three jobs, walked newest first two at a time.
    let mut submitted = Vec::new();
    for i in 0..3u64 {
        let a = api
            .post_multipart(
                "/v1/jobs",
                Some(KEY),
                &[Part::File(
                    format!("clip-{i}.wav"),
                    synthetic_wav(i as usize % 3, 6.0, 90 + i),
                )],
            )
            .await;
        assert_eq!(a.status, 202, "{}", a.text());
        submitted.push(a.json()["job_id"].as_str().unwrap().to_string());
    }
    let worker = start_worker(&env);
    for job in &submitted {
        wait_finished(&api, job, Duration::from_secs(180)).await;
    }
    worker.shutdown().await;
    let listed: Vec<String> = all_jobs(&api, 2)
        .await
        .iter()
        .map(|j| j["job_id"].as_str().unwrap().to_string())
        .collect();
    let newest_first: Vec<String> = submitted.iter().rev().cloned().collect();
    assert_eq!(listed, newest_first);
    let first = api.get("/v1/jobs?limit=1").await.json();
    assert_eq!(first["jobs"][0]["status"], "finished");
    assert_eq!(first["jobs"][0]["tasks"], 1);

    // A window (detected or not: every window is listed with windows=all)
    // as audio and as a spectrogram.
    let results = api
        .get(&format!("/v1/jobs/{}/results?windows=all", submitted[0]))
        .await
        .json();
    let item = &results["items"][0];
    check_result(item, true);
    check_windows(item);
    let sha = item["file_sha256"].as_str().unwrap();
    let det = &item["window_scores"][0];
    let (start, end) = (
        det["start_s"].as_f64().unwrap(),
        det["end_s"].as_f64().unwrap(),
    );
    let wav = api
        .get(&format!("/v1/files/{sha}/audio?start={start}&end={end}"))
        .await;
    assert_eq!(wav.status, 200, "{}", wav.text());
    assert_eq!(wav.headers["content-type"], "audio/wav");
    assert_eq!(&wav.body[0..4], b"RIFF");
    let rate = u32::from_le_bytes([wav.body[24], wav.body[25], wav.body[26], wav.body[27]]);
    let frames = (wav.body.len() - 44) / 2;
    let expected = ((end - start) * f64::from(rate)).round() as usize;
    assert!(
        frames.abs_diff(expected) <= 2,
        "{frames} frames, expected {expected}"
    );
    let spec = api
        .get(&format!(
            "/v1/files/{sha}/spectrogram?start={start}&end={end}"
        ))
        .await;
    assert_eq!(spec.status, 200, "{}", spec.text());
    let spec = spec.json();
    assert_eq!(spec["n_mels"], 128);
    let db = spec["db"].as_array().unwrap();
    assert_eq!(db.len(), 128);
    let n_frames = spec["frames"].as_u64().unwrap() as usize;
    assert_eq!(
        n_frames,
        1 + ((end - start) * 22050.0).round() as usize / 512
    );
    assert!(
        db.iter()
            .all(|row| row.as_array().unwrap().len() == n_frames)
    );
    assert_eq!(spec["max_db"], 0.0);

    // Stats over one job and over everything.
    let stats = api
        .get(&format!("/v1/stats?job={}", submitted[0]))
        .await
        .json();
    let detections = item["detections"].as_array().unwrap().len() as i64;
    assert_eq!(stats["detections"], detections, "{stats}");
    assert_eq!(
        stats["confidence_histogram"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_i64().unwrap())
            .sum::<i64>(),
        detections
    );
    assert_eq!(stats["by_hour"].as_array().unwrap().len(), 24);
    assert_eq!(stats["recordings"], 1, "{stats}");
    assert_eq!(
        stats["recordings_with_detections"],
        i64::from(detections > 0),
        "{stats}"
    );
    let everything = api.get("/v1/stats").await.json();
    assert!(
        everything["detections"].as_i64().unwrap() >= detections,
        "{everything}"
    );
    assert_eq!(everything["recordings"], 3, "{everything}");

    // The system view.
    let system = api.get("/v1/system").await;
    assert_eq!(system.status, 200, "{}", system.text());
    let system = system.json();
    assert_eq!(system["tasks"]["done"], 3, "{system}");
    assert!(
        !system["workers"].as_array().unwrap().is_empty(),
        "{system}"
    );
    let queues = system["queues"].as_array().unwrap();
    assert!(queues.iter().all(|q| q["messages"].is_u64()), "{system}");
    let per_minute: f64 = system["throughput"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["audio_seconds"].as_f64().unwrap())
        .sum();
    assert!((per_minute - 18.0).abs() < 0.5, "{system}");

    // Refusals: one problem shape for all of them.
    let unknown = "0".repeat(64);
    for (path, status) in [
        (format!("/v1/files/{unknown}/audio"), 404),
        (format!("/v1/files/{unknown}/spectrogram"), 404),
        ("/v1/files/not-a-sha/audio".to_string(), 400),
        (format!("/v1/files/{sha}/audio?start=3&end=2"), 422),
        (format!("/v1/files/{sha}/audio?start=-1&end=2"), 422),
        (format!("/v1/files/{sha}/audio?start=0&end=31"), 422),
        (
            format!("/v1/files/{sha}/spectrogram?start=600&end=601"),
            422,
        ),
        (format!("/v1/files/{sha}/spectrogram?start=abc"), 400),
        (format!("/v1/files/{sha}/audio?from=1"), 400),
        ("/v1/jobs?limit=0".to_string(), 400),
        ("/v1/jobs?limit=201".to_string(), 400),
        ("/v1/jobs?cursor=zz".to_string(), 400),
        (format!("/v1/jobs?cursor={}", hex_of("r1|x|y")), 400),
        ("/v1/jobs?page=2".to_string(), 400),
        ("/v1/stats?job=nope".to_string(), 400),
        (format!("/v1/stats?job={}", uuid_like()), 404),
        ("/v1/stats?species=x".to_string(), 400),
        ("/v1/system?x=1".to_string(), 200),
    ] {
        let a = api.get(&path).await;
        if status == 200 {
            assert_eq!(a.status, 200, "{path}");
        } else {
            a.problem(status);
        }
    }
    // Reads closed: the new reads need a key, the page does not.
    let closed = start_api(&env, |c| c.api.open_reads = false).await;
    for path in [
        "/v1/jobs",
        "/v1/system",
        "/v1/stats",
        &format!("/v1/files/{sha}/audio"),
    ] {
        closed
            .call(hyper::Method::GET, path, None, None, Vec::new())
            .await
            .problem(401);
    }
    let page = closed
        .call(hyper::Method::GET, "/", None, None, Vec::new())
        .await;
    assert_eq!(page.status, 200);
    closed.stop().await;
    api.stop().await;
}

fn hex_of(s: &str) -> String {
    s.bytes().map(|b| format!("{b:02x}")).collect()
}

fn uuid_like() -> &'static str {
    "00000000-0000-4000-8000-000000000000"
}
