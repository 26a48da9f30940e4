//! Domain errors → gRPC status, in one place. The AWS-style reason name travels in a
//! `google.rpc.ErrorInfo` detail (and leads the message, for tools that show only that).

use crate::auth::AuthError;
use crate::iam::IamError;
use crate::keys::KeyError;
use std::collections::HashMap;
use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

/// The `ErrorInfo.domain` of Keyhaven's errors.
pub const ERROR_DOMAIN: &str = "keyhaven";

pub(crate) fn status(code: Code, reason: &str, message: impl std::fmt::Display) -> Status {
    Status::with_error_details(
        code,
        format!("{reason}: {message}"),
        ErrorDetails::with_error_info(reason, ERROR_DOMAIN, HashMap::new()),
    )
}

/// The reason name carried by a status, if any.
pub fn reason_of(status: &Status) -> Option<String> {
    status.get_details_error_info().map(|info| info.reason)
}

/// A refusal or failure as every door reports it: the reason name (AWS's exception name), the
/// gRPC code, and a message safe to show the caller. The AWS door's HTTP status follows from
/// the code; where AWS names an error differently from the gRPC API's reason, `aws_type` says
/// so.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub code: Code,
    pub reason: &'static str,
    pub message: String,
    /// AWS's name when it differs from `reason` (the gRPC API keeps its older name).
    pub aws_type: Option<&'static str>,
}

impl ApiError {
    pub fn new(code: Code, reason: &'static str, message: impl std::fmt::Display) -> Self {
        Self {
            code,
            reason,
            message: message.to_string(),
            aws_type: None,
        }
    }

    /// The `__type` the AWS JSON protocol answers with.
    pub fn aws_type(&self) -> &'static str {
        self.aws_type.unwrap_or(self.reason)
    }

    /// The AWS door's HTTP status: 500 for the service's own failures, 400 for the rest.
    pub fn http_status(&self) -> u16 {
        match self.code {
            Code::Internal | Code::Unknown | Code::DataLoss | Code::Unavailable => 500,
            _ => 400,
        }
    }

    /// What the audit log records of it.
    pub fn outcome(&self) -> crate::audit::Outcome {
        crate::audit::Outcome {
            code: format!("{:?}", self.code),
            reason: Some(self.reason.to_owned()),
        }
    }

    /// A refusal after a source's failures passed its rate limit.
    pub fn throttled() -> Self {
        Self::new(
            Code::ResourceExhausted,
            "ThrottlingException",
            "too many requests that fail authentication from this source; slow down",
        )
    }

    /// The audit log cannot take the call's record: nothing is done.
    /// This daemon's view of a store it shares with others may be out of date: it serves
    /// nothing from it until it has caught up (AWS's `DependencyTimeoutException`, retryable).
    pub fn out_of_date(why: &str) -> Self {
        Self::new(
            Code::Unavailable,
            "DependencyTimeoutException",
            format!(
                "this daemon cannot serve now: its view of the cluster's store may be out of date \
                 ({why}); try again, or another daemon"
            ),
        )
    }

    pub fn audit_unavailable() -> Self {
        Self::new(
            Code::Unavailable,
            "AuditLogUnavailableException",
            "the call cannot be recorded in the audit log; try again later",
        )
    }
}

impl From<ApiError> for Status {
    fn from(error: ApiError) -> Self {
        status(error.code, error.reason, error.message)
    }
}

impl ApiError {
    /// The call needs another person's approval: nothing was done, and the request `id` now
    /// waits for it. The id leads the message after the reason, for tools that show only that.
    pub fn approval_required(id: &str, action: &str) -> Self {
        Self::new(
            Code::FailedPrecondition,
            "ApprovalRequiredException",
            format!(
                "approval request {id}: {action} needs the approval of another person; once \
                 approved, repeat the same call with {} {id}",
                super::APPROVAL_ID_HEADER
            ),
        )
    }
}

impl From<crate::approval::ApprovalError> for ApiError {
    fn from(error: crate::approval::ApprovalError) -> Self {
        use crate::approval::ApprovalError as E;
        let (code, reason) = match &error {
            E::NotFound(_) => (Code::NotFound, "NotFoundException"),
            E::SameIdentity(_) => (Code::PermissionDenied, "AccessDeniedException"),
            E::WrongState { .. } => (Code::FailedPrecondition, "ApprovalStateException"),
            E::Mismatch(_) => (Code::PermissionDenied, "ApprovalMismatchException"),
            E::ApprovalRequired => (Code::FailedPrecondition, "ApprovalRequiredException"),
            E::TooManyPending(_) => (Code::ResourceExhausted, "LimitExceededException"),
            E::Store(_) => (Code::Unavailable, "KMSInternalException"),
        };
        if let E::Store(e) = &error {
            tracing::error!(error = %e, "approval request could not be stored");
            return Self::new(code, reason, "the approval request could not be stored");
        }
        Self::new(code, reason, error)
    }
}

impl From<KeyError> for ApiError {
    fn from(error: KeyError) -> Self {
        let mut aws_type = None;
        let (code, reason) = match &error {
            KeyError::NotFound(_) => (Code::NotFound, "NotFoundException"),
            KeyError::InvalidState(_) => (Code::FailedPrecondition, "KMSInvalidStateException"),
            KeyError::Disabled(_) => {
                aws_type = Some("DisabledException");
                (Code::FailedPrecondition, "KMSInvalidStateException")
            }
            KeyError::InvalidCiphertext => (Code::InvalidArgument, "InvalidCiphertextException"),
            KeyError::IncorrectKey(_) => (Code::InvalidArgument, "IncorrectKeyException"),
            KeyError::Validation(_) => (Code::InvalidArgument, "ValidationException"),
            KeyError::AlreadyExists(_) => (Code::AlreadyExists, "AlreadyExistsException"),
            KeyError::LimitExceeded(_) => (Code::ResourceExhausted, "LimitExceededException"),
            KeyError::KeyStoreNotFound(_) => (Code::NotFound, "CustomKeyStoreNotFoundException"),
            KeyError::MalformedPolicy(_) => {
                (Code::InvalidArgument, "MalformedPolicyDocumentException")
            }
            KeyError::AccessDenied(_) => (Code::PermissionDenied, "AccessDeniedException"),
            KeyError::KeyStoreUnavailable(_) => (Code::Unavailable, "KeyStoreUnavailableException"),
            KeyError::InvalidKeyUsage(_) => (Code::InvalidArgument, "InvalidKeyUsageException"),
            KeyError::UnsupportedOperation(_) => {
                (Code::FailedPrecondition, "UnsupportedOperationException")
            }
            KeyError::InvalidGrantToken(_) => (Code::InvalidArgument, "InvalidGrantTokenException"),
            KeyError::InvalidMac => (Code::InvalidArgument, "KMSInvalidMacException"),
            KeyError::InvalidSignature => (Code::InvalidArgument, "KMSInvalidSignatureException"),
            KeyError::InvalidImportToken(_) => {
                (Code::InvalidArgument, "InvalidImportTokenException")
            }
            KeyError::ExpiredImportToken(_) => {
                (Code::InvalidArgument, "ExpiredImportTokenException")
            }
            KeyError::IncorrectKeyMaterial(_) => {
                (Code::InvalidArgument, "IncorrectKeyMaterialException")
            }
            KeyError::Contended(_) => (Code::Unavailable, "KMSInternalException"),
            // AWS's retryable "a dependency did not answer in time".
            KeyError::StoreUnavailable => (Code::Unavailable, "DependencyTimeoutException"),
            KeyError::Internal(detail) => {
                tracing::error!(%detail, "internal error");
                (Code::Internal, "KMSInternalException")
            }
        };
        Self {
            aws_type,
            ..Self::new(code, reason, error)
        }
    }
}

impl From<KeyError> for Status {
    fn from(error: KeyError) -> Self {
        ApiError::from(error).into()
    }
}

impl From<IamError> for ApiError {
    fn from(error: IamError) -> Self {
        let (code, reason) = match &error {
            IamError::NotFound(_) => (Code::NotFound, "NoSuchEntityException"),
            IamError::AlreadyExists(_) => (Code::AlreadyExists, "EntityAlreadyExistsException"),
            IamError::Validation(_) => (Code::InvalidArgument, "ValidationException"),
            IamError::LimitExceeded(_) => (Code::ResourceExhausted, "LimitExceededException"),
            IamError::MalformedPolicy(_) => {
                (Code::InvalidArgument, "MalformedPolicyDocumentException")
            }
            IamError::InvalidAuthenticationCode(_) => {
                (Code::PermissionDenied, "InvalidAuthenticationCodeException")
            }
            IamError::DeleteConflict(_) => (Code::FailedPrecondition, "DeleteConflictException"),
            IamError::ConcurrentModification(_) => {
                (Code::Aborted, "ConcurrentModificationException")
            }
            IamError::Internal(detail) => {
                tracing::error!(%detail, "internal error");
                (Code::Internal, "ServiceFailureException")
            }
        };
        Self::new(code, reason, error)
    }
}

impl From<IamError> for Status {
    fn from(error: IamError) -> Self {
        ApiError::from(error).into()
    }
}

impl From<AuthError> for ApiError {
    fn from(error: AuthError) -> Self {
        Self::new(Code::Unauthenticated, error.reason(), &error)
    }
}

impl From<AuthError> for Status {
    fn from(error: AuthError) -> Self {
        ApiError::from(error).into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_travel_in_the_details() {
        let s = Status::from(KeyError::InvalidState("key is Disabled".into()));
        assert_eq!(s.code(), Code::FailedPrecondition);
        assert_eq!(reason_of(&s).as_deref(), Some("KMSInvalidStateException"));
        assert_eq!(s.message(), "KMSInvalidStateException: key is Disabled");
    }

    #[test]
    fn a_disabled_key_keeps_its_grpc_reason_and_has_its_aws_name() {
        let e = ApiError::from(KeyError::Disabled("key is Disabled".into()));
        assert_eq!(e.reason, "KMSInvalidStateException");
        assert_eq!(e.aws_type(), "DisabledException");
        assert_eq!(e.http_status(), 400);
        let internal = ApiError::from(KeyError::Internal("detail".into()));
        assert_eq!(internal.http_status(), 500);
        assert_eq!(internal.message, "internal error");
    }

    /// A change the store did not take after its retries is retryable, and says nothing was
    /// changed; the store's own words stay in the log.
    #[test]
    fn a_store_that_cannot_take_changes_answers_retryable() {
        let e = ApiError::from(KeyError::StoreUnavailable);
        assert_eq!(e.code, Code::Unavailable);
        assert_eq!(e.reason, "DependencyTimeoutException");
        assert_eq!(
            e.message,
            "the metadata store cannot take changes now (nothing was changed); try again"
        );
        assert_eq!(e.http_status(), 500);
    }

    #[test]
    fn internal_detail_stays_out_of_the_status() {
        let s = Status::from(KeyError::Internal("sled: /secret/path corrupt".into()));
        assert_eq!(s.code(), Code::Internal);
        assert!(!s.message().contains("sled"), "{}", s.message());
    }
}
