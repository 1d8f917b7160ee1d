//! Hostile clients over real TLS (issue 17): each attack is bounded by the server,
//! the attacker gets the protocol's answer or a closed connection, the bound is
//! counted, and another client is served meanwhile.

mod common;

use std::time::{Duration, Instant};

use anytls::client::connect_tls;
use anytls::mux::timeout;
use anytls::proto::frame::{self, Command};
use common::*;
use futures_lite::AsyncWriteExt;

/// Most bytes an attack below sends, so that a server without the bound fails the
/// test (by growing) without exhausting the machine.
const ATTACK_BYTES: usize = 32 << 20;

/// A client that never reads and sends only frames the server must answer (SYNs
/// past the stream cap, each answered SYNACK + reason + FIN, ~7x its size; and
/// heartbeats): the server stops reading it once its answers pile up, so its
/// writes block, and the server's memory stays bounded.
#[test]
fn a_client_that_never_reads_its_answers_is_no_longer_read() {
    let server = TestServer::start(&[
        "--max-streams-per-session",
        "1",
        "--address-timeout-ms",
        "60000",
        "--stats-interval",
        "1",
    ]);
    let before = server.rss_kib();
    let config = server.client_config();
    let (sent, grown) = run_local(async {
        let mut tls = connect_tls(&config).await.unwrap();
        let mut wire = preamble(PASSWORD);
        wire.extend_from_slice(&settings_frame(&default_md5()));
        // Stream 1 opens and waits for its address; every later SYN is refused.
        frame::encode(Command::Syn, 1, &[], &mut wire).unwrap();
        tls.write_all(&wire).await.unwrap();
        let mut sent = 0;
        let mut id = 2u32;
        let started = Instant::now();
        let mut batch = Vec::with_capacity(64 * 1024);
        while sent < ATTACK_BYTES && started.elapsed() < Duration::from_secs(20) {
            batch.clear();
            while batch.len() < 64 * 1024 - 14 {
                frame::encode(Command::Syn, id, &[], &mut batch).unwrap();
                frame::encode(Command::HeartRequest, id, &[], &mut batch).unwrap();
                id += 1;
            }
            match timeout(Duration::from_secs(2), tls.write_all(&batch)).await {
                Some(Ok(())) => sent += batch.len(),
                Some(Err(e)) => panic!("the server closed the connection: {e}"),
                None => break,
            }
        }
        glommio::timer::sleep(Duration::from_millis(500)).await;
        let grown = server.rss_kib().saturating_sub(before);
        // Meanwhile (the attacker still connected) another client is served.
        let other = anytls::client::ClientSession::connect(&config)
            .await
            .expect("another session opens");
        other.heartbeat().await.expect("and is answered");
        drop(tls);
        (sent, grown)
    });
    assert!(
        sent < ATTACK_BYTES,
        "the server read all {sent} bytes of a client that read none of its answers"
    );
    assert!(grown < 64 * 1024, "the server grew by {grown} KiB");
    assert!(
        server.wait_for_log("unread_answers", Duration::from_secs(3)),
        "the stats line counts the pause"
    );
    assert!(server.logged("answers unread by the client; reading paused"));
    server.assert_serves();
    server.assert_fds_back_to_baseline();
}
