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

use anytls::pool::highperf::HighPerfPool;
use anytls::pool::kind::{Field, Kind, Shard, Spare};
use anytls::pool::lock::LockPool;
use anytls::pool::lockfree::LockFreePool;
use anytls::pool::DEFAULT_MAX_OUTBOUND;

const TARGETS: u16 = 8;
const SPARES_PER_TARGET: usize = 4;

#[derive(Clone, Copy, PartialEq)]
enum Contender {
    Lock,
    LockFree,
    HighPerf,
}

impl Contender {
    fn name(self) -> &'static str {
        match self {
            Contender::Lock => "lock",
            Contender::LockFree => "lockfree",
            Contender::HighPerf => "highperf",
        }
    }
}

fn target(i: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 10_000 + i))
}

/// One thread's loop: take a spare of the next target, count it, give it back.
fn churn(shard: &dyn Shard<u64>, stop: &AtomicBool) -> u64 {
    let mut ops = 0u64;
    let mut i = 0u16;
    while !stop.load(Ordering::Relaxed) {
        for _ in 0..256 {
            let key = target(i % TARGETS);
            i = i.wrapping_add(1);
            if let Some(spare) = shard.take(&key) {
                shard.add(Field::Reused, 1);
                shard.put(key, spare);
            }
            ops += 1;
        }
    }
    ops
}

fn run(kind: Contender, threads: usize, duration: Duration) -> f64 {
    // Each kind's store and counters: shared by every thread for `lock` and
    // `lockfree`; for `highperf` a shard of each thread's own (core-local map,
    // counters of its own) over the shared spill tier, keeping SPARES_PER_TARGET
    // per target locally.
    let pool: Arc<dyn Kind<u64>> = match kind {
        Contender::Lock => Arc::new(LockPool::new(DEFAULT_MAX_OUTBOUND)),
        Contender::LockFree => Arc::new(LockFreePool::new(DEFAULT_MAX_OUTBOUND)),
        Contender::HighPerf => Arc::new(HighPerfPool::new(
            threads,
            SPARES_PER_TARGET * threads,
            DEFAULT_MAX_OUTBOUND,
        )),
    };
    let stop = Arc::new(AtomicBool::new(false));
    let barrier = Arc::new(Barrier::new(threads + 1));
    let handles: Vec<_> = (0..threads)
        .map(|index| {
            let pool = pool.clone();
            let (stop, barrier) = (stop.clone(), barrier.clone());
            std::thread::spawn(move || {
                let shard = pool.shard(index);
                let dialed = Instant::now();
                for t in 0..TARGETS {
                    for n in 0..SPARES_PER_TARGET {
                        shard.put(target(t), Spare::new(n as u64, dialed));
                    }
                }
                barrier.wait();
                churn(&*shard, &stop)
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
        for kind in [Contender::Lock, Contender::LockFree, Contender::HighPerf] {
            let rate = median(
                (0..repeats)
                    .map(|_| run(kind, threads, Duration::from_millis(millis)))
                    .collect(),
            );
            if kind == Contender::Lock {
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
