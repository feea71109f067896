//! The decisions both backends share, written once over small per-backend primitives (the way
//! [`super::batch`] writes tickets): what finishing a job does to its ticket and to the
//! acknowledgement caps, when a delivery may be retried, queueing an acknowledgement again, and
//! recording a webhook delivery (once, with a follow-up only for a first close). Each backend
//! supplies the statements, on one transaction it opens and commits.

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::queue::{
    ack_address, ClaimedJob, Completion, DeliveryState, JobKind, JobOutcome, OutcomeRow, RetryOutcome, WebhookOutcome,
};
use super::rows::parse_id;
use super::{email_domain, StoreError};
use crate::audit::AuditEntry;
use crate::domain::{ClosedSet, IssueAction, IssueEvent};

/// The statements the shared decisions need, on one open transaction.
#[async_trait]
pub(super) trait QueueWrites {
    /// Records the attempt's outcome on a job this holder leases; false when the lease was lost.
    async fn set_job_outcome(
        &mut self,
        job: &ClaimedJob,
        row: &OutcomeRow<'_>,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError>;
    /// Keeps the first acknowledgement's Message-ID on the ticket (follow-ups thread on it).
    async fn keep_ack_message_id(&mut self, ticket_id: i64, message_id: &str) -> Result<(), StoreError>;
    /// Counts a sent acknowledgement under the caps (once per job).
    async fn log_ack(&mut self, job_id: i64, address: &str, domain: &str, now: DateTime<Utc>)
        -> Result<(), StoreError>;
    /// Gives back the slot an acknowledgement reserved.
    async fn release_ack_slot(&mut self, job_id: i64) -> Result<(), StoreError>;
    /// Where the ticket was filed.
    async fn set_issue(&mut self, ticket_id: i64, repo: &str, number: i64, url: &str) -> Result<(), StoreError>;
    /// A delivery's state, locked for this transaction where the backend can.
    async fn delivery_state(&mut self, id: i64) -> Result<Option<String>, StoreError>;
    /// Makes a delivery pending again, due at `at`, with a fresh set of attempts.
    async fn requeue_delivery(&mut self, id: i64, at: DateTime<Utc>) -> Result<(), StoreError>;
    async fn append_audit(&mut self, audit: &AuditEntry) -> Result<(), StoreError>;
    /// Queues a pending job for a ticket, due now (the backend wakes workers where it can).
    async fn queue_job(
        &mut self,
        ticket_id: i64,
        kind: JobKind,
        event_id: Option<i64>,
        now: DateTime<Utc>,
    ) -> Result<i64, StoreError>;
}

/// The statements recording a webhook delivery needs, on one open transaction.
#[async_trait]
pub(super) trait WebhookWrites: QueueWrites {
    /// Notes the delivery id; false when it was noted before.
    async fn note_delivery(&mut self, delivery_id: &str, event: &str, now: DateTime<Utc>) -> Result<bool, StoreError>;
    /// The ticket filed as this issue, `(id, reference)`, locked against concurrent events where
    /// the backend can.
    async fn ticket_for_issue(&mut self, repo: &str, number: i64) -> Result<Option<(i64, String)>, StoreError>;
    /// The kind of the ticket's latest issue event.
    async fn last_event_kind(&mut self, ticket_id: i64) -> Result<Option<String>, StoreError>;
    /// Whether a close with this `closed_at` was recorded before.
    async fn close_recorded(&mut self, ticket_id: i64, closed_at: &str) -> Result<bool, StoreError>;
    /// Records the event on the ticket; its id.
    async fn insert_event(
        &mut self,
        ticket_id: i64,
        issue: &IssueEvent,
        delivery_id: &str,
        now: DateTime<Utc>,
    ) -> Result<i64, StoreError>;
}

/// Records what became of an attempt, with its effect on the ticket and the caps; false (and
/// nothing written) when the job's lease was lost to another worker.
pub(super) async fn finish_job<W: QueueWrites + Send>(
    w: &mut W,
    job: &ClaimedJob,
    outcome: &JobOutcome,
    now: DateTime<Utc>,
) -> Result<bool, StoreError> {
    if !w.set_job_outcome(job, &outcome.row(now), now).await? {
        return Ok(false);
    }
    match outcome {
        JobOutcome::Done(Completion::Ack { message_id, email }) => {
            w.keep_ack_message_id(job.ticket_id, message_id).await?;
            // The slot was reserved before sending; a job that had none still counts.
            let address = ack_address(email);
            w.log_ack(job.id, &address, &email_domain(&address), now).await?;
        }
        JobOutcome::Retry { .. } | JobOutcome::Dead { .. } | JobOutcome::Wait { .. }
            if job.kind == JobKind::AckEmail =>
        {
            // Not sent: the slot goes back.
            w.release_ack_slot(job.id).await?;
        }
        JobOutcome::Done(Completion::Issue { repo, number, url }) => {
            w.set_issue(job.ticket_id, repo, *number, url).await?;
        }
        _ => {}
    }
    Ok(true)
}

/// Makes a dead or skipped delivery pending again, audited; anything else is refused as it is.
pub(super) async fn retry_delivery<W: QueueWrites + Send>(
    w: &mut W,
    id: i64,
    audit: &AuditEntry,
) -> Result<RetryOutcome, StoreError> {
    let Some(state) = w.delivery_state(id).await? else {
        return Ok(RetryOutcome::NotFound);
    };
    let state: DeliveryState = parse_id("delivery state", &state)?;
    if !state.is_retryable() {
        return Ok(RetryOutcome::NotRetryable { state });
    }
    w.requeue_delivery(id, audit.at).await?;
    w.append_audit(audit).await?;
    Ok(RetryOutcome::Queued)
}

/// Queues another acknowledgement for a ticket, audited; the new job's id.
pub(super) async fn queue_ack<W: QueueWrites + Send>(
    w: &mut W,
    ticket_id: i64,
    audit: &AuditEntry,
) -> Result<i64, StoreError> {
    let id = w.queue_job(ticket_id, JobKind::AckEmail, None, audit.at).await?;
    w.append_audit(audit).await?;
    Ok(id)
}

/// Records a webhook delivery once: an issue event on the ticket filed as that issue, and a
/// follow-up for a close, unless the issue was already closed or this close is a replay (delivery
/// ids are not signed: a close replayed under a new id carries the same `closed_at`).
pub(super) async fn record_webhook<W: WebhookWrites + Send>(
    w: &mut W,
    delivery_id: &str,
    event: &str,
    issue: Option<&IssueEvent>,
    now: DateTime<Utc>,
) -> Result<WebhookOutcome, StoreError> {
    if !w.note_delivery(delivery_id, event, now).await? {
        return Ok(WebhookOutcome::Duplicate);
    }
    let Some(issue) = issue else {
        return Ok(WebhookOutcome::Noted);
    };
    let Some((ticket_id, reference)) = w.ticket_for_issue(&issue.repo, issue.number).await? else {
        return Ok(WebhookOutcome::UnknownIssue);
    };
    let last = w.last_event_kind(ticket_id).await?;
    let replayed = match (&issue.closed_at, issue.action) {
        (Some(closed_at), IssueAction::Closed) => w.close_recorded(ticket_id, closed_at).await?,
        _ => false,
    };
    let already_closed = last.as_deref() == Some(IssueAction::Closed.id()) || replayed;
    let event_id = w.insert_event(ticket_id, issue, delivery_id, now).await?;
    let followup_queued = issue.action == IssueAction::Closed && !already_closed;
    if followup_queued {
        w.queue_job(ticket_id, JobKind::FollowupEmail, Some(event_id), now)
            .await?;
    }
    Ok(WebhookOutcome::Recorded {
        reference,
        followup_queued,
    })
}
