//! The thread-per-core runtime: one glommio executor pinned per CPU, each with its
//! own `SO_REUSEPORT` listener on the same address, its own sessions, streams and
//! outbound sockets. Nothing on the data path is shared between cores.
//!
//! [`Server::start`] checks what the kernel must offer ([`preflight`]), binds every
//! listener before any executor starts (so a bad address fails cleanly), starts the
//! executors and waits until each one is serving. [`Server::shutdown`] stops
//! accepting, closes sessions and joins the executors.

mod executors;
pub mod preflight;

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_lite::future;
use glommio::net::TcpListener;
use log::{info, warn};
use thiserror::Error;

pub use executors::Executors;

use crate::config::ServerConfig;
use crate::limits::SessionLimits;
use crate::metrics;
use crate::mux::Event;
use crate::pool::dial::{Resolver, TargetPolicy};
use crate::pool::{CorePool, SharedPool};
use crate::session;
use crate::stats::{CoreCounters, Limit, Stats, UserCounters};

/// A limit reached is logged at most this often per core and kind.
pub const LIMIT_LOG_INTERVAL: Duration = Duration::from_secs(10);

/// Pause after a failed `accept` (descriptors exhausted, say) before the next.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// How long executors wait for their sessions to close at shutdown.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(1);

/// Why the server could not start. Each is one line for the operator.
#[derive(Debug, Error)]
pub enum StartError {
    /// The kernel or the process limits do not allow io_uring.
    #[error("{0}")]
    Kernel(#[from] preflight::PreflightError),
    /// No CPU to run on, or more asked than allowed.
    #[error("{0}")]
    Cpus(String),
    /// The listen address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// An executor could not be created or pinned.
    #[error("cannot start the executor for CPU {cpu}: {reason}")]
    Executor {
        /// The CPU.
        cpu: usize,
        /// Why.
        reason: String,
    },
}

/// What every task on one core shares: read-only config and core-local state.
pub(crate) struct CoreContext {
    pub config: Arc<ServerConfig>,
    /// `config.tls` with the client's cipher-suite order deciding.
    pub tls_client_order: Arc<rustls::ServerConfig>,
    pub resolver: Resolver,
    pub pool: Rc<CorePool>,
    pub shutdown: Event,
    /// Sessions per user and per client address, over all cores.
    pub sessions: Arc<SessionLimits>,
    /// When each limit was last logged (once per interval, not per connection).
    last_limit_log: [Cell<Option<Instant>>; Limit::ALL.len()],
    stats: Stats,
    index: usize,
    users: RefCell<HashMap<String, Arc<UserCounters>>>,
}

impl CoreContext {
    pub fn counters(&self) -> &CoreCounters {
        self.stats.core(self.index)
    }

    /// Counts `limit` as reached and logs `what` at most once per
    /// [`LIMIT_LOG_INTERVAL`] for this kind, so a flood cannot flood the log.
    pub fn limit_reached(&self, limit: Limit, what: impl FnOnce() -> String) {
        self.counters().limit_hit(limit);
        let now = Instant::now();
        let last = &self.last_limit_log[limit as usize];
        if last
            .get()
            .is_none_or(|at| now.duration_since(at) >= LIMIT_LOG_INTERVAL)
        {
            last.set(Some(now));
            warn!(
                "{} ({} reached; logged at most every {LIMIT_LOG_INTERVAL:?})",
                what(),
                limit.name()
            );
        }
    }

    /// This core's counters for `user`.
    pub fn user_counters(&self, user: &str) -> Arc<UserCounters> {
        if let Some(counters) = self.users.borrow().get(user) {
            return counters.clone();
        }
        let counters = self.stats.register_user(user);
        self.users
            .borrow_mut()
            .insert(user.to_owned(), counters.clone());
        counters
    }
}

/// A running server.
pub struct Server {
    stats: Stats,
    pool: Arc<SharedPool>,
    executors: Executors,
    metrics_addr: Option<SocketAddr>,
}

impl Server {
    /// Starts one executor per configured CPU and returns once all are accepting.
    pub fn start(config: ServerConfig) -> Result<Server, StartError> {
        let stats = Stats::new(config.cpus.len());
        let pool = SharedPool::new(config.pool.clone(), config.cpus.len());
        let metrics = match config.metrics {
            Some(addr) => Some(
                executors::bind_single(addr).map_err(|source| StartError::Bind { addr, source })?,
            ),
            None => None,
        };
        let metrics_addr = metrics
            .as_ref()
            .and_then(|socket| socket.local_addr().ok())
            .and_then(|addr| addr.as_socket());
        let metrics = Arc::new(Mutex::new(metrics));
        let config = Arc::new(config);
        let sessions = SessionLimits::new(
            config.limits.sessions_per_user,
            config.limits.sessions_per_address,
        );
        let shared = (config.clone(), stats.clone(), pool.clone(), sessions);
        let executors = Executors::start(
            "anytls-core",
            config.listen,
            &config.cpus,
            move |index, listener, stop| {
                let (config, stats, pool, sessions) = shared.clone();
                let metrics = metrics.lock().expect("metrics slot poisoned").take();
                let shared = CoreShared {
                    config,
                    stats,
                    pool,
                    sessions,
                    metrics,
                };
                serve_core(index, listener, stop, shared)
            },
        )?;
        Ok(Server {
            stats,
            pool,
            executors,
            metrics_addr,
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

    /// The server's counters.
    pub fn stats(&self) -> &Stats {
        &self.stats
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
    metrics: Option<socket2::Socket>,
}

/// One core's life: accept until told to stop, then close the sessions.
async fn serve_core(index: usize, listener: TcpListener, stop: Rc<Event>, shared: CoreShared) {
    let CoreShared {
        config,
        stats,
        pool: shared_pool,
        sessions,
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
    if let Some(socket) = metrics {
        let sources = Arc::new(metrics::Sources {
            stats: stats.clone(),
            pool: shared_pool.clone(),
        });
        glommio::spawn_local(metrics::serve(executors::adopt_listener(socket), sources)).detach();
    }
    let pool = shared_pool.core(index);
    let maintenance = glommio::spawn_local(pool.clone().maintain());
    let core = Rc::new(CoreContext {
        tls_client_order: crate::tls::client_order(&config.tls),
        config,
        resolver: Resolver::new(policy),
        sessions,
        last_limit_log: Default::default(),
        pool,
        shutdown: Event::default(),
        stats,
        index,
        users: RefCell::default(),
    });
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
    loop {
        match listener.accept().await {
            Ok(stream) => {
                let Ok(peer) = stream.peer_addr() else {
                    continue;
                };
                stream.set_nodelay(true).ok();
                glommio::spawn_local(session::serve_connection(stream, peer, core.clone()))
                    .detach();
            }
            Err(e) => {
                // EMFILE and friends: back off instead of spinning; the sessions
                // already open go on.
                let e = std::io::Error::from(e);
                if crate::pool::dial::is_descriptor_exhaustion(&e) {
                    core.limit_reached(Limit::Descriptors, || {
                        format!("accept failed: {e}; new connections wait (raise LimitNOFILE, see kernel-notes.md)")
                    });
                } else if last_warning.is_none_or(|t| t.elapsed() > Duration::from_secs(1)) {
                    warn!("accept failed: {e}");
                    last_warning = Some(Instant::now());
                }
                glommio::timer::sleep(ACCEPT_BACKOFF).await;
            }
        }
    }
}

/// Logs where the server listens.
pub fn log_started(server: &Server, cpus: &[usize]) {
    info!(
        "listening on {} with {} executor(s) pinned to CPU(s) {:?}",
        server.local_addr(),
        cpus.len(),
        cpus
    );
}
