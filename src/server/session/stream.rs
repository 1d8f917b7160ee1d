//! One proxied stream: read the target address from the first bytes, dial it, answer
//! SYNACK, then relay both ways until either side ends.

use std::pin::pin;
use std::rc::Rc;
use std::time::{Duration, Instant};

use futures_lite::{future, AsyncWriteExt};
use glommio::net::TcpStream;
use log::debug;

use super::{Session, StreamEnd, StreamEntry};
use crate::mux::{self, timeout};
use crate::node::routes::Protocol;
use crate::proto::{uot, Address, Command};
use crate::speed_limit::Direction;
use crate::stats::Limit;

/// Upload buffer capacity a stream keeps between writes to its target; the
/// stream's pipe and its writer pass one allocation back and forth, so a stream
/// keeps at most twice this.
const UPLOAD_KEEP_CAPACITY: usize = 32 * 1024;

/// Why no target address came.
enum AddressEnd {
    /// FIN (or the session's end) before a whole address arrived.
    ClientFinished,
    /// The bytes are not an address.
    Malformed(String),
}

/// Runs stream `id` to its end, then forgets it.
pub(super) async fn run(session: Rc<Session>, id: u32, entry: Rc<StreamEntry>) {
    let counters = session.core.counters();
    counters.streams_open.add(1);
    counters.streams_total.add(1);
    let reset = async {
        entry.reset.wait().await;
        StreamEnd::Reset
    };
    let session_closed = async {
        session.closed.wait().await;
        StreamEnd::SessionClosed
    };
    let mut end = future::or(
        serve(&session, id, &entry),
        future::or(reset, session_closed),
    )
    .await;
    // A reset also aborts the upload pipe, so `serve` may see it first as the
    // client's end.
    if entry.reset.is_set() && !end.sends_fin() {
        end = StreamEnd::Reset;
    }
    if end.sends_fin() {
        session.queue.push_frame(Command::Fin, id, &[]);
    }
    log::trace!("{}: stream {id} ended: {end:?}", session.peer);
    session.rules.borrow_mut().stream_ended(id, Instant::now());
    entry.upload.abort();
    session.release_upload(&entry);
    session.core.counters().streams_open.sub(1);
}

/// The target address from the stream's first bytes, and the bytes after it.
async fn read_address(entry: &StreamEntry) -> Result<(Address, Vec<u8>), AddressEnd> {
    let mut pending = Vec::new();
    let mut chunk = Vec::new();
    loop {
        match Address::decode(&pending) {
            Ok(Some((target, used))) => {
                pending.drain(..used);
                return Ok((target, pending));
            }
            Ok(None) => {}
            Err(e) => return Err(AddressEnd::Malformed(format!("bad target address: {e}"))),
        }
        if !entry.upload.take_all(&mut chunk).await {
            return Err(AddressEnd::ClientFinished);
        }
        pending.extend_from_slice(&chunk);
    }
}

/// Serves the stream to its end.
async fn serve(session: &Rc<Session>, id: u32, entry: &StreamEntry) -> StreamEnd {
    let peer = session.peer;
    let core = &session.core;
    let limits = &core.config.limits;
    let (target, pending) = match timeout(limits.address_timeout, read_address(entry)).await {
        Some(Ok(found)) => found,
        Some(Err(AddressEnd::ClientFinished)) => return StreamEnd::ClientFinished,
        Some(Err(AddressEnd::Malformed(why))) => return session.refuse(id, &why),
        None => {
            core.counters().limit_hit(Limit::AddressTimeout);
            let why = format!(
                "no whole target address within {:?}",
                limits.address_timeout
            );
            debug!("{peer}: stream {id}: {why}");
            return session.refuse(id, &why);
        }
    };
    if let Address::Domain(name, _) = &target {
        if name == uot::UOT_V2_NAME {
            let association = {
                let mut rules = session.rules.borrow_mut();
                rules.stream_dialed(id);
                rules.open_association(id)
            };
            if let Err(refusal) = association {
                core.counters().limit_hit(Limit::UotPerSession);
                return session.refuse(id, refusal.reason());
            }
            return super::uot::serve(session, id, entry, pending).await;
        }
        if name == uot::UOT_V1_NAME {
            return session.refuse(
                id,
                "UDP over TCP v1 (sp.udp-over-tcp.arpa) is not supported; use v2",
            );
        }
    }
    if session.blocked(&target, Protocol::Tcp, id) {
        return session.refuse(id, super::ROUTE_BLOCKED);
    }
    let _share = match session.take_outbound_share(id) {
        Ok(share) => share,
        Err(refused) => return refused,
    };
    let mut dial = pin!(core.pool.connect(
        &core.resolver,
        &target,
        session.user(),
        core.config.connect_timeout
    ));
    let mut answered = false;
    let dialed = match timeout(limits.synack_deadline, dial.as_mut()).await {
        Some(dialed) => dialed,
        None => {
            // Clients close the whole session when a SYNACK takes 3 s: answer now,
            // keep dialing (the upload waits in the stream's buffer), FIN if it fails.
            core.counters().limit_hit(Limit::SynAckDeadline);
            debug!("{peer}: stream {id}: {target} still dialing, SYNACK sent at the deadline");
            if session.version() >= 2 {
                session.queue.push_frame(Command::SynAck, id, &[]);
            }
            answered = true;
            dial.await
        }
    };
    session.rules.borrow_mut().stream_dialed(id);
    let outbound = match dialed {
        Ok(outbound) => outbound,
        Err(e) => {
            match e.limit() {
                Some(limit) => core.limit_reached(limit, || {
                    format!("{peer}: stream {id} to {target} refused: {e}")
                }),
                None => debug!("{peer}: stream {id}: {e}"),
            }
            return if answered {
                StreamEnd::TargetFinished
            } else {
                session.refuse(id, &e.to_string())
            };
        }
    };
    debug!("{peer}: stream {id} connected to {target}");
    if !answered && session.version() >= 2 {
        session.queue.push_frame(Command::SynAck, id, &[]);
    }
    let (mut from_target, mut to_target) = mux::split(outbound.stream);
    *entry.target.borrow_mut() = from_target.downgrade();
    let _lease = outbound.lease;
    let counters = core.counters();
    let upload = async {
        let mut buf = pending;
        loop {
            if !buf.is_empty() {
                entry.in_transit.set(buf.len());
                let written = to_target.write_all(&buf).await;
                entry.in_transit.set(0);
                if written.is_err() {
                    return StreamEnd::TargetFinished;
                }
                counters.bytes_up.add(buf.len() as u64);
                session.core_user.counters.bytes_up.add(buf.len() as u64);
                entry.last_activity.set(Instant::now());
                // `take_all` hands this allocation to the pipe: a backlog's large
                // one is freed here so that no stream keeps its peak for life.
                if buf.capacity() > UPLOAD_KEEP_CAPACITY {
                    buf = Vec::new();
                }
            }
            if !entry.upload.take_all(&mut buf).await {
                return StreamEnd::ClientFinished;
            }
        }
    };
    let download = async {
        loop {
            // The target's bytes land behind a header slot and that buffer is the
            // frame TLS encrypts from: no copy on the way down.
            match mux::read_frame(&mut from_target).await {
                Ok(None) | Err(_) => return StreamEnd::TargetFinished,
                Ok(Some((buf, n))) => {
                    if session.queue.push_frame_buffer(id, buf, n).await.is_err() {
                        return StreamEnd::ClientFinished;
                    }
                    counters.bytes_down.add(n as u64);
                    session.core_user.counters.bytes_down.add(n as u64);
                    entry.last_activity.set(Instant::now());
                    // Past the user's speed limit the target is not read.
                    session.throttle(Direction::Down, n).await;
                }
            }
        }
    };
    let reset = async {
        entry.reset.wait().await;
        StreamEnd::Reset
    };
    let end = future::or(reset, future::or(upload, download)).await;
    if end == StreamEnd::ClientFinished && !mux::reset_on_close_if_delivered(&from_target.get_ref())
    {
        // The client is done but the target has not taken everything: it gets
        // its bytes and FIN while the stream still counts against the session.
        let stalled = core.config.stream_stall_timeout;
        let reset = async {
            entry.reset.wait().await;
        };
        future::or(reset, drain(&mut to_target, &from_target, stalled)).await;
    }
    if end == StreamEnd::Reset || end == StreamEnd::ClientFinished {
        // Whatever the kernel still holds for a target that stalled (or took too
        // long to drain) is dropped with the socket now, not kept by an orphan for
        // minutes; a drained one closes with RST too, so the server keeps no
        // TIME_WAIT socket per stream.
        mux::reset_on_close(&from_target.get_ref());
    }
    end
}

/// First look at a draining target's kernel queue; each look that finds no
/// progress waits twice as long, up to [`DRAIN_POLL_MAX`].
const DRAIN_POLL: Duration = Duration::from_millis(10);
/// The longest wait between two looks.
const DRAIN_POLL_MAX: Duration = Duration::from_millis(320);

/// Sends FIN after the bytes the target has not acknowledged yet and waits
/// until it acknowledges them all, or `stalled` passes with none taken.
async fn drain(
    to_target: &mut mux::WriteHalf<TcpStream>,
    target: &mux::ReadHalf<TcpStream>,
    stalled: Duration,
) {
    if to_target.close().await.is_err() {
        return;
    }
    let mut poll = DRAIN_POLL;
    let mut last = usize::MAX;
    let mut progress_at = Instant::now();
    loop {
        let left = match mux::unacknowledged(&target.get_ref()) {
            Ok(0) | Err(_) => return,
            Ok(left) => left,
        };
        if left < last {
            (last, progress_at, poll) = (left, Instant::now(), DRAIN_POLL);
        } else if progress_at.elapsed() >= stalled {
            return;
        } else {
            poll = (poll * 2).min(DRAIN_POLL_MAX);
        }
        glommio::timer::sleep(poll).await;
    }
}
