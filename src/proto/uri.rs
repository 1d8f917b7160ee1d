//! The `anytls://` server URI (docs/protocol.md §5):
//! `anytls://<percent-encoded password>@host[:port]/?sni=<name>&insecure=1`.

use percent_encoding::{percent_decode_str, utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use thiserror::Error;
use url::{Host, Url};

/// A parsed server URI.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerUri {
    /// The decoded password.
    pub password: String,
    /// Host name or IP literal (without brackets).
    pub host: String,
    /// Port, 443 when absent.
    pub port: u16,
    /// `sni=`; an IP literal means "send no SNI".
    pub sni: Option<String>,
    /// `insecure=1`: do not verify the certificate.
    pub insecure: bool,
    /// `pin=`: the SHA-256 of the only certificate to accept, in hex (this
    /// project's extension: other clients ignore it and go by `insecure`).
    pub pin: Option<String>,
}

/// Why a URI was refused.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum UriError {
    /// Not `anytls://`.
    #[error("URI must start with anytls://")]
    Scheme,
    /// No `password@`.
    #[error("URI lacks the password@ part")]
    NoPassword,
    /// Empty or malformed host.
    #[error("URI has no valid host")]
    Host,
    /// Port not a number in 1..=65535.
    #[error("URI port is not a valid port")]
    Port,
    /// A `%` escape that is not two hex digits, or not UTF-8 once decoded.
    #[error("URI has a malformed percent-escape")]
    Escape,
    /// Not a URI at all.
    #[error("malformed URI: {0}")]
    Malformed(url::ParseError),
}

impl ServerUri {
    /// Parses a URI.
    pub fn parse(text: &str) -> Result<ServerUri, UriError> {
        if !text.starts_with("anytls://") {
            return Err(UriError::Scheme);
        }
        let url = Url::parse(text).map_err(|e| match e {
            url::ParseError::InvalidPort => UriError::Port,
            url::ParseError::EmptyHost
            | url::ParseError::InvalidIpv4Address
            | url::ParseError::InvalidIpv6Address
            | url::ParseError::InvalidDomainCharacter => UriError::Host,
            other => UriError::Malformed(other),
        })?;
        if url.username().is_empty() && url.password().is_none() {
            return Err(UriError::NoPassword);
        }
        // Everything before the `@` is the password, a `:` in it included.
        let userinfo = match url.password() {
            Some(rest) => format!("{}:{rest}", url.username()),
            None => url.username().to_owned(),
        };
        let host = match url.host() {
            Some(Host::Domain(name)) if !name.is_empty() => name.to_owned(),
            Some(Host::Ipv4(ip)) => ip.to_string(),
            Some(Host::Ipv6(ip)) => ip.to_string(),
            _ => return Err(UriError::Host),
        };
        let port = match url.port() {
            Some(0) => return Err(UriError::Port),
            Some(port) => port,
            None => DEFAULT_PORT,
        };
        let mut uri = ServerUri {
            password: decode(&userinfo)?,
            host,
            port,
            sni: None,
            insecure: false,
            pin: None,
        };
        for (key, value) in url.query_pairs() {
            match &*key {
                "sni" => uri.sni = Some(value.into_owned()).filter(|s| !s.is_empty()),
                "insecure" => uri.insecure = value == "1" || value == "true",
                "pin" => uri.pin = Some(value.into_owned()).filter(|s| !s.is_empty()),
                _ => {}
            }
        }
        Ok(uri)
    }

    /// The link, in the form the reference documents:
    /// `anytls://PASSWORD@HOST:PORT/?sni=NAME&insecure=1`, the password
    /// percent-encoded, an IPv6 host in brackets, `sni` and `insecure` only when set.
    pub fn to_link(&self) -> String {
        let mut url = Url::parse("anytls://host/").expect("a constant URL");
        let host = match self.host.parse::<std::net::Ipv6Addr>() {
            Ok(ip) => format!("[{ip}]"),
            Err(_) => self.host.clone(),
        };
        url.set_host(Some(&host))
            .expect("a host name or IP literal");
        url.set_port(Some(self.port)).expect("a URL with a host");
        url.set_username(&utf8_percent_encode(&self.password, PASSWORD_ESCAPES).to_string())
            .expect("a URL with a host");
        {
            let mut query = url.query_pairs_mut();
            if let Some(sni) = &self.sni {
                query.append_pair("sni", sni);
            }
            if self.insecure {
                query.append_pair("insecure", "1");
            }
            if let Some(pin) = &self.pin {
                query.append_pair("pin", pin);
            }
        }
        if url.query() == Some("") {
            url.set_query(None);
        }
        url.into()
    }
}

/// The port of a URI that names none.
const DEFAULT_PORT: u16 = 443;

/// Everything but unreserved characters is escaped in a password, so any
/// client's URI parser reads it back unchanged.
const PASSWORD_ESCAPES: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// Percent-decodes `text`, refusing a `%` not followed by two hex digits and
/// bytes that are not UTF-8.
fn decode(text: &str) -> Result<String, UriError> {
    let bytes = text.as_bytes();
    for (at, _) in bytes.iter().enumerate().filter(|(_, &b)| b == b'%') {
        let hex = bytes.get(at + 1..at + 3).ok_or(UriError::Escape)?;
        if !hex.iter().all(u8::is_ascii_hexdigit) {
            return Err(UriError::Escape);
        }
    }
    percent_decode_str(text)
        .decode_utf8()
        .map(|decoded| decoded.into_owned())
        .map_err(|_| UriError::Escape)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_uri() {
        let uri = ServerUri::parse(
            "anytls://p%40ss%2Fw0rd@example.com:8443/?sni=real.example&insecure=1",
        )
        .unwrap();
        assert_eq!(
            uri,
            ServerUri {
                password: "p@ss/w0rd".into(),
                host: "example.com".into(),
                port: 8443,
                sni: Some("real.example".into()),
                insecure: true,
                pin: None,
            }
        );
    }

    #[test]
    fn defaults_and_ipv6() {
        let uri = ServerUri::parse("anytls://pw@[::1]").unwrap();
        assert_eq!(
            (uri.host.as_str(), uri.port, uri.insecure),
            ("::1", 443, false)
        );
        let uri = ServerUri::parse("anytls://pw@10.0.0.1/").unwrap();
        assert_eq!((uri.host.as_str(), uri.port), ("10.0.0.1", 443));
        assert_eq!(uri.sni, None);
    }

    #[test]
    fn links_round_trip_with_any_password_and_ipv6() {
        for (password, host) in [
            ("p@ss:/?#%[]&= w0rd", "proxy.example.com"),
            ("plain", "::1"),
            ("ünïcode", "192.0.2.7"),
        ] {
            let uri = ServerUri {
                password: password.into(),
                host: host.into(),
                port: 8443,
                sni: Some("proxy.example.com".into()),
                insecure: true,
                pin: None,
            };
            let link = uri.to_link();
            assert!(link.starts_with("anytls://"), "{link}");
            assert!(!link.contains(' '), "{link}");
            assert_eq!(ServerUri::parse(&link), Ok(uri), "{link}");
        }
        let bare = ServerUri {
            password: "pw".into(),
            host: "::1".into(),
            port: 443,
            sni: None,
            insecure: false,
            pin: None,
        };
        assert_eq!(bare.to_link(), "anytls://pw@[::1]:443/");
    }

    #[test]
    fn malformed_uris() {
        assert_eq!(ServerUri::parse("https://pw@h:1"), Err(UriError::Scheme));
        assert_eq!(
            ServerUri::parse("anytls://host:1"),
            Err(UriError::NoPassword)
        );
        assert_eq!(ServerUri::parse("anytls://pw@:1"), Err(UriError::Host));
        assert_eq!(ServerUri::parse("anytls://pw@h:0"), Err(UriError::Port));
        assert_eq!(ServerUri::parse("anytls://pw@h:99999"), Err(UriError::Port));
        assert_eq!(ServerUri::parse("anytls://p%zz@h"), Err(UriError::Escape));
        assert_eq!(ServerUri::parse("anytls://p%f@h"), Err(UriError::Escape));
    }
}
