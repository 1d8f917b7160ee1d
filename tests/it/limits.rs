//! Every wait is bounded: idle streams, clients that stop reading, and a scan of
//! 10,000 connections that send nothing or garbage all end, and the server's file
//! descriptors and memory return to their baseline.

use std::io::Write;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use crate::common::*;
use anytls::client::{connect_tls, ClientSession};
use anytls::plumbing::timeout;
use anytls::proto::auth::{encode_preamble, PasswordHash};
use anytls::proto::frame::{self, Command};
use anytls::proto::{Address, Settings};
use futures_lite::AsyncWriteExt;

#[test]
fn idle_stream_is_closed_and_session_goes_on() {
    let server = TestServer::start(&["--stream-idle-timeout", "1"]);
    let echo = spawn_target(TargetKind::Echo);
    run_local(async {
        let session = ClientSession::connect(&server.client_config())
            .await
            .unwrap();
        let stream = session.open_stream(&Address::Ip(echo)).unwrap();
        assert_eq!(stream.established().await, Ok(()));
        let started = Instant::now();
        let n = timeout(Duration::from_secs(5), stream.read(&mut [0u8; 8]))
            .await
            .expect("FIN for the idle stream");
        assert_eq!(n, 0);
        assert!(started.elapsed() >= Duration::from_millis(900));
        session.heartbeat().await.unwrap();
    });
    server.assert_fds_back_to_baseline();
}

#[test]
fn client_that_stops_reading_is_dropped() {
    let server = TestServer::start(&["--write-timeout", "1"]);
    let source = spawn_target(TargetKind::Source);
    run_local(async {
        // A raw client that asks for a firehose and then never reads.
        let mut tls = connect_tls(&server.client_config()).await.unwrap();
        let mut wire = Vec::new();
        encode_preamble(&PasswordHash::of(PASSWORD), 0, &mut wire);
        let md5 = anytls::proto::PaddingScheme::default().md5_hex().to_owned();
        frame::encode(
            Command::Settings,
            0,
            &Settings::client("t/1", &md5).encode(),
            &mut wire,
        )
        .unwrap();
        let mut address = Vec::new();
        Address::Ip(source).encode(&mut address).unwrap();
        frame::encode(Command::Syn, 1, b"", &mut wire).unwrap();
        frame::encode(Command::Push, 1, &address, &mut wire).unwrap();
        tls.write_all(&wire).await.unwrap();
        tls.flush().await.unwrap();
        glommio::timer::sleep(Duration::from_secs(3)).await;
        drop(tls);
    });
    assert!(
        server.wait_for_log("the client took no byte", Duration::from_secs(5)),
        "{:?}",
        server
            .log_lines()
            .iter()
            .filter(|l| l.contains("closed"))
            .collect::<Vec<_>>()
    );
    server.assert_fds_back_to_baseline();
}

#[test]
fn scan_of_ten_thousand_connections_leaves_nothing_behind() {
    let server = TestServer::start(&["--handshake-timeout", "1"]);
    // Warm up allocator and TLS state so the baseline is a steady one.
    server.assert_serves();
    server.assert_fds_back_to_baseline();
    let rss_before = server.rss_kib();
    let deadline = Instant::now() + Duration::from_secs(120);
    for batch in 0..5 {
        let mut held = Vec::new();
        for i in 0..2000 {
            let Ok(mut conn) = TcpStream::connect(server.addr) else {
                continue;
            };
            match i % 4 {
                // Silent: waits for the handshake timeout.
                0 | 1 => {}
                // Garbage instead of a ClientHello.
                2 => {
                    let _ = conn.write_all(&pattern(i + batch * 2000, 300));
                }
                // A truncated TLS record header.
                _ => {
                    let _ = conn.write_all(&[0x16, 0x03, 0x01, 0x40]);
                }
            }
            held.push(conn);
        }
        // Hold them past the handshake timeout, then let go.
        std::thread::sleep(Duration::from_millis(1300));
        drop(held);
        assert!(Instant::now() < deadline, "scan took too long");
    }
    server.assert_fds_back_to_baseline();
    // The server hands freed memory back every 2 s.
    let settle = Instant::now() + Duration::from_secs(5);
    while server.rss_kib().saturating_sub(rss_before) >= 4 * 1024 && Instant::now() < settle {
        std::thread::sleep(Duration::from_millis(100));
    }
    let growth = server.rss_kib().saturating_sub(rss_before);
    eprintln!("server RSS {rss_before} KiB before the scan, +{growth} KiB after");
    assert!(
        growth < 4 * 1024,
        "server RSS grew by {growth} KiB after the scan"
    );
    // And it still serves.
    server.assert_serves();
}
