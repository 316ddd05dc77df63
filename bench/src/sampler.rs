//! What the machine and the queue do during a run, sampled.
//!
//! Scaling figures mean little without knowing whether the cores were busy
//! (on 2 cores, 4 workers cannot beat 2) and whether the queue ever ran dry
//! (workers starved by the producer) or only grew (workers behind). A
//! background task samples the classify queue's depth and the machine-wide
//! CPU counters from `/proc/stat` until it is stopped.
//!
//! On one machine the services compete with the workers for the same cores,
//! so the sampler also charges CPU time to roles ([`RoleCpu`]): the workers,
//! PostgreSQL, RabbitMQ, and this process (the producer and the in-process
//! S3 server), and the forwarder's threads in this process to the
//! simulated network. That tells software overhead apart from co-located
//! services.

use std::time::{Duration, Instant};

use lapin::options::QueueDeclareOptions;
use lapin::types::FieldTable;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// Busy and total jiffies over all cores.
fn cpu_jiffies() -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().next()?;
    let fields: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|f| f.parse().ok())
        .collect();
    let total: u64 = fields.iter().sum();
    // idle + iowait
    let idle = fields.get(3).copied().unwrap_or(0) + fields.get(4).copied().unwrap_or(0);
    Some((total - idle, total))
}

/// Kernel clock ticks per second for `/proc/<pid>/stat` times (`USER_HZ`,
/// 100 on every mainstream Linux architecture).
pub const TICKS_PER_S: f64 = 100.0;

/// User + system CPU ticks of one process, from `/proc/<pid>/stat`.
pub fn process_ticks(pid: u32) -> Option<u64> {
    stat_ticks(&format!("/proc/{pid}/stat"))
}

/// User + system CPU ticks from a `stat` file of a process or a thread.
fn stat_ticks(path: &str) -> Option<u64> {
    let stat = std::fs::read_to_string(path).ok()?;
    // The command name (field 2) may contain spaces; fields resume after ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After ')': state is field 3, so utime (14) and stime (15) are at 11, 12.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// The role of this process's forwarder threads: the simulated hosts'
/// network, on the services' side of the machine.
pub const FORWARDER: &str = "forwarder";

/// CPU ticks of each of this process's threads named like the forwarder's.
fn forwarder_threads() -> Vec<(u32, u64)> {
    let Ok(dir) = std::fs::read_dir("/proc/self/task") else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|entry| {
            let tid: u32 = entry.file_name().to_str()?.parse().ok()?;
            let comm = std::fs::read_to_string(entry.path().join("comm")).ok()?;
            if comm.trim() != crate::forward::THREAD_NAME {
                return None;
            }
            Some((tid, stat_ticks(&format!("/proc/self/task/{tid}/stat"))?))
        })
        .collect()
}

fn process_name(pid: u32) -> Option<String> {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .ok()
        .map(|s| s.trim().to_string())
}

/// Which role a process plays in a run.
fn role_of(pid: u32, workers: &[u32]) -> Option<&'static str> {
    if workers.contains(&pid) {
        return Some("workers");
    }
    if pid == std::process::id() {
        return Some("producer + S3 server");
    }
    match process_name(pid)?.as_str() {
        "postgres" => Some("PostgreSQL"),
        "beam.smp" | "erl_child_setup" | "epmd" => Some("RabbitMQ"),
        // The S3 server in a process of its own (`scripts/scale.sh` runs it
        // so, as a deployment would): the same role as in-process.
        "birdsong-s3" => Some("producer + S3 server"),
        _ => None,
    }
}

/// CPU ticks per role at one instant, keyed by pid so that processes that
/// come and go are charged only for what they used in between.
#[derive(Debug, Clone, Default)]
pub struct RoleCpu {
    ticks: std::collections::HashMap<u32, (&'static str, u64)>,
}

impl RoleCpu {
    pub fn snapshot(workers: &[u32]) -> RoleCpu {
        let mut ticks = std::collections::HashMap::new();
        let Ok(dir) = std::fs::read_dir("/proc") else {
            return RoleCpu { ticks };
        };
        for entry in dir.flatten() {
            let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse().ok()) else {
                continue;
            };
            if let (Some(role), Some(t)) = (role_of(pid, workers), process_ticks(pid)) {
                ticks.insert(pid, (role, t));
            }
        }
        // The forwarder shares this process with the producer and the S3
        // server: its threads are charged apart (thread ids never collide
        // with another process's id).
        let forwarder = forwarder_threads();
        let charged: u64 = forwarder.iter().map(|(_, t)| t).sum();
        if let Some((_, own)) = ticks.get_mut(&std::process::id()) {
            *own = own.saturating_sub(charged);
        }
        for (tid, t) in forwarder {
            ticks.insert(tid, (FORWARDER, t));
        }
        RoleCpu { ticks }
    }

    /// CPU seconds per role between `self` and `later`. A process that
    /// started in between is charged all its ticks; one that ended in
    /// between is missed (backends of the pools live for the whole run).
    pub fn seconds_until(&self, later: &RoleCpu) -> std::collections::BTreeMap<String, f64> {
        let mut out = std::collections::BTreeMap::new();
        for (pid, (role, t1)) in &later.ticks {
            let t0 = self.ticks.get(pid).map(|(_, t)| *t).unwrap_or(0);
            *out.entry(role.to_string()).or_insert(0.0) +=
                t1.saturating_sub(t0) as f64 / TICKS_PER_S;
        }
        out
    }
}

/// What a sampler saw.
pub struct Samples {
    pub queue_depth: Vec<(f64, u32)>,
    pub cpu_busy: Option<f64>,
}

/// A running sampler.
pub struct Sampler {
    stop: oneshot::Sender<()>,
    task: JoinHandle<Vec<(f64, u32)>>,
    cpu_start: Option<(u64, u64)>,
}

impl Sampler {
    pub fn start(channel: lapin::Channel, queue: String, every: Duration) -> Sampler {
        let (stop, mut stopped) = oneshot::channel();
        let task = tokio::spawn(async move {
            let started = Instant::now();
            let mut depth = Vec::new();
            loop {
                let passive = QueueDeclareOptions {
                    passive: true,
                    ..QueueDeclareOptions::default()
                };
                if let Ok(q) = channel
                    .queue_declare(queue.as_str().into(), passive, FieldTable::default())
                    .await
                {
                    depth.push((started.elapsed().as_secs_f64(), q.message_count()));
                }
                tokio::select! {
                    _ = tokio::time::sleep(every) => {}
                    _ = &mut stopped => break,
                }
            }
            let _ = channel.close(200, "done".into()).await;
            depth
        });
        Sampler {
            stop,
            task,
            cpu_start: cpu_jiffies(),
        }
    }

    pub async fn finish(self) -> Samples {
        let cpu_end = cpu_jiffies();
        let _ = self.stop.send(());
        let queue_depth = self.task.await.unwrap_or_default();
        let cpu_busy = match (self.cpu_start, cpu_end) {
            (Some((b0, t0)), Some((b1, t1))) if t1 > t0 => {
                Some((b1 - b0) as f64 / (t1 - t0) as f64)
            }
            _ => None,
        };
        Samples {
            queue_depth,
            cpu_busy,
        }
    }
}
