//! The TCP socket under a TLS session, with the one thing glommio's stream lacks
//! for TLS: vectored writes. rustls hands over every record it has ready at once;
//! glommio would send them one `send` each, while [`Transport`] sends them with one
//! `sendmsg`. Reads and readiness stay glommio's.

use std::io::{self, IoSlice};
use std::os::fd::{AsRawFd, BorrowedFd};
use std::pin::Pin;
use std::task::{Context, Poll};

use futures_lite::{AsyncRead, AsyncWrite};
use glommio::net::TcpStream;

/// See the module documentation.
pub struct Transport {
    tcp: TcpStream,
}

impl Transport {
    /// Wraps a connected glommio stream.
    pub fn new(tcp: TcpStream) -> Transport {
        Transport { tcp }
    }

    /// The socket.
    pub fn tcp(&self) -> &TcpStream {
        &self.tcp
    }

    /// One non-blocking `sendmsg` of every slice.
    fn send_vectored(&self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        #[allow(unsafe_code)]
        // SAFETY: the descriptor belongs to `self.tcp`, which outlives this borrow.
        let fd = unsafe { BorrowedFd::borrow_raw(self.tcp.as_raw_fd()) };
        socket2::SockRef::from(&fd)
            .send_vectored_with_flags(bufs, libc::MSG_NOSIGNAL | libc::MSG_DONTWAIT)
    }
}

impl AsyncRead for Transport {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.tcp).poll_read(cx, buf)
    }
}

impl AsyncWrite for Transport {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.tcp).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.send_vectored(bufs) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                // glommio's own write registers for writability (after one more try).
                let first = bufs.iter().find(|b| !b.is_empty()).map_or(&[][..], |b| b);
                Pin::new(&mut self.tcp).poll_write(cx, first)
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {
                cx.waker().wake_by_ref();
                Poll::Pending
            }
            other => Poll::Ready(other),
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_flush(cx)
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_close(cx)
    }
}
