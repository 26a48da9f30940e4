//! Binding users and roles to client-certificate identities (see [`crate::auth::certificate`]):
//! under the identity service's gate, so that a binding cannot be made for a user or role
//! while it is being deleted (deletion removes its bindings).

use super::{EntityType, IamError, IamService};
use crate::auth::certificate::{
    BoundKind, CertificateBinding, CertificateError, CertificateIdentity,
};

impl From<CertificateError> for IamError {
    fn from(error: CertificateError) -> Self {
        match error {
            CertificateError::Validation(m) => IamError::Validation(m),
            CertificateError::AlreadyExists(m) => IamError::AlreadyExists(m),
            CertificateError::NotFound(m) => IamError::NotFound(m),
            CertificateError::LimitExceeded(m) => IamError::LimitExceeded(m),
            CertificateError::Store(e) => IamError::Internal(e.to_string()),
        }
    }
}

/// Users and roles may be bound; groups are not principals.
fn bound_kind(kind: EntityType) -> Result<BoundKind, IamError> {
    match kind {
        EntityType::User => Ok(BoundKind::User),
        EntityType::Role => Ok(BoundKind::Role),
        EntityType::Group => Err(IamError::Validation(
            "only users and roles can be bound to certificates; a group is not a principal".into(),
        )),
    }
}

impl IamService {
    /// Binds `identity` to the user or role `name`: a call over mutual TLS with a certificate
    /// of that identity and no signature then acts as it.
    pub async fn bind_certificate(
        &self,
        kind: EntityType,
        name: &str,
        identity: CertificateIdentity,
    ) -> Result<CertificateBinding, IamError> {
        let bound = bound_kind(kind)?;
        let _gate = self.gate.lock().await;
        let entity = self.require(kind, name)?;
        Ok(self
            .credentials
            .certificates()
            .bind(identity, bound, name, &entity.id, self.clock.now())
            .await?)
    }

    pub async fn unbind_certificate(
        &self,
        kind: EntityType,
        name: &str,
        identity: &CertificateIdentity,
    ) -> Result<(), IamError> {
        let bound = bound_kind(kind)?;
        let _gate = self.gate.lock().await;
        self.require(kind, name)?;
        Ok(self
            .credentials
            .certificates()
            .unbind(identity, bound, name)
            .await?)
    }

    pub fn list_certificates(
        &self,
        kind: EntityType,
        name: &str,
    ) -> Result<Vec<CertificateBinding>, IamError> {
        let bound = bound_kind(kind)?;
        self.require(kind, name)?;
        Ok(self.credentials.certificates().list(bound, name))
    }

    /// Removes the bindings of a user or role being deleted (under the gate already).
    pub(super) async fn unbind_all_certificates(
        &self,
        kind: EntityType,
        name: &str,
    ) -> Result<(), IamError> {
        if let Ok(bound) = bound_kind(kind) {
            self.credentials
                .certificates()
                .unbind_all_of(bound, name)
                .await?;
        }
        Ok(())
    }
}
