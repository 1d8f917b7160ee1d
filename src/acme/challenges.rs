//! The answers to a CA's pending challenges, written by the ACME thread and read
//! by whoever the CA's validation reaches: TLS-ALPN-01 (RFC 8737) answered by
//! the serving port's handshake for a ClientHello that offers only `acme-tls/1`
//! and names a pending domain, HTTP-01 by the `--acme-http` responder. Anything
//! else, a ClientHello offering `acme-tls/1` for a name with nothing pending
//! included, goes where any other connection goes.

use std::sync::Arc;

use dashmap::DashMap;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::{CertifiedKey, SingleCertAndKey};

use super::AcmeError;

/// The ALPN protocol a TLS-ALPN-01 validation offers.
pub const ACME_TLS_ALPN: &[u8] = b"acme-tls/1";

/// Pending challenges' answers.
#[derive(Default)]
pub struct Challenges {
    /// Per domain: the configuration presenting its validation certificate.
    tls_alpn: DashMap<String, Arc<rustls::ServerConfig>>,
    /// Per token: the key authorization to answer with.
    http: DashMap<String, String>,
}

impl Challenges {
    /// Answers TLS-ALPN-01 for `domain` with a certificate carrying the SHA-256
    /// `digest` of the key authorization.
    pub fn add_tls_alpn(&self, domain: &str, digest: &[u8]) -> Result<(), AcmeError> {
        let mut params = rcgen::CertificateParams::new(vec![domain.to_owned()])?;
        params.custom_extensions = vec![rcgen::CustomExtension::new_acme_identifier(digest)];
        let key = rcgen::KeyPair::generate()?;
        let cert = params.self_signed(&key)?;
        // Not CertifiedKey::from_der: it parses the certificate with webpki,
        // which refuses the critical acmeIdentifier extension.
        let signing_key = crate::tls::provider()
            .key_provider
            .load_private_key(PrivateKeyDer::Pkcs8(key.serialize_der().into()))
            .map_err(crate::tls::TlsError::from)?;
        let certified =
            CertifiedKey::new(vec![CertificateDer::from(cert.der().to_vec())], signing_key);
        let mut config = rustls::ServerConfig::builder_with_provider(crate::tls::provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(crate::tls::TlsError::from)?
            .with_no_client_auth()
            .with_cert_resolver(Arc::new(SingleCertAndKey::from(Arc::new(certified))));
        config.alpn_protocols = vec![ACME_TLS_ALPN.to_vec()];
        self.tls_alpn
            .insert(domain.to_ascii_lowercase(), Arc::new(config));
        Ok(())
    }

    /// Answers HTTP-01 `token` with `key_authorization`.
    pub fn add_http(&self, token: &str, key_authorization: &str) {
        self.http
            .insert(token.to_owned(), key_authorization.to_owned());
    }

    /// Forgets every answer (the order is done, or failed).
    pub fn clear(&self) {
        self.tls_alpn.clear();
        self.http.clear();
    }

    /// The configuration for a TLS-ALPN-01 validation: a ClientHello offering
    /// `acme-tls/1` (and nothing else, as RFC 8737 says validators do) for a
    /// name with a pending challenge. `None` for every other ClientHello.
    pub fn validation<'a>(
        &self,
        server_name: Option<&str>,
        alpn: Option<impl Iterator<Item = &'a [u8]>>,
    ) -> Option<Arc<rustls::ServerConfig>> {
        let mut offered = alpn?;
        if offered.next()? != ACME_TLS_ALPN || offered.next().is_some() {
            return None;
        }
        let name = server_name?.to_ascii_lowercase();
        self.tls_alpn.get(&name).map(|config| config.clone())
    }

    /// The key authorization for HTTP-01 `token`, if it is pending.
    pub fn http_answer(&self, token: &str) -> Option<String> {
        self.http.get(token).map(|answer| answer.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_pure_acme_hello_for_a_pending_name_is_answered() {
        let challenges = Challenges::default();
        let acme: &[&[u8]] = &[ACME_TLS_ALPN];
        assert!(challenges
            .validation(Some("a.test"), Some(acme.iter().copied()))
            .is_none());
        challenges.add_tls_alpn("A.test", &[7u8; 32]).unwrap();
        let config = challenges
            .validation(Some("a.test"), Some(acme.iter().copied()))
            .unwrap();
        assert_eq!(config.alpn_protocols, vec![ACME_TLS_ALPN.to_vec()]);
        let mixed: &[&[u8]] = &[ACME_TLS_ALPN, b"http/1.1"];
        assert!(challenges
            .validation(Some("a.test"), Some(mixed.iter().copied()))
            .is_none());
        assert!(challenges
            .validation(Some("b.test"), Some(acme.iter().copied()))
            .is_none());
        assert!(challenges
            .validation(None, Some(acme.iter().copied()))
            .is_none());
        challenges.add_http("token", "token.thumb");
        assert_eq!(
            challenges.http_answer("token").as_deref(),
            Some("token.thumb")
        );
        challenges.clear();
        assert!(challenges.http_answer("token").is_none());
        assert!(challenges
            .validation(Some("a.test"), Some(acme.iter().copied()))
            .is_none());
    }
}
