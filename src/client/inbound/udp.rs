//! SOCKS5 UDP ASSOCIATE (RFC 1928 section 7) carried over UDP-over-TCP v2
//! (docs/protocol.md §7) in non-connect mode, as the reference anytls-go client does it.
//!
//! For an ASSOCIATE the client binds a UDP socket on the IP the control connection
//! arrived on (port 0) and names it in the reply. The first datagram from the local
//! application opens one stream to `sp.v2.udp-over-tcp.arpa` on a pooled session,
//! carrying the UoT request (non-connect, destination: that datagram's) together
//! with the datagram itself. From then on each SOCKS datagram becomes one UoT
//! datagram naming its destination, and each UoT datagram from the server becomes
//! one SOCKS datagram naming its source. Domain destinations stay domains: the
//! server resolves them.
//!
//! Only the application's address is served ([`ExpectedSender`]); fragments
//! (FRAG != 0) and malformed datagrams are dropped. The association ends when the
//! control connection closes, when the stream ends, or after the idle timeout
//! (`--udp-idle-timeout`, default
//! [`DEFAULT_UDP_IDLE_TIMEOUT`](crate::client::session_pool::DEFAULT_UDP_IDLE_TIMEOUT))
//! without a datagram either way; then the stream is closed (FIN) and the session
//! goes back to the pool.
//!
//! Memory is one 64 KiB buffer each way. Headers are rewritten in place: for the
//! same address a UoT header (`address | length u16`) is exactly one byte shorter
//! than a SOCKS header (`RSV u16 | FRAG u8 | address`). The stream is parsed as
//! bytes, so a datagram may span PSH frames; at most one partial datagram waits.

use std::cell::{Cell, RefCell};
use std::io;
use std::net::SocketAddr;
use std::ops::Range;
use std::rc::Rc;
use std::time::Instant;

use futures_lite::{future, AsyncReadExt, AsyncWriteExt};
use glommio::net::{TcpStream, UdpSocket};
use log::debug;
use thiserror::Error;

use super::{InboundError, Unserved};
use crate::client::session::ClientStream;
use crate::client::session_pool::{Lease, SessionPool};
use crate::client::socks5::{self, DatagramError, ExpectedSender, Reply};
use crate::proto::error::UotError;
use crate::proto::uot::{self, Request, UOT_V2_NAME};
use crate::proto::Address;

/// The application's datagrams are received here; no UDP datagram is longer.
const UPLOAD_BUFFER: usize = 64 * 1024;
/// The longest UoT datagram: address (type, length, 255-byte name, port), length
/// u16, payload.
const MAX_UOT_DATAGRAM: usize = 1 + 1 + 255 + 2 + 2 + 65_535;
/// Bytes kept in front of the stream bytes, so the one byte longer SOCKS header
/// fits where the UoT header was.
const HEADROOM: usize = 1;
/// The longest SOCKS UDP header: RSV, FRAG, then a 255-byte name.
const MAX_SOCKS_UDP_HEADER: usize = 3 + 1 + 1 + 255 + 2;

/// Why one datagram was dropped instead of relayed.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum RewriteError {
    /// The application's SOCKS datagram is malformed or fragmented.
    #[error("{0}")]
    Socks(#[from] DatagramError),
    /// It cannot be framed as a UoT datagram.
    #[error("{0}")]
    Uot(#[from] UotError),
}

/// Rewrites the SOCKS UDP datagram filling `datagram` into a UoT non-connect
/// datagram in place. Returns its destination and where the UoT datagram now lies.
/// `scratch` holds the new header on the way.
pub fn socks_to_uot(
    datagram: &mut [u8],
    scratch: &mut Vec<u8>,
) -> Result<(Address, Range<usize>), RewriteError> {
    let parsed = socks5::parse_udp_datagram(datagram)?;
    let (destination, header_len, payload_len) =
        (parsed.address, parsed.header_len, parsed.payload.len());
    let length = u16::try_from(payload_len).map_err(|_| UotError::DatagramTooLong(payload_len))?;
    scratch.clear();
    // With an empty payload, encode_datagram writes exactly the header: patch in
    // the real length so the payload can stay where it was received.
    uot::encode_datagram(Some(&destination), &[], scratch)?;
    let length_at = scratch.len() - 2;
    scratch[length_at..].copy_from_slice(&length.to_be_bytes());
    let start = header_len
        .checked_sub(scratch.len())
        .expect("a UoT header is one byte shorter than the SOCKS header");
    datagram[start..header_len].copy_from_slice(scratch);
    Ok((destination, start..header_len + payload_len))
}

/// One UoT datagram turned into a SOCKS UDP datagram by [`uot_to_socks`].
#[derive(Debug, PartialEq, Eq)]
pub struct Rewritten {
    /// Where the SOCKS datagram lies in the buffer.
    pub socks: Range<usize>,
    /// Stream bytes the UoT datagram used, from `begin`.
    pub used: usize,
}

/// Rewrites the UoT non-connect datagram at the front of `buf[begin..end]` into a
/// SOCKS UDP datagram in place; `Ok(None)` needs more bytes. Needs `begin >= 1`:
/// the SOCKS header is one byte longer and takes the byte before the datagram,
/// which has been relayed already (or is headroom). `scratch` holds the new header
/// on the way.
pub fn uot_to_socks(
    buf: &mut [u8],
    begin: usize,
    end: usize,
    scratch: &mut Vec<u8>,
) -> Result<Option<Rewritten>, UotError> {
    let Some((datagram, used)) = uot::decode_datagram(&buf[begin..end], false)? else {
        return Ok(None);
    };
    let source = datagram
        .address
        .expect("non-connect datagrams carry an address");
    let payload_start = begin + used - datagram.payload.len();
    scratch.clear();
    socks5::encode_udp_header(&source, scratch)?;
    let header_start = payload_start
        .checked_sub(scratch.len())
        .expect("the SOCKS header fits in the UoT header and the byte before it");
    buf[header_start..payload_start].copy_from_slice(scratch);
    Ok(Some(Rewritten {
        socks: header_start..begin + used,
        used,
    }))
}

/// Serves a UDP ASSOCIATE whose request named `requested`: replies, relays, and
/// ends with the control connection `conn`, the stream or the idle timeout.
pub async fn associate(
    mut conn: TcpStream,
    pool: Rc<SessionPool>,
    requested: &Address,
) -> Result<(), InboundError> {
    let local = conn.local_addr().map_err(io::Error::from)?;
    let peer = conn.peer_addr().map_err(io::Error::from)?;
    let socket = match crate::plumbing::bind_udp(
        local.ip().to_canonical(),
        crate::plumbing::UDP_RECEIVE_BUFFER,
    ) {
        Ok(socket) => socket,
        Err(e) => {
            conn.write_all(&socks5::reply(Reply::GeneralFailure))
                .await?;
            return Err(InboundError::Udp(e));
        }
    };
    let bound = socket
        .local_addr()
        .map_err(|e| InboundError::Udp(e.into()))?;
    conn.write_all(&socks5::reply_bound(Reply::Succeeded, bound))
        .await?;
    debug!("{peer}: UDP association on {bound} (client {requested})");
    let association = Association {
        peer,
        socket,
        pool,
        sender: RefCell::new(ExpectedSender::from_request(requested)),
        last_datagram: Cell::new(Instant::now()),
        lease: RefCell::new(None),
        stream: RefCell::new(None),
    };
    let control_closed = async {
        wait_for_eof(&mut conn).await;
        debug!("{peer}: UDP association: control connection closed");
        Ok(())
    };
    let result = future::or(
        control_closed,
        future::or(association.expire(), association.relay()),
    )
    .await;
    association.finish();
    result
}

/// Reads (and discards) until the local client closes the connection.
async fn wait_for_eof(conn: &mut TcpStream) {
    let mut discard = [0u8; 256];
    while let Ok(1..) = conn.read(&mut discard).await {}
}

/// One association's state, shared by its relay, its idle timer and its end.
struct Association {
    /// The control connection's peer, for logs.
    peer: SocketAddr,
    socket: UdpSocket,
    pool: Rc<SessionPool>,
    sender: RefCell<ExpectedSender>,
    last_datagram: Cell<Instant>,
    /// Held here, not in the relay, so it goes back to the pool however the
    /// association ends.
    lease: RefCell<Option<Lease>>,
    stream: RefCell<Option<Rc<ClientStream>>>,
}

impl Association {
    /// Ends after the pool's UDP idle timeout without a datagram either way.
    async fn expire(&self) -> Result<(), InboundError> {
        let limit = self.pool.settings().udp_idle_timeout;
        let check = crate::plumbing::check_period(limit);
        loop {
            glommio::timer::sleep(check).await;
            if self.last_datagram.get().elapsed() >= limit {
                debug!("{}: UDP association idle for {limit:?}", self.peer);
                return Ok(());
            }
        }
    }

    /// Waits for the first datagram, opens the stream with it, then relays both
    /// ways until the stream ends.
    async fn relay(&self) -> Result<(), InboundError> {
        let mut upload = vec![0u8; UPLOAD_BUFFER];
        let mut scratch = Vec::with_capacity(MAX_SOCKS_UDP_HEADER);
        let (destination, first) = loop {
            if let Some(first) = self.receive(&mut upload, &mut scratch).await? {
                break first;
            }
        };
        let stream = self.open(&destination, &upload[first]).await?;
        let uploading = async {
            loop {
                if let Some((_, datagram)) = self.receive(&mut upload, &mut scratch).await? {
                    stream
                        .write_all(&upload[datagram])
                        .await
                        .map_err(InboundError::Session)?;
                }
            }
        };
        future::or(uploading, self.download(&stream)).await
    }

    /// Receives one datagram from the application and rewrites it into a UoT
    /// datagram in `buf`; `None` if it was dropped.
    async fn receive(
        &self,
        buf: &mut [u8],
        scratch: &mut Vec<u8>,
    ) -> Result<Option<(Address, Range<usize>)>, InboundError> {
        let (n, from) = self
            .socket
            .recv_from(buf)
            .await
            .map_err(|e| InboundError::Udp(e.into()))?;
        if !self.sender.borrow_mut().admit(from) {
            debug!(
                "{}: UDP datagram from {from}, not the association's client, dropped",
                self.peer
            );
            return Ok(None);
        }
        match socks_to_uot(&mut buf[..n], scratch) {
            Ok(rewritten) => {
                self.last_datagram.set(Instant::now());
                Ok(Some(rewritten))
            }
            Err(e) => {
                debug!("{}: UDP datagram from {from} dropped: {e}", self.peer);
                Ok(None)
            }
        }
    }

    /// Opens the UoT stream on a pooled session, sending the request and the first
    /// datagram together, and waits for SYNACK.
    async fn open(
        &self,
        destination: &Address,
        first_datagram: &[u8],
    ) -> Result<Rc<ClientStream>, InboundError> {
        let unserved = |cause: Unserved| InboundError::Unserved {
            request: "SOCKS5 UDP ASSOCIATE",
            target: destination.clone(),
            cause,
        };
        let lease = self.pool.acquire().await.map_err(|e| unserved(e.into()))?;
        let session = lease.session.clone();
        *self.lease.borrow_mut() = Some(lease);
        let stream = session
            .open_stream(&Address::Domain(UOT_V2_NAME.into(), 0))
            .map_err(|e| unserved(Unserved::Session(e)))?;
        let stream = Rc::new(stream);
        *self.stream.borrow_mut() = Some(stream.clone());
        let mut opening = Vec::with_capacity(1 + MAX_SOCKS_UDP_HEADER + first_datagram.len());
        Request {
            is_connect: false,
            destination: destination.clone(),
        }
        .encode(&mut opening)?;
        opening.extend_from_slice(first_datagram);
        stream
            .write_all(&opening)
            .await
            .map_err(InboundError::Session)?;
        stream.established().await.map_err(|e| unserved(e.into()))?;
        debug!(
            "{}: UDP association: stream {} established (first datagram to {destination})",
            self.peer,
            stream.id()
        );
        Ok(stream)
    }

    /// Relays the server's datagrams to the application until the stream ends.
    async fn download(&self, stream: &ClientStream) -> Result<(), InboundError> {
        let mut buf = vec![0u8; HEADROOM + MAX_UOT_DATAGRAM];
        let mut scratch = Vec::with_capacity(MAX_SOCKS_UDP_HEADER);
        let (mut begin, mut end) = (HEADROOM, HEADROOM);
        loop {
            while let Some(rewritten) = uot_to_socks(&mut buf, begin, end, &mut scratch)? {
                begin += rewritten.used;
                self.last_datagram.set(Instant::now());
                // Set: the first datagram fixed it before the stream was opened.
                let Some(client) = self.sender.borrow().address() else {
                    continue;
                };
                if let Err(e) = self.socket.send_to(&buf[rewritten.socks], client).await {
                    debug!("{}: UDP send to {client}: {e}", self.peer);
                }
            }
            // Keep the partial datagram; the longest one fits in what is left.
            buf.copy_within(begin..end, HEADROOM);
            end -= begin - HEADROOM;
            begin = HEADROOM;
            let n = stream.read(&mut buf[end..]).await;
            if n == 0 {
                debug!("{}: UDP association: the stream ended", self.peer);
                return Ok(());
            }
            end += n;
        }
    }

    /// Closes the stream (FIN) and gives the session back to the pool.
    fn finish(self) {
        if let Some(stream) = self.stream.take() {
            stream.close();
        }
        if let Some(lease) = self.lease.take() {
            self.pool.release(lease);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addresses() -> Vec<Address> {
        vec![
            Address::Ip("127.0.0.1:53".parse().unwrap()),
            Address::Ip("[::1]:5353".parse().unwrap()),
            Address::Domain("dns.example".into(), 53),
            Address::Domain("n".repeat(255), 1),
        ]
    }

    #[test]
    fn socks_datagram_becomes_uot_in_place() {
        for address in addresses() {
            for payload in [&b""[..], b"query", &[7u8; 1500][..]] {
                let mut datagram = Vec::new();
                socks5::encode_udp_header(&address, &mut datagram).unwrap();
                datagram.extend_from_slice(payload);
                let mut scratch = Vec::new();
                let (destination, range) = socks_to_uot(&mut datagram, &mut scratch).unwrap();
                assert_eq!(destination, address);
                let mut expected = Vec::new();
                uot::encode_datagram(Some(&address), payload, &mut expected).unwrap();
                assert_eq!(range.start, 1);
                assert_eq!(&datagram[range], &expected[..]);
            }
        }
    }

    #[test]
    fn malformed_socks_datagrams_are_dropped() {
        let mut scratch = Vec::new();
        assert_eq!(
            socks_to_uot(&mut [0, 0, 1, 1, 1, 2, 3, 4, 0, 7], &mut scratch),
            Err(RewriteError::Socks(DatagramError::Fragmented(1)))
        );
        assert_eq!(
            socks_to_uot(&mut [0, 0, 0, 1, 1, 2], &mut scratch),
            Err(RewriteError::Socks(DatagramError::Truncated(6)))
        );
        let mut long = vec![0, 0, 0, 1, 1, 2, 3, 4, 0, 7];
        long.resize(long.len() + 65_536, 0);
        assert_eq!(
            socks_to_uot(&mut long, &mut scratch),
            Err(RewriteError::Uot(UotError::DatagramTooLong(65_536)))
        );
    }

    #[test]
    fn uot_datagrams_become_socks_in_place_at_every_split() {
        for address in addresses() {
            let mut stream = Vec::new();
            uot::encode_datagram(Some(&address), b"answer one", &mut stream).unwrap();
            let first_len = stream.len();
            uot::encode_datagram(Some(&address), b"two", &mut stream).unwrap();
            let mut expected_first = Vec::new();
            socks5::encode_udp_header(&address, &mut expected_first).unwrap();
            let mut expected_second = expected_first.clone();
            expected_first.extend_from_slice(b"answer one");
            expected_second.extend_from_slice(b"two");
            let mut scratch = Vec::new();
            for len in 0..first_len {
                let mut buf = vec![0xEE; HEADROOM];
                buf.extend_from_slice(&stream[..len]);
                let end = buf.len();
                assert_eq!(
                    uot_to_socks(&mut buf, HEADROOM, end, &mut scratch),
                    Ok(None),
                    "prefix {len}"
                );
            }
            let mut buf = vec![0xEE; HEADROOM];
            buf.extend_from_slice(&stream);
            let end = buf.len();
            let first = uot_to_socks(&mut buf, HEADROOM, end, &mut scratch)
                .unwrap()
                .unwrap();
            assert_eq!(first.used, first_len);
            assert_eq!(&buf[first.socks], &expected_first[..]);
            // The second one borrows the first one's last byte.
            let begin = HEADROOM + first.used;
            let second = uot_to_socks(&mut buf, begin, end, &mut scratch)
                .unwrap()
                .unwrap();
            assert_eq!(begin + second.used, end);
            assert_eq!(&buf[second.socks], &expected_second[..]);
        }
    }

    #[test]
    fn malformed_uot_datagram_is_an_error() {
        let mut buf = [0, 7, 1, 2, 3, 4, 0, 53, 0, 1, b'x'];
        assert_eq!(
            uot_to_socks(&mut buf, 1, 11, &mut Vec::new()),
            Err(UotError::AddressType(7))
        );
    }
}
