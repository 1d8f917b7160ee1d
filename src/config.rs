//! The server's settled configuration, built by the binary from its flags (or by
//! tests directly) and shared read-only by every core.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use crate::pool::PoolConfig;
use crate::proto::auth::Users;
use crate::proto::PaddingScheme;

/// Default bound on TLS handshake + authentication.
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Default bound on resolving and connecting to a stream's target.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Default time a stream whose buffer is full may go without its target taking a byte.
pub const DEFAULT_STREAM_STALL_TIMEOUT: Duration = Duration::from_secs(15);
/// Default lifetime of a UDP-over-TCP association without a datagram either way.
pub const DEFAULT_UOT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Default lifetime of a session with no stream and no frame.
pub const DEFAULT_SESSION_IDLE_TIMEOUT: Duration = Duration::from_secs(120);

/// Everything a running server needs to know.
#[derive(Clone)]
pub struct ServerConfig {
    /// Address every core's listener binds (port 0 picks one port for all).
    pub listen: SocketAddr,
    /// Accepted credentials.
    pub users: Users,
    /// The padding scheme clients are told to use.
    pub padding: Arc<PaddingScheme>,
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
    /// A UDP-over-TCP association with no datagram either way for this long ends.
    pub uot_idle_timeout: Duration,
    /// The outbound connection pool.
    pub pool: PoolConfig,
}

impl ServerConfig {
    /// A configuration with the defaults, one user and the given TLS config,
    /// listening on `listen` with one executor on the first allowed CPU.
    pub fn new(listen: SocketAddr, password: &str, tls: Arc<rustls::ServerConfig>) -> Self {
        let mut users = Users::default();
        users.add("default", password);
        ServerConfig {
            listen,
            users,
            padding: Arc::new(PaddingScheme::default()),
            tls,
            cpus: allowed_cpus().into_iter().take(1).collect(),
            handshake_timeout: DEFAULT_HANDSHAKE_TIMEOUT,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            session_idle_timeout: DEFAULT_SESSION_IDLE_TIMEOUT,
            stream_stall_timeout: DEFAULT_STREAM_STALL_TIMEOUT,
            uot_idle_timeout: DEFAULT_UOT_IDLE_TIMEOUT,
            pool: PoolConfig::default(),
        }
    }
}

/// The CPUs this process may run on (its affinity mask, which respects cpusets),
/// in ascending order.
pub fn allowed_cpus() -> Vec<usize> {
    let mut cpus: Vec<usize> = core_affinity::get_core_ids()
        .unwrap_or_default()
        .into_iter()
        .map(|core| core.id)
        .collect();
    cpus.sort_unstable();
    if cpus.is_empty() {
        let n = std::thread::available_parallelism().map_or(1, |n| n.get());
        cpus = (0..n).collect();
    }
    cpus
}
