//! anytls-rs: a thread-per-core AnyTLS server on glommio and rustls.
//!
//! # Layout
//!
//! - [`proto`]: the sans-IO protocol core (frames, authentication, settings,
//!   padding scheme, SOCKS addresses). No sockets.
//! - [`mux`]: executor-local plumbing both ends share: pooled buffers, the
//!   coalescing frame write queue, the TCP transport under TLS, bounded
//!   per-stream pipes, events, timeouts.
//! - [`session`]: the server side of a connection: handshake, authentication, the
//!   session's frame loop and each stream's relay.
//! - [`client`]: the client side of a session (used by the tests and the client).
//! - [`limits`]: sessions per user and per client address, over all cores.
//! - [`pool`]: the outbound connection pool, one file per kind (none, lock,
//!   lockfree, highperf) behind one trait; [`pool::dial`] resolves and dials
//!   targets: off-executor name resolution with a per-core cache, the policy of
//!   which targets are allowed, and the `Dial` seam the pool opens connections
//!   through.
//! - [`runtime`]: one pinned glommio executor per core, `SO_REUSEPORT` listeners,
//!   start-up checks, shutdown.
//! - [`tls`]: rustls configuration, PEM loading, the self-signed default.
//! - [`stats`]: per-core counters summed when reported.
//! - [`metrics`]: the Prometheus text endpoint (`--metrics`).
//! - [`config`]: the server's settled configuration.
//! - [`cli`]: what the binaries share at their edge (exit code 2 on start-up errors).

pub mod cli;
pub mod client;
pub mod config;
pub mod fuzz;
pub mod limits;
pub mod metrics;
pub mod mux;
pub mod pool;
pub mod proto;
pub mod runtime;
pub mod session;
pub mod stats;
pub mod tls;

pub use config::ServerConfig;
pub use runtime::Server;
