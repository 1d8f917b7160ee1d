//! Settings blocks: UTF-8 `key=value` lines (docs/protocol.md §4).
//!
//! Used for the client's Settings frame, the server's ServerSettings reply, and
//! (with the same line syntax) the padding scheme.

use std::collections::hash_map::{Entry, HashMap};

use super::error::SettingsError;

/// The protocol version this implementation speaks.
pub const PROTOCOL_VERSION: u32 = 2;

/// Parsed `key=value` pairs, in the order they arrived; a repeated key keeps its
/// last value, as the reference's map does.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Settings {
    pairs: Vec<(String, String)>,
}

impl Settings {
    /// Parses settings text; lines without `=` are ignored, as the reference does.
    pub fn decode(data: &[u8]) -> Result<Settings, SettingsError> {
        let text = std::str::from_utf8(data).map_err(|_| SettingsError::NotUtf8)?;
        Ok(Settings::parse_text(text))
    }

    pub(crate) fn parse_text(text: &str) -> Settings {
        // Indexed by key while parsing, so that a block of many distinct keys
        // (a hostile client's 64 KiB Settings frame) costs linear time, not quadratic.
        let mut settings = Settings::default();
        let mut index: HashMap<&str, usize> = HashMap::new();
        for line in text.split('\n') {
            let line = line.strip_suffix('\r').unwrap_or(line);
            if let Some((key, value)) = line.split_once('=') {
                match index.entry(key) {
                    Entry::Occupied(at) => settings.pairs[*at.get()].1 = value.to_owned(),
                    Entry::Vacant(slot) => {
                        slot.insert(settings.pairs.len());
                        settings.pairs.push((key.to_owned(), value.to_owned()));
                    }
                }
            }
        }
        settings
    }

    /// Sets `key` to `value`, replacing an earlier value.
    pub fn set(&mut self, key: &str, value: &str) {
        match self.pairs.iter_mut().find(|(k, _)| k == key) {
            Some(pair) => pair.1 = value.to_owned(),
            None => self.pairs.push((key.to_owned(), value.to_owned())),
        }
    }

    /// The value of `key`, if present.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.pairs
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// The announced protocol version (`v`), 0 when missing or not a number.
    pub fn version(&self) -> u32 {
        self.get("v")
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0)
    }

    /// Every pair, in order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.pairs.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// The wire text: pairs joined by `\n`, without a trailing newline.
    pub fn encode(&self) -> Vec<u8> {
        let lines: Vec<String> = self.iter().map(|(k, v)| format!("{k}={v}")).collect();
        lines.join("\n").into_bytes()
    }

    /// The Settings a client of this crate sends.
    pub fn client(software: &str, padding_md5: &str) -> Settings {
        let mut settings = Settings::default();
        settings.set("v", &PROTOCOL_VERSION.to_string());
        settings.set("client", software);
        settings.set("padding-md5", padding_md5);
        settings
    }

    /// The ServerSettings a v2 server replies with.
    pub fn server() -> Settings {
        let mut settings = Settings::default();
        settings.set("v", &PROTOCOL_VERSION.to_string());
        settings
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_settings_round_trip() {
        let settings = Settings::client("anytls-rs/0.1.0", "abc123");
        let wire = settings.encode();
        assert_eq!(
            wire,
            b"v=2\nclient=anytls-rs/0.1.0\npadding-md5=abc123".to_vec()
        );
        let decoded = Settings::decode(&wire).unwrap();
        assert_eq!(decoded, settings);
        assert_eq!(decoded.version(), 2);
        assert_eq!(decoded.get("padding-md5"), Some("abc123"));
    }

    #[test]
    fn splits_on_first_equals_and_ignores_junk_lines() {
        let decoded = Settings::decode(b"a=b=c\n\njunk\r\nv=3\r\nv=4").unwrap();
        assert_eq!(decoded.get("a"), Some("b=c"));
        assert_eq!(decoded.get("junk"), None);
        assert_eq!(decoded.version(), 4);
    }

    #[test]
    fn many_keys_keep_their_order_and_the_last_value() {
        let mut text = String::new();
        for i in 0..5000 {
            text.push_str(&format!("k{i}={i}\n"));
        }
        text.push_str("k7=last\n");
        let decoded = Settings::decode(text.as_bytes()).unwrap();
        assert_eq!(decoded.iter().count(), 5000);
        assert_eq!(decoded.get("k7"), Some("last"));
        assert_eq!(decoded.iter().nth(4999), Some(("k4999", "4999")));
    }

    #[test]
    fn version_defaults_to_zero() {
        assert_eq!(Settings::decode(b"").unwrap().version(), 0);
        assert_eq!(Settings::decode(b"v=two").unwrap().version(), 0);
        assert_eq!(Settings::server().encode(), b"v=2".to_vec());
    }

    #[test]
    fn non_utf8_is_an_error() {
        assert_eq!(
            Settings::decode(&[b'v', b'=', 0xFF]),
            Err(SettingsError::NotUtf8)
        );
    }
}
