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

/// A request that failed authentication past its source's rate limit.
pub(crate) fn throttled() -> Status {
    status(
        Code::ResourceExhausted,
        "ThrottlingException",
        "too many requests that fail authentication from this source; slow down",
    )
}

/// The reason name carried by a status, if any.
pub fn reason_of(status: &Status) -> Option<String> {
    status.get_details_error_info().map(|info| info.reason)
}

impl From<KeyError> for Status {
    fn from(error: KeyError) -> Self {
        let (code, reason) = match &error {
            KeyError::NotFound(_) => (Code::NotFound, "NotFoundException"),
            KeyError::InvalidState(_) => (Code::FailedPrecondition, "KMSInvalidStateException"),
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
            KeyError::InvalidMac => (Code::InvalidArgument, "KMSInvalidMacException"),
            KeyError::InvalidSignature => (Code::InvalidArgument, "KMSInvalidSignatureException"),
            KeyError::Internal(detail) => {
                tracing::error!(%detail, "internal error");
                (Code::Internal, "KMSInternalException")
            }
        };
        status(code, reason, error)
    }
}

impl From<IamError> for Status {
    fn from(error: IamError) -> Self {
        let (code, reason) = match &error {
            IamError::NotFound(_) => (Code::NotFound, "NoSuchEntityException"),
            IamError::AlreadyExists(_) => (Code::AlreadyExists, "EntityAlreadyExistsException"),
            IamError::Validation(_) => (Code::InvalidArgument, "ValidationException"),
            IamError::LimitExceeded(_) => (Code::ResourceExhausted, "LimitExceededException"),
            IamError::MalformedPolicy(_) => {
                (Code::InvalidArgument, "MalformedPolicyDocumentException")
            }
            IamError::Internal(detail) => {
                tracing::error!(%detail, "internal error");
                (Code::Internal, "ServiceFailureException")
            }
        };
        status(code, reason, error)
    }
}

impl From<AuthError> for Status {
    fn from(error: AuthError) -> Self {
        status(Code::Unauthenticated, error.reason(), &error)
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
    fn internal_detail_stays_out_of_the_status() {
        let s = Status::from(KeyError::Internal("sled: /secret/path corrupt".into()));
        assert_eq!(s.code(), Code::Internal);
        assert!(!s.message().contains("sled"), "{}", s.message());
    }
}
