//! Every statistics line the server logs, formatted in one place: sessions and
//! streams (`[Server Stats]`), the outbound pool's counters (`[Pool Stats]`) and
//! spares per target (`[Pool Status]`), and bytes per user (`[User Stats]`).
//! The names and order follow the document this project grew from, so existing
//! log scrapers keep working. The Prometheus endpoint ([`crate::metrics`]) reads
//! the same numbers.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::net::SocketAddr;

use super::Server;
use crate::pool::kind::PoolStats;
use crate::stats::{Limit, StatsSnapshot};

/// The four lines, as [`Server::report_lines`] hands them out.
pub(super) fn lines(server: &Server) -> [String; 4] {
    [
        server_stats(&server.stats().snapshot()),
        pool_stats(&server.pool().stats()),
        pool_status(&server.pool().status()),
        user_stats(&server.stats().user_bytes()),
    ]
}

/// `[Server Stats] Sessions: 1 open (4 total), ...`, with the limits reached, if any.
pub fn server_stats(total: &StatsSnapshot) -> String {
    let mut line = format!(
        "[Server Stats] Sessions: {} open ({} total), Streams: {} open ({} total), \
         Bytes: {} up, {} down, Auth failures: {} ({} to fallback), Handshake failures: {}",
        total.sessions_open,
        total.sessions_total,
        total.streams_open,
        total.streams_total,
        total.bytes_up,
        total.bytes_down,
        total.auth_failures,
        total.fallbacks,
        total.handshake_failures
    );
    if total.limit_hits.iter().any(|&n| n > 0) {
        line.push_str(", Limits reached:");
        for (limit, n) in Limit::ALL.iter().zip(total.limit_hits) {
            if n > 0 {
                let _ = write!(line, " {} {n}", limit.name());
            }
        }
    }
    line
}

/// `[Pool Stats] Total: 7, Active: 0, Reused: 1, New: 2, Cleaned: 0`.
pub fn pool_stats(stats: &PoolStats) -> String {
    format!(
        "[Pool Stats] Total: {}, Active: {}, Reused: {}, New: {}, Cleaned: {}",
        stats.total, stats.active, stats.reused, stats.new, stats.cleaned
    )
}

/// `[Pool Status] {"10.0.0.1:80":15,...}`: spares per target as JSON.
pub fn pool_status(spares: &BTreeMap<SocketAddr, usize>) -> String {
    let map: serde_json::Map<String, serde_json::Value> = spares
        .iter()
        .map(|(target, n)| (target.to_string(), (*n).into()))
        .collect();
    format!("[Pool Status] {}", serde_json::Value::Object(map))
}

/// `[User Stats] {"alice":{"up":1,"down":2}}`: bytes per user as JSON.
pub fn user_stats(users: &BTreeMap<String, (u64, u64)>) -> String {
    let map: serde_json::Map<String, serde_json::Value> = users
        .iter()
        .map(|(user, (up, down))| (user.clone(), serde_json::json!({ "up": up, "down": down })))
        .collect();
    format!("[User Stats] {}", serde_json::Value::Object(map))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::Stats;

    #[test]
    fn server_stats_sum_cores_and_name_the_limits_reached() {
        let stats = Stats::new(3);
        stats.core(0).streams_open.add(2);
        stats.core(2).streams_open.add(5);
        stats.core(2).streams_open.sub(1);
        stats.core(1).bytes_up.add(1000);
        let line = server_stats(&stats.snapshot());
        assert!(line.contains("Streams: 6 open"), "{line}");
        assert!(line.contains("Bytes: 1000 up"), "{line}");
        assert!(!line.contains("Limits"), "{line}");
        stats.core(1).limit_hit(Limit::UotPerSession);
        assert!(server_stats(&stats.snapshot()).ends_with("Limits reached: uot_per_session 1"));
    }

    #[test]
    fn pool_and_user_lines() {
        let stats = PoolStats {
            total: 7,
            reused: 1,
            new: 2,
            ..PoolStats::default()
        };
        assert_eq!(
            pool_stats(&stats),
            "[Pool Stats] Total: 7, Active: 0, Reused: 1, New: 2, Cleaned: 0"
        );
        let key = |port| SocketAddr::from(([192, 0, 2, 1], port));
        assert_eq!(
            pool_status(&BTreeMap::from([(key(80), 2), (key(81), 2)])),
            r#"[Pool Status] {"192.0.2.1:80":2,"192.0.2.1:81":2}"#
        );
        assert_eq!(
            user_stats(&BTreeMap::from([("a\"b".to_owned(), (1, 2))])),
            r#"[User Stats] {"a\"b":{"down":2,"up":1}}"#
        );
    }
}
