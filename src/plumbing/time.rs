//! Timeouts on the glommio timer, and [`Throttle`]: something (a log line) let
//! through at most once per interval.

use std::cell::Cell;
use std::future::Future;
use std::time::{Duration, Instant};

use futures_lite::future;

/// How often a deadline of `limit` is checked: a quarter of it, between 50 ms
/// and 5 s, so it fires at most a quarter late.
pub fn check_period(limit: Duration) -> Duration {
    (limit / 4).clamp(Duration::from_millis(50), Duration::from_secs(5))
}

/// Runs `fut` for at most `limit`; `None` if the time ran out first.
pub async fn timeout<T>(limit: Duration, fut: impl Future<Output = T>) -> Option<T> {
    future::or(async { Some(fut.await) }, async {
        glommio::timer::sleep(limit).await;
        None
    })
    .await
}

/// Lets an event through at most once per interval (a warning a flood would
/// otherwise repeat per connection). Executor-local; time is passed in.
#[derive(Debug, Default)]
pub struct Throttle(Cell<Option<Instant>>);

impl Throttle {
    /// Whether an event at `now` goes through: the first one does, then none
    /// until `interval` has passed since the last that did.
    pub fn pass(&self, now: Instant, interval: Duration) -> bool {
        let open = self
            .0
            .get()
            .is_none_or(|at| now.saturating_duration_since(at) >= interval);
        if open {
            self.0.set(Some(now));
        }
        open
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn throttle_passes_once_per_interval() {
        let throttle = Throttle::default();
        let start = Instant::now();
        let second = Duration::from_secs(1);
        assert!(throttle.pass(start, second));
        assert!(!throttle.pass(start + second / 2, second));
        assert!(throttle.pass(start + second, second));
        assert!(!throttle.pass(start + second * 3 / 2, second));
        assert!(throttle.pass(start + second * 5, second));
    }
}
