//! Scores are not detections: what the API says about recordings in which
//! nothing reached its threshold, and about one in which a species did —
//! in results (with and without every window's scores), the recording's
//! page, exports, stats and synchronous classification.

mod support;

use std::time::Duration;

use birdsong_testkit::TestEnv;
use birdsong_testkit::audio::{synthetic_wav, wav_i16};
use parquet::file::reader::{FileReader, SerializedFileReader};
use parquet::record::Field;
use serde_json::Value;
use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recording_without_detections_says_so() {
    let env = TestEnv::start().await.expect("test environment");
    publish_model_with_background(&env, "v1").await;
    let api = start_api(&env, |_| {}).await;

    // A clear call of species 0, field noise the model has not heard
    // (another seed and level than its background), and digital silence.
    let call = synthetic_wav(0, 9.0, 5);
    let quiet = noise_wav(9.0, 777, 200.0);
    let silent = wav_i16(std::iter::repeat_n(0i16, 22_050 * 9), 22_050);
    let accepted = api
        .post_multipart(
            "/v1/jobs",
            Some(KEY),
            &[
                Part::File("call.wav".into(), call.clone()),
                Part::File("quiet.wav".into(), quiet.clone()),
                Part::File("silent.wav".into(), silent.clone()),
            ],
        )
        .await;
    assert_eq!(accepted.status, 202, "{}", accepted.text());
    let job = accepted.json()["job_id"].as_str().unwrap().to_string();
    let worker = start_worker(&env);
    let status = wait_finished(&api, &job, Duration::from_secs(180)).await;
    worker.shutdown().await;
    assert_eq!(status["counts"]["done"], 3, "{status}");

    // Results: the call is detected, the other two say "no detection" and
    // still show their best scores.
    let page = api.get(&format!("/v1/jobs/{job}/results")).await;
    assert_eq!(page.status, 200, "{}", page.text());
    let page = page.json();
    let items = page["items"].as_array().unwrap();
    assert_eq!(items.len(), 3, "{page}");
    let by_name = |name: &str| -> Value {
        items
            .iter()
            .find(|i| i["source_path"] == name)
            .cloned()
            .unwrap_or_else(|| panic!("{name} in {page}"))
    };
    for item in items {
        check_result(item, true);
        assert!(
            item.get("window_scores").is_none(),
            "only on request: {item}"
        );
        assert_eq!(item["top_k"].as_array().unwrap().len(), 3, "{item}");
    }
    let called = by_name("call.wav");
    assert_eq!(called["species"], "species-0", "{called}");
    let called_detections = called["detections"].as_array().unwrap();
    assert!(!called_detections.is_empty(), "{called}");
    assert!(
        called_detections
            .iter()
            .all(|d| d["species"] == "species-0"),
        "{called}"
    );
    for name in ["quiet.wav", "silent.wav"] {
        let item = by_name(name);
        assert_eq!(item["status"], "done", "{item}");
        assert!(item["species"].is_null(), "{item}");
        assert!(item["confidence"].is_null(), "{item}");
        assert_eq!(item["detected"], serde_json::json!([]), "{item}");
        assert_eq!(item["detections"], serde_json::json!([]), "{item}");
        assert!(item["windows"].as_i64().unwrap() > 0, "{item}");
    }
    let total: usize = items
        .iter()
        .map(|i| i["detections"].as_array().unwrap().len())
        .sum();
    let in_db: i64 =
        sqlx::query_scalar("SELECT count(*) FROM job_detections WHERE job_id = $1::uuid")
            .bind(&job)
            .fetch_one(&env.pool)
            .await
            .unwrap();
    assert_eq!(total as i64, in_db);

    // Every window's scores, on request, for every file (detected or not).
    let all = api
        .get(&format!("/v1/jobs/{job}/results?windows=all"))
        .await;
    assert_eq!(all.status, 200, "{}", all.text());
    let all = all.json();
    let mut windows = 0;
    for item in all["items"].as_array().unwrap() {
        check_result(item, true);
        check_windows(item);
        windows += item["windows"].as_i64().unwrap();
        if item["source_path"] != "call.wav" {
            assert!(
                item["window_scores"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .all(|w| w["detected"] == serde_json::json!([])),
                "{item}"
            );
        }
    }
    let scored: i64 =
        sqlx::query_scalar("SELECT count(*) FROM job_window_scores WHERE job_id = $1::uuid")
            .bind(&job)
            .fetch_one(&env.pool)
            .await
            .unwrap();
    assert_eq!(windows, scored);
    // Filters select detections (and the files that have one); the
    // windows of the files returned stay complete.
    let filtered = api
        .get(&format!(
            "/v1/jobs/{job}/results?windows=all&species=species-0&min_confidence=0.5"
        ))
        .await
        .json();
    let filtered = filtered["items"].as_array().unwrap();
    assert_eq!(filtered.len(), 1, "{filtered:?}");
    assert_eq!(filtered[0]["source_path"], "call.wav");
    check_windows(&filtered[0]);
    let nobody = api
        .get(&format!("/v1/jobs/{job}/results?species=species-1"))
        .await
        .json();
    assert_eq!(nobody["items"], serde_json::json!([]));
    for query in ["windows=every", "windows=all&limit=101", "windows="] {
        api.get(&format!("/v1/jobs/{job}/results?{query}"))
            .await
            .problem(400);
    }
    let small_page = api
        .get(&format!("/v1/jobs/{job}/results?windows=all&limit=2"))
        .await
        .json();
    assert_eq!(small_page["items"].as_array().unwrap().len(), 2);
    assert!(small_page["next_cursor"].is_string());

    // Exports hold the detections only: the call's rows, nothing of the
    // recordings without detections.
    let call_sha = birdsong_common::store::sha256_hex(&call);
    let csv = api.get(&format!("/v1/jobs/{job}/export?format=csv")).await;
    assert_eq!(csv.status, 200, "{}", csv.text());
    let mut reader = csv::Reader::from_reader(csv.body.as_ref());
    let header: Vec<String> = reader
        .headers()
        .unwrap()
        .iter()
        .map(str::to_string)
        .collect();
    assert_eq!(header.join(","), birdsong_api::export::CSV_HEADER);
    let column = |name: &str| header.iter().position(|h| h == name).unwrap();
    let rows: Vec<csv::StringRecord> = reader.records().map(Result::unwrap).collect();
    assert_eq!(rows.len(), called_detections.len());
    for row in &rows {
        assert_eq!(&row[column("file_sha256")], call_sha.as_str());
        assert_eq!(&row[column("source_path")], "call.wav");
        assert_eq!(&row[column("species")], "species-0");
        let confidence: f64 = row[column("confidence")].parse().unwrap();
        let threshold: f64 = row[column("threshold")].parse().unwrap();
        // Both are rounded to four places.
        assert!(confidence >= threshold - 1e-4, "{row:?}");
    }
    let raven = api
        .get(&format!("/v1/jobs/{job}/export?format=raven"))
        .await
        .text();
    let mut lines = raven.lines();
    assert_eq!(lines.next(), Some(birdsong_api::export::RAVEN_HEADER));
    let selections: Vec<Vec<&str>> = lines.map(|l| l.split('\t').collect()).collect();
    assert_eq!(selections.len(), called_detections.len(), "{raven}");
    let paths: std::collections::BTreeSet<&str> = selections.iter().map(|s| s[7]).collect();
    // call.wav sorts first among the job's paths, so in the sequence of its
    // recordings its selections begin at their offset in it.
    let earlier = 0.0;
    for s in &selections {
        assert_eq!(s[7], "call.wav", "{raven}");
        let (begin, offset): (f64, f64) = (s[3].parse().unwrap(), s[8].parse().unwrap());
        assert!(
            (begin - (earlier + offset)).abs() < 2e-3,
            "{s:?} after {earlier} s"
        );
    }
    assert_eq!(paths.len(), 1);
    let birdnet = api
        .get(&format!("/v1/jobs/{job}/export?format=birdnet"))
        .await;
    assert_eq!(birdnet.status, 200, "{}", birdnet.text());
    let mut reader = csv::Reader::from_reader(birdnet.body.as_ref());
    assert_eq!(
        reader
            .headers()
            .unwrap()
            .iter()
            .collect::<Vec<_>>()
            .join(","),
        birdsong_api::export::BIRDNET_HEADER
    );
    let rows: Vec<csv::StringRecord> = reader.records().map(Result::unwrap).collect();
    assert_eq!(rows.len(), called_detections.len());
    assert!(
        rows.iter()
            .all(|r| &r[3] == "species-0" && &r[5] == "call.wav"),
        "{rows:?}"
    );
    // An Audacity label track is one recording's: without a path it is refused.
    let refused = api
        .get(&format!("/v1/jobs/{job}/export?format=audacity"))
        .await;
    assert_eq!(refused.status, 400, "{}", refused.text());
    let labels = api
        .get(&format!(
            "/v1/jobs/{job}/export?format=audacity&path=call.wav"
        ))
        .await;
    assert_eq!(labels.status, 200, "{}", labels.text());
    let labels = labels.text();
    let tracks: Vec<Vec<&str>> = labels.lines().map(|l| l.split('\t').collect()).collect();
    assert_eq!(tracks.len(), called_detections.len(), "{labels}");
    for t in &tracks {
        let (start, end): (f64, f64) = (t[0].parse().unwrap(), t[1].parse().unwrap());
        assert!(end > start && t[2].starts_with("species-0 "), "{t:?}");
    }
    let none = api
        .get(&format!(
            "/v1/jobs/{job}/export?format=audacity&path=quiet.wav"
        ))
        .await
        .text();
    assert!(none.is_empty(), "quiet.wav has no detections: {none}");
    let ndjson = api
        .get(&format!("/v1/jobs/{job}/export?format=ndjson"))
        .await
        .text();
    for line in ndjson.lines() {
        let row: Value = serde_json::from_str(line).unwrap();
        assert_eq!(row["file_sha256"], call_sha.as_str());
        assert!(
            row["confidence"].as_f64() >= row["threshold"].as_f64(),
            "{row}"
        );
    }
    assert_eq!(ndjson.lines().count(), called_detections.len());
    // Parquet: the same rows, typed (read back here with the parquet crate,
    // in the contract test with DuckDB).
    let parquet = api
        .get(&format!("/v1/jobs/{job}/export?format=parquet"))
        .await;
    assert_eq!(parquet.status, 200, "{}", parquet.text());
    assert_eq!(
        parquet.headers["content-type"],
        "application/vnd.apache.parquet"
    );
    let file = SerializedFileReader::new(parquet.body.clone()).expect("a Parquet file");
    let rows: Vec<parquet::record::Row> = file
        .get_row_iter(None)
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(rows.len(), called_detections.len());
    for row in &rows {
        let field = |name: &str| {
            row.get_column_iter()
                .find(|(n, _)| n.as_str() == name)
                .map(|(_, f)| f.clone())
                .unwrap()
        };
        assert_eq!(field("source_path"), Field::Str("call.wav".into()));
        assert_eq!(field("species"), Field::Str("species-0".into()));
        let (Field::Float(confidence), Field::Float(threshold)) =
            (field("confidence"), field("threshold"))
        else {
            panic!("confidence and threshold are floats: {row:?}");
        };
        assert!(confidence >= threshold, "{row:?}");
    }

    // The recording's own page.
    let quiet_sha = birdsong_common::store::sha256_hex(&quiet);
    let file = api.get(&format!("/v1/files/{quiet_sha}")).await;
    assert_eq!(file.status, 200, "{}", file.text());
    let file = file.json();
    let result = &file["results"][0];
    assert_eq!(result["model_version"], "v1", "{file}");
    assert!(result["species"].is_null(), "{file}");
    assert!(result["confidence"].is_null(), "{file}");
    assert_eq!(result["detected"], serde_json::json!([]), "{file}");
    assert_eq!(result["top_k"].as_array().unwrap().len(), 3, "{file}");
    assert_eq!(file["detections"], serde_json::json!([]), "{file}");
    assert!(file.get("window_scores").is_none(), "{file}");
    let file = api
        .get(&format!("/v1/files/{quiet_sha}?windows=all"))
        .await
        .json();
    let scores = file["window_scores"].as_array().unwrap();
    assert_eq!(
        scores.len() as i64,
        file["results"][0]["windows"].as_i64().unwrap()
    );
    assert!(
        scores
            .iter()
            .all(|w| w["detected"] == serde_json::json!([]))
    );
    api.get(&format!("/v1/files/{quiet_sha}?windows=some"))
        .await
        .problem(400);
    let file = api
        .get(&format!("/v1/files/{call_sha}?windows=all"))
        .await
        .json();
    assert_eq!(file["results"][0]["species"], "species-0", "{file}");
    let mut as_item = file["results"][0].clone();
    as_item["detections"] = file["detections"].clone();
    as_item["window_scores"] = file["window_scores"].clone();
    check_result(&as_item, true);
    check_windows(&as_item);

    // Stats count detections, and the recordings without any apart.
    let stats = api.get(&format!("/v1/stats?job={job}")).await.json();
    assert_eq!(stats["recordings"], 3, "{stats}");
    assert_eq!(stats["recordings_with_detections"], 1, "{stats}");
    assert_eq!(stats["detections"], in_db, "{stats}");
    assert_eq!(stats["species"][0]["species"], "species-0", "{stats}");
    assert_eq!(stats["species"].as_array().unwrap().len(), 1, "{stats}");

    // Synchronous classification decides the same way.
    for (name, wav) in [("quiet.wav", &quiet), ("silent.wav", &silent)] {
        let c = api
            .post_multipart(
                "/v1/classify",
                Some(KEY),
                &[Part::File(name.into(), wav.clone())],
            )
            .await;
        assert_eq!(c.status, 200, "{}", c.text());
        let c = c.json();
        check_result(&c, true);
        check_windows(&c);
        assert!(c["species"].is_null(), "{c}");
        assert_eq!(c["detected"], serde_json::json!([]), "{c}");
        assert_eq!(c["detections"], serde_json::json!([]), "{c}");
    }
    let c = api
        .post_multipart(
            "/v1/classify",
            Some(KEY),
            &[Part::File("call.wav".into(), call.clone())],
        )
        .await
        .json();
    check_result(&c, true);
    check_windows(&c);
    assert_eq!(c["species"], "species-0", "{c}");
    // The same recording, the same model: the same answer as the worker's.
    assert_eq!(c["detected"], called["detected"], "{c}");
    assert_eq!(
        c["detections"].as_array().unwrap().len(),
        called_detections.len()
    );
    api.stop().await;
}

/// A job's species list and minimum confidence decide what it reports, in
/// results, exports, stats and its status; the stored detections (shared by
/// every job holding the recording) are untouched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_reports_only_its_species_list_and_minimum_confidence() {
    let env = TestEnv::start().await.expect("test environment");
    publish_model_with_background(&env, "v1").await;
    let api = start_api(&env, |_| {}).await;
    let call = synthetic_wav(0, 9.0, 5);
    let submit = |parts: Vec<Part>| {
        let api = &api;
        async move {
            let answer = api.post_multipart("/v1/jobs", Some(KEY), &parts).await;
            assert_eq!(answer.status, 202, "{}", answer.text());
            answer.json()["job_id"].as_str().unwrap().to_string()
        }
    };
    let everything = submit(vec![Part::File("call.wav".into(), call.clone())]).await;
    // A BirdNET-Analyzer style list without the called species.
    let others = submit(vec![
        Part::File("call.wav".into(), call.clone()),
        Part::Text(
            "species_list".into(),
            "# only these\nGenus one_species-1\nspecies-2\n".into(),
        ),
    ])
    .await;
    let strict = submit(vec![
        Part::File("call.wav".into(), call.clone()),
        Part::Text("min_confidence".into(), "1".into()),
    ])
    .await;
    let worker = start_worker(&env);
    for job in [&everything, &others, &strict] {
        wait_finished(&api, job, Duration::from_secs(180)).await;
    }
    worker.shutdown().await;

    let detections = |job: &str| {
        let api = &api;
        let job = job.to_string();
        async move {
            let page = api.get(&format!("/v1/jobs/{job}/results")).await.json();
            let item = page["items"][0].clone();
            let csv = api.get(&format!("/v1/jobs/{job}/export")).await.text();
            let stats = api.get(&format!("/v1/stats?job={job}")).await.json();
            (
                item,
                csv.lines().count() - 1,
                stats["detections"].as_i64().unwrap(),
            )
        }
    };
    let (item, rows, counted) = detections(&everything).await;
    assert_eq!(item["species"], "species-0", "{item}");
    let all = item["detections"].as_array().unwrap().len();
    assert!(all > 0, "{item}");
    assert_eq!((rows, counted), (all, all as i64));
    for job in [&others, &strict] {
        let (item, rows, counted) = detections(job).await;
        assert!(item["species"].is_null(), "{item}");
        assert_eq!(item["detected"], serde_json::json!([]), "{item}");
        assert_eq!(item["detections"], serde_json::json!([]), "{item}");
        assert_eq!((rows, counted), (0, 0), "{job}");
        // The scores are still there to look at.
        assert_eq!(item["top_k"][0]["species"], "species-0", "{item}");
    }
    let status = api.get(&format!("/v1/jobs/{others}")).await.json();
    assert_eq!(
        status["species_list"],
        serde_json::json!(["species-1", "species-2"])
    );
    assert!(status["min_confidence"].is_null(), "{status}");
    let status = api.get(&format!("/v1/jobs/{strict}")).await.json();
    assert_eq!(status["min_confidence"], 1.0, "{status}");

    // Refused filters leave no job behind.
    let bad = api
        .post_multipart(
            "/v1/jobs",
            Some(KEY),
            &[
                Part::File("call.wav".into(), call),
                Part::Text("min_confidence".into(), "high".into()),
            ],
        )
        .await;
    assert_eq!(
        bad.problem(422)["type"],
        "https://birdsong.dev/problems/invalid-reporting"
    );
    api.stop().await;
}
