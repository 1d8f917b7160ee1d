//! The HTTP proxy requests the client's mixed inbound accepts (sans-IO, with
//! `httparse`): `CONNECT host:port`, and plain requests with an absolute URI
//! (`GET http://host/path`), which are rewritten to the origin form the target
//! expects. The inbound tells them from SOCKS5 by the first byte.

use thiserror::Error;

use crate::proto::Address;

/// The longest request head read before refusing.
pub const MAX_HEAD: usize = 16 * 1024;
/// Headers a request may carry.
const MAX_HEADERS: usize = 64;

/// A proxy request: where to connect, and what to send there first.
#[derive(Debug, PartialEq, Eq)]
pub struct ProxyRequest {
    /// The target.
    pub target: Address,
    /// `CONNECT`: answer 200 and relay. Otherwise: send [`ProxyRequest::forward`].
    pub tunnel: bool,
    /// For a plain request: its head rewritten to origin form, hop-by-hop proxy
    /// headers removed and `Connection: close` set (one request per connection,
    /// so a second request to another host cannot reach this target).
    pub forward: Vec<u8>,
}

/// Why a request is refused; each maps to a status line.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum HttpError {
    /// Not HTTP/1.x, or a malformed head.
    #[error("malformed HTTP request: {0}")]
    Malformed(String),
    /// A plain request without an absolute `http://` URI.
    #[error("not a proxy request: {0}")]
    NotProxy(String),
    /// The head is longer than [`MAX_HEAD`].
    #[error("request head over {MAX_HEAD} bytes")]
    TooLong,
}

impl HttpError {
    /// The status line answering it.
    pub fn status(&self) -> &'static str {
        match self {
            HttpError::TooLong => "431 Request Header Fields Too Large",
            HttpError::Malformed(_) | HttpError::NotProxy(_) => "400 Bad Request",
        }
    }
}

/// The request head in `input`, and how many bytes it took; `None` until it is
/// whole.
pub fn parse_request(input: &[u8]) -> Result<Option<(ProxyRequest, usize)>, HttpError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut request = httparse::Request::new(&mut headers);
    let used = match request.parse(input) {
        Ok(httparse::Status::Complete(used)) => used,
        Ok(httparse::Status::Partial) if input.len() >= MAX_HEAD => return Err(HttpError::TooLong),
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(HttpError::Malformed(e.to_string())),
    };
    let (Some(method), Some(uri)) = (request.method, request.path) else {
        return Err(HttpError::Malformed("no request line".to_owned()));
    };
    if method.eq_ignore_ascii_case("CONNECT") {
        let target = authority(uri, None)?;
        return Ok(Some((
            ProxyRequest {
                target,
                tunnel: true,
                forward: Vec::new(),
            },
            used,
        )));
    }
    let rest = uri
        .strip_prefix("http://")
        .or_else(|| uri.strip_prefix("HTTP://"))
        .ok_or_else(|| HttpError::NotProxy(format!("{method} {uri}")))?;
    let (host_port, path) = match rest.find('/') {
        Some(at) => (&rest[..at], &rest[at..]),
        None => (rest, "/"),
    };
    let target = authority(host_port, Some(80))?;
    let mut forward = format!(
        "{method} {path} HTTP/1.{}\r\n",
        request.version.unwrap_or(1)
    );
    for header in request.headers.iter() {
        let name = header.name;
        let hop_by_hop = [
            "proxy-connection",
            "proxy-authorization",
            "connection",
            "keep-alive",
        ]
        .iter()
        .any(|h| name.eq_ignore_ascii_case(h));
        if !hop_by_hop {
            forward.push_str(name);
            forward.push_str(": ");
            forward.push_str(&String::from_utf8_lossy(header.value));
            forward.push_str("\r\n");
        }
    }
    forward.push_str("Connection: close\r\n\r\n");
    Ok(Some((
        ProxyRequest {
            target,
            tunnel: false,
            forward: forward.into_bytes(),
        },
        used,
    )))
}

/// `host:port` (or `[v6]:port`, or `host` with `default_port`) as an address.
fn authority(text: &str, default_port: Option<u16>) -> Result<Address, HttpError> {
    let bad = || HttpError::Malformed(format!("bad host:port {text:?}"));
    let (host, port) = match text.rsplit_once(':') {
        Some((host, port)) if !port.contains(']') => (host, port.parse().map_err(|_| bad())?),
        _ => (text, default_port.ok_or_else(bad)?),
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() || port == 0 {
        return Err(bad());
    }
    Ok(match host.parse() {
        Ok(ip) => Address::Ip(std::net::SocketAddr::new(ip, port)),
        Err(_) => Address::Domain(host.to_owned(), port),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connect_at_every_split_point() {
        let head = b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\nearly";
        let whole = head.len() - b"early".len();
        for split in 0..whole {
            assert_eq!(parse_request(&head[..split]), Ok(None), "split at {split}");
        }
        let (request, used) = parse_request(head).unwrap().unwrap();
        assert_eq!(used, whole);
        assert_eq!(request.target, Address::Domain("example.com".into(), 443));
        assert!(request.tunnel);
        let (request, _) = parse_request(b"CONNECT [::1]:8080 HTTP/1.1\r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(request.target, Address::Ip("[::1]:8080".parse().unwrap()));
    }

    #[test]
    fn absolute_uris_are_rewritten_to_origin_form() {
        let head = b"GET http://example.com/a?b=1 HTTP/1.1\r\nHost: example.com\r\n\
                     Proxy-Connection: keep-alive\r\nAccept: */*\r\n\r\n";
        let (request, used) = parse_request(head).unwrap().unwrap();
        assert_eq!(used, head.len());
        assert_eq!(request.target, Address::Domain("example.com".into(), 80));
        assert!(!request.tunnel);
        assert_eq!(
            String::from_utf8(request.forward).unwrap(),
            "GET /a?b=1 HTTP/1.1\r\nHost: example.com\r\nAccept: */*\r\nConnection: close\r\n\r\n"
        );
        let (request, _) = parse_request(b"GET http://127.0.0.1:8080 HTTP/1.0\r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(
            request.target,
            Address::Ip("127.0.0.1:8080".parse().unwrap())
        );
        assert!(request.forward.starts_with(b"GET / HTTP/1.0\r\n"));
    }

    #[test]
    fn what_is_not_a_proxy_request_is_refused() {
        assert!(matches!(
            parse_request(b"GET /index.html HTTP/1.1\r\n\r\n"),
            Err(HttpError::NotProxy(_))
        ));
        assert!(matches!(
            parse_request(b"CONNECT example.com HTTP/1.1\r\n\r\n"),
            Err(HttpError::Malformed(_))
        ));
        assert!(matches!(
            parse_request(b"\x16\x03\x01garbage\r\n\r\n"),
            Err(HttpError::Malformed(_))
        ));
        let long = [
            b"GET http://a/ HTTP/1.1\r\nX: ".as_slice(),
            &[b'a'; MAX_HEAD],
        ]
        .concat();
        assert_eq!(parse_request(&long), Err(HttpError::TooLong));
        assert_eq!(
            HttpError::TooLong.status(),
            "431 Request Header Fields Too Large"
        );
    }
}
