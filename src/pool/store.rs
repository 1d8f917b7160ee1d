//! Where warm spares wait: one trait, four data structures.
//!
//! A spare is a connection to a target, dialed ahead of need, that has never
//! carried a byte. Stores are FIFO per target (the oldest spare leaves first, so
//! spares rotate and none goes stale at the bottom of a stack). They are generic
//! over the spare's payload so the micro-benchmark can run them without sockets.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Instant;

use crossbeam_queue::SegQueue;
use dashmap::DashMap;
use rustc_hash::FxHashMap;

/// A spare and when it was dialed.
#[derive(Debug)]
pub struct Spare<S> {
    /// The connection (or, in benchmarks, a stand-in).
    pub item: S,
    /// When it was dialed.
    pub created: Instant,
}

impl<S> Spare<S> {
    /// A spare dialed now.
    pub fn new(item: S) -> Spare<S> {
        Spare {
            item,
            created: Instant::now(),
        }
    }
}

/// Storage of spares per target.
pub trait SpareStore<S> {
    /// Takes the oldest spare for `target`.
    fn pop(&self, target: &SocketAddr) -> Option<Spare<S>>;
    /// Adds a spare for `target`.
    fn push(&self, target: SocketAddr, spare: Spare<S>);
    /// Takes one spare of any target (to make room at the connection cap).
    fn pop_any(&self) -> Option<Spare<S>>;
    /// Removes and returns every spare dialed before `cutoff`.
    fn drain_older_than(&self, cutoff: Instant) -> Vec<Spare<S>>;
    /// Spares held for `target`.
    fn count(&self, target: &SocketAddr) -> usize;
    /// Adds this store's spares per target into `out`.
    fn tally(&self, out: &mut BTreeMap<SocketAddr, usize>);
}

fn split_expired<S>(queue: &mut VecDeque<Spare<S>>, cutoff: Instant, out: &mut Vec<Spare<S>>) {
    while queue.front().is_some_and(|s| s.created < cutoff) {
        out.extend(queue.pop_front());
    }
}

/// No spares at all: every stream dials (the reference server's behaviour).
pub struct NoStore;

impl<S> SpareStore<S> for NoStore {
    fn pop(&self, _: &SocketAddr) -> Option<Spare<S>> {
        None
    }
    fn push(&self, _: SocketAddr, _: Spare<S>) {}
    fn pop_any(&self) -> Option<Spare<S>> {
        None
    }
    fn drain_older_than(&self, _: Instant) -> Vec<Spare<S>> {
        Vec::new()
    }
    fn count(&self, _: &SocketAddr) -> usize {
        0
    }
    fn tally(&self, _: &mut BTreeMap<SocketAddr, usize>) {}
}

/// `lock`: one process-wide `RwLock<HashMap<Target, Mutex<VecDeque>>>`.
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
    fn pop(&self, target: &SocketAddr) -> Option<Spare<S>> {
        let map = self.map.read().expect("pool lock poisoned");
        let spare = map
            .get(target)?
            .lock()
            .expect("pool lock poisoned")
            .pop_front();
        spare
    }

    fn push(&self, target: SocketAddr, spare: Spare<S>) {
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

    fn pop_any(&self) -> Option<Spare<S>> {
        let map = self.map.read().expect("pool lock poisoned");
        map.values()
            .find_map(|queue| queue.lock().expect("pool lock poisoned").pop_front())
    }

    fn drain_older_than(&self, cutoff: Instant) -> Vec<Spare<S>> {
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

/// `lockfree`: one process-wide `DashMap<Target, SegQueue>`.
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
    fn pop(&self, target: &SocketAddr) -> Option<Spare<S>> {
        self.map.get(target)?.pop()
    }

    fn push(&self, target: SocketAddr, spare: Spare<S>) {
        match self.map.get(&target) {
            Some(queue) => queue.push(spare),
            None => self.map.entry(target).or_default().push(spare),
        }
    }

    fn pop_any(&self) -> Option<Spare<S>> {
        self.map.iter().find_map(|entry| entry.value().pop())
    }

    fn drain_older_than(&self, cutoff: Instant) -> Vec<Spare<S>> {
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

    fn count(&self, target: &SocketAddr) -> usize {
        self.map.get(target).map_or(0, |q| q.len())
    }

    fn tally(&self, out: &mut BTreeMap<SocketAddr, usize>) {
        for entry in self.map.iter() {
            *out.entry(*entry.key()).or_default() += entry.value().len();
        }
    }
}

/// The global tier of `highperf`: spares spilled by one core for others to borrow.
pub type SpillTier<S> = Arc<LockFreeStore<S>>;

/// `highperf`: a core-local `HashMap<Target, VecDeque>` (no lock, no atomic) in
/// front of the shared [`SpillTier`]. Pushes beyond `local_share` spares for a
/// target spill to the tier; a local miss borrows from it.
pub struct HighPerfStore<S> {
    /// FxHash: the keys are socket addresses chosen by our own clients' targets, and
    /// this map never leaves the core, so a fast non-keyed hash is fine here.
    local: RefCell<FxHashMap<SocketAddr, VecDeque<Spare<S>>>>,
    spill: SpillTier<S>,
    local_share: usize,
}

impl<S> HighPerfStore<S> {
    /// A core's store over the shared tier.
    pub fn new(spill: SpillTier<S>, local_share: usize) -> Self {
        HighPerfStore {
            local: RefCell::default(),
            spill,
            local_share: local_share.max(1),
        }
    }

    /// Moves every local spare of targets not in `keep` to the shared tier, so
    /// cores that still want them can borrow them. Returns how many moved.
    pub fn spill_unwanted(&self, keep: impl Fn(&SocketAddr) -> bool) -> usize {
        let mut moved = 0;
        self.local.borrow_mut().retain(|target, queue| {
            if keep(target) {
                return !queue.is_empty();
            }
            for spare in queue.drain(..) {
                self.spill.push(*target, spare);
                moved += 1;
            }
            false
        });
        moved
    }

    /// Spares held locally for `target` (without the shared tier).
    pub fn local_count(&self, target: &SocketAddr) -> usize {
        self.local.borrow().get(target).map_or(0, VecDeque::len)
    }
}

impl<S> SpareStore<S> for HighPerfStore<S> {
    fn pop(&self, target: &SocketAddr) -> Option<Spare<S>> {
        let local = self
            .local
            .borrow_mut()
            .get_mut(target)
            .and_then(VecDeque::pop_front);
        local.or_else(|| self.spill.pop(target))
    }

    fn push(&self, target: SocketAddr, spare: Spare<S>) {
        let mut local = self.local.borrow_mut();
        let queue = local.entry(target).or_default();
        if queue.len() < self.local_share {
            queue.push_back(spare);
        } else {
            self.spill.push(target, spare);
        }
    }

    fn pop_any(&self) -> Option<Spare<S>> {
        let local = self
            .local
            .borrow_mut()
            .values_mut()
            .find_map(VecDeque::pop_front);
        local.or_else(|| self.spill.pop_any())
    }

    fn drain_older_than(&self, cutoff: Instant) -> Vec<Spare<S>> {
        let mut expired = Vec::new();
        let mut local = self.local.borrow_mut();
        for queue in local.values_mut() {
            split_expired(queue, cutoff, &mut expired);
        }
        local.retain(|_, queue| !queue.is_empty());
        expired.extend(self.spill.drain_older_than(cutoff));
        expired
    }

    fn count(&self, target: &SocketAddr) -> usize {
        self.local_count(target) + self.spill.count(target)
    }

    fn tally(&self, out: &mut BTreeMap<SocketAddr, usize>) {
        for (target, queue) in self.local.borrow().iter() {
            *out.entry(*target).or_default() += queue.len();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn target(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    fn exercise(store: &dyn SpareStore<u32>) {
        assert!(store.pop(&target(1)).is_none());
        store.push(target(1), Spare::new(10));
        store.push(target(1), Spare::new(11));
        store.push(target(2), Spare::new(20));
        assert_eq!(store.count(&target(1)), 2);
        assert_eq!(store.pop(&target(1)).unwrap().item, 10, "oldest first");
        assert_eq!(store.pop(&target(2)).unwrap().item, 20);
        assert!(store.pop(&target(2)).is_none());
        let mut tally = BTreeMap::new();
        store.tally(&mut tally);
        assert_eq!(tally.get(&target(1)), Some(&1));
        assert_eq!(store.pop_any().unwrap().item, 11);
        assert!(store.pop_any().is_none());
        let old = Spare {
            item: 1,
            created: Instant::now() - Duration::from_secs(100),
        };
        store.push(target(3), old);
        store.push(target(3), Spare::new(2));
        let expired = store.drain_older_than(Instant::now() - Duration::from_secs(50));
        assert_eq!(expired.iter().map(|s| s.item).collect::<Vec<_>>(), vec![1]);
        assert_eq!(store.count(&target(3)), 1);
    }

    #[test]
    fn lock_store() {
        exercise(&LockStore::default());
    }

    #[test]
    fn lockfree_store() {
        exercise(&LockFreeStore::default());
    }

    #[test]
    fn highperf_store() {
        exercise(&HighPerfStore::new(Arc::new(LockFreeStore::default()), 2));
    }

    #[test]
    fn highperf_spills_beyond_share_and_borrows() {
        let tier: SpillTier<u32> = Arc::new(LockFreeStore::default());
        let a = HighPerfStore::new(tier.clone(), 1);
        let b = HighPerfStore::new(tier.clone(), 1);
        a.push(target(1), Spare::new(1));
        a.push(target(1), Spare::new(2));
        assert_eq!(a.local_count(&target(1)), 1);
        assert_eq!(tier.count(&target(1)), 1, "surplus spilled");
        assert_eq!(
            b.pop(&target(1)).unwrap().item,
            2,
            "another core borrows it"
        );
        assert_eq!(a.spill_unwanted(|_| false), 1);
        assert_eq!(b.pop(&target(1)).unwrap().item, 1);
        assert!(b.pop(&target(1)).is_none());
    }

    #[test]
    fn no_store_holds_nothing() {
        let store = NoStore;
        SpareStore::<u32>::push(&store, target(1), Spare::new(1));
        assert!(SpareStore::<u32>::pop(&store, &target(1)).is_none());
    }
}
