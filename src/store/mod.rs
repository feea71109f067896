//! Durable storage: one [`Store`] trait, a SQLite and a PostgreSQL implementation, and the
//! group-commit [`TicketWriter`] in front of them.
//!
//! Migrations (`migrations/<backend>/`, embedded) only add: tables, indexes, and columns that are
//! nullable or have a default; a landed one is never edited, and something is removed only in a
//! release after every binary that used it is gone. So a binary of an earlier release works on the
//! schema of a later one, and `migrate` passes over applied migrations it does not know: a rolling
//! upgrade, an old instance restarting mid-upgrade, and a rollback all start.

mod postgres;
mod sqlite;
mod writer;

use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use secrecy::{ExposeSecret, SecretString};
use serde::Serialize;

use crate::classify::{Classification, Signal};
use crate::domain::{IdempotencyKey, Reference, RequestType, Submission, UnsupportedReason};
use crate::ops::{AuditEntry, StoredToken, TokenInfo};

pub use postgres::PostgresStore;
pub use sqlite::SqliteStore;
pub use writer::TicketWriter;

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

    /// A unique constraint refused the write.
    pub(crate) fn from_unique(e: sqlx::Error, what: String) -> StoreError {
        match &e {
            sqlx::Error::Database(d) if d.is_unique_violation() => StoreError::Conflict(what),
            _ => StoreError::Database(e),
        }
    }
}

/// Where a submission came in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Channel {
    Api,
    Form,
}

impl Channel {
    pub fn id(self) -> &'static str {
        match self {
            Channel::Api => "api",
            Channel::Form => "form",
        }
    }

    fn from_id(s: &str) -> Result<Channel, StoreError> {
        match s {
            "api" => Ok(Channel::Api),
            "form" => Ok(Channel::Form),
            other => Err(StoreError::Corrupt(format!("unknown source `{other}`"))),
        }
    }
}

/// A delivery job written with the ticket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum JobKind {
    AckEmail,
    GithubIssue,
    FollowupEmail,
}

impl JobKind {
    pub fn id(self) -> &'static str {
        match self {
            JobKind::AckEmail => "ack_email",
            JobKind::GithubIssue => "github_issue",
            JobKind::FollowupEmail => "followup_email",
        }
    }

    fn from_id(s: &str) -> Result<JobKind, StoreError> {
        match s {
            "ack_email" => Ok(JobKind::AckEmail),
            "github_issue" => Ok(JobKind::GithubIssue),
            "followup_email" => Ok(JobKind::FollowupEmail),
            other => Err(StoreError::Corrupt(format!("unknown delivery kind `{other}`"))),
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
    pub fn status(&self) -> &'static str {
        if self.classification.unsupported.is_some() {
            "unsupported"
        } else {
            "received"
        }
    }
}

/// What a client is told about its ticket: the same on a first submission and on a repeat.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TicketSummary {
    pub reference: String,
    pub picked_type: RequestType,
    pub filed_type: RequestType,
    pub unsupported: Option<UnsupportedReason>,
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

/// A stored ticket, as the ops views and the workers read it.
#[derive(Debug, Clone, Serialize)]
pub struct Ticket {
    pub id: i64,
    pub reference: String,
    pub created_at: DateTime<Utc>,
    pub channel: Channel,
    pub name: String,
    pub email: String,
    pub picked_type: RequestType,
    pub filed_type: RequestType,
    pub unsupported: Option<UnsupportedReason>,
    pub needs_triage: bool,
    pub signals: Vec<Signal>,
    pub subject: String,
    pub message: String,
    pub account: Option<String>,
    pub page_url: Option<String>,
    /// The acknowledgement's Message-ID once one was sent (follow-ups thread on it).
    pub ack_message_id: Option<String>,
    /// Where the ticket was filed, once it was.
    pub github_issue: Option<FiledIssue>,
}

impl Ticket {
    /// `received`, or `unsupported` for a request the policy answers.
    pub fn status(&self) -> &'static str {
        if self.unsupported.is_some() {
            "unsupported"
        } else {
            "received"
        }
    }
}

/// A GitHub issue filed for a ticket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FiledIssue {
    pub repo: String,
    pub number: i64,
    pub url: String,
}

impl FiledIssue {
    fn from_columns(repo: Option<String>, number: Option<i64>, url: Option<String>) -> Option<FiledIssue> {
        Some(FiledIssue {
            repo: repo?,
            number: number?,
            url: url?,
        })
    }
}

impl Ticket {
    pub fn summary(&self) -> TicketSummary {
        TicketSummary {
            reference: self.reference.clone(),
            picked_type: self.picked_type,
            filed_type: self.filed_type,
            unsupported: self.unsupported,
        }
    }
}

/// One delivery job.
#[derive(Debug, Clone, Serialize)]
pub struct Delivery {
    pub id: i64,
    pub ticket_id: i64,
    pub kind: JobKind,
    pub state: String,
    pub attempts: i32,
    pub run_at: DateTime<Utc>,
    pub last_error: Option<String>,
    pub done_at: Option<DateTime<Utc>>,
}

/// What `retry_delivery` found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RetryOutcome {
    /// Pending again, due now, with a fresh set of attempts.
    Queued,
    NotFound,
    /// Only dead or skipped deliveries are retried; this one is in `state`.
    NotRetryable {
        state: String,
    },
}

/// A job a worker holds under a lease. Only the holder of `lease_token` may record its outcome.
#[derive(Debug, Clone)]
pub struct ClaimedJob {
    pub id: i64,
    pub ticket_id: i64,
    pub kind: JobKind,
    /// Attempts including this one.
    pub attempts: i32,
    pub lease_token: String,
    /// When the first attempt started; the GitHub filer looks for its marker among issues since then.
    pub first_attempt_at: DateTime<Utc>,
    /// The issue event a follow-up email answers.
    pub event_id: Option<i64>,
}

/// What GitHub told us happened to an issue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IssueAction {
    Closed,
    Reopened,
}

impl IssueAction {
    pub fn id(self) -> &'static str {
        match self {
            IssueAction::Closed => "issue_closed",
            IssueAction::Reopened => "issue_reopened",
        }
    }

    fn from_id(s: &str) -> Result<IssueAction, StoreError> {
        match s {
            "issue_closed" => Ok(IssueAction::Closed),
            "issue_reopened" => Ok(IssueAction::Reopened),
            other => Err(StoreError::Corrupt(format!("unknown event kind {other}"))),
        }
    }
}

/// An `issues` webhook event about an issue, as far as the service cares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssueEvent {
    /// `owner/name`, compared case-insensitively (as GitHub does).
    pub repo: String,
    pub number: i64,
    pub action: IssueAction,
    /// `completed`, `not_planned`, `duplicate`, … for a close.
    pub state_reason: Option<String>,
    /// The issue's `closed_at` as GitHub sent it: the same close replayed carries the same one.
    pub closed_at: Option<String>,
}

/// What recording a webhook delivery did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WebhookOutcome {
    /// This delivery id was handled before: nothing done.
    Duplicate,
    /// Noted; nothing in it concerns a ticket.
    Noted,
    /// About an issue the service did not file: noted, nothing else.
    UnknownIssue,
    /// Recorded on the ticket; a close queued a follow-up email.
    Recorded { reference: String, followup_queued: bool },
}

/// One recorded issue event of a ticket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TicketEvent {
    pub id: i64,
    pub ticket_id: i64,
    pub at: DateTime<Utc>,
    #[serde(serialize_with = "serialize_action")]
    pub action: IssueAction,
    pub state_reason: Option<String>,
}

fn serialize_action<S: serde::Serializer>(a: &IssueAction, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(a.id())
}

/// What became of an attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobOutcome {
    /// Done. An acknowledgement records its Message-ID and recipient; an issue where it was filed.
    Done(Completion),
    /// Try again at this time.
    Retry { at: DateTime<Utc>, error: String },
    /// Given up: a configuration or content fault, or the last attempt failed.
    Dead { error: String },
    /// Deliberately not done (e.g. the per-address acknowledgement cap), with the reason.
    Skipped { reason: String },
    /// Cannot be done yet for a reason outside the job (missing configuration, a rate limit): wait
    /// until `at` without counting the attempt.
    Wait { at: DateTime<Utc>, reason: String },
}

impl JobOutcome {
    /// The result word metrics count it under.
    pub fn result(&self) -> &'static str {
        match self {
            JobOutcome::Done(_) => "done",
            JobOutcome::Retry { .. } => "retry",
            JobOutcome::Dead { .. } => "dead",
            JobOutcome::Skipped { .. } => "skipped",
            JobOutcome::Wait { .. } => "wait",
        }
    }
}

/// The columns an outcome sets on its job row, shared by both backends.
struct OutcomeRow<'a> {
    state: &'static str,
    run_at: Option<DateTime<Utc>>,
    error: Option<&'a str>,
    done_at: Option<DateTime<Utc>>,
    /// 1 when the attempt is not to count (a wait), else 0.
    refund: i32,
}

impl JobOutcome {
    fn row(&self, now: DateTime<Utc>) -> OutcomeRow<'_> {
        let (state, run_at, error, done_at) = match self {
            JobOutcome::Done(_) => ("done", None, None, Some(now)),
            JobOutcome::Retry { at, error } => ("pending", Some(*at), Some(error.as_str()), None),
            JobOutcome::Dead { error } => ("dead", None, Some(error.as_str()), None),
            JobOutcome::Skipped { reason } => ("skipped", None, Some(reason.as_str()), Some(now)),
            JobOutcome::Wait { at, reason } => ("pending", Some(*at), Some(reason.as_str()), None),
        };
        OutcomeRow {
            state,
            run_at,
            error,
            done_at,
            refund: i32::from(matches!(self, JobOutcome::Wait { .. })),
        }
    }
}

/// The record a finished job leaves on its ticket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Completion {
    Plain,
    Ack { message_id: String, email: String },
    Issue { repo: String, number: i64, url: String },
}

/// The caps an acknowledgement is sent under, for one address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AckCaps {
    /// The address, lowercased ([`ack_address`]).
    pub email: String,
    pub domain: String,
    pub per_email: i64,
    pub per_email_since: DateTime<Utc>,
    pub per_domain: i64,
    pub per_domain_since: DateTime<Utc>,
}

/// Which acknowledgement cap a reservation ran into.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AckCap {
    PerAddress,
    PerDomain,
}

/// An address as the acknowledgement caps count it: trimmed and lowercased, the local part too
/// (as the rate limiter does), so `Victim@` and `vIctim@` are one address.
pub fn ack_address(email: &str) -> String {
    email.trim().to_lowercase()
}

/// Outbox counts for health and metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct OutboxStats {
    /// Jobs neither done nor dead (nor skipped), waiting retries included.
    pub pending: i64,
    pub dead: i64,
    pub oldest_pending_seconds: i64,
}

/// The storage every backend provides; the conformance suite runs the same cases on each.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// `sqlite` or `postgres`.
    fn backend(&self) -> &'static str;

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
        status: Option<&str>,
        request_type: Option<&str>,
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

/// Scopes as stored (`read,ops`), back into a list.
pub(crate) fn stored_scopes(s: &str) -> Result<Vec<crate::ops::Scope>, StoreError> {
    crate::ops::parse_scopes(s).map_err(StoreError::Corrupt)
}

/// Held while this process files GitHub issues (see [`Store::try_filer_lock`]).
pub struct FilerLock(#[allow(dead_code)] Option<Box<dyn std::any::Any + Send + Sync>>);

/// The domain of an address, lowercased: acknowledgements are capped per domain too.
pub fn email_domain(email: &str) -> String {
    email.rsplit_once('@').map_or(email, |(_, d)| d).trim().to_lowercase()
}

/// A fresh lease token.
fn lease_token() -> String {
    use rand::Rng;
    let mut rng = rand::thread_rng();
    (0..16).map(|_| format!("{:02x}", rng.gen::<u8>())).collect()
}

/// `kind IN (...)` for a list of job kinds; ids are fixed identifiers, never input.
fn kinds_sql(kinds: &[JobKind]) -> String {
    let list: Vec<String> = kinds.iter().map(|k| format!("'{}'", k.id())).collect();
    if list.is_empty() {
        "FALSE".to_owned()
    } else {
        format!("kind IN ({})", list.join(", "))
    }
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

/// Rows hold type and reason ids; anything else means the database was edited by hand.
fn parse_type(s: &str) -> Result<RequestType, StoreError> {
    RequestType::from_id(s).ok_or_else(|| StoreError::Corrupt(format!("unknown request type `{s}`")))
}

fn parse_reason(s: Option<&str>) -> Result<Option<UnsupportedReason>, StoreError> {
    s.map(|r| {
        UnsupportedReason::from_id(r).ok_or_else(|| StoreError::Corrupt(format!("unknown unsupported reason `{r}`")))
    })
    .transpose()
}

fn signals_json(c: &Classification) -> String {
    // Serialising plain strings into JSON cannot fail.
    serde_json::to_string(&c.signals).unwrap_or_else(|_| "[]".to_owned())
}

fn parse_signals(s: &str) -> Result<Vec<Signal>, StoreError> {
    serde_json::from_str(s).map_err(|e| StoreError::Corrupt(format!("signals: {e}")))
}

/// The order in which a batch is written: by idempotency key, so that two instances writing
/// overlapping batches lock the same keys in the same order and cannot deadlock.
fn write_order(batch: &[NewTicket]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..batch.len()).collect();
    order.sort_by(|a, b| {
        let ka = batch[*a].idempotency_key.as_ref().map(IdempotencyKey::as_str);
        let kb = batch[*b].idempotency_key.as_ref().map(IdempotencyKey::as_str);
        ka.cmp(&kb)
    });
    order
}

/// How many times a reference is drawn again after a collision before giving up.
const REFERENCE_ATTEMPTS: usize = 8;

/// Tickets per multi-row INSERT: 17 parameters each stays under SQLite's 32,766 and PostgreSQL's
/// 65,535 bound parameters per statement.
const TICKETS_PER_STATEMENT: usize = 500;
/// Jobs per multi-row INSERT (5 parameters each).
const JOBS_PER_STATEMENT: usize = 2_000;

/// Multi-row statements of up to this many rows stay prepared in the connection's statement cache
/// (one per row count, at most this many per table); larger ones, rare and costly to keep, are
/// prepared for each use. Preparing a statement of dozens of rows costs about as much as running it.
const CACHED_STATEMENT_ROWS: usize = 64;

/// Statement cache size per connection: the multi-row statements of both tables and the rest.
pub(crate) const STATEMENT_CACHE_CAPACITY: usize = 2 * CACHED_STATEMENT_ROWS + 64;

fn cache_statement(rows: usize) -> bool {
    rows <= CACHED_STATEMENT_ROWS
}

/// Where one ticket of a batch ended up.
enum Placed {
    /// Inserted now with this id and reference (the reference may have been drawn again).
    New { id: i64, reference: String },
    /// Not inserted: its idempotency key was seen before.
    Existing(InsertOutcome),
}

impl NewTicket {
    fn created(&self, reference: String) -> InsertOutcome {
        InsertOutcome::Created(TicketSummary {
            reference,
            picked_type: self.classification.picked,
            filed_type: self.classification.filed_as,
            unsupported: self.classification.unsupported,
        })
    }
}

/// Matches the rows a multi-row INSERT returned to the tickets of `chunk`. Rows come back in no
/// promised order, so they are matched by reference; a reference is claimed once, so that of two
/// tickets drawing the same reference only the one actually inserted gets the row.
fn claim_inserted(batch: &[NewTicket], chunk: &[usize], inserted: Vec<(i64, String)>) -> Vec<(usize, Option<i64>)> {
    let mut ids: std::collections::HashMap<String, i64> = inserted.into_iter().map(|(id, r)| (r, id)).collect();
    chunk
        .iter()
        .map(|&i| (i, ids.remove(batch[i].reference.as_str())))
        .collect()
}

/// The batch algorithm both backends share: a multi-row INSERT per chunk for the common case, one
/// statement per ticket for the rest (repeats, conflicts, reference collisions), then the jobs of
/// every new ticket in multi-row INSERTs. All on one transaction supplied by the backend.
#[async_trait]
trait BatchWriter {
    /// Inserts the chunk, skipping conflicts; returns `(id, reference)` of the rows inserted.
    async fn insert_many(&mut self, batch: &[NewTicket], chunk: &[usize]) -> Result<Vec<(i64, String)>, StoreError>;
    /// Places one ticket the fast path skipped.
    async fn insert_one(&mut self, ticket: &NewTicket) -> Result<Placed, StoreError>;
    /// Inserts pending jobs `(ticket id, kind, created at)`.
    async fn insert_jobs(&mut self, jobs: &[(i64, JobKind, DateTime<Utc>)]) -> Result<(), StoreError>;
}

async fn write_batch<W: BatchWriter + Send>(w: &mut W, batch: &[NewTicket]) -> Result<Vec<InsertOutcome>, StoreError> {
    let order = write_order(batch);
    let mut outcomes: Vec<Option<InsertOutcome>> = vec![None; batch.len()];
    let mut jobs = Vec::with_capacity(batch.len() * 2);
    for chunk in order.chunks(TICKETS_PER_STATEMENT) {
        let inserted = w.insert_many(batch, chunk).await?;
        for (i, id) in claim_inserted(batch, chunk, inserted) {
            if let Some(id) = id {
                let t = &batch[i];
                jobs.extend(t.jobs.iter().map(|k| (id, *k, t.created_at)));
                outcomes[i] = Some(t.created(t.reference.to_string()));
            }
        }
    }
    for &i in &order {
        if outcomes[i].is_none() {
            let t = &batch[i];
            outcomes[i] = Some(match w.insert_one(t).await? {
                Placed::New { id, reference } => {
                    jobs.extend(t.jobs.iter().map(|k| (id, *k, t.created_at)));
                    t.created(reference)
                }
                Placed::Existing(outcome) => outcome,
            });
        }
    }
    for chunk in jobs.chunks(JOBS_PER_STATEMENT) {
        w.insert_jobs(chunk).await?;
    }
    Ok(outcomes.into_iter().flatten().collect())
}
