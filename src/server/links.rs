//! Share links: for each user, the `anytls://` link a client imports
//! (`anytls://PASSWORD@HOST:PORT/?sni=NAME&insecure=1`, written by
//! [`ServerUri::to_link`]), and the same link as a QR code for a phone.

use std::net::{IpAddr, SocketAddr};

use qrcode::render::unicode::Dense1x2;
use qrcode::QrCode;
use thiserror::Error;

use crate::config::User;
use crate::proto::uri::ServerUri;

/// What the links are made of, besides the address the server listens on.
#[derive(Debug, Clone)]
pub struct LinkSource {
    /// Every user's name and password.
    pub credentials: Vec<User>,
    /// `--public-host`: the name or address clients reach the server by.
    pub public_host: Option<String>,
    /// `--server-name`: the links' `sni`, whatever the host.
    pub server_name: Option<String>,
    /// The certificate's first DNS name: the `sni` when the host is an address.
    pub certificate_name: Option<String>,
    /// The served certificate's SHA-256 in hex: self-signed links carry it as
    /// `pin` (our extension; other clients go by `insecure=1`).
    pub pin: Option<String>,
    /// The certificate is the self-signed one: links say `insecure=1`.
    pub self_signed: bool,
}

/// One user's link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShareLink {
    /// The user's name.
    pub user: String,
    /// The link.
    pub link: String,
}

/// Why there are no links.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum LinkError {
    /// A wildcard listen address names no host a client could use.
    #[error("no share links: listening on {0}, a wildcard address; give --public-host (or public_host in the config)")]
    NoHost(SocketAddr),
}

/// One link per user, to the server at `listen` (its port, and its address
/// unless `public_host` is given or it is a wildcard).
pub fn share_links(source: &LinkSource, listen: SocketAddr) -> Result<Vec<ShareLink>, LinkError> {
    let host = match &source.public_host {
        Some(host) => host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned(),
        None if listen.ip().is_unspecified() => return Err(LinkError::NoHost(listen)),
        None => listen.ip().to_string(),
    };
    // A name is also the name to send in SNI; for an address, clients send none.
    let sni = source
        .server_name
        .clone()
        .or_else(|| host.parse::<IpAddr>().is_err().then(|| host.clone()))
        .or_else(|| source.certificate_name.clone());
    Ok(source
        .credentials
        .iter()
        .map(|user| ShareLink {
            user: user.name.clone(),
            link: ServerUri {
                password: user.password.clone(),
                host: host.clone(),
                port: listen.port(),
                sni: sni.clone(),
                insecure: source.self_signed,
                pin: source.self_signed.then(|| source.pin.clone()).flatten(),
            }
            .to_link(),
        })
        .collect())
}

/// Black text on a bright white background, then back to the terminal's own.
const BLACK_ON_WHITE: &str = "\x1b[30;107m";
const RESET: &str = "\x1b[0m";

/// `link` as a QR code drawn with Unicode half blocks, for a terminal: dark
/// modules are the glyphs, light ones the background, and every line sets
/// black on white itself, so the code reads the same (dark on light, with its
/// quiet zone) on a light terminal and a dark one.
pub fn qr(link: &str) -> String {
    match QrCode::new(link.as_bytes()) {
        Ok(code) => code
            .render::<Dense1x2>()
            .dark_color(Dense1x2::Dark)
            .light_color(Dense1x2::Light)
            .quiet_zone(true)
            .build()
            .lines()
            .map(|line| format!("{BLACK_ON_WHITE}{line}{RESET}"))
            .collect::<Vec<_>>()
            .join("\n"),
        Err(e) => format!("(no QR code: {e})"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source(public_host: Option<&str>, self_signed: bool) -> LinkSource {
        LinkSource {
            credentials: vec![User::new("alice", "a/b@c"), User::new("bob", "b")],
            public_host: public_host.map(str::to_owned),
            server_name: None,
            certificate_name: None,
            pin: None,
            self_signed,
        }
    }

    #[test]
    fn an_address_host_takes_the_certificate_name_as_sni() {
        let listen: SocketAddr = "192.0.2.1:443".parse().unwrap();
        let mut named = source(None, false);
        named.certificate_name = Some("proxy.example.com".into());
        let links = share_links(&named, listen).unwrap();
        assert_eq!(
            links[1].link,
            "anytls://b@192.0.2.1:443/?sni=proxy.example.com"
        );
        // --public-host, a name, still wins; --server-name wins over both.
        named.public_host = Some("other.example.com".into());
        let links = share_links(&named, listen).unwrap();
        assert_eq!(
            links[1].link,
            "anytls://b@other.example.com:443/?sni=other.example.com"
        );
        named.server_name = Some("sni.example.com".into());
        let links = share_links(&named, listen).unwrap();
        assert_eq!(
            links[1].link,
            "anytls://b@other.example.com:443/?sni=sni.example.com"
        );
    }

    #[test]
    fn one_link_per_user_with_the_public_host_or_the_listen_address() {
        let listen: SocketAddr = "0.0.0.0:8443".parse().unwrap();
        let links = share_links(&source(Some("proxy.example.com"), false), listen).unwrap();
        assert_eq!(
            links[0].link,
            "anytls://a%2Fb%40c@proxy.example.com:8443/?sni=proxy.example.com"
        );
        assert_eq!(links[1].user, "bob");
        let links = share_links(&source(None, true), "192.0.2.1:443".parse().unwrap()).unwrap();
        assert_eq!(links[1].link, "anytls://b@192.0.2.1:443/?insecure=1");
        let links = share_links(&source(Some("[2001:db8::1]"), true), listen).unwrap();
        assert_eq!(links[1].link, "anytls://b@[2001:db8::1]:8443/?insecure=1");
        assert_eq!(
            share_links(&source(None, false), listen),
            Err(LinkError::NoHost(listen))
        );
    }

    /// What a camera sees of `drawn` on a terminal: glyph halves in the text
    /// colour, the rest in the background colour (`light_theme`: the terminal's
    /// own colours, if it ignored ours, are dark text on light).
    fn decode(drawn: &str, honours_colours: bool, light_theme: bool) -> Option<String> {
        let (ink_is_dark, paper_is_dark) = if honours_colours {
            (true, false)
        } else {
            (light_theme, !light_theme)
        };
        let rows: Vec<Vec<char>> = drawn
            .lines()
            .map(|line| {
                line.replace(BLACK_ON_WHITE, "")
                    .replace(RESET, "")
                    .chars()
                    .collect()
            })
            .collect();
        let (width, height) = (rows[0].len(), rows.len() * 2);
        let scale = 4;
        let dark = |x: usize, y: usize| {
            let glyph = rows[y / 2][x];
            let inked = match glyph {
                '█' => true,
                '▀' => y % 2 == 0,
                '▄' => y % 2 == 1,
                _ => false,
            };
            if inked {
                ink_is_dark
            } else {
                paper_is_dark
            }
        };
        let mut image =
            rqrr::PreparedImage::prepare_from_greyscale(width * scale, height * scale, |x, y| {
                if dark(x / scale, y / scale) {
                    0
                } else {
                    255
                }
            });
        let grid = image.detect_grids().into_iter().next()?;
        grid.decode().ok().map(|(_, text)| text)
    }

    #[test]
    fn qr_codes_scan_on_light_and_dark_terminals() {
        let link = "anytls://b@192.0.2.1:443/?sni=proxy.example.com";
        let drawn = qr(link);
        assert!(drawn.lines().all(|line| line.starts_with(BLACK_ON_WHITE)));
        // A terminal that draws our colours: the same on either theme.
        assert_eq!(decode(&drawn, true, true).as_deref(), Some(link));
        // One that ignores them shows the terminal's own: dark on light scans.
        assert_eq!(decode(&drawn, false, true).as_deref(), Some(link));
        // The decoder does tell: the colours reversed (the old drawing on a
        // light terminal) do not scan.
        assert_eq!(decode(&drawn, false, false), None);
    }
}
