//! Delivery benchmark: how long from `202` until the acknowledgement reaches a real SMTP server and
//! the issue reaches the GitHub fake (p50/p99 over 1,000 tickets, pacing off), and how fast 10,000
//! queued tickets drain, with zero lost and zero duplicated. Prints numbers; asserts only that
//! nothing was lost or doubled.
//!
//!     cargo bench --bench delivery                 # SQLite
//!     INTAKE_BENCH_POSTGRES_URL=postgres://postgres@127.0.0.1:5432/postgres cargo bench --bench delivery

// The test suite's fakes, shared rather than copied; the benchmark uses part of each.
#[allow(dead_code)]
#[path = "../tests/api/github_fake.rs"]
mod github_fake;
#[allow(dead_code)]
#[path = "../tests/api/smtp_server.rs"]
mod smtp_server;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use github_fake::{StatefulGithub, TOKEN};
use intake::config::{EmailTransport, GithubRoute, Settings};
use intake::startup::Application;
use secrecy::SecretString;
use serde_json::{json, Value};
use smtp_server::SmtpServer;

fn settings(
    db_url: &str,
    outbox: &std::path::Path,
    github: &StatefulGithub,
    smtp: &SmtpServer,
    delivery: bool,
) -> Settings {
    let mut s = Settings::default();
    s.server.listen = "127.0.0.1:0".parse().unwrap();
    s.database.url = SecretString::from(db_url.to_owned());
    s.email.transport = EmailTransport::Smtp;
    s.email.smtp_url = Some(SecretString::from(smtp.url()));
    s.email.file_dir = outbox.to_path_buf();
    s.limits.acks_per_email = "1000000/day".parse().unwrap();
    s.limits.acks_per_domain = "1000000/day".parse().unwrap();
    s.github.api_url = github.server.uri().parse().unwrap();
    s.github.token = Some(SecretString::from(TOKEN));
    s.github.pacing = false;
    s.github.routes.insert(
        "billing".into(),
        GithubRoute {
            repo: "acme/support".into(),
            labels: None,
            assignees: vec![],
        },
    );
    s.delivery.enabled = delivery;
    s.log.level = "warn".into();
    s
}

fn ticket(i: usize, tag: &str) -> Value {
    json!({
        "name": "Ada Lovelace", "email": format!("{tag}{i}@example.com"), "type": "billing",
        "subject": "Invoice for October", "message": "Could you send me the invoice for October again, please?"
    })
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

async fn database(name: &str) -> (String, Option<tempfile::TempDir>) {
    match std::env::var("INTAKE_BENCH_POSTGRES_URL") {
        Ok(admin) => {
            let db = format!("intake_bench_{name}_{}", std::process::id());
            let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&admin).await.unwrap();
            sqlx::Executor::execute(&mut conn, format!("DROP DATABASE IF EXISTS {db}").as_str())
                .await
                .unwrap();
            sqlx::Executor::execute(&mut conn, format!("CREATE DATABASE {db}").as_str())
                .await
                .unwrap();
            let mut url = url::Url::parse(&admin).unwrap();
            url.set_path(&db);
            (url.to_string(), None)
        }
        Err(_) => {
            let dir = tempfile::tempdir().unwrap();
            (format!("sqlite://{}", dir.path().join("bench.db").display()), Some(dir))
        }
    }
}

async fn latency() {
    let (db, _dir) = database("latency").await;
    let outbox = tempfile::tempdir().unwrap();
    let github = StatefulGithub::start("acme/support", Duration::ZERO).await;
    let smtp = SmtpServer::start().await;
    let app = Application::build(settings(&db, outbox.path(), &github, &smtp, true))
        .await
        .unwrap();
    let base = format!("http://127.0.0.1:{}", app.port());
    tokio::spawn(app.run_until_stopped());
    let client = reqwest::Client::new();

    // 1,000 tickets at about 200 a second, each timed from its 202.
    let mut accepted: HashMap<String, (String, Instant)> = HashMap::new();
    let mut tick = tokio::time::interval(Duration::from_millis(5));
    for i in 0..1000 {
        tick.tick().await;
        let res = client
            .post(format!("{base}/api/v1/tickets"))
            .json(&ticket(i, "lat"))
            .send()
            .await
            .unwrap();
        let at = Instant::now();
        let v: Value = res.json().await.unwrap();
        accepted.insert(
            v["ticket"].as_str().unwrap().to_owned(),
            (format!("lat{i}@example.com"), at),
        );
    }
    let started = Instant::now();
    while (github.created() < 1000 || smtp.received().len() < 1000) && started.elapsed() < Duration::from_secs(120) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let issue_at = github.arrivals();
    let ack_at: HashMap<String, Instant> = smtp
        .received()
        .into_iter()
        .map(|m| (m.rcpt_to[0].clone(), m.at))
        .collect();
    let mut acks = Vec::new();
    let mut issues = Vec::new();
    for (reference, (email, at)) in &accepted {
        acks.push(ack_at[email].saturating_duration_since(*at).as_secs_f64() * 1000.0);
        issues.push(issue_at[reference].saturating_duration_since(*at).as_secs_f64() * 1000.0);
    }
    acks.sort_by(f64::total_cmp);
    issues.sort_by(f64::total_cmp);
    println!(
        "202 → acknowledgement at the SMTP server: p50 {:.1} ms, p99 {:.1} ms (1,000 tickets at ~200/s)",
        percentile(&acks, 0.5),
        percentile(&acks, 0.99)
    );
    println!(
        "202 → issue at the GitHub fake:           p50 {:.1} ms, p99 {:.1} ms",
        percentile(&issues, 0.5),
        percentile(&issues, 0.99)
    );
}

async fn drain() {
    const N: usize = 10_000;
    let (db, _dir) = database("drain").await;
    let outbox = tempfile::tempdir().unwrap();
    let github = StatefulGithub::start("acme/support", Duration::ZERO).await;
    let smtp = SmtpServer::start().await;
    // Queue with delivery off.
    let app = Application::build(settings(&db, outbox.path(), &github, &smtp, false))
        .await
        .unwrap();
    let base = format!("http://127.0.0.1:{}", app.port());
    let handle = app.handle();
    let deliverer = app.deliverer();
    tokio::spawn(app.run_until_stopped());
    let client = reqwest::Client::new();
    let mut refs = Vec::with_capacity(N);
    for chunk in (0..N).collect::<Vec<_>>().chunks(200) {
        let answers = futures_util::future::join_all(chunk.iter().map(|i| {
            client
                .post(format!("{base}/api/v1/tickets"))
                .json(&ticket(*i, "drain"))
                .send()
        }))
        .await;
        for a in answers {
            let v: Value = a.unwrap().json().await.unwrap();
            refs.push(v["ticket"].as_str().unwrap().to_owned());
        }
    }
    handle.stop(true).await;

    let started = Instant::now();
    let mut attempts = 0;
    loop {
        let n = deliverer.run_once().await.unwrap();
        attempts += n;
        if n == 0 {
            break;
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    let per_ticket = github.issues_per_ticket();
    let lost = refs.iter().filter(|r| !per_ticket.contains_key(*r)).count();
    let doubled = per_ticket.values().filter(|n| **n > 1).count();
    let mut acks: HashMap<String, usize> = HashMap::new();
    for m in smtp.received() {
        *acks.entry(m.rcpt_to[0].clone()).or_default() += 1;
    }
    let acks_missing = N - acks.len();
    let acks_doubled = acks.values().filter(|n| **n > 1).count();
    println!(
        "drain of {N} queued tickets ({attempts} jobs): {elapsed:.1} s, {:.0} tickets/s; issues lost {lost}, doubled {doubled}; acks missing {acks_missing}, doubled {acks_doubled}",
        N as f64 / elapsed
    );
    assert_eq!((lost, doubled, acks_missing, acks_doubled), (0, 0, 0, 0));
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --benches` would pass nothing and should not run this.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let backend = if std::env::var("INTAKE_BENCH_POSTGRES_URL").is_ok() {
        "PostgreSQL"
    } else {
        "SQLite"
    };
    println!("delivery benchmark on {backend}");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        latency().await;
        drain().await;
    });
}
