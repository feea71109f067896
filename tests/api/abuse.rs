//! Abuse resistance from outside: rate limits on the form and the API together, the client address
//! behind trusted proxies, input limits on heads, bodies, slow clients and connections.

use std::time::{Duration, Instant};

use intake::abuse::Refusal;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::form::{as_refs, valid_fields};
use crate::helpers::{spawn_app_with, valid_ticket, Backend, TestApp};

async fn app_with_limits(per_ip: &str, per_email: &str) -> TestApp {
    let (per_ip, per_email) = (per_ip.parse().unwrap(), per_email.parse().unwrap());
    spawn_app_with(Backend::Sqlite, |s| {
        s.limits.per_ip = per_ip;
        s.limits.per_email = per_email;
        s.server.trusted_proxies = vec!["127.0.0.1/32".parse().unwrap()];
    })
    .await
    .unwrap()
}

async fn post_as(app: &TestApp, forwarded_for: &str, body: &Value) -> reqwest::Response {
    app.client
        .post(format!("{}/api/v1/tickets", app.address))
        .header("X-Forwarded-For", forwarded_for)
        .json(body)
        .send()
        .await
        .unwrap()
}

fn with_email(email: &str) -> Value {
    let mut t = valid_ticket();
    t["email"] = json!(email);
    t
}

#[tokio::test]
async fn every_attempt_counts_and_the_one_over_the_limit_gets_429_with_retry_after() {
    let app = app_with_limits("3/hour", "100/hour").await;
    // Invalid attempts count as much as valid ones.
    assert_eq!(post_as(&app, "203.0.113.1", &json!({"name": 1})).await.status(), 422);
    assert_eq!(post_as(&app, "203.0.113.1", &json!({})).await.status(), 422);
    assert_eq!(post_as(&app, "203.0.113.1", &valid_ticket()).await.status(), 202);
    let res = post_as(&app, "203.0.113.1", &valid_ticket()).await;
    assert_eq!(res.status(), 429);
    let retry: u64 = res.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    // 3/hour refills one attempt every 20 minutes.
    assert!((1..=1200).contains(&retry), "{retry}");
    assert_eq!(res.headers()["content-type"], "application/problem+json");
    let problem: Value = res.json().await.unwrap();
    assert_eq!(problem["status"], 429);
    assert_eq!(problem["type"], "/problems/rate-limited");
    assert!(problem["detail"].as_str().unwrap().contains("nothing was stored"));
    assert_eq!(app.ticket_count().await, 1);
    assert_eq!(app.refusals.count(Refusal::RateLimit), 1);
    // Another client is not held back.
    assert_eq!(post_as(&app, "203.0.113.2", &valid_ticket()).await.status(), 202);
}

#[tokio::test]
async fn the_form_and_the_api_share_one_limit_and_the_form_keeps_the_text() {
    let app = app_with_limits("2/hour", "100/hour").await;
    let (_, token) = app.get_form().await;
    assert_eq!(post_as(&app, "198.51.100.7", &valid_ticket()).await.status(), 202);
    assert_eq!(
        post_as(&app, "198.51.100.7", &with_email("b@example.org"))
            .await
            .status(),
        202
    );
    let fields = valid_fields(&token);
    let res = app
        .client
        .post(format!("{}/", app.address))
        .header("X-Forwarded-For", "198.51.100.7")
        .form(&as_refs(&fields))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 429);
    assert!(res.headers().contains_key("retry-after"));
    assert!(res.headers()["content-type"].to_str().unwrap().starts_with("text/html"));
    assert!(res.headers().contains_key("content-security-policy"));
    let html = res.text().await.unwrap();
    assert!(html.contains("Grace Hopper"), "the name is kept");
    assert!(
        html.contains("the page says my password is wrong"),
        "the message is kept"
    );
    assert!(html.contains("Too many requests"));
    assert!(html.contains(&token), "the same form can be sent later");
    assert_eq!(app.ticket_count().await, 2);
}

#[tokio::test]
async fn an_address_is_limited_however_it_is_written_and_from_wherever_it_is_sent() {
    let app = app_with_limits("100/hour", "2/hour").await;
    assert_eq!(
        post_as(&app, "203.0.113.1", &with_email("ada@example.com"))
            .await
            .status(),
        202
    );
    assert_eq!(
        post_as(&app, "203.0.113.2", &with_email("ADA@example.com"))
            .await
            .status(),
        202
    );
    let res = post_as(&app, "203.0.113.3", &with_email(" Ada@Example.com ")).await;
    assert_eq!(res.status(), 429);
    assert!(res.headers().contains_key("retry-after"));
    assert_eq!(
        post_as(&app, "203.0.113.3", &with_email("grace@example.com"))
            .await
            .status(),
        202
    );
    assert_eq!(app.ticket_count().await, 3);
}

#[tokio::test]
async fn the_left_most_forwarded_entry_is_never_believed() {
    let app = app_with_limits("1/hour", "100/hour").await;
    // The client writes a new "address" each time; the proxy appends the one it saw.
    assert_eq!(
        post_as(&app, "6.6.6.1, 203.0.113.9", &valid_ticket()).await.status(),
        202
    );
    assert_eq!(
        post_as(&app, "6.6.6.2, 203.0.113.9", &valid_ticket()).await.status(),
        429
    );
    assert_eq!(post_as(&app, "203.0.113.10", &valid_ticket()).await.status(), 202);
    // IPv6 clients are limited by their /64.
    assert_eq!(post_as(&app, "2001:db8:5:6::1", &valid_ticket()).await.status(), 202);
    assert_eq!(post_as(&app, "2001:db8:5:6::2", &valid_ticket()).await.status(), 429);
}

#[tokio::test]
async fn an_untrusted_peer_cannot_choose_its_address() {
    let app = spawn_app_with(Backend::Sqlite, |s| s.limits.per_ip = "1/hour".parse().unwrap())
        .await
        .unwrap();
    assert_eq!(post_as(&app, "203.0.113.1", &valid_ticket()).await.status(), 202);
    // No trusted proxies: the header is ignored and the peer (127.0.0.1) is over its limit.
    assert_eq!(post_as(&app, "203.0.113.2", &valid_ticket()).await.status(), 429);
}

#[tokio::test]
async fn an_oversized_api_body_is_refused_and_counted() {
    let app = app_with_limits("100/hour", "100/hour").await;
    let big = json!({"message": "a".repeat(70 * 1024)});
    let res = post_as(&app, "203.0.113.1", &big).await;
    assert_eq!(res.status(), 413);
    assert_eq!(app.refusals.count(Refusal::BodyTooLarge), 1);
}

fn host(app: &TestApp) -> String {
    app.address.trim_start_matches("http://").to_owned()
}

/// Sends `head` on a fresh connection and returns whatever the server answers until it closes or
/// `wait` has passed.
async fn raw_exchange(app: &TestApp, head: &[u8], wait: Duration) -> String {
    let mut conn = TcpStream::connect(host(app)).await.unwrap();
    conn.write_all(head).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(wait, conn.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test]
async fn oversized_heads_get_431() {
    let app = app_with_limits("100/hour", "100/hour").await;
    let res = app
        .client
        .get(format!("{}/api/live", app.address))
        .header("X-Padding", "a".repeat(20 * 1024))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 431);
    // A normal request is fine, and so is a large-ish but reasonable header.
    let res = app
        .client
        .get(format!("{}/api/live", app.address))
        .header("X-Padding", "a".repeat(4 * 1024))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    // Past the parser's own limit the connection gets 431 too, without reaching any handler.
    let mut head = b"GET /api/live HTTP/1.1\r\nHost: x\r\n".to_vec();
    for i in 0..200 {
        head.extend_from_slice(format!("X-H{i}: v\r\n").as_bytes());
    }
    head.extend_from_slice(b"\r\n");
    let answer = raw_exchange(&app, &head, Duration::from_secs(5)).await;
    assert!(answer.starts_with("HTTP/1.1 431"), "{answer}");
}

async fn slow_app() -> TestApp {
    spawn_app_with(Backend::Sqlite, |s| s.server.request_timeout_seconds = 1)
        .await
        .unwrap()
}

#[tokio::test]
async fn a_client_that_never_finishes_its_head_is_cut_off() {
    let app = slow_app().await;
    let started = Instant::now();
    let answer = raw_exchange(
        &app,
        b"POST /api/v1/tickets HTTP/1.1\r\nHost: x\r\nX-Slow: ",
        Duration::from_secs(10),
    )
    .await;
    let took = started.elapsed();
    assert!(took < Duration::from_secs(5), "held for {took:?}");
    assert!(answer.is_empty() || answer.starts_with("HTTP/1.1 408"), "{answer}");
}

#[tokio::test]
async fn a_client_that_never_finishes_its_body_gets_408_and_nothing_is_stored() {
    let app = slow_app().await;
    let started = Instant::now();
    let head = format!(
        "POST /api/v1/tickets HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: 500\r\n\r\n{{\"name\":",
        host(&app)
    );
    let answer = raw_exchange(&app, head.as_bytes(), Duration::from_secs(10)).await;
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "held for {:?}",
        started.elapsed()
    );
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("application/problem+json"), "{answer}");
    // The form too, with a page.
    let head = format!(
        "POST / HTTP/1.1\r\nHost: {}\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 500\r\n\r\nname=",
        host(&app)
    );
    let answer = raw_exchange(&app, head.as_bytes(), Duration::from_secs(10)).await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("text/html"), "{answer}");
    assert_eq!(app.ticket_count().await, 0);
}

#[tokio::test]
async fn connections_past_the_limit_wait_until_one_is_free() {
    let app = spawn_app_with(Backend::Sqlite, |s| {
        s.server.max_connections = 2;
        s.server.request_timeout_seconds = 30;
    })
    .await
    .unwrap();
    // Two clients hold a connection each, in the middle of a request head.
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut c = TcpStream::connect(host(&app)).await.unwrap();
        c.write_all(b"GET /api/live HTTP/1.1\r\n").await.unwrap();
        held.push(c);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let third = tokio::spawn({
        let url = format!("{}/api/live", app.address);
        async move { reqwest::get(url).await.map(|r| r.status().as_u16()) }
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        !third.is_finished(),
        "a third connection is not served while two are held"
    );
    drop(held.pop());
    let status = tokio::time::timeout(Duration::from_secs(5), third)
        .await
        .expect("served once a connection is free")
        .unwrap()
        .unwrap();
    assert_eq!(status, 200);
}
