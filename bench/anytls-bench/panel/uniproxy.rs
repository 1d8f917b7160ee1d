//! The UniProxy node API under `/api/v1/server/UniProxy/`, as Xboard serves it
//! (app/Http/Controllers/V1/Server/UniProxyController.php behind the `server`
//! middleware): `config`, `user`, `push`, `alive`, `alivelist`, `status`.
//!
//! Every request is checked as the middleware does: `token` (required, equal
//! to --token), `node_id` (required; with --node-ids one of them), `node_type`
//! (optional; one of Xboard's types, and then it must be `anytls` for the node
//! to exist). The answers, their status codes and their error bodies are
//! Xboard's (see [`super::xboard`]); the ETags are quoted hex SHA-256 digests
//! of the bodies (Xboard's are SHA-1; a node only echoes them back).

use std::collections::HashSet;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::http::{Request, Response};
use super::inputs::{is_digits, php_number, Cached};
use super::xboard::{self, php_object};
use super::{lock, status, Action, Devices, OutageMode, Panel};

/// The path all the endpoints are under.
pub const PREFIX: &str = "/api/v1/server/UniProxy/";

/// Node types Xboard knows (`Server::VALID_TYPES`).
const VALID_TYPES: [&str; 11] = [
    "hysteria",
    "vless",
    "trojan",
    "vmess",
    "tuic",
    "shadowsocks",
    "anytls",
    "socks",
    "naive",
    "http",
    "mieru",
];

/// One UniProxy endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    /// `GET config`: the node's settings.
    Config,
    /// `GET user`: the users allowed on the node.
    User,
    /// `POST push`: traffic per user.
    Push,
    /// `POST alive`: the IPs each user is online from.
    Alive,
    /// `GET alivelist`: devices online per device-limited user.
    Alivelist,
    /// `POST status`: the node's load.
    Status,
}

impl Endpoint {
    /// Every endpoint, in the order they are reported.
    pub const ALL: [Endpoint; 6] = [
        Endpoint::Config,
        Endpoint::User,
        Endpoint::Push,
        Endpoint::Alive,
        Endpoint::Alivelist,
        Endpoint::Status,
    ];

    /// The endpoint's name (the last part of its path).
    pub fn name(self) -> &'static str {
        match self {
            Endpoint::Config => "config",
            Endpoint::User => "user",
            Endpoint::Push => "push",
            Endpoint::Alive => "alive",
            Endpoint::Alivelist => "alivelist",
            Endpoint::Status => "status",
        }
    }

    /// The endpoint called `name`.
    pub fn from_name(name: &str) -> Option<Endpoint> {
        Endpoint::ALL.into_iter().find(|e| e.name() == name)
    }

    /// Whether it is a POST route (the others are GET, which HEAD also reaches).
    fn is_post(self) -> bool {
        matches!(self, Endpoint::Push | Endpoint::Alive | Endpoint::Status)
    }
}

/// Answers a request whose path starts with [`PREFIX`].
pub fn handle(panel: &Panel, req: &Request) -> Action {
    // Laravel matches routes without the trailing slash.
    let name = req.path[PREFIX.len()..].trim_end_matches('/');
    let Some(endpoint) = Endpoint::from_name(name) else {
        return Action::Respond(Response::json(404, xboard::not_found(&req.path)));
    };
    let allowed = if endpoint.is_post() {
        req.method == "POST"
    } else {
        req.method == "GET" || req.is_head()
    };
    if !allowed {
        let methods = if endpoint.is_post() {
            "POST"
        } else {
            "GET, HEAD"
        };
        let body = xboard::method_not_allowed(&req.method, &req.path, methods);
        return Action::Respond(Response::json(405, body).header("Allow", methods));
    }
    panel.requests.count(endpoint.name());

    if let Some(mode) = panel.outage_for(endpoint) {
        if endpoint == Endpoint::Push {
            lock(&panel.traffic).failed_pushes += 1;
        }
        return match mode {
            OutageMode::Error => {
                Action::Respond(Response::json(500, xboard::SERVER_ERROR.as_bytes()))
            }
            OutageMode::Garbage => Action::Respond(Response::with_type(
                200,
                "text/html; charset=UTF-8",
                super::http::Body::Owned(b"<html>oops</html>".to_vec()),
            )),
            OutageMode::Hang => Action::Hang(endpoint),
            OutageMode::Close => Action::Close,
        };
    }

    let node = match check_node(panel, req) {
        Ok(node) => node,
        Err(refusal) => return Action::Respond(refusal),
    };
    Action::Respond(match endpoint {
        Endpoint::Config => {
            let answer = lock(&panel.config).answer();
            cached(panel, req, &answer, "config_304")
        }
        Endpoint::User => {
            let users = panel.users();
            cached(panel, req, &users.answer, "user_304")
        }
        Endpoint::Push => push(panel, req),
        Endpoint::Alive => alive(panel, req, node),
        Endpoint::Alivelist => alivelist(panel),
        Endpoint::Status => status::status(panel, req, node),
    })
}

/// The `server` middleware's checks; the node id, or the answer refusing the
/// request (422 for a failed validation, 400 for a node that does not exist).
fn check_node(panel: &Panel, req: &Request) -> Result<String, Response> {
    // TrimStrings, then ConvertEmptyStringsToNull.
    let field = |key: &str| req.query(key).map(str::trim).filter(|v| !v.is_empty());
    let mut errors: Vec<(String, Vec<String>)> = Vec::new();
    let mut error = |field: &str, message: &str| {
        errors.push((field.to_string(), vec![message.to_string()]));
    };
    match field("token") {
        None => error("token", "validation.required"),
        Some(token) if token != panel.token => error("token", "Invalid token"),
        Some(_) => {}
    }
    let node_id = field("node_id");
    if node_id.is_none() {
        error("node_id", "validation.required");
    }
    // `v2node` stands for no type; aliases are exact, then lower-cased.
    let node_type = field("node_type").filter(|&t| t != "v2node").map(|t| {
        match t {
            "v2ray" => "vmess",
            "hysteria2" => "hysteria",
            other => other,
        }
        .to_ascii_lowercase()
    });
    if let Some(t) = &node_type {
        if !VALID_TYPES.contains(&t.as_str()) {
            error("node_type", "Invalid node type specified");
        }
    }
    if !errors.is_empty() {
        return Err(Response::json(422, xboard::validation_error(&errors)));
    }
    let node_id = node_id.unwrap_or_default();
    let exists = node_type.as_deref().is_none_or(|t| t == "anytls")
        && panel
            .node_ids
            .as_ref()
            .is_none_or(|ids| ids.iter().any(|id| id == node_id));
    if !exists {
        // ApiException('Server does not exist'): code 400.
        let (status, body) = xboard::fail(400, "Server does not exist");
        return Err(Response::json(status, body));
    }
    Ok(node_id.to_string())
}

/// A cached answer with its ETag, or 304 when If-None-Match contains the ETag
/// (Xboard's test is `str_contains`), counted as `counter`.
fn cached(panel: &Panel, req: &Request, answer: &Cached, counter: &str) -> Response {
    if req
        .header("if-none-match")
        .is_some_and(|v| v.contains(answer.etag.as_str()))
    {
        panel.requests.count(counter);
        return Response::not_modified();
    }
    Response::with_type(
        200,
        "application/json",
        super::http::Body::Shared(answer.body.clone()),
    )
    .header("ETag", format!("\"{}\"", answer.etag))
}

/// `push`: `{"<id>":[up,down],…}` added to the users' totals (entries that are
/// not two numbers are skipped, as `ServerService::processTraffic` does); a
/// body that is not a JSON object or array is Xboard's 422.
fn push(panel: &Panel, req: &Request) -> Response {
    let parsed = serde_json::from_slice::<Value>(&req.body).ok();
    let entries: Vec<(String, &Value)> = match &parsed {
        Some(Value::Object(map)) => map.iter().map(|(k, v)| (k.clone(), v)).collect(),
        Some(Value::Array(list)) => list
            .iter()
            .enumerate()
            .map(|(i, v)| (i.to_string(), v))
            .collect(),
        _ => {
            let (status, body) = xboard::fail(422, "Invalid data format");
            return Response::json(status, body);
        }
    };
    let mut traffic = lock(&panel.traffic);
    for (user, item) in entries {
        let (Some(up), Some(down)) = (pair_item(item, 0), pair_item(item, 1)) else {
            continue;
        };
        let total = traffic.totals.entry(user).or_default();
        total.0 = total.0.saturating_add(up);
        total.1 = total.1.saturating_add(down);
    }
    traffic.pushes += 1;
    Response::json(200, xboard::success_true())
}

/// Item `index` of a traffic entry that has exactly two items (a list, or an
/// object with keys "0" and "1"), if it is a number or a numeric string.
fn pair_item(item: &Value, index: usize) -> Option<i64> {
    let value = match item {
        Value::Array(list) if list.len() == 2 => &list[index],
        Value::Object(map) if map.len() == 2 => map.get(&index.to_string())?,
        _ => return None,
    };
    match value {
        Value::Number(n) => n.as_i64().or_else(|| n.as_f64().map(|f| f as i64)),
        other => php_number(other).map(|f| f as i64),
    }
}

/// `alive`: `{"<id>":["ip",…]}`; each user's IPs on this node replace the ones
/// reported before (`DeviceStateService::setDevices`: ports stripped,
/// duplicates dropped). A body that is not JSON (or `null`) is 400
/// `{"error":"Invalid online data"}`; one that is a scalar, or an IP that is
/// not a string or a number, fails in PHP with a TypeError: Xboard's 500.
fn alive(panel: &Panel, req: &Request, node: String) -> Response {
    let data = match serde_json::from_slice::<Value>(&req.body) {
        Ok(Value::Null) | Err(_) => {
            return Response::json(400, &br#"{"error":"Invalid online data"}"#[..]);
        }
        Ok(data) => data,
    };
    let entries: Vec<(i64, &Value)> = match &data {
        Value::Object(map) => map.iter().map(|(k, v)| (php_int_cast(k), v)).collect(),
        Value::Array(list) => list
            .iter()
            .enumerate()
            .map(|(i, v)| (i as i64, v))
            .collect(),
        _ => return Response::json(500, xboard::SERVER_ERROR.as_bytes()),
    };
    let mut reports = Vec::with_capacity(entries.len());
    for (user, ips) in entries {
        // `(array) $ips`.
        let items: Vec<&Value> = match ips {
            Value::Null => Vec::new(),
            Value::Array(list) => list.iter().collect(),
            Value::Object(map) => map.values().collect(),
            scalar => vec![scalar],
        };
        let mut seen = HashSet::new();
        let mut list = Vec::new();
        for item in items {
            let ip = match item {
                Value::String(s) => s.clone(),
                Value::Number(n) => n.to_string(),
                Value::Bool(true) => "1".into(),
                Value::Bool(false) => String::new(),
                _ => return Response::json(500, xboard::SERVER_ERROR.as_bytes()),
            };
            let ip = normalize_ip(&ip);
            if seen.insert(ip.clone()) {
                list.push(ip);
            }
        }
        reports.push((user, list));
    }
    let now = Instant::now();
    let mut alive = lock(&panel.alive);
    let node_devices = alive.entry(node).or_default();
    for (user, ips) in reports {
        node_devices.insert(user, Devices { ips, at: now });
    }
    Response::json(200, &br#"{"data":true}"#[..])
}

/// PHP's `(int)` of a string: leading whitespace, a sign and digits; 0 if none.
fn php_int_cast(s: &str) -> i64 {
    let s = s.trim_start_matches([' ', '\t', '\n', '\r', '\x0b', '\x0c']);
    let (negative, digits) = match s.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, s.strip_prefix('+').unwrap_or(s)),
    };
    let end = digits
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(digits.len());
    let value = digits[..end].parse::<i64>().unwrap_or(0);
    if negative {
        -value
    } else {
        value
    }
}

/// `DeviceStateService::normalizeIP`: `[v6]:port` → `v6`, `v4:port` → `v4`.
fn normalize_ip(ip: &str) -> String {
    if let Some(rest) = ip.strip_prefix('[') {
        if let Some((host, port)) = rest.rsplit_once("]:") {
            if !host.is_empty() && is_digits(port) {
                return host.to_string();
            }
        }
    }
    if let Some((host, port)) = ip.rsplit_once(':') {
        let v4 = host.split('.').count() == 4 && host.split('.').all(is_digits);
        if v4 && is_digits(port) {
            return host.to_string();
        }
    }
    ip.to_string()
}

/// `alivelist`: for each user with a device limit above 0, the distinct IPs
/// reported for it over all nodes within the last --alive-ttl seconds (300,
/// `DeviceStateService::TTL`), when there are any.
fn alivelist(panel: &Panel) -> Response {
    let users = panel.users();
    let ttl = Duration::from_secs(panel.alive_ttl);
    let alive = lock(&panel.alive);
    let mut counts: Vec<(String, Value)> = Vec::new();
    let mut done = HashSet::new();
    for &user in &users.limited {
        if !done.insert(user) {
            continue;
        }
        let ips: HashSet<&str> = alive
            .values()
            .filter_map(|node| node.get(&user))
            // Whole seconds, as `$now - $timestamp <= TTL`.
            .filter(|d| Duration::from_secs(d.at.elapsed().as_secs()) <= ttl)
            .flat_map(|d| d.ips.iter().map(String::as_str))
            .collect();
        if !ips.is_empty() {
            counts.push((user.to_string(), ips.len().into()));
        }
    }
    let fields: Vec<(&str, &Value)> = counts.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let mut body = b"{\"alive\":".to_vec();
    body.extend(php_object(&fields));
    body.push(b'}');
    Response::json(200, body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ips_normalised_as_xboard() {
        assert_eq!(normalize_ip("1.2.3.4:5678"), "1.2.3.4");
        assert_eq!(normalize_ip("[::1]:443"), "::1");
        assert_eq!(normalize_ip("::1"), "::1");
        assert_eq!(normalize_ip("1.2.3.4"), "1.2.3.4");
        assert_eq!(normalize_ip("host:80"), "host:80");
    }

    #[test]
    fn php_int_casts() {
        assert_eq!(php_int_cast(" 12abc"), 12);
        assert_eq!(php_int_cast("abc"), 0);
        assert_eq!(php_int_cast("-3"), -3);
    }
}
