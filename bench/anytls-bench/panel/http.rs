//! The HTTP/1.1 side of `anytls-bench panel`: one request at a time read from a
//! blocking `TcpStream` (httparse for the head, a Content-Length body), and one
//! response written back with a Content-Length, keeping the connection open
//! unless either side asked to close it.
//!
//! Limits: a head of at most [`MAX_HEAD`] bytes and [`MAX_HEADERS`] fields
//! (431 past them), a body of at most [`MAX_BODY`] bytes (413), no chunked or
//! otherwise transfer-coded bodies (411). Every refusal closes the connection.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The largest request body accepted (64 MiB); a longer one gets 413.
pub const MAX_BODY: u64 = 64 << 20;

/// The largest request head (request line and fields) accepted.
const MAX_HEAD: usize = 64 << 10;

/// The most header fields one request may have.
const MAX_HEADERS: usize = 64;

/// The most bytes read and dropped after a refusal.
const DRAIN_LIMIT: usize = 4 << 20;

/// The longest a refused connection is drained.
const DRAIN_TIME: Duration = Duration::from_secs(1);

/// One parsed request.
#[derive(Debug)]
pub struct Request {
    /// The method as sent (`GET`, `POST`, ...).
    pub method: String,
    /// The path without the query, as sent (not percent-decoded).
    pub path: String,
    /// The query's pairs, percent-decoded (`+` as a space), in order.
    pub query: Vec<(String, String)>,
    /// The header fields, names lower-cased.
    pub headers: Vec<(String, String)>,
    /// The body (empty without a Content-Length).
    pub body: Vec<u8>,
    /// Whether the connection ends after this request (`Connection: close`, or
    /// HTTP/1.0 without `Connection: keep-alive`).
    pub close: bool,
}

impl Request {
    /// The value of header `name` (lower case), the first if repeated.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The value of query parameter `key`; the last one wins when repeated, as
    /// in PHP.
    pub fn query(&self, key: &str) -> Option<&str> {
        self.query
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// Whether this is a HEAD request (answered as GET, without the body).
    pub fn is_head(&self) -> bool {
        self.method == "HEAD"
    }
}

/// A response body.
#[derive(Debug, Clone)]
pub enum Body {
    /// No body and no Content-Length (304).
    None,
    /// Bytes made for this response.
    Owned(Vec<u8>),
    /// A cached body shared between responses (config, users).
    Shared(Arc<Vec<u8>>),
}

impl Body {
    /// The body's bytes.
    fn bytes(&self) -> &[u8] {
        match self {
            Body::None => &[],
            Body::Owned(b) => b,
            Body::Shared(b) => b,
        }
    }
}

/// One response to write.
#[derive(Debug, Clone)]
pub struct Response {
    /// The status code.
    pub status: u16,
    /// Header fields besides Content-Length and Connection.
    pub headers: Vec<(&'static str, String)>,
    /// The body.
    pub body: Body,
    /// Close the connection after this response.
    pub close: bool,
}

impl Response {
    /// A response with a JSON body.
    pub fn json(status: u16, body: impl Into<Vec<u8>>) -> Response {
        Response::with_type(status, "application/json", Body::Owned(body.into()))
    }

    /// A response with a body of the given content type.
    pub fn with_type(status: u16, content_type: &str, body: Body) -> Response {
        Response {
            status,
            headers: vec![("Content-Type", content_type.to_string())],
            body,
            close: false,
        }
    }

    /// A 304 Not Modified: no body, no fields (as Laravel sends it).
    pub fn not_modified() -> Response {
        Response {
            status: 304,
            headers: Vec::new(),
            body: Body::None,
            close: false,
        }
    }

    /// Adds a header field.
    pub fn header(mut self, name: &'static str, value: impl Into<String>) -> Response {
        self.headers.push((name, value.into()));
        self
    }

    /// Marks the response as the last one of its connection.
    pub fn closing(mut self) -> Response {
        self.close = true;
        self
    }
}

/// What reading the next request gave.
#[derive(Debug)]
pub enum Next {
    /// A whole request.
    Request(Request),
    /// The peer closed, went quiet past the read timeout, or failed: nothing
    /// to answer.
    Closed,
    /// A request that cannot be served: answer this, then close.
    Refuse(Response),
}

/// A client connection: the stream and the bytes read past the last request.
pub struct Connection {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Connection {
    /// Wraps an accepted stream (its timeouts already set).
    pub fn new(stream: TcpStream) -> Connection {
        Connection {
            stream,
            buf: Vec::new(),
        }
    }

    /// Reads the next request: its head, then its Content-Length body.
    pub fn read_request(&mut self) -> Next {
        let (head_len, mut request, length) = loop {
            match parse_head(&self.buf) {
                Ok(Some(parsed)) => break parsed,
                Ok(None) if self.buf.len() > MAX_HEAD => {
                    return Next::Refuse(plain(431, "request head too large"));
                }
                Ok(None) => {}
                Err(refusal) => return Next::Refuse(refusal),
            }
            let mut chunk = [0u8; 8192];
            match self.stream.read(&mut chunk) {
                Ok(0) | Err(_) => return Next::Closed,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
            }
        };
        if length > MAX_BODY {
            return Next::Refuse(plain(413, "request body larger than 64 MiB"));
        }
        self.buf.drain(..head_len);
        if length > self.buf.len() as u64 {
            let expects_continue = request
                .header("expect")
                .is_some_and(|e| e.eq_ignore_ascii_case("100-continue"));
            if expects_continue
                && self
                    .stream
                    .write_all(b"HTTP/1.1 100 Continue\r\n\r\n")
                    .is_err()
            {
                return Next::Closed;
            }
            let missing = length - self.buf.len() as u64;
            match (&mut self.stream).take(missing).read_to_end(&mut self.buf) {
                Ok(_) if self.buf.len() as u64 == length => {}
                _ => return Next::Closed,
            }
        }
        // At most MAX_BODY, so it fits in usize.
        let rest = self.buf.split_off(length as usize);
        request.body = std::mem::replace(&mut self.buf, rest);
        Next::Request(request)
    }

    /// Ends the connection after a refusal: stops writing, then reads and
    /// drops what the client still sends for a moment (at most
    /// [`DRAIN_LIMIT`] bytes, [`DRAIN_TIME`]), so that closing with unread
    /// bytes does not reset the connection before the client reads the answer.
    pub fn drain_and_close(mut self) {
        let _ = self.stream.shutdown(Shutdown::Write);
        let _ = self.stream.set_read_timeout(Some(DRAIN_TIME));
        let deadline = Instant::now() + DRAIN_TIME;
        let mut sink = [0u8; 16 * 1024];
        let mut drained = 0;
        while drained < DRAIN_LIMIT && Instant::now() < deadline {
            match self.stream.read(&mut sink) {
                Ok(0) | Err(_) => break,
                Ok(n) => drained += n,
            }
        }
    }

    /// Writes `response` (without its body for a HEAD request); whether the
    /// connection may carry another request.
    pub fn send(&mut self, response: &Response, head_only: bool, keep_alive: bool) -> bool {
        let keep_alive = keep_alive && !response.close;
        let body = response.body.bytes();
        let mut head = format!(
            "HTTP/1.1 {} {}\r\n",
            response.status,
            reason(response.status)
        );
        for (name, value) in &response.headers {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        if !matches!(response.body, Body::None) {
            head.push_str(&format!("Content-Length: {}\r\n", body.len()));
        }
        head.push_str(if keep_alive {
            "Connection: keep-alive\r\n\r\n"
        } else {
            "Connection: close\r\n\r\n"
        });
        let mut out = head.into_bytes();
        let body = if head_only { &[][..] } else { body };
        let written = if body.len() <= 64 << 10 {
            out.extend_from_slice(body);
            self.stream.write_all(&out)
        } else {
            self.stream
                .write_all(&out)
                .and_then(|()| self.stream.write_all(body))
        };
        written.and_then(|()| self.stream.flush()).is_ok() && keep_alive
    }
}

/// Parses a request head from the start of `buf`: its length, the request
/// (without body) and the body's length; `None` while incomplete.
fn parse_head(buf: &[u8]) -> Result<Option<(usize, Request, u64)>, Response> {
    let mut fields = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut parsed = httparse::Request::new(&mut fields);
    let head_len = match parsed.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err(plain(431, "too many header fields")),
        Err(e) => return Err(plain(400, &format!("bad request: {e}"))),
    };
    let method = parsed.method.unwrap_or("GET").to_string();
    let target = parsed.path.unwrap_or("/");
    let version = parsed.version.unwrap_or(1);
    let headers: Vec<(String, String)> = parsed
        .headers
        .iter()
        .map(|h| {
            (
                h.name.to_ascii_lowercase(),
                String::from_utf8_lossy(h.value).trim().to_string(),
            )
        })
        .collect();

    let mut length: Option<u64> = None;
    for (name, value) in &headers {
        match name.as_str() {
            "transfer-encoding" => {
                return Err(plain(
                    411,
                    "chunked bodies are not accepted: send a Content-Length",
                ))
            }
            "content-length" => {
                let n: u64 = value
                    .parse()
                    .map_err(|_| plain(400, "bad Content-Length"))?;
                if length.is_some_and(|l| l != n) {
                    return Err(plain(400, "conflicting Content-Length fields"));
                }
                length = Some(n);
            }
            _ => {}
        }
    }
    let connection = headers
        .iter()
        .filter(|(n, _)| n == "connection")
        .flat_map(|(_, v)| v.split(','))
        .map(|t| t.trim().to_ascii_lowercase())
        .collect::<Vec<_>>();
    let close = if version == 0 {
        !connection.iter().any(|t| t == "keep-alive")
    } else {
        connection.iter().any(|t| t == "close")
    };

    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (p, parse_query(q)),
        None => (target, Vec::new()),
    };
    let request = Request {
        method,
        path: path.to_string(),
        query,
        headers,
        body: Vec::new(),
        close,
    };
    Ok(Some((head_len, request, length.unwrap_or(0))))
}

/// Splits a query string into decoded pairs (a key without `=` has an empty value).
pub fn parse_query(query: &str) -> Vec<(String, String)> {
    query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

/// Decodes `%XX` escapes and `+` (a space, as PHP reads a query); a `%` not
/// followed by two hex digits stays as it is.
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = |b: u8| (b as char).to_digit(16);
                let digit = |at: usize| bytes.get(at).copied().and_then(hex);
                match (digit(i + 1), digit(i + 2)) {
                    (Some(h), Some(l)) => {
                        out.push((h * 16 + l) as u8);
                        i += 2;
                    }
                    _ => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A short plain-text response that closes the connection (protocol errors).
pub fn plain(status: u16, message: &str) -> Response {
    Response::with_type(
        status,
        "text/plain; charset=utf-8",
        Body::Owned(format!("{message}\n").into_bytes()),
    )
    .closing()
}

/// The reason phrase of the status codes this server sends.
fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        304 => "Not Modified",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        411 => "Length Required",
        413 => "Content Too Large",
        422 => "Unprocessable Content",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Unknown",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_decoding() {
        let q = parse_query("token=a%2Bb+c&node_id=1&&flag&bad=%zz%4");
        assert_eq!(
            q,
            vec![
                ("token".into(), "a+b c".into()),
                ("node_id".into(), "1".into()),
                ("flag".into(), "".into()),
                ("bad".into(), "%zz%4".into()),
            ]
        );
    }
}
