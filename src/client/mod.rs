//! The client side of AnyTLS: authenticate, send Settings, open streams, pad the
//! first writes per the padding scheme and obey UpdatePaddingScheme.
//!
//! - `session`: one session over one TLS connection ([`ClientSession`]), used by
//!   the SOCKS client, the load generator and the integration tests.
//! - [`session_pool`]: session reuse as the reference client does it.
//! - [`inbound`]: the local SOCKS5 proxy (CONNECT, and UDP ASSOCIATE carried over
//!   UDP-over-TCP v2 in [`inbound::udp`]) and HTTP proxy requests on the same port;
//!   [`socks5`] and [`http`] are its sans-IO parsers.
//! - [`ClientOptions`] and [`run`]: the client process (flags, checked config,
//!   one executor per CPU until a signal); [`serve`]: one core's accept loop.

pub mod http;
pub mod inbound;
mod options;
mod run;
mod session;
pub mod session_pool;
pub mod socks5;

pub use crate::proto::uri::ServerUri;
pub use options::{ClientOptions, ClientOptionsError, ClientSettled};
pub use run::{run, serve};
pub use session::{
    connect_tls, ClientConfig, ClientSession, ClientStream, StreamError, SYNACK_TIMEOUT,
};
pub use session_pool::{PoolSettings, SessionPool};
