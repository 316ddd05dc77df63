//! Ingestion of field recordings: folders, archives and uploads in, stored
//! recordings and queued classification tasks out.
//!
//! Where it sits: first in the flow. The producer's command line
//! (`birdsong-producer ingest`) and the API's `POST /v1/jobs` both call this
//! library; what it writes (`audio/<sha256>` objects, `audio_files`, `tasks`,
//! `job_rejections`, `classify` messages) is what the workers consume.
//!
//! A monitoring season is tens of thousands of files, delivered as folders
//! from SD cards or as archives from collaborators, and an import that dies
//! at 80 % must not be started again from zero or leave duplicates behind.
//! Ingestion is therefore built around three ideas:
//!
//! * **Content, not names.** A recording is identified by the SHA-256 of its
//!   bytes (stored once under `audio/<sha256>`), recognised as audio by
//!   decoding its header, and an archive is recognised by its signature. A
//!   `.wav` that is really a text file is refused with a reason; the same
//!   recording under two names is one task.
//! * **Streams, not copies.** Archives are read entry by entry (tar and
//!   tar.gz as a stream, zip from its directory); an entry is held in memory
//!   or, if large, in an anonymous temporary file, and nothing from an
//!   archive is ever written under its own name. A bounded channel between
//!   the reader and the uploaders keeps memory flat whatever the input size.
//! * **Re-runs finish, they do not repeat.** The job's idempotency key is
//!   derived from the resolved inputs and the options that change what is
//!   submitted, so running the same command again after a crash (even
//!   `kill -9`) opens the same job, skips every entry that already has a
//!   task, publishes the tasks whose message was never confirmed, and
//!   upserts everything else. See `README.md` for the exact guarantees.
//!
//! Layout: [`source`] walks folders and sniffs files, [`archive`] streams
//! archives safely, [`upload`] hashes, probes, stores and submits one
//! recording, [`session`] submits a stream of entries (the loop both front
//! ends share), [`labels`] maps recordings to species, [`progress`]
//! reports, [`summary`] is the final report, and [`ingest`] ties them
//! together for folders and archives on disk.

pub mod archive;
pub mod labels;
pub mod progress;
pub mod reject;
pub mod session;
pub mod source;
pub mod summary;
pub mod upload;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use birdsong_common::Config;
use birdsong_common::db::{DbError, QueryError, query};
use birdsong_common::jobs::{self, JobSource, SubmissionCounts, SubmitError};
use birdsong_common::queue::{self, Publisher, QueueError};
use birdsong_common::recorded::TimeZone;
use birdsong_common::store::{ObjectStore, StoreError};
use sha2::{Digest, Sha256};
use sqlx::PgPool;
use tokio::sync::mpsc;
use uuid::Uuid;

pub use labels::{LabelError, Labeler};
pub use progress::{ProgressMode, Stats};
pub use reject::Reason;
pub use summary::{Rejection, Summary};

use session::Tally;
use source::{Event, Limits, Root, SourceError};
use upload::Context;

/// Default number of recordings processed at once.
pub const DEFAULT_CONCURRENCY: usize = 4;
/// Default limit on how much larger than on disk an archive may expand.
pub const DEFAULT_MAX_EXPANSION_RATIO: u64 = 100;
/// Default size up to which an archive entry is held in memory.
pub const DEFAULT_MEMORY_ENTRY_BYTES: u64 = 32 * 1024 * 1024;

/// Where species labels come from.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum LabelSource {
    #[default]
    None,
    /// A CSV file with `path` and `species` columns.
    Csv(PathBuf),
    /// The name of the folder each recording is in.
    Folder,
}

/// What to ingest and how.
#[derive(Debug, Clone)]
pub struct IngestOptions {
    /// Files, folders and archives.
    pub inputs: Vec<PathBuf>,
    pub labels: LabelSource,
    /// Recorder or site name stored with every new recording.
    pub site: Option<String>,
    /// The zone the recorders kept time in, applied to start times that
    /// name none (file names, GUANO timestamps without an offset); without
    /// it those are read as UTC. A header's own offset always wins.
    pub time_zone: Option<TimeZone>,
    /// What the job reports: a species list and a minimum confidence
    /// (applied where results are read; re-running with another filter
    /// changes it).
    pub reporting: jobs::Reporting,
    /// Recordings processed at once (at least 1).
    pub concurrency: usize,
    /// An archive may expand to at most this multiple of its size on disk.
    pub max_expansion_ratio: u64,
    /// And to at most this many bytes, if set.
    pub max_archive_bytes: Option<u64>,
    /// Archive entries up to this size are read into memory; larger ones
    /// into a temporary file.
    pub memory_entry_bytes: u64,
    /// Where temporary files go (default: the system's temporary
    /// directory). A private directory is created inside and removed at the
    /// end.
    pub temp_dir: Option<PathBuf>,
    pub progress: ProgressMode,
    /// Free text stored on the job (default: the command line).
    pub description: Option<String>,
}

impl IngestOptions {
    /// The defaults for these inputs: no labels, no progress output.
    pub fn new(inputs: Vec<PathBuf>) -> Self {
        Self {
            inputs,
            labels: LabelSource::None,
            site: None,
            time_zone: None,
            reporting: jobs::Reporting::default(),
            concurrency: DEFAULT_CONCURRENCY,
            max_expansion_ratio: DEFAULT_MAX_EXPANSION_RATIO,
            max_archive_bytes: None,
            memory_entry_bytes: DEFAULT_MEMORY_ENTRY_BYTES,
            temp_dir: None,
            progress: ProgressMode::Quiet,
            description: None,
        }
    }
}

/// Why an ingest stopped. Refused entries are not errors (they are in the
/// [`Summary`]); these are problems with the command or the services, and
/// re-running the same command after fixing them resumes the job.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error("invalid option: {0}")]
    Options(String),
    #[error("cannot use input {path}: {source}")]
    Input {
        path: String,
        source: std::io::Error,
    },
    #[error(transparent)]
    Labels(#[from] LabelError),
    #[error(transparent)]
    Database(#[from] DbError),
    #[error(transparent)]
    Queue(#[from] QueueError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Submit(#[from] SubmitError),
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error(transparent)]
    Query(#[from] QueryError),
    #[error("cannot create a temporary directory in {dir}: {source}")]
    Temp { dir: String, source: std::io::Error },
    #[error("internal task failed: {0}")]
    Task(String),
}

/// The services an ingest talks to.
#[derive(Clone)]
pub struct Services {
    pub pool: PgPool,
    pub store: ObjectStore,
    pub publisher: Publisher,
    /// The `classify` queue's full name.
    pub classify_queue: String,
    /// `BIRDSONG_MAX_FILE_BYTES`.
    pub max_file_bytes: u64,
}

impl Services {
    /// Connects to everything `cfg` names, creating the database schema,
    /// the bucket and the queues if they are missing.
    pub async fn connect(cfg: &Config) -> Result<Self, IngestError> {
        let pool = birdsong_common::db::prepare(&cfg.database).await?;
        let store = ObjectStore::new(&cfg.s3);
        store.ensure_bucket().await?;
        let amqp = queue::connect(&cfg.queues.amqp_url, "birdsong-producer").await?;
        let publisher = Publisher::new(&amqp).await?;
        queue::declare_topology(&publisher.channel(), &cfg.queues).await?;
        Ok(Self::new(cfg, pool, store, publisher))
    }

    /// Uses connections made elsewhere (tests, or an embedding process).
    pub fn new(cfg: &Config, pool: PgPool, store: ObjectStore, publisher: Publisher) -> Self {
        Self {
            pool,
            store,
            publisher,
            classify_queue: cfg.queues.classify.clone(),
            max_file_bytes: cfg.max_file_bytes,
        }
    }
}

/// Resolves the inputs to canonical paths, dropping repeats.
fn resolve(inputs: &[PathBuf]) -> Result<Vec<Root>, IngestError> {
    let mut seen = HashSet::new();
    let mut roots = Vec::new();
    for input in inputs {
        let input_error = |source| IngestError::Input {
            path: input.display().to_string(),
            source,
        };
        let path = std::fs::canonicalize(input).map_err(input_error)?;
        let meta = std::fs::metadata(&path).map_err(input_error)?;
        if !(meta.is_dir() || meta.is_file()) {
            return Err(IngestError::Input {
                path: input.display().to_string(),
                source: std::io::Error::other("not a regular file or folder"),
            });
        }
        if seen.insert(path.clone()) {
            roots.push(Root {
                path,
                is_dir: meta.is_dir(),
            });
        }
    }
    Ok(roots)
}

/// The job's idempotency key: a hash of what determines the submission —
/// the resolved inputs (order-independent), the labels (the CSV file's
/// content, not only its name), the site and the time zone. Tuning options (concurrency,
/// limits) are left out on purpose, so that a re-run with other limits
/// finishes the same job.
fn idempotency_key(
    roots: &[Root],
    labels: &LabelSource,
    site: Option<&str>,
    time_zone: Option<&TimeZone>,
) -> Result<String, IngestError> {
    let mut inputs: Vec<String> = roots
        .iter()
        .map(|r| r.path.to_string_lossy().into_owned())
        .collect();
    inputs.sort();
    let labels = match labels {
        LabelSource::None => serde_json::Value::Null,
        LabelSource::Folder => serde_json::json!("folder"),
        LabelSource::Csv(path) => {
            let bytes = std::fs::read(path).map_err(|source| IngestError::Input {
                path: path.display().to_string(),
                source,
            })?;
            serde_json::json!({ "csv": hex::encode(Sha256::digest(&bytes)) })
        }
    };
    let mut canonical = serde_json::json!({
        "v": 1,
        "inputs": inputs,
        "labels": labels,
        "site": site,
    });
    // Only when given, so that runs without one keep the keys they had
    // before the option existed (and resume their jobs).
    if let Some(zone) = time_zone {
        canonical["time_zone"] = serde_json::json!(zone.to_string());
    }
    Ok(format!(
        "producer:v1:{}",
        hex::encode(Sha256::digest(canonical.to_string().as_bytes()))
    ))
}

fn description(opts: &IngestOptions, roots: &[Root]) -> String {
    let text = opts.description.clone().unwrap_or_else(|| {
        let inputs: Vec<String> = roots.iter().map(|r| r.path.display().to_string()).collect();
        format!("birdsong-producer ingest {}", inputs.join(" "))
    });
    text.chars().take(1000).collect()
}

/// Ingests `opts.inputs`: every recording found becomes a queued task of one
/// job, every refused entry a row of `job_rejections`. Safe to run again
/// with the same inputs and options, at any time, any number of times.
pub async fn ingest(services: &Services, opts: &IngestOptions) -> Result<Summary, IngestError> {
    if opts.concurrency == 0 {
        return Err(IngestError::Options(
            "concurrency must be at least 1".into(),
        ));
    }
    if opts.max_expansion_ratio == 0 {
        return Err(IngestError::Options(
            "the expansion ratio must be at least 1".into(),
        ));
    }
    if opts.inputs.is_empty() {
        return Err(IngestError::Options("nothing to ingest".into()));
    }
    let roots = resolve(&opts.inputs)?;
    let labeler = match &opts.labels {
        LabelSource::None => Labeler::none(),
        LabelSource::Folder => Labeler::from_folder(),
        LabelSource::Csv(path) => Labeler::from_csv(path)?,
    };
    let pool = &services.pool;
    let reporting = opts
        .reporting
        .clone()
        .checked()
        .map_err(|e| IngestError::Options(e.to_string()))?;
    if let Some(zone) = &opts.time_zone
        && !jobs::known_time_zone(pool, zone).await?
    {
        return Err(IngestError::Options(format!(
            "unknown time zone \"{zone}\": use an offset such as +01:00, or an IANA name such as Europe/Berlin"
        )));
    }
    let key = idempotency_key(
        &roots,
        &opts.labels,
        opts.site.as_deref(),
        opts.time_zone.as_ref(),
    )?;
    let (job, resumed) = jobs::open_job(
        pool,
        JobSource::Producer,
        &description(opts, &roots),
        Some(&key),
    )
    .await?;
    if resumed || reporting != jobs::Reporting::default() {
        jobs::set_reporting(pool, job, &reporting).await?;
    }
    tracing::info!(%job, resumed, "ingest started");
    let done: HashSet<String> = if resumed {
        sqlx::query_scalar("SELECT source_path FROM tasks WHERE job_id = $1")
            .bind(job)
            .fetch_all(pool)
            .await
            .map_err(query("listing the job's existing tasks"))?
            .into_iter()
            .collect()
    } else {
        HashSet::new()
    };

    let temp_parent = opts.temp_dir.clone().unwrap_or_else(std::env::temp_dir);
    let temp = tempfile::Builder::new()
        .prefix("birdsong-ingest-")
        .tempdir_in(&temp_parent)
        .map_err(|source| IngestError::Temp {
            dir: temp_parent.display().to_string(),
            source,
        })?;

    let stats = Arc::new(Stats::default());
    let reporter = progress::Reporter::start(opts.progress, stats.clone());
    let run = run(RunInput {
        services,
        opts,
        roots,
        labeler: &labeler,
        job,
        done: Arc::new(done),
        temp_dir: temp.path(),
        stats: stats.clone(),
    })
    .await;
    reporter.finish().await;
    let tally = run?;

    // Whatever an earlier, interrupted run created but never confirmed.
    let republished =
        jobs::enqueue_pending(pool, &services.publisher, &services.classify_queue, job).await?;
    let (job_tasks, job_bytes): (i64, i64) = sqlx::query_as(
        "SELECT count(*), coalesce(sum(f.size_bytes), 0)::bigint
         FROM tasks t JOIN audio_files f ON f.sha256 = t.file_sha256
         WHERE t.job_id = $1",
    )
    .bind(job)
    .fetch_one(pool)
    .await
    .map_err(query("counting the job's tasks"))?;
    let job_rejected: i64 =
        sqlx::query_scalar("SELECT count(*) FROM job_rejections WHERE job_id = $1")
            .bind(job)
            .fetch_one(pool)
            .await
            .map_err(query("counting the job's rejections"))?;
    let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
    let clamp = |n: i64| i32::try_from(n).unwrap_or(i32::MAX);
    jobs::close_job(
        pool,
        job,
        SubmissionCounts {
            accepted: clamp(job_tasks),
            duplicate: clamp(i64::try_from(get(&stats.duplicate)).unwrap_or(i64::MAX)),
            rejected: clamp(job_rejected),
            bytes: job_bytes,
        },
    )
    .await?;
    let summary = Summary {
        job_id: job,
        resumed,
        accepted: get(&stats.accepted),
        duplicate: get(&stats.duplicate),
        already_done: get(&stats.already_done),
        rejected: get(&stats.rejected),
        republished: republished as u64,
        labelled: tally.labelled,
        bytes_accepted: tally.bytes_accepted,
        job_tasks: u64::try_from(job_tasks).unwrap_or(0),
        rejections: tally.rejections,
        follow_sql: Summary::follow_sql_for(job),
    };
    tracing::info!(
        %job,
        accepted = summary.accepted,
        duplicate = summary.duplicate,
        already_done = summary.already_done,
        rejected = summary.rejected,
        republished = summary.republished,
        "ingest finished"
    );
    Ok(summary)
}

struct RunInput<'a> {
    services: &'a Services,
    opts: &'a IngestOptions,
    roots: Vec<Root>,
    labeler: &'a Labeler,
    job: Uuid,
    done: Arc<HashSet<String>>,
    temp_dir: &'a Path,
    stats: Arc<Stats>,
}

/// The walk on a blocking thread, the session's uploads on this task, a
/// bounded channel between them.
async fn run(input: RunInput<'_>) -> Result<Tally, IngestError> {
    let RunInput {
        services,
        opts,
        roots,
        labeler,
        job,
        done,
        temp_dir,
        stats,
    } = input;
    let limits = Limits {
        max_file_bytes: services.max_file_bytes,
        max_expansion_ratio: opts.max_expansion_ratio,
        max_archive_bytes: opts.max_archive_bytes,
        memory_entry_bytes: opts.memory_entry_bytes,
    };
    let (tx, rx) = mpsc::channel::<Event>(opts.concurrency);
    let walk = session::walk(
        roots,
        limits,
        done,
        temp_dir.to_path_buf(),
        stats.clone(),
        tx,
        (),
    );
    let ctx = Context {
        services,
        job,
        labeler,
        site: opts.site.as_deref(),
        time_zone: opts.time_zone.as_ref(),
        stats: &stats,
    };
    let consumed = session::consume(&ctx, rx, opts.concurrency, &|path| path);
    // The session drops its receiver when it fails, which stops the walk.
    let (walked, consumed) = tokio::join!(walk, consumed);
    let tally = consumed?;
    walked?;
    Ok(tally)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_ignores_input_order_but_not_options() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a");
        let b = dir.path().join("b");
        std::fs::create_dir(&a).unwrap();
        std::fs::create_dir(&b).unwrap();
        let ab = resolve(&[a.clone(), b.clone(), a.clone()]).unwrap();
        assert_eq!(ab.len(), 2);
        let ba = resolve(&[b.clone(), a.clone()]).unwrap();
        let key = |roots: &[Root], labels: &LabelSource, site: Option<&str>| {
            idempotency_key(roots, labels, site, None).unwrap()
        };
        let base = key(&ab, &LabelSource::None, None);
        assert_eq!(base, key(&ba, &LabelSource::None, None));
        assert_ne!(base, key(&ab, &LabelSource::Folder, None));
        assert_ne!(base, key(&ab, &LabelSource::None, Some("site-1")));
        let zone: TimeZone = "+01:00".parse().unwrap();
        let zoned = idempotency_key(&ab, &LabelSource::None, None, Some(&zone)).unwrap();
        assert_ne!(base, zoned);
        let csv = dir.path().join("labels.csv");
        std::fs::write(&csv, "path,species\nx.wav,Robin\n").unwrap();
        let with_csv = key(&ab, &LabelSource::Csv(csv.clone()), None);
        std::fs::write(&csv, "path,species\nx.wav,Wren\n").unwrap();
        assert_ne!(with_csv, key(&ab, &LabelSource::Csv(csv), None));
        assert!(resolve(&[dir.path().join("missing")]).is_err());
    }
}
