//! The generator's own targets, served by detached tasks on the calling
//! executor: echo, sink, source (writes forever, flat out or paced to a rate
//! per connection), request/response (answers every `request` bytes with
//! `response` bytes), and for baseline a plain TCP sink and a TLS sink. They live as long as the executor that started them.
//! `anytls-bench serve-echo` runs the echo on a given address ([`start_at`]).

use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::rc::Rc;
use std::sync::Arc;
use std::time::Instant;

use futures_lite::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use glommio::net::{TcpListener, TcpStream};

use crate::pace::Pacer;

const BUF: usize = 64 * 1024;

/// What a target does with each connection.
#[derive(Clone, Copy, Debug)]
pub enum Behaviour {
    /// Sends back what it reads.
    Echo,
    /// Reads and discards.
    Sink,
    /// Writes until the peer goes away: flat out, or at `bytes_per_sec` on
    /// each connection (from its accept on).
    Source {
        /// The pace of each connection's writes; `None`: as fast as it can.
        bytes_per_sec: Option<f64>,
    },
    /// Reads `request` bytes, writes `response` bytes, repeats.
    RequestResponse {
        /// Bytes per request.
        request: usize,
        /// Bytes per response.
        response: usize,
    },
}

/// Binds `host:0` and serves `behaviour` on it; returns the bound address.
pub fn start(host: IpAddr, behaviour: Behaviour) -> io::Result<SocketAddr> {
    start_at(SocketAddr::new(host, 0), behaviour)
}

/// Binds `addr` and serves `behaviour` on it; returns the bound address.
pub fn start_at(addr: SocketAddr, behaviour: Behaviour) -> io::Result<SocketAddr> {
    let payload: Rc<[u8]> = vec![0x5A; BUF].into();
    serve_each(addr, move |conn| {
        let payload = payload.clone();
        async move {
            // Connection errors end the connection, nothing else.
            let _ = serve(conn, behaviour, &payload).await;
        }
    })
}

/// Binds `addr` and serves every accepted connection with `handle` in a task of
/// its own, on this executor, until the process ends; returns the bound address.
fn serve_each<F, Fut>(addr: SocketAddr, handle: F) -> io::Result<SocketAddr>
where
    F: Fn(TcpStream) -> Fut + 'static,
    Fut: Future<Output = ()> + 'static,
{
    let listener = TcpListener::bind(addr)?;
    let addr = listener.local_addr()?;
    glommio::spawn_local(async move {
        loop {
            let Ok(conn) = listener.accept().await else {
                glommio::timer::sleep(std::time::Duration::from_millis(10)).await;
                continue;
            };
            let _ = conn.set_nodelay(true);
            glommio::spawn_local(handle(conn)).detach();
        }
    })
    .detach();
    Ok(addr)
}

async fn serve(mut conn: TcpStream, behaviour: Behaviour, payload: &[u8]) -> io::Result<()> {
    let mut buf = vec![0u8; BUF];
    match behaviour {
        Behaviour::Sink => drain(&mut conn, &mut buf).await,
        Behaviour::Echo => loop {
            let n = conn.read(&mut buf).await?;
            if n == 0 {
                return Ok(());
            }
            conn.write_all(&buf[..n]).await?;
        },
        Behaviour::Source {
            bytes_per_sec: None,
        } => loop {
            conn.write_all(payload).await?;
        },
        Behaviour::Source {
            bytes_per_sec: Some(rate),
        } => {
            let mut pacer = Pacer::new(rate, payload.len(), Instant::now());
            loop {
                let wait = pacer.take(payload.len(), Instant::now());
                if !wait.is_zero() {
                    glommio::timer::sleep(wait).await;
                }
                conn.write_all(payload).await?;
            }
        }
        Behaviour::RequestResponse { request, response } => {
            let mut pending = 0usize;
            loop {
                while pending < request {
                    let n = conn.read(&mut buf).await?;
                    if n == 0 {
                        return Ok(());
                    }
                    pending += n;
                }
                pending -= request;
                let mut left = response;
                while left > 0 {
                    let n = left.min(payload.len());
                    conn.write_all(&payload[..n]).await?;
                    left -= n;
                }
            }
        }
    }
}

async fn drain<R: AsyncRead + Unpin>(conn: &mut R, buf: &mut [u8]) -> io::Result<()> {
    while conn.read(buf).await? > 0 {}
    Ok(())
}

/// Binds `host:0` and serves TLS with `config`, discarding what arrives.
pub fn start_tls_sink(host: IpAddr, config: Arc<rustls::ServerConfig>) -> io::Result<SocketAddr> {
    let acceptor = futures_rustls::TlsAcceptor::from(config);
    serve_each(SocketAddr::new(host, 0), move |conn| {
        let acceptor = acceptor.clone();
        async move {
            if let Ok(mut tls) = acceptor.accept(conn).await {
                let mut buf = vec![0u8; BUF];
                let _ = drain(&mut tls, &mut buf).await;
            }
        }
    })
}
