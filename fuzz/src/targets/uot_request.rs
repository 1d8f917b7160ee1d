//! The UoT request target: a connect flag and a SOCKS address, now and then the first
//! datagram behind them, checked against [`uot::Request::decode`] and a model of the
//! rule built on [`Address::decode`].

use rand::rngs::SmallRng;
use rand::Rng;

use anytls::proto::addr::Address;
use anytls::proto::error::UotError;
use anytls::proto::uot;

use crate::alloc::{alloc_within, measure, CaseStats};
use crate::checks::{ensure, extended, prefixes, variant, MAX_ADDR_LEN};
use crate::gen::{gen_address, maybe_torn, random_bytes, small_len, SOCKS};

/// A request with a flag that is 0, 1 or anything, now and then with the first
/// datagram or cut short.
pub(super) fn generate(rng: &mut SmallRng) -> Vec<u8> {
    let mut out = vec![match rng.gen_range(0..20) {
        0..=8 => 0,
        9..=17 => 1,
        _ => rng.gen(),
    }];
    gen_address(rng, &mut out, SOCKS);
    if rng.gen_ratio(1, 3) {
        // The first datagram, sent together with the request.
        let payload = {
            let n = small_len(rng).min(512);
            random_bytes(rng, n)
        };
        out.extend_from_slice(&(payload.len() as u16).to_be_bytes());
        out.extend_from_slice(&payload);
    }
    maybe_torn(rng, &mut out);
    out
}

/// Checks [`uot::Request::decode`] of `input` against the model and the round trip.
pub(super) fn check(
    input: &[u8],
    rng: &mut SmallRng,
    stats: &mut CaseStats,
) -> Result<String, String> {
    let (answer, peak) = measure(stats, || uot::Request::decode(input));
    alloc_within("Request::decode", peak, 255, input.len())?;
    // The model: a flag byte, then a SOCKS address.
    let expected = match input.first() {
        None => Ok(None),
        Some(&flag) if flag > 1 => Err(UotError::ConnectFlag(flag)),
        Some(&flag) => match Address::decode(&input[1..]) {
            Ok(Some((destination, used))) => Ok(Some((
                uot::Request {
                    is_connect: flag == 1,
                    destination,
                },
                used + 1,
            ))),
            Ok(None) => Ok(None),
            Err(e) => Err(UotError::Address(e)),
        },
    };
    ensure!(
        answer == expected,
        "model: {answer:?}, expected {expected:?}"
    );
    match &answer {
        Ok(Some((request, used))) => {
            let used = *used;
            ensure!(
                used <= input.len(),
                "length: used {used} of {}",
                input.len()
            );
            let mut wire = Vec::new();
            request
                .encode(&mut wire)
                .map_err(|e| format!("round trip: encode refused {request:?}: {e}"))?;
            ensure!(wire == input[..used], "round trip: encode(decode(x)) != x");
            for p in prefixes(used, rng) {
                let short = uot::Request::decode(&input[..p]);
                ensure!(
                    short == Ok(None),
                    "prefix: {p} of {used} bytes gave {short:?}"
                );
            }
        }
        Ok(None) => {
            ensure!(
                input.len() <= MAX_ADDR_LEN,
                "need-more: Ok(None) for {} bytes",
                input.len()
            );
        }
        Err(e) => {
            let again = uot::Request::decode(&extended(input, rng));
            ensure!(
                again.as_ref() == Err(e),
                "error: {e:?} became {again:?} with more bytes"
            );
        }
    }
    Ok(match answer {
        Ok(Some((r, _))) => format!(
            "ok connect={} {}",
            r.is_connect,
            match r.destination {
                Address::Ip(a) if a.is_ipv4() => "ipv4",
                Address::Ip(_) => "ipv6",
                Address::Domain(..) => "domain",
            }
        ),
        Ok(None) => "need-more".into(),
        Err(e) => format!("err={}", variant(&e)),
    })
}
