//! The soak's loopback targets, served on the executor that starts them: TCP
//! echoes, a download target (answers a 12-byte request `length u32 | position
//! u64` with that many bytes of the [`Block`] and closes), UDP echoes, a target
//! that accepts and never reads, and a closed port. The well-behaved clients and
//! the hostile ones get targets of their own, so a hostile burst never fills a
//! socket a well-behaved client depends on.

use std::cell::Cell;
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::rc::Rc;
use std::time::{Duration, Instant};

use anytls::proto::Address;
use futures_lite::{AsyncReadExt, AsyncWriteExt};
use glommio::net::{TcpListener, TcpStream, UdpSocket};
use rand::rngs::SmallRng;
use rand::{RngCore, SeedableRng};

use crate::targets::{self, Behaviour};

const LOOPBACK: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
/// Bytes of the pattern block (a power of two).
const BLOCK: usize = 1 << 20;
/// The longest a never-reading target holds a connection.
const STALL_HOLD: Duration = Duration::from_secs(600);

/// Pseudo-random bytes that payloads are cut from, at any position (wrapping),
/// so both ends can check every byte without keeping a copy.
pub struct Block(Box<[u8]>);

impl Block {
    fn new() -> Block {
        let mut bytes = vec![0u8; BLOCK];
        SmallRng::seed_from_u64(0x5eed_50a4).fill_bytes(&mut bytes);
        Block(bytes.into())
    }

    /// Fills `out` with the bytes from position `pos`.
    pub fn fill(&self, pos: usize, out: &mut [u8]) {
        let mut done = 0;
        while done < out.len() {
            let at = (pos + done) % BLOCK;
            let n = (BLOCK - at).min(out.len() - done);
            out[done..done + n].copy_from_slice(&self.0[at..at + n]);
            done += n;
        }
    }

    /// The index of the first byte of `data` that differs from the bytes at `pos`.
    pub fn mismatch(&self, pos: usize, data: &[u8]) -> Option<usize> {
        let mut done = 0;
        while done < data.len() {
            let at = (pos + done) % BLOCK;
            let n = (BLOCK - at).min(data.len() - done);
            if let Some(i) = data[done..done + n]
                .iter()
                .zip(&self.0[at..at + n])
                .position(|(a, b)| a != b)
            {
                return Some(done + i);
            }
            done += n;
        }
        None
    }
}

/// One executor's targets.
pub struct Targets {
    pub block: Rc<Block>,
    /// Well-behaved: TCP echo.
    pub echo: Address,
    /// Well-behaved: the download target.
    pub download: Address,
    /// Well-behaved: UDP echo.
    pub udp: SocketAddr,
    /// Hostile: TCP echo.
    pub hostile_echo: Address,
    /// Hostile: download target (abrupt disconnects read from it).
    pub hostile_download: Address,
    /// Hostile: UDP echo.
    pub hostile_udp: SocketAddr,
    /// Hostile: accepts and never reads.
    pub stall: Address,
    /// A loopback port nothing listens on.
    pub closed: Address,
    released: Rc<Cell<bool>>,
}

impl Targets {
    /// Starts every target on this executor.
    pub fn start() -> io::Result<Targets> {
        let block = Rc::new(Block::new());
        let released = Rc::new(Cell::new(false));
        let closed = std::net::TcpListener::bind((LOOPBACK, 0))?.local_addr()?;
        Ok(Targets {
            echo: Address::Ip(targets::start(LOOPBACK, Behaviour::Echo)?),
            download: Address::Ip(download(block.clone())?),
            udp: udp_echo()?,
            hostile_echo: Address::Ip(targets::start(LOOPBACK, Behaviour::Echo)?),
            hostile_download: Address::Ip(download(block.clone())?),
            hostile_udp: udp_echo()?,
            stall: Address::Ip(stall(released.clone())?),
            // The listener above is closed again: connecting is refused.
            closed: Address::Ip(closed),
            block,
            released,
        })
    }

    /// Lets the never-reading target drop what it holds.
    pub fn release(&self) {
        self.released.set(true);
    }
}

fn listen() -> io::Result<(TcpListener, SocketAddr)> {
    let listener = TcpListener::bind(SocketAddr::new(LOOPBACK, 0))?;
    let addr = listener.local_addr()?;
    Ok((listener, addr))
}

async fn accept(listener: &TcpListener) -> TcpStream {
    loop {
        match listener.accept().await {
            Ok(conn) => {
                let _ = conn.set_nodelay(true);
                return conn;
            }
            Err(_) => glommio::timer::sleep(Duration::from_millis(10)).await,
        }
    }
}

/// The download target.
fn download(block: Rc<Block>) -> io::Result<SocketAddr> {
    let (listener, addr) = listen()?;
    glommio::spawn_local(async move {
        loop {
            let mut conn = accept(&listener).await;
            let block = block.clone();
            glommio::spawn_local(async move {
                let mut request = [0u8; 12];
                if conn.read_exact(&mut request).await.is_err() {
                    return;
                }
                let len = u32::from_be_bytes(request[..4].try_into().expect("4 bytes")) as usize;
                let pos = u64::from_be_bytes(request[4..].try_into().expect("8 bytes")) as usize;
                let mut buf = vec![0u8; 32 * 1024];
                let mut sent = 0;
                while sent < len {
                    let n = buf.len().min(len - sent);
                    block.fill(pos + sent, &mut buf[..n]);
                    if conn.write_all(&buf[..n]).await.is_err() {
                        return;
                    }
                    sent += n;
                }
                let _ = conn.close().await;
            })
            .detach();
        }
    })
    .detach();
    Ok(addr)
}

/// A target that accepts and never reads, holding each connection until released.
fn stall(released: Rc<Cell<bool>>) -> io::Result<SocketAddr> {
    let (listener, addr) = listen()?;
    glommio::spawn_local(async move {
        loop {
            let conn = accept(&listener).await;
            let released = released.clone();
            glommio::spawn_local(async move {
                let since = Instant::now();
                while !released.get() && since.elapsed() < STALL_HOLD {
                    glommio::timer::sleep(Duration::from_millis(200)).await;
                }
                drop(conn);
            })
            .detach();
        }
    })
    .detach();
    Ok(addr)
}

/// A UDP echo.
fn udp_echo() -> io::Result<SocketAddr> {
    let socket = UdpSocket::bind(SocketAddr::new(LOOPBACK, 0))?;
    let addr = socket.local_addr()?;
    glommio::spawn_local(async move {
        let mut buf = vec![0u8; 65_536];
        loop {
            match socket.recv_from(&mut buf).await {
                Ok((n, from)) => {
                    let _ = socket.send_to(&buf[..n], from).await;
                }
                Err(_) => glommio::timer::sleep(Duration::from_millis(10)).await,
            }
        }
    })
    .detach();
    Ok(addr)
}

/// The download target's request.
pub fn download_request(len: usize, pos: usize) -> [u8; 12] {
    let mut request = [0u8; 12];
    request[..4].copy_from_slice(&(len as u32).to_be_bytes());
    request[4..].copy_from_slice(&(pos as u64).to_be_bytes());
    request
}
