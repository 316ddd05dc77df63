//! Results and the Markdown table they are printed as.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::hosts::cgroup::Throttling;
use crate::tasks::TaskStats;

/// One timed run.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Measurement {
    pub files: usize,
    pub failed: usize,
    pub audio_s: f64,
    pub wall_s: f64,
    /// Enqueue-to-result latency percentiles (distributed runs only).
    pub latency_p50_s: Option<f64>,
    pub latency_p95_s: Option<f64>,
    /// From the producer's last confirmed message to the last result.
    pub drain_s: Option<f64>,
    /// Busy fraction of all the machine's cores over the run.
    pub cpu_busy: Option<f64>,
    /// CPU seconds used during the run, per role (distributed runs only).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub cpu_by_role: BTreeMap<String, f64>,
    /// `(seconds since start, messages ready in the classify queue)`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub queue_depth: Vec<(f64, u32)>,
    /// Seconds the producer took to ingest the corpus: alone, before the
    /// workers start (backlog), or while they consume (streaming).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ingest_s: Option<f64>,
    /// CPU quota of each worker in cores (simulated hosts only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpu_quota: Option<f64>,
    /// CFS throttling of the workers' CPU groups, summed (simulated hosts).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub throttling: Option<Throttling>,
    /// CPU seconds of the worker processes from the moment all of them
    /// consume to the end of the run (their start-up left out).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub worker_cpu_s: Option<f64>,
    /// How the workers shared the work, from the task rows.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tasks: Option<TaskStats>,
}

impl Measurement {
    pub fn files_per_s(&self) -> f64 {
        self.files as f64 / self.wall_s.max(1e-9)
    }
    pub fn audio_per_s(&self) -> f64 {
        self.audio_s / self.wall_s.max(1e-9)
    }
}

/// A row of the table.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub corpus: String,
    pub path: String,
    pub workers: Option<usize>,
    pub threads: usize,
    pub measurement: Measurement,
    /// Throughput relative to the in-process run of the same corpus.
    pub ratio: Option<f64>,
    /// Throughput per worker CPU thread relative to one worker's, end-to-end
    /// runs only.
    pub efficiency: Option<f64>,
}

pub fn markdown(rows: &[Row]) -> String {
    let mut out = String::from(
        "| corpus | path | workers × threads | files | audio s | wall s | files/s | audio s/s | p50 / p95 latency s | drain s | CPU busy | vs in-process | scaling efficiency |\n\
         |---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for r in rows {
        let m = &r.measurement;
        let workers = match r.workers {
            Some(w) => format!("{w} × {}", r.threads),
            None => format!("— × {}", r.threads),
        };
        let latency = match (m.latency_p50_s, m.latency_p95_s) {
            (Some(a), Some(b)) => format!("{a:.2} / {b:.2}"),
            _ => "—".into(),
        };
        let ratio = r
            .ratio
            .map_or("1.00 (baseline)".into(), |x| format!("{x:.2}"));
        let opt = |v: Option<f64>, f: fn(f64) -> String| v.map_or("—".into(), f);
        let drain = opt(m.drain_s, |x| format!("{x:.2}"));
        let cpu = opt(m.cpu_busy, |x| format!("{:.0} %", x * 100.0));
        let efficiency = opt(r.efficiency, |x| format!("{x:.2}"));
        out.push_str(&format!(
            "| {} | {} | {} | {} | {:.0} | {:.2} | {:.1} | {:.0} | {} | {} | {} | {} | {} |\n",
            r.corpus,
            r.path,
            workers,
            m.files,
            m.audio_s,
            m.wall_s,
            m.files_per_s(),
            m.audio_per_s(),
            latency,
            drain,
            cpu,
            ratio,
            efficiency
        ));
    }
    out
}

/// The roles CPU time is charged to, in table order; the forwarder (the
/// simulated hosts' network, see `forward`) only appears when a run had one.
const ROLES: [&str; 5] = [
    "workers",
    "PostgreSQL",
    "RabbitMQ",
    "producer + S3 server",
    crate::sampler::FORWARDER,
];

/// Where the CPU went: milliseconds of CPU per file for each role, and the
/// workers' own CPU per second of audio against the in-process run's. The
/// last column isolates what the worker's queue, object-store and database
/// handling costs from what co-located services take from it.
pub fn cpu_markdown(rows: &[Row]) -> String {
    let forwarded = rows.iter().any(|r| {
        r.measurement
            .cpu_by_role
            .contains_key(crate::sampler::FORWARDER)
    });
    let roles = if forwarded {
        &ROLES[..]
    } else {
        &ROLES[..ROLES.len() - 1]
    };
    let mut out = format!(
        "| corpus | path | workers × threads | CPU ms per file: {} | all | worker CPU per audio s vs in-process |\n\
         |---|---|---|{}---:|---:|\n",
        roles.join(" | "),
        "---:|".repeat(roles.len())
    );
    let mut baseline: BTreeMap<&str, f64> = BTreeMap::new();
    for r in rows {
        let m = &r.measurement;
        let per_file = |s: f64| 1000.0 * s / (m.files.max(1) as f64);
        if let Some(cpu) = m.cpu_by_role.get("in-process") {
            baseline.insert(r.corpus.as_str(), cpu / m.audio_s.max(1e-9));
            out.push_str(&format!(
                "| {} | in-process | — × {} | {:.1} | {}{:.1} | 1.00 (baseline) |\n",
                r.corpus,
                r.threads,
                per_file(*cpu),
                "— | ".repeat(roles.len() - 1),
                per_file(*cpu)
            ));
            continue;
        }
        if m.cpu_by_role.is_empty() {
            continue;
        }
        let cells: Vec<String> = roles
            .iter()
            .map(|role| {
                format!(
                    "{:.1}",
                    per_file(m.cpu_by_role.get(*role).copied().unwrap_or(0.0))
                )
            })
            .collect();
        let all = per_file(m.cpu_by_role.values().sum());
        let workers_cpu = m.cpu_by_role.get("workers").copied().unwrap_or(0.0);
        let versus = baseline.get(r.corpus.as_str()).map_or("—".into(), |base| {
            format!("{:.2}", (workers_cpu / m.audio_s.max(1e-9)) / base)
        });
        out.push_str(&format!(
            "| {} | {} | {} × {} | {} | {:.1} | {} |\n",
            r.corpus,
            r.path,
            r.workers.unwrap_or(0),
            r.threads,
            cells.join(" | "),
            all,
            versus
        ));
    }
    out
}

/// Where the workers' time went on simulated hosts: throughput per worker
/// is the share of its quota a worker used times the audio it classifies
/// per CPU second, so the efficiency against one worker is the ratio of the
/// quota used times the inverse ratio of the CPU per audio second. The
/// other columns say why quota went unused: the tail (workers done while
/// others still hold tasks), a queue the producer could not keep full.
pub fn hosts_markdown(rows: &[Row]) -> String {
    let mut out = String::from(
        "| corpus | path | workers | audio s/s | efficiency | quota used | worker CPU per audio s vs 1 worker | throttled periods | start idle | tail idle | last claim → end s | audio s of last task | producer audio s/s |\n\
         |---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    let mut single: BTreeMap<(&str, &str), f64> = BTreeMap::new();
    for r in rows {
        let (Some(w), m) = (r.workers, &r.measurement) else {
            continue;
        };
        let per_audio = m.worker_cpu_s.map(|c| c / m.audio_s.max(1e-9));
        if w == 1
            && let Some(p) = per_audio
        {
            single.insert((r.corpus.as_str(), r.path.as_str()), p);
        }
        let opt = |v: Option<f64>, f: &dyn Fn(f64) -> String| v.map_or("—".into(), f);
        let used = match (m.worker_cpu_s, m.cpu_quota) {
            (Some(cpu), Some(q)) => Some(cpu / (w as f64 * q * m.wall_s.max(1e-9))),
            _ => None,
        };
        let versus = per_audio.and_then(|p| {
            single
                .get(&(r.corpus.as_str(), r.path.as_str()))
                .map(|one| p / one)
        });
        let throttled = m
            .throttling
            .filter(|t| t.periods > 0)
            .map(|t| t.throttled_periods as f64 / t.periods as f64);
        let tasks = m.tasks.as_ref();
        out.push_str(&format!(
            "| {} | {} | {} | {:.0} | {} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
            r.corpus,
            r.path,
            w,
            m.audio_per_s(),
            opt(r.efficiency, &|x| format!("{x:.2}")),
            opt(used, &|x| format!("{:.0} %", x * 100.0)),
            opt(versus, &|x| format!("{x:.2}")),
            opt(throttled, &|x| format!("{:.0} %", x * 100.0)),
            opt(tasks.map(|t| t.start_idle), &|x| format!(
                "{:.0} %",
                x * 100.0
            )),
            opt(tasks.map(|t| t.tail_idle), &|x| format!(
                "{:.0} %",
                x * 100.0
            )),
            opt(tasks.map(|t| t.after_last_claim_s), &|x| format!("{x:.1}")),
            opt(tasks.map(|t| t.last_task_audio_s), &|x| format!("{x:.0}")),
            opt(m.ingest_s.map(|s| m.audio_s / s.max(1e-9)), &|x| format!(
                "{x:.0}"
            )),
        ));
    }
    out
}

/// One line saying what the numbers were measured on.
pub fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mem_gib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("MemTotal"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map_or("?".into(), |kb| format!("{:.0}", kb / 1024.0 / 1024.0));
    let s3 = match std::env::var("BIRDSONG_TEST_S3_ENDPOINT") {
        Ok(endpoint) if !endpoint.is_empty() => format!("the S3 server at {endpoint}"),
        _ => "an in-process S3 server".to_string(),
    };
    format!(
        "Measured on {cores} cores ({cpu}), {mem_gib} GiB RAM, local PostgreSQL and RabbitMQ, {s3}."
    )
}
