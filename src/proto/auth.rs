//! The authentication preamble: `sha256(password) | padding0 len u16 | padding0`
//! (docs/protocol.md §2), and the password hash with its constant-time equality.

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// Bytes of the password hash.
pub const HASH_LEN: usize = 32;
/// Bytes before padding0: the hash and the padding length.
pub const FIXED_LEN: usize = HASH_LEN + 2;
/// The longest possible preamble.
pub const MAX_PREAMBLE_LEN: usize = FIXED_LEN + u16::MAX as usize;

/// `sha256(password)`, the credential a client presents. Equality is
/// constant-time, so comparing a presented hash says nothing about how much of
/// it matched.
#[derive(Clone, Copy, Eq)]
pub struct PasswordHash(pub [u8; HASH_LEN]);

impl PartialEq for PasswordHash {
    fn eq(&self, other: &PasswordHash) -> bool {
        self.0.ct_eq(&other.0).into()
    }
}

// Equal hashes have equal bytes, as the derived form would hash them.
impl std::hash::Hash for PasswordHash {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.0.hash(state);
    }
}

impl PasswordHash {
    /// Hashes a password.
    pub fn of(password: &str) -> PasswordHash {
        PasswordHash(Sha256::digest(password.as_bytes()).into())
    }
}

impl std::fmt::Debug for PasswordHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PasswordHash(..)")
    }
}

/// A complete preamble as read from the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Preamble {
    /// The presented credential.
    pub hash: PasswordHash,
    /// Total bytes of the preamble, padding included.
    pub len: usize,
}

/// Decodes the preamble from the front of `input`; `None` means more bytes are needed.
/// Any 34+ bytes form a structurally valid preamble: whether it authenticates is
/// [`crate::accounts::Accounts::authenticate`]'s question.
pub fn decode_preamble(input: &[u8]) -> Option<Preamble> {
    let fixed = input.get(..FIXED_LEN)?;
    let padding_len = u16::from_be_bytes([fixed[HASH_LEN], fixed[HASH_LEN + 1]]) as usize;
    let len = FIXED_LEN + padding_len;
    if input.len() < len {
        return None;
    }
    let hash: [u8; HASH_LEN] = fixed[..HASH_LEN].try_into().expect("length checked");
    Some(Preamble {
        hash: PasswordHash(hash),
        len,
    })
}

/// Appends a preamble with `padding_len` zero bytes of padding0.
pub fn encode_preamble(hash: &PasswordHash, padding_len: u16, out: &mut Vec<u8>) {
    out.extend_from_slice(&hash.0);
    out.extend_from_slice(&padding_len.to_be_bytes());
    out.resize(out.len() + padding_len as usize, 0);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_is_sha256_of_password() {
        let hex: String = PasswordHash::of("password")
            .0
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(
            hex,
            "5e884898da28047151d0e56f8dc6292773603d0d6aabbdd62a11ef721d1542d8"
        );
    }

    #[test]
    fn round_trip_and_every_split() {
        let hash = PasswordHash::of("secret");
        let mut wire = Vec::new();
        encode_preamble(&hash, 30, &mut wire);
        assert_eq!(wire.len(), FIXED_LEN + 30);
        wire.extend_from_slice(b"first frame");
        for len in 0..FIXED_LEN + 30 {
            assert_eq!(decode_preamble(&wire[..len]), None, "prefix {len}");
        }
        let preamble = decode_preamble(&wire).unwrap();
        assert_eq!(preamble.hash, hash);
        assert_eq!(preamble.len, FIXED_LEN + 30);
    }

    #[test]
    fn maximal_padding_is_accepted() {
        let mut wire = Vec::new();
        encode_preamble(&PasswordHash::of("x"), u16::MAX, &mut wire);
        assert_eq!(wire.len(), MAX_PREAMBLE_LEN);
        assert_eq!(decode_preamble(&wire).unwrap().len, MAX_PREAMBLE_LEN);
    }

    #[test]
    fn garbage_hash_fails_authentication() {
        let garbage = [0xA5u8; FIXED_LEN];
        let preamble = decode_preamble(&garbage);
        // 0xA5A5 bytes of padding are announced, so this is still incomplete.
        assert_eq!(preamble, None);
        let mut complete = garbage.to_vec();
        complete.resize(FIXED_LEN + 0xA5A5, 0);
        let preamble = decode_preamble(&complete).unwrap();
        assert_ne!(preamble.hash, PasswordHash::of("p"));
    }
}
