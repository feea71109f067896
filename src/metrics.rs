//! Process metrics for `GET /metrics` (Prometheus text format 0.0.4): submissions by type and
//! outcome, refusals by reason, delivery attempts by kind and result, the outbox, and request
//! latency histograms per route. Counters are atomics; the histogram map is read-locked on the hot
//! path and written once per new route.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::RwLock;
use std::time::Duration;
use strum::{EnumCount, IntoEnumIterator};

use crate::abuse::Refusals;
use crate::domain::{ClosedSet, RequestType};
use crate::store::queue::{JobKind, OutboxStats};

/// How a stored submission turned out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubmissionOutcome {
    Received,
    Unsupported,
    /// The same idempotency key and content again: answered, nothing new stored.
    Replayed,
}

const OUTCOMES: [(SubmissionOutcome, &str); 3] = [
    (SubmissionOutcome::Received, "received"),
    (SubmissionOutcome::Unsupported, "unsupported"),
    (SubmissionOutcome::Replayed, "replayed"),
];

const KINDS: [JobKind; 3] = [JobKind::AckEmail, JobKind::GithubIssue, JobKind::FollowupEmail];
/// What became of a delivery attempt.
pub const RESULTS: [&str; 5] = ["done", "retry", "dead", "skipped", "wait"];

/// The method as a metric label or log field: the standard methods by name, anything else as
/// `OTHER`. Every label comes from a closed set, so a client making up methods (or paths) cannot
/// grow the histogram map, `/metrics` or a log line.
pub fn method_label(method: &actix_web::http::Method) -> &'static str {
    use actix_web::http::Method;
    match *method {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        Method::OPTIONS => "OPTIONS",
        Method::TRACE => "TRACE",
        Method::CONNECT => "CONNECT",
        _ => "OTHER",
    }
}

/// Upper bounds of the latency buckets, in seconds.
const BUCKETS: [f64; 12] = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0];

#[derive(Default)]
struct Histogram {
    buckets: [AtomicU64; BUCKETS.len()],
    count: AtomicU64,
    /// Microseconds.
    sum_us: AtomicU64,
}

#[derive(Default)]
pub struct Metrics {
    submissions: [[AtomicU64; OUTCOMES.len()]; RequestType::COUNT],
    deliveries: [[AtomicU64; RESULTS.len()]; KINDS.len()],
    /// Route pattern → method label → histogram; looked up by `&str`, so observing allocates
    /// nothing once a route has been seen. Patterns are the router's (plus `unmatched`) and
    /// methods come from [`method_label`]: both closed sets.
    latency: RwLock<BTreeMap<String, BTreeMap<&'static str, Histogram>>>,
}

impl Metrics {
    pub fn submission(&self, filed: RequestType, outcome: SubmissionOutcome) {
        let t = RequestType::iter().position(|x| x == filed).unwrap_or(0);
        let o = OUTCOMES.iter().position(|(x, _)| *x == outcome).unwrap_or(0);
        self.submissions[t][o].fetch_add(1, Ordering::Relaxed);
    }

    /// One delivery attempt of `kind` ended in `result` (one of [`RESULTS`]).
    pub fn delivery(&self, kind: JobKind, result: &str) {
        let k = KINDS.iter().position(|x| *x == kind).unwrap_or(0);
        if let Some(r) = RESULTS.iter().position(|x| *x == result) {
            self.deliveries[k][r].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// A request to `route` (the pattern, not the path) with `method` (a [`method_label`]) took `took`.
    pub fn request(&self, route: &str, method: &'static str, took: Duration) {
        let observe = |h: &Histogram| {
            let secs = took.as_secs_f64();
            for (i, le) in BUCKETS.iter().enumerate() {
                if secs <= *le {
                    h.buckets[i].fetch_add(1, Ordering::Relaxed);
                }
            }
            h.count.fetch_add(1, Ordering::Relaxed);
            h.sum_us.fetch_add(took.as_micros() as u64, Ordering::Relaxed);
        };
        {
            let map = self.latency.read().unwrap_or_else(|e| e.into_inner());
            if let Some(h) = map.get(route).and_then(|m| m.get(method)) {
                observe(h);
                return;
            }
        }
        let mut map = self.latency.write().unwrap_or_else(|e| e.into_inner());
        observe(map.entry(route.to_owned()).or_default().entry(method).or_default());
    }

    /// The Prometheus text exposition.
    pub fn render(&self, refusals: &Refusals, outbox: Option<&OutboxStats>) -> String {
        let mut out = String::with_capacity(8 * 1024);
        let _ = writeln!(
            out,
            "# HELP intake_submissions_total Submissions answered, by filed type and outcome."
        );
        let _ = writeln!(out, "# TYPE intake_submissions_total counter");
        for (t, ty) in RequestType::iter().enumerate() {
            for (o, (_, outcome)) in OUTCOMES.iter().enumerate() {
                let n = self.submissions[t][o].load(Ordering::Relaxed);
                let _ = writeln!(
                    out,
                    "intake_submissions_total{{type=\"{}\",outcome=\"{outcome}\"}} {n}",
                    ty.id()
                );
            }
        }
        let _ = writeln!(out, "# HELP intake_refusals_total Clients refused, by reason.");
        let _ = writeln!(out, "# TYPE intake_refusals_total counter");
        for (reason, n) in refusals.snapshot() {
            let _ = writeln!(out, "intake_refusals_total{{reason=\"{reason}\"}} {n}");
        }
        let _ = writeln!(
            out,
            "# HELP intake_deliveries_total Delivery attempts, by kind and result."
        );
        let _ = writeln!(out, "# TYPE intake_deliveries_total counter");
        for (k, kind) in KINDS.iter().enumerate() {
            for (r, result) in RESULTS.iter().enumerate() {
                let n = self.deliveries[k][r].load(Ordering::Relaxed);
                let _ = writeln!(
                    out,
                    "intake_deliveries_total{{kind=\"{}\",result=\"{result}\"}} {n}",
                    kind.id()
                );
            }
        }
        if let Some(o) = outbox {
            for (name, help, value) in [
                ("intake_outbox_pending", "Jobs not yet done and not dead.", o.pending),
                ("intake_outbox_dead", "Jobs that failed for good.", o.dead),
                (
                    "intake_outbox_oldest_pending_seconds",
                    "Age of the oldest pending job.",
                    o.oldest_pending_seconds,
                ),
            ] {
                let _ = writeln!(out, "# HELP {name} {help}");
                let _ = writeln!(out, "# TYPE {name} gauge");
                let _ = writeln!(out, "{name} {value}");
            }
        }
        let _ = writeln!(
            out,
            "# HELP intake_http_request_duration_seconds Time to answer a request, by route pattern and method."
        );
        let _ = writeln!(out, "# TYPE intake_http_request_duration_seconds histogram");
        let map = self.latency.read().unwrap_or_else(|e| e.into_inner());
        for (route, method, h) in map
            .iter()
            .flat_map(|(route, methods)| methods.iter().map(move |(method, h)| (route, method, h)))
        {
            let labels = format!(
                "route=\"{}\",method=\"{method}\"",
                route.replace(['"', '\\', '\n'], "_")
            );
            for (i, le) in BUCKETS.iter().enumerate() {
                let n = h.buckets[i].load(Ordering::Relaxed);
                let _ = writeln!(
                    out,
                    "intake_http_request_duration_seconds_bucket{{{labels},le=\"{le}\"}} {n}"
                );
            }
            let count = h.count.load(Ordering::Relaxed);
            let _ = writeln!(
                out,
                "intake_http_request_duration_seconds_bucket{{{labels},le=\"+Inf\"}} {count}"
            );
            let sum = h.sum_us.load(Ordering::Relaxed) as f64 / 1e6;
            let _ = writeln!(out, "intake_http_request_duration_seconds_sum{{{labels}}} {sum}");
            let _ = writeln!(out, "intake_http_request_duration_seconds_count{{{labels}}} {count}");
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn made_up_methods_share_one_label() {
        use actix_web::http::Method;
        assert_eq!(method_label(&Method::POST), "POST");
        for made_up in ["FOO", "BREW", "XXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX"] {
            assert_eq!(method_label(&Method::from_bytes(made_up.as_bytes()).unwrap()), "OTHER");
        }
    }

    #[test]
    fn counters_and_histograms_render_in_prometheus_text() {
        let m = Metrics::default();
        m.submission(RequestType::Billing, SubmissionOutcome::Received);
        m.submission(RequestType::Billing, SubmissionOutcome::Received);
        m.delivery(JobKind::AckEmail, "done");
        m.request("/api/v1/tickets", "POST", Duration::from_millis(3));
        m.request("/api/v1/tickets", "POST", Duration::from_millis(30));
        let text = m.render(&Refusals::default(), None);
        assert!(text.contains("intake_submissions_total{type=\"billing\",outcome=\"received\"} 2"));
        assert!(text.contains("intake_deliveries_total{kind=\"ack_email\",result=\"done\"} 1"));
        let b = |le: &str| {
            format!(
                "intake_http_request_duration_seconds_bucket{{route=\"/api/v1/tickets\",method=\"POST\",le=\"{le}\"}}"
            )
        };
        assert!(text.contains(&format!("{} 0", b("0.0025"))));
        assert!(text.contains(&format!("{} 1", b("0.005"))));
        assert!(text.contains(&format!("{} 2", b("0.05"))));
        assert!(text.contains(&format!("{} 2", b("+Inf"))));
        assert!(
            text.contains("intake_http_request_duration_seconds_sum{route=\"/api/v1/tickets\",method=\"POST\"} 0.033")
        );
    }
}
