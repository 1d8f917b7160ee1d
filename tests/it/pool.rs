//! The outbound connection pool, every kind, through the real server binary: spares
//! are warm connections that carry exactly one client's bytes, are never reused,
//! expire, are checked for liveness, respect the cap, and are refilled.

use std::sync::atomic::Ordering;
use std::time::Duration;

use crate::common::*;
use anytls::client::{ClientSession, ClientStream, StreamError};
use anytls::plumbing::timeout;
use anytls::proto::Address;

const WAIT: Duration = Duration::from_secs(10);

fn start(kind: &str, extra: &[&str]) -> TestServer {
    let mut args = vec!["--pool-type", kind, "--metrics", "127.0.0.1:0"];
    args.extend_from_slice(extra);
    TestServer::start(&args)
}

async fn echo(stream: &ClientStream, message: &[u8]) {
    stream.write_all(message).await.unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    while got.len() < message.len() {
        let n = timeout(WAIT, stream.read(&mut buf))
            .await
            .expect("echo in time");
        assert!(n > 0, "stream ended early");
        got.extend_from_slice(&buf[..n]);
    }
    assert_eq!(got, message);
}

/// Spares carry exactly one client's bytes, used connections are closed and never
/// reused, takes are refilled, and Reused + New = streams opened.
fn spares_carry_one_client_each(kind: &str) {
    let server = start(kind, &["--min-idle-connections", "2"]);
    let target = RecordingTarget::spawn();
    run_local(async {
        let session = ClientSession::connect(&server.client_config())
            .await
            .unwrap();
        let first = session.open_stream(&Address::Ip(target.addr)).unwrap();
        echo(&first, b"client-0").await;
        // One dial for the stream, then two spares.
        assert!(eventually(WAIT, || target.connections().len() == 3).await);
        for i in 1..=5u8 {
            let stream = session.open_stream(&Address::Ip(target.addr)).unwrap();
            assert_eq!(stream.established().await, Ok(()));
            echo(&stream, format!("client-{i}").as_bytes()).await;
            stream.close();
            // Refill brings the spares back to two (plus the first stream's connection).
            let used = 1 + i as usize;
            assert!(
                eventually(WAIT, || target.open() == 1 + 2
                    && target.connections().len() == used + 2)
                .await,
                "after {i} takes: {} open of {}",
                target.open(),
                target.connections().len()
            );
        }
        first.close();
    });
    let conns = target.connections();
    let mut carried: Vec<String> = conns
        .iter()
        .map(|c| String::from_utf8(c.data.lock().unwrap().clone()).unwrap())
        .filter(|d| !d.is_empty())
        .collect();
    carried.sort();
    let expected: Vec<String> = (0..=5).map(|i| format!("client-{i}")).collect();
    assert_eq!(
        carried, expected,
        "each used connection carried one client's bytes"
    );
    // Used connections are closed, spares stay open.
    assert!(target.wait_until(WAIT, |t| t.open() == 2));
    for conn in target.connections() {
        let used = !conn.data.lock().unwrap().is_empty();
        assert_eq!(conn.closed.load(Ordering::SeqCst), used);
    }
    let stats = server.wait_for_pool(WAIT, |s| s.reused + s.new == 6 && s.active == 0);
    assert_eq!(stats.new, 1, "{stats:?}");
    assert_eq!(stats.reused, 5, "{stats:?}");
    assert_eq!(stats.total, 8, "1 dial + 7 spares: {stats:?}");
    assert!(
        server
            .wait_for_metric("anytls_pool_spares{target=\"127.0.0.1", WAIT, |n| n > 0)
            .is_some_and(|n| n > 0),
        "spares are held for the target"
    );
}

/// Spares older than --max-idle-time-secs are closed and counted Cleaned.
fn idle_spares_expire(kind: &str) {
    let server = start(
        kind,
        &["--min-idle-connections", "2", "--max-idle-time-secs", "1"],
    );
    let target = RecordingTarget::spawn();
    run_local(async {
        let session = ClientSession::connect(&server.client_config())
            .await
            .unwrap();
        let stream = session.open_stream(&Address::Ip(target.addr)).unwrap();
        echo(&stream, b"once").await;
        stream.close();
    });
    assert!(target.wait_until(WAIT, |t| t.connections().len() == 3));
    // Nobody asks again: spares expire and are not refilled.
    assert!(
        target.wait_until(WAIT, |t| t.open() == 0),
        "{} open",
        target.open()
    );
    let stats = server.wait_for_pool(WAIT, |s| s.cleaned >= 2);
    assert_eq!(
        stats.total, 3,
        "no refill for a target nobody wants: {stats:?}"
    );
    let deadline = std::time::Instant::now() + WAIT;
    while server.metric("anytls_pool_spares").is_some_and(|n| n > 0) {
        assert!(std::time::Instant::now() < deadline, "spares are all gone");
        std::thread::sleep(Duration::from_millis(100));
    }
    server.assert_fds_back_to_baseline();
}

/// A spare the target closed is detected, discarded, and the stream still connects.
fn dead_spares_are_not_handed_out(kind: &str) {
    let server = start(kind, &["--min-idle-connections", "2"]);
    let target = RecordingTarget::spawn();
    run_local(async {
        let session = ClientSession::connect(&server.client_config())
            .await
            .unwrap();
        let stream = session.open_stream(&Address::Ip(target.addr)).unwrap();
        echo(&stream, b"first").await;
        stream.close();
        assert!(eventually(WAIT, || target.connections().len() == 3).await);
        target.close_unused();
        assert!(eventually(WAIT, || target.open() == 0).await);
        glommio::timer::sleep(Duration::from_millis(50)).await;
        let stream = session.open_stream(&Address::Ip(target.addr)).unwrap();
        assert_eq!(stream.established().await, Ok(()));
        echo(&stream, b"second").await;
    });
    let stats = server.wait_for_pool(WAIT, |s| s.reused + s.new == 2);
    assert_eq!((stats.reused, stats.new), (0, 2), "{stats:?}");
    assert!(stats.cleaned >= 2, "dead spares counted Cleaned: {stats:?}");
}

/// At --max-outbound-connections the stream gets a SYNACK error; nothing leaks.
fn cap_refuses_with_synack_error(kind: &str) {
    let min_idle = if kind == "none" { "0" } else { "1" };
    let server = start(
        kind,
        &[
            "--min-idle-connections",
            min_idle,
            "--max-outbound-connections",
            "3",
            // Spares (and the demand that refills them) expire soon after the test,
            // so the fd count can return to its baseline.
            "--max-idle-time-secs",
            "1",
        ],
    );
    let target = RecordingTarget::spawn();
    run_local(async {
        let session = ClientSession::connect(&server.client_config())
            .await
            .unwrap();
        let mut held = Vec::new();
        for i in 0..3u8 {
            let stream = session.open_stream(&Address::Ip(target.addr)).unwrap();
            assert_eq!(stream.established().await, Ok(()), "stream {i}");
            echo(&stream, &[i; 4]).await;
            held.push(stream);
        }
        let refused = session.open_stream(&Address::Ip(target.addr)).unwrap();
        assert_eq!(
            refused.established().await,
            Err(StreamError::Refused(
                "outbound connection limit reached".into()
            ))
        );
        // Freeing one connection makes room again; the session never noticed.
        held.pop().unwrap().close();
        glommio::timer::sleep(Duration::from_millis(100)).await;
        let again = session.open_stream(&Address::Ip(target.addr)).unwrap();
        assert_eq!(again.established().await, Ok(()));
        echo(&again, b"room again").await;
    });
    server.wait_for_pool(WAIT, |s| s.active == 0);
    server.assert_fds_back_to_baseline();
}

macro_rules! for_every_kind {
    ($($scenario:ident),* $(,)?) => {
        $(
            mod $scenario {
                #[test]
                fn lock() { super::$scenario("lock") }
                #[test]
                fn lockfree() { super::$scenario("lockfree") }
                #[test]
                fn highperf() { super::$scenario("highperf") }
            }
        )*
    };
}

for_every_kind!(
    spares_carry_one_client_each,
    idle_spares_expire,
    dead_spares_are_not_handed_out,
    cap_refuses_with_synack_error,
);

#[test]
fn none_dials_every_time_and_respects_the_cap() {
    cap_refuses_with_synack_error("none");
    let server = start("direct", &[]);
    let target = RecordingTarget::spawn();
    run_local(async {
        let session = ClientSession::connect(&server.client_config())
            .await
            .unwrap();
        for i in 0..4u8 {
            let stream = session.open_stream(&Address::Ip(target.addr)).unwrap();
            echo(&stream, &[i; 3]).await;
            stream.close();
        }
    });
    assert!(target.wait_until(WAIT, |t| t.connections().len() == 4 && t.open() == 0));
    let stats = server.wait_for_pool(WAIT, |s| s.new == 4);
    assert_eq!((stats.reused, stats.total), (0, 4));
}

#[test]
fn highperf_spare_spilled_by_one_core_is_taken_by_another() {
    use anytls::pool::dial::Resolver;
    use anytls::pool::{PoolConfig, PoolKind, SharedPool};
    use futures_lite::{AsyncReadExt, AsyncWriteExt};

    let target = RecordingTarget::spawn();
    let addr = target.addr;
    let pool = SharedPool::new(
        PoolConfig {
            kind: PoolKind::HighPerf,
            min_idle: 2,
            max_outbound: 100,
            max_idle_time: Duration::from_secs(60),
            ..PoolConfig::default()
        },
        2,
    );
    // Core 0 asks once: one dial, then two spares of which its share (one) stays
    // local and the other spills to the shared tier.
    let core0 = pool.clone();
    std::thread::spawn(move || {
        run_local(async move {
            let core = core0.core(0);
            let outbound = core
                .connect(&Resolver::default(), &Address::Ip(addr), "test", WAIT)
                .await
                .unwrap();
            assert!(eventually(WAIT, || core.spares(&addr) == 2).await);
            drop(outbound);
        })
    })
    .join()
    .unwrap();
    assert_eq!(
        pool.status().get(&addr),
        Some(&1),
        "one spare in the shared tier"
    );
    let before = target.connections().len();
    assert_eq!(before, 3);
    // Core 1 has no spare of its own: it borrows the spilled one.
    let core1 = pool.clone();
    std::thread::spawn(move || {
        run_local(async move {
            let core = core1.core(1);
            let mut outbound = core
                .connect(&Resolver::default(), &Address::Ip(addr), "test", WAIT)
                .await
                .unwrap();
            outbound.stream.write_all(b"from core 1").await.unwrap();
            let mut back = [0u8; 11];
            outbound.stream.read_exact(&mut back).await.unwrap();
            assert_eq!(&back, b"from core 1");
        })
    })
    .join()
    .unwrap();
    let stats = pool.stats();
    assert_eq!((stats.new, stats.reused), (1, 1), "{stats:?}");
    let carried: Vec<usize> = target
        .connections()
        .iter()
        .enumerate()
        .filter(|(_, c)| c.data.lock().unwrap().as_slice() == b"from core 1")
        .map(|(i, _)| i)
        .collect();
    assert_eq!(carried.len(), 1);
    assert!(
        carried[0] >= 1 && carried[0] < before,
        "core 1's stream ran on a spare core 0 dialed (connection {})",
        carried[0]
    );
}
