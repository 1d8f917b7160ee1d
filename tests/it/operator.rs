//! Operator features through the real server binary: fallback for failed
//! authentication (with its PROXY protocol header and write timeout), several
//! users, SIGHUP reloads, and the metrics endpoint (its token, allow-list,
//! concurrency bound and render cache).

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::common::*;
use anytls::client::{connect_tls, ClientSession};
use anytls::plumbing::timeout;
use anytls::proto::frame;
use futures_lite::{AsyncReadExt, AsyncWriteExt};

const PAGE: &str = "hello from the fallback web site";

/// A tiny HTTP/1.1 server on 127.0.0.1 answering every request with [`PAGE`].
fn web_server() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            std::thread::spawn(move || {
                conn.set_read_timeout(Some(Duration::from_secs(10))).ok();
                let mut request = Vec::new();
                let mut buf = [0u8; 1024];
                while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                    match conn.read(&mut buf) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => request.extend_from_slice(&buf[..n]),
                    }
                }
                let response = format!(
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{PAGE}",
                    PAGE.len()
                );
                let _ = conn.write_all(response.as_bytes());
            });
        }
    });
    addr
}

/// What a prober that sends `request` over TLS gets back (within 5 s), and how
/// long after sending it the connection closed.
async fn probe(server: &TestServer, request: &[u8]) -> (String, Duration) {
    let mut tls = connect_tls(&server.client_config()).await.unwrap();
    let started = Instant::now();
    tls.write_all(request).await.unwrap();
    tls.flush().await.unwrap();
    let mut response = Vec::new();
    timeout(Duration::from_secs(5), tls.read_to_end(&mut response))
        .await
        .expect("an answer within 5 s")
        .ok();
    (
        String::from_utf8_lossy(&response).into_owned(),
        started.elapsed(),
    )
}

#[test]
fn failed_authentication_gets_the_fallback_web_page() {
    let web = web_server();
    let server = TestServer::start(&["--fallback", &web.to_string()]);
    run_local(async {
        // An HTTPS request, as a prober would send it.
        let (response, _) = probe(
            &server,
            b"GET / HTTP/1.1\r\nHost: localhost\r\nUser-Agent: probe\r\n\r\n",
        )
        .await;
        assert!(response.starts_with("HTTP/1.1 200 OK"), "{response}");
        assert!(response.ends_with(PAGE), "{response}");
        // Real clients are unaffected.
        let session = ClientSession::connect(&server.client_config())
            .await
            .unwrap();
        session.heartbeat().await.unwrap();
        // A wrong password from an AnyTLS client also lands on the web server.
        let wrong = ClientSession::connect(&config_with(server.addr, "nope"))
            .await
            .unwrap();
        assert!(timeout(Duration::from_secs(3), wrong.heartbeat())
            .await
            .is_none_or(|r| r.is_err()));
    });
    assert!(server.wait_for_log("handed to fallback", Duration::from_secs(2)));
    server.assert_fds_back_to_baseline();
}

/// A request shorter than the preamble's 34 fixed bytes (`GET / HTTP/1.0` and an
/// empty line: 18 bytes) gets the fallback's page as soon as the prober pauses,
/// not at the handshake timeout (10 s) as before.
#[test]
fn a_short_request_gets_the_fallback_page_at_once() {
    let web = web_server();
    let server = TestServer::start(&["--fallback", &web.to_string()]);
    run_local(async {
        let (response, elapsed) = probe(&server, b"GET / HTTP/1.0\r\n\r\n").await;
        println!("18-byte request answered by the fallback after {elapsed:?}");
        assert!(response.ends_with(PAGE), "{response}");
        assert!(
            elapsed < Duration::from_secs(1),
            "answered after {elapsed:?}, not at once"
        );
    });
    assert!(server.wait_for_log("fewer than 34 bytes, then a pause", Duration::from_secs(2)));
    server.assert_fds_back_to_baseline();
}

/// A client that sends nothing for a while after TLS gets a fallback connection
/// opened (so the site's own timers start on time), yet a real client whose
/// preamble comes late is still admitted, and that connection is closed unused.
#[test]
fn a_late_preamble_is_admitted_and_the_opened_fallback_closed_unused() {
    let (fallback, received) = recording_fallback();
    let server = TestServer::start(&["--fallback", &fallback.to_string()]);
    run_local(async {
        let mut tls = connect_tls(&server.client_config()).await.unwrap();
        glommio::timer::sleep(Duration::from_millis(200)).await;
        let wire = [preamble(PASSWORD), settings_frame(&default_md5())].concat();
        tls.write_all(&wire).await.unwrap();
        tls.flush().await.unwrap();
        let (frames, _) = read_frames(&mut tls, |f| {
            f.iter()
                .any(|(c, _, _)| *c == frame::Command::ServerSettings)
        })
        .await;
        assert!(!frames.is_empty());
        let standby = received
            .recv_timeout(Duration::from_secs(5))
            .expect("the fallback connection opened after 20 ms of silence was closed");
        assert!(standby.is_empty(), "nothing was sent to it: {standby:?}");
    });
    assert!(server.logged("session opened"));
}

#[test]
fn several_users_and_sighup_reload() {
    let dir = std::env::temp_dir().join(format!("anytls-users-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("users");
    std::fs::write(&file, "# users\nalice:alice-pw\nbob:bob-pw\n").unwrap();
    let mut server = TestServer::start(&[
        "-p",
        "extra-1",
        "-p",
        "extra-2",
        "--users",
        file.to_str().unwrap(),
    ]);
    let addr = server.addr;
    let works = |password: &'static str| {
        run_local(async move {
            let session = ClientSession::connect(&config_with(addr, password))
                .await
                .unwrap();
            timeout(Duration::from_secs(3), session.heartbeat())
                .await
                .is_some_and(|r| r.is_ok())
        })
    };
    // TestServer adds its own -p too: five users in all.
    for password in ["extra-1", "extra-2", "alice-pw", "bob-pw", PASSWORD] {
        assert!(works(password), "{password} must authenticate");
    }
    assert!(!works("carol-pw"));
    assert!(server.wait_for_log("session opened for user alice", Duration::from_secs(2)));

    // Across the reload, a kept user's open session goes on and a removed
    // user's is closed (within the session watchdog's 5 s).
    let (held_tx, held_rx) = std::sync::mpsc::channel::<()>();
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    let holder = std::thread::spawn(move || {
        run_local(async move {
            let alice = ClientSession::connect(&config_with(addr, "alice-pw"))
                .await
                .unwrap();
            let bob = ClientSession::connect(&config_with(addr, "bob-pw"))
                .await
                .unwrap();
            alice.heartbeat().await.unwrap();
            bob.heartbeat().await.unwrap();
            held_tx.send(()).unwrap();
            while done_rx.try_recv().is_err() {
                glommio::timer::sleep(Duration::from_millis(20)).await;
            }
            let bob_closed = eventually(Duration::from_secs(8), || bob.is_closed()).await;
            (bob_closed, alice.heartbeat().await.is_ok())
        })
    });
    held_rx.recv_timeout(Duration::from_secs(10)).unwrap();
    std::fs::write(&file, "alice:alice-pw\ncarol:carol-pw\n").unwrap();
    server.signal(libc::SIGHUP);
    assert!(
        server.wait_for_log(
            "SIGHUP: reloaded 5 user(s): 1 added (carol), 1 removed (their sessions are closed) (bob)",
            Duration::from_secs(5)
        ),
        "{:?}",
        server
            .log_lines()
            .iter()
            .filter(|l| l.contains("SIGHUP") || l.contains("ERROR") || l.contains("WARN"))
            .collect::<Vec<_>>()
    );
    assert!(works("carol-pw"), "a new user works after SIGHUP");
    assert!(!works("bob-pw"), "a removed user no longer authenticates");
    done_tx.send(()).unwrap();
    let (bob_closed, alice_goes_on) = holder.join().unwrap();
    assert!(bob_closed, "the removed user's open session was closed");
    assert!(
        alice_goes_on,
        "a kept user's open session survived the reload"
    );

    // A broken file keeps the current users.
    std::fs::write(&file, "this line has no colon\n").unwrap();
    server.signal(libc::SIGHUP);
    assert!(server.wait_for_log("keeping the current users", Duration::from_secs(5)));
    assert!(works("carol-pw"));
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn sighup_reloads_the_padding_scheme() {
    let dir = std::env::temp_dir().join(format!("anytls-padding-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("scheme");
    std::fs::write(&file, "stop=2\n0=20-20\n1=100-200").unwrap();
    let mut server = TestServer::start(&["--padding-scheme", file.to_str().unwrap()]);
    let addr = server.addr;
    let scheme_seen = move || {
        run_local(async move {
            let config = config_with(addr, PASSWORD);
            let session = ClientSession::connect(&config).await.unwrap();
            session.heartbeat().await.unwrap();
            let text = config.padding.borrow().text().to_owned();
            text
        })
    };
    assert_eq!(scheme_seen(), "stop=2\n0=20-20\n1=100-200");
    std::fs::write(&file, "stop=3\n0=30-30\n1=100-200\n2=50-60").unwrap();
    server.signal(libc::SIGHUP);
    assert!(server.wait_for_log(
        "SIGHUP: reloaded the padding scheme",
        Duration::from_secs(5)
    ));
    assert_eq!(scheme_seen(), "stop=3\n0=30-30\n1=100-200\n2=50-60");
    std::fs::write(&file, "no stop line").unwrap();
    server.signal(libc::SIGHUP);
    assert!(server.wait_for_log("keeping the current padding scheme", Duration::from_secs(5)));
    assert_eq!(scheme_seen(), "stop=3\n0=30-30\n1=100-200\n2=50-60");
    std::fs::remove_dir_all(dir).unwrap();
}

fn http_get(addr: SocketAddr, path: &str) -> String {
    http_request(addr, path, "")
}

/// `GET path` with extra `headers` (each ending in CRLF); the whole response.
fn http_request(addr: SocketAddr, path: &str, headers: &str) -> String {
    let mut conn = std::net::TcpStream::connect(addr).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(
        conn,
        "GET {path} HTTP/1.1\r\nHost: metrics\r\n{headers}\r\n"
    )
    .unwrap();
    let mut response = String::new();
    conn.read_to_string(&mut response).unwrap();
    response
}

/// What a connection from `conn` gets for a scrape: the bytes read until the
/// server closed it (an error, such as a reset, ends them too).
fn scrape_over(mut conn: std::net::TcpStream) -> Vec<u8> {
    conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let _ = conn.write_all(b"GET /metrics HTTP/1.1\r\nHost: metrics\r\n\r\n");
    let mut response = Vec::new();
    let mut buf = [0u8; 4096];
    while let Ok(n @ 1..) = conn.read(&mut buf) {
        response.extend_from_slice(&buf[..n]);
    }
    response
}

#[test]
fn metrics_endpoint_serves_prometheus_text() {
    let server = TestServer::start(&["--metrics", "127.0.0.1:0", "--pool-type", "lockfree"]);
    let addr = server.metrics_addr();
    let echo = spawn_target(TargetKind::Echo);
    run_local(async {
        let session = ClientSession::connect(&server.client_config())
            .await
            .unwrap();
        let stream = session
            .open_stream(&anytls::proto::Address::Ip(echo))
            .unwrap();
        stream.write_all(&[7u8; 1000]).await.unwrap();
        let mut got = 0;
        let mut buf = [0u8; 1000];
        while got < 1000 {
            got += stream.read(&mut buf).await;
        }
        stream.close();
        let body = http_get(addr, "/metrics");
        assert!(body.starts_with("HTTP/1.1 200 OK"), "{body}");
        assert!(
            body.contains("Content-Type: application/openmetrics-text; version=1.0.0"),
            "{body}"
        );
        assert!(body.trim_end().ends_with("# EOF"), "{body}");
        for line in [
            "# TYPE anytls_sessions_open gauge",
            "anytls_sessions_open 1",
            "anytls_sessions_total 1",
            "anytls_streams_total 1",
            "anytls_bytes_total{direction=\"up\"} 1000",
            "anytls_user_bytes_total{user=\"default\",direction=\"up\"} 1000",
            "anytls_user_bytes_total{user=\"default\",direction=\"down\"} 1000",
            "anytls_core_sessions_open{core=\"0\"} 1",
            "anytls_pool_new_total{kind=\"lockfree\"} 1",
            "anytls_auth_failures_total 0",
            concat!(
                "anytls_build_info{version=\"",
                env!("CARGO_PKG_VERSION"),
                "\"} 1"
            ),
        ] {
            assert!(
                body.lines().any(|l| l == line),
                "missing {line:?} in\n{body}"
            );
        }
        // The process's own: resident memory and descriptors, as the kernel counts them.
        let rss = metric_in(&body, "anytls_resident_memory_bytes").expect("resident memory");
        assert!(rss > (1 << 20) && rss < (1 << 32), "{rss}");
        let fds = metric_in(&body, "anytls_open_descriptors").expect("descriptors");
        assert!(fds >= 4 && fds as usize <= server.fd_count() + 4, "{fds}");
        assert!(http_get(addr, "/nope").starts_with("HTTP/1.1 404"));
    });
}

/// What an operator alerts on: targets refused by policy and dials that failed,
/// each by reason; reloads by result; when the certificate expires.
#[test]
fn metrics_count_refusals_dial_failures_reloads_and_the_certificate_expiry() {
    let dir = std::env::temp_dir().join(format!("anytls-alerting-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut params = rcgen::CertificateParams::new(vec!["proxy1.test".to_owned()]).unwrap();
    params.not_after = rcgen::date_time_ymd(2031, 1, 1);
    let key = rcgen::KeyPair::generate().unwrap();
    let (cert_path, key_path) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert_path, params.self_signed(&key).unwrap().pem()).unwrap();
    std::fs::write(&key_path, key.serialize_pem()).unwrap();
    let mut server = TestServer::start(&[
        "--metrics",
        "127.0.0.1:0",
        "--deny",
        "10.0.0.0/8",
        "--cert",
        cert_path.to_str().unwrap(),
        "--key",
        key_path.to_str().unwrap(),
    ]);
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let own = server.addr;
    run_local(async {
        let session = ClientSession::connect(&server.client_config())
            .await
            .unwrap();
        for target in ["10.1.2.3:80".parse().unwrap(), own, closed] {
            let stream = session
                .open_stream(&anytls::proto::Address::Ip(target))
                .unwrap();
            assert!(stream.established().await.is_err(), "{target}");
        }
    });
    // One reload that loads, one whose certificate does not.
    server.signal(libc::SIGHUP);
    let deadline = Instant::now() + Duration::from_secs(10);
    while metric_in(
        &http_get(server.metrics_addr(), "/metrics"),
        "anytls_reloads{result=\"succeeded\"}",
    ) != Some(1)
    {
        assert!(Instant::now() < deadline, "the first reload never counted");
        std::thread::sleep(Duration::from_millis(100));
    }
    std::fs::write(&cert_path, "not a certificate").unwrap();
    let skip = server.log_len();
    server.signal(libc::SIGHUP);
    assert!(server.wait_for_log_after(
        skip,
        "SIGHUP: keeping the current certificate",
        Duration::from_secs(5)
    ));
    std::thread::sleep(Duration::from_millis(1100)); // past the render cache
    let body = http_get(server.metrics_addr(), "/metrics");
    for (selector, want) in [
        ("anytls_target_refusals{reason=\"deny_range\"}", 1),
        ("anytls_target_refusals{reason=\"own_socket\"}", 1),
        ("anytls_target_refusals{reason=\"route\"}", 0),
        ("anytls_dial_failures{reason=\"refused\"}", 1),
        ("anytls_dial_failures{reason=\"timeout\"}", 0),
        ("anytls_reloads{result=\"succeeded\"}", 1),
        ("anytls_reloads{result=\"failed\"}", 1),
        // 2031-01-01T00:00:00Z
        ("anytls_certificate_expiry_timestamp_seconds", 1_924_992_000),
    ] {
        assert_eq!(
            metric_in(&body, selector),
            Some(want),
            "{selector} in\n{body}"
        );
    }
    std::fs::remove_dir_all(&dir).ok();
}

const TOKEN_HEADER: &str = "Authorization: Bearer s3cret\r\n";

#[test]
fn metrics_need_the_bearer_token() {
    let server = TestServer::start(&["--metrics", "127.0.0.1:0", "--metrics-token", "s3cret"]);
    let addr = server.metrics_addr();
    for headers in ["", "Authorization: Bearer wrong\r\n"] {
        let response = http_request(addr, "/metrics", headers);
        assert!(
            response.starts_with("HTTP/1.1 401 Unauthorized\r\n"),
            "{response}"
        );
        assert!(
            response.contains("\r\nWWW-Authenticate: Bearer\r\n"),
            "{response}"
        );
        assert!(
            !response.contains("anytls_"),
            "nothing rendered: {response}"
        );
    }
    let response = http_request(addr, "/metrics", TOKEN_HEADER);
    assert!(response.starts_with("HTTP/1.1 200 OK\r\n"), "{response}");
    for line in [
        "anytls_sessions_open 0",
        "anytls_metrics_refused_total{reason=\"token\"} 2",
        "anytls_metrics_refused_total{reason=\"address\"} 0",
        "anytls_metrics_refused_total{reason=\"busy\"} 0",
    ] {
        assert!(
            response.lines().any(|l| l == line),
            "missing {line:?} in\n{response}"
        );
    }
    assert!(server.wait_for_log("metrics scrape from 127.0.0.1:", Duration::from_secs(5)));
}

#[test]
fn metrics_from_outside_the_allow_list_are_closed_unanswered() {
    use socket2::{Domain, Socket, Type};
    // All of 127.0.0.0/8 is this host: scrape from 127.0.0.2 (allowed) and from
    // 127.0.0.1 (not).
    let server = TestServer::start(&[
        "--metrics",
        "127.0.0.1:0",
        "--metrics-allow",
        "127.0.0.2/32",
    ]);
    let addr = server.metrics_addr();
    let from = |source: &str| {
        let socket = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
        socket
            .bind(&source.parse::<SocketAddr>().unwrap().into())
            .unwrap();
        socket.connect(&addr.into()).unwrap();
        scrape_over(socket.into())
    };
    assert_eq!(from("127.0.0.1:0"), b"", "closed without an answer");
    let response = String::from_utf8(from("127.0.0.2:0")).unwrap();
    assert!(response.starts_with("HTTP/1.1 200 OK\r\n"), "{response}");
    assert!(
        response
            .lines()
            .any(|l| l == "anytls_metrics_refused_total{reason=\"address\"} 1"),
        "{response}"
    );
}

#[test]
fn scrapes_past_the_concurrency_bound_are_closed_at_once() {
    let server = TestServer::start(&["--metrics", "127.0.0.1:0"]);
    let addr = server.metrics_addr();
    // 16 scrapers that send nothing hold every slot (for up to 5 s each).
    let holders: Vec<_> = (0..16)
        .map(|_| std::net::TcpStream::connect(addr).unwrap())
        .collect();
    let started = std::time::Instant::now();
    let refused = scrape_over(std::net::TcpStream::connect(addr).unwrap());
    assert_eq!(refused, b"", "the 17th is closed without an answer");
    assert!(started.elapsed() < Duration::from_secs(2), "at once");
    drop(holders);
    // Until the server has seen the holders go, scrapes are still refused (and
    // counted): count them too.
    let mut refusals = 1;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let response = loop {
        let response =
            String::from_utf8(scrape_over(std::net::TcpStream::connect(addr).unwrap())).unwrap();
        if response.starts_with("HTTP/1.1 200") || std::time::Instant::now() > deadline {
            break response;
        }
        assert_eq!(response, "", "refused, or answered 200");
        refusals += 1;
        std::thread::sleep(Duration::from_millis(50));
    };
    let busy = format!("anytls_metrics_refused_total{{reason=\"busy\"}} {refusals}");
    assert!(response.lines().any(|l| l == busy), "{busy} in {response}");
    server.assert_fds_back_to_baseline();
}

#[test]
fn scrapes_within_a_second_get_the_same_render() {
    let server = TestServer::start(&["--metrics", "127.0.0.1:0", "--metrics-token", "s3cret"]);
    let addr = server.metrics_addr();
    let refused_line = |n: u64| format!("anytls_metrics_refused_total{{reason=\"token\"}} {n}");
    let mut refused = 0;
    for attempt in 0.. {
        let started = std::time::Instant::now();
        let first = http_request(addr, "/metrics", TOKEN_HEADER);
        // A counter changes between the two scrapes: a refused one.
        assert!(http_get(addr, "/metrics").starts_with("HTTP/1.1 401"));
        refused += 1;
        let second = http_request(addr, "/metrics", TOKEN_HEADER);
        if started.elapsed() >= Duration::from_millis(800) && attempt < 3 {
            // Too slow a machine to tell within the second: again.
            std::thread::sleep(Duration::from_millis(1100));
            continue;
        }
        assert!(first.starts_with("HTTP/1.1 200 OK"), "{first}");
        assert!(
            first.lines().any(|l| l == refused_line(refused - 1)),
            "{first}"
        );
        assert_eq!(first, second, "the second scrape got the cached render");
        break;
    }
    std::thread::sleep(Duration::from_millis(1100));
    let later = http_request(addr, "/metrics", TOKEN_HEADER);
    assert!(
        later.lines().any(|l| l == refused_line(refused)),
        "a second later the render is new: {later}"
    );
}

/// A fallback that records what it receives on each connection and answers nothing.
fn recording_fallback() -> (SocketAddr, std::sync::mpsc::Receiver<Vec<u8>>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            let tx = tx.clone();
            std::thread::spawn(move || {
                conn.set_read_timeout(Some(Duration::from_secs(10))).ok();
                let mut seen = Vec::new();
                let mut buf = [0u8; 4096];
                while let Ok(n @ 1..) = conn.read(&mut buf) {
                    seen.extend_from_slice(&buf[..n]);
                }
                let _ = tx.send(seen);
            });
        }
    });
    (addr, rx)
}

/// What the fallback receives when a client with a wrong password sends
/// `message` after its preamble, and the client's source port.
fn fallback_receives(extra: &[&str], message: &[u8]) -> (Vec<u8>, u16, u16) {
    let (fallback, received) = recording_fallback();
    let fallback = fallback.to_string();
    let server = TestServer::start(&[&["--fallback", &fallback][..], extra].concat());
    let sent = [preamble("wrong password"), message.to_vec()].concat();
    let port = run_local(async {
        let mut tls = connect_tls(&server.client_config()).await.unwrap();
        let port = tls.get_ref().0.local_addr().unwrap().port();
        tls.write_all(&sent).await.unwrap();
        tls.flush().await.unwrap();
        assert!(
            eventually(Duration::from_secs(5), || server
                .logged("handed to fallback"))
            .await
        );
        // Closing ends the relay, and with it the fallback's connection.
        let _ = tls.close().await;
        port
    });
    let seen = received
        .recv_timeout(Duration::from_secs(10))
        .expect("the fallback saw the connection end");
    let rest = seen
        .strip_suffix(&sent[..])
        .unwrap_or_else(|| panic!("the client's bytes come last: {seen:?}"));
    (rest.to_vec(), port, server.addr.port())
}

#[test]
fn the_fallback_gets_a_proxy_protocol_header_naming_the_client() {
    let message = b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n";
    let (header, client, server) = fallback_receives(&["--fallback-proxy-protocol", "v1"], message);
    assert_eq!(
        String::from_utf8(header).unwrap(),
        format!("PROXY TCP4 127.0.0.1 127.0.0.1 {client} {server}\r\n")
    );
    let (header, client, server) = fallback_receives(&["--fallback-proxy-protocol", "v2"], message);
    let mut expected = b"\r\n\r\n\0\r\nQUIT\n\x21\x11\x00\x0c".to_vec();
    expected.extend_from_slice(&[127, 0, 0, 1, 127, 0, 0, 1]);
    expected.extend_from_slice(&client.to_be_bytes());
    expected.extend_from_slice(&server.to_be_bytes());
    assert_eq!(header, expected);
    let (header, _, _) = fallback_receives(&[], message);
    assert_eq!(header, b"", "no header unless asked for");
}

#[test]
fn a_client_that_never_reads_the_fallback_is_closed_after_the_write_timeout() {
    // A fallback that writes as fast as it can, and says when a write fails.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let fallback = listener.local_addr().unwrap().to_string();
    let (closed_tx, closed_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        if let Ok((mut conn, _)) = listener.accept() {
            let chunk = vec![0x55u8; 64 * 1024];
            while conn.write_all(&chunk).is_ok() {}
            let _ = closed_tx.send(());
        }
    });
    let server = TestServer::start(&["--fallback", &fallback, "--write-timeout", "1"]);
    run_local(async {
        let mut tls = connect_tls(&server.client_config()).await.unwrap();
        tls.write_all(&preamble("wrong password")).await.unwrap();
        tls.flush().await.unwrap();
        // Never read: the server's writes to us stall until the write timeout.
        let closed = eventually(Duration::from_secs(15), || closed_rx.try_recv().is_ok()).await;
        assert!(
            closed,
            "the relay ended within 15 s (idle timeout: 120 s, write timeout: 1 s)"
        );
        drop(tls);
    });
    server.assert_fds_back_to_baseline();
}
