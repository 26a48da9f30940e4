//! The IAM operations (users, groups, roles, inline policies, access keys, the policy
//! simulator), transport-neutral: each is authorised as `iam:<Operation>` on the entity's
//! ARN and returns its typed answer or an [`ApiError`]. The gRPC IdentityService methods are
//! conversions onto these.

use super::kms::Outcome;
use crate::api::authorize::{Authorizer, CallContext};
use crate::api::status::ApiError;
use crate::auth::certificate::{BoundKind, CertificateBinding, CertificateIdentity};
use crate::auth::{AccessKeyStatus, CredentialKind, PrincipalKind};
use crate::iam::{EntityType, IamError, IamService};
use crate::keys::{KeyError, KeyService};
use crate::policy::{GrantAsk, Identity, NamedPolicy, Request as PolicyRequest, evaluate};
use crate::proto::v1;
use std::sync::Arc;

/// The IAM operations over the identity service, for every door.
#[derive(Clone)]
pub struct IamOperations {
    pub(super) iam: Arc<IamService>,
    pub(super) keys: Arc<KeyService>,
    pub(super) authorizer: Arc<Authorizer>,
}

fn entity_type(value: i32) -> Result<EntityType, ApiError> {
    match v1::EntityType::try_from(value) {
        Ok(v1::EntityType::User) => Ok(EntityType::User),
        Ok(v1::EntityType::Group) => Ok(EntityType::Group),
        Ok(v1::EntityType::Role) => Ok(EntityType::Role),
        _ => Err(IamError::Validation("EntityType must be USER, GROUP or ROLE".into()).into()),
    }
}

/// Exactly one of a subject or a URI.
fn certificate_identity(
    identity: Option<v1::CertificateIdentity>,
) -> Result<CertificateIdentity, ApiError> {
    let identity = identity.unwrap_or_default();
    let chosen = match (identity.subject.is_empty(), identity.uri.is_empty()) {
        (false, true) => CertificateIdentity::new_subject(&identity.subject),
        (true, false) => CertificateIdentity::new_uri(&identity.uri),
        _ => {
            return Err(IamError::Validation(
                "name exactly one of a certificate subject or a certificate URI".into(),
            )
            .into());
        }
    };
    Ok(chosen.map_err(IamError::from)?)
}

fn binding_message(binding: CertificateBinding) -> v1::CertificateBinding {
    let (subject, uri) = match binding.identity {
        CertificateIdentity::Subject(name) => (name, String::new()),
        CertificateIdentity::Uri(uri) => (String::new(), uri),
    };
    v1::CertificateBinding {
        entity_type: match binding.kind {
            BoundKind::User => v1::EntityType::User,
            BoundKind::Role => v1::EntityType::Role,
        } as i32,
        entity_name: binding.name,
        identity: Some(v1::CertificateIdentity { subject, uri }),
        create_date: binding.created,
    }
}

fn capitalised(kind: EntityType) -> &'static str {
    match kind {
        EntityType::User => "User",
        EntityType::Group => "Group",
        EntityType::Role => "Role",
    }
}

impl IamOperations {
    pub fn new(iam: Arc<IamService>, keys: Arc<KeyService>, authorizer: Arc<Authorizer>) -> Self {
        Self {
            iam,
            keys,
            authorizer,
        }
    }

    /// Authorises `action` on `resource` (no resource policy: identity policies decide).
    /// Temporary credentials of a user or the root themselves (GetSessionToken) made without
    /// MFA may not call IAM, as in AWS: a stolen session cannot, say, make an access key.
    pub(super) fn allow(
        &self,
        call: &CallContext,
        action: &str,
        resource: &str,
    ) -> Result<(), ApiError> {
        self.session_may_call(call, action)?;
        let context = self.authorizer.base_context(call, self.keys.now());
        Ok(self
            .authorizer
            .require(call, action, resource, None, &context)?)
    }

    /// Refuses IAM calls with a user's or the root's own session made without MFA.
    pub(super) fn session_may_call(
        &self,
        call: &CallContext,
        action: &str,
    ) -> Result<(), ApiError> {
        // A sign-in's session may: it is the user at the console, as in AWS.
        let own_session_without_mfa = call.caller.credential_kind
            == (CredentialKind::Temporary {
                mfa_authenticated: None,
                signed_in: false,
            })
            && !matches!(
                call.caller.principal.kind,
                PrincipalKind::AssumedRole { .. }
            );
        if own_session_without_mfa {
            return Err(KeyError::AccessDenied(format!(
                "{} cannot call {action} with session credentials issued without MFA",
                call.caller.principal.arn
            ))
            .into());
        }
        Ok(())
    }

    fn user(&self, entity: &crate::iam::Entity) -> v1::User {
        v1::User {
            user_name: entity.name.clone(),
            user_id: entity.id.clone(),
            arn: self.iam.arn(EntityType::User, &entity.name),
            create_date: entity.created,
        }
    }

    fn group(&self, entity: &crate::iam::Entity) -> v1::Group {
        v1::Group {
            group_name: entity.name.clone(),
            group_id: entity.id.clone(),
            arn: self.iam.arn(EntityType::Group, &entity.name),
            create_date: entity.created,
            user_names: self.iam.members(&entity.name),
        }
    }

    fn role(&self, entity: &crate::iam::Entity) -> v1::Role {
        v1::Role {
            role_name: entity.name.clone(),
            role_id: entity.id.clone(),
            arn: self.iam.arn(EntityType::Role, &entity.name),
            create_date: entity.created,
            assume_role_policy_document: entity.trust_policy.clone().unwrap_or_default(),
        }
    }
}

impl IamOperations {
    pub async fn create_user(
        &self,
        call: &CallContext,
        request: v1::CreateUserRequest,
    ) -> Outcome<v1::CreateUserResponse> {
        let name = &request.user_name;
        self.allow(
            call,
            "iam:CreateUser",
            &self.iam.arn(EntityType::User, name),
        )?;
        let user = self.iam.create(EntityType::User, name, None).await?;
        Ok(v1::CreateUserResponse {
            user: Some(self.user(&user)),
        })
    }

    pub async fn delete_user(
        &self,
        call: &CallContext,
        request: v1::DeleteUserRequest,
    ) -> Outcome<v1::DeleteUserResponse> {
        let name = &request.user_name;
        self.allow(
            call,
            "iam:DeleteUser",
            &self.iam.arn(EntityType::User, name),
        )?;
        self.iam.delete(EntityType::User, name).await?;
        Ok(v1::DeleteUserResponse {})
    }

    pub async fn list_users(
        &self,
        call: &CallContext,
        _request: v1::ListUsersRequest,
    ) -> Outcome<v1::ListUsersResponse> {
        self.allow(call, "iam:ListUsers", &self.iam.arn(EntityType::User, "*"))?;
        Ok(v1::ListUsersResponse {
            users: self
                .iam
                .list(EntityType::User)
                .iter()
                .map(|u| self.user(u))
                .collect(),
        })
    }

    pub async fn create_group(
        &self,
        call: &CallContext,
        request: v1::CreateGroupRequest,
    ) -> Outcome<v1::CreateGroupResponse> {
        let name = &request.group_name;
        self.allow(
            call,
            "iam:CreateGroup",
            &self.iam.arn(EntityType::Group, name),
        )?;
        let group = self.iam.create(EntityType::Group, name, None).await?;
        Ok(v1::CreateGroupResponse {
            group: Some(self.group(&group)),
        })
    }

    pub async fn delete_group(
        &self,
        call: &CallContext,
        request: v1::DeleteGroupRequest,
    ) -> Outcome<v1::DeleteGroupResponse> {
        let name = &request.group_name;
        self.allow(
            call,
            "iam:DeleteGroup",
            &self.iam.arn(EntityType::Group, name),
        )?;
        self.iam.delete(EntityType::Group, name).await?;
        Ok(v1::DeleteGroupResponse {})
    }

    pub async fn list_groups(
        &self,
        call: &CallContext,
        request: v1::ListGroupsRequest,
    ) -> Outcome<v1::ListGroupsResponse> {
        let user = &request.user_name;
        let groups = if user.is_empty() {
            self.allow(
                call,
                "iam:ListGroups",
                &self.iam.arn(EntityType::Group, "*"),
            )?;
            self.iam.list(EntityType::Group)
        } else {
            self.allow(
                call,
                "iam:ListGroupsForUser",
                &self.iam.arn(EntityType::User, user),
            )?;
            let entity = self
                .iam
                .get(EntityType::User, user)
                .ok_or_else(|| IamError::NotFound(format!("the user '{user}' does not exist")))?;
            entity
                .groups
                .iter()
                .filter_map(|g| self.iam.get(EntityType::Group, g))
                .collect()
        };
        Ok(v1::ListGroupsResponse {
            groups: groups.iter().map(|g| self.group(g)).collect(),
        })
    }

    pub async fn add_user_to_group(
        &self,
        call: &CallContext,
        request: v1::AddUserToGroupRequest,
    ) -> Outcome<v1::AddUserToGroupResponse> {
        let r = &request;
        self.allow(
            call,
            "iam:AddUserToGroup",
            &self.iam.arn(EntityType::Group, &r.group_name),
        )?;
        self.iam
            .add_user_to_group(&r.group_name, &r.user_name)
            .await?;
        Ok(v1::AddUserToGroupResponse {})
    }

    pub async fn remove_user_from_group(
        &self,
        call: &CallContext,
        request: v1::RemoveUserFromGroupRequest,
    ) -> Outcome<v1::RemoveUserFromGroupResponse> {
        let r = &request;
        self.allow(
            call,
            "iam:RemoveUserFromGroup",
            &self.iam.arn(EntityType::Group, &r.group_name),
        )?;
        self.iam
            .remove_user_from_group(&r.group_name, &r.user_name)
            .await?;
        Ok(v1::RemoveUserFromGroupResponse {})
    }

    pub async fn create_role(
        &self,
        call: &CallContext,
        request: v1::CreateRoleRequest,
    ) -> Outcome<v1::CreateRoleResponse> {
        let r = request;
        self.allow(
            call,
            "iam:CreateRole",
            &self.iam.arn(EntityType::Role, &r.role_name),
        )?;
        let trust =
            (!r.assume_role_policy_document.is_empty()).then_some(r.assume_role_policy_document);
        let role = self
            .iam
            .create(EntityType::Role, &r.role_name, trust)
            .await?;
        Ok(v1::CreateRoleResponse {
            role: Some(self.role(&role)),
        })
    }

    pub async fn delete_role(
        &self,
        call: &CallContext,
        request: v1::DeleteRoleRequest,
    ) -> Outcome<v1::DeleteRoleResponse> {
        let name = &request.role_name;
        self.allow(
            call,
            "iam:DeleteRole",
            &self.iam.arn(EntityType::Role, name),
        )?;
        self.iam.delete(EntityType::Role, name).await?;
        Ok(v1::DeleteRoleResponse {})
    }

    pub async fn list_roles(
        &self,
        call: &CallContext,
        _request: v1::ListRolesRequest,
    ) -> Outcome<v1::ListRolesResponse> {
        self.allow(call, "iam:ListRoles", &self.iam.arn(EntityType::Role, "*"))?;
        Ok(v1::ListRolesResponse {
            roles: self
                .iam
                .list(EntityType::Role)
                .iter()
                .map(|r| self.role(r))
                .collect(),
        })
    }

    pub async fn put_entity_policy(
        &self,
        call: &CallContext,
        request: v1::PutEntityPolicyRequest,
    ) -> Outcome<v1::PutEntityPolicyResponse> {
        let r = request;
        let kind = entity_type(r.entity_type)?;
        self.allow(
            call,
            &format!("iam:Put{}Policy", capitalised(kind)),
            &self.iam.arn(kind, &r.entity_name),
        )?;
        self.iam
            .put_policy(kind, &r.entity_name, &r.policy_name, r.policy_document)
            .await?;
        Ok(v1::PutEntityPolicyResponse {})
    }

    pub async fn get_entity_policy(
        &self,
        call: &CallContext,
        request: v1::GetEntityPolicyRequest,
    ) -> Outcome<v1::GetEntityPolicyResponse> {
        let r = &request;
        let kind = entity_type(r.entity_type)?;
        self.allow(
            call,
            &format!("iam:Get{}Policy", capitalised(kind)),
            &self.iam.arn(kind, &r.entity_name),
        )?;
        let document = self.iam.get_policy(kind, &r.entity_name, &r.policy_name)?;
        Ok(v1::GetEntityPolicyResponse {
            entity_name: r.entity_name.clone(),
            policy_name: r.policy_name.clone(),
            policy_document: document,
        })
    }

    pub async fn delete_entity_policy(
        &self,
        call: &CallContext,
        request: v1::DeleteEntityPolicyRequest,
    ) -> Outcome<v1::DeleteEntityPolicyResponse> {
        let r = &request;
        let kind = entity_type(r.entity_type)?;
        self.allow(
            call,
            &format!("iam:Delete{}Policy", capitalised(kind)),
            &self.iam.arn(kind, &r.entity_name),
        )?;
        self.iam
            .delete_policy(kind, &r.entity_name, &r.policy_name)
            .await?;
        Ok(v1::DeleteEntityPolicyResponse {})
    }

    pub async fn list_entity_policies(
        &self,
        call: &CallContext,
        request: v1::ListEntityPoliciesRequest,
    ) -> Outcome<v1::ListEntityPoliciesResponse> {
        let r = &request;
        let kind = entity_type(r.entity_type)?;
        self.allow(
            call,
            &format!("iam:List{}Policies", capitalised(kind)),
            &self.iam.arn(kind, &r.entity_name),
        )?;
        Ok(v1::ListEntityPoliciesResponse {
            policy_names: self.iam.list_policies(kind, &r.entity_name)?,
        })
    }

    pub async fn create_access_key(
        &self,
        call: &CallContext,
        request: v1::CreateAccessKeyRequest,
    ) -> Outcome<v1::CreateAccessKeyResponse> {
        let user = &request.user_name;
        self.allow(
            call,
            "iam:CreateAccessKey",
            &self.iam.arn(EntityType::User, user),
        )?;
        let key = self.iam.create_access_key(user).await?;
        Ok(v1::CreateAccessKeyResponse {
            access_key: Some(v1::AccessKeyMetadata {
                user_name: user.clone(),
                access_key_id: key.credentials.access_key_id.clone(),
                status: AccessKeyStatus::Active.as_str().into(),
                create_date: key.created,
            }),
            secret_access_key: key.credentials.secret_access_key.expose().clone(),
        })
    }

    pub async fn list_access_keys(
        &self,
        call: &CallContext,
        request: v1::ListAccessKeysRequest,
    ) -> Outcome<v1::ListAccessKeysResponse> {
        let user = &request.user_name;
        self.allow(
            call,
            "iam:ListAccessKeys",
            &self.iam.arn(EntityType::User, user),
        )?;
        if self.iam.get(EntityType::User, user).is_none() {
            return Err(IamError::NotFound(format!("the user '{user}' does not exist")).into());
        }
        let keys = self.iam.credentials().list_access_keys(user);
        Ok(v1::ListAccessKeysResponse {
            access_key_metadata: keys
                .into_iter()
                .map(|k| v1::AccessKeyMetadata {
                    user_name: user.clone(),
                    access_key_id: k.access_key_id,
                    status: k.status.as_str().into(),
                    create_date: k.created,
                })
                .collect(),
        })
    }

    pub async fn update_access_key(
        &self,
        call: &CallContext,
        request: v1::UpdateAccessKeyRequest,
    ) -> Outcome<v1::UpdateAccessKeyResponse> {
        let r = &request;
        self.allow(
            call,
            "iam:UpdateAccessKey",
            &self.iam.arn(EntityType::User, &r.user_name),
        )?;
        let status = AccessKeyStatus::parse(&r.status)
            .ok_or_else(|| IamError::Validation("Status must be Active or Inactive".into()))?;
        self.iam
            .credentials()
            .update_access_key(&r.user_name, &r.access_key_id, status)
            .await
            .map_err(IamError::from)?;
        Ok(v1::UpdateAccessKeyResponse {})
    }

    pub async fn delete_access_key(
        &self,
        call: &CallContext,
        request: v1::DeleteAccessKeyRequest,
    ) -> Outcome<v1::DeleteAccessKeyResponse> {
        let r = &request;
        self.allow(
            call,
            "iam:DeleteAccessKey",
            &self.iam.arn(EntityType::User, &r.user_name),
        )?;
        self.iam
            .credentials()
            .delete_access_key(&r.user_name, &r.access_key_id)
            .await
            .map_err(IamError::from)?;
        Ok(v1::DeleteAccessKeyResponse {})
    }

    pub async fn bind_certificate(
        &self,
        call: &CallContext,
        request: v1::BindCertificateRequest,
    ) -> Outcome<v1::BindCertificateResponse> {
        let r = request;
        let kind = entity_type(r.entity_type)?;
        let identity = certificate_identity(r.identity)?;
        self.allow(
            call,
            "iam:BindCertificate",
            &self.iam.arn(kind, &r.entity_name),
        )?;
        let binding = self
            .iam
            .bind_certificate(kind, &r.entity_name, identity)
            .await?;
        Ok(v1::BindCertificateResponse {
            binding: Some(binding_message(binding)),
        })
    }

    pub async fn unbind_certificate(
        &self,
        call: &CallContext,
        request: v1::UnbindCertificateRequest,
    ) -> Outcome<v1::UnbindCertificateResponse> {
        let r = request;
        let kind = entity_type(r.entity_type)?;
        let identity = certificate_identity(r.identity)?;
        self.allow(
            call,
            "iam:UnbindCertificate",
            &self.iam.arn(kind, &r.entity_name),
        )?;
        self.iam
            .unbind_certificate(kind, &r.entity_name, &identity)
            .await?;
        Ok(v1::UnbindCertificateResponse {})
    }

    pub async fn list_certificates(
        &self,
        call: &CallContext,
        request: v1::ListCertificatesRequest,
    ) -> Outcome<v1::ListCertificatesResponse> {
        let r = &request;
        let kind = entity_type(r.entity_type)?;
        self.allow(
            call,
            "iam:ListCertificates",
            &self.iam.arn(kind, &r.entity_name),
        )?;
        Ok(v1::ListCertificatesResponse {
            bindings: self
                .iam
                .list_certificates(kind, &r.entity_name)?
                .into_iter()
                .map(binding_message)
                .collect(),
        })
    }

    pub async fn simulate_principal_policy(
        &self,
        call: &CallContext,
        request: v1::SimulatePrincipalPolicyRequest,
    ) -> Outcome<v1::SimulatePrincipalPolicyResponse> {
        let r = request;
        self.allow(call, "iam:SimulatePrincipalPolicy", &r.policy_source_arn)?;
        if r.action_name.is_empty() || r.resource_arn.is_empty() {
            return Err(
                IamError::Validation("ActionName and ResourceArn are required".into()).into(),
            );
        }
        // A principal or key another daemon has just made is heard of before it is judged.
        self.keys
            .hear_of(call.asked, |keys| {
                let own_entity = crate::api::authorize::grantee_entity(&r.policy_source_arn)
                    .is_some()
                    && r.policy_source_arn.split(':').nth(4) == Some(self.iam.account_id());
                (!own_entity || self.iam.principal_for_arn(&r.policy_source_arn).is_ok())
                    && keys.knows(&r.resource_arn)
            })
            .await;
        let principal = self.iam.principal_for_arn(&r.policy_source_arn)?;
        let simulated = CallContext {
            caller: crate::auth::Caller {
                principal: Arc::new(principal.clone()),
                access_key_id: String::new(),
                certificate: None,
                credential_kind: Default::default(),
            },
            source_ip: None,
            secure_transport: true,
            audit: call.audit.clone(),
            approval_id: None,
            asked: call.asked,
        };
        let mut context = self.authorizer.base_context(&simulated, self.keys.now());
        // The encryption context the entries describe, for grant constraints.
        let mut encryption_context = std::collections::BTreeMap::new();
        for entry in r.context_entries {
            if let Some(key) = entry
                .key
                .get(..22)
                .filter(|p| p.eq_ignore_ascii_case("kms:EncryptionContext:"))
                .and_then(|_| entry.key.get(22..))
                && let Some(value) = entry.values.first()
            {
                encryption_context.insert(key.to_owned(), value.clone());
            }
            context.set_all(&entry.key, entry.values);
        }
        // The resource policy: the key policy of a key, or the trust policy of a role. An alias
        // action on an alias ARN has none: identity policies decide it, as the call does.
        let alias_action = ["kms:CreateAlias", "kms:UpdateAlias", "kms:DeleteAlias"]
            .iter()
            .any(|a| a.eq_ignore_ascii_case(&r.action_name));
        let mut grants = Vec::new();
        let (resource, resource_policy): (String, Option<NamedPolicy>) =
            match self.keys.lookup(&r.resource_arn, false) {
                _ if alias_action && r.resource_arn.contains(":alias/") => {
                    (r.resource_arn.clone(), None)
                }
                Ok(record) => {
                    grants = self.authorizer.grant_rules(record.id, &principal);
                    (
                        self.keys.key_arn(record.id),
                        Some(self.keys.key_policy(record.id)),
                    )
                }
                Err(_) => match super::sts::role_name(&self.iam, &r.resource_arn) {
                    Ok(role) if r.action_name.eq_ignore_ascii_case("sts:AssumeRole") => {
                        (r.resource_arn.clone(), self.iam.trust_policy(role))
                    }
                    _ => (r.resource_arn.clone(), None),
                },
            };
        // The decision the call would get: the same evaluation, grants included.
        let decision = self.authorizer.decide_with_grants(
            &simulated,
            &r.action_name,
            &resource,
            resource_policy.as_ref(),
            &context,
            &grants,
            &GrantAsk::Context(&encryption_context),
        );
        Ok(simulation(decision))
    }

    /// What the caller would be allowed if the given identity policies were its only ones (no
    /// resource policy), with the context entries given.
    pub async fn simulate_custom_policy(
        &self,
        call: &CallContext,
        request: v1::SimulateCustomPolicyRequest,
    ) -> Outcome<v1::SimulatePrincipalPolicyResponse> {
        let r = request;
        self.allow(call, "iam:SimulateCustomPolicy", "*")?;
        if r.action_name.is_empty() || r.resource_arn.is_empty() || r.policy_input_list.is_empty() {
            return Err(IamError::Validation(
                "PolicyInputList, ActionName and ResourceArn are required".into(),
            )
            .into());
        }
        let policies = r
            .policy_input_list
            .iter()
            .enumerate()
            .map(|(n, text)| {
                let policy =
                    crate::policy::Policy::parse(text, crate::policy::PolicyKind::Identity)
                        .map_err(|e| IamError::MalformedPolicy(e.0))?;
                Ok(NamedPolicy {
                    name: format!("PolicyInputList.{}", n + 1),
                    policy: Arc::new(policy),
                })
            })
            .collect::<Result<Vec<_>, IamError>>()?;
        let mut context = self.authorizer.base_context(call, self.keys.now());
        for entry in r.context_entries {
            context.set_all(&entry.key, entry.values);
        }
        let principals = call.caller.principal.policy_arns(self.iam.partition());
        let root = self.iam.root_arn();
        let policy_request = PolicyRequest {
            principals: &principals,
            account_root: &root,
            action: &r.action_name,
            resource: &r.resource_arn,
            context: &context,
        };
        Ok(simulation(evaluate(
            &policy_request,
            None,
            &Identity::Policies(&policies),
        )))
    }
}

/// A simulation's answer: the decision and the statement that made it.
fn simulation(decision: crate::policy::PolicyDecision) -> v1::SimulatePrincipalPolicyResponse {
    v1::SimulatePrincipalPolicyResponse {
        deciding_grant_id: decision.deciding_grant.clone().unwrap_or_default(),
        deciding_guardrail: decision.guardrail.clone().unwrap_or_default(),
        eval_decision: decision.decision.as_str().into(),
        matched_statements: decision
            .deciding_statement
            .into_iter()
            .map(|s| v1::MatchedStatement {
                source_policy_id: s.policy,
                sid: s.sid.unwrap_or_default(),
            })
            .collect(),
    }
}
