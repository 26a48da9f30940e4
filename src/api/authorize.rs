//! Authorisation of every gRPC operation, through [`crate::policy::evaluate`].
//!
//! Each handler names its action (`kms:Encrypt`, `iam:CreateUser`, …) and resource; this
//! module builds the request context (principal, source address, time, encryption context),
//! finds the resource policy (the key policy, a role's trust policy) and the caller's identity
//! policies, and answers allowed or `AccessDeniedException`.
//!
//! A caller who may not use a key never learns whether it exists: a key that does not exist is
//! judged as if it existed with the default key policy. A caller that policy would allow the
//! action is told `NotFoundException` (`InvalidCiphertextException` for a ciphertext's key),
//! as a key they could use would answer; everyone else gets the same `AccessDeniedException`
//! as for a key they may not use, naming the resource as they gave it.
//!
//! A key named by an alias is judged on the key the alias points at; a missing alias points at
//! no key we could name, so it is judged on the key ARN pattern `…:key/*` (a key in general)
//! rather than on the alias ARN. Judging the two on different resources would let a policy
//! written for `alias/app-*` tell which aliases exist.
//!
//! A key's grants are the third source of an Allow: the grants of the key whose grantee is
//! the caller (and still the principal the grant was made for) are handed to the evaluator as
//! data, and a call a grant allowed names the grant in its audit record.
//!
//! Aliases themselves (CreateAlias, UpdateAlias, DeleteAlias) are no resource-policy resources:
//! the alias ARN is decided by the caller's identity policies alone ([`Authorizer::alias`]).

use super::auth_layer::AuditSlot;
use crate::auth::{Caller, CredentialKind, Principal, PrincipalKind};
use crate::clock::{UnixSeconds, rfc3339};
use crate::iam::{EntityType, IamService};
use crate::keys::{KeyError, KeyRecord, KeyReference, KeyService, printable_input};
use crate::policy::{
    DeferredKeys, GrantAsk, GrantRule, GuardrailLevel, Identity, NamedPolicy, PolicyDecision,
    Request as PolicyRequest, RequestContext, evaluate_within,
};
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;

/// Who is calling and from where.
#[derive(Debug, Clone)]
pub struct CallContext {
    pub caller: Caller,
    pub source_ip: Option<IpAddr>,
    pub secure_transport: bool,
    /// Where the keys this call touches are noted for its audit record.
    pub audit: AuditSlot,
    /// The approved request this call executes (`x-keyhaven-approval-id`), if it names one.
    pub approval_id: Option<String>,
    /// When the call came (its request read): on a store other daemons write, all its
    /// catch-ups (it named something this daemon had not heard of) share one quorum read
    /// ([`KeyService::hear_of`]).
    pub asked: std::time::Instant,
}

/// The facts behind every request's condition keys.
struct CallKeys {
    principal: Arc<Principal>,
    /// For the principal's unique id (`aws:userid`), looked up only when a policy asks.
    iam: Arc<IamService>,
    now: UnixSeconds,
    source_ip: Option<IpAddr>,
    secure_transport: bool,
    credential_kind: CredentialKind,
}

impl DeferredKeys for CallKeys {
    /// The keys as AWS sets them. `aws:PrincipalArn` is the role's ARN for a role session;
    /// `aws:userid` is the user's unique id (`AIDA…`), `<role id>:<session name>` for a role
    /// session and the account id for the root. An entity deleted while its credentials are
    /// in use falls back to its name in `aws:userid`.
    fn fill(&self, context: &mut RequestContext) {
        let principal = &self.principal;
        let partition = self.iam.partition();
        context
            .set("aws:PrincipalArn", principal.principal_arn(partition))
            .set("aws:PrincipalAccount", principal.account_id.clone())
            .set("kms:CallerAccount", principal.account_id.clone())
            .set("aws:CurrentTime", rfc3339(self.now))
            .set("aws:EpochTime", self.now.to_string())
            .set("aws:SecureTransport", self.secure_transport.to_string());
        if let Some(ip) = self.source_ip {
            context.set("aws:SourceIp", ip.to_string());
        }
        // Absent for long-term credentials, as in AWS; `false` for temporary ones without MFA.
        if let CredentialKind::Temporary {
            mfa_authenticated, ..
        } = self.credential_kind
        {
            context.set(
                "aws:MultiFactorAuthPresent",
                mfa_authenticated.is_some().to_string(),
            );
            if let Some(at) = mfa_authenticated {
                context.set(
                    "aws:MultiFactorAuthAge",
                    self.now.saturating_sub(at).max(0).to_string(),
                );
            }
        }
        let id = |kind, name: &str| {
            self.iam
                .unique_id(kind, name)
                .unwrap_or_else(|| name.to_owned())
        };
        match &principal.kind {
            PrincipalKind::User { name } => {
                context
                    .set("aws:username", name.clone())
                    .set("aws:userid", id(EntityType::User, name))
                    .set("aws:PrincipalType", "User");
            }
            PrincipalKind::AssumedRole { role, session } => {
                context
                    .set(
                        "aws:userid",
                        format!("{}:{session}", id(EntityType::Role, role)),
                    )
                    .set("aws:PrincipalType", "AssumedRole");
            }
            PrincipalKind::Root => {
                context
                    .set("aws:userid", principal.account_id.clone())
                    .set("aws:PrincipalType", "Account");
            }
        }
    }
}

/// What an authoriser learns of the other accounts of the organisation: a caller's own
/// identity policies live in its own account, and the guardrails on its path cap it.
pub trait AccountDirectory: Send + Sync {
    /// The identity service of `account`, if the daemon serves it.
    fn iam(&self, account: &str) -> Option<Arc<IamService>>;
    /// The guardrail levels on the path of `account` (none for the management account).
    fn guardrails(&self, account: &str) -> crate::org::Guardrails;
}

pub struct Authorizer {
    iam: Arc<IamService>,
    keys: Arc<KeyService>,
    /// The organisation's accounts (which hold this authoriser: weak); none on a daemon
    /// without one.
    accounts: Option<std::sync::Weak<dyn AccountDirectory>>,
}

impl Authorizer {
    pub fn new(iam: Arc<IamService>, keys: Arc<KeyService>) -> Self {
        Self {
            iam,
            keys,
            accounts: None,
        }
    }

    /// The authoriser of one account of an organisation.
    pub fn in_organisation(mut self, accounts: &Arc<dyn AccountDirectory>) -> Self {
        self.accounts = Some(Arc::downgrade(accounts));
        self
    }

    /// The identity service of the caller's account: this one's, or another's of the
    /// organisation (cross-account calls); none for an account the daemon does not serve.
    pub fn iam_of(&self, account: &str) -> Option<Arc<IamService>> {
        if account == self.iam.account_id() {
            return Some(self.iam.clone());
        }
        self.accounts.as_ref()?.upgrade()?.iam(account)
    }

    /// The guardrails on the path of `account`. An organisation no longer there (the daemon
    /// is shutting down) lifts none: a level without policies refuses everything.
    fn guardrails_of(&self, account: &str) -> crate::org::Guardrails {
        match &self.accounts {
            None => crate::org::no_guardrails(),
            Some(accounts) => match accounts.upgrade() {
                Some(accounts) => accounts.guardrails(account),
                None => Arc::new(vec![GuardrailLevel {
                    name: "organisation root".into(),
                    policies: Vec::new(),
                }]),
            },
        }
    }

    pub fn iam(&self) -> &Arc<IamService> {
        &self.iam
    }

    /// The condition keys every request has, spelt out only if a condition asks for one.
    pub fn base_context(&self, call: &CallContext, now: UnixSeconds) -> RequestContext {
        RequestContext::with_deferred(Arc::new(CallKeys {
            principal: call.caller.principal.clone(),
            iam: self
                .iam_of(&call.caller.principal.account_id)
                .unwrap_or_else(|| self.iam.clone()),
            now,
            source_ip: call.source_ip,
            secure_transport: call.secure_transport,
            credential_kind: call.caller.credential_kind,
        }))
    }

    /// Adds an encryption context's condition keys. Pairs whose keys differ only in case are
    /// one condition key with several candidate values (see `policy::condition`).
    pub fn add_encryption_context(context: &mut RequestContext, pairs: &BTreeMap<String, String>) {
        for (key, value) in pairs {
            context.add_spelling(&format!("kms:EncryptionContext:{key}"), value.clone());
        }
        if !pairs.is_empty() {
            context.set_all("kms:EncryptionContextKeys", pairs.keys().cloned().collect());
        }
    }

    /// The decision, for the simulator and for [`Authorizer::require`].
    pub fn decide(
        &self,
        call: &CallContext,
        action: &str,
        resource: &str,
        resource_policy: Option<&NamedPolicy>,
        context: &RequestContext,
    ) -> PolicyDecision {
        self.decide_with_grants(
            call,
            action,
            resource,
            resource_policy,
            context,
            &[],
            &GrantAsk::Plain,
        )
    }

    /// The grants of a key that may speak for `principal` now: those naming it (or the role
    /// of its session) whose grantee still is the principal the grant was made for (a user or
    /// role deleted and made again is another).
    pub fn grant_rules(&self, key: uuid::Uuid, principal: &Principal) -> Vec<GrantRule> {
        let principals = principal.policy_arns(self.iam.partition());
        self.keys
            .grants_for(key, &principals)
            .iter()
            .filter(|g| match &g.grantee_unique_id {
                None => true,
                Some(id) => grantee_entity(&g.grantee)
                    .and_then(|(kind, name)| {
                        let account = g.grantee.split(':').nth(4)?;
                        self.iam_of(account)?.unique_id(kind, name)
                    })
                    .is_some_and(|now| &now == id),
            })
            .map(|g| g.rule())
            .collect()
    }

    /// [`Authorizer::decide`] with a key's grants (see [`Authorizer::grant_rules`]).
    #[allow(clippy::too_many_arguments)]
    pub fn decide_with_grants(
        &self,
        call: &CallContext,
        action: &str,
        resource: &str,
        resource_policy: Option<&NamedPolicy>,
        context: &RequestContext,
        grants: &[GrantRule],
        ask: &GrantAsk<'_>,
    ) -> PolicyDecision {
        let principal = &call.caller.principal;
        let principals = principal.policy_arns(self.iam.partition());
        let root = format!(
            "arn:{}:iam::{}:root",
            self.iam.partition(),
            principal.account_id
        );
        let request = PolicyRequest {
            principals: &principals,
            account_root: &root,
            action,
            resource,
            context,
        };
        let guardrails = self.guardrails_of(&principal.account_id);
        // A caller of an account the daemon does not serve has no policies of its own.
        let policies = match self.iam_of(&principal.account_id) {
            Some(iam) => iam.identity_policies(principal),
            None => Some(Vec::new().into()),
        };
        match policies {
            None => evaluate_within(
                &request,
                &guardrails,
                resource_policy,
                &Identity::Root,
                grants,
                ask,
            ),
            Some(policies) => evaluate_within(
                &request,
                &guardrails,
                resource_policy,
                &Identity::Policies(&policies),
                grants,
                ask,
            ),
        }
    }

    fn denied(call: &CallContext, action: &str, resource: &str) -> KeyError {
        KeyError::AccessDenied(format!(
            "{} is not authorized to perform {action} on resource {}",
            call.caller.principal.arn,
            printable_input(resource)
        ))
    }

    /// Allowed, or `AccessDeniedException` naming the action and resource.
    pub fn require(
        &self,
        call: &CallContext,
        action: &str,
        resource: &str,
        resource_policy: Option<&NamedPolicy>,
        context: &RequestContext,
    ) -> Result<(), KeyError> {
        if self
            .decide(call, action, resource, resource_policy, context)
            .allowed()
        {
            Ok(())
        } else {
            tracing::info!(principal = %call.caller.principal.arn, action, resource = %printable_input(resource), "access denied");
            Err(Self::denied(call, action, resource))
        }
    }

    /// Whether the caller would be allowed `action` on a key with the default key policy (and
    /// so may learn that the key it named does not exist).
    fn allowed_by_default_policy(
        &self,
        call: &CallContext,
        action: &str,
        resource: &str,
        context: &RequestContext,
    ) -> bool {
        let Some(policy) = self.keys.default_policy() else {
            return false;
        };
        let policy = NamedPolicy {
            name: "key policy".into(),
            policy,
        };
        self.decide(call, action, resource, Some(&policy), context)
            .allowed()
    }

    fn arn_prefix(&self) -> String {
        format!(
            "arn:{}:kms:{}:{}:",
            self.keys.config().partition,
            self.keys.config().region,
            self.keys.config().account_id
        )
    }

    /// The resource a key reference names, as the caller gave it, in ARN form.
    fn requested_resource(&self, key: &str) -> String {
        match KeyReference::parse(key, &self.arn_prefix()) {
            _ if key.starts_with("arn:") => key.to_owned(),
            Ok(KeyReference::Id(id)) => self.keys.key_arn(id),
            Ok(KeyReference::Alias(alias)) => self.keys.alias_arn(&alias),
            Err(_) => key.to_owned(),
        }
    }

    /// The resource a missing key is judged on: its key ARN, or for an alias (which would
    /// name some key) the pattern of every key ARN, as an existing alias is judged on a key.
    fn missing_key_resource(&self, key: &str) -> String {
        match KeyReference::parse(key, &self.arn_prefix()) {
            Ok(KeyReference::Alias(_)) => format!("{}key/*", self.arn_prefix()),
            _ => self.requested_resource(key),
        }
    }

    /// Authorises `action` on the alias `alias` (its name, `alias/…`) by the caller's identity
    /// policies alone: aliases have no policy of their own. Whether the alias exists plays no
    /// part, so the answer says nothing about it.
    pub fn alias(
        &self,
        call: &CallContext,
        action: &str,
        alias: &str,
        context: &RequestContext,
    ) -> Result<(), KeyError> {
        let arn = self.keys.alias_arn(alias);
        call.audit.add_key(arn.clone());
        self.require(call, action, &arn, None, context)
    }

    /// Authorises `action` on the key `key` names (by its policy, the caller's identity
    /// policies and the key's grants, asked `ask`); returns the key. On a store other daemons
    /// write, a key or alias this daemon has not heard of is looked for again once its view
    /// has caught up ([`KeyService::hear_of_key`]).
    pub async fn key(
        &self,
        call: &CallContext,
        action: &str,
        key: &str,
        include_deleted: bool,
        context: &RequestContext,
        ask: &GrantAsk<'_>,
    ) -> Result<Arc<KeyRecord>, KeyError> {
        self.keys.hear_of_key(call.asked, key).await;
        self.known_key(call, action, key, include_deleted, context, ask)
    }

    /// [`Self::key`] on what this daemon has heard of now (the caller has waited to hear of
    /// the key where it needs to).
    pub fn known_key(
        &self,
        call: &CallContext,
        action: &str,
        key: &str,
        include_deleted: bool,
        context: &RequestContext,
        ask: &GrantAsk<'_>,
    ) -> Result<Arc<KeyRecord>, KeyError> {
        match self.keys.lookup(key, include_deleted) {
            Ok(record) => {
                let policy = self.keys.key_policy(record.id);
                let arn = self.keys.key_arn(record.id);
                call.audit.add_key(arn.clone());
                // What the key is, as AWS KMS tells policies about an existing key.
                let mut context = context.clone();
                context
                    .set("kms:KeySpec", record.spec.as_str())
                    .set("kms:KeyUsage", record.usage.as_str())
                    .set("kms:KeyOrigin", record.origin.clone());
                let grants = self.grant_rules(record.id, &call.caller.principal);
                let decision = self.decide_with_grants(
                    call,
                    action,
                    &arn,
                    Some(&policy),
                    &context,
                    &grants,
                    ask,
                );
                if decision.allowed() {
                    if let Some(grant) = decision.deciding_grant {
                        call.audit.add_grant(grant);
                    }
                    Ok(record)
                } else {
                    tracing::info!(principal = %call.caller.principal.arn, action, key = %record.id, "access denied");
                    Err(Self::denied(call, action, &self.requested_resource(key)))
                }
            }
            Err(KeyError::NotFound(message)) => {
                let resource = self.requested_resource(key);
                call.audit.add_key(resource.clone());
                let judged = self.missing_key_resource(key);
                if self.allowed_by_default_policy(call, action, &judged, context) {
                    Err(KeyError::NotFound(message))
                } else {
                    Err(Self::denied(call, action, &resource))
                }
            }
            Err(other) => Err(other),
        }
    }

    /// Authorises `action` on the key a ciphertext names. An unknown key answers
    /// `InvalidCiphertextException` to callers the default key policy would allow, as any
    /// undecryptable blob does, and `AccessDeniedException` to the others, exactly as a key
    /// they may not use.
    pub fn ciphertext_key(
        &self,
        call: &CallContext,
        action: &str,
        key_id: uuid::Uuid,
        context: &RequestContext,
        ask: &GrantAsk<'_>,
    ) -> Result<(), KeyError> {
        let id = key_id.hyphenated().to_string();
        match self.known_key(call, action, &id, false, context, ask) {
            Err(KeyError::NotFound(_)) => Err(KeyError::InvalidCiphertext),
            other => other.map(|_| ()),
        }
    }

    /// The lockout safety check: would the caller still be allowed `kms:PutKeyPolicy` under
    /// `policy`?
    pub fn keeps_control(
        &self,
        call: &CallContext,
        key_arn: &str,
        policy: &NamedPolicy,
        context: &RequestContext,
    ) -> bool {
        self.decide(call, "kms:PutKeyPolicy", key_arn, Some(policy), context)
            .allowed()
    }
}

/// The IAM entity a grantee ARN names in this service's account form (`…:user/NAME`,
/// `…:role/NAME`, the last path segment being the name), if it names one.
pub fn grantee_entity(arn: &str) -> Option<(EntityType, &str)> {
    let resource = arn.splitn(6, ':').nth(5)?;
    if arn.split(':').nth(2) != Some("iam") {
        return None;
    }
    let (kind, rest) = resource.split_once('/')?;
    let name = rest.rsplit('/').next()?;
    match kind {
        "user" => Some((EntityType::User, name)),
        "role" => Some((EntityType::Role, name)),
        _ => None,
    }
}
