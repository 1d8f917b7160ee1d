//! The sans-IO AnyTLS protocol core: bytes in, bytes or values out.
//!
//! Nothing here touches a socket, a clock or a global RNG, so every rule of the wire
//! contract (`docs/protocol.md`) is unit-tested and fuzzable on its own.
//!
//! - [`frame`]: the 7-byte-header frame codec.
//! - [`auth`]: the authentication preamble and the password hash.
//! - [`settings`]: `key=value` Settings and ServerSettings.
//! - [`padding`]: the padding scheme, its md5, record sizes and write shaping.
//! - [`addr`]: SOCKS5-form target addresses.
//! - [`uot`]: UDP over TCP v2 requests and datagrams.
//! - [`uri`]: `anytls://` server URIs (the share links, docs/protocol.md §5).
//! - [`rate`]: a token bucket (time passed in), for datagram rates.
//! - [`proxy_protocol`]: the PROXY protocol header (v1, v2) written to the
//!   fallback before a rejected client's bytes.
//! - [`session`]: the server session's rules as a state machine (frames, stream
//!   events and time in; actions and the next deadline out); [`client_session`]:
//!   the client session's, with the same shape and names. [`pair`] (unit tests,
//!   and the fuzzer with the `pair` feature) runs the two against each other on
//!   simulated time.
//! - [`error`]: one error enum per kind of input.
//!
//! ```
//! use anytls::proto::frame::{self, Command};
//!
//! let mut wire = Vec::new();
//! frame::encode(Command::Push, 7, b"hello", &mut wire).unwrap();
//! // A decoder fed part of a frame asks for more; fed all of it, it borrows the data.
//! assert!(frame::decode(&wire[..4]).is_none());
//! let decoded = frame::decode(&wire).unwrap();
//! assert_eq!((decoded.cmd, decoded.stream_id, decoded.data), (Command::Push, 7, &b"hello"[..]));
//! ```

pub mod addr;
pub mod auth;
pub mod client_session;
pub mod error;
pub mod frame;
pub mod padding;
#[cfg(any(test, feature = "pair"))]
pub mod pair;
pub mod proxy_protocol;
pub mod rate;
pub mod session;
pub mod settings;
pub mod uot;
pub mod uri;

pub use addr::Address;
pub use frame::{Command, Frame};
pub use padding::PaddingScheme;
pub use settings::Settings;
