//! instant-acme's HTTP client over ureq (the client the panel already uses, on
//! the same rustls and aws-lc-rs), trusting the web PKI or, with
//! `--acme-directory-ca`, only the CA in that file. Requests block the ACME
//! thread, which does nothing else.

use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use instant_acme::{BodyWrapper, BytesResponse, HttpClient};

use super::AcmeError;

/// One request to the CA may take this long.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// ureq as instant-acme's HTTP client.
#[derive(Clone)]
pub struct UreqClient(ureq::Agent);

impl UreqClient {
    /// A client trusting the web PKI, or only the PEM certificates in `ca`.
    pub fn new(ca: Option<&Path>) -> Result<UreqClient, AcmeError> {
        let mut tls = ureq::tls::TlsConfig::builder().unversioned_rustls_crypto_provider(Arc::new(
            rustls::crypto::aws_lc_rs::default_provider(),
        ));
        if let Some(path) = ca {
            let pem = std::fs::read(path).map_err(|source| AcmeError::State {
                path: path.to_owned(),
                source,
            })?;
            let roots: Vec<_> = ureq::tls::parse_pem(&pem)
                .filter_map(|item| match item {
                    Ok(ureq::tls::PemItem::Certificate(cert)) => Some(cert),
                    _ => None,
                })
                .collect();
            if roots.is_empty() {
                return Err(AcmeError::NoCa(path.to_owned()));
            }
            tls = tls.root_certs(ureq::tls::RootCerts::new_with_certs(&roots));
        }
        let agent = ureq::Agent::config_builder()
            .timeout_global(Some(CALL_TIMEOUT))
            .http_status_as_error(false)
            .tls_config(tls.build())
            .user_agent(concat!("anytls-rs/", env!("CARGO_PKG_VERSION")))
            .build()
            .into();
        Ok(UreqClient(agent))
    }
}

impl HttpClient for UreqClient {
    fn request(
        &self,
        request: http::Request<BodyWrapper<Bytes>>,
    ) -> Pin<Box<dyn Future<Output = Result<BytesResponse, instant_acme::Error>> + Send>> {
        let agent = self.0.clone();
        Box::pin(async move {
            let (parts, body) = request.into_parts();
            let Ok(body) = body.collect().await.map(|collected| collected.to_bytes());
            let request = http::Request::from_parts(parts, body.to_vec());
            let response = agent
                .run(request)
                .map_err(|e| instant_acme::Error::Other(Box::new(e)))?;
            let (parts, body) = response.into_parts();
            let body = body
                .into_with_config()
                .limit(1 << 20)
                .read_to_vec()
                .map_err(|e| instant_acme::Error::Other(Box::new(e)))?;
            let response = http::Response::from_parts(parts, Full::new(Bytes::from(body)));
            Ok(BytesResponse::from(response))
        })
    }
}
