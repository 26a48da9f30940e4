//! A signed gRPC client of the key management service, used by the CLI, the tests and the
//! load generator. Every request is signed with the caller's secret access key
//! ([`crate::auth::signature`]); the secret itself is never sent.

use crate::auth::signature::{SigningCredentials, sign_request};
use crate::clock::{Clock, SystemClock};
use crate::proto::v1::identity_service_client::IdentityServiceClient;
use crate::proto::v1::key_management_service_client::KeyManagementServiceClient;
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
pub const DEFAULT_ENDPOINT: &str = "http://127.0.0.1:7878";
const KMS_PATH: &str = "/keyhaven.v1.KeyManagementService/";
const IAM_PATH: &str = "/keyhaven.v1.IdentityService/";

/// What a client signs with.
#[derive(Debug, Clone)]
pub struct ClientCredentials {
    pub access_key_id: String,
    pub secret_access_key: SecretString,
    pub session_token: Option<SecretString>,
    pub region: String,
}

impl ClientCredentials {
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

/// A connection to a Keyhaven daemon that signs every request.
#[derive(Clone)]
pub struct Client {
    kms: KeyManagementServiceClient<Channel>,
    iam: IdentityServiceClient<Channel>,
    credentials: ClientCredentials,
    clock: Arc<dyn Clock>,
}

impl Client {
    /// Connects to `endpoint` (`http://host:port`).
    pub async fn connect(endpoint: &str, credentials: ClientCredentials) -> Result<Self, String> {
        let channel = Endpoint::from_shared(endpoint.to_owned())
            .map_err(|e| format!("bad endpoint '{endpoint}': {e}"))?
            .connect_timeout(Duration::from_secs(5))
            .tcp_nodelay(true)
            .connect()
            .await
            .map_err(|e| format!("cannot reach the daemon at {endpoint}: {e}"))?;
        Ok(Self::from_channel(channel, credentials))
    }

    pub fn from_channel(channel: Channel, credentials: ClientCredentials) -> Self {
        Self {
            kms: KeyManagementServiceClient::new(channel.clone()),
            iam: IdentityServiceClient::new(channel),
            credentials,
            clock: Arc::new(SystemClock),
        }
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

    /// Wraps `message` for the identity-service method `method` (e.g. `"CreateUser"`).
    pub fn signed_iam<T: Message>(&self, method: &str, message: T) -> tonic::Request<T> {
        self.sign(&format!("{IAM_PATH}{method}"), message, self.clock.now())
    }

    /// As [`Client::signed`], with the given request time (tests of stale signatures).
    pub fn signed_at<T: Message>(&self, method: &str, message: T, now: i64) -> tonic::Request<T> {
        self.sign(&format!("{KMS_PATH}{method}"), message, now)
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
        let signed = sign_request(
            credentials,
            &self.credentials.region,
            path,
            &body,
            now,
            &hex::encode(nonce),
        );
        let mut request = tonic::Request::new(message);
        for (name, value) in signed.headers {
            if let Ok(value) = MetadataValue::try_from(value.as_str()) {
                request.metadata_mut().insert(name, value);
            }
        }
        request
    }
}
