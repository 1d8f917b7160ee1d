//! anytls-server: flags -> [`ServerOptions`] -> [`anytls::server::run`].

use std::process::ExitCode;

use anytls::config::ServerOptions;
use clap::Parser;

/// A thread-per-core AnyTLS server (io_uring via glommio, TLS via rustls).
///
/// Clients (anytls-go, sing-box, mihomo) connect with TLS, authenticate with
/// sha256(password) and multiplex proxied TCP streams over the session.
/// Log verbosity comes from RUST_LOG (default: info).
#[derive(Parser, Debug)]
#[command(version)]
struct Args {
    #[command(flatten)]
    options: ServerOptions,
}

fn main() -> ExitCode {
    anytls::cli::main_with(|| anytls::server::run(&Args::parse().options))
}
