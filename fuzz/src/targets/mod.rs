//! The targets, one file each with its generator, checker and model, and the dispatch
//! on [`Target`]: [`generate`] an input, [`check`] it, or only [`decode`] it. The SOCKS
//! address answer (`socks_answer.rs`) and the records of [`padding::shape`]
//! (`shape.rs`) are checked in files of their own, for the address and padding targets.
//!
//! [`padding::shape`]: anytls::proto::padding::shape

mod address;
mod auth;
mod frame;
mod padding;
mod pair;
mod session;
mod settings;
mod shape;
mod socks_answer;
mod uot_datagram;
mod uot_request;

use rand::rngs::SmallRng;
use rand::SeedableRng;

use anytls::proto;

use crate::alloc::CaseStats;
use crate::Target;

/// An input for `target` from its generator.
pub(crate) fn generate(target: Target, rng: &mut SmallRng) -> Vec<u8> {
    match target {
        Target::Frame => frame::generate(rng),
        Target::Address => address::generate(rng),
        Target::Settings => settings::generate(rng),
        Target::Auth => auth::generate(rng),
        Target::UotRequest => uot_request::generate(rng),
        Target::UotDatagram => uot_datagram::generate(rng),
        Target::Padding => padding::generate(rng),
        Target::Session => session::generate(rng),
        Target::Pair => pair::generate(rng),
        Target::All => Vec::new(),
    }
}

/// Checks `input` against `target`'s contract: the outcome it reached, or what failed.
pub(crate) fn check(
    target: Target,
    input: &[u8],
    rng: &mut SmallRng,
    stats: &mut CaseStats,
) -> Result<String, String> {
    match target {
        Target::Frame => frame::check(input, rng, stats),
        Target::Address => address::check(input, rng, stats),
        Target::Settings => settings::check(input, stats),
        Target::Auth => auth::check(input, rng, stats),
        Target::UotRequest => uot_request::check(input, rng, stats),
        Target::UotDatagram => uot_datagram::check(input, rng, stats),
        Target::Padding => padding::check(input, rng, stats),
        Target::Session => session::check(input, rng),
        Target::Pair => pair::check(input, rng),
        Target::All => Err("check takes a single target".into()),
    }
}

/// Runs only `target`'s decoder over `input`, without checks: the cost of the decoder
/// alone, for timing an input (a frame or datagram stream is decoded to its end).
pub fn decode(target: Target, input: &[u8]) {
    use std::hint::black_box;
    match target {
        Target::Frame => {
            let mut rest = input;
            while let Some(f) = proto::frame::decode(black_box(rest)) {
                rest = &rest[f.wire_len()..];
            }
        }
        Target::Address => {
            let _ = black_box(proto::addr::Address::decode(black_box(input)));
        }
        Target::Settings => {
            let _ = black_box(proto::settings::Settings::decode(black_box(input)));
        }
        Target::Auth => {
            black_box(proto::auth::decode_preamble(black_box(input)));
        }
        Target::UotRequest => {
            let _ = black_box(proto::uot::Request::decode(black_box(input)));
        }
        Target::UotDatagram => {
            if let Some((&mode, mut rest)) = input.split_first() {
                while let Ok(Some((_, used))) =
                    proto::uot::decode_datagram(black_box(rest), mode & 1 == 1)
                {
                    rest = &rest[used..];
                }
            }
        }
        Target::Padding => {
            let _ = black_box(proto::padding::PaddingScheme::parse(black_box(input)));
        }
        Target::Session => {
            let mut rng = SmallRng::seed_from_u64(0);
            let _ = black_box(session::check(black_box(input), &mut rng));
        }
        Target::Pair => {
            let mut rng = SmallRng::seed_from_u64(0);
            let _ = black_box(pair::check(black_box(input), &mut rng));
        }
        Target::All => {}
    }
}
