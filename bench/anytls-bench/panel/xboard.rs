//! What Xboard (Laravel 12, locale zh-CN, APP_DEBUG off) puts on the wire, so
//! that a node talking to this stand-in sees the bytes the real panel sends.
//!
//! - JSON as PHP's `json_encode` writes it without flags: compact, `/` written
//!   `\/`, every non-ASCII character as a lower-case `\uXXXX` escape
//!   ([`php_json`]).
//! - `ApiResponse::success(true)` / `fail([code, message])` (app/Helpers):
//!   `{"status":…,"message":…,"data":…,"error":…}` with the status code's
//!   first three digits as the HTTP status ([`success_true`], [`fail`]).
//! - A failed `$request->validate()` (the `server` middleware's token,
//!   node_id and node_type rules, the status endpoint's fields): 422,
//!   `{"message":"<first error>[ (and N more error[s])]","errors":{"<field>":["<error>"]}}`
//!   ([`validation_error`]). Built-in rules have no zh-CN translation in
//!   Xboard, so their messages are Laravel's untranslated keys
//!   (`validation.required`); the closures' messages (`Invalid token`,
//!   `Invalid node type specified`) are as written.
//! - Anything else thrown (app/Exceptions/Handler.php, `convertExceptionToArray`
//!   and Laravel's `prepareJsonResponse`): pretty-printed JSON, slashes and
//!   Unicode unescaped, `{"message": …}`; 500 with the zh-CN translation of
//!   "Uh-oh, we've had some problems, we're working on it." ([`SERVER_ERROR`]),
//!   a missing route 404 and a wrong method 405 with Symfony's messages.

use std::io;

use serde::Serialize;
use serde_json::ser::Formatter;
use serde_json::Value;

/// Xboard's body for an unexpected failure (HTTP 500), byte for byte.
pub const SERVER_ERROR: &str = "{\n    \"message\": \"遇到了些问题，我们正在进行处理\"\n}";

/// `success(true)`: `ResponseEnum::HTTP_OK` is `[200001, '操作成功']` (HTTP 200).
pub fn success_true() -> Vec<u8> {
    php_object(&[
        ("status", &"success".into()),
        ("message", &"操作成功".into()),
        ("data", &true.into()),
        ("error", &Value::Null),
    ])
}

/// `fail([code, message])` with no data and no error, and its HTTP status (the
/// code's first three digits).
pub fn fail(code: u32, message: &str) -> (u16, Vec<u8>) {
    let status = code
        .to_string()
        .get(..3)
        .and_then(|s| s.parse().ok())
        .unwrap_or(500);
    let body = php_object(&[
        ("status", &"fail".into()),
        ("message", &message.into()),
        ("data", &Value::Null),
        ("error", &Value::Null),
    ]);
    (status, body)
}

/// The 422 body of a failed validation: `errors` in the order the fields'
/// rules are declared, each field with its messages.
pub fn validation_error(errors: &[(String, Vec<String>)]) -> Vec<u8> {
    let all: Vec<&String> = errors.iter().flat_map(|(_, m)| m).collect();
    let mut message = all.first().map(|s| s.to_string()).unwrap_or_default();
    match all.len() {
        0 => message = "The given data was invalid.".into(),
        1 => {}
        2 => message.push_str(" (and 1 more error)"),
        n => message.push_str(&format!(" (and {} more errors)", n - 1)),
    }
    let errors: Vec<(&str, Value)> = errors
        .iter()
        .map(|(field, messages)| (field.as_str(), Value::from(messages.clone())))
        .collect();
    let errors: Vec<(&str, &Value)> = errors.iter().map(|(f, m)| (*f, m)).collect();
    let mut out = b"{\"message\":".to_vec();
    php_json_into(&mut out, &message);
    out.extend_from_slice(b",\"errors\":");
    out.extend(php_object(&errors));
    out.push(b'}');
    out
}

/// A JSON object with its fields in the order given (PHP arrays keep their
/// order; serde_json's maps sort their keys), encoded as [`php_json`] does.
pub fn php_object(fields: &[(&str, &Value)]) -> Vec<u8> {
    let mut out = vec![b'{'];
    for (i, (name, value)) in fields.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        php_json_into(&mut out, *name);
        out.push(b':');
        php_json_into(&mut out, *value);
    }
    out.push(b'}');
    out
}

/// Laravel's 404 for a path no route matches (`$request->path()` has no
/// leading or trailing slash).
pub fn not_found(path: &str) -> Vec<u8> {
    pretty_message(&format!(
        "The route {} could not be found.",
        path.trim_matches('/')
    ))
}

/// Laravel's 405 for a route asked with the wrong method; `allowed` is what
/// the Allow field lists (`GET, HEAD` or `POST`).
pub fn method_not_allowed(method: &str, path: &str, allowed: &str) -> Vec<u8> {
    pretty_message(&format!(
        "The {method} method is not supported for route {}. Supported methods: {allowed}.",
        path.trim_matches('/')
    ))
}

/// `{"message": …}` pretty-printed with slashes and Unicode unescaped, as the
/// exception handler renders it.
fn pretty_message(message: &str) -> Vec<u8> {
    let quoted = serde_json::to_string(message).unwrap_or_else(|_| "\"\"".into());
    format!("{{\n    \"message\": {quoted}\n}}").into_bytes()
}

/// `value` encoded as PHP's `json_encode($value)` does (no flags).
pub fn php_json<T: Serialize + ?Sized>(value: &T) -> Vec<u8> {
    let mut out = Vec::new();
    php_json_into(&mut out, value);
    out
}

/// [`php_json`] appended to `out`.
pub fn php_json_into<T: Serialize + ?Sized>(out: &mut Vec<u8>, value: &T) {
    let mut ser = serde_json::Serializer::with_formatter(&mut *out, PhpFormatter);
    // Values made of strings, numbers and maps with string keys cannot fail.
    let _ = value.serialize(&mut ser);
}

/// serde_json's compact output with PHP's escapes: `\/` and `\uXXXX` for
/// every character outside ASCII (UTF-16 pairs above U+FFFF).
struct PhpFormatter;

impl Formatter for PhpFormatter {
    fn write_string_fragment<W>(&mut self, writer: &mut W, fragment: &str) -> io::Result<()>
    where
        W: ?Sized + io::Write,
    {
        let mut start = 0;
        for (i, c) in fragment.char_indices() {
            if c != '/' && c.is_ascii() {
                continue;
            }
            writer.write_all(&fragment.as_bytes()[start..i])?;
            if c == '/' {
                writer.write_all(b"\\/")?;
            } else {
                let mut units = [0u16; 2];
                for unit in c.encode_utf16(&mut units) {
                    write!(writer, "\\u{unit:04x}")?;
                }
            }
            start = i + c.len_utf8();
        }
        writer.write_all(&fragment.as_bytes()[start..])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn php_escapes() {
        let v = serde_json::json!({"a": "x/y", "b": "操作", "c": "\u{1F600}"});
        assert_eq!(
            String::from_utf8(php_json(&v)).unwrap(),
            r#"{"a":"x\/y","b":"\u64cd\u4f5c","c":"\ud83d\ude00"}"#
        );
    }

    #[test]
    fn success_and_fail_bodies() {
        assert_eq!(
            String::from_utf8(success_true()).unwrap(),
            r#"{"status":"success","message":"\u64cd\u4f5c\u6210\u529f","data":true,"error":null}"#
        );
        let (status, body) = fail(422, "Invalid data format");
        assert_eq!(status, 422);
        assert_eq!(
            String::from_utf8(body).unwrap(),
            r#"{"status":"fail","message":"Invalid data format","data":null,"error":null}"#
        );
    }

    #[test]
    fn validation_summary() {
        let errors = vec![
            ("token".to_string(), vec!["Invalid token".to_string()]),
            (
                "node_id".to_string(),
                vec!["validation.required".to_string()],
            ),
        ];
        assert_eq!(
            String::from_utf8(validation_error(&errors)).unwrap(),
            r#"{"message":"Invalid token (and 1 more error)","errors":{"token":["Invalid token"],"node_id":["validation.required"]}}"#
        );
    }
}
