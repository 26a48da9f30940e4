//! Grants: narrow, revocable use of one key by one principal, beside the key's policy.
//!
//! A grant is a store record (`grant/<key id>/<grant id>`, under the barrier like every
//! record) held in memory per key and written through: CreateGrant answers only once the
//! grant is durable, so a grant is usable on the very next call, token or not. Retiring or
//! revoking removes the record before the call answers; destroying the key removes its grants
//! with it. Who may do what with grants is the API layer's business (it knows callers); this
//! file keeps the records, the quotas and the tokens.
//!
//! Quotas: at most [`KeyServiceConfig::grants_per_key`] grants on one key (AWS KMS: 50,000),
//! and at most [`KeyServiceConfig::grant_bytes`] bytes of grant records in all, so that a
//! caller allowed `kms:CreateGrant` cannot fill memory and disk. Past either:
//! `LimitExceededException`.
//!
//! A grant token is `base64url(grant id ‖ nonce ‖ HMAC-SHA256(grant's token key, nonce))`:
//! each CreateGrant (an idempotent retry too) hands out a new one, and a token is checked
//! against the live grant it names.

use super::*;
use crate::policy::{GrantConstraint, GrantRule};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};

pub(super) const GRANT_PREFIX: &[u8] = b"grant/";
/// Largest grant record (its name, principals, operations and constraint), in bytes.
pub const MAX_GRANT_RECORD: usize = 8 * 1024;
const GRANT_ID_BYTES: usize = 32;
const NONCE_BYTES: usize = 16;
const TAG_BYTES: usize = 32;
const MAX_GRANT_NAME: usize = 256;

/// A grant as stored.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grant {
    /// 64 hex digits.
    pub grant_id: String,
    pub key_id: Uuid,
    /// The caller's name for idempotent retries (may be empty).
    pub name: String,
    pub grantee: String,
    /// The grantee's unique id when it is a user or role of this account: a principal of the
    /// same name made after the grantee was deleted is not the grantee.
    pub grantee_unique_id: Option<String>,
    pub retiring_principal: Option<String>,
    /// The principal that made the grant.
    pub issuer: String,
    pub issuing_account: String,
    pub operations: Vec<String>,
    pub constraint: GrantConstraint,
    pub created: UnixSeconds,
    /// Key for the grant's tokens (hex).
    token_key: String,
}

impl std::fmt::Debug for Grant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Grant")
            .field("grant_id", &self.grant_id)
            .field("key_id", &self.key_id)
            .field("grantee", &self.grantee)
            .field("operations", &self.operations)
            .finish_non_exhaustive()
    }
}

impl Grant {
    /// What the evaluator needs of it.
    pub fn rule(&self) -> GrantRule {
        GrantRule {
            grant_id: self.grant_id.clone(),
            grantee: self.grantee.clone(),
            operations: self.operations.clone(),
            constraint: self.constraint.clone(),
        }
    }

    pub fn holds(&self, operation: &str) -> bool {
        self.operations
            .iter()
            .any(|o| o.eq_ignore_ascii_case(operation))
    }

    /// Whether a CreateGrant of `request` is a retry of the one that made this grant.
    fn same_as(&self, request: &NewGrant) -> bool {
        let mut mine = self.operations.clone();
        let mut theirs = request.operations.clone();
        mine.sort();
        theirs.sort();
        self.grantee == request.grantee
            && self.retiring_principal == request.retiring_principal
            && mine == theirs
            && self.constraint == request.constraint
    }

    fn token(&self) -> Result<String, KeyError> {
        let id = hex::decode(&self.grant_id).map_err(|_| damaged(&self.grant_id))?;
        let mut nonce = [0u8; NONCE_BYTES];
        rand::rngs::OsRng.fill_bytes(&mut nonce);
        let tag = self.tag(&nonce)?;
        let mut token = Vec::with_capacity(GRANT_ID_BYTES + NONCE_BYTES + TAG_BYTES);
        token.extend_from_slice(&id);
        token.extend_from_slice(&nonce);
        token.extend_from_slice(&tag);
        Ok(URL_SAFE_NO_PAD.encode(token))
    }

    fn tag(&self, nonce: &[u8]) -> Result<Vec<u8>, KeyError> {
        let key = zeroize::Zeroizing::new(
            hex::decode(&self.token_key).map_err(|_| damaged(&self.grant_id))?,
        );
        let mut mac =
            Hmac::<sha2::Sha256>::new_from_slice(&key).map_err(|_| damaged(&self.grant_id))?;
        mac.update(nonce);
        Ok(mac.finalize().into_bytes().to_vec())
    }
}

fn damaged(grant_id: &str) -> KeyError {
    KeyError::Internal(format!("grant record {grant_id} is damaged"))
}

/// A CreateGrant, as the API layer has checked and authorised it.
#[derive(Debug, Clone)]
pub struct NewGrant {
    pub name: String,
    pub grantee: String,
    pub grantee_unique_id: Option<String>,
    pub retiring_principal: Option<String>,
    pub issuer: String,
    pub operations: Vec<String>,
    pub constraint: GrantConstraint,
}

/// Checks a CreateGrant's operations, constraint and name (before it is authorised: the
/// operations are what `kms:GrantOperations` and delegation are judged on).
pub fn validate_new_grant(
    operations: &[String],
    constraint: &GrantConstraint,
    name: &str,
) -> Result<(), KeyError> {
    if operations.is_empty() {
        return Err(KeyError::Validation(
            "Operations must name at least one operation".into(),
        ));
    }
    for operation in operations {
        if !crate::policy::grants::GRANT_OPERATIONS.contains(&operation.as_str()) {
            return Err(KeyError::Validation(format!(
                "'{}' is not a grant operation",
                printable(operation)
            )));
        }
    }
    if let GrantConstraint::EncryptionContextEquals(pairs)
    | GrantConstraint::EncryptionContextSubset(pairs) = constraint
    {
        if let Some(operation) = operations
            .iter()
            .find(|o| !crate::policy::grants::CONSTRAINABLE_OPERATIONS.contains(&o.as_str()))
        {
            return Err(KeyError::Validation(format!(
                "an encryption-context constraint cannot apply to {operation}, whose request \
                 has no encryption context"
            )));
        }
        if pairs.keys().any(String::is_empty) {
            return Err(KeyError::Validation(
                "encryption-context constraint keys must not be empty".into(),
            ));
        }
    }
    if name.chars().count() > MAX_GRANT_NAME
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b':' | b'/' | b'_' | b'-'))
    {
        return Err(KeyError::Validation(format!(
            "Name must be at most {MAX_GRANT_NAME} of A-Z a-z 0-9 : / _ -"
        )));
    }
    Ok(())
}

fn grant_record_name(key: Uuid, grant_id: &str) -> Vec<u8> {
    let mut name = GRANT_PREFIX.to_vec();
    name.extend_from_slice(key.hyphenated().to_string().as_bytes());
    name.push(b'/');
    name.extend_from_slice(grant_id.as_bytes());
    name
}

/// The grants held in memory: per key, in grant-id order, and their bytes in all.
#[derive(Default)]
pub(super) struct GrantTable {
    by_key: BTreeMap<Uuid, BTreeMap<String, Arc<Grant>>>,
    bytes: usize,
}

impl GrantTable {
    pub(super) fn load(store: &Store) -> Result<Self, KeyError> {
        let mut table = GrantTable::default();
        for (name, value) in store.scan(GRANT_PREFIX, None, usize::MAX)? {
            let grant: Grant = serde_json::from_slice(&value).map_err(|e| {
                KeyError::Internal(format!(
                    "grant record {} is damaged: {e}",
                    String::from_utf8_lossy(&name)
                ))
            })?;
            table.bytes += value.len();
            table
                .by_key
                .entry(grant.key_id)
                .or_default()
                .insert(grant.grant_id.clone(), Arc::new(grant));
        }
        Ok(table)
    }

    fn remove_key(&mut self, key: Uuid) -> Vec<Arc<Grant>> {
        let removed: Vec<_> = self
            .by_key
            .remove(&key)
            .map(|g| g.into_values().collect())
            .unwrap_or_default();
        for grant in &removed {
            self.bytes = self.bytes.saturating_sub(encoded_len(grant));
        }
        removed
    }
}

fn encoded_len(grant: &Grant) -> usize {
    serde_json::to_vec(grant).map(|v| v.len()).unwrap_or(0)
}

impl KeyService {
    fn grant_table(&self) -> Result<std::sync::RwLockReadGuard<'_, GrantTable>, KeyError> {
        self.grants
            .read()
            .map_err(|_| KeyError::Internal("grant lock poisoned".into()))
    }

    fn grant_table_mut(&self) -> Result<std::sync::RwLockWriteGuard<'_, GrantTable>, KeyError> {
        self.grants
            .write()
            .map_err(|_| KeyError::Internal("grant lock poisoned".into()))
    }

    /// The live grants of a key (none for a key that is gone or deleted).
    pub fn grants_of(&self, key: Uuid) -> Vec<Arc<Grant>> {
        if !self.key_is_live(key) {
            return Vec::new();
        }
        self.grant_table()
            .ok()
            .and_then(|t| t.by_key.get(&key).map(|g| g.values().cloned().collect()))
            .unwrap_or_default()
    }

    /// The live grants of a key for any of `grantees`: picked under the lock, so that a key
    /// with many grants costs no copy of them all on every call.
    pub fn grants_for(&self, key: Uuid, grantees: &[String]) -> Vec<Arc<Grant>> {
        if !self.key_is_live(key) {
            return Vec::new();
        }
        self.grant_table()
            .ok()
            .and_then(|t| {
                t.by_key.get(&key).map(|grants| {
                    grants
                        .values()
                        .filter(|g| grantees.contains(&g.grantee))
                        .cloned()
                        .collect()
                })
            })
            .unwrap_or_default()
    }

    /// One grant of a key.
    pub fn grant(&self, key: Uuid, grant_id: &str) -> Option<Arc<Grant>> {
        self.grants_of(key)
            .into_iter()
            .find(|g| g.grant_id == grant_id)
    }

    /// CreateGrant: the new grant (or, for a retry with the same `Name` and the same terms,
    /// the grant it made) and a new token for it, durable before this returns.
    pub async fn create_grant(
        &self,
        key: Uuid,
        request: NewGrant,
    ) -> Result<(Arc<Grant>, String), KeyError> {
        let _gate = self.grant_gate.lock().await;
        let entry = self
            .entry_by_id(key)?
            .ok_or_else(|| Self::not_found(&key.to_string()))?;
        let record = entry.record();
        if record.state == KeyState::Deleted {
            return Err(Self::not_found(&key.to_string()));
        }
        record.require_active("CreateGrant")?;
        if !request.name.is_empty()
            && let Some(existing) = self
                .grants_of(key)
                .into_iter()
                .find(|g| g.name == request.name && g.same_as(&request))
        {
            let token = existing.token()?;
            return Ok((existing, token));
        }
        let mut id = [0u8; GRANT_ID_BYTES];
        rand::rngs::OsRng.fill_bytes(&mut id);
        let token_key = random_bytes(32);
        let grant = Grant {
            grant_id: hex::encode(id),
            key_id: key,
            name: request.name,
            grantee: request.grantee,
            grantee_unique_id: request.grantee_unique_id,
            retiring_principal: request.retiring_principal,
            issuer: request.issuer,
            issuing_account: self.config.account_id.clone(),
            operations: request.operations,
            constraint: request.constraint,
            created: self.now(),
            token_key: hex::encode(token_key.expose()),
        };
        let value = encode(&grant)?;
        if value.len() > MAX_GRANT_RECORD {
            return Err(KeyError::LimitExceeded(format!(
                "a grant is at most {MAX_GRANT_RECORD} bytes (its name, principals and \
                 constraint); this one is {}",
                value.len()
            )));
        }
        {
            let table = self.grant_table()?;
            let held = table.by_key.get(&key).map_or(0, BTreeMap::len);
            if held >= self.config.grants_per_key {
                return Err(KeyError::LimitExceeded(format!(
                    "the key already has the most grants it may hold ({})",
                    self.config.grants_per_key
                )));
            }
            if table.bytes + value.len() > self.config.grant_bytes {
                return Err(KeyError::LimitExceeded(format!(
                    "the account's grants would pass their bound of {} bytes",
                    self.config.grant_bytes
                )));
            }
        }
        let mut batch = WriteBatch::new();
        batch.put(grant_record_name(key, &grant.grant_id), value.clone());
        self.store.commit(batch).await?;
        let token = grant.token()?;
        let grant = Arc::new(grant);
        let mut table = self.grant_table_mut()?;
        table.bytes += value.len();
        table
            .by_key
            .entry(key)
            .or_default()
            .insert(grant.grant_id.clone(), grant.clone());
        Ok((grant, token))
    }

    /// The live grant a token names, if the token is one this service made for it;
    /// `InvalidGrantTokenException` otherwise.
    pub fn grant_by_token(&self, token: &str) -> Result<Arc<Grant>, KeyError> {
        let invalid = || {
            KeyError::InvalidGrantToken(
                "the grant token is malformed, forged, or names a grant that no longer exists"
                    .into(),
            )
        };
        let bytes = URL_SAFE_NO_PAD
            .decode(token.trim())
            .map_err(|_| invalid())?;
        if bytes.len() != GRANT_ID_BYTES + NONCE_BYTES + TAG_BYTES {
            return Err(invalid());
        }
        let (id, rest) = bytes.split_at(GRANT_ID_BYTES);
        let (nonce, tag) = rest.split_at(NONCE_BYTES);
        let grant_id = hex::encode(id);
        let grant = {
            let table = self.grant_table()?;
            table
                .by_key
                .values()
                .find_map(|grants| grants.get(&grant_id).cloned())
        }
        .ok_or_else(invalid)?;
        if !self.key_is_live(grant.key_id) {
            return Err(invalid());
        }
        let expected = grant.tag(nonce)?;
        if !bool::from(subtle::ConstantTimeEq::ct_eq(expected.as_slice(), tag)) {
            return Err(invalid());
        }
        Ok(grant)
    }

    /// Whether this daemon holds grant `grant_id` of key `key`, or `grant_id` could never
    /// name one (not of a grant id's form): nothing to wait for, as [`Self::knows`] for keys.
    pub fn knows_grant(&self, key: Uuid, grant_id: &str) -> bool {
        let could_be =
            grant_id.len() == 2 * GRANT_ID_BYTES && grant_id.bytes().all(|b| b.is_ascii_hexdigit());
        !could_be || self.grant(key, grant_id).is_some()
    }

    /// RetireGrant / RevokeGrant: removes the grant, durably, before returning. `asked`: when
    /// the call came (see [`Self::hear_of`]).
    pub async fn remove_grant(
        &self,
        asked: Instant,
        key: Uuid,
        grant_id: &str,
    ) -> Result<Arc<Grant>, KeyError> {
        // A grant another daemon has just made is heard of before it is judged missing.
        self.hear_of(asked, |keys| keys.knows_grant(key, grant_id))
            .await;
        let _gate = self.grant_gate.lock().await;
        let grant = self
            .grant(key, grant_id)
            .ok_or_else(|| grant_not_found(grant_id))?;
        let mut batch = WriteBatch::new();
        batch.delete(grant_record_name(key, grant_id));
        self.store.commit(batch).await?;
        let mut table = self.grant_table_mut()?;
        if let Some(grants) = table.by_key.get_mut(&key)
            && grants.remove(grant_id).is_some()
        {
            if grants.is_empty() {
                table.by_key.remove(&key);
            }
            table.bytes = table.bytes.saturating_sub(encoded_len(&grant));
        }
        Ok(grant)
    }

    /// ListGrants: a page of a key's grants in grant-id order, optionally one grant or one
    /// grantee's.
    pub fn list_grants(
        &self,
        key: Uuid,
        grant_id: Option<&str>,
        grantee: Option<&str>,
        limit: u32,
        marker: &str,
    ) -> Result<ListPage<Arc<Grant>>, KeyError> {
        let limit = page_limit(limit)?;
        let grants = self.grants_of(key);
        page(
            grants.into_iter().filter(|g| {
                grant_id.is_none_or(|id| g.grant_id == id) && grantee.is_none_or(|p| g.grantee == p)
            }),
            |g| g.grant_id.clone(),
            limit,
            marker,
        )
    }

    /// ListRetirableGrants: a page of the grants `retiring_principal` may retire, over every
    /// live key, in (key id, grant id) order.
    pub fn list_retirable_grants(
        &self,
        retiring_principal: &str,
        limit: u32,
        marker: &str,
    ) -> Result<ListPage<Arc<Grant>>, KeyError> {
        let limit = page_limit(limit)?;
        let all: Vec<Arc<Grant>> = {
            let table = self.grant_table()?;
            table
                .by_key
                .values()
                .flat_map(|g| g.values())
                .filter(|g| g.retiring_principal.as_deref() == Some(retiring_principal))
                .cloned()
                .collect()
        };
        let live = all.into_iter().filter(|g| self.key_is_live(g.key_id));
        page(
            live,
            |g| format!("{}/{}", g.key_id.hyphenated(), g.grant_id),
            limit,
            marker,
        )
    }

    /// Removes a destroyed key's grants from memory (their records go in the destruction's
    /// batch: see [`KeyService::grant_record_names`]).
    pub(super) fn forget_grants(&self, key: Uuid) {
        if let Ok(mut table) = self.grants.write() {
            table.remove_key(key);
        }
    }

    /// The record names of a key's grants, for the batch that destroys the key.
    pub(super) fn grant_record_names(&self, key: Uuid) -> Vec<Vec<u8>> {
        self.grant_table()
            .ok()
            .and_then(|t| {
                t.by_key
                    .get(&key)
                    .map(|g| g.keys().map(|id| grant_record_name(key, id)).collect())
            })
            .unwrap_or_default()
    }
}

fn grant_not_found(grant_id: &str) -> KeyError {
    KeyError::NotFound(format!("grant '{}' does not exist", printable(grant_id)))
}

/// A page of `items` (in `order`'s order) after `marker`.
fn page<I, F>(
    items: I,
    order: F,
    limit: usize,
    marker: &str,
) -> Result<ListPage<Arc<Grant>>, KeyError>
where
    I: Iterator<Item = Arc<Grant>>,
    F: Fn(&Arc<Grant>) -> String,
{
    let mut sorted: Vec<(String, Arc<Grant>)> = items.map(|g| (order(&g), g)).collect();
    sorted.sort_by(|a, b| a.0.cmp(&b.0));
    let mut rest = sorted
        .into_iter()
        .filter(|(position, _)| marker.is_empty() || position.as_str() > marker);
    let items: Vec<(String, Arc<Grant>)> = rest.by_ref().take(limit).collect();
    let next_marker = if rest.next().is_some() {
        items.last().map(|(position, _)| position.clone())
    } else {
        None
    };
    Ok(ListPage {
        items: items.into_iter().map(|(_, g)| g).collect(),
        next_marker,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_grants_are_checked_before_they_are_judged() {
        let ops = |names: &[&str]| names.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let equals = GrantConstraint::EncryptionContextEquals([("k".into(), "v".into())].into());
        validate_new_grant(&ops(&["Decrypt", "CreateGrant"]), &equals, "retry-1").unwrap();
        for (operations, constraint, name) in [
            (ops(&[]), GrantConstraint::None, ""),
            (
                ops(&["Decrypt", "ScheduleKeyDeletion"]),
                GrantConstraint::None,
                "",
            ),
            (ops(&["DescribeKey"]), equals.clone(), ""),
            (
                ops(&["Decrypt"]),
                GrantConstraint::None,
                "spaces are not allowed",
            ),
        ] {
            assert!(
                matches!(
                    validate_new_grant(&operations, &constraint, name),
                    Err(KeyError::Validation(_))
                ),
                "{operations:?} {constraint:?} {name:?}"
            );
        }
    }
}
