//! Stored models against a real S3-protocol server and PostgreSQL: two
//! deployments sharing a bucket each serve their own `v1`, a stored object
//! is never overwritten, and a model whose bytes were altered after
//! publication, or whose backbone the process cannot run, is refused while
//! the model in service stays; a refit model's judged model is stored beside
//! it and verified the same way.

use birdsong_common::queue::Publisher;
use birdsong_common::store::StoreError;
use birdsong_registry::artifacts::{self, object_key};
use birdsong_registry::{LoadError, Models};
use birdsong_testkit::TestEnv;
use birdsong_testkit::models::{store_model, train_embedding_head, train_synthetic};
use bytes::Bytes;

async fn trained(classes: usize) -> birdsong_model::Artifact {
    tokio::task::spawn_blocking(move || train_synthetic(classes))
        .await
        .unwrap()
        .unwrap()
}

#[tokio::test]
async fn two_deployments_sharing_a_bucket_each_serve_their_own_v1() {
    let a = TestEnv::start().await.expect("first deployment");
    let b = TestEnv::start().await.expect("second deployment");
    // Both deployments write to the first one's bucket.
    let bucket = a.store.clone();
    let (two, three) = tokio::join!(trained(2), trained(3));

    let a_v1 = artifacts::publish(
        &a.pool,
        &bucket,
        &mut two.clone(),
        &birdsong_registry::NewVersion {
            version: "v1".into(),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let b_v1 = artifacts::publish(
        &b.pool,
        &bucket,
        &mut three.clone(),
        &birdsong_registry::NewVersion {
            version: "v1".into(),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert_ne!(a_v1.object_prefix, b_v1.object_prefix);

    for (env, expected) in [(&a, 2), (&b, 3)] {
        let publisher = Publisher::new(&env.amqp).await.unwrap();
        birdsong_registry::promote(
            &env.pool,
            &publisher,
            &env.config.queues.model_exchange,
            "v1",
            "test",
        )
        .await
        .unwrap();
        let models = Models::new(env.pool.clone(), bucket.clone(), analyzer());
        let served = models.sync().await.unwrap().expect("a model in service");
        assert_eq!(served.version, "v1");
        assert_eq!(served.classifier.classes().len(), expected);
        assert_eq!(models.refused(), 0);
    }
}

#[tokio::test]
async fn a_stored_model_object_is_never_overwritten() {
    let env = TestEnv::start().await.expect("test environment");
    let stored = store_model(&env, "v1", trained(2).await).await.unwrap();
    let key = object_key(&stored.object_prefix, birdsong_model::WEIGHTS_FILE);
    let again = env.store.put_new(&key, Bytes::from_static(b"other")).await;
    assert!(matches!(again, Err(StoreError::Exists { .. })), "{again:?}");
    // The registry still loads what it published.
    let loaded = artifacts::load(&env.store, &stored).await.unwrap();
    assert_eq!(loaded.meta().weights_sha256, stored.checksum);
}

#[tokio::test]
async fn a_refit_models_judged_model_is_stored_beside_it_and_verified() {
    let env = TestEnv::start().await.expect("test environment");
    let (judged, mut refit) = tokio::join!(trained(2), trained(3));
    // Classes must agree for the refit to carry the judged model's thresholds.
    assert!(birdsong_model::carry_over(&judged, &mut refit).is_err());
    let mut refit = trained(2).await;
    birdsong_model::carry_over(&judged, &mut refit).unwrap();
    let stored = artifacts::publish_refit(
        &env.pool,
        &env.store,
        &mut refit,
        Some(&judged),
        &birdsong_registry::NewVersion {
            version: "v1".into(),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let served = artifacts::load(&env.store, &stored).await.unwrap();
    let relation = served.meta().refit.clone().expect("a refit model");
    assert!(relation.judged_meta_sha256.is_some());
    let loaded = artifacts::load_judged(&env.store, &stored, &served)
        .await
        .unwrap()
        .expect("the judged model");
    assert_eq!(loaded.weights(), judged.weights());
    assert_eq!(loaded.meta().version.as_deref(), Some("v1"));

    // Replaced weights are refused, naming the file.
    let judged_dir = object_key(&stored.object_prefix, artifacts::JUDGED_DIR);
    let weights_key = object_key(&judged_dir, birdsong_model::WEIGHTS_FILE);
    env.store
        .put(&weights_key, Bytes::from_static(b"other"))
        .await
        .unwrap();
    let refused = artifacts::load_judged(&env.store, &stored, &served)
        .await
        .unwrap_err();
    assert!(
        matches!(refused, LoadError::Tampered { file, .. } if file == birdsong_model::WEIGHTS_FILE),
        "{refused}"
    );

    // A model that is its own judge has none to load.
    let plain = store_model(&env, "v2", trained(2).await).await.unwrap();
    let plain_artifact = artifacts::load(&env.store, &plain).await.unwrap();
    assert!(
        artifacts::load_judged(&env.store, &plain, &plain_artifact)
            .await
            .unwrap()
            .is_none()
    );
}

#[tokio::test]
async fn a_tampered_model_is_refused_and_the_current_one_kept() {
    let env = TestEnv::start().await.expect("test environment");
    let publisher = Publisher::new(&env.amqp).await.unwrap();
    let exchange = env.config.queues.model_exchange.clone();
    store_model(&env, "v1", trained(2).await).await.unwrap();
    let v2 = store_model(&env, "v2", trained(3).await).await.unwrap();
    birdsong_registry::promote(&env.pool, &publisher, &exchange, "v1", "first")
        .await
        .unwrap();
    let models = Models::new(env.pool.clone(), env.store.clone(), analyzer());
    assert_eq!(models.sync().await.unwrap().unwrap().version, "v1");

    // Someone replaces v2's label list behind the registry's back (a plain
    // put, as any client with write access to the bucket could do).
    let meta_key = object_key(&v2.object_prefix, birdsong_model::META_FILE);
    let meta = env.store.get(&meta_key).await.unwrap();
    let altered = String::from_utf8(meta.to_vec())
        .unwrap()
        .replace("species-2", "Red-bellied Woodpecker");
    env.store
        .put(&meta_key, Bytes::from(altered.into_bytes()))
        .await
        .unwrap();
    let refused = artifacts::load(&env.store, &v2).await.unwrap_err();
    assert!(
        matches!(refused, LoadError::Tampered { file, .. } if file == birdsong_model::META_FILE),
        "{refused}"
    );
    assert!(!refused.is_transient());

    birdsong_registry::promote(&env.pool, &publisher, &exchange, "v2", "second")
        .await
        .unwrap();
    let served = models.sync().await.unwrap().expect("still serving");
    assert_eq!(
        served.version, "v1",
        "the refused version must not be served"
    );
    assert_eq!(models.refused(), 1);
    // Asking again does not load (or count) it again.
    assert_eq!(models.sync().await.unwrap().unwrap().version, "v1");
    assert_eq!(models.refused(), 1);
}

#[tokio::test]
async fn a_model_on_a_backbone_this_process_cannot_run_is_refused() {
    let env = TestEnv::start().await.expect("test environment");
    let publisher = Publisher::new(&env.amqp).await.unwrap();
    let exchange = env.config.queues.model_exchange.clone();
    store_model(&env, "v1", trained(2).await).await.unwrap();
    let head = tokio::task::spawn_blocking(|| train_embedding_head(3))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        head.meta().feature_version,
        birdsong_model::BIRDNET_FEATURE_VERSION
    );
    store_model(&env, "v2", head).await.unwrap();
    birdsong_registry::promote(&env.pool, &publisher, &exchange, "v1", "first")
        .await
        .unwrap();
    // A process whose BirdNET install is missing.
    let missing = std::env::temp_dir().join(format!("no-birdnet-{}", uuid::Uuid::new_v4()));
    let analyzer = std::sync::Arc::new(birdsong_analysis::Analyzer::new(
        birdsong_analysis::Settings {
            birdnet_dir: missing,
            ..Default::default()
        },
    ));
    let models = Models::new(env.pool.clone(), env.store.clone(), analyzer);
    let v1 = models.sync().await.unwrap().unwrap();
    assert_eq!(
        (v1.version.as_str(), v1.backbone),
        ("v1", birdsong_model::Backbone::Acoustic)
    );

    birdsong_registry::promote(&env.pool, &publisher, &exchange, "v2", "birdnet head")
        .await
        .unwrap();
    let served = models.ensure(Some("v2".into())).await.unwrap().unwrap();
    assert_eq!(served.version, "v1", "v2 cannot be served here");
    assert_eq!(models.refused(), 1);
    // Refused once, not retried for every task.
    models.ensure(Some("v2".into())).await.unwrap();
    assert_eq!(models.refused(), 1);
}

fn analyzer() -> std::sync::Arc<birdsong_analysis::Analyzer> {
    std::sync::Arc::new(birdsong_analysis::Analyzer::new(
        birdsong_analysis::Settings::default(),
    ))
}
