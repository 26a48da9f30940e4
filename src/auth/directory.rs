//! The credentials of every account a daemon serves: the management account's, and each
//! member account's (see `crate::org`). A request is authenticated by the account whose
//! access key (or certificate binding) it presents; with no member accounts, that is always
//! the management account, and nothing is looked up.

use super::AuthError;
use super::certificate::{CertificateIdentity, PeerCertificate};
use super::credentials::CredentialStore;
use super::signature;
use std::collections::HashMap;
use std::sync::{Arc, RwLock};

pub struct CredentialDirectory {
    management: Arc<CredentialStore>,
    members: RwLock<HashMap<String, Arc<CredentialStore>>>,
    /// How many member accounts another daemon made are being opened here now: their
    /// credentials are not in the directory yet.
    opening: tokio::sync::watch::Sender<usize>,
}

impl CredentialDirectory {
    pub fn new(management: Arc<CredentialStore>) -> Arc<Self> {
        let directory = Arc::new(Self {
            management,
            members: RwLock::new(HashMap::new()),
            opening: tokio::sync::watch::Sender::new(0),
        });
        directory.guard(&directory.management);
        directory
    }

    /// Refuses, in `credentials`, certificate bindings another account holds.
    fn guard(self: &Arc<Self>, credentials: &CredentialStore) {
        let directory = Arc::downgrade(self);
        let account = credentials.account_id().to_owned();
        credentials
            .certificates()
            .watch_elsewhere(Arc::new(move |identity| {
                directory
                    .upgrade()
                    .is_some_and(|d| d.bound_elsewhere(&account, identity))
            }));
    }

    fn bound_elsewhere(&self, account: &str, identity: &CertificateIdentity) -> bool {
        let others = self
            .members
            .read()
            .map(|m| m.values().cloned().collect::<Vec<_>>())
            .unwrap_or_default();
        std::iter::once(self.management.clone())
            .chain(others)
            .filter(|c| c.account_id() != account)
            .any(|c| c.certificates().binds(identity))
    }

    pub fn management(&self) -> &Arc<CredentialStore> {
        &self.management
    }

    /// Adds (or replaces) a member account's credentials.
    pub fn add_member(self: &Arc<Self>, credentials: Arc<CredentialStore>) {
        self.guard(&credentials);
        if let Ok(mut members) = self.members.write() {
            members.insert(credentials.account_id().to_owned(), credentials);
        }
    }

    /// A member account another daemon made is being opened: its credentials come with
    /// [`Self::add_member`]; [`Self::opened`] when its opening has ended, either way.
    pub fn opening(&self) {
        self.opening.send_modify(|count| *count += 1);
    }

    /// An opening [`Self::opening`] announced has ended.
    pub fn opened(&self) {
        self.opening
            .send_modify(|count| *count = count.saturating_sub(1));
    }

    /// Waits, up to `limit`, until no member account is being opened: a call presenting
    /// credentials of an account another daemon has just made (heard of by catching up) is
    /// then judged with them here. Whether any was being opened (worth looking again).
    pub async fn openings_done(&self, limit: std::time::Duration) -> bool {
        self.openings_done_or(limit, || false).await
    }

    /// As [`Self::openings_done`], ending also as soon as `found` holds (looked at whenever an
    /// opening ends).
    pub async fn openings_done_or(
        &self,
        limit: std::time::Duration,
        found: impl Fn() -> bool,
    ) -> bool {
        let mut count = self.opening.subscribe();
        if *count.borrow_and_update() == 0 {
            return false;
        }
        let _ = tokio::time::timeout(limit, count.wait_for(|count| *count == 0 || found())).await;
        true
    }

    /// The credentials of `account`, if the daemon serves it.
    pub fn account(&self, account: &str) -> Option<Arc<CredentialStore>> {
        if account == self.management.account_id() {
            return Some(self.management.clone());
        }
        self.members.read().ok()?.get(account).cloned()
    }

    /// The account whose access key an `authorization` header names: a member's when one
    /// holds it, else the management account's (which refuses a key nobody holds).
    pub fn for_authorization(&self, authorization: Option<&str>) -> Arc<CredentialStore> {
        let Ok(members) = self.members.read() else {
            return self.management.clone();
        };
        if members.is_empty() {
            return self.management.clone();
        }
        authorization
            .and_then(signature::credential_access_key_id)
            .and_then(|id| members.values().find(|m| m.holds_access_key(id)).cloned())
            .unwrap_or_else(|| self.management.clone())
    }

    /// The account holding `access_key_id`: a member's when one holds it, else the
    /// management account's (which refuses a key nobody holds).
    pub fn for_access_key(&self, access_key_id: &str) -> Arc<CredentialStore> {
        let Ok(members) = self.members.read() else {
            return self.management.clone();
        };
        members
            .values()
            .find(|m| m.holds_access_key(access_key_id))
            .cloned()
            .unwrap_or_else(|| self.management.clone())
    }

    /// The account that binds one of the certificate's identities; the management
    /// account's when none does. A certificate two accounts bind (which binding refuses, but
    /// two daemons of a cluster could each have let through) is refused: which account the
    /// CA meant is unknowable.
    pub fn for_certificate(
        &self,
        certificate: &PeerCertificate,
    ) -> Result<Arc<CredentialStore>, AuthError> {
        let members = match self.members.read() {
            Ok(members) if members.is_empty() => return Ok(self.management.clone()),
            Ok(members) => members.values().cloned().collect::<Vec<_>>(),
            Err(_) => Vec::new(),
        };
        let mut binding = std::iter::once(self.management.clone())
            .chain(members)
            .filter(|c| c.certificates().binds_any(certificate));
        match (binding.next(), binding.next()) {
            (Some(one), None) => Ok(one),
            (None, _) => Ok(self.management.clone()),
            (Some(_), Some(_)) => Err(AuthError::UnknownCertificate(
                certificate
                    .presented()
                    .map(ToString::to_string)
                    .unwrap_or_else(|| "(no name)".to_owned()),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::seal::{self, KdfParams};
    use crate::secret::SecretString;
    use crate::store::Store;
    use std::time::Duration;

    /// A call waits for the member accounts being opened, and only while there are some: not
    /// at all when none is, until the last has ended, and no longer than its limit.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_miss_waits_for_accounts_being_opened_and_only_for_them() {
        let dir = tempfile::tempdir().unwrap();
        let passphrase = SecretString::new("directory test".into());
        let (_, master) = seal::init(dir.path(), &passphrase, KdfParams::MINIMUM, "1", 0).unwrap();
        let master = Arc::new(master);
        let backend = crate::store::SledBackend::open(&dir.path().join("store")).unwrap();
        let barrier = crate::store::Barrier::new(master.record_integrity_key());
        let store = Arc::new(Store::open(Arc::new(backend), barrier).unwrap());
        let management = CredentialStore::open(
            master,
            store,
            Arc::new(crate::clock::OffsetClock::new()),
            "aws",
            "local",
            "111122223333",
        )
        .unwrap();
        let directory = CredentialDirectory::new(Arc::new(management));
        assert!(!directory.openings_done(Duration::from_secs(5)).await);

        directory.opening();
        directory.opening();
        let ended = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let ending = {
            let (directory, ended) = (directory.clone(), ended.clone());
            tokio::spawn(async move {
                for _ in 0..2 {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    ended.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    directory.opened();
                }
            })
        };
        assert!(directory.openings_done(Duration::from_secs(30)).await);
        assert_eq!(
            ended.load(std::sync::atomic::Ordering::SeqCst),
            2,
            "waited for both"
        );
        ending.await.unwrap();
        assert!(!directory.openings_done(Duration::from_secs(30)).await);

        // One that never ends holds a call no longer than its limit.
        directory.opening();
        let bounded = tokio::time::timeout(
            Duration::from_secs(30),
            directory.openings_done(Duration::from_millis(100)),
        )
        .await;
        assert_eq!(bounded, Ok(true));

        // A call waiting for one account ends when that account's opening ends, not when
        // every other one has (one still never ends).
        directory.opening();
        let found = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let opening_it = {
            let (directory, found) = (directory.clone(), found.clone());
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(50)).await;
                found.store(true, std::sync::atomic::Ordering::SeqCst);
                directory.opened();
            })
        };
        let waited = tokio::time::timeout(
            Duration::from_secs(10),
            directory.openings_done_or(Duration::from_secs(30), || {
                found.load(std::sync::atomic::Ordering::SeqCst)
            }),
        )
        .await;
        assert_eq!(waited, Ok(true), "ended with the account found");
        opening_it.await.unwrap();
    }
}
