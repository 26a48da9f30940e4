//! The one pipeline behind every front door: a call is named (its operation and door), its
//! signature verified by the door's rules, its signature remembered against replay where
//! those rules refuse replays, its records written to the audit log, and its outcome counted.
//! The doors (gRPC in [`super::auth_layer`], the AWS HTTP API in [`super::aws`], the web
//! console in [`super::console`]) only read their wire format into a [`SignedRequest`] (or,
//! for the console, the session a cookie names) and write the answer back; nothing here knows
//! any wire.
//!
//! Order, for every door: a refusal before authentication is recorded (or, past the source's
//! rate limit, throttled and counted only); a call that may change state gets its `request`
//! record before it runs and its `response` record after; a call that changes nothing gets
//! one `call` record after it runs, before its answer is sent. An answer whose record cannot
//! be written is withheld and replaced by `AuditLogUnavailableException`.

use super::accounts::OPENING_WAIT;
use super::status::ApiError;
use crate::audit::{AuditLog, AuditNote, Entry, Outcome, Phase};
use crate::auth::certificate::PeerCertificate;
use crate::auth::signature::{self, SigningRules};
use crate::auth::throttle::{DEFAULT_BURST, DEFAULT_RATE, FailureThrottle, SourceKey};
use crate::auth::{
    AuthError, Caller, CredentialDirectory, CredentialStore, SignatureDoor, SignedRequest,
    is_well_formed_access_key_id,
};
use crate::clock::{Clock, UnixSeconds};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;
use tonic::Code;

/// Which front door a call came through; named in its audit records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Door {
    /// The gRPC API with Keyhaven's signatures.
    Grpc,
    /// The AWS wire protocols (KMS JSON 1.1) with standard SigV4.
    Aws,
    /// The gRPC API without a signature, authenticated by a bound client certificate.
    Certificate,
    /// The web console: a signed-in user's session, held by the daemon behind a cookie.
    Console,
}

impl Door {
    pub fn as_str(self) -> &'static str {
        match self {
            Door::Grpc => "grpc",
            Door::Aws => "aws",
            Door::Certificate => super::certificate_door::CERTIFICATE_DOOR,
            Door::Console => "console",
        }
    }

    fn signatures(self) -> (SignatureDoor, &'static SigningRules) {
        match self {
            Door::Grpc => (SignatureDoor::Grpc, &signature::GRPC_RULES),
            Door::Aws => (SignatureDoor::AwsHttp, &signature::AWS_HTTP_RULES),
            // Carry no signature; a header that names a key is read by the gRPC rules.
            Door::Certificate | Door::Console => (SignatureDoor::Grpc, &signature::GRPC_RULES),
        }
    }
}

/// Where an operation notes what the audit record of its call should name.
#[derive(Debug, Clone, Default)]
pub struct AuditSlot(Arc<Mutex<AuditNote>>);

impl AuditSlot {
    pub fn add_key(&self, key_arn: String) {
        if let Ok(mut note) = self.0.lock()
            && !note.keys.contains(&key_arn)
        {
            note.keys.push(key_arn);
        }
    }

    /// Names a grant that allowed the call (or that the call made or ended).
    pub fn add_grant(&self, grant_id: String) {
        if let Ok(mut note) = self.0.lock()
            && !note.grants.contains(&grant_id)
        {
            note.grants.push(grant_id);
        }
    }

    pub fn add_context(&self, pairs: &std::collections::BTreeMap<String, String>) {
        if pairs.is_empty() {
            return;
        }
        if let Ok(mut note) = self.0.lock() {
            if note.encryption_context.is_empty() {
                note.encryption_context = pairs.clone();
            } else {
                note.encryption_context
                    .extend(pairs.iter().map(|(k, v)| (k.clone(), v.clone())));
            }
        }
    }

    /// What the slot has gathered so far.
    pub fn gathered(&self) -> AuditNote {
        self.0.lock().map(|n| n.clone()).unwrap_or_default()
    }

    /// Notes again the keys, grants and encryption context another slot gathered (a batch
    /// item judged as an earlier one was).
    pub fn note_again(&self, other: &AuditNote) {
        for key in &other.keys {
            self.add_key(key.clone());
        }
        for grant in &other.grants {
            self.add_grant(grant.clone());
        }
        self.add_context(&other.encryption_context);
    }

    /// Notes one item of a batch: what the item's own slot gathered (its keys and encryption
    /// context) and its outcome. Its keys, and the grants that allowed it, are also the
    /// call's.
    pub fn add_item(&self, item: &AuditSlot, outcome: Outcome) {
        let note = item.take();
        for key in &note.keys {
            self.add_key(key.clone());
        }
        for grant in note.grants {
            self.add_grant(grant);
        }
        if let Ok(mut call) = self.0.lock() {
            call.items.push(crate::audit::ItemNote {
                keys: note.keys,
                encryption_context: note.encryption_context,
                outcome,
            });
        }
    }

    /// Names who an unsigned call turned out to be (see [`AuditNote::principal`]).
    pub fn set_principal(&self, principal: String) {
        if let Ok(mut note) = self.0.lock() {
            note.principal = Some(principal);
        }
    }

    /// Names the approval request the call asked for, decided or executed.
    pub fn set_approval(&self, approval: crate::audit::ApprovalNote) {
        if let Ok(mut note) = self.0.lock() {
            note.approval = Some(approval);
        }
    }

    fn take(&self) -> AuditNote {
        self.0
            .lock()
            .map(|mut n| std::mem::take(&mut *n))
            .unwrap_or_default()
    }
}

/// Calls that change no state: one `call` record after the operation is enough, since their
/// answer is withheld if it cannot be written. Everything else is recorded before it runs.
pub fn changes_nothing(operation: &str) -> bool {
    let Some((service, method)) = operation.split_once(':') else {
        return false;
    };
    let reads = |prefixes: &[&str]| prefixes.iter().any(|p| method.starts_with(p));
    match service {
        "kms" => {
            matches!(
                method,
                "Encrypt"
                    | "EncryptBatch"
                    | "DecryptBatch"
                    | "GenerateDataKeyBatch"
                    | "Decrypt"
                    | "ReEncrypt"
                    | "GenerateDataKey"
                    | "GenerateDataKeyWithoutPlaintext"
                    | "GenerateRandom"
                    | "GenerateMac"
                    | "VerifyMac"
                    | "Sign"
                    | "Verify"
                    | "DeriveSharedSecret"
                    | "GenerateDataKeyPair"
                    | "GenerateDataKeyPairWithoutPlaintext"
            ) || reads(&["Describe", "List", "Get"])
        }
        "iam" => reads(&["List", "Get", "Simulate"]),
        "sts" => method == "GetCallerIdentity",
        "keyhaven" | "organizations" => reads(&["List", "Get"]),
        _ => false,
    }
}

/// The access key id a refused request named, as the audit log keeps it: verbatim when it
/// has an access key id's shape, else marked and cut to as many characters as one has.
fn loggable_access_key_id(id: &str) -> String {
    if is_well_formed_access_key_id(id) {
        return id.to_owned();
    }
    let shown: String = id
        .chars()
        .take(20)
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '?' })
        .collect();
    format!("malformed:{shown}")
}

/// Authentication, replay, audit and metrics for every door.
#[derive(Clone)]
pub struct Gateway {
    credentials: Arc<CredentialDirectory>,
    audit: Arc<AuditLog>,
    clock: Arc<dyn Clock>,
    throttle: Arc<FailureThrottle>,
}

impl Gateway {
    pub fn new(
        credentials: Arc<CredentialStore>,
        audit: Arc<AuditLog>,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self::for_accounts(CredentialDirectory::new(credentials), audit, clock)
    }

    /// The gateway of every account `credentials` holds (see [`CredentialDirectory`]).
    pub fn for_accounts(
        credentials: Arc<CredentialDirectory>,
        audit: Arc<AuditLog>,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self {
            credentials,
            audit,
            clock,
            throttle: Arc::new(FailureThrottle::new(DEFAULT_RATE, DEFAULT_BURST)),
        }
    }

    /// Rate limits for requests that fail authentication, per source (shared by the doors).
    pub fn with_failure_throttle(mut self, throttle: FailureThrottle) -> Self {
        self.throttle = Arc::new(throttle);
        self
    }

    /// A call of `operation` (`kms:Encrypt`, or `unknown`) arriving through `door` from
    /// `peer`, with a new request id.
    pub fn begin(&self, door: Door, operation: String, peer: Option<SocketAddr>) -> CallInFlight {
        let started = Instant::now();
        // A random (version 4) id from the thread's CSPRNG: no system call per request.
        let request_id = uuid::Builder::from_random_bytes(rand::random())
            .into_uuid()
            .hyphenated()
            .to_string();
        CallInFlight {
            gateway: self.clone(),
            single: changes_nothing(&operation),
            request_id,
            operation,
            door,
            peer,
            started,
            asked: started,
            principal: None,
            access_key_id: None,
            certificate: None,
            unsigned: false,
            remembered: None,
        }
    }

    /// The clock's seconds, and the system clock's nanoseconds within them.
    fn stamp(&self) -> (UnixSeconds, u32) {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        (self.clock.now(), nanos)
    }

    /// Refuses every call while the daemon's view of a shared store may be out of date.
    fn require_up_to_date(&self) -> Result<(), ApiError> {
        match self.credentials.management().store().out_of_date() {
            Some(why) => Err(ApiError::out_of_date(&why)),
            None => Ok(()),
        }
    }

    fn write(&self, entry: Entry) -> Result<(), ApiError> {
        let (now, nanos) = self.stamp();
        self.audit
            .append(entry, now, nanos)
            .map_err(audit_unavailable)
    }
}

fn audit_unavailable(error: crate::audit::AuditError) -> ApiError {
    tracing::error!(%error, "audit log write failed: refusing the call");
    ApiError::audit_unavailable()
}

/// One call on its way through the gateway.
pub struct CallInFlight {
    gateway: Gateway,
    pub request_id: String,
    pub operation: String,
    door: Door,
    peer: Option<SocketAddr>,
    started: Instant,
    /// When the call was whole (its request read): see [`CallInFlight::asked`].
    asked: Instant,
    principal: Option<String>,
    access_key_id: Option<String>,
    /// The client-certificate identity a certificate call presented, then authenticated by.
    certificate: Option<String>,
    single: bool,
    /// Admitted without a signature: a failure counts against its source.
    unsigned: bool,
    /// The store the call's signature was staged in against its replay: settled when the
    /// call ends, if the call's own commit did not carry it.
    remembered: Option<Arc<crate::store::Store>>,
}

impl Drop for CallInFlight {
    /// However the call ended (answered, refused, or dropped with its connection), its
    /// signature is in the store by now.
    fn drop(&mut self) {
        if let Some(store) = &self.remembered
            && let Err(error) = store.settle()
        {
            tracing::error!(%error, "cannot store a request's signature against its replay");
        }
    }
}

impl CallInFlight {
    pub fn peer(&self) -> Option<SocketAddr> {
        self.peer
    }

    /// When the call came, whole: its [`CallContext::asked`](crate::api::authorize::CallContext),
    /// from which its catch-ups with a shared store share one read. The call's start, or
    /// when its request had been read, for a door that reads it after the call began
    /// ([`CallInFlight::request_read`]).
    pub fn asked(&self) -> Instant {
        self.asked
    }

    /// The call's request has been read (a door that began the call before reading it).
    pub fn request_read(&mut self) {
        self.asked = Instant::now();
    }

    fn entry(&self, phase: Phase) -> Entry {
        Entry {
            phase,
            request_id: self.request_id.clone(),
            operation: self.operation.clone(),
            door: Some(self.door.as_str()),
            principal: self.principal.clone(),
            access_key_id: self.access_key_id.clone(),
            certificate: self.certificate.clone(),
            source: self.peer.map(|a| a.to_string()),
            note: AuditNote::default(),
            outcome: None,
            duration_us: None,
        }
    }

    fn count(&self, outcome: &Outcome) {
        if let Some(m) = crate::metrics::metrics() {
            m.requests
                .with_label_values(&[self.operation.as_str(), outcome.code.as_str()])
                .inc();
            m.request_seconds
                .with_label_values(&[self.operation.as_str()])
                .observe(self.started.elapsed().as_secs_f64());
        }
    }

    /// The access key id the request's `authorization` header names, as it may be logged.
    fn attempted_key(&self, headers: &http::HeaderMap) -> Option<String> {
        let (_, rules) = self.door.signatures();
        headers
            .get(signature::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| signature::parse_authorization_with(v, rules).ok())
            .map(|p| loggable_access_key_id(p.access_key_id))
    }

    /// Refuses the call before any operation: the refusal recorded (or, past the source's
    /// rate limit, throttled instead), counted, and returned as the answer to send.
    pub fn refuse(&self, error: ApiError, headers: &http::HeaderMap) -> ApiError {
        let from = SourceKey::of(self.peer.map(|a| a.ip()));
        let throttled_now = !self.gateway.throttle.allow_failure(from, Instant::now());
        let error = if throttled_now {
            if let Some(m) = crate::metrics::metrics() {
                m.unauthenticated_throttled.inc();
            }
            ApiError::throttled()
        } else {
            error
        };
        let mut record = self.entry(Phase::Unauthenticated);
        record.access_key_id = self
            .attempted_key(headers)
            .or_else(|| self.access_key_id.clone());
        let outcome = error.outcome();
        self.count(&outcome);
        record.outcome = Some(outcome);
        record.duration_us = Some(self.started.elapsed().as_micros() as u64);
        let (now, nanos) = self.gateway.stamp();
        match self.gateway.audit.refused_unauthenticated(
            record,
            &from.to_string(),
            throttled_now,
            now,
            nanos,
        ) {
            Ok(()) => error,
            Err(failure) => audit_unavailable(failure),
        }
    }

    /// How this call's door signs (for its [`SignedRequest`]).
    pub fn signature_door(&self) -> SignatureDoor {
        self.door.signatures().0
    }

    /// Verifies the request's signature by its door's rules; on the gRPC door remembers it
    /// against replay; writes the `request` record of a call that may change state. A refusal
    /// is recorded as [`CallInFlight::refuse`] does and returned as the answer to send.
    ///
    /// On a store other daemons write, an access key this daemon has not heard of (a new
    /// user's, a session another daemon has just issued) is looked for again once its view
    /// has caught up with the store, before the call is refused.
    pub async fn authenticate(
        &mut self,
        request: &SignedRequest<'_>,
    ) -> Result<(Caller, AuditSlot), ApiError> {
        self.gateway.require_up_to_date()?;
        let (door, _) = self.door.signatures();
        let request = SignedRequest { door, ..*request };
        let headers = request.headers;
        let authorization = headers
            .get(signature::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        let mut credentials = self.gateway.credentials.for_authorization(authorization);
        let mut accepted = credentials.authenticate_request(&request);
        if let Err(AuthError::UnknownAccessKey(id)) = &accepted
            && is_well_formed_access_key_id(id)
            && self.may_catch_up()
            && credentials.store().catch_up_after_a_miss(self.asked).await
        {
            credentials = self.gateway.credentials.for_authorization(authorization);
            accepted = credentials.authenticate_request(&request);
            // The credentials of an account another daemon has just made come once it is
            // opened here.
            if matches!(accepted, Err(AuthError::UnknownAccessKey(_)))
                && self.gateway.credentials.openings_done(OPENING_WAIT).await
            {
                credentials = self.gateway.credentials.for_authorization(authorization);
                accepted = credentials.authenticate_request(&request);
            }
        }
        let (caller, used) = match accepted {
            Ok(accepted) => accepted,
            Err(error) => {
                tracing::info!(reason = error.reason(), %error, "request refused: not authenticated");
                return Err(self.refuse(error.into(), headers));
            }
        };
        self.principal = Some(caller.principal.arn.clone());
        self.access_key_id = Some(caller.access_key_id.clone());
        // A read is remembered too when it is dated ahead of the daemon's clock: a restart
        // before its time would otherwise accept it again. The AWS door keeps no record of
        // signatures: SigV4 has no nonce, and AWS answers an identical request again.
        if door == SignatureDoor::Grpc && (!self.single || credentials.outlives_a_restart(&used)) {
            match credentials.remember(&used) {
                Ok(true) => self.remembered = Some(credentials.store().clone()),
                Ok(false) => {
                    tracing::info!("request refused: replayed (on another daemon of the cluster)");
                    return Err(self.refuse(crate::auth::AuthError::Replayed.into(), headers));
                }
                Err(error) => {
                    tracing::error!(%error, "cannot store the request's signature: refusing the call");
                    return Err(ApiError::new(
                        Code::Unavailable,
                        "KMSInternalException",
                        "the request could not be recorded against replay; try again later",
                    ));
                }
            }
        }
        if !self.single {
            self.gateway.write(self.entry(Phase::Request))?;
        }
        Ok((caller, AuditSlot::default()))
    }

    /// Whether a credential this daemon does not know is worth a catch-up with a shared
    /// store: only for a source not past its failure rate limit (a flood of made-up
    /// credentials costs no reads of the store).
    fn may_catch_up(&self) -> bool {
        !self
            .gateway
            .throttle
            .exhausted(SourceKey::of(self.peer.map(|a| a.ip())), Instant::now())
    }

    /// Admits, unsigned, a call whose operation checks the credential it carries itself (STS
    /// `AssumeRoleWithWebIdentity`: the web identity token is the credential). Its `request`
    /// record names no principal; its `response` record names the one the operation found.
    ///
    /// A source past its failure rate limit (failed unsigned calls count as failed
    /// authentications) is refused before anything runs, as [`CallInFlight::refuse`] does.
    pub fn admit_unsigned(&mut self, headers: &http::HeaderMap) -> Result<AuditSlot, ApiError> {
        self.gateway.require_up_to_date()?;
        let from = SourceKey::of(self.peer.map(|a| a.ip()));
        if self.gateway.throttle.exhausted(from, Instant::now()) {
            return Err(self.refuse(ApiError::throttled(), headers));
        }
        self.unsigned = true;
        if !self.single {
            self.gateway.write(self.entry(Phase::Request))?;
        }
        Ok(AuditSlot::default())
    }

    /// Authenticates an unsigned gRPC call by the client certificate its connection presented
    /// (the certificate door): as [`authenticate`](Self::authenticate), with no signature to
    /// remember against replay.
    ///
    /// On a store other daemons write, a certificate bound to no principal this daemon has
    /// heard of is looked for again once its view has caught up with the store.
    pub async fn authenticate_certificate(
        &mut self,
        presented: Result<PeerCertificate, AuthError>,
        headers: &http::HeaderMap,
    ) -> Result<(Caller, AuditSlot), ApiError> {
        self.gateway.require_up_to_date()?;
        self.door = Door::Certificate;
        self.certificate = presented
            .as_ref()
            .ok()
            .and_then(|c| c.presented())
            .map(ToString::to_string);
        let credentials = &self.gateway.credentials;
        let authenticate = |certificate: &PeerCertificate| {
            credentials
                .for_certificate(certificate)?
                .authenticate_certificate(certificate)
        };
        let mut authenticated = presented
            .as_ref()
            .map_err(Clone::clone)
            .and_then(authenticate);
        if let (Ok(certificate), Err(AuthError::UnknownCertificate(_))) =
            (&presented, &authenticated)
            && self.may_catch_up()
            && credentials
                .management()
                .store()
                .catch_up_after_a_miss(self.asked)
                .await
        {
            authenticated = authenticate(certificate);
            if matches!(authenticated, Err(AuthError::UnknownCertificate(_)))
                && credentials.openings_done(OPENING_WAIT).await
            {
                authenticated = authenticate(certificate);
            }
        }
        let caller = match authenticated {
            Ok(caller) => caller,
            Err(error) => {
                tracing::info!(reason = error.reason(), %error, "request refused: not authenticated");
                return Err(self.refuse(error.into(), headers));
            }
        };
        self.principal = Some(caller.principal.arn.clone());
        self.certificate = caller.certificate.as_ref().map(|c| c.identity.to_string());
        if !self.single {
            self.gateway.write(self.entry(Phase::Request))?;
        }
        Ok((caller, AuditSlot::default()))
    }

    /// Authenticates a console call by the session credentials the daemon holds for the
    /// signed-in user behind the call's cookie (see `console`): as
    /// [`authenticate`](Self::authenticate), with no signature to verify or remember.
    pub fn authenticate_session(
        &mut self,
        access_key_id: &str,
        session_token: &crate::secret::SecretString,
        headers: &http::HeaderMap,
    ) -> Result<(Caller, AuditSlot), ApiError> {
        self.gateway.require_up_to_date()?;
        self.access_key_id = Some(access_key_id.to_owned());
        let authenticated = self
            .gateway
            .credentials
            .for_access_key(access_key_id)
            .authenticate_session(access_key_id, session_token);
        let caller = match authenticated {
            Ok(caller) => caller,
            Err(error) => {
                tracing::info!(reason = error.reason(), %error, "console call refused: not authenticated");
                return Err(self.refuse(error.into(), headers));
            }
        };
        self.principal = Some(caller.principal.arn.clone());
        if !self.single {
            self.gateway.write(self.entry(Phase::Request))?;
        }
        Ok((caller, AuditSlot::default()))
    }

    /// Writes the call's last record (with what the operation noted in `slot`) and counts
    /// its outcome; the error, if the record cannot be written, replaces the answer.
    pub fn finish(&self, outcome: Outcome, slot: &AuditSlot) -> Result<(), ApiError> {
        tracing::debug!(
            code = %outcome.code,
            reason = outcome.reason.as_deref().unwrap_or(""),
            duration_us = self.started.elapsed().as_micros() as u64,
            "call finished"
        );
        self.count(&outcome);
        if self.unsigned && outcome.code != "Ok" {
            // The credential it carried was refused (or the call failed): a failure of its
            // source's, as a bad signature is.
            let from = SourceKey::of(self.peer.map(|a| a.ip()));
            let _ = self.gateway.throttle.allow_failure(from, Instant::now());
        }
        let phase = if self.single {
            Phase::Call
        } else {
            Phase::Response
        };
        let mut record = self.entry(phase);
        record.outcome = Some(outcome);
        record.note = slot.take();
        if record.principal.is_none() {
            record.principal = record.note.principal.take();
        }
        record.duration_us = Some(self.started.elapsed().as_micros() as u64);
        self.gateway.write(record)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_have_one_record_and_changes_two() {
        for read in [
            "kms:Encrypt",
            "kms:GenerateDataKeyWithoutPlaintext",
            "kms:DescribeKey",
            "kms:ListAliases",
            "kms:GetKeyPolicy",
            "kms:ListOrphanedKeyMaterial",
            "kms:ListGrants",
            "kms:ListRetirableGrants",
            "iam:ListUsers",
            "iam:GetEntityPolicy",
            "iam:SimulatePrincipalPolicy",
            "sts:GetCallerIdentity",
            "keyhaven:ListApprovalRequests",
            "keyhaven:GetApprovalRequest",
            "keyhaven:GetApprovalSettings",
        ] {
            assert!(changes_nothing(read), "{read}");
        }
        for change in [
            "kms:CreateKey",
            "kms:ScheduleKeyDeletion",
            "kms:PutKeyPolicy",
            "kms:DestroyOrphanedKeyMaterial",
            "kms:CreateGrant",
            "kms:RetireGrant",
            "kms:RevokeGrant",
            "iam:CreateAccessKey",
            "iam:PutEntityPolicy",
            "sts:AssumeRole",
            "keyhaven:ApproveRequest",
            "keyhaven:RejectRequest",
            "keyhaven:PutApprovalSettings",
            "audit:TailAuditLog",
            "unknown:GetThing",
            "GetThing",
        ] {
            assert!(!changes_nothing(change), "{change}");
        }
    }

    #[test]
    fn only_access_key_ids_of_their_shape_are_kept_verbatim() {
        assert_eq!(
            loggable_access_key_id("KHAKABCDEFGHIJ234567"),
            "KHAKABCDEFGHIJ234567"
        );
        assert_eq!(
            loggable_access_key_id(&"A".repeat(800)),
            format!("malformed:{}", "A".repeat(20))
        );
        assert_eq!(
            loggable_access_key_id("KHAK\u{1b}[31mred"),
            "malformed:KHAK??31mred"
        );
        assert_eq!(loggable_access_key_id("short"), "malformed:short");
    }
}
