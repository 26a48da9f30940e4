//! Policy documents: parsing and validation, with errors that say where.
//!
//! Element and key names are AWS's (`Version`, `Statement`, `Sid`, `Effect`, `Principal`,
//! `Action`/`NotAction`, `Resource`/`NotResource`, `Condition`), so a key policy written for
//! AWS KMS parses here unchanged.

use super::condition::{Condition, Operator, SetQualifier, normalise_key};
use super::{condition_keys, variables};
use serde_json::{Map, Value};

/// The `Sid` of [`Policy::deny_all`]'s one statement, which names the cause in audit and
/// simulator answers.
pub const UNREADABLE_SID: &str = "PolicyUnreadableDeniesEverything";

/// Largest policy document accepted.
pub const MAX_POLICY_BYTES: usize = 32 * 1024;
const VERSIONS: [&str; 2] = ["2012-10-17", "2008-10-17"];

/// How a document is read: as one being put (every check), or as one stored by an earlier
/// version, which passed the checks of its day (later, stricter put-time checks must not
/// turn a working key policy into a locked key).
#[derive(Debug, Clone, Copy)]
struct Grammar {
    kind: PolicyKind,
    /// The checks made when a policy is put: condition keys and variables of our namespaces
    /// must exist, and variables must be well formed (a stored policy whose variable is not
    /// simply matches nothing where it stands).
    put_checks: bool,
    /// `${…}` are variables (Version 2012-10-17), not literal text.
    variables: bool,
}

/// Where a policy is used; it decides which elements are required or forbidden.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PolicyKind {
    /// Attached to a resource (key policies, role trust policies): `Principal` is required.
    Resource,
    /// Attached to a user, group or role: `Principal` is forbidden, `Resource` required.
    Identity,
}

/// A policy that failed to parse: the message says where.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct MalformedPolicy(pub String);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Effect {
    Allow,
    Deny,
}

/// The principals a resource-policy statement names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PrincipalMatch {
    /// `"*"` or `{"AWS": "*"}`: anyone.
    Anyone,
    /// ARNs; a bare 12-digit account id is kept as the account's root ARN pattern
    /// `arn:*:iam::<account>:root`.
    Arns(Vec<String>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Matcher {
    /// `Action` / `Resource`: matches when any pattern matches.
    Any(Vec<String>),
    /// `NotAction` / `NotResource`: matches when no pattern matches.
    None(Vec<String>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Statement {
    pub sid: Option<String>,
    pub effect: Effect,
    pub principal: Option<PrincipalMatch>,
    pub action: Matcher,
    pub resource: Matcher,
    pub conditions: Vec<Condition>,
    /// Whether `Resource` / `NotResource` hold policy variables to resolve.
    pub variables: bool,
}

/// A parsed, valid policy document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    pub version: String,
    pub id: Option<String>,
    pub statements: Vec<Statement>,
}

fn err(message: impl Into<String>) -> MalformedPolicy {
    MalformedPolicy(message.into())
}

/// One string or a list of strings.
fn strings(value: &Value, at: &str) -> Result<Vec<String>, MalformedPolicy> {
    match value {
        Value::String(s) => Ok(vec![s.clone()]),
        Value::Array(items) if !items.is_empty() => items
            .iter()
            .enumerate()
            .map(|(i, item)| match item {
                Value::String(s) => Ok(s.clone()),
                _ => Err(err(format!("{at}[{i}] must be a string"))),
            })
            .collect(),
        Value::Array(_) => Err(err(format!("{at} must not be empty"))),
        _ => Err(err(format!("{at} must be a string or a list of strings"))),
    }
}

/// Condition values: strings, numbers and booleans, one or a list.
fn condition_values(value: &Value, at: &str) -> Result<Vec<String>, MalformedPolicy> {
    let scalar = |v: &Value, at: &str| match v {
        Value::String(s) => Ok(s.clone()),
        Value::Bool(b) => Ok(b.to_string()),
        Value::Number(n) => Ok(n.to_string()),
        _ => Err(err(format!("{at} must be a string, number or boolean"))),
    };
    match value {
        Value::Array(items) if !items.is_empty() => items
            .iter()
            .enumerate()
            .map(|(i, v)| scalar(v, &format!("{at}[{i}]")))
            .collect(),
        Value::Array(_) => Err(err(format!("{at} must not be empty"))),
        other => Ok(vec![scalar(other, at)?]),
    }
}

fn parse_principal(value: &Value, at: &str) -> Result<PrincipalMatch, MalformedPolicy> {
    match value {
        Value::String(s) if s == "*" => Ok(PrincipalMatch::Anyone),
        Value::String(_) => Err(err(format!("{at} must be \"*\" or {{\"AWS\": ...}}"))),
        Value::Object(map) => {
            let mut arns = Vec::new();
            for (kind, names) in map {
                if kind == "Federated" {
                    // An identity provider (`arn:…:iam::<account>:oidc-provider/<issuer>`):
                    // web identities it vouches for (AssumeRoleWithWebIdentity). Kept apart
                    // from AWS principals: no AWS pattern matches one, nor one an AWS caller.
                    for (i, name) in strings(names, &format!("{at}.Federated"))?
                        .into_iter()
                        .enumerate()
                    {
                        if !is_provider_arn(&name) {
                            return Err(err(format!(
                                "{at}.Federated[{i}] must be an identity provider's ARN \
                                 (arn:…:iam::<account>:oidc-provider/<issuer>), without wildcards"
                            )));
                        }
                        arns.push(format!("{FEDERATED_PREFIX}{name}"));
                    }
                    continue;
                }
                if kind != "AWS" {
                    return Err(err(format!(
                        "{at}: principal type \"{kind}\" is not supported; use \"AWS\" or \
                         \"Federated\""
                    )));
                }
                for (i, name) in strings(names, &format!("{at}.AWS"))?
                    .into_iter()
                    .enumerate()
                {
                    if name == "*" {
                        return Ok(PrincipalMatch::Anyone);
                    }
                    arns.push(principal_pattern(&name, &format!("{at}.AWS[{i}]"))?);
                }
            }
            if arns.is_empty() {
                return Err(err(format!("{at} names no principal")));
            }
            Ok(PrincipalMatch::Arns(arns))
        }
        _ => Err(err(format!("{at} must be \"*\" or an object"))),
    }
}

/// How a `Federated` principal is kept among a statement's principals, and how a web
/// identity's provider is named in a request: never the spelling of an AWS principal.
pub const FEDERATED_PREFIX: &str = "federated:";

/// `arn:<partition>:iam::<account>:oidc-provider/<issuer>` (or `saml-provider/<name>`),
/// without wildcards.
fn is_provider_arn(name: &str) -> bool {
    let parts: Vec<&str> = name.splitn(6, ':').collect();
    parts.len() == 6
        && parts[0] == "arn"
        && parts[2] == "iam"
        && parts[4].len() == 12
        && parts[4].bytes().all(|b| b.is_ascii_digit())
        && ["oidc-provider/", "saml-provider/"].iter().any(|kind| {
            parts[5]
                .strip_prefix(kind)
                .is_some_and(|rest| !rest.is_empty())
        })
        && !name.contains(['*', '?'])
}

/// An ARN, or an account id meaning that account's root.
fn principal_pattern(name: &str, at: &str) -> Result<String, MalformedPolicy> {
    if name.len() == 12 && name.bytes().all(|b| b.is_ascii_digit()) {
        return Ok(format!("arn:*:iam::{name}:root"));
    }
    let parts: Vec<&str> = name.splitn(6, ':').collect();
    if parts.len() != 6 || parts[0] != "arn" || !matches!(parts[2], "iam" | "sts") {
        return Err(err(format!(
            "{at}: \"{name}\" is not an account id or an IAM/STS principal ARN"
        )));
    }
    Ok(name.to_owned())
}

/// The keys a condition may not name when it is put: keys of our namespaces that do not exist,
/// in the condition's key and in its values' variables.
fn check_keys(condition: &Condition, key: &str, grammar: Grammar) -> Result<(), String> {
    if !grammar.put_checks {
        return Ok(());
    }
    condition_keys::check(key)?;
    if condition.variables {
        for value in &condition.values {
            for variable in variables::variable_keys(value)? {
                condition_keys::check(variable)?;
            }
        }
    }
    Ok(())
}

fn parse_conditions(
    value: &Value,
    at: &str,
    grammar: Grammar,
) -> Result<Vec<Condition>, MalformedPolicy> {
    let Value::Object(operators) = value else {
        return Err(err(format!("{at} must be an object")));
    };
    let mut conditions = Vec::new();
    for (name, block) in operators {
        let here = format!("{at}.{name}");
        let (qualifier, rest) = match name.split_once(':') {
            Some(("ForAllValues", rest)) => (SetQualifier::ForAllValues, rest),
            Some(("ForAnyValue", rest)) => (SetQualifier::ForAnyValue, rest),
            Some(_) => return Err(err(format!("{here}: unknown set operator"))),
            None => (SetQualifier::Single, name.as_str()),
        };
        let (operator_name, if_exists) = match rest.strip_suffix("IfExists") {
            Some(base) => (base, true),
            None => (rest, false),
        };
        let operator = Operator::from_name(operator_name).ok_or_else(|| {
            err(format!(
                "{here}: unknown condition operator \"{operator_name}\""
            ))
        })?;
        let Value::Object(keys) = block else {
            return Err(err(format!("{here} must be an object of condition keys")));
        };
        if keys.is_empty() {
            return Err(err(format!("{here} has no condition keys")));
        }
        for (key, values) in keys {
            let values = condition_values(values, &format!("{here}.{key}"))?;
            let string_operator = matches!(
                operator,
                Operator::StringEquals
                    | Operator::StringNotEquals
                    | Operator::StringEqualsIgnoreCase
                    | Operator::StringNotEqualsIgnoreCase
                    | Operator::StringLike
                    | Operator::StringNotLike
            );
            let condition = Condition {
                operator,
                if_exists,
                qualifier,
                key: normalise_key(key),
                variables: grammar.variables
                    && string_operator
                    && values.iter().any(|v| variables::has_variables(v)),
                values,
            };
            condition
                .validate()
                .and_then(|()| check_keys(&condition, key, grammar))
                .map_err(|problem| err(format!("{here}.{key}: {problem}")))?;
            conditions.push(condition);
        }
    }
    Ok(conditions)
}

fn parse_statement(
    value: &Value,
    at: &str,
    grammar: Grammar,
) -> Result<Statement, MalformedPolicy> {
    let kind = grammar.kind;
    let Value::Object(map) = value else {
        return Err(err(format!("{at} must be an object")));
    };
    for key in map.keys() {
        if !matches!(
            key.as_str(),
            "Sid"
                | "Effect"
                | "Principal"
                | "Action"
                | "NotAction"
                | "Resource"
                | "NotResource"
                | "Condition"
        ) {
            return Err(err(format!("{at}: unknown element \"{key}\"")));
        }
    }
    let sid = match map.get("Sid") {
        None => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(_) => return Err(err(format!("{at}.Sid must be a string"))),
    };
    let effect = match map.get("Effect") {
        Some(Value::String(s)) if s == "Allow" => Effect::Allow,
        Some(Value::String(s)) if s == "Deny" => Effect::Deny,
        Some(_) => return Err(err(format!("{at}.Effect must be \"Allow\" or \"Deny\""))),
        None => return Err(err(format!("{at}: Effect is missing"))),
    };
    let principal = match (map.get("Principal"), kind) {
        (Some(p), PolicyKind::Resource) => Some(parse_principal(p, &format!("{at}.Principal"))?),
        (None, PolicyKind::Resource) => {
            return Err(err(format!("{at}: Principal is missing")));
        }
        (Some(_), PolicyKind::Identity) => {
            return Err(err(format!(
                "{at}: Principal is not allowed in an identity policy"
            )));
        }
        (None, PolicyKind::Identity) => None,
    };
    let action = match (map.get("Action"), map.get("NotAction")) {
        (Some(a), None) => Matcher::Any(actions(a, &format!("{at}.Action"))?),
        (None, Some(a)) => Matcher::None(actions(a, &format!("{at}.NotAction"))?),
        (Some(_), Some(_)) => {
            return Err(err(format!("{at}: give Action or NotAction, not both")));
        }
        (None, None) => return Err(err(format!("{at}: Action is missing"))),
    };
    let resource = match (map.get("Resource"), map.get("NotResource"), kind) {
        (Some(r), None, _) => Matcher::Any(strings(r, &format!("{at}.Resource"))?),
        (None, Some(r), _) => Matcher::None(strings(r, &format!("{at}.NotResource"))?),
        (Some(_), Some(_), _) => {
            return Err(err(format!("{at}: give Resource or NotResource, not both")));
        }
        // A resource policy applies to its own resource.
        (None, None, PolicyKind::Resource) => Matcher::Any(vec!["*".into()]),
        (None, None, PolicyKind::Identity) => {
            return Err(err(format!("{at}: Resource is missing")));
        }
    };
    let conditions = match map.get("Condition") {
        Some(c) => parse_conditions(c, &format!("{at}.Condition"), grammar)?,
        None => Vec::new(),
    };
    let mut variables = false;
    if grammar.variables {
        let (Matcher::Any(patterns) | Matcher::None(patterns)) = &resource;
        let element = match &resource {
            Matcher::Any(_) => "Resource",
            Matcher::None(_) => "NotResource",
        };
        for (i, pattern) in patterns.iter().enumerate() {
            if !variables::has_variables(pattern) {
                continue;
            }
            variables = true;
            if grammar.put_checks {
                variables::variable_keys(pattern)
                    .and_then(|keys| keys.into_iter().try_for_each(condition_keys::check))
                    .map_err(|problem| err(format!("{at}.{element}[{i}]: {problem}")))?;
            }
        }
    }
    Ok(Statement {
        sid,
        effect,
        principal,
        action,
        resource,
        conditions,
        variables,
    })
}

/// Actions as AWS accepts them: `*`, or `<service>:<name>` for any service, the name with
/// `*` / `?` wildcards. Actions of services Keyhaven does not serve are accepted (a policy
/// written for AWS keeps its `s3:` statements) and simply never match.
fn actions(value: &Value, at: &str) -> Result<Vec<String>, MalformedPolicy> {
    let actions = strings(value, at)?;
    for (i, action) in actions.iter().enumerate() {
        let valid = action == "*"
            || action.split_once(':').is_some_and(|(service, name)| {
                !service.is_empty()
                    && service
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                    && !name.is_empty()
                    && name
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'*' || b == b'?')
            });
        if !valid {
            return Err(err(format!(
                "{at}[{i}]: \"{action}\" is not an action (<service>:<Operation>, with * and ? \
                 wildcards in the operation, or *)"
            )));
        }
    }
    Ok(actions)
}

impl Policy {
    /// Parses and validates a policy document of the given kind, as it is being put: every
    /// check applies.
    pub fn parse(text: &str, kind: PolicyKind) -> Result<Self, MalformedPolicy> {
        Self::parse_as(text, kind, true)
    }

    /// Parses a policy that was accepted when it was put and has been stored since: the
    /// checks made only when a policy is put (condition keys of our namespaces exist,
    /// variables are well formed) are not applied again, so that a stricter release does not
    /// lock working keys. What still fails here fails closed where it is used.
    pub fn parse_stored(text: &str, kind: PolicyKind) -> Result<Self, MalformedPolicy> {
        Self::parse_as(text, kind, false)
    }

    /// The policy that stands in for one that cannot be read: it refuses everyone everything,
    /// so that an unreadable policy fails closed (its Denies may have been all that kept
    /// someone out).
    pub fn deny_all(kind: PolicyKind) -> Self {
        Self {
            version: VERSIONS[0].to_owned(),
            id: None,
            statements: vec![Statement {
                sid: Some(UNREADABLE_SID.to_owned()),
                effect: Effect::Deny,
                principal: match kind {
                    PolicyKind::Resource => Some(PrincipalMatch::Anyone),
                    PolicyKind::Identity => None,
                },
                action: Matcher::Any(vec!["*".into()]),
                resource: Matcher::Any(vec!["*".into()]),
                conditions: Vec::new(),
                variables: false,
            }],
        }
    }

    fn parse_as(text: &str, kind: PolicyKind, put_checks: bool) -> Result<Self, MalformedPolicy> {
        if text.len() > MAX_POLICY_BYTES {
            return Err(err(format!(
                "the policy is {} bytes; at most {MAX_POLICY_BYTES} are allowed",
                text.len()
            )));
        }
        let value: Value = serde_json::from_str(text)
            .map_err(|e| err(format!("the policy is not valid JSON: {e}")))?;
        let Value::Object(map) = value else {
            return Err(err("the policy must be a JSON object"));
        };
        Self::from_map(&map, kind, put_checks)
    }

    fn from_map(
        map: &Map<String, Value>,
        kind: PolicyKind,
        put_checks: bool,
    ) -> Result<Self, MalformedPolicy> {
        for key in map.keys() {
            if !matches!(key.as_str(), "Version" | "Id" | "Statement") {
                return Err(err(format!("unknown top-level element \"{key}\"")));
            }
        }
        let version = match map.get("Version") {
            Some(Value::String(v)) if VERSIONS.contains(&v.as_str()) => v.clone(),
            Some(_) => {
                return Err(err(format!(
                    "Version must be \"{}\" or \"{}\"",
                    VERSIONS[0], VERSIONS[1]
                )));
            }
            None => VERSIONS[1].to_owned(),
        };
        let grammar = Grammar {
            kind,
            put_checks,
            variables: version == VERSIONS[0],
        };
        let id = match map.get("Id") {
            None => None,
            Some(Value::String(s)) => Some(s.clone()),
            Some(_) => return Err(err("Id must be a string")),
        };
        let statements = match map.get("Statement") {
            Some(Value::Array(list)) if !list.is_empty() => list
                .iter()
                .enumerate()
                .map(|(i, s)| parse_statement(s, &format!("Statement[{i}]"), grammar))
                .collect::<Result<Vec<_>, _>>()?,
            Some(Value::Array(_)) => return Err(err("Statement must not be empty")),
            Some(single @ Value::Object(_)) => {
                vec![parse_statement(single, "Statement", grammar)?]
            }
            Some(_) => return Err(err("Statement must be an object or a list of objects")),
            None => return Err(err("Statement is missing")),
        };
        Ok(Self {
            version,
            id,
            statements,
        })
    }
}

/// The key policy a key gets when CreateKey gives none: the account's root has full access,
/// which delegates access to the account's identity policies.
pub fn default_key_policy(partition: &str, account_id: &str) -> String {
    serde_json::json!({
        "Version": "2012-10-17",
        "Id": "key-default-1",
        "Statement": [{
            "Sid": "Enable IAM User Permissions",
            "Effect": "Allow",
            "Principal": {"AWS": format!("arn:{partition}:iam::{account_id}:root")},
            "Action": "kms:*",
            "Resource": "*"
        }]
    })
    .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refuse(text: &str, kind: PolicyKind, expected: &str) {
        let error = Policy::parse(text, kind).expect_err(text).0;
        assert!(
            error.contains(expected),
            "{text}\n  → {error}\n  expected: {expected}"
        );
    }

    #[test]
    fn the_default_key_policy_parses() {
        let policy = Policy::parse(
            &default_key_policy("aws", "111122223333"),
            PolicyKind::Resource,
        )
        .unwrap();
        assert_eq!(policy.statements.len(), 1);
        assert_eq!(
            policy.statements[0].principal,
            Some(PrincipalMatch::Arns(vec![
                "arn:aws:iam::111122223333:root".into()
            ]))
        );
    }

    #[test]
    fn a_single_statement_object_and_account_ids_are_accepted() {
        let policy = Policy::parse(
            r#"{"Version":"2012-10-17","Statement":{"Effect":"Deny","Principal":{"AWS":["111122223333","arn:aws:iam::111122223333:user/a"]},"NotAction":"kms:Decrypt"}}"#,
            PolicyKind::Resource,
        )
        .unwrap();
        let statement = &policy.statements[0];
        assert_eq!(statement.effect, Effect::Deny);
        assert_eq!(statement.action, Matcher::None(vec!["kms:Decrypt".into()]));
        assert_eq!(statement.resource, Matcher::Any(vec!["*".into()]));
        assert_eq!(
            statement.principal,
            Some(PrincipalMatch::Arns(vec![
                "arn:*:iam::111122223333:root".into(),
                "arn:aws:iam::111122223333:user/a".into()
            ]))
        );
    }

    #[test]
    fn put_time_checks_say_where_and_stored_policies_skip_them() {
        use PolicyKind::*;
        let typo = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Deny","Action":"kms:*","Resource":"*","Condition":{"StringNotEquals":{"kms:EncryptionContex:tenant":"a"}}}]}"#;
        refuse(
            typo,
            Identity,
            "Statement[0].Condition.StringNotEquals.kms:EncryptionContex:tenant: \"kms:EncryptionContex:tenant\" is not a condition key of the kms: namespace",
        );
        let unclosed = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"iam:*","Resource":["*","arn:aws:iam::*:user/${aws:username"]}]}"#;
        refuse(unclosed, Identity, "Statement[0].Resource[1]: ");
        let variable_typo = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"iam:*","NotResource":"arn:aws:iam::*:user/${aws:usrname}"}]}"#;
        refuse(variable_typo, Identity, "Statement[0].NotResource[0]: ");
        let in_condition = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"kms:*","Resource":"*","Condition":{"StringEquals":{"kms:EncryptionContext:owner":"${aws:user}"}}}]}"#;
        refuse(
            in_condition,
            Identity,
            "Statement[0].Condition.StringEquals.kms:EncryptionContext:owner: \"aws:user\"",
        );
        for text in [typo, unclosed, variable_typo, in_condition] {
            assert!(Policy::parse_stored(text, Identity).is_ok(), "{text}");
        }
        // In 2008-10-17 `${` is text: nothing to check.
        let old = unclosed.replace("2012-10-17", "2008-10-17");
        let policy = Policy::parse(&old, Identity).unwrap();
        assert!(!policy.statements[0].variables);
        // Other services' actions and condition keys are accepted.
        Policy::parse(
            r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":["s3:GetObject","ec2:Describe*","audit:*"],"Resource":"*","Condition":{"StringLike":{"s3:prefix":"home/${aws:username}/*"}}}]}"#,
            Identity,
        )
        .unwrap();
    }

    #[test]
    fn malformed_policies_say_where() {
        use PolicyKind::*;
        let cases = [
            ("not json", Identity, "not valid JSON"),
            ("[]", Identity, "must be a JSON object"),
            (
                r#"{"Version":"2012-10-17"}"#,
                Identity,
                "Statement is missing",
            ),
            (
                r#"{"Version":"2020-01-01","Statement":[]}"#,
                Identity,
                "Version must be",
            ),
            (
                r#"{"Statement":[]}"#,
                Identity,
                "Statement must not be empty",
            ),
            (
                r#"{"Statement":[{"Effect":"Allow","Action":"kms:*"}]}"#,
                Identity,
                "Statement[0]: Resource is missing",
            ),
            (
                r#"{"Statement":[{"Effect":"Maybe","Action":"kms:*","Resource":"*"}]}"#,
                Identity,
                "Statement[0].Effect must be",
            ),
            (
                r#"{"Statement":[{"Action":"kms:*","Resource":"*"}]}"#,
                Identity,
                "Statement[0]: Effect is missing",
            ),
            (
                r#"{"Statement":[{"Effect":"Allow","Resource":"*"}]}"#,
                Identity,
                "Statement[0]: Action is missing",
            ),
            (
                r#"{"Statement":[{"Effect":"Allow","Action":"kms:*","NotAction":"kms:x","Resource":"*"}]}"#,
                Identity,
                "not both",
            ),
            (
                r#"{"Statement":[{"Effect":"Allow","Action":"s3 GetObject","Resource":"*"}]}"#,
                Identity,
                "Statement[0].Action[0]: \"s3 GetObject\" is not an action",
            ),
            (
                r#"{"Statement":[{"Effect":"Allow","Action":[],"Resource":"*"}]}"#,
                Identity,
                "Statement[0].Action must not be empty",
            ),
            (
                r#"{"Statement":[{"Effect":"Allow","Action":[1],"Resource":"*"}]}"#,
                Identity,
                "Statement[0].Action[0] must be a string",
            ),
            (
                r#"{"Statement":[{"Effect":"Allow","Principal":"*","Action":"kms:*","Resource":"*"}]}"#,
                Identity,
                "Principal is not allowed in an identity policy",
            ),
            (
                r#"{"Statement":[{"Effect":"Allow","Action":"kms:*"}]}"#,
                Resource,
                "Statement[0]: Principal is missing",
            ),
            (
                r#"{"Statement":[{"Effect":"Allow","Principal":{"Service":"x"},"Action":"kms:*"}]}"#,
                Resource,
                "principal type \"Service\" is not supported",
            ),
            (
                r#"{"Statement":[{"Effect":"Allow","Principal":{"Federated":"arn:aws:iam::111122223333:oidc-provider/*"},"Action":"sts:*"}]}"#,
                Resource,
                "must be an identity provider's ARN",
            ),
            (
                r#"{"Statement":[{"Effect":"Allow","Principal":{"Federated":"arn:aws:iam::111122223333:root"},"Action":"sts:*"}]}"#,
                Resource,
                "must be an identity provider's ARN",
            ),
            (
                r#"{"Statement":[{"Effect":"Allow","Principal":{"AWS":"bob"},"Action":"kms:*"}]}"#,
                Resource,
                "Statement[0].Principal.AWS[0]: \"bob\" is not an account id",
            ),
            (
                r#"{"Statement":[{"Effect":"Allow","Principal":"bob","Action":"kms:*"}]}"#,
                Resource,
                "must be \"*\" or {\"AWS\"",
            ),
            (
                r#"{"Statement":[{"Effect":"Allow","Action":"kms:*","Resource":"*","Condition":{"StringSorta":{"a":"b"}}}]}"#,
                Identity,
                "Statement[0].Condition.StringSorta: unknown condition operator",
            ),
            (
                r#"{"Statement":[{"Effect":"Allow","Action":"kms:*","Resource":"*","Condition":{"ForSomeValues:StringEquals":{"a":"b"}}}]}"#,
                Identity,
                "unknown set operator",
            ),
            (
                r#"{"Statement":[{"Effect":"Allow","Action":"kms:*","Resource":"*","Condition":{"StringEquals":{"a":{"b":1}}}}]}"#,
                Identity,
                "Statement[0].Condition.StringEquals.a must be a string, number or boolean",
            ),
            (
                r#"{"Statement":[{"Effect":"Allow","Action":"kms:*","Resource":"*","Condition":{"StringEquals":{}}}]}"#,
                Identity,
                "has no condition keys",
            ),
            (
                r#"{"Statement":[{"Effect":"Allow","Action":"kms:*","Resource":"*","Condition":{"IpAddress":{"aws:SourceIp":"300.1.1.1/8"}}}]}"#,
                Identity,
                "Statement[0].Condition.IpAddress.aws:SourceIp: \"300.1.1.1/8\" is not an IP address or CIDR block",
            ),
            (
                r#"{"Statement":[{"Effect":"Allow","Action":"kms:*","Resource":"*","Condition":{"DateLessThan":{"aws:CurrentTime":"soon"}}}]}"#,
                Identity,
                "\"soon\" is not a date",
            ),
            (
                r#"{"Statement":[{"Effect":"Allow","Action":"kms:*","Resource":"*","Condition":{"Bool":{"aws:SecureTransport":"maybe"}}}]}"#,
                Identity,
                "\"maybe\" is not true or false",
            ),
            (
                r#"{"Statement":[{"Effect":"Allow","Action":"kms:*","Resource":"*","Extra":1}]}"#,
                Identity,
                "Statement[0]: unknown element \"Extra\"",
            ),
            (
                r#"{"Statement":[{"Effect":"Allow","Action":"kms:*","Resource":"*"}],"Other":1}"#,
                Identity,
                "unknown top-level element \"Other\"",
            ),
        ];
        for (text, kind, expected) in cases {
            refuse(text, kind, expected);
        }
        refuse(&" ".repeat(MAX_POLICY_BYTES + 1), Identity, "at most");
    }
}
