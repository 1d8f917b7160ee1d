//! The test controls under `/admin/` (not part of Xboard, no token): what the
//! node reported (`traffic`, `alive`, `status`), how often each endpoint was
//! asked (`requests`), and `outage`, which makes the UniProxy endpoints fail
//! for a while.
//!
//! ```text
//! GET  /admin/traffic   {"traffic":{"<id>":[up,down]},"pushes":N,"failed_pushes":K}
//! GET  /admin/alive     {"<node_id>":{"<id>":["ip",…]}}
//! GET  /admin/status    {"<node_id>":<last status body>}
//! GET  /admin/requests  {"config":N,…,"config_304":N,"user_304":N}
//! POST /admin/outage?seconds=S&mode=500|garbage|hang|close[&only=ENDPOINT]
//! ```

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::http::{Request, Response};
use super::uniproxy::Endpoint;
use super::{lock, Outage, OutageMode, Panel};

/// The path the controls are under.
pub const PREFIX: &str = "/admin/";

/// The longest outage that may be asked for (a day).
const MAX_OUTAGE_SECS: f64 = 86_400.0;

/// Answers a request whose path starts with [`PREFIX`].
pub fn handle(panel: &Panel, req: &Request) -> Response {
    let name = req.path[PREFIX.len()..].trim_end_matches('/');
    let post = name == "outage";
    let known = matches!(name, "traffic" | "alive" | "status" | "requests" | "outage");
    if !known {
        return error(404, &format!("no admin endpoint {name:?}"));
    }
    let method_ok = if post {
        req.method == "POST"
    } else {
        req.method == "GET" || req.is_head()
    };
    if !method_ok {
        let allowed = if post { "POST" } else { "GET" };
        return error(405, &format!("/admin/{name} takes {allowed}")).header("Allow", allowed);
    }
    let body = match name {
        "traffic" => traffic(panel),
        "alive" => alive(panel),
        "status" => object(
            lock(&panel.status)
                .iter()
                .map(|(node, status)| (node.clone(), status.to_string())),
        ),
        "requests" => object(
            panel
                .requests
                .counts()
                .map(|(name, n)| (name.to_string(), n.to_string())),
        ),
        _ => match outage(panel, req) {
            Ok(v) => v.to_string(),
            Err(e) => return error(400, &e),
        },
    };
    Response::json(200, body)
}

/// A JSON object of already encoded values, in the order given (serde_json's
/// maps would sort the keys).
fn object(fields: impl Iterator<Item = (String, String)>) -> String {
    let fields: Vec<String> = fields
        .map(|(key, value)| format!("{}:{value}", Value::from(key)))
        .collect();
    format!("{{{}}}", fields.join(","))
}

/// The traffic totals and push counts.
fn traffic(panel: &Panel) -> String {
    let traffic = lock(&panel.traffic);
    let totals = object(
        traffic
            .totals
            .iter()
            .map(|(user, (up, down))| (user.clone(), format!("[{up},{down}]"))),
    );
    format!(
        "{{\"traffic\":{totals},\"pushes\":{},\"failed_pushes\":{}}}",
        traffic.pushes, traffic.failed_pushes
    )
}

/// The IPs last reported per node and user (expired ones included).
fn alive(panel: &Panel) -> String {
    let alive = lock(&panel.alive);
    object(alive.iter().map(|(node, users)| {
        let users = object(
            users
                .iter()
                .map(|(user, devices)| (user.to_string(), json!(devices.ips).to_string())),
        );
        (node.clone(), users)
    }))
}

/// Starts (or with `seconds=0` ends) an outage; what is now in force.
fn outage(panel: &Panel, req: &Request) -> Result<Value, String> {
    let seconds: f64 = req
        .query("seconds")
        .ok_or("give seconds=S")?
        .trim()
        .parse()
        .ok()
        .filter(|s: &f64| s.is_finite() && (0.0..=MAX_OUTAGE_SECS).contains(s))
        .ok_or("seconds must be a number from 0 to 86400")?;
    let mut current = lock(&panel.outage);
    if seconds == 0.0 {
        *current = None;
        return Ok(json!({"outage": null}));
    }
    let mode = match req.query("mode").unwrap_or("500") {
        "500" => OutageMode::Error,
        "garbage" => OutageMode::Garbage,
        "hang" => OutageMode::Hang,
        "close" => OutageMode::Close,
        other => return Err(format!("mode {other:?} is not 500, garbage, hang or close")),
    };
    let only = match req.query("only").filter(|o| !o.is_empty()) {
        None => None,
        Some(name) => Some(Endpoint::from_name(name).ok_or_else(|| {
            format!("only={name:?} is not config, user, push, alive, alivelist or status")
        })?),
    };
    *current = Some(Outage {
        until: Instant::now() + Duration::from_secs_f64(seconds),
        mode,
        only,
    });
    Ok(json!({"outage": {
        "seconds": seconds,
        "mode": mode.name(),
        "only": only.map(Endpoint::name),
    }}))
}

/// An error answer of the controls: `{"error": message}`.
fn error(status: u16, message: &str) -> Response {
    Response::json(status, json!({ "error": message }).to_string())
}
