//! The client side of AnyTLS: authenticate, send Settings, open streams, pad the
//! first writes per the padding scheme and obey UpdatePaddingScheme.
//!
//! [`ClientSession`] is one session over one TLS connection; the SOCKS5 client and
//! the load generator build on it, and the integration tests drive the server with it.

mod session;

pub use session::{connect_tls, ClientConfig, ClientSession, ClientStream, StreamError};
