//! The client side of AnyTLS: authenticate, send Settings, open streams, pad the
//! first writes per the padding scheme and obey UpdatePaddingScheme.
//!
//! - [`session`]: one session over one TLS connection ([`ClientSession`]), used by
//!   the SOCKS client, the load generator and the integration tests.
//! - [`pool`]: session reuse as the reference client does it.
//! - [`socks5`] and [`inbound`]: the local SOCKS5 proxy (CONNECT and UDP ASSOCIATE).
//! - [`udp`]: UDP ASSOCIATE carried over UDP-over-TCP v2.
//! - [`uri`]: `anytls://` server URIs.

pub mod inbound;
pub mod pool;
mod session;
pub mod socks5;
pub mod udp;
pub mod uri;

pub use pool::{PoolSettings, SessionPool};
pub use session::{connect_tls, ClientConfig, ClientSession, ClientStream, StreamError};
pub use uri::ServerUri;
