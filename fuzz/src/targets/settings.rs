//! The settings target: `key=value` lines with odd keys, values and line ends, checked
//! against [`Settings::decode`]: a last-value-wins model (which the padding target
//! shares), the version, and the round trip.

use std::collections::HashMap;

use rand::rngs::SmallRng;
use rand::Rng;

use anytls::proto::settings::Settings;

use crate::alloc::{alloc_within, measure, CaseStats};
use crate::checks::{ensure, variant};
use crate::gen::{pick, LINE_ENDS};

/// Settings text: known and odd keys and values, junk lines, odd line ends, now and
/// then thousands of lines or a byte that is not UTF-8.
pub(super) fn generate(rng: &mut SmallRng) -> Vec<u8> {
    const KEYS: [&str; 14] = [
        "v",
        "v",
        "client",
        "padding-md5",
        "stop",
        "0",
        "",
        " v",
        "v ",
        "V",
        "\r",
        "ключ",
        "k\r",
        "=",
    ];
    const VALUES: [&str; 16] = [
        "2",
        "1",
        "0",
        " 2 ",
        "-1",
        "4294967296",
        "two",
        "",
        "anytls-rs/0.1.0",
        "75cff2ad89aadf5e257059ee571ebe11",
        "\r",
        "a=b",
        "2\r",
        "=",
        "1e3",
        "+2",
    ];
    let mut text = String::new();
    let lines = if rng.gen_ratio(1, 5000) {
        rng.gen_range(100..6000)
    } else {
        rng.gen_range(0..8)
    };
    for i in 0..lines {
        match rng.gen_range(0..10) {
            0 => text.push_str("junk"),
            1 => {}
            2 => text.push_str(&format!("k{i}=a=b=c")),
            3 => text.push_str(&format!("k{}={}", rng.gen_range(0..lines), i)),
            _ => {
                text.push_str(pick(rng, &KEYS));
                text.push('=');
                text.push_str(pick(rng, &VALUES));
            }
        }
        if i + 1 < lines || rng.gen_ratio(1, 3) {
            text.push_str(pick(rng, &LINE_ENDS));
        }
    }
    let mut out = text.into_bytes();
    if rng.gen_ratio(1, 20) {
        let at = rng.gen_range(0..=out.len());
        out.insert(at, pick(rng, &[0xFF, 0x80, 0xC0]));
    }
    out
}

/// Settings as a model sees them: pairs in order of first appearance, last value wins.
pub(super) fn settings_model(text: &str) -> Vec<(&str, &str)> {
    let mut pairs: Vec<(&str, &str)> = Vec::new();
    let mut index: HashMap<&str, usize> = HashMap::new();
    for line in text.split('\n') {
        let line = line.strip_suffix('\r').unwrap_or(line);
        let Some(eq) = line.find('=') else {
            continue;
        };
        let (key, value) = (&line[..eq], &line[eq + 1..]);
        match index.get(key) {
            Some(&i) => pairs[i].1 = value,
            None => {
                index.insert(key, pairs.len());
                pairs.push((key, value));
            }
        }
    }
    pairs
}

/// Whether a pair survives `encode` then `decode` unchanged.
fn clean_pair(key: &str, value: &str) -> bool {
    !key.contains(['=', '\n']) && !value.contains('\n') && !value.ends_with('\r')
}

/// Checks [`Settings::decode`] of `input` against the model and the round trip.
pub(super) fn check(input: &[u8], stats: &mut CaseStats) -> Result<String, String> {
    let (decoded, peak) = measure(stats, || Settings::decode(input));
    alloc_within(
        "Settings::decode",
        peak,
        64 * input.len() + 256,
        input.len(),
    )?;
    let (settings, text) = match (decoded, std::str::from_utf8(input)) {
        (Err(e), Err(_)) => return Ok(format!("err={}", variant(&e))),
        (Err(e), Ok(_)) => return Err(format!("utf8: {e:?} for UTF-8 text")),
        (Ok(_), Err(_)) => return Err("utf8: text that is not UTF-8 decoded".into()),
        (Ok(settings), Ok(text)) => (settings, text),
    };
    let model = settings_model(text);
    let pairs: Vec<(&str, &str)> = settings.iter().collect();
    ensure!(
        pairs == model,
        "model: {} pairs decoded, {} expected (first difference at {:?})",
        pairs.len(),
        model.len(),
        pairs.iter().zip(&model).position(|(a, b)| a != b)
    );
    let bytes: usize = pairs.iter().map(|(k, v)| k.len() + v.len() + 1).sum();
    ensure!(
        bytes <= input.len(),
        "length: {bytes} bytes of pairs from {} bytes",
        input.len()
    );
    let version = model
        .iter()
        .find(|(k, _)| *k == "v")
        .and_then(|(_, v)| v.trim().parse::<u32>().ok())
        .unwrap_or(0);
    ensure!(
        settings.version() == version,
        "version: {} not {version}",
        settings.version()
    );
    for (key, value) in model.iter().take(8) {
        ensure!(settings.get(key) == Some(*value), "get: {key:?}");
    }

    // decode(encode(s)) == s for settings whose pairs can be written as lines.
    let lossless = pairs.iter().all(|(k, v)| clean_pair(k, v));
    if lossless {
        let again = Settings::decode(&settings.encode());
        ensure!(
            again.as_ref() == Ok(&settings),
            "round trip: decode(encode(s)) != s"
        );
    }
    let mut clean = Settings::default();
    for (key, value) in pairs.iter().filter(|(k, v)| clean_pair(k, v)) {
        clean.set(key, value);
    }
    let again = Settings::decode(&clean.encode());
    ensure!(
        again.as_ref() == Ok(&clean),
        "round trip: decode(encode(s)) != s for built settings"
    );

    let count = match pairs.len() {
        0 => "0",
        1 => "1",
        _ => "many",
    };
    let version = match version {
        0 => "0",
        2 => "2",
        _ => "other",
    };
    let cr = if lossless { "" } else { " value-ends-cr" };
    Ok(format!("ok pairs={count} v={version}{cr}"))
}
