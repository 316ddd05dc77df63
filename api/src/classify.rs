//! `POST /v1/classify`: one short recording, classified while the client
//! waits.
//!
//! For quick checks ("what is on this clip?"), not for bulk work: the file
//! is held to its own size and duration limits, nothing is stored, and the
//! number of classifications running at once is bounded by the CPU count so
//! that a burst of them cannot starve the rest of the API. The answer has
//! the shape of one item of a job's results, decided the way a worker
//! decides: `detections` are the windows whose score for a species reached
//! that species' threshold, `species` the one detected in the most windows
//! (null, with `detected` empty, when nothing was), and since the clip is
//! short, `window_scores` (every window's top-k) always comes along, so that
//! "no detection" can be checked against what the model did think.

use axum::Json;
use axum::extract::{Multipart, State};
use serde_json::json;

use crate::AppState;
use crate::problem::{ApiResult, Problem};
use crate::results::{DetectedSpecies, Detection, FileResult, WindowDetection, WindowScore};
use crate::spool::{FilePart, Spool, multipart_problem};

/// Species kept per window and per recording.
const TOP_K: usize = 3;

/// The multipart form of `POST /v1/classify`, for the OpenAPI document.
#[derive(schemars::JsonSchema)]
pub struct ClassifyForm {
    /// The recording: exactly one part with a file name.
    pub file: FilePart,
}

pub async fn classify(
    State(state): State<AppState>,
    multipart: Result<Multipart, axum::extract::multipart::MultipartRejection>,
) -> ApiResult<Json<FileResult>> {
    let mut multipart =
        multipart.map_err(|e| Problem::bad_request("invalid-multipart", e.body_text()))?;
    let mut spool = Spool::new(state.config.api.classify_max_bytes, 1)?;
    while let Some(mut field) = multipart.next_field().await.map_err(multipart_problem)? {
        match field.file_name().map(str::to_string) {
            Some(name) => spool.add_field(&mut field, &name).await?,
            None => {
                return Err(Problem::unprocessable(
                    "unknown-field",
                    format!(
                        "unknown form field {:?} (send one file part)",
                        field.name().unwrap_or("")
                    ),
                ));
            }
        }
    }
    let (_dir, mut files) = spool.into_parts();
    let part = files
        .pop()
        .ok_or_else(|| Problem::unprocessable("no-files", "the request contains no file"))?;
    let max_seconds = state.config.api.classify_max_seconds;
    let path = part.file.path().to_path_buf();
    let probed = tokio::task::spawn_blocking({
        let path = path.clone();
        move || birdsong_audio::probe(&path)
    })
    .await
    .map_err(|e| Problem::internal("probing the file", e))?
    .map_err(|e| {
        Problem::unprocessable(
            "not-audio",
            format!("{:?} is not audio this service can decode: {e}", part.name),
        )
    })?;
    if probed.duration_s > max_seconds {
        return Err(Problem::unprocessable(
            "too-long",
            format!(
                "the recording lasts {:.1} s; synchronous classification takes at most {max_seconds} s (submit a job instead)",
                probed.duration_s
            ),
        ));
    }
    let model = match state.models.sync().await {
        Ok(Some(model)) => model,
        Ok(None) if state.models.refused() > 0 => {
            return Err(Problem::unavailable(
                "model-refused",
                "the promoted model was refused: its stored objects do not match the registry's checksums or are not a model this build can serve (see the api's log); promote another version",
            ));
        }
        Ok(None) => {
            return Err(Problem::unavailable(
                "no-model",
                "no model has been promoted yet; train one (POST /v1/retrain) or promote a version (POST /v1/models/{version}/promote)",
            ));
        }
        Err(e) => {
            tracing::warn!(error = %e, "could not load the promoted model");
            return Err(Problem::unavailable(
                "model-unavailable",
                "the promoted model could not be loaded; try again later",
            ));
        }
    };
    let analyzer = state.models.analyzer().clone();
    let _permit = state
        .cpu
        .acquire()
        .await
        .map_err(|e| Problem::internal("waiting for a CPU", e))?;
    let classifier_model = model.clone();
    let computed = tokio::task::spawn_blocking(move || {
        let analysis = analyzer
            .analyse_file(classifier_model.backbone, &path)
            .map_err(|e| e.to_string())?;
        let probs = classifier_model
            .classifier
            .score_recordings(&[&analysis.vectors])
            .map_err(|e| e.to_string())?;
        Ok::<_, String>((analysis, probs))
    })
    .await
    .map_err(|e| Problem::internal("classifying", e))?;
    let (analysis, probs) = computed.map_err(|e| {
        Problem::unprocessable(
            "undecodable",
            format!("the recording could not be analysed: {e}"),
        )
    })?;
    let classifier = &model.classifier;
    let top_json = |top: &[birdsong_model::inference::Prediction]| {
        json!(
            top.iter()
                .map(|t| json!({"species": t.species, "confidence": t.probability.clamp(0.0, 1.0)}))
                .collect::<Vec<_>>()
        )
    };
    // The threshold each detection was held to, reported with it as the
    // worker stores it (thresholds come in class order).
    let mut detections: Vec<Detection> = Vec::new();
    let mut window_scores: Vec<WindowScore> = Vec::with_capacity(probs.len());
    for (i, (&(start_s, end_s), p)) in analysis.spans.iter().zip(&probs).enumerate() {
        let window_index = i32::try_from(i).unwrap_or(i32::MAX);
        let top = classifier.top_k(p, TOP_K);
        let top_k = top_json(&top);
        let found = classifier.detections(p);
        for d in &found {
            detections.push(Detection {
                window_index,
                start_s,
                end_s,
                species: d.species.clone(),
                confidence: d.probability.clamp(0.0, 1.0),
                threshold: d.threshold,
                top_k: top_k.clone(),
            });
        }
        let (top_species, top_score) = top
            .first()
            .map(|t| (t.species.clone(), t.probability.clamp(0.0, 1.0)))
            .unwrap_or_default();
        window_scores.push(WindowScore {
            window_index,
            start_s,
            end_s,
            top_species,
            top_score,
            top_k,
            detected: found
                .into_iter()
                .map(|d| WindowDetection {
                    species: d.species,
                    confidence: d.probability.clamp(0.0, 1.0),
                })
                .collect(),
        });
    }
    let summary = classifier.summarize(&probs, TOP_K);
    // The recording's call, as the worker makes it: the species detected in
    // the most windows, or none.
    let call = summary.as_ref().and_then(|s| s.detected.first());
    Ok(Json(FileResult {
        task_id: None,
        source_path: part.name.clone(),
        file_sha256: part.sha256.clone(),
        status: "done".into(),
        error: None,
        species: call.map(|c| c.species.clone()),
        confidence: call.map(|c| c.max_score.clamp(0.0, 1.0)),
        // Classified, so never null: a clip without windows has no detection.
        detected: Some(
            summary
                .as_ref()
                .map(|s| s.detected.iter().map(DetectedSpecies::from).collect())
                .unwrap_or_default(),
        ),
        top_k: summary.as_ref().map(|s| top_json(&s.top)),
        windows: summary
            .as_ref()
            .map(|s| i32::try_from(s.windows).unwrap_or(i32::MAX)),
        model_version: Some(model.version.clone()),
        duration_s: Some(analysis.info.duration_s),
        detections,
        window_scores: Some(window_scores),
    }))
}
