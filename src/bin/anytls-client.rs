//! anytls-client: a local SOCKS5 proxy that carries each connection as a stream
//! over AnyTLS sessions to a server.

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::process::ExitCode;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anytls::cli::Fatal;
use anytls::client::{inbound, ClientConfig, PoolSettings, ServerUri, SessionPool};
use anytls::runtime::Executors;
use anytls::tls::{client_config, ServerVerification};
use clap::Parser;
use futures_lite::future;
use log::{debug, info};

/// A local SOCKS5 proxy (CONNECT, and UDP ASSOCIATE carried over UDP-over-TCP v2)
/// that carries each connection as a stream over AnyTLS sessions to a server,
/// reusing sessions as the reference client does.
/// Log verbosity comes from RUST_LOG (default: info).
#[derive(Parser, Debug)]
#[command(version)]
struct Args {
    /// Local SOCKS5 address to listen on.
    #[arg(short = 'l', long = "listen", default_value = "127.0.0.1:1080")]
    listen: String,

    /// Server as host:port, or anytls://password@host:port/?sni=NAME&insecure=1.
    #[arg(short = 's', long = "server")]
    server: String,

    /// Password (may instead be given in an anytls:// URI).
    #[arg(short = 'p', long = "password")]
    password: Option<String>,

    /// TLS server name to send and verify [default: the server's host].
    /// An IP address means no SNI is sent.
    #[arg(long)]
    sni: Option<String>,

    /// Do not verify the server's certificate (for self-signed servers).
    #[arg(long)]
    insecure: bool,

    /// PEM file of CA certificates to trust instead of the built-in web PKI roots.
    #[arg(long, value_name = "FILE")]
    ca: Option<PathBuf>,

    /// Idle sessions kept open even when they are older than the idle timeout.
    #[arg(short = 'm', long = "min-idle-session", default_value_t = 5)]
    min_idle_session: usize,

    /// Open a new session for every connection instead of reusing idle ones.
    #[arg(long)]
    disable_reuse: bool,

    /// Seconds an idle session lives (beyond the -m newest).
    #[arg(long, value_name = "SECS", default_value_t = 60)]
    idle_session_timeout: u64,

    /// Seconds between idle-session checks (expiry and heartbeats).
    #[arg(long, value_name = "SECS", default_value_t = 30)]
    idle_check_interval: u64,

    /// Seconds a SOCKS5 UDP association lives without a datagram either way.
    #[arg(long, value_name = "SECS", default_value_t = 60)]
    udp_idle_timeout: u64,

    /// Executors to run, one pinned per CPU (each with its own sessions).
    #[arg(long, default_value_t = 1)]
    cores: usize,
}

fn main() -> ExitCode {
    anytls::cli::main_with(|| run(Args::parse()))
}

fn resolve(what: &str, text: &str) -> Result<SocketAddr, Fatal> {
    text.to_socket_addrs()
        .map_err(|e| Fatal(format!("cannot resolve {what} {text}: {e}")))?
        .next()
        .ok_or_else(|| Fatal(format!("{what} {text} resolves to no address")))
}

fn load_roots(path: &PathBuf) -> Result<rustls::RootCertStore, Fatal> {
    let pem =
        std::fs::read(path).map_err(|e| Fatal(format!("cannot read {}: {e}", path.display())))?;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pemfile::certs(&mut &pem[..]).filter_map(Result::ok) {
        roots
            .add(cert)
            .map_err(|e| Fatal(format!("{}: {e}", path.display())))?;
    }
    if roots.is_empty() {
        return Err(Fatal(format!(
            "{}: no PEM certificate found",
            path.display()
        )));
    }
    Ok(roots)
}

fn build(args: &Args) -> Result<(SocketAddr, ClientConfig, PoolSettings, Vec<usize>), Fatal> {
    let (host, port, mut password, mut sni, mut insecure) = if args.server.starts_with("anytls://")
    {
        let uri = ServerUri::parse(&args.server)?;
        (
            uri.host,
            uri.port,
            Some(uri.password),
            uri.sni,
            uri.insecure,
        )
    } else {
        let (host, port) = args.server.rsplit_once(':').ok_or_else(|| {
            Fatal(format!(
                "--server {} must be host:port or an anytls:// URI",
                args.server
            ))
        })?;
        let port = port
            .parse()
            .map_err(|_| Fatal(format!("--server {}: invalid port", args.server)))?;
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        (host, port, None, None, false)
    };
    if args.password.is_some() {
        password = args.password.clone();
    }
    if args.sni.is_some() {
        sni = args.sni.clone();
    }
    insecure |= args.insecure;
    let password =
        password.ok_or_else(|| Fatal("a password is required (-p or in the URI)".into()))?;
    let server = resolve("server", &format!("{host}:{port}"))
        .or_else(|_| resolve("server", &format!("[{host}]:{port}")))?;
    let verification = if insecure {
        ServerVerification::Insecure
    } else if let Some(ca) = &args.ca {
        ServerVerification::Roots(load_roots(ca)?)
    } else {
        ServerVerification::Roots(rustls::RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        })
    };
    let server_name = sni.unwrap_or(host);
    let config = ClientConfig::new(server, &server_name, client_config(verification), &password);
    let settings = PoolSettings {
        min_idle: args.min_idle_session,
        idle_timeout: Duration::from_secs(args.idle_session_timeout.max(1)),
        check_interval: Duration::from_secs(args.idle_check_interval.max(1)),
        disable_reuse: args.disable_reuse,
        udp_idle_timeout: Duration::from_secs(args.udp_idle_timeout.max(1)),
    };
    let allowed = anytls::config::allowed_cpus();
    if args.cores == 0 || args.cores > allowed.len() {
        return Err(Fatal(format!(
            "--cores {} but this process may run on 1..={} CPU(s): {allowed:?}",
            args.cores,
            allowed.len()
        )));
    }
    Ok((server, config, settings, allowed[..args.cores].to_vec()))
}

fn run(args: Args) -> Result<(), Fatal> {
    let listen = resolve("--listen", &args.listen)?;
    let (server, config, settings, cpus) = build(&args)?;
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(signal, stop.clone())?;
    }
    // ClientConfig holds an Rc (the shared padding scheme): each executor builds its own.
    let tls = config.tls.clone();
    let (server_name, password) = (config.server_name.clone(), config.password);
    let executors = Executors::start("anytls-client", listen, &cpus, move |_, listener, stop| {
        let config = ClientConfig::from_parts(server, server_name.clone(), tls.clone(), password);
        let pool = Rc::new(SessionPool::new(config, settings.clone()));
        async move {
            glommio::spawn_local(pool.clone().maintain()).detach();
            let accept = async {
                loop {
                    match listener.accept().await {
                        Ok(conn) => {
                            conn.set_nodelay(true).ok();
                            let pool = pool.clone();
                            glommio::spawn_local(async move {
                                if let Err(e) = inbound::serve(conn, pool).await {
                                    debug!("SOCKS connection: {e}");
                                }
                            })
                            .detach();
                        }
                        Err(e) => {
                            debug!("accept failed: {e}");
                            glommio::timer::sleep(Duration::from_millis(20)).await;
                        }
                    }
                }
            };
            future::or(accept, stop.wait()).await;
        }
    })?;
    info!(
        "SOCKS5 listening on {} -> AnyTLS server {server} ({} executor(s) on CPU(s) {cpus:?})",
        executors.local_addr(),
        cpus.len()
    );
    while !stop.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(50));
    }
    info!("signal received: stopping");
    drop(executors);
    Ok(())
}
