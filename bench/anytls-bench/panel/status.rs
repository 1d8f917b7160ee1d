//! The `status` endpoint's validation, as Laravel runs the controller's
//! rules: `cpu` `required|numeric|min:0|max:100`, and `mem`, `swap`, `disk`
//! each with `total` and `used` `required|integer|min:0`, on the request's
//! JSON input (trimmed, empty strings as null). Failures are Xboard's 422
//! with Laravel's untranslated message keys (`validation.required`,
//! `validation.numeric`, `validation.integer`, `validation.min.numeric`, ...).

use serde_json::Value;

use super::http::{Request, Response};
use super::inputs::{is_digits, php_number};
use super::xboard;
use super::{lock, Panel};

/// The fields of a status report and their rules, in the controller's order.
const STATUS_FIELDS: [(&str, Rule); 7] = [
    ("cpu", Rule::Percent),
    ("mem.total", Rule::Count),
    ("mem.used", Rule::Count),
    ("swap.total", Rule::Count),
    ("swap.used", Rule::Count),
    ("disk.total", Rule::Count),
    ("disk.used", Rule::Count),
];

/// The rule of one status field.
#[derive(Debug, Clone, Copy)]
enum Rule {
    /// `required|numeric|min:0|max:100`.
    Percent,
    /// `required|integer|min:0`.
    Count,
}

/// `status`: the report validated as the controller does (`$request->validate`
/// on the JSON input: a body sent without a JSON Content-Type has no fields),
/// stored as sent for the node.
pub fn status(panel: &Panel, req: &Request, node: String) -> Response {
    let is_json = req
        .header("content-type")
        .is_some_and(|t| t.contains("/json") || t.contains("+json"));
    let input = if is_json {
        serde_json::from_slice::<Value>(&req.body).unwrap_or(Value::Null)
    } else {
        Value::Null
    };
    let mut errors: Vec<(String, Vec<String>)> = Vec::new();
    for (field, rule) in STATUS_FIELDS {
        let value = field
            .split('.')
            .try_fold(&input, |v, key| v.as_object().and_then(|m| m.get(key)));
        let messages = check_field(value, rule);
        if !messages.is_empty() {
            errors.push((field.to_string(), messages));
        }
    }
    if !errors.is_empty() {
        return Response::json(422, xboard::validation_error(&errors));
    }
    lock(&panel.status).insert(node, input);
    Response::json(200, &br#"{"data":true,"code":0,"message":"success"}"#[..])
}

/// The messages of a status field's failed rules, in rule order (a failed
/// `required` stops the others, as Laravel's implicit rules do).
fn check_field(value: Option<&Value>, rule: Rule) -> Vec<String> {
    // TrimStrings and ConvertEmptyStringsToNull ran over the JSON input.
    let trimmed;
    let value = match value {
        Some(Value::String(s)) => {
            trimmed = Value::String(s.trim().to_string());
            Some(&trimmed)
        }
        other => other,
    };
    let present = match value {
        None | Some(Value::Null) => false,
        Some(Value::String(s)) => !s.is_empty(),
        Some(Value::Array(a)) => !a.is_empty(),
        Some(Value::Object(o)) => !o.is_empty(),
        Some(_) => true,
    };
    let Some(value) = value.filter(|_| present) else {
        return vec!["validation.required".into()];
    };
    let mut messages = Vec::new();
    let numeric = php_number(value);
    match rule {
        Rule::Percent if numeric.is_none() => messages.push("validation.numeric".into()),
        Rule::Count if !php_integer(value) => messages.push("validation.integer".into()),
        _ => {}
    }
    // Laravel's size of a value under a numeric rule: the number if it is
    // numeric, else the item count of an array, else the string's length.
    let (size, kind) = match (numeric, value) {
        (Some(n), _) => (n, "numeric"),
        (None, Value::Array(a)) => (a.len() as f64, "array"),
        (None, Value::Object(o)) => (o.len() as f64, "array"),
        (None, Value::String(s)) => (s.chars().count() as f64, "string"),
        (None, Value::Bool(b)) => (*b as u8 as f64, "string"),
        (None, _) => (0.0, "string"),
    };
    if size < 0.0 {
        messages.push(format!("validation.min.{kind}"));
    }
    if matches!(rule, Rule::Percent) && size > 100.0 {
        messages.push(format!("validation.max.{kind}"));
    }
    messages
}

/// `filter_var($value, FILTER_VALIDATE_INT) !== false` for a JSON value.
fn php_integer(value: &Value) -> bool {
    match value {
        Value::Number(n) => {
            n.as_i64().is_some()
                || n.as_f64()
                    .is_some_and(|f| f.fract() == 0.0 && f.abs() < 9.0e15)
        }
        Value::String(s) => {
            let s = s.trim();
            let digits = s.strip_prefix(['-', '+']).unwrap_or(s);
            is_digits(digits)
                && (digits == "0" || !digits.starts_with('0'))
                && s.parse::<i64>().is_ok()
        }
        Value::Bool(b) => *b,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn laravel_rules() {
        assert!(php_integer(&Value::from("42")));
        assert!(!php_integer(&Value::from("042")));
        assert!(!php_integer(&Value::from(1.5)));
        assert_eq!(
            check_field(Some(&Value::from(150)), Rule::Percent),
            ["validation.max.numeric"]
        );
        assert_eq!(
            check_field(Some(&Value::from("x")), Rule::Count),
            ["validation.integer"]
        );
        assert_eq!(
            check_field(Some(&Value::from(" ")), Rule::Count),
            ["validation.required"]
        );
    }
}
