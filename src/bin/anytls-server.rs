//! anytls-server: flags (and `--config`) -> [`Invocation`] -> [`anytls::server::run`].

use std::process::ExitCode;

use anytls::config::{Invocation, ServerOptions};
use clap::{CommandFactory, FromArgMatches, Parser};

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
    let matches = Args::command().get_matches();
    anytls::cli::main_with(|| {
        let args = Args::from_arg_matches(&matches)?;
        anytls::server::run(&Invocation::new(args.options, &matches))
    })
}
