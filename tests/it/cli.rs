//! The server binary as an operator meets it: flags, start-up errors, signals, logs.

use std::process::Command;
use std::time::Duration;

use crate::common::*;
use anytls::client::ClientSession;

fn server_with(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_anytls-server"))
        .env_remove("STATE_DIRECTORY")
        .args(args)
        .output()
        .expect("binary runs")
}

fn assert_fails_with(args: &[&str], needle: &str) {
    let output = server_with(args);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(
        output.status.code(),
        Some(2),
        "exit code for {args:?}: {stderr}"
    );
    assert!(
        stderr.contains(needle),
        "{args:?}: expected {needle:?} in {stderr}"
    );
    assert_eq!(
        stderr.lines().filter(|l| l.contains("ERROR")).count(),
        1,
        "exactly one error line: {stderr}"
    );
}

#[test]
fn help_explains_every_flag() {
    let output = server_with(&["--help"]);
    assert!(output.status.success());
    let help = String::from_utf8_lossy(&output.stdout);
    for flag in [
        "--listen",
        "--password",
        "--padding-scheme",
        "--cert",
        "--key",
        "--cores",
        "--handshake-timeout",
        "--connect-timeout",
        "--idle-session-timeout",
        "--stats-interval",
        "default: 0.0.0.0:8443",
    ] {
        assert!(help.contains(flag), "--help lacks {flag}");
    }
}

#[test]
fn bad_files_and_flags_exit_2_with_one_line() {
    let dir = std::env::temp_dir().join(format!("anytls-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let bad_scheme = dir.join("bad-scheme.txt");
    std::fs::write(&bad_scheme, "0=1-2\n").unwrap();
    let l = ["-l", "127.0.0.1:0", "-p", "x"];
    assert_fails_with(
        &[
            &l[..],
            &[
                "--cert",
                "/nonexistent/cert.pem",
                "--key",
                "/nonexistent/key.pem",
            ],
        ]
        .concat(),
        "/nonexistent/cert.pem",
    );
    assert_fails_with(
        &[&l[..], &["--padding-scheme", bad_scheme.to_str().unwrap()]].concat(),
        "stop=N",
    );
    assert_fails_with(
        &[&l[..], &["--padding-scheme", "/nonexistent/scheme"]].concat(),
        "cannot read padding scheme",
    );
    assert_fails_with(&[&l[..], &["--cores", "4096"]].concat(), "--cores 4096");
    assert_fails_with(&["-l", "not-an-address", "-p", "x"], "invalid --listen");
    std::fs::remove_dir_all(dir).unwrap();
    // clap's own errors also exit 2.
    assert_eq!(server_with(&["--no-such-flag"]).status.code(), Some(2));
    assert_eq!(
        server_with(&[]).status.code(),
        Some(2),
        "password is required"
    );
}

#[test]
fn port_in_use_exits_2() {
    let server = TestServer::start(&[]);
    let addr = server.addr.to_string();
    assert_fails_with(&["-l", &addr, "-p", "x"], "Address already in use");
    // The running server is unaffected.
    server.assert_serves();
}

#[test]
fn metrics_other_hosts_can_reach_need_a_token_or_an_allow_list() {
    assert_fails_with(
        &["-l", "127.0.0.1:0", "-p", "x", "--metrics", "0.0.0.0:0"],
        "--metrics 0.0.0.0:0 is reachable from other hosts: give --metrics-token",
    );
}

#[test]
fn self_signed_fingerprint_is_logged() {
    let server = TestServer::start(&[]);
    assert!(server.logged("SHA-256 fingerprint"));
}

#[test]
fn sigterm_with_open_sessions_exits_0_within_2s() {
    for signal in [libc::SIGTERM, libc::SIGINT] {
        let mut server = TestServer::start(&["--cores", "2"]);
        let addr = server.addr;
        // Hold open sessions on a separate thread while the signal arrives.
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let holder = std::thread::spawn(move || {
            run_local(async move {
                let config = client_config_for(addr);
                let mut sessions = Vec::new();
                for _ in 0..5 {
                    let s = ClientSession::connect(&config).await.unwrap();
                    s.heartbeat().await.unwrap();
                    sessions.push(s);
                }
                ready_tx.send(()).unwrap();
                for s in &sessions {
                    anytls::plumbing::timeout(Duration::from_secs(5), s.closed())
                        .await
                        .expect("server closes the session on shutdown");
                }
            })
        });
        ready_rx.recv_timeout(Duration::from_secs(10)).unwrap();
        let status = server
            .signal_and_wait(signal, Duration::from_secs(2))
            .unwrap_or_else(|| panic!("server still running 2 s after signal {signal}"));
        assert_eq!(status.code(), Some(0));
        holder.join().unwrap();
        assert!(
            std::net::TcpStream::connect(addr).is_err(),
            "no longer listening"
        );
    }
}

#[test]
fn stats_line_is_logged_periodically() {
    let server = TestServer::start(&["--stats-interval", "1"]);
    run_local(async {
        let session = ClientSession::connect(&server.client_config())
            .await
            .unwrap();
        session.heartbeat().await.unwrap();
        assert!(server.wait_for_log("Sessions: 1 open (1 total)", Duration::from_secs(5)));
    });
    assert!(server.logged("Auth failures: 0"));
    assert!(server.wait_for_log(
        "[Pool Stats] Total: 0, Active: 0, Reused: 0, New: 0, Cleaned: 0",
        Duration::from_secs(3)
    ));
    assert!(server.wait_for_log("[Pool Status] {}", Duration::from_secs(3)));
    assert!(server.wait_for_log(
        "[User Stats] {\"default\":{\"down\":0,\"up\":0}}",
        Duration::from_secs(3)
    ));
}

#[test]
fn low_memlock_limit_is_explained() {
    let output = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "ulimit -l 128 && exec {} -l 127.0.0.1:0 -p x",
            env!("CARGO_BIN_EXE_anytls-server")
        ))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("RLIMIT_MEMLOCK"), "{stderr}");
    assert!(stderr.contains("ulimit -l"), "{stderr}");
}
