//! anytls-server: flags -> [`ServerConfig`] -> [`Server`], then waits for a signal.

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anytls::cli::Fatal;
use anytls::config::{self, parse_users, Limits, Reloadable, ServerConfig};
use anytls::pool::{self, PoolConfig, PoolKind};
use anytls::proto::auth::Users;
use anytls::proto::PaddingScheme;
use anytls::runtime;
use anytls::server::{self, Server};
use anytls::tls::ServerTls;
use clap::Parser;
use log::{info, warn};

/// A thread-per-core AnyTLS server (io_uring via glommio, TLS via rustls).
///
/// Clients (anytls-go, sing-box, mihomo) connect with TLS, authenticate with
/// sha256(password) and multiplex proxied TCP streams over the session.
/// Log verbosity comes from RUST_LOG (default: info).
#[derive(Parser, Debug)]
#[command(version)]
struct Args {
    /// Address to listen on (every core binds it with SO_REUSEPORT).
    #[arg(short = 'l', long = "listen", default_value = "0.0.0.0:8443")]
    listen: String,

    /// Password clients authenticate with; repeat for several users
    /// (named password-1, password-2, ...).
    #[arg(short = 'p', long = "password", required_unless_present = "users")]
    password: Vec<String>,

    /// File of `name:password` lines (# comments allowed); reloaded on SIGHUP.
    #[arg(long, value_name = "FILE")]
    users: Option<PathBuf>,

    /// TCP address (an ordinary web server) that connections failing
    /// authentication are handed to, with the bytes already read, so probers see
    /// that service. Without it they are closed without a reply.
    #[arg(long, value_name = "ADDR")]
    fallback: Option<String>,

    /// Padding scheme file sent to clients (default: the reference's default
    /// scheme); reloaded on SIGHUP.
    #[arg(long = "padding-scheme", value_name = "FILE")]
    padding_scheme: Option<PathBuf>,

    /// PEM certificate chain. Without --cert/--key a self-signed certificate is
    /// generated at start and its SHA-256 fingerprint logged.
    #[arg(long, value_name = "FILE", requires = "key")]
    cert: Option<PathBuf>,

    /// PEM private key for --cert.
    #[arg(long, value_name = "FILE", requires = "cert")]
    key: Option<PathBuf>,

    /// Executors to run, one pinned per CPU [default: every CPU this process may use].
    #[arg(long)]
    cores: Option<usize>,

    /// Seconds allowed for the TLS handshake plus the authentication preamble.
    #[arg(long, value_name = "SECS", default_value_t = config::DEFAULT_HANDSHAKE_TIMEOUT.as_secs())]
    handshake_timeout: u64,

    /// Seconds allowed to resolve and connect to a stream's target.
    #[arg(long, value_name = "SECS", default_value_t = config::DEFAULT_CONNECT_TIMEOUT.as_secs())]
    connect_timeout: u64,

    /// Seconds a session with no stream and no frame stays open.
    #[arg(long, value_name = "SECS", default_value_t = config::DEFAULT_SESSION_IDLE_TIMEOUT.as_secs())]
    idle_session_timeout: u64,

    /// Seconds a stream may block its session (its 256 KiB upload buffer full) while
    /// its target accepts no byte; then the stream is closed.
    #[arg(long, value_name = "SECS", default_value_t = config::DEFAULT_STREAM_STALL_TIMEOUT.as_secs())]
    stream_stall_timeout: u64,

    /// Seconds a stream may move no byte either way before it is closed.
    #[arg(long, value_name = "SECS", default_value_t = config::DEFAULT_STREAM_IDLE_TIMEOUT.as_secs())]
    stream_idle_timeout: u64,

    /// Seconds a write to a client (data or control frame) may make no progress
    /// before the session is closed.
    #[arg(long, value_name = "SECS", default_value_t = config::DEFAULT_WRITE_TIMEOUT.as_secs())]
    write_timeout: u64,

    /// Seconds a UDP-over-TCP association lives without a datagram either way.
    #[arg(long, value_name = "SECS", default_value_t = config::DEFAULT_UOT_IDLE_TIMEOUT.as_secs())]
    uot_idle_timeout: u64,

    /// Streams one session may have open at once; past it a new stream is refused
    /// (SYNACK with the reason, then FIN) and the session goes on.
    #[arg(long, value_name = "N", default_value_t = Limits::default().streams_per_session)]
    max_streams_per_session: usize,

    /// Streams of one session that may wait for their address or dial at once.
    #[arg(long, value_name = "N", default_value_t = Limits::default().dialing_per_session)]
    max_dialing_per_session: usize,

    /// UDP-over-TCP associations one session may have open at once.
    #[arg(long, value_name = "N", default_value_t = Limits::default().uot_per_session)]
    max_uot_per_session: usize,

    /// KiB one session may hold for its targets across all its streams, in our
    /// buffers and in the outbound sockets' kernel queues; past it the session
    /// stops reading until they drain, and a stream whose target takes nothing
    /// for --stream-stall-timeout is closed.
    #[arg(long, value_name = "KIB", default_value_t = (Limits::default().buffered_per_session / 1024) as u64)]
    max_buffered_per_session_kib: u64,

    /// Sessions one user may have open at once (all cores); past it a new
    /// connection is closed after authentication.
    #[arg(long, value_name = "N", default_value_t = Limits::default().sessions_per_user)]
    max_sessions_per_user: usize,

    /// Sessions one client IP address may have open at once (all cores).
    #[arg(long, value_name = "N", default_value_t = Limits::default().sessions_per_address)]
    max_sessions_per_ip: usize,

    /// Milliseconds a new stream's target address may take to arrive whole; then
    /// the stream is refused.
    #[arg(long, value_name = "MS", default_value_t = Limits::default().address_timeout.as_millis() as u64)]
    address_timeout_ms: u64,

    /// Milliseconds a dial may take before the client is answered SYNACK anyway
    /// (clients give up on the whole session after 3 s); a dial that then fails
    /// ends the stream with FIN.
    #[arg(long, value_name = "MS", default_value_t = Limits::default().synack_deadline.as_millis() as u64)]
    synack_deadline_ms: u64,

    /// Refuse targets in this range (CIDR, e.g. 10.0.0.0/8; repeatable), checked on
    /// every resolved address. The server's own ports are always refused.
    #[arg(long, value_name = "CIDR")]
    deny: Vec<ipnet::IpNet>,

    /// Refuse loopback, private, link-local and CGNAT targets (IPv4 and IPv6).
    #[arg(long)]
    deny_private: bool,

    /// Outbound connection pool: none (or direct: dial every time, like the
    /// reference server), lock, lockfree or highperf. Spares help only when streams
    /// keep going to the same few targets.
    #[arg(long, value_name = "KIND", default_value = "none")]
    pool_type: PoolKind,

    /// Warm spare connections kept per target asked for within --max-idle-time-secs.
    #[arg(long, value_name = "N", default_value_t = pool::DEFAULT_MIN_IDLE)]
    min_idle_connections: usize,

    /// Outbound connections (in use + spares + UDP sockets) held at most, whatever
    /// the pool kind; at the cap the oldest spare is closed, and with none a
    /// stream is refused [default: 65536, or less so that a quarter of the
    /// descriptor limit stays free for sessions].
    #[arg(long, value_name = "N")]
    max_outbound_connections: Option<usize>,

    /// Kernel send buffer (SO_SNDBUF, KiB) of each connection to a target; bounds
    /// what targets that read slowly make the kernel hold. 0: kernel autotuning.
    #[arg(long, value_name = "KIB", default_value_t = (pool::DEFAULT_SEND_BUFFER / 1024) as u64)]
    outbound_send_buffer_kib: u64,

    /// Seconds a spare may wait before it is closed; targets not asked for within
    /// this time are no longer refilled.
    #[arg(long, value_name = "SECS", default_value_t = pool::DEFAULT_MAX_IDLE_TIME.as_secs())]
    max_idle_time_secs: u64,

    /// Address of a Prometheus metrics endpoint (HTTP, path /metrics), e.g.
    /// 127.0.0.1:9100. Off by default.
    #[arg(long, value_name = "ADDR")]
    metrics: Option<SocketAddr>,

    /// Seconds between statistics log lines (0 turns them off).
    #[arg(long, value_name = "SECS", default_value_t = 60)]
    stats_interval: u64,
}

/// How often memory freed by closed connections is handed back to the kernel.
const MEMORY_TRIM_INTERVAL: Duration = Duration::from_secs(2);

fn main() -> ExitCode {
    anytls::cli::main_with(|| serve(Args::parse()))
}

fn at_least_one<T: PartialOrd + From<u8>>(flag: &str, value: T) -> Result<T, Fatal> {
    if value < T::from(1) {
        return Err(Fatal(format!("--{flag} must be at least 1")));
    }
    Ok(value)
}

fn seconds(flag: &str, secs: u64) -> Result<Duration, Fatal> {
    if secs == 0 {
        return Err(Fatal(format!("--{flag} must be at least 1 second")));
    }
    Ok(Duration::from_secs(secs))
}

/// The users from every -p and the --users file.
fn load_users(args: &Args) -> Result<Users, Fatal> {
    let mut users = Users::default();
    for (index, password) in args.password.iter().enumerate() {
        if password.is_empty() {
            return Err(Fatal("--password must not be empty".into()));
        }
        let name = if args.password.len() == 1 && args.users.is_none() {
            "default".to_owned()
        } else {
            format!("password-{}", index + 1)
        };
        users.add(&name, password);
    }
    if let Some(path) = &args.users {
        let text = std::fs::read_to_string(path)
            .map_err(|e| Fatal(format!("cannot read users file {}: {e}", path.display())))?;
        parse_users(&text, &mut users)
            .map_err(|e| Fatal(format!("invalid users file {}: {e}", path.display())))?;
    }
    Ok(users)
}

/// The padding scheme from --padding-scheme, or the default.
fn load_padding(args: &Args) -> Result<PaddingScheme, Fatal> {
    match &args.padding_scheme {
        None => Ok(PaddingScheme::default()),
        Some(path) => {
            let raw = std::fs::read(path).map_err(|e| {
                Fatal(format!(
                    "cannot read padding scheme {}: {e}",
                    path.display()
                ))
            })?;
            PaddingScheme::parse(&raw)
                .map_err(|e| Fatal(format!("invalid padding scheme {}: {e}", path.display())))
        }
    }
}

/// SIGHUP: re-reads the users and padding scheme files; a bad file keeps the old
/// value and says why.
fn reload(args: &Args, users: &Reloadable<Users>, padding: &Reloadable<PaddingScheme>) {
    if args.users.is_some() {
        match load_users(args) {
            Ok(loaded) => {
                info!("SIGHUP: reloaded {} user(s)", loaded.len());
                users.store(loaded);
            }
            Err(Fatal(why)) => warn!("SIGHUP: keeping the current users: {why}"),
        }
    }
    if args.padding_scheme.is_some() {
        match load_padding(args) {
            Ok(loaded) => {
                info!(
                    "SIGHUP: reloaded the padding scheme (md5 {})",
                    loaded.md5_hex()
                );
                padding.store(loaded);
            }
            Err(Fatal(why)) => warn!("SIGHUP: keeping the current padding scheme: {why}"),
        }
    }
}

/// `[User Stats] {"alice":{"up":1,"down":2}}`: bytes per user as JSON.
fn user_stats_line(users: &std::collections::BTreeMap<String, (u64, u64)>) -> String {
    let map: serde_json::Map<String, serde_json::Value> = users
        .iter()
        .map(|(user, (up, down))| (user.clone(), serde_json::json!({ "up": up, "down": down })))
        .collect();
    format!("[User Stats] {}", serde_json::Value::Object(map))
}

/// `kib` KiB in bytes, refusing values that do not fit.
fn kibibytes(flag: &str, kib: u64) -> Result<usize, Fatal> {
    usize::try_from(kib)
        .ok()
        .and_then(|kib| kib.checked_mul(1024))
        .ok_or_else(|| Fatal(format!("--{flag} {kib} is too large")))
}

fn build_config(args: &Args, descriptor_limit: u64) -> Result<(ServerConfig, String), Fatal> {
    let listen: SocketAddr = args
        .listen
        .to_socket_addrs()
        .map_err(|e| Fatal(format!("invalid --listen {}: {e}", args.listen)))?
        .next()
        .ok_or_else(|| Fatal(format!("--listen {} resolves to no address", args.listen)))?;
    let padding = load_padding(args)?;
    let tls = match (&args.cert, &args.key) {
        (Some(cert), Some(key)) => ServerTls::from_pem_files(cert, key)?,
        _ => ServerTls::self_signed()?,
    };
    let certificate_note = match &args.cert {
        Some(cert) => format!("certificate {} (SHA-256 {})", cert.display(), tls.fingerprint),
        None => format!(
            "self-signed certificate for localhost, SHA-256 fingerprint {} (clients need insecure=1 or this pin)",
            tls.fingerprint
        ),
    };
    let allowed = config::allowed_cpus();
    let cpus: Vec<usize> = match args.cores {
        None => allowed.clone(),
        Some(0) => return Err(Fatal("--cores must be at least 1".into())),
        Some(n) if n > allowed.len() => {
            return Err(Fatal(format!(
                "--cores {n} but this process may run on only {} CPU(s): {allowed:?}",
                allowed.len()
            )))
        }
        Some(n) => allowed[..n].to_vec(),
    };
    let users = load_users(args)?;
    let fallback = match &args.fallback {
        None => None,
        Some(text) => Some(
            text.to_socket_addrs()
                .map_err(|e| Fatal(format!("invalid --fallback {text}: {e}")))?
                .next()
                .ok_or_else(|| Fatal(format!("--fallback {text} resolves to no address")))?,
        ),
    };
    let config = ServerConfig {
        listen,
        users: Reloadable::new(users),
        padding: Reloadable::new(padding),
        fallback,
        metrics: args.metrics,
        tls: tls.config,
        cpus,
        handshake_timeout: seconds("handshake-timeout", args.handshake_timeout)?,
        connect_timeout: seconds("connect-timeout", args.connect_timeout)?,
        session_idle_timeout: seconds("idle-session-timeout", args.idle_session_timeout)?,
        stream_stall_timeout: seconds("stream-stall-timeout", args.stream_stall_timeout)?,
        stream_idle_timeout: seconds("stream-idle-timeout", args.stream_idle_timeout)?,
        write_timeout: seconds("write-timeout", args.write_timeout)?,
        uot_idle_timeout: seconds("uot-idle-timeout", args.uot_idle_timeout)?,
        pool: PoolConfig {
            kind: args.pool_type,
            min_idle: args.min_idle_connections,
            max_outbound: match args.max_outbound_connections {
                Some(cap) => at_least_one("max-outbound-connections", cap)?,
                None => pool::default_max_outbound(descriptor_limit),
            },
            max_idle_time: seconds("max-idle-time-secs", args.max_idle_time_secs)?,
            send_buffer: kibibytes("outbound-send-buffer-kib", args.outbound_send_buffer_kib)?,
        },
        deny: args.deny.clone(),
        deny_private: args.deny_private,
        limits: Limits {
            streams_per_session: at_least_one(
                "max-streams-per-session",
                args.max_streams_per_session,
            )?,
            dialing_per_session: at_least_one(
                "max-dialing-per-session",
                args.max_dialing_per_session,
            )?,
            uot_per_session: at_least_one("max-uot-per-session", args.max_uot_per_session)?,
            buffered_per_session: at_least_one(
                "max-buffered-per-session-kib",
                kibibytes(
                    "max-buffered-per-session-kib",
                    args.max_buffered_per_session_kib,
                )?,
            )?,
            sessions_per_user: at_least_one("max-sessions-per-user", args.max_sessions_per_user)?,
            sessions_per_address: at_least_one("max-sessions-per-ip", args.max_sessions_per_ip)?,
            address_timeout: Duration::from_millis(at_least_one(
                "address-timeout-ms",
                args.address_timeout_ms,
            )?),
            synack_deadline: Duration::from_millis(at_least_one(
                "synack-deadline-ms",
                args.synack_deadline_ms,
            )?),
        },
    };
    Ok((config, certificate_note))
}

fn serve(args: Args) -> Result<(), Fatal> {
    let descriptor_limit = match runtime::preflight::raise_descriptor_limit() {
        Ok((before, after)) => {
            if before < after {
                info!("descriptor limit raised from {before} to its hard limit {after}");
            } else {
                info!("descriptor limit {after}");
            }
            after
        }
        Err(e) => {
            warn!("cannot read or raise the descriptor limit: {e}");
            1024
        }
    };
    let (config, certificate_note) = build_config(&args, descriptor_limit)?;
    info!(
        "outbound connections capped at {} (descriptor limit {descriptor_limit})",
        config.pool.max_outbound
    );
    let cpus = config.cpus.clone();
    let (users, padding) = (config.users.clone(), config.padding.clone());
    // Register signal handlers before any thread starts so every thread inherits them.
    let stop = Arc::new(AtomicBool::new(false));
    let hangup = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(signal, stop.clone())?;
    }
    signal_hook::flag::register(signal_hook::consts::SIGHUP, hangup.clone())?;
    let server = Server::start(config)?;
    info!("{certificate_note}");
    server::log_started(&server, &cpus);
    if let Some(addr) = server.metrics_addr() {
        info!("metrics on http://{addr}/metrics");
    }
    let interval = Duration::from_secs(args.stats_interval);
    let mut next_report = Instant::now() + interval;
    let mut next_trim = Instant::now() + MEMORY_TRIM_INTERVAL;
    while !stop.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(50));
        if Instant::now() >= next_trim {
            anytls::cli::return_free_memory();
            next_trim = Instant::now() + MEMORY_TRIM_INTERVAL;
        }
        if hangup.swap(false, Ordering::Relaxed) {
            reload(&args, &users, &padding);
        }
        if args.stats_interval > 0 && Instant::now() >= next_report {
            info!("{}", server.stats().snapshot());
            info!("{}", server.pool().stats());
            info!("{}", server.pool().status_line());
            info!("{}", user_stats_line(&server.stats().user_bytes()));
            next_report += interval;
        }
    }
    info!("signal received: closing sessions");
    server.shutdown();
    info!("stopped");
    Ok(())
}
