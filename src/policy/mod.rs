//! Policy documents with AWS IAM semantics: parse, validate, evaluate, simulate; findings
//! about a document in the manner of IAM Access Analyzer ([`validate`]).
//!
//! [`evaluate_with_grants`] is the one function that authorises every operation (with a key's
//! grants as data, see [`grants`]; [`evaluate`] is it without grants); the policy simulator
//! calls it too, so what it answers is what the daemon does.

mod condition;
mod condition_keys;
mod document;
mod evaluate;
pub mod grants;
mod validate;
mod variables;
mod wildcard;

pub use condition::{
    Condition, DeferredKeys, Operator, RequestContext, SetQualifier, normalise_key, parse_date,
};
pub use document::{
    Effect, FEDERATED_PREFIX, MAX_POLICY_BYTES, MalformedPolicy, Matcher, Policy, PolicyKind,
    PrincipalMatch, Statement, UNREADABLE_SID, default_key_policy,
};
pub use evaluate::{
    Decision, GuardrailLevel, Identity, MatchedStatement, NamedPolicy, PolicyDecision, Request,
    evaluate, evaluate_with_grants, evaluate_within, guardrails_refuse,
};
pub use grants::{GrantAsk, GrantConstraint, GrantRule};
pub use validate::{AUTHORISED_ACTIONS, Finding, FindingType, validate};
pub use wildcard::matches as wildcard_matches;
