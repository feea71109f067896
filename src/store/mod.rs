//! Durable storage: one [`Store`] trait, a SQLite and a PostgreSQL implementation, and the
//! group-commit [`TicketWriter`] in front of them.
//!
//! Migrations (`migrations/<backend>/`, embedded) only add: tables, indexes, and columns that are
//! nullable or have a default; a landed one is never edited, and something is removed only in a
//! release after every binary that used it is gone. So a binary of an earlier release works on the
//! schema of a later one, and `migrate` passes over applied migrations it does not know: a rolling
//! upgrade, an old instance restarting mid-upgrade, and a rollback all start.

mod batch;
mod decisions;
mod postgres;
pub mod queue;
mod rows;
mod sqlite;
mod writer;

use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use secrecy::{ExposeSecret, SecretString};

use crate::audit::AuditEntry;
use crate::classify::Classification;
use crate::domain::{
    Channel, IdempotencyKey, IssueEvent, Reference, RequestType, Submission, Ticket, TicketEvent, TicketStatus,
    TicketSummary,
};
use crate::tokens::{StoredToken, TokenInfo};
use queue::{AckCap, AckCaps, ClaimedJob, Delivery, JobKind, JobOutcome, OutboxStats, RetryOutcome, WebhookOutcome};

pub use postgres::PostgresStore;
pub use sqlite::SqliteStore;
pub use writer::TicketWriter;

/// Which database a store runs on.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, strum::IntoStaticStr, strum::EnumString, strum::EnumIter, strum::Display,
)]
#[strum(serialize_all = "lowercase")]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// Why storage failed. Every variant is answered `503` to a client; the chain is logged once.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error")]
    Database(#[from] sqlx::Error),
    #[error("migration failed")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("stored data is not what this version expects: {0}")]
    Corrupt(String),
    #[error("the ticket writer has stopped")]
    WriterGone,
    #[error("{0}")]
    Conflict(String),
}

impl StoreError {
    /// The database refused what was written (a constraint, a trigger, a value it cannot hold, such
    /// as a NUL in PostgreSQL text), as opposed to being busy, unreachable, full or timing out,
    /// which no ticket of a batch is to blame for.
    pub fn is_refused_content(&self) -> bool {
        match self {
            StoreError::Database(sqlx::Error::Encode(_)) | StoreError::Conflict(_) => true,
            StoreError::Database(sqlx::Error::Database(d)) => {
                let code = d.code().unwrap_or_default();
                if d.try_downcast_ref::<sqlx::sqlite::SqliteError>().is_some() {
                    // SQLite's primary codes: TOOBIG, CONSTRAINT (a trigger's RAISE too), MISMATCH.
                    code.parse::<i32>().is_ok_and(|c| matches!(c & 0xff, 18..=20))
                } else {
                    // PostgreSQL: data exceptions (22…, a NUL among them), integrity constraints
                    // (23…), and an exception raised by a trigger (P0001).
                    code.starts_with("22") || code.starts_with("23") || code == "P0001"
                }
            }
            _ => false,
        }
    }

    /// The error for a log line: the database's code and message, never its detail (PostgreSQL's
    /// DETAIL of a refused row quotes the row, that is the customer's fields).
    pub fn for_log(&self) -> String {
        match self {
            StoreError::Database(sqlx::Error::Database(d)) => {
                format!("database error {}: {}", d.code().unwrap_or_default(), d.message())
            }
            StoreError::Database(e) => format!("database error: {e}"),
            StoreError::Migrate(e) => format!("migration failed: {e}"),
            other => other.to_string(),
        }
    }

    /// A unique constraint refused the write.
    pub(crate) fn from_unique(e: sqlx::Error, what: String) -> StoreError {
        match &e {
            sqlx::Error::Database(d) if d.is_unique_violation() => StoreError::Conflict(what),
            _ => StoreError::Database(e),
        }
    }
}

/// A ticket about to be stored, with the jobs to store beside it.
#[derive(Debug, Clone)]
pub struct NewTicket {
    pub reference: Reference,
    pub created_at: DateTime<Utc>,
    pub channel: Channel,
    pub submission: Submission,
    pub classification: Classification,
    pub idempotency_key: Option<IdempotencyKey>,
    pub jobs: Vec<JobKind>,
}

impl NewTicket {
    pub fn status(&self) -> TicketStatus {
        TicketStatus::of(self.classification.unsupported)
    }
}

/// The result of storing one [`NewTicket`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InsertOutcome {
    /// Stored now, with its jobs.
    Created(TicketSummary),
    /// The idempotency key was used before with the same content: nothing new was stored.
    Repeated(TicketSummary),
    /// The idempotency key was used before with other content: nothing was stored.
    KeyConflict(TicketSummary),
}

/// The storage every backend provides; the conformance suite runs the same cases on each.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// `sqlite` or `postgres`.
    fn backend(&self) -> Backend;

    /// Applies pending migrations.
    async fn migrate(&self) -> Result<(), StoreError>;

    /// Checks the database answers.
    async fn ping(&self) -> Result<(), StoreError>;

    /// Stores a batch in one transaction: each ticket with its jobs, or its earlier twin when the
    /// idempotency key was seen before. Either the whole batch is durable or none of it is.
    async fn insert_tickets(&self, batch: &[NewTicket]) -> Result<Vec<InsertOutcome>, StoreError>;

    async fn ticket_by_reference(&self, reference: &str) -> Result<Option<Ticket>, StoreError>;

    async fn ticket_by_id(&self, id: i64) -> Result<Option<Ticket>, StoreError>;

    async fn deliveries_for_ticket(&self, ticket_id: i64) -> Result<Vec<Delivery>, StoreError>;

    async fn outbox_stats(&self, now: DateTime<Utc>) -> Result<OutboxStats, StoreError>;

    async fn count_tickets(&self) -> Result<i64, StoreError>;

    /// Leases up to `limit` jobs of `kinds` that are due (or whose lease expired) to one worker.
    async fn claim_jobs(
        &self,
        kinds: &[JobKind],
        now: DateTime<Utc>,
        lease: std::time::Duration,
        limit: i64,
    ) -> Result<Vec<ClaimedJob>, StoreError>;

    /// Records the outcome of an attempt, with its effect on the ticket, in one transaction.
    /// `false` when the lease was lost meanwhile (another worker took the job over): nothing recorded.
    async fn finish_job(&self, job: &ClaimedJob, outcome: &JobOutcome, now: DateTime<Utc>) -> Result<bool, StoreError>;

    /// Reserves the acknowledgement slot of job `job_id` under both caps, atomically (also across
    /// instances on one PostgreSQL database): `Ok(None)` when the slot is the job's (reserved now,
    /// or earlier by an attempt of the same job), else the cap that is reached. A reserved slot
    /// counts as sent; [`Store::finish_job`] gives it back when the send fails.
    async fn reserve_ack(&self, job_id: i64, caps: &AckCaps, now: DateTime<Utc>) -> Result<Option<AckCap>, StoreError>;

    /// When the next job of `kinds` falls due, if any is waiting.
    async fn next_due(&self, kinds: &[JobKind]) -> Result<Option<DateTime<Utc>>, StoreError>;

    /// Wakes `wake` whenever another process commits new jobs. PostgreSQL uses LISTEN/NOTIFY;
    /// SQLite has one process, whose writer wakes its workers directly.
    async fn listen_for_jobs(&self, wake: Arc<tokio::sync::Notify>) -> Result<(), StoreError> {
        let _ = wake;
        Ok(())
    }

    /// Makes this process the one that files GitHub issues, so that creates go one at a time per
    /// token even with several instances. `None` while another instance holds the role; dropping
    /// the guard (or the process dying) gives it up.
    async fn try_filer_lock(&self) -> Result<Option<FilerLock>, StoreError> {
        Ok(Some(FilerLock(None)))
    }

    /// Why jobs of `kind` wait, if some wait on something outside them (configuration, visibility).
    async fn waiting_reason(&self, kind: JobKind) -> Result<Option<String>, StoreError>;

    /// The latest error of a job of `kind` that failed and waits for its retry, if any does.
    async fn failing_reason(&self, kind: JobKind) -> Result<Option<String>, StoreError>;

    /// Records a webhook delivery once, in one transaction with what it causes: for an issue the
    /// service filed, the event on the ticket and, for a close, a follow-up email job.
    async fn record_webhook(
        &self,
        delivery_id: &str,
        event: &str,
        issue: Option<&IssueEvent>,
        now: DateTime<Utc>,
    ) -> Result<WebhookOutcome, StoreError>;

    async fn ticket_event(&self, id: i64) -> Result<Option<TicketEvent>, StoreError>;

    /// Stores a new ops token with its audit entry, in one transaction. `Conflict` when a live
    /// token already has the name.
    async fn create_token(
        &self,
        name: &str,
        token_id: &str,
        secret_hash: &str,
        scopes: &str,
        audit: &AuditEntry,
    ) -> Result<(), StoreError>;

    /// Revokes the live token `name` with its audit entry; `false` when there is none.
    async fn revoke_token(&self, name: &str, audit: &AuditEntry) -> Result<bool, StoreError>;

    /// Every token, live and revoked, newest first.
    async fn list_tokens(&self) -> Result<Vec<TokenInfo>, StoreError>;

    /// The live token with this id.
    async fn live_token(&self, token_id: &str) -> Result<Option<StoredToken>, StoreError>;

    /// The audit log, newest first.
    async fn audit_log(&self, limit: i64) -> Result<Vec<AuditEntry>, StoreError>;

    /// Tickets newest first, optionally of one status (`received`, `unsupported`) and filed type.
    async fn list_tickets(
        &self,
        status: Option<TicketStatus>,
        request_type: Option<RequestType>,
        limit: i64,
    ) -> Result<Vec<Ticket>, StoreError>;

    /// A ticket's issue events, oldest first.
    async fn ticket_events(&self, ticket_id: i64) -> Result<Vec<TicketEvent>, StoreError>;

    /// Deliveries, dead ones first, then newest first; only dead ones with `dead_only`.
    async fn list_deliveries(&self, dead_only: bool, limit: i64) -> Result<Vec<Delivery>, StoreError>;

    /// Makes a dead or skipped delivery pending again (due now, attempts reset, the GitHub marker
    /// search window kept), with its audit entry, in one transaction.
    async fn retry_delivery(&self, id: i64, audit: &AuditEntry) -> Result<RetryOutcome, StoreError>;

    /// Queues another acknowledgement for a ticket (the customer did not get it), with its audit
    /// entry, in one transaction; the new job's id. The caps still apply when it is sent.
    async fn queue_ack(&self, ticket_id: i64, audit: &AuditEntry) -> Result<i64, StoreError>;
}

/// Held while this process files GitHub issues (see [`Store::try_filer_lock`]).
pub struct FilerLock(#[allow(dead_code)] Option<Box<dyn std::any::Any + Send + Sync>>);

/// The domain of an address, lowercased: acknowledgements are capped per domain too.
pub fn email_domain(email: &str) -> String {
    email.rsplit_once('@').map_or(email, |(_, d)| d).trim().to_lowercase()
}

/// Opens the database named by `url` (without migrating it).
pub async fn connect(url: &SecretString, max_connections: u32) -> Result<Arc<dyn Store>, StoreError> {
    let url = url.expose_secret();
    if url.starts_with("sqlite:") {
        Ok(Arc::new(SqliteStore::connect(url, max_connections).await?))
    } else {
        Ok(Arc::new(PostgresStore::connect(url, max_connections).await?))
    }
}
