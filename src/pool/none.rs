//! `none` (also `direct`): no spares, every stream dials (the reference server's
//! behaviour). Only the counters and the cap remain, in relaxed atomics.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use super::kind::{AtomicCounters, Field, Kind, PoolStats, Shard, SharedCounters, Spare};

/// The `none` kind: one set of counters for the process, no store.
pub struct NoPool {
    counters: AtomicCounters,
    max_outbound: usize,
}

impl NoPool {
    /// A pool that holds at most `max_outbound` connections.
    pub fn new(max_outbound: usize) -> NoPool {
        NoPool {
            counters: AtomicCounters::default(),
            max_outbound,
        }
    }
}

impl<S> Kind<S> for NoPool {
    fn shard(self: Arc<Self>, _index: usize) -> Box<dyn Shard<S>> {
        Box::new(self)
    }

    fn stats(&self) -> PoolStats {
        PoolStats::sum([self.counters.values()])
    }

    fn tally(&self, _out: &mut BTreeMap<SocketAddr, usize>) {}
}

impl<S> Shard<S> for NoPool {
    fn keeps_spares(&self) -> bool {
        false
    }
    fn take(&self, _: &SocketAddr) -> Option<Spare<S>> {
        None
    }
    fn put(&self, _: SocketAddr, _: Spare<S>) {}
    fn evict(&self) -> Option<Spare<S>> {
        None
    }
    fn expire(&self, _: Instant) -> Vec<Spare<S>> {
        Vec::new()
    }
    fn spares(&self, _: &SocketAddr) -> usize {
        0
    }
    fn add(&self, field: Field, n: i64) {
        self.counters.add(field, n);
    }
    fn try_hold(&self) -> bool {
        self.counters.try_hold(self.max_outbound)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pool::kind::tests::{exercise_counters, target};

    #[test]
    fn none_holds_no_spare() {
        let kind = Arc::new(NoPool::new(2));
        let shard: Box<dyn Shard<u32>> = kind.shard(0);
        assert!(!shard.keeps_spares());
        shard.put(target(1), Spare::new(1, Instant::now()));
        assert!(shard.take(&target(1)).is_none());
        assert_eq!(shard.spares(&target(1)), 0);
        assert!(shard.evict().is_none());
    }

    #[test]
    fn none_counts_and_caps() {
        let kind = Arc::new(NoPool::new(2));
        let shard: Box<dyn Shard<u32>> = kind.clone().shard(0);
        exercise_counters(&*kind, &*shard);
    }
}
