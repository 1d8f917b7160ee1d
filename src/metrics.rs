//! `--metrics ADDR`: a small HTTP endpoint serving the OpenMetrics text format
//! (what Prometheus scrapes), encoded by the `prometheus-client` crate from a
//! collector that reads the live counters.
//!
//! It runs as one task on the first executor and only reads counters that the
//! data path writes (relaxed atomics, and the pool's own structures for its
//! status), so scraping never blocks a session. What it reveals (user names,
//! bytes per user) is guarded, and what a scrape flood can cost is bounded:
//!
//! - `Access`: scrapers outside `--metrics-allow` are closed at once, and with
//!   `--metrics-token` a request without `Authorization: Bearer TOKEN` (compared
//!   in constant time) is answered 401 with nothing rendered;
//! - at most [`MAX_SCRAPERS`] connections are answered at once, the ones past
//!   that closed at once;
//! - the exposition is rendered at most once per [`CACHE_FOR`]: scrapes within
//!   it get the same bytes again, whatever the number of users;
//! - every refusal is counted (`anytls_metrics_refused_total{reason}`) and
//!   logged at most once per [`REFUSAL_LOG_INTERVAL`] and reason.

use std::cell::{Cell, RefCell};
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::rc::Rc;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_lite::{AsyncReadExt, AsyncWriteExt};
use glommio::net::{TcpListener, TcpStream};
use log::{debug, warn};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::config::{MetricsConfig, ServerConfig};
use crate::plumbing::{timeout, Throttle};
use crate::pool::SharedPool;
use crate::stats::{CoreCounters, Counter, DialFailure, Limit, Stats};

/// Longest request head read from a scraper.
const MAX_REQUEST: usize = 8 * 1024;
/// Bound on a scraper sending its request, and on it taking the answer.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Scrape connections answered at once; past it a new one is closed at once.
pub const MAX_SCRAPERS: usize = 16;
/// Scrapes within this of the last render get the same exposition again.
pub const CACHE_FOR: Duration = Duration::from_secs(1);
/// A refused scrape is logged at most this often per [`Refusal`].
pub const REFUSAL_LOG_INTERVAL: Duration = Duration::from_secs(10);

/// What the endpoint reports: read at every scrape, never copied.
pub struct Sources {
    /// The server's counters.
    pub stats: Stats,
    /// The outbound pool.
    pub pool: Arc<SharedPool>,
    /// The configuration: the certificate presented and the reloads' outcomes.
    pub config: Arc<ServerConfig>,
}

impl fmt::Debug for Sources {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sources").finish_non_exhaustive()
    }
}

/// One metric family: its name (counters without `_total`, which the encoder
/// appends), help, type, and its samples with their labels.
fn family<V: Copy>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    metric_type: MetricType,
    samples: impl IntoIterator<Item = (Vec<(&'static str, String)>, V)>,
) -> fmt::Result
where
    ConstCounter<V>: EncodeMetric,
    ConstGauge<V>: EncodeMetric,
{
    let mut metric = encoder.encode_descriptor(name, help, None, metric_type)?;
    for (labels, value) in samples {
        let sample = metric.encode_family(&labels)?;
        match metric_type {
            MetricType::Counter => ConstCounter::new(value).encode(sample)?,
            _ => ConstGauge::new(value).encode(sample)?,
        }
    }
    Ok(())
}

/// A family with one sample and no label.
fn single(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    metric_type: MetricType,
    value: u64,
) -> fmt::Result {
    family(encoder, name, help, metric_type, [(Vec::new(), value)])
}

/// The process's resident memory in bytes (`VmRSS` of /proc/self/status).
fn resident_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|line| line.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// The process's open file descriptors (entries of /proc/self/fd).
fn open_descriptors() -> Option<u64> {
    Some(std::fs::read_dir("/proc/self/fd").ok()?.count() as u64)
}

impl Collector for Sources {
    fn encode(&self, mut encoder: DescriptorEncoder) -> fmt::Result {
        use MetricType::{Counter, Gauge};
        let e = &mut encoder;
        family(
            e,
            "anytls_build_info",
            "The server's version, as a label; always 1.",
            Gauge,
            [(
                vec![("version", env!("CARGO_PKG_VERSION").to_owned())],
                1u64,
            )],
        )?;
        // Read from /proc at most once per render (renders are cached for 1 s).
        if let Some(bytes) = resident_bytes() {
            single(
                e,
                "anytls_resident_memory_bytes",
                "Resident memory of the process.",
                Gauge,
                bytes,
            )?;
        }
        if let Some(count) = open_descriptors() {
            single(
                e,
                "anytls_open_descriptors",
                "Open file descriptors of the process.",
                Gauge,
                count,
            )?;
        }
        let total = self.stats.snapshot();
        single(
            e,
            "anytls_sessions_open",
            "Authenticated sessions open now.",
            Gauge,
            total.sessions_open,
        )?;
        single(
            e,
            "anytls_sessions",
            "Sessions authenticated since start.",
            Counter,
            total.sessions_total,
        )?;
        single(
            e,
            "anytls_streams_open",
            "Streams open now.",
            Gauge,
            total.streams_open,
        )?;
        single(
            e,
            "anytls_streams",
            "Streams opened since start.",
            Counter,
            total.streams_total,
        )?;
        let direction = |name: &str| vec![("direction", name.to_owned())];
        family(
            e,
            "anytls_bytes",
            "Payload bytes relayed, by direction.",
            Counter,
            [
                (direction("up"), total.bytes_up),
                (direction("down"), total.bytes_down),
            ],
        )?;
        single(
            e,
            "anytls_auth_failures",
            "Connections that failed authentication.",
            Counter,
            total.auth_failures,
        )?;
        single(
            e,
            "anytls_padding_updates",
            "Padding schemes sent to clients that lacked the server's.",
            Counter,
            total.padding_updates,
        )?;
        single(
            e,
            "anytls_fallbacks",
            "Failed authentications handed to the fallback.",
            Counter,
            total.fallbacks,
        )?;
        family(
            e,
            "anytls_limit_hits",
            "Times a per-client limit was reached, by limit.",
            Counter,
            Limit::ALL
                .iter()
                .zip(total.limit_hits)
                .map(|(limit, n)| (vec![("limit", limit.name().to_owned())], n)),
        )?;
        let (policy, dial): (Vec<_>, Vec<_>) = DialFailure::ALL
            .iter()
            .zip(total.dial_failures)
            .partition(|(why, _)| why.is_policy());
        family(
            e,
            "anytls_dial_failures",
            "Stream targets the server tried and did not reach, by reason.",
            Counter,
            dial.into_iter()
                .map(|(why, n)| (vec![("reason", why.name().to_owned())], n)),
        )?;
        family(
            e,
            "anytls_target_refusals",
            "Stream targets the server's policy refused without trying, by reason \
             (deny_range: --deny/--deny-private; own_socket: the server itself; \
             route: the panel's routes).",
            Counter,
            policy
                .into_iter()
                .map(|(why, n)| (why.name(), n))
                .chain([("route", total.limit_hits[Limit::Route as usize])])
                .map(|(why, n)| (vec![("reason", why.to_owned())], n)),
        )?;
        let reloads = &self.config.reloads;
        family(
            e,
            "anytls_reloads",
            "SIGHUP reloads, by result (failed: something did not load and was kept).",
            Counter,
            [
                ("succeeded", &reloads.succeeded),
                ("failed", &reloads.failed),
            ]
            .map(|(result, n)| (vec![("result", result.to_owned())], n.load(Relaxed))),
        )?;
        if let Some(not_after) = self.config.certificate.as_ref().and_then(|c| c.not_after()) {
            single(
                e,
                "anytls_certificate_expiry_timestamp_seconds",
                "When the certificate new handshakes present expires (notAfter), in seconds since the epoch.",
                Gauge,
                not_after,
            )?;
        }
        single(
            e,
            "anytls_handshake_failures",
            "Connections that failed or timed out before authenticating.",
            Counter,
            total.handshake_failures,
        )?;
        let per_core = |pick: fn(&CoreCounters) -> u64| {
            (0..self.stats.cores()).map(move |core| {
                (
                    vec![("core", core.to_string())],
                    pick(self.stats.core(core)),
                )
            })
        };
        family(
            e,
            "anytls_core_sessions_open",
            "Sessions open per executor.",
            Gauge,
            per_core(|c| c.sessions_open.get()),
        )?;
        family(
            e,
            "anytls_core_streams_open",
            "Streams open per executor.",
            Gauge,
            per_core(|c| c.streams_open.get()),
        )?;
        family(
            e,
            "anytls_core_bytes_down",
            "Target-to-client bytes per executor.",
            Counter,
            per_core(|c| c.bytes_down.get()),
        )?;
        family(
            e,
            "anytls_user_bytes",
            "Payload bytes relayed per user.",
            Counter,
            self.stats
                .user_bytes()
                .into_iter()
                .flat_map(|(user, (up, down))| {
                    [
                        (
                            vec![("user", user.clone()), ("direction", "up".to_owned())],
                            up,
                        ),
                        (vec![("user", user), ("direction", "down".to_owned())], down),
                    ]
                }),
        )?;
        let pool = self.pool.stats();
        let kind = vec![(
            "kind",
            format!("{:?}", self.pool.config().kind).to_lowercase(),
        )];
        let by_kind = |value: u64| [(kind.clone(), value)];
        family(
            e,
            "anytls_pool_connections_opened",
            "Outbound connections opened (Total).",
            Counter,
            by_kind(pool.total),
        )?;
        family(
            e,
            "anytls_pool_active",
            "Outbound connections carrying a stream (Active).",
            Gauge,
            by_kind(pool.active),
        )?;
        family(
            e,
            "anytls_pool_reused",
            "Streams served by a warm spare (Reused).",
            Counter,
            by_kind(pool.reused),
        )?;
        family(
            e,
            "anytls_pool_new",
            "Streams that dialed (New).",
            Counter,
            by_kind(pool.new),
        )?;
        family(
            e,
            "anytls_pool_cleaned",
            "Spares closed: idle, dead or evicted (Cleaned).",
            Counter,
            by_kind(pool.cleaned),
        )?;
        family(
            e,
            "anytls_pool_spares",
            "Warm spares held per target.",
            Gauge,
            self.pool
                .status()
                .into_iter()
                .map(|(target, n)| (vec![("target", target.to_string())], n as u64)),
        )
    }
}

/// Why a scrape connection was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// No `Authorization: Bearer` with the right token: answered 401.
    Token,
    /// The scraper's address is outside `--metrics-allow`: closed at once.
    Address,
    /// [`MAX_SCRAPERS`] connections were being answered: closed at once.
    Busy,
}

impl Refusal {
    /// Every reason, in counter order.
    pub const ALL: [Refusal; 3] = [Refusal::Token, Refusal::Address, Refusal::Busy];

    /// Its `reason` label.
    pub fn name(self) -> &'static str {
        match self {
            Refusal::Token => "token",
            Refusal::Address => "address",
            Refusal::Busy => "busy",
        }
    }
}

/// Scrapes refused, by [`Refusal`] (written by the endpoint's executor only).
#[derive(Default)]
struct Refused([Counter; Refusal::ALL.len()]);

impl fmt::Debug for Refused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Refused").finish_non_exhaustive()
    }
}

impl Collector for Refused {
    fn encode(&self, mut encoder: DescriptorEncoder) -> fmt::Result {
        family(
            &mut encoder,
            "anytls_metrics_refused",
            "Scrapes of this endpoint refused, by reason.",
            MetricType::Counter,
            Refusal::ALL
                .iter()
                .zip(&self.0)
                .map(|(reason, n)| (vec![("reason", reason.name().to_owned())], n.get())),
        )
    }
}

/// Who may scrape: the `--metrics-allow` ranges (empty: any address) and the
/// SHA-256 of the `--metrics-token` (hashed so that the comparison, in constant
/// time, does not depend on the token's length either).
struct Access {
    allow: Vec<ipnet::IpNet>,
    token: Option<[u8; 32]>,
}

impl fmt::Debug for Access {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Access")
            .field("allow", &self.allow)
            .field("token", &self.token.is_some())
            .finish()
    }
}

impl Access {
    /// The access rules of `config`.
    fn new(config: &MetricsConfig) -> Access {
        Access {
            allow: config.allow.clone(),
            token: config.token.as_ref().map(|token| digest(token.as_bytes())),
        }
    }

    /// Whether a scraper at `peer` may connect (an IPv4-mapped IPv6 address is
    /// also matched as IPv4).
    fn admits(&self, peer: IpAddr) -> bool {
        let canonical = peer.to_canonical();
        self.allow.is_empty()
            || self
                .allow
                .iter()
                .any(|range| range.contains(&peer) || range.contains(&canonical))
    }

    /// Whether `headers` carry the token (always, when none is required).
    fn authorized(&self, headers: &[httparse::Header<'_>]) -> bool {
        let Some(expected) = &self.token else {
            return true;
        };
        let mut matched = subtle::Choice::from(0);
        for header in headers {
            if !header.name.eq_ignore_ascii_case("authorization") {
                continue;
            }
            if let Some(presented) = bearer(header.value) {
                matched |= digest(presented)[..].ct_eq(&expected[..]);
            }
        }
        matched.into()
    }
}

fn digest(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

/// The credentials of an `Authorization: Bearer <token>` value (the scheme's
/// case does not matter).
fn bearer(value: &[u8]) -> Option<&[u8]> {
    let (scheme, rest) = value.split_at_checked(6)?;
    if !scheme.eq_ignore_ascii_case(b"bearer") || !rest.starts_with(b" ") {
        return None;
    }
    Some(rest.trim_ascii())
}

/// What a request head is answered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Answer {
    /// The exposition.
    Metrics,
    /// 401: the token is missing or wrong (whatever the path).
    Unauthorized,
    /// 404: a request for anything but `GET /metrics`.
    NotFound,
    /// 400: no complete HTTP request head.
    BadRequest,
}

/// Judges a request head (sans-IO): the token first, so that nothing, not even
/// which paths exist, is told without it.
fn judge(head: &[u8], access: &Access) -> Answer {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut request = httparse::Request::new(&mut headers);
    if !matches!(request.parse(head), Ok(httparse::Status::Complete(_))) {
        return Answer::BadRequest;
    }
    if !access.authorized(request.headers) {
        return Answer::Unauthorized;
    }
    if request.method == Some("GET") && request.path == Some("/metrics") {
        Answer::Metrics
    } else {
        Answer::NotFound
    }
}

/// An HTTP/1.1 response that closes the connection.
fn response(status: &str, extra_headers: &str, content_type: &str, body: &[u8]) -> Vec<u8> {
    let mut out = format!(
        "HTTP/1.1 {status}\r\n{extra_headers}Content-Type: {content_type}\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(body);
    out
}

/// The last 200 response rendered and when: scrapes within [`CACHE_FOR`] of it
/// get the same bytes, so scraping costs at most one render per second.
#[derive(Default)]
struct Cache(RefCell<Option<(Instant, Rc<[u8]>)>>);

impl Cache {
    /// The cached response if rendered within [`CACHE_FOR`] before `now`, else
    /// a new one from `render`, cached at `now`.
    fn get_or_render(&self, now: Instant, render: impl FnOnce() -> Vec<u8>) -> Rc<[u8]> {
        if let Some((at, cached)) = &*self.0.borrow() {
            if now.saturating_duration_since(*at) < CACHE_FOR {
                return cached.clone();
            }
        }
        let fresh: Rc<[u8]> = render().into();
        *self.0.borrow_mut() = Some((now, fresh.clone()));
        fresh
    }
}

/// The endpoint's state on its executor.
struct Endpoint {
    sources: Arc<Sources>,
    refused: Arc<Refused>,
    access: Access,
    cache: Cache,
    /// Connections being answered.
    answering: Cell<usize>,
    /// When each refusal was last logged.
    logged: [Throttle; Refusal::ALL.len()],
}

/// One connection being answered: counted in [`Endpoint::answering`] until dropped.
struct Answering(Rc<Endpoint>);

impl Drop for Answering {
    fn drop(&mut self) {
        self.0.answering.set(self.0.answering.get() - 1);
    }
}

impl Endpoint {
    /// Counts the refusal and logs it, at most once per interval and reason.
    fn refuse(&self, reason: Refusal, peer: SocketAddr) {
        self.refused.0[reason as usize].add(1);
        if self.logged[reason as usize].pass(Instant::now(), REFUSAL_LOG_INTERVAL) {
            let why = match reason {
                Refusal::Token => "no valid bearer token: answered 401",
                Refusal::Address => "address not in --metrics-allow: closed",
                Refusal::Busy => "too many scrapes at once: closed",
            };
            warn!(
                "metrics scrape from {peer} refused ({why}; logged at most every {REFUSAL_LOG_INTERVAL:?})"
            );
        }
    }

    /// The OpenMetrics text exposition of everything the server counts.
    fn render(&self) -> String {
        let mut registry = Registry::default();
        registry.register_collector(Box::new(self.sources.clone()));
        registry.register_collector(Box::new(self.refused.clone()));
        let mut out = String::new();
        encode(&mut out, &registry).expect("writing to a String cannot fail");
        out
    }

    /// Takes a new connection: closed at once if its address is not allowed or
    /// the endpoint is busy, otherwise answered in a task of its own.
    fn take(self: &Rc<Self>, conn: TcpStream) {
        let Ok(peer) = conn.peer_addr() else {
            return;
        };
        if !self.access.admits(peer.ip()) {
            return self.refuse(Refusal::Address, peer);
        }
        if self.answering.get() >= MAX_SCRAPERS {
            return self.refuse(Refusal::Busy, peer);
        }
        self.answering.set(self.answering.get() + 1);
        let slot = Answering(self.clone());
        glommio::spawn_local(async move {
            if let Err(e) = slot.0.answer(conn, peer).await {
                debug!("metrics request from {peer}: {e}");
            }
        })
        .detach();
    }

    async fn answer(&self, mut conn: TcpStream, peer: SocketAddr) -> std::io::Result<()> {
        let mut head = Vec::new();
        let mut buf = [0u8; 1024];
        let read_head = async {
            while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < MAX_REQUEST {
                let n = conn.read(&mut buf).await?;
                if n == 0 {
                    break;
                }
                head.extend_from_slice(&buf[..n]);
            }
            Ok::<_, std::io::Error>(())
        };
        timeout(REQUEST_TIMEOUT, read_head)
            .await
            .unwrap_or_else(|| Err(std::io::ErrorKind::TimedOut.into()))?;
        const TEXT: &str = "text/plain; charset=utf-8";
        let answer: Rc<[u8]> = match judge(&head, &self.access) {
            Answer::Metrics => self.cache.get_or_render(Instant::now(), || {
                response(
                    "200 OK",
                    "",
                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    self.render().as_bytes(),
                )
            }),
            Answer::Unauthorized => {
                self.refuse(Refusal::Token, peer);
                response(
                    "401 Unauthorized",
                    "WWW-Authenticate: Bearer\r\n",
                    TEXT,
                    b"unauthorized\n",
                )
                .into()
            }
            Answer::NotFound => {
                response("404 Not Found", "", TEXT, b"not found; try /metrics\n").into()
            }
            Answer::BadRequest => response("400 Bad Request", "", TEXT, b"bad request\n").into(),
        };
        timeout(REQUEST_TIMEOUT, async {
            conn.write_all(&answer).await?;
            conn.close().await
        })
        .await
        .unwrap_or_else(|| Err(std::io::ErrorKind::TimedOut.into()))
    }
}

/// Serves the endpoint, by `config`'s rules, until the listener fails.
pub async fn serve(listener: TcpListener, sources: Arc<Sources>, config: MetricsConfig) {
    let endpoint = Rc::new(Endpoint {
        sources,
        refused: Arc::default(),
        access: Access::new(&config),
        cache: Cache::default(),
        answering: Cell::new(0),
        logged: Default::default(),
    });
    loop {
        match listener.accept().await {
            Ok(conn) => endpoint.take(conn),
            Err(e) => {
                debug!("metrics accept failed: {e}");
                glommio::timer::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn access(token: Option<&str>, allow: &[&str]) -> Access {
        Access::new(&MetricsConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            token: token.map(str::to_owned),
            allow: allow.iter().map(|range| range.parse().unwrap()).collect(),
        })
    }

    fn get(path: &str, headers: &str) -> Vec<u8> {
        format!("GET {path} HTTP/1.1\r\nHost: metrics\r\n{headers}\r\n").into_bytes()
    }

    #[test]
    fn without_the_token_every_request_is_unauthorized() {
        let guarded = access(Some("s3cret"), &[]);
        for headers in [
            "",
            "Authorization: Bearer wrong\r\n",
            "Authorization: Bearer s3cre\r\n",
            "Authorization: Bearer s3cret2\r\n",
            "Authorization: Basic s3cret\r\n",
            "Authorization: Bearers3cret\r\n",
            "Authorization: s3cret\r\n",
            "X-Authorization: Bearer s3cret\r\n",
        ] {
            assert_eq!(
                judge(&get("/metrics", headers), &guarded),
                Answer::Unauthorized,
                "{headers:?}"
            );
        }
        assert_eq!(judge(&get("/nope", ""), &guarded), Answer::Unauthorized);
    }

    #[test]
    fn the_token_opens_the_metrics() {
        let guarded = access(Some("s3cret"), &[]);
        for headers in [
            "Authorization: Bearer s3cret\r\n",
            "authorization: bearer s3cret\r\n",
            "AUTHORIZATION: BEARER   s3cret  \r\n",
            "Authorization: Bearer wrong\r\nAuthorization: Bearer s3cret\r\n",
        ] {
            assert_eq!(
                judge(&get("/metrics", headers), &guarded),
                Answer::Metrics,
                "{headers:?}"
            );
        }
        let token = "Authorization: Bearer s3cret\r\n";
        assert_eq!(judge(&get("/", token), &guarded), Answer::NotFound);
        assert_eq!(judge(&get("/nope", token), &guarded), Answer::NotFound);
    }

    #[test]
    fn without_a_token_configured_any_get_of_metrics_is_answered() {
        let open = access(None, &[]);
        assert_eq!(judge(&get("/metrics", ""), &open), Answer::Metrics);
        assert_eq!(judge(&get("/", ""), &open), Answer::NotFound);
        assert_eq!(judge(&get("/nope", ""), &open), Answer::NotFound);
        assert_eq!(
            judge(b"POST /metrics HTTP/1.1\r\nHost: m\r\n\r\n", &open),
            Answer::NotFound
        );
    }

    #[test]
    fn an_incomplete_or_garbled_head_is_a_bad_request() {
        let guarded = access(Some("s3cret"), &[]);
        let head = get("/metrics", "Authorization: Bearer s3cret\r\n");
        for end in 0..head.len() {
            assert_eq!(judge(&head[..end], &guarded), Answer::BadRequest, "{end}");
        }
        assert_eq!(judge(&head, &guarded), Answer::Metrics);
        assert_eq!(
            judge(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\r\n\r\n", &guarded),
            Answer::BadRequest
        );
    }

    #[test]
    fn the_allow_list_admits_only_its_ranges_ipv4_mapped_included() {
        let any = access(None, &[]);
        assert!(any.admits("203.0.113.9".parse().unwrap()));
        let local = access(None, &["10.0.0.0/8", "2001:db8::/32"]);
        assert!(local.admits("10.1.2.3".parse().unwrap()));
        assert!(local.admits("::ffff:10.1.2.3".parse().unwrap()));
        assert!(local.admits("2001:db8::7".parse().unwrap()));
        assert!(!local.admits("127.0.0.1".parse().unwrap()));
        assert!(!local.admits("::ffff:127.0.0.1".parse().unwrap()));
        assert!(!local.admits("::1".parse().unwrap()));
    }

    #[test]
    fn a_render_is_served_again_within_one_second() {
        let cache = Cache::default();
        let renders = Cell::new(0);
        let render = || {
            renders.set(renders.get() + 1);
            format!("render {}", renders.get()).into_bytes()
        };
        let start = Instant::now();
        let first = cache.get_or_render(start, render);
        assert_eq!(&*first, b"render 1");
        let again = cache.get_or_render(start + CACHE_FOR / 2, render);
        assert!(Rc::ptr_eq(&first, &again), "the same bytes, not a copy");
        assert_eq!(renders.get(), 1);
        let later = cache.get_or_render(start + CACHE_FOR, render);
        assert_eq!(&*later, b"render 2");
        assert_eq!(renders.get(), 2);
    }

    #[test]
    fn responses_say_their_length_and_close() {
        assert_eq!(
            response(
                "401 Unauthorized",
                "WWW-Authenticate: Bearer\r\n",
                "text/plain",
                b"no\n"
            ),
            b"HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Bearer\r\nContent-Type: text/plain\r\n\
              Content-Length: 3\r\nConnection: close\r\n\r\nno\n"
        );
    }
}
