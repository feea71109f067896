//! The delivery queue's values: job kinds and states, a claimed job, what became of an attempt,
//! the acknowledgement caps, and what recording a webhook did.

use chrono::{DateTime, Utc};
use serde::Serialize;

/// A delivery job written with the ticket.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    Serialize,
    strum::IntoStaticStr,
    strum::EnumString,
    strum::EnumIter,
    strum::Display,
)]
#[serde(rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
pub enum JobKind {
    AckEmail,
    GithubIssue,
    FollowupEmail,
}

/// Why a pending delivery waits rather than being attempted: something outside the job.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    Serialize,
    strum::IntoStaticStr,
    strum::EnumString,
    strum::EnumIter,
    strum::Display,
)]
#[serde(rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
pub enum WaitReason {
    /// No token or no routes (such jobs are not even claimed by a process without them).
    GithubNotConfigured,
    /// No `github.routes.<type>.repo` for the ticket's type.
    NoRoute,
    /// A security ticket whose route is a public repository.
    PublicSecurityRoute,
    /// GitHub's rate limit, until its reset time.
    RateLimited,
}

/// Where a delivery job stands.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    Serialize,
    strum::IntoStaticStr,
    strum::EnumString,
    strum::EnumIter,
    strum::Display,
)]
#[serde(rename_all = "lowercase")]
#[strum(serialize_all = "lowercase")]
pub enum DeliveryState {
    /// Due at `run_at` (a first attempt, a retry or a wait).
    Pending,
    /// Held by a worker under a lease.
    Running,
    Done,
    /// Given up; an operator may retry it.
    Dead,
    /// Deliberately not done (a cap); an operator may retry it.
    Skipped,
}

impl DeliveryState {
    /// Whether an operator may queue it again (`deliveries retry`).
    pub fn is_retryable(self) -> bool {
        matches!(self, DeliveryState::Dead | DeliveryState::Skipped)
    }
}

/// One delivery job.
#[derive(Debug, Clone, Serialize)]
pub struct Delivery {
    pub id: i64,
    pub ticket_id: i64,
    pub kind: JobKind,
    pub state: DeliveryState,
    pub attempts: i32,
    pub run_at: DateTime<Utc>,
    pub last_error: Option<String>,
    /// Why it waits, while it does.
    pub wait_reason: Option<WaitReason>,
    pub done_at: Option<DateTime<Utc>>,
}

impl Delivery {
    /// What a person is told about its last attempt: why it waits, or what failed.
    pub fn note(&self) -> Option<String> {
        match (self.wait_reason, &self.last_error) {
            (Some(reason), detail) => Some(format!("waiting ({reason}): {}", detail.as_deref().unwrap_or(""))),
            (None, error) => error.clone(),
        }
    }
}

/// What `retry_delivery` found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RetryOutcome {
    /// Pending again, due now, with a fresh set of attempts.
    Queued,
    NotFound,
    /// Only dead or skipped deliveries are retried; this one is in `state`.
    NotRetryable {
        state: DeliveryState,
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
    /// An earlier attempt was made, by this job's count or before an operator's retry reset it:
    /// its effect (an issue created before the answer was lost) may exist.
    pub tried_before: bool,
    /// The issue event a follow-up email answers.
    pub event_id: Option<i64>,
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
    /// until `at` without counting the attempt. `detail` says it for a person.
    Wait {
        at: DateTime<Utc>,
        reason: WaitReason,
        detail: String,
    },
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
pub(super) struct OutcomeRow<'a> {
    pub state: DeliveryState,
    pub run_at: Option<DateTime<Utc>>,
    pub error: Option<&'a str>,
    pub done_at: Option<DateTime<Utc>>,
    /// Set for a wait, cleared otherwise.
    pub wait_reason: Option<WaitReason>,
    /// 1 when the attempt is not to count (a wait), else 0.
    pub refund: i32,
}

impl JobOutcome {
    pub(super) fn row(&self, now: DateTime<Utc>) -> OutcomeRow<'_> {
        let (state, run_at, error, done_at) = match self {
            JobOutcome::Done(_) => (DeliveryState::Done, None, None, Some(now)),
            JobOutcome::Retry { at, error } => (DeliveryState::Pending, Some(*at), Some(error.as_str()), None),
            JobOutcome::Dead { error } => (DeliveryState::Dead, None, Some(error.as_str()), None),
            JobOutcome::Skipped { reason } => (DeliveryState::Skipped, None, Some(reason.as_str()), Some(now)),
            JobOutcome::Wait { at, detail, .. } => (DeliveryState::Pending, Some(*at), Some(detail.as_str()), None),
        };
        OutcomeRow {
            state,
            run_at,
            error,
            done_at,
            wait_reason: match self {
                JobOutcome::Wait { reason, .. } => Some(*reason),
                _ => None,
            },
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::ClosedSet;

    #[test]
    fn ids_round_trip_and_pad_in_columns() {
        for state in DeliveryState::all() {
            assert_eq!(DeliveryState::parse(state.id()), Some(state));
        }
        for reason in WaitReason::all() {
            assert_eq!(WaitReason::parse(&reason.to_string()), Some(reason));
        }
        assert_eq!(JobKind::parse("github_issue"), Some(JobKind::GithubIssue));
        assert_eq!(JobKind::parse("GithubIssue"), None);
        assert_eq!(format!("{:<8}|", DeliveryState::Dead), "dead    |");
        assert_eq!(DeliveryState::ids_listed(), "pending, running, done, dead or skipped");
    }

    #[test]
    fn a_wait_is_stored_as_its_reason_and_cleared_by_any_other_outcome() {
        let now = Utc::now();
        let wait = JobOutcome::Wait {
            at: now,
            reason: WaitReason::NoRoute,
            detail: "no github.routes.billing.repo is configured".into(),
        };
        let row = wait.row(now);
        assert_eq!(
            (row.state, row.wait_reason, row.refund),
            (DeliveryState::Pending, Some(WaitReason::NoRoute), 1)
        );
        assert_eq!(row.error, Some("no github.routes.billing.repo is configured"));
        let retry = JobOutcome::Retry {
            at: now,
            error: "timeout".into(),
        };
        assert_eq!(retry.row(now).wait_reason, None);
        let delivery = Delivery {
            id: 1,
            ticket_id: 1,
            kind: JobKind::GithubIssue,
            state: DeliveryState::Pending,
            attempts: 0,
            run_at: now,
            last_error: Some("GitHub is not configured".into()),
            wait_reason: Some(WaitReason::GithubNotConfigured),
            done_at: None,
        };
        assert_eq!(
            delivery.note().unwrap(),
            "waiting (github_not_configured): GitHub is not configured"
        );
    }
}
