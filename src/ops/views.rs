//! What ops see of tickets: list lines without customer text, and a ticket's timeline.

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::domain::ClosedSet;

/// A ticket as the ops lists show it: no customer text.
#[derive(Debug, Serialize)]
pub struct TicketLine<'a> {
    pub reference: &'a str,
    pub created_at: DateTime<Utc>,
    #[serde(rename = "type")]
    pub request_type: &'static str,
    pub status: &'static str,
    pub needs_triage: bool,
    pub issue_url: Option<&'a str>,
}

impl<'a> From<&'a crate::domain::Ticket> for TicketLine<'a> {
    fn from(t: &'a crate::domain::Ticket) -> Self {
        TicketLine {
            reference: &t.reference,
            created_at: t.created_at,
            request_type: t.filed_type.id(),
            status: t.status().id(),
            needs_triage: t.needs_triage,
            issue_url: t.github_issue.as_ref().map(|i| i.url.as_str()),
        }
    }
}

/// One step in a ticket's life, for `tickets show` and `GET /api/v1/tickets/{ref}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TimelineEntry {
    pub at: DateTime<Utc>,
    pub what: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// Received, classified, acknowledged, filed, closed, reopened, followed up, and what failed or
/// was skipped, in time order.
pub fn timeline(
    ticket: &crate::domain::Ticket,
    deliveries: &[crate::store::queue::Delivery],
    events: &[crate::domain::TicketEvent],
) -> Vec<TimelineEntry> {
    use crate::domain::IssueAction;
    use crate::store::queue::{DeliveryState, JobKind};
    let entry = |at, what, detail: Option<String>| TimelineEntry { at, what, detail };
    let mut out = vec![
        entry(
            ticket.created_at,
            "received",
            Some(format!(
                "through the {}",
                match ticket.channel {
                    crate::domain::Channel::Api => "API",
                    crate::domain::Channel::Form => "help form",
                }
            )),
        ),
        entry(ticket.created_at, "classified", {
            let mut d = format!("filed as {}", ticket.filed_type.id());
            if ticket.picked_type != ticket.filed_type {
                d.push_str(&format!(" (picked {})", ticket.picked_type.id()));
            }
            if let Some(u) = ticket.unsupported {
                d.push_str(&format!("; unsupported: {}", u.id()));
            }
            if ticket.needs_triage {
                d.push_str("; needs triage");
            }
            if let Some(band) = crate::classify::band_of(&ticket.signals) {
                d.push_str(&format!("; band {}", band.id()));
            }
            let rules: Vec<&str> = crate::classify::fired_rules(&ticket.signals)
                .map(|s| s.rule.as_str())
                .collect();
            if !rules.is_empty() {
                d.push_str(&format!("; rules {}", rules.join(", ")));
            }
            let scores = crate::classify::model_scores(&ticket.signals, 2);
            if !scores.is_empty() {
                d.push_str(&format!("; model {}", scores.join(" ")));
            }
            Some(d)
        }),
    ];
    for d in deliveries {
        let at = d.done_at.unwrap_or(d.run_at);
        match (d.kind, d.state) {
            (JobKind::AckEmail, DeliveryState::Done) => out.push(entry(at, "acknowledged", None)),
            (JobKind::GithubIssue, DeliveryState::Done) => {
                out.push(entry(at, "filed", ticket.github_issue.as_ref().map(|i| i.url.clone())))
            }
            (JobKind::FollowupEmail, DeliveryState::Done) => out.push(entry(at, "followed up", None)),
            (_, state @ (DeliveryState::Dead | DeliveryState::Skipped)) => out.push(entry(
                at,
                if state == DeliveryState::Dead {
                    "delivery failed"
                } else {
                    "delivery skipped"
                },
                Some(format!(
                    "{} #{}: {}",
                    d.kind.id(),
                    d.id,
                    d.last_error.as_deref().unwrap_or("")
                )),
            )),
            _ => {}
        }
    }
    for e in events {
        out.push(match e.action {
            IssueAction::Closed => entry(
                e.at,
                "closed",
                Some(e.state_reason.clone().unwrap_or("completed".into())),
            ),
            IssueAction::Reopened => entry(e.at, "reopened", None),
        });
    }
    out.sort_by_key(|e| e.at);
    out
}
