//! Group commit: concurrent submissions are gathered into one transaction, so the cost of a durable
//! commit (an fsync) is shared by every ticket waiting at that moment instead of paid by each.
//!
//! A request hands its ticket to a writer task and waits for the outcome; the writer takes whatever
//! has queued up (at most `max_batch`), writes it in one transaction, commits, and answers each
//! waiter. Under light load a batch is one ticket and nothing waits; under heavy load batches grow and
//! throughput follows the commit rate times the batch size.

use std::sync::Arc;

use tokio::sync::{mpsc, oneshot, Notify};
use tokio::task::JoinHandle;

use super::{InsertOutcome, NewTicket, Store, StoreError};

struct Pending {
    ticket: NewTicket,
    reply: oneshot::Sender<Result<InsertOutcome, Arc<StoreError>>>,
}

/// The front door to ticket storage for request handlers.
#[derive(Clone)]
pub struct TicketWriter {
    tx: mpsc::Sender<Pending>,
}

impl TicketWriter {
    /// Starts `writers` writer tasks on the current Tokio runtime. SQLite has one writer at a time
    /// anyway; PostgreSQL gains from a second that builds a batch while the first commits.
    /// `wake` is told after every commit, so delivery workers pick new jobs up at once.
    pub fn spawn(
        store: Arc<dyn Store>,
        max_batch: usize,
        writers: usize,
        wake: Arc<Notify>,
    ) -> (TicketWriter, Vec<JoinHandle<()>>) {
        let (tx, rx) = mpsc::channel::<Pending>(max_batch * 4);
        let rx = Arc::new(tokio::sync::Mutex::new(rx));
        let handles = (0..writers.max(1))
            .map(|_| {
                let rx = Arc::clone(&rx);
                let store = Arc::clone(&store);
                let wake = Arc::clone(&wake);
                tokio::spawn(async move { run(store, rx, max_batch, wake).await })
            })
            .collect();
        (TicketWriter { tx }, handles)
    }

    /// Stores one ticket (or finds its earlier twin) durably; returns when it is committed.
    pub async fn submit(&self, ticket: NewTicket) -> Result<InsertOutcome, Arc<StoreError>> {
        let (reply, answer) = oneshot::channel();
        self.tx
            .send(Pending { ticket, reply })
            .await
            .map_err(|_| Arc::new(StoreError::WriterGone))?;
        answer.await.map_err(|_| Arc::new(StoreError::WriterGone))?
    }
}

async fn run(
    store: Arc<dyn Store>,
    rx: Arc<tokio::sync::Mutex<mpsc::Receiver<Pending>>>,
    max_batch: usize,
    wake: Arc<Notify>,
) {
    let mut batch: Vec<Pending> = Vec::with_capacity(max_batch);
    loop {
        {
            // One writer gathers at a time; the other is committing meanwhile.
            let mut rx = rx.lock().await;
            if rx.recv_many(&mut batch, max_batch).await == 0 {
                return; // every sender is gone: shutting down
            }
        }
        let (tickets, replies): (Vec<NewTicket>, Vec<_>) = batch.drain(..).map(|p| (p.ticket, p.reply)).unzip();
        commit_isolating(store.as_ref(), tickets, replies, &wake).await;
    }
}

type Reply = oneshot::Sender<Result<InsertOutcome, Arc<StoreError>>>;

/// Commits a batch; when the database refuses it for something one ticket holds, the batch is
/// split in halves and each committed on its own, down to the ticket that failed, which alone
/// gets the error: one customer's bad data never fails the others gathered with it. A failure of
/// the database itself (unreachable, timed out) fails the batch whole, without splitting.
async fn commit_isolating(store: &dyn Store, tickets: Vec<NewTicket>, replies: Vec<Reply>, wake: &Notify) {
    let mut work = vec![(tickets, replies)];
    while let Some((tickets, mut replies)) = work.pop() {
        let started = std::time::Instant::now();
        match store.insert_tickets(&tickets).await {
            Ok(outcomes) => {
                wake.notify_one();
                tracing::debug!(
                    size = tickets.len(),
                    elapsed_us = started.elapsed().as_micros() as u64,
                    "batch committed"
                );
                for (reply, outcome) in replies.into_iter().zip(outcomes) {
                    // A waiter that went away (client disconnected) still has its ticket stored.
                    let _ = reply.send(Ok(outcome));
                }
            }
            Err(e) if tickets.len() > 1 && e.is_refused_content() => {
                tracing::warn!(size = tickets.len(), error = %e.for_log(), "the database refused a batch of tickets; storing its halves apart");
                let mut first = tickets;
                let second = first.split_off(first.len() / 2);
                let second_replies = replies.split_off(first.len());
                work.push((second, second_replies));
                work.push((first, replies));
            }
            Err(e) => {
                tracing::error!(size = tickets.len(), error = %e.for_log(), "storing tickets failed; none of them was stored");
                let e = Arc::new(e);
                for reply in replies {
                    let _ = reply.send(Err(Arc::clone(&e)));
                }
            }
        }
    }
}
