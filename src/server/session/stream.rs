//! One proxied TCP stream's task: dial the target the session machine named,
//! relay both ways, and report each step to the machine, which decides every
//! answer (SYNACK, FIN) and every deadline.

use std::rc::Rc;

use futures_lite::{future, AsyncWriteExt};

use super::{Session, StreamEntry};
use crate::node::routes::Protocol;
use crate::plumbing;
use crate::proto::session::{StreamEnd, StreamEvent};
use crate::proto::Address;
use crate::speed_limit::Direction;

/// Upload buffer capacity a stream keeps between writes to its target; the
/// stream's pipe and its writer pass one allocation back and forth, so a stream
/// keeps at most twice this.
const UPLOAD_KEEP_CAPACITY: usize = 32 * 1024;

/// How a stream's task ended.
pub(super) enum TaskEnd {
    /// Reported to the machine as it is.
    Event(StreamEvent),
    /// The machine stopped it, or the session closed: nothing to report.
    Stopped,
}

/// Runs stream `id` to `target` until it ends, then tells the machine.
pub(super) async fn run(session: Rc<Session>, id: u32, entry: Rc<StreamEntry>, target: Address) {
    let end = until_stopped(&session, &entry, serve(&session, id, &entry, target)).await;
    report(&session, id, end);
}

/// Runs `serve` until it ends, the machine stops the stream or the session closes.
pub(super) async fn until_stopped(
    session: &Session,
    entry: &StreamEntry,
    serve: impl std::future::Future<Output = TaskEnd>,
) -> TaskEnd {
    let stopped = async {
        future::or(entry.stop.wait(), session.closed.wait()).await;
        TaskEnd::Stopped
    };
    future::or(serve, stopped).await
}

/// Tells the machine how the task ended.
pub(super) fn report(session: &Session, id: u32, end: TaskEnd) {
    let event = match end {
        TaskEnd::Event(event) => event,
        TaskEnd::Stopped if session.closed.is_set() => return,
        TaskEnd::Stopped => StreamEvent::Ended(StreamEnd::ClientDone),
    };
    session.stream_event(id, event);
}

/// Serves the stream to its end.
async fn serve(session: &Session, id: u32, entry: &StreamEntry, target: Address) -> TaskEnd {
    let peer = session.peer;
    let core = &session.core;
    let failed = |why: String| TaskEnd::Event(StreamEvent::Failed(why));
    if session.blocked(&target, Protocol::Tcp, id) {
        return failed(super::ROUTE_BLOCKED.to_owned());
    }
    let _share = match session.take_outbound_share(id) {
        Ok(share) => share,
        Err(why) => return failed(why),
    };
    let dialed = core
        .pool
        .connect(
            &core.resolver,
            &target,
            session.user(),
            core.config.connect_timeout,
        )
        .await;
    let outbound = match dialed {
        Ok(outbound) => outbound,
        Err(e) => {
            match e.limit() {
                Some(limit) => core.limit_reached(limit, || {
                    format!("{peer}: stream {id} to {target} refused: {e}")
                }),
                None => log::debug!("{peer}: stream {id}: {e}"),
            }
            if let Some(why) = e.failure() {
                core.counters().dial_failed(why);
            }
            return failed(e.to_string());
        }
    };
    log::debug!("{peer}: stream {id} connected to {target}");
    let (mut from_target, mut to_target) = plumbing::split(outbound.stream);
    *entry.target.borrow_mut() = from_target.downgrade();
    // Stopped by the machine (stalled, idle, drained): whatever the kernel still
    // holds for the target is dropped with an RST, not kept by an orphan for
    // minutes, and a drained one keeps no TIME_WAIT socket.
    let mut reset_when_stopped = ResetOnDrop(entry, true);
    session.stream_event(id, StreamEvent::Dialed);
    let _lease = outbound.lease;
    let counters = core.counters();
    let upload = async {
        let mut buf = Vec::new();
        loop {
            if !session.take_upload(id, entry, &mut buf).await {
                return StreamEnd::ClientDone;
            }
            entry.in_transit.set(buf.len());
            let written = to_target.write_all(&buf).await;
            entry.in_transit.set(0);
            if written.is_err() {
                return StreamEnd::TargetClosed;
            }
            session.count_upload(buf.len());
            // `take_all` hands this allocation to the pipe: a backlog's large
            // one is freed here so that no stream keeps its peak for life.
            if buf.capacity() > UPLOAD_KEEP_CAPACITY {
                buf = Vec::new();
            }
        }
    };
    let download = async {
        loop {
            // The target's bytes land behind a header slot and that buffer is the
            // frame TLS encrypts from: no copy on the way down.
            match plumbing::read_frame(&mut from_target).await {
                Ok(None) | Err(_) => return StreamEnd::TargetClosed,
                Ok(Some((buf, n))) => {
                    if session.queue.push_frame_buffer(id, buf, n).await.is_err() {
                        return StreamEnd::ClientDone;
                    }
                    counters.bytes_down.add(n as u64);
                    session.core_user.counters.bytes_down.add(n as u64);
                    session.stream_event(id, StreamEvent::Downloaded(n));
                    // Past the user's speed limit the target is not read.
                    session.throttle(Direction::Down, n).await;
                }
            }
        }
    };
    let end = future::or(upload, download).await;
    if end == StreamEnd::ClientDone
        && !plumbing::reset_on_close_if_delivered(&from_target.get_ref())
    {
        // The client is done but the target has not taken everything: it gets
        // its bytes and FIN while the stream still counts against the session,
        // until the machine says it drained or stalled (and stops the task).
        if to_target.close().await.is_ok() {
            session.stream_event(id, StreamEvent::Draining);
            return future::pending().await;
        }
    }
    // A target that closed first closes as usual; after the client's end, with
    // RST (the kernel holds nothing for it now).
    reset_when_stopped.1 = end == StreamEnd::ClientDone;
    TaskEnd::Event(StreamEvent::Ended(end))
}

/// Makes the close of a stream's target an RST when dropped armed.
struct ResetOnDrop<'a>(&'a StreamEntry, bool);

impl Drop for ResetOnDrop<'_> {
    fn drop(&mut self) {
        if self.1 {
            self.0.with_target(plumbing::reset_on_close);
        }
    }
}
