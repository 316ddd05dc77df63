//! Progress reporting: a bar for a person at a terminal, periodic log lines
//! for everything else (CI logs, `nohup`, a scheduler), nothing for tests.
//!
//! The ingest only bumps atomic counters ([`Stats`]); a separate ticker
//! task turns them into output, so reporting never slows the work down and
//! the work never has to know how it is being reported.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use indicatif::{HumanBytes, ProgressBar, ProgressDrawTarget, ProgressStyle};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// How progress is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProgressMode {
    /// An indicatif bar on stderr.
    Bar,
    /// A log line every `interval`.
    Log { interval: Duration },
    /// Nothing.
    Quiet,
}

impl ProgressMode {
    /// A bar when stderr is a terminal, log lines every 10 s otherwise.
    pub fn auto() -> Self {
        use std::io::IsTerminal;
        if std::io::stderr().is_terminal() {
            ProgressMode::Bar
        } else {
            ProgressMode::Log {
                interval: Duration::from_secs(10),
            }
        }
    }
}

/// Counters shared by the walk, the uploaders and the reporter.
#[derive(Debug, Default)]
pub struct Stats {
    /// Bytes of input (files and archives on disk) to read.
    pub bytes_total: AtomicU64,
    /// Bytes of input read so far.
    pub bytes_done: AtomicU64,
    pub accepted: AtomicU64,
    pub duplicate: AtomicU64,
    pub already_done: AtomicU64,
    pub rejected: AtomicU64,
}

impl Stats {
    fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }

    /// Entries handled so far, whatever became of them.
    pub fn files(&self) -> u64 {
        Self::get(&self.accepted)
            + Self::get(&self.duplicate)
            + Self::get(&self.already_done)
            + Self::get(&self.rejected)
    }

    fn line(&self) -> String {
        format!(
            "{} files: {} accepted, {} duplicate, {} already done, {} rejected",
            self.files(),
            Self::get(&self.accepted),
            Self::get(&self.duplicate),
            Self::get(&self.already_done),
            Self::get(&self.rejected),
        )
    }
}

/// A running reporter; [`Reporter::finish`] stops it.
pub struct Reporter {
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl Reporter {
    /// Starts reporting `stats` in `mode`.
    pub fn start(mode: ProgressMode, stats: Arc<Stats>) -> Self {
        let (stop, mut stopped) = oneshot::channel::<()>();
        let task = match mode {
            ProgressMode::Quiet => None,
            ProgressMode::Bar => Some(tokio::spawn(async move {
                let bar = ProgressBar::with_draw_target(
                    Some(Stats::get(&stats.bytes_total)),
                    ProgressDrawTarget::stderr(),
                );
                if let Ok(style) = ProgressStyle::with_template(
                    "{spinner} [{elapsed_precise}] {wide_bar} {bytes}/{total_bytes} \
                     {binary_bytes_per_sec} ETA {eta}\n  {msg}",
                ) {
                    bar.set_style(style);
                }
                let mut tick = tokio::time::interval(Duration::from_millis(200));
                loop {
                    let done = tokio::select! {
                        _ = tick.tick() => false,
                        _ = &mut stopped => true,
                    };
                    bar.set_length(Stats::get(&stats.bytes_total));
                    bar.set_position(Stats::get(&stats.bytes_done));
                    bar.set_message(stats.line());
                    if done {
                        bar.finish();
                        break;
                    }
                }
            })),
            ProgressMode::Log { interval } => Some(tokio::spawn(async move {
                let started = Instant::now();
                let mut tick = tokio::time::interval(interval);
                tick.tick().await;
                loop {
                    tokio::select! {
                        _ = tick.tick() => {}
                        _ = &mut stopped => break,
                    }
                    let done = Stats::get(&stats.bytes_done);
                    let total = Stats::get(&stats.bytes_total).max(done);
                    let secs = started.elapsed().as_secs_f64().max(0.001);
                    let rate = done as f64 / secs;
                    let eta = if rate > 0.0 {
                        format!("{:.0} s", (total - done) as f64 / rate)
                    } else {
                        "unknown".into()
                    };
                    tracing::info!(
                        "ingest progress: {} of {} ({:.0}%), {}/s, ETA {eta}; {}",
                        HumanBytes(done),
                        HumanBytes(total),
                        if total > 0 {
                            100.0 * done as f64 / total as f64
                        } else {
                            100.0
                        },
                        HumanBytes(rate as u64),
                        stats.line(),
                    );
                }
            })),
        };
        Self {
            stop: Some(stop),
            task,
        }
    }

    /// Draws the final state and stops.
    pub async fn finish(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}
