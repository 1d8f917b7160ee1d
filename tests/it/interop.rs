//! Interoperability with the reference implementation (anytls-go v0.0.13, the
//! static binaries in `../shared/peers/`): its client through our server, our
//! client against its server, UDP through its client, a slow target on a
//! reused session, and the server's shaped first records as its client sees them. Skipped, with one printed line, where that folder is absent
//! (a user's clone).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::common::*;
use anytls::client::ClientSession;
use anytls::proto::Address;

/// A reference binary, or `None` (and a printed line) when the peers are absent.
fn peer(name: &str) -> Option<PathBuf> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../shared/peers")
        .join(name);
    if path.exists() {
        Some(path)
    } else {
        println!("skipped: {} not found", path.display());
        None
    }
}

fn free_port() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

/// A reference process, killed when dropped.
struct Peer(Child);

impl Peer {
    fn start(binary: PathBuf, args: &[&str], listens_on: SocketAddr) -> Peer {
        let child = Command::new(binary)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("reference binary starts");
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(listens_on).is_err() {
            assert!(Instant::now() < deadline, "reference peer never listened");
            std::thread::sleep(Duration::from_millis(20));
        }
        Peer(child)
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The reference client, its SOCKS5 inbound on a free port, using `server`.
fn reference_client(server: SocketAddr) -> Option<(Peer, SocketAddr)> {
    let binary = peer("anytls-client")?;
    let socks = free_port();
    let (listen, server) = (socks.to_string(), server.to_string());
    let client = Peer::start(
        binary,
        &["-l", &listen, "-s", &server, "-p", PASSWORD],
        socks,
    );
    Some((client, socks))
}

#[test]
fn reference_client_through_our_server() {
    let server = TestServer::start(&[]);
    let Some((_client, socks)) = reference_client(server.addr) else {
        return;
    };
    let echo = spawn_target(TargetKind::Echo);
    // Bulk, byte-exact both ways.
    let (mut conn, reply) = socks_connect(socks, echo);
    assert_eq!(reply, 0);
    for block in 0..40 {
        let data = pattern(block * 256 * 1024, 256 * 1024);
        assert!(
            echo_through(&mut conn, &data) == data,
            "block {block} differs"
        );
    }
    drop(conn);
    // Many streams at once.
    let threads: Vec<_> = (0..32)
        .map(|i| {
            std::thread::spawn(move || {
                let (mut conn, reply) = socks_connect(socks, echo);
                assert_eq!(reply, 0);
                let message = format!("stream {i}").into_bytes();
                assert_eq!(echo_through(&mut conn, &message), message);
            })
        })
        .collect();
    for thread in threads {
        thread.join().unwrap();
    }
    server.assert_serves();
}

/// UDP through the reference client's SOCKS5 UDP ASSOCIATE, carried as UDP over
/// TCP v2 by our server: datagrams of several sizes come back byte-exact, and the
/// association's UDP socket is released with it.
#[test]
fn reference_client_relays_udp_through_our_server() {
    let server = TestServer::start(&["--stats-interval", "1"]);
    let Some((_client, socks)) = reference_client(server.addr) else {
        return;
    };
    let echo = spawn_udp_echo();
    let mut control = TcpStream::connect(socks).unwrap();
    control
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    control.write_all(&[5, 1, 0]).unwrap();
    let mut method = [0u8; 2];
    control.read_exact(&mut method).unwrap();
    assert_eq!(method, [5, 0]);
    let mut request = vec![5, 3, 0];
    Address::Ip("0.0.0.0:0".parse().unwrap())
        .encode(&mut request)
        .unwrap();
    control.write_all(&request).unwrap();
    let mut reply = [0u8; 10];
    control.read_exact(&mut reply).unwrap();
    assert_eq!(&reply[..2], [5, 0], "UDP ASSOCIATE granted");
    let relay = SocketAddr::from(([127, 0, 0, 1], u16::from_be_bytes([reply[8], reply[9]])));
    let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    udp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    // The reference client itself drops datagrams over about 16 KiB (measured: the
    // same with the reference server), so larger ones are tested with our client
    // (tests/it/client_udp.rs).
    for (i, size) in [1usize, 512, 1400, 8000, 16_000].into_iter().enumerate() {
        let payload = pattern(i * 100_000, size);
        // SOCKS5 UDP header: RSV RSV FRAG, then the destination address.
        let mut datagram = vec![0, 0, 0];
        Address::Ip(echo).encode(&mut datagram).unwrap();
        let header = datagram.len();
        datagram.extend_from_slice(&payload);
        udp.send_to(&datagram, relay).unwrap();
        let mut back = vec![0u8; 65_536];
        let n = udp
            .recv(&mut back)
            .unwrap_or_else(|e| panic!("datagram of {size} bytes: {e}"));
        assert!(
            back[header..n] == payload[..],
            "datagram of {size} bytes differs"
        );
    }
    assert!(
        server.wait_for_log("UDP over TCP", Duration::from_secs(3)),
        "carried as UDP over TCP"
    );
    drop(control);
    server.assert_serves();
}

#[test]
fn our_client_against_the_reference_server() {
    let Some(binary) = peer("anytls-server") else {
        return;
    };
    let addr = free_port();
    let listen = addr.to_string();
    let _server = Peer::start(binary, &["-l", &listen, "-p", PASSWORD], addr);
    let echo = spawn_target(TargetKind::Echo);
    run_local(async {
        let session = ClientSession::connect(&client_config_for(addr))
            .await
            .unwrap();
        for round in 0..10 {
            let stream = session.open_stream(&Address::Ip(echo)).unwrap();
            assert_eq!(stream.established().await, Ok(()));
            let data = pattern(round * 100_000, 100_000);
            stream.write_all(&data).await.unwrap();
            let mut back = vec![0u8; data.len()];
            let mut got = 0;
            while got < back.len() {
                let n = stream.read(&mut back[got..]).await;
                assert!(n > 0, "stream {round} ended early");
                got += n;
            }
            assert!(back == data, "stream {round} differs");
            stream.close();
        }
        session.heartbeat().await.unwrap();
    });
}

/// Opens, through the reference client, a stream to a silent target on a reused
/// session (an echo stream ran on it and ended first) with the server's SYNACK
/// deadline set to `deadline_ms`; returns how many sessions the server saw end
/// in the next 4 s.
fn sessions_ended_by_a_slow_dial(deadline_ms: &str) -> Option<usize> {
    let server = TestServer::start(&[
        "--synack-deadline-ms",
        deadline_ms,
        "--connect-timeout",
        "8",
    ]);
    let (_client, socks) = reference_client(server.addr)?;
    let echo = spawn_target(TargetKind::Echo);
    let (_silent_listener, _fillers, silent) = silent_target();
    let (mut first, reply) = socks_connect(socks, echo);
    assert_eq!(reply, 0);
    assert_eq!(echo_through(&mut first, b"warm"), b"warm");
    drop(first);
    std::thread::sleep(Duration::from_millis(300));
    let ended = || {
        server
            .log_lines()
            .iter()
            .filter(|l| l.contains("session of user") && l.contains("closed"))
            .count()
    };
    let before = ended();
    // The reference client answers SOCKS at once and waits for SYNACK behind it.
    let mut slow = TcpStream::connect(socks).unwrap();
    slow.write_all(&[5, 1, 0]).unwrap();
    let mut method = [0u8; 2];
    slow.read_exact(&mut method).unwrap();
    let mut request = vec![5, 1, 0];
    Address::Ip(silent).encode(&mut request).unwrap();
    slow.write_all(&request).unwrap();
    std::thread::sleep(Duration::from_millis(4000));
    // Meanwhile the client still gets through.
    let (mut later, reply) = socks_connect(socks, echo);
    assert_eq!(reply, 0);
    assert_eq!(echo_through(&mut later, b"later"), b"later");
    Some(ended() - before)
}

#[test]
fn a_slow_target_does_not_take_down_the_session() {
    let Some(ended) = sessions_ended_by_a_slow_dial("2000") else {
        return;
    };
    assert_eq!(
        ended, 0,
        "the reference client dropped the session of a slow dial"
    );
    // The control: a SYNACK later than the client's 3 s makes the same client drop
    // the whole session, which is what the deadline prevents.
    let ended = sessions_ended_by_a_slow_dial("6000").unwrap();
    assert!(
        ended >= 1,
        "without the deadline no session ended: the test proves nothing"
    );
}

/// A padding scheme saved with CRLF line endings (as Windows editors write it)
/// is normalised before it is sent: the reference client, which splits lines
/// on `\n` only and refuses `stop=8\r`, adopts it, so its next session
/// announces the scheme's md5 and is not sent the scheme again.
#[test]
fn reference_client_adopts_a_scheme_written_with_crlf() {
    let dir = std::env::temp_dir().join(format!("anytls-crlf-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("scheme");
    std::fs::write(
        &file,
        "stop=3\r\n0=30-30\r\n1=100-400\r\n2=400-500,c,500-1000\r\n",
    )
    .unwrap();
    let server = TestServer::start(&[
        "--padding-scheme",
        file.to_str().unwrap(),
        "--metrics",
        "127.0.0.1:0",
    ]);
    let Some((_client, socks)) = reference_client(server.addr) else {
        return;
    };
    let updates = || server.metric("anytls_padding_updates_total").unwrap_or(0);
    let echo = spawn_target(TargetKind::Echo);
    let (mut first, code) = socks_connect(socks, echo);
    assert_eq!(code, 0);
    assert_eq!(echo_through(&mut first, b"one"), b"one");
    assert_eq!(
        server.wait_for_metric(
            "anytls_padding_updates_total",
            Duration::from_secs(5),
            |n| n >= 1
        ),
        Some(1),
        "the first session, announcing the default scheme, was sent ours"
    );
    // A second stream while the first is open makes the client open a second
    // session, whose Settings announce the scheme it now uses.
    let (mut second, code) = socks_connect(socks, echo);
    assert_eq!(code, 0);
    assert_eq!(echo_through(&mut second, b"two"), b"two");
    assert!(
        server.metric_reaches("anytls_sessions_total", |n| n >= 2),
        "a second session opened"
    );
    assert_eq!(
        updates(),
        1,
        "the second session announced our scheme's md5"
    );
    drop((first, second));
    let _ = std::fs::remove_dir_all(&dir);
}

/// A TLS web site on 127.0.0.1 (a certificate of its own, made here): each
/// connection's request gets a 3000-byte page, then the connection closes.
fn tls_site() -> SocketAddr {
    let certified = rcgen::generate_simple_self_signed(vec!["site.test".to_owned()]).unwrap();
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(certified.key_pair.serialize_der().into());
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(vec![certified.cert.der().clone()], key)
    .unwrap();
    let config = Arc::new(config);
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let (Ok(conn), config) = (conn, config.clone()) else {
                continue;
            };
            std::thread::spawn(move || {
                conn.set_read_timeout(Some(Duration::from_secs(10))).ok();
                let tls = rustls::ServerConnection::new(config).unwrap();
                let mut stream = rustls::StreamOwned::new(tls, conn);
                let mut request = [0u8; 1024];
                if stream.read(&mut request).unwrap_or(0) > 0 {
                    let _ = stream.write_all(&SITE_PAGE);
                    stream.conn.send_close_notify();
                    let _ = stream.flush();
                }
            });
        }
    });
    addr
}

const SITE_PAGE: [u8; 3000] = [b'x'; 3000];

/// A relay in front of `server` that notes the type and length of every TLS
/// record the server sends (a capture on loopback, parsed as a censor would).
/// TLS records seen, as (content type, length).
type Records = Arc<Mutex<Vec<(u8, usize)>>>;

fn record_capture(server: SocketAddr) -> (SocketAddr, Records) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let records = Arc::new(Mutex::new(Vec::new()));
    let noted = records.clone();
    std::thread::spawn(move || {
        for client in listener.incoming() {
            let Ok(mut client) = client else { continue };
            let Ok(mut upstream) = TcpStream::connect(server) else {
                continue;
            };
            let (mut client_in, mut upstream_out) =
                (client.try_clone().unwrap(), upstream.try_clone().unwrap());
            std::thread::spawn(move || std::io::copy(&mut client_in, &mut upstream_out));
            let noted = noted.clone();
            std::thread::spawn(move || {
                let mut pending = Vec::new();
                let mut buf = [0u8; 64 * 1024];
                while let Ok(n @ 1..) = upstream.read(&mut buf) {
                    if client.write_all(&buf[..n]).is_err() {
                        break;
                    }
                    pending.extend_from_slice(&buf[..n]);
                    while pending.len() >= 5 {
                        let len = u16::from_be_bytes([pending[3], pending[4]]) as usize;
                        if pending.len() < 5 + len {
                            break;
                        }
                        noted.lock().unwrap().push((pending[0], len));
                        pending.drain(..5 + len);
                    }
                }
                let _ = client.shutdown(std::net::Shutdown::Both);
            });
        }
    });
    (addr, records)
}

/// The records a server (listening at `server`) sends on the session of the
/// reference client's first stream, which fetches a page from a TLS site.
fn records_of_a_tls_fetch(server: SocketAddr) -> Option<Vec<(u8, usize)>> {
    let (capture, records) = record_capture(server);
    let (_client, socks) = reference_client(capture)?;
    let site = tls_site();
    let (conn, code) = socks_connect(socks, site);
    assert_eq!(code, 0);
    let verify = anytls::tls::client_config(anytls::tls::ServerVerification::Insecure);
    let tls = rustls::ClientConnection::new(verify, "site.test".try_into().unwrap()).unwrap();
    let mut stream = rustls::StreamOwned::new(tls, conn);
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: site.test\r\n\r\n")
        .unwrap();
    let mut page = Vec::new();
    stream.read_to_end(&mut page).unwrap();
    assert!(page == SITE_PAGE, "the page came through whole");
    let records = records.lock().unwrap().clone();
    Some(records)
}

/// The server shapes its own first writes with the padding scheme, as clients
/// do theirs: with a scheme of fixed sizes, its first writes after the
/// handshake leave as records of exactly those sizes (plus TLS's 17 bytes),
/// padded with Waste frames the reference client reads past (the page arrives
/// whole). With `--downlink-padding false` none of them appear. The first
/// records of each, and of the reference server under the same scheme, are
/// printed.
#[test]
fn downlink_records_follow_the_padding_scheme() {
    if peer("anytls-client").is_none() {
        return;
    }
    let dir = std::env::temp_dir().join(format!("anytls-downlink-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("scheme");
    std::fs::write(
        &file,
        "stop=5\n0=30-30\n1=333-333\n2=444-444\n3=555-555\n4=666-666\n",
    )
    .unwrap();
    let scheme = file.to_str().unwrap();
    let shaped_sizes: Vec<usize> = [333, 444, 555, 666].iter().map(|s| s + 17).collect();
    let application = |records: &[(u8, usize)]| -> Vec<usize> {
        records
            .iter()
            .filter(|(kind, _)| *kind == 23)
            .map(|&(_, len)| len)
            .collect()
    };
    let shaped = TestServer::start(&["--padding-scheme", scheme]);
    let on = records_of_a_tls_fetch(shaped.addr).unwrap();
    let plain = TestServer::start(&["--padding-scheme", scheme, "--downlink-padding", "false"]);
    let off = records_of_a_tls_fetch(plain.addr).unwrap();
    let default = TestServer::start(&[]);
    let default = records_of_a_tls_fetch(default.addr).unwrap();
    let reference = peer("anytls-server").map(|binary| {
        let addr = free_port();
        let listen = addr.to_string();
        let _server = Peer::start(
            binary,
            &["-l", &listen, "-p", PASSWORD, "--padding-scheme", scheme],
            addr,
        );
        records_of_a_tls_fetch(addr).unwrap()
    });
    for (name, records) in [
        ("ours, shaped", &on),
        ("ours, --downlink-padding false", &off),
        ("ours, the default scheme", &default),
    ]
    .into_iter()
    .chain(reference.as_ref().map(|r| ("reference server", r)))
    {
        let first: Vec<String> = records
            .iter()
            .take(12)
            .map(|(t, l)| format!("{t}:{l}"))
            .collect();
        println!("{name:<32} {}", first.join(" "));
    }
    let on_sizes = application(&on);
    let mut wanted = shaped_sizes.iter().peekable();
    for size in &on_sizes {
        if wanted.peek() == Some(&size) {
            wanted.next();
        }
    }
    assert!(
        wanted.peek().is_none(),
        "shaped records {shaped_sizes:?} in order among {on_sizes:?}"
    );
    let off_sizes = application(&off);
    assert!(
        !shaped_sizes[1..]
            .iter()
            .any(|size| off_sizes.contains(size)),
        "unshaped: {off_sizes:?}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
