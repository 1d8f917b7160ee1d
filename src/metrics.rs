//! `--metrics ADDR`: a small HTTP endpoint serving the OpenMetrics text format
//! (what Prometheus scrapes), encoded by the `prometheus-client` crate from a
//! collector that reads the live counters at each scrape.
//!
//! It runs as one task on the first executor and only reads counters that the
//! data path writes (relaxed atomics, and the pool's own structures for its
//! status), so scraping never blocks a session.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use futures_lite::{AsyncReadExt, AsyncWriteExt};
use glommio::net::{TcpListener, TcpStream};
use log::debug;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use crate::mux::timeout;
use crate::pool::SharedPool;
use crate::stats::{CoreCounters, Limit, Stats};

/// Longest request head read from a scraper.
const MAX_REQUEST: usize = 8 * 1024;
/// Bound on a scraper sending its request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// What the endpoint reports: read at every scrape, never copied.
pub struct Sources {
    /// The server's counters.
    pub stats: Stats,
    /// The outbound pool.
    pub pool: Arc<SharedPool>,
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

impl Collector for Sources {
    fn encode(&self, mut encoder: DescriptorEncoder) -> fmt::Result {
        use MetricType::{Counter, Gauge};
        let e = &mut encoder;
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

/// The OpenMetrics text exposition of everything the server counts.
pub fn render(sources: Arc<Sources>) -> String {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(sources));
    let mut out = String::new();
    encode(&mut out, &registry).expect("writing to a String cannot fail");
    out
}

/// Serves the endpoint until the listener fails.
pub async fn serve(listener: TcpListener, sources: Arc<Sources>) {
    loop {
        match listener.accept().await {
            Ok(conn) => {
                let sources = sources.clone();
                glommio::spawn_local(async move {
                    if let Err(e) = answer(conn, &sources).await {
                        debug!("metrics request: {e}");
                    }
                })
                .detach();
            }
            Err(e) => {
                debug!("metrics accept failed: {e}");
                glommio::timer::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

async fn answer(mut conn: TcpStream, sources: &Arc<Sources>) -> std::io::Result<()> {
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
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut request = httparse::Request::new(&mut headers);
    let scrape = matches!(request.parse(&head), Ok(httparse::Status::Complete(_)))
        && request.method == Some("GET")
        && matches!(request.path, Some("/metrics" | "/"));
    let (status, body) = if scrape {
        ("200 OK", render(sources.clone()))
    } else {
        ("404 Not Found", "not found; try /metrics\n".to_owned())
    };
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: application/openmetrics-text; version=1.0.0; charset=utf-8\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    conn.write_all(response.as_bytes()).await?;
    conn.close().await
}
