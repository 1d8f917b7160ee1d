//! Generator helpers shared by several targets: interesting values, random bytes,
//! lengths skewed small and length fields that lie, domains and addresses in the SOCKS
//! and UoT forms, line ends and numbers as text.

use rand::rngs::SmallRng;
use rand::{Rng, RngCore};

use anytls::proto::frame::MAX_DATA_LEN;
use anytls::proto::uot;

/// Values at the edges of the u16 and u32 lengths and ids, and of bytes.
pub(crate) const INTERESTING_U16: [u16; 14] = [
    0, 1, 2, 6, 7, 8, 0x7F, 0x80, 0xFF, 0x100, 0x7FFF, 0x8000, 0xFFFE, 0xFFFF,
];
pub(crate) const INTERESTING_U32: [u32; 10] = [
    0,
    1,
    2,
    7,
    0xFF,
    0xFFFF,
    0x7FFF_FFFF,
    0x8000_0000,
    0xFFFF_FFFE,
    0xFFFF_FFFF,
];
pub(crate) const INTERESTING_BYTES: [u8; 20] = [
    0, 1, 2, 3, 4, 5, 9, 10, 13, 0x20, b',', b'-', b'=', b'c', b'0', b'9', 0x7F, 0x80, 0xC0, 0xFF,
];

/// One input in five loses its tail: a torn write, cut anywhere.
pub(crate) fn maybe_torn(rng: &mut SmallRng, out: &mut Vec<u8>) {
    if rng.gen_ratio(1, 5) {
        let cut = rng.gen_range(0..=out.len());
        out.truncate(cut);
    }
}

/// One of `items`.
pub(crate) fn pick<T: Copy>(rng: &mut SmallRng, items: &[T]) -> T {
    items[rng.gen_range(0..items.len())]
}

/// `len` random bytes.
pub(crate) fn random_bytes(rng: &mut SmallRng, len: usize) -> Vec<u8> {
    let mut out = vec![0; len];
    rng.fill_bytes(&mut out);
    out
}

/// A length skewed to small values, now and then up to a whole frame.
pub(crate) fn small_len(rng: &mut SmallRng) -> usize {
    match rng.gen_range(0..1000) {
        0..=499 => rng.gen_range(0..8),
        500..=799 => rng.gen_range(0..64),
        800..=949 => rng.gen_range(0..512),
        950..=997 => rng.gen_range(0..4096),
        _ => rng.gen_range(0..=MAX_DATA_LEN),
    }
}

/// An interesting u16 half the time, else a random one.
pub(crate) fn some_u16(rng: &mut SmallRng) -> u16 {
    if rng.gen_bool(0.5) {
        pick(rng, &INTERESTING_U16)
    } else {
        rng.gen()
    }
}

/// A u16 length field: usually the true one, else a lie.
pub(crate) fn length_field(rng: &mut SmallRng, true_len: usize) -> u16 {
    match rng.gen_range(0..10) {
        0 => some_u16(rng),
        1 => (true_len as u16).wrapping_add(1),
        2 => (true_len as u16).wrapping_sub(1),
        _ => true_len.min(u16::MAX as usize) as u16,
    }
}

/// Type bytes of an address form: IPv4, IPv6, domain.
#[derive(Clone, Copy)]
pub(crate) struct AddrCodes {
    ipv4: u8,
    ipv6: u8,
    domain: u8,
}

/// The SOCKS address types.
pub(crate) const SOCKS: AddrCodes = AddrCodes {
    ipv4: 1,
    ipv6: 4,
    domain: 3,
};
/// The UoT address types.
pub(crate) const UOT: AddrCodes = AddrCodes {
    ipv4: 0,
    ipv6: 1,
    domain: 2,
};

/// A domain name: a known one, a random one, one with a bad byte inside, random
/// bytes, an empty one or one too long.
pub(crate) fn gen_domain(rng: &mut SmallRng) -> Vec<u8> {
    const NAMES: [&str; 12] = [
        "example.com",
        uot::UOT_V2_NAME,
        uot::UOT_V1_NAME,
        "localhost",
        "1.2.3.4",
        "::1",
        "[::1]",
        "a:b",
        "xn--bcher-kva.de",
        "bücher.de",
        "例え.jp",
        "a",
    ];
    const BAD: [&[u8]; 14] = [
        b"\xff",
        b"\x80",
        b"\xc0\x80",
        b"\xed\xa0\x80",
        b"\xf4\x90\x80\x80",
        b"\xe2\x82",
        b"\0",
        b"\n",
        b"\t",
        b" ",
        b"\x7f",
        "\u{85}".as_bytes(),
        "\u{a0}".as_bytes(),
        "\u{2028}".as_bytes(),
    ];
    match rng.gen_range(0..10) {
        0..=2 => pick(rng, &NAMES).as_bytes().to_vec(),
        3 | 4 => {
            let len = if rng.gen_ratio(1, 4) {
                pick(rng, &[1, 63, 64, 254, 255, 256])
            } else {
                rng.gen_range(1..40)
            };
            (0..len)
                .map(|_| pick(rng, b"abcdefghijklmnopqrstuvwxyz0123456789.-_"))
                .collect()
        }
        5 | 6 => {
            let mut name = pick(rng, &NAMES).as_bytes().to_vec();
            let at = rng.gen_range(0..=name.len());
            let bad = pick(rng, &BAD);
            name.splice(at..at, bad.iter().copied());
            name
        }
        7 => {
            let n = rng.gen_range(0..32);
            random_bytes(rng, n)
        }
        8 => Vec::new(),
        _ => "é".repeat(rng.gen_range(1..=130)).into_bytes(),
    }
}

/// Appends an address in the form `codes` names, with a lying length now and then.
pub(crate) fn gen_address(rng: &mut SmallRng, out: &mut Vec<u8>, codes: AddrCodes) {
    let kind = rng.gen_range(0..20);
    match kind {
        0..=5 => {
            out.push(codes.ipv4);
            let ip: [u8; 4] = pick(rng, &[[127, 0, 0, 1], [0, 0, 0, 0], [255, 255, 255, 255]]);
            out.extend_from_slice(&if rng.gen_bool(0.5) { ip } else { rng.gen() });
        }
        6..=9 => {
            out.push(codes.ipv6);
            let mut ip = [0u8; 16];
            if rng.gen_bool(0.5) {
                rng.fill_bytes(&mut ip);
            } else {
                ip[15] = 1;
            }
            out.extend_from_slice(&ip);
        }
        10..=18 => {
            out.push(codes.domain);
            let name = gen_domain(rng);
            let len = match rng.gen_range(0..10) {
                0 => rng.gen(),
                1 => (name.len() as u8).wrapping_add(1),
                2 => (name.len() as u8).wrapping_sub(1),
                _ => name.len().min(255) as u8,
            };
            out.push(len);
            out.extend_from_slice(&name[..name.len().min(255)]);
        }
        _ => {
            out.push(rng.gen());
            out.extend({
                let n = rng.gen_range(0..20);
                random_bytes(rng, n)
            });
        }
    }
    let port = if rng.gen_bool(0.5) {
        pick(rng, &[0u16, 1, 53, 80, 443, 8443, 65535])
    } else {
        rng.gen()
    };
    out.extend_from_slice(&port.to_be_bytes());
}

/// Line ends of settings and padding schemes, odd ones included.
pub(crate) const LINE_ENDS: [&str; 6] = ["\n", "\n", "\n", "\r\n", "\r", "\r\r\n"];

/// A number as text: small, at the edges of integer types, negative, or not quite a
/// number.
pub(crate) fn number_text(rng: &mut SmallRng) -> String {
    match rng.gen_range(0..12) {
        0..=4 => rng.gen_range(0..2000).to_string(),
        5 => pick(
            rng,
            &[
                "0", "1", "7", "8", "9", "30", "65535", "65536", "65542", "100000",
            ],
        )
        .to_owned(),
        6 => pick(
            rng,
            &[
                "9223372036854775807",
                "9223372036854775808",
                "-9223372036854775808",
                "-9223372036854775809",
                "18446744073709551615",
                "99999999999999999999999",
                "4294967295",
                "4294967296",
            ],
        )
        .to_owned(),
        7 => format!("-{}", rng.gen_range(0..1000)),
        8 => rng.gen::<u64>().to_string(),
        9 => rng.gen::<i64>().to_string(),
        _ => pick(
            rng,
            &["", "+5", " 5", "5 ", "0x10", "1e3", "١", "５", "5\r", "05"],
        )
        .to_owned(),
    }
}
