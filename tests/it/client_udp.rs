//! SOCKS5 UDP ASSOCIATE through the anytls-client binary, carried over UDP over
//! TCP v2 by the anytls-server binary to a local UDP echo: round trips with the
//! source address in the SOCKS header, a burst of 200 datagrams, a domain
//! destination, dropped strangers and fragments, and the association ending with
//! its control connection.

use std::net::UdpSocket;
use std::time::{Duration, Instant};

use crate::common::*;
use anytls::proto::Address;

/// Whether a datagram arrives within `limit`.
fn nothing_arrives(app: &UdpSocket, limit: Duration) -> bool {
    app.set_read_timeout(Some(limit)).unwrap();
    let mut buf = [0u8; 1024];
    let quiet = app.recv_from(&mut buf).is_err();
    app.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    quiet
}

#[test]
fn dns_like_round_trips() {
    let server = TestServer::start(&[]);
    let client = TestClient::start(server.addr, &["-p", PASSWORD]);
    let echo = spawn_udp_echo();
    let (_control, relay) = udp_associate(client.socks);
    let app = app_socket();
    let destination = Address::Ip(echo);
    for i in 0..5u8 {
        let query = [b"query ".as_slice(), &[b'0' + i]].concat();
        app.send_to(&socks_datagram(&destination, &query), relay)
            .unwrap();
        let (source, answer) = receive(&app, relay);
        assert_eq!(source, destination);
        assert_eq!(answer, query);
    }
    // An empty datagram is a datagram too.
    app.send_to(&socks_datagram(&destination, b""), relay)
        .unwrap();
    assert_eq!(receive(&app, relay), (destination, Vec::new()));
}

#[test]
fn burst_of_200_datagrams_arrives_intact() {
    let server = TestServer::start(&[]);
    let client = TestClient::start(server.addr, &["-p", PASSWORD]);
    let echo = spawn_udp_echo();
    let (_control, relay) = udp_associate(client.socks);
    let app = app_socket();
    let destination = Address::Ip(echo);
    const COUNT: usize = 200;
    let payload = |i: usize| {
        let mut payload = (i as u32).to_be_bytes().to_vec();
        payload.extend(pattern(i * 1000, 60 + i % 400));
        payload
    };
    for i in 0..COUNT {
        app.send_to(&socks_datagram(&destination, &payload(i)), relay)
            .unwrap();
    }
    let mut seen = [false; COUNT];
    let deadline = Instant::now() + Duration::from_secs(15);
    for received in 0..COUNT {
        assert!(
            Instant::now() < deadline,
            "only {received} of {COUNT} in time"
        );
        let (source, back) = receive(&app, relay);
        assert_eq!(source, destination);
        let i = u32::from_be_bytes(back[..4].try_into().unwrap()) as usize;
        assert!(i < COUNT, "datagram index {i}");
        assert_eq!(back, payload(i), "datagram {i} corrupted");
        assert!(!seen[i], "datagram {i} twice");
        seen[i] = true;
    }
}

#[test]
fn domain_destination_is_resolved_by_the_server() {
    let server = TestServer::start(&[]);
    let client = TestClient::start(server.addr, &["-p", PASSWORD]);
    let echo = spawn_udp_echo();
    let (_control, relay) = udp_associate(client.socks);
    let app = app_socket();
    let by_name = Address::Domain("localhost".into(), echo.port());
    app.send_to(&socks_datagram(&by_name, b"by name"), relay)
        .unwrap();
    let (source, answer) = receive(&app, relay);
    assert_eq!(answer, b"by name");
    assert_eq!(source, Address::Ip(echo), "the source the server saw");
    // Names and addresses mix in one association.
    app.send_to(&socks_datagram(&Address::Ip(echo), b"by ip"), relay)
        .unwrap();
    assert_eq!(receive(&app, relay), (Address::Ip(echo), b"by ip".to_vec()));
}

#[test]
fn strangers_and_fragments_are_dropped() {
    let server = TestServer::start(&[]);
    let client = TestClient::start(server.addr, &["-p", PASSWORD]);
    let echo = spawn_udp_echo();
    let (_control, relay) = udp_associate(client.socks);
    let app = app_socket();
    let destination = Address::Ip(echo);
    app.send_to(&socks_datagram(&destination, b"first"), relay)
        .unwrap();
    assert_eq!(receive(&app, relay).1, b"first");
    // Another socket is not the association's client.
    let stranger = app_socket();
    stranger
        .send_to(&socks_datagram(&destination, b"stranger"), relay)
        .unwrap();
    assert!(nothing_arrives(&stranger, Duration::from_millis(300)));
    assert!(nothing_arrives(&app, Duration::from_millis(100)));
    // A fragment (FRAG 1) and a malformed header are dropped; the association goes on.
    let mut fragment = socks_datagram(&destination, b"fragment");
    fragment[2] = 1;
    app.send_to(&fragment, relay).unwrap();
    app.send_to(&[0, 0, 0, 9, 1, 2], relay).unwrap();
    assert!(nothing_arrives(&app, Duration::from_millis(300)));
    app.send_to(&socks_datagram(&destination, b"after"), relay)
        .unwrap();
    assert_eq!(receive(&app, relay).1, b"after");
}

#[test]
fn closing_the_control_connection_ends_the_association() {
    let server = TestServer::start(&["--metrics", "127.0.0.1:0"]);
    let client = TestClient::start(server.addr, &["-p", PASSWORD]);
    let echo = spawn_udp_echo();
    let (control, relay) = udp_associate(client.socks);
    let app = app_socket();
    app.send_to(&socks_datagram(&Address::Ip(echo), b"ping"), relay)
        .unwrap();
    assert_eq!(receive(&app, relay).1, b"ping");
    assert_eq!(streams_open(&server, 1), Some(1));
    drop(control);
    assert_eq!(streams_open(&server, 0), Some(0));
    // The session stays open for reuse, and the relay port is gone.
    assert_eq!(server.metric("anytls_sessions_open"), Some(1));
    app.send_to(&socks_datagram(&Address::Ip(echo), b"late"), relay)
        .unwrap();
    assert!(nothing_arrives(&app, Duration::from_millis(300)));
    // The session went back to the pool: the next association reuses it.
    let (_control, relay) = udp_associate(client.socks);
    app.send_to(&socks_datagram(&Address::Ip(echo), b"again"), relay)
        .unwrap();
    assert_eq!(receive(&app, relay).1, b"again");
    assert_eq!(streams_open(&server, 1), Some(1));
    assert_eq!(server.metric("anytls_streams"), Some(2));
    assert_eq!(
        (
            server.metric("anytls_sessions_open"),
            server.metric("anytls_sessions")
        ),
        (Some(1), Some(1))
    );
}

#[test]
fn idle_association_ends_after_udp_idle_timeout() {
    let server = TestServer::start(&["--metrics", "127.0.0.1:0"]);
    let client = TestClient::start(server.addr, &["-p", PASSWORD, "--udp-idle-timeout", "1"]);
    let echo = spawn_udp_echo();
    let (_control, relay) = udp_associate(client.socks);
    let app = app_socket();
    app.send_to(&socks_datagram(&Address::Ip(echo), b"ping"), relay)
        .unwrap();
    assert_eq!(receive(&app, relay).1, b"ping");
    assert_eq!(streams_open(&server, 1), Some(1));
    // The control connection stays open; only the idle timeout can end it.
    assert_eq!(streams_open(&server, 0), Some(0));
    app.send_to(&socks_datagram(&Address::Ip(echo), b"late"), relay)
        .unwrap();
    assert!(nothing_arrives(&app, Duration::from_millis(300)));
}

/// Waits (at most 6 s) for `open` streams on the server; how many there are.
fn streams_open(server: &TestServer, open: u64) -> Option<u64> {
    server.wait_for_metric("anytls_streams_open", Duration::from_secs(6), |n| n == open)
}
