//! Every refusal: its status, its problem document, and that it leaves no
//! job, task or message behind.

mod support;

use birdsong_testkit::TestEnv;
use birdsong_testkit::audio::synthetic_wav;
use hyper::Method;
use serde_json::json;
use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_and_limits_leave_nothing_behind() {
    let env = TestEnv::start().await.expect("test environment");
    let api = start_api(&env, |c| {
        c.max_file_bytes = 300_000;
        c.api.max_files = 2;
        c.api.max_body_bytes = 500_000;
    })
    .await;
    let wav = synthetic_wav(0, 3.0, 1); // ~130 kB
    let big = synthetic_wav(1, 8.0, 2); // ~350 kB: over the per-file limit
    let file = |name: &str, bytes: &[u8]| Part::File(name.into(), bytes.to_vec());

    // Auth: writes need a valid key; nothing about which part was wrong.
    for key in [None, Some("wrong"), Some("")] {
        let p = api
            .post_multipart("/v1/jobs", key, &[file("a.wav", &wav)])
            .await
            .problem(401);
        assert_eq!(p["detail"], "a valid API key is required");
    }
    api.post_json("/v1/retrain", None, &json!({}))
        .await
        .problem(401);
    api.post_json("/v1/models/v1/promote", Some("nope"), &json!({}))
        .await
        .problem(401);
    // Reads are open by default.
    let open = api
        .call(Method::GET, "/v1/models", None, None, Vec::new())
        .await;
    assert_eq!(open.status, 200);

    // Limits.
    let p = api
        .post_multipart("/v1/jobs", Some(KEY), &[file("big.wav", &big)])
        .await
        .problem(413);
    assert!(p["detail"].as_str().unwrap().contains("big.wav"));
    api.post_multipart(
        "/v1/jobs",
        Some(KEY),
        &[
            file("a.wav", &wav),
            file("b.wav", &wav),
            file("c.wav", &wav),
        ],
    )
    .await
    .problem(422);
    // Under the per-file limit each, over the body limit together.
    let six_seconds = synthetic_wav(2, 6.0, 4); // ~265 kB
    api.post_multipart(
        "/v1/jobs",
        Some(KEY),
        &[file("a.wav", &six_seconds), file("b.wav", &six_seconds)],
    )
    .await
    .problem(413);

    // Bad input.
    let p = api
        .post_multipart(
            "/v1/jobs",
            Some(KEY),
            &[file("notes.wav", &b"plain text ".repeat(50))],
        )
        .await
        .problem(422);
    assert!(p["type"].as_str().unwrap().ends_with("not-audio"));
    api.post_multipart("/v1/jobs", Some(KEY), &[file("empty.wav", b"")])
        .await
        .problem(422);
    api.post_multipart(
        "/v1/jobs",
        Some(KEY),
        &[
            file("a.wav", &wav),
            Part::Text("colour".into(), "red".into()),
        ],
    )
    .await
    .problem(422);
    api.post_multipart(
        "/v1/jobs",
        Some(KEY),
        &[
            file("a.wav", &wav),
            Part::Text("labels".into(), "[not json".into()),
        ],
    )
    .await
    .problem(422);
    api.post_multipart("/v1/jobs", Some(KEY), &[])
        .await
        .problem(422);
    // A time zone that is neither an offset nor one PostgreSQL knows.
    for zone in ["Mars/Olympus_Mons", "+25:00", "1:00"] {
        let p = api
            .post_multipart(
                "/v1/jobs",
                Some(KEY),
                &[
                    file("a.wav", &wav),
                    Part::Text("time_zone".into(), zone.into()),
                ],
            )
            .await
            .problem(422);
        assert!(p["detail"].as_str().unwrap().contains(zone), "{zone}: {p}");
    }
    let truncated = api
        .call(
            Method::POST,
            "/v1/jobs",
            Some(KEY),
            Some("multipart/form-data; boundary=xyz"),
            b"--xyz\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.wav\"\r\n\r\nRIFF".to_vec(),
        )
        .await;
    truncated.problem(400);
    api.call(
        Method::POST,
        "/v1/jobs",
        Some(KEY),
        Some("text/plain"),
        b"hello".to_vec(),
    )
    .await
    .problem(415);
    api.post_json(
        "/v1/jobs",
        Some(KEY),
        &json!({"objects": [], "colour": "red"}),
    )
    .await
    .problem(400);
    api.post_json(
        "/v1/jobs",
        Some(KEY),
        &json!({"objects": [{"key": "nowhere.wav"}]}),
    )
    .await
    .problem(422);
    api.post_json("/v1/labels", Some(KEY), &json!({"labels": [], "extra": 1}))
        .await
        .problem(400);
    api.post_json(
        "/v1/labels",
        Some(KEY),
        &json!({"labels": [{"sha256": "0".repeat(64), "species": "Wren"}]}),
    )
    .await
    .problem(404);
    api.post_json(
        "/v1/reclassify",
        Some(KEY),
        &json!({"all": true, "job_id": uuid_v4()}),
    )
    .await
    .problem(422);
    api.post_json("/v1/retrain", Some(KEY), &json!({"params": [1, 2]}))
        .await
        .problem(422);

    // Nothing of the above made a job, a task or a message.
    assert_eq!(job_rows(&env).await, (0, 0));
    assert_eq!(queued_messages(&env).await, 0);

    // Unknown ids and bad cursors on reads.
    let unknown = uuid_v4();
    api.get(&format!("/v1/jobs/{unknown}")).await.problem(404);
    api.get(&format!("/v1/jobs/{unknown}/results"))
        .await
        .problem(404);
    api.get(&format!("/v1/jobs/{unknown}/export?format=csv"))
        .await
        .problem(404);
    api.get(&format!("/v1/retrain/{unknown}"))
        .await
        .problem(404);
    api.get("/v1/jobs/not-a-uuid").await.problem(400);
    api.get(&format!("/v1/files/{}", "a".repeat(64)))
        .await
        .problem(404);
    api.get("/v1/files/ABC").await.problem(400);
    api.get("/v1/nothing-here").await.problem(404);

    // A real job, for cursor and query checks.
    let ok = api
        .post_multipart("/v1/jobs", Some(KEY), &[file("a.wav", &wav)])
        .await;
    assert_eq!(ok.status, 202, "{}", ok.text());
    let job = ok.json()["job_id"].as_str().unwrap().to_string();
    assert_eq!(job_rows(&env).await, (1, 1));
    assert_eq!(queued_messages(&env).await, 1);
    for query in [
        "cursor=not-hex",
        "cursor=00ff",
        "limit=0",
        "limit=100000",
        "min_confidence=2",
        "colour=red",
    ] {
        api.get(&format!("/v1/jobs/{job}/results?{query}"))
            .await
            .problem(400);
    }
    // A cursor from another job is refused too.
    let other = api
        .post_multipart(
            "/v1/jobs",
            Some(KEY),
            &[file("b.wav", &synthetic_wav(2, 3.0, 3))],
        )
        .await
        .json();
    let foreign = hex_cursor(other["job_id"].as_str().unwrap(), &unknown);
    api.get(&format!("/v1/jobs/{job}/results?cursor={foreign}"))
        .await
        .problem(400);

    // No model promoted: synchronous classification says so.
    let p = api
        .post_multipart("/v1/classify", Some(KEY), &[file("clip.wav", &wav)])
        .await
        .problem(503);
    assert!(p["detail"].as_str().unwrap().contains("no model"));
    api.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closed_reads_and_the_rate_limit() {
    let env = TestEnv::start().await.expect("test environment");
    let api = start_api(&env, |c| {
        c.api.open_reads = false;
        c.api.rate_per_second = 0.01;
        c.api.rate_burst = 3;
    })
    .await;
    let anonymous = api
        .call(Method::GET, "/v1/models", None, None, Vec::new())
        .await;
    anonymous.problem(401);
    for _ in 0..3 {
        assert_eq!(api.get("/v1/models").await.status, 200);
    }
    let limited = api.get("/v1/models").await;
    let p = limited.problem(429);
    assert!(p["detail"].as_str().unwrap().contains("retry"));
    assert!(limited.headers.contains_key("retry-after"));
    // Another key has its own bucket; health checks are never limited.
    let other = api
        .call(
            Method::GET,
            "/v1/models",
            Some("other-key"),
            None,
            Vec::new(),
        )
        .await;
    assert_eq!(other.status, 200);
    for _ in 0..5 {
        assert_eq!(api.get("/healthz").await.status, 200);
    }
    api.stop().await;
}

fn uuid_v4() -> String {
    uuid::Uuid::new_v4().to_string()
}

fn hex_cursor(job: &str, task: &str) -> String {
    hex::encode(format!("r1|{job}|{task}"))
}
