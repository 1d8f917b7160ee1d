//! Probe resistance: a connection that fails authentication is handed, with every
//! byte already read after TLS, to an ordinary TCP service (a web server), and
//! relayed both ways, so a prober sees that service and nothing of AnyTLS.

use std::net::SocketAddr;

use futures_lite::{future, AsyncReadExt, AsyncWriteExt};
use futures_rustls::server::TlsStream;
use glommio::net::TcpStream;
use log::debug;

use crate::mux::{self, timeout};
use crate::server::context::CoreContext;

/// Relays `tls` (after writing `read` upstream) to the fallback service until
/// either side ends or nothing moves for the session idle timeout.
pub(crate) async fn relay(
    tls: TlsStream<crate::mux::Transport>,
    read: Vec<u8>,
    fallback: SocketAddr,
    peer: SocketAddr,
    core: &CoreContext,
) {
    let limit = core.config.connect_timeout;
    let mut upstream = match timeout(limit, TcpStream::connect_timeout(fallback, limit)).await {
        Some(Ok(upstream)) => upstream,
        Some(Err(e)) => return debug!("{peer}: fallback {fallback} unreachable: {e}"),
        None => return debug!("{peer}: fallback {fallback} did not answer within {limit:?}"),
    };
    if upstream.write_all(&read).await.is_err() {
        return;
    }
    let idle = core.config.session_idle_timeout;
    let (mut from_client, mut to_client) = mux::split(tls);
    let (mut from_upstream, mut to_upstream) = mux::split(upstream);
    let up = async {
        let mut buf = vec![0u8; 16 * 1024];
        while let Some(Ok(n)) = timeout(idle, from_client.read(&mut buf)).await {
            if n == 0 || to_upstream.write_all(&buf[..n]).await.is_err() {
                break;
            }
        }
    };
    let down = async {
        let mut buf = vec![0u8; 16 * 1024];
        while let Some(Ok(n)) = timeout(idle, from_upstream.read(&mut buf)).await {
            if n == 0
                || to_client.write_all(&buf[..n]).await.is_err()
                || to_client.flush().await.is_err()
            {
                break;
            }
        }
        let _ = to_client.close().await;
    };
    future::or(up, down).await;
    debug!("{peer}: fallback relay to {fallback} ended");
}
