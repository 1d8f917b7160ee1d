//! rustls configuration: the server's certificate (PEM files or a self-signed one
//! made at start) and the client's verifier (web PKI roots, a pinned certificate,
//! or none for `insecure`).

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{aws_lc_rs, CryptoProvider};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::{DigitallySignedStruct, SignatureScheme};
use sha2::{Digest, Sha256};
use thiserror::Error;

/// A TLS set-up problem, reported to the operator at start.
#[derive(Debug, Error)]
pub enum TlsError {
    /// A certificate or key file could not be read.
    #[error("cannot read the {what} {path}: {source}")]
    Read {
        /// What the file should hold: certificate or key.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The certificate file holds no PEM certificate.
    #[error("{0}: no PEM certificate found")]
    NoCertificate(PathBuf),
    /// The key file holds no PEM private key.
    #[error("{0}: no PEM private key found (PKCS#8, PKCS#1 or SEC1)")]
    NoKey(PathBuf),
    /// rustls refused the certificate/key pair.
    #[error("certificate and key do not form a usable pair: {0}")]
    Rejected(#[from] rustls::Error),
    /// The self-signed certificate could not be kept for the next start.
    #[error("cannot keep the self-signed certificate in {}: {source}", path.display())]
    Keep {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The self-signed certificate could not be generated.
    #[error("cannot generate a self-signed certificate: {0}")]
    SelfSigned(#[from] rcgen::Error),
}

/// The crypto provider, its cipher suites in the server's order of preference:
/// AES-128-GCM first (cheaper than AES-256-GCM per byte on CPUs with AES
/// instructions, and what Go's TLS stack picks too), then AES-256-GCM, then
/// ChaCha20-Poly1305.
pub(crate) fn provider() -> Arc<CryptoProvider> {
    let mut provider = aws_lc_rs::default_provider();
    provider
        .cipher_suites
        .sort_by_key(|suite| suite_rank(suite.suite()));
    Arc::new(provider)
}

fn suite_rank(suite: rustls::CipherSuite) -> u8 {
    use rustls::CipherSuite as S;
    match suite {
        S::TLS13_AES_128_GCM_SHA256 => 0,
        S::TLS13_AES_256_GCM_SHA384 => 1,
        S::TLS13_CHACHA20_POLY1305_SHA256 => 2,
        S::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256 | S::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256 => 3,
        S::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384 | S::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384 => 4,
        _ => 5,
    }
}

/// Whether a client asks for ChaCha20-Poly1305 before any AES-GCM suite, as
/// clients without AES instructions do: the server then follows the client's
/// order instead of its own AES-128-GCM preference.
pub fn client_prefers_chacha(client_suites: &[rustls::CipherSuite]) -> bool {
    use rustls::CipherSuite as S;
    client_suites
        .iter()
        .find(|suite| suite_rank(**suite) < 5)
        .is_some_and(|suite| {
            matches!(
                suite,
                S::TLS13_CHACHA20_POLY1305_SHA256
                    | S::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256
                    | S::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256
            )
        })
}

/// The server's certificate chain and key, replaceable while the server runs
/// (SIGHUP, an ACME renewal): handshakes after [`CertificateSlot::replace`]
/// present the new pair, sessions already open keep the one they shook hands
/// with. Empty until ACME issues the first certificate: handshakes then fail.
#[derive(Debug)]
pub struct CertificateSlot(RwLock<Option<Arc<CertifiedKey>>>);

impl CertificateSlot {
    /// Makes handshakes from now on present `pair`.
    pub fn replace(&self, pair: LoadedPair) {
        *self.0.write().expect("certificate slot poisoned") = Some(pair.certified);
    }

    /// Whether there is no certificate to present yet.
    pub fn is_empty(&self) -> bool {
        self.0.read().expect("certificate slot poisoned").is_none()
    }

    /// When the certificate presented now expires, in seconds since the epoch.
    pub fn not_after(&self) -> Option<u64> {
        let certified = self.0.read().expect("certificate slot poisoned").clone()?;
        let (_, not_after) = crate::der::validity(certified.end_entity_cert().ok()?)?;
        Some(not_after)
    }
}

impl ResolvesServerCert for CertificateSlot {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.0.read().expect("certificate slot poisoned").clone()
    }
}

/// A certificate chain and its key, checked to match.
pub struct LoadedPair {
    certified: Arc<CertifiedKey>,
    /// Colon-separated uppercase hex SHA-256 of the leaf certificate.
    pub fingerprint: String,
    /// The leaf certificate, DER (clients may pin it).
    pub leaf: CertificateDer<'static>,
}

impl LoadedPair {
    /// Loads a PEM certificate chain and its PEM private key, and checks that the
    /// key belongs to the leaf certificate.
    pub fn from_pem_files(cert: &Path, key: &Path) -> Result<LoadedPair, TlsError> {
        let read = |what, path: &Path| {
            std::fs::read(path).map_err(|source| TlsError::Read {
                what,
                path: path.to_owned(),
                source,
            })
        };
        Self::from_pem(&read("certificate", cert)?, &read("key", key)?, cert, key)
    }

    /// A PEM certificate chain and its PEM private key, read from `cert` and
    /// `key` (named in errors).
    pub fn from_pem(
        cert_pem: &[u8],
        key_pem: &[u8],
        cert: &Path,
        key: &Path,
    ) -> Result<LoadedPair, TlsError> {
        let chain: Vec<CertificateDer<'static>> = rustls_pemfile::certs(&mut &cert_pem[..])
            .filter_map(Result::ok)
            .collect();
        if chain.is_empty() {
            return Err(TlsError::NoCertificate(cert.to_owned()));
        }
        let key_der = rustls_pemfile::private_key(&mut &key_pem[..])
            .ok()
            .flatten()
            .ok_or_else(|| TlsError::NoKey(key.to_owned()))?;
        Self::from_der(chain, key_der)
    }

    /// A self-signed certificate for `localhost`, made in memory.
    pub fn self_signed() -> Result<LoadedPair, TlsError> {
        Self::self_signed_for("localhost")
    }

    /// A self-signed certificate for `localhost` kept in `path` (certificate
    /// and key, PEM, mode 0600): read if it is there, else made and written, so
    /// its fingerprint survives restarts. Whether it was made now.
    pub fn self_signed_kept(path: &Path) -> Result<(LoadedPair, bool), TlsError> {
        match std::fs::read(path) {
            Ok(pem) => Ok((Self::from_pem(&pem, &pem, path, path)?, false)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()])?;
                let pem = certified.cert.pem() + &certified.key_pair.serialize_pem();
                let keep = |source| TlsError::Keep {
                    path: path.to_owned(),
                    source,
                };
                if let Some(dir) = path.parent().filter(|dir| !dir.as_os_str().is_empty()) {
                    crate::state_file::private_dir(dir).map_err(keep)?;
                }
                crate::state_file::write_private(path, pem.as_bytes()).map_err(keep)?;
                Ok((
                    Self::from_pem(pem.as_bytes(), pem.as_bytes(), path, path)?,
                    true,
                ))
            }
            Err(source) => Err(TlsError::Read {
                what: "self-signed certificate",
                path: path.to_owned(),
                source,
            }),
        }
    }

    /// A self-signed certificate for `name`, made in memory.
    pub fn self_signed_for(name: &str) -> Result<LoadedPair, TlsError> {
        let certified = rcgen::generate_simple_self_signed(vec![name.to_owned()])?;
        let key = PrivateKeyDer::Pkcs8(certified.key_pair.serialize_der().into());
        Self::from_der(vec![certified.cert.der().clone()], key)
    }

    fn from_der(
        chain: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
    ) -> Result<LoadedPair, TlsError> {
        let leaf = chain[0].clone();
        let certified = CertifiedKey::from_der(chain, key, &provider())?;
        Ok(LoadedPair {
            certified: Arc::new(certified),
            fingerprint: fingerprint(&leaf),
            leaf,
        })
    }
}

/// The server's TLS configuration and the SHA-256 fingerprint of its leaf certificate.
pub struct ServerTls {
    /// The server's cipher-suite order decides (see [`client_order`] for the other).
    pub config: Arc<rustls::ServerConfig>,
    /// Where the certificate lives, to replace it on SIGHUP.
    pub certificate: Arc<CertificateSlot>,
    /// Colon-separated uppercase hex SHA-256 of the leaf certificate.
    pub fingerprint: String,
    /// The leaf certificate, DER (clients may pin it).
    pub leaf: CertificateDer<'static>,
}

impl ServerTls {
    /// Loads a PEM certificate chain and private key.
    pub fn from_pem_files(cert: &Path, key: &Path) -> Result<ServerTls, TlsError> {
        Self::build(LoadedPair::from_pem_files(cert, key)?)
    }

    /// Makes a self-signed certificate for `localhost` in memory.
    pub fn self_signed() -> Result<ServerTls, TlsError> {
        Self::build(LoadedPair::self_signed()?)
    }

    /// Serves `pair` (a certificate ACME issued earlier, say).
    pub fn from_pair(pair: LoadedPair) -> Result<ServerTls, TlsError> {
        Self::build(pair)
    }

    /// No certificate yet (ACME will issue one): every handshake fails until
    /// [`CertificateSlot::replace`] gives it one.
    pub fn waiting() -> Result<ServerTls, TlsError> {
        let certificate = Arc::new(CertificateSlot(RwLock::new(None)));
        Ok(ServerTls {
            config: Self::config(&certificate)?,
            certificate,
            fingerprint: String::new(),
            leaf: CertificateDer::from(Vec::new()),
        })
    }

    fn config(certificate: &Arc<CertificateSlot>) -> Result<Arc<rustls::ServerConfig>, TlsError> {
        let mut config = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_cert_resolver(certificate.clone());
        config.ignore_client_order = true;
        Ok(Arc::new(config))
    }

    fn build(pair: LoadedPair) -> Result<ServerTls, TlsError> {
        let LoadedPair {
            certified,
            fingerprint,
            leaf,
        } = pair;
        let certificate = Arc::new(CertificateSlot(RwLock::new(Some(certified))));
        Ok(ServerTls {
            config: Self::config(&certificate)?,
            certificate,
            fingerprint,
            leaf,
        })
    }
}

/// The server configurations a handshake picks from by its ClientHello: the
/// cipher-suite order (the server's, or the client's for clients that
/// [prefer ChaCha20](client_prefers_chacha)) and the one ALPN protocol to
/// select, as a web server would: the first of the server's list that the
/// client offers. A client offering none of them (an AnyTLS client asking for
/// `h3`, say) still completes its handshake, with no protocol selected, where
/// rustls given the whole list would refuse it.
pub struct HelloChoices {
    /// The server's ALPN list, in its order of preference.
    alpn: Vec<Vec<u8>>,
    /// Per cipher-suite order (server's, client's): no protocol, then one
    /// configuration per entry of `alpn`.
    configs: [Vec<Arc<rustls::ServerConfig>>; 2],
}

impl HelloChoices {
    /// The choices over `config` for the ALPN list `alpn` (empty: never select one).
    pub fn new(config: &rustls::ServerConfig, alpn: &[Vec<u8>]) -> HelloChoices {
        let variants = |ignore_client_order: bool| {
            std::iter::once(None)
                .chain(alpn.iter().map(Some))
                .map(|protocol| {
                    let mut config = config.clone();
                    config.ignore_client_order = ignore_client_order;
                    config.alpn_protocols = protocol.into_iter().cloned().collect();
                    Arc::new(config)
                })
                .collect()
        };
        HelloChoices {
            alpn: alpn.to_vec(),
            configs: [variants(true), variants(false)],
        }
    }

    /// The configuration for a ClientHello with these cipher suites and ALPN offer.
    pub fn choose<'a>(
        &self,
        suites: &[rustls::CipherSuite],
        offered: Option<impl Iterator<Item = &'a [u8]>>,
    ) -> Arc<rustls::ServerConfig> {
        let order = usize::from(client_prefers_chacha(suites));
        let offered: Vec<&[u8]> = offered.into_iter().flatten().collect();
        let selected = self
            .alpn
            .iter()
            .position(|ours| offered.contains(&ours.as_slice()));
        self.configs[order][selected.map_or(0, |index| index + 1)].clone()
    }
}

/// The first DNS name a certificate is valid for (its subjectAltName), if any.
pub fn first_dns_name(cert: &CertificateDer<'_>) -> Option<String> {
    let parsed = webpki::EndEntityCert::try_from(cert).ok()?;
    let name = parsed.valid_dns_names().next().map(str::to_owned);
    name
}

/// A SHA-256 pin written as 64 hex digits, with or without colons.
pub fn parse_pin(text: &str) -> Option<[u8; 32]> {
    let hex: String = text.chars().filter(|c| *c != ':').collect();
    if hex.len() != 64 || !hex.is_ascii() {
        return None;
    }
    let mut pin = [0u8; 32];
    for (byte, pair) in pin.iter_mut().zip(hex.as_bytes().chunks(2)) {
        *byte = u8::from_str_radix(std::str::from_utf8(pair).ok()?, 16).ok()?;
    }
    Some(pin)
}

/// Colon-separated uppercase hex SHA-256 of a certificate.
pub fn fingerprint(cert: &CertificateDer<'_>) -> String {
    Sha256::digest(cert.as_ref())
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// How a client checks the server's certificate.
pub enum ServerVerification {
    /// Trust the given roots (for example the web PKI).
    Roots(rustls::RootCertStore),
    /// Trust these certificates (`--ca`): each as the root of chains and also as
    /// itself, for the names it carries while it is valid, so that a self-signed
    /// end-entity certificate (`openssl req -x509` makes it `CA:TRUE`, which chain
    /// building refuses as a server's own) is trusted as exactly that server.
    Certificates(Vec<CertificateDer<'static>>),
    /// Accept only this exact certificate (a self-signed server's).
    Pinned(CertificateDer<'static>),
    /// Accept only the certificate with this SHA-256 (`--pin-sha256`, a link's `pin`).
    PinnedSha256([u8; 32]),
    /// Accept any certificate (`insecure=1`): still a TLS handshake, no authentication.
    Insecure,
}

/// A client TLS configuration.
pub fn client_config(verification: ServerVerification) -> Arc<rustls::ClientConfig> {
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .expect("aws-lc-rs supports the default protocol versions");
    let config =
        match verification {
            ServerVerification::Roots(roots) => builder.with_root_certificates(roots),
            ServerVerification::Certificates(certificates) => builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(TrustedCertificates::new(certificates))),
            ServerVerification::Pinned(cert) => builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AcceptCert {
                    pinned: Some(Sha256::digest(cert.as_ref()).into()),
                    provider: provider(),
                })),
            ServerVerification::PinnedSha256(pin) => builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AcceptCert {
                    pinned: Some(pin),
                    provider: provider(),
                })),
            ServerVerification::Insecure => {
                builder
                    .dangerous()
                    .with_custom_certificate_verifier(Arc::new(AcceptCert {
                        pinned: None,
                        provider: provider(),
                    }))
            }
        }
        .with_no_client_auth();
    Arc::new(config)
}

/// Trusts chains to the given certificates, and each certificate as itself.
#[derive(Debug)]
struct TrustedCertificates {
    chains: Option<Arc<rustls::client::WebPkiServerVerifier>>,
    exact: Vec<CertificateDer<'static>>,
    /// Checks the handshake's signatures (its certificate check is not used).
    signatures: AcceptCert,
}

impl TrustedCertificates {
    fn new(certificates: Vec<CertificateDer<'static>>) -> Self {
        let mut roots = rustls::RootCertStore::empty();
        roots.add_parsable_certificates(certificates.iter().cloned());
        let chains = rustls::client::WebPkiServerVerifier::builder_with_provider(
            Arc::new(roots),
            provider(),
        )
        .build()
        .ok();
        TrustedCertificates {
            chains,
            exact: certificates,
            signatures: AcceptCert {
                pinned: None,
                provider: provider(),
            },
        }
    }
}

impl ServerCertVerifier for TrustedCertificates {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        use rustls::CertificateError;
        if !self.exact.iter().any(|trusted| trusted == end_entity) {
            let unknown = rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer);
            let Some(chains) = &self.chains else {
                return Err(unknown);
            };
            return chains
                .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
                .map_err(|e| match e {
                    // webpki refuses a CA certificate as a server's own before it
                    // looks for an issuer: this one is none of those trusted.
                    rustls::Error::InvalidCertificate(CertificateError::Other(other))
                        if other.0.downcast_ref::<webpki::Error>()
                            == Some(&webpki::Error::CaUsedAsEndEntity) =>
                    {
                        unknown
                    }
                    other => other,
                });
        }
        let invalid = rustls::Error::InvalidCertificate;
        let (not_before, not_after) =
            crate::der::validity(end_entity).ok_or(invalid(CertificateError::BadEncoding))?;
        let at = |secs| UnixTime::since_unix_epoch(std::time::Duration::from_secs(secs));
        if now.as_secs() < not_before {
            return Err(invalid(CertificateError::NotValidYetContext {
                time: now,
                not_before: at(not_before),
            }));
        }
        if now.as_secs() >= not_after {
            return Err(invalid(CertificateError::ExpiredContext {
                time: now,
                not_after: at(not_after),
            }));
        }
        let parsed = webpki::EndEntityCert::try_from(end_entity)
            .map_err(|_| invalid(CertificateError::BadEncoding))?;
        if parsed
            .verify_is_valid_for_subject_name(server_name)
            .is_err()
        {
            return Err(invalid(CertificateError::NotValidForNameContext {
                expected: server_name.to_owned(),
                presented: parsed.valid_dns_names().map(str::to_owned).collect(),
            }));
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.signatures.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.signatures.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.signatures.supported_verify_schemes()
    }
}

/// Accepts the certificate with a pinned SHA-256 or, without a pin, any
/// certificate; handshake signatures are still verified so the peer must hold
/// the certificate's key.
#[derive(Debug)]
struct AcceptCert {
    pinned: Option<[u8; 32]>,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for AcceptCert {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match &self.pinned {
            Some(pinned) if pinned[..] != Sha256::digest(end_entity.as_ref())[..] => Err(
                rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer),
            ),
            _ => Ok(ServerCertVerified::assertion()),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aes_128_is_preferred_unless_the_client_puts_chacha_first() {
        use rustls::CipherSuite as S;
        let order: Vec<_> = provider().cipher_suites.iter().map(|s| s.suite()).collect();
        assert_eq!(order[0], S::TLS13_AES_128_GCM_SHA256);
        assert!(!client_prefers_chacha(&[
            S::TLS13_AES_256_GCM_SHA384,
            S::TLS13_CHACHA20_POLY1305_SHA256
        ]));
        assert!(client_prefers_chacha(&[
            S::TLS_EMPTY_RENEGOTIATION_INFO_SCSV,
            S::TLS13_CHACHA20_POLY1305_SHA256,
            S::TLS13_AES_128_GCM_SHA256
        ]));
        assert!(!client_prefers_chacha(&[]));
    }

    #[test]
    fn alpn_is_selected_by_the_servers_preference_and_never_refused() {
        let tls = ServerTls::self_signed().unwrap();
        let choices = HelloChoices::new(&tls.config, &[b"h2".to_vec(), b"http/1.1".to_vec()]);
        let chosen = |offered: Option<&[&[u8]]>| {
            let config = choices.choose(&[], offered.map(|list| list.iter().copied()));
            config.alpn_protocols.clone()
        };
        assert_eq!(chosen(Some(&[b"http/1.1", b"h2"])), vec![b"h2".to_vec()]);
        assert_eq!(chosen(Some(&[b"http/1.1"])), vec![b"http/1.1".to_vec()]);
        assert!(chosen(Some(&[b"h3"])).is_empty());
        assert!(chosen(None).is_empty());
        use rustls::CipherSuite as S;
        let chacha = choices.choose(
            &[S::TLS13_CHACHA20_POLY1305_SHA256],
            None::<std::iter::Empty<&[u8]>>,
        );
        assert!(!chacha.ignore_client_order);
        assert!(
            choices
                .choose(&[], None::<std::iter::Empty<&[u8]>>)
                .ignore_client_order
        );
    }

    #[test]
    fn the_first_dns_name_is_read_from_the_certificate() {
        let pair = LoadedPair::self_signed_for("proxy.example.com").unwrap();
        assert_eq!(
            first_dns_name(&pair.leaf).as_deref(),
            Some("proxy.example.com")
        );
        assert_eq!(first_dns_name(&CertificateDer::from(vec![1, 2, 3])), None);
    }

    #[test]
    fn pins_parse_with_or_without_colons() {
        let tls = ServerTls::self_signed().unwrap();
        let pin = parse_pin(&tls.fingerprint).unwrap();
        assert_eq!(pin[..], Sha256::digest(tls.leaf.as_ref())[..]);
        assert_eq!(
            parse_pin(&tls.fingerprint.replace(':', "").to_lowercase()),
            Some(pin)
        );
        assert_eq!(parse_pin("ab:cd"), None);
        assert_eq!(parse_pin(&"zz".repeat(32)), None);
    }

    #[test]
    fn a_kept_self_signed_certificate_is_the_same_on_the_next_start() {
        let dir = std::env::temp_dir().join(format!("anytls-kept-{}", std::process::id()));
        let path = dir.join("state/self-signed.pem");
        let (first, made) = LoadedPair::self_signed_kept(&path).unwrap();
        assert!(made);
        let (again, made) = LoadedPair::self_signed_kept(&path).unwrap();
        assert!(!made);
        assert_eq!(first.fingerprint, again.fingerprint);
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn self_signed_has_a_fingerprint() {
        let tls = ServerTls::self_signed().unwrap();
        assert_eq!(tls.fingerprint.len(), 32 * 3 - 1);
        assert_eq!(tls.fingerprint, fingerprint(&tls.leaf));
    }

    #[test]
    fn missing_and_empty_files_are_named() {
        let err = ServerTls::from_pem_files(Path::new("/nonexistent.pem"), Path::new("/x"))
            .err()
            .unwrap();
        assert!(err.to_string().contains("/nonexistent.pem"), "{err}");
        let dir = std::env::temp_dir().join(format!("anytls-tls-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let empty = dir.join("empty.pem");
        std::fs::write(&empty, b"not pem").unwrap();
        let err = ServerTls::from_pem_files(&empty, &empty).err().unwrap();
        assert!(matches!(err, TlsError::NoCertificate(_)), "{err}");
        std::fs::remove_dir_all(dir).unwrap();
    }
}
