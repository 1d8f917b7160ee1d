//! The server over real TLS on 127.0.0.1: relaying, many streams and sessions, and
//! every kind of bad input the protocol must survive.

use std::rc::Rc;
use std::time::{Duration, Instant};

use crate::common::*;
use anytls::client::{connect_tls, ClientSession, StreamError};
use anytls::plumbing::timeout;
use anytls::proto::frame::{self, Command};
use anytls::proto::padding::DEFAULT_SCHEME;
use anytls::proto::Address;
use futures_lite::{future, AsyncReadExt, AsyncWriteExt};

async fn echo_round_trip(session: &ClientSession, target: std::net::SocketAddr, message: &[u8]) {
    let stream = session.open_stream(&Address::Ip(target)).unwrap();
    stream.write_all(message).await.unwrap();
    let mut got = Vec::new();
    let mut buf = vec![0u8; 4096];
    while got.len() < message.len() {
        let n = timeout(Duration::from_secs(10), stream.read(&mut buf))
            .await
            .expect("echo within 10 s");
        assert!(n > 0, "stream ended early");
        got.extend_from_slice(&buf[..n]);
    }
    assert_eq!(got, message);
    assert_eq!(stream.established().await, Ok(()));
    stream.close();
}

#[test]
fn relays_100_mb_byte_exact() {
    let server = TestServer::start(&[]);
    let echo = spawn_target(TargetKind::Echo);
    const TOTAL: usize = 100 * 1024 * 1024;
    const CHUNK: usize = 60 * 1024;
    run_local(async {
        let session = ClientSession::connect(&server.client_config())
            .await
            .unwrap();
        let stream = session.open_stream(&Address::Ip(echo)).unwrap();
        let send = async {
            let mut sent = 0;
            while sent < TOTAL {
                let len = CHUNK.min(TOTAL - sent);
                stream.write_all(&pattern(sent, len)).await.unwrap();
                sent += len;
            }
        };
        let receive = async {
            let mut received = 0;
            let mut buf = vec![0u8; 64 * 1024];
            while received < TOTAL {
                let n = stream.read(&mut buf).await;
                assert!(n > 0, "stream ended after {received} bytes");
                assert!(
                    buf[..n] == pattern(received, n)[..],
                    "content differs at offset {received}"
                );
                received += n;
            }
            received
        };
        let limit = Duration::from_secs(120);
        let (_, received) = timeout(limit, future::zip(send, receive))
            .await
            .expect("100 MB echoed within 120 s");
        assert_eq!(received, TOTAL);
        eprintln!("relayed {received} bytes");
    });
    server.assert_fds_back_to_baseline();
}

#[test]
fn thousand_streams_on_one_session() {
    // Far above what real clients open on one session (the reference client, sing-box
    // and mihomo run one stream per session at a time), so the caps are raised.
    let server = TestServer::start(&[
        "--max-streams-per-session",
        "1000",
        "--max-dialing-per-session",
        "1000",
    ]);
    let echo = spawn_target(TargetKind::Echo);
    run_local(async {
        let session = Rc::new(
            ClientSession::connect(&server.client_config())
                .await
                .unwrap(),
        );
        // 1,000 streams, all open at once.
        let tasks: Vec<_> = (0..1000)
            .map(|i| {
                let session = session.clone();
                glommio::spawn_local(async move {
                    echo_round_trip(&session, echo, &pattern(i, 1000 + i)).await
                })
            })
            .collect();
        let all = async {
            for task in tasks {
                task.await;
            }
        };
        timeout(Duration::from_secs(60), all)
            .await
            .expect("1,000 streams within 60 s");
        assert!(!session.is_closed());
        assert_eq!(session.open_streams(), 0);
    });
    server.assert_fds_back_to_baseline();
}

#[test]
fn two_hundred_sessions_at_once() {
    let server = TestServer::start(&[]);
    let echo = spawn_target(TargetKind::Echo);
    run_local(async {
        let config = server.client_config();
        let tasks: Vec<_> = (0..200)
            .map(|i| {
                let config = config.clone();
                glommio::spawn_local(async move {
                    let session = ClientSession::connect(&config).await.unwrap();
                    echo_round_trip(&session, echo, &pattern(i, 512)).await;
                    session
                })
            })
            .collect();
        let all = async {
            let mut sessions = Vec::new();
            for task in tasks {
                sessions.push(task.await);
            }
            sessions
        };
        let sessions = timeout(Duration::from_secs(60), all)
            .await
            .expect("200 sessions within 60 s");
        assert!(sessions.iter().all(|s| !s.is_closed()));
    });
    server.assert_fds_back_to_baseline();
}

#[test]
fn wrong_password_gets_no_reply_and_others_are_served() {
    let server = TestServer::start(&[]);
    let echo = spawn_target(TargetKind::Echo);
    run_local(async {
        let config = server.client_config();
        let mut tls = connect_tls(&config).await.unwrap();
        tls.write_all(&preamble("not-the-password")).await.unwrap();
        tls.write_all(&settings_frame(&default_md5()))
            .await
            .unwrap();
        tls.flush().await.unwrap();
        let mut buf = [0u8; 64];
        let read = timeout(Duration::from_secs(5), tls.read(&mut buf)).await;
        match read {
            Some(Ok(0)) | Some(Err(_)) => {}
            other => panic!("expected the connection to close silently, got {other:?}"),
        }
        // A correct client still works.
        let session = ClientSession::connect(&config).await.unwrap();
        echo_round_trip(&session, echo, b"still serving").await;
    });
    assert!(server.wait_for_log("authentication failed", Duration::from_secs(2)));
    server.assert_fds_back_to_baseline();
}

#[test]
fn preamble_split_across_records_authenticates() {
    let server = TestServer::start(&[]);
    run_local(async {
        let mut tls = connect_tls(&server.client_config()).await.unwrap();
        let wire = [preamble(PASSWORD), settings_frame(&default_md5())].concat();
        for piece in wire.chunks(5) {
            tls.write_all(piece).await.unwrap();
            tls.flush().await.unwrap();
        }
        let (frames, _) = read_frames(&mut tls, |f| {
            f.iter().any(|(c, _, _)| *c == Command::ServerSettings)
        })
        .await;
        let settings = frames
            .iter()
            .find(|(c, _, _)| *c == Command::ServerSettings)
            .unwrap();
        assert_eq!(settings.2, b"v=2");
        assert!(
            !frames
                .iter()
                .any(|(c, _, _)| *c == Command::UpdatePaddingScheme),
            "md5 matched, so no padding update: {frames:?}"
        );
    });
    server.assert_fds_back_to_baseline();
}

#[test]
fn syn_before_settings_gets_alert() {
    let server = TestServer::start(&[]);
    run_local(async {
        let mut tls = connect_tls(&server.client_config()).await.unwrap();
        let mut wire = preamble(PASSWORD);
        frame::encode(Command::Syn, 1, b"", &mut wire).unwrap();
        tls.write_all(&wire).await.unwrap();
        tls.flush().await.unwrap();
        let (frames, closed) = read_frames(&mut tls, |_| false).await;
        assert!(closed);
        assert_eq!(
            frames,
            vec![(
                Command::Alert,
                0,
                b"client did not send its settings".to_vec()
            )]
        );
    });
    server.assert_fds_back_to_baseline();
}

#[test]
fn padding_update_when_md5_differs() {
    let server = TestServer::start(&[]);
    run_local(async {
        let mut tls = connect_tls(&server.client_config()).await.unwrap();
        let wire = [
            preamble(PASSWORD),
            settings_frame("0123456789abcdef0123456789abcdef"),
        ]
        .concat();
        tls.write_all(&wire).await.unwrap();
        tls.flush().await.unwrap();
        let (frames, _) = read_frames(&mut tls, |f| f.len() >= 2).await;
        assert_eq!(
            frames[0],
            (
                Command::UpdatePaddingScheme,
                0,
                DEFAULT_SCHEME.as_bytes().to_vec()
            )
        );
        assert_eq!(frames[1], (Command::ServerSettings, 0, b"v=2".to_vec()));
    });
}

#[test]
fn custom_scheme_reaches_the_client_session() {
    let dir = std::env::temp_dir().join(format!("anytls-scheme-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("scheme.txt");
    let text = "stop=4\n0=40-40\n1=200-300\n2=300-400,c,400-500\n3=10-20\n";
    std::fs::write(&path, text).unwrap();
    let server = TestServer::start(&["--padding-scheme", path.to_str().unwrap()]);
    let echo = spawn_target(TargetKind::Echo);
    run_local(async {
        let config = server.client_config();
        let session = ClientSession::connect(&config).await.unwrap();
        echo_round_trip(&session, echo, b"padded hello").await;
        // Sent as clients read it: the file's last newline is not part of it.
        assert_eq!(config.padding.borrow().text(), text.trim_end());
        // The next session already uses the server's scheme and still works.
        let second = ClientSession::connect(&config).await.unwrap();
        echo_round_trip(&second, echo, b"second session").await;
    });
    std::fs::remove_dir_all(dir).unwrap();
    server.assert_fds_back_to_baseline();
}

#[test]
fn heartbeat_is_answered() {
    let server = TestServer::start(&[]);
    run_local(async {
        let session = ClientSession::connect(&server.client_config())
            .await
            .unwrap();
        for _ in 0..3 {
            timeout(Duration::from_secs(5), session.heartbeat())
                .await
                .expect("heartbeat answered within 5 s")
                .unwrap();
        }
        assert_eq!(session.server_version(), 2);
    });
}

#[test]
fn unreachable_target_gets_synack_error_and_session_survives() {
    let server = TestServer::start(&[]);
    let echo = spawn_target(TargetKind::Echo);
    // A port nobody listens on: bind, learn the port, close.
    let closed_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    run_local(async {
        let session = ClientSession::connect(&server.client_config())
            .await
            .unwrap();
        let started = Instant::now();
        let stream = session.open_stream(&Address::Ip(closed_port)).unwrap();
        let result = timeout(Duration::from_secs(6), stream.established())
            .await
            .expect("SYNACK within the connect timeout");
        assert!(started.elapsed() < Duration::from_secs(5));
        match result {
            Err(StreamError::Refused(text)) => {
                assert!(text.contains(&closed_port.to_string()), "{text}")
            }
            other => panic!("expected a SYNACK error, got {other:?}"),
        }
        assert_eq!(
            stream.read(&mut [0u8; 16]).await,
            0,
            "FIN follows the error"
        );
        echo_round_trip(&session, echo, b"session still usable").await;
    });
    server.assert_fds_back_to_baseline();
}

#[test]
fn garbage_and_unknown_frames_are_skipped() {
    let server = TestServer::start(&[]);
    let echo = spawn_target(TargetKind::Echo);
    run_local(async {
        let mut tls = connect_tls(&server.client_config()).await.unwrap();
        let mut wire = [preamble(PASSWORD), settings_frame(&default_md5())].concat();
        frame::encode(Command::Unknown(77), 5, &[0xEE; 300], &mut wire).unwrap();
        frame::encode(Command::Push, 999, b"no such stream", &mut wire).unwrap();
        frame::encode(Command::Fin, 998, b"", &mut wire).unwrap();
        frame::encode(Command::Waste, 0, &[0; 1000], &mut wire).unwrap();
        frame::encode(Command::ServerSettings, 0, b"v=9", &mut wire).unwrap();
        // A stream whose address is garbage: refused, session unaffected.
        frame::encode(Command::Syn, 1, b"", &mut wire).unwrap();
        frame::encode(Command::Push, 1, &[0x09, 1, 2, 3], &mut wire).unwrap();
        // A valid stream, its address split over two PSH frames.
        let mut address = Vec::new();
        Address::Ip(echo).encode(&mut address).unwrap();
        frame::encode(Command::Syn, 2, b"", &mut wire).unwrap();
        frame::encode(Command::Push, 2, &address[..3], &mut wire).unwrap();
        frame::encode(Command::Push, 2, &address[3..], &mut wire).unwrap();
        frame::encode(Command::Push, 2, b"ping", &mut wire).unwrap();
        tls.write_all(&wire).await.unwrap();
        tls.flush().await.unwrap();
        let (frames, closed) = read_frames(&mut tls, |f| {
            f.iter()
                .any(|(c, sid, d)| *c == Command::Push && *sid == 2 && d == b"ping")
        })
        .await;
        assert!(!closed);
        let refusal = frames
            .iter()
            .find(|(c, sid, _)| *c == Command::SynAck && *sid == 1)
            .expect("SYNACK for the bad address");
        assert!(String::from_utf8_lossy(&refusal.2).contains("address type"));
        assert!(frames.contains(&(Command::Fin, 1, vec![])));
        assert!(frames.contains(&(Command::SynAck, 2, vec![])));
        // A frame header promising more than ever arrives, then the client vanishes.
        let mut truncated = Vec::new();
        frame::encode_header(Command::Push, 2, 5000, &mut truncated).unwrap();
        truncated.extend_from_slice(&[1; 100]);
        tls.write_all(&truncated).await.unwrap();
        tls.flush().await.unwrap();
    });
    server.assert_fds_back_to_baseline();
}

#[test]
fn client_dropping_mid_frame_frees_everything() {
    let server = TestServer::start(&[]);
    let echo = spawn_target(TargetKind::Echo);
    run_local(async {
        let config = server.client_config();
        for _ in 0..20 {
            let mut tls = connect_tls(&config).await.unwrap();
            let mut wire = [preamble(PASSWORD), settings_frame(&default_md5())].concat();
            let mut address = Vec::new();
            Address::Ip(echo).encode(&mut address).unwrap();
            for sid in 1..=3 {
                frame::encode(Command::Syn, sid, b"", &mut wire).unwrap();
                frame::encode(Command::Push, sid, &address, &mut wire).unwrap();
            }
            tls.write_all(&wire).await.unwrap();
            tls.flush().await.unwrap();
            read_frames(&mut tls, |f| {
                f.iter().filter(|(c, _, _)| *c == Command::SynAck).count() == 3
            })
            .await;
            // Half a header, then gone without close_notify.
            tls.write_all(&[2, 0, 0]).await.unwrap();
            tls.flush().await.unwrap();
            drop(tls);
        }
        // Preamble cut short.
        let mut tls = connect_tls(&config).await.unwrap();
        tls.write_all(&preamble(PASSWORD)[..20]).await.unwrap();
        tls.flush().await.unwrap();
        drop(tls);
        let session = ClientSession::connect(&config).await.unwrap();
        echo_round_trip(&session, echo, b"after the drops").await;
    });
    server.assert_fds_back_to_baseline();
}

#[test]
fn v1_client_gets_no_synack_or_server_settings() {
    let server = TestServer::start(&[]);
    let echo = spawn_target(TargetKind::Echo);
    run_local(async {
        let mut tls = connect_tls(&server.client_config()).await.unwrap();
        let mut wire = preamble(PASSWORD);
        let settings = format!("client=old/1\npadding-md5={}", default_md5());
        frame::encode(Command::Settings, 0, settings.as_bytes(), &mut wire).unwrap();
        let mut address = Vec::new();
        Address::Ip(echo).encode(&mut address).unwrap();
        address.extend_from_slice(b"hello");
        frame::encode(Command::Syn, 1, b"", &mut wire).unwrap();
        frame::encode(Command::Push, 1, &address, &mut wire).unwrap();
        tls.write_all(&wire).await.unwrap();
        tls.flush().await.unwrap();
        let (frames, _) =
            read_frames(&mut tls, |f| f.iter().any(|(c, _, _)| *c == Command::Push)).await;
        assert_eq!(frames, vec![(Command::Push, 1, b"hello".to_vec())]);
    });
}

#[test]
fn idle_session_is_closed() {
    let server = TestServer::start(&["--idle-session-timeout", "1"]);
    run_local(async {
        let session = ClientSession::connect(&server.client_config())
            .await
            .unwrap();
        session.heartbeat().await.unwrap();
        let started = Instant::now();
        timeout(Duration::from_secs(5), session.closed())
            .await
            .expect("idle session closed by the server");
        assert!(started.elapsed() >= Duration::from_millis(900));
    });
    server.assert_fds_back_to_baseline();
}

#[test]
fn silent_connection_times_out_in_handshake() {
    let server = TestServer::start(&["--handshake-timeout", "1"]);
    let mut raw = std::net::TcpStream::connect(server.addr).unwrap();
    raw.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let started = Instant::now();
    let mut buf = [0u8; 16];
    let n = std::io::Read::read(&mut raw, &mut buf).unwrap_or(0);
    assert_eq!(n, 0, "server closes a silent connection");
    assert!(started.elapsed() < Duration::from_secs(4));
    server.assert_fds_back_to_baseline();
}

#[test]
fn stalled_target_is_bounded_then_closed() {
    let server = TestServer::start(&["--stream-stall-timeout", "2"]);
    let stalled = spawn_target(TargetKind::Stalled);
    let echo = spawn_target(TargetKind::Echo);
    let rss_before = server.rss_kib();
    run_local(async {
        let config = server.client_config();
        let session = ClientSession::connect(&config).await.unwrap();
        let stream = session.open_stream(&Address::Ip(stalled)).unwrap();
        assert_eq!(stream.established().await, Ok(()));
        // Offer up to 200 MB to a target that reads nothing.
        let chunk = vec![0xAB; 64 * 1024];
        let offer = async {
            for _ in 0..3200 {
                if stream.write_all(&chunk).await.is_err() {
                    break;
                }
            }
            future::pending::<()>().await
        };
        let watch = async {
            glommio::timer::sleep(Duration::from_secs(1)).await;
            let growth = server.rss_kib().saturating_sub(rss_before);
            assert!(growth < 32 * 1024, "server RSS grew by {growth} KiB");
            // The stall timeout closes the stream with FIN.
            let mut buf = [0u8; 16];
            let n = timeout(Duration::from_secs(5), stream.read(&mut buf))
                .await
                .unwrap_or_else(|| {
                    panic!("no FIN after the stall timeout: {:?}", server.log_lines())
                });
            assert_eq!(n, 0);
        };
        future::or(offer, watch).await;
        // The session itself goes on, and so does everyone else.
        echo_round_trip(&session, echo, b"same session").await;
        let other = ClientSession::connect(&config).await.unwrap();
        echo_round_trip(&other, echo, b"other session").await;
    });
    assert!(server.logged("took no byte"));
    server.assert_fds_back_to_baseline();
}
