//! The read side of a frame stream: bytes from the peer accumulate at the end,
//! decoded frames are consumed from the front.
//!
//! The buffer is borrowed from the executor's free list only while bytes are
//! moving: once everything read has been consumed and the peer has nothing more
//! ready, it goes back, and the idle wait reads into a few bytes inside the task
//! instead. An idle session therefore holds no read buffer at all. Bytes are
//! zeroed only when a buffer is first made, never per read.

use std::io;
use std::ops::ControlFlow;

use futures_lite::{future, AsyncRead, AsyncReadExt};

use super::buffers::{give_read_buffer, take_read_buffer, Probe};
use crate::proto::frame::{self, Frame};

/// See the module documentation.
pub struct ReadBuffer {
    data: Vec<u8>,
    start: usize,
    end: usize,
    chunk: usize,
}

impl ReadBuffer {
    /// A buffer that asks for at least `chunk` bytes per read.
    pub fn new(chunk: usize) -> ReadBuffer {
        ReadBuffer {
            data: Vec::new(),
            start: 0,
            end: 0,
            chunk,
        }
    }

    /// Bytes read and not yet consumed.
    pub fn filled(&self) -> &[u8] {
        &self.data[self.start..self.end]
    }

    /// Whether a buffer is held (it is not while idle).
    pub fn holds_buffer(&self) -> bool {
        self.data.capacity() > 0
    }

    /// Drops `n` bytes from the front.
    pub fn consume(&mut self, n: usize) {
        assert!(n <= self.end - self.start, "consumed more than was read");
        self.start += n;
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
    }

    /// Reads once from `reader`; 0 at EOF. With nothing unconsumed and nothing
    /// ready to read, the buffer is handed back before waiting.
    pub async fn fill_from<R: AsyncRead + Unpin>(&mut self, reader: &mut R) -> io::Result<usize> {
        if self.start < self.end {
            return self.read_more(reader).await;
        }
        if self.holds_buffer() {
            if let Some(read) = future::poll_once(self.read_more(reader)).await {
                return read;
            }
            give_read_buffer(std::mem::take(&mut self.data));
        }
        let probe = Probe::read(reader).await?;
        let n = probe.bytes().len();
        if n > 0 {
            self.make_room();
            self.data[..n].copy_from_slice(probe.bytes());
            self.end = n;
        }
        Ok(n)
    }

    /// Makes at least `chunk` bytes of free space after the unconsumed bytes.
    fn make_room(&mut self) {
        if !self.holds_buffer() {
            self.data = take_read_buffer();
        }
        if self.data.len() - self.end < self.chunk {
            if self.start > 0 {
                self.data.copy_within(self.start..self.end, 0);
                self.end -= self.start;
                self.start = 0;
            }
            if self.data.len() - self.end < self.chunk {
                self.data.resize(self.end + self.chunk, 0);
            }
        }
    }

    async fn read_more<R: AsyncRead + Unpin>(&mut self, reader: &mut R) -> io::Result<usize> {
        self.make_room();
        let n = reader.read(&mut self.data[self.end..]).await?;
        self.end += n;
        Ok(n)
    }
}

impl Drop for ReadBuffer {
    fn drop(&mut self) {
        give_read_buffer(std::mem::take(&mut self.data));
    }
}

/// Why [`read_frames`] returned.
#[derive(Debug)]
pub enum FramesEnd<E> {
    /// The peer closed the connection.
    Closed,
    /// A read failed.
    Failed(io::Error),
    /// The handler stopped.
    Stopped(E),
}

/// The frame read loop both ends run: reads `reader` into `buf` and hands each
/// whole frame to `handle`, in order, until the handler breaks, the peer closes or
/// a read fails. `on_read` runs after every read that brought bytes (activity, for
/// idle timers). After each read the task yields, so a peer that keeps the socket
/// full cannot keep the loop from returning Pending and starve the writer and
/// every other task on the core.
pub async fn read_frames<R: AsyncRead + Unpin, E>(
    reader: &mut R,
    buf: &mut ReadBuffer,
    mut handle: impl AsyncFnMut(Frame<'_>) -> ControlFlow<E>,
    mut on_read: impl FnMut(),
) -> FramesEnd<E> {
    loop {
        while let Some(frame) = frame::decode(buf.filled()) {
            let used = frame.wire_len();
            let flow = handle(frame).await;
            buf.consume(used);
            if let ControlFlow::Break(end) = flow {
                return FramesEnd::Stopped(end);
            }
        }
        match buf.fill_from(reader).await {
            Ok(0) => return FramesEnd::Closed,
            Ok(_) => on_read(),
            Err(e) => return FramesEnd::Failed(e),
        }
        future::yield_now().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_lite::future::block_on;
    use std::pin::Pin;
    use std::task::{Context, Poll};

    #[test]
    fn accumulates_consumes_and_compacts() {
        let mut source: &[u8] = &[1, 2, 3, 4, 5, 6, 7, 8, 9, 10];
        let mut buf = ReadBuffer::new(4);
        block_on(async {
            assert_eq!(buf.fill_from(&mut source).await.unwrap(), 10);
            assert_eq!(buf.filled(), &[1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
            buf.consume(3);
            assert_eq!(buf.filled(), &[4, 5, 6, 7, 8, 9, 10]);
            buf.consume(7);
            assert!(buf.filled().is_empty());
            assert_eq!(buf.fill_from(&mut source).await.unwrap(), 0);
        });
    }

    /// A reader that is ready only on every other poll, handing out 3 bytes a time.
    struct Trickle {
        left: Vec<u8>,
        ready: bool,
    }

    impl AsyncRead for Trickle {
        fn poll_read(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &mut [u8],
        ) -> Poll<io::Result<usize>> {
            self.ready = !self.ready;
            if !self.ready {
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            let n = buf.len().min(3).min(self.left.len());
            buf[..n].copy_from_slice(&self.left[..n]);
            self.left.drain(..n);
            Poll::Ready(Ok(n))
        }
    }

    #[test]
    fn idle_waits_hold_no_buffer_and_lose_no_byte() {
        let mut reader = Trickle {
            left: (0..20).collect(),
            ready: false,
        };
        let mut buf = ReadBuffer::new(8);
        let mut got = Vec::new();
        block_on(async {
            loop {
                let n = buf.fill_from(&mut reader).await.unwrap();
                if n == 0 {
                    break;
                }
                got.extend_from_slice(buf.filled());
                let all = buf.filled().len();
                buf.consume(all);
            }
        });
        assert_eq!(got, (0..20).collect::<Vec<u8>>());
        assert!(!buf.holds_buffer(), "the buffer went back while waiting");
    }

    #[test]
    fn a_partial_frame_keeps_its_buffer() {
        let mut source: &[u8] = &[9; 5];
        let mut buf = ReadBuffer::new(4);
        block_on(async {
            buf.fill_from(&mut source).await.unwrap();
            buf.consume(2);
            assert_eq!(buf.fill_from(&mut source).await.unwrap(), 0);
        });
        assert!(buf.holds_buffer());
        assert_eq!(buf.filled(), &[9, 9, 9]);
    }
}
