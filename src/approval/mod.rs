//! Two-person approval of destructive actions: the lifecycle of an approval request, durable
//! in the store. The KMS operations ask [`Approvals::request`] when an action that needs
//! approval is otherwise allowed, answer `ApprovalRequiredException` with the request's id,
//! and run the action only through [`Approvals::take_for_execution`].
//!
//! A request names the action, the resource and the request's parameters (as canonical JSON),
//! so that an approval covers exactly what was asked and nothing else. Its approver must be
//! another person than its requester: principals are compared by their identity — the user, the
//! role (every session of a role is one identity) or the account root — so neither the
//! requester nor another session of the same role or user can approve. An approved request is
//! executed once, within its window; a request is rejected or expires otherwise.
//!
//! [`ApprovalSettings`] say which actions need approval, account-wide and per key. Turning
//! approval off for any action is itself an action that needs approval
//! ([`PUT_SETTINGS_ACTION`]), so one person cannot switch the control off and then act alone.

use crate::clock::{Clock, UnixSeconds};
use crate::store::{Store, StoreError, WriteBatch};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

const REQUEST_PREFIX: &[u8] = b"approval/request/";
const SETTINGS_RECORD: &[u8] = b"approval/settings";
/// The action that changes what needs approval; narrowing it needs approval itself.
pub const PUT_SETTINGS_ACTION: &str = "keyhaven:PutApprovalSettings";
/// How long a request waits for its approval, and an approval for its execution.
pub const DEFAULT_WINDOW_SECONDS: i64 = 86_400;
/// Most requests that may wait (pending) at once: asking for approval costs the asker nothing,
/// so the store and the approvers' list are bounded.
pub const DEFAULT_PENDING_LIMIT: usize = 1_000;
/// The actions that need approval when approval is on and names none.
pub const DEFAULT_ACTIONS: &[&str] = &[
    "kms:ScheduleKeyDeletion",
    "kms:PutKeyPolicy",
    "kms:DisableKey",
    "kms:DeleteImportedKeyMaterial",
];

/// Which actions need approval: for every key of the account, and per key (by key ARN).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApprovalSettings {
    #[serde(default)]
    pub account: BTreeSet<String>,
    #[serde(default)]
    pub keys: BTreeMap<String, BTreeSet<String>>,
}

impl ApprovalSettings {
    /// Whether `action` on the key `key_arn` needs approval.
    pub fn requires(&self, action: &str, key_arn: &str) -> bool {
        self.account.contains(action)
            || self
                .keys
                .get(key_arn)
                .is_some_and(|actions| actions.contains(action))
    }

    /// Whether going from these settings to `new` turns approval off for some action (of the
    /// account or of a key): that change needs approval itself, adding one does not.
    pub fn narrowed_by(&self, new: &ApprovalSettings) -> bool {
        !self.account.is_subset(&new.account)
            || self
                .keys
                .iter()
                .any(|(key, actions)| actions.iter().any(|a| !new.requires(a, key)))
    }

    /// The canonical JSON an approval of a change to these settings covers.
    pub fn canonical(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// Who asked or approved: the principal's ARN, and the identity behind it (the user's ARN,
/// the role's ARN for any of its sessions, the root's ARN).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Person {
    pub principal_arn: String,
    pub identity: String,
}

/// Where a request is in its lifecycle (expiry is computed, never stored).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ApprovalState {
    Pending,
    Approved { by: Person, at: UnixSeconds },
    Rejected { by: Person, at: UnixSeconds },
    Executed { by: Person, at: UnixSeconds },
    Expired,
}

impl ApprovalState {
    pub fn name(&self) -> &'static str {
        match self {
            ApprovalState::Pending => "Pending",
            ApprovalState::Approved { .. } => "Approved",
            ApprovalState::Rejected { .. } => "Rejected",
            ApprovalState::Executed { .. } => "Executed",
            ApprovalState::Expired => "Expired",
        }
    }
}

/// A request for approval, as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApprovalRequest {
    pub id: String,
    pub action: String,
    pub resource: String,
    /// The call's parameters, canonical JSON: execution must present the same.
    pub parameters: String,
    pub requester: Person,
    pub created: UnixSeconds,
    /// After this, a pending or approved request is expired.
    pub expires: UnixSeconds,
    pub state: ApprovalState,
    /// Who approved it: kept once it is executed, so that its execution names both people.
    #[serde(default)]
    pub approved_by: Option<Person>,
}

impl ApprovalRequest {
    /// The state as of `now`: pending and approved requests past their window are expired.
    pub fn state_at(&self, now: UnixSeconds) -> ApprovalState {
        match self.state {
            ApprovalState::Pending | ApprovalState::Approved { .. } if now >= self.expires => {
                ApprovalState::Expired
            }
            ref state => state.clone(),
        }
    }
}

/// Why an approval step was refused.
#[derive(Debug, thiserror::Error)]
pub enum ApprovalError {
    #[error("no approval request {0}")]
    NotFound(String),
    /// The approver is the requester, or another session of the same user or role.
    #[error("the approval request {0} cannot be approved by its requester's identity")]
    SameIdentity(String),
    #[error("the approval request {id} is {state}, not {wanted}")]
    WrongState {
        id: String,
        state: &'static str,
        wanted: &'static str,
    },
    /// Execution asked for another action, resource or parameters than were approved.
    #[error("the approval request {0} was for another action, resource or parameters")]
    Mismatch(String),
    /// The settings change turns approval off and came with no approved request.
    #[error("turning approval off needs an approved request ({PUT_SETTINGS_ACTION})")]
    ApprovalRequired,
    #[error("{0} approval requests are pending already; approve, reject or let some expire")]
    TooManyPending(usize),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The account's approval requests.
pub struct Approvals {
    store: Arc<Store>,
    clock: Arc<dyn Clock>,
    requests: Mutex<BTreeMap<String, ApprovalRequest>>,
    settings: Mutex<ApprovalSettings>,
    /// Serialises changes, so that a request is approved, rejected or executed once.
    gate: tokio::sync::Mutex<()>,
    /// The store's view when the gate was taken: a request another daemon sharing the store
    /// changed since (approved, executed there) is not written over.
    gate_view: std::sync::atomic::AtomicI64,
    pending_limit: usize,
}

/// The requests and the settings, as the store holds them.
type Loaded = (BTreeMap<String, ApprovalRequest>, ApprovalSettings);

fn record_name(id: &str) -> Vec<u8> {
    let mut name = REQUEST_PREFIX.to_vec();
    name.extend_from_slice(id.as_bytes());
    name
}

impl Approvals {
    pub fn open(store: Arc<Store>, clock: Arc<dyn Clock>) -> Result<Self, StoreError> {
        let (requests, settings) = Self::load(&store)?;
        Ok(Self {
            store,
            clock,
            requests: Mutex::new(requests),
            settings: Mutex::new(settings),
            gate: tokio::sync::Mutex::new(()),
            gate_view: std::sync::atomic::AtomicI64::new(0),
            pending_limit: DEFAULT_PENDING_LIMIT,
        })
    }

    /// Takes in a change another daemon sharing the store made: the requests and settings are
    /// read again when one of them changed.
    pub fn heard(&self, changed: crate::store::Changed<'_>) {
        let relevant = match changed {
            crate::store::Changed::All(_) => true,
            crate::store::Changed::Records(names, _) => names
                .iter()
                .any(|n| n.starts_with(REQUEST_PREFIX) || n == SETTINGS_RECORD),
        };
        if !relevant {
            return;
        }
        match Self::load(&self.store) {
            Ok((requests, settings)) => {
                if let Ok(mut slot) = self.requests.lock() {
                    *slot = requests;
                }
                if let Ok(mut slot) = self.settings.lock() {
                    *slot = settings;
                }
            }
            Err(error) => tracing::error!(%error, "cannot read approval requests again"),
        }
    }

    fn load(store: &Store) -> Result<Loaded, StoreError> {
        let mut requests = BTreeMap::new();
        for (name, value) in store.scan(REQUEST_PREFIX, None, usize::MAX)? {
            let request: ApprovalRequest = serde_json::from_slice(&value).map_err(|e| {
                StoreError(format!(
                    "{} is damaged: {e}",
                    String::from_utf8_lossy(&name)
                ))
            })?;
            requests.insert(request.id.clone(), request);
        }
        let settings = match store.get(SETTINGS_RECORD)? {
            Some(value) => serde_json::from_slice(&value)
                .map_err(|e| StoreError(format!("approval/settings is damaged: {e}")))?,
            None => ApprovalSettings::default(),
        };
        Ok((requests, settings))
    }

    /// At most `limit` pending requests at once (instead of [`DEFAULT_PENDING_LIMIT`]).
    pub fn with_pending_limit(mut self, limit: usize) -> Self {
        self.pending_limit = limit;
        self
    }

    fn requests(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, ApprovalRequest>> {
        match self.requests.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    /// Takes the gate, noting the store's view the change reads at.
    async fn lock_gate(&self) -> tokio::sync::MutexGuard<'_, ()> {
        let gate = self.gate.lock().await;
        self.gate_view
            .store(self.store.view(), std::sync::atomic::Ordering::Release);
        gate
    }

    /// Commits `batch`, unless another daemon sharing the store changed the record `name`
    /// since the gate was taken: a request is approved, rejected or executed once, cluster-wide.
    async fn commit_guarded(
        &self,
        mut batch: WriteBatch,
        name: Vec<u8>,
        present: bool,
    ) -> Result<(), ApprovalError> {
        let view = self.gate_view.load(std::sync::atomic::Ordering::Acquire);
        if present {
            batch.require_present_unchanged(name, view);
        } else {
            batch.require_unchanged(name, view);
        }
        match self.store.try_commit(batch).await {
            Ok(()) => Ok(()),
            Err(crate::store::CommitError::Stale) => Err(ApprovalError::Store(StoreError(
                "the approval request changed on another daemon at the same moment; nothing \
                 was written (look at it again)"
                    .into(),
            ))),
            Err(error) => Err(StoreError::from(error).into()),
        }
    }

    async fn write(&self, request: &ApprovalRequest) -> Result<(), ApprovalError> {
        let value = serde_json::to_vec(request).map_err(|e| StoreError(e.to_string()))?;
        let mut batch = WriteBatch::new();
        batch.put(record_name(&request.id), value);
        let present = self.requests().contains_key(&request.id);
        self.commit_guarded(batch, record_name(&request.id), present)
            .await?;
        self.requests().insert(request.id.clone(), request.clone());
        Ok(())
    }

    fn find(&self, id: &str) -> Result<ApprovalRequest, ApprovalError> {
        self.requests()
            .get(id)
            .cloned()
            .ok_or_else(|| ApprovalError::NotFound(crate::keys::printable_input(id)))
    }

    /// A new pending request, durable before it is answered.
    pub async fn request(
        &self,
        action: &str,
        resource: &str,
        parameters: &str,
        requester: Person,
        window_seconds: i64,
    ) -> Result<ApprovalRequest, ApprovalError> {
        let now = self.clock.now();
        let request = ApprovalRequest {
            id: uuid::Uuid::new_v4().to_string(),
            action: action.to_owned(),
            resource: resource.to_owned(),
            parameters: parameters.to_owned(),
            requester,
            created: now,
            expires: now + window_seconds,
            state: ApprovalState::Pending,
            approved_by: None,
        };
        let _gate = self.lock_gate().await;
        let pending = self
            .requests()
            .values()
            .filter(|r| r.state_at(now) == ApprovalState::Pending)
            .count();
        if pending >= self.pending_limit {
            return Err(ApprovalError::TooManyPending(pending));
        }
        self.write(&request).await?;
        Ok(request)
    }

    /// The request, with its state as of now.
    pub fn get(&self, id: &str) -> Result<ApprovalRequest, ApprovalError> {
        let mut request = self.find(id)?;
        request.state = request.state_at(self.clock.now());
        Ok(request)
    }

    /// Every request, oldest first, with its state as of now.
    pub fn list(&self) -> Vec<ApprovalRequest> {
        let now = self.clock.now();
        let mut all: Vec<ApprovalRequest> = self
            .requests()
            .values()
            .map(|r| ApprovalRequest {
                state: r.state_at(now),
                ..r.clone()
            })
            .collect();
        all.sort_by(|a, b| (a.created, &a.id).cmp(&(b.created, &b.id)));
        all
    }

    /// A pending request, as of now, or why not.
    fn pending(&self, id: &str, now: UnixSeconds) -> Result<ApprovalRequest, ApprovalError> {
        let request = self.find(id)?;
        match request.state_at(now) {
            ApprovalState::Pending => Ok(request),
            other => Err(ApprovalError::WrongState {
                id: request.id,
                state: other.name(),
                wanted: "Pending",
            }),
        }
    }

    /// Approves a pending request by another identity than its requester's.
    pub async fn approve(&self, id: &str, by: Person) -> Result<ApprovalRequest, ApprovalError> {
        let _gate = self.lock_gate().await;
        let now = self.clock.now();
        let mut request = self.pending(id, now)?;
        if by.identity == request.requester.identity {
            return Err(ApprovalError::SameIdentity(request.id));
        }
        request.approved_by = Some(by.clone());
        request.state = ApprovalState::Approved { by, at: now };
        self.write(&request).await?;
        Ok(request)
    }

    /// Rejects a pending request (its requester may withdraw it so).
    pub async fn reject(&self, id: &str, by: Person) -> Result<ApprovalRequest, ApprovalError> {
        let _gate = self.lock_gate().await;
        let now = self.clock.now();
        let mut request = self.pending(id, now)?;
        request.state = ApprovalState::Rejected { by, at: now };
        self.write(&request).await?;
        Ok(request)
    }

    /// What needs approval now.
    pub fn settings(&self) -> ApprovalSettings {
        match self.settings.lock() {
            Ok(g) => g.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    /// Replaces the settings. A change that turns approval off for some action needs
    /// `approval`: an approved request of [`PUT_SETTINGS_ACTION`] for exactly these settings,
    /// executed by this call.
    pub async fn put_settings(
        &self,
        new: ApprovalSettings,
        approval: Option<(&str, Person)>,
    ) -> Result<(), ApprovalError> {
        if self.settings().narrowed_by(&new) {
            let Some((id, by)) = approval else {
                return Err(ApprovalError::ApprovalRequired);
            };
            self.take_for_execution(id, PUT_SETTINGS_ACTION, "*", &new.canonical(), by)
                .await?;
        }
        let _gate = self.lock_gate().await;
        let mut batch = WriteBatch::new();
        batch.put(SETTINGS_RECORD.to_vec(), new.canonical().into_bytes());
        self.commit_guarded(batch, SETTINGS_RECORD.to_vec(), false)
            .await?;
        match self.settings.lock() {
            Ok(mut g) => *g = new,
            Err(p) => *p.into_inner() = new,
        }
        Ok(())
    }

    /// Marks an approved request executed, once, for exactly the action, resource and
    /// parameters approved; the caller then runs the action. Stored before it returns, so a
    /// crash after it cannot let the approval be used again.
    pub async fn take_for_execution(
        &self,
        id: &str,
        action: &str,
        resource: &str,
        parameters: &str,
        by: Person,
    ) -> Result<ApprovalRequest, ApprovalError> {
        let _gate = self.lock_gate().await;
        let now = self.clock.now();
        let mut request = self.find(id)?;
        match request.state_at(now) {
            ApprovalState::Approved { .. } => {}
            other => {
                return Err(ApprovalError::WrongState {
                    id: request.id,
                    state: other.name(),
                    wanted: "Approved",
                });
            }
        }
        if request.action != action
            || request.resource != resource
            || request.parameters != parameters
        {
            return Err(ApprovalError::Mismatch(request.id));
        }
        request.state = ApprovalState::Executed { by, at: now };
        self.write(&request).await?;
        Ok(request)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::OffsetClock;
    use crate::seal::{self, KdfParams};
    use crate::secret::SecretString;
    use crate::store::{Barrier, SledBackend};

    const KEY: &str = "arn:keyhaven:kms:local:111122223333:key/k";
    const PARAMETERS: &str = r#"{"KeyId":"k","PendingWindowInDays":7}"#;

    fn person(principal: &str, identity: &str) -> Person {
        Person {
            principal_arn: format!("arn:keyhaven:{principal}"),
            identity: format!("arn:keyhaven:{identity}"),
        }
    }

    fn alice() -> Person {
        person(
            "iam::111122223333:user/alice",
            "iam::111122223333:user/alice",
        )
    }

    fn bob() -> Person {
        person("iam::111122223333:user/bob", "iam::111122223333:user/bob")
    }

    fn ops_session(session: &str) -> Person {
        person(
            &format!("sts::111122223333:assumed-role/ops/{session}"),
            "iam::111122223333:role/ops",
        )
    }

    fn master_key(dir: &std::path::Path) -> crate::seal::MasterKey {
        let passphrase = SecretString::new("unit test passphrase".into());
        seal::prepare(dir, &passphrase, KdfParams::MINIMUM, "111122223333", 0)
            .unwrap()
            .1
    }

    fn open(
        dir: &std::path::Path,
        master: &crate::seal::MasterKey,
        clock: &OffsetClock,
    ) -> (Arc<Store>, Approvals) {
        let backend = SledBackend::open(&dir.join("store")).unwrap();
        let barrier = Barrier::new(master.record_integrity_key());
        let store = Arc::new(Store::open(Arc::new(backend), barrier).unwrap());
        let approvals = Approvals::open(store.clone(), Arc::new(clock.clone())).unwrap();
        (store, approvals)
    }

    #[tokio::test]
    async fn another_person_approves_and_the_action_runs_once() {
        let dir = tempfile::tempdir().unwrap();
        let clock = OffsetClock::new();
        let master = master_key(dir.path());
        let (_store, approvals) = open(dir.path(), &master, &clock);
        let request = approvals
            .request(
                "kms:ScheduleKeyDeletion",
                KEY,
                PARAMETERS,
                alice(),
                DEFAULT_WINDOW_SECONDS,
            )
            .await
            .unwrap();
        // Not approved yet: nothing to execute.
        assert!(matches!(
            approvals
                .take_for_execution(
                    &request.id,
                    "kms:ScheduleKeyDeletion",
                    KEY,
                    PARAMETERS,
                    alice()
                )
                .await,
            Err(ApprovalError::WrongState {
                state: "Pending",
                ..
            })
        ));
        // The requester cannot approve.
        assert!(matches!(
            approvals.approve(&request.id, alice()).await,
            Err(ApprovalError::SameIdentity(_))
        ));
        assert_eq!(
            approvals.get(&request.id).unwrap().state,
            ApprovalState::Pending
        );
        let approved = approvals.approve(&request.id, bob()).await.unwrap();
        assert!(matches!(approved.state, ApprovalState::Approved { ref by, .. } if *by == bob()));
        // Other parameters, action or resource: not what was approved, and still approved.
        for (action, resource, parameters) in [
            (
                "kms:ScheduleKeyDeletion",
                KEY,
                r#"{"KeyId":"k","PendingWindowInDays":30}"#,
            ),
            ("kms:DisableKey", KEY, PARAMETERS),
            (
                "kms:ScheduleKeyDeletion",
                "arn:keyhaven:kms:local:111122223333:key/other",
                PARAMETERS,
            ),
        ] {
            assert!(matches!(
                approvals
                    .take_for_execution(&request.id, action, resource, parameters, alice())
                    .await,
                Err(ApprovalError::Mismatch(_))
            ));
        }
        approvals
            .take_for_execution(
                &request.id,
                "kms:ScheduleKeyDeletion",
                KEY,
                PARAMETERS,
                alice(),
            )
            .await
            .unwrap();
        assert!(matches!(
            approvals
                .take_for_execution(
                    &request.id,
                    "kms:ScheduleKeyDeletion",
                    KEY,
                    PARAMETERS,
                    bob()
                )
                .await,
            Err(ApprovalError::WrongState {
                state: "Executed",
                ..
            })
        ));
    }

    #[tokio::test]
    async fn a_session_of_the_requesters_role_cannot_approve() {
        let dir = tempfile::tempdir().unwrap();
        let clock = OffsetClock::new();
        let master = master_key(dir.path());
        let (_store, approvals) = open(dir.path(), &master, &clock);
        let request = approvals
            .request("kms:PutKeyPolicy", KEY, "{}", ops_session("one"), 3_600)
            .await
            .unwrap();
        assert!(matches!(
            approvals.approve(&request.id, ops_session("two")).await,
            Err(ApprovalError::SameIdentity(_))
        ));
        approvals.approve(&request.id, alice()).await.unwrap();
    }

    #[tokio::test]
    async fn pending_requests_are_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let clock = OffsetClock::new();
        let master = master_key(dir.path());
        let (_store, approvals) = open(dir.path(), &master, &clock);
        let approvals = approvals.with_pending_limit(2);
        let first = approvals
            .request("kms:DisableKey", KEY, "{}", alice(), 3_600)
            .await
            .unwrap();
        approvals
            .request("kms:DisableKey", KEY, "{}", alice(), 3_600)
            .await
            .unwrap();
        assert!(matches!(
            approvals
                .request("kms:DisableKey", KEY, "{}", alice(), 3_600)
                .await,
            Err(ApprovalError::TooManyPending(2))
        ));
        assert_eq!(approvals.list().len(), 2);
        // A decided request no longer counts; nor does an expired one.
        approvals.reject(&first.id, bob()).await.unwrap();
        approvals
            .request("kms:DisableKey", KEY, "{}", alice(), 3_600)
            .await
            .unwrap();
        clock.advance(3_600);
        approvals
            .request("kms:DisableKey", KEY, "{}", alice(), 3_600)
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn requests_expire_are_rejected_and_survive_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let clock = OffsetClock::new();
        let master = master_key(dir.path());
        let (store, approvals) = open(dir.path(), &master, &clock);
        let expiring = approvals
            .request("kms:DisableKey", KEY, "{}", alice(), 3_600)
            .await
            .unwrap();
        let rejected = approvals
            .request("kms:DisableKey", KEY, "{}", alice(), 3_600)
            .await
            .unwrap();
        let approved = approvals
            .request("kms:DisableKey", KEY, "{}", alice(), 3_600)
            .await
            .unwrap();
        approvals.reject(&rejected.id, bob()).await.unwrap();
        approvals.approve(&approved.id, bob()).await.unwrap();
        assert!(matches!(
            approvals.approve(&rejected.id, bob()).await,
            Err(ApprovalError::WrongState {
                state: "Rejected",
                ..
            })
        ));
        drop(approvals);
        drop(store);
        clock.advance(3_600);
        let (_store, approvals) = open(dir.path(), &master, &clock);
        let states: Vec<&str> = approvals.list().iter().map(|r| r.state.name()).collect();
        assert_eq!(states.len(), 3);
        assert_eq!(
            approvals.get(&expiring.id).unwrap().state,
            ApprovalState::Expired
        );
        assert_eq!(
            approvals.get(&rejected.id).unwrap().state.name(),
            "Rejected"
        );
        // An approval not used within the window is expired too.
        assert!(matches!(
            approvals
                .take_for_execution(&approved.id, "kms:DisableKey", KEY, "{}", alice())
                .await,
            Err(ApprovalError::WrongState {
                state: "Expired",
                ..
            })
        ));
        assert!(matches!(
            approvals.approve(&expiring.id, bob()).await,
            Err(ApprovalError::WrongState {
                state: "Expired",
                ..
            })
        ));
        assert!(matches!(
            approvals.get("no-such-request"),
            Err(ApprovalError::NotFound(_))
        ));
    }

    #[tokio::test]
    async fn turning_approval_off_needs_an_approved_request() {
        let dir = tempfile::tempdir().unwrap();
        let clock = OffsetClock::new();
        let master = master_key(dir.path());
        let (store, approvals) = open(dir.path(), &master, &clock);
        let on = ApprovalSettings {
            account: DEFAULT_ACTIONS.iter().map(|a| a.to_string()).collect(),
            keys: BTreeMap::from([(KEY.to_owned(), BTreeSet::from(["kms:Encrypt".to_owned()]))]),
        };
        // Turning it on needs nothing.
        approvals.put_settings(on.clone(), None).await.unwrap();
        assert!(
            approvals
                .settings()
                .requires("kms:ScheduleKeyDeletion", KEY)
        );
        assert!(approvals.settings().requires("kms:Encrypt", KEY));
        assert!(!approvals.settings().requires(
            "kms:Encrypt",
            "arn:keyhaven:kms:local:111122223333:key/other"
        ));
        // Off, or narrower: refused without an approval, and nothing changes.
        let mut off_for_key = on.clone();
        off_for_key.keys.clear();
        for narrower in [ApprovalSettings::default(), off_for_key.clone()] {
            assert!(matches!(
                approvals.put_settings(narrower, None).await,
                Err(ApprovalError::ApprovalRequired)
            ));
            assert_eq!(approvals.settings(), on);
        }
        // An approval for other settings does not do.
        let request = approvals
            .request(
                PUT_SETTINGS_ACTION,
                "*",
                &off_for_key.canonical(),
                alice(),
                3_600,
            )
            .await
            .unwrap();
        approvals.approve(&request.id, bob()).await.unwrap();
        assert!(matches!(
            approvals
                .put_settings(ApprovalSettings::default(), Some((&request.id, alice())))
                .await,
            Err(ApprovalError::Mismatch(_))
        ));
        approvals
            .put_settings(off_for_key.clone(), Some((&request.id, alice())))
            .await
            .unwrap();
        assert!(!approvals.settings().requires("kms:Encrypt", KEY));
        // Durable.
        drop(approvals);
        drop(store);
        let (_store, approvals) = open(dir.path(), &master, &clock);
        assert_eq!(approvals.settings(), off_for_key);
    }
}
