//! The server side of a session as a state machine with no I/O, in quinn-proto's
//! shape: frames, stream events and the time go in; [`Action`]s and the next
//! deadline come out. Every rule of the session lives here, so the async driver
//! (`crate::server::session`) only carries out what it is told.
//!
//! The rules, each tested against the client machine on simulated time (the
//! unit tests' `pair` module):
//! - Settings must come before any SYN (or the session ends with an Alert); the
//!   client's version gates SYNACK and ServerSettings; a stale padding md5 is
//!   answered with UpdatePaddingScheme, once per scheme; heartbeats are answered;
//!   frames only a server sends are ignored.
//! - A stream goes through [`StreamState`]s: its address is read from its first
//!   bytes within [`SessionRules::address_timeout`]; a TCP target is dialed, and
//!   SYNACK (v2) is sent when the dial succeeds or, at the latest, at
//!   [`SessionRules::synack_deadline`] (clients close a session whose SYNACK takes
//!   3 s); UDP over TCP v2 becomes an association (v1 is refused).
//! - Caps: streams open, streams waiting for their target, associations; a SYN past
//!   one is refused (SYNACK with the reason on v2, then FIN), and the same id is
//!   not refused twice in a row.
//! - Upload flow control: bytes handed to a stream count against the stream's
//!   buffer and the session's budget until its target acknowledges them; past
//!   either, the session stops reading ([`ServerSession::wants_read`]). A target
//!   that takes no byte for [`SessionRules::stall_timeout`] loses its stream, so
//!   the session goes on. A stream the client finished drains to its target the
//!   same way.
//! - Idle: a stream that moves no byte for its idle timeout is closed; a session
//!   with no stream and no frame for [`SessionRules::idle_timeout`] ends.
//!
//! What needs the outside world is asked for with an action and answered with an
//! event: how many bytes a target still has not acknowledged ([`Action::Recount`],
//! [`Action::Measure`]), whether budgets shared with other sessions are passed
//! ([`ServerSession::handle_budget`]), the periodic look at things outside the
//! session ([`Action::Housekeeping`]).

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::rc::Rc;
use std::time::{Duration, Instant};

use super::addr::Address;
use super::frame::{Command, Frame};
use super::settings::Settings;
use super::uot::{UOT_V1_NAME, UOT_V2_NAME};

/// The Alert text for a SYN that arrives before Settings.
pub const ALERT_NO_SETTINGS: &str = "client did not send its settings";
/// The longest SOCKS address: type, length, 255 bytes of name, port.
const MAX_ADDRESS_LEN: usize = 1 + 1 + 255 + 2;
/// The first wait between two recounts while over budget; each recount that
/// finds no byte taken waits twice as long, up to [`BUDGET_POLL_MAX`].
pub const BUDGET_POLL: Duration = Duration::from_millis(10);
/// The longest wait between two recounts.
pub const BUDGET_POLL_MAX: Duration = Duration::from_millis(320);

/// What one session may hold, and how long things may take.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SessionRules {
    /// Streams open at once.
    pub streams: usize,
    /// Streams still waiting for their address or their dial.
    pub dialing: usize,
    /// UDP-over-TCP associations open at once.
    pub uot: usize,
    /// With no stream open and no frame for this long, the session ends.
    pub idle_timeout: Duration,
    /// A TCP stream that moves no byte either way for this long is closed.
    pub stream_idle_timeout: Duration,
    /// An association with no datagram either way for this long is closed.
    pub uot_idle_timeout: Duration,
    /// A stream's whole target address must arrive within this.
    pub address_timeout: Duration,
    /// SYNACK goes out this long after the dial began, even if it goes on.
    pub synack_deadline: Duration,
    /// A target that takes no byte for this long while it holds up the
    /// session (or while it drains) loses its stream.
    pub stall_timeout: Duration,
    /// Bytes buffered for one stream's target before the session stops reading.
    pub stream_buffer: usize,
    /// Bytes held for all targets of the session, acknowledged by none yet,
    /// before the session stops reading.
    pub session_buffer: usize,
    /// How often the periodic checks run (idle, housekeeping).
    pub check_period: Duration,
}

/// Why a stream was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// The session had [`SessionRules::streams`] open.
    TooManyStreams,
    /// The session had [`SessionRules::dialing`] waiting for their target.
    TooManyDialing,
    /// The session had [`SessionRules::uot`] UDP associations.
    TooManyAssociations,
    /// No whole address within [`SessionRules::address_timeout`].
    AddressTimeout(Duration),
    /// The first bytes are not an address.
    BadAddress(String),
    /// UDP over TCP version 1.
    UotV1,
    /// The driver could not serve it (dial failed, routes, shares): its reason.
    Failed(String),
}

impl Refusal {
    /// The reason the client reads in SYNACK.
    pub fn reason(&self) -> String {
        match self {
            Refusal::TooManyStreams => "too many streams open on this session".into(),
            Refusal::TooManyDialing => {
                "too many streams of this session waiting for their target".into()
            }
            Refusal::TooManyAssociations => {
                "too many UDP-over-TCP associations on this session".into()
            }
            Refusal::AddressTimeout(limit) => {
                format!("no whole target address within {limit:?}")
            }
            Refusal::BadAddress(why) => format!("bad target address: {why}"),
            Refusal::UotV1 => {
                "UDP over TCP v1 (sp.udp-over-tcp.arpa) is not supported; use v2".into()
            }
            Refusal::Failed(why) => why.clone(),
        }
    }
}

/// A control frame's payload, resolved by the driver where it is not here.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Payload {
    /// No data.
    Empty,
    /// The server's current padding scheme text.
    PaddingScheme,
    /// The server's settings (`v=2`).
    ServerSettings,
    /// This text (an Alert, a SYNACK's reason).
    Text(String),
}

/// Something worth counting or logging; the session goes on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Notice {
    /// A stream was refused.
    Refused(u32, Refusal),
    /// SYNACK went out at the deadline while the dial goes on.
    SynAckDeadline(u32),
    /// A stream's target took no byte for the stall timeout: the stream is closed.
    Stalled(u32),
    /// A stream moved no byte for its idle timeout: it is closed.
    StreamIdle(u32, Duration),
    /// The session's budget for its targets is passed: reading paused.
    SessionBudget,
    /// A budget shared with other sessions is passed: reading paused.
    SharedBudget(SharedBudget),
}

/// A budget for targets shared with other sessions, as the driver measures it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SharedBudget {
    /// All sessions of the user, over all cores.
    User,
    /// This core's share of the server's.
    Core,
}

/// Why the session ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Close {
    /// An Alert with this text was queued.
    Alerted(&'static str),
    /// No stream and no frame for this long.
    Idle(Duration),
}

/// What the driver must do, in order.
#[derive(Debug, PartialEq, Eq)]
pub enum Action {
    /// Queue this frame to the client.
    Send(Command, u32, Payload),
    /// A stream exists: give it a buffer for the bytes [`ServerSession::handle_frame`]
    /// hands over for it.
    Open(u32),
    /// Its target is known: dial it, then report [`StreamEvent::Dialed`] or
    /// [`StreamEvent::Failed`], relay, and report how it ended.
    Connect(u32, Address),
    /// It carries UDP over TCP v2: read the request from its buffer, then as
    /// [`Action::Connect`].
    Associate(u32),
    /// The client finished the stream: no more bytes come for it.
    Finish(u32),
    /// Give up on the stream: end its task and drop what its target did not take
    /// (answer with [`StreamEvent::Ended`]).
    Stop(u32),
    /// The stream is gone: free its buffer.
    Forget(u32),
    /// Report [`StreamEvent::Unacknowledged`] for every stream, then call
    /// [`ServerSession::handle_budget`].
    Recount,
    /// Report [`StreamEvent::Unacknowledged`] for this draining stream.
    Measure(u32),
    /// Look at what lies outside the session (a revoked user, a changed padding
    /// scheme, a stuck writer, a budget shared with others).
    Housekeeping,
    /// Count or log this.
    Notice(Notice),
    /// End the session (after sending what is queued).
    Close(Close),
}

/// What a stream's task reports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StreamEvent {
    /// The target is connected (or the association's socket ready).
    Dialed,
    /// The stream could not be served; its task has ended.
    Failed(String),
    /// The task took this many bytes from the stream's buffer for its target.
    Taken(usize),
    /// This many bytes went from the target toward the client.
    Downloaded(usize),
    /// Bytes for the target not acknowledged by it yet (buffers and kernel).
    Unacknowledged(usize),
    /// The client finished and the target has not acknowledged everything: the
    /// task sent FIN after it and waits ([`Action::Measure`] follows).
    Draining,
    /// The task has ended.
    Ended(StreamEnd),
}

/// How a stream's task ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StreamEnd {
    /// The target closed or failed (or the association ended): FIN.
    TargetClosed,
    /// The client finished first or stopped taking the stream's data: no FIN.
    ClientDone,
}

/// Where a stream is in its life.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StreamState {
    /// Its first bytes (the address) are still coming.
    AwaitingAddress,
    /// Its target is being dialed.
    Dialing,
    /// Relaying both ways.
    Relaying,
    /// A UDP-over-TCP association.
    Association,
    /// The client finished; its target is taking the rest.
    Draining,
    /// Told to stop: waiting for its task to end.
    Stopping,
}

struct Stream {
    state: StreamState,
    /// Counts against [`SessionRules::dialing`].
    dialing: bool,
    /// Counts against [`SessionRules::uot`].
    association: bool,
    /// The address's bytes so far (only while awaiting it).
    address: Vec<u8>,
    /// Bytes handed over and not taken by the task yet.
    buffered: usize,
    /// Bytes handed over and not known to be acknowledged by the target.
    held: usize,
    /// When a byte last moved either way.
    last_activity: Instant,
    /// When the target last acknowledged bytes (seen by a recount).
    last_delivery: Instant,
    /// The client gets FIN when the task ends.
    fin_owed: bool,
    /// SYNACK went out (or, on v1, would have).
    answered: bool,
    /// While draining: what the target still lacks and when that last fell.
    drain: Option<Drain>,
}

/// A finished stream's target taking the rest.
#[derive(Clone, Copy, Debug)]
struct Drain {
    left: usize,
    progress_at: Instant,
    poll: Duration,
    next_look: Option<Instant>,
}

impl Stream {
    fn new(now: Instant) -> Stream {
        Stream {
            state: StreamState::AwaitingAddress,
            dialing: true,
            association: false,
            address: Vec::new(),
            buffered: 0,
            held: 0,
            last_activity: now,
            last_delivery: now,
            fin_owed: false,
            answered: false,
            drain: None,
        }
    }
}

/// A per-stream deadline.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Timer {
    Address,
    SynAck,
    Drain,
}

/// Reading paused until the targets take enough.
#[derive(Clone, Copy, Debug)]
struct BudgetWait {
    /// The recount asked for has not been answered.
    awaiting: bool,
    /// The first answer has not come yet (it decides whether to pause at all).
    first: bool,
    round_start: Instant,
    poll: Duration,
    next_look: Option<Instant>,
    held_before: usize,
}

/// Reading paused until one stream's task takes from its full buffer.
#[derive(Clone, Copy, Debug)]
struct FullStream {
    id: u32,
    since: Instant,
}

/// The data of a PSH for the driver to buffer for stream `id`'s target.
#[derive(Debug, PartialEq, Eq)]
pub struct Delivery<'a> {
    /// The stream.
    pub id: u32,
    /// Its bytes (borrowed from the frame: no copy here).
    pub data: &'a [u8],
}

/// The server side of one session. See the module documentation.
pub struct ServerSession {
    /// Shared by every session of a core.
    rules: Rc<SessionRules>,
    streams: HashMap<u32, Stream>,
    timers: BinaryHeap<Reverse<(Instant, u32, Timer)>>,
    actions: VecDeque<Action>,
    padding_md5: String,
    settings_received: bool,
    version: u32,
    /// The client has the current padding scheme: it announced it, or it was
    /// sent to it.
    client_has_padding: bool,
    server_settings_sent: bool,
    last_refused: Option<u32>,
    dialing: usize,
    associations: usize,
    /// Sum of the streams' `held`.
    held: usize,
    budget: Option<BudgetWait>,
    /// A recount asked for by the periodic checks, not by a budget.
    housekeeping_recount: bool,
    full: Option<FullStream>,
    last_activity: Instant,
    next_check: Instant,
    ended: bool,
}

impl ServerSession {
    /// A session that has just authenticated at `now`, with the server's current
    /// padding scheme `padding_md5`.
    pub fn new(rules: Rc<SessionRules>, padding_md5: &str, now: Instant) -> Self {
        ServerSession {
            streams: HashMap::new(),
            timers: BinaryHeap::new(),
            actions: VecDeque::new(),
            padding_md5: padding_md5.to_owned(),
            settings_received: false,
            version: 0,
            client_has_padding: false,
            server_settings_sent: false,
            last_refused: None,
            dialing: 0,
            associations: 0,
            held: 0,
            budget: None,
            housekeeping_recount: false,
            full: None,
            last_activity: now,
            next_check: now + rules.check_period,
            rules,
            ended: false,
        }
    }

    /// The client's protocol version (0 until Settings arrived).
    pub fn version(&self) -> u32 {
        self.version
    }

    /// Streams open.
    pub fn streams(&self) -> usize {
        self.streams.len()
    }

    /// Streams still waiting for their address or dial.
    pub fn dialing(&self) -> usize {
        self.dialing
    }

    /// UDP-over-TCP associations open.
    pub fn associations(&self) -> usize {
        self.associations
    }

    /// A stream's state, if it is open.
    pub fn stream_state(&self, id: u32) -> Option<&StreamState> {
        self.streams.get(&id).map(|s| &s.state)
    }

    /// The ids of the open streams.
    pub fn stream_ids(&self) -> impl Iterator<Item = u32> + '_ {
        self.streams.keys().copied()
    }

    /// Bytes handed to targets that no target is known to have acknowledged.
    pub fn upload_held(&self) -> usize {
        self.held
    }

    /// Whether the driver should read the client's next frame now.
    pub fn wants_read(&self) -> bool {
        !self.ended && self.budget.is_none() && self.full.is_none()
    }

    /// Whether the session has ended (an Alert, idle).
    pub fn is_ended(&self) -> bool {
        self.ended
    }

    /// The next action for the driver, if any.
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// When [`ServerSession::handle_timeout`] must be called at the latest.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.ended {
            return None;
        }
        let mut next = self.next_check;
        if let Some(Reverse((at, ..))) = self.timers.peek() {
            next = next.min(*at);
        }
        if let Some(at) = self.budget.and_then(|b| b.next_look) {
            next = next.min(at);
        }
        if let Some(full) = self.full {
            next = next.min(full.since + self.rules.stall_timeout);
        }
        Some(next)
    }

    /// One frame from the client at `now`. A PSH's data for a stream whose target
    /// is known (or being dialed) is handed back, for the driver to buffer.
    pub fn handle_frame<'a>(&mut self, frame: Frame<'a>, now: Instant) -> Option<Delivery<'a>> {
        if self.ended {
            return None;
        }
        self.last_activity = now;
        let id = frame.stream_id;
        match frame.cmd {
            Command::Settings => self.on_settings(frame.data),
            Command::Syn => self.on_syn(id, now),
            Command::Push => return self.on_push(id, frame.data, now),
            Command::Fin => self.on_fin(id),
            Command::HeartRequest => self.send(Command::HeartResponse, id, Payload::Empty),
            // Padding, answers to our (never sent) heartbeats, frames only a server
            // sends, and commands from the future: read and ignored.
            Command::Waste
            | Command::HeartResponse
            | Command::Alert
            | Command::UpdatePaddingScheme
            | Command::SynAck
            | Command::ServerSettings
            | Command::Unknown(_) => {}
        }
        None
    }

    /// What a stream's task reports at `now`. Events for streams no longer open
    /// are ignored.
    pub fn handle_stream_event(&mut self, id: u32, event: StreamEvent, now: Instant) {
        if self.ended {
            return;
        }
        let version = self.version;
        let Some(stream) = self.streams.get_mut(&id) else {
            return;
        };
        match event {
            StreamEvent::Dialed => {
                if stream.state == StreamState::Dialing {
                    stream.state = StreamState::Relaying;
                }
                if !std::mem::replace(&mut stream.answered, true) && version >= 2 {
                    self.actions
                        .push_back(Action::Send(Command::SynAck, id, Payload::Empty));
                }
                stream.last_activity = now;
                self.leave_dialing(id);
            }
            StreamEvent::Failed(why) => {
                if stream.answered {
                    stream.fin_owed = true;
                    self.end_stream(id, now);
                } else {
                    self.refuse_open(id, Refusal::Failed(why));
                }
            }
            StreamEvent::Taken(n) => {
                stream.buffered = stream.buffered.saturating_sub(n);
                stream.last_activity = now;
                if let Some(full) = self.full {
                    if full.id == id {
                        if stream.buffered <= self.rules.stream_buffer {
                            self.full = None;
                        } else {
                            self.full = Some(FullStream { id, since: now });
                        }
                    }
                }
            }
            StreamEvent::Downloaded(_) => stream.last_activity = now,
            StreamEvent::Unacknowledged(n) => {
                if n < stream.held {
                    stream.last_delivery = now;
                }
                self.held = self.held - stream.held + n;
                stream.held = n;
                if let Some(mut drain) = stream.drain {
                    if n == 0 {
                        self.stop(id, false);
                        return;
                    }
                    if n < drain.left {
                        (drain.left, drain.progress_at, drain.poll) = (n, now, BUDGET_POLL);
                    } else if now.saturating_duration_since(drain.progress_at)
                        >= self.rules.stall_timeout
                    {
                        self.actions.push_back(Action::Notice(Notice::Stalled(id)));
                        self.stop(id, false);
                        return;
                    } else {
                        drain.poll = (drain.poll * 2).min(BUDGET_POLL_MAX);
                    }
                    let at = now + drain.poll;
                    drain.next_look = Some(at);
                    stream.drain = Some(drain);
                    self.timers.push(Reverse((at, id, Timer::Drain)));
                }
            }
            StreamEvent::Draining => {
                if matches!(stream.state, StreamState::Relaying | StreamState::Dialing) {
                    stream.state = StreamState::Draining;
                    stream.drain = Some(Drain {
                        left: usize::MAX,
                        progress_at: now,
                        poll: BUDGET_POLL,
                        next_look: None,
                    });
                    self.actions.push_back(Action::Measure(id));
                }
            }
            StreamEvent::Ended(end) => {
                if end == StreamEnd::TargetClosed {
                    stream.fin_owed = true;
                }
                self.end_stream(id, now);
            }
        }
    }

    /// The answer to [`Action::Recount`] (after every stream's
    /// [`StreamEvent::Unacknowledged`]), or news from the driver after a PSH:
    /// which budget shared with other sessions is passed, if any.
    pub fn handle_budget(&mut self, shared: Option<SharedBudget>, now: Instant) {
        if self.ended {
            return;
        }
        let over = if self.held > self.rules.session_buffer {
            Some(Notice::SessionBudget)
        } else {
            shared.map(Notice::SharedBudget)
        };
        let Some(mut wait) = self.budget else {
            if std::mem::take(&mut self.housekeeping_recount) {
                // The session may have stopped sending: free what stalled
                // targets hold while budgets shared with others are passed.
                if shared.is_some() {
                    self.stop_stalled(now.checked_sub(self.rules.stall_timeout));
                }
            } else if over.is_some() {
                self.start_budget_wait(now);
            }
            return;
        };
        if !wait.awaiting {
            // News between two recounts: the next recount will see it.
            return;
        }
        wait.awaiting = false;
        let Some(notice) = over else {
            self.budget = None;
            return;
        };
        if wait.first {
            wait.first = false;
            wait.round_start = now;
            self.actions.push_back(Action::Notice(notice));
        } else {
            wait.poll = if self.held < wait.held_before {
                BUDGET_POLL
            } else {
                (wait.poll * 2).min(BUDGET_POLL_MAX)
            };
            if now.saturating_duration_since(wait.round_start) >= self.rules.stall_timeout {
                self.stop_stalled(Some(wait.round_start));
                wait.round_start = now;
                // The streams stopped are about to give back what they held.
                wait.poll = BUDGET_POLL;
            }
        }
        wait.held_before = self.held;
        let round_ends =
            (wait.round_start + self.rules.stall_timeout).saturating_duration_since(now);
        wait.next_look = Some(now + wait.poll.min(round_ends).max(BUDGET_POLL));
        self.budget = Some(wait);
    }

    /// The server's padding scheme is now the one of `padding_md5` (SIGHUP, the
    /// panel): sent to the client unless it has it, or has not said which it has
    /// yet (its Settings will be answered).
    pub fn handle_padding_changed(&mut self, padding_md5: &str) {
        if self.padding_md5 == padding_md5 {
            return;
        }
        self.padding_md5 = padding_md5.to_owned();
        self.client_has_padding = false;
        if self.settings_received && !self.ended {
            self.send_padding();
        }
    }

    /// Time passed: deadlines due at `now` fire.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.ended {
            return;
        }
        while let Some(&Reverse((at, id, timer))) = self.timers.peek() {
            if at > now {
                break;
            }
            self.timers.pop();
            self.fire(id, timer, at);
        }
        if let Some(full) = self.full {
            if now >= full.since + self.rules.stall_timeout {
                self.full = None;
                self.actions
                    .push_back(Action::Notice(Notice::Stalled(full.id)));
                self.stop(full.id, true);
            }
        }
        if let Some(wait) = &mut self.budget {
            if wait.next_look.is_some_and(|at| now >= at) {
                wait.next_look = None;
                wait.awaiting = true;
                self.actions.push_back(Action::Recount);
            }
        }
        if now >= self.next_check {
            self.next_check = now + self.rules.check_period;
            self.check(now);
        }
    }

    fn fire(&mut self, id: u32, timer: Timer, at: Instant) {
        let Some(stream) = self.streams.get_mut(&id) else {
            return;
        };
        match (timer, &stream.state) {
            (Timer::Address, StreamState::AwaitingAddress) => {
                let limit = self.rules.address_timeout;
                self.refuse_open(id, Refusal::AddressTimeout(limit));
            }
            (Timer::SynAck, StreamState::Dialing) if !stream.answered => {
                stream.answered = true;
                self.actions
                    .push_back(Action::Notice(Notice::SynAckDeadline(id)));
                if self.version >= 2 {
                    self.send(Command::SynAck, id, Payload::Empty);
                }
            }
            (Timer::Drain, StreamState::Draining) => {
                // Only the latest look counts; earlier ones were superseded.
                if let Some(drain) = stream.drain.as_mut().filter(|d| d.next_look == Some(at)) {
                    drain.next_look = None;
                    self.actions.push_back(Action::Measure(id));
                }
            }
            _ => {}
        }
    }

    /// The periodic checks: the session's and streams' idle timeouts, a recount
    /// of what is held, and the driver's look outside.
    fn check(&mut self, now: Instant) {
        if self.streams.is_empty() && now >= self.last_activity + self.rules.idle_timeout {
            self.close(Close::Idle(self.rules.idle_timeout));
            return;
        }
        self.actions.push_back(Action::Housekeeping);
        if self.held > 0 && self.budget.is_none() {
            self.housekeeping_recount = true;
            self.actions.push_back(Action::Recount);
        }
        let idle: Vec<(u32, Duration)> = self
            .streams
            .iter()
            .filter_map(|(id, s)| {
                let limit = match s.state {
                    StreamState::Association => self.rules.uot_idle_timeout,
                    StreamState::Stopping => return None,
                    _ => self.rules.stream_idle_timeout,
                };
                (now.saturating_duration_since(s.last_activity) >= limit).then_some((*id, limit))
            })
            .collect();
        for (id, limit) in idle {
            self.actions
                .push_back(Action::Notice(Notice::StreamIdle(id, limit)));
            self.stop(id, true);
        }
    }

    fn on_settings(&mut self, data: &[u8]) {
        // Settings the client cannot spell are treated as empty: no version (so
        // version 1's rules), and a padding update.
        let settings = Settings::decode(data).unwrap_or_default();
        self.settings_received = true;
        self.version = settings.version();
        if settings.get("padding-md5") == Some(self.padding_md5.as_str()) {
            self.client_has_padding = true;
        } else {
            self.send_padding();
        }
        if self.version >= 2 && !std::mem::replace(&mut self.server_settings_sent, true) {
            self.send(Command::ServerSettings, 0, Payload::ServerSettings);
        }
    }

    /// Sends the current padding scheme, unless the client has it.
    fn send_padding(&mut self) {
        if !std::mem::replace(&mut self.client_has_padding, true) {
            self.send(Command::UpdatePaddingScheme, 0, Payload::PaddingScheme);
        }
    }

    fn on_syn(&mut self, id: u32, now: Instant) {
        if !self.settings_received {
            self.send(
                Command::Alert,
                0,
                Payload::Text(ALERT_NO_SETTINGS.to_owned()),
            );
            self.close(Close::Alerted(ALERT_NO_SETTINGS));
            return;
        }
        if self.streams.contains_key(&id) {
            return;
        }
        let refusal = if self.streams.len() >= self.rules.streams {
            Some(Refusal::TooManyStreams)
        } else if self.dialing >= self.rules.dialing {
            Some(Refusal::TooManyDialing)
        } else {
            None
        };
        if let Some(refusal) = refusal {
            if self.last_refused.replace(id) != Some(id) {
                self.refuse(id, refusal);
            }
            return;
        }
        self.dialing += 1;
        self.streams.insert(id, Stream::new(now));
        self.timers.push(Reverse((
            now + self.rules.address_timeout,
            id,
            Timer::Address,
        )));
        self.actions.push_back(Action::Open(id));
    }

    fn on_push<'a>(&mut self, id: u32, data: &'a [u8], now: Instant) -> Option<Delivery<'a>> {
        let stream = self.streams.get_mut(&id)?;
        let data = match stream.state {
            StreamState::AwaitingAddress => {
                let before = stream.address.len();
                let take = data.len().min(MAX_ADDRESS_LEN - before);
                stream.address.extend_from_slice(&data[..take]);
                match Address::decode(&stream.address) {
                    Ok(None) => return None,
                    Ok(Some((target, used))) => {
                        stream.address = Vec::new();
                        self.on_address(id, target, now);
                        &data[used - before..]
                    }
                    Err(e) => {
                        self.refuse_open(id, Refusal::BadAddress(e.to_string()));
                        return None;
                    }
                }
            }
            StreamState::Dialing | StreamState::Relaying | StreamState::Association => data,
            // The client sent after FIN, or the stream is being stopped: dropped.
            StreamState::Draining | StreamState::Stopping => return None,
        };
        let stream = self.streams.get_mut(&id)?;
        if data.is_empty() || !stream_takes_bytes(&stream.state) {
            return None;
        }
        stream.buffered += data.len();
        stream.held += data.len();
        self.held += data.len();
        if stream.buffered > self.rules.stream_buffer && self.full.is_none() {
            self.full = Some(FullStream { id, since: now });
        }
        if self.held > self.rules.session_buffer && self.budget.is_none() {
            self.start_budget_wait(now);
        }
        Some(Delivery { id, data })
    }

    fn on_address(&mut self, id: u32, target: Address, now: Instant) {
        if let Address::Domain(name, _) = &target {
            if name == UOT_V2_NAME {
                self.leave_dialing(id);
                if self.associations >= self.rules.uot {
                    self.refuse_open(id, Refusal::TooManyAssociations);
                    return;
                }
                self.associations += 1;
                let stream = self.streams.get_mut(&id).expect("open");
                stream.association = true;
                stream.state = StreamState::Association;
                self.actions.push_back(Action::Associate(id));
                return;
            }
            if name == UOT_V1_NAME {
                self.refuse_open(id, Refusal::UotV1);
                return;
            }
        }
        let stream = self.streams.get_mut(&id).expect("open");
        stream.state = StreamState::Dialing;
        self.timers.push(Reverse((
            now + self.rules.synack_deadline,
            id,
            Timer::SynAck,
        )));
        self.actions.push_back(Action::Connect(id, target));
    }

    fn on_fin(&mut self, id: u32) {
        let Some(stream) = self.streams.get(&id) else {
            return;
        };
        match stream.state {
            // No task yet: the stream ends here, with nothing to tell the client.
            StreamState::AwaitingAddress => {
                self.remove(id);
            }
            StreamState::Dialing | StreamState::Relaying | StreamState::Association => {
                self.actions.push_back(Action::Finish(id));
            }
            StreamState::Draining | StreamState::Stopping => {}
        }
    }

    fn start_budget_wait(&mut self, now: Instant) {
        self.budget = Some(BudgetWait {
            awaiting: true,
            first: true,
            round_start: now,
            poll: BUDGET_POLL,
            next_look: None,
            held_before: self.held,
        });
        self.actions.push_back(Action::Recount);
    }

    /// Stops the streams holding bytes whose targets acknowledged none since `since`.
    fn stop_stalled(&mut self, since: Option<Instant>) {
        let Some(since) = since else {
            return;
        };
        let mut stalled: Vec<u32> = self
            .streams
            .iter()
            .filter(|(_, s)| {
                s.held > 0 && s.last_delivery < since && s.state != StreamState::Stopping
            })
            .map(|(id, _)| *id)
            .collect();
        stalled.sort_unstable();
        for id in stalled {
            self.actions.push_back(Action::Notice(Notice::Stalled(id)));
            self.stop(id, true);
        }
    }

    /// Tells the driver to stop stream `id`; the client gets FIN when its task
    /// ends if `fin`.
    fn stop(&mut self, id: u32, fin: bool) {
        let Some(stream) = self.streams.get_mut(&id) else {
            return;
        };
        if stream.state == StreamState::Stopping {
            return;
        }
        stream.state = StreamState::Stopping;
        stream.fin_owed |= fin;
        stream.drain = None;
        if self.full.is_some_and(|f| f.id == id) {
            self.full = None;
        }
        self.leave_dialing(id);
        self.actions.push_back(Action::Stop(id));
    }

    /// A refusal for a stream the driver knows: SYNACK (v2) and FIN, and it is forgotten.
    fn refuse_open(&mut self, id: u32, refusal: Refusal) {
        self.remove(id);
        self.refuse(id, refusal);
    }

    fn refuse(&mut self, id: u32, refusal: Refusal) {
        if self.version >= 2 {
            self.send(Command::SynAck, id, Payload::Text(refusal.reason()));
        }
        self.send(Command::Fin, id, Payload::Empty);
        self.actions
            .push_back(Action::Notice(Notice::Refused(id, refusal)));
    }

    /// The stream's task ended: FIN if owed, and it is forgotten.
    fn end_stream(&mut self, id: u32, now: Instant) {
        if let Some(stream) = self.remove(id) {
            if stream.fin_owed {
                self.send(Command::Fin, id, Payload::Empty);
            }
            self.last_activity = now;
        }
    }

    fn remove(&mut self, id: u32) -> Option<Stream> {
        let stream = self.streams.remove(&id)?;
        if stream.dialing {
            self.dialing -= 1;
        }
        if stream.association {
            self.associations -= 1;
        }
        self.held -= stream.held;
        if self.full.is_some_and(|f| f.id == id) {
            self.full = None;
        }
        self.actions.push_back(Action::Forget(id));
        Some(stream)
    }

    fn leave_dialing(&mut self, id: u32) {
        if let Some(stream) = self.streams.get_mut(&id) {
            if std::mem::take(&mut stream.dialing) {
                self.dialing -= 1;
            }
        }
    }

    fn send(&mut self, command: Command, id: u32, payload: Payload) {
        self.actions.push_back(Action::Send(command, id, payload));
    }

    fn close(&mut self, why: Close) {
        self.ended = true;
        self.budget = None;
        self.full = None;
        self.actions.push_back(Action::Close(why));
    }
}

/// Whether PSH data for a stream in `state` goes to its target.
fn stream_takes_bytes(state: &StreamState) -> bool {
    matches!(
        state,
        StreamState::Dialing | StreamState::Relaying | StreamState::Association
    )
}

/// The rules the unit and pair tests use: the server's defaults, small buffers.
#[cfg(any(test, feature = "pair"))]
pub fn test_rules() -> SessionRules {
    SessionRules {
        streams: 4,
        dialing: 2,
        uot: 1,
        idle_timeout: Duration::from_secs(30),
        stream_idle_timeout: Duration::from_secs(60),
        uot_idle_timeout: Duration::from_secs(20),
        address_timeout: Duration::from_secs(3),
        synack_deadline: Duration::from_secs(2),
        stall_timeout: Duration::from_secs(5),
        stream_buffer: 64 * 1024,
        session_buffer: 128 * 1024,
        check_period: Duration::from_millis(250),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MD5: &str = "0123456789abcdef0123456789abcdef";

    fn frame(cmd: Command, stream_id: u32, data: &[u8]) -> Frame<'_> {
        Frame {
            cmd,
            stream_id,
            data,
        }
    }

    fn run(session: &mut ServerSession, cmd: Command, id: u32, data: &[u8]) -> Vec<Action> {
        session.handle_frame(frame(cmd, id, data), Instant::now());
        std::iter::from_fn(|| session.poll_action()).collect()
    }

    fn settings(version: u32, md5: &str) -> Vec<u8> {
        format!("v={version}\nclient=test\npadding-md5={md5}").into_bytes()
    }

    #[test]
    fn settings_are_answered_by_version_and_padding_once() {
        let mut session = ServerSession::new(test_rules().into(), MD5, Instant::now());
        let stale = settings(2, "stale");
        assert_eq!(
            run(&mut session, Command::Settings, 0, &stale),
            [
                Action::Send(Command::UpdatePaddingScheme, 0, Payload::PaddingScheme),
                Action::Send(Command::ServerSettings, 0, Payload::ServerSettings),
            ]
        );
        for _ in 0..3 {
            assert!(run(&mut session, Command::Settings, 0, &stale).is_empty());
            assert!(run(&mut session, Command::Settings, 0, &[]).is_empty());
        }
        let mut garbage = ServerSession::new(test_rules().into(), MD5, Instant::now());
        assert_eq!(
            run(&mut garbage, Command::Settings, 0, &[0xff, 0xfe]),
            [Action::Send(
                Command::UpdatePaddingScheme,
                0,
                Payload::PaddingScheme
            )],
            "unreadable settings count as empty: no version (v1 rules), stale padding"
        );
        assert_eq!(garbage.version(), 0);
    }

    #[test]
    fn frames_for_unknown_streams_and_server_only_frames_are_ignored() {
        let mut session = ServerSession::new(test_rules().into(), MD5, Instant::now());
        run(&mut session, Command::Settings, 0, &settings(2, MD5));
        for cmd in [
            Command::Push,
            Command::Fin,
            Command::SynAck,
            Command::ServerSettings,
            Command::UpdatePaddingScheme,
            Command::Alert,
            Command::Waste,
            Command::HeartResponse,
            Command::Unknown(200),
        ] {
            assert!(run(&mut session, cmd, 9, b"x").is_empty(), "{cmd:?}");
        }
        assert!(!session.is_ended());
    }

    #[test]
    fn a_repeated_syn_for_a_live_stream_is_ignored() {
        let mut session = ServerSession::new(test_rules().into(), MD5, Instant::now());
        run(&mut session, Command::Settings, 0, &settings(2, MD5));
        assert_eq!(run(&mut session, Command::Syn, 1, &[]), [Action::Open(1)]);
        assert!(run(&mut session, Command::Syn, 1, &[]).is_empty());
        assert_eq!((session.streams(), session.dialing()), (1, 1));
    }

    #[test]
    fn events_for_streams_not_open_are_ignored() {
        let now = Instant::now();
        let mut session = ServerSession::new(test_rules().into(), MD5, now);
        run(&mut session, Command::Settings, 0, &settings(2, MD5));
        for event in [
            StreamEvent::Dialed,
            StreamEvent::Failed("x".into()),
            StreamEvent::Taken(5),
            StreamEvent::Unacknowledged(5),
            StreamEvent::Draining,
            StreamEvent::Ended(StreamEnd::TargetClosed),
        ] {
            session.handle_stream_event(7, event, now);
        }
        assert_eq!(session.poll_action(), None);
        assert_eq!(session.upload_held(), 0);
    }
}
