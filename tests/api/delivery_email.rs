//! The acknowledgement, through a real SMTP server over TCP and through the file transport.

use intake::domain::ClosedSet;
use intake::store::queue::DeliveryState;
use std::time::Duration;

use secrecy::SecretString;
use serde_json::{json, Value};

use crate::helpers::{spawn_app_with, valid_ticket, Backend, TestApp};
use crate::on_both_backends;
use crate::smtp_server::SmtpServer;

async fn app_with_smtp(
    backend: Backend,
    smtp: &SmtpServer,
    customise: impl FnOnce(&mut intake::config::Settings),
) -> Option<TestApp> {
    let url = smtp.url();
    spawn_app_with(backend, move |s| {
        s.email.transport = intake::config::EmailTransport::Smtp;
        s.email.smtp_url = Some(SecretString::from(url));
        s.email.from = "LocalizeVideos Support <support@localizevideos.example>".into();
        s.email.reply_to = Some("help@localizevideos.example".into());
        s.server.public_url = Some("https://help.localizevideos.example".parse().unwrap());
        s.server.site_name = "LocalizeVideos".into();
        customise(s);
    })
    .await
}

async fn the_acknowledgement_reaches_the_smtp_server_with_the_right_headers_and_parts(backend: Backend) {
    let smtp = SmtpServer::start().await;
    let Some(app) = app_with_smtp(backend, &smtp, |_| {}).await else {
        return;
    };
    let mut t = valid_ticket();
    t["name"] = json!("Mallory <evil@attacker.example>");
    t["subject"] = json!("Click http://phish.example now");
    t["message"] = json!("Dear victim, your account is suspended, visit http://phish.example to restore it.");
    let reference = app.submit(&t).await;

    assert_eq!(app.deliverer.run_once().await.unwrap(), 1);
    let mail = smtp.received();
    assert_eq!(mail.len(), 1);
    let m = &mail[0];
    assert_eq!(m.rcpt_to, ["ada@example.com"]);
    assert_eq!(m.mail_from, "support@localizevideos.example");
    assert_eq!(
        m.header("To").as_deref(),
        Some("ada@example.com"),
        "the bare address, no name"
    );
    assert!(m.header("From").unwrap().contains("support@localizevideos.example"));
    assert_eq!(m.header("Reply-To").as_deref(), Some("help@localizevideos.example"));
    assert!(m.header("Subject").unwrap().contains(&reference));
    assert_eq!(m.header("Auto-Submitted").as_deref(), Some("auto-replied"));
    assert_eq!(m.header("X-Auto-Response-Suppress").as_deref(), Some("All"));
    let message_id = m.header("Message-ID").unwrap();
    assert_eq!(message_id, format!("<{reference}.ack@localizevideos.example>"));
    assert!(m.header("Content-Type").unwrap().starts_with("multipart/alternative"));
    assert!(m.data.contains("Content-Type: text/plain"));
    assert!(m.data.contains("Content-Type: text/html"));
    let text = m.decoded();
    assert!(text.contains(&reference));
    assert!(text.contains("business hours"));
    assert!(
        text.contains(&format!("https://help.localizevideos.example/submitted/{reference}")),
        "{text}"
    );
    assert!(
        !text.contains("within") && !text.contains("24 hours"),
        "no promised time"
    );
    // Nothing the customer chose travels: not the name, the subject, the message, nor its link.
    for chosen in ["Mallory", "attacker.example", "phish.example", "Dear victim", "Click"] {
        assert!(!text.contains(chosen), "{chosen} leaked into the acknowledgement");
    }

    let ticket = app.store.ticket_by_reference(&reference).await.unwrap().unwrap();
    assert_eq!(ticket.ack_message_id.as_deref(), Some(message_id.as_str()));
    let jobs = app.store.deliveries_for_ticket(ticket.id).await.unwrap();
    let ack = jobs.iter().find(|j| j.kind.id() == "ack_email").unwrap();
    assert_eq!(ack.state, DeliveryState::Done);
    // GitHub is not configured: its job waits.
    assert_eq!(
        jobs.iter().find(|j| j.kind.id() == "github_issue").unwrap().state,
        DeliveryState::Pending
    );
    assert_eq!(app.deliverer.run_once().await.unwrap(), 0, "nothing sent twice");
    assert_eq!(smtp.received().len(), 1);
}

async fn past_the_per_address_cap_the_ticket_is_kept_and_the_email_skipped(backend: Backend) {
    let smtp = SmtpServer::start().await;
    let Some(app) = app_with_smtp(backend, &smtp, |s| s.limits.acks_per_email = "2/day".parse().unwrap()).await else {
        return;
    };
    let mut refs = Vec::new();
    // One address, however it is written (the domain never matters; the local part is compared
    // without case too).
    for email in ["victim@example.com", "Victim@Example.com", "vIctim@EXAMPLE.com"] {
        let mut t = valid_ticket();
        t["email"] = json!(email);
        refs.push(app.submit(&t).await);
        app.deliverer.run_once().await.unwrap();
    }
    assert_eq!(smtp.received().len(), 2);
    let third = app
        .store
        .ticket_by_reference(&refs[2])
        .await
        .unwrap()
        .expect("the ticket is stored");
    let jobs = app.store.deliveries_for_ticket(third.id).await.unwrap();
    let ack = jobs.iter().find(|j| j.kind.id() == "ack_email").unwrap();
    assert_eq!(ack.state, DeliveryState::Skipped);
    assert!(ack.last_error.as_deref().unwrap().contains("cap"));
    assert!(jobs.iter().any(|j| j.kind.id() == "github_issue"), "still to be filed");
    // Another address is not affected.
    let mut other = valid_ticket();
    other["email"] = json!("grace@example.com");
    app.submit(&other).await;
    app.deliverer.run_once().await.unwrap();
    assert_eq!(smtp.received().len(), 3);
}

/// Jobs for one address sent side by side (the email lane sends up to 16 at once) stay under the
/// cap: the slot is reserved before the send.
async fn concurrent_acknowledgements_to_one_address_stay_under_the_cap(backend: Backend) {
    let smtp = SmtpServer::start().await;
    let Some(app) = app_with_smtp(backend, &smtp, |s| s.limits.acks_per_email = "2/day".parse().unwrap()).await else {
        return;
    };
    for i in 0..8 {
        let mut t = valid_ticket();
        t["email"] = json!(if i % 2 == 0 {
            "victim@example.com"
        } else {
            "VICTIM@example.com"
        });
        app.submit(&t).await;
    }
    // One pass claims all eight and sends them side by side.
    app.deliverer.run_once().await.unwrap();
    assert_eq!(smtp.received().len(), 2, "a cap of two, however the sends interleave");
}

async fn past_the_per_domain_cap_one_organisation_gets_no_more_acknowledgements(backend: Backend) {
    let smtp = SmtpServer::start().await;
    let Some(app) = app_with_smtp(backend, &smtp, |s| {
        s.limits.acks_per_domain = "2/hour".parse().unwrap();
    })
    .await
    else {
        return;
    };
    let mut refs = Vec::new();
    for who in [
        "a@victim.example",
        "b@victim.example",
        "c@Victim.example",
        "d@other.example",
    ] {
        let mut t = valid_ticket();
        t["email"] = json!(who);
        refs.push(app.submit(&t).await);
        app.deliverer.run_once().await.unwrap();
    }
    let recipients: Vec<String> = smtp.received().iter().map(|m| m.rcpt_to.join(",")).collect();
    assert_eq!(recipients, ["a@victim.example", "b@victim.example", "d@other.example"]);
    let third = app.store.ticket_by_reference(&refs[2]).await.unwrap().unwrap();
    let ack = app.store.deliveries_for_ticket(third.id).await.unwrap().remove(0);
    assert_eq!(ack.state, DeliveryState::Skipped);
    assert!(ack.last_error.as_deref().unwrap().contains("per-domain"));
}

async fn a_temporary_smtp_failure_is_retried_and_a_permanent_one_is_dead(backend: Backend) {
    let smtp = SmtpServer::start().await;
    let Some(app) = app_with_smtp(backend, &smtp, |_| {}).await else {
        return;
    };
    smtp.transient_failures.store(1, std::sync::atomic::Ordering::SeqCst);
    let first = app.submit(&valid_ticket()).await;
    app.deliverer.run_once().await.unwrap();
    let t = app.store.ticket_by_reference(&first).await.unwrap().unwrap();
    let ack = app.store.deliveries_for_ticket(t.id).await.unwrap().remove(0);
    assert_eq!(ack.state, DeliveryState::Pending);
    assert_eq!(ack.attempts, 1);
    assert!(ack.last_error.as_deref().unwrap().contains("451") || ack.last_error.as_deref().unwrap().contains("SMTP"));
    let wait = ack.run_at - chrono::Utc::now();
    assert!(
        wait <= chrono::Duration::seconds(10) && wait > chrono::Duration::zero(),
        "first retry within 10 s"
    );

    smtp.permanent_failures.store(1, std::sync::atomic::Ordering::SeqCst);
    let mut other = valid_ticket();
    other["email"] = json!("nobody@example.com");
    let second = app.submit(&other).await;
    app.deliverer.run_once().await.unwrap();
    let t = app.store.ticket_by_reference(&second).await.unwrap().unwrap();
    let ack = app.store.deliveries_for_ticket(t.id).await.unwrap().remove(0);
    assert_eq!(ack.state, DeliveryState::Dead);
    let health: Value = app.get("/api/health").await.json().await.unwrap();
    assert_eq!(health["checks"]["outbox"]["dead"], 1);
    assert_eq!(health["status"], "degraded");
}

on_both_backends!(
    concurrent_acknowledgements_to_one_address_stay_under_the_cap,
    the_acknowledgement_reaches_the_smtp_server_with_the_right_headers_and_parts,
    past_the_per_address_cap_the_ticket_is_kept_and_the_email_skipped,
    past_the_per_domain_cap_one_organisation_gets_no_more_acknowledgements,
    a_temporary_smtp_failure_is_retried_and_a_permanent_one_is_dead,
);

#[tokio::test]
async fn an_unsupported_request_is_acknowledged_with_the_policy() {
    let smtp = SmtpServer::start().await;
    let app = app_with_smtp(Backend::Sqlite, &smtp, |_| {}).await.unwrap();
    let mut t = valid_ticket();
    t["type"] = json!("product");
    t["subject"] = json!("Please set up SSO for us");
    t["message"] = json!("Could you configure SAML SSO with our Okta for us? We have no time.");
    app.submit(&t).await;
    app.deliverer.run_once().await.unwrap();
    let m = &smtp.received()[0];
    assert!(m.decoded().contains("do not configure accounts"), "{}", m.decoded());
    assert!(m.header("Subject").unwrap().contains("on record"));
}

#[tokio::test]
async fn with_embedded_defaults_the_acknowledgement_is_an_eml_file() {
    let app = spawn_app_with(Backend::Sqlite, |_| {}).await.unwrap();
    let reference = app.submit(&valid_ticket()).await;
    app.deliverer.run_once().await.unwrap();
    let files: Vec<_> = std::fs::read_dir(app.outbox_dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(files.len(), 1);
    assert_eq!(files[0].extension().unwrap(), "eml");
    let eml = std::fs::read_to_string(&files[0]).unwrap();
    assert!(eml.contains(&reference));
    assert!(eml.contains("Auto-Submitted: auto-replied"));
    // It holds a customer's address: the service's user alone reads it, whatever the umask.
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&files[0]).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "{mode:o}");
}

#[tokio::test]
async fn a_running_worker_sends_a_new_acknowledgement_at_once() {
    let smtp = SmtpServer::start().await;
    // The safety-net poll is an hour: only the wake-up after the commit can explain a quick send.
    let app = app_with_smtp(Backend::Sqlite, &smtp, |s| {
        s.delivery.enabled = true;
        s.delivery.poll_seconds = 3600;
    })
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    app.submit(&valid_ticket()).await;
    let started = std::time::Instant::now();
    while smtp.received().is_empty() {
        assert!(started.elapsed() < Duration::from_secs(5), "not picked up at once");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Over STARTTLS with credentials, and over implicit TLS: the server's certificate is trusted
/// through `email.smtp_ca_file`, as for a relay with a private CA.
#[tokio::test]
async fn the_acknowledgement_goes_over_starttls_with_credentials_and_over_implicit_tls() {
    for implicit in [false, true] {
        let smtp = SmtpServer::start_tls(implicit).await;
        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("relay-ca.pem");
        std::fs::write(&ca, smtp.certificate_pem.as_deref().unwrap()).unwrap();
        let url = if implicit {
            format!("smtps://relay-user:s3cret@127.0.0.1:{}", smtp.port)
        } else {
            format!("smtp://relay-user:s3cret@127.0.0.1:{}?tls=required", smtp.port)
        };
        let app = spawn_app_with(Backend::Sqlite, move |s| {
            s.email.transport = intake::config::EmailTransport::Smtp;
            s.email.smtp_url = Some(SecretString::from(url));
            s.email.smtp_ca_file = Some(ca);
        })
        .await
        .unwrap();
        let reference = app.submit(&valid_ticket()).await;
        app.deliverer.run_once().await.unwrap();
        let mail = smtp.received();
        assert_eq!(mail.len(), 1, "implicit={implicit}");
        assert!(mail[0].tls, "sent over TLS (implicit={implicit})");
        assert_eq!(mail[0].user.as_deref(), Some("relay-user"));
        assert!(mail[0].decoded().contains(&reference));
    }
}

#[tokio::test]
async fn without_trust_in_the_relay_certificate_nothing_is_sent_in_clear() {
    let smtp = SmtpServer::start_tls(false).await;
    let url = format!("smtp://127.0.0.1:{}?tls=required", smtp.port);
    let app = spawn_app_with(Backend::Sqlite, move |s| {
        s.email.transport = intake::config::EmailTransport::Smtp;
        s.email.smtp_url = Some(SecretString::from(url));
    })
    .await
    .unwrap();
    let reference = app.submit(&valid_ticket()).await;
    app.deliverer.run_once().await.unwrap();
    assert!(smtp.received().is_empty());
    let t = app.store.ticket_by_reference(&reference).await.unwrap().unwrap();
    let ack = app.store.deliveries_for_ticket(t.id).await.unwrap().remove(0);
    assert_eq!(ack.state, DeliveryState::Pending, "kept for a retry, not lost");
}
