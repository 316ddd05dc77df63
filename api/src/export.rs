//! `GET /v1/jobs/{id}/export`: every detection of a job, streamed.
//!
//! A detection is a (window, species) pair whose score reached the species'
//! threshold, so a recording in which nothing was detected contributes no
//! row: that is what a selection table should say about it (Raven users
//! annotate calls, not silence). Every window's scores are in the results
//! (`?windows=all`) and the `job_window_scores` view instead. A window in
//! which two species were detected gives two rows with the same times.
//!
//! A season's job can have millions of detections, so rows go from the
//! database cursor to the socket in chunks through a small channel and are
//! never collected. The Raven format is a Raven Pro selection table
//! (tab-separated, one selection per detection) that opens directly in
//! Raven; tabs and line breaks in file names are replaced by spaces there,
//! since the format has no quoting. It is the multi-file form Raven and
//! BirdNET-Analyzer write: `Begin Path` names the recording, `File Offset (s)`
//! is the time within it, and `Begin Time (s)` runs on across the job's
//! recordings in path order (each recording starts where the previous one's
//! decoded duration ends; a recording that failed to decode counts as 0 s),
//! so for a one-recording job it equals the offset. The `birdnet` format is
//! BirdNET-Analyzer's CSV (`Start (s),End (s),Scientific name,Common name,
//! Confidence,File`), the scientific name from the species table (empty
//! when unknown). The `audacity` format is an Audacity label track (start,
//! end, "species confidence") of one recording, named by `path`.
//!
//! `format=parquet` has the CSV's columns (and the scientific name) typed,
//! in a Snappy-compressed Parquet file written one row group at a time
//! ([`parquet`]).
//!
//! When the recording's start is known (`recorded_at`, from its WAV header or
//! file name), a detection also has an absolute time: the CSV and NDJSON give
//! `start_at`/`end_at` (UTC, RFC 3339) and the recorder's `utc_offset_minutes`
//! (empty when unknown); the Raven table gives `Begin Date` and `Begin Clock
//! Time` on the recorder's clock, the measurements Raven shows for recordings
//! with a start time. They are empty when the start is unknown. BirdNET's CSV
//! and Audacity's labels have no place for them and stay as those tools write
//! them.

use axum::body::Body;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use chrono::{DateTime, NaiveDateTime, SecondsFormat, Utc};
use futures::TryStreamExt;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use uuid::Uuid;

mod parquet;

use crate::AppState;
use crate::extract::{ApiPath, ApiQuery};
use crate::problem::{ApiResult, Problem};
use crate::results::{check_confidence, job_id, require_job};
use schemars::JsonSchema;

/// Bytes gathered before a chunk is sent.
const CHUNK_BYTES: usize = 64 * 1024;

/// The Raven Pro selection table header.
pub const RAVEN_HEADER: &str = "Selection\tView\tChannel\tBegin Time (s)\tEnd Time (s)\tLow Freq (Hz)\tHigh Freq (Hz)\tBegin Path\tFile Offset (s)\tSpecies\tConfidence\tBegin Date\tBegin Clock Time";

/// BirdNET-Analyzer's CSV header, for tools that read its results.
pub const BIRDNET_HEADER: &str = "Start (s),End (s),Scientific name,Common name,Confidence,File";

/// The CSV header. Columns added later (`threshold`, the species' threshold
/// in that model; the absolute times) come last so that readers of the
/// earlier columns by position keep working.
pub const CSV_HEADER: &str = "source_path,file_sha256,window_index,start_s,end_s,species,confidence,model_version,threshold,start_at,end_at,utc_offset_minutes";

/// The band a detection covers: the analysis works on the whole spectrum
/// up to the Nyquist frequency of the analysis rate.
const HIGH_FREQ_HZ: f64 = birdsong_audio::ANALYSIS_SAMPLE_RATE as f64 / 2.0;

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// One row per detection, with the recording's path and hash.
    Csv,
    /// A Raven Pro selection table over the job's recordings (`Begin Path`,
    /// `File Offset (s)`).
    Raven,
    /// BirdNET-Analyzer's CSV columns.
    Birdnet,
    /// An Audacity label track of the recording named by `path`.
    Audacity,
    /// One JSON object per line.
    Ndjson,
    /// A typed Parquet file (pandas, R's arrow, DuckDB, Spark).
    Parquet,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ExportQuery {
    /// The table's format (default `csv`).
    pub format: Option<Format>,
    /// Only this species.
    pub species: Option<String>,
    /// Only detections at or above this confidence.
    #[schemars(range(min = 0.0, max = 1.0))]
    pub min_confidence: Option<f32>,
    /// Only the recording with this path in the job (required by `audacity`,
    /// whose label track belongs to one recording).
    pub path: Option<String>,
}

#[derive(Debug, Serialize, sqlx::FromRow, JsonSchema)]
struct Row {
    source_path: String,
    file_sha256: String,
    window_index: i32,
    start_s: f64,
    end_s: f64,
    species: String,
    confidence: f32,
    model_version: String,
    threshold: f32,
    /// The detection's start and end in UTC (recorded_at + offset in it).
    start_at: Option<DateTime<Utc>>,
    end_at: Option<DateTime<Utc>>,
    /// The offset of the recorder's clock, when known.
    utc_offset_minutes: Option<i32>,
    /// `start_at` on the recorder's clock (UTC when its offset is unknown).
    #[serde(skip)]
    start_local: Option<NaiveDateTime>,
    /// Where the recording starts in the job's sequence of recordings (Raven).
    #[serde(skip)]
    sequence_offset_s: f64,
    #[serde(skip)]
    scientific_name: Option<String>,
}

pub async fn export(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
    ApiQuery(q): ApiQuery<ExportQuery>,
) -> ApiResult<Response> {
    let job = job_id(&id)?;
    check_confidence(q.min_confidence)?;
    let format = q.format.unwrap_or(Format::Csv);
    if format == Format::Audacity && q.path.is_none() {
        return Err(Problem::bad_request(
            "invalid-query",
            "an Audacity label track belongs to one recording: add path=<the recording's path in the job>",
        ));
    }
    require_job(&state, job).await?;
    let (tx, mut rx) = mpsc::channel::<Result<Bytes, std::io::Error>>(4);
    let filter = Filter {
        species: q.species,
        min_confidence: q.min_confidence,
        path: q.path,
    };
    tokio::spawn(produce(state, job, format, filter, tx));
    let body = Body::from_stream(futures::stream::poll_fn(move |cx| rx.poll_recv(cx)));
    let (content_type, extension) = match format {
        Format::Csv => ("text/csv; charset=utf-8", "csv"),
        Format::Raven => ("text/tab-separated-values; charset=utf-8", "selections.txt"),
        Format::Birdnet => ("text/csv; charset=utf-8", "BirdNET.results.csv"),
        Format::Audacity => ("text/plain; charset=utf-8", "labels.txt"),
        Format::Ndjson => ("application/x-ndjson", "ndjson"),
        Format::Parquet => (parquet::MEDIA_TYPE, "parquet"),
    };
    Ok((
        [
            (header::CONTENT_TYPE, content_type.to_string()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"job-{job}.{extension}\""),
            ),
        ],
        body,
    )
        .into_response())
}

/// Which detections an export holds.
struct Filter {
    species: Option<String>,
    min_confidence: Option<f32>,
    path: Option<String>,
}

async fn produce(
    state: AppState,
    job: Uuid,
    format: Format,
    filter: Filter,
    tx: mpsc::Sender<Result<Bytes, std::io::Error>>,
) {
    let mut buf: Vec<u8> = Vec::with_capacity(CHUNK_BYTES * 2);
    match format {
        Format::Csv => buf.extend_from_slice(format!("{CSV_HEADER}\n").as_bytes()),
        Format::Raven => buf.extend_from_slice(format!("{RAVEN_HEADER}\n").as_bytes()),
        Format::Birdnet => buf.extend_from_slice(format!("{BIRDNET_HEADER}\n").as_bytes()),
        Format::Audacity | Format::Ndjson | Format::Parquet => {}
    }
    let mut parquet = None;
    if format == Format::Parquet {
        match parquet::ParquetExport::new(job) {
            Ok(export) => parquet = Some(export),
            Err(e) => {
                fail(&tx, job, &e).await;
                return;
            }
        }
    }
    let mut rows = sqlx::query_as::<_, Row>(
        "WITH sequence AS (
             SELECT t.source_path, t.file_sha256,
                    coalesce(sum(coalesce(f.duration_s, 0)) OVER (
                        ORDER BY t.source_path, t.file_sha256
                        ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING), 0) AS sequence_offset_s
             FROM tasks t JOIN audio_files f ON f.sha256 = t.file_sha256
             WHERE t.job_id = $1
         )
         SELECT d.source_path, d.file_sha256, d.window_index, d.start_s, d.end_s, d.species,
                d.confidence, d.model_version, d.threshold, d.start_at, d.end_at,
                d.utc_offset_minutes, d.start_local, q.sequence_offset_s,
                s.scientific_name
         FROM job_detections d
         JOIN sequence q ON q.source_path = d.source_path AND q.file_sha256 = d.file_sha256
         LEFT JOIN species s ON s.name = d.species
         WHERE d.job_id = $1
           AND ($2::text IS NULL OR d.species = $2)
           AND ($3::real IS NULL OR d.confidence >= $3)
           AND ($4::text IS NULL OR d.source_path = $4)
         ORDER BY d.source_path, d.file_sha256, d.window_index, d.confidence DESC, d.species",
    )
    .bind(job)
    .bind(filter.species)
    .bind(filter.min_confidence)
    .bind(filter.path)
    .fetch(&state.pool);
    let mut selection = 0u64;
    loop {
        let row = match rows.try_next().await {
            Ok(Some(row)) => row,
            Ok(None) => break,
            Err(e) => {
                fail(&tx, job, &e).await;
                return;
            }
        };
        selection += 1;
        if let Some(export) = parquet.as_mut() {
            match export.push(&row) {
                Ok(Some(group)) => buf.extend_from_slice(&group),
                Ok(None) => {}
                Err(e) => {
                    fail(&tx, job, &e).await;
                    return;
                }
            }
        } else {
            write_row(&mut buf, format, selection, &row);
        }
        if buf.len() >= CHUNK_BYTES {
            let chunk = Bytes::from(std::mem::take(&mut buf));
            if tx.send(Ok(chunk)).await.is_err() {
                return;
            }
        }
    }
    if let Some(export) = parquet {
        match export.finish() {
            Ok(rest) => buf.extend_from_slice(&rest),
            Err(e) => {
                fail(&tx, job, &e).await;
                return;
            }
        }
    }
    if !buf.is_empty() {
        let _ = tx.send(Ok(Bytes::from(buf))).await;
    }
}

/// Ends an export that cannot be completed. The status line is gone;
/// breaking the body tells the client the export is incomplete.
async fn fail(
    tx: &mpsc::Sender<Result<Bytes, std::io::Error>>,
    job: Uuid,
    error: &(dyn std::fmt::Display + Sync),
) {
    tracing::error!(%job, error = %error, "export failed");
    let _ = tx.send(Err(std::io::Error::other("export failed"))).await;
}

fn write_row(buf: &mut Vec<u8>, format: Format, selection: u64, row: &Row) {
    match format {
        Format::Csv => {
            let mut w = csv::WriterBuilder::new()
                .has_headers(false)
                .from_writer(Vec::new());
            let written = w.write_record([
                row.source_path.as_str(),
                &row.file_sha256,
                &row.window_index.to_string(),
                &format!("{:.3}", row.start_s),
                &format!("{:.3}", row.end_s),
                &row.species,
                &format!("{:.4}", row.confidence),
                &row.model_version,
                &format!("{:.4}", row.threshold),
                &instant(row.start_at),
                &instant(row.end_at),
                &row.utc_offset_minutes
                    .map(|m| m.to_string())
                    .unwrap_or_default(),
            ]);
            if written.is_ok()
                && let Ok(bytes) = w.into_inner()
            {
                buf.extend_from_slice(&bytes);
            }
        }
        Format::Raven => {
            let clean = |s: &str| s.replace(['\t', '\n', '\r'], " ");
            let begin = row.sequence_offset_s + row.start_s;
            // Raven's formats for these measurements: 2024/05/01, 05:30:03.000.
            let (date, clock) = row.start_local.map_or((String::new(), String::new()), |t| {
                (
                    t.format("%Y/%m/%d").to_string(),
                    t.format("%H:%M:%S%.3f").to_string(),
                )
            });
            buf.extend_from_slice(
                format!(
                    "{selection}\tSpectrogram 1\t1\t{:.3}\t{:.3}\t0\t{HIGH_FREQ_HZ}\t{}\t{:.3}\t{}\t{:.4}\t{}\t{}\n",
                    begin,
                    begin + (row.end_s - row.start_s),
                    clean(&row.source_path),
                    row.start_s,
                    clean(&row.species),
                    row.confidence,
                    date,
                    clock,
                )
                .as_bytes(),
            );
        }
        Format::Birdnet => {
            let mut w = csv::WriterBuilder::new()
                .has_headers(false)
                .from_writer(Vec::new());
            let written = w.write_record([
                &format!("{:.1}", row.start_s),
                &format!("{:.1}", row.end_s),
                row.scientific_name.as_deref().unwrap_or(""),
                &row.species,
                &format!("{:.4}", row.confidence),
                &row.source_path,
            ]);
            if written.is_ok()
                && let Ok(bytes) = w.into_inner()
            {
                buf.extend_from_slice(&bytes);
            }
        }
        Format::Audacity => {
            // Audacity's label track: start, end and label, tab-separated.
            let label = format!("{} {:.2}", row.species, row.confidence);
            buf.extend_from_slice(
                format!(
                    "{:.3}\t{:.3}\t{}\n",
                    row.start_s,
                    row.end_s,
                    label.replace(['\t', '\n', '\r'], " ")
                )
                .as_bytes(),
            );
        }
        Format::Ndjson => {
            if serde_json::to_writer(&mut *buf, row).is_ok() {
                buf.push(b'\n');
            }
        }
        // Written a row group at a time by `produce`.
        Format::Parquet => {}
    }
}

/// An instant as the CSV gives it (RFC 3339 in UTC, to the millisecond), or
/// empty.
fn instant(t: Option<DateTime<Utc>>) -> String {
    t.map(|t| t.to_rfc3339_opts(SecondsFormat::Millis, true))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A detection of a recording that started at `start_at` (RFC 3339) on a clock
    /// `offset` minutes from UTC, or at an unknown time.
    pub(super) fn row(start_at: Option<&str>, offset: Option<i32>) -> Row {
        let start_at = start_at.map(|s| DateTime::parse_from_rfc3339(s).unwrap().to_utc());
        Row {
            source_path: "site 1/20240501_053000.WAV".into(),
            file_sha256: "a".repeat(64),
            window_index: 1,
            start_s: 3.0,
            end_s: 6.0,
            species: "Eurasian Wren".into(),
            confidence: 0.91,
            model_version: "v1".into(),
            threshold: 0.5,
            start_at,
            end_at: start_at.map(|t| t + chrono::TimeDelta::seconds(3)),
            utc_offset_minutes: offset,
            start_local: start_at.map(|t| {
                (t + chrono::TimeDelta::minutes(i64::from(offset.unwrap_or(0)))).naive_utc()
            }),
            sequence_offset_s: 0.0,
            scientific_name: Some("Troglodytes troglodytes".into()),
        }
    }

    fn written(format: Format, row: &Row) -> String {
        let mut buf = Vec::new();
        write_row(&mut buf, format, 1, row);
        String::from_utf8(buf).unwrap()
    }

    #[test]
    fn a_known_start_gives_absolute_times() {
        let known = row(Some("2024-05-01T04:30:03Z"), Some(60));
        let csv = written(Format::Csv, &known);
        let mut reader = csv::ReaderBuilder::new()
            .has_headers(false)
            .from_reader(csv.as_bytes());
        let record = reader.records().next().unwrap().unwrap();
        let columns: Vec<&str> = CSV_HEADER.split(',').collect();
        assert_eq!(record.len(), columns.len());
        let field = |name: &str| &record[columns.iter().position(|c| *c == name).unwrap()];
        assert_eq!(field("start_at"), "2024-05-01T04:30:03.000Z");
        assert_eq!(field("end_at"), "2024-05-01T04:30:06.000Z");
        assert_eq!(field("utc_offset_minutes"), "60");
        assert_eq!(field("threshold"), "0.5000");

        let raven = written(Format::Raven, &known);
        let cells: Vec<&str> = raven.trim_end().split('\t').collect();
        let header: Vec<&str> = RAVEN_HEADER.split('\t').collect();
        assert_eq!(cells.len(), header.len());
        let cell = |name: &str| cells[header.iter().position(|c| *c == name).unwrap()];
        // On the recorder's clock (UTC+1).
        assert_eq!(cell("Begin Date"), "2024/05/01");
        assert_eq!(cell("Begin Clock Time"), "05:30:03.000");

        let json: serde_json::Value =
            serde_json::from_str(&written(Format::Ndjson, &known)).unwrap();
        assert_eq!(json["start_at"], "2024-05-01T04:30:03Z");
        assert_eq!(json["utc_offset_minutes"], 60);
    }

    #[test]
    fn an_unknown_start_leaves_them_empty() {
        let unknown = row(None, None);
        let csv = written(Format::Csv, &unknown);
        assert!(csv.trim_end().ends_with(",0.5000,,,"), "{csv}");
        let raven = written(Format::Raven, &unknown);
        assert!(raven.ends_with("\t0.9100\t\t\n"), "{raven:?}");
        let json: serde_json::Value =
            serde_json::from_str(&written(Format::Ndjson, &unknown)).unwrap();
        assert!(json["start_at"].is_null());
    }
}
