//! The server side of a connection: TLS handshake, authentication, then the session
//! that demultiplexes frames into streams and relays each stream to its target.
//!
//! A session is one task running three loops at once: the frame reader, the
//! coalescing writer ([`crate::mux::write_loop`]) and an idle watchdog. Each stream
//! is its own task (see [`stream`]), so one slow dial never stalls the others.
//! Failures are scoped as in h2: a stream failure answers SYNACK error or FIN and
//! the session goes on; a session failure sends Alert (where the protocol says so)
//! and closes the connection.

mod fallback;
mod handshake;
mod stream;
mod uot;

use std::cell::{Cell, RefCell};
use std::net::SocketAddr;
use std::ops::ControlFlow;
use std::rc::{Rc, Weak};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_lite::{future, AsyncRead};
use futures_rustls::server::TlsStream;
use glommio::net::TcpStream;
use log::{debug, info};

use crate::accounts::Account;
use crate::limits::{OutboundShare, PendingSlot};
use crate::mux::{
    self, timeout, Event, FramesEnd, Pipe, ReadBuffer, ReadHalf, Transport, WriteHalf, WriteQueue,
};
use crate::node::routes::Protocol;
use crate::proto::frame::{Command, Frame};
use crate::proto::session::{Action, Payload, Refusal, ServerSession, SessionRules};
use crate::proto::Address;
use crate::proto::Settings;
use crate::server::context::{CoreContext, CoreUser};
use crate::speed_limit::Direction;
use crate::stats::Limit;
use handshake::Admission;

/// Free space offered to TLS per read.
const READ_CHUNK: usize = 16 * 1024;
/// Client->target bytes buffered per stream before the session stops reading
/// (see docs/operating.md, "Memory per stream and session").
pub const STREAM_UPLOAD_LIMIT: usize = 256 * 1024;
/// How soon a session over its upload budget first looks whether its targets
/// took bytes; each look that finds no byte taken waits twice as long, up to
/// [`UPLOAD_BUDGET_POLL_MAX`], so a stalled session costs little however many
/// streams it has.
const UPLOAD_BUDGET_POLL: Duration = Duration::from_millis(10);
/// The longest wait between two looks.
const UPLOAD_BUDGET_POLL_MAX: Duration = Duration::from_millis(320);
/// The reason a client reads for a stream past its user's outbound share.
const OUTBOUND_SHARE_REACHED: &str =
    "outbound connection limit reached for this user (others are using the server)";
/// The reason a client reads for a stream whose target the panel's routes block.
pub(super) const ROUTE_BLOCKED: &str = "target blocked by the server's routes";
/// Bound on flushing the last frames (an Alert) when a session ends.
const CLOSE_FLUSH_TIMEOUT: Duration = Duration::from_secs(5);

/// How a stream's task ended, which decides whether the client is sent FIN.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum StreamEnd {
    /// The client sent FIN first, or stopped taking the stream's data: nothing
    /// more is sent.
    ClientFinished,
    /// The target closed or failed, or the UDP association ended: FIN.
    TargetFinished,
    /// Refused before relaying (with SYNACK and the reason, on v2): FIN.
    Refused,
    /// The session closed the stream (its target stalled, or it idled): FIN.
    Reset,
    /// The session itself ended: nothing can be sent.
    SessionClosed,
}

impl StreamEnd {
    /// Whether the client must be told with FIN.
    pub(super) fn sends_fin(self) -> bool {
        matches!(
            self,
            StreamEnd::TargetFinished | StreamEnd::Refused | StreamEnd::Reset
        )
    }
}

/// Admits one accepted TCP connection; an authenticated one goes on as a session
/// in a task of its own, so the handshake's memory is freed when it ends instead
/// of staying in the task for the session's whole life.
///
/// `pending` counts the connection as not yet authenticated until its preamble
/// is accepted, or until the fallback relay ends.
pub(crate) async fn serve_connection(
    tcp: TcpStream,
    peer: SocketAddr,
    pending: PendingSlot,
    core: Rc<CoreContext>,
) {
    let counters = core.counters();
    let (tls, account, leftover) = match handshake::admit(tcp, &core).await {
        Admission::Accepted {
            tls,
            account,
            leftover,
        } => (tls, account, leftover),
        Admission::Rejected { tls, read, why } => {
            counters.auth_failures.add(1);
            match core.config.fallback {
                Some(fallback) => {
                    info!("{peer}: authentication failed ({why}); handed to fallback {fallback}");
                    counters.fallbacks.add(1);
                    fallback::relay(tls, read, fallback, peer, &core).await;
                }
                None => info!("{peer}: authentication failed ({why}); connection closed"),
            }
            return;
        }
        Admission::Failed(why) => {
            counters.handshake_failures.add(1);
            debug!("{peer}: {why}");
            return;
        }
    };
    drop(pending);
    let user = account.name().to_owned();
    if account.is_revoked() {
        debug!("{peer}: user {user} was removed during the handshake; connection closed");
        return;
    }
    let slot = match core
        .sessions
        .admit(&user, peer.ip(), account.device_limit())
    {
        Ok(slot) => slot,
        Err(limit) => {
            core.limit_reached(limit, || format!("{peer}: session of user {user} refused"));
            return;
        }
    };
    counters.sessions_open.add(1);
    counters.sessions_total.add(1);
    debug!("{peer}: session opened for user {user}");
    let session = Rc::new(Session::new(core.clone(), peer, account, slot.user_held()));
    // Split before the session's future is made, so the TLS connection lives in
    // its own allocation rather than inside the task.
    let (reader, writer) = mux::split(tls);
    glommio::spawn_local(async move {
        let _slot = slot;
        let reason = session.clone().run(reader, writer, leftover).await;
        debug!(
            "{peer}: session of user {} closed: {reason}",
            session.user()
        );
        session.core.counters().sessions_open.sub(1);
    })
    .detach();
}

/// Why a session ended.
#[derive(Debug, thiserror::Error)]
enum SessionEnd {
    #[error("client closed the connection")]
    ClientClosed,
    #[error("client reset the connection while its session was not reading")]
    ClientReset,
    #[error("read failed: {0}")]
    ReadFailed(std::io::Error),
    #[error("write failed: {0}")]
    WriteFailed(std::io::Error),
    #[error("alert sent: {0}")]
    Alerted(&'static str),
    #[error("idle for {0:?}")]
    Idle(Duration),
    #[error("the client took no byte for {0:?}")]
    WriteStalled(Duration),
    #[error("server shutting down")]
    Shutdown,
    #[error("the user was removed (or its password changed)")]
    Revoked,
}

/// Per-stream state the reader shares with the stream's task.
struct StreamEntry {
    /// Client->target bytes, the target address first.
    upload: Pipe,
    /// Set when the session gives up on the stream (its target stalled): the
    /// stream's task ends and the client gets FIN.
    reset: Event,
    /// When a byte last moved either way.
    last_activity: Cell<Instant>,
    /// This stream's share of [`Session::upload_held`] as last counted.
    held: Cell<usize>,
    /// When a recount last saw its target acknowledge bytes.
    last_delivery: Cell<Instant>,
    /// Bytes taken from `upload` and not yet handed to the kernel.
    in_transit: Cell<usize>,
    /// The target connection, to ask the kernel what it still holds.
    target: RefCell<Weak<RefCell<TcpStream>>>,
}

impl StreamEntry {
    fn new() -> StreamEntry {
        StreamEntry {
            upload: Pipe::new(STREAM_UPLOAD_LIMIT),
            reset: Event::default(),
            last_activity: Cell::new(Instant::now()),
            held: Cell::new(0),
            last_delivery: Cell::new(Instant::now()),
            in_transit: Cell::new(0),
            target: RefCell::new(Weak::new()),
        }
    }

    /// Bytes for the target not yet acknowledged by it: in our buffers and in
    /// the socket's kernel send queue.
    fn unacknowledged(&self) -> usize {
        let in_kernel = self
            .with_target(|tcp| mux::unacknowledged(tcp).ok())
            .flatten()
            .unwrap_or(0);
        self.upload.buffered() + self.in_transit.get() + in_kernel
    }

    /// Runs `f` on the target connection while it is open (and not borrowed).
    fn with_target<T>(&self, f: impl FnOnce(&TcpStream) -> T) -> Option<T> {
        let tcp = self.target.borrow().upgrade()?;
        let tcp = tcp.try_borrow().ok()?;
        Some(f(&tcp))
    }

    /// Gives up on the stream: its task ends, the client gets FIN, and whatever
    /// its target did not take is dropped with an RST.
    fn reset(&self) {
        self.upload.abort();
        self.reset.set();
    }

    /// Makes the coming close of the target connection an RST: the session is
    /// ending, and whatever the target has not acknowledged is dropped at once
    /// instead of staying with an orphaned socket after the accounting is gone
    /// (what it did acknowledge is not lost, and no TIME_WAIT socket stays).
    fn reset_target_on_close(&self) {
        self.with_target(mux::reset_on_close);
    }
}

/// A session's state, shared by its loops and its stream tasks.
pub(crate) struct Session {
    core: Rc<CoreContext>,
    peer: SocketAddr,
    /// The user's account: its name, limits shared over cores, revocation.
    account: Arc<Account>,
    /// What this core keeps for the user: traffic counters, speed credit.
    core_user: Rc<CoreUser>,
    queue: WriteQueue,
    /// The protocol's rules and the streams it has open (borrowed only between awaits).
    rules: RefCell<ServerSession<Rc<StreamEntry>>>,
    closed: Event,
    /// Bytes taken from the client for targets that no target has acknowledged
    /// yet, over all streams: an upper bound, made exact by
    /// [`Session::recount_upload`] whenever it passes the session's budget.
    upload_held: Cell<usize>,
    /// Kernel receive buffers reserved by this session's UDP associations.
    udp_buffers: Cell<usize>,
    /// What all sessions of this user hold for their targets, over all cores
    /// (each session adds its [`Session::upload_held`]).
    user_held: Arc<AtomicUsize>,
}

impl Drop for Session {
    fn drop(&mut self) {
        self.set_upload_held(0);
    }
}

impl Session {
    /// Tells the client stream `id` failed: SYNACK with the reason (v2); the
    /// caller's FIN follows.
    pub(super) fn refuse(&self, id: u32, reason: &str) -> StreamEnd {
        if self.version() >= 2 {
            self.queue
                .push_frame(Command::SynAck, id, reason.as_bytes());
        }
        StreamEnd::Refused
    }

    /// Whether the routes block `target` for stream `id` (counted and logged if so).
    pub(super) fn blocked(&self, target: &Address, protocol: Protocol, id: u32) -> bool {
        let routes = self.core.config.routes.load();
        if routes.is_empty() {
            return false;
        }
        let blocked = match target {
            Address::Domain(name, port) => routes.blocks_name(name, *port, protocol),
            Address::Ip(addr) => routes.blocks_ip(addr.ip(), addr.port(), protocol),
        };
        if blocked {
            self.core.limit_reached(Limit::Route, || {
                format!(
                    "{}: stream {id} of user {} to {target} refused by the routes",
                    self.peer,
                    self.user()
                )
            });
        }
        blocked
    }

    /// Counts an outbound connection for stream `id` against its user's fair
    /// share of the server's outbound cap, or refuses the stream past it.
    pub(super) fn take_outbound_share(&self, id: u32) -> Result<OutboundShare, StreamEnd> {
        let core = &self.core;
        core.sessions
            .take_outbound(self.user(), core.config.pool.max_outbound)
            .map_err(|limit| {
                core.limit_reached(limit, || {
                    format!(
                        "{}: stream {id} of user {} refused: it holds its share of outbound connections",
                        self.peer, self.user()
                    )
                });
                self.refuse(id, OUTBOUND_SHARE_REACHED)
            })
    }

    fn new(
        core: Rc<CoreContext>,
        peer: SocketAddr,
        account: Arc<Account>,
        user_held: Arc<AtomicUsize>,
    ) -> Session {
        let limits = &core.config.limits;
        let rules = SessionRules {
            streams: limits.streams_per_session,
            dialing: limits.dialing_per_session,
            uot: limits.uot_per_session,
            idle_timeout: core.config.session_idle_timeout,
        };
        Session {
            core_user: core.user(account.name()),
            account,
            core,
            peer,
            queue: WriteQueue::default(),
            rules: RefCell::new(ServerSession::new(rules, Instant::now())),
            closed: Event::default(),
            upload_held: Cell::new(0),
            udp_buffers: Cell::new(0),
            user_held,
        }
    }

    /// The user's name.
    fn user(&self) -> &str {
        self.account.name()
    }

    /// The client's protocol version (0 until its Settings arrived).
    fn version(&self) -> u32 {
        self.rules.borrow().version()
    }

    /// The streams open now.
    fn open_streams(&self) -> Vec<(u32, Rc<StreamEntry>)> {
        self.rules
            .borrow()
            .stream_values()
            .map(|(id, stream)| (id, stream.clone()))
            .collect()
    }

    async fn run(
        self: Rc<Self>,
        reader: ReadHalf<TlsStream<Transport>>,
        writer: WriteHalf<TlsStream<Transport>>,
        leftover: ReadBuffer,
    ) -> SessionEnd {
        let decided: RefCell<Option<SessionEnd>> = RefCell::new(None);
        let connection = reader.downgrade();
        let reading = async {
            let end = future::or(
                future::or(self.read_loop(reader, leftover), self.watchdog(&connection)),
                async {
                    self.core.shutdown.wait().await;
                    SessionEnd::Shutdown
                },
            )
            .await;
            if let SessionEnd::WriteStalled(_) = end {
                // The client reads nothing: what the kernel still holds for it
                // goes with an RST instead of staying with an orphaned socket.
                if let Some(tls) = connection.upgrade() {
                    if let Ok(tls) = tls.try_borrow() {
                        tls.get_ref().0.reset_on_close();
                    }
                }
            }
            *decided.borrow_mut() = Some(end);
            // Let the writer send what is queued (an Alert, say), within a bound.
            self.queue.close();
            glommio::timer::sleep(CLOSE_FLUSH_TIMEOUT).await;
            Ok(())
        };
        let writing = mux::write_loop(writer, &self.queue, None);
        let written = future::or(reading, writing).await;
        self.close();
        let decided = decided.take();
        match (decided, written) {
            (Some(end), _) => end,
            (None, Err(e)) => SessionEnd::WriteFailed(e),
            (None, Ok(())) => SessionEnd::ClientClosed,
        }
    }

    /// Ends every stream and fails further queueing.
    fn close(&self) {
        self.closed.set();
        self.queue.close();
        let streams = self.rules.borrow_mut().end_all();
        for stream in streams {
            stream.reset_target_on_close();
            stream.upload.abort();
        }
    }

    async fn read_loop<R: AsyncRead + Unpin>(
        self: &Rc<Self>,
        mut reader: R,
        mut buf: ReadBuffer,
    ) -> SessionEnd {
        let handle = async |frame: Frame<'_>| self.handle_frame(frame).await;
        let on_read = || self.rules.borrow_mut().on_read(Instant::now());
        match mux::read_frames(&mut reader, &mut buf, handle, on_read).await {
            FramesEnd::Closed => SessionEnd::ClientClosed,
            FramesEnd::Failed(e) => SessionEnd::ReadFailed(e),
            FramesEnd::Stopped(end) => end,
        }
    }

    async fn handle_frame(self: &Rc<Self>, frame: Frame<'_>) -> ControlFlow<SessionEnd> {
        // A frame may need an answer: none is made while the client leaves the
        // last ones unread, so what it sends cannot grow the queue.
        if self.queue.control_over_high_water() {
            self.core.limit_reached(Limit::UnreadAnswers, || {
                format!(
                    "{}: session of user {}: answers unread by the client; reading paused",
                    self.peer,
                    self.user()
                )
            });
            self.queue.wait_control_room().await;
        }
        let padding = self.core.config.padding.load();
        let actions = self
            .rules
            .borrow_mut()
            .on_frame(&frame, padding.md5_hex(), |_| Rc::new(StreamEntry::new()));
        for action in actions {
            match action {
                Action::Send(command, id, payload) => {
                    let server_settings;
                    let data: &[u8] = match payload {
                        Payload::Empty => &[],
                        Payload::PaddingScheme => {
                            self.core.counters().padding_updates.add(1);
                            padding.text().as_bytes()
                        }
                        Payload::ServerSettings => {
                            server_settings = Settings::server().encode();
                            &server_settings
                        }
                    };
                    self.queue.push_frame(command, id, data);
                }
                Action::Open(id, entry) => {
                    glommio::spawn_local(stream::run(self.clone(), id, entry)).detach();
                }
                Action::Data(id, entry, data) => {
                    self.push_upload(id, &entry, data).await;
                    // Past the user's speed limit the session is not read:
                    // the client's excess waits in its own buffers.
                    self.throttle(Direction::Up, data.len()).await;
                }
                Action::Finish(_, entry) => entry.upload.finish(),
                Action::Refuse(id, refusal) => {
                    self.core.counters().limit_hit(match refusal {
                        Refusal::TooManyStreams => Limit::StreamsPerSession,
                        Refusal::TooManyDialing => Limit::DialingPerSession,
                        Refusal::TooManyAssociations => Limit::UotPerSession,
                    });
                    log::trace!("{}: stream {id} refused: {}", self.peer, refusal.reason());
                    self.refuse(id, refusal.reason());
                    self.queue.push_frame(Command::Fin, id, &[]);
                }
                Action::Alert(text) => {
                    self.queue.push_frame(Command::Alert, 0, text.as_bytes());
                    return ControlFlow::Break(SessionEnd::Alerted(text));
                }
            }
        }
        ControlFlow::Continue(())
    }

    /// Hands client bytes to a stream. Past the stream's buffer limit the session
    /// stops reading until the target drains; a target that takes no byte for
    /// `stream_stall_timeout` loses its stream (FIN) so the session can go on.
    async fn push_upload(&self, id: u32, stream: &StreamEntry, data: &[u8]) {
        // A closed pipe means the stream is ending: its bytes have nowhere to go.
        let Ok(over_limit) = stream.upload.append(data) else {
            return;
        };
        stream.held.set(stream.held.get() + data.len());
        self.set_upload_held(self.upload_held.get() + data.len());
        if self.over_upload_budget().is_some() {
            self.wait_for_upload_budget().await;
        }
        if !over_limit {
            return;
        }
        let limit = self.core.config.stream_stall_timeout;
        loop {
            let consumed = stream.upload.consumed();
            match timeout(limit, stream.upload.wait_room()).await {
                Some(_) => return,
                None if stream.upload.consumed() == consumed => {
                    debug!(
                        "{}: stream {id}: target took no byte for {limit:?}, closing it",
                        self.peer
                    );
                    stream.reset();
                    return;
                }
                None => {}
            }
        }
    }

    /// Counts `bytes` moved `direction` against the user's speed limit (shared
    /// over all its sessions and cores) and waits as long as it says; the
    /// caller reads nothing more meanwhile.
    pub(super) async fn throttle(&self, direction: Direction, bytes: usize) {
        let speed = self.account.speed();
        if speed.rate() == 0 {
            // No limit: not even the clock is read.
            return;
        }
        if let Some(wait) = speed.take(&self.core_user.credit, direction, bytes, Instant::now()) {
            glommio::timer::sleep(wait).await;
        }
    }

    /// Sends the client the server's padding scheme if it changed (SIGHUP, the
    /// panel) since the client last had it.
    fn announce_padding(&self) {
        let padding = self.core.config.padding.load();
        let update = self
            .rules
            .borrow_mut()
            .on_padding_changed(padding.md5_hex());
        if let Some(Action::Send(command, id, _)) = update {
            self.core.counters().padding_updates.add(1);
            self.queue
                .push_frame(command, id, padding.text().as_bytes());
        }
    }

    /// Sets [`Session::upload_held`] to what the streams' buffers and their
    /// sockets' kernel queues hold now.
    fn recount_upload(&self) {
        let now = Instant::now();
        let mut total = 0;
        for (_, stream) in self.open_streams() {
            let held = stream.unacknowledged();
            if held < stream.held.replace(held) {
                stream.last_delivery.set(now);
            }
            total += held;
        }
        self.set_upload_held(total);
    }

    /// Forgets what a stream that ended still counted.
    fn release_upload(&self, stream: &StreamEntry) {
        let held = stream.held.replace(0);
        self.set_upload_held(self.upload_held.get().saturating_sub(held));
    }

    /// Sets [`Session::upload_held`], and this session's part of its core's and
    /// its user's totals with it.
    fn set_upload_held(&self, held: usize) {
        let before = self.upload_held.replace(held);
        let totals = &self.core.upload_held;
        totals.set((totals.get() + held).saturating_sub(before));
        if held >= before {
            self.user_held.fetch_add(held - before, Ordering::Relaxed);
        } else {
            self.user_held.fetch_sub(before - held, Ordering::Relaxed);
        }
    }

    /// Which budget for targets' bytes is passed now, if any: the session's, its
    /// user's (all cores) or its core's share of the server's.
    fn over_upload_budget(&self) -> Option<Limit> {
        let limits = &self.core.config.limits;
        if self.upload_held.get() > limits.buffered_per_session {
            Some(Limit::SessionBuffer)
        } else if self.user_held.load(Ordering::Relaxed) > limits.buffered_per_user {
            Some(Limit::UserBuffer)
        } else if self.core.upload_held.get() > self.core.buffered_share() {
            Some(Limit::ServerBuffer)
        } else {
            None
        }
    }

    /// Called when the session, its user or its core holds more than its budget
    /// for targets: stops reading until the targets take enough. While no target
    /// takes a byte for `stream_stall_timeout`, the streams holding bytes are
    /// closed until every budget is met again, so the session can go on.
    async fn wait_for_upload_budget(&self) {
        self.recount_upload();
        let Some(limit) = self.over_upload_budget() else {
            return;
        };
        self.core.limit_reached(limit, || {
            format!(
                "{}: session of user {}: streams hold {} bytes for their targets (user {}, core {}); reading paused",
                self.peer,
                self.user(),
                self.upload_held.get(),
                self.user_held.load(Ordering::Relaxed),
                self.core.upload_held.get()
            )
        });
        let stall_limit = self.core.config.stream_stall_timeout;
        let mut round = Instant::now();
        let mut poll = UPLOAD_BUDGET_POLL;
        while !self.closed.is_set() {
            let round_ends = (round + stall_limit).saturating_duration_since(Instant::now());
            glommio::timer::sleep(poll.min(round_ends).max(UPLOAD_BUDGET_POLL)).await;
            let before = self.upload_held.get();
            self.recount_upload();
            if self.over_upload_budget().is_none() {
                return;
            }
            poll = if self.upload_held.get() < before {
                UPLOAD_BUDGET_POLL
            } else {
                (poll * 2).min(UPLOAD_BUDGET_POLL_MAX)
            };
            if round.elapsed() >= stall_limit {
                self.reset_stalled_uploads(round, stall_limit);
                round = Instant::now();
                // The streams reset are about to give back what they held.
                poll = UPLOAD_BUDGET_POLL;
            }
        }
    }

    /// Closes the streams holding bytes whose targets acknowledged none since `since`.
    fn reset_stalled_uploads(&self, since: Instant, stalled_for: Duration) {
        for (id, stream) in self.open_streams() {
            if stream.held.get() > 0 && stream.last_delivery.get() < since {
                debug!(
                    "{}: stream {id}: its target took no byte for {stalled_for:?} with a budget for targets passed; closing it",
                    self.peer
                );
                stream.reset();
            }
        }
    }

    /// Ends the session when it has been idle too long, its writer is stuck, or
    /// its client reset the connection (seen even while reading is paused for a
    /// budget), and resets streams that moved no byte for the stream idle timeout.
    async fn watchdog(&self, client: &Weak<RefCell<TlsStream<Transport>>>) -> SessionEnd {
        let config = &self.core.config;
        let shortest = config
            .session_idle_timeout
            .min(config.stream_idle_timeout)
            .min(config.write_timeout);
        let check_every = mux::check_period(shortest);
        loop {
            glommio::timer::sleep(check_every).await;
            if self.rules.borrow().is_idle(Instant::now()) {
                return SessionEnd::Idle(config.session_idle_timeout);
            }
            if self
                .queue
                .write_started()
                .is_some_and(|since| since.elapsed() >= config.write_timeout)
            {
                return SessionEnd::WriteStalled(config.write_timeout);
            }
            let reset = client.upgrade().and_then(|tls| {
                tls.try_borrow()
                    .ok()
                    .map(|tls| tls.get_ref().0.peer_reset())
            });
            if reset == Some(true) {
                return SessionEnd::ClientReset;
            }
            if self.account.is_revoked() {
                return SessionEnd::Revoked;
            }
            self.announce_padding();
            if self.upload_held.get() > 0 {
                // Keeps this session's part of its user's and its core's totals
                // fresh, and frees what stalled targets hold while those are
                // passed (this session may have stopped sending).
                self.recount_upload();
                let shared = matches!(
                    self.over_upload_budget(),
                    Some(Limit::UserBuffer | Limit::ServerBuffer)
                );
                let stall = config.stream_stall_timeout;
                if let (true, Some(since)) = (shared, Instant::now().checked_sub(stall)) {
                    self.reset_stalled_uploads(since, stall);
                }
            }
            for (id, stream) in self.open_streams() {
                if stream.last_activity.get().elapsed() >= config.stream_idle_timeout {
                    debug!(
                        "{}: stream {id} idle for {:?}, closing it",
                        self.peer, config.stream_idle_timeout
                    );
                    stream.reset();
                }
            }
        }
    }
}
