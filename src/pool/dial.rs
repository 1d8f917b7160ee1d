//! Resolving and dialing stream targets: names resolved off the executor (the
//! blocking `getaddrinfo` runs on glommio's blocking pool, each user within its
//! share of the threads, see [`super::lookup_slots`]) through a small per-core
//! cache that remembers failures too, the policy of which targets are allowed, and the [`Dial`] seam through
//! which the pool opens connections ([`TcpDialer`] in the server, a fake in the
//! pool's tests). Connections only ever go to `SocketAddr`s.

use std::cell::RefCell;
use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::mem::MaybeUninit;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::os::fd::{AsRawFd, FromRawFd};
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use glommio::net::TcpStream;
use glommio_socket2::Socket;
use ipnet::IpNet;

use super::lookup_slots::LookupSlots;
use crate::plumbing::Event;
use crate::proto::Address;
use crate::stats::{DialFailure, Limit};

/// How long a resolved name is reused.
const CACHE_TTL: Duration = Duration::from_secs(60);
/// How long a failed lookup is remembered.
const NEGATIVE_TTL: Duration = Duration::from_secs(5);
/// Names cached per core at most.
const CACHE_CAPACITY: usize = 4096;
/// Blocking threads per core for name lookups (see `crate::runtime`).
pub const LOOKUP_THREADS: usize = 4;
/// Of those, how many one user's lookups may hold at once: a name that never
/// resolves holds its thread for the system resolver's whole timeout.
const LOOKUPS_PER_USER: usize = 2;

/// Address ranges `--deny-private` refuses: loopback, private, link-local, CGNAT,
/// "this network", and their IPv6 counterparts.
pub const PRIVATE_RANGES: &[&str] = &[
    "0.0.0.0/8",
    "10.0.0.0/8",
    "100.64.0.0/10",
    "127.0.0.0/8",
    "169.254.0.0/16",
    "172.16.0.0/12",
    "192.168.0.0/16",
    "::/128",
    "::1/128",
    "fc00::/7",
    "fe80::/10",
];

/// Which addresses streams may reach: not the denied ranges (`--deny`,
/// `--deny-private`), and never the server's own listening or metrics socket,
/// so that no stream loops back into the server.
#[derive(Clone, Debug, Default)]
pub struct TargetPolicy {
    deny: Vec<IpNet>,
    own: Vec<SocketAddr>,
    local_ips: Vec<IpAddr>,
}

impl TargetPolicy {
    /// A policy refusing `deny` (plus [`PRIVATE_RANGES`] with `deny_private`) and
    /// the sockets in `own` (a wildcard address stands for every local address).
    pub fn new(deny: &[IpNet], deny_private: bool, own: Vec<SocketAddr>) -> TargetPolicy {
        let mut ranges = deny.to_vec();
        if deny_private {
            ranges.extend(
                PRIVATE_RANGES
                    .iter()
                    .map(|r| r.parse::<IpNet>().expect("valid range")),
            );
        }
        let local_ips = if own.iter().any(|a| a.ip().is_unspecified()) {
            nix::ifaddrs::getifaddrs()
                .map(|addrs| {
                    addrs
                        .filter_map(|a| a.address)
                        .filter_map(|a| {
                            a.as_sockaddr_in()
                                .map(|v4| IpAddr::V4(v4.ip().into()))
                                .or_else(|| a.as_sockaddr_in6().map(|v6| IpAddr::V6(v6.ip())))
                        })
                        .collect()
                })
                .unwrap_or_default()
        } else {
            Vec::new()
        };
        TargetPolicy {
            deny: ranges,
            own,
            local_ips,
        }
    }

    /// Whether a stream may connect to `addr`.
    pub fn allows(&self, addr: SocketAddr) -> bool {
        self.refusal(addr).is_none()
    }

    /// Why a stream may not connect to `addr`, if it may not.
    pub fn refusal(&self, addr: SocketAddr) -> Option<DialFailure> {
        let ip = canonical(addr.ip());
        if self.deny.iter().any(|net| net.contains(&ip)) {
            return Some(DialFailure::DenyRange);
        }
        let own = self.own.iter().any(|own| {
            own.port() == addr.port()
                && (canonical(own.ip()) == ip
                    || ip.is_unspecified()
                    || (own.ip().is_loopback() && ip.is_loopback())
                    || (own.ip().is_unspecified()
                        && (ip.is_loopback() || self.local_ips.contains(&ip))))
        });
        own.then_some(DialFailure::OwnSocket)
    }
}

/// IPv4-mapped IPv6 addresses as the IPv4 address they are.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

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
    /// Every address of the target is refused by the server's policy (the
    /// reason is the first address's).
    #[error("target {0} is not allowed by this server")]
    Denied(Address, DialFailure),
    /// Resolving + connecting took longer than allowed.
    #[error("connect {0}: timed out after {1:?}")]
    Timeout(Address, Duration),
}

impl DialError {
    /// Why the target was not reached, as counted; `None` for a limit of the
    /// server's, which is counted as a limit hit.
    pub fn failure(&self) -> Option<DialFailure> {
        Some(match self {
            DialError::Resolve(..) => DialFailure::Resolve,
            DialError::Connect(_, e) if is_descriptor_exhaustion(e) => return None,
            DialError::Connect(_, e) => match e.raw_os_error() {
                Some(libc::ECONNREFUSED) => DialFailure::Refused,
                Some(libc::ENETUNREACH | libc::EHOSTUNREACH) => DialFailure::Unreachable,
                Some(libc::ETIMEDOUT) => DialFailure::Timeout,
                _ if e.kind() == io::ErrorKind::TimedOut => DialFailure::Timeout,
                _ => DialFailure::Other,
            },
            DialError::LimitReached => return None,
            DialError::Denied(_, why) => *why,
            DialError::Timeout(..) => DialFailure::Timeout,
        })
    }

    /// The server-wide limit this failure means was reached, if any.
    pub fn limit(&self) -> Option<Limit> {
        match self {
            DialError::LimitReached => Some(Limit::OutboundConnections),
            DialError::Connect(_, e) if is_descriptor_exhaustion(e) => Some(Limit::Descriptors),
            _ => None,
        }
    }
}

/// Whether `error` is the process or the system running out of descriptors.
pub fn is_descriptor_exhaustion(error: &io::Error) -> bool {
    matches!(error.raw_os_error(), Some(libc::EMFILE | libc::ENFILE))
}

type Lookup = Result<Vec<std::net::IpAddr>, String>;
type Cache = RefCell<HashMap<String, (Instant, Lookup)>>;

/// A per-core DNS cache in front of the blocking resolver, the fair shares of
/// its threads, and the [`TargetPolicy`] every resolved address must pass.
pub struct Resolver {
    cache: Rc<Cache>,
    slots: Rc<RefCell<LookupSlots<Waker>>>,
    policy: TargetPolicy,
    /// The blocking lookup: `getaddrinfo`, or a fake in tests.
    system: fn(&str) -> Lookup,
}

impl Default for Resolver {
    fn default() -> Resolver {
        Resolver::new(TargetPolicy::default())
    }
}

impl Resolver {
    /// A resolver whose answers are filtered by `policy`.
    pub fn new(policy: TargetPolicy) -> Resolver {
        Resolver {
            cache: Rc::default(),
            slots: Rc::new(RefCell::new(LookupSlots::new(
                LOOKUP_THREADS,
                LOOKUPS_PER_USER,
            ))),
            policy,
            system: system_lookup,
        }
    }

    /// The socket addresses of `address` that the policy allows (at least one),
    /// a name looked up within `user`'s share of the lookup threads.
    pub async fn resolve(
        &self,
        address: &Address,
        user: &str,
    ) -> Result<Vec<SocketAddr>, DialError> {
        let mut addrs = self.lookup(address, user).await?;
        let mut refused = None;
        addrs.retain(|addr| match self.policy.refusal(*addr) {
            None => true,
            Some(why) => {
                refused.get_or_insert(why);
                false
            }
        });
        match refused {
            _ if !addrs.is_empty() => Ok(addrs),
            Some(why) => Err(DialError::Denied(address.clone(), why)),
            None => Err(DialError::Resolve(
                address.to_string(),
                "no addresses".to_owned(),
            )),
        }
    }

    /// Lookups running and waiting for a thread on this core.
    pub fn load(&self) -> (usize, usize) {
        self.slots.borrow().load()
    }

    fn cached(&self, host: &str) -> Option<Lookup> {
        let now = Instant::now();
        self.cache
            .borrow()
            .get(host)
            .filter(|(expires, _)| *expires > now)
            .map(|(_, lookup)| lookup.clone())
    }

    async fn lookup(&self, address: &Address, user: &str) -> Result<Vec<SocketAddr>, DialError> {
        let (host, port) = match address {
            Address::Ip(addr) => return Ok(vec![*addr]),
            Address::Domain(host, port) => (host, *port),
        };
        let lookup = match self.cached(host) {
            Some(lookup) => lookup,
            None => {
                Turn::new(&self.slots, user).await;
                // Another lookup may have answered while this one waited.
                match self.cached(host) {
                    Some(lookup) => {
                        wake_all(self.slots.borrow_mut().finish(user));
                        lookup
                    }
                    None => self.run_lookup(host, user).await,
                }
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

    /// Runs the blocking lookup holding the thread `user` was given. The thread
    /// is handed back when the lookup ends, not when the stream stops waiting for
    /// it (a stream that gives up cannot free a thread still stuck in it).
    async fn run_lookup(&self, host: &str, user: &str) -> Lookup {
        let answer = Rc::new((Event::default(), RefCell::new(None)));
        let (cache, slots, done) = (self.cache.clone(), self.slots.clone(), answer.clone());
        let (name, user) = (host.to_owned(), user.to_owned());
        let system = self.system;
        glommio::spawn_local(async move {
            let asked = name.clone();
            let lookup = glommio::executor()
                .spawn_blocking(move || system(&asked))
                .await;
            remember(&cache, &name, lookup.clone(), Instant::now());
            wake_all(slots.borrow_mut().finish(&user));
            *done.1.borrow_mut() = Some(lookup);
            done.0.set();
        })
        .detach();
        answer.0.wait().await;
        let lookup = answer.1.borrow_mut().take();
        lookup.expect("the answer is set before the event")
    }
}

/// `getaddrinfo` for `name`, on a blocking thread.
fn system_lookup(name: &str) -> Lookup {
    (name, 0)
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
}

fn remember(cache: &Cache, host: &str, lookup: Lookup, now: Instant) {
    let mut cache = cache.borrow_mut();
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

fn wake_all(wakers: Vec<Waker>) {
    for waker in wakers {
        waker.wake();
    }
}

/// Waits for a lookup thread within the user's share; once it completes, the
/// thread is the caller's to hand back with [`LookupSlots::finish`]. Dropped
/// before that, it leaves the queue (or hands on a thread it was just given).
struct Turn<'a> {
    slots: &'a RefCell<LookupSlots<Waker>>,
    user: &'a str,
    waiting: Option<u64>,
    done: bool,
}

impl<'a> Turn<'a> {
    fn new(slots: &'a RefCell<LookupSlots<Waker>>, user: &'a str) -> Turn<'a> {
        Turn {
            slots,
            user,
            waiting: None,
            done: false,
        }
    }
}

impl Future for Turn<'_> {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let mut slots = self.slots.borrow_mut();
        let granted = match self.waiting {
            Some(id) => slots.poll_granted(id, cx.waker().clone()),
            None => match slots.take(self.user, cx.waker().clone()) {
                Ok(()) => true,
                Err(id) => {
                    drop(slots);
                    self.waiting = Some(id);
                    return Poll::Pending;
                }
            },
        };
        drop(slots);
        if granted {
            self.done = true;
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }
}

impl Drop for Turn<'_> {
    fn drop(&mut self) {
        if let (false, Some(id)) = (self.done, self.waiting) {
            let woken = self.slots.borrow_mut().cancel(id, self.user);
            wake_all(woken);
        }
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

/// How the pool opens connections: everything it does with the network, so
/// that its decisions can be tested with a fake.
pub trait Dial {
    /// A connection carrying a stream.
    type Stream;
    /// A connection waiting as a spare; stores shared by cores move it across
    /// executors.
    type Spare: Send + 'static;

    /// Dials `addrs` in turn for a stream, each within `limit`.
    fn dial(
        &self,
        addrs: &[SocketAddr],
        limit: Duration,
    ) -> impl Future<Output = io::Result<Self::Stream>>;
    /// Dials one spare to `addr` within `limit`.
    fn dial_spare(
        &self,
        addr: SocketAddr,
        limit: Duration,
    ) -> impl Future<Output = io::Result<Self::Spare>>;
    /// Whether a spare is still open at the far end (checked before it is used).
    fn is_alive(&self, spare: &Self::Spare) -> bool;
    /// A spare taken for a stream, as a stream of this executor.
    fn stream_from_spare(&self, spare: Self::Spare) -> Self::Stream;
    /// Asks for `bytes` of send buffer on a connection about to carry a stream.
    fn set_send_buffer(&self, stream: &Self::Stream, bytes: usize);
}

/// The server's dialer: glommio TCP streams; spares wait as owned sockets.
#[derive(Clone, Copy, Debug, Default)]
pub struct TcpDialer;

impl Dial for TcpDialer {
    type Stream = TcpStream;
    type Spare = Socket;

    async fn dial(&self, addrs: &[SocketAddr], limit: Duration) -> io::Result<TcpStream> {
        dial_any(addrs, limit).await
    }

    async fn dial_spare(&self, addr: SocketAddr, limit: Duration) -> io::Result<Socket> {
        let stream = TcpStream::connect_timeout(addr, limit).await?;
        into_socket(stream)
    }

    /// Alive unless a non-blocking peek sees EOF or an error. (Bytes waiting mean
    /// a server-speaks-first target: they stay for the stream.)
    fn is_alive(&self, spare: &Socket) -> bool {
        let mut byte = [MaybeUninit::<u8>::uninit(); 1];
        match spare.recv_with_flags(&mut byte, libc::MSG_PEEK | libc::MSG_DONTWAIT) {
            Ok(0) => false,
            Ok(_) => true,
            Err(e) => e.kind() == io::ErrorKind::WouldBlock,
        }
    }

    fn stream_from_spare(&self, spare: Socket) -> TcpStream {
        TcpStream::from(spare)
    }

    fn set_send_buffer(&self, stream: &TcpStream, bytes: usize) {
        crate::plumbing::set_send_buffer(stream, bytes).ok();
    }
}

/// Turns a glommio stream into an owned socket that can wait in a store and cross
/// executors (glommio 0.9's `TcpStream` has no `IntoRawFd`).
#[allow(unsafe_code)]
fn into_socket(stream: TcpStream) -> io::Result<Socket> {
    stream.set_nodelay(true).ok();
    // SAFETY: `dup` only reads the descriptor number of `stream`, which is open for
    // as long as `stream` lives (to the end of this function).
    let fd = unsafe { libc::dup(stream.as_raw_fd()) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a new, valid descriptor (checked above) that nothing else
    // owns; the `Socket` takes sole ownership and closes it. The original stays
    // with `stream`, which closes it when dropped here.
    Ok(unsafe { Socket::from_raw_fd(fd) })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(text: &str) -> SocketAddr {
        text.parse().unwrap()
    }

    /// A name starting with "hang" takes its thread for 2 s and fails; others
    /// resolve to 127.0.0.1 at once.
    fn fake_lookup(name: &str) -> Lookup {
        if name.starts_with("hang") {
            std::thread::sleep(Duration::from_secs(2));
            return Err("timed out".to_owned());
        }
        Ok(vec![IpAddr::from([127, 0, 0, 1])])
    }

    #[test]
    fn one_user_with_names_that_hang_cannot_starve_the_others() {
        use futures_lite::future;
        use glommio::{LocalExecutorBuilder, Placement, PoolPlacement};
        LocalExecutorBuilder::new(Placement::Unbound)
            .io_memory(64 * 1024)
            .blocking_thread_pool_placement(PoolPlacement::Unbound(LOOKUP_THREADS))
            .make()
            .expect("executor")
            .run(async {
                let resolver = Rc::new(Resolver {
                    system: fake_lookup,
                    ..Resolver::default()
                });
                // Mallory: 40 streams to names that never resolve, each giving up
                // after 300 ms (its connect timeout).
                let attack: Vec<_> = (0..40)
                    .map(|n| {
                        let resolver = resolver.clone();
                        glommio::spawn_local(async move {
                            let name = Address::Domain(format!("hang{n}.example"), 80);
                            let gave_up = crate::plumbing::timeout(
                                Duration::from_millis(300),
                                resolver.resolve(&name, "mallory"),
                            )
                            .await;
                            assert!(gave_up.is_none());
                        })
                    })
                    .collect();
                future::yield_now().await;
                assert_eq!(
                    resolver.load(),
                    (LOOKUPS_PER_USER, 38),
                    "mallory waits at its share"
                );
                let started = Instant::now();
                for n in 0..20 {
                    let name = Address::Domain(format!("site{n}.example"), 443);
                    let addrs = resolver.resolve(&name, "alice").await.unwrap();
                    assert_eq!(addrs, [SocketAddr::from(([127, 0, 0, 1], 443))]);
                }
                assert!(
                    started.elapsed() < Duration::from_millis(500),
                    "alice's lookups took {:?}",
                    started.elapsed()
                );
                for task in attack {
                    task.await;
                }
                assert_eq!(
                    resolver.load(),
                    (LOOKUPS_PER_USER, 0),
                    "waiters that gave up left; the hung lookups still hold their threads"
                );
                glommio::timer::sleep(Duration::from_millis(2100)).await;
                assert_eq!(
                    resolver.load(),
                    (0, 0),
                    "threads handed back when the lookups end"
                );
                let again = Address::Domain("hang0.example".to_owned(), 80);
                assert!(
                    matches!(
                        resolver.resolve(&again, "mallory").await,
                        Err(DialError::Resolve(..))
                    ),
                    "the failure is cached: no new thread taken"
                );
                assert_eq!(resolver.load(), (0, 0));
            });
    }

    #[test]
    fn denied_ranges_and_private_addresses_are_refused() {
        let deny = ["203.0.113.0/24".parse().unwrap()];
        let policy = TargetPolicy::new(&deny, false, Vec::new());
        assert_eq!(
            policy.refusal(addr("203.0.113.9:80")),
            Some(DialFailure::DenyRange)
        );
        assert!(policy.allows(addr("198.51.100.1:80")));
        assert!(
            policy.allows(addr("127.0.0.1:80")),
            "loopback is reachable by default"
        );
        let private = TargetPolicy::new(&[], true, Vec::new());
        for refused in [
            "127.0.0.1:1",
            "10.1.2.3:1",
            "192.168.0.1:1",
            "[::1]:1",
            "[fe80::1]:1",
            "[::ffff:10.0.0.1]:1",
        ] {
            assert!(!private.allows(addr(refused)), "{refused}");
        }
        assert!(private.allows(addr("8.8.8.8:53")));
        assert!(private.allows(addr("[2001:db8::1]:443")));
    }

    #[test]
    fn the_servers_own_sockets_are_refused() {
        let policy = TargetPolicy::new(&[], false, vec![addr("127.0.0.1:8443")]);
        assert_eq!(
            policy.refusal(addr("127.0.0.1:8443")),
            Some(DialFailure::OwnSocket)
        );
        assert!(
            !policy.allows(addr("127.0.0.2:8443")),
            "any loopback address reaches it"
        );
        assert!(!policy.allows(addr("0.0.0.0:8443")));
        assert!(policy.allows(addr("127.0.0.1:8444")));
        let wildcard = TargetPolicy::new(&[], false, vec![addr("0.0.0.0:9000")]);
        assert!(!wildcard.allows(addr("127.0.0.1:9000")));
        assert!(!wildcard.allows(addr("[::ffff:127.0.0.1]:9000")));
        assert!(wildcard.allows(addr("127.0.0.1:9001")));
    }
}
