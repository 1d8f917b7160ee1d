//! When to talk to the CA, as pure functions of a certificate's validity, the
//! time and a random draw: renew once a third of the lifetime is left (a little
//! earlier by a random part, so a fleet started together does not renew
//! together), and after a failure wait a back-off that doubles.

use std::time::Duration;

/// The first wait after a failed issuance. Let's Encrypt allows 5 failed
/// validations per name per hour; this back-off stays under that.
pub const FIRST_RETRY: Duration = Duration::from_secs(10 * 60);
/// The longest wait between tries.
pub const LAST_RETRY: Duration = Duration::from_secs(12 * 3600);

/// When (seconds since the epoch) a certificate valid from `not_before` to
/// `not_after` is renewed: a third of its lifetime before it ends, earlier by up
/// to a thirtieth of its lifetime times `draw` (in [0, 1]).
pub fn renew_at(not_before: u64, not_after: u64, draw: f64) -> u64 {
    let lifetime = not_after.saturating_sub(not_before);
    let start = not_after - lifetime / 3;
    start.saturating_sub((lifetime as f64 / 30.0 * draw.clamp(0.0, 1.0)) as u64)
}

/// Whether a certificate valid until `not_after` is still worth serving at
/// `now` while a renewal is pending: not expired.
pub fn still_valid(not_after: u64, now: u64) -> bool {
    now < not_after
}

/// How long to wait after the `failures`-th failure in a row.
pub fn retry_in(failures: u32) -> Duration {
    let doublings = failures.saturating_sub(1).min(16);
    FIRST_RETRY.saturating_mul(1 << doublings).min(LAST_RETRY)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renewal_comes_a_third_of_the_lifetime_early_and_retries_back_off() {
        // 90 days: renewed 30 days before the end, up to 3 days earlier still.
        let day = 86_400;
        assert_eq!(renew_at(0, 90 * day, 0.0), 60 * day);
        assert_eq!(renew_at(0, 90 * day, 1.0), 57 * day);
        assert!(renew_at(0, 30, 0.5) <= 20);
        assert!(still_valid(10, 9) && !still_valid(10, 10));
        assert_eq!(retry_in(1), FIRST_RETRY);
        assert_eq!(retry_in(2), FIRST_RETRY * 2);
        assert_eq!(retry_in(40), LAST_RETRY);
    }
}
