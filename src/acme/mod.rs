//! Certificates from an ACME CA (RFC 8555, Let's Encrypt by default): issued at
//! start when none is kept, renewed once a third of the lifetime is left, and
//! swapped in for new handshakes through the same slot SIGHUP uses. All of it
//! runs on a thread of its own (`anytls-acme`, instant-acme on a current-thread
//! tokio runtime over ureq); the data path only reads the pending challenges'
//! answers ([`Challenges`]): TLS-ALPN-01 on the serving port, or HTTP-01 on
//! `--acme-http`.
//!
//! - [`schedule`]: when to renew and retry, from the certificate's validity.
//! - [`store`]: the state directory (account, certificate, key; 0600, atomic).
//! - `http_client`: instant-acme's HTTP client over ureq.
//! - `http01`: the HTTP-01 responder.

mod challenges;
mod http01;
mod http_client;
pub mod schedule;
pub mod store;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use instant_acme::{
    Account, AuthorizationStatus, ChallengeType, Identifier, NewAccount, NewOrder, OrderStatus,
    RetryPolicy,
};
use log::{info, warn};
use thiserror::Error;

pub use challenges::{Challenges, ACME_TLS_ALPN};

use crate::tls::{CertificateSlot, LoadedPair, TlsError};
use http_client::UreqClient;
use store::{Store, Stored};

/// Let's Encrypt's production directory, the default CA.
pub const LETS_ENCRYPT: &str = "https://acme-v02.api.letsencrypt.org/directory";

/// How long the CA may take to validate, and then to issue.
const ORDER_TIMEOUT: Duration = Duration::from_secs(90);

/// What the operator asked for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AcmeSettings {
    /// The names on the certificate.
    pub domains: Vec<String>,
    /// The account's contact address, if any.
    pub email: Option<String>,
    /// The CA's directory URL.
    pub directory: String,
    /// The only CA trusted for the directory's HTTPS (a private or test CA).
    pub directory_ca: Option<PathBuf>,
    /// Where the account, certificate and key are kept.
    pub state_dir: PathBuf,
    /// Answer HTTP-01 here instead of TLS-ALPN-01 on the serving port.
    pub http: Option<SocketAddr>,
}

/// Why a certificate could not be had. One line each.
#[derive(Debug, Error)]
pub enum AcmeError {
    /// The state directory or a file in it.
    #[error("ACME state {}: {source}", path.display())]
    State {
        /// The file or directory.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A state file that does not parse.
    #[error("ACME state {}: {why}", path.display())]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// Why.
        why: String,
    },
    /// `--acme-directory-ca` holds no certificate.
    #[error("--acme-directory-ca {}: no PEM certificate in it", .0.display())]
    NoCa(PathBuf),
    /// `--acme-http` cannot be bound.
    #[error("cannot listen on --acme-http {listen}: {source}")]
    Listen {
        /// The address.
        listen: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The CA refused, or could not be reached.
    #[error("the CA: {0}")]
    Ca(#[from] instant_acme::Error),
    /// A key, CSR or validation certificate could not be made.
    #[error("cannot make a key or request: {0}")]
    Certificate(#[from] rcgen::Error),
    /// The issued (or kept) certificate does not load.
    #[error("{0}")]
    Tls(#[from] TlsError),
    /// The CA offered no challenge of the kind this server answers.
    #[error("the CA offered no {0} challenge for {1}")]
    NoChallenge(&'static str, String),
    /// An authorization ended other than valid.
    #[error("the authorization for {0} is {1}")]
    Authorization(String, String),
    /// The order ended other than ready.
    #[error("the order ended {0}")]
    Order(String),
    /// The issued certificate has no readable validity.
    #[error("the certificate's validity cannot be read")]
    Validity,
}

/// A certificate kept in `settings.state_dir` for exactly `settings.domains`
/// and not expired, with its expiry: read at start, no CA contacted.
pub fn kept_certificate(settings: &AcmeSettings) -> Result<Option<(LoadedPair, u64)>, AcmeError> {
    let store = Store::open(&settings.state_dir)?;
    let Some(stored) = store.certificate()? else {
        return Ok(None);
    };
    if stored.names != settings.domains {
        return Ok(None);
    }
    let pair = load(&store, &stored)?;
    let (_, not_after) = crate::der::validity(&pair.leaf).ok_or(AcmeError::Validity)?;
    Ok(schedule::still_valid(not_after, unix_now()).then_some((pair, not_after)))
}

/// Starts the ACME thread (and the HTTP-01 responder if asked): it keeps `slot`
/// holding a valid certificate for `settings.domains`, answering the CA's
/// challenges through `challenges`. What cannot start (the state directory,
/// the CA file, the HTTP-01 port) is an error now, not a log line later.
pub fn spawn(
    settings: AcmeSettings,
    slot: Arc<CertificateSlot>,
    challenges: Arc<Challenges>,
) -> Result<(), AcmeError> {
    let client = UreqClient::new(settings.directory_ca.as_deref())?;
    let store = Store::open(&settings.state_dir)?;
    if let Some(listen) = settings.http {
        http01::spawn(listen, challenges.clone())?;
    }
    let state_dir = settings.state_dir.clone();
    std::thread::Builder::new()
        .name("anytls-acme".into())
        .spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_time()
                .build()
                .expect("a current-thread runtime with a timer builds");
            runtime.block_on(keep_renewed(settings, store, client, slot, challenges));
        })
        .map_err(|source| AcmeError::State {
            path: state_dir,
            source,
        })?;
    Ok(())
}

/// Forever: sleep until the kept certificate is due (at once if there is
/// none), get a new one and serve it; after a failure keep what is served and
/// try again after a back-off.
async fn keep_renewed(
    settings: AcmeSettings,
    store: Store,
    client: UreqClient,
    slot: Arc<CertificateSlot>,
    challenges: Arc<Challenges>,
) {
    let names = settings.domains.join(", ");
    let mut failures = 0u32;
    let mut due = match kept_certificate(&settings) {
        Ok(Some((pair, not_after))) => {
            let (not_before, _) = crate::der::validity(&pair.leaf).unwrap_or((0, not_after));
            schedule::renew_at(not_before, not_after, rand::random())
        }
        _ => 0,
    };
    loop {
        let now = unix_now();
        if due > now {
            if failures == 0 {
                info!(
                    "ACME: the certificate for {names} is renewed in {}",
                    humanize(Duration::from_secs(due - now))
                );
            }
            tokio::time::sleep(Duration::from_secs(due - now)).await;
        }
        match issue(&settings, &store, &client, &challenges).await {
            Ok((pair, (not_before, not_after))) => {
                failures = 0;
                info!(
                    "ACME: certificate for {names} issued (SHA-256 {}), valid for {}; new handshakes use it, open sessions keep theirs",
                    pair.fingerprint,
                    humanize(Duration::from_secs(not_after.saturating_sub(unix_now())))
                );
                slot.replace(pair);
                due = schedule::renew_at(not_before, not_after, rand::random());
            }
            Err(e) => {
                challenges.clear();
                failures += 1;
                let wait = schedule::retry_in(failures);
                let kept = if slot.is_empty() {
                    "no certificate is served yet"
                } else {
                    "the current certificate is kept"
                };
                warn!(
                    "ACME: no certificate for {names} from {}: {e}; {kept}; next try in {}",
                    settings.directory,
                    humanize(wait)
                );
                due = unix_now() + wait.as_secs();
            }
        }
    }
}

/// One order, from account to certificate, kept in the store before it is
/// returned (with its validity).
async fn issue(
    settings: &AcmeSettings,
    store: &Store,
    client: &UreqClient,
    challenges: &Challenges,
) -> Result<(LoadedPair, (u64, u64)), AcmeError> {
    let account = match store.account(&settings.directory)? {
        Some(credentials) => {
            Account::builder_with_http(Box::new(client.clone()))
                .from_credentials(credentials)
                .await?
        }
        None => {
            let contact: Vec<String> = settings
                .email
                .iter()
                .map(|email| format!("mailto:{email}"))
                .collect();
            let contact: Vec<&str> = contact.iter().map(String::as_str).collect();
            let (account, credentials) = Account::builder_with_http(Box::new(client.clone()))
                .create(
                    &NewAccount {
                        contact: &contact,
                        terms_of_service_agreed: true,
                        only_return_existing: false,
                    },
                    settings.directory.clone(),
                    None,
                )
                .await?;
            store.save_account(&settings.directory, &credentials)?;
            account
        }
    };
    let identifiers: Vec<Identifier> = settings
        .domains
        .iter()
        .map(|name| Identifier::Dns(name.clone()))
        .collect();
    let mut order = account.new_order(&NewOrder::new(&identifiers)).await?;
    let (kind, kind_name) = match settings.http {
        Some(_) => (ChallengeType::Http01, "http-01"),
        None => (ChallengeType::TlsAlpn01, "tls-alpn-01"),
    };
    let mut authorizations = order.authorizations();
    while let Some(authorization) = authorizations.next().await {
        let mut authorization = authorization?;
        let name = authorization.identifier().to_string();
        match authorization.status {
            AuthorizationStatus::Pending => {}
            AuthorizationStatus::Valid => continue,
            other => return Err(AcmeError::Authorization(name, format!("{other:?}"))),
        }
        let mut challenge = authorization
            .challenge(kind.clone())
            .ok_or(AcmeError::NoChallenge(kind_name, name))?;
        let key_authorization = challenge.key_authorization();
        match kind {
            ChallengeType::Http01 => {
                challenges.add_http(&challenge.token, key_authorization.as_str())
            }
            _ => challenges.add_tls_alpn(
                &challenge.identifier().to_string(),
                key_authorization.digest().as_ref(),
            )?,
        }
        challenge.set_ready().await?;
    }
    let retries = RetryPolicy::new().timeout(ORDER_TIMEOUT);
    let status = order.poll_ready(&retries).await;
    challenges.clear();
    match status? {
        OrderStatus::Ready => {}
        other => return Err(AcmeError::Order(format!("{other:?}"))),
    }
    let key = rcgen::KeyPair::generate()?;
    let request =
        rcgen::CertificateParams::new(settings.domains.clone())?.serialize_request(&key)?;
    order.finalize_csr(request.der()).await?;
    let chain = order.poll_certificate(&retries).await?;
    let stored = Stored {
        chain,
        key: key.serialize_pem(),
        names: settings.domains.clone(),
    };
    let pair = load(store, &stored)?;
    let validity = crate::der::validity(&pair.leaf).ok_or(AcmeError::Validity)?;
    store.save_certificate(&stored)?;
    Ok((pair, validity))
}

fn load(store: &Store, stored: &Stored) -> Result<LoadedPair, AcmeError> {
    Ok(LoadedPair::from_pem(
        stored.chain.as_bytes(),
        stored.key.as_bytes(),
        &store.chain_path(),
        &store.key_path(),
    )?)
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_secs())
}

/// `3d 4h`, `2h 5m`, `40s`: a wait as an operator reads it.
fn humanize(wait: Duration) -> String {
    let secs = wait.as_secs();
    match secs {
        0..=119 => format!("{secs}s"),
        120..=7199 => format!("{}m", secs / 60),
        7200..=172_799 => format!("{}h {}m", secs / 3600, secs % 3600 / 60),
        _ => format!("{}d {}h", secs / 86_400, secs % 86_400 / 3600),
    }
}

/// The default state directory: `acme` under systemd's `$STATE_DIRECTORY`, or
/// under the working directory.
pub fn default_state_dir() -> PathBuf {
    std::env::var_os("STATE_DIRECTORY")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(".").to_owned())
        .join("acme")
}
