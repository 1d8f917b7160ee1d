//! The address target: SOCKS addresses (IPv4, IPv6, domains with odd bytes and lying
//! lengths) and `host:port` text, checked against [`Address::decode`] (through
//! [`socks_answer`]) and [`Address::parse`].

use rand::rngs::SmallRng;
use rand::Rng;

use anytls::proto::addr::Address;

use super::socks_answer;
use crate::alloc::{alloc_within, measure, CaseStats};
use crate::checks::{ensure, variant};
use crate::gen::{gen_address, gen_domain, maybe_torn, pick, random_bytes, SOCKS};

/// A SOCKS address, now and then with bytes after it or cut short, or the text form.
pub(super) fn generate(rng: &mut SmallRng) -> Vec<u8> {
    if rng.gen_ratio(1, 6) {
        // The text form.
        let host = String::from_utf8_lossy(&gen_domain(rng)).into_owned();
        let port = pick(
            rng,
            &["80", "0", "65535", "65536", "+80", "080", "", "x", "-1"],
        );
        let text = match rng.gen_range(0..5) {
            0 => format!("[{host}]:{port}"),
            1 => format!("[::1]:{port}"),
            2 => format!(
                "{}.{}.{}.{}:{port}",
                rng.gen::<u8>(),
                rng.gen::<u8>(),
                rng.gen::<u8>(),
                rng.gen::<u8>()
            ),
            3 => host,
            _ => format!("{host}:{port}"),
        };
        return text.into_bytes();
    }
    let mut out = Vec::new();
    gen_address(rng, &mut out, SOCKS);
    if rng.gen_ratio(1, 3) {
        out.extend({
            let n = rng.gen_range(0..16);
            random_bytes(rng, n)
        });
    }
    maybe_torn(rng, &mut out);
    out
}

/// Checks `input` as a SOCKS address, then as text.
pub(super) fn check(
    input: &[u8],
    rng: &mut SmallRng,
    stats: &mut CaseStats,
) -> Result<String, String> {
    let (answer, peak) = measure(stats, || Address::decode(input));
    alloc_within("Address::decode", peak, 255, input.len())?;
    socks_answer::check(input, &answer, rng)?;
    let decoded = match &answer {
        Ok(Some((Address::Ip(a), _))) if a.is_ipv4() => "ipv4".to_owned(),
        Ok(Some((Address::Ip(_), _))) => "ipv6".to_owned(),
        Ok(Some((Address::Domain(..), _))) => "domain".to_owned(),
        Ok(None) => "need-more".to_owned(),
        Err(e) => variant(e),
    };

    // The text form, as the command line gives it.
    let text = String::from_utf8_lossy(input);
    let (parsed, peak) = measure(stats, || Address::parse(&text));
    alloc_within("Address::parse", peak, text.len(), text.len())?;
    let parsed_kind = match &parsed {
        None => "none",
        Some(address) => {
            let shown = address.to_string();
            let again = Address::parse(&shown);
            ensure!(
                again.as_ref() == Some(address),
                "parse: {text:?} gave {address:?}, whose text {shown:?} parses to {again:?}"
            );
            match address {
                Address::Ip(_) => "ip",
                Address::Domain(..) => "domain",
            }
        }
    };
    Ok(format!("decode={decoded} parse={parsed_kind}"))
}
