//! The padding scheme (docs/protocol.md §6): parsing, its md5, record sizes drawn from an
//! injected RNG, and the shaping of one session write into records.

use std::collections::HashMap;

use md5::{Digest, Md5};
use rand::Rng;

use super::error::PaddingError;
use super::frame::{self, HEADER_LEN, MAX_DATA_LEN};
use super::settings::Settings;

/// The reference's default scheme, byte for byte (no trailing newline).
pub const DEFAULT_SCHEME: &str = "stop=8
0=30-30
1=100-400
2=400-500,c,500-1000,c,500-1000,c,500-1000,c,500-1000
3=9-9,500-1000
4=500-1000
5=500-1000
6=500-1000
7=500-1000";

/// Padding one write may carry, at most: a scheme asking for more is refused
/// (the default scheme's largest packet asks for 4,500 bytes).
pub const MAX_PADDING_PER_WRITE: usize = 256 * 1024;
/// Padding the shaped writes of one session may carry in all, at most (the
/// default scheme's asks for about 10 KB).
pub const MAX_PADDING_PER_SESSION: usize = 1024 * 1024;

/// One element of a packet's shape.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// A record of exactly this many plaintext bytes (a range already drawn).
    Size(usize),
    /// `c`: stop here if the payload is exhausted.
    Check,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Rule {
    Range { min: usize, max: usize },
    Check,
}

/// A parsed padding scheme together with its exact text and md5.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PaddingScheme {
    text: String,
    md5_hex: String,
    stop: u32,
    packets: HashMap<u32, Vec<Rule>>,
}

impl Default for PaddingScheme {
    fn default() -> Self {
        PaddingScheme::parse(DEFAULT_SCHEME.as_bytes()).expect("default scheme is valid")
    }
}

impl PaddingScheme {
    /// Parses scheme text; ranges with unparsable or non-positive bounds are skipped,
    /// as the reference does, but a scheme without `stop` is refused.
    pub fn parse(raw: &[u8]) -> Result<PaddingScheme, PaddingError> {
        if raw.len() > MAX_DATA_LEN {
            return Err(PaddingError::TooLong(raw.len()));
        }
        let text = std::str::from_utf8(raw).map_err(|_| PaddingError::NotUtf8)?;
        let settings = Settings::parse_text(text);
        if settings.iter().next().is_none() {
            return Err(PaddingError::Empty);
        }
        let stop = settings
            .get("stop")
            .and_then(|s| s.trim().parse::<u32>().ok())
            .ok_or(PaddingError::MissingStop)?;
        let mut packets = HashMap::new();
        for (key, value) in settings.iter() {
            if let Ok(packet) = key.parse::<u32>() {
                packets.insert(packet, parse_rules(value));
            }
        }
        Ok(PaddingScheme {
            text: text.to_owned(),
            md5_hex: md5_hex(raw),
            stop,
            packets,
        })
    }

    /// A scheme an operator wrote (a file, the config, a panel), as every client
    /// will read it: line endings (CRLF), spaces around keys, values and ranges,
    /// and empty lines are normalised away; a line a client would skip or
    /// misread (no `=`, an unknown key, a range that is not two positive
    /// integers, a key given twice) is refused, naming the line; so is a scheme
    /// padding more than a client takes ([`PaddingScheme::check_bounds`]). The
    /// reference client splits lines on `\n` only and parses `stop` and each
    /// range with no trimming: `stop=8\r` makes it refuse the whole scheme.
    pub fn for_clients(raw: &[u8]) -> Result<PaddingScheme, PaddingError> {
        let text = std::str::from_utf8(raw).map_err(|_| PaddingError::NotUtf8)?;
        let mut lines: Vec<String> = Vec::new();
        let mut seen: Vec<String> = Vec::new();
        for (number, line) in text.split('\n').enumerate() {
            let bad = |why| PaddingError::BadLine {
                line: number + 1,
                text: line.trim().to_owned(),
                why,
            };
            let line = line.trim();
            if line.is_empty() {
                continue;
            }
            let (key, value) = line.split_once('=').ok_or_else(|| bad("no `=`"))?;
            let (key, value) = (key.trim(), value.trim());
            let value = if key == "stop" {
                if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(bad("`stop` is not a whole number"));
                }
                value
                    .parse::<u32>()
                    .map_err(|_| bad("`stop` is too large"))?;
                value.to_owned()
            } else if !key.is_empty() && key.bytes().all(|b| b.is_ascii_digit()) {
                key.parse::<u32>()
                    .map_err(|_| bad("packet number too large"))?;
                normalised_rules(value).ok_or_else(|| {
                    bad("ranges must be `min-max` with positive whole numbers, or `c`")
                })?
            } else {
                return Err(bad("unknown key (only `stop` and packet numbers)"));
            };
            if seen.iter().any(|k| k == key) {
                return Err(bad("key given twice"));
            }
            seen.push(key.to_owned());
            lines.push(format!("{key}={value}"));
        }
        let scheme = PaddingScheme::parse(lines.join("\n").as_bytes())?;
        scheme.check_bounds()?;
        Ok(scheme)
    }

    /// Whether the scheme pads within what a client takes: at most
    /// [`MAX_PADDING_PER_WRITE`] bytes in one write, at most
    /// [`MAX_PADDING_PER_SESSION`] over the shaped packets (those before `stop`).
    /// A hostile server's scheme could otherwise ask a client for hundreds of
    /// megabytes in one write.
    pub fn check_bounds(&self) -> Result<(), PaddingError> {
        let mut session = 0usize;
        let mut packets: Vec<_> = self
            .packets
            .iter()
            .filter(|(n, _)| **n < self.stop)
            .collect();
        packets.sort_unstable_by_key(|(n, _)| **n);
        for (packet, rules) in packets {
            let write: usize = rules
                .iter()
                .map(|rule| match *rule {
                    Rule::Range { max, .. } => max.min(MAX_DATA_LEN) + HEADER_LEN,
                    Rule::Check => 0,
                })
                .fold(0, usize::saturating_add);
            if write > MAX_PADDING_PER_WRITE {
                return Err(PaddingError::WriteTooPadded {
                    packet: *packet,
                    bytes: write,
                    limit: MAX_PADDING_PER_WRITE,
                });
            }
            session = session.saturating_add(write);
        }
        if session > MAX_PADDING_PER_SESSION {
            return Err(PaddingError::SessionTooPadded {
                bytes: session,
                limit: MAX_PADDING_PER_SESSION,
            });
        }
        Ok(())
    }

    /// The exact scheme text, as sent in UpdatePaddingScheme.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// Lowercase hex md5 of the exact text.
    pub fn md5_hex(&self) -> &str {
        &self.md5_hex
    }

    /// Packets `0..stop` are shaped.
    pub fn stop(&self) -> u32 {
        self.stop
    }

    /// The record sizes for `packet`, ranges drawn from `rng` in `[min, max)`.
    pub fn record_sizes(&self, packet: u32, rng: &mut impl Rng) -> Vec<Step> {
        let Some(rules) = self.packets.get(&packet) else {
            return Vec::new();
        };
        rules
            .iter()
            .map(|rule| match *rule {
                Rule::Check => Step::Check,
                Rule::Range { min, max } if min == max => Step::Size(min),
                Rule::Range { min, max } => Step::Size(rng.gen_range(min..max)),
            })
            .collect()
    }

    /// The padding0 length of the authentication preamble (packet 0's first size).
    pub fn preamble_padding(&self, rng: &mut impl Rng) -> u16 {
        self.record_sizes(0, rng)
            .into_iter()
            .find_map(|step| match step {
                Step::Size(size) => Some(size.min(u16::MAX as usize) as u16),
                Step::Check => None,
            })
            .unwrap_or(0)
    }
}

fn parse_rules(value: &str) -> Vec<Rule> {
    value
        .split(',')
        .filter_map(|part| {
            if part == "c" {
                return Some(Rule::Check);
            }
            let (a, b) = part.split_once('-')?;
            let a: i64 = a.parse().ok()?;
            let b: i64 = b.parse().ok()?;
            let (min, max) = (a.min(b), a.max(b));
            (min > 0).then_some(Rule::Range {
                min: min as usize,
                max: max as usize,
            })
        })
        .collect()
}

/// `value`'s ranges and checks with the spaces around them removed, or `None`
/// if one is not `c` nor two positive integers joined by `-`.
fn normalised_rules(value: &str) -> Option<String> {
    let mut parts = Vec::new();
    for part in value.split(',') {
        let part = part.trim();
        if part == "c" {
            parts.push("c".to_owned());
            continue;
        }
        let (a, b) = part.split_once('-')?;
        let number = |s: &str| {
            let s = s.trim();
            (!s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
                .then(|| s.parse::<u32>().ok())
                .flatten()
                .filter(|n| *n > 0)
        };
        parts.push(format!("{}-{}", number(a)?, number(b)?));
    }
    Some(parts.join(","))
}

/// Lowercase hex md5 of `bytes`.
pub fn md5_hex(bytes: &[u8]) -> String {
    Md5::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Splits one session write into the records the scheme asks for, exactly as the
/// reference client does: each returned buffer must leave as its own TLS record.
pub fn shape(mut payload: &[u8], steps: &[Step]) -> Vec<Vec<u8>> {
    let mut records = Vec::new();
    for step in steps {
        let size = match *step {
            Step::Check if payload.is_empty() => break,
            Step::Check => continue,
            Step::Size(size) => size.min(MAX_DATA_LEN),
        };
        if payload.len() > size {
            records.push(payload[..size].to_vec());
            payload = &payload[size..];
        } else if !payload.is_empty() {
            let mut record = payload.to_vec();
            if let Some(waste) = size
                .checked_sub(payload.len() + HEADER_LEN)
                .filter(|&w| w > 0)
            {
                frame::encode_waste(waste, &mut record).expect("waste fits in a frame");
            }
            records.push(record);
            payload = &[];
        } else {
            let mut record = Vec::with_capacity(HEADER_LEN + size);
            frame::encode_waste(size, &mut record).expect("waste fits in a frame");
            records.push(record);
        }
    }
    if !payload.is_empty() {
        records.push(payload.to_vec());
    }
    records
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::frame::{decode, Command};
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    #[test]
    fn operator_schemes_are_normalised_as_clients_read_them() {
        let crlf = DEFAULT_SCHEME.replace('\n', "\r\n") + "\r\n\r\n";
        let scheme = PaddingScheme::for_clients(crlf.as_bytes()).unwrap();
        assert_eq!(
            scheme,
            PaddingScheme::default(),
            "CRLF and blank lines dropped"
        );
        let spaced = " stop = 3 \n\n0= 30-30 \n 2 = 400-500 , c ,500-1000\t\n";
        let scheme = PaddingScheme::for_clients(spaced.as_bytes()).unwrap();
        assert_eq!(scheme.text(), "stop=3\n0=30-30\n2=400-500,c,500-1000");
        assert_eq!(scheme.stop(), 3);
    }

    #[test]
    fn operator_schemes_clients_would_misread_are_refused_by_line() {
        for (text, line, why) in [
            ("stop=8\n1=100-x", 2, "ranges must be"),
            ("stop=8\n1=0-10", 2, "ranges must be"),
            ("stop=8\n1=-5-10", 2, "ranges must be"),
            ("stop=8\n\n1=100", 3, "ranges must be"),
            ("stop=eight", 1, "`stop` is not a whole number"),
            ("stop=8\nstep=3", 2, "unknown key"),
            ("stop=8\n# comment", 2, "no `=`"),
            ("stop=8\n1=5-9\n1=5-9", 3, "key given twice"),
        ] {
            match PaddingScheme::for_clients(text.as_bytes()) {
                Err(PaddingError::BadLine {
                    line: l, why: w, ..
                }) => {
                    assert_eq!(l, line, "{text:?}");
                    assert!(w.starts_with(why), "{text:?}: {w}");
                }
                other => panic!("{text:?}: {other:?}"),
            }
        }
        assert_eq!(
            PaddingScheme::for_clients(b"0=30-30"),
            Err(PaddingError::MissingStop)
        );
    }

    #[test]
    fn schemes_padding_past_the_bounds_are_refused() {
        let huge_write = format!("stop=2\n1={}", ["65535-65535"; 5].join(","));
        assert!(matches!(
            PaddingScheme::parse(huge_write.as_bytes())
                .unwrap()
                .check_bounds(),
            Err(PaddingError::WriteTooPadded { packet: 1, .. })
        ));
        let lines: Vec<String> = (0..40).map(|n| format!("{n}=60000-60000")).collect();
        let long_session = format!("stop=40\n{}", lines.join("\n"));
        assert!(matches!(
            PaddingScheme::for_clients(long_session.as_bytes()),
            Err(PaddingError::SessionTooPadded { .. })
        ));
        // Packets at or past `stop` are never shaped: they do not count.
        let past_stop = format!("stop=1\n5={}", ["65535-65535"; 5].join(","));
        assert!(PaddingScheme::parse(past_stop.as_bytes())
            .unwrap()
            .check_bounds()
            .is_ok());
        assert!(PaddingScheme::default().check_bounds().is_ok());
    }

    #[test]
    fn default_md5_matches_protocol_text() {
        // md5 of the default scheme exactly as written in docs/protocol.md §6.
        let scheme = PaddingScheme::default();
        assert_eq!(scheme.md5_hex(), "75cff2ad89aadf5e257059ee571ebe11");
        assert_eq!(scheme.text(), DEFAULT_SCHEME);
        assert_eq!(scheme.stop(), 8);
    }

    #[test]
    fn sizes_follow_the_rules() {
        let scheme = PaddingScheme::default();
        let mut rng = StdRng::seed_from_u64(7);
        for _ in 0..200 {
            assert_eq!(scheme.record_sizes(0, &mut rng), vec![Step::Size(30)]);
            assert_eq!(scheme.preamble_padding(&mut rng), 30);
            let p2 = scheme.record_sizes(2, &mut rng);
            assert_eq!(p2.len(), 9);
            assert_eq!(p2[1], Step::Check);
            match p2[0] {
                Step::Size(s) => assert!((400..500).contains(&s)),
                Step::Check => panic!("expected a size"),
            }
            assert_eq!(scheme.record_sizes(3, &mut rng)[0], Step::Size(9));
        }
        assert!(scheme.record_sizes(8, &mut rng).is_empty());
    }

    #[test]
    fn lenient_ranges_strict_stop() {
        let scheme = PaddingScheme::parse(b"stop=3\n1=x-5,0-9,9-4,c,-3-7,7-7").unwrap();
        let mut rng = StdRng::seed_from_u64(1);
        let steps = scheme.record_sizes(1, &mut rng);
        assert_eq!(steps.len(), 3, "{steps:?}");
        assert!(matches!(steps[0], Step::Size(s) if (4..9).contains(&s)));
        assert_eq!(steps[1], Step::Check);
        assert_eq!(steps[2], Step::Size(7));

        assert_eq!(PaddingScheme::parse(b""), Err(PaddingError::Empty));
        assert_eq!(PaddingScheme::parse(b"junk"), Err(PaddingError::Empty));
        assert_eq!(
            PaddingScheme::parse(b"0=1-2"),
            Err(PaddingError::MissingStop)
        );
        assert_eq!(
            PaddingScheme::parse(b"stop=-1"),
            Err(PaddingError::MissingStop)
        );
        assert_eq!(
            PaddingScheme::parse(&[0xFF, b'=']),
            Err(PaddingError::NotUtf8)
        );
        let huge = vec![b'a'; 70_000];
        assert_eq!(
            PaddingScheme::parse(&huge),
            Err(PaddingError::TooLong(70_000))
        );
    }

    #[test]
    fn md5_is_of_exact_text() {
        let a = PaddingScheme::parse(b"stop=1\n0=5-5").unwrap();
        let b = PaddingScheme::parse(b"stop=1\n0=5-5\n").unwrap();
        assert_ne!(a.md5_hex(), b.md5_hex());
        assert_eq!(b.text(), "stop=1\n0=5-5\n");
    }

    /// Removes Waste frames from a record stream and returns the payload it carried.
    fn strip_waste(records: &[Vec<u8>], payload_len: usize) -> Vec<u8> {
        let joined: Vec<u8> = records.concat();
        let mut payload = joined[..payload_len.min(joined.len())].to_vec();
        let mut rest = &joined[payload.len()..];
        while let Some(frame) = decode(rest) {
            assert_eq!(frame.cmd, Command::Waste);
            rest = &rest[frame.wire_len()..];
        }
        assert!(rest.is_empty());
        payload.truncate(payload_len);
        payload
    }

    #[test]
    fn shape_pads_short_payload_to_size() {
        let payload = vec![9u8; 50];
        let records = shape(&payload, &[Step::Size(200)]);
        assert_eq!(records.len(), 1);
        assert_eq!(records[0].len(), 200);
        assert_eq!(strip_waste(&records, 50), payload);
    }

    #[test]
    fn shape_splits_long_payload_and_stops_at_check() {
        let payload: Vec<u8> = (0..1000u32).map(|i| i as u8).collect();
        let steps = [
            Step::Size(400),
            Step::Check,
            Step::Size(700),
            Step::Check,
            Step::Size(300),
        ];
        let records = shape(&payload, &steps);
        let lens: Vec<usize> = records.iter().map(Vec::len).collect();
        assert_eq!(lens, vec![400, 700]);
        assert_eq!(strip_waste(&records, 1000), payload);
    }

    #[test]
    fn shape_sends_pure_padding_and_leftover() {
        let records = shape(b"", &[Step::Size(10), Step::Size(20)]);
        assert_eq!(
            records.iter().map(Vec::len).collect::<Vec<_>>(),
            vec![17, 27]
        );
        let records = shape(&[1u8; 30], &[Step::Size(10)]);
        assert_eq!(
            records.iter().map(Vec::len).collect::<Vec<_>>(),
            vec![10, 20]
        );
        // A payload that leaves no room for a Waste header is sent as is.
        let records = shape(&[1u8; 95], &[Step::Size(100)]);
        assert_eq!(records, vec![vec![1u8; 95]]);
    }
}
