//! `--metrics ADDR`: a small HTTP endpoint serving Prometheus text format.
//!
//! It runs as one task on the first executor and only reads counters that the
//! data path writes (relaxed atomics, and the pool's own structures for its
//! status), so scraping never blocks a session.

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

use futures_lite::{AsyncReadExt, AsyncWriteExt};
use glommio::net::{TcpListener, TcpStream};
use log::debug;

use crate::mux::timeout;
use crate::pool::SharedPool;
use crate::stats::Stats;

/// Longest request head read from a scraper.
const MAX_REQUEST: usize = 8 * 1024;
/// Bound on a scraper sending its request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// What the endpoint reports.
pub struct Sources {
    /// The server's counters.
    pub stats: Stats,
    /// The outbound pool.
    pub pool: Arc<SharedPool>,
}

fn metric(out: &mut String, name: &str, kind: &str, help: &str, samples: &[(String, u64)]) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
    for (labels, value) in samples {
        let _ = writeln!(out, "{name}{labels} {value}");
    }
}

fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// The Prometheus text exposition of everything the server counts.
pub fn render(sources: &Sources) -> String {
    let mut out = String::new();
    let total = sources.stats.snapshot();
    let one = |value: u64| vec![(String::new(), value)];
    metric(
        &mut out,
        "anytls_sessions_open",
        "gauge",
        "Authenticated sessions open now.",
        &one(total.sessions_open),
    );
    metric(
        &mut out,
        "anytls_sessions_total",
        "counter",
        "Sessions authenticated since start.",
        &one(total.sessions_total),
    );
    metric(
        &mut out,
        "anytls_streams_open",
        "gauge",
        "Streams open now.",
        &one(total.streams_open),
    );
    metric(
        &mut out,
        "anytls_streams_total",
        "counter",
        "Streams opened since start.",
        &one(total.streams_total),
    );
    metric(
        &mut out,
        "anytls_bytes_total",
        "counter",
        "Payload bytes relayed, by direction.",
        &[
            ("{direction=\"up\"}".into(), total.bytes_up),
            ("{direction=\"down\"}".into(), total.bytes_down),
        ],
    );
    metric(
        &mut out,
        "anytls_auth_failures_total",
        "counter",
        "Connections that failed authentication.",
        &one(total.auth_failures),
    );
    metric(
        &mut out,
        "anytls_fallbacks_total",
        "counter",
        "Failed authentications handed to the fallback.",
        &one(total.fallbacks),
    );
    metric(
        &mut out,
        "anytls_limit_hits_total",
        "counter",
        "Times a per-client limit was reached, by limit.",
        &crate::stats::Limit::ALL
            .iter()
            .zip(total.limit_hits)
            .map(|(limit, n)| (format!("{{limit=\"{}\"}}", limit.name()), n))
            .collect::<Vec<_>>(),
    );
    metric(
        &mut out,
        "anytls_handshake_failures_total",
        "counter",
        "Connections that failed or timed out before authenticating.",
        &one(total.handshake_failures),
    );
    let per_core = |pick: fn(&crate::stats::CoreCounters) -> u64| {
        (0..sources.stats.cores())
            .map(|core| {
                (
                    format!("{{core=\"{core}\"}}"),
                    pick(sources.stats.core(core)),
                )
            })
            .collect::<Vec<_>>()
    };
    metric(
        &mut out,
        "anytls_core_sessions_open",
        "gauge",
        "Sessions open per executor.",
        &per_core(|c| c.sessions_open.get()),
    );
    metric(
        &mut out,
        "anytls_core_streams_open",
        "gauge",
        "Streams open per executor.",
        &per_core(|c| c.streams_open.get()),
    );
    metric(
        &mut out,
        "anytls_core_bytes_down_total",
        "counter",
        "Target-to-client bytes per executor.",
        &per_core(|c| c.bytes_down.get()),
    );
    let users = sources.stats.user_bytes();
    let mut user_samples = Vec::new();
    for (user, (up, down)) in &users {
        let user = escape(user);
        user_samples.push((format!("{{user=\"{user}\",direction=\"up\"}}"), *up));
        user_samples.push((format!("{{user=\"{user}\",direction=\"down\"}}"), *down));
    }
    metric(
        &mut out,
        "anytls_user_bytes_total",
        "counter",
        "Payload bytes relayed per user.",
        &user_samples,
    );
    let pool = sources.pool.stats();
    let kind = format!("{:?}", sources.pool.config().kind).to_lowercase();
    let labelled = |value: u64| vec![(format!("{{kind=\"{kind}\"}}"), value)];
    metric(
        &mut out,
        "anytls_pool_connections_opened_total",
        "counter",
        "Outbound connections opened (Total).",
        &labelled(pool.total),
    );
    metric(
        &mut out,
        "anytls_pool_active",
        "gauge",
        "Outbound connections carrying a stream (Active).",
        &labelled(pool.active),
    );
    metric(
        &mut out,
        "anytls_pool_reused_total",
        "counter",
        "Streams served by a warm spare (Reused).",
        &labelled(pool.reused),
    );
    metric(
        &mut out,
        "anytls_pool_new_total",
        "counter",
        "Streams that dialed (New).",
        &labelled(pool.new),
    );
    metric(
        &mut out,
        "anytls_pool_cleaned_total",
        "counter",
        "Spares closed: idle, dead or evicted (Cleaned).",
        &labelled(pool.cleaned),
    );
    let spares: Vec<(String, u64)> = sources
        .pool
        .status()
        .into_iter()
        .map(|(target, n)| (format!("{{target=\"{target}\"}}"), n as u64))
        .collect();
    metric(
        &mut out,
        "anytls_pool_spares",
        "gauge",
        "Warm spares held per target.",
        &spares,
    );
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

async fn answer(mut conn: TcpStream, sources: &Sources) -> std::io::Result<()> {
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
    let request_line = head.split(|&b| b == b'\r').next().unwrap_or_default();
    let path = request_line
        .split(|&b| b == b' ')
        .nth(1)
        .unwrap_or_default();
    let (status, body) =
        if request_line.starts_with(b"GET ") && (path == b"/metrics" || path == b"/") {
            ("200 OK", render(sources))
        } else {
            ("404 Not Found", "not found; try /metrics\n".to_owned())
        };
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    conn.write_all(response.as_bytes()).await?;
    conn.close().await
}
