//! Server counters, kept per core and summed only when reported.
//!
//! Each core writes only its own [`CoreCounters`] (a plain load + store, no
//! read-modify-write, no shared cache line); readers on other threads sum them with
//! relaxed loads, which is all a periodic report needs.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};

/// One core's counters, padded to its own cache lines.
#[derive(Default)]
#[repr(align(128))]
pub struct CoreCounters {
    /// Sessions authenticated and still open.
    pub sessions_open: Counter,
    /// Sessions authenticated since start.
    pub sessions_total: Counter,
    /// Streams open now.
    pub streams_open: Counter,
    /// Streams opened since start.
    pub streams_total: Counter,
    /// Payload bytes client -> target.
    pub bytes_up: Counter,
    /// Payload bytes target -> client.
    pub bytes_down: Counter,
    /// Connections that presented a wrong password or a malformed preamble.
    pub auth_failures: Counter,
    /// Connections that failed or timed out in TLS or before authenticating.
    pub handshake_failures: Counter,
    /// Rejected connections handed to the fallback service.
    pub fallbacks: Counter,
    /// Padding schemes sent to clients that lacked the server's.
    pub padding_updates: Counter,
    /// Times each per-client limit was reached, by [`Limit`].
    pub limit_hits: [Counter; Limit::ALL.len()],
    /// Streams whose target could not be reached, by [`DialFailure`].
    pub dial_failures: [Counter; DialFailure::ALL.len()],
}

/// Why a stream's target was not reached (the server tried, or refused to try).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DialFailure {
    /// The name did not resolve.
    Resolve,
    /// The target refused the connection (RST).
    Refused,
    /// No route to the target's network or host.
    Unreachable,
    /// Resolving and connecting took longer than `--connect-timeout`.
    Timeout,
    /// Another connect error.
    Other,
    /// Refused by the server's policy: a `--deny` or `--deny-private` range.
    DenyRange,
    /// Refused by the server's policy: one of the server's own sockets.
    OwnSocket,
}

impl DialFailure {
    /// Every reason, in counter order.
    pub const ALL: [DialFailure; 7] = [
        DialFailure::Resolve,
        DialFailure::Refused,
        DialFailure::Unreachable,
        DialFailure::Timeout,
        DialFailure::Other,
        DialFailure::DenyRange,
        DialFailure::OwnSocket,
    ];

    /// Its name in metrics labels.
    pub fn name(self) -> &'static str {
        match self {
            DialFailure::Resolve => "resolve",
            DialFailure::Refused => "refused",
            DialFailure::Unreachable => "unreachable",
            DialFailure::Timeout => "timeout",
            DialFailure::Other => "other",
            DialFailure::DenyRange => "deny_range",
            DialFailure::OwnSocket => "own_socket",
        }
    }

    /// Whether the server's own policy refused the target (it was never tried).
    pub fn is_policy(self) -> bool {
        matches!(self, DialFailure::DenyRange | DialFailure::OwnSocket)
    }
}

/// A per-client limit (see `config::Limits`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Limit {
    /// A stream refused: its session had the most streams open.
    StreamsPerSession,
    /// A stream refused: its session had the most streams waiting for a dial.
    DialingPerSession,
    /// A UDP-over-TCP association refused: its session had the most open.
    UotPerSession,
    /// A stream whose address did not arrive whole in time.
    AddressTimeout,
    /// A SYNACK sent at the deadline, before its dial completed.
    SynAckDeadline,
    /// A connection closed after authentication: its user had the most sessions.
    SessionsPerUser,
    /// A connection closed after authentication: its address had the most sessions.
    SessionsPerAddress,
    /// A stream refused: the server held `--max-outbound-connections`.
    OutboundConnections,
    /// A session stopped reading: its streams held `--max-buffered-per-session`
    /// bytes for their targets (counted each time the reader waits).
    SessionBuffer,
    /// An `accept`, dial or UDP socket failed for want of a descriptor (EMFILE/ENFILE).
    Descriptors,
    /// A session stopped reading: its client left more than
    /// [`crate::plumbing::CONTROL_HIGH_WATER`] bytes of answers (control frames) unread.
    UnreadAnswers,
    /// A connection closed at once: the server had `--max-pending` connections
    /// not yet authenticated (or handed to the fallback).
    Pending,
    /// A connection closed at once: its client's subnet had
    /// `--max-pending-per-subnet` connections not yet authenticated.
    PendingPerSubnet,
    /// A stream refused: its user held its fair share of the outbound cap.
    OutboundShare,
    /// A UDP-over-TCP datagram dropped: its association sent more than
    /// `--max-datagrams-per-sec`.
    DatagramRate,
    /// A session stopped reading: its user's sessions (all cores) held
    /// `--max-buffered-per-user-mib` for their targets.
    UserBuffer,
    /// A session stopped reading: its core's sessions held their share of
    /// `--max-buffered-total-mib` for their targets.
    ServerBuffer,
    /// A connection closed after authentication: its user was online from its
    /// device limit of other addresses (over the fleet, in node mode).
    Devices,
    /// A stream or datagram refused: the panel's routes block its target.
    Route,
    /// A connection refused without its password checked: its address sent
    /// `--max-wrong-passwords` wrong ones (counted per connection refused).
    WrongPasswords,
}

impl Limit {
    /// Every limit, in counter order.
    pub const ALL: [Limit; 20] = [
        Limit::StreamsPerSession,
        Limit::DialingPerSession,
        Limit::UotPerSession,
        Limit::AddressTimeout,
        Limit::SynAckDeadline,
        Limit::SessionsPerUser,
        Limit::SessionsPerAddress,
        Limit::OutboundConnections,
        Limit::SessionBuffer,
        Limit::Descriptors,
        Limit::UnreadAnswers,
        Limit::Pending,
        Limit::PendingPerSubnet,
        Limit::OutboundShare,
        Limit::DatagramRate,
        Limit::UserBuffer,
        Limit::ServerBuffer,
        Limit::Devices,
        Limit::Route,
        Limit::WrongPasswords,
    ];

    /// Its name in the stats line and in metrics labels.
    pub fn name(self) -> &'static str {
        match self {
            Limit::StreamsPerSession => "streams_per_session",
            Limit::DialingPerSession => "dialing_per_session",
            Limit::UotPerSession => "uot_per_session",
            Limit::AddressTimeout => "address_timeout",
            Limit::SynAckDeadline => "synack_deadline",
            Limit::SessionsPerUser => "sessions_per_user",
            Limit::SessionsPerAddress => "sessions_per_address",
            Limit::OutboundConnections => "outbound_connections",
            Limit::SessionBuffer => "session_buffer",
            Limit::Descriptors => "descriptors",
            Limit::UnreadAnswers => "unread_answers",
            Limit::Pending => "pending",
            Limit::PendingPerSubnet => "pending_per_subnet",
            Limit::OutboundShare => "outbound_share",
            Limit::DatagramRate => "datagram_rate",
            Limit::UserBuffer => "buffered_per_user",
            Limit::ServerBuffer => "buffered_total",
            Limit::Devices => "device_limit",
            Limit::Route => "route_blocked",
            Limit::WrongPasswords => "wrong_passwords",
        }
    }
}

impl CoreCounters {
    /// Counts one time `limit` was reached.
    pub fn limit_hit(&self, limit: Limit) {
        self.limit_hits[limit as usize].add(1);
    }

    /// Counts one target not reached.
    pub fn dial_failed(&self, why: DialFailure) {
        self.dial_failures[why as usize].add(1);
    }
}

/// A counter written by one core only.
#[derive(Default)]
pub struct Counter(AtomicU64);

impl Counter {
    /// Adds `n`. Only the owning core may call this.
    #[inline]
    pub fn add(&self, n: u64) {
        self.0.store(self.0.load(Relaxed).wrapping_add(n), Relaxed);
    }

    /// Subtracts `n`. Only the owning core may call this.
    #[inline]
    pub fn sub(&self, n: u64) {
        self.0.store(self.0.load(Relaxed).wrapping_sub(n), Relaxed);
    }

    /// The current value, from any thread.
    pub fn get(&self) -> u64 {
        self.0.load(Relaxed)
    }
}

/// One user's traffic on one core (written by that core only).
#[derive(Default)]
#[repr(align(128))]
pub struct UserCounters {
    /// Payload bytes client -> target.
    pub bytes_up: Counter,
    /// Payload bytes target -> client.
    pub bytes_down: Counter,
}

/// A user's name and the counters one core keeps for them.
type UserEntry = (String, Arc<UserCounters>);

/// Every core's counters.
#[derive(Clone)]
pub struct Stats {
    cores: Arc<[CoreCounters]>,
    /// (user, counters of one core), registered once per user and core.
    users: Arc<Mutex<Vec<UserEntry>>>,
}

impl Stats {
    /// Counters for `cores` cores.
    pub fn new(cores: usize) -> Stats {
        Stats {
            cores: (0..cores).map(|_| CoreCounters::default()).collect(),
            users: Arc::default(),
        }
    }

    /// The counters of core `index` (its position in `--cores` order).
    pub fn core(&self, index: usize) -> &CoreCounters {
        &self.cores[index]
    }

    /// Counters for `user` on one core; the core keeps the handle and reuses it.
    pub fn register_user(&self, user: &str) -> Arc<UserCounters> {
        let counters = Arc::new(UserCounters::default());
        self.users
            .lock()
            .expect("user stats poisoned")
            .push((user.to_owned(), counters.clone()));
        counters
    }

    /// Bytes (up, down) per user, summed over cores.
    pub fn user_bytes(&self) -> BTreeMap<String, (u64, u64)> {
        let mut out: BTreeMap<String, (u64, u64)> = BTreeMap::new();
        for (user, counters) in self.users.lock().expect("user stats poisoned").iter() {
            let entry = out.entry(user.clone()).or_default();
            entry.0 += counters.bytes_up.get();
            entry.1 += counters.bytes_down.get();
        }
        out
    }

    /// Number of cores.
    pub fn cores(&self) -> usize {
        self.cores.len()
    }

    /// The sum over all cores.
    pub fn snapshot(&self) -> StatsSnapshot {
        let mut total = StatsSnapshot::default();
        for core in self.cores.iter() {
            total.sessions_open += core.sessions_open.get();
            total.sessions_total += core.sessions_total.get();
            total.streams_open += core.streams_open.get();
            total.streams_total += core.streams_total.get();
            total.bytes_up += core.bytes_up.get();
            total.bytes_down += core.bytes_down.get();
            total.auth_failures += core.auth_failures.get();
            total.handshake_failures += core.handshake_failures.get();
            total.fallbacks += core.fallbacks.get();
            total.padding_updates += core.padding_updates.get();
            for (sum, hits) in total.limit_hits.iter_mut().zip(&core.limit_hits) {
                *sum += hits.get();
            }
            for (sum, n) in total.dial_failures.iter_mut().zip(&core.dial_failures) {
                *sum += n.get();
            }
        }
        total
    }
}

/// Summed counters at one moment.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[allow(missing_docs)]
pub struct StatsSnapshot {
    pub sessions_open: u64,
    pub sessions_total: u64,
    pub streams_open: u64,
    pub streams_total: u64,
    pub bytes_up: u64,
    pub bytes_down: u64,
    pub auth_failures: u64,
    pub handshake_failures: u64,
    pub fallbacks: u64,
    pub padding_updates: u64,
    /// By [`Limit`], in [`Limit::ALL`] order.
    pub limit_hits: [u64; Limit::ALL.len()],
    /// By [`DialFailure`], in [`DialFailure::ALL`] order.
    pub dial_failures: [u64; DialFailure::ALL.len()],
}
