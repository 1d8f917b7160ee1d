//! The HTTP-01 responder (`--acme-http ADDR`), for a node behind something that
//! eats ALPN: a thread of its own with blocking sockets, off the data path.
//! `GET /.well-known/acme-challenge/TOKEN` for a pending token is answered with
//! its key authorization; anything else gets 404 and nothing more. At most
//! [`MAX_ACTIVE`] requests are served at once, each within [`REQUEST_TIMEOUT`].

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use log::debug;

use super::{AcmeError, Challenges};

const PREFIX: &str = "/.well-known/acme-challenge/";
const MAX_ACTIVE: usize = 32;
const MAX_REQUEST: usize = 8 * 1024;
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// Binds `listen` and answers there on a thread of its own.
pub fn spawn(listen: SocketAddr, challenges: Arc<Challenges>) -> Result<(), AcmeError> {
    let listener =
        TcpListener::bind(listen).map_err(|source| AcmeError::Listen { listen, source })?;
    std::thread::Builder::new()
        .name("anytls-acme-http".into())
        .spawn(move || serve(listener, challenges))
        .map_err(|source| AcmeError::Listen { listen, source })?;
    Ok(())
}

fn serve(listener: TcpListener, challenges: Arc<Challenges>) {
    let active = Arc::new(AtomicUsize::new(0));
    for conn in listener.incoming() {
        let Ok(conn) = conn else { continue };
        if active.fetch_add(1, Ordering::AcqRel) >= MAX_ACTIVE {
            active.fetch_sub(1, Ordering::AcqRel);
            continue;
        }
        let (active, challenges) = (active.clone(), challenges.clone());
        let spawned = std::thread::Builder::new()
            .name("anytls-acme-http".into())
            .spawn(move || {
                if let Err(e) = answer(conn, &challenges) {
                    debug!("ACME HTTP-01 responder: {e}");
                }
                active.fetch_sub(1, Ordering::AcqRel);
            });
        if spawned.is_err() {
            // The closure (and its count) went with the failed spawn.
            debug!("ACME HTTP-01 responder: no thread for a request");
        }
    }
}

fn answer(mut conn: TcpStream, challenges: &Challenges) -> std::io::Result<()> {
    conn.set_read_timeout(Some(REQUEST_TIMEOUT))?;
    conn.set_write_timeout(Some(REQUEST_TIMEOUT))?;
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < MAX_REQUEST {
        match conn.read(&mut buf)? {
            0 => break,
            n => head.extend_from_slice(&buf[..n]),
        }
    }
    conn.write_all(&respond(&head, challenges))
}

/// The whole response to a request whose head is `head`.
fn respond(head: &[u8], challenges: &Challenges) -> Vec<u8> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut request = httparse::Request::new(&mut headers);
    let answer = match request.parse(head) {
        Ok(httparse::Status::Complete(_)) if request.method == Some("GET") => request
            .path
            .and_then(|path| path.strip_prefix(PREFIX))
            .and_then(|token| challenges.http_answer(token)),
        _ => None,
    };
    match answer {
        Some(body) => format!(
            "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        ),
        None => "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".to_owned(),
    }
    .into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_pending_token_is_answered() {
        let challenges = Challenges::default();
        challenges.add_http("tok", "tok.thumb");
        let get = |path: &str| {
            let head = format!("GET {path} HTTP/1.1\r\nHost: a.test\r\n\r\n");
            String::from_utf8(respond(head.as_bytes(), &challenges)).unwrap()
        };
        assert!(get("/.well-known/acme-challenge/tok").ends_with("\r\n\r\ntok.thumb"));
        assert!(get("/.well-known/acme-challenge/other").starts_with("HTTP/1.1 404"));
        assert!(get("/").starts_with("HTTP/1.1 404"));
        let post = b"POST /.well-known/acme-challenge/tok HTTP/1.1\r\n\r\n";
        assert!(respond(post, &challenges).starts_with(b"HTTP/1.1 404"));
        assert!(respond(b"\x16\x03\x01garbage", &challenges).starts_with(b"HTTP/1.1 404"));
    }
}
