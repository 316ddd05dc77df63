//! Turning recordings into queued tasks, the same way from every entry point.
//!
//! The producer, the API and the tests all submit work through these
//! functions, so that the order that makes submission crash-safe lives in one
//! place:
//!
//! 1. the bytes are in the object store (content-addressed) before any row
//!    points at them;
//! 2. the file, job and task rows are upserted (unique keys: re-running a
//!    submission finds the rows it made before);
//! 3. the `classify` message is published with a confirm, and only then is
//!    the task stamped `queued_at`. A crash between 2 and 3 leaves a task
//!    without `queued_at`, which the next run publishes; a crash between the
//!    confirm and the stamp publishes the task twice, which the worker
//!    absorbs (it acks a task that is already done).

use sqlx::PgPool;
use uuid::Uuid;

use crate::db::{QueryError, query};
use crate::messages::ClassifyTask;
use crate::queue::{Publisher, QueueError};
use crate::recorded::{Resolved, StartTime, TimeZone};
use crate::store::audio_key;
use crate::wav_metadata::HeaderMetadata;

/// Where a submission came from (the `jobs.source` column).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobSource {
    Producer,
    Api,
    Reclassify,
}

impl JobSource {
    pub fn as_str(self) -> &'static str {
        match self {
            JobSource::Producer => "producer",
            JobSource::Api => "api",
            JobSource::Reclassify => "reclassify",
        }
    }
}

/// A failure while submitting work.
#[derive(Debug, thiserror::Error)]
pub enum SubmitError {
    #[error(transparent)]
    Db(#[from] QueryError),
    #[error(transparent)]
    Queue(#[from] QueueError),
}

/// Creates a job, or finds the one created earlier with the same
/// idempotency key (a re-run of the same ingest). Returns its id and whether
/// it already existed.
pub async fn open_job(
    pool: &PgPool,
    source: JobSource,
    description: &str,
    idempotency_key: Option<&str>,
) -> Result<(Uuid, bool), SubmitError> {
    let id = Uuid::new_v4();
    let row: (Uuid, bool) = sqlx::query_as(
        "INSERT INTO jobs (id, source, description, idempotency_key)
         VALUES ($1, $2, $3, $4)
         ON CONFLICT (idempotency_key) DO UPDATE SET updated_at = now()
         RETURNING id, (xmax <> 0) AS existed",
    )
    .bind(id)
    .bind(source.as_str())
    .bind(description)
    .bind(idempotency_key)
    .fetch_one(pool)
    .await
    .map_err(query("opening the job"))?;
    Ok(row)
}

/// What a job reports: only these species (BirdNET-Analyzer's `--slist`)
/// and only detections at or above this confidence. Empty: everything.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Reporting {
    pub species_list: Option<Vec<String>>,
    pub min_confidence: Option<f32>,
}

/// Most species on one job's list.
pub const MAX_SPECIES_LIST: usize = 10_000;
/// Longest species name on a list, in characters (as for labels).
pub const MAX_SPECIES_CHARS: usize = 200;

/// Why a job's reporting filter was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ReportingError {
    #[error("the species list is empty")]
    EmptyList,
    #[error("the species list has more than {MAX_SPECIES_LIST} names")]
    LongList,
    #[error("species names on the list are 1 to {MAX_SPECIES_CHARS} characters without NUL: {0:?}")]
    BadName(String),
    #[error("the minimum confidence must be between 0 and 1, not {0}")]
    BadConfidence(f32),
}

impl Reporting {
    /// Checks the filter and trims and de-duplicates the names.
    pub fn checked(self) -> Result<Self, ReportingError> {
        let species_list = match self.species_list {
            None => None,
            Some(names) => {
                let mut kept: Vec<String> = Vec::with_capacity(names.len());
                for name in names {
                    let name = name.trim().to_string();
                    let n = name.chars().count();
                    if n == 0 || n > MAX_SPECIES_CHARS || name.contains('\0') {
                        return Err(ReportingError::BadName(name));
                    }
                    if !kept.contains(&name) {
                        kept.push(name);
                    }
                }
                if kept.is_empty() {
                    return Err(ReportingError::EmptyList);
                }
                if kept.len() > MAX_SPECIES_LIST {
                    return Err(ReportingError::LongList);
                }
                Some(kept)
            }
        };
        if let Some(c) = self.min_confidence
            && !(0.0..=1.0).contains(&c)
        {
            return Err(ReportingError::BadConfidence(c));
        }
        Ok(Self {
            species_list,
            min_confidence: self.min_confidence,
        })
    }

    /// Reads a species list the way BirdNET-Analyzer's `--slist` files are
    /// written: one species per line; blank lines and `#` comments skipped.
    /// A `Genus species_Common name` line names the common name, which is
    /// what labels (and so models) use.
    pub fn parse_list(text: &str) -> Vec<String> {
        text.lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .map(|l| match l.split_once('_') {
                // `Genus species_Common name`; a bare name may hold `_`.
                Some((scientific, common))
                    if scientific.trim().contains(' ') && !common.trim().is_empty() =>
                {
                    common.trim().to_string()
                }
                _ => l.to_string(),
            })
            .collect()
    }
}

/// Sets what `job` reports (see [`Reporting`]).
pub async fn set_reporting(
    pool: &PgPool,
    job: Uuid,
    reporting: &Reporting,
) -> Result<(), SubmitError> {
    sqlx::query("UPDATE jobs SET species_list = $2, min_confidence = $3 WHERE id = $1")
        .bind(job)
        .bind(reporting.species_list.as_deref())
        .bind(reporting.min_confidence)
        .execute(pool)
        .await
        .map_err(query("setting what the job reports"))?;
    Ok(())
}

/// What is known about a recording when it is registered.
#[derive(Debug, Clone)]
pub struct NewFile<'a> {
    pub sha256: &'a str,
    pub original_name: &'a str,
    pub size_bytes: u64,
    pub site: Option<&'a str>,
}

/// What the recording's bytes and its ingest say about when, where and on
/// what it was made, beyond its name.
#[derive(Debug, Clone, Copy, Default)]
pub struct Provenance<'a> {
    /// Its WAV header's metadata, when it has any.
    pub header: Option<&'a HeaderMetadata>,
    /// The zone the ingest's recorders kept time in, for start times that
    /// name none (file names, GUANO timestamps without an offset).
    pub time_zone: Option<&'a TimeZone>,
}

/// Records a recording whose bytes are already stored under its content key,
/// when only its name is known; see [`register_recording`].
pub async fn register_file(pool: &PgPool, file: &NewFile<'_>) -> Result<(), SubmitError> {
    register_recording(pool, file, Provenance::default()).await
}

/// Records a recording whose bytes are already stored under its content key.
/// Idempotent: the first name and metadata seen are kept, except that a start
/// time from a better source replaces the one stored (the header's beats the
/// name's, a name read in a known zone beats one read as UTC), so ingesting
/// the same bytes again with a time zone, or after this reader learnt the
/// header, improves the row. The start time comes from the header, else from
/// the name ([`crate::recorded::local_from_file_name`]).
pub async fn register_recording(
    pool: &PgPool,
    file: &NewFile<'_>,
    provenance: Provenance<'_>,
) -> Result<(), SubmitError> {
    let header = provenance.header.filter(|h| !h.is_empty());
    let start = header
        .and_then(|h| h.recorded_at)
        .map(|(time, source)| (time, source.as_str()))
        .or_else(|| {
            crate::recorded::local_from_file_name(file.original_name)
                .map(|t| (StartTime::Local(t), "file_name"))
        });
    let resolved = start.and_then(|(time, source)| {
        crate::recorded::resolve(time, provenance.time_zone).map(|r| (r, source))
    });
    let (mut instant, mut offset, mut local, mut zone, mut source) = (None, None, None, None, None);
    match resolved {
        Some((
            Resolved::Instant {
                utc,
                offset_minutes,
            },
            s,
        )) => {
            (instant, offset, source) = (Some(utc), offset_minutes, Some(s));
        }
        Some((Resolved::InZone { local: l, zone: z }, s)) => {
            (local, zone, source) = (Some(l), Some(z), Some(s));
        }
        None => {}
    }
    let position = header.and_then(|h| h.position);
    // A new start time replaces the stored one only when its source ranks
    // higher (`recording_time_rank`, in the migration that added the columns).
    sqlx::query(
        "INSERT INTO audio_files (sha256, object_key, original_name, size_bytes, site,
                                  recorded_at, utc_offset_minutes, recorded_at_source,
                                  latitude, longitude, device, device_serial, header_metadata)
         VALUES ($1, $2, $3, $4, $5,
                 coalesce($6, $7::timestamp AT TIME ZONE $8),
                 coalesce($9, (extract(epoch FROM $7::timestamp
                     - ($7::timestamp AT TIME ZONE $8) AT TIME ZONE 'UTC') / 60)::integer),
                 $10, $11, $12, $13, $14, $15)
         ON CONFLICT (sha256) DO UPDATE SET
             site = coalesce(audio_files.site, EXCLUDED.site),
             (recorded_at, utc_offset_minutes, recorded_at_source) = (
                 SELECT CASE WHEN better THEN EXCLUDED.recorded_at ELSE audio_files.recorded_at END,
                        CASE WHEN better THEN EXCLUDED.utc_offset_minutes
                             ELSE audio_files.utc_offset_minutes END,
                        CASE WHEN better THEN EXCLUDED.recorded_at_source
                             ELSE audio_files.recorded_at_source END
                 FROM (SELECT recording_time_rank(EXCLUDED.recorded_at_source,
                                                  EXCLUDED.utc_offset_minutes)
                              > recording_time_rank(audio_files.recorded_at_source,
                                                    audio_files.utc_offset_minutes) AS better) r),
             -- Both or neither (a constraint), so these keep a pair together.
             latitude = coalesce(audio_files.latitude, EXCLUDED.latitude),
             longitude = coalesce(audio_files.longitude, EXCLUDED.longitude),
             device = coalesce(audio_files.device, EXCLUDED.device),
             device_serial = coalesce(audio_files.device_serial, EXCLUDED.device_serial),
             header_metadata = coalesce(audio_files.header_metadata, EXCLUDED.header_metadata)",
    )
    .bind(file.sha256)
    .bind(audio_key(file.sha256))
    .bind(file.original_name)
    .bind(i64::try_from(file.size_bytes).unwrap_or(i64::MAX))
    .bind(file.site)
    .bind(instant)
    .bind(local)
    .bind(zone)
    .bind(offset)
    .bind(source)
    .bind(position.map(|p| p.0))
    .bind(position.map(|p| p.1))
    .bind(header.and_then(|h| h.device.as_deref()))
    .bind(header.and_then(|h| h.serial.as_deref()))
    .bind(header.map(|h| sqlx::types::Json(&h.raw)))
    .execute(pool)
    .await
    .map_err(query("registering the file"))?;
    Ok(())
}

/// Whether PostgreSQL's time zone database knows `zone` (an IANA name);
/// offsets are always known. Checked before an ingest starts, so that a
/// misspelt zone refuses the request instead of failing every file.
pub async fn known_time_zone(pool: &PgPool, zone: &TimeZone) -> Result<bool, SubmitError> {
    let TimeZone::Named(name) = zone else {
        return Ok(true);
    };
    let known: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_timezone_names WHERE name = $1)")
            .bind(name)
            .fetch_one(pool)
            .await
            .map_err(query("looking up the time zone"))?;
    Ok(known)
}

/// A task as [`add_task`] found or created it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct TaskRow {
    pub id: Uuid,
    pub status: String,
    /// Whether its message has been confirmed by the broker.
    pub queued: bool,
    /// False when this submission met a task made earlier for the same
    /// recording in the same job (a duplicate, or a re-run).
    pub created: bool,
}

/// Adds the task for `sha256` in `job`, or returns the existing one.
pub async fn add_task(
    pool: &PgPool,
    job: Uuid,
    sha256: &str,
    source_path: &str,
) -> Result<TaskRow, SubmitError> {
    sqlx::query_as(
        "INSERT INTO tasks (id, job_id, file_sha256, source_path)
         VALUES ($1, $2, $3, $4)
         ON CONFLICT (job_id, file_sha256) DO UPDATE SET updated_at = tasks.updated_at
         RETURNING id, status, queued_at IS NOT NULL AS queued, (xmax = 0) AS created",
    )
    .bind(Uuid::new_v4())
    .bind(job)
    .bind(sha256)
    .bind(source_path)
    .fetch_one(pool)
    .await
    .map_err(|e| query("adding the task")(e).into())
}

/// Publishes the task's message (with a confirm) and stamps it queued.
pub async fn enqueue(
    pool: &PgPool,
    publisher: &Publisher,
    queue: &str,
    job: Uuid,
    task: Uuid,
    sha256: &str,
) -> Result<(), SubmitError> {
    publisher
        .publish(queue, &ClassifyTask::new(task, job, sha256.to_string()))
        .await?;
    sqlx::query(
        "UPDATE tasks SET queued_at = coalesce(queued_at, now()), updated_at = now() WHERE id = $1",
    )
    .bind(task)
    .execute(pool)
    .await
    .map_err(query("marking the task queued"))?;
    Ok(())
}

/// Publishes every task of `job` that has no confirmed message yet (what a
/// crashed submission left behind). Returns how many it published.
pub async fn enqueue_pending(
    pool: &PgPool,
    publisher: &Publisher,
    queue: &str,
    job: Uuid,
) -> Result<usize, SubmitError> {
    let pending: Vec<(Uuid, String)> = sqlx::query_as(
        "SELECT id, file_sha256 FROM tasks WHERE job_id = $1 AND queued_at IS NULL AND status = 'queued'",
    )
    .bind(job)
    .fetch_all(pool)
    .await
    .map_err(query("listing unqueued tasks"))?;
    for (task, sha) in &pending {
        enqueue(pool, publisher, queue, job, *task, sha).await?;
    }
    Ok(pending.len())
}

/// Records an entry of a submission that was refused, with the reason.
pub async fn reject(pool: &PgPool, job: Uuid, path: &str, reason: &str) -> Result<(), SubmitError> {
    sqlx::query(
        "INSERT INTO job_rejections (job_id, path, reason) VALUES ($1, $2, $3)
         ON CONFLICT (job_id, path) DO UPDATE SET reason = EXCLUDED.reason",
    )
    .bind(job)
    .bind(path)
    .bind(reason)
    .execute(pool)
    .await
    .map_err(query("recording a rejected entry"))?;
    Ok(())
}

/// Counts of a finished submission, stored on the job row.
#[derive(Debug, Clone, Copy, Default)]
pub struct SubmissionCounts {
    pub accepted: i32,
    pub duplicate: i32,
    pub rejected: i32,
    pub bytes: i64,
}

/// Marks the job fully submitted (every task has a confirmed message) and
/// stores its counts.
pub async fn close_job(
    pool: &PgPool,
    job: Uuid,
    counts: SubmissionCounts,
) -> Result<(), SubmitError> {
    sqlx::query(
        "UPDATE jobs SET files_accepted = $2, files_duplicate = $3, files_rejected = $4,
                bytes_accepted = $5, submitted_at = coalesce(submitted_at, now()), updated_at = now()
         WHERE id = $1",
    )
    .bind(job)
    .bind(counts.accepted)
    .bind(counts.duplicate)
    .bind(counts.rejected)
    .bind(counts.bytes)
    .execute(pool)
    .await
    .map_err(query("closing the job"))?;
    Ok(())
}

/// Records a species label for a recording (training data).
pub async fn label(
    pool: &PgPool,
    sha256: &str,
    species: &str,
    source: &str,
) -> Result<(), SubmitError> {
    let mut tx = pool.begin().await.map_err(query("labelling"))?;
    sqlx::query("INSERT INTO species (name) VALUES ($1) ON CONFLICT (name) DO NOTHING")
        .bind(species)
        .execute(&mut *tx)
        .await
        .map_err(query("recording the species"))?;
    sqlx::query(
        "INSERT INTO labels (file_sha256, source, species) VALUES ($1, $2, $3)
         ON CONFLICT (file_sha256, source) DO UPDATE
           SET species = EXCLUDED.species,
               updated_at = CASE WHEN labels.species = EXCLUDED.species THEN labels.updated_at ELSE now() END",
    )
    .bind(sha256)
    .bind(source)
    .bind(species)
    .execute(&mut *tx)
    .await
    .map_err(query("recording the label"))?;
    tx.commit().await.map_err(query("committing the label"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn species_lists_read_like_birdnet_analyzer_s() {
        let text = "# my site\nTurdus migratorius_American Robin\n\n  Bananaquit \nspecies_0\n";
        assert_eq!(
            Reporting::parse_list(text),
            ["American Robin", "Bananaquit", "species_0"]
        );
    }

    #[test]
    fn reporting_filters_are_checked() {
        let list = |names: &[&str]| Reporting {
            species_list: Some(names.iter().map(|s| s.to_string()).collect()),
            min_confidence: None,
        };
        let ok = list(&[" A ", "B", "A"]).checked().unwrap();
        assert_eq!(ok.species_list.unwrap(), ["A", "B"]);
        assert_eq!(list(&[]).checked(), Err(ReportingError::EmptyList));
        assert!(matches!(
            list(&["a\0b"]).checked(),
            Err(ReportingError::BadName(_))
        ));
        assert!(matches!(
            list(&[""]).checked(),
            Err(ReportingError::BadName(_))
        ));
        let high = Reporting {
            species_list: None,
            min_confidence: Some(1.5),
        };
        assert_eq!(high.checked(), Err(ReportingError::BadConfidence(1.5)));
        assert_eq!(Reporting::default().checked(), Ok(Reporting::default()));
    }
}
