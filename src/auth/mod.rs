//! Who is calling: request signatures (AWS Signature Version 4, adapted to gRPC), access keys,
//! and the authenticated [`Caller`] that every handler receives.

pub mod certificate;
mod credentials;
mod directory;
pub mod mfa;
mod replay;
pub mod signature;
pub mod throttle;
pub mod totp;

pub(crate) use credentials::host_accepted;
pub use credentials::{
    AccessKeyInfo, AccessKeyStatus, CredentialError, CredentialStore, Credentials,
    MAX_ACCESS_KEYS_PER_USER, MAX_SKEW_SECONDS, NewAccessKey, SignatureDoor, SignatureUse,
    SignedRequest, is_well_formed_access_key_id, principal, wait_past_accepted,
};
pub use directory::CredentialDirectory;
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
        if let Some(role) = self.role_arn(partition) {
            arns.push(role);
        }
        arns
    }

    /// For a role session, its role's ARN.
    pub fn role_arn(&self, partition: &str) -> Option<String> {
        match &self.kind {
            PrincipalKind::AssumedRole { role, .. } => Some(format!(
                "arn:{partition}:iam::{}:role/{role}",
                self.account_id
            )),
            _ => None,
        }
    }

    /// `aws:PrincipalArn` as AWS sets it: the caller's ARN, but the role's ARN for a role
    /// session (so that a policy naming a role covers all its sessions).
    pub fn principal_arn(&self, partition: &str) -> String {
        self.role_arn(partition).unwrap_or_else(|| self.arn.clone())
    }
}

/// The users and roles that exist now, each with the unique id it was created with (`AIDA…`,
/// `AROA…`). An access key or session carries the id of the principal it was issued to and
/// authenticates only while a principal of that id exists: a credential that outlived its
/// user or role (made while it was being deleted, say) is refused, even when a new user or
/// role of the same name exists. Implemented by the identity service, which owns them.
pub trait PrincipalDirectory: Send + Sync {
    /// The unique id of the user, or of the role of the session, `kind` names; `None` if there
    /// is no such user or role (and for the root, which has no id).
    fn current_id(&self, kind: &PrincipalKind) -> Option<String>;
}

/// The authenticated caller of one request, handed to the handler.
#[derive(Debug, Clone)]
pub struct Caller {
    pub principal: Arc<Principal>,
    /// The access key that signed the request; empty for a certificate principal's call.
    pub access_key_id: String,
    /// The client certificate a call without a signature authenticated by.
    pub certificate: Option<certificate::CertificateCredential>,
    /// Long-term or temporary credentials, and whether MFA stood behind them.
    pub credential_kind: CredentialKind,
}

/// What the credentials of a call are, for `aws:MultiFactorAuthPresent` and
/// `aws:MultiFactorAuthAge`: AWS leaves both keys out for long-term credentials (so that
/// `BoolIfExists` idioms treat them as without MFA) and sets `false` for temporary
/// credentials issued without MFA.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CredentialKind {
    /// An access key, a client certificate, the root's key.
    #[default]
    LongTerm,
    /// Temporary credentials; `mfa_authenticated` is when the MFA code they were issued
    /// against was accepted; `signed_in`, whether they are a sign-in's (a password's).
    Temporary {
        mfa_authenticated: Option<UnixSeconds>,
        signed_in: bool,
    },
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
    /// A client certificate whose identities are bound to no principal (or to one that no
    /// longer exists, or to two).
    #[error("the client certificate {0} is not bound to a principal")]
    UnknownCertificate(String),
    #[error(
        "the client certificate {identity} is not valid at {now} (outside its validity period)"
    )]
    CertificateNotValid { identity: String, now: UnixSeconds },
}

impl AuthError {
    /// The AWS-style reason name.
    pub fn reason(&self) -> &'static str {
        match self {
            AuthError::Missing => "MissingAuthenticationTokenException",
            AuthError::Malformed(_) => "IncompleteSignatureException",
            AuthError::UnknownAccessKey(_)
            | AuthError::UnknownCertificate(_)
            | AuthError::CertificateNotValid { .. } => "UnrecognizedClientException",
            AuthError::ExpiredToken => "ExpiredTokenException",
            AuthError::BadSignature
            | AuthError::Expired { .. }
            | AuthError::Replayed
            | AuthError::SignedBeforeStart { .. }
            | AuthError::HostNotAccepted(_) => "InvalidSignatureException",
        }
    }
}
