//! The client's mixed inbound, as sing-box's and mihomo's `mixed`: one local
//! port takes SOCKS5 (first byte 5) and HTTP proxy requests (`CONNECT`, or a plain
//! request with an absolute URI; see [`super::http`]). Each connection becomes one
//! AnyTLS stream on a pooled session, relayed both ways. A SOCKS5 UDP ASSOCIATE is
//! handed to [`udp`].

use std::io;
use std::rc::Rc;
use std::time::Duration;

use futures_lite::{future, AsyncReadExt, AsyncWriteExt};
use glommio::net::TcpStream;
use log::debug;
use thiserror::Error;

pub mod udp;

use super::http::{self, HttpError, ProxyRequest};
use super::session::{ClientStream, ConnectError, StreamError};
use super::session_pool::{Lease, SessionPool};
use super::socks5::{self, Reply, SocksCommand, SocksError};
use crate::plumbing::{self, timeout};
use crate::proto::error::UotError;
use crate::proto::Address;

/// How long a local client may take to send its SOCKS or HTTP request.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest SOCKS greeting + request we buffer.
const MAX_HANDSHAKE: usize = 1024;

/// Why a local connection failed.
#[derive(Debug, Error)]
pub enum InboundError {
    /// Reading or writing the local socket failed.
    #[error("local connection: {0}")]
    Io(#[from] io::Error),
    /// The SOCKS handshake was malformed.
    #[error("{0}")]
    Socks(#[from] SocksError),
    /// The HTTP request was malformed or not a proxy request.
    #[error("{0}")]
    Http(#[from] HttpError),
    /// The request did not come whole in time, or was too long.
    #[error("proxy request incomplete")]
    Handshake,
    /// A stream to the target could not be had through the server.
    #[error("{request} {target}: {cause}")]
    Unserved {
        /// How the target was asked for: `SOCKS5 CONNECT`, `HTTP CONNECT`, ...
        request: &'static str,
        /// The target.
        target: Address,
        /// Why.
        cause: Unserved,
    },
    /// The session carrying the connection failed.
    #[error("the session to the AnyTLS server failed: {0}")]
    Session(io::Error),
    /// The server refused a UDP-over-TCP stream.
    #[error("{0}")]
    Stream(#[from] StreamError),
    /// The UDP ASSOCIATE socket failed.
    #[error("UDP socket: {0}")]
    Udp(io::Error),
    /// A UDP-over-TCP request could not be built, or the server sent a malformed
    /// datagram.
    #[error("UDP over TCP: {0}")]
    Uot(#[from] UotError),
}

/// Why a stream to a target could not be opened through the server: what the
/// client logs at WARN and an HTTP client gets as the body of its 502 or 504.
#[derive(Debug, Error)]
pub enum Unserved {
    /// No session to the server could be had.
    #[error("{0}")]
    Connect(#[from] ConnectError),
    /// The session could not take the stream (it closed, or the address is too long).
    #[error("the session to the AnyTLS server could not take the stream: {0}")]
    Session(io::Error),
    /// The server refused or did not answer the stream.
    #[error("{0}")]
    Stream(#[from] StreamError),
}

impl Unserved {
    /// The HTTP status an HTTP proxy client is answered with.
    fn http_status(&self) -> &'static str {
        match self {
            Unserved::Connect(ConnectError::TimedOut { .. })
            | Unserved::Stream(StreamError::SynAckTimeout) => "504 Gateway Timeout",
            _ => "502 Bad Gateway",
        }
    }

    /// The SOCKS5 reply a SOCKS client is answered with.
    fn socks_reply(&self) -> Reply {
        match self {
            Unserved::Stream(StreamError::Refused(text)) => Reply::for_refusal(text),
            Unserved::Connect(ConnectError::TimedOut { .. })
            | Unserved::Stream(StreamError::SynAckTimeout) => Reply::TtlExpired,
            _ => Reply::GeneralFailure,
        }
    }
}

impl InboundError {
    /// Whether the failure is the server's or the way to it (logged at WARN), not
    /// the local client's (logged at debug).
    pub fn is_upstream(&self) -> bool {
        matches!(self, InboundError::Unserved { .. })
    }
}

/// Reads into `buf` until `parse` finds a whole request (at most `limit` bytes).
async fn read_until<T, E: Into<InboundError>>(
    conn: &mut TcpStream,
    buf: &mut Vec<u8>,
    limit: usize,
    parse: impl Fn(&[u8]) -> Result<Option<T>, E>,
) -> Result<T, InboundError> {
    loop {
        if let Some(parsed) = parse(buf).map_err(Into::into)? {
            return Ok(parsed);
        }
        if buf.len() >= limit {
            return Err(InboundError::Handshake);
        }
        let mut chunk = [0u8; 2048];
        let n = conn.read(&mut chunk).await?;
        if n == 0 {
            return Err(InboundError::Handshake);
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// Serves one local connection to its end: SOCKS5 or HTTP, by its first byte.
pub async fn serve(mut conn: TcpStream, pool: Rc<SessionPool>) -> Result<(), InboundError> {
    let mut buf = Vec::new();
    let first = read_until(&mut conn, &mut buf, 1, |bytes| {
        Ok::<_, InboundError>(bytes.first().copied())
    });
    timeout(HANDSHAKE_TIMEOUT, first)
        .await
        .ok_or(InboundError::Handshake)??;
    if buf[0] == socks5::VERSION {
        serve_socks(conn, pool, buf).await
    } else {
        serve_http(conn, pool, buf).await
    }
}

/// An HTTP proxy request: CONNECT answers 200 and relays; a plain request is
/// forwarded in origin form and its response relayed back.
async fn serve_http(
    mut conn: TcpStream,
    pool: Rc<SessionPool>,
    mut buf: Vec<u8>,
) -> Result<(), InboundError> {
    let request = timeout(
        HANDSHAKE_TIMEOUT,
        read_until(&mut conn, &mut buf, http::MAX_HEAD, http::parse_request),
    )
    .await
    .ok_or(InboundError::Handshake)?;
    let (
        ProxyRequest {
            target,
            tunnel,
            forward,
        },
        used,
    ) = match request {
        Ok(parsed) => parsed,
        Err(InboundError::Http(e)) => {
            respond(&mut conn, e.status(), "").await?;
            return Err(e.into());
        }
        Err(e) => return Err(e),
    };
    let (lease, stream) = match open(&pool, &target).await {
        Ok(opened) => opened,
        Err(cause) => {
            respond(&mut conn, cause.http_status(), &format!("{cause}\n")).await?;
            let request = if tunnel { "HTTP CONNECT" } else { "HTTP" };
            return Err(InboundError::Unserved {
                request,
                target,
                cause,
            });
        }
    };
    debug!(
        "HTTP {} stream {} to {target} established",
        if tunnel { "CONNECT" } else { "request" },
        stream.id()
    );
    let mut first = if tunnel {
        conn.write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
            .await?;
        Vec::new()
    } else {
        forward
    };
    first.extend_from_slice(&buf[used..]);
    relay(conn, &pool, lease, stream, &first).await
}

/// Answers an HTTP request that cannot be served with `status` and a plain-text
/// `body`.
async fn respond(conn: &mut TcpStream, status: &str, body: &str) -> io::Result<()> {
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    conn.write_all(response.as_bytes()).await
}

/// A stream to `target` on a pooled session, once the server answered SYNACK.
async fn open(pool: &SessionPool, target: &Address) -> Result<(Lease, ClientStream), Unserved> {
    let lease = pool.acquire().await?;
    let stream = match lease.session.open_stream(target) {
        Ok(stream) => stream,
        Err(e) => {
            pool.release(lease);
            return Err(Unserved::Session(e));
        }
    };
    match stream.established().await {
        Ok(()) => Ok((lease, stream)),
        Err(e) => {
            drop(stream);
            pool.release(lease);
            Err(e.into())
        }
    }
}

/// Relays `conn` and `stream` both ways (sending `early` first) until either
/// ends, then gives the session back to the pool.
async fn relay(
    conn: TcpStream,
    pool: &SessionPool,
    lease: Lease,
    stream: ClientStream,
    early: &[u8],
) -> Result<(), InboundError> {
    if !early.is_empty() {
        stream
            .write_all(early)
            .await
            .map_err(InboundError::Session)?;
    }
    let (mut local_in, mut local_out) = plumbing::split(conn);
    let upload = async {
        let mut chunk = vec![0u8; 16 * 1024];
        loop {
            match local_in.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    if stream.write_all(&chunk[..n]).await.is_err() {
                        return;
                    }
                }
            }
        }
    };
    let download = async {
        let mut chunk = vec![0u8; 16 * 1024];
        loop {
            let n = stream.read(&mut chunk).await;
            if n == 0 || local_out.write_all(&chunk[..n]).await.is_err() {
                return;
            }
        }
    };
    future::or(upload, download).await;
    drop(stream);
    pool.release(lease);
    Ok(())
}

/// A SOCKS5 connection whose first bytes are in `buf`.
async fn serve_socks(
    mut conn: TcpStream,
    pool: Rc<SessionPool>,
    mut buf: Vec<u8>,
) -> Result<(), InboundError> {
    let handshake = async {
        let used = read_until(&mut conn, &mut buf, MAX_HANDSHAKE, socks5::parse_greeting).await;
        let used = match used {
            Err(InboundError::Socks(SocksError::NoAcceptableMethod)) => {
                conn.write_all(&[socks5::VERSION, socks5::METHOD_NONE_ACCEPTABLE])
                    .await?;
                return Err(SocksError::NoAcceptableMethod.into());
            }
            other => other?,
        };
        conn.write_all(&[socks5::VERSION, socks5::METHOD_NO_AUTH])
            .await?;
        buf.drain(..used);
        match read_until(&mut conn, &mut buf, MAX_HANDSHAKE, socks5::parse_request).await {
            Ok(request) => Ok(request),
            Err(InboundError::Socks(e)) => {
                let code = match e {
                    SocksError::Command(_) => Reply::CommandNotSupported,
                    SocksError::Address(_) => Reply::AddressTypeNotSupported,
                    _ => Reply::GeneralFailure,
                };
                conn.write_all(&socks5::reply(code)).await?;
                Err(e.into())
            }
            Err(e) => Err(e),
        }
    };
    let (request, used) = timeout(HANDSHAKE_TIMEOUT, handshake)
        .await
        .ok_or(InboundError::Handshake)??;
    if request.command == SocksCommand::UdpAssociate {
        return udp::associate(conn, pool, &request.destination).await;
    }
    let target = request.destination;
    let early = buf.split_off(used);
    let (lease, stream) = match open(&pool, &target).await {
        Ok(opened) => opened,
        Err(cause) => {
            conn.write_all(&socks5::reply(cause.socks_reply())).await?;
            return Err(InboundError::Unserved {
                request: "SOCKS5 CONNECT",
                target,
                cause,
            });
        }
    };
    conn.write_all(&socks5::reply(Reply::Succeeded)).await?;
    debug!("stream {} to {target} established", stream.id());
    relay(conn, &pool, lease, stream, &early).await
}
