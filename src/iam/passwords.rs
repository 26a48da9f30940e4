//! Passwords: users' login profiles (IAM's `CreateLoginProfile`, …), the account's password
//! policy (`UpdateAccountPasswordPolicy`) and the check of a sign-in.
//!
//! A password is kept only as an Argon2id hash (19 MiB, 2 passes, as OWASP recommends), with
//! its salt, in the user's login profile, bound to the user's unique id (a user deleted and
//! made again under its name has no password). The hashes of earlier passwords are kept as
//! the policy's reuse prevention asks. Hashing runs on blocking threads, at most two at a
//! time, never on the threads that serve calls. Failed sign-ins are counted by
//! [`SignInFailures`] (one table for the daemon): past [`FAILURES_ALLOWED`] per user or per
//! source in [`FAILURE_WINDOW_SECONDS`], further attempts are refused (throttled) without the
//! password being checked, until the window has passed.

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

/// At most two hashes at a time (each 19 MiB and tens of milliseconds of CPU).
fn hashing() -> &'static tokio::sync::Semaphore {
    static PERMITS: std::sync::OnceLock<tokio::sync::Semaphore> = std::sync::OnceLock::new();
    PERMITS.get_or_init(|| tokio::sync::Semaphore::new(2))
}

/// Runs `work` (a hash) on a blocking thread, within the permits.
async fn off_thread<T: Send + 'static>(
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, PasswordError> {
    let _permit = hashing()
        .acquire()
        .await
        .map_err(|_| PasswordError::Internal("hashing stopped".into()))?;
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| PasswordError::Internal(e.to_string()))
}

/// A new hash of `password`, off the serving threads.
async fn hash_new(password: &SecretString) -> Result<Hashed, PasswordError> {
    let password = password.clone();
    off_thread(move || Hashed::new(password.expose())).await?
}

/// Whether `hashed` is the hash of `password`, off the serving threads.
async fn matches(hashed: &Hashed, password: &SecretString) -> Result<bool, PasswordError> {
    let (hashed, password) = (hashed.clone(), password.clone());
    off_thread(move || hashed.matches(password.expose())).await
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

/// Failed sign-ins, per user and per source, within the current window: one table for the
/// daemon (every account's sign-ins), so that a source cannot try every account in turn.
#[derive(Default)]
pub struct SignInFailures {
    by_key: Mutex<HashMap<String, (UnixSeconds, u32)>>,
}

impl SignInFailures {
    /// Whether `key` is past the failures allowed now.
    pub fn over(&self, key: &str, now: UnixSeconds) -> bool {
        self.by_key.lock().is_ok_and(|keys| {
            keys.get(key).is_some_and(|(since, count)| {
                now - since < FAILURE_WINDOW_SECONDS && *count >= FAILURES_ALLOWED
            })
        })
    }

    /// Counts one failure of `key`.
    pub fn note(&self, key: String, now: UnixSeconds) {
        let Ok(mut keys) = self.by_key.lock() else {
            return;
        };
        let entry = keys.entry(key).or_insert((now, 0));
        if now - entry.0 >= FAILURE_WINDOW_SECONDS {
            *entry = (now, 0);
        }
        entry.1 += 1;
        if keys.len() > 100_000 {
            keys.retain(|_, (since, _)| now - *since < FAILURE_WINDOW_SECONDS);
        }
    }
}

/// What a right password at sign-in still asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignInCheck {
    /// Nothing: the session may be made.
    Good,
    /// A new password, set in the same sign-in (once any MFA code is checked too).
    NewPasswordNeeded,
}

/// The login profiles and password policy of one account.
pub struct Passwords {
    store: Arc<Store>,
    profiles: RwLock<BTreeMap<String, LoginProfile>>,
    policy: RwLock<Option<PasswordPolicy>>,
    /// Failed changes of a user's own password (the old one wrong), per user.
    failures: SignInFailures,
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
            failures: SignInFailures::default(),
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

    /// Stores `profile` if its record did not change since the view `since` (another daemon,
    /// or another call here, may have set a password meanwhile: then try again).
    async fn store_profile(&self, profile: LoginProfile, since: i64) -> Result<(), PasswordError> {
        let mut batch = WriteBatch::new();
        let name = profile_name(&profile.user);
        batch.put(
            name.clone(),
            serde_json::to_vec(&profile).map_err(|e| PasswordError::Internal(e.to_string()))?,
        );
        batch.require_unchanged(name, since);
        match self.store.try_commit(batch).await {
            Ok(()) => {}
            Err(crate::store::CommitError::Stale) => {
                return Err(PasswordError::Validation(
                    "the login profile was changed at the same time; try again".into(),
                ));
            }
            Err(error) => return Err(StoreError::from(error).into()),
        }
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
        let since = self.store.view();
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
            password: hash_new(password).await?,
            previous: Vec::new(),
        };
        self.store_profile(profile.clone(), since).await?;
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
        let since = self.store.view();
        let mut profile = self
            .profile(user, user_id)
            .ok_or_else(|| no_profile(user))?;
        if let Some(password) = password {
            let policy = self.in_force();
            if let Some(why) = policy.violations(password.expose()) {
                return Err(PasswordError::PolicyViolation(why));
            }
            let remembered = policy.password_reuse_prevention as usize;
            let earlier: Vec<Hashed> = std::iter::once(profile.password.clone())
                .chain(profile.previous.iter().cloned())
                .take(remembered)
                .collect();
            for hashed in &earlier {
                if matches(hashed, password).await? {
                    return Err(PasswordError::PolicyViolation(format!(
                        "the password was one of the last {remembered} of this user: the \
                         account's password policy prevents its reuse"
                    )));
                }
            }
            let old = std::mem::replace(&mut profile.password, hash_new(password).await?);
            profile.previous.insert(0, old);
            profile.previous.truncate(24);
            profile.changed = now;
            profile.password_reset_required = false;
        }
        if let Some(required) = reset_required {
            profile.password_reset_required = required;
        }
        self.store_profile(profile.clone(), since).await?;
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

    /// Whether the profile's password has expired under the policy in force.
    fn expired(&self, profile: &LoginProfile, now: UnixSeconds) -> bool {
        let policy = self.in_force();
        policy.max_password_age > 0
            && now - profile.changed > i64::from(policy.max_password_age) * 86_400
    }

    /// The user's own change of password: the old one must be right (a wrong one counts as
    /// a failure of the user's), the new one is checked as any; an expired password under
    /// hard expiry is an administrator's to reset.
    pub async fn change(
        &self,
        user: &str,
        user_id: &str,
        old: &SecretString,
        new: &SecretString,
        now: UnixSeconds,
    ) -> Result<(), PasswordError> {
        let by_user = format!("change:{user}");
        if self.failures.over(&by_user, now) {
            return Err(PasswordError::Throttled);
        }
        let profile = self
            .profile(user, user_id)
            .ok_or_else(|| no_profile(user))?;
        if !matches(&profile.password, old).await? {
            self.failures.note(by_user, now);
            return Err(PasswordError::SignInFailed);
        }
        if self.in_force().hard_expiry && self.expired(&profile, now) {
            return Err(PasswordError::ResetRequired(
                "the password has expired and the account's policy has hard expiry: an \
                 administrator must reset it"
                    .into(),
            ));
        }
        self.update(user, user_id, Some(new), None, now).await?;
        Ok(())
    }

    /// Whether a user may change their own password (the account's policy).
    pub fn users_may_change(&self) -> bool {
        self.in_force().allow_users_to_change_password
    }

    /// Checks `password` for the user of id `user_id` (none: no such user) at sign-in,
    /// refused alike for a user without a password and a wrong one, after the same work.
    /// A right but expired password (or one an administrator marked) asks for a new one,
    /// unless the policy's hard expiry leaves that to an administrator. Nothing is written:
    /// the caller checks MFA before it sets a new password.
    pub async fn check(
        &self,
        user: &str,
        user_id: Option<&str>,
        password: &SecretString,
        now: UnixSeconds,
    ) -> Result<SignInCheck, PasswordError> {
        let profile = user_id.and_then(|id| self.profile(user, id));
        let matched = match &profile {
            Some(profile) => matches(&profile.password, password).await?,
            None => {
                // The same work as a wrong password: the time does not tell who has one.
                let decoy = SecretString::new(String::new());
                let _ = hash_new(&decoy).await;
                false
            }
        };
        let Some(profile) = profile.filter(|_| matched) else {
            return Err(PasswordError::SignInFailed);
        };
        let expired = self.expired(&profile, now);
        if expired && self.in_force().hard_expiry {
            return Err(PasswordError::ResetRequired(
                "the password has expired and the account's policy has hard expiry: an \
                 administrator must reset it"
                    .into(),
            ));
        }
        Ok(if expired || profile.password_reset_required {
            SignInCheck::NewPasswordNeeded
        } else {
            SignInCheck::Good
        })
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
