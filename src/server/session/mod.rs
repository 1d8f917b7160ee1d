//! The server side of a connection: TLS handshake, authentication, then the session
//! that demultiplexes frames into streams and relays each stream to its target.
//!
//! Every rule of the session lives in [`ServerSession`], the sans-IO machine;
//! this driver has none of its own. A session is one task running three loops at
//! once: the reader (read, decode, hand each frame to the machine, carry out its
//! actions, wait while it wants no more), the timer loop (sleep until the
//! machine's next deadline, tell it the time, carry out its actions) and the
//! coalescing writer ([`crate::plumbing::write_loop`], its first writes shaped
//! by the padding scheme unless `--downlink-padding false`). Each stream is its own task
//! (see [`stream`], [`uot`]), so one slow dial never stalls the others; it reports
//! each step to the machine. Failures are scoped as in h2: a stream failure
//! answers SYNACK error or FIN and the session goes on; a session failure sends
//! Alert (where the protocol says so) and closes the connection.

mod fallback;
mod handshake;
mod stream;
mod uot;

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::rc::{Rc, Weak};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_lite::future;
use glommio::net::TcpStream;
use log::{debug, info};

use crate::accounts::Account;
use crate::limits::{OutboundShare, PendingSlot};
use crate::node::routes::Protocol;
use crate::plumbing::{
    self, Event, Pipe, Plaintext, ReadHalf, Signal, TlsConnection, WriteHalf, WriteQueue,
};
use crate::proto::frame::{Deframer, Piece};
use crate::proto::session::{
    Action, Close, Delivery, Notice, Payload, Refusal, ServerSession, SharedBudget, StreamEvent,
};
use crate::proto::Address;
use crate::proto::Settings;
use crate::server::context::{CoreContext, CoreUser};
use crate::speed_limit::Direction;
use crate::stats::Limit;
use handshake::{Admission, Rejection};

/// The reason a client reads for a stream past its user's outbound share.
const OUTBOUND_SHARE_REACHED: &str =
    "outbound connection limit reached for this user (others are using the server)";
/// The reason a client reads for a stream whose target the panel's routes block.
pub(super) const ROUTE_BLOCKED: &str = "target blocked by the server's routes";
/// Bound on flushing the last frames (an Alert) when a session ends.
const CLOSE_FLUSH_TIMEOUT: Duration = Duration::from_secs(5);

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
    let (tls, account) = match handshake::admit(tcp, peer.ip(), &core).await {
        Admission::Accepted { tls, account } => (tls, account),
        Admission::Rejected {
            tls,
            read,
            why,
            standby,
        } => {
            counters.auth_failures.add(1);
            guessing(&core, peer, why);
            match core.config.fallback {
                Some(fallback) => {
                    info!("{peer}: authentication failed ({why}); handed to fallback {fallback}");
                    counters.fallbacks.add(1);
                    fallback::relay(tls, read, standby, fallback, peer, &core).await;
                }
                None => info!("{peer}: authentication failed ({why}); connection closed"),
            }
            return;
        }
        Admission::AcmeValidation => {
            debug!("{peer}: answered an ACME TLS-ALPN-01 validation");
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
    let session = Rc::new_cyclic(|this| {
        Session::new(core.clone(), peer, account, slot.user_held(), this.clone())
    });
    // Split before the session's future is made, so the TLS connection lives in
    // its own allocation rather than inside the task.
    let (reader, writer) = plumbing::split(tls);
    glommio::spawn_local(async move {
        let _slot = slot;
        let reason = session.clone().run(reader, writer).await;
        debug!(
            "{peer}: session of user {} closed: {reason}",
            session.user()
        );
        session.core.counters().sessions_open.sub(1);
    })
    .detach();
}

/// Counts a connection refused for its password against its client's address,
/// and says when that blocks the address (or the address was blocked).
fn guessing(core: &CoreContext, peer: SocketAddr, why: Rejection) {
    if why == Rejection::Blocked {
        core.limit_reached(Limit::WrongPasswords, || {
            format!("{peer}: refused unchecked: its address is blocked for wrong passwords")
        });
    } else if why == Rejection::WrongPassword {
        let guesses = &core.pending.guesses;
        if let Some(block) = guesses.wrong_password(peer.ip(), Instant::now()) {
            let rules = guesses.rules();
            core.log_limit(Limit::WrongPasswords, || {
                format!(
                    "{}: {} wrong passwords within {:?}: its connections are refused unchecked for {block:?}",
                    peer.ip(),
                    rules.limit,
                    rules.window
                )
            });
        }
    }
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

/// What the session keeps for one stream, shared with the stream's task.
pub(super) struct StreamEntry {
    /// Client->target bytes.
    upload: Pipe,
    /// Set when the session gives up on the stream: its task ends.
    stop: Event,
    /// Bytes taken from `upload` and not yet handed to the kernel.
    in_transit: Cell<usize>,
    /// The target connection, to ask the kernel what it still holds.
    target: RefCell<Weak<RefCell<TcpStream>>>,
}

impl StreamEntry {
    fn new() -> StreamEntry {
        StreamEntry {
            upload: Pipe::new(usize::MAX),
            stop: Event::default(),
            in_transit: Cell::new(0),
            target: RefCell::new(Weak::new()),
        }
    }

    /// Bytes for the target not yet acknowledged by it: in our buffers and in
    /// the socket's kernel send queue.
    fn unacknowledged(&self) -> usize {
        let in_kernel = self
            .with_target(|tcp| plumbing::unacknowledged(tcp).ok())
            .flatten()
            .unwrap_or(0);
        self.upload.buffered() + self.in_transit.get() + in_kernel
    }

    /// Sends what it can of `data` to the target without waiting, when nothing of
    /// the stream is waiting before it (in its pipe, or being written by its
    /// task); returns how much the kernel took.
    fn send_direct(&self, data: &[u8], more: bool) -> usize {
        if !self.upload.is_empty_and_open() || self.in_transit.get() > 0 {
            return 0;
        }
        self.with_target(|tcp| plumbing::send_now(tcp, data, more).unwrap_or(0))
            .unwrap_or(0)
    }

    /// Runs `f` on the target connection while it is open (and not borrowed).
    fn with_target<T>(&self, f: impl FnOnce(&TcpStream) -> T) -> Option<T> {
        let tcp = self.target.borrow().upgrade()?;
        let tcp = tcp.try_borrow().ok()?;
        Some(f(&tcp))
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
    /// Every rule of the session (borrowed only between awaits).
    machine: RefCell<ServerSession>,
    /// The driver's part of each open stream.
    streams: RefCell<HashMap<u32, Rc<StreamEntry>>>,
    closed: Event,
    /// Set with [`Session::end`] when the machine or a look outside ends the session.
    ending: Event,
    end: RefCell<Option<SessionEnd>>,
    /// Wakes the reader paused by the machine.
    resume: Signal,
    /// Wakes the timer loop when the next deadline moved earlier.
    rearm: Signal,
    /// The deadline the timer loop sleeps until.
    armed: Cell<Option<Instant>>,
    /// This session's part of its core's and user's totals for targets (the
    /// machine's [`ServerSession::upload_held`] when last synced).
    upload_held: Cell<usize>,
    /// Kernel receive buffers reserved by this session's UDP associations.
    udp_buffers: Cell<usize>,
    /// What all sessions of this user hold for their targets, over all cores.
    user_held: Arc<AtomicUsize>,
    /// This session, for the tasks it spawns.
    this: Weak<Session>,
    /// The client's connection, to see whether it was reset.
    connection: RefCell<Weak<RefCell<TlsConnection>>>,
}

impl Drop for Session {
    fn drop(&mut self) {
        self.set_upload_held(0);
    }
}

impl Session {
    fn new(
        core: Rc<CoreContext>,
        peer: SocketAddr,
        account: Arc<Account>,
        user_held: Arc<AtomicUsize>,
        this: Weak<Session>,
    ) -> Session {
        let machine = ServerSession::new(
            core.session_rules.clone(),
            core.config.padding.load().md5_hex(),
            Instant::now(),
        );
        Session {
            core_user: core.user(account.name()),
            account,
            peer,
            queue: WriteQueue::default(),
            machine: RefCell::new(machine),
            streams: RefCell::default(),
            closed: Event::default(),
            ending: Event::default(),
            end: RefCell::new(None),
            resume: Signal::default(),
            rearm: Signal::default(),
            armed: Cell::new(None),
            upload_held: Cell::new(0),
            udp_buffers: Cell::new(0),
            user_held,
            this,
            connection: RefCell::new(Weak::new()),
            core,
        }
    }

    /// The user's name.
    fn user(&self) -> &str {
        self.account.name()
    }

    async fn run(
        self: Rc<Self>,
        reader: ReadHalf<TlsConnection>,
        writer: WriteHalf<TlsConnection>,
    ) -> SessionEnd {
        let decided: RefCell<Option<SessionEnd>> = RefCell::new(None);
        let connection = reader.downgrade();
        *self.connection.borrow_mut() = connection.clone();
        let reading = async {
            let ended = async {
                self.ending.wait().await;
                self.end.take().unwrap_or(SessionEnd::ClientClosed)
            };
            let shutdown = async {
                self.core.shutdown.wait().await;
                SessionEnd::Shutdown
            };
            let end = future::or(
                future::or(self.read_loop(reader), ended),
                future::or(self.timer_loop(), shutdown),
            )
            .await;
            if let SessionEnd::WriteStalled(_) = end {
                // The client reads nothing: what the kernel still holds for it
                // goes with an RST instead of staying with an orphaned socket.
                if let Some(tls) = connection.upgrade() {
                    if let Ok(tls) = tls.try_borrow() {
                        plumbing::reset_on_close(tls.tcp());
                    }
                }
            }
            *decided.borrow_mut() = Some(end);
            // Let the writer send what is queued (an Alert, say), within a bound.
            self.queue.close();
            glommio::timer::sleep(CLOSE_FLUSH_TIMEOUT).await;
            Ok(())
        };
        let mut padder = (self.core.config.downlink_padding)
            .then(|| plumbing::Padder::fixed(self.core.config.padding.load()));
        let writing = plumbing::write_loop(writer, &self.queue, padder.as_mut());
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
        let streams: Vec<_> = self.streams.borrow_mut().drain().collect();
        for (_, entry) in streams {
            // What the targets did not acknowledge is dropped at once instead of
            // staying with an orphaned socket after the accounting is gone.
            entry.with_target(plumbing::reset_on_close);
            entry.upload.abort();
            self.core.counters().streams_open.sub(1);
        }
    }

    /// The loop that reads: decrypt, decode, hand each frame to the machine, carry
    /// out its actions; while the machine wants no more, or answers wait unread
    /// by the client, wait. Frames are decoded from each decrypted record where
    /// it lies ([`Session::take_plaintext`]).
    async fn read_loop(&self, reader: ReadHalf<TlsConnection>) -> SessionEnd {
        let mut deframer = Deframer::default();
        loop {
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
            while !self.machine.borrow().wants_read() && !self.ending.is_set() {
                self.resume.wait().await;
            }
            let mut delivered = 0;
            let mut take = |bytes: &[u8]| self.take_plaintext(&mut deframer, bytes, &mut delivered);
            let read =
                future::poll_fn(|cx| reader.with_mut(|tls| tls.poll_plaintext(cx, &mut take)))
                    .await;
            match read {
                Ok(Plaintext::Offered) => {}
                Ok(Plaintext::Ended) => return SessionEnd::ClientClosed,
                Err(e) => return SessionEnd::ReadFailed(e),
            }
            // Past the user's speed limit the session is not read: the client's
            // excess waits in its own buffers.
            self.throttle(Direction::Up, delivered).await;
            // A client that keeps the socket full must not keep the writer and
            // every other task on the core from running.
            future::yield_now().await;
        }
    }

    /// Decodes the frames in `bytes` (plaintext as decrypted), hands each to the
    /// machine and carries out its actions, until the machine wants no more or
    /// answers wait unread; returns the bytes taken, and adds the stream bytes
    /// delivered to `delivered`.
    fn take_plaintext(
        &self,
        deframer: &mut Deframer,
        bytes: &[u8],
        delivered: &mut usize,
    ) -> usize {
        let mut input = bytes;
        let now = Instant::now();
        while !self.ending.is_set()
            && self.machine.borrow().wants_read()
            && !self.queue.control_over_high_water()
        {
            let Some(Piece { frame, continues }) = deframer.next(&mut input) else {
                break;
            };
            let delivery = self.machine.borrow_mut().handle_frame(frame, now);
            if let Some(Delivery { id, data }) = delivery {
                self.deliver(id, data, continues, now);
                *delivered += data.len();
            }
            self.carry_out();
        }
        bytes.len() - input.len()
    }

    /// The loop that keeps time: sleep until the machine's next deadline (or
    /// until it moves earlier), tell the machine the time, carry out its actions.
    async fn timer_loop(&self) -> SessionEnd {
        loop {
            let deadline = self.machine.borrow().poll_timeout();
            self.armed.set(deadline);
            let Some(deadline) = deadline else {
                return future::pending().await;
            };
            let sleep = glommio::timer::sleep(deadline.saturating_duration_since(Instant::now()));
            future::or(sleep, self.rearm.wait()).await;
            self.machine.borrow_mut().handle_timeout(Instant::now());
            self.carry_out();
        }
    }

    /// Hands a PSH's bytes to their stream's target or buffer, and tells the
    /// machine when a budget shared with other sessions is passed. `more`: the
    /// rest of the frame is on its way, so the kernel may hold these bytes to
    /// send with it.
    fn deliver(&self, id: u32, data: &[u8], more: bool, now: Instant) {
        let entry = self.entry(id);
        if let Some(entry) = entry {
            // Straight from the decrypted record to the target when nothing of
            // the stream waits before these bytes and the kernel takes them now;
            // only what it does not take is copied into the stream's buffer.
            let sent = entry.send_direct(data, more);
            if sent > 0 {
                self.count_upload(sent);
                self.machine
                    .borrow_mut()
                    .handle_stream_event(id, StreamEvent::Taken(sent), now);
            }
            // A closed pipe means the stream is ending: its bytes have nowhere to go.
            let _ = entry.upload.append(&data[sent..]);
        }
        self.set_upload_held(self.machine.borrow().upload_held());
        if let Some(shared) = self.over_shared_budget() {
            self.machine.borrow_mut().handle_budget(Some(shared), now);
        }
    }

    /// A stream's task reports `event`; its consequences are carried out.
    pub(super) fn stream_event(&self, id: u32, event: StreamEvent) {
        // Bytes downloaded only mark the stream active: nothing to carry out.
        let quiet = matches!(event, StreamEvent::Downloaded(_));
        self.machine
            .borrow_mut()
            .handle_stream_event(id, event, Instant::now());
        if !quiet {
            self.carry_out();
        }
    }

    /// Carries out the machine's actions, then wakes the loops it concerns.
    fn carry_out(&self) {
        loop {
            let action = self.machine.borrow_mut().poll_action();
            let Some(action) = action else { break };
            self.carry_out_one(action);
        }
        let machine = self.machine.borrow();
        self.set_upload_held(machine.upload_held());
        if machine.wants_read() {
            self.resume.notify();
        }
        let next = machine.poll_timeout();
        if next.is_some_and(|next| self.armed.get().is_none_or(|armed| next < armed)) {
            self.rearm.notify();
        }
    }

    fn carry_out_one(&self, action: Action) {
        let counters = self.core.counters();
        match action {
            Action::Send(command, id, payload) => {
                let bytes;
                let padding;
                let data: &[u8] = match &payload {
                    Payload::Empty => &[],
                    Payload::PaddingScheme => {
                        counters.padding_updates.add(1);
                        padding = self.core.config.padding.load();
                        padding.text().as_bytes()
                    }
                    Payload::ServerSettings => {
                        bytes = Settings::server().encode();
                        &bytes
                    }
                    Payload::Text(text) => text.as_bytes(),
                };
                self.queue.push_frame(command, id, data);
            }
            Action::Open(id) => {
                counters.streams_open.add(1);
                counters.streams_total.add(1);
                self.streams
                    .borrow_mut()
                    .insert(id, Rc::new(StreamEntry::new()));
            }
            Action::Connect(id, target) => {
                if let Some(entry) = self.entry(id) {
                    glommio::spawn_local(stream::run(self.me(), id, entry, target)).detach();
                }
            }
            Action::Associate(id) => {
                if let Some(entry) = self.entry(id) {
                    glommio::spawn_local(uot::run(self.me(), id, entry)).detach();
                }
            }
            Action::Finish(id) => {
                if let Some(entry) = self.entry(id) {
                    entry.upload.finish();
                }
            }
            Action::Stop(id) => {
                if let Some(entry) = self.entry(id) {
                    entry.upload.abort();
                    entry.stop.set();
                }
            }
            Action::Forget(id) => {
                if let Some(entry) = self.streams.borrow_mut().remove(&id) {
                    entry.upload.abort();
                    counters.streams_open.sub(1);
                }
            }
            Action::Recount => {
                let now = Instant::now();
                let streams: Vec<_> = self
                    .streams
                    .borrow()
                    .iter()
                    .map(|(id, entry)| (*id, entry.unacknowledged()))
                    .collect();
                let mut machine = self.machine.borrow_mut();
                for (id, left) in streams {
                    machine.handle_stream_event(id, StreamEvent::Unacknowledged(left), now);
                }
                self.set_upload_held(machine.upload_held());
                machine.handle_budget(self.over_shared_budget(), now);
            }
            Action::Measure(id) => {
                if let Some(entry) = self.entry(id) {
                    let left = entry.unacknowledged();
                    self.machine.borrow_mut().handle_stream_event(
                        id,
                        StreamEvent::Unacknowledged(left),
                        Instant::now(),
                    );
                }
            }
            Action::Housekeeping => self.look_outside(),
            Action::Notice(notice) => self.notice(notice),
            Action::Close(Close::Alerted(text)) => self.end(SessionEnd::Alerted(text)),
            Action::Close(Close::Idle(limit)) => self.end(SessionEnd::Idle(limit)),
        }
    }

    /// What the session watches outside its machine: a user removed, a padding
    /// scheme changed, a client that takes no byte.
    fn look_outside(&self) {
        if self.account.is_revoked() {
            return self.end(SessionEnd::Revoked);
        }
        // Seen even while reading is paused.
        if peer_reset(&self.connection.borrow()) {
            return self.end(SessionEnd::ClientReset);
        }
        let write_timeout = self.core.config.write_timeout;
        if self
            .queue
            .write_started()
            .is_some_and(|since| since.elapsed() >= write_timeout)
        {
            return self.end(SessionEnd::WriteStalled(write_timeout));
        }
        let padding = self.core.config.padding.load();
        self.machine
            .borrow_mut()
            .handle_padding_changed(padding.md5_hex());
    }

    /// Counts and logs what the machine noticed.
    fn notice(&self, notice: Notice) {
        let peer = self.peer;
        let counters = self.core.counters();
        match notice {
            Notice::Refused(id, refusal) => {
                if let Some(limit) = refusal_limit(&refusal) {
                    counters.limit_hit(limit);
                }
                debug!("{peer}: stream {id} refused: {}", refusal.reason());
            }
            Notice::SynAckDeadline(id) => {
                counters.limit_hit(Limit::SynAckDeadline);
                debug!("{peer}: stream {id}: still dialing, SYNACK sent at the deadline");
            }
            Notice::Stalled(id) => debug!(
                "{peer}: stream {id}: its target took no byte for {:?}; closing it",
                self.core.config.stream_stall_timeout
            ),
            Notice::StreamIdle(id, limit) => {
                debug!("{peer}: stream {id} idle for {limit:?}, closing it")
            }
            Notice::SessionBudget | Notice::SharedBudget(_) => {
                let limit = match notice {
                    Notice::SharedBudget(SharedBudget::User) => Limit::UserBuffer,
                    Notice::SharedBudget(SharedBudget::Core) => Limit::ServerBuffer,
                    _ => Limit::SessionBuffer,
                };
                self.core.limit_reached(limit, || {
                    format!(
                        "{peer}: session of user {}: streams hold {} bytes for their targets (user {}, core {}); reading paused",
                        self.user(),
                        self.upload_held.get(),
                        self.user_held.load(Ordering::Relaxed),
                        self.core.upload_held.get()
                    )
                });
            }
        }
    }

    /// Ends the session for `why` (the first reason wins).
    fn end(&self, why: SessionEnd) {
        let mut end = self.end.borrow_mut();
        if end.is_none() && !self.ending.is_set() {
            *end = Some(why);
            self.ending.set();
        }
    }

    fn entry(&self, id: u32) -> Option<Rc<StreamEntry>> {
        self.streams.borrow().get(&id).cloned()
    }

    /// This session, for a task of its own.
    fn me(&self) -> Rc<Session> {
        self.this
            .upgrade()
            .expect("a session carries out actions only while it runs")
    }

    /// Takes what the client sent for stream `id` into `buf` (waiting for some),
    /// and tells the machine; `false` once the client finished.
    pub(super) async fn take_upload(
        &self,
        id: u32,
        entry: &StreamEntry,
        buf: &mut Vec<u8>,
    ) -> bool {
        if !entry.upload.take_all(buf).await {
            return false;
        }
        self.stream_event(id, StreamEvent::Taken(buf.len()));
        true
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
    /// share of the server's outbound cap; past it, the reason to refuse with.
    pub(super) fn take_outbound_share(&self, id: u32) -> Result<OutboundShare, String> {
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
                OUTBOUND_SHARE_REACHED.to_owned()
            })
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

    /// Counts `bytes` handed to a target in the server's and the user's totals.
    pub(super) fn count_upload(&self, bytes: usize) {
        self.core.counters().bytes_up.add(bytes as u64);
        self.core_user.counters.bytes_up.add(bytes as u64);
    }

    /// Sets this session's part of its core's and its user's totals for targets.
    fn set_upload_held(&self, held: usize) {
        let before = self.upload_held.replace(held);
        if held == before {
            return;
        }
        let totals = &self.core.upload_held;
        totals.set((totals.get() + held).saturating_sub(before));
        if held > before {
            self.user_held.fetch_add(held - before, Ordering::Relaxed);
        } else {
            self.user_held.fetch_sub(before - held, Ordering::Relaxed);
        }
    }

    /// Which budget for targets shared with other sessions is passed now, if
    /// any: its user's (all cores) or its core's share of the server's.
    fn over_shared_budget(&self) -> Option<SharedBudget> {
        let limits = &self.core.config.limits;
        if self.user_held.load(Ordering::Relaxed) > limits.buffered_per_user {
            Some(SharedBudget::User)
        } else if self.core.upload_held.get() > self.core.buffered_share() {
            Some(SharedBudget::Core)
        } else {
            None
        }
    }
}

/// The limit a refusal of the machine's counts against, if any (the driver's own
/// refusals are counted where they are made).
fn refusal_limit(refusal: &Refusal) -> Option<Limit> {
    match refusal {
        Refusal::TooManyStreams => Some(Limit::StreamsPerSession),
        Refusal::TooManyDialing => Some(Limit::DialingPerSession),
        Refusal::TooManyAssociations => Some(Limit::UotPerSession),
        Refusal::AddressTimeout(_) => Some(Limit::AddressTimeout),
        Refusal::BadAddress(_) | Refusal::UotV1 | Refusal::Failed(_) => None,
    }
}

/// Whether the client reset the connection.
fn peer_reset(client: &Weak<RefCell<TlsConnection>>) -> bool {
    client
        .upgrade()
        .and_then(|tls| {
            tls.try_borrow()
                .ok()
                .map(|tls| plumbing::peer_reset(tls.tcp()))
        })
        .unwrap_or(false)
}
