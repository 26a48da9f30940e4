//! The credentials of every account a daemon serves: the management account's, and each
//! member account's (see `crate::org`). A request is authenticated by the account whose
//! access key (or certificate binding) it presents; with no member accounts, that is always
//! the management account, and nothing is looked up.

use super::certificate::PeerCertificate;
use super::credentials::CredentialStore;
use super::signature;
use std::collections::HashMap;
use std::sync::{Arc, RwLock};

pub struct CredentialDirectory {
    management: Arc<CredentialStore>,
    members: RwLock<HashMap<String, Arc<CredentialStore>>>,
}

impl CredentialDirectory {
    pub fn new(management: Arc<CredentialStore>) -> Self {
        Self {
            management,
            members: RwLock::new(HashMap::new()),
        }
    }

    pub fn management(&self) -> &Arc<CredentialStore> {
        &self.management
    }

    /// Adds (or replaces) a member account's credentials.
    pub fn add_member(&self, credentials: Arc<CredentialStore>) {
        if let Ok(mut members) = self.members.write() {
            members.insert(credentials.account_id().to_owned(), credentials);
        }
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

    /// The account that binds one of the certificate's identities: the management account
    /// first, then the members; the management account's when none does.
    pub fn for_certificate(&self, certificate: &PeerCertificate) -> Arc<CredentialStore> {
        if self.management.certificates().binds_any(certificate) {
            return self.management.clone();
        }
        self.members
            .read()
            .ok()
            .and_then(|members| {
                members
                    .values()
                    .find(|m| m.certificates().binds_any(certificate))
                    .cloned()
            })
            .unwrap_or_else(|| self.management.clone())
    }
}
