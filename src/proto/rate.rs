//! A token bucket: how many events (datagrams, say) may pass per second, with a
//! burst, given the time of each. No clock of its own.

use std::time::Instant;

/// At most `rate` events per second on average, `rate` at once after a pause.
#[derive(Clone, Debug)]
pub struct TokenBucket {
    rate: u32,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    /// A full bucket at `now` for `rate` events per second (at least 1).
    pub fn new(rate: u32, now: Instant) -> TokenBucket {
        let rate = rate.max(1);
        TokenBucket {
            rate,
            tokens: f64::from(rate),
            last: now,
        }
    }

    /// Whether one event at `now` is within the rate (and counts it if so).
    pub fn take(&mut self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.last);
        self.last = self.last.max(now);
        let rate = f64::from(self.rate);
        self.tokens = (self.tokens + elapsed.as_secs_f64() * rate).min(rate);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_burst_then_the_rate() {
        let start = Instant::now();
        let mut bucket = TokenBucket::new(100, start);
        let passed = (0..150).filter(|_| bucket.take(start)).count();
        assert_eq!(passed, 100, "a full bucket's burst");
        assert!(!bucket.take(start));
        let later = start + Duration::from_millis(100);
        let passed = (0..50).filter(|_| bucket.take(later)).count();
        assert_eq!(passed, 10, "100/s refills 10 in 100 ms");
        let much_later = later + Duration::from_secs(60);
        let passed = (0..500).filter(|_| bucket.take(much_later)).count();
        assert_eq!(passed, 100, "never more than one second's worth at once");
    }
}
