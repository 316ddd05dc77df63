//! Upload → workers → results, exports and the registry, over HTTP against
//! the real services.

mod support;

use std::collections::HashSet;
use std::time::Duration;

use birdsong_testkit::TestEnv;
use birdsong_testkit::audio::synthetic_wav;
use serde_json::{Value, json};
use support::*;

const SQL_NAME: &str = "o'hara'); DROP TABLE jobs;--.wav";
const SQL_SPECIES: &str = "Robin'); DELETE FROM labels; --";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_and_an_archive_go_round_trip() {
    let env = TestEnv::start().await.expect("test environment");
    birdsong_testkit::models::publish_model(&env, "v1", 3)
        .await
        .unwrap();
    let api = start_api(&env, |_| {}).await;

    let wavs: Vec<Vec<u8>> = (0..5)
        .map(|i| synthetic_wav(i % 3, 6.0 + i as f32 * 2.0, 40 + i as u64))
        .collect();
    let archive = tar_gz(&[
        ("site-b/a.wav", &wavs[3]),
        ("site-b/b.wav", &wavs[4]),
        ("site-b/notes.txt", b"not a recording at all, just text"),
    ]);
    let labels = json!({ SQL_NAME: SQL_SPECIES, "missing.wav": "Wren" }).to_string();
    let accepted = api
        .post_multipart(
            "/v1/jobs",
            Some(KEY),
            &[
                Part::File(SQL_NAME.into(), wavs[0].clone()),
                Part::File("second.wav".into(), wavs[1].clone()),
                Part::File("third.wav".into(), wavs[2].clone()),
                Part::File("batch.tar.gz".into(), archive),
                Part::Text("labels".into(), labels),
                Part::Text("site".into(), "north meadow".into()),
            ],
        )
        .await;
    assert_eq!(accepted.status, 202, "{}", accepted.text());
    let a = accepted.json();
    assert_eq!(a["accepted"], 5, "{a}");
    assert_eq!(a["labelled"], 1);
    assert_eq!(a["unmatched_labels"], json!(["missing.wav"]));
    let rejected = a["rejected"].as_array().unwrap();
    assert_eq!(rejected.len(), 1, "{a}");
    assert_eq!(rejected[0]["path"], "batch.tar.gz!/site-b/notes.txt");
    assert!(
        rejected[0]["reason"]
            .as_str()
            .unwrap()
            .starts_with("not-audio")
    );
    let job = a["job_id"].as_str().unwrap().to_string();
    assert_eq!(a["status_url"], format!("/v1/jobs/{job}"));
    assert_eq!(
        accepted.headers["location"],
        format!("/v1/jobs/{job}").as_str()
    );

    let worker = start_worker(&env);
    let status = wait_finished(&api, &job, Duration::from_secs(180)).await;
    worker.shutdown().await;
    assert_eq!(status["counts"]["done"], 5, "{status}");
    assert_eq!(status["counts"]["failed"], 0);
    assert_eq!(status["counts"]["rejected"], 1);
    assert_eq!(status["source"], "api");
    // 6 + 8 + 10 + 12 + 14 seconds.
    let audio = status["audio_seconds_done"].as_f64().unwrap();
    assert!((audio - 50.0).abs() < 0.5, "{status}");
    assert!(status["throughput"]["files_per_second"].as_f64().unwrap() > 0.0);

    // Walk every page, two files at a time.
    let mut seen = HashSet::new();
    let mut detections = 0usize;
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let path = match &cursor {
            Some(c) => format!("/v1/jobs/{job}/results?limit=2&cursor={c}"),
            None => format!("/v1/jobs/{job}/results?limit=2"),
        };
        let page = api.get(&path).await;
        assert_eq!(page.status, 200, "{}", page.text());
        let page = page.json();
        pages += 1;
        for item in page["items"].as_array().unwrap() {
            assert!(seen.insert(item["task_id"].as_str().unwrap().to_string()));
            assert_eq!(item["status"], "done");
            assert_eq!(item["model_version"], "v1");
            // Detections are the windows above a species' threshold, not
            // one per window: at most one per window and species.
            check_result(item, true);
            let d = item["detections"].as_array().unwrap();
            assert!(d.len() as i64 <= item["windows"].as_i64().unwrap() * 3);
            detections += d.len();
        }
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
    }
    assert_eq!(seen.len(), 5);
    assert_eq!(pages, 3);
    let in_db: i64 =
        sqlx::query_scalar("SELECT count(*) FROM job_detections WHERE job_id = $1::uuid")
            .bind(&job)
            .fetch_one(&env.pool)
            .await
            .unwrap();
    assert_eq!(detections as i64, in_db);

    // Filters: only matching detections, only files that have one.
    let all = api
        .get(&format!("/v1/jobs/{job}/results?limit=500"))
        .await
        .json();
    let first_species = all["items"]
        .as_array()
        .unwrap()
        .iter()
        .find_map(|i| i["detections"][0]["species"].as_str())
        .expect("a clear synthetic call is detected")
        .to_string();
    let filtered = api
        .get(&format!(
            "/v1/jobs/{job}/results?species={}&min_confidence=0.2",
            first_species.replace(' ', "%20")
        ))
        .await
        .json();
    let items = filtered["items"].as_array().unwrap();
    assert!(!items.is_empty());
    for item in items {
        let d = item["detections"].as_array().unwrap();
        assert!(!d.is_empty());
        for det in d {
            assert_eq!(det["species"], first_species.as_str());
            assert!(det["confidence"].as_f64().unwrap() >= 0.2 - 1e-6);
        }
    }
    let none = api
        .get(&format!("/v1/jobs/{job}/results?species=Dodo"))
        .await
        .json();
    assert_eq!(none["items"], json!([]));

    // Exports.
    let csv = api.get(&format!("/v1/jobs/{job}/export?format=csv")).await;
    assert_eq!(csv.status, 200);
    assert!(
        csv.headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/csv")
    );
    let mut reader = csv::Reader::from_reader(csv.body.as_ref());
    assert_eq!(
        reader.headers().unwrap().iter().collect::<Vec<_>>(),
        birdsong_api::export::CSV_HEADER
            .split(',')
            .collect::<Vec<_>>()
    );
    let rows: Vec<csv::StringRecord> = reader.records().map(Result::unwrap).collect();
    assert_eq!(rows.len() as i64, in_db);
    assert!(
        rows.iter().any(|r| &r[0] == SQL_NAME),
        "names stored verbatim"
    );
    let raven = api
        .get(&format!("/v1/jobs/{job}/export?format=raven"))
        .await
        .text();
    let mut lines = raven.lines();
    assert_eq!(lines.next().unwrap(), birdsong_api::export::RAVEN_HEADER);
    let body: Vec<Vec<&str>> = lines.map(|l| l.split('\t').collect()).collect();
    assert_eq!(body.len() as i64, in_db);
    // Begin Time runs on across the job's recordings: within a recording it is
    // the recording's start in the sequence plus the offset, and each later
    // recording starts after the earlier ones.
    let mut starts: Vec<(&str, f64)> = Vec::new();
    for (i, cols) in body.iter().enumerate() {
        assert_eq!(
            cols.len(),
            birdsong_api::export::RAVEN_HEADER.split('\t').count()
        );
        assert_eq!(cols[0], (i + 1).to_string());
        let begin: f64 = cols[3].parse().unwrap();
        let end: f64 = cols[4].parse().unwrap();
        let offset: f64 = cols[8].parse().unwrap();
        assert!(end > begin);
        let start = begin - offset;
        match starts.last() {
            Some(&(path, at)) if path == cols[7] => assert!((start - at).abs() < 2e-3, "{cols:?}"),
            Some(&(_, at)) => {
                assert!(start > at, "{cols:?} starts before the previous recording");
                starts.push((cols[7], start));
            }
            None => {
                assert!(
                    start.abs() < 2e-3,
                    "the first recording starts at 0: {cols:?}"
                );
                starts.push((cols[7], start));
            }
        }
    }
    assert!(
        starts.len() > 1,
        "the archive's recordings have detections: {raven}"
    );
    let ndjson = api
        .get(&format!("/v1/jobs/{job}/export?format=ndjson"))
        .await
        .text();
    let parsed: Vec<Value> = ndjson
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(parsed.len() as i64, in_db);
    let bad = api.get(&format!("/v1/jobs/{job}/export?format=xls")).await;
    bad.problem(400);

    // The recording with the hostile name: stored and labelled verbatim.
    let sha = birdsong_common::store::sha256_hex(&wavs[0]);
    let file = api.get(&format!("/v1/files/{sha}")).await;
    assert_eq!(file.status, 200, "{}", file.text());
    let file = file.json();
    assert_eq!(file["original_name"], SQL_NAME);
    assert_eq!(file["site"], "north meadow");
    assert_eq!(file["labels"][0]["species"], SQL_SPECIES);
    assert_eq!(file["labels"][0]["source"], "api");
    assert_eq!(file["results"][0]["model_version"], "v1");
    assert!(!file["detections"].as_array().unwrap().is_empty());
    assert_eq!(file["tasks"][0]["job_id"], job.as_str());

    // A JSON submission naming an object already in the bucket.
    env.store
        .put("incoming/clip.wav", bytes::Bytes::from(wavs[1].clone()))
        .await
        .unwrap();
    let by_key = api
        .post_json(
            "/v1/jobs",
            Some(KEY),
            &json!({"objects": [{"key": "incoming/clip.wav"}], "description": "from the bucket"}),
        )
        .await;
    assert_eq!(by_key.status, 202, "{}", by_key.text());
    assert_eq!(by_key.json()["accepted"], 1);

    // Synchronous classification of a generated clip.
    let clip = synthetic_wav(1, 12.0, 99);
    let classified = api
        .post_multipart(
            "/v1/classify",
            Some(KEY),
            &[Part::File("clip.wav".into(), clip.clone())],
        )
        .await;
    assert_eq!(classified.status, 200, "{}", classified.text());
    let c = classified.json();
    assert_eq!(c["model_version"], "v1");
    assert_eq!(c["status"], "done");
    assert_eq!(c["file_sha256"], birdsong_common::store::sha256_hex(&clip));
    assert_eq!(c["windows"], 3);
    check_result(&c, true);
    check_windows(&c);
    // A clear call of a species the model was trained on is detected.
    assert!(c["species"].as_str().is_some(), "{c}");
    assert!(!c["detections"].as_array().unwrap().is_empty(), "{c}");

    // Registry endpoints.
    let models = api.get("/v1/models").await.json();
    assert_eq!(models["promoted"], "v1");
    let species = api.get("/v1/species").await.json();
    let names: Vec<&str> = species["species"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert!(names.contains(&SQL_SPECIES), "{species}");
    let promoted = api
        .post_json(
            "/v1/models/v1/promote",
            Some(KEY),
            &json!({"reason": "keep"}),
        )
        .await;
    assert_eq!(promoted.status, 200, "{}", promoted.text());
    assert_eq!(promoted.json()["changed"], false);
    api.post_json("/v1/models/v9/promote", Some(KEY), &json!({}))
        .await
        .problem(404);
    let labelled = api
        .post_json(
            "/v1/labels",
            Some(KEY),
            &json!({"labels": [{"sha256": sha, "species": "Song Thrush"}]}),
        )
        .await;
    assert_eq!(labelled.status, 200, "{}", labelled.text());
    let retrain = api
        .post_json("/v1/retrain", Some(KEY), &json!({"params": {"epochs": 3}}))
        .await;
    assert_eq!(retrain.status, 202, "{}", retrain.text());
    let run = retrain.json()["run_id"].as_str().unwrap().to_string();
    let run_state = api.get(&format!("/v1/retrain/{run}")).await.json();
    assert_eq!(run_state["status"], "requested");
    assert_eq!(run_state["trigger"], "api");
    let again = api
        .post_json("/v1/reclassify", Some(KEY), &json!({"job_id": job}))
        .await;
    assert_eq!(again.status, 202, "{}", again.text());
    assert_eq!(again.json()["tasks"], 5);

    // Operations.
    let ready = api.get("/readyz").await;
    assert_eq!(ready.status, 200, "{}", ready.text());
    let metrics = api.get("/metrics").await.text();
    assert!(
        metrics.contains(
            "birdsong_api_requests_total{method=\"POST\",route=\"/v1/jobs\",status=\"202\"} 2"
        ),
        "{metrics}"
    );
    assert!(
        metrics.contains("birdsong_api_request_seconds_count{route=\"/v1/jobs/{id}/results\"}")
    );
    api.stop().await;
}
