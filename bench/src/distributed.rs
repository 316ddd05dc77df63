//! The distributed path, end to end: producer → S3 → queue → workers →
//! PostgreSQL.
//!
//! Each run gets a fresh database, queue names and bucket (the test kit's
//! isolated environment, on the real local PostgreSQL and RabbitMQ and an
//! S3 server), a promoted model, and `workers` real `birdsong-worker`
//! processes. In the [`Feed::Streaming`] runs the clock starts when the
//! producer starts reading the corpus and stops when the last task is
//! finished, so upload, queueing, fetching, decoding, inference and the
//! database writes are all inside it; [`Feed::Backlog`] runs time the
//! workers alone on an already-ingested job.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use birdsong_common::queue::Publisher;
use birdsong_ingest::{IngestOptions, ProgressMode, Services};
use birdsong_model::Artifact;
use birdsong_registry as registry;
use birdsong_testkit::TestEnv;
use lapin::options::QueueDeclareOptions;
use lapin::types::FieldTable;

use crate::corpus::Corpus;
use crate::hosts::{HostSpec, Hosts};
use crate::report::Measurement;
use crate::sampler::{RoleCpu, Sampler, process_ticks};
use crate::tasks;

/// Worker processes stopped with SIGTERM when dropped.
struct Workers(Vec<Child>);

impl Drop for Workers {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
        }
        for child in &mut self.0 {
            let _ = child.wait();
        }
    }
}

async fn consumers(env: &TestEnv) -> anyhow::Result<u32> {
    let channel = env.amqp.create_channel().await?;
    let queue = channel
        .queue_declare(
            env.config.queues.classify.as_str().into(),
            QueueDeclareOptions {
                passive: true,
                ..QueueDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await?;
    let _ = channel.close(200, "done".into()).await;
    Ok(queue.consumer_count())
}

/// How the recordings reach the workers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Feed {
    /// The producer ingests while the workers consume: the clock runs from
    /// the producer's start to the last result.
    Streaming,
    /// The producer ingests everything first, then the workers start on the
    /// backlog (an archive uploaded earlier): the clock runs from the first
    /// task started to the last finished, read from the task rows, so the
    /// producer is not on the machine while the workers are measured.
    Backlog,
}

/// What one end-to-end run is made of.
pub struct RunSpec<'a> {
    pub workers: usize,
    /// CPU threads per worker.
    pub threads: usize,
    pub worker_exe: &'a Path,
    pub feed: Feed,
    /// The hosts the workers are simulated on (default: none).
    pub hosts: HostSpec,
    /// `BIRDSONG_WORKER_PREFETCH` of every worker; `None` leaves the
    /// worker's default (or the caller's environment) in force.
    pub prefetch: Option<u16>,
}

/// CPU ticks of the given processes, summed.
fn ticks_of(pids: &[u32]) -> u64 {
    pids.iter().filter_map(|&p| process_ticks(p)).sum()
}

/// One end-to-end run of `corpus` through `spec.workers` worker processes.
pub async fn run(
    corpus: &Corpus,
    artifact: &Artifact,
    spec: &RunSpec<'_>,
) -> anyhow::Result<Measurement> {
    let RunSpec {
        workers,
        threads,
        worker_exe,
        feed,
        hosts: host_spec,
        prefetch,
    } = *spec;
    let env = TestEnv::start().await.context("setting up services")?;
    birdsong_testkit::models::store_model(&env, "bench", artifact.clone()).await?;
    let publisher = Publisher::new(&env.amqp).await?;
    registry::promote(
        &env.pool,
        &publisher,
        &env.config.queues.model_exchange,
        "bench",
        "benchmark",
    )
    .await?;

    let ingest = || async {
        let services = Services::connect(&env.config).await?;
        let mut opts = IngestOptions::new(vec![corpus.dir.clone()]);
        opts.progress = ProgressMode::Quiet;
        birdsong_ingest::ingest(&services, &opts).await
    };
    let (backlog, mut ingest_s) = match feed {
        Feed::Backlog => {
            let started = Instant::now();
            let summary = ingest().await?;
            (Some(summary), Some(started.elapsed().as_secs_f64()))
        }
        Feed::Streaming => (None, None),
    };

    // Made before the CPU snapshot (the forwarder's threads are charged from
    // their start) and dropped after the workers (declared before them).
    let hosts = Hosts::create(&host_spec, workers, &env.config)?;
    // Taken before the workers exist: they are charged all their CPU,
    // start-up included, whichever way the clock runs.
    let cpu_before = RoleCpu::snapshot(&[]);
    let mut children = Workers(Vec::new());
    for i in 0..workers {
        let mut command = hosts.command(i, worker_exe, &env.vars)?;
        command
            .env("BIRDSONG_WORKER_THREADS", threads.to_string())
            .env("BIRDSONG_LOG", "warn")
            .stdout(Stdio::null());
        if let Some(prefetch) = prefetch {
            command.env("BIRDSONG_WORKER_PREFETCH", prefetch.to_string());
        }
        children.0.push(
            command
                .spawn()
                .with_context(|| format!("starting {}", worker_exe.display()))?,
        );
    }
    let ready = Instant::now();
    while consumers(&env).await? < workers as u32 {
        if ready.elapsed() > Duration::from_secs(60) {
            bail!("the workers did not start consuming within 60 s");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let worker_pids: Vec<u32> = children.0.iter().map(Child::id).collect();
    let worker_ticks_ready = ticks_of(&worker_pids);
    let sampler = Sampler::start(
        env.amqp.create_channel().await?,
        env.config.queues.classify.clone(),
        Duration::from_millis(250),
    );
    let started = Instant::now();
    let summary = match backlog {
        Some(summary) => summary,
        None => ingest().await?,
    };
    let submitted = started.elapsed().as_secs_f64();
    if feed == Feed::Streaming {
        ingest_s = Some(submitted);
    }
    loop {
        let pending: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM tasks WHERE job_id = $1 AND status IN ('queued', 'processing')",
        )
        .bind(summary.job_id)
        .fetch_one(&env.pool)
        .await?;
        if pending == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let mut wall_s = started.elapsed().as_secs_f64();
    let samples = sampler.finish().await;
    let cpu_by_role = cpu_before.seconds_until(&RoleCpu::snapshot(&worker_pids));
    let worker_cpu_s = ticks_of(&worker_pids).saturating_sub(worker_ticks_ready) as f64
        / crate::sampler::TICKS_PER_S;
    let throttling = hosts.throttling();
    drop(children);
    drop(hosts);
    let task_stats = tasks::read(&env.pool, summary.job_id, workers).await?;

    let (done, failed, audio_s, p50, p95, span): (
        i64,
        i64,
        f64,
        Option<f64>,
        Option<f64>,
        Option<f64>,
    ) = sqlx::query_as(
        "SELECT count(*) FILTER (WHERE t.status = 'done'),
                count(*) FILTER (WHERE t.status = 'failed'),
                coalesce(sum(f.duration_s) FILTER (WHERE t.status = 'done'), 0),
                percentile_cont(0.5) WITHIN GROUP
                    (ORDER BY extract(epoch FROM t.finished_at - t.queued_at)),
                percentile_cont(0.95) WITHIN GROUP
                    (ORDER BY extract(epoch FROM t.finished_at - t.queued_at)),
                extract(epoch FROM max(t.finished_at) - min(t.started_at))::float8
         FROM tasks t JOIN audio_files f ON f.sha256 = t.file_sha256
         WHERE t.job_id = $1",
    )
    .bind(summary.job_id)
    .fetch_one(&env.pool)
    .await?;
    let streaming = feed == Feed::Streaming;
    if !streaming {
        wall_s = span.unwrap_or(wall_s);
    }
    Ok(Measurement {
        files: usize::try_from(done).unwrap_or(0),
        failed: usize::try_from(failed).unwrap_or(0),
        audio_s,
        wall_s,
        // Time waited in a backlog is not latency.
        latency_p50_s: p50.filter(|_| streaming),
        latency_p95_s: p95.filter(|_| streaming),
        drain_s: Some(wall_s - submitted).filter(|_| streaming),
        cpu_busy: samples.cpu_busy,
        cpu_by_role,
        queue_depth: samples.queue_depth,
        ingest_s,
        cpu_quota: host_spec.cpu_quota,
        throttling,
        worker_cpu_s: Some(worker_cpu_s),
        tasks: task_stats,
    })
}
