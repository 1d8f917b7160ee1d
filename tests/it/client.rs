//! anytls-client (SOCKS5 inbound) and anytls-server from this repo over real TLS
//! on 127.0.0.1.

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use crate::common::*;

#[test]
fn socks_connect_reaches_target_byte_exact() {
    let server = TestServer::start(&[]);
    let client = TestClient::start(server.addr, &["-p", PASSWORD]);
    let echo = spawn_target(TargetKind::Echo);
    let (mut conn, reply) = socks_connect(client.socks, echo);
    assert_eq!(reply, 0);
    const TOTAL: usize = 8 * 1024 * 1024;
    let mut writer = conn.try_clone().unwrap();
    let sender = std::thread::spawn(move || {
        for offset in (0..TOTAL).step_by(64 * 1024) {
            writer.write_all(&pattern(offset, 64 * 1024)).unwrap();
        }
    });
    let mut received = 0;
    let mut buf = vec![0u8; 64 * 1024];
    while received < TOTAL {
        let n = conn.read(&mut buf).unwrap();
        assert!(n > 0, "closed after {received} bytes");
        assert!(
            buf[..n] == pattern(received, n)[..],
            "differs at {received}"
        );
        received += n;
    }
    sender.join().unwrap();
    drop(conn);
    drop(client);
    server.assert_fds_back_to_baseline();
}

#[test]
fn sequential_connections_reuse_one_session() {
    let server = TestServer::start(&["--metrics", "127.0.0.1:0"]);
    let client = TestClient::start(server.addr, &["-p", PASSWORD]);
    let echo = spawn_target(TargetKind::Echo);
    for i in 0..10 {
        let (mut conn, reply) = socks_connect(client.socks, echo);
        assert_eq!(reply, 0);
        let message = pattern(i, 100 + i);
        assert_eq!(echo_through(&mut conn, &message), message);
        drop(conn);
        // Let the client see the end of the stream before the next connection.
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(server.metric_reaches("anytls_streams_open", |n| n == 0));
    assert_eq!(
        ["anytls_sessions_open", "anytls_sessions", "anytls_streams"].map(|m| server.metric(m)),
        [Some(1), Some(1), Some(10)]
    );
}

#[test]
fn idle_cleanup_keeps_min_idle_sessions() {
    let server = TestServer::start(&["--metrics", "127.0.0.1:0"]);
    let client = TestClient::start(
        server.addr,
        &[
            "-p",
            PASSWORD,
            "-m",
            "2",
            "--idle-session-timeout",
            "1",
            "--idle-check-interval",
            "1",
        ],
    );
    let echo = spawn_target(TargetKind::Echo);
    // Five connections open at once need five sessions.
    let mut conns: Vec<_> = (0..5)
        .map(|i| {
            let (mut conn, reply) = socks_connect(client.socks, echo);
            assert_eq!(reply, 0);
            assert_eq!(echo_through(&mut conn, &[i; 10]), vec![i; 10]);
            conn
        })
        .collect();
    conns.clear();
    let sessions = |open: u64| {
        server.wait_for_metric("anytls_sessions_open", Duration::from_secs(8), |n| {
            n == open
        }) == Some(open)
    };
    assert!(sessions(5));
    assert_eq!(server.metric("anytls_sessions"), Some(5));
    assert!(sessions(2), "{:?}", server.log_lines());
    // And it stays at two.
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(server.metric("anytls_sessions_open"), Some(2));
    assert_eq!(server.metric("anytls_sessions"), Some(5));
    drop(client);
}

#[test]
fn synack_error_becomes_socks_failure() {
    let server = TestServer::start(&[]);
    let client = TestClient::start(server.addr, &["-p", PASSWORD]);
    let closed_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let started = Instant::now();
    let (_conn, reply) = socks_connect(client.socks, closed_port);
    assert_eq!(reply, 5, "connection refused");
    assert!(started.elapsed() < Duration::from_secs(3));
    // The session survives for the next connection.
    let echo = spawn_target(TargetKind::Echo);
    let (mut conn, reply) = socks_connect(client.socks, echo);
    assert_eq!(reply, 0);
    assert_eq!(echo_through(&mut conn, b"after refusal"), b"after refusal");
}

#[test]
fn wrong_password_fails_cleanly() {
    let server = TestServer::start(&[]);
    let mut client = TestClient::start(server.addr, &["-p", "wrong-password"]);
    let echo = spawn_target(TargetKind::Echo);
    for _ in 0..3 {
        let started = Instant::now();
        let (_conn, reply) = socks_connect(client.socks, echo);
        assert_ne!(reply, 0);
        assert!(started.elapsed() < Duration::from_secs(5));
    }
    assert!(client.is_running());
    assert!(server.wait_for_log("authentication failed", Duration::from_secs(2)));
}

/// Sends a plain HTTP proxy request for `http://{target}/` to `proxy`; returns
/// the status line and the body of the answer.
fn proxy_get(proxy: std::net::SocketAddr, target: std::net::SocketAddr) -> (String, String) {
    let mut conn = std::net::TcpStream::connect(proxy).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    write!(
        conn,
        "GET http://{target}/ HTTP/1.1\r\nHost: {target}\r\n\r\n"
    )
    .unwrap();
    let mut answer = String::new();
    conn.read_to_string(&mut answer).unwrap();
    let (head, body) = answer.split_once("\r\n\r\n").unwrap_or((&answer, ""));
    let status = head.lines().next().unwrap_or_default().to_owned();
    (status, body.to_owned())
}

/// Each way a connection can fail upstream is one WARN line in the client's log
/// naming the cause, and the HTTP side answers 502 or 504 with that line.
#[test]
fn each_failed_connection_is_one_warning_with_its_cause() {
    let echo = spawn_target(TargetKind::Echo);
    let check = |client: &TestClient, status: &str, cause: &str| {
        let before = client.log_lines().len();
        let (got_status, body) = proxy_get(client.socks, echo);
        assert!(got_status.contains(status), "{got_status}: {body}");
        assert!(body.contains(cause), "body {body:?} should say {cause:?}");
        let deadline = Instant::now() + Duration::from_secs(5);
        let warnings = loop {
            let warnings: Vec<String> = client.log_lines()[before..]
                .iter()
                .filter(|line| line.contains(" WARN "))
                .cloned()
                .collect();
            if !warnings.is_empty() || Instant::now() > deadline {
                break warnings;
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        assert_eq!(warnings.len(), 1, "{warnings:#?}");
        assert!(
            warnings[0].contains(&format!("HTTP {echo}: {}", body.trim_end())),
            "{warnings:?} vs {body:?}"
        );
    };

    // No server listening.
    let nothing = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let client = TestClient::start(nothing, &["-p", PASSWORD]);
    check(&client, "502", "cannot reach the AnyTLS server");
    drop(client);

    // A server that takes TCP and never answers TLS.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let client = TestClient::start(
        silent.local_addr().unwrap(),
        &["-p", PASSWORD, "--connect-timeout", "1"],
    );
    check(&client, "504", "timed out reaching the AnyTLS server");
    drop(client);

    let server = TestServer::start(&["--deny", "127.0.0.0/8"]);
    // The self-signed certificate is not trusted: the name checked is named.
    let address = server.addr.to_string();
    let client = TestClient::start_args(&["-s", &address, "-p", PASSWORD, "--sni", "proxy1.test"]);
    check(
        &client,
        "502",
        "failed, checking the name proxy1.test: invalid peer certificate",
    );
    drop(client);
    // A password the server does not take.
    let client = TestClient::start(server.addr, &["-p", "not-the-password"]);
    check(&client, "502", "likely a wrong password");
    drop(client);
    // The same through a server whose fallback site answers the wrong password.
    let site = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let site_addr = site.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        for mut conn in site.incoming().take(4).flatten() {
            let answer =
                "HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
            conn.write_all(answer.as_bytes()).ok();
        }
    });
    let with_site = TestServer::start(&["--fallback", &site_addr]);
    let client = TestClient::start(with_site.addr, &["-p", "not-the-password"]);
    check(&client, "502", "likely a wrong password");
    drop(client);
    // The server refuses the target, with its reason.
    let client = TestClient::start(server.addr, &["-p", PASSWORD]);
    check(
        &client,
        "502",
        &format!("server refused the stream: target {echo} is not allowed by this server"),
    );
}

/// Writes a self-signed certificate for `name` made as `openssl req -x509` makes
/// one (`CA:TRUE`) and its key into `dir`; returns their paths.
fn self_signed_ca_true(dir: &std::path::Path, name: &str) -> (String, String) {
    let mut params = rcgen::CertificateParams::new(vec![name.to_owned()]).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, name);
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = params.self_signed(&key).unwrap();
    let (cert_path, key_path) = (
        dir.join(format!("{name}.crt")),
        dir.join(format!("{name}.key")),
    );
    std::fs::write(&cert_path, cert.pem()).unwrap();
    std::fs::write(&key_path, key.serialize_pem()).unwrap();
    (
        cert_path.to_str().unwrap().to_owned(),
        key_path.to_str().unwrap().to_owned(),
    )
}

/// `--ca` with the server's own self-signed `CA:TRUE` certificate trusts exactly
/// that server for the names it carries, and no other certificate or name.
#[test]
fn ca_accepts_a_self_signed_server_certificate_for_its_own_name() {
    let dir = std::env::temp_dir().join(format!("anytls-ca-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (cert, key) = self_signed_ca_true(&dir, "proxy1.test");
    let (other, _) = self_signed_ca_true(&dir, "other.test");
    let server = TestServer::start(&["--cert", &cert, "--key", &key]);
    let address = server.addr.to_string();
    let echo = spawn_target(TargetKind::Echo);
    let start = |ca: &str, sni: &str| {
        TestClient::start_args(&["-s", &address, "-p", PASSWORD, "--ca", ca, "--sni", sni])
    };

    let trusted = start(&cert, "proxy1.test");
    let (mut conn, reply) = socks_connect(trusted.socks, echo);
    assert_eq!(reply, 0, "{:#?}", trusted.log_lines());
    assert_eq!(echo_through(&mut conn, b"through --ca"), b"through --ca");

    for (ca, sni, why) in [
        (
            &cert,
            "proxy2.test",
            "certificate not valid for name \"proxy2.test\"",
        ),
        (&other, "proxy1.test", "UnknownIssuer"),
    ] {
        let client = start(ca, sni);
        let (status, body) = proxy_get(client.socks, echo);
        assert!(status.contains("502"), "{ca} {sni}: {status} {body}");
        assert!(body.contains(why), "{ca} {sni}: {body}");
    }
    std::fs::remove_dir_all(&dir).ok();
}

/// A self-signed server trusted by its fingerprint, not by `insecure`: the
/// client with `--pin-sha256` (or the server's own link, whose `pin` carries
/// it) relays; with another pin it refuses the server.
#[test]
fn a_pinned_self_signed_server_is_trusted_and_no_other() {
    let server = TestServer::start(&[]);
    let fingerprint = logged_fingerprint(&server);
    let echo = spawn_target(TargetKind::Echo);
    let addr = server.addr.to_string();
    let relays = |args: &[&str]| {
        let client = TestClient::start_args(args);
        let (mut conn, reply) = socks_connect(client.socks, echo);
        reply == 0 && echo_through(&mut conn, b"pinned") == b"pinned"
    };
    assert!(relays(&[
        "-s",
        &addr,
        "-p",
        PASSWORD,
        "--pin-sha256",
        &fingerprint
    ]));
    let link = server
        .log_lines()
        .into_iter()
        .find_map(|line| {
            line.split("link for user default: ")
                .nth(1)
                .map(str::to_owned)
        })
        .expect("the server logs its link");
    let pin = fingerprint.replace(':', "").to_lowercase();
    assert!(link.contains(&format!("pin={pin}")), "{link}");
    // The link's pin wins over its insecure=1: a wrong pin is refused.
    assert!(relays(&["-s", &link]));
    let wrong = link.replace(&pin, &"0".repeat(64));
    assert!(!relays(&["-s", &wrong]));
    assert!(!relays(&[
        "-s",
        &addr,
        "-p",
        PASSWORD,
        "--pin-sha256",
        &"ab".repeat(32)
    ]));
}

/// The self-signed certificate's fingerprint the server logged at start.
fn logged_fingerprint(server: &TestServer) -> String {
    assert!(server.wait_for_log("SHA-256 fingerprint", Duration::from_secs(2)));
    let line = server
        .log_lines()
        .into_iter()
        .find(|line| line.contains("SHA-256 fingerprint"))
        .unwrap();
    line.split("SHA-256 fingerprint ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .unwrap()
        .to_owned()
}

/// With `--self-signed-file` the self-signed identity is made once and kept:
/// a restarted server presents the same certificate, so a pin stays good.
#[test]
fn a_kept_self_signed_identity_survives_a_restart() {
    let dir = std::env::temp_dir().join(format!("anytls-identity-{}", std::process::id()));
    let file = dir.join("state/self-signed.pem");
    let flags = ["--self-signed-file", file.to_str().unwrap()];
    let first = TestServer::start(&flags);
    let made = logged_fingerprint(&first);
    assert!(first.logged("made now and kept in"));
    drop(first);
    let second = TestServer::start(&flags);
    assert_eq!(logged_fingerprint(&second), made);
    assert!(second.logged("; kept in"));
    // Without it, each start makes another.
    let (a, b) = (TestServer::start(&[]), TestServer::start(&[]));
    assert_ne!(logged_fingerprint(&a), logged_fingerprint(&b));
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn client_recovers_after_server_restart() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let listen = format!("127.0.0.1:{port}");
    let echo = spawn_target(TargetKind::Echo);
    let server = TestServer::start_on(&listen, &[]);
    let client = TestClient::start(server.addr, &["-p", PASSWORD]);
    let (mut conn, reply) = socks_connect(client.socks, echo);
    assert_eq!(reply, 0);
    assert_eq!(echo_through(&mut conn, b"before"), b"before");
    drop(conn);
    drop(server); // SIGKILL: the idle session dies with it
    let server = TestServer::start_on(&listen, &[]);
    let (mut conn, reply) = socks_connect(client.socks, echo);
    assert_eq!(reply, 0, "{:?}", client.log_lines());
    assert_eq!(echo_through(&mut conn, b"after"), b"after");
    drop(server);
}

#[test]
fn bad_client_flags_exit_2() {
    let run = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_anytls-client"))
            .args(args)
            .output()
            .unwrap()
    };
    let out = run(&["-s", "anytls://@:1"]);
    assert_eq!(out.status.code(), Some(2));
    let out = run(&["-s", "127.0.0.1:1"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("password is required"));
    let out = run(&["-s", "127.0.0.1:1", "-p", "x", "--ca", "/nonexistent.pem"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent.pem"));
}

/// A tiny web server on 127.0.0.1: answers every request with `hello <path>`
/// and closes; records each request head it received.
fn spawn_web_server() -> (std::net::SocketAddr, std::sync::mpsc::Receiver<String>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let (heads, received) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for conn in listener.incoming().take(16) {
            let Ok(mut conn) = conn else { continue };
            conn.set_read_timeout(Some(Duration::from_secs(5))).ok();
            let mut head = Vec::new();
            let mut byte = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") && conn.read(&mut byte).unwrap_or(0) == 1 {
                head.push(byte[0]);
            }
            let head = String::from_utf8_lossy(&head).into_owned();
            let path = head.split_whitespace().nth(1).unwrap_or("?").to_owned();
            let body = format!("hello {path}");
            let response = format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            conn.write_all(response.as_bytes()).ok();
            heads.send(head).ok();
        }
    });
    (addr, received)
}

fn curl(args: &[&str]) -> String {
    let output = std::process::Command::new("curl")
        .args(["-sS", "--max-time", "10", "--noproxy", ""])
        .args(args)
        .output()
        .expect("curl runs");
    assert!(
        output.status.success(),
        "curl {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

#[test]
fn one_port_serves_http_connect_plain_http_and_socks5() {
    if std::process::Command::new("curl")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("skipped: curl is not installed (.ci/run installs it)");
        return;
    }
    let server = TestServer::start(&[]);
    let client = TestClient::start(server.addr, &["-p", PASSWORD]);
    let (web, heads) = spawn_web_server();
    let proxy = format!("http://{}", client.socks);
    let socks = client.socks.to_string();
    let url = format!("http://127.0.0.1:{}/a?b=1", web.port());

    // A plain request with an absolute URI, rewritten to origin form.
    assert_eq!(curl(&["-x", &proxy, &url]), "hello /a?b=1");
    let head = heads.recv_timeout(Duration::from_secs(5)).unwrap();
    assert!(head.starts_with("GET /a?b=1 HTTP/1.1\r\n"), "{head}");
    assert!(
        !head.to_ascii_lowercase().contains("proxy-connection"),
        "{head}"
    );
    // CONNECT (curl -p tunnels through the proxy).
    assert_eq!(curl(&["-p", "-x", &proxy, &url]), "hello /a?b=1");
    heads.recv_timeout(Duration::from_secs(5)).unwrap();
    // SOCKS5 on the same port, the name resolved by the server.
    let by_name = format!("http://localhost:{}/c", web.port());
    assert_eq!(curl(&["--socks5-hostname", &socks, &by_name]), "hello /c");
    heads.recv_timeout(Duration::from_secs(5)).unwrap();

    // A request that is not a proxy request gets 400, and the port goes on.
    let mut conn = std::net::TcpStream::connect(client.socks).unwrap();
    conn.write_all(b"GET /index.html HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut answer = String::new();
    conn.read_to_string(&mut answer).unwrap();
    assert!(
        answer.starts_with("HTTP/1.1 400 Bad Request\r\n"),
        "{answer}"
    );
    // A refused target: 502.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let refused = format!("http://127.0.0.1:{}/", closed.port());
    let output = std::process::Command::new("curl")
        .args([
            "-s",
            "--noproxy",
            "",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "-x",
            &proxy,
            &refused,
        ])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&output.stdout), "502");
    assert_eq!(curl(&["-x", &proxy, &url]), "hello /a?b=1");
    drop(client); // its pooled sessions hold server descriptors
    server.assert_fds_back_to_baseline();
}
