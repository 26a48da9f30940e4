//! Every account's services: the management account's (the data directory's own) and each
//! member account's of the organisation, made the same way over the account's part of the
//! store (`crate::org::member_scope`), with the account's own keystores (a sealed keyring of
//! its own; on a PKCS#11 token, objects labelled with its id).

use super::{
    DaemonConfig, ServerError, report_reconciliation, scheduled_task_auditor, scheduler_lead,
    spawn_sweeper,
};
use crate::api::accounts::{AccountOpener, AccountOperations, Accounts, NewMember, Opening};
use crate::api::{Authorizer, operations::KmsOperations};
use crate::approval::Approvals;
use crate::audit::AuditLog;
use crate::auth::{CredentialDirectory, CredentialStore};
use crate::background::Background;
use crate::clock::{Clock, UnixSeconds};
use crate::iam::IamService;
use crate::keys::{KeyService, KeyServiceConfig, spawn_scheduler};
use crate::keystore::KeyStore;
use crate::keystore::deadline::DeadlineKeyStore;
use crate::keystore::pkcs11::Pkcs11KeyStore;
use crate::keystore::sealed::SealedKeyStore;
use crate::org::{MEMBERS_PREFIX, MemberAccount, Organisation, lists_account, member_scope};
use crate::seal::MasterKey;
use crate::store::{Changed, Listener, Store};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// What every account's services are made with.
pub(super) struct AccountSetup {
    pub master: Arc<MasterKey>,
    pub clock: Arc<dyn Clock>,
    pub config: DaemonConfig,
    /// Fetches OpenID Connect issuers' keys for every account's providers.
    pub jwks_fetcher: crate::iam::jwks_fetch::JwksFetcher,
}

/// One account's services.
pub(super) struct AccountServices {
    pub credentials: Arc<CredentialStore>,
    pub keys: Arc<KeyService>,
    pub iam: Arc<IamService>,
    pub approvals: Arc<Approvals>,
    pub operations: Arc<AccountOperations>,
}

impl AccountServices {
    /// Tells the services what another daemon changed (names within the account's part).
    fn heard(&self, changed: Changed<'_>) {
        self.keys.heard(changed);
        self.iam.heard(changed);
        self.credentials.heard(changed);
        self.approvals.heard(changed);
    }
}

/// Connects the PKCS#11 keystores of the configuration for `account` (its objects are
/// labelled with its id), each behind the call deadline when one is set.
async fn pkcs11_keystores(
    config: &DaemonConfig,
    account: &str,
) -> Result<Vec<Arc<dyn KeyStore>>, ServerError> {
    let mut keystores: Vec<Arc<dyn KeyStore>> = Vec::new();
    for settings in config.pkcs11.clone() {
        let name = format!("pkcs11:{}", settings.name);
        let owner = account.to_owned();
        let connecting =
            tokio::task::spawn_blocking(move || Pkcs11KeyStore::connect(settings, &owner));
        // A device that does not answer must not hang the start for ever either.
        let connected = if config.pkcs11_call_timeout.is_zero() {
            connecting.await
        } else {
            tokio::time::timeout(config.pkcs11_call_timeout, connecting)
                .await
                .map_err(|_| {
                    ServerError::Start(format!(
                        "keystore {name}: the PKCS#11 token did not answer within {} ms \
                         (pkcs11_call_timeout_ms)",
                        config.pkcs11_call_timeout.as_millis()
                    ))
                })?
        };
        let keystore = connected
            .map_err(|e| ServerError::Start(e.to_string()))?
            .map_err(|e| ServerError::Start(format!("keystore {name}: {e}")))?;
        tracing::info!(keystore = %name, %account, "PKCS#11 token connected");
        if config.pkcs11_call_timeout.is_zero() {
            keystores.push(Arc::new(keystore));
        } else {
            keystores.push(Arc::new(DeadlineKeyStore::new(
                Arc::new(keystore),
                config.pkcs11_call_timeout,
            )));
        }
    }
    Ok(keystores)
}

/// Runs `open` (which reads the store, a round trip a read on a shared one) on a thread that
/// may block, so that the parts of an opening that read different records go side by side.
async fn blocking<T: Send + 'static>(
    open: impl FnOnce() -> Result<T, String> + Send + 'static,
) -> Result<T, ServerError> {
    tokio::task::spawn_blocking(open)
        .await
        .map_err(|e| ServerError::Start(e.to_string()))?
        .map_err(ServerError::Start)
}

/// Opens the services of `account` over `store` (the account's part of the store), its
/// sealed keyring kept in `keyring_dir` on a store of its own. `serving_since`: when this
/// run of the daemon began serving (see [`CredentialStore::open_from`]), for an account
/// opened after that. Its identities, its keys and its approval requests read different
/// records, and are read side by side.
pub(super) async fn open_account(
    setup: &AccountSetup,
    account: &str,
    store: Arc<Store>,
    keyring_dir: &Path,
    accounts: &Arc<Accounts>,
    serving_since: Option<UnixSeconds>,
) -> Result<AccountServices, ServerError> {
    let clock = setup.clock.clone();
    let approvals = {
        let store = store.clone();
        blocking(move || {
            Approvals::open(store, clock).map_err(|e| format!("loading approval requests: {e}"))
        })
    };
    // Every part runs to its end before an error is answered (none is left going on
    // unwatched); the error answered is the first of identities, keys, approvals. The
    // identities are polled last: their first read blocks the task, and the other parts are
    // under way by then.
    let (approvals, keys, identities) = tokio::join!(
        approvals,
        open_keys(setup, account, store.clone(), keyring_dir),
        open_identities(setup, account, store, serving_since),
    );
    let (credentials, iam) = identities?;
    let (keys, approvals) = (keys?, Arc::new(approvals?));
    keys.check_material_in_background(account);
    let directory: Arc<dyn crate::api::authorize::AccountDirectory> = accounts.clone();
    let authorizer =
        Arc::new(Authorizer::new(iam.clone(), keys.clone()).in_organisation(&directory));
    let kms =
        KmsOperations::new(keys.clone(), authorizer.clone()).with_approvals(approvals.clone());
    let operations = Arc::new(AccountOperations::new(kms, authorizer));
    Ok(AccountServices {
        credentials,
        keys,
        iam,
        approvals,
        operations,
    })
}

/// An account's credentials, then its identities (which the credentials are bound to).
async fn open_identities(
    setup: &AccountSetup,
    account: &str,
    store: Arc<Store>,
    serving_since: Option<UnixSeconds>,
) -> Result<(Arc<CredentialStore>, Arc<IamService>), ServerError> {
    let config = &setup.config;
    crate::auth::wait_past_accepted(&store, setup.clock.as_ref())
        .await
        .map_err(|e| ServerError::Start(e.to_string()))?;
    let (master, clock, owner) = (
        setup.master.clone(),
        setup.clock.clone(),
        account.to_owned(),
    );
    let (partition, region) = (config.partition.clone(), config.region.clone());
    let accepted_hosts = config.accepted_hosts.clone();
    let since = serving_since.unwrap_or_else(|| setup.clock.now());
    let credentials = {
        let store = store.clone();
        blocking(move || {
            CredentialStore::open_from(master, store, clock, &partition, &region, &owner, since)
                .map(|credentials| credentials.with_accepted_hosts(accepted_hosts))
                .map_err(|e| e.to_string())
        })
        .await?
    };
    let credentials = Arc::new(credentials);
    let (clock, owner) = (setup.clock.clone(), account.to_owned());
    let (partition, quotas) = (config.partition.clone(), config.iam_quotas);
    let bound = credentials.clone();
    let iam = blocking(move || {
        IamService::open(&partition, &owner, clock, store, bound, quotas)
            .map_err(|e| format!("loading identities of {owner}: {e:?}"))
    })
    .await?;
    let iam = Arc::new(iam);
    iam.oidc().fetch_with(setup.jwks_fetcher.clone());
    Ok((credentials, iam))
}

/// An account's keystores, then its keys (their records, reconciled with the keystores).
async fn open_keys(
    setup: &AccountSetup,
    account: &str,
    store: Arc<Store>,
    keyring_dir: &Path,
) -> Result<Arc<KeyService>, ServerError> {
    let config = &setup.config;
    let (master, dir, cache) = (
        setup.master.clone(),
        keyring_dir.to_path_buf(),
        config.cipher_cache,
    );
    let sealed = {
        let store = store.clone();
        blocking(move || {
            SealedKeyStore::open(master, store, &dir)
                .map(|sealed| sealed.with_cache_limit(cache))
                .map_err(|e| e.to_string())
        })
        .await?
    };
    let mut keystores: Vec<Arc<dyn KeyStore>> = vec![Arc::new(sealed)];
    keystores.extend(pkcs11_keystores(config, account).await?);
    let mut key_config = KeyServiceConfig::new(account.to_owned());
    key_config.partition = config.partition.clone();
    key_config.region = config.region.clone();
    key_config.key_quota = config.key_quota;
    key_config.key_cache = config.key_cache;
    key_config.alias_quota = config.alias_quota;
    key_config.grants_per_key = config.grants_per_key;
    key_config.grant_bytes = config.grant_bytes;
    key_config.on_demand_rotation_quota = config.on_demand_rotation_quota;
    key_config.default_keystore = config.keystore.clone();
    key_config.default_rotation_period_days = config.rotation_period_days;
    key_config.nonce_limit = config.nonce_limit;
    key_config.nonce_reservation_block = config.nonce_reservation_block;
    let (clock, owner) = (setup.clock.clone(), account.to_owned());
    blocking(move || {
        let keys = KeyService::open(key_config, clock, store, keystores)
            .map_err(|e| format!("loading keys of {owner}: {e:?}"))?;
        let reconciling = std::time::Instant::now();
        let reconciled = keys
            .reconcile_keystores()
            .map_err(|e| format!("generation journal: {e:?}"))?;
        tracing::info!(account = %owner, reconcile_ms = reconciling.elapsed().as_millis() as u64,
            "keystores reconciled");
        report_reconciliation(reconciled);
        Ok(Arc::new(keys))
    })
    .await
}

/// The member accounts' services: opened at start-up, when an account is made, and when
/// another daemon of the cluster made one.
pub(super) struct Members {
    pub setup: Arc<AccountSetup>,
    /// The management account's services (kept here for as long as the daemon runs: the
    /// store's listener holds them weakly).
    pub management: Arc<AccountServices>,
    /// The whole store (members' parts are scoped from it).
    pub store: Arc<Store>,
    pub accounts: Arc<Accounts>,
    pub org: Arc<Organisation>,
    pub credentials: Arc<CredentialDirectory>,
    pub audit: Arc<AuditLog>,
    pub daemon_id: Option<String>,
    pub opened: Mutex<Opened>,
    /// Accounts being opened now (heard changes start no second opening of one).
    pub starting: Mutex<std::collections::HashSet<String>>,
    pub tasks: Mutex<Vec<Background>>,
    /// Serialises openings (start-up, a new account, a heard one).
    pub opening: tokio::sync::Mutex<()>,
    /// Set when the daemon stops: no account is opened from then on.
    pub stopping: std::sync::atomic::AtomicBool,
    /// Accounts another daemon made whose opening failed here, waiting to be tried again (one
    /// wait each: a change heard meanwhile starts no other).
    pub retrying: Mutex<std::collections::HashSet<String>>,
}

/// The members' services opened so far (each with its part of the store), and what other
/// daemons changed in the parts of the accounts being opened, heard while their services
/// loaded and told to them once loaded.
#[derive(Default)]
pub(super) struct Opened {
    services: Vec<(Vec<u8>, Arc<AccountServices>)>,
    /// Each with the latest revision heard.
    missed: std::collections::HashMap<Vec<u8>, (Missed, i64)>,
}

/// What another daemon changed in the part of an account being opened.
enum Missed {
    /// These records (names within the part).
    Records(std::collections::BTreeSet<Vec<u8>>),
    /// Anything: the store's history was read again, or too many records changed to keep.
    All,
}

/// How long after a failed opening of an account another daemon made it is tried again
/// first, and at most (the wait doubles each time).
const RETRY_FIRST: std::time::Duration = std::time::Duration::from_secs(1);
const RETRY_MAX: std::time::Duration = std::time::Duration::from_secs(60);

/// The most names kept for an account being opened; past it, it reads everything again once
/// opened.
const MISSED_LIMIT: usize = 65_536;

impl Opened {
    /// Keeps what `changed` names in the parts of the accounts being opened.
    fn keep_missed(&mut self, changed: Changed<'_>) {
        let (Changed::All(revision) | Changed::Records(_, revision)) = changed;
        for (scope, (missed, heard)) in &mut self.missed {
            *heard = (*heard).max(revision);
            let names = match (changed, &mut *missed) {
                (_, Missed::All) => continue,
                (Changed::All(_), _) => {
                    *missed = Missed::All;
                    continue;
                }
                (Changed::Records(names, _), Missed::Records(kept)) => {
                    kept.extend(
                        names
                            .iter()
                            .filter_map(|n| n.strip_prefix(scope.as_slice()))
                            .map(<[u8]>::to_vec),
                    );
                    kept.len()
                }
            };
            if names > MISSED_LIMIT {
                *missed = Missed::All;
            }
        }
    }
}

/// Keeps what other daemons change in an account's part from before its services read the
/// store until they are added to [`Opened`] (see [`Members::start`]); forgets it if the
/// opening ends otherwise.
struct Hearing<'a> {
    opened: &'a Mutex<Opened>,
    scope: Option<Vec<u8>>,
}

impl<'a> Hearing<'a> {
    fn start(opened: &'a Mutex<Opened>, scope: &str) -> Self {
        let scope = scope.as_bytes().to_vec();
        locked(opened)
            .missed
            .insert(scope.clone(), (Missed::Records(Default::default()), 0));
        Hearing {
            opened,
            scope: Some(scope),
        }
    }

    /// Adds the account's services to those told of changes, and answers what they missed
    /// meanwhile (all of it if it was not kept) and the latest revision heard.
    fn opened(mut self, services: &Arc<AccountServices>) -> (Missed, i64) {
        let Some(scope) = self.scope.take() else {
            return (Missed::All, 0);
        };
        let mut opened = locked(self.opened);
        let missed = opened.missed.remove(&scope).unwrap_or((Missed::All, 0));
        opened.services.push((scope, services.clone()));
        missed
    }
}

impl Drop for Hearing<'_> {
    fn drop(&mut self) {
        if let Some(scope) = self.scope.take() {
            locked(self.opened).missed.remove(&scope);
        }
    }
}

/// A member account another daemon made, being opened here: announced to the credential
/// directory while it lasts, and no longer once it has ended, however it ends (opened,
/// failed, or its task dropped or panicked).
struct HeardOpening {
    members: Arc<Members>,
    account: String,
}

impl HeardOpening {
    fn announce(members: Arc<Members>, account: String) -> Self {
        members.credentials.opening();
        HeardOpening { members, account }
    }
}

impl Drop for HeardOpening {
    fn drop(&mut self) {
        locked(&self.members.starting).remove(&self.account);
        self.members.credentials.opened();
    }
}

impl Members {
    fn keyring_dir(&self, account: &str) -> PathBuf {
        self.setup.config.data_dir.join("accounts").join(account)
    }

    /// Opens the services of the member `account` (unless they are open) and starts its
    /// scheduler and credential sweeper.
    pub async fn start(&self, account: &str) -> Result<(), ServerError> {
        let _opening = self.opening.lock().await;
        if self.accounts.serves(account) {
            return Ok(());
        }
        if self.stopped() {
            return Err(ServerError::Start("the daemon is stopping".into()));
        }
        let dir = self.keyring_dir(account);
        make_durable_dir(&dir)?;
        let scope = member_scope(account);
        let store = Arc::new(self.store.scoped(&scope));
        // Other daemons' changes in the account's part are kept from before its services read
        // the store; what they missed is read once they are heard.
        let hearing = Hearing::start(&self.opened, &scope);
        let began = std::time::Instant::now();
        // The management account's credentials were opened when this run began serving.
        let serving_since = Some(self.credentials.management().started());
        let services = Arc::new(
            open_account(
                &self.setup,
                account,
                store,
                &dir,
                &self.accounts,
                serving_since,
            )
            .await?,
        );
        let config = &self.setup.config;
        let auditor = scheduled_task_auditor(
            self.audit.clone(),
            services.keys.clone(),
            self.setup.clock.clone(),
        );
        let scheduler = spawn_scheduler(
            services.keys.clone(),
            config.scheduler_interval,
            auditor,
            scheduler_lead(self.store.clone(), self.daemon_id.clone()),
        );
        let sweeper = spawn_sweeper(
            services.credentials.clone(),
            self.audit.clone(),
            self.setup.clock.clone(),
            config.scheduler_interval,
            false,
        );
        {
            // `stop` marks the daemon stopping before it takes the tasks: those of an account
            // opened meanwhile are either taken by it, or stopped here.
            let mut tasks = locked(&self.tasks);
            if self.stopped() {
                scheduler.ask_to_stop();
                sweeper.ask_to_stop();
            } else {
                tasks.extend([scheduler, sweeper]);
            }
        }
        // Hears other daemons' changes from here on; what they changed while the services
        // loaded, before they could hear it, is read now (the signatures they stored among
        // it), before any call is served for the account.
        let (missed, heard) = hearing.opened(&services);
        if self.store.is_shared() {
            // The listener hears a change before the view moves past it.
            let view = self.store.view().max(heard);
            match missed {
                Missed::All => services.heard(Changed::All(view)),
                Missed::Records(names) if !names.is_empty() => {
                    let names: Vec<Vec<u8>> = names.into_iter().collect();
                    services.heard(Changed::Records(&names, view));
                }
                Missed::Records(_) => {}
            }
        }
        self.credentials.add_member(services.credentials.clone());
        self.accounts.add(services.operations.clone());
        tracing::info!(%account, open_ms = began.elapsed().as_millis() as u64,
            "member account served");
        Ok(())
    }

    /// Tells every member's services what another daemon changed in its part of the store,
    /// and opens the accounts another daemon made.
    pub fn heard(self: &Arc<Self>, changed: Changed<'_>) {
        let opened: Vec<(Vec<u8>, Arc<AccountServices>)> = {
            let mut opened = locked(&self.opened);
            opened.keep_missed(changed);
            opened.services.clone()
        };
        match changed {
            Changed::All(revision) => {
                for (_, services) in &opened {
                    services.heard(Changed::All(revision));
                }
            }
            Changed::Records(names, revision) => {
                for (scope, services) in &opened {
                    let within: Vec<Vec<u8>> = names
                        .iter()
                        .filter_map(|n| n.strip_prefix(scope.as_slice()))
                        .map(<[u8]>::to_vec)
                        .collect();
                    if !within.is_empty() {
                        services.heard(Changed::Records(&within, revision));
                    }
                }
            }
        }
        // The organisation is read again first (by the listener): accounts it lists now and
        // this daemon does not serve were made by another daemon.
        let accounts_changed = match changed {
            Changed::All(_) => true,
            Changed::Records(names, _) => names.iter().any(|n| lists_account(n)),
        };
        if !accounts_changed {
            return;
        }
        for account in self.org.accounts() {
            self.open_heard(account.id, RETRY_FIRST);
        }
    }

    /// Opens a member account another daemon made, unless it is served or being opened. It is
    /// announced while it lasts (before the view moves past the change that listed it: a call
    /// that caught up with the store waits for the account's credentials, see
    /// `CredentialDirectory`). One that fails (the store out of reach meanwhile, a keyring
    /// directory that cannot be made) is tried again after `retry`, doubled each time up to
    /// [`RETRY_MAX`], as long as the organisation lists it and the daemon runs: a daemon does
    /// not refuse an account for good over a failure that has passed.
    fn open_heard(self: &Arc<Self>, account: String, retry: std::time::Duration) {
        if self.stopped() || locked(&self.retrying).contains(&account) {
            return;
        }
        let fresh = locked(&self.starting).insert(account.clone());
        if !fresh || self.accounts.serves(&account) {
            if fresh {
                locked(&self.starting).remove(&account);
            }
            return;
        }
        let opening = HeardOpening::announce(self.clone(), account);
        tokio::spawn(async move {
            let result = opening.members.start(&opening.account).await;
            let (members, account) = (opening.members.clone(), opening.account.clone());
            let Err(error) = result else {
                return;
            };
            if members.stopped() {
                return;
            }
            // Waiting to be tried again before the opening's announcement ends.
            locked(&members.retrying).insert(account.clone());
            drop(opening);
            tracing::error!(%error, %account, retry_ms = retry.as_millis() as u64,
                "cannot serve a member account another daemon made; trying again");
            let members = Arc::downgrade(&members);
            tokio::time::sleep(retry).await;
            if let Some(members) = members.upgrade() {
                locked(&members.retrying).remove(&account);
                if members.org.account(&account).is_some() {
                    members.open_heard(account, (retry * 2).min(RETRY_MAX));
                }
            }
        });
    }

    /// Whether the daemon is stopping.
    fn stopped(&self) -> bool {
        self.stopping.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Stops every member's scheduler and sweeper, and records their keys' last uses.
    pub async fn stop(&self) {
        self.stopping
            .store(true, std::sync::atomic::Ordering::Release);
        let tasks: Vec<Background> = locked(&self.tasks).drain(..).collect();
        // Each stops once its pass in progress, if any, ends.
        for task in &tasks {
            task.ask_to_stop();
        }
        for task in tasks {
            task.stop().await;
        }
        for services in self.opened() {
            services.keys.stop_material_check().await;
            services.keys.record_uses().await;
        }
    }

    /// Keeps every opened member's key index beside the store (see `KeyService::keep_index`).
    pub fn keep_indexes(&self) {
        for services in self.opened() {
            services.keys.keep_index();
        }
    }

    /// The members opened so far.
    fn opened(&self) -> Vec<Arc<AccountServices>> {
        locked(&self.opened)
            .services
            .iter()
            .map(|(_, s)| s.clone())
            .collect()
    }
}

/// The value behind `mutex`, also after a thread panicked holding it: what the members'
/// locks guard stays whole between statements, and a member left out of them would stop
/// hearing changes for good.
fn locked<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Makes `dir` (and its parents) durably: each new directory's parent is synced, so that a
/// keyring written into it is not lost with its directory entry.
fn make_durable_dir(dir: &Path) -> Result<(), ServerError> {
    let failed = |e: std::io::Error| ServerError::Start(format!("{}: {e}", dir.display()));
    if dir.is_dir() {
        return Ok(());
    }
    if let Some(parent) = dir.parent() {
        make_durable_dir(parent)?;
    }
    std::fs::create_dir(dir).map_err(failed)?;
    if let Some(parent) = dir.parent() {
        std::fs::File::open(parent)
            .and_then(|d| d.sync_all())
            .map_err(failed)?;
    }
    Ok(())
}

/// Whether a record name belongs to the management account's part of the store.
fn management_record(name: &[u8]) -> bool {
    !name.starts_with(MEMBERS_PREFIX)
}

/// What a daemon on a shared store hears of other daemons' changes: the organisation's,
/// the management account's services' (its part of the store), then each member's (see
/// [`Members::heard`]). Weak: the store keeps its listener, and the services keep the store.
pub(super) fn listener(members: &Arc<Members>, runtime: tokio::runtime::Handle) -> Listener {
    let (org, management, members) = (
        Arc::downgrade(&members.org),
        Arc::downgrade(&members.management),
        Arc::downgrade(members),
    );
    Arc::new(move |changed| {
        // What members changed goes to their services only.
        let own: Vec<Vec<u8>>;
        let here = match changed {
            Changed::Records(names, revision) if !names.iter().all(|n| management_record(n)) => {
                own = names
                    .iter()
                    .filter(|n| management_record(n))
                    .cloned()
                    .collect();
                Changed::Records(&own, revision)
            }
            unchanged => unchanged,
        };
        if let Some(org) = org.upgrade() {
            org.heard(here);
        }
        if let Some(members) = members.upgrade() {
            let _entered = runtime.enter();
            members.heard(changed);
        }
        if let Some(management) = management.upgrade() {
            management.heard(here);
        }
    })
}

/// Makes new member accounts for the organisation's `CreateAccount`.
pub(super) struct NewAccounts(pub std::sync::Weak<Members>);

impl AccountOpener for NewAccounts {
    fn open_new<'a>(&'a self, account: MemberAccount) -> Opening<'a> {
        Box::pin(async move {
            let members = self
                .0
                .upgrade()
                .ok_or_else(|| "the daemon is shutting down".to_owned())?;
            let setup = &members.setup;
            let (batch, root) = CredentialStore::new_root_access_key(
                &setup.master,
                &setup.config.partition,
                &account.id,
                setup.clock.now(),
            )
            .map_err(|e| e.to_string())?;
            // The root key first, then the services, then the account's record: an account
            // is listed only once it can be signed in to.
            let scoped = members.store.scoped(&member_scope(&account.id));
            scoped.commit(batch).await.map_err(|e| e.to_string())?;
            members
                .start(&account.id)
                .await
                .map_err(|e| e.to_string())?;
            members
                .org
                .add_account(&account)
                .await
                .map_err(|e| e.to_string())?;
            Ok(NewMember { account, root })
        })
    }

    fn openings_done<'a>(
        &'a self,
        limit: std::time::Duration,
        found: &'a (dyn Fn() -> bool + Send + Sync),
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = bool> + Send + 'a>> {
        Box::pin(async move {
            match self.0.upgrade() {
                Some(members) => members.credentials.openings_done_or(limit, found).await,
                None => false,
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kept(opened: &Mutex<Opened>, scope: &str) -> Option<Vec<Vec<u8>>> {
        match &opened.lock().unwrap().missed.get(scope.as_bytes())?.0 {
            Missed::Records(names) => Some(names.iter().cloned().collect()),
            Missed::All => Some(vec![b"*".to_vec()]),
        }
    }

    #[test]
    fn an_account_being_opened_keeps_what_changed_in_its_part_and_nothing_else() {
        let opened = Mutex::new(Opened::default());
        let a = Hearing::start(&opened, "accounts/111111111111/");
        let b = Hearing::start(&opened, "accounts/222222222222/");
        let names = [
            b"accounts/111111111111/key/k1".to_vec(),
            b"accounts/222222222222/auth/seen/s".to_vec(),
            b"org/accounts/111111111111".to_vec(),
            b"accounts/111111111111/key/k1".to_vec(),
        ];
        opened
            .lock()
            .unwrap()
            .keep_missed(Changed::Records(&names, 7));
        assert_eq!(
            kept(&opened, "accounts/111111111111/"),
            Some(vec![b"key/k1".to_vec()])
        );
        assert_eq!(
            kept(&opened, "accounts/222222222222/"),
            Some(vec![b"auth/seen/s".to_vec()])
        );
        assert_eq!(
            opened.lock().unwrap().missed[b"accounts/111111111111/".as_slice()].1,
            7,
            "the latest revision heard"
        );
        // The history read again: everything, for good.
        opened.lock().unwrap().keep_missed(Changed::All(8));
        opened
            .lock()
            .unwrap()
            .keep_missed(Changed::Records(&names, 9));
        assert_eq!(
            kept(&opened, "accounts/111111111111/"),
            Some(vec![b"*".to_vec()])
        );
        // An opening that ends otherwise forgets what it kept.
        drop(a);
        assert_eq!(kept(&opened, "accounts/111111111111/"), None);
        assert!(kept(&opened, "accounts/222222222222/").is_some());
        drop(b);
        assert!(opened.lock().unwrap().missed.is_empty());
    }

    #[test]
    fn too_many_changes_to_keep_read_everything_again() {
        let opened = Mutex::new(Opened::default());
        let _hearing = Hearing::start(&opened, "accounts/111111111111/");
        let names: Vec<Vec<u8>> = (0..=MISSED_LIMIT)
            .map(|n| format!("accounts/111111111111/auth/seen/{n}").into_bytes())
            .collect();
        opened
            .lock()
            .unwrap()
            .keep_missed(Changed::Records(&names[..MISSED_LIMIT], 1));
        assert_eq!(
            kept(&opened, "accounts/111111111111/").map(|k| k.len()),
            Some(MISSED_LIMIT)
        );
        opened
            .lock()
            .unwrap()
            .keep_missed(Changed::Records(&names[MISSED_LIMIT..], 2));
        assert_eq!(
            kept(&opened, "accounts/111111111111/"),
            Some(vec![b"*".to_vec()])
        );
    }
}
