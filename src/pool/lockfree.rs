//! `lockfree`: one process-wide `DashMap<Target, SegQueue>` of spares and relaxed
//! atomic counters, shared by every core. The same store is `highperf`'s shared
//! spill tier.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Instant;

use crossbeam_queue::SegQueue;
use dashmap::DashMap;

use super::kind::{AtomicCounters, ProcessWidePool, Spare, SpareStore};

/// The `lockfree` kind: its store and counters, the same for every core.
pub type LockFreePool<S> = ProcessWidePool<LockFreeStore<S>, AtomicCounters>;

/// Spares per target in a concurrent map of lock-free FIFO queues.
pub struct LockFreeStore<S> {
    map: DashMap<SocketAddr, SegQueue<Spare<S>>>,
}

impl<S> Default for LockFreeStore<S> {
    fn default() -> Self {
        LockFreeStore {
            map: DashMap::new(),
        }
    }
}

impl<S> SpareStore<S> for LockFreeStore<S> {
    /// Takes the oldest spare for `target`.
    fn take(&self, target: &SocketAddr) -> Option<Spare<S>> {
        self.map.get(target)?.pop()
    }

    /// Adds a spare for `target`.
    fn put(&self, target: SocketAddr, spare: Spare<S>) {
        match self.map.get(&target) {
            Some(queue) => queue.push(spare),
            None => self.map.entry(target).or_default().push(spare),
        }
    }

    /// Takes one spare of any target.
    fn take_any(&self) -> Option<Spare<S>> {
        self.map.iter().find_map(|entry| entry.value().pop())
    }

    /// Removes and returns every spare dialed before `cutoff`.
    fn expire(&self, cutoff: Instant) -> Vec<Spare<S>> {
        let mut expired = Vec::new();
        for entry in self.map.iter() {
            // A SegQueue is FIFO: pop until the first young spare, which goes back.
            // (It returns at the tail; with one maintenance pass at a time this only
            // reorders spares of equal age class.)
            let queue = entry.value();
            for _ in 0..queue.len() {
                match queue.pop() {
                    Some(spare) if spare.created < cutoff => expired.push(spare),
                    Some(spare) => queue.push(spare),
                    None => break,
                }
            }
        }
        expired
    }

    /// Spares held for `target`.
    fn count(&self, target: &SocketAddr) -> usize {
        self.map.get(target).map_or(0, |q| q.len())
    }

    /// Adds the spares held per target into `out`.
    fn tally(&self, out: &mut BTreeMap<SocketAddr, usize>) {
        for entry in self.map.iter() {
            *out.entry(*entry.key()).or_default() += entry.value().len();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pool::kind::tests::{exercise_counters, exercise_store, target};
    use crate::pool::kind::Kind;
    use std::sync::Arc;

    #[test]
    fn lockfree_stores_spares_fifo() {
        let kind = Arc::new(LockFreePool::new(10));
        let shard = kind.clone().shard(0);
        exercise_store(&*shard);
        let mut tally = BTreeMap::new();
        kind.tally(&mut tally);
        assert_eq!(tally.get(&target(3)), Some(&1));
    }

    #[test]
    fn lockfree_shards_share_one_store() {
        let kind = Arc::new(LockFreePool::<u32>::new(10));
        let (a, b) = (kind.clone().shard(0), kind.clone().shard(1));
        a.put(target(1), Spare::new(7, Instant::now()));
        assert_eq!(b.take(&target(1)).map(|s| s.connection), Some(7));
    }

    #[test]
    fn lockfree_counts_and_caps() {
        let kind = Arc::new(LockFreePool::new(2));
        let shard = kind.clone().shard(0);
        exercise_counters(&*kind, &*shard);
    }
}
