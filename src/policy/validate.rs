//! Findings about a policy document, in the manner of IAM Access Analyzer's policy validation:
//! an ERROR where the document would be refused, WARNINGs for parts that parse but can never
//! take effect in Keyhaven, SUGGESTIONs for parts that change nothing. Offline: the document
//! alone is judged, never a daemon's state.

use super::condition::SetQualifier;
use super::document::{Matcher, Policy, PolicyKind};
use super::wildcard;
use serde_json::Value;

/// How much a finding matters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum FindingType {
    Error,
    Warning,
    Suggestion,
}

/// One finding, with the element it is about (`Statement[1].Action[0]`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Finding {
    pub finding_type: FindingType,
    pub issue_code: &'static str,
    pub finding_details: String,
    pub location: String,
}

/// The services whose actions Keyhaven authorises.
const SERVED: &[&str] = &["kms", "iam", "sts", "audit"];

/// Every action Keyhaven authorises, for telling a misspelt or unserved action of a served
/// service from a real one.
pub const AUTHORISED_ACTIONS: &[&str] = &[
    "audit:ReadAudit",
    "iam:AddUserToGroup",
    "iam:CreateAccessKey",
    "iam:CreateGroup",
    "iam:CreateRole",
    "iam:CreateUser",
    "iam:DeleteAccessKey",
    "iam:DeleteGroup",
    "iam:DeleteGroupPolicy",
    "iam:DeleteRole",
    "iam:DeleteRolePolicy",
    "iam:DeleteUser",
    "iam:DeleteUserPolicy",
    "iam:GetGroupPolicy",
    "iam:GetRole",
    "iam:GetRolePolicy",
    "iam:GetUserPolicy",
    "iam:ListAccessKeys",
    "iam:ListGroupPolicies",
    "iam:ListGroups",
    "iam:ListGroupsForUser",
    "iam:ListRolePolicies",
    "iam:ListRoles",
    "iam:ListUserPolicies",
    "iam:ListUsers",
    "iam:PutGroupPolicy",
    "iam:PutRolePolicy",
    "iam:PutUserPolicy",
    "iam:RemoveUserFromGroup",
    "iam:SimulatePrincipalPolicy",
    "iam:UpdateAccessKey",
    "kms:CancelKeyDeletion",
    "kms:CreateAlias",
    "kms:CreateGrant",
    "kms:CreateKey",
    "kms:Decrypt",
    "kms:DeleteAlias",
    "kms:DeriveSharedSecret",
    "kms:DeleteImportedKeyMaterial",
    "kms:DescribeKey",
    "kms:DisableKey",
    "kms:DisableKeyRotation",
    "kms:EnableKey",
    "kms:EnableKeyRotation",
    "kms:Encrypt",
    "kms:GenerateDataKey",
    "kms:GenerateDataKeyPair",
    "kms:GenerateDataKeyPairWithoutPlaintext",
    "kms:GenerateDataKeyWithoutPlaintext",
    "kms:GenerateMac",
    "kms:GenerateRandom",
    "kms:GetKeyPolicy",
    "kms:GetKeyRotationStatus",
    "kms:GetParametersForImport",
    "kms:GetPublicKey",
    "kms:ImportKeyMaterial",
    "kms:ListAliases",
    "kms:ListGrants",
    "kms:ListKeyRotations",
    "kms:ListKeys",
    "kms:ListResourceTags",
    "kms:ListRetirableGrants",
    "kms:PutKeyPolicy",
    "kms:ReEncryptFrom",
    "kms:ReEncryptTo",
    "kms:RetireGrant",
    "kms:RevokeGrant",
    "kms:RotateKeyOnDemand",
    "kms:ScheduleKeyDeletion",
    "kms:Sign",
    "kms:TagResource",
    "kms:UntagResource",
    "kms:UpdateAlias",
    "kms:UpdateKeyDescription",
    "kms:Verify",
    "kms:VerifyMac",
    "sts:AssumeRole",
];

/// The condition keys Keyhaven puts in a request's context (lower-case); `kms:EncryptionContext:`
/// keys besides.
const KEYS_SET: &[&str] = &[
    "aws:currenttime",
    "aws:epochtime",
    "aws:principalaccount",
    "aws:principalarn",
    "aws:principaltype",
    "aws:securetransport",
    "aws:sourceip",
    "aws:userid",
    "aws:username",
    "kms:calleraccount",
    "kms:datakeypairspec",
    "kms:encryptionalgorithm",
    "kms:encryptioncontextkeys",
    "kms:grantconstrainttype",
    "kms:granteeprincipal",
    "kms:grantisforawsresource",
    "kms:grantoperations",
    "kms:keyagreementalgorithm",
    "kms:expirationmodel",
    "kms:keyorigin",
    "kms:keyspec",
    "kms:keyusage",
    "kms:macalgorithm",
    "kms:messagetype",
    "kms:retiringprincipal",
    "kms:signingalgorithm",
    "kms:validto",
    "kms:wrappingalgorithm",
    "kms:wrappingkeyspec",
];

/// The services whose resources Keyhaven's actions name.
const RESOURCE_SERVICES: &[&str] = &["kms", "iam", "sts"];

fn finding(
    finding_type: FindingType,
    issue_code: &'static str,
    location: String,
    finding_details: String,
) -> Finding {
    Finding {
        finding_type,
        issue_code,
        finding_details,
        location,
    }
}

/// The element a parse error names (`Statement[0].Action[1]`), if it names one.
fn error_location(message: &str) -> String {
    let end = message
        .find(": ")
        .into_iter()
        .chain(message.find(' '))
        .min()
        .unwrap_or(message.len());
    let head = &message[..end];
    if ["Statement", "Version", "Id"]
        .iter()
        .any(|element| head.starts_with(element))
    {
        head.trim_end_matches(':').to_owned()
    } else {
        String::new()
    }
}

/// The findings for `text` as a policy of `kind`; empty when there is nothing to say.
pub fn validate(text: &str, kind: PolicyKind) -> Vec<Finding> {
    use FindingType::*;
    let policy = match Policy::parse(text, kind) {
        Ok(policy) => policy,
        Err(error) => {
            return vec![finding(
                Error,
                "MALFORMED_POLICY_DOCUMENT",
                error_location(&error.0),
                error.0,
            )];
        }
    };
    let mut findings = Vec::new();
    let document: Value = serde_json::from_str(text).unwrap_or_default();
    if document.get("Version").is_none() {
        findings.push(finding(
            Suggestion,
            "MISSING_VERSION",
            String::new(),
            "no Version: the policy is read as 2008-10-17, where ${…} policy variables are \
             literal text; add \"Version\": \"2012-10-17\""
                .into(),
        ));
    }
    let single = document.get("Statement").is_some_and(Value::is_object);
    for (i, statement) in policy.statements.iter().enumerate() {
        let at = if single {
            "Statement".to_owned()
        } else {
            format!("Statement[{i}]")
        };
        let (Matcher::Any(actions) | Matcher::None(actions)) = &statement.action;
        let element = match statement.action {
            Matcher::Any(_) => "Action",
            Matcher::None(_) => "NotAction",
        };
        for (j, action) in actions.iter().enumerate() {
            let here = format!("{at}.{element}[{j}]");
            if action == "*" {
                continue;
            }
            let service = action.split(':').next().unwrap_or_default();
            if !SERVED.contains(&service.to_ascii_lowercase().as_str()) {
                findings.push(finding(
                    Warning,
                    "UNSUPPORTED_SERVICE",
                    here,
                    format!(
                        "Keyhaven serves no {service}: actions; \"{action}\" never matches a \
                         request here"
                    ),
                ));
            } else if !AUTHORISED_ACTIONS
                .iter()
                .any(|known| wildcard::matches(action, known, true))
            {
                findings.push(finding(
                    Warning,
                    "UNKNOWN_ACTION",
                    here,
                    format!(
                        "\"{action}\" matches no action Keyhaven authorises (misspelt, or not \
                         served here)"
                    ),
                ));
            } else if let Some(wider) = actions
                .iter()
                .enumerate()
                .find(|(k, other)| {
                    *k != j
                        && wildcard::matches(other, action, true)
                        && (!wildcard::matches(action, other, true) || *k < j)
                })
                .map(|(_, other)| other)
            {
                findings.push(finding(
                    Suggestion,
                    "REDUNDANT_ACTION",
                    here,
                    format!("\"{action}\" is already covered by \"{wider}\""),
                ));
            }
        }
        let (Matcher::Any(resources) | Matcher::None(resources)) = &statement.resource;
        let element = match statement.resource {
            Matcher::Any(_) => "Resource",
            Matcher::None(_) => "NotResource",
        };
        for (j, resource) in resources.iter().enumerate() {
            let here = format!("{at}.{element}[{j}]");
            let service = resource
                .strip_prefix("arn:")
                .and_then(|rest| rest.split(':').nth(1));
            if let Some(service) = service
                && !service.contains(['*', '?'])
                && !RESOURCE_SERVICES.contains(&service.to_ascii_lowercase().as_str())
            {
                findings.push(finding(
                    Warning,
                    "UNSUPPORTED_RESOURCE",
                    here.clone(),
                    format!(
                        "\"{resource}\" is a resource of {service}, which Keyhaven does not \
                         serve; it never matches a request here"
                    ),
                ));
            }
            if policy.version != "2012-10-17" && resource.contains("${") {
                findings.push(finding(
                    Warning,
                    "LITERAL_POLICY_VARIABLE",
                    here,
                    format!(
                        "in Version {} \"${{…}}\" is literal text, not a policy variable; use \
                         Version 2012-10-17",
                        policy.version
                    ),
                ));
            }
        }
        for condition in &statement.conditions {
            let set = KEYS_SET.contains(&condition.key.as_str())
                || condition.key.starts_with("kms:encryptioncontext:");
            if set {
                continue;
            }
            let qualifier = match condition.qualifier {
                SetQualifier::Single => "",
                SetQualifier::ForAllValues => "ForAllValues:",
                SetQualifier::ForAnyValue => "ForAnyValue:",
            };
            let if_exists = if condition.if_exists { "IfExists" } else { "" };
            findings.push(finding(
                Warning,
                "CONDITION_KEY_NOT_SET",
                format!(
                    "{at}.Condition.{qualifier}{:?}{if_exists}.{}",
                    condition.operator, condition.key
                ),
                format!(
                    "Keyhaven never sets {}: the condition is judged as if the key were absent \
                     in every request",
                    condition.key
                ),
            ));
        }
        let same = policy.statements[..i].iter().position(|earlier| {
            earlier.effect == statement.effect
                && earlier.principal == statement.principal
                && earlier.action == statement.action
                && earlier.resource == statement.resource
                && earlier.conditions == statement.conditions
        });
        if let Some(earlier) = same {
            findings.push(finding(
                Suggestion,
                "REDUNDANT_STATEMENT",
                at,
                format!("the statement repeats Statement[{earlier}] and changes nothing"),
            ));
        }
    }
    findings
}

#[cfg(test)]
mod tests {
    use super::*;

    fn codes(text: &str, kind: PolicyKind) -> Vec<(FindingType, &'static str, String)> {
        validate(text, kind)
            .into_iter()
            .map(|f| (f.finding_type, f.issue_code, f.location))
            .collect()
    }

    #[test]
    fn a_clean_policy_has_no_findings() {
        let text = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":["kms:Encrypt","kms:Decrypt"],"Resource":"arn:keyhaven:kms:local:111122223333:key/*"}]}"#;
        assert_eq!(codes(text, PolicyKind::Identity), []);
    }

    #[test]
    fn findings_name_the_element() {
        use FindingType::*;
        let text = r#"{"Statement":[
            {"Effect":"Allow","Action":["s3:GetObject","kms:Encrpyt","kms:*","kms:Decrypt"],"Resource":["arn:aws:s3:::bucket/*","arn:aws:iam::*:user/${aws:username}"]},
            {"Effect":"Allow","Action":["s3:GetObject","kms:Encrpyt","kms:*","kms:Decrypt"],"Resource":["arn:aws:s3:::bucket/*","arn:aws:iam::*:user/${aws:username}"]}]}"#;
        let found = codes(text, PolicyKind::Identity);
        let first: Vec<_> = found
            .iter()
            .filter(|(_, _, at)| at.is_empty() || at.starts_with("Statement[0]"))
            .cloned()
            .collect();
        assert_eq!(
            first,
            [
                (Suggestion, "MISSING_VERSION", String::new()),
                (
                    Warning,
                    "UNSUPPORTED_SERVICE",
                    "Statement[0].Action[0]".into()
                ),
                (Warning, "UNKNOWN_ACTION", "Statement[0].Action[1]".into()),
                (
                    Suggestion,
                    "REDUNDANT_ACTION",
                    "Statement[0].Action[3]".into()
                ),
                (
                    Warning,
                    "UNSUPPORTED_RESOURCE",
                    "Statement[0].Resource[0]".into()
                ),
                (
                    Warning,
                    "LITERAL_POLICY_VARIABLE",
                    "Statement[0].Resource[1]".into()
                ),
            ]
        );
        assert_eq!(
            found.last(),
            Some(&(Suggestion, "REDUNDANT_STATEMENT", "Statement[1]".into()))
        );
    }

    #[test]
    fn conditions_on_keys_keyhaven_never_sets_are_named() {
        let text = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Deny","Principal":"*","Action":"kms:*","Resource":"*","Condition":{"Bool":{"aws:MultiFactorAuthPresent":"false"},"StringNotEqualsIfExists":{"kms:EncryptionContext:tenant":"a"},"ForAnyValue:StringLike":{"s3:prefix":"x"}}}]}"#;
        assert_eq!(
            codes(text, PolicyKind::Resource),
            [
                (
                    FindingType::Warning,
                    "CONDITION_KEY_NOT_SET",
                    "Statement[0].Condition.Bool.aws:multifactorauthpresent".into()
                ),
                (
                    FindingType::Warning,
                    "CONDITION_KEY_NOT_SET",
                    "Statement[0].Condition.ForAnyValue:StringLike.s3:prefix".into()
                ),
            ]
        );
    }

    #[test]
    fn a_policy_that_would_be_refused_is_one_error_saying_where() {
        let text = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Deny","Action":"kms:*","Resource":"*","Condition":{"StringEquals":{"kms:EncryptionContex:tenant":"a"}}}]}"#;
        let found = validate(text, PolicyKind::Identity);
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].finding_type, FindingType::Error);
        assert_eq!(found[0].issue_code, "MALFORMED_POLICY_DOCUMENT");
        assert_eq!(
            found[0].location,
            "Statement[0].Condition.StringEquals.kms:EncryptionContex:tenant"
        );
        assert!(found[0].finding_details.contains("is not a condition key"));
        let found = validate("{", PolicyKind::Identity);
        assert_eq!(found[0].location, "");
    }
}
