//! Admission of a connection: TLS handshake, then the authentication preamble, all
//! within the handshake timeout.
//!
//! The decision is taken once the preamble's fixed part (the 32-byte hash and the
//! padding length) is complete, looking the hash up with constant-time equality: a
//! real client sends its whole preamble in one write, while a prober's request
//! (an HTTP request, say) is never a valid preamble, and waiting for the padding
//! length such bytes announce would leave the prober hanging where a web server
//! answers. A rejected connection keeps every byte read after TLS, for the
//! fallback.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_lite::{AsyncRead, AsyncReadExt};
use futures_rustls::server::TlsStream;
use glommio::net::TcpStream;

use crate::plumbing::Transport;

use super::READ_CHUNK;
use crate::accounts::Account;
use crate::plumbing::timeout;
use crate::plumbing::ReadBuffer;
use crate::proto::auth::{decode_preamble, PasswordHash, FIXED_LEN, HASH_LEN};
use crate::server::context::CoreContext;

/// Bytes asked of TLS per read before the preamble is complete (a real client
/// sends the preamble and its first frames in one record).
const PREAMBLE_READ: usize = 2 * 1024;

/// How admission ended.
pub(crate) enum Admission {
    /// Authenticated: the user's account and the bytes read past the preamble.
    Accepted {
        tls: TlsStream<Transport>,
        account: Arc<Account>,
        leftover: ReadBuffer,
    },
    /// TLS completed but authentication did not (wrong password, or no complete
    /// preamble in time): what was read is kept for the fallback.
    Rejected {
        tls: TlsStream<Transport>,
        read: Vec<u8>,
        why: &'static str,
    },
    /// No usable connection (TLS failed, or the peer closed or erred first).
    Failed(String),
}

/// Runs the handshake and authentication within `core.config.handshake_timeout`.
pub(crate) async fn admit(tcp: TcpStream, core: &CoreContext) -> Admission {
    let limit = core.config.handshake_timeout;
    let started = Instant::now();
    let mut tls = match timeout(limit, handshake(tcp, core)).await {
        Some(Ok(tls)) => tls,
        Some(Err(e)) => return Admission::Failed(format!("TLS handshake failed: {e}")),
        None => return Admission::Failed(format!("no TLS handshake within {limit:?}")),
    };
    let mut read = Vec::new();
    let left = limit
        .saturating_sub(started.elapsed())
        .max(Duration::from_millis(1));
    match timeout(left, read_preamble(&mut tls, &mut read, core)).await {
        Some(Ok(Some((account, used)))) => Admission::Accepted {
            tls,
            account,
            leftover: ReadBuffer::with_filled(READ_CHUNK, &read[used..]),
        },
        Some(Ok(None)) => Admission::Rejected {
            tls,
            read,
            why: "wrong password",
        },
        Some(Err(e)) => Admission::Failed(e),
        None => Admission::Rejected {
            tls,
            read,
            why: "no authentication within the handshake timeout",
        },
    }
}

/// The TLS handshake, with the cipher suite chosen per [`crate::tls::client_prefers_chacha`].
async fn handshake(tcp: TcpStream, core: &CoreContext) -> std::io::Result<TlsStream<Transport>> {
    let acceptor = rustls::server::Acceptor::default();
    let start = futures_rustls::LazyConfigAcceptor::new(acceptor, Transport::new(tcp)).await?;
    let config = if crate::tls::client_prefers_chacha(start.client_hello().cipher_suites()) {
        core.tls_client_order.clone()
    } else {
        core.config.tls.clone()
    };
    start.into_stream(config).await
}

/// Reads until the preamble can be judged: `Some((account, preamble length))` once a
/// matching preamble is complete, `None` as soon as the hash is known to be wrong.
/// Reads are small and `read` grows only by what the client sent, so a
/// connection not yet authenticated holds no session buffer.
async fn read_preamble<R: AsyncRead + Unpin>(
    reader: &mut R,
    read: &mut Vec<u8>,
    core: &CoreContext,
) -> Result<Option<(Arc<Account>, usize)>, String> {
    let mut user = None;
    let mut chunk = [0u8; PREAMBLE_READ];
    loop {
        if user.is_none() && read.len() >= FIXED_LEN {
            let hash: [u8; HASH_LEN] = read[..HASH_LEN].try_into().expect("length checked");
            match core.config.users.load().authenticate(&PasswordHash(hash)) {
                Some(account) => user = Some(account.clone()),
                None => return Ok(None),
            }
        }
        if let (Some(account), Some(preamble)) = (&user, decode_preamble(read)) {
            return Ok(Some((account.clone(), preamble.len)));
        }
        match reader.read(&mut chunk).await {
            Ok(0) => return Err("connection closed before authentication".into()),
            Ok(n) => read.extend_from_slice(&chunk[..n]),
            Err(e) => return Err(format!("read failed before authentication: {e}")),
        }
    }
}
