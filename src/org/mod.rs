//! The organisation one daemon hosts: its member accounts and the guardrail policies (AWS
//! Organizations' service control policies) attached to its root and to its accounts.
//!
//! The account the data directory was made for is the management account. It makes member
//! accounts; each member's records live in the store under `accounts/<id>/` (see
//! [`member_scope`]), so that a member's keys, aliases, identities and credentials are its own
//! and out of every other account's sight. This module keeps only the organisation's own
//! records, under `org/`:
//!
//! - `org/accounts/<id>`: a member account (its name, when it joined);
//! - `org/policies/<name>`: a guardrail policy (its document, as given);
//! - `org/attached/<target>/<name>`: the policy `name` attached to `root` or to an account;
//! - `org/account-names/<name>`: the id of the account of that name.
//!
//! On a store several daemons share, each change is written only if what it read did not
//! change since (`ConcurrentModificationException` otherwise): two daemons cannot both make
//! an account or a policy of one name, nor delete a policy while the other attaches it.
//!
//! Guardrails cap what the principals of member accounts may do, their roots included, and
//! never the management account's ([`Organisation::guardrails_for`]). As in AWS, a policy
//! allowing everything ([`FULL_ACCESS`]) is attached to the root and to every account as it is
//! made: a level from which every policy is detached refuses everything.

use crate::clock::{Clock, UnixSeconds};
use crate::policy::{GuardrailLevel, NamedPolicy, Policy, PolicyKind};
use crate::store::{Changed, Store, StoreError, WriteBatch};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, RwLock};

const ACCOUNT_PREFIX: &[u8] = b"org/accounts/";
const POLICY_PREFIX: &[u8] = b"org/policies/";
const ATTACHED_PREFIX: &[u8] = b"org/attached/";
/// An account's name, taken: written with the account, so that two daemons of a cluster
/// cannot both make an account of one name.
const ACCOUNT_NAME_PREFIX: &[u8] = b"org/account-names/";
/// Where every record of the organisation lives.
const ORG_PREFIX: &[u8] = b"org/";
/// The target naming the organisation's root.
pub const ROOT_TARGET: &str = "root";
/// The guardrail attached everywhere by default: it allows everything.
pub const FULL_ACCESS: &str = "FullAccess";
const FULL_ACCESS_DOCUMENT: &str =
    r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"*","Resource":"*"}]}"#;
/// The most member accounts one daemon hosts.
pub const MAX_ACCOUNTS: usize = 1_000;
/// The most guardrail policies, and the most attached to one target (AWS: 5 per target).
pub const MAX_POLICIES: usize = 1_000;
pub const MAX_ATTACHED_PER_TARGET: usize = 5;
/// AWS's limit on a service control policy's size.
pub const MAX_GUARDRAIL_BYTES: usize = 5_120;

/// Whether the store record `name` lists a member account (a change of it may mean an
/// account another daemon made).
pub fn lists_account(name: &[u8]) -> bool {
    name.starts_with(ACCOUNT_PREFIX)
}

/// Where a member account's records live in the store.
pub fn member_scope(account_id: &str) -> String {
    format!("accounts/{account_id}/")
}

/// The store prefix every member account's records live under.
pub const MEMBERS_PREFIX: &[u8] = b"accounts/";

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OrgError {
    /// The account, policy or target does not exist (its kind, then the message).
    NotFound(&'static str, String),
    /// An account or policy of that name exists, or the policy is attached already.
    Duplicate(&'static str, String),
    /// The request breaks a rule (a name, a limit, a policy still attached).
    Constraint(&'static str, String),
    MalformedPolicy(String),
    Store(String),
}

impl std::fmt::Display for OrgError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            OrgError::NotFound(_, m)
            | OrgError::Duplicate(_, m)
            | OrgError::Constraint(_, m)
            | OrgError::MalformedPolicy(m)
            | OrgError::Store(m) => f.write_str(m),
        }
    }
}

impl From<StoreError> for OrgError {
    fn from(error: StoreError) -> Self {
        OrgError::Store(error.to_string())
    }
}

/// A member account.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct MemberAccount {
    pub id: String,
    pub name: String,
    pub joined: UnixSeconds,
}

/// A guardrail policy as stored.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct StoredPolicy {
    name: String,
    #[serde(default)]
    description: String,
    document: String,
    created: UnixSeconds,
}

/// A guardrail policy.
#[derive(Debug, Clone)]
pub struct GuardrailPolicy {
    pub name: String,
    pub description: String,
    pub document: String,
    pub created: UnixSeconds,
    pub policy: Arc<Policy>,
}

#[derive(Debug, Default)]
struct State {
    accounts: BTreeMap<String, MemberAccount>,
    policies: BTreeMap<String, GuardrailPolicy>,
    /// Target (`root` or an account id) → the names of the policies attached to it.
    attached: BTreeMap<String, BTreeSet<String>>,
    /// Member account → the guardrail levels on its path (derived from the above).
    paths: BTreeMap<String, Guardrails>,
}

pub struct Organisation {
    store: Arc<Store>,
    management: String,
    clock: Arc<dyn Clock>,
    state: RwLock<State>,
}

fn name_text(name: &[u8], prefix: &[u8]) -> Result<String, StoreError> {
    String::from_utf8(name[prefix.len()..].to_vec())
        .map_err(|_| StoreError("an organisation record's name is not text".into()))
}

fn parse_guardrail(text: &str) -> Result<Arc<Policy>, OrgError> {
    if text.len() > MAX_GUARDRAIL_BYTES {
        return Err(OrgError::Constraint(
            "ConstraintViolationException",
            format!(
                "a guardrail policy is at most {MAX_GUARDRAIL_BYTES} bytes; this one has {}",
                text.len()
            ),
        ));
    }
    Policy::parse(text, PolicyKind::Identity)
        .map(Arc::new)
        .map_err(|e| OrgError::MalformedPolicy(e.0))
}

/// A policy name: 1 to 128 letters, digits and `+=,.@-_`, as IAM's.
fn check_policy_name(name: &str) -> Result<(), OrgError> {
    let good = !name.is_empty()
        && name.len() <= 128
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "+=,.@-_".contains(c));
    if good {
        Ok(())
    } else {
        Err(OrgError::Constraint(
            "InvalidInputException",
            format!(
                "the policy name {:?} must be 1 to 128 letters, digits and +=,.@-_",
                crate::keys::printable_input(name)
            ),
        ))
    }
}

/// An account name: 1 to 50 printable characters, as AWS's.
fn check_account_name(name: &str) -> Result<(), OrgError> {
    let good = !name.trim().is_empty()
        && name.chars().count() <= 50
        && name.chars().all(|c| !c.is_control());
    if good {
        Ok(())
    } else {
        Err(OrgError::Constraint(
            "InvalidInputException",
            "an account name is 1 to 50 printable characters".into(),
        ))
    }
}

impl Organisation {
    /// The organisation of the store's management account `management`, as stored.
    pub fn open(
        store: Arc<Store>,
        management: &str,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, OrgError> {
        let state = Self::load(&store)?;
        Ok(Self {
            store,
            management: management.to_owned(),
            clock,
            state: RwLock::new(state),
        })
    }

    fn load(store: &Store) -> Result<State, OrgError> {
        let mut state = State::default();
        for (name, value) in store.scan(ACCOUNT_PREFIX, None, usize::MAX)? {
            let account: MemberAccount = serde_json::from_slice(&value)
                .map_err(|e| StoreError(format!("a member account record does not parse: {e}")))?;
            state
                .accounts
                .insert(name_text(&name, ACCOUNT_PREFIX)?, account);
        }
        for (_, value) in store.scan(POLICY_PREFIX, None, usize::MAX)? {
            let stored: StoredPolicy = serde_json::from_slice(&value)
                .map_err(|e| StoreError(format!("a guardrail record does not parse: {e}")))?;
            let policy = Policy::parse(&stored.document, PolicyKind::Identity).map_err(|e| {
                StoreError(format!("guardrail {} does not parse: {}", stored.name, e.0))
            })?;
            state.policies.insert(
                stored.name.clone(),
                GuardrailPolicy {
                    name: stored.name,
                    description: stored.description,
                    document: stored.document,
                    created: stored.created,
                    policy: Arc::new(policy),
                },
            );
        }
        for (name, _) in store.scan(ATTACHED_PREFIX, None, usize::MAX)? {
            let text = name_text(&name, ATTACHED_PREFIX)?;
            if let Some((target, policy)) = text.split_once('/') {
                state
                    .attached
                    .entry(target.to_owned())
                    .or_default()
                    .insert(policy.to_owned());
            }
        }
        Ok(state.with_paths())
    }

    /// Reads the organisation again when another daemon changed it.
    pub fn heard(&self, changed: Changed<'_>) {
        let relevant = match changed {
            Changed::All(_) => true,
            Changed::Records(names, _) => names.iter().any(|n| n.starts_with(ORG_PREFIX)),
        };
        if !relevant {
            return;
        }
        match Self::load(&self.store) {
            Ok(state) => {
                if let Ok(mut slot) = self.state.write() {
                    *slot = state;
                }
            }
            Err(error) => tracing::error!(%error, "cannot read the organisation again"),
        }
    }

    pub fn management_account(&self) -> &str {
        &self.management
    }

    fn read(&self) -> Result<std::sync::RwLockReadGuard<'_, State>, OrgError> {
        self.state
            .read()
            .map_err(|_| OrgError::Store("organisation lock poisoned".into()))
    }

    pub fn accounts(&self) -> Vec<MemberAccount> {
        self.read()
            .map(|s| s.accounts.values().cloned().collect())
            .unwrap_or_default()
    }

    pub fn account(&self, id: &str) -> Option<MemberAccount> {
        self.read().ok()?.accounts.get(id).cloned()
    }

    /// Whether `id` is the management account or one of its members.
    pub fn knows(&self, id: &str) -> bool {
        id == self.management || self.account(id).is_some()
    }

    /// A new member account's record, its id fresh; stored by [`Organisation::add_account`]
    /// once its root credentials are (so that no account is ever listed without them).
    pub fn new_account(&self, name: &str) -> Result<MemberAccount, OrgError> {
        check_account_name(name)?;
        let state = self.read()?;
        if state.accounts.values().any(|a| a.name == name) {
            return Err(OrgError::Duplicate(
                "DuplicateAccountException",
                format!("an account named {name:?} exists already"),
            ));
        }
        if state.accounts.len() >= MAX_ACCOUNTS {
            return Err(OrgError::Constraint(
                "ConstraintViolationException",
                format!("the organisation has {MAX_ACCOUNTS} member accounts, its most"),
            ));
        }
        let id = loop {
            let candidate = format!("{:012}", rand::random::<u64>() % 1_000_000_000_000);
            if candidate != self.management
                && !state.accounts.contains_key(&candidate)
                && !candidate.starts_with('0')
            {
                break candidate;
            }
        };
        Ok(MemberAccount {
            id,
            name: name.to_owned(),
            joined: self.clock.now(),
        })
    }

    /// Stores a member account made by [`Organisation::new_account`], with the full-access
    /// guardrail attached to it (and to the root, the first time).
    pub async fn add_account(&self, account: &MemberAccount) -> Result<(), OrgError> {
        let view = self.store.view();
        let mut batch = WriteBatch::new();
        let value = serde_json::to_vec(account).map_err(|e| OrgError::Store(e.to_string()))?;
        let first = {
            let state = self.read()?;
            if state
                .accounts
                .values()
                .any(|a| a.name == account.name && a.id != account.id)
            {
                return Err(OrgError::Duplicate(
                    "DuplicateAccountException",
                    format!("an account named {:?} exists already", account.name),
                ));
            }
            state.accounts.is_empty() && !state.policies.contains_key(FULL_ACCESS)
        };
        let taken = [ACCOUNT_NAME_PREFIX, account.name.as_bytes()].concat();
        batch.put(taken.clone(), account.id.as_bytes().to_vec());
        batch.require_unchanged(taken, view);
        batch.put(account_name(&account.id), value);
        batch.require_unchanged(account_name(&account.id), view);
        if first {
            batch.put(policy_name(FULL_ACCESS), self.full_access_record()?);
            batch.require_unchanged(policy_name(FULL_ACCESS), view);
            batch.put(attached_name(ROOT_TARGET, FULL_ACCESS), Vec::new());
        }
        batch.put(attached_name(&account.id, FULL_ACCESS), Vec::new());
        self.commit(batch).await?;
        self.reload()
    }

    /// Commits a change of the organisation, refused when another daemon changed what it
    /// read since (then nothing is written: try again).
    async fn commit(&self, batch: WriteBatch) -> Result<(), OrgError> {
        match self.store.try_commit(batch).await {
            Ok(()) => Ok(()),
            Err(crate::store::CommitError::Stale) => {
                // What the other daemon did is read before the answer.
                let _ = self.reload();
                Err(OrgError::Constraint(
                    "ConcurrentModificationException",
                    "another daemon changed the organisation at the same time; try again".into(),
                ))
            }
            Err(error) => Err(StoreError::from(error).into()),
        }
    }

    /// The stored form of the policy `name`, written again (unchanged) by a change of its
    /// attachments: a deletion and an attachment on two daemons at once refuse each other.
    fn touch_policy(&self, batch: &mut WriteBatch, name: &str, view: i64) -> Result<(), OrgError> {
        let policy = self.policy(name)?;
        let stored = StoredPolicy {
            name: policy.name,
            description: policy.description,
            document: policy.document,
            created: policy.created,
        };
        batch.put(
            policy_name(name),
            serde_json::to_vec(&stored).map_err(|e| OrgError::Store(e.to_string()))?,
        );
        batch.require_present_unchanged(policy_name(name), view);
        Ok(())
    }

    fn full_access_record(&self) -> Result<Vec<u8>, OrgError> {
        serde_json::to_vec(&StoredPolicy {
            name: FULL_ACCESS.into(),
            description: "Allows everything: guardrails only take away".into(),
            document: FULL_ACCESS_DOCUMENT.into(),
            created: self.clock.now(),
        })
        .map_err(|e| OrgError::Store(e.to_string()))
    }

    fn reload(&self) -> Result<(), OrgError> {
        let state = Self::load(&self.store)?;
        if let Ok(mut slot) = self.state.write() {
            *slot = state;
        }
        Ok(())
    }

    pub fn policies(&self) -> Vec<GuardrailPolicy> {
        self.read()
            .map(|s| s.policies.values().cloned().collect())
            .unwrap_or_default()
    }

    pub fn policy(&self, name: &str) -> Result<GuardrailPolicy, OrgError> {
        self.read()?
            .policies
            .get(name)
            .cloned()
            .ok_or_else(|| policy_not_found(name))
    }

    /// Creates a guardrail policy (attached to nothing yet).
    pub async fn create_policy(
        &self,
        name: &str,
        description: &str,
        document: &str,
    ) -> Result<GuardrailPolicy, OrgError> {
        check_policy_name(name)?;
        let policy = parse_guardrail(document)?;
        let view = self.store.view();
        {
            let state = self.read()?;
            if state.policies.contains_key(name) {
                return Err(OrgError::Duplicate(
                    "DuplicatePolicyException",
                    format!("a guardrail policy named {name} exists already"),
                ));
            }
            if state.policies.len() >= MAX_POLICIES {
                return Err(OrgError::Constraint(
                    "ConstraintViolationException",
                    format!("the organisation has {MAX_POLICIES} guardrail policies, its most"),
                ));
            }
        }
        let stored = StoredPolicy {
            name: name.to_owned(),
            description: description.to_owned(),
            document: document.to_owned(),
            created: self.clock.now(),
        };
        let mut batch = WriteBatch::new();
        batch.put(
            policy_name(name),
            serde_json::to_vec(&stored).map_err(|e| OrgError::Store(e.to_string()))?,
        );
        batch.require_unchanged(policy_name(name), view);
        self.commit(batch).await?;
        self.reload()?;
        Ok(GuardrailPolicy {
            name: stored.name,
            description: stored.description,
            document: stored.document,
            created: stored.created,
            policy,
        })
    }

    /// Deletes a guardrail policy attached to nothing.
    pub async fn delete_policy(&self, name: &str) -> Result<(), OrgError> {
        let view = self.store.view();
        self.policy(name)?;
        if let Some(target) = self
            .read()?
            .attached
            .iter()
            .find(|(_, names)| names.contains(name))
            .map(|(t, _)| t.clone())
        {
            return Err(OrgError::Constraint(
                "PolicyInUseException",
                format!("guardrail policy {name} is attached to {target}: detach it first"),
            ));
        }
        let mut batch = WriteBatch::new();
        batch.delete(policy_name(name));
        batch.require_present_unchanged(policy_name(name), view);
        self.commit(batch).await?;
        self.reload()
    }

    fn check_target(&self, target: &str) -> Result<(), OrgError> {
        if target == ROOT_TARGET || self.account(target).is_some() {
            Ok(())
        } else if target == self.management {
            Err(OrgError::Constraint(
                "ConstraintViolationException",
                "guardrails never apply to the management account: attach them to the root \
                 or to a member account"
                    .into(),
            ))
        } else {
            Err(OrgError::NotFound(
                "TargetNotFoundException",
                format!(
                    "no member account {} (a target is `root` or a member account id)",
                    crate::keys::printable_input(target)
                ),
            ))
        }
    }

    /// Attaches the policy `name` to `target` (`root` or a member account id).
    pub async fn attach(&self, name: &str, target: &str) -> Result<(), OrgError> {
        let view = self.store.view();
        self.policy(name)?;
        self.check_target(target)?;
        let attached = self.attached(target);
        if attached.iter().any(|n| n == name) {
            return Err(OrgError::Duplicate(
                "DuplicatePolicyAttachmentException",
                format!("guardrail policy {name} is attached to {target} already"),
            ));
        }
        if attached.len() >= MAX_ATTACHED_PER_TARGET {
            return Err(OrgError::Constraint(
                "ConstraintViolationException",
                format!("{target} has {MAX_ATTACHED_PER_TARGET} guardrail policies, its most"),
            ));
        }
        let mut batch = WriteBatch::new();
        batch.put(attached_name(target, name), Vec::new());
        batch.require_unchanged(attached_name(target, name), view);
        self.touch_policy(&mut batch, name, view)?;
        self.commit(batch).await?;
        self.reload()
    }

    /// Detaches the policy `name` from `target`.
    pub async fn detach(&self, name: &str, target: &str) -> Result<(), OrgError> {
        let view = self.store.view();
        self.policy(name)?;
        self.check_target(target)?;
        if !self.attached(target).iter().any(|n| n == name) {
            return Err(OrgError::NotFound(
                "PolicyNotAttachedException",
                format!("guardrail policy {name} is not attached to {target}"),
            ));
        }
        let mut batch = WriteBatch::new();
        batch.delete(attached_name(target, name));
        batch.require_present_unchanged(attached_name(target, name), view);
        self.touch_policy(&mut batch, name, view)?;
        self.commit(batch).await?;
        self.reload()
    }

    /// The names of the policies attached to `target`.
    pub fn attached(&self, target: &str) -> Vec<String> {
        self.read()
            .ok()
            .and_then(|s| s.attached.get(target).map(|n| n.iter().cloned().collect()))
            .unwrap_or_default()
    }

    /// The guardrail levels on the path of `account`: the root's policies, then the
    /// account's. None for the management account (exempt); one refusing everything for an
    /// account the organisation does not list.
    pub fn guardrails_for(&self, account: &str) -> Guardrails {
        if account == self.management {
            return no_guardrails();
        }
        match self.read() {
            Ok(state) => state
                .paths
                .get(account)
                .cloned()
                // An account the organisation does not list (one being made, or whose making
                // failed) is capped whole: a level without policies refuses everything.
                .unwrap_or_else(|| refuse_all(format!("account {account}"))),
            // A poisoned lock must not lift the guardrails.
            Err(_) => refuse_all("organisation root".into()),
        }
    }
}

/// The guardrail levels on one account's path, shared by every call of the account.
pub type Guardrails = Arc<Vec<GuardrailLevel>>;

/// The path of the management account, and of every caller without an organisation: no
/// level (one shared value: no allocation per call).
pub fn no_guardrails() -> Guardrails {
    static NONE: std::sync::OnceLock<Guardrails> = std::sync::OnceLock::new();
    NONE.get_or_init(Guardrails::default).clone()
}

/// A path of one level without policies: it refuses everything.
fn refuse_all(name: String) -> Guardrails {
    Arc::new(vec![GuardrailLevel {
        name,
        policies: Vec::new(),
    }])
}

impl State {
    /// Every member account's path (the root's policies, then the account's), made once per
    /// change of the organisation rather than on every call.
    fn with_paths(mut self) -> Self {
        let level = |target: &str, name: String| GuardrailLevel {
            name,
            policies: self
                .attached
                .get(target)
                .into_iter()
                .flatten()
                .filter_map(|policy| self.policies.get(policy))
                .map(|p| NamedPolicy {
                    name: format!("guardrail/{}", p.name),
                    policy: p.policy.clone(),
                })
                .collect(),
        };
        let paths = self
            .accounts
            .keys()
            .map(|account| {
                let path = vec![
                    level(ROOT_TARGET, "organisation root".into()),
                    level(account, format!("account {account}")),
                ];
                (account.clone(), Arc::new(path))
            })
            .collect();
        self.paths = paths;
        self
    }
}

fn policy_not_found(name: &str) -> OrgError {
    OrgError::NotFound(
        "PolicyNotFoundException",
        format!(
            "no guardrail policy named {}",
            crate::keys::printable_input(name)
        ),
    )
}

fn account_name(id: &str) -> Vec<u8> {
    [ACCOUNT_PREFIX, id.as_bytes()].concat()
}

fn policy_name(name: &str) -> Vec<u8> {
    [POLICY_PREFIX, name.as_bytes()].concat()
}

fn attached_name(target: &str, name: &str) -> Vec<u8> {
    [ATTACHED_PREFIX, target.as_bytes(), b"/", name.as_bytes()].concat()
}
