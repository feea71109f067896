//! The acknowledgement: reference, type and what happens next, from templates, with no text the
//! customer chose anywhere in it (docs/delivery.md), so the form cannot send chosen text to a chosen
//! address.

use lettre::message::header::{ContentType, HeaderName, HeaderValue};
use lettre::message::MessageBuilder;
use lettre::message::{Mailbox, MultiPart, SinglePart};
use lettre::Message;
use serde::Serialize;

use crate::domain::Ticket;
use crate::templates::Templates;

/// What every acknowledgement shares, from the settings.
#[derive(Debug, Clone)]
pub struct AckContext {
    pub from: Mailbox,
    pub reply_to: Mailbox,
    pub site_name: String,
    pub public_url: String,
}

#[derive(Serialize)]
struct AckView<'a> {
    reference: &'a str,
    type_label: &'static str,
    unsupported: Option<UnsupportedView>,
    status_url: String,
    site_name: &'a str,
}

#[derive(Serialize)]
struct UnsupportedView {
    label: &'static str,
    policy: &'static str,
}

/// The acknowledgement's Message-ID, the same on every attempt so that a repeated send is one
/// message to mail clients, and stored for threading the follow-up.
pub fn ack_message_id(reference: &str, from: &Mailbox) -> String {
    format!("<{reference}.ack@{}>", from.email.domain())
}

pub fn ack_message(ctx: &AckContext, templates: &Templates, ticket: &Ticket) -> anyhow::Result<Message> {
    let view = AckView {
        reference: &ticket.reference,
        type_label: ticket.filed_type.label(),
        unsupported: ticket.unsupported.map(|u| UnsupportedView {
            label: u.label(),
            policy: u.policy(),
        }),
        status_url: format!("{}/submitted/{}", ctx.public_url, ticket.reference),
        site_name: &ctx.site_name,
    };
    let text = templates.render("ack.txt", &view)?;
    let html = templates.render("ack.html", &view)?;
    let message = automatic(ctx, ticket, "auto-replied")?
        .subject(ack_subject(ticket))
        .message_id(Some(ack_message_id(&ticket.reference, &ctx.from)))
        .multipart(alternative(text, html))?;
    Ok(message)
}

pub(super) fn ack_subject(ticket: &Ticket) -> String {
    if ticket.unsupported.is_some() {
        format!("[{}] Your request is on record", ticket.reference)
    } else {
        format!("[{}] We received your request", ticket.reference)
    }
}

/// What every automatic message to a customer carries: our sender and reply address, the bare
/// customer address (a name the customer typed must not reach any header), and RFC 3834's
/// `Auto-Submitted` (`auto-replied` or `auto-generated`), plus Exchange's request not to answer it.
pub(super) fn automatic(ctx: &AckContext, ticket: &Ticket, auto: &str) -> anyhow::Result<MessageBuilder> {
    let to = Mailbox::new(None, ticket.email.parse()?);
    Ok(Message::builder()
        .from(ctx.from.clone())
        .reply_to(ctx.reply_to.clone())
        .to(to)
        .raw_header(HeaderValue::new(
            HeaderName::new_from_ascii_str("Auto-Submitted"),
            auto.to_owned(),
        ))
        .raw_header(HeaderValue::new(
            HeaderName::new_from_ascii_str("X-Auto-Response-Suppress"),
            "All".into(),
        )))
}

/// The text and HTML parts, as alternatives.
pub(super) fn alternative(text: String, html: String) -> MultiPart {
    MultiPart::alternative()
        .singlepart(SinglePart::builder().header(ContentType::TEXT_PLAIN).body(text))
        .singlepart(SinglePart::builder().header(ContentType::TEXT_HTML).body(html))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Channel, Ticket};
    use crate::domain::{RequestType, UnsupportedReason};

    fn ticket(unsupported: Option<UnsupportedReason>) -> Ticket {
        Ticket {
            id: 1,
            reference: "LV-7K3M9QXD".into(),
            created_at: chrono::Utc::now(),
            channel: Channel::Form,
            name: "<script>alert(1)</script>".into(),
            email: "ada@example.com".into(),
            picked_type: RequestType::Product,
            filed_type: RequestType::Security,
            unsupported,
            needs_triage: false,
            signals: vec![],
            subject: "SUBJECT-MARKER".into(),
            message: "MESSAGE-MARKER".into(),
            account: None,
            page_url: None,
            ack_message_id: None,
            github_issue: None,
        }
    }

    fn ctx(site: &str) -> AckContext {
        AckContext {
            from: "Support <support@example.com>".parse().unwrap(),
            reply_to: "help@example.com".parse().unwrap(),
            site_name: site.into(),
            public_url: "https://help.example.com".into(),
        }
    }

    fn body(m: &Message) -> String {
        String::from_utf8(m.formatted()).unwrap().replace("=\r\n", "")
    }

    #[test]
    fn the_html_part_escapes_and_no_customer_text_appears() {
        let m = ack_message(&ctx("Acme <b>&</b> Co"), &Templates::new(), &ticket(None)).unwrap();
        let b = body(&m);
        assert!(
            b.contains("Acme &lt;b&gt;&amp;&lt;=2Fb&gt; Co") || b.contains("Acme &lt;b&gt;&amp;&lt;&#x2f;b&gt; Co"),
            "{b}"
        );
        for chosen in ["SUBJECT-MARKER", "MESSAGE-MARKER", "script"] {
            assert!(!b.contains(chosen), "{chosen}");
        }
        assert!(b.contains("security request"), "the filed type is named");
        assert_eq!(
            ack_message_id("LV-7K3M9QXD", &ctx("x").from),
            "<LV-7K3M9QXD.ack@example.com>"
        );
    }

    #[test]
    fn an_unsupported_request_gets_the_policy_instead_of_next_steps() {
        let m = ack_message(
            &ctx("Acme"),
            &Templates::new(),
            &ticket(Some(UnsupportedReason::DataRecovery)),
        )
        .unwrap();
        let b = body(&m);
        assert!(b.contains("retention policy"));
        assert!(!b.contains("What happens next"));
    }
}
