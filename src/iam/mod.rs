//! Identities: users, groups and roles, their inline policies, and what a caller's identity
//! policies are. Access keys and temporary credentials live in [`crate::auth`].
//!
//! Groups hold users, do not nest and are not principals: a user's identity policies are its
//! own and its groups'. A role's trust policy says who may assume it; its inline policies
//! are what its sessions may do.

use crate::auth::{CredentialError, CredentialStore, NewAccessKey, Principal, PrincipalKind};
use crate::clock::{Clock, UnixSeconds};
use crate::policy::{MalformedPolicy, NamedPolicy, Policy, PolicyKind};
use crate::store::{Store, StoreError, WriteBatch};
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
    entities: RwLock<Entities>,
    gate: tokio::sync::Mutex<()>,
    /// Parsed identity policies per principal ARN; cleared on every change.
    parsed: RwLock<HashMap<String, Arc<Vec<NamedPolicy>>>>,
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
        Ok(Self {
            partition: partition.to_owned(),
            account_id: account_id.to_owned(),
            clock,
            store,
            credentials,
            quotas,
            entities: RwLock::new(entities),
            gate: tokio::sync::Mutex::new(()),
            parsed: RwLock::new(HashMap::new()),
        })
    }

    pub fn partition(&self) -> &str {
        &self.partition
    }

    pub fn account_id(&self) -> &str {
        &self.account_id
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
        match self.entities.read() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
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

    fn require(&self, kind: EntityType, name: &str) -> Result<Entity, IamError> {
        self.get(kind, name).ok_or_else(|| {
            IamError::NotFound(format!(
                "the {} '{}' does not exist",
                kind.as_str(),
                crate::keys::printable_input(name)
            ))
        })
    }

    /// Writes `changed` entities and deletes `deleted` ones, durably, then updates memory.
    async fn commit(
        &self,
        changed: Vec<(EntityType, Entity)>,
        deleted: Vec<(EntityType, String)>,
    ) -> Result<(), IamError> {
        let mut batch = WriteBatch::new();
        for (kind, entity) in &changed {
            batch.put(format!("{}{}", kind.prefix(), entity.name), encode(entity)?);
        }
        for (kind, name) in &deleted {
            batch.delete(format!("{}{name}", kind.prefix()));
        }
        self.store.commit(batch).await?;
        let mut entities = match self.entities.write() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
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
        if let Ok(mut parsed) = self.parsed.write() {
            parsed.clear();
        }
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
        let _gate = self.gate.lock().await;
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
        let _gate = self.gate.lock().await;
        self.require(kind, name)?;
        let mut changed = Vec::new();
        match kind {
            EntityType::User => {
                self.credentials
                    .delete_all_of(&format!("user/{name}"))
                    .await?
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
        let _gate = self.gate.lock().await;
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
        let _gate = self.gate.lock().await;
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

    pub async fn put_policy(
        &self,
        kind: EntityType,
        name: &str,
        policy_name: &str,
        document: String,
    ) -> Result<(), IamError> {
        validate_name("policy", policy_name)?;
        let limit = kind.inline_policy_chars();
        let size = document.chars().count();
        if size > limit {
            return Err(IamError::LimitExceeded(format!(
                "the inline policies of a {} total at most {limit} characters; this one has {size}",
                kind.as_str()
            )));
        }
        Policy::parse(&document, PolicyKind::Identity)?;
        let _gate = self.gate.lock().await;
        let mut entity = self.require(kind, name)?;
        if !entity.policies.contains_key(policy_name)
            && entity.policies.len() >= MAX_INLINE_POLICIES
        {
            return Err(IamError::LimitExceeded(format!(
                "a {} has at most {MAX_INLINE_POLICIES} inline policies",
                kind.as_str()
            )));
        }
        let others: usize = entity
            .policies
            .iter()
            .filter(|(existing, _)| existing.as_str() != policy_name)
            .map(|(_, text)| text.chars().count())
            .sum();
        if others + size > limit {
            return Err(IamError::LimitExceeded(format!(
                "the inline policies of a {} total at most {limit} characters; with this one \
                 they would have {}",
                kind.as_str(),
                others + size
            )));
        }
        entity.policies.insert(policy_name.to_owned(), document);
        self.commit(vec![(kind, entity)], vec![]).await
    }

    pub fn get_policy(
        &self,
        kind: EntityType,
        name: &str,
        policy_name: &str,
    ) -> Result<String, IamError> {
        self.require(kind, name)?
            .policies
            .get(policy_name)
            .cloned()
            .ok_or_else(|| {
                IamError::NotFound(format!(
                    "the {} '{name}' has no policy '{}'",
                    kind.as_str(),
                    crate::keys::printable_input(policy_name)
                ))
            })
    }

    pub async fn delete_policy(
        &self,
        kind: EntityType,
        name: &str,
        policy_name: &str,
    ) -> Result<(), IamError> {
        let _gate = self.gate.lock().await;
        let mut entity = self.require(kind, name)?;
        if entity.policies.remove(policy_name).is_none() {
            return Err(IamError::NotFound(format!(
                "the {} '{name}' has no policy '{}'",
                kind.as_str(),
                crate::keys::printable_input(policy_name)
            )));
        }
        self.commit(vec![(kind, entity)], vec![]).await
    }

    pub fn list_policies(&self, kind: EntityType, name: &str) -> Result<Vec<String>, IamError> {
        Ok(self.require(kind, name)?.policies.keys().cloned().collect())
    }

    pub async fn create_access_key(&self, user: &str) -> Result<NewAccessKey, IamError> {
        self.require(EntityType::User, user)?;
        Ok(self.credentials.create_access_key(user).await?)
    }

    /// A role's trust policy, parsed, for authorising `sts:AssumeRole`.
    pub fn trust_policy(&self, role: &str) -> Option<NamedPolicy> {
        let text = self.get(EntityType::Role, role)?.trust_policy?;
        let policy = Policy::parse(&text, PolicyKind::Resource).ok()?;
        Some(NamedPolicy {
            name: format!("role/{role}/trust-policy"),
            policy: Arc::new(policy),
        })
    }

    /// Temporary credentials for a session of `role` (authorisation is the caller's job).
    pub async fn assume_role(
        &self,
        role: &str,
        session_name: &str,
        duration_seconds: Option<u32>,
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
        self.require(EntityType::Role, role)?;
        Ok(self
            .credentials
            .create_session(
                role,
                session_name,
                i64::from(duration),
                self.quotas.sessions_per_role,
            )
            .await?)
    }

    /// The identity policies of a principal: a user's own and its groups', a role session's
    /// role's. `None` for the account root, whose identity is unrestricted.
    pub fn identity_policies(&self, principal: &Principal) -> Option<Arc<Vec<NamedPolicy>>> {
        if principal.kind == PrincipalKind::Root {
            return None;
        }
        if let Some(cached) = self.parsed.read().ok()?.get(&principal.arn) {
            return Some(cached.clone());
        }
        let mut policies = Vec::new();
        let mut add = |owner: String, entity: &Entity| {
            for (name, text) in &entity.policies {
                // Stored policies were validated when put.
                if let Ok(policy) = Policy::parse(text, PolicyKind::Identity) {
                    policies.push(NamedPolicy {
                        name: format!("{owner}/{name}"),
                        policy: Arc::new(policy),
                    });
                }
            }
        };
        {
            let entities = self.read();
            match &principal.kind {
                PrincipalKind::Root => {}
                PrincipalKind::User { name } => {
                    if let Some(user) = entities.get(EntityType::User, name) {
                        add(format!("user/{name}"), user);
                        for group in &user.groups {
                            if let Some(g) = entities.get(EntityType::Group, group) {
                                add(format!("group/{group}"), g);
                            }
                        }
                    }
                }
                PrincipalKind::AssumedRole { role, .. } => {
                    if let Some(r) = entities.get(EntityType::Role, role) {
                        add(format!("role/{role}"), r);
                    }
                }
            }
        }
        let policies = Arc::new(policies);
        if let Ok(mut parsed) = self.parsed.write() {
            parsed.insert(principal.arn.clone(), policies.clone());
        }
        Some(policies)
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
