//! `Idempotency-Key`: a repeat gets the same answer and stores nothing new, also when concurrent.

use serde_json::{json, Value};

use crate::helpers::{spawn_app, valid_ticket, Backend};
use crate::on_both_backends;

async fn a_repeated_idempotency_key_returns_the_same_ticket(backend: Backend) {
    let Some(app) = spawn_app(backend).await else { return };
    let first = app.post_ticket_with_key(&valid_ticket(), "order-42").await;
    assert_eq!(first.status(), 202);
    let first: Value = first.json().await.unwrap();
    let second = app.post_ticket_with_key(&valid_ticket(), "order-42").await;
    assert_eq!(second.status(), 202);
    assert_eq!(second.headers()["idempotent-replayed"], "true");
    let second: Value = second.json().await.unwrap();
    assert_eq!(first, second);
    assert_eq!(app.ticket_count().await, 1);
}

async fn concurrent_submissions_with_one_key_store_one_ticket(backend: Backend) {
    let Some(app) = spawn_app(backend).await else { return };
    let t = valid_ticket();
    let requests = (0..20).map(|_| app.post_ticket_with_key(&t, "double-click"));
    let answers = futures_util::future::join_all(requests).await;
    let mut references = std::collections::HashSet::new();
    for res in answers {
        assert_eq!(res.status(), 202);
        let body: Value = res.json().await.unwrap();
        references.insert(body["ticket"].as_str().unwrap().to_owned());
    }
    assert_eq!(references.len(), 1);
    assert_eq!(app.ticket_count().await, 1);
    let ticket = app
        .store
        .ticket_by_reference(references.iter().next().unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(app.store.deliveries_for_ticket(ticket.id).await.unwrap().len(), 2);
}

async fn the_same_key_with_other_content_gets_422(backend: Backend) {
    let Some(app) = spawn_app(backend).await else { return };
    assert_eq!(app.post_ticket_with_key(&valid_ticket(), "k-1").await.status(), 202);
    let mut other = valid_ticket();
    other["subject"] = json!("Something else entirely");
    let res = app.post_ticket_with_key(&other, "k-1").await;
    assert_eq!(res.status(), 422);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["type"], "/problems/idempotency-key-reused");
    assert_eq!(app.ticket_count().await, 1);
}

on_both_backends!(
    a_repeated_idempotency_key_returns_the_same_ticket,
    concurrent_submissions_with_one_key_store_one_ticket,
    the_same_key_with_other_content_gets_422,
);

#[tokio::test]
async fn different_keys_and_no_key_make_different_tickets() {
    let app = spawn_app(Backend::Sqlite).await.unwrap();
    app.post_ticket_with_key(&valid_ticket(), "a").await;
    app.post_ticket_with_key(&valid_ticket(), "b").await;
    app.post_ticket(&valid_ticket()).await;
    app.post_ticket(&valid_ticket()).await;
    assert_eq!(app.ticket_count().await, 4);
}

#[tokio::test]
async fn a_malformed_idempotency_key_is_refused() {
    let app = spawn_app(Backend::Sqlite).await.unwrap();
    for key in ["has space", &"k".repeat(201)] {
        let res = app.post_ticket_with_key(&valid_ticket(), key).await;
        assert_eq!(res.status(), 422, "{key}");
        let body: Value = res.json().await.unwrap();
        assert_eq!(body["errors"][0]["field"], "Idempotency-Key");
    }
    assert_eq!(app.ticket_count().await, 0);
}
