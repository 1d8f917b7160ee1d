//! The pool's counters and its connection cap, kept the way each kind keeps them:
//! behind a mutex (`lock`), in relaxed atomics (`lockfree`, `none`), or per core,
//! written by that core only and summed when reported (`highperf`).

use std::fmt;
use std::sync::atomic::{AtomicI64, Ordering::Relaxed};
use std::sync::Mutex;

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

const FIELDS: usize = 6;

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
    fn from_values(values: [i64; FIELDS]) -> PoolStats {
        let get = |field: Field| values[field as usize].max(0) as u64;
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

impl fmt::Display for PoolStats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "[Pool Stats] Total: {}, Active: {}, Reused: {}, New: {}, Cleaned: {}",
            self.total, self.active, self.reused, self.new, self.cleaned
        )
    }
}

/// Counters and cap accounting for one pool (or one core of a `highperf` pool).
pub trait Counters: Send + Sync {
    /// Adds `n` (which may be negative) to `field`.
    fn add(&self, field: Field, n: i64);
    /// Takes one connection slot if fewer than `cap` are held.
    fn try_hold(&self, cap: usize) -> bool;
    /// The values now.
    fn values(&self) -> [i64; FIELDS];
}

/// Counters behind one mutex (`lock`).
#[derive(Default)]
pub struct LockedCounters(Mutex<[i64; FIELDS]>);

impl Counters for LockedCounters {
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
    fn values(&self) -> [i64; FIELDS] {
        *self.0.lock().expect("counters poisoned")
    }
}

/// Relaxed atomic counters (`lockfree`, `none`, and each core of `highperf`).
#[derive(Default)]
#[repr(align(128))]
pub struct AtomicCounters([AtomicI64; FIELDS]);

impl Counters for AtomicCounters {
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
    fn values(&self) -> [i64; FIELDS] {
        std::array::from_fn(|i| self.0[i].load(Relaxed))
    }
}

/// Counters written by one core only (`highperf`): plain loads and stores, no
/// read-modify-write, read by the reporter with relaxed loads.
#[derive(Default)]
#[repr(align(128))]
pub struct CoreCounters([AtomicI64; FIELDS]);

impl Counters for CoreCounters {
    fn add(&self, field: Field, n: i64) {
        let cell = &self.0[field as usize];
        cell.store(cell.load(Relaxed) + n, Relaxed);
    }
    fn try_hold(&self, cap: usize) -> bool {
        let held = &self.0[Field::Held as usize];
        let now = held.load(Relaxed);
        if now < cap as i64 {
            held.store(now + 1, Relaxed);
            true
        } else {
            false
        }
    }
    fn values(&self) -> [i64; FIELDS] {
        std::array::from_fn(|i| self.0[i].load(Relaxed))
    }
}

/// Sums counters (one per core for `highperf`) into [`PoolStats`].
pub fn sum<'a>(all: impl IntoIterator<Item = &'a dyn Counters>) -> PoolStats {
    let mut total = [0i64; FIELDS];
    for counters in all {
        for (sum, value) in total.iter_mut().zip(counters.values()) {
            *sum += value;
        }
    }
    PoolStats::from_values(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exercise(counters: &dyn Counters) {
        assert!(counters.try_hold(2));
        assert!(counters.try_hold(2));
        assert!(!counters.try_hold(2), "cap reached");
        counters.add(Field::Held, -1);
        assert!(counters.try_hold(2));
        counters.add(Field::Reused, 3);
        counters.add(Field::New, 2);
        let stats = sum([counters]);
        assert_eq!((stats.held, stats.reused, stats.new), (2, 3, 2));
        assert_eq!(
            stats.to_string(),
            "[Pool Stats] Total: 0, Active: 0, Reused: 3, New: 2, Cleaned: 0"
        );
    }

    #[test]
    fn locked_counters() {
        exercise(&LockedCounters::default());
    }

    #[test]
    fn atomic_counters() {
        exercise(&AtomicCounters::default());
    }

    #[test]
    fn core_counters() {
        exercise(&CoreCounters::default());
    }
}
