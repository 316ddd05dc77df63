//! A TCP proxy a test can break on purpose.
//!
//! Fault tests need to take PostgreSQL, RabbitMQ or the object store away
//! from a worker for a while, then give it back, without touching the
//! machine's shared services (other tests use them at the same time). The
//! role under test is pointed at a [`Proxy`] in front of the real service
//! instead; the test then switches the proxy between three modes:
//!
//! * [`Mode::Pass`]: bytes flow both ways, as if the proxy were not there;
//! * [`Mode::Refuse`]: every open connection is closed at once and new ones
//!   are closed as soon as they are accepted (a service restart, a network
//!   cut);
//! * [`Mode::Hang`]: open connections are closed and new ones are accepted
//!   but nothing is ever forwarded or answered (a stuck server: only the
//!   client's timeouts get it out).
//!
//! Going back to `Pass` lets new connections through; clients must
//! reconnect on their own, which is the behaviour under test.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// What the proxy does with traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Pass,
    Refuse,
    Hang,
}

/// A running proxy; stops when dropped.
pub struct Proxy {
    addr: SocketAddr,
    mode: watch::Sender<Mode>,
    accept: JoinHandle<()>,
}

impl Proxy {
    /// Listens on a free local port and forwards to `upstream`.
    pub async fn start(upstream: SocketAddr) -> io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let (mode, watcher) = watch::channel(Mode::Pass);
        let watcher = Arc::new(watcher);
        let accept = tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    continue;
                };
                let mut modes = (*watcher).clone();
                tokio::spawn(async move {
                    let current = *modes.borrow_and_update();
                    match current {
                        Mode::Refuse => drop(client),
                        Mode::Hang => {
                            // Hold the socket open and silent until the mode
                            // changes, then drop it.
                            let _ = modes.changed().await;
                            drop(client);
                        }
                        Mode::Pass => forward(client, upstream, modes).await,
                    }
                });
            }
        });
        Ok(Self { addr, mode, accept })
    }

    /// The address to give the role under test instead of the service's.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Switches mode; leaving `Pass` closes every forwarded connection.
    pub fn set(&self, mode: Mode) {
        self.mode.send_replace(mode);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accept.abort();
        // Ends every forwarding task too.
        self.mode.send_replace(Mode::Refuse);
    }
}

async fn forward(mut client: TcpStream, upstream: SocketAddr, mut modes: watch::Receiver<Mode>) {
    let Ok(mut server) = TcpStream::connect(upstream).await else {
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    tokio::select! {
        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
        _ = async {
            while modes.changed().await.is_ok() {
                if *modes.borrow() != Mode::Pass {
                    return;
                }
            }
        } => {}
    }
}

/// Rewrites the `host:port` of a URL (`scheme://[user@]host:port/rest`) to
/// `addr`, so a role can be pointed at a proxy.
pub fn via(url: &str, addr: SocketAddr) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    let userinfo = authority
        .rsplit_once('@')
        .map(|(u, _)| format!("{u}@"))
        .unwrap_or_default();
    format!("{scheme}://{userinfo}{addr}{path}")
}

/// The socket address a URL points at (resolving `localhost`).
pub fn target(url: &str) -> io::Result<SocketAddr> {
    use std::net::ToSocketAddrs;
    let bad = || {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("no host:port in {url}"),
        )
    };
    let rest = url.split_once("://").map(|(_, r)| r).ok_or_else(bad)?;
    let authority = rest.split('/').next().ok_or_else(bad)?;
    let hostport = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let default_port = if url.starts_with("postgres") {
        5432
    } else if url.starts_with("amqp") {
        5672
    } else {
        80
    };
    let with_port = if hostport.contains(':') {
        hostport.to_string()
    } else {
        format!("{hostport}:{default_port}")
    };
    with_port.to_socket_addrs()?.next().ok_or_else(bad)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_rewritten_to_the_proxy() {
        let addr: SocketAddr = "127.0.0.1:4000".parse().unwrap();
        assert_eq!(
            via("postgres://postgres@127.0.0.1:5432/db_1", addr),
            "postgres://postgres@127.0.0.1:4000/db_1"
        );
        assert_eq!(
            via("amqp://guest:guest@localhost:5672/%2f", addr),
            "amqp://guest:guest@127.0.0.1:4000/%2f"
        );
        assert_eq!(via("http://127.0.0.1:9000", addr), "http://127.0.0.1:4000");
        assert_eq!(
            target("postgres://postgres@127.0.0.1/x").unwrap(),
            "127.0.0.1:5432".parse().unwrap()
        );
    }

    #[tokio::test]
    async fn modes_cut_and_restore_traffic() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        // An echo server behind the proxy.
        let echo = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let echo_addr = echo.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = echo.accept().await {
                tokio::spawn(async move {
                    let (mut r, mut w) = s.split();
                    let _ = tokio::io::copy(&mut r, &mut w).await;
                });
            }
        });
        let proxy = Proxy::start(echo_addr).await.unwrap();
        let mut c = TcpStream::connect(proxy.addr()).await.unwrap();
        c.write_all(b"ping").await.unwrap();
        let mut buf = [0u8; 4];
        c.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"ping");

        proxy.set(Mode::Refuse);
        // The open connection is closed…
        let n = c.read(&mut buf).await.unwrap_or(0);
        assert_eq!(n, 0);
        // …and a new one gets nothing through.
        let mut d = TcpStream::connect(proxy.addr()).await.unwrap();
        let _ = d.write_all(b"ping").await;
        assert_eq!(d.read(&mut buf).await.unwrap_or(0), 0);

        proxy.set(Mode::Pass);
        let mut e = TcpStream::connect(proxy.addr()).await.unwrap();
        e.write_all(b"pong").await.unwrap();
        e.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"pong");
    }
}
