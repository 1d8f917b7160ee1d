//! `highperf`: each core keeps its share of a target's spares in a core-local map
//! (no lock, no atomic read-modify-write) and its own counters and share of the
//! cap; what it dials beyond its share, and the spares of targets it no longer
//! wants, go to a shared lock-free spill tier that the other cores borrow from.

use std::cell::RefCell;
use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicI64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use rustc_hash::FxHashMap;

use super::kind::{
    split_expired, CounterValues, Field, Kind, PoolStats, Shard, Spare, SpareStore, FIELDS,
};
use super::lockfree::LockFreeStore;

/// The process-wide part of `highperf`: the spill tier, each core's counters, and
/// each core's local spares per target as its maintenance last published them.
pub struct HighPerfPool<S> {
    tier: LockFreeStore<S>,
    per_core: Vec<ShardCounters>,
    published: Vec<Mutex<BTreeMap<SocketAddr, usize>>>,
    /// Spares per target a core keeps locally before spilling.
    local_share: usize,
    /// Connections one core may hold: its share of the server's cap.
    core_cap: usize,
}

impl<S> HighPerfPool<S> {
    /// A pool over `cores` cores keeping `min_idle` spares per target and holding
    /// at most `max_outbound` connections, each core its even share of both.
    pub fn new(cores: usize, min_idle: usize, max_outbound: usize) -> HighPerfPool<S> {
        let cores = cores.max(1);
        HighPerfPool {
            tier: LockFreeStore::default(),
            per_core: (0..cores).map(|_| ShardCounters::default()).collect(),
            published: (0..cores).map(|_| Mutex::default()).collect(),
            local_share: min_idle.div_ceil(cores).max(1),
            core_cap: max_outbound.div_ceil(cores),
        }
    }

    /// Spares waiting in the shared tier for `target`.
    pub fn spilled(&self, target: &SocketAddr) -> usize {
        self.tier.count(target)
    }
}

impl<S: Send + 'static> Kind<S> for HighPerfPool<S> {
    fn shard(self: Arc<Self>, index: usize) -> Box<dyn Shard<S>> {
        Box::new(HighPerfShard {
            pool: self,
            index,
            local: RefCell::default(),
        })
    }

    fn stats(&self) -> PoolStats {
        PoolStats::sum(self.per_core.iter().map(ShardCounters::values))
    }

    fn tally(&self, out: &mut BTreeMap<SocketAddr, usize>) {
        self.tier.tally(out);
        for core in &self.published {
            for (target, n) in core.lock().expect("status poisoned").iter() {
                *out.entry(*target).or_default() += n;
            }
        }
    }
}

/// One core's part of `highperf`: its local spares in front of the shared tier.
pub struct HighPerfShard<S> {
    pool: Arc<HighPerfPool<S>>,
    index: usize,
    /// FxHash: the keys are socket addresses chosen by our own clients' targets, and
    /// this map never leaves the core, so a fast non-keyed hash is fine here.
    local: RefCell<FxHashMap<SocketAddr, VecDeque<Spare<S>>>>,
}

impl<S> HighPerfShard<S> {
    fn counters(&self) -> &ShardCounters {
        &self.pool.per_core[self.index]
    }

    /// Spares held locally for `target` (without the shared tier).
    pub fn local_count(&self, target: &SocketAddr) -> usize {
        self.local.borrow().get(target).map_or(0, VecDeque::len)
    }

    /// Moves every local spare of targets not `wanted` to the shared tier, so
    /// cores that still want them can borrow them. Returns how many moved.
    pub fn spill_unwanted(&self, wanted: &dyn Fn(&SocketAddr) -> bool) -> usize {
        let mut moved = 0;
        self.local.borrow_mut().retain(|target, queue| {
            if wanted(target) {
                return !queue.is_empty();
            }
            for spare in queue.drain(..) {
                self.pool.tier.put(*target, spare);
                moved += 1;
            }
            false
        });
        moved
    }
}

impl<S> Shard<S> for HighPerfShard<S> {
    fn take(&self, target: &SocketAddr) -> Option<Spare<S>> {
        let local = self
            .local
            .borrow_mut()
            .get_mut(target)
            .and_then(VecDeque::pop_front);
        local.or_else(|| self.pool.tier.take(target))
    }

    fn put(&self, target: SocketAddr, spare: Spare<S>) {
        let mut local = self.local.borrow_mut();
        let queue = local.entry(target).or_default();
        if queue.len() < self.pool.local_share {
            queue.push_back(spare);
        } else {
            self.pool.tier.put(target, spare);
        }
    }

    fn evict(&self) -> Option<Spare<S>> {
        let local = self
            .local
            .borrow_mut()
            .values_mut()
            .find_map(VecDeque::pop_front);
        local.or_else(|| self.pool.tier.take_any())
    }

    fn expire(&self, cutoff: Instant) -> Vec<Spare<S>> {
        let mut expired = Vec::new();
        let mut local = self.local.borrow_mut();
        for queue in local.values_mut() {
            split_expired(queue, cutoff, &mut expired);
        }
        local.retain(|_, queue| !queue.is_empty());
        expired.extend(self.pool.tier.expire(cutoff));
        expired
    }

    fn spares(&self, target: &SocketAddr) -> usize {
        self.local_count(target) + self.pool.tier.count(target)
    }

    fn add(&self, field: Field, n: i64) {
        self.counters().add(field, n);
    }

    fn try_hold(&self) -> bool {
        self.counters().try_hold(self.pool.core_cap)
    }

    /// Spills the spares of targets this core no longer wants, then publishes
    /// its local spares per target for `[Pool Status]`.
    fn after_maintenance(&self, wanted: &dyn Fn(&SocketAddr) -> bool) {
        self.spill_unwanted(wanted);
        let tally: BTreeMap<SocketAddr, usize> = self
            .local
            .borrow()
            .iter()
            .map(|(target, queue)| (*target, queue.len()))
            .collect();
        *self.pool.published[self.index]
            .lock()
            .expect("status poisoned") = tally;
    }
}

/// The counters of one `highperf` shard, written by its own core only: plain
/// loads and stores, no read-modify-write, read by the reporter with relaxed
/// loads.
#[derive(Default)]
#[repr(align(128))]
pub struct ShardCounters([AtomicI64; FIELDS]);

impl ShardCounters {
    /// Adds `n` to `field` (from the owning core only).
    pub fn add(&self, field: Field, n: i64) {
        let cell = &self.0[field as usize];
        cell.store(cell.load(Relaxed) + n, Relaxed);
    }

    /// Takes one connection slot if fewer than `cap` are held (owning core only).
    pub fn try_hold(&self, cap: usize) -> bool {
        let held = &self.0[Field::Held as usize];
        let now = held.load(Relaxed);
        if now < cap as i64 {
            held.store(now + 1, Relaxed);
            true
        } else {
            false
        }
    }

    /// The values now.
    pub fn values(&self) -> CounterValues {
        std::array::from_fn(|i| self.0[i].load(Relaxed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pool::kind::tests::{exercise_counters, exercise_store, target};

    fn shard(pool: &Arc<HighPerfPool<u32>>, index: usize) -> HighPerfShard<u32> {
        HighPerfShard {
            pool: pool.clone(),
            index,
            local: RefCell::default(),
        }
    }

    #[test]
    fn highperf_stores_spares_fifo() {
        // One core keeping 2 of min_idle 2 locally.
        let pool = Arc::new(HighPerfPool::new(1, 2, 10));
        exercise_store(&shard(&pool, 0));
    }

    #[test]
    fn highperf_spills_to_the_tier_when_full_and_borrows_when_empty() {
        // Two cores, min_idle 2: each keeps one spare per target locally.
        let pool = Arc::new(HighPerfPool::new(2, 2, 10));
        let (a, b) = (shard(&pool, 0), shard(&pool, 1));
        let now = Instant::now();
        a.put(target(1), Spare::new(1, now));
        assert_eq!(
            (a.local_count(&target(1)), pool.spilled(&target(1))),
            (1, 0)
        );
        a.put(target(1), Spare::new(2, now));
        assert_eq!(
            (a.local_count(&target(1)), pool.spilled(&target(1))),
            (1, 1),
            "the local share is full: the second spare spilled"
        );
        assert_eq!(
            a.spares(&target(1)),
            2,
            "a core sees its own and the tier's"
        );
        assert_eq!(b.spares(&target(1)), 1);
        assert_eq!(
            b.take(&target(1)).map(|s| s.connection),
            Some(2),
            "an empty core borrows from the tier"
        );
        assert!(b.take(&target(1)).is_none(), "a's local spare is a's");
        assert_eq!(a.spill_unwanted(&|_| false), 1);
        assert_eq!(b.take(&target(1)).map(|s| s.connection), Some(1));
        assert!(a.take(&target(1)).is_none());
    }

    #[test]
    fn highperf_status_is_the_tier_plus_what_each_core_published() {
        let pool = Arc::new(HighPerfPool::new(2, 2, 10));
        let (a, b) = (shard(&pool, 0), shard(&pool, 1));
        let now = Instant::now();
        for n in 0..3 {
            a.put(target(1), Spare::new(n, now));
        }
        b.put(target(2), Spare::new(9, now));
        let mut tally = BTreeMap::new();
        pool.tally(&mut tally);
        assert_eq!(tally, BTreeMap::from([(target(1), 2)]), "only the tier yet");
        a.after_maintenance(&|_| true);
        b.after_maintenance(&|_| false);
        let mut tally = BTreeMap::new();
        pool.tally(&mut tally);
        assert_eq!(tally, BTreeMap::from([(target(1), 3), (target(2), 1)]));
    }

    #[test]
    fn highperf_counts_and_caps_per_core() {
        // A cap of 4 over two cores: 2 each.
        let pool = Arc::new(HighPerfPool::new(2, 2, 4));
        let (a, b) = (shard(&pool, 0), shard(&pool, 1));
        exercise_counters(&*pool, &a);
        assert!(b.try_hold() && b.try_hold() && !b.try_hold());
        assert_eq!(pool.stats().held, 4, "summed over both cores");
    }
}
