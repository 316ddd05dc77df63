//! Isolated environments on the real services, one per test.
//!
//! Where it sits: beside the flow, for tests and benchmarks only; it
//! publishes models through the registry library like the retrainer does.
//!
//! Integration tests talk to the real PostgreSQL, RabbitMQ and an S3-protocol
//! server over the network, like production does. To keep concurrent tests
//! (and concurrent CI runs on one machine) from seeing each other's data,
//! [`TestEnv::start`] gives each test:
//!
//! * a fresh database with a random name, migrated, dropped again when the
//!   environment is dropped;
//! * a random prefix for every queue and exchange name, with the topology
//!   declared, deleted again on drop;
//! * a fresh bucket on an S3 server: the one named by
//!   `BIRDSONG_TEST_S3_ENDPOINT` when set (e.g. MinIO from docker compose),
//!   otherwise an in-process `birdsong-s3` server on a random port over a
//!   temporary directory.
//!
//! Beside it: [`audio`] generates recordings, [`proxy`] breaks a service's
//! connections on demand for fault tests, [`cli`] checks that a service binary
//! answers `--help` without starting, and `models` (feature `models`)
//! publishes trained models through the registry.
//!
//! Database and broker addresses come from the usual `BIRDSONG_DATABASE_URL`
//! and `BIRDSONG_AMQP_URL` (defaults: the local services; `scripts/test.sh`
//! sets the database URL to the password role it creates). Set
//! `BIRDSONG_TEST_KEEP=1` to keep a failed test's database for inspection.

pub mod audio;
pub mod cli;
pub mod http;
#[cfg(feature = "models")]
pub mod models;
pub mod proxy;

use std::collections::HashMap;

use anyhow::Context;
use birdsong_common::Config;
use birdsong_common::queue;
use birdsong_common::store::ObjectStore;
use birdsong_s3local::{Credentials, S3Server};
use sqlx::PgPool;

/// One test's private slice of the services.
pub struct TestEnv {
    /// Configuration pointing at this environment's database, queues and
    /// bucket; hand it to the role under test.
    pub config: Config,
    /// The environment variables equivalent to `config`, for tests that
    /// start a role as a child process.
    pub vars: HashMap<String, String>,
    pub pool: PgPool,
    pub store: ObjectStore,
    pub amqp: lapin::Connection,
    /// Unique id of this environment (part of every name).
    pub id: String,
    /// Kept alive for the test's duration.
    _s3_server: Option<S3Server>,
    _s3_dir: Option<tempfile::TempDir>,
    admin_url: String,
    database: String,
}

impl TestEnv {
    /// Adds a task for the stored recording `sha` to `job` and publishes its
    /// classify message, as the producer does; returns the task id.
    pub async fn enqueue_task(
        &self,
        publisher: &queue::Publisher,
        job: uuid::Uuid,
        sha: &str,
        source_path: &str,
    ) -> uuid::Uuid {
        use birdsong_common::jobs;
        let task = jobs::add_task(&self.pool, job, sha, source_path)
            .await
            .expect("adding a task");
        jobs::enqueue(
            &self.pool,
            publisher,
            &self.config.queues.classify,
            job,
            task.id,
            sha,
        )
        .await
        .expect("publishing a classify message");
        task.id
    }

    /// Waits until no task of `job` has one of the `unfinished` statuses,
    /// polling the database; panics with the count left after `limit`.
    /// Tests differ in what they wait out (a retrainer test also waits for
    /// `awaiting_model` tasks), hence the list.
    pub async fn wait_for_tasks(
        &self,
        job: uuid::Uuid,
        unfinished: &[&str],
        limit: std::time::Duration,
    ) {
        let start = std::time::Instant::now();
        let unfinished: Vec<String> = unfinished.iter().map(|s| s.to_string()).collect();
        loop {
            let pending: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM tasks WHERE job_id = $1 AND status = ANY($2)",
            )
            .bind(job)
            .bind(&unfinished)
            .fetch_one(&self.pool)
            .await
            .expect("counting a job's unfinished tasks");
            if pending == 0 {
                return;
            }
            assert!(
                start.elapsed() < limit,
                "job {job} still has {pending} tasks in {unfinished:?} after {limit:?}"
            );
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
    }

    /// Creates the environment. Fails with a message saying which service
    /// did not answer and how to start it.
    pub async fn start() -> anyhow::Result<Self> {
        let base = Config::from_env().context("reading BIRDSONG_* variables")?;
        let id = uuid::Uuid::new_v4().simple().to_string()[..12].to_string();
        let database = format!("birdsong_test_{id}");
        let admin_url = base.database.url.clone();
        let db_url = with_database(&admin_url, &database);

        let mut vars: HashMap<String, String> = std::env::vars()
            .filter(|(k, _)| k.starts_with("BIRDSONG_"))
            .collect();
        vars.insert("BIRDSONG_DATABASE_URL".into(), db_url.clone());
        vars.insert("BIRDSONG_QUEUE_PREFIX".into(), format!("test-{id}."));
        vars.insert("BIRDSONG_S3_BUCKET".into(), format!("test-{id}"));
        vars.insert("BIRDSONG_METRICS_LISTEN".into(), String::new());
        vars.insert("BIRDSONG_RETRAINER_LISTEN".into(), String::new());
        // Tests run in parallel (and start child processes); small pools keep
        // them under PostgreSQL's connection limit.
        vars.insert("BIRDSONG_DATABASE_MAX_CONNECTIONS".into(), "4".into());

        let (s3_server, s3_dir) = match std::env::var("BIRDSONG_TEST_S3_ENDPOINT") {
            Ok(endpoint) if !endpoint.is_empty() => {
                vars.insert("BIRDSONG_S3_ENDPOINT".into(), endpoint);
                (None, None)
            }
            _ => {
                let dir = tempfile::tempdir().context("creating the object store directory")?;
                let server = S3Server::start(
                    dir.path(),
                    "127.0.0.1:0",
                    Credentials {
                        access_key: base.s3.access_key.clone(),
                        secret_key: base.s3.secret_key.clone(),
                    },
                )
                .await
                .context("starting the in-process S3 server")?;
                vars.insert("BIRDSONG_S3_ENDPOINT".into(), server.endpoint());
                (Some(server), Some(dir))
            }
        };
        let config = Config::from_map(&vars).context("building the test configuration")?;

        let pool = birdsong_common::db::prepare(&config.database)
            .await
            .context(
                "PostgreSQL did not answer or refused the connection. Run the tests with \
                 scripts/test.sh (extra arguments go to cargo test): it starts PostgreSQL \
                 and connects as a role with a password it creates. Or set \
                 BIRDSONG_DATABASE_URL (`docker compose up -d postgres`: \
                 postgres://birdsong:birdsong@127.0.0.1:5432/birdsong)",
            )?;
        let amqp = queue::connect(&config.queues.amqp_url, &format!("test-{id}"))
            .await
            .context(
                "RabbitMQ did not answer. Run the tests with scripts/test.sh, which starts \
                 it, or start it yourself (`rabbitmq-server -detached`, or \
                 `docker compose up -d rabbitmq` with \
                 BIRDSONG_AMQP_URL=amqp://birdsong:birdsong@127.0.0.1:5672/%2f)",
            )?;
        let channel = amqp.create_channel().await.context("opening a channel")?;
        queue::declare_topology(&channel, &config.queues)
            .await
            .context("declaring the test topology")?;
        let store = ObjectStore::new(&config.s3);
        store
            .ensure_bucket()
            .await
            .context("creating the test bucket")?;
        Ok(Self {
            config,
            vars,
            pool,
            store,
            amqp,
            id,
            _s3_server: s3_server,
            _s3_dir: s3_dir,
            admin_url,
            database,
        })
    }
}

impl Drop for TestEnv {
    fn drop(&mut self) {
        if std::env::var("BIRDSONG_TEST_KEEP").is_ok_and(|v| v == "1") {
            eprintln!(
                "keeping test database {} (BIRDSONG_TEST_KEEP=1)",
                self.database
            );
            return;
        }
        let admin_url = self.admin_url.clone();
        let database = self.database.clone();
        let amqp_url = self.config.queues.amqp_url.clone();
        let q = self.config.queues.clone();
        // The test's runtime may be shutting down (or blocked in this very
        // drop): clean up on a runtime and connections of our own, on a
        // thread of our own, and wait for it. `WITH (FORCE)` closes the
        // test's own pool connections.
        let cleanup = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async move {
                if let Ok(conn) = queue::connect(&amqp_url, "test-cleanup").await {
                    if let Ok(ch) = conn.create_channel().await {
                        for name in [&q.classify, &q.retrain] {
                            for n in [
                                name.clone(),
                                birdsong_common::config::QueueConfig::dead_letter(name),
                            ] {
                                let _ =
                                    ch.queue_delete(n.as_str().into(), Default::default()).await;
                            }
                        }
                        let _ = ch
                            .exchange_delete(q.model_exchange.as_str().into(), Default::default())
                            .await;
                    }
                    let _ = conn.close(200, "done".into()).await;
                }
                // The server may be briefly out of connection slots while
                // other tests run: retry before giving up.
                let mut admin = None;
                for _ in 0..20 {
                    match <sqlx::PgConnection as sqlx::Connection>::connect(&with_database(
                        &admin_url, "postgres",
                    ))
                    .await
                    {
                        Ok(conn) => {
                            admin = Some(conn);
                            break;
                        }
                        Err(_) => tokio::time::sleep(std::time::Duration::from_millis(250)).await,
                    }
                }
                if let Some(mut conn) = admin {
                    if let Err(e) = sqlx::query(sqlx::AssertSqlSafe(format!(
                        "DROP DATABASE IF EXISTS \"{database}\" WITH (FORCE)"
                    )))
                    .execute(&mut conn)
                    .await
                    {
                        eprintln!("could not drop test database {database}: {e}");
                    }
                } else {
                    eprintln!("could not connect to drop test database {database}");
                }
            });
        });
        let _ = cleanup.join();
    }
}

/// `url` with its database name replaced by `database`.
pub fn with_database(url: &str, database: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let authority_start = base.find("://").map(|i| i + 3).unwrap_or(0);
    let base = match base[authority_start..].find('/') {
        Some(i) => &base[..authority_start + i],
        None => base,
    };
    match query {
        Some(q) => format!("{base}/{database}?{q}"),
        None => format!("{base}/{database}"),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn database_name_is_replaced() {
        assert_eq!(
            super::with_database("postgres://u@h:5432/birdsong", "x"),
            "postgres://u@h:5432/x"
        );
        assert_eq!(
            super::with_database("postgres://u@h/db?sslmode=disable", "x"),
            "postgres://u@h/x?sslmode=disable"
        );
        assert_eq!(super::with_database("postgres://h", "x"), "postgres://h/x");
    }
}
