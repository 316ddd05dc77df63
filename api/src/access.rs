//! Who may call what, and how often.
//!
//! Keys come from `BIRDSONG_API_KEYS` and are kept only as SHA-256 digests:
//! a presented key is hashed and compared with every stored digest in
//! constant time, so neither the comparison's timing nor a memory dump gives
//! a key away. Writes always need a key; reads need one unless
//! `BIRDSONG_API_OPEN_READS` is true.
//!
//! Requests are rate-limited by a token bucket per caller: per key when a
//! valid key is presented (so a client behind a shared address is not
//! starved by its neighbours), per peer address otherwise.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Instant;

use axum::http::HeaderMap;
use sha2::{Digest, Sha256};

/// The accepted API keys, as digests.
pub struct Keys {
    digests: Vec<[u8; 32]>,
}

impl Keys {
    pub fn new(keys: &[String]) -> Self {
        Self {
            digests: keys
                .iter()
                .map(|k| Sha256::digest(k.as_bytes()).into())
                .collect(),
        }
    }

    /// The index of the key `presented` matches, if any. Every stored digest
    /// is compared in full whatever the outcome.
    pub fn find(&self, presented: &str) -> Option<usize> {
        let digest: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        let mut found = None;
        for (i, stored) in self.digests.iter().enumerate() {
            let diff = stored
                .iter()
                .zip(digest.iter())
                .fold(0u8, |acc, (a, b)| acc | (a ^ b));
            if diff == 0 {
                found = Some(i);
            }
        }
        found
    }
}

/// The key a request presents: `Authorization: Bearer <key>` or
/// `X-Api-Key: <key>`.
pub fn presented_key(headers: &HeaderMap) -> Option<&str> {
    if let Some(v) = headers.get("x-api-key").and_then(|v| v.to_str().ok()) {
        return Some(v.trim());
    }
    let auth = headers
        .get(axum::http::header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    let (scheme, key) = auth.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| key.trim())
}

/// Who a request counts against for rate limiting.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Caller {
    Key(usize),
    Address(IpAddr),
}

struct Bucket {
    tokens: f64,
    at: Instant,
}

/// Token buckets, one per caller.
pub struct RateLimiter {
    per_second: f64,
    burst: f64,
    buckets: Mutex<HashMap<Caller, Bucket>>,
}

/// Buckets kept before idle (full) ones are dropped.
const MAX_BUCKETS: usize = 10_000;

impl RateLimiter {
    pub fn new(per_second: f64, burst: u32) -> Self {
        Self {
            per_second,
            burst: f64::from(burst.max(1)),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes a token for `caller`. `Err` carries the seconds until one is
    /// available.
    pub fn take(&self, caller: Caller) -> Result<(), f64> {
        let now = Instant::now();
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        if buckets.len() >= MAX_BUCKETS {
            let (rate, burst) = (self.per_second, self.burst);
            buckets.retain(|_, b| b.tokens + now.duration_since(b.at).as_secs_f64() * rate < burst);
        }
        let bucket = buckets.entry(caller).or_insert(Bucket {
            tokens: self.burst,
            at: now,
        });
        let refill = now.duration_since(bucket.at).as_secs_f64() * self.per_second;
        bucket.tokens = (bucket.tokens + refill).min(self.burst);
        bucket.at = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            Err((1.0 - bucket.tokens) / self.per_second)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_match_only_exactly() {
        let keys = Keys::new(&["alpha".into(), "beta".into()]);
        assert_eq!(keys.find("beta"), Some(1));
        assert_eq!(keys.find("alpha"), Some(0));
        assert_eq!(keys.find("alph"), None);
        assert_eq!(keys.find(""), None);
        assert_eq!(Keys::new(&[]).find("alpha"), None);
    }

    #[test]
    fn bucket_allows_the_burst_then_refuses() {
        let limiter = RateLimiter::new(0.001, 3);
        let me = Caller::Key(0);
        for _ in 0..3 {
            assert!(limiter.take(me.clone()).is_ok());
        }
        let wait = limiter.take(me.clone()).unwrap_err();
        assert!(wait > 0.0);
        assert!(
            limiter.take(Caller::Key(1)).is_ok(),
            "buckets are per caller"
        );
    }

    #[test]
    fn key_header_forms() {
        let mut h = HeaderMap::new();
        h.insert("authorization", "Bearer  k1 ".parse().unwrap());
        assert_eq!(presented_key(&h), Some("k1"));
        h.insert("x-api-key", "k2".parse().unwrap());
        assert_eq!(presented_key(&h), Some("k2"));
        let mut basic = HeaderMap::new();
        basic.insert("authorization", "Basic abc".parse().unwrap());
        assert_eq!(presented_key(&basic), None);
    }
}
