//! Pacing a sender to a fixed rate of bytes per second: a token bucket
//! ([`Pacer`]) that says how long to wait before each write, with the time
//! passed in, so the arithmetic is tested without sleeping. `throughput
//! --rate-mbps` paces each upload stream's writer with one, and the
//! generator's source target each download connection.

use std::time::{Duration, Instant};

/// The most time's worth of credit a pacer keeps: after a stall (a full write
/// queue, a late timer) the sender catches up by at most this much, or one
/// write if that is larger.
pub const BURST: Duration = Duration::from_millis(20);

/// A token bucket of bytes: credit grows at the rate up to a bound, each write
/// takes its size from it, and a write that leaves it negative must wait until
/// the rate has paid the debt back.
#[derive(Debug)]
pub struct Pacer {
    bytes_per_sec: f64,
    /// The most credit kept, in bytes.
    burst: f64,
    /// Bytes that may be sent now; negative: owed.
    credit: f64,
    /// When `credit` was last brought up to date.
    at: Instant,
}

impl Pacer {
    /// A pacer at `bytes_per_sec` (positive) for writes of at most `write`
    /// bytes, starting at `now` with no credit, so the first write waits for
    /// its share of time and nothing goes out ahead of the rate.
    pub fn new(bytes_per_sec: f64, write: usize, now: Instant) -> Pacer {
        Pacer {
            bytes_per_sec,
            burst: (bytes_per_sec * BURST.as_secs_f64()).max(write as f64),
            credit: 0.0,
            at: now,
        }
    }

    /// Takes `bytes` at `now`; how long the sender must wait before writing
    /// them (zero when the credit covers them).
    pub fn take(&mut self, bytes: usize, now: Instant) -> Duration {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.at = self.at.max(now);
        self.credit = (self.credit + elapsed * self.bytes_per_sec).min(self.burst);
        self.credit -= bytes as f64;
        if self.credit >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-self.credit / self.bytes_per_sec)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    /// Equal to within a nanosecond's rounding.
    fn about(a: Duration, b: Duration) -> bool {
        a.abs_diff(b) <= Duration::from_nanos(1)
    }

    #[test]
    fn the_first_write_waits_its_share_of_time() {
        let t0 = Instant::now();
        let mut pacer = Pacer::new(1e6, 1000, t0);
        assert!(about(pacer.take(1000, t0), MS));
    }

    #[test]
    fn a_sender_that_writes_when_told_moves_exactly_the_rate() {
        // 2 MB/s in 32 KiB writes for 3 simulated seconds.
        let t0 = Instant::now();
        let mut pacer = Pacer::new(2e6, 32 * 1024, t0);
        let (mut now, mut sent) = (t0, 0u64);
        while now < t0 + Duration::from_secs(3) {
            now += pacer.take(32 * 1024, now);
            sent += 32 * 1024;
        }
        let rate = sent as f64 / (now - t0).as_secs_f64();
        assert!((rate - 2e6).abs() / 2e6 < 1e-6, "{rate}");
    }

    #[test]
    fn late_wake_ups_are_made_up_within_the_burst() {
        // 1 MB/s in 1000-byte writes; every wait oversleeps by 5 ms (less
        // than the 20 ms burst), and the rate still holds.
        let t0 = Instant::now();
        let mut pacer = Pacer::new(1e6, 1000, t0);
        let (mut now, mut sent) = (t0, 0u64);
        while now < t0 + Duration::from_secs(1) {
            let wait = pacer.take(1000, now);
            if !wait.is_zero() {
                now += wait + 5 * MS;
            }
            sent += 1000;
        }
        let rate = sent as f64 / (now - t0).as_secs_f64();
        assert!((rate - 1e6).abs() / 1e6 < 0.01, "{rate}");
    }

    #[test]
    fn after_a_stall_the_catch_up_is_bounded_by_the_burst() {
        // 1 MB/s: the burst is 20 ms' worth, 20,000 bytes. After a 1 s stall
        // only 20 writes of 1000 go at once, then the rate takes over again.
        let t0 = Instant::now();
        let mut pacer = Pacer::new(1e6, 1000, t0);
        let later = t0 + Duration::from_secs(1);
        let free = (0..100)
            .take_while(|_| pacer.take(1000, later).is_zero())
            .count();
        assert_eq!(free, 20);
        // The 21st write (taken by take_while's failed check) waits 1 ms; at
        // that time the 22nd owes 1 ms more.
        assert!(about(pacer.take(1000, later + MS), MS));
    }

    #[test]
    fn a_write_larger_than_the_time_burst_bounds_the_burst() {
        // 100 kB/s: 20 ms is 2000 bytes, but writes are 64 KiB; after a stall
        // one whole write goes at once, and the next waits its full time.
        let t0 = Instant::now();
        let mut pacer = Pacer::new(1e5, 65_536, t0);
        let later = t0 + Duration::from_secs(5);
        assert_eq!(pacer.take(65_536, later), Duration::ZERO);
        assert!(about(
            pacer.take(65_536, later),
            Duration::from_micros(655_360)
        ));
    }

    #[test]
    fn time_going_backwards_adds_no_credit() {
        let t0 = Instant::now() + Duration::from_secs(1);
        let mut pacer = Pacer::new(1e6, 1000, t0);
        assert!(about(pacer.take(1000, t0 - Duration::from_secs(1)), MS));
        assert!(about(pacer.take(1000, t0), 2 * MS));
    }
}
