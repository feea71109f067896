//! The HTTP interface (docs/http-api.md), one file per resource.

mod api;
mod auth;
mod body;
mod client_ip;
mod conn;
mod error;
mod form;
mod health;
mod ops;
mod request_span;
mod webhook;

use std::sync::Arc;
use std::time::Duration;

use actix_web::body::BoxBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::{header, StatusCode};
use actix_web::middleware::{DefaultHeaders, Next};
use actix_web::{web, HttpMessage, HttpRequest, HttpResponse};

use crate::abuse::{LimitKind, OverLimit, RateLimits, Refusal, Refusals};
use crate::form_token::FormTokens;
use crate::store::Store;
use crate::submit::Submitter;
use crate::templates::Templates;
pub use client_ip::Client;
use secrecy::SecretString;
use tokio::sync::Notify;

pub use api::{parse as parse_json_submission, Accepted};
pub use auth::{authorize, Caller};
pub use client_ip::ClientResolver;
pub use conn::{track_handler, DeadlineStream, Deadlines};
pub use error::{ApiError, Problem};
pub use form::{form_fields as parse_form_submission, form_page, FormExtras};
pub use health::Health;
pub use request_span::RequestSpan;
pub use webhook::signature_valid;

/// What delivery is set up to do, as health reports it.
#[derive(Debug, Clone)]
pub struct DeliveryConfig {
    pub email_detail: String,
    /// Why GitHub filing waits, or `None` when it is configured.
    pub github_missing: Option<String>,
}

/// Shared by every request handler.
pub struct AppState {
    pub store: Arc<dyn Store>,
    pub submitter: Submitter,
    /// What the ops API does, shared with the ops commands.
    pub ops: crate::ops::Ops,
    pub templates: Templates,
    pub form_tokens: FormTokens,
    pub site_name: String,
    pub delivery_config: DeliveryConfig,
    /// A form sent sooner than this after it was rendered is a bot's.
    pub min_fill_seconds: u64,
    pub clients: ClientResolver,
    pub limits: Arc<RateLimits>,
    pub refusals: Arc<Refusals>,
    /// How long a client may take to send a body.
    pub request_timeout: Duration,
    pub webhook_secret: Option<SecretString>,
    /// Wakes this process's delivery workers (a webhook queued a follow-up).
    pub delivery_wake: Arc<Notify>,
    pub metrics: Arc<crate::metrics::Metrics>,
    /// `server.public_url`'s origin (`https://help.example.com`), for the cross-site check.
    pub own_origin: String,
    /// References handed to bots, so their confirmation pages look real.
    pub decoys: crate::abuse::Decoys,
}

impl AppState {
    /// Counts one submission attempt from the client; over the limit, the refusal is logged.
    fn admit_client(&self, client: Option<Client>) -> Result<(), OverLimit> {
        let Some(c) = client else { return Ok(()) };
        self.limits
            .check_client(c.ip)
            .inspect_err(|over| self.over_limit(client, over))
    }

    /// Counts one submission for the customer's address (from this client), when it gave a valid one.
    fn admit_email(&self, client: Option<Client>, email: Option<&str>) -> Result<(), OverLimit> {
        let Some(email) = email else { return Ok(()) };
        self.limits
            .check_email(email, client.map(|c| c.ip))
            .inspect_err(|over| self.over_limit(client, over))
    }

    fn over_limit(&self, client: Option<Client>, over: &OverLimit) {
        match over.limit {
            LimitKind::PerClient => self.refuse(client, Refusal::RateLimit),
            // The address is a customer's, whoever typed it; a full limiter is nobody's fault in
            // particular. Neither gets anyone banned.
            LimitKind::PerEmail => self.refusals.count_only(Refusal::EmailRateLimit),
            LimitKind::Saturated => self.refusals.count_only(Refusal::LimiterFull),
        }
    }

    /// Counts a refusal and, when the client's own address is known, writes its Fail2Ban line.
    pub(crate) fn refuse(&self, client: Option<Client>, why: Refusal) {
        self.refusals.refuse(client.and_then(Client::named), why);
    }

    /// Whether a browser sent this from another site's page. A browser that sends
    /// `Sec-Fetch-Site` says so itself (no page can change it): `cross-site` is refused,
    /// `same-origin` and `none` (typed or bookmarked) are not. Otherwise (`same-site`, or an older
    /// browser) the `Origin` decides: absent (API clients, older browsers) is fine; `null` or an
    /// origin that is neither `server.public_url`'s nor the host the request was sent to (the
    /// scheme aside, which a TLS proxy changes) is refused. Chromium sends `Origin: null` on a
    /// same-origin post under `Referrer-Policy: no-referrer`, with `Sec-Fetch-Site: same-origin`.
    fn cross_site(&self, req: &HttpRequest) -> bool {
        let headers = req.headers();
        match headers.get("sec-fetch-site").map(|v| v.as_bytes().to_ascii_lowercase()) {
            Some(v) if v == b"cross-site" => return true,
            Some(v) if v == b"same-origin" || v == b"none" => return false,
            _ => {}
        }
        let Some(origin) = headers.get(header::ORIGIN) else {
            return false;
        };
        let Ok(origin) = origin.to_str() else { return true };
        if origin.eq_ignore_ascii_case(&self.own_origin) {
            return false;
        }
        let origin_host = origin
            .strip_prefix("https://")
            .or_else(|| origin.strip_prefix("http://"));
        let host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
        !matches!((origin_host, host), (Some(o), Some(h)) if o.eq_ignore_ascii_case(h))
    }

    /// Refuses a cross-site submission before anything is counted against the visitor: a page
    /// elsewhere could otherwise spend a visitor's limits or get their address banned.
    fn refuse_cross_site(&self, req: &HttpRequest) -> Result<(), ()> {
        if self.cross_site(req) {
            // Counted, not logged: a line per request would be a flood of its own.
            self.refusals.count_only(Refusal::CrossSite);
            return Err(());
        }
        Ok(())
    }
}

/// No script, no inline style, nothing from elsewhere, never framed.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; style-src 'self'; img-src 'self'; \
     form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

pub fn security_headers() -> DefaultHeaders {
    DefaultHeaders::new()
        .add((header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY))
        .add((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .add((header::REFERRER_POLICY, "no-referrer"))
        .add((header::X_FRAME_OPTIONS, "DENY"))
}

/// Request line and headers together; nginx's default allows 4 × 8 KiB, a browser sends ~1 KiB.
pub const MAX_HEAD: usize = 16 * 1024;

/// Refuses a request whose head (method, target and headers) is over [`MAX_HEAD`] with `431`
/// before any handler sees it (the HTTP parser itself stops at 128 KiB and 96 headers).
pub async fn limit_head(
    req: ServiceRequest,
    next: Next<BoxBody>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    let target = req.method().as_str().len() + req.uri().path().len() + req.uri().query().map_or(0, str::len);
    let headers: usize = req
        .headers()
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len() + 4)
        .sum();
    if target + headers > MAX_HEAD {
        let res = HttpResponse::build(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE)
            .insert_header((header::CONNECTION, "close"))
            .content_type("text/plain; charset=utf-8")
            .body("Request header fields too large.");
        return Ok(req.into_response(res));
    }
    next.call(req).await
}

/// Returns the request id every log line of the request carries as `X-Request-Id`, so a customer
/// or an engineer can quote it and the lines can be found.
pub async fn request_id_header(
    req: ServiceRequest,
    next: Next<BoxBody>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    let id = req
        .extensions()
        .get::<tracing_actix_web::RequestId>()
        .map(ToString::to_string);
    let mut res = next.call(req).await?;
    if let Some(value) = id.and_then(|id| header::HeaderValue::from_str(&id).ok()) {
        res.headers_mut()
            .insert(header::HeaderName::from_static("x-request-id"), value);
    }
    Ok(res)
}

/// The route pattern a request matched (`/api/v1/tickets/{reference}`), worked out once per
/// request (it costs a walk of the routes) and shared by the request span and the metrics.
#[derive(Debug, Clone)]
pub struct RoutePattern(pub String);

/// Times every request into the latency histogram of its route pattern. Wraps the whole app, so it
/// also records the pattern for the request span.
pub async fn observe_latency<B: actix_web::body::MessageBody>(
    req: ServiceRequest,
    next: Next<B>,
) -> Result<ServiceResponse<B>, actix_web::Error> {
    let started = std::time::Instant::now();
    let route = req.match_pattern().unwrap_or_else(|| "unmatched".to_owned());
    req.extensions_mut().insert(RoutePattern(route.clone()));
    let metrics = req.app_data::<web::Data<AppState>>().map(|s| Arc::clone(&s.metrics));
    let method = crate::metrics::method_label(req.method());
    let res = next.call(req).await;
    if let Some(m) = metrics {
        m.request(&route, method, started.elapsed());
    }
    res
}

/// `GET /metrics`: Prometheus text, for a token with the `metrics` scope.
async fn metrics(req: HttpRequest, state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    authorize(&req, &state, Some(crate::tokens::Scope::Metrics)).await?;
    let outbox = state.store.outbox_stats(chrono::Utc::now()).await.ok();
    Ok(HttpResponse::Ok()
        .insert_header((header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8"))
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .body(state.metrics.render(&state.refusals, outbox.as_ref())))
}

const STYLESHEET: &str = include_str!("../../static/intake.css");

async fn stylesheet() -> HttpResponse {
    HttpResponse::Ok()
        .insert_header((header::CONTENT_TYPE, "text/css; charset=utf-8"))
        .insert_header((header::CACHE_CONTROL, "public, max-age=3600"))
        .body(STYLESHEET)
}

/// Liveness: the process answers HTTP. Touches nothing else, so a load balancer can tell a hung
/// process from a database outage (which `/api/health` reports).
async fn live() -> HttpResponse {
    HttpResponse::Ok()
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .content_type("application/json")
        .body(r#"{"status":"alive"}"#)
}

/// Unknown paths: problem details under `/api/`, a page elsewhere.
pub(crate) async fn not_found(req: HttpRequest, state: web::Data<AppState>) -> HttpResponse {
    if req.path().starts_with("/api/") {
        actix_web::ResponseError::error_response(&ApiError::NotFound)
    } else {
        form::error_page(
            &state,
            StatusCode::NOT_FOUND,
            "Page not found",
            "There is nothing at this address.",
        )
    }
}

/// Routes every endpoint; used by the server and by tests alike.
pub fn routes(cfg: &mut web::ServiceConfig) {
    // Malformed query strings and path parts are problem details too.
    cfg.app_data(
        web::QueryConfig::default()
            .error_handler(|e, _| ApiError::Malformed(format!("The query string is not valid: {e}.")).into()),
    )
    .app_data(web::PathConfig::default().error_handler(|_, _| ApiError::NotFound.into()));
    // Fixed paths first: actix tries routes in order, and the ones with `{…}` cost a regex each.
    cfg.route("/api/live", web::get().to(live))
        .route("/api/v1/tickets", web::post().to(api::submit))
        .route("/api/v1/tickets", web::get().to(ops::list_tickets))
        .route("/", web::get().to(form::show))
        .route("/", web::post().to(form::submit))
        .route("/api/health", web::get().to(health::health))
        .route("/api/me", web::get().to(auth::me))
        .route("/metrics", web::get().to(metrics))
        .route("/webhooks/github", web::post().to(webhook::github))
        .route("/static/intake.css", web::get().to(stylesheet))
        .route("/submitted/{reference}", web::get().to(form::submitted))
        .route("/api/v1/tickets/{reference}", web::get().to(ops::show_ticket))
        .route("/api/v1/deliveries/{id}/retry", web::post().to(ops::retry_delivery))
        .route(
            "/api/v1/tickets/{reference}/resend-ack",
            web::post().to(ops::resend_ack),
        )
        .default_service(web::to(not_found));
}
