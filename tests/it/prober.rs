//! What a prober sees: the server with `--fallback` to a real nginx (Debian's
//! package), against the same nginx serving TLS itself with the same
//! certificate on another port. For each probe, what comes back (the decrypted
//! bytes, the ALPN protocol chosen, whether the end is a close_notify) must be
//! the same, and the times to the first byte and to the close within 50 ms
//! (medians of three). `.ci/run` installs nginx; where it is absent the test is
//! skipped with one printed line.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::common::*;

/// nginx's `client_header_timeout` and `keepalive_timeout`, and the server's
/// `--handshake-timeout`: both ends wait as long for a silent client.
const SITE_TIMEOUT_SECS: u64 = 2;
/// How long a probe waits for the connection to end.
const PROBE_LIMIT: Duration = Duration::from_secs(5);
/// The goal: a prober's clock cannot tell the two apart by more than this.
const SAME_TIME: Duration = Duration::from_millis(50);
const PAGE: &str = "<html><body>an ordinary web site</body></html>\n";

/// nginx serving one page over plain HTTP (the fallback) and over TLS (the
/// site as it would be seen without us), from a directory of its own.
struct Nginx {
    child: Child,
    dir: PathBuf,
    http: SocketAddr,
    https: SocketAddr,
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn start_nginx(binary: &Path, dir: &Path, cert: &Path, key: &Path) -> Nginx {
    let (http, https) = (free_port(), free_port());
    std::fs::create_dir_all(dir.join("www")).unwrap();
    std::fs::write(dir.join("www/index.html"), PAGE).unwrap();
    let d = dir.display();
    let config = format!(
        "daemon off;\nmaster_process off;\npid {d}/nginx.pid;\nerror_log {d}/error.log info;\n\
         events {{ worker_connections 256; }}\n\
         http {{\n  access_log {d}/access.log;\n\
           client_body_temp_path {d}/body;\n  proxy_temp_path {d}/proxy;\n\
           fastcgi_temp_path {d}/fastcgi;\n  uwsgi_temp_path {d}/uwsgi;\n  scgi_temp_path {d}/scgi;\n\
           default_type text/html;\n\
           client_header_timeout {SITE_TIMEOUT_SECS}s;\n  keepalive_timeout {SITE_TIMEOUT_SECS}s;\n\
           server {{ listen 127.0.0.1:{http}; root {d}/www; }}\n\
           server {{ listen 127.0.0.1:{https} ssl; root {d}/www;\n\
             ssl_protocols TLSv1.2 TLSv1.3;\n\
             ssl_certificate {cert}; ssl_certificate_key {key}; }}\n}}\n",
        cert = cert.display(),
        key = key.display(),
    );
    std::fs::write(dir.join("nginx.conf"), config).unwrap();
    let child = Command::new(binary)
        .arg("-p")
        .arg(dir)
        .arg("-e")
        .arg(dir.join("error.log"))
        .arg("-c")
        .arg(dir.join("nginx.conf"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("nginx starts");
    let nginx = Nginx {
        child,
        dir: dir.to_owned(),
        http: ([127, 0, 0, 1], http).into(),
        https: ([127, 0, 0, 1], https).into(),
    };
    let started = Instant::now();
    while [nginx.http, nginx.https]
        .iter()
        .any(|addr| TcpStream::connect(addr).is_err())
    {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "nginx did not listen within 10 s: {}",
            std::fs::read_to_string(dir.join("error.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    nginx
}

/// What one probe does after connecting.
#[derive(Clone)]
enum Probe {
    /// TLS (offering `h2,http/1.1`, as a browser does), then these bytes.
    Send(Vec<u8>),
    /// TCP, then these raw bytes (no TLS of our own: a replay).
    Raw(Vec<u8>),
}

/// What a prober saw.
#[derive(Debug, Default)]
struct Seen {
    version: Option<rustls::ProtocolVersion>,
    /// The TLS records' content types (raw probes).
    records: Vec<u8>,
    alpn: Option<Vec<u8>>,
    /// Decrypted bytes (TLS probes) or the TLS record types received (raw).
    bytes: Vec<u8>,
    close_notify: bool,
    first_byte: Option<Duration>,
    closed: Option<Duration>,
}

impl Seen {
    /// The bytes with nginx's `Date:` header's value blanked (it moves each second).
    fn comparable(&self) -> String {
        String::from_utf8_lossy(&self.bytes)
            .lines()
            .map(|line| match line.strip_prefix("Date: ") {
                Some(_) => "Date: *",
                None => line,
            })
            .collect::<Vec<_>>()
            .join("\n")
    }
}

fn prober_tls() -> Arc<rustls::ClientConfig> {
    let base = anytls::tls::client_config(anytls::tls::ServerVerification::Insecure);
    let mut config = (*base).clone();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Arc::new(config)
}

fn probe(addr: SocketAddr, what: &Probe) -> Seen {
    let mut tcp = TcpStream::connect(addr).unwrap();
    tcp.set_nodelay(true).unwrap();
    match what {
        Probe::Send(bytes) => probe_tls(tcp, bytes),
        Probe::Raw(bytes) => {
            tcp.write_all(bytes).unwrap();
            let started = Instant::now();
            let mut received = Vec::new();
            let mut first_byte = None;
            let closed = read_until_end(&mut tcp, started, |chunk| {
                first_byte.get_or_insert(started.elapsed());
                received.extend_from_slice(chunk)
            });
            let records = record_types(&received);
            Seen {
                // How the TLS stacks cut their flights differs (rustls sends the
                // encrypted handshake as one record, OpenSSL one per message):
                // compared is the flight's start, ServerHello, CCS, encrypted.
                bytes: records
                    .iter()
                    .take(3)
                    .flat_map(|t| format!("{t} ").into_bytes())
                    .collect(),
                records,
                first_byte,
                closed,
                ..Seen::default()
            }
        }
    }
}

fn probe_tls(mut tcp: TcpStream, bytes: &[u8]) -> Seen {
    let name = "localhost".try_into().unwrap();
    let mut tls = rustls::ClientConnection::new(prober_tls(), name).unwrap();
    tcp.set_read_timeout(Some(PROBE_LIMIT)).unwrap();
    while tls.is_handshaking() {
        tls.complete_io(&mut tcp).expect("TLS handshake");
    }
    tls.writer().write_all(bytes).unwrap();
    while tls.wants_write() {
        tls.write_tls(&mut tcp).unwrap();
    }
    let started = Instant::now();
    let mut seen = Seen {
        version: tls.protocol_version(),
        alpn: tls.alpn_protocol().map(<[u8]>::to_vec),
        ..Seen::default()
    };
    let mut plaintext = Vec::new();
    let mut close_notify = false;
    seen.closed = read_until_end(&mut tcp, started, |mut chunk| {
        while !chunk.is_empty() {
            match tls.read_tls(&mut chunk) {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
            let Ok(state) = tls.process_new_packets() else {
                return;
            };
            let mut buf = vec![0u8; state.plaintext_bytes_to_read()];
            tls.reader().read_exact(&mut buf).unwrap();
            if !buf.is_empty() && plaintext.is_empty() {
                seen.first_byte = Some(started.elapsed());
            }
            plaintext.extend_from_slice(&buf);
            close_notify |= state.peer_has_closed();
        }
    });
    seen.bytes = plaintext;
    seen.close_notify = close_notify;
    seen
}

/// Reads raw bytes until the peer closes or [`PROBE_LIMIT`] passes, handing
/// each chunk to `each`; when the connection ended, if it did.
fn read_until_end(
    tcp: &mut TcpStream,
    started: Instant,
    mut each: impl FnMut(&[u8]),
) -> Option<Duration> {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let left = PROBE_LIMIT.checked_sub(started.elapsed())?;
        tcp.set_read_timeout(Some(left.max(Duration::from_millis(1))))
            .unwrap();
        match tcp.read(&mut buf) {
            Ok(0) | Err(_) => {
                let elapsed = started.elapsed();
                return (elapsed < PROBE_LIMIT).then_some(elapsed);
            }
            Ok(n) => each(&buf[..n]),
        }
    }
}

/// The content types of the TLS records in `raw`, in order.
fn record_types(mut raw: &[u8]) -> Vec<u8> {
    let mut types = Vec::new();
    while raw.len() >= 5 {
        let len = u16::from_be_bytes([raw[3], raw[4]]) as usize;
        types.push(raw[0]);
        raw = &raw[(5 + len).min(raw.len())..];
    }
    types
}

fn median(mut values: Vec<Option<Duration>>) -> Option<Duration> {
    values.sort();
    values[values.len() / 2]
}

fn ms(value: Option<Duration>) -> String {
    value.map_or("-".to_owned(), |d| format!("{:.1}", d.as_secs_f64() * 1e3))
}

/// A real client's first bytes (ClientHello, Finished, preamble), as a
/// prober on the path would capture them, recorded by a relay in front of the
/// server.
fn captured_client_bytes(server: &TestServer) -> Vec<u8> {
    let relay = TcpListener::bind("127.0.0.1:0").unwrap();
    let relay_addr = relay.local_addr().unwrap();
    let upstream = server.addr;
    let recorder = std::thread::spawn(move || {
        let (mut client, _) = relay.accept().unwrap();
        let mut server = TcpStream::connect(upstream).unwrap();
        let mut back = server.try_clone().unwrap();
        let mut to_client = client.try_clone().unwrap();
        std::thread::spawn(move || std::io::copy(&mut back, &mut to_client));
        client
            .set_read_timeout(Some(Duration::from_millis(500)))
            .unwrap();
        let mut captured = Vec::new();
        let mut buf = [0u8; 16 * 1024];
        while let Ok(n) = client.read(&mut buf) {
            if n == 0 {
                break;
            }
            captured.extend_from_slice(&buf[..n]);
            server.write_all(&buf[..n]).unwrap();
        }
        captured
    });
    run_local(async {
        let session = anytls::client::ClientSession::connect(&client_config_for(relay_addr))
            .await
            .unwrap();
        session.heartbeat().await.unwrap();
        glommio::timer::sleep(Duration::from_millis(700)).await;
    });
    recorder.join().unwrap()
}

#[test]
fn a_prober_sees_the_site_behind_the_fallback_as_nginx_serves_it() {
    let Some(binary) = installed("nginx") else {
        println!("skipped: nginx is not installed (apt-get install nginx)");
        return;
    };
    let dir = std::env::temp_dir().join(format!("anytls-prober-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert, certified.cert.pem()).unwrap();
    std::fs::write(&key, certified.key_pair.serialize_pem()).unwrap();
    let nginx = start_nginx(&binary, &dir, &cert, &key);
    let timeout = SITE_TIMEOUT_SECS.to_string();
    let server = TestServer::start(&[
        "--fallback",
        &nginx.http.to_string(),
        "--cert",
        cert.to_str().unwrap(),
        "--key",
        key.to_str().unwrap(),
        "--handshake-timeout",
        &timeout,
    ]);

    let mut wrong_preamble = preamble("not the password");
    wrong_preamble.extend_from_slice(&settings_frame(&default_md5()));
    let random: Vec<u8> = (0..64u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let long_request = format!(
        "GET /index.html HTTP/1.1\r\nHost: localhost\r\nUser-Agent: Mozilla/5.0 (X11; Linux x86_64)\r\n\
         Accept: text/html,application/xhtml+xml;q=0.9,*/*;q=0.8\r\nAccept-Language: en-US,en;q=0.5\r\n\
         Cookie: {}\r\nConnection: close\r\n\r\n",
        "a".repeat(900)
    );
    let probes: Vec<(&str, Probe)> = vec![
        (
            "GET, HTTP/1.1 (keep-alive)",
            Probe::Send(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n".to_vec()),
        ),
        (
            "GET, HTTP/1.0 (18 bytes)",
            Probe::Send(b"GET / HTTP/1.0\r\n\r\n".to_vec()),
        ),
        (
            "long request (1.1 KB)",
            Probe::Send(long_request.into_bytes()),
        ),
        (
            "HTTP/2 preface + SETTINGS",
            Probe::Send(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0".to_vec()),
        ),
        ("TLS, then silence", Probe::Send(Vec::new())),
        ("64 random bytes", Probe::Send(random)),
        (
            "33 bytes of a request",
            Probe::Send(b"GET / HTTP/1.1\r\nHost: localhost\r\n".to_vec()),
        ),
        ("preamble, wrong password", Probe::Send(wrong_preamble)),
        ("TCP, then silence", Probe::Raw(Vec::new())),
        (
            "replayed client (raw)",
            Probe::Raw(captured_client_bytes(&server)),
        ),
    ];
    let targets = [("ours", server.addr), ("nginx", nginx.https)];
    // Every probe against both, three times, in parallel so that the slow ones
    // wait for the site's timeouts together; each starts 15 ms after the one
    // before, so that neither side is timed on a queue of 60 handshakes at once
    // (a prober sends one probe at a time).
    let runs: Vec<_> = probes
        .iter()
        .enumerate()
        .flat_map(|(index, (_, what))| {
            (0..3).flat_map(move |_| targets.map(|(_, addr)| (index, addr, what)))
        })
        .enumerate()
        .map(|(order, (index, addr, what))| {
            let what = what.clone();
            let start = Duration::from_millis(15 * order as u64);
            let run = std::thread::spawn(move || {
                std::thread::sleep(start);
                probe(addr, &what)
            });
            (index, addr, run)
        })
        .collect();
    let mut results: Vec<[Vec<Seen>; 2]> = probes.iter().map(|_| Default::default()).collect();
    for (index, addr, run) in runs {
        let side = usize::from(addr == nginx.https);
        results[index][side].push(run.join().unwrap());
    }

    println!(
        "{:<28} {:>8} {:>8} {:>9} {:>9} {:>6} {:>6} same bytes",
        "probe", "first ms", "(nginx)", "close ms", "(nginx)", "notify", "(ngx)"
    );
    let mut failures = Vec::new();
    for ((name, _), [ours, theirs]) in probes.iter().zip(&results) {
        let first = [ours, theirs].map(|runs| median(runs.iter().map(|s| s.first_byte).collect()));
        let closed = [ours, theirs].map(|runs| median(runs.iter().map(|s| s.closed).collect()));
        let same_bytes = ours
            .iter()
            .chain(theirs)
            .all(|seen| seen.comparable() == theirs[0].comparable());
        let notify = [&ours[0], &theirs[0]].map(|seen| seen.close_notify);
        let alpn = [&ours[0], &theirs[0]].map(|seen| (seen.version, seen.alpn.clone()));
        println!(
            "{name:<28} {:>8} {:>8} {:>9} {:>9} {:>6} {:>6} {same_bytes}",
            ms(first[0]),
            ms(first[1]),
            ms(closed[0]),
            ms(closed[1]),
            notify[0],
            notify[1],
        );
        if !ours[0].records.is_empty() {
            println!(
                "{:<28} record types: ours {:?}, nginx {:?}",
                "", ours[0].records, theirs[0].records
            );
        }
        let near = |[a, b]: [Option<Duration>; 2]| match (a, b) {
            (Some(a), Some(b)) => a.abs_diff(b) <= SAME_TIME,
            (a, b) => a.is_none() && b.is_none(),
        };
        if !same_bytes {
            failures.push(format!(
                "{name}: ours {:?}\nnginx {:?}",
                ours[0].comparable(),
                theirs[0].comparable()
            ));
        }
        if alpn[0] != alpn[1] {
            failures.push(format!(
                "{name}: TLS version and ALPN {:?} vs nginx {:?}",
                alpn[0], alpn[1]
            ));
        }
        if notify[0] != notify[1] {
            failures.push(format!("{name}: close_notify {notify:?} (ours, nginx)"));
        }
        if !near(first) || !near(closed) {
            failures.push(format!(
                "{name}: first byte {first:?}, closed {closed:?} (ours, nginx)"
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    // Nobody got in: the one session opened is the captured client's own.
    let sessions = server
        .log_lines()
        .iter()
        .filter(|l| l.contains("session opened"))
        .count();
    assert_eq!(sessions, 1, "only the captured client has a session");
    drop(nginx);
}
