//! Pinned executors: one thread per CPU, pinned with `sched_setaffinity`, each
//! running a glommio executor that serves its own `SO_REUSEPORT` listener.
//!
//! Listeners are bound before any thread starts, so a bad address fails cleanly,
//! and [`Executors::start`] returns only once every executor is running.

use std::future::Future;
use std::net::SocketAddr;
use std::os::fd::{FromRawFd, IntoRawFd};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::Duration;

use glommio::net::TcpListener;
use glommio::{LocalExecutorBuilder, Placement, PoolPlacement};
use socket2::{Domain, Protocol, Socket, Type};

use super::{preflight, StartError};
use crate::plumbing::Event;

/// How often executors look at the stop flag.
const STOP_POLL: Duration = Duration::from_millis(50);
/// How long a bind keeps retrying a port in use (a previous instance's ring teardown).
const RESTART_BIND_GRACE: Duration = Duration::from_millis(1000);
/// Listen backlog of each core's listener.
const LISTEN_BACKLOG: i32 = 4096;
/// io_uring memory per executor; glommio uses it only for file I/O, which we do not do.
const EXECUTOR_IO_MEMORY: usize = 64 * 1024;
/// Threads per core for blocking work (name resolution).
const BLOCKING_THREADS: usize = crate::pool::dial::LOOKUP_THREADS;

/// Running executors; dropping them stops and joins them.
pub struct Executors {
    local_addr: SocketAddr,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl Executors {
    /// Binds `listen` once per CPU and starts one executor per CPU (threads named
    /// `{name}-{cpu}`), each running `serve(index, listener, stop)`; `stop` is set
    /// when [`Executors::stop_and_join`] is called, and `serve` should then wind
    /// down and return.
    pub fn start<F, Fut>(
        name: &str,
        listen: SocketAddr,
        cpus: &[usize],
        serve: F,
    ) -> Result<Executors, StartError>
    where
        F: Fn(usize, TcpListener, Rc<Event>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + 'static,
    {
        preflight::check()?;
        let allowed = super::allowed_cpus();
        if cpus.is_empty() {
            return Err(StartError::Cpus("no CPU to run on".into()));
        }
        if let Some(cpu) = cpus.iter().find(|cpu| !allowed.contains(cpu)) {
            return Err(StartError::Cpus(format!(
                "CPU {cpu} is not available to this process (allowed: {allowed:?})"
            )));
        }
        let listeners = bind_listeners(listen, cpus.len())?;
        let local_addr = listeners[0]
            .local_addr()
            .ok()
            .and_then(|a| a.as_socket())
            .expect("bound socket has an address");
        let serve = Arc::new(serve);
        let mut executors = Executors {
            local_addr,
            stop: Arc::new(AtomicBool::new(false)),
            threads: Vec::new(),
        };
        let (ready_tx, ready_rx) = mpsc::channel();
        for (index, (cpu, listener)) in cpus.iter().copied().zip(listeners).enumerate() {
            let serve = serve.clone();
            let stop = executors.stop.clone();
            let ready = ready_tx.clone();
            let name = format!("{name}-{cpu}");
            let thread = std::thread::Builder::new()
                .name(name.clone())
                .spawn(move || {
                    run_executor(&name, cpu, listener, stop, ready, |listener, stop| {
                        serve(index, listener, stop)
                    })
                })
                .map_err(|e| StartError::Executor {
                    cpu,
                    reason: e.to_string(),
                })?;
            executors.threads.push(thread);
        }
        drop(ready_tx);
        for _ in 0..executors.threads.len() {
            let outcome = ready_rx.recv().unwrap_or_else(|_| {
                Err(StartError::Executor {
                    cpu: usize::MAX,
                    reason: "an executor thread died while starting".into(),
                })
            });
            if let Err(e) = outcome {
                executors.stop_and_join();
                return Err(e);
            }
        }
        Ok(executors)
    }

    /// The address the listeners are bound to (with the real port if 0 was asked).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Signals every executor to stop and waits for their threads.
    pub fn stop_and_join(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

impl Drop for Executors {
    fn drop(&mut self) {
        self.stop_and_join();
    }
}

/// Binds one `SO_REUSEPORT` listener per core on the same address. The first bind
/// is made without `SO_REUSEPORT` to learn whether anyone else listens on the port
/// (otherwise a second server of the same user would silently share it).
fn bind_listeners(addr: SocketAddr, count: usize) -> Result<Vec<Socket>, StartError> {
    let bind_error = |source| StartError::Bind { addr, source };
    let domain = Domain::for_address(addr);
    let probe = Socket::new(domain, Type::STREAM, Some(Protocol::TCP)).map_err(bind_error)?;
    // SO_REUSEADDR lets a restart bind over TIME_WAIT leftovers; Linux still refuses
    // it while anyone listens on the port.
    probe.set_reuse_address(true).map_err(bind_error)?;
    // A server that just exited may hold the port a moment longer: its io_uring is
    // torn down asynchronously by the kernel, listener included.
    let deadline = std::time::Instant::now() + RESTART_BIND_GRACE;
    loop {
        match probe.bind(&addr.into()) {
            Ok(()) => break,
            Err(e)
                if e.kind() == std::io::ErrorKind::AddrInUse
                    && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(e) => return Err(bind_error(e)),
        }
    }
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

fn run_executor<Fut: Future<Output = ()> + 'static>(
    name: &str,
    cpu: usize,
    listener: Socket,
    stop: Arc<AtomicBool>,
    ready: mpsc::Sender<Result<(), StartError>>,
    serve: impl FnOnce(TcpListener, Rc<Event>) -> Fut,
) {
    let fail = |reason: String| StartError::Executor { cpu, reason };
    if !core_affinity::set_for_current(core_affinity::CoreId { id: cpu }) {
        let _ = ready.send(Err(fail(
            "cannot pin the thread (sched_setaffinity)".into(),
        )));
        return;
    }
    let executor = LocalExecutorBuilder::new(Placement::Unbound)
        .name(name)
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
        let listener = adopt_listener(listener);
        let stop_event = Rc::new(Event::default());
        let watcher = stop_event.clone();
        glommio::spawn_local(async move {
            while !stop.load(Ordering::Relaxed) {
                glommio::timer::sleep(STOP_POLL).await;
            }
            watcher.set();
        })
        .detach();
        let _ = ready.send(Ok(()));
        serve(listener, stop_event).await;
    });
}

/// Hands a bound, listening socket to the current executor.
#[allow(unsafe_code)]
pub(crate) fn adopt_listener(socket: Socket) -> TcpListener {
    // SAFETY: `into_raw_fd` releases the socket's sole ownership of a valid,
    // listening descriptor, which the glommio listener takes over.
    unsafe { TcpListener::from_raw_fd(socket.into_raw_fd()) }
}

/// Binds a plain (not `SO_REUSEPORT`) listener, for a service one executor serves.
pub(crate) fn bind_single(addr: SocketAddr) -> std::io::Result<Socket> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.bind(&addr.into())?;
    socket.listen(128)?;
    Ok(socket)
}
