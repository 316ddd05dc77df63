//! A TCP forwarder from the simulated hosts' links to the real services.
//!
//! PostgreSQL, RabbitMQ and the in-process S3 server listen on 127.0.0.1
//! only, and a worker in its own network namespace cannot reach the host's
//! loopback; there is no packet filter to NAT with either. So the bench
//! listens on each link's host-side address, one port per service, and
//! copies bytes both ways to the real address. It can also hold every chunk
//! back by a fixed delay in each direction, a stand-in for `tc netem` on
//! kernels without it (the delay is per chunk read, pipelined: bandwidth is
//! not limited, every round trip gets twice the delay, within the timer's
//! millisecond).
//!
//! The forwarder runs on threads of its own, named [`THREAD_NAME`], so that
//! the sampler can charge its CPU to the network rather than to the
//! producer sharing this process.

use std::net::{SocketAddr, TcpListener as StdListener, ToSocketAddrs};
use std::time::Duration;

use anyhow::Context;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::time::Instant;

/// Name of the forwarder's threads (at most 15 bytes, the kernel's limit).
pub const THREAD_NAME: &str = "bench-forward";

/// Bytes read at once from either side.
const CHUNK: usize = 64 * 1024;

/// Chunks in flight per direction while delayed (bounds memory at
/// `CHUNK × IN_FLIGHT` per connection direction; beyond it the sender waits,
/// as TCP's window would make it).
const IN_FLIGHT: usize = 256;

/// One listening address and where its connections go.
pub struct Route {
    pub listener: StdListener,
    pub target: SocketAddr,
}

impl Route {
    /// Binds `listen` (port 0: any free port) for connections to `target`
    /// (`host:port`, resolved now).
    pub fn bind(listen: SocketAddr, target: &str) -> anyhow::Result<Route> {
        let listener =
            StdListener::bind(listen).with_context(|| format!("listening on {listen}"))?;
        listener
            .set_nonblocking(true)
            .context("making a listener non-blocking")?;
        let target = target
            .to_socket_addrs()
            .with_context(|| format!("resolving {target}"))?
            .next()
            .with_context(|| format!("{target} resolves to no address"))?;
        Ok(Route { listener, target })
    }

    /// The address connections arrive on.
    pub fn local_addr(&self) -> anyhow::Result<SocketAddr> {
        self.listener
            .local_addr()
            .context("reading a listener's address")
    }
}

/// The running forwarder; dropping it closes every listener and connection.
pub struct Forwarder {
    runtime: Option<tokio::runtime::Runtime>,
}

impl Forwarder {
    /// Serves `routes` on a runtime of its own, delaying each direction by
    /// `delay` (zero: plain copies).
    pub fn start(routes: Vec<Route>, delay: Duration) -> anyhow::Result<Forwarder> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name(THREAD_NAME)
            .enable_all()
            .build()
            .context("starting the forwarder's runtime")?;
        for route in routes {
            let target = route.target;
            let listener = {
                let _entered = runtime.enter();
                TcpListener::from_std(route.listener).context("registering a listener")?
            };
            runtime.spawn(async move {
                loop {
                    match listener.accept().await {
                        Ok((inbound, _)) => {
                            // A reset when a worker stops is how connections
                            // end here: nothing to report.
                            tokio::spawn(async move {
                                let _ = connection(inbound, target, delay).await;
                            });
                        }
                        Err(e) => {
                            eprintln!("forwarder: accept failed: {e}");
                            tokio::time::sleep(Duration::from_millis(50)).await;
                        }
                    }
                }
            });
        }
        Ok(Forwarder {
            runtime: Some(runtime),
        })
    }
}

impl Drop for Forwarder {
    fn drop(&mut self) {
        // Dropping a runtime blocks, which is not allowed inside the bench's
        // own runtime; this one is only torn down.
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

async fn connection(
    inbound: TcpStream,
    target: SocketAddr,
    delay: Duration,
) -> std::io::Result<()> {
    let outbound = TcpStream::connect(target).await?;
    // Small messages (queries, acks) must not wait for Nagle on our side.
    inbound.set_nodelay(true)?;
    outbound.set_nodelay(true)?;
    let (in_read, in_write) = inbound.into_split();
    let (out_read, out_write) = outbound.into_split();
    let (a, b) = tokio::join!(
        pipe(in_read, out_write, delay),
        pipe(out_read, in_write, delay)
    );
    a.and(b)
}

/// Copies one direction until end of stream, then half-closes the other
/// side; with a delay, each chunk is written `delay` after it was read.
async fn pipe(
    mut from: OwnedReadHalf,
    mut to: OwnedWriteHalf,
    delay: Duration,
) -> std::io::Result<()> {
    if delay.is_zero() {
        tokio::io::copy(&mut from, &mut to).await?;
        return to.shutdown().await;
    }
    let (tx, mut rx) = mpsc::channel::<(Instant, Vec<u8>)>(IN_FLIGHT);
    let reader = async move {
        let mut buf = vec![0u8; CHUNK];
        loop {
            let n = from.read(&mut buf).await?;
            if n == 0 {
                return Ok(());
            }
            let due = Instant::now() + delay;
            if tx.send((due, buf[..n].to_vec())).await.is_err() {
                // The writer failed; its error is the one reported.
                return Ok(());
            }
        }
    };
    let writer = async move {
        while let Some((due, chunk)) = rx.recv().await {
            tokio::time::sleep_until(due).await;
            to.write_all(&chunk).await?;
        }
        to.shutdown().await
    };
    let (read, write): (std::io::Result<()>, std::io::Result<()>) = tokio::join!(reader, writer);
    read.and(write)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An echo server on loopback, reached through the forwarder.
    async fn echo_through(delay: Duration) -> anyhow::Result<(TcpStream, Forwarder)> {
        let echo = TcpListener::bind("127.0.0.1:0").await?;
        let echo_addr = echo.local_addr()?;
        tokio::spawn(async move {
            while let Ok((mut s, _)) = echo.accept().await {
                tokio::spawn(async move {
                    let (mut r, mut w) = s.split();
                    let _ = tokio::io::copy(&mut r, &mut w).await;
                });
            }
        });
        let route = Route::bind("127.0.0.1:0".parse()?, &echo_addr.to_string())?;
        let front = route.local_addr()?;
        let forwarder = Forwarder::start(vec![route], delay)?;
        let client = TcpStream::connect(front).await?;
        client.set_nodelay(true)?;
        Ok((client, forwarder))
    }

    #[tokio::test]
    async fn bytes_arrive_unchanged_both_ways() -> anyhow::Result<()> {
        let (mut client, _forwarder) = echo_through(Duration::ZERO).await?;
        let sent: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        let (mut r, mut w) = client.split();
        let write = async {
            w.write_all(&sent).await?;
            w.shutdown().await
        };
        let mut back = Vec::new();
        let (written, read) = tokio::join!(write, r.read_to_end(&mut back));
        written?;
        read?;
        assert_eq!(back, sent);
        Ok(())
    }

    #[tokio::test]
    async fn a_delay_is_added_each_way_without_limiting_bandwidth() -> anyhow::Result<()> {
        let delay = Duration::from_millis(20);
        let (mut client, _forwarder) = echo_through(delay).await?;
        // A round trip: twice the delay (the echo server adds none).
        let started = std::time::Instant::now();
        client.write_all(b"ping").await?;
        let mut buf = [0u8; 4];
        client.read_exact(&mut buf).await?;
        let rtt = started.elapsed();
        assert_eq!(&buf, b"ping");
        assert!(rtt >= 2 * delay, "round trip {rtt:?} under twice {delay:?}");
        assert!(
            rtt < 2 * delay + Duration::from_millis(100),
            "round trip {rtt:?}"
        );
        // Many chunks in flight at once: the delay is paid once, not per chunk.
        let sent = vec![7u8; 4 * 1024 * 1024];
        let started = std::time::Instant::now();
        let (mut r, mut w) = client.split();
        let write = async {
            w.write_all(&sent).await?;
            w.shutdown().await
        };
        let mut back = Vec::new();
        let (written, read) = tokio::join!(write, r.read_to_end(&mut back));
        written?;
        read?;
        assert_eq!(back.len(), sent.len());
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "4 MiB took {:?}",
            started.elapsed()
        );
        Ok(())
    }
}
