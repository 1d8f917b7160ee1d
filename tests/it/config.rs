//! The config file and SIGHUP over real sockets: a server started from a TOML
//! file serves the file's users, a sing-box JSON config is served, a bad file
//! stops the start with one line, and SIGHUP swaps users and the certificate for
//! new sessions while an open session keeps working.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::common::*;
use anytls::client::{connect_tls, ClientConfig, ClientSession};
use anytls::proto::Address;
use anytls::tls::{client_config, fingerprint, ServerVerification};

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("anytls-config-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn config_for(server: &TestServer, password: &str) -> ClientConfig {
    ClientConfig::new(
        server.addr,
        "localhost",
        client_config(ServerVerification::Insecure),
        password,
    )
}

/// Whether a session authenticated with `password` relays to an echo target.
fn serves(server: &TestServer, password: &str, target: std::net::SocketAddr) -> bool {
    let config = config_for(server, password);
    run_local(async move {
        let Ok(session) = ClientSession::connect(&config).await else {
            return false;
        };
        let Ok(stream) = session.open_stream(&Address::Ip(target)) else {
            return false;
        };
        if stream.write_all(b"hello").await.is_err() {
            return false;
        }
        let mut back = [0u8; 5];
        let mut got = 0;
        while got < 5 {
            let read =
                anytls::plumbing::timeout(Duration::from_secs(5), stream.read(&mut back[got..]));
            match read.await {
                Some(n) if n > 0 => got += n,
                _ => return false,
            }
        }
        &back == b"hello"
    })
}

/// The SHA-256 fingerprint of the certificate a new handshake sees.
fn presented_fingerprint(server: &TestServer) -> String {
    let config = client_config_for(server.addr);
    run_local(async move {
        let tls = connect_tls(&config).await.expect("TLS handshake");
        let certs = tls.get_ref().1.peer_certificates().expect("a certificate");
        fingerprint(&certs[0])
    })
}

/// Writes a new self-signed certificate and key for localhost to `dir/name.*`.
fn write_pair(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let (cert, key) = (
        dir.join(format!("{name}.crt")),
        dir.join(format!("{name}.key")),
    );
    std::fs::write(&cert, certified.cert.pem()).unwrap();
    std::fs::write(&key, certified.key_pair.serialize_pem()).unwrap();
    (cert, key)
}

#[test]
fn a_toml_file_gives_users_and_limits_and_sighup_rereads_it() {
    let dir = temp_dir("toml");
    let path = dir.join("server.toml");
    std::fs::write(
        &path,
        "listen = \"127.0.0.1:0\"\n\
         users = [{ name = \"alice\", password = \"alice-pw\" }]\n\
         max_streams_per_session = 8\n",
    )
    .unwrap();
    let mut server = TestServer::start_args(&["--config", path.to_str().unwrap()]);
    let echo = spawn_target(TargetKind::Echo);
    assert!(serves(&server, "alice-pw", echo));
    assert!(
        !serves(&server, "bob-pw", echo),
        "bob is not in the file yet"
    );

    // An open session keeps working across the reload.
    let addr = server.addr;
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
    let holder = std::thread::spawn(move || {
        run_local(async move {
            let kept = ClientConfig::new(
                addr,
                "localhost",
                client_config(ServerVerification::Insecure),
                "alice-pw",
            );
            let session = ClientSession::connect(&kept).await.unwrap();
            let first = session.open_stream(&Address::Ip(echo)).unwrap();
            stream_echoes(&first, b"before").await;
            ready_tx.send(()).unwrap();
            while go_rx.try_recv().is_err() {
                glommio::timer::sleep(Duration::from_millis(20)).await;
            }
            stream_echoes(&first, b"after the reload").await;
        })
    });
    ready_rx.recv().unwrap();
    std::fs::write(
        &path,
        "listen = \"127.0.0.1:0\"\n\
         deny_private = true\n\
         max_streams_per_session = 8\n\
         users = [{ name = \"alice\", password = \"alice-pw\" }, { name = \"bob\", password = \"bob-pw\" }]\n",
    )
    .unwrap();
    let before = server.log_len();
    server.signal(libc::SIGHUP);
    assert!(server.wait_for_log_after(
        before,
        "SIGHUP: reloaded 2 user(s): 1 added (bob)",
        Duration::from_secs(5)
    ));
    // A key SIGHUP cannot apply is named, not silently ignored.
    assert!(server.wait_for_log_after(
        before,
        "SIGHUP: deny_private changed, and take(s) effect only after a restart",
        Duration::from_secs(1)
    ));
    assert!(serves(&server, "bob-pw", echo), "bob after the reload");
    go_tx.send(()).unwrap();
    holder.join().expect("the open session kept working");

    // A file broken by hand keeps the users that loaded last.
    std::fs::write(&path, "users = [{ name = \"x\" }]\n").unwrap();
    let before = server.log_len();
    server.signal(libc::SIGHUP);
    assert!(server.wait_for_log_after(
        before,
        "SIGHUP: keeping the current settings",
        Duration::from_secs(5)
    ));
    assert!(serves(&server, "bob-pw", echo));
    server.assert_fds_back_to_baseline();
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn a_sing_box_config_is_served_and_what_it_ignores_is_said_once() {
    let dir = temp_dir("singbox");
    let path = dir.join("config.json");
    std::fs::write(
        &path,
        r#"{"log": {"level": "warn"},
            "inbounds": [{"type": "anytls", "tag": "anytls-in", "listen": "127.0.0.1",
                          "listen_port": 0, "users": [{"name": "sb", "password": "sb-pw"}],
                          "padding_scheme": ["stop=2", "0=30-30", "1=100-200"]}]}"#,
    )
    .unwrap();
    let server = TestServer::start_args(&["--config", path.to_str().unwrap()]);
    let echo = spawn_target(TargetKind::Echo);
    assert!(serves(&server, "sb-pw", echo));
    let notes: Vec<String> = server
        .log_lines()
        .into_iter()
        .filter(|line| line.contains("sing-box config: serving its anytls inbound; ignored:"))
        .collect();
    assert_eq!(notes.len(), 1, "{notes:?}");
    assert!(
        notes[0].contains("inbound.tag") && notes[0].contains("log"),
        "{notes:?}"
    );
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn a_bad_config_file_is_one_line_and_exit_code_2() {
    let dir = temp_dir("bad");
    let path = dir.join("bad.toml");
    std::fs::write(
        &path,
        "listen = \"127.0.0.1:0\"\nmax_stream_per_session = 5\n",
    )
    .unwrap();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_anytls-server"))
        .env_remove("STATE_DIRECTORY")
        .args(["--config", path.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    let errors: Vec<&str> = stderr.lines().filter(|l| l.contains("ERROR")).collect();
    assert_eq!(errors.len(), 1, "{stderr}");
    assert!(
        errors[0].contains("line 2") && errors[0].contains("max_stream_per_session"),
        "{stderr}"
    );
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn sighup_swaps_the_certificate_for_new_handshakes_only() {
    let dir = temp_dir("cert");
    let (cert, key) = (dir.join("server.crt"), dir.join("server.key"));
    let (first_cert, first_key) = write_pair(&dir, "first");
    let (second_cert, second_key) = write_pair(&dir, "second");
    std::fs::copy(&first_cert, &cert).unwrap();
    std::fs::copy(&first_key, &key).unwrap();
    let mut server = TestServer::start(&[
        "--cert",
        cert.to_str().unwrap(),
        "--key",
        key.to_str().unwrap(),
    ]);
    let first = presented_fingerprint(&server);
    let echo = spawn_target(TargetKind::Echo);

    let addr = server.addr;
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
    let holder = std::thread::spawn(move || {
        run_local(async move {
            let session = ClientSession::connect(&client_config_for(addr))
                .await
                .unwrap();
            let stream = session.open_stream(&Address::Ip(echo)).unwrap();
            stream_echoes(&stream, b"on the first certificate").await;
            ready_tx.send(()).unwrap();
            while go_rx.try_recv().is_err() {
                glommio::timer::sleep(Duration::from_millis(20)).await;
            }
            stream_echoes(&stream, b"still on it after the swap").await;
            let another = session.open_stream(&Address::Ip(echo)).unwrap();
            stream_echoes(&another, b"a new stream on the old session").await;
        })
    });
    ready_rx.recv().unwrap();

    std::fs::copy(&second_cert, &cert).unwrap();
    std::fs::copy(&second_key, &key).unwrap();
    let before = server.log_len();
    server.signal(libc::SIGHUP);
    assert!(server.wait_for_log_after(
        before,
        "SIGHUP: new handshakes use certificate",
        Duration::from_secs(5)
    ));
    let second = presented_fingerprint(&server);
    assert_ne!(first, second, "new handshakes see the new certificate");
    go_tx.send(()).unwrap();
    holder
        .join()
        .expect("the session opened before the swap kept working");

    // A key that does not belong to the certificate keeps the current pair.
    std::fs::copy(&first_cert, &cert).unwrap();
    let before = server.log_len();
    server.signal(libc::SIGHUP);
    assert!(server.wait_for_log_after(
        before,
        "SIGHUP: keeping the current certificate",
        Duration::from_secs(5)
    ));
    assert_eq!(presented_fingerprint(&server), second);
    server.assert_fds_back_to_baseline();
    std::fs::remove_dir_all(&dir).ok();
}
