//! Per-source rate limits on requests that fail authentication.
//!
//! A token bucket per source: an IPv4 address, or an IPv6 /64 (the block one host is usually
//! given, so that a host cannot dodge its limit by rotating addresses inside it). Only
//! failures take tokens: a source whose bucket is empty still has its correctly signed calls
//! served, while its failures answer `RESOURCE_EXHAUSTED` / `ThrottlingException` and cost no
//! audit record of their own. The table is bounded: past [`MAX_SOURCES`] buckets, ones that
//! have refilled (the same as none) are dropped, and if none has, new sources share one
//! bucket.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::Mutex;
use std::time::Instant;

/// Most sources with a bucket of their own.
pub const MAX_SOURCES: usize = 4096;
/// Default sustained rate of failures per source (per second).
pub const DEFAULT_RATE: u32 = 20;
/// Default burst of failures per source.
pub const DEFAULT_BURST: u32 = 40;

/// Where a request came from, as rate limits and refusal aggregation count it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SourceKey {
    V4(std::net::Ipv4Addr),
    /// The first 64 bits of an IPv6 address.
    V6Block(u64),
    /// No peer address known, or the shared bucket past [`MAX_SOURCES`].
    Other,
}

impl SourceKey {
    pub fn of(peer: Option<IpAddr>) -> Self {
        match peer.map(|ip| ip.to_canonical()) {
            Some(IpAddr::V4(v4)) => SourceKey::V4(v4),
            Some(IpAddr::V6(v6)) => SourceKey::V6Block((v6.to_bits() >> 64) as u64),
            None => SourceKey::Other,
        }
    }
}

impl std::fmt::Display for SourceKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SourceKey::V4(ip) => write!(f, "{ip}"),
            SourceKey::V6Block(prefix) => {
                write!(f, "{}/64", Ipv6Addr::from_bits(u128::from(*prefix) << 64))
            }
            SourceKey::Other => f.write_str("other"),
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    refilled: Instant,
}

/// Token buckets for authentication failures, by source.
#[derive(Debug)]
pub struct FailureThrottle {
    rate: f64,
    burst: f64,
    buckets: Mutex<HashMap<SourceKey, Bucket>>,
}

impl FailureThrottle {
    /// `rate` failures a second on average, `burst` at once (both at least 1).
    pub fn new(rate: u32, burst: u32) -> Self {
        Self {
            rate: f64::from(rate.max(1)),
            burst: f64::from(burst.max(1)),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes a token for a failure from `source`; `false` when its bucket is empty.
    pub fn allow_failure(&self, source: SourceKey, now: Instant) -> bool {
        let mut buckets = match self.buckets.lock() {
            Ok(buckets) => buckets,
            Err(poisoned) => poisoned.into_inner(),
        };
        let mut key = source;
        if !buckets.contains_key(&key) && buckets.len() >= MAX_SOURCES {
            // Buckets that have refilled hold nothing a fresh one would not.
            let (rate, burst) = (self.rate, self.burst);
            buckets.retain(|_, b| level(b, rate, burst, now) < burst);
            if buckets.len() >= MAX_SOURCES {
                key = SourceKey::Other;
            }
        }
        let bucket = buckets.entry(key).or_insert(Bucket {
            tokens: self.burst,
            refilled: now,
        });
        bucket.tokens = level(bucket, self.rate, self.burst, now);
        bucket.refilled = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// Whether `source` has no failure left now (without taking one).
    pub fn exhausted(&self, source: SourceKey, now: Instant) -> bool {
        let buckets = match self.buckets.lock() {
            Ok(buckets) => buckets,
            Err(poisoned) => poisoned.into_inner(),
        };
        buckets
            .get(&source)
            .is_some_and(|b| level(b, self.rate, self.burst, now) < 1.0)
    }

    /// Sources with a bucket of their own (or the shared one).
    pub fn len(&self) -> usize {
        self.buckets.lock().map(|b| b.len()).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The tokens `bucket` holds at `now`.
fn level(bucket: &Bucket, rate: f64, burst: f64, now: Instant) -> f64 {
    let elapsed = now.saturating_duration_since(bucket.refilled).as_secs_f64();
    (bucket.tokens + elapsed * rate).min(burst)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn ip(text: &str) -> SourceKey {
        SourceKey::of(Some(text.parse().unwrap()))
    }

    #[test]
    fn a_source_gets_its_burst_then_its_rate() {
        let throttle = FailureThrottle::new(2, 4);
        let start = Instant::now();
        let a = ip("192.0.2.1");
        assert!((0..4).all(|_| throttle.allow_failure(a, start)));
        assert!(!throttle.allow_failure(a, start));
        // Another source is not held back by the first.
        assert!(throttle.allow_failure(ip("192.0.2.2"), start));
        // Half a second at 2/s: one more.
        let later = start + Duration::from_millis(500);
        assert!(throttle.allow_failure(a, later));
        assert!(!throttle.allow_failure(a, later));
        // Never more than the burst, however long it waited.
        let much_later = start + Duration::from_secs(3600);
        assert_eq!(
            (0..10)
                .filter(|_| throttle.allow_failure(a, much_later))
                .count(),
            4
        );
    }

    #[test]
    fn an_ipv6_host_is_one_source_per_64() {
        assert_eq!(ip("2001:db8:1:2::1"), ip("2001:db8:1:2:ffff::9"));
        assert_ne!(ip("2001:db8:1:2::1"), ip("2001:db8:1:3::1"));
        assert_eq!(ip("2001:db8:1:2::1").to_string(), "2001:db8:1:2::/64");
        assert_eq!(ip("::ffff:192.0.2.1"), ip("192.0.2.1"));
        assert_eq!(SourceKey::of(None).to_string(), "other");
    }

    #[test]
    fn the_table_is_bounded() {
        let throttle = FailureThrottle::new(1, 1);
        let now = Instant::now();
        for i in 0..MAX_SOURCES as u32 {
            let source = SourceKey::V4(std::net::Ipv4Addr::from_bits(i));
            assert!(throttle.allow_failure(source, now));
        }
        // Full, and nothing has refilled: new sources share one bucket.
        let stranger = SourceKey::V4(std::net::Ipv4Addr::from_bits(u32::MAX));
        assert!(throttle.allow_failure(stranger, now));
        assert!(!throttle.allow_failure(SourceKey::V4([10, 0, 0, 1].into()), now));
        assert_eq!(throttle.len(), MAX_SOURCES + 1);
        // Once they have refilled, their places are free again.
        assert!(throttle.allow_failure(stranger, now + Duration::from_secs(2)));
        assert!(throttle.len() <= 2);
    }
}
