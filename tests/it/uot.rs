//! UDP over TCP v2 through the real server: both framings to a local UDP echo,
//! a burst of 1,000 datagrams, and malformed headers that close only their stream.

use std::net::{SocketAddr, UdpSocket};
use std::time::Duration;

use crate::common::*;
use anytls::client::{ClientSession, ClientStream, StreamError};
use anytls::plumbing::timeout;
use anytls::proto::uot::{decode_datagram, encode_datagram, Request, UOT_V1_NAME, UOT_V2_NAME};
use anytls::proto::Address;

/// A UDP echo on 127.0.0.1, served by its own thread.
fn udp_echo() -> SocketAddr {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = socket.local_addr().unwrap();
    // Room for a whole burst: UDP drops what does not fit, and this test is about
    // the server, not about the echo thread keeping up.
    enlarge_receive_buffer(&socket);
    std::thread::spawn(move || {
        let mut buf = [0u8; 65_536];
        while let Ok((n, from)) = socket.recv_from(&mut buf) {
            let _ = socket.send_to(&buf[..n], from);
        }
    });
    addr
}

fn uot_target() -> Address {
    Address::Domain(UOT_V2_NAME.into(), 0)
}

/// Reads datagrams from the stream until `count` arrived (10 s at most).
async fn read_datagrams(
    stream: &ClientStream,
    connect: bool,
    count: usize,
) -> Vec<(Option<Address>, Vec<u8>)> {
    let mut buf = Vec::new();
    let mut chunk = vec![0u8; 64 * 1024];
    let mut out = Vec::new();
    while out.len() < count {
        let n = timeout(Duration::from_secs(10), stream.read(&mut chunk))
            .await
            .unwrap_or_else(|| panic!("only {} of {count} datagrams came back", out.len()));
        assert!(n > 0, "stream ended after {} datagrams", out.len());
        buf.extend_from_slice(&chunk[..n]);
        let mut start = 0;
        while let Some((datagram, used)) = decode_datagram(&buf[start..], connect).unwrap() {
            out.push((datagram.address, datagram.payload.to_vec()));
            start += used;
        }
        buf.drain(..start);
    }
    out
}

fn request(connect: bool, destination: Address) -> Vec<u8> {
    let mut wire = Vec::new();
    Request {
        is_connect: connect,
        destination,
    }
    .encode(&mut wire)
    .unwrap();
    wire
}

#[test]
fn dns_like_round_trip_in_both_modes() {
    let server = TestServer::start(&[]);
    let echo = udp_echo();
    run_local(async {
        let session = ClientSession::connect(&server.client_config())
            .await
            .unwrap();
        // Connect mode: the request and the first datagram in one write.
        let stream = session.open_stream(&uot_target()).unwrap();
        let mut wire = request(true, Address::Ip(echo));
        encode_datagram(None, b"query one", &mut wire).unwrap();
        stream.write_all(&wire).await.unwrap();
        assert_eq!(stream.established().await, Ok(()));
        let back = read_datagrams(&stream, true, 1).await;
        assert_eq!(back, vec![(None, b"query one".to_vec())]);
        stream.close();

        // Non-connect mode: each datagram names its destination (an IP and a name);
        // replies name their source.
        let stream = session.open_stream(&uot_target()).unwrap();
        let mut wire = request(false, Address::Ip(echo));
        encode_datagram(Some(&Address::Ip(echo)), b"to ip", &mut wire).unwrap();
        stream.write_all(&wire).await.unwrap();
        let back = read_datagrams(&stream, false, 1).await;
        assert_eq!(back, vec![(Some(Address::Ip(echo)), b"to ip".to_vec())]);
        let mut wire = Vec::new();
        let by_name = Address::Domain("localhost".into(), echo.port());
        encode_datagram(Some(&by_name), b"to name", &mut wire).unwrap();
        // Split one datagram across two PSH frames.
        stream.write_all(&wire[..5]).await.unwrap();
        glommio::timer::sleep(Duration::from_millis(20)).await;
        stream.write_all(&wire[5..]).await.unwrap();
        let back = read_datagrams(&stream, false, 1).await;
        assert_eq!(back, vec![(Some(Address::Ip(echo)), b"to name".to_vec())]);
    });
    server.assert_fds_back_to_baseline();
}

#[test]
fn burst_of_a_thousand_datagrams_arrives_intact() {
    let server = TestServer::start(&[]);
    let echo = udp_echo();
    run_local(async {
        let session = ClientSession::connect(&server.client_config())
            .await
            .unwrap();
        let stream = session.open_stream(&uot_target()).unwrap();
        let mut wire = request(true, Address::Ip(echo));
        for i in 0..1000u32 {
            let mut payload = i.to_be_bytes().to_vec();
            payload.extend(pattern(i as usize, 60 + (i as usize % 100)));
            encode_datagram(None, &payload, &mut wire).unwrap();
        }
        stream.write_all(&wire).await.unwrap();
        let back = read_datagrams(&stream, true, 1000).await;
        let mut seen = vec![false; 1000];
        for (_, payload) in back {
            let i = u32::from_be_bytes(payload[..4].try_into().unwrap()) as usize;
            assert_eq!(
                payload[4..],
                pattern(i, 60 + (i % 100))[..],
                "datagram {i} corrupted"
            );
            assert!(!seen[i], "datagram {i} twice");
            seen[i] = true;
        }
    });
}

#[test]
fn malformed_headers_close_only_their_stream() {
    let server = TestServer::start(&[]);
    let echo = udp_echo();
    run_local(async {
        let session = ClientSession::connect(&server.client_config())
            .await
            .unwrap();
        // A request whose is_connect byte is 5.
        let bad = session.open_stream(&uot_target()).unwrap();
        bad.write_all(&[5, 1, 127, 0, 0, 1, 0, 53]).await.unwrap();
        match bad.established().await {
            Err(StreamError::Refused(text)) => {
                assert!(text.contains("UDP-over-TCP request"), "{text}")
            }
            other => panic!("expected a refusal, got {other:?}"),
        }
        // A datagram header with address type 7.
        let bad = session.open_stream(&uot_target()).unwrap();
        let mut wire = request(false, Address::Ip(echo));
        wire.extend_from_slice(&[7, 1, 2, 3, 4, 0, 53, 0, 1, b'x']);
        bad.write_all(&wire).await.unwrap();
        assert_eq!(bad.established().await, Ok(()));
        let mut buf = [0u8; 16];
        let n = timeout(Duration::from_secs(5), bad.read(&mut buf))
            .await
            .expect("FIN");
        assert_eq!(n, 0, "the stream is closed");
        // The legacy name is refused.
        let legacy = session
            .open_stream(&Address::Domain(UOT_V1_NAME.into(), 0))
            .unwrap();
        match legacy.established().await {
            Err(StreamError::Refused(text)) => assert!(text.contains("v1"), "{text}"),
            other => panic!("expected a refusal, got {other:?}"),
        }
        // The session is unaffected.
        let good = session.open_stream(&uot_target()).unwrap();
        let mut wire = request(true, Address::Ip(echo));
        encode_datagram(None, b"still fine", &mut wire).unwrap();
        good.write_all(&wire).await.unwrap();
        assert_eq!(read_datagrams(&good, true, 1).await[0].1, b"still fine");
    });
    assert!(server.wait_for_log("malformed UDP-over-TCP request", Duration::from_secs(2)));
    assert!(server.wait_for_log("malformed UDP-over-TCP datagram", Duration::from_secs(2)));
    server.assert_fds_back_to_baseline();
}

#[test]
fn idle_association_ends() {
    let server = TestServer::start(&["--uot-idle-timeout", "1"]);
    let echo = udp_echo();
    run_local(async {
        let session = ClientSession::connect(&server.client_config())
            .await
            .unwrap();
        let stream = session.open_stream(&uot_target()).unwrap();
        let mut wire = request(true, Address::Ip(echo));
        encode_datagram(None, b"once", &mut wire).unwrap();
        stream.write_all(&wire).await.unwrap();
        read_datagrams(&stream, true, 1).await;
        let mut buf = [0u8; 16];
        let n = timeout(Duration::from_secs(5), stream.read(&mut buf))
            .await
            .expect("association closed after its idle timeout");
        assert_eq!(n, 0);
        assert!(!session.is_closed());
    });
    server.assert_fds_back_to_baseline();
}

/// A flood of empty datagrams (9 stream bytes each, one `send` each unbounded)
/// is cut to the association's rate: a second's worth passes, the rest is
/// dropped and counted, and the session goes on.
#[test]
fn empty_datagrams_past_the_rate_are_dropped() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    let server = TestServer::start(&["--max-datagrams-per-sec", "200", "--metrics", "127.0.0.1:0"]);
    let sink = UdpSocket::bind("127.0.0.1:0").unwrap();
    enlarge_receive_buffer(&sink);
    let sink_addr = sink.local_addr().unwrap();
    let received = Arc::new(AtomicUsize::new(0));
    let counted = received.clone();
    std::thread::spawn(move || {
        let mut buf = [0u8; 2048];
        while sink.recv_from(&mut buf).is_ok() {
            counted.fetch_add(1, Ordering::Relaxed);
        }
    });
    let elapsed = run_local(async {
        let session = ClientSession::connect(&server.client_config())
            .await
            .unwrap();
        let stream = session.open_stream(&uot_target()).unwrap();
        let started = std::time::Instant::now();
        let mut wire = request(true, Address::Ip(sink_addr));
        for _ in 0..5_000 {
            encode_datagram(None, b"", &mut wire).unwrap();
        }
        stream.write_all(&wire).await.unwrap();
        assert_eq!(stream.established().await, Ok(()));
        glommio::timer::sleep(Duration::from_millis(500)).await;
        session.heartbeat().await.expect("the session goes on");
        started.elapsed()
    });
    let passed = received.load(Ordering::Relaxed);
    let allowed = 200 + (elapsed.as_secs_f64() * 200.0) as usize;
    assert!(
        (150..=allowed).contains(&passed),
        "{passed} of 5000 datagrams passed in {elapsed:?} (at most {allowed})"
    );
    // Every datagram dropped for the rate is counted: at least those past what
    // the rate allows, and none of those that arrived.
    let counted = (5000 - allowed as u64)..=(5000 - passed as u64);
    assert!(
        server.metric_reaches("anytls_limit_hits{limit=\"datagram_rate\"}", |n| {
            counted.contains(&n)
        }),
        "{:?} counted, expected {counted:?}",
        server.metric("anytls_limit_hits{limit=\"datagram_rate\"}")
    );
    server.assert_fds_back_to_baseline();
}
