//! When a failed delivery is tried again: exponential backoff with jitter, then `dead`.

use chrono::{DateTime, Duration, Utc};
use rand::Rng;

/// The schedule of retries for one job.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    /// Wait after the first failure.
    pub base: std::time::Duration,
    /// Each further wait is this many times the last.
    pub factor: u32,
    /// No wait is longer than this.
    pub cap: std::time::Duration,
    /// Attempts in all; the job is dead after the last fails.
    pub max_attempts: i32,
}

impl Default for RetryPolicy {
    /// First retry after about 5 s, then 15 s, 45 s, … up to 6 h: 14 attempts over about 34 hours,
    /// so an outage of a day is ridden out (docs/delivery.md).
    fn default() -> Self {
        RetryPolicy {
            base: std::time::Duration::from_secs(5),
            factor: 3,
            cap: std::time::Duration::from_secs(6 * 3600),
            max_attempts: 14,
        }
    }
}

impl RetryPolicy {
    /// The wait after attempt number `attempts` failed, before jitter.
    pub fn delay(&self, attempts: i32) -> std::time::Duration {
        let exp = (attempts.max(1) - 1).min(30) as u32;
        let factor = (self.factor as u64).saturating_pow(exp);
        self.base
            .saturating_mul(factor.min(u32::MAX as u64) as u32)
            .min(self.cap)
    }

    /// When to try again after attempt `attempts` failed, or `None` when it was the last. Jitter of
    /// ±20% spreads retries of jobs that failed together. `not_before` (a server's `Retry-After` or
    /// rate-limit reset) pushes the time later, never earlier.
    pub fn next_attempt(
        &self,
        attempts: i32,
        now: DateTime<Utc>,
        not_before: Option<DateTime<Utc>>,
    ) -> Option<DateTime<Utc>> {
        if attempts >= self.max_attempts {
            return None;
        }
        let base = self.delay(attempts).as_millis() as f64;
        let jittered = base * rand::thread_rng().gen_range(0.8..1.2);
        let at = now + Duration::milliseconds(jittered as i64);
        Some(not_before.map_or(at, |nb| nb.max(at)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_retry_comes_within_ten_seconds() {
        let p = RetryPolicy::default();
        let now = Utc::now();
        for _ in 0..100 {
            let at = p.next_attempt(1, now, None).unwrap();
            let wait = (at - now).num_milliseconds();
            assert!((4_000..=6_000).contains(&wait), "{wait}");
        }
    }

    #[test]
    fn at_least_ten_attempts_spread_over_at_least_a_day() {
        let p = RetryPolicy::default();
        assert!(p.max_attempts >= 10);
        // The shortest schedule the jitter allows.
        let total: f64 = (1..p.max_attempts).map(|a| p.delay(a).as_secs_f64() * 0.8).sum();
        assert!(total >= 86_400.0, "{total}");
        assert!(p.next_attempt(p.max_attempts, Utc::now(), None).is_none());
        assert_eq!(p.delay(50), p.cap);
    }

    #[test]
    fn a_server_given_time_is_honoured() {
        let p = RetryPolicy::default();
        let now = Utc::now();
        let later = now + Duration::seconds(3600);
        assert_eq!(p.next_attempt(1, now, Some(later)), Some(later));
    }
}
