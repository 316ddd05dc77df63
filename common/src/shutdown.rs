//! Turning SIGTERM and SIGINT into a stop flag.
//!
//! Every long-running role stops the same way: the signal flips a `watch`
//! flag, the role stops taking new work and finishes what it holds. One
//! place installs the handlers so that the roles cannot drift apart.

use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::watch;

/// Installs SIGTERM and SIGINT handlers; the returned flag turns true on
/// the first of either, after logging `note`.
pub fn on_signal(note: &'static str) -> std::io::Result<watch::Receiver<bool>> {
    let (stop, stopped) = watch::channel(false);
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    tokio::spawn(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        tracing::info!("{note}");
        let _ = stop.send(true);
    });
    Ok(stopped)
}
