//! The server: [`Server::start`] runs one pinned executor per configured CPU (see
//! [`crate::runtime`]), each with its own `SO_REUSEPORT` listener, its own sessions,
//! streams and outbound sockets; nothing on the data path is shared between cores.
//!
//! - `mod.rs`: [`Server`], the per-core serve loop and the accept loop.
//! - `context`: what every task on one core shares (`CoreContext`).
//! - `session`: one client connection: TLS, authentication, the read and timer
//!   loops driving [`crate::proto::session::ServerSession`] (which holds every
//!   rule and deadline), each stream's relay.

pub(crate) mod context;
mod control;
pub mod links;
pub mod report;
pub(crate) mod session;

use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_lite::future;
use glommio::net::TcpListener;
use log::{info, warn};

use crate::config::ServerConfig;
use crate::limits::{PendingLimits, SessionLimits};
use crate::metrics;
use crate::plumbing::Event;
use crate::pool::dial::{Resolver, TargetPolicy};
use crate::pool::SharedPool;
use crate::runtime::{self, Executors, StartError};
use crate::stats::{Limit, Stats};
use context::CoreContext;
pub use control::run;

/// How long executors wait for their sessions to close at shutdown.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(1);

/// A running server.
pub struct Server {
    config: Arc<ServerConfig>,
    stats: Stats,
    sessions: Arc<SessionLimits>,
    pool: Arc<SharedPool>,
    executors: Executors,
    metrics_addr: Option<SocketAddr>,
    cpus: Vec<usize>,
}

impl Server {
    /// Starts one executor per configured CPU and returns once all are accepting.
    pub fn start(config: ServerConfig) -> Result<Server, StartError> {
        let stats = Stats::new(config.cpus.len());
        let pool = SharedPool::new(config.pool.clone(), config.cpus.len());
        let metrics = match &config.metrics {
            Some(metrics) => {
                let addr = metrics.listen;
                Some(
                    runtime::bind_single(addr)
                        .map_err(|source| StartError::MetricsBind { addr, source })?,
                )
            }
            None => None,
        };
        let metrics_addr = metrics
            .as_ref()
            .and_then(|socket| socket.local_addr().ok())
            .and_then(|addr| addr.as_socket());
        let metrics = Arc::new(Mutex::new(metrics));
        let cpus = config.cpus.clone();
        let config = Arc::new(config);
        let shared_config = config.clone();
        let sessions = SessionLimits::new(
            config.limits.sessions_per_user,
            config.limits.sessions_per_address,
        );
        let pending = PendingLimits::new(
            config.limits.pending,
            config.limits.pending_per_subnet,
            config.limits.guessing,
        );
        let shared = (
            config.clone(),
            stats.clone(),
            pool.clone(),
            sessions.clone(),
            pending,
        );
        let executors = Executors::start(
            "anytls-core",
            config.listen,
            &config.cpus,
            move |index, listener, stop| {
                let (config, stats, pool, sessions, pending) = shared.clone();
                let metrics = metrics.lock().expect("metrics slot poisoned").take();
                let shared = CoreShared {
                    config,
                    stats,
                    pool,
                    sessions,
                    pending,
                    metrics,
                };
                serve_core(index, listener, stop, shared)
            },
        )?;
        Ok(Server {
            config: shared_config,
            stats,
            sessions,
            pool,
            executors,
            metrics_addr,
            cpus,
        })
    }

    /// Where the metrics endpoint listens, if enabled.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_addr
    }

    /// The address the listeners are bound to (with the real port if 0 was asked).
    pub fn local_addr(&self) -> SocketAddr {
        self.executors.local_addr()
    }

    /// The configuration it runs with (its reloadable parts may be replaced).
    pub fn config(&self) -> &ServerConfig {
        &self.config
    }

    /// The server's counters.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// Sessions per user and client address, and the addresses each user is
    /// online from (node mode reports them and sets the fleet's counts).
    pub fn sessions(&self) -> &Arc<SessionLimits> {
        &self.sessions
    }

    /// The outbound connection pool (for its stats and status lines).
    pub fn pool(&self) -> &SharedPool {
        &self.pool
    }

    /// Stops accepting, closes every session and waits for the executors to exit.
    pub fn shutdown(mut self) {
        self.executors.stop_and_join();
    }
}

/// What one core is handed from the process: the configuration, the counters,
/// and the pieces that must be shared (pool tiers, session counts).
struct CoreShared {
    config: Arc<ServerConfig>,
    stats: Stats,
    pool: Arc<SharedPool>,
    sessions: Arc<SessionLimits>,
    pending: Arc<PendingLimits>,
    metrics: Option<socket2::Socket>,
}

/// One core's life: accept until told to stop, then close the sessions.
async fn serve_core(index: usize, listener: TcpListener, stop: Rc<Event>, shared: CoreShared) {
    let CoreShared {
        config,
        stats,
        pool: shared_pool,
        sessions,
        pending,
        metrics,
    } = shared;
    let mut own = Vec::new();
    own.extend(listener.local_addr().ok());
    own.extend(
        metrics
            .as_ref()
            .and_then(|s| s.local_addr().ok()?.as_socket()),
    );
    let policy = TargetPolicy::new(&config.deny, config.deny_private, own);
    if let (Some(socket), Some(settings)) = (metrics, config.metrics.clone()) {
        let sources = Arc::new(metrics::Sources {
            stats: stats.clone(),
            pool: shared_pool.clone(),
            config: config.clone(),
        });
        let listener = runtime::adopt_listener(socket);
        glommio::spawn_local(metrics::serve(listener, sources, settings)).detach();
    }
    let pool = shared_pool.core(index);
    let maintenance = glommio::spawn_local(pool.clone().maintain());
    let core = Rc::new(CoreContext::new(
        index,
        config,
        Resolver::new(policy),
        pool,
        sessions,
        pending,
        stats,
    ));
    future::or(accept_loop(&listener, &core), stop.wait()).await;
    drop(listener);
    maintenance.cancel().await;
    core.shutdown.set();
    let deadline = Instant::now() + SHUTDOWN_GRACE;
    while core.counters().sessions_open.get() > 0 && Instant::now() < deadline {
        glommio::timer::sleep(Duration::from_millis(10)).await;
    }
}

async fn accept_loop(listener: &TcpListener, core: &Rc<CoreContext>) {
    let mut last_warning: Option<Instant> = None;
    let serve = |stream: glommio::net::TcpStream| {
        let Ok(peer) = stream.peer_addr() else {
            return;
        };
        match core.pending.admit(peer.ip()) {
            Ok(slot) => {
                let serving = session::serve_connection(stream, peer, slot, core.clone());
                glommio::spawn_local(serving).detach();
            }
            Err(limit) => {
                // Closed with RST: no handshake, no buffer, no TIME_WAIT socket.
                crate::plumbing::reset_on_close(&stream);
                core.limit_reached(limit, || {
                    format!("{peer}: connection closed before its handshake")
                });
            }
        }
    };
    let failed = |e: std::io::Error| {
        if crate::pool::dial::is_descriptor_exhaustion(&e) {
            core.limit_reached(Limit::Descriptors, || {
                format!("accept failed: {e}; new connections wait (raise LimitNOFILE, see kernel-notes.md)")
            });
        } else if last_warning.is_none_or(|t| t.elapsed() > Duration::from_secs(1)) {
            warn!("accept failed: {e}");
            last_warning = Some(Instant::now());
        }
    };
    runtime::accept_each(listener, serve, failed).await;
}

impl Server {
    /// Logs where the server listens.
    pub fn log_started(&self) {
        info!(
            "listening on {} with {} executor(s) pinned to CPU(s) {:?}",
            self.local_addr(),
            self.cpus.len(),
            self.cpus
        );
        if let Some(addr) = self.metrics_addr {
            info!("metrics on http://{addr}/metrics");
        }
    }

    /// The periodic statistics lines (see [`report`]): sessions and streams, the
    /// outbound pool's counters and spares, and bytes per user.
    pub fn report_lines(&self) -> [String; 4] {
        report::lines(self)
    }
}
