//! The real binary, with real SMTP and the GitHub fake, killed with SIGKILL while deliveries are in
//! flight: after a restart every ticket has exactly one issue and at least one acknowledgement.
//! And two instances on one PostgreSQL database share the work without doing any job twice.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use secrecy::SecretString;
use serde_json::{json, Value};

use crate::durability::start_with;
use crate::github_fake::{StatefulGithub, TOKEN};
use crate::helpers::{valid_ticket, Backend, TestDatabase};
use crate::on_both_backends;
use crate::smtp_server::SmtpServer;

fn delivery_env(github: &StatefulGithub, smtp: &SmtpServer) -> Vec<(&'static str, String)> {
    vec![
        ("INTAKE_GITHUB__API_URL", github.server.uri()),
        ("INTAKE_GITHUB__TOKEN", TOKEN.to_owned()),
        ("INTAKE_GITHUB__ROUTES__BILLING__REPO", "acme/support".to_owned()),
        ("INTAKE_GITHUB__PACING", "false".to_owned()),
        ("INTAKE_EMAIL__TRANSPORT", "smtp".to_owned()),
        ("INTAKE_EMAIL__SMTP_URL", smtp.url()),
        ("INTAKE_LIMITS__ACKS_PER_EMAIL", "1000/day".to_owned()),
        ("INTAKE_LIMITS__ACKS_PER_DOMAIN", "1000/day".to_owned()),
        ("INTAKE_DELIVERY__LEASE_SECONDS", "10".to_owned()),
        ("INTAKE_DELIVERY__POLL_SECONDS", "1".to_owned()),
    ]
}

async fn submit_many(port: u16, n: usize, tag: &str) -> Vec<String> {
    let client = reqwest::Client::new();
    let refs = Arc::new(Mutex::new(Vec::new()));
    let tasks: Vec<_> = (0..n)
        .map(|i| {
            let (client, refs) = (client.clone(), Arc::clone(&refs));
            let mut t = valid_ticket();
            t["email"] = json!(format!("{tag}-{i}@example.com"));
            tokio::spawn(async move {
                let res = client
                    .post(format!("http://127.0.0.1:{port}/api/v1/tickets"))
                    .json(&t)
                    .send()
                    .await
                    .unwrap();
                assert_eq!(res.status(), 202);
                let v: Value = res.json().await.unwrap();
                refs.lock().unwrap().push(v["ticket"].as_str().unwrap().to_owned());
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    let refs = refs.lock().unwrap().clone();
    refs
}

/// Waits until every ticket in `refs` is filed, or panics after `limit`.
async fn wait_until_filed(db_url: &str, refs: &[String], limit: Duration) {
    let store = intake::store::connect(&SecretString::from(db_url.to_owned()), 2)
        .await
        .unwrap();
    let started = Instant::now();
    loop {
        let mut missing = 0;
        for r in refs {
            if store
                .ticket_by_reference(r)
                .await
                .unwrap()
                .and_then(|t| t.github_issue)
                .is_none()
            {
                missing += 1;
            }
        }
        if missing == 0 {
            return;
        }
        assert!(started.elapsed() < limit, "{missing} tickets still not filed");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

fn acks_per_address(smtp: &SmtpServer) -> HashMap<String, usize> {
    let mut counts = HashMap::new();
    for m in smtp.received() {
        for r in m.rcpt_to {
            *counts.entry(r).or_insert(0) += 1;
        }
    }
    counts
}

async fn a_kill_9_mid_delivery_leaves_exactly_one_issue_per_ticket(backend: Backend) {
    let Some(db) = TestDatabase::create(backend).await else {
        return;
    };
    let outbox = tempfile::tempdir().unwrap();
    let github = StatefulGithub::start("acme/support", Duration::from_millis(15)).await;
    let smtp = SmtpServer::start().await;
    let env = delivery_env(&github, &smtp);
    let (mut child, port) = start_with(db.url(), outbox.path(), &env);
    let refs = submit_many(port, 120, "crash").await;
    // Kill while issues are being created (each takes 15 ms at the fake).
    let started = Instant::now();
    while github.created() < 20 {
        assert!(started.elapsed() < Duration::from_secs(30), "delivery did not start");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(github.created() < 120, "the kill came before the end");

    let (mut child, _port) = start_with(db.url(), outbox.path(), &env);
    wait_until_filed(db.url(), &refs, Duration::from_secs(60)).await;
    // Emails go in their own lane; a send in flight at the kill is taken over when its lease expires.
    let started = Instant::now();
    while acks_per_address(&smtp).len() < refs.len() && started.elapsed() < Duration::from_secs(60) {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    child.kill().unwrap();
    child.wait().unwrap();

    let per_ticket = github.issues_per_ticket();
    for r in &refs {
        assert_eq!(per_ticket.get(r), Some(&1), "{r} must have exactly one issue");
    }
    assert_eq!(github.created(), refs.len());
    let acks = acks_per_address(&smtp);
    for i in 0..refs.len() {
        let n = acks.get(&format!("crash-{i}@example.com")).copied().unwrap_or(0);
        // A second acknowledgement only for a send in flight at the kill.
        assert!((1..=2).contains(&n), "crash-{i}: {n} acknowledgements");
    }
}

on_both_backends!(a_kill_9_mid_delivery_leaves_exactly_one_issue_per_ticket);

#[tokio::test]
async fn two_instances_on_one_postgres_database_share_the_work_once() {
    let Some(db) = TestDatabase::create(Backend::Postgres).await else {
        return;
    };
    let outbox = tempfile::tempdir().unwrap();
    let github = StatefulGithub::start("acme/support", Duration::from_millis(5)).await;
    let smtp = SmtpServer::start().await;
    let mut env_a = delivery_env(&github, &smtp);
    env_a.push(("INTAKE_SERVER__SITE_NAME", "InstanceA".to_owned()));
    let mut env_b = delivery_env(&github, &smtp);
    env_b.push(("INTAKE_SERVER__SITE_NAME", "InstanceB".to_owned()));
    let (mut a, port_a) = start_with(db.url(), outbox.path(), &env_a);
    let (mut b, port_b) = start_with(db.url(), outbox.path(), &env_b);
    let (left, right) = tokio::join!(submit_many(port_a, 40, "a"), submit_many(port_b, 40, "b"));
    let refs: Vec<String> = left.into_iter().chain(right).collect();
    wait_until_filed(db.url(), &refs, Duration::from_secs(60)).await;
    // Let the last acknowledgements go out.
    let started = Instant::now();
    while acks_per_address(&smtp).len() < refs.len() && started.elapsed() < Duration::from_secs(20) {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    a.kill().unwrap();
    b.kill().unwrap();
    a.wait().unwrap();
    b.wait().unwrap();

    assert!(github.issues_per_ticket().values().all(|n| *n == 1), "no issue twice");
    assert_eq!(github.created(), refs.len());
    let acks = acks_per_address(&smtp);
    assert_eq!(acks.len(), refs.len());
    assert!(
        acks.values().all(|n| *n == 1),
        "no acknowledgement twice without a crash"
    );
    let mails = smtp.received();
    let by_a = mails.iter().filter(|m| m.decoded().contains("InstanceA")).count();
    let by_b = mails.iter().filter(|m| m.decoded().contains("InstanceB")).count();
    assert!(by_a > 0 && by_b > 0, "both instances delivered: {by_a} and {by_b}");
}

#[tokio::test]
async fn sigterm_lets_the_call_in_flight_finish_and_records_it() {
    let db = TestDatabase::create(Backend::Sqlite).await.unwrap();
    let outbox = tempfile::tempdir().unwrap();
    // Each create takes 1.5 s at the fake: the signal lands in the middle of one.
    let github = StatefulGithub::start("acme/support", Duration::from_millis(1500)).await;
    let smtp = SmtpServer::start().await;
    let mut env = delivery_env(&github, &smtp);
    env.push(("INTAKE_GITHUB__TIMEOUT_SECONDS", "10".to_owned()));
    let (mut child, port) = start_with(db.url(), outbox.path(), &env);
    let refs = submit_many(port, 3, "term").await;
    let started = Instant::now();
    while github.created() == 0 {
        assert!(started.elapsed() < Duration::from_secs(10), "filing did not start");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let status = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let exited = tokio::task::spawn_blocking(move || child.wait().unwrap())
        .await
        .unwrap();
    assert!(exited.success(), "clean exit: {exited:?}");
    // The create in flight at the signal was answered and recorded: nothing half-done.
    let store = intake::store::connect(&SecretString::from(db.url().to_owned()), 2)
        .await
        .unwrap();
    let filed: Vec<_> = {
        let mut v = Vec::new();
        for r in &refs {
            v.push(
                store
                    .ticket_by_reference(r)
                    .await
                    .unwrap()
                    .unwrap()
                    .github_issue
                    .is_some(),
            );
        }
        v
    };
    assert_eq!(
        filed.iter().filter(|f| **f).count(),
        github.created(),
        "every issue created is on record"
    );
    let stats = store.outbox_stats(chrono::Utc::now()).await.unwrap();
    assert_eq!(
        stats.pending as usize,
        refs.len() - github.created(),
        "the rest waits for the next start"
    );
}
