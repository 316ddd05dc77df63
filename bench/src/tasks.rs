//! How the workers shared a run's work, read back from the task rows.
//!
//! Each task row says which worker claimed it and when (`started_at` is set
//! when the worker claims the task, which is when the broker delivers it,
//! not when its CPU work begins: with a prefetch of several messages a task
//! can wait in its worker), and when its result was committed. From those:
//! how evenly the work was spread, and how much worker time was lost at the
//! end of the run, when some workers had finished and others still held
//! tasks (the tail).

use serde::Serialize;
use sqlx::PgPool;
use uuid::Uuid;

/// One worker's part of a run.
#[derive(Debug, Clone, Serialize)]
pub struct WorkerShare {
    pub worker: String,
    pub tasks: usize,
    pub audio_s: f64,
    /// Seconds from the run's first claim to this worker's first.
    pub first_claim_s: f64,
    /// Seconds from the run's first claim to this worker's last result.
    pub last_result_s: f64,
}

/// What the task rows of one run say.
#[derive(Debug, Clone, Serialize)]
pub struct TaskStats {
    pub workers: Vec<WorkerShare>,
    /// From the first task claimed to the last result.
    pub span_s: f64,
    /// Share of all the workers' time (workers × span) spent after each
    /// worker's own last result until the run's last one: capacity the tail
    /// left unused. Workers that never got a task count as idle throughout.
    pub tail_idle: f64,
    /// Share of all the workers' time before each worker's first claim:
    /// capacity lost while workers were still starting (in a backlog run the
    /// first worker up starts the clock).
    pub start_idle: f64,
    /// From the last task claimed (the queue empty from then on) to the
    /// last result.
    pub after_last_claim_s: f64,
    /// Audio seconds of the task finished last.
    pub last_task_audio_s: f64,
    /// Audio seconds of the longest recording in the run.
    pub longest_audio_s: f64,
}

/// Reads the task rows of `job`, run by `workers` worker processes.
pub async fn read(pool: &PgPool, job: Uuid, workers: usize) -> anyhow::Result<Option<TaskStats>> {
    type Row = (String, i64, f64, f64, f64);
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT coalesce(t.worker, ''), count(*), coalesce(sum(f.duration_s), 0)::float8,
                extract(epoch FROM min(t.started_at))::float8,
                extract(epoch FROM max(t.finished_at))::float8
         FROM tasks t JOIN audio_files f ON f.sha256 = t.file_sha256
         WHERE t.job_id = $1 AND t.status = 'done'
         GROUP BY 1 ORDER BY 1",
    )
    .bind(job)
    .fetch_all(pool)
    .await?;
    let last: Option<(f64, f64, f64)> = sqlx::query_as(
        "SELECT coalesce(f.duration_s, 0)::float8,
                extract(epoch FROM max(t.started_at) OVER ())::float8,
                (SELECT max(f2.duration_s) FROM tasks t2
                   JOIN audio_files f2 ON f2.sha256 = t2.file_sha256
                  WHERE t2.job_id = $1)::float8
         FROM tasks t JOIN audio_files f ON f.sha256 = t.file_sha256
         WHERE t.job_id = $1 AND t.status = 'done'
         ORDER BY t.finished_at DESC LIMIT 1",
    )
    .bind(job)
    .fetch_optional(pool)
    .await?;
    let Some((last_task_audio_s, last_claim, longest_audio_s)) = last else {
        return Ok(None);
    };
    Ok(Some(summarise(
        &rows,
        workers,
        last_claim,
        last_task_audio_s,
        longest_audio_s,
    )))
}

/// The statistics of per-worker rows `(worker, tasks, audio s, first claim,
/// last result)` with epoch seconds.
fn summarise(
    rows: &[(String, i64, f64, f64, f64)],
    workers: usize,
    last_claim: f64,
    last_task_audio_s: f64,
    longest_audio_s: f64,
) -> TaskStats {
    let start = rows.iter().map(|r| r.3).fold(f64::INFINITY, f64::min);
    let end = rows.iter().map(|r| r.4).fold(f64::NEG_INFINITY, f64::max);
    let span_s = (end - start).max(0.0);
    let shares: Vec<WorkerShare> = rows
        .iter()
        .map(|(worker, tasks, audio_s, first, last)| WorkerShare {
            worker: worker.clone(),
            tasks: usize::try_from(*tasks).unwrap_or(0),
            audio_s: *audio_s,
            first_claim_s: first - start,
            last_result_s: last - start,
        })
        .collect();
    let idle_after: f64 = shares.iter().map(|s| span_s - s.last_result_s).sum::<f64>()
        + workers.saturating_sub(shares.len()) as f64 * span_s;
    let idle_before: f64 = shares.iter().map(|s| s.first_claim_s).sum();
    let capacity = workers.max(1) as f64 * span_s;
    let share = |idle: f64| if capacity > 0.0 { idle / capacity } else { 0.0 };
    TaskStats {
        workers: shares,
        span_s,
        tail_idle: share(idle_after),
        start_idle: share(idle_before),
        after_last_claim_s: (end - last_claim).max(0.0),
        last_task_audio_s,
        longest_audio_s,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tail_is_the_time_workers_wait_for_the_last_one() {
        // Two of three workers: one ends at 8 s, one at 10 s; the third
        // never got a task.
        let rows = vec![
            ("a".to_string(), 5, 50.0, 100.0, 108.0),
            ("b".to_string(), 6, 60.0, 100.5, 110.0),
        ];
        let s = summarise(&rows, 3, 104.0, 10.0, 300.0);
        assert!((s.span_s - 10.0).abs() < 1e-9);
        // (2 + 0 + 10) of 30 worker-seconds.
        assert!((s.tail_idle - 12.0 / 30.0).abs() < 1e-9, "{}", s.tail_idle);
        assert!((s.after_last_claim_s - 6.0).abs() < 1e-9);
        assert!((s.workers[1].first_claim_s - 0.5).abs() < 1e-9);
        assert!((s.start_idle - 0.5 / 30.0).abs() < 1e-9);
    }
}
