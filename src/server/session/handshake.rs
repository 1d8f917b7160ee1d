//! Admission of a connection: TLS handshake, then the authentication preamble, all
//! within the handshake timeout.
//!
//! The decision is taken once the preamble's fixed part (the 32-byte hash and the
//! padding length) is complete, looking the hash up with constant-time equality: a
//! real client sends its whole preamble in one write, while a prober's request
//! (an HTTP request, say) is never a valid preamble, and waiting for the padding
//! length such bytes announce would leave the prober hanging where a web server
//! answers. For the same reason fewer than the fixed part's bytes followed by a
//! short pause (a short request) are judged at once, not at the handshake
//! timeout. A rejected connection loses no byte read after TLS: what was taken
//! of the preamble and what is still unread both go to the fallback.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_lite::future;
use glommio::net::TcpStream;

use crate::accounts::Account;
use crate::plumbing::{timeout, Plaintext, TlsConnection};
use crate::proto::auth::{decode_preamble, PasswordHash, FIXED_LEN, HASH_LEN};
use crate::server::context::CoreContext;

/// Why a connection that completed TLS was not admitted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub(crate) enum Rejection {
    #[error("wrong password")]
    WrongPassword,
    /// Not checked: its address sent too many wrong passwords.
    #[error("address blocked after too many wrong passwords")]
    Blocked,
    /// Fewer bytes than the preamble's fixed part, then a pause.
    #[error("fewer than 34 bytes, then a pause")]
    Short,
    #[error("no authentication within the handshake timeout")]
    Timeout,
}

/// How long a connection that sent fewer than the preamble's 34 fixed bytes may
/// pause before it is judged on what it sent (a short request, a prober's): a
/// web server would answer it at once. A real client's first record holds its
/// whole preamble (and records arrive whole), so it never waits here.
const SHORT_PROBE_PAUSE: Duration = Duration::from_millis(40);

/// How a preamble was judged.
enum Judged {
    Accepted(Arc<Account>),
    Rejected(Rejection),
}

/// How admission ended.
pub(crate) enum Admission {
    /// Authenticated: the user's account; what the client sent after the
    /// preamble is still unread in `tls`.
    Accepted {
        tls: TlsConnection,
        account: Arc<Account>,
    },
    /// TLS completed but authentication did not (wrong password, or no complete
    /// preamble in time): `read` is what was read of the preamble, and the rest
    /// is still unread in `tls`, for the fallback.
    Rejected {
        tls: TlsConnection,
        read: Vec<u8>,
        why: Rejection,
    },
    /// No usable connection (TLS failed, or the peer closed or erred first).
    Failed(String),
}

/// Runs the handshake and authentication within `core.config.handshake_timeout`.
pub(crate) async fn admit(tcp: TcpStream, peer: IpAddr, core: &CoreContext) -> Admission {
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
    match timeout(left, read_preamble(&mut tls, &mut read, peer, core)).await {
        Some(Ok(Judged::Accepted(account))) => Admission::Accepted { tls, account },
        Some(Ok(Judged::Rejected(why))) => Admission::Rejected { tls, read, why },
        Some(Err(e)) => Admission::Failed(e),
        None => Admission::Rejected {
            tls,
            read,
            why: Rejection::Timeout,
        },
    }
}

/// The TLS handshake, with the cipher suite chosen per [`crate::tls::client_prefers_chacha`].
async fn handshake(
    tcp: TcpStream,
    core: &CoreContext,
) -> Result<TlsConnection, crate::plumbing::HandshakeError> {
    TlsConnection::accept(tcp, |hello| {
        if crate::tls::client_prefers_chacha(hello.cipher_suites()) {
            core.tls_client_order.clone()
        } else {
            core.config.tls.clone()
        }
    })
    .await
}

/// Reads until the preamble can be judged: accepted once a matching preamble is
/// complete, a wrong password as soon as the hash is known to be wrong, blocked
/// (at the same moment, unchecked) while the client's address is. Only the
/// preamble's bytes are taken from `tls`, so `read` grows only by what the
/// client sent and a connection not yet authenticated holds no session buffer.
async fn read_preamble(
    tls: &mut TlsConnection,
    read: &mut Vec<u8>,
    peer: IpAddr,
    core: &CoreContext,
) -> Result<Judged, String> {
    let mut user = None;
    loop {
        if user.is_none() && read.len() >= FIXED_LEN {
            if core.pending.guesses.blocked(peer, Instant::now()) {
                return Ok(Judged::Rejected(Rejection::Blocked));
            }
            let hash: [u8; HASH_LEN] = read[..HASH_LEN].try_into().expect("length checked");
            match core.config.users.load().authenticate(&PasswordHash(hash)) {
                Some(account) => user = Some(account.clone()),
                None => return Ok(Judged::Rejected(Rejection::WrongPassword)),
            }
        }
        if let (Some(account), Some(_)) = (&user, decode_preamble(read)) {
            return Ok(Judged::Accepted(account.clone()));
        }
        let mut wanted = match read.get(HASH_LEN..FIXED_LEN) {
            Some(len) => FIXED_LEN + u16::from_be_bytes([len[0], len[1]]) as usize - read.len(),
            None => FIXED_LEN - read.len(),
        };
        let short = !read.is_empty() && read.len() < FIXED_LEN;
        let mut take = |bytes: &[u8]| {
            let n = bytes.len().min(wanted);
            read.extend_from_slice(&bytes[..n]);
            wanted -= n;
            n
        };
        let next = future::poll_fn(|cx| tls.poll_plaintext(cx, &mut take));
        let next = if short {
            match timeout(SHORT_PROBE_PAUSE, next).await {
                Some(next) => next,
                None => return Ok(Judged::Rejected(Rejection::Short)),
            }
        } else {
            next.await
        };
        match next {
            Ok(Plaintext::Offered) => {}
            Ok(Plaintext::Ended) => return Err("connection closed before authentication".into()),
            Err(e) => return Err(format!("read failed before authentication: {e}")),
        }
    }
}
