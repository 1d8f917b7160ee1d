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
//! timeout. A connection that sends nothing at all after TLS for that pause gets
//! its fallback connection opened then (a *standby*), while the preamble is still
//! awaited: the web server's own timers (its request timeout, say) then run
//! from nearly the moment they would if it had accepted the connection itself,
//! and a real client whose preamble was merely delayed is still admitted (the
//! standby is closed unused). A rejected connection loses no byte read after
//! TLS: what was taken of the preamble and what is still unread both go to the
//! fallback.

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
    /// Nothing sent, and the fallback's connection opened meanwhile spoke or
    /// closed (its own timeout, say).
    #[error("nothing sent before the fallback's own timeout")]
    Silent,
    #[error("no authentication within the handshake timeout")]
    Timeout,
}

/// How long a connection that sent fewer than the preamble's 34 fixed bytes may
/// pause before it is judged on what it sent (a short request, a prober's): a
/// web server would answer it at once. A real client's first record holds its
/// whole preamble (and records arrive whole), so it never waits here. Also how
/// long a connection may send nothing before its fallback standby is opened.
const SHORT_PROBE_PAUSE: Duration = Duration::from_millis(20);

/// How a preamble was judged.
enum Judged {
    Accepted(Arc<Account>),
    Rejected(Rejection),
}

/// The fallback connection opened for a client that sent nothing after TLS.
#[derive(Default)]
struct Standby {
    upstream: Option<TcpStream>,
    /// Opening it was tried (once per connection, even if it failed).
    tried: bool,
}

impl Standby {
    /// Resolves once the fallback sends something or closes: it no longer waits.
    async fn spoke(&self) {
        match &self.upstream {
            Some(upstream) => {
                let _ = upstream.peek(&mut [0u8; 1]).await;
            }
            None => future::pending().await,
        }
    }
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
    /// is still unread in `tls`, for the fallback; `standby` is the fallback
    /// connection if one is open already.
    Rejected {
        tls: TlsConnection,
        read: Vec<u8>,
        why: Rejection,
        standby: Option<TcpStream>,
    },
    /// No usable connection (TLS failed, or the peer closed or erred first).
    Failed(String),
    /// The handshake answered a CA's TLS-ALPN-01 validation; nothing follows.
    AcmeValidation,
}

/// Runs the handshake and authentication within `core.config.handshake_timeout`.
pub(crate) async fn admit(tcp: TcpStream, peer: IpAddr, core: &CoreContext) -> Admission {
    let limit = core.config.handshake_timeout;
    let started = Instant::now();
    let validation = std::cell::Cell::new(false);
    let mut tls = match timeout(limit, handshake(tcp, core, &validation)).await {
        Some(Ok(_)) if validation.get() => return Admission::AcmeValidation,
        Some(Ok(tls)) => tls,
        Some(Err(e)) => return Admission::Failed(format!("TLS handshake failed: {e}")),
        None => return Admission::Failed(format!("no TLS handshake within {limit:?}")),
    };
    let mut read = Vec::new();
    let mut standby = Standby::default();
    let left = limit
        .saturating_sub(started.elapsed())
        .max(Duration::from_millis(1));
    let judged = timeout(
        left,
        read_preamble(&mut tls, &mut read, &mut standby, peer, core),
    )
    .await;
    let why = match judged {
        Some(Ok(Judged::Accepted(account))) => return Admission::Accepted { tls, account },
        Some(Ok(Judged::Rejected(why))) => why,
        Some(Err(e)) => return Admission::Failed(e),
        None => Rejection::Timeout,
    };
    Admission::Rejected {
        tls,
        read,
        why,
        standby: standby.upstream,
    }
}

/// The TLS handshake, with the configuration chosen per [`crate::tls::HelloChoices`],
/// or the one answering a pending ACME TLS-ALPN-01 validation (`validation` then
/// says so).
async fn handshake(
    tcp: TcpStream,
    core: &CoreContext,
    validation: &std::cell::Cell<bool>,
) -> Result<TlsConnection, crate::plumbing::HandshakeError> {
    TlsConnection::accept(tcp, |hello| {
        let acme = core.config.acme_challenges.as_ref();
        if let Some(config) = acme.and_then(|c| c.validation(hello.server_name(), hello.alpn())) {
            validation.set(true);
            return config;
        }
        core.hello_choices
            .choose(hello.cipher_suites(), hello.alpn())
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
    standby: &mut Standby,
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
        let silent = read.is_empty() && !standby.tried;
        let mut take = |bytes: &[u8]| {
            let n = bytes.len().min(wanted);
            read.extend_from_slice(&bytes[..n]);
            wanted -= n;
            n
        };
        let next = future::poll_fn(|cx| tls.poll_plaintext(cx, &mut take));
        let next = match (core.config.fallback, short || silent) {
            (Some(fallback), true) => match timeout(SHORT_PROBE_PAUSE, next).await {
                Some(next) => next,
                None if short => return Ok(Judged::Rejected(Rejection::Short)),
                None => {
                    // Opened now, so the web server's timers start when they would
                    // have had it accepted this connection itself.
                    standby.tried = true;
                    standby.upstream = super::fallback::connect(fallback, core).await.ok();
                    continue;
                }
            },
            _ => {
                let spoke = async {
                    standby.spoke().await;
                    None
                };
                match future::or(async { Some(next.await) }, spoke).await {
                    Some(next) => next,
                    None => return Ok(Judged::Rejected(Rejection::Silent)),
                }
            }
        };
        match next {
            Ok(Plaintext::Offered) => {}
            Ok(Plaintext::Ended) => return Err("connection closed before authentication".into()),
            Err(e) => return Err(format!("read failed before authentication: {e}")),
        }
    }
}
