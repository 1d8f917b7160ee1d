//! The outbound connection pool: warm spares per target, in four interchangeable
//! kinds that share one set of semantics and differ only in their data structure.
//!
//! A spare is a TCP connection to a target, dialed ahead of need, that has never
//! carried a byte; a connection that carried a stream is closed when the stream
//! ends and never pooled. For every target asked for within `max_idle_time` the
//! pool keeps `min_idle` spares, refilled in the background after each take (never
//! on the stream's path). Spares idle longer than `max_idle_time` are closed, and
//! targets nobody asked for within it are no longer refilled. At most
//! `max_outbound` connections (in use plus spares, plus the UDP sockets of
//! UDP-over-TCP associations) are held, whatever the kind: at the cap the oldest
//! spare is closed to make room, and with none to close the stream is refused with
//! "outbound connection limit reached". A spare is checked with a non-blocking
//! peek before it is handed out.
//!
//! Kinds ([`PoolKind`]): `none` dials every time (the reference server's
//! behaviour); `lock` keeps one process-wide `RwLock<HashMap<_, Mutex<VecDeque>>>`;
//! `lockfree` one process-wide `DashMap<_, SegQueue>` with atomic counters;
//! `highperf` a core-local map per executor with a shared lock-free spill tier
//! (see [`store`]).

pub mod counters;
pub mod store;

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::io;
use std::mem::MaybeUninit;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, FromRawFd};
use std::rc::Rc;
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use glommio::net::TcpStream;
use glommio_socket2::Socket;
use log::debug;

use crate::mux::timeout;
use crate::outbound::{dial_any, DialError, Resolver};
use crate::proto::Address;
use counters::{AtomicCounters, CoreCounters, Counters, Field, LockedCounters, PoolStats};
use store::{HighPerfStore, LockFreeStore, LockStore, NoStore, Spare, SpareStore, SpillTier};

/// Which pool a server runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PoolKind {
    /// Dial every time, no spares.
    None,
    /// Process-wide `RwLock<HashMap>` + `Mutex<VecDeque>`.
    Lock,
    /// Process-wide `DashMap<_, SegQueue>`, atomic counters.
    LockFree,
    /// Core-local maps with a shared lock-free spill tier.
    HighPerf,
}

impl FromStr for PoolKind {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "none" | "direct" => Ok(PoolKind::None),
            "lock" => Ok(PoolKind::Lock),
            "lockfree" => Ok(PoolKind::LockFree),
            "highperf" => Ok(PoolKind::HighPerf),
            other => Err(format!(
                "unknown pool type {other:?} (none, direct, lock, lockfree, highperf)"
            )),
        }
    }
}

/// How a pool behaves.
#[derive(Clone, Debug)]
pub struct PoolConfig {
    /// The data structure.
    pub kind: PoolKind,
    /// Spares kept per recently asked-for target.
    pub min_idle: usize,
    /// Connections held (in use + spares) at most, per server.
    pub max_outbound: usize,
    /// Spares older than this are closed; targets not asked for within it are not refilled.
    pub max_idle_time: Duration,
    /// `SO_SNDBUF` asked for each connection carrying a stream (the kernel doubles
    /// it for its bookkeeping); 0 leaves the kernel's autotuning. Bounds what a
    /// target that reads slowly or not at all makes the kernel hold for us.
    pub send_buffer: usize,
}

/// Bound on dialing one spare.
const SPARE_DIAL_TIMEOUT: Duration = Duration::from_secs(5);
/// Default spares per target.
pub const DEFAULT_MIN_IDLE: usize = 3;
/// Default cap on outbound connections per server.
pub const DEFAULT_MAX_OUTBOUND: usize = 65_536;
/// The default cap on outbound connections for a process allowed `descriptors`
/// open files: [`DEFAULT_MAX_OUTBOUND`], or less, so that a quarter of the
/// descriptors stays for sessions, listeners and the runtime whatever the
/// streams do.
pub fn default_max_outbound(descriptors: u64) -> usize {
    let for_outbound = descriptors.saturating_sub(descriptors / 4).max(1);
    usize::try_from(for_outbound).map_or(DEFAULT_MAX_OUTBOUND, |n| n.min(DEFAULT_MAX_OUTBOUND))
}

/// Default spare lifetime.
pub const DEFAULT_MAX_IDLE_TIME: Duration = Duration::from_secs(60);
/// Default `SO_SNDBUF` of a connection carrying a stream.
pub const DEFAULT_SEND_BUFFER: usize = 1 << 20;

impl Default for PoolConfig {
    fn default() -> Self {
        PoolConfig {
            kind: PoolKind::None,
            min_idle: DEFAULT_MIN_IDLE,
            max_outbound: DEFAULT_MAX_OUTBOUND,
            max_idle_time: DEFAULT_MAX_IDLE_TIME,
            send_buffer: DEFAULT_SEND_BUFFER,
        }
    }
}

/// Spares of any store implement the trait through an `Arc` too.
impl<S, T: SpareStore<S>> SpareStore<S> for Arc<T> {
    fn pop(&self, target: &SocketAddr) -> Option<Spare<S>> {
        (**self).pop(target)
    }
    fn push(&self, target: SocketAddr, spare: Spare<S>) {
        (**self).push(target, spare)
    }
    fn pop_any(&self) -> Option<Spare<S>> {
        (**self).pop_any()
    }
    fn drain_older_than(&self, cutoff: Instant) -> Vec<Spare<S>> {
        (**self).drain_older_than(cutoff)
    }
    fn count(&self, target: &SocketAddr) -> usize {
        (**self).count(target)
    }
    fn tally(&self, out: &mut BTreeMap<SocketAddr, usize>) {
        (**self).tally(out)
    }
}

enum Shared {
    None(AtomicCounters),
    Lock(Arc<LockStore<Socket>>, LockedCounters),
    LockFree(Arc<LockFreeStore<Socket>>, AtomicCounters),
    HighPerf {
        tier: SpillTier<Socket>,
        per_core: Vec<CoreCounters>,
        /// Each core's local spares per target, published by its maintenance.
        published: Vec<Mutex<BTreeMap<SocketAddr, usize>>>,
    },
}

/// The process-wide part of a pool: what the kinds share across cores, and the
/// reporting side (`[Pool Stats]`, `[Pool Status]`).
pub struct SharedPool {
    config: PoolConfig,
    cores: usize,
    shared: Shared,
}

impl SharedPool {
    /// A pool for a server with `cores` executors.
    pub fn new(config: PoolConfig, cores: usize) -> Arc<SharedPool> {
        let shared = match config.kind {
            PoolKind::None => Shared::None(AtomicCounters::default()),
            PoolKind::Lock => Shared::Lock(Arc::default(), LockedCounters::default()),
            PoolKind::LockFree => Shared::LockFree(Arc::default(), AtomicCounters::default()),
            PoolKind::HighPerf => Shared::HighPerf {
                tier: Arc::default(),
                per_core: (0..cores).map(|_| CoreCounters::default()).collect(),
                published: (0..cores).map(|_| Mutex::default()).collect(),
            },
        };
        Arc::new(SharedPool {
            config,
            cores,
            shared,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &PoolConfig {
        &self.config
    }

    /// Counters summed over every core.
    pub fn stats(&self) -> PoolStats {
        match &self.shared {
            Shared::None(c) | Shared::LockFree(_, c) => counters::sum([c as &dyn Counters]),
            Shared::Lock(_, c) => counters::sum([c as &dyn Counters]),
            Shared::HighPerf { per_core, .. } => {
                counters::sum(per_core.iter().map(|c| c as &dyn Counters))
            }
        }
    }

    /// Spares held per target.
    pub fn status(&self) -> BTreeMap<SocketAddr, usize> {
        let mut tally = BTreeMap::new();
        match &self.shared {
            Shared::None(_) => {}
            Shared::Lock(store, _) => store.tally(&mut tally),
            Shared::LockFree(store, _) => store.tally(&mut tally),
            Shared::HighPerf {
                tier, published, ..
            } => {
                tier.tally(&mut tally);
                for core in published {
                    for (target, n) in core.lock().expect("status poisoned").iter() {
                        *tally.entry(*target).or_default() += n;
                    }
                }
            }
        }
        tally.retain(|_, n| *n > 0);
        tally
    }

    /// `[Pool Status] {"10.0.0.1:80": 15, ...}`: spares per target as JSON.
    pub fn status_line(&self) -> String {
        let map: serde_json::Map<String, serde_json::Value> = self
            .status()
            .into_iter()
            .map(|(target, n)| (target.to_string(), n.into()))
            .collect();
        format!("[Pool Status] {}", serde_json::Value::Object(map))
    }

    /// The executor-local handle of core `index`.
    pub fn core(self: &Arc<Self>, index: usize) -> Rc<CorePool> {
        let mut highperf = None;
        let store: Rc<dyn SpareStore<Socket>> = match &self.shared {
            Shared::None(_) => Rc::new(NoStore),
            Shared::Lock(store, _) => Rc::new(store.clone()),
            Shared::LockFree(store, _) => Rc::new(store.clone()),
            Shared::HighPerf { tier, .. } => {
                // Each core keeps its share of a target's spares; the rest of what it
                // dials goes to the tier for the other cores.
                let share = self.config.min_idle.div_ceil(self.cores);
                let store = Rc::new(HighPerfStore::new(tier.clone(), share));
                highperf = Some(store.clone());
                store
            }
        };
        Rc::new(CorePool {
            shared: self.clone(),
            index,
            store,
            highperf,
            demand: RefCell::default(),
            refilling: RefCell::default(),
        })
    }
}

/// One executor's view of the pool.
pub struct CorePool {
    shared: Arc<SharedPool>,
    index: usize,
    store: Rc<dyn SpareStore<Socket>>,
    /// The same store when it is `highperf`'s, for spilling.
    highperf: Option<Rc<HighPerfStore<Socket>>>,
    /// Targets this core asked for, and when last.
    demand: RefCell<HashMap<SocketAddr, Instant>>,
    /// Spare dials under way per target.
    refilling: RefCell<HashMap<SocketAddr, usize>>,
}

/// A connection carrying one stream; dropping it closes the connection.
pub struct Outbound {
    /// The connection.
    pub stream: TcpStream,
    /// Counts the connection as active (and held) until dropped.
    pub lease: ActiveLease,
}

/// Keeps an outbound connection counted as in use; drop it with the connection.
pub struct ActiveLease(Rc<CorePool>);

impl Drop for ActiveLease {
    fn drop(&mut self) {
        let counters = self.0.counters();
        counters.add(Field::Active, -1);
        counters.add(Field::Held, -1);
    }
}

/// Keeps a UDP association's socket counted as held; drop it with the socket.
pub struct UdpHold(Rc<CorePool>);

impl Drop for UdpHold {
    fn drop(&mut self) {
        self.0.counters().add(Field::Held, -1);
    }
}

impl CorePool {
    fn counters(&self) -> &dyn Counters {
        match &self.shared.shared {
            Shared::None(c) | Shared::LockFree(_, c) => c,
            Shared::Lock(_, c) => c,
            Shared::HighPerf { per_core, .. } => &per_core[self.index],
        }
    }

    /// Connections this core may hold: the server's cap, or for `highperf` (whose
    /// counters are per core) this core's share of it.
    fn cap(&self) -> usize {
        match self.shared.config.kind {
            PoolKind::HighPerf => self.shared.config.max_outbound.div_ceil(self.shared.cores),
            _ => self.shared.config.max_outbound,
        }
    }

    fn pools_spares(&self) -> bool {
        self.shared.config.kind != PoolKind::None && self.shared.config.min_idle > 0
    }

    /// A connection to `target` for a stream: a live spare if one is waiting,
    /// otherwise a fresh dial, all within `limit`.
    pub async fn connect(
        self: &Rc<Self>,
        resolver: &Resolver,
        target: &Address,
        limit: Duration,
    ) -> Result<Outbound, DialError> {
        let attempt = async {
            let addrs = resolver.resolve(target).await?;
            let key = addrs[0];
            if self.pools_spares() {
                self.demand.borrow_mut().insert(key, Instant::now());
                if let Some(stream) = self.take_live_spare(&key) {
                    self.counters().add(Field::Reused, 1);
                    return Ok((self.lease(stream), key));
                }
            }
            self.reserve_for_stream()?;
            let stream = match dial_any(&addrs, limit).await {
                Ok(stream) => stream,
                Err(e) => {
                    self.counters().add(Field::Held, -1);
                    return Err(DialError::Connect(target.clone(), e));
                }
            };
            let counters = self.counters();
            counters.add(Field::Total, 1);
            counters.add(Field::New, 1);
            Ok((self.lease(stream), key))
        };
        let (outbound, key) = timeout(limit, attempt)
            .await
            .unwrap_or_else(|| Err(DialError::Timeout(target.clone(), limit)))?;
        self.schedule_refill(key);
        Ok(outbound)
    }

    fn lease(self: &Rc<Self>, stream: TcpStream) -> Outbound {
        let send_buffer = self.shared.config.send_buffer;
        if send_buffer > 0 {
            crate::mux::set_send_buffer(&stream, send_buffer).ok();
        }
        self.counters().add(Field::Active, 1);
        Outbound {
            stream,
            lease: ActiveLease(self.clone()),
        }
    }

    /// Counts a UDP-over-TCP association's socket against the cap on outbound
    /// connections until the returned hold is dropped.
    pub fn hold_udp(self: &Rc<Self>) -> Result<UdpHold, DialError> {
        self.reserve_for_stream()?;
        Ok(UdpHold(self.clone()))
    }

    /// Pops spares for `key` until one passes the liveness check.
    fn take_live_spare(&self, key: &SocketAddr) -> Option<TcpStream> {
        while let Some(spare) = self.store.pop(key) {
            if is_alive(&spare.item) {
                return Some(TcpStream::from(spare.item));
            }
            debug!("spare to {key} was closed by the target; discarded");
            self.discard(1);
        }
        None
    }

    fn discard(&self, n: usize) {
        let counters = self.counters();
        counters.add(Field::Cleaned, n as i64);
        counters.add(Field::Held, -(n as i64));
    }

    /// Takes a connection slot for a stream, closing the oldest spare at the cap.
    fn reserve_for_stream(&self) -> Result<(), DialError> {
        if self.counters().try_hold(self.cap()) {
            return Ok(());
        }
        match self.store.pop_any() {
            // The evicted spare's slot passes to the stream.
            Some(_evicted) => {
                self.counters().add(Field::Cleaned, 1);
                Ok(())
            }
            None => Err(DialError::LimitReached),
        }
    }

    /// Tops `key` up to `min_idle` spares in the background: one dial task per
    /// missing spare (counting dials already under way), each within the cap.
    fn schedule_refill(self: &Rc<Self>, key: SocketAddr) {
        if !self.pools_spares() {
            return;
        }
        let pending = self.refilling.borrow().get(&key).copied().unwrap_or(0);
        let deficit = self
            .shared
            .config
            .min_idle
            .saturating_sub(self.store.count(&key) + pending);
        for _ in 0..deficit {
            if !self.counters().try_hold(self.cap()) {
                return;
            }
            *self.refilling.borrow_mut().entry(key).or_default() += 1;
            let pool = self.clone();
            glommio::spawn_local(async move {
                pool.dial_spare(key).await;
                let mut refilling = pool.refilling.borrow_mut();
                if let Some(n) = refilling.get_mut(&key) {
                    *n -= 1;
                    if *n == 0 {
                        refilling.remove(&key);
                    }
                }
            })
            .detach();
        }
    }

    /// Dials one spare for `key` into the store; its connection slot is already held.
    async fn dial_spare(&self, key: SocketAddr) {
        let limit = SPARE_DIAL_TIMEOUT;
        let socket = match timeout(limit, TcpStream::connect_timeout(key, limit)).await {
            Some(Ok(stream)) => into_socket(stream),
            Some(Err(e)) => Err(e.into()),
            None => Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "spare dial timed out",
            )),
        };
        match socket {
            Ok(socket) => {
                self.counters().add(Field::Total, 1);
                self.store.push(key, Spare::new(socket));
            }
            Err(e) => {
                debug!("spare dial to {key} failed: {e}");
                self.counters().add(Field::Held, -1);
            }
        }
    }

    /// One maintenance pass: close expired spares, forget stale targets, top up
    /// the others, and (highperf) spill spares this core no longer wants.
    pub fn maintain_once(self: &Rc<Self>, now: Instant) {
        let max_idle = self.shared.config.max_idle_time;
        if let Some(cutoff) = now.checked_sub(max_idle) {
            let expired = self.store.drain_older_than(cutoff);
            if !expired.is_empty() {
                debug!("closing {} spare(s) idle for {max_idle:?}", expired.len());
                self.discard(expired.len());
            }
        }
        self.demand
            .borrow_mut()
            .retain(|_, asked| now.duration_since(*asked) < max_idle);
        let wanted: Vec<SocketAddr> = self.demand.borrow().keys().copied().collect();
        for key in wanted {
            self.schedule_refill(key);
        }
        if let Shared::HighPerf { published, .. } = &self.shared.shared {
            let demand = self.demand.borrow();
            if let Some(store) = &self.highperf {
                store.spill_unwanted(|target| demand.contains_key(target));
            }
            let mut tally = BTreeMap::new();
            self.store.tally(&mut tally);
            *published[self.index].lock().expect("status poisoned") = tally;
        }
    }

    /// Runs [`CorePool::maintain_once`] periodically; never returns.
    pub async fn maintain(self: Rc<Self>) {
        let every = (self.shared.config.max_idle_time / 4)
            .clamp(Duration::from_millis(100), Duration::from_secs(1));
        loop {
            glommio::timer::sleep(every).await;
            self.maintain_once(Instant::now());
        }
    }

    /// Spares this core can see for `key` (its own, or the shared store's).
    pub fn spares(&self, key: &SocketAddr) -> usize {
        self.store.count(key)
    }
}

/// Turns a glommio stream into an owned socket that can wait in a store and cross
/// executors (glommio 0.9's `TcpStream` has no `IntoRawFd`).
#[allow(unsafe_code)]
fn into_socket(stream: TcpStream) -> io::Result<Socket> {
    stream.set_nodelay(true).ok();
    // SAFETY: `dup` returns a new descriptor, or -1 (checked), that nothing else
    // owns; `Socket::from_raw_fd` takes sole ownership of it. The original fd stays
    // with `stream`, which closes it when dropped at the end of this function.
    let fd = unsafe { libc::dup(stream.as_raw_fd()) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(unsafe { Socket::from_raw_fd(fd) })
}

/// A spare is alive unless a non-blocking peek sees EOF or an error. (Bytes
/// waiting mean a server-speaks-first target: they stay for the stream.)
fn is_alive(socket: &Socket) -> bool {
    let mut byte = [MaybeUninit::<u8>::uninit(); 1];
    match socket.recv_with_flags(&mut byte, libc::MSG_PEEK | libc::MSG_DONTWAIT) {
        Ok(0) => false,
        Ok(_) => true,
        Err(e) => e.kind() == io::ErrorKind::WouldBlock,
    }
}
