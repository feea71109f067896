//! The ops commands' HTTP twins (docs/operations.md), behind ops tokens: `GET /api/v1/tickets`
//! (`read`), `GET /api/v1/tickets/{ref}` (`read`), `POST /api/v1/deliveries/{id}/retry` (`ops`,
//! with a reason, audited), `POST /api/v1/tickets/{ref}/resend-ack` (`ops`, likewise). Nothing here
//! edits a customer's submitted data.

use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use serde::{Deserialize, Serialize};

use super::auth::authorize;
use super::body::read_limited;
use super::error::ApiError;
use super::AppState;
use crate::ops::{TicketFilter, TicketLine};
use crate::tokens::Scope;

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
    let filter = TicketFilter::parse(query.status.as_deref(), query.request_type.as_deref(), query.limit)
        .map_err(ApiError::Invalid)?;
    let tickets = state.ops.tickets(&filter).await?;
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
    let view = state.ops.ticket(&path).await?;
    Ok(json(&serde_json::json!({
        "ticket": view.ticket,
        "timeline": view.timeline,
        "deliveries": view.deliveries,
    })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ReasonBody {
    reason: String,
}

/// The `{"reason": "…"}` every state change needs (checked by the ops service).
async fn read_reason(req: &HttpRequest, payload: web::Payload, state: &AppState) -> Result<String, ApiError> {
    let body = read_limited(req, payload, 8 * 1024, state.request_timeout)
        .await
        .map_err(|e| ApiError::from_body(e, 8 * 1024))?;
    let parsed: ReasonBody =
        serde_json::from_slice(&body).map_err(|e| ApiError::Malformed(format!("Send {{\"reason\": \"…\"}}: {e}.")))?;
    Ok(parsed.reason)
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
    let id = state.ops.resend_ack(&path, caller.actor(), &reason).await?;
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
    state.ops.retry_delivery(id, caller.actor(), &reason).await?;
    Ok(json(&serde_json::json!({ "id": id, "state": "pending" })))
}
