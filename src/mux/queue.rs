//! The session's outgoing frames: a byte queue that coalesces every frame queued
//! while the previous write was in flight into the next single write.
//!
//! Control frames are queued unconditionally (they are tiny and must not wait
//! behind data). Stream data waits while the queue holds more than
//! [`QUEUE_HIGH_WATER`] bytes, so a slow client slows its targets' reads instead of
//! growing the queue.

use std::cell::{Cell, RefCell};
use std::future::poll_fn;
use std::io;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Poll, Waker};
use std::time::Instant;

use futures_lite::{AsyncWrite, AsyncWriteExt};
use rand::rngs::SmallRng;
use rand::SeedableRng;

use super::pipe::PipeClosed;
use crate::proto::frame::{self, Command};
use crate::proto::padding::{self, PaddingScheme};

/// Queued bytes above which stream data waits for the writer.
pub const QUEUE_HIGH_WATER: usize = 512 * 1024;
/// A drained batch buffer larger than this is freed instead of kept for reuse.
const KEEP_BUFFER_CAPACITY: usize = 64 * 1024;

#[derive(Default)]
struct State {
    buf: Vec<u8>,
    closed: bool,
    writer: Option<Waker>,
    waiting_for_room: Vec<Waker>,
}

/// See the module documentation.
#[derive(Default)]
pub struct WriteQueue {
    state: RefCell<State>,
    /// When the batch being written was taken, while a write is in progress.
    writing_since: Cell<Option<Instant>>,
}

impl WriteQueue {
    fn wake_writer(state: &mut State) {
        if let Some(waker) = state.writer.take() {
            waker.wake();
        }
    }

    /// Queues a control frame. Returns `false` once the queue is closed.
    pub fn push_frame(&self, cmd: Command, stream_id: u32, data: &[u8]) -> bool {
        let mut state = self.state.borrow_mut();
        if state.closed {
            return false;
        }
        if frame::encode(cmd, stream_id, data, &mut state.buf).is_err() {
            log::error!("dropping oversized {cmd:?} frame of {} bytes", data.len());
            return true;
        }
        Self::wake_writer(&mut state);
        true
    }

    /// Queues `payload` as PSH frames once the queue has room.
    pub async fn push_data(&self, stream_id: u32, payload: &[u8]) -> Result<(), PipeClosed> {
        poll_fn(|cx| {
            let mut state = self.state.borrow_mut();
            if state.closed {
                Poll::Ready(Err(PipeClosed))
            } else if state.buf.len() < QUEUE_HIGH_WATER {
                frame::encode_push(stream_id, payload, &mut state.buf);
                Self::wake_writer(&mut state);
                Poll::Ready(Ok(()))
            } else {
                // One entry per waiting task, however often it is polled.
                if !state
                    .waiting_for_room
                    .iter()
                    .any(|w| w.will_wake(cx.waker()))
                {
                    state.waiting_for_room.push(cx.waker().clone());
                }
                Poll::Pending
            }
        })
        .await
    }

    /// Accepts no more frames; the writer sends what is queued, then ends.
    pub fn close(&self) {
        let mut state = self.state.borrow_mut();
        state.closed = true;
        Self::wake_writer(&mut state);
        for waker in state.waiting_for_room.drain(..) {
            waker.wake();
        }
    }

    /// Whether [`WriteQueue::close`] was called.
    pub fn is_closed(&self) -> bool {
        self.state.borrow().closed
    }

    /// When the write in progress started, if one is (a stuck peer shows as an old one).
    pub fn write_started(&self) -> Option<Instant> {
        self.writing_since.get()
    }

    /// Bytes waiting for the writer.
    pub fn queued(&self) -> usize {
        self.state.borrow().buf.len()
    }

    /// Waits for queued bytes and swaps them with `spare`; `None` once closed and drained.
    async fn next_batch(&self, mut spare: Vec<u8>) -> Option<Vec<u8>> {
        poll_fn(|cx| {
            let mut state = self.state.borrow_mut();
            if !state.buf.is_empty() {
                spare.clear();
                std::mem::swap(&mut spare, &mut state.buf);
                for waker in state.waiting_for_room.drain(..) {
                    waker.wake();
                }
                Poll::Ready(Some(std::mem::take(&mut spare)))
            } else if state.closed {
                Poll::Ready(None)
            } else {
                state.writer = Some(cx.waker().clone());
                Poll::Pending
            }
        })
        .await
    }
}

/// A padding scheme that can be replaced while sessions use it (UpdatePaddingScheme).
pub type SharedScheme = Rc<RefCell<Arc<PaddingScheme>>>;

/// Shapes the first `stop` writes of a session per its padding scheme.
pub struct Padder {
    scheme: SharedScheme,
    /// Packet 0 is the authentication, so session writes start at 1.
    packet: u32,
    done: bool,
    rng: SmallRng,
}

impl Padder {
    /// A padder for a new session.
    pub fn new(scheme: SharedScheme) -> Padder {
        Padder {
            scheme,
            packet: 0,
            done: false,
            rng: SmallRng::from_entropy(),
        }
    }

    /// The records one session write becomes; `None` once padding has stopped.
    fn shape(&mut self, batch: &[u8]) -> Option<Vec<Vec<u8>>> {
        if self.done {
            return None;
        }
        self.packet += 1;
        let scheme = self.scheme.borrow().clone();
        if self.packet >= scheme.stop() {
            self.done = true;
            return None;
        }
        let steps = scheme.record_sizes(self.packet, &mut self.rng);
        Some(padding::shape(batch, &steps))
    }
}

/// Writes batches from `queue` to `out` until the queue is closed and drained (then
/// closes `out`) or a write fails. Each batch is one write, or with a [`Padder`] the
/// records the padding scheme asks for, each flushed as its own TLS record.
pub async fn write_loop<W: AsyncWrite + Unpin>(
    mut out: W,
    queue: &WriteQueue,
    mut padder: Option<Padder>,
) -> io::Result<()> {
    let mut spare = Vec::new();
    while let Some(mut batch) = queue.next_batch(spare).await {
        queue.writing_since.set(Some(Instant::now()));
        match padder.as_mut().and_then(|p| p.shape(&batch)) {
            Some(records) => {
                for record in records {
                    out.write_all(&record).await?;
                    out.flush().await?;
                }
            }
            None => {
                out.write_all(&batch).await?;
                out.flush().await?;
            }
        }
        queue.writing_since.set(None);
        batch.clear();
        if batch.capacity() > KEEP_BUFFER_CAPACITY {
            batch = Vec::new();
        }
        spare = batch;
    }
    out.close().await
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_lite::future::{block_on, poll_once};
    use std::pin::pin;

    #[test]
    fn frames_queued_together_leave_in_one_write() {
        let queue = WriteQueue::default();
        queue.push_frame(Command::ServerSettings, 0, b"v=2");
        queue.push_frame(Command::SynAck, 1, b"");
        block_on(queue.push_data(1, b"payload")).unwrap();
        queue.close();
        let mut writes = Vec::new();
        struct Recorder<'a>(&'a mut Vec<Vec<u8>>);
        impl AsyncWrite for Recorder<'_> {
            fn poll_write(
                self: std::pin::Pin<&mut Self>,
                _: &mut std::task::Context<'_>,
                buf: &[u8],
            ) -> Poll<io::Result<usize>> {
                self.get_mut().0.push(buf.to_vec());
                Poll::Ready(Ok(buf.len()))
            }
            fn poll_flush(
                self: std::pin::Pin<&mut Self>,
                _: &mut std::task::Context<'_>,
            ) -> Poll<io::Result<()>> {
                Poll::Ready(Ok(()))
            }
            fn poll_close(
                self: std::pin::Pin<&mut Self>,
                _: &mut std::task::Context<'_>,
            ) -> Poll<io::Result<()>> {
                Poll::Ready(Ok(()))
            }
        }
        block_on(write_loop(Recorder(&mut writes), &queue, None)).unwrap();
        assert_eq!(writes.len(), 1);
        assert_eq!(writes[0].len(), 7 + 3 + 7 + 7 + 7);
        assert!(!queue.push_frame(Command::Fin, 1, b""));
    }

    #[test]
    fn data_waits_above_high_water() {
        let queue = WriteQueue::default();
        let big = vec![0u8; 60_000];
        block_on(async {
            while queue.queued() < QUEUE_HIGH_WATER {
                queue.push_data(1, &big).await.unwrap();
            }
            let mut push = pin!(queue.push_data(1, b"more"));
            assert!(poll_once(push.as_mut()).await.is_none());
            let batch = queue.next_batch(Vec::new()).await.unwrap();
            assert!(batch.len() >= QUEUE_HIGH_WATER);
            assert_eq!(poll_once(push.as_mut()).await, Some(Ok(())));
            queue.close();
            assert_eq!(queue.push_data(1, b"x").await, Err(PipeClosed));
        });
    }

    #[test]
    fn padder_shapes_until_stop() {
        let scheme = PaddingScheme::parse(b"stop=3\n1=100-100\n2=50-50").unwrap();
        let mut padder = Padder::new(Rc::new(RefCell::new(Arc::new(scheme))));
        let first = padder.shape(&[1u8; 10]).unwrap();
        assert_eq!(first.iter().map(Vec::len).collect::<Vec<_>>(), vec![100]);
        let second = padder.shape(&[1u8; 80]).unwrap();
        assert_eq!(
            second.iter().map(Vec::len).collect::<Vec<_>>(),
            vec![50, 30]
        );
        assert!(padder.shape(&[1u8; 10]).is_none());
        assert!(padder.shape(&[1u8; 10]).is_none());
    }
}
