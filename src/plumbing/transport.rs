//! The TCP socket under the client's TLS session (futures-rustls), with what
//! glommio's stream lacks for TLS:
//! - vectored writes: rustls hands over every record it has ready at once; glommio
//!   would send them one `send` each, while [`Transport`] sends them with one
//!   `sendmsg`;
//! - reads ahead: rustls asks for 4 KiB at a time, so a 16 KiB record took four
//!   `recv`s; [`Transport`] reads up to a pooled frame buffer's worth at once and
//!   hands it out from memory, holding the buffer only while it has bytes (an idle
//!   session holds none).
//!
//! Readiness stays glommio's.
//!
//! Also here, the other socket option glommio does not reach:
//! [`reset_on_close_if_delivered`], which keeps a closing server from leaving a
//! TIME_WAIT socket behind per stream.

use std::io::{self, IoSlice};
use std::os::fd::{AsRawFd, BorrowedFd};
use std::pin::Pin;
use std::task::{Context, Poll};

use futures_lite::{AsyncRead, AsyncWrite};
use glommio::net::TcpStream;

use super::buffers::{give_frame_buffer, take_frame_buffer};

/// `TCP_CLOSE` of the kernel's `tcp_states.h` (not in the libc crate).
const TCP_CLOSE: u8 = 7;
/// Reads asking for at least this much go straight to the socket.
const DIRECT_READ: usize = 8 * 1024;

/// See the module documentation.
pub struct Transport {
    tcp: TcpStream,
    /// Bytes read ahead: `ahead[start..end]` (no allocation while empty).
    ahead: Vec<u8>,
    start: usize,
    end: usize,
}

impl Transport {
    /// Wraps a connected glommio stream.
    pub fn new(tcp: TcpStream) -> Transport {
        Transport {
            tcp,
            ahead: Vec::new(),
            start: 0,
            end: 0,
        }
    }

    /// The local address of the connection.
    pub fn local_addr(&self) -> io::Result<std::net::SocketAddr> {
        self.tcp.local_addr().map_err(io::Error::from)
    }

    /// Copies read-ahead bytes into `buf`; hands the buffer back once drained.
    fn take_ahead(&mut self, buf: &mut [u8]) -> usize {
        let n = buf.len().min(self.end - self.start);
        buf[..n].copy_from_slice(&self.ahead[self.start..self.start + n]);
        self.start += n;
        if self.start == self.end {
            give_frame_buffer(std::mem::take(&mut self.ahead));
            (self.start, self.end) = (0, 0);
        }
        n
    }

    /// One non-blocking `sendmsg` of every slice.
    fn send_vectored(&self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        with_socket(&self.tcp, |socket| {
            socket.send_vectored_with_flags(bufs, libc::MSG_NOSIGNAL | libc::MSG_DONTWAIT)
        })
    }
}

/// Runs `f` on a socket2 view of `tcp`'s descriptor.
fn with_socket<T>(tcp: &TcpStream, f: impl FnOnce(socket2::SockRef<'_>) -> T) -> T {
    #[allow(unsafe_code)]
    // SAFETY: the descriptor belongs to `tcp`, which outlives this borrow.
    let fd = unsafe { BorrowedFd::borrow_raw(tcp.as_raw_fd()) };
    f(socket2::SockRef::from(&fd))
}

/// One non-blocking `send` of `bytes` to `tcp`; how many the kernel took.
/// `more` (`MSG_MORE`): more bytes follow at once, so the kernel may hold these
/// to send in the same segments (a send without it pushes them all).
pub fn send_now(tcp: &TcpStream, bytes: &[u8], more: bool) -> io::Result<usize> {
    let more = if more { libc::MSG_MORE } else { 0 };
    with_socket(tcp, |socket| {
        socket.send_with_flags(bytes, libc::MSG_NOSIGNAL | libc::MSG_DONTWAIT | more)
    })
}

/// Whether the peer of `tcp` reset the connection (its state is CLOSE): nothing
/// more can come, whatever is left unread.
pub fn peer_reset(tcp: &TcpStream) -> bool {
    tcp_state(tcp) == Some(TCP_CLOSE)
}

/// Caps `tcp`'s kernel send buffer at `bytes` (which turns off its autotuning).
pub fn set_send_buffer(tcp: &TcpStream, bytes: usize) -> io::Result<()> {
    with_socket(tcp, |socket| socket.set_send_buffer_size(bytes))
}

/// The kernel's TCP state of `tcp` (`TCP_INFO`'s `tcpi_state`: 1 ESTABLISHED,
/// 7 CLOSE, 8 CLOSE_WAIT, ...).
pub fn tcp_state(tcp: &TcpStream) -> Option<u8> {
    let mut info = std::mem::MaybeUninit::<libc::tcp_info>::zeroed();
    let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
    #[allow(unsafe_code)]
    // SAFETY: getsockopt writes at most `len` bytes into `info`, which is that
    // large; the descriptor belongs to `tcp`, open for this call.
    let status = unsafe {
        libc::getsockopt(
            tcp.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            info.as_mut_ptr().cast(),
            &mut len,
        )
    };
    if status < 0 {
        return None;
    }
    #[allow(unsafe_code)]
    // SAFETY: zeroed is a valid tcp_info (integers only), and the kernel wrote
    // the rest.
    let info = unsafe { info.assume_init() };
    Some(info.tcpi_state)
}

/// Bytes written to `tcp` that its peer has not acknowledged yet (`SIOCOUTQ`).
pub fn unacknowledged(tcp: &TcpStream) -> io::Result<usize> {
    let mut queued: libc::c_int = 0;
    #[allow(unsafe_code)]
    // SAFETY: SIOCOUTQ writes one c_int through the pointer, which is valid.
    let status = unsafe { libc::ioctl(tcp.as_raw_fd(), libc::TIOCOUTQ, &mut queued) };
    if status < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(usize::try_from(queued).unwrap_or(0))
}

/// Makes the coming close of `tcp` send RST instead of FIN, when every byte
/// written to it has been acknowledged (so nothing can be lost), and returns
/// whether it did. The side that closes first with FIN keeps a TIME_WAIT socket
/// for a minute; a proxy that closes one target connection per stream would
/// otherwise collect tens of thousands, which slows the kernel's choice of a port
/// for every new connection.
pub fn reset_on_close_if_delivered(tcp: &TcpStream) -> bool {
    matches!(unacknowledged(tcp), Ok(0)) && reset_on_close(tcp)
}

/// Makes the coming close of `tcp` send RST and drop whatever it still buffers
/// (a stalled target's unread bytes): the memory is freed at once instead of
/// being held by an orphaned socket. Returns whether the option was set.
pub fn reset_on_close(tcp: &TcpStream) -> bool {
    with_socket(tcp, |socket| {
        socket.set_linger(Some(std::time::Duration::ZERO))
    })
    .is_ok()
}

impl AsyncRead for Transport {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        if this.start < this.end {
            return Poll::Ready(Ok(this.take_ahead(buf)));
        }
        if buf.len() >= DIRECT_READ {
            return Pin::new(&mut this.tcp).poll_read(cx, buf);
        }
        let mut ahead = take_frame_buffer();
        match Pin::new(&mut this.tcp).poll_read(cx, &mut ahead) {
            Poll::Ready(Ok(n)) if n > 0 => {
                this.ahead = ahead;
                this.end = n;
                Poll::Ready(Ok(this.take_ahead(buf)))
            }
            other => {
                give_frame_buffer(ahead);
                other
            }
        }
    }
}

impl Drop for Transport {
    fn drop(&mut self) {
        give_frame_buffer(std::mem::take(&mut self.ahead));
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
