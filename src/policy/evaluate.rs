//! The one authorisation decision (SPEC, "Evaluation"):
//!
//! 1. Every request starts denied (implicit deny).
//! 2. An explicit `Deny` that applies, in the resource policy or any identity policy, wins.
//! 0. Guardrails (service control policies) on the caller's path, when it has any, refuse
//!    what they deny or do not allow at some level ([`guardrails_refuse`]); they never allow.
//! 3. An `Allow` in the resource policy (key policy, role trust policy) for the caller allows;
//!    for a caller from another account than the resource's, only if the caller's identity
//!    policies allow it too (cross-account access needs both accounts' consent, as in AWS).
//! 4. When the resource policy allows the caller's account root for the request, it delegates
//!    to the account: an `Allow` in the caller's identity policies then allows.
//! 5. Requests without a resource policy (`kms:CreateKey`, `iam:*`, …) are decided by the
//!    identity policies alone.
//!
//! 6. Otherwise a grant of the key (see [`super::grants`]) for the caller, its operation and
//!    the request's encryption context allows; the grant is named in the decision.
//!
//! The account root's identity is unrestricted (like AWS's root user), but a key policy that
//! does not allow the root keeps even the root out.

use super::condition::RequestContext;
use super::document::{Effect, Matcher, Policy, PrincipalMatch, Statement};
use super::grants::{GrantAsk, GrantRule};
use super::{variables, wildcard};
use std::sync::Arc;

/// A policy with the name it is reported under (`key policy`, `user/alice/ReadOnly`, …).
#[derive(Debug, Clone)]
pub struct NamedPolicy {
    pub name: String,
    pub policy: Arc<Policy>,
}

/// What is being asked.
#[derive(Debug, Clone)]
pub struct Request<'a> {
    /// The caller's ARN first, then ARNs it also answers to (an assumed-role session answers
    /// to its role's ARN).
    pub principals: &'a [String],
    /// The caller's account root ARN (for delegation through the resource policy).
    pub account_root: &'a str,
    pub action: &'a str,
    pub resource: &'a str,
    pub context: &'a RequestContext,
}

/// Who is asking, as far as their own policies go.
#[derive(Debug, Clone)]
pub enum Identity<'a> {
    /// The account root: its identity allows everything in the account.
    Root,
    /// A user (its own and its groups' policies) or an assumed role (the role's policies).
    Policies(&'a [NamedPolicy]),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Allowed,
    ExplicitDeny,
    ImplicitDeny,
}

impl Decision {
    /// The simulator's words: `allowed`, `explicitDeny`, `implicitDeny`.
    pub fn as_str(self) -> &'static str {
        match self {
            Decision::Allowed => "allowed",
            Decision::ExplicitDeny => "explicitDeny",
            Decision::ImplicitDeny => "implicitDeny",
        }
    }
}

/// The statement that decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MatchedStatement {
    pub policy: String,
    pub sid: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyDecision {
    pub decision: Decision,
    /// `None` for an implicit deny, and for what the root's identity allows by itself.
    pub deciding_statement: Option<MatchedStatement>,
    /// The grant that allowed the request, when no policy did.
    pub deciding_grant: Option<String>,
    /// The guardrail level that refused the request: by a `Deny` of one of its policies (also
    /// named in `deciding_statement`), or because none of its policies allows it.
    pub guardrail: Option<String>,
}

impl PolicyDecision {
    pub fn allowed(&self) -> bool {
        self.decision == Decision::Allowed
    }
}

fn matcher_applies(matcher: &Matcher, value: &str, ignore_case: bool) -> bool {
    match matcher {
        Matcher::Any(patterns) => patterns
            .iter()
            .any(|p| wildcard::matches(p, value, ignore_case)),
        Matcher::None(patterns) => !patterns
            .iter()
            .any(|p| wildcard::matches(p, value, ignore_case)),
    }
}

/// The account in an IAM/STS ARN pattern whose resource is `root`, if that is what it names.
fn account_root(pattern: &str) -> Option<&str> {
    let parts: Vec<&str> = pattern.splitn(6, ':').collect();
    (parts.len() == 6 && parts[2] == "iam" && parts[5] == "root").then_some(parts[4])
}

fn account_of(arn: &str) -> Option<&str> {
    arn.split(':').nth(4)
}

/// Whether the request's resource belongs to another account than the caller's (a resource
/// without an account, such as `*`, belongs to none).
fn cross_account(request: &Request<'_>) -> bool {
    match account_of(request.resource) {
        Some(account) if !account.is_empty() => account_of(request.account_root) != Some(account),
        _ => false,
    }
}

fn principal_applies(principal: &PrincipalMatch, effect: Effect, principals: &[String]) -> bool {
    match principal {
        // `*` is any AWS principal; a web identity is let in only by its provider's name
        // (but a Deny of everyone covers it too).
        PrincipalMatch::Anyone => {
            effect == Effect::Deny
                || principals
                    .iter()
                    .any(|p| !p.starts_with(super::document::FEDERATED_PREFIX))
        }
        PrincipalMatch::Arns(patterns) => patterns.iter().any(|pattern| {
            principals.iter().any(|arn| {
                wildcard::matches(pattern, arn, false)
                    // A Deny naming an account covers everyone in it.
                    || (effect == Effect::Deny
                        && account_root(pattern).is_some_and(|a| Some(a) == account_of(arn)))
            })
        }),
    }
}

/// The statement's `Resource` / `NotResource` against the request's resource, resolving
/// policy variables first where the statement has any. A pattern whose variable cannot be
/// resolved matches nothing, and makes a `NotResource` statement not apply. A variable on a
/// key the request spelt several ways is resolved once per candidate: a `Deny` applies if
/// some resolution matches, an `Allow` only if every one does.
fn resource_applies(statement: &Statement, request: &Request<'_>) -> bool {
    if !statement.variables {
        return matcher_applies(&statement.resource, request.resource, false);
    }
    let patterns = match &statement.resource {
        Matcher::Any(patterns) | Matcher::None(patterns) => patterns,
    };
    variables::Choices::of(patterns.iter().map(String::as_str), request.context).decide(
        statement.effect,
        |resolver| {
            let one = |pattern: &String| {
                if !variables::has_variables(pattern) {
                    return Some(wildcard::matches(pattern, request.resource, false));
                }
                resolver
                    .resolve(pattern)
                    .map(|glyphs| wildcard::matches_resolved(&glyphs, request.resource, false))
            };
            match &statement.resource {
                Matcher::Any(patterns) => patterns.iter().any(|p| one(p) == Some(true)),
                Matcher::None(patterns) => patterns.iter().all(|p| one(p) == Some(false)),
            }
        },
    )
}

fn applies(statement: &Statement, request: &Request<'_>, principals: Option<&[String]>) -> bool {
    matcher_applies(&statement.action, request.action, true)
        && resource_applies(statement, request)
        && match (&statement.principal, principals) {
            (Some(p), Some(principals)) => principal_applies(p, statement.effect, principals),
            (None, None) => true,
            _ => false,
        }
        && statement
            .conditions
            .iter()
            .all(|c| c.holds(request.context, statement.effect))
}

fn first(
    policy: &NamedPolicy,
    effect: Effect,
    request: &Request<'_>,
    principals: Option<&[String]>,
) -> Option<MatchedStatement> {
    policy
        .policy
        .statements
        .iter()
        .find(|s| s.effect == effect && applies(s, request, principals))
        .map(|s| MatchedStatement {
            policy: policy.name.clone(),
            sid: s.sid.clone(),
        })
}

fn decided(decision: Decision, statement: Option<MatchedStatement>) -> PolicyDecision {
    PolicyDecision {
        decision,
        deciding_statement: statement,
        deciding_grant: None,
        guardrail: None,
    }
}

/// The guardrail policies (service control policies) attached at one level of the path from
/// the organisation's root to the caller's account.
#[derive(Debug, Clone)]
pub struct GuardrailLevel {
    /// How the level is reported: `organisation root`, `account 222233334444`.
    pub name: String,
    pub policies: Vec<NamedPolicy>,
}

/// Whether the guardrails on the caller's path let `request` through: `None` when they do,
/// else the refusal. As AWS's service control policies: a `Deny` of any guardrail refuses
/// (explicitly); and every level must have a policy whose `Allow` covers the request, or the
/// request is refused there (implicitly). A path without levels (the management account,
/// a daemon without an organisation) caps nothing.
pub fn guardrails_refuse(
    request: &Request<'_>,
    guardrails: &[GuardrailLevel],
) -> Option<PolicyDecision> {
    for level in guardrails {
        if let Some(statement) = level
            .policies
            .iter()
            .find_map(|p| first(p, Effect::Deny, request, None))
        {
            let mut refused = decided(Decision::ExplicitDeny, Some(statement));
            refused.guardrail = Some(level.name.clone());
            return Some(refused);
        }
    }
    for level in guardrails {
        if !level
            .policies
            .iter()
            .any(|p| first(p, Effect::Allow, request, None).is_some())
        {
            let mut refused = decided(Decision::ImplicitDeny, None);
            refused.guardrail = Some(level.name.clone());
            return Some(refused);
        }
    }
    None
}

/// Decides `request` under an optional resource policy and the caller's identity.
pub fn evaluate(
    request: &Request<'_>,
    resource_policy: Option<&NamedPolicy>,
    identity: &Identity<'_>,
) -> PolicyDecision {
    evaluate_with_grants(request, resource_policy, identity, &[], &GrantAsk::Plain)
}

/// As [`evaluate`], with the grants of the request's resource: one that allows the request
/// allows it when no policy does, and never against an explicit `Deny`.
pub fn evaluate_with_grants(
    request: &Request<'_>,
    resource_policy: Option<&NamedPolicy>,
    identity: &Identity<'_>,
    grants: &[GrantRule],
    ask: &GrantAsk<'_>,
) -> PolicyDecision {
    evaluate_within(request, &[], resource_policy, identity, grants, ask)
}

/// As [`evaluate_with_grants`], within the guardrails on the caller's path (see
/// [`guardrails_refuse`]): they only take away. What they refuse is refused whatever the
/// policies and grants allow, the account root's identity included; what they let through is
/// decided as without them.
pub fn evaluate_within(
    request: &Request<'_>,
    guardrails: &[GuardrailLevel],
    resource_policy: Option<&NamedPolicy>,
    identity: &Identity<'_>,
    grants: &[GrantRule],
    ask: &GrantAsk<'_>,
) -> PolicyDecision {
    if let Some(refused) = guardrails_refuse(request, guardrails) {
        return refused;
    }
    let decision = evaluate_policies(request, resource_policy, identity);
    if decision.decision != Decision::ImplicitDeny {
        return decision;
    }
    // 6. A grant.
    match grants
        .iter()
        .find(|g| g.allows(request.principals, request.action, ask))
    {
        Some(grant) => PolicyDecision {
            decision: Decision::Allowed,
            deciding_statement: None,
            deciding_grant: Some(grant.grant_id.clone()),
            guardrail: None,
        },
        None => decision,
    }
}

fn evaluate_policies(
    request: &Request<'_>,
    resource_policy: Option<&NamedPolicy>,
    identity: &Identity<'_>,
) -> PolicyDecision {
    let identity_policies: &[NamedPolicy] = match identity {
        Identity::Root => &[],
        Identity::Policies(policies) => policies,
    };
    // 2. Explicit deny, anywhere.
    if let Some(statement) = resource_policy
        .and_then(|rp| first(rp, Effect::Deny, request, Some(request.principals)))
        .or_else(|| {
            identity_policies
                .iter()
                .find_map(|p| first(p, Effect::Deny, request, None))
        })
    {
        return decided(Decision::ExplicitDeny, Some(statement));
    }
    let identity_allow = || match identity {
        Identity::Root => Some(None),
        Identity::Policies(policies) => policies
            .iter()
            .find_map(|p| first(p, Effect::Allow, request, None))
            .map(Some),
    };
    match resource_policy {
        Some(rp) => {
            // 3. The resource policy allows the caller itself (from another account, only
            // if the caller's own policies allow it too: both accounts must agree).
            if let Some(statement) = first(rp, Effect::Allow, request, Some(request.principals))
                && (!cross_account(request) || identity_allow().is_some())
            {
                return decided(Decision::Allowed, Some(statement));
            }
            // 4. It allows the account, which delegates to identity policies.
            let root = [request.account_root.to_owned()];
            if let Some(delegation) = first(rp, Effect::Allow, request, Some(&root))
                && let Some(statement) = identity_allow()
            {
                return decided(Decision::Allowed, statement.or(Some(delegation)));
            }
            decided(Decision::ImplicitDeny, None)
        }
        // 5. No resource policy: identity policies alone.
        None => match identity_allow() {
            Some(statement) => decided(Decision::Allowed, statement),
            None => decided(Decision::ImplicitDeny, None),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::document::PolicyKind;

    fn decide(identity_policy: &str, resource: &str, context: &RequestContext) -> Decision {
        let policies = [NamedPolicy {
            name: "user/mallory/p".into(),
            policy: Arc::new(Policy::parse(identity_policy, PolicyKind::Identity).unwrap()),
        }];
        let principals = ["arn:aws:iam::111122223333:user/mallory".to_string()];
        let request = Request {
            principals: &principals,
            account_root: "arn:aws:iam::111122223333:root",
            action: "kms:Encrypt",
            resource,
            context,
        };
        evaluate(&request, None, &Identity::Policies(&policies)).decision
    }

    fn spelt(spellings: &[(&str, &str)]) -> RequestContext {
        let mut context = RequestContext::new();
        for (key, value) in spellings {
            context.add_spelling(&format!("kms:EncryptionContext:{key}"), *value);
        }
        context
    }

    fn grant_decision(
        key_policy: &str,
        identity_policy: &str,
        grants: &[GrantRule],
        action: &str,
        context: &std::collections::BTreeMap<String, String>,
    ) -> PolicyDecision {
        let policies = [NamedPolicy {
            name: "user/bob/p".into(),
            policy: Arc::new(Policy::parse(identity_policy, PolicyKind::Identity).unwrap()),
        }];
        let key_policy = NamedPolicy {
            name: "key policy".into(),
            policy: Arc::new(Policy::parse(key_policy, PolicyKind::Resource).unwrap()),
        };
        let principals = ["arn:aws:iam::111122223333:user/bob".to_string()];
        let empty = RequestContext::new();
        let request = Request {
            principals: &principals,
            account_root: "arn:aws:iam::111122223333:root",
            action,
            resource: "arn:aws:kms:us-east-1:111122223333:key/k",
            context: &empty,
        };
        evaluate_with_grants(
            &request,
            Some(&key_policy),
            &Identity::Policies(&policies),
            grants,
            &GrantAsk::Context(context),
        )
    }

    /// The evaluation table's grant rows: a grant allows its grantee what no policy does; a
    /// policy's Allow is reported before a grant; an explicit Deny in the key policy or an
    /// identity policy overrides the grant; a constraint the request's context does not meet
    /// leaves the grant out.
    #[test]
    fn grants_allow_beside_policies_and_never_against_a_deny() {
        use crate::policy::grants::GrantConstraint;
        let root_only = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow",
            "Principal":{"AWS":"arn:aws:iam::111122223333:root"},"Action":"kms:*","Resource":"*"}]}"#;
        let deny_decrypt = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow",
            "Principal":{"AWS":"arn:aws:iam::111122223333:root"},"Action":"kms:*","Resource":"*"},
            {"Sid":"NoDecrypt","Effect":"Deny","Principal":"*","Action":"kms:Decrypt","Resource":"*"}]}"#;
        let nothing = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"iam:GetUser","Resource":"*"}]}"#;
        let allow_all = r#"{"Version":"2012-10-17","Statement":[{"Sid":"All","Effect":"Allow","Action":"kms:*","Resource":"*"}]}"#;
        let deny_identity = r#"{"Version":"2012-10-17","Statement":[{"Sid":"Stop","Effect":"Deny","Action":"kms:Decrypt","Resource":"*"}]}"#;
        let tenant: std::collections::BTreeMap<String, String> =
            [("Tenant".to_string(), "a".to_string())].into();
        let grant = |constraint| GrantRule {
            grant_id: "g1".into(),
            grantee: "arn:aws:iam::111122223333:user/bob".into(),
            operations: vec!["Decrypt".into()],
            constraint,
        };
        let open = [grant(GrantConstraint::None)];
        let d = grant_decision(root_only, nothing, &open, "kms:Decrypt", &tenant);
        assert_eq!(d.decision, Decision::Allowed);
        assert_eq!(d.deciding_grant.as_deref(), Some("g1"));
        assert_eq!(d.deciding_statement, None);
        // Not an operation of the grant.
        let d = grant_decision(root_only, nothing, &open, "kms:Encrypt", &tenant);
        assert_eq!(
            (d.decision, d.deciding_grant),
            (Decision::ImplicitDeny, None)
        );
        // A policy allows first: no grant is named.
        let d = grant_decision(root_only, allow_all, &open, "kms:Decrypt", &tenant);
        assert_eq!((d.decision, d.deciding_grant), (Decision::Allowed, None));
        // Explicit denies win, in the key policy and in an identity policy.
        let d = grant_decision(deny_decrypt, nothing, &open, "kms:Decrypt", &tenant);
        assert_eq!(d.decision, Decision::ExplicitDeny);
        assert_eq!(d.deciding_grant, None);
        let d = grant_decision(root_only, deny_identity, &open, "kms:Decrypt", &tenant);
        assert_eq!(d.decision, Decision::ExplicitDeny);
        // Constraints.
        let pairs = |v: &str| [("tenant".to_string(), v.to_string())].into();
        let equals = [grant(GrantConstraint::EncryptionContextEquals(pairs("a")))];
        let d = grant_decision(root_only, nothing, &equals, "kms:Decrypt", &tenant);
        assert_eq!(d.decision, Decision::Allowed);
        let other = [grant(GrantConstraint::EncryptionContextEquals(pairs("b")))];
        let d = grant_decision(root_only, nothing, &other, "kms:Decrypt", &tenant);
        assert_eq!(d.decision, Decision::ImplicitDeny);
        let subset = [grant(GrantConstraint::EncryptionContextSubset(pairs("a")))];
        let wider: std::collections::BTreeMap<String, String> = [
            ("TENANT".to_string(), "a".to_string()),
            ("x".to_string(), "y".to_string()),
        ]
        .into();
        let d = grant_decision(root_only, nothing, &subset, "kms:Decrypt", &wider);
        assert_eq!(d.decision, Decision::Allowed);
        let d = grant_decision(root_only, nothing, &equals, "kms:Decrypt", &wider);
        assert_eq!(d.decision, Decision::ImplicitDeny);
    }

    /// A `Resource` naming a variable on a key the request spelt several ways: the Deny applies
    /// if some candidate names the resource; the Allow only if every candidate does.
    #[test]
    fn a_resource_variable_on_a_key_spelt_several_ways_can_only_refuse_more() {
        let policy = r#"{"Version":"2012-10-17","Statement":[
            {"Effect":"Allow","Action":"kms:*","Resource":"arn:aws:kms:*:*:key/${kms:EncryptionContext:tenant}-*"},
            {"Effect":"Deny","Action":"kms:*","Resource":"arn:aws:kms:*:*:key/${kms:EncryptionContext:frozen}"}]}"#;
        let key = "arn:aws:kms:us-east-1:111122223333:key/a-1";
        assert_eq!(
            decide(policy, key, &spelt(&[("tenant", "a")])),
            Decision::Allowed
        );
        assert_eq!(
            decide(policy, key, &spelt(&[("tenant", "a"), ("TENANT", "a")])),
            Decision::Allowed
        );
        assert_eq!(
            decide(policy, key, &spelt(&[("tenant", "a"), ("TENANT", "b")])),
            Decision::ImplicitDeny
        );
        assert_eq!(
            decide(policy, key, &spelt(&[("tenant", "a"), ("frozen", "a-1")])),
            Decision::ExplicitDeny
        );
        assert_eq!(
            decide(
                policy,
                key,
                &spelt(&[("tenant", "a"), ("frozen", "a-1"), ("FROZEN", "b-2")])
            ),
            Decision::ExplicitDeny,
            "the Deny applies for one of two spellings"
        );
        // NotResource: a Deny on every key but the tenant's own.
        let not_own = r#"{"Version":"2012-10-17","Statement":[
            {"Effect":"Allow","Action":"kms:*","Resource":"*"},
            {"Effect":"Deny","Action":"kms:*","NotResource":"arn:aws:kms:*:*:key/${kms:EncryptionContext:tenant}-*"}]}"#;
        assert_eq!(
            decide(not_own, key, &spelt(&[("tenant", "a")])),
            Decision::Allowed
        );
        assert_eq!(
            decide(not_own, key, &spelt(&[("tenant", "a"), ("TENANT", "b")])),
            Decision::ExplicitDeny
        );
    }

    /// The MFA idioms AWS documents, on the three kinds of credentials: long-term keys (no
    /// MFA keys at all), a session without MFA (`false`) and an MFA session (`true`, with an
    /// age).
    #[test]
    fn mfa_condition_keys_decide_as_aws_documents() {
        let policy = r#"{"Version":"2012-10-17","Statement":[
            {"Effect":"Allow","Action":"kms:*","Resource":"*"},
            {"Sid":"NoDeletionWithoutMfa","Effect":"Deny","Action":"kms:ScheduleKeyDeletion","Resource":"*",
             "Condition":{"BoolIfExists":{"aws:MultiFactorAuthPresent":"false"}}},
            {"Sid":"FreshMfaToDisable","Effect":"Deny","Action":"kms:DisableKey","Resource":"*",
             "Condition":{"NumericGreaterThanIfExists":{"aws:MultiFactorAuthAge":"3600"}}},
            {"Sid":"StrictMfaToTag","Effect":"Deny","Action":"kms:TagResource","Resource":"*",
             "Condition":{"Bool":{"aws:MultiFactorAuthPresent":"false"}}}]}"#;
        let policies = [NamedPolicy {
            name: "user/alice/p".into(),
            policy: Arc::new(Policy::parse(policy, PolicyKind::Identity).unwrap()),
        }];
        let principals = ["arn:aws:iam::111122223333:user/alice".to_string()];
        let judge = |action: &str, context: &RequestContext| {
            let request = Request {
                principals: &principals,
                account_root: "arn:aws:iam::111122223333:root",
                action,
                resource: "arn:aws:kms:us-east-1:111122223333:key/k",
                context,
            };
            let decision = evaluate(&request, None, &Identity::Policies(&policies));
            (
                decision.decision,
                decision.deciding_statement.and_then(|s| s.sid),
            )
        };
        let long_term = RequestContext::new();
        let mut without_mfa = RequestContext::new();
        without_mfa.set("aws:MultiFactorAuthPresent", "false");
        let mut with_mfa = RequestContext::new();
        with_mfa
            .set("aws:MultiFactorAuthPresent", "true")
            .set("aws:MultiFactorAuthAge", "120");
        let mut stale_mfa = RequestContext::new();
        stale_mfa
            .set("aws:MultiFactorAuthPresent", "true")
            .set("aws:MultiFactorAuthAge", "7200");

        let deny = |sid: &str| (Decision::ExplicitDeny, Some(sid.to_owned()));
        // BoolIfExists: long-term keys (key absent) and sessions without MFA are refused.
        assert_eq!(
            judge("kms:ScheduleKeyDeletion", &long_term),
            deny("NoDeletionWithoutMfa")
        );
        assert_eq!(
            judge("kms:ScheduleKeyDeletion", &without_mfa),
            deny("NoDeletionWithoutMfa")
        );
        assert_eq!(
            judge("kms:ScheduleKeyDeletion", &with_mfa).0,
            Decision::Allowed
        );
        // Bool without IfExists: the absent key of long-term keys does not match, as AWS
        // warns; only the session without MFA is refused.
        assert_eq!(judge("kms:TagResource", &long_term).0, Decision::Allowed);
        assert_eq!(
            judge("kms:TagResource", &without_mfa),
            deny("StrictMfaToTag")
        );
        assert_eq!(judge("kms:TagResource", &with_mfa).0, Decision::Allowed);
        // The age: an hour-old authentication is too old for DisableKey.
        assert_eq!(judge("kms:DisableKey", &with_mfa).0, Decision::Allowed);
        assert_eq!(
            judge("kms:DisableKey", &stale_mfa),
            deny("FreshMfaToDisable")
        );
    }
}
