//! Operator features through the real server binary: fallback for failed
//! authentication, several users, and SIGHUP reloads.

mod common;

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::time::Duration;

use anytls::client::{connect_tls, ClientConfig, ClientSession};
use anytls::mux::timeout;
use anytls::tls::{client_config, ServerVerification};
use common::*;
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

fn config_with(server: SocketAddr, password: &str) -> ClientConfig {
    ClientConfig::new(
        server,
        "localhost",
        client_config(ServerVerification::Insecure),
        password,
    )
}

#[test]
fn failed_authentication_gets_the_fallback_web_page() {
    let web = web_server();
    let server = TestServer::start(&["--fallback", &web.to_string()]);
    run_local(async {
        // An HTTPS request, as a prober would send it.
        let mut tls = connect_tls(&server.client_config()).await.unwrap();
        tls.write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\nUser-Agent: probe\r\n\r\n")
            .await
            .unwrap();
        tls.flush().await.unwrap();
        let mut response = Vec::new();
        timeout(Duration::from_secs(5), tls.read_to_end(&mut response))
            .await
            .expect("the web page within 5 s")
            .ok();
        let response = String::from_utf8_lossy(&response);
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

    // A session open across the reload keeps working.
    let (held_tx, held_rx) = std::sync::mpsc::channel::<()>();
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    let holder = std::thread::spawn(move || {
        run_local(async move {
            let session = ClientSession::connect(&config_with(addr, "bob-pw"))
                .await
                .unwrap();
            session.heartbeat().await.unwrap();
            held_tx.send(()).unwrap();
            while done_rx.try_recv().is_err() {
                glommio::timer::sleep(Duration::from_millis(20)).await;
            }
            session.heartbeat().await.is_ok()
        })
    });
    held_rx.recv_timeout(Duration::from_secs(10)).unwrap();
    std::fs::write(&file, "alice:alice-pw\ncarol:carol-pw\n").unwrap();
    server.signal(libc::SIGHUP);
    assert!(
        server.wait_for_log("SIGHUP: reloaded 5 user(s)", Duration::from_secs(5)),
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
    assert!(
        holder.join().unwrap(),
        "bob's open session survived the reload"
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
    let mut conn = std::net::TcpStream::connect(addr).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(conn, "GET {path} HTTP/1.1\r\nHost: metrics\r\n\r\n").unwrap();
    let mut response = String::new();
    conn.read_to_string(&mut response).unwrap();
    response
}

#[test]
fn metrics_endpoint_serves_prometheus_text() {
    let server = TestServer::start(&["--metrics", "127.0.0.1:0", "--pool-type", "lockfree"]);
    assert!(server.wait_for_log("metrics on http://", Duration::from_secs(5)));
    let line = server
        .log_lines()
        .into_iter()
        .find(|l| l.contains("metrics on http://"))
        .expect("metrics address logged");
    let addr: SocketAddr = line
        .split("http://")
        .nth(1)
        .and_then(|rest| rest.split('/').next())
        .unwrap()
        .parse()
        .unwrap();
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
        ] {
            assert!(
                body.lines().any(|l| l == line),
                "missing {line:?} in\n{body}"
            );
        }
        assert!(http_get(addr, "/nope").starts_with("HTTP/1.1 404"));
    });
}
