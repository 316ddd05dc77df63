//! The retrainer process and its registry commands.
//!
//! `run` (the default) is the long-running consumer; the other subcommands
//! are one-shot operations on the registry for operators, each a call into
//! the `birdsong_registry` library (over its SQL, never beside it) so that
//! the command line, the API and the retrainer change the registry by the
//! same rules.

use std::time::Duration;

use anyhow::{Context, bail};
use birdsong_common::messages::RetrainTrigger;
use birdsong_common::queue::{self, Publisher};
use birdsong_common::{Config, db, shutdown, telemetry};
use birdsong_registry::{self as registry, Selection};
use chrono::{DateTime, Utc};
use clap::{Parser, Subcommand};
use serde_json::{Map, Value};
use sqlx::PgPool;
use uuid::Uuid;

/// Trains, gates and promotes species models. Configuration comes from the
/// BIRDSONG_* environment variables (see the README).
#[derive(Parser)]
#[command(name = "birdsong-retrainer", version)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Consume retrain requests (the default).
    Run,
    /// Ask for a retrain.
    Request {
        /// Promote the new model even if it does not beat the current one.
        #[arg(long)]
        force: bool,
        /// Epochs to train.
        #[arg(long)]
        epochs: Option<u64>,
        /// Seed of initialisation and shuffling.
        #[arg(long)]
        seed: Option<u64>,
        /// Network architecture: cnn (the default: a spectrogram CNN with its
        /// own recipe), mlp, linear, shallow or anchored (on BirdNET).
        #[arg(long)]
        architecture: Option<String>,
        /// Any other parameter, as KEY=VALUE (VALUE is JSON, or a string),
        /// e.g. --param learning_rate=0.003 --param gate_metric=window_macro_f1.
        #[arg(long = "param", value_name = "KEY=VALUE")]
        params: Vec<String>,
        /// Follow the run until it finishes and print its outcome.
        #[arg(long)]
        wait: bool,
        /// With --wait: give up after this many seconds.
        #[arg(long, default_value_t = 3600)]
        timeout: u64,
    },
    /// Publish a model artifact directory (e.g. from `birdsong-model restrict` or
    /// `birdsong-model train`) as a new version, as a candidate or promoted.
    Publish {
        /// The artifact directory (weights.bpk and model.json).
        dir: std::path::PathBuf,
        /// Version name; must not exist yet.
        #[arg(long)]
        version: String,
        /// Promote it at once (workers switch to it; tasks awaiting a model are queued).
        #[arg(long)]
        promote: bool,
        /// Recorded as the version's status reason.
        #[arg(long, default_value = "published from the command line")]
        reason: String,
    },
    /// Make VERSION the model every worker serves (an earlier one: rollback).
    Promote {
        version: String,
        /// Recorded as the version's status reason.
        #[arg(long, default_value = "promoted from the command line")]
        reason: String,
    },
    /// Classify recordings again with the promoted model, from stored features where
    /// its backbone's are stored (decoding the recording otherwise).
    Reclassify {
        /// Every recording of this job.
        #[arg(long, conflicts_with = "all", required_unless_present = "all")]
        job: Option<Uuid>,
        /// Every recording that was analysed.
        #[arg(long)]
        all: bool,
    },
    /// List the model versions.
    Models {
        #[arg(long)]
        json: bool,
    },
    /// List recent retrain runs.
    Runs {
        #[arg(long, default_value_t = 20)]
        limit: i64,
        #[arg(long)]
        json: bool,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let config = Config::from_env().context("invalid configuration")?;
    telemetry::init(&config.log_filter, config.log_format);
    match cli.command.unwrap_or(Command::Run) {
        Command::Run => serve(config).await,
        Command::Request {
            force,
            epochs,
            seed,
            architecture,
            params,
            wait,
            timeout,
        } => {
            let params = request_params(epochs, seed, architecture, &params)?;
            let (pool, publisher) = connect(&config).await?;
            let run = registry::request_retrain(
                &pool,
                &publisher,
                &config.queues.retrain,
                RetrainTrigger::Cli,
                params,
                force,
            )
            .await
            .context("requesting the retrain")?;
            println!("run {run} requested");
            if wait {
                follow(&pool, run, Duration::from_secs(timeout)).await
            } else {
                Ok(())
            }
        }
        Command::Publish {
            dir,
            version,
            promote,
            reason,
        } => {
            let mut artifact = birdsong_model::Artifact::load_dir_any_backbone(&dir)
                .with_context(|| format!("reading the model in {}", dir.display()))?;
            let (pool, publisher) = connect(&config).await?;
            let objects = birdsong_common::store::ObjectStore::new(&config.s3);
            objects
                .ensure_bucket()
                .await
                .context("reaching the object store")?;
            // `birdsong-model train --refit` keeps the judged model in `judged/`:
            // it goes along, so later gates can score it.
            let judged_dir = dir.join(registry::artifacts::JUDGED_DIR);
            let judged = match artifact.meta().refit {
                Some(_) if judged_dir.is_dir() => Some(
                    birdsong_model::Artifact::load_dir_any_backbone(&judged_dir).with_context(
                        || format!("reading the judged model in {}", judged_dir.display()),
                    )?,
                ),
                _ => None,
            };
            let stored = registry::artifacts::publish_refit(
                &pool,
                &objects,
                &mut artifact,
                judged.as_ref(),
                &registry::NewVersion {
                    version: version.clone(),
                    status_reason: Some(reason.clone()),
                    ..Default::default()
                },
            )
            .await
            .with_context(|| format!("publishing {version}"))?;
            println!(
                "{version} published ({} backbone, {} species) under {}",
                artifact.meta().features.backbone(),
                artifact.meta().classes.len(),
                stored.object_prefix
            );
            if promote {
                let done = registry::promote_and_requeue(
                    &pool,
                    &publisher,
                    &config.queues,
                    &version,
                    &reason,
                )
                .await
                .with_context(|| format!("promoting {version}"))?;
                println!(
                    "{version} promoted; {} tasks awaiting a model queued again",
                    done.requeued
                );
            }
            Ok(())
        }
        Command::Promote { version, reason } => {
            let (pool, publisher) = connect(&config).await?;
            let done =
                registry::promote_and_requeue(&pool, &publisher, &config.queues, &version, &reason)
                    .await
                    .with_context(|| format!("promoting {version}"))?;
            let (promotion, requeued) = (done.promotion, done.requeued);
            match (&promotion.previous, promotion.changed) {
                (_, false) => println!("{version} was already promoted (announced again)"),
                (Some(prev), true) => println!("{version} promoted ({prev} retired)"),
                (None, true) => println!("{version} promoted"),
            }
            if requeued > 0 {
                println!("{requeued} tasks awaiting a model queued again");
            }
            Ok(())
        }
        Command::Reclassify { job, all } => {
            let (pool, publisher) = connect(&config).await?;
            let selection = match (job, all) {
                (Some(job), _) => Selection::Job(job),
                (None, _) => Selection::All,
            };
            let r = registry::reclassify(&pool, &publisher, &config.queues.classify, &selection)
                .await
                .context("queueing the reclassification")?;
            println!("job {} queued with {} tasks", r.job_id, r.tasks);
            Ok(())
        }
        Command::Models { json } => {
            let pool = db::prepare(&config.database).await?;
            print_models(&pool, json).await
        }
        Command::Runs { limit, json } => {
            let pool = db::prepare(&config.database).await?;
            print_runs(&pool, limit, json).await
        }
    }
}

async fn serve(config: Config) -> anyhow::Result<()> {
    let stopped = shutdown::on_signal("stop requested; finishing the current run")
        .context("installing signal handlers")?;
    birdsong_retrainer::run(config, stopped).await
}

async fn connect(config: &Config) -> anyhow::Result<(PgPool, Publisher)> {
    let pool = db::prepare(&config.database)
        .await
        .context("connecting to PostgreSQL")?;
    let conn = queue::connect(&config.queues.amqp_url, "birdsong-retrainer-cli")
        .await
        .context("connecting to RabbitMQ")?;
    let channel = conn.create_channel().await.context("opening a channel")?;
    queue::declare_topology(&channel, &config.queues)
        .await
        .context("declaring the queues")?;
    let publisher = Publisher::new(&conn).await.context("opening a publisher")?;
    Ok((pool, publisher))
}

fn request_params(
    epochs: Option<u64>,
    seed: Option<u64>,
    architecture: Option<String>,
    extra: &[String],
) -> anyhow::Result<Value> {
    let mut map = Map::new();
    for kv in extra {
        let Some((key, value)) = kv.split_once('=') else {
            bail!("--param {kv:?} is not KEY=VALUE");
        };
        let value = serde_json::from_str(value).unwrap_or_else(|_| Value::String(value.into()));
        map.insert(key.trim().to_string(), value);
    }
    if let Some(e) = epochs {
        map.insert("epochs".into(), e.into());
    }
    if let Some(s) = seed {
        map.insert("seed".into(), s.into());
    }
    if let Some(a) = architecture {
        map.insert("architecture".into(), a.into());
    }
    // Refuse here what the retrainer would refuse, before queueing anything.
    birdsong_retrainer::params::parse(&Value::Object(map.clone()))
        .map_err(|e| anyhow::anyhow!("invalid parameters: {e}"))?;
    Ok(Value::Object(map))
}

#[derive(sqlx::FromRow)]
struct RunOutcome {
    status: String,
    progress: Option<Value>,
    error: Option<String>,
    model_version: Option<String>,
    promoted: Option<bool>,
    status_reason: Option<String>,
}

#[derive(sqlx::FromRow)]
struct ModelRow {
    version: String,
    status: String,
    classes: Value,
    metrics: Value,
    status_reason: Option<String>,
    created_at: DateTime<Utc>,
    retrain_run_id: Option<Uuid>,
}

/// Polls the run row until it is final; prints progress changes and the outcome.
async fn follow(pool: &PgPool, run: Uuid, limit: Duration) -> anyhow::Result<()> {
    let start = std::time::Instant::now();
    let mut last_stage = String::new();
    loop {
        let RunOutcome {
            status,
            progress,
            error,
            model_version: version,
            promoted,
            status_reason: reason,
        } = sqlx::query_as(
            "SELECT r.status, r.progress, r.error, r.model_version, r.promoted, m.status_reason
             FROM retrain_runs r LEFT JOIN model_versions m ON m.version = r.model_version
             WHERE r.id = $1",
        )
        .bind(run)
        .fetch_one(pool)
        .await
        .context("reading the run")?;
        let stage = progress
            .as_ref()
            .and_then(|p| p.get("stage"))
            .and_then(Value::as_str)
            .unwrap_or(&status)
            .to_string();
        if stage != last_stage {
            eprintln!("  {stage}");
            last_stage = stage;
        }
        match status.as_str() {
            "succeeded" => {
                let version = version.unwrap_or_default();
                let verdict = if promoted == Some(true) {
                    "promoted"
                } else {
                    "kept as a candidate"
                };
                println!(
                    "run {run} succeeded: {version} {verdict} ({})",
                    reason.unwrap_or_default()
                );
                return Ok(());
            }
            "skipped" => {
                println!("run {run} skipped: {}", error.unwrap_or_default());
                return Ok(());
            }
            "failed" => bail!("run {run} failed: {}", error.unwrap_or_default()),
            _ => {}
        }
        if start.elapsed() > limit {
            bail!("run {run} is still {status} after {limit:?}");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

async fn print_models(pool: &PgPool, json: bool) -> anyhow::Result<()> {
    let rows: Vec<ModelRow> = sqlx::query_as(
        "SELECT version, status, classes, metrics, status_reason, created_at, retrain_run_id
         FROM model_versions ORDER BY created_at, version",
    )
    .fetch_all(pool)
    .await
    .context("reading the model registry")?;
    if json {
        let out: Vec<Value> = rows
            .into_iter()
            .map(|m| {
                serde_json::json!({"version": m.version, "status": m.status,
                    "classes": m.classes, "metrics": m.metrics,
                    "status_reason": m.status_reason, "created_at": m.created_at,
                    "retrain_run_id": m.retrain_run_id})
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    println!(
        "{:<10} {:<10} {:>7} {:>8}  {:<20} reason",
        "version", "status", "classes", "holdout", "created"
    );
    for m in rows {
        let n = m.classes.as_array().map_or(0, Vec::len);
        let score = m
            .metrics
            .pointer("/holdout/recording_macro_f1")
            .and_then(Value::as_f64)
            .map_or("-".to_string(), |v| format!("{v:.3}"));
        println!(
            "{:<10} {:<10} {n:>7} {score:>8}  {:<20} {}",
            m.version,
            m.status,
            m.created_at.format("%Y-%m-%d %H:%M:%S"),
            m.status_reason.unwrap_or_default()
        );
    }
    Ok(())
}

async fn print_runs(pool: &PgPool, limit: i64, json: bool) -> anyhow::Result<()> {
    type Row = (
        Uuid,
        String,
        String,
        Value,
        Option<Value>,
        Option<Value>,
        Option<String>,
        Option<bool>,
        Option<String>,
        DateTime<Utc>,
        Option<DateTime<Utc>>,
        Option<DateTime<Utc>>,
    );
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT id, trigger, status, params, progress, data_summary, model_version, promoted, error,
                requested_at, started_at, finished_at
         FROM retrain_runs ORDER BY requested_at DESC LIMIT $1",
    )
    .bind(limit.max(1))
    .fetch_all(pool)
    .await
    .context("reading the runs")?;
    if json {
        let out: Vec<Value> = rows
            .into_iter()
            .map(|r| {
                serde_json::json!({"id": r.0, "trigger": r.1, "status": r.2, "params": r.3,
                    "progress": r.4, "data_summary": r.5, "model_version": r.6, "promoted": r.7,
                    "error": r.8, "requested_at": r.9, "started_at": r.10, "finished_at": r.11})
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    println!(
        "{:<36} {:<9} {:<10} {:<8} {:>8} {:>7}  {:<19} note",
        "run", "trigger", "status", "model", "promoted", "secs", "requested"
    );
    for r in rows {
        let secs = match (r.10, r.11) {
            (Some(s), Some(f)) => format!("{:.1}", (f - s).num_milliseconds() as f64 / 1000.0),
            _ => "-".into(),
        };
        let note =
            r.8.clone()
                .unwrap_or_else(|| r.4.as_ref().map(|p| p.to_string()).unwrap_or_default());
        println!(
            "{:<36} {:<9} {:<10} {:<8} {:>8} {:>7}  {:<19} {}",
            r.0,
            r.1,
            r.2,
            r.6.unwrap_or_else(|| "-".into()),
            r.7.map_or("-".to_string(), |p| p.to_string()),
            secs,
            r.9.format("%Y-%m-%d %H:%M:%S"),
            note
        );
    }
    Ok(())
}
