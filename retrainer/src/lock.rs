//! One training at a time, across every retrainer process.
//!
//! A PostgreSQL advisory lock, held on a connection of its own for the
//! whole run. The server releases it when that connection ends, so a
//! retrainer that dies (even by SIGKILL) cannot leave the lock taken. The
//! lock also tells who is running: while a process holds it, no other run
//! can be in progress, so any run still marked `running` at that moment was
//! left by a process that died, and is marked failed.

use birdsong_common::db::query;
use sqlx::{Connection, PgConnection};

use crate::error::RetrainError;

/// The advisory lock key ("birdsong" in ASCII).
const KEY: i64 = 0x6269_7264_736f_6e67;

/// What a run left by a dead process is marked with.
pub const STALE_ERROR: &str = "retrainer stopped during the run";

/// The lock, held while this value lives (or until [`RunLock::release`]).
pub struct RunLock {
    conn: PgConnection,
}

impl RunLock {
    /// Waits for the lock.
    pub async fn acquire(database_url: &str) -> Result<Self, RetrainError> {
        let mut conn = PgConnection::connect(database_url)
            .await
            .map_err(query("connecting for the run lock"))?;
        sqlx::query("SELECT pg_advisory_lock($1)")
            .bind(KEY)
            .execute(&mut conn)
            .await
            .map_err(query("waiting for the run lock"))?;
        Ok(Self { conn })
    }

    /// Takes the lock if nobody holds it.
    pub async fn try_acquire(database_url: &str) -> Result<Option<Self>, RetrainError> {
        let mut conn = PgConnection::connect(database_url)
            .await
            .map_err(query("connecting for the run lock"))?;
        let got: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
            .bind(KEY)
            .fetch_one(&mut conn)
            .await
            .map_err(query("trying the run lock"))?;
        Ok(got.then_some(Self { conn }))
    }

    /// Marks failed every run left `running`: with the lock held, none of
    /// them can be alive. Returns how many there were.
    pub async fn fail_stale_runs(&mut self) -> Result<u64, RetrainError> {
        let done = sqlx::query(
            "UPDATE retrain_runs SET status = 'failed', error = $1, finished_at = now()
             WHERE status = 'running'",
        )
        .bind(STALE_ERROR)
        .execute(&mut self.conn)
        .await
        .map_err(query("marking abandoned runs failed"))?;
        if done.rows_affected() > 0 {
            tracing::warn!(
                runs = done.rows_affected(),
                "marked runs of a stopped retrainer failed"
            );
        }
        Ok(done.rows_affected())
    }

    /// Releases the lock and closes its connection.
    pub async fn release(mut self) {
        let _ = sqlx::query("SELECT pg_advisory_unlock($1)")
            .bind(KEY)
            .execute(&mut self.conn)
            .await;
        let _ = self.conn.close().await;
    }
}

/// At start-up: if no run is in progress anywhere, marks the runs of a
/// retrainer that died failed. If another process is running one, leaves
/// everything alone (that process will do it when it next takes the lock).
pub async fn recover(database_url: &str) -> Result<u64, RetrainError> {
    match RunLock::try_acquire(database_url).await? {
        Some(mut lock) => {
            let n = lock.fail_stale_runs().await;
            lock.release().await;
            n
        }
        None => Ok(0),
    }
}
