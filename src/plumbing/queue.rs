//! The session's outgoing frames: an ordered queue of byte chunks that the writer
//! takes all at once and hands to TLS as one vectored write, so every frame queued
//! while the previous write was in flight leaves in the next one.
//!
//! Stream data is queued without being copied: a stream reads its target's bytes
//! straight into a pooled frame buffer behind a header slot
//! ([`WriteQueue::push_frame_buffer`]), and that buffer is what TLS encrypts from.
//! Control frames are tiny and are gathered into small chunks, in order with the
//! data. Control frames are queued unconditionally (they must not wait behind
//! data); stream data waits while the queue holds more than [`QUEUE_HIGH_WATER`]
//! bytes, so a slow client slows its targets' reads instead of growing the queue.
//! Control frames are bounded the other way: their bytes queued or in the write
//! under way are counted, and the reader that makes them (the session answering
//! the client's frames) waits in [`WriteQueue::wait_control_room`] while they
//! pass [`CONTROL_HIGH_WATER`], so a client that sends frames needing an answer
//! and never reads the answers cannot grow the queue either.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::future::poll_fn;
use std::io::{self, IoSlice};
use std::task::{Poll, Waker};
use std::time::Instant;

use futures_lite::{AsyncWrite, AsyncWriteExt};

use super::buffers::{self, FrameBuffer, FRAME_PAYLOAD};
use super::padder::Padder;
use super::pipe::PipeClosed;
use crate::proto::frame::{self, Command, HEADER_LEN};

/// Queued bytes above which stream data waits for the writer.
pub const QUEUE_HIGH_WATER: usize = 256 * 1024;
/// Control-frame bytes (queued plus in the write under way) above which whoever
/// makes them waits for the writer.
pub const CONTROL_HIGH_WATER: usize = 64 * 1024;
/// Capacity of a chunk that gathers control frames.
const CONTROL_CHUNK: usize = 512;
/// Slices handed to TLS in one vectored write.
const MAX_SLICES: usize = 16;

/// Whole frames in `bytes[..len]`.
struct Chunk {
    bytes: Vec<u8>,
    len: usize,
    /// Control frames may still be appended.
    control: bool,
}

impl Chunk {
    fn filled(&self) -> &[u8] {
        &self.bytes[..self.len]
    }
}

#[derive(Default)]
struct State {
    chunks: VecDeque<Chunk>,
    queued: usize,
    /// Bytes of control frames in `chunks`.
    control_queued: usize,
    /// Bytes of control frames in the batch being written.
    control_in_flight: usize,
    closed: bool,
    writer: Option<Waker>,
    waiting_for_room: Vec<Waker>,
    /// The task waiting in [`WriteQueue::wait_control_room`].
    waiting_for_control_room: Option<Waker>,
}

impl State {
    fn wake_writer(&mut self) {
        if let Some(waker) = self.writer.take() {
            waker.wake();
        }
    }

    /// Appends a control frame to the last chunk when it has room, else to a new one.
    fn push_control(&mut self, cmd: Command, stream_id: u32, data: &[u8]) -> bool {
        let wire_len = HEADER_LEN + data.len();
        let chunk = match self.chunks.back_mut() {
            Some(last) if last.control && last.len + wire_len <= last.bytes.capacity() => last,
            _ => {
                self.chunks.push_back(Chunk {
                    bytes: Vec::with_capacity(wire_len.max(CONTROL_CHUNK)),
                    len: 0,
                    control: true,
                });
                self.chunks.back_mut().expect("just pushed")
            }
        };
        if frame::encode(cmd, stream_id, data, &mut chunk.bytes).is_err() {
            return false;
        }
        chunk.len = chunk.bytes.len();
        self.queued += wire_len;
        self.control_queued += wire_len;
        true
    }

    fn control_pending(&self) -> usize {
        self.control_queued + self.control_in_flight
    }
}

/// See the module documentation.
#[derive(Default)]
pub struct WriteQueue {
    state: RefCell<State>,
    /// When the batch being written was taken, while a write is in progress.
    writing_since: Cell<Option<Instant>>,
}

impl WriteQueue {
    /// Queues a control frame. Returns `false` once the queue is closed.
    pub fn push_frame(&self, cmd: Command, stream_id: u32, data: &[u8]) -> bool {
        let mut state = self.state.borrow_mut();
        if state.closed {
            return false;
        }
        if !state.push_control(cmd, stream_id, data) {
            log::error!("dropping oversized {cmd:?} frame of {} bytes", data.len());
            return true;
        }
        state.wake_writer();
        true
    }

    /// Waits while the control frames queued or being written hold more than
    /// [`CONTROL_HIGH_WATER`] bytes (returns at once when closed).
    pub async fn wait_control_room(&self) {
        poll_fn(|cx| {
            let mut state = self.state.borrow_mut();
            if state.closed || state.control_pending() <= CONTROL_HIGH_WATER {
                Poll::Ready(())
            } else {
                state.waiting_for_control_room = Some(cx.waker().clone());
                Poll::Pending
            }
        })
        .await
    }

    /// Whether [`WriteQueue::wait_control_room`] would wait now.
    pub fn control_over_high_water(&self) -> bool {
        self.state.borrow().control_pending() > CONTROL_HIGH_WATER
    }

    /// Waits until the queue has room for stream data (or is closed).
    fn poll_room(&self, cx: &mut std::task::Context<'_>) -> Poll<Result<(), PipeClosed>> {
        let mut state = self.state.borrow_mut();
        if state.closed {
            Poll::Ready(Err(PipeClosed))
        } else if state.queued < QUEUE_HIGH_WATER {
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
    }

    /// Queues `payload` as PSH frames (copied into pooled frame buffers) once the
    /// queue has room.
    pub async fn push_data(&self, stream_id: u32, payload: &[u8]) -> Result<(), PipeClosed> {
        poll_fn(|cx| self.poll_room(cx)).await?;
        let mut state = self.state.borrow_mut();
        for piece in payload.chunks(FRAME_PAYLOAD) {
            let mut bytes = buffers::take_frame_buffer();
            let len = HEADER_LEN + piece.len();
            bytes[..HEADER_LEN].copy_from_slice(&frame::header(
                Command::Push,
                stream_id,
                piece.len() as u16,
            ));
            bytes[HEADER_LEN..len].copy_from_slice(piece);
            state.queued += len;
            state.chunks.push_back(Chunk {
                bytes,
                len,
                control: false,
            });
        }
        state.wake_writer();
        Ok(())
    }

    /// Queues one PSH frame of the first `len` bytes the caller read into
    /// [`FrameBuffer::payload_mut`], once the queue has room. The buffer is the
    /// frame: nothing is copied.
    pub async fn push_frame_buffer(
        &self,
        stream_id: u32,
        buf: FrameBuffer,
        len: usize,
    ) -> Result<(), PipeClosed> {
        assert!(
            len <= FRAME_PAYLOAD,
            "a frame buffer holds one record's worth"
        );
        poll_fn(|cx| self.poll_room(cx)).await?;
        let mut buf = buf.into_vec();
        buf[..HEADER_LEN].copy_from_slice(&frame::header(Command::Push, stream_id, len as u16));
        let mut state = self.state.borrow_mut();
        state.queued += HEADER_LEN + len;
        state.chunks.push_back(Chunk {
            bytes: buf,
            len: HEADER_LEN + len,
            control: false,
        });
        state.wake_writer();
        Ok(())
    }

    /// Accepts no more frames; the writer sends what is queued, then ends.
    pub fn close(&self) {
        let mut state = self.state.borrow_mut();
        state.closed = true;
        state.wake_writer();
        for waker in state.waiting_for_room.drain(..) {
            waker.wake();
        }
        if let Some(waker) = state.waiting_for_control_room.take() {
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
        self.state.borrow().queued
    }

    /// Waits for queued chunks and swaps them with `spare` (empty); `None` once
    /// closed and drained.
    async fn next_batch(&self, mut spare: VecDeque<Chunk>) -> Option<VecDeque<Chunk>> {
        poll_fn(|cx| {
            let mut state = self.state.borrow_mut();
            if !state.chunks.is_empty() {
                std::mem::swap(&mut spare, &mut state.chunks);
                state.queued = 0;
                state.control_in_flight = std::mem::take(&mut state.control_queued);
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

    /// The batch taken by [`WriteQueue::next_batch`] was written.
    fn batch_written(&self) {
        let mut state = self.state.borrow_mut();
        state.control_in_flight = 0;
        if state.control_pending() <= CONTROL_HIGH_WATER {
            if let Some(waker) = state.waiting_for_control_room.take() {
                waker.wake();
            }
        }
    }
}

/// Writes batches from `queue` to `out` until the queue is closed and drained (then
/// closes `out`) or a write fails. Each batch is one vectored write, or while a
/// [`Padder`] is shaping, the records it asks for, each flushed as its own TLS
/// record.
pub async fn write_loop<W: AsyncWrite + Unpin>(
    mut out: W,
    queue: &WriteQueue,
    mut shaper: Option<&mut Padder>,
) -> io::Result<()> {
    let mut spare = VecDeque::new();
    let mut joined = Vec::new();
    while let Some(mut batch) = queue.next_batch(spare).await {
        queue.writing_since.set(Some(Instant::now()));
        match shaper.as_mut() {
            Some(active) => {
                joined.clear();
                for chunk in &batch {
                    joined.extend_from_slice(chunk.filled());
                }
                match active.shape(&joined) {
                    Some(records) => {
                        for record in records {
                            out.write_all(&record).await?;
                            out.flush().await?;
                        }
                    }
                    None => {
                        shaper = None;
                        out.write_all(&joined).await?;
                        out.flush().await?;
                    }
                }
            }
            None => {
                write_chunks(&mut out, &batch).await?;
                out.flush().await?;
            }
        }
        queue.writing_since.set(None);
        queue.batch_written();
        for chunk in batch.drain(..) {
            buffers::give_frame_buffer(chunk.bytes);
        }
        spare = batch;
    }
    out.close().await
}

/// Writes every chunk of `batch`, up to [`MAX_SLICES`] at a time per vectored write.
async fn write_chunks<W: AsyncWrite + Unpin>(
    out: &mut W,
    batch: &VecDeque<Chunk>,
) -> io::Result<()> {
    let mut chunks = batch.iter();
    let mut slices = [IoSlice::new(&[]); MAX_SLICES];
    loop {
        let mut count = 0;
        for (slot, chunk) in slices.iter_mut().zip(chunks.by_ref()) {
            *slot = IoSlice::new(chunk.filled());
            count += 1;
        }
        if count == 0 {
            return Ok(());
        }
        let mut pending = &mut slices[..count];
        while !pending.is_empty() {
            let written = out.write_vectored(pending).await?;
            if written == 0 {
                return Err(io::ErrorKind::WriteZero.into());
            }
            IoSlice::advance_slices(&mut pending, written);
        }
    }
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
            fn poll_write_vectored(
                self: std::pin::Pin<&mut Self>,
                _: &mut std::task::Context<'_>,
                bufs: &[IoSlice<'_>],
            ) -> Poll<io::Result<usize>> {
                let joined: Vec<u8> = bufs.iter().flat_map(|b| b.iter().copied()).collect();
                let len = joined.len();
                self.get_mut().0.push(joined);
                Poll::Ready(Ok(len))
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
    fn frame_buffers_are_queued_without_a_copy_in_order() {
        let queue = WriteQueue::default();
        let mut buf = FrameBuffer::new();
        buf.payload_mut()[..5].copy_from_slice(b"hello");
        let ptr = buf.payload_mut().as_ptr().wrapping_sub(HEADER_LEN);
        queue.push_frame(Command::SynAck, 3, b"");
        block_on(queue.push_frame_buffer(3, buf, 5)).unwrap();
        queue.push_frame(Command::Fin, 3, b"");
        assert_eq!(queue.queued(), 3 * HEADER_LEN + 5);
        let batch = block_on(queue.next_batch(VecDeque::new())).unwrap();
        assert_eq!(batch.len(), 3, "control, data, control");
        assert_eq!(
            batch[1].bytes.as_ptr(),
            ptr,
            "the stream's buffer is the frame"
        );
        let wire: Vec<u8> = batch.iter().flat_map(|c| c.filled().to_vec()).collect();
        let mut rest = &wire[..];
        let mut seen = Vec::new();
        while let Some(f) = frame::decode(rest) {
            seen.push((f.cmd, f.stream_id, f.data.to_vec()));
            rest = &rest[f.wire_len()..];
        }
        assert_eq!(
            seen,
            vec![
                (Command::SynAck, 3, vec![]),
                (Command::Push, 3, b"hello".to_vec()),
                (Command::Fin, 3, vec![]),
            ]
        );
        queue.close();
        let refused = FrameBuffer::new();
        assert_eq!(
            block_on(queue.push_frame_buffer(3, refused, 1)),
            Err(PipeClosed)
        );
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
            let batch = queue.next_batch(VecDeque::new()).await.unwrap();
            assert!(batch.iter().map(|c| c.len).sum::<usize>() >= QUEUE_HIGH_WATER);
            assert_eq!(poll_once(push.as_mut()).await, Some(Ok(())));
            queue.close();
            assert_eq!(queue.push_data(1, b"x").await, Err(PipeClosed));
        });
    }
}
