//! The ops commands' HTTP twins (SPEC section 7), behind ops tokens: `GET /api/v1/tickets`
//! (`read`), `GET /api/v1/tickets/{ref}` (`read`), `POST /api/v1/deliveries/{id}/retry` (`ops`,
//! with a reason, audited). Nothing here edits a customer's submitted data.

use std::sync::Arc;

use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use chrono::Utc;
use serde::{Deserialize, Serialize};

use super::auth::authorize;
use super::body::{read_limited, BodyError};
use super::error::ApiError;
use super::AppState;
use crate::domain::{FieldError, Reference, RequestType};
use crate::ops::{timeline, AuditEntry, Scope};
use crate::store::{RetryOutcome, StoreError, Ticket};

fn unavailable(e: StoreError) -> ApiError {
    ApiError::Unavailable(Arc::new(e))
}

fn json<T: Serialize>(value: &T) -> HttpResponse {
    HttpResponse::Ok()
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .json(value)
}

#[derive(Deserialize)]
pub struct ListQuery {
    status: Option<String>,
    #[serde(rename = "type")]
    request_type: Option<String>,
    limit: Option<i64>,
}

#[derive(Serialize)]
struct TicketLine<'a> {
    reference: &'a str,
    created_at: chrono::DateTime<Utc>,
    #[serde(rename = "type")]
    request_type: &'static str,
    status: &'static str,
    needs_triage: bool,
    issue_url: Option<&'a str>,
}

impl<'a> From<&'a Ticket> for TicketLine<'a> {
    fn from(t: &'a Ticket) -> Self {
        TicketLine {
            reference: &t.reference,
            created_at: t.created_at,
            request_type: t.filed_type.id(),
            status: if t.unsupported.is_some() {
                "unsupported"
            } else {
                "received"
            },
            needs_triage: t.needs_triage,
            issue_url: t.github_issue.as_ref().map(|i| i.url.as_str()),
        }
    }
}

/// Newest first; `status` (`received`, `unsupported`), `type`, `limit` (1–500, default 50).
pub async fn list_tickets(
    req: HttpRequest,
    query: web::Query<ListQuery>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    authorize(&req, &state, Some(Scope::Read)).await?;
    let mut errors = Vec::new();
    if let Some(s) = query.status.as_deref() {
        if !matches!(s, "received" | "unsupported") {
            errors.push(FieldError::new("status", "must be received or unsupported"));
        }
    }
    if let Some(t) = query.request_type.as_deref() {
        if RequestType::from_id(t).is_none() {
            errors.push(FieldError::new("type", "must be a request type"));
        }
    }
    let limit = query.limit.unwrap_or(50);
    if !(1..=500).contains(&limit) {
        errors.push(FieldError::new("limit", "must be between 1 and 500"));
    }
    if !errors.is_empty() {
        return Err(ApiError::Invalid(errors));
    }
    let tickets = state
        .store
        .list_tickets(query.status.as_deref(), query.request_type.as_deref(), limit)
        .await
        .map_err(unavailable)?;
    let lines: Vec<TicketLine> = tickets.iter().map(TicketLine::from).collect();
    Ok(json(&serde_json::json!({ "tickets": lines })))
}

/// One ticket as stored, with its whole timeline and its deliveries.
pub async fn show_ticket(
    req: HttpRequest,
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    authorize(&req, &state, Some(Scope::Read)).await?;
    let Some(reference) = Reference::parse(&path) else {
        return Err(ApiError::NotFound);
    };
    let ticket = state
        .store
        .ticket_by_reference(reference.as_str())
        .await
        .map_err(unavailable)?
        .ok_or(ApiError::NotFound)?;
    let deliveries = state
        .store
        .deliveries_for_ticket(ticket.id)
        .await
        .map_err(unavailable)?;
    let events = state.store.ticket_events(ticket.id).await.map_err(unavailable)?;
    let steps = timeline(&ticket, &deliveries, &events);
    Ok(json(&serde_json::json!({
        "ticket": ticket,
        "timeline": steps,
        "deliveries": deliveries.iter().map(|d| serde_json::json!({
            "id": d.id, "kind": d.kind.id(), "state": d.state, "attempts": d.attempts,
            "run_at": d.run_at, "done_at": d.done_at, "last_error": d.last_error,
        })).collect::<Vec<_>>(),
    })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ReasonBody {
    reason: String,
}

/// The `{"reason": "…"}` every state change needs: not blank, at most 500 characters.
async fn read_reason(req: &HttpRequest, payload: web::Payload, state: &AppState) -> Result<String, ApiError> {
    let body = read_limited(req, payload, 8 * 1024, state.request_timeout)
        .await
        .map_err(|e| match e {
            BodyError::TooLarge => ApiError::TooLarge { limit: 8 * 1024 },
            BodyError::Incomplete => ApiError::Malformed("The request body was cut short.".to_owned()),
            BodyError::TimedOut => ApiError::Timeout,
        })?;
    let parsed: ReasonBody =
        serde_json::from_slice(&body).map_err(|e| ApiError::Malformed(format!("Send {{\"reason\": \"…\"}}: {e}.")))?;
    let reason = parsed.reason.trim();
    if reason.is_empty() || reason.chars().count() > 500 {
        return Err(ApiError::Invalid(vec![FieldError::new(
            "reason",
            "say why, in at most 500 characters",
        )]));
    }
    Ok(reason.to_owned())
}

/// Queues the acknowledgement again (the customer did not get it); audited.
pub async fn resend_ack(
    req: HttpRequest,
    path: web::Path<String>,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let caller = authorize(&req, &state, Some(Scope::Ops)).await?;
    let reason = read_reason(&req, payload, &state).await?;
    let reference = Reference::parse(&path).ok_or(ApiError::NotFound)?;
    let ticket = state
        .store
        .ticket_by_reference(reference.as_str())
        .await
        .map_err(unavailable)?
        .ok_or(ApiError::NotFound)?;
    let audit = AuditEntry {
        at: Utc::now(),
        actor: caller.actor(),
        action: "ticket.resend_ack".to_owned(),
        target: ticket.reference.clone(),
        reason,
        detail: None,
    };
    let id = state.store.queue_ack(ticket.id, &audit).await.map_err(unavailable)?;
    state.delivery_wake.notify_one();
    Ok(json(&serde_json::json!({ "delivery": id, "state": "pending" })))
}

/// Makes a dead (or skipped) delivery pending again; the token's name and the reason are audited.
pub async fn retry_delivery(
    req: HttpRequest,
    path: web::Path<i64>,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let caller = authorize(&req, &state, Some(Scope::Ops)).await?;
    let reason = read_reason(&req, payload, &state).await?;
    let reason = reason.as_str();
    let id = path.into_inner();
    let audit = AuditEntry {
        at: Utc::now(),
        actor: caller.actor(),
        action: "delivery.retry".to_owned(),
        target: format!("delivery {id}"),
        reason: reason.to_owned(),
        detail: None,
    };
    match state.store.retry_delivery(id, &audit).await.map_err(unavailable)? {
        RetryOutcome::Queued => {
            state.delivery_wake.notify_one();
            tracing::info!(delivery = id, actor = %audit.actor, "delivery queued again");
            Ok(json(&serde_json::json!({ "id": id, "state": "pending" })))
        }
        RetryOutcome::NotFound => Err(ApiError::NotFound),
        RetryOutcome::NotRetryable { state } => Err(ApiError::Conflict(format!(
            "Delivery {id} is {state}; only dead or skipped deliveries are retried."
        ))),
    }
}
