//! One client session: a task reading frames and a padded, coalescing writer,
//! with stream handles for the caller.

use std::cell::{Cell, RefCell};
use std::io;
use std::net::SocketAddr;
use std::ops::ControlFlow;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use futures_lite::{future, AsyncRead, AsyncWriteExt};
use futures_rustls::client::TlsStream;
use glommio::net::TcpStream;
use log::debug;
use rand::rngs::SmallRng;
use rand::SeedableRng;
use rustls::pki_types::ServerName;

use super::padder::{Padder, SharedScheme};
use crate::mux::{self, Event, Pipe, ReadBuffer, WriteQueue};
use crate::proto::auth::{encode_preamble, PasswordHash};
use crate::proto::client_session::{ClientEvent, ClientSessionRules};
use crate::proto::frame::{Command, Frame};
use crate::proto::{Address, PaddingScheme, Settings};

/// Server->client bytes buffered per stream before the session stops reading.
const STREAM_RECEIVE_LIMIT: usize = 256 * 1024;
const READ_CHUNK: usize = 16 * 1024;

/// Where and how a client connects.
#[derive(Clone)]
pub struct ClientConfig {
    /// The server's address.
    pub server: SocketAddr,
    /// The name sent as SNI and checked against the certificate.
    pub server_name: ServerName<'static>,
    /// rustls client configuration (see [`crate::tls::client_config`]).
    pub tls: Arc<rustls::ClientConfig>,
    /// sha256 of the password.
    pub password: PasswordHash,
    /// The padding scheme, shared by all sessions of this client and replaced when
    /// a server sends UpdatePaddingScheme.
    pub padding: SharedScheme,
    /// `client=` in Settings.
    pub client_name: String,
}

impl ClientConfig {
    /// A configuration with the default padding scheme.
    pub fn new(
        server: SocketAddr,
        server_name: &str,
        tls: Arc<rustls::ClientConfig>,
        password: &str,
    ) -> Self {
        let server_name = ServerName::try_from(server_name.to_owned())
            .unwrap_or_else(|_| ServerName::IpAddress(server.ip().into()));
        Self::from_parts(server, server_name, tls, PasswordHash::of(password))
    }

    /// A configuration from already-parsed parts, with the default padding scheme.
    /// (A `ClientConfig` is executor-local; threads share these parts and build one each.)
    pub fn from_parts(
        server: SocketAddr,
        server_name: ServerName<'static>,
        tls: Arc<rustls::ClientConfig>,
        password: PasswordHash,
    ) -> Self {
        ClientConfig {
            server,
            server_name,
            tls,
            password,
            padding: Rc::new(RefCell::new(Arc::new(PaddingScheme::default()))),
            client_name: format!("anytls-rs/{}", env!("CARGO_PKG_VERSION")),
        }
    }
}

/// Connects TCP and completes the TLS handshake, nothing more.
pub async fn connect_tls(config: &ClientConfig) -> io::Result<TlsStream<mux::Transport>> {
    tls_over(TcpStream::connect(config.server).await?, config).await
}

/// Completes the TLS handshake over a TCP connection already made to the server.
async fn tls_over(tcp: TcpStream, config: &ClientConfig) -> io::Result<TlsStream<mux::Transport>> {
    tcp.set_nodelay(true)?;
    futures_rustls::TlsConnector::from(config.tls.clone())
        .connect(config.server_name.clone(), mux::Transport::new(tcp))
        .await
}

/// Why a stream did not open.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StreamError {
    /// The server answered SYNACK with this error text.
    #[error("server refused the stream: {0}")]
    Refused(String),
    /// The session ended first.
    #[error("session closed")]
    SessionClosed,
    /// A v2 server sent no SYNACK within [`SYNACK_TIMEOUT`]: the session is stuck
    /// and was closed.
    #[error("no SYNACK within {SYNACK_TIMEOUT:?}; session closed")]
    SynAckTimeout,
}

/// A v2 stream without SYNACK this long means a stuck session (the reference
/// client's rule, see docs/protocol.md).
pub const SYNACK_TIMEOUT: Duration = Duration::from_secs(3);

struct Slot {
    incoming: Pipe,
    synack: RefCell<Option<Result<(), StreamError>>>,
    synack_arrived: Event,
}

struct Inner {
    queue: WriteQueue,
    rules: RefCell<ClientSessionRules<Rc<Slot>>>,
    alert: RefCell<Option<String>>,
    padding: SharedScheme,
    started: Event,
    closed: Event,
    pong: RefCell<Rc<Event>>,
}

/// One session; dropping it closes the connection.
pub struct ClientSession {
    inner: Rc<Inner>,
}

impl ClientSession {
    /// Connects, authenticates and queues Settings. Settings leave together with the
    /// first stream's SYN and address (packet 1), as the reference client does.
    pub async fn connect(config: &ClientConfig) -> io::Result<ClientSession> {
        Self::connect_over(TcpStream::connect(config.server).await?, config).await
    }

    /// As [`ClientSession::connect`], over a TCP connection the caller made to
    /// `config.server` (from an address of its choosing, say).
    pub async fn connect_over(tcp: TcpStream, config: &ClientConfig) -> io::Result<ClientSession> {
        let mut tls = tls_over(tcp, config).await?;
        let scheme = config.padding.borrow().clone();
        let mut preamble = Vec::new();
        let padding0 = scheme.preamble_padding(&mut SmallRng::from_entropy());
        encode_preamble(&config.password, padding0, &mut preamble);
        tls.write_all(&preamble).await?;
        tls.flush().await?;
        let inner = Rc::new(Inner {
            queue: WriteQueue::default(),
            rules: RefCell::default(),
            alert: RefCell::new(None),
            padding: config.padding.clone(),
            started: Event::default(),
            closed: Event::default(),
            pong: RefCell::new(Rc::new(Event::default())),
        });
        let settings = Settings::client(&config.client_name, scheme.md5_hex());
        inner
            .queue
            .push_frame(Command::Settings, 0, &settings.encode());
        glommio::spawn_local(run(inner.clone(), tls)).detach();
        Ok(ClientSession { inner })
    }

    /// Opens a stream to `target`. Its SYNACK arrives later ([`ClientStream::established`]).
    pub fn open_stream(&self, target: &Address) -> io::Result<ClientStream> {
        let inner = &self.inner;
        if inner.closed.is_set() {
            return Err(io::Error::new(
                io::ErrorKind::NotConnected,
                "session closed",
            ));
        }
        let slot = Rc::new(Slot {
            incoming: Pipe::new(STREAM_RECEIVE_LIMIT),
            synack: RefCell::new(None),
            synack_arrived: Event::default(),
        });
        let id = inner.rules.borrow_mut().open_stream(slot.clone());
        let mut address = Vec::new();
        target
            .encode(&mut address)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        inner.queue.push_frame(Command::Syn, id, &[]);
        inner.queue.push_frame(Command::Push, id, &address);
        inner.started.set();
        Ok(ClientStream {
            session: inner.clone(),
            id,
            slot,
            finished: Cell::new(false),
        })
    }

    /// Sends HeartRequest and waits for the HeartResponse.
    pub async fn heartbeat(&self) -> io::Result<()> {
        let pong = self.inner.pong.borrow().clone();
        self.inner.queue.push_frame(Command::HeartRequest, 0, &[]);
        self.inner.started.set();
        future::or(pong.wait(), self.inner.closed.wait()).await;
        if pong.is_set() {
            Ok(())
        } else {
            Err(io::Error::new(
                io::ErrorKind::NotConnected,
                "session closed",
            ))
        }
    }

    /// The server's protocol version (0 until ServerSettings arrives).
    pub fn server_version(&self) -> u32 {
        self.inner.rules.borrow().server_version()
    }

    /// The Alert text, if the server sent one.
    pub fn alert(&self) -> Option<String> {
        self.inner.alert.borrow().clone()
    }

    /// Whether the session has ended.
    pub fn is_closed(&self) -> bool {
        self.inner.closed.is_set()
    }

    /// Waits until the session ends.
    pub async fn closed(&self) {
        self.inner.closed.wait().await
    }

    /// Closes the session.
    pub fn close(&self) {
        self.inner.close();
    }

    /// Streams not yet closed.
    pub fn open_streams(&self) -> usize {
        self.inner.rules.borrow().open_streams()
    }
}

impl Drop for ClientSession {
    fn drop(&mut self) {
        self.inner.close();
    }
}

impl Inner {
    fn close(&self) {
        self.closed.set();
        self.started.set();
        self.queue.close();
        let streams = self.rules.borrow_mut().end();
        for slot in streams {
            slot.incoming.abort();
            slot.resolve(Err(StreamError::SessionClosed));
        }
    }

    /// Carries out what the rules make of one server frame.
    async fn handle_frame(&self, frame: Frame<'_>) -> ControlFlow<()> {
        log::trace!(
            "client <- {:?} sid {} len {}",
            frame.cmd,
            frame.stream_id,
            frame.data.len()
        );
        let event = self.rules.borrow_mut().handle_frame(frame);
        match event {
            None => {}
            Some(ClientEvent::Data(_, slot, data)) => {
                let _ = slot.incoming.push(data).await;
            }
            Some(ClientEvent::Finished(_, slot)) => {
                slot.incoming.finish();
                slot.resolve(Err(StreamError::SessionClosed));
            }
            Some(ClientEvent::Established(_, slot)) => slot.resolve(Ok(())),
            Some(ClientEvent::Refused(_, slot, reason)) => {
                slot.resolve(Err(StreamError::Refused(reason)));
            }
            Some(ClientEvent::Alert(text)) => {
                debug!("server alert: {text}");
                *self.alert.borrow_mut() = Some(text);
                return ControlFlow::Break(());
            }
            Some(ClientEvent::NewPaddingScheme(scheme)) => {
                *self.padding.borrow_mut() = Arc::new(scheme);
            }
            Some(ClientEvent::Send(command, id)) => {
                self.queue.push_frame(command, id, &[]);
            }
            Some(ClientEvent::HeartbeatAnswered) => {
                let pong = self.pong.replace(Rc::new(Event::default()));
                pong.set();
            }
        }
        ControlFlow::Continue(())
    }
}

impl Slot {
    fn resolve(&self, result: Result<(), StreamError>) {
        let mut synack = self.synack.borrow_mut();
        if synack.is_none() {
            *synack = Some(result);
            self.synack_arrived.set();
        }
    }
}

async fn run(inner: Rc<Inner>, tls: TlsStream<mux::Transport>) {
    let (reader, writer) = mux::split(tls);
    let reading = read_loop(&inner, reader);
    let writing = async {
        inner.started.wait().await;
        let mut padder = Padder::new(inner.padding.clone());
        if let Err(e) = mux::write_loop(writer, &inner.queue, Some(&mut padder)).await {
            debug!("client session write failed: {e}");
        }
    };
    future::or(future::or(reading, writing), inner.closed.wait()).await;
    inner.close();
}

async fn read_loop<R: AsyncRead + Unpin>(inner: &Inner, mut reader: R) {
    let mut buf = ReadBuffer::new(READ_CHUNK);
    let handle = async |frame: Frame<'_>| inner.handle_frame(frame).await;
    mux::read_frames(&mut reader, &mut buf, handle, || {}).await;
}

/// One stream of a [`ClientSession`]. Dropping it sends FIN.
pub struct ClientStream {
    session: Rc<Inner>,
    id: u32,
    slot: Rc<Slot>,
    finished: Cell<bool>,
}

impl ClientStream {
    /// The stream id.
    pub fn id(&self) -> u32 {
        self.id
    }

    /// Waits for the server's SYNACK (v2 servers only).
    pub async fn established(&self) -> Result<(), StreamError> {
        future::or(self.slot.synack_arrived.wait(), self.session.closed.wait()).await;
        self.slot
            .synack
            .borrow()
            .clone()
            .unwrap_or(Err(StreamError::SessionClosed))
    }

    /// Waits for [`ClientStream::established`] at most [`SYNACK_TIMEOUT`]. A v1
    /// server never answers SYNACK, so its streams count as open; a v2 server that
    /// does not answer is stuck, and its session is closed.
    pub async fn wait_established(&self) -> Result<(), StreamError> {
        match mux::timeout(SYNACK_TIMEOUT, self.established()).await {
            Some(result) => result,
            None if self.session.rules.borrow().server_version() < 2 => Ok(()),
            None => {
                self.session.close();
                Err(StreamError::SynAckTimeout)
            }
        }
    }

    /// Sends `data` to the target.
    pub async fn write_all(&self, data: &[u8]) -> io::Result<()> {
        if self.finished.get() {
            return Err(io::Error::new(io::ErrorKind::BrokenPipe, "stream closed"));
        }
        self.session
            .queue
            .push_data(self.id, data)
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "session closed"))
    }

    /// Reads what the target sent; 0 once the server sent FIN or the session ended.
    pub async fn read(&self, buf: &mut [u8]) -> usize {
        self.slot.incoming.read(buf).await
    }

    /// Reads until FIN, appending to `out`.
    pub async fn read_to_end(&self, out: &mut Vec<u8>) -> usize {
        let mut chunk = vec![0u8; 64 * 1024];
        let mut total = 0;
        loop {
            let n = self.read(&mut chunk).await;
            if n == 0 {
                return total;
            }
            out.extend_from_slice(&chunk[..n]);
            total += n;
        }
    }

    /// Sends FIN: the stream is closed both ways.
    pub fn close(&self) {
        if !self.finished.replace(true) {
            self.session.queue.push_frame(Command::Fin, self.id, &[]);
            self.session.rules.borrow_mut().close_stream(self.id);
            self.slot.incoming.abort();
        }
    }
}

impl Drop for ClientStream {
    fn drop(&mut self) {
        self.close();
    }
}
