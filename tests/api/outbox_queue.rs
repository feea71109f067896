//! The outbox queue on both backends: leases, outcomes, expiry, and no job held twice at once.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use chrono::{Duration as Span, Utc};
use intake::domain::RawSubmission;
use intake::store::queue::{AckCap, AckCaps, Completion, DeliveryState, JobKind, JobOutcome, RetryOutcome};
use intake::store::{self, NewTicket, Store};
use secrecy::SecretString;

use crate::helpers::{new_ticket, open_store, Backend, TestDatabase};
use crate::on_both_backends;

const LEASE: Duration = Duration::from_secs(60);

async fn open(backend: Backend) -> Option<(TestDatabase, Arc<dyn Store>)> {
    open_store(backend, 6).await
}

fn ticket(email: &str) -> NewTicket {
    let raw = RawSubmission {
        name: Some("Ada".into()),
        email: Some(email.into()),
        request_type: Some("billing".into()),
        subject: Some("Invoice".into()),
        message: Some("Please send the invoice again.".into()),
        ..Default::default()
    };
    new_ticket(raw, None)
}

/// Caps for `email` (lowercased as the worker does), counting since `since`.
fn caps(email: &str, per_email: i64, per_domain: i64, since: chrono::DateTime<Utc>) -> AckCaps {
    let email = intake::store::queue::ack_address(email);
    AckCaps {
        domain: store::email_domain(&email),
        email,
        per_email,
        per_email_since: since,
        per_domain,
        per_domain_since: since,
    }
}

async fn seed(store: &Arc<dyn Store>, n: usize) {
    let batch: Vec<NewTicket> = (0..n).map(|i| ticket(&format!("user{i}@example.com"))).collect();
    store.insert_tickets(&batch).await.unwrap();
}

async fn a_claim_leases_due_jobs_of_the_asked_kinds_once(backend: Backend) {
    let Some((_db, store)) = open(backend).await else {
        return;
    };
    seed(&store, 3).await;
    let now = Utc::now();
    let jobs = store.claim_jobs(&[JobKind::AckEmail], now, LEASE, 10).await.unwrap();
    assert_eq!(jobs.len(), 3);
    assert!(jobs.iter().all(|j| j.kind == JobKind::AckEmail && j.attempts == 1));
    assert!(
        store
            .claim_jobs(&[JobKind::AckEmail], now, LEASE, 10)
            .await
            .unwrap()
            .is_empty(),
        "leased"
    );
    assert_eq!(
        store
            .claim_jobs(&[JobKind::GithubIssue], now, LEASE, 2)
            .await
            .unwrap()
            .len(),
        2,
        "limit"
    );
    assert!(store.claim_jobs(&[], now, LEASE, 10).await.unwrap().is_empty());
    assert_eq!(
        store.outbox_stats(now).await.unwrap().pending,
        6,
        "running jobs still count as pending"
    );
}

async fn an_expired_lease_is_taken_over_and_the_old_holder_cannot_finish(backend: Backend) {
    let Some((_db, store)) = open(backend).await else {
        return;
    };
    seed(&store, 1).await;
    let now = Utc::now();
    let first = store
        .claim_jobs(&[JobKind::AckEmail], now, LEASE, 10)
        .await
        .unwrap()
        .remove(0);
    let later = now + Span::seconds(61);
    let second = store
        .claim_jobs(&[JobKind::AckEmail], later, LEASE, 10)
        .await
        .unwrap()
        .remove(0);
    assert_eq!(first.id, second.id);
    assert_eq!(second.attempts, 2);
    assert_eq!(
        second.first_attempt_at.timestamp_millis(),
        first.first_attempt_at.timestamp_millis()
    );
    let done = JobOutcome::Done(Completion::Plain);
    assert!(
        !store.finish_job(&first, &done, later).await.unwrap(),
        "the old lease is void"
    );
    assert!(store.finish_job(&second, &done, later).await.unwrap());
    assert!(!store.finish_job(&second, &done, later).await.unwrap(), "finished once");
}

async fn a_retry_waits_until_its_time_and_dead_jobs_show_in_stats(backend: Backend) {
    let Some((_db, store)) = open(backend).await else {
        return;
    };
    seed(&store, 2).await;
    let now = Utc::now();
    let jobs = store.claim_jobs(&[JobKind::GithubIssue], now, LEASE, 10).await.unwrap();
    assert!(jobs.iter().all(|j| !j.tried_before), "a first attempt");
    let at = now + Span::seconds(30);
    assert!(store
        .finish_job(
            &jobs[0],
            &JobOutcome::Retry {
                at,
                error: "502".into()
            },
            now
        )
        .await
        .unwrap());
    assert!(store
        .finish_job(
            &jobs[1],
            &JobOutcome::Dead {
                error: "404 repository not found".into()
            },
            now
        )
        .await
        .unwrap());
    assert!(store
        .claim_jobs(&[JobKind::GithubIssue], now + Span::seconds(29), LEASE, 10)
        .await
        .unwrap()
        .is_empty());
    assert_eq!(
        store
            .next_due(&[JobKind::GithubIssue])
            .await
            .unwrap()
            .map(|t| t.timestamp()),
        Some(at.timestamp())
    );
    let again = store.claim_jobs(&[JobKind::GithubIssue], at, LEASE, 10).await.unwrap();
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].attempts, 2);
    assert!(again[0].tried_before);
    let stats = store.outbox_stats(now).await.unwrap();
    assert_eq!(stats.dead, 1);
    assert_eq!(stats.pending, 3); // two acks and the retried issue
    let ticket_id = jobs[1].ticket_id;
    let deliveries = store.deliveries_for_ticket(ticket_id).await.unwrap();
    let dead = deliveries.iter().find(|d| d.kind == JobKind::GithubIssue).unwrap();
    assert_eq!(dead.state, DeliveryState::Dead);
    assert_eq!(dead.last_error.as_deref(), Some("404 repository not found"));

    // An operator's retry: only a dead or skipped delivery, with a fresh set of attempts, audited;
    // a refused one writes nothing.
    let audit =
        |target: String| intake::audit::AuditEntry::new("cli:test".into(), "delivery.retry", target, "fixed".into());
    assert_eq!(
        store.retry_delivery(dead.id + 1000, &audit("x".into())).await.unwrap(),
        RetryOutcome::NotFound
    );
    let pending = deliveries.iter().find(|d| d.kind == JobKind::AckEmail).unwrap();
    assert_eq!(
        store.retry_delivery(pending.id, &audit("y".into())).await.unwrap(),
        RetryOutcome::NotRetryable {
            state: DeliveryState::Pending
        }
    );
    assert!(
        store.audit_log(10).await.unwrap().is_empty(),
        "a refused retry is not audited"
    );
    assert_eq!(
        store
            .retry_delivery(dead.id, &audit(format!("delivery {}", dead.id)))
            .await
            .unwrap(),
        RetryOutcome::Queued
    );
    let retried = store.deliveries_for_ticket(ticket_id).await.unwrap();
    let retried = retried.iter().find(|d| d.id == dead.id).unwrap();
    assert_eq!((retried.state, retried.attempts), (DeliveryState::Pending, 0));
    let log = store.audit_log(10).await.unwrap();
    assert_eq!(log.len(), 1);
    assert_eq!(log[0].target, format!("delivery {}", dead.id));
    // Its count starts again, but it was tried before: the filer looks for an issue an earlier
    // attempt may have created before filing one.
    let later = Utc::now() + Span::seconds(1);
    let claimed = store
        .claim_jobs(&[JobKind::GithubIssue], later, LEASE, 10)
        .await
        .unwrap();
    let requeued = claimed.iter().find(|j| j.id == dead.id).unwrap();
    assert_eq!(requeued.attempts, 1);
    assert!(requeued.tried_before);
}

async fn finishing_records_the_ack_and_the_issue_on_the_ticket(backend: Backend) {
    let Some((_db, store)) = open(backend).await else {
        return;
    };
    let t = ticket("user0@example.com");
    let reference = t.reference.to_string();
    store.insert_tickets(&[t]).await.unwrap();
    let now = Utc::now();
    let ack = store
        .claim_jobs(&[JobKind::AckEmail], now, LEASE, 1)
        .await
        .unwrap()
        .remove(0);
    let issue = store
        .claim_jobs(&[JobKind::GithubIssue], now, LEASE, 1)
        .await
        .unwrap()
        .remove(0);
    let ack_done = JobOutcome::Done(Completion::Ack {
        message_id: "<LV-1.ack@example.com>".into(),
        email: "user0@example.com".into(),
    });
    assert!(store.finish_job(&ack, &ack_done, now).await.unwrap());
    let filed = JobOutcome::Done(Completion::Issue {
        repo: "acme/support".into(),
        number: 1347,
        url: "https://github.com/acme/support/issues/1347".into(),
    });
    assert!(store.finish_job(&issue, &filed, now).await.unwrap());
    let stored = store.ticket_by_reference(&reference).await.unwrap().unwrap();
    assert_eq!(stored.id, ack.ticket_id);
    assert_eq!(stored.ack_message_id.as_deref(), Some("<LV-1.ack@example.com>"));
    let issue = stored.github_issue.expect("filed");
    assert_eq!((issue.repo.as_str(), issue.number), ("acme/support", 1347));
    assert!(store
        .deliveries_for_ticket(stored.id)
        .await
        .unwrap()
        .iter()
        .all(|d| d.state == DeliveryState::Done));
    let since = now - Span::hours(24);
    // The acknowledgement sent above holds one slot of its address (in any case) and its domain.
    assert_eq!(
        store
            .reserve_ack(1_000_001, &caps("USER0@example.com", 1, 10, since), now)
            .await
            .unwrap(),
        Some(AckCap::PerAddress)
    );
    assert_eq!(
        store
            .reserve_ack(1_000_002, &caps("other@example.com", 1, 1, since), now)
            .await
            .unwrap(),
        Some(AckCap::PerDomain)
    );
    assert_eq!(
        store
            .reserve_ack(
                1_000_003,
                &caps("user0@example.com", 1, 10, now + Span::seconds(1)),
                now
            )
            .await
            .unwrap(),
        None,
        "outside the window it does not count"
    );
    assert_eq!(store.outbox_stats(now).await.unwrap().pending, 0);
}

async fn concurrent_claims_never_hand_out_a_job_twice(backend: Backend) {
    let Some((_db, store)) = open(backend).await else {
        return;
    };
    seed(&store, 60).await;
    let now = Utc::now();
    let claims = (0..6).map(|_| {
        let store = Arc::clone(&store);
        tokio::spawn(async move {
            let mut mine = Vec::new();
            loop {
                let got = store
                    .claim_jobs(&[JobKind::AckEmail, JobKind::GithubIssue], now, LEASE, 7)
                    .await
                    .unwrap();
                if got.is_empty() {
                    return mine;
                }
                mine.extend(got.into_iter().map(|j| j.id));
            }
        })
    });
    let mut seen = HashSet::new();
    let mut total = 0;
    for handle in futures_util::future::join_all(claims).await {
        for id in handle.unwrap() {
            total += 1;
            assert!(seen.insert(id), "job {id} was handed out twice");
        }
    }
    assert_eq!(total, 120);
}

async fn one_process_at_a_time_holds_the_filer_role(backend: Backend) {
    let Some((db, store)) = open(backend).await else { return };
    let other = store::connect(&SecretString::from(db.url().to_owned()), 2)
        .await
        .unwrap();
    let first = store.try_filer_lock().await.unwrap();
    assert!(first.is_some());
    if backend == Backend::Postgres {
        assert!(other.try_filer_lock().await.unwrap().is_none(), "held by the first");
        drop(first);
        let started = std::time::Instant::now();
        loop {
            if other.try_filer_lock().await.unwrap().is_some() {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(5),
                "released when the holder lets go"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Jobs for one address racing for its slots: exactly the cap's worth get one, whatever the
/// interleaving (two stores on one database stand for two instances); a failed send gives its
/// slot back, and a retry of a job that holds a slot keeps it.
async fn acknowledgement_slots_are_reserved_atomically_and_given_back_on_failure(backend: Backend) {
    let Some((db, store)) = open(backend).await else {
        return;
    };
    let other = store::connect(&SecretString::from(db.url().to_owned()), 6)
        .await
        .unwrap();
    let now = Utc::now();
    let since = now - Span::hours(24);
    let tasks: Vec<_> = (0..16i64)
        .map(|i| {
            let s = if i % 2 == 0 {
                Arc::clone(&store)
            } else {
                Arc::clone(&other)
            };
            let address = if i % 3 == 0 {
                "Victim@Example.com"
            } else {
                "victim@example.com"
            };
            let c = caps(address, 2, 100, since);
            tokio::spawn(async move { s.reserve_ack(500 + i, &c, now).await.unwrap() })
        })
        .collect();
    let mut granted = 0;
    for t in tasks {
        if t.await.unwrap().is_none() {
            granted += 1;
        }
    }
    assert_eq!(granted, 2, "two slots under a cap of two, however the jobs interleave");

    // A real job: its slot is reserved, kept across a retry of the same job, given back on failure.
    let t = ticket("grace@example.com");
    store.insert_tickets(&[t]).await.unwrap();
    let ack = store
        .claim_jobs(&[JobKind::AckEmail], Utc::now(), LEASE, 1)
        .await
        .unwrap()
        .remove(0);
    let c = caps("grace@example.com", 1, 100, since);
    assert_eq!(store.reserve_ack(ack.id, &c, now).await.unwrap(), None);
    assert_eq!(
        store.reserve_ack(ack.id, &c, now).await.unwrap(),
        None,
        "the job's own slot"
    );
    assert_eq!(
        store.reserve_ack(9_999, &c, now).await.unwrap(),
        Some(AckCap::PerAddress)
    );
    let failed = JobOutcome::Retry {
        at: now,
        error: "SMTP: 451 try later".into(),
    };
    assert!(store.finish_job(&ack, &failed, now).await.unwrap());
    assert_eq!(store.reserve_ack(9_999, &c, now).await.unwrap(), None, "given back");
}

on_both_backends!(
    acknowledgement_slots_are_reserved_atomically_and_given_back_on_failure,
    one_process_at_a_time_holds_the_filer_role,
    a_claim_leases_due_jobs_of_the_asked_kinds_once,
    an_expired_lease_is_taken_over_and_the_old_holder_cannot_finish,
    a_retry_waits_until_its_time_and_dead_jobs_show_in_stats,
    finishing_records_the_ack_and_the_issue_on_the_ticket,
    concurrent_claims_never_hand_out_a_job_twice,
);
