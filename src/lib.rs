//! anytls-rs: a thread-per-core AnyTLS server on glommio and rustls.
//!
//! # Layout
//!
//! - [`proto`]: the sans-IO protocol core: frames, authentication, settings, the
//!   padding scheme, SOCKS addresses, UDP over TCP, and both sides' session rules
//!   as state machines ([`proto::session`], [`proto::client_session`]). No
//!   sockets, no clock, no global RNG.
//! - [`plumbing`]: executor-local plumbing both ends share: pooled buffers, the
//!   coalescing frame write queue, the TCP transport under TLS, bounded
//!   per-stream pipes, events, timeouts.
//! - [`server`]: the server: [`Server::start`], the per-core serve and accept
//!   loops, the per-core context, the session driver (handshake, authentication,
//!   fallback, each stream's relay, UDP over TCP), and [`server::run`], the
//!   process around it (signals, SIGHUP reloads, statistics lines).
//! - [`client`]: the client side: a session over TLS, session reuse, the SOCKS5
//!   inbound with UDP ASSOCIATE, the padding of first writes, and
//!   [`client::run`], the client process.
//! - [`pool`]: the outbound connection pool, one file per kind (none, lock,
//!   lockfree, highperf) behind one trait; [`pool::dial`] resolves and dials
//!   targets: off-executor name resolution with a per-core cache, the policy of
//!   which targets are allowed, and the `Dial` seam the pool opens connections
//!   through.
//! - [`accounts`]: the users a server accepts, each user's account (speed and
//!   device limits, revocation) shared by its sessions on every core.
//! - [`speed_limit`]: a user's speed limit over all cores: per-core credit, one
//!   lock-free shared tier.
//! - [`limits`]: sessions per user and per client address, and each user's
//!   devices, over all cores.
//! - [`node`]: node mode: the panel's users, settings and routes in, traffic,
//!   online addresses and load out, on a control thread off the data path.
//! - [`runtime`]: one pinned glommio executor per core with its `SO_REUSEPORT`
//!   listener, the accept loop, start-up checks and errors.
//! - [`config`]: the server's options (flags) and the checked configuration they
//!   become, with SIGHUP reloads.
//! - [`reloadable`]: a value every core reads and the control plane replaces.
//! - [`tls`]: rustls configuration, PEM loading, the self-signed default, the
//!   client's certificate checks.
//! - [`der`]: a certificate's validity period read from its DER.
//! - [`state_file`]: private files written atomically (keys, accounts).
//! - [`acme`]: certificates from an ACME CA, issued and renewed on a thread of
//!   their own; the challenges' answers the data path reads.
//! - [`stats`]: per-core counters summed when reported.
//! - [`metrics`]: the Prometheus text endpoint (`--metrics`), with its token,
//!   allow-list, concurrency bound and render cache.
//! - [`cli`]: what the binaries share at their edge (logging, exit code 2 on
//!   start-up errors, stop signals).
//!
//! Structure-aware fuzzing of every decoder and of the session machine is the
//! workspace member `fuzz/` (package `anytls-fuzz`), outside this library.
//!
//! # Layers
//!
//! A module names only modules of lower layers (`tests/it/layout.rs` checks this
//! list against every `use` and `crate::` path):
//!
//! 1. `proto`, `reloadable`, `speed_limit`, `stats`, `cli`, `state_file`, `der`
//! 2. `tls`
//! 3. `plumbing`, `accounts`, `limits`, `acme`
//! 4. `pool`
//! 5. `runtime`, `node`
//! 6. `config`
//! 7. `metrics`, `client`
//! 8. `server`

#![deny(unsafe_code)]

pub mod accounts;
pub mod acme;
pub mod cli;
pub mod client;
pub mod config;
pub mod der;
pub mod limits;
pub mod metrics;
pub mod node;
pub mod plumbing;
pub mod pool;
pub mod proto;
pub mod reloadable;
pub mod runtime;
pub mod server;
pub mod speed_limit;
pub mod state_file;
pub mod stats;
pub mod tls;

pub use config::ServerConfig;
pub use server::Server;
