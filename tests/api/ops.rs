//! Ops tokens and the audit log: made with the real binary against the service's database, used
//! over HTTP, revoked; every change in the append-only audit log.

use std::process::{Command, Output};

use intake::abuse::Refusal;
use serde_json::Value;

use crate::helpers::{spawn_app, Backend, TestApp};
use crate::on_both_backends;

/// Runs `intake <args> --json` against the app's database, as user `alice`.
pub fn intake(app: &TestApp, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_intake"))
        .args(args)
        .arg("--json")
        .env_remove("INTAKE_CONFIG")
        .env_remove("SUDO_USER")
        .env("USER", "alice")
        .env("RUST_LOG", "warn")
        .env("INTAKE_DATABASE__URL", app.db.url())
        .output()
        .expect("the binary runs")
}

pub fn json_of(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|_| panic!("JSON on stdout: {out:?}"))
}

pub fn create(app: &TestApp, name: &str, scopes: &str) -> String {
    let out = intake(
        app,
        &[
            "tokens",
            "create",
            "--name",
            name,
            "--scopes",
            scopes,
            "--reason",
            "on call this week",
        ],
    );
    assert!(out.status.success(), "{out:?}");
    json_of(&out)["token"].as_str().unwrap().to_owned()
}

async fn me(app: &TestApp, token: Option<&str>) -> reqwest::Response {
    let mut req = app.client.get(format!("{}/api/me", app.address));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    req.send().await.unwrap()
}

async fn a_token_is_shown_once_works_until_revoked_and_every_change_is_audited(backend: Backend) {
    let Some(app) = spawn_app(backend).await else {
        return;
    };
    let token = create(&app, "alice-laptop", "read,metrics");
    assert!(token.starts_with("itk_"));

    let res = me(&app, Some(&token)).await;
    assert_eq!(res.status(), 200);
    let body: Value = res.json().await.unwrap();
    assert_eq!(
        body,
        serde_json::json!({"name": "alice-laptop", "scopes": ["read", "metrics"]})
    );

    // Listed without its secret.
    let list = intake(&app, &["tokens", "list"]);
    let listed = String::from_utf8_lossy(&list.stdout).into_owned();
    assert!(
        listed.contains("alice-laptop") && !listed.contains(&token[4..]),
        "{listed}"
    );

    // A second live token of the same name is refused.
    let out = intake(
        &app,
        &[
            "tokens",
            "create",
            "--name",
            "alice-laptop",
            "--scopes",
            "ops",
            "--reason",
            "again",
        ],
    );
    assert!(!out.status.success());

    let out = intake(&app, &["tokens", "revoke", "alice-laptop", "--reason", "laptop lost"]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(me(&app, Some(&token)).await.status(), 401, "a revoked token is refused");
    // The name is free again.
    let again = create(&app, "alice-laptop", "ops");
    assert_eq!(me(&app, Some(&again)).await.status(), 200);

    let audit = json_of(&intake(&app, &["audit"]));
    let entries = audit["entries"].as_array().unwrap();
    let actions: Vec<(&str, &str, &str)> = entries
        .iter()
        .map(|e| {
            (
                e["action"].as_str().unwrap(),
                e["actor"].as_str().unwrap(),
                e["reason"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        actions,
        [
            ("token.create", "cli:alice", "on call this week"),
            ("token.revoke", "cli:alice", "laptop lost"),
            ("token.create", "cli:alice", "on call this week"),
        ],
        "newest first, each with who and why"
    );
}

async fn the_audit_log_cannot_be_changed_or_emptied(backend: Backend) {
    let Some(app) = spawn_app(backend).await else {
        return;
    };
    create(&app, "bob", "read");
    let url = app.db.url().to_owned();
    let (update, delete) = if backend == Backend::Sqlite {
        let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
        (
            sqlx::query("UPDATE audit_log SET reason = 'nothing happened'")
                .execute(&pool)
                .await
                .is_err(),
            sqlx::query("DELETE FROM audit_log").execute(&pool).await.is_err(),
        )
    } else {
        let pool = sqlx::PgPool::connect(&url).await.unwrap();
        let r = (
            sqlx::query("UPDATE audit_log SET reason = 'nothing happened'")
                .execute(&pool)
                .await
                .is_err(),
            sqlx::query("DELETE FROM audit_log").execute(&pool).await.is_err(),
        );
        pool.close().await;
        r
    };
    assert!(update && delete, "append-only");
    let audit = json_of(&intake(&app, &["audit"]));
    assert_eq!(audit["entries"][0]["reason"], "on call this week");
}

on_both_backends!(
    a_token_is_shown_once_works_until_revoked_and_every_change_is_audited,
    the_audit_log_cannot_be_changed_or_emptied,
);

#[tokio::test]
async fn without_a_valid_token_me_is_401_and_a_wrong_one_is_a_refusal() {
    let app = spawn_app(Backend::Sqlite).await.unwrap();
    let res = me(&app, None).await;
    assert_eq!(res.status(), 401);
    assert_eq!(res.headers()["www-authenticate"], "Bearer realm=\"intake\"");
    assert_eq!(res.headers()["content-type"], "application/problem+json");
    assert_eq!(
        app.refusals.count(Refusal::BadCredentials),
        0,
        "no token is not an attack"
    );

    let token = create(&app, "carol", "read");
    let (id_part, _) = token.rsplit_once('_').unwrap();
    let wrong_secret = format!("{id_part}_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA");
    for bad in [wrong_secret.as_str(), "itk_000000000000_x", "garbage"] {
        assert_eq!(me(&app, Some(bad)).await.status(), 401, "{bad}");
    }
    assert_eq!(app.refusals.count(Refusal::BadCredentials), 3);
}

#[test]
fn changes_need_a_reason_and_scopes_must_be_known() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("db.sqlite").display());
    let run = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_intake"))
            .args(args)
            .env_remove("INTAKE_CONFIG")
            .env("INTAKE_DATABASE__URL", &db)
            .output()
            .unwrap()
    };
    let no_reason = run(&["tokens", "create", "--name", "x", "--scopes", "read"]);
    assert_eq!(no_reason.status.code(), Some(2), "clap refuses a missing --reason");
    let blank = run(&["tokens", "create", "--name", "x", "--scopes", "read", "--reason", "  "]);
    assert!(!blank.status.success());
    assert!(String::from_utf8_lossy(&blank.stderr).contains("--reason"));
    let unknown = run(&[
        "tokens",
        "create",
        "--name",
        "x",
        "--scopes",
        "read,admin",
        "--reason",
        "r",
    ]);
    assert!(!unknown.status.success());
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("admin"));
    let revoke_none = run(&["tokens", "revoke", "nobody", "--reason", "r"]);
    assert!(!revoke_none.status.success());
    assert!(
        String::from_utf8_lossy(&run(&["audit"]).stdout).is_empty(),
        "nothing changed, nothing audited"
    );
    // One limit policy on both doors: out of range is refused, not clamped.
    for args in [
        &["tickets", "list", "--limit", "501"][..],
        &["deliveries", "list", "--limit", "0"],
        &["audit", "--limit", "10000"],
    ] {
        let out = run(args);
        assert!(!out.status.success(), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("--limit: must be between 1 and 500"), "{args:?}: {err}");
    }
    let bad_filter = run(&["tickets", "list", "--status", "open", "--type", "sales"]);
    let err = String::from_utf8_lossy(&bad_filter.stderr);
    assert!(
        err.contains("--status: must be received or unsupported") && err.contains("--type: must be account"),
        "{err}"
    );
}

pub async fn get_with(app: &TestApp, path: &str, token: &str) -> reqwest::Response {
    app.client
        .get(format!("{}{path}", app.address))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
}

async fn retry_with(app: &TestApp, id: i64, token: &str, body: Value) -> reqwest::Response {
    app.client
        .post(format!("{}/api/v1/deliveries/{id}/retry", app.address))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .unwrap()
}

async fn a_dead_delivery_is_retried_by_an_ops_token_and_not_by_a_read_token(backend: Backend) {
    use crate::smtp_server::SmtpServer;
    let smtp = SmtpServer::start().await;
    let url = smtp.url();
    let Some(app) = crate::helpers::spawn_app_with(backend, move |s| {
        s.email.transport = intake::config::EmailTransport::Smtp;
        s.email.smtp_url = Some(secrecy::SecretString::from(url));
    })
    .await
    else {
        return;
    };
    smtp.permanent_failures.store(1, std::sync::atomic::Ordering::SeqCst);
    let reference = app.submit(&crate::helpers::valid_ticket()).await;
    app.deliverer.run_once().await.unwrap();

    let reader = create(&app, "reader", "read");
    let operator = create(&app, "operator", "ops");
    // Dead ones first, by the CLI.
    let dead = json_of(&intake(&app, &["deliveries", "list", "--dead"]));
    let id = dead["deliveries"][0]["id"].as_i64().expect("a dead delivery");
    assert_eq!(dead["deliveries"][0]["kind"], "ack_email");

    let body = serde_json::json!({"reason": "relay fixed, mailbox exists"});
    assert_eq!(
        retry_with(&app, id, &reader, body.clone()).await.status(),
        403,
        "read cannot retry"
    );
    assert_eq!(
        get_with(&app, "/api/v1/tickets", &operator).await.status(),
        403,
        "ops alone cannot read"
    );
    let blank = retry_with(&app, id, &operator, serde_json::json!({"reason": " "})).await;
    assert_eq!(blank.status(), 422, "a reason is required");
    let res = retry_with(&app, id, &operator, body.clone()).await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.json::<Value>().await.unwrap()["state"], "pending");
    app.deliverer.run_once().await.unwrap();
    assert_eq!(smtp.received().len(), 1, "sent this time");
    let again = retry_with(&app, id, &operator, body).await;
    assert_eq!(again.status(), 409, "a done delivery is not retried");
    assert_eq!(
        retry_with(&app, 999_999, &operator, serde_json::json!({"reason": "x"}))
            .await
            .status(),
        404
    );

    // The read token sees the list and the timeline.
    let list: Value = get_with(&app, "/api/v1/tickets?status=received", &reader)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(list["tickets"][0]["reference"], reference);
    assert_eq!(
        get_with(&app, "/api/v1/tickets?status=bogus", &reader).await.status(),
        422
    );
    for query in ["limit=501", "limit=0", "type=sales&limit=9999"] {
        let refused = get_with(&app, &format!("/api/v1/tickets?{query}"), &reader).await;
        assert_eq!(refused.status(), 422, "{query}");
        let problem: Value = refused.json().await.unwrap();
        let fields: Vec<&str> = problem["errors"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|e| e["field"].as_str())
            .collect();
        assert!(fields.contains(&"limit"), "{query}: {problem}");
    }
    let shown: Value = get_with(&app, &format!("/api/v1/tickets/{reference}"), &reader)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        crate::helpers::timeline_steps(&shown),
        ["received", "classified", "acknowledged"]
    );
    assert_eq!(
        get_with(&app, "/api/v1/tickets/LV-00000000", &reader).await.status(),
        404
    );

    let audit = json_of(&intake(&app, &["audit"]));
    let newest = &audit["entries"][0];
    assert_eq!(newest["action"], "delivery.retry");
    assert_eq!(newest["actor"], "token:operator");
    assert_eq!(newest["reason"], "relay fixed, mailbox exists");
    assert_eq!(newest["target"], format!("delivery {id}"));

    // The CLI twin: the ticket list and a retry that is refused (the delivery is done).
    let listed = json_of(&intake(&app, &["tickets", "list", "--type", "billing"]));
    assert_eq!(listed["tickets"][0]["reference"], reference);
    let refused = intake(&app, &["deliveries", "retry", &id.to_string(), "--reason", "again"]);
    assert!(!refused.status.success());
    let shown = json_of(&intake(&app, &["tickets", "show", &reference]));
    assert_eq!(shown["ticket"]["reference"], reference);
}

on_both_backends!(a_dead_delivery_is_retried_by_an_ops_token_and_not_by_a_read_token);

#[tokio::test]
async fn metrics_need_the_metrics_scope_and_count_what_happened() {
    let app = spawn_app(Backend::Sqlite).await.unwrap();
    let scraper = create(&app, "prometheus", "metrics");
    let reader = create(&app, "reader", "read");
    assert_eq!(app.get("/metrics").await.status(), 401);
    assert_eq!(get_with(&app, "/metrics", &reader).await.status(), 403);

    assert_eq!(app.post_ticket(&crate::helpers::valid_ticket()).await.status(), 202);
    assert_eq!(me(&app, Some("itk_000000000000_wrong")).await.status(), 401);
    app.deliverer.run_once().await.unwrap();

    let res = get_with(&app, "/metrics", &scraper).await;
    assert_eq!(res.status(), 200);
    assert!(res.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/plain; version=0.0.4"));
    let text = res.text().await.unwrap();
    for line in [
        "intake_submissions_total{type=\"billing\",outcome=\"received\"} 1",
        "intake_submissions_total{type=\"security\",outcome=\"received\"} 0",
        "intake_refusals_total{reason=\"bad-credentials\"} 1",
        "intake_refusals_total{reason=\"rate-limit\"} 0",
        "intake_deliveries_total{kind=\"ack_email\",result=\"done\"} 1",
        "intake_outbox_pending 1",
        "intake_outbox_dead 0",
        "intake_http_request_duration_seconds_count{route=\"/api/v1/tickets\",method=\"POST\"} 1",
        "intake_http_request_duration_seconds_bucket{route=\"/api/v1/tickets\",method=\"POST\",le=\"+Inf\"} 1",
    ] {
        assert!(text.contains(line), "missing {line}\n{text}");
    }
}

#[tokio::test]
async fn an_acknowledgement_is_sent_again_on_request_with_a_reason() {
    let app = spawn_app(Backend::Sqlite).await.unwrap();
    let reference = app.submit(&crate::helpers::valid_ticket()).await;
    app.deliverer.run_once().await.unwrap();
    let sent = || std::fs::read_dir(app.outbox_dir.path()).unwrap().count();
    assert_eq!(sent(), 1);

    let reader = create(&app, "reader", "read");
    let operator = create(&app, "operator", "ops");
    let url = format!("{}/api/v1/tickets/{reference}/resend-ack", app.address);
    let body = serde_json::json!({"reason": "customer says it never arrived"});
    let post = |token: &str| app.client.post(&url).bearer_auth(token).json(&body).send();
    assert_eq!(post(&reader).await.unwrap().status(), 403);
    let res = post(&operator).await.unwrap();
    assert_eq!(res.status(), 200);
    app.deliverer.run_once().await.unwrap();
    assert_eq!(sent(), 2, "sent again");

    let out = intake(
        &app,
        &["tickets", "resend-ack", &reference, "--reason", "asked again by phone"],
    );
    assert!(out.status.success(), "{out:?}");
    app.deliverer.run_once().await.unwrap();
    assert_eq!(sent(), 3);

    let audit = json_of(&intake(&app, &["audit", "--limit", "2"]));
    let who: Vec<(&str, &str)> = audit["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["action"].as_str().unwrap(), e["actor"].as_str().unwrap()))
        .collect();
    assert_eq!(
        who,
        [
            ("ticket.resend_ack", "cli:alice"),
            ("ticket.resend_ack", "token:operator")
        ]
    );
}
