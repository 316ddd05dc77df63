//! The API keeps accepting jobs across a broker outage: its publisher
//! reconnects by itself once the broker is back, rather than failing every
//! upload until the process is restarted.

mod support;

use std::time::Duration;

use birdsong_common::queue::Publisher;
use birdsong_testkit::TestEnv;
use birdsong_testkit::audio::synthetic_wav;
use birdsong_testkit::proxy::{Mode, Proxy, target, via};
use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploads_are_accepted_again_once_the_broker_is_back() {
    let env = TestEnv::start().await.expect("test environment");
    let proxy = Proxy::start(target(&env.config.queues.amqp_url).unwrap())
        .await
        .unwrap();
    let url = via(&env.config.queues.amqp_url, proxy.addr());
    let publisher = Publisher::connect(&url, "birdsong-api-test").await.unwrap();
    let api = start_api_with(&env, |_| {}, publisher).await;
    let upload = |name: &str, seed: u64| {
        let parts = vec![Part::File(name.into(), synthetic_wav(0, 3.0, seed))];
        let api = &api;
        async move { api.post_multipart("/v1/jobs", Some(KEY), &parts).await }
    };

    let before = upload("before.wav", 1).await;
    assert_eq!(before.status, 202, "{}", before.text());

    proxy.set(Mode::Refuse);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let during = upload("during.wav", 2).await;
    eprintln!(
        "injected: broker connections cut; an upload meanwhile got {}",
        during.status
    );
    assert!(
        during.status.is_server_error(),
        "an upload that cannot be queued is refused: {}",
        during.text()
    );

    proxy.set(Mode::Pass);
    let after = upload("after.wav", 3).await;
    eprintln!(
        "found: after the broker came back an upload got {}",
        after.status
    );
    assert_eq!(after.status, 202, "{}", after.text());
    // The recordings accepted before and after are both queued.
    assert_eq!(queued_messages(&env).await, 2);
    api.stop().await;
}
