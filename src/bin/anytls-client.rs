//! anytls-client: flags -> [`ClientOptions`] -> [`anytls::client::run`].

use std::process::ExitCode;

use anytls::client::ClientOptions;
use clap::Parser;

/// A local proxy, SOCKS5 (CONNECT, and UDP ASSOCIATE carried over UDP-over-TCP v2)
/// and HTTP (CONNECT and plain requests) on the same port, that carries each
/// connection as a stream over AnyTLS sessions to a server,
/// reusing sessions as the reference client does.
/// Log verbosity comes from RUST_LOG (default: info).
#[derive(Parser, Debug)]
#[command(version)]
struct Args {
    #[command(flatten)]
    options: ClientOptions,
}

fn main() -> ExitCode {
    anytls::cli::main_with(|| anytls::client::run(&Args::parse().options))
}
