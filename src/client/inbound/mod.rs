//! The SOCKS5 inbound: one local connection becomes one AnyTLS stream on a pooled
//! session, relayed both ways. A UDP ASSOCIATE is handed to [`udp`].

use std::io;
use std::rc::Rc;
use std::time::Duration;

use futures_lite::{future, AsyncReadExt, AsyncWriteExt};
use glommio::net::TcpStream;
use log::debug;
use thiserror::Error;

pub mod udp;

use super::session::StreamError;
use super::session_pool::SessionPool;
use super::socks5::{self, Reply, SocksCommand, SocksError};
use crate::mux::{self, timeout};
use crate::proto::error::UotError;

/// How long a local client may take to send its SOCKS greeting and request.
const SOCKS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
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
    /// The SOCKS handshake did not complete in time or was too long.
    #[error("SOCKS handshake incomplete")]
    Handshake,
    /// No session to the server could be had.
    #[error("cannot reach the AnyTLS server: {0}")]
    Session(io::Error),
    /// The server refused the stream.
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

async fn read_until<T>(
    conn: &mut TcpStream,
    buf: &mut Vec<u8>,
    parse: impl Fn(&[u8]) -> Result<Option<T>, SocksError>,
) -> Result<T, InboundError> {
    loop {
        if let Some(parsed) = parse(buf)? {
            return Ok(parsed);
        }
        if buf.len() >= MAX_HANDSHAKE {
            return Err(InboundError::Handshake);
        }
        let mut chunk = [0u8; 512];
        let n = conn.read(&mut chunk).await?;
        if n == 0 {
            return Err(InboundError::Handshake);
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// Serves one local SOCKS5 connection to its end.
pub async fn serve(mut conn: TcpStream, pool: Rc<SessionPool>) -> Result<(), InboundError> {
    let mut buf = Vec::new();
    let handshake = async {
        let used = read_until(&mut conn, &mut buf, socks5::parse_greeting).await;
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
        match read_until(&mut conn, &mut buf, socks5::parse_request).await {
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
    let (request, used) = timeout(SOCKS_HANDSHAKE_TIMEOUT, handshake)
        .await
        .ok_or(InboundError::Handshake)??;
    if request.command == SocksCommand::UdpAssociate {
        return udp::associate(conn, pool, &request.destination).await;
    }
    let target = request.destination;
    let early = buf.split_off(used);

    let lease = match pool.acquire().await {
        Ok(lease) => lease,
        Err(e) => {
            conn.write_all(&socks5::reply(Reply::GeneralFailure))
                .await?;
            return Err(InboundError::Session(e));
        }
    };
    let session = lease.session.clone();
    let stream = match session.open_stream(&target) {
        Ok(stream) => stream,
        Err(e) => {
            conn.write_all(&socks5::reply(Reply::GeneralFailure))
                .await?;
            return Err(InboundError::Session(e));
        }
    };
    let refusal = match stream.wait_established().await {
        Ok(()) => None,
        Err(StreamError::Refused(text)) => Some((
            Reply::for_refusal(&text),
            InboundError::Stream(StreamError::Refused(text)),
        )),
        Err(StreamError::SynAckTimeout) => Some((
            Reply::TtlExpired,
            InboundError::Stream(StreamError::SynAckTimeout),
        )),
        Err(e) => Some((Reply::GeneralFailure, InboundError::Stream(e))),
    };
    if let Some((code, error)) = refusal {
        drop(stream);
        pool.release(lease);
        conn.write_all(&socks5::reply(code)).await?;
        return Err(error);
    }
    conn.write_all(&socks5::reply(Reply::Succeeded)).await?;
    debug!("stream {} to {target} established", stream.id());

    if !early.is_empty() {
        stream
            .write_all(&early)
            .await
            .map_err(InboundError::Session)?;
    }
    let (mut local_in, mut local_out) = mux::split(conn);
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
