//! Share links: the links the server prints, at start and with `--print-links`,
//! are accepted by our client, which connects with nothing else.

use std::process::Command;

use crate::common::*;

/// The links the server logged at start, as (user, link).
fn logged_links(server: &TestServer) -> Vec<(String, String)> {
    server
        .log_lines()
        .iter()
        .filter_map(|line| line.split_once("link for user ")?.1.split_once(": "))
        .map(|(user, link)| (user.to_owned(), link.to_owned()))
        .collect()
}

#[test]
fn every_printed_link_connects_our_client() {
    let dir = std::env::temp_dir().join(format!("anytls-links-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("server.toml");
    std::fs::write(
        &config,
        "listen = \"127.0.0.1:0\"\n\
         users = [{ name = \"alice\", password = \"p@ss w/rd:?#%&=\" }, { name = \"bob\", password = \"ünï\" }]\n",
    )
    .unwrap();
    let server = TestServer::start_args(&["--config", config.to_str().unwrap()]);
    assert!(server.wait_for_log("link for user bob", std::time::Duration::from_secs(5)));
    let links = logged_links(&server);
    assert_eq!(
        links
            .iter()
            .map(|(user, _)| user.as_str())
            .collect::<Vec<_>>(),
        ["alice", "bob"],
        "{:?}",
        server.log_lines()
    );
    let echo = spawn_target(TargetKind::Echo);
    for (user, link) in &links {
        assert!(
            link.starts_with("anytls://") && link.contains("insecure=1&pin="),
            "{link}"
        );
        let client = TestClient::start_args(&["-s", link]);
        let (mut conn, reply) = socks_connect(client.socks, echo);
        assert_eq!(reply, 0, "{user}'s link: SOCKS reply");
        assert_eq!(
            echo_through(&mut conn, b"through the link"),
            b"through the link"
        );
    }
    // A password off by one character is refused: the links carry the real ones.
    let wrong = links[1].1.replacen("anytls://", "anytls://x", 1);
    let client = TestClient::start_args(&["-s", &wrong]);
    let (_conn, reply) = socks_connect(client.socks, echo);
    assert_ne!(reply, 0, "a wrong password must not connect");
    server.assert_fds_back_to_baseline();
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn print_links_prints_them_with_qr_codes_and_exits() {
    let output = Command::new(env!("CARGO_BIN_EXE_anytls-server"))
        .env_remove("STATE_DIRECTORY")
        .args(["-l", "0.0.0.0:8443", "-p", "one", "-p", "two"])
        .args([
            "--public-host",
            "proxy.example.com",
            "--print-links",
            "--qr",
        ])
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    let stdout = String::from_utf8(output.stdout).unwrap();
    // The self-signed certificate's SHA-256 goes with insecure=1 as `pin`.
    let links: Vec<&str> = stdout
        .lines()
        .filter(|l| l.contains("anytls://"))
        .map(|l| {
            l.rsplit_once("&pin=").map_or(l, |(link, pin)| {
                assert!(
                    pin.len() == 64 && pin.chars().all(|c| c.is_ascii_hexdigit()),
                    "{l}"
                );
                link
            })
        })
        .collect();
    assert_eq!(
        links,
        [
            "password-1: anytls://one@proxy.example.com:8443/?sni=proxy.example.com&insecure=1",
            "password-2: anytls://two@proxy.example.com:8443/?sni=proxy.example.com&insecure=1",
        ]
    );
    assert!(stdout.contains('█') || stdout.contains('▀'), "{stdout}");
    // A wildcard address and no --public-host: no link to print, one error line.
    let output = Command::new(env!("CARGO_BIN_EXE_anytls-server"))
        .env_remove("STATE_DIRECTORY")
        .args(["-l", "0.0.0.0:8443", "-p", "one", "--print-links"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("give --public-host"));
}
