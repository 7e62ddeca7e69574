//! Per-source limit of failed logins.
//!
//! Each source address may have a few failed logins within a sliding
//! window; beyond that its logins are refused without checking the
//! password. Logins still being checked count as failures until their
//! outcome is known, so a burst of parallel guesses cannot slip past the
//! limit. IPv6 sources are counted per /64, the block one host usually has.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Instant;

use crate::config::LoginFailureLimit;

/// How many sources are tracked at most; beyond that new sources are refused
/// until old failures age out.
const MAX_TRACKED_SOURCES: usize = 65_536;

/// Counts failed logins per source.
#[derive(Debug)]
pub struct LoginThrottle {
    limit: LoginFailureLimit,
    sources: Mutex<HashMap<IpAddr, SourceRecord>>,
}

#[derive(Debug, Default)]
struct SourceRecord {
    failures: VecDeque<Instant>,
    in_flight: u32,
}

/// A login admitted by the throttle; report its outcome with
/// [`LoginAttempt::failed`] or [`LoginAttempt::succeeded`]. Dropping it
/// without an outcome (a cancelled request) counts as neither.
#[derive(Debug)]
pub struct LoginAttempt<'a> {
    throttle: &'a LoginThrottle,
    source: IpAddr,
}

impl LoginThrottle {
    /// A throttle with the given limit.
    pub fn new(limit: LoginFailureLimit) -> Self {
        LoginThrottle {
            limit,
            sources: Mutex::new(HashMap::new()),
        }
    }

    /// Admits a login from `source` at `now`, or returns `None` if the
    /// source has used up its failures.
    pub fn begin(&self, source: IpAddr, now: Instant) -> Option<LoginAttempt<'_>> {
        let source = source_key(source);
        let mut sources = self.lock();
        if !sources.contains_key(&source) && sources.len() >= MAX_TRACKED_SOURCES {
            let window = self.limit.window;
            sources.retain(|_, record| {
                forget_old(record, now, window);
                record.in_flight > 0 || !record.failures.is_empty()
            });
            if sources.len() >= MAX_TRACKED_SOURCES {
                return None;
            }
        }
        let record = sources.entry(source).or_default();
        forget_old(record, now, self.limit.window);
        let used = record.failures.len() + record.in_flight as usize;
        if used >= self.limit.max_failures as usize {
            return None;
        }
        record.in_flight += 1;
        Some(LoginAttempt {
            throttle: self,
            source,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, SourceRecord>> {
        // The map stays consistent even if a holder panicked.
        self.sources
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn finish(&self, source: IpAddr, failed_at: Option<Instant>) {
        let mut sources = self.lock();
        if let Some(record) = sources.get_mut(&source) {
            record.in_flight = record.in_flight.saturating_sub(1);
            if let Some(at) = failed_at {
                record.failures.push_back(at);
            }
            if record.in_flight == 0 && record.failures.is_empty() {
                sources.remove(&source);
            }
        }
    }
}

impl LoginAttempt<'_> {
    /// Records that the login failed at `now`.
    pub fn failed(self, now: Instant) {
        let this = std::mem::ManuallyDrop::new(self);
        this.throttle.finish(this.source, Some(now));
    }

    /// Records that the login succeeded.
    pub fn succeeded(self) {
        drop(self);
    }
}

impl Drop for LoginAttempt<'_> {
    fn drop(&mut self) {
        self.throttle.finish(self.source, None);
    }
}

fn forget_old(record: &mut SourceRecord, now: Instant, window: std::time::Duration) {
    while let Some(&oldest) = record.failures.front() {
        if now.saturating_duration_since(oldest) >= window {
            record.failures.pop_front();
        } else {
            break;
        }
    }
}

/// The key a source is counted under: IPv4 addresses as they are, IPv6
/// addresses by their /64 prefix.
fn source_key(source: IpAddr) -> IpAddr {
    match source.to_canonical() {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => {
            let prefix = u128::from(v6) & !((1u128 << 64) - 1);
            IpAddr::V6(prefix.into())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn throttle(max_failures: u32) -> LoginThrottle {
        LoginThrottle::new(LoginFailureLimit {
            max_failures,
            window: Duration::from_secs(60),
        })
    }

    const A: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 1));
    const B: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 2));

    #[test]
    fn failures_beyond_the_limit_are_refused_per_source() {
        let t = throttle(3);
        let now = Instant::now();
        for _ in 0..3 {
            t.begin(A, now).unwrap().failed(now);
        }
        assert!(t.begin(A, now).is_none());
        assert!(t.begin(B, now).is_some());
    }

    #[test]
    fn failures_age_out() {
        let t = throttle(2);
        let start = Instant::now();
        t.begin(A, start).unwrap().failed(start);
        t.begin(A, start).unwrap().failed(start);
        assert!(t.begin(A, start + Duration::from_secs(59)).is_none());
        assert!(t.begin(A, start + Duration::from_secs(60)).is_some());
    }

    #[test]
    fn successes_do_not_count() {
        let t = throttle(2);
        let now = Instant::now();
        for _ in 0..10 {
            t.begin(A, now).unwrap().succeeded();
        }
        assert!(t.lock().is_empty());
    }

    #[test]
    fn attempts_in_flight_count_against_the_limit() {
        let t = throttle(2);
        let now = Instant::now();
        let first = t.begin(A, now).unwrap();
        let second = t.begin(A, now).unwrap();
        assert!(t.begin(A, now).is_none());
        first.succeeded();
        let third = t.begin(A, now).unwrap();
        second.failed(now);
        drop(third);
        // One failure recorded, nothing in flight: one more is allowed.
        let fourth = t.begin(A, now).unwrap();
        assert!(t.begin(A, now).is_none());
        drop(fourth);
    }

    #[test]
    fn ipv6_sources_are_counted_per_64_and_mapped_ipv4_as_ipv4() {
        let t = throttle(1);
        let now = Instant::now();
        let one: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let same_64: IpAddr = "2001:db8:1:2:ffff::9".parse().unwrap();
        let other_64: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        t.begin(one, now).unwrap().failed(now);
        assert!(t.begin(same_64, now).is_none());
        assert!(t.begin(other_64, now).is_some());

        let mapped: IpAddr = "::ffff:192.0.2.1".parse().unwrap();
        t.begin(A, now).unwrap().failed(now);
        assert!(t.begin(mapped, now).is_none());
    }
}
