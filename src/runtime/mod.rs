//! The thread-per-core runtime: one glommio executor pinned per CPU, each with its
//! own `SO_REUSEPORT` listener on the same address, its own sessions, streams and
//! outbound sockets. Nothing on the data path is shared between cores.
//!
//! [`Server::start`] checks what the kernel must offer ([`preflight`]), binds every
//! listener before any executor starts (so a bad address fails cleanly), starts the
//! executors and waits until each one is serving. [`Server::shutdown`] stops
//! accepting, closes sessions and joins the executors.

pub mod preflight;

use std::net::SocketAddr;
use std::os::fd::{FromRawFd, IntoRawFd};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::Duration;

use futures_lite::future;
use glommio::net::TcpListener;
use glommio::{LocalExecutorBuilder, Placement, PoolPlacement};
use log::{info, warn};
use socket2::{Domain, Protocol, Socket, Type};
use thiserror::Error;

use crate::config::ServerConfig;
use crate::mux::Event;
use crate::outbound::Resolver;
use crate::session;
use crate::stats::{CoreCounters, Stats};

/// How often executors look at the shutdown flag.
const SHUTDOWN_POLL: Duration = Duration::from_millis(50);
/// Listen backlog of each core's listener.
const LISTEN_BACKLOG: i32 = 4096;
/// io_uring memory per executor; glommio uses it only for file I/O, which we do not do.
const EXECUTOR_IO_MEMORY: usize = 256 * 1024;
/// Threads per core for blocking work (name resolution).
const BLOCKING_THREADS: usize = 2;

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
    pub acceptor: futures_rustls::TlsAcceptor,
    pub resolver: Resolver,
    pub shutdown: Event,
    stats: Stats,
    index: usize,
}

impl CoreContext {
    pub fn counters(&self) -> &CoreCounters {
        self.stats.core(self.index)
    }
}

/// A running server.
pub struct Server {
    local_addr: SocketAddr,
    stats: Stats,
    stop: Arc<AtomicBool>,
    executors: Vec<JoinHandle<()>>,
}

impl Server {
    /// Starts one executor per configured CPU and returns once all are accepting.
    pub fn start(config: ServerConfig) -> Result<Server, StartError> {
        preflight::check()?;
        let allowed = crate::config::allowed_cpus();
        if config.cpus.is_empty() {
            return Err(StartError::Cpus("no CPU to run on".into()));
        }
        if let Some(cpu) = config.cpus.iter().find(|cpu| !allowed.contains(cpu)) {
            return Err(StartError::Cpus(format!(
                "CPU {cpu} is not available to this process (allowed: {allowed:?})"
            )));
        }
        let listeners = bind_listeners(config.listen, config.cpus.len())?;
        let local_addr = listeners[0]
            .local_addr()
            .ok()
            .and_then(|a| a.as_socket())
            .expect("bound socket has an address");
        let stats = Stats::new(config.cpus.len());
        let stop = Arc::new(AtomicBool::new(false));
        let config = Arc::new(config);
        let (ready_tx, ready_rx) = mpsc::channel();
        let mut executors = Vec::new();
        for (index, (cpu, listener)) in config.cpus.iter().copied().zip(listeners).enumerate() {
            let config = config.clone();
            let stats = stats.clone();
            let stop = stop.clone();
            let ready = ready_tx.clone();
            let thread = std::thread::Builder::new()
                .name(format!("anytls-core-{cpu}"))
                .spawn(move || run_executor(index, cpu, listener, config, stats, stop, ready))
                .map_err(|e| StartError::Executor {
                    cpu,
                    reason: e.to_string(),
                })?;
            executors.push(thread);
        }
        drop(ready_tx);
        let mut server = Server {
            local_addr,
            stats,
            stop,
            executors,
        };
        for _ in 0..server.executors.len() {
            match ready_rx.recv() {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    server.stop_and_join();
                    return Err(e);
                }
                Err(_) => {
                    server.stop_and_join();
                    return Err(StartError::Executor {
                        cpu: usize::MAX,
                        reason: "an executor thread died while starting".into(),
                    });
                }
            }
        }
        Ok(server)
    }

    /// The address the listeners are bound to (with the real port if 0 was asked).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The server's counters.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// Stops accepting, closes every session and waits for the executors to exit.
    pub fn shutdown(mut self) {
        self.stop_and_join();
    }

    fn stop_and_join(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for thread in self.executors.drain(..) {
            let _ = thread.join();
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop_and_join();
    }
}

/// Binds one `SO_REUSEPORT` listener per core on the same address. The first bind
/// is made without `SO_REUSEPORT` to learn whether anyone else holds the port
/// (otherwise a second server of the same user would silently share it).
fn bind_listeners(addr: SocketAddr, count: usize) -> Result<Vec<Socket>, StartError> {
    let bind_error = |source| StartError::Bind { addr, source };
    let domain = Domain::for_address(addr);
    let probe = Socket::new(domain, Type::STREAM, Some(Protocol::TCP)).map_err(bind_error)?;
    probe.bind(&addr.into()).map_err(bind_error)?;
    let actual = probe
        .local_addr()
        .map_err(bind_error)?
        .as_socket()
        .expect("inet socket");
    drop(probe);
    (0..count)
        .map(|_| {
            let socket = Socket::new(domain, Type::STREAM, Some(Protocol::TCP))?;
            socket.set_reuse_port(true)?;
            socket.set_reuse_address(true)?;
            if addr.is_ipv6() {
                socket.set_only_v6(false).ok();
            }
            socket.bind(&actual.into())?;
            socket.listen(LISTEN_BACKLOG)?;
            Ok(socket)
        })
        .collect::<std::io::Result<Vec<_>>>()
        .map_err(|source| StartError::Bind {
            addr: actual,
            source,
        })
}

fn run_executor(
    index: usize,
    cpu: usize,
    listener: Socket,
    config: Arc<ServerConfig>,
    stats: Stats,
    stop: Arc<AtomicBool>,
    ready: mpsc::Sender<Result<(), StartError>>,
) {
    let fail = |reason: String| StartError::Executor { cpu, reason };
    if !core_affinity::set_for_current(core_affinity::CoreId { id: cpu }) {
        let _ = ready.send(Err(fail(
            "cannot pin the thread (sched_setaffinity)".into(),
        )));
        return;
    }
    let executor = LocalExecutorBuilder::new(Placement::Unbound)
        .name(&format!("anytls-core-{cpu}"))
        .io_memory(EXECUTOR_IO_MEMORY)
        .blocking_thread_pool_placement(PoolPlacement::Unbound(BLOCKING_THREADS))
        .make();
    let executor = match executor {
        Ok(executor) => executor,
        Err(e) => {
            let _ = ready.send(Err(fail(e.to_string())));
            return;
        }
    };
    executor.run(async move {
        // SAFETY: the fd comes from `into_raw_fd` of a listening socket we own, and
        // ownership moves into the glommio listener.
        let listener = unsafe { TcpListener::from_raw_fd(listener.into_raw_fd()) };
        let core = Rc::new(CoreContext {
            acceptor: futures_rustls::TlsAcceptor::from(config.tls.clone()),
            config,
            resolver: Resolver::default(),
            shutdown: Event::default(),
            stats,
            index,
        });
        let _ = ready.send(Ok(()));
        future::or(accept_loop(&listener, &core), async {
            while !stop.load(Ordering::Relaxed) {
                glommio::timer::sleep(SHUTDOWN_POLL).await;
            }
        })
        .await;
        drop(listener);
        core.shutdown.set();
        // Give sessions a moment to notice and close their sockets.
        let deadline = std::time::Instant::now() + Duration::from_secs(1);
        while core.counters().sessions_open.get() > 0 && std::time::Instant::now() < deadline {
            glommio::timer::sleep(Duration::from_millis(10)).await;
        }
    });
}

async fn accept_loop(listener: &TcpListener, core: &Rc<CoreContext>) {
    let mut last_warning: Option<std::time::Instant> = None;
    loop {
        match listener.accept().await {
            Ok(stream) => {
                let peer = match stream.peer_addr() {
                    Ok(peer) => peer,
                    Err(_) => continue,
                };
                stream.set_nodelay(true).ok();
                glommio::spawn_local(session::serve_connection(stream, peer, core.clone()))
                    .detach();
            }
            Err(e) => {
                // EMFILE and friends: back off instead of spinning, warn at most once a second.
                if last_warning.is_none_or(|t| t.elapsed() > Duration::from_secs(1)) {
                    warn!("accept failed: {e} (is RLIMIT_NOFILE too low? see kernel-notes.md)");
                    last_warning = Some(std::time::Instant::now());
                }
                glommio::timer::sleep(Duration::from_millis(20)).await;
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
