//! The `host:port` a service URL points at, and the same URL pointed at
//! another address: a worker on a simulated host reaches each service
//! through the forwarder, so its URLs name the forwarder's address with
//! everything else (credentials, database, vhost, query) unchanged.

use anyhow::{Context, bail};

/// Where the authority (`user:pass@host:port`) of `url` starts and ends.
fn authority(url: &str) -> anyhow::Result<(usize, usize)> {
    let start = url
        .find("://")
        .map(|i| i + 3)
        .with_context(|| format!("{} has no scheme://", redacted(url)))?;
    let end = url[start..]
        .find(['/', '?', '#'])
        .map_or(url.len(), |i| start + i);
    Ok((start, end))
}

/// `host:port` of `url`, with `default_port` when it names none. IPv6 hosts
/// keep their brackets.
pub fn host_port(url: &str, default_port: u16) -> anyhow::Result<String> {
    let (start, end) = authority(url)?;
    let auth = &url[start..end];
    let host_port = auth.rsplit_once('@').map_or(auth, |(_, hp)| hp);
    if host_port.is_empty() {
        bail!("{} names no host", redacted(url));
    }
    let has_port = match host_port.rfind(']') {
        Some(close) => host_port[close..].contains(':'),
        None => host_port.contains(':'),
    };
    Ok(if has_port {
        host_port.to_string()
    } else {
        format!("{host_port}:{default_port}")
    })
}

/// `url` with its `host:port` replaced by `address`, credentials kept.
pub fn with_address(url: &str, address: &str) -> anyhow::Result<String> {
    let (start, end) = authority(url)?;
    let auth = &url[start..end];
    let userinfo = auth.rsplit_once('@').map(|(u, _)| u);
    Ok(match userinfo {
        Some(u) => format!("{}{u}@{address}{}", &url[..start], &url[end..]),
        None => format!("{}{address}{}", &url[..start], &url[end..]),
    })
}

/// The default port of a URL's scheme, for URLs that name none.
pub fn default_port(url: &str) -> u16 {
    match url.split_once("://").map(|(s, _)| s) {
        Some("postgres" | "postgresql") => 5432,
        Some("amqp") => 5672,
        Some("amqps") => 5671,
        Some("https") => 443,
        _ => 80,
    }
}

/// `url` without its password, for error messages.
fn redacted(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => format!("{}***{}", &url[..s + 3], &url[at..]),
        _ => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_and_port_are_read() -> anyhow::Result<()> {
        let pg = "postgres://birdsong:p%40ss@127.0.0.1:5432/birdsong_test_1?sslmode=disable";
        assert_eq!(host_port(pg, 5432)?, "127.0.0.1:5432");
        assert_eq!(
            host_port("amqp://guest:guest@localhost/%2f", 5672)?,
            "localhost:5672"
        );
        assert_eq!(host_port("http://127.0.0.1:39123", 80)?, "127.0.0.1:39123");
        assert_eq!(host_port("postgres://[::1]/db", 5432)?, "[::1]:5432");
        assert_eq!(host_port("postgres://u@[::1]:6543/db", 5432)?, "[::1]:6543");
        assert!(host_port("postgres:///db", 5432).is_err());
        assert!(host_port("127.0.0.1:5432", 5432).is_err());
        Ok(())
    }

    #[test]
    fn only_the_address_changes() -> anyhow::Result<()> {
        assert_eq!(
            with_address(
                "postgres://birdsong:se@cret@127.0.0.1:5432/db?sslmode=disable",
                "10.203.3.1:40001"
            )?,
            "postgres://birdsong:se@cret@10.203.3.1:40001/db?sslmode=disable"
        );
        assert_eq!(
            with_address("amqp://guest:guest@127.0.0.1:5672/%2f", "10.203.0.1:1")?,
            "amqp://guest:guest@10.203.0.1:1/%2f"
        );
        assert_eq!(
            with_address("http://127.0.0.1:39123", "10.203.0.1:2")?,
            "http://10.203.0.1:2"
        );
        Ok(())
    }

    #[test]
    fn default_ports_follow_the_scheme() {
        assert_eq!(default_port("postgresql://h/db"), 5432);
        assert_eq!(default_port("amqps://h"), 5671);
        assert_eq!(default_port("https://s3.amazonaws.com"), 443);
        assert_eq!(default_port("http://h"), 80);
    }

    #[test]
    fn passwords_stay_out_of_errors() {
        assert_eq!(redacted("postgres://u:secret@h/db"), "postgres://***@h/db");
    }
}
