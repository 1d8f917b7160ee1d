//! The auth target: preambles (a password hash, a padding length that may lie, the
//! padding, the first frame behind it), checked against [`auth::decode_preamble`] and
//! [`Accounts::authenticate`] with two known users.

use std::sync::OnceLock;

use rand::rngs::SmallRng;
use rand::Rng;

use anytls::accounts::{AccountSpec, Accounts};
use anytls::proto::auth::{self, PasswordHash};

use crate::alloc::{alloc_within, measure, CaseStats};
use crate::checks::{ensure, prefixes};
use crate::gen::{maybe_torn, pick, random_bytes, some_u16};

/// A preamble for a known, empty or wrong password or a random hash, its padding
/// length true or not, now and then the first frame after it or cut short.
pub(super) fn generate(rng: &mut SmallRng) -> Vec<u8> {
    let mut out = Vec::new();
    if rng.gen_bool(0.4) {
        let password = pick(rng, &["alice-pass", "bob-pass", "", "wrong"]);
        out.extend_from_slice(&PasswordHash::of(password).0);
    } else {
        out.extend(random_bytes(rng, auth::HASH_LEN));
    }
    let pad = if rng.gen_bool(0.6) {
        rng.gen_range(0..64)
    } else {
        some_u16(rng)
    };
    out.extend_from_slice(&pad.to_be_bytes());
    let actual = match rng.gen_range(0..10) {
        0 => rng.gen_range(0..=pad as usize),
        1 => pad as usize + rng.gen_range(1..64),
        _ => pad as usize,
    };
    out.resize(out.len() + actual, 0);
    if rng.gen_ratio(1, 4) {
        // The first frame, sent right behind the preamble.
        out.extend_from_slice(&[4, 0, 0, 0, 0, 0, 3, b'v', b'=', b'2']);
    }
    maybe_torn(rng, &mut out);
    out
}

/// The accounts the decoded hashes are authenticated against.
fn users() -> &'static Accounts {
    static USERS: OnceLock<Accounts> = OnceLock::new();
    USERS.get_or_init(|| {
        Accounts::new(&[
            AccountSpec::new("alice", "alice-pass"),
            AccountSpec::new("bob", "bob-pass"),
        ])
        .expect("two users")
    })
}

/// Checks [`auth::decode_preamble`] of `input`, then authenticates the hash it gives.
pub(super) fn check(
    input: &[u8],
    rng: &mut SmallRng,
    stats: &mut CaseStats,
) -> Result<String, String> {
    let (decoded, peak) = measure(stats, || auth::decode_preamble(input));
    alloc_within("decode_preamble", peak, 0, input.len())?;
    let Some(preamble) = decoded else {
        let need = match input.get(..auth::FIXED_LEN) {
            None => auth::FIXED_LEN,
            Some(f) => auth::FIXED_LEN + u16::from_be_bytes([f[32], f[33]]) as usize,
        };
        ensure!(
            input.len() < need,
            "need-more: None for {} of {need} bytes",
            input.len()
        );
        ensure!(
            input.len() < auth::MAX_PREAMBLE_LEN,
            "need-more: None past the longest preamble"
        );
        let short = if input.len() < auth::FIXED_LEN {
            "fixed"
        } else {
            "padding"
        };
        return Ok(format!("need-more={short}"));
    };
    let pad = u16::from_be_bytes([input[32], input[33]]);
    ensure!(
        preamble.len == auth::FIXED_LEN + pad as usize,
        "length: {} for padding {pad}",
        preamble.len
    );
    ensure!(
        preamble.len <= input.len(),
        "length: {} of {} bytes",
        preamble.len,
        input.len()
    );
    ensure!(
        preamble.hash.0 == input[..32],
        "hash: not the first 32 bytes"
    );
    let mut wire = Vec::new();
    auth::encode_preamble(&preamble.hash, pad, &mut wire);
    ensure!(
        wire.len() == preamble.len,
        "round trip: encoded {} bytes",
        wire.len()
    );
    ensure!(
        wire[..auth::FIXED_LEN] == input[..auth::FIXED_LEN],
        "round trip: header differs"
    );
    for p in prefixes(preamble.len, rng) {
        ensure!(
            auth::decode_preamble(&input[..p]).is_none(),
            "prefix: {p} bytes decoded"
        );
    }
    ensure!(
        auth::decode_preamble(&input[..preamble.len]) == Some(preamble),
        "extension: the preamble alone decodes differently"
    );
    let user = users().authenticate(&preamble.hash).map(|a| a.name());
    let expected = if preamble.hash == PasswordHash::of("alice-pass") {
        Some("alice")
    } else if preamble.hash == PasswordHash::of("bob-pass") {
        Some("bob")
    } else {
        None
    };
    ensure!(
        user == expected,
        "authenticate: {user:?}, expected {expected:?}"
    );
    let padding = if pad == 0 { "none" } else { "some" };
    Ok(format!("ok user={} padding={padding}", user.unwrap_or("-")))
}
