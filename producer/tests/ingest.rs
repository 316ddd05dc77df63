//! End-to-end ingest tests on the real services (PostgreSQL, RabbitMQ and an
//! S3-protocol server over a socket), with recordings generated here.

use std::collections::{HashMap, HashSet};
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use birdsong_common::messages::{ClassifyTask, decode};
use birdsong_common::queue::Publisher;
use birdsong_common::store::{audio_key, sha256_hex};
use birdsong_ingest::{IngestOptions, LabelSource, Services, ingest};
use birdsong_testkit::TestEnv;
use lapin::options::BasicGetOptions;
use uuid::Uuid;

const RATE: u32 = 22_050;

/// A mono 16-bit PCM WAV file holding a linear chirp from `f0` to `f1` Hz.
fn wav(seconds: f64, f0: f64, f1: f64) -> Vec<u8> {
    let n = (seconds * f64::from(RATE)) as u32;
    let samples = (0..n).map(|i| {
        let t = f64::from(i) / f64::from(RATE);
        let phase = 2.0 * std::f64::consts::PI * (f0 * t + (f1 - f0) * t * t / (2.0 * seconds));
        (phase.sin() * 0.5 * f64::from(i16::MAX)) as i16
    });
    pcm(samples, n)
}

/// A WAV file of pseudo-random noise (does not compress).
fn noise_wav(seconds: f64, seed: u64) -> Vec<u8> {
    let n = (seconds * f64::from(RATE)) as u32;
    let mut state = seed.wrapping_mul(6364136223846793005).wrapping_add(1);
    let samples = (0..n).map(move |_| {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (state >> 48) as i16
    });
    pcm(samples, n)
}

fn pcm(samples: impl Iterator<Item = i16>, _n: u32) -> Vec<u8> {
    birdsong_testkit::audio::wav_i16(samples, RATE)
}

fn random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed | 1;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 24) as u8
        })
        .collect()
}

fn write(path: &Path, bytes: &[u8]) {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, bytes).unwrap();
}

async fn services(env: &TestEnv, max_file_bytes: Option<u64>) -> Services {
    let mut cfg = env.config.clone();
    if let Some(max) = max_file_bytes {
        cfg.max_file_bytes = max;
    }
    let publisher = Publisher::new(&env.amqp).await.unwrap();
    Services::new(&cfg, env.pool.clone(), env.store.clone(), publisher)
}

/// Takes every message off the classify queue.
async fn drain(env: &TestEnv) -> Vec<ClassifyTask> {
    let channel = env.amqp.create_channel().await.unwrap();
    let mut out = Vec::new();
    while let Some(msg) = channel
        .basic_get(
            env.config.queues.classify.as_str().into(),
            BasicGetOptions { no_ack: true },
        )
        .await
        .unwrap()
    {
        out.push(decode::<ClassifyTask>(&msg.delivery.data).unwrap());
    }
    out
}

#[derive(Debug, sqlx::FromRow)]
struct TaskRow {
    id: Uuid,
    file_sha256: String,
    source_path: String,
    status: String,
    queued: bool,
}

async fn tasks(env: &TestEnv, job: Uuid) -> Vec<TaskRow> {
    sqlx::query_as(
        "SELECT id, file_sha256, source_path, status, queued_at IS NOT NULL AS queued
         FROM tasks WHERE job_id = $1 ORDER BY source_path",
    )
    .bind(job)
    .fetch_all(&env.pool)
    .await
    .unwrap()
}

async fn rejections(env: &TestEnv, job: Uuid) -> HashMap<String, String> {
    sqlx::query_as::<_, (String, String)>(
        "SELECT path, reason FROM job_rejections WHERE job_id = $1",
    )
    .bind(job)
    .fetch_all(&env.pool)
    .await
    .unwrap()
    .into_iter()
    .collect()
}

async fn count(env: &TestEnv, sql: &'static str) -> i64 {
    sqlx::query_scalar(sql).fetch_one(&env.pool).await.unwrap()
}

/// The reason recorded for the one rejected path ending in `suffix`.
fn reason_for<'a>(rejected: &'a HashMap<String, String>, suffix: &str) -> &'a str {
    let found: Vec<_> = rejected
        .iter()
        .filter(|(p, _)| p.ends_with(suffix))
        .collect();
    assert_eq!(
        found.len(),
        1,
        "one rejection ending in {suffix}: {rejected:#?}"
    );
    found[0].1
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn folder_and_tar_gz_become_queued_tasks_and_a_rerun_is_a_no_op() {
    let env = TestEnv::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let folder = dir.path().join("season");
    let recordings = [
        ("Robin/a.wav", wav(2.0, 2000.0, 4000.0)),
        ("Robin/b.wav", wav(3.0, 3000.0, 1500.0)),
        ("Carolina_Wren/c.wav", wav(2.5, 1000.0, 6000.0)),
    ];
    for (name, bytes) in &recordings {
        write(&folder.join(name), bytes);
    }
    write(&folder.join("notes.wav"), b"field notes, not audio\n");
    write(&folder.join("Robin/random.wav"), &random_bytes(50_000, 7));
    write(&folder.join("empty.wav"), b"");
    std::os::unix::fs::symlink(folder.join("Robin/a.wav"), folder.join("Robin/link.wav")).unwrap();

    let archive = dir.path().join("upload.tar.gz");
    let jay = wav(2.0, 500.0, 5000.0);
    {
        let gz = flate2::write::GzEncoder::new(
            fs::File::create(&archive).unwrap(),
            flate2::Compression::default(),
        );
        let mut tar = tar::Builder::new(gz);
        for (name, bytes) in [("Blue_Jay/d.wav", &jay[..]), ("Blue_Jay/readme.txt", b"hi")] {
            let mut h = tar::Header::new_gnu();
            h.set_size(bytes.len() as u64);
            h.set_mode(0o644);
            h.set_cksum();
            tar.append_data(&mut h, name, bytes).unwrap();
        }
        tar.into_inner().unwrap().finish().unwrap();
    }

    let services = services(&env, None).await;
    let mut opts = IngestOptions::new(vec![folder.clone(), archive.clone()]);
    opts.labels = LabelSource::Folder;
    opts.site = Some("marsh-3".into());
    let first = ingest(&services, &opts).await.unwrap();
    assert!(!first.resumed);
    assert_eq!(first.accepted, 4, "{}", first.to_text());
    assert_eq!(first.duplicate, 0);
    assert_eq!(first.already_done, 0);
    assert_eq!(first.rejected, 5, "{}", first.to_text());
    assert_eq!(first.labelled, 4);
    assert_eq!(first.job_tasks, 4);
    assert!(first.follow_sql.contains(&first.job_id.to_string()));
    let job = first.job_id;

    // Rows: four files, four queued tasks, five reasoned rejections.
    let rows = tasks(&env, job).await;
    assert_eq!(rows.len(), 4);
    for row in &rows {
        assert_eq!(row.status, "queued");
        assert!(row.queued, "{row:?} has no queued_at");
        assert!(
            env.store
                .head(&audio_key(&row.file_sha256))
                .await
                .unwrap()
                .is_some()
        );
    }
    let mut expected: HashSet<String> = recordings.iter().map(|(_, b)| sha256_hex(b)).collect();
    expected.insert(sha256_hex(&jay));
    let found: HashSet<String> = rows.iter().map(|r| r.file_sha256.clone()).collect();
    assert_eq!(found, expected);
    assert!(
        rows.iter()
            .any(|r| r.source_path.ends_with("upload.tar.gz!/Blue_Jay/d.wav"))
    );
    assert_eq!(count(&env, "SELECT count(*) FROM audio_files").await, 4);
    assert_eq!(
        count(
            &env,
            "SELECT count(*) FROM audio_files WHERE site = 'marsh-3'"
        )
        .await,
        4
    );
    let rejected = rejections(&env, job).await;
    assert_eq!(rejected.len(), 5, "{rejected:#?}");
    assert!(reason_for(&rejected, "/notes.wav").starts_with("not-audio: "));
    assert!(reason_for(&rejected, "/Robin/random.wav").starts_with("not-audio: "));
    assert!(reason_for(&rejected, "/empty.wav").starts_with("empty: "));
    assert!(reason_for(&rejected, "/Robin/link.wav").starts_with("link: "));
    assert!(reason_for(&rejected, "!/Blue_Jay/readme.txt").starts_with("not-audio: "));

    // Labels from folder names, underscores as spaces.
    let labels: HashMap<String, (String, String)> = sqlx::query_as::<_, (String, String, String)>(
        "SELECT l.file_sha256, l.species, l.source FROM labels l",
    )
    .fetch_all(&env.pool)
    .await
    .unwrap()
    .into_iter()
    .map(|(sha, species, source)| (sha, (species, source)))
    .collect();
    assert_eq!(labels.len(), 4);
    assert_eq!(labels[&sha256_hex(&recordings[2].1)].0, "Carolina Wren");
    assert_eq!(labels[&sha256_hex(&jay)].0, "Blue Jay");
    assert_eq!(labels[&sha256_hex(&recordings[0].1)].0, "Robin");
    assert!(labels.values().all(|(_, source)| source == "folder"));

    // One message per task.
    let messages = drain(&env).await;
    assert_eq!(messages.len(), 4);
    let ids: HashSet<Uuid> = messages.iter().map(|m| m.task_id).collect();
    assert_eq!(ids, rows.iter().map(|r| r.id).collect());
    assert!(messages.iter().all(|m| m.job_id == job));

    // The same command again: same job, nothing new.
    let again = ingest(&services, &opts).await.unwrap();
    assert_eq!(again.job_id, job);
    assert!(again.resumed);
    assert_eq!(again.accepted, 0, "{}", again.to_text());
    assert_eq!(again.already_done, 4);
    assert_eq!(again.rejected, 5);
    assert_eq!(again.republished, 0);
    assert_eq!(tasks(&env, job).await.len(), 4);
    assert_eq!(rejections(&env, job).await.len(), 5);
    assert_eq!(count(&env, "SELECT count(*) FROM jobs").await, 1);
    assert_eq!(count(&env, "SELECT count(*) FROM labels").await, 4);
    assert!(drain(&env).await.is_empty(), "a re-run published messages");
    let (accepted, submitted): (i32, bool) =
        sqlx::query_as("SELECT files_accepted, submitted_at IS NOT NULL FROM jobs WHERE id = $1")
            .bind(job)
            .fetch_one(&env.pool)
            .await
            .unwrap();
    assert_eq!((accepted, submitted), (4, true));

    // A run that died after creating a task but before its confirm: the
    // next run publishes exactly that task.
    let lost = rows[1].id;
    sqlx::query("UPDATE tasks SET queued_at = NULL WHERE id = $1")
        .bind(lost)
        .execute(&env.pool)
        .await
        .unwrap();
    let resumed = ingest(&services, &opts).await.unwrap();
    assert_eq!(resumed.republished, 1);
    assert_eq!(resumed.accepted, 0);
    let messages = drain(&env).await;
    assert_eq!(messages.len(), 1);
    assert_eq!(messages[0].task_id, lost);
    assert!(tasks(&env, job).await.iter().all(|t| t.queued));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn same_content_twice_is_one_file_and_one_task_and_csv_labels_apply() {
    let env = TestEnv::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("in");
    let song = wav(2.0, 2500.0, 3500.0);
    let other = wav(4.0, 800.0, 1600.0);
    write(&root.join("one.wav"), &song);
    write(&root.join("copies/one-again.wav"), &song);
    write(&root.join("deep/er/three.wav"), &other);
    let csv = dir.path().join("labels.csv");
    fs::write(
        &csv,
        "Species,path,notes\nRobin,one.wav,first\nWinter Wren,er/three.wav,\n",
    )
    .unwrap();

    let services = services(&env, None).await;
    let mut opts = IngestOptions::new(vec![root.clone()]);
    opts.labels = LabelSource::Csv(csv);
    opts.concurrency = 1;
    let summary = ingest(&services, &opts).await.unwrap();
    assert_eq!(summary.accepted, 2, "{}", summary.to_text());
    assert_eq!(summary.duplicate, 1);
    assert_eq!(summary.rejected, 0);
    assert_eq!(count(&env, "SELECT count(*) FROM audio_files").await, 2);
    let rows = tasks(&env, summary.job_id).await;
    assert_eq!(rows.len(), 2);
    assert_eq!(
        rows.iter()
            .filter(|r| r.file_sha256 == sha256_hex(&song))
            .count(),
        1
    );
    assert_eq!(drain(&env).await.len(), 2);
    let labels: Vec<(String, String, String)> =
        sqlx::query_as("SELECT file_sha256, species, source FROM labels ORDER BY species")
            .fetch_all(&env.pool)
            .await
            .unwrap();
    assert_eq!(
        labels,
        vec![
            (sha256_hex(&song), "Robin".into(), "producer".into()),
            (sha256_hex(&other), "Winter Wren".into(), "producer".into()),
        ]
    );

    // Re-run: the copy is still recognised as a duplicate, nothing is new.
    let again = ingest(&services, &opts).await.unwrap();
    assert_eq!(
        (again.accepted, again.duplicate, again.already_done),
        (0, 1, 2),
        "{}",
        again.to_text()
    );
    assert!(drain(&env).await.is_empty());
}

/// Appends a tar entry with a raw (unchecked) name, as an attacker would.
fn raw_entry<W: Write>(
    tar: &mut tar::Builder<W>,
    name: &str,
    kind: tar::EntryType,
    data: &[u8],
    link: Option<&str>,
) {
    let mut h = tar::Header::new_gnu();
    let old = h.as_old_mut();
    old.name[..name.len()].copy_from_slice(name.as_bytes());
    if let Some(link) = link {
        old.linkname[..link.len()].copy_from_slice(link.as_bytes());
    }
    h.set_entry_type(kind);
    h.set_size(data.len() as u64);
    h.set_mode(0o644);
    h.set_mtime(0);
    h.set_cksum();
    tar.append(&h, data).unwrap();
}

/// Every file and folder under `dir`, relative.
fn listing(dir: &Path) -> Vec<String> {
    fn walk(base: &Path, dir: &Path, out: &mut Vec<String>) {
        for e in fs::read_dir(dir).unwrap().flatten() {
            let p = e.path();
            out.push(p.strip_prefix(base).unwrap().display().to_string());
            if e.file_type().unwrap().is_dir() {
                walk(base, &p, out);
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malicious_archive_entries_are_rejected_and_nothing_is_written_outside_the_temp_area() {
    let env = TestEnv::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let inputs = dir.path().join("inputs");
    let temp = dir.path().join("tmp");
    fs::create_dir_all(&inputs).unwrap();
    fs::create_dir_all(&temp).unwrap();
    const MIB: usize = 1 << 20;

    let a = wav(2.0, 2000.0, 2500.0);
    let b = wav(2.0, 3000.0, 3500.0);
    let evil = wav(2.0, 100.0, 200.0);
    let tar_path = inputs.join("evil.tar.gz");
    {
        let gz = flate2::write::GzEncoder::new(
            fs::File::create(&tar_path).unwrap(),
            flate2::Compression::default(),
        );
        let mut t = tar::Builder::new(gz);
        use tar::EntryType as T;
        raw_entry(&mut t, "ok/a.wav", T::Regular, &a, None);
        raw_entry(&mut t, "../evil.wav", T::Regular, &evil, None);
        raw_entry(&mut t, "/abs.wav", T::Regular, &evil, None);
        raw_entry(&mut t, "passwd.wav", T::Symlink, b"", Some("/etc/passwd"));
        raw_entry(&mut t, "hard.wav", T::Link, b"", Some("ok/a.wav"));
        raw_entry(&mut t, "dev.wav", T::Char, b"", None);
        // Over the 1 MiB file limit (zeros: cheap to skip).
        raw_entry(
            &mut t,
            "big.wav",
            T::Regular,
            &vec![0u8; MIB + MIB / 4],
            None,
        );
        raw_entry(&mut t, "ok/b.wav", T::Regular, &b, None);
        // Under the file limit, but past the archive's expansion cap.
        raw_entry(&mut t, "bomb.wav", T::Regular, &vec![0u8; 900 * 1024], None);
        t.into_inner().unwrap().finish().unwrap();
    }

    let c = wav(2.0, 4000.0, 4500.0);
    let d = wav(2.0, 5000.0, 5500.0);
    let zip_path = inputs.join("evil.zip");
    {
        use zip::CompressionMethod;
        use zip::write::SimpleFileOptions;
        let deflate = SimpleFileOptions::default().compression_method(CompressionMethod::Deflated);
        let stored = SimpleFileOptions::default().compression_method(CompressionMethod::Stored);
        let mut z = zip::ZipWriter::new(fs::File::create(&zip_path).unwrap());
        z.start_file("ok/c.wav", deflate).unwrap();
        z.write_all(&c).unwrap();
        z.start_file("../evil.wav", deflate).unwrap();
        z.write_all(&evil).unwrap();
        z.start_file("/abs.wav", deflate).unwrap();
        z.write_all(&evil).unwrap();
        z.add_symlink("link.wav", "/etc/passwd", deflate).unwrap();
        // About 1000:1.
        z.start_file("bomb.wav", deflate).unwrap();
        z.write_all(&vec![0u8; 900 * 1024]).unwrap();
        z.start_file("big.wav", stored).unwrap();
        z.write_all(&noise_wav(30.0, 3)).unwrap();
        z.start_file("ok/d.wav", deflate).unwrap();
        z.write_all(&d).unwrap();
        z.finish().unwrap();
    }

    let services = services(&env, Some(MIB as u64)).await;
    let mut opts = IngestOptions::new(vec![tar_path.clone(), zip_path.clone()]);
    opts.temp_dir = Some(temp.clone());
    opts.max_archive_bytes = Some(2 * MIB as u64);
    // Small enough that the recordings go through temporary files.
    opts.memory_entry_bytes = 64 * 1024;
    let before = listing(dir.path());
    let summary = ingest(&services, &opts).await.unwrap();
    assert_eq!(summary.accepted, 4, "{}", summary.to_text());

    let job = summary.job_id;
    let rejected = rejections(&env, job).await;
    let tar = |name: &str| format!("evil.tar.gz!/{name}");
    let zip = |name: &str| format!("evil.zip!/{name}");
    for (path, kind) in [
        (tar("../evil.wav"), "unsafe-path"),
        (tar("/abs.wav"), "unsafe-path"),
        (tar("passwd.wav"), "link"),
        (tar("hard.wav"), "link"),
        (tar("dev.wav"), "special-file"),
        (tar("big.wav"), "too-large"),
        (tar("bomb.wav"), "expansion-limit"),
        (zip("../evil.wav"), "unsafe-path"),
        (zip("/abs.wav"), "unsafe-path"),
        (zip("link.wav"), "link"),
        (zip("bomb.wav"), "expansion-limit"),
        (zip("big.wav"), "too-large"),
    ] {
        let reason = reason_for(&rejected, &path);
        assert!(reason.starts_with(&format!("{kind}: ")), "{path}: {reason}");
    }
    assert_eq!(rejected.len(), 12, "{rejected:#?}");
    assert_eq!(summary.rejected, 12);

    let found: HashSet<String> = tasks(&env, job)
        .await
        .into_iter()
        .map(|t| t.file_sha256)
        .collect();
    let expected: HashSet<String> = [&a, &b, &c, &d].iter().map(|x| sha256_hex(x)).collect();
    assert_eq!(found, expected);
    assert!(
        env.store
            .head(&audio_key(&sha256_hex(&evil)))
            .await
            .unwrap()
            .is_none()
    );
    assert_eq!(drain(&env).await.len(), 4);

    // Nothing was extracted anywhere: the test folder holds exactly what it
    // held before (the private temp directory is gone), and no entry name
    // reached the file system.
    assert_eq!(listing(dir.path()), before);
    assert!(fs::read_dir(&temp).unwrap().next().is_none());
    for escaped in [
        dir.path().join("evil.wav"),
        inputs.join("evil.wav"),
        PathBuf::from("/abs.wav"),
    ] {
        assert!(!escaped.exists(), "{} was written", escaped.display());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_mid_ingest_then_rerun_finishes_the_job_without_duplicates() {
    let env = TestEnv::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("many");
    const FILES: usize = 150;
    let mut shas = HashSet::new();
    for i in 0..FILES {
        let bytes = wav(1.0, 300.0 + i as f64 * 37.0, 6000.0 - i as f64 * 11.0);
        shas.insert(sha256_hex(&bytes));
        write(&root.join(format!("site{}/r{i:03}.wav", i % 3)), &bytes);
    }
    assert_eq!(shas.len(), FILES);
    let bin = env!("CARGO_BIN_EXE_birdsong-producer");
    let command = || {
        let mut c = std::process::Command::new(bin);
        c.envs(&env.vars)
            .env("BIRDSONG_LOG", "warn")
            .args([
                "ingest",
                "--concurrency",
                "1",
                "--progress",
                "none",
                "--json",
            ])
            .arg(&root)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        c
    };

    let mut child = command().spawn().unwrap();
    let started = Instant::now();
    loop {
        let queued = count(
            &env,
            "SELECT count(*) FROM tasks WHERE queued_at IS NOT NULL",
        )
        .await;
        if queued >= 5 {
            break;
        }
        if let Some(status) = child.try_wait().unwrap() {
            let out = child.wait_with_output().unwrap();
            panic!(
                "the producer exited ({status}) before it could be killed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "no task was queued"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(
        child.try_wait().unwrap().is_none(),
        "the producer finished before the kill; the test needs more files"
    );
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let partial = count(&env, "SELECT count(*) FROM tasks").await;
    assert!(
        partial < FILES as i64,
        "all {partial} tasks existed at the kill"
    );

    let out = command().output().unwrap();
    assert!(
        out.status.success(),
        "re-run failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(summary["resumed"], true);
    let already = summary["already_done"].as_u64().unwrap();
    assert!(already >= 5, "{summary}");
    assert_eq!(
        summary["accepted"].as_u64().unwrap() + already,
        FILES as u64
    );
    assert_eq!(summary["rejected"], 0);

    // Every file exactly once, every task queued, every task has a message.
    let job: Uuid = summary["job_id"].as_str().unwrap().parse().unwrap();
    let rows = tasks(&env, job).await;
    assert_eq!(rows.len(), FILES);
    assert_eq!(
        rows.iter()
            .map(|r| r.file_sha256.clone())
            .collect::<HashSet<_>>(),
        shas
    );
    assert!(rows.iter().all(|r| r.queued && r.status == "queued"));
    assert_eq!(
        count(&env, "SELECT count(*) FROM audio_files").await,
        FILES as i64
    );
    assert_eq!(count(&env, "SELECT count(*) FROM jobs").await, 1);
    let messages = drain(&env).await;
    assert!(messages.len() >= rows.len());
    let published: HashSet<Uuid> = messages.iter().map(|m| m.task_id).collect();
    let missing: Vec<_> = rows.iter().filter(|r| !published.contains(&r.id)).collect();
    assert!(missing.is_empty(), "tasks without a message: {missing:?}");
}

/// Real recordings (MP3, mono and stereo, 44.1 and 48 kHz) with the
/// dataset's own manifest as the labels file: its paths carry the species
/// folder, the ingested root does not, so rows match by path suffix.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_recordings_with_the_manifest_as_labels() {
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/data/xc3");
    let folder = data.join("Scissor-tailed_Flycatcher");
    assert!(
        folder.is_dir(),
        "the shared recordings are missing at {}",
        folder.display()
    );
    let files: Vec<PathBuf> = fs::read_dir(&folder)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    let env = TestEnv::start().await.unwrap();
    let services = services(&env, None).await;
    let mut opts = IngestOptions::new(vec![folder.clone()]);
    opts.labels = LabelSource::Csv(data.join("manifest.csv"));
    opts.progress = birdsong_ingest::ProgressMode::Log {
        interval: Duration::from_millis(200),
    };
    let summary = ingest(&services, &opts).await.unwrap();
    assert_eq!(
        summary.accepted,
        files.len() as u64,
        "{}",
        summary.to_text()
    );
    assert_eq!(summary.rejected, 0);
    assert_eq!(summary.labelled, files.len() as u64);
    let species: Vec<(String, i64)> =
        sqlx::query_as("SELECT species || '/' || source, count(*) FROM labels GROUP BY 1")
            .fetch_all(&env.pool)
            .await
            .unwrap();
    assert_eq!(
        species,
        vec![(
            "Scissor-tailed Flycatcher/producer".to_string(),
            files.len() as i64
        )]
    );
    let rows = tasks(&env, summary.job_id).await;
    assert_eq!(rows.len(), files.len());
    assert!(rows.iter().all(|r| r.queued));
    assert_eq!(drain(&env).await.len(), files.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recorder_headers_and_the_time_zone_date_the_recordings() {
    use birdsong_testkit::audio::{with_audiomoth_header, with_guano};
    let env = TestEnv::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let folder = dir.path().join("card");
    // An AudioMoth set to UTC+1, a Song Meter with GUANO (place, device), and
    // a recording dated by its name only. Each a distinct recording.
    let moth = with_audiomoth_header(
        &wav(1.0, 2000.0, 3000.0),
        "Recorded at 05:30:00 01/05/2024 (UTC+1) by AudioMoth 24F319055FDF1D8D at medium gain while battery was 4.2V and temperature was 15.3C.",
        "AudioMoth 24F319055FDF1D8D",
    );
    let song_meter = with_guano(
        &wav(1.0, 3000.0, 1000.0),
        "GUANO|Version:1.0\nMake:Wildlife Acoustics, Inc.\nModel:Song Meter Mini\nSerial:SMA00646\nTimestamp:2020-10-17 13:05:00+1:00\nLoc Position:54.75656 -1.59106\n",
    );
    let named = wav(1.0, 500.0, 4000.0);
    write(&folder.join("moth/20240501_053000.WAV"), &moth);
    write(&folder.join("sm/SMA00646_20201017_130500.wav"), &song_meter);
    write(&folder.join("sm/SMM01234_20240701_053000.wav"), &named);
    // An AudioMoth file inside an archive (read from memory, not from disk).
    let archive = dir.path().join("card2.tar");
    let moth2 = with_audiomoth_header(
        &wav(1.0, 1200.0, 2400.0),
        "Recorded at 21:00:00 02/05/2024 (UTC-5) during deployment 1A2B3C4D5E6F7A8B at medium gain while battery was 4.5V and temperature was 12.3C.",
        "AudioMoth 248D9B04645707D7",
    );
    {
        let mut tar = tar::Builder::new(fs::File::create(&archive).unwrap());
        let mut h = tar::Header::new_gnu();
        h.set_size(moth2.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        tar.append_data(&mut h, "20240503_020000.WAV", &moth2[..])
            .unwrap();
        tar.finish().unwrap();
    }

    let services = services(&env, None).await;
    let mut opts = IngestOptions::new(vec![folder.clone(), archive.clone()]);
    opts.time_zone = Some("Mars/Olympus_Mons".parse().unwrap());
    let refused = ingest(&services, &opts).await;
    assert!(
        matches!(&refused, Err(birdsong_ingest::IngestError::Options(m)) if m.contains("Mars/Olympus_Mons")),
        "{refused:?}"
    );
    opts.time_zone = Some("Europe/Berlin".parse().unwrap());
    // A filter that cannot be stored is refused before anything is written.
    opts.reporting.min_confidence = Some(2.0);
    let refused = ingest(&services, &opts).await;
    assert!(
        matches!(&refused, Err(birdsong_ingest::IngestError::Options(m)) if m.contains("between 0 and 1")),
        "{refused:?}"
    );
    opts.reporting = birdsong_common::jobs::Reporting {
        species_list: Some(birdsong_common::jobs::Reporting::parse_list(
            "Coereba flaveola_Bananaquit\n",
        )),
        min_confidence: Some(0.7),
    };
    let summary = ingest(&services, &opts).await.unwrap();
    assert_eq!(summary.accepted, 4, "{}", summary.to_text());
    let (list, min): (Option<Vec<String>>, Option<f32>) =
        sqlx::query_as("SELECT species_list, min_confidence FROM jobs")
            .fetch_one(&env.pool)
            .await
            .unwrap();
    assert_eq!(list, Some(vec!["Bananaquit".to_string()]));
    assert_eq!(min, Some(0.7));

    type Row = (
        String,
        Option<String>,
        Option<i32>,
        Option<String>,
        Option<f64>,
        Option<String>,
    );
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT sha256, to_char(recorded_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS'),
                utc_offset_minutes, recorded_at_source, latitude, device_serial
         FROM audio_files",
    )
    .fetch_all(&env.pool)
    .await
    .unwrap();
    let row = |bytes: &[u8]| {
        let sha = sha256_hex(bytes);
        let r = rows.iter().find(|r| r.0 == sha).unwrap();
        (r.1.clone(), r.2, r.3.clone(), r.4, r.5.clone())
    };
    let s = |v: &str| Some(v.to_string());
    // Headers name their zone, which beats the ingest's.
    assert_eq!(
        row(&moth),
        (
            s("2024-05-01T04:30:00"),
            Some(60),
            s("audiomoth"),
            None,
            s("24F319055FDF1D8D")
        )
    );
    assert_eq!(
        row(&moth2),
        (
            s("2024-05-03T02:00:00"),
            Some(-300),
            s("audiomoth"),
            None,
            s("248D9B04645707D7")
        )
    );
    assert_eq!(
        row(&song_meter),
        (
            s("2020-10-17T12:05:00"),
            Some(60),
            s("guano"),
            Some(54.75656),
            s("SMA00646")
        )
    );
    // The name is read in the ingest's zone: Berlin in summer is UTC+2.
    assert_eq!(
        row(&named),
        (
            s("2024-07-01T03:30:00"),
            Some(120),
            s("file_name"),
            None,
            None
        )
    );
}
