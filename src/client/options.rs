//! The client's options as given on its command line, and how they become a
//! checked configuration: the server (host:port or an `anytls://` URI, with flags
//! overriding the URI), the certificate check, session reuse and the CPUs.

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::time::Duration;

use rustls::pki_types::CertificateDer;
use thiserror::Error;

use super::{ClientConfig, PoolSettings};
use crate::proto::uri::{ServerUri, UriError};
use crate::runtime::allowed_cpus;
use crate::tls::{client_config, ServerVerification};

/// Why the options do not make a client configuration; one line each.
#[derive(Debug, Error)]
pub enum ClientOptionsError {
    /// An address that does not resolve.
    #[error("cannot resolve {what} {text}: {why}")]
    Resolve {
        /// Which address.
        what: &'static str,
        /// What was given.
        text: String,
        /// Why.
        why: String,
    },
    /// `--server` is neither host:port nor a URI.
    #[error("--server {0} must be host:port or an anytls:// URI")]
    Server(String),
    /// The `anytls://` URI is malformed.
    #[error("{0}")]
    Uri(#[from] UriError),
    /// Neither `-p` nor the URI gave a password.
    #[error("a password is required (-p or in the URI)")]
    NoPassword,
    /// `--pin-sha256` (or a link's `pin`) is not 64 hex digits.
    #[error("--pin-sha256 {0}: not a SHA-256 (64 hex digits, colons allowed)")]
    Pin(String),
    /// The `--ca` file gave no usable certificate.
    #[error("{}: {why}", path.display())]
    Ca {
        /// The file.
        path: PathBuf,
        /// Why.
        why: String,
    },
    /// `--cores` is 0 or more than this process may use.
    #[error("--cores {asked} but this process may run on 1..={} CPU(s): {allowed:?}", allowed.len())]
    Cores {
        /// CPUs asked for.
        asked: usize,
        /// CPUs this process may run on.
        allowed: Vec<usize>,
    },
}

/// Everything the client's operator can set, as given (flags).
#[derive(clap::Args, Debug, Clone)]
pub struct ClientOptions {
    /// Local address of the proxy: SOCKS5 and HTTP on the same port.
    #[arg(short = 'l', long = "listen", default_value = "127.0.0.1:1080")]
    pub listen: String,

    /// Server as host:port, or anytls://password@host:port/?sni=NAME&insecure=1.
    #[arg(short = 's', long = "server")]
    pub server: String,

    /// Password (may instead be given in an anytls:// URI).
    #[arg(short = 'p', long = "password")]
    pub password: Option<String>,

    /// TLS server name to send and verify [default: the server's host].
    /// An IP address means no SNI is sent.
    #[arg(long)]
    pub sni: Option<String>,

    /// Do not verify the server's certificate (for self-signed servers).
    #[arg(long)]
    pub insecure: bool,

    /// Accept only the certificate with this SHA-256 (hex, colons allowed: the
    /// fingerprint a self-signed server logs), whatever its name or issuer. A
    /// link's `pin=` does the same.
    #[arg(long, value_name = "HEX")]
    pub pin_sha256: Option<String>,

    /// PEM file of certificates to trust instead of the built-in web PKI roots:
    /// CAs, and self-signed server certificates (trusted for the names they carry).
    #[arg(long, value_name = "FILE")]
    pub ca: Option<PathBuf>,

    /// Seconds reaching the server may take, TCP and TLS together, before the
    /// connection that asked for it is answered with a timeout.
    #[arg(long, value_name = "SECS", default_value_t = 10)]
    pub connect_timeout: u64,

    /// Idle sessions kept open even when they are older than the idle timeout.
    #[arg(short = 'm', long = "min-idle-session", default_value_t = 5)]
    pub min_idle_session: usize,

    /// Open a new session for every connection instead of reusing idle ones.
    #[arg(long)]
    pub disable_reuse: bool,

    /// Seconds an idle session lives (beyond the -m newest).
    #[arg(long, value_name = "SECS", default_value_t = 60)]
    pub idle_session_timeout: u64,

    /// Seconds between idle-session checks (expiry and heartbeats).
    #[arg(long, value_name = "SECS", default_value_t = 30)]
    pub idle_check_interval: u64,

    /// Seconds a SOCKS5 UDP association lives without a datagram either way.
    #[arg(long, value_name = "SECS", default_value_t = 60)]
    pub udp_idle_timeout: u64,

    /// Executors to run, one pinned per CPU (each with its own sessions).
    #[arg(long, default_value_t = 1)]
    pub cores: usize,
}

/// A checked client configuration.
pub struct ClientSettled {
    /// The local SOCKS5 address.
    pub listen: SocketAddr,
    /// How to reach and authenticate to the server.
    pub config: ClientConfig,
    /// Session reuse.
    pub pool: PoolSettings,
    /// The CPUs to run an executor on.
    pub cpus: Vec<usize>,
}

impl ClientOptions {
    /// Checks every value and reads the `--ca` file.
    pub fn settle(&self) -> Result<ClientSettled, ClientOptionsError> {
        let listen = resolve("--listen", &self.listen)?;
        let (host, port, uri_password, uri_sni, uri_insecure, uri_pin) =
            if self.server.starts_with("anytls://") {
                let uri = ServerUri::parse(&self.server)?;
                (
                    uri.host,
                    uri.port,
                    Some(uri.password),
                    uri.sni,
                    uri.insecure,
                    uri.pin,
                )
            } else {
                let (host, port) = self
                    .server
                    .rsplit_once(':')
                    .ok_or_else(|| ClientOptionsError::Server(self.server.clone()))?;
                let port = port
                    .parse()
                    .map_err(|_| ClientOptionsError::Server(self.server.clone()))?;
                let host = host.trim_start_matches('[').trim_end_matches(']');
                (host.to_owned(), port, None, None, false, None)
            };
        let password = self
            .password
            .clone()
            .or(uri_password)
            .ok_or(ClientOptionsError::NoPassword)?;
        let server = resolve("server", &format!("{host}:{port}"))
            .or_else(|_| resolve("server", &format!("[{host}]:{port}")))?;
        let pin = match self.pin_sha256.clone().or(uri_pin) {
            Some(text) => Some(crate::tls::parse_pin(&text).ok_or(ClientOptionsError::Pin(text))?),
            None => None,
        };
        let verification = if let Some(pin) = pin {
            // A pin says exactly which certificate: it wins over insecure=1.
            ServerVerification::PinnedSha256(pin)
        } else if self.insecure || uri_insecure {
            ServerVerification::Insecure
        } else if let Some(ca) = &self.ca {
            ServerVerification::Certificates(load_certificates(ca)?)
        } else {
            ServerVerification::Roots(rustls::RootCertStore {
                roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
            })
        };
        let server_name = self.sni.clone().or(uri_sni).unwrap_or(host);
        let mut config =
            ClientConfig::new(server, &server_name, client_config(verification), &password);
        config.connect_timeout = Duration::from_secs(self.connect_timeout.max(1));
        let pool = PoolSettings {
            min_idle: self.min_idle_session,
            idle_timeout: Duration::from_secs(self.idle_session_timeout.max(1)),
            check_interval: Duration::from_secs(self.idle_check_interval.max(1)),
            disable_reuse: self.disable_reuse,
            udp_idle_timeout: Duration::from_secs(self.udp_idle_timeout.max(1)),
        };
        let allowed = allowed_cpus();
        if self.cores == 0 || self.cores > allowed.len() {
            return Err(ClientOptionsError::Cores {
                asked: self.cores,
                allowed,
            });
        }
        Ok(ClientSettled {
            listen,
            config,
            pool,
            cpus: allowed[..self.cores].to_vec(),
        })
    }
}

fn resolve(what: &'static str, text: &str) -> Result<SocketAddr, ClientOptionsError> {
    let unresolved = |why: String| ClientOptionsError::Resolve {
        what,
        text: text.to_owned(),
        why,
    };
    text.to_socket_addrs()
        .map_err(|e| unresolved(e.to_string()))?
        .next()
        .ok_or_else(|| unresolved("resolves to no address".to_owned()))
}

fn load_certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, ClientOptionsError> {
    let bad = |why: String| ClientOptionsError::Ca {
        path: path.to_owned(),
        why,
    };
    let pem = std::fs::read(path).map_err(|e| bad(format!("cannot read: {e}")))?;
    let certificates: Vec<_> = rustls_pemfile::certs(&mut &pem[..])
        .filter_map(Result::ok)
        .collect();
    if certificates.is_empty() {
        return Err(bad("no PEM certificate found".to_owned()));
    }
    Ok(certificates)
}
