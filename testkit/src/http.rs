//! A bare HTTP/1.1 GET for probing the health endpoints of the roles that
//! have no client of their own in their tests.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A free loopback address for a server a test starts (bound, then
/// released: a test that races another for it fails loudly on bind).
pub fn free_addr() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free loopback port")
}

/// `GET path` on `addr`: the status and the body, or `None` if nothing
/// answers.
pub async fn get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    let mut stream =
        tokio::time::timeout(Duration::from_secs(5), tokio::net::TcpStream::connect(addr))
            .await
            .ok()?
            .ok()?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.ok()?;
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut raw))
        .await
        .ok()?
        .ok()?;
    let text = String::from_utf8_lossy(&raw);
    let status = text.split_whitespace().nth(1)?.parse().ok()?;
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_string())?;
    Some((status, body))
}

/// Polls `GET path` until `done(status, body)` holds; the last answer
/// either way.
pub async fn wait_for(
    addr: SocketAddr,
    path: &str,
    limit: Duration,
    done: impl Fn(u16, &str) -> bool,
) -> Option<(u16, String)> {
    let start = Instant::now();
    loop {
        let answer = get(addr, path).await;
        if let Some((status, body)) = &answer
            && done(*status, body)
        {
            return answer;
        }
        if start.elapsed() > limit {
            return answer;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
