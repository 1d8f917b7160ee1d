//! Probe resistance: a connection that fails authentication is handed, with every
//! byte already read after TLS, to an ordinary TCP service (a web server), and
//! relayed both ways, so a prober sees that service and nothing of AnyTLS.
//!
//! With `--fallback-proxy-protocol` a PROXY protocol header naming the client and
//! the address it connected to goes first ([`crate::proto::proxy_protocol`]).
//! A fallback that closes without answering what it was sent (a web server
//! timing out an incomplete request) has the client's connection closed
//! without close_notify, as that server's own TLS would. Reads on either side
//! end the relay after the session idle timeout, and every
//! write (to the client or to the fallback) after `--write-timeout` without
//! completing, so a peer that never reads cannot hold the connection.

use std::cell::Cell;
use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use futures_lite::{future, AsyncReadExt, AsyncWriteExt};
use glommio::net::TcpStream;
use log::debug;

use crate::plumbing::{self, timeout};
use crate::proto::proxy_protocol;
use crate::server::context::CoreContext;

/// A connection to the fallback service, within the connect timeout.
pub(crate) async fn connect(fallback: SocketAddr, core: &CoreContext) -> Result<TcpStream, String> {
    let limit = core.config.connect_timeout;
    match timeout(limit, TcpStream::connect_timeout(fallback, limit)).await {
        Some(Ok(upstream)) => Ok(upstream),
        Some(Err(e)) => Err(format!("fallback {fallback} unreachable: {e}")),
        None => Err(format!(
            "fallback {fallback} did not answer within {limit:?}"
        )),
    }
}

/// Relays `tls` (after writing the PROXY header, if configured, and `read`
/// upstream) to the fallback service, over `standby` if that connection is open
/// already, until either side ends, nothing arrives for the session idle
/// timeout, or a write makes no progress for the write timeout.
pub(crate) async fn relay(
    tls: crate::plumbing::TlsConnection,
    read: Vec<u8>,
    standby: Option<TcpStream>,
    fallback: SocketAddr,
    peer: SocketAddr,
    core: &CoreContext,
) {
    let connected = match standby {
        Some(upstream) => Ok(upstream),
        None => connect(fallback, core).await,
    };
    let mut upstream = match connected {
        Ok(upstream) => upstream,
        Err(e) => return debug!("{peer}: {e}"),
    };
    let mut first = Vec::with_capacity(proxy_protocol::V1_MAX + read.len());
    if let Some(version) = core.config.fallback_proxy_protocol {
        match tls.tcp().local_addr() {
            Ok(local) => proxy_protocol::encode(version, peer, local, &mut first),
            Err(e) => return debug!("{peer}: no local address for the PROXY header: {e}"),
        }
    }
    first.extend_from_slice(&read);
    // Neither is needed past the first write: free them before the relay's long wait.
    drop(read);
    let write = core.config.write_timeout;
    if !first.is_empty() && !within(write, upstream.write_all(&first)).await {
        return debug!("{peer}: fallback {fallback} did not take the first bytes within {write:?}");
    }
    let asked = Cell::new(!first.is_empty());
    drop(first);
    let idle = core.config.session_idle_timeout;
    let (mut from_client, mut to_client) = plumbing::split(tls);
    let (mut from_upstream, mut to_upstream) = plumbing::split(upstream);
    let up = async {
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            let n = match timeout(idle, from_client.read(&mut buf)).await {
                None => return "the client sent nothing for the idle timeout",
                Some(Ok(0) | Err(_)) => return "the client closed or failed",
                Some(Ok(n)) => n,
            };
            if !within(write, to_upstream.write_all(&buf[..n])).await {
                return "a write to the fallback failed or timed out";
            }
            asked.set(true);
        }
    };
    let down = async {
        let mut buf = vec![0u8; 16 * 1024];
        let mut answered = false;
        let why = loop {
            let n = match timeout(idle, from_upstream.read(&mut buf)).await {
                None => break "the fallback sent nothing for the idle timeout",
                Some(Ok(0) | Err(_)) if asked.get() && !answered => {
                    // A web server giving up on a request it never answered (nginx
                    // at its client_header_timeout) closes without close_notify.
                    return "the fallback closed without answering";
                }
                Some(Ok(0) | Err(_)) => break "the fallback closed or failed",
                Some(Ok(n)) => n,
            };
            answered = true;
            if !within(write, to_client.write_all(&buf[..n])).await
                || !within(write, to_client.flush()).await
            {
                break "a write to the client failed or timed out";
            }
        };
        within(write, to_client.close()).await;
        why
    };
    let why = future::or(up, down).await;
    debug!("{peer}: fallback relay to {fallback} ended: {why}");
}

/// Whether `write` completed within `limit`.
async fn within(limit: Duration, write: impl Future<Output = std::io::Result<()>>) -> bool {
    matches!(timeout(limit, write).await, Some(Ok(())))
}
