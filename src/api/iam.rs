//! `keyhaven.v1.IdentityService`: each gRPC method is a conversion onto the transport-neutral
//! [`IamOperations`] or [`StsOperations`]: the authenticated call's context from the request's
//! extensions, the message in, the answer or the mapped error out.

use super::accounts::Accounts;
use super::call_context as caller;
use super::operations::{OrgOperations, SignInOperations, WebIdentityOperations};
use crate::proto::v1::{self, identity_service_server::IdentityService};
use std::sync::Arc;
use tonic::{Request, Response, Status};

/// The gRPC face of the identity service.
#[derive(Clone)]
pub struct IamApi {
    accounts: Arc<Accounts>,
}

impl IamApi {
    pub fn new(accounts: Arc<Accounts>) -> Self {
        Self { accounts }
    }
}

/// The call's context: for the unsigned web identity call, only where it came from and its
/// audit slot.
macro_rules! unsigned_or_caller {
    (web, $request:ident) => {
        unsigned_or_caller!(signin, $request)
    };
    (signin, $request:ident) => {
        WebCall {
            source_ip: $request.remote_addr().map(|a| a.ip()),
            audit: $request
                .extensions()
                .get::<crate::api::AuditSlot>()
                .cloned()
                .unwrap_or_default(),
        }
    };
    ($operations:ident, $request:ident) => {
        caller(&$request)?
    };
}

/// Where an unsigned call came from, and where its audit record's notes go.
struct WebCall {
    source_ip: Option<std::net::IpAddr>,
    audit: crate::api::AuditSlot,
}

/// Runs a method on the caller's account's operations, or (`org`) on the organisation's.
macro_rules! run_on {
    ($api:ident, web, $name:ident, $call:ident, $request:expr) => {
        WebIdentityOperations::new(&$api.accounts)
            .$name($call.source_ip, &$call.audit, $request)
            .await
    };
    ($api:ident, signin, $name:ident, $call:ident, $request:expr) => {
        SignInOperations::new(&$api.accounts)
            .$name($call.source_ip, &$call.audit, $request)
            .await
    };
    ($api:ident, org, $name:ident, $call:ident, $request:expr) => {
        OrgOperations::new(&$api.accounts)
            .$name(&$call, $request)
            .await
    };
    ($api:ident, $operations:ident, $name:ident, $call:ident, $request:expr) => {
        $api.accounts
            .of(&$call)?
            .$operations
            .$name(&$call, $request)
            .await
    };
}

/// The trait's methods, each the same three steps onto the operation of its name.
macro_rules! grpc_methods {
    ($($name:ident: $request:ident => $response:ident by $operations:ident,)*) => {
        #[tonic::async_trait]
        impl IdentityService for IamApi {
            $(
                async fn $name(
                    &self,
                    request: Request<v1::$request>,
                ) -> Result<Response<v1::$response>, Status> {
                    let call = unsigned_or_caller!($operations, request);
                    let answer = run_on!(self, $operations, $name, call, request.into_inner())?;
                    Ok(Response::new(answer))
                }
            )*
        }
    };
}

grpc_methods! {
    create_user: CreateUserRequest => CreateUserResponse by iam,
    delete_user: DeleteUserRequest => DeleteUserResponse by iam,
    list_users: ListUsersRequest => ListUsersResponse by iam,
    create_group: CreateGroupRequest => CreateGroupResponse by iam,
    delete_group: DeleteGroupRequest => DeleteGroupResponse by iam,
    list_groups: ListGroupsRequest => ListGroupsResponse by iam,
    add_user_to_group: AddUserToGroupRequest => AddUserToGroupResponse by iam,
    remove_user_from_group: RemoveUserFromGroupRequest => RemoveUserFromGroupResponse by iam,
    create_role: CreateRoleRequest => CreateRoleResponse by iam,
    delete_role: DeleteRoleRequest => DeleteRoleResponse by iam,
    list_roles: ListRolesRequest => ListRolesResponse by iam,
    put_entity_policy: PutEntityPolicyRequest => PutEntityPolicyResponse by iam,
    get_entity_policy: GetEntityPolicyRequest => GetEntityPolicyResponse by iam,
    delete_entity_policy: DeleteEntityPolicyRequest => DeleteEntityPolicyResponse by iam,
    list_entity_policies: ListEntityPoliciesRequest => ListEntityPoliciesResponse by iam,
    create_access_key: CreateAccessKeyRequest => CreateAccessKeyResponse by iam,
    list_access_keys: ListAccessKeysRequest => ListAccessKeysResponse by iam,
    update_access_key: UpdateAccessKeyRequest => UpdateAccessKeyResponse by iam,
    delete_access_key: DeleteAccessKeyRequest => DeleteAccessKeyResponse by iam,
    simulate_principal_policy: SimulatePrincipalPolicyRequest => SimulatePrincipalPolicyResponse by iam,
    simulate_custom_policy: SimulateCustomPolicyRequest => SimulatePrincipalPolicyResponse by iam,
    create_account: CreateAccountRequest => CreateAccountResponse by org,
    list_accounts: ListAccountsRequest => ListAccountsResponse by org,
    create_guardrail_policy: CreateGuardrailPolicyRequest => GuardrailPolicyResponse by org,
    get_guardrail_policy: GetGuardrailPolicyRequest => GuardrailPolicyResponse by org,
    delete_guardrail_policy: DeleteGuardrailPolicyRequest => DeleteGuardrailPolicyResponse by org,
    list_guardrail_policies: ListGuardrailPoliciesRequest => ListGuardrailPoliciesResponse by org,
    attach_guardrail_policy: AttachGuardrailPolicyRequest => AttachGuardrailPolicyResponse by org,
    detach_guardrail_policy: DetachGuardrailPolicyRequest => DetachGuardrailPolicyResponse by org,
    bind_certificate: BindCertificateRequest => BindCertificateResponse by iam,
    unbind_certificate: UnbindCertificateRequest => UnbindCertificateResponse by iam,
    list_certificates: ListCertificatesRequest => ListCertificatesResponse by iam,
    create_virtual_mfa_device: CreateVirtualMfaDeviceRequest => CreateVirtualMfaDeviceResponse by iam,
    enable_mfa_device: EnableMfaDeviceRequest => EnableMfaDeviceResponse by iam,
    deactivate_mfa_device: DeactivateMfaDeviceRequest => DeactivateMfaDeviceResponse by iam,
    delete_virtual_mfa_device: DeleteVirtualMfaDeviceRequest => DeleteVirtualMfaDeviceResponse by iam,
    list_mfa_devices: ListMfaDevicesRequest => ListMfaDevicesResponse by iam,
    list_virtual_mfa_devices: ListVirtualMfaDevicesRequest => ListVirtualMfaDevicesResponse by iam,
    assume_role: AssumeRoleRequest => AssumeRoleResponse by sts,
    assume_role_with_web_identity: AssumeRoleWithWebIdentityRequest => AssumeRoleWithWebIdentityResponse by web,
    create_login_profile: CreateLoginProfileRequest => LoginProfileResponse by iam,
    get_login_profile: GetLoginProfileRequest => LoginProfileResponse by iam,
    update_login_profile: UpdateLoginProfileRequest => UpdateLoginProfileResponse by iam,
    delete_login_profile: DeleteLoginProfileRequest => DeleteLoginProfileResponse by iam,
    change_password: ChangePasswordRequest => ChangePasswordResponse by iam,
    update_account_password_policy: PasswordPolicy => UpdateAccountPasswordPolicyResponse by iam,
    get_account_password_policy: GetAccountPasswordPolicyRequest => GetAccountPasswordPolicyResponse by iam,
    delete_account_password_policy: DeleteAccountPasswordPolicyRequest => DeleteAccountPasswordPolicyResponse by iam,
    sign_in: SignInRequest => SignInResponse by signin,
    create_open_id_connect_provider: CreateOpenIdConnectProviderRequest => CreateOpenIdConnectProviderResponse by iam,
    get_open_id_connect_provider: GetOpenIdConnectProviderRequest => GetOpenIdConnectProviderResponse by iam,
    list_open_id_connect_providers: ListOpenIdConnectProvidersRequest => ListOpenIdConnectProvidersResponse by iam,
    delete_open_id_connect_provider: DeleteOpenIdConnectProviderRequest => DeleteOpenIdConnectProviderResponse by iam,
    get_session_token: GetSessionTokenRequest => GetSessionTokenResponse by sts,
    get_caller_identity: GetCallerIdentityRequest => GetCallerIdentityResponse by sts,
}
