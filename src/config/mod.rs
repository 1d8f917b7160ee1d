//! The server's settled configuration, shared read-only by every core, and
//! `options`: how an operator's flags become one.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

mod file;
mod options;

pub use crate::reloadable::Reloadable;
pub use file::{FileError, User};
pub use options::{ConfigError, Invocation, Reloader, ServerOptions, Settled};

use crate::accounts::{AccountSpec, Accounts};
use crate::limits::GuessRules;
use crate::node::routes::RouteRules;
use crate::pool::PoolConfig;
use crate::proto::proxy_protocol;
use crate::proto::session::SessionRules;
use crate::proto::PaddingScheme;

/// Default bound on TLS handshake + authentication.
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Default bound on resolving and connecting to a stream's target.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Default time a stream whose buffer is full may go without its target taking a byte.
pub const DEFAULT_STREAM_STALL_TIMEOUT: Duration = Duration::from_secs(15);
/// Default lifetime of a UDP-over-TCP association without a datagram either way.
pub const DEFAULT_UOT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Default lifetime of a stream that moves no byte either way.
pub const DEFAULT_STREAM_IDLE_TIMEOUT: Duration = Duration::from_secs(600);
/// Default bound on a session write (control frames included) making no progress.
pub const DEFAULT_WRITE_TIMEOUT: Duration = Duration::from_secs(30);
/// Default lifetime of a session with no stream and no frame.
pub const DEFAULT_SESSION_IDLE_TIMEOUT: Duration = Duration::from_secs(120);

/// Default cap on connections not yet authenticated (or handed to the fallback).
pub const DEFAULT_MAX_PENDING: usize = 4096;
/// Client->target bytes buffered per stream before the session stops reading
/// (see docs/operating.md, "Memory per stream and session").
pub const STREAM_UPLOAD_LIMIT: usize = 256 * 1024;

/// The default cap on pending connections for a process allowed `descriptors`
/// open files: [`DEFAULT_MAX_PENDING`], or an eighth of them if less (each may
/// take two descriptors, with the fallback), so that unauthenticated clients
/// cannot take the descriptors authenticated users need.
pub fn default_max_pending(descriptors: u64) -> usize {
    usize::try_from(descriptors / 8)
        .map_or(DEFAULT_MAX_PENDING, |n| n.clamp(1, DEFAULT_MAX_PENDING))
}

/// What one client may hold at once, and how long a new stream may keep it
/// waiting (docs/operating.md, "Caps per client"; worst cases in kernel-notes.md).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Streams open on one session; past it a new stream is refused.
    pub streams_per_session: usize,
    /// Streams of one session still waiting for their address or their dial.
    pub dialing_per_session: usize,
    /// UDP-over-TCP associations open on one session.
    pub uot_per_session: usize,
    /// Bytes one session may hold for its targets, over all its streams: in its
    /// upload buffers plus what the outbound sockets' kernel queues hold unacknowledged.
    pub buffered_per_session: usize,
    /// Bytes all sessions of one user may hold for their targets, over all cores.
    pub buffered_per_user: usize,
    /// Bytes all sessions may hold for their targets, each core its share.
    pub buffered_total: usize,
    /// Sessions one user may have open at once, over all cores.
    pub sessions_per_user: usize,
    /// Sessions one client address may have open at once, over all cores.
    pub sessions_per_address: usize,
    /// Connections not yet authenticated, or handed to the fallback, over all cores.
    pub pending: usize,
    /// Of those, from one client subnet (see [`crate::limits::subnet`]).
    pub pending_per_subnet: usize,
    /// UDP-over-TCP datagrams one association may send per second (past it they
    /// are dropped).
    pub datagrams_per_sec: u32,
    /// A stream's target address must arrive whole within this.
    pub address_timeout: Duration,
    /// A dial still pending this long after the address arrived is answered
    /// SYNACK (success) anyway, before clients give up on the session (3 s); a
    /// dial that fails later ends the stream with FIN.
    pub synack_deadline: Duration,
    /// When wrong passwords block a client address.
    pub guessing: GuessRules,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            streams_per_session: 512,
            dialing_per_session: 256,
            uot_per_session: 64,
            buffered_per_session: 8 << 20,
            buffered_per_user: 64 << 20,
            buffered_total: 1 << 30,
            sessions_per_user: 4096,
            sessions_per_address: 1024,
            pending: DEFAULT_MAX_PENDING,
            pending_per_subnet: 256,
            datagrams_per_sec: 20_000,
            address_timeout: Duration::from_secs(3),
            synack_deadline: Duration::from_millis(2000),
            // Far more than a person with a mistyped password sends (a client
            // retrying with it included), far fewer than a guessing loop.
            guessing: GuessRules {
                limit: 30,
                window: Duration::from_secs(60),
                block: Duration::from_secs(60),
            },
        }
    }
}

/// Everything a running server needs to know.
#[derive(Clone)]
pub struct ServerConfig {
    /// Address every core's listener binds (port 0 picks one port for all).
    pub listen: SocketAddr,
    /// Accepted users (replaced on SIGHUP, or by the panel).
    pub users: Reloadable<Accounts>,
    /// Targets the panel's routes block (node mode; none otherwise).
    pub routes: Reloadable<RouteRules>,
    /// The padding scheme clients are told to use (replaced on SIGHUP).
    pub padding: Reloadable<PaddingScheme>,
    /// Where connections that fail authentication are handed (probe resistance).
    pub fallback: Option<SocketAddr>,
    /// The PROXY protocol header written to the fallback first, if any.
    pub fallback_proxy_protocol: Option<proxy_protocol::Version>,
    /// ALPN protocols to select from, in order of preference (`--fallback-alpn`).
    pub alpn: Vec<Vec<u8>>,
    /// Shape the first writes of each session with the padding scheme.
    pub downlink_padding: bool,
    /// ACME: the pending challenges' answers (TLS-ALPN-01 on this port), if
    /// certificates come from ACME.
    pub acme_challenges: Option<Arc<crate::acme::Challenges>>,
    /// The Prometheus metrics endpoint, if any.
    pub metrics: Option<MetricsConfig>,
    /// TLS server configuration.
    pub tls: Arc<rustls::ServerConfig>,
    /// CPU ids to run one executor on each, in order.
    pub cpus: Vec<usize>,
    /// Bound on TLS handshake + authentication preamble.
    pub handshake_timeout: Duration,
    /// Bound on resolving + connecting to a target.
    pub connect_timeout: Duration,
    /// A session with no open stream and no frame for this long is closed.
    pub session_idle_timeout: Duration,
    /// A stream whose upload buffer is full and whose target takes no byte for this
    /// long is closed, so the session (which stops reading meanwhile) goes on.
    pub stream_stall_timeout: Duration,
    /// A stream that moves no byte either way for this long is closed (FIN).
    pub stream_idle_timeout: Duration,
    /// A session whose pending write (a frame to the client) makes no progress for
    /// this long is closed: the client stopped reading.
    pub write_timeout: Duration,
    /// A UDP-over-TCP association with no datagram either way for this long ends.
    pub uot_idle_timeout: Duration,
    /// The outbound connection pool.
    pub pool: PoolConfig,
    /// Per-client caps.
    pub limits: Limits,
    /// Target ranges streams may not reach (`--deny`).
    pub deny: Vec<ipnet::IpNet>,
    /// Also refuse loopback, private and link-local targets (`--deny-private`).
    pub deny_private: bool,
    /// Where handshakes take the certificate from, when it can be replaced
    /// (SIGHUP, ACME); for the expiry metric.
    pub certificate: Option<Arc<crate::tls::CertificateSlot>>,
    /// How SIGHUP reloads went.
    pub reloads: Arc<ReloadCounts>,
}

/// How SIGHUP reloads went, for the metrics (written by the control thread).
#[derive(Debug, Default)]
pub struct ReloadCounts {
    /// Reloads where everything tried loaded.
    pub succeeded: std::sync::atomic::AtomicU64,
    /// Reloads where something did not load (and the old value was kept).
    pub failed: std::sync::atomic::AtomicU64,
}

/// The metrics endpoint (`--metrics`) and who may scrape it.
#[derive(Clone, PartialEq, Eq)]
pub struct MetricsConfig {
    /// Where it listens.
    pub listen: SocketAddr,
    /// The bearer token scrapers must present (`--metrics-token`), if any.
    pub token: Option<String>,
    /// The only client ranges that may connect (`--metrics-allow`); empty: any.
    pub allow: Vec<ipnet::IpNet>,
}

impl std::fmt::Debug for MetricsConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MetricsConfig")
            .field("listen", &self.listen)
            .field("token", &self.token.as_ref().map(|_| "<hidden>"))
            .field("allow", &self.allow)
            .finish()
    }
}

impl ServerConfig {
    /// The rules every session follows, for its machine.
    pub fn session_rules(&self) -> SessionRules {
        let limits = &self.limits;
        SessionRules {
            streams: limits.streams_per_session,
            dialing: limits.dialing_per_session,
            uot: limits.uot_per_session,
            idle_timeout: self.session_idle_timeout,
            stream_idle_timeout: self.stream_idle_timeout,
            uot_idle_timeout: self.uot_idle_timeout,
            address_timeout: limits.address_timeout,
            synack_deadline: limits.synack_deadline,
            stall_timeout: self.stream_stall_timeout,
            stream_buffer: STREAM_UPLOAD_LIMIT,
            session_buffer: limits.buffered_per_session,
            check_period: crate::plumbing::check_period(
                self.session_idle_timeout
                    .min(self.stream_idle_timeout)
                    .min(self.uot_idle_timeout)
                    .min(self.write_timeout),
            ),
        }
    }

    /// A configuration with the defaults, one user and the given TLS config,
    /// listening on `listen` with one executor on the first allowed CPU.
    pub fn new(listen: SocketAddr, password: &str, tls: Arc<rustls::ServerConfig>) -> Self {
        let users = Accounts::new(&[AccountSpec::new("default", password)])
            .expect("one user with a password");
        ServerConfig {
            listen,
            users: Reloadable::new(users),
            routes: Reloadable::new(RouteRules::default()),
            padding: Reloadable::new(PaddingScheme::default()),
            fallback: None,
            fallback_proxy_protocol: None,
            alpn: vec![b"http/1.1".to_vec()],
            downlink_padding: true,
            acme_challenges: None,
            metrics: None,
            tls,
            cpus: crate::runtime::allowed_cpus().into_iter().take(1).collect(),
            handshake_timeout: DEFAULT_HANDSHAKE_TIMEOUT,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            session_idle_timeout: DEFAULT_SESSION_IDLE_TIMEOUT,
            stream_stall_timeout: DEFAULT_STREAM_STALL_TIMEOUT,
            stream_idle_timeout: DEFAULT_STREAM_IDLE_TIMEOUT,
            write_timeout: DEFAULT_WRITE_TIMEOUT,
            uot_idle_timeout: DEFAULT_UOT_IDLE_TIMEOUT,
            pool: PoolConfig::default(),
            limits: Limits::default(),
            deny: Vec::new(),
            deny_private: false,
            certificate: None,
            reloads: Arc::default(),
        }
    }
}

/// A users file could not be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum UsersFileError {
    /// A line is not `name:password`.
    #[error("line {0}: expected name:password")]
    Malformed(usize),
    /// A name appears twice.
    #[error("line {0}: user {1:?} is already defined")]
    Duplicate(usize, String),
    /// No user at all.
    #[error("no users defined")]
    Empty,
}

/// Parses a users file: one `name:password` per line (split at the first `:`);
/// blank lines and lines starting with `#` are ignored.
pub fn parse_users(text: &str) -> Result<Vec<User>, UsersFileError> {
    let mut names = std::collections::HashSet::new();
    let mut users = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let line = line.trim_end_matches('\r');
        if line.trim().is_empty() || line.trim_start().starts_with('#') {
            continue;
        }
        let (name, password) = line
            .split_once(':')
            .filter(|(name, password)| !name.trim().is_empty() && !password.is_empty())
            .ok_or(UsersFileError::Malformed(index + 1))?;
        let name = name.trim();
        if !names.insert(name.to_owned()) {
            return Err(UsersFileError::Duplicate(index + 1, name.to_owned()));
        }
        users.push(User::new(name, password));
    }
    if users.is_empty() {
        return Err(UsersFileError::Empty);
    }
    Ok(users)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn users_file() {
        let users = parse_users("# team\nalice:a:b:c\n\nbob:pw\r\n").unwrap();
        let names: Vec<(&str, &str)> = users
            .iter()
            .map(|u| (u.name.as_str(), u.password.as_str()))
            .collect();
        assert_eq!(names, [("alice", "a:b:c"), ("bob", "pw")]);
        assert_eq!(parse_users("alice\n"), Err(UsersFileError::Malformed(1)));
        assert_eq!(
            parse_users("a:1\na:2"),
            Err(UsersFileError::Duplicate(2, "a".into()))
        );
        assert_eq!(parse_users("# none\n"), Err(UsersFileError::Empty));
        assert_eq!(parse_users(":pw"), Err(UsersFileError::Malformed(1)));
    }
}
