//! The frame target: streams of frames with lying lengths, unknown commands and torn
//! tails, checked against [`frame::decode`] (lengths, round trip, prefixes, no
//! allocation) and the encoders' limits ([`frame::encode_push`],
//! [`frame::encode_waste`]).

use rand::rngs::SmallRng;
use rand::Rng;

use anytls::proto::frame::{self, Command, HEADER_LEN, MAX_DATA_LEN};

use super::{padding, settings};
use crate::alloc::{alloc_within, measure, CaseStats};
use crate::checks::{ensure, prefixes};
use crate::gen::{
    gen_address, length_field, maybe_torn, pick, random_bytes, small_len, INTERESTING_U32, SOCKS,
};

/// Up to four frames, their payloads shaped by their command, now and then cut short.
pub(super) fn generate(rng: &mut SmallRng) -> Vec<u8> {
    let mut out = Vec::new();
    for _ in 0..rng.gen_range(0..=4) {
        let cmd = if rng.gen_ratio(3, 4) {
            rng.gen_range(0..=10u8)
        } else {
            rng.gen()
        };
        let stream_id = if rng.gen_bool(0.5) {
            pick(rng, &INTERESTING_U32)
        } else {
            rng.gen()
        };
        let mut data = match Command::from(cmd) {
            Command::Settings | Command::ServerSettings => settings::generate(rng),
            Command::UpdatePaddingScheme => padding::generate(rng),
            Command::Syn | Command::Push if rng.gen_bool(0.5) => {
                let mut data = Vec::new();
                gen_address(rng, &mut data, SOCKS);
                data
            }
            Command::Alert | Command::SynAck => b"dial tcp: connection refused".to_vec(),
            _ => {
                let n = small_len(rng);
                random_bytes(rng, n)
            }
        };
        data.truncate(MAX_DATA_LEN);
        let len = length_field(rng, data.len());
        out.push(cmd);
        out.extend_from_slice(&stream_id.to_be_bytes());
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(&data);
    }
    maybe_torn(rng, &mut out);
    out
}

/// Decodes the frames of `input` to its end and checks each, then the encoders.
pub(super) fn check(
    input: &[u8],
    rng: &mut SmallRng,
    stats: &mut CaseStats,
) -> Result<String, String> {
    let mut rest = input;
    let mut frames = 0usize;
    loop {
        let (decoded, peak) = measure(stats, || frame::decode(rest));
        alloc_within("frame::decode", peak, 0, rest.len())?;
        let Some(f) = decoded else {
            let need = match rest.get(..HEADER_LEN) {
                None => HEADER_LEN,
                Some(h) => HEADER_LEN + u16::from_be_bytes([h[5], h[6]]) as usize,
            };
            ensure!(
                rest.len() < need,
                "need-more: None for {} bytes that hold a whole {need}-byte frame",
                rest.len()
            );
            break;
        };
        let used = f.wire_len();
        ensure!(
            used <= rest.len(),
            "length: frame of {used} bytes from {} bytes",
            rest.len()
        );
        ensure!(
            used >= HEADER_LEN,
            "length: frame of {used} bytes is shorter than a header"
        );
        ensure!(
            f.data.len() <= MAX_DATA_LEN,
            "length: {} data bytes",
            f.data.len()
        );
        let len = u16::from_be_bytes([rest[5], rest[6]]) as usize;
        ensure!(
            f.data.len() == len,
            "length: {} data bytes, header says {len}",
            f.data.len()
        );
        ensure!(
            f.data == &rest[HEADER_LEN..used],
            "data: not the bytes after the header"
        );
        ensure!(
            u8::from(f.cmd) == rest[0],
            "command: {:?} from byte {}",
            f.cmd,
            rest[0]
        );
        ensure!(
            Command::from(rest[0]) == f.cmd,
            "command: byte {} not round-tripped",
            rest[0]
        );
        let id = u32::from_be_bytes([rest[1], rest[2], rest[3], rest[4]]);
        ensure!(
            f.stream_id == id,
            "stream id: {} decoded, {id} sent",
            f.stream_id
        );
        ensure!(
            frame::header(f.cmd, f.stream_id, len as u16) == rest[..HEADER_LEN],
            "round trip: header() differs from the decoded header"
        );
        if frames < 16 {
            let mut wire = Vec::with_capacity(used);
            frame::encode(f.cmd, f.stream_id, f.data, &mut wire)
                .map_err(|e| format!("round trip: encode refused a decoded frame: {e}"))?;
            ensure!(wire == rest[..used], "round trip: encode(decode(x)) != x");
            for p in prefixes(used, rng) {
                ensure!(
                    frame::decode(&rest[..p]).is_none(),
                    "prefix: {p} of a {used}-byte frame decoded"
                );
            }
            ensure!(
                frame::decode(&rest[..used]) == Some(f),
                "extension: the frame alone decodes differently than with bytes after it"
            );
        }
        frames += 1;
        rest = &rest[used..];
    }

    // The encoders' limits, with the input as a payload.
    if rng.gen_ratio(1, 8) {
        let id = rng.gen();
        let mut wire = Vec::new();
        frame::encode_push(id, input, &mut wire);
        let mut joined = Vec::with_capacity(input.len());
        let mut rest = &wire[..];
        let mut count = 0;
        while let Some(f) = frame::decode(rest) {
            ensure!(
                f.cmd == Command::Push && f.stream_id == id,
                "push: wrong frame {f:?}"
            );
            ensure!(!f.data.is_empty(), "push: empty PSH frame");
            joined.extend_from_slice(f.data);
            rest = &rest[f.wire_len()..];
            count += 1;
        }
        ensure!(rest.is_empty(), "push: {} bytes left undecoded", rest.len());
        ensure!(joined == input, "push: payload not carried whole");
        ensure!(
            count == input.len().div_ceil(MAX_DATA_LEN),
            "push: {count} frames"
        );
    }
    if let Some(&b) = input.first() {
        let len = (b as usize) << 9;
        let mut wire = vec![1, 2, 3];
        match frame::encode_waste(len, &mut wire) {
            Ok(()) => {
                ensure!(len <= MAX_DATA_LEN, "waste: {len} bytes accepted");
                let f = frame::decode(&wire[3..]).ok_or("waste: not decodable")?;
                ensure!(
                    f.cmd == Command::Waste && f.data.len() == len,
                    "waste: {f:?}"
                );
                ensure!(f.data.iter().all(|&b| b == 0), "waste: data not zero");
            }
            Err(_) => {
                ensure!(len > MAX_DATA_LEN, "waste: {len} bytes refused");
                ensure!(wire == [1, 2, 3], "waste: output written on error");
            }
        }
    }

    let tail = if rest.is_empty() {
        "end"
    } else if rest.len() < HEADER_LEN {
        "short-header"
    } else {
        "short-data"
    };
    Ok(format!("frames={} tail={tail}", frames.min(3)))
}
