//! The follow-up after an issue is closed (docs/delivery.md): in the acknowledgement's thread, worded
//! by GitHub's `state_reason`, factual, without blame and without promises. Like the
//! acknowledgement it carries no text the customer chose.

use lettre::Message;
use serde::Serialize;

use super::ack::{ack_message_id, ack_subject, alternative, automatic, AckContext};
use crate::domain::{Ticket, TicketEvent};
use crate::templates::Templates;

/// How a close is worded: `completed` (or no reason) as resolved, `duplicate` as tracked with
/// another report, anything else (`not_planned`) as not acted on here.
pub fn outcome(state_reason: Option<&str>) -> &'static str {
    match state_reason {
        None | Some("completed") => "resolved",
        Some("duplicate") => "duplicate",
        Some(_) => "not_acted_on",
    }
}

/// One Message-ID per close event, stable across attempts.
pub fn followup_message_id(reference: &str, event_id: i64, from: &lettre::message::Mailbox) -> String {
    format!("<{reference}.closed-{event_id}@{}>", from.email.domain())
}

#[derive(Serialize)]
struct FollowupView<'a> {
    reference: &'a str,
    type_label: &'static str,
    outcome: &'static str,
    status_url: String,
    site_name: &'a str,
}

pub fn followup_message(
    ctx: &AckContext,
    templates: &Templates,
    ticket: &Ticket,
    event: &TicketEvent,
) -> anyhow::Result<Message> {
    let view = FollowupView {
        reference: &ticket.reference,
        type_label: ticket.filed_type.label(),
        outcome: outcome(event.state_reason.as_deref()),
        status_url: format!("{}/submitted/{}", ctx.public_url, ticket.reference),
        site_name: &ctx.site_name,
    };
    let text = templates.render("followup.txt", &view)?;
    let html = templates.render("followup.html", &view)?;
    // The thread: the acknowledgement as sent, or as it would have been (its id is deterministic).
    let parent = ticket
        .ack_message_id
        .clone()
        .unwrap_or_else(|| ack_message_id(&ticket.reference, &ctx.from));
    let message = automatic(ctx, ticket, "auto-generated")?
        .subject(format!("Re: {}", ack_subject(ticket)))
        .message_id(Some(followup_message_id(&ticket.reference, event.id, &ctx.from)))
        .in_reply_to(parent.clone())
        .references(parent)
        .multipart(alternative(text, html))?;
    Ok(message)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn closes_are_worded_by_their_reason() {
        assert_eq!(outcome(None), "resolved");
        assert_eq!(outcome(Some("completed")), "resolved");
        assert_eq!(outcome(Some("duplicate")), "duplicate");
        assert_eq!(outcome(Some("not_planned")), "not_acted_on");
        assert_eq!(outcome(Some("something_new")), "not_acted_on");
    }
}
