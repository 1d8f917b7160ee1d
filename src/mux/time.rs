//! Timeouts on the glommio timer.

use std::future::Future;
use std::time::Duration;

use futures_lite::future;

/// Runs `fut` for at most `limit`; `None` if the time ran out first.
pub async fn timeout<T>(limit: Duration, fut: impl Future<Output = T>) -> Option<T> {
    future::or(async { Some(fut.await) }, async {
        glommio::timer::sleep(limit).await;
        None
    })
    .await
}
