//! Fetching an OpenID Connect issuer's signing keys: its discovery document
//! (`<issuer>/.well-known/openid-configuration`), whose `issuer` must be the issuer itself,
//! names its `jwks_uri`; the JWKS document there is the provider's keys.
//!
//! Over HTTPS only, verified against the system's CA certificates (and, when the daemon is
//! configured with `oidc_ca_file`, that CA too), HTTP/1.1, no redirects followed, each
//! request bounded in time ([`FETCH_TIMEOUT`]) and size (the JWKS limit).

use super::oidc::{MAX_JWKS_BYTES, OidcError};
use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use std::sync::Arc;
use std::time::Duration;
use tokio_rustls::rustls;

/// The longest a connection and its answer may take.
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(5);
/// The largest discovery document read.
const MAX_DISCOVERY_BYTES: usize = 64 * 1024;

/// Fetches issuers' keys under a set of trusted CAs.
#[derive(Clone)]
pub struct JwksFetcher {
    tls: tokio_rustls::TlsConnector,
}

impl std::fmt::Debug for JwksFetcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwksFetcher").finish_non_exhaustive()
    }
}

/// What an issuer's discovery gave: where its keys are, and the keys.
#[derive(Debug, Clone)]
pub struct FetchedKeys {
    pub jwks_uri: String,
    pub jwks: String,
}

/// A failed fetch: why goes to the daemon's log only (it describes the daemon's network: a
/// caller registering a provider, or holding a token, must not learn hosts and ports from
/// it); the caller is told the URL it gave or the token named failed.
fn unreachable(url: &str, why: impl std::fmt::Display) -> OidcError {
    tracing::warn!(%url, error = %why, "fetching an OpenID Connect issuer's keys failed");
    OidcError::Fetch(format!(
        "cannot fetch {url}: the issuer could not be reached, trusted or read (the daemon's log says why)"
    ))
}

impl JwksFetcher {
    /// A fetcher trusting the system's CA certificates, and `extra_ca_pem` (PEM certificates)
    /// when given.
    pub fn new(extra_ca_pem: Option<&[u8]>) -> Result<Self, String> {
        let mut roots = rustls::RootCertStore::empty();
        let system = rustls_native_certs::load_native_certs();
        let (added, _) = roots.add_parsable_certificates(system.certs);
        if added == 0 {
            tracing::warn!(
                "no system CA certificates found: OpenID Connect issuers' keys are fetched only under oidc_ca_file"
            );
        }
        if let Some(pem) = extra_ca_pem {
            use rustls::pki_types::CertificateDer;
            use rustls::pki_types::pem::PemObject as _;
            let certs = CertificateDer::pem_slice_iter(pem)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| format!("oidc_ca_file: {e}"))?;
            if certs.is_empty() {
                return Err("oidc_ca_file holds no PEM certificate".into());
            }
            for cert in certs {
                roots
                    .add(cert)
                    .map_err(|e| format!("oidc_ca_file: a certificate is unusable: {e}"))?;
            }
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(Self {
            tls: tokio_rustls::TlsConnector::from(Arc::new(config)),
        })
    }

    /// The keys of `issuer` (an `https://` URL), by its discovery document.
    pub async fn fetch(&self, issuer: &str) -> Result<FetchedKeys, OidcError> {
        let discovery_url = format!("{issuer}/.well-known/openid-configuration");
        let discovery = self.get(&discovery_url, MAX_DISCOVERY_BYTES).await?;
        let document: serde_json::Value = serde_json::from_slice(&discovery)
            .map_err(|e| unreachable(&discovery_url, format!("not JSON: {e}")))?;
        if document.get("issuer").and_then(|v| v.as_str()) != Some(issuer) {
            return Err(unreachable(
                &discovery_url,
                "the discovery document names another issuer",
            ));
        }
        let jwks_uri = document
            .get("jwks_uri")
            .and_then(|v| v.as_str())
            .filter(|uri| uri.starts_with("https://"))
            .ok_or_else(|| {
                unreachable(
                    &discovery_url,
                    "the discovery document names no https:// jwks_uri",
                )
            })?
            .to_owned();
        let jwks = self.jwks(&jwks_uri).await?;
        Ok(FetchedKeys { jwks_uri, jwks })
    }

    /// The JWKS document at `jwks_uri`, as text.
    pub async fn jwks(&self, jwks_uri: &str) -> Result<String, OidcError> {
        let body = self.get(jwks_uri, MAX_JWKS_BYTES).await?;
        String::from_utf8(body).map_err(|_| unreachable(jwks_uri, "the JWKS is not UTF-8"))
    }

    /// `GET url`: the body of a 200 answer, at most `limit` bytes.
    async fn get(&self, url: &str, limit: usize) -> Result<Vec<u8>, OidcError> {
        tokio::time::timeout(FETCH_TIMEOUT, self.get_now(url, limit))
            .await
            .map_err(|_| unreachable(url, "no answer in time"))?
    }

    async fn get_now(&self, url: &str, limit: usize) -> Result<Vec<u8>, OidcError> {
        let uri: http::Uri = url.parse().map_err(|e| unreachable(url, e))?;
        if uri.scheme_str() != Some("https") {
            return Err(unreachable(url, "only https:// is fetched"));
        }
        let host = uri
            .host()
            .ok_or_else(|| unreachable(url, "no host"))?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        let port = uri.port_u16().unwrap_or(443);
        let name = rustls::pki_types::ServerName::try_from(host.clone())
            .map_err(|e| unreachable(url, e))?;
        let tcp = tokio::net::TcpStream::connect((host.as_str(), port))
            .await
            .map_err(|e| unreachable(url, e))?;
        let tls = self
            .tls
            .connect(name, tcp)
            .await
            .map_err(|e| unreachable(url, e))?;
        let (mut sender, connection) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls))
                .await
                .map_err(|e| unreachable(url, e))?;
        let driver = tokio::spawn(connection);
        let authority = uri
            .authority()
            .map(|a| a.as_str().to_owned())
            .unwrap_or(host);
        let request = http::Request::get(
            uri.path_and_query()
                .map(|p| p.as_str())
                .unwrap_or("/")
                .to_owned(),
        )
        .header(http::header::HOST, authority)
        .header(http::header::ACCEPT, "application/json")
        .header(http::header::USER_AGENT, "keyhaven")
        .body(Empty::<Bytes>::new())
        .map_err(|e| unreachable(url, e))?;
        let answer = sender
            .send_request(request)
            .await
            .map_err(|e| unreachable(url, e))?;
        if answer.status() != http::StatusCode::OK {
            driver.abort();
            return Err(unreachable(url, format!("HTTP {}", answer.status())));
        }
        let body = Limited::new(answer.into_body(), limit)
            .collect()
            .await
            .map_err(|_| unreachable(url, format!("the answer is larger than {limit} bytes")))?
            .to_bytes();
        driver.abort();
        Ok(body.to_vec())
    }
}
