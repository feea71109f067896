//! `GET /api/health` (docs/operations.md).

use secrecy::SecretString;
use serde_json::Value;

use crate::helpers::{spawn_app, spawn_app_with, valid_ticket, Backend};
use crate::on_both_backends;

async fn health_reports_each_check_and_counts_the_outbox(backend: Backend) {
    let Some(app) = spawn_app(backend).await else { return };
    let res = app.get("/api/health").await;
    assert_eq!(res.status(), 200);
    let body: Value = res.json().await.unwrap();
    // GitHub is not configured by default: filing waits, so the whole is degraded.
    assert_eq!(body["status"], "degraded");
    assert_eq!(body["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(body["checks"]["database"]["status"], "ok");
    assert_eq!(body["checks"]["github"]["status"], "not_configured");
    // Anyone gets the status in words; what is missing (key names, the outbox directory) is for
    // a `read` token.
    assert_eq!(body["checks"]["github"]["detail"], "filing waits for configuration");
    assert_eq!(body["checks"]["email"]["detail"], "ok");
    let text = body.to_string();
    for private in ["github.token", "outbox", app.outbox_dir.path().to_str().unwrap()] {
        assert!(
            !text.replace("\"outbox\":", "").contains(private),
            "{private} in {text}"
        );
    }
    let reader = crate::ops::create(&app, "monitor", "read");
    let detailed: Value = crate::ops::get_with(&app, "/api/health", &reader)
        .await
        .json()
        .await
        .unwrap();
    assert!(detailed["checks"]["github"]["detail"]
        .as_str()
        .unwrap()
        .contains("github.token"));
    assert!(detailed["checks"]["email"]["detail"]
        .as_str()
        .unwrap()
        .contains(app.outbox_dir.path().to_str().unwrap()));
    assert_eq!(
        crate::ops::get_with(&app, "/api/health", "itk_000000000000_wrong")
            .await
            .status(),
        401
    );
    assert_eq!(body["checks"]["email"]["status"], "ok");
    assert_eq!(body["checks"]["outbox"]["pending"], 0);
    for check in ["database", "outbox", "email", "github"] {
        assert!(body["checks"][check]["detail"].is_string(), "{check}");
    }

    app.post_ticket(&valid_ticket()).await;
    app.post_ticket(&valid_ticket()).await;
    let body: Value = app.get("/api/health").await.json().await.unwrap();
    assert_eq!(body["checks"]["outbox"]["pending"], 4);
    assert_eq!(body["checks"]["outbox"]["dead"], 0);
    assert!(body["checks"]["outbox"]["oldest_pending_seconds"].as_i64().unwrap() >= 0);
}

on_both_backends!(health_reports_each_check_and_counts_the_outbox);

#[tokio::test]
async fn health_is_ok_when_github_is_configured() {
    let app = spawn_app_with(Backend::Sqlite, |s| {
        s.github.token = Some(SecretString::from("ghp_test"));
        s.github.routes.insert(
            "billing".into(),
            intake::config::GithubRoute {
                repo: "acme/support".into(),
                labels: None,
                assignees: vec![],
            },
        );
    })
    .await
    .unwrap();
    let body: Value = app.get("/api/health").await.json().await.unwrap();
    assert_eq!(body["status"], "ok");
    assert_eq!(body["checks"]["github"]["status"], "ok");
}

#[tokio::test]
async fn when_the_database_is_gone_health_is_down_and_submissions_get_503() {
    let Some(app) = spawn_app(Backend::Postgres).await else {
        return;
    };
    assert_eq!(app.post_ticket(&valid_ticket()).await.status(), 202);
    app.db.drop_now().await;

    let res = app.get("/api/health").await;
    assert_eq!(res.status(), 503);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["status"], "down");
    assert_eq!(body["checks"]["database"]["status"], "down");

    let res = app.post_ticket(&valid_ticket()).await;
    assert_eq!(res.status(), 503);
    assert_eq!(res.headers()["content-type"], "application/problem+json");
    assert!(res.headers().contains_key("retry-after"));
    let body = res.text().await.unwrap();
    // Nothing internal in a 5xx body.
    assert!(
        !body.contains("sqlx") && !body.contains("database \"") && !body.contains("intake_test_"),
        "{body}"
    );

    // The form keeps the customer's text when it cannot store it.
    let (_, token) = app.get_form().await;
    let res = app
        .post_form(&[
            ("form_token", token.as_str()),
            ("type", "billing"),
            ("name", "Ada"),
            ("email", "ada@example.com"),
            ("subject", "Invoice"),
            ("message", "Please resend the October invoice, thank you."),
        ])
        .await;
    assert_eq!(res.status(), 503);
    assert!(res.text().await.unwrap().contains("Please resend the October invoice"));
}

#[tokio::test]
async fn every_response_carries_its_own_request_id() {
    let app = spawn_app(Backend::Sqlite).await.unwrap();
    let mut seen = std::collections::HashSet::new();
    for path in ["/api/live", "/api/health", "/no-such-page", "/"] {
        let res = app.get(path).await;
        let id = res.headers()["x-request-id"].to_str().unwrap().to_owned();
        assert_eq!(id.len(), 36, "a UUID: {id}");
        assert!(seen.insert(id), "each request its own id");
    }
    let res = app.post_ticket(&serde_json::json!({})).await;
    assert_eq!(res.status(), 422);
    assert!(res.headers().contains_key("x-request-id"), "errors too");
}

async fn failing_sends_make_email_degraded_until_they_go_through(backend: Backend) {
    let smtp = crate::smtp_server::SmtpServer::start().await;
    let url = smtp.url();
    let Some(app) = spawn_app_with(backend, move |s| {
        s.email.transport = intake::config::EmailTransport::Smtp;
        s.email.smtp_url = Some(SecretString::from(url));
    })
    .await
    else {
        return;
    };
    smtp.transient_failures.store(1, std::sync::atomic::Ordering::SeqCst);
    app.post_ticket(&valid_ticket()).await;
    app.deliverer.run_once().await.unwrap();
    let body: Value = app.get("/api/health").await.json().await.unwrap();
    assert_eq!(body["checks"]["email"]["status"], "degraded");
    assert_eq!(
        body["checks"]["email"]["detail"], "sending fails and is retried",
        "no server reply in public"
    );
    assert_eq!(body["status"], "degraded");
    let reader = crate::ops::create(&app, "monitor", "read");
    let body: Value = crate::ops::get_with(&app, "/api/health", &reader)
        .await
        .json()
        .await
        .unwrap();
    let detail = body["checks"]["email"]["detail"].as_str().unwrap();
    assert!(detail.contains("retried") && detail.contains("451"), "{detail}");

    // The retry goes through: email is ok again.
    app.deliverer
        .run_once_at(chrono::Utc::now() + chrono::Duration::hours(1))
        .await
        .unwrap();
    let body: Value = app.get("/api/health").await.json().await.unwrap();
    assert_eq!(body["checks"]["email"]["status"], "ok", "{body}");
}

on_both_backends!(failing_sends_make_email_degraded_until_they_go_through);
