//! `lock`: one process-wide `RwLock<HashMap<Target, Mutex<VecDeque>>>` of spares
//! and one mutex around the counters, shared by every core.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Mutex, RwLock};
use std::time::Instant;

use super::kind::{
    split_expired, CounterValues, Field, ProcessWidePool, SharedCounters, Spare, SpareStore,
};

/// The `lock` kind: its store and counters, the same for every core.
pub type LockPool<S> = ProcessWidePool<LockStore<S>, LockedCounters>;

/// Spares per target behind a read-write lock, each target's queue behind its
/// own mutex.
pub struct LockStore<S> {
    map: RwLock<HashMap<SocketAddr, Mutex<VecDeque<Spare<S>>>>>,
}

impl<S> Default for LockStore<S> {
    fn default() -> Self {
        LockStore {
            map: RwLock::default(),
        }
    }
}

impl<S> SpareStore<S> for LockStore<S> {
    fn take(&self, target: &SocketAddr) -> Option<Spare<S>> {
        let map = self.map.read().expect("pool lock poisoned");
        let spare = map
            .get(target)?
            .lock()
            .expect("pool lock poisoned")
            .pop_front();
        spare
    }

    fn put(&self, target: SocketAddr, spare: Spare<S>) {
        {
            let map = self.map.read().expect("pool lock poisoned");
            if let Some(queue) = map.get(&target) {
                queue.lock().expect("pool lock poisoned").push_back(spare);
                return;
            }
        }
        let mut map = self.map.write().expect("pool lock poisoned");
        map.entry(target)
            .or_default()
            .get_mut()
            .expect("pool lock poisoned")
            .push_back(spare);
    }

    fn take_any(&self) -> Option<Spare<S>> {
        let map = self.map.read().expect("pool lock poisoned");
        map.values()
            .find_map(|queue| queue.lock().expect("pool lock poisoned").pop_front())
    }

    fn expire(&self, cutoff: Instant) -> Vec<Spare<S>> {
        let mut expired = Vec::new();
        let mut map = self.map.write().expect("pool lock poisoned");
        for queue in map.values_mut() {
            split_expired(
                queue.get_mut().expect("pool lock poisoned"),
                cutoff,
                &mut expired,
            );
        }
        map.retain(|_, queue| !queue.get_mut().expect("pool lock poisoned").is_empty());
        expired
    }

    fn count(&self, target: &SocketAddr) -> usize {
        let map = self.map.read().expect("pool lock poisoned");
        map.get(target)
            .map_or(0, |q| q.lock().expect("pool lock poisoned").len())
    }

    fn tally(&self, out: &mut BTreeMap<SocketAddr, usize>) {
        let map = self.map.read().expect("pool lock poisoned");
        for (target, queue) in map.iter() {
            *out.entry(*target).or_default() += queue.lock().expect("pool lock poisoned").len();
        }
    }
}

/// The counters behind one mutex.
#[derive(Default)]
pub struct LockedCounters(Mutex<CounterValues>);

impl SharedCounters for LockedCounters {
    fn add(&self, field: Field, n: i64) {
        self.0.lock().expect("counters poisoned")[field as usize] += n;
    }

    fn try_hold(&self, cap: usize) -> bool {
        let mut values = self.0.lock().expect("counters poisoned");
        let held = &mut values[Field::Held as usize];
        if *held < cap as i64 {
            *held += 1;
            true
        } else {
            false
        }
    }

    fn values(&self) -> CounterValues {
        *self.0.lock().expect("counters poisoned")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pool::kind::tests::{exercise_counters, exercise_store, target};
    use crate::pool::kind::Kind;
    use std::sync::Arc;

    #[test]
    fn lock_stores_spares_fifo() {
        let kind = Arc::new(LockPool::new(10));
        let shard = kind.clone().shard(0);
        exercise_store(&*shard);
        let mut tally = BTreeMap::new();
        kind.tally(&mut tally);
        assert_eq!(tally, BTreeMap::from([(target(3), 1)]));
    }

    #[test]
    fn lock_shards_share_one_store() {
        let kind = Arc::new(LockPool::<u32>::new(10));
        let (a, b) = (kind.clone().shard(0), kind.clone().shard(1));
        a.put(target(1), Spare::new(7, Instant::now()));
        assert_eq!(b.take(&target(1)).map(|s| s.connection), Some(7));
    }

    #[test]
    fn lock_counts_and_caps() {
        let kind = Arc::new(LockPool::new(2));
        let shard = kind.clone().shard(0);
        exercise_counters(&*kind, &*shard);
    }
}
