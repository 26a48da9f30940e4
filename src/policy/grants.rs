//! Grants as the evaluator sees them: plain data (who, which operations, under which
//! encryption-context constraint) handed to [`super::evaluate_with_grants`], which decides
//! whether one of them allows a request. Nothing here reads a store: the caller passes the
//! grants of the key in question, already stripped of any whose grantee no longer exists.
//!
//! The rules are AWS KMS's: a grant allows its operations on its key to its grantee; a
//! constraint's keys match the request's encryption-context keys without regard to case, its
//! values exactly; `EncryptionContextEquals` wants the request's whole context, no more and no
//! less, `EncryptionContextSubset` wants its pairs among the request's. A grant that includes
//! `CreateGrant` lets its grantee make grants of a subset of its own operations, under a
//! constraint at least as narrow as its own.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The operations a grant may allow (AWS KMS's grant operations this service has).
pub const GRANT_OPERATIONS: &[&str] = &[
    "Decrypt",
    "Encrypt",
    "GenerateDataKey",
    "GenerateDataKeyWithoutPlaintext",
    "GenerateDataKeyPair",
    "GenerateDataKeyPairWithoutPlaintext",
    "ReEncryptFrom",
    "ReEncryptTo",
    "Sign",
    "Verify",
    "GetPublicKey",
    "GenerateMac",
    "VerifyMac",
    "DeriveSharedSecret",
    "DescribeKey",
    "CreateGrant",
    "RetireGrant",
];

/// The operations that may be granted under an encryption-context constraint: those whose
/// request carries an encryption context, and `CreateGrant` (whose new grant's constraint is
/// then what is checked).
pub const CONSTRAINABLE_OPERATIONS: &[&str] = &[
    "Decrypt",
    "Encrypt",
    "GenerateDataKey",
    "GenerateDataKeyWithoutPlaintext",
    "GenerateDataKeyPair",
    "GenerateDataKeyPairWithoutPlaintext",
    "ReEncryptFrom",
    "ReEncryptTo",
    "CreateGrant",
];

/// A grant's encryption-context constraint.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum GrantConstraint {
    /// No constraint: the grant applies whatever the request's encryption context.
    #[default]
    None,
    /// The request's encryption context must be exactly these pairs.
    EncryptionContextEquals(BTreeMap<String, String>),
    /// The request's encryption context must include these pairs.
    EncryptionContextSubset(BTreeMap<String, String>),
}

impl GrantConstraint {
    /// The value of `kms:GrantConstraintType`, if there is a constraint.
    pub fn type_name(&self) -> Option<&'static str> {
        match self {
            GrantConstraint::None => None,
            GrantConstraint::EncryptionContextEquals(_) => Some("EncryptionContextEquals"),
            GrantConstraint::EncryptionContextSubset(_) => Some("EncryptionContextSubset"),
        }
    }

    /// Whether a request with `context` meets the constraint.
    pub fn admits(&self, context: &BTreeMap<String, String>) -> bool {
        match self {
            GrantConstraint::None => true,
            GrantConstraint::EncryptionContextEquals(pairs) => {
                pairs.len() == context.len() && contains_all(context, pairs)
            }
            GrantConstraint::EncryptionContextSubset(pairs) => contains_all(context, pairs),
        }
    }

    /// Whether `narrower` admits no context this constraint refuses: what a grant that holds
    /// `CreateGrant` under this constraint may hand on.
    pub fn covers(&self, narrower: &GrantConstraint) -> bool {
        match (self, narrower) {
            (GrantConstraint::None, _) => true,
            (_, GrantConstraint::None) => false,
            (GrantConstraint::EncryptionContextEquals(mine), theirs) => match theirs {
                GrantConstraint::EncryptionContextEquals(pairs) => {
                    mine.len() == pairs.len() && contains_all(pairs, mine)
                }
                _ => false,
            },
            (GrantConstraint::EncryptionContextSubset(mine), theirs) => match theirs {
                GrantConstraint::EncryptionContextEquals(pairs)
                | GrantConstraint::EncryptionContextSubset(pairs) => contains_all(pairs, mine),
                GrantConstraint::None => false,
            },
        }
    }
}

/// Whether every pair of `wanted` is in `context`: keys without regard to case, values
/// exactly.
fn contains_all(context: &BTreeMap<String, String>, wanted: &BTreeMap<String, String>) -> bool {
    wanted.iter().all(|(key, value)| {
        context
            .iter()
            .any(|(k, v)| k.eq_ignore_ascii_case(key) && v == value)
    })
}

/// One grant, as the evaluator needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrantRule {
    pub grant_id: String,
    /// The grantee principal's ARN.
    pub grantee: String,
    /// Operation names without the `kms:` prefix (`Decrypt`, …).
    pub operations: Vec<String>,
    pub constraint: GrantConstraint,
}

/// What a request asks of a grant besides its principal and action.
#[derive(Debug, Clone, Copy)]
pub enum GrantAsk<'a> {
    /// An operation with no encryption context: only unconstrained grants apply.
    Plain,
    /// A cryptographic operation with this encryption context.
    Context(&'a BTreeMap<String, String>),
    /// `CreateGrant` of a grant with these operations and this constraint.
    NewGrant {
        operations: &'a [String],
        constraint: &'a GrantConstraint,
    },
}

impl GrantRule {
    fn holds(&self, operation: &str) -> bool {
        self.operations
            .iter()
            .any(|o| o.eq_ignore_ascii_case(operation))
    }

    /// Whether this grant allows `action` (`kms:Decrypt`) to a caller answering to
    /// `principals`, for a request asking `ask`.
    pub fn allows(&self, principals: &[String], action: &str, ask: &GrantAsk<'_>) -> bool {
        let Some(operation) = action
            .split_once(':')
            .filter(|(service, _)| service.eq_ignore_ascii_case("kms"))
            .map(|(_, operation)| operation)
        else {
            return false;
        };
        if !self.holds(operation) || !principals.iter().any(|p| p == &self.grantee) {
            return false;
        }
        match ask {
            GrantAsk::NewGrant {
                operations,
                constraint,
            } => {
                operation.eq_ignore_ascii_case("CreateGrant")
                    && operations.iter().all(|o| self.holds(o))
                    && self.constraint.covers(constraint)
            }
            GrantAsk::Context(context) => self.constraint.admits(context),
            GrantAsk::Plain => self.constraint == GrantConstraint::None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn equals_wants_the_whole_context_with_keys_in_any_case_and_values_exact() {
        let c = GrantConstraint::EncryptionContextEquals(map(&[("Tenant", "a")]));
        assert!(c.admits(&map(&[("tenant", "a")])));
        assert!(c.admits(&map(&[("TENANT", "a")])));
        assert!(!c.admits(&map(&[("tenant", "A")])), "values are exact");
        assert!(!c.admits(&map(&[("tenant", "a"), ("x", "y")])), "no more");
        assert!(!c.admits(&map(&[])), "no less");
    }

    #[test]
    fn subset_wants_its_pairs_among_the_context() {
        let c = GrantConstraint::EncryptionContextSubset(map(&[("tenant", "a")]));
        assert!(c.admits(&map(&[("Tenant", "a"), ("x", "y")])));
        assert!(!c.admits(&map(&[("tenant", "b"), ("x", "y")])));
        assert!(!c.admits(&map(&[("x", "y")])));
        assert!(GrantConstraint::None.admits(&map(&[])));
    }

    #[test]
    fn a_constraint_covers_only_narrower_ones() {
        let sub = GrantConstraint::EncryptionContextSubset(map(&[("t", "a")]));
        let eq = GrantConstraint::EncryptionContextEquals(map(&[("t", "a")]));
        let wider_eq = GrantConstraint::EncryptionContextEquals(map(&[("t", "a"), ("u", "b")]));
        assert!(GrantConstraint::None.covers(&sub));
        assert!(!sub.covers(&GrantConstraint::None));
        assert!(sub.covers(&eq));
        assert!(sub.covers(&wider_eq));
        assert!(sub.covers(&GrantConstraint::EncryptionContextSubset(map(&[
            ("T", "a"),
            ("u", "b")
        ]))));
        assert!(
            !sub.covers(&GrantConstraint::EncryptionContextSubset(map(&[(
                "u", "b"
            )])))
        );
        assert!(eq.covers(&eq));
        assert!(!eq.covers(&wider_eq));
        assert!(!eq.covers(&sub));
    }

    #[test]
    fn a_grant_allows_its_operations_to_its_grantee_only() {
        let rule = GrantRule {
            grant_id: "g".into(),
            grantee: "arn:aws:iam::1:user/bob".into(),
            operations: vec!["Decrypt".into(), "CreateGrant".into()],
            constraint: GrantConstraint::None,
        };
        let bob = ["arn:aws:iam::1:user/bob".to_string()];
        let eve = ["arn:aws:iam::1:user/eve".to_string()];
        assert!(rule.allows(&bob, "kms:Decrypt", &GrantAsk::Plain));
        assert!(rule.allows(&bob, "KMS:decrypt", &GrantAsk::Plain));
        assert!(!rule.allows(&bob, "kms:Encrypt", &GrantAsk::Plain));
        assert!(!rule.allows(&bob, "iam:Decrypt", &GrantAsk::Plain));
        assert!(!rule.allows(&eve, "kms:Decrypt", &GrantAsk::Plain));
        let subset = ["Decrypt".to_string()];
        let more = ["Decrypt".to_string(), "Encrypt".to_string()];
        let ask = |operations| GrantAsk::NewGrant {
            operations,
            constraint: &GrantConstraint::None,
        };
        assert!(rule.allows(&bob, "kms:CreateGrant", &ask(&subset)));
        assert!(!rule.allows(&bob, "kms:CreateGrant", &ask(&more)));
    }
}
