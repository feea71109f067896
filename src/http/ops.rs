//! The ops commands' HTTP twins (docs/operations.md), behind ops tokens: `GET /api/v1/tickets`
//! (`read`), `GET /api/v1/tickets/{ref}` (`read`), `POST /api/v1/deliveries/{id}/retry` (`ops`,
//! with a reason, audited), `POST /api/v1/tickets/{ref}/resend-ack` (`ops`, likewise). Nothing here
//! edits a customer's submitted data.

use std::sync::Arc;

use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use serde::{Deserialize, Serialize};

use super::auth::authorize;
use super::body::{read_limited, BodyError};
use super::error::ApiError;
use super::AppState;
use crate::audit::{check_reason, AuditEntry};
use crate::domain::Ticket;
use crate::domain::{FieldError, Reference};
use crate::ops::{ticket_filter_errors, timeline, TicketLine};
use crate::store::queue::RetryOutcome;
use crate::store::StoreError;
use crate::tokens::Scope;

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

/// Newest first; `status` (`received`, `unsupported`), `type`, `limit` (1–500, default 50).
pub async fn list_tickets(
    req: HttpRequest,
    query: web::Query<ListQuery>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    authorize(&req, &state, Some(Scope::Read)).await?;
    let mut errors = ticket_filter_errors(query.status.as_deref(), query.request_type.as_deref());
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

/// The ticket a path's reference names, or `404`.
async fn find_ticket(state: &AppState, reference: &str) -> Result<Ticket, ApiError> {
    let reference = Reference::parse(reference).ok_or(ApiError::NotFound)?;
    state
        .store
        .ticket_by_reference(reference.as_str())
        .await
        .map_err(unavailable)?
        .ok_or(ApiError::NotFound)
}

/// One ticket as stored, with its whole timeline and its deliveries.
pub async fn show_ticket(
    req: HttpRequest,
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    authorize(&req, &state, Some(Scope::Read)).await?;
    let ticket = find_ticket(&state, &path).await?;
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
        "deliveries": deliveries,
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
    check_reason(&parsed.reason).map_err(|m| ApiError::Invalid(vec![FieldError::new("reason", m)]))
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
    let ticket = find_ticket(&state, &path).await?;
    let audit = AuditEntry::new(caller.actor(), "ticket.resend_ack", ticket.reference.clone(), reason);
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
    let id = path.into_inner();
    let audit = AuditEntry::new(caller.actor(), "delivery.retry", format!("delivery {id}"), reason);
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
