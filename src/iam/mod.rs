//! Identities: users, groups and roles, their inline policies, and what a caller's identity
//! policies are. Access keys and temporary credentials live in [`crate::auth`].
//!
//! Groups hold users, do not nest and are not principals: a user's identity policies are its
//! own and its groups'. A role's trust policy says who may assume it; its inline policies
//! are what its sessions may do.

mod certificates;
pub mod jwks_fetch;
mod mfa;
pub mod oidc;
pub mod passwords;
mod policies;
mod policy_cache;

use crate::auth::{
    CredentialError, CredentialStore, NewAccessKey, Principal, PrincipalDirectory, PrincipalKind,
};
use crate::clock::{Clock, UnixSeconds};
use crate::policy::{MalformedPolicy, NamedPolicy, Policy, PolicyKind};
use crate::store::{Store, StoreError, WriteBatch};
use policy_cache::PolicyCache;
use rand::Rng;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, RwLock};

const USER_PREFIX: &str = "iam/user/";
const GROUP_PREFIX: &str = "iam/group/";
const ROLE_PREFIX: &str = "iam/role/";
/// Temporary credentials last 15 minutes to 12 hours; 1 hour unless asked otherwise.
pub const MIN_SESSION_SECONDS: u32 = 900;
pub const MAX_SESSION_SECONDS: u32 = 43_200;
pub const DEFAULT_SESSION_SECONDS: u32 = 3_600;
const MAX_INLINE_POLICIES: usize = 10;
/// A user belongs to at most this many groups (AWS IAM: 10).
pub const MAX_GROUPS_PER_USER: usize = 10;
/// A role's trust policy is at most this many characters (AWS IAM: 2,048).
pub const MAX_TRUST_POLICY_CHARS: usize = 2_048;

/// How many of each identity the account may hold, and how many live sessions a role may
/// have. Each bounds what a caller allowed the create action can make the daemon store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IamQuotas {
    pub users: usize,
    pub groups: usize,
    pub roles: usize,
    /// Temporary credentials of one role that have not expired yet.
    pub sessions_per_role: usize,
}

impl Default for IamQuotas {
    /// AWS IAM's default quotas; 1,000 live sessions per role.
    fn default() -> Self {
        Self {
            users: 5_000,
            groups: 300,
            roles: 1_000,
            sessions_per_role: 1_000,
        }
    }
}

/// Why an identity operation was refused.
#[derive(Debug, thiserror::Error)]
pub enum IamError {
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    AlreadyExists(String),
    #[error("{0}")]
    Validation(String),
    #[error("{0}")]
    LimitExceeded(String),
    #[error("{0}")]
    MalformedPolicy(String),
    /// MFA codes that are not current codes of the device (or are refused for now).
    #[error("{0}")]
    InvalidAuthenticationCode(String),
    /// The entity is still in use (a user with an MFA device, a device enabled for a user).
    #[error("{0}")]
    DeleteConflict(String),
    /// Another daemon sharing the store changed the entity at the same time (AWS IAM's
    /// `ConcurrentModification`, retryable).
    #[error("{0}")]
    ConcurrentModification(String),
    #[error("internal error")]
    Internal(String),
}

impl From<StoreError> for IamError {
    fn from(error: StoreError) -> Self {
        IamError::Internal(error.to_string())
    }
}

impl From<CredentialError> for IamError {
    fn from(error: CredentialError) -> Self {
        match error {
            CredentialError::NotFound(m) => IamError::NotFound(m),
            CredentialError::LimitExceeded(m) => IamError::LimitExceeded(m),
            CredentialError::Store(e) => IamError::Internal(e.to_string()),
        }
    }
}

impl From<MalformedPolicy> for IamError {
    fn from(error: MalformedPolicy) -> Self {
        IamError::MalformedPolicy(error.0)
    }
}

/// Users, groups or roles.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EntityType {
    User,
    Group,
    Role,
}

impl EntityType {
    pub fn as_str(self) -> &'static str {
        match self {
            EntityType::User => "user",
            EntityType::Group => "group",
            EntityType::Role => "role",
        }
    }

    fn prefix(self) -> &'static str {
        match self {
            EntityType::User => USER_PREFIX,
            EntityType::Group => GROUP_PREFIX,
            EntityType::Role => ROLE_PREFIX,
        }
    }

    /// The characters the inline policies of one entity may total (AWS IAM's sizes; every
    /// character counts, white space too, so that what is stored is bounded).
    pub fn inline_policy_chars(self) -> usize {
        match self {
            EntityType::User => 6_144,
            EntityType::Group => 5_120,
            EntityType::Role => 10_240,
        }
    }

    fn id_prefix(self) -> &'static str {
        match self {
            EntityType::User => "AIDA",
            EntityType::Group => "AGPA",
            EntityType::Role => "AROA",
        }
    }
}

/// A user, group or role as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entity {
    pub name: String,
    pub id: String,
    pub created: UnixSeconds,
    /// Inline policies by name (JSON text).
    pub policies: BTreeMap<String, String>,
    /// Users only: the groups it belongs to.
    #[serde(default)]
    pub groups: BTreeSet<String>,
    /// Roles only: who may assume it.
    #[serde(default)]
    pub trust_policy: Option<String>,
}

#[derive(Default)]
struct Entities {
    by_type: HashMap<EntityType, BTreeMap<String, Entity>>,
}

impl Entities {
    fn of(&self, kind: EntityType) -> Option<&BTreeMap<String, Entity>> {
        self.by_type.get(&kind)
    }

    fn get(&self, kind: EntityType, name: &str) -> Option<&Entity> {
        self.of(kind)?.get(name)
    }
}

/// The entities in memory, shared with the credential store as its [`PrincipalDirectory`].
#[derive(Default)]
struct Registry(RwLock<Entities>);

impl Registry {
    fn read(&self) -> std::sync::RwLockReadGuard<'_, Entities> {
        match self.0.read() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Entities> {
        match self.0.write() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }
}

impl PrincipalDirectory for Registry {
    fn current_id(&self, kind: &PrincipalKind) -> Option<String> {
        let (kind, name) = match kind {
            PrincipalKind::Root => return None,
            PrincipalKind::User { name } => (EntityType::User, name),
            PrincipalKind::AssumedRole { role, .. } => (EntityType::Role, role),
        };
        self.read().get(kind, name).map(|e| e.id.clone())
    }
}

/// IAM names: 1–64 of letters, digits and `+=,.@_-`.
pub fn validate_name(kind: &str, name: &str) -> Result<(), IamError> {
    let ok = (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"+=,.@_-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(IamError::Validation(format!(
            "{kind} name '{}' must be 1 to 64 of letters, digits and +=,.@_-",
            crate::keys::printable_input(name)
        )))
    }
}

fn encode(entity: &Entity) -> Result<Vec<u8>, IamError> {
    serde_json::to_vec(entity).map_err(|e| IamError::Internal(e.to_string()))
}

/// The identity service.
pub struct IamService {
    partition: String,
    account_id: String,
    clock: Arc<dyn Clock>,
    store: Arc<Store>,
    credentials: Arc<CredentialStore>,
    quotas: IamQuotas,
    entities: Arc<Registry>,
    /// Serialises changes, and the issue of credentials with the deletion of their principal.
    gate: tokio::sync::Mutex<()>,
    /// The store's view when the gate was last taken: a change is written only if the entities
    /// it read were not changed by another daemon since (see `commit`).
    gate_view: std::sync::atomic::AtomicI64,
    /// Parsed identity policies per principal ARN; emptied after every change.
    policies: PolicyCache,
    /// The account's OpenID Connect identity providers.
    oidc: oidc::OidcProviders,
    /// Users' login profiles and the account's password policy.
    passwords: passwords::Passwords,
}

impl IamService {
    pub fn open(
        partition: &str,
        account_id: &str,
        clock: Arc<dyn Clock>,
        store: Arc<Store>,
        credentials: Arc<CredentialStore>,
        quotas: IamQuotas,
    ) -> Result<Self, IamError> {
        let mut entities = Entities::default();
        for kind in [EntityType::User, EntityType::Group, EntityType::Role] {
            let mut map = BTreeMap::new();
            for (name, value) in store.scan(kind.prefix().as_bytes(), None, usize::MAX)? {
                let entity: Entity = serde_json::from_slice(&value).map_err(|e| {
                    IamError::Internal(format!(
                        "{} is damaged: {e}",
                        String::from_utf8_lossy(&name)
                    ))
                })?;
                map.insert(entity.name.clone(), entity);
            }
            entities.by_type.insert(kind, map);
        }
        let entities = Arc::new(Registry(RwLock::new(entities)));
        credentials.bind_directory(entities.clone())?;
        let oidc = oidc::OidcProviders::open(store.clone())
            .map_err(|e| IamError::Internal(e.to_string()))?;
        let passwords = passwords::Passwords::open(store.clone())
            .map_err(|e| IamError::Internal(e.to_string()))?;
        Ok(Self {
            oidc,
            passwords,
            partition: partition.to_owned(),
            account_id: account_id.to_owned(),
            clock,
            store,
            credentials,
            quotas,
            entities,
            gate: tokio::sync::Mutex::new(()),
            gate_view: std::sync::atomic::AtomicI64::new(0),
            policies: PolicyCache::default(),
        })
    }

    pub fn partition(&self) -> &str {
        &self.partition
    }

    pub fn account_id(&self) -> &str {
        &self.account_id
    }

    /// The account's OpenID Connect identity providers.
    pub fn oidc(&self) -> &oidc::OidcProviders {
        &self.oidc
    }

    /// Users' login profiles and the account's password policy.
    pub fn passwords(&self) -> &passwords::Passwords {
        &self.passwords
    }

    /// The ARN of the OIDC provider `name` (its issuer URL without the scheme).
    pub fn oidc_provider_arn(&self, name: &str) -> String {
        format!(
            "arn:{}:iam::{}:oidc-provider/{name}",
            self.partition, self.account_id
        )
    }

    pub fn now(&self) -> UnixSeconds {
        self.clock.now()
    }

    pub fn credentials(&self) -> &Arc<CredentialStore> {
        &self.credentials
    }

    pub fn arn(&self, kind: EntityType, name: &str) -> String {
        format!(
            "arn:{}:iam::{}:{}/{name}",
            self.partition,
            self.account_id,
            kind.as_str()
        )
    }

    pub fn root_arn(&self) -> String {
        format!("arn:{}:iam::{}:root", self.partition, self.account_id)
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Entities> {
        self.entities.read()
    }

    /// The unique id of a user, group or role (`AIDA…`, `AROA…`), without copying the rest.
    pub fn unique_id(&self, kind: EntityType, name: &str) -> Option<String> {
        self.read().get(kind, name).map(|entity| entity.id.clone())
    }

    pub fn get(&self, kind: EntityType, name: &str) -> Option<Entity> {
        self.read().get(kind, name).cloned()
    }

    pub fn list(&self, kind: EntityType) -> Vec<Entity> {
        self.read()
            .of(kind)
            .map(|m| m.values().cloned().collect())
            .unwrap_or_default()
    }

    pub fn require(&self, kind: EntityType, name: &str) -> Result<Entity, IamError> {
        self.get(kind, name).ok_or_else(|| {
            IamError::NotFound(format!(
                "the {} '{}' does not exist",
                kind.as_str(),
                crate::keys::printable_input(name)
            ))
        })
    }

    /// Takes in a change another daemon made to the store: the users, groups and roles it
    /// changed are read again.
    pub fn heard(&self, changed: crate::store::Changed<'_>) {
        self.oidc.heard(changed);
        self.passwords.heard(changed);
        let kinds = [EntityType::User, EntityType::Group, EntityType::Role];
        let mut reread = Vec::new();
        match changed {
            crate::store::Changed::Records(names, _) => {
                for name in names {
                    for kind in kinds {
                        if let Some(entity) = name.strip_prefix(kind.prefix().as_bytes()) {
                            reread.push((kind, String::from_utf8_lossy(entity).into_owned()));
                        }
                    }
                }
            }
            crate::store::Changed::All(_) => {
                let entities = self.entities.read();
                for kind in kinds {
                    if let Some(known) = entities.of(kind) {
                        reread.extend(known.keys().map(|name| (kind, name.clone())));
                    }
                }
                drop(entities);
                for kind in kinds {
                    match self.store.scan(kind.prefix().as_bytes(), None, usize::MAX) {
                        Ok(stored) => reread.extend(stored.into_iter().map(|(name, _)| {
                            let entity = name.get(kind.prefix().len()..).unwrap_or_default();
                            (kind, String::from_utf8_lossy(entity).into_owned())
                        })),
                        Err(error) => tracing::error!(%error, "cannot read identities again"),
                    }
                }
            }
        }
        if reread.is_empty() {
            return;
        }
        for (kind, name) in reread {
            let stored = match self
                .store
                .get(format!("{}{name}", kind.prefix()).as_bytes())
            {
                Ok(stored) => stored,
                Err(error) => {
                    tracing::error!(%error, %name, "cannot read an identity again");
                    continue;
                }
            };
            let entity = match stored
                .map(|v| serde_json::from_slice::<Entity>(&v))
                .transpose()
            {
                Ok(entity) => entity,
                Err(error) => {
                    tracing::error!(%error, %name, "an identity record is damaged");
                    continue;
                }
            };
            let mut entities = self.entities.write();
            let map = entities.by_type.entry(kind).or_default();
            match entity {
                Some(entity) => {
                    map.insert(name, entity);
                }
                None => {
                    map.remove(&name);
                }
            }
        }
        self.policies.invalidate();
    }

    /// Takes the gate that serialises changes, noting the view the change will read at.
    async fn lock_gate(&self) -> tokio::sync::MutexGuard<'_, ()> {
        let gate = self.gate.lock().await;
        self.gate_view
            .store(self.store.view(), std::sync::atomic::Ordering::Release);
        gate
    }

    /// Writes `changed` entities and deletes `deleted` ones, durably, then updates memory;
    /// refused as [`IamError::ConcurrentModification`] when another daemon changed one of them
    /// since the gate was taken.
    async fn commit(
        &self,
        changed: Vec<(EntityType, Entity)>,
        deleted: Vec<(EntityType, String)>,
    ) -> Result<(), IamError> {
        let mut batch = WriteBatch::new();
        let view = self.gate_view.load(std::sync::atomic::Ordering::Acquire);
        let known = |kind: EntityType, name: &str| {
            self.entities
                .read()
                .of(kind)
                .is_some_and(|map| map.contains_key(name))
        };
        for (kind, entity) in &changed {
            let name = format!("{}{}", kind.prefix(), entity.name);
            batch.put(name.clone(), encode(entity)?);
            if known(*kind, &entity.name) {
                batch.require_present_unchanged(name, view);
            } else {
                batch.require_unchanged(name, view);
            }
        }
        for (kind, entity) in &deleted {
            let name = format!("{}{entity}", kind.prefix());
            batch.delete(name.clone());
            batch.require_present_unchanged(name, view);
        }
        match self.store.try_commit(batch).await {
            Ok(()) => {}
            Err(crate::store::CommitError::Stale) => {
                return Err(IamError::ConcurrentModification(
                    "another daemon changed the entity at the same time; try again".into(),
                ));
            }
            Err(error) => return Err(crate::store::StoreError::from(error).into()),
        }
        let mut entities = self.entities.write();
        for (kind, name) in deleted {
            entities.by_type.entry(kind).or_default().remove(&name);
        }
        for (kind, entity) in changed {
            entities
                .by_type
                .entry(kind)
                .or_default()
                .insert(entity.name.clone(), entity);
        }
        drop(entities);
        self.policies.invalidate();
        Ok(())
    }

    fn new_entity(&self, kind: EntityType, name: &str) -> Entity {
        const BASE32: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
        let mut rng = rand::rngs::OsRng;
        let id = std::iter::once(kind.id_prefix().to_owned())
            .chain((0..17).map(|_| (BASE32[rng.gen_range(0..32)] as char).to_string()))
            .collect();
        Entity {
            name: name.to_owned(),
            id,
            created: self.clock.now(),
            policies: BTreeMap::new(),
            groups: BTreeSet::new(),
            trust_policy: None,
        }
    }

    /// Creates a user, group or role (a role needs its trust policy).
    pub async fn create(
        &self,
        kind: EntityType,
        name: &str,
        trust_policy: Option<String>,
    ) -> Result<Entity, IamError> {
        validate_name(kind.as_str(), name)?;
        let mut entity = self.new_entity(kind, name);
        if kind == EntityType::Role {
            let trust = trust_policy.ok_or_else(|| {
                IamError::Validation(
                    "a role needs a trust policy (AssumeRolePolicyDocument)".into(),
                )
            })?;
            if trust.chars().count() > MAX_TRUST_POLICY_CHARS {
                return Err(IamError::LimitExceeded(format!(
                    "a role's trust policy is at most {MAX_TRUST_POLICY_CHARS} characters"
                )));
            }
            Policy::parse(&trust, PolicyKind::Resource)?;
            entity.trust_policy = Some(trust);
        }
        let _gate = self.lock_gate().await;
        if self.get(kind, name).is_some() {
            return Err(IamError::AlreadyExists(format!(
                "the {} '{name}' already exists",
                kind.as_str()
            )));
        }
        let quota = match kind {
            EntityType::User => self.quotas.users,
            EntityType::Group => self.quotas.groups,
            EntityType::Role => self.quotas.roles,
        };
        // Counted under the gate, so concurrent creates cannot overshoot.
        if self.read().of(kind).map_or(0, BTreeMap::len) >= quota {
            return Err(IamError::LimitExceeded(format!(
                "the account already has the most {}s it may hold ({quota})",
                kind.as_str()
            )));
        }
        self.commit(vec![(kind, entity.clone())], vec![]).await?;
        Ok(entity)
    }

    /// Deletes a user (with its access keys and group memberships), a group (leaving its
    /// users) or a role (ending its sessions).
    pub async fn delete(&self, kind: EntityType, name: &str) -> Result<(), IamError> {
        let _gate = self.lock_gate().await;
        self.require(kind, name)?;
        if kind == EntityType::User && self.credentials.mfa().has_devices(name) {
            return Err(IamError::DeleteConflict(format!(
                "user '{name}' has an MFA device enabled; deactivate it first"
            )));
        }
        self.unbind_all_certificates(kind, name).await?;
        let mut changed = Vec::new();
        match kind {
            EntityType::User => {
                self.credentials
                    .delete_all_of(&format!("user/{name}"))
                    .await?;
                // Its password goes with it (bound to its id, it would open nothing anyway).
                match self.passwords.delete(name).await {
                    Ok(()) | Err(passwords::PasswordError::NotFound(_)) => {}
                    Err(error) => {
                        return Err(IamError::Internal(format!(
                            "the user's login profile could not be deleted: {error:?}"
                        )));
                    }
                }
            }
            EntityType::Role => {
                self.credentials
                    .delete_all_of(&format!("assumed-role/{name}/"))
                    .await?
            }
            EntityType::Group => {
                for mut user in self.list(EntityType::User) {
                    if user.groups.remove(name) {
                        changed.push((EntityType::User, user));
                    }
                }
            }
        }
        self.commit(changed, vec![(kind, name.to_owned())]).await
    }

    pub async fn add_user_to_group(&self, group: &str, user: &str) -> Result<(), IamError> {
        let _gate = self.lock_gate().await;
        self.require(EntityType::Group, group)?;
        let mut entity = self.require(EntityType::User, user)?;
        if !entity.groups.contains(group) && entity.groups.len() >= MAX_GROUPS_PER_USER {
            return Err(IamError::LimitExceeded(format!(
                "user '{user}' is already in {MAX_GROUPS_PER_USER} groups, the most a user may join"
            )));
        }
        if entity.groups.insert(group.to_owned()) {
            self.commit(vec![(EntityType::User, entity)], vec![])
                .await?;
        }
        Ok(())
    }

    pub async fn remove_user_from_group(&self, group: &str, user: &str) -> Result<(), IamError> {
        let _gate = self.lock_gate().await;
        self.require(EntityType::Group, group)?;
        let mut entity = self.require(EntityType::User, user)?;
        if !entity.groups.remove(group) {
            return Err(IamError::NotFound(format!(
                "user '{user}' is not in group '{group}'"
            )));
        }
        self.commit(vec![(EntityType::User, entity)], vec![]).await
    }

    /// The users in a group.
    pub fn members(&self, group: &str) -> Vec<String> {
        self.list(EntityType::User)
            .into_iter()
            .filter(|u| u.groups.contains(group))
            .map(|u| u.name)
            .collect()
    }

    /// A new access key for `user`, bound to its unique id. Under the gate, so that a user
    /// being deleted cannot get a key after its keys were deleted.
    pub async fn create_access_key(&self, user: &str) -> Result<NewAccessKey, IamError> {
        let _gate = self.lock_gate().await;
        let entity = self.require(EntityType::User, user)?;
        Ok(self.credentials.create_access_key(user, &entity.id).await?)
    }

    /// A role's trust policy, parsed, for authorising `sts:AssumeRole`.
    pub fn trust_policy(&self, role: &str) -> Option<NamedPolicy> {
        self.role_trust(role).map(|(_, policy)| policy)
    }

    /// A role's unique id and its trust policy: AssumeRole authorises against the policy and
    /// then issues the session only to the role of that id, not to one made since under the
    /// same name.
    pub fn role_trust(&self, role: &str) -> Option<(String, NamedPolicy)> {
        let entity = self.get(EntityType::Role, role)?;
        let text = entity.trust_policy.as_deref()?;
        let policy = Policy::parse_stored(text, PolicyKind::Resource).unwrap_or_else(|e| {
            tracing::error!(role, error = %e,
                "a role's stored trust policy cannot be read; nobody may assume the role");
            Policy::deny_all(PolicyKind::Resource)
        });
        Some((
            entity.id,
            NamedPolicy {
                name: format!("role/{role}/trust-policy"),
                policy: Arc::new(policy),
            },
        ))
    }

    /// Temporary credentials for a session of `role`, whose unique id must be `role_id`
    /// (authorisation is the caller's job). Under the gate, so that a role being deleted
    /// cannot get a session after its sessions were ended.
    pub async fn assume_role(
        &self,
        role: &str,
        role_id: &str,
        session_name: &str,
        duration_seconds: Option<u32>,
    ) -> Result<NewAccessKey, IamError> {
        self.assume_role_with_mfa(role, role_id, session_name, duration_seconds, None)
            .await
    }

    /// As [`assume_role`](Self::assume_role), for a session issued against an MFA code
    /// accepted at `mfa_authenticated`.
    pub async fn assume_role_with_mfa(
        &self,
        role: &str,
        role_id: &str,
        session_name: &str,
        duration_seconds: Option<u32>,
        mfa_authenticated: Option<UnixSeconds>,
    ) -> Result<NewAccessKey, IamError> {
        let duration = duration_seconds.unwrap_or(DEFAULT_SESSION_SECONDS);
        if !(MIN_SESSION_SECONDS..=MAX_SESSION_SECONDS).contains(&duration) {
            return Err(IamError::Validation(format!(
                "DurationSeconds must be between {MIN_SESSION_SECONDS} and {MAX_SESSION_SECONDS}; got {duration}"
            )));
        }
        let session_ok = (2..=64).contains(&session_name.len())
            && session_name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"+=,.@_-".contains(&b));
        if !session_ok {
            return Err(IamError::Validation(
                "RoleSessionName must be 2 to 64 of letters, digits and +=,.@_-".into(),
            ));
        }
        let _gate = self.lock_gate().await;
        let entity = self.require(EntityType::Role, role)?;
        if entity.id != role_id {
            // The role authorised was deleted and another made under its name.
            return Err(IamError::NotFound(format!(
                "the role '{role}' does not exist"
            )));
        }
        Ok(self
            .credentials
            .create_role_session(
                role,
                role_id,
                session_name,
                i64::from(duration),
                mfa_authenticated,
                self.quotas.sessions_per_role,
            )
            .await?)
    }

    /// The principal an ARN names in this account (for the simulator), if it exists.
    pub fn principal_for_arn(&self, arn: &str) -> Result<Principal, IamError> {
        let not_found = || IamError::NotFound(format!("no principal {arn} in this account"));
        let parts: Vec<&str> = arn.splitn(6, ':').collect();
        if parts.len() != 6 || parts[0] != "arn" || parts[4] != self.account_id {
            return Err(not_found());
        }
        let resource = parts[5];
        let stored = if parts[2] == "iam" && resource == "root" {
            "root".to_owned()
        } else if parts[2] == "iam" && resource.starts_with("user/") {
            let name = &resource[5..];
            self.require(EntityType::User, name)?;
            resource.to_owned()
        } else if parts[2] == "iam" && resource.starts_with("role/") {
            let name = &resource[5..];
            self.require(EntityType::Role, name)?;
            format!("assumed-role/{name}/simulated")
        } else if parts[2] == "sts" && resource.starts_with("assumed-role/") {
            let role = resource[13..].split('/').next().unwrap_or_default();
            self.require(EntityType::Role, role)?;
            resource.to_owned()
        } else {
            return Err(not_found());
        };
        crate::auth::principal(&stored, &self.partition, &self.account_id).ok_or_else(not_found)
    }
}

#[cfg(test)]
mod tests;
