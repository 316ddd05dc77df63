//! `birdsong-s3`: the object store for a single machine without Docker.
//!
//! `scripts/stack.sh` starts it; it serves a local directory over the S3
//! protocol with the credentials from the birdsong configuration variables,
//! so every other role talks to it exactly as it would to MinIO.

use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use tracing_subscriber::EnvFilter;

#[derive(Debug, Parser)]
#[command(version, about = "S3-protocol server on a local directory")]
struct Args {
    /// Address to listen on.
    #[arg(long, env = "BIRDSONG_S3_LISTEN", default_value = "127.0.0.1:9000")]
    listen: String,
    /// Access key clients must sign with.
    #[arg(long, env = "BIRDSONG_S3_ACCESS_KEY", default_value = "birdsong")]
    access_key: String,
    /// Secret key clients must sign with.
    #[arg(
        long,
        env = "BIRDSONG_S3_SECRET_KEY",
        default_value = "birdsong-secret",
        hide_env_values = true
    )]
    secret_key: String,
    /// Directory holding the buckets (one sub-directory per bucket).
    root: PathBuf,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_env("BIRDSONG_LOG").unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .init();
    let args = Args::parse();
    let server = birdsong_s3local::S3Server::start(
        &args.root,
        &args.listen,
        birdsong_s3local::Credentials {
            access_key: args.access_key,
            secret_key: args.secret_key,
        },
    )
    .await
    .context("starting the S3 server")?;
    tracing::info!(endpoint = %server.endpoint(), root = %args.root.display(), "serving objects");
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("installing the SIGTERM handler")?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    tracing::info!("shutting down");
    server.shutdown().await;
    Ok(())
}
