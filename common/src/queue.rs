//! RabbitMQ plumbing: connection, topology and confirmed publishing.
//!
//! The topology is declared idempotently by every role at start, so that
//! whichever process comes up first creates it and the rest agree with it:
//!
//! * `classify` and `retrain` are durable **quorum** queues with a delivery
//!   limit. A message that keeps failing (a worker crash loop, a poison
//!   message) is dead-lettered to `<queue>.dead` after that many deliveries
//!   instead of blocking the queue forever.
//! * `model.events` is a durable fanout exchange; every worker binds its own
//!   queue to it to hear about promoted models.
//!
//! A consumer that cannot finish a message now hands it back with
//! [`hand_back`], which the broker counts towards the delivery limit on
//! every version: RabbitMQ 3.x counts every return, 4.3 and later count a
//! `basic.reject` but no longer a `basic.nack`.
//!
//! Publishing always uses publisher confirms: [`Publisher::publish`] returns
//! only once the broker has taken responsibility for the message, which is
//! what lets the producer record "queued" truthfully.

use std::sync::Arc;

use lapin::Acker;
use lapin::message::Delivery;
use lapin::options::{
    BasicPublishOptions, BasicRejectOptions, ConfirmSelectOptions, ExchangeDeclareOptions,
    QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{
    BasicProperties, Channel, Connection, ConnectionProperties, ConnectionStatus, ExchangeKind,
};

use tokio::sync::watch;

use crate::config::QueueConfig;
use crate::messages::{Message, MessageError, encode};

/// A broker failure. All of these are worth retrying after a reconnect.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error("cannot connect to RabbitMQ at {url}: {source}")]
    Connect { url: String, source: lapin::Error },
    #[error("RabbitMQ {operation} failed: {source}")]
    Broker {
        operation: String,
        source: lapin::Error,
    },
    #[error("RabbitMQ at {url} did not finish the connection handshake within {seconds} s")]
    ConnectTimedOut { url: String, seconds: u64 },
    #[error("the connection to RabbitMQ was lost")]
    Lost,
    #[error("RabbitMQ did not confirm the message published to {routing_key}")]
    Nacked { routing_key: String },
    #[error(transparent)]
    Message(#[from] MessageError),
}

fn broker(operation: impl Into<String>) -> impl FnOnce(lapin::Error) -> QueueError {
    let operation = operation.into();
    move |source| QueueError::Broker { operation, source }
}

/// Returns a delivery to its queue for another attempt, counting it
/// towards the queue's delivery limit.
///
/// Why `basic.reject` and not `basic.nack`: since RabbitMQ 4.3 a quorum
/// queue raises a message's delivery count only for `basic.reject`, so a
/// message handed back with `basic.nack` would be retried for ever and never
/// reach `<queue>.dead`. 3.x counts both, so this works on either.
/// `Ok(false)` when the delivery was already settled or its channel is
/// gone (the broker then redelivers it anyway), as lapin's own methods say.
pub async fn hand_back(acker: &Acker) -> Result<bool, lapin::Error> {
    acker.reject(BasicRejectOptions { requeue: true }).await
}

/// How many times the broker delivered this message before this delivery:
/// the quorum queue's `x-delivery-count` header, 0 when absent (first
/// delivery) or not a number.
pub fn previous_deliveries(delivery: &Delivery) -> u32 {
    let Some(headers) = delivery.properties.headers() else {
        return 0;
    };
    match headers.inner().get("x-delivery-count") {
        Some(AMQPValue::LongLongInt(n)) => u32::try_from(*n).unwrap_or(0),
        Some(AMQPValue::LongInt(n)) => u32::try_from(*n).unwrap_or(0),
        Some(AMQPValue::LongUInt(n)) => *n,
        Some(AMQPValue::ShortInt(n)) => u32::try_from(*n).unwrap_or(0),
        Some(AMQPValue::ShortShortInt(n)) => u32::try_from(*n).unwrap_or(0),
        _ => 0,
    }
}

/// First wait after a consumer loses the broker; doubled after each failed
/// attempt up to [`RECONNECT_MAX`].
pub const RECONNECT_FIRST: std::time::Duration = std::time::Duration::from_millis(500);
/// Longest wait between reconnection attempts.
pub const RECONNECT_MAX: std::time::Duration = std::time::Duration::from_secs(15);
/// A session that lasted this long had connected: the next failure starts
/// the back-off again from [`RECONNECT_FIRST`].
const HEALTHY_SESSION: std::time::Duration = std::time::Duration::from_secs(10);

/// Runs a consumer `session` (connect, declare, consume) again and again
/// until it ends cleanly or `shutdown` turns true, waiting with exponential
/// back-off between failed sessions.
///
/// Every consuming role (worker, retrainer) needs the same loop: a broker
/// restart or a cut connection must cost a reconnection, never the process,
/// and a stop request must not wait out a back-off. The session gets its own
/// copy of the shutdown flag.
pub async fn with_reconnects<F, Fut, E>(shutdown: &watch::Receiver<bool>, mut session: F)
where
    F: FnMut(watch::Receiver<bool>) -> Fut,
    Fut: std::future::Future<Output = Result<(), E>>,
    E: std::fmt::Display,
{
    let mut shutdown = shutdown.clone();
    let mut backoff = crate::retry::Backoff::new(RECONNECT_FIRST, RECONNECT_MAX);
    loop {
        if *shutdown.borrow() {
            return;
        }
        let started = std::time::Instant::now();
        match session(shutdown.clone()).await {
            Ok(()) => return,
            Err(e) => {
                if started.elapsed() >= HEALTHY_SESSION {
                    backoff.reset();
                }
                tracing::warn!(error = %format!("{e:#}"), "lost the broker; reconnecting");
                if !backoff.wait(&mut shutdown).await {
                    return;
                }
            }
        }
    }
}

/// Longest wait for the broker to finish a connection handshake. A server
/// that accepts the socket and then says nothing (stuck, or a half-open
/// network path) would otherwise hold the reconnect loop for ever.
pub const CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// How often [`lost`] looks at the connection's state.
const LINK_CHECK: std::time::Duration = std::time::Duration::from_millis(500);

/// Connects to the broker. The connection name shows in the management UI.
pub async fn connect(url: &str, name: &str) -> Result<Connection, QueueError> {
    let props = ConnectionProperties::default().with_connection_name(name.into());
    match tokio::time::timeout(CONNECT_TIMEOUT, Connection::connect(url, props)).await {
        Ok(connected) => connected.map_err(|source| QueueError::Connect {
            url: redact(url),
            source,
        }),
        Err(_) => Err(QueueError::ConnectTimedOut {
            url: redact(url),
            seconds: CONNECT_TIMEOUT.as_secs(),
        }),
    }
}

/// Resolves once `status` says the connection is no longer up.
///
/// lapin fails pending calls and consumer streams when the socket drops,
/// but a call issued in the same instant can miss that and wait for a reply
/// that never comes; a consumer session stuck there would never reconnect.
/// Watching the state is the backstop: every session selects on this
/// beside its own work and ends (to be reconnected) when it fires.
pub async fn lost(status: &ConnectionStatus) {
    while status.connected() {
        tokio::time::sleep(LINK_CHECK).await;
    }
}

/// Runs `work` (opening channels, declaring, subscribing) on a connection,
/// failing with [`QueueError::Lost`] if the connection goes down first.
pub async fn while_connected<T, E>(
    status: &ConnectionStatus,
    work: impl std::future::Future<Output = Result<T, E>>,
) -> Result<T, E>
where
    E: From<QueueError>,
{
    tokio::select! {
        done = work => done,
        () = lost(status) => Err(QueueError::Lost.into()),
    }
}

/// The URL without its password, for error messages.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme && url[scheme + 3..at].contains(':') => {
            let userinfo = &url[scheme + 3..at];
            let user = userinfo.split(':').next().unwrap_or("");
            format!("{}{}:***{}", &url[..scheme + 3], user, &url[at..])
        }
        _ => url.to_string(),
    }
}

fn long(s: &str) -> AMQPValue {
    AMQPValue::LongString(LongString::from(s.as_bytes().to_vec()))
}

/// Arguments of a work queue: quorum type, delivery limit, dead-lettering.
fn work_queue_args(queue: &str, delivery_limit: u32) -> FieldTable {
    let mut args = FieldTable::default();
    args.insert("x-queue-type".into(), long("quorum"));
    args.insert(
        "x-delivery-limit".into(),
        AMQPValue::LongLongInt(i64::from(delivery_limit)),
    );
    args.insert("x-dead-letter-exchange".into(), long(""));
    args.insert(
        "x-dead-letter-routing-key".into(),
        long(&QueueConfig::dead_letter(queue)),
    );
    args
}

fn quorum_args() -> FieldTable {
    let mut args = FieldTable::default();
    args.insert("x-queue-type".into(), long("quorum"));
    args
}

/// Declares the queues and exchange the system uses. Idempotent: declaring
/// an existing queue with the same arguments is a no-op on the broker.
pub async fn declare_topology(channel: &Channel, cfg: &QueueConfig) -> Result<(), QueueError> {
    let durable = QueueDeclareOptions {
        durable: true,
        ..QueueDeclareOptions::default()
    };
    for queue in [&cfg.classify, &cfg.retrain] {
        let dead = QueueConfig::dead_letter(queue);
        channel
            .queue_declare(dead.as_str().into(), durable, quorum_args())
            .await
            .map_err(broker(format!("declaring {dead}")))?;
        channel
            .queue_declare(
                queue.as_str().into(),
                durable,
                work_queue_args(queue, cfg.delivery_limit),
            )
            .await
            .map_err(broker(format!("declaring {queue}")))?;
    }
    channel
        .exchange_declare(
            cfg.model_exchange.as_str().into(),
            ExchangeKind::Fanout,
            ExchangeDeclareOptions {
                durable: true,
                ..ExchangeDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await
        .map_err(broker(format!("declaring {}", cfg.model_exchange)))?;
    Ok(())
}

/// A channel in confirm mode. Publishing waits for the broker's ack.
///
/// Made with [`Publisher::connect`] it owns its connection and, when the
/// broker has gone away and come back (a restart, a cut connection), opens
/// a new one on the next publish instead of failing every publish until the
/// process restarts: a long-running API must survive a broker restart the
/// way the consumers do. A message whose confirm was lost with the old
/// connection is published again; consumers treat a second copy as a
/// duplicate delivery. Made with [`Publisher::new`] it stays on the caller's
/// connection.
#[derive(Clone)]
pub struct Publisher {
    channel: Arc<std::sync::Mutex<Channel>>,
    reconnect: Option<Arc<Reconnect>>,
}

/// What a self-reconnecting publisher needs to connect again.
struct Reconnect {
    url: String,
    name: String,
    /// The connection in use, kept open for as long as the publisher lives.
    connection: std::sync::Mutex<Option<Connection>>,
    /// One reconnection at a time.
    reopening: tokio::sync::Mutex<()>,
}

async fn confirm_channel(conn: &Connection) -> Result<Channel, QueueError> {
    let channel = conn
        .create_channel()
        .await
        .map_err(broker("opening a channel"))?;
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .map_err(broker("enabling publisher confirms"))?;
    Ok(channel)
}

impl Publisher {
    /// Opens a confirm-mode channel on `conn`.
    pub async fn new(conn: &Connection) -> Result<Self, QueueError> {
        Ok(Self {
            channel: Arc::new(std::sync::Mutex::new(confirm_channel(conn).await?)),
            reconnect: None,
        })
    }

    /// Connects to `url` as `name` and opens a confirm-mode channel; the
    /// publisher reconnects by itself after the broker goes away.
    pub async fn connect(url: &str, name: &str) -> Result<Self, QueueError> {
        let conn = connect(url, name).await?;
        let channel = confirm_channel(&conn).await?;
        Ok(Self {
            channel: Arc::new(std::sync::Mutex::new(channel)),
            reconnect: Some(Arc::new(Reconnect {
                url: url.to_string(),
                name: name.to_string(),
                connection: std::sync::Mutex::new(Some(conn)),
                reopening: tokio::sync::Mutex::new(()),
            })),
        })
    }

    /// The channel in use (for declaring topology on it, or checking that
    /// it is connected).
    pub fn channel(&self) -> Channel {
        match self.channel.lock() {
            Ok(guard) => guard.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// The channel to publish on: the current one, or for a reconnecting
    /// publisher whose channel has closed, a new one on a new connection.
    async fn usable_channel(&self) -> Result<Channel, QueueError> {
        let current = self.channel();
        let Some(reconnect) = &self.reconnect else {
            return Ok(current);
        };
        if current.status().connected() {
            return Ok(current);
        }
        let _one_at_a_time = reconnect.reopening.lock().await;
        let current = self.channel();
        if current.status().connected() {
            return Ok(current);
        }
        tracing::warn!(broker = %redact(&reconnect.url), "publisher lost the broker; reconnecting");
        let conn = connect(&reconnect.url, &reconnect.name).await?;
        let channel = confirm_channel(&conn).await?;
        if let Ok(mut slot) = reconnect.connection.lock() {
            *slot = Some(conn);
        }
        match self.channel.lock() {
            Ok(mut guard) => *guard = channel.clone(),
            Err(poisoned) => *poisoned.into_inner() = channel.clone(),
        }
        Ok(channel)
    }

    /// Publishes a persistent JSON message to a queue through the default
    /// exchange and waits for the broker to confirm it. `mandatory` makes an
    /// unroutable message (a queue that does not exist) an error rather than
    /// a silent drop.
    pub async fn publish<M: Message>(&self, queue: &str, msg: &M) -> Result<(), QueueError> {
        self.publish_raw("", queue, &encode(msg)?, true).await
    }

    /// Publishes a message to a fanout exchange (no routing key).
    pub async fn broadcast<M: Message>(&self, exchange: &str, msg: &M) -> Result<(), QueueError> {
        self.publish_raw(exchange, "", &encode(msg)?, false).await
    }

    /// Publishes raw bytes; used by tests that need malformed messages.
    pub async fn publish_raw(
        &self,
        exchange: &str,
        routing_key: &str,
        body: &[u8],
        mandatory: bool,
    ) -> Result<(), QueueError> {
        let channel = self.usable_channel().await?;
        match self
            .publish_on(&channel, exchange, routing_key, body, mandatory)
            .await
        {
            // The connection died under this publish: once more on a new one.
            Err(e) if self.reconnect.is_some() && !channel.status().connected() => {
                tracing::warn!(error = %e, "publish failed with the connection; retrying on a new one");
                let channel = self.usable_channel().await?;
                self.publish_on(&channel, exchange, routing_key, body, mandatory)
                    .await
            }
            other => other,
        }
    }

    async fn publish_on(
        &self,
        channel: &Channel,
        exchange: &str,
        routing_key: &str,
        body: &[u8],
        mandatory: bool,
    ) -> Result<(), QueueError> {
        let props = BasicProperties::default()
            .with_delivery_mode(2)
            .with_content_type(ShortString::from("application/json"));
        let confirm = channel
            .basic_publish(
                exchange.into(),
                routing_key.into(),
                BasicPublishOptions {
                    mandatory,
                    ..BasicPublishOptions::default()
                },
                body,
                props,
            )
            .await
            .map_err(broker(format!("publishing to {routing_key}")))?
            .await
            .map_err(broker(format!("confirming a message to {routing_key}")))?;
        if confirm.is_ack() && confirm.take_message().is_none() {
            Ok(())
        } else {
            Err(QueueError::Nacked {
                routing_key: routing_key.to_string(),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn redact_hides_the_password() {
        assert_eq!(
            super::redact("amqp://guest:secret@host:5672/%2f"),
            "amqp://guest:***@host:5672/%2f"
        );
        assert_eq!(super::redact("amqp://host"), "amqp://host");
        assert_eq!(
            super::redact("postgres://postgres@host/db"),
            "postgres://postgres@host/db"
        );
    }
}
