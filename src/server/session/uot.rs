//! UDP over TCP v2 on the server (docs/protocol.md §7): a stream whose target is
//! `sp.v2.udp-over-tcp.arpa` carries a request and then length-prefixed
//! datagrams, relayed through one UDP socket on this executor.
//!
//! The stream's bytes are parsed as a byte stream, so datagrams may span PSH
//! frames. Memory per association is bounded: at most one partial datagram
//! (< 64 KiB + header) waits for its end, one 64 KiB receive buffer, a kernel
//! receive buffer reserved from the session's share (see [`ReceiveBuffer`]), and
//! the session's write queue bound applies to what goes back. Datagrams past
//! `--max-datagrams-per-sec` are dropped (counted), so empty datagrams cannot keep
//! the core busy with syscalls. An association ends with its stream, on a
//! malformed header, or when the session machine stops it (`uot_idle_timeout`
//! without a datagram either way).

use std::net::{IpAddr, SocketAddr};
use std::rc::Rc;
use std::time::Instant;

use futures_lite::future;
use log::{debug, warn};

use super::stream::{report, until_stopped, TaskEnd};
use super::{Session, StreamEntry, ROUTE_BLOCKED};
use crate::node::routes::Protocol;
use crate::plumbing;
use crate::pool::dial::is_descriptor_exhaustion;
use crate::proto::rate::TokenBucket;
use crate::proto::session::{StreamEnd, StreamEvent};
use crate::proto::uot::{self, Request};
use crate::proto::Address;
use crate::speed_limit::Direction;
use crate::stats::Limit;

/// Largest UDP payload.
const MAX_DATAGRAM: usize = 65_535;
/// Smallest `SO_RCVBUF` asked for an association's socket.
const MIN_RECEIVE_BUFFER: usize = 16 * 1024;

/// An association's kernel receive buffer, reserved from its session's share
/// (as large as the session's budget for its targets): each new association
/// asks for a quarter of what is left, at most [`plumbing::UDP_RECEIVE_BUFFER`], so
/// the first few take bursts and a session's many together stay within it.
struct ReceiveBuffer<'a> {
    session: &'a Session,
    /// What `SO_RCVBUF` is asked for.
    asked: usize,
}

impl<'a> ReceiveBuffer<'a> {
    fn reserve(session: &'a Session) -> ReceiveBuffer<'a> {
        let share = session.core.config.limits.buffered_per_session;
        let left = share.saturating_sub(session.udp_buffers.get());
        let asked = (left / 4).clamp(MIN_RECEIVE_BUFFER, plumbing::UDP_RECEIVE_BUFFER);
        // The kernel doubles what is asked, for its bookkeeping.
        session
            .udp_buffers
            .set(session.udp_buffers.get() + 2 * asked);
        ReceiveBuffer { session, asked }
    }
}

impl Drop for ReceiveBuffer<'_> {
    fn drop(&mut self) {
        let held = &self.session.udp_buffers;
        held.set(held.get().saturating_sub(2 * self.asked));
    }
}

/// Runs association `id` until it ends, then tells the machine.
pub(super) async fn run(session: Rc<Session>, id: u32, entry: Rc<StreamEntry>) {
    let end = until_stopped(&session, &entry, serve(&session, id, &entry)).await;
    report(&session, id, end);
}

/// Runs the association to its end.
async fn serve(session: &Session, id: u32, entry: &StreamEntry) -> TaskEnd {
    let peer = session.peer;
    let failed = |why: String| TaskEnd::Event(StreamEvent::Failed(why));
    let ended = |end| TaskEnd::Event(StreamEvent::Ended(end));
    let mut buf = Vec::new();
    let mut chunk = Vec::new();
    let request = loop {
        match Request::decode(&buf) {
            Ok(Some((request, used))) => {
                buf.drain(..used);
                break request;
            }
            Ok(None) => {}
            Err(e) => {
                warn!("{peer}: stream {id}: malformed UDP-over-TCP request: {e}");
                return failed(format!("malformed UDP-over-TCP request: {e}"));
            }
        }
        if !session.take_upload(id, entry, &mut chunk).await {
            return ended(StreamEnd::ClientDone);
        }
        buf.extend_from_slice(&chunk);
    };
    let core = &session.core;
    if session.blocked(&request.destination, Protocol::Udp, id) {
        return failed(ROUTE_BLOCKED.to_owned());
    }
    let fixed = if request.is_connect {
        match core
            .resolver
            .resolve(&request.destination, session.user())
            .await
        {
            Ok(addrs) => Some(addrs[0]),
            Err(e) => {
                if let Some(why) = e.failure() {
                    core.counters().dial_failed(why);
                }
                return failed(e.to_string());
            }
        }
    } else {
        None
    };
    let ipv6 = match (&fixed, &request.destination) {
        (Some(addr), _) | (None, Address::Ip(addr)) => addr.is_ipv6(),
        _ => false,
    };
    let _share = match session.take_outbound_share(id) {
        Ok(share) => share,
        Err(why) => return failed(why),
    };
    let _held = match core.pool.hold_udp() {
        Ok(held) => held,
        Err(e) => {
            core.limit_reached(Limit::OutboundConnections, || {
                format!("{peer}: stream {id}: UDP association refused: {e}")
            });
            return failed(e.to_string());
        }
    };
    let any = if ipv6 {
        IpAddr::from([0u16; 8])
    } else {
        IpAddr::from([0u8; 4])
    };
    let limits = &core.config.limits;
    let receive_buffer = ReceiveBuffer::reserve(session);
    let socket = match plumbing::bind_udp(any, receive_buffer.asked) {
        Ok(socket) => socket,
        Err(e) => {
            if is_descriptor_exhaustion(&e) {
                core.limit_reached(Limit::Descriptors, || {
                    format!("{peer}: stream {id}: cannot open a UDP socket: {e}")
                });
            }
            return failed(format!("cannot open a UDP socket: {e}"));
        }
    };
    if let Some(addr) = fixed {
        if let Err(e) = socket.connect(addr).await {
            return failed(format!("UDP connect {addr}: {e}"));
        }
    }
    debug!(
        "{peer}: stream {id}: UDP over TCP ({}) to {}",
        if request.is_connect {
            "connect"
        } else {
            "non-connect"
        },
        request.destination
    );
    session.stream_event(id, StreamEvent::Dialed);
    let mut rate = TokenBucket::new(limits.datagrams_per_sec, Instant::now());
    let counters = core.counters();
    let upload = async {
        loop {
            let mut start = 0;
            loop {
                match uot::decode_datagram(&buf[start..], request.is_connect) {
                    Ok(Some((datagram, used))) => {
                        start += used;
                        if !rate.take(Instant::now()) {
                            core.limit_reached(Limit::DatagramRate, || {
                                format!(
                                    "{peer}: stream {id}: datagrams past {} a second dropped",
                                    limits.datagrams_per_sec
                                )
                            });
                            continue;
                        }
                        let to = match (fixed, &datagram.address) {
                            (Some(addr), _) => addr,
                            (None, Some(address))
                                if session.blocked(address, Protocol::Udp, id) =>
                            {
                                continue;
                            }
                            (None, Some(address)) => {
                                match core.resolver.resolve(address, session.user()).await {
                                    // Prefer an address of the socket's family.
                                    Ok(addrs) => *addrs
                                        .iter()
                                        .find(|a| a.is_ipv6() == ipv6)
                                        .unwrap_or(&addrs[0]),
                                    Err(e) => {
                                        debug!("{peer}: stream {id}: datagram dropped: {e}");
                                        continue;
                                    }
                                }
                            }
                            (None, None) => unreachable!("non-connect datagrams carry an address"),
                        };
                        let sent = if fixed.is_some() {
                            socket.send(datagram.payload).await
                        } else {
                            socket.send_to(datagram.payload, to).await
                        };
                        match sent {
                            Ok(n) => {
                                counters.bytes_up.add(n as u64);
                                session.core_user.counters.bytes_up.add(n as u64);
                            }
                            Err(e) => debug!("{peer}: stream {id}: send to {to}: {e}"),
                        }
                    }
                    Ok(None) => break,
                    Err(e) => {
                        warn!("{peer}: stream {id}: malformed UDP-over-TCP datagram: {e}; closing the stream");
                        return StreamEnd::TargetClosed;
                    }
                }
            }
            buf.drain(..start);
            if !session.take_upload(id, entry, &mut chunk).await {
                return StreamEnd::ClientDone;
            }
            buf.extend_from_slice(&chunk);
        }
    };
    let download = async {
        let mut packet = vec![0u8; MAX_DATAGRAM];
        let mut framed = Vec::with_capacity(MAX_DATAGRAM + 32);
        loop {
            let (n, from): (usize, SocketAddr) = match socket.recv_from(&mut packet).await {
                Ok(received) => received,
                Err(e) => {
                    debug!("{peer}: stream {id}: UDP receive: {e}");
                    return StreamEnd::TargetClosed;
                }
            };
            session.stream_event(id, StreamEvent::Downloaded(n));
            framed.clear();
            let source = (!request.is_connect).then_some(Address::Ip(from));
            uot::encode_datagram(source.as_ref(), &packet[..n], &mut framed)
                .expect("a received datagram fits in a frame");
            if session.queue.push_data(id, &framed).await.is_err() {
                return StreamEnd::ClientDone;
            }
            counters.bytes_down.add(n as u64);
            session.core_user.counters.bytes_down.add(n as u64);
            session.throttle(Direction::Down, n).await;
        }
    };
    ended(future::or(upload, download).await)
}
