//! A raw AnyTLS client for the hostile actions: its own TLS connection (from a
//! chosen loopback source address), the authentication preamble, and whatever
//! frames the caller writes. A task reads and counts what the server sends.

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, HashSet};
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anytls::plumbing::{self, timeout, Event, ReadHalf, WriteHalf};
use anytls::proto::auth::{encode_preamble, PasswordHash};
use anytls::proto::frame::{self, Command};
use anytls::proto::{PaddingScheme, Settings};
use futures_lite::{AsyncReadExt, AsyncWriteExt};
use futures_rustls::client::TlsStream;
use glommio::net::TcpStream;
use rustls::pki_types::ServerName;

/// Stream ids whose answers are kept one by one (a SYN flood uses many more).
pub const WATCHED_IDS: u32 = 4096;
/// Bound on one connect (TCP and TLS).
const CONNECT_LIMIT: Duration = Duration::from_secs(10);

type Tls = TlsStream<TcpStream>;

/// What the server sent on a raw session.
#[derive(Default)]
pub struct Seen {
    /// Bytes of frames (any) received.
    pub bytes: Cell<u64>,
    pub synack_ok: Cell<u64>,
    pub synack_err: Cell<u64>,
    pub fin: Cell<u64>,
    pub psh_bytes: Cell<u64>,
    pub heart_responses: Cell<u64>,
    pub alert: RefCell<Option<String>>,
    /// Per stream id up to [`WATCHED_IDS`]: the first SYNACK (true: success).
    pub synacks: RefCell<HashMap<u32, bool>>,
    /// Stream ids up to [`WATCHED_IDS`] that got FIN.
    pub fins: RefCell<HashSet<u32>>,
    /// PSH data per stream id (kept only for ids the caller asked to record).
    pub recorded: RefCell<HashMap<u32, Vec<u8>>>,
    /// The connection ended (EOF or error).
    pub closed: Event,
}

/// TCP connect to `server`, from `source` when given (bound first).
pub async fn tcp(server: SocketAddr, source: Option<IpAddr>) -> io::Result<TcpStream> {
    let Some(source) = source else {
        return TcpStream::connect(server).await.map_err(io::Error::from);
    };
    use glommio_socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP))?;
    socket.bind(&SocketAddr::new(source, 0).into())?;
    socket.set_nonblocking(true)?;
    match socket.connect(&server.into()) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
        Err(e) => return Err(e),
    }
    // Poll for the outcome without blocking the executor.
    let deadline = Instant::now() + CONNECT_LIMIT;
    loop {
        if let Some(e) = socket.take_error()? {
            return Err(e);
        }
        if socket.peer_addr().is_ok() {
            break;
        }
        if Instant::now() >= deadline {
            return Err(io::Error::new(io::ErrorKind::TimedOut, "connect timed out"));
        }
        glommio::timer::sleep(Duration::from_millis(1)).await;
    }
    socket.set_nonblocking(false)?;
    let tcp = TcpStream::from(socket);
    tcp.set_nodelay(true)?;
    Ok(tcp)
}

/// TCP connect and TLS handshake.
/// With `rst`, closing the connection sends RST (SO_LINGER 0), as a crashed
/// client's would.
pub async fn tls(
    server: SocketAddr,
    source: Option<IpAddr>,
    config: &Arc<rustls::ClientConfig>,
    rst: bool,
) -> io::Result<Tls> {
    let connecting = async {
        let tcp = tcp(server, source).await?;
        if rst {
            plumbing::reset_on_close(&tcp);
        }
        let name = ServerName::try_from("localhost").expect("a valid name");
        futures_rustls::TlsConnector::from(config.clone())
            .connect(name, tcp)
            .await
    };
    timeout(CONNECT_LIMIT, connecting)
        .await
        .unwrap_or_else(|| Err(io::Error::new(io::ErrorKind::TimedOut, "TLS timed out")))
}

/// The preamble for `password` with 30 bytes of padding.
pub fn preamble(password: &str) -> Vec<u8> {
    let mut out = Vec::new();
    encode_preamble(&PasswordHash::of(password), 30, &mut out);
    out
}

/// Appends a frame.
pub fn push_frame(out: &mut Vec<u8>, cmd: Command, sid: u32, data: &[u8]) {
    frame::encode(cmd, sid, data, out).expect("data fits in a frame");
}

/// Appends the client Settings (v2, the default scheme's md5).
pub fn push_settings(out: &mut Vec<u8>) {
    let md5 = PaddingScheme::default().md5_hex().to_owned();
    let settings = Settings::client("anytls-bench-soak/1", &md5);
    push_frame(out, Command::Settings, 0, &settings.encode());
}

/// An authenticated raw session.
pub struct Raw {
    writer: WriteHalf<Tls>,
    pub seen: Rc<Seen>,
    reader: Option<glommio::task::JoinHandle<()>>,
}

impl Raw {
    /// TLS, then the preamble (and Settings unless `settings` is false), in one
    /// write; with `rst` the connection's close is an RST.
    pub async fn connect(
        server: SocketAddr,
        source: Option<IpAddr>,
        config: &Arc<rustls::ClientConfig>,
        password: &str,
        settings: bool,
        rst: bool,
    ) -> io::Result<Raw> {
        let mut raw = Raw::connect_bare(server, source, config, rst).await?;
        let mut hello = preamble(password);
        if settings {
            push_settings(&mut hello);
        }
        raw.send(&hello).await?;
        Ok(raw)
    }

    /// TLS only: nothing written yet.
    pub async fn connect_bare(
        server: SocketAddr,
        source: Option<IpAddr>,
        config: &Arc<rustls::ClientConfig>,
        rst: bool,
    ) -> io::Result<Raw> {
        let tls = tls(server, source, config, rst).await?;
        let (reader, writer) = plumbing::split(tls);
        let seen = Rc::new(Seen::default());
        let task = glommio::spawn_local(read_frames(reader, seen.clone())).detach();
        Ok(Raw {
            writer,
            seen,
            reader: Some(task),
        })
    }

    /// Writes and flushes `bytes` (one TLS record per 16 KiB at most).
    pub async fn send(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.writer.write_all(bytes).await?;
        self.writer.flush().await
    }

    /// Writes `bytes` one byte per TLS record.
    pub async fn send_bytewise(&mut self, bytes: &[u8]) -> io::Result<()> {
        for b in bytes {
            self.writer.write_all(std::slice::from_ref(b)).await?;
            self.writer.flush().await?;
        }
        Ok(())
    }

    /// Records PSH data of `sid` from now on.
    pub fn record(&self, sid: u32) {
        self.seen.recorded.borrow_mut().insert(sid, Vec::new());
    }

    /// PSH data recorded for `sid`.
    pub fn recorded(&self, sid: u32) -> Vec<u8> {
        self.seen
            .recorded
            .borrow()
            .get(&sid)
            .cloned()
            .unwrap_or_default()
    }

    /// The first SYNACK of `sid` (true: success), if one came.
    pub fn synack(&self, sid: u32) -> Option<bool> {
        self.seen.synacks.borrow().get(&sid).copied()
    }

    /// Sends HeartRequest and waits (at most `limit`) for one more HeartResponse.
    pub async fn heartbeat(&mut self, limit: Duration) -> bool {
        let before = self.seen.heart_responses.get();
        let mut out = Vec::new();
        push_frame(&mut out, Command::HeartRequest, 0, &[]);
        if self.send(&out).await.is_err() {
            return false;
        }
        let seen = self.seen.clone();
        wait_until(limit, || {
            seen.heart_responses.get() > before || seen.closed.is_set()
        })
        .await;
        seen.heart_responses.get() > before
    }

    /// Whether the server closed the connection within `limit`.
    pub async fn closed_within(&self, limit: Duration) -> bool {
        timeout(limit, self.seen.closed.wait()).await.is_some()
    }
}

impl Drop for Raw {
    fn drop(&mut self) {
        // The reader task holds the other half: cancel it so the socket closes now.
        if let Some(task) = self.reader.take() {
            task.cancel();
        }
    }
}

/// Waits (at most `limit`, polling) until `check` holds.
pub async fn wait_until(limit: Duration, check: impl Fn() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while !check() {
        if Instant::now() >= deadline {
            return false;
        }
        glommio::timer::sleep(Duration::from_millis(10)).await;
    }
    true
}

async fn read_frames(mut reader: ReadHalf<Tls>, seen: Rc<Seen>) {
    let mut buf: Vec<u8> = Vec::new();
    let mut chunk = vec![0u8; 32 * 1024];
    loop {
        let mut used = 0;
        while let Some(f) = frame::decode(&buf[used..]) {
            used += f.wire_len();
            seen.bytes.set(seen.bytes.get() + f.wire_len() as u64);
            match f.cmd {
                Command::SynAck => {
                    let ok = f.data.is_empty();
                    let count = if ok {
                        &seen.synack_ok
                    } else {
                        &seen.synack_err
                    };
                    count.set(count.get() + 1);
                    if f.stream_id <= WATCHED_IDS {
                        seen.synacks.borrow_mut().entry(f.stream_id).or_insert(ok);
                    }
                }
                Command::Fin => {
                    seen.fin.set(seen.fin.get() + 1);
                    if f.stream_id <= WATCHED_IDS {
                        seen.fins.borrow_mut().insert(f.stream_id);
                    }
                }
                Command::Push => {
                    seen.psh_bytes
                        .set(seen.psh_bytes.get() + f.data.len() as u64);
                    if let Some(data) = seen.recorded.borrow_mut().get_mut(&f.stream_id) {
                        data.extend_from_slice(f.data);
                    }
                }
                Command::HeartResponse => {
                    seen.heart_responses.set(seen.heart_responses.get() + 1);
                }
                Command::Alert => {
                    *seen.alert.borrow_mut() = Some(String::from_utf8_lossy(f.data).into_owned());
                }
                _ => {}
            }
        }
        buf.drain(..used);
        match reader.read(&mut chunk).await {
            Ok(0) | Err(_) => break,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    seen.closed.set();
}
