//! The server's TLS connection on rustls' unbuffered API, with the buffers owned
//! by the core instead of by each connection.
//!
//! Ciphertext is read from the socket straight into a pooled buffer and decrypted
//! there; each decrypted record is offered to the reader as it is
//! ([`TlsConnection::poll_plaintext`]), and only the bytes the reader leaves (it
//! paused) are copied aside. Writes are encrypted into a pooled buffer and sent
//! with one `send` per batch. Both buffers are held only while they hold bytes,
//! so an idle session holds no TLS buffer at all. (rustls 0.23 still copies each
//! decrypted record once, into a `Vec` of its own: that is the one user-space copy
//! of an uploaded byte left.)
//!
//! Reader and writer share one connection ([`super::split`]); a state the other
//! side should act on (plaintext decrypted while the writer asked for room to
//! write, the client's close_notify) is kept here and its waiting task woken.
//! Either side passes rustls the same incoming buffer, so a handshake message
//! split over records is never seen without its first part.

use std::io::{self, IoSlice};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll, Waker};

use futures_lite::{future, AsyncRead, AsyncWrite, AsyncWriteExt};
use glommio::net::TcpStream;
use rustls::server::{Acceptor, ClientHello, UnbufferedServerConnection};
use rustls::unbuffered::{ConnectionState, EncodeError, EncryptError, UnbufferedStatus};
use rustls::ServerConfig;

use super::buffers::{give_tls_buffer, take_tls_buffer, TLS_BUFFER_LEN};
use super::transport::send_now;

/// Bytes of a record beyond its plaintext, at most (TLS 1.2 AES-GCM: 5 header, 8
/// explicit nonce, 16 tag; TLS 1.3: 5 header, 1 content type, 16 tag).
const RECORD_OVERHEAD: usize = 29;
/// Largest plaintext of one record.
const MAX_FRAGMENT: usize = 16 * 1024;
/// Room kept free at the end of the incoming buffer: one whole record of the
/// largest size a peer may send (RFC 8446 §5.2).
const MAX_RECORD: usize = 5 + MAX_FRAGMENT + 256;
/// Unprocessed bytes a waiting connection keeps in an allocation of their own
/// size rather than in a pooled buffer.
const SMALL_HOLD: usize = 4 * 1024;

/// Why a handshake did not complete.
#[derive(Debug, thiserror::Error)]
pub enum HandshakeError {
    /// The socket failed or closed.
    #[error("{0}")]
    Io(#[from] io::Error),
    /// TLS itself failed (an alert was sent where rustls had one).
    #[error("{0}")]
    Tls(#[from] rustls::Error),
    /// The peer closed its side before the handshake was done.
    #[error("the client closed the connection during the handshake")]
    Closed,
}

/// The reader's part of [`TlsConnection::poll_plaintext`]: takes what it can of
/// the plaintext it is offered and says how much.
pub type Take<'a> = &'a mut dyn FnMut(&[u8]) -> usize;

/// What [`TlsConnection::poll_plaintext`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Plaintext {
    /// Bytes were offered to the reader (it may have taken none of them).
    Offered,
    /// The client's data ended (close_notify or end of the TCP stream).
    Ended,
}

/// A received byte buffer: `bytes[start..end]` not yet processed; a pooled
/// buffer, held only while it holds bytes.
#[derive(Default)]
struct Incoming {
    bytes: Vec<u8>,
    start: usize,
    end: usize,
}

impl Incoming {
    fn pending(&mut self) -> &mut [u8] {
        &mut self.bytes[self.start..self.end]
    }

    fn discard(&mut self, n: usize) {
        self.start += n;
        if self.start == self.end {
            (self.start, self.end) = (0, 0);
            give_tls_buffer(std::mem::take(&mut self.bytes));
        }
    }

    /// Free space at the end for at least one whole record, taking a pooled
    /// buffer (with the bytes held meanwhile) or compacting as needed; `None` when
    /// unprocessed bytes fill the buffer.
    fn room(&mut self) -> Option<&mut [u8]> {
        if self.bytes.len() != TLS_BUFFER_LEN {
            let mut pooled = take_tls_buffer();
            let held = self.end - self.start;
            pooled[..held].copy_from_slice(&self.bytes[self.start..self.end]);
            (self.bytes, self.start, self.end) = (pooled, 0, held);
        }
        if self.bytes.len() - self.end < MAX_RECORD && self.start > 0 {
            self.bytes.copy_within(self.start..self.end, 0);
            (self.start, self.end) = (0, self.end - self.start);
        }
        (self.end < self.bytes.len()).then(|| &mut self.bytes[self.end..])
    }

    /// Reads once from `tcp` into the free space; 0 at end of stream. While it
    /// waits the pooled buffer goes back, and a partial record (a few bytes) is
    /// held in an allocation of its own size: a connection that sends part of a
    /// record and stops holds no pooled buffer.
    fn poll_fill(&mut self, tcp: &mut TcpStream, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        let Some(room) = self.room() else {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "a TLS message larger than the receive buffer",
            )));
        };
        let read = Pin::new(tcp).poll_read(cx, room);
        match read {
            Poll::Ready(Ok(n)) if n > 0 => self.end += n,
            _ => self.shrink_for_wait(),
        }
        read
    }

    fn shrink_for_wait(&mut self) {
        let held = self.end - self.start;
        if held == 0 {
            (self.start, self.end) = (0, 0);
            give_tls_buffer(std::mem::take(&mut self.bytes));
        } else if held <= SMALL_HOLD && self.bytes.len() == TLS_BUFFER_LEN {
            let small = self.bytes[self.start..self.end].to_vec();
            give_tls_buffer(std::mem::replace(&mut self.bytes, small));
            (self.start, self.end) = (0, held);
        }
    }
}

/// Encrypted bytes to send: `bytes[sent..len]`.
#[derive(Default)]
struct Outgoing {
    bytes: Vec<u8>,
    sent: usize,
    len: usize,
}

impl Outgoing {
    /// Free space for records: a pooled buffer (taking one, with the bytes
    /// already queued, if a small one held them), compacted when sends left
    /// room at its front.
    fn free(&mut self) -> &mut [u8] {
        let unsent = self.len - self.sent;
        if self.bytes.len() != TLS_BUFFER_LEN {
            let mut pooled = take_tls_buffer();
            pooled[..unsent].copy_from_slice(&self.bytes[self.sent..self.len]);
            self.bytes = pooled;
            (self.sent, self.len) = (0, unsent);
        } else if self.sent > 0 && TLS_BUFFER_LEN - self.len < MAX_RECORD {
            self.bytes.copy_within(self.sent..self.len, 0);
            (self.sent, self.len) = (0, unsent);
        }
        &mut self.bytes[self.len..]
    }

    fn is_empty(&self) -> bool {
        self.sent == self.len
    }

    fn unsent(&self) -> &[u8] {
        &self.bytes[self.sent..self.len]
    }

    fn advance(&mut self, n: usize) {
        self.sent += n;
        if self.sent == self.len {
            (self.sent, self.len) = (0, 0);
            give_tls_buffer(std::mem::take(&mut self.bytes));
        }
    }

    /// Encodes a handshake record after what is queued: into an allocation of
    /// its own size when nothing is (the handshake's flight, the tickets that
    /// wait for the first write), growing as one needs.
    fn encode(
        &mut self,
        mut encode: impl FnMut(&mut [u8]) -> Result<usize, EncodeError>,
    ) -> Result<(), rustls::Error> {
        loop {
            match encode(&mut self.bytes[self.len..]) {
                Ok(n) => {
                    self.len += n;
                    return Ok(());
                }
                Err(EncodeError::InsufficientSize(size)) => {
                    let len = self.len + size.required_size;
                    self.bytes.resize(len, 0);
                }
                Err(EncodeError::AlreadyEncoded) => return Ok(()),
            }
        }
    }
}

/// See the module documentation.
pub struct TlsConnection {
    tcp: TcpStream,
    conn: UnbufferedServerConnection,
    incoming: Incoming,
    outgoing: Outgoing,
    /// Plaintext decrypted while the reader was not taking it: `kept[taken..]`.
    kept: Vec<u8>,
    taken: usize,
    /// The client sent close_notify.
    peer_closed: bool,
    /// Our close_notify is queued.
    close_queued: bool,
    /// The reader, waiting for the socket while the writer may decrypt for it.
    reader: Option<Waker>,
}

impl TlsConnection {
    /// Runs the server's side of a handshake on `tcp`, with the configuration
    /// `choose` picks from the client's hello.
    pub async fn accept(
        mut tcp: TcpStream,
        choose: impl FnOnce(&ClientHello<'_>) -> Arc<ServerConfig>,
    ) -> Result<TlsConnection, HandshakeError> {
        let mut incoming = Incoming::default();
        let mut outgoing = Outgoing::default();
        let config = {
            let mut acceptor = Acceptor::default();
            let mut fed = 0;
            loop {
                if fill(&mut tcp, &mut incoming).await? == 0 {
                    return Err(HandshakeError::Closed);
                }
                let mut new = &incoming.bytes[fed..incoming.end];
                fed = incoming.end;
                while !new.is_empty() {
                    acceptor.read_tls(&mut new)?;
                }
                match acceptor.accept() {
                    Ok(None) => continue,
                    Ok(Some(accepted)) => break choose(&accepted.client_hello()),
                    Err((e, mut alert)) => {
                        let mut bytes = Vec::new();
                        // Best effort: the connection fails either way.
                        let _ = alert.write_all(&mut bytes);
                        let _ = tcp.write_all(&bytes).await;
                        return Err(e.into());
                    }
                }
            }
        };
        let mut tls = TlsConnection {
            conn: UnbufferedServerConnection::new(config)?,
            tcp,
            incoming: std::mem::take(&mut incoming),
            outgoing: std::mem::take(&mut outgoing),
            kept: Vec::new(),
            taken: 0,
            peer_closed: false,
            close_queued: false,
            reader: None,
        };
        match tls.complete_handshake().await {
            Ok(()) => Ok(tls),
            Err(e) => {
                if let HandshakeError::Tls(_) = e {
                    tls.queue_alert();
                    let _ = tls.tcp.write_all(tls.outgoing.unsent()).await;
                }
                Err(e)
            }
        }
    }

    async fn complete_handshake(&mut self) -> Result<(), HandshakeError> {
        loop {
            let UnbufferedStatus { discard, state } =
                self.conn.process_tls_records(self.incoming.pending());
            let state = state?;
            let mut blocked = false;
            match state {
                ConnectionState::EncodeTlsData(mut data) => {
                    self.outgoing.encode(|out| data.encode(out))?;
                }
                ConnectionState::TransmitTlsData(data) => {
                    // The bytes are sent below, before anything queued later.
                    data.done();
                    self.incoming.discard(discard);
                    self.tcp.write_all(self.outgoing.unsent()).await?;
                    let sent = self.outgoing.len - self.outgoing.sent;
                    self.outgoing.advance(sent);
                    continue;
                }
                ConnectionState::BlockedHandshake => blocked = true,
                // Done: plaintext that came with the client's Finished, and the
                // tickets rustls sends after it, are taken by the reader and the
                // writer as any other.
                ConnectionState::WriteTraffic(_) | ConnectionState::ReadTraffic(_) => {
                    self.incoming.discard(discard);
                    return Ok(());
                }
                ConnectionState::PeerClosed | ConnectionState::Closed => {
                    return Err(HandshakeError::Closed)
                }
                _ => blocked = true,
            }
            self.incoming.discard(discard);
            if blocked && fill(&mut self.tcp, &mut self.incoming).await? == 0 {
                return Err(HandshakeError::Closed);
            }
        }
    }

    /// The TCP connection under TLS (for its socket options and state).
    pub fn tcp(&self) -> &TcpStream {
        &self.tcp
    }

    /// Offers decrypted plaintext to `take`, which returns how much of it it took;
    /// what it leaves is kept and offered first next time. Returns `Offered` after
    /// offering bytes (or a pause: `take` took less than it was offered), `Ended`
    /// once the client's data ended, and waits for the socket otherwise.
    pub fn poll_plaintext(
        &mut self,
        cx: &mut Context<'_>,
        take: Take<'_>,
    ) -> Poll<io::Result<Plaintext>> {
        loop {
            if self.taken < self.kept.len() {
                let taken = take(&self.kept[self.taken..]);
                self.taken += taken;
                if self.taken == self.kept.len() {
                    self.kept = Vec::new();
                    self.taken = 0;
                }
                return Poll::Ready(Ok(Plaintext::Offered));
            }
            match self.process(Some(take))? {
                Processed::Offered => return Poll::Ready(Ok(Plaintext::Offered)),
                Processed::PeerClosed => return Poll::Ready(Ok(Plaintext::Ended)),
                Processed::NeedMore => {}
            }
            if self.peer_closed {
                return Poll::Ready(Ok(Plaintext::Ended));
            }
            match self.incoming.poll_fill(&mut self.tcp, cx) {
                Poll::Ready(Ok(0)) => return Poll::Ready(Ok(Plaintext::Ended)),
                Poll::Ready(Ok(_)) => {}
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => {
                    self.reader = Some(cx.waker().clone());
                    return Poll::Pending;
                }
            }
        }
    }

    /// Processes what was received until rustls needs more bytes. Plaintext goes to
    /// `take` while it takes all it is offered, and is kept otherwise (or with no
    /// `take`, the writer asking for room); handshake messages rustls answers
    /// (a key update) are queued to send.
    fn process(&mut self, mut take: Option<Take<'_>>) -> io::Result<Processed> {
        let mut offered = false;
        let mut paused = false;
        loop {
            let UnbufferedStatus { mut discard, state } =
                self.conn.process_tls_records(self.incoming.pending());
            let state = match state {
                Ok(state) => state,
                Err(e) => {
                    self.incoming.discard(discard);
                    self.queue_alert();
                    return Err(io::Error::new(io::ErrorKind::InvalidData, e));
                }
            };
            match state {
                ConnectionState::ReadTraffic(mut traffic) => {
                    while let Some(record) = traffic.next_record() {
                        let record = record.map_err(invalid_data)?;
                        discard += record.discard;
                        let payload = record.payload;
                        let taken = match take.as_mut() {
                            Some(take) => {
                                offered = true;
                                take(payload)
                            }
                            None => 0,
                        };
                        if taken < payload.len() {
                            self.kept.extend_from_slice(&payload[taken..]);
                            if take.is_some() {
                                // Later records wait, decrypted, for the next call.
                                paused = true;
                                break;
                            }
                        }
                    }
                }
                ConnectionState::EncodeTlsData(mut data) => {
                    self.outgoing
                        .encode(|out| data.encode(out))
                        .map_err(invalid_data)?;
                }
                ConnectionState::TransmitTlsData(data) => {
                    // What rustls sends unasked once the handshake is done (the
                    // session tickets, a key update's answer) leaves with the
                    // next write, in the same send.
                    data.done();
                    self.incoming.discard(discard);
                    continue;
                }
                ConnectionState::PeerClosed | ConnectionState::Closed => {
                    self.peer_closed = true;
                    self.incoming.discard(discard);
                    if take.is_none() {
                        self.wake_reader();
                    }
                    return Ok(if offered {
                        Processed::Offered
                    } else {
                        Processed::PeerClosed
                    });
                }
                _ => {
                    self.incoming.discard(discard);
                    if self.taken < self.kept.len() && take.is_none() {
                        self.wake_reader();
                    }
                    return Ok(if offered || self.taken < self.kept.len() {
                        Processed::Offered
                    } else {
                        Processed::NeedMore
                    });
                }
            }
            self.incoming.discard(discard);
            if paused {
                // The rest stays encrypted until the reader asks again.
                return Ok(Processed::Offered);
            }
        }
    }

    /// Encrypts as much of `bufs` as the outgoing buffer takes; returns the
    /// plaintext bytes taken.
    fn encrypt(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        loop {
            let UnbufferedStatus { discard, state } =
                self.conn.process_tls_records(self.incoming.pending());
            let state = state.map_err(invalid_data)?;
            match state {
                ConnectionState::WriteTraffic(mut traffic) => {
                    let mut total = 0;
                    for buf in bufs {
                        let mut left: &[u8] = buf;
                        while !left.is_empty() {
                            let free = self.outgoing.free();
                            let fit = plaintext_fitting(free.len()).min(left.len());
                            if fit == 0 {
                                break;
                            }
                            match traffic.encrypt(&left[..fit], free) {
                                Ok(n) => self.outgoing.len += n,
                                Err(EncryptError::InsufficientSize(_)) => break,
                                Err(e) => {
                                    return Err(io::Error::new(io::ErrorKind::InvalidData, e))
                                }
                            }
                            total += fit;
                            left = &left[fit..];
                        }
                        if !left.is_empty() {
                            break;
                        }
                    }
                    self.incoming.discard(discard);
                    return Ok(total);
                }
                ConnectionState::Closed => {
                    self.incoming.discard(discard);
                    return Err(io::ErrorKind::BrokenPipe.into());
                }
                ConnectionState::ReadTraffic(traffic) => {
                    // Not for the writer: kept for the reader.
                    drop(traffic);
                    self.incoming.discard(discard);
                    self.process(None)?;
                }
                ConnectionState::PeerClosed => {
                    self.peer_closed = true;
                    self.incoming.discard(discard);
                    self.wake_reader();
                }
                ConnectionState::EncodeTlsData(mut data) => {
                    self.outgoing
                        .encode(|out| data.encode(out))
                        .map_err(invalid_data)?;
                    self.incoming.discard(discard);
                }
                ConnectionState::TransmitTlsData(data) => {
                    data.done();
                    self.incoming.discard(discard);
                }
                _ => {
                    self.incoming.discard(discard);
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "TLS is not ready for application data",
                    ));
                }
            }
        }
    }

    /// Queues the alert rustls has for a failed connection, if any.
    fn queue_alert(&mut self) {
        let UnbufferedStatus { state, .. } = self.conn.process_tls_records(self.incoming.pending());
        if let Ok(ConnectionState::EncodeTlsData(mut data)) = state {
            let _ = self.outgoing.encode(|out| data.encode(out));
        }
    }

    /// One non-blocking send of what is queued; what the socket does not take
    /// waits for the writer.
    fn try_send(&mut self) {
        if self.outgoing.is_empty() {
            return;
        }
        if let Ok(n) = send_now(&self.tcp, self.outgoing.unsent(), false) {
            self.outgoing.advance(n);
        }
    }

    /// Sends what is queued; ready once all of it is with the kernel.
    fn poll_send(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while !self.outgoing.is_empty() {
            let n = match send_now(&self.tcp, self.outgoing.unsent(), false) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    // glommio's own write waits for writability (after one more try).
                    ready!(Pin::new(&mut self.tcp).poll_write(cx, self.outgoing.unsent()))?
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Poll::Ready(Err(e)),
            };
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.outgoing.advance(n);
        }
        Poll::Ready(Ok(()))
    }

    fn wake_reader(&mut self) {
        if let Some(waker) = self.reader.take() {
            waker.wake();
        }
    }
}

/// What [`TlsConnection::process`] left.
enum Processed {
    Offered,
    PeerClosed,
    NeedMore,
}

/// Plaintext that fits in `room` bytes of records.
fn plaintext_fitting(room: usize) -> usize {
    let whole = room / (MAX_FRAGMENT + RECORD_OVERHEAD);
    let rest = (room % (MAX_FRAGMENT + RECORD_OVERHEAD)).saturating_sub(RECORD_OVERHEAD);
    whole * MAX_FRAGMENT + rest
}

fn invalid_data<E: std::error::Error + Send + Sync + 'static>(e: E) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e)
}

/// Reads once from `tcp` into `incoming`; 0 at end of stream.
async fn fill(tcp: &mut TcpStream, incoming: &mut Incoming) -> io::Result<usize> {
    future::poll_fn(|cx| incoming.poll_fill(tcp, cx)).await
}

impl AsyncRead for TlsConnection {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        loop {
            let mut copied = 0;
            let read = {
                let mut copy = |bytes: &[u8]| {
                    let n = bytes.len().min(buf.len() - copied);
                    buf[copied..copied + n].copy_from_slice(&bytes[..n]);
                    copied += n;
                    n
                };
                self.poll_plaintext(cx, &mut copy)
            };
            match ready!(read)? {
                Plaintext::Ended => return Poll::Ready(Ok(0)),
                Plaintext::Offered if copied > 0 => return Poll::Ready(Ok(copied)),
                Plaintext::Offered => {}
            }
        }
    }
}

impl AsyncWrite for TlsConnection {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.poll_write_vectored(cx, &[IoSlice::new(buf)])
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        if bufs.iter().all(|buf| buf.is_empty()) {
            return Poll::Ready(Ok(0));
        }
        loop {
            // Records go after whatever is queued (tickets, or what the socket
            // did not take yet), and leave with it in one send.
            let taken = this.encrypt(bufs)?;
            if taken > 0 {
                this.try_send();
                return Poll::Ready(Ok(taken));
            }
            if this.outgoing.is_empty() {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            // No room: the kernel must take what is queued first.
            ready!(this.poll_send(cx))?;
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.poll_send(cx)
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if !this.close_queued {
            this.close_queued = true;
            let UnbufferedStatus { state, .. } =
                this.conn.process_tls_records(this.incoming.pending());
            if let Ok(ConnectionState::WriteTraffic(mut traffic)) = state {
                let free = this.outgoing.free();
                if let Ok(n) = traffic.queue_close_notify(free) {
                    this.outgoing.len += n;
                }
            }
        }
        ready!(this.poll_send(cx))?;
        Pin::new(&mut this.tcp).poll_close(cx)
    }
}

impl Drop for TlsConnection {
    fn drop(&mut self) {
        give_tls_buffer(std::mem::take(&mut self.incoming.bytes));
        give_tls_buffer(std::mem::take(&mut self.outgoing.bytes));
    }
}
