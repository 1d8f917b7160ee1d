//! The panel's node API, UniProxy as Xboard serves it (docs/operating.md, "Node
//! mode"): `GET config` and `GET user` with ETags, `POST push` (traffic deltas),
//! `POST alive` (client addresses), `GET alivelist` (devices over the fleet),
//! `POST status` (load). Blocking calls, made only from the node's control thread.
//!
//! Answers are read leniently, as the panels' own nodes read them: `null` where a
//! list or number is expected is empty or 0, numbers may come as strings.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use serde_json::Value;

use super::host::HostStatus;
use super::ledger::Deltas;
use super::routes::Route;

/// Bound on every call, connecting included.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// The largest answer read (a user list of a few hundred thousand users).
const MAX_BODY: u64 = 256 << 20;

/// A call failed; one line each.
#[derive(Debug, thiserror::Error)]
pub enum PanelError {
    /// The panel could not be reached (nothing was sent).
    #[error("cannot reach the panel: {0}")]
    Unreachable(String),
    /// The request was sent but no whole answer came (it may have been applied).
    #[error("no answer from the panel: {0}")]
    NoAnswer(String),
    /// The panel answered with an error status.
    #[error("the panel answered {status}: {body}")]
    Status {
        /// The HTTP status.
        status: u16,
        /// The start of its body (the panel's message).
        body: String,
    },
    /// The answer is not what the contract says.
    #[error("the panel's answer to {call} is not valid: {why}")]
    Invalid {
        /// Which call.
        call: &'static str,
        /// What is wrong.
        why: String,
    },
}

impl PanelError {
    /// Whether the panel may have applied the request (a push may count twice).
    pub fn may_have_applied(&self) -> bool {
        !matches!(self, PanelError::Unreachable(_))
    }
}

/// A fresh answer, or the one the node has (304).
#[derive(Debug)]
pub enum Fetched<T> {
    /// Changed: the new value and its ETag.
    Changed(T, Option<String>),
    /// `If-None-Match` matched: nothing changed.
    Unchanged,
}

/// The node's settings from `GET config`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct NodeConfig {
    /// The port to serve on.
    #[serde(default, deserialize_with = "lenient_u64")]
    pub server_port: u64,
    /// The TLS server name (also in `tls_settings.server_name`).
    #[serde(default, deserialize_with = "lenient")]
    pub server_name: Option<String>,
    /// TLS settings; only `server_name` is read.
    #[serde(default, deserialize_with = "lenient")]
    pub tls_settings: Option<Value>,
    /// The padding scheme's lines.
    #[serde(default, deserialize_with = "lenient")]
    pub padding_scheme: Option<Vec<String>>,
    /// Route rules.
    #[serde(default, deserialize_with = "lenient")]
    pub routes: Option<Vec<Route>>,
    /// How often to pull and push.
    #[serde(default, deserialize_with = "lenient")]
    pub base_config: Option<BaseConfig>,
    /// `cert_config.cert_mode` and the rest: read only to say it is ignored.
    #[serde(default)]
    pub cert_config: Option<Value>,
}

impl NodeConfig {
    /// The TLS server name, from `server_name` or `tls_settings.server_name`.
    pub fn tls_server_name(&self) -> Option<String> {
        self.server_name
            .clone()
            .or_else(|| {
                self.tls_settings
                    .as_ref()?
                    .get("server_name")?
                    .as_str()
                    .map(str::to_owned)
            })
            .filter(|name| !name.trim().is_empty())
    }
}

/// `base_config`: intervals in seconds.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct BaseConfig {
    /// Seconds between pushes.
    #[serde(default, deserialize_with = "lenient_u64")]
    pub push_interval: u64,
    /// Seconds between pulls.
    #[serde(default, deserialize_with = "lenient_u64")]
    pub pull_interval: u64,
}

/// One user from `GET user`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct PanelUser {
    /// The panel's id: the name the node counts the user's traffic under.
    #[serde(deserialize_with = "lenient_u64")]
    pub id: u64,
    /// The password.
    pub uuid: String,
    /// Mbit/s each way; 0: none.
    #[serde(default, deserialize_with = "lenient_u64")]
    pub speed_limit: u64,
    /// Distinct client addresses; 0: any.
    #[serde(default, deserialize_with = "lenient_u64")]
    pub device_limit: u64,
}

#[derive(Deserialize)]
struct UsersAnswer {
    #[serde(default, deserialize_with = "lenient")]
    users: Option<Vec<PanelUser>>,
}

#[derive(Deserialize)]
struct AliveAnswer {
    #[serde(default)]
    alive: Value,
}

/// Where the panel is and who this node is.
#[derive(Clone)]
pub struct PanelClient {
    agent: ureq::Agent,
    base: String,
    token: String,
    node_id: u64,
}

impl std::fmt::Debug for PanelClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PanelClient")
            .field("base", &self.base)
            .field("node_id", &self.node_id)
            .finish_non_exhaustive()
    }
}

impl PanelClient {
    /// A client of the panel at `base` (its URL without `/api/...`), as node `node_id`.
    pub fn new(base: &str, token: &str, node_id: u64) -> PanelClient {
        let tls = ureq::tls::TlsConfig::builder()
            .unversioned_rustls_crypto_provider(Arc::new(
                rustls::crypto::aws_lc_rs::default_provider(),
            ))
            .build();
        let agent = ureq::Agent::config_builder()
            .timeout_global(Some(CALL_TIMEOUT))
            .http_status_as_error(false)
            .tls_config(tls)
            .user_agent(concat!("anytls-rs/", env!("CARGO_PKG_VERSION")))
            .build()
            .into();
        PanelClient {
            agent,
            base: base.trim_end_matches('/').to_owned(),
            token: token.to_owned(),
            node_id,
        }
    }

    /// The node's id.
    pub fn node_id(&self) -> u64 {
        self.node_id
    }

    fn url(&self, call: &str) -> String {
        format!("{}/api/v1/server/UniProxy/{call}", self.base)
    }

    /// `GET config`.
    pub fn config(&self, etag: Option<&str>) -> Result<Fetched<NodeConfig>, PanelError> {
        self.fetch("config", etag)
    }

    /// `GET user`.
    pub fn users(&self, etag: Option<&str>) -> Result<Fetched<Vec<PanelUser>>, PanelError> {
        Ok(match self.fetch::<UsersAnswer>("user", etag)? {
            Fetched::Changed(answer, etag) => {
                Fetched::Changed(answer.users.unwrap_or_default(), etag)
            }
            Fetched::Unchanged => Fetched::Unchanged,
        })
    }

    /// `POST push`: traffic deltas per user id.
    pub fn push(&self, deltas: &Deltas) -> Result<(), PanelError> {
        self.post("push", deltas)
    }

    /// `POST alive`: the client addresses each user is online from here.
    pub fn alive(&self, alive: &BTreeMap<String, Vec<String>>) -> Result<(), PanelError> {
        self.post("alive", alive)
    }

    /// `GET alivelist`: devices online per user over the fleet.
    pub fn alive_list(&self) -> Result<HashMap<String, u32>, PanelError> {
        let Fetched::Changed(answer, _) = self.fetch::<AliveAnswer>("alivelist", None)? else {
            return Ok(HashMap::new());
        };
        let counts = match answer.alive {
            Value::Object(map) => map
                .into_iter()
                .filter_map(|(user, n)| Some((user, u32::try_from(number(&n)?).ok()?)))
                .collect(),
            // An empty PHP array arrives as `[]`.
            Value::Array(list) if list.is_empty() => HashMap::new(),
            Value::Null => HashMap::new(),
            other => {
                return Err(PanelError::Invalid {
                    call: "alivelist",
                    why: format!("alive is {other}"),
                })
            }
        };
        Ok(counts)
    }

    /// `POST status`: this machine's load.
    pub fn status(&self, status: &HostStatus) -> Result<(), PanelError> {
        self.post("status", status)
    }

    fn fetch<T: for<'de> Deserialize<'de>>(
        &self,
        call: &'static str,
        etag: Option<&str>,
    ) -> Result<Fetched<T>, PanelError> {
        let mut request = self
            .agent
            .get(self.url(call))
            .query("token", &self.token)
            .query("node_id", self.node_id.to_string())
            .query("node_type", "anytls");
        if let Some(etag) = etag {
            request = request.header("If-None-Match", etag);
        }
        let response = request.call().map_err(classify)?;
        if response.status() == 304 {
            return Ok(Fetched::Unchanged);
        }
        let etag = response
            .headers()
            .get("etag")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let body = read_body(response)?;
        let value = serde_json::from_slice(&body).map_err(|e| PanelError::Invalid {
            call,
            why: e.to_string(),
        })?;
        Ok(Fetched::Changed(value, etag))
    }

    fn post<B: serde::Serialize>(&self, call: &'static str, body: &B) -> Result<(), PanelError> {
        let json = serde_json::to_vec(body).expect("a request body serialises");
        let request = self.agent.post(self.url(call));
        let response = request
            .query("token", &self.token)
            .query("node_id", self.node_id.to_string())
            .query("node_type", "anytls")
            .header("Content-Type", "application/json")
            .send(&json[..])
            .map_err(classify)?;
        let body = read_body(response)?;
        if says_success(&body) {
            Ok(())
        } else {
            Err(PanelError::Invalid {
                call,
                why: format!("not a success: {}", snippet(&body)),
            })
        }
    }
}

/// The body of a 2xx answer, or the error its status is.
fn read_body(mut response: ureq::http::Response<ureq::Body>) -> Result<Vec<u8>, PanelError> {
    let status = response.status().as_u16();
    let body = response
        .body_mut()
        .with_config()
        .limit(MAX_BODY)
        .read_to_vec()
        .map_err(|e| PanelError::NoAnswer(e.to_string()))?;
    if !(200..300).contains(&status) {
        return Err(PanelError::Status {
            status,
            body: snippet(&body),
        });
    }
    Ok(body)
}

/// Whether a POST's answer says it was applied: Xboard's `{"status":"success",
/// "data":true}` or `{"data":true}` (V2board).
fn says_success(body: &[u8]) -> bool {
    let Ok(value) = serde_json::from_slice::<Value>(body) else {
        return false;
    };
    value.get("status").and_then(Value::as_str) == Some("success")
        || value.get("data") == Some(&Value::Bool(true))
}

fn classify(error: ureq::Error) -> PanelError {
    match &error {
        ureq::Error::ConnectionFailed | ureq::Error::HostNotFound => {
            PanelError::Unreachable(error.to_string())
        }
        ureq::Error::Io(io)
            if matches!(
                io.kind(),
                std::io::ErrorKind::ConnectionRefused | std::io::ErrorKind::NotFound
            ) =>
        {
            PanelError::Unreachable(error.to_string())
        }
        ureq::Error::Timeout(ureq::Timeout::Connect | ureq::Timeout::Resolve) => {
            PanelError::Unreachable(error.to_string())
        }
        _ => PanelError::NoAnswer(error.to_string()),
    }
}

/// The first 200 characters of a body, on one line.
fn snippet(body: &[u8]) -> String {
    String::from_utf8_lossy(&body[..body.len().min(200)])
        .replace(['\r', '\n'], " ")
        .trim()
        .to_owned()
}

/// A JSON number, or a string holding one, as u64.
fn number(value: &Value) -> Option<u64> {
    match value {
        Value::Number(n) => n
            .as_u64()
            .or_else(|| n.as_f64().filter(|f| *f >= 0.0).map(|f| f as u64)),
        Value::String(s) => s.trim().parse().ok(),
        Value::Bool(b) => Some(u64::from(*b)),
        _ => None,
    }
}

fn lenient_u64<'de, D: serde::Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    let value = Value::deserialize(d)?;
    match value {
        Value::Null => Ok(0),
        other => number(&other)
            .ok_or_else(|| serde::de::Error::custom(format!("expected a number, got {other}"))),
    }
}

fn lenient<'de, D: serde::Deserializer<'de>, T: Deserialize<'de>>(
    d: D,
) -> Result<Option<T>, D::Error> {
    Option::<T>::deserialize(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xboard_config_with_nulls_and_strings() {
        let config: NodeConfig = serde_json::from_str(
            r#"{"protocol":"anytls","listen_ip":"0.0.0.0","server_port":"8443","network":null,
                "server_name":null,"tls_settings":{"server_name":"proxy.example","allow_insecure":false},
                "padding_scheme":["stop=2","0=10-10","1=20-30"],"routes":null,
                "base_config":{"push_interval":"30","pull_interval":45}}"#,
        )
        .unwrap();
        assert_eq!(config.server_port, 8443);
        assert_eq!(config.tls_server_name().as_deref(), Some("proxy.example"));
        assert_eq!(config.padding_scheme.unwrap().len(), 3);
        assert!(config.routes.is_none());
        let base = config.base_config.unwrap();
        assert_eq!((base.push_interval, base.pull_interval), (30, 45));
    }

    #[test]
    fn users_with_null_limits() {
        let answer: UsersAnswer = serde_json::from_str(
            r#"{"users":[{"id":1,"uuid":"a","speed_limit":null,"device_limit":null},
                          {"id":"2","uuid":"b","speed_limit":10,"device_limit":"3"}]}"#,
        )
        .unwrap();
        let users = answer.users.unwrap();
        assert_eq!(users[0].speed_limit, 0);
        assert_eq!(
            (users[1].id, users[1].speed_limit, users[1].device_limit),
            (2, 10, 3)
        );
        assert!(
            serde_json::from_str::<UsersAnswer>(r#"{"users":[{"id":null,"uuid":"x"}]}"#)
                .map(|a| a.users.unwrap()[0].id == 0)
                .unwrap()
        );
        assert!(
            serde_json::from_str::<UsersAnswer>(r#"{"users":[{"id":[],"uuid":"x"}]}"#).is_err()
        );
    }

    #[test]
    fn success_bodies() {
        assert!(says_success(
            br#"{"status":"success","message":"ok","data":true,"error":null}"#
        ));
        assert!(says_success(br#"{"data":true}"#));
        assert!(says_success(
            br#"{"data":true,"code":0,"message":"success"}"#
        ));
        assert!(!says_success(
            br#"{"status":"fail","message":"x","data":null}"#
        ));
        assert!(!says_success(b"<html>oops</html>"));
        assert!(!says_success(b""));
    }
}
