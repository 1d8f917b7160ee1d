//! One client session: a task reading frames and a padded, coalescing writer,
//! with stream handles for the caller.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::ops::ControlFlow;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_lite::{future, AsyncRead, AsyncWriteExt};
use futures_rustls::client::TlsStream;
use glommio::net::TcpStream;
use log::debug;
use rand::rngs::SmallRng;
use rand::SeedableRng;
use rustls::pki_types::ServerName;

use crate::plumbing::{
    self, timeout, Event, Padder, Pipe, ReadBuffer, SharedScheme, Signal, WriteQueue,
};
use crate::proto::auth::{encode_preamble, PasswordHash};
pub use crate::proto::client_session::SYNACK_TIMEOUT;
use crate::proto::client_session::{self, Action, Close};
use crate::proto::frame::Frame;
use crate::proto::session::Delivery;
use crate::proto::{Address, PaddingScheme};

/// Server->client bytes buffered per stream before the session stops reading.
const STREAM_RECEIVE_LIMIT: usize = 256 * 1024;
const READ_CHUNK: usize = 16 * 1024;

/// How long reaching the server may take, TCP and TLS together, unless the
/// configuration says otherwise.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a session to the server could not be had, in the words the client logs.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// TCP to the server failed.
    #[error("cannot reach the AnyTLS server {server}: {source}")]
    Unreachable {
        /// The server's address.
        server: SocketAddr,
        /// Why.
        source: io::Error,
    },
    /// TCP and TLS did not complete in time.
    #[error("timed out reaching the AnyTLS server {server} ({after:?} without a TLS session)")]
    TimedOut {
        /// The server's address.
        server: SocketAddr,
        /// The limit.
        after: Duration,
    },
    /// The TLS handshake failed: the certificate, most often.
    #[error("TLS with the AnyTLS server {server} failed, checking the name {name}: {source}")]
    Tls {
        /// The server's address.
        server: SocketAddr,
        /// The name the certificate was checked against.
        name: String,
        /// Why.
        source: io::Error,
    },
    /// Writing the authentication failed.
    #[error("the AnyTLS server {server} closed the connection during authentication: {source}")]
    Authentication {
        /// The server's address.
        server: SocketAddr,
        /// Why.
        source: io::Error,
    },
}

impl From<ConnectError> for io::Error {
    fn from(e: ConnectError) -> io::Error {
        let kind = match &e {
            ConnectError::Unreachable { source, .. }
            | ConnectError::Tls { source, .. }
            | ConnectError::Authentication { source, .. } => source.kind(),
            ConnectError::TimedOut { .. } => io::ErrorKind::TimedOut,
        };
        io::Error::new(kind, e)
    }
}

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
    /// How long TCP and TLS to the server may take together.
    pub connect_timeout: Duration,
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
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
        }
    }
}

/// Connects TCP and completes the TLS handshake, nothing more, within the
/// configuration's connect timeout.
pub async fn connect_tls(
    config: &ClientConfig,
) -> Result<TlsStream<plumbing::Transport>, ConnectError> {
    let connect = async {
        let tcp =
            TcpStream::connect(config.server)
                .await
                .map_err(|e| ConnectError::Unreachable {
                    server: config.server,
                    source: e.into(),
                })?;
        tls_over(tcp, config).await
    };
    within_connect_timeout(config, connect).await
}

/// Runs `reach` (TCP and TLS to the server) within the configuration's connect
/// timeout.
async fn within_connect_timeout<T>(
    config: &ClientConfig,
    reach: impl std::future::Future<Output = Result<T, ConnectError>>,
) -> Result<T, ConnectError> {
    timeout(config.connect_timeout, reach)
        .await
        .unwrap_or(Err(ConnectError::TimedOut {
            server: config.server,
            after: config.connect_timeout,
        }))
}

/// Completes the TLS handshake over a TCP connection already made to the server.
async fn tls_over(
    tcp: TcpStream,
    config: &ClientConfig,
) -> Result<TlsStream<plumbing::Transport>, ConnectError> {
    let failed = |source: io::Error| ConnectError::Tls {
        server: config.server,
        name: name_text(&config.server_name),
        source,
    };
    tcp.set_nodelay(true).map_err(|e| failed(e.into()))?;
    futures_rustls::TlsConnector::from(config.tls.clone())
        .connect(config.server_name.clone(), plumbing::Transport::new(tcp))
        .await
        .map_err(failed)
}

/// A server name as the certificate check saw it.
fn name_text(name: &ServerName<'_>) -> String {
    match name {
        ServerName::DnsName(dns) => dns.as_ref().to_owned(),
        ServerName::IpAddress(ip) => std::net::IpAddr::from(*ip).to_string(),
        other => format!("{other:?}"),
    }
}

/// Why a stream did not open.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StreamError {
    /// The server answered SYNACK with this error text.
    #[error("server refused the stream: {0}")]
    Refused(String),
    /// The session ended first.
    #[error("the session to the AnyTLS server closed before it answered the stream")]
    SessionClosed,
    /// The session ended before the server sent a single AnyTLS frame: a server
    /// that does not take the password closes it, or answers as its fallback site.
    #[error("the server closed the session right after authentication without an AnyTLS answer (likely a wrong password)")]
    NotAnswered,
    /// A v2 server sent no SYNACK within [`SYNACK_TIMEOUT`]: the session is stuck
    /// and was closed.
    #[error("no SYNACK within {SYNACK_TIMEOUT:?}; session closed")]
    SynAckTimeout,
}

struct Slot {
    incoming: Pipe,
    synack: RefCell<Option<Result<(), StreamError>>>,
    synack_arrived: Event,
}

struct Inner {
    queue: WriteQueue,
    /// Every rule of the session (borrowed only between awaits).
    machine: RefCell<client_session::ClientSession>,
    /// The driver's part of each open stream.
    slots: RefCell<HashMap<u32, Rc<Slot>>>,
    /// Wakes the timer loop when the next deadline moved earlier.
    rearm: Signal,
    /// The deadline the timer loop sleeps until.
    armed: Cell<Option<Instant>>,
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
    pub async fn connect(config: &ClientConfig) -> Result<ClientSession, ConnectError> {
        Self::authenticate(connect_tls(config).await?, config).await
    }

    /// As [`ClientSession::connect`], over a TCP connection the caller made to
    /// `config.server` (from an address of its choosing, say).
    pub async fn connect_over(
        tcp: TcpStream,
        config: &ClientConfig,
    ) -> Result<ClientSession, ConnectError> {
        let tls = within_connect_timeout(config, tls_over(tcp, config)).await?;
        Self::authenticate(tls, config).await
    }

    /// Sends the preamble over `tls` and starts the session.
    async fn authenticate(
        mut tls: TlsStream<plumbing::Transport>,
        config: &ClientConfig,
    ) -> Result<ClientSession, ConnectError> {
        let scheme = config.padding.borrow().clone();
        let mut preamble = Vec::new();
        let padding0 = scheme.preamble_padding(&mut SmallRng::from_entropy());
        encode_preamble(&config.password, padding0, &mut preamble);
        let sent = async {
            tls.write_all(&preamble).await?;
            tls.flush().await
        };
        sent.await.map_err(|source| ConnectError::Authentication {
            server: config.server,
            source,
        })?;
        let machine = client_session::ClientSession::new(
            &config.client_name,
            scheme.md5_hex(),
            Instant::now(),
        );
        let inner = Rc::new(Inner {
            queue: WriteQueue::default(),
            machine: RefCell::new(machine),
            slots: RefCell::default(),
            rearm: Signal::default(),
            armed: Cell::new(None),
            alert: RefCell::new(None),
            padding: config.padding.clone(),
            started: Event::default(),
            closed: Event::default(),
            pong: RefCell::new(Rc::new(Event::default())),
        });
        // Settings are queued now and leave with the first stream.
        inner.carry_out();
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
        let id = inner
            .machine
            .borrow_mut()
            .open_stream(target, Instant::now())
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        inner.slots.borrow_mut().insert(id, slot.clone());
        inner.carry_out();
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
        self.inner.machine.borrow_mut().heartbeat();
        self.inner.carry_out();
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
        self.inner.machine.borrow().server_version()
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
        self.inner.machine.borrow().open_streams()
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
        self.machine.borrow_mut().end();
        let why = if self.machine.borrow().answered() {
            StreamError::SessionClosed
        } else {
            StreamError::NotAnswered
        };
        let slots: Vec<_> = self.slots.borrow_mut().drain().collect();
        for (_, slot) in slots {
            slot.incoming.abort();
            slot.resolve(Err(why.clone()));
        }
    }

    /// One server frame: its data goes to its stream, the rest to the machine.
    async fn handle_frame(&self, frame: Frame<'_>) -> ControlFlow<()> {
        log::trace!(
            "client <- {:?} sid {} len {}",
            frame.cmd,
            frame.stream_id,
            frame.data.len()
        );
        let delivery = self
            .machine
            .borrow_mut()
            .handle_frame(frame, Instant::now());
        if let Some(Delivery { id, data }) = delivery {
            let slot = self.slots.borrow().get(&id).cloned();
            if let Some(slot) = slot {
                let _ = slot.incoming.push(data).await;
            }
        }
        self.carry_out();
        if self.closed.is_set() {
            return ControlFlow::Break(());
        }
        ControlFlow::Continue(())
    }

    /// Carries out the machine's actions, and re-arms the timer loop if its next
    /// deadline moved earlier.
    fn carry_out(&self) {
        loop {
            let action = self.machine.borrow_mut().poll_action();
            let Some(action) = action else { break };
            match action {
                Action::Send(command, id, data) => {
                    self.queue.push_frame(command, id, &data);
                }
                Action::Established(id) => self.resolve(id, Ok(())),
                Action::Refused(id, reason) => self.resolve(id, Err(StreamError::Refused(reason))),
                Action::Finished(id) => {
                    if let Some(slot) = self.slots.borrow_mut().remove(&id) {
                        slot.incoming.finish();
                        slot.resolve(Err(StreamError::SessionClosed));
                    }
                }
                Action::NewPaddingScheme(scheme) => {
                    *self.padding.borrow_mut() = Arc::new(scheme);
                }
                Action::PaddingSchemeRefused(why) => {
                    log::warn!("the server's new padding scheme is refused, the session keeps its own: {why}");
                }
                Action::HeartbeatAnswered => {
                    let pong = self.pong.replace(Rc::new(Event::default()));
                    pong.set();
                }
                Action::Close(Close::Alert(text)) => {
                    debug!("server alert: {text}");
                    *self.alert.borrow_mut() = Some(text);
                    self.close();
                }
                Action::Close(Close::SynAckTimeout(id)) => {
                    debug!("stream {id}: no SYNACK within {SYNACK_TIMEOUT:?}; session closed");
                    self.resolve(id, Err(StreamError::SynAckTimeout));
                    self.close();
                }
            }
        }
        let next = self.machine.borrow().poll_timeout();
        if next.is_some_and(|next| self.armed.get().is_none_or(|armed| next < armed)) {
            self.rearm.notify();
        }
    }

    fn resolve(&self, id: u32, result: Result<(), StreamError>) {
        if let Some(slot) = self.slots.borrow().get(&id) {
            slot.resolve(result);
        }
    }

    /// Sleeps until the machine's next deadline (or until it moves earlier) and
    /// tells the machine the time.
    async fn timer_loop(&self) {
        loop {
            let deadline = self.machine.borrow().poll_timeout();
            self.armed.set(deadline);
            match deadline {
                Some(deadline) => {
                    let sleep =
                        glommio::timer::sleep(deadline.saturating_duration_since(Instant::now()));
                    future::or(sleep, self.rearm.wait()).await;
                }
                None => self.rearm.wait().await,
            }
            self.machine.borrow_mut().handle_timeout(Instant::now());
            self.carry_out();
        }
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

async fn run(inner: Rc<Inner>, tls: TlsStream<plumbing::Transport>) {
    let (reader, writer) = plumbing::split(tls);
    let reading = read_loop(&inner, reader);
    let writing = async {
        inner.started.wait().await;
        let mut padder = Padder::new(inner.padding.clone());
        if let Err(e) = plumbing::write_loop(writer, &inner.queue, Some(&mut padder)).await {
            debug!("client session write failed: {e}");
        }
    };
    future::or(
        future::or(reading, writing),
        future::or(inner.closed.wait(), inner.timer_loop()),
    )
    .await;
    inner.close();
}

async fn read_loop<R: AsyncRead + Unpin>(inner: &Inner, mut reader: R) {
    let mut buf = ReadBuffer::new(READ_CHUNK);
    let handle = async |frame: Frame<'_>| inner.handle_frame(frame).await;
    plumbing::read_frames(&mut reader, &mut buf, handle, || {}).await;
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

    /// Waits for the server's SYNACK. A v2 server that does not answer within
    /// [`SYNACK_TIMEOUT`] is stuck, and its session is closed; a v1 server never
    /// answers, so its streams count as open then.
    pub async fn established(&self) -> Result<(), StreamError> {
        future::or(self.slot.synack_arrived.wait(), self.session.closed.wait()).await;
        self.slot
            .synack
            .borrow()
            .clone()
            .unwrap_or(Err(StreamError::SessionClosed))
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
            self.session.machine.borrow_mut().close_stream(self.id);
            self.session.slots.borrow_mut().remove(&self.id);
            self.session.carry_out();
            self.slot.incoming.abort();
        }
    }
}

impl Drop for ClientStream {
    fn drop(&mut self) {
        self.close();
    }
}
