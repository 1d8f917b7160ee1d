//! Timeouts on the glommio timer.

use std::future::Future;
use std::time::Duration;

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
