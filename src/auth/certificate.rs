//! Certificate principals: a user or role bound to a client-certificate identity (its
//! subject common name, or a URI subject alternative name such as a SPIFFE id), so that a
//! gRPC client with only a certificate from the mTLS client CA, and no request signature,
//! calls as that principal.
//!
//! rustls has verified the chain against the configured client CA before any of this runs:
//! this module only reads the names of a certificate already trusted, checks its validity
//! period against the daemon's clock (which tests and a daemon behind a skewed host may set
//! apart from the system's, which rustls uses), and looks the names up in the bindings.
//!
//! A role's certificate call acts as a session of the role named after the certificate's
//! identity ([`session_name`]); binding a certificate to a role is what trusts it, so no trust
//! policy is consulted. Bindings are stored records (`auth/certificate/<identity>`) behind the
//! store's barrier, held in memory, and removed with their user or role.

use super::{AuthError, Principal, PrincipalDirectory, PrincipalKind, principal};
use crate::clock::UnixSeconds;
use crate::store::{Store, StoreError, WriteBatch};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, RwLock};

const BINDING_PREFIX: &str = "auth/certificate/";
/// A user or role is bound to at most this many certificate identities.
pub const MAX_CERTIFICATES_PER_PRINCIPAL: usize = 10;
/// The account holds at most this many bindings: each is a record and a map entry.
pub const MAX_CERTIFICATE_BINDINGS: usize = 10_000;
/// The longest identity a binding may name (a common name is at most 64 by RFC 5280; URIs
/// are longer).
pub const MAX_IDENTITY_CHARS: usize = 512;

/// The name of a client certificate a principal is bound to.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum CertificateIdentity {
    /// The subject's common name.
    Subject(String),
    /// A URI subject alternative name (a SPIFFE id, say).
    Uri(String),
}

impl CertificateIdentity {
    /// An identity as a binding may name it: 1 to [`MAX_IDENTITY_CHARS`] characters with no
    /// control characters; a URI has a scheme.
    pub fn new_subject(name: &str) -> Result<Self, CertificateError> {
        check_text("a certificate subject", name)?;
        Ok(Self::Subject(name.to_owned()))
    }

    pub fn new_uri(uri: &str) -> Result<Self, CertificateError> {
        check_text("a certificate URI", uri)?;
        let scheme_ok = uri.split_once(':').is_some_and(|(scheme, _)| {
            !scheme.is_empty()
                && scheme.starts_with(|c: char| c.is_ascii_alphabetic())
                && scheme
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c))
        });
        if !scheme_ok || uri.contains(char::is_whitespace) {
            return Err(CertificateError::Validation(format!(
                "the certificate URI '{}' is not a URI (scheme:rest, no spaces)",
                crate::keys::printable_input(uri)
            )));
        }
        Ok(Self::Uri(uri.to_owned()))
    }

    /// `subject:<common name>` or `uri:<uri>`: its record name and how logs show it.
    fn key(&self) -> String {
        self.to_string()
    }

    fn parse_key(key: &str) -> Option<Self> {
        match key.split_once(':')? {
            ("subject", name) => Some(Self::Subject(name.to_owned())),
            ("uri", uri) => Some(Self::Uri(uri.to_owned())),
            _ => None,
        }
    }

    /// The value alone (the common name or the URI).
    pub fn value(&self) -> &str {
        match self {
            Self::Subject(v) | Self::Uri(v) => v,
        }
    }
}

impl fmt::Display for CertificateIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Subject(name) => write!(f, "subject:{name}"),
            Self::Uri(uri) => write!(f, "uri:{uri}"),
        }
    }
}

fn check_text(what: &str, text: &str) -> Result<(), CertificateError> {
    let chars = text.chars().count();
    if chars == 0 || chars > MAX_IDENTITY_CHARS || text.chars().any(char::is_control) {
        return Err(CertificateError::Validation(format!(
            "{what} must be 1 to {MAX_IDENTITY_CHARS} characters with no control characters"
        )));
    }
    Ok(())
}

/// The session name of a role's certificate call: the identity's value with every character
/// a session name may not hold (outside letters, digits and `+=,.@_-`) turned into `-`, cut
/// to 64 characters; `spiffe://example.org/app` acts as `assumed-role/<role>/spiffe---example.org-app`.
pub fn session_name(identity: &CertificateIdentity) -> String {
    let mut name: String = identity
        .value()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "+=,.@_-".contains(c) {
                c
            } else {
                '-'
            }
        })
        .take(64)
        .collect();
    while name.len() < 2 {
        name.push('-');
    }
    name
}

/// What a certificate call authenticated by: the bound identity, and when the certificate
/// stops being valid (a call that outlives its request, such as a followed audit tail, ends
/// then).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertificateCredential {
    pub identity: CertificateIdentity,
    pub not_after: UnixSeconds,
}

/// The names and validity period of a client certificate the TLS layer verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerCertificate {
    /// URI subject alternative names, then subject common names, in certificate order: the
    /// order they are looked up in.
    pub identities: Vec<CertificateIdentity>,
    pub not_before: UnixSeconds,
    pub not_after: UnixSeconds,
}

impl PeerCertificate {
    /// Reads a DER certificate. One that does not parse (rustls accepted it, so this is
    /// unexpected) is refused as malformed credentials.
    pub fn from_der(der: &[u8]) -> Result<Self, AuthError> {
        let malformed =
            |_| AuthError::Malformed("the client certificate cannot be read".to_owned());
        let (_, certificate) = x509_parser::parse_x509_certificate(der).map_err(malformed)?;
        let mut identities = Vec::new();
        if let Some(names) = certificate.subject_alternative_name().map_err(|_| {
            AuthError::Malformed("the client certificate's names are damaged".into())
        })? {
            for name in &names.value.general_names {
                if let x509_parser::extensions::GeneralName::URI(uri) = name {
                    identities.push(CertificateIdentity::Uri((*uri).to_owned()));
                }
            }
        }
        for name in certificate.subject().iter_common_name() {
            if let Ok(text) = name.as_str() {
                identities.push(CertificateIdentity::Subject(text.to_owned()));
            }
        }
        let validity = certificate.validity();
        Ok(Self {
            identities,
            not_before: validity.not_before.timestamp(),
            not_after: validity.not_after.timestamp(),
        })
    }

    /// The identity the certificate presents first (for the audit log of a refusal).
    pub fn presented(&self) -> Option<&CertificateIdentity> {
        self.identities.first()
    }
}

/// Who a certificate identity is bound to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum BoundKind {
    User,
    Role,
}

/// One binding, as listed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertificateBinding {
    pub identity: CertificateIdentity,
    pub kind: BoundKind,
    pub name: String,
    pub created: UnixSeconds,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct BindingRecord {
    kind: BoundKind,
    name: String,
    /// The unique id of the user or role it was bound to: a binding outliving its principal
    /// (deleted, and another made under the name) does not authenticate.
    principal_id: String,
    created: UnixSeconds,
}

/// Why a binding change was refused.
#[derive(Debug, thiserror::Error)]
pub enum CertificateError {
    #[error("{0}")]
    Validation(String),
    #[error("{0}")]
    AlreadyExists(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    LimitExceeded(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The bindings, read from the store at start and kept in memory.
pub struct CertificateBindings {
    store: Arc<Store>,
    bindings: RwLock<BTreeMap<CertificateIdentity, BindingRecord>>,
    /// Serialises changes, so that quotas hold under concurrency.
    gate: tokio::sync::Mutex<()>,
    /// Whether another account of the organisation binds an identity: an identity names one
    /// principal of the whole organisation.
    elsewhere: std::sync::OnceLock<BoundElsewhere>,
}

/// Tells whether an identity is bound in another account.
pub type BoundElsewhere = Arc<dyn Fn(&CertificateIdentity) -> bool + Send + Sync>;

impl CertificateBindings {
    pub fn open(store: Arc<Store>) -> Result<Self, StoreError> {
        let bindings = Self::load(&store)?;
        Ok(Self {
            store,
            bindings: RwLock::new(bindings),
            gate: tokio::sync::Mutex::new(()),
            elsewhere: std::sync::OnceLock::new(),
        })
    }

    /// Reads every binding again (another daemon sharing the store changed one).
    pub fn reload(&self) -> Result<(), StoreError> {
        let bindings = Self::load(&self.store)?;
        match self.bindings.write() {
            Ok(mut slot) => *slot = bindings,
            Err(poisoned) => *poisoned.into_inner() = bindings,
        }
        Ok(())
    }

    /// Whether the store record `name` is a certificate binding's.
    pub fn holds(name: &[u8]) -> bool {
        name.starts_with(BINDING_PREFIX.as_bytes())
    }

    fn load(store: &Store) -> Result<BTreeMap<CertificateIdentity, BindingRecord>, StoreError> {
        let mut bindings = BTreeMap::new();
        for (name, value) in store.scan(BINDING_PREFIX.as_bytes(), None, usize::MAX)? {
            let label = String::from_utf8_lossy(&name).into_owned();
            let identity = label
                .strip_prefix(BINDING_PREFIX)
                .and_then(CertificateIdentity::parse_key)
                .ok_or_else(|| StoreError(format!("{label} is not a certificate binding")))?;
            let record: BindingRecord = serde_json::from_slice(&value)
                .map_err(|e| StoreError(format!("{label} is damaged: {e}")))?;
            bindings.insert(identity, record);
        }
        Ok(bindings)
    }

    /// Sets how to tell an identity another account binds (once).
    pub fn watch_elsewhere(&self, elsewhere: BoundElsewhere) {
        let _ = self.elsewhere.set(elsewhere);
    }

    /// Whether `identity` is bound here.
    pub fn binds(&self, identity: &CertificateIdentity) -> bool {
        self.read().contains_key(identity)
    }

    /// Whether one of the certificate's identities is bound here.
    pub fn binds_any(&self, certificate: &PeerCertificate) -> bool {
        let bindings = self.read();
        certificate
            .identities
            .iter()
            .any(|identity| bindings.contains_key(identity))
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<CertificateIdentity, BindingRecord>> {
        match self.bindings.read() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    fn write(
        &self,
    ) -> std::sync::RwLockWriteGuard<'_, BTreeMap<CertificateIdentity, BindingRecord>> {
        match self.bindings.write() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    /// Binds `identity` to the user or role `name` of unique id `principal_id` (whose
    /// existence is the caller's to check). An identity names one principal at most.
    pub async fn bind(
        &self,
        identity: CertificateIdentity,
        kind: BoundKind,
        name: &str,
        principal_id: &str,
        now: UnixSeconds,
    ) -> Result<CertificateBinding, CertificateError> {
        let _gate = self.gate.lock().await;
        {
            let bindings = self.read();
            if let Some(existing) = bindings.get(&identity) {
                return Err(CertificateError::AlreadyExists(format!(
                    "the certificate identity '{}' is already bound to {} '{}'",
                    crate::keys::printable_input(&identity.to_string()),
                    kind_label(existing.kind),
                    existing.name
                )));
            }
            if self.elsewhere.get().is_some_and(|bound| bound(&identity)) {
                return Err(CertificateError::AlreadyExists(format!(
                    "the certificate identity '{}' is already bound in another account of the \
                     organisation",
                    crate::keys::printable_input(&identity.to_string()),
                )));
            }
            if bindings.len() >= MAX_CERTIFICATE_BINDINGS {
                return Err(CertificateError::LimitExceeded(format!(
                    "the account already has the most certificate bindings it may hold \
                     ({MAX_CERTIFICATE_BINDINGS})"
                )));
            }
            let held = bindings
                .values()
                .filter(|r| r.kind == kind && r.name == name)
                .count();
            if held >= MAX_CERTIFICATES_PER_PRINCIPAL {
                return Err(CertificateError::LimitExceeded(format!(
                    "the {} '{name}' is already bound to {MAX_CERTIFICATES_PER_PRINCIPAL} \
                     certificate identities, the most it may have",
                    kind_label(kind)
                )));
            }
        }
        let record = BindingRecord {
            kind,
            name: name.to_owned(),
            principal_id: principal_id.to_owned(),
            created: now,
        };
        let mut batch = WriteBatch::new();
        batch.put(
            record_name(&identity),
            serde_json::to_vec(&record).map_err(|e| StoreError(e.to_string()))?,
        );
        self.store.commit(batch).await?;
        self.write().insert(identity.clone(), record);
        Ok(CertificateBinding {
            identity,
            kind,
            name: name.to_owned(),
            created: now,
        })
    }

    /// Removes the binding of `identity` to the user or role `name`; from then on the
    /// certificate is refused.
    pub async fn unbind(
        &self,
        identity: &CertificateIdentity,
        kind: BoundKind,
        name: &str,
    ) -> Result<(), CertificateError> {
        let _gate = self.gate.lock().await;
        let bound_here = self
            .read()
            .get(identity)
            .is_some_and(|r| r.kind == kind && r.name == name);
        if !bound_here {
            return Err(CertificateError::NotFound(format!(
                "the {} '{name}' is not bound to the certificate identity '{}'",
                kind_label(kind),
                crate::keys::printable_input(&identity.to_string())
            )));
        }
        let mut batch = WriteBatch::new();
        batch.delete(record_name(identity));
        self.store.commit(batch).await?;
        self.write().remove(identity);
        Ok(())
    }

    /// Removes every binding of the user or role `name` (when it is deleted).
    pub async fn unbind_all_of(&self, kind: BoundKind, name: &str) -> Result<(), StoreError> {
        let _gate = self.gate.lock().await;
        let doomed: Vec<CertificateIdentity> = self
            .read()
            .iter()
            .filter(|(_, r)| r.kind == kind && r.name == name)
            .map(|(identity, _)| identity.clone())
            .collect();
        if doomed.is_empty() {
            return Ok(());
        }
        let mut batch = WriteBatch::new();
        for identity in &doomed {
            batch.delete(record_name(identity));
        }
        self.store.commit(batch).await?;
        let mut bindings = self.write();
        for identity in &doomed {
            bindings.remove(identity);
        }
        Ok(())
    }

    /// The bindings of the user or role `name`.
    pub fn list(&self, kind: BoundKind, name: &str) -> Vec<CertificateBinding> {
        self.read()
            .iter()
            .filter(|(_, r)| r.kind == kind && r.name == name)
            .map(|(identity, r)| CertificateBinding {
                identity: identity.clone(),
                kind,
                name: r.name.clone(),
                created: r.created,
            })
            .collect()
    }

    /// The principal a verified client certificate calls as, at `now`: the certificate must
    /// be within its validity period, exactly one principal must be bound to its identities,
    /// and that principal must still be the one bound (same unique id). Every refusal is the
    /// one unknown credentials get.
    pub fn authenticate(
        &self,
        certificate: &PeerCertificate,
        now: UnixSeconds,
        directory: Option<&dyn PrincipalDirectory>,
        partition: &str,
        account_id: &str,
    ) -> Result<(Arc<Principal>, CertificateCredential), AuthError> {
        let shown = || {
            certificate
                .presented()
                .map(ToString::to_string)
                .unwrap_or_else(|| "(no name)".to_owned())
        };
        if now < certificate.not_before || now > certificate.not_after {
            return Err(AuthError::CertificateNotValid {
                identity: shown(),
                now,
            });
        }
        // Copied out, so that no lock of ours is held while the directory takes its own.
        let mut found: Option<(CertificateIdentity, BindingRecord)> = None;
        for identity in &certificate.identities {
            let Some(record) = self.read().get(identity).cloned() else {
                continue;
            };
            match &found {
                None => found = Some((identity.clone(), record)),
                Some((_, first)) if first.kind == record.kind && first.name == record.name => {}
                // Names bound to two principals: which one the CA meant is unknowable.
                Some(_) => return Err(AuthError::UnknownCertificate(shown())),
            }
        }
        let Some((identity, record)) = found else {
            return Err(AuthError::UnknownCertificate(shown()));
        };
        let stored = match record.kind {
            BoundKind::User => format!("user/{}", record.name),
            BoundKind::Role => format!("assumed-role/{}/{}", record.name, session_name(&identity)),
        };
        let principal = principal(&stored, partition, account_id)
            .ok_or_else(|| AuthError::UnknownCertificate(shown()))?;
        if let Some(directory) = directory
            && directory.current_id(&principal.kind).as_deref() != Some(&record.principal_id)
        {
            return Err(AuthError::UnknownCertificate(shown()));
        }
        Ok((
            Arc::new(principal),
            CertificateCredential {
                identity,
                not_after: certificate.not_after,
            },
        ))
    }

    /// Whether a call's certificate would still be accepted at `now` (for calls that outlive
    /// their request, like a followed audit tail): still valid, and its identity still bound
    /// to the principal the call authenticated as. The refusal is what a new call would get.
    pub fn still_accepted(
        &self,
        credential: &CertificateCredential,
        principal: &Principal,
        now: UnixSeconds,
    ) -> Result<(), AuthError> {
        let identity = &credential.identity;
        if now > credential.not_after {
            return Err(AuthError::CertificateNotValid {
                identity: identity.to_string(),
                now,
            });
        }
        if !self.still_bound(identity, principal) {
            return Err(AuthError::UnknownCertificate(identity.to_string()));
        }
        Ok(())
    }

    fn still_bound(&self, identity: &CertificateIdentity, principal: &Principal) -> bool {
        let Some(record) = self.read().get(identity).cloned() else {
            return false;
        };
        match (&principal.kind, record.kind) {
            (PrincipalKind::User { name }, BoundKind::User) => *name == record.name,
            (PrincipalKind::AssumedRole { role, .. }, BoundKind::Role) => *role == record.name,
            _ => false,
        }
    }
}

fn kind_label(kind: BoundKind) -> &'static str {
    match kind {
        BoundKind::User => "user",
        BoundKind::Role => "role",
    }
}

fn record_name(identity: &CertificateIdentity) -> String {
    format!("{BINDING_PREFIX}{}", identity.key())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identities_are_checked_and_named() {
        let uri = CertificateIdentity::new_uri("spiffe://example.org/ns/app").unwrap();
        assert_eq!(uri.to_string(), "uri:spiffe://example.org/ns/app");
        assert_eq!(
            CertificateIdentity::parse_key(&uri.key()),
            Some(uri.clone())
        );
        let subject = CertificateIdentity::new_subject("billing service").unwrap();
        assert_eq!(
            CertificateIdentity::parse_key(&subject.key()),
            Some(subject.clone())
        );
        for bad in ["", "no-scheme", "1http://x", "spiffe://a b", "x:\u{7}"] {
            assert!(
                matches!(
                    CertificateIdentity::new_uri(bad),
                    Err(CertificateError::Validation(_))
                ),
                "{bad:?}"
            );
        }
        assert!(CertificateIdentity::new_subject("").is_err());
        assert!(CertificateIdentity::new_subject(&"a".repeat(MAX_IDENTITY_CHARS + 1)).is_err());
        assert!(CertificateIdentity::new_subject("a\nb").is_err());
    }

    #[test]
    fn session_names_fit_what_a_session_name_may_hold() {
        assert_eq!(
            session_name(&uri("spiffe://example.org/app")),
            "spiffe---example.org-app"
        );
        assert_eq!(
            session_name(&CertificateIdentity::Subject("x".into())),
            "x-"
        );
        let long = session_name(&uri(&format!("urn:{}", "é".repeat(100))));
        assert_eq!(long.len(), 64);
        assert!(
            long.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"+=,.@_-".contains(&b))
        );
    }

    #[test]
    fn certificates_are_read_uris_first() {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "billing");
        params.subject_alt_names = vec![rcgen::SanType::URI(
            "spiffe://example.org/billing".try_into().unwrap(),
        )];
        params.not_before = rcgen::date_time_ymd(2026, 1, 1);
        params.not_after = rcgen::date_time_ymd(2027, 1, 1);
        let key = rcgen::KeyPair::generate().unwrap();
        let der = params.self_signed(&key).unwrap().der().to_vec();
        let read = PeerCertificate::from_der(&der).unwrap();
        assert_eq!(
            read.identities,
            vec![
                uri("spiffe://example.org/billing"),
                CertificateIdentity::Subject("billing".into())
            ]
        );
        assert_eq!(read.not_before, 1_767_225_600);
        assert_eq!(read.not_after, 1_798_761_600);
        assert!(matches!(
            PeerCertificate::from_der(b"not a certificate"),
            Err(AuthError::Malformed(_))
        ));
    }

    fn uri(text: &str) -> CertificateIdentity {
        CertificateIdentity::Uri(text.to_owned())
    }
}
