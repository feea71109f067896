//! Abuse resistance from outside: rate limits on the form and the API together, the client address
//! behind trusted proxies, input limits on heads, bodies, slow clients and connections.

use std::time::{Duration, Instant};

use intake::abuse::Refusal;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::form::{as_refs, valid_fields};
use crate::helpers::{spawn_app_with, valid_ticket, Backend, TestApp};
use crate::ops::{create, get_with};

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
async fn an_address_is_limited_per_client_however_it_is_written() {
    let app = app_with_limits("100/hour", "2/hour").await;
    for email in ["ada@example.com", "ADA@example.com"] {
        assert_eq!(post_as(&app, "203.0.113.1", &with_email(email)).await.status(), 202);
    }
    let res = post_as(&app, "203.0.113.1", &with_email(" Ada@Example.com ")).await;
    assert_eq!(res.status(), 429);
    assert!(res.headers().contains_key("retry-after"));
    assert_eq!(
        post_as(&app, "203.0.113.1", &with_email("grace@example.com"))
            .await
            .status(),
        202
    );
    assert_eq!(app.ticket_count().await, 3);
}

#[tokio::test]
async fn a_stranger_who_knows_a_customers_address_cannot_lock_them_out_or_get_them_banned() {
    let app = app_with_limits("100/hour", "5/hour").await;
    for _ in 0..5 {
        let res = post_as(&app, "198.51.100.66", &with_email("customer@victim.example")).await;
        assert_eq!(res.status(), 202);
    }
    assert_eq!(
        post_as(&app, "198.51.100.66", &with_email("customer@victim.example"))
            .await
            .status(),
        429,
        "the stranger has used up their own allowance for the address"
    );
    // The customer, from their own address, is served as ever.
    assert_eq!(
        post_as(&app, "203.0.113.40", &with_email("Customer@victim.example"))
            .await
            .status(),
        202
    );
    // The email limit names nobody for Fail2Ban: it is counted on its own.
    assert_eq!(app.refusals.count(Refusal::RateLimit), 0);
    assert_eq!(app.refusals.count(Refusal::EmailRateLimit), 1);
}

#[tokio::test]
async fn a_page_on_another_site_cannot_post_the_form_or_the_api_for_its_visitors() {
    let app = app_with_limits("2/hour", "100/hour").await;
    let (_, token) = app.get_form().await;
    let mut fields = valid_fields(&token);
    fields[1].1 = "http://spam.example".to_owned(); // a filled honeypot would get the visitor banned
    let cross_site = |name: &'static str, value: &'static str| {
        app.client
            .post(format!("{}/", app.address))
            .header("X-Forwarded-For", "203.0.113.77")
            .header(name, value)
            .form(&as_refs(&fields))
            .send()
    };
    for _ in 0..4 {
        let res = cross_site("Origin", "https://evil.example").await.unwrap();
        assert_eq!(res.status(), 403);
        assert!(res.text().await.unwrap().contains("another website"));
        assert_eq!(cross_site("Sec-Fetch-Site", "cross-site").await.unwrap().status(), 403);
        assert_eq!(cross_site("Origin", "null").await.unwrap().status(), 403);
        let api = app
            .client
            .post(format!("{}/api/v1/tickets", app.address))
            .header("X-Forwarded-For", "203.0.113.77")
            .header("Origin", "https://evil.example")
            .json(&valid_ticket())
            .send()
            .await
            .unwrap();
        assert_eq!(api.status(), 403);
        assert_eq!(api.headers()["content-type"], "application/problem+json");
    }
    assert_eq!(app.refusals.count(Refusal::Honeypot), 0, "no line for Fail2Ban");
    assert_eq!(app.refusals.count(Refusal::RateLimit), 0);
    assert_eq!(app.refusals.count(Refusal::CrossSite), 16);
    // The visitor's own limits are untouched: their own form, from this site, goes through.
    let (_, token) = app.get_form().await;
    let res = app
        .client
        .post(format!("{}/", app.address))
        .header("X-Forwarded-For", "203.0.113.77")
        .header("Origin", &app.address)
        .form(&as_refs(&valid_fields(&token)))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 303);
    // Chromium under `Referrer-Policy: no-referrer`: `Origin: null`, and its word that it is ours.
    let (_, token) = app.get_form().await;
    let res = app
        .client
        .post(format!("{}/", app.address))
        .header("X-Forwarded-For", "203.0.113.77")
        .header("Origin", "null")
        .header("Sec-Fetch-Site", "same-origin")
        .form(&as_refs(&valid_fields(&token)))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 303);
    // Behind a TLS proxy the origin's scheme differs from the service's; the host is the same.
    let (_, token) = app.get_form().await;
    let res = app
        .client
        .post(format!("{}/", app.address))
        .header("X-Forwarded-For", "203.0.113.78")
        .header("Origin", format!("https://{}", host(&app)))
        .form(&as_refs(&valid_fields(&token)))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 303);
}

#[tokio::test]
async fn a_trusted_proxy_that_passes_no_address_is_still_limited() {
    // The refusal names nobody (tests/api/fail2ban.rs reads the line); the limit still holds.
    let app = app_with_limits("1/hour", "100/hour").await;
    assert_eq!(app.post_ticket(&valid_ticket()).await.status(), 202);
    assert_eq!(app.post_ticket(&valid_ticket()).await.status(), 429);
    assert_eq!(app.refusals.count(Refusal::RateLimit), 1, "counted");
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

/// A kept-alive connection whose first request is answered, then `second` sent a piece every
/// 200 ms; how long until the server closes it (or `None` when it never did within 8 s).
async fn cut_off_after(app: &TestApp, second: &[&[u8]]) -> Option<Duration> {
    let mut conn = TcpStream::connect(host(app)).await.unwrap();
    conn.write_all(format!("GET /api/live HTTP/1.1\r\nHost: {}\r\n\r\n", host(app)).as_bytes())
        .await
        .unwrap();
    let mut buf = vec![0u8; 4096];
    let n = conn.read(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    let started = Instant::now();
    for piece in second.iter().cycle() {
        if started.elapsed() > Duration::from_secs(8) {
            return None;
        }
        if conn.write_all(piece).await.is_err() {
            return Some(started.elapsed());
        }
        // A closed connection reads as the end (or a reset) at once.
        let read = tokio::time::timeout(Duration::from_millis(200), conn.read(&mut buf)).await;
        if let Ok(Ok(0) | Err(_)) = read {
            return Some(started.elapsed());
        }
    }
    None
}

#[tokio::test]
async fn every_request_on_a_kept_alive_connection_has_a_deadline_for_its_head() {
    let app = slow_app().await;
    let head: Vec<&[u8]> = b"GET /api/live HTTP/1.1\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
        .chunks(1)
        .collect();
    let took = cut_off_after(&app, &head)
        .await
        .expect("the slow second head is cut off");
    assert!(took < Duration::from_secs(4), "held for {took:?}");
}

#[tokio::test]
async fn a_body_trickled_to_an_endpoint_that_does_not_read_it_is_cut_off() {
    let app = slow_app().await;
    let mut conn = TcpStream::connect(host(&app)).await.unwrap();
    conn.write_all(
        format!(
            "POST /api/live HTTP/1.1\r\nHost: {}\r\nTransfer-Encoding: chunked\r\n\r\n",
            host(&app)
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    let started = Instant::now();
    let mut closed = None;
    let mut buf = vec![0u8; 4096];
    while started.elapsed() < Duration::from_secs(8) {
        if conn.write_all(b"1\r\na\r\n").await.is_err() {
            closed = Some(started.elapsed());
            break;
        }
        let read = tokio::time::timeout(Duration::from_millis(200), conn.read(&mut buf)).await;
        if let Ok(Ok(0) | Err(_)) = read {
            closed = Some(started.elapsed());
            break;
        }
    }
    let took = closed.expect("the trickle is cut off");
    assert!(took < Duration::from_secs(5), "held for {took:?}");
    // A client that answers in time keeps its kept-alive connection for several requests.
    let client = reqwest::Client::new();
    for _ in 0..3 {
        assert_eq!(
            client
                .get(format!("{}/api/live", app.address))
                .send()
                .await
                .unwrap()
                .status(),
            200
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

#[tokio::test]
async fn made_up_methods_share_one_metric_label_and_count_against_the_head_limit() {
    let app = app_with_limits("100/hour", "100/hour").await;
    for i in 0..50 {
        let head = format!("BREW{i} /nowhere HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        let answer = raw_exchange(&app, head.as_bytes(), Duration::from_secs(5)).await;
        assert!(answer.starts_with("HTTP/1.1 404"), "{answer}");
    }
    // A method as long as the head limit is refused as a head over it.
    let head = format!(
        "{} /nowhere HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        "M".repeat(20 * 1024)
    );
    let answer = raw_exchange(&app, head.as_bytes(), Duration::from_secs(5)).await;
    assert!(answer.starts_with("HTTP/1.1 431"), "{answer}");

    let scraper = create(&app, "prometheus", "metrics");
    let text = get_with(&app, "/metrics", &scraper).await.text().await.unwrap();
    assert!(!text.contains("BREW") && !text.contains("MMMM"), "{text}");
    assert!(
        text.contains("intake_http_request_duration_seconds_count{route=\"unmatched\",method=\"OTHER\"} 51"),
        "{text}"
    );
}

#[tokio::test]
async fn a_page_address_with_control_characters_is_refused_and_nothing_stored() {
    let app = app_with_limits("100/hour", "100/hour").await;
    for url in [
        "https://example.com/a\u{0}b",
        "https://example.com/a\nEmail: mallory@example.com",
        "https://example.com/\u{202E}gpj.exe",
    ] {
        let mut t = valid_ticket();
        t["page_url"] = json!(url);
        let res = post_as(&app, "203.0.113.1", &t).await;
        assert_eq!(res.status(), 422, "{url:?}");
        let problem: Value = res.json().await.unwrap();
        assert_eq!(problem["errors"][0]["field"], "page_url", "{problem}");
    }
    let mut t = valid_ticket();
    t["page_url"] = json!("https://app.localizevideos.example/projects/7?tab=subtitles");
    assert_eq!(post_as(&app, "203.0.113.1", &t).await.status(), 202);
    assert_eq!(app.ticket_count().await, 1);
}

#[tokio::test]
async fn addresses_the_mailer_cannot_send_to_are_refused_on_the_field() {
    let app = app_with_limits("100/hour", "100/hour").await;
    for email in ["a..b@example.com", ".a@example.com", "a@[127.0.0.1]"] {
        let res = post_as(&app, "203.0.113.1", &with_email(email)).await;
        assert_eq!(res.status(), 422, "{email}");
        let problem: Value = res.json().await.unwrap();
        assert_eq!(problem["errors"][0]["field"], "email", "{problem}");
    }
    assert_eq!(app.ticket_count().await, 0);
}

#[tokio::test]
async fn a_client_that_pipelines_requests_and_never_reads_the_answers_is_cut_off() {
    let app = slow_app().await;
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut conn = socket.connect(host(&app).parse().unwrap()).await.unwrap();
    // Four thousand requests for the form page (~6 KB each, far more than socket buffers hold),
    // sent at once; nothing read.
    let one = format!("GET / HTTP/1.1\r\nHost: {}\r\n\r\n", host(&app));
    conn.write_all(one.repeat(4000).as_bytes()).await.unwrap();
    tokio::time::sleep(Duration::from_secs(4)).await;
    // The server gave up on the connection: what it had sent drains, then the end comes at once
    // (without the write deadline it would go on answering, then wait out its keep-alive).
    let mut out = Vec::new();
    let ended = tokio::time::timeout(Duration::from_secs(3), conn.read_to_end(&mut out)).await;
    assert!(ended.is_ok(), "the connection is still open after {} bytes", out.len());
    assert!(out.len() < 4000 * 6_000, "{} bytes: not every answer", out.len());
}
