//! What every pool kind implements, and the pieces the kinds share.
//!
//! A kind is two halves: [`Kind`], the process-wide state (built once, shared by
//! every core, summed for the reports), and [`Shard`], one core's handle on it:
//! its spares (take, put, evict, expire), its counters and the cap on what it may
//! hold. The pool front ([`super::CorePool`]) only ever talks to a `dyn Shard`,
//! so it never asks which kind it runs.
//!
//! Both are generic over the connection a spare holds, so the kinds can be
//! tested and benchmarked without sockets.

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicI64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Instant;

/// A connection dialed ahead of need that has never carried a byte, and when it
/// was dialed.
#[derive(Debug)]
pub struct Spare<S> {
    /// The connection (or, in tests and benchmarks, a stand-in).
    pub connection: S,
    /// When it was dialed.
    pub created: Instant,
}

impl<S> Spare<S> {
    /// A spare dialed at `created`.
    pub fn new(connection: S, created: Instant) -> Spare<S> {
        Spare {
            connection,
            created,
        }
    }
}

/// A pool kind as the process holds it: what every core shares, the shards it
/// hands out, and the totals for `[Pool Stats]` and `[Pool Status]`.
pub trait Kind<S>: Send + Sync {
    /// Core `index`'s handle (`index` < the cores the kind was built for).
    fn shard(self: Arc<Self>, index: usize) -> Box<dyn Shard<S>>;
    /// Counters summed over every core.
    fn stats(&self) -> PoolStats;
    /// Adds the spares held per target into `out`.
    fn tally(&self, out: &mut BTreeMap<SocketAddr, usize>);
}

/// One core's handle on a pool kind: storing spares, counting, and the cap.
///
/// Stores are FIFO per target: the oldest spare leaves first, so spares rotate
/// and none goes stale at the bottom of a stack.
pub trait Shard<S> {
    /// Whether this kind keeps spares at all (`none` does not).
    fn keeps_spares(&self) -> bool {
        true
    }
    /// Takes the oldest spare for `target`.
    fn take(&self, target: &SocketAddr) -> Option<Spare<S>>;
    /// Stores a spare for `target`.
    fn put(&self, target: SocketAddr, spare: Spare<S>);
    /// Takes a spare of any target, to close it and make room at the cap.
    fn evict(&self) -> Option<Spare<S>>;
    /// Removes and returns every spare dialed before `cutoff`.
    fn expire(&self, cutoff: Instant) -> Vec<Spare<S>>;
    /// Spares this core can take for `target`.
    fn spares(&self, target: &SocketAddr) -> usize;
    /// Adds `n` (which may be negative) to the counter `field`.
    fn add(&self, field: Field, n: i64);
    /// Takes one connection slot if this core holds fewer than its cap.
    fn try_hold(&self) -> bool;
    /// Called at the end of each maintenance pass with the targets this core still
    /// wants; `highperf` moves the others' spares to its shared tier.
    fn after_maintenance(&self, _wanted: &dyn Fn(&SocketAddr) -> bool) {}
}

/// Kinds whose state is all process-wide hand each core the same `Arc`.
impl<S, T: Shard<S> + ?Sized> Shard<S> for Arc<T> {
    fn keeps_spares(&self) -> bool {
        (**self).keeps_spares()
    }
    fn take(&self, target: &SocketAddr) -> Option<Spare<S>> {
        (**self).take(target)
    }
    fn put(&self, target: SocketAddr, spare: Spare<S>) {
        (**self).put(target, spare)
    }
    fn evict(&self) -> Option<Spare<S>> {
        (**self).evict()
    }
    fn expire(&self, cutoff: Instant) -> Vec<Spare<S>> {
        (**self).expire(cutoff)
    }
    fn spares(&self, target: &SocketAddr) -> usize {
        (**self).spares(target)
    }
    fn add(&self, field: Field, n: i64) {
        (**self).add(field, n)
    }
    fn try_hold(&self) -> bool {
        (**self).try_hold()
    }
    fn after_maintenance(&self, wanted: &dyn Fn(&SocketAddr) -> bool) {
        (**self).after_maintenance(wanted)
    }
}

/// Moves the spares at the front of `queue` dialed before `cutoff` into `out`.
pub(crate) fn split_expired<S>(
    queue: &mut VecDeque<Spare<S>>,
    cutoff: Instant,
    out: &mut Vec<Spare<S>>,
) {
    while queue.front().is_some_and(|s| s.created < cutoff) {
        out.extend(queue.pop_front());
    }
}

/// One counter of [`PoolStats`], plus the internal `Held` (spares + in use).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(usize)]
pub enum Field {
    /// Outbound connections opened since start.
    Total,
    /// Connections carrying a stream now.
    Active,
    /// Streams served by a spare.
    Reused,
    /// Streams that dialed.
    New,
    /// Spares closed: idle, dead or evicted.
    Cleaned,
    /// Connections held open: spares plus active (what the cap limits).
    Held,
}

/// How many [`Field`]s there are.
pub const FIELDS: usize = 6;

/// The raw values of every [`Field`], indexed by `field as usize`.
pub type CounterValues = [i64; FIELDS];

/// The pool's counters at one moment.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PoolStats {
    /// Outbound connections opened since start.
    pub total: u64,
    /// Connections carrying a stream now.
    pub active: u64,
    /// Streams served by a spare.
    pub reused: u64,
    /// Streams that dialed.
    pub new: u64,
    /// Spares closed: idle, dead or evicted.
    pub cleaned: u64,
    /// Spares plus active connections.
    pub held: u64,
}

impl PoolStats {
    /// The sum of `all` (one set of values per core for `highperf`).
    pub fn sum(all: impl IntoIterator<Item = CounterValues>) -> PoolStats {
        let mut total = [0i64; FIELDS];
        for values in all {
            for (sum, value) in total.iter_mut().zip(values) {
                *sum += value;
            }
        }
        let get = |field: Field| total[field as usize].max(0) as u64;
        PoolStats {
            total: get(Field::Total),
            active: get(Field::Active),
            reused: get(Field::Reused),
            new: get(Field::New),
            cleaned: get(Field::Cleaned),
            held: get(Field::Held),
        }
    }
}

/// Where a process-wide kind keeps its spares, for every core at once.
pub trait SpareStore<S> {
    /// Takes the oldest spare for `target`.
    fn take(&self, target: &SocketAddr) -> Option<Spare<S>>;
    /// Adds a spare for `target`.
    fn put(&self, target: SocketAddr, spare: Spare<S>);
    /// Takes one spare of any target.
    fn take_any(&self) -> Option<Spare<S>>;
    /// Removes and returns every spare dialed before `cutoff`.
    fn expire(&self, cutoff: Instant) -> Vec<Spare<S>>;
    /// Spares held for `target`.
    fn count(&self, target: &SocketAddr) -> usize;
    /// Adds the spares per target to `out`.
    fn tally(&self, out: &mut BTreeMap<SocketAddr, usize>);
}

/// Counters that every core updates at once.
pub trait SharedCounters {
    /// Adds `n` to `field`.
    fn add(&self, field: Field, n: i64);
    /// Takes one connection slot if fewer than `cap` are held.
    fn try_hold(&self, cap: usize) -> bool;
    /// The values now.
    fn values(&self) -> CounterValues;
}

/// A kind with one store and one set of counters for the whole process (`lock`
/// and `lockfree`, which differ only in those two): every core's shard is the
/// pool itself.
pub struct ProcessWidePool<Store, Counters> {
    store: Store,
    counters: Counters,
    max_outbound: usize,
}

impl<Store: Default, Counters: Default> ProcessWidePool<Store, Counters> {
    /// A pool that holds at most `max_outbound` connections.
    pub fn new(max_outbound: usize) -> Self {
        ProcessWidePool {
            store: Store::default(),
            counters: Counters::default(),
            max_outbound,
        }
    }
}

impl<S, Store, Counters> Kind<S> for ProcessWidePool<Store, Counters>
where
    S: 'static,
    Store: SpareStore<S> + Send + Sync + 'static,
    Counters: SharedCounters + Send + Sync + 'static,
{
    fn shard(self: Arc<Self>, _index: usize) -> Box<dyn Shard<S>> {
        Box::new(self)
    }

    fn stats(&self) -> PoolStats {
        PoolStats::sum([self.counters.values()])
    }

    fn tally(&self, out: &mut BTreeMap<SocketAddr, usize>) {
        self.store.tally(out);
    }
}

impl<S, Store: SpareStore<S>, Counters: SharedCounters> Shard<S>
    for ProcessWidePool<Store, Counters>
{
    fn take(&self, target: &SocketAddr) -> Option<Spare<S>> {
        self.store.take(target)
    }
    fn put(&self, target: SocketAddr, spare: Spare<S>) {
        self.store.put(target, spare);
    }
    fn evict(&self) -> Option<Spare<S>> {
        self.store.take_any()
    }
    fn expire(&self, cutoff: Instant) -> Vec<Spare<S>> {
        self.store.expire(cutoff)
    }
    fn spares(&self, target: &SocketAddr) -> usize {
        self.store.count(target)
    }
    fn add(&self, field: Field, n: i64) {
        self.counters.add(field, n);
    }
    fn try_hold(&self) -> bool {
        self.counters.try_hold(self.max_outbound)
    }
}

/// Relaxed atomic counters that any core may update (`none` and `lockfree`).
#[derive(Default)]
#[repr(align(128))]
pub struct AtomicCounters([AtomicI64; FIELDS]);

impl SharedCounters for AtomicCounters {
    fn add(&self, field: Field, n: i64) {
        self.0[field as usize].fetch_add(n, Relaxed);
    }

    fn try_hold(&self, cap: usize) -> bool {
        self.0[Field::Held as usize]
            .fetch_update(Relaxed, Relaxed, |held| {
                (held < cap as i64).then_some(held + 1)
            })
            .is_ok()
    }

    fn values(&self) -> CounterValues {
        std::array::from_fn(|i| self.0[i].load(Relaxed))
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::time::Duration;

    pub(crate) fn target(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    /// Puts, takes, evicts and expires stand-in spares on `shard`, in the order
    /// every kind that keeps spares must follow.
    pub(crate) fn exercise_store(shard: &dyn Shard<u32>) {
        let now = Instant::now();
        assert!(shard.take(&target(1)).is_none());
        shard.put(target(1), Spare::new(10, now));
        shard.put(target(1), Spare::new(11, now));
        shard.put(target(2), Spare::new(20, now));
        assert_eq!(shard.spares(&target(1)), 2);
        assert_eq!(
            shard.take(&target(1)).unwrap().connection,
            10,
            "oldest first"
        );
        assert_eq!(shard.take(&target(2)).unwrap().connection, 20);
        assert!(shard.take(&target(2)).is_none());
        assert_eq!(shard.evict().unwrap().connection, 11);
        assert!(shard.evict().is_none());
        shard.put(target(3), Spare::new(1, now - Duration::from_secs(100)));
        shard.put(target(3), Spare::new(2, now));
        let expired = shard.expire(now - Duration::from_secs(50));
        let expired: Vec<u32> = expired.into_iter().map(|s| s.connection).collect();
        assert_eq!(expired, vec![1]);
        assert_eq!(shard.spares(&target(3)), 1);
    }

    /// Checks the cap and the counters of `shard`, built with a cap of 2 on a
    /// fresh `kind`.
    pub(crate) fn exercise_counters(kind: &dyn Kind<u32>, shard: &dyn Shard<u32>) {
        assert!(shard.try_hold());
        assert!(shard.try_hold());
        assert!(!shard.try_hold(), "cap reached");
        shard.add(Field::Held, -1);
        assert!(shard.try_hold());
        shard.add(Field::Reused, 3);
        shard.add(Field::New, 2);
        let stats = kind.stats();
        assert_eq!((stats.held, stats.reused, stats.new), (2, 3, 2));
    }

    #[test]
    fn stats_sum_every_core_and_clamp_at_zero() {
        let mut a = [0; FIELDS];
        let mut b = [0; FIELDS];
        a[Field::Total as usize] = 2;
        b[Field::Total as usize] = 3;
        a[Field::Active as usize] = -1;
        let stats = PoolStats::sum([a, b]);
        assert_eq!((stats.total, stats.active), (5, 0));
    }

    #[test]
    fn atomic_counters_hold_up_to_the_cap() {
        let counters = AtomicCounters::default();
        assert!(counters.try_hold(1));
        assert!(!counters.try_hold(1));
        counters.add(Field::Cleaned, 4);
        assert_eq!(counters.values()[Field::Cleaned as usize], 4);
        assert_eq!(counters.values()[Field::Held as usize], 1);
    }
}
