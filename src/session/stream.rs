//! One proxied stream: read the target address from the first bytes, dial it, answer
//! SYNACK, then relay both ways until either side ends.

use std::rc::Rc;
use std::time::Instant;

use futures_lite::{future, AsyncWriteExt};
use log::debug;

use super::{Session, StreamEntry};
use crate::mux;
use crate::proto::{uot, Address, Command};

/// How a relay ended.
enum RelayEnd {
    /// The client sent FIN: it expects no FIN back.
    ClientFinished,
    /// The target closed or failed: the client is told with FIN.
    TargetFinished,
}

/// Runs stream `id` to its end, then forgets it.
pub(super) async fn run(session: Rc<Session>, id: u32, entry: Rc<StreamEntry>) {
    let counters = session.core.counters();
    counters.streams_open.add(1);
    counters.streams_total.add(1);
    let reset = async {
        entry.reset.wait().await;
        true
    };
    let session_closed = async {
        session.closed.wait().await;
        false
    };
    // A reset also aborts the upload pipe, so `serve` may see it first as a plain end.
    let send_fin = future::or(
        serve(&session, id, &entry),
        future::or(reset, session_closed),
    )
    .await
        || entry.reset.is_set();
    if send_fin {
        session.queue.push_frame(Command::Fin, id, &[]);
    }
    log::trace!("{}: stream {id} ended (FIN sent: {send_fin})", session.peer);
    {
        let mut streams = session.streams.borrow_mut();
        if streams.get(&id).is_some_and(|e| Rc::ptr_eq(e, &entry)) {
            streams.remove(&id);
        }
    }
    entry.upload.abort();
    session.last_activity.set(std::time::Instant::now());
    session.core.counters().streams_open.sub(1);
}

/// Serves the stream; `true` if the client must be sent FIN.
async fn serve(session: &Session, id: u32, entry: &StreamEntry) -> bool {
    let peer = session.peer;
    let mut pending = Vec::new();
    let mut chunk = Vec::new();
    let target = loop {
        match Address::decode(&pending) {
            Ok(Some((target, used))) => {
                pending.drain(..used);
                break target;
            }
            Ok(None) => {}
            Err(e) => return refuse(session, id, &format!("bad target address: {e}")),
        }
        if !entry.upload.take_all(&mut chunk).await {
            return false; // FIN (or session end) before a whole address arrived.
        }
        pending.extend_from_slice(&chunk);
    };
    if let Address::Domain(name, _) = &target {
        if name == uot::UOT_V2_NAME {
            return super::uot::serve(session, id, entry, pending).await;
        }
        if name == uot::UOT_V1_NAME {
            return refuse(
                session,
                id,
                "UDP over TCP v1 (sp.udp-over-tcp.arpa) is not supported; use v2",
            );
        }
    }
    let core = &session.core;
    let outbound = match core
        .pool
        .connect(&core.resolver, &target, core.config.connect_timeout)
        .await
    {
        Ok(outbound) => outbound,
        Err(e) => {
            debug!("{peer}: stream {id}: {e}");
            return refuse(session, id, &e.to_string());
        }
    };
    debug!("{peer}: stream {id} connected to {target}");
    if session.version.get() >= 2 {
        session.queue.push_frame(Command::SynAck, id, &[]);
    }
    let (mut from_target, mut to_target) = mux::split(outbound.stream);
    let _lease = outbound.lease;
    let counters = core.counters();
    let upload = async {
        let mut buf = pending;
        loop {
            if !buf.is_empty() {
                if to_target.write_all(&buf).await.is_err() {
                    return RelayEnd::TargetFinished;
                }
                counters.bytes_up.add(buf.len() as u64);
                session.user_counters.bytes_up.add(buf.len() as u64);
                entry.last_activity.set(Instant::now());
            }
            if !entry.upload.take_all(&mut buf).await {
                return RelayEnd::ClientFinished;
            }
        }
    };
    let download = async {
        loop {
            // The target's bytes land behind a header slot and that buffer is the
            // frame TLS encrypts from: no copy on the way down.
            match mux::read_frame(&mut from_target).await {
                Ok(None) | Err(_) => return RelayEnd::TargetFinished,
                Ok(Some((buf, n))) => {
                    if session.queue.push_frame_buffer(id, buf, n).await.is_err() {
                        return RelayEnd::ClientFinished;
                    }
                    counters.bytes_down.add(n as u64);
                    session.user_counters.bytes_down.add(n as u64);
                    entry.last_activity.set(Instant::now());
                }
            }
        }
    };
    let end = future::or(upload, download).await;
    match end {
        RelayEnd::TargetFinished => true,
        RelayEnd::ClientFinished => {
            // We close first: end with RST where nothing can be lost by it, so the
            // server keeps no TIME_WAIT socket per stream.
            mux::reset_on_close_if_delivered(&from_target.get_ref());
            false
        }
    }
}

/// Tells the client its stream failed: SYNACK with the reason (v2); FIN follows.
pub(super) fn refuse(session: &Session, id: u32, reason: &str) -> bool {
    if session.version.get() >= 2 {
        session
            .queue
            .push_frame(Command::SynAck, id, reason.as_bytes());
    }
    true
}
