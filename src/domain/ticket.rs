//! A ticket as stored and read back: where it came in, what was decided, where it was filed, and
//! what GitHub said happened to its issue.

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::{RequestType, Signal, UnsupportedReason};

/// Where a submission came in.
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
pub enum Channel {
    Api,
    Form,
}

/// Where a ticket stands for the customer: `received`, or `unsupported` for a request the policy
/// answers.
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
pub enum TicketStatus {
    Received,
    Unsupported,
}

impl TicketStatus {
    pub fn of(unsupported: Option<UnsupportedReason>) -> TicketStatus {
        if unsupported.is_some() {
            TicketStatus::Unsupported
        } else {
            TicketStatus::Received
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
    pub fn status(&self) -> TicketStatus {
        TicketStatus::of(self.unsupported)
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
    pub fn from_columns(repo: Option<String>, number: Option<i64>, url: Option<String>) -> Option<FiledIssue> {
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

/// What GitHub told us happened to an issue.
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
pub enum IssueAction {
    #[strum(serialize = "issue_closed")]
    Closed,
    #[strum(serialize = "issue_reopened")]
    Reopened,
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
    s.serialize_str(super::ClosedSet::id(*a))
}
