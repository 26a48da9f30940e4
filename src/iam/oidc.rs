//! OpenID Connect identity providers (IAM's `CreateOpenIDConnectProvider`) and the check of
//! the web identity tokens they issue (STS `AssumeRoleWithWebIdentity`).
//!
//! A provider is named by its issuer URL without the scheme (`issuer.example/path`), as AWS
//! names it; its ARN is `arn:<partition>:iam::<account>:oidc-provider/<name>`. It holds the
//! audiences (client ids) its tokens may be for and its signing keys as a JWKS document: given
//! when the provider is registered, or fetched then from the issuer (its discovery document's
//! `jwks_uri`, see [`super::jwks_fetch`]). Keys fetched are fetched again when a token names
//! a key the provider does not hold (the issuer rotated its keys), at most once per
//! [`REFETCH_INTERVAL`] seconds.
//!
//! A token is accepted when: its header names `RS256` or `ES256` (never `none`, nor a MAC
//! algorithm a public key could be misused as the secret of) and a `kid` of the provider's
//! JWKS; its signature verifies under that key; its `iss` is the provider's URL, its `aud`
//! one of the provider's audiences; it is not expired (`exp`) nor early (`nbf`), with 60
//! seconds of clock skew allowed; and it names a subject (`sub`).

use crate::clock::UnixSeconds;
use crate::store::{Changed, Store, StoreError, WriteBatch};
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

const PROVIDER_PREFIX: &str = "iam/oidc-provider/";
/// How far a token's times may be off the daemon's clock.
pub const CLOCK_SKEW_SECONDS: u64 = 60;
/// The most providers an account registers (AWS: 100).
pub const MAX_PROVIDERS: usize = 100;
/// The most audiences a provider lists (AWS: 100).
pub const MAX_AUDIENCES: usize = 100;
/// The largest JWKS document a provider holds.
pub const MAX_JWKS_BYTES: usize = 64 * 1024;
/// The largest token accepted.
pub const MAX_TOKEN_BYTES: usize = 20_000;
/// The least time between two fetches of a provider's keys for tokens naming unknown keys.
pub const REFETCH_INTERVAL: UnixSeconds = 300;

/// A registered provider, as stored.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct OidcProvider {
    /// The issuer URL, as tokens name it in `iss`.
    pub url: String,
    pub client_ids: Vec<String>,
    /// The provider's signing keys (a JWKS document).
    pub jwks: String,
    pub created: UnixSeconds,
    /// Where the keys were fetched from, when they were (absent: given at registration).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwks_uri: Option<String>,
    /// When the keys were last fetched.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fetched: Option<UnixSeconds>,
}

impl OidcProvider {
    /// The provider's name: its URL without the scheme.
    pub fn name(&self) -> &str {
        provider_name(&self.url)
    }
}

/// The name of the provider of issuer `url` (the URL without `https://`).
pub fn provider_name(url: &str) -> &str {
    url.strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))
        .unwrap_or(url)
}

/// Why a registration or a token is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OidcError {
    /// The provider does not exist.
    NotFound(String),
    AlreadyExists(String),
    Validation(String),
    LimitExceeded(String),
    /// The token cannot be trusted (STS `InvalidIdentityToken`).
    InvalidToken(String),
    /// The token names a key the provider does not hold (STS `InvalidIdentityToken`).
    UnknownKey(String),
    /// The issuer's keys could not be fetched.
    Fetch(String),
    /// The token's time is over (STS `ExpiredTokenException`).
    Expired(String),
    /// The token is genuine but a claim is refused (STS `IDPRejectedClaim`).
    RejectedClaim(String),
    Store(String),
}

impl From<StoreError> for OidcError {
    fn from(error: StoreError) -> Self {
        OidcError::Store(error.to_string())
    }
}

/// What a verified token says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebIdentity {
    /// The provider's name (`issuer.example/path`).
    pub provider: String,
    pub subject: String,
    pub audience: String,
    pub issued_at: Option<i64>,
    /// The token's `amr` (how the user authenticated), when it has one.
    pub authentication_methods: Vec<String>,
    /// The token's `azp` (the party it was issued to), when it has one.
    pub authorized_party: Option<String>,
}

#[derive(Debug, Deserialize)]
struct Claims {
    #[serde(default)]
    sub: Option<String>,
    #[serde(default)]
    aud: Option<Audience>,
    #[serde(default)]
    iat: Option<i64>,
    #[serde(default)]
    amr: Option<Audience>,
    #[serde(default)]
    azp: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Audience {
    One(String),
    Many(Vec<String>),
}

/// The providers of one account.
pub struct OidcProviders {
    store: Arc<Store>,
    providers: RwLock<BTreeMap<String, OidcProvider>>,
    /// Fetches issuers' keys; none: every provider's keys are given at registration.
    fetcher: std::sync::OnceLock<super::jwks_fetch::JwksFetcher>,
    /// One refetch at a time, and never beside a deletion: a fetch finishing after the
    /// provider was deleted must not bring it back.
    refetching: tokio::sync::Mutex<()>,
    /// When each provider's keys were last tried (in this daemon), fetched or not.
    attempts: std::sync::Mutex<std::collections::HashMap<String, UnixSeconds>>,
}

fn record_name(name: &str) -> String {
    format!("{PROVIDER_PREFIX}{name}")
}

/// The keys of a JWKS document, each usable for RS256 or ES256.
fn parse_jwks(text: &str) -> Result<JwkSet, OidcError> {
    if text.len() > MAX_JWKS_BYTES {
        return Err(OidcError::Validation(format!(
            "the JWKS document is larger than {MAX_JWKS_BYTES} bytes"
        )));
    }
    let set: JwkSet = serde_json::from_str(text)
        .map_err(|e| OidcError::Validation(format!("the JWKS document does not parse: {e}")))?;
    if set.keys.is_empty() {
        return Err(OidcError::Validation(
            "the JWKS document has no keys".into(),
        ));
    }
    for key in &set.keys {
        use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve};
        let usable = match &key.algorithm {
            AlgorithmParameters::RSA(_) => true,
            AlgorithmParameters::EllipticCurve(ec) => ec.curve == EllipticCurve::P256,
            _ => false,
        };
        if !usable {
            return Err(OidcError::Validation(
                "the JWKS document may hold RSA and EC P-256 public keys only".into(),
            ));
        }
        if key.common.key_id.as_deref().is_none_or(str::is_empty) {
            return Err(OidcError::Validation(
                "every key of the JWKS document needs a kid".into(),
            ));
        }
        DecodingKey::from_jwk(key).map_err(|e| {
            OidcError::Validation(format!(
                "key {} of the JWKS document is not an RSA or EC public key: {e}",
                key.common.key_id.as_deref().unwrap_or_default()
            ))
        })?;
    }
    Ok(set)
}

impl OidcProviders {
    pub fn open(store: Arc<Store>) -> Result<Self, StoreError> {
        let providers = Self::load(&store)?;
        Ok(Self {
            store,
            providers: RwLock::new(providers),
            fetcher: std::sync::OnceLock::new(),
            refetching: tokio::sync::Mutex::new(()),
            attempts: Default::default(),
        })
    }

    /// Lets providers be registered without keys: they are fetched from their issuer.
    pub fn fetch_with(&self, fetcher: super::jwks_fetch::JwksFetcher) {
        let _ = self.fetcher.set(fetcher);
    }

    fn load(store: &Store) -> Result<BTreeMap<String, OidcProvider>, StoreError> {
        let mut providers = BTreeMap::new();
        for (_, value) in store.scan(PROVIDER_PREFIX.as_bytes(), None, usize::MAX)? {
            let provider: OidcProvider = serde_json::from_slice(&value)
                .map_err(|e| StoreError(format!("an OIDC provider record does not parse: {e}")))?;
            providers.insert(provider.name().to_owned(), provider);
        }
        Ok(providers)
    }

    /// Reads the providers again when another daemon changed one.
    pub fn heard(&self, changed: Changed<'_>) {
        let relevant = match changed {
            Changed::All(_) => true,
            Changed::Records(names, _) => names
                .iter()
                .any(|n| n.starts_with(PROVIDER_PREFIX.as_bytes())),
        };
        if relevant {
            match Self::load(&self.store) {
                Ok(providers) => {
                    if let Ok(mut slot) = self.providers.write() {
                        *slot = providers;
                    }
                }
                Err(error) => tracing::error!(%error, "cannot read the OIDC providers again"),
            }
        }
    }

    pub fn list(&self) -> Vec<OidcProvider> {
        self.providers
            .read()
            .map(|p| p.values().cloned().collect())
            .unwrap_or_default()
    }

    pub fn get(&self, name: &str) -> Option<OidcProvider> {
        self.providers.read().ok()?.get(name).cloned()
    }

    /// Registers a provider, with the keys `jwks` holds, or (empty) with the keys fetched
    /// from the issuer.
    pub async fn create(
        &self,
        url: &str,
        client_ids: Vec<String>,
        jwks: &str,
        now: UnixSeconds,
    ) -> Result<OidcProvider, OidcError> {
        let https = url.strip_prefix("https://").unwrap_or_default();
        if https.is_empty()
            || https.len() > 255
            || https.contains(['?', '#', ' '])
            || https.ends_with('/')
        {
            return Err(OidcError::Validation(format!(
                "Url must be an https:// URL without query, fragment or trailing slash; got {:?}",
                crate::keys::printable_input(url)
            )));
        }
        if client_ids.is_empty() || client_ids.len() > MAX_AUDIENCES {
            return Err(OidcError::Validation(format!(
                "ClientIDList must name 1 to {MAX_AUDIENCES} audiences"
            )));
        }
        if client_ids.iter().any(|c| c.is_empty() || c.len() > 255) {
            return Err(OidcError::Validation(
                "an audience (client id) is 1 to 255 characters".into(),
            ));
        }
        let (jwks, jwks_uri, fetched) = if jwks.is_empty() {
            let fetcher = self.fetcher.get().ok_or_else(|| {
                OidcError::Validation(
                    "give the provider's JWKS: this daemon does not fetch issuers' keys".into(),
                )
            })?;
            if self.get(provider_name(url)).is_some() {
                return Err(OidcError::AlreadyExists(format!(
                    "an OIDC provider for {url} exists already"
                )));
            }
            let fetched = fetcher.fetch(url).await?;
            (fetched.jwks, Some(fetched.jwks_uri), Some(now))
        } else {
            (jwks.to_owned(), None, None)
        };
        parse_jwks(&jwks)?;
        let provider = OidcProvider {
            url: url.to_owned(),
            client_ids,
            jwks,
            created: now,
            jwks_uri,
            fetched,
        };
        {
            let providers = self
                .providers
                .read()
                .map_err(|_| OidcError::Store("lock poisoned".into()))?;
            if providers.contains_key(provider.name()) {
                return Err(OidcError::AlreadyExists(format!(
                    "an OIDC provider for {url} exists already"
                )));
            }
            if providers.len() >= MAX_PROVIDERS {
                return Err(OidcError::LimitExceeded(format!(
                    "the account has {MAX_PROVIDERS} OIDC providers, its most"
                )));
            }
        }
        let mut batch = WriteBatch::new();
        let name = record_name(provider.name());
        batch.put(
            name.clone(),
            serde_json::to_vec(&provider).map_err(|e| OidcError::Store(e.to_string()))?,
        );
        batch.require_unchanged(name, self.store.view());
        self.commit(batch).await?;
        if let Ok(mut providers) = self.providers.write() {
            providers.insert(provider.name().to_owned(), provider.clone());
        }
        Ok(provider)
    }

    pub async fn delete(&self, name: &str) -> Result<(), OidcError> {
        let _no_refetch = self.refetching.lock().await;
        if self.get(name).is_none() {
            return Err(OidcError::NotFound(format!(
                "no OIDC provider named {}",
                crate::keys::printable_input(name)
            )));
        }
        let mut batch = WriteBatch::new();
        batch.delete(record_name(name));
        self.commit(batch).await?;
        if let Ok(mut providers) = self.providers.write() {
            providers.remove(name);
        }
        Ok(())
    }

    async fn commit(&self, batch: WriteBatch) -> Result<(), OidcError> {
        match self.store.try_commit(batch).await {
            Ok(()) => Ok(()),
            Err(crate::store::CommitError::Stale) => Err(OidcError::AlreadyExists(
                "another daemon registered the provider at the same time".into(),
            )),
            Err(error) => Err(StoreError::from(error).into()),
        }
    }

    /// Verifies `token` (see the module's introduction) at `now`.
    pub fn verify(&self, token: &str, now: UnixSeconds) -> Result<WebIdentity, OidcError> {
        let invalid = |why: &str| OidcError::InvalidToken(why.to_owned());
        if token.len() > MAX_TOKEN_BYTES {
            return Err(invalid("the token is too long"));
        }
        let header = jsonwebtoken::decode_header(token)
            .map_err(|_| invalid("the token is not a signed JWT"))?;
        if !matches!(header.alg, Algorithm::RS256 | Algorithm::ES256) {
            return Err(invalid("the token's algorithm must be RS256 or ES256"));
        }
        // The issuer, read before the signature is checked, only picks the provider whose
        // keys must then verify it.
        let issuer = unverified_issuer(token).ok_or_else(|| invalid("the token names no iss"))?;
        let provider = self.get(provider_name(&issuer)).ok_or_else(|| {
            invalid("no OpenID Connect provider of this account issues tokens for this iss")
        })?;
        if provider.url != issuer {
            return Err(invalid("the token's iss is not the provider's URL"));
        }
        // Checked whole when the provider was registered: here only read.
        let jwks: JwkSet = serde_json::from_str(&provider.jwks)
            .map_err(|_| invalid("the provider's JWKS is unreadable"))?;
        let kid = header
            .kid
            .as_deref()
            .ok_or_else(|| invalid("the token's header names no kid"))?;
        let jwk = jwks.find(kid).ok_or_else(|| {
            OidcError::UnknownKey("the token's kid is not a key of the provider".into())
        })?;
        let key =
            DecodingKey::from_jwk(jwk).map_err(|_| invalid("the provider's key is unusable"))?;
        let mut validation = Validation::new(header.alg);
        validation.leeway = CLOCK_SKEW_SECONDS;
        // `exp` and `nbf` are judged below on the daemon's clock, not the system's.
        validation.validate_nbf = false;
        validation.set_issuer(&[&provider.url]);
        validation.set_audience(&provider.client_ids);
        validation.set_required_spec_claims(&["exp", "iss", "aud"]);
        validation.validate_exp = false;
        let data = jsonwebtoken::decode::<serde_json::Value>(token, &key, &validation).map_err(
            |e| match e.kind() {
                jsonwebtoken::errors::ErrorKind::InvalidAudience => {
                    invalid("the token's aud is not an audience of the provider")
                }
                jsonwebtoken::errors::ErrorKind::InvalidIssuer => {
                    invalid("the token's iss is not the provider's URL")
                }
                jsonwebtoken::errors::ErrorKind::ImmatureSignature => {
                    OidcError::RejectedClaim("the token is not valid yet (nbf)".into())
                }
                jsonwebtoken::errors::ErrorKind::InvalidSignature => {
                    invalid("the token's signature does not verify")
                }
                _ => invalid("the token cannot be verified"),
            },
        )?;
        let exp = data.claims.get("exp").and_then(serde_json::Value::as_i64);
        match exp {
            Some(exp) if exp.saturating_add(CLOCK_SKEW_SECONDS as i64) >= now => {}
            Some(_) => return Err(OidcError::Expired("the token has expired".into())),
            None => return Err(invalid("the token's exp is not a number")),
        }
        if let Some(nbf) = data.claims.get("nbf").and_then(serde_json::Value::as_i64)
            && nbf > now.saturating_add(CLOCK_SKEW_SECONDS as i64)
        {
            return Err(OidcError::RejectedClaim(
                "the token is not valid yet (nbf)".into(),
            ));
        }
        let claims: Claims = serde_json::from_value(data.claims)
            .map_err(|_| invalid("the token's claims do not parse"))?;
        let subject = claims
            .sub
            .filter(|s| !s.is_empty())
            .ok_or_else(|| OidcError::RejectedClaim("the token names no subject (sub)".into()))?;
        let audience = match claims.aud {
            Some(Audience::One(one)) => one,
            Some(Audience::Many(many)) => many
                .into_iter()
                .find(|a| provider.client_ids.contains(a))
                .unwrap_or_default(),
            None => String::new(),
        };
        let authentication_methods = match claims.amr {
            Some(Audience::One(one)) => vec![one],
            Some(Audience::Many(many)) => many,
            None => Vec::new(),
        };
        Ok(WebIdentity {
            provider: provider.name().to_owned(),
            subject,
            audience,
            issued_at: claims.iat,
            authentication_methods,
            authorized_party: claims.azp.filter(|a| !a.is_empty()),
        })
    }
}

impl OidcProviders {
    /// [`verify`](Self::verify), fetching the provider's keys again first when the token names
    /// a key it does not hold, its keys were fetched, and not within [`REFETCH_INTERVAL`].
    pub async fn verify_fetching(
        &self,
        token: &str,
        now: UnixSeconds,
    ) -> Result<WebIdentity, OidcError> {
        match self.verify(token, now) {
            Err(OidcError::UnknownKey(why)) => {
                let provider =
                    unverified_issuer(token).and_then(|issuer| self.get(provider_name(&issuer)));
                match (provider, self.fetcher.get()) {
                    (Some(provider), Some(fetcher)) => {
                        if self.refetch(&provider, fetcher, now).await? {
                            self.verify(token, now)
                        } else {
                            Err(OidcError::UnknownKey(why))
                        }
                    }
                    _ => Err(OidcError::UnknownKey(why)),
                }
            }
            other => other,
        }
    }

    /// Fetches `provider`'s keys again, if they were fetched and were not tried lately;
    /// whether they were. At most one fetch runs at a time: a token arriving meanwhile is
    /// judged on the keys held (no caller waits on another's fetch), and a provider is tried
    /// at most once per [`REFETCH_INTERVAL`] whether the fetch succeeds or not, so tokens
    /// naming unknown keys, which need no valid signature, cannot make the daemon fetch at
    /// will.
    async fn refetch(
        &self,
        provider: &OidcProvider,
        fetcher: &super::jwks_fetch::JwksFetcher,
        now: UnixSeconds,
    ) -> Result<bool, OidcError> {
        let Some(jwks_uri) = &provider.jwks_uri else {
            return Ok(false);
        };
        let Ok(_one) = self.refetching.try_lock() else {
            return Ok(false);
        };
        let since = self.store.view();
        // Read again under the lock: a fetch may just have happened, here or elsewhere.
        let Some(current) = self.get(provider.name()) else {
            return Ok(false);
        };
        let recent = |at: Option<UnixSeconds>| {
            at.is_some_and(|at| now.saturating_sub(at) < REFETCH_INTERVAL)
        };
        {
            let Ok(mut attempts) = self.attempts.lock() else {
                return Ok(false);
            };
            if recent(current.fetched) || recent(attempts.get(current.name()).copied()) {
                return Ok(false);
            }
            attempts.insert(current.name().to_owned(), now);
        }
        let jwks = fetcher.jwks(jwks_uri).await?;
        parse_jwks(&jwks).map_err(|e| {
            tracing::warn!(provider = %current.name(), error = ?e, "the issuer's keys fetched again are unusable");
            OidcError::Fetch(format!(
                "the keys of {} could not be fetched again",
                current.name()
            ))
        })?;
        let refreshed = OidcProvider {
            jwks,
            fetched: Some(now),
            ..current
        };
        let mut batch = WriteBatch::new();
        let name = record_name(refreshed.name());
        batch.put(
            name.clone(),
            serde_json::to_vec(&refreshed).map_err(|e| OidcError::Store(e.to_string()))?,
        );
        // Never brings back a provider another daemon deleted meanwhile (deletions here
        // wait for the lock held).
        batch.require_present_unchanged(name, since);
        match self.store.try_commit(batch).await {
            Ok(()) => {}
            // Another daemon changed it (perhaps fetched the same keys): judge the token on
            // what it stored.
            Err(crate::store::CommitError::Stale) => {
                self.store.catch_up().await?;
                return Ok(true);
            }
            Err(error) => return Err(OidcError::Store(StoreError::from(error).to_string())),
        }
        tracing::info!(provider = %refreshed.name(), "fetched the OIDC provider's keys again");
        if let Ok(mut providers) = self.providers.write() {
            providers.insert(refreshed.name().to_owned(), refreshed);
        }
        Ok(true)
    }
}

/// The `iss` of a JWT's payload, read without checking anything.
fn unverified_issuer(token: &str) -> Option<String> {
    use base64::Engine as _;
    let payload = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .ok()?;
    let value: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    value.get("iss")?.as_str().map(str::to_owned)
}
