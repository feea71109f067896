//! The delivery worker: claim due jobs with a lease, commit, do the network call, record the outcome.
//! Never holds a transaction across a network call; every handler is safe to run twice.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use tokio::sync::{watch, Notify};

use super::RetryPolicy;
use crate::config::Rate;
use crate::email::{ack_message, ack_message_id, AckContext, Mailer};
use crate::store::{ClaimedJob, Completion, JobKind, JobOutcome, Store, StoreError};
use crate::templates::Templates;

/// What the worker needs, built once from the settings.
pub struct DeliveryContext {
    pub store: Arc<dyn Store>,
    pub mailer: Mailer,
    pub ack: AckContext,
    pub templates: Templates,
    pub acks_per_email: Rate,
    pub retry: RetryPolicy,
    /// How long a claimed job is ours before another worker may take it over.
    pub lease: Duration,
    /// The safety-net poll, beside the wake-up after each commit.
    pub poll: Duration,
    pub wake: Arc<Notify>,
}

/// Runs the jobs this process can do. Cheap to clone.
#[derive(Clone)]
pub struct Deliverer {
    ctx: Arc<DeliveryContext>,
}

/// Jobs claimed at once.
const CLAIM_BATCH: i64 = 32;

impl Deliverer {
    pub fn new(ctx: DeliveryContext) -> Deliverer {
        Deliverer { ctx: Arc::new(ctx) }
    }

    /// The job kinds this worker handles; the others wait in the outbox, nothing lost.
    pub fn kinds(&self) -> Vec<JobKind> {
        vec![JobKind::AckEmail]
    }

    /// Does every job that is due now, and returns how many attempts it made. Tests drive delivery
    /// with this instead of sleeping.
    pub async fn run_once(&self) -> Result<usize, StoreError> {
        self.run_due(None).await
    }

    async fn run_due(&self, shutdown: Option<&watch::Receiver<bool>>) -> Result<usize, StoreError> {
        let kinds = self.kinds();
        let mut done = 0;
        loop {
            if shutdown.is_some_and(|s| *s.borrow()) {
                return Ok(done);
            }
            let jobs = self
                .ctx
                .store
                .claim_jobs(&kinds, Utc::now(), self.ctx.lease, CLAIM_BATCH)
                .await?;
            if jobs.is_empty() {
                return Ok(done);
            }
            done += jobs.len();
            // Emails go out side by side (the SMTP pool bounds the connections).
            let results = futures_util::future::join_all(jobs.iter().map(|job| self.attempt(job))).await;
            for r in results {
                r?;
            }
        }
    }

    /// Runs until `shutdown` turns true; a call in flight finishes first.
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        let kinds = self.kinds();
        loop {
            if let Err(e) = self.run_due(Some(&shutdown)).await {
                tracing::warn!(error = %e, "delivery: the outbox could not be read; trying again");
            }
            if *shutdown.borrow() {
                return;
            }
            let wait = match self.ctx.store.next_due(&kinds).await {
                Ok(Some(at)) => (at - Utc::now()).to_std().unwrap_or(Duration::ZERO).min(self.ctx.poll),
                _ => self.ctx.poll,
            };
            tokio::select! {
                _ = self.ctx.wake.notified() => {}
                _ = tokio::time::sleep(wait) => {}
                _ = shutdown.changed() => return,
            }
        }
    }

    async fn attempt(&self, job: &ClaimedJob) -> Result<(), StoreError> {
        let outcome = match job.kind {
            JobKind::AckEmail => self.acknowledge(job).await?,
            other => JobOutcome::Retry {
                at: Utc::now() + chrono::Duration::minutes(1),
                error: format!("no worker for {} jobs in this process", other.id()),
            },
        };
        if !self.ctx.store.finish_job(job, &outcome, Utc::now()).await? {
            tracing::warn!(
                job = job.id,
                "delivery: the lease ran out before the outcome was recorded"
            );
        }
        Ok(())
    }

    fn failed(&self, job: &ClaimedJob, transient: bool, error: String) -> JobOutcome {
        if transient {
            if let Some(at) = self.ctx.retry.next_attempt(job.attempts, Utc::now(), None) {
                return JobOutcome::Retry { at, error };
            }
        }
        JobOutcome::Dead { error }
    }

    #[tracing::instrument(name = "ack", skip_all, fields(job = job.id, ticket))]
    async fn acknowledge(&self, job: &ClaimedJob) -> Result<JobOutcome, StoreError> {
        let ctx = &self.ctx;
        let Some(ticket) = ctx.store.ticket_by_id(job.ticket_id).await? else {
            return Ok(JobOutcome::Dead {
                error: "the ticket does not exist".into(),
            });
        };
        tracing::Span::current().record("ticket", ticket.reference.as_str());
        let since =
            Utc::now() - chrono::Duration::from_std(ctx.acks_per_email.per).unwrap_or(chrono::Duration::days(1));
        let sent = ctx.store.acks_sent_since(&ticket.email, false, since).await?;
        if sent >= i64::from(ctx.acks_per_email.count) {
            tracing::info!(cap = %ctx.acks_per_email, "acknowledgement skipped: per-address cap reached");
            return Ok(JobOutcome::Skipped {
                reason: format!("per-address acknowledgement cap reached ({})", ctx.acks_per_email),
            });
        }
        let message = match ack_message(&ctx.ack, &ctx.templates, &ticket) {
            Ok(m) => m,
            Err(e) => {
                return Ok(JobOutcome::Dead {
                    error: format!("composing the acknowledgement failed: {e}"),
                })
            }
        };
        Ok(match ctx.mailer.send(message).await {
            Ok(()) => {
                tracing::info!("acknowledgement sent");
                JobOutcome::Done(Completion::Ack {
                    message_id: ack_message_id(&ticket.reference, &ctx.ack.from),
                    email: ticket.email.clone(),
                })
            }
            Err(e) => {
                tracing::warn!(error = %e, transient = e.transient, "acknowledgement not sent");
                self.failed(job, e.transient, e.message)
            }
        })
    }
}
