//! The `anytls://` server URI (docs/protocol.md §5):
//! `anytls://<percent-encoded password>@host[:port]/?sni=<name>&insecure=1`.

use thiserror::Error;

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
}

impl ServerUri {
    /// Parses a URI.
    pub fn parse(text: &str) -> Result<ServerUri, UriError> {
        let rest = text.strip_prefix("anytls://").ok_or(UriError::Scheme)?;
        let (authority, query) = match rest.split_once('?') {
            Some((authority, query)) => (authority, query),
            None => (rest, ""),
        };
        let authority = authority.trim_end_matches('/');
        let (password, host_port) = authority.rsplit_once('@').ok_or(UriError::NoPassword)?;
        let password = percent_decode(password)?;
        let (host, port) = split_host_port(host_port)?;
        let mut uri = ServerUri {
            password,
            host,
            port,
            sni: None,
            insecure: false,
        };
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            match key {
                "sni" => uri.sni = Some(percent_decode(value)?).filter(|s| !s.is_empty()),
                "insecure" => uri.insecure = value == "1" || value == "true",
                _ => {}
            }
        }
        Ok(uri)
    }
}

fn split_host_port(text: &str) -> Result<(String, u16), UriError> {
    let (host, port) = if let Some(rest) = text.strip_prefix('[') {
        let (host, after) = rest.split_once(']').ok_or(UriError::Host)?;
        (host, after.strip_prefix(':'))
    } else {
        match text.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (text, None),
        }
    };
    if host.is_empty() {
        return Err(UriError::Host);
    }
    let port = match port {
        None => 443,
        Some(port) => port
            .parse()
            .ok()
            .filter(|&p| p != 0)
            .ok_or(UriError::Port)?,
    };
    Ok((host.to_owned(), port))
}

fn percent_decode(text: &str) -> Result<String, UriError> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = text.get(i + 1..i + 3).ok_or(UriError::Escape)?;
            out.push(u8::from_str_radix(hex, 16).map_err(|_| UriError::Escape)?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| UriError::Escape)
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
