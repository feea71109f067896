//! Deadlines for every request on a connection, not only its first.
//!
//! actix-http times out the head of a connection's first request only: on a kept-alive connection
//! a second request's head sent a byte a second, or a body trickled to an endpoint that does not
//! read it (the server drains it after answering), would hold the connection for ever. Each
//! connection's stream is therefore wrapped in a [`DeadlineStream`], which shares a
//! [`ConnState`] with the request middleware [`track_handler`]:
//!
//! - *receiving*: from the first byte of a request until its handler starts, the client has
//!   `limit` (`server.request_timeout_seconds`); the handler itself bounds the body it reads
//!   ([`super::body::read_limited`]);
//! - *handling*: while a handler runs, no deadline: a slow answer is the service's, not the client's;
//! - *idle*: after a handler, bytes that are not a new request (a body nobody reads) or silence on
//!   a connection actix does not close (it waits for such a body) are bounded too: the next byte
//!   starts a new *receiving* deadline, and silence ends at `idle_limit`, which is longer than
//!   the keep-alive timeout that closes ordinary idle connections first.
//!
//! A deadline that passes fails the connection's next read, or its pending one when the timer
//! fires, and actix closes the connection.

use std::cell::Cell;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::Duration;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::middleware::Next;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// A request is arriving; it began at this time.
    Receiving(Instant),
    /// No request is arriving or being handled since this time.
    Idle(Instant),
}

/// What a connection's stream and its requests' middleware share (one worker thread owns both).
#[derive(Debug)]
pub struct ConnState {
    /// Handlers running for this connection's requests.
    handling: Cell<u32>,
    phase: Cell<Phase>,
}

/// The connection's shared state, as a request finds it in its connection data.
#[derive(Debug, Clone)]
pub struct ConnHandle(Rc<ConnState>);

/// How long a client may take; see the module documentation.
#[derive(Debug, Clone, Copy)]
pub struct Deadlines {
    pub limit: Duration,
    pub idle_limit: Duration,
}

/// A connection's stream under [`Deadlines`].
pub struct DeadlineStream<T> {
    io: T,
    state: Rc<ConnState>,
    deadlines: Deadlines,
    timer: Pin<Box<Sleep>>,
    armed_for: Option<Instant>,
    /// Since when the client has not taken what the server writes (it does not read).
    write_stalled_since: Option<Instant>,
    write_timer: Pin<Box<Sleep>>,
    write_armed_for: Option<Instant>,
}

impl<T> DeadlineStream<T> {
    pub fn new(io: T, deadlines: Deadlines) -> Self {
        let now = Instant::now();
        DeadlineStream {
            io,
            state: Rc::new(ConnState {
                handling: Cell::new(0),
                phase: Cell::new(Phase::Idle(now)),
            }),
            deadlines,
            timer: Box::pin(tokio::time::sleep_until(now + deadlines.idle_limit)),
            armed_for: None,
            write_stalled_since: None,
            write_timer: Box::pin(tokio::time::sleep_until(now + deadlines.limit)),
            write_armed_for: None,
        }
    }

    /// The handle the request middleware uses (stored in each request's connection data).
    pub fn handle(&self) -> ConnHandle {
        ConnHandle(Rc::clone(&self.state))
    }

    /// When the connection must have made progress by, if anything is expected of the client now.
    fn deadline(&self) -> Option<Instant> {
        if self.state.handling.get() > 0 {
            return None;
        }
        Some(match self.state.phase.get() {
            Phase::Receiving(since) => since + self.deadlines.limit,
            Phase::Idle(since) => since + self.deadlines.idle_limit,
        })
    }

    fn timed_out() -> io::Error {
        io::Error::new(io::ErrorKind::TimedOut, "the client took too long to send its request")
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for DeadlineStream<T> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        match Pin::new(&mut this.io).poll_read(cx, buf) {
            Poll::Ready(Ok(())) if buf.filled().len() > before => {
                let now = Instant::now();
                if this.deadline().is_some_and(|at| now >= at) {
                    return Poll::Ready(Err(Self::timed_out()));
                }
                if matches!(this.state.phase.get(), Phase::Idle(_)) {
                    this.state.phase.set(Phase::Receiving(now));
                }
                Poll::Ready(Ok(()))
            }
            Poll::Pending => {
                let Some(at) = this.deadline() else {
                    return Poll::Pending;
                };
                if this.armed_for != Some(at) {
                    this.timer.as_mut().reset(at);
                    this.armed_for = Some(at);
                }
                match this.timer.as_mut().poll(cx) {
                    Poll::Ready(()) => Poll::Ready(Err(Self::timed_out())),
                    Poll::Pending => Poll::Pending,
                }
            }
            other => other,
        }
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for DeadlineStream<T> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let res = Pin::new(&mut this.io).poll_write(cx, data);
        this.wrote(&res);
        this.stall_deadline(cx, res)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let res = Pin::new(&mut this.io).poll_write_vectored(cx, bufs);
        this.wrote(&res);
        this.stall_deadline(cx, res)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let res = Pin::new(&mut this.io).poll_flush(cx);
        this.stall_deadline(cx, res)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

impl<T> DeadlineStream<T> {
    /// A client that takes nothing of what is written (it does not read, so the socket's buffer
    /// stays full) has `limit` to start taking it again; then the write fails. Without this, a
    /// client that pipelines requests and never reads their answers would hold the connection
    /// once actix stops reading from it.
    fn stall_deadline<R>(&mut self, cx: &mut Context<'_>, res: Poll<io::Result<R>>) -> Poll<io::Result<R>> {
        if res.is_ready() {
            self.write_stalled_since = None;
            return res;
        }
        let since = *self.write_stalled_since.get_or_insert_with(Instant::now);
        let at = since + self.deadlines.limit;
        if self.write_armed_for != Some(at) {
            self.write_timer.as_mut().reset(at);
            self.write_armed_for = Some(at);
        }
        match self.write_timer.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the client took nothing of the answer in time",
            ))),
            Poll::Pending => Poll::Pending,
        }
    }

    /// An answer written while no handler runs (actix's own error answers, a response after its
    /// handler) ends what the client was sending: what it sends next is timed afresh.
    fn wrote(&self, res: &Poll<io::Result<usize>>) {
        if matches!(res, Poll::Ready(Ok(n)) if *n > 0) && self.state.handling.get() == 0 {
            self.state.phase.set(Phase::Idle(Instant::now()));
        }
    }
}

/// Marks a request's handler as running on its connection (no client deadline meanwhile) and,
/// when it ends (or is dropped), the connection as idle again.
struct Handling(Rc<ConnState>);

impl Drop for Handling {
    fn drop(&mut self) {
        self.0.handling.set(self.0.handling.get().saturating_sub(1));
        self.0.phase.set(Phase::Idle(Instant::now()));
    }
}

/// Middleware: tells the connection when a request's handler starts and ends.
pub async fn track_handler<B: MessageBody>(
    req: ServiceRequest,
    next: Next<B>,
) -> Result<ServiceResponse<B>, actix_web::Error> {
    let _handling = req.request().conn_data::<ConnHandle>().map(|h| {
        h.0.handling.set(h.0.handling.get() + 1);
        Handling(Rc::clone(&h.0))
    });
    next.call(req).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    const D: Deadlines = Deadlines {
        limit: Duration::from_millis(400),
        idle_limit: Duration::from_millis(600),
    };

    #[tokio::test]
    async fn a_request_that_keeps_arriving_is_cut_off_at_its_deadline() {
        let (mut client, server) = tokio::io::duplex(64);
        let mut s = DeadlineStream::new(server, D);
        let mut buf = [0u8; 16];
        let started = Instant::now();
        let mut outcome = Ok(0);
        // A byte every 50 ms: reads succeed until the request has had its 400 ms.
        while started.elapsed() < Duration::from_secs(5) {
            client.write_all(b"G").await.unwrap();
            outcome = s.read(&mut buf).await;
            if outcome.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(outcome.unwrap_err().kind(), io::ErrorKind::TimedOut);
        let took = started.elapsed();
        assert!(took >= D.limit && took < Duration::from_secs(2), "{took:?}");
    }

    #[tokio::test]
    async fn a_client_that_reads_nothing_of_the_answer_is_cut_off() {
        let (_client, server) = tokio::io::duplex(64);
        let mut s = DeadlineStream::new(server, D);
        let started = Instant::now();
        // The client never reads: past 64 bytes every write waits, until the deadline.
        let err = loop {
            if let Err(e) = s.write_all(&[b'x'; 1024]).await {
                break e;
            }
        };
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        let took = started.elapsed();
        assert!(took >= D.limit && took < Duration::from_secs(2), "{took:?}");
    }

    #[tokio::test]
    async fn a_silent_client_is_cut_off_but_a_running_handler_is_not() {
        let (mut client, server) = tokio::io::duplex(64);
        let mut s = DeadlineStream::new(server, D);
        let handle = s.handle();
        let mut buf = [0u8; 16];
        client.write_all(b"GET").await.unwrap();
        assert_eq!(s.read(&mut buf).await.unwrap(), 3);
        // The head is complete and a handler runs for longer than any deadline: the connection waits.
        handle.0.handling.set(1);
        let waiting = tokio::time::timeout(Duration::from_millis(1500), s.read(&mut buf)).await;
        assert!(waiting.is_err(), "no deadline while a handler runs");
        // The handler ends; the answer is written; a client that then says nothing is idle.
        drop(Handling(Rc::clone(&handle.0)));
        s.write_all(b"HTTP/1.1 200 OK\r\n\r\n").await.unwrap();
        let started = Instant::now();
        assert_eq!(s.read(&mut buf).await.unwrap_err().kind(), io::ErrorKind::TimedOut);
        let took = started.elapsed();
        assert!(took >= D.idle_limit && took < Duration::from_secs(2), "{took:?}");
    }
}
