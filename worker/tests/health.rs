//! The worker's `/healthz`, `/readyz` and `/metrics`, as an orchestrator
//! sees them: alive while it still waits for its database, ready only once
//! database, broker and object store all answer, and not ready again while
//! the broker is cut off.

mod support;

use std::time::Duration;

use birdsong_testkit::TestEnv;
use birdsong_testkit::http::{free_addr, get, wait_for};
use birdsong_testkit::proxy::{Mode, Proxy, target, via};
use serde_json::Value;
use support::*;

const LIMIT: Duration = Duration::from_secs(60);

fn json(body: &str) -> Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alive_while_waiting_for_the_database() {
    let env = TestEnv::start().await.expect("test environment");
    let addr = free_addr();
    let mut config = env.config.clone();
    config.worker.metrics_listen = Some(addr);
    // Nothing listens there: the worker waits for PostgreSQL forever.
    let closed = free_addr();
    config.database.url = format!("postgres://postgres@{closed}/birdsong");
    let worker = start_worker_with(config);

    let alive = wait_for(addr, "/healthz", LIMIT, |s, _| s == 200).await;
    let (status, body) = alive.expect("/healthz answers");
    assert_eq!(status, 200, "{body}");
    assert_eq!(json(&body)["status"], "ok");
    let (status, body) = get(addr, "/readyz").await.expect("/readyz answers");
    assert_eq!(status, 503, "{body}");
    let ready = json(&body);
    assert_eq!(ready["status"], "not ready", "{ready}");
    assert_eq!(ready["database"], "unreachable", "{ready}");
    worker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_with_every_service_and_not_without_the_broker() {
    let env = TestEnv::start().await.expect("test environment");
    let broker = Proxy::start(target(&env.config.queues.amqp_url).expect("broker address"))
        .await
        .expect("proxy");
    let addr = free_addr();
    let mut config = env.config.clone();
    config.worker.metrics_listen = Some(addr);
    config.queues.amqp_url = via(&env.config.queues.amqp_url, broker.addr());
    let worker = start_worker_with(config);

    let answer = wait_for(addr, "/readyz", LIMIT, |s, _| s == 200).await;
    let (status, body) = answer.expect("/readyz answers");
    assert_eq!(status, 200, "{body}");
    let ready = json(&body);
    for service in ["database", "broker", "object_store"] {
        assert_eq!(ready[service], "ok", "{ready}");
    }
    assert_eq!(ready["status"], "ready");
    let (status, metrics) = get(addr, "/metrics").await.expect("/metrics answers");
    assert_eq!(status, 200);
    assert!(
        metrics.contains("birdsong_files_processed_total"),
        "{metrics}"
    );

    // The broker goes away: still alive, no longer ready.
    broker.set(Mode::Refuse);
    let answer = wait_for(addr, "/readyz", LIMIT, |s, _| s == 503).await;
    let (status, body) = answer.expect("/readyz answers");
    assert_eq!(status, 503, "{body}");
    let ready = json(&body);
    assert_eq!(ready["broker"], "unreachable", "{ready}");
    assert_eq!(ready["database"], "ok", "{ready}");
    let (status, _) = get(addr, "/healthz").await.expect("/healthz answers");
    assert_eq!(status, 200);

    // Back: ready again once the worker has reconnected.
    broker.set(Mode::Pass);
    let answer = wait_for(addr, "/readyz", LIMIT, |s, _| s == 200).await;
    let (status, body) = answer.expect("/readyz answers");
    assert_eq!(status, 200, "{body}");
    worker.shutdown().await;
}
