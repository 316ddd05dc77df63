//! `birdsong-bench`: the throughput figures the README quotes, rerunnable.
//!
//! Where it sits: outside the flow, driving it end to end (ingest, the
//! worker binaries, PostgreSQL) and the model library in-process.
//!
//! `pipeline` measures files and audio seconds per second end to end
//! (producer → S3 → RabbitMQ → `birdsong-worker` processes → PostgreSQL)
//! for each worker count, and in the same run the in-process rate of the
//! same computation with no services, and prints the ratio. `inference`
//! measures the network's cost per window by batch size. Build in release
//! mode; the worker binary must sit beside this one:
//!
//! ```sh
//! cargo build --release -p birdsong-worker -p birdsong-bench
//! target/release/birdsong-bench pipeline --workers 1,2 --out bench/results/latest
//! ```
//!
//! `scripts/scale.sh` does both and runs 1, 2 and 4 workers.

mod backbones;
mod chart;
mod corpus;
mod distributed;
mod endpoint;
mod forward;
mod hosts;
mod inference;
mod inprocess;
mod report;
mod sampler;
mod tasks;

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, bail};
use birdsong_model::Classifier;
use clap::{Parser, Subcommand, ValueEnum};

use crate::report::Row;

#[derive(Parser)]
#[command(
    name = "birdsong-bench",
    version,
    about = "End-to-end and in-process throughput"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum FeedName {
    Streaming,
    Backlog,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum CorpusName {
    Clips,
    Xc3,
}

#[derive(Subcommand)]
enum Command {
    /// Distributed vs in-process throughput.
    Pipeline {
        /// The shared data folder (reference clips and xc3).
        #[arg(long, default_value = "../shared")]
        shared: PathBuf,
        /// Workloads to run.
        #[arg(long, value_delimiter = ',', default_values = ["clips", "xc3"])]
        corpus: Vec<CorpusName>,
        /// Number of 10-second MP3 clips in the clip workload.
        #[arg(long, default_value_t = 200)]
        clips: usize,
        /// Distinct copies of each xc3 recording in the xc3 workload (1: the
        /// 111 recordings as they are), for runs on many workers that the
        /// longest recording's tail should not dominate.
        #[arg(long, default_value_t = 1)]
        xc3_copies: usize,
        /// Worker counts to run end to end.
        #[arg(long, value_delimiter = ',', default_values = ["1", "2"])]
        workers: Vec<usize>,
        /// How work reaches the workers: `streaming` (the producer ingests
        /// while they consume) and/or `backlog` (ingest first, then time the
        /// workers draining it).
        #[arg(long, value_delimiter = ',', default_values = ["streaming"])]
        feed: Vec<FeedName>,
        /// CPU threads per worker. Without it each worker gets its share of
        /// the cores (cores / workers, at least 1); with `--threads 1` every
        /// worker is one core's worth and the efficiency column is exactly
        /// throughput(N) / (N × throughput(1)).
        #[arg(long)]
        threads: Option<usize>,
        /// Folder to write `report.md`, `results.json` and `chart.png` into.
        #[arg(long)]
        out: Option<PathBuf>,
        /// Backbone of the benchmark model: `acoustic` (a reference MLP), `mel`
        /// (a spectrogram CNN), or `birdnet` (a head on BirdNET's embeddings; needs
        /// scripts/birdnet/install.sh, found as the workers find it).
        #[arg(long, default_value = "acoustic")]
        backbone: birdsong_model::Backbone,
        /// Simulated hosts: each worker process gets this many cores (e.g.
        /// 0.1) through a cgroup of its own (cgroup v1 CFS quota or v2
        /// cpu.max; needs root). Implies `--threads 1` unless given.
        #[arg(long, value_name = "CORES")]
        cpu_quota: Option<f64>,
        /// Simulated hosts: each worker in its own network namespace, joined
        /// to the host by a veth pair on 10.203.<i>.0/30, reaching the
        /// services through a forwarder in this process (needs root).
        #[arg(long)]
        netns: bool,
        /// One-way delay added in each direction of every worker's link
        /// (e.g. 2ms; a round trip takes twice this): tc netem where the
        /// kernel has it, otherwise the forwarder. Needs `--netns`.
        #[arg(long, requires = "netns", value_parser = hosts::parse_duration)]
        delay: Option<std::time::Duration>,
        /// Unacknowledged tasks each worker may hold
        /// (`BIRDSONG_WORKER_PREFETCH`); several (e.g. `2,4,16`) run every
        /// worker count once per value, each against one worker at the same
        /// prefetch. Without it the workers use their default.
        #[arg(long, value_delimiter = ',', value_parser = clap::value_parser!(u16).range(1..))]
        prefetch: Vec<u16>,
    },
    /// Network cost per window by batch size, for the default MLP and the
    /// spectrogram CNN.
    Inference,
    /// Audio seconds per CPU second of each backbone on one thread (decode,
    /// windows, vectors, one model's forward pass), side by side.
    Backbones {
        /// Folder of MP3 recordings (searched recursively).
        #[arg(long, default_value = "../shared/data/xc3")]
        audio: PathBuf,
        /// Backbones to run: acoustic, mel (the spectrogram CNN's patches and a
        /// small CNN), birdnet (needs scripts/birdnet/install.sh).
        #[arg(long, value_delimiter = ',', default_values = ["acoustic", "birdnet"])]
        backbone: Vec<String>,
        /// At most this many files (in path order).
        #[arg(long)]
        limit: Option<usize>,
        /// BirdNET windows per network run; several (e.g. `1,8`) run side by side.
        #[arg(long, value_delimiter = ',', default_values_t = [birdsong_common::config::DEFAULT_BIRDNET_BATCH])]
        birdnet_batch: Vec<usize>,
    },
}

fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

fn worker_exe() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe().context("locating this binary")?;
    let worker = exe.with_file_name("birdsong-worker");
    if !worker.exists() {
        bail!(
            "{} not found: build it beside this binary (cargo build --release -p birdsong-worker -p birdsong-bench)",
            worker.display()
        );
    }
    Ok(worker)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    birdsong_common::telemetry::init("warn", birdsong_common::config::LogFormat::Text);
    match Cli::parse().command {
        Command::Pipeline {
            shared,
            corpus,
            clips,
            xc3_copies,
            workers,
            feed,
            threads,
            out,
            backbone,
            cpu_quota,
            netns,
            delay,
            prefetch,
        } => {
            let hosts = hosts::HostSpec {
                cpu_quota,
                netns,
                delay: delay.unwrap_or_default(),
            };
            if workers.contains(&0) {
                bail!("--workers: every count must be at least 1");
            }
            let plan = Plan {
                clips,
                xc3_copies,
                workers,
                feeds: feed,
                // A quota is one small host's worth of one thread.
                threads_per_worker: threads.or(cpu_quota.map(|_| 1)),
                backbone,
                hosts,
                prefetch,
            };
            // On Ctrl-C or SIGTERM the run is dropped, so that its guards
            // stop the workers and remove the cgroups, namespaces, database
            // and queues it made.
            tokio::select! {
                result = pipeline(&shared, &corpus, &plan, out) => result,
                signal = interrupted() => {
                    signal?;
                    bail!("interrupted; the run's workers and what it set up were removed")
                }
            }
        }
        Command::Inference => inference_table().await,
        Command::Backbones {
            audio,
            backbone,
            limit,
            birdnet_batch,
        } => backbone_table(&audio, &backbone, limit, &birdnet_batch).await,
    }
}

async fn backbone_table(
    dir: &std::path::Path,
    names: &[String],
    limit: Option<usize>,
    birdnet_batches: &[usize],
) -> anyhow::Result<()> {
    let backbones = names
        .iter()
        .map(|n| {
            n.parse::<birdsong_model::Backbone>()
                .map_err(anyhow::Error::msg)
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let mut files = corpus::audio_files(dir, "mp3")?;
    files.truncate(limit.unwrap_or(usize::MAX));
    if files.is_empty() {
        bail!("no audio files under {}", dir.display());
    }
    let mut rates = Vec::new();
    for backbone in backbones {
        let artifact =
            tokio::task::spawn_blocking(move || birdsong_testkit::models::train_for(backbone, 3))
                .await??;
        let classifier = Classifier::from_artifact(&artifact)?;
        let batches = match backbone {
            birdsong_model::Backbone::Birdnet => birdnet_batches,
            _ => &[1][..],
        };
        for &batch in batches {
            let analyzer = birdsong_analysis::Analyzer::new(birdsong_analysis::Settings {
                birdnet_batch: batch,
                ..birdsong_analysis::Settings::default()
            });
            let label = match backbone {
                birdsong_model::Backbone::Birdnet => format!("{backbone} (batch {batch})"),
                _ => backbone.to_string(),
            };
            eprintln!("{label}: {} files on one thread…", files.len());
            rates.push((
                label,
                backbones::run(&files, &analyzer, backbone, &classifier)?,
            ));
        }
    }
    let base = rates.first().map_or(1.0, |(_, r)| r.per_core());
    println!("| backbone | files | windows | audio (s) | CPU (s) | audio s per CPU s | vs first |");
    println!("|---|---:|---:|---:|---:|---:|---:|");
    for (label, r) in &rates {
        println!(
            "| {} | {} | {} | {:.0} | {} | {:.1} | {:.2}× |",
            label,
            r.files,
            r.windows,
            r.audio_s,
            r.cpu_s.map_or("–".into(), |c| format!("{c:.1}")),
            r.per_core(),
            r.per_core() / base.max(1e-9)
        );
    }
    Ok(())
}

/// Resolves on SIGINT or SIGTERM.
async fn interrupted() -> anyhow::Result<()> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("listening for SIGTERM")?;
    tokio::select! {
        r = tokio::signal::ctrl_c() => r.context("listening for Ctrl-C"),
        _ = term.recv() => Ok(()),
    }
}

/// What the pipeline benchmark runs on each corpus.
struct Plan {
    clips: usize,
    xc3_copies: usize,
    workers: Vec<usize>,
    feeds: Vec<FeedName>,
    threads_per_worker: Option<usize>,
    backbone: birdsong_model::Backbone,
    hosts: hosts::HostSpec,
    /// Prefetch values to compare; empty: the workers' default only.
    prefetch: Vec<u16>,
}

async fn pipeline(
    shared: &std::path::Path,
    names: &[CorpusName],
    plan: &Plan,
    out: Option<PathBuf>,
) -> anyhow::Result<()> {
    let Plan {
        clips,
        xc3_copies,
        ref workers,
        ref feeds,
        threads_per_worker,
        backbone,
        hosts,
        ref prefetch,
    } = *plan;
    let prefetches: Vec<Option<u16>> = if prefetch.is_empty() {
        vec![None]
    } else {
        prefetch.iter().copied().map(Some).collect()
    };
    let worker = worker_exe()?;
    let cores = cores();
    let mut made_by = hosts::MadeBy::default();
    if hosts.simulates() {
        // Fail now, not after the in-process run: make (and remove) the
        // hosts of the largest run once.
        let config = birdsong_common::Config::from_env().context("reading BIRDSONG_* variables")?;
        let largest = workers.iter().copied().max().unwrap_or(1);
        let probe = hosts::Hosts::create(&hosts, largest, &config)
            .context("setting up the simulated hosts")?;
        made_by = probe.made_by();
        eprintln!("{}", hosts.describe(cores, workers, &made_by));
    }
    eprintln!("training the benchmark model ({backbone} backbone, 3 synthetic species)…");
    let artifact =
        tokio::task::spawn_blocking(move || birdsong_testkit::models::train_for(backbone, 3))
            .await??;
    let classifier = Arc::new(Classifier::from_artifact(&artifact)?);
    let analyzer = Arc::new(birdsong_analysis::Analyzer::new(
        birdsong_analysis::Settings::default(),
    ));
    let mut rows = Vec::new();
    for name in names {
        let corpus = match name {
            CorpusName::Clips => corpus::clips(shared, clips)?,
            CorpusName::Xc3 => corpus::xc3(shared, xc3_copies)?,
        };
        eprintln!("{}: in-process on {cores} threads…", corpus.name);
        let files = corpus.files.clone();
        let (c, a) = (classifier.clone(), analyzer.clone());
        let base =
            tokio::task::spawn_blocking(move || inprocess::run(&files, &a, backbone, &c, cores))
                .await??;
        let base_rate = base.audio_per_s();
        rows.push(Row {
            corpus: corpus.name.clone(),
            path: "in-process".into(),
            workers: None,
            threads: cores,
            measurement: base,
            ratio: None,
            efficiency: None,
        });
        for &feed in feeds {
            let (feed, label) = match feed {
                FeedName::Streaming => (distributed::Feed::Streaming, "end to end"),
                FeedName::Backlog => (distributed::Feed::Backlog, "backlog drain"),
            };
            for &prefetch in &prefetches {
                // Each prefetch is its own series, against one worker at the
                // same prefetch.
                let path = match prefetch {
                    Some(p) if prefetches.len() > 1 => format!("{label}, prefetch {p}"),
                    _ => label.to_string(),
                };
                let mut single: Option<f64> = None;
                for &w in workers {
                    let threads = threads_per_worker.unwrap_or(cores / w.max(1)).max(1);
                    eprintln!(
                        "{}: {path} with {w} worker(s) × {threads} thread(s)…",
                        corpus.name
                    );
                    let spec = distributed::RunSpec {
                        workers: w,
                        threads,
                        worker_exe: &worker,
                        feed,
                        hosts,
                        prefetch,
                    };
                    let m = distributed::run(&corpus, &artifact, &spec).await?;
                    let ratio = m.audio_per_s() / base_rate;
                    if w == 1 {
                        single = Some(m.audio_per_s() / threads as f64);
                    }
                    // Per CPU thread given to the workers, relative to one
                    // worker: with one thread each this is throughput(N) /
                    // (N × throughput(1)); past the core count it shows what
                    // oversubscription costs.
                    let efficiency =
                        single.map(|one| m.audio_per_s() / ((w * threads) as f64 * one));
                    rows.push(Row {
                        corpus: corpus.name.clone(),
                        path: path.clone(),
                        workers: Some(w),
                        threads,
                        measurement: m,
                        ratio: Some(ratio),
                        efficiency,
                    });
                }
            }
        }
    }
    let mut table = format!(
        "Backbone: {backbone}.\n\n{}\nWhere the CPU went (CPU time charged per role from /proc; the last column is the \
         workers' CPU per second of audio over the in-process run's):\n\n{}",
        report::markdown(&rows),
        report::cpu_markdown(&rows)
    );
    if hosts.simulates() {
        table = format!(
            "{}\n\n{table}\nWhere the workers' time went (quota used: worker CPU from the moment all \
             consume to the end over workers × quota × wall time; start / tail idle: share of the \
             workers' time before each one's first task and after its last result, from the task \
             rows; producer audio s/s: audio ingested per second of the producer's run):\n\n{}",
            hosts.describe(cores, workers, &made_by),
            report::hosts_markdown(&rows)
        );
    }
    println!("{table}");
    if let Some(dir) = out {
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let machine = report::machine();
        std::fs::write(dir.join("report.md"), format!("{machine}\n\n{table}"))
            .context("writing report.md")?;
        std::fs::write(dir.join("results.json"), serde_json::to_vec_pretty(&rows)?)
            .context("writing results.json")?;
        match chart::draw(&rows, &dir.join("chart.png")) {
            Ok(()) => eprintln!("wrote {}", dir.join("chart.png").display()),
            Err(e) => eprintln!("no chart: {e:#}"),
        }
    }
    Ok(())
}

async fn inference_table() -> anyhow::Result<()> {
    let (mlp, cnn) = tokio::task::spawn_blocking(|| {
        anyhow::Ok((
            birdsong_testkit::models::train_synthetic(3)?,
            birdsong_testkit::models::train_cnn_synthetic(3)?,
        ))
    })
    .await??;
    let recordings = birdsong_testkit::models::synthetic_recordings(1, 1, 5.0, 7)?;
    let window = recordings
        .first()
        .and_then(|r| r.windows.first().cloned())
        .context("no synthetic window")?;
    // The CNN's cost does not depend on the values, only on the patch's size.
    let patch: Vec<f32> = (0..birdsong_model::MEL_VECTOR)
        .map(|i| ((i * 7919) % 1013) as f32 / 1013.0)
        .collect();
    let sizes = [1, 2, 4, 8, 16, 32, 64, 128, 256];
    let mlp = inference::per_window_micros(&Classifier::from_artifact(&mlp)?, window, &sizes)?;
    let cnn = inference::per_window_micros(&Classifier::from_artifact(&cnn)?, patch, &sizes)?;
    println!(
        "| windows per forward pass | MLP µs per window | CNN µs per window |\n|---:|---:|---:|"
    );
    for ((size, m), (_, c)) in mlp.into_iter().zip(cnn) {
        println!("| {size} | {m:.1} | {c:.1} |");
    }
    Ok(())
}
