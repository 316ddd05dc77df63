//! One candidate recording, from bytes to a queued task.
//!
//! The order is the crash-safe order of [`birdsong_common::jobs`]: bytes in
//! the object store, then the file row, then the label, then the task row,
//! then the confirmed message. Wherever a kill lands, a re-run either finds
//! the task (and `enqueue_pending` publishes it if its message was never
//! confirmed) or redoes the idempotent steps before it.

use std::io::{self, Read};
use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::Duration;

use birdsong_audio::AudioError;
use birdsong_common::jobs::{self, NewFile, Provenance};
use birdsong_common::recorded::TimeZone;
use birdsong_common::store::{ObjectStore, StoreError, audio_key};
use birdsong_common::wav_metadata::{self, HeaderMetadata};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::labels::Labeler;
use crate::progress::Stats;
use crate::reject::Reason;
use crate::source::{Entry, Payload};
use crate::{IngestError, Services};

/// What became of an entry.
#[derive(Debug)]
pub enum Outcome {
    /// A new task, queued.
    Accepted {
        bytes: u64,
        labelled: bool,
    },
    /// Same content as an entry that already has a task in this job.
    Duplicate {
        labelled: bool,
    },
    Rejected(Reason),
}

/// What the uploaders share.
pub struct Context<'a> {
    pub services: &'a Services,
    pub job: Uuid,
    pub labeler: &'a Labeler,
    pub site: Option<&'a str>,
    /// The zone the recorders kept time in, for start times that name none.
    pub time_zone: Option<&'a TimeZone>,
    pub stats: &'a Stats,
}

/// Takes one entry through identification, upload and submission.
pub async fn submit(ctx: &Context<'_>, entry: Entry) -> Result<Outcome, IngestError> {
    let Entry {
        path,
        relative,
        folder,
        size: _,
        payload,
        credit,
    } = entry;
    let max = ctx.services.max_file_bytes;
    let identified = tokio::task::spawn_blocking(move || identify(payload, max))
        .await
        .map_err(|e| IngestError::Task(e.to_string()))?;
    ctx.stats.bytes_done.fetch_add(credit, Ordering::Relaxed);
    let (payload, sha, size, header) = match identified {
        Ok(found) => found,
        Err(reason) => return Ok(Outcome::Rejected(reason)),
    };
    upload(&ctx.services.store, &sha, &payload).await?;
    drop(payload);
    let pool = &ctx.services.pool;
    jobs::register_recording(
        pool,
        &NewFile {
            sha256: &sha,
            original_name: &relative,
            size_bytes: size,
            site: ctx.site,
        },
        Provenance {
            header: header.as_ref(),
            time_zone: ctx.time_zone,
        },
    )
    .await?;
    let label = ctx.labeler.species_for(&relative, folder.as_deref());
    if let Some((species, source)) = &label {
        jobs::label(pool, &sha, species, source).await?;
    }
    let labelled = label.is_some();
    let task = jobs::add_task(pool, ctx.job, &sha, &path).await?;
    if !task.created {
        // Another entry of this job has the same bytes; its task (queued
        // by whoever created it, or by `enqueue_pending` at the end)
        // covers this one.
        return Ok(Outcome::Duplicate { labelled });
    }
    jobs::enqueue(
        pool,
        &ctx.services.publisher,
        &ctx.services.classify_queue,
        ctx.job,
        task.id,
        &sha,
    )
    .await?;
    Ok(Outcome::Accepted {
        bytes: size,
        labelled,
    })
}

/// What [`identify`] learns about an entry: its bytes, their SHA-256 and size,
/// and what its WAV header says.
type Identified = (Payload, String, u64, Option<HeaderMetadata>);

/// Hashes (for files on disk), probes an entry and reads its WAV header.
/// Blocking.
fn identify(payload: Payload, max_file_bytes: u64) -> Result<Identified, Reason> {
    let (sha, size) = match &payload {
        Payload::Disk(path) => hash_file(path, max_file_bytes)?,
        Payload::Memory { bytes, sha256 } => (sha256.clone(), bytes.len() as u64),
        Payload::Spilled { file, sha256 } => (
            sha256.clone(),
            file.as_file()
                .metadata()
                .map_err(|e| Reason::Unreadable(e.to_string()))?
                .len(),
        ),
    };
    let probed = match &payload {
        Payload::Disk(path) => birdsong_audio::probe(path),
        Payload::Memory { bytes, .. } => {
            birdsong_audio::probe_reader(io::Cursor::new(bytes.clone()))
        }
        Payload::Spilled { file, .. } => birdsong_audio::probe(file.path()),
    };
    match probed {
        Ok(_) => {
            let header = header_metadata(&payload);
            Ok((payload, sha, size, header))
        }
        Err(AudioError::Io(e)) => Err(Reason::Unreadable(e.to_string())),
        Err(e) => Err(Reason::NotAudio(e.to_string())),
    }
}

/// What the entry's WAV header says, if it is a WAV with metadata. A header
/// that cannot be read costs the recording its metadata, never its place in
/// the job: the audio decoded, and the file name may still give its time.
fn header_metadata(payload: &Payload) -> Option<HeaderMetadata> {
    let read = match payload {
        Payload::Disk(path) => wav_metadata::read_path(path),
        Payload::Memory { bytes, .. } => wav_metadata::read(&mut io::Cursor::new(bytes.as_ref())),
        Payload::Spilled { file, .. } => wav_metadata::read_path(file.path()),
    };
    match read {
        Ok(header) => header.filter(|h| !h.is_empty()),
        Err(e) => {
            tracing::warn!("ignoring an unreadable WAV header: {e}");
            None
        }
    }
}

/// SHA-256 and size of a file, refusing it once it passes the size limit
/// (it may have grown since the walk saw it).
fn hash_file(path: &Path, max_file_bytes: u64) -> Result<(String, u64), Reason> {
    let unreadable = |e: io::Error| Reason::Unreadable(e.to_string());
    let mut file = std::fs::File::open(path).map_err(unreadable)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut total = 0u64;
    loop {
        let n = match file.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(unreadable(e)),
        };
        total += n as u64;
        if total > max_file_bytes {
            return Err(Reason::TooLarge {
                size: total,
                limit: max_file_bytes,
            });
        }
        hasher.update(&buf[..n]);
    }
    if total == 0 {
        return Err(Reason::Empty);
    }
    Ok((hex::encode(hasher.finalize()), total))
}

/// Stores the bytes under their content key unless they are there already.
/// Transient store failures are retried a few times before giving up (the
/// SDK retries too; this covers a store restarting). Returns whether it
/// uploaded.
async fn upload(store: &ObjectStore, sha: &str, payload: &Payload) -> Result<bool, IngestError> {
    let key = audio_key(sha);
    let mut delay = Duration::from_millis(500);
    let mut attempt = 1;
    loop {
        let result: Result<bool, StoreError> = async {
            if store.head(&key).await?.is_some() {
                return Ok(false);
            }
            match payload {
                Payload::Disk(path) => store.put_file(&key, path).await?,
                Payload::Memory { bytes, .. } => store.put(&key, bytes.clone()).await?,
                Payload::Spilled { file, .. } => store.put_file(&key, file.path()).await?,
            }
            Ok(true)
        }
        .await;
        match result {
            Err(e) if e.is_transient() && attempt < 4 => {
                tracing::warn!("object store unavailable (attempt {attempt}), retrying: {e}");
                tokio::time::sleep(delay).await;
                delay *= 2;
                attempt += 1;
            }
            other => return other.map_err(IngestError::from),
        }
    }
}
