//! The padding target: padding schemes (the default one, the largest ones a frame can
//! carry, and `stop`, packet keys and rules with odd numbers), checked against
//! [`PaddingScheme::parse`]: which error comes first, the md5, the record sizes against
//! a model of the rules, the preamble padding, and the records they shape a payload
//! into (through [`shape`]).

use std::collections::BTreeMap;

use rand::rngs::SmallRng;
use rand::seq::SliceRandom;
use rand::Rng;

use anytls::proto::error::PaddingError;
use anytls::proto::frame::{HEADER_LEN, MAX_DATA_LEN};
use anytls::proto::padding::{self, PaddingScheme, Step};

use super::settings::settings_model;
use super::shape;
use crate::alloc::{alloc_within, measure, CaseStats};
use crate::checks::{ensure, variant};
use crate::gen::{number_text, pick, LINE_ENDS};

/// One rule of a packet: `c`, a range, a range of odd numbers, or something else.
fn gen_rule(rng: &mut SmallRng) -> String {
    match rng.gen_range(0..20) {
        0..=2 => "c".to_owned(),
        3..=9 => {
            let a = rng.gen_range(1..1500);
            let b = if rng.gen_ratio(1, 4) {
                a
            } else {
                rng.gen_range(1..1500)
            };
            format!("{a}-{b}")
        }
        10..=14 => format!("{}-{}", number_text(rng), number_text(rng)),
        _ => pick(
            rng,
            &[
                "", "C", " c", "c ", "1-", "-5", "1-2-3", "--", "1--2", "x-5", "+1-+2", " 1-2",
                "1 -2", "cc", "-", "0-0",
            ],
        )
        .to_owned(),
    }
}

/// A padding scheme: the default one, one as large as a frame, or lines of `stop`,
/// packet keys and rules in any order, now and then a byte that is not UTF-8.
pub(super) fn generate(rng: &mut SmallRng) -> Vec<u8> {
    match rng.gen_range(0..10_000) {
        0..=399 => {
            let mut text = padding::DEFAULT_SCHEME.to_owned();
            if rng.gen_bool(0.5) {
                text.push('\n');
            }
            return text.into_bytes();
        }
        400..=419 => {
            // As many rules as one frame can carry: the largest padding a scheme can ask for.
            let rule = pick(
                rng,
                &[
                    "9-9999999",
                    "65535-65535",
                    "1-2",
                    "c",
                    "1-9223372036854775807",
                ],
            );
            let limit = if rng.gen_bool(0.8) {
                MAX_DATA_LEN
            } else {
                70_000
            };
            let mut text = String::from("stop=1\n0=");
            while text.len() + rule.len() < limit {
                text.push_str(rule);
                text.push(',');
            }
            text.pop();
            return text.into_bytes();
        }
        420 => {
            // Many packets, many keys: the most lines (and distinct keys) a scheme can have.
            let mut text = String::from("stop=4294967295");
            let mut i = 0u32;
            while text.len() < MAX_DATA_LEN - 16 {
                text.push_str(&format!("\n{i}=1-2"));
                i += 1;
            }
            return text.into_bytes();
        }
        _ => {}
    }
    let mut lines = Vec::new();
    if rng.gen_ratio(9, 10) {
        let stop = if rng.gen_bool(0.7) {
            pick(
                rng,
                &[
                    "8",
                    "0",
                    "1",
                    "2",
                    " 8 ",
                    "8\r",
                    "4294967295",
                    "4294967296",
                    "-1",
                    "+3",
                    "",
                    "x",
                    "08",
                ],
            )
            .to_owned()
        } else {
            number_text(rng)
        };
        lines.push(format!("stop={stop}"));
    }
    for _ in 0..rng.gen_range(0..10) {
        let key = match rng.gen_range(0..8) {
            0..=5 => rng.gen_range(0..10).to_string(),
            6 => pick(
                rng,
                &[
                    "+1",
                    "01",
                    " 1",
                    "-1",
                    "4294967295",
                    "4294967296",
                    "stop",
                    "c",
                    "",
                ],
            )
            .to_owned(),
            _ => number_text(rng),
        };
        let count = if rng.gen_ratio(1, 50) {
            rng.gen_range(12..2000)
        } else {
            rng.gen_range(0..12)
        };
        let rules: Vec<String> = (0..count).map(|_| gen_rule(rng)).collect();
        lines.push(format!("{key}={}", rules.join(",")));
    }
    if rng.gen_ratio(1, 5) {
        lines.push(pick(rng, &["junk", "", "=", "stop"]).to_owned());
    }
    lines.shuffle(rng);
    let mut text = String::new();
    for (i, line) in lines.iter().enumerate() {
        text.push_str(line);
        if i + 1 < lines.len() || rng.gen_ratio(1, 3) {
            text.push_str(pick(rng, &LINE_ENDS));
        }
    }
    let mut out = text.into_bytes();
    if rng.gen_ratio(1, 30) {
        let at = rng.gen_range(0..=out.len());
        out.insert(at, pick(rng, &[0xFF, 0x80, 0xC0]));
    }
    out
}

/// A padding rule as the model reads it.
#[derive(Clone, Copy, Debug)]
enum ModelRule {
    Check,
    Range(i64, i64),
}

/// Padding rules as a model reads them: `c`, or `a-b` with both bounds i64 and the
/// smaller one positive; anything else skipped.
fn rules_model(value: &str) -> Vec<ModelRule> {
    let mut rules = Vec::new();
    for part in value.split(',') {
        if part == "c" {
            rules.push(ModelRule::Check);
            continue;
        }
        let Some(dash) = part.find('-') else {
            continue;
        };
        let bound = |s: &str| s.parse::<i128>().ok().and_then(|n| i64::try_from(n).ok());
        if let (Some(a), Some(b)) = (bound(&part[..dash]), bound(&part[dash + 1..])) {
            if a.min(b) > 0 {
                rules.push(ModelRule::Range(a.min(b), a.max(b)));
            }
        }
    }
    rules
}

/// The worst padding of one write and of a session's shaped writes, as a model
/// of [`PaddingScheme::check_bounds`] counts it: every range at its largest size
/// (a frame's worth at most) with its frame header, over packets before `stop`.
fn padding_model(text: &str, stop: u32) -> (usize, usize) {
    let mut packets: BTreeMap<u32, &str> = BTreeMap::new();
    for (key, value) in settings_model(text) {
        if let Ok(packet) = key.parse::<u32>() {
            packets.insert(packet, value);
        }
    }
    let mut worst_write = 0usize;
    let mut session = 0usize;
    for (_, value) in packets.range(..stop) {
        let write = rules_model(value)
            .iter()
            .map(|rule| match *rule {
                ModelRule::Check => 0,
                ModelRule::Range(_, max) => (max as usize).min(MAX_DATA_LEN) + HEADER_LEN,
            })
            .fold(0usize, usize::saturating_add);
        worst_write = worst_write.max(write);
        session = session.saturating_add(write);
    }
    (worst_write, session)
}

/// A scheme an operator wrote, as [`PaddingScheme::for_clients`] gives it to
/// clients: when it is taken, the reference client's reading of the text sent
/// (lines split on `\n` only, nothing trimmed, a range it cannot parse skipped)
/// must find the same `stop` and every rule, and the scheme must pad within the
/// bounds our client takes.
fn check_for_clients(input: &[u8]) -> Result<&'static str, String> {
    let Ok(scheme) = PaddingScheme::for_clients(input) else {
        return Ok("refused");
    };
    let text = scheme.text();
    ensure!(
        !text.contains(['\r', ' ', '\t']) && !text.contains("\n\n"),
        "for_clients: {text:?} is not normalised"
    );
    let mut go_stop = None;
    for line in text.split('\n') {
        let Some((key, value)) = line.split_once('=') else {
            return Err(format!("for_clients: line {line:?} without `=`"));
        };
        if key == "stop" {
            go_stop = value.parse::<u32>().ok();
            continue;
        }
        let tokens = value.split(',').count();
        let read = rules_model(value).len();
        ensure!(
            read == tokens,
            "for_clients: {line:?}: a client reads {read} of its {tokens} rules"
        );
    }
    ensure!(
        go_stop == Some(scheme.stop()),
        "for_clients: a client reads stop {go_stop:?}, not {}",
        scheme.stop()
    );
    ensure!(
        scheme.check_bounds().is_ok(),
        "for_clients: a scheme past the bounds was taken"
    );
    Ok("taken")
}

/// Checks [`PaddingScheme::parse`] of `input` and what the scheme it gives answers.
pub(super) fn check(
    input: &[u8],
    rng: &mut SmallRng,
    stats: &mut CaseStats,
) -> Result<String, String> {
    let for_clients = check_for_clients(input)?;
    let (parsed, peak) = measure(stats, || PaddingScheme::parse(input));
    alloc_within(
        "PaddingScheme::parse",
        peak,
        128 * input.len() + 4096,
        input.len(),
    )?;

    // The model of which error comes first.
    let expected = if input.len() > MAX_DATA_LEN {
        Err(PaddingError::TooLong(input.len()))
    } else {
        match std::str::from_utf8(input) {
            Err(_) => Err(PaddingError::NotUtf8),
            Ok(text) => {
                let model = settings_model(text);
                if model.is_empty() {
                    Err(PaddingError::Empty)
                } else {
                    model
                        .iter()
                        .find(|(k, _)| *k == "stop")
                        .and_then(|(_, v)| v.trim().parse::<u32>().ok())
                        .ok_or(PaddingError::MissingStop)
                }
            }
        }
    };
    let scheme = match (parsed, expected) {
        (Err(e), Err(x)) if e == x => return Ok(format!("err={}", variant(&e))),
        (Ok(scheme), Ok(stop)) => {
            ensure!(scheme.stop() == stop, "stop: {} not {stop}", scheme.stop());
            scheme
        }
        (got, want) => return Err(format!("model: {got:?}, expected {want:?}")),
    };
    ensure!(
        scheme.text().as_bytes() == input,
        "text: not the exact input"
    );
    let md5 = scheme.md5_hex();
    ensure!(
        md5.len() == 32
            && md5
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)),
        "md5: {md5:?} is not 32 lowercase hex digits"
    );
    ensure!(
        md5 == padding::md5_hex(input),
        "md5: not the md5 of the exact text"
    );
    let (worst_write, session) = padding_model(scheme.text(), scheme.stop());
    let bounded = worst_write <= padding::MAX_PADDING_PER_WRITE
        && session <= padding::MAX_PADDING_PER_SESSION;
    ensure!(
        scheme.check_bounds().is_ok() == bounded,
        "bounds: {:?}, model {worst_write} a write, {session} a session",
        scheme.check_bounds()
    );
    let again = PaddingScheme::parse(scheme.text().as_bytes());
    ensure!(
        again.as_ref() == Ok(&scheme),
        "round trip: parse(text()) differs"
    );

    // Which packets have rules, as the model sees them (the last key naming a packet wins).
    let text = scheme.text();
    let mut packets: BTreeMap<u32, &str> = BTreeMap::new();
    for (key, value) in settings_model(text) {
        if let Ok(packet) = key.parse::<u32>() {
            packets.insert(packet, value);
        }
    }
    let mut any_check = false;
    let mut any_size = false;
    let mut shaped = "none";
    for (i, (&packet, value)) in packets.iter().enumerate().take(16) {
        let model = rules_model(value);
        let (steps, peak) = measure(stats, || scheme.record_sizes(packet, rng));
        alloc_within("record_sizes", peak, 16 * value.len() + 64, input.len())?;
        ensure!(
            steps.len() == model.len(),
            "rules: packet {packet}: {} steps, model {}",
            steps.len(),
            model.len()
        );
        for (step, rule) in steps.iter().zip(&model) {
            let fits = match (*step, *rule) {
                (Step::Check, ModelRule::Check) => true,
                (Step::Size(s), ModelRule::Range(min, max)) if min == max => s as i64 == min,
                (Step::Size(s), ModelRule::Range(min, max)) => {
                    i64::try_from(s).is_ok_and(|s| min <= s && s < max)
                }
                _ => false,
            };
            ensure!(
                fits,
                "rules: packet {packet}: step {step:?} for rule {rule:?}"
            );
        }
        any_check |= steps.contains(&Step::Check);
        any_size |= steps.iter().any(|s| matches!(s, Step::Size(_)));
        if packet == 0 {
            let mut a = rng.clone();
            let first = scheme
                .record_sizes(0, &mut a)
                .into_iter()
                .find_map(|s| match s {
                    Step::Size(n) => Some(n.min(u16::MAX as usize) as u16),
                    Step::Check => None,
                });
            let pad = scheme.preamble_padding(&mut rng.clone());
            ensure!(
                pad == first.unwrap_or(0),
                "preamble: padding {pad}, expected {first:?}"
            );
        }
        if i < 2 {
            shaped = shape::check(&steps, rng, stats)?;
        }
    }
    let unknown = rng.gen::<u32>();
    if !packets.contains_key(&unknown) {
        ensure!(
            scheme.record_sizes(unknown, rng).is_empty(),
            "rules: packet {unknown} has steps"
        );
    }

    let stop = match scheme.stop() {
        0 => "0",
        1..=8 => "small",
        _ => "big",
    };
    let rules = match (any_size, any_check) {
        (false, false) => "none",
        (true, false) => "sizes",
        (false, true) => "checks",
        (true, true) => "both",
    };
    let bounds = if bounded { "within" } else { "past" };
    Ok(format!(
        "ok stop={stop} rules={rules} shape={shaped} bounds={bounds} operator={for_clients}"
    ))
}
