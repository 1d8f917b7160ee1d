//! The server's open descriptors by number (from /proc/PID/fd), and what a
//! socket descriptor is (addresses, TCP state and queues from /proc/PID/net), so
//! a descriptor left open after the soak can be told apart.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, Ipv6Addr};

/// Descriptor number -> what it points to ("socket:[123]", "anon_inode:[io_uring]", a path).
pub fn table(pid: u32) -> BTreeMap<u32, String> {
    let mut out = BTreeMap::new();
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return out;
    };
    for entry in dir.flatten() {
        let Some(fd) = entry.file_name().to_str().and_then(|n| n.parse().ok()) else {
            continue;
        };
        let target = std::fs::read_link(entry.path())
            .map(|p| p.display().to_string())
            .unwrap_or_else(|_| "(gone)".into());
        out.insert(fd, target);
    }
    out
}

/// One line per descriptor of `now` that `before` did not have (or had
/// pointing elsewhere), sockets described.
pub fn new_since(
    pid: u32,
    before: &BTreeMap<u32, String>,
    now: &BTreeMap<u32, String>,
) -> Vec<String> {
    let sockets = sockets(pid);
    now.iter()
        .filter(|(fd, target)| before.get(fd) != Some(target))
        .map(|(fd, target)| {
            let inode = target
                .strip_prefix("socket:[")
                .and_then(|t| t.strip_suffix(']'));
            match inode.and_then(|i| sockets.get(i)) {
                Some(what) => format!("fd {fd}: {target} {what}"),
                None => format!("fd {fd}: {target}"),
            }
        })
        .collect()
}

/// Socket inode -> "tcp 127.0.0.1:8443 -> 127.0.0.2:5000 ESTABLISHED (send queue 0, receive queue 0)".
fn sockets(pid: u32) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for proto in ["tcp", "tcp6", "udp", "udp6"] {
        let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/net/{proto}")) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() < 10 {
                continue;
            }
            let (tx, rx) = f[4].split_once(':').unwrap_or(("?", "?"));
            let queue =
                |hex: &str| u64::from_str_radix(hex, 16).map_or(hex.to_owned(), |v| v.to_string());
            let state = if proto.starts_with("tcp") {
                tcp_state(f[3])
            } else {
                ""
            };
            out.insert(
                f[9].to_owned(),
                format!(
                    "{proto} {} -> {} {state} (send queue {}, receive queue {})",
                    endpoint(f[1]),
                    endpoint(f[2]),
                    queue(tx),
                    queue(rx)
                ),
            );
        }
    }
    out
}

/// "0100007F:1F90" -> "127.0.0.1:8080" (IPv4 and IPv6, kernel byte order).
fn endpoint(hex: &str) -> String {
    let Some((addr, port)) = hex.split_once(':') else {
        return hex.to_owned();
    };
    let port = u16::from_str_radix(port, 16).unwrap_or(0);
    let words: Vec<u32> = (0..addr.len() / 8)
        .filter_map(|i| u32::from_str_radix(&addr[i * 8..i * 8 + 8], 16).ok())
        .collect();
    match words.as_slice() {
        [w] => format!("{}:{port}", Ipv4Addr::from(w.swap_bytes())),
        [a, b, c, d] => {
            let mut bytes = [0u8; 16];
            for (i, w) in [a, b, c, d].iter().enumerate() {
                bytes[i * 4..i * 4 + 4].copy_from_slice(&w.to_le_bytes());
            }
            format!("[{}]:{port}", Ipv6Addr::from(bytes))
        }
        _ => hex.to_owned(),
    }
}

fn tcp_state(hex: &str) -> &'static str {
    match hex {
        "01" => "ESTABLISHED",
        "02" => "SYN_SENT",
        "03" => "SYN_RECV",
        "04" => "FIN_WAIT1",
        "05" => "FIN_WAIT2",
        "06" => "TIME_WAIT",
        "07" => "CLOSE",
        "08" => "CLOSE_WAIT",
        "09" => "LAST_ACK",
        "0A" => "LISTEN",
        "0B" => "CLOSING",
        _ => "?",
    }
}
