//! Consuming the `retrain` queue.
//!
//! Prefetch 1 and manual acknowledgement: a request is acknowledged only
//! once its run has a final status, so a retrainer that dies mid-run leaves
//! the message to be redelivered. The redelivery is harmless: by then the
//! run is marked failed (see [`crate::lock`]) and a run that is no longer
//! `requested` is acknowledged without doing anything. Training a second
//! time on a crash would repeat whatever killed the first attempt.
//!
//! | outcome | disposition |
//! |---|---|
//! | run finished (succeeded, failed, skipped), already handled, unknown | ack |
//! | malformed message | reject → dead-letter queue, reason logged |
//! | the run's row could not be finalised (database down) | requeue ([`queue::hand_back`], counted towards the delivery limit) |
//!
//! A SIGTERM lets the current run finish, then stops. Losing the broker
//! reconnects with back-off.

use std::time::Duration;

use birdsong_common::health::Health;
use birdsong_common::messages::{RetrainRequest, decode};
use birdsong_common::queue::{self, Publisher};
use futures::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicQosOptions, BasicRejectOptions,
};
use lapin::types::FieldTable;
use tokio::sync::watch;

use crate::run::{Handled, Retrainer};

/// Consumes until `shutdown` turns true, reconnecting after failures.
pub async fn consume_forever(
    retrainer: &Retrainer,
    health: &Health,
    shutdown: &mut watch::Receiver<bool>,
) {
    queue::with_reconnects(shutdown, move |mut stop| async move {
        consume(retrainer, health, &mut stop).await
    })
    .await;
}

async fn consume(
    retrainer: &Retrainer,
    health: &Health,
    shutdown: &mut watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let q = &retrainer.config.queues;
    let name = format!("retrainer-{}", std::process::id());
    let conn = queue::connect(&q.amqp_url, &name).await?;
    health.set_broker(conn.status().clone());
    let subscribe = async {
        let channel = conn.create_channel().await?;
        queue::declare_topology(&channel, q).await?;
        channel.basic_qos(1, BasicQosOptions::default()).await?;
        let publisher = Publisher::new(&conn).await?;
        let consumer = channel
            .basic_consume(
                q.retrain.as_str().into(),
                name.as_str().into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await?;
        anyhow::Ok((channel, publisher, consumer))
    };
    let (channel, publisher, mut consumer) =
        queue::while_connected(conn.status(), subscribe).await?;
    tracing::info!(queue = %q.retrain, "consuming retrain requests");
    loop {
        let delivery = tokio::select! {
            _ = shutdown.changed() => break,
            () = queue::lost(conn.status()) => return Err(queue::QueueError::Lost.into()),
            d = consumer.next() => d,
        };
        let delivery = match delivery {
            Some(Ok(d)) => d,
            Some(Err(e)) => return Err(anyhow::Error::new(e).context("retrain consumer failed")),
            None => return Err(anyhow::anyhow!("the broker cancelled the retrain consumer")),
        };
        let request: RetrainRequest = match decode(&delivery.data) {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(reason = %e, "malformed retrain request; dead-lettering it");
                settle(
                    delivery
                        .acker
                        .reject(BasicRejectOptions { requeue: false })
                        .await,
                );
                continue;
            }
        };
        match retrainer.handle(&publisher, &request).await {
            Ok(handled) => {
                if let Handled::Finished(status) = &handled {
                    tracing::info!(run = %request.run_id, %status, "retrain request done");
                }
                settle(delivery.acker.ack(BasicAckOptions::default()).await);
            }
            Err(e) => {
                tracing::error!(run = %request.run_id, error = %e, "could not finish the run; handing the request back");
                settle(queue::hand_back(&delivery.acker).await);
                // Give the failing service a moment before the redelivery.
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(2)) => {}
                    _ = shutdown.changed() => break,
                }
            }
        }
    }
    let _ = channel
        .basic_cancel(consumer.tag(), BasicCancelOptions::default())
        .await;
    let _ = conn.close(200, "retrainer shutting down".into()).await;
    Ok(())
}

fn settle(result: Result<bool, lapin::Error>) {
    if let Err(e) = result {
        // The channel is gone; the broker redelivers, and a run that is no
        // longer `requested` is acknowledged without being run again.
        tracing::warn!(error = %e, "could not settle a retrain request");
    }
}
