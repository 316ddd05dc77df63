//! The broker topology against a real RabbitMQ: confirmed publishing,
//! consumption with manual acks, dead-lettering past the delivery limit, and
//! a session's work ending when its connection drops.

use std::time::Duration;

use birdsong_common::config::QueueConfig;
use birdsong_common::messages::{ClassifyTask, decode};
use birdsong_common::queue::{
    Publisher, QueueError, connect, declare_topology, hand_back, previous_deliveries,
    while_connected,
};
use birdsong_testkit::TestEnv;
use birdsong_testkit::proxy::{Mode, Proxy, target, via};
use futures::StreamExt;
use lapin::options::{BasicConsumeOptions, BasicGetOptions};
use lapin::types::FieldTable;
use uuid::Uuid;

fn task() -> ClassifyTask {
    ClassifyTask::new(Uuid::new_v4(), Uuid::new_v4(), "c".repeat(64))
}

#[tokio::test]
async fn confirmed_message_is_consumed_and_acked() {
    let env = TestEnv::start().await.expect("test environment");
    let q = &env.config.queues;
    let publisher = Publisher::new(&env.amqp).await.unwrap();
    let sent = task();
    publisher.publish(&q.classify, &sent).await.unwrap();

    let channel = env.amqp.create_channel().await.unwrap();
    let mut consumer = channel
        .basic_consume(
            q.classify.as_str().into(),
            "test".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    let delivery = tokio::time::timeout(Duration::from_secs(10), consumer.next())
        .await
        .expect("a delivery within 10 s")
        .expect("stream open")
        .expect("delivery");
    let got: ClassifyTask = decode(&delivery.data).unwrap();
    assert_eq!(got, sent);
    assert_eq!(delivery.properties.delivery_mode(), &Some(2), "persistent");
    delivery.acker.ack(Default::default()).await.unwrap();
    channel.close(200, "done".into()).await.unwrap();

    // Acked: nothing left, nothing dead-lettered.
    let check = env.amqp.create_channel().await.unwrap();
    let left = check
        .basic_get(q.classify.as_str().into(), BasicGetOptions::default())
        .await
        .unwrap();
    assert!(left.is_none(), "the acked message must be gone");
}

#[tokio::test]
async fn message_past_the_delivery_limit_is_dead_lettered() {
    let env = TestEnv::start().await.expect("test environment");
    let q = &env.config.queues;
    let publisher = Publisher::new(&env.amqp).await.unwrap();
    let sent = task();
    publisher.publish(&q.classify, &sent).await.unwrap();

    let channel = env.amqp.create_channel().await.unwrap();
    let mut deliveries = 0u32;
    // Keep handing it back, as a worker whose services stay down would,
    // until the broker stops handing it out. The broker must count each
    // return: the worker reads that count to decide when to give up.
    for _ in 0..50 {
        match channel
            .basic_get(
                q.classify.as_str().into(),
                BasicGetOptions { no_ack: false },
            )
            .await
            .unwrap()
        {
            Some(msg) => {
                assert_eq!(
                    previous_deliveries(&msg.delivery),
                    deliveries,
                    "x-delivery-count must count every hand-back"
                );
                deliveries += 1;
                assert!(hand_back(&msg.delivery.acker).await.unwrap(), "handed back");
            }
            None if deliveries > 0 => break,
            None => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
    assert!(
        deliveries >= q.delivery_limit && deliveries <= q.delivery_limit + 1,
        "delivered {deliveries} times with a limit of {}",
        q.delivery_limit
    );

    let dead = QueueConfig::dead_letter(&q.classify);
    let mut found = None;
    for _ in 0..100 {
        if let Some(msg) = channel
            .basic_get(dead.as_str().into(), BasicGetOptions { no_ack: true })
            .await
            .unwrap()
        {
            found = Some(msg.delivery.data.clone());
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let body = found.expect("the message must be in the dead-letter queue");
    assert_eq!(decode::<ClassifyTask>(&body).unwrap(), sent);
}

#[tokio::test]
async fn topology_declaration_is_idempotent() {
    let env = TestEnv::start().await.expect("test environment");
    let channel = env.amqp.create_channel().await.unwrap();
    // A second (and third) declaration with the same arguments succeeds.
    declare_topology(&channel, &env.config.queues)
        .await
        .unwrap();
    declare_topology(&channel, &env.config.queues)
        .await
        .unwrap();
}

#[tokio::test]
async fn publishing_to_a_missing_queue_is_an_error_not_a_silent_drop() {
    let env = TestEnv::start().await.expect("test environment");
    let publisher = Publisher::new(&env.amqp).await.unwrap();
    let err = publisher
        .publish(&format!("test-{}.no-such-queue", env.id), &task())
        .await
        .expect_err("unroutable message");
    assert!(err.to_string().contains("no-such-queue"), "{err}");
}

#[tokio::test]
async fn work_on_a_connection_that_drops_ends_instead_of_waiting_for_ever() {
    let env = TestEnv::start().await.expect("test environment");
    let url = &env.config.queues.amqp_url;
    let proxy = Proxy::start(target(url).expect("broker address"))
        .await
        .expect("proxy");
    let conn = connect(&via(url, proxy.addr()), "test-lost")
        .await
        .expect("connects through the proxy");
    // Work that would never finish on its own, as a call whose reply was
    // lost with the socket.
    let stuck = std::future::pending::<Result<(), QueueError>>();
    let cut = async {
        tokio::time::sleep(Duration::from_millis(200)).await;
        proxy.set(Mode::Refuse);
    };
    let (ended, ()) = tokio::time::timeout(
        Duration::from_secs(20),
        futures::future::join(while_connected(conn.status(), stuck), cut),
    )
    .await
    .expect("the cut connection ends the work");
    assert!(matches!(ended, Err(QueueError::Lost)), "{ended:?}");
}
