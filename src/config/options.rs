//! The server's options as an operator gives them (flags today), and how they
//! become a checked [`ServerConfig`]: every value is validated here, files (users,
//! padding scheme, certificate) are read here, and [`Reloader`] re-reads the
//! reloadable ones on SIGHUP. The binary only parses arguments into
//! [`ServerOptions`]; tests build configs the same way.

use std::collections::BTreeSet;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use log::{info, warn};
use thiserror::Error;

use clap::parser::ValueSource;
use clap::ArgMatches;
use serde::{Deserialize, Serialize};

use super::file::{self, FileError, User};
use super::{
    parse_users, Limits, MetricsConfig, ReloadCounts, Reloadable, ServerConfig, UsersFileError,
};
use crate::accounts::{Accounts, Changes};
use crate::limits::GuessRules;
use crate::node::NodeSettings;
use crate::pool::{self, PoolConfig, PoolKind};
use crate::proto::error::PaddingError;
use crate::proto::proxy_protocol;
use crate::proto::PaddingScheme;
use crate::tls::{CertificateSlot, LoadedPair, ServerTls, TlsError};

/// Why the options do not make a configuration. Each is one line for the operator.
#[derive(Debug, Error)]
pub enum ConfigError {
    /// A count that must be at least 1 was 0.
    #[error("--{0} must be at least 1")]
    Zero(&'static str),
    /// A duration in seconds was 0.
    #[error("--{0} must be at least 1 second")]
    ZeroSeconds(&'static str),
    /// A size that does not fit in memory.
    #[error("--{flag} {value} is too large")]
    TooLarge {
        /// The flag.
        flag: &'static str,
        /// Its value.
        value: u64,
    },
    /// An address that does not resolve.
    #[error("invalid --{flag} {text}: {why}")]
    Address {
        /// The flag.
        flag: &'static str,
        /// What was given.
        text: String,
        /// Why it is not an address.
        why: String,
    },
    /// `--cores` asks for no CPU, or for more than this process may use.
    #[error("--cores {asked} but this process may run on only {} CPU(s): {allowed:?}", allowed.len())]
    Cores {
        /// CPUs asked for.
        asked: usize,
        /// CPUs this process may run on.
        allowed: Vec<usize>,
    },
    /// Neither `-p`, `--users` nor the config file's `users` named anyone.
    #[error("no users: give -p PASSWORD, --users FILE or users in the config file")]
    NoUsers,
    /// An empty `--password`.
    #[error("--password must not be empty")]
    EmptyPassword,
    /// The users cannot be told apart (two share a name or a password).
    #[error("{0}")]
    Accounts(#[from] crate::accounts::AccountsError),
    /// Node mode lacks one of the panel's settings.
    #[error("node mode (--panel-url) needs --{0}")]
    NodeNeeds(&'static str),
    /// A value that must not be empty was (the flag is named).
    #[error("--{0} must not be empty")]
    Empty(&'static str),
    /// An `--acme-*` flag without `--acme-domain`.
    #[error("--{0} needs --acme-domain")]
    AcmeNeedsDomain(&'static str),
    /// The ACME state or settings cannot be used.
    #[error("{0}")]
    Acme(#[from] crate::acme::AcmeError),
    /// An ALPN protocol name longer than TLS allows.
    #[error("--fallback-alpn {0}: an ALPN protocol name is at most 255 bytes")]
    AlpnTooLong(String),
    /// Two flags (or their config file keys) that exclude each other were both given.
    #[error("--{0} and --{1} exclude each other: give one")]
    Exclusive(&'static str, &'static str),
    /// `--metrics` on an address other hosts can reach, with no token and no
    /// allow-list: anyone could read the users' names and traffic.
    #[error(
        "--metrics {0} is reachable from other hosts: give --metrics-token (or \
         --metrics-token-file) or --metrics-allow, or listen on a loopback address"
    )]
    MetricsExposed(SocketAddr),
    /// A file could not be read.
    #[error("cannot read {what} {}: {source}", path.display())]
    Read {
        /// What the file holds.
        what: &'static str,
        /// Its path.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The users file is malformed.
    #[error("invalid users file {}: {source}", path.display())]
    Users {
        /// Its path.
        path: PathBuf,
        /// What is wrong.
        source: UsersFileError,
    },
    /// The padding scheme file is malformed.
    #[error("invalid padding scheme {}: {source}", path.display())]
    Padding {
        /// Its path.
        path: PathBuf,
        /// What is wrong.
        source: PaddingError,
    },
    /// The certificate or key cannot be used.
    #[error("{0}")]
    Tls(#[from] TlsError),
    /// The config file cannot be used.
    #[error("{0}")]
    File(#[from] FileError),
    /// A config file value that does not parse.
    #[error("config {key}: {why}")]
    FileValue {
        /// The key.
        key: String,
        /// Why.
        why: String,
    },
}

impl ConfigError {
    /// What is wrong, without the key.
    fn why(&self) -> String {
        match self {
            ConfigError::FileValue { why, .. } => why.clone(),
            other => other.to_string(),
        }
    }
}

/// Everything an operator can set, as given: each field is at once a flag and
/// the config file key of the same name (`_` for `-`), or the sing-box name its
/// `serde` attribute gives. Adding an option is one field here.
#[derive(clap::Args, Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerOptions {
    /// Config file: TOML with the flags' names (and sing-box's `users`,
    /// `padding_scheme`, `certificate_path`, `key_path`), or a sing-box JSON config
    /// whose anytls inbound is served. Flags given here win over the file; SIGHUP
    /// re-reads it. See contrib/server.toml.
    #[arg(short = 'c', long, value_name = "FILE")]
    #[serde(skip)]
    pub config: Option<PathBuf>,

    /// Address to listen on (every core binds it with SO_REUSEPORT).
    #[arg(short = 'l', long = "listen", default_value = "0.0.0.0:8443")]
    pub listen: String,

    /// Password clients authenticate with (one user, named default); repeat
    /// for several users (named password-1, password-2, ...).
    #[arg(short = 'p', long = "password", required_unless_present_any = ["users", "config", "panel_url"])]
    #[serde(skip)]
    pub password: Vec<String>,

    /// Users from the config file's `users = [{ name, password }]`.
    #[arg(skip)]
    #[serde(rename = "users")]
    pub named_users: Vec<User>,

    /// The padding scheme's lines from the config file's `padding_scheme`.
    #[arg(skip)]
    #[serde(rename = "padding_scheme")]
    pub padding_lines: Option<Vec<String>>,

    /// File of `name:password` lines (# comments allowed); reloaded on SIGHUP.
    #[arg(long, value_name = "FILE")]
    #[serde(rename = "users_file")]
    pub users: Option<PathBuf>,

    /// TCP address (an ordinary web server) that connections failing
    /// authentication are handed to, with the bytes already read, so probers see
    /// that service. Without it they are closed without a reply.
    #[arg(long, value_name = "ADDR")]
    pub fallback: Option<String>,

    /// Write a PROXY protocol header (v1: text, v2: binary) to the fallback before
    /// the client's bytes, so it sees the client's address. Off by default.
    #[arg(long, value_name = "VERSION")]
    #[serde(default, with = "text::optional")]
    pub fallback_proxy_protocol: Option<proxy_protocol::Version>,

    /// ALPN protocols the TLS layer selects from, in order of preference
    /// (comma-separated), as the web site behind --fallback would: a prober offering
    /// `h2,http/1.1` then sees what that site's own TLS would choose. A client
    /// offering none of them still connects, with no protocol selected. Empty: never
    /// select one.
    #[arg(
        long,
        value_name = "LIST",
        value_delimiter = ',',
        default_value = "http/1.1"
    )]
    pub fallback_alpn: Vec<String>,

    /// Shape the server's first writes of each session with the padding scheme, as
    /// clients shape theirs (record sizes from the scheme, padding to fill them), so
    /// the first records of a response do not show their own sizes.
    #[arg(long, value_name = "BOOL", default_value_t = true, action = clap::ArgAction::Set)]
    pub downlink_padding: bool,

    /// Padding scheme file sent to clients (default: the reference's default
    /// scheme); reloaded on SIGHUP.
    #[arg(long = "padding-scheme", value_name = "FILE")]
    #[serde(rename = "padding_scheme_file")]
    pub padding_scheme: Option<PathBuf>,

    /// PEM certificate chain. Without --cert/--key a self-signed certificate is
    /// generated at start and its SHA-256 fingerprint logged.
    #[arg(long, value_name = "FILE", requires = "key")]
    #[serde(rename = "certificate_path")]
    pub cert: Option<PathBuf>,

    /// PEM private key for --cert.
    #[arg(long, value_name = "FILE", requires = "cert")]
    #[serde(rename = "key_path")]
    pub key: Option<PathBuf>,

    /// Where the self-signed certificate (served without --cert or ACME) is
    /// kept, so its fingerprint survives restarts [default: self-signed.pem in
    /// $STATE_DIRECTORY, which the systemd unit sets; else made at each start].
    #[arg(long, value_name = "FILE")]
    pub self_signed_file: Option<PathBuf>,

    /// Get the certificate for this name from an ACME CA and renew it
    /// (repeatable: one certificate for all). The CA validates by TLS-ALPN-01 on
    /// --listen (port 443 must reach it) or HTTP-01 on --acme-http. Excludes
    /// --cert/--key.
    #[arg(long, value_name = "NAME")]
    pub acme_domain: Vec<String>,

    /// Contact address for the ACME account (expiry warnings from the CA).
    #[arg(long, value_name = "EMAIL")]
    pub acme_email: Option<String>,

    /// The ACME CA's directory URL [default: Let's Encrypt's production directory].
    #[arg(long, value_name = "URL")]
    pub acme_directory: Option<String>,

    /// PEM file of the only CA trusted for --acme-directory's HTTPS (a private
    /// or test CA).
    #[arg(long, value_name = "FILE")]
    pub acme_directory_ca: Option<PathBuf>,

    /// Where the ACME account, certificate and key are kept (mode 0600), reused
    /// across restarts [default: acme under $STATE_DIRECTORY, or under the
    /// working directory].
    #[arg(long, value_name = "DIR")]
    pub acme_state_dir: Option<PathBuf>,

    /// Answer the CA's HTTP-01 challenge on this address (port 80, usually)
    /// instead of TLS-ALPN-01 on --listen, for a node behind something that
    /// strips ALPN.
    #[arg(long, value_name = "ADDR")]
    pub acme_http: Option<String>,

    /// Until ACME issues the first certificate, serve a self-signed one instead
    /// of refusing handshakes.
    #[arg(long)]
    pub acme_self_signed: bool,

    /// Executors to run, one pinned per CPU [default: every CPU this process may use].
    #[arg(long)]
    pub cores: Option<usize>,

    /// Seconds allowed for the TLS handshake plus the authentication preamble.
    #[arg(long, value_name = "SECS", default_value_t = super::DEFAULT_HANDSHAKE_TIMEOUT.as_secs())]
    pub handshake_timeout: u64,

    /// Seconds allowed to resolve and connect to a stream's target.
    #[arg(long, value_name = "SECS", default_value_t = super::DEFAULT_CONNECT_TIMEOUT.as_secs())]
    pub connect_timeout: u64,

    /// Seconds a session with no stream and no frame stays open.
    #[arg(long, value_name = "SECS", default_value_t = super::DEFAULT_SESSION_IDLE_TIMEOUT.as_secs())]
    pub idle_session_timeout: u64,

    /// Seconds a stream may block its session (its 256 KiB upload buffer full) while
    /// its target accepts no byte; then the stream is closed.
    #[arg(long, value_name = "SECS", default_value_t = super::DEFAULT_STREAM_STALL_TIMEOUT.as_secs())]
    pub stream_stall_timeout: u64,

    /// Seconds a stream may move no byte either way before it is closed.
    #[arg(long, value_name = "SECS", default_value_t = super::DEFAULT_STREAM_IDLE_TIMEOUT.as_secs())]
    pub stream_idle_timeout: u64,

    /// Seconds a write to a client (data or control frame) may make no progress
    /// before the session is closed.
    #[arg(long, value_name = "SECS", default_value_t = super::DEFAULT_WRITE_TIMEOUT.as_secs())]
    pub write_timeout: u64,

    /// Seconds a UDP-over-TCP association lives without a datagram either way.
    #[arg(long, value_name = "SECS", default_value_t = super::DEFAULT_UOT_IDLE_TIMEOUT.as_secs())]
    pub uot_idle_timeout: u64,

    /// Streams one session may have open at once; past it a new stream is refused
    /// (SYNACK with the reason, then FIN) and the session goes on.
    #[arg(long, value_name = "N", default_value_t = Limits::default().streams_per_session)]
    pub max_streams_per_session: usize,

    /// Streams of one session that may wait for their address or dial at once.
    #[arg(long, value_name = "N", default_value_t = Limits::default().dialing_per_session)]
    pub max_dialing_per_session: usize,

    /// UDP-over-TCP associations one session may have open at once.
    #[arg(long, value_name = "N", default_value_t = Limits::default().uot_per_session)]
    pub max_uot_per_session: usize,

    /// KiB one session may hold for its targets across all its streams, in our
    /// buffers and in the outbound sockets' kernel queues; past it the session
    /// stops reading until they drain, and a stream whose target takes nothing
    /// for --stream-stall-timeout is closed.
    #[arg(long, value_name = "KIB", default_value_t = (Limits::default().buffered_per_session / 1024) as u64)]
    pub max_buffered_per_session_kib: u64,

    /// MiB all sessions of one user may hold for their targets (all cores, ours
    /// and the kernel's); past it the user's sessions stop reading, and streams
    /// whose targets take nothing for --stream-stall-timeout are closed.
    #[arg(long, value_name = "MIB", default_value_t = (Limits::default().buffered_per_user >> 20) as u64)]
    pub max_buffered_per_user_mib: u64,

    /// MiB all sessions may hold for their targets, each core its share; past
    /// it a core's sessions stop reading the same way.
    #[arg(long, value_name = "MIB", default_value_t = (Limits::default().buffered_total >> 20) as u64)]
    pub max_buffered_total_mib: u64,

    /// Sessions one user may have open at once (all cores); past it a new
    /// connection is closed after authentication.
    #[arg(long, value_name = "N", default_value_t = Limits::default().sessions_per_user)]
    pub max_sessions_per_user: usize,

    /// Sessions one client IP address may have open at once (all cores).
    #[arg(long, value_name = "N", default_value_t = Limits::default().sessions_per_address)]
    pub max_sessions_per_ip: usize,

    /// Connections not yet authenticated (TLS handshake, preamble) or handed to
    /// --fallback, all cores; past it a new connection is closed at once
    /// [default: 4096, or an eighth of the descriptor limit if less, so that
    /// descriptors stay for authenticated users].
    #[arg(long, value_name = "N")]
    pub max_pending: Option<usize>,

    /// Of those, from one client subnet (/24 for IPv4, /64 for IPv6).
    #[arg(long, value_name = "N", default_value_t = Limits::default().pending_per_subnet)]
    pub max_pending_per_subnet: usize,

    /// Wrong passwords one client address (an IPv6 client: its /64) may send
    /// within --wrong-password-window-secs; past it, its connections are refused
    /// without their password being checked (handed to --fallback if set), for
    /// --wrong-password-block-secs, twice as long each time it is blocked again
    /// within an hour, up to an hour. 0: never.
    #[arg(long, value_name = "N", default_value_t = Limits::default().guessing.limit)]
    pub max_wrong_passwords: u32,

    /// The window --max-wrong-passwords counts in.
    #[arg(long, value_name = "SECS", default_value_t = Limits::default().guessing.window.as_secs())]
    pub wrong_password_window_secs: u64,

    /// How long an address is first blocked for wrong passwords.
    #[arg(long, value_name = "SECS", default_value_t = Limits::default().guessing.block.as_secs())]
    pub wrong_password_block_secs: u64,

    /// UDP-over-TCP datagrams one association may send per second (a second's
    /// worth at once after a pause); past it they are dropped.
    #[arg(long, value_name = "N", default_value_t = Limits::default().datagrams_per_sec)]
    pub max_datagrams_per_sec: u32,

    /// Milliseconds a new stream's target address may take to arrive whole; then
    /// the stream is refused.
    #[arg(long, value_name = "MS", default_value_t = Limits::default().address_timeout.as_millis() as u64)]
    pub address_timeout_ms: u64,

    /// Milliseconds a dial may take before the client is answered SYNACK anyway
    /// (clients give up on the whole session after 3 s); a dial that then fails
    /// ends the stream with FIN.
    #[arg(long, value_name = "MS", default_value_t = Limits::default().synack_deadline.as_millis() as u64)]
    pub synack_deadline_ms: u64,

    /// Refuse targets in this range (CIDR, e.g. 10.0.0.0/8; repeatable), checked on
    /// every resolved address. The server's own ports are always refused.
    #[arg(long, value_name = "CIDR")]
    pub deny: Vec<ipnet::IpNet>,

    /// Refuse loopback, private, link-local and CGNAT targets (IPv4 and IPv6).
    #[arg(long)]
    pub deny_private: bool,

    /// Outbound connection pool: none (or direct: dial every time, like the
    /// reference server), lock, lockfree or highperf. Spares help only when streams
    /// keep going to the same few targets.
    #[arg(long, value_name = "KIND", default_value = "none")]
    #[serde(with = "text")]
    pub pool_type: PoolKind,

    /// Warm spare connections kept per target asked for within --max-idle-time-secs.
    #[arg(long, value_name = "N", default_value_t = pool::DEFAULT_MIN_IDLE)]
    pub min_idle_connections: usize,

    /// Outbound connections (in use + spares + UDP sockets) held at most, whatever
    /// the pool kind; at the cap the oldest spare is closed, and with none a
    /// stream is refused [default: 65536, or less so that a quarter of the
    /// descriptor limit stays free for sessions].
    #[arg(long, value_name = "N")]
    pub max_outbound_connections: Option<usize>,

    /// Kernel send buffer (SO_SNDBUF, KiB) of each connection to a target; bounds
    /// what targets that read slowly make the kernel hold. 0: kernel autotuning.
    #[arg(long, value_name = "KIB", default_value_t = (pool::DEFAULT_SEND_BUFFER / 1024) as u64)]
    pub outbound_send_buffer_kib: u64,

    /// Seconds a spare may wait before it is closed; targets not asked for within
    /// this time are no longer refilled.
    #[arg(long, value_name = "SECS", default_value_t = pool::DEFAULT_MAX_IDLE_TIME.as_secs())]
    pub max_idle_time_secs: u64,

    /// Address of a Prometheus metrics endpoint (HTTP, path /metrics), e.g.
    /// 127.0.0.1:9100. Off by default.
    #[arg(long, value_name = "ADDR")]
    pub metrics: Option<SocketAddr>,

    /// Bearer token every scrape must present (`Authorization: Bearer TOKEN`);
    /// others are answered 401. Visible in `ps`: prefer --metrics-token-file.
    #[arg(long, value_name = "TOKEN", conflicts_with = "metrics_token_file")]
    pub metrics_token: Option<String>,

    /// File holding the --metrics-token (surrounding whitespace ignored).
    #[arg(long, value_name = "FILE")]
    pub metrics_token_file: Option<PathBuf>,

    /// Only scrapers from this range (CIDR; repeatable) may connect to --metrics;
    /// others are closed without an answer [default: any].
    #[arg(long, value_name = "CIDR")]
    pub metrics_allow: Vec<ipnet::IpNet>,

    /// Seconds between statistics log lines (0 turns them off).
    #[arg(long, value_name = "SECS", default_value_t = 60)]
    pub stats_interval: u64,

    /// Host name (or address) clients reach the server by, for the share links
    /// logged at start [default: the listen address, unless it is a wildcard].
    #[arg(long, value_name = "HOST")]
    pub public_host: Option<String>,

    /// TLS server name the share links carry as `sni` [default: --public-host
    /// if it is a name, else the certificate's first DNS name].
    #[arg(long, value_name = "NAME")]
    pub server_name: Option<String>,

    /// Print each user's anytls:// link (with --qr, its QR code too) and exit.
    #[arg(long)]
    #[serde(skip)]
    pub print_links: bool,

    /// Also print the share links as QR codes (on standard output).
    #[arg(long)]
    #[serde(skip)]
    pub qr: bool,

    /// Node mode: the panel's base URL (Xboard, V2board: what V2bX calls
    /// ApiHost); the node calls URL/api/v1/server/UniProxy/... for its port,
    /// SNI, padding scheme, routes and users, and reports traffic, online
    /// addresses and load there. Flags and the config file give the rest.
    #[arg(long, value_name = "URL", requires = "node_id")]
    pub panel_url: Option<String>,

    /// The panel's server token (Xboard: server_token). Visible in `ps`: prefer
    /// --panel-token-file or the environment.
    #[arg(
        long,
        value_name = "TOKEN",
        env = "ANYTLS_PANEL_TOKEN",
        hide_env_values = true,
        conflicts_with = "panel_token_file"
    )]
    pub panel_token: Option<String>,

    /// File holding the --panel-token (surrounding whitespace ignored).
    #[arg(long, value_name = "FILE")]
    pub panel_token_file: Option<PathBuf>,

    /// This node's id in the panel.
    #[arg(long, value_name = "N")]
    pub node_id: Option<u64>,

    /// Where node mode keeps the traffic not yet pushed, so a restart loses
    /// nothing [default: anytls-node-ID.json in $STATE_DIRECTORY, or else in
    /// the working directory].
    #[arg(long, value_name = "FILE")]
    pub panel_state_file: Option<PathBuf>,
}

/// The options as the command line gave them, and which flags it gave, so that
/// a config file fills in only the rest, at start and at every SIGHUP.
#[derive(Debug, Clone)]
pub struct Invocation {
    options: ServerOptions,
    given: BTreeSet<String>,
}

impl Invocation {
    /// `options` parsed from `matches`.
    pub fn new(options: ServerOptions, matches: &ArgMatches) -> Invocation {
        let given = matches
            .ids()
            .filter(|id| matches.value_source(id.as_str()) == Some(ValueSource::CommandLine))
            .map(|id| id.as_str().to_owned())
            .collect();
        Invocation { options, given }
    }

    /// Options with nothing from a command line: tests and embedders.
    pub fn from_options(options: ServerOptions) -> Invocation {
        Invocation {
            options,
            given: BTreeSet::new(),
        }
    }

    /// The options: the command line over the config file (read now), and the
    /// line to log about the file, if any.
    pub fn resolve(&self) -> Result<(ServerOptions, Option<String>), ConfigError> {
        let Some(path) = &self.options.config else {
            return Ok((self.options.clone(), None));
        };
        let loaded = file::load(path)?;
        for (key, value) in &loaded.file {
            ServerOptions::check_file_value(key, value).map_err(|message| FileError::Toml {
                path: path.clone(),
                line: loaded.line_of(key),
                message,
            })?;
        }
        let merged = self
            .options
            .merge_file(loaded.file, |flag| self.given.contains(flag))?;
        Ok((merged, loaded.note))
    }

    /// Resolves and checks everything (see [`ServerOptions::settle`]).
    pub fn settle(&self, descriptor_limit: u64) -> Result<Settled, ConfigError> {
        let (options, note) = self.resolve()?;
        if let Some(note) = note {
            info!("{note}");
        }
        let mut settled = options.settle(descriptor_limit)?;
        settled.reloader.invocation = self.clone();
        Ok(settled)
    }
}

/// A checked configuration, with what the operator should be told about it.
pub struct Settled {
    /// The configuration to start the server with.
    pub config: ServerConfig,
    /// Which certificate is served (its file or "self-signed"), with its SHA-256.
    pub certificate_note: String,
    /// Re-reads the reloadable files on SIGHUP.
    pub reloader: Reloader,
    /// Seconds between statistics lines (0: none).
    pub stats_interval: u64,
    /// Every user's name and password, for the share links.
    pub credentials: Vec<User>,
    /// `--public-host`, for the share links.
    pub public_host: Option<String>,
    /// `--server-name`, for the share links' `sni`.
    pub server_name: Option<String>,
    /// The certificate's first DNS name (not the self-signed one's), the links'
    /// `sni` when their host is an address.
    pub certificate_name: Option<String>,
    /// No certificate was given: the self-signed one is served.
    pub self_signed: bool,
    /// `--print-links`: print the links and exit.
    pub print_links: bool,
    /// ACME: what to keep issued and renewed (the ACME thread's settings).
    pub acme: Option<crate::acme::AcmeSettings>,
    /// `--qr`: print QR codes of the links too.
    pub qr: bool,
    /// Node mode: where the panel is and who this node is.
    pub node: Option<NodeSettings>,
}

impl ServerOptions {
    /// Checks every value and reads every file. `descriptor_limit` sets the default
    /// cap on outbound connections.
    pub fn settle(&self, descriptor_limit: u64) -> Result<Settled, ConfigError> {
        let listen = resolve("listen", &self.listen)?;
        let padding = self.load_padding()?;
        let acme = self.acme()?;
        let kept = match &acme {
            Some(acme) => crate::acme::kept_certificate(acme)?,
            None => None,
        };
        let self_signed_note = |tls: &ServerTls| {
            format!(
                "self-signed certificate for localhost, SHA-256 fingerprint {} (clients need insecure=1, or this pin: --pin-sha256 in our client, pin= in our links)",
                tls.fingerprint
            )
        };
        let (tls, certificate_note, self_signed) = match (&self.cert, &self.key, &acme, kept) {
            (Some(cert), Some(key), _, _) => {
                let tls = ServerTls::from_pem_files(cert, key)?;
                let note = format!(
                    "certificate {} (SHA-256 {})",
                    cert.display(),
                    tls.fingerprint
                );
                (tls, note, false)
            }
            (_, _, Some(acme), Some((pair, _))) => {
                let tls = ServerTls::from_pair(pair)?;
                let note = format!(
                    "the ACME certificate for {} kept in {} (SHA-256 {})",
                    acme.domains.join(", "),
                    acme.state_dir.display(),
                    tls.fingerprint
                );
                (tls, note, false)
            }
            (_, _, Some(acme), None) if !self.acme_self_signed => {
                let note = format!(
                    "no certificate yet for {}: handshakes are refused until ACME issues one (--acme-self-signed serves a self-signed one meanwhile)",
                    acme.domains.join(", ")
                );
                (ServerTls::waiting()?, note, false)
            }
            _ => {
                let kept = self
                    .self_signed_file
                    .clone()
                    .or_else(default_self_signed_file)
                    .map(|path| (LoadedPair::self_signed_kept(&path), path));
                let (tls, kept_note) = match kept {
                    Some((Ok((pair, made)), path)) => (
                        ServerTls::from_pair(pair)?,
                        format!(
                            "; {} {}",
                            if made {
                                "made now and kept in"
                            } else {
                                "kept in"
                            },
                            path.display()
                        ),
                    ),
                    Some((Err(e), _)) => (
                        ServerTls::self_signed()?,
                        format!("; made now, not kept: {e}"),
                    ),
                    None => (
                        ServerTls::self_signed()?,
                        "; made now, not kept (--self-signed-file FILE keeps it across restarts)"
                            .to_owned(),
                    ),
                };
                let note = self_signed_note(&tls) + &kept_note;
                (tls, note, true)
            }
        };
        let certificate_name = match &acme {
            Some(acme) => acme.domains.first().cloned(),
            None => (!self_signed)
                .then(|| crate::tls::first_dns_name(&tls.leaf))
                .flatten(),
        };
        let (certificate, fingerprint) = (tls.certificate.clone(), tls.fingerprint.clone());
        let reloads = Arc::new(ReloadCounts::default());
        let (users, _) = self.load_users(&Accounts::default())?;
        let node = self.node()?;
        let fallback = self
            .fallback
            .as_deref()
            .map(|text| resolve("fallback", text))
            .transpose()?;
        let users = Reloadable::new(users);
        let padding = Reloadable::new(padding);
        let config = ServerConfig {
            listen,
            users: users.clone(),
            routes: Reloadable::new(crate::node::routes::RouteRules::default()),
            padding: padding.clone(),
            fallback,
            fallback_proxy_protocol: self.fallback_proxy_protocol,
            alpn: self.alpn()?,
            acme_challenges: acme.as_ref().map(|_| Arc::default()),
            downlink_padding: self.downlink_padding,
            metrics: self.metrics_config()?,
            tls: tls.config,
            cpus: self.cpus()?,
            handshake_timeout: seconds("handshake-timeout", self.handshake_timeout)?,
            connect_timeout: seconds("connect-timeout", self.connect_timeout)?,
            session_idle_timeout: seconds("idle-session-timeout", self.idle_session_timeout)?,
            stream_stall_timeout: seconds("stream-stall-timeout", self.stream_stall_timeout)?,
            stream_idle_timeout: seconds("stream-idle-timeout", self.stream_idle_timeout)?,
            write_timeout: seconds("write-timeout", self.write_timeout)?,
            uot_idle_timeout: seconds("uot-idle-timeout", self.uot_idle_timeout)?,
            pool: PoolConfig {
                kind: self.pool_type,
                min_idle: self.min_idle_connections,
                max_outbound: match self.max_outbound_connections {
                    Some(cap) => at_least_one("max-outbound-connections", cap)?,
                    None => pool::default_max_outbound(descriptor_limit),
                },
                max_idle_time: seconds("max-idle-time-secs", self.max_idle_time_secs)?,
                send_buffer: kibibytes("outbound-send-buffer-kib", self.outbound_send_buffer_kib)?,
            },
            deny: self.deny.clone(),
            deny_private: self.deny_private,
            limits: self.limits(descriptor_limit)?,
            certificate: Some(certificate.clone()),
            reloads: reloads.clone(),
        };
        let reloader = Reloader {
            invocation: Invocation::from_options(self.clone()),
            started: self.to_table(),
            users,
            padding,
            certificate,
            reloads,
            fingerprint: std::sync::Mutex::new(fingerprint),
        };
        Ok(Settled {
            config,
            certificate_note,
            reloader,
            stats_interval: self.stats_interval,
            credentials: self.credentials()?,
            node,
            public_host: self.public_host.clone(),
            server_name: self.server_name.clone(),
            certificate_name,
            self_signed,
            acme,
            print_links: self.print_links,
            qr: self.qr,
        })
    }

    /// These options with `file` filling in every flag the command line did not
    /// give (`given` says which it did, by field name). `-p` or `--users` on the
    /// command line replace the file's users; a token given on the command line
    /// (either spelling) replaces the file's.
    pub fn merge_file(
        &self,
        file: toml::Table,
        given: impl Fn(&str) -> bool,
    ) -> Result<ServerOptions, ConfigError> {
        let mine = self.to_table();
        let mut merged = mine.clone();
        let users_given = given("password") || given("users");
        for (key, value) in &file {
            let taken = match key.as_str() {
                "users" | "users_file" => !users_given,
                _ => !given(field_of(key)),
            };
            if taken {
                merged.insert(key.clone(), value.clone());
            }
        }
        if file.contains_key("padding_scheme") && !given("padding_scheme") {
            // The scheme's lines in the file win over a scheme file.
            merged.remove("padding_scheme_file");
        }
        for pair in [
            ["panel_token", "panel_token_file"],
            ["metrics_token", "metrics_token_file"],
        ] {
            if pair.iter().any(|flag| given(flag)) {
                // One token, from the command line: the file's other spelling
                // is not taken beside it.
                for key in pair {
                    match mine.get(key) {
                        Some(value) => merged.insert(key.to_owned(), value.clone()),
                        None => merged.remove(key),
                    };
                }
            }
        }
        let mut options = ServerOptions::from_table(merged)?;
        options.config = self.config.clone();
        options.password = self.password.clone();
        options.print_links = self.print_links;
        options.qr = self.qr;
        if options.cert.is_some() != options.key.is_some() {
            return Err(ConfigError::FileValue {
                key: "certificate_path".to_owned(),
                why: "certificate_path and key_path go together".to_owned(),
            });
        }
        Ok(options)
    }

    /// Every config file key: the names of this struct's serialized fields.
    pub fn file_keys() -> &'static [&'static str] {
        static KEYS: std::sync::OnceLock<&'static [&'static str]> = std::sync::OnceLock::new();
        KEYS.get_or_init(|| {
            let mut keys: &'static [&'static str] = &[];
            let _ = ServerOptions::deserialize(FieldNames(&mut keys));
            keys
        })
    }

    /// Whether `value` is one the file may give for `key`; why not, in a line.
    pub fn check_file_value(key: &str, value: &toml::Value) -> Result<(), String> {
        if !Self::file_keys().contains(&key) {
            return Err(match file::closest(key, Self::file_keys()) {
                Some(near) => format!("unknown key `{key}`; did you mean `{near}`?"),
                None => format!("unknown key `{key}`"),
            });
        }
        let mut table = Self::defaults().to_table();
        table.insert(key.to_owned(), value.clone());
        match ServerOptions::from_table(table) {
            Ok(_) => Ok(()),
            Err(e) => Err(format!("`{key}`: {}", e.why())),
        }
    }

    /// The options with every default and one password (what a file is checked against).
    fn defaults() -> ServerOptions {
        use clap::Parser;
        #[derive(Parser)]
        struct Defaults {
            #[command(flatten)]
            options: ServerOptions,
        }
        Defaults::parse_from(["anytls-server", "-p", "x"]).options
    }

    /// These options as a config file would give them.
    fn to_table(&self) -> toml::Table {
        toml::Table::try_from(self).expect("every option has a TOML form")
    }

    /// Options from a table of config file keys, naming the key whose value does
    /// not fit.
    fn from_table(table: toml::Table) -> Result<ServerOptions, ConfigError> {
        let error = match table.clone().try_into::<ServerOptions>() {
            Ok(options) => return Ok(options),
            Err(e) => e,
        };
        // Find the culprit: the first key that alone fails over the defaults.
        let defaults = Self::defaults().to_table();
        for (key, value) in table {
            let mut alone = defaults.clone();
            alone.insert(key.clone(), value);
            if let Err(e) = alone.try_into::<ServerOptions>() {
                return Err(ConfigError::FileValue {
                    key,
                    why: e.message().to_owned(),
                });
            }
        }
        Err(ConfigError::FileValue {
            key: "config".to_owned(),
            why: error.message().to_owned(),
        })
    }

    fn limits(&self, descriptor_limit: u64) -> Result<Limits, ConfigError> {
        Ok(Limits {
            pending: match self.max_pending {
                Some(cap) => at_least_one("max-pending", cap)?,
                None => crate::config::default_max_pending(descriptor_limit),
            },
            pending_per_subnet: at_least_one(
                "max-pending-per-subnet",
                self.max_pending_per_subnet,
            )?,
            datagrams_per_sec: at_least_one("max-datagrams-per-sec", self.max_datagrams_per_sec)?,
            streams_per_session: at_least_one(
                "max-streams-per-session",
                self.max_streams_per_session,
            )?,
            dialing_per_session: at_least_one(
                "max-dialing-per-session",
                self.max_dialing_per_session,
            )?,
            uot_per_session: at_least_one("max-uot-per-session", self.max_uot_per_session)?,
            buffered_per_session: at_least_one(
                "max-buffered-per-session-kib",
                kibibytes(
                    "max-buffered-per-session-kib",
                    self.max_buffered_per_session_kib,
                )?,
            )?,
            buffered_per_user: at_least_one(
                "max-buffered-per-user-mib",
                mebibytes("max-buffered-per-user-mib", self.max_buffered_per_user_mib)?,
            )?,
            buffered_total: at_least_one(
                "max-buffered-total-mib",
                mebibytes("max-buffered-total-mib", self.max_buffered_total_mib)?,
            )?,
            sessions_per_user: at_least_one("max-sessions-per-user", self.max_sessions_per_user)?,
            sessions_per_address: at_least_one("max-sessions-per-ip", self.max_sessions_per_ip)?,
            address_timeout: Duration::from_millis(at_least_one(
                "address-timeout-ms",
                self.address_timeout_ms,
            )?),
            synack_deadline: Duration::from_millis(at_least_one(
                "synack-deadline-ms",
                self.synack_deadline_ms,
            )?),
            guessing: GuessRules {
                limit: self.max_wrong_passwords,
                window: Duration::from_secs(at_least_one(
                    "wrong-password-window-secs",
                    self.wrong_password_window_secs,
                )?),
                block: Duration::from_secs(at_least_one(
                    "wrong-password-block-secs",
                    self.wrong_password_block_secs,
                )?),
            },
        })
    }

    /// The metrics endpoint with its token (read from its file) and allow-list,
    /// refused on an address other hosts reach unless one of them guards it.
    fn metrics_config(&self) -> Result<Option<MetricsConfig>, ConfigError> {
        let Some(listen) = self.metrics else {
            return Ok(None);
        };
        let token = match (&self.metrics_token, &self.metrics_token_file) {
            (Some(_), Some(_)) => {
                return Err(ConfigError::Exclusive(
                    "metrics-token",
                    "metrics-token-file",
                ))
            }
            (Some(token), None) => Some(token.clone()),
            (None, Some(path)) => Some(
                String::from_utf8(read("metrics token file", path)?)
                    .map_err(|e| ConfigError::Read {
                        what: "metrics token file",
                        path: path.clone(),
                        source: std::io::Error::new(std::io::ErrorKind::InvalidData, e),
                    })?
                    .trim()
                    .to_owned(),
            ),
            (None, None) => None,
        };
        if token.as_deref() == Some("") {
            return Err(ConfigError::Empty(if self.metrics_token.is_some() {
                "metrics-token"
            } else {
                "metrics-token-file"
            }));
        }
        if !listen.ip().to_canonical().is_loopback()
            && token.is_none()
            && self.metrics_allow.is_empty()
        {
            return Err(ConfigError::MetricsExposed(listen));
        }
        Ok(Some(MetricsConfig {
            listen,
            token,
            allow: self.metrics_allow.clone(),
        }))
    }

    /// The CPUs to run on: the first `--cores` of those this process may use.
    fn cpus(&self) -> Result<Vec<usize>, ConfigError> {
        let allowed = crate::runtime::allowed_cpus();
        match self.cores {
            None => Ok(allowed),
            Some(0) => Err(ConfigError::Zero("cores")),
            Some(asked) if asked > allowed.len() => Err(ConfigError::Cores { asked, allowed }),
            Some(asked) => Ok(allowed[..asked].to_vec()),
        }
    }

    /// Every user's name and password: each `-p` (named `default`, or
    /// `password-N` when there are several), the config file's `users`, and the
    /// `--users` file.
    pub fn credentials(&self) -> Result<Vec<User>, ConfigError> {
        let mut credentials = Vec::new();
        let alone = self.password.len() == 1 && self.users.is_none() && self.named_users.is_empty();
        for (index, password) in self.password.iter().enumerate() {
            let name = if alone {
                "default".to_owned()
            } else {
                format!("password-{}", index + 1)
            };
            credentials.push(User::new(&name, password));
        }
        credentials.extend(self.named_users.iter().cloned());
        if let Some(path) = &self.users {
            let text =
                String::from_utf8(read("users file", path)?).map_err(|e| ConfigError::Read {
                    what: "users file",
                    path: path.clone(),
                    source: std::io::Error::new(std::io::ErrorKind::InvalidData, e),
                })?;
            credentials.extend(parse_users(&text).map_err(|source| ConfigError::Users {
                path: path.clone(),
                source,
            })?);
        }
        if credentials.iter().any(|user| user.password.is_empty()) {
            return Err(ConfigError::EmptyPassword);
        }
        if credentials.is_empty() && self.panel_url.is_none() {
            return Err(ConfigError::NoUsers);
        }
        Ok(credentials)
    }

    /// The users as accounts succeeding `current` (see [`Accounts::succeeded_by`]).
    fn load_users(&self, current: &Accounts) -> Result<(Accounts, Changes), ConfigError> {
        let specs: Vec<_> = self.credentials()?.iter().map(User::spec).collect();
        Ok(current.succeeded_by(&specs)?)
    }

    /// Node mode's settings, if `--panel-url` was given.
    fn node(&self) -> Result<Option<NodeSettings>, ConfigError> {
        let Some(url) = &self.panel_url else {
            return Ok(None);
        };
        let node_id = self.node_id.ok_or(ConfigError::NodeNeeds("node-id"))?;
        let token = match (&self.panel_token, &self.panel_token_file) {
            (Some(token), _) => token.clone(),
            (None, Some(path)) => String::from_utf8_lossy(&read("panel token file", path)?)
                .trim()
                .to_owned(),
            (None, None) => {
                return Err(ConfigError::NodeNeeds("panel-token or --panel-token-file"))
            }
        };
        if token.is_empty() {
            return Err(ConfigError::Empty("panel-token"));
        }
        let parsed = url::Url::parse(url).map_err(|e| ConfigError::FileValue {
            key: "panel_url".to_owned(),
            why: format!("{url}: {e}"),
        })?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(ConfigError::FileValue {
                key: "panel_url".to_owned(),
                why: format!("{url}: not an http:// or https:// URL"),
            });
        }
        let state_file = self.panel_state_file.clone().unwrap_or_else(|| {
            let dir = std::env::var_os("STATE_DIRECTORY")
                .map(|dirs| {
                    let first = dirs
                        .to_string_lossy()
                        .split(':')
                        .next()
                        .unwrap_or(".")
                        .to_owned();
                    PathBuf::from(first)
                })
                .unwrap_or_else(|| PathBuf::from("."));
            dir.join(format!("anytls-node-{node_id}.json"))
        });
        Ok(Some(NodeSettings {
            panel_url: url.trim_end_matches('/').to_owned(),
            token,
            node_id,
            state_file,
        }))
    }

    /// The ACME settings, if `--acme-domain` names any.
    fn acme(&self) -> Result<Option<crate::acme::AcmeSettings>, ConfigError> {
        if self.acme_domain.is_empty() {
            let given = [
                ("acme-email", self.acme_email.is_some()),
                ("acme-directory", self.acme_directory.is_some()),
                ("acme-directory-ca", self.acme_directory_ca.is_some()),
                ("acme-state-dir", self.acme_state_dir.is_some()),
                ("acme-http", self.acme_http.is_some()),
                ("acme-self-signed", self.acme_self_signed),
            ];
            return match given.iter().find(|(_, given)| *given) {
                Some((flag, _)) => Err(ConfigError::AcmeNeedsDomain(flag)),
                None => Ok(None),
            };
        }
        if self.cert.is_some() {
            return Err(ConfigError::Exclusive("acme-domain", "cert"));
        }
        let http = self
            .acme_http
            .as_deref()
            .map(|text| resolve("acme-http", text))
            .transpose()?;
        Ok(Some(crate::acme::AcmeSettings {
            domains: self.acme_domain.clone(),
            email: self.acme_email.clone(),
            directory: self
                .acme_directory
                .clone()
                .unwrap_or_else(|| crate::acme::LETS_ENCRYPT.to_owned()),
            directory_ca: self.acme_directory_ca.clone(),
            state_dir: self
                .acme_state_dir
                .clone()
                .unwrap_or_else(crate::acme::default_state_dir),
            http,
        }))
    }

    /// `--fallback-alpn` as protocol names, empty entries dropped.
    fn alpn(&self) -> Result<Vec<Vec<u8>>, ConfigError> {
        self.fallback_alpn
            .iter()
            .filter(|name| !name.is_empty())
            .map(|name| match name.len() {
                1..=255 => Ok(name.as_bytes().to_vec()),
                _ => Err(ConfigError::AlpnTooLong(name.clone())),
            })
            .collect()
    }

    /// The padding scheme from `--padding-scheme`, or the default.
    fn load_padding(&self) -> Result<PaddingScheme, ConfigError> {
        let Some(path) = &self.padding_scheme else {
            return match &self.padding_lines {
                Some(lines) => {
                    PaddingScheme::for_clients(lines.join("\n").as_bytes()).map_err(|e| {
                        ConfigError::FileValue {
                            key: "padding_scheme".to_owned(),
                            why: e.to_string(),
                        }
                    })
                }
                None => Ok(PaddingScheme::default()),
            };
        };
        PaddingScheme::for_clients(&read("padding scheme", path)?).map_err(|source| {
            ConfigError::Padding {
                path: path.clone(),
                source,
            }
        })
    }
}

/// Where the self-signed certificate is kept by default: `self-signed.pem` in
/// systemd's `$STATE_DIRECTORY` (the unit sets it). Elsewhere only
/// `--self-signed-file` keeps it: a server started by hand writes nothing
/// into the working directory or the home directory unasked.
fn default_self_signed_file() -> Option<PathBuf> {
    let dir = std::env::var_os("STATE_DIRECTORY").filter(|value| !value.is_empty())?;
    Some(PathBuf::from(dir).join("self-signed.pem"))
}

/// The config keys SIGHUP applies; every other key needs a restart.
const RELOADED_KEYS: &[&str] = &[
    "users",
    "users_file",
    "padding_scheme",
    "padding_scheme_file",
    "certificate_path",
    "key_path",
];

/// What SIGHUP re-reads: the config file (if any), then the users, the padding
/// scheme and the certificate. Anything that no longer loads keeps the old value,
/// and the log says why; sessions already open go on.
pub struct Reloader {
    invocation: Invocation,
    /// The options the server started with, as config keys: a key SIGHUP
    /// cannot apply is named when it changes.
    started: toml::Table,
    users: Reloadable<Accounts>,
    padding: Reloadable<PaddingScheme>,
    certificate: Arc<CertificateSlot>,
    /// The fingerprint of the certificate handshakes present now.
    fingerprint: std::sync::Mutex<String>,
    reloads: Arc<ReloadCounts>,
}

impl Reloader {
    /// The SHA-256 of the certificate handshakes present now, as 64 lowercase
    /// hex digits (a link's `pin`).
    pub fn pin(&self) -> String {
        self.fingerprint
            .lock()
            .expect("fingerprint poisoned")
            .replace(':', "")
            .to_lowercase()
    }

    /// The slot handshakes take the certificate from (ACME renews into it).
    pub fn certificate_slot(&self) -> Arc<CertificateSlot> {
        self.certificate.clone()
    }

    /// Serves a new self-signed certificate for `name` (node mode: the panel's
    /// server name); the line to log about it.
    pub fn serve_self_signed_for(&self, name: &str) -> Result<String, ConfigError> {
        let pair = LoadedPair::self_signed_for(name)?;
        let note = format!(
            "self-signed certificate for {name}, SHA-256 fingerprint {} (clients need insecure=1, or this pin: --pin-sha256 in our client, pin= in our links)",
            pair.fingerprint
        );
        *self.fingerprint.lock().expect("fingerprint poisoned") = pair.fingerprint.clone();
        self.certificate.replace(pair);
        Ok(note)
    }

    /// Reloads; new sessions use what loaded. Counted in the configuration's
    /// [`ReloadCounts`]: a reload where anything did not load counts as failed.
    pub fn reload(&self) {
        let counter = if self.reload_all() {
            &self.reloads.succeeded
        } else {
            &self.reloads.failed
        };
        counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    /// Reloads each part; whether every part tried loaded.
    fn reload_all(&self) -> bool {
        let options = match self.invocation.resolve() {
            Ok((options, _)) => options,
            Err(why) => {
                warn!("SIGHUP: keeping the current settings: {why}");
                return false;
            }
        };
        let mut loaded_all = true;
        let now = options.to_table();
        let mut restart_only: Vec<&str> = self
            .started
            .keys()
            .chain(now.keys())
            .map(String::as_str)
            .filter(|key| !RELOADED_KEYS.contains(key) && self.started.get(*key) != now.get(*key))
            .collect();
        restart_only.sort_unstable();
        restart_only.dedup();
        if !restart_only.is_empty() {
            warn!(
                "SIGHUP: {} changed, and take(s) effect only after a restart",
                restart_only.join(", ")
            );
        }
        if options.panel_url.is_some() {
            // The panel owns the users and the padding scheme.
            info!("SIGHUP: in node mode the users and the padding scheme come from the panel");
        } else {
            match options.load_users(&self.users.load()) {
                Ok((loaded, changes)) => {
                    info!("SIGHUP: reloaded {} user(s): {changes}", loaded.len());
                    self.users.store(loaded);
                }
                Err(why) => {
                    warn!("SIGHUP: keeping the current users: {why}");
                    loaded_all = false;
                }
            }
        }
        match options.load_padding() {
            _ if options.panel_url.is_some() => {}
            Ok(loaded) => {
                if loaded.md5_hex() != self.padding.load().md5_hex() {
                    info!(
                        "SIGHUP: reloaded the padding scheme (md5 {})",
                        loaded.md5_hex()
                    );
                }
                self.padding.store(loaded);
            }
            Err(why) => {
                warn!("SIGHUP: keeping the current padding scheme: {why}");
                loaded_all = false;
            }
        }
        let (Some(cert), Some(key)) = (&options.cert, &options.key) else {
            return loaded_all;
        };
        match LoadedPair::from_pem_files(cert, key) {
            Ok(pair) => {
                let mut current = self.fingerprint.lock().expect("fingerprint poisoned");
                if *current != pair.fingerprint {
                    info!(
                        "SIGHUP: new handshakes use certificate {} (SHA-256 {}); open sessions keep theirs",
                        cert.display(),
                        pair.fingerprint
                    );
                    current.clone_from(&pair.fingerprint);
                    self.certificate.replace(pair);
                }
            }
            Err(why) => {
                warn!("SIGHUP: keeping the current certificate: {why}");
                loaded_all = false;
            }
        }
        loaded_all
    }
}

fn read(what: &'static str, path: &Path) -> Result<Vec<u8>, ConfigError> {
    std::fs::read(path).map_err(|source| ConfigError::Read {
        what,
        path: path.to_owned(),
        source,
    })
}

fn resolve(flag: &'static str, text: &str) -> Result<SocketAddr, ConfigError> {
    let invalid = |why: String| ConfigError::Address {
        flag,
        text: text.to_owned(),
        why,
    };
    text.to_socket_addrs()
        .map_err(|e| invalid(e.to_string()))?
        .next()
        .ok_or_else(|| invalid("resolves to no address".to_owned()))
}

/// Config file keys whose flag has another name (sing-box's names).
const RENAMED: [(&str, &str); 5] = [
    ("certificate_path", "cert"),
    ("key_path", "key"),
    ("padding_scheme_file", "padding_scheme"),
    ("padding_scheme", "padding_scheme"),
    ("users_file", "users"),
];

/// The flag (its field name) a config file `key` stands for.
fn field_of(key: &str) -> &str {
    RENAMED
        .iter()
        .find(|(renamed, _)| *renamed == key)
        .map_or(key, |(_, field)| field)
}

/// A deserializer that only records the field names of the struct asked for.
struct FieldNames<'a>(&'a mut &'static [&'static str]);

impl<'de> serde::Deserializer<'de> for FieldNames<'_> {
    type Error = serde::de::value::Error;

    fn deserialize_any<V: serde::de::Visitor<'de>>(self, _: V) -> Result<V::Value, Self::Error> {
        Err(serde::de::Error::custom("field names only"))
    }

    fn deserialize_struct<V: serde::de::Visitor<'de>>(
        self,
        _name: &'static str,
        fields: &'static [&'static str],
        _visitor: V,
    ) -> Result<V::Value, Self::Error> {
        *self.0 = fields;
        Err(serde::de::Error::custom("field names only"))
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes
        byte_buf option unit unit_struct newtype_struct seq tuple tuple_struct map
        enum identifier ignored_any
    }
}

/// A value kept in the config file as its text (`FromStr` and `Display`).
mod text {
    use std::fmt::Display;
    use std::str::FromStr;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<T: Display, S: Serializer>(
        value: &T,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        serializer.collect_str(value)
    }

    pub fn deserialize<'de, T, D>(deserializer: D) -> Result<T, D::Error>
    where
        T: FromStr<Err: Display>,
        D: Deserializer<'de>,
    {
        String::deserialize(deserializer)?
            .parse()
            .map_err(serde::de::Error::custom)
    }

    /// The same for an optional value.
    pub mod optional {
        use super::*;

        pub fn serialize<T: Display, S: Serializer>(
            value: &Option<T>,
            serializer: S,
        ) -> Result<S::Ok, S::Error> {
            match value {
                Some(value) => serializer.collect_str(value),
                None => serializer.serialize_none(),
            }
        }

        pub fn deserialize<'de, T, D>(deserializer: D) -> Result<Option<T>, D::Error>
        where
            T: FromStr<Err: Display>,
            D: Deserializer<'de>,
        {
            Option::<String>::deserialize(deserializer)?
                .map(|text| text.parse().map_err(serde::de::Error::custom))
                .transpose()
        }
    }
}

fn at_least_one<T: PartialOrd + From<u8>>(flag: &'static str, value: T) -> Result<T, ConfigError> {
    if value < T::from(1) {
        return Err(ConfigError::Zero(flag));
    }
    Ok(value)
}

fn seconds(flag: &'static str, secs: u64) -> Result<Duration, ConfigError> {
    if secs == 0 {
        return Err(ConfigError::ZeroSeconds(flag));
    }
    Ok(Duration::from_secs(secs))
}

/// `kib` KiB in bytes, refusing values that do not fit.
fn kibibytes(flag: &'static str, kib: u64) -> Result<usize, ConfigError> {
    usize::try_from(kib)
        .ok()
        .and_then(|kib| kib.checked_mul(1024))
        .ok_or(ConfigError::TooLarge { flag, value: kib })
}

fn mebibytes(flag: &'static str, mib: u64) -> Result<usize, ConfigError> {
    usize::try_from(mib)
        .ok()
        .and_then(|mib| mib.checked_mul(1 << 20))
        .ok_or(ConfigError::TooLarge { flag, value: mib })
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{CommandFactory, FromArgMatches, Parser};

    #[derive(Parser)]
    struct Flags {
        #[command(flatten)]
        options: ServerOptions,
    }

    fn options(flags: &[&str]) -> ServerOptions {
        let args = ["anytls-server", "-p", "pw", "-l", "127.0.0.1:0"];
        Flags::try_parse_from(args.iter().chain(flags))
            .expect("flags parse")
            .options
    }

    /// The command line `argv` (after the program name) over the config `toml`.
    fn invocation(argv: &[&str], toml: &str) -> Invocation {
        static FILES: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let path = std::env::temp_dir().join(format!(
            "anytls-merge-{}-{}.toml",
            std::process::id(),
            FILES.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ));
        std::fs::write(&path, toml).unwrap();
        let mut args = vec!["anytls-server", "--config", path.to_str().unwrap()];
        args.extend_from_slice(argv);
        let matches = Flags::command().try_get_matches_from(&args).unwrap();
        let flags = Flags::from_arg_matches(&matches).unwrap();
        Invocation::new(flags.options, &matches)
    }

    fn error(flags: &[&str]) -> String {
        match options(flags).settle(1024) {
            Ok(_) => panic!("{flags:?} were accepted"),
            Err(e) => e.to_string(),
        }
    }

    /// Every key the config file knows.
    fn file_keys() -> std::collections::BTreeSet<String> {
        ServerOptions::file_keys()
            .iter()
            .map(|key| (*key).to_owned())
            .collect()
    }

    #[test]
    fn every_flag_has_a_config_key_and_every_key_a_flag() {
        // sing-box's names for what a flag takes, and what only one side has.
        let renamed = [
            ("cert", "certificate_path"),
            ("key", "key_path"),
            ("padding_scheme", "padding_scheme_file"),
            ("users", "users_file"),
            ("password", "users"),
        ];
        let command_line_only = ["config", "print_links", "qr", "help", "version"];
        let file_only = ["padding_scheme"];
        let keys = file_keys();
        assert!(keys.len() > 30, "{keys:?}");
        let flags: Vec<String> = Flags::command()
            .get_arguments()
            .filter_map(|arg| arg.get_long())
            .map(|long| long.replace('-', "_"))
            .collect();
        let key_of = |flag: &str| {
            renamed
                .iter()
                .find(|(f, _)| *f == flag)
                .map_or(flag.to_owned(), |(_, key)| (*key).to_owned())
        };
        let no_key: Vec<&String> = flags
            .iter()
            .filter(|flag| !command_line_only.contains(&flag.as_str()))
            .filter(|flag| !keys.contains(&key_of(flag)))
            .collect();
        assert!(no_key.is_empty(), "flags without a config key: {no_key:?}");
        let named: Vec<String> = flags.iter().map(|flag| key_of(flag)).collect();
        let no_flag: Vec<&String> = keys
            .iter()
            .filter(|key| !file_only.contains(&key.as_str()) && !named.contains(key))
            .collect();
        assert!(
            no_flag.is_empty(),
            "config keys without a flag: {no_flag:?}"
        );
    }

    #[test]
    fn the_file_fills_what_the_command_line_did_not_give() {
        let toml = "listen = \"127.0.0.1:0\"\n\
                    users = [{ name = \"alice\", password = \"a\" }]\n\
                    max_streams_per_session = 64\n\
                    connect_timeout = 9\n\
                    pool_type = \"highperf\"\n\
                    padding_scheme = [\"stop=2\", \"0=30-30\", \"1=100-200\"]\n";
        let (options, _) = invocation(&["--connect-timeout", "3"], toml)
            .resolve()
            .unwrap();
        assert_eq!(options.max_streams_per_session, 64, "from the file");
        assert_eq!(options.connect_timeout, 3, "the flag wins");
        assert_eq!(options.pool_type, PoolKind::HighPerf);
        let config = options.settle(1024).unwrap().config;
        assert_eq!(config.users.load().len(), 1);
        assert_eq!(config.padding.load().stop(), 2);
        // -p on the command line replaces the file's users.
        let (options, _) = invocation(&["-p", "cli"], toml).resolve().unwrap();
        assert!(options.named_users.is_empty());
        assert_eq!(options.password, ["cli"]);
        // A default the file does not mention stays the default.
        assert_eq!(options.handshake_timeout, 10);
    }

    #[test]
    fn unknown_keys_and_wrong_types_name_the_key_and_the_line() {
        let error = invocation(&[], "listen = \"[::]:443\"\n\nmax_stream_per_session = 5\n")
            .resolve()
            .unwrap_err()
            .to_string();
        assert!(error.contains("line 3"), "{error}");
        assert!(
            error.ends_with(
                "unknown key `max_stream_per_session`; did you mean `max_streams_per_session`?"
            ),
            "{error}"
        );
        let error = invocation(&[], "cores = \"two\"\n")
            .resolve()
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("line 1") && error.contains("`cores`"),
            "{error}"
        );
        assert!(!error.contains('\n'), "one line: {error}");
        let error = invocation(&[], "frobnicate = 1\n")
            .resolve()
            .unwrap_err()
            .to_string();
        assert!(error.ends_with("unknown key `frobnicate`"), "{error}");
    }

    #[test]
    fn every_key_of_the_file_reaches_the_options() {
        // A key the merge forgot would keep the default: give each numeric and
        // boolean key a value no default has and read it back.
        let mut toml = String::from("users = [{ name = \"a\", password = \"a\" }]\n");
        let defaults = ServerOptions::defaults().to_table();
        let mut checked = 0;
        for (key, value) in &defaults {
            let new = match value {
                toml::Value::Integer(n) => toml::Value::Integer(n + 7),
                toml::Value::Boolean(b) => toml::Value::Boolean(!b),
                _ => continue,
            };
            toml.push_str(&format!("{key} = {new}\n"));
            checked += 1;
        }
        assert!(checked > 20, "{checked} keys");
        let (options, _) = invocation(&[], &toml).resolve().unwrap();
        let merged = options.to_table();
        for (key, value) in &defaults {
            if matches!(value, toml::Value::Integer(_) | toml::Value::Boolean(_)) {
                assert_ne!(&merged[key], value, "{key} kept its default");
            }
        }
    }

    #[test]
    fn file_values_that_do_not_parse_are_named() {
        let error = invocation(
            &[],
            "users = [{ name = \"a\", password = \"a\" }]\npool_type = \"fast\"\n",
        )
        .resolve()
        .unwrap_err()
        .to_string();
        assert!(
            error.ends_with(
                "line 2: `pool_type`: unknown pool type \"fast\" (none, direct, lock, lockfree, highperf)"
            ),
            "{error}"
        );
        let error = invocation(&[], "listen = \"127.0.0.1:0\"\n")
            .settle(1024)
            .err()
            .unwrap()
            .to_string();
        assert!(error.starts_with("no users"), "{error}");
    }

    #[test]
    fn the_shipped_example_config_loads() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("contrib/server.toml");
        let loaded = file::load(&path).unwrap();
        let options = options(&[]).merge_file(loaded.file, |_| false).unwrap();
        assert_eq!(options.listen, "[::]:443");
        assert_eq!(options.named_users.len(), 2);
        assert!(options.deny_private);
        assert_eq!(
            options.cert,
            Some(PathBuf::from("/etc/anytls/fullchain.pem"))
        );
    }

    #[test]
    fn defaults_settle_into_the_documented_config() {
        let settled = options(&[]).settle(1024).unwrap();
        let config = settled.config;
        assert_eq!(
            config.limits,
            Limits {
                pending: 128,
                ..Limits::default()
            },
            "pending connections: an eighth of the descriptor limit"
        );
        let roomy = options(&[]).settle(1 << 20).unwrap().config;
        assert_eq!(roomy.limits, Limits::default());
        assert_eq!(config.pool.max_outbound, 768, "3/4 of the descriptor limit");
        assert_eq!(
            config.handshake_timeout,
            super::super::DEFAULT_HANDSHAKE_TIMEOUT
        );
        assert_eq!(config.users.load().len(), 1);
        assert!(settled.certificate_note.starts_with("self-signed"));
    }

    #[test]
    fn every_bad_value_is_one_line_naming_its_flag() {
        assert_eq!(
            error(&["--max-streams-per-session", "0"]),
            "--max-streams-per-session must be at least 1"
        );
        assert_eq!(
            error(&["--connect-timeout", "0"]),
            "--connect-timeout must be at least 1 second"
        );
        assert_eq!(error(&["--cores", "0"]), "--cores must be at least 1");
        assert!(error(&["--cores", "4096"]).starts_with("--cores 4096 but"));
        assert_eq!(
            error(&["--max-buffered-per-session-kib", &u64::MAX.to_string()]),
            format!("--max-buffered-per-session-kib {} is too large", u64::MAX)
        );
        assert!(error(&["--fallback", "nowhere"]).starts_with("invalid --fallback nowhere"));
        assert!(error(&["--padding-scheme", "/nonexistent"])
            .starts_with("cannot read padding scheme /nonexistent"));
        let flags = Flags::try_parse_from(["anytls-server", "-p", ""]).unwrap();
        assert_eq!(
            flags.options.settle(1024).err().map(|e| e.to_string()),
            Some("--password must not be empty".to_owned())
        );
    }

    #[test]
    fn metrics_other_hosts_reach_need_a_token_or_an_allow_list() {
        for listen in ["0.0.0.0:9100", "[::]:9100", "192.0.2.1:9100"] {
            assert_eq!(
                error(&["--metrics", listen]),
                format!(
                    "--metrics {listen} is reachable from other hosts: give --metrics-token \
                     (or --metrics-token-file) or --metrics-allow, or listen on a loopback address"
                )
            );
        }
        let metrics = |flags: &[&str]| options(flags).settle(1024).unwrap().config.metrics;
        for listen in ["127.0.0.1:9100", "[::1]:9100", "[::ffff:127.0.0.1]:9100"] {
            let open = metrics(&["--metrics", listen]).unwrap();
            assert_eq!((open.token, open.allow), (None, Vec::new()));
        }
        let guarded = metrics(&["--metrics", "0.0.0.0:9100", "--metrics-token", "t"]).unwrap();
        assert_eq!(guarded.token.as_deref(), Some("t"));
        let allowed = metrics(&["--metrics", "[::]:9100", "--metrics-allow", "10.0.0.0/8"]);
        assert_eq!(allowed.unwrap().allow, ["10.0.0.0/8".parse().unwrap()]);
        assert!(metrics(&[]).is_none());
        assert_eq!(
            error(&["--metrics", "127.0.0.1:0", "--metrics-token", ""]),
            "--metrics-token must not be empty"
        );
        let dir = std::env::temp_dir().join(format!("anytls-token-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (token, blank) = (dir.join("token"), dir.join("blank"));
        std::fs::write(&token, " s3cret\n").unwrap();
        std::fs::write(&blank, "\n").unwrap();
        let from_file = metrics(&[
            "--metrics",
            "0.0.0.0:9100",
            "--metrics-token-file",
            token.to_str().unwrap(),
        ]);
        assert_eq!(from_file.unwrap().token.as_deref(), Some("s3cret"));
        assert_eq!(
            error(&[
                "--metrics",
                "127.0.0.1:0",
                "--metrics-token-file",
                blank.to_str().unwrap()
            ]),
            "--metrics-token-file must not be empty"
        );
        assert!(error(&[
            "--metrics",
            "127.0.0.1:0",
            "--metrics-token-file",
            "/nonexistent/token"
        ])
        .starts_with("cannot read metrics token file /nonexistent/token"));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_file_gives_the_metrics_guard_and_the_proxy_protocol() {
        let dir = std::env::temp_dir().join(format!("anytls-token-file-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let token = dir.join("token");
        std::fs::write(&token, "from-file\n").unwrap();
        let toml = format!(
            "users = [{{ name = \"a\", password = \"a\" }}]\n\
             metrics = \"0.0.0.0:9100\"\n\
             metrics_token_file = {:?}\n\
             metrics_allow = [\"10.0.0.0/8\", \"::1/128\"]\n\
             fallback = \"127.0.0.1:80\"\n\
             fallback_proxy_protocol = \"v2\"\n",
            token.to_str().unwrap()
        );
        let config = invocation(&[], &toml).settle(1024).unwrap().config;
        let metrics = config.metrics.unwrap();
        assert_eq!(metrics.token.as_deref(), Some("from-file"));
        assert_eq!(metrics.allow.len(), 2);
        assert_eq!(
            config.fallback_proxy_protocol,
            Some(proxy_protocol::Version::V2)
        );
        // The command line's token replaces the file's, whichever its spelling.
        let (options, _) = invocation(&["--metrics-token", "cli"], &toml)
            .resolve()
            .unwrap();
        assert_eq!(
            (options.metrics_token.as_deref(), options.metrics_token_file),
            (Some("cli"), None)
        );
        let (options, _) = invocation(&["--fallback-proxy-protocol", "v1"], &toml)
            .resolve()
            .unwrap();
        assert_eq!(
            options.fallback_proxy_protocol,
            Some(proxy_protocol::Version::V1)
        );
        let users = "users = [{ name = \"a\", password = \"a\" }]\n";
        let error = |toml: &str| match invocation(&[], &format!("{users}{toml}")).settle(1024) {
            Ok(_) => panic!("{toml} was accepted"),
            Err(e) => e.to_string(),
        };
        let error_v3 = error("fallback_proxy_protocol = \"v3\"\n");
        assert!(
            error_v3.ends_with(
                "line 2: `fallback_proxy_protocol`: unknown PROXY protocol version \"v3\" (v1, v2)"
            ),
            "{error_v3}"
        );
        let error_nope = error("metrics_allow = [\"nope\"]\n");
        assert!(
            error_nope.contains("line 2: `metrics_allow`: invalid IP address syntax"),
            "{error_nope}"
        );
        assert_eq!(
            error(
                "metrics = \"127.0.0.1:0\"\nmetrics_token = \"a\"\nmetrics_token_file = \"/t\"\n"
            ),
            "--metrics-token and --metrics-token-file exclude each other: give one"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn sighup_reloads_good_files_and_keeps_the_old_values_on_bad_ones() {
        let dir = std::env::temp_dir().join(format!("anytls-options-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (users, scheme) = (dir.join("users"), dir.join("scheme"));
        std::fs::write(&users, "alice:a\n").unwrap();
        std::fs::write(&scheme, "stop=2\n0=30-30\n1=100-200").unwrap();
        let settled = options(&[
            "--users",
            users.to_str().unwrap(),
            "--padding-scheme",
            scheme.to_str().unwrap(),
        ])
        .settle(1024)
        .unwrap();
        let config = settled.config;
        assert_eq!(config.users.load().len(), 2, "-p and alice");
        std::fs::write(&users, "alice:a\nbob:b\n").unwrap();
        std::fs::write(&scheme, "stop=3\n0=30-30\n1=100-200\n2=5-5").unwrap();
        settled.reloader.reload();
        assert_eq!(config.users.load().len(), 3);
        assert_eq!(config.padding.load().stop(), 3);
        std::fs::write(&users, "no colon here\n").unwrap();
        std::fs::write(&scheme, "stop=x").unwrap();
        settled.reloader.reload();
        assert_eq!(
            config.users.load().len(),
            3,
            "a bad users file keeps the old users"
        );
        assert_eq!(
            config.padding.load().stop(),
            3,
            "a bad scheme keeps the old one"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
