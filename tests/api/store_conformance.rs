//! The storage conformance suite: the same cases on SQLite and PostgreSQL.

use std::sync::Arc;

use chrono::{Duration, Utc};
use intake::domain::RawSubmission;
use intake::store::queue::{DeliveryState, JobKind, JobOutcome, WaitReason};
use intake::store::{InsertOutcome, NewTicket, Store};

use crate::helpers::{new_ticket, open_store, Backend, TestDatabase};
use crate::on_both_backends;

async fn open(backend: Backend) -> Option<(TestDatabase, Arc<dyn Store>)> {
    open_store(backend, 4).await
}

fn ticket(subject: &str, key: Option<&str>) -> NewTicket {
    let raw = RawSubmission {
        name: Some("Zoë Ünicode".into()),
        email: Some("zoe@example.com".into()),
        request_type: Some("product".into()),
        subject: Some(subject.into()),
        message: Some("The export button does nothing.\nSecond line: sql injection in the search box?".into()),
        account: Some("acct-7".into()),
        page_url: None,
    };
    new_ticket(raw, key)
}

fn reference_of(o: &InsertOutcome) -> &str {
    match o {
        InsertOutcome::Created(t) | InsertOutcome::Repeated(t) | InsertOutcome::KeyConflict(t) => &t.reference,
    }
}

async fn a_ticket_reads_back_exactly_as_written(backend: Backend) {
    let Some((_db, store)) = open(backend).await else {
        return;
    };
    let t = ticket("Export broken", None);
    let out = store.insert_tickets(std::slice::from_ref(&t)).await.unwrap();
    let InsertOutcome::Created(summary) = &out[0] else {
        panic!("{out:?}")
    };
    assert_eq!(summary.reference, t.reference.as_str());
    let back = store.ticket_by_reference(t.reference.as_str()).await.unwrap().unwrap();
    assert_eq!(back.name, "Zoë Ünicode");
    assert_eq!(back.message, t.submission.message);
    assert_eq!(back.account.as_deref(), Some("acct-7"));
    assert_eq!(back.page_url, None);
    assert_eq!(back.picked_type, t.classification.picked);
    assert_eq!(back.filed_type, t.classification.filed_as);
    assert_eq!(back.signals, t.classification.signals);
    assert!(!back.signals.is_empty());
    assert_eq!(back.created_at.timestamp_millis(), t.created_at.timestamp_millis());
    let jobs = store.deliveries_for_ticket(back.id).await.unwrap();
    assert_eq!(jobs.len(), 2);
    assert!(jobs
        .iter()
        .all(|j| j.state == DeliveryState::Pending && j.attempts == 0));
    assert!(store.ticket_by_reference("LV-00000000").await.unwrap().is_none());
}

async fn a_batch_resolves_repeats_and_conflicts_within_itself(backend: Backend) {
    let Some((_db, store)) = open(backend).await else {
        return;
    };
    let batch = vec![
        ticket("First", Some("k1")),
        ticket("First", Some("k1")),
        ticket("Other content", Some("k1")),
        ticket("Second", None),
    ];
    let out = store.insert_tickets(&batch).await.unwrap();
    assert_eq!(out.len(), 4);
    assert!(matches!(out[0], InsertOutcome::Created(_)), "{out:?}");
    assert!(matches!(out[1], InsertOutcome::Repeated(_)), "{out:?}");
    assert!(matches!(out[2], InsertOutcome::KeyConflict(_)), "{out:?}");
    assert!(matches!(out[3], InsertOutcome::Created(_)), "{out:?}");
    assert_eq!(reference_of(&out[0]), reference_of(&out[1]));
    assert_eq!(store.count_tickets().await.unwrap(), 2);
    // A later batch sees the earlier key too.
    let again = store.insert_tickets(&[ticket("First", Some("k1"))]).await.unwrap();
    assert_eq!(reference_of(&again[0]), reference_of(&out[0]));
    assert_eq!(store.outbox_stats(Utc::now()).await.unwrap().pending, 4);
}

async fn a_reference_collision_draws_a_new_reference(backend: Backend) {
    let Some((_db, store)) = open(backend).await else {
        return;
    };
    let a = ticket("A", None);
    let mut b = ticket("B", None);
    b.reference = a.reference.clone();
    let out = store.insert_tickets(&[a.clone(), b]).await.unwrap();
    assert!(out.iter().all(|o| matches!(o, InsertOutcome::Created(_))));
    assert_ne!(reference_of(&out[0]), reference_of(&out[1]));
    assert!(reference_of(&out[1]).starts_with("LV-"));
    assert_eq!(store.count_tickets().await.unwrap(), 2);
}

async fn outbox_stats_count_pending_and_age(backend: Backend) {
    let Some((_db, store)) = open(backend).await else {
        return;
    };
    assert_eq!(store.outbox_stats(Utc::now()).await.unwrap(), Default::default());
    let mut old = ticket("Old", None);
    old.created_at = Utc::now() - Duration::seconds(300);
    let mut one_job = ticket("One job", None);
    one_job.jobs = vec![JobKind::AckEmail];
    store.insert_tickets(&[old, one_job]).await.unwrap();
    let stats = store.outbox_stats(Utc::now()).await.unwrap();
    assert_eq!(stats.pending, 3);
    assert_eq!(stats.dead, 0);
    assert!((299..=310).contains(&stats.oldest_pending_seconds), "{stats:?}");
}

async fn each_ticket_of_a_batch_gets_its_own_jobs(backend: Backend) {
    let Some((_db, store)) = open(backend).await else {
        return;
    };
    // A repeat in the middle forces the slow path beside the multi-row one.
    store
        .insert_tickets(&[ticket("Seen before", Some("seen"))])
        .await
        .unwrap();
    // Once with every row inserted by one statement, once with a repeat among them.
    for with_repeat in [false, true] {
        let mut batch = Vec::new();
        for i in 0..70 {
            let mut t = ticket(&format!("Ticket {i}"), Some(&format!("key-{with_repeat}-{i:02}")));
            t.jobs = if i % 3 == 0 {
                vec![JobKind::AckEmail]
            } else {
                vec![JobKind::AckEmail, JobKind::GithubIssue]
            };
            batch.push(t);
        }
        if with_repeat {
            batch.insert(35, ticket("Seen before", Some("seen")));
        }
        let out = store.insert_tickets(&batch).await.unwrap();
        assert_eq!(
            matches!(out[35], InsertOutcome::Repeated(_)),
            with_repeat,
            "{:?}",
            out[35]
        );
        for (t, o) in batch.iter().zip(&out) {
            if matches!(o, InsertOutcome::Repeated(_)) {
                continue;
            }
            let stored = store.ticket_by_reference(reference_of(o)).await.unwrap().unwrap();
            assert_eq!(stored.subject, t.submission.subject, "outcome matched to its ticket");
            let kinds: Vec<JobKind> = store
                .deliveries_for_ticket(stored.id)
                .await
                .unwrap()
                .iter()
                .map(|d| d.kind)
                .collect();
            assert_eq!(kinds, t.jobs, "{}", t.submission.subject);
        }
    }
}

async fn a_wait_is_told_apart_from_a_failure_by_its_reason(backend: Backend) {
    let Some((_db, store)) = open(backend).await else {
        return;
    };
    let t = ticket("Needs filing", None);
    store.insert_tickets(std::slice::from_ref(&t)).await.unwrap();
    let lease = std::time::Duration::from_secs(60);
    let now = Utc::now();
    let job = store
        .claim_jobs(&[JobKind::GithubIssue], now, lease, 1)
        .await
        .unwrap()
        .remove(0);
    let wait = JobOutcome::Wait {
        at: now,
        reason: WaitReason::NoRoute,
        detail: "no github.routes.product.repo is configured".into(),
    };
    assert!(store.finish_job(&job, &wait, now).await.unwrap());
    assert_eq!(
        store.waiting_reason(JobKind::GithubIssue).await.unwrap().as_deref(),
        Some("no github.routes.product.repo is configured")
    );
    assert_eq!(store.failing_reason(JobKind::GithubIssue).await.unwrap(), None);
    let d = store.deliveries_for_ticket(job.ticket_id).await.unwrap();
    let d = d.iter().find(|d| d.kind == JobKind::GithubIssue).unwrap();
    assert_eq!(
        (d.state, d.wait_reason, d.attempts),
        (DeliveryState::Pending, Some(WaitReason::NoRoute), 0)
    );

    // The next attempt fails for real: a failure, no longer a wait.
    let later = now + Duration::seconds(1);
    let job = store
        .claim_jobs(&[JobKind::GithubIssue], later, lease, 1)
        .await
        .unwrap()
        .remove(0);
    let retry = JobOutcome::Retry {
        at: later,
        error: "GitHub answered 502".into(),
    };
    assert!(store.finish_job(&job, &retry, later).await.unwrap());
    assert_eq!(store.waiting_reason(JobKind::GithubIssue).await.unwrap(), None);
    assert_eq!(
        store.failing_reason(JobKind::GithubIssue).await.unwrap().as_deref(),
        Some("GitHub answered 502")
    );
    let d = store.deliveries_for_ticket(job.ticket_id).await.unwrap();
    assert_eq!(
        d.iter().find(|d| d.kind == JobKind::GithubIssue).unwrap().wait_reason,
        None
    );
}

/// What an earlier release wrote for a waiting job: the reason as a prefix of `last_error`.
async fn an_earlier_releases_waiting_text_is_converted_to_a_reason(backend: Backend) {
    let Some((db, store)) = open(backend).await else {
        return;
    };
    let t = ticket("Written by an earlier release", None);
    store.insert_tickets(std::slice::from_ref(&t)).await.unwrap();
    let old_row = "UPDATE deliveries SET last_error = 'waiting: no github.routes.product.repo is configured', \
                   wait_reason = NULL WHERE kind = 'github_issue'";
    // The conversion the migration runs, without its ALTER (the column exists already).
    let migration = match backend {
        Backend::Sqlite => include_str!("../../migrations/sqlite/0006_wait_reason.sql"),
        Backend::Postgres => include_str!("../../migrations/postgres/0006_wait_reason.sql"),
    };
    let conversion = &migration[migration.find("UPDATE deliveries").unwrap()..];
    match backend {
        Backend::Sqlite => {
            let mut conn = <sqlx::SqliteConnection as sqlx::Connection>::connect(db.url())
                .await
                .unwrap();
            for sql in [old_row, conversion] {
                sqlx::query(sql).execute(&mut conn).await.unwrap();
            }
        }
        Backend::Postgres => {
            let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(db.url())
                .await
                .unwrap();
            for sql in [old_row, conversion] {
                sqlx::query(sql).execute(&mut conn).await.unwrap();
            }
        }
    }
    let back = store.ticket_by_reference(t.reference.as_str()).await.unwrap().unwrap();
    let d = store.deliveries_for_ticket(back.id).await.unwrap();
    let d = d.iter().find(|d| d.kind == JobKind::GithubIssue).unwrap();
    assert_eq!(d.wait_reason, Some(WaitReason::NoRoute));
    assert_eq!(
        d.last_error.as_deref(),
        Some("no github.routes.product.repo is configured")
    );
    assert_eq!(
        store.waiting_reason(JobKind::GithubIssue).await.unwrap().as_deref(),
        Some("no github.routes.product.repo is configured")
    );
}

async fn migrations_can_run_twice(backend: Backend) {
    let Some((_db, store)) = open(backend).await else {
        return;
    };
    store.migrate().await.unwrap();
    store.ping().await.unwrap();
}

on_both_backends!(
    a_ticket_reads_back_exactly_as_written,
    a_batch_resolves_repeats_and_conflicts_within_itself,
    a_reference_collision_draws_a_new_reference,
    outbox_stats_count_pending_and_age,
    each_ticket_of_a_batch_gets_its_own_jobs,
    a_wait_is_told_apart_from_a_failure_by_its_reason,
    an_earlier_releases_waiting_text_is_converted_to_a_reason,
    migrations_can_run_twice,
);

/// PostgreSQL's DETAIL of a refused row quotes the row; what is logged of a storage error never
/// carries it.
#[tokio::test]
async fn a_logged_storage_error_does_not_quote_the_refused_row() {
    let Some(db) = TestDatabase::create(Backend::Postgres).await else {
        return;
    };
    let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(db.url())
        .await
        .unwrap();
    sqlx::query("CREATE TABLE t (email TEXT CHECK (length(email) < 5))")
        .execute(&mut conn)
        .await
        .unwrap();
    let err = sqlx::query("INSERT INTO t (email) VALUES ('victim@example.com')")
        .execute(&mut conn)
        .await
        .unwrap_err();
    let err = intake::store::StoreError::Database(err);
    assert!(
        format!("{err:?}").contains("victim@example.com"),
        "the driver's detail has the row"
    );
    let logged = err.for_log();
    assert!(logged.contains("23514"), "{logged}");
    assert!(!logged.contains("victim"), "{logged}");
}
