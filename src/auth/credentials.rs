//! Access keys and request authentication.
//!
//! Secret access keys are stored wrapped under the master key (bound to the record name
//! `credential/<access key id>`) and held in memory, zeroized on drop, to verify signatures:
//! like AWS, the verifier needs the secret itself, but the secret never travels.

use super::signature::{self, REQUIRED_SIGNED};
use super::{AuthError, Caller, Principal, PrincipalKind, ReplayCache};
use crate::clock::{Clock, UnixSeconds};
use crate::seal::MasterKey;
use crate::secret::SecretString;
use crate::store::{Store, StoreError, WriteBatch};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use rand::Rng;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::{Arc, RwLock};

const CREDENTIAL_PREFIX: &[u8] = b"credential/";
/// A request's timestamp may be this far from the server's clock.
pub const MAX_SKEW_SECONDS: i64 = 300;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum AccessKeyStatus {
    Active,
    Inactive,
}

/// A new access key, as shown once to whoever created it.
#[derive(Debug, Clone)]
pub struct NewAccessKey {
    pub credentials: Credentials,
    pub principal_arn: String,
}

/// What a client signs with.
#[derive(Debug, Clone)]
pub struct Credentials {
    pub access_key_id: String,
    pub secret_access_key: SecretString,
    pub session_token: Option<String>,
}

#[derive(Debug, Serialize, Deserialize)]
struct AccessKeyRecord {
    access_key_id: String,
    /// `root` or `user/<name>`: the ARN is built with the daemon's partition and account.
    principal: String,
    status: AccessKeyStatus,
    created: UnixSeconds,
    wrapped_secret: String,
}

struct AccessKeyEntry {
    principal: Arc<Principal>,
    status: AccessKeyStatus,
    secret: SecretString,
}

fn record_name(access_key_id: &str) -> Vec<u8> {
    let mut name = CREDENTIAL_PREFIX.to_vec();
    name.extend_from_slice(access_key_id.as_bytes());
    name
}

fn principal(resource: &str, partition: &str, account_id: &str) -> Option<Principal> {
    let kind = if resource == "root" {
        PrincipalKind::Root
    } else {
        let name = resource.strip_prefix("user/")?;
        if name.is_empty() {
            return None;
        }
        PrincipalKind::User {
            name: name.to_owned(),
        }
    };
    Some(Principal {
        arn: format!("arn:{partition}:iam::{account_id}:{resource}"),
        account_id: account_id.to_owned(),
        kind,
    })
}

/// A fresh access key id (`KHAK` + 16 of A–Z, 2–7, like AWS's `AKIA…`) and secret.
fn generate_key_pair() -> (String, SecretString) {
    const BASE32: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let mut rng = rand::rngs::OsRng;
    let id: String = std::iter::once("KHAK".to_owned())
        .chain((0..16).map(|_| (BASE32[rng.gen_range(0..32)] as char).to_string()))
        .collect();
    let mut raw = [0u8; 30];
    rng.fill(&mut raw);
    let secret = SecretString::new(B64.encode(raw));
    zeroize::Zeroize::zeroize(&mut raw);
    (id, secret)
}

/// The daemon's access keys, and the check of every request's signature.
pub struct CredentialStore {
    master: Arc<MasterKey>,
    store: Arc<Store>,
    clock: Arc<dyn Clock>,
    region: String,
    keys: RwLock<HashMap<String, Arc<AccessKeyEntry>>>,
    replay: ReplayCache,
}

impl CredentialStore {
    /// Makes the account root's access key: the records to write and the key to show.
    pub fn new_root_access_key(
        master: &MasterKey,
        partition: &str,
        account_id: &str,
        now: UnixSeconds,
    ) -> Result<(WriteBatch, NewAccessKey), StoreError> {
        let principal = Principal::root(partition, account_id);
        let (access_key_id, secret) = generate_key_pair();
        let name = record_name(&access_key_id);
        let record = AccessKeyRecord {
            access_key_id: access_key_id.clone(),
            principal: "root".into(),
            status: AccessKeyStatus::Active,
            created: now,
            wrapped_secret: B64.encode(master.wrap(&name, secret.expose().as_bytes())),
        };
        let mut batch = WriteBatch::new();
        batch.put(
            name,
            serde_json::to_vec(&record).map_err(|e| StoreError(e.to_string()))?,
        );
        Ok((
            batch,
            NewAccessKey {
                credentials: Credentials {
                    access_key_id,
                    secret_access_key: secret,
                    session_token: None,
                },
                principal_arn: principal.arn,
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
        let mut keys = HashMap::new();
        for (name, value) in store.scan(CREDENTIAL_PREFIX, None, usize::MAX)? {
            let label = String::from_utf8_lossy(&name).into_owned();
            let record: AccessKeyRecord = serde_json::from_slice(&value)
                .map_err(|e| StoreError(format!("{label} is damaged: {e}")))?;
            let wrapped = B64
                .decode(&record.wrapped_secret)
                .map_err(|e| StoreError(format!("{label} is damaged: {e}")))?;
            let secret = master
                .unwrap(&name, &wrapped)
                .map_err(|_| StoreError(format!("{label} failed to unwrap")))?;
            let secret = String::from_utf8(secret.expose().clone())
                .map_err(|_| StoreError(format!("{label} is damaged")))?;
            let principal = principal(&record.principal, partition, account_id)
                .ok_or_else(|| StoreError(format!("{label} names no principal")))?;
            keys.insert(
                record.access_key_id,
                Arc::new(AccessKeyEntry {
                    principal: Arc::new(principal),
                    status: record.status,
                    secret: SecretString::new(secret),
                }),
            );
        }
        Ok(Self {
            master,
            store,
            clock,
            region: region.to_owned(),
            keys: RwLock::new(keys),
            replay: ReplayCache::default(),
        })
    }

    /// The master key and store, for the identity service to come.
    pub fn backing(&self) -> (&Arc<MasterKey>, &Arc<Store>) {
        (&self.master, &self.store)
    }

    fn entry(&self, access_key_id: &str) -> Option<Arc<AccessKeyEntry>> {
        self.keys.read().ok()?.get(access_key_id).cloned()
    }

    /// Verifies a request's signature: `method_path` is the gRPC path, `body_sha256_hex` the
    /// hash of the request message as received.
    pub fn authenticate(
        &self,
        method_path: &str,
        headers: &http::HeaderMap,
        body_sha256_hex: &str,
    ) -> Result<Caller, AuthError> {
        let header = |name: &str| -> Result<Option<&str>, AuthError> {
            headers
                .get(name)
                .map(|v| {
                    v.to_str()
                        .map_err(|_| AuthError::Malformed(format!("{name} is not text")))
                })
                .transpose()
        };
        let authorization = header(signature::AUTHORIZATION)?.ok_or(AuthError::Missing)?;
        let parsed = signature::parse_authorization(authorization).map_err(AuthError::Malformed)?;
        let amz_date = header(signature::DATE_HEADER)?
            .ok_or_else(|| AuthError::Malformed("x-amz-date is missing".into()))?;
        let request_time = signature::parse_amz_date(amz_date)
            .ok_or_else(|| AuthError::Malformed("x-amz-date is not YYYYMMDDTHHMMSSZ".into()))?;
        if !amz_date.starts_with(&parsed.date) {
            return Err(AuthError::Malformed(
                "the Credential date differs from x-amz-date".into(),
            ));
        }
        if parsed.region != self.region {
            return Err(AuthError::Malformed(format!(
                "the Credential region must be '{}'",
                self.region
            )));
        }
        let now = self.clock.now();
        if (now - request_time).abs() > MAX_SKEW_SECONDS {
            return Err(AuthError::Expired {
                request_time,
                server_time: now,
            });
        }
        let entry = self
            .entry(&parsed.access_key_id)
            .filter(|e| e.status == AccessKeyStatus::Active)
            .ok_or_else(|| AuthError::UnknownAccessKey(parsed.access_key_id.clone()))?;
        let mut signed = Vec::with_capacity(parsed.signed_headers.len());
        for name in &parsed.signed_headers {
            let value = header(name)?
                .ok_or_else(|| AuthError::Malformed(format!("signed header {name} is missing")))?;
            signed.push((name.as_str(), value));
        }
        for required in REQUIRED_SIGNED {
            debug_assert!(signed.iter().any(|(n, _)| *n == required));
        }
        let to_sign = signature::string_to_sign(
            method_path,
            &signed,
            body_sha256_hex,
            amz_date,
            &parsed.scope(),
        );
        let key = signature::signing_key(entry.secret.expose(), &parsed.date, &parsed.region);
        if !signature::verify(&key, &to_sign, &parsed.signature) {
            return Err(AuthError::BadSignature);
        }
        if !self
            .replay
            .first_use(&parsed.signature, request_time + MAX_SKEW_SECONDS, now)
        {
            return Err(AuthError::Replayed);
        }
        Ok(Caller {
            principal: entry.principal.clone(),
            access_key_id: parsed.access_key_id,
        })
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
        for bad in ["", "user/", "group/x", "Root"] {
            assert!(principal(bad, "aws", "1").is_none(), "{bad}");
        }
    }

    #[test]
    fn generated_key_pairs_look_like_aws_keys() {
        let (id, secret) = generate_key_pair();
        assert_eq!(id.len(), 20);
        assert!(id.starts_with("KHAK"));
        assert_eq!(secret.expose().len(), 40);
        assert_ne!(generate_key_pair().0, id);
    }
}
