//! The rules of the SOCKS address form, checked on an [`Address::decode`] answer:
//! round trip, domain names, prefixes that need more, "need more" only while an
//! address can still complete, errors that more bytes do not change. The address
//! target checks every input with it.

use rand::rngs::SmallRng;

use anytls::proto::addr::Address;
use anytls::proto::error::AddrError;

use crate::checks::{ensure, extended, prefixes, MAX_ADDR_LEN};

/// Checks an [`Address::decode`] answer for `input` against the rules of the SOCKS form.
pub(super) fn check(
    input: &[u8],
    answer: &Result<Option<(Address, usize)>, AddrError>,
    rng: &mut SmallRng,
) -> Result<(), String> {
    match answer {
        Ok(Some((address, used))) => {
            let used = *used;
            ensure!(
                used <= input.len(),
                "length: used {used} of {} bytes",
                input.len()
            );
            let mut wire = Vec::new();
            address
                .encode(&mut wire)
                .map_err(|e| format!("round trip: encode refused {address:?}: {e}"))?;
            ensure!(
                wire == input[..used],
                "round trip: encode(decode(x)) != x for {address:?}"
            );
            if let Address::Domain(name, _) = address {
                ensure!(
                    !name.is_empty() && name.len() <= 255,
                    "domain: name of {} bytes",
                    name.len()
                );
                ensure!(
                    !name.chars().any(|c| c.is_control() || c.is_whitespace()),
                    "domain: {name:?} has control or space characters"
                );
            }
            for p in prefixes(used, rng) {
                let short = Address::decode(&input[..p]);
                ensure!(
                    short == Ok(None),
                    "prefix: {p} of {used} bytes gave {short:?}"
                );
            }
            let alone = Address::decode(&input[..used]);
            ensure!(
                alone == *answer,
                "extension: alone {alone:?}, with more {answer:?}"
            );
        }
        Ok(None) => {
            ensure!(
                input.len() < MAX_ADDR_LEN,
                "need-more: Ok(None) for {} bytes, longer than any address",
                input.len()
            );
            let mut full = input.to_vec();
            full.resize(MAX_ADDR_LEN, 0);
            let completed = Address::decode(&full);
            ensure!(
                completed != Ok(None),
                "need-more: still Ok(None) at {MAX_ADDR_LEN} bytes"
            );
        }
        Err(e) => {
            let first = input.first().copied();
            let expected_first = match e {
                AddrError::UnknownType(t) => Some(*t),
                _ => Some(3),
            };
            ensure!(
                first == expected_first,
                "error: {e:?} for a type byte {first:?}"
            );
            if let AddrError::UnknownType(t) = e {
                ensure!(![1, 3, 4].contains(t), "error: type {t} is known");
            }
            ensure!(
                !matches!(e, AddrError::EmptyDomain) || input.get(1) == Some(&0),
                "error: EmptyDomain for length {:?}",
                input.get(1)
            );
            let longer = extended(input, rng);
            let again = Address::decode(&longer);
            ensure!(
                again == *answer,
                "error: {e:?} became {again:?} with more bytes"
            );
        }
    }
    Ok(())
}
