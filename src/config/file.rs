//! The config file (`--config FILE`): everything the flags say, in TOML, with the
//! names sing-box users know (`users = [{ name, password }]`, `padding_scheme`,
//! `certificate_path`, `key_path`); every other key is the flag's name with `_`
//! for `-` (`max_streams_per_session = 512`). A file that starts with `{` is read
//! as a sing-box JSON config instead, and its `anytls` inbound is served.
//!
//! Unknown keys are errors that name the key and its line. Flags given on the
//! command line win over the file ([`super::ServerOptions::merge_file`]).

use std::fmt::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::Value;
use thiserror::Error;

/// Why a config file could not be used; one line each.
#[derive(Debug, Error)]
pub enum FileError {
    /// The file could not be read.
    #[error("cannot read config {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// TOML that does not parse, or a key that is unknown or of the wrong type.
    #[error("config {} line {line}: {message}", path.display())]
    Toml {
        /// The file.
        path: PathBuf,
        /// 1-based line of the offending key or value.
        line: usize,
        /// What is wrong, in one line.
        message: String,
    },
    /// JSON that does not parse as a sing-box config with one `anytls` inbound.
    #[error("sing-box config {}: {message}", path.display())]
    SingBox {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
}

/// One user: the name shows in logs and stats, the password authenticates.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct User {
    /// Shown in logs and `[User Stats]`.
    pub name: String,
    /// What the client hashes.
    pub password: String,
    /// Megabits per second each way over all the user's sessions (absent or 0: none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub speed_limit_mbps: Option<u64>,
    /// Distinct client addresses the user may be online from (absent or 0: any).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_limit: Option<u32>,
}

impl User {
    /// A user with no limits.
    pub fn new(name: &str, password: &str) -> User {
        User {
            name: name.to_owned(),
            password: password.to_owned(),
            ..User::default()
        }
    }

    /// The account this user becomes.
    pub fn spec(&self) -> crate::accounts::AccountSpec {
        crate::accounts::AccountSpec {
            name: self.name.clone(),
            password: self.password.clone(),
            speed_limit: crate::speed_limit::mbps_to_bytes(self.speed_limit_mbps.unwrap_or(0)),
            device_limit: self.device_limit.unwrap_or(0),
        }
    }
}

/// A config file read, with what an operator should be told about it.
#[derive(Debug)]
pub struct Loaded {
    /// The settings: the keys of [`super::ServerOptions`] (checked by it).
    pub file: toml::Table,
    /// For a sing-box config: the one line naming what was left out.
    pub note: Option<String>,
    /// The text read (TOML), to find a key's line.
    text: String,
}

impl Loaded {
    /// The 1-based line a top-level `key` is on (1 if it cannot be found).
    pub fn line_of(&self, key: &str) -> usize {
        self.text
            .lines()
            .position(|line| {
                line.trim_start()
                    .strip_prefix(key)
                    .is_some_and(|rest| rest.trim_start().starts_with('='))
            })
            .map_or(1, |index| index + 1)
    }
}

/// Reads `path`: TOML, or sing-box JSON if it starts with `{`.
pub fn load(path: &Path) -> Result<Loaded, FileError> {
    let text = std::fs::read_to_string(path).map_err(|source| FileError::Read {
        path: path.to_owned(),
        source,
    })?;
    if text.trim_start().starts_with('{') {
        from_sing_box(path, &text)
    } else {
        let mut file: toml::Table = toml::from_str(&text).map_err(|e| FileError::Toml {
            path: path.to_owned(),
            line: e
                .span()
                .map_or(1, |span| text[..span.start].matches('\n').count() + 1),
            message: e.message().replace('\n', " "),
        })?;
        flatten_acme(&mut file);
        Ok(Loaded {
            file,
            note: None,
            text,
        })
    }
}

/// `acme = { domains, email, directory, directory_ca, state_dir, http,
/// self_signed }` as the flags' keys (`acme_domain`, `acme_email`, ...). A value
/// that is not a table is left for the key check to name.
fn flatten_acme(file: &mut toml::Table) {
    if !file.get("acme").is_some_and(toml::Value::is_table) {
        return;
    }
    let Some(toml::Value::Table(acme)) = file.remove("acme") else {
        return;
    };
    for (key, value) in acme {
        let flag = match key.as_str() {
            "domains" => "acme_domain".to_owned(),
            other => format!("acme_{other}"),
        };
        file.insert(flag, value);
    }
}

/// The known key nearest to a misspelt `key`, if one is near enough.
pub(super) fn closest<'a>(key: &str, known: &[&'a str]) -> Option<&'a str> {
    let distance = |a: &str, b: &str| {
        let b: Vec<char> = b.chars().collect();
        let mut row: Vec<usize> = (0..=b.len()).collect();
        for (i, ca) in a.chars().enumerate() {
            let mut diagonal = row[0];
            row[0] = i + 1;
            for (j, cb) in b.iter().enumerate() {
                let substitution = diagonal + usize::from(ca != *cb);
                diagonal = row[j + 1];
                row[j + 1] = substitution.min(row[j] + 1).min(row[j + 1] + 1);
            }
        }
        row[b.len()]
    };
    known
        .iter()
        .map(|candidate| (distance(key, candidate), *candidate))
        .filter(|(d, _)| *d <= 3.max(key.len() / 4))
        .min()
        .map(|(_, candidate)| candidate)
}

/// The inbound fields of sing-box's `anytls` inbound that map onto ours.
const SING_BOX_FIELDS: &[&str] = &[
    "type",
    "listen",
    "listen_port",
    "users",
    "padding_scheme",
    "tls",
];

/// Serves the `anytls` inbound of a sing-box config: `listen` + `listen_port`,
/// `users`, `padding_scheme`, `tls.certificate_path` / `tls.key_path`. Everything
/// else is named in one note.
fn from_sing_box(path: &Path, text: &str) -> Result<Loaded, FileError> {
    let invalid = |message: String| FileError::SingBox {
        path: path.to_owned(),
        message,
    };
    let root: Value =
        serde_json::from_str(text).map_err(|e| invalid(format!("invalid JSON: {e}")))?;
    let inbounds = root
        .get("inbounds")
        .and_then(Value::as_array)
        .ok_or_else(|| invalid("no \"inbounds\" array".to_owned()))?;
    let mut anytls = inbounds
        .iter()
        .filter(|inbound| inbound.get("type").and_then(Value::as_str) == Some("anytls"));
    let inbound = anytls
        .next()
        .ok_or_else(|| invalid("no inbound of \"type\": \"anytls\"".to_owned()))?;
    let mut ignored: Vec<String> = Vec::new();
    let others = anytls.count();
    if others > 0 {
        return Err(invalid(format!(
            "{} anytls inbounds: this server serves one; keep one in the file",
            others + 1
        )));
    }
    let fields = inbound
        .as_object()
        .ok_or_else(|| invalid("the anytls inbound is not an object".to_owned()))?;
    ignored.extend(
        fields
            .keys()
            .filter(|key| !SING_BOX_FIELDS.contains(&key.as_str()))
            .map(|key| format!("inbound.{key}")),
    );
    ignored.extend(
        root.as_object()
            .into_iter()
            .flatten()
            .map(|(key, _)| key)
            .filter(|key| *key != "inbounds")
            .cloned(),
    );
    let text_field = |value: &Value, name: &str| -> Result<String, FileError> {
        value
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| invalid(format!("\"{name}\" must be a string")))
    };
    let mut file = toml::Table::new();
    let host = match fields.get("listen") {
        Some(listen) => text_field(listen, "listen")?,
        None => "::".to_owned(),
    };
    let port = match fields.get("listen_port") {
        Some(port) => port
            .as_u64()
            .and_then(|port| u16::try_from(port).ok())
            .ok_or_else(|| invalid("\"listen_port\" must be a port number".to_owned()))?,
        None => {
            let near = fields.keys().find(|key| {
                !SING_BOX_FIELDS.contains(&key.as_str()) && closest(key, &["listen_port"]).is_some()
            });
            return Err(invalid(match near {
                Some(near) => format!("\"listen_port\" is missing (\"{near}\" is there: a typo?)"),
                None => "\"listen_port\" is missing".to_owned(),
            }));
        }
    };
    let listen = if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    };
    file.insert("listen".to_owned(), listen.into());
    if let Some(users) = fields.get("users") {
        let users: Vec<User> = serde_json::from_value(users.clone())
            .map_err(|e| invalid(format!("\"users\": {e}")))?;
        file.insert("users".to_owned(), toml_value(&users));
    }
    if let Some(scheme) = fields.get("padding_scheme") {
        let lines: Vec<String> = serde_json::from_value(scheme.clone())
            .map_err(|e| invalid(format!("\"padding_scheme\": {e}")))?;
        file.insert("padding_scheme".to_owned(), toml_value(&lines));
    }
    if let Some(tls) = fields.get("tls").and_then(Value::as_object) {
        for (key, value) in tls {
            match key.as_str() {
                "certificate_path" | "key_path" => {
                    file.insert(key.clone(), text_field(value, key)?.into());
                }
                "server_name" => {
                    file.insert(key.clone(), text_field(value, "tls.server_name")?.into());
                }
                "enabled" if value == &Value::Bool(false) => {
                    return Err(invalid(
                        "inbound.tls.enabled is false: AnyTLS always runs over TLS, and this server serves it"
                            .to_owned(),
                    ))
                }
                "enabled" => {}
                "reality" | "ech" if value.get("enabled") != Some(&Value::Bool(false)) => {
                    return Err(invalid(format!(
                        "inbound.tls.{key} is not supported by this server: remove it, or serve this inbound with sing-box"
                    )))
                }
                "certificate" | "key" => {
                    return Err(invalid(format!(
                        "inbound.tls.{key} (inline PEM) is not supported: write it to a file and give tls.{key}_path"
                    )))
                }
                other => ignored.push(format!("inbound.tls.{other}")),
            }
        }
    }
    let note = (!ignored.is_empty()).then(|| {
        let mut note = String::from("sing-box config: serving its anytls inbound; ignored:");
        for (index, key) in ignored.iter().enumerate() {
            let _ = write!(note, "{}{key}", if index == 0 { " " } else { ", " });
        }
        note
    });
    Ok(Loaded {
        file,
        note,
        text: String::new(),
    })
}

/// `value` as a TOML value.
fn toml_value(value: &impl Serialize) -> toml::Value {
    toml::Value::try_from(value).expect("users and lines have a TOML form")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(name: &str, text: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("anytls-file-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    #[test]
    fn an_acme_table_becomes_the_flags_keys() {
        let path = write(
            "acme.toml",
            "[acme]\ndomains = [\"a.example\"]\nemail = \"ops@example.com\"\nstate_dir = \"/var/lib/x\"\n",
        );
        let loaded = load(&path).unwrap();
        assert!(!loaded.file.contains_key("acme"));
        assert_eq!(
            loaded.file["acme_domain"],
            toml::Value::Array(vec!["a.example".into()])
        );
        assert_eq!(loaded.file["acme_email"].as_str(), Some("ops@example.com"));
        assert_eq!(loaded.file["acme_state_dir"].as_str(), Some("/var/lib/x"));
    }

    #[test]
    fn toml_with_sing_box_names() {
        let path = write(
            "a.toml",
            "listen = \"0.0.0.0:443\"\n\
             users = [{ name = \"alice\", password = \"a\" }]\n\
             padding_scheme = [\"stop=2\", \"0=30-30\", \"1=100-200\"]\n\
             certificate_path = \"/etc/anytls/cert.pem\"\n\
             key_path = \"/etc/anytls/key.pem\"\n\
             max_streams_per_session = 64\n\
             pool_type = \"highperf\"\n",
        );
        let loaded = load(&path).unwrap();
        let file = &loaded.file;
        assert_eq!(file["listen"].as_str(), Some("0.0.0.0:443"));
        assert_eq!(file["users"][0]["name"].as_str(), Some("alice"));
        assert_eq!(file["padding_scheme"].as_array().unwrap().len(), 3);
        assert_eq!(file["max_streams_per_session"].as_integer(), Some(64));
        assert_eq!(file["pool_type"].as_str(), Some("highperf"));
        assert_eq!(loaded.line_of("max_streams_per_session"), 6);
    }

    #[test]
    fn bad_toml_and_missing_files_are_one_line() {
        let path = write("b.toml", "listen = \"[::]:443\"\n\nmax_streams = \n");
        let error = load(&path).unwrap_err().to_string();
        assert!(error.contains("line 3"), "{error}");
        assert!(!error.contains('\n'), "one line: {error}");
        let error = load(Path::new("/nonexistent/anytls.toml")).unwrap_err();
        assert!(error
            .to_string()
            .starts_with("cannot read config /nonexistent/anytls.toml"));
    }

    #[test]
    fn sing_box_json_serves_its_anytls_inbound_and_names_what_it_ignores() {
        let path = write(
            "d.json",
            r#"{
              "log": {"level": "info"},
              "inbounds": [
                {"type": "mixed", "listen_port": 1080},
                {"type": "anytls", "tag": "in", "listen": "::", "listen_port": 8443,
                 "users": [{"name": "bob", "password": "b"}],
                 "padding_scheme": ["stop=1", "0=10-10"],
                 "sniff": true,
                 "tls": {"enabled": true, "certificate_path": "c.pem", "key_path": "k.pem",
                         "server_name": "example.com"}}
              ],
              "outbounds": [{"type": "direct"}]
            }"#,
        );
        let loaded = load(&path).unwrap();
        let file = &loaded.file;
        assert_eq!(file["listen"].as_str(), Some("[::]:8443"));
        assert_eq!(file["users"][0]["password"].as_str(), Some("b"));
        assert_eq!(
            file["padding_scheme"],
            toml::Value::from(vec!["stop=1", "0=10-10"])
        );
        assert_eq!(file["certificate_path"].as_str(), Some("c.pem"));
        assert_eq!(file["key_path"].as_str(), Some("k.pem"));
        assert_eq!(file["server_name"].as_str(), Some("example.com"));
        let note = loaded.note.unwrap();
        for ignored in ["inbound.sniff", "log", "outbounds"] {
            assert!(note.contains(ignored), "{note}");
        }
        let path = write("e.json", r#"{"inbounds": [{"type": "vless"}]}"#);
        assert!(load(&path)
            .unwrap_err()
            .to_string()
            .contains("no inbound of \"type\": \"anytls\""));
    }

    #[test]
    fn a_sing_box_inbound_this_server_cannot_honour_is_refused_naming_the_key() {
        let refused = |name: &str, inbound: &str| {
            let text = format!(r#"{{"inbounds": [{inbound}]}}"#);
            load(&write(name, &text)).unwrap_err().to_string()
        };
        let anytls = r#""type": "anytls", "listen_port": 8443, "users": []"#;
        for (tls, key) in [
            (
                r#"{"enabled": true, "reality": {"enabled": true}}"#,
                "inbound.tls.reality",
            ),
            (
                r#"{"enabled": true, "ech": {"enabled": true}}"#,
                "inbound.tls.ech",
            ),
            (r#"{"enabled": false}"#, "inbound.tls.enabled is false"),
            (
                r#"{"enabled": true, "certificate": ["-----BEGIN"]}"#,
                "inbound.tls.certificate",
            ),
        ] {
            let error = refused("f.json", &format!(r#"{{{anytls}, "tls": {tls}}}"#));
            assert!(error.contains(key), "{error}");
        }
        let error = refused("g.json", &format!("{{{anytls}}}, {{{anytls}}}"));
        assert!(error.contains("2 anytls inbounds"), "{error}");
        let error = refused("h.json", r#"{"type": "anytls", "listen_prot": 8443}"#);
        assert!(
            error.contains("\"listen_port\" is missing (\"listen_prot\" is there: a typo?)"),
            "{error}"
        );
        // Reality switched off is not a downgrade.
        let text = format!(
            r#"{{"inbounds": [{{{anytls}, "tls": {{"enabled": true, "reality": {{"enabled": false}}}}}}]}}"#
        );
        assert!(load(&write("i.json", &text)).is_ok());
    }
}
