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
//! Kinds ([`PoolKind`]), one file each, all behind [`kind::Kind`] (process-wide)
//! and [`kind::Shard`] (one core's handle: spares, counters, cap):
//! [`none`] dials every time (the reference server's behaviour); [`lock`] keeps
//! one process-wide `RwLock<HashMap<_, Mutex<VecDeque>>>`; [`lockfree`] one
//! process-wide `DashMap<_, SegQueue>` with atomic counters; [`highperf`] a
//! core-local map per executor with a shared lock-free spill tier.
//!
//! This file is the front: configuration, [`SharedPool`] (process-wide, the
//! reports), [`CorePool`] (one executor's, the decisions: take or dial, reserve
//! within the cap, refill, expire) and the leases. [`dial`] resolves targets and
//! opens connections through the [`dial::Dial`] seam; the pool's decisions take
//! their time from an injected clock, so they are tested below with a fake
//! dialer and fake time.

pub mod dial;
pub mod highperf;
pub mod kind;
pub mod lock;
pub mod lockfree;
mod lookup_slots;
pub mod none;

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::io;
use std::net::SocketAddr;
use std::rc::Rc;
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use glommio_socket2::Socket;
use log::debug;

use crate::plumbing::timeout;
use crate::proto::Address;
use dial::{Dial, DialError, Resolver, TcpDialer};
use highperf::HighPerfPool;
pub use kind::PoolStats;
use kind::{Field, Kind, Shard, Spare};
use lock::LockPool;
use lockfree::LockFreePool;
use none::NoPool;

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

impl std::fmt::Display for PoolKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            PoolKind::None => "none",
            PoolKind::Lock => "lock",
            PoolKind::LockFree => "lockfree",
            PoolKind::HighPerf => "highperf",
        })
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

/// Where a core pool reads the time: `Instant::now` in the server, a fake in tests.
pub type Clock = Box<dyn Fn() -> Instant>;

/// The process-wide part of a pool: the kind's shared state, and the reporting
/// side (`[Pool Stats]`, `[Pool Status]`). `S` is what a spare holds (an owned
/// socket in the server).
pub struct SharedPool<S = Socket> {
    config: PoolConfig,
    kind: Arc<dyn Kind<S>>,
}

impl SharedPool {
    /// The server's pool for `cores` executors.
    pub fn new(config: PoolConfig, cores: usize) -> Arc<SharedPool> {
        SharedPool::for_connections(config, cores)
    }

    /// The executor-local handle of core `index`, dialing real connections.
    pub fn core(self: &Arc<Self>, index: usize) -> Rc<CorePool> {
        self.core_with(index, TcpDialer, Box::new(Instant::now))
    }
}

impl<S: Send + 'static> SharedPool<S> {
    /// A pool for `cores` executors whose spares hold an `S`.
    pub fn for_connections(config: PoolConfig, cores: usize) -> Arc<SharedPool<S>> {
        let cap = config.max_outbound;
        let kind: Arc<dyn Kind<S>> = match config.kind {
            PoolKind::None => Arc::new(NoPool::new(cap)),
            PoolKind::Lock => Arc::new(LockPool::new(cap)),
            PoolKind::LockFree => Arc::new(LockFreePool::new(cap)),
            PoolKind::HighPerf => Arc::new(HighPerfPool::new(cores, config.min_idle, cap)),
        };
        Arc::new(SharedPool { config, kind })
    }

    /// The configuration.
    pub fn config(&self) -> &PoolConfig {
        &self.config
    }

    /// Counters summed over every core.
    pub fn stats(&self) -> PoolStats {
        self.kind.stats()
    }

    /// Spares held per target.
    pub fn status(&self) -> BTreeMap<SocketAddr, usize> {
        let mut tally = BTreeMap::new();
        self.kind.tally(&mut tally);
        tally.retain(|_, n| *n > 0);
        tally
    }

    /// The executor-local handle of core `index`, opening connections through
    /// `dialer` and reading the time from `clock`.
    pub fn core_with<D: Dial<Spare = S>>(
        self: &Arc<Self>,
        index: usize,
        dialer: D,
        clock: Clock,
    ) -> Rc<CorePool<D>> {
        Rc::new(CorePool {
            config: self.config.clone(),
            shard: self.kind.clone().shard(index),
            dialer,
            clock,
            demand: RefCell::default(),
            refilling: RefCell::default(),
        })
    }
}

/// One executor's view of the pool.
pub struct CorePool<D: Dial = TcpDialer> {
    config: PoolConfig,
    /// This core's handle on the kind: spares, counters, cap.
    shard: Box<dyn Shard<D::Spare>>,
    dialer: D,
    clock: Clock,
    /// Targets this core asked for, and when last.
    demand: RefCell<HashMap<SocketAddr, Instant>>,
    /// Spare dials under way per target.
    refilling: RefCell<HashMap<SocketAddr, usize>>,
}

/// A connection carrying one stream; dropping it closes the connection.
pub struct Outbound<D: Dial = TcpDialer> {
    /// The connection.
    pub stream: D::Stream,
    /// Counts the connection as active (and held) until dropped.
    pub lease: ActiveLease<D>,
}

/// Keeps an outbound connection counted as in use; drop it with the connection.
pub struct ActiveLease<D: Dial = TcpDialer>(Rc<CorePool<D>>);

impl<D: Dial> Drop for ActiveLease<D> {
    fn drop(&mut self) {
        self.0.shard.add(Field::Active, -1);
        self.0.shard.add(Field::Held, -1);
    }
}

/// Keeps a UDP association's socket counted as held; drop it with the socket.
pub struct UdpHold<D: Dial = TcpDialer>(Rc<CorePool<D>>);

impl<D: Dial> Drop for UdpHold<D> {
    fn drop(&mut self) {
        self.0.shard.add(Field::Held, -1);
    }
}

impl<D: Dial + 'static> CorePool<D> {
    fn keeps_spares(&self) -> bool {
        self.config.min_idle > 0 && self.shard.keeps_spares()
    }

    /// A connection to `target` for a stream: a live spare if one is waiting,
    /// otherwise a fresh dial, all within `limit`.
    pub async fn connect(
        self: &Rc<Self>,
        resolver: &Resolver,
        target: &Address,
        user: &str,
        limit: Duration,
    ) -> Result<Outbound<D>, DialError> {
        let attempt = async {
            let addrs = resolver.resolve(target, user).await?;
            let key = addrs[0];
            if self.keeps_spares() {
                self.demand.borrow_mut().insert(key, (self.clock)());
                if let Some(stream) = self.take_live_spare(&key) {
                    self.shard.add(Field::Reused, 1);
                    return Ok((self.lease(stream), key));
                }
            }
            self.reserve_for_stream()?;
            let stream = match self.dialer.dial(&addrs, limit).await {
                Ok(stream) => stream,
                Err(e) => {
                    self.shard.add(Field::Held, -1);
                    return Err(DialError::Connect(target.clone(), e));
                }
            };
            self.shard.add(Field::Total, 1);
            self.shard.add(Field::New, 1);
            Ok((self.lease(stream), key))
        };
        let (outbound, key) = timeout(limit, attempt)
            .await
            .unwrap_or_else(|| Err(DialError::Timeout(target.clone(), limit)))?;
        self.schedule_refill(key);
        Ok(outbound)
    }

    fn lease(self: &Rc<Self>, stream: D::Stream) -> Outbound<D> {
        let send_buffer = self.config.send_buffer;
        if send_buffer > 0 {
            self.dialer.set_send_buffer(&stream, send_buffer);
        }
        self.shard.add(Field::Active, 1);
        Outbound {
            stream,
            lease: ActiveLease(self.clone()),
        }
    }

    /// Counts a UDP-over-TCP association's socket against the cap on outbound
    /// connections until the returned hold is dropped.
    pub fn hold_udp(self: &Rc<Self>) -> Result<UdpHold<D>, DialError> {
        self.reserve_for_stream()?;
        Ok(UdpHold(self.clone()))
    }

    /// Takes spares for `key` until one passes the liveness check.
    fn take_live_spare(&self, key: &SocketAddr) -> Option<D::Stream> {
        while let Some(spare) = self.shard.take(key) {
            if self.dialer.is_alive(&spare.connection) {
                return Some(self.dialer.stream_from_spare(spare.connection));
            }
            debug!("spare to {key} was closed by the target; discarded");
            self.discard(1);
        }
        None
    }

    fn discard(&self, n: usize) {
        self.shard.add(Field::Cleaned, n as i64);
        self.shard.add(Field::Held, -(n as i64));
    }

    /// Takes a connection slot for a stream, closing the oldest spare at the cap.
    fn reserve_for_stream(&self) -> Result<(), DialError> {
        if self.shard.try_hold() {
            return Ok(());
        }
        match self.shard.evict() {
            // The evicted spare's slot passes to the stream.
            Some(_evicted) => {
                self.shard.add(Field::Cleaned, 1);
                Ok(())
            }
            None => Err(DialError::LimitReached),
        }
    }

    /// Tops `key` up to `min_idle` spares in the background: one dial task per
    /// missing spare (counting dials already under way), each within the cap.
    fn schedule_refill(self: &Rc<Self>, key: SocketAddr) {
        if !self.keeps_spares() {
            return;
        }
        let pending = self.refilling.borrow().get(&key).copied().unwrap_or(0);
        let deficit = self
            .config
            .min_idle
            .saturating_sub(self.shard.spares(&key) + pending);
        for _ in 0..deficit {
            if !self.shard.try_hold() {
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
        let dialed = timeout(limit, self.dialer.dial_spare(key, limit))
            .await
            .unwrap_or_else(|| {
                Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "spare dial timed out",
                ))
            });
        match dialed {
            Ok(connection) => {
                self.shard.add(Field::Total, 1);
                self.shard.put(key, Spare::new(connection, (self.clock)()));
            }
            Err(e) => {
                debug!("spare dial to {key} failed: {e}");
                self.shard.add(Field::Held, -1);
            }
        }
    }

    /// One maintenance pass at `now`: close expired spares, forget stale targets,
    /// top up the others, and (highperf) spill spares this core no longer wants.
    pub fn maintain_once(self: &Rc<Self>, now: Instant) {
        let max_idle = self.config.max_idle_time;
        if let Some(cutoff) = now.checked_sub(max_idle) {
            let expired = self.shard.expire(cutoff);
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
        let demand = self.demand.borrow();
        self.shard
            .after_maintenance(&|target| demand.contains_key(target));
    }

    /// Runs [`CorePool::maintain_once`] periodically; never returns.
    pub async fn maintain(self: Rc<Self>) {
        let every = (self.config.max_idle_time / 4)
            .clamp(Duration::from_millis(100), Duration::from_secs(1));
        loop {
            glommio::timer::sleep(every).await;
            self.maintain_once((self.clock)());
        }
    }

    /// Spares this core can see for `key` (its own, or the shared store's).
    pub fn spares(&self, key: &SocketAddr) -> usize {
        self.shard.spares(key)
    }
}

#[cfg(test)]
mod tests {
    //! The pool's decisions with a fake dialer (connections are numbers) and a
    //! fake clock, on a glommio executor for the background refills: no socket,
    //! no sleep.

    use super::*;
    use std::cell::Cell;
    use std::collections::HashSet;
    use std::future::{poll_fn, Future};
    use std::task::{Poll, Waker};

    use crate::stats::Limit;
    use glommio::{LocalExecutorBuilder, Placement};

    const LIMIT: Duration = Duration::from_secs(5);
    const MAX_IDLE: Duration = Duration::from_secs(60);

    /// What the fake network saw and will do.
    #[derive(Default)]
    struct FakeNet {
        /// The last connection number handed out (the first is 1).
        last: Cell<u32>,
        stream_dials: Cell<usize>,
        spare_dials: Cell<usize>,
        /// Stream dials fail with this errno while set.
        fail_streams_with: Cell<Option<i32>>,
        /// Spare dials fail with this errno while set.
        fail_spares_with: Cell<Option<i32>>,
        /// Spare dials wait while set, until [`FakeNet::finish_spare_dials`].
        stall_spares: Cell<bool>,
        stalled: RefCell<Vec<Waker>>,
        /// Connections the far end has closed.
        closed: RefCell<HashSet<u32>>,
        /// (connection, bytes) for each `SO_SNDBUF` asked for.
        send_buffers: RefCell<Vec<(u32, usize)>>,
    }

    impl FakeNet {
        fn connect(&self, fail_with: Option<i32>) -> io::Result<u32> {
            if let Some(errno) = fail_with {
                return Err(io::Error::from_raw_os_error(errno));
            }
            self.last.set(self.last.get() + 1);
            Ok(self.last.get())
        }

        /// Lets the stalled spare dials complete.
        fn finish_spare_dials(&self) {
            self.stall_spares.set(false);
            for waker in self.stalled.take() {
                waker.wake();
            }
        }
    }

    struct FakeDialer(Rc<FakeNet>);

    impl Dial for FakeDialer {
        type Stream = u32;
        type Spare = u32;

        async fn dial(&self, _: &[SocketAddr], _: Duration) -> io::Result<u32> {
            self.0.stream_dials.set(self.0.stream_dials.get() + 1);
            self.0.connect(self.0.fail_streams_with.get())
        }
        async fn dial_spare(&self, _: SocketAddr, _: Duration) -> io::Result<u32> {
            self.0.spare_dials.set(self.0.spare_dials.get() + 1);
            poll_fn(|cx| {
                if !self.0.stall_spares.get() {
                    return Poll::Ready(());
                }
                self.0.stalled.borrow_mut().push(cx.waker().clone());
                Poll::Pending
            })
            .await;
            self.0.connect(self.0.fail_spares_with.get())
        }
        fn is_alive(&self, spare: &u32) -> bool {
            !self.0.closed.borrow().contains(spare)
        }
        fn stream_from_spare(&self, spare: u32) -> u32 {
            spare
        }
        fn set_send_buffer(&self, stream: &u32, bytes: usize) {
            self.0.send_buffers.borrow_mut().push((*stream, bytes));
        }
    }

    /// Time as the test sets it.
    #[derive(Clone)]
    struct FakeClock(Rc<Cell<Instant>>);

    impl FakeClock {
        fn now(&self) -> Instant {
            self.0.get()
        }
        fn set(&self, at: Instant) {
            self.0.set(at);
        }
    }

    /// A test pool: core `index` of `shared`, with the fake network and clock.
    struct Rig {
        shared: Arc<SharedPool<u32>>,
        net: Rc<FakeNet>,
        clock: FakeClock,
        start: Instant,
        resolver: Resolver,
    }

    impl Rig {
        fn new(kind: PoolKind, min_idle: usize, max_outbound: usize, cores: usize) -> Rig {
            let config = PoolConfig {
                kind,
                min_idle,
                max_outbound,
                max_idle_time: MAX_IDLE,
                send_buffer: 4096,
            };
            let start = Instant::now();
            Rig {
                shared: SharedPool::for_connections(config, cores),
                net: Rc::default(),
                clock: FakeClock(Rc::new(Cell::new(start))),
                start,
                resolver: Resolver::default(),
            }
        }

        fn core(&self, index: usize) -> Rc<CorePool<FakeDialer>> {
            let clock = self.clock.clone();
            self.shared.core_with(
                index,
                FakeDialer(self.net.clone()),
                Box::new(move || clock.now()),
            )
        }

        /// Sets the fake time to `secs` after the start.
        fn at(&self, secs: u64) -> Instant {
            self.clock.set(self.start + Duration::from_secs(secs));
            self.clock.now()
        }

        fn dials(&self) -> (usize, usize) {
            (self.net.stream_dials.get(), self.net.spare_dials.get())
        }
    }

    fn target(port: u16) -> Address {
        Address::Ip(key(port))
    }

    fn key(port: u16) -> SocketAddr {
        SocketAddr::from(([192, 0, 2, 1], port))
    }

    fn stats(total: u64, active: u64, reused: u64, new: u64, cleaned: u64, held: u64) -> PoolStats {
        PoolStats {
            total,
            active,
            reused,
            new,
            cleaned,
            held,
        }
    }

    fn run<T>(test: impl Future<Output = T>) -> T {
        LocalExecutorBuilder::new(Placement::Unbound)
            .io_memory(64 * 1024)
            .make()
            .expect("executor")
            .run(test)
    }

    /// Lets the refill tasks spawned so far run to completion. (glommio runs a
    /// task spawned on the current queue at once, so fake dials that do not stall
    /// are done before `spawn_local` returns; this is for those that stalled.)
    async fn settle() {
        for _ in 0..8 {
            futures_lite::future::yield_now().await;
        }
    }

    async fn connect(
        pool: &Rc<CorePool<FakeDialer>>,
        rig: &Rig,
        port: u16,
    ) -> Outbound<FakeDialer> {
        pool.connect(&rig.resolver, &target(port), "test", LIMIT)
            .await
            .expect("connect")
    }

    #[test]
    fn spares_are_reused_oldest_first() {
        let rig = Rig::new(PoolKind::Lock, 2, 100, 1);
        let pool = rig.core(0);
        run(async {
            let first = connect(&pool, &rig, 80).await;
            assert_eq!(first.stream, 1, "nothing waiting: dialed");
            assert_eq!(rig.dials(), (1, 2), "refilled to min_idle");
            assert_eq!(pool.spares(&key(80)), 2);
            let second = connect(&pool, &rig, 80).await;
            assert_eq!(second.stream, 2, "the oldest spare");
            assert_eq!(rig.dials(), (1, 3), "taken, not dialed, and replaced");
            assert_eq!(pool.spares(&key(80)), 2);
            assert_eq!(rig.shared.stats(), stats(4, 2, 1, 1, 0, 4));
            assert_eq!(rig.shared.status(), BTreeMap::from([(key(80), 2)]));
        });
    }

    #[test]
    fn spares_older_than_max_idle_time_expire() {
        let rig = Rig::new(PoolKind::Lock, 2, 100, 1);
        let pool = rig.core(0);
        run(async {
            drop(connect(&pool, &rig, 80).await);
            settle().await;
            assert_eq!(pool.spares(&key(80)), 2);
            pool.maintain_once(rig.at(59));
            settle().await;
            assert_eq!(pool.spares(&key(80)), 2, "59 s idle: kept");
            assert_eq!(rig.shared.stats().cleaned, 0);
            pool.maintain_once(rig.at(61));
            settle().await;
            assert_eq!(pool.spares(&key(80)), 0, "61 s idle: closed");
            assert_eq!(rig.dials(), (1, 2));
            assert_eq!(rig.shared.stats(), stats(3, 0, 0, 1, 2, 0));
            assert!(rig.shared.status().is_empty());
        });
    }

    #[test]
    fn targets_not_asked_for_within_max_idle_time_are_not_refilled() {
        let rig = Rig::new(PoolKind::Lock, 2, 100, 1);
        let pool = rig.core(0);
        run(async {
            drop(connect(&pool, &rig, 80).await);
            rig.at(30);
            drop(connect(&pool, &rig, 81).await);
            settle().await;
            assert_eq!(rig.dials(), (2, 4));
            // At 61 s: port 80 (asked at 0 s) has expired spares and is forgotten;
            // port 81 (asked at 30 s) keeps its young spares.
            pool.maintain_once(rig.at(61));
            settle().await;
            assert_eq!((pool.spares(&key(80)), pool.spares(&key(81))), (0, 2));
            assert_eq!(rig.dials(), (2, 4), "port 80 not refilled");
            // At 95 s port 81's spares are 65 s old and nobody asked for 65 s.
            pool.maintain_once(rig.at(95));
            settle().await;
            assert_eq!(pool.spares(&key(81)), 0);
            assert_eq!(rig.dials(), (2, 4), "port 81 not refilled");
            assert_eq!(rig.shared.stats(), stats(6, 0, 0, 2, 4, 0));
        });
    }

    #[test]
    fn refill_keeps_min_idle_spares_for_a_recently_asked_target() {
        let rig = Rig::new(PoolKind::Lock, 3, 100, 1);
        let pool = rig.core(0);
        run(async {
            drop(connect(&pool, &rig, 80).await);
            settle().await;
            assert_eq!(rig.dials(), (1, 3));
            // Asked again at 30 s: a spare from 0 s serves it, one dial replaces it.
            rig.at(30);
            drop(connect(&pool, &rig, 80).await);
            settle().await;
            assert_eq!(rig.dials(), (1, 4));
            // At 61 s the two spares left from 0 s expire; the target was asked for
            // 31 s ago, so maintenance dials two more.
            pool.maintain_once(rig.at(61));
            assert_eq!(rig.dials(), (1, 6));
            assert_eq!(pool.spares(&key(80)), 3);
            assert_eq!(rig.shared.stats(), stats(7, 0, 1, 1, 2, 3));
        });
    }

    #[test]
    fn refill_counts_the_spare_dials_under_way() {
        let rig = Rig::new(PoolKind::Lock, 3, 100, 1);
        let pool = rig.core(0);
        run(async {
            rig.net.stall_spares.set(true);
            drop(connect(&pool, &rig, 80).await);
            assert_eq!(rig.dials(), (1, 3));
            assert_eq!(rig.shared.stats().held, 3, "their slots are held");
            // Neither a maintenance pass nor another stream dials more while
            // three spare dials are under way.
            pool.maintain_once(rig.at(1));
            drop(connect(&pool, &rig, 80).await);
            assert_eq!(rig.dials(), (2, 3));
            rig.net.finish_spare_dials();
            settle().await;
            assert_eq!(pool.spares(&key(80)), 3);
            pool.maintain_once(rig.at(2));
            assert_eq!(rig.dials(), (2, 3));
            assert_eq!(rig.shared.stats(), stats(5, 0, 0, 2, 0, 3));
        });
    }

    #[test]
    fn at_the_cap_the_oldest_spare_is_closed_for_a_lease() {
        let rig = Rig::new(PoolKind::Lock, 2, 3, 1);
        let pool = rig.core(0);
        run(async {
            let _a = connect(&pool, &rig, 80).await;
            settle().await;
            assert_eq!(rig.dials(), (1, 2), "spares 2 and 3 fill the cap");
            assert_eq!(rig.shared.stats().held, 3);
            // Another target at the cap: the oldest spare (2) makes room.
            let b = connect(&pool, &rig, 81).await;
            assert_eq!(b.stream, 4);
            settle().await;
            assert_eq!(rig.dials(), (2, 2), "no room to refill port 81");
            assert_eq!(pool.spares(&key(80)), 1);
            assert_eq!(rig.shared.stats(), stats(4, 2, 0, 2, 1, 3));
            drop(b);
            let c = connect(&pool, &rig, 80).await;
            assert_eq!(c.stream, 3, "spare 3 was kept, spare 2 closed");
        });
    }

    #[test]
    fn at_the_cap_without_spares_leases_and_udp_holds_are_refused() {
        let rig = Rig::new(PoolKind::None, 3, 2, 1);
        let pool = rig.core(0);
        run(async {
            let udp = pool.hold_udp().expect("first slot");
            let _a = connect(&pool, &rig, 80).await;
            let refused = pool
                .connect(&rig.resolver, &target(81), "test", LIMIT)
                .await;
            let error = refused.err().expect("at the cap");
            assert!(matches!(error, DialError::LimitReached), "{error}");
            assert_eq!(error.limit(), Some(Limit::OutboundConnections));
            assert!(pool.hold_udp().is_err());
            assert_eq!(rig.dials(), (1, 0), "none dials no spare");
            drop(udp);
            let _b = connect(&pool, &rig, 81).await;
            assert_eq!(rig.dials(), (2, 0));
            assert_eq!(rig.shared.stats(), stats(2, 2, 0, 2, 0, 2));
        });
    }

    #[test]
    fn failed_dials_give_their_slot_back() {
        let rig = Rig::new(PoolKind::LockFree, 2, 100, 1);
        let pool = rig.core(0);
        run(async {
            rig.net.fail_streams_with.set(Some(libc::EMFILE));
            let error = pool
                .connect(&rig.resolver, &target(80), "test", LIMIT)
                .await
                .err()
                .expect("EMFILE");
            assert_eq!(error.limit(), Some(Limit::Descriptors), "{error}");
            assert_eq!(rig.shared.stats(), PoolStats::default());
            rig.net.fail_streams_with.set(None);
            rig.net.fail_spares_with.set(Some(libc::ECONNREFUSED));
            let _a = connect(&pool, &rig, 80).await;
            assert_eq!(rig.dials(), (2, 2));
            assert_eq!(pool.spares(&key(80)), 0);
            assert_eq!(rig.shared.stats(), stats(1, 1, 0, 1, 0, 1));
        });
    }

    #[test]
    fn spares_closed_by_the_target_are_discarded() {
        let rig = Rig::new(PoolKind::Lock, 2, 100, 1);
        let pool = rig.core(0);
        run(async {
            drop(connect(&pool, &rig, 80).await);
            settle().await;
            rig.net.closed.borrow_mut().extend([2, 3]);
            let fresh = connect(&pool, &rig, 80).await;
            assert_eq!(fresh.stream, 4, "both spares dead: dialed");
            assert_eq!(rig.dials(), (2, 4), "and replaced");
            assert_eq!(rig.shared.stats(), stats(6, 1, 0, 2, 2, 3));
        });
    }

    #[test]
    fn every_lease_asks_for_the_send_buffer() {
        let rig = Rig::new(PoolKind::Lock, 1, 100, 1);
        let pool = rig.core(0);
        run(async {
            let _dialed = connect(&pool, &rig, 80).await;
            settle().await;
            let _reused = connect(&pool, &rig, 80).await;
            let asked = rig.net.send_buffers.borrow().clone();
            assert_eq!(asked, vec![(1, 4096), (2, 4096)], "not the spare 3 waiting");
        });
    }

    #[test]
    fn counters_add_up_over_leases_spares_and_udp_holds() {
        let rig = Rig::new(PoolKind::LockFree, 2, 100, 1);
        let pool = rig.core(0);
        run(async {
            let a = connect(&pool, &rig, 80).await;
            settle().await;
            let b = connect(&pool, &rig, 80).await;
            let c = connect(&pool, &rig, 81).await;
            let udp = pool.hold_udp().unwrap();
            settle().await;
            // Dialed: a, c and 2 + 1 + 2 spares; reused: b; held: 3 leases, 4
            // spares, 1 UDP socket.
            assert_eq!(rig.dials(), (2, 5));
            assert_eq!(rig.shared.stats(), stats(7, 3, 1, 2, 0, 8));
            drop((a, b, c, udp));
            assert_eq!(rig.shared.stats(), stats(7, 0, 1, 2, 0, 4));
            assert_eq!(
                rig.shared.status(),
                BTreeMap::from([(key(80), 2), (key(81), 2)])
            );
        });
    }

    #[test]
    fn highperf_spills_to_the_tier_and_another_core_borrows_from_it() {
        // Two cores, min_idle 2: each core keeps one spare per target locally.
        let rig = Rig::new(PoolKind::HighPerf, 2, 8, 2);
        let (core0, core1) = (rig.core(0), rig.core(1));
        run(async {
            drop(connect(&core0, &rig, 80).await);
            assert_eq!(rig.dials(), (1, 2));
            // Spare 2 stayed local to core 0; its local share full, 3 spilled.
            assert_eq!((core0.spares(&key(80)), core1.spares(&key(80))), (2, 1));
            assert_eq!(rig.shared.status(), BTreeMap::from([(key(80), 1)]));
            let borrowed = connect(&core1, &rig, 80).await;
            assert_eq!(borrowed.stream, 3, "core 1 had none: it borrowed");
            // Core 1 refills to min_idle: spare 4 local, spare 5 spilled.
            assert_eq!(rig.dials(), (1, 4));
            assert_eq!((core0.spares(&key(80)), core1.spares(&key(80))), (2, 2));
            core0.maintain_once(rig.at(1));
            core1.maintain_once(rig.at(1));
            // Published by each core: one local spare each; plus one in the tier.
            assert_eq!(rig.shared.status(), BTreeMap::from([(key(80), 3)]));
            assert_eq!(rig.shared.stats(), stats(5, 1, 1, 1, 0, 4));
        });
    }

    #[test]
    fn highperf_caps_each_core_at_its_share() {
        // A cap of 2 over two cores: one connection each, no spares to evict.
        let rig = Rig::new(PoolKind::HighPerf, 0, 2, 2);
        let (core0, core1) = (rig.core(0), rig.core(1));
        run(async {
            let _a = connect(&core0, &rig, 80).await;
            let refused = core0
                .connect(&rig.resolver, &target(80), "test", LIMIT)
                .await;
            assert!(matches!(refused, Err(DialError::LimitReached)));
            let _b = connect(&core1, &rig, 80).await;
            assert_eq!(rig.shared.stats(), stats(2, 2, 0, 2, 0, 2));
        });
    }

    #[test]
    fn pool_kinds_parse_from_their_flag_values() {
        for (text, kind) in [
            ("none", PoolKind::None),
            ("direct", PoolKind::None),
            ("lock", PoolKind::Lock),
            ("lockfree", PoolKind::LockFree),
            ("highperf", PoolKind::HighPerf),
        ] {
            assert_eq!(text.parse::<PoolKind>(), Ok(kind));
        }
        assert!("fast".parse::<PoolKind>().is_err());
    }
}
