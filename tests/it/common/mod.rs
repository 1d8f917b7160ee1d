//! Test harness: the real server binary on 127.0.0.1 with an ephemeral port, local
//! targets, and a glommio executor for the client side. Every loop is bounded.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anytls::client::ClientConfig;
use anytls::plumbing::timeout;
use anytls::proto::auth::{encode_preamble, PasswordHash};
use anytls::proto::frame::{self, Command as FrameCommand};
use anytls::proto::Settings;
use anytls::tls::{client_config, ServerVerification};
use futures_lite::{AsyncReadExt, AsyncWriteExt};
use glommio::{LocalExecutorBuilder, Placement};

pub const PASSWORD: &str = "test-password";

/// A port on 127.0.0.1 that was free a moment ago (for a child process to bind).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// An installed program (nginx, pebble): in `PATH`, `/usr/sbin` or `/usr/bin`.
pub fn installed(name: &str) -> Option<std::path::PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/usr/bin"].map(std::path::PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
}

/// The server binary running as a child process.
pub struct TestServer {
    child: Child,
    pub addr: SocketAddr,
    log: Arc<Mutex<Vec<String>>>,
    baseline_fds: usize,
}

impl TestServer {
    /// Starts the server with `--cores 1` and extra flags; waits until it listens.
    pub fn start(extra: &[&str]) -> TestServer {
        Self::start_on("127.0.0.1:0", extra)
    }

    /// Starts the server listening on `listen`.
    pub fn start_on(listen: &str, extra: &[&str]) -> TestServer {
        Self::spawn(
            Command::new(env!("CARGO_BIN_EXE_anytls-server")),
            listen,
            extra,
        )
    }

    /// Starts the server with its descriptor limit (soft and hard) at `limit`.
    pub fn start_with_descriptor_limit(limit: u32, extra: &[&str]) -> TestServer {
        let mut shell = Command::new("sh");
        shell.args([
            "-c",
            &format!("ulimit -n {limit} && exec \"$0\" \"$@\""),
            env!("CARGO_BIN_EXE_anytls-server"),
        ]);
        Self::spawn(shell, "127.0.0.1:0", extra)
    }

    /// Starts the server with exactly `args` (plus `--cores 1`): no listen
    /// address or password of the harness, for a config file to give them.
    pub fn start_args(args: &[&str]) -> TestServer {
        Self::spawn_with(Command::new(env!("CARGO_BIN_EXE_anytls-server")), &[], args)
    }

    fn spawn(command: Command, listen: &str, extra: &[&str]) -> TestServer {
        Self::spawn_with(command, &["-l", listen, "-p", PASSWORD], extra)
    }

    fn spawn_with(mut command: Command, harness: &[&str], extra: &[&str]) -> TestServer {
        let mut child = command
            .args(harness)
            .args(if extra.contains(&"--cores") {
                &[][..]
            } else {
                &["--cores", "1"][..]
            })
            .args(extra)
            .env(
                "RUST_LOG",
                std::env::var("SERVER_LOG").unwrap_or_else(|_| "debug".into()),
            )
            // Under systemd the self-signed identity is kept: not in tests.
            .env_remove("STATE_DIRECTORY")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("server binary starts");
        let (log, addr) = watch_log(&mut child, "listening on ");
        let mut server = TestServer {
            child,
            addr,
            log,
            baseline_fds: 0,
        };
        server.baseline_fds = server.fd_count();
        server
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn fd_count(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.child.id()))
            .map(|dir| dir.count())
            .unwrap_or(0)
    }

    /// Waits (at most 10 s) for the server's fd count to return to its start value.
    pub fn assert_fds_back_to_baseline(&self) {
        self.assert_fds_back_to_baseline_within(Duration::from_secs(10));
    }

    /// Waits (at most `limit`) for the server's fd count to return to its start value.
    pub fn assert_fds_back_to_baseline_within(&self, limit: Duration) {
        let deadline = Instant::now() + limit;
        let mut now = self.fd_count();
        while now != self.baseline_fds && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
            now = self.fd_count();
        }
        assert_eq!(
            now, self.baseline_fds,
            "server fds did not return to baseline"
        );
    }

    /// Resident memory of the server process, in KiB.
    pub fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap()
    }

    /// Every log line so far.
    pub fn log_lines(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }

    /// Whether any log line contains `needle`.
    pub fn logged(&self, needle: &str) -> bool {
        self.log.lock().unwrap().iter().any(|l| l.contains(needle))
    }

    /// Waits (at most `limit`) for a log line containing `needle`.
    pub fn wait_for_log(&self, needle: &str, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if self.logged(needle) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    pub fn client_config(&self) -> ClientConfig {
        client_config_for(self.addr)
    }

    /// Sends a signal and waits (at most `limit`) for the exit status.
    pub fn signal_and_wait(
        &mut self,
        signal: i32,
        limit: Duration,
    ) -> Option<std::process::ExitStatus> {
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(self.child.id() as i32, signal) };
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        None
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Collects a child's stderr lines and waits (20 s at most) for the address that
/// follows `marker` in one of them.
fn watch_log(child: &mut Child, marker: &'static str) -> (Arc<Mutex<Vec<String>>>, SocketAddr) {
    let stderr = child.stderr.take().unwrap();
    let log = Arc::new(Mutex::new(Vec::new()));
    let (addr_tx, addr_rx) = std::sync::mpsc::channel();
    let sink = log.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some(rest) = line.split(marker).nth(1) {
                let addr = rest.split_whitespace().next().unwrap().to_owned();
                let _ = addr_tx.send(addr);
            }
            sink.lock().unwrap().push(line);
        }
    });
    let Ok(addr) = addr_rx.recv_timeout(Duration::from_secs(20)) else {
        // Do not leave the process behind when the test fails here.
        let _ = child.kill();
        let _ = child.wait();
        panic!("process did not start: {:?}", log.lock().unwrap());
    };
    (log, addr.parse().unwrap())
}

/// The client binary (SOCKS5 inbound) running as a child process.
pub struct TestClient {
    child: Child,
    pub socks: SocketAddr,
    log: Arc<Mutex<Vec<String>>>,
}

impl TestClient {
    /// Starts `anytls-client` against `server` with `--insecure` and extra flags.
    pub fn start(server: SocketAddr, extra: &[&str]) -> TestClient {
        let server = server.to_string();
        Self::start_args(&[&["-s", &server, "--insecure"], extra].concat())
    }

    /// Starts `anytls-client` on 127.0.0.1:0 with exactly `args` besides.
    pub fn start_args(args: &[&str]) -> TestClient {
        let mut child = Command::new(env!("CARGO_BIN_EXE_anytls-client"))
            .args(["-l", "127.0.0.1:0"])
            .args(args)
            .env("RUST_LOG", "debug")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("client binary starts");
        let (log, socks) = watch_log(&mut child, "SOCKS5 and HTTP proxy listening on ");
        TestClient { child, socks, log }
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    /// Every log line so far.
    pub fn log_lines(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }
}

impl Drop for TestClient {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Opens a SOCKS5 CONNECT to `target` through `proxy`; returns the stream and the
/// reply code (0 = success).
pub fn socks_connect(proxy: SocketAddr, target: SocketAddr) -> (std::net::TcpStream, u8) {
    use std::io::{Read, Write};
    let mut conn = std::net::TcpStream::connect(proxy).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    conn.write_all(&[5, 1, 0]).unwrap();
    let mut method = [0u8; 2];
    conn.read_exact(&mut method).unwrap();
    assert_eq!(method, [5, 0]);
    let mut request = vec![5, 1, 0];
    anytls::proto::Address::Ip(target)
        .encode(&mut request)
        .unwrap();
    conn.write_all(&request).unwrap();
    let mut reply = [0u8; 10];
    conn.read_exact(&mut reply).unwrap();
    assert_eq!(reply[0], 5);
    (conn, reply[1])
}

/// Writes `message` and reads the same number of bytes back.
pub fn echo_through(conn: &mut std::net::TcpStream, message: &[u8]) -> Vec<u8> {
    use std::io::{Read, Write};
    conn.write_all(message).unwrap();
    let mut back = vec![0u8; message.len()];
    conn.read_exact(&mut back).unwrap();
    back
}

/// Writes `message` on a stream to an echo target and checks it comes back.
pub async fn stream_echoes(stream: &anytls::client::ClientStream, message: &[u8]) {
    stream.write_all(message).await.unwrap();
    let mut back = vec![0u8; message.len()];
    let mut got = 0;
    while got < back.len() {
        let n = stream.read(&mut back[got..]).await;
        assert!(n > 0, "the stream ended before its echo");
        got += n;
    }
    assert_eq!(back, message);
}

/// A client configuration (insecure TLS, the test password) for a server at `addr`.
pub fn client_config_for(addr: SocketAddr) -> ClientConfig {
    config_with(addr, PASSWORD)
}

/// A client configuration for `server` (certificate unchecked) with `password`.
pub fn config_with(server: SocketAddr, password: &str) -> ClientConfig {
    ClientConfig::new(
        server,
        "localhost",
        client_config(ServerVerification::Insecure),
        password,
    )
}

/// A session of `config` from the client address `source` (127.0.0.x).
pub async fn session_from(
    source: &str,
    config: &ClientConfig,
) -> std::io::Result<anytls::client::ClientSession> {
    use std::os::fd::{FromRawFd, IntoRawFd};
    let tcp = connect_from(source, config.server)?;
    tcp.set_nonblocking(true)?;
    // SAFETY: the descriptor was just taken out of a connected std TcpStream.
    let tcp = unsafe { glommio::net::TcpStream::from_raw_fd(tcp.into_raw_fd()) };
    Ok(anytls::client::ClientSession::connect_over(tcp, config).await?)
}

/// Runs `fut` on a fresh glommio executor on this thread.
pub fn run_local<T>(fut: impl std::future::Future<Output = T>) -> T {
    let _ = env_logger::builder().is_test(true).try_init();
    LocalExecutorBuilder::new(Placement::Unbound)
        .io_memory(64 * 1024)
        .make()
        .expect("client executor")
        .run(fut)
}

/// What a target does with a connection.
#[derive(Clone, Copy)]
pub enum TargetKind {
    /// Sends back everything it receives.
    Echo,
    /// Reads and discards until EOF.
    Sink,
    /// Accepts and never reads: a target slower than any client.
    Stalled,
    /// Writes bytes as fast as it can, forever.
    Source,
}

/// Starts a target on 127.0.0.1 served by its own executor thread.
pub fn spawn_target(kind: TargetKind) -> SocketAddr {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        run_local(async move {
            let listener = glommio::net::TcpListener::bind("127.0.0.1:0").unwrap();
            tx.send(listener.local_addr().unwrap()).unwrap();
            loop {
                let Ok(mut conn) = listener.accept().await else {
                    continue;
                };
                glommio::spawn_local(async move {
                    if let TargetKind::Stalled = kind {
                        glommio::timer::sleep(Duration::from_secs(3600)).await;
                    }
                    if let TargetKind::Source = kind {
                        let chunk = vec![0x55u8; 64 * 1024];
                        while conn.write_all(&chunk).await.is_ok() {}
                        return;
                    }
                    let mut buf = vec![0u8; 64 * 1024];
                    loop {
                        match conn.read(&mut buf).await {
                            Ok(0) | Err(_) => break,
                            Ok(n) => {
                                if let TargetKind::Echo = kind {
                                    if conn.write_all(&buf[..n]).await.is_err() {
                                        break;
                                    }
                                }
                            }
                        }
                    }
                })
                .detach();
            }
        })
    });
    rx.recv().unwrap()
}

/// A deterministic byte pattern for content checks.
pub fn pattern(offset: usize, len: usize) -> Vec<u8> {
    (offset..offset + len)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect()
}

/// One connection a [`RecordingTarget`] accepted.
pub struct ConnRecord {
    pub data: Mutex<Vec<u8>>,
    pub closed: std::sync::atomic::AtomicBool,
    stream: std::net::TcpStream,
}

/// An echo target that records every connection and the bytes it carried.
pub struct RecordingTarget {
    pub addr: SocketAddr,
    conns: Arc<Mutex<Vec<Arc<ConnRecord>>>>,
}

impl RecordingTarget {
    pub fn spawn() -> RecordingTarget {
        use std::io::{Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let conns: Arc<Mutex<Vec<Arc<ConnRecord>>>> = Arc::default();
        let registry = conns.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let record = Arc::new(ConnRecord {
                    data: Mutex::default(),
                    closed: Default::default(),
                    stream: stream.try_clone().unwrap(),
                });
                registry.lock().unwrap().push(record.clone());
                std::thread::spawn(move || {
                    let mut stream = stream;
                    let mut buf = [0u8; 4096];
                    loop {
                        match stream.read(&mut buf) {
                            Ok(0) | Err(_) => break,
                            Ok(n) => {
                                record.data.lock().unwrap().extend_from_slice(&buf[..n]);
                                if stream.write_all(&buf[..n]).is_err() {
                                    break;
                                }
                            }
                        }
                    }
                    record
                        .closed
                        .store(true, std::sync::atomic::Ordering::SeqCst);
                });
            }
        });
        RecordingTarget { addr, conns }
    }

    pub fn connections(&self) -> Vec<Arc<ConnRecord>> {
        self.conns.lock().unwrap().clone()
    }

    /// Connections still open.
    pub fn open(&self) -> usize {
        self.connections()
            .iter()
            .filter(|c| !c.closed.load(std::sync::atomic::Ordering::SeqCst))
            .count()
    }

    /// Closes every open connection that never received a byte (the pool's spares).
    pub fn close_unused(&self) {
        for conn in self.connections() {
            if conn.data.lock().unwrap().is_empty() {
                let _ = conn.stream.shutdown(std::net::Shutdown::Both);
            }
        }
    }

    /// Waits (at most `limit`) until `check` holds.
    pub fn wait_until(&self, limit: Duration, check: impl Fn(&RecordingTarget) -> bool) -> bool {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if check(self) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        check(self)
    }
}

/// The pool's counters, as its metrics report them.
#[derive(Debug, Default, PartialEq, Eq, Clone, Copy)]
pub struct PoolLine {
    pub total: u64,
    pub active: u64,
    pub reused: u64,
    pub new: u64,
    pub cleaned: u64,
}

impl TestServer {
    /// Where the server's metrics endpoint listens (started with `--metrics
    /// 127.0.0.1:0`; the address is found where the server announces it).
    pub fn metrics_addr(&self) -> SocketAddr {
        assert!(
            self.wait_for_log("metrics on http://", Duration::from_secs(5)),
            "the server was started with --metrics"
        );
        let line = self
            .log_lines()
            .into_iter()
            .find(|l| l.contains("metrics on http://"))
            .expect("metrics address logged");
        line.split("http://")
            .nth(1)
            .and_then(|rest| rest.split('/').next())
            .and_then(|addr| addr.parse().ok())
            .expect("an address")
    }

    /// One scrape of `/metrics`: the body.
    pub fn scrape(&self) -> String {
        use std::io::{Read, Write};
        let mut conn = std::net::TcpStream::connect(self.metrics_addr()).expect("metrics listen");
        conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        conn.write_all(b"GET /metrics HTTP/1.1\r\nHost: metrics\r\n\r\n")
            .unwrap();
        let mut response = String::new();
        conn.read_to_string(&mut response).unwrap();
        response
            .split_once("\r\n\r\n")
            .map(|(_, body)| body.to_owned())
            .unwrap_or_default()
    }

    /// The sum of a metric family's samples in one scrape (`family` without the
    /// `_total` a counter's samples carry); `None` if it has none.
    pub fn metric(&self, family: &str) -> Option<u64> {
        metric_in(&self.scrape(), family)
    }

    /// Waits (at most `limit`) until the metric `selector` (a family, with
    /// `{label="value"}` to pick one sample) satisfies `check`; its last value.
    pub fn wait_for_metric(
        &self,
        selector: &str,
        limit: Duration,
        check: impl Fn(u64) -> bool,
    ) -> Option<u64> {
        let deadline = Instant::now() + limit;
        loop {
            let value = metric_in(&self.scrape(), selector);
            if value.is_some_and(&check) || Instant::now() > deadline {
                return value;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Whether the metric `selector` satisfies `check` within 3 s.
    pub fn metric_reaches(&self, selector: &str, check: impl Fn(u64) -> bool) -> bool {
        self.wait_for_metric(selector, Duration::from_secs(3), &check)
            .is_some_and(check)
    }

    /// The pool's counters, from the metrics endpoint.
    pub fn pool_stats(&self) -> Option<PoolLine> {
        let body = self.scrape();
        let value = |family: &str| metric_in(&body, family);
        Some(PoolLine {
            total: value("anytls_pool_connections_opened")?,
            active: value("anytls_pool_active")?,
            reused: value("anytls_pool_reused")?,
            new: value("anytls_pool_new")?,
            cleaned: value("anytls_pool_cleaned")?,
        })
    }

    /// Waits (at most `limit`) for the pool's counters to satisfy `check`.
    pub fn wait_for_pool(&self, limit: Duration, check: impl Fn(&PoolLine) -> bool) -> PoolLine {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(stats) = self.pool_stats().filter(|s| check(s)) {
                return stats;
            }
            if Instant::now() > deadline {
                panic!("pool stats never matched; last: {:?}", self.pool_stats());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// The sum of the samples of `selector` in an OpenMetrics `body`: a family
/// (without a counter's `_total`), with `{label="value"}` to pick samples.
pub fn metric_in(body: &str, selector: &str) -> Option<u64> {
    let (family, labels) = match selector.split_once('{') {
        Some((family, labels)) => (family, labels.trim_end_matches('}')),
        None => (selector, ""),
    };
    let counter = format!("{family}_total");
    let samples: Vec<u64> = body
        .lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| {
            let (name, rest) = line.split_at(line.find(['{', ' '])?);
            let value = rest.rsplit(' ').next()?;
            ((name == family || name == counter) && rest.contains(labels))
                .then(|| value.parse::<f64>().ok())
                .flatten()
        })
        .map(|v| v as u64)
        .collect();
    (!samples.is_empty()).then(|| samples.iter().sum())
}

/// Waits (at most `limit`) on the current glommio executor until `check` holds,
/// without blocking the executor.
pub async fn eventually(limit: Duration, check: impl Fn() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if check() {
            return true;
        }
        glommio::timer::sleep(Duration::from_millis(10)).await;
    }
    check()
}

impl TestServer {
    /// Sends a signal to the server.
    pub fn signal(&mut self, signal: i32) {
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(self.child.id() as i32, signal) };
    }
}

/// A UDP echo on 127.0.0.1, served by its own thread, with a receive buffer large
/// enough for a burst (UDP drops what does not fit).
pub fn spawn_udp_echo() -> SocketAddr {
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    enlarge_receive_buffer(&socket);
    let addr = socket.local_addr().unwrap();
    std::thread::spawn(move || {
        let mut buf = [0u8; 65_536];
        while let Ok((n, from)) = socket.recv_from(&mut buf) {
            let _ = socket.send_to(&buf[..n], from);
        }
    });
    addr
}

/// Forces an 8 MiB receive buffer on a test's UDP socket (best effort).
pub fn enlarge_receive_buffer(socket: &std::net::UdpSocket) {
    let size: libc::c_int = 8 << 20;
    // SAFETY: setsockopt reads `size` for the duration of the call; the fd is ours.
    unsafe {
        use std::os::fd::AsRawFd;
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUFFORCE,
            (&size as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
    }
}

impl TestServer {
    /// Log lines so far (to look only at later ones with [`TestServer::wait_for_log_after`]).
    pub fn log_len(&self) -> usize {
        self.log.lock().unwrap().len()
    }

    /// Waits (at most `limit`) for a log line after the first `skip` lines that
    /// contains `needle`.
    pub fn wait_for_log_after(&self, skip: usize, needle: &str, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        loop {
            if self
                .log
                .lock()
                .unwrap()
                .iter()
                .skip(skip)
                .any(|l| l.contains(needle))
            {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl TestServer {
    /// Opens a session and has a heartbeat answered: the server is serving.
    pub fn assert_serves(&self) {
        let config = self.client_config();
        run_local(async move {
            anytls::client::ClientSession::connect(&config)
                .await
                .expect("session opens")
                .heartbeat()
                .await
                .expect("heartbeat answered");
        });
    }
}

// Raw sessions: frames written and read by hand, for what a well-behaved client
// never sends.

/// Reads frames from a raw TLS connection until `done` says stop, the connection
/// closes, or 10 s pass. Returns the frames seen (Waste frames dropped, as a client
/// drops them) and whether the connection closed.
pub async fn read_frames<R: futures_lite::AsyncRead + Unpin>(
    reader: &mut R,
    mut done: impl FnMut(&[(FrameCommand, u32, Vec<u8>)]) -> bool,
) -> (Vec<(FrameCommand, u32, Vec<u8>)>, bool) {
    let mut frames = Vec::new();
    let mut buf = Vec::new();
    let mut chunk = vec![0u8; 16 * 1024];
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        while let Some(f) = frame::decode(&buf) {
            let used = f.wire_len();
            // The server pads its first writes with Waste frames; a client drops them.
            if f.cmd != FrameCommand::Waste {
                frames.push((f.cmd, f.stream_id, f.data.to_vec()));
            }
            buf.drain(..used);
        }
        if done(&frames) {
            return (frames, false);
        }
        let left = deadline.saturating_duration_since(Instant::now());
        match timeout(left, reader.read(&mut chunk)).await {
            None => panic!("timed out waiting for frames; got {frames:?}"),
            Some(Ok(0)) | Some(Err(_)) => return (frames, true),
            Some(Ok(n)) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

pub fn preamble(password: &str) -> Vec<u8> {
    let mut out = Vec::new();
    encode_preamble(&PasswordHash::of(password), 30, &mut out);
    out
}

pub fn settings_frame(md5: &str) -> Vec<u8> {
    let mut out = Vec::new();
    let settings = Settings::client("test/1", md5);
    frame::encode(FrameCommand::Settings, 0, &settings.encode(), &mut out).unwrap();
    out
}

pub fn default_md5() -> String {
    anytls::proto::PaddingScheme::default().md5_hex().to_owned()
}

/// A listener whose accept queue is full, so the kernel drops further SYNs and a
/// dial to it hangs as to a silent host. Keep the returned sockets alive.
pub fn silent_target() -> (socket2::Socket, Vec<socket2::Socket>, SocketAddr) {
    use socket2::{Domain, Socket, Type};
    let listener = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    listener
        .bind(&"127.0.0.1:0".parse::<SocketAddr>().unwrap().into())
        .unwrap();
    listener.listen(0).unwrap();
    let addr = listener.local_addr().unwrap().as_socket().unwrap();
    // Backlog 0 still admits one or two: fill it.
    let fillers = (0..4)
        .map(|_| {
            let s = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
            s.set_nonblocking(true).unwrap();
            let _ = s.connect(&addr.into());
            s
        })
        .collect();
    std::thread::sleep(Duration::from_millis(200));
    (listener, fillers, addr)
}

/// The state (as /proc/net/tcp writes it: 01 ESTABLISHED, 04 FIN_WAIT1, ...) of the
/// IPv4 TCP socket bound to `local`, owned by a process or orphaned; `None` once
/// the kernel holds no such socket.
pub fn tcp_socket_state(local: SocketAddr) -> Option<u8> {
    tcp_socket(local).map(|(state, _)| state)
}

/// Bytes the IPv4 TCP socket bound to `local` has sent or queued and its peer
/// has not acknowledged (0 once there is no such socket).
pub fn tcp_send_queue(local: SocketAddr) -> usize {
    tcp_socket(local).map_or(0, |(_, queued)| queued)
}

/// State and send queue of the socket bound to `local`, from /proc/net/tcp.
fn tcp_socket(local: SocketAddr) -> Option<(u8, usize)> {
    proc_net_socket("/proc/net/tcp", local).map(|(state, tx, _)| (state, tx))
}

/// Bytes waiting in the receive queue of the IPv4 UDP socket on `local`'s port,
/// bound to `local`'s address or to the wildcard (0 once there is none).
pub fn udp_receive_queue(local: SocketAddr) -> usize {
    let any = SocketAddr::new(std::net::Ipv4Addr::UNSPECIFIED.into(), local.port());
    proc_net_socket("/proc/net/udp", local)
        .or_else(|| proc_net_socket("/proc/net/udp", any))
        .map_or(0, |(_, _, rx)| rx)
}

/// State, send queue and receive queue of the IPv4 socket bound to `local` in
/// one of /proc/net's tables.
fn proc_net_socket(table: &str, local: SocketAddr) -> Option<(u8, usize, usize)> {
    proc_net_socket_to(table, local, None)
}

/// As [`tcp_socket_state`], for the socket from `local` to `remote` only (a
/// socket that reuses the port after ours is gone is someone else's).
pub fn tcp_socket_state_to(local: SocketAddr, remote: SocketAddr) -> Option<u8> {
    proc_net_socket_to("/proc/net/tcp", local, Some(remote)).map(|(state, _, _)| state)
}

/// `/proc/net/tcp`'s form of an IPv4 socket address.
fn proc_net_address(addr: SocketAddr) -> Option<String> {
    let SocketAddr::V4(v4) = addr else {
        return None;
    };
    Some(format!(
        "{:08X}:{:04X}",
        u32::from_le_bytes(v4.ip().octets()),
        v4.port()
    ))
}

fn proc_net_socket_to(
    table: &str,
    local: SocketAddr,
    remote: Option<SocketAddr>,
) -> Option<(u8, usize, usize)> {
    let wanted = proc_net_address(local)?;
    let wanted_remote = match remote {
        Some(remote) => Some(proc_net_address(remote)?),
        None => None,
    };
    let table = std::fs::read_to_string(table).unwrap_or_default();
    table.lines().skip(1).find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.get(1) != Some(&wanted.as_str()) {
            return None;
        }
        if wanted_remote
            .as_deref()
            .is_some_and(|r| fields.get(2) != Some(&r))
        {
            return None;
        }
        let state = u8::from_str_radix(fields.get(3)?, 16).ok()?;
        let (tx, rx) = fields.get(4)?.split_once(':')?;
        let queue = |hex| usize::from_str_radix(hex, 16).ok();
        Some((state, queue(tx)?, queue(rx)?))
    })
}

/// A UDP target that answers every datagram with `replies` datagrams of `size`
/// bytes, and records the address each came from.
pub fn udp_blaster(replies: usize, size: usize) -> (SocketAddr, Arc<Mutex<Vec<SocketAddr>>>) {
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = socket.local_addr().unwrap();
    let sources = Arc::new(Mutex::new(Vec::new()));
    let seen = sources.clone();
    std::thread::spawn(move || {
        let mut buf = [0u8; 2048];
        let reply = vec![0x5au8; size];
        while let Ok((_, from)) = socket.recv_from(&mut buf) {
            seen.lock().unwrap().push(from);
            for _ in 0..replies {
                let _ = socket.send_to(&reply, from);
            }
        }
    });
    (addr, sources)
}

/// A target that accepts and never reads (its receive buffer a few KiB), so what
/// is sent to it stays in the sender's kernel queue. Returns its address and the
/// peer address of every connection it accepted.
pub fn never_reading_target() -> (SocketAddr, Arc<Mutex<Vec<SocketAddr>>>) {
    use socket2::{Domain, Socket, Type};
    let listener = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    listener.set_recv_buffer_size(4096).unwrap();
    listener
        .bind(&"127.0.0.1:0".parse::<SocketAddr>().unwrap().into())
        .unwrap();
    listener.listen(64).unwrap();
    let addr = listener.local_addr().unwrap().as_socket().unwrap();
    let peers = Arc::new(Mutex::new(Vec::new()));
    let seen = peers.clone();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        while let Ok((conn, peer)) = listener.accept() {
            seen.lock().unwrap().push(peer.as_socket().unwrap());
            held.push(conn);
        }
    });
    (addr, peers)
}

/// A TCP connection to `server` from `source` (any port), e.g. 127.0.1.7 to count
/// in another subnet than 127.0.0.1.
pub fn connect_from(source: &str, server: SocketAddr) -> std::io::Result<std::net::TcpStream> {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None)?;
    socket.bind(&format!("{source}:0").parse::<SocketAddr>().unwrap().into())?;
    socket.connect(&server.into())?;
    Ok(socket.into())
}

/// Opens `n` streams to `target` on `session`; returns those established and the
/// refusal texts of the others.
pub async fn open_many(
    session: &anytls::client::ClientSession,
    target: SocketAddr,
    n: usize,
) -> (Vec<anytls::client::ClientStream>, Vec<String>) {
    use anytls::client::StreamError;
    let (mut open, mut refused) = (Vec::new(), Vec::new());
    for _ in 0..n {
        let stream = session
            .open_stream(&anytls::proto::Address::Ip(target))
            .unwrap();
        match timeout(Duration::from_secs(5), stream.established()).await {
            Some(Ok(())) => open.push(stream),
            Some(Err(StreamError::Refused(text))) => refused.push(text),
            other => panic!("stream neither established nor refused: {other:?}"),
        }
    }
    (open, refused)
}

/// Sends UDP ASSOCIATE (client address all zeros) through `proxy`; returns the
/// control connection and the relay address from the reply.
pub fn udp_associate(proxy: SocketAddr) -> (std::net::TcpStream, SocketAddr) {
    use std::io::{Read, Write};
    let mut control = std::net::TcpStream::connect(proxy).unwrap();
    control
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    control.write_all(&[5, 1, 0]).unwrap();
    let mut method = [0u8; 2];
    control.read_exact(&mut method).unwrap();
    assert_eq!(method, [5, 0]);
    control.write_all(&[5, 3, 0, 1, 0, 0, 0, 0, 0, 0]).unwrap();
    let mut reply = [0u8; 10];
    control.read_exact(&mut reply).unwrap();
    assert_eq!(reply[..4], [5, 0, 0, 1], "success with an IPv4 BND.ADDR");
    let relay = match anytls::proto::Address::decode(&reply[3..]).unwrap() {
        Some((anytls::proto::Address::Ip(addr), 7)) => addr,
        other => panic!("bad BND address {other:?}"),
    };
    assert_eq!(
        relay.ip(),
        proxy.ip(),
        "bound on the control connection's IP"
    );
    assert_ne!(relay.port(), 0);
    (control, relay)
}

/// The application's socket: 127.0.0.1, a large receive buffer, reads bounded.
pub fn app_socket() -> std::net::UdpSocket {
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    enlarge_receive_buffer(&socket);
    socket
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    socket
}

pub fn socks_datagram(destination: &anytls::proto::Address, payload: &[u8]) -> Vec<u8> {
    let mut datagram = Vec::new();
    anytls::client::socks5::encode_udp_header(destination, &mut datagram).unwrap();
    datagram.extend_from_slice(payload);
    datagram
}

/// Receives one SOCKS datagram from the relay: its source address and payload.
pub fn receive(app: &std::net::UdpSocket, relay: SocketAddr) -> (anytls::proto::Address, Vec<u8>) {
    let mut buf = [0u8; 65_536];
    let (n, from) = loop {
        match app.recv_from(&mut buf) {
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            received => break received.expect("a reply datagram"),
        }
    };
    assert_eq!(from, relay, "replies come from the relay address");
    let datagram = anytls::client::socks5::parse_udp_datagram(&buf[..n]).unwrap();
    assert_eq!(buf[..3], [0, 0, 0]);
    (datagram.address, datagram.payload.to_vec())
}
