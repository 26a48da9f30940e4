//! Who is calling: request signatures (AWS Signature Version 4, adapted to gRPC), access keys,
//! and the authenticated [`Caller`] that every handler receives.

mod credentials;
mod replay;
pub mod signature;

pub use credentials::{
    AccessKeyInfo, AccessKeyStatus, CredentialError, CredentialStore, Credentials,
    MAX_ACCESS_KEYS_PER_USER, MAX_SKEW_SECONDS, NewAccessKey, SignatureUse, principal,
};
pub use replay::ReplayCache;

use crate::clock::UnixSeconds;
use std::sync::Arc;

/// What kind of principal a caller is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PrincipalKind {
    /// The account's root: full access to everything in the account.
    Root,
    User {
        name: String,
    },
    /// A session of an assumed role (temporary credentials).
    AssumedRole {
        role: String,
        session: String,
    },
}

/// An IAM-style principal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub arn: String,
    pub account_id: String,
    pub kind: PrincipalKind,
}

impl Principal {
    pub fn root(partition: &str, account_id: &str) -> Self {
        Self {
            arn: format!("arn:{partition}:iam::{account_id}:root"),
            account_id: account_id.to_owned(),
            kind: PrincipalKind::Root,
        }
    }

    /// The ARNs a policy may name this principal by: its own, and for a role session also
    /// the role's.
    pub fn policy_arns(&self, partition: &str) -> Vec<String> {
        let mut arns = vec![self.arn.clone()];
        if let PrincipalKind::AssumedRole { role, .. } = &self.kind {
            arns.push(format!(
                "arn:{partition}:iam::{}:role/{role}",
                self.account_id
            ));
        }
        arns
    }
}

/// The authenticated caller of one request, handed to the handler.
#[derive(Debug, Clone)]
pub struct Caller {
    pub principal: Arc<Principal>,
    pub access_key_id: String,
}

/// Why a request was not authenticated. Each maps to `UNAUTHENTICATED` with its reason name;
/// messages never contain the secret or the expected signature.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("the request is not signed (no authorization header)")]
    Missing,
    #[error("the request signature is malformed: {0}")]
    Malformed(String),
    #[error("the access key id {0} is not recognised or not active")]
    UnknownAccessKey(String),
    #[error("the request signature does not match")]
    BadSignature,
    #[error(
        "signature expired: request time {request_time} is more than 5 minutes from the server's {server_time}"
    )]
    Expired {
        request_time: UnixSeconds,
        server_time: UnixSeconds,
    },
    #[error("the request signature has been used before (replayed request)")]
    Replayed,
    /// Dated before this daemon started: its replay cache cannot know whether an earlier run
    /// accepted it, so it is refused even within the allowed skew.
    #[error(
        "signature dated before the daemon started: request time {request_time} is earlier than the start at {started}; sign the request again"
    )]
    SignedBeforeStart {
        request_time: UnixSeconds,
        started: UnixSeconds,
    },
    #[error("the request was addressed to '{0}', which is not one of this daemon's accepted_hosts")]
    HostNotAccepted(String),
    #[error("the security token included in the request is expired")]
    ExpiredToken,
}

impl AuthError {
    /// The AWS-style reason name.
    pub fn reason(&self) -> &'static str {
        match self {
            AuthError::Missing => "MissingAuthenticationTokenException",
            AuthError::Malformed(_) => "IncompleteSignatureException",
            AuthError::UnknownAccessKey(_) => "UnrecognizedClientException",
            AuthError::ExpiredToken => "ExpiredTokenException",
            AuthError::BadSignature
            | AuthError::Expired { .. }
            | AuthError::Replayed
            | AuthError::SignedBeforeStart { .. }
            | AuthError::HostNotAccepted(_) => "InvalidSignatureException",
        }
    }
}
