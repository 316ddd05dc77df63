//! `birdsong-producer`: the command-line front of [`birdsong_ingest`].
//!
//! Where it sits: first in the flow, for bulk archives on disk (the api's
//! uploads are the other way in, through the same library).
//!
//! Configuration (database, broker, object store, file size limit) comes
//! from the `BIRDSONG_*` environment variables like every other role; the
//! flags only say what to ingest and how.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use birdsong_common::Config;
use birdsong_common::jobs::Reporting;
use birdsong_common::recorded::TimeZone;
use birdsong_ingest::{
    DEFAULT_CONCURRENCY, DEFAULT_MAX_EXPANSION_RATIO, DEFAULT_MEMORY_ENTRY_BYTES, IngestOptions,
    LabelSource, ProgressMode, Services,
};
use clap::{Parser, Subcommand, ValueEnum};

#[derive(Parser)]
#[command(
    name = "birdsong-producer",
    version,
    about = "Bulk ingestion of recordings into birdsong"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Ingest files, folders (recursively) and archives (zip, tar, tar.gz):
    /// every recording becomes a queued classification task of one job.
    /// Running the same command again resumes or re-checks that job.
    Ingest(IngestArgs),
}

#[derive(Clone, Copy, ValueEnum)]
enum ProgressArg {
    /// A bar when stderr is a terminal, log lines otherwise.
    Auto,
    Bar,
    Log,
    None,
}

#[derive(clap::Args)]
struct IngestArgs {
    /// Files, folders and archives to ingest.
    #[arg(required = true, value_name = "PATH")]
    paths: Vec<PathBuf>,
    /// CSV file with `path` and `species` columns labelling the recordings
    /// (paths relative to the ingested folder or archive; a trailing part
    /// such as the file name also matches).
    #[arg(long, value_name = "CSV", conflicts_with = "label_from_folder")]
    labels: Option<PathBuf>,
    /// Label each recording with the name of its folder (underscores become
    /// spaces).
    #[arg(long)]
    label_from_folder: bool,
    /// Recorder or site name stored with the recordings.
    #[arg(long, value_name = "NAME")]
    site: Option<String>,
    /// Time zone the recorders' clocks were set to: an offset (+01:00,
    /// -05:00, UTC+1) or an IANA name (Europe/Berlin, with daylight saving
    /// time). Applies to start times that name no zone (file names such as
    /// 20240501_053000.WAV, GUANO timestamps without an offset), which are
    /// otherwise read as UTC; AudioMoth and GUANO headers that give their
    /// offset keep it.
    #[arg(long, value_name = "ZONE")]
    time_zone: Option<TimeZone>,
    /// Report only the species in this file: one per line, as in
    /// BirdNET-Analyzer's species lists (`Genus species_Common name` lines
    /// name the common name), names as the model's classes.
    #[arg(long, value_name = "FILE")]
    species_list: Option<PathBuf>,
    /// Report only detections at or above this confidence (0 to 1).
    #[arg(long, value_name = "SCORE")]
    min_confidence: Option<f32>,
    /// Recordings processed at once.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_CONCURRENCY as u16,
          value_parser = clap::value_parser!(u16).range(1..=256))]
    concurrency: u16,
    /// Refuse archive content expanding beyond this multiple of the
    /// archive's size on disk (compression bombs).
    #[arg(long, value_name = "RATIO", default_value_t = DEFAULT_MAX_EXPANSION_RATIO,
          value_parser = clap::value_parser!(u64).range(1..))]
    max_expansion_ratio: u64,
    /// Refuse archive content expanding beyond this many bytes in total.
    #[arg(long, value_name = "BYTES")]
    max_archive_bytes: Option<u64>,
    /// Archive entries up to this size are held in memory, larger ones in a
    /// temporary file.
    #[arg(long, value_name = "BYTES", default_value_t = DEFAULT_MEMORY_ENTRY_BYTES)]
    memory_entry_bytes: u64,
    /// Directory for temporary files (default: the system's).
    #[arg(long, value_name = "DIR")]
    temp_dir: Option<PathBuf>,
    /// How to show progress (on stderr).
    #[arg(long, value_enum, default_value = "auto")]
    progress: ProgressArg,
    /// Print the summary as JSON on stdout.
    #[arg(long)]
    json: bool,
    /// Description stored on the job (default: the command line).
    #[arg(long)]
    description: Option<String>,
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("birdsong-producer: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let cfg = Config::from_env().context("reading the BIRDSONG_* configuration")?;
    birdsong_common::telemetry::init(&cfg.log_filter, cfg.log_format);
    let Command::Ingest(args) = cli.command;
    let labels = match (args.labels, args.label_from_folder) {
        (Some(csv), _) => LabelSource::Csv(csv),
        (None, true) => LabelSource::Folder,
        (None, false) => LabelSource::None,
    };
    let progress = match args.progress {
        ProgressArg::Auto => ProgressMode::auto(),
        ProgressArg::Bar => ProgressMode::Bar,
        ProgressArg::Log => ProgressMode::Log {
            interval: std::time::Duration::from_secs(10),
        },
        ProgressArg::None => ProgressMode::Quiet,
    };
    let opts = IngestOptions {
        labels,
        site: args.site,
        time_zone: args.time_zone,
        reporting: Reporting {
            species_list: match &args.species_list {
                Some(path) => Some(Reporting::parse_list(
                    &std::fs::read_to_string(path)
                        .with_context(|| format!("reading the species list {}", path.display()))?,
                )),
                None => None,
            },
            min_confidence: args.min_confidence,
        },
        concurrency: usize::from(args.concurrency),
        max_expansion_ratio: args.max_expansion_ratio,
        max_archive_bytes: args.max_archive_bytes,
        memory_entry_bytes: args.memory_entry_bytes,
        temp_dir: args.temp_dir,
        progress,
        description: args.description,
        ..IngestOptions::new(args.paths)
    };
    let services = Services::connect(&cfg)
        .await
        .context("connecting to PostgreSQL, RabbitMQ and the object store")?;
    let summary = birdsong_ingest::ingest(&services, &opts)
        .await
        .context("ingest interrupted; run the same command again to resume")?;
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&summary).context("writing the summary")?
        );
    } else {
        print!("{}", summary.to_text());
    }
    Ok(())
}
