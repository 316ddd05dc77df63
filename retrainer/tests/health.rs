//! The retrainer's `/healthz` and `/readyz`: alive from the start, ready
//! once database, broker and object store answer, stopped with the process.

use std::time::Duration;

use birdsong_testkit::TestEnv;
use birdsong_testkit::http::{free_addr, get, wait_for};
use serde_json::Value;
use tokio::sync::watch;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_retrainer_answers_health_checks() {
    let env = TestEnv::start().await.expect("test environment");
    let addr = free_addr();
    let mut config = env.config.clone();
    config.retrainer_listen = Some(addr);
    let (stop, stopped) = watch::channel(false);
    let retrainer = tokio::spawn(birdsong_retrainer::run(config, stopped));

    let answer = wait_for(addr, "/readyz", Duration::from_secs(60), |s, _| s == 200).await;
    let (status, body) = answer.expect("/readyz answers");
    assert_eq!(status, 200, "{body}");
    let ready: Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(ready["status"], "ready", "{ready}");
    for service in ["database", "broker", "object_store"] {
        assert_eq!(ready[service], "ok", "{ready}");
    }
    let (status, body) = get(addr, "/healthz").await.expect("/healthz answers");
    assert_eq!(status, 200, "{body}");

    stop.send_replace(true);
    retrainer
        .await
        .expect("retrainer task")
        .expect("retrainer stops cleanly");
}
