//! Passwords: users' login profiles (IAM's `CreateLoginProfile`, …), the account's password
//! policy (`UpdateAccountPasswordPolicy`) and the check of a sign-in.
//!
//! A password is kept only as an Argon2id hash (19 MiB, 2 passes, as OWASP recommends), with
//! its salt, in the user's login profile, bound to the user's unique id (a user deleted and
//! made again under its name has no password). The hashes of earlier passwords are kept as
//! the policy's reuse prevention asks. Failed sign-ins are counted per user and per source:
//! past [`FAILURES_ALLOWED`] in [`FAILURE_WINDOW_SECONDS`], further attempts are refused
//! (throttled) without checking the password, until the window has passed.

use crate::clock::UnixSeconds;
use crate::secret::SecretString;
use crate::store::{Changed, Store, StoreError, WriteBatch};
use argon2::{Algorithm, Argon2, Params, Version};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, RwLock};
use subtle::ConstantTimeEq as _;
use zeroize::Zeroizing;

const PROFILE_PREFIX: &str = "iam/login-profile/";
const POLICY_RECORD: &str = "iam/password-policy";
/// Failed sign-ins allowed per user, and per source, within a window.
pub const FAILURES_ALLOWED: u32 = 5;
pub const FAILURE_WINDOW_SECONDS: i64 = 300;
/// The longest password accepted (AWS: 128).
pub const MAX_PASSWORD_CHARS: usize = 128;

/// The account's password policy, with AWS's members and defaults (no policy: at least 8
/// characters of any kind, users may change their own).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct PasswordPolicy {
    pub minimum_password_length: u32,
    pub require_symbols: bool,
    pub require_numbers: bool,
    pub require_uppercase_characters: bool,
    pub require_lowercase_characters: bool,
    pub allow_users_to_change_password: bool,
    /// Days a password is good for; 0: for ever.
    pub max_password_age: u32,
    /// How many earlier passwords may not be used again; 0: none.
    pub password_reuse_prevention: u32,
    /// An expired password can only be reset by an administrator (not changed at sign-in).
    pub hard_expiry: bool,
}

impl Default for PasswordPolicy {
    fn default() -> Self {
        Self {
            minimum_password_length: 8,
            require_symbols: false,
            require_numbers: false,
            require_uppercase_characters: false,
            require_lowercase_characters: false,
            allow_users_to_change_password: true,
            max_password_age: 0,
            password_reuse_prevention: 0,
            hard_expiry: false,
        }
    }
}

impl PasswordPolicy {
    /// Refuses settings outside AWS's bounds.
    pub fn check(&self) -> Result<(), PasswordError> {
        if !(6..=128).contains(&self.minimum_password_length) {
            return Err(PasswordError::Validation(
                "MinimumPasswordLength must be between 6 and 128".into(),
            ));
        }
        if self.max_password_age > 1095 {
            return Err(PasswordError::Validation(
                "MaxPasswordAge must be between 1 and 1095 days (0: none)".into(),
            ));
        }
        if self.password_reuse_prevention > 24 {
            return Err(PasswordError::Validation(
                "PasswordReusePrevention must be between 1 and 24 (0: none)".into(),
            ));
        }
        Ok(())
    }

    /// Why `password` breaks the policy, if it does (every rule it breaks, named).
    pub fn violations(&self, password: &str) -> Option<String> {
        let chars = password.chars().count();
        let mut broken = Vec::new();
        if chars < self.minimum_password_length as usize {
            broken.push(format!(
                "at least {} characters",
                self.minimum_password_length
            ));
        }
        if chars > MAX_PASSWORD_CHARS {
            broken.push(format!("at most {MAX_PASSWORD_CHARS} characters"));
        }
        let has = |test: fn(&char) -> bool| password.chars().any(|c| test(&c));
        if self.require_uppercase_characters && !has(char::is_ascii_uppercase) {
            broken.push("an uppercase letter".into());
        }
        if self.require_lowercase_characters && !has(char::is_ascii_lowercase) {
            broken.push("a lowercase letter".into());
        }
        if self.require_numbers && !has(char::is_ascii_digit) {
            broken.push("a number".into());
        }
        if self.require_symbols && !has(char::is_ascii_punctuation) {
            broken.push("a symbol".into());
        }
        if password.chars().any(char::is_control) {
            broken.push("no control characters".into());
        }
        (!broken.is_empty()).then(|| {
            format!(
                "the password does not meet the account's password policy: it needs {}",
                broken.join(", ")
            )
        })
    }
}

/// A password as kept: the Argon2id hash of it and its salt.
#[derive(Clone, Serialize, Deserialize)]
struct Hashed {
    salt: String,
    hash: String,
}

impl std::fmt::Debug for Hashed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("[redacted]")
    }
}

fn argon() -> Result<Argon2<'static>, PasswordError> {
    let params = Params::new(19 * 1024, 2, 1, Some(32))
        .map_err(|e| PasswordError::Internal(e.to_string()))?;
    Ok(Argon2::new(Algorithm::Argon2id, Version::V0x13, params))
}

fn hash_with(password: &str, salt: &[u8]) -> Result<Zeroizing<[u8; 32]>, PasswordError> {
    let mut out = Zeroizing::new([0u8; 32]);
    argon()?
        .hash_password_into(password.as_bytes(), salt, out.as_mut())
        .map_err(|e| PasswordError::Internal(e.to_string()))?;
    Ok(out)
}

impl Hashed {
    fn new(password: &str) -> Result<Self, PasswordError> {
        let salt: [u8; 16] = rand::random();
        let hash = hash_with(password, &salt)?;
        Ok(Self {
            salt: hex::encode(salt),
            hash: hex::encode(hash.as_ref()),
        })
    }

    fn matches(&self, password: &str) -> bool {
        let (Ok(salt), Ok(stored)) = (hex::decode(&self.salt), hex::decode(&self.hash)) else {
            return false;
        };
        hash_with(password, &salt).is_ok_and(|h| bool::from(h.as_ref().ct_eq(&stored)))
    }
}

/// A user's login profile, as stored.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct LoginProfile {
    pub user: String,
    /// The user's unique id when the profile was made.
    pub user_id: String,
    pub created: UnixSeconds,
    /// When the password was last set.
    pub changed: UnixSeconds,
    pub password_reset_required: bool,
    password: Hashed,
    /// Earlier passwords, newest first (as many as reuse prevention may ask for).
    #[serde(default)]
    previous: Vec<Hashed>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PasswordError {
    NotFound(String),
    AlreadyExists(String),
    Validation(String),
    /// The password breaks the account's policy (IAM `PasswordPolicyViolation`).
    PolicyViolation(String),
    /// A sign-in failed: wrong account, user or password (one answer for all).
    SignInFailed,
    /// The password has expired or must be reset: the sign-in must set a new one, or (hard
    /// expiry) an administrator must.
    ResetRequired(String),
    /// Too many failed sign-ins.
    Throttled,
    Internal(String),
}

impl From<StoreError> for PasswordError {
    fn from(error: StoreError) -> Self {
        PasswordError::Internal(error.to_string())
    }
}

/// Failures within the current window.
#[derive(Default)]
struct Failures {
    by_key: HashMap<String, (UnixSeconds, u32)>,
}

impl Failures {
    fn over(&self, key: &str, now: UnixSeconds) -> bool {
        self.by_key.get(key).is_some_and(|(since, count)| {
            now - since < FAILURE_WINDOW_SECONDS && *count >= FAILURES_ALLOWED
        })
    }

    fn note(&mut self, key: String, now: UnixSeconds) {
        let entry = self.by_key.entry(key).or_insert((now, 0));
        if now - entry.0 >= FAILURE_WINDOW_SECONDS {
            *entry = (now, 0);
        }
        entry.1 += 1;
        if self.by_key.len() > 100_000 {
            self.by_key
                .retain(|_, (since, _)| now - *since < FAILURE_WINDOW_SECONDS);
        }
    }
}

/// The login profiles and password policy of one account.
pub struct Passwords {
    store: Arc<Store>,
    profiles: RwLock<BTreeMap<String, LoginProfile>>,
    policy: RwLock<Option<PasswordPolicy>>,
    failures: Mutex<Failures>,
}

fn profile_name(user: &str) -> String {
    format!("{PROFILE_PREFIX}{user}")
}

impl Passwords {
    pub fn open(store: Arc<Store>) -> Result<Self, StoreError> {
        let (profiles, policy) = Self::load(&store)?;
        Ok(Self {
            store,
            profiles: RwLock::new(profiles),
            policy: RwLock::new(policy),
            failures: Mutex::new(Failures::default()),
        })
    }

    #[allow(clippy::type_complexity)]
    fn load(
        store: &Store,
    ) -> Result<(BTreeMap<String, LoginProfile>, Option<PasswordPolicy>), StoreError> {
        let mut profiles = BTreeMap::new();
        for (_, value) in store.scan(PROFILE_PREFIX.as_bytes(), None, usize::MAX)? {
            let profile: LoginProfile = serde_json::from_slice(&value)
                .map_err(|e| StoreError(format!("a login profile does not parse: {e}")))?;
            profiles.insert(profile.user.clone(), profile);
        }
        let policy = store
            .get(POLICY_RECORD.as_bytes())?
            .map(|v| serde_json::from_slice(&v))
            .transpose()
            .map_err(|e| StoreError(format!("the password policy does not parse: {e}")))?;
        Ok((profiles, policy))
    }

    /// Reads profiles and policy again when another daemon changed them.
    pub fn heard(&self, changed: Changed<'_>) {
        let relevant = match changed {
            Changed::All(_) => true,
            Changed::Records(names, _) => names
                .iter()
                .any(|n| n.starts_with(PROFILE_PREFIX.as_bytes()) || n == POLICY_RECORD.as_bytes()),
        };
        if relevant {
            match Self::load(&self.store) {
                Ok((profiles, policy)) => {
                    if let Ok(mut slot) = self.profiles.write() {
                        *slot = profiles;
                    }
                    if let Ok(mut slot) = self.policy.write() {
                        *slot = policy;
                    }
                }
                Err(error) => tracing::error!(%error, "cannot read login profiles again"),
            }
        }
    }

    /// The account's policy, if one is set.
    pub fn policy(&self) -> Option<PasswordPolicy> {
        self.policy.read().ok()?.clone()
    }

    /// The policy in force: the account's, or the defaults.
    fn in_force(&self) -> PasswordPolicy {
        self.policy().unwrap_or_default()
    }

    pub async fn set_policy(&self, policy: PasswordPolicy) -> Result<(), PasswordError> {
        policy.check()?;
        let mut batch = WriteBatch::new();
        batch.put(
            POLICY_RECORD,
            serde_json::to_vec(&policy).map_err(|e| PasswordError::Internal(e.to_string()))?,
        );
        self.store.commit(batch).await?;
        if let Ok(mut slot) = self.policy.write() {
            *slot = Some(policy);
        }
        Ok(())
    }

    pub async fn delete_policy(&self) -> Result<(), PasswordError> {
        if self.policy().is_none() {
            return Err(PasswordError::NotFound(
                "the account has no password policy".into(),
            ));
        }
        let mut batch = WriteBatch::new();
        batch.delete(POLICY_RECORD);
        self.store.commit(batch).await?;
        if let Ok(mut slot) = self.policy.write() {
            *slot = None;
        }
        Ok(())
    }

    /// `user`'s profile, if it is still the profile of the user of id `user_id`.
    pub fn profile(&self, user: &str, user_id: &str) -> Option<LoginProfile> {
        self.profiles
            .read()
            .ok()?
            .get(user)
            .filter(|p| p.user_id == user_id)
            .cloned()
    }

    async fn store_profile(&self, profile: LoginProfile) -> Result<(), PasswordError> {
        let mut batch = WriteBatch::new();
        batch.put(
            profile_name(&profile.user),
            serde_json::to_vec(&profile).map_err(|e| PasswordError::Internal(e.to_string()))?,
        );
        self.store.commit(batch).await?;
        if let Ok(mut profiles) = self.profiles.write() {
            profiles.insert(profile.user.clone(), profile);
        }
        Ok(())
    }

    /// Gives the user of id `user_id` a password (refused when it has one).
    pub async fn create(
        &self,
        user: &str,
        user_id: &str,
        password: &SecretString,
        reset_required: bool,
        now: UnixSeconds,
    ) -> Result<LoginProfile, PasswordError> {
        if self.profile(user, user_id).is_some() {
            return Err(PasswordError::AlreadyExists(format!(
                "the user '{user}' has a login profile already"
            )));
        }
        if let Some(why) = self.in_force().violations(password.expose()) {
            return Err(PasswordError::PolicyViolation(why));
        }
        let profile = LoginProfile {
            user: user.to_owned(),
            user_id: user_id.to_owned(),
            created: now,
            changed: now,
            password_reset_required: reset_required,
            password: Hashed::new(password.expose())?,
            previous: Vec::new(),
        };
        self.store_profile(profile.clone()).await?;
        Ok(profile)
    }

    /// Sets a new password (checked against the policy and, with reuse prevention, against
    /// the earlier ones), and/or whether it must be reset at the next sign-in.
    pub async fn update(
        &self,
        user: &str,
        user_id: &str,
        password: Option<&SecretString>,
        reset_required: Option<bool>,
        now: UnixSeconds,
    ) -> Result<LoginProfile, PasswordError> {
        let mut profile = self
            .profile(user, user_id)
            .ok_or_else(|| no_profile(user))?;
        if let Some(password) = password {
            let policy = self.in_force();
            if let Some(why) = policy.violations(password.expose()) {
                return Err(PasswordError::PolicyViolation(why));
            }
            let remembered = policy.password_reuse_prevention as usize;
            let reused = remembered > 0
                && std::iter::once(&profile.password)
                    .chain(profile.previous.iter())
                    .take(remembered)
                    .any(|h| h.matches(password.expose()));
            if reused {
                return Err(PasswordError::PolicyViolation(format!(
                    "the password was one of the last {remembered} of this user: the account's \
                     password policy prevents its reuse"
                )));
            }
            let old = std::mem::replace(&mut profile.password, Hashed::new(password.expose())?);
            profile.previous.insert(0, old);
            profile.previous.truncate(24);
            profile.changed = now;
            profile.password_reset_required = false;
        }
        if let Some(required) = reset_required {
            profile.password_reset_required = required;
        }
        self.store_profile(profile.clone()).await?;
        Ok(profile)
    }

    pub async fn delete(&self, user: &str) -> Result<(), PasswordError> {
        let known = self
            .profiles
            .read()
            .map(|p| p.contains_key(user))
            .unwrap_or(false);
        if !known {
            return Err(no_profile(user));
        }
        let mut batch = WriteBatch::new();
        batch.delete(profile_name(user));
        self.store.commit(batch).await?;
        if let Ok(mut profiles) = self.profiles.write() {
            profiles.remove(user);
        }
        Ok(())
    }

    /// The user's own change of password: the old one must be right (a wrong one counts as
    /// a failed sign-in), the new one is checked as any.
    pub async fn change(
        &self,
        user: &str,
        user_id: &str,
        old: &SecretString,
        new: &SecretString,
        now: UnixSeconds,
    ) -> Result<(), PasswordError> {
        let by_user = format!("user:{user}");
        if self
            .failures
            .lock()
            .map_err(|_| PasswordError::Internal("lock poisoned".into()))?
            .over(&by_user, now)
        {
            return Err(PasswordError::Throttled);
        }
        let profile = self
            .profile(user, user_id)
            .ok_or_else(|| no_profile(user))?;
        if !profile.password.matches(old.expose()) {
            if let Ok(mut failures) = self.failures.lock() {
                failures.note(by_user, now);
            }
            return Err(PasswordError::SignInFailed);
        }
        self.update(user, user_id, Some(new), None, now).await?;
        Ok(())
    }

    /// Whether a user may change their own password (the account's policy).
    pub fn users_may_change(&self) -> bool {
        self.in_force().allow_users_to_change_password
    }

    /// Checks `password` for the user of id `user_id` signing in from `source`: throttled
    /// past the failures allowed, refused alike for a user without a password and a wrong
    /// one. An expired password (or one an administrator marked) must be replaced in the
    /// same sign-in by `new_password` (which is checked as a change), unless the policy's
    /// hard expiry leaves that to an administrator.
    pub async fn sign_in(
        &self,
        user: &str,
        user_id: Option<&str>,
        password: &SecretString,
        new_password: Option<&SecretString>,
        source: &str,
        now: UnixSeconds,
    ) -> Result<(), PasswordError> {
        let (by_user, by_source) = (format!("user:{user}"), format!("source:{source}"));
        {
            let failures = self
                .failures
                .lock()
                .map_err(|_| PasswordError::Internal("lock poisoned".into()))?;
            if failures.over(&by_user, now) || failures.over(&by_source, now) {
                return Err(PasswordError::Throttled);
            }
        }
        let profile = user_id.and_then(|id| self.profile(user, id));
        // A user without a password costs the same hash as a wrong one: the answer's time
        // does not tell which users have passwords.
        let matched = match &profile {
            Some(profile) => profile.password.matches(password.expose()),
            None => {
                let _ = hash_with(password.expose(), b"no such user salt");
                false
            }
        };
        let Some(profile) = profile.filter(|_| matched) else {
            if let Ok(mut failures) = self.failures.lock() {
                failures.note(by_user, now);
                failures.note(by_source, now);
            }
            return Err(PasswordError::SignInFailed);
        };
        let policy = self.in_force();
        let expired = policy.max_password_age > 0
            && now - profile.changed > i64::from(policy.max_password_age) * 86_400;
        if expired || profile.password_reset_required {
            if expired && policy.hard_expiry {
                return Err(PasswordError::ResetRequired(
                    "the password has expired and the account's policy has hard expiry: an \
                     administrator must reset it"
                        .into(),
                ));
            }
            let Some(new_password) = new_password else {
                return Err(PasswordError::ResetRequired(
                    "the password must be changed: sign in again with a new password".into(),
                ));
            };
            self.update(user, &profile.user_id, Some(new_password), None, now)
                .await?;
        }
        Ok(())
    }
}

fn no_profile(user: &str) -> PasswordError {
    PasswordError::NotFound(format!(
        "the user '{}' has no login profile",
        crate::keys::printable_input(user)
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_policy_names_every_rule_a_password_breaks() {
        let policy = PasswordPolicy {
            minimum_password_length: 12,
            require_symbols: true,
            require_numbers: true,
            require_uppercase_characters: true,
            require_lowercase_characters: true,
            ..Default::default()
        };
        let why = policy.violations("short").unwrap();
        for rule in ["at least 12", "an uppercase", "a number", "a symbol"] {
            assert!(why.contains(rule), "{why}");
        }
        assert!(!why.contains("a lowercase"), "{why}");
        assert_eq!(policy.violations("Long enough 1!"), None);
        assert!(PasswordPolicy::default().violations("1234567").is_some());
        assert!(
            PasswordPolicy {
                minimum_password_length: 5,
                ..Default::default()
            }
            .check()
            .is_err()
        );
    }

    #[test]
    fn a_hash_matches_its_password_only() {
        let hashed = Hashed::new("correct horse").unwrap();
        assert!(hashed.matches("correct horse"));
        assert!(!hashed.matches("correct horsE"));
        assert_eq!(format!("{hashed:?}"), "[redacted]");
        assert_ne!(Hashed::new("correct horse").unwrap().salt, hashed.salt);
    }
}
