//! Outbound connections to stream targets: names resolved off the executor (the
//! blocking `getaddrinfo` runs on glommio's blocking pool) through a small per-core
//! cache; connections only ever go to `SocketAddr`s.

use std::cell::RefCell;
use std::collections::HashMap;
use std::io;
use std::net::{SocketAddr, ToSocketAddrs};
use std::time::{Duration, Instant};

use glommio::net::TcpStream;

use crate::proto::Address;

/// How long a resolved name is reused.
const CACHE_TTL: Duration = Duration::from_secs(60);
/// How long a failed lookup is remembered.
const NEGATIVE_TTL: Duration = Duration::from_secs(5);
/// Names cached per core at most.
const CACHE_CAPACITY: usize = 4096;

/// Why a target could not be reached; its text goes to the client in SYNACK.
#[derive(Debug, thiserror::Error)]
pub enum DialError {
    /// The name did not resolve.
    #[error("resolve {0}: {1}")]
    Resolve(String, String),
    /// Every address refused or failed.
    #[error("connect {0}: {1}")]
    Connect(Address, io::Error),
    /// The pool holds `--max-outbound-connections` and none is a spare to close.
    #[error("outbound connection limit reached")]
    LimitReached,
    /// Resolving + connecting took longer than allowed.
    #[error("connect {0}: timed out after {1:?}")]
    Timeout(Address, Duration),
}

type Lookup = Result<Vec<std::net::IpAddr>, String>;

/// A per-core DNS cache in front of the blocking resolver.
#[derive(Default)]
pub struct Resolver {
    cache: RefCell<HashMap<String, (Instant, Lookup)>>,
}

impl Resolver {
    /// The socket addresses of `address`.
    pub async fn resolve(&self, address: &Address) -> Result<Vec<SocketAddr>, DialError> {
        let (host, port) = match address {
            Address::Ip(addr) => return Ok(vec![*addr]),
            Address::Domain(host, port) => (host, *port),
        };
        let now = Instant::now();
        let cached = self
            .cache
            .borrow()
            .get(host)
            .filter(|(expires, _)| *expires > now)
            .map(|(_, lookup)| lookup.clone());
        let lookup = match cached {
            Some(lookup) => lookup,
            None => {
                let name = host.clone();
                let lookup: Lookup = glommio::executor()
                    .spawn_blocking(move || {
                        (name.as_str(), 0)
                            .to_socket_addrs()
                            .map(|addrs| addrs.map(|a| a.ip()).collect::<Vec<_>>())
                            .map_err(|e| e.to_string())
                            .and_then(|ips| {
                                if ips.is_empty() {
                                    Err("no addresses".to_owned())
                                } else {
                                    Ok(ips)
                                }
                            })
                    })
                    .await;
                self.remember(host, lookup.clone(), now);
                lookup
            }
        };
        lookup
            .map(|ips| {
                ips.into_iter()
                    .map(|ip| SocketAddr::new(ip, port))
                    .collect()
            })
            .map_err(|e| DialError::Resolve(host.clone(), e))
    }

    fn remember(&self, host: &str, lookup: Lookup, now: Instant) {
        let mut cache = self.cache.borrow_mut();
        if cache.len() >= CACHE_CAPACITY {
            cache.retain(|_, (expires, _)| *expires > now);
            if cache.len() >= CACHE_CAPACITY {
                cache.clear();
            }
        }
        let ttl = if lookup.is_ok() {
            CACHE_TTL
        } else {
            NEGATIVE_TTL
        };
        cache.insert(host.to_owned(), (now + ttl, lookup));
    }
}

/// Dials the resolved addresses in turn, each within `limit`.
pub async fn dial_any(addrs: &[SocketAddr], limit: Duration) -> io::Result<TcpStream> {
    let mut last_error = io::Error::new(io::ErrorKind::NotFound, "no address");
    for addr in addrs {
        match TcpStream::connect_timeout(*addr, limit).await {
            Ok(stream) => {
                stream.set_nodelay(true).ok();
                return Ok(stream);
            }
            Err(e) => last_error = e.into(),
        }
    }
    Err(last_error)
}
