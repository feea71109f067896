//! `POST /webhooks/github` (docs/http-api.md): GitHub tells us an issue was closed or reopened.
//!
//! The signature is checked over the raw body before anything else is read; a bad one is a refused
//! client (`reason=bad-signature`). Each `X-GitHub-Delivery` is recorded once, in the same
//! transaction as what it causes, so a redelivery does nothing and a crash loses nothing. The
//! answer comes at once: the follow-up email is a job in the outbox.

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use chrono::Utc;
use hmac::{Hmac, Mac};
use secrecy::ExposeSecret;
use serde::Deserialize;
use sha2::Sha256;

use super::body::{read_limited, BodyError};
use super::error::ApiError;
use super::AppState;
use crate::abuse::Refusal;
use crate::domain::{IssueAction, IssueEvent};
use crate::store::queue::WebhookOutcome;

/// GitHub caps payloads at 25 MB, but an `issues` event is a few KiB (an issue body is at most
/// 65,536 characters); 1 MiB leaves room without holding much.
pub const MAX_WEBHOOK_BODY: usize = 1024 * 1024;

/// Whether `header` (`sha256=<hex>`) is the HMAC-SHA256 of `body` under `secret`, compared in
/// constant time.
pub fn signature_valid(secret: &[u8], body: &[u8], header: Option<&str>) -> bool {
    let Some(hex_sig) = header.and_then(|h| h.strip_prefix("sha256=")) else {
        return false;
    };
    let Ok(expected) = hex::decode(hex_sig.trim()) else {
        return false;
    };
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret) else {
        return false;
    };
    mac.update(body);
    mac.verify_slice(&expected).is_ok()
}

#[derive(Deserialize)]
struct IssuesPayload {
    action: String,
    issue: IssuePart,
    repository: RepositoryPart,
}

#[derive(Deserialize)]
struct IssuePart {
    number: i64,
    #[serde(default)]
    state_reason: Option<String>,
    #[serde(default)]
    closed_at: Option<String>,
}

#[derive(Deserialize)]
struct RepositoryPart {
    full_name: String,
}

fn answer(status: StatusCode, what: &str) -> HttpResponse {
    HttpResponse::build(status).json(serde_json::json!({ "status": what }))
}

/// A header GitHub always sends: visible ASCII, not empty, not long.
fn required_header<'a>(req: &'a HttpRequest, name: &str) -> Result<&'a str, ApiError> {
    req.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 100 && v.bytes().all(|b| b.is_ascii_graphic()))
        .ok_or_else(|| ApiError::Malformed(format!("The {name} header is missing or malformed.")))
}

#[tracing::instrument(name = "github_webhook", skip_all, fields(delivery, event))]
pub async fn github(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let client = state.clients.client(&req);
    // Without a secret there is no webhook endpoint (nothing could be verified): the answer is
    // the one any unknown path gets.
    let Some(secret) = state.webhook_secret.as_ref() else {
        return Ok(super::not_found(req, state).await);
    };
    // GitHub is not a browser: a post from another site's page (a `no-cors` fetch needs no
    // preflight) is refused before a bad signature could be logged against the visitor.
    if state.refuse_cross_site(&req).is_err() {
        return Err(ApiError::CrossSite);
    }
    let body = read_limited(&req, payload, MAX_WEBHOOK_BODY, state.request_timeout)
        .await
        .map_err(|e| {
            if e == BodyError::TooLarge {
                state.refuse(client, Refusal::BodyTooLarge);
            }
            ApiError::from_body(e, MAX_WEBHOOK_BODY)
        })?;
    let signature = req.headers().get("x-hub-signature-256").and_then(|v| v.to_str().ok());
    if !signature_valid(secret.expose_secret().as_bytes(), &body, signature) {
        state.refuse(client, Refusal::BadSignature);
        return Err(ApiError::Unauthorized(
            "X-Hub-Signature-256 is missing or does not match the body.",
        ));
    }
    let event = required_header(&req, "x-github-event")?;
    let delivery = required_header(&req, "x-github-delivery")?;
    tracing::Span::current()
        .record("delivery", delivery)
        .record("event", event);

    let issue = if event == "issues" {
        let p: IssuesPayload = serde_json::from_slice(&body)
            .map_err(|e| ApiError::Malformed(format!("The issues payload does not have the expected shape: {e}.")))?;
        let action = match p.action.as_str() {
            "closed" => Some(IssueAction::Closed),
            "reopened" => Some(IssueAction::Reopened),
            _ => None,
        };
        action.map(|action| IssueEvent {
            repo: p.repository.full_name,
            number: p.issue.number,
            action,
            state_reason: p.issue.state_reason,
            closed_at: p.issue.closed_at.filter(|c| c.len() <= 64),
        })
    } else {
        None
    };

    let outcome = state
        .store
        .record_webhook(delivery, event, issue.as_ref(), Utc::now())
        .await
        .map_err(|e| ApiError::Unavailable(std::sync::Arc::new(e)))?;
    Ok(match outcome {
        WebhookOutcome::Duplicate => {
            tracing::info!("webhook delivery seen before; nothing done");
            answer(StatusCode::OK, "duplicate")
        }
        WebhookOutcome::Noted if event == "ping" => answer(StatusCode::OK, "pong"),
        WebhookOutcome::Noted | WebhookOutcome::UnknownIssue => answer(StatusCode::ACCEPTED, "ignored"),
        WebhookOutcome::Recorded {
            reference,
            followup_queued,
        } => {
            tracing::info!(ticket = %reference, followup_queued, "issue event recorded");
            if followup_queued {
                state.delivery_wake.notify_one();
            }
            answer(StatusCode::OK, "recorded")
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn githubs_documented_test_vector_verifies() {
        // https://docs.github.com/en/webhooks/using-webhooks/validating-webhook-deliveries
        let sig = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";
        assert!(signature_valid(
            b"It's a Secret to Everybody",
            b"Hello, World!",
            Some(sig)
        ));
        assert!(!signature_valid(
            b"It's a Secret to Everybody",
            b"Hello, World?",
            Some(sig)
        ));
        assert!(!signature_valid(b"another secret", b"Hello, World!", Some(sig)));
        assert!(!signature_valid(b"It's a Secret to Everybody", b"Hello, World!", None));
        assert!(!signature_valid(
            b"It's a Secret to Everybody",
            b"Hello, World!",
            Some("sha1=757107")
        ));
        assert!(!signature_valid(
            b"It's a Secret to Everybody",
            b"Hello, World!",
            Some("sha256=zz")
        ));
        assert!(!signature_valid(
            b"It's a Secret to Everybody",
            b"Hello, World!",
            Some(&sig[..20])
        ));
    }
}
