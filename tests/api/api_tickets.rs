//! `POST /api/v1/tickets`: accepted submissions, and every kind of bad input refused cleanly.

use intake::domain::ClosedSet;
use intake::store::queue::DeliveryState;
use serde_json::{json, Value};

use crate::helpers::{spawn_app, valid_ticket, Backend};
use crate::on_both_backends;

async fn a_valid_submission_is_accepted_and_stored_with_its_jobs(backend: Backend) {
    let Some(app) = spawn_app(backend).await else { return };
    let res = app.post_ticket(&valid_ticket()).await;
    assert_eq!(res.status(), 202);
    let body: Value = res.json().await.unwrap();
    let reference = body["ticket"].as_str().unwrap();
    assert!(reference.starts_with("LV-") && reference.len() == 11, "{reference}");
    assert_eq!(body["type"], "billing");
    assert_eq!(body["status"], "received");
    assert!(body.get("picked_type").is_none());

    let ticket = app.store.ticket_by_reference(reference).await.unwrap().expect("stored");
    assert_eq!(ticket.email, "ada@example.com");
    assert_eq!(ticket.subject, "Invoice for October");
    let jobs = app.store.deliveries_for_ticket(ticket.id).await.unwrap();
    let kinds: Vec<&str> = jobs.iter().map(|j| j.kind.id()).collect();
    assert_eq!(kinds, ["ack_email", "github_issue"]);
    assert!(jobs.iter().all(|j| j.state == DeliveryState::Pending));
}

async fn a_vulnerability_report_is_moved_to_security_and_says_what_was_picked(backend: Backend) {
    let Some(app) = spawn_app(backend).await else { return };
    let mut t = valid_ticket();
    t["type"] = json!("product");
    t["subject"] = json!("Stored XSS in the video title field");
    t["message"] = json!("If I put a script tag in a title it runs in the browser of everyone who opens the project.");
    let body: Value = app.post_ticket(&t).await.json().await.unwrap();
    assert_eq!(body["type"], "security");
    assert_eq!(body["picked_type"], "product");
    assert_eq!(body["status"], "received");
    let ticket = app
        .store
        .ticket_by_reference(body["ticket"].as_str().unwrap())
        .await
        .unwrap()
        .unwrap();
    assert!(
        ticket.signals.iter().any(|s| s.points_to == "security"),
        "{:?}",
        ticket.signals
    );
}

async fn an_unsupported_request_is_recorded_and_answered_with_its_reason(backend: Backend) {
    let Some(app) = spawn_app(backend).await else { return };
    let mut t = valid_ticket();
    t["type"] = json!("product");
    t["subject"] = json!("Please debug our integration");
    t["message"] =
        json!("Our Python script that calls your API keeps failing. Can you debug our code? It is attached below.");
    let res = app.post_ticket(&t).await;
    assert_eq!(res.status(), 202);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["status"], "unsupported");
    assert_eq!(body["reason"], "custom_debugging");
    assert_eq!(body["type"], "product");
    let ticket = app
        .store
        .ticket_by_reference(body["ticket"].as_str().unwrap())
        .await
        .unwrap()
        .unwrap();
    let jobs = app.store.deliveries_for_ticket(ticket.id).await.unwrap();
    // Acknowledged with the policy, not filed (github.file_unsupported is false by default).
    assert_eq!(jobs.iter().map(|j| j.kind.id()).collect::<Vec<_>>(), ["ack_email"]);
}

on_both_backends!(
    a_valid_submission_is_accepted_and_stored_with_its_jobs,
    a_vulnerability_report_is_moved_to_security_and_says_what_was_picked,
    an_unsupported_request_is_recorded_and_answered_with_its_reason,
);

async fn assert_problem(res: reqwest::Response, status: u16) -> Value {
    assert_eq!(res.status().as_u16(), status);
    assert_eq!(res.headers()["content-type"], "application/problem+json");
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["status"], status);
    assert!(body["type"].as_str().unwrap().starts_with("/problems/"));
    assert!(!body["title"].as_str().unwrap().is_empty());
    assert!(!body["detail"].as_str().unwrap().is_empty());
    body
}

#[tokio::test]
async fn invalid_fields_are_listed_one_by_one() {
    let app = spawn_app(Backend::Sqlite).await.unwrap();
    let res = app
        .post_ticket(&json!({"name": "", "email": "not-an-address", "type": "custom_debugging", "subject": "x".repeat(151), "message": "short", "page_url": "javascript:alert(1)"}))
        .await;
    let body = assert_problem(res, 422).await;
    let fields: Vec<&str> = body["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].as_str().unwrap())
        .collect();
    assert_eq!(fields, ["name", "email", "type", "subject", "message", "page_url"]);
    assert_eq!(app.ticket_count().await, 0);
}

#[tokio::test]
async fn wrong_json_types_are_field_errors() {
    let app = spawn_app(Backend::Sqlite).await.unwrap();
    let mut t = valid_ticket();
    t["message"] = json!(12345678901234567890u64);
    t["account"] = json!({"nested": true});
    let body = assert_problem(app.post_ticket(&t).await, 422).await;
    let fields: Vec<&str> = body["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].as_str().unwrap())
        .collect();
    assert_eq!(fields, ["message", "account"]);
    assert_eq!(app.ticket_count().await, 0);
}

#[tokio::test]
async fn malformed_bodies_get_400_and_store_nothing() {
    let app = spawn_app(Backend::Sqlite).await.unwrap();
    let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
    let cases: Vec<Vec<u8>> = vec![
        b"{".to_vec(),
        b"".to_vec(),
        b"null".to_vec(),
        b"[]".to_vec(),
        b"\"just a string\"".to_vec(),
        b"{\"name\": \"\xff\xfe\"}".to_vec(),
        br#"{"name": "a", "name": "b", "email": "a@example.com"}"#.to_vec(),
        br#"{"name": 1e999999}"#.to_vec(),
        br#"{"unknown_field": 1}"#.to_vec(),
        deep.into_bytes(),
        format!(r#"{{"name": {}}}"#, "[".repeat(500) + &"]".repeat(500)).into_bytes(),
    ];
    for body in cases {
        let res = app.post_raw("/api/v1/tickets", "application/json", body.clone()).await;
        let status = res.status().as_u16();
        assert_eq!(
            status,
            400,
            "{:?}",
            String::from_utf8_lossy(&body[..body.len().min(60)])
        );
        assert_problem(res, 400).await;
    }
    assert_eq!(app.ticket_count().await, 0);
}

#[tokio::test]
async fn a_body_over_64_kib_gets_413_even_a_10_mb_one() {
    let app = spawn_app(Backend::Sqlite).await.unwrap();
    let mut t = valid_ticket();
    t["message"] = json!("a".repeat(70 * 1024));
    assert_problem(app.post_ticket(&t).await, 413).await;
    let huge = vec![b' '; 10 * 1024 * 1024];
    let res = app.post_raw("/api/v1/tickets", "application/json", huge).await;
    assert_eq!(res.status(), 413);
    // Chunked, with no Content-Length to go by.
    let stream = futures_util::stream::iter((0..200).map(|_| Ok::<_, std::io::Error>(vec![b' '; 1024])));
    let res = app
        .client
        .post(format!("{}/api/v1/tickets", app.address))
        .header("Content-Type", "application/json")
        .body(reqwest::Body::wrap_stream(stream))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 413);
    assert_eq!(app.ticket_count().await, 0);
}

#[tokio::test]
async fn a_wrong_content_type_gets_415() {
    let app = spawn_app(Backend::Sqlite).await.unwrap();
    let body = serde_json::to_vec(&valid_ticket()).unwrap();
    for ct in ["text/plain", "application/x-www-form-urlencoded", "application/jsonx"] {
        assert_problem(app.post_raw("/api/v1/tickets", ct, body.clone()).await, 415).await;
    }
    let res = app
        .client
        .post(format!("{}/api/v1/tickets", app.address))
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_problem(res, 415).await;
    // Parameters and the +json suffix are fine.
    let res = app
        .post_raw("/api/v1/tickets", "application/json; charset=utf-8", body)
        .await;
    assert_eq!(res.status(), 202);
}

#[tokio::test]
async fn text_is_normalised_and_stored_without_control_characters() {
    let app = spawn_app(Backend::Sqlite).await.unwrap();
    let mut t = valid_ticket();
    t["name"] = json!("  Ad\u{0}a\u{202E} Love\u{301}lace  ");
    t["subject"] = json!("Invoice\r\nBcc: victim@example.com");
    t["message"] = json!("Line one\r\nLine two\u{7} and more words here");
    let body: Value = app.post_ticket(&t).await.json().await.unwrap();
    let ticket = app
        .store
        .ticket_by_reference(body["ticket"].as_str().unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(ticket.name, "Ada Lov\u{e9}lace");
    assert_eq!(ticket.subject, "Invoice Bcc: victim@example.com");
    assert_eq!(ticket.message, "Line one\nLine two and more words here");
}

#[tokio::test]
async fn unknown_api_paths_get_problem_details() {
    let app = spawn_app(Backend::Sqlite).await.unwrap();
    let res = app.get("/api/v1/nothing-here").await;
    assert_problem(res, 404).await;
}

#[tokio::test]
async fn a_rules_file_from_configuration_replaces_the_shipped_rules() {
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("rules.toml");
    std::fs::write(
        &rules,
        "[decision]\ntriage_min_score = 2\n\n[[rule]]\nid = \"team-word\"\npoints_to = \"security\"\npatterns = ['\\bbanana\\b']\n",
    )
    .unwrap();
    let path = rules.clone();
    let app = crate::helpers::spawn_app_with(Backend::Sqlite, move |s| s.classify.rules_file = Some(path))
        .await
        .unwrap();
    let mut t = valid_ticket();
    t["message"] = json!("The banana protocol leaks everything, please look at it.");
    let body: Value = app.post_ticket(&t).await.json().await.unwrap();
    assert_eq!(body["type"], "security");
    let ticket = app
        .store
        .ticket_by_reference(body["ticket"].as_str().unwrap())
        .await
        .unwrap()
        .unwrap();
    let rules: Vec<&str> = ticket
        .signals
        .iter()
        .filter(|s| s.is_rule())
        .map(|s| s.rule.as_str())
        .collect();
    assert_eq!(rules, ["team-word"]);
    // The shipped rules are gone: none of them fires on a report they would catch.
    let mut t = valid_ticket();
    t["message"] = json!("There is an XSS in the title field of every project.");
    let body: Value = app.post_ticket(&t).await.json().await.unwrap();
    let ticket = app
        .store
        .ticket_by_reference(body["ticket"].as_str().unwrap())
        .await
        .unwrap()
        .unwrap();
    assert!(ticket.signals.iter().all(|s| !s.is_rule()), "{:?}", ticket.signals);
}
