//! A signed gRPC client of the key management service, used by the CLI, the tests and the
//! load generator. Every request is signed with the caller's secret access key
//! ([`crate::auth::signature`]); the secret itself is never sent.

use crate::auth::signature::{
    RequestTarget, SigningCredentials, format_amz_date, sign_request_with_key, signing_key,
};
use crate::clock::{Clock, SystemClock};
use crate::proto::v1::audit_service_client::AuditServiceClient;
use crate::proto::v1::identity_service_client::IdentityServiceClient;
use crate::proto::v1::key_management_service_client::KeyManagementServiceClient;
use crate::secret::Secret;
use crate::secret::SecretString;
use prost::Message;
use rand::RngCore;
use std::sync::Arc;
use std::time::Duration;
use tonic::metadata::MetadataValue;
use tonic::transport::{Channel, Endpoint};

pub const ENDPOINT_ENV: &str = "KEYHAVEN_ENDPOINT";
pub const ACCESS_KEY_ID_ENV: &str = "KEYHAVEN_ACCESS_KEY_ID";
pub const SECRET_ACCESS_KEY_ENV: &str = "KEYHAVEN_SECRET_ACCESS_KEY";
pub const SESSION_TOKEN_ENV: &str = "KEYHAVEN_SESSION_TOKEN";
pub const REGION_ENV: &str = "KEYHAVEN_REGION";
pub const CA_CERT_ENV: &str = "KEYHAVEN_CA_CERT";
pub const CLIENT_CERT_ENV: &str = "KEYHAVEN_CLIENT_CERT";
pub const CLIENT_KEY_ENV: &str = "KEYHAVEN_CLIENT_KEY";

/// How to reach the daemon over TLS: the CA that signed its certificate, and for mutual TLS
/// the client's own certificate and key (all PEM).
#[derive(Debug, Clone, Default)]
pub struct ClientTls {
    pub ca_cert: Option<Vec<u8>>,
    pub identity: Option<(Vec<u8>, crate::secret::SecretBytes)>,
}

impl ClientTls {
    /// From `KEYHAVEN_CA_CERT`, `KEYHAVEN_CLIENT_CERT` and `KEYHAVEN_CLIENT_KEY` (file paths),
    /// `ca_cert` overriding the first.
    pub fn from_env(ca_cert: Option<&std::path::Path>) -> Result<Self, String> {
        let read = |path: &std::path::Path| {
            std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))
        };
        let var = |name: &str| {
            std::env::var_os(name)
                .filter(|v| !v.is_empty())
                .map(std::path::PathBuf::from)
        };
        let ca_cert = match ca_cert
            .map(std::path::Path::to_path_buf)
            .or_else(|| var(CA_CERT_ENV))
        {
            Some(path) => Some(read(&path)?),
            None => None,
        };
        let identity = match (var(CLIENT_CERT_ENV), var(CLIENT_KEY_ENV)) {
            (Some(cert), Some(key)) => {
                Some((read(&cert)?, crate::secret::SecretBytes::new(read(&key)?)))
            }
            (None, None) => None,
            _ => {
                return Err(format!(
                    "set both {CLIENT_CERT_ENV} and {CLIENT_KEY_ENV}, or neither"
                ));
            }
        };
        Ok(Self { ca_cert, identity })
    }
}
pub const DEFAULT_ENDPOINT: &str = "http://127.0.0.1:7878";
const KMS_PATH: &str = "/keyhaven.v1.KeyManagementService/";
const IAM_PATH: &str = "/keyhaven.v1.IdentityService/";
const AUDIT_PATH: &str = "/keyhaven.v1.AuditService/";

/// What a client signs with.
#[derive(Debug, Clone)]
pub struct ClientCredentials {
    pub access_key_id: String,
    pub secret_access_key: SecretString,
    pub session_token: Option<SecretString>,
    pub region: String,
}

impl ClientCredentials {
    /// Long-term credentials (an access key and its secret, no session token) for `region`.
    pub fn long_term(access_key_id: String, secret_access_key: SecretString, region: &str) -> Self {
        Self {
            access_key_id,
            secret_access_key,
            session_token: None,
            region: region.to_owned(),
        }
    }

    /// From `KEYHAVEN_ACCESS_KEY_ID`, `KEYHAVEN_SECRET_ACCESS_KEY`, `KEYHAVEN_SESSION_TOKEN`
    /// and `KEYHAVEN_REGION` (default `local`).
    pub fn from_env() -> Result<Self, String> {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        let access_key_id = var(ACCESS_KEY_ID_ENV)
            .ok_or_else(|| format!("no credentials: set {ACCESS_KEY_ID_ENV} and {SECRET_ACCESS_KEY_ENV} (`keyhaven serve --dev` prints them)"))?;
        let secret = var(SECRET_ACCESS_KEY_ENV)
            .ok_or_else(|| format!("no credentials: {SECRET_ACCESS_KEY_ENV} is not set"))?;
        Ok(Self {
            access_key_id,
            secret_access_key: SecretString::new(secret),
            session_token: var(SESSION_TOKEN_ENV).map(SecretString::new),
            region: var(REGION_ENV).unwrap_or_else(|| "local".into()),
        })
    }
}

/// A signing key and the day (`YYYYMMDD`) it signs for.
type DaySigningKey = (String, Secret<[u8; 32]>);

/// A connection to a Keyhaven daemon that signs every request.
#[derive(Clone)]
pub struct Client {
    kms: KeyManagementServiceClient<Channel>,
    iam: IdentityServiceClient<Channel>,
    audit: AuditServiceClient<Channel>,
    credentials: ClientCredentials,
    /// The `:authority` requests go to (`host:port` of the endpoint): signed, so that a
    /// captured request does not verify at another daemon.
    authority: String,
    clock: Arc<dyn Clock>,
    /// The signing key of the last day signed for, derived once a day.
    signing: Arc<std::sync::RwLock<Option<DaySigningKey>>>,
    /// The approved request every call executes (`x-keyhaven-approval-id`), if any.
    approval_id: Option<String>,
}

impl Client {
    /// Connects to `endpoint` (`http://host:port`).
    /// The credentials the client signs with.
    pub fn credentials(&self) -> &ClientCredentials {
        &self.credentials
    }

    pub async fn connect(endpoint: &str, credentials: ClientCredentials) -> Result<Self, String> {
        Self::connect_with_tls(endpoint, credentials, &ClientTls::default()).await
    }

    /// Connects to `endpoint`; `https://` endpoints verify the server against `tls.ca_cert`
    /// (or the system's roots when absent) and present `tls.identity` when set.
    pub async fn connect_with_tls(
        endpoint: &str,
        credentials: ClientCredentials,
        tls: &ClientTls,
    ) -> Result<Self, String> {
        use tonic::transport::{Certificate, ClientTlsConfig, Identity};
        let builder = Endpoint::from_shared(endpoint.to_owned())
            .map_err(|e| format!("bad endpoint '{endpoint}': {e}"))?;
        let authority = builder
            .uri()
            .authority()
            .map(|a| a.as_str().to_owned())
            .ok_or_else(|| format!("bad endpoint '{endpoint}': no host"))?;
        let mut builder = builder
            .connect_timeout(Duration::from_secs(5))
            .tcp_nodelay(true);
        if endpoint.starts_with("https://") {
            let mut config = ClientTlsConfig::new();
            match &tls.ca_cert {
                Some(ca) => config = config.ca_certificate(Certificate::from_pem(ca)),
                None => {
                    return Err(format!(
                        "{endpoint} uses TLS: give --ca-cert or {CA_CERT_ENV} (the CA that signed the daemon's certificate)"
                    ));
                }
            }
            if let Some((cert, key)) = &tls.identity {
                config = config.identity(Identity::from_pem(cert, key.expose()));
            }
            builder = builder
                .tls_config(config)
                .map_err(|e| format!("TLS settings: {e}"))?;
        }
        let channel = builder
            .connect()
            .await
            .map_err(|e| format!("cannot reach the daemon at {endpoint}: {e}"))?;
        Ok(Self::from_channel(channel, &authority, credentials))
    }

    /// A client on a channel already made; `authority` is the `host:port` the channel's
    /// endpoint names (what requests are signed for).
    pub fn from_channel(channel: Channel, authority: &str, credentials: ClientCredentials) -> Self {
        Self {
            kms: KeyManagementServiceClient::new(channel.clone()),
            iam: IdentityServiceClient::new(channel.clone()),
            audit: AuditServiceClient::new(channel),
            credentials,
            authority: authority.to_owned(),
            clock: Arc::new(SystemClock),
            signing: Arc::default(),
            approval_id: None,
        }
    }

    /// Names the approved request `id` on every call (the call must be the one approved).
    pub fn with_approval_id(mut self, id: Option<String>) -> Self {
        self.approval_id = id;
        self
    }

    /// Signs with `clock`'s time instead of the system's (tests that move time).
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// The generated client, for calls made with [`Client::signed`].
    pub fn kms(&self) -> KeyManagementServiceClient<Channel> {
        self.kms.clone()
    }

    /// The generated identity-service client, for calls made with [`Client::signed_iam`].
    pub fn iam(&self) -> IdentityServiceClient<Channel> {
        self.iam.clone()
    }

    /// Wraps `message` for the key-management method `method` (e.g. `"Encrypt"`), signed now.
    pub fn signed<T: Message>(&self, method: &str, message: T) -> tonic::Request<T> {
        self.signed_at(method, message, self.clock.now())
    }

    /// The generated audit-service client, for calls made with [`Client::signed_audit`].
    pub fn audit(&self) -> AuditServiceClient<Channel> {
        self.audit.clone()
    }

    /// Wraps `message` for the audit-service method `method` (`"TailAuditLog"`).
    pub fn signed_audit<T: Message>(&self, method: &str, message: T) -> tonic::Request<T> {
        self.sign(&format!("{AUDIT_PATH}{method}"), message, self.clock.now())
    }

    /// Wraps `message` for the identity-service method `method` (e.g. `"CreateUser"`).
    pub fn signed_iam<T: Message>(&self, method: &str, message: T) -> tonic::Request<T> {
        self.sign(&format!("{IAM_PATH}{method}"), message, self.clock.now())
    }

    /// As [`Client::signed`], with the given request time (tests of stale signatures).
    pub fn signed_at<T: Message>(&self, method: &str, message: T, now: i64) -> tonic::Request<T> {
        self.sign(&format!("{KMS_PATH}{method}"), message, now)
    }

    /// The signing key for `day`: derived on the first request of the day, then reused.
    fn signing_key(&self, day: String) -> Secret<[u8; 32]> {
        let cached = self.signing.read().ok().and_then(|cached| {
            cached
                .as_ref()
                .filter(|(d, _)| *d == day)
                .map(|(_, k)| Secret::new(*k.expose()))
        });
        if let Some(key) = cached {
            return key;
        }
        let key = Secret::new(signing_key(
            self.credentials.secret_access_key.expose(),
            &day,
            &self.credentials.region,
        ));
        if let Ok(mut cached) = self.signing.write() {
            *cached = Some((day, Secret::new(*key.expose())));
        }
        key
    }

    fn sign<T: Message>(&self, path: &str, message: T, now: i64) -> tonic::Request<T> {
        let body = message.encode_to_vec();
        let mut nonce = [0u8; 16];
        rand::thread_rng().fill_bytes(&mut nonce);
        let credentials = SigningCredentials {
            access_key_id: &self.credentials.access_key_id,
            secret: &self.credentials.secret_access_key,
            session_token: self
                .credentials
                .session_token
                .as_ref()
                .map(|t| t.expose().as_str()),
        };
        let day = format_amz_date(now)[..8].to_owned();
        let key = self.signing_key(day);
        let signed = sign_request_with_key(
            credentials,
            key.expose(),
            &self.credentials.region,
            RequestTarget {
                host: &self.authority,
                method_path: path,
            },
            &body,
            now,
            &hex::encode(nonce),
        );
        let mut request = tonic::Request::new(message);
        for (name, value) in signed.headers {
            if let Ok(mut value) = MetadataValue::try_from(value.as_str()) {
                // HPACK never indexes these: every request's are new, so indexing them would
                // only evict the headers that repeat (and a session token is a secret, which
                // `Debug` then shows as "Sensitive").
                value.set_sensitive(true);
                request.metadata_mut().insert(name, value);
            }
        }
        if let Some(id) = &self.approval_id
            && let Ok(value) = MetadataValue::try_from(id.as_str())
        {
            request
                .metadata_mut()
                .insert(crate::api::APPROVAL_ID_HEADER, value);
        }
        request
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::signature::{AUTHORIZATION, DATE_HEADER, NONCE_HEADER, TOKEN_HEADER};

    #[tokio::test]
    async fn signature_headers_are_never_indexed_by_hpack() {
        let channel = tonic::transport::Endpoint::from_static("http://127.0.0.1:1").connect_lazy();
        let credentials = ClientCredentials {
            access_key_id: "KHAKEXAMPLE".into(),
            secret_access_key: crate::secret::SecretString::new("secret".into()),
            session_token: Some(crate::secret::SecretString::new("token".into())),
            region: "local".into(),
        };
        let client = Client::from_channel(channel, "127.0.0.1:1", credentials);
        let request = client.signed("Encrypt", crate::proto::v1::EncryptRequest::default());
        for name in [AUTHORIZATION, DATE_HEADER, NONCE_HEADER, TOKEN_HEADER] {
            let value = request.metadata().get(name).expect(name);
            assert!(value.is_sensitive(), "{name}");
        }
    }
}
