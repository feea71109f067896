//! Taking a submission in: categorise it, decide its delivery jobs, store it durably with them.

use std::sync::Arc;

use chrono::Utc;

use crate::classify::Classifier;
use crate::domain::{Channel, ClosedSet, IdempotencyKey, Reference, Submission};
use crate::store::queue::JobKind;
use crate::store::{InsertOutcome, NewTicket, StoreError, TicketWriter};

/// The one path by which tickets enter the system, shared by the form and the API.
pub struct Submitter {
    writer: TicketWriter,
    classifier: Arc<Classifier>,
    reference_prefix: String,
    file_unsupported: bool,
}

impl Submitter {
    pub fn new(
        writer: TicketWriter,
        classifier: Arc<Classifier>,
        reference_prefix: String,
        file_unsupported: bool,
    ) -> Submitter {
        Submitter {
            writer,
            classifier,
            reference_prefix,
            file_unsupported,
        }
    }

    pub fn reference_prefix(&self) -> &str {
        &self.reference_prefix
    }

    /// How the rules read a submission, without storing anything (a decoy confirmation shows what
    /// a real one would).
    pub fn classify(&self, submission: &Submission) -> crate::classify::Classification {
        self.classifier
            .classify(submission.request_type, &submission.subject, &submission.message)
    }

    /// Stores the ticket and its jobs in one transaction and returns once that is durable.
    pub async fn submit(
        &self,
        submission: Submission,
        channel: Channel,
        key: Option<IdempotencyKey>,
    ) -> Result<InsertOutcome, Arc<StoreError>> {
        let classification =
            self.classifier
                .classify(submission.request_type, &submission.subject, &submission.message);
        // Every ticket is acknowledged; unsupported ones are filed only when the team asked for it.
        let mut jobs = vec![JobKind::AckEmail];
        if classification.unsupported.is_none() || self.file_unsupported {
            jobs.push(JobKind::GithubIssue);
        }
        let ticket = NewTicket {
            reference: Reference::generate(&self.reference_prefix),
            created_at: Utc::now(),
            channel,
            submission,
            classification,
            idempotency_key: key,
            jobs,
        };
        let needs_triage = ticket.classification.needs_triage;
        let outcome = self.writer.submit(ticket).await?;
        match &outcome {
            InsertOutcome::Created(t) => tracing::info!(
                ticket = %t.reference,
                channel = channel.id(),
                r#type = t.filed_type.id(),
                picked = t.picked_type.id(),
                unsupported = t.unsupported.map(|u| u.id()),
                needs_triage,
                "ticket stored"
            ),
            InsertOutcome::Repeated(t) => {
                tracing::info!(ticket = %t.reference, channel = channel.id(), "repeated submission answered from its ticket")
            }
            InsertOutcome::KeyConflict(t) => {
                tracing::info!(ticket = %t.reference, channel = channel.id(), "idempotency key reused with other content")
            }
        }
        Ok(outcome)
    }
}
