//! Node mode against a panel in its own process (`anytls-bench panel`, the
//! stand-in for Xboard's UniProxy API), over real sockets and TLS on 127.0.0.1:
//! users who come and go while clients are connected, traffic reported byte for
//! byte across a panel outage and a restart, speed and device limits, routes, a
//! padding scheme reaching the reference client, and a panel that refuses,
//! vanishes, answers garbage or lists 100,000 users.
//!
//! The panel binary is built by `cargo test --workspace` (it belongs to the
//! bench package) and found beside anytls-server.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::common::*;
use anytls::client::{ClientConfig, ClientSession, StreamError};
use anytls::plumbing::timeout;
use anytls::proto::Address;
use anytls::tls::{client_config, ServerVerification};
use serde_json::{json, Value};

const TOKEN: &str = "node-test-token";

/// Held by the tests that move the most bytes or users, so that on a small
/// machine they do not run at once and measure each other.
static HEAVY: Mutex<()> = Mutex::new(());

fn heavy() -> std::sync::MutexGuard<'static, ()> {
    HEAVY
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// anytls-bench, beside anytls-server.
fn bench_binary() -> PathBuf {
    let path = Path::new(env!("CARGO_BIN_EXE_anytls-server")).with_file_name("anytls-bench");
    assert!(
        path.exists(),
        "{} is missing: build it with `cargo build -p anytls-bench` (`cargo test --workspace` does)",
        path.display()
    );
    path
}

/// A fresh directory for one test's files.
fn scratch(name: &str) -> PathBuf {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!(
        "anytls-node-{}-{name}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Writes `path` as an operator's tool would: a temporary file, then rename.
fn replace_file(path: &Path, text: &str) {
    let temporary = path.with_extension("tmp");
    std::fs::write(&temporary, text).unwrap();
    std::fs::rename(&temporary, path).unwrap();
}

/// The stand-in panel, killed when dropped.
struct Panel {
    child: Child,
    url: String,
    dir: PathBuf,
    agent: ureq::Agent,
}

impl Panel {
    /// A panel serving `users` (`id:uuid[:mbps[:devices]]` lines) with `config`
    /// over its defaults, on `listen`.
    fn start_on(listen: &str, dir: &Path, users: &str, config: Value) -> Panel {
        replace_file(&dir.join("users"), users);
        replace_file(&dir.join("config.json"), &config.to_string());
        let mut child = Command::new(bench_binary())
            .args(["panel", "--listen", listen, "--token", TOKEN])
            .arg("--users")
            .arg(dir.join("users"))
            .arg("--node-config")
            .arg(dir.join("config.json"))
            .args(["--push-interval", "1", "--pull-interval", "1"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("anytls-bench panel starts");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let url = line
            .trim()
            .strip_prefix("panel listening on ")
            .unwrap_or_else(|| panic!("panel did not start: {line:?}"))
            .to_owned();
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(10)))
            .build()
            .into();
        Panel {
            child,
            url,
            dir: dir.to_owned(),
            agent,
        }
    }

    fn start(dir: &Path, users: &str, config: Value) -> Panel {
        Self::start_on("127.0.0.1:0", dir, users, config)
    }

    fn set_users(&self, users: &str) {
        replace_file(&self.dir.join("users"), users);
    }

    fn set_config(&self, config: Value) {
        replace_file(&self.dir.join("config.json"), &config.to_string());
    }

    fn get(&self, path: &str) -> Value {
        let mut answer = self
            .agent
            .get(format!("{}{path}", self.url))
            .call()
            .unwrap();
        serde_json::from_slice(&answer.body_mut().read_to_vec().unwrap()).unwrap()
    }

    fn post(&self, path: &str, body: &str) -> u16 {
        self.agent
            .post(format!("{}{path}", self.url))
            .send(body)
            .unwrap()
            .status()
            .as_u16()
    }

    /// Bytes `[up, down]` per user id the panel accepted.
    fn traffic(&self) -> BTreeMap<String, [u64; 2]> {
        serde_json::from_value(self.get("/admin/traffic")["traffic"].clone()).unwrap()
    }

    fn outage(&self, seconds: u64, mode: &str, only: Option<&str>) {
        let only = only.map_or(String::new(), |e| format!("&only={e}"));
        let status = self.post(
            &format!("/admin/outage?seconds={seconds}&mode={mode}{only}"),
            "",
        );
        assert_eq!(status, 200);
    }

    /// Waits until the accepted traffic equals `expected`; the last seen.
    fn wait_for_traffic(
        &self,
        expected: &BTreeMap<String, [u64; 2]>,
        limit: Duration,
    ) -> BTreeMap<String, [u64; 2]> {
        let deadline = Instant::now() + limit;
        loop {
            let seen = self.traffic();
            if &seen == expected || Instant::now() > deadline {
                return seen;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Panel {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The node's config at the panel: its port and one-second intervals.
fn node_config(port: u16) -> Value {
    json!({"server_port": port, "base_config": {"push_interval": 1, "pull_interval": 1}})
}

/// anytls-server in node mode for `panel`, its state in `dir`.
fn start_node(panel: &Panel, dir: &Path, extra: &[&str]) -> TestServer {
    let state = dir.join("state.json");
    let state = state.to_str().unwrap();
    let args = [
        &[
            "-l",
            "127.0.0.1:0",
            "--panel-url",
            &panel.url,
            "--panel-token",
            TOKEN,
            "--node-id",
            "1",
            "--panel-state-file",
            state,
        ][..],
        extra,
    ]
    .concat();
    TestServer::start_args(&args)
}

/// A node process that may never listen, with its log.
struct Unstarted {
    child: Child,
    log: Arc<Mutex<Vec<String>>>,
}

impl Unstarted {
    fn spawn(args: &[&str]) -> Unstarted {
        let mut child = Command::new(env!("CARGO_BIN_EXE_anytls-server"))
            .env_remove("STATE_DIRECTORY")
            .args(args)
            .args(["--cores", "1"])
            .env("RUST_LOG", "debug")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                sink.lock().unwrap().push(line);
            }
        });
        Unstarted { child, log }
    }

    fn wait_for_log(&self, needle: &str, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if self.log.lock().unwrap().iter().any(|l| l.contains(needle)) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }

    fn count(&self, needle: &str) -> usize {
        self.log
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.contains(needle))
            .count()
    }
}

impl Drop for Unstarted {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn user(server: SocketAddr, uuid: &str) -> ClientConfig {
    ClientConfig::new(
        server,
        "localhost",
        client_config(ServerVerification::Insecure),
        uuid,
    )
}

/// Whether a stream to `target` opens on `session` (false: refused, or the
/// session was closed by the server).
async fn opens(session: &ClientSession, target: SocketAddr) -> Result<(), StreamError> {
    let stream = session
        .open_stream(&Address::Ip(target))
        .map_err(|_| StreamError::SessionClosed)?;
    match timeout(Duration::from_secs(5), stream.established()).await {
        Some(result) => result,
        None => Err(StreamError::SessionClosed),
    }
}

#[test]
fn users_come_and_go_while_clients_are_connected() {
    let dir = scratch("users");
    let port = free_port();
    let panel = Panel::start(&dir, "1:uuid-one\n2:uuid-two\n", node_config(port));
    let node = start_node(&panel, &dir, &[]);
    assert_eq!(node.addr.port(), port, "the panel's server_port is served");
    let echo = spawn_target(TargetKind::Echo);
    run_local(async {
        let one = ClientSession::connect(&user(node.addr, "uuid-one"))
            .await
            .unwrap();
        let two = ClientSession::connect(&user(node.addr, "uuid-two"))
            .await
            .unwrap();
        for session in [&one, &two] {
            let stream = session.open_stream(&Address::Ip(echo)).unwrap();
            stream_echoes(&stream, b"before").await;
        }
        // User 2 is removed, user 3 added; one pull (1 s) plus the session
        // watchdog (at most 5 s here) later, 2's session is gone.
        let changed = Instant::now();
        panel.set_users("1:uuid-one\n3:uuid-three\n");
        assert!(
            eventually(Duration::from_secs(10), || two.is_closed()).await,
            "the removed user's session still open"
        );
        println!(
            "removed user's session closed {:?} after the panel changed",
            changed.elapsed()
        );
        assert!(!one.is_closed(), "the other user's session goes on");
        let stream = one.open_stream(&Address::Ip(echo)).unwrap();
        stream_echoes(&stream, b"after").await;
        let three = ClientSession::connect(&user(node.addr, "uuid-three"))
            .await
            .unwrap();
        let stream = three.open_stream(&Address::Ip(echo)).unwrap();
        stream_echoes(&stream, b"new user").await;
        let again = ClientSession::connect(&user(node.addr, "uuid-two"))
            .await
            .unwrap();
        assert!(
            opens(&again, echo).await.is_err(),
            "a removed user cannot log in"
        );
    });
    assert!(node.logged("1 added, 1 removed"), "{:?}", node.log_lines());
}

/// Sends `up` bytes on a stream to `target` and reads until `down` came back.
async fn relay(session: &ClientSession, target: SocketAddr, up: usize, down: usize) {
    let stream = session.open_stream(&Address::Ip(target)).unwrap();
    stream.established().await.unwrap();
    stream.write_all(&pattern(0, up)).await.unwrap();
    let mut got = 0;
    let mut buf = vec![0u8; 64 * 1024];
    while got < down {
        let n = stream.read(&mut buf).await;
        assert!(n > 0, "stream ended after {got} of {down} bytes");
        got += n;
    }
    assert_eq!(got, down);
    stream.close();
}

/// One session of user `uuid` sends `bytes` to the `echo` target and reads them back.
fn echo_as(server: SocketAddr, uuid: &str, echo: SocketAddr, bytes: usize) {
    run_local(async {
        let session = ClientSession::connect(&user(server, uuid)).await.unwrap();
        relay(&session, echo, bytes, bytes).await;
    });
}

/// A target that counts what it reads and discards it.
fn counting_sink() -> (SocketAddr, Arc<AtomicU64>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let count = Arc::new(AtomicU64::new(0));
    let total = count.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            let total = total.clone();
            std::thread::spawn(move || {
                let mut buf = vec![0u8; 64 * 1024];
                while let Ok(n) = conn.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    total.fetch_add(n as u64, Ordering::Relaxed);
                }
            });
        }
    });
    (addr, count)
}

#[test]
fn traffic_is_reported_byte_for_byte_across_an_outage_and_a_restart() {
    let _heavy = heavy();
    let dir = scratch("traffic");
    let port = free_port();
    let panel = Panel::start(&dir, "1:uuid-one\n2:uuid-two\n", node_config(port));
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get().min(2));
    let cores = cores.to_string();
    let mut node = start_node(&panel, &dir, &["--cores", &cores]);
    let echo = spawn_target(TargetKind::Echo);
    let (sink, sunk) = counting_sink();
    let mut expected: BTreeMap<String, [u64; 2]> = BTreeMap::new();
    let add = |expected: &mut BTreeMap<String, [u64; 2]>, user: &str, up: usize, down: usize| {
        let entry = expected.entry(user.to_owned()).or_default();
        entry[0] += up as u64;
        entry[1] += down as u64;
    };
    run_local(async {
        for round in 1..=3 {
            let one = ClientSession::connect(&user(node.addr, "uuid-one"))
                .await
                .unwrap();
            let two = ClientSession::connect(&user(node.addr, "uuid-two"))
                .await
                .unwrap();
            relay(&one, echo, 300_000, 300_000).await;
            relay(&two, echo, 70_001, 70_001).await;
            relay(&one, sink, 123_457, 0).await;
            // Upload counts what reached the target: the session stays until it did.
            let arrived = || sunk.load(Ordering::Relaxed) == round * 123_457;
            assert!(eventually(Duration::from_secs(10), arrived).await);
        }
    });
    // UDP over TCP counts too: datagrams through the client binary's SOCKS5
    // UDP ASSOCIATE, each awaiting its echo.
    let udp_echo = spawn_udp_echo();
    let socks = TestClient::start(node.addr, &["-p", "uuid-two"]);
    let (_control, udp_relay) = udp_associate(socks.socks);
    let app = app_socket();
    let destination = Address::Ip(udp_echo);
    let mut udp_bytes = 0;
    for size in [1, 100, 1200, 8000] {
        let payload = pattern(size, size);
        app.send_to(&socks_datagram(&destination, &payload), udp_relay)
            .unwrap();
        let (_, back) = receive(&app, udp_relay);
        assert_eq!(back, payload);
        udp_bytes += size;
    }
    add(&mut expected, "2", udp_bytes, udp_bytes);
    add(&mut expected, "1", 3 * 300_000, 3 * 300_000);
    add(&mut expected, "2", 3 * 70_001, 3 * 70_001);
    add(&mut expected, "1", 3 * 123_457, 0);
    let seen = panel.wait_for_traffic(&expected, Duration::from_secs(10));
    assert_eq!(seen, expected, "what was pushed");

    // Four push intervals of a panel answering 500: nothing is accepted, nothing lost.
    panel.outage(4, "500", Some("push"));
    echo_as(node.addr, "uuid-two", echo, 200_000);
    add(&mut expected, "2", 200_000, 200_000);
    std::thread::sleep(Duration::from_millis(2500));
    let failed = panel.get("/admin/traffic")["failed_pushes"]
        .as_u64()
        .unwrap();
    assert!(failed >= 1, "pushes were tried during the outage");
    let seen = panel.wait_for_traffic(&expected, Duration::from_secs(10));
    assert_eq!(seen, expected, "after the outage");
    assert!(node.logged("kept for the next push"));

    // A panel that closes every push: the node is stopped with deltas pending,
    // writes them to its state file, and the next node pushes them first.
    panel.outage(60, "close", Some("push"));
    echo_as(node.addr, "uuid-one", echo, 55_555);
    add(&mut expected, "1", 55_555, 55_555);
    std::thread::sleep(Duration::from_millis(1500));
    let status = node.signal_and_wait(libc::SIGTERM, Duration::from_secs(30));
    assert!(status.is_some_and(|s| s.success()), "SIGTERM: {status:?}");
    let state: Value =
        serde_json::from_slice(&std::fs::read(dir.join("state.json")).unwrap()).unwrap();
    assert_eq!(state["pending"]["1"], json!([55_555, 55_555]), "{state}");
    panel.outage(0, "close", None);
    let _restarted = start_node(&panel, &dir, &[]);
    let seen = panel.wait_for_traffic(&expected, Duration::from_secs(10));
    assert_eq!(
        seen, expected,
        "after the restart: nothing lost, nothing twice"
    );
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(panel.traffic(), expected, "nothing pushed twice");
}

/// Seconds each speed measurement lasts (`NODE_SPEED_SECS`, default 3).
fn speed_window() -> Duration {
    let secs = std::env::var("NODE_SPEED_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3.0);
    Duration::from_secs_f64(secs)
}

/// Bytes per second `count` grows by over `window`, after a warm-up second.
fn rate_of(count: &AtomicU64, window: Duration) -> f64 {
    std::thread::sleep(Duration::from_secs(1));
    let (start, at) = (count.load(Ordering::Relaxed), Instant::now());
    std::thread::sleep(window);
    let moved = count.load(Ordering::Relaxed) - start;
    moved as f64 / at.elapsed().as_secs_f64()
}

/// `sessions` sessions of user `uuid`, one stream each to `target`, until
/// `stop` is set: writing as fast as they can (`up`), or reading as fast as they
/// can and counting what they read into `read` (a download from a source).
fn load_forever(
    server: SocketAddr,
    uuid: &'static str,
    sessions: usize,
    target: SocketAddr,
    up: bool,
    read: Arc<AtomicU64>,
    stop: Arc<AtomicU64>,
) {
    std::thread::spawn(move || {
        run_local(async move {
            let mut tasks = Vec::new();
            for _ in 0..sessions {
                let (read, stop) = (read.clone(), stop.clone());
                tasks.push(glommio::spawn_local(async move {
                    let session = ClientSession::connect(&user(server, uuid)).await.unwrap();
                    let stream = session.open_stream(&Address::Ip(target)).unwrap();
                    stream.established().await.unwrap();
                    let mut buf = vec![7u8; 64 * 1024];
                    while stop.load(Ordering::Relaxed) == 0 {
                        if up {
                            if stream.write_all(&buf[..16 * 1024]).await.is_err() {
                                break;
                            }
                            continue;
                        }
                        let n = stream.read(&mut buf).await;
                        if n == 0 {
                            break;
                        }
                        read.fetch_add(n as u64, Ordering::Relaxed);
                    }
                }));
            }
            for task in tasks {
                task.await;
            }
        })
    });
}

/// The limited user's rate (`rate`, bytes a second) is 10 Mbit/s within 10% over
/// this short window on a busy machine (10 s windows: docs/operating.md, node mode), while the
/// unlimited one beside it (if any) moved `free` bytes, far more.
fn check_limited(direction: &str, sessions: usize, rate: f64, free: Option<u64>, window: Duration) {
    let limit = 1_250_000.0;
    println!(
        "{direction}, {sessions} session(s): {:.3} Mbit/s (limit 10); unlimited user moved {free:?} bytes",
        rate * 8.0 / 1e6
    );
    assert!(
        (0.9 * limit..1.1 * limit).contains(&rate),
        "{direction} {rate} B/s over {sessions} session(s)"
    );
    if let Some(free) = free {
        assert!(
            free as f64 > 5.0 * limit * window.as_secs_f64(),
            "the unlimited user was slowed: {free} bytes"
        );
    }
}

#[test]
fn the_speed_limit_holds_both_ways_over_one_and_eight_sessions() {
    let _heavy = heavy();
    let dir = scratch("speed");
    let port = free_port();
    // 10 Mbit/s for user 1 (1,250,000 bytes a second each way); user 2 unlimited.
    let panel = Panel::start(&dir, "1:uuid-one:10\n2:uuid-two\n", node_config(port));
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get().min(2));
    let node = start_node(&panel, &dir, &["--cores", &cores.to_string()]);
    let window = speed_window();
    for sessions in [1, 8] {
        // The unlimited user runs beside it in the first round only: at 8
        // sessions it would saturate both cores of a small machine, and the
        // limited user's late wake-ups would be measured instead of its limit.
        let companion = sessions == 1;
        let start = |uuid, sessions, target, up, read: &Arc<AtomicU64>, stop: &Arc<AtomicU64>| {
            load_forever(
                node.addr,
                uuid,
                sessions,
                target,
                up,
                read.clone(),
                stop.clone(),
            )
        };
        let (unused, stop) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
        let ((sink, sunk), (free_sink, free_sunk)) = (counting_sink(), counting_sink());
        start("uuid-one", sessions, sink, true, &unused, &stop);
        if companion {
            start("uuid-two", 1, free_sink, true, &unused, &stop);
        }
        let up = rate_of(&sunk, window);
        let free = companion.then(|| free_sunk.load(Ordering::Relaxed));
        stop.store(1, Ordering::Relaxed);
        check_limited("upload", sessions, up, free, window);

        let source = spawn_target(TargetKind::Source);
        let (count, free_count) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
        let stop = Arc::new(AtomicU64::new(0));
        start("uuid-one", sessions, source, false, &count, &stop);
        if companion {
            start("uuid-two", 1, source, false, &free_count, &stop);
        }
        let down = rate_of(&count, window);
        let free = companion.then(|| free_count.load(Ordering::Relaxed));
        stop.store(1, Ordering::Relaxed);
        check_limited("download", sessions, down, free, window);
    }
}

#[test]
fn the_device_limit_counts_addresses_over_the_fleet() {
    let dir = scratch("devices");
    let port = free_port();
    let panel = Panel::start(&dir, "1:uuid-one:0:2\n2:uuid-two\n", node_config(port));
    let node = start_node(&panel, &dir, &[]);
    let echo = spawn_target(TargetKind::Echo);
    let config = user(node.addr, "uuid-one");
    run_local(async {
        let a = session_from("127.0.0.2", &config).await.unwrap();
        opens(&a, echo).await.unwrap();
        let b = session_from("127.0.0.3", &config).await.unwrap();
        opens(&b, echo).await.unwrap();
        let c = session_from("127.0.0.4", &config).await.unwrap();
        assert!(opens(&c, echo).await.is_err(), "a third address is refused");
        let a2 = session_from("127.0.0.2", &config).await.unwrap();
        opens(&a2, echo)
            .await
            .expect("an address already online is never refused");
        let other = session_from("127.0.0.4", &user(node.addr, "uuid-two"))
            .await
            .unwrap();
        opens(&other, echo)
            .await
            .expect("users without a limit are not counted");
        // Another node of the fleet reports user 1 online from 10.9.9.9; .3 leaves.
        let status = panel.post(
            &format!("/api/v1/server/UniProxy/alive?token={TOKEN}&node_id=99&node_type=anytls"),
            r#"{"1":["10.9.9.9"]}"#,
        );
        assert_eq!(status, 200);
        b.close();
        drop(b);
        // Two push intervals: this node reports [.2], then reads 2 devices over the fleet.
        glommio::timer::sleep(Duration::from_millis(2500)).await;
        let d = session_from("127.0.0.5", &config).await.unwrap();
        assert!(
            opens(&d, echo).await.is_err(),
            "2 devices over the fleet: a new address is refused"
        );
        let a3 = session_from("127.0.0.2", &config).await.unwrap();
        opens(&a3, echo).await.expect(".2 is still online here");
    });
    let alive = panel.get("/admin/alive");
    assert_eq!(alive["1"]["1"], json!(["127.0.0.2"]), "{alive}");
}

#[test]
fn blocked_routes_refuse_their_targets_and_change_live() {
    let dir = scratch("routes");
    let port = free_port();
    let echo = spawn_target(TargetKind::Echo);
    let mut config = node_config(port);
    config["routes"] = json!([
        {"id": 1, "match": ["domain:blocked.test", "127.0.0.9"], "action": "block", "action_value": null},
        {"id": 2, "match": "geosite:cn", "action": "block"},
        {"id": 3, "match": ["main"], "action": "dns", "action_value": "1.1.1.1"}
    ]);
    let panel = Panel::start(&dir, "1:uuid-one\n", config.clone());
    let node = start_node(&panel, &dir, &[]);
    run_local(async {
        let session = ClientSession::connect(&user(node.addr, "uuid-one"))
            .await
            .unwrap();
        let refused = |target: Address| {
            let stream = session.open_stream(&target).unwrap();
            async move { stream.established().await }
        };
        assert_eq!(
            refused(Address::Domain("www.blocked.test".into(), 443)).await,
            Err(StreamError::Refused(
                "target blocked by the server's routes".into()
            ))
        );
        assert!(refused(Address::Ip("127.0.0.9:80".parse().unwrap()))
            .await
            .is_err());
        opens(&session, echo)
            .await
            .expect("other targets are served");
        // The panel now also blocks the echo's port: refused after one pull.
        config["routes"][0]["match"] = json!([format!("port:{}", echo.port())]);
        panel.set_config(config.clone());
        glommio::timer::sleep(Duration::from_millis(2500)).await;
        assert!(
            opens(&session, echo).await.is_err(),
            "the new route is in force"
        );
    });
    assert!(node.logged("geosite:cn"), "unsupported items are logged");
    assert!(node.logged("action dns"), "ignored actions are logged");
    assert!(node.logged("route_blocked"));
}

/// The reference client binary, or `None` (and a printed line) when absent.
fn reference_client() -> Option<PathBuf> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/peers/anytls-client");
    if path.exists() {
        Some(path)
    } else {
        println!("skipped: {} not found", path.display());
        None
    }
}

/// A counter's value in the node's metrics text.
fn metric(metrics: SocketAddr, name: &str) -> u64 {
    let mut conn = std::net::TcpStream::connect(metrics).unwrap();
    conn.write_all(b"GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut text = String::new();
    conn.read_to_string(&mut text).unwrap();
    text.lines()
        .find(|l| l.starts_with(name) && !l.starts_with('#'))
        .and_then(|l| l.split_whitespace().last()?.parse().ok())
        .unwrap_or_else(|| panic!("{name} not in the metrics"))
}

#[test]
fn a_new_padding_scheme_reaches_a_connected_reference_client() {
    let Some(binary) = reference_client() else {
        return;
    };
    let dir = scratch("padding");
    let port = free_port();
    let panel = Panel::start(&dir, "1:uuid-one\n", node_config(port));
    let metrics_port = free_port();
    let metrics = format!("127.0.0.1:{metrics_port}");
    let node = start_node(&panel, &dir, &["--metrics", &metrics]);
    let metrics: SocketAddr = metrics.parse().unwrap();
    let socks = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let mut client = Command::new(binary)
        .args([
            "-l",
            &socks.to_string(),
            "-s",
            &node.addr.to_string(),
            "-p",
            "uuid-one",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(socks).is_err() {
        assert!(Instant::now() < deadline, "reference client never listened");
        std::thread::sleep(Duration::from_millis(20));
    }
    let echo = spawn_target(TargetKind::Echo);
    let (mut first, code) = socks_connect(socks, echo);
    assert_eq!(code, 0);
    assert_eq!(echo_through(&mut first, b"one"), b"one");
    assert_eq!(
        metric(metrics, "anytls_padding_updates_total"),
        0,
        "it has the panel's scheme"
    );
    // The panel's scheme changes while the session is open.
    let mut config = node_config(port);
    config["padding_scheme"] = json!(["stop=3", "0=30-30", "1=100-400", "2=400-500,c,500-1000"]);
    panel.set_config(config);
    assert!(node.wait_for_log("new padding scheme", Duration::from_secs(5)));
    let deadline = Instant::now() + Duration::from_secs(10);
    while metric(metrics, "anytls_padding_updates_total") < 1 {
        assert!(
            Instant::now() < deadline,
            "the open session was not sent the new scheme"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // A second stream while the first is open makes the client open a new
    // session, whose Settings announce the scheme it now uses: had it not taken
    // the update, the server would send it again.
    let (mut second, code) = socks_connect(socks, echo);
    assert_eq!(code, 0);
    assert_eq!(echo_through(&mut second, b"two"), b"two");
    // The metrics are rendered at most once a second.
    std::thread::sleep(Duration::from_millis(1100));
    assert!(
        metric(metrics, "anytls_sessions_total") >= 2,
        "a second session opened"
    );
    assert_eq!(
        metric(metrics, "anytls_padding_updates_total"),
        1,
        "the new session announced the new scheme"
    );
    drop((first, second));
    let _ = client.kill();
    let _ = client.wait();
}

#[test]
fn a_wrong_token_and_an_unreachable_panel_at_start_are_said_once_and_retried() {
    let dir = scratch("start");
    let port = free_port();
    let panel = Panel::start(&dir, "1:uuid-one\n", node_config(port));
    let state = dir.join("state.json");
    let wrong = Unstarted::spawn(&[
        "-l",
        "127.0.0.1:0",
        "--panel-url",
        &panel.url,
        "--panel-token",
        "wrong",
        "--node-id",
        "1",
        "--panel-state-file",
        state.to_str().unwrap(),
    ]);
    assert!(
        wrong.wait_for_log("the panel answered 422", Duration::from_secs(5)),
        "{:?}",
        wrong.log.lock().unwrap()
    );
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        wrong.count("serving nothing until it answers"),
        1,
        "said once"
    );
    assert_eq!(wrong.count("listening on"), 0);
    drop(wrong);

    // No panel at all yet: the node waits; once one listens there it starts.
    let panel_port = free_port();
    let url = format!("http://127.0.0.1:{panel_port}");
    let waiting = Unstarted::spawn(&[
        "-l",
        "127.0.0.1:0",
        "--panel-url",
        &url,
        "--panel-token",
        TOKEN,
        "--node-id",
        "1",
        "--panel-state-file",
        state.to_str().unwrap(),
    ]);
    assert!(waiting.wait_for_log("cannot reach the panel", Duration::from_secs(5)));
    std::thread::sleep(Duration::from_millis(1500));
    let late_dir = scratch("late");
    let _late = Panel::start_on(
        &format!("127.0.0.1:{panel_port}"),
        &late_dir,
        "1:uuid-one\n",
        node_config(port),
    );
    assert!(
        waiting.wait_for_log("listening on", Duration::from_secs(10)),
        "{:?}",
        waiting.log.lock().unwrap()
    );
    assert_eq!(waiting.count("serving nothing until it answers"), 1);
}

#[test]
fn a_panel_that_answers_garbage_or_nothing_leaves_the_node_serving() {
    let dir = scratch("garbage");
    let port = free_port();
    let panel = Panel::start(&dir, "1:uuid-one\n", node_config(port));
    let node = start_node(&panel, &dir, &[]);
    let echo = spawn_target(TargetKind::Echo);
    for mode in ["garbage", "hang"] {
        panel.outage(3, mode, None);
        let skip = node.log_len();
        run_local(async {
            glommio::timer::sleep(Duration::from_millis(1500)).await;
            let session = ClientSession::connect(&user(node.addr, "uuid-one"))
                .await
                .unwrap();
            let stream = session.open_stream(&Address::Ip(echo)).unwrap();
            stream_echoes(&stream, mode.as_bytes()).await;
        });
        assert!(
            node.wait_for_log_after(skip, "failed", Duration::from_secs(15)),
            "{mode}: no failure logged"
        );
        assert!(
            node.wait_for_log_after(skip, "answering again", Duration::from_secs(20)),
            "{mode}: recovery not logged"
        );
    }
    // The panel never spins the node: each failure is one line per interval.
    let failures = node
        .log_lines()
        .iter()
        .filter(|l| l.contains("failed:"))
        .count();
    assert!(failures < 40, "{failures} failure lines");
}

#[test]
fn a_hundred_thousand_users() {
    let _heavy = heavy();
    let dir = scratch("many");
    let port = free_port();
    let mut users: String = (1..=100_000).map(|i| format!("{i}:uuid-{i}\n")).collect();
    let panel = Panel::start(&dir, &users, node_config(port));
    let started = Instant::now();
    let node = start_node(&panel, &dir, &[]);
    let to_serve = started.elapsed();
    let rss = node.rss_kib();
    let echo = spawn_target(TargetKind::Echo);
    run_local(async {
        let session = ClientSession::connect(&user(node.addr, "uuid-77777"))
            .await
            .unwrap();
        let stream = session.open_stream(&Address::Ip(echo)).unwrap();
        stream_echoes(&stream, b"before").await;
        // One user gone, one new: the list is applied again while this one relays.
        users = users.replace("5:uuid-5\n", "100001:uuid-100001\n");
        let skip = node.log_len();
        panel.set_users(&users);
        assert!(
            eventually(Duration::from_secs(10), || {
                node.log_lines()[skip..]
                    .iter()
                    .any(|l| l.contains("applied in"))
            })
            .await
        );
        stream_echoes(&stream, b"during and after").await;
        assert!(!session.is_closed(), "no session dropped");
        let new = ClientSession::connect(&user(node.addr, "uuid-100001"))
            .await
            .unwrap();
        opens(&new, echo).await.expect("the new user logs in");
    });
    let applied: Vec<String> = node
        .log_lines()
        .into_iter()
        .filter(|l| l.contains("applied in"))
        .collect();
    println!(
        "100,000 users: serving {to_serve:?} after start, node RSS {rss} KiB then {} KiB; {applied:?}",
        node.rss_kib()
    );
    assert!(to_serve < Duration::from_secs(20));
}
