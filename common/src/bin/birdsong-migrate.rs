//! `birdsong-migrate`: creates the database if needed and applies the schema.
//!
//! Every role migrates at start, so this is only needed to prepare a database
//! ahead of time (`scripts/stack.sh` runs it first, so that a broken database
//! shows up as one clear error instead of in every role's log).

use anyhow::Context;
use birdsong_common::{Config, db, telemetry};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    birdsong_common::cli::service_args(
        "birdsong-migrate",
        env!("CARGO_PKG_VERSION"),
        "Creates the database if needed and applies birdsong's schema, then exits.",
    );
    let config = Config::from_env().context("invalid configuration")?;
    telemetry::init(&config.log_filter, config.log_format);
    let pool = db::prepare(&config.database)
        .await
        .context("preparing the database")?;
    let applied: i64 = sqlx::query_scalar("SELECT count(*) FROM _sqlx_migrations WHERE success")
        .fetch_one(&pool)
        .await
        .context("reading the migration history")?;
    tracing::info!(
        database = %db::redact(&config.database.url),
        migrations = applied,
        "schema is up to date"
    );
    Ok(())
}
