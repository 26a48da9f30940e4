//! IAM over the AWS Query protocol: each action's form fields into the IdentityService
//! operation's request, its answer into AWS's XML result (members as IAM names them).

use super::query::{document, elements, escape, invalid, iso8601, required};
use crate::api::authorize::CallContext;
use crate::api::operations::IamOperations;
use crate::api::status::ApiError;
use crate::proto::v1;
use std::collections::BTreeMap;
use tonic::Code;

pub const NAMESPACE: &str = "https://iam.amazonaws.com/doc/2010-05-08/";
const VERSION: &str = "2010-05-08";

/// The IAM actions served.
pub const ACTIONS: &[&str] = &[
    "CreateUser",
    "DeleteUser",
    "ListUsers",
    "CreateGroup",
    "DeleteGroup",
    "ListGroups",
    "ListRoles",
    "AddUserToGroup",
    "RemoveUserFromGroup",
    "CreateRole",
    "DeleteRole",
    "PutUserPolicy",
    "PutRolePolicy",
    "PutGroupPolicy",
    "GetUserPolicy",
    "GetRolePolicy",
    "GetGroupPolicy",
    "DeleteUserPolicy",
    "DeleteRolePolicy",
    "DeleteGroupPolicy",
    "ListUserPolicies",
    "ListRolePolicies",
    "ListGroupPolicies",
    "CreateAccessKey",
    "ListAccessKeys",
    "UpdateAccessKey",
    "DeleteAccessKey",
    "CreateVirtualMFADevice",
    "EnableMFADevice",
    "DeactivateMFADevice",
    "DeleteVirtualMFADevice",
    "ListMFADevices",
    "ListVirtualMFADevices",
    "SimulatePrincipalPolicy",
    "SimulateCustomPolicy",
    "CreateLoginProfile",
    "GetLoginProfile",
    "UpdateLoginProfile",
    "DeleteLoginProfile",
    "ChangePassword",
    "UpdateAccountPasswordPolicy",
    "GetAccountPasswordPolicy",
    "DeleteAccountPasswordPolicy",
];

/// For the inline-policy actions (`PutUserPolicy`, `ListRolePolicies`, …): the entity kind,
/// the field naming the entity, and what is done.
fn inline_policy_action(action: &str) -> Option<(v1::EntityType, &'static str, &str)> {
    let (verb, rest) = ["Put", "Get", "Delete", "List"]
        .iter()
        .find_map(|verb| action.strip_prefix(verb).map(|rest| (*verb, rest)))?;
    let kind = ["User", "Role", "Group"]
        .into_iter()
        .find(|kind| rest.starts_with(kind))?;
    if !matches!(&rest[kind.len()..], "Policy" | "Policies") {
        return None;
    }
    Some(match kind {
        "User" => (v1::EntityType::User, "UserName", verb),
        "Role" => (v1::EntityType::Role, "RoleName", verb),
        _ => (v1::EntityType::Group, "GroupName", verb),
    })
}

/// The inline-policy actions, on the entity `fields` name.
async fn inline_policy(
    iam: &IamOperations,
    call: &CallContext,
    (kind, name_field, verb): (v1::EntityType, &str, &str),
    fields: &BTreeMap<String, String>,
) -> Result<String, ApiError> {
    let entity_type = kind as i32;
    let entity_name = named(name_field, fields)?;
    match verb {
        "Put" => {
            let request = v1::PutEntityPolicyRequest {
                entity_type,
                entity_name,
                policy_name: named("PolicyName", fields)?,
                policy_document: named("PolicyDocument", fields)?,
            };
            iam.put_entity_policy(call, request).await?;
            Ok(String::new())
        }
        "Get" => {
            let request = v1::GetEntityPolicyRequest {
                entity_type,
                entity_name,
                policy_name: named("PolicyName", fields)?,
            };
            let policy = iam.get_entity_policy(call, request).await?;
            // IAM answers the document URL-encoded.
            let document = percent_encoding::utf8_percent_encode(
                &policy.policy_document,
                percent_encoding::NON_ALPHANUMERIC,
            )
            .to_string();
            Ok(elements(&[
                (name_field, &policy.entity_name),
                ("PolicyName", &policy.policy_name),
                ("PolicyDocument", &document),
            ]))
        }
        "Delete" => {
            let request = v1::DeleteEntityPolicyRequest {
                entity_type,
                entity_name,
                policy_name: named("PolicyName", fields)?,
            };
            iam.delete_entity_policy(call, request).await?;
            Ok(String::new())
        }
        _ => {
            let request = v1::ListEntityPoliciesRequest {
                entity_type,
                entity_name,
            };
            let names = iam.list_entity_policies(call, request).await?.policy_names;
            Ok(members("PolicyNames", names.iter().map(|n| escape(n))))
        }
    }
}

fn user(user: &v1::User) -> String {
    elements(&[
        ("Path", "/"),
        ("UserName", &user.user_name),
        ("UserId", &user.user_id),
        ("Arn", &user.arn),
        ("CreateDate", &iso8601(user.create_date)),
    ])
}

fn group(group: &v1::Group) -> String {
    elements(&[
        ("Path", "/"),
        ("GroupName", &group.group_name),
        ("GroupId", &group.group_id),
        ("Arn", &group.arn),
        ("CreateDate", &iso8601(group.create_date)),
    ])
}

fn role(role: &v1::Role) -> String {
    elements(&[
        ("Path", "/"),
        ("RoleName", &role.role_name),
        ("RoleId", &role.role_id),
        ("Arn", &role.arn),
        ("CreateDate", &iso8601(role.create_date)),
    ])
}

/// `<Name><member>…</member>…</Name><IsTruncated>false</IsTruncated>`: every list is one page.
fn members(name: &str, items: impl Iterator<Item = String>) -> String {
    let members: String = items
        .map(|item| format!("<member>{item}</member>"))
        .collect();
    format!("<{name}>{members}</{name}><IsTruncated>false</IsTruncated>")
}

fn named(field: &str, fields: &BTreeMap<String, String>) -> Result<String, ApiError> {
    required(fields, field).map(str::to_owned)
}

/// Runs IAM `action` with the form's `fields`.
pub async fn dispatch(
    iam: &IamOperations,
    call: &CallContext,
    action: &str,
    fields: &BTreeMap<String, String>,
    request_id: &str,
) -> Result<Vec<u8>, ApiError> {
    if required(fields, "Version")? != VERSION {
        return Err(invalid(
            "InvalidAction",
            format!("Version must be {VERSION}"),
        ));
    }
    let user_name = || named("UserName", fields);
    let group_name = || named("GroupName", fields);
    if let Some(inline) = inline_policy_action(action) {
        let result = inline_policy(iam, call, inline, fields).await?;
        return Ok(document(NAMESPACE, action, &result, request_id));
    }
    let result = match action {
        "CreateUser" => {
            let request = v1::CreateUserRequest {
                user_name: user_name()?,
            };
            let created = iam.create_user(call, request).await?;
            format!("<User>{}</User>", user(&created.user.unwrap_or_default()))
        }
        "DeleteUser" => {
            let request = v1::DeleteUserRequest {
                user_name: user_name()?,
            };
            iam.delete_user(call, request).await?;
            String::new()
        }
        "ListUsers" => {
            let users = iam.list_users(call, v1::ListUsersRequest {}).await?.users;
            members("Users", users.iter().map(user))
        }
        "ListGroups" => {
            let request = v1::ListGroupsRequest::default();
            let groups = iam.list_groups(call, request).await?.groups;
            members("Groups", groups.iter().map(group))
        }
        "ListRoles" => {
            let roles = iam.list_roles(call, v1::ListRolesRequest {}).await?.roles;
            members("Roles", roles.iter().map(role))
        }
        "DeleteGroup" => {
            let request = v1::DeleteGroupRequest {
                group_name: group_name()?,
            };
            iam.delete_group(call, request).await?;
            String::new()
        }
        "CreateGroup" => {
            let request = v1::CreateGroupRequest {
                group_name: group_name()?,
            };
            let group = iam
                .create_group(call, request)
                .await?
                .group
                .unwrap_or_default();
            let members = elements(&[
                ("Path", "/"),
                ("GroupName", &group.group_name),
                ("GroupId", &group.group_id),
                ("Arn", &group.arn),
                ("CreateDate", &iso8601(group.create_date)),
            ]);
            format!("<Group>{members}</Group>")
        }
        "AddUserToGroup" => {
            let request = v1::AddUserToGroupRequest {
                group_name: group_name()?,
                user_name: user_name()?,
            };
            iam.add_user_to_group(call, request).await?;
            String::new()
        }
        "RemoveUserFromGroup" => {
            let request = v1::RemoveUserFromGroupRequest {
                group_name: group_name()?,
                user_name: user_name()?,
            };
            iam.remove_user_from_group(call, request).await?;
            String::new()
        }
        "CreateRole" => {
            let request = v1::CreateRoleRequest {
                role_name: named("RoleName", fields)?,
                assume_role_policy_document: named("AssumeRolePolicyDocument", fields)?,
            };
            let role = iam
                .create_role(call, request)
                .await?
                .role
                .unwrap_or_default();
            let members = elements(&[
                ("Path", "/"),
                ("RoleName", &role.role_name),
                ("RoleId", &role.role_id),
                ("Arn", &role.arn),
                ("CreateDate", &iso8601(role.create_date)),
            ]);
            format!("<Role>{members}</Role>")
        }
        "DeleteRole" => {
            let request = v1::DeleteRoleRequest {
                role_name: named("RoleName", fields)?,
            };
            iam.delete_role(call, request).await?;
            String::new()
        }
        "CreateAccessKey" => {
            let request = v1::CreateAccessKeyRequest {
                user_name: user_name()?,
            };
            let created = iam.create_access_key(call, request).await?;
            let key = created.access_key.unwrap_or_default();
            let mut secret = created.secret_access_key;
            let members = elements(&[
                ("UserName", &key.user_name),
                ("AccessKeyId", &key.access_key_id),
                ("Status", &key.status),
                ("SecretAccessKey", &secret),
                ("CreateDate", &iso8601(key.create_date)),
            ]);
            zeroize::Zeroize::zeroize(&mut secret);
            format!("<AccessKey>{members}</AccessKey>")
        }
        "ListAccessKeys" => {
            let request = v1::ListAccessKeysRequest {
                user_name: user_name()?,
            };
            let keys = iam
                .list_access_keys(call, request)
                .await?
                .access_key_metadata;
            let members: String = keys
                .iter()
                .map(|k| {
                    let member = elements(&[
                        ("UserName", &k.user_name),
                        ("AccessKeyId", &k.access_key_id),
                        ("Status", &k.status),
                        ("CreateDate", &iso8601(k.create_date)),
                    ]);
                    format!("<member>{member}</member>")
                })
                .collect();
            format!(
                "<AccessKeyMetadata>{members}</AccessKeyMetadata><IsTruncated>false</IsTruncated>"
            )
        }
        "SimulatePrincipalPolicy" | "SimulateCustomPolicy" => {
            simulate(iam, call, action, fields).await?
        }
        "UpdateAccessKey" => {
            let request = v1::UpdateAccessKeyRequest {
                user_name: user_name()?,
                access_key_id: named("AccessKeyId", fields)?,
                status: named("Status", fields)?,
            };
            iam.update_access_key(call, request).await?;
            String::new()
        }
        "CreateVirtualMFADevice"
        | "EnableMFADevice"
        | "DeactivateMFADevice"
        | "DeleteVirtualMFADevice"
        | "ListMFADevices"
        | "ListVirtualMFADevices" => mfa_device_action(iam, call, action, fields).await?,
        "CreateLoginProfile"
        | "GetLoginProfile"
        | "UpdateLoginProfile"
        | "DeleteLoginProfile"
        | "ChangePassword"
        | "UpdateAccountPasswordPolicy"
        | "GetAccountPasswordPolicy"
        | "DeleteAccountPasswordPolicy" => password_action(iam, call, action, fields).await?,
        _ => {
            let request = v1::DeleteAccessKeyRequest {
                user_name: user_name()?,
                access_key_id: named("AccessKeyId", fields)?,
            };
            iam.delete_access_key(call, request).await?;
            String::new()
        }
    };
    Ok(document(NAMESPACE, action, &result, request_id))
}

/// A boolean field (`true`/`false`), if given.
fn flag(fields: &BTreeMap<String, String>, name: &str) -> Result<Option<bool>, ApiError> {
    match fields.get(name).map(String::as_str) {
        None => Ok(None),
        Some("true") => Ok(Some(true)),
        Some("false") => Ok(Some(false)),
        Some(_) => Err(ApiError::new(
            Code::InvalidArgument,
            "ValidationException",
            format!("{name} must be true or false"),
        )),
    }
}

/// A number field, if given.
fn number(fields: &BTreeMap<String, String>, name: &str) -> Result<Option<u32>, ApiError> {
    fields
        .get(name)
        .map(|v| {
            v.parse().map_err(|_| {
                ApiError::new(
                    Code::InvalidArgument,
                    "ValidationException",
                    format!("{name} must be a whole number"),
                )
            })
        })
        .transpose()
}

/// The login-profile and password-policy actions. Passwords travel in the form, as IAM's.
async fn password_action(
    iam: &IamOperations,
    call: &CallContext,
    action: &str,
    fields: &BTreeMap<String, String>,
) -> Result<String, ApiError> {
    let profile = |p: Option<v1::LoginProfile>| {
        let p = p.unwrap_or_default();
        format!(
            "<LoginProfile>{}</LoginProfile>",
            elements(&[
                ("UserName", &p.user_name),
                ("CreateDate", &iso8601(p.create_date)),
                (
                    "PasswordResetRequired",
                    &p.password_reset_required.to_string()
                ),
            ])
        )
    };
    Ok(match action {
        "CreateLoginProfile" => {
            let request = v1::CreateLoginProfileRequest {
                user_name: named("UserName", fields)?,
                password: named("Password", fields)?,
                password_reset_required: flag(fields, "PasswordResetRequired")?.unwrap_or(false),
            };
            profile(iam.create_login_profile(call, request).await?.login_profile)
        }
        "GetLoginProfile" => {
            let request = v1::GetLoginProfileRequest {
                user_name: named("UserName", fields)?,
            };
            profile(iam.get_login_profile(call, request).await?.login_profile)
        }
        "UpdateLoginProfile" => {
            let request = v1::UpdateLoginProfileRequest {
                user_name: named("UserName", fields)?,
                password: fields.get("Password").cloned(),
                password_reset_required: flag(fields, "PasswordResetRequired")?,
            };
            iam.update_login_profile(call, request).await?;
            String::new()
        }
        "DeleteLoginProfile" => {
            let request = v1::DeleteLoginProfileRequest {
                user_name: named("UserName", fields)?,
            };
            iam.delete_login_profile(call, request).await?;
            String::new()
        }
        "ChangePassword" => {
            let request = v1::ChangePasswordRequest {
                old_password: named("OldPassword", fields)?,
                new_password: named("NewPassword", fields)?,
            };
            iam.change_password(call, request).await?;
            String::new()
        }
        "UpdateAccountPasswordPolicy" => {
            let request = v1::PasswordPolicy {
                minimum_password_length: number(fields, "MinimumPasswordLength")?.unwrap_or(0),
                require_symbols: flag(fields, "RequireSymbols")?.unwrap_or(false),
                require_numbers: flag(fields, "RequireNumbers")?.unwrap_or(false),
                require_uppercase_characters: flag(fields, "RequireUppercaseCharacters")?
                    .unwrap_or(false),
                require_lowercase_characters: flag(fields, "RequireLowercaseCharacters")?
                    .unwrap_or(false),
                allow_users_to_change_password: flag(fields, "AllowUsersToChangePassword")?
                    .unwrap_or(false),
                max_password_age: number(fields, "MaxPasswordAge")?.unwrap_or(0),
                password_reuse_prevention: number(fields, "PasswordReusePrevention")?.unwrap_or(0),
                hard_expiry: flag(fields, "HardExpiry")?.unwrap_or(false),
            };
            iam.update_account_password_policy(call, request).await?;
            String::new()
        }
        "GetAccountPasswordPolicy" => {
            let p = iam
                .get_account_password_policy(call, v1::GetAccountPasswordPolicyRequest {})
                .await?
                .password_policy
                .unwrap_or_default();
            let mut members = vec![
                (
                    "MinimumPasswordLength",
                    p.minimum_password_length.to_string(),
                ),
                ("RequireSymbols", p.require_symbols.to_string()),
                ("RequireNumbers", p.require_numbers.to_string()),
                (
                    "RequireUppercaseCharacters",
                    p.require_uppercase_characters.to_string(),
                ),
                (
                    "RequireLowercaseCharacters",
                    p.require_lowercase_characters.to_string(),
                ),
                (
                    "AllowUsersToChangePassword",
                    p.allow_users_to_change_password.to_string(),
                ),
                ("ExpirePasswords", (p.max_password_age > 0).to_string()),
                ("HardExpiry", p.hard_expiry.to_string()),
            ];
            if p.max_password_age > 0 {
                members.push(("MaxPasswordAge", p.max_password_age.to_string()));
            }
            if p.password_reuse_prevention > 0 {
                members.push((
                    "PasswordReusePrevention",
                    p.password_reuse_prevention.to_string(),
                ));
            }
            let pairs: Vec<(&str, &str)> = members.iter().map(|(k, v)| (*k, v.as_str())).collect();
            format!("<PasswordPolicy>{}</PasswordPolicy>", elements(&pairs))
        }
        _ => {
            iam.delete_account_password_policy(call, v1::DeleteAccountPasswordPolicyRequest {})
                .await?;
            String::new()
        }
    })
}

/// The virtual MFA device actions. `Base32StringSeed` and `QRCodePNG` are blobs in IAM's
/// model: base64 in the XML, the first of the Base32 text.
async fn mfa_device_action(
    iam: &IamOperations,
    call: &CallContext,
    action: &str,
    fields: &BTreeMap<String, String>,
) -> Result<String, ApiError> {
    use base64::Engine as _;
    let optional = |name: &str| fields.get(name).cloned().unwrap_or_default();
    let serial_number = || named("SerialNumber", fields);
    Ok(match action {
        "CreateVirtualMFADevice" => {
            let request = v1::CreateVirtualMfaDeviceRequest {
                virtual_mfa_device_name: named("VirtualMFADeviceName", fields)?,
            };
            let created = iam.create_virtual_mfa_device(call, request).await?;
            let b64 = base64::engine::general_purpose::STANDARD;
            let mut seed = b64.encode(created.base32_string_seed.as_bytes());
            let mut qr = b64.encode(&created.qr_code_png);
            let result = format!(
                "<VirtualMFADevice>{}</VirtualMFADevice>",
                elements(&[
                    ("SerialNumber", &created.serial_number),
                    ("Base32StringSeed", &seed),
                    ("QRCodePNG", &qr),
                ])
            );
            zeroize::Zeroize::zeroize(&mut seed);
            zeroize::Zeroize::zeroize(&mut qr);
            result
        }
        "EnableMFADevice" => {
            let request = v1::EnableMfaDeviceRequest {
                user_name: named("UserName", fields)?,
                serial_number: serial_number()?,
                authentication_code1: named("AuthenticationCode1", fields)?,
                authentication_code2: named("AuthenticationCode2", fields)?,
            };
            iam.enable_mfa_device(call, request).await?;
            String::new()
        }
        "DeactivateMFADevice" => {
            let request = v1::DeactivateMfaDeviceRequest {
                user_name: optional("UserName"),
                serial_number: serial_number()?,
            };
            iam.deactivate_mfa_device(call, request).await?;
            String::new()
        }
        "DeleteVirtualMFADevice" => {
            let request = v1::DeleteVirtualMfaDeviceRequest {
                serial_number: serial_number()?,
            };
            iam.delete_virtual_mfa_device(call, request).await?;
            String::new()
        }
        "ListMFADevices" => {
            let request = v1::ListMfaDevicesRequest {
                user_name: optional("UserName"),
            };
            let devices = iam.list_mfa_devices(call, request).await?.mfa_devices;
            members(
                "MFADevices",
                devices.iter().map(|d| {
                    elements(&[
                        ("UserName", &d.user_name),
                        ("SerialNumber", &d.serial_number),
                        ("EnableDate", &iso8601(d.enable_date)),
                    ])
                }),
            )
        }
        _ => {
            let request = v1::ListVirtualMfaDevicesRequest {
                assignment_status: optional("AssignmentStatus"),
            };
            let devices = iam
                .list_virtual_mfa_devices(call, request)
                .await?
                .virtual_mfa_devices;
            members(
                "VirtualMFADevices",
                devices.iter().map(|d| {
                    let mut member = elements(&[("SerialNumber", &d.serial_number)]);
                    if !d.user_name.is_empty() {
                        member.push_str(&format!(
                            "<User>{}</User>{}",
                            elements(&[("UserName", &d.user_name)]),
                            elements(&[("EnableDate", &iso8601(d.enable_date))])
                        ));
                    }
                    member
                }),
            )
        }
    })
}

/// `Name.member.1`, `Name.member.2`, … in order, up to the first missing number.
fn member_list(fields: &BTreeMap<String, String>, name: &str) -> Vec<String> {
    (1..)
        .map_while(|n| fields.get(&format!("{name}.member.{n}")).cloned())
        .collect()
}

/// SimulatePrincipalPolicy (of `PolicySourceArn`) and SimulateCustomPolicy (of the
/// `PolicyInputList` documents): every action in `ActionNames` on every resource in
/// `ResourceArns` (`*` when none), each judged by the operation the gRPC API's simulation
/// runs, with the `ContextEntries` given; IAM's `EvaluationResults`.
async fn simulate(
    iam: &IamOperations,
    call: &CallContext,
    action: &str,
    fields: &BTreeMap<String, String>,
) -> Result<String, ApiError> {
    let custom = action == "SimulateCustomPolicy";
    let (source, documents) = if custom {
        let documents = member_list(fields, "PolicyInputList");
        if documents.is_empty() {
            return Err(invalid(
                "MissingParameter",
                "PolicyInputList.member.1 is required",
            ));
        }
        (String::new(), documents)
    } else {
        (named("PolicySourceArn", fields)?, Vec::new())
    };
    let actions = member_list(fields, "ActionNames");
    if actions.is_empty() {
        return Err(invalid(
            "MissingParameter",
            "ActionNames.member.1 is required",
        ));
    }
    let mut resources = member_list(fields, "ResourceArns");
    if resources.is_empty() {
        resources.push("*".into());
    }
    let context_entries: Vec<v1::ContextEntry> = (1..)
        .map_while(|n| {
            let entry = format!("ContextEntries.member.{n}");
            let key = fields.get(&format!("{entry}.ContextKeyName"))?;
            Some(v1::ContextEntry {
                key: key.clone(),
                values: member_list(fields, &format!("{entry}.ContextKeyValues")),
            })
        })
        .collect();
    let mut results = String::new();
    for action in &actions {
        for resource in &resources {
            let answer = if custom {
                let request = v1::SimulateCustomPolicyRequest {
                    policy_input_list: documents.clone(),
                    action_name: action.clone(),
                    resource_arn: resource.clone(),
                    context_entries: context_entries.clone(),
                };
                iam.simulate_custom_policy(call, request).await?
            } else {
                let request = v1::SimulatePrincipalPolicyRequest {
                    policy_source_arn: source.clone(),
                    action_name: action.clone(),
                    resource_arn: resource.clone(),
                    context_entries: context_entries.clone(),
                };
                iam.simulate_principal_policy(call, request).await?
            };
            let matched: String = answer
                .matched_statements
                .iter()
                .map(|s| {
                    let statement = elements(&[("SourcePolicyId", &s.source_policy_id)]);
                    format!("<member>{statement}</member>")
                })
                .collect();
            let result = elements(&[
                ("EvalActionName", action),
                ("EvalResourceName", resource),
                ("EvalDecision", &answer.eval_decision),
            ]);
            results.push_str(&format!(
                "<member>{result}<MatchedStatements>{matched}</MatchedStatements>\
                 <MissingContextValues></MissingContextValues></member>"
            ));
        }
    }
    Ok(format!(
        "<EvaluationResults>{results}</EvaluationResults><IsTruncated>false</IsTruncated>"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn member_lists_are_read_in_order_up_to_a_gap() {
        let fields: BTreeMap<String, String> = [
            ("ActionNames.member.1", "kms:Encrypt"),
            ("ActionNames.member.2", "kms:Decrypt"),
            ("ActionNames.member.4", "kms:Sign"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        assert_eq!(
            member_list(&fields, "ActionNames"),
            ["kms:Encrypt", "kms:Decrypt"]
        );
        assert!(member_list(&fields, "ResourceArns").is_empty());
    }

    #[test]
    fn inline_policy_actions_name_their_entity() {
        assert_eq!(
            inline_policy_action("PutUserPolicy"),
            Some((v1::EntityType::User, "UserName", "Put"))
        );
        assert_eq!(
            inline_policy_action("ListGroupPolicies"),
            Some((v1::EntityType::Group, "GroupName", "List"))
        );
        assert_eq!(
            inline_policy_action("DeleteRolePolicy"),
            Some((v1::EntityType::Role, "RoleName", "Delete"))
        );
        for other in ["PutUser", "GetUserPolicyX", "CreateUser", "ListUsers"] {
            assert_eq!(inline_policy_action(other), None, "{other}");
        }
        for action in ACTIONS.iter().copied() {
            let inline = inline_policy_action(action).is_some();
            let names_a_policy = action.contains("Polic")
                && !action.starts_with("Simulate")
                && !action.contains("AccountPasswordPolicy");
            assert_eq!(inline, names_a_policy, "{action}");
        }
    }
}
