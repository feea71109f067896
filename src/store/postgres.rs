//! PostgreSQL, for deployments with several instances on one database.

use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use std::sync::Arc;

use sqlx::postgres::{PgConnectOptions, PgListener, PgPoolOptions, PgRow};
use sqlx::query_builder::Separated;
use sqlx::{PgConnection, PgPool, Postgres, QueryBuilder, Row};
use tokio::sync::Notify;

use super::batch::{cache_statement, write_batch, BatchWriter, Placed, REFERENCE_ATTEMPTS, STATEMENT_CACHE_CAPACITY};
use super::decisions::{self, QueueWrites, WebhookWrites};
use super::queue::{AckCap, AckCaps, OutcomeRow, RetryOutcome};
use super::queue::{ClaimedJob, JobOutcome, WebhookOutcome};
use super::queue::{Delivery, JobKind, OutboxStats};
use super::rows::{kinds_sql, lease_token, stored_scopes};
use super::rows::{parse_id, parse_optional_id, parse_signals, signals_json};
use super::FilerLock;
use super::{InsertOutcome, NewTicket, Store, StoreError};
use crate::audit::AuditEntry;
use crate::domain::{ClosedSet, FiledIssue, IssueEvent, RequestType, Ticket, TicketEvent, TicketStatus};
use crate::tokens::{StoredToken, TokenInfo};

/// The advisory lock that makes one instance the GitHub filer ("intake-gh" as a number).
const FILER_LOCK_KEY: i64 = 0x696e_7461_6b65_6768;

/// The channel on which a commit with new jobs is announced.
const NOTIFY_CHANNEL: &str = "intake_outbox";

pub struct PostgresStore {
    pool: PgPool,
}

const TICKET_COLUMNS: &str = "id, reference, created_at, source, name, email, picked_type, type, \
     unsupported_reason, needs_triage, signals::text AS signals, subject, message, account, page_url, ack_message_id, \
     github_repo, github_issue_number, github_issue_url";

fn ticket_from_row(row: &PgRow) -> Result<Ticket, StoreError> {
    Ok(Ticket {
        id: row.try_get("id")?,
        reference: row.try_get("reference")?,
        created_at: row.try_get("created_at")?,
        channel: parse_id("channel", row.try_get("source")?)?,
        name: row.try_get("name")?,
        email: row.try_get("email")?,
        picked_type: parse_id("request type", row.try_get("picked_type")?)?,
        filed_type: parse_id("request type", row.try_get("type")?)?,
        unsupported: parse_optional_id("unsupported reason", row.try_get("unsupported_reason")?)?,
        needs_triage: row.try_get("needs_triage")?,
        signals: parse_signals(row.try_get("signals")?)?,
        subject: row.try_get("subject")?,
        message: row.try_get("message")?,
        account: row.try_get("account")?,
        page_url: row.try_get("page_url")?,
        ack_message_id: row.try_get("ack_message_id")?,
        github_issue: FiledIssue::from_columns(
            row.try_get("github_repo")?,
            row.try_get("github_issue_number")?,
            row.try_get("github_issue_url")?,
        ),
    })
}

impl PostgresStore {
    pub async fn connect(url: &str, max_connections: u32) -> Result<PostgresStore, StoreError> {
        let options = PgConnectOptions::from_str(url)?.statement_cache_capacity(STATEMENT_CACHE_CAPACITY);
        let pool = PgPoolOptions::new()
            .max_connections(max_connections)
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(options)
            .await?;
        Ok(PostgresStore { pool })
    }

    /// The pool, for the test harness and the job workers.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }
}

/// The columns written for a new ticket, in the order both statements bind them.
const INSERT_COLUMNS: &str = "INSERT INTO tickets (reference, created_at, source, name, email, picked_type, type, \
     status, unsupported_reason, needs_triage, signals, subject, message, account, page_url, idempotency_key, \
     content_hash) ";

fn push_ticket(mut b: Separated<'_, '_, Postgres, &'static str>, t: &NewTicket, reference: &str) {
    b.push_bind(reference.to_owned())
        .push_bind(t.created_at)
        .push_bind(t.channel.id())
        .push_bind(t.submission.name.clone())
        .push_bind(t.submission.email.clone())
        .push_bind(t.classification.picked.id())
        .push_bind(t.classification.filed_as.id())
        .push_bind(t.status().id())
        .push_bind(t.classification.unsupported.map(|u| u.id()))
        .push_bind(t.classification.needs_triage)
        .push_bind(signals_json(&t.classification))
        .push_unseparated("::jsonb")
        .push_bind(t.submission.subject.clone())
        .push_bind(t.submission.message.clone())
        .push_bind(t.submission.account.clone())
        .push_bind(t.submission.page_url.clone())
        .push_bind(t.idempotency_key.as_ref().map(|k| k.as_str().to_owned()))
        .push_bind(t.submission.content_hash());
}

/// One transaction.
struct Tx<'c>(&'c mut PgConnection);

#[async_trait]
impl BatchWriter for Tx<'_> {
    async fn insert_many(&mut self, batch: &[NewTicket], chunk: &[usize]) -> Result<Vec<(i64, String)>, StoreError> {
        // ON CONFLICT DO NOTHING covers both unique columns: when another transaction holds the same
        // idempotency key, this waits for it and skips the row; `insert_one` then finds the earlier one.
        let mut qb = QueryBuilder::<Postgres>::new(INSERT_COLUMNS);
        qb.push_values(chunk, |b, &i| push_ticket(b, &batch[i], batch[i].reference.as_str()));
        qb.push(" ON CONFLICT DO NOTHING RETURNING id, reference");
        Ok(qb
            .build_query_as::<(i64, String)>()
            .persistent(cache_statement(chunk.len()))
            .fetch_all(&mut *self.0)
            .await?)
    }

    async fn insert_one(&mut self, t: &NewTicket) -> Result<Placed, StoreError> {
        let mut reference = t.reference.clone();
        for _ in 0..REFERENCE_ATTEMPTS {
            let mut qb = QueryBuilder::<Postgres>::new(INSERT_COLUMNS);
            qb.push_values([t], |b, t| push_ticket(b, t, reference.as_str()));
            qb.push(" ON CONFLICT DO NOTHING RETURNING id");
            if let Some(id) = qb.build_query_scalar::<i64>().fetch_optional(&mut *self.0).await? {
                return Ok(Placed::New {
                    id,
                    reference: reference.to_string(),
                });
            }
            if let Some(key) = &t.idempotency_key {
                let earlier = sqlx::query(&format!(
                    "SELECT {TICKET_COLUMNS}, content_hash FROM tickets WHERE idempotency_key = $1"
                ))
                .bind(key.as_str())
                .fetch_optional(&mut *self.0)
                .await?;
                if let Some(row) = earlier {
                    let summary = ticket_from_row(&row)?.summary();
                    let hash: String = row.try_get("content_hash")?;
                    return Ok(Placed::Existing(if hash == t.submission.content_hash() {
                        InsertOutcome::Repeated(summary)
                    } else {
                        InsertOutcome::KeyConflict(summary)
                    }));
                }
            }
            reference = reference.regenerate();
        }
        Err(StoreError::Corrupt(
            "no free ticket reference after several draws".to_owned(),
        ))
    }

    async fn insert_jobs(&mut self, jobs: &[(i64, JobKind, DateTime<Utc>)]) -> Result<(), StoreError> {
        let mut qb = QueryBuilder::<Postgres>::new(
            "INSERT INTO deliveries (ticket_id, kind, state, attempts, run_at, created_at, updated_at) ",
        );
        qb.push_values(jobs, |mut b, (id, kind, at)| {
            b.push_bind(*id)
                .push_bind(kind.id())
                .push_bind("pending")
                .push_bind(0_i32)
                .push_bind(*at)
                .push_bind(*at)
                .push_bind(*at);
        });
        qb.build()
            .persistent(cache_statement(jobs.len()))
            .execute(&mut *self.0)
            .await?;
        Ok(())
    }
}

#[async_trait]
impl QueueWrites for Tx<'_> {
    async fn set_job_outcome(
        &mut self,
        job: &ClaimedJob,
        row: &OutcomeRow<'_>,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let updated = sqlx::query(
            "UPDATE deliveries SET state = $1, run_at = COALESCE($2, run_at), last_error = $3, done_at = $4, \
             lease_until = NULL, lease_token = NULL, updated_at = $5, attempts = attempts - $8, wait_reason = $9 \
             WHERE id = $6 AND lease_token = $7 AND state = 'running'",
        )
        .bind(row.state.id())
        .bind(row.run_at)
        .bind(row.error)
        .bind(row.done_at)
        .bind(now)
        .bind(job.id)
        .bind(&job.lease_token)
        .bind(row.refund)
        .bind(row.wait_reason.map(ClosedSet::id))
        .execute(&mut *self.0)
        .await?;
        Ok(updated.rows_affected() > 0)
    }

    async fn keep_ack_message_id(&mut self, ticket_id: i64, message_id: &str) -> Result<(), StoreError> {
        sqlx::query("UPDATE tickets SET ack_message_id = COALESCE(ack_message_id, $1) WHERE id = $2")
            .bind(message_id)
            .bind(ticket_id)
            .execute(&mut *self.0)
            .await?;
        Ok(())
    }

    async fn log_ack(
        &mut self,
        job_id: i64,
        address: &str,
        domain: &str,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO ack_log (email, domain, sent_at, job_id) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (job_id) DO NOTHING",
        )
        .bind(address)
        .bind(domain)
        .bind(now)
        .bind(job_id)
        .execute(&mut *self.0)
        .await?;
        Ok(())
    }

    async fn release_ack_slot(&mut self, job_id: i64) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM ack_log WHERE job_id = $1")
            .bind(job_id)
            .execute(&mut *self.0)
            .await?;
        Ok(())
    }

    async fn set_issue(&mut self, ticket_id: i64, repo: &str, number: i64, url: &str) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE tickets SET github_repo = $1, github_issue_number = $2, github_issue_url = $3 WHERE id = $4",
        )
        .bind(repo)
        .bind(number)
        .bind(url)
        .bind(ticket_id)
        .execute(&mut *self.0)
        .await?;
        Ok(())
    }

    async fn delivery_state(&mut self, id: i64) -> Result<Option<String>, StoreError> {
        Ok(
            sqlx::query_scalar("SELECT state FROM deliveries WHERE id = $1 FOR UPDATE")
                .bind(id)
                .fetch_optional(&mut *self.0)
                .await?,
        )
    }

    async fn requeue_delivery(&mut self, id: i64, at: DateTime<Utc>) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE deliveries SET state = 'pending', run_at = $1, attempts = 0, lease_until = NULL, \
             lease_token = NULL, done_at = NULL, wait_reason = NULL, updated_at = $1 WHERE id = $2",
        )
        .bind(at)
        .bind(id)
        .execute(&mut *self.0)
        .await?;
        // Other instances' workers hear of it at once.
        sqlx::query("SELECT pg_notify($1, '')")
            .bind(NOTIFY_CHANNEL)
            .execute(&mut *self.0)
            .await?;
        Ok(())
    }

    async fn append_audit(&mut self, audit: &AuditEntry) -> Result<(), StoreError> {
        append_audit(self.0, audit).await
    }

    async fn queue_job(
        &mut self,
        ticket_id: i64,
        kind: JobKind,
        event_id: Option<i64>,
        now: DateTime<Utc>,
    ) -> Result<i64, StoreError> {
        let id = sqlx::query_scalar(
            "INSERT INTO deliveries (ticket_id, kind, run_at, event_id, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $3, $3) RETURNING id",
        )
        .bind(ticket_id)
        .bind(kind.id())
        .bind(now)
        .bind(event_id)
        .fetch_one(&mut *self.0)
        .await?;
        // Other instances' workers hear of it at once.
        sqlx::query("SELECT pg_notify($1, '')")
            .bind(NOTIFY_CHANNEL)
            .execute(&mut *self.0)
            .await?;
        Ok(id)
    }
}

#[async_trait]
impl WebhookWrites for Tx<'_> {
    async fn note_delivery(&mut self, delivery_id: &str, event: &str, now: DateTime<Utc>) -> Result<bool, StoreError> {
        // Two instances receiving the same delivery at once: the second waits on the first's row
        // and then finds it.
        let fresh = sqlx::query(
            "INSERT INTO webhook_deliveries (delivery_id, event, received_at) VALUES ($1, $2, $3) \
             ON CONFLICT (delivery_id) DO NOTHING",
        )
        .bind(delivery_id)
        .bind(event)
        .bind(now)
        .execute(&mut *self.0)
        .await?;
        Ok(fresh.rows_affected() > 0)
    }

    async fn ticket_for_issue(&mut self, repo: &str, number: i64) -> Result<Option<(i64, String)>, StoreError> {
        // The row lock serialises events of one issue across instances.
        Ok(sqlx::query_as(
            "SELECT id, reference FROM tickets WHERE lower(github_repo) = lower($1) AND github_issue_number = $2 \
             FOR UPDATE",
        )
        .bind(repo)
        .bind(number)
        .fetch_optional(&mut *self.0)
        .await?)
    }

    async fn last_event_kind(&mut self, ticket_id: i64) -> Result<Option<String>, StoreError> {
        Ok(
            sqlx::query_scalar("SELECT kind FROM ticket_events WHERE ticket_id = $1 ORDER BY id DESC LIMIT 1")
                .bind(ticket_id)
                .fetch_optional(&mut *self.0)
                .await?,
        )
    }

    async fn close_recorded(&mut self, ticket_id: i64, closed_at: &str) -> Result<bool, StoreError> {
        Ok(sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM ticket_events WHERE ticket_id = $1 AND kind = 'issue_closed' \
             AND closed_at = $2)",
        )
        .bind(ticket_id)
        .bind(closed_at)
        .fetch_one(&mut *self.0)
        .await?)
    }

    async fn insert_event(
        &mut self,
        ticket_id: i64,
        issue: &IssueEvent,
        delivery_id: &str,
        now: DateTime<Utc>,
    ) -> Result<i64, StoreError> {
        Ok(sqlx::query_scalar(
            "INSERT INTO ticket_events (ticket_id, at, kind, state_reason, delivery_id, closed_at) \
             VALUES ($1, $2, $3, $4, $5, $6) RETURNING id",
        )
        .bind(ticket_id)
        .bind(now)
        .bind(issue.action.id())
        .bind(&issue.state_reason)
        .bind(delivery_id)
        .bind(&issue.closed_at)
        .fetch_one(&mut *self.0)
        .await?)
    }
}

#[async_trait]
impl Store for PostgresStore {
    fn backend(&self) -> super::Backend {
        super::Backend::Postgres
    }

    async fn migrate(&self) -> Result<(), StoreError> {
        let mut migrator = sqlx::migrate!("./migrations/postgres");
        // Migrations only add (see the `store` module): an earlier release starts on a later schema.
        migrator.set_ignore_missing(true);
        migrator.run(&self.pool).await?;
        Ok(())
    }

    async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    async fn insert_tickets(&self, batch: &[NewTicket]) -> Result<Vec<InsertOutcome>, StoreError> {
        let mut tx = self.pool.begin().await?;
        let outcomes = write_batch(&mut Tx(&mut tx), batch).await?;
        if outcomes.iter().any(|o| matches!(o, InsertOutcome::Created(_))) {
            // Delivered at commit to every instance listening: their workers pick the jobs up at once.
            sqlx::query("SELECT pg_notify($1, '')")
                .bind(NOTIFY_CHANNEL)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(outcomes)
    }

    async fn try_filer_lock(&self) -> Result<Option<FilerLock>, StoreError> {
        // A session-level advisory lock on a connection of its own: no transaction stays open, and
        // the lock goes with the connection when the process dies.
        let mut conn = self.pool.acquire().await?.detach();
        let got: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
            .bind(FILER_LOCK_KEY)
            .fetch_one(&mut conn)
            .await?;
        Ok(got.then(|| FilerLock(Some(Box::new(tokio::sync::Mutex::new(conn))))))
    }

    async fn listen_for_jobs(&self, wake: Arc<Notify>) -> Result<(), StoreError> {
        let mut listener = PgListener::connect_with(&self.pool).await?;
        listener.listen(NOTIFY_CHANNEL).await?;
        tokio::spawn(async move {
            loop {
                match listener.recv().await {
                    Ok(_) => wake.notify_one(),
                    Err(e) => {
                        // PgListener reconnects on the next recv; wake the worker so it polls meanwhile.
                        tracing::warn!(error = %e, "LISTEN connection lost; reconnecting");
                        wake.notify_one();
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                }
            }
        });
        Ok(())
    }

    async fn ticket_by_reference(&self, reference: &str) -> Result<Option<Ticket>, StoreError> {
        let row = sqlx::query(&format!("SELECT {TICKET_COLUMNS} FROM tickets WHERE reference = $1"))
            .bind(reference)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(ticket_from_row).transpose()
    }

    async fn ticket_by_id(&self, id: i64) -> Result<Option<Ticket>, StoreError> {
        let row = sqlx::query(&format!("SELECT {TICKET_COLUMNS} FROM tickets WHERE id = $1"))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(ticket_from_row).transpose()
    }

    async fn deliveries_for_ticket(&self, ticket_id: i64) -> Result<Vec<Delivery>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {DELIVERY_COLUMNS} FROM deliveries WHERE ticket_id = $1 ORDER BY id"
        ))
        .bind(ticket_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(delivery_from_row).collect()
    }

    async fn outbox_stats(&self, now: DateTime<Utc>) -> Result<OutboxStats, StoreError> {
        let row = sqlx::query(
            "SELECT \
               (SELECT COUNT(*) FROM deliveries WHERE state IN ('pending', 'running')) AS pending, \
               (SELECT COUNT(*) FROM deliveries WHERE state = 'dead') AS dead, \
               (SELECT MIN(created_at) FROM deliveries WHERE state IN ('pending', 'running')) AS oldest",
        )
        .fetch_one(&self.pool)
        .await?;
        let oldest: Option<DateTime<Utc>> = row.try_get("oldest")?;
        Ok(OutboxStats {
            pending: row.try_get("pending")?,
            dead: row.try_get("dead")?,
            oldest_pending_seconds: oldest.map_or(0, |o| (now - o).num_seconds().max(0)),
        })
    }

    async fn count_tickets(&self) -> Result<i64, StoreError> {
        Ok(sqlx::query_scalar("SELECT COUNT(*) FROM tickets")
            .fetch_one(&self.pool)
            .await?)
    }

    async fn claim_jobs(
        &self,
        kinds: &[JobKind],
        now: DateTime<Utc>,
        lease: std::time::Duration,
        limit: i64,
    ) -> Result<Vec<ClaimedJob>, StoreError> {
        let token = lease_token();
        let lease = chrono::Duration::from_std(lease).unwrap_or(chrono::Duration::minutes(5));
        // SKIP LOCKED: several instances claim side by side, never the same job.
        let sql = format!(
            "UPDATE deliveries SET state = 'running', attempts = attempts + 1, lease_until = $1, lease_token = $2, \
             first_attempt_at = COALESCE(first_attempt_at, $3), updated_at = $3 \
             WHERE id IN (SELECT id FROM deliveries WHERE {} AND \
               ((state = 'pending' AND run_at <= $3) OR (state = 'running' AND lease_until < $3)) \
               ORDER BY run_at, id LIMIT $4 FOR UPDATE SKIP LOCKED) \
             RETURNING id, ticket_id, kind, attempts, first_attempt_at, event_id, \
             first_attempt_at < $3 AS tried_before",
            kinds_sql(kinds)
        );
        let rows = sqlx::query(&sql)
            .bind(now + lease)
            .bind(&token)
            .bind(now)
            .bind(limit)
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| {
                Ok(ClaimedJob {
                    id: r.try_get("id")?,
                    ticket_id: r.try_get("ticket_id")?,
                    kind: parse_id("delivery kind", r.try_get("kind")?)?,
                    attempts: r.try_get("attempts")?,
                    lease_token: token.clone(),
                    first_attempt_at: r.try_get("first_attempt_at")?,
                    event_id: r.try_get("event_id")?,
                    tried_before: r.try_get("tried_before")?,
                })
            })
            .collect()
    }

    async fn finish_job(&self, job: &ClaimedJob, outcome: &JobOutcome, now: DateTime<Utc>) -> Result<bool, StoreError> {
        let mut tx = self.pool.begin().await?;
        let finished = decisions::finish_job(&mut Tx(&mut tx), job, outcome, now).await?;
        if finished {
            tx.commit().await?;
        }
        Ok(finished)
    }

    async fn reserve_ack(&self, job_id: i64, caps: &AckCaps, now: DateTime<Utc>) -> Result<Option<AckCap>, StoreError> {
        let mut tx = self.pool.begin().await?;
        // One reservation per domain at a time, across instances: the count and the insert below
        // cannot interleave with another's (an address's acknowledgements are within its domain).
        sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended('intake-ack:' || $1, 0))")
            .bind(&caps.domain)
            .execute(&mut *tx)
            .await?;
        let mine: Option<i64> = sqlx::query_scalar("SELECT id FROM ack_log WHERE job_id = $1")
            .bind(job_id)
            .fetch_optional(&mut *tx)
            .await?;
        if mine.is_some() {
            return Ok(None);
        }
        let to_address: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM ack_log WHERE email = $1 AND sent_at >= $2")
            .bind(&caps.email)
            .bind(caps.per_email_since)
            .fetch_one(&mut *tx)
            .await?;
        if to_address >= caps.per_email {
            return Ok(Some(AckCap::PerAddress));
        }
        let to_domain: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM ack_log WHERE domain = $1 AND sent_at >= $2")
            .bind(&caps.domain)
            .bind(caps.per_domain_since)
            .fetch_one(&mut *tx)
            .await?;
        if to_domain >= caps.per_domain {
            return Ok(Some(AckCap::PerDomain));
        }
        sqlx::query("INSERT INTO ack_log (email, domain, sent_at, job_id) VALUES ($1, $2, $3, $4)")
            .bind(&caps.email)
            .bind(&caps.domain)
            .bind(now)
            .bind(job_id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(None)
    }

    async fn next_due(&self, kinds: &[JobKind]) -> Result<Option<DateTime<Utc>>, StoreError> {
        let sql = format!(
            "SELECT MIN(CASE state WHEN 'pending' THEN run_at ELSE lease_until END) FROM deliveries \
             WHERE {} AND state IN ('pending', 'running')",
            kinds_sql(kinds)
        );
        Ok(sqlx::query_scalar(&sql).fetch_one(&self.pool).await?)
    }

    async fn waiting_reason(&self, kind: JobKind) -> Result<Option<String>, StoreError> {
        Ok(sqlx::query_scalar(
            "SELECT last_error FROM deliveries WHERE kind = $1 AND state = 'pending' AND wait_reason IS NOT NULL \
             ORDER BY id DESC LIMIT 1",
        )
        .bind(kind.id())
        .fetch_optional(&self.pool)
        .await?)
    }

    async fn failing_reason(&self, kind: JobKind) -> Result<Option<String>, StoreError> {
        Ok(sqlx::query_scalar(
            "SELECT last_error FROM deliveries WHERE kind = $1 AND state = 'pending' AND attempts > 0 \
             AND last_error IS NOT NULL AND wait_reason IS NULL ORDER BY updated_at DESC LIMIT 1",
        )
        .bind(kind.id())
        .fetch_optional(&self.pool)
        .await?)
    }

    async fn record_webhook(
        &self,
        delivery_id: &str,
        event: &str,
        issue: Option<&IssueEvent>,
        now: DateTime<Utc>,
    ) -> Result<WebhookOutcome, StoreError> {
        let mut tx = self.pool.begin().await?;
        let outcome = decisions::record_webhook(&mut Tx(&mut tx), delivery_id, event, issue, now).await?;
        tx.commit().await?;
        Ok(outcome)
    }

    async fn ticket_event(&self, id: i64) -> Result<Option<TicketEvent>, StoreError> {
        let row = sqlx::query("SELECT id, ticket_id, at, kind, state_reason FROM ticket_events WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(event_from_row).transpose()
    }

    async fn create_token(
        &self,
        name: &str,
        token_id: &str,
        secret_hash: &str,
        scopes: &str,
        audit: &AuditEntry,
    ) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "INSERT INTO ops_tokens (token_id, name, secret_hash, scopes, created_at, created_by) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(token_id)
        .bind(name)
        .bind(secret_hash)
        .bind(scopes)
        .bind(audit.at)
        .bind(&audit.actor)
        .execute(&mut *tx)
        .await
        .map_err(|e| StoreError::from_unique(e, format!("a live token named `{name}` exists already")))?;
        append_audit(&mut tx, audit).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn revoke_token(&self, name: &str, audit: &AuditEntry) -> Result<bool, StoreError> {
        let mut tx = self.pool.begin().await?;
        let done = sqlx::query("UPDATE ops_tokens SET revoked_at = $1 WHERE name = $2 AND revoked_at IS NULL")
            .bind(audit.at)
            .bind(name)
            .execute(&mut *tx)
            .await?;
        if done.rows_affected() == 0 {
            return Ok(false);
        }
        append_audit(&mut tx, audit).await?;
        tx.commit().await?;
        Ok(true)
    }

    async fn list_tokens(&self) -> Result<Vec<TokenInfo>, StoreError> {
        let rows =
            sqlx::query("SELECT name, scopes, created_at, created_by, revoked_at FROM ops_tokens ORDER BY id DESC")
                .fetch_all(&self.pool)
                .await?;
        rows.iter()
            .map(|r| {
                Ok(TokenInfo {
                    name: r.try_get("name")?,
                    scopes: stored_scopes(r.try_get("scopes")?)?,
                    created_at: r.try_get("created_at")?,
                    created_by: r.try_get("created_by")?,
                    revoked_at: r.try_get("revoked_at")?,
                })
            })
            .collect()
    }

    async fn live_token(&self, token_id: &str) -> Result<Option<StoredToken>, StoreError> {
        let row =
            sqlx::query("SELECT name, scopes, secret_hash FROM ops_tokens WHERE token_id = $1 AND revoked_at IS NULL")
                .bind(token_id)
                .fetch_optional(&self.pool)
                .await?;
        row.map(|r| {
            Ok(StoredToken {
                name: r.try_get("name")?,
                scopes: stored_scopes(r.try_get("scopes")?)?,
                secret_hash: r.try_get("secret_hash")?,
            })
        })
        .transpose()
    }

    async fn audit_log(&self, limit: i64) -> Result<Vec<AuditEntry>, StoreError> {
        let rows =
            sqlx::query("SELECT at, actor, action, target, reason, detail FROM audit_log ORDER BY id DESC LIMIT $1")
                .bind(limit)
                .fetch_all(&self.pool)
                .await?;
        rows.iter()
            .map(|r| {
                Ok(AuditEntry {
                    at: r.try_get("at")?,
                    actor: r.try_get("actor")?,
                    action: r.try_get("action")?,
                    target: r.try_get("target")?,
                    reason: r.try_get("reason")?,
                    detail: r.try_get("detail")?,
                })
            })
            .collect()
    }

    async fn list_tickets(
        &self,
        status: Option<TicketStatus>,
        request_type: Option<RequestType>,
        limit: i64,
    ) -> Result<Vec<Ticket>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {TICKET_COLUMNS} FROM tickets WHERE ($1::TEXT IS NULL OR status = $1) \
             AND ($2::TEXT IS NULL OR type = $2) ORDER BY id DESC LIMIT $3"
        ))
        .bind(status.map(ClosedSet::id))
        .bind(request_type.map(ClosedSet::id))
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(ticket_from_row).collect()
    }

    async fn ticket_events(&self, ticket_id: i64) -> Result<Vec<TicketEvent>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, ticket_id, at, kind, state_reason FROM ticket_events WHERE ticket_id = $1 ORDER BY id",
        )
        .bind(ticket_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(event_from_row).collect()
    }

    async fn list_deliveries(&self, dead_only: bool, limit: i64) -> Result<Vec<Delivery>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {DELIVERY_COLUMNS} FROM deliveries WHERE (NOT $1 OR state = 'dead') \
             ORDER BY (state = 'dead') DESC, id DESC LIMIT $2"
        ))
        .bind(dead_only)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(delivery_from_row).collect()
    }

    async fn retry_delivery(&self, id: i64, audit: &AuditEntry) -> Result<RetryOutcome, StoreError> {
        let mut tx = self.pool.begin().await?;
        let outcome = decisions::retry_delivery(&mut Tx(&mut tx), id, audit).await?;
        if outcome == RetryOutcome::Queued {
            tx.commit().await?;
        }
        Ok(outcome)
    }

    async fn queue_ack(&self, ticket_id: i64, audit: &AuditEntry) -> Result<i64, StoreError> {
        let mut tx = self.pool.begin().await?;
        let id = decisions::queue_ack(&mut Tx(&mut tx), ticket_id, audit).await?;
        tx.commit().await?;
        Ok(id)
    }
}

/// Appends one audit entry inside the caller's transaction.
async fn append_audit(tx: &mut PgConnection, audit: &AuditEntry) -> Result<(), StoreError> {
    sqlx::query("INSERT INTO audit_log (at, actor, action, target, reason, detail) VALUES ($1, $2, $3, $4, $5, $6)")
        .bind(audit.at)
        .bind(&audit.actor)
        .bind(&audit.action)
        .bind(&audit.target)
        .bind(&audit.reason)
        .bind(&audit.detail)
        .execute(tx)
        .await?;
    Ok(())
}

const DELIVERY_COLUMNS: &str = "id, ticket_id, kind, state, attempts, run_at, last_error, wait_reason, done_at";

fn delivery_from_row(r: &PgRow) -> Result<Delivery, StoreError> {
    Ok(Delivery {
        id: r.try_get("id")?,
        ticket_id: r.try_get("ticket_id")?,
        kind: parse_id("delivery kind", r.try_get("kind")?)?,
        state: parse_id("delivery state", r.try_get("state")?)?,
        attempts: r.try_get("attempts")?,
        run_at: r.try_get("run_at")?,
        last_error: r.try_get("last_error")?,
        wait_reason: parse_optional_id("wait reason", r.try_get("wait_reason")?)?,
        done_at: r.try_get("done_at")?,
    })
}

fn event_from_row(r: &PgRow) -> Result<TicketEvent, StoreError> {
    Ok(TicketEvent {
        id: r.try_get("id")?,
        ticket_id: r.try_get("ticket_id")?,
        at: r.try_get("at")?,
        action: parse_id("event kind", r.try_get("kind")?)?,
        state_reason: r.try_get("state_reason")?,
    })
}
