//! The API contract, checked with real tools rather than by reading it:
//!
//! - `openapi-spec-validator` says `/v1/openapi.json` is a valid OpenAPI 3.1
//!   document;
//! - the answers the api gives on real data (a job run through a worker,
//!   labels, a retrain request, a promotion, refusals) conform to the
//!   schemas the document publishes for them;
//! - schemathesis, generating requests from the document (valid and
//!   invalid ones), finds no server error, no undocumented status or media
//!   type and no answer that breaks its schema;
//! - the job's Parquet export reads back in DuckDB, typed, with the rows of
//!   its CSV export.
//!
//! The tools come from PyPI, pinned by `tests/contract/requirements.txt`,
//! into a virtual environment under the target directory, made on first
//! use. Without `python3` the test is skipped loudly, except under CI (`CI`
//! set), where it fails so that a CI run cannot pass without it.

mod support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use birdsong_testkit::TestEnv;
use birdsong_testkit::audio::{synthetic_wav, wav_i16};
use hyper::Method;
use serde_json::{Value, json};
use support::*;

fn contract_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/contract")
}

async fn run(command: &mut tokio::process::Command) -> (bool, String) {
    let out = command.output().await.expect("starting a contract tool");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// The virtual environment's `bin` directory, with the pinned tools
/// installed; `Err(reason)` when there is no Python to make one with.
async fn tools() -> Result<PathBuf, String> {
    let venv = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("contract-venv");
    let bin = venv.join("bin");
    let wanted = std::fs::read(contract_dir().join("requirements.txt"))
        .expect("tests/contract/requirements.txt");
    let installed = venv.join("installed-requirements.txt");
    if std::fs::read(&installed).is_ok_and(|have| have == wanted)
        && bin.join("schemathesis").exists()
    {
        return Ok(bin);
    }
    let python = tokio::process::Command::new("python3")
        .arg("--version")
        .output()
        .await;
    if !python.is_ok_and(|o| o.status.success()) {
        return Err("python3 is not installed".into());
    }
    let _ = std::fs::remove_dir_all(&venv);
    let (ok, out) = run(tokio::process::Command::new("python3")
        .args(["-m", "venv"])
        .arg(&venv))
    .await;
    if !ok {
        return Err(format!(
            "python3 cannot make a virtual environment (Debian: apt-get install python3-venv): {out}"
        ));
    }
    let (ok, out) = run(tokio::process::Command::new(bin.join("pip"))
        .args(["install", "--quiet", "--disable-pip-version-check", "-r"])
        .arg(contract_dir().join("requirements.txt")))
    .await;
    assert!(ok, "installing the contract tools from PyPI failed:\n{out}");
    std::fs::write(&installed, &wanted).expect("recording the installed tools");
    Ok(bin)
}

/// Answers collected for the conformance check.
#[derive(Default)]
struct Answers(Vec<Value>);

impl Answers {
    /// Records `answer` to `method template`, which must be JSON.
    fn record(&mut self, method: &str, template: &str, answer: &Answer) -> Value {
        let media = answer
            .headers
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        let body: Value = serde_json::from_slice(&answer.body).unwrap_or_else(|e| {
            panic!(
                "{method} {template} ({}) did not answer JSON: {e}: {}",
                answer.status,
                answer.text()
            )
        });
        self.0.push(json!({
            "method": method,
            "path": template,
            "status": answer.status.as_u16(),
            "media": media,
            "body": body,
        }));
        body
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_contract_holds_under_real_tools() {
    let bin = match tools().await {
        Ok(bin) => bin,
        Err(reason) => {
            if std::env::var_os("CI").is_some() {
                panic!("the API contract test cannot run under CI: {reason}");
            }
            eprintln!(
                "\n!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!\n\
                 SKIPPED the API contract test: {reason}.\n\
                 (Under CI, with CI set, this is a failure.)\n\
                 !!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!\n"
            );
            return;
        }
    };
    let env = TestEnv::start().await.expect("test environment");
    publish_model_with_background(&env, "v1").await;
    // Generated requests come fast; the rate limit is not what is tested.
    let api = start_api(&env, |c| {
        c.api.rate_per_second = 100_000.0;
        c.api.rate_burst = 100_000;
    })
    .await;
    let dir = tempfile::tempdir().expect("temporary directory");
    let document = api.get("/v1/openapi.json").await;
    assert_eq!(document.status, 200);
    let document_path = dir.path().join("openapi.json");
    std::fs::write(&document_path, &document.body).expect("writing the document");

    // 1. A valid OpenAPI 3.1 document.
    let (ok, out) =
        run(tokio::process::Command::new(bin.join("openapi-spec-validator")).arg(&document_path))
            .await;
    assert!(ok, "openapi-spec-validator refused the document:\n{out}");

    // 2. Real answers on real data conform to their schemas.
    let mut answers = Answers::default();
    let call = synthetic_wav(0, 9.0, 5);
    let silent = wav_i16(std::iter::repeat_n(0i16, 22_050 * 6), 22_050);
    let accepted = api
        .post_multipart(
            "/v1/jobs",
            Some(KEY),
            &[
                // Named as an AudioMoth names its files, so that its
                // detections have absolute times.
                Part::File("20240501_053000.wav".into(), call.clone()),
                Part::File("silent.wav".into(), silent),
                Part::Text("site".into(), "north meadow".into()),
            ],
        )
        .await;
    assert_eq!(accepted.status, 202, "{}", accepted.text());
    let job = answers.record("post", "/v1/jobs", &accepted)["job_id"]
        .as_str()
        .expect("job_id")
        .to_string();
    let worker = start_worker(&env);
    let status = wait_finished(&api, &job, Duration::from_secs(180)).await;
    worker.shutdown().await;
    assert_eq!(status["counts"]["done"], 2, "{status}");

    // The Parquet export reads back in DuckDB as the CSV export's rows.
    let mut exported = Vec::new();
    for format in ["parquet", "csv"] {
        let answer = api
            .get(&format!("/v1/jobs/{job}/export?format={format}"))
            .await;
        assert_eq!(answer.status, 200, "{format}: {}", answer.text());
        let path = dir.path().join(format!("export.{format}"));
        std::fs::write(&path, &answer.body).expect("writing an export");
        exported.push(path);
    }
    let (ok, out) = run(tokio::process::Command::new(bin.join("python"))
        .arg(contract_dir().join("parquet_reads.py"))
        .args(&exported)
        .arg("--require-times"))
    .await;
    assert!(ok, "the Parquet export does not read back:\n{out}");
    eprintln!("{}", out.trim_end());

    let page = api
        .get(&format!("/v1/jobs/{job}/results?windows=all"))
        .await;
    let page = answers.record("get", "/v1/jobs/{id}/results", &page);
    let sha = page["items"][0]["file_sha256"]
        .as_str()
        .expect("a file hash")
        .to_string();
    let gets: Vec<(&str, String)> = vec![
        ("/v1/jobs", "/v1/jobs?limit=5".into()),
        ("/v1/jobs/{id}", format!("/v1/jobs/{job}")),
        ("/v1/jobs/{id}/results", format!("/v1/jobs/{job}/results")),
        (
            "/v1/jobs/{id}/results",
            format!("/v1/jobs/{job}/results?species=species-0&min_confidence=0.2"),
        ),
        ("/v1/files/{sha256}", format!("/v1/files/{sha}")),
        ("/v1/files/{sha256}", format!("/v1/files/{sha}?windows=all")),
        (
            "/v1/files/{sha256}/spectrogram",
            format!("/v1/files/{sha}/spectrogram?start=0&end=2"),
        ),
        ("/v1/stats", "/v1/stats".into()),
        ("/v1/stats", format!("/v1/stats?job={job}")),
        ("/v1/system", "/v1/system".into()),
        ("/v1/species", "/v1/species".into()),
        ("/v1/models", "/v1/models".into()),
        ("/healthz", "/healthz".into()),
        ("/readyz", "/readyz".into()),
        // Refusals are problem documents.
        ("/v1/jobs/{id}", "/v1/jobs/not-a-uuid".into()),
        (
            "/v1/files/{sha256}",
            format!("/v1/files/{}", "0".repeat(64)),
        ),
        ("/v1/jobs", "/v1/jobs?limit=0".into()),
    ];
    for (template, path) in &gets {
        let answer = api.get(path).await;
        answers.record("get", template, &answer);
    }
    let labelled = api
        .post_json(
            "/v1/labels",
            Some(KEY),
            &json!({"labels": [{"sha256": sha, "species": "species-0"}]}),
        )
        .await;
    answers.record("post", "/v1/labels", &labelled);
    let retrain = api
        .post_json("/v1/retrain", Some(KEY), &json!({"params": {}}))
        .await;
    let run_id = answers.record("post", "/v1/retrain", &retrain)["run_id"]
        .as_str()
        .expect("run_id")
        .to_string();
    let run_status = api.get(&format!("/v1/retrain/{run_id}")).await;
    answers.record("get", "/v1/retrain/{id}", &run_status);
    let promoted = api
        .call(
            Method::POST,
            "/v1/models/v1/promote",
            Some(KEY),
            None,
            Vec::new(),
        )
        .await;
    answers.record("post", "/v1/models/{version}/promote", &promoted);
    let reclassify = api
        .post_json("/v1/reclassify", Some(KEY), &json!({"job_id": job}))
        .await;
    answers.record("post", "/v1/reclassify", &reclassify);
    let classified = api
        .post_multipart(
            "/v1/classify",
            Some(KEY),
            &[Part::File("call.wav".into(), call)],
        )
        .await;
    answers.record("post", "/v1/classify", &classified);
    let unauthorized = api.post_json("/v1/labels", None, &json!({})).await;
    answers.record("post", "/v1/labels", &unauthorized);
    let answers_path = dir.path().join("answers.json");
    std::fs::write(
        &answers_path,
        serde_json::to_vec(&answers.0).expect("answers"),
    )
    .expect("writing the answers");
    let (ok, out) = run(tokio::process::Command::new(bin.join("python"))
        .arg(contract_dir().join("conforms.py"))
        .arg(&document_path)
        .arg(&answers_path))
    .await;
    assert!(ok, "answers that break the document:\n{out}");

    // 3. Generated requests: no 5xx, and every answer as documented.
    let (ok, out) = run(tokio::process::Command::new(bin.join("schemathesis"))
        .arg("run")
        .arg(&document_path)
        .args(["--url", &api.base])
        .args(["--header", &format!("Authorization: Bearer {KEY}")])
        .args([
            "--checks",
            "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance",
        ])
        .args(["--max-examples", "15", "--seed", "20261206", "--workers", "1"])
        .args(["--request-timeout", "60", "--no-color"])
        // Its example database and reports go to the temporary directory.
        .current_dir(dir.path())
        .env("SCHEMATHESIS_TELEMETRY", "false"))
    .await;
    assert!(
        ok,
        "schemathesis found the api breaking its contract:\n{out}"
    );
    eprintln!(
        "{}",
        out.lines().rev().take(12).collect::<Vec<_>>().join("\n")
    );
    api.stop().await;
}
