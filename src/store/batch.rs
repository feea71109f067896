//! The batch algorithm both backends share when storing tickets.

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::queue::JobKind;
use super::{InsertOutcome, NewTicket, StoreError};
use crate::domain::{IdempotencyKey, TicketSummary};

/// The order in which a batch is written: by idempotency key, so that two instances writing
/// overlapping batches lock the same keys in the same order and cannot deadlock.
pub(super) fn write_order(batch: &[NewTicket]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..batch.len()).collect();
    order.sort_by(|a, b| {
        let ka = batch[*a].idempotency_key.as_ref().map(IdempotencyKey::as_str);
        let kb = batch[*b].idempotency_key.as_ref().map(IdempotencyKey::as_str);
        ka.cmp(&kb)
    });
    order
}

/// How many times a reference is drawn again after a collision before giving up.
pub(super) const REFERENCE_ATTEMPTS: usize = 8;

/// Tickets per multi-row INSERT: 17 parameters each stays under SQLite's 32,766 and PostgreSQL's
/// 65,535 bound parameters per statement.
pub(super) const TICKETS_PER_STATEMENT: usize = 500;
/// Jobs per multi-row INSERT (5 parameters each).
pub(super) const JOBS_PER_STATEMENT: usize = 2_000;

/// Multi-row statements of up to this many rows stay prepared in the connection's statement cache
/// (one per row count, at most this many per table); larger ones, rare and costly to keep, are
/// prepared for each use. Preparing a statement of dozens of rows costs about as much as running it.
const CACHED_STATEMENT_ROWS: usize = 64;

/// Statement cache size per connection: the multi-row statements of both tables and the rest.
pub(crate) const STATEMENT_CACHE_CAPACITY: usize = 2 * CACHED_STATEMENT_ROWS + 64;

pub(super) fn cache_statement(rows: usize) -> bool {
    rows <= CACHED_STATEMENT_ROWS
}

/// Where one ticket of a batch ended up.
pub(super) enum Placed {
    /// Inserted now with this id and reference (the reference may have been drawn again).
    New { id: i64, reference: String },
    /// Not inserted: its idempotency key was seen before.
    Existing(InsertOutcome),
}

impl NewTicket {
    fn created(&self, reference: String) -> InsertOutcome {
        InsertOutcome::Created(TicketSummary {
            reference,
            picked_type: self.classification.picked,
            filed_type: self.classification.filed_as,
            unsupported: self.classification.unsupported,
        })
    }
}

/// Matches the rows a multi-row INSERT returned to the tickets of `chunk`. Rows come back in no
/// promised order, so they are matched by reference; a reference is claimed once, so that of two
/// tickets drawing the same reference only the one actually inserted gets the row.
pub(super) fn claim_inserted(
    batch: &[NewTicket],
    chunk: &[usize],
    inserted: Vec<(i64, String)>,
) -> Vec<(usize, Option<i64>)> {
    let mut ids: std::collections::HashMap<String, i64> = inserted.into_iter().map(|(id, r)| (r, id)).collect();
    chunk
        .iter()
        .map(|&i| (i, ids.remove(batch[i].reference.as_str())))
        .collect()
}

/// The batch algorithm both backends share: a multi-row INSERT per chunk for the common case, one
/// statement per ticket for the rest (repeats, conflicts, reference collisions), then the jobs of
/// every new ticket in multi-row INSERTs. All on one transaction supplied by the backend.
#[async_trait]
pub(super) trait BatchWriter {
    /// Inserts the chunk, skipping conflicts; returns `(id, reference)` of the rows inserted.
    async fn insert_many(&mut self, batch: &[NewTicket], chunk: &[usize]) -> Result<Vec<(i64, String)>, StoreError>;
    /// Places one ticket the fast path skipped.
    async fn insert_one(&mut self, ticket: &NewTicket) -> Result<Placed, StoreError>;
    /// Inserts pending jobs `(ticket id, kind, created at)`.
    async fn insert_jobs(&mut self, jobs: &[(i64, JobKind, DateTime<Utc>)]) -> Result<(), StoreError>;
}

pub(super) async fn write_batch<W: BatchWriter + Send>(
    w: &mut W,
    batch: &[NewTicket],
) -> Result<Vec<InsertOutcome>, StoreError> {
    let order = write_order(batch);
    let mut outcomes: Vec<Option<InsertOutcome>> = vec![None; batch.len()];
    let mut jobs = Vec::with_capacity(batch.len() * 2);
    for chunk in order.chunks(TICKETS_PER_STATEMENT) {
        let inserted = w.insert_many(batch, chunk).await?;
        for (i, id) in claim_inserted(batch, chunk, inserted) {
            if let Some(id) = id {
                let t = &batch[i];
                jobs.extend(t.jobs.iter().map(|k| (id, *k, t.created_at)));
                outcomes[i] = Some(t.created(t.reference.to_string()));
            }
        }
    }
    for &i in &order {
        if outcomes[i].is_none() {
            let t = &batch[i];
            outcomes[i] = Some(match w.insert_one(t).await? {
                Placed::New { id, reference } => {
                    jobs.extend(t.jobs.iter().map(|k| (id, *k, t.created_at)));
                    t.created(reference)
                }
                Placed::Existing(outcome) => outcome,
            });
        }
    }
    for chunk in jobs.chunks(JOBS_PER_STATEMENT) {
        w.insert_jobs(chunk).await?;
    }
    Ok(outcomes.into_iter().flatten().collect())
}
