//! A bounded, executor-local byte pipe: one producer, one consumer.
//!
//! The producer's bytes are always accepted (so a frame's data never has to outlive
//! the read buffer it came from), but [`Pipe::push`] then waits until the consumer
//! has brought the backlog under the limit. A pipe therefore holds at most
//! `limit + one push` bytes, and a slow consumer slows its producer instead of
//! growing memory.

use std::cell::RefCell;
use std::future::poll_fn;
use std::task::{Poll, Waker};

use thiserror::Error;

/// The consumer has gone; pushed bytes are discarded.
#[derive(Debug, Error, PartialEq, Eq)]
#[error("pipe closed")]
pub struct PipeClosed;

#[derive(Default)]
struct State {
    data: Vec<u8>,
    read_pos: usize,
    /// The producer will send no more (FIN); the consumer drains, then sees EOF.
    finished: bool,
    /// Either side gave up: pushes fail, reads see EOF at once.
    aborted: bool,
    consumer: Option<Waker>,
    producer: Option<Waker>,
    consumed: u64,
}

impl State {
    fn buffered(&self) -> usize {
        self.data.len() - self.read_pos
    }
}

/// See the module documentation.
pub struct Pipe {
    limit: usize,
    state: RefCell<State>,
}

impl Pipe {
    /// A pipe whose producer waits while more than `limit` bytes are buffered.
    pub fn new(limit: usize) -> Pipe {
        Pipe {
            limit,
            state: RefCell::default(),
        }
    }

    /// Appends `bytes`, then waits until the backlog is at most the limit.
    pub async fn push(&self, bytes: &[u8]) -> Result<(), PipeClosed> {
        if self.append(bytes)? {
            self.wait_room().await?;
        }
        Ok(())
    }

    /// Appends `bytes` without waiting; `Ok(true)` if the backlog is now over the
    /// limit and the producer should [`Pipe::wait_room`] before pushing more.
    pub fn append(&self, bytes: &[u8]) -> Result<bool, PipeClosed> {
        let mut state = self.state.borrow_mut();
        if state.aborted || state.finished {
            return Err(PipeClosed);
        }
        state.data.extend_from_slice(bytes);
        if let Some(waker) = state.consumer.take() {
            waker.wake();
        }
        Ok(state.buffered() > self.limit)
    }

    /// Waits until the backlog is at most the limit.
    pub async fn wait_room(&self) -> Result<(), PipeClosed> {
        poll_fn(|cx| {
            let mut state = self.state.borrow_mut();
            if state.aborted {
                Poll::Ready(Err(PipeClosed))
            } else if state.buffered() <= self.limit {
                Poll::Ready(Ok(()))
            } else {
                state.producer = Some(cx.waker().clone());
                Poll::Pending
            }
        })
        .await
    }

    /// Bytes the consumer has taken since the pipe was made.
    pub fn consumed(&self) -> u64 {
        self.state.borrow().consumed
    }

    /// No more bytes will be pushed; the consumer sees EOF once it has drained the rest.
    pub fn finish(&self) {
        let mut state = self.state.borrow_mut();
        state.finished = true;
        if let Some(waker) = state.consumer.take() {
            waker.wake();
        }
    }

    /// Discards everything and fails both sides from now on.
    pub fn abort(&self) {
        let mut state = self.state.borrow_mut();
        state.aborted = true;
        state.data = Vec::new();
        state.read_pos = 0;
        if let Some(waker) = state.consumer.take() {
            waker.wake();
        }
        if let Some(waker) = state.producer.take() {
            waker.wake();
        }
    }

    /// Whether nothing waits for the consumer and more may be appended.
    pub fn is_empty_and_open(&self) -> bool {
        let state = self.state.borrow();
        state.buffered() == 0 && !state.aborted && !state.finished
    }

    /// Bytes waiting for the consumer.
    pub fn buffered(&self) -> usize {
        self.state.borrow().buffered()
    }

    fn poll_ready(&self, cx: &mut std::task::Context<'_>) -> Poll<bool> {
        let mut state = self.state.borrow_mut();
        if state.aborted {
            Poll::Ready(false)
        } else if state.buffered() > 0 {
            Poll::Ready(true)
        } else if state.finished {
            Poll::Ready(false)
        } else {
            state.consumer = Some(cx.waker().clone());
            Poll::Pending
        }
    }

    fn after_consuming(state: &mut State) {
        if state.buffered() == 0 {
            state.data.clear();
            state.read_pos = 0;
        }
        if let Some(waker) = state.producer.take() {
            waker.wake();
        }
    }

    /// Moves everything buffered into `out` (replacing its contents, reusing its
    /// allocation); `false` at end of stream.
    pub async fn take_all(&self, out: &mut Vec<u8>) -> bool {
        if !poll_fn(|cx| self.poll_ready(cx)).await {
            return false;
        }
        let mut state = self.state.borrow_mut();
        out.clear();
        state.consumed += state.buffered() as u64;
        if state.read_pos == 0 {
            std::mem::swap(out, &mut state.data);
        } else {
            out.extend_from_slice(&state.data[state.read_pos..]);
            state.read_pos = state.data.len();
        }
        Self::after_consuming(&mut state);
        true
    }

    /// Copies up to `buf.len()` bytes into `buf`; 0 at end of stream.
    pub async fn read(&self, buf: &mut [u8]) -> usize {
        if buf.is_empty() || !poll_fn(|cx| self.poll_ready(cx)).await {
            return 0;
        }
        let mut state = self.state.borrow_mut();
        let start = state.read_pos;
        let n = buf.len().min(state.buffered());
        buf[..n].copy_from_slice(&state.data[start..start + n]);
        state.read_pos += n;
        state.consumed += n as u64;
        Self::after_consuming(&mut state);
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_lite::future::{block_on, poll_once};
    use std::pin::pin;

    #[test]
    fn bytes_flow_and_eof_after_finish() {
        let pipe = Pipe::new(16);
        block_on(async {
            pipe.push(b"hello ").await.unwrap();
            pipe.push(b"world").await.unwrap();
            pipe.finish();
            let mut buf = [0u8; 4];
            assert_eq!(pipe.read(&mut buf).await, 4);
            assert_eq!(&buf, b"hell");
            let mut rest = Vec::new();
            assert!(pipe.take_all(&mut rest).await);
            assert_eq!(rest, b"o world");
            assert!(!pipe.take_all(&mut rest).await);
            assert_eq!(pipe.push(b"late").await, Err(PipeClosed));
        });
    }

    #[test]
    fn producer_waits_above_limit_until_drained() {
        let pipe = Pipe::new(8);
        block_on(async {
            let mut push = pin!(pipe.push(&[1u8; 20]));
            assert!(
                poll_once(push.as_mut()).await.is_none(),
                "must wait above limit"
            );
            assert_eq!(pipe.buffered(), 20, "bytes are accepted while waiting");
            let mut buf = [0u8; 15];
            assert_eq!(pipe.read(&mut buf).await, 15);
            assert_eq!(pipe.consumed(), 15);
            assert_eq!(poll_once(push.as_mut()).await, Some(Ok(())));
        });
    }

    #[test]
    fn abort_fails_both_sides() {
        let pipe = Pipe::new(4);
        block_on(async {
            let mut push = pin!(pipe.push(&[0u8; 10]));
            assert!(poll_once(push.as_mut()).await.is_none());
            pipe.abort();
            assert_eq!(poll_once(push.as_mut()).await, Some(Err(PipeClosed)));
            let mut out = Vec::new();
            assert!(!pipe.take_all(&mut out).await);
            assert_eq!(pipe.read(&mut [0u8; 4]).await, 0);
        });
    }

    #[test]
    fn consumer_waits_for_data() {
        let pipe = Pipe::new(4);
        block_on(async {
            let mut buf = [0u8; 4];
            {
                let mut read = pin!(pipe.read(&mut buf));
                assert!(poll_once(read.as_mut()).await.is_none());
                pipe.push(b"ab").await.unwrap();
                assert_eq!(poll_once(read.as_mut()).await, Some(2));
            }
            assert_eq!(&buf[..2], b"ab");
        });
    }
}
