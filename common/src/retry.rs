//! Waiting for a service that is not there yet, the same way in every role.
//!
//! Roles start before their services (a compose stack, a restarted broker)
//! and lose them while running; each wait doubles up to a ceiling, so a long
//! outage costs a few attempts a minute, and is jittered, so that sixteen
//! workers cut off by one broker restart do not all reconnect in the same
//! millisecond. A stop request never waits out a delay.

use std::hash::{BuildHasher, Hasher};
use std::time::Duration;

use tokio::sync::watch;

/// Exponential back-off with jitter: each delay is drawn between half and all
/// of the current step, and the step doubles up to `max`.
#[derive(Debug, Clone)]
pub struct Backoff {
    first: Duration,
    max: Duration,
    step: Duration,
    state: u64,
}

impl Backoff {
    /// Starts at `first`, never waits more than `max`.
    pub fn new(first: Duration, max: Duration) -> Self {
        // A per-process random seed, without a dependency: the standard
        // library's hasher keys are random.
        let state = std::collections::hash_map::RandomState::new()
            .build_hasher()
            .finish()
            | 1;
        Self {
            first,
            max: max.max(first),
            step: first,
            state,
        }
    }

    /// The next delay to wait.
    pub fn next_delay(&mut self) -> Duration {
        // xorshift64: uniform enough for spreading reconnections.
        self.state ^= self.state << 13;
        self.state ^= self.state >> 7;
        self.state ^= self.state << 17;
        let fraction = (self.state >> 11) as f64 / (1u64 << 53) as f64;
        let delay = self.step.mul_f64(0.5 + 0.5 * fraction);
        self.step = (self.step * 2).min(self.max);
        delay
    }

    /// Back to the first step (after a success that lasted).
    pub fn reset(&mut self) {
        self.step = self.first;
    }

    /// Waits the next delay; `false` if `shutdown` was requested meanwhile.
    pub async fn wait(&mut self, shutdown: &mut watch::Receiver<bool>) -> bool {
        let delay = self.next_delay();
        tokio::select! {
            _ = tokio::time::sleep(delay) => true,
            _ = shutdown.changed() => false,
        }
    }
}

/// First wait of [`until_ready`].
pub const READY_FIRST: Duration = Duration::from_millis(500);
/// Longest wait of [`until_ready`].
pub const READY_MAX: Duration = Duration::from_secs(15);

/// Calls `f` until it succeeds, logging each failure as waiting for `what`;
/// `None` if `shutdown` is requested first.
pub async fn until_ready<T, E, F, Fut>(
    what: &str,
    shutdown: &mut watch::Receiver<bool>,
    mut f: F,
) -> Option<T>
where
    E: std::fmt::Display,
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, E>>,
{
    let mut backoff = Backoff::new(READY_FIRST, READY_MAX);
    loop {
        if *shutdown.borrow() {
            return None;
        }
        match f().await {
            Ok(v) => return Some(v),
            Err(e) => {
                tracing::warn!(error = %e, "waiting for {what}");
                if !backoff.wait(shutdown).await {
                    return None;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_up_to_the_ceiling_with_jitter() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_millis(800));
        let steps = [100u64, 200, 400, 800, 800, 800];
        for step in steps {
            let d = b.next_delay();
            let step = Duration::from_millis(step);
            assert!(d >= step / 2 && d <= step, "{d:?} for step {step:?}");
        }
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(100));
        // Two processes' sequences differ (their seeds are random).
        let mut a = Backoff::new(Duration::from_secs(1), Duration::from_secs(1));
        let mut c = Backoff::new(Duration::from_secs(1), Duration::from_secs(1));
        let (xa, xc): (Vec<_>, Vec<_>) = (0..4).map(|_| (a.next_delay(), c.next_delay())).unzip();
        assert_ne!(xa, xc);
    }

    #[tokio::test]
    async fn a_stop_request_ends_the_wait() {
        let (tx, mut rx) = watch::channel(false);
        let calls = std::sync::atomic::AtomicUsize::new(0);
        let waiting = until_ready("nothing", &mut rx, || {
            calls.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            async { Err::<(), _>("down") }
        });
        let stop = async {
            tokio::time::sleep(Duration::from_millis(50)).await;
            let _ = tx.send(true);
        };
        let (result, ()) = tokio::join!(waiting, stop);
        assert_eq!(result, None);
        assert!(calls.load(std::sync::atomic::Ordering::Relaxed) >= 1);
    }
}
