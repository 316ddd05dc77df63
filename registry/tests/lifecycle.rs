//! Model registry operations against real PostgreSQL and RabbitMQ: one
//! promoted version at a time, rollback, refused promotions, retrain
//! requests that can be followed, and reclassification jobs that only name
//! recordings with stored features.

use std::time::Duration;

use birdsong_common::jobs::{self, NewFile};
use birdsong_common::messages::{ClassifyTask, ModelEvent, RetrainRequest, RetrainTrigger, decode};
use birdsong_common::queue::Publisher;
use birdsong_registry::{self as registry, RegistryError, Selection};
use birdsong_testkit::TestEnv;
use lapin::options::{BasicGetOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use sqlx::PgPool;

async fn add_version(pool: &PgPool, version: &str, status: &str) {
    sqlx::query(
        "INSERT INTO model_versions (version, object_prefix, architecture, feature_version,
                                     input_size, classes, checksum, status, status_reason)
         VALUES ($1, $2, 'mlp', 'bs-features-1', 95, '[\"a\",\"b\"]', 'x', $3, 'test')",
    )
    .bind(version)
    .bind(format!("models/{version}/"))
    .bind(status)
    .execute(pool)
    .await
    .unwrap();
}

async fn statuses(pool: &PgPool) -> Vec<(String, String)> {
    sqlx::query_as("SELECT version, status FROM model_versions ORDER BY version")
        .fetch_all(pool)
        .await
        .unwrap()
}

async fn get(channel: &lapin::Channel, queue: &str) -> Option<Vec<u8>> {
    channel
        .basic_get(queue.into(), BasicGetOptions { no_ack: true })
        .await
        .unwrap()
        .map(|m| m.delivery.data.clone())
}

#[tokio::test]
async fn promotion_retires_the_previous_version_and_announces_the_new_one() {
    let env = TestEnv::start().await.expect("test environment");
    let q = &env.config.queues;
    let publisher = Publisher::new(&env.amqp).await.unwrap();
    let channel = env.amqp.create_channel().await.unwrap();
    // A listener bound to the fanout exchange, as a worker's would be.
    let events = format!("{}.events-listener", q.classify);
    channel
        .queue_declare(
            events.as_str().into(),
            QueueDeclareOptions {
                auto_delete: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
    channel
        .queue_bind(
            events.as_str().into(),
            q.model_exchange.as_str().into(),
            "".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();

    add_version(&env.pool, "v1", "candidate").await;
    add_version(&env.pool, "v2", "candidate").await;
    add_version(&env.pool, "bad", "rejected").await;

    let p = registry::promote(&env.pool, &publisher, &q.model_exchange, "v1", "first")
        .await
        .unwrap();
    assert!(p.changed);
    assert_eq!(p.previous, None);
    let p = registry::promote(&env.pool, &publisher, &q.model_exchange, "v2", "better")
        .await
        .unwrap();
    assert_eq!(p.previous.as_deref(), Some("v1"));
    assert_eq!(
        statuses(&env.pool).await,
        [
            ("bad".into(), "rejected".into()),
            ("v1".into(), "retired".into()),
            ("v2".into(), "promoted".into())
        ]
    );

    // Rollback is promoting the earlier version.
    let p = registry::promote(&env.pool, &publisher, &q.model_exchange, "v1", "rollback")
        .await
        .unwrap();
    assert_eq!(p.previous.as_deref(), Some("v2"));
    let again = registry::promote(&env.pool, &publisher, &q.model_exchange, "v1", "again")
        .await
        .unwrap();
    assert!(
        !again.changed,
        "promoting the promoted version changes nothing"
    );

    let unknown = registry::promote(&env.pool, &publisher, &q.model_exchange, "v9", "x").await;
    assert!(matches!(unknown, Err(RegistryError::UnknownVersion(_))));
    let rejected = registry::promote(&env.pool, &publisher, &q.model_exchange, "bad", "x").await;
    assert!(matches!(rejected, Err(RegistryError::Rejected { .. })));
    let promoted: Vec<String> =
        sqlx::query_scalar("SELECT version FROM model_versions WHERE status = 'promoted'")
            .fetch_all(&env.pool)
            .await
            .unwrap();
    assert_eq!(promoted, ["v1"]);

    let mut announced = Vec::new();
    while let Some(body) = get(&channel, &events).await {
        announced.push(decode::<ModelEvent>(&body).unwrap().version);
    }
    assert_eq!(announced, ["v1", "v2", "v1", "v1"]);
}

#[tokio::test]
async fn a_retrain_request_is_a_run_row_and_a_message() {
    let env = TestEnv::start().await.expect("test environment");
    let q = &env.config.queues;
    let publisher = Publisher::new(&env.amqp).await.unwrap();
    let run = registry::request_retrain(
        &env.pool,
        &publisher,
        &q.retrain,
        RetrainTrigger::Cli,
        serde_json::json!({"epochs": 3}),
        true,
    )
    .await
    .unwrap();
    let (trigger, status, force, epochs): (String, String, bool, Option<i64>) = sqlx::query_as(
        "SELECT trigger, status, force_promote, (params->>'epochs')::bigint FROM retrain_runs WHERE id = $1",
    )
    .bind(run)
    .fetch_one(&env.pool)
    .await
    .unwrap();
    assert_eq!(
        (trigger.as_str(), status.as_str(), force, epochs),
        ("cli", "requested", true, Some(3))
    );
    let channel = env.amqp.create_channel().await.unwrap();
    let body = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            if let Some(b) = get(&channel, &q.retrain).await {
                return b;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("the request reaches the retrain queue");
    let msg: RetrainRequest = decode(&body).unwrap();
    assert_eq!(msg.run_id, run);
    assert!(msg.force_promote);
}

#[tokio::test]
async fn reclassification_queues_only_recordings_with_stored_features() {
    let env = TestEnv::start().await.expect("test environment");
    let q = &env.config.queues;
    let publisher = Publisher::new(&env.amqp).await.unwrap();
    let analysed = "a".repeat(64);
    let never = "b".repeat(64);
    let (job, _) = jobs::open_job(&env.pool, jobs::JobSource::Producer, "t", None)
        .await
        .unwrap();
    for (sha, name) in [(&analysed, "a.wav"), (&never, "b.wav")] {
        jobs::register_file(
            &env.pool,
            &NewFile {
                sha256: sha,
                original_name: name,
                size_bytes: 10,
                site: None,
            },
        )
        .await
        .unwrap();
        jobs::add_task(&env.pool, job, sha, name).await.unwrap();
    }
    sqlx::query(
        "INSERT INTO window_features (file_sha256, feature_version, window_s, hop_s, window_index,
                                      start_s, end_s, features)
         VALUES ($1, 'bs-features-1', 5, 5, 0, 0, 5, '{1,2,3}')",
    )
    .bind(&analysed)
    .execute(&env.pool)
    .await
    .unwrap();

    let done = registry::reclassify(&env.pool, &publisher, &q.classify, &Selection::Job(job))
        .await
        .unwrap();
    assert_eq!(done.tasks, 1);
    let channel = env.amqp.create_channel().await.unwrap();
    let body = get(&channel, &q.classify)
        .await
        .expect("one classify message");
    let msg: ClassifyTask = decode(&body).unwrap();
    assert_eq!(
        (msg.job_id, msg.file_sha256.as_str()),
        (done.job_id, analysed.as_str())
    );
    assert!(get(&channel, &q.classify).await.is_none());
    let (source, submitted): (String, bool) =
        sqlx::query_as("SELECT source, submitted_at IS NOT NULL FROM jobs WHERE id = $1")
            .bind(done.job_id)
            .fetch_one(&env.pool)
            .await
            .unwrap();
    assert_eq!((source.as_str(), submitted), ("reclassify", true));

    let all = registry::reclassify(&env.pool, &publisher, &q.classify, &Selection::All)
        .await
        .unwrap();
    assert_eq!(all.tasks, 1);
    let none = registry::reclassify(
        &env.pool,
        &publisher,
        &q.classify,
        &Selection::Files(vec![never.clone()]),
    )
    .await
    .unwrap();
    assert_eq!(none.tasks, 0);
    let missing = registry::reclassify(
        &env.pool,
        &publisher,
        &q.classify,
        &Selection::Job(uuid::Uuid::new_v4()),
    )
    .await;
    assert!(matches!(missing, Err(RegistryError::UnknownJob(_))));

    // Tasks waiting for a model are queued again after a promotion.
    sqlx::query("UPDATE tasks SET status = 'awaiting_model' WHERE job_id = $1")
        .bind(job)
        .execute(&env.pool)
        .await
        .unwrap();
    while get(&channel, &q.classify).await.is_some() {}
    let requeued = registry::requeue_awaiting(&env.pool, &publisher, &q.classify)
        .await
        .unwrap();
    assert_eq!(requeued, 2);
}
