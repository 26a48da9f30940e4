//! The accounts one daemon serves (the management account and the members of its
//! organisation, see `crate::org`), and which of them a call is for.
//!
//! Every account has its own services and so its own operations ([`AccountOperations`]): a
//! call is run by the caller's account, except a cryptographic or read call naming another
//! account's key (by ARN, or by a ciphertext made under it), which is run by the key's account
//! with the caller's own identity policies and guardrails (see [`Authorizer`]), as AWS KMS
//! runs cross-account calls. Calls that manage a key (enable, tag, alias, delete, policy) are
//! never cross-account, as in AWS.

use super::authorize::{AccountDirectory, Authorizer, CallContext};
use super::operations::{IamOperations, KmsOperations, StsOperations};
use super::status::ApiError;
use crate::iam::IamService;
use crate::keys::KeyService;
use crate::org::{MemberAccount, Organisation};
use crate::proto::v1;
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, OnceLock, RwLock};
use std::time::Duration;
use tonic::Code;

/// One account's operations, for every door.
pub struct AccountOperations {
    pub id: String,
    pub kms: KmsOperations,
    pub iam: IamOperations,
    pub sts: StsOperations,
    pub authorizer: Arc<Authorizer>,
    keys: Arc<KeyService>,
    identities: Arc<IamService>,
}

impl AccountOperations {
    /// The account's identity service.
    pub fn identities(&self) -> &Arc<IamService> {
        &self.identities
    }

    pub fn new(kms: KmsOperations, authorizer: Arc<Authorizer>) -> Self {
        let keys = kms.keys().clone();
        let identities = authorizer.iam().clone();
        Self {
            id: identities.account_id().to_owned(),
            iam: IamOperations::new(identities.clone(), keys.clone(), authorizer.clone()),
            sts: StsOperations::new(identities.clone(), keys.clone(), authorizer.clone()),
            kms,
            authorizer,
            keys,
            identities,
        }
    }
}

/// A new member account's root access key, shown once.
pub struct NewMember {
    pub account: MemberAccount,
    pub root: crate::auth::NewAccessKey,
}

pub type Opening<'a> = Pin<Box<dyn Future<Output = Result<NewMember, String>> + Send + 'a>>;

/// Makes a member account's services (the daemon's start-up knows how): its root access key
/// stored and its operations added to [`Accounts`] before the account is listed.
pub trait AccountOpener: Send + Sync {
    fn open_new<'a>(&'a self, account: MemberAccount) -> Opening<'a>;
    /// Waits, up to `limit`, until no member account another daemon made is being opened
    /// here, or `found` holds (looked at as each opening ends); whether any was being opened.
    fn openings_done<'a>(
        &'a self,
        limit: Duration,
        found: &'a (dyn Fn() -> bool + Send + Sync),
    ) -> Pin<Box<dyn Future<Output = bool> + Send + 'a>>;
}

/// The longest a call waits for the accounts being opened when what it names (its
/// credentials, a key's account) may be among them.
pub const OPENING_WAIT: Duration = Duration::from_secs(5);

/// Where a call's account is found.
pub enum Route<'a> {
    /// The caller's own account.
    Caller,
    /// The account of the key a key id, alias or ARN names.
    Key(&'a str),
    /// The account of the key named, or else of the key the ciphertext was made under.
    KeyOrBlob(&'a str, &'a [u8]),
}

/// What a request says of the account it is for.
pub trait Routed {
    fn route(&self) -> Route<'_> {
        Route::Caller
    }
}

macro_rules! routed {
    (caller: $($caller:ident),* ; key: $($key:ident),* ; blob: $($blob:ident),* $(;)?) => {
        $(impl Routed for v1::$caller {})*
        $(impl Routed for v1::$key {
            fn route(&self) -> Route<'_> {
                Route::Key(&self.key_id)
            }
        })*
        $(impl Routed for v1::$blob {
            fn route(&self) -> Route<'_> {
                Route::KeyOrBlob(&self.key_id, &self.ciphertext_blob)
            }
        })*
    };
}

routed! {
    caller: CreateKeyRequest, ListKeysRequest, UpdateKeyDescriptionRequest, EnableKeyRequest,
        DisableKeyRequest, ScheduleKeyDeletionRequest, CancelKeyDeletionRequest,
        CreateAliasRequest, UpdateAliasRequest, DeleteAliasRequest, ListAliasesRequest,
        TagResourceRequest, UntagResourceRequest, ListResourceTagsRequest,
        RotateKeyOnDemandRequest, EnableKeyRotationRequest, DisableKeyRotationRequest,
        ListKeyRotationsRequest, GetKeyPolicyRequest, PutKeyPolicyRequest, GenerateRandomRequest,
        ListRetirableGrantsRequest, GetParametersForImportRequest, ImportKeyMaterialRequest,
        DeleteImportedKeyMaterialRequest, ReEncryptRequest, EncryptBatchRequest,
        DecryptBatchRequest, GenerateDataKeyBatchRequest,
        ListOrphanedKeyMaterialRequest, DestroyOrphanedKeyMaterialRequest,
        ListApprovalRequestsRequest, GetApprovalRequestRequest, ApproveRequestRequest,
        RejectRequestRequest, GetApprovalSettingsRequest, PutApprovalSettingsRequest;
    key: DescribeKeyRequest, GetKeyRotationStatusRequest, EncryptRequest,
        GenerateDataKeyRequest, GenerateDataKeyWithoutPlaintextRequest, GenerateMacRequest,
        VerifyMacRequest, SignRequest, VerifyRequest, GetPublicKeyRequest,
        DeriveSharedSecretRequest, GenerateDataKeyPairRequest,
        GenerateDataKeyPairWithoutPlaintextRequest, CreateGrantRequest, ListGrantsRequest,
        RevokeGrantRequest;
    blob: DecryptRequest;
}

impl Routed for v1::RetireGrantRequest {
    fn route(&self) -> Route<'_> {
        Route::Key(&self.key_id)
    }
}

/// Every account the daemon serves.
pub struct Accounts {
    management: String,
    org: Option<Arc<Organisation>>,
    by_id: RwLock<HashMap<String, Arc<AccountOperations>>>,
    opener: OnceLock<Arc<dyn AccountOpener>>,
    /// Failed sign-ins of every account, per user and per source.
    sign_in_failures: crate::iam::passwords::SignInFailures,
}

fn no_account(account: &str) -> ApiError {
    ApiError::new(
        Code::Unavailable,
        "KMSInternalException",
        format!("account {account} is not served by this daemon yet; try again"),
    )
}

impl Accounts {
    /// The accounts of a daemon whose management account is `management`, with its
    /// organisation (none: the management account alone).
    pub fn new(management: &str, org: Option<Arc<Organisation>>) -> Arc<Self> {
        Arc::new(Self {
            management: management.to_owned(),
            org,
            by_id: RwLock::new(HashMap::new()),
            opener: OnceLock::new(),
            sign_in_failures: Default::default(),
        })
    }

    pub fn sign_in_failures(&self) -> &crate::iam::passwords::SignInFailures {
        &self.sign_in_failures
    }

    pub fn set_opener(&self, opener: Arc<dyn AccountOpener>) {
        let _ = self.opener.set(opener);
    }

    pub fn opener(&self) -> Option<&Arc<dyn AccountOpener>> {
        self.opener.get()
    }

    pub fn organisation(&self) -> Option<&Arc<Organisation>> {
        self.org.as_ref()
    }

    pub fn management_id(&self) -> &str {
        &self.management
    }

    pub fn add(&self, operations: Arc<AccountOperations>) {
        if let Ok(mut accounts) = self.by_id.write() {
            accounts.insert(operations.id.clone(), operations);
        }
    }

    /// The operations of `account`, if the daemon serves it.
    pub fn account(&self, account: &str) -> Option<Arc<AccountOperations>> {
        self.get(account)
    }

    /// The id of the account `id_or_name` names: an account id, or the name a member account
    /// was created with (as an alias names an AWS account at sign-in). Anything else is
    /// returned as it is.
    pub fn named(&self, id_or_name: &str) -> String {
        if self.serves(id_or_name) {
            return id_or_name.to_owned();
        }
        self.org
            .as_ref()
            .and_then(|org| org.accounts().into_iter().find(|a| a.name == id_or_name))
            .map(|a| a.id)
            .unwrap_or_else(|| id_or_name.to_owned())
    }

    pub fn serves(&self, account: &str) -> bool {
        self.get(account).is_some()
    }

    fn get(&self, account: &str) -> Option<Arc<AccountOperations>> {
        self.by_id.read().ok()?.get(account).cloned()
    }

    /// The management account's operations.
    pub fn management(&self) -> Result<Arc<AccountOperations>, ApiError> {
        self.get(&self.management)
            .ok_or_else(|| no_account(&self.management))
    }

    /// The caller's account's operations.
    pub fn of(&self, call: &CallContext) -> Result<Arc<AccountOperations>, ApiError> {
        let account = &call.caller.principal.account_id;
        self.get(account).ok_or_else(|| no_account(account))
    }

    /// The operations a KMS request is run by (see the module's introduction).
    pub async fn for_request(
        &self,
        call: &CallContext,
        request: &impl Routed,
    ) -> Result<Arc<AccountOperations>, ApiError> {
        let own = self.of(call)?;
        let other = match request.route() {
            Route::Caller => None,
            Route::Key(key) => self.named_holder(call, &own, key).await?,
            Route::KeyOrBlob(key, _) if !key.is_empty() => {
                self.named_holder(call, &own, key).await?
            }
            Route::KeyOrBlob(_, blob) => self.holder_of(call, &own, blob).await,
        };
        Ok(other.unwrap_or(own))
    }

    /// The account of the key an ARN names, when it is another than `own` and served here. An
    /// account not served is looked for again once this daemon has caught up with a store
    /// other daemons write, and one the organisation lists is waited for while it is being
    /// opened: a key ARN in an account another daemon has just made is judged by that account
    /// here too, not in the caller's. One the organisation lists and this daemon still does
    /// not serve is refused as not served yet; one it does not list is the caller's to judge.
    async fn named_holder(
        &self,
        call: &CallContext,
        own: &AccountOperations,
        key: &str,
    ) -> Result<Option<Arc<AccountOperations>>, ApiError> {
        let Some(account) = key.strip_prefix("arn:").and_then(|_| key.split(':').nth(4)) else {
            return Ok(None);
        };
        if account == own.id {
            return Ok(None);
        }
        if let Some(served) = self.get(account) {
            return Ok(Some(served));
        }
        // An account id is twelve digits: anything else could never have been made.
        let Some(org) = self
            .org
            .as_ref()
            .filter(|_| account.len() == 12 && account.bytes().all(|b| b.is_ascii_digit()))
        else {
            return Ok(None);
        };
        let served = || self.get(account).is_some();
        // Caught up, the daemon has heard of the account's record, and so announced its
        // opening, if it was made.
        own.keys.hear_of(call.asked, |_| served()).await;
        if org.account(account).is_none() {
            return Ok(None);
        }
        if let Some(opener) = self.opener() {
            opener.openings_done(OPENING_WAIT, &served).await;
        }
        self.get(account)
            .map(Some)
            .ok_or_else(|| no_account(account))
    }

    /// The account holding the key a ciphertext was made under, when it is not `own`. With
    /// other accounts than `own` served, a key no account holds here is looked for again once
    /// this daemon has caught up with a store other daemons write: a ciphertext another daemon
    /// has just made under another account's key goes to that account here too.
    async fn holder_of(
        &self,
        call: &CallContext,
        own: &AccountOperations,
        blob: &[u8],
    ) -> Option<Arc<AccountOperations>> {
        let key = crate::crypto::CiphertextBlob::parse(blob).ok()?.key_id;
        if own.keys.holds_key(key) {
            return None;
        }
        let holder = || {
            let accounts = self.by_id.read().ok()?;
            accounts.values().find(|a| a.keys.holds_key(key)).cloned()
        };
        if self.by_id.read().is_ok_and(|accounts| accounts.len() > 1) {
            own.keys.hear_of(call.asked, |_| holder().is_some()).await;
        }
        holder().filter(|holder| holder.id != own.id)
    }
}

impl AccountDirectory for Accounts {
    fn iam(&self, account: &str) -> Option<Arc<IamService>> {
        self.get(account).map(|a| a.identities.clone())
    }

    fn guardrails(&self, account: &str) -> crate::org::Guardrails {
        match &self.org {
            Some(org) => org.guardrails_for(account),
            None => crate::org::no_guardrails(),
        }
    }
}
