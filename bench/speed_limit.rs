//! Speed-limit micro-benchmark: what `SpeedLimit::take` costs per 16 KiB frame
//! (the unit a session moves), with no limit, with a limit far above the traffic
//! (the credit path: the shared clock touched once per chunk), and with the same
//! limit's shared clock taken by 1, 2 and 4 threads at once (the rebalancing
//! path, every call a compare-and-swap). A benchmark, not a test: it prints
//! figures, asserts none.
//!
//! ```text
//! cargo bench --bench speed_limit -- [--millis MS]
//! ```

use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use anytls::speed_limit::{CoreCredit, Direction, SpeedLimit};

/// Bytes one call counts: a full frame.
const FRAME: usize = 16 * 1024;

/// Calls per second of `take` on `threads` threads sharing one limit of `rate`
/// bytes a second, each thread with its own credit (a core's).
fn run(rate: u64, threads: usize, millis: u64) -> f64 {
    let limit = Arc::new(SpeedLimit::new(rate, Instant::now()));
    let barrier = Arc::new(Barrier::new(threads));
    let workers: Vec<_> = (0..threads)
        .map(|_| {
            let (limit, barrier) = (limit.clone(), barrier.clone());
            std::thread::spawn(move || {
                let credit = CoreCredit::default();
                barrier.wait();
                let end = Instant::now() + Duration::from_millis(millis);
                let mut calls = 0u64;
                let mut waited = Duration::ZERO;
                while Instant::now() < end {
                    for _ in 0..1024 {
                        let now = Instant::now();
                        waited += limit
                            .take(&credit, Direction::Up, FRAME, now)
                            .unwrap_or_default();
                    }
                    calls += 1024;
                }
                std::hint::black_box(waited);
                calls
            })
        })
        .collect();
    let calls: u64 = workers.into_iter().map(|w| w.join().unwrap()).sum();
    calls as f64 / (millis as f64 / 1000.0)
}

fn main() {
    let mut millis = 1000;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        if arg == "--millis" {
            millis = args.next().and_then(|v| v.parse().ok()).unwrap_or(millis);
        }
    }
    println!("SpeedLimit::take per {FRAME}-byte frame, {millis} ms per row");
    println!(
        "{:<44} {:>8} {:>14} {:>10}",
        "case", "threads", "calls/s", "ns/call"
    );
    let cases = [
        ("no limit", 0u64),
        ("100 Gbit/s (credit; clock once per MiB)", 12_500_000_000),
        ("1 Gbit/s (clock once per 5 ms chunk)", 125_000_000),
        ("10 Mbit/s (every call past the credit)", 1_250_000),
    ];
    for (name, rate) in cases {
        for threads in [1, 2, 4] {
            let per_second = run(rate, threads, millis);
            let ns = threads as f64 * 1e9 / per_second;
            println!("{name:<44} {threads:>8} {per_second:>14.0} {ns:>10.1}");
        }
    }
}
