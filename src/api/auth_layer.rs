//! What happens around every Keyhaven call, before and after its handler: a request id (in
//! every log line of the call and in the `x-request-id` response header), authentication, and
//! the audit log's records.
//!
//! The signature covers the SHA-256 of the request message exactly as it arrived, so this
//! layer reads the (small, unary) body, hashes the gRPC frame's payload, verifies the
//! signature and hands the [`Caller`](crate::auth::Caller) to the handler in the request's
//! extensions, with an [`AuditSlot`] for the handler to name the keys it used. Health and
//! reflection services pass through untouched.
//!
//! What an unauthenticated caller sends has a bounded cost: a method path the daemon does not
//! serve is named `unknown` (in metrics labels and records alike), an access key id that is
//! not one's shape is not kept verbatim, repeated refusals from one source are counted into
//! one record per window by the audit log, and a source's failures past its token bucket
//! answer `RESOURCE_EXHAUSTED` / `ThrottlingException` with no record of their own.

use super::certificate_door::{CERTIFICATE_DOOR, unsigned_call_certificate};
use super::status::{reason_of, status, throttled};
use crate::audit::{AuditLog, AuditNote, Entry, Outcome, Phase};
use crate::auth::signature::{self, sha256_hex};
use crate::auth::throttle::{DEFAULT_BURST, DEFAULT_RATE, FailureThrottle, SourceKey};
use crate::auth::{Caller, CredentialStore, is_well_formed_access_key_id};
use crate::clock::{Clock, UnixSeconds};
use crate::proto::FILE_DESCRIPTOR_SET;
use bytes::Bytes;
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use prost::Message;
use std::collections::HashSet;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll};
use std::time::Instant;
use tonic::Code;
use tonic::body::Body;
use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};
use tower::{Layer, Service};
use tracing::Instrument;

const AUTHENTICATED_PREFIX: &str = "/keyhaven.";
const FRAME_HEADER: usize = 5;
pub const REQUEST_ID_HEADER: &str = "x-request-id";

/// Where a handler notes what the audit record of its call should name.
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

    pub fn add_context(&self, pairs: &std::collections::BTreeMap<String, String>) {
        if let Ok(mut note) = self.0.lock() {
            note.encryption_context.extend(pairs.clone());
        }
    }

    fn take(&self) -> AuditNote {
        self.0
            .lock()
            .map(|mut n| std::mem::take(&mut *n))
            .unwrap_or_default()
    }
}

#[derive(Clone)]
pub struct AuthLayer {
    credentials: Arc<CredentialStore>,
    audit: Arc<AuditLog>,
    clock: Arc<dyn Clock>,
    max_message: usize,
    throttle: Arc<FailureThrottle>,
}

impl AuthLayer {
    pub fn new(
        credentials: Arc<CredentialStore>,
        audit: Arc<AuditLog>,
        clock: Arc<dyn Clock>,
        max_message: usize,
    ) -> Self {
        Self {
            credentials,
            audit,
            clock,
            max_message,
            throttle: Arc::new(FailureThrottle::new(DEFAULT_RATE, DEFAULT_BURST)),
        }
    }

    /// Rate limits for requests that fail authentication, per source.
    pub fn with_failure_throttle(mut self, throttle: FailureThrottle) -> Self {
        self.throttle = Arc::new(throttle);
        self
    }

    /// The clock's seconds, and the system clock's nanoseconds within them.
    fn stamp(&self) -> (UnixSeconds, u32) {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        (self.clock.now(), nanos)
    }

    fn write(&self, entry: Entry) -> Result<(), tonic::Status> {
        let (now, nanos) = self.stamp();
        self.audit
            .append(entry, now, nanos)
            .map_err(audit_unavailable)
    }

    fn write_refusal(
        &self,
        entry: Entry,
        source: SourceKey,
        was_throttled: bool,
    ) -> Result<(), tonic::Status> {
        let (now, nanos) = self.stamp();
        self.audit
            .refused_unauthenticated(entry, &source.to_string(), was_throttled, now, nanos)
            .map_err(audit_unavailable)
    }
}

fn audit_unavailable(error: crate::audit::AuditError) -> tonic::Status {
    tracing::error!(%error, "audit log write failed: refusing the call");
    status(
        Code::Unavailable,
        "AuditLogUnavailableException",
        "the call cannot be recorded in the audit log; try again later",
    )
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

impl<S> Layer<S> for AuthLayer {
    type Service = Authenticated<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Authenticated {
            inner,
            layer: self.clone(),
        }
    }
}

#[derive(Clone)]
pub struct Authenticated<S> {
    inner: S,
    layer: AuthLayer,
}

/// The payload of a single uncompressed gRPC frame.
fn frame_payload(body: &[u8]) -> Result<&[u8], &'static str> {
    if body.len() < FRAME_HEADER {
        return Err("request body is not a gRPC message");
    }
    if body[0] != 0 {
        return Err("compressed requests are not accepted");
    }
    let len = u32::from_be_bytes([body[1], body[2], body[3], body[4]]) as usize;
    if body.len() - FRAME_HEADER != len {
        return Err("request body must be exactly one gRPC message");
    }
    Ok(&body[FRAME_HEADER..])
}

/// Calls whose request carries plaintext or encryption-context values (the requests
/// `build.rs` gives a redacted `Debug`).
fn carries_secrets(operation: &str) -> bool {
    matches!(
        operation,
        "kms:Encrypt"
            | "kms:Decrypt"
            | "kms:ReEncrypt"
            | "kms:GenerateDataKey"
            | "kms:GenerateDataKeyWithoutPlaintext"
            | "kms:GenerateMac"
            | "kms:VerifyMac"
            | "kms:Sign"
            | "kms:Verify"
    )
}

/// The received request as a buffer wiped when the handler's decoding has dropped it; the
/// received buffer itself is wiped now when it is ours alone (the transport's own buffers
/// and the decoder's are freed unwiped: core dumps are off for that).
fn wiped_copy(received: Bytes) -> Bytes {
    let copy = crate::secret::SecretBytes::new(received.to_vec()).into_bytes();
    if let Ok(mut unique) = received.try_into_mut() {
        zeroize::Zeroize::zeroize(&mut unique[..]);
    }
    copy
}

/// Calls that change no state: one `call` record after the handler is enough, since their
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
                    | "Decrypt"
                    | "ReEncrypt"
                    | "GenerateDataKey"
                    | "GenerateDataKeyWithoutPlaintext"
                    | "GenerateRandom"
                    | "GenerateMac"
                    | "VerifyMac"
                    | "Sign"
                    | "Verify"
            ) || reads(&["Describe", "List", "Get"])
        }
        "iam" => reads(&["List", "Get", "Simulate"]),
        "sts" => method == "GetCallerIdentity",
        _ => false,
    }
}

/// The gRPC methods the daemon serves behind this layer (`/keyhaven.v1.Service/Method`), read
/// from the wire contract's descriptors once.
fn served_methods() -> &'static HashSet<String> {
    static SERVED: OnceLock<HashSet<String>> = OnceLock::new();
    SERVED.get_or_init(|| {
        let Ok(set) = prost_types::FileDescriptorSet::decode(FILE_DESCRIPTOR_SET) else {
            tracing::error!("the descriptor set does not decode: every method is unknown");
            return HashSet::new();
        };
        set.file
            .iter()
            .flat_map(|file| {
                file.service.iter().flat_map(move |service| {
                    service.method.iter().map(move |method| {
                        format!("/{}.{}/{}", file.package(), service.name(), method.name())
                    })
                })
            })
            .collect()
    })
}

/// What a path the daemon does not serve is called, in metrics labels and audit records: the
/// path is the caller's choice, and a label per value would grow the registry without bound.
pub const UNKNOWN_OPERATION: &str = "unknown";

/// `kms:Encrypt`, `iam:CreateUser`, `sts:AssumeRole` for a gRPC path; [`UNKNOWN_OPERATION`]
/// for a path the daemon does not serve, so that the names form a closed set.
pub fn operation_name(path: &str) -> String {
    if !served_methods().contains(path) {
        return UNKNOWN_OPERATION.to_owned();
    }
    let mut parts = path.trim_start_matches('/').splitn(2, '/');
    let service = parts.next().unwrap_or_default();
    let method = parts.next().unwrap_or_default();
    let prefix = match service {
        "keyhaven.v1.KeyManagementService" => "kms",
        "keyhaven.v1.IdentityService" => match method {
            "AssumeRole" | "GetCallerIdentity" => "sts",
            _ => "iam",
        },
        "keyhaven.v1.AuditService" => "audit",
        _ => return UNKNOWN_OPERATION.to_owned(),
    };
    format!("{prefix}:{method}")
}

fn peer(extensions: &http::Extensions) -> Option<SocketAddr> {
    extensions
        .get::<TcpConnectInfo>()
        .and_then(TcpConnectInfo::remote_addr)
        .or_else(|| {
            extensions
                .get::<TlsConnectInfo<TcpConnectInfo>>()
                .and_then(|t| t.get_ref().remote_addr())
        })
}

/// The outcome of a response: a trailers-only error carries its status in the headers.
fn outcome_of(headers: &http::HeaderMap) -> Outcome {
    match tonic::Status::from_header_map(headers) {
        Some(s) if s.code() != Code::Ok => Outcome {
            code: format!("{:?}", s.code()),
            reason: reason_of(&s),
        },
        _ => Outcome {
            code: "Ok".into(),
            reason: None,
        },
    }
}

fn refusal(s: &tonic::Status) -> Outcome {
    Outcome {
        code: format!("{:?}", s.code()),
        reason: reason_of(s),
    }
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S> Service<http::Request<Body>> for Authenticated<S>
where
    S: Service<http::Request<Body>, Response = http::Response<Body>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = S::Error;
    type Future = BoxFuture<Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        let ready = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, ready);
        let layer = self.layer.clone();
        if !request.uri().path().starts_with(AUTHENTICATED_PREFIX) {
            return Box::pin(inner.call(request));
        }
        // A random (version 4) id from the thread's CSPRNG: no system call per request.
        let request_id = uuid::Builder::from_random_bytes(rand::random())
            .into_uuid()
            .hyphenated()
            .to_string();
        let operation = operation_name(request.uri().path());
        let span = tracing::info_span!("call", request_id = %request_id, operation = %operation);
        let future = async move {
            let started = Instant::now();
            let peer = peer(request.extensions());
            let source = peer.map(|a| a.to_string());
            let certificate = unsigned_call_certificate(request.headers(), request.extensions());
            let presented = certificate
                .as_ref()
                .and_then(|c| c.as_ref().ok())
                .and_then(|c| c.presented())
                .map(ToString::to_string);
            let entry = |phase, principal: Option<String>, access_key_id: Option<String>| Entry {
                phase,
                request_id: request_id.clone(),
                operation: operation.clone(),
                principal,
                access_key_id,
                door: certificate.is_some().then_some(CERTIFICATE_DOOR),
                certificate: presented.clone(),
                source: source.clone(),
                note: AuditNote::default(),
                outcome: None,
                duration_us: None,
            };
            let with_id = |mut response: http::Response<Body>| {
                if let Ok(mut value) = http::HeaderValue::from_str(&request_id) {
                    // New in every answer: HPACK indexing it would only evict what repeats.
                    value.set_sensitive(true);
                    response.headers_mut().insert(REQUEST_ID_HEADER, value);
                }
                response
            };
            let count = |outcome: &Outcome| {
                if let Some(m) = crate::metrics::metrics() {
                    m.requests
                        .with_label_values(&[operation.as_str(), outcome.code.as_str()])
                        .inc();
                    m.request_seconds
                        .with_label_values(&[operation.as_str()])
                        .observe(started.elapsed().as_secs_f64());
                }
            };
            // Refused before any handler: the refusal (or the audit failure), recorded or
            // counted; past the source's rate limit, throttled instead.
            let refuse = |s: tonic::Status, access_key_id: Option<String>| {
                let from = SourceKey::of(peer.map(|a| a.ip()));
                let throttled_now = !layer.throttle.allow_failure(from, Instant::now());
                let s = if throttled_now {
                    if let Some(m) = crate::metrics::metrics() {
                        m.unauthenticated_throttled.inc();
                    }
                    throttled()
                } else {
                    s
                };
                let mut record = entry(Phase::Unauthenticated, None, access_key_id);
                let outcome = refusal(&s);
                count(&outcome);
                record.outcome = Some(outcome);
                record.duration_us = Some(started.elapsed().as_micros() as u64);
                match layer.write_refusal(record, from, throttled_now) {
                    Ok(()) => with_id(s.into_http()),
                    Err(unavailable) => with_id(unavailable.into_http()),
                }
            };
            let (mut parts, body) = request.into_parts();
            // Only refusals need it: parsed again then, not on every call.
            let attempted_key = |headers: &http::HeaderMap| {
                headers
                    .get(signature::AUTHORIZATION)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| signature::parse_authorization(v).ok())
                    .map(|p| loggable_access_key_id(p.access_key_id))
            };
            let limit = layer.max_message + FRAME_HEADER;
            let bytes: Bytes = match Limited::new(body, limit).collect().await {
                Ok(collected) => collected.to_bytes(),
                Err(error) if error.downcast_ref::<LengthLimitError>().is_some() => {
                    return Ok(refuse(
                        status(
                            Code::ResourceExhausted,
                            "LimitExceededException",
                            format!("request message larger than {} bytes", layer.max_message),
                        ),
                        attempted_key(&parts.headers),
                    ));
                }
                Err(_) => {
                    return Ok(refuse(
                        status(
                            Code::InvalidArgument,
                            "ValidationException",
                            "request body could not be read",
                        ),
                        attempted_key(&parts.headers),
                    ));
                }
            };
            let bytes = if carries_secrets(&operation) {
                wiped_copy(bytes)
            } else {
                bytes
            };
            let payload = match frame_payload(&bytes) {
                Ok(payload) => payload,
                Err(problem) => {
                    return Ok(refuse(
                        status(Code::InvalidArgument, "ValidationException", problem),
                        attempted_key(&parts.headers),
                    ));
                }
            };
            // HTTP/2 carries it as `:authority`, HTTP/1.1 as `Host`.
            let authority = parts
                .uri
                .authority()
                .map(http::uri::Authority::as_str)
                .or_else(|| {
                    parts
                        .headers
                        .get(http::header::HOST)
                        .and_then(|v| v.to_str().ok())
                });
            let authenticated = match &certificate {
                Some(Ok(presented)) => layer
                    .credentials
                    .authenticate_certificate(presented)
                    .map(|caller| (caller, None)),
                Some(Err(unreadable)) => Err(unreadable.clone()),
                None => layer
                    .credentials
                    .authenticate(
                        parts.uri.path(),
                        authority,
                        &parts.headers,
                        &sha256_hex(payload),
                    )
                    .map(|(caller, used)| (caller, Some(used))),
            };
            let (caller, used): (Caller, _) = match authenticated {
                Ok(caller) => caller,
                Err(error) => {
                    tracing::info!(reason = error.reason(), %error, "request refused: not authenticated");
                    return Ok(refuse(
                        tonic::Status::from(error),
                        attempted_key(&parts.headers),
                    ));
                }
            };
            let principal = Some(caller.principal.arn.clone());
            let access_key_id = caller
                .certificate
                .is_none()
                .then(|| caller.access_key_id.clone());
            let authenticated_as = caller.certificate.as_ref().map(|c| c.identity.to_string());
            let single = changes_nothing(&operation);
            // A read is remembered too when it is dated ahead of the daemon's clock: a restart
            // before its time would otherwise accept it again. Certificate calls carry no
            // signature to replay.
            if let Some(used) = &used
                && (!single || layer.credentials.outlives_a_restart(used))
                && let Err(error) = layer.credentials.remember(used)
            {
                tracing::error!(%error, "cannot store the request's signature: refusing the call");
                return Ok(with_id(
                    status(
                        Code::Unavailable,
                        "KMSInternalException",
                        "the request could not be recorded against replay; try again later",
                    )
                    .into_http(),
                ));
            }
            let mut before = entry(Phase::Request, principal.clone(), access_key_id.clone());
            before.certificate = authenticated_as.clone();
            if !single && let Err(unavailable) = layer.write(before) {
                return Ok(with_id(unavailable.into_http()));
            }
            let slot = AuditSlot::default();
            parts.extensions.insert(caller);
            parts.extensions.insert(slot.clone());
            let response = inner
                .call(http::Request::from_parts(
                    parts,
                    Body::new(Full::new(bytes)),
                ))
                .await?;
            let phase = if single { Phase::Call } else { Phase::Response };
            let mut record = entry(phase, principal, access_key_id);
            record.certificate = authenticated_as;
            let outcome = outcome_of(response.headers());
            tracing::debug!(
                code = %outcome.code,
                reason = outcome.reason.as_deref().unwrap_or(""),
                duration_us = started.elapsed().as_micros() as u64,
                "call finished"
            );
            count(&outcome);
            record.outcome = Some(outcome);
            record.note = slot.take();
            record.duration_us = Some(started.elapsed().as_micros() as u64);
            match layer.write(record) {
                Ok(()) => Ok(with_id(response)),
                Err(unavailable) => Ok(with_id(unavailable.into_http())),
            }
        };
        Box::pin(future.instrument(span))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_are_checked() {
        assert_eq!(frame_payload(&[0, 0, 0, 0, 2, 7, 8]).unwrap(), &[7, 8]);
        assert_eq!(frame_payload(&[0, 0, 0, 0, 0]).unwrap(), &[] as &[u8]);
        assert!(frame_payload(&[0, 0, 0]).is_err());
        assert!(frame_payload(&[1, 0, 0, 0, 1, 7]).is_err());
        assert!(frame_payload(&[0, 0, 0, 0, 3, 7]).is_err());
        assert!(frame_payload(&[0, 0, 0, 0, 1, 7, 0, 0, 0, 0, 0]).is_err());
    }

    #[test]
    fn requests_with_plaintext_are_copied_into_wiped_buffers() {
        for operation in ["kms:Encrypt", "kms:Decrypt", "kms:GenerateDataKey"] {
            assert!(carries_secrets(operation), "{operation}");
        }
        assert!(!carries_secrets("kms:DescribeKey"));
        let received = Bytes::from(b"\0\0\0\0\x05plain".to_vec());
        let at = received.as_ptr();
        let copy = wiped_copy(received);
        assert_eq!(&copy[..], b"\0\0\0\0\x05plain");
        assert_ne!(copy.as_ptr(), at, "a copy, not the received buffer");
    }

    #[test]
    fn reads_have_one_record_and_changes_two() {
        for read in [
            "kms:Encrypt",
            "kms:GenerateDataKeyWithoutPlaintext",
            "kms:DescribeKey",
            "kms:ListAliases",
            "kms:GetKeyPolicy",
            "kms:ListOrphanedKeyMaterial",
            "iam:ListUsers",
            "iam:GetEntityPolicy",
            "iam:SimulatePrincipalPolicy",
            "sts:GetCallerIdentity",
        ] {
            assert!(changes_nothing(read), "{read}");
        }
        for change in [
            "kms:CreateKey",
            "kms:ScheduleKeyDeletion",
            "kms:PutKeyPolicy",
            "kms:DestroyOrphanedKeyMaterial",
            "iam:CreateAccessKey",
            "iam:PutEntityPolicy",
            "sts:AssumeRole",
            "audit:TailAuditLog",
            "unknown:GetThing",
            "GetThing",
        ] {
            assert!(!changes_nothing(change), "{change}");
        }
    }

    #[test]
    fn operations_are_named_like_policy_actions() {
        assert_eq!(
            operation_name("/keyhaven.v1.KeyManagementService/Encrypt"),
            "kms:Encrypt"
        );
        assert_eq!(
            operation_name("/keyhaven.v1.IdentityService/CreateUser"),
            "iam:CreateUser"
        );
        assert_eq!(
            operation_name("/keyhaven.v1.IdentityService/AssumeRole"),
            "sts:AssumeRole"
        );
        assert_eq!(
            operation_name("/keyhaven.v1.AuditService/TailAuditLog"),
            "audit:TailAuditLog"
        );
        for unserved in [
            "/other.Service/X",
            "/keyhaven.v1.KeyManagementService/NoSuchMethod",
            "/keyhaven.v1.KeyManagementService/Encrypt/more",
            "/keyhaven.v1.KeyManagementService/Encrypt\u{1b}[2J",
            "/keyhaven.v1.Nothing/Encrypt",
            "/",
            "",
        ] {
            assert_eq!(operation_name(unserved), UNKNOWN_OPERATION, "{unserved:?}");
        }
    }

    #[test]
    fn every_served_method_has_a_known_name() {
        let served = served_methods();
        assert!(served.len() > 30, "{served:?}");
        for path in served {
            let name = operation_name(path);
            assert_ne!(name, UNKNOWN_OPERATION, "{path}");
            assert!(!name.starts_with("unknown"), "{path}");
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
