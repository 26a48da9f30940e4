//! Access keys, temporary credentials and request authentication.
//!
//! Secret access keys are stored wrapped under the master key (bound to the record name
//! `credential/<access key id>`) and held in memory, zeroized on drop, to verify signatures:
//! like AWS, the verifier needs the secret itself, but the secret never travels. Session tokens
//! of temporary credentials are stored only as their SHA-256.

use super::certificate::{CertificateBindings, PeerCertificate};
use super::mfa::MfaDevices;
use super::signature;
use super::{
    AuthError, Caller, CredentialKind, Principal, PrincipalDirectory, PrincipalKind, ReplayCache,
};
use crate::clock::{Clock, UnixSeconds};
use crate::seal::MasterKey;
use crate::secret::{Locked, LockedText, Secret, SecretString};
use crate::store::{Store, StoreError, WriteBatch};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD as B64, URL_SAFE_NO_PAD as B64URL};
use rand::{Rng, RngCore};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::{Arc, OnceLock, RwLock};

mod seen;
mod signed;
mod temporary;

use seen::parse_seen_name;
pub use seen::wait_past_accepted;
pub(crate) use signed::host_accepted;
pub use signed::{SignatureDoor, SignedRequest};

const CREDENTIAL_PREFIX: &[u8] = b"credential/";
/// A request's timestamp may be this far from the server's clock.
pub const MAX_SKEW_SECONDS: i64 = 300;
/// A user holds at most this many access keys.
pub const MAX_ACCESS_KEYS_PER_USER: usize = 2;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum AccessKeyStatus {
    Active,
    Inactive,
}

impl AccessKeyStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            AccessKeyStatus::Active => "Active",
            AccessKeyStatus::Inactive => "Inactive",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "Active" => Some(AccessKeyStatus::Active),
            "Inactive" => Some(AccessKeyStatus::Inactive),
            _ => None,
        }
    }
}

/// A new access key, as shown once to whoever created it.
#[derive(Debug, Clone)]
pub struct NewAccessKey {
    pub credentials: Credentials,
    pub principal_arn: String,
    pub created: UnixSeconds,
    pub expires: Option<UnixSeconds>,
}

/// What a client signs with.
#[derive(Debug, Clone)]
pub struct Credentials {
    pub access_key_id: String,
    pub secret_access_key: SecretString,
    pub session_token: Option<SecretString>,
}

/// An access key as listed (never with its secret).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessKeyInfo {
    pub access_key_id: String,
    pub status: AccessKeyStatus,
    pub created: UnixSeconds,
}

/// Why an access-key change was refused.
#[derive(Debug, thiserror::Error)]
pub enum CredentialError {
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    LimitExceeded(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct AccessKeyRecord {
    access_key_id: String,
    /// `root`, `user/<name>` or `assumed-role/<role>/<session>`: the ARN is built with the
    /// daemon's partition and account.
    principal: String,
    status: AccessKeyStatus,
    created: UnixSeconds,
    wrapped_secret: String,
    /// Temporary credentials: when they stop working.
    #[serde(default)]
    expires: Option<UnixSeconds>,
    /// Temporary credentials: hex SHA-256 of the session token.
    #[serde(default)]
    session_token_sha256: Option<String>,
    /// The unique id of the user or role it was issued to (see [`PrincipalDirectory`]).
    /// Absent for the root's key, and for keys made before ids were recorded: those are bound
    /// to the name alone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    principal_id: Option<String>,
    /// Temporary credentials issued against an MFA code: when the code was accepted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    mfa_authenticated: Option<UnixSeconds>,
    /// A user's session from a sign-in with a password (a console session).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    signed_in: bool,
}

impl AccessKeyRecord {
    fn credential_kind(&self) -> CredentialKind {
        if self.session_token_sha256.is_some() {
            CredentialKind::Temporary {
                mfa_authenticated: self.mfa_authenticated,
                signed_in: self.signed_in,
            }
        } else {
            CredentialKind::LongTerm
        }
    }
}

struct AccessKeyEntry {
    record: AccessKeyRecord,
    principal: Arc<Principal>,
    /// Long-lived, as is its signing key: both out of core dumps and swap.
    secret: LockedText,
    /// The signing key of the last (date, region) it signed for: derived once a day rather
    /// than with four HMACs on every request.
    signing: RwLock<Option<SigningKey>>,
}

struct SigningKey {
    date: String,
    region: String,
    service: String,
    key: Locked<Secret<[u8; 32]>>,
}

impl AccessKeyEntry {
    fn signing_key(&self, date: &str, region: &str, service: &str) -> Secret<[u8; 32]> {
        if let Ok(cached) = self.signing.read()
            && let Some(k) = cached.as_ref()
            && k.date == date
            && k.region == region
            && k.service == service
        {
            return Secret::new(*k.key.expose());
        }
        let key = Secret::new(signature::signing_key_for(
            self.secret.expose(),
            date,
            region,
            service,
        ));
        if let Ok(mut cached) = self.signing.write() {
            *cached = Some(SigningKey {
                date: date.to_owned(),
                region: region.to_owned(),
                service: service.to_owned(),
                key: Locked::new(Secret::new(*key.expose())),
            });
        }
        key
    }
}

fn record_name(access_key_id: &str) -> Vec<u8> {
    let mut name = CREDENTIAL_PREFIX.to_vec();
    name.extend_from_slice(access_key_id.as_bytes());
    name
}

/// The principal a stored credential belongs to.
pub fn principal(resource: &str, partition: &str, account_id: &str) -> Option<Principal> {
    let (arn, kind) = if resource == "root" {
        (
            format!("arn:{partition}:iam::{account_id}:root"),
            PrincipalKind::Root,
        )
    } else if let Some(name) = resource.strip_prefix("user/") {
        if name.is_empty() {
            return None;
        }
        (
            format!("arn:{partition}:iam::{account_id}:{resource}"),
            PrincipalKind::User {
                name: name.to_owned(),
            },
        )
    } else if let Some(rest) = resource.strip_prefix("assumed-role/") {
        let (role, session) = rest.split_once('/')?;
        if role.is_empty() || session.is_empty() {
            return None;
        }
        (
            format!("arn:{partition}:sts::{account_id}:{resource}"),
            PrincipalKind::AssumedRole {
                role: role.to_owned(),
                session: session.to_owned(),
            },
        )
    } else {
        return None;
    };
    Some(Principal {
        arn,
        account_id: account_id.to_owned(),
        kind,
    })
}

/// Whether `id` has the shape of an access key id: AWS's, 16 to 128 of A–Z and 0–9 (ours are
/// 20). Anything else a request names is not worth keeping verbatim in the audit log.
pub fn is_well_formed_access_key_id(id: &str) -> bool {
    (16..=128).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit())
}

/// A fresh access key id (`prefix` + 16 of A–Z, 2–7, like AWS's `AKIA…`) and secret.
fn generate_key_pair(prefix: &str) -> (String, SecretString) {
    const BASE32: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let mut rng = rand::rngs::OsRng;
    let id: String = std::iter::once(prefix.to_owned())
        .chain((0..16).map(|_| (BASE32[rng.gen_range(0..32)] as char).to_string()))
        .collect();
    let mut raw = [0u8; 30];
    rng.fill(&mut raw);
    let secret = SecretString::new(B64.encode(raw));
    zeroize::Zeroize::zeroize(&mut raw);
    (id, secret)
}

fn new_record(
    master: &MasterKey,
    principal: &str,
    now: UnixSeconds,
    prefix: &str,
) -> Result<(AccessKeyRecord, SecretString), StoreError> {
    let (access_key_id, secret) = generate_key_pair(prefix);
    let wrapped = master.wrap(&record_name(&access_key_id), secret.expose().as_bytes());
    Ok((
        AccessKeyRecord {
            access_key_id,
            principal: principal.to_owned(),
            status: AccessKeyStatus::Active,
            created: now,
            wrapped_secret: B64.encode(wrapped),
            expires: None,
            session_token_sha256: None,
            principal_id: None,
            mfa_authenticated: None,
            signed_in: false,
        },
        secret,
    ))
}

fn encode(record: &AccessKeyRecord) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec(record).map_err(|e| StoreError(e.to_string()))
}

/// A signature accepted for a request, and the second after which a replay of it is refused
/// on its timestamp anyway.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SignatureUse {
    signature: [u8; 32],
    expires: UnixSeconds,
    /// The store's view when the replay cache was asked (see `Store::view`): on a store other
    /// daemons share, the signature must not have been stored by another since.
    view: i64,
}

/// The daemon's access keys, and the check of every request's signature.
pub struct CredentialStore {
    master: Arc<MasterKey>,
    store: Arc<Store>,
    clock: Arc<dyn Clock>,
    partition: String,
    region: String,
    account_id: String,
    keys: RwLock<HashMap<String, Arc<AccessKeyEntry>>>,
    /// Who exists now: a credential whose principal is gone does not authenticate. Unset only
    /// where no identity service runs (the root's key needs none).
    directory: OnceLock<Arc<dyn PrincipalDirectory>>,
    /// Serialises changes (so the per-user limit holds under concurrency).
    gate: tokio::sync::Mutex<()>,
    replay: ReplayCache,
    /// When this run of the daemon began serving (or, after a restart within the second an
    /// earlier run accepted calls in, the second after): signatures dated earlier are
    /// refused, since only the stored ones (reads and changes dated ahead, every change on a
    /// shared store) outlive a restart. A member account opened later takes the run's start
    /// too ([`Self::open_from`]).
    started: UnixSeconds,
    /// On a store one daemon writes: the latest second up to which this run accepted a call
    /// that may change state without storing its signature (see `seen`).
    accepted_until: std::sync::Mutex<UnixSeconds>,
    /// The `:authority` values requests may be addressed to; empty: any (behind a proxy, the
    /// name clients use may be one the daemon cannot know). Either way the value is signed.
    accepted_hosts: Vec<String>,
    /// Client-certificate identities bound to users and roles.
    certificates: CertificateBindings,
    /// The account's virtual MFA devices.
    mfa: MfaDevices,
}

impl CredentialStore {
    /// Makes the account root's access key: the records to write and the key to show.
    pub fn new_root_access_key(
        master: &MasterKey,
        partition: &str,
        account_id: &str,
        now: UnixSeconds,
    ) -> Result<(WriteBatch, NewAccessKey), StoreError> {
        let (record, secret) = new_record(master, "root", now, "KHAK")?;
        let mut batch = WriteBatch::new();
        batch.put(record_name(&record.access_key_id), encode(&record)?);
        let principal_arn = Principal::root(partition, account_id).arn;
        Ok((
            batch,
            NewAccessKey {
                credentials: Credentials {
                    access_key_id: record.access_key_id,
                    secret_access_key: secret,
                    session_token: None,
                },
                principal_arn,
                created: now,
                expires: None,
            },
        ))
    }

    /// Loads and unwraps every access key.
    pub fn open(
        master: Arc<MasterKey>,
        store: Arc<Store>,
        clock: Arc<dyn Clock>,
        partition: &str,
        region: &str,
        account_id: &str,
    ) -> Result<Self, StoreError> {
        let from = clock.now();
        Self::open_from(master, store, clock, partition, region, account_id, from)
    }

    /// [`Self::open`] for a run of the daemon that began serving at `from`: a member account,
    /// opened after the management account (at start, or while the daemon serves, when it has
    /// been made since). This run accepted no call for it before, so signatures dated from
    /// `from` on are accepted, and those stored from then on are read into the replay cache
    /// (here; those other daemons store while the account is being opened reach it as
    /// changes heard once it is open, see [`Self::heard`]). A call signed as the account was
    /// being made is not refused as dated before the daemon started.
    pub fn open_from(
        master: Arc<MasterKey>,
        store: Arc<Store>,
        clock: Arc<dyn Clock>,
        partition: &str,
        region: &str,
        account_id: &str,
        from: UnixSeconds,
    ) -> Result<Self, StoreError> {
        let mut keys = HashMap::new();
        for (name, value) in store.scan(CREDENTIAL_PREFIX, None, usize::MAX)? {
            let label = String::from_utf8_lossy(&name).into_owned();
            let record: AccessKeyRecord = serde_json::from_slice(&value)
                .map_err(|e| StoreError(format!("{label} is damaged: {e}")))?;
            let entry = Self::unwrap_entry(&master, record, partition, account_id)
                .map_err(|e| StoreError(format!("{label}: {e}")))?;
            keys.insert(entry.record.access_key_id.clone(), Arc::new(entry));
        }
        // The signatures of state changes made before a restart are still refused: those
        // stored, by the replay cache; the others, on their date.
        let until = seen::accepted_until(&store)?;
        let now = seen::first_second(until, from);
        let replay = seen::load(&store, now)?;
        let certificates = CertificateBindings::open(store.clone())?;
        let mfa = MfaDevices::open(
            master.clone(),
            store.clone(),
            clock.clone(),
            partition,
            account_id,
        )?;
        Ok(Self {
            master,
            store,
            clock,
            partition: partition.to_owned(),
            region: region.to_owned(),
            account_id: account_id.to_owned(),
            keys: RwLock::new(keys),
            directory: OnceLock::new(),
            gate: tokio::sync::Mutex::new(()),
            replay,
            started: now,
            accepted_until: std::sync::Mutex::new(until.unwrap_or(UnixSeconds::MIN)),
            accepted_hosts: Vec::new(),
            certificates,
            mfa,
        })
    }

    /// When this run of the daemon began accepting signatures for the account (see
    /// [`Self::open_from`]).
    pub fn started(&self) -> UnixSeconds {
        self.started
    }

    /// The account's virtual MFA devices.
    pub fn mfa(&self) -> &MfaDevices {
        &self.mfa
    }

    /// The client-certificate identities bound to users and roles.
    pub fn certificates(&self) -> &CertificateBindings {
        &self.certificates
    }

    /// Authenticates a call that carries no signature by the client certificate the TLS
    /// layer verified: see [`CertificateBindings::authenticate`].
    pub fn authenticate_certificate(
        &self,
        certificate: &PeerCertificate,
    ) -> Result<Caller, AuthError> {
        let (principal, credential) = self.certificates.authenticate(
            certificate,
            self.clock.now(),
            self.directory.get().map(|d| d.as_ref()),
            &self.partition,
            &self.account_id,
        )?;
        Ok(Caller {
            principal,
            access_key_id: String::new(),
            certificate: Some(credential),
            credential_kind: CredentialKind::LongTerm,
        })
    }

    /// Tells the store who exists, once, when the identity service opens. Keys stored before
    /// principal ids were recorded are bound then to the id their principal has now, durably:
    /// bound to a name alone, a key would pass to a namesake made after its user was deleted.
    /// A key whose principal no longer exists could only ever serve such a namesake: it is
    /// deleted. Returns how many keys were bound or deleted (none once done).
    pub fn bind_directory(
        &self,
        directory: Arc<dyn PrincipalDirectory>,
    ) -> Result<usize, StoreError> {
        if self.directory.set(directory.clone()).is_err() {
            tracing::warn!("the principal directory was already bound; keeping the first");
            return Ok(0);
        }
        self.bind_keys_without_ids(&*directory)
    }

    fn bind_keys_without_ids(
        &self,
        directory: &dyn PrincipalDirectory,
    ) -> Result<usize, StoreError> {
        let unbound: Vec<Arc<AccessKeyEntry>> = self
            .keys
            .read()
            .map_err(|_| StoreError("access key map lock poisoned".into()))?
            .values()
            .filter(|e| e.principal.kind != PrincipalKind::Root && e.record.principal_id.is_none())
            .cloned()
            .collect();
        if unbound.is_empty() {
            return Ok(0);
        }
        let mut batch = WriteBatch::new();
        let mut bound = Vec::new();
        let mut deleted = Vec::new();
        for entry in &unbound {
            let name = record_name(&entry.record.access_key_id);
            match directory.current_id(&entry.principal.kind) {
                Some(id) => {
                    let mut record = entry.record.clone();
                    record.principal_id = Some(id);
                    batch.put(name, encode(&record)?);
                    bound.push(record);
                }
                None => {
                    batch.delete(name);
                    deleted.push(entry.record.access_key_id.clone());
                }
            }
        }
        self.store.commit_blocking(batch)?;
        let (bound_count, deleted_count) = (bound.len(), deleted.len());
        let mut keys = self
            .keys
            .write()
            .map_err(|_| StoreError("access key map lock poisoned".into()))?;
        for record in bound {
            let id = record.access_key_id.clone();
            let entry = Self::unwrap_entry(&self.master, record, &self.partition, &self.account_id)
                .map_err(|e| StoreError(format!("access key {id}: {e}")))?;
            keys.insert(id, Arc::new(entry));
        }
        for id in &deleted {
            keys.remove(id);
        }
        tracing::info!(
            bound = bound_count,
            deleted = deleted_count,
            "access keys stored before principal ids were bound to their principal's id"
        );
        Ok(unbound.len())
    }

    /// Whether the principal `entry` was issued to still exists: a user or role of the id it
    /// was issued to (of its name, for keys older than ids).
    fn principal_exists(&self, entry: &AccessKeyEntry) -> bool {
        if entry.principal.kind == PrincipalKind::Root {
            return true;
        }
        let Some(directory) = self.directory.get() else {
            return true;
        };
        match (
            directory.current_id(&entry.principal.kind),
            &entry.record.principal_id,
        ) {
            (None, _) => false,
            (Some(current), Some(issued_to)) => current == *issued_to,
            (Some(_), None) => true,
        }
    }

    /// The entry of an access key that may sign requests now: known, active, and its
    /// principal still there.
    fn usable_entry(&self, access_key_id: &str) -> Result<Arc<AccessKeyEntry>, AuthError> {
        self.entry(access_key_id)
            .filter(|e| e.record.status == AccessKeyStatus::Active && self.principal_exists(e))
            .ok_or_else(|| AuthError::UnknownAccessKey(access_key_id.to_owned()))
    }

    /// Whether the credentials `caller` authenticated with would still be accepted now, for
    /// calls that go on after their request was authenticated (a followed audit tail): the
    /// access key is still there and active, its principal still exists, and a session has
    /// not expired. The refusal is the one a new request would get.
    pub fn still_accepted(&self, caller: &Caller) -> Result<(), AuthError> {
        if let Some(certificate) = &caller.certificate {
            return self.certificates.still_accepted(
                certificate,
                &caller.principal,
                self.clock.now(),
            );
        }
        let entry = self.usable_entry(&caller.access_key_id)?;
        if entry.record.expires.is_some_and(|t| t <= self.clock.now()) {
            return Err(AuthError::ExpiredToken);
        }
        Ok(())
    }

    /// Authenticates a call made with temporary credentials that the daemon itself holds for
    /// its caller (a console session: the browser holds a cookie, the daemon the credentials):
    /// the access key is a session's, still there and active, its principal still there, the
    /// token the one it was issued with, and not expired. No signature: the daemon is both
    /// ends of what a signature would prove.
    pub fn authenticate_session(
        &self,
        access_key_id: &str,
        session_token: &crate::secret::SecretString,
    ) -> Result<Caller, AuthError> {
        let entry = self.usable_entry(access_key_id)?;
        let Some(expected) = &entry.record.session_token_sha256 else {
            return Err(AuthError::BadSignature);
        };
        let actual = hex::encode(Sha256::digest(session_token.expose().as_bytes()));
        // Both are hashes: comparing them leaks nothing about the token.
        if &actual != expected {
            return Err(AuthError::BadSignature);
        }
        if entry.record.expires.is_some_and(|t| t <= self.clock.now()) {
            return Err(AuthError::ExpiredToken);
        }
        Ok(Caller {
            principal: entry.principal.clone(),
            access_key_id: access_key_id.to_owned(),
            certificate: None,
            credential_kind: entry.record.credential_kind(),
        })
    }

    /// Accepts only requests addressed to one of `hosts` (`name` matches `name` on any port;
    /// `name:port` that port only). Empty: any host, as long as it is signed.
    pub fn with_accepted_hosts(mut self, hosts: Vec<String>) -> Self {
        self.accepted_hosts = hosts;
        self
    }

    fn unwrap_entry(
        master: &MasterKey,
        record: AccessKeyRecord,
        partition: &str,
        account_id: &str,
    ) -> Result<AccessKeyEntry, String> {
        let wrapped = B64
            .decode(&record.wrapped_secret)
            .map_err(|e| format!("damaged: {e}"))?;
        let secret = master
            .unwrap(&record_name(&record.access_key_id), &wrapped)
            .map_err(|_| "failed to unwrap".to_string())?;
        let secret = std::str::from_utf8(secret.expose())
            .map(LockedText::new)
            .map_err(|_| "damaged".to_string())?;
        let principal = principal(&record.principal, partition, account_id)
            .ok_or_else(|| "names no principal".to_string())?;
        Ok(AccessKeyEntry {
            record,
            principal: Arc::new(principal),
            secret,
            signing: RwLock::new(None),
        })
    }

    fn entry(&self, access_key_id: &str) -> Option<Arc<AccessKeyEntry>> {
        self.keys.read().ok()?.get(access_key_id).cloned()
    }

    fn entries_of(&self, principal: &str) -> Vec<Arc<AccessKeyEntry>> {
        self.keys
            .read()
            .map(|keys| {
                keys.values()
                    .filter(|e| {
                        e.record.principal == principal && e.record.session_token_sha256.is_none()
                    })
                    .cloned()
                    .collect()
            })
            .unwrap_or_default()
    }

    async fn write(
        &self,
        records: Vec<AccessKeyRecord>,
        deleted: Vec<String>,
    ) -> Result<(), CredentialError> {
        let mut batch = WriteBatch::new();
        for record in &records {
            batch.put(record_name(&record.access_key_id), encode(record)?);
        }
        for id in &deleted {
            batch.delete(record_name(id));
        }
        self.store.commit(batch).await?;
        let mut entries = Vec::new();
        for record in records {
            let entry = Self::unwrap_entry(&self.master, record, &self.partition, &self.account_id)
                .map_err(|e| StoreError(e.to_string()))?;
            entries.push(entry);
        }
        if let Ok(mut keys) = self.keys.write() {
            for id in &deleted {
                keys.remove(id);
            }
            for entry in entries {
                keys.insert(entry.record.access_key_id.clone(), Arc::new(entry));
            }
        }
        Ok(())
    }

    /// A new access key for a user, bound to the user's unique id `user_id`; at most
    /// [`MAX_ACCESS_KEYS_PER_USER`].
    pub async fn create_access_key(
        &self,
        user: &str,
        user_id: &str,
    ) -> Result<NewAccessKey, CredentialError> {
        let principal_name = format!("user/{user}");
        let _gate = self.gate.lock().await;
        if self.entries_of(&principal_name).len() >= MAX_ACCESS_KEYS_PER_USER {
            return Err(CredentialError::LimitExceeded(format!(
                "user {user} already has {MAX_ACCESS_KEYS_PER_USER} access keys; delete one first"
            )));
        }
        let now = self.clock.now();
        let (mut record, secret) = new_record(&self.master, &principal_name, now, "KHAK")?;
        record.principal_id = Some(user_id.to_owned());
        let id = record.access_key_id.clone();
        self.write(vec![record], vec![]).await?;
        Ok(NewAccessKey {
            credentials: Credentials {
                access_key_id: id,
                secret_access_key: secret,
                session_token: None,
            },
            principal_arn: format!(
                "arn:{}:iam::{}:{principal_name}",
                self.partition, self.account_id
            ),
            created: now,
            expires: None,
        })
    }

    /// A user's access keys (ids, status, dates; never secrets).
    pub fn list_access_keys(&self, user: &str) -> Vec<AccessKeyInfo> {
        let mut keys: Vec<AccessKeyInfo> = self
            .entries_of(&format!("user/{user}"))
            .iter()
            .map(|e| AccessKeyInfo {
                access_key_id: e.record.access_key_id.clone(),
                status: e.record.status,
                created: e.record.created,
            })
            .collect();
        keys.sort_by(|a, b| (a.created, &a.access_key_id).cmp(&(b.created, &b.access_key_id)));
        keys
    }

    fn user_key(
        &self,
        user: &str,
        access_key_id: &str,
    ) -> Result<Arc<AccessKeyEntry>, CredentialError> {
        self.entry(access_key_id)
            .filter(|e| e.record.principal == format!("user/{user}"))
            .ok_or_else(|| {
                CredentialError::NotFound(format!("user {user} has no access key {access_key_id}"))
            })
    }

    pub async fn update_access_key(
        &self,
        user: &str,
        access_key_id: &str,
        status: AccessKeyStatus,
    ) -> Result<(), CredentialError> {
        let _gate = self.gate.lock().await;
        let mut record = self.user_key(user, access_key_id)?.record.clone();
        record.status = status;
        self.write(vec![record], vec![]).await
    }

    pub async fn delete_access_key(
        &self,
        user: &str,
        access_key_id: &str,
    ) -> Result<(), CredentialError> {
        let _gate = self.gate.lock().await;
        self.user_key(user, access_key_id)?;
        self.write(vec![], vec![access_key_id.to_owned()]).await
    }

    /// Deletes every credential of a principal (`user/<name>`, or every session of a role
    /// when given `assumed-role/<role>/`).
    pub async fn delete_all_of(&self, principal_prefix: &str) -> Result<(), CredentialError> {
        self.delete_where(|record| {
            record.principal == principal_prefix
                || (principal_prefix.ends_with('/')
                    && record.principal.starts_with(principal_prefix))
        })
        .await
        .map(drop)
    }

    /// Removes, under the gate, every key whose record `doomed` picks; how many.
    async fn delete_where(
        &self,
        doomed: impl Fn(&AccessKeyRecord) -> bool,
    ) -> Result<usize, CredentialError> {
        let _gate = self.gate.lock().await;
        let ids: Vec<String> = self
            .keys
            .read()
            .map(|keys| {
                keys.values()
                    .filter(|e| doomed(&e.record))
                    .map(|e| e.record.access_key_id.clone())
                    .collect()
            })
            .unwrap_or_default();
        let count = ids.len();
        if count > 0 {
            self.write(vec![], ids).await?;
        }
        Ok(count)
    }

    /// Whether `access_key_id` is one of this account's keys (long-term or temporary).
    pub fn holds_access_key(&self, access_key_id: &str) -> bool {
        self.keys
            .read()
            .is_ok_and(|keys| keys.contains_key(access_key_id))
    }

    pub fn account_id(&self) -> &str {
        &self.account_id
    }

    /// The metadata store the credentials live in.
    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    /// Takes in a change another daemon made to the store: a signature it remembered, an
    /// access key it made, changed or deleted.
    pub fn heard(&self, changed: crate::store::Changed<'_>) {
        let everything = matches!(changed, crate::store::Changed::All(_));
        let names: Vec<Vec<u8>> = match changed {
            crate::store::Changed::Records(names, _) => names.to_vec(),
            crate::store::Changed::All(_) => {
                match self.store.scan(CREDENTIAL_PREFIX, None, usize::MAX) {
                    Ok(entries) => {
                        let mut names: Vec<Vec<u8>> = entries.into_iter().map(|(n, _)| n).collect();
                        let known: Vec<Vec<u8>> = match self.keys.read() {
                            Ok(keys) => keys
                                .keys()
                                .map(|id| [CREDENTIAL_PREFIX, id.as_bytes()].concat())
                                .collect(),
                            Err(_) => Vec::new(),
                        };
                        names.extend(known);
                        names
                    }
                    Err(error) => {
                        tracing::error!(%error, "cannot read the access keys again");
                        return;
                    }
                }
            }
        };
        let now = self.clock.now();
        // What other daemons stored while this one could not hear it by name (the store's
        // history read again, or more changed while its account was being opened than were
        // kept): the signatures they accepted since this run began, which a replay to this
        // daemon must meet.
        if everything
            && let Err(error) = seen::load_into(
                &self.store,
                self.started.max(now.saturating_sub(MAX_SKEW_SECONDS)),
                now,
                &self.replay,
            )
        {
            tracing::error!(%error, "cannot read the stored signatures again");
        }
        if (everything || names.iter().any(|n| MfaDevices::holds(n)))
            && let Err(error) = self.mfa.reload()
        {
            tracing::error!(%error, "cannot read the MFA devices again");
        }
        if (everything || names.iter().any(|n| CertificateBindings::holds(n)))
            && let Err(error) = self.certificates.reload()
        {
            tracing::error!(%error, "cannot read the certificate bindings again");
        }
        for name in names {
            if let Some(used) = parse_seen_name(&name) {
                self.replay.first_use(&used.signature, used.expires, now);
            } else if let Some(id) = name.strip_prefix(CREDENTIAL_PREFIX) {
                let id = String::from_utf8_lossy(id).into_owned();
                if let Err(error) = self.reload_key(&id) {
                    tracing::error!(%error, access_key_id = %id, "cannot read an access key again");
                }
            }
        }
    }

    fn reload_key(&self, id: &str) -> Result<(), StoreError> {
        let mut name = CREDENTIAL_PREFIX.to_vec();
        name.extend_from_slice(id.as_bytes());
        let entry = match self.store.get(&name)? {
            Some(value) => {
                let record: AccessKeyRecord = serde_json::from_slice(&value)
                    .map_err(|e| StoreError(format!("{id} is damaged: {e}")))?;
                Some(
                    Self::unwrap_entry(&self.master, record, &self.partition, &self.account_id)
                        .map_err(|e| StoreError(format!("{id}: {e}")))?,
                )
            }
            None => None,
        };
        let mut keys = self
            .keys
            .write()
            .map_err(|_| StoreError("credential lock poisoned".into()))?;
        match entry {
            Some(entry) => {
                keys.insert(id.to_owned(), Arc::new(entry));
            }
            None => {
                keys.remove(id);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn principals_are_built_from_stored_names() {
        let root = principal("root", "keyhaven", "111122223333").unwrap();
        assert_eq!(root.kind, PrincipalKind::Root);
        assert_eq!(root.arn, "arn:keyhaven:iam::111122223333:root");
        let user = principal("user/alice", "aws", "111122223333").unwrap();
        assert_eq!(
            user.kind,
            PrincipalKind::User {
                name: "alice".into()
            }
        );
        assert_eq!(user.arn, "arn:aws:iam::111122223333:user/alice");
        let session = principal("assumed-role/app/s1", "aws", "111122223333").unwrap();
        assert_eq!(
            session.kind,
            PrincipalKind::AssumedRole {
                role: "app".into(),
                session: "s1".into()
            }
        );
        assert_eq!(session.arn, "arn:aws:sts::111122223333:assumed-role/app/s1");
        for bad in [
            "",
            "user/",
            "group/x",
            "Root",
            "assumed-role/app",
            "assumed-role//s",
        ] {
            assert!(principal(bad, "aws", "1").is_none(), "{bad}");
        }
    }

    #[test]
    fn generated_key_pairs_look_like_aws_keys() {
        let (id, secret) = generate_key_pair("KHAK");
        assert_eq!(id.len(), 20);
        assert!(id.starts_with("KHAK"));
        assert_eq!(secret.expose().len(), 40);
        assert_ne!(generate_key_pair("KHAK").0, id);
    }
}
