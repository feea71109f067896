//! Logging with `tracing`: readable text by default, JSON with `log.format = "json"`, to stderr so
//! that command output on stdout stays clean.

use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use tracing::Level;
use tracing_subscriber::filter::{dynamic_filter_fn, FilterExt};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

use crate::config::{LogFormat, LogSettings};

/// actix-http logs every broken connection (a malformed request, a client that vanished) as an
/// `ERROR … stream error` line: thousands a second under a flood of garbage, and nothing anyone
/// must act on. At most this many such lines are written a second; the rest are counted and
/// summed up by [`report_thinned`].
pub const CONNECTION_ERROR_LINES_PER_SECOND: u32 = 1;

fn connection_error_lines() -> &'static DefaultDirectRateLimiter {
    static LIMITER: OnceLock<DefaultDirectRateLimiter> = OnceLock::new();
    LIMITER.get_or_init(|| {
        let per_second = NonZeroU32::new(CONNECTION_ERROR_LINES_PER_SECOND).unwrap_or(NonZeroU32::MIN);
        RateLimiter::direct(Quota::per_second(per_second))
    })
}

static CONNECTION_ERRORS_LEFT_OUT: AtomicU64 = AtomicU64::new(0);

/// Whether an event may be written: every event but actix-http's connection errors past their
/// allowance.
fn thin_connection_errors(meta: &tracing::Metadata<'_>) -> bool {
    if *meta.level() != Level::ERROR || !meta.target().starts_with("actix_http::h1") {
        return true;
    }
    if connection_error_lines().check().is_ok() {
        true
    } else {
        CONNECTION_ERRORS_LEFT_OUT.fetch_add(1, Ordering::Relaxed);
        false
    }
}

/// Writes one line for the connection errors left out since the last call; run on a timer.
pub fn report_thinned() {
    let left_out = CONNECTION_ERRORS_LEFT_OUT.swap(0, Ordering::Relaxed);
    if left_out > 0 {
        tracing::warn!(
            left_out,
            "HTTP connection errors left out of the log (broken or malformed client connections; at most {CONNECTION_ERROR_LINES_PER_SECOND} a second are written)"
        );
    }
}

/// Installs the global subscriber; `RUST_LOG` overrides `log.level`. Safe to call more than once
/// (later calls are ignored), which the tests rely on.
pub fn init(settings: &LogSettings) {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&settings.level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let fmt = tracing_subscriber::fmt::layer()
        .with_ansi(ansi)
        .with_writer(std::io::stderr);
    let layer = match settings.format {
        LogFormat::Text => fmt.boxed(),
        LogFormat::Json => fmt.json().flatten_event(true).boxed(),
    };
    let _ = tracing_subscriber::registry()
        // Dynamic: decided per event (a plain filter function would be cached per call site).
        .with(layer.with_filter(filter.and(dynamic_filter_fn(|meta, _| thin_connection_errors(meta)))))
        .try_init();
}
