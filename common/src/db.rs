//! PostgreSQL: connection pool, database creation and migrations.
//!
//! The schema in `migrations/` is the system's public query interface. Every
//! role applies it at start ([`prepare`]); sqlx takes a PostgreSQL advisory
//! lock around the migration run, so any number of processes starting at
//! once apply each migration exactly once and the rest wait and then find
//! nothing to do.

use std::time::Duration;

use sqlx::migrate::{MigrateDatabase, Migrator};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{PgPool, Postgres};

use crate::config::DatabaseConfig;

/// The embedded migrations.
pub static MIGRATOR: Migrator = sqlx::migrate!("../migrations");

/// A database failure.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("cannot reach PostgreSQL at {url}: {source}")]
    Connect { url: String, source: sqlx::Error },
    #[error("cannot create database {url}: {source}")]
    Create { url: String, source: sqlx::Error },
    #[error("applying migrations failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
}

/// A statement that failed, and what it was for: every library's errors
/// carry their database failures as this, so that a task row, a run row or
/// an HTTP problem says which step failed in the same words.
#[derive(Debug, thiserror::Error)]
#[error("database error while {doing}: {source}")]
pub struct QueryError {
    pub doing: &'static str,
    #[source]
    pub source: sqlx::Error,
}

/// `map_err` adapter naming what a statement was doing:
/// `.map_err(query("listing the job's tasks"))?`.
pub fn query(doing: &'static str) -> impl FnOnce(sqlx::Error) -> QueryError {
    move |source| QueryError { doing, source }
}

/// The URL without its password, for messages.
pub fn redact(url: &str) -> String {
    crate::queue::redact(url)
}

/// Creates the database named in `url` if it does not exist. Two processes
/// racing here both succeed.
pub async fn ensure_database(url: &str) -> Result<(), DbError> {
    let exists = Postgres::database_exists(url)
        .await
        .map_err(|source| DbError::Connect {
            url: redact(url),
            source,
        })?;
    if exists {
        return Ok(());
    }
    match Postgres::create_database(url).await {
        Ok(()) => Ok(()),
        // 42P04 duplicate_database, 23505 unique_violation on pg_database:
        // another process created it between our check and our create.
        Err(sqlx::Error::Database(e))
            if matches!(e.code().as_deref(), Some("42P04") | Some("23505")) =>
        {
            Ok(())
        }
        Err(source) => Err(DbError::Create {
            url: redact(url),
            source,
        }),
    }
}

/// Opens a pool. Connections are checked before use so that a pool
/// survives a database restart.
pub async fn connect(cfg: &DatabaseConfig) -> Result<PgPool, DbError> {
    let options: PgConnectOptions = cfg.url.parse().map_err(|source| DbError::Connect {
        url: redact(&cfg.url),
        source,
    })?;
    PgPoolOptions::new()
        .max_connections(cfg.max_connections.max(1))
        .acquire_timeout(Duration::from_secs(10))
        .test_before_acquire(true)
        .connect_with(options.application_name("birdsong"))
        .await
        .map_err(|source| DbError::Connect {
            url: redact(&cfg.url),
            source,
        })
}

/// Applies pending migrations (safe from concurrent processes).
pub async fn migrate(pool: &PgPool) -> Result<(), DbError> {
    MIGRATOR.run(pool).await?;
    Ok(())
}

/// Creates the database if needed, connects and migrates: what every role
/// does at start.
pub async fn prepare(cfg: &DatabaseConfig) -> Result<PgPool, DbError> {
    ensure_database(&cfg.url).await?;
    let pool = connect(cfg).await?;
    migrate(&pool).await?;
    Ok(pool)
}
