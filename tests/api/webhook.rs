//! The closed loop: GitHub's webhook (real payloads from `tests/fixtures/github/`, adapted only
//! in repository and issue number, signed with the test secret) turns a closed issue into a
//! follow-up email in the acknowledgement's thread.

use std::time::Duration;

use hmac::{Hmac, Mac};
use intake::abuse::Refusal;
use secrecy::SecretString;
use serde_json::{json, Value};
use sha2::Sha256;

use crate::github_fake::StatefulGithub;
use crate::helpers::{spawn_app_with, uuid_like, Backend, TestApp};
use crate::on_both_backends;
use crate::smtp_server::SmtpServer;

const SECRET: &str = "It's a Secret to Everybody";
const REPO: &str = "LocalizeVideos/support";

fn fixture(name: &str) -> Vec<u8> {
    let path = format!("{}/tests/fixtures/github/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(path).expect("fixture")
}

/// A fixture with its repository and issue number replaced (and, for closes, the reason).
fn adapted(name: &str, repo: &str, number: i64, state_reason: Option<&str>) -> Vec<u8> {
    let mut v: Value = serde_json::from_slice(&fixture(name)).unwrap();
    v["repository"]["full_name"] = json!(repo);
    v["issue"]["number"] = json!(number);
    if let Some(r) = state_reason {
        v["issue"]["state_reason"] = json!(r);
    }
    // Each close GitHub sends is a close of its own, at its own time.
    if v["action"] == "closed" {
        v["issue"]["closed_at"] = json!(chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Nanos, true));
    }
    serde_json::to_vec(&v).unwrap()
}

fn sign(body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

async fn deliver(
    app: &TestApp,
    event: &str,
    delivery: &str,
    body: Vec<u8>,
    signature: Option<String>,
) -> reqwest::Response {
    let mut req = app
        .client
        .post(format!("{}/webhooks/github", app.address))
        .header("Content-Type", "application/json")
        .header("X-GitHub-Event", event)
        .header("X-GitHub-Delivery", delivery)
        .header("User-Agent", "GitHub-Hookshot/test");
    if let Some(s) = signature {
        req = req.header("X-Hub-Signature-256", s);
    }
    req.body(body).send().await.unwrap()
}

async fn signed(app: &TestApp, event: &str, delivery: &str, body: Vec<u8>) -> reqwest::Response {
    let sig = sign(&body);
    deliver(app, event, delivery, body, Some(sig)).await
}

struct Loop {
    app: TestApp,
    smtp: SmtpServer,
    _github: StatefulGithub,
}

async fn closed_loop(backend: Backend) -> Option<Loop> {
    let smtp = SmtpServer::start().await;
    let github = StatefulGithub::start(REPO, Duration::ZERO).await;
    let (smtp_url, api) = (smtp.url(), github.server.uri());
    let app = spawn_app_with(backend, move |s| {
        s.email.transport = intake::config::EmailTransport::Smtp;
        s.email.smtp_url = Some(SecretString::from(smtp_url));
        s.email.from = "LocalizeVideos Support <support@localizevideos.example>".into();
        s.github.api_url = api.parse().unwrap();
        s.github.token = Some(SecretString::from(crate::github_fake::TOKEN));
        s.github.pacing = false;
        for t in ["account", "billing", "product", "security", "availability"] {
            s.github.routes.insert(
                t.to_owned(),
                intake::config::GithubRoute {
                    repo: REPO.to_owned(),
                    labels: None,
                    assignees: vec![],
                },
            );
        }
        s.webhook.github_secret = Some(SecretString::from(SECRET));
    })
    .await?;
    Some(Loop {
        app,
        smtp,
        _github: github,
    })
}

/// Submits a ticket and delivers its acknowledgement and issue; returns its reference and number.
async fn filed_ticket(l: &Loop) -> (String, i64) {
    let reference = l.app.submit(&crate::helpers::valid_ticket()).await;
    l.app.deliverer.run_once().await.unwrap();
    let t = l.app.store.ticket_by_reference(&reference).await.unwrap().unwrap();
    let issue = t.github_issue.expect("filed");
    assert!(t.ack_message_id.is_some(), "acknowledged");
    (reference, issue.number)
}

fn header_of(data: &str, name: &str) -> Option<String> {
    data.lines()
        .find(|l| {
            l.to_ascii_lowercase()
                .starts_with(&format!("{}:", name.to_ascii_lowercase()))
        })
        .map(|l| l.split_once(':').unwrap().1.trim().to_owned())
}

async fn a_closed_issue_sends_one_threaded_follow_up(backend: Backend) {
    let Some(l) = closed_loop(backend).await else {
        return;
    };
    let (reference, number) = filed_ticket(&l).await;
    // GitHub spells the repository as it is named; stored as configured, matched case-insensitively.
    let body = adapted("issues-closed.json", &REPO.to_lowercase(), number, None);
    let delivery = uuid_like();
    let res = signed(&l.app, "issues", &delivery, body.clone()).await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.json::<Value>().await.unwrap()["status"], "recorded");
    l.app.deliverer.run_once().await.unwrap();

    let mails = l.smtp.received();
    assert_eq!(mails.len(), 2, "acknowledgement and follow-up");
    let (ack, follow) = (&mails[0].data, &mails[1].data);
    let ack_id = header_of(ack, "Message-ID").unwrap();
    assert_eq!(header_of(follow, "In-Reply-To").as_deref(), Some(ack_id.as_str()));
    assert_eq!(header_of(follow, "References").as_deref(), Some(ack_id.as_str()));
    assert_eq!(
        header_of(follow, "Subject").unwrap(),
        format!("Re: [{reference}] We received your request")
    );
    assert_eq!(header_of(follow, "Auto-Submitted").as_deref(), Some("auto-generated"));
    assert_eq!(mails[1].rcpt_to, ["ada@example.com"]);
    let text = follow.replace("=\r\n", "");
    assert!(
        text.contains("closed as\r\nresolved") || text.contains("closed as resolved"),
        "{text}"
    );
    assert!(!text.contains("Invoice for October"), "no customer text");

    // The same delivery again: answered, nothing done.
    let res = signed(&l.app, "issues", &delivery, body).await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.json::<Value>().await.unwrap()["status"], "duplicate");
    l.app.deliverer.run_once().await.unwrap();
    assert_eq!(l.smtp.received().len(), 2, "no second follow-up");

    // The whole loop is on the ticket's timeline.
    let shown = crate::ops::json_of(&crate::ops::intake(&l.app, &["tickets", "show", &reference]));
    let steps = crate::helpers::timeline_steps(&shown);
    // Acknowledging and filing run side by side: either may come first.
    let (mut middle, rest) = (steps[2..4].to_vec(), &steps[4..]);
    middle.sort();
    assert_eq!(steps[..2], ["received", "classified"]);
    assert_eq!(middle, ["acknowledged", "filed"]);
    assert_eq!(rest, ["closed", "followed up"]);
}

async fn reopened_is_recorded_and_the_next_close_follows_up_again(backend: Backend) {
    let Some(l) = closed_loop(backend).await else {
        return;
    };
    let (_, number) = filed_ticket(&l).await;
    let closed = || adapted("issues-closed.json", REPO, number, Some("not_planned"));
    assert_eq!(signed(&l.app, "issues", &uuid_like(), closed()).await.status(), 200);
    let reopened = adapted("issues-reopened.json", REPO, number, None);
    let res = signed(&l.app, "issues", &uuid_like(), reopened).await;
    assert_eq!(res.status(), 200, "a reopen of our issue is recorded");
    l.app.deliverer.run_once().await.unwrap();
    assert_eq!(l.smtp.received().len(), 2, "the reopen sends nothing");
    let closed_again = adapted("issues-closed.json", REPO, number, Some("completed"));
    assert_eq!(signed(&l.app, "issues", &uuid_like(), closed_again).await.status(), 200);
    l.app.deliverer.run_once().await.unwrap();
    let mails = l.smtp.received();
    assert_eq!(mails.len(), 3);
    let not_planned = mails[1].data.replace("=\r\n", "");
    assert!(not_planned.contains("without acting on it here"), "{not_planned}");
    assert!(not_planned.contains("not a judgement of your report"));
    let resolved = mails[2].data.replace("=\r\n", "");
    assert!(resolved.contains("resolved"));
    assert_ne!(
        header_of(&mails[1].data, "Message-ID"),
        header_of(&mails[2].data, "Message-ID"),
        "each close is its own message"
    );
}

/// `X-GitHub-Delivery` is not signed: a captured close replayed under new ids (one after another,
/// and several at once) is recorded, and mails the customer once.
async fn a_replayed_close_under_new_delivery_ids_sends_no_second_follow_up(backend: Backend) {
    let Some(l) = closed_loop(backend).await else {
        return;
    };
    let (reference, number) = filed_ticket(&l).await;
    let body = adapted("issues-closed.json", REPO, number, None);
    for _ in 0..3 {
        assert_eq!(signed(&l.app, "issues", &uuid_like(), body.clone()).await.status(), 200);
    }
    let ids: Vec<String> = (0..4).map(|_| uuid_like()).collect();
    let at_once: Vec<_> = ids
        .iter()
        .map(|id| signed(&l.app, "issues", id, body.clone()))
        .collect();
    for res in futures_util::future::join_all(at_once).await {
        assert_eq!(res.status(), 200);
    }
    l.app.deliverer.run_once().await.unwrap();
    assert_eq!(l.smtp.received().len(), 2, "the acknowledgement and one follow-up");
    let t = l.app.store.ticket_by_reference(&reference).await.unwrap().unwrap();
    assert_eq!(
        l.app.store.ticket_events(t.id).await.unwrap().len(),
        7,
        "every close is recorded"
    );
    // A real reopen and a new close follow up again.
    let reopened = adapted("issues-reopened.json", REPO, number, None);
    assert_eq!(
        signed(&l.app, "issues", &uuid_like(), reopened.clone()).await.status(),
        200
    );
    let closed_again = adapted("issues-closed.json", REPO, number, None);
    assert_eq!(
        signed(&l.app, "issues", &uuid_like(), closed_again.clone())
            .await
            .status(),
        200
    );
    l.app.deliverer.run_once().await.unwrap();
    assert_eq!(l.smtp.received().len(), 3);
    // Replaying the captured reopen and close, in turn, sends nothing more: each close is known
    // by its `closed_at`.
    for close in [body, closed_again] {
        assert_eq!(
            signed(&l.app, "issues", &uuid_like(), reopened.clone()).await.status(),
            200
        );
        assert_eq!(signed(&l.app, "issues", &uuid_like(), close).await.status(), 200);
    }
    l.app.deliverer.run_once().await.unwrap();
    assert_eq!(l.smtp.received().len(), 3);
}

on_both_backends!(
    a_closed_issue_sends_one_threaded_follow_up,
    reopened_is_recorded_and_the_next_close_follows_up_again,
    a_replayed_close_under_new_delivery_ids_sends_no_second_follow_up,
);

#[tokio::test]
async fn a_bad_or_missing_signature_is_refused_and_does_nothing() {
    let l = closed_loop(Backend::Sqlite).await.unwrap();
    let (_, number) = filed_ticket(&l).await;
    let body = adapted("issues-closed.json", REPO, number, None);
    let mut tampered = body.clone();
    tampered.extend_from_slice(b" ");
    let cases = [
        (body.clone(), None),
        (body.clone(), Some("sha256=00".to_owned())),
        (tampered, Some(sign(&body))),
        (body.clone(), Some(sign(&body).replace("sha256=", "sha1="))),
    ];
    for (b, sig) in cases {
        let res = deliver(&l.app, "issues", &uuid_like(), b, sig).await;
        assert_eq!(res.status(), 401);
        assert_eq!(res.headers()["content-type"], "application/problem+json");
    }
    assert_eq!(
        l.app.refusals.count(Refusal::BadSignature),
        4,
        "each one counted and logged"
    );
    l.app.deliverer.run_once().await.unwrap();
    assert_eq!(l.smtp.received().len(), 1, "only the acknowledgement");
}

#[tokio::test]
async fn ping_other_events_and_issues_not_ours_are_answered_and_ignored() {
    let l = closed_loop(Backend::Sqlite).await.unwrap();
    let res = signed(&l.app, "ping", &uuid_like(), fixture("ping.json")).await;
    assert_eq!(res.status(), 200);
    let res = signed(
        &l.app,
        "issue_comment",
        &uuid_like(),
        fixture("issue_comment-created.json"),
    )
    .await;
    assert_eq!(res.status(), 202);
    let res = signed(&l.app, "issues", &uuid_like(), fixture("issues-labeled.json")).await;
    assert_eq!(res.status(), 202, "another action");
    // A close of an issue the service did not file (the fixture as captured).
    let res = signed(&l.app, "issues", &uuid_like(), fixture("issues-closed.json")).await;
    assert_eq!(res.status(), 202);
    assert_eq!(res.json::<Value>().await.unwrap()["status"], "ignored");
    assert_eq!(l.app.deliverer.run_once().await.unwrap(), 0, "nothing queued");
    // Signed but not the shape an issues event has, or without a delivery id.
    assert_eq!(
        signed(&l.app, "issues", &uuid_like(), b"{\"action\":1}".to_vec())
            .await
            .status(),
        400
    );
    let body = fixture("ping.json");
    let res = l
        .app
        .client
        .post(format!("{}/webhooks/github", l.app.address))
        .header("X-GitHub-Event", "ping")
        .header("X-Hub-Signature-256", sign(&body))
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 400);
}

#[tokio::test]
async fn without_a_secret_there_is_no_webhook_endpoint() {
    let app = spawn_app_with(Backend::Sqlite, |_| {}).await.unwrap();
    let body = fixture("ping.json");
    let res = deliver(&app, "ping", "d-1", body.clone(), Some(sign(&body))).await;
    assert_eq!(res.status(), 404);
    assert_eq!(app.refusals.count(Refusal::BadSignature), 0);
}
