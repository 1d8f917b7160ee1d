//! The UoT datagram target: a mode byte (bit 0: connect mode), then datagrams with UoT
//! addresses unless in connect mode and lengths that may lie, checked against
//! [`uot::decode_datagram`] and a model of the rule built on [`Address::decode`].

use rand::rngs::SmallRng;
use rand::Rng;

use anytls::proto::addr::Address;
use anytls::proto::error::UotError;
use anytls::proto::frame::MAX_DATA_LEN;
use anytls::proto::uot;

use crate::alloc::{alloc_within, measure, CaseStats};
use crate::checks::{ensure, extended, prefixes, variant, MAX_ADDR_LEN};
use crate::gen::{gen_address, length_field, maybe_torn, random_bytes, small_len, UOT};

/// A mode byte and up to three datagrams, now and then cut short.
pub(super) fn generate(rng: &mut SmallRng) -> Vec<u8> {
    let mode = if rng.gen_ratio(1, 8) {
        rng.gen()
    } else {
        rng.gen_range(0..2)
    };
    let mut out = vec![mode];
    for _ in 0..rng.gen_range(0..=3) {
        if mode & 1 == 0 {
            gen_address(rng, &mut out, UOT);
        }
        let payload = {
            let n = small_len(rng);
            random_bytes(rng, n)
        };
        out.extend_from_slice(&length_field(rng, payload.len()).to_be_bytes());
        out.extend_from_slice(&payload);
    }
    maybe_torn(rng, &mut out);
    out
}

type DatagramModel = Result<Option<(Option<Address>, usize, usize)>, UotError>;

/// The datagram rule as a model: a UoT address (its type byte mapped to the SOCKS one
/// and decoded as such) unless in connect mode, a u16 length, the payload. Answers the
/// address, where the payload starts and where the datagram ends.
fn datagram_model(input: &[u8], is_connect: bool) -> DatagramModel {
    let (address, start) = if is_connect {
        (None, 0)
    } else {
        let Some(&kind) = input.first() else {
            return Ok(None);
        };
        let socks = match kind {
            0 => 1,
            1 => 4,
            2 => 3,
            other => return Err(UotError::AddressType(other)),
        };
        let mut head = input[..input.len().min(MAX_ADDR_LEN)].to_vec();
        head[0] = socks;
        match Address::decode(&head)? {
            Some((address, used)) => (Some(address), used),
            None => return Ok(None),
        }
    };
    if input.len() < start + 2 {
        return Ok(None);
    }
    let len = u16::from_be_bytes([input[start], input[start + 1]]) as usize;
    if input.len() < start + 2 + len {
        return Ok(None);
    }
    Ok(Some((address, start + 2, start + 2 + len)))
}

/// Decodes the datagrams of `input` to its end and checks each against the model.
pub(super) fn check(
    input: &[u8],
    rng: &mut SmallRng,
    stats: &mut CaseStats,
) -> Result<String, String> {
    let Some((&mode, mut rest)) = input.split_first() else {
        return Ok("empty".into());
    };
    let is_connect = mode & 1 == 1;
    let mut count = 0usize;
    let tail = loop {
        let (answer, peak) = measure(stats, || uot::decode_datagram(rest, is_connect));
        alloc_within("decode_datagram", peak, 255, rest.len())?;
        let model = datagram_model(rest, is_connect);
        let agrees = match (&answer, &model) {
            (Ok(Some((d, used))), Ok(Some((address, start, end)))) => {
                d.address == *address && used == end && d.payload == &rest[*start..*end]
            }
            (Ok(None), Ok(None)) => true,
            (Err(a), Err(b)) => a == b,
            _ => false,
        };
        ensure!(agrees, "model: {answer:?}, expected {model:?}");
        match answer {
            Ok(Some((d, used))) => {
                ensure!(used <= rest.len(), "length: used {used} of {}", rest.len());
                if count < 8 {
                    let mut wire = Vec::new();
                    uot::encode_datagram(d.address.as_ref(), d.payload, &mut wire)
                        .map_err(|e| format!("round trip: encode refused {d:?}: {e}"))?;
                    ensure!(wire == rest[..used], "round trip: encode(decode(x)) != x");
                    for p in prefixes(used, rng) {
                        let short = uot::decode_datagram(&rest[..p], is_connect);
                        ensure!(
                            short == Ok(None),
                            "prefix: {p} of {used} bytes gave {short:?}"
                        );
                    }
                }
                count += 1;
                rest = &rest[used..];
            }
            Ok(None) => {
                let longest = if is_connect { 2 } else { MAX_ADDR_LEN + 2 } + MAX_DATA_LEN;
                ensure!(
                    rest.len() < longest,
                    "need-more: Ok(None) for {} bytes",
                    rest.len()
                );
                break if rest.is_empty() {
                    "end".to_owned()
                } else {
                    "need-more".to_owned()
                };
            }
            Err(e) => {
                let longer = extended(rest, rng);
                let again = uot::decode_datagram(&longer, is_connect);
                ensure!(
                    again.as_ref() == Err(&e),
                    "error: {e:?} became {again:?} with more bytes"
                );
                break format!("err={}", variant(&e));
            }
        }
    };
    let mode = if is_connect { "connect" } else { "addressed" };
    Ok(format!("{mode} datagrams={} {tail}", count.min(2)))
}
