//! Helpers shared by the checkers: `ensure!`, the longest SOCKS address, error variant
//! names for outcome classes, the prefixes to try and an input with bytes after it.

use std::fmt;

use rand::rngs::SmallRng;
use rand::Rng;

/// Fails the check with a formatted message unless the condition holds.
macro_rules! ensure {
    ($cond:expr, $($msg:tt)+) => {
        if !$cond {
            return Err(format!($($msg)+));
        }
    };
}
pub(crate) use ensure;

/// The longest SOCKS address: type, length, 255-byte name, port.
pub(crate) const MAX_ADDR_LEN: usize = 1 + 1 + 255 + 2;

/// An error's variant names without their numbers: `Address(UnknownType)`.
pub(crate) fn variant(error: &impl fmt::Debug) -> String {
    let text = format!("{error:?}");
    let mut out = String::with_capacity(text.len());
    let mut rest = text.as_str();
    while let Some(open) = rest.find('(') {
        out.push_str(&rest[..open]);
        rest = &rest[open..];
        match rest.find(')') {
            Some(close) if rest[1..close].bytes().all(|b| b.is_ascii_digit()) => {
                rest = &rest[close + 1..];
            }
            _ => {
                out.push('(');
                rest = &rest[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// Prefix lengths to try below `len`: all of them when few, else a sample.
pub(crate) fn prefixes(len: usize, rng: &mut SmallRng) -> Vec<usize> {
    if len <= 48 {
        return (0..len).collect();
    }
    let mut lens = vec![0, 1, len / 2, len - 1];
    lens.extend((0..6).map(|_| rng.gen_range(0..len)));
    lens
}

/// `input` followed by a few random bytes.
pub(crate) fn extended(input: &[u8], rng: &mut SmallRng) -> Vec<u8> {
    let mut out = input.to_vec();
    let n = rng.gen_range(1..=16);
    out.extend((0..n).map(|_| rng.gen::<u8>()));
    out
}
