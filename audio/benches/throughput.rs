//! Throughput of each stage, side by side in one run, in seconds of audio
//! per second of one core's time (the process is single-threaded). Both the
//! thread's on-CPU time (`/proc/thread-self/schedstat`, robust when other
//! builds share the machine) and wall-clock time are reported.
//!
//! ```text
//! cargo bench -p birdsong-audio --bench throughput            # all stages
//! cargo bench -p birdsong-audio --bench throughput -- memory  # 2-hour peak RSS
//! ```
//!
//! Corpora: the 20 reference clips (22.05 kHz WAV and MP3) and the real
//! recordings in `../shared/data/xc3` (MP3, 32-48 kHz, read at bench time).
//! Stages: decode only (symphonia + downmix), decode + resample, one STFT
//! alone per frame (the floor for features), the features from PCM, and
//! the whole path (`analyze_bytes`). Each is the median of `BENCH_RUNS`
//! (default 5) passes over the corpus; files are read into memory first so
//! the disk is not measured.

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::Instant;

use birdsong_audio::decode::Decoder;
use birdsong_audio::resample::MonoResampler;
use birdsong_audio::stft::{N_BINS, Stft, n_frames};
use birdsong_audio::{ANALYSIS_SAMPLE_RATE, FeatureExtractor, WindowConfig, WindowStream};

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// On-CPU time of this thread in seconds (`/proc/thread-self/schedstat`,
/// nanoseconds): per-core cost even when other processes share the cores.
fn thread_cpu_s() -> f64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .map_or(f64::NAN, |ns| ns as f64 * 1e-9)
}

/// Median wall-clock and median on-CPU seconds of `runs` passes.
fn time<F: FnMut()>(runs: usize, mut f: F) -> (f64, f64) {
    f(); // warm-up
    let mut wall = Vec::new();
    let mut cpu = Vec::new();
    for _ in 0..runs {
        let (t, c) = (Instant::now(), thread_cpu_s());
        f();
        cpu.push(thread_cpu_s() - c);
        wall.push(t.elapsed().as_secs_f64());
    }
    (median(wall), median(cpu))
}

fn decode(bytes: &[u8], resample: bool) -> (Vec<f32>, f64) {
    let src = Box::new(std::io::Cursor::new(bytes.to_vec()));
    let mut d = Decoder::open(src).expect("decodable bench file");
    let mut native = Vec::new();
    let mut out = Vec::new();
    let mut rs: Option<MonoResampler> = None;
    while d.next_into(&mut native).expect("decodes") {
        if resample {
            let r = rs.get_or_insert_with(|| {
                MonoResampler::new(d.info().sample_rate, ANALYSIS_SAMPLE_RATE).expect("rate")
            });
            r.push(&native, &mut out).expect("resamples");
        }
        native.clear();
    }
    if let Some(r) = rs.as_mut() {
        r.finish(&mut out).expect("resamples");
    }
    let secs = d.frames_decoded() as f64 / f64::from(d.info().sample_rate);
    (out, secs)
}

struct Row {
    corpus: &'static str,
    stage: &'static str,
    /// (wall, cpu) medians.
    seconds: (f64, f64),
    audio_s: f64,
}

fn peak_rss_kb() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn memory() {
    let before = peak_rss_kb();
    let hours = 2.0;
    let wav = common::SyntheticWav::new(hours * 3600.0, 44_100, 2);
    let t = Instant::now();
    let stream = WindowStream::from_reader(wav, &WindowConfig::default()).expect("opens");
    let mut n = 0usize;
    for w in stream {
        w.expect("window");
        n += 1;
    }
    let el = t.elapsed().as_secs_f64();
    println!(
        "2-hour 44.1 kHz stereo WAV (synthesised on the fly): {n} windows in {el:.1} s wall; \
         peak RSS before {:?} kB, after {:?} kB",
        before,
        peak_rss_kb()
    );
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.iter().any(|a| a == "memory") {
        memory();
        return;
    }
    if args.iter().any(|a| a == "profile") {
        // A features-only loop (400 windows of 5 s) for `perf record`.
        let pcm = common::chirp(5.0, ANALYSIS_SAMPLE_RATE);
        let mut ex = FeatureExtractor::new();
        let (t, c) = (Instant::now(), thread_cpu_s());
        for _ in 0..400 {
            std::hint::black_box(ex.features(&pcm).ok());
        }
        println!(
            "features: {:.0} s audio per CPU s ({:.0} per wall s)",
            2000.0 / (thread_cpu_s() - c),
            2000.0 / t.elapsed().as_secs_f64()
        );
        return;
    }
    let runs: usize = std::env::var("BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5);
    let shared = common::shared_dir();
    let list = |dir: std::path::PathBuf, ext: &str| -> Vec<Vec<u8>> {
        let mut paths: Vec<_> = walk(&dir)
            .into_iter()
            .filter(|p| p.extension().is_some_and(|e| e == ext))
            .collect();
        paths.sort();
        paths
            .iter()
            .map(|p| std::fs::read(p).expect("read"))
            .collect()
    };
    let corpora: Vec<(&'static str, Vec<Vec<u8>>)> = vec![
        (
            "clips WAV 22.05k",
            list(shared.join("reference/clips"), "wav"),
        ),
        (
            "clips MP3 22.05k",
            list(shared.join("reference/clips"), "mp3"),
        ),
        ("xc3 MP3 32-48k", list(shared.join("data/xc3"), "mp3")),
    ];
    let only = std::env::var("BENCH_CORPUS").unwrap_or_default();
    let mut rows = Vec::new();
    for (name, files) in corpora.iter().filter(|c| c.0.contains(only.as_str())) {
        if files.is_empty() {
            eprintln!("{name}: no files, skipped");
            continue;
        }
        let decoded: Vec<(Vec<f32>, f64)> = files.iter().map(|b| decode(b, true)).collect();
        let audio_s: f64 = decoded.iter().map(|d| d.1).sum();
        let t_dec = time(runs, || {
            for b in files {
                std::hint::black_box(decode(b, false));
            }
        });
        rows.push(Row {
            corpus: name,
            stage: "decode only",
            seconds: t_dec,
            audio_s,
        });
        let t_rs = time(runs, || {
            for b in files {
                std::hint::black_box(decode(b, true));
            }
        });
        rows.push(Row {
            corpus: name,
            stage: "decode + resample",
            seconds: t_rs,
            audio_s,
        });
        // Windows of 5 s of the analysis-rate PCM.
        let win = 5 * ANALYSIS_SAMPLE_RATE as usize;
        let mut stft = Stft::new();
        let (mut p, mut m) = (vec![0f32; N_BINS], vec![0f32; N_BINS]);
        let t_stft = time(runs, || {
            for (pcm, _) in &decoded {
                for w in pcm.chunks(win) {
                    for t in 0..n_frames(w.len()) {
                        stft.frame(w, t, &mut p, &mut m);
                    }
                    std::hint::black_box(&p);
                }
            }
        });
        rows.push(Row {
            corpus: name,
            stage: "STFT only (PCM)",
            seconds: t_stft,
            audio_s,
        });
        let mut ex = FeatureExtractor::new();
        let t_feat = time(runs, || {
            for (pcm, _) in &decoded {
                for w in pcm.chunks(win) {
                    std::hint::black_box(ex.features(w).ok());
                }
            }
        });
        rows.push(Row {
            corpus: name,
            stage: "features only (PCM)",
            seconds: t_feat,
            audio_s,
        });
        let cfg = WindowConfig::default();
        let t_all = time(runs, || {
            for b in files {
                std::hint::black_box(birdsong_audio::analyze_bytes(b.clone(), &cfg).ok());
            }
        });
        rows.push(Row {
            corpus: name,
            stage: "whole path",
            seconds: t_all,
            audio_s,
        });
        println!(
            "{name}: {} files, {audio_s:.1} s of audio; CPU-time ratios: whole/decode-only = \
             {:.2}x, whole/(decode+resample) = {:.2}x, features/STFT = {:.2}x",
            files.len(),
            t_all.1 / t_dec.1,
            t_all.1 / t_rs.1,
            t_feat.1 / t_stft.1
        );
    }
    println!(
        "\n| corpus | stage | median CPU s | audio s per CPU s (per core) | median wall s | audio s per wall s |"
    );
    println!("|---|---|---:|---:|---:|---:|");
    for r in &rows {
        println!(
            "| {} | {} | {:.4} | {:.0} | {:.4} | {:.0} |",
            r.corpus,
            r.stage,
            r.seconds.1,
            r.audio_s / r.seconds.1,
            r.seconds.0,
            r.audio_s / r.seconds.0
        );
    }
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(walk(&p));
            } else {
                out.push(p);
            }
        }
    }
    out
}
