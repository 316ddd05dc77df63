//! Consuming the `classify` queue: prefetch, dispositions, reconnection and
//! graceful shutdown.
//!
//! Each delivery runs as its own tokio task (at most [`Config::prefetch`] at once, the
//! broker sees to that); the CPU-heavy parts inside it are bounded by the
//! pipeline's CPU semaphore. A message is acknowledged only after its rows
//! are committed. What happens otherwise:
//!
//! | outcome | disposition |
//! |---|---|
//! | done, awaiting a model, already finished | ack |
//! | bad audio (permanent) | task marked failed with the reason, ack |
//! | malformed message, unknown task | reject → dead-letter queue, reason logged |
//! | service unavailable (transient) | retried here with back-off, then requeued with [`queue::hand_back`] (counted towards the delivery limit on RabbitMQ 3.x and 4.x) |
//! | still failing on the last allowed delivery | task marked failed with the reason, dead-lettered |
//!
//! If the broker connection drops, the loop reconnects with back-off; the
//! broker redelivers whatever was not acknowledged, and the pipeline's
//! upserts make the second run harmless.

use std::sync::Arc;
use std::time::Duration;

use birdsong_common::Config;
use birdsong_common::health::Health;
use birdsong_common::messages::{ClassifyTask, ModelEvent, decode};
use birdsong_common::queue;
use birdsong_common::retry::Backoff;
use futures::StreamExt;
use lapin::message::Delivery;
use lapin::options::{
    BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicQosOptions, BasicRejectOptions,
    QueueBindOptions, QueueDeclareOptions,
};
use lapin::types::FieldTable;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::pipeline::{Outcome, Pipeline};

/// In-process retries of a task that failed transiently, waiting from
/// [`RETRY_FIRST`] doubling to [`RETRY_MAX`] (jittered: 24 to 47 s in all). A
/// service outage shorter than that costs no delivery; five deliveries ride
/// out two to four minutes before the message reaches the delivery limit.
const RETRIES: usize = 7;
const RETRY_FIRST: Duration = Duration::from_millis(500);
const RETRY_MAX: Duration = Duration::from_secs(16);

/// Consumes until `shutdown` turns true, reconnecting after failures.
pub async fn consume_forever(
    pipeline: Arc<Pipeline>,
    config: &Config,
    health: &Health,
    shutdown: &mut watch::Receiver<bool>,
) {
    let pipeline = &pipeline;
    queue::with_reconnects(shutdown, move |mut stop| async move {
        consume(pipeline, config, health, &mut stop).await
    })
    .await;
}

async fn consume(
    pipeline: &Arc<Pipeline>,
    config: &Config,
    health: &Health,
    shutdown: &mut watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let q = &config.queues;
    let conn = queue::connect(&q.amqp_url, &pipeline.worker_name).await?;
    health.set_broker(conn.status().clone());
    let (channel, mut consumer, mut events) =
        queue::while_connected(conn.status(), subscribe(pipeline, config, &conn)).await?;
    // Events sent while we were away are gone; the database is the truth.
    sync_model(pipeline).await;
    tracing::info!(queue = %q.classify, prefetch = config.prefetch(), "consuming");

    let limit = q.delivery_limit;
    let mut inflight = JoinSet::new();
    let result = loop {
        tokio::select! {
            _ = shutdown.changed() => break Ok(()),
            () = queue::lost(conn.status()) => break Err(queue::QueueError::Lost.into()),
            delivery = consumer.next() => match delivery {
                Some(Ok(delivery)) => {
                    let p = pipeline.clone();
                    let stop = shutdown.clone();
                    inflight.spawn(async move { handle(&p, delivery, limit, stop).await });
                }
                Some(Err(e)) => break Err(anyhow::Error::new(e).context("classify consumer failed")),
                None => break Err(anyhow::anyhow!("the broker cancelled the classify consumer")),
            },
            event = events.next() => match event {
                Some(Ok(d)) => match decode::<ModelEvent>(&d.data) {
                    Ok(ev) => {
                        tracing::info!(version = %ev.version, kind = ?ev.kind, "model event");
                        sync_model(pipeline).await;
                    }
                    Err(e) => tracing::warn!(error = %e, "ignoring a malformed model event"),
                },
                Some(Err(e)) => break Err(anyhow::Error::new(e).context("model events consumer failed")),
                None => break Err(anyhow::anyhow!("the broker cancelled the model events consumer")),
            },
            Some(_) = inflight.join_next(), if !inflight.is_empty() => {}
        }
    };
    if result.is_ok() {
        tracing::info!(
            in_flight = inflight.len(),
            "shutting down: finishing in-flight tasks"
        );
        let _ = channel
            .basic_cancel(consumer.tag(), BasicCancelOptions::default())
            .await;
    }
    // Finish what was started either way: the rows get committed, and the
    // messages are acked (or, if the connection is gone, redelivered and
    // absorbed by the upserts).
    while inflight.join_next().await.is_some() {}
    if result.is_ok() {
        let _ = conn.close(200, "worker shutting down".into()).await;
    }
    result
}

/// Opens the classify consumer (with its prefetch) and this worker's private
/// queue on the model events exchange.
async fn subscribe(
    pipeline: &Pipeline,
    config: &Config,
    conn: &lapin::Connection,
) -> anyhow::Result<(lapin::Channel, lapin::Consumer, lapin::Consumer)> {
    let q = &config.queues;
    let channel = conn.create_channel().await?;
    queue::declare_topology(&channel, q).await?;
    channel
        .basic_qos(config.prefetch(), BasicQosOptions::default())
        .await?;
    let consumer = channel
        .basic_consume(
            q.classify.as_str().into(),
            pipeline.worker_name.as_str().into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;

    // Model events: a private queue bound to the fanout exchange.
    let events_channel = conn.create_channel().await?;
    let events_queue = events_channel
        .queue_declare(
            "".into(),
            QueueDeclareOptions {
                exclusive: true,
                auto_delete: true,
                ..QueueDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await?;
    events_channel
        .queue_bind(
            events_queue.name().clone(),
            q.model_exchange.as_str().into(),
            "".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await?;
    let events = events_channel
        .basic_consume(
            events_queue.name().clone(),
            format!("{}-events", pipeline.worker_name).as_str().into(),
            BasicConsumeOptions {
                no_ack: true,
                ..BasicConsumeOptions::default()
            },
            FieldTable::default(),
        )
        .await?;
    Ok((channel, consumer, events))
}

async fn sync_model(pipeline: &Pipeline) {
    let synced = pipeline.models.sync().await;
    pipeline
        .metrics
        .set_models_refused(pipeline.models.refused());
    match synced {
        Ok(m) => pipeline
            .metrics
            .set_model(m.as_ref().map(|m| m.version.as_str())),
        Err(e) => tracing::warn!(error = %e, "could not check for a new model"),
    }
}

async fn handle(
    pipeline: &Pipeline,
    delivery: Delivery,
    limit: u32,
    mut shutdown: watch::Receiver<bool>,
) {
    let msg: ClassifyTask = match decode(&delivery.data) {
        Ok(m) => m,
        Err(e) => {
            tracing::error!(reason = %e, "malformed classify message; dead-lettering it");
            pipeline.metrics.failure("malformed_message");
            dispose(&delivery, Disposition::DeadLetter).await;
            return;
        }
    };
    let previous = queue::previous_deliveries(&delivery);
    let mut backoff = Backoff::new(RETRY_FIRST, RETRY_MAX);
    let mut attempt = 1;
    let result = loop {
        match pipeline.process(&msg).await {
            Err(e) if e.is_transient() && !*shutdown.borrow() => {
                if attempt > RETRIES {
                    break Err(e);
                }
                pipeline.metrics.retry();
                pipeline.metrics.failure(e.kind());
                tracing::warn!(task = %msg.task_id, error = %e, attempt, "transient failure; retrying");
                // Shutting down: hand the message back now rather than hold
                // the exit for the rest of the back-off.
                if !backoff.wait(&mut shutdown).await {
                    break Err(e);
                }
                attempt += 1;
            }
            other => break other,
        }
    };
    let disposition = match result {
        Ok(outcome) => {
            match &outcome {
                Outcome::Failed { kind, reason } => {
                    tracing::info!(task = %msg.task_id, kind = %kind, reason = %reason, "task failed")
                }
                other => tracing::info!(task = %msg.task_id, outcome = ?other, "task finished"),
            }
            Disposition::Ack
        }
        Err(e) if !e.is_transient() => {
            tracing::error!(task = %msg.task_id, error = %e, "unusable classify message; dead-lettering it");
            pipeline.metrics.failure(e.kind());
            let _ = pipeline
                .finish_failed(msg.task_id, e.kind(), &e.to_string())
                .await;
            Disposition::DeadLetter
        }
        Err(e) if previous + 1 > limit => {
            let reason = format!("gave up after {} deliveries: {e}", previous + 1);
            tracing::error!(task = %msg.task_id, reason = %reason, "dead-lettering");
            pipeline.metrics.file_failed(e.kind());
            if let Err(db) = pipeline
                .finish_failed(msg.task_id, "retries_exhausted", &reason)
                .await
            {
                tracing::error!(task = %msg.task_id, error = %db, "could not record the failure on the task");
            }
            Disposition::DeadLetter
        }
        Err(e) => {
            tracing::warn!(task = %msg.task_id, error = %e, delivery = previous + 1, limit, "handing the task back to the broker");
            pipeline.metrics.failure(e.kind());
            Disposition::Requeue
        }
    };
    dispose(&delivery, disposition).await;
}

#[derive(Debug, Clone, Copy)]
enum Disposition {
    Ack,
    Requeue,
    DeadLetter,
}

async fn dispose(delivery: &Delivery, disposition: Disposition) {
    let result = match disposition {
        Disposition::Ack => delivery.acker.ack(BasicAckOptions::default()).await,
        Disposition::Requeue => queue::hand_back(&delivery.acker).await,
        Disposition::DeadLetter => {
            delivery
                .acker
                .reject(BasicRejectOptions { requeue: false })
                .await
        }
    };
    if let Err(e) = result {
        // The channel is gone: the broker will redeliver the message and the
        // upserts absorb the repeat.
        tracing::warn!(error = %e, ?disposition, "could not settle a delivery");
    }
}
