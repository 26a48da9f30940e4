//! Two-person approval at the operations: the gate a key action that needs approval passes
//! (after it was authorised, before it changes anything), and the approval operations
//! (ListApprovalRequests, GetApprovalRequest, ApproveRequest, RejectRequest,
//! GetApprovalSettings, PutApprovalSettings), actions `keyhaven:<Operation>`.
//!
//! Who may do what: the approval operations are judged by the caller's identity policies on
//! the request's resource (the key's ARN, or `*` for the settings): key policies speak of
//! `kms:` actions only. The approver must be another person than the requester (the core
//! compares identities: a user, a role whatever its session, the root). A requester may
//! withdraw (reject) their own request without `keyhaven:RejectRequest`.

use super::kms::{KmsOperations, Outcome};
use crate::api::authorize::CallContext;
use crate::api::status::ApiError;
use crate::approval::{
    ApprovalRequest, ApprovalSettings, ApprovalState, Approvals, DEFAULT_ACTIONS,
    DEFAULT_WINDOW_SECONDS, PUT_SETTINGS_ACTION, Person,
};
use crate::audit::ApprovalNote;
use crate::keys::KeyError;
use crate::proto::v1;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

fn person(call: &CallContext, partition: &str) -> Person {
    let principal = &call.caller.principal;
    Person {
        principal_arn: principal.arn.clone(),
        identity: principal.principal_arn(partition),
    }
}

fn note(request: &ApprovalRequest) -> ApprovalNote {
    ApprovalNote {
        request_id: request.id.clone(),
        requester: request.requester.principal_arn.clone(),
        approver: match &request.state {
            ApprovalState::Rejected { by, .. } => Some(by.principal_arn.clone()),
            _ => request
                .approved_by
                .as_ref()
                .map(|p| p.principal_arn.clone()),
        },
    }
}

fn message(request: ApprovalRequest) -> v1::ApprovalRequest {
    let (decided_by, decision_date) = match &request.state {
        ApprovalState::Rejected { by, at } | ApprovalState::Approved { by, at } => {
            (by.principal_arn.clone(), *at)
        }
        _ => match &request.approved_by {
            Some(by) => (by.principal_arn.clone(), 0),
            None => (String::new(), 0),
        },
    };
    let (executed_by, execution_date) = match &request.state {
        ApprovalState::Executed { by, at } => (by.principal_arn.clone(), *at),
        _ => (String::new(), 0),
    };
    v1::ApprovalRequest {
        request_id: request.id,
        action: request.action,
        resource: request.resource,
        parameters: request.parameters,
        requester: request.requester.principal_arn,
        creation_date: request.created,
        expiration_date: request.expires,
        state: request.state.name().into(),
        decided_by,
        decision_date,
        executed_by,
        execution_date,
    }
}

fn no_approvals() -> ApiError {
    ApiError::new(
        tonic::Code::Unimplemented,
        "UnsupportedOperationException",
        "two-person approval is not available on this daemon",
    )
}

/// The actions settings may name: those the operations consult.
fn validate_actions<'a>(actions: impl IntoIterator<Item = &'a String>) -> Result<(), ApiError> {
    for action in actions {
        if !DEFAULT_ACTIONS.contains(&action.as_str()) {
            return Err(KeyError::Validation(format!(
                "'{}' cannot need approval; the actions that can are {}",
                crate::keys::printable_input(action),
                DEFAULT_ACTIONS.join(", ")
            ))
            .into());
        }
    }
    Ok(())
}

impl KmsOperations {
    fn approvals(&self) -> Result<&Arc<Approvals>, ApiError> {
        self.approvals.as_ref().ok_or_else(no_approvals)
    }

    fn person(&self, call: &CallContext) -> Person {
        person(call, self.authorizer.iam().partition())
    }

    /// The ARN of the key `key` (an id the operation resolved).
    pub(super) fn key_arn(&self, key: &str) -> Result<String, ApiError> {
        Ok(self.keys.key_arn(self.keys.resolve_id(key)?))
    }

    /// Lets an authorised call of `action` on `key` go on, or stops it. When the action needs
    /// approval on that key: a call naming no approval makes a pending request and answers
    /// `ApprovalRequiredException` with its id (nothing else changes); a call naming one runs
    /// only if that request was approved for exactly this action, key and `parameters`, and
    /// marks it executed (durably, before the action) so that it runs once.
    pub(super) async fn approval_gate(
        &self,
        call: &CallContext,
        action: &str,
        key: &str,
        parameters: serde_json::Value,
    ) -> Result<(), ApiError> {
        let Some(approvals) = &self.approvals else {
            return Ok(());
        };
        let arn = self.key_arn(key)?;
        if !approvals.settings().requires(action, &arn) {
            return Ok(());
        }
        self.pass_or_request(call, approvals, action, &arn, &parameters.to_string())
            .await
    }

    async fn pass_or_request(
        &self,
        call: &CallContext,
        approvals: &Approvals,
        action: &str,
        resource: &str,
        parameters: &str,
    ) -> Result<(), ApiError> {
        let by = self.person(call);
        match &call.approval_id {
            None => {
                let request = approvals
                    .request(action, resource, parameters, by, DEFAULT_WINDOW_SECONDS)
                    .await?;
                call.audit.set_approval(note(&request));
                tracing::info!(request = %request.id, action, resource, "approval required");
                Err(ApiError::approval_required(&request.id, action))
            }
            Some(id) => {
                let executed = approvals
                    .take_for_execution(id, action, resource, parameters, by)
                    .await
                    .inspect_err(|_| {
                        call.audit.set_approval(ApprovalNote {
                            request_id: crate::keys::printable_input(id),
                            requester: String::new(),
                            approver: None,
                        })
                    })?;
                call.audit.set_approval(note(&executed));
                Ok(())
            }
        }
    }

    /// Authorises `action` on the request's resource by the caller's identity policies.
    fn authorise_on(
        &self,
        call: &CallContext,
        action: &str,
        request: &ApprovalRequest,
    ) -> Result<(), ApiError> {
        if request.resource != "*" {
            call.audit.add_key(request.resource.clone());
        }
        let context = self.context(call);
        Ok(self
            .authorizer
            .require(call, action, &request.resource, None, &context)?)
    }

    pub async fn list_approval_requests(
        &self,
        call: &CallContext,
        _request: v1::ListApprovalRequestsRequest,
    ) -> Outcome<v1::ListApprovalRequestsResponse> {
        let context = self.context(call);
        self.authorizer
            .require(call, "keyhaven:ListApprovalRequests", "*", None, &context)?;
        Ok(v1::ListApprovalRequestsResponse {
            requests: self.approvals()?.list().into_iter().map(message).collect(),
        })
    }

    pub async fn get_approval_request(
        &self,
        call: &CallContext,
        request: v1::GetApprovalRequestRequest,
    ) -> Outcome<v1::GetApprovalRequestResponse> {
        let found = self.approvals()?.get(&request.request_id)?;
        self.authorise_on(call, "keyhaven:GetApprovalRequest", &found)?;
        Ok(v1::GetApprovalRequestResponse {
            request: Some(message(found)),
        })
    }

    pub async fn approve_request(
        &self,
        call: &CallContext,
        request: v1::ApproveRequestRequest,
    ) -> Outcome<v1::ApproveRequestResponse> {
        let approvals = self.approvals()?;
        let found = approvals.get(&request.request_id)?;
        call.audit.set_approval(note(&found));
        self.authorise_on(call, "keyhaven:ApproveRequest", &found)?;
        let approved = approvals
            .approve(&request.request_id, self.person(call))
            .await?;
        call.audit.set_approval(note(&approved));
        Ok(v1::ApproveRequestResponse {
            request: Some(message(approved)),
        })
    }

    pub async fn reject_request(
        &self,
        call: &CallContext,
        request: v1::RejectRequestRequest,
    ) -> Outcome<v1::RejectRequestResponse> {
        let approvals = self.approvals()?;
        let found = approvals.get(&request.request_id)?;
        call.audit.set_approval(note(&found));
        let by = self.person(call);
        if by.identity != found.requester.identity {
            self.authorise_on(call, "keyhaven:RejectRequest", &found)?;
        }
        let rejected = approvals.reject(&request.request_id, by).await?;
        call.audit.set_approval(note(&rejected));
        Ok(v1::RejectRequestResponse {
            request: Some(message(rejected)),
        })
    }

    pub async fn get_approval_settings(
        &self,
        call: &CallContext,
        _request: v1::GetApprovalSettingsRequest,
    ) -> Outcome<v1::GetApprovalSettingsResponse> {
        let context = self.context(call);
        self.authorizer
            .require(call, "keyhaven:GetApprovalSettings", "*", None, &context)?;
        let settings = self.approvals()?.settings();
        Ok(v1::GetApprovalSettingsResponse {
            account_actions: settings.account.into_iter().collect(),
            keys: settings
                .keys
                .into_iter()
                .map(|(key_id, actions)| v1::KeyApprovalActions {
                    key_id,
                    actions: actions.into_iter().collect(),
                })
                .collect(),
        })
    }

    /// Replaces the settings. Adding actions needs only `keyhaven:PutApprovalSettings`;
    /// turning approval off for any action (of the account or a key) needs an approved
    /// request of that action for exactly the new settings, as any approval-required call.
    pub async fn put_approval_settings(
        &self,
        call: &CallContext,
        request: v1::PutApprovalSettingsRequest,
    ) -> Outcome<v1::PutApprovalSettingsResponse> {
        let context = self.context(call);
        self.authorizer
            .require(call, PUT_SETTINGS_ACTION, "*", None, &context)?;
        let approvals = self.approvals()?;
        validate_actions(&request.account_actions)?;
        let mut keys: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for entry in request.keys {
            validate_actions(&entry.actions)?;
            let arn = self.key_arn(&entry.key_id)?;
            call.audit.add_key(arn.clone());
            keys.entry(arn).or_default().extend(entry.actions);
        }
        keys.retain(|_, actions| !actions.is_empty());
        let new = ApprovalSettings {
            account: request.account_actions.into_iter().collect(),
            keys,
        };
        let approval = call
            .approval_id
            .as_deref()
            .map(|id| (id, self.person(call)));
        if approval.is_none() && approvals.settings().narrowed_by(&new) {
            // Makes the request and answers ApprovalRequiredException.
            self.pass_or_request(call, approvals, PUT_SETTINGS_ACTION, "*", &new.canonical())
                .await?;
        }
        let executed = approval.as_ref().map(|(id, _)| id.to_string());
        approvals
            .put_settings(new, approval)
            .await
            .map_err(|e| match e {
                // The settings were widened between the check and now: the request names
                // other settings than those now in force.
                crate::approval::ApprovalError::ApprovalRequired => ApiError::new(
                    tonic::Code::Aborted,
                    "ConflictException",
                    "the approval settings changed meanwhile; try again",
                ),
                other => other.into(),
            })?;
        if let Some(request) = executed.and_then(|id| approvals.get(&id).ok())
            && matches!(request.state, ApprovalState::Executed { .. })
        {
            call.audit.set_approval(note(&request));
        }
        Ok(v1::PutApprovalSettingsResponse {})
    }
}
