//! The delivery worker: claim due jobs with a lease, commit, do the network call, record the outcome.
//! Never holds a transaction across a network call; every handler is safe to run twice.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::{watch, Notify, Semaphore};
use tokio::task::JoinSet;

use super::RetryPolicy;
use std::collections::BTreeMap;
use std::num::NonZeroU32;

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};

use crate::config::{GithubRoute, Rate};
use crate::domain::{ClosedSet, RequestType, Ticket};
use crate::email::{ack_message, ack_message_id, followup_message, AckContext, Mailer};
use crate::github::{issue_body, issue_title, marker, GithubClient, GithubError, Issue};
use crate::store::queue::{ack_address, AckCap, AckCaps, ClaimedJob, Completion, JobKind, JobOutcome, WaitReason};
use crate::store::{email_domain, FilerLock, Store, StoreError};
use crate::templates::Templates;
use lettre::Message;

/// What the worker needs, built once from the settings.
pub struct DeliveryContext {
    pub store: Arc<dyn Store>,
    pub mailer: Mailer,
    pub ack: AckContext,
    pub templates: Templates,
    pub acks_per_email: Rate,
    pub acks_per_domain: Rate,
    pub metrics: Arc<crate::metrics::Metrics>,
    pub retry: RetryPolicy,
    /// How long a claimed job is ours before another worker may take it over.
    pub lease: Duration,
    /// The safety-net poll, beside the wake-up after each commit.
    pub poll: Duration,
    pub wake: Arc<Notify>,
    /// GitHub filing, when a token and routes are configured; otherwise its jobs wait.
    pub github: Option<GithubFiling>,
}

/// Everything filing needs.
pub struct GithubFiling {
    pub client: GithubClient,
    pub routes: BTreeMap<String, GithubRoute>,
    pub decision_labels: crate::config::DecisionLabels,
    /// Creates are paced under GitHub's content limits; `None` turns pacing off (tests, benchmarks).
    pub pacer: Option<Pacer>,
}

/// Two budgets at once, as GitHub counts them: per minute and per hour.
pub struct Pacer {
    minute: DefaultDirectRateLimiter,
    hour: DefaultDirectRateLimiter,
}

impl Pacer {
    pub fn new(per_minute: u32, per_hour: u32) -> Pacer {
        let q = |n: u32| NonZeroU32::new(n.max(1)).unwrap_or(NonZeroU32::MIN);
        Pacer {
            minute: RateLimiter::direct(Quota::per_minute(q(per_minute))),
            hour: RateLimiter::direct(Quota::per_hour(q(per_hour))),
        }
    }

    async fn ready(&self) {
        self.hour.until_ready().await;
        self.minute.until_ready().await;
    }
}

/// How long a job waits when something outside it (configuration, visibility) holds it up.
const WAIT_FOR_CONFIGURATION: chrono::Duration = chrono::Duration::hours(1);

/// Runs the jobs this process can do. Cheap to clone.
#[derive(Clone)]
pub struct Deliverer {
    ctx: Arc<DeliveryContext>,
}

/// Jobs claimed at once.
const CLAIM_BATCH: i64 = 32;
/// Emails sent at once by one process (the SMTP pool keeps up to 4 connections open).
const EMAIL_CONCURRENCY: usize = 16;
/// The jobs of the email lane.
const EMAIL_KINDS: [JobKind; 2] = [JobKind::AckEmail, JobKind::FollowupEmail];

impl Deliverer {
    pub fn new(ctx: DeliveryContext) -> Deliverer {
        Deliverer { ctx: Arc::new(ctx) }
    }

    /// The job kinds this worker handles; the others wait in the outbox, nothing lost.
    pub fn kinds(&self) -> Vec<JobKind> {
        let mut kinds = EMAIL_KINDS.to_vec();
        if self.ctx.github.is_some() {
            kinds.push(JobKind::GithubIssue);
        }
        kinds
    }

    /// Does every job that is due now, and returns how many attempts it made. Tests drive delivery
    /// with this instead of sleeping.
    pub async fn run_once(&self) -> Result<usize, StoreError> {
        self.run_due(None, None, &self.kinds()).await
    }

    /// As [`Deliverer::run_once`], taking `now` as the time jobs fall due (tests step over retry
    /// waits with it; the calls themselves happen now).
    pub async fn run_once_at(&self, now: DateTime<Utc>) -> Result<usize, StoreError> {
        self.run_due(None, Some(now), &self.kinds()).await
    }

    async fn run_due(
        &self,
        shutdown: Option<&watch::Receiver<bool>>,
        at: Option<DateTime<Utc>>,
        kinds: &[JobKind],
    ) -> Result<usize, StoreError> {
        let mut done = 0;
        loop {
            if shutdown.is_some_and(|s| *s.borrow()) {
                return Ok(done);
            }
            let jobs = self
                .ctx
                .store
                .claim_jobs(kinds, at.unwrap_or_else(Utc::now), self.ctx.lease, CLAIM_BATCH)
                .await?;
            if jobs.is_empty() {
                return Ok(done);
            }
            done += jobs.len();
            let (issues, emails): (Vec<&ClaimedJob>, Vec<&ClaimedJob>) =
                jobs.iter().partition(|j| j.kind == JobKind::GithubIssue);
            // Emails go out side by side (the SMTP pool bounds the connections); issues one at a time,
            // as GitHub asks of one token.
            let emails = futures_util::future::join_all(emails.into_iter().map(|job| self.attempt(job)));
            let issues = async {
                for job in issues {
                    self.attempt(job).await?;
                }
                Ok::<(), StoreError>(())
            };
            let (emails, issues) = tokio::join!(emails, issues);
            issues?;
            for r in emails {
                r?;
            }
        }
    }

    /// Runs until `shutdown` turns true; a call in flight finishes first.
    pub async fn run(self, shutdown: watch::Receiver<bool>) {
        // One lane per kind, so a slow SMTP server never holds up filing, nor GitHub's one-at-a-time
        // pace the emails. Each lane has its own wake-up, fed from the shared one.
        let mut lanes = vec![EMAIL_KINDS.to_vec()];
        if self.ctx.github.is_some() {
            lanes.push(vec![JobKind::GithubIssue]);
        }
        let wakes: Vec<Arc<Notify>> = lanes.iter().map(|_| Arc::new(Notify::new())).collect();
        let fan_out = {
            let (wake, wakes) = (Arc::clone(&self.ctx.wake), wakes.clone());
            tokio::spawn(async move {
                loop {
                    wake.notified().await;
                    for w in &wakes {
                        w.notify_one();
                    }
                }
            })
        };
        let lanes = lanes.into_iter().zip(wakes).map(|(kinds, wake)| {
            let (me, shutdown) = (self.clone(), shutdown.clone());
            tokio::spawn(async move {
                if kinds == EMAIL_KINDS {
                    me.email_lane(wake, shutdown).await
                } else {
                    me.lane(kinds, wake, shutdown).await
                }
            })
        });
        futures_util::future::join_all(lanes).await;
        fan_out.abort();
    }

    /// Emails go out as they come, up to [`EMAIL_CONCURRENCY`] at once: a new job does not wait for
    /// the slowest send of an earlier batch. Sends in flight at shutdown finish first.
    async fn email_lane(&self, wake: Arc<Notify>, mut shutdown: watch::Receiver<bool>) {
        let slots = Arc::new(Semaphore::new(EMAIL_CONCURRENCY));
        let mut sending = JoinSet::new();
        let kinds = EMAIL_KINDS;
        'lane: loop {
            loop {
                if *shutdown.borrow() {
                    break 'lane;
                }
                let free = slots.available_permits();
                if free == 0 {
                    break;
                }
                let jobs = match self
                    .ctx
                    .store
                    .claim_jobs(&kinds, Utc::now(), self.ctx.lease, free as i64)
                    .await
                {
                    Ok(jobs) => jobs,
                    Err(e) => {
                        tracing::warn!(error = %e, "delivery: the outbox could not be read; trying again");
                        break;
                    }
                };
                if jobs.is_empty() {
                    break;
                }
                for job in jobs {
                    let Ok(slot) = Arc::clone(&slots).acquire_owned().await else {
                        break 'lane;
                    };
                    let me = self.clone();
                    sending.spawn(async move {
                        let _slot = slot;
                        if let Err(e) = me.attempt(&job).await {
                            tracing::warn!(error = %e, job = job.id, "delivery: recording an outcome failed; the lease will expire and the job run again");
                        }
                    });
                }
            }
            let wait = match self.ctx.store.next_due(&kinds).await {
                Ok(Some(at)) => (at - Utc::now()).to_std().unwrap_or(Duration::ZERO).min(self.ctx.poll),
                _ => self.ctx.poll,
            };
            tokio::select! {
                _ = wake.notified() => {}
                _ = tokio::time::sleep(wait) => {}
                _ = shutdown.changed() => {}
                Some(_) = sending.join_next(), if !sending.is_empty() => {}
            }
        }
        while sending.join_next().await.is_some() {}
    }

    /// The GitHub lane: one instance at a time files (see [`Store::try_filer_lock`]).
    async fn lane(&self, kinds: Vec<JobKind>, wake: Arc<Notify>, mut shutdown: watch::Receiver<bool>) {
        let mut filer: Option<FilerLock> = None;
        let mut asked: Option<std::time::Instant> = None;
        loop {
            // Ask for the role at most once per poll interval, not at every wake-up.
            if filer.is_none() && asked.is_none_or(|t| t.elapsed() >= self.ctx.poll) {
                asked = Some(std::time::Instant::now());
                filer = match self.ctx.store.try_filer_lock().await {
                    Ok(lock) => lock,
                    Err(e) => {
                        tracing::warn!(error = %e, "delivery: could not ask for the filer role; trying again");
                        None
                    }
                };
            }
            if filer.is_some() {
                if let Err(e) = self.run_due(Some(&shutdown), None, &kinds).await {
                    tracing::warn!(error = %e, "delivery: the outbox could not be read; trying again");
                }
            }
            if *shutdown.borrow() {
                return;
            }
            // Not the filer: the jobs are another instance's to do; look again after a poll.
            let wait = match self.ctx.store.next_due(&kinds).await {
                _ if filer.is_none() => self.ctx.poll,
                Ok(Some(at)) => (at - Utc::now()).to_std().unwrap_or(Duration::ZERO).min(self.ctx.poll),
                _ => self.ctx.poll,
            };
            tokio::select! {
                _ = wake.notified() => {}
                _ = tokio::time::sleep(wait) => {}
                _ = shutdown.changed() => return,
            }
        }
    }

    async fn attempt(&self, job: &ClaimedJob) -> Result<(), StoreError> {
        let outcome = match job.kind {
            JobKind::AckEmail => self.acknowledge(job).await?,
            JobKind::FollowupEmail => self.follow_up(job).await?,
            JobKind::GithubIssue => self.file_issue(job).await?,
        };
        self.ctx.metrics.delivery(job.kind, outcome.result());
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

    /// The job's ticket, named on the span; `Err` with the outcome when the ticket is gone.
    async fn job_ticket(&self, job: &ClaimedJob) -> Result<Result<Ticket, JobOutcome>, StoreError> {
        let Some(ticket) = self.ctx.store.ticket_by_id(job.ticket_id).await? else {
            return Ok(Err(JobOutcome::Dead {
                error: "the ticket does not exist".into(),
            }));
        };
        tracing::Span::current().record("ticket", ticket.reference.as_str());
        Ok(Ok(ticket))
    }

    /// Sends a composed email (`what` names it in the log and the error): done with `completion`,
    /// else retried or dead as the failure says.
    async fn send(
        &self,
        job: &ClaimedJob,
        what: &str,
        composed: anyhow::Result<Message>,
        completion: Completion,
    ) -> JobOutcome {
        let message = match composed {
            Ok(m) => m,
            Err(e) => {
                return JobOutcome::Dead {
                    error: format!("composing the {what} failed: {e}"),
                }
            }
        };
        match self.ctx.mailer.send(message).await {
            Ok(()) => {
                tracing::info!("{what} sent");
                JobOutcome::Done(completion)
            }
            Err(e) => {
                tracing::warn!(error = %e, transient = e.transient, "{what} not sent");
                self.failed(job, e.transient, e.message)
            }
        }
    }

    #[tracing::instrument(name = "followup", skip_all, fields(job = job.id, ticket, state_reason))]
    async fn follow_up(&self, job: &ClaimedJob) -> Result<JobOutcome, StoreError> {
        let ctx = &self.ctx;
        let ticket = match self.job_ticket(job).await? {
            Ok(t) => t,
            Err(outcome) => return Ok(outcome),
        };
        let event = match job.event_id {
            Some(id) => ctx.store.ticket_event(id).await?,
            None => None,
        };
        let Some(event) = event else {
            return Ok(JobOutcome::Dead {
                error: "the issue event this follow-up answers does not exist".into(),
            });
        };
        tracing::Span::current().record("state_reason", event.state_reason.as_deref().unwrap_or("none"));
        let composed = followup_message(&ctx.ack, &ctx.templates, &ticket, &event);
        Ok(self.send(job, "follow-up", composed, Completion::Plain).await)
    }

    #[tracing::instrument(name = "ack", skip_all, fields(job = job.id, ticket))]
    async fn acknowledge(&self, job: &ClaimedJob) -> Result<JobOutcome, StoreError> {
        let ctx = &self.ctx;
        let ticket = match self.job_ticket(job).await? {
            Ok(t) => t,
            Err(outcome) => return Ok(outcome),
        };
        // The slot is reserved before the send, atomically, so concurrent jobs for one address
        // cannot all see room; a failed send gives it back (finish_job).
        let now = Utc::now();
        let window = |cap: Rate| now - chrono::Duration::from_std(cap.per).unwrap_or(chrono::Duration::days(1));
        let address = ack_address(&ticket.email);
        let caps = AckCaps {
            domain: email_domain(&address),
            email: address,
            per_email: i64::from(ctx.acks_per_email.count),
            per_email_since: window(ctx.acks_per_email),
            per_domain: i64::from(ctx.acks_per_domain.count),
            per_domain_since: window(ctx.acks_per_domain),
        };
        if let Some(reached) = ctx.store.reserve_ack(job.id, &caps, now).await? {
            let (what, cap) = match reached {
                AckCap::PerAddress => ("per-address", ctx.acks_per_email),
                AckCap::PerDomain => ("per-domain", ctx.acks_per_domain),
            };
            tracing::info!(cap = %cap, "acknowledgement skipped: {what} cap reached");
            return Ok(JobOutcome::Skipped {
                reason: format!("{what} acknowledgement cap reached ({cap})"),
            });
        }
        let completion = Completion::Ack {
            message_id: ack_message_id(&ticket.reference, &ctx.ack.from),
            email: ticket.email.clone(),
        };
        let composed = ack_message(&ctx.ack, &ctx.templates, &ticket);
        Ok(self.send(job, "acknowledgement", composed, completion).await)
    }

    #[tracing::instrument(name = "file_issue", skip_all, fields(job = job.id, ticket))]
    async fn file_issue(&self, job: &ClaimedJob) -> Result<JobOutcome, StoreError> {
        let Some(gh) = self.ctx.github.as_ref() else {
            return Ok(JobOutcome::Wait {
                at: Utc::now() + WAIT_FOR_CONFIGURATION,
                reason: WaitReason::GithubNotConfigured,
                detail: "GitHub is not configured".into(),
            });
        };
        let ticket = match self.job_ticket(job).await? {
            Ok(t) => t,
            Err(outcome) => return Ok(outcome),
        };
        let type_id = ticket.filed_type.id();
        let Some(route) = gh.routes.get(type_id) else {
            return Ok(JobOutcome::Wait {
                at: Utc::now() + WAIT_FOR_CONFIGURATION,
                reason: WaitReason::NoRoute,
                detail: format!("no github.routes.{type_id}.repo is configured"),
            });
        };
        let repo = route.repo.as_str();
        let private = match gh.client.is_private(repo).await {
            Ok(p) => p,
            Err(e) => return Ok(self.github_failed(job, e)),
        };
        if ticket.filed_type == RequestType::Security && !private {
            tracing::warn!(repo, "security ticket not filed: its route is a public repository");
            return Ok(JobOutcome::Wait {
                at: Utc::now() + WAIT_FOR_CONFIGURATION,
                reason: WaitReason::PublicSecurityRoute,
                detail: format!("security tickets are never filed in a public repository, and {repo} is public"),
            });
        }
        let marker = marker(&ticket.reference);
        if job.tried_before {
            // An earlier attempt (before a retry, or before an operator queued the job again) may
            // have created the issue before its answer was lost.
            let since = job.first_attempt_at - chrono::Duration::minutes(5);
            match gh.client.find_by_marker(repo, &marker, since).await {
                Ok(Some(issue)) => {
                    tracing::info!(
                        number = issue.number,
                        "issue found from an earlier attempt; not filing again"
                    );
                    return Ok(filed(repo, issue));
                }
                Ok(None) => {}
                Err(e) => return Ok(self.github_failed(job, e)),
            }
        }
        if let Some(pacer) = &gh.pacer {
            pacer.ready().await;
        }
        let mut labels = route
            .labels
            .clone()
            .unwrap_or_else(|| vec!["support".to_owned(), type_id.to_owned()]);
        labels.extend(decision_labels(&ticket, &gh.decision_labels));
        let title = issue_title(&ticket);
        let body = issue_body(&ticket, private);
        Ok(
            match gh
                .client
                .create_issue(repo, &title, &body, &labels, &route.assignees)
                .await
            {
                Ok(issue) => {
                    tracing::info!(number = issue.number, "issue filed");
                    filed(repo, issue)
                }
                Err(e) => self.github_failed(job, e),
            },
        )
    }

    fn github_failed(&self, job: &ClaimedJob, e: GithubError) -> JobOutcome {
        tracing::warn!(error = %e, "GitHub request failed");
        match e {
            GithubError::RateLimited { until, .. } => {
                // Honour GitHub's time, then back off on top of it.
                let at = self.ctx.retry.next_attempt(1, until, None).unwrap_or(until);
                JobOutcome::Wait {
                    at,
                    reason: WaitReason::RateLimited,
                    detail: e.to_string(),
                }
            }
            GithubError::Transient { message, .. } => self.failed(job, true, message),
            GithubError::Permanent { message } => JobOutcome::Dead { error: message },
        }
    }
}

/// The labels that say what the categorisation decided.
fn decision_labels(ticket: &Ticket, names: &crate::config::DecisionLabels) -> Vec<String> {
    let mut labels = Vec::new();
    if ticket.needs_triage {
        labels.push(names.needs_triage.clone());
    }
    if ticket.unsupported.is_some() {
        labels.push(names.unsupported.clone());
    }
    if crate::classify::band_of(&ticket.signals) == Some(crate::classify::Band::SecuritySuspect) {
        labels.push(names.security_suspect.clone());
    }
    labels.retain(|l| !l.is_empty());
    labels
}

fn filed(repo: &str, issue: Issue) -> JobOutcome {
    JobOutcome::Done(Completion::Issue {
        repo: repo.to_owned(),
        number: issue.number,
        url: issue.html_url,
    })
}
