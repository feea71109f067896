//! Abuse handling shared by the form and the API: rate limits per client address and per customer
//! email (governor, GCRA), and the one log line and counter every refused client gets.
//!
//! Memory stays bounded: keys that have become indistinguishable from fresh ones are pruned on a
//! timer, IPv6 clients are keyed by their /64 (one subscriber's allocation, which a flood cannot
//! multiply), emails by a keyed 64-bit hash, and past `limits.max_tracked_clients` the limiter
//! refuses new submissions instead of growing.

use std::hash::{BuildHasher, RandomState};
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use governor::clock::{Clock, DefaultClock, Reference};
use governor::middleware::NoOpMiddleware;
use governor::nanos::Nanos;
use governor::state::keyed::{HashMapStateStore, ShrinkableKeyedStateStore};
use governor::state::StateStore;
use governor::{Quota, RateLimiter};

use crate::config::{LimitsSettings, Rate};

/// Why a client was refused; the `reason=` word of its log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    RateLimit,
    Honeypot,
    TooFast,
    BadToken,
    BodyTooLarge,
    BadSignature,
    /// A wrong, revoked or malformed ops token.
    BadCredentials,
    /// Over `limits.per_email` for one address from one client. Counted, never a Fail2Ban line:
    /// the address is the customer's, and whoever typed it may not be.
    EmailRateLimit,
    /// Past `limits.max_tracked_clients`, a client the limiter does not know yet. Nobody's fault in
    /// particular: counted, never a Fail2Ban line.
    LimiterFull,
    /// A browser posted from another site's page. Refused before anything is counted against the
    /// visitor, and never a Fail2Ban line: the visitor did not choose to send it.
    CrossSite,
}

impl Refusal {
    pub const ALL: [Refusal; 10] = [
        Refusal::RateLimit,
        Refusal::Honeypot,
        Refusal::TooFast,
        Refusal::BadToken,
        Refusal::BodyTooLarge,
        Refusal::BadSignature,
        Refusal::BadCredentials,
        Refusal::EmailRateLimit,
        Refusal::LimiterFull,
        Refusal::CrossSite,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::RateLimit => "rate-limit",
            Refusal::Honeypot => "honeypot",
            Refusal::TooFast => "too-fast",
            Refusal::BadToken => "bad-token",
            Refusal::BodyTooLarge => "body-too-large",
            Refusal::BadSignature => "bad-signature",
            Refusal::BadCredentials => "bad-credentials",
            Refusal::EmailRateLimit => "email-rate-limit",
            Refusal::LimiterFull => "limiter-full",
            Refusal::CrossSite => "cross-site",
        }
    }
}

/// How many clients were refused, per reason, since the process started; and the refusal lines.
///
/// Each refusal is counted, but a client refused again and again gets at most
/// [`LOG_BURST`] lines at once and then one a second: plenty for Fail2Ban (whose jail bans after
/// ten), while a flood of tens of thousands of refusals a second does not become as many log lines.
///
/// Across all clients at most [`MAX_LINES_PER_SECOND`] lines are written, so a flood from many
/// addresses cannot fill the disk; lines left out are counted and reported by [`Refusals::prune`].
pub struct Refusals {
    counts: [AtomicU64; Refusal::ALL.len()],
    lines: Keyed<ClientKey, DefaultClock>,
    all_lines: governor::DefaultDirectRateLimiter,
    left_out: AtomicU64,
    /// Refusals of clients whose address is not known (a trusted proxy passed none): counted,
    /// summed up by [`Refusals::prune`], never named on a line Fail2Ban reads.
    unnamed: AtomicU64,
}

/// Refusal lines written per second at most, all clients together.
pub const MAX_LINES_PER_SECOND: u32 = 1000;

/// Refusal lines a client gets at once before they are thinned to one a second.
pub const LOG_BURST: u32 = 20;

impl Default for Refusals {
    fn default() -> Self {
        Refusals::new(500_000)
    }
}

impl Refusals {
    pub fn new(max_tracked_clients: usize) -> Self {
        let rate = Rate {
            count: LOG_BURST,
            per: Duration::from_secs(u64::from(LOG_BURST)),
        };
        Refusals {
            counts: Default::default(),
            lines: Keyed::new(rate, DefaultClock::default(), max_tracked_clients),
            all_lines: RateLimiter::direct(Quota::per_second(
                std::num::NonZeroU32::new(MAX_LINES_PER_SECOND).expect("a positive constant"),
            )),
            left_out: AtomicU64::new(0),
            unnamed: AtomicU64::new(0),
        }
    }

    /// Counts the refusal and writes the one `WARN` line Fail2Ban matches (`deploy/fail2ban/`).
    /// The format is fixed: message `refused a client`, then `client=<address> reason=<word>`,
    /// nothing after them, so text a client chose elsewhere on the line cannot be taken for the
    /// address. The address is the limiter's key: an IPv4 address, or an IPv6 client's /64
    /// (`2001:db8:1:2::/64`), so that rotating addresses inside one /64 adds up to one ban.
    /// `None` (a client whose address is unknown) is counted and never named.
    /// Returns whether a line was written.
    pub fn refuse(&self, client: Option<IpAddr>, why: Refusal) -> bool {
        self.counts[why as usize].fetch_add(1, Ordering::Relaxed);
        let Some(ip) = client else {
            self.unnamed.fetch_add(1, Ordering::Relaxed);
            return false;
        };
        let key = ClientKey::from(ip);
        // Past the burst, lines are thinned; a full tracker logs every line rather than none.
        let thinned = matches!(
            self.lines.check(&key, LimitKind::PerClient),
            Err(OverLimit {
                limit: LimitKind::PerClient,
                ..
            })
        );
        if thinned {
            return false;
        }
        if self.all_lines.check().is_ok() {
            tracing::warn!(client = %key, reason = %why.as_str(), "refused a client");
            true
        } else {
            self.left_out.fetch_add(1, Ordering::Relaxed);
            false
        }
    }

    /// Counts a refusal that names nobody for Fail2Ban (see [`Refusal::EmailRateLimit`],
    /// [`Refusal::LimiterFull`], [`Refusal::CrossSite`]).
    pub fn count_only(&self, why: Refusal) {
        self.counts[why as usize].fetch_add(1, Ordering::Relaxed);
    }

    pub fn count(&self, why: Refusal) -> u64 {
        self.counts[why as usize].load(Ordering::Relaxed)
    }

    /// Every reason with its count, for metrics.
    pub fn snapshot(&self) -> Vec<(&'static str, u64)> {
        Refusal::ALL.iter().map(|r| (r.as_str(), self.count(*r))).collect()
    }

    /// Forgets clients whose line allowance has recovered, and says how many lines were left out
    /// since the last call; run on a timer.
    pub fn prune(&self) {
        self.lines.prune();
        let left_out = self.left_out.swap(0, Ordering::Relaxed);
        if left_out > 0 {
            // No `client=` here: this line is about the service, not a client to ban.
            tracing::warn!(
                left_out,
                "refusal lines left out: more than {MAX_LINES_PER_SECOND} a second (every refusal is still counted)"
            );
        }
        let unnamed = self.unnamed.swap(0, Ordering::Relaxed);
        if unnamed > 0 {
            tracing::warn!(
                unnamed,
                "refused clients whose address is unknown: a trusted proxy sent no usable X-Forwarded-For (server.trusted_proxies)"
            );
        }
    }
}

/// A client address as the limiter keys it: IPv4 whole, IPv6 by its /64.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ClientKey {
    V4(u32),
    V6Prefix(u64),
}

impl From<IpAddr> for ClientKey {
    fn from(ip: IpAddr) -> Self {
        match ip.to_canonical() {
            IpAddr::V4(v4) => ClientKey::V4(u32::from(v4)),
            IpAddr::V6(v6) => ClientKey::V6Prefix((u128::from(v6) >> 64) as u64),
        }
    }
}

impl std::fmt::Display for ClientKey {
    /// The one spelling of a key on a refusal line: `203.0.113.7`, or `2001:db8:1:2::/64`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ClientKey::V4(v4) => write!(f, "{}", std::net::Ipv4Addr::from(*v4)),
            ClientKey::V6Prefix(p) => write!(f, "{}/64", std::net::Ipv6Addr::from(u128::from(*p) << 64)),
        }
    }
}

/// Why a submission is over a limit, and when to come back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OverLimit {
    pub limit: LimitKind,
    pub retry_after: Duration,
}

impl OverLimit {
    /// Whole seconds for `Retry-After`, rounded up, at least one.
    pub fn retry_after_seconds(&self) -> u64 {
        let d = self.retry_after;
        (d.as_secs() + u64::from(d.subsec_nanos() > 0)).max(1)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitKind {
    PerClient,
    PerEmail,
    /// More clients are being tracked than `limits.max_tracked_clients`.
    Saturated,
}

/// Governor's quota for `count` per `per`: a burst of `count`, refilled one at a time evenly.
pub fn quota(rate: Rate) -> Quota {
    let burst = std::num::NonZeroU32::new(rate.count).unwrap_or(std::num::NonZeroU32::MIN);
    let period = (rate.per / burst.get()).max(Duration::from_nanos(1));
    Quota::with_period(period)
        .expect("the period is at least one nanosecond")
        .allow_burst(burst)
}

/// Governor's hash map store, shared with [`Keyed`] so that a full limiter can tell the clients it
/// already tracks (and keeps serving) from new ones.
struct SharedStore<K: std::hash::Hash + Eq + Clone>(Arc<HashMapStateStore<K>>);

impl<K: std::hash::Hash + Eq + Clone> StateStore for SharedStore<K> {
    type Key = K;

    fn measure_and_replace<T, F, E>(&self, key: &K, f: F) -> Result<T, E>
    where
        F: Fn(Option<Nanos>) -> Result<(T, Nanos), E>,
    {
        self.0.measure_and_replace(key, f)
    }
}

impl<K: std::hash::Hash + Eq + Clone> ShrinkableKeyedStateStore<K> for SharedStore<K> {
    fn retain_recent(&self, drop_below: Nanos) {
        self.0.retain_recent(drop_below)
    }

    fn shrink_to_fit(&self) {
        self.0.shrink_to_fit()
    }

    fn len(&self) -> usize {
        self.0.len()
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

struct Keyed<K: std::hash::Hash + Eq + Clone, C: Clock> {
    limiter: RateLimiter<K, SharedStore<K>, C, NoOpMiddleware<C::Instant>>,
    store: Arc<HashMapStateStore<K>>,
    clock: C,
    max_keys: usize,
    /// When the map was last pruned because it was full (prunes are at most once a second).
    last_full_prune: Mutex<Option<C::Instant>>,
    /// New clients refused since the last "full" line.
    refused_while_full: AtomicU64,
}

impl<K: std::hash::Hash + Eq + Clone, C: Clock + Clone> Keyed<K, C> {
    fn new(rate: Rate, clock: C, max_keys: usize) -> Self {
        let store: Arc<HashMapStateStore<K>> = Arc::default();
        Keyed {
            limiter: RateLimiter::new(quota(rate), SharedStore(Arc::clone(&store)), clock.clone()),
            store,
            clock,
            max_keys,
            last_full_prune: Mutex::new(None),
            refused_while_full: AtomicU64::new(0),
        }
    }

    fn check(&self, key: &K, kind: LimitKind) -> Result<(), OverLimit> {
        // Full: clients already tracked are served as ever; a new one waits for room.
        if self.limiter.len() >= self.max_keys && !self.store.lock().contains_key(key) && !self.prune_when_full() {
            self.refused_while_full.fetch_add(1, Ordering::Relaxed);
            return Err(OverLimit {
                limit: LimitKind::Saturated,
                retry_after: Duration::from_secs(60),
            });
        }
        self.limiter.check_key(key).map_err(|not_until| OverLimit {
            limit: kind,
            retry_after: not_until.wait_time_from(self.clock.now()),
        })
    }

    /// Prunes a full map (at most once a second); whether there is room afterwards. The line
    /// saying the limiter is full is written at most once a second too.
    fn prune_when_full(&self) -> bool {
        let now = self.clock.now();
        let mut last = self.last_full_prune.lock().unwrap_or_else(|e| e.into_inner());
        if last.is_some_and(|t| now.duration_since(t) < Duration::from_secs(1).into()) {
            return self.limiter.len() < self.max_keys;
        }
        *last = Some(now);
        drop(last);
        self.prune();
        let room = self.limiter.len() < self.max_keys;
        if !room {
            tracing::warn!(
                tracked = self.limiter.len(),
                refused = self.refused_while_full.swap(0, Ordering::Relaxed),
                "rate limiter full: new clients are refused until old ones age out; known ones are served (limits.max_tracked_clients)"
            );
        }
        room
    }

    fn prune(&self) {
        self.limiter.retain_recent();
        self.limiter.shrink_to_fit();
    }
}

/// The per-client and per-email limits of one process.
pub struct RateLimits<C: Clock = DefaultClock> {
    per_client: Keyed<ClientKey, C>,
    per_email: Keyed<u64, C>,
    email_hasher: RandomState,
}

impl RateLimits<DefaultClock> {
    pub fn new(settings: &LimitsSettings) -> Self {
        RateLimits::with_clock(settings, DefaultClock::default())
    }
}

impl<C: Clock + Clone> RateLimits<C> {
    pub fn with_clock(settings: &LimitsSettings, clock: C) -> Self {
        RateLimits {
            per_client: Keyed::new(settings.per_ip, clock.clone(), settings.max_tracked_clients),
            per_email: Keyed::new(settings.per_email, clock, settings.max_tracked_clients),
            email_hasher: RandomState::new(),
        }
    }

    /// Counts one submission attempt from `client`.
    pub fn check_client(&self, client: IpAddr) -> Result<(), OverLimit> {
        self.per_client.check(&ClientKey::from(client), LimitKind::PerClient)
    }

    /// Counts one submission for the customer address `email` (compared case-insensitively) from
    /// `client`. The limit is per address *and* client: someone who knows a customer's address
    /// can use up only their own allowance for it, never the customer's. Mail bombing an address
    /// is bounded by the acknowledgement caps instead, which count what is sent to it.
    pub fn check_email(&self, email: &str, client: Option<IpAddr>) -> Result<(), OverLimit> {
        let key = self
            .email_hasher
            .hash_one((email.trim().to_lowercase(), client.map(ClientKey::from)));
        self.per_email.check(&key, LimitKind::PerEmail)
    }

    /// Forgets clients whose limits have fully recovered; run on a timer.
    pub fn prune(&self) {
        self.per_client.prune();
        self.per_email.prune();
    }

    /// Clients and addresses currently tracked.
    pub fn tracked(&self) -> (usize, usize) {
        (self.per_client.limiter.len(), self.per_email.limiter.len())
    }
}

/// What a decoy confirmation shows: what the ticket's own page would.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decoy {
    pub filed_type: crate::domain::RequestType,
    pub unsupported: Option<crate::domain::UnsupportedReason>,
}

/// The references handed to bots (a filled honeypot, a form sent too fast), remembered for a while
/// so that following the redirect shows a confirmation like a real one instead of a `404` that
/// would tell the bot it was caught. Bounded: the oldest are forgotten first. Per process, as the
/// rate limits are (nginx keeps a client on one instance).
pub struct Decoys {
    inner: Mutex<DecoyMap>,
    max: usize,
}

#[derive(Default)]
struct DecoyMap {
    by_reference: std::collections::HashMap<String, Decoy>,
    /// The form token's nonce → its decoy reference, so a bot sending one form twice gets the
    /// same reference, as a person does.
    by_nonce: std::collections::HashMap<String, String>,
    order: std::collections::VecDeque<(String, String)>,
}

impl Default for Decoys {
    fn default() -> Self {
        Decoys::new(10_000)
    }
}

impl Decoys {
    pub fn new(max: usize) -> Self {
        Decoys {
            inner: Mutex::new(DecoyMap::default()),
            max: max.max(1),
        }
    }

    /// The decoy reference for the form token `nonce`: the one handed out before, else `fresh`.
    pub fn remember(&self, nonce: &str, fresh: String, decoy: Decoy) -> String {
        let mut m = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(existing) = m.by_nonce.get(nonce) {
            return existing.clone();
        }
        while m.order.len() >= self.max {
            if let Some((old_nonce, old_ref)) = m.order.pop_front() {
                m.by_nonce.remove(&old_nonce);
                m.by_reference.remove(&old_ref);
            }
        }
        m.by_reference.insert(fresh.clone(), decoy);
        m.by_nonce.insert(nonce.to_owned(), fresh.clone());
        m.order.push_back((nonce.to_owned(), fresh.clone()));
        fresh
    }

    pub fn get(&self, reference: &str) -> Option<Decoy> {
        let m = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        m.by_reference.get(reference).copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use governor::clock::FakeRelativeClock;

    fn settings(per_ip: &str, per_email: &str, max: usize) -> LimitsSettings {
        LimitsSettings {
            per_ip: per_ip.parse().unwrap(),
            per_email: per_email.parse().unwrap(),
            max_tracked_clients: max,
            ..LimitsSettings::default()
        }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn a_client_gets_its_burst_then_waits_for_the_next_slot() {
        let clock = FakeRelativeClock::default();
        let limits = RateLimits::with_clock(&settings("3/minute", "100/minute", 1000), clock.clone());
        for _ in 0..3 {
            limits.check_client(ip("203.0.113.1")).unwrap();
        }
        let over = limits.check_client(ip("203.0.113.1")).unwrap_err();
        assert_eq!(over.limit, LimitKind::PerClient);
        assert_eq!(over.retry_after_seconds(), 20);
        // Another client is not affected.
        limits.check_client(ip("203.0.113.2")).unwrap();
        clock.advance(Duration::from_secs(20));
        limits.check_client(ip("203.0.113.1")).unwrap();
        assert!(limits.check_client(ip("203.0.113.1")).is_err());
    }

    #[test]
    fn ipv6_clients_share_their_slash_64() {
        let clock = FakeRelativeClock::default();
        let limits = RateLimits::with_clock(&settings("2/hour", "100/hour", 1000), clock);
        limits.check_client(ip("2001:db8:1:2::1")).unwrap();
        limits.check_client(ip("2001:db8:1:2:ffff::9")).unwrap();
        assert!(limits.check_client(ip("2001:db8:1:2::77")).is_err());
        limits.check_client(ip("2001:db8:1:3::1")).unwrap();
        assert_eq!(
            ClientKey::from(ip("::ffff:192.0.2.1")),
            ClientKey::from(ip("192.0.2.1"))
        );
    }

    #[test]
    fn emails_are_limited_case_insensitively() {
        let clock = FakeRelativeClock::default();
        let limits = RateLimits::with_clock(&settings("100/hour", "2/hour", 1000), clock);
        let c = Some(ip("203.0.113.1"));
        limits.check_email("ada@example.com", c).unwrap();
        limits.check_email("ADA@Example.com", c).unwrap();
        let over = limits.check_email(" ada@example.COM ", c).unwrap_err();
        assert_eq!(over.limit, LimitKind::PerEmail);
        assert_eq!(over.retry_after_seconds(), 1800);
        limits.check_email("grace@example.com", c).unwrap();
    }

    #[test]
    fn a_stranger_using_up_an_address_leaves_the_customer_their_own_allowance() {
        let clock = FakeRelativeClock::default();
        let limits = RateLimits::with_clock(&settings("100/hour", "2/hour", 1000), clock);
        let stranger = Some(ip("198.51.100.66"));
        for _ in 0..2 {
            limits.check_email("customer@victim.example", stranger).unwrap();
        }
        assert!(limits.check_email("customer@victim.example", stranger).is_err());
        limits
            .check_email("Customer@victim.example", Some(ip("203.0.113.5")))
            .unwrap();
    }

    #[test]
    fn recovered_clients_are_pruned_and_a_full_limiter_refuses_until_they_are() {
        let clock = FakeRelativeClock::default();
        let limits = RateLimits::with_clock(&settings("10/minute", "10/minute", 1000), clock.clone());
        for i in 0..1000u32 {
            limits.check_client(IpAddr::from(i.to_be_bytes())).unwrap();
        }
        assert_eq!(limits.tracked().0, 1000);
        // Full: a new client is refused rather than tracked.
        let over = limits.check_client(ip("198.51.100.1")).unwrap_err();
        assert_eq!(over.limit, LimitKind::Saturated);
        assert_eq!(limits.tracked().0, 1000);
        // One request costs a tenth of a minute's allowance (6 s); governor forgets a key one
        // refill interval after it has fully recovered.
        clock.advance(Duration::from_secs(6));
        limits.prune();
        assert_eq!(limits.tracked().0, 1000, "not yet");
        clock.advance(Duration::from_secs(7));
        limits.prune();
        assert_eq!(limits.tracked().0, 0);
        limits.check_client(ip("198.51.100.1")).unwrap();
    }

    #[test]
    fn a_full_limiter_prunes_by_itself() {
        let clock = FakeRelativeClock::default();
        let limits = RateLimits::with_clock(&settings("10/minute", "10/minute", 1000), clock.clone());
        for i in 0..1000u32 {
            limits.check_client(IpAddr::from(i.to_be_bytes())).unwrap();
        }
        clock.advance(Duration::from_secs(13));
        limits.check_client(ip("198.51.100.1")).unwrap();
        assert_eq!(limits.tracked().0, 1);
    }

    #[test]
    fn a_client_refused_again_and_again_gets_a_burst_of_lines_then_few() {
        let r = Refusals::default();
        let written = (0..100)
            .filter(|_| r.refuse(Some(ip("192.0.2.1")), Refusal::RateLimit))
            .count();
        assert_eq!(written, LOG_BURST as usize);
        assert_eq!(r.count(Refusal::RateLimit), 100, "every refusal is counted");
        assert!(
            r.refuse(Some(ip("192.0.2.2")), Refusal::RateLimit),
            "another client has its own lines"
        );
    }

    #[test]
    fn all_clients_together_get_at_most_so_many_lines_a_second() {
        let r = Refusals::default();
        let written = (0..1500u32)
            .filter(|i| r.refuse(Some(IpAddr::from((0x0A00_0000 + i).to_be_bytes())), Refusal::Honeypot))
            .count();
        // The burst is one second's worth; more are refilled (one a millisecond) while the loop runs,
        // which a slow machine stretches, but far from all 1,500 get a line.
        assert!((1000..1400).contains(&written), "{written}");
        assert_eq!(r.left_out.load(Ordering::Relaxed), 1500 - written as u64);
        r.prune();
        assert_eq!(r.left_out.load(Ordering::Relaxed), 0, "reported and reset");
    }

    #[test]
    fn refusals_are_counted_per_reason() {
        let r = Refusals::default();
        assert!(r.refuse(Some(ip("192.0.2.1")), Refusal::Honeypot));
        assert!(r.refuse(Some(ip("192.0.2.1")), Refusal::Honeypot));
        assert!(!r.refuse(None, Refusal::RateLimit));
        assert_eq!(r.count(Refusal::Honeypot), 2);
        assert_eq!(r.count(Refusal::RateLimit), 1);
        assert_eq!(r.count(Refusal::BadToken), 0);
        assert_eq!(r.snapshot().len(), Refusal::ALL.len());
    }

    #[test]
    fn an_ipv6_client_is_named_by_its_slash_64_in_one_spelling() {
        assert_eq!(
            ClientKey::from(ip("2001:db8:1:2:aaaa::9")).to_string(),
            "2001:db8:1:2::/64"
        );
        assert_eq!(
            ClientKey::from(ip("2001:0DB8:0001:0002:ffff:0:0:1")).to_string(),
            "2001:db8:1:2::/64"
        );
        assert_eq!(ClientKey::from(ip("::ffff:192.0.2.1")).to_string(), "192.0.2.1");
        // Lines are thinned per /64 too: a client rotating inside it gets one burst, not one each.
        let r = Refusals::default();
        let written = (0..100u16)
            .filter(|i| {
                r.refuse(
                    Some(IpAddr::from([0x2001, 0xdb8, 1, 2, 0, 0, 0, *i])),
                    Refusal::RateLimit,
                )
            })
            .count();
        assert_eq!(written, LOG_BURST as usize);
    }

    #[test]
    fn decoys_are_remembered_per_form_and_the_oldest_forgotten() {
        let d = Decoys::new(2);
        let decoy = Decoy {
            filed_type: crate::domain::RequestType::Billing,
            unsupported: None,
        };
        assert_eq!(d.remember("n1", "LV-AAAAAAAA".into(), decoy), "LV-AAAAAAAA");
        assert_eq!(
            d.remember("n1", "LV-BBBBBBBB".into(), decoy),
            "LV-AAAAAAAA",
            "the same form, the same reference"
        );
        d.remember("n2", "LV-CCCCCCCC".into(), decoy);
        d.remember("n3", "LV-DDDDDDDD".into(), decoy);
        assert_eq!(d.get("LV-AAAAAAAA"), None);
        assert_eq!(d.get("LV-DDDDDDDD"), Some(decoy));
    }

    #[test]
    fn an_unknown_client_is_counted_and_never_named() {
        let r = Refusals::default();
        assert!(!r.refuse(None, Refusal::RateLimit));
        r.count_only(Refusal::EmailRateLimit);
        assert_eq!(r.count(Refusal::RateLimit), 1);
        assert_eq!(r.count(Refusal::EmailRateLimit), 1);
        assert_eq!(r.unnamed.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn a_full_limiter_keeps_serving_the_clients_it_knows() {
        let clock = FakeRelativeClock::default();
        let limits = RateLimits::with_clock(&settings("10/minute", "10/minute", 100), clock);
        for i in 0..100u32 {
            limits.check_client(IpAddr::from(i.to_be_bytes())).unwrap();
        }
        assert_eq!(
            limits.check_client(ip("198.51.100.1")).unwrap_err().limit,
            LimitKind::Saturated
        );
        // A known client within its allowance is not refused because others fill the map.
        limits.check_client(IpAddr::from(7u32.to_be_bytes())).unwrap();
    }
}
