//! A user's speed limit over every session and every core, built as the highperf
//! pool is: each core spends from a credit of its own, and only when that runs
//! out does it take a chunk from the one shared tier, a lock-free virtual clock
//! (GCRA: the time at which everything granted so far is paid for at the rate).
//! Nothing shared is touched per byte; a core touches the shared atomic about
//! once per [`CHUNK`] of the rate, so cores rebalance by taking chunks as they
//! need them and an idle core strands at most one chunk.
//!
//! Callers hold traffic back by waiting the time [`SpeedLimit::take`] returns
//! before they read more (backpressure), never by buffering it. No clock of its
//! own: time comes in as an `Instant`.

use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

/// A core takes this much of the rate from the shared tier at a time.
pub const CHUNK: Duration = Duration::from_millis(5);
/// After a pause, this much of the rate passes at once; it is also how late a
/// caller may wake (a busy core) before the time it overslept is lost to it.
pub const BURST: Duration = Duration::from_millis(200);
/// The smallest chunk, for low rates (a TLS record's worth).
const MIN_CHUNK_BYTES: u64 = 16 * 1024;
/// The largest chunk, for high rates.
const MAX_CHUNK_BYTES: u64 = 1 << 20;

/// Which way bytes move.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// Client to target.
    Up,
    /// Target to client.
    Down,
}

/// One user's limit, shared by every core: a rate (0 = none) and one virtual
/// clock per direction.
#[derive(Debug)]
pub struct SpeedLimit {
    /// Bytes per second each way; 0: no limit.
    rate: AtomicU64,
    /// Nanoseconds since `epoch` at which what was granted up is paid for.
    up: AtomicU64,
    /// The same, down.
    down: AtomicU64,
    epoch: Instant,
}

/// What one core has taken from the shared tier and not spent yet, per direction.
#[derive(Debug, Default)]
pub struct CoreCredit {
    up: Cell<u64>,
    down: Cell<u64>,
}

impl SpeedLimit {
    /// A limit of `bytes_per_sec` each way (0: none), its clocks starting at `now`.
    pub fn new(bytes_per_sec: u64, now: Instant) -> SpeedLimit {
        SpeedLimit {
            rate: AtomicU64::new(bytes_per_sec),
            up: AtomicU64::new(0),
            down: AtomicU64::new(0),
            epoch: now,
        }
    }

    /// The rate in bytes per second each way; 0: none.
    pub fn rate(&self) -> u64 {
        self.rate.load(Relaxed)
    }

    /// Changes the rate for bytes taken from now on.
    pub fn set_rate(&self, bytes_per_sec: u64) {
        self.rate.store(bytes_per_sec, Relaxed);
    }

    /// Counts `bytes` moved `direction` at `now` against the limit, spending the
    /// core's `credit` first; how long the caller must wait before it moves more,
    /// if at all.
    #[inline]
    pub fn take(
        &self,
        credit: &CoreCredit,
        direction: Direction,
        bytes: usize,
        now: Instant,
    ) -> Option<Duration> {
        let rate = self.rate();
        if rate == 0 {
            return None;
        }
        let credit = match direction {
            Direction::Up => &credit.up,
            Direction::Down => &credit.down,
        };
        let bytes = bytes as u64;
        let have = credit.get();
        if have >= bytes {
            credit.set(have - bytes);
            return None;
        }
        let need = bytes - have;
        let chunk = need.max(chunk_bytes(rate));
        credit.set(chunk - need);
        let clock = match direction {
            Direction::Up => &self.up,
            Direction::Down => &self.down,
        };
        let paid_at = self.grant(clock, chunk, rate, now);
        let now = self.nanos(now);
        (paid_at > now).then(|| Duration::from_nanos(paid_at - now))
    }

    /// Advances `clock` by `bytes` at `rate`; the time (in nanoseconds since the
    /// epoch) at which they are paid for. One compare-and-swap loop.
    fn grant(&self, clock: &AtomicU64, bytes: u64, rate: u64, now: Instant) -> u64 {
        let now = self.nanos(now);
        let cost = u64::try_from(u128::from(bytes) * 1_000_000_000 / u128::from(rate))
            .unwrap_or(u64::MAX / 4);
        let burst = BURST.as_nanos() as u64;
        let mut paid_at = 0;
        let _ = clock.fetch_update(Relaxed, Relaxed, |tat| {
            paid_at = tat.max(now.saturating_sub(burst)).saturating_add(cost);
            Some(paid_at)
        });
        paid_at
    }

    fn nanos(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.epoch).as_nanos()).unwrap_or(u64::MAX / 4)
    }
}

/// The chunk a core takes at a time at `rate` bytes per second.
fn chunk_bytes(rate: u64) -> u64 {
    (u128::from(rate) * CHUNK.as_nanos() / 1_000_000_000)
        .clamp(u128::from(MIN_CHUNK_BYTES), u128::from(MAX_CHUNK_BYTES)) as u64
}

/// Megabits per second (the panel's unit) as bytes per second.
pub fn mbps_to_bytes(mbps: u64) -> u64 {
    mbps.saturating_mul(1_000_000 / 8)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Moves `total` bytes in `frame`-byte steps from `cores` cores in turn,
    /// each waiting what it is told (simulated time); how long it took.
    fn simulate(rate: u64, cores: usize, frame: usize, total: u64) -> Duration {
        let start = Instant::now();
        let limit = SpeedLimit::new(rate, start);
        let credits: Vec<CoreCredit> = (0..cores).map(|_| CoreCredit::default()).collect();
        let mut ready = vec![start; cores];
        let mut moved = 0;
        while moved < total {
            let core = (0..cores).min_by_key(|&c| ready[c]).unwrap();
            let now = ready[core];
            let wait = limit.take(&credits[core], Direction::Up, frame, now);
            ready[core] = now + wait.unwrap_or_default();
            moved += frame as u64;
        }
        ready.into_iter().max().unwrap() - start
    }

    #[test]
    fn no_rate_never_waits() {
        let limit = SpeedLimit::new(0, Instant::now());
        let credit = CoreCredit::default();
        assert_eq!(
            limit.take(&credit, Direction::Down, 1 << 30, Instant::now()),
            None
        );
    }

    #[test]
    fn one_core_gets_the_rate() {
        // 10 Mbit/s = 1.25 MB/s: 12.5 MB take 10 s, less the burst.
        let took = simulate(1_250_000, 1, 16 * 1024, 12_500_000);
        assert!((9.9..10.05).contains(&took.as_secs_f64()), "took {took:?}");
    }

    #[test]
    fn eight_cores_share_the_rate() {
        let took = simulate(1_250_000, 8, 16 * 1024, 12_500_000);
        assert!((9.8..10.05).contains(&took.as_secs_f64()), "took {took:?}");
    }

    #[test]
    fn directions_are_limited_apart() {
        let now = Instant::now();
        let limit = SpeedLimit::new(100_000, now);
        let credit = CoreCredit::default();
        let up = limit.take(&credit, Direction::Up, 100_000, now).unwrap();
        let down = limit.take(&credit, Direction::Down, 100_000, now).unwrap();
        assert_eq!(up, down);
        assert!((900..=1000).contains(&up.as_millis()), "{up:?}");
    }

    #[test]
    fn credit_is_spent_before_the_shared_tier() {
        let now = Instant::now();
        let limit = SpeedLimit::new(10_000_000, now);
        let credit = CoreCredit::default();
        limit.take(&credit, Direction::Up, 1, now);
        let clock = limit.up.load(Relaxed);
        // The first take took a whole chunk (50 KB at 10 MB/s): the next
        // bytes come out of the credit without touching the shared clock.
        for _ in 0..100 {
            assert_eq!(limit.take(&credit, Direction::Up, 100, now), None);
        }
        assert_eq!(limit.up.load(Relaxed), clock);
    }

    #[test]
    fn a_pause_allows_only_the_burst() {
        let start = Instant::now();
        let limit = SpeedLimit::new(1_000_000, start);
        let credit = CoreCredit::default();
        let later = start + Duration::from_secs(60);
        // 200 ms of the rate pass at once after a minute of nothing; more waits.
        assert_eq!(limit.take(&credit, Direction::Up, 150_000, later), None);
        let wait = limit
            .take(&credit, Direction::Up, 200_000, later)
            .expect("past the burst");
        assert!(wait >= Duration::from_millis(140), "{wait:?}");
    }

    #[test]
    fn a_new_rate_applies_to_what_comes_next() {
        let now = Instant::now();
        let limit = SpeedLimit::new(1_000, now);
        limit.set_rate(0);
        let credit = CoreCredit::default();
        assert_eq!(limit.take(&credit, Direction::Up, 1 << 20, now), None);
        assert_eq!(mbps_to_bytes(10), 1_250_000);
    }
}
