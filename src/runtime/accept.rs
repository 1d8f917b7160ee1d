//! The accept loop both the server and the client run on each core.

use std::io;
use std::time::Duration;

use glommio::net::{TcpListener, TcpStream};

/// Pause after a failed `accept` (descriptors exhausted, say) before the next.
pub const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// Accepts connections until dropped, handing each (with `TCP_NODELAY` set) to
/// `serve`. A failed accept goes to `failed` and is followed by
/// [`ACCEPT_BACKOFF`], so the loop never spins while descriptors are exhausted;
/// the connections already open go on.
pub async fn accept_each(
    listener: &TcpListener,
    mut serve: impl FnMut(TcpStream),
    mut failed: impl FnMut(io::Error),
) {
    loop {
        match listener.accept().await {
            Ok(stream) => {
                stream.set_nodelay(true).ok();
                serve(stream);
            }
            Err(e) => {
                failed(e.into());
                glommio::timer::sleep(ACCEPT_BACKOFF).await;
            }
        }
    }
}
