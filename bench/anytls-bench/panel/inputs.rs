//! The panel's inputs: the users file, the node config overrides and the
//! padding scheme, each re-read when the file changes, and the two cached
//! answers made from them (the `user` and `config` bodies with their ETags).
//!
//! A file counts as changed when its device, inode, length or modification
//! time differs from the last read (a rewrite through a temporary file and a
//! rename always changes the inode). A change that does not parse is reported
//! on stderr once and the last good contents stay in use.

use std::fs::File;
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use super::xboard::{php_json, php_json_into, php_object};

/// The anytls default padding scheme (Xboard's default for anytls nodes).
pub const DEFAULT_PADDING: [&str; 9] = [
    "stop=8",
    "0=30-30",
    "1=100-400",
    "2=400-500,c,500-1000,c,500-1000,c,500-1000,c,500-1000",
    "3=9-9,500-1000",
    "4=500-1000",
    "5=500-1000",
    "6=500-1000",
    "7=500-1000",
];

/// What identifies one version of a file: device, inode, length, mtime (ns).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp(u64, u64, u64, i64, i64);

/// A file parsed into `T`, re-read when it changes.
pub struct Watched<T> {
    path: PathBuf,
    what: &'static str,
    parse: fn(&[u8]) -> Result<T, String>,
    /// The version last looked at, parsed or not.
    stamp: Option<Stamp>,
    /// The last error reported, so that it is reported once.
    last_error: Option<String>,
    /// The last good contents.
    value: Arc<T>,
}

impl<T> Watched<T> {
    /// Reads and parses `path` (`what` names it in messages); an error if it
    /// cannot be read or parsed.
    pub fn load(
        path: &Path,
        what: &'static str,
        parse: fn(&[u8]) -> Result<T, String>,
    ) -> Result<Watched<T>, String> {
        let (stamp, bytes) = read(path).map_err(|e| format!("{what} {}: {e}", path.display()))?;
        let value = parse(&bytes).map_err(|e| format!("{what} {}: {e}", path.display()))?;
        Ok(Watched {
            path: path.to_path_buf(),
            what,
            parse,
            stamp: Some(stamp),
            last_error: None,
            value: Arc::new(value),
        })
    }

    /// The last good contents.
    pub fn value(&self) -> &Arc<T> {
        &self.value
    }

    /// Re-reads the file if it changed; whether the contents were replaced.
    pub fn refresh(&mut self) -> bool {
        let stamp = match std::fs::metadata(&self.path) {
            Ok(meta) => stamp_of(&meta),
            Err(e) => {
                self.report(format!("cannot read it: {e}"));
                return false;
            }
        };
        if Some(stamp) == self.stamp {
            return false;
        }
        let parsed = read(&self.path)
            .map_err(|e| format!("cannot read it: {e}"))
            .and_then(|(stamp, bytes)| {
                self.stamp = Some(stamp);
                (self.parse)(&bytes)
            });
        match parsed {
            Ok(value) => {
                self.value = Arc::new(value);
                self.last_error = None;
                true
            }
            Err(e) => {
                self.report(e);
                false
            }
        }
    }

    /// Prints `error` on stderr unless it was the last one printed.
    fn report(&mut self, error: String) {
        if self.last_error.as_ref() != Some(&error) {
            eprintln!(
                "panel: {} {}: {error}; keeping the last good contents",
                self.what,
                self.path.display()
            );
            self.last_error = Some(error);
        }
    }
}

/// The file's stamp (taken from the open file, so it matches what was read)
/// and its bytes.
fn read(path: &Path) -> std::io::Result<(Stamp, Vec<u8>)> {
    let mut file = File::open(path)?;
    let stamp = stamp_of(&file.metadata()?);
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes)?;
    Ok((stamp, bytes))
}

/// The stamp of a file's metadata.
fn stamp_of(meta: &std::fs::Metadata) -> Stamp {
    Stamp(
        meta.dev(),
        meta.ino(),
        meta.len(),
        meta.mtime(),
        meta.mtime_nsec(),
    )
}

/// A cached answer: its body and its ETag (hex of the body's SHA-256).
#[derive(Debug, Clone)]
pub struct Cached {
    /// The JSON body.
    pub body: Arc<Vec<u8>>,
    /// The ETag without quotes.
    pub etag: String,
}

impl Cached {
    /// Caches `body` with its ETag.
    pub fn new(body: Vec<u8>) -> Cached {
        let etag = Sha256::digest(&body)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        Cached {
            body: Arc::new(body),
            etag,
        }
    }
}

/// The users list as served.
#[derive(Debug)]
pub struct Users {
    /// The `user` answer.
    pub answer: Cached,
    /// The ids of the users with a device limit above 0, in file order (the
    /// users `alivelist` reports on).
    pub limited: Vec<i64>,
}

/// Parses a users file: the JSON form `{"users":[…]}` when it starts with `{`,
/// else one `id:uuid[:speed_limit_mbps[:device_limit]]` per line.
pub fn parse_users(bytes: &[u8]) -> Result<Users, String> {
    let text = std::str::from_utf8(bytes).map_err(|_| "not UTF-8".to_string())?;
    if text.trim_start().starts_with('{') {
        parse_users_json(text)
    } else {
        parse_users_lines(text)
    }
}

/// The line form: blank lines and `#` comments skipped.
fn parse_users_lines(text: &str) -> Result<Users, String> {
    let mut body = Vec::with_capacity(text.len() + text.len() / 2 + 16);
    body.extend_from_slice(b"{\"users\":[");
    let mut first = true;
    let mut limited = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let bad = |why: &str| format!("line {}: {why}: {line:?}", n + 1);
        let mut parts = line.split(':');
        let id: i64 = parts
            .next()
            .and_then(|s| s.trim().parse().ok())
            .ok_or_else(|| bad("the id is not an integer"))?;
        let uuid = parts.next().map(str::trim).unwrap_or("");
        if uuid.is_empty() || uuid.contains(char::is_whitespace) {
            return Err(bad("no uuid"));
        }
        let mut number = |name: &str| -> Result<u64, String> {
            match parts.next() {
                None => Ok(0),
                Some(s) => s
                    .trim()
                    .parse()
                    .map_err(|_| bad(&format!("{name} is not a non-negative integer"))),
            }
        };
        let speed_limit = number("speed_limit")?;
        let device_limit = number("device_limit")?;
        if parts.next().is_some() {
            return Err(bad("more than id:uuid:speed_limit:device_limit"));
        }
        if !first {
            body.push(b',');
        }
        first = false;
        body.extend_from_slice(format!("{{\"id\":{id},\"uuid\":").as_bytes());
        php_json_into(&mut body, uuid);
        body.extend_from_slice(
            format!(",\"speed_limit\":{speed_limit},\"device_limit\":{device_limit}}}").as_bytes(),
        );
        if device_limit > 0 {
            limited.push(id);
        }
    }
    body.extend_from_slice(b"]}");
    Ok(Users {
        answer: Cached::new(body),
        limited,
    })
}

/// The JSON form: every user an object with an integer `id`; served as
/// `{"users":[…]}` with the users as given (their keys in sorted order).
fn parse_users_json(text: &str) -> Result<Users, String> {
    let file: Value = serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))?;
    let users = file
        .get("users")
        .and_then(Value::as_array)
        .ok_or("no \"users\" array")?;
    let mut limited = Vec::new();
    for (i, user) in users.iter().enumerate() {
        let id = user
            .get("id")
            .and_then(php_int)
            .ok_or_else(|| format!("users[{i}] has no integer \"id\""))?;
        if user.get("device_limit").and_then(php_number).unwrap_or(0.0) > 0.0 {
            limited.push(id);
        }
    }
    let mut body = b"{\"users\":".to_vec();
    php_json_into(&mut body, users);
    body.push(b'}');
    Ok(Users {
        answer: Cached::new(body),
        limited,
    })
}

/// A JSON integer, or a string holding one.
fn php_int(v: &Value) -> Option<i64> {
    match v {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// A JSON number, or a numeric string, as PHP compares it.
pub fn php_number(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse().ok().filter(|f: &f64| f.is_finite()),
        _ => None,
    }
}

/// Whether `s` is one or more ASCII digits.
pub fn is_digits(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())
}

/// Parses a node config file: a JSON object.
pub fn parse_node_config(bytes: &[u8]) -> Result<Map<String, Value>, String> {
    match serde_json::from_slice(bytes) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err("not a JSON object".into()),
        Err(e) => Err(format!("not JSON: {e}")),
    }
}

/// Parses a padding scheme file: its non-blank lines.
pub fn parse_padding(bytes: &[u8]) -> Result<Vec<String>, String> {
    let text = std::str::from_utf8(bytes).map_err(|_| "not UTF-8".to_string())?;
    let lines: Vec<String> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(String::from)
        .collect();
    if lines.is_empty() {
        return Err("no lines".into());
    }
    Ok(lines)
}

/// The values of the config answer given on the command line.
#[derive(Debug, Clone)]
pub struct ConfigDefaults {
    /// `server_port`.
    pub server_port: u16,
    /// `server_name` and `tls_settings.server_name`.
    pub server_name: String,
    /// `base_config.push_interval`.
    pub push_interval: u64,
    /// `base_config.pull_interval`.
    pub pull_interval: u64,
}

/// The `config` answer and the files it is made from.
pub struct NodeConfig {
    defaults: ConfigDefaults,
    padding: Option<Watched<Vec<String>>>,
    overrides: Option<Watched<Map<String, Value>>>,
    answer: Cached,
}

impl NodeConfig {
    /// Reads the optional padding scheme and node config files and builds the
    /// answer.
    pub fn load(
        defaults: ConfigDefaults,
        padding: Option<&Path>,
        overrides: Option<&Path>,
    ) -> Result<NodeConfig, String> {
        let padding = padding
            .map(|p| Watched::load(p, "padding scheme", parse_padding))
            .transpose()?;
        let overrides = overrides
            .map(|p| Watched::load(p, "node config", parse_node_config))
            .transpose()?;
        let mut config = NodeConfig {
            defaults,
            padding,
            overrides,
            answer: Cached::new(Vec::new()),
        };
        config.rebuild();
        Ok(config)
    }

    /// The answer, rebuilt first if a file changed.
    pub fn answer(&mut self) -> Cached {
        let padding = self.padding.as_mut().is_some_and(Watched::refresh);
        let overrides = self.overrides.as_mut().is_some_and(Watched::refresh);
        if padding || overrides {
            self.rebuild();
        }
        self.answer.clone()
    }

    /// Builds the answer: Xboard's anytls config with its keys in Xboard's
    /// order, each override replacing its key in place (new keys go before
    /// `base_config`, which Xboard adds last).
    fn rebuild(&mut self) {
        let d = &self.defaults;
        let padding: Vec<&str> = match &self.padding {
            Some(p) => p.value().iter().map(String::as_str).collect(),
            None => DEFAULT_PADDING.to_vec(),
        };
        // Each field encoded on its own, so that the nested objects keep
        // Xboard's key order too.
        let mut fields: Vec<(String, Vec<u8>)> = vec![
            ("protocol".into(), php_json("anytls")),
            ("listen_ip".into(), php_json("0.0.0.0")),
            ("server_port".into(), php_json(&d.server_port)),
            ("network".into(), php_json(&Value::Null)),
            ("networkSettings".into(), php_json(&Value::Null)),
            ("server_name".into(), php_json(&d.server_name)),
            (
                "tls_settings".into(),
                php_object(&[
                    ("server_name", &d.server_name.as_str().into()),
                    ("allow_insecure", &false.into()),
                ]),
            ),
            ("padding_scheme".into(), php_json(&padding)),
            (
                "base_config".into(),
                php_object(&[
                    ("push_interval", &d.push_interval.into()),
                    ("pull_interval", &d.pull_interval.into()),
                ]),
            ),
        ];
        if let Some(overrides) = &self.overrides {
            for (key, value) in overrides.value().iter() {
                let encoded = php_json(value);
                match fields.iter_mut().find(|(k, _)| k == key) {
                    Some(field) => field.1 = encoded,
                    None => {
                        let before_base_config = fields.len() - 1;
                        fields.insert(before_base_config, (key.clone(), encoded));
                    }
                }
            }
        }
        let mut body = vec![b'{'];
        for (i, (key, value)) in fields.iter().enumerate() {
            if i > 0 {
                body.push(b',');
            }
            php_json_into(&mut body, key.as_str());
            body.push(b':');
            body.extend_from_slice(value);
        }
        body.push(b'}');
        self.answer = Cached::new(body);
    }
}
