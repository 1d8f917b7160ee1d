//! UDP over TCP v2 on the server (docs/protocol.md §7): a stream whose target is
//! `sp.v2.udp-over-tcp.arpa` carries a request and then length-prefixed
//! datagrams, relayed through one UDP socket on this executor.
//!
//! The stream's bytes are parsed as a byte stream, so datagrams may span PSH
//! frames. Memory per association is bounded: at most one partial datagram
//! (< 64 KiB + header) waits for its end, one 64 KiB receive buffer, a kernel
//! receive buffer reserved from the session's share (see [`ReceiveBuffer`]), and the session's write queue bound
//! applies to what goes back. Datagrams past `--max-datagrams-per-sec` are
//! dropped (counted), so empty datagrams cannot keep the core busy with
//! syscalls. An association ends
//! with its stream, on a malformed header, or after `uot_idle_timeout` without a
//! datagram either way.

use std::cell::Cell;
use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

use futures_lite::future;
use log::{debug, warn};

use super::{Session, StreamEnd, StreamEntry, ROUTE_BLOCKED};
use crate::mux;
use crate::node::routes::Protocol;
use crate::pool::dial::is_descriptor_exhaustion;
use crate::proto::rate::TokenBucket;
use crate::proto::uot::{self, Request};
use crate::proto::{Address, Command};
use crate::speed_limit::Direction;
use crate::stats::Limit;

/// Largest UDP payload.
const MAX_DATAGRAM: usize = 65_535;
/// Smallest `SO_RCVBUF` asked for an association's socket.
const MIN_RECEIVE_BUFFER: usize = 16 * 1024;

/// An association's kernel receive buffer, reserved from its session's share
/// (as large as the session's budget for its targets): each new association
/// asks for a quarter of what is left, at most [`mux::UDP_RECEIVE_BUFFER`], so
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
        let asked = (left / 4).clamp(MIN_RECEIVE_BUFFER, mux::UDP_RECEIVE_BUFFER);
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
/// Runs the association to its end.
pub(super) async fn serve(
    session: &Session,
    id: u32,
    entry: &StreamEntry,
    mut buf: Vec<u8>,
) -> StreamEnd {
    let peer = session.peer;
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
                return session.refuse(id, &format!("malformed UDP-over-TCP request: {e}"));
            }
        }
        if !entry.upload.take_all(&mut chunk).await {
            return StreamEnd::ClientFinished;
        }
        buf.extend_from_slice(&chunk);
    };
    let core = &session.core;
    if session.blocked(&request.destination, Protocol::Udp, id) {
        return session.refuse(id, ROUTE_BLOCKED);
    }
    let fixed = if request.is_connect {
        match core
            .resolver
            .resolve(&request.destination, session.user())
            .await
        {
            Ok(addrs) => Some(addrs[0]),
            Err(e) => return session.refuse(id, &e.to_string()),
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
        Err(refused) => return refused,
    };
    let _held = match core.pool.hold_udp() {
        Ok(held) => held,
        Err(e) => {
            core.limit_reached(Limit::OutboundConnections, || {
                format!("{peer}: stream {id}: UDP association refused: {e}")
            });
            return session.refuse(id, &e.to_string());
        }
    };
    let any = if ipv6 {
        IpAddr::from([0u16; 8])
    } else {
        IpAddr::from([0u8; 4])
    };
    let limits = &core.config.limits;
    let receive_buffer = ReceiveBuffer::reserve(session);
    let socket = match mux::bind_udp(any, receive_buffer.asked) {
        Ok(socket) => socket,
        Err(e) => {
            if is_descriptor_exhaustion(&e) {
                core.limit_reached(Limit::Descriptors, || {
                    format!("{peer}: stream {id}: cannot open a UDP socket: {e}")
                });
            }
            return session.refuse(id, &format!("cannot open a UDP socket: {e}"));
        }
    };
    if let Some(addr) = fixed {
        if let Err(e) = socket.connect(addr).await {
            return session.refuse(id, &format!("UDP connect {addr}: {e}"));
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
    if session.version() >= 2 {
        session.queue.push_frame(Command::SynAck, id, &[]);
    }
    let last_datagram = Cell::new(Instant::now());
    let mut rate = TokenBucket::new(limits.datagrams_per_sec, Instant::now());
    let counters = core.counters();
    let upload = async {
        loop {
            let mut start = 0;
            loop {
                match uot::decode_datagram(&buf[start..], request.is_connect) {
                    Ok(Some((datagram, used))) => {
                        start += used;
                        let now = Instant::now();
                        last_datagram.set(now);
                        entry.last_activity.set(now);
                        if !rate.take(now) {
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
                        return StreamEnd::TargetFinished;
                    }
                }
            }
            buf.drain(..start);
            if !entry.upload.take_all(&mut chunk).await {
                return StreamEnd::ClientFinished;
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
                    return StreamEnd::TargetFinished;
                }
            };
            last_datagram.set(Instant::now());
            entry.last_activity.set(Instant::now());
            framed.clear();
            let source = (!request.is_connect).then_some(Address::Ip(from));
            uot::encode_datagram(source.as_ref(), &packet[..n], &mut framed)
                .expect("a received datagram fits in a frame");
            if session.queue.push_data(id, &framed).await.is_err() {
                return StreamEnd::ClientFinished;
            }
            counters.bytes_down.add(n as u64);
            session.core_user.counters.bytes_down.add(n as u64);
            session.throttle(Direction::Down, n).await;
        }
    };
    let idle_limit = core.config.uot_idle_timeout;
    let idle = async {
        let check = mux::check_period(idle_limit);
        loop {
            glommio::timer::sleep(check).await;
            if last_datagram.get().elapsed() >= idle_limit {
                debug!("{peer}: stream {id}: UDP association idle for {idle_limit:?}");
                return StreamEnd::TargetFinished;
            }
        }
    };
    future::or(upload, future::or(download, idle)).await
}
