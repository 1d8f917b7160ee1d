//! Certificates from a real ACME CA: Debian's `pebble` (Let's Encrypt's RFC 8555
//! test CA), with `pebble-challtestsrv` as its DNS server (every name resolves to
//! 127.0.0.1). The test makes a CA and a certificate for pebble's own HTTPS
//! listener, and gives the server that CA with `--acme-directory-ca`. `.ci/run`
//! installs pebble; where it is absent the test is skipped with one line.

use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::common::*;
use anytls::client::{ClientConfig, ClientSession};
use anytls::proto::Address;
use anytls::tls::{client_config, ServerVerification};

/// How long pebble's certificates are valid: renewal comes a third before.
const VALIDITY_SECS: u64 = 30;

/// pebble and its DNS server, killed when dropped.
struct Pebble {
    children: Vec<Child>,
    directory: String,
    management: u16,
    ca: PathBuf,
}

impl Drop for Pebble {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Pebble {
    /// pebble validating TLS-ALPN-01 on `tls_port` and HTTP-01 on `http_port`.
    fn start(dir: &Path, tls_port: u16, http_port: u16) -> Option<Pebble> {
        let (pebble, challtestsrv) = (installed("pebble")?, installed("pebble-challtestsrv")?);
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "anytls-rs test CA");
        let ca_cert = ca_params.self_signed(&ca_key).unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned()])
            .unwrap()
            .signed_by(&key, &ca_cert, &ca_key)
            .unwrap();
        let ca = dir.join("ca.pem");
        std::fs::write(&ca, ca_cert.pem()).unwrap();
        std::fs::write(dir.join("pebble-cert.pem"), cert.pem()).unwrap();
        std::fs::write(dir.join("pebble-key.pem"), key.serialize_pem()).unwrap();
        let (listen, management, dns) = (free_port(), free_port(), free_port());
        let config = format!(
            r#"{{"pebble": {{"listenAddress": "127.0.0.1:{listen}", "managementListenAddress": "127.0.0.1:{management}",
            "certificate": "{d}/pebble-cert.pem", "privateKey": "{d}/pebble-key.pem",
            "httpPort": {http_port}, "tlsPort": {tls_port}, "ocspResponderURL": "",
            "externalAccountBindingRequired": false, "certificateValidityPeriod": {VALIDITY_SECS}}}}}"#,
            d = dir.display()
        );
        std::fs::write(dir.join("pebble.json"), config).unwrap();
        let quiet = |command: &mut Command| {
            command
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap()
        };
        let dns_server = quiet(Command::new(challtestsrv).args([
            "-dns01",
            &format!("127.0.0.1:{dns}"),
            "-http01",
            "",
            "-https01",
            "",
            "-tlsalpn01",
            "",
            "-management",
            &format!("127.0.0.1:{}", free_port()),
            "-defaultIPv6",
            "",
        ]));
        let ca_server = quiet(
            Command::new(pebble)
                .arg("-config")
                .arg(dir.join("pebble.json"))
                .args(["-dnsserver", &format!("127.0.0.1:{dns}")])
                .env("PEBBLE_VA_NOSLEEP", "1")
                .env("PEBBLE_WFE_NONCEREJECT", "0"),
        );
        let started = Instant::now();
        while TcpStream::connect(("127.0.0.1", listen)).is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "pebble never listened"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Some(Pebble {
            children: vec![dns_server, ca_server],
            directory: format!("https://127.0.0.1:{listen}/dir"),
            management,
            ca,
        })
    }

    /// The root pebble signs with (made at its start), as PEM.
    fn root(&self) -> Vec<u8> {
        let pem = std::fs::read(&self.ca).unwrap();
        let roots: Vec<_> = ureq::tls::parse_pem(&pem)
            .filter_map(|item| match item {
                Ok(ureq::tls::PemItem::Certificate(cert)) => Some(cert),
                _ => None,
            })
            .collect();
        let tls = ureq::tls::TlsConfig::builder()
            .unversioned_rustls_crypto_provider(Arc::new(
                rustls::crypto::aws_lc_rs::default_provider(),
            ))
            .root_certs(ureq::tls::RootCerts::new_with_certs(&roots))
            .build();
        let agent: ureq::Agent = ureq::Agent::config_builder().tls_config(tls).build().into();
        agent
            .get(&format!("https://127.0.0.1:{}/roots/0", self.management))
            .call()
            .unwrap()
            .body_mut()
            .read_to_vec()
            .unwrap()
    }
}

/// A client that checks the server's certificate for `name` against `root`.
fn verifying_client(server: SocketAddr, name: &str, root: &[u8]) -> ClientConfig {
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pemfile::certs(&mut &root[..]) {
        roots.add(cert.unwrap()).unwrap();
    }
    ClientConfig::new(
        server,
        name,
        client_config(ServerVerification::Roots(roots)),
        PASSWORD,
    )
}

/// A verified session relays a stream to `echo`.
async fn relays(config: &ClientConfig, echo: SocketAddr) -> ClientSession {
    let session = ClientSession::connect(config)
        .await
        .expect("a verified TLS session");
    let stream = session.open_stream(&Address::Ip(echo)).unwrap();
    assert_eq!(stream.established().await, Ok(()));
    stream_echoes(&stream, b"through an ACME certificate").await;
    session
}

/// The SHA-256 fingerprints of the certificates the server logged as issued.
fn issued(server: &TestServer) -> Vec<String> {
    server
        .log_lines()
        .iter()
        .filter(|line| line.contains("issued (SHA-256 "))
        .filter_map(|line| line.split("issued (SHA-256 ").nth(1))
        .map(|rest| rest.split(')').next().unwrap_or_default().to_owned())
        .collect()
}

fn acme_flags<'a>(name: &'a str, pebble: &'a Pebble, state: &'a Path) -> Vec<&'a str> {
    vec![
        "--acme-domain",
        name,
        "--acme-directory",
        &pebble.directory,
        "--acme-directory-ca",
        pebble.ca.to_str().unwrap(),
        "--acme-state-dir",
        state.to_str().unwrap(),
    ]
}

/// Issuance by TLS-ALPN-01 on the serving port and by HTTP-01; a verifying
/// client relays through each; renewal swaps the certificate while a session
/// stays open; a restart serves the kept certificate without the CA (its
/// directory is then a dead address), and the failed renewal that follows keeps
/// it, with one log line, while the server goes on serving.
#[test]
fn certificates_are_issued_renewed_and_kept() {
    let dir = std::env::temp_dir().join(format!("anytls-acme-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (tls_port, http_port) = (free_port(), free_port());
    let Some(pebble) = Pebble::start(&dir, tls_port, http_port) else {
        println!(
            "skipped: pebble or pebble-challtestsrv is not installed (apt-get install pebble)"
        );
        return;
    };
    let listen = format!("127.0.0.1:{tls_port}");
    let state = dir.join("state-alpn");
    let alpn = TestServer::start_on(&listen, &acme_flags("anytls.test", &pebble, &state));
    assert!(alpn.wait_for_log("no certificate yet for anytls.test", Duration::from_secs(2)));
    let http_state = dir.join("state-http");
    let http_listen = format!("127.0.0.1:{http_port}");
    let mut flags = acme_flags("anytls-http.test", &pebble, &http_state);
    flags.extend(["--acme-http", &http_listen]);
    let http = TestServer::start(&flags);

    let limit = Duration::from_secs(30);
    let acme_lines = |server: &TestServer| {
        let lines = server.log_lines();
        let lines: Vec<_> = lines.iter().filter(|l| l.contains("ACME")).collect();
        format!("{lines:#?}")
    };
    assert!(
        alpn.wait_for_log("certificate for anytls.test issued", limit),
        "{}",
        acme_lines(&alpn)
    );
    assert!(
        http.wait_for_log("certificate for anytls-http.test issued", limit),
        "{}",
        acme_lines(&http)
    );
    let root = pebble.root();
    let echo = spawn_target(TargetKind::Echo);
    // The client binary, given pebble's root with --ca, verifies and relays.
    let root_file = dir.join("pebble-root.pem");
    std::fs::write(&root_file, &root).unwrap();
    let server = alpn.addr.to_string();
    let client = TestClient::start_args(&[
        "-s",
        &server,
        "-p",
        PASSWORD,
        "--ca",
        root_file.to_str().unwrap(),
        "--sni",
        "anytls.test",
    ]);
    let (mut conn, code) = socks_connect(client.socks, echo);
    assert_eq!(code, 0, "the client verified the ACME certificate");
    assert_eq!(echo_through(&mut conn, b"through --ca"), b"through --ca");
    drop((conn, client));
    let verified = verifying_client(alpn.addr, "anytls.test", &root);
    run_local(async {
        relays(
            &verifying_client(http.addr, "anytls-http.test", &root),
            echo,
        )
        .await;
        // A session opened on the first certificate outlives its renewal.
        let session = relays(&verified, echo).await;
        let renewed = eventually(Duration::from_secs(VALIDITY_SECS), || {
            issued(&alpn).len() >= 2
        })
        .await;
        assert!(renewed, "renewed a third of the lifetime before its end");
        let stream = session.open_stream(&Address::Ip(echo)).unwrap();
        assert_eq!(stream.established().await, Ok(()));
        stream_echoes(&stream, b"the old session goes on").await;
        relays(&verified, echo).await;
    });
    let fingerprints = issued(&alpn);
    assert_ne!(
        fingerprints[0], fingerprints[1],
        "new handshakes present the new one"
    );
    drop(alpn);

    // Restart against a CA that is not there: the kept certificate is served at
    // once, and nothing is asked of the CA until the renewal is due.
    let dead = format!("https://127.0.0.1:{}/dir", free_port());
    let mut flags = acme_flags("anytls.test", &pebble, &state);
    flags[3] = dead.as_str();
    let restarted = TestServer::start_on(&listen, &flags);
    assert!(restarted.wait_for_log(
        "the ACME certificate for anytls.test kept in",
        Duration::from_secs(2)
    ));
    assert!(restarted.logged(&fingerprints[1]));
    run_local(async {
        relays(&verified, echo).await;
    });
    assert!(
        !restarted.logged("ACME: no certificate"),
        "the CA was not contacted"
    );
    assert!(
        restarted.wait_for_log(
            "the current certificate is kept",
            Duration::from_secs(VALIDITY_SECS)
        ),
        "the renewal failed and said so: {}",
        acme_lines(&restarted)
    );
    let failures = restarted
        .log_lines()
        .iter()
        .filter(|line| line.contains("ACME: no certificate"))
        .count();
    assert_eq!(failures, 1, "one line per failed try");
    run_local(async {
        relays(&verified, echo).await;
    });
    drop(pebble);
    let _ = std::fs::remove_dir_all(&dir);
}
