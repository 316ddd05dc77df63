//! One ingest session: the entries a walk (or an upload) yields, submitted a
//! few at a time, each ending as a task, a duplicate or a recorded rejection.
//!
//! The producer's command line and the API's `POST /v1/jobs` both feed this
//! one loop, so a recording is judged, stored and counted by the same rules
//! whichever way it arrives. The caller owns the job (opening and closing
//! it) and the source of [`Event`]s; the session owns what happens to each.

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::Mutex;
use std::sync::atomic::Ordering;

use futures::{StreamExt, TryStreamExt};
use tokio::sync::mpsc;

use crate::IngestError;
use crate::source::{Event, Limits, Root, Walker};
use crate::summary::Rejection;
use crate::upload::{self, Context, Outcome};

/// What a session did, beyond the counters in [`crate::Stats`].
#[derive(Debug, Default)]
pub struct Tally {
    /// Recordings given a species label.
    pub labelled: u64,
    /// Bytes of the recordings that became new tasks.
    pub bytes_accepted: u64,
    /// Every refused entry, in the order it was refused.
    pub rejections: Vec<Rejection>,
}

/// Submits every event of `rx`, `concurrency` at a time, until the sender
/// is dropped. `rename` turns a walk's path into the one the job shows (the
/// API names entries of an uploaded archive after the upload, not after its
/// temporary file). An error stops the session; dropping `rx` then stops the
/// walk feeding it.
pub async fn consume(
    ctx: &Context<'_>,
    mut rx: mpsc::Receiver<Event>,
    concurrency: usize,
    rename: &(dyn Fn(String) -> String + Sync),
) -> Result<Tally, IngestError> {
    let tally = Mutex::new(Tally::default());
    let events = futures::stream::poll_fn(|cx| rx.poll_recv(cx)).map(Ok::<_, IngestError>);
    let consumed = events
        .try_for_each_concurrent(concurrency.max(1), |event| {
            let tally = &tally;
            async move { handle(ctx, tally, event, rename).await }
        })
        .await;
    drop(rx);
    consumed?;
    Ok(tally.into_inner().unwrap_or_else(|e| e.into_inner()))
}

async fn handle(
    ctx: &Context<'_>,
    tally: &Mutex<Tally>,
    event: Event,
    rename: &(dyn Fn(String) -> String + Sync),
) -> Result<(), IngestError> {
    let stats = ctx.stats;
    let (path, reason) = match event {
        Event::AlreadyDone { .. } => {
            stats.already_done.fetch_add(1, Ordering::Relaxed);
            return Ok(());
        }
        Event::Rejected { path, reason } => (rename(path), reason),
        Event::Entry(mut entry) => {
            entry.path = rename(entry.path);
            let path = entry.path.clone();
            match upload::submit(ctx, entry).await? {
                Outcome::Accepted { bytes, labelled } => {
                    stats.accepted.fetch_add(1, Ordering::Relaxed);
                    let mut t = tally.lock().unwrap_or_else(|e| e.into_inner());
                    t.bytes_accepted += bytes;
                    t.labelled += u64::from(labelled);
                    return Ok(());
                }
                Outcome::Duplicate { labelled } => {
                    stats.duplicate.fetch_add(1, Ordering::Relaxed);
                    let mut t = tally.lock().unwrap_or_else(|e| e.into_inner());
                    t.labelled += u64::from(labelled);
                    return Ok(());
                }
                Outcome::Rejected(reason) => (path, reason),
            }
        }
    };
    let stored = reason.to_string();
    birdsong_common::jobs::reject(&ctx.services.pool, ctx.job, &path, &stored).await?;
    stats.rejected.fetch_add(1, Ordering::Relaxed);
    tracing::debug!(%path, reason = %stored, "rejected");
    let mut t = tally.lock().unwrap_or_else(|e| e.into_inner());
    t.rejections.push(Rejection {
        path,
        kind: reason.kind().to_string(),
        reason: stored,
    });
    Ok(())
}

/// Walks `roots` on a blocking thread, sending what it finds to `tx`.
/// `done` names entries an earlier run already made tasks for; `keep` is
/// held until the walk ends (the API's spooled archives live in it).
pub async fn walk<K: Send + 'static>(
    roots: Vec<Root>,
    limits: Limits,
    done: std::sync::Arc<HashSet<String>>,
    temp_dir: PathBuf,
    stats: std::sync::Arc<crate::Stats>,
    tx: mpsc::Sender<Event>,
    keep: K,
) -> Result<(), IngestError> {
    tokio::task::spawn_blocking(move || {
        stats
            .bytes_total
            .fetch_add(crate::source::total_bytes(&roots), Ordering::Relaxed);
        let walker = Walker {
            limits,
            done: &done,
            temp_dir: &temp_dir,
            stats: &stats,
            tx,
        };
        let walked = walker.run(&roots);
        drop(keep);
        walked
    })
    .await
    .map_err(|e| IngestError::Task(format!("the input walk failed: {e}")))?
    .map_err(IngestError::from)
}
