//! The object store against a real S3-protocol server over HTTP.

use birdsong_common::store::{ObjectStore, StoreError, audio_key, sha256_hex};
use birdsong_testkit::TestEnv;
use bytes::Bytes;

#[tokio::test]
async fn content_addressed_put_reads_back_identical_and_second_put_is_a_no_op() {
    let env = TestEnv::start().await.expect("test environment");
    let bytes: Vec<u8> = (0..200_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let (sha, uploaded) = env
        .store
        .put_audio(Bytes::from(bytes.clone()))
        .await
        .unwrap();
    assert!(uploaded);
    assert_eq!(sha, sha256_hex(&bytes));
    let back = env.store.get(&audio_key(&sha)).await.unwrap();
    assert_eq!(back.as_ref(), bytes.as_slice());
    assert_eq!(
        env.store.head(&audio_key(&sha)).await.unwrap(),
        Some(bytes.len() as u64)
    );

    // The second put of the same bytes sends nothing and changes nothing.
    let (sha2, uploaded2) = env
        .store
        .put_audio(Bytes::from(bytes.clone()))
        .await
        .unwrap();
    assert_eq!(sha2, sha);
    assert!(!uploaded2);

    // Streaming download to a file gives the same bytes.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a");
    let n = env
        .store
        .get_to_file(&audio_key(&sha), &path)
        .await
        .unwrap();
    assert_eq!(n as usize, bytes.len());
    assert_eq!(std::fs::read(&path).unwrap(), bytes);
}

#[tokio::test]
async fn missing_objects_and_wrong_credentials_are_told_apart() {
    let env = TestEnv::start().await.expect("test environment");
    let missing = env.store.get("audio/none").await.unwrap_err();
    assert!(matches!(missing, StoreError::NotFound { .. }), "{missing}");
    assert_eq!(env.store.head("audio/none").await.unwrap(), None);

    let mut cfg = env.config.s3.clone();
    cfg.secret_key = "wrong".into();
    let bad = ObjectStore::new(&cfg);
    let err = bad
        .put("x", Bytes::from_static(b"x"))
        .await
        .expect_err("a wrong secret must be refused");
    assert!(
        !err.is_transient(),
        "bad credentials are not worth retrying: {err}"
    );
}

#[tokio::test]
async fn an_unreachable_store_is_a_transient_error() {
    let env = TestEnv::start().await.expect("test environment");
    let mut cfg = env.config.s3.clone();
    // A port nobody listens on.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    cfg.endpoint = format!("http://127.0.0.1:{port}");
    cfg.timeout = std::time::Duration::from_secs(5);
    let err = ObjectStore::new(&cfg)
        .head("audio/x")
        .await
        .expect_err("nothing listens there");
    assert!(err.is_transient(), "{err}");
}
