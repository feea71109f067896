//! The ops service: what the ops commands (`intake tickets|deliveries|tokens|audit`) and the ops
//! API (`/api/v1/…`) do, written once. Both doors parse their input into the typed filters here,
//! under one limit policy, and map [`OpsError`] to their own way of saying it. Every change needs
//! a reason and lands in the audit log in the same transaction.

mod views;

use std::sync::Arc;

use tokio::sync::Notify;

pub use views::{timeline, TicketLine, TimelineEntry};

use crate::audit::{check_reason, AuditEntry};
use crate::domain::{ClosedSet, FieldError, Reference, RequestType, Ticket, TicketStatus};
use crate::store::queue::{Delivery, DeliveryState, RetryOutcome};
use crate::store::{Store, StoreError};
use crate::tokens::{generate_token, parse_scopes, scopes_to_string, valid_token_name, Scope, TokenInfo};

/// How many rows a list returns by default, and at most: the same on the command line and the API.
pub const DEFAULT_LIMIT: i64 = 50;
pub const MAX_LIMIT: i64 = 500;

/// A list's length, within `1..=MAX_LIMIT`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limit(i64);

impl Limit {
    /// The limit asked for, or the default; out of range is refused, never clamped.
    pub fn parse(asked: Option<i64>) -> Result<Limit, FieldError> {
        let limit = asked.unwrap_or(DEFAULT_LIMIT);
        if (1..=MAX_LIMIT).contains(&limit) {
            Ok(Limit(limit))
        } else {
            Err(FieldError::new("limit", format!("must be between 1 and {MAX_LIMIT}")))
        }
    }

    pub fn get(self) -> i64 {
        self.0
    }
}

impl Default for Limit {
    fn default() -> Self {
        Limit(DEFAULT_LIMIT)
    }
}

/// Which tickets a list shows, newest first.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TicketFilter {
    pub status: Option<TicketStatus>,
    pub request_type: Option<RequestType>,
    pub limit: Limit,
}

impl TicketFilter {
    /// The filter from its text fields (`status`, `type`, `limit`), with every field's fault.
    pub fn parse(
        status: Option<&str>,
        request_type: Option<&str>,
        limit: Option<i64>,
    ) -> Result<Self, Vec<FieldError>> {
        let mut errors = Vec::new();
        let status = parse_field::<TicketStatus>("status", status, &mut errors);
        let request_type = parse_field::<RequestType>("type", request_type, &mut errors);
        let limit = Limit::parse(limit).map_err(|e| errors.push(e)).ok();
        match (errors.is_empty(), limit) {
            (true, Some(limit)) => Ok(TicketFilter {
                status,
                request_type,
                limit,
            }),
            _ => Err(errors),
        }
    }
}

fn parse_field<T: ClosedSet>(field: &str, value: Option<&str>, errors: &mut Vec<FieldError>) -> Option<T> {
    let value = value?;
    let parsed = T::parse(value);
    if parsed.is_none() {
        errors.push(FieldError::new(field, format!("must be {}", T::ids_listed())));
    }
    parsed
}

/// Why an ops action did not happen.
#[derive(Debug, thiserror::Error)]
pub enum OpsError {
    #[error("no ticket {0}")]
    NoTicket(String),
    #[error("no delivery {0}")]
    NoDelivery(i64),
    #[error("delivery {id} is {state}; only dead or skipped deliveries are retried")]
    NotRetryable { id: i64, state: DeliveryState },
    #[error("there is no live token named `{0}`")]
    NoToken(String),
    /// Input that is not acceptable, per field.
    #[error("{}", .0.iter().map(|e| format!("{}: {}", e.field, e.message)).collect::<Vec<_>>().join("; "))]
    Invalid(Vec<FieldError>),
    /// Storage refused a change as conflicting (a token name in use).
    #[error("{0}")]
    Conflict(String),
    #[error("storage unavailable")]
    Store(#[source] StoreError),
}

impl From<StoreError> for OpsError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Conflict(m) => OpsError::Conflict(m),
            other => OpsError::Store(other),
        }
    }
}

/// A ticket with everything ops see of it.
#[derive(Debug)]
pub struct TicketView {
    pub ticket: Ticket,
    pub deliveries: Vec<Delivery>,
    pub timeline: Vec<TimelineEntry>,
}

/// A token as created: its secret is shown this once.
#[derive(Debug)]
pub struct CreatedToken {
    pub name: String,
    pub scopes: Vec<Scope>,
    pub token: String,
}

/// The ops service over one store. `wake` (in the serving process) starts delivery at once after
/// a change; from the command line a running service finds the job on its own.
#[derive(Clone)]
pub struct Ops {
    store: Arc<dyn Store>,
    wake: Option<Arc<Notify>>,
}

fn reason_of(text: &str) -> Result<String, OpsError> {
    check_reason(text).map_err(|m| OpsError::Invalid(vec![FieldError::new("reason", m)]))
}

impl Ops {
    pub fn new(store: Arc<dyn Store>, wake: Option<Arc<Notify>>) -> Ops {
        Ops { store, wake }
    }

    fn wake(&self) {
        if let Some(w) = &self.wake {
            w.notify_one();
        }
    }

    pub async fn tickets(&self, filter: &TicketFilter) -> Result<Vec<Ticket>, OpsError> {
        Ok(self
            .store
            .list_tickets(filter.status, filter.request_type, filter.limit.get())
            .await?)
    }

    async fn find(&self, reference: &str) -> Result<Ticket, OpsError> {
        let missing = || OpsError::NoTicket(reference.trim().to_owned());
        let parsed = Reference::parse(reference.trim()).ok_or_else(missing)?;
        self.store
            .ticket_by_reference(parsed.as_str())
            .await?
            .ok_or_else(missing)
    }

    /// One ticket as stored, with its deliveries, its issue events and its timeline.
    pub async fn ticket(&self, reference: &str) -> Result<TicketView, OpsError> {
        let ticket = self.find(reference).await?;
        let deliveries = self.store.deliveries_for_ticket(ticket.id).await?;
        let events = self.store.ticket_events(ticket.id).await?;
        let timeline = timeline(&ticket, &deliveries, &events);
        Ok(TicketView {
            ticket,
            deliveries,
            timeline,
        })
    }

    /// Queues the acknowledgement again (the customer did not get it); the new delivery's id.
    pub async fn resend_ack(&self, reference: &str, actor: String, reason: &str) -> Result<i64, OpsError> {
        let reason = reason_of(reason)?;
        let ticket = self.find(reference).await?;
        let audit = AuditEntry::new(actor, "ticket.resend_ack", ticket.reference.clone(), reason);
        let id = self.store.queue_ack(ticket.id, &audit).await?;
        self.wake();
        Ok(id)
    }

    pub async fn deliveries(&self, dead_only: bool, limit: Limit) -> Result<Vec<Delivery>, OpsError> {
        Ok(self.store.list_deliveries(dead_only, limit.get()).await?)
    }

    /// Makes a dead (or skipped) delivery pending again, with a fresh set of attempts.
    pub async fn retry_delivery(&self, id: i64, actor: String, reason: &str) -> Result<(), OpsError> {
        let reason = reason_of(reason)?;
        let audit = AuditEntry::new(actor, "delivery.retry", format!("delivery {id}"), reason);
        match self.store.retry_delivery(id, &audit).await? {
            RetryOutcome::Queued => {
                tracing::info!(delivery = id, actor = %audit.actor, "delivery queued again");
                self.wake();
                Ok(())
            }
            RetryOutcome::NotFound => Err(OpsError::NoDelivery(id)),
            RetryOutcome::NotRetryable { state } => Err(OpsError::NotRetryable { id, state }),
        }
    }

    pub async fn audit_log(&self, limit: Limit) -> Result<Vec<AuditEntry>, OpsError> {
        Ok(self.store.audit_log(limit.get()).await?)
    }

    pub async fn tokens(&self) -> Result<Vec<TokenInfo>, OpsError> {
        Ok(self.store.list_tokens().await?)
    }

    /// Makes a token; only its hash is stored.
    pub async fn create_token(
        &self,
        name: &str,
        scopes: &str,
        actor: String,
        reason: &str,
    ) -> Result<CreatedToken, OpsError> {
        let mut errors = Vec::new();
        if !valid_token_name(name) {
            errors.push(FieldError::new(
                "name",
                "must be 1 to 64 characters: letters, digits, '.', '_', '-'",
            ));
        }
        let scopes = parse_scopes(scopes)
            .map_err(|m| errors.push(FieldError::new("scopes", m)))
            .ok();
        let reason = check_reason(reason)
            .map_err(|m| errors.push(FieldError::new("reason", m)))
            .ok();
        let (Some(scopes), Some(reason), true) = (scopes, reason, errors.is_empty()) else {
            return Err(OpsError::Invalid(errors));
        };
        let token = generate_token();
        let scope_list = scopes_to_string(&scopes);
        let mut audit = AuditEntry::new(actor, "token.create", name.to_owned(), reason);
        audit.detail = Some(format!("scopes {scope_list}"));
        self.store
            .create_token(name, &token.token_id, &token.secret_hash, &scope_list, &audit)
            .await?;
        Ok(CreatedToken {
            name: name.to_owned(),
            scopes,
            token: token.token,
        })
    }

    pub async fn revoke_token(&self, name: &str, actor: String, reason: &str) -> Result<(), OpsError> {
        let reason = reason_of(reason)?;
        let audit = AuditEntry::new(actor, "token.revoke", name.to_owned(), reason);
        if self.store.revoke_token(name, &audit).await? {
            Ok(())
        } else {
            Err(OpsError::NoToken(name.to_owned()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_parse_typed_and_refuse_every_bad_field_at_once() {
        let f = TicketFilter::parse(Some("unsupported"), Some("billing"), Some(10)).unwrap();
        assert_eq!(f.status, Some(TicketStatus::Unsupported));
        assert_eq!(f.request_type, Some(RequestType::Billing));
        assert_eq!(f.limit.get(), 10);
        assert_eq!(TicketFilter::parse(None, None, None).unwrap(), TicketFilter::default());
        let errors = TicketFilter::parse(Some("open"), Some("sales"), Some(501)).unwrap_err();
        let fields: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, ["status", "type", "limit"]);
        assert_eq!(errors[0].message, "must be received or unsupported");
        assert_eq!(
            errors[1].message,
            "must be account, billing, product, security or availability"
        );
    }

    #[test]
    fn limits_are_refused_out_of_range_not_clamped() {
        assert_eq!(Limit::parse(None).unwrap().get(), DEFAULT_LIMIT);
        assert_eq!(Limit::parse(Some(MAX_LIMIT)).unwrap().get(), MAX_LIMIT);
        for bad in [0, -1, MAX_LIMIT + 1, 10_000] {
            assert_eq!(Limit::parse(Some(bad)).unwrap_err().field, "limit");
        }
    }
}
