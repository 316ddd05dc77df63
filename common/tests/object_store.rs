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

/// Writes `len` pseudo-random bytes (they do not compress, and no two parts
/// are alike) to `path`, a block at a time; returns their SHA-256.
fn random_file(path: &std::path::Path, len: usize, seed: u64) -> String {
    use sha2::{Digest, Sha256};
    use std::io::Write;
    let mut state = seed | 1;
    let mut hasher = Sha256::new();
    let mut file = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    let mut left = len;
    let mut block = vec![0u8; 64 * 1024];
    while left > 0 {
        let n = left.min(block.len());
        for b in &mut block[..n] {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            *b = (state >> 24) as u8;
        }
        hasher.update(&block[..n]);
        file.write_all(&block[..n]).unwrap();
        left -= n;
    }
    file.flush().unwrap();
    hex::encode(hasher.finalize())
}

/// The smallest part S3 accepts, so that a test file of a few parts is small.
const PART: u64 = birdsong_common::config::MIN_S3_PART_BYTES;

#[tokio::test]
async fn a_file_over_the_part_size_goes_up_in_parts_and_reads_back_identical() {
    let env = TestEnv::start().await.expect("test environment");
    let mut cfg = env.config.s3.clone();
    cfg.part_bytes = PART;
    let store = ObjectStore::new(&cfg);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("long.wav");
    // Two full parts and a short last one.
    let len = 2 * PART as usize + 123_457;
    let sha = random_file(&path, len, 7);
    let key = audio_key(&sha);

    store.put_file(&key, &path).await.expect("multipart upload");
    assert_eq!(store.head(&key).await.unwrap(), Some(len as u64));
    let back = dir.path().join("back");
    assert_eq!(store.get_to_file(&key, &back).await.unwrap(), len as u64);
    let bytes = std::fs::read(&back).unwrap();
    assert_eq!(sha256_hex(&bytes), sha);

    // A file at the part size exactly is one plain PUT, and reads back too.
    let small = dir.path().join("small.wav");
    let small_sha = random_file(&small, PART as usize, 8);
    store
        .put_file(&audio_key(&small_sha), &small)
        .await
        .unwrap();
    let got = store.get(&audio_key(&small_sha)).await.unwrap();
    assert_eq!(sha256_hex(&got), small_sha);
}

/// An access policy for the test server that refuses the third part of
/// every multipart upload (as a store might after a credential expires
/// mid-upload) and counts the aborts it sees. The test's third part is one
/// byte: a server refuses a part before reading its body, and a 5 MiB body
/// still being written when it closes the connection would fail the client
/// with a broken pipe (a transient error) instead of the refusal.
struct RefuseThirdPart {
    aborts: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

#[async_trait::async_trait]
impl s3s::access::S3Access for RefuseThirdPart {
    async fn upload_part(
        &self,
        req: &mut s3s::S3Request<s3s::dto::UploadPartInput>,
    ) -> s3s::S3Result<()> {
        if req.input.part_number == 3 {
            return Err(s3s::s3_error!(AccessDenied, "the test refuses part 3"));
        }
        Ok(())
    }

    async fn abort_multipart_upload(
        &self,
        _req: &mut s3s::S3Request<s3s::dto::AbortMultipartUploadInput>,
    ) -> s3s::S3Result<()> {
        self.aborts
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Ok(())
    }
}

#[tokio::test]
async fn a_failed_part_aborts_the_upload_and_leaves_no_object() {
    let mut cfg = birdsong_common::Config::from_map(&Default::default())
        .expect("default configuration")
        .s3;
    let data = tempfile::tempdir().unwrap();
    let aborts = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let server = birdsong_s3local::S3Server::start_with_access(
        data.path(),
        "127.0.0.1:0",
        birdsong_s3local::Credentials {
            access_key: cfg.access_key.clone(),
            secret_key: cfg.secret_key.clone(),
        },
        RefuseThirdPart {
            aborts: aborts.clone(),
        },
    )
    .await
    .expect("test S3 server");
    cfg.endpoint = server.endpoint();
    cfg.bucket = "multipart-abort".into();
    cfg.part_bytes = PART;
    let store = ObjectStore::new(&cfg);
    store.ensure_bucket().await.unwrap();

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("long.wav");
    let sha = random_file(&path, 2 * PART as usize + 1, 9);
    let key = audio_key(&sha);
    let err = store
        .put_file(&key, &path)
        .await
        .expect_err("part 3 is refused");
    assert!(matches!(err, StoreError::Refused { .. }), "{err}");
    assert!(err.to_string().contains("upload_part"), "{err}");
    assert_eq!(
        aborts.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "the upload must be aborted once"
    );
    assert_eq!(
        store.head(&key).await.unwrap(),
        None,
        "no object may appear"
    );
    // The server keeps an upload's state and parts as `.upload*` files in
    // its root; an aborted upload leaves none.
    let leftovers: Vec<String> = std::fs::read_dir(data.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .filter(|name| name.starts_with(".upload"))
        .collect();
    assert!(
        leftovers.is_empty(),
        "upload state left behind: {leftovers:?}"
    );
    server.shutdown().await;
}
