//! Every integration test in one binary: one link instead of one per file (the
//! test build went from N binaries, each linking the server's whole dependency
//! tree, to one). Each module is one subject; `common` is the harness (the real
//! server and client binaries on 127.0.0.1, local targets, a glommio executor).
//! Run one subject with `cargo test --test it acme`.

mod common;

mod acme;
mod caps;
mod cli;
mod client;
mod client_udp;
mod config;
mod contrib;
mod docs;
mod hostile;
mod idle_memory;
mod interop;
mod layout;
mod limits;
mod links;
mod node;
mod operator;
mod pool;
mod prober;
mod session;
mod uot;
