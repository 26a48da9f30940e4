//! Table-driven evaluation suite for `keyhaven::policy::evaluate`.
//!
//! Each row is (key policy, identity policies, principals, action, resource, context) → (decision,
//! deciding statement). The expected answers follow AWS IAM's documented evaluation logic, not
//! whatever the code happens to output: every request starts implicitly denied, an explicit Deny
//! anywhere wins, an Allow in the key policy for the caller allows, an Allow in the key policy for
//! the account root delegates to the caller's identity policies, and requests without a resource
//! policy are decided by identity policies alone.
//!
//! Deciding-statement convention: explicit deny → the first matching Deny (key policy before
//! identity policies, policies and statements in order); allowed by the key policy for the caller →
//! that key-policy statement; allowed by delegation → the identity policy's Allow (for the root
//! caller, the key-policy statement that allows the root); root without a resource policy → None;
//! implicit deny → None.
//!
//! The single test runs every row and reports every disagreement by name rather than stopping at
//! the first.

use keyhaven::policy::{
    Decision, GrantAsk, GrantConstraint, GrantRule, GuardrailLevel, Identity, MatchedStatement,
    NamedPolicy, Policy, PolicyKind, Request, RequestContext, evaluate_within,
};
use std::collections::BTreeMap;
use std::collections::HashSet;
use std::sync::Arc;

use Decision::{Allowed, ExplicitDeny, ImplicitDeny};

// ---------------------------------------------------------------------------------------------
// Fixtures
// ---------------------------------------------------------------------------------------------

const ROOT_ARN: &str = "arn:aws:iam::111122223333:root";
const ALICE_ARN: &str = "arn:aws:iam::111122223333:user/alice";
const BOB_ARN: &str = "arn:aws:iam::111122223333:user/bob";
const SESSION_ARN: &str = "arn:aws:sts::111122223333:assumed-role/app/s1";
const ROLE_ARN: &str = "arn:aws:iam::111122223333:role/app";

const KEY: &str = "arn:aws:kms:us-east-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab";
const OTHER_KEY: &str =
    "arn:aws:kms:us-east-1:111122223333:key/0987dcba-09fe-87dc-65ba-ab0987654321";
const NEW_USER: &str = "arn:aws:iam::111122223333:user/carol";

const ALICE: &[&str] = &[ALICE_ARN];
const BOB: &[&str] = &[BOB_ARN];
/// An assumed-role session answers to its own ARN and to its role's.
const SESSION: &[&str] = &[SESSION_ARN, ROLE_ARN];
const ROOT: &[&str] = &[ROOT_ARN];

/// The name the key policy is reported under.
const KP: &str = "key policy";
/// Identity policy names.
const P_USER: &str = "user/alice/Main";
const P_BOB: &str = "user/bob/Main";
const P_GROUP: &str = "group/ops/Guard";
const P_GROUP_ALLOW: &str = "group/devs/Kms";
const P_ROLE: &str = "role/app/AppPolicy";
const P_COND: &str = "user/alice/Cond";

const NOW: &str = "2024-06-01T12:00:00Z";
const EC2: &str = "ec2.us-east-1.amazonaws.com";

/// AWS's default key policy: the account root has full access (delegation to IAM).
const KP_DEFAULT: &str = r#"{"Version":"2012-10-17","Id":"key-default-1","Statement":[{"Sid":"Enable IAM User Permissions","Effect":"Allow","Principal":{"AWS":"arn:aws:iam::111122223333:root"},"Action":"kms:*","Resource":"*"}]}"#;
const ROOT_SID: &str = "Enable IAM User Permissions";
/// The same delegation as a statement, to compose key policies with.
const ROOT_STMT: &str = r#"{"Sid":"EnableIAM","Effect":"Allow","Principal":{"AWS":"arn:aws:iam::111122223333:root"},"Action":"kms:*","Resource":"*"}"#;

const ID_KMS_ALL: &str = r#"{"Version":"2012-10-17","Statement":[{"Sid":"KmsAll","Effect":"Allow","Action":"kms:*","Resource":"*"}]}"#;

type Ctx = &'static [(&'static str, &'static [&'static str])];
type Expected = (Decision, Option<(&'static str, Option<&'static str>)>);

struct Case {
    name: &'static str,
    /// The key policy (`PolicyKind::Resource`); `None` for requests without a resource policy.
    key_policy: Option<&'static str>,
    /// `(policy name, JSON)` identity policies (`PolicyKind::Identity`); `None` = the account root.
    identity: Option<Vec<(&'static str, &'static str)>>,
    principals: &'static [&'static str],
    action: &'static str,
    resource: &'static str,
    context: Ctx,
    /// The key's grants, and what the request asks of them (see [`grant_cases`]).
    grants: &'static [Grant],
    ask: Ask,
    expected: Expected,
    /// The grant expected to allow the request, when no policy does.
    by_grant: Option<&'static str>,
    /// The caller's account root (another account's for cross-account rows).
    caller_root: &'static str,
    /// The guardrail levels on the caller's path (none: the management account, or no
    /// organisation), and the level expected to refuse the request.
    guardrails: Levels,
    capped_by: Option<&'static str>,
}

/// Guardrail levels: each a name and its `(policy name, JSON)` policies.
type Levels = &'static [(&'static str, &'static [(&'static str, &'static str)])];

type Pairs = &'static [(&'static str, &'static str)];

/// A grant of a row's key.
struct Grant {
    id: &'static str,
    grantee: &'static str,
    operations: &'static [&'static str],
    constraint: Constraint,
}

#[derive(Clone, Copy)]
enum Constraint {
    None,
    Equals(Pairs),
    Subset(Pairs),
}

/// What a request asks of a grant (the evaluator's `GrantAsk`).
#[derive(Clone, Copy)]
enum Ask {
    /// No encryption context in the request.
    Plain,
    /// A cryptographic request with this encryption context.
    Context(Pairs),
    /// `CreateGrant` of a grant with these operations and constraint.
    NewGrant(&'static [&'static str], Constraint),
}

/// Defaults for the fields a row does not care about: alice calls kms:Encrypt on KEY with an
/// empty request context. Every row states its policies and its expectation itself.
const BASE: Case = Case {
    name: "",
    key_policy: None,
    identity: None,
    principals: ALICE,
    action: "kms:Encrypt",
    resource: KEY,
    context: &[],
    grants: &[],
    ask: Ask::Plain,
    expected: IMPLICIT,
    by_grant: None,
    caller_root: ROOT_ARN,
    guardrails: &[],
    capped_by: None,
};

const IMPLICIT: Expected = (ImplicitDeny, None);
/// The root's own identity allows what no resource policy governs.
const ROOT_ALLOWED: Expected = (Allowed, None);

fn allowed(policy: &'static str, sid: &'static str) -> Expected {
    (Allowed, Some((policy, Some(sid))))
}

fn denied(policy: &'static str, sid: &'static str) -> Expected {
    (ExplicitDeny, Some((policy, Some(sid))))
}

fn leak(text: String) -> &'static str {
    Box::leak(text.into_boxed_str())
}

/// A policy document from its statements.
fn doc(statements: &[&str]) -> &'static str {
    leak(format!(
        r#"{{"Version":"2012-10-17","Statement":[{}]}}"#,
        statements.join(",")
    ))
}

/// Identity policy: Allow `action` on every resource (Sid "Act").
fn allow_action(action: &str) -> &'static str {
    doc(&[&format!(
        r#"{{"Sid":"Act","Effect":"Allow","Action":"{action}","Resource":"*"}}"#
    )])
}

/// Identity policy: Allow kms:* on `resource` (Sid "Res").
fn allow_resource(resource: &str) -> &'static str {
    doc(&[&format!(
        r#"{{"Sid":"Res","Effect":"Allow","Action":"kms:*","Resource":"{resource}"}}"#
    )])
}

/// Identity policy: Allow kms:* on every resource when `condition` holds (Sid "Cond").
fn allow_if(condition: &str) -> &'static str {
    doc(&[&format!(
        r#"{{"Sid":"Cond","Effect":"Allow","Action":"kms:*","Resource":"*","Condition":{condition}}}"#
    )])
}

/// A condition row: default key policy (delegation), alice holds `allow_if(condition)`, so the
/// request is allowed by that statement exactly when the condition holds.
fn cond(name: &'static str, condition: &str, context: Ctx, decision: Decision) -> Case {
    Case {
        name,
        key_policy: Some(KP_DEFAULT),
        identity: Some(vec![(P_COND, allow_if(condition))]),
        context,
        expected: match decision {
            Allowed => allowed(P_COND, "Cond"),
            _ => IMPLICIT,
        },
        ..BASE
    }
}

/// A guard row: the key policy delegates to the account and denies everyone kms:* when
/// `condition` holds (Sid "Guard"); alice's identity allows kms:*.
fn guard(name: &'static str, condition: &str, context: Ctx, decision: Decision) -> Case {
    let key_policy = doc(&[
        ROOT_STMT,
        &format!(
            r#"{{"Sid":"Guard","Effect":"Deny","Principal":"*","Action":"kms:*","Resource":"*","Condition":{condition}}}"#
        ),
    ]);
    Case {
        name,
        key_policy: Some(key_policy),
        identity: Some(vec![(P_USER, ID_KMS_ALL)]),
        context,
        expected: match decision {
            ExplicitDeny => denied(KP, "Guard"),
            _ => allowed(P_USER, "KmsAll"),
        },
        ..BASE
    }
}

/// A key-policy condition row: the key policy allows alice directly when `condition` holds (Sid
/// "AliceIf") and does not delegate; alice has no identity policy.
fn kp_cond(name: &'static str, condition: &str, context: Ctx, decision: Decision) -> Case {
    let key_policy = doc(&[&format!(
        r#"{{"Sid":"AliceIf","Effect":"Allow","Principal":{{"AWS":"{ALICE_ARN}"}},"Action":"kms:*","Resource":"*","Condition":{condition}}}"#
    )]);
    Case {
        name,
        key_policy: Some(key_policy),
        identity: Some(vec![]),
        context,
        expected: match decision {
            Allowed => allowed(KP, "AliceIf"),
            _ => IMPLICIT,
        },
        ..BASE
    }
}

// ---------------------------------------------------------------------------------------------
// The table
// ---------------------------------------------------------------------------------------------

/// Key policy ⇄ identity policies: direct grants, delegation through the account root, the root
/// caller.
fn delegation_cases() -> Vec<Case> {
    let alice_only = doc(&[
        r#"{"Sid":"AliceUse","Effect":"Allow","Principal":{"AWS":"arn:aws:iam::111122223333:user/alice"},"Action":["kms:Encrypt","kms:Decrypt"],"Resource":"*"}"#,
    ]);
    let root_read_only = doc(&[
        r#"{"Sid":"RootReadOnly","Effect":"Allow","Principal":{"AWS":"arn:aws:iam::111122223333:root"},"Action":["kms:Describe*","kms:Get*","kms:List*"],"Resource":"*"}"#,
    ]);
    let root_and_alice = doc(&[
        ROOT_STMT,
        r#"{"Sid":"AliceDirect","Effect":"Allow","Principal":{"AWS":"arn:aws:iam::111122223333:user/alice"},"Action":["kms:Encrypt","kms:Decrypt"],"Resource":"*"}"#,
    ]);
    let account_id = doc(&[
        r#"{"Sid":"AccountId","Effect":"Allow","Principal":{"AWS":"111122223333"},"Action":"kms:*","Resource":"*"}"#,
    ]);
    let role = doc(&[
        r#"{"Sid":"AppRole","Effect":"Allow","Principal":{"AWS":"arn:aws:iam::111122223333:role/app"},"Action":["kms:Encrypt","kms:Decrypt","kms:GenerateDataKey*"],"Resource":"*"}"#,
    ]);
    let session = doc(&[
        r#"{"Sid":"AppSession","Effect":"Allow","Principal":{"AWS":"arn:aws:sts::111122223333:assumed-role/app/s1"},"Action":"kms:Encrypt","Resource":"*"}"#,
    ]);
    let bob_only = doc(&[
        r#"{"Sid":"BobUse","Effect":"Allow","Principal":{"AWS":"arn:aws:iam::111122223333:user/bob"},"Action":"kms:*","Resource":"*"}"#,
    ]);
    let root_if_account = doc(&[
        r#"{"Sid":"RootIfAccount","Effect":"Allow","Principal":{"AWS":"arn:aws:iam::111122223333:root"},"Action":"kms:*","Resource":"*","Condition":{"StringEquals":{"kms:CallerAccount":"111122223333"}}}"#,
    ]);
    let other_account = doc(&[
        r#"{"Sid":"OtherAccount","Effect":"Allow","Principal":{"AWS":"444455556666"},"Action":"kms:*","Resource":"*"}"#,
    ]);
    let alice_no_sid = doc(&[
        r#"{"Effect":"Allow","Principal":{"AWS":"arn:aws:iam::111122223333:user/alice"},"Action":"kms:Encrypt","Resource":"*"}"#,
    ]);
    let id_no_sid = doc(&[r#"{"Effect":"Allow","Action":"kms:Encrypt","Resource":"*"}"#]);
    let id_decrypt_only =
        doc(&[r#"{"Sid":"DecryptOnly","Effect":"Allow","Action":"kms:Decrypt","Resource":"*"}"#]);
    let id_other_key_only = allow_resource(OTHER_KEY);

    vec![
        Case {
            name: "delegation: default key policy + identity Allow kms:*",
            key_policy: Some(KP_DEFAULT),
            identity: Some(vec![(P_USER, ID_KMS_ALL)]),
            expected: allowed(P_USER, "KmsAll"),
            ..BASE
        },
        Case {
            name: "delegation: default key policy, user with no identity policy",
            key_policy: Some(KP_DEFAULT),
            identity: Some(vec![]),
            expected: IMPLICIT,
            ..BASE
        },
        Case {
            name: "delegation: identity allows only Decrypt, request Encrypt",
            key_policy: Some(KP_DEFAULT),
            identity: Some(vec![(P_USER, id_decrypt_only)]),
            action: "kms:Encrypt",
            expected: IMPLICIT,
            ..BASE
        },
        Case {
            name: "delegation: identity allows only Decrypt, request Decrypt",
            key_policy: Some(KP_DEFAULT),
            identity: Some(vec![(P_USER, id_decrypt_only)]),
            action: "kms:Decrypt",
            expected: allowed(P_USER, "DecryptOnly"),
            ..BASE
        },
        Case {
            name: "delegation: identity allows another key only",
            key_policy: Some(KP_DEFAULT),
            identity: Some(vec![(P_USER, id_other_key_only)]),
            expected: IMPLICIT,
            ..BASE
        },
        Case {
            name: "delegation: identity allows another key, request on that key",
            key_policy: Some(KP_DEFAULT),
            identity: Some(vec![(P_USER, id_other_key_only)]),
            resource: OTHER_KEY,
            expected: allowed(P_USER, "Res"),
            ..BASE
        },
        Case {
            name: "direct: key policy names alice, no identity policy needed (Encrypt)",
            key_policy: Some(alice_only),
            identity: Some(vec![]),
            action: "kms:Encrypt",
            expected: allowed(KP, "AliceUse"),
            ..BASE
        },
        Case {
            name: "direct: key policy names alice, no identity policy needed (Decrypt)",
            key_policy: Some(alice_only),
            identity: Some(vec![]),
            action: "kms:Decrypt",
            expected: allowed(KP, "AliceUse"),
            ..BASE
        },
        Case {
            name: "no delegation: key policy without root, bob's identity Allow is not enough",
            key_policy: Some(alice_only),
            identity: Some(vec![(P_BOB, ID_KMS_ALL)]),
            principals: BOB,
            expected: IMPLICIT,
            ..BASE
        },
        Case {
            name: "no delegation: alice's identity allows ScheduleKeyDeletion, key policy gives her Encrypt/Decrypt only",
            key_policy: Some(alice_only),
            identity: Some(vec![(P_USER, ID_KMS_ALL)]),
            action: "kms:ScheduleKeyDeletion",
            expected: IMPLICIT,
            ..BASE
        },
        Case {
            name: "root: default key policy allows the root caller",
            key_policy: Some(KP_DEFAULT),
            identity: None,
            principals: ROOT,
            action: "kms:ScheduleKeyDeletion",
            expected: allowed(KP, ROOT_SID),
            ..BASE
        },
        Case {
            name: "root: default key policy, Encrypt",
            key_policy: Some(KP_DEFAULT),
            identity: None,
            principals: ROOT,
            action: "kms:Encrypt",
            expected: allowed(KP, ROOT_SID),
            ..BASE
        },
        Case {
            name: "root: default key policy (kms:*) does not cover an iam action",
            key_policy: Some(KP_DEFAULT),
            identity: None,
            principals: ROOT,
            action: "iam:CreateUser",
            expected: IMPLICIT,
            ..BASE
        },
        Case {
            name: "root: key policy that does not name the root keeps the root out",
            key_policy: Some(alice_only),
            identity: None,
            principals: ROOT,
            expected: IMPLICIT,
            ..BASE
        },
        Case {
            name: "root: key policy allows root read-only, Encrypt refused",
            key_policy: Some(root_read_only),
            identity: None,
            principals: ROOT,
            action: "kms:Encrypt",
            expected: IMPLICIT,
            ..BASE
        },
        Case {
            name: "root: key policy allows root read-only, DescribeKey allowed",
            key_policy: Some(root_read_only),
            identity: None,
            principals: ROOT,
            action: "kms:DescribeKey",
            expected: allowed(KP, "RootReadOnly"),
            ..BASE
        },
        Case {
            name: "delegation limited to read actions: identity kms:* cannot Encrypt",
            key_policy: Some(root_read_only),
            identity: Some(vec![(P_USER, ID_KMS_ALL)]),
            action: "kms:Encrypt",
            expected: IMPLICIT,
            ..BASE
        },
        Case {
            name: "delegation limited to read actions: identity kms:* can DescribeKey",
            key_policy: Some(root_read_only),
            identity: Some(vec![(P_USER, ID_KMS_ALL)]),
            action: "kms:DescribeKey",
            expected: allowed(P_USER, "KmsAll"),
            ..BASE
        },
        Case {
            name: "direct grant is reported even when a root statement comes first",
            key_policy: Some(root_and_alice),
            identity: Some(vec![(P_USER, ID_KMS_ALL)]),
            action: "kms:Encrypt",
            expected: allowed(KP, "AliceDirect"),
            ..BASE
        },
        Case {
            name: "action outside alice's direct grant falls back to delegation",
            key_policy: Some(root_and_alice),
            identity: Some(vec![(P_USER, ID_KMS_ALL)]),
            action: "kms:ScheduleKeyDeletion",
            expected: allowed(P_USER, "KmsAll"),
            ..BASE
        },
        Case {
            name: "action outside alice's direct grant, no identity policy",
            key_policy: Some(root_and_alice),
            identity: Some(vec![]),
            action: "kms:ScheduleKeyDeletion",
            expected: IMPLICIT,
            ..BASE
        },
        Case {
            name: "account id principal delegates to identity policies",
            key_policy: Some(account_id),
            identity: Some(vec![(P_USER, ID_KMS_ALL)]),
            expected: allowed(P_USER, "KmsAll"),
            ..BASE
        },
        Case {
            name: "account id principal: user without identity policy",
            key_policy: Some(account_id),
            identity: Some(vec![]),
            expected: IMPLICIT,
            ..BASE
        },
        Case {
            name: "account id principal allows the root caller",
            key_policy: Some(account_id),
            identity: None,
            principals: ROOT,
            expected: allowed(KP, "AccountId"),
            ..BASE
        },
        Case {
            name: "assumed role: role policy decides under the default key policy",
            key_policy: Some(KP_DEFAULT),
            identity: Some(vec![(P_ROLE, ID_KMS_ALL)]),
            principals: SESSION,
            expected: allowed(P_ROLE, "KmsAll"),
            ..BASE
        },
        Case {
            name: "assumed role without role policies",
            key_policy: Some(KP_DEFAULT),
            identity: Some(vec![]),
            principals: SESSION,
            expected: IMPLICIT,
            ..BASE
        },
        Case {
            name: "key policy naming the role allows its session",
            key_policy: Some(role),
            identity: Some(vec![]),
            principals: SESSION,
            action: "kms:Decrypt",
            expected: allowed(KP, "AppRole"),
            ..BASE
        },
        Case {
            name: "key policy naming the role, action wildcard GenerateDataKey*",
            key_policy: Some(role),
            identity: Some(vec![]),
            principals: SESSION,
            action: "kms:GenerateDataKeyWithoutPlaintext",
            expected: allowed(KP, "AppRole"),
            ..BASE
        },
        Case {
            name: "key policy naming the role does not allow alice",
            key_policy: Some(role),
            identity: Some(vec![(P_USER, ID_KMS_ALL)]),
            expected: IMPLICIT,
            ..BASE
        },
        Case {
            name: "key policy naming the session ARN allows that session",
            key_policy: Some(session),
            identity: Some(vec![]),
            principals: SESSION,
            expected: allowed(KP, "AppSession"),
            ..BASE
        },
        Case {
            name: "key policy naming bob only: alice's identity Allow is not enough",
            key_policy: Some(bob_only),
            identity: Some(vec![(P_USER, ID_KMS_ALL)]),
            expected: IMPLICIT,
            ..BASE
        },
        Case {
            name: "key policy naming bob only: bob allowed",
            key_policy: Some(bob_only),
            identity: Some(vec![]),
            principals: BOB,
            expected: allowed(KP, "BobUse"),
            ..BASE
        },
        Case {
            name: "delegation whose condition holds",
            key_policy: Some(root_if_account),
            identity: Some(vec![(P_USER, ID_KMS_ALL)]),
            context: &[("kms:CallerAccount", &["111122223333"])],
            expected: allowed(P_USER, "KmsAll"),
            ..BASE
        },
        Case {
            name: "delegation whose condition key is missing",
            key_policy: Some(root_if_account),
            identity: Some(vec![(P_USER, ID_KMS_ALL)]),
            context: &[],
            expected: IMPLICIT,
            ..BASE
        },
        Case {
            name: "root allowed by a conditional root statement",
            key_policy: Some(root_if_account),
            identity: None,
            principals: ROOT,
            context: &[("kms:CallerAccount", &["111122223333"])],
            expected: allowed(KP, "RootIfAccount"),
            ..BASE
        },
        Case {
            name: "root refused when the root statement's condition fails",
            key_policy: Some(root_if_account),
            identity: None,
            principals: ROOT,
            context: &[("kms:CallerAccount", &["444455556666"])],
            expected: IMPLICIT,
            ..BASE
        },
        Case {
            name: "another account's root in the key policy does not delegate to this account",
            key_policy: Some(other_account),
            identity: Some(vec![(P_USER, ID_KMS_ALL)]),
            expected: IMPLICIT,
            ..BASE
        },
        Case {
            name: "key-policy statement without Sid is reported with no Sid",
            key_policy: Some(alice_no_sid),
            identity: Some(vec![]),
            expected: (Allowed, Some((KP, None))),
            ..BASE
        },
        Case {
            name: "identity statement without Sid is reported with no Sid",
            key_policy: Some(KP_DEFAULT),
            identity: Some(vec![(P_USER, id_no_sid)]),
            expected: (Allowed, Some((P_USER, None))),
            ..BASE
        },
        Case {
            name: "first allowing identity policy is reported (user policy)",
            key_policy: Some(KP_DEFAULT),
            identity: Some(vec![(P_USER, id_decrypt_only), (P_GROUP_ALLOW, ID_KMS_ALL)]),
            action: "kms:Decrypt",
            expected: allowed(P_USER, "DecryptOnly"),
            ..BASE
        },
        Case {
            name: "allow from a group policy when the user policy does not match",
            key_policy: Some(KP_DEFAULT),
            identity: Some(vec![(P_USER, id_decrypt_only), (P_GROUP_ALLOW, ID_KMS_ALL)]),
            action: "kms:Encrypt",
            expected: allowed(P_GROUP_ALLOW, "KmsAll"),
            ..BASE
        },
    ]
}

/// Requests that no resource policy governs: identity policies alone decide.
fn no_resource_policy_cases() -> Vec<Case> {
    let create_key =
        doc(&[r#"{"Sid":"CreateKeys","Effect":"Allow","Action":"kms:CreateKey","Resource":"*"}"#]);
    let iam_users = doc(&[
        r#"{"Sid":"ManageUsers","Effect":"Allow","Action":"iam:*","Resource":"arn:aws:iam::111122223333:user/*"}"#,
    ]);
    let iam_roles = doc(&[
        r#"{"Sid":"ManageRoles","Effect":"Allow","Action":"iam:*","Resource":"arn:aws:iam::111122223333:role/*"}"#,
    ]);
    let deny_create_user =
        doc(&[r#"{"Sid":"NoNewUsers","Effect":"Deny","Action":"iam:CreateUser","Resource":"*"}"#]);
    let not_iam =
        doc(&[r#"{"Sid":"AllButIam","Effect":"Allow","NotAction":"iam:*","Resource":"*"}"#]);
    let read_guard = doc(&[
        r#"{"Sid":"KmsAll","Effect":"Allow","Action":"kms:*","Resource":"*"}"#,
        r#"{"Sid":"ReadOnlyGuard","Effect":"Deny","NotAction":["kms:Describe*","kms:List*"],"Resource":"*"}"#,
    ]);
    let everything = doc(&[r#"{"Sid":"Everything","Effect":"Allow","Action":"*","Resource":"*"}"#]);
    let keys_only = allow_resource("arn:aws:kms:us-east-1:111122223333:key/*");

    vec![
        Case {
            name: "no resource policy: CreateKey allowed by identity policy",
            key_policy: None,
            identity: Some(vec![(P_USER, create_key)]),
            action: "kms:CreateKey",
            resource: "*",
            expected: allowed(P_USER, "CreateKeys"),
            ..BASE
        },
        Case {
            name: "no resource policy: a new user cannot CreateKey",
            key_policy: None,
            identity: Some(vec![]),
            action: "kms:CreateKey",
            resource: "*",
            expected: IMPLICIT,
            ..BASE
        },
        Case {
            name: "no resource policy: root may CreateKey",
            key_policy: None,
            identity: None,
            principals: ROOT,
            action: "kms:CreateKey",
            resource: "*",
            expected: ROOT_ALLOWED,
            ..BASE
        },
        Case {
            name: "no resource policy: iam:CreateUser allowed on user/*",
            key_policy: None,
            identity: Some(vec![(P_USER, iam_users)]),
            action: "iam:CreateUser",
            resource: NEW_USER,
            expected: allowed(P_USER, "ManageUsers"),
            ..BASE
        },
        Case {
            name: "no resource policy: iam:CreateUser with a role/* grant only",
            key_policy: None,
            identity: Some(vec![(P_USER, iam_roles)]),
            action: "iam:CreateUser",
            resource: NEW_USER,
            expected: IMPLICIT,
            ..BASE
        },
        Case {
            name: "no resource policy: root may iam:CreateUser",
            key_policy: None,
            identity: None,
            principals: ROOT,
            action: "iam:CreateUser",
            resource: NEW_USER,
            expected: ROOT_ALLOWED,
            ..BASE
        },
        Case {
            name: "no resource policy: group Deny beats user Allow",
            key_policy: None,
            identity: Some(vec![(P_USER, iam_users), (P_GROUP, deny_create_user)]),
            action: "iam:CreateUser",
            resource: NEW_USER,
            expected: denied(P_GROUP, "NoNewUsers"),
            ..BASE
        },
        Case {
            name: "no resource policy: NotAction iam:* allows kms:CreateKey",
            key_policy: None,
            identity: Some(vec![(P_USER, not_iam)]),
            action: "kms:CreateKey",
            resource: "*",
            expected: allowed(P_USER, "AllButIam"),
            ..BASE
        },
        Case {
            name: "no resource policy: NotAction iam:* does not allow iam:CreateUser",
            key_policy: None,
            identity: Some(vec![(P_USER, not_iam)]),
            action: "iam:CreateUser",
            resource: NEW_USER,
            expected: IMPLICIT,
            ..BASE
        },
        Case {
            name: "no resource policy: Deny with NotAction refuses CreateKey",
            key_policy: None,
            identity: Some(vec![(P_USER, read_guard)]),
            action: "kms:CreateKey",
            resource: "*",
            expected: denied(P_USER, "ReadOnlyGuard"),
            ..BASE
        },
        Case {
            name: "no resource policy: Deny with NotAction leaves ListKeys allowed",
            key_policy: None,
            identity: Some(vec![(P_USER, read_guard)]),
            action: "kms:ListKeys",
            resource: "*",
            expected: allowed(P_USER, "KmsAll"),
            ..BASE
        },
        Case {
            name: "no resource policy: assumed role CreateKey by its role policy",
            key_policy: None,
            identity: Some(vec![(P_ROLE, create_key)]),
            principals: SESSION,
            action: "kms:CreateKey",
            resource: "*",
            expected: allowed(P_ROLE, "CreateKeys"),
            ..BASE
        },
        Case {
            name: "no resource policy: Allow kms:* does not cover iam:CreateUser",
            key_policy: None,
            identity: Some(vec![(P_USER, ID_KMS_ALL)]),
            action: "iam:CreateUser",
            resource: NEW_USER,
            expected: IMPLICIT,
            ..BASE
        },
        Case {
            name: "no resource policy: Action * covers iam:CreateUser",
            key_policy: None,
            identity: Some(vec![(P_USER, everything)]),
            action: "iam:CreateUser",
            resource: NEW_USER,
            expected: allowed(P_USER, "Everything"),
            ..BASE
        },
        Case {
            name: "no resource policy: CreateKey (resource *) not covered by a key/* grant",
            key_policy: None,
            identity: Some(vec![(P_USER, keys_only)]),
            action: "kms:CreateKey",
            resource: "*",
            expected: IMPLICIT,
            ..BASE
        },
    ]
}

/// Explicit Deny overrides every Allow.
fn deny_cases() -> Vec<Case> {
    let deny_alice_decrypt = doc(&[
        ROOT_STMT,
        r#"{"Sid":"DenyAliceDecrypt","Effect":"Deny","Principal":{"AWS":"arn:aws:iam::111122223333:user/alice"},"Action":"kms:Decrypt","Resource":"*"}"#,
    ]);
    let alice_only = doc(&[
        r#"{"Sid":"AliceUse","Effect":"Allow","Principal":{"AWS":"arn:aws:iam::111122223333:user/alice"},"Action":["kms:Encrypt","kms:Decrypt"],"Resource":"*"}"#,
    ]);
    let deny_account_id = doc(&[
        ROOT_STMT,
        r#"{"Sid":"NoDeletion","Effect":"Deny","Principal":{"AWS":"111122223333"},"Action":"kms:ScheduleKeyDeletion","Resource":"*"}"#,
    ]);
    let deny_root_arn = doc(&[
        ROOT_STMT,
        r#"{"Sid":"NoDisable","Effect":"Deny","Principal":{"AWS":"arn:aws:iam::111122223333:root"},"Action":"kms:Disable*","Resource":"*"}"#,
    ]);
    let deny_other_account = doc(&[
        ROOT_STMT,
        r#"{"Sid":"DenyOther","Effect":"Deny","Principal":{"AWS":"444455556666"},"Action":"kms:*","Resource":"*"}"#,
    ]);
    let deny_role = doc(&[
        ROOT_STMT,
        r#"{"Sid":"RoleNoDecrypt","Effect":"Deny","Principal":{"AWS":"arn:aws:iam::111122223333:role/app"},"Action":"kms:Decrypt","Resource":"*"}"#,
    ]);
    let allow_then_deny = doc(&[
        r#"{"Sid":"AliceAll","Effect":"Allow","Principal":{"AWS":"arn:aws:iam::111122223333:user/alice"},"Action":"kms:*","Resource":"*"}"#,
        r#"{"Sid":"AliceNoEncrypt","Effect":"Deny","Principal":{"AWS":"arn:aws:iam::111122223333:user/alice"},"Action":"kms:Encrypt","Resource":"*"}"#,
    ]);
    let deny_insecure = doc(&[
        ROOT_STMT,
        r#"{"Sid":"DenyInsecure","Effect":"Deny","Principal":"*","Action":"kms:*","Resource":"*","Condition":{"Bool":{"aws:SecureTransport":"false"}}}"#,
    ]);
    let id_deny_encrypt =
        doc(&[r#"{"Sid":"NoEncrypt","Effect":"Deny","Action":"kms:Encrypt","Resource":"*"}"#]);
    let id_deny_decrypt =
        doc(&[r#"{"Sid":"NoDecrypt","Effect":"Deny","Action":"kms:Decrypt","Resource":"*"}"#]);
    let id_deny_all = doc(&[r#"{"Sid":"DenyAll","Effect":"Deny","Action":"*","Resource":"*"}"#]);
    let id_two_denies = doc(&[
        r#"{"Sid":"DenyDecrypt","Effect":"Deny","Action":"kms:Decrypt","Resource":"*"}"#,
        r#"{"Sid":"DenyKms","Effect":"Deny","Action":"kms:*","Resource":"*"}"#,
    ]);

    vec![
        Case {
            name: "deny: key policy denies alice Decrypt despite her identity Allow",
            key_policy: Some(deny_alice_decrypt),
            identity: Some(vec![(P_USER, ID_KMS_ALL)]),
            action: "kms:Decrypt",
            expected: denied(KP, "DenyAliceDecrypt"),
            ..BASE
        },
        Case {
            name: "deny: key-policy Deny for Decrypt leaves alice's Encrypt allowed",
            key_policy: Some(deny_alice_decrypt),
            identity: Some(vec![(P_USER, ID_KMS_ALL)]),
            action: "kms:Encrypt",
            expected: allowed(P_USER, "KmsAll"),
            ..BASE
        },
        Case {
            name: "deny: key-policy Deny naming alice does not touch bob",
            key_policy: Some(deny_alice_decrypt),
            identity: Some(vec![(P_BOB, ID_KMS_ALL)]),
            principals: BOB,
            action: "kms:Decrypt",
            expected: allowed(P_BOB, "KmsAll"),
            ..BASE
        },
        Case {
            name: "deny: identity Deny beats a direct key-policy Allow",
            key_policy: Some(alice_only),
            identity: Some(vec![(P_USER, id_deny_encrypt)]),
            action: "kms:Encrypt",
            expected: denied(P_USER, "NoEncrypt"),
            ..BASE
        },
        Case {
            name: "deny: identity Deny for Encrypt leaves direct Decrypt allowed",
            key_policy: Some(alice_only),
            identity: Some(vec![(P_USER, id_deny_encrypt)]),
            action: "kms:Decrypt",
            expected: allowed(KP, "AliceUse"),
            ..BASE
        },
        Case {
            name: "deny: group Deny beats user Allow under delegation",
            key_policy: Some(KP_DEFAULT),
            identity: Some(vec![(P_USER, ID_KMS_ALL), (P_GROUP, id_deny_decrypt)]),
            action: "kms:Decrypt",
            expected: denied(P_GROUP, "NoDecrypt"),
            ..BASE
        },
        Case {
            name: "deny: group Deny for Decrypt leaves Encrypt allowed",
            key_policy: Some(KP_DEFAULT),
            identity: Some(vec![(P_USER, ID_KMS_ALL), (P_GROUP, id_deny_decrypt)]),
            action: "kms:Encrypt",
            expected: allowed(P_USER, "KmsAll"),
            ..BASE
        },
        Case {
            name: "deny: group Deny * beats a direct key-policy Allow",
            key_policy: Some(alice_only),
            identity: Some(vec![(P_GROUP, id_deny_all)]),
            expected: denied(P_GROUP, "DenyAll"),
            ..BASE
        },
        Case {
            name: "deny: key policy Deny naming the account id covers alice",
            key_policy: Some(deny_account_id),
            identity: Some(vec![(P_USER, ID_KMS_ALL)]),
            action: "kms:ScheduleKeyDeletion",
            expected: denied(KP, "NoDeletion"),
            ..BASE
        },
        Case {
            name: "deny: key policy Deny naming the account id covers bob",
            key_policy: Some(deny_account_id),
            identity: Some(vec![(P_BOB, ID_KMS_ALL)]),
            principals: BOB,
            action: "kms:ScheduleKeyDeletion",
            expected: denied(KP, "NoDeletion"),
            ..BASE
        },
        Case {
            name: "deny: key policy Deny naming the account id covers an assumed-role session",
            key_policy: Some(deny_account_id),
            identity: Some(vec![(P_ROLE, ID_KMS_ALL)]),
            principals: SESSION,
            action: "kms:ScheduleKeyDeletion",
            expected: denied(KP, "NoDeletion"),
            ..BASE
        },
        Case {
            name: "deny: key policy Deny naming the account id covers the root",
            key_policy: Some(deny_account_id),
            identity: None,
            principals: ROOT,
            action: "kms:ScheduleKeyDeletion",
            expected: denied(KP, "NoDeletion"),
            ..BASE
        },
        Case {
            name: "deny: account-wide Deny for deletion leaves Encrypt allowed",
            key_policy: Some(deny_account_id),
            identity: Some(vec![(P_USER, ID_KMS_ALL)]),
            action: "kms:Encrypt",
            expected: allowed(P_USER, "KmsAll"),
            ..BASE
        },
        Case {
            name: "deny: key policy Deny naming the root ARN covers alice",
            key_policy: Some(deny_root_arn),
            identity: Some(vec![(P_USER, ID_KMS_ALL)]),
            action: "kms:DisableKey",
            expected: denied(KP, "NoDisable"),
            ..BASE
        },
        Case {
            name: "deny: key policy Deny naming the root ARN covers the root (wildcard action)",
            key_policy: Some(deny_root_arn),
            identity: None,
            principals: ROOT,
            action: "kms:DisableKeyRotation",
            expected: denied(KP, "NoDisable"),
            ..BASE
        },
        Case {
            name: "deny: key policy Deny naming another account does not cover alice",
            key_policy: Some(deny_other_account),
            identity: Some(vec![(P_USER, ID_KMS_ALL)]),
            expected: allowed(P_USER, "KmsAll"),
            ..BASE
        },
        Case {
            name: "deny: key-policy Deny is reported before an identity Deny",
            key_policy: Some(deny_alice_decrypt),
            identity: Some(vec![(P_USER, ID_KMS_ALL), (P_GROUP, id_deny_decrypt)]),
            action: "kms:Decrypt",
            expected: denied(KP, "DenyAliceDecrypt"),
            ..BASE
        },
        Case {
            name: "deny: first matching Deny statement within a policy (Decrypt)",
            key_policy: Some(KP_DEFAULT),
            identity: Some(vec![(P_USER, ID_KMS_ALL), (P_GROUP, id_two_denies)]),
            action: "kms:Decrypt",
            expected: denied(P_GROUP, "DenyDecrypt"),
            ..BASE
        },
        Case {
            name: "deny: first matching Deny statement within a policy (Encrypt)",
            key_policy: Some(KP_DEFAULT),
            identity: Some(vec![(P_USER, ID_KMS_ALL), (P_GROUP, id_two_denies)]),
            action: "kms:Encrypt",
            expected: denied(P_GROUP, "DenyKms"),
            ..BASE
        },
        Case {
            name: "deny: Deny naming the role covers its session",
            key_policy: Some(deny_role),
            identity: Some(vec![(P_ROLE, ID_KMS_ALL)]),
            principals: SESSION,
            action: "kms:Decrypt",
            expected: denied(KP, "RoleNoDecrypt"),
            ..BASE
        },
        Case {
            name: "deny: Deny naming the role does not cover alice",
            key_policy: Some(deny_role),
            identity: Some(vec![(P_USER, ID_KMS_ALL)]),
            action: "kms:Decrypt",
            expected: allowed(P_USER, "KmsAll"),
            ..BASE
        },
        Case {
            name: "deny: Deny after Allow in the same key policy still wins",
            key_policy: Some(allow_then_deny),
            identity: Some(vec![]),
            action: "kms:Encrypt",
            expected: denied(KP, "AliceNoEncrypt"),
            ..BASE
        },
        Case {
            name: "deny: Allow in the same key policy for another action",
            key_policy: Some(allow_then_deny),
            identity: Some(vec![]),
            action: "kms:Decrypt",
            expected: allowed(KP, "AliceAll"),
            ..BASE
        },
        Case {
            name: "deny: Principal * Deny on insecure transport covers the root",
            key_policy: Some(deny_insecure),
            identity: None,
            principals: ROOT,
            context: &[("aws:SecureTransport", &["false"])],
            expected: denied(KP, "DenyInsecure"),
            ..BASE
        },
        Case {
            name: "deny: Principal * Deny on insecure transport covers alice",
            key_policy: Some(deny_insecure),
            identity: Some(vec![(P_USER, ID_KMS_ALL)]),
            context: &[("aws:SecureTransport", &["false"])],
            expected: denied(KP, "DenyInsecure"),
            ..BASE
        },
        Case {
            name: "deny: Principal * Deny on insecure transport, secure request",
            key_policy: Some(deny_insecure),
            identity: Some(vec![(P_USER, ID_KMS_ALL)]),
            context: &[("aws:SecureTransport", &["true"])],
            expected: allowed(P_USER, "KmsAll"),
            ..BASE
        },
        Case {
            name: "deny: Bool Deny does not apply when the key is missing",
            key_policy: Some(deny_insecure),
            identity: Some(vec![(P_USER, ID_KMS_ALL)]),
            context: &[],
            expected: allowed(P_USER, "KmsAll"),
            ..BASE
        },
    ]
}

/// `*` and `?` in actions (case-insensitive) and resources (case-sensitive).
#[rustfmt::skip]
fn wildcard_cases() -> Vec<Case> {
    // iam actions have no resource policy; kms actions go through the default key policy.
    let action = |name, pattern: &str, request: &'static str, decision: Decision| Case {
        name,
        key_policy: if request.starts_with("iam:") { None } else { Some(KP_DEFAULT) },
        identity: Some(vec![(P_USER, allow_action(pattern))]),
        action: request,
        resource: if request.starts_with("iam:") { NEW_USER } else { KEY },
        expected: match decision {
            Allowed => allowed(P_USER, "Act"),
            _ => IMPLICIT,
        },
        ..BASE
    };
    let resource = |name, pattern: &str, decision: Decision| Case {
        name,
        key_policy: Some(KP_DEFAULT),
        identity: Some(vec![(P_USER, allow_resource(pattern))]),
        expected: match decision {
            Allowed => allowed(P_USER, "Res"),
            _ => IMPLICIT,
        },
        ..BASE
    };
    let alice_crypt = doc(&[
        r#"{"Sid":"AliceCrypt","Effect":"Allow","Principal":{"AWS":"arn:aws:iam::111122223333:user/alice"},"Action":"kms:*crypt*","Resource":"*"}"#,
    ]);
    let two_resources = doc(&[&format!(
        r#"{{"Sid":"Res","Effect":"Allow","Action":"kms:*","Resource":["{OTHER_KEY}","{KEY}"]}}"#
    )]);

    vec![
        action("action: kms:Gen*Key matches GenerateDataKey", "kms:Gen*Key", "kms:GenerateDataKey", Allowed),
        action("action: kms:Gen*Key does not match GenerateDataKeyWithoutPlaintext", "kms:Gen*Key", "kms:GenerateDataKeyWithoutPlaintext", ImplicitDeny),
        action("action: kms:Generate* matches GenerateDataKeyWithoutPlaintext", "kms:Generate*", "kms:GenerateDataKeyWithoutPlaintext", Allowed),
        action("action: kms:?ncrypt matches Encrypt", "kms:?ncrypt", "kms:Encrypt", Allowed),
        action("action: kms:?ncrypt does not match Decrypt", "kms:?ncrypt", "kms:Decrypt", ImplicitDeny),
        action("action: kms:??crypt matches Decrypt", "kms:??crypt", "kms:Decrypt", Allowed),
        action("action: kms:???crypt does not match Decrypt", "kms:???crypt", "kms:Decrypt", ImplicitDeny),
        action("action: KMS:ENCRYPT matches kms:Encrypt (case-insensitive)", "KMS:ENCRYPT", "kms:Encrypt", Allowed),
        action("action: kms:encrypt matches kms:Encrypt (case-insensitive)", "kms:encrypt", "kms:Encrypt", Allowed),
        action("action: kms:DESCRIBE* matches DescribeKey", "kms:DESCRIBE*", "kms:DescribeKey", Allowed),
        action("action: kms:Re?ncrypt* matches ReEncryptTo", "kms:Re?ncrypt*", "kms:ReEncryptTo", Allowed),
        action("action: kms:Encrypt does not match kms:ReEncryptFrom", "kms:Encrypt", "kms:ReEncryptFrom", ImplicitDeny),
        action("action: kms:* does not match iam:CreateUser", "kms:*", "iam:CreateUser", ImplicitDeny),
        action("action: iam:Create* matches iam:CreateUser", "iam:Create*", "iam:CreateUser", Allowed),
        Case {
            name: "action: key-policy kms:*crypt* matches Decrypt",
            key_policy: Some(alice_crypt),
            identity: Some(vec![]),
            action: "kms:Decrypt",
            expected: allowed(KP, "AliceCrypt"),
            ..BASE
        },
        Case {
            name: "action: key-policy kms:*crypt* matches ReEncryptFrom",
            key_policy: Some(alice_crypt),
            identity: Some(vec![]),
            action: "kms:ReEncryptFrom",
            expected: allowed(KP, "AliceCrypt"),
            ..BASE
        },
        Case {
            name: "action: key-policy kms:*crypt* does not match GenerateDataKey",
            key_policy: Some(alice_crypt),
            identity: Some(vec![]),
            action: "kms:GenerateDataKey",
            expected: IMPLICIT,
            ..BASE
        },
        resource("resource: key/* in the key's region", "arn:aws:kms:us-east-1:111122223333:key/*", Allowed),
        resource("resource: * region wildcard", "arn:aws:kms:*:111122223333:key/*", Allowed),
        resource("resource: other region", "arn:aws:kms:us-west-2:111122223333:key/*", ImplicitDeny),
        resource("resource: key id in upper case does not match (case-sensitive)", "arn:aws:kms:us-east-1:111122223333:key/1234ABCD-12AB-34CD-56EF-1234567890AB", ImplicitDeny),
        resource("resource: trailing ? matches one character", "arn:aws:kms:us-east-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890a?", Allowed),
        resource("resource: ???? and * inside the key id", "arn:aws:kms:us-east-1:111122223333:key/1234abcd-????-34cd-*", Allowed),
        resource("resource: extra ? needs one more character", "arn:aws:kms:us-east-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab?", ImplicitDeny),
        resource("resource: alias/* does not match a key ARN", "arn:aws:kms:us-east-1:111122223333:alias/*", ImplicitDeny),
        resource("resource: upper-case ARN prefix does not match", "ARN:AWS:KMS:*", ImplicitDeny),
        resource("resource: another account's keys", "arn:aws:kms:us-east-1:444455556666:key/*", ImplicitDeny),
        resource("resource: exact key ARN", KEY, Allowed),
        Case {
            name: "resource: list of resources, second matches",
            key_policy: Some(KP_DEFAULT),
            identity: Some(vec![(P_USER, two_resources)]),
            expected: allowed(P_USER, "Res"),
            ..BASE
        },
    ]
}

/// NotAction and NotResource, in Allow and in Deny, in identity and key policies.
fn not_action_resource_cases() -> Vec<Case> {
    let all_but_deletion = doc(&[
        r#"{"Sid":"AllButDeletion","Effect":"Allow","NotAction":"kms:ScheduleKeyDeletion","Resource":"*"}"#,
    ]);
    let all_but_deletion_upper = doc(&[
        r#"{"Sid":"AllButDeletion","Effect":"Allow","NotAction":"KMS:SCHEDULEKEYDELETION","Resource":"*"}"#,
    ]);
    let not_schedule_disable = doc(&[
        r#"{"Sid":"NoScheduleNoDisable","Effect":"Allow","NotAction":["kms:Schedule*","kms:Disable*"],"Resource":"*"}"#,
    ]);
    let not_other_key = doc(&[&format!(
        r#"{{"Sid":"NotOtherKey","Effect":"Allow","Action":"kms:*","NotResource":"{OTHER_KEY}"}}"#
    )]);
    let only_this_key = doc(&[
        r#"{"Sid":"KmsAll","Effect":"Allow","Action":"kms:*","Resource":"*"}"#,
        &format!(
            r#"{{"Sid":"OnlyThisKey","Effect":"Deny","Action":"kms:*","NotResource":"{KEY}"}}"#
        ),
    ]);
    let not_resource_wildcard = doc(&[
        r#"{"Sid":"NotOtherPrefix","Effect":"Allow","Action":"kms:*","NotResource":"arn:aws:kms:*:*:key/0987*"}"#,
    ]);
    let deny_not_action_alice = doc(&[
        ROOT_STMT,
        r#"{"Sid":"AliceCryptoOnly","Effect":"Deny","Principal":{"AWS":"arn:aws:iam::111122223333:user/alice"},"NotAction":["kms:Encrypt","kms:Decrypt"],"Resource":"*"}"#,
    ]);
    let alice_not_action = doc(&[
        r#"{"Sid":"AliceAllButDelete","Effect":"Allow","Principal":{"AWS":"arn:aws:iam::111122223333:user/alice"},"NotAction":"kms:ScheduleKeyDeletion","Resource":"*"}"#,
    ]);
    let deny_not_resource = doc(&[
        ROOT_STMT,
        r#"{"Sid":"OnlyThisKeyFamily","Effect":"Deny","Principal":"*","Action":"kms:*","NotResource":"arn:aws:kms:*:111122223333:key/1234abcd-*"}"#,
    ]);

    vec![
        Case {
            name: "NotAction: Allow all but deletion allows Encrypt",
            key_policy: Some(KP_DEFAULT),
            identity: Some(vec![(P_USER, all_but_deletion)]),
            action: "kms:Encrypt",
            expected: allowed(P_USER, "AllButDeletion"),
            ..BASE
        },
        Case {
            name: "NotAction: Allow all but deletion does not allow ScheduleKeyDeletion",
            key_policy: Some(KP_DEFAULT),
            identity: Some(vec![(P_USER, all_but_deletion)]),
            action: "kms:ScheduleKeyDeletion",
            expected: IMPLICIT,
            ..BASE
        },
        Case {
            name: "NotAction: matched case-insensitively",
            key_policy: Some(KP_DEFAULT),
            identity: Some(vec![(P_USER, all_but_deletion_upper)]),
            action: "kms:ScheduleKeyDeletion",
            expected: IMPLICIT,
            ..BASE
        },
        Case {
            name: "NotAction: wildcard list excludes DisableKey",
            key_policy: Some(KP_DEFAULT),
            identity: Some(vec![(P_USER, not_schedule_disable)]),
            action: "kms:DisableKey",
            expected: IMPLICIT,
            ..BASE
        },
        Case {
            name: "NotAction: wildcard list allows EnableKey",
            key_policy: Some(KP_DEFAULT),
            identity: Some(vec![(P_USER, not_schedule_disable)]),
            action: "kms:EnableKey",
            expected: allowed(P_USER, "NoScheduleNoDisable"),
            ..BASE
        },
        Case {
            name: "NotResource: Allow on everything but the other key, request on KEY",
            key_policy: Some(KP_DEFAULT),
            identity: Some(vec![(P_USER, not_other_key)]),
            expected: allowed(P_USER, "NotOtherKey"),
            ..BASE
        },
        Case {
            name: "NotResource: Allow on everything but the other key, request on it",
            key_policy: Some(KP_DEFAULT),
            identity: Some(vec![(P_USER, not_other_key)]),
            resource: OTHER_KEY,
            expected: IMPLICIT,
            ..BASE
        },
        Case {
            name: "NotResource: Deny outside KEY refuses the other key",
            key_policy: Some(KP_DEFAULT),
            identity: Some(vec![(P_USER, only_this_key)]),
            resource: OTHER_KEY,
            expected: denied(P_USER, "OnlyThisKey"),
            ..BASE
        },
        Case {
            name: "NotResource: Deny outside KEY leaves KEY allowed",
            key_policy: Some(KP_DEFAULT),
            identity: Some(vec![(P_USER, only_this_key)]),
            resource: KEY,
            expected: allowed(P_USER, "KmsAll"),
            ..BASE
        },
        Case {
            name: "NotResource: wildcard exclusion does not cover KEY",
            key_policy: Some(KP_DEFAULT),
            identity: Some(vec![(P_USER, not_resource_wildcard)]),
            expected: allowed(P_USER, "NotOtherPrefix"),
            ..BASE
        },
        Case {
            name: "NotResource: wildcard exclusion covers the other key",
            key_policy: Some(KP_DEFAULT),
            identity: Some(vec![(P_USER, not_resource_wildcard)]),
            resource: OTHER_KEY,
            expected: IMPLICIT,
            ..BASE
        },
        Case {
            name: "NotAction: key-policy Deny for alice outside Encrypt/Decrypt",
            key_policy: Some(deny_not_action_alice),
            identity: Some(vec![(P_USER, ID_KMS_ALL)]),
            action: "kms:ScheduleKeyDeletion",
            expected: denied(KP, "AliceCryptoOnly"),
            ..BASE
        },
        Case {
            name: "NotAction: key-policy Deny for alice leaves Encrypt to delegation",
            key_policy: Some(deny_not_action_alice),
            identity: Some(vec![(P_USER, ID_KMS_ALL)]),
            action: "kms:Encrypt",
            expected: allowed(P_USER, "KmsAll"),
            ..BASE
        },
        Case {
            name: "NotAction: key-policy Deny for alice does not touch bob",
            key_policy: Some(deny_not_action_alice),
            identity: Some(vec![(P_BOB, ID_KMS_ALL)]),
            principals: BOB,
            action: "kms:ScheduleKeyDeletion",
            expected: allowed(P_BOB, "KmsAll"),
            ..BASE
        },
        Case {
            name: "NotAction: key policy allows alice all but deletion (Encrypt)",
            key_policy: Some(alice_not_action),
            identity: Some(vec![]),
            action: "kms:Encrypt",
            expected: allowed(KP, "AliceAllButDelete"),
            ..BASE
        },
        Case {
            name: "NotAction: key policy allows alice all but deletion (ScheduleKeyDeletion)",
            key_policy: Some(alice_not_action),
            identity: Some(vec![]),
            action: "kms:ScheduleKeyDeletion",
            expected: IMPLICIT,
            ..BASE
        },
        Case {
            name: "NotResource: key-policy Deny does not apply to a matching key",
            key_policy: Some(deny_not_resource),
            identity: Some(vec![(P_USER, ID_KMS_ALL)]),
            resource: KEY,
            expected: allowed(P_USER, "KmsAll"),
            ..BASE
        },
        Case {
            name: "NotResource: key-policy Deny applies outside the listed keys",
            key_policy: Some(deny_not_resource),
            identity: Some(vec![(P_USER, ID_KMS_ALL)]),
            resource: OTHER_KEY,
            expected: denied(KP, "OnlyThisKeyFamily"),
            ..BASE
        },
    ]
}

/// The Principal element: `*`, `{"AWS": "*"}`, lists, ARNs with wildcards, users vs roles.
fn principal_cases() -> Vec<Case> {
    let anyone = doc(&[
        r#"{"Sid":"AnyoneEncrypt","Effect":"Allow","Principal":"*","Action":"kms:Encrypt","Resource":"*"}"#,
    ]);
    let anyone_in_account = doc(&[
        r#"{"Sid":"AnyoneInAccount","Effect":"Allow","Principal":{"AWS":"*"},"Action":"kms:*","Resource":"*","Condition":{"StringEquals":{"kms:CallerAccount":"111122223333"}}}"#,
    ]);
    let listed = doc(&[
        r#"{"Sid":"Listed","Effect":"Allow","Principal":{"AWS":["arn:aws:iam::111122223333:user/bob","arn:aws:iam::111122223333:user/alice"]},"Action":"kms:Decrypt","Resource":"*"}"#,
    ]);
    let all_users = doc(&[
        r#"{"Sid":"AllUsers","Effect":"Allow","Principal":{"AWS":"arn:aws:iam::111122223333:user/*"},"Action":"kms:Encrypt","Resource":"*"}"#,
    ]);
    let three_letter_ob = doc(&[
        r#"{"Sid":"ThreeLetterOb","Effect":"Allow","Principal":{"AWS":"arn:aws:iam::111122223333:user/?ob"},"Action":"kms:Encrypt","Resource":"*"}"#,
    ]);
    let any_app_session = doc(&[
        r#"{"Sid":"AnyAppSession","Effect":"Allow","Principal":{"AWS":"arn:aws:sts::111122223333:assumed-role/app/*"},"Action":"kms:Encrypt","Resource":"*"}"#,
    ]);
    let alice_only = doc(&[
        r#"{"Sid":"AliceUse","Effect":"Allow","Principal":{"AWS":"arn:aws:iam::111122223333:user/alice"},"Action":["kms:Encrypt","kms:Decrypt"],"Resource":"*"}"#,
    ]);
    let principal_arn_alice = doc(&[
        r#"{"Sid":"ByPrincipalArn","Effect":"Allow","Principal":"*","Action":"kms:*","Resource":"*","Condition":{"StringEquals":{"aws:PrincipalArn":"arn:aws:iam::111122223333:user/alice"}}}"#,
    ]);

    vec![
        Case {
            name: "principal *: alice allowed without identity policy",
            key_policy: Some(anyone),
            identity: Some(vec![]),
            principals: ALICE,
            expected: allowed(KP, "AnyoneEncrypt"),
            ..BASE
        },
        Case {
            name: "principal *: bob allowed",
            key_policy: Some(anyone),
            identity: Some(vec![]),
            principals: BOB,
            expected: allowed(KP, "AnyoneEncrypt"),
            ..BASE
        },
        Case {
            name: "principal *: assumed-role session allowed",
            key_policy: Some(anyone),
            identity: Some(vec![]),
            principals: SESSION,
            expected: allowed(KP, "AnyoneEncrypt"),
            ..BASE
        },
        Case {
            name: "principal *: root allowed",
            key_policy: Some(anyone),
            identity: None,
            principals: ROOT,
            expected: allowed(KP, "AnyoneEncrypt"),
            ..BASE
        },
        Case {
            name: "principal *: only the listed action",
            key_policy: Some(anyone),
            identity: Some(vec![(P_USER, ID_KMS_ALL)]),
            action: "kms:Decrypt",
            expected: IMPLICIT,
            ..BASE
        },
        Case {
            name: "principal {AWS:*} with kms:CallerAccount of this account",
            key_policy: Some(anyone_in_account),
            identity: Some(vec![]),
            context: &[("kms:CallerAccount", &["111122223333"])],
            expected: allowed(KP, "AnyoneInAccount"),
            ..BASE
        },
        Case {
            name: "principal {AWS:*} with kms:CallerAccount of another account",
            key_policy: Some(anyone_in_account),
            identity: Some(vec![]),
            context: &[("kms:CallerAccount", &["444455556666"])],
            expected: IMPLICIT,
            ..BASE
        },
        Case {
            name: "principal {AWS:*} with kms:CallerAccount missing",
            key_policy: Some(anyone_in_account),
            identity: Some(vec![]),
            context: &[],
            expected: IMPLICIT,
            ..BASE
        },
        Case {
            name: "principal {AWS:*} covers an assumed-role session of the account",
            key_policy: Some(anyone_in_account),
            identity: Some(vec![]),
            principals: SESSION,
            context: &[("kms:CallerAccount", &["111122223333"])],
            expected: allowed(KP, "AnyoneInAccount"),
            ..BASE
        },
        Case {
            name: "principal list: second entry matches alice",
            key_policy: Some(listed),
            identity: Some(vec![]),
            action: "kms:Decrypt",
            expected: allowed(KP, "Listed"),
            ..BASE
        },
        Case {
            name: "principal list: first entry matches bob",
            key_policy: Some(listed),
            identity: Some(vec![]),
            principals: BOB,
            action: "kms:Decrypt",
            expected: allowed(KP, "Listed"),
            ..BASE
        },
        Case {
            name: "principal list: session not listed",
            key_policy: Some(listed),
            identity: Some(vec![(P_ROLE, ID_KMS_ALL)]),
            principals: SESSION,
            action: "kms:Decrypt",
            expected: IMPLICIT,
            ..BASE
        },
        Case {
            name: "principal wildcard user/*: alice",
            key_policy: Some(all_users),
            identity: Some(vec![]),
            expected: allowed(KP, "AllUsers"),
            ..BASE
        },
        Case {
            name: "principal wildcard user/*: a role session does not match",
            key_policy: Some(all_users),
            identity: Some(vec![]),
            principals: SESSION,
            expected: IMPLICIT,
            ..BASE
        },
        Case {
            name: "principal wildcard user/?ob: bob",
            key_policy: Some(three_letter_ob),
            identity: Some(vec![]),
            principals: BOB,
            expected: allowed(KP, "ThreeLetterOb"),
            ..BASE
        },
        Case {
            name: "principal wildcard user/?ob: not alice",
            key_policy: Some(three_letter_ob),
            identity: Some(vec![]),
            principals: ALICE,
            expected: IMPLICIT,
            ..BASE
        },
        Case {
            name: "principal wildcard assumed-role/app/*: session",
            key_policy: Some(any_app_session),
            identity: Some(vec![]),
            principals: SESSION,
            expected: allowed(KP, "AnyAppSession"),
            ..BASE
        },
        Case {
            name: "principal wildcard assumed-role/app/*: not alice",
            key_policy: Some(any_app_session),
            identity: Some(vec![]),
            principals: ALICE,
            expected: IMPLICIT,
            ..BASE
        },
        Case {
            name: "principal user ARN does not match a role session",
            key_policy: Some(alice_only),
            identity: Some(vec![(P_ROLE, ID_KMS_ALL)]),
            principals: SESSION,
            expected: IMPLICIT,
            ..BASE
        },
        Case {
            name: "aws:PrincipalArn condition under Principal *: alice",
            key_policy: Some(principal_arn_alice),
            identity: Some(vec![]),
            context: &[("aws:PrincipalArn", &[ALICE_ARN])],
            expected: allowed(KP, "ByPrincipalArn"),
            ..BASE
        },
        Case {
            name: "aws:PrincipalArn condition under Principal *: bob",
            key_policy: Some(principal_arn_alice),
            identity: Some(vec![]),
            principals: BOB,
            context: &[("aws:PrincipalArn", &[BOB_ARN])],
            expected: IMPLICIT,
            ..BASE
        },
    ]
}

/// Every condition operator, positive, negative and with the key missing.
#[rustfmt::skip]
fn operator_cases() -> Vec<Case> {
    vec![
        // StringEquals
        cond("StringEquals: match", r#"{"StringEquals":{"kms:CallerAccount":"111122223333"}}"#, &[("kms:CallerAccount", &["111122223333"])], Allowed),
        cond("StringEquals: mismatch", r#"{"StringEquals":{"kms:CallerAccount":"111122223333"}}"#, &[("kms:CallerAccount", &["444455556666"])], ImplicitDeny),
        cond("StringEquals: key missing", r#"{"StringEquals":{"kms:CallerAccount":"111122223333"}}"#, &[], ImplicitDeny),
        cond("StringEquals: values are ORed", r#"{"StringEquals":{"kms:CallerAccount":["444455556666","111122223333"]}}"#, &[("kms:CallerAccount", &["111122223333"])], Allowed),
        cond("StringEquals: values are case-sensitive", r#"{"StringEquals":{"kms:EncryptionContext:Tenant":"Blue"}}"#, &[("kms:EncryptionContext:Tenant", &["blue"])], ImplicitDeny),
        cond("StringEquals: JSON number value in the policy", r#"{"StringEquals":{"kms:CallerAccount":111122223333}}"#, &[("kms:CallerAccount", &["111122223333"])], Allowed),
        cond("StringEquals: * is literal", r#"{"StringEquals":{"kms:CallerAccount":"1111*"}}"#, &[("kms:CallerAccount", &["111122223333"])], ImplicitDeny),
        // StringNotEquals
        cond("StringNotEquals: different value", r#"{"StringNotEquals":{"kms:CallerAccount":"444455556666"}}"#, &[("kms:CallerAccount", &["111122223333"])], Allowed),
        cond("StringNotEquals: equal value", r#"{"StringNotEquals":{"kms:CallerAccount":"444455556666"}}"#, &[("kms:CallerAccount", &["444455556666"])], ImplicitDeny),
        cond("StringNotEquals: key missing is true", r#"{"StringNotEquals":{"kms:CallerAccount":"444455556666"}}"#, &[], Allowed),
        cond("StringNotEquals: equal to one of the values", r#"{"StringNotEquals":{"kms:EncryptionContext:Tenant":["red","blue"]}}"#, &[("kms:EncryptionContext:Tenant", &["blue"])], ImplicitDeny),
        cond("StringNotEquals: equal to none of the values", r#"{"StringNotEquals":{"kms:EncryptionContext:Tenant":["red","blue"]}}"#, &[("kms:EncryptionContext:Tenant", &["green"])], Allowed),
        // StringEqualsIgnoreCase
        cond("StringEqualsIgnoreCase: differs only by case", r#"{"StringEqualsIgnoreCase":{"kms:EncryptionContext:Tenant":"BLUE"}}"#, &[("kms:EncryptionContext:Tenant", &["blue"])], Allowed),
        cond("StringEqualsIgnoreCase: different value", r#"{"StringEqualsIgnoreCase":{"kms:EncryptionContext:Tenant":"BLUE"}}"#, &[("kms:EncryptionContext:Tenant", &["green"])], ImplicitDeny),
        cond("StringEqualsIgnoreCase: key missing", r#"{"StringEqualsIgnoreCase":{"kms:EncryptionContext:Tenant":"BLUE"}}"#, &[], ImplicitDeny),
        cond("StringEqualsIgnoreCase: values are ORed", r#"{"StringEqualsIgnoreCase":{"kms:EncryptionContext:Tenant":["red","Blue"]}}"#, &[("kms:EncryptionContext:Tenant", &["BLUE"])], Allowed),
        // StringNotEqualsIgnoreCase
        cond("StringNotEqualsIgnoreCase: differs only by case", r#"{"StringNotEqualsIgnoreCase":{"kms:EncryptionContext:Tenant":"BLUE"}}"#, &[("kms:EncryptionContext:Tenant", &["blue"])], ImplicitDeny),
        cond("StringNotEqualsIgnoreCase: different value", r#"{"StringNotEqualsIgnoreCase":{"kms:EncryptionContext:Tenant":"BLUE"}}"#, &[("kms:EncryptionContext:Tenant", &["green"])], Allowed),
        cond("StringNotEqualsIgnoreCase: key missing is true", r#"{"StringNotEqualsIgnoreCase":{"kms:EncryptionContext:Tenant":"BLUE"}}"#, &[], Allowed),
        // StringLike
        cond("StringLike: user/* matches alice", r#"{"StringLike":{"aws:PrincipalArn":"arn:aws:iam::111122223333:user/*"}}"#, &[("aws:PrincipalArn", &[ALICE_ARN])], Allowed),
        cond("StringLike: user/* does not match a role", r#"{"StringLike":{"aws:PrincipalArn":"arn:aws:iam::111122223333:user/*"}}"#, &[("aws:PrincipalArn", &[ROLE_ARN])], ImplicitDeny),
        cond("StringLike: ? matches one character", r#"{"StringLike":{"aws:PrincipalArn":"arn:aws:iam::111122223333:user/?lice"}}"#, &[("aws:PrincipalArn", &[ALICE_ARN])], Allowed),
        cond("StringLike: case-sensitive", r#"{"StringLike":{"aws:PrincipalArn":"arn:aws:iam::111122223333:user/A*"}}"#, &[("aws:PrincipalArn", &[ALICE_ARN])], ImplicitDeny),
        cond("StringLike: key missing", r#"{"StringLike":{"aws:PrincipalArn":"arn:aws:iam::111122223333:user/*"}}"#, &[], ImplicitDeny),
        cond("StringLike: values are ORed", r#"{"StringLike":{"aws:PrincipalArn":["*:role/*","*:user/alice"]}}"#, &[("aws:PrincipalArn", &[ALICE_ARN])], Allowed),
        // StringNotLike
        cond("StringNotLike: user does not match role/*", r#"{"StringNotLike":{"aws:PrincipalArn":"arn:aws:iam::*:role/*"}}"#, &[("aws:PrincipalArn", &[ALICE_ARN])], Allowed),
        cond("StringNotLike: role matches role/*", r#"{"StringNotLike":{"aws:PrincipalArn":"arn:aws:iam::*:role/*"}}"#, &[("aws:PrincipalArn", &[ROLE_ARN])], ImplicitDeny),
        cond("StringNotLike: key missing is true", r#"{"StringNotLike":{"aws:PrincipalArn":"arn:aws:iam::*:role/*"}}"#, &[], Allowed),
        cond("StringNotLike: matches one of the values", r#"{"StringNotLike":{"aws:PrincipalArn":["*:role/*","*:user/a*"]}}"#, &[("aws:PrincipalArn", &[ALICE_ARN])], ImplicitDeny),
        cond("StringNotLike: matches none of the values", r#"{"StringNotLike":{"aws:PrincipalArn":["*:role/*","*:user/a*"]}}"#, &[("aws:PrincipalArn", &[BOB_ARN])], Allowed),
        // Bool
        cond("Bool: true", r#"{"Bool":{"aws:SecureTransport":"true"}}"#, &[("aws:SecureTransport", &["true"])], Allowed),
        cond("Bool: false", r#"{"Bool":{"aws:SecureTransport":"true"}}"#, &[("aws:SecureTransport", &["false"])], ImplicitDeny),
        cond("Bool: key missing", r#"{"Bool":{"aws:SecureTransport":"true"}}"#, &[], ImplicitDeny),
        cond("Bool: JSON boolean in the policy", r#"{"Bool":{"aws:SecureTransport":true}}"#, &[("aws:SecureTransport", &["true"])], Allowed),
        // DateEquals
        cond("DateEquals: same instant", r#"{"DateEquals":{"aws:CurrentTime":"2024-06-01T12:00:00Z"}}"#, &[("aws:CurrentTime", &[NOW])], Allowed),
        cond("DateEquals: one second later", r#"{"DateEquals":{"aws:CurrentTime":"2024-06-01T12:00:01Z"}}"#, &[("aws:CurrentTime", &[NOW])], ImplicitDeny),
        cond("DateEquals: same instant with an offset", r#"{"DateEquals":{"aws:CurrentTime":"2024-06-01T14:00:00+02:00"}}"#, &[("aws:CurrentTime", &[NOW])], Allowed),
        cond("DateEquals: key missing", r#"{"DateEquals":{"aws:CurrentTime":"2024-06-01T12:00:00Z"}}"#, &[], ImplicitDeny),
        // DateLessThan
        cond("DateLessThan: before the limit", r#"{"DateLessThan":{"aws:CurrentTime":"2025-01-01T00:00:00Z"}}"#, &[("aws:CurrentTime", &[NOW])], Allowed),
        cond("DateLessThan: after the limit", r#"{"DateLessThan":{"aws:CurrentTime":"2024-01-01T00:00:00Z"}}"#, &[("aws:CurrentTime", &[NOW])], ImplicitDeny),
        cond("DateLessThan: at the limit (strict)", r#"{"DateLessThan":{"aws:CurrentTime":"2024-06-01T12:00:00Z"}}"#, &[("aws:CurrentTime", &[NOW])], ImplicitDeny),
        cond("DateLessThan: key missing", r#"{"DateLessThan":{"aws:CurrentTime":"2025-01-01T00:00:00Z"}}"#, &[], ImplicitDeny),
        // Fractions of a second count.
        cond("DateLessThan: half a second before the limit (sub-second precision)", r#"{"DateLessThan":{"aws:CurrentTime":"2024-06-01T12:00:00.500Z"}}"#, &[("aws:CurrentTime", &[NOW])], Allowed),
        cond("DateLessThanEquals: half a second past the limit (sub-second precision)", r#"{"DateLessThanEquals":{"aws:CurrentTime":"2024-06-01T12:00:00Z"}}"#, &[("aws:CurrentTime", &["2024-06-01T12:00:00.500Z"])], ImplicitDeny),
        cond("DateEquals: half a second apart (sub-second precision)", r#"{"DateEquals":{"aws:CurrentTime":"2024-06-01T12:00:00Z"}}"#, &[("aws:CurrentTime", &["2024-06-01T12:00:00.500Z"])], ImplicitDeny),
        cond("DateEquals: epoch seconds in the request", r#"{"DateEquals":{"aws:CurrentTime":"2024-06-01T12:00:00Z"}}"#, &[("aws:CurrentTime", &["1717243200"])], Allowed),
        // DateLessThanEquals
        cond("DateLessThanEquals: at the limit", r#"{"DateLessThanEquals":{"aws:CurrentTime":"2024-06-01T12:00:00Z"}}"#, &[("aws:CurrentTime", &[NOW])], Allowed),
        cond("DateLessThanEquals: one second after the limit", r#"{"DateLessThanEquals":{"aws:CurrentTime":"2024-06-01T11:59:59Z"}}"#, &[("aws:CurrentTime", &[NOW])], ImplicitDeny),
        cond("DateLessThanEquals: key missing", r#"{"DateLessThanEquals":{"aws:CurrentTime":"2024-06-01T12:00:00Z"}}"#, &[], ImplicitDeny),
        // DateGreaterThan
        cond("DateGreaterThan: after the start", r#"{"DateGreaterThan":{"aws:CurrentTime":"2024-01-01T00:00:00Z"}}"#, &[("aws:CurrentTime", &[NOW])], Allowed),
        cond("DateGreaterThan: at the start (strict)", r#"{"DateGreaterThan":{"aws:CurrentTime":"2024-06-01T12:00:00Z"}}"#, &[("aws:CurrentTime", &[NOW])], ImplicitDeny),
        cond("DateGreaterThan: before the start", r#"{"DateGreaterThan":{"aws:CurrentTime":"2024-12-31T23:59:59Z"}}"#, &[("aws:CurrentTime", &[NOW])], ImplicitDeny),
        cond("DateGreaterThan: epoch seconds in the policy", r#"{"DateGreaterThan":{"aws:CurrentTime":1700000000}}"#, &[("aws:CurrentTime", &[NOW])], Allowed),
        cond("DateGreaterThan: half a second after the start (sub-second precision)", r#"{"DateGreaterThan":{"aws:CurrentTime":"2024-06-01T12:00:00Z"}}"#, &[("aws:CurrentTime", &["2024-06-01T12:00:00.500Z"])], Allowed),
        // DateGreaterThanEquals
        cond("DateGreaterThanEquals: at the start", r#"{"DateGreaterThanEquals":{"aws:CurrentTime":"2024-06-01T12:00:00Z"}}"#, &[("aws:CurrentTime", &[NOW])], Allowed),
        cond("DateGreaterThanEquals: one second before the start", r#"{"DateGreaterThanEquals":{"aws:CurrentTime":"2024-06-01T12:00:01Z"}}"#, &[("aws:CurrentTime", &[NOW])], ImplicitDeny),
        cond("DateGreaterThanEquals: bare date is midnight UTC", r#"{"DateGreaterThanEquals":{"aws:CurrentTime":"2024-06-01"}}"#, &[("aws:CurrentTime", &[NOW])], Allowed),
        cond("DateGreaterThanEquals: key missing", r#"{"DateGreaterThanEquals":{"aws:CurrentTime":"2024-01-01T00:00:00Z"}}"#, &[], ImplicitDeny),
        cond("Date window: inside", r#"{"DateGreaterThan":{"aws:CurrentTime":"2024-01-01T00:00:00Z"},"DateLessThan":{"aws:CurrentTime":"2025-01-01T00:00:00Z"}}"#, &[("aws:CurrentTime", &[NOW])], Allowed),
        cond("Date window: after", r#"{"DateGreaterThan":{"aws:CurrentTime":"2024-01-01T00:00:00Z"},"DateLessThan":{"aws:CurrentTime":"2025-01-01T00:00:00Z"}}"#, &[("aws:CurrentTime", &["2025-06-01T00:00:00Z"])], ImplicitDeny),
        // IpAddress
        cond("IpAddress: inside 10.0.0.0/8", r#"{"IpAddress":{"aws:SourceIp":"10.0.0.0/8"}}"#, &[("aws:SourceIp", &["10.1.2.3"])], Allowed),
        cond("IpAddress: outside 10.0.0.0/8", r#"{"IpAddress":{"aws:SourceIp":"10.0.0.0/8"}}"#, &[("aws:SourceIp", &["192.168.1.1"])], ImplicitDeny),
        cond("IpAddress: key missing", r#"{"IpAddress":{"aws:SourceIp":"10.0.0.0/8"}}"#, &[], ImplicitDeny),
        cond("IpAddress: CIDRs are ORed", r#"{"IpAddress":{"aws:SourceIp":["192.168.0.0/16","10.0.0.0/8"]}}"#, &[("aws:SourceIp", &["192.168.5.5"])], Allowed),
        cond("IpAddress: single address", r#"{"IpAddress":{"aws:SourceIp":"203.0.113.7"}}"#, &[("aws:SourceIp", &["203.0.113.7"])], Allowed),
        cond("IpAddress: single address, neighbour", r#"{"IpAddress":{"aws:SourceIp":"203.0.113.7"}}"#, &[("aws:SourceIp", &["203.0.113.8"])], ImplicitDeny),
        cond("IpAddress: /25 last address inside", r#"{"IpAddress":{"aws:SourceIp":"203.0.113.0/25"}}"#, &[("aws:SourceIp", &["203.0.113.127"])], Allowed),
        cond("IpAddress: /25 first address outside", r#"{"IpAddress":{"aws:SourceIp":"203.0.113.0/25"}}"#, &[("aws:SourceIp", &["203.0.113.128"])], ImplicitDeny),
        cond("IpAddress: 0.0.0.0/0 matches any IPv4", r#"{"IpAddress":{"aws:SourceIp":"0.0.0.0/0"}}"#, &[("aws:SourceIp", &["198.51.100.7"])], Allowed),
        cond("IpAddress: IPv6 inside 2001:db8::/32", r#"{"IpAddress":{"aws:SourceIp":"2001:db8::/32"}}"#, &[("aws:SourceIp", &["2001:db8:abcd::1"])], Allowed),
        cond("IpAddress: IPv6 outside 2001:db8::/32", r#"{"IpAddress":{"aws:SourceIp":"2001:db8::/32"}}"#, &[("aws:SourceIp", &["2001:db9::1"])], ImplicitDeny),
        cond("IpAddress: IPv6 /64 boundary", r#"{"IpAddress":{"aws:SourceIp":"2001:db8:1:2::/64"}}"#, &[("aws:SourceIp", &["2001:db8:1:3::1"])], ImplicitDeny),
        cond("IpAddress: IPv6 /128 in uncompressed form", r#"{"IpAddress":{"aws:SourceIp":"2001:db8::42/128"}}"#, &[("aws:SourceIp", &["2001:0db8:0000:0000:0000:0000:0000:0042"])], Allowed),
        cond("IpAddress: IPv6 request vs IPv4 CIDR", r#"{"IpAddress":{"aws:SourceIp":"10.0.0.0/8"}}"#, &[("aws:SourceIp", &["2001:db8::1"])], ImplicitDeny),
        cond("IpAddress: IPv4 request vs IPv6 CIDR", r#"{"IpAddress":{"aws:SourceIp":"2001:db8::/32"}}"#, &[("aws:SourceIp", &["10.1.2.3"])], ImplicitDeny),
        // NotIpAddress in an Allow
        cond("NotIpAddress: outside the excluded range", r#"{"NotIpAddress":{"aws:SourceIp":"192.0.2.0/24"}}"#, &[("aws:SourceIp", &["198.51.100.1"])], Allowed),
        cond("NotIpAddress: inside the excluded range", r#"{"NotIpAddress":{"aws:SourceIp":"192.0.2.0/24"}}"#, &[("aws:SourceIp", &["192.0.2.9"])], ImplicitDeny),
        cond("NotIpAddress: key missing is true", r#"{"NotIpAddress":{"aws:SourceIp":"192.0.2.0/24"}}"#, &[], Allowed),
        cond("NotIpAddress: IPv6 inside the excluded range", r#"{"NotIpAddress":{"aws:SourceIp":"2001:db8::/32"}}"#, &[("aws:SourceIp", &["2001:db8::1"])], ImplicitDeny),
        cond("NotIpAddress: IPv6 outside the excluded range", r#"{"NotIpAddress":{"aws:SourceIp":"2001:db8::/32"}}"#, &[("aws:SourceIp", &["2001:db9::1"])], Allowed),
        // NotIpAddress in a Deny (the classic network guard)
        guard("NotIpAddress guard: IPv4 inside the network", r#"{"NotIpAddress":{"aws:SourceIp":["10.0.0.0/8","2001:db8::/32"]}}"#, &[("aws:SourceIp", &["10.1.2.3"])], Allowed),
        guard("NotIpAddress guard: IPv4 outside the network", r#"{"NotIpAddress":{"aws:SourceIp":["10.0.0.0/8","2001:db8::/32"]}}"#, &[("aws:SourceIp", &["8.8.8.8"])], ExplicitDeny),
        guard("NotIpAddress guard: source address missing", r#"{"NotIpAddress":{"aws:SourceIp":["10.0.0.0/8","2001:db8::/32"]}}"#, &[], ExplicitDeny),
        guard("NotIpAddress guard: IPv6 inside the network", r#"{"NotIpAddress":{"aws:SourceIp":["10.0.0.0/8","2001:db8::/32"]}}"#, &[("aws:SourceIp", &["2001:db8::5"])], Allowed),
        guard("NotIpAddress guard: IPv6 outside the network", r#"{"NotIpAddress":{"aws:SourceIp":["10.0.0.0/8","2001:db8::/32"]}}"#, &[("aws:SourceIp", &["2001:db9::5"])], ExplicitDeny),
        // Null
        cond("Null true: key absent", r#"{"Null":{"kms:ViaService":"true"}}"#, &[], Allowed),
        cond("Null true: key present", r#"{"Null":{"kms:ViaService":"true"}}"#, &[("kms:ViaService", &[EC2])], ImplicitDeny),
        cond("Null false: key present", r#"{"Null":{"kms:ViaService":"false"}}"#, &[("kms:ViaService", &[EC2])], Allowed),
        cond("Null false: key absent", r#"{"Null":{"kms:ViaService":"false"}}"#, &[], ImplicitDeny),
        cond("Null true on an encryption-context key that is present", r#"{"Null":{"kms:EncryptionContext:Tenant":"true"}}"#, &[("kms:EncryptionContext:Tenant", &["blue"])], ImplicitDeny),
        guard("Null guard: Deny when the encryption context lacks Tenant", r#"{"Null":{"kms:EncryptionContext:Tenant":"true"}}"#, &[], ExplicitDeny),
        guard("Null guard: Tenant given", r#"{"Null":{"kms:EncryptionContext:Tenant":"true"}}"#, &[("kms:EncryptionContext:Tenant", &["blue"])], Allowed),
    ]
}

/// `…IfExists`: true when the key is missing, the plain operator otherwise.
#[rustfmt::skip]
fn if_exists_cases() -> Vec<Case> {
    vec![
        cond("StringEqualsIfExists: key missing", r#"{"StringEqualsIfExists":{"kms:ViaService":"ec2.us-east-1.amazonaws.com"}}"#, &[], Allowed),
        cond("StringEqualsIfExists: present and equal", r#"{"StringEqualsIfExists":{"kms:ViaService":"ec2.us-east-1.amazonaws.com"}}"#, &[("kms:ViaService", &[EC2])], Allowed),
        cond("StringEqualsIfExists: present and different", r#"{"StringEqualsIfExists":{"kms:ViaService":"ec2.us-east-1.amazonaws.com"}}"#, &[("kms:ViaService", &["rds.us-east-1.amazonaws.com"])], ImplicitDeny),
        cond("StringNotEqualsIfExists: key missing", r#"{"StringNotEqualsIfExists":{"kms:CallerAccount":"444455556666"}}"#, &[], Allowed),
        cond("StringNotEqualsIfExists: present and equal", r#"{"StringNotEqualsIfExists":{"kms:CallerAccount":"444455556666"}}"#, &[("kms:CallerAccount", &["444455556666"])], ImplicitDeny),
        cond("StringEqualsIgnoreCaseIfExists: key missing", r#"{"StringEqualsIgnoreCaseIfExists":{"kms:EncryptionContext:Tenant":"BLUE"}}"#, &[], Allowed),
        cond("StringEqualsIgnoreCaseIfExists: present, other case", r#"{"StringEqualsIgnoreCaseIfExists":{"kms:EncryptionContext:Tenant":"BLUE"}}"#, &[("kms:EncryptionContext:Tenant", &["Blue"])], Allowed),
        cond("StringEqualsIgnoreCaseIfExists: present, different", r#"{"StringEqualsIgnoreCaseIfExists":{"kms:EncryptionContext:Tenant":"BLUE"}}"#, &[("kms:EncryptionContext:Tenant", &["green"])], ImplicitDeny),
        cond("StringNotEqualsIgnoreCaseIfExists: present, other case", r#"{"StringNotEqualsIgnoreCaseIfExists":{"kms:EncryptionContext:Tenant":"BLUE"}}"#, &[("kms:EncryptionContext:Tenant", &["blue"])], ImplicitDeny),
        cond("StringNotEqualsIgnoreCaseIfExists: key missing", r#"{"StringNotEqualsIgnoreCaseIfExists":{"kms:EncryptionContext:Tenant":"BLUE"}}"#, &[], Allowed),
        cond("StringLikeIfExists: key missing", r#"{"StringLikeIfExists":{"aws:PrincipalArn":"*:user/*"}}"#, &[], Allowed),
        cond("StringLikeIfExists: present, not matching", r#"{"StringLikeIfExists":{"aws:PrincipalArn":"*:user/*"}}"#, &[("aws:PrincipalArn", &[ROLE_ARN])], ImplicitDeny),
        cond("StringNotLikeIfExists: present, matching", r#"{"StringNotLikeIfExists":{"aws:PrincipalArn":"*:role/*"}}"#, &[("aws:PrincipalArn", &[ROLE_ARN])], ImplicitDeny),
        cond("StringNotLikeIfExists: key missing", r#"{"StringNotLikeIfExists":{"aws:PrincipalArn":"*:role/*"}}"#, &[], Allowed),
        cond("BoolIfExists: key missing", r#"{"BoolIfExists":{"aws:SecureTransport":"true"}}"#, &[], Allowed),
        cond("BoolIfExists: present false", r#"{"BoolIfExists":{"aws:SecureTransport":"true"}}"#, &[("aws:SecureTransport", &["false"])], ImplicitDeny),
        guard("BoolIfExists guard: Deny when transport is not known to be secure", r#"{"BoolIfExists":{"aws:SecureTransport":"false"}}"#, &[], ExplicitDeny),
        guard("BoolIfExists guard: secure transport", r#"{"BoolIfExists":{"aws:SecureTransport":"false"}}"#, &[("aws:SecureTransport", &["true"])], Allowed),
        cond("DateEqualsIfExists: key missing", r#"{"DateEqualsIfExists":{"aws:CurrentTime":"2024-06-01T12:00:00Z"}}"#, &[], Allowed),
        cond("DateEqualsIfExists: present, other instant", r#"{"DateEqualsIfExists":{"aws:CurrentTime":"2024-06-01T12:00:00Z"}}"#, &[("aws:CurrentTime", &["2024-06-02T12:00:00Z"])], ImplicitDeny),
        cond("DateLessThanIfExists: key missing", r#"{"DateLessThanIfExists":{"aws:CurrentTime":"2025-01-01T00:00:00Z"}}"#, &[], Allowed),
        cond("DateLessThanIfExists: present, too late", r#"{"DateLessThanIfExists":{"aws:CurrentTime":"2025-01-01T00:00:00Z"}}"#, &[("aws:CurrentTime", &["2025-06-01T00:00:00Z"])], ImplicitDeny),
        cond("DateLessThanEqualsIfExists: present, at the limit", r#"{"DateLessThanEqualsIfExists":{"aws:CurrentTime":"2024-06-01T12:00:00Z"}}"#, &[("aws:CurrentTime", &[NOW])], Allowed),
        cond("DateGreaterThanIfExists: key missing", r#"{"DateGreaterThanIfExists":{"aws:CurrentTime":"2024-01-01T00:00:00Z"}}"#, &[], Allowed),
        cond("DateGreaterThanIfExists: present, too early", r#"{"DateGreaterThanIfExists":{"aws:CurrentTime":"2024-01-01T00:00:00Z"}}"#, &[("aws:CurrentTime", &["2023-06-01T00:00:00Z"])], ImplicitDeny),
        cond("DateGreaterThanEqualsIfExists: present, at the start", r#"{"DateGreaterThanEqualsIfExists":{"aws:CurrentTime":"2024-06-01T12:00:00Z"}}"#, &[("aws:CurrentTime", &[NOW])], Allowed),
        cond("DateGreaterThanEqualsIfExists: key missing", r#"{"DateGreaterThanEqualsIfExists":{"aws:CurrentTime":"2024-06-01T12:00:00Z"}}"#, &[], Allowed),
        cond("IpAddressIfExists: key missing", r#"{"IpAddressIfExists":{"aws:SourceIp":"10.0.0.0/8"}}"#, &[], Allowed),
        cond("IpAddressIfExists: present, outside", r#"{"IpAddressIfExists":{"aws:SourceIp":"10.0.0.0/8"}}"#, &[("aws:SourceIp", &["172.16.0.1"])], ImplicitDeny),
        cond("IpAddressIfExists: present, inside", r#"{"IpAddressIfExists":{"aws:SourceIp":"10.0.0.0/8"}}"#, &[("aws:SourceIp", &["10.9.9.9"])], Allowed),
        cond("NotIpAddressIfExists: present, inside the excluded range", r#"{"NotIpAddressIfExists":{"aws:SourceIp":"10.0.0.0/8"}}"#, &[("aws:SourceIp", &["10.9.9.9"])], ImplicitDeny),
        cond("NotIpAddressIfExists: key missing", r#"{"NotIpAddressIfExists":{"aws:SourceIp":"10.0.0.0/8"}}"#, &[], Allowed),
    ]
}

/// Keys under an operator and operators in a block are ANDed; values of one key are ORed.
#[rustfmt::skip]
fn and_or_cases() -> Vec<Case> {
    const TWO_KEYS: &str = r#"{"StringEquals":{"kms:CallerAccount":"111122223333","kms:ViaService":"ec2.us-east-1.amazonaws.com"}}"#;
    const TWO_OPERATORS: &str = r#"{"StringEquals":{"kms:CallerAccount":"111122223333"},"IpAddress":{"aws:SourceIp":"10.0.0.0/8"}}"#;
    const THREE_OPERATORS: &str = r#"{"StringEquals":{"kms:CallerAccount":"111122223333"},"IpAddress":{"aws:SourceIp":"10.0.0.0/8"},"DateLessThan":{"aws:CurrentTime":"2025-01-01T00:00:00Z"}}"#;
    const OR_AND: &str = r#"{"StringEquals":{"kms:EncryptionContext:Tenant":["blue","green"],"kms:EncryptionContext:Purpose":"backup"}}"#;
    vec![
        cond("AND keys: both hold", TWO_KEYS, &[("kms:CallerAccount", &["111122223333"]), ("kms:ViaService", &[EC2])], Allowed),
        cond("AND keys: one differs", TWO_KEYS, &[("kms:CallerAccount", &["111122223333"]), ("kms:ViaService", &["rds.us-east-1.amazonaws.com"])], ImplicitDeny),
        cond("AND keys: one missing", TWO_KEYS, &[("kms:CallerAccount", &["111122223333"])], ImplicitDeny),
        cond("AND operators: both hold", TWO_OPERATORS, &[("kms:CallerAccount", &["111122223333"]), ("aws:SourceIp", &["10.0.0.1"])], Allowed),
        cond("AND operators: address outside", TWO_OPERATORS, &[("kms:CallerAccount", &["111122223333"]), ("aws:SourceIp", &["11.0.0.1"])], ImplicitDeny),
        cond("AND operators: address missing", TWO_OPERATORS, &[("kms:CallerAccount", &["111122223333"])], ImplicitDeny),
        cond("AND three operators: all hold", THREE_OPERATORS, &[("kms:CallerAccount", &["111122223333"]), ("aws:SourceIp", &["10.0.0.1"]), ("aws:CurrentTime", &[NOW])], Allowed),
        cond("AND three operators: date fails", THREE_OPERATORS, &[("kms:CallerAccount", &["111122223333"]), ("aws:SourceIp", &["10.0.0.1"]), ("aws:CurrentTime", &["2025-02-01T00:00:00Z"])], ImplicitDeny),
        cond("OR within a key, AND across keys: holds", OR_AND, &[("kms:EncryptionContext:Tenant", &["green"]), ("kms:EncryptionContext:Purpose", &["backup"])], Allowed),
        cond("OR within a key, AND across keys: second key fails", OR_AND, &[("kms:EncryptionContext:Tenant", &["green"]), ("kms:EncryptionContext:Purpose", &["archive"])], ImplicitDeny),
    ]
}

/// `ForAllValues:` / `ForAnyValue:` over the multi-valued `kms:EncryptionContextKeys`.
#[rustfmt::skip]
fn set_operator_cases() -> Vec<Case> {
    const ALL_OF: &str = r#"{"ForAllValues:StringEquals":{"kms:EncryptionContextKeys":["Tenant","Purpose"]}}"#;
    const ANY_OF: &str = r#"{"ForAnyValue:StringEquals":{"kms:EncryptionContextKeys":"Tenant"}}"#;
    const ALL_NOT: &str = r#"{"ForAllValues:StringNotEquals":{"kms:EncryptionContextKeys":"Secret"}}"#;
    const ANY_NOT: &str = r#"{"ForAnyValue:StringNotEquals":{"kms:EncryptionContextKeys":"Tenant"}}"#;
    const ALL_OF_NON_EMPTY: &str = r#"{"ForAllValues:StringEquals":{"kms:EncryptionContextKeys":["Tenant","Purpose"]},"Null":{"kms:EncryptionContextKeys":"false"}}"#;
    const KEYS: &str = "kms:EncryptionContextKeys";
    vec![
        cond("ForAllValues: subset of the allowed keys", ALL_OF, &[(KEYS, &["Tenant"])], Allowed),
        cond("ForAllValues: exactly the allowed keys", ALL_OF, &[(KEYS, &["Purpose", "Tenant"])], Allowed),
        cond("ForAllValues: one key not allowed", ALL_OF, &[(KEYS, &["Tenant", "Other"])], ImplicitDeny),
        cond("ForAllValues: key missing is true", ALL_OF, &[], Allowed),
        cond("ForAllValues: empty set is true", ALL_OF, &[(KEYS, &[])], Allowed),
        cond("ForAllValues: values are case-sensitive", ALL_OF, &[(KEYS, &["tenant"])], ImplicitDeny),
        cond("ForAllValues + Null false: key missing is refused", ALL_OF_NON_EMPTY, &[], ImplicitDeny),
        cond("ForAllValues + Null false: allowed keys given", ALL_OF_NON_EMPTY, &[(KEYS, &["Tenant"])], Allowed),
        cond("ForAnyValue: one of the keys matches", ANY_OF, &[(KEYS, &["Other", "Tenant"])], Allowed),
        cond("ForAnyValue: none matches", ANY_OF, &[(KEYS, &["Other"])], ImplicitDeny),
        cond("ForAnyValue: key missing is false", ANY_OF, &[], ImplicitDeny),
        cond("ForAnyValue: empty set is false", ANY_OF, &[(KEYS, &[])], ImplicitDeny),
        cond("ForAnyValue:StringLike matches one key", r#"{"ForAnyValue:StringLike":{"kms:EncryptionContextKeys":"Ten*"}}"#, &[(KEYS, &["Purpose", "Tenantx"])], Allowed),
        cond("ForAllValues:StringLike all keys match", r#"{"ForAllValues:StringLike":{"kms:EncryptionContextKeys":"T*"}}"#, &[(KEYS, &["Tenant", "Type"])], Allowed),
        cond("ForAllValues:StringLike one key does not match", r#"{"ForAllValues:StringLike":{"kms:EncryptionContextKeys":"T*"}}"#, &[(KEYS, &["Tenant", "purpose"])], ImplicitDeny),
        cond("ForAllValues:StringNotEquals: no forbidden key", ALL_NOT, &[(KEYS, &["Tenant"])], Allowed),
        cond("ForAllValues:StringNotEquals: forbidden key present", ALL_NOT, &[(KEYS, &["Tenant", "Secret"])], ImplicitDeny),
        cond("ForAllValues:StringNotEquals: key missing is true", ALL_NOT, &[], Allowed),
        cond("ForAnyValue:StringNotEquals: another key present", ANY_NOT, &[(KEYS, &["Tenant", "Other"])], Allowed),
        cond("ForAnyValue:StringNotEquals: only the named key", ANY_NOT, &[(KEYS, &["Tenant"])], ImplicitDeny),
        cond("ForAnyValue:StringNotEquals: key missing is false", ANY_NOT, &[], ImplicitDeny),
        cond("ForAllValues:StringEqualsIgnoreCase", r#"{"ForAllValues:StringEqualsIgnoreCase":{"kms:EncryptionContextKeys":"tenant"}}"#, &[(KEYS, &["TENANT"])], Allowed),
        cond("ForAnyValue:StringEqualsIfExists: key missing", r#"{"ForAnyValue:StringEqualsIfExists":{"kms:EncryptionContextKeys":"Tenant"}}"#, &[], Allowed),
        cond("ForAnyValue:StringEqualsIfExists: present, no match", r#"{"ForAnyValue:StringEqualsIfExists":{"kms:EncryptionContextKeys":"Tenant"}}"#, &[(KEYS, &["Other"])], ImplicitDeny),
        cond("ForAllValues:StringEqualsIfExists: key missing", r#"{"ForAllValues:StringEqualsIfExists":{"kms:EncryptionContextKeys":"Tenant"}}"#, &[], Allowed),
        guard("ForAnyValue guard: Deny a Secret context key", r#"{"ForAnyValue:StringEquals":{"kms:EncryptionContextKeys":"Secret"}}"#, &[(KEYS, &["Tenant", "Secret"])], ExplicitDeny),
        guard("ForAnyValue guard: no Secret context key", r#"{"ForAnyValue:StringEquals":{"kms:EncryptionContextKeys":"Secret"}}"#, &[(KEYS, &["Tenant"])], Allowed),
        guard("ForAnyValue guard: no encryption context", r#"{"ForAnyValue:StringEquals":{"kms:EncryptionContextKeys":"Secret"}}"#, &[], Allowed),
        guard("ForAllValues guard: ForAllValues:StringNotEquals in a Deny applies when the key is missing", r#"{"ForAllValues:StringNotEquals":{"kms:EncryptionContextKeys":["Tenant","Purpose"]}}"#, &[], ExplicitDeny),
    ]
}

/// The context keys the brief names: kms:EncryptionContext:<k>, condition-key case, kms:ViaService,
/// aws:PrincipalArn.
#[rustfmt::skip]
fn context_key_cases() -> Vec<Case> {
    let only_via_ec2 = doc(&[
        ROOT_STMT,
        r#"{"Sid":"OnlyViaEc2","Effect":"Deny","Principal":"*","Action":"kms:Decrypt","Resource":"*","Condition":{"StringNotEquals":{"kms:ViaService":"ec2.us-east-1.amazonaws.com"}}}"#,
    ]);
    let only_roles_delete = doc(&[
        ROOT_STMT,
        r#"{"Sid":"OnlyRolesDelete","Effect":"Deny","Principal":"*","Action":"kms:ScheduleKeyDeletion","Resource":"*","Condition":{"StringNotLike":{"aws:PrincipalArn":"arn:aws:iam::111122223333:role/*"}}}"#,
    ]);
    const TENANT_BLUE: &str = r#"{"StringEquals":{"kms:EncryptionContext:Tenant":"blue"}}"#;
    const TWO_PAIRS: &str = r#"{"StringEquals":{"kms:EncryptionContext:Tenant":"blue","kms:EncryptionContext:Purpose":"backup"}}"#;
    const VIA_EC2: &str = r#"{"StringEquals":{"kms:ViaService":"ec2.us-east-1.amazonaws.com"}}"#;
    let mut cases = vec![
        cond("EncryptionContext: pair present", TENANT_BLUE, &[("kms:EncryptionContext:Tenant", &["blue"])], Allowed),
        cond("EncryptionContext: context key differs in case (condition keys are case-insensitive)", TENANT_BLUE, &[("kms:EncryptionContext:tenant", &["blue"])], Allowed),
        cond("EncryptionContext: pair absent", TENANT_BLUE, &[], ImplicitDeny),
        cond("EncryptionContext: upper-case prefix in the policy", r#"{"StringEquals":{"KMS:ENCRYPTIONCONTEXT:Tenant":"blue"}}"#, &[("kms:EncryptionContext:Tenant", &["blue"])], Allowed),
        cond("EncryptionContext: lower-case prefix in the policy", r#"{"StringEquals":{"kms:encryptioncontext:Tenant":"blue"}}"#, &[("kms:EncryptionContext:Tenant", &["blue"])], Allowed),
        cond("EncryptionContext: policy's context key in other case matches too", r#"{"StringEquals":{"kms:EncryptionContext:TENANT":"blue"}}"#, &[("kms:EncryptionContext:Tenant", &["blue"])], Allowed),
        cond("EncryptionContextKeys: how a policy insists on the key's case", r#"{"ForAllValues:StringEquals":{"kms:EncryptionContextKeys":"Tenant"}}"#, &[("kms:EncryptionContext:TENANT", &["blue"]), ("kms:EncryptionContextKeys", &["TENANT"])], ImplicitDeny),
        cond("EncryptionContext: prefix case differs on the request side", TENANT_BLUE, &[("Kms:encryptionContext:Tenant", &["blue"])], Allowed),
        cond("EncryptionContext: two pairs both present", TWO_PAIRS, &[("kms:EncryptionContext:Tenant", &["blue"]), ("kms:EncryptionContext:Purpose", &["backup"])], Allowed),
        cond("EncryptionContext: two pairs, one absent", TWO_PAIRS, &[("kms:EncryptionContext:Tenant", &["blue"])], ImplicitDeny),
        cond("EncryptionContext: StringLike on the value", r#"{"StringLike":{"kms:EncryptionContext:Tenant":"team-*"}}"#, &[("kms:EncryptionContext:Tenant", &["team-7"])], Allowed),
        cond("EncryptionContext: StringLike value is case-sensitive", r#"{"StringLike":{"kms:EncryptionContext:Tenant":"team-*"}}"#, &[("kms:EncryptionContext:Tenant", &["Team-7"])], ImplicitDeny),
        cond("EncryptionContext: StringNotEquals with the pair absent", r#"{"StringNotEquals":{"kms:EncryptionContext:Tenant":"blue"}}"#, &[], Allowed),
        kp_cond("EncryptionContext in the key policy: pair present", TENANT_BLUE, &[("kms:EncryptionContext:Tenant", &["blue"])], Allowed),
        kp_cond("EncryptionContext in the key policy: other value", TENANT_BLUE, &[("kms:EncryptionContext:Tenant", &["red"])], ImplicitDeny),
        cond("condition key names are case-insensitive (policy side)", r#"{"IpAddress":{"AWS:SOURCEIP":"10.0.0.0/8"}}"#, &[("aws:SourceIp", &["10.1.1.1"])], Allowed),
        cond("condition key names are case-insensitive (request side)", r#"{"StringEquals":{"kms:calleraccount":"111122223333"}}"#, &[("Kms:CallerAccount", &["111122223333"])], Allowed),
        cond("condition key names are case-insensitive (date key)", r#"{"DateGreaterThan":{"AWS:currenttime":"2024-01-01T00:00:00Z"}}"#, &[("aws:CurrentTime", &[NOW])], Allowed),
        cond("ViaService: direct call (key absent) fails StringEquals", VIA_EC2, &[], ImplicitDeny),
        cond("ViaService: call via EC2", VIA_EC2, &[("kms:ViaService", &[EC2])], Allowed),
        cond("ViaService: call via another service", VIA_EC2, &[("kms:ViaService", &["rds.us-east-1.amazonaws.com"])], ImplicitDeny),
        cond("ViaService: StringLike any service in the region", r#"{"StringLike":{"kms:ViaService":"*.us-east-1.amazonaws.com"}}"#, &[("kms:ViaService", &["rds.us-east-1.amazonaws.com"])], Allowed),
        cond("ViaService: StringLike other region", r#"{"StringLike":{"kms:ViaService":"*.us-east-1.amazonaws.com"}}"#, &[("kms:ViaService", &["ec2.eu-west-1.amazonaws.com"])], ImplicitDeny),
        kp_cond("CallerAccount in the key policy: this account", r#"{"StringEquals":{"kms:CallerAccount":"111122223333"}}"#, &[("kms:CallerAccount", &["111122223333"])], Allowed),
        kp_cond("CallerAccount in the key policy: missing", r#"{"StringEquals":{"kms:CallerAccount":"111122223333"}}"#, &[], ImplicitDeny),
        kp_cond("SourceIp in the key policy: IPv6 inside", r#"{"IpAddress":{"aws:SourceIp":"2001:db8::/32"}}"#, &[("aws:SourceIp", &["2001:db8::7"])], Allowed),
        kp_cond("CurrentTime in the key policy: expired grant", r#"{"DateLessThan":{"aws:CurrentTime":"2024-01-01T00:00:00Z"}}"#, &[("aws:CurrentTime", &[NOW])], ImplicitDeny),
    ];
    cases.extend([
        Case {
            name: "ViaService guard: direct Decrypt (key absent) is denied",
            key_policy: Some(only_via_ec2),
            identity: Some(vec![(P_USER, ID_KMS_ALL)]),
            action: "kms:Decrypt",
            context: &[],
            expected: denied(KP, "OnlyViaEc2"),
            ..BASE
        },
        Case {
            name: "ViaService guard: Decrypt via EC2 is allowed",
            key_policy: Some(only_via_ec2),
            identity: Some(vec![(P_USER, ID_KMS_ALL)]),
            action: "kms:Decrypt",
            context: &[("kms:ViaService", &[EC2])],
            expected: allowed(P_USER, "KmsAll"),
            ..BASE
        },
        Case {
            name: "ViaService guard: Decrypt via another service is denied",
            key_policy: Some(only_via_ec2),
            identity: Some(vec![(P_USER, ID_KMS_ALL)]),
            action: "kms:Decrypt",
            context: &[("kms:ViaService", &["rds.us-east-1.amazonaws.com"])],
            expected: denied(KP, "OnlyViaEc2"),
            ..BASE
        },
        Case {
            name: "ViaService guard: direct Encrypt is not covered by the Deny",
            key_policy: Some(only_via_ec2),
            identity: Some(vec![(P_USER, ID_KMS_ALL)]),
            action: "kms:Encrypt",
            context: &[],
            expected: allowed(P_USER, "KmsAll"),
            ..BASE
        },
        Case {
            name: "PrincipalArn guard: alice may not schedule deletion",
            key_policy: Some(only_roles_delete),
            identity: Some(vec![(P_USER, ID_KMS_ALL)]),
            action: "kms:ScheduleKeyDeletion",
            context: &[("aws:PrincipalArn", &[ALICE_ARN])],
            expected: denied(KP, "OnlyRolesDelete"),
            ..BASE
        },
        Case {
            name: "PrincipalArn guard: the role session may schedule deletion",
            key_policy: Some(only_roles_delete),
            identity: Some(vec![(P_ROLE, ID_KMS_ALL)]),
            principals: SESSION,
            action: "kms:ScheduleKeyDeletion",
            context: &[("aws:PrincipalArn", &[ROLE_ARN])],
            expected: allowed(P_ROLE, "KmsAll"),
            ..BASE
        },
        Case {
            name: "PrincipalArn guard: other actions unaffected",
            key_policy: Some(only_roles_delete),
            identity: Some(vec![(P_USER, ID_KMS_ALL)]),
            action: "kms:Encrypt",
            context: &[("aws:PrincipalArn", &[ALICE_ARN])],
            expected: allowed(P_USER, "KmsAll"),
            ..BASE
        },
    ]);
    cases
}

/// Condition-key case, policy grammar (any `service:Action`) and policy variables.
#[rustfmt::skip]
fn grammar_and_variable_cases() -> Vec<Case> {
    const EC: &str = "kms:EncryptionContext:tenant";
    const NOT_A: &str = r#"{"StringNotEquals":{"kms:EncryptionContext:tenant":"a"}}"#;
    let self_service = |version: &str, resource: &str| -> &'static str {
        leak(format!(
            r#"{{"Version":"{version}","Statement":[{{"Sid":"OwnKeys","Effect":"Allow","Action":["iam:CreateAccessKey","iam:DeleteAccessKey","iam:ListAccessKeys","iam:UpdateAccessKey"],"Resource":"{resource}"}}]}}"#
        ))
    };
    let own = self_service("2012-10-17", "arn:aws:iam::*:user/${aws:username}");
    let own_old = self_service("2008-10-17", "arn:aws:iam::*:user/${aws:username}");
    let own_default = self_service("2012-10-17", "arn:aws:iam::*:user/${aws:username, 'nobody'}");
    let literal_star = self_service("2012-10-17", "arn:aws:iam::111122223333:user/${*}");
    let not_own = leak(r#"{"Version":"2012-10-17","Statement":[{"Sid":"NotOthers","Effect":"Allow","Action":"iam:*","NotResource":"arn:aws:iam::*:user/${aws:username}"}]}"#.to_owned());
    let with_s3 = doc(&[
        r#"{"Sid":"S3","Effect":"Allow","Action":["s3:GetObject","ec2:Describe*"],"Resource":"arn:aws:s3:::bucket/*"}"#,
        r#"{"Sid":"S3Deny","Effect":"Deny","Action":"s3:*","Resource":"*"}"#,
        r#"{"Sid":"KmsAll","Effect":"Allow","Action":"kms:*","Resource":"*"}"#,
    ]);
    let only_s3 = doc(&[r#"{"Sid":"S3","Effect":"Allow","Action":"s3:*","Resource":"*"}"#]);
    let audit_all = doc(&[r#"{"Sid":"Audit","Effect":"Allow","Action":"audit:*","Resource":"*"}"#]);
    let with = |name: &'static str, identity: &'static str, action: &'static str, resource: &'static str, principals: &'static [&'static str], context: Ctx, expected: Expected| Case {
        name,
        key_policy: None,
        identity: Some(vec![(P_USER, identity)]),
        principals,
        action,
        resource,
        context,
        expected,
        ..BASE
    };
    const ALICE_USER: &[(&str, &[&str])] = &[("aws:username", &["alice"])];
    vec![
        // Condition-key case: a Deny written for `tenant` applies to `TENANT`.
        guard("case: StringNotEquals Deny applies to the key in upper case", NOT_A, &[("kms:EncryptionContext:TENANT", &["b"])], ExplicitDeny),
        guard("case: StringNotEquals Deny spares the right value in upper case", NOT_A, &[("kms:EncryptionContext:TENANT", &["a"])], Allowed),
        guard("case: StringNotEqualsIfExists Deny applies to the key in upper case", r#"{"StringNotEqualsIfExists":{"kms:EncryptionContext:tenant":"a"}}"#, &[("kms:EncryptionContext:TENANT", &["b"])], ExplicitDeny),
        guard("case: Null false Deny sees the key in upper case", r#"{"Null":{"kms:EncryptionContext:tenant":"false"}}"#, &[("kms:EncryptionContext:Tenant", &["x"])], ExplicitDeny),
        guard("case: two spellings, a Deny holding for one candidate applies", NOT_A, &[(EC, &["a"]), ("kms:EncryptionContext:TENANT", &["b"])], ExplicitDeny),
        guard("case: two spellings, a ForAnyValue Deny applies", r#"{"ForAnyValue:StringEquals":{"kms:EncryptionContext:tenant":"b"}}"#, &[(EC, &["a"]), ("kms:EncryptionContext:TENANT", &["b"])], ExplicitDeny),
        cond("case: two spellings, an Allow must hold for every candidate", r#"{"StringEquals":{"kms:EncryptionContext:tenant":"a"}}"#, &[(EC, &["a"]), ("kms:EncryptionContext:TENANT", &["b"])], ImplicitDeny),
        cond("case: two spellings, an Allow naming both values allows", r#"{"StringEquals":{"kms:EncryptionContext:tenant":["a","b"]}}"#, &[(EC, &["a"]), ("kms:EncryptionContext:TENANT", &["b"])], Allowed),
        cond("case: two spellings, ForAllValues Allow must hold for every candidate", r#"{"ForAllValues:StringEquals":{"kms:EncryptionContext:tenant":"a"}}"#, &[(EC, &["a"]), ("kms:EncryptionContext:TENANT", &["b"])], ImplicitDeny),
        // Grammar: other services' actions are accepted and never match.
        with("grammar: s3 and ec2 statements are accepted beside kms ones", with_s3, "kms:Encrypt", KEY, ALICE, &[], allowed(P_USER, "KmsAll")),
        with("grammar: an s3 Deny does not touch kms actions", with_s3, "kms:Decrypt", KEY, ALICE, &[], allowed(P_USER, "KmsAll")),
        with("grammar: s3:* grants nothing in Keyhaven", only_s3, "kms:Encrypt", KEY, ALICE, &[], IMPLICIT),
        with("grammar: audit:* grants audit:ReadAudit", audit_all, "audit:ReadAudit", "*", ALICE, &[], allowed(P_USER, "Audit")),
        with("grammar: audit:* grants no kms action", audit_all, "kms:Encrypt", "*", ALICE, &[], IMPLICIT),
        // Variables.
        with("variables: ${aws:username} names the caller's own user", own, "iam:CreateAccessKey", ALICE_ARN, ALICE, ALICE_USER, allowed(P_USER, "OwnKeys")),
        with("variables: ${aws:username} does not name another user", own, "iam:DeleteAccessKey", BOB_ARN, ALICE, ALICE_USER, IMPLICIT),
        with("variables: a name is matched whole", own, "iam:UpdateAccessKey", "arn:aws:iam::111122223333:user/alice2", ALICE, ALICE_USER, IMPLICIT),
        with("variables: literal in Version 2008-10-17", own_old, "iam:CreateAccessKey", ALICE_ARN, ALICE, ALICE_USER, IMPLICIT),
        with("variables: literal in Version 2008-10-17 matches the literal text", own_old, "iam:CreateAccessKey", "arn:aws:iam::111122223333:user/${aws:username}", ALICE, ALICE_USER, allowed(P_USER, "OwnKeys")),
        with("variables: absent key without default does not match", own, "iam:CreateAccessKey", ALICE_ARN, SESSION, &[], IMPLICIT),
        with("variables: absent key takes the default", own_default, "iam:ListAccessKeys", "arn:aws:iam::111122223333:user/nobody", SESSION, &[], allowed(P_USER, "OwnKeys")),
        with("variables: ${*} is a literal asterisk", literal_star, "iam:CreateAccessKey", ALICE_ARN, ALICE, ALICE_USER, IMPLICIT),
        with("variables: a value is literal, not a wildcard", own, "iam:CreateAccessKey", ALICE_ARN, ALICE, &[("aws:username", &["*"])], IMPLICIT),
        with("variables: NotResource with an unresolvable variable does not apply", not_own, "iam:CreateUser", BOB_ARN, SESSION, &[], IMPLICIT),
        with("variables: NotResource spares the caller's own user", not_own, "iam:CreateUser", ALICE_ARN, ALICE, ALICE_USER, IMPLICIT),
        with("variables: NotResource covers another user", not_own, "iam:CreateUser", BOB_ARN, ALICE, ALICE_USER, allowed(P_USER, "NotOthers")),
        cond("variables: in a condition value", r#"{"StringEquals":{"kms:EncryptionContext:owner":"${aws:username}"}}"#, &[("kms:EncryptionContext:owner", &["alice"]), ("aws:username", &["alice"])], Allowed),
        cond("variables: in a condition value, other owner", r#"{"StringEquals":{"kms:EncryptionContext:owner":"${aws:username}"}}"#, &[("kms:EncryptionContext:owner", &["bob"]), ("aws:username", &["alice"])], ImplicitDeny),
        cond("variables: StringLike keeps the policy's wildcards", r#"{"StringLike":{"kms:EncryptionContext:path":"home/${aws:username}/*"}}"#, &[("kms:EncryptionContext:path", &["home/alice/x"]), ("aws:username", &["alice"])], Allowed),
        cond("variables: unresolvable in a condition makes it false", r#"{"StringNotEquals":{"kms:EncryptionContext:owner":"${aws:username}"}}"#, &[("kms:EncryptionContext:owner", &["bob"])], ImplicitDeny),
        cond("variables: a kms request key as a variable", r#"{"StringEquals":{"aws:username":"${kms:EncryptionContext:owner}"}}"#, &[("kms:EncryptionContext:owner", &["alice"]), ("aws:username", &["alice"])], Allowed),
    ]
}

/// MFA: `aws:MultiFactorAuthPresent` is absent for long-term keys, `false` for a session
/// without MFA, `true` with MFA; `aws:MultiFactorAuthAge` is seconds since the code (absent
/// without MFA). The AWS idioms, and IAM's `Numeric*` operators on the age.
fn mfa_cases() -> Vec<Case> {
    const LONG_TERM: Ctx = &[];
    const NO_MFA: Ctx = &[("aws:MultiFactorAuthPresent", &["false"])];
    const FRESH: Ctx = &[
        ("aws:MultiFactorAuthPresent", &["true"]),
        ("aws:MultiFactorAuthAge", &["60"]),
    ];
    const STALE: Ctx = &[
        ("aws:MultiFactorAuthPresent", &["true"]),
        ("aws:MultiFactorAuthAge", &["7200"]),
    ];
    const DENY_WITHOUT_MFA: &str = r#"{"BoolIfExists":{"aws:MultiFactorAuthPresent":"false"}}"#;
    const DENY_SESSION_WITHOUT_MFA: &str = r#"{"Bool":{"aws:MultiFactorAuthPresent":"false"}}"#;
    const ALLOW_WITH_MFA: &str = r#"{"Bool":{"aws:MultiFactorAuthPresent":"true"}}"#;
    const ALLOW_RECENT: &str = r#"{"NumericLessThan":{"aws:MultiFactorAuthAge":"3600"}}"#;
    const DENY_OLD: &str = r#"{"NumericGreaterThanIfExists":{"aws:MultiFactorAuthAge":"600"}}"#;
    const DENY_UNLESS_ZERO: &str = r#"{"NumericNotEquals":{"aws:MultiFactorAuthAge":"60"}}"#;
    vec![
        guard(
            "mfa: BoolIfExists false denies long-term keys",
            DENY_WITHOUT_MFA,
            LONG_TERM,
            ExplicitDeny,
        ),
        guard(
            "mfa: BoolIfExists false denies a session without MFA",
            DENY_WITHOUT_MFA,
            NO_MFA,
            ExplicitDeny,
        ),
        guard(
            "mfa: BoolIfExists false lets an MFA session through",
            DENY_WITHOUT_MFA,
            FRESH,
            Allowed,
        ),
        guard(
            "mfa: Bool false misses long-term keys (AWS's warning)",
            DENY_SESSION_WITHOUT_MFA,
            LONG_TERM,
            Allowed,
        ),
        guard(
            "mfa: Bool false denies a session without MFA",
            DENY_SESSION_WITHOUT_MFA,
            NO_MFA,
            ExplicitDeny,
        ),
        cond(
            "mfa: Bool true allows an MFA session",
            ALLOW_WITH_MFA,
            FRESH,
            Allowed,
        ),
        cond(
            "mfa: Bool true does not allow long-term keys",
            ALLOW_WITH_MFA,
            LONG_TERM,
            ImplicitDeny,
        ),
        cond(
            "mfa: Bool true does not allow a session without MFA",
            ALLOW_WITH_MFA,
            NO_MFA,
            ImplicitDeny,
        ),
        cond(
            "mfa: NumericLessThan age allows a recent sign-in",
            ALLOW_RECENT,
            FRESH,
            Allowed,
        ),
        cond(
            "mfa: NumericLessThan age refuses an old sign-in",
            ALLOW_RECENT,
            STALE,
            ImplicitDeny,
        ),
        cond(
            "mfa: NumericLessThan age refuses without MFA",
            ALLOW_RECENT,
            NO_MFA,
            ImplicitDeny,
        ),
        guard(
            "mfa: NumericGreaterThanIfExists age denies an old sign-in",
            DENY_OLD,
            STALE,
            ExplicitDeny,
        ),
        guard(
            "mfa: NumericGreaterThanIfExists age lets a recent sign-in through",
            DENY_OLD,
            FRESH,
            Allowed,
        ),
        guard(
            "mfa: NumericGreaterThanIfExists age denies long-term keys",
            DENY_OLD,
            LONG_TERM,
            ExplicitDeny,
        ),
        guard(
            "mfa: NumericNotEquals holds when the key is absent",
            DENY_UNLESS_ZERO,
            LONG_TERM,
            ExplicitDeny,
        ),
        guard(
            "mfa: NumericNotEquals is false on an equal number",
            DENY_UNLESS_ZERO,
            FRESH,
            Allowed,
        ),
        guard(
            "mfa: NumericNotEquals holds on another number",
            DENY_UNLESS_ZERO,
            STALE,
            ExplicitDeny,
        ),
    ]
}

/// Grants (AWS KMS's rules): a grant allows its operations on its key to its grantee when no
/// policy does, never against an explicit Deny; a constraint's keys match without regard to
/// case, its values exactly; `EncryptionContextEquals` wants the whole context,
/// `EncryptionContextSubset` its pairs among the request's; a constrained grant allows no
/// request without an encryption context; `CreateGrant` through a grant hands on a subset of
/// its operations under a constraint at least as narrow. A policy that allows decides before
/// any grant (the grant is then not what allowed the call).
fn grant_cases() -> Vec<Case> {
    const TENANT_A: Pairs = &[("tenant", "a")];
    const ENCRYPT: &[Grant] = &[Grant {
        id: "g-encrypt",
        grantee: ALICE_ARN,
        operations: &["Encrypt", "Decrypt"],
        constraint: Constraint::None,
    }];
    const EQUALS: &[Grant] = &[Grant {
        id: "g-equals",
        grantee: ALICE_ARN,
        operations: &["Encrypt", "Decrypt", "DescribeKey"],
        constraint: Constraint::Equals(TENANT_A),
    }];
    const SUBSET: &[Grant] = &[Grant {
        id: "g-subset",
        grantee: ALICE_ARN,
        operations: &["Encrypt", "Decrypt", "CreateGrant"],
        constraint: Constraint::Subset(TENANT_A),
    }];
    const DELEGATE: &[Grant] = &[Grant {
        id: "g-delegate",
        grantee: ALICE_ARN,
        operations: &["Encrypt", "DescribeKey", "CreateGrant"],
        constraint: Constraint::None,
    }];
    const TO_ROLE: &[Grant] = &[Grant {
        id: "g-role",
        grantee: ROLE_ARN,
        operations: &["Decrypt"],
        constraint: Constraint::None,
    }];
    const TWO: &[Grant] = &[
        Grant {
            id: "g-bob",
            grantee: BOB_ARN,
            operations: &["Encrypt"],
            constraint: Constraint::None,
        },
        Grant {
            id: "g-alice",
            grantee: ALICE_ARN,
            operations: &["Encrypt"],
            constraint: Constraint::None,
        },
    ];
    let no_identity = || Some(vec![]);
    let by = |grant: &'static str| (Some(grant), (Allowed, None));
    let row = |name: &'static str,
               grants: &'static [Grant],
               action: &'static str,
               ask: Ask,
               (by_grant, expected): (Option<&'static str>, Expected)| Case {
        name,
        key_policy: Some(KP_DEFAULT),
        identity: no_identity(),
        action,
        grants,
        ask,
        expected,
        by_grant,
        ..BASE
    };
    let none = (None, IMPLICIT);
    vec![
        row(
            "grant: allows its operation to its grantee",
            ENCRYPT,
            "kms:Encrypt",
            Ask::Context(&[]),
            by("g-encrypt"),
        ),
        row(
            "grant: the action's case does not matter",
            ENCRYPT,
            "kms:encrypt",
            Ask::Context(&[]),
            by("g-encrypt"),
        ),
        row(
            "grant: not an operation it holds",
            ENCRYPT,
            "kms:GenerateDataKey",
            Ask::Context(&[]),
            none,
        ),
        row(
            "grant: not a kms action",
            ENCRYPT,
            "iam:Encrypt",
            Ask::Context(&[]),
            none,
        ),
        row(
            "grant: unconstrained, any encryption context",
            ENCRYPT,
            "kms:Decrypt",
            Ask::Context(&[("x", "y")]),
            by("g-encrypt"),
        ),
        Case {
            principals: BOB,
            ..row(
                "grant: another principal's grant allows nothing",
                ENCRYPT,
                "kms:Encrypt",
                Ask::Context(&[]),
                none,
            )
        },
        row(
            "grant: the second of two grants is the one that allows",
            TWO,
            "kms:Encrypt",
            Ask::Context(&[]),
            by("g-alice"),
        ),
        Case {
            principals: SESSION,
            ..row(
                "grant: to a role, allows its sessions",
                TO_ROLE,
                "kms:Decrypt",
                Ask::Context(&[]),
                by("g-role"),
            )
        },
        Case {
            identity: Some(vec![(
                P_USER,
                doc(&[
                    r#"{"Sid":"NoEncrypt","Effect":"Deny","Action":"kms:Encrypt","Resource":"*"}"#,
                ]),
            )]),
            ..row(
                "grant: an identity policy's Deny wins over a grant",
                ENCRYPT,
                "kms:Encrypt",
                Ask::Context(&[]),
                (None, denied(P_USER, "NoEncrypt")),
            )
        },
        Case {
            key_policy: Some(doc(&[
                ROOT_STMT,
                r#"{"Sid":"KeyDeny","Effect":"Deny","Principal":"*","Action":"kms:Decrypt","Resource":"*"}"#,
            ])),
            ..row(
                "grant: a key policy's Deny wins over a grant",
                ENCRYPT,
                "kms:Decrypt",
                Ask::Context(&[]),
                (None, denied(KP, "KeyDeny")),
            )
        },
        Case {
            identity: Some(vec![(P_USER, allow_action("kms:Encrypt"))]),
            ..row(
                "grant: a policy that allows decides first",
                ENCRYPT,
                "kms:Encrypt",
                Ask::Context(&[]),
                (None, allowed(P_USER, "Act")),
            )
        },
        Case {
            identity: Some(vec![(
                P_COND,
                allow_if(r#"{"StringEquals":{"aws:SourceIp":"10.0.0.1"}}"#),
            )]),
            ..row(
                "grant: allows where a conditional Allow does not",
                ENCRYPT,
                "kms:Encrypt",
                Ask::Context(&[]),
                by("g-encrypt"),
            )
        },
        row(
            "grant: Equals, keys without regard to case",
            EQUALS,
            "kms:Encrypt",
            Ask::Context(&[("TENANT", "a")]),
            by("g-equals"),
        ),
        row(
            "grant: Equals, values exactly",
            EQUALS,
            "kms:Encrypt",
            Ask::Context(&[("tenant", "A")]),
            none,
        ),
        row(
            "grant: Equals, no more pairs",
            EQUALS,
            "kms:Encrypt",
            Ask::Context(&[("tenant", "a"), ("x", "y")]),
            none,
        ),
        row(
            "grant: Equals, no fewer pairs",
            EQUALS,
            "kms:Decrypt",
            Ask::Context(&[]),
            none,
        ),
        row(
            "grant: Subset, more pairs allowed",
            SUBSET,
            "kms:Decrypt",
            Ask::Context(&[("Tenant", "a"), ("x", "y")]),
            by("g-subset"),
        ),
        row(
            "grant: Subset, its pair missing",
            SUBSET,
            "kms:Decrypt",
            Ask::Context(&[("x", "y")]),
            none,
        ),
        row(
            "grant: constrained, allows nothing without a context",
            EQUALS,
            "kms:DescribeKey",
            Ask::Plain,
            none,
        ),
        row(
            "grant: unconstrained, allows a call without a context",
            DELEGATE,
            "kms:DescribeKey",
            Ask::Plain,
            by("g-delegate"),
        ),
        row(
            "grant: CreateGrant of a subset of its operations",
            DELEGATE,
            "kms:CreateGrant",
            Ask::NewGrant(&["Encrypt"], Constraint::None),
            by("g-delegate"),
        ),
        row(
            "grant: CreateGrant of an operation it lacks",
            DELEGATE,
            "kms:CreateGrant",
            Ask::NewGrant(&["Encrypt", "Decrypt"], Constraint::None),
            none,
        ),
        row(
            "grant: CreateGrant without CreateGrant in it",
            ENCRYPT,
            "kms:CreateGrant",
            Ask::NewGrant(&["Encrypt"], Constraint::None),
            none,
        ),
        row(
            "grant: CreateGrant under a narrower Subset",
            SUBSET,
            "kms:CreateGrant",
            Ask::NewGrant(
                &["Decrypt"],
                Constraint::Subset(&[("tenant", "a"), ("x", "y")]),
            ),
            by("g-subset"),
        ),
        row(
            "grant: CreateGrant of Equals within its Subset",
            SUBSET,
            "kms:CreateGrant",
            Ask::NewGrant(&["Decrypt"], Constraint::Equals(TENANT_A)),
            by("g-subset"),
        ),
        row(
            "grant: CreateGrant dropping its constraint",
            SUBSET,
            "kms:CreateGrant",
            Ask::NewGrant(&["Decrypt"], Constraint::None),
            none,
        ),
        row(
            "grant: CreateGrant under another tenant",
            SUBSET,
            "kms:CreateGrant",
            Ask::NewGrant(&["Decrypt"], Constraint::Subset(&[("tenant", "b")])),
            none,
        ),
        row(
            "grant: CreateGrant asked of an Encrypt",
            DELEGATE,
            "kms:Encrypt",
            Ask::NewGrant(&["Encrypt"], Constraint::None),
            none,
        ),
    ]
}

// ---------------------------------------------------------------------------------------------
// Guardrails (service control policies), cross-account pairs, approvals
// ---------------------------------------------------------------------------------------------

const ORG: &str = "organisation root";
const ACCOUNT: &str = "account 111122223333";
const G_FULL: &str = "guardrail/FullAccess";
const G_FULL_DOC: &str = r#"{"Version":"2012-10-17","Statement":[{"Sid":"All","Effect":"Allow","Action":"*","Resource":"*"}]}"#;
const G_ENCRYPT: &str = "guardrail/EncryptOnly";
const G_ENCRYPT_DOC: &str = r#"{"Version":"2012-10-17","Statement":[{"Sid":"Enc","Effect":"Allow","Action":"kms:Encrypt","Resource":"*"}]}"#;
const G_WINDOW: &str = "guardrail/MinimumDeletionWindow";
const G_WINDOW_DOC: &str = r#"{"Version":"2012-10-17","Statement":[{"Sid":"Window","Effect":"Deny","Action":"kms:ScheduleKeyDeletion","Resource":"*","Condition":{"NumericLessThan":{"kms:ScheduleKeyDeletionPendingWindowInDays":"30"}}}]}"#;
const G_HSM: &str = "guardrail/HsmOnly";
const G_HSM_DOC: &str = r#"{"Version":"2012-10-17","Statement":[{"Sid":"Hsm","Effect":"Deny","Action":"kms:CreateKey","Resource":"*","Condition":{"StringNotLike":{"keyhaven:KeyStore":"pkcs11:*"}}}]}"#;

/// Full access at both levels: the path caps nothing.
const OPEN: Levels = &[
    (ORG, &[(G_FULL, G_FULL_DOC)]),
    (ACCOUNT, &[(G_FULL, G_FULL_DOC)]),
];
/// Full access at the root, Encrypt only at the account.
const ENCRYPT_ONLY: Levels = &[
    (ORG, &[(G_FULL, G_FULL_DOC)]),
    (ACCOUNT, &[(G_FULL, G_ENCRYPT_DOC)]),
];
/// The account level has no policy at all.
const EMPTY_ACCOUNT: Levels = &[(ORG, &[(G_FULL, G_FULL_DOC)]), (ACCOUNT, &[])];
/// The deletion-window and HSM guardrails at the root, beside full access.
const WINDOW: Levels = &[
    (
        ORG,
        &[
            (G_FULL, G_FULL_DOC),
            (G_WINDOW, G_WINDOW_DOC),
            (G_HSM, G_HSM_DOC),
        ],
    ),
    (ACCOUNT, &[(G_FULL, G_FULL_DOC)]),
];
const SEVEN_DAYS: Ctx = &[("kms:ScheduleKeyDeletionPendingWindowInDays", &["7"])];
const THIRTY_DAYS: Ctx = &[("kms:ScheduleKeyDeletionPendingWindowInDays", &["30"])];

fn guardrail_cases() -> Vec<Case> {
    let alice = Some(vec![(P_USER, ID_KMS_ALL)]);
    vec![
        Case {
            name: "guardrail: full access at every level decides as without guardrails",
            key_policy: Some(KP_DEFAULT),
            identity: alice.clone(),
            guardrails: OPEN,
            expected: allowed(P_USER, "KmsAll"),
            ..BASE
        },
        Case {
            name: "guardrail: an allow of a guardrail allows nothing by itself",
            key_policy: Some(KP_DEFAULT),
            identity: Some(vec![(P_USER, allow_action("kms:Decrypt"))]),
            guardrails: OPEN,
            expected: IMPLICIT,
            ..BASE
        },
        Case {
            name: "guardrail: an action the account level allows goes through",
            key_policy: Some(KP_DEFAULT),
            identity: alice.clone(),
            guardrails: ENCRYPT_ONLY,
            expected: allowed(P_USER, "KmsAll"),
            ..BASE
        },
        Case {
            name: "guardrail: an action the account level does not allow is refused there",
            key_policy: Some(KP_DEFAULT),
            identity: alice.clone(),
            action: "kms:Decrypt",
            guardrails: ENCRYPT_ONLY,
            expected: IMPLICIT,
            capped_by: Some(ACCOUNT),
            ..BASE
        },
        Case {
            name: "guardrail: a level without policies refuses everything",
            key_policy: Some(KP_DEFAULT),
            identity: alice.clone(),
            guardrails: EMPTY_ACCOUNT,
            expected: IMPLICIT,
            capped_by: Some(ACCOUNT),
            ..BASE
        },
        Case {
            name: "guardrail: the root level refuses before the account level",
            key_policy: Some(KP_DEFAULT),
            identity: alice.clone(),
            action: "kms:Decrypt",
            guardrails: &[(ORG, &[(G_ENCRYPT, G_ENCRYPT_DOC)]), (ACCOUNT, &[])],
            expected: IMPLICIT,
            capped_by: Some(ORG),
            ..BASE
        },
        Case {
            name: "guardrail: a deletion window under 30 days is denied",
            key_policy: Some(KP_DEFAULT),
            identity: alice.clone(),
            action: "kms:ScheduleKeyDeletion",
            context: SEVEN_DAYS,
            guardrails: WINDOW,
            expected: denied(G_WINDOW, "Window"),
            capped_by: Some(ORG),
            ..BASE
        },
        Case {
            name: "guardrail: a deletion window of 30 days goes through",
            key_policy: Some(KP_DEFAULT),
            identity: alice.clone(),
            action: "kms:ScheduleKeyDeletion",
            context: THIRTY_DAYS,
            guardrails: WINDOW,
            expected: allowed(P_USER, "KmsAll"),
            ..BASE
        },
        Case {
            name: "guardrail: the management account (no levels) is exempt",
            key_policy: Some(KP_DEFAULT),
            identity: alice.clone(),
            action: "kms:ScheduleKeyDeletion",
            context: SEVEN_DAYS,
            expected: allowed(P_USER, "KmsAll"),
            ..BASE
        },
        Case {
            name: "guardrail: the root of a member account is capped by a deny",
            key_policy: Some(KP_DEFAULT),
            identity: None,
            principals: ROOT,
            action: "kms:ScheduleKeyDeletion",
            context: SEVEN_DAYS,
            guardrails: WINDOW,
            expected: denied(G_WINDOW, "Window"),
            capped_by: Some(ORG),
            ..BASE
        },
        Case {
            name: "guardrail: the root of a member account is capped by a missing allow",
            key_policy: Some(KP_DEFAULT),
            identity: None,
            principals: ROOT,
            action: "kms:Decrypt",
            guardrails: ENCRYPT_ONLY,
            expected: IMPLICIT,
            capped_by: Some(ACCOUNT),
            ..BASE
        },
        Case {
            name: "guardrail: the root without a resource policy is capped too",
            identity: None,
            principals: ROOT,
            action: "kms:CreateKey",
            resource: "*",
            context: &[("keyhaven:KeyStore", &["sealed"])],
            guardrails: WINDOW,
            expected: denied(G_HSM, "Hsm"),
            capped_by: Some(ORG),
            ..BASE
        },
        Case {
            name: "guardrail: keys made in a PKCS#11 keystore go through the HSM guardrail",
            identity: alice.clone(),
            action: "kms:CreateKey",
            resource: "*",
            context: &[("keyhaven:KeyStore", &["pkcs11:hsm"])],
            guardrails: WINDOW,
            expected: allowed(P_USER, "KmsAll"),
            ..BASE
        },
        Case {
            name: "guardrail: a key policy allowing the caller directly is still capped",
            key_policy: Some(doc(&[
                r#"{"Sid":"Alice","Effect":"Allow","Principal":{"AWS":"arn:aws:iam::111122223333:user/alice"},"Action":"kms:*","Resource":"*"}"#,
            ])),
            identity: Some(vec![]),
            action: "kms:Decrypt",
            guardrails: ENCRYPT_ONLY,
            expected: IMPLICIT,
            capped_by: Some(ACCOUNT),
            ..BASE
        },
        Case {
            name: "guardrail: a grant does not pass a guardrail's deny",
            key_policy: Some(KP_DEFAULT),
            identity: Some(vec![]),
            action: "kms:ScheduleKeyDeletion",
            context: SEVEN_DAYS,
            grants: &[Grant {
                id: "g-all",
                grantee: ALICE_ARN,
                operations: &["ScheduleKeyDeletion"],
                constraint: Constraint::None,
            }],
            guardrails: WINDOW,
            expected: denied(G_WINDOW, "Window"),
            capped_by: Some(ORG),
            ..BASE
        },
        Case {
            name: "guardrail: its deny is named before an identity policy's",
            key_policy: Some(KP_DEFAULT),
            identity: Some(vec![(
                P_USER,
                doc(&[
                    r#"{"Sid":"NoDelete","Effect":"Deny","Action":"kms:ScheduleKeyDeletion","Resource":"*"}"#,
                ]),
            )]),
            action: "kms:ScheduleKeyDeletion",
            context: SEVEN_DAYS,
            guardrails: WINDOW,
            expected: denied(G_WINDOW, "Window"),
            capped_by: Some(ORG),
            ..BASE
        },
        Case {
            name: "guardrail: what it lets through is still denied by an identity policy",
            key_policy: Some(KP_DEFAULT),
            identity: Some(vec![(
                P_USER,
                doc(&[
                    r#"{"Sid":"NoDelete","Effect":"Deny","Action":"kms:ScheduleKeyDeletion","Resource":"*"}"#,
                ]),
            )]),
            action: "kms:ScheduleKeyDeletion",
            context: THIRTY_DAYS,
            guardrails: WINDOW,
            expected: denied(P_USER, "NoDelete"),
            ..BASE
        },
    ]
}

const MEMBER_ROOT: &str = "arn:aws:iam::444455556666:root";
const DAVE_ARN: &str = "arn:aws:iam::444455556666:user/dave";
const DAVE: &[&str] = &[DAVE_ARN];
const MEMBER_ROOT_ONLY: &[&str] = &[MEMBER_ROOT];
const P_DAVE: &str = "user/dave/Main";
/// The key's account delegates to its own account and to 444455556666.
const KP_SHARED: &str = r#"{"Version":"2012-10-17","Statement":[{"Sid":"EnableIAM","Effect":"Allow","Principal":{"AWS":"arn:aws:iam::111122223333:root"},"Action":"kms:*","Resource":"*"},{"Sid":"Partner","Effect":"Allow","Principal":{"AWS":"arn:aws:iam::444455556666:root"},"Action":["kms:Encrypt","kms:Decrypt"],"Resource":"*"}]}"#;
/// The key policy names dave himself.
const KP_DAVE: &str = r#"{"Version":"2012-10-17","Statement":[{"Sid":"EnableIAM","Effect":"Allow","Principal":{"AWS":"arn:aws:iam::111122223333:root"},"Action":"kms:*","Resource":"*"},{"Sid":"Dave","Effect":"Allow","Principal":{"AWS":"arn:aws:iam::444455556666:user/dave"},"Action":"kms:Encrypt","Resource":"*"}]}"#;

fn cross_account_cases() -> Vec<Case> {
    let cross = Case {
        principals: DAVE,
        caller_root: MEMBER_ROOT,
        ..BASE
    };
    vec![
        Case {
            name: "cross-account: key policy delegates to the account and dave's policy allows",
            key_policy: Some(KP_SHARED),
            identity: Some(vec![(P_DAVE, ID_KMS_ALL)]),
            expected: allowed(P_DAVE, "KmsAll"),
            ..cross
        },
        Case {
            name: "cross-account: key policy delegates but dave's policies are silent",
            key_policy: Some(KP_SHARED),
            identity: Some(vec![]),
            ..cross
        },
        Case {
            name: "cross-account: dave's policy allows but the key policy names only its own account",
            key_policy: Some(KP_DEFAULT),
            identity: Some(vec![(P_DAVE, ID_KMS_ALL)]),
            ..cross
        },
        Case {
            name: "cross-account: an action the key policy does not share is refused",
            key_policy: Some(KP_SHARED),
            identity: Some(vec![(P_DAVE, ID_KMS_ALL)]),
            action: "kms:ScheduleKeyDeletion",
            ..cross
        },
        Case {
            name: "cross-account: the key policy naming dave is not enough alone",
            key_policy: Some(KP_DAVE),
            identity: Some(vec![]),
            ..cross
        },
        Case {
            name: "cross-account: the key policy naming dave and dave's policy allow",
            key_policy: Some(KP_DAVE),
            identity: Some(vec![(P_DAVE, ID_KMS_ALL)]),
            expected: allowed(KP, "Dave"),
            ..cross
        },
        Case {
            name: "cross-account: the other account's root uses what the key policy shares",
            key_policy: Some(KP_SHARED),
            identity: None,
            principals: MEMBER_ROOT_ONLY,
            expected: allowed(KP, "Partner"),
            ..cross
        },
        Case {
            name: "cross-account: the other account's root is refused what it does not share",
            key_policy: Some(KP_DEFAULT),
            identity: None,
            principals: MEMBER_ROOT_ONLY,
            ..cross
        },
        Case {
            name: "cross-account: a key policy deny naming the account covers dave",
            key_policy: Some(doc(&[
                r#"{"Sid":"Partner","Effect":"Allow","Principal":{"AWS":"arn:aws:iam::444455556666:root"},"Action":"kms:*","Resource":"*"}"#,
                r#"{"Sid":"NotThem","Effect":"Deny","Principal":{"AWS":"arn:aws:iam::444455556666:root"},"Action":"kms:Encrypt","Resource":"*"}"#,
            ])),
            identity: Some(vec![(P_DAVE, ID_KMS_ALL)]),
            expected: denied(KP, "NotThem"),
            ..cross
        },
        Case {
            name: "cross-account: the caller's guardrails apply to another account's key",
            key_policy: Some(KP_SHARED),
            identity: Some(vec![(P_DAVE, ID_KMS_ALL)]),
            action: "kms:Decrypt",
            guardrails: &[
                (ORG, &[(G_FULL, G_FULL_DOC)]),
                ("account 444455556666", &[(G_ENCRYPT, G_ENCRYPT_DOC)]),
            ],
            capped_by: Some("account 444455556666"),
            ..cross
        },
        Case {
            name: "cross-account: a resource without an account is the caller's own",
            identity: Some(vec![(P_DAVE, ID_KMS_ALL)]),
            action: "kms:CreateKey",
            resource: "*",
            expected: allowed(P_DAVE, "KmsAll"),
            ..cross
        },
    ]
}

/// `keyhaven:ApproveRequest` is an action of its own: `kms:*` does not cover it, and the key
/// policy decides it like any key action.
fn approval_cases() -> Vec<Case> {
    const APPROVE: &str = "keyhaven:ApproveRequest";
    vec![
        Case {
            name: "approval: kms:* does not allow approving",
            key_policy: Some(KP_DEFAULT),
            identity: Some(vec![(P_USER, ID_KMS_ALL)]),
            action: APPROVE,
            ..BASE
        },
        Case {
            name: "approval: an identity policy naming the action allows it through delegation",
            key_policy: Some(doc(&[
                r#"{"Sid":"EnableIAM","Effect":"Allow","Principal":{"AWS":"arn:aws:iam::111122223333:root"},"Action":["kms:*","keyhaven:ApproveRequest"],"Resource":"*"}"#,
            ])),
            identity: Some(vec![(P_BOB, allow_action(APPROVE))]),
            principals: BOB,
            action: APPROVE,
            expected: allowed(P_BOB, "Act"),
            ..BASE
        },
        Case {
            name: "approval: a key policy delegating kms:* only keeps approving out",
            key_policy: Some(KP_DEFAULT),
            identity: Some(vec![(P_BOB, allow_action(APPROVE))]),
            principals: BOB,
            action: APPROVE,
            ..BASE
        },
        Case {
            name: "approval: a key policy naming the approver allows",
            key_policy: Some(doc(&[
                ROOT_STMT,
                r#"{"Sid":"Approver","Effect":"Allow","Principal":{"AWS":"arn:aws:iam::111122223333:user/bob"},"Action":"keyhaven:ApproveRequest","Resource":"*"}"#,
            ])),
            identity: Some(vec![]),
            principals: BOB,
            action: APPROVE,
            expected: allowed(KP, "Approver"),
            ..BASE
        },
        Case {
            name: "approval: a deny of approving wins over the key policy",
            key_policy: Some(doc(&[
                ROOT_STMT,
                r#"{"Sid":"Approver","Effect":"Allow","Principal":{"AWS":"arn:aws:iam::111122223333:user/bob"},"Action":"keyhaven:ApproveRequest","Resource":"*"}"#,
            ])),
            identity: Some(vec![(
                P_BOB,
                doc(&[
                    r#"{"Sid":"NoApprove","Effect":"Deny","Action":"keyhaven:*","Resource":"*"}"#,
                ]),
            )]),
            principals: BOB,
            action: APPROVE,
            expected: denied(P_BOB, "NoApprove"),
            ..BASE
        },
        Case {
            name: "approval: a guardrail can keep a member account from approving",
            key_policy: Some(doc(&[
                ROOT_STMT,
                r#"{"Sid":"Approver","Effect":"Allow","Principal":{"AWS":"arn:aws:iam::111122223333:user/bob"},"Action":"keyhaven:ApproveRequest","Resource":"*"}"#,
            ])),
            identity: Some(vec![]),
            principals: BOB,
            action: APPROVE,
            guardrails: ENCRYPT_ONLY,
            capped_by: Some(ACCOUNT),
            ..BASE
        },
    ]
}

const PROVIDER_ARN: &str = "arn:aws:iam::111122223333:oidc-provider/issuer.example/ci";
const WEB: &[&str] = &["federated:arn:aws:iam::111122223333:oidc-provider/issuer.example/ci"];
const ROLE_DEPLOY: &str = "arn:aws:iam::111122223333:role/deployer";

/// Trust policies judging web identities (`AssumeRoleWithWebIdentity`): the provider is the
/// principal, named by `Federated` only.
fn federated_cases() -> Vec<Case> {
    let web = || Case {
        principals: WEB,
        identity: Some(vec![]),
        action: "sts:AssumeRoleWithWebIdentity",
        resource: ROLE_DEPLOY,
        ..BASE
    };
    let trust = |principal: &str, condition: &str| {
        doc(&[&format!(
            r#"{{"Sid":"Trust","Effect":"Allow","Principal":{principal},"Action":"sts:AssumeRoleWithWebIdentity"{condition}}}"#
        )])
    };
    let federated = leak(format!(r#"{{"Federated":"{PROVIDER_ARN}"}}"#));
    vec![
        Case {
            name: "federated: the provider named in the trust policy is let in",
            key_policy: Some(trust(federated, "")),
            expected: allowed(KP, "Trust"),
            ..web()
        },
        Case {
            name: "federated: a condition on the token's sub lets its workload in",
            key_policy: Some(trust(
                federated,
                r#","Condition":{"StringEquals":{"issuer.example/ci:sub":"repo:acme/app"}}"#,
            )),
            context: &[("issuer.example/ci:sub", &["repo:acme/app"])],
            expected: allowed(KP, "Trust"),
            ..web()
        },
        Case {
            name: "federated: a condition on the token's sub keeps another workload out",
            key_policy: Some(trust(
                federated,
                r#","Condition":{"StringEquals":{"issuer.example/ci:sub":"repo:acme/app"}}"#,
            )),
            context: &[("issuer.example/ci:sub", &["repo:acme/other"])],
            ..web()
        },
        Case {
            name: "federated: Principal * does not let a web identity in",
            key_policy: Some(trust(r#""*""#, "")),
            ..web()
        },
        Case {
            name: "federated: an AWS principal pattern does not match a provider",
            key_policy: Some(trust(r#"{"AWS":"arn:aws:iam::111122223333:*"}"#, "")),
            ..web()
        },
        Case {
            name: "federated: trusting the account root does not let a web identity in",
            key_policy: Some(trust(r#"{"AWS":"arn:aws:iam::111122223333:root"}"#, "")),
            ..web()
        },
        Case {
            name: "federated: another provider of the account is not let in",
            key_policy: Some(trust(
                r#"{"Federated":"arn:aws:iam::111122223333:oidc-provider/other.example"}"#,
                "",
            )),
            ..web()
        },
        Case {
            name: "federated: a Deny of everyone covers a web identity",
            key_policy: Some(doc(&[
                &format!(
                    r#"{{"Sid":"Trust","Effect":"Allow","Principal":{federated},"Action":"sts:AssumeRoleWithWebIdentity"}}"#
                ),
                r#"{"Sid":"Nobody","Effect":"Deny","Principal":"*","Action":"sts:*"}"#,
            ])),
            expected: denied(KP, "Nobody"),
            ..web()
        },
        Case {
            name: "federated: a provider named in a key policy lets no AWS caller in",
            key_policy: Some(doc(&[&format!(
                r#"{{"Sid":"Odd","Effect":"Allow","Principal":{federated},"Action":"kms:*","Resource":"*"}}"#
            )])),
            identity: Some(vec![]),
            ..BASE
        },
    ]
}

fn all_cases() -> Vec<Case> {
    let mut cases = Vec::new();
    cases.extend(delegation_cases());
    cases.extend(no_resource_policy_cases());
    cases.extend(deny_cases());
    cases.extend(wildcard_cases());
    cases.extend(not_action_resource_cases());
    cases.extend(principal_cases());
    cases.extend(operator_cases());
    cases.extend(if_exists_cases());
    cases.extend(and_or_cases());
    cases.extend(set_operator_cases());
    cases.extend(context_key_cases());
    cases.extend(grammar_and_variable_cases());
    cases.extend(mfa_cases());
    cases.extend(grant_cases());
    cases.extend(guardrail_cases());
    cases.extend(cross_account_cases());
    cases.extend(approval_cases());
    cases.extend(federated_cases());
    cases
}

// ---------------------------------------------------------------------------------------------
// The runner
// ---------------------------------------------------------------------------------------------

fn parse(text: &str, kind: PolicyKind, what: &str) -> Result<Arc<Policy>, String> {
    Policy::parse(text, kind)
        .map(Arc::new)
        .map_err(|e| format!("{what} does not parse: {e}\n      {text}"))
}

fn describe(decision: Decision, statement: Option<&MatchedStatement>) -> String {
    match statement {
        Some(s) => format!(
            "{} by {:?} / {:?}",
            decision.as_str(),
            s.policy,
            s.sid.as_deref()
        ),
        None => format!("{} (no statement)", decision.as_str()),
    }
}

/// The request context of a row. Encryption-context pairs are added as the daemon adds them
/// (two spellings of one key are candidates for it); other keys are set.
fn request_context(entries: Ctx) -> RequestContext {
    let mut context = RequestContext::new();
    for (key, values) in entries {
        let pair = key
            .to_ascii_lowercase()
            .starts_with("kms:encryptioncontext:");
        match values {
            [one] if pair => {
                context.add_spelling(key, *one);
            }
            _ => {
                context.set_all(key, values.iter().map(|v| (*v).to_owned()).collect());
            }
        }
    }
    context
}

/// Runs one row; `Err` says how it disagreed.
fn run(case: &Case) -> Result<(), String> {
    let key_policy = case
        .key_policy
        .map(|text| {
            parse(text, PolicyKind::Resource, "key policy").map(|policy| NamedPolicy {
                name: KP.to_owned(),
                policy,
            })
        })
        .transpose()?;
    let identity_policies = case
        .identity
        .iter()
        .flatten()
        .map(|(name, text)| {
            parse(text, PolicyKind::Identity, name).map(|policy| NamedPolicy {
                name: (*name).to_owned(),
                policy,
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let identity = match case.identity {
        None => {
            if case.principals != [case.caller_root] {
                return Err("table error: the root caller must have its root as principals".into());
            }
            Identity::Root
        }
        Some(_) => Identity::Policies(&identity_policies),
    };
    let principals: Vec<String> = case.principals.iter().map(|p| (*p).to_owned()).collect();
    let context = request_context(case.context);
    let request = Request {
        principals: &principals,
        account_root: case.caller_root,
        action: case.action,
        resource: case.resource,
        context: &context,
    };
    let grants: Vec<GrantRule> = case
        .grants
        .iter()
        .map(|g| GrantRule {
            grant_id: g.id.to_owned(),
            grantee: g.grantee.to_owned(),
            operations: g.operations.iter().map(|o| (*o).to_owned()).collect(),
            constraint: constraint(g.constraint),
        })
        .collect();
    let (asked_context, new_operations, new_constraint);
    let ask = match case.ask {
        Ask::Plain => GrantAsk::Plain,
        Ask::Context(pairs) => {
            asked_context = map(pairs);
            GrantAsk::Context(&asked_context)
        }
        Ask::NewGrant(operations, wanted) => {
            new_operations = operations
                .iter()
                .map(|o| (*o).to_owned())
                .collect::<Vec<_>>();
            new_constraint = constraint(wanted);
            GrantAsk::NewGrant {
                operations: &new_operations,
                constraint: &new_constraint,
            }
        }
    };
    let guardrails = case
        .guardrails
        .iter()
        .map(|(level, policies)| {
            let policies = policies
                .iter()
                .map(|(name, text)| {
                    parse(text, PolicyKind::Identity, name).map(|policy| NamedPolicy {
                        name: (*name).to_owned(),
                        policy,
                    })
                })
                .collect::<Result<Vec<_>, _>>()?;
            Ok(GuardrailLevel {
                name: (*level).to_owned(),
                policies,
            })
        })
        .collect::<Result<Vec<_>, String>>()?;
    let outcome = evaluate_within(
        &request,
        &guardrails,
        key_policy.as_ref(),
        &identity,
        &grants,
        &ask,
    );
    if outcome.guardrail.as_deref() != case.capped_by {
        return Err(format!(
            "expected the refusing guardrail level {:?}, got {:?} ({})",
            case.capped_by,
            outcome.guardrail,
            describe(outcome.decision, outcome.deciding_statement.as_ref())
        ));
    }
    if outcome.deciding_grant.as_deref() != case.by_grant {
        return Err(format!(
            "expected the deciding grant {:?}, got {:?} ({})",
            case.by_grant,
            outcome.deciding_grant,
            describe(outcome.decision, outcome.deciding_statement.as_ref())
        ));
    }

    let (decision, statement) = case.expected;
    let expected_statement = statement.map(|(policy, sid)| MatchedStatement {
        policy: policy.to_owned(),
        sid: sid.map(str::to_owned),
    });
    if outcome.decision == decision && outcome.deciding_statement == expected_statement {
        Ok(())
    } else {
        Err(format!(
            "expected {}, got {}",
            describe(decision, expected_statement.as_ref()),
            describe(outcome.decision, outcome.deciding_statement.as_ref())
        ))
    }
}

fn map(pairs: Pairs) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

fn constraint(constraint: Constraint) -> GrantConstraint {
    match constraint {
        Constraint::None => GrantConstraint::None,
        Constraint::Equals(pairs) => GrantConstraint::EncryptionContextEquals(map(pairs)),
        Constraint::Subset(pairs) => GrantConstraint::EncryptionContextSubset(map(pairs)),
    }
}

#[test]
fn policy_evaluation_table() {
    let cases = all_cases();
    assert!(
        cases.len() >= 150,
        "the table has {} cases; it should have at least 150",
        cases.len()
    );
    let mut names = HashSet::new();
    for case in &cases {
        assert!(
            names.insert(case.name),
            "duplicate case name: {}",
            case.name
        );
    }

    let failures: Vec<String> = cases
        .iter()
        .filter_map(|case| {
            run(case)
                .err()
                .map(|why| format!("  - {}\n      {why}", case.name))
        })
        .collect();
    assert!(
        failures.is_empty(),
        "{} of {} cases disagree with AWS IAM semantics:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

// ---------------------------------------------------------------------------------------------
// Randomised invariants
// ---------------------------------------------------------------------------------------------

mod invariants {
    //! Random policies and requests over a small vocabulary, checked against invariants that
    //! hold whatever the policies say.

    use super::*;
    use proptest::prelude::*;

    const ACTIONS: &[&str] = &[
        "kms:*",
        "kms:Encrypt",
        "kms:Decrypt",
        "kms:Gen*",
        "*",
        "kms:?ncrypt",
    ];
    const RESOURCES: &[&str] = &["*", KEY, OTHER_KEY, "arn:aws:kms:*:111122223333:key/*"];
    const OPERATORS: &[&str] = &[
        "StringEquals",
        "StringNotEquals",
        "StringLike",
        "StringNotLike",
        "StringEqualsIfExists",
        "StringNotEqualsIfExists",
        "StringEqualsIgnoreCase",
        "ForAnyValue:StringEquals",
        "ForAllValues:StringEquals",
    ];
    const VALUES: &[&str] = &["a", "b", "*", "A"];

    /// One statement: (effect, action, resource, optional (operator, value, null check)).
    type Spec = (bool, usize, usize, Option<(usize, usize, Option<bool>)>);

    fn statement(spec: &Spec, sid: usize, principal: bool) -> String {
        let (deny, action, resource, condition) = spec;
        let condition = match condition {
            None => String::new(),
            Some((_, _, Some(absent))) => {
                format!(r#","Condition":{{"Null":{{"kms:EncryptionContext:tenant":"{absent}"}}}}"#)
            }
            Some((operator, value, None)) => format!(
                r#","Condition":{{"{}":{{"kms:EncryptionContext:tenant":"{}"}}}}"#,
                OPERATORS[*operator], VALUES[*value]
            ),
        };
        format!(
            r#"{{"Sid":"S{sid}","Effect":"{}",{}"Action":"{}","Resource":"{}"{condition}}}"#,
            if *deny { "Deny" } else { "Allow" },
            if principal { r#""Principal":"*","# } else { "" },
            ACTIONS[*action],
            RESOURCES[*resource],
        )
    }

    fn spec() -> impl Strategy<Value = Spec> {
        (
            any::<bool>(),
            0..ACTIONS.len(),
            0..RESOURCES.len(),
            proptest::option::of((
                0..OPERATORS.len(),
                0..VALUES.len(),
                proptest::option::of(any::<bool>()),
            )),
        )
    }

    /// A key policy (the root delegation plus random statements) and one identity policy.
    #[derive(Debug, Clone)]
    struct World {
        key_policy: Vec<Spec>,
        identity: Vec<Spec>,
        action: &'static str,
        resource: &'static str,
        /// The tenant pair's value and the case of each letter of its key.
        tenant: Option<(&'static str, Vec<bool>)>,
    }

    fn world() -> impl Strategy<Value = World> {
        (
            proptest::collection::vec(spec(), 0..4),
            proptest::collection::vec(spec(), 0..4),
            prop::sample::select(vec!["kms:Encrypt", "kms:Decrypt", "kms:GenerateDataKey"]),
            prop::sample::select(vec![KEY, OTHER_KEY]),
            proptest::option::of((
                prop::sample::select(vec!["a", "b", "c", "A"]),
                proptest::collection::vec(any::<bool>(), 6),
            )),
        )
            .prop_map(|(key_policy, identity, action, resource, tenant)| World {
                key_policy,
                identity,
                action,
                resource,
                tenant,
            })
    }

    fn spelt(upper: &[bool]) -> String {
        "tenant"
            .chars()
            .zip(upper)
            .map(|(c, up)| if *up { c.to_ascii_uppercase() } else { c })
            .collect()
    }

    /// The decision for `world`, with `extra_key` / `extra_identity` statements appended.
    fn decide(world: &World, extra_key: &[String], extra_identity: &[String]) -> Decision {
        let mut key_statements = vec![ROOT_STMT.to_owned()];
        key_statements.extend(
            world
                .key_policy
                .iter()
                .enumerate()
                .map(|(i, s)| statement(s, i, true)),
        );
        key_statements.extend_from_slice(extra_key);
        let mut identity_statements: Vec<String> = world
            .identity
            .iter()
            .enumerate()
            .map(|(i, s)| statement(s, i, false))
            .collect();
        identity_statements.extend_from_slice(extra_identity);
        let parse = |statements: &[String], kind| {
            Arc::new(
                Policy::parse(
                    &format!(
                        r#"{{"Version":"2012-10-17","Statement":[{}]}}"#,
                        statements.join(",")
                    ),
                    kind,
                )
                .expect("generated policies parse"),
            )
        };
        let key_policy = NamedPolicy {
            name: KP.into(),
            policy: parse(&key_statements, PolicyKind::Resource),
        };
        let identity = if identity_statements.is_empty() {
            vec![]
        } else {
            vec![NamedPolicy {
                name: P_USER.into(),
                policy: parse(&identity_statements, PolicyKind::Identity),
            }]
        };
        let mut context = RequestContext::new();
        if let Some((value, upper)) = &world.tenant {
            context.add_spelling(&format!("kms:EncryptionContext:{}", spelt(upper)), *value);
        }
        let principals = vec![ALICE_ARN.to_owned()];
        let request = Request {
            principals: &principals,
            account_root: ROOT_ARN,
            action: world.action,
            resource: world.resource,
            context: &context,
        };
        keyhaven::policy::evaluate(&request, Some(&key_policy), &Identity::Policies(&identity))
            .decision
    }

    proptest! {
        /// An unconditional Deny of the action, in either policy, wins over everything.
        #[test]
        fn an_explicit_deny_always_wins(world in world(), in_key_policy in any::<bool>()) {
            let deny = |principal: bool| format!(
                r#"{{"Sid":"Wins","Effect":"Deny",{}"Action":"{}","Resource":"*"}}"#,
                if principal { r#""Principal":"*","# } else { "" },
                world.action
            );
            let decision = if in_key_policy {
                decide(&world, &[deny(true)], &[])
            } else {
                decide(&world, &[], &[deny(false)])
            };
            prop_assert_eq!(decision, ExplicitDeny);
        }

        /// How the request spells the encryption-context key never changes the decision.
        #[test]
        fn case_variants_of_the_context_key_evaluate_the_same(world in world(), other_case in proptest::collection::vec(any::<bool>(), 6)) {
            let mut respelt = world.clone();
            if let Some((_, upper)) = &mut respelt.tenant {
                *upper = other_case;
            }
            prop_assert_eq!(decide(&world, &[], &[]), decide(&respelt, &[], &[]));
        }

        /// Statements for another service, Allow or Deny, never change a decision.
        #[test]
        fn statements_for_another_service_change_nothing(world in world(), deny in any::<bool>(), star in any::<bool>()) {
            let effect = if deny { "Deny" } else { "Allow" };
            let resource = if star { "*" } else { "arn:aws:s3:::bucket/*" };
            let key = format!(r#"{{"Sid":"S3","Effect":"{effect}","Principal":"*","Action":["s3:*","ec2:Describe*"],"Resource":"{resource}"}}"#);
            let identity = format!(r#"{{"Sid":"S3","Effect":"{effect}","Action":"s3:GetObject","Resource":"{resource}"}}"#);
            let before = decide(&world, &[], &[]);
            prop_assert_eq!(before, decide(&world, &[key], &[]));
            prop_assert_eq!(before, decide(&world, &[], &[identity]));
        }
    }
}
