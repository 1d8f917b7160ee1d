//! Splits one `AsyncRead + AsyncWrite` into halves that can be driven from the same
//! executor at once. A `RefCell` borrow lasts one poll only, so the halves never
//! conflict; unlike `futures::io::split` no lock or atomic is involved.

use std::cell::RefCell;
use std::io;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};

use futures_lite::{AsyncRead, AsyncWrite};

/// The reading half.
pub struct ReadHalf<T>(Rc<RefCell<T>>);
/// The writing half.
pub struct WriteHalf<T>(Rc<RefCell<T>>);

/// Splits `io` into a reading and a writing half.
pub fn split<T: AsyncRead + AsyncWrite + Unpin>(io: T) -> (ReadHalf<T>, WriteHalf<T>) {
    let shared = Rc::new(RefCell::new(io));
    (ReadHalf(shared.clone()), WriteHalf(shared))
}

impl<T> ReadHalf<T> {
    /// The shared I/O object, for socket options (borrowed for as long as the
    /// returned guard lives: not across an await).
    pub fn get_ref(&self) -> std::cell::Ref<'_, T> {
        self.0.borrow()
    }

    /// Runs `f` on the shared I/O object (borrowed for that call only: not
    /// across an await).
    pub fn with_mut<R>(&self, f: impl FnOnce(&mut T) -> R) -> R {
        f(&mut self.0.borrow_mut())
    }

    /// A handle to the shared I/O object that does not keep it open.
    pub fn downgrade(&self) -> std::rc::Weak<RefCell<T>> {
        Rc::downgrade(&self.0)
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for ReadHalf<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut *self.0.borrow_mut()).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for WriteHalf<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut *self.0.borrow_mut()).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut *self.0.borrow_mut()).poll_write_vectored(cx, bufs)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.0.borrow_mut()).poll_flush(cx)
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.0.borrow_mut()).poll_close(cx)
    }
}
