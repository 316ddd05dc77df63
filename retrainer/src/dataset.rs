//! The training data: every labelled recording, as window features.
//!
//! Workers store the window features of every recording they analyse, so
//! training normally reads PostgreSQL only. A labelled recording that no
//! worker has analysed yet (labelled at ingest, still queued, or analysed
//! with another window setting) is fetched and analysed here, and its
//! features are stored the way a worker stores them, so that neither the
//! next run nor a later classification decodes it again. Mel patches are the
//! exception: workers do not store them (`Backbone::stores_windows`), so they
//! are computed here for every run, and the spectrogram CNN trains on each
//! training recording's whole spectrogram ([`spectrograms`]), decoded again.

use birdsong_common::db::query;
use std::collections::HashMap;

use birdsong_analysis::{AnalysisError, Analyzer, Backbone};
use birdsong_audio::WindowConfig;
use birdsong_common::store::{ObjectStore, audio_key};
use birdsong_model::{FeatureVector, Recording, Spectrogram, SpectrogramRecording};
use serde::Serialize;
use sha2::{Digest, Sha256};
use sqlx::{PgPool, Postgres, QueryBuilder};
use std::sync::Arc;

use crate::error::{RetrainError, store};

/// Rows per multi-row INSERT (eight parameters each, the features in one
/// array; well under PostgreSQL's 65 535 bind parameters).
const ROWS_PER_INSERT: usize = 500;

/// One labelled recording and its windows.
#[derive(Debug, Clone)]
pub struct Labelled {
    pub sha256: String,
    pub label: String,
    pub windows: Vec<FeatureVector>,
}

/// A labelled recording left out of training, and why.
#[derive(Debug, Clone, Serialize)]
pub struct Unusable {
    pub sha256: String,
    pub reason: String,
}

/// The labels, before any feature is read: enough to tell whether a run
/// would see anything new.
pub async fn labels(pool: &PgPool) -> Result<Vec<(String, String)>, RetrainError> {
    sqlx::query_as("SELECT file_sha256, species FROM current_labels ORDER BY file_sha256")
        .fetch_all(pool)
        .await
        .map_err(|e| query("reading the labels")(e).into())
}

/// A fingerprint of what a run trains on: labels, feature version and
/// windowing. Two runs with the same fingerprint and parameters would
/// train on identical data.
pub fn fingerprint(
    labels: &[(String, String)],
    backbone: Backbone,
    window: &WindowConfig,
) -> String {
    let mut h = Sha256::new();
    h.update(backbone.feature_version().as_bytes());
    h.update(format!("|{}|{}\n", window.length_s, window.hop_s).as_bytes());
    for (sha, label) in labels {
        h.update(sha.as_bytes());
        h.update(b"\t");
        h.update(label.as_bytes());
        h.update(b"\n");
    }
    hex::encode(h.finalize())
}

/// Reads the stored features of every labelled recording, analysing those
/// that have none. Returns the recordings (in content-hash order), how many
/// were decoded here, and those that could not be used.
pub async fn load(
    pool: &PgPool,
    objects: &ObjectStore,
    analyzer: &Arc<Analyzer>,
    backbone: Backbone,
    window: &WindowConfig,
    labels: &[(String, String)],
    mut on_decode: impl FnMut(usize, usize),
) -> Result<(Vec<Labelled>, usize, Vec<Unusable>), RetrainError> {
    let hashes: Vec<&str> = labels.iter().map(|(s, _)| s.as_str()).collect();
    let rows: Vec<(String, Vec<f32>)> = if !backbone.stores_windows() {
        Vec::new()
    } else {
        sqlx::query_as(
            "SELECT file_sha256, features FROM window_features
         WHERE feature_version = $1 AND window_s = $2 AND hop_s = $3 AND file_sha256 = ANY($4)
         ORDER BY file_sha256, window_index",
        )
        .bind(backbone.feature_version())
        .bind(window.length_s as f32)
        .bind(window.hop_s as f32)
        .bind(&hashes)
        .fetch_all(pool)
        .await
        .map_err(query("reading stored window features"))?
    };
    let mut stored: HashMap<String, Vec<FeatureVector>> = HashMap::new();
    let mut unusable = Vec::new();
    let mut bad: HashMap<String, String> = HashMap::new();
    for (sha, features) in rows {
        let expected = backbone.vector_len();
        if features.len() == expected {
            stored.entry(sha).or_default().push(features);
        } else {
            bad.insert(
                sha,
                format!(
                    "a stored {backbone} window has {} values, expected {expected}",
                    features.len()
                ),
            );
        }
    }
    let missing: Vec<&(String, String)> = labels
        .iter()
        .filter(|(sha, _)| !stored.contains_key(sha) && !bad.contains_key(sha))
        .collect();
    let mut decoded = 0;
    for (i, (sha, _)) in missing.iter().enumerate() {
        on_decode(i, missing.len());
        match analyse(pool, objects, analyzer, backbone, window, sha).await {
            Ok(windows) if windows.is_empty() => {
                bad.insert(sha.clone(), "the recording produced no window".into());
            }
            Ok(windows) => {
                decoded += 1;
                stored.insert(sha.clone(), windows);
            }
            Err(Analysis::Unusable(reason)) => {
                bad.insert(sha.clone(), reason);
            }
            Err(Analysis::Failed(e)) => return Err(e),
        }
    }
    let mut out = Vec::with_capacity(labels.len());
    for (sha, label) in labels {
        if let Some(reason) = bad.remove(sha) {
            tracing::warn!(recording = %sha, %reason, "labelled recording left out of training");
            unusable.push(Unusable {
                sha256: sha.clone(),
                reason,
            });
        } else if let Some(windows) = stored.remove(sha) {
            out.push(Labelled {
                sha256: sha.clone(),
                label: label.clone(),
                windows,
            });
        }
    }
    Ok((out, decoded, unusable))
}

enum Analysis {
    /// The recording itself is the problem; train without it.
    Unusable(String),
    /// A service failed; the run fails.
    Failed(RetrainError),
}

/// Fetches, analyses and stores the features of one recording.
async fn analyse(
    pool: &PgPool,
    objects: &ObjectStore,
    analyzer: &Arc<Analyzer>,
    backbone: Backbone,
    window: &WindowConfig,
    sha: &str,
) -> Result<Vec<FeatureVector>, Analysis> {
    let bytes = objects
        .get(&audio_key(sha))
        .await
        .map_err(|e| Analysis::Failed(store(format!("fetching recording {sha}"))(e)))?;
    let cfg = window.clone();
    let analyzer = analyzer.clone();
    let analysis = tokio::task::spawn_blocking(move || {
        analyzer.analyse_reader_in(backbone, &cfg, std::io::Cursor::new(bytes))
    })
    .await
    .map_err(|e| Analysis::Failed(RetrainError::Internal(format!("analysis panicked: {e}"))))?
    .map_err(|e| match e {
        AnalysisError::Audio(e) => Analysis::Unusable(format!("cannot analyse the recording: {e}")),
        // Not the recording's fault: the run fails and says why.
        e => Analysis::Failed(RetrainError::Data(e.to_string())),
    })?;
    if !backbone.stores_windows() {
        return Ok(analysis.vectors);
    }
    // One transaction: a reader must never find half of a recording's windows.
    let mut tx = pool
        .begin()
        .await
        .map_err(|e| Analysis::Failed(query("storing window features")(e).into()))?;
    let rows: Vec<(f64, f64, &Vec<f32>)> = analysis
        .spans
        .iter()
        .zip(&analysis.vectors)
        .map(|(&(s, e), v)| (s, e, v))
        .collect();
    for (chunk_no, chunk) in rows.chunks(ROWS_PER_INSERT).enumerate() {
        let base = chunk_no * ROWS_PER_INSERT;
        let mut q: QueryBuilder<Postgres> = QueryBuilder::new(
            "INSERT INTO window_features (file_sha256, feature_version, window_s, hop_s, window_index, start_s, end_s, features) ",
        );
        q.push_values(chunk.iter().enumerate(), |mut row, (i, w)| {
            row.push_bind(sha)
                .push_bind(backbone.feature_version())
                .push_bind(window.length_s as f32)
                .push_bind(window.hop_s as f32)
                .push_bind((base + i) as i32)
                .push_bind(w.0)
                .push_bind(w.1)
                .push_bind(w.2.clone());
        });
        q.push(" ON CONFLICT DO NOTHING");
        q.build()
            .execute(&mut *tx)
            .await
            .map_err(|e| Analysis::Failed(query("storing window features")(e).into()))?;
    }
    tx.commit()
        .await
        .map_err(|e| Analysis::Failed(query("committing window features")(e).into()))?;
    Ok(analysis.vectors)
}

/// The band power of each recording's whole audio, fetched and decoded one at a
/// time (about 5.6 MB per hour of audio is kept, never the decoded samples): what
/// the spectrogram CNN draws its training crops from. A recording that cannot
/// be decoded is left out with a warning, as [`load`] leaves it out.
pub async fn spectrograms(
    objects: &ObjectStore,
    recordings: &[Recording],
    mut on_decode: impl FnMut(usize, usize),
) -> Result<Vec<SpectrogramRecording>, RetrainError> {
    let mut out = Vec::with_capacity(recordings.len());
    for (i, r) in recordings.iter().enumerate() {
        on_decode(i, recordings.len());
        let bytes = objects
            .get(&audio_key(&r.id))
            .await
            .map_err(store(format!("fetching recording {}", r.id)))?;
        let decoded = tokio::task::spawn_blocking(move || Spectrogram::of_bytes(Vec::from(bytes)))
            .await
            .map_err(|e| RetrainError::Internal(format!("decoding panicked: {e}")))?;
        match decoded {
            Ok(spectrogram) => out.push(SpectrogramRecording {
                id: r.id.clone(),
                label: r.label.clone(),
                spectrogram,
            }),
            Err(e) => {
                tracing::warn!(recording = %r.id, error = %e, "labelled recording left out of training");
            }
        }
    }
    Ok(out)
}
