//! AnyTLS operations the scenarios share: a per-executor pool of sessions,
//! connecting, opening a stream (and waiting for its SYNACK), one
//! request/response exchange on a stream, and telling why a stream ended early.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::rc::Rc;
use std::time::{Duration, Instant};

use anytls::client::{ClientConfig, ClientSession, ClientStream, StreamError};
use anytls::plumbing::Event;
use anytls::proto::Address;
use futures_lite::future;

use super::Timings;
use crate::stats::{Failed, Failure};

/// `fut`, or `None` once `stop` is set.
pub async fn unless<T>(stop: &Event, fut: impl Future<Output = T>) -> Option<T> {
    future::or(async { Some(fut.await) }, async {
        stop.wait().await;
        None
    })
    .await
}

/// Sessions of one executor, handed out round robin and reconnected when the
/// server has closed them.
pub struct Pool {
    config: ClientConfig,
    slots: Vec<RefCell<Option<Rc<ClientSession>>>>,
    next: Cell<usize>,
}

impl Pool {
    /// `size` slots, none connected yet.
    pub fn new(config: ClientConfig, size: usize) -> Pool {
        Pool {
            config,
            slots: (0..size.max(1)).map(|_| RefCell::new(None)).collect(),
            next: Cell::new(0),
        }
    }

    /// Connects every slot (failures are returned, the slot stays empty).
    pub async fn fill(&self) -> Vec<Failed> {
        let mut failures = Vec::new();
        for _ in 0..self.slots.len() {
            if let Err(f) = self.get().await {
                failures.push(f);
            }
        }
        failures
    }

    /// The next session, reconnecting it if needed.
    pub async fn get(&self) -> Result<Rc<ClientSession>, Failed> {
        let i = self.next.get();
        self.next.set((i + 1) % self.slots.len());
        if let Some(session) = self.slots[i].borrow().as_ref() {
            if !session.is_closed() {
                return Ok(session.clone());
            }
        }
        let session = Rc::new(connect(&self.config).await?);
        *self.slots[i].borrow_mut() = Some(session.clone());
        Ok(session)
    }
}

/// Time left until `deadline` (zero once passed): set-up phases share one
/// --op-timeout instead of one per connection, so they stay bounded.
pub fn left(deadline: Instant) -> Duration {
    deadline.saturating_duration_since(Instant::now())
}

/// A new session (TCP + TLS + preamble).
pub async fn connect(config: &ClientConfig) -> Result<ClientSession, Failed> {
    ClientSession::connect(config)
        .await
        .map_err(|e| Failed::new(Failure::Connect, e))
}

/// Why a stream ended before it should have.
pub async fn stream_ended(session: &ClientSession, stream: &ClientStream, what: String) -> Failed {
    if session.is_closed() {
        let why = session
            .alert()
            .map_or("session closed by the server".to_owned(), |a| {
                format!("alert: {a}")
            });
        return Failed::new(Failure::SessionClosed, why);
    }
    match stream.established().await {
        Err(StreamError::Refused(text)) => Failed::new(Failure::Refused, text),
        Err(StreamError::SessionClosed | StreamError::NotAnswered | StreamError::SynAckTimeout) => {
            Failed::new(Failure::ShortResponse, format!("FIN before SYNACK, {what}"))
        }
        Ok(()) => Failed::new(Failure::ShortResponse, format!("FIN after {what}")),
    }
}

/// Opens a stream to `target`, sends `request`, reads `response` bytes; times
/// from `t0`.
pub async fn exchange(
    session: &ClientSession,
    target: &Address,
    request: &[u8],
    response: usize,
    t0: Instant,
) -> Result<Timings, Failed> {
    let stream = session
        .open_stream(target)
        .map_err(|e| Failed::new(Failure::SessionClosed, e))?;
    request_response(session, &stream, request, response, t0).await
}

/// Opens a stream to `target` and waits for its SYNACK (the server reached the
/// target); the stream and the time from `t0` to the SYNACK.
pub async fn open_established(
    session: &ClientSession,
    target: &Address,
    t0: Instant,
) -> Result<(ClientStream, Duration), Failed> {
    let stream = session
        .open_stream(target)
        .map_err(|e| Failed::new(Failure::SessionClosed, e))?;
    match stream.established().await {
        Ok(()) => Ok((stream, t0.elapsed())),
        Err(StreamError::Refused(text)) => Err(Failed::new(Failure::Refused, text)),
        Err(StreamError::SessionClosed | StreamError::NotAnswered | StreamError::SynAckTimeout) => {
            let why = session.alert().map_or_else(
                || "session closed before SYNACK".to_owned(),
                |a| format!("alert: {a}"),
            );
            Err(Failed::new(Failure::SessionClosed, why))
        }
    }
}

/// Sends `request` on an open `stream` and reads `response` bytes; times from `t0`.
pub async fn request_response(
    session: &ClientSession,
    stream: &ClientStream,
    request: &[u8],
    response: usize,
    t0: Instant,
) -> Result<Timings, Failed> {
    if let Err(e) = stream.write_all(request).await {
        return Err(stream_ended(session, stream, format!("write failed: {e}")).await);
    }
    let mut buf = vec![0u8; response.min(64 * 1024)];
    let mut got = 0;
    let mut first_byte = None;
    while got < response {
        let n = stream.read(&mut buf).await;
        if n == 0 {
            let what = format!("{got} of {response} response bytes");
            return Err(stream_ended(session, stream, what).await);
        }
        first_byte.get_or_insert_with(|| t0.elapsed());
        got += n;
    }
    Ok(Timings {
        first_byte,
        complete: Some(t0.elapsed()),
        ..Timings::default()
    })
}
