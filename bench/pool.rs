//! Pool micro-benchmark: take + return of fake spares (no sockets) on each kind's
//! data structure and counters, with 1, 2 and 4 threads; operations per second and
//! the ratio to `lock`. A benchmark, not a test: it prints figures, asserts none.
//!
//! ```text
//! cargo bench --bench pool -- [--millis MS] [--repeats N]
//! ```

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use anytls::pool::counters::{AtomicCounters, CoreCounters, Counters, Field, LockedCounters};
use anytls::pool::store::{HighPerfStore, LockFreeStore, LockStore, Spare, SpareStore, SpillTier};

const TARGETS: u16 = 8;
const SPARES_PER_TARGET: usize = 4;

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Lock,
    LockFree,
    HighPerf,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Lock => "lock",
            Kind::LockFree => "lockfree",
            Kind::HighPerf => "highperf",
        }
    }
}

fn target(i: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 10_000 + i))
}

/// One thread's loop: take a spare of the next target, count it, give it back.
fn churn(store: &dyn SpareStore<u64>, counters: &dyn Counters, stop: &AtomicBool) -> u64 {
    let mut ops = 0u64;
    let mut i = 0u16;
    while !stop.load(Ordering::Relaxed) {
        for _ in 0..256 {
            let key = target(i % TARGETS);
            i = i.wrapping_add(1);
            if let Some(spare) = store.pop(&key) {
                counters.add(Field::Reused, 1);
                store.push(key, spare);
            }
            ops += 1;
        }
    }
    ops
}

fn run(kind: Kind, threads: usize, duration: Duration) -> f64 {
    let lock_store: Arc<LockStore<u64>> = Arc::default();
    let lockfree_store: Arc<LockFreeStore<u64>> = Arc::default();
    let tier: SpillTier<u64> = Arc::default();
    let locked: Arc<LockedCounters> = Arc::default();
    let atomic: Arc<AtomicCounters> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let barrier = Arc::new(Barrier::new(threads + 1));
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            let (lock_store, lockfree_store, tier) =
                (lock_store.clone(), lockfree_store.clone(), tier.clone());
            let (locked, atomic) = (locked.clone(), atomic.clone());
            let (stop, barrier) = (stop.clone(), barrier.clone());
            std::thread::spawn(move || {
                // highperf: a store and counters of this thread's own over the shared tier.
                let local_store = HighPerfStore::new(tier, SPARES_PER_TARGET);
                let local_counters = CoreCounters::default();
                let (store, counters): (&dyn SpareStore<u64>, &dyn Counters) = match kind {
                    Kind::Lock => (&*lock_store, &*locked),
                    Kind::LockFree => (&*lockfree_store, &*atomic),
                    Kind::HighPerf => (&local_store, &local_counters),
                };
                for t in 0..TARGETS {
                    for n in 0..SPARES_PER_TARGET {
                        store.push(target(t), Spare::new(n as u64));
                    }
                }
                barrier.wait();
                churn(store, counters, &stop)
            })
        })
        .collect();
    barrier.wait();
    let started = Instant::now();
    std::thread::sleep(duration);
    stop.store(true, Ordering::Relaxed);
    let ops: u64 = handles.into_iter().map(|h| h.join().unwrap()).sum();
    ops as f64 / started.elapsed().as_secs_f64()
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(|a, b| a.partial_cmp(b).unwrap());
    values[values.len() / 2]
}

fn main() {
    let mut millis = 1000u64;
    let mut repeats = 3usize;
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut i = 0;
    while i < args.len() {
        match args[i].as_str() {
            "--millis" => millis = args[i + 1].parse().expect("--millis MS"),
            "--repeats" => repeats = args[i + 1].parse().expect("--repeats N"),
            "--bench" => {
                i += 1;
                continue;
            }
            other => panic!("unknown argument {other}"),
        }
        i += 2;
    }
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!(
        "pool micro-benchmark: take + return of fake spares, {TARGETS} targets x {SPARES_PER_TARGET} spares, \
         {millis} ms per run, median of {repeats}, {cpus} CPU(s)"
    );
    println!(
        "{:<10} {:>8} {:>16} {:>10}",
        "kind", "threads", "ops/s", "vs lock"
    );
    for threads in [1, 2, 4] {
        let mut lock_rate = 0.0;
        for kind in [Kind::Lock, Kind::LockFree, Kind::HighPerf] {
            let rate = median(
                (0..repeats)
                    .map(|_| run(kind, threads, Duration::from_millis(millis)))
                    .collect(),
            );
            if kind == Kind::Lock {
                lock_rate = rate;
            }
            println!(
                "{:<10} {:>8} {:>16.0} {:>9.2}x",
                kind.name(),
                threads,
                rate,
                rate / lock_rate
            );
        }
    }
}
