//! The gRPC door: what happens around every Keyhaven gRPC call, before and after its handler.
//! The door reads the gRPC frame and hands the [`Gateway`] what it verifies and records (a
//! request id in every log line of the call and in the `x-request-id` response header,
//! authentication, the audit log's records, metrics).
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

use super::certificate_door::unsigned_call_certificate;
pub use super::gateway::AuditSlot;
use super::gateway::{Door, Gateway};
use super::operations;
use super::status::{ApiError, reason_of};
use crate::audit::{AuditLog, Outcome};
use crate::auth::signature::sha256_hex;
use crate::auth::throttle::FailureThrottle;
use crate::auth::{CredentialStore, SignedRequest};
use crate::clock::Clock;
use crate::proto::FILE_DESCRIPTOR_SET;
use bytes::Bytes;
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use prost::Message;
use std::collections::HashSet;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use tonic::Code;
use tonic::body::Body;
use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};
use tower::{Layer, Service};
use tracing::Instrument;

const AUTHENTICATED_PREFIX: &str = "/keyhaven.";
const FRAME_HEADER: usize = 5;
pub const REQUEST_ID_HEADER: &str = "x-request-id";

#[derive(Clone)]
pub struct AuthLayer {
    gateway: Gateway,
    max_message: usize,
}

impl AuthLayer {
    pub fn new(
        credentials: Arc<CredentialStore>,
        audit: Arc<AuditLog>,
        clock: Arc<dyn Clock>,
        max_message: usize,
    ) -> Self {
        Self {
            gateway: Gateway::new(credentials, audit, clock),
            max_message,
        }
    }

    /// Rate limits for requests that fail authentication, per source.
    pub fn with_failure_throttle(mut self, throttle: FailureThrottle) -> Self {
        self.gateway = self.gateway.with_failure_throttle(throttle);
        self
    }

    /// The door over `gateway` (shared with the other doors: one throttle for all).
    pub fn over(gateway: Gateway, max_message: usize) -> Self {
        Self {
            gateway,
            max_message,
        }
    }
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

/// The one operation of the AWS door admitted without a signature: its token is its
/// credential.
pub const WEB_IDENTITY_OPERATION: &str = "sts:AssumeRoleWithWebIdentity";
/// The operations admitted without a signature on the gRPC door: each carries its own
/// credential (a web identity token, a password), which the operation checks.
pub const UNSIGNED_OPERATIONS: [&str; 2] = [WEB_IDENTITY_OPERATION, "signin:SignIn"];

/// Calls whose request carries plaintext, encryption-context values or credentials (the
/// requests `build.rs` gives a redacted `Debug`).
fn carries_secrets(operation: &str) -> bool {
    matches!(
        operation,
        "kms:Encrypt"
            | "sts:AssumeRoleWithWebIdentity"
            | "signin:SignIn"
            | "iam:CreateLoginProfile"
            | "iam:UpdateLoginProfile"
            | "iam:ChangePassword"
            | "kms:EncryptBatch"
            | "kms:DecryptBatch"
            | "kms:GenerateDataKeyBatch"
            | "kms:Decrypt"
            | "kms:ReEncrypt"
            | "kms:GenerateDataKey"
            | "kms:GenerateDataKeyWithoutPlaintext"
            | "kms:GenerateMac"
            | "kms:VerifyMac"
            | "kms:Sign"
            | "kms:Verify"
            | "kms:GenerateDataKeyPair"
            | "kms:GenerateDataKeyPairWithoutPlaintext"
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
        "keyhaven.v1.KeyManagementService" => match method {
            "ListApprovalRequests"
            | "GetApprovalRequest"
            | "ApproveRequest"
            | "RejectRequest"
            | "GetApprovalSettings"
            | "PutApprovalSettings" => "keyhaven",
            _ => "kms",
        },
        "keyhaven.v1.IdentityService" => match method {
            "AssumeRole"
            | "AssumeRoleWithWebIdentity"
            | "GetCallerIdentity"
            | "GetSessionToken" => "sts",
            "SignIn" => "signin",
            "CreateAccount"
            | "ListAccounts"
            | "CreateGuardrailPolicy"
            | "GetGuardrailPolicy"
            | "DeleteGuardrailPolicy"
            | "ListGuardrailPolicies"
            | "AttachGuardrailPolicy"
            | "DetachGuardrailPolicy" => "organizations",
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
        let peer = peer(request.extensions());
        let mut call = layer
            .gateway
            .begin(Door::Grpc, operation_name(request.uri().path()), peer);
        let request_id = call.request_id.clone();
        let span =
            tracing::info_span!("call", request_id = %request_id, operation = %call.operation);
        let future = async move {
            let with_id = |mut response: http::Response<Body>| {
                if let Ok(mut value) = http::HeaderValue::from_str(&request_id) {
                    // New in every answer: HPACK indexing it would only evict what repeats.
                    value.set_sensitive(true);
                    response.headers_mut().insert(REQUEST_ID_HEADER, value);
                }
                response
            };
            let answer = |error: ApiError| with_id(tonic::Status::from(error).into_http());
            let (mut parts, body) = request.into_parts();
            let max_message = if operations::is_batch(&call.operation) {
                layer.max_message.max(super::MAX_BATCH_REQUEST_BYTES)
            } else {
                layer.max_message
            };
            let limit = max_message + FRAME_HEADER;
            let bytes: Bytes = match Limited::new(body, limit).collect().await {
                Ok(collected) => collected.to_bytes(),
                Err(error) if error.downcast_ref::<LengthLimitError>().is_some() => {
                    let refused = ApiError::new(
                        Code::ResourceExhausted,
                        "LimitExceededException",
                        format!("request message larger than {max_message} bytes"),
                    );
                    return Ok(answer(call.refuse(refused, &parts.headers)));
                }
                Err(_) => {
                    let refused = ApiError::new(
                        Code::InvalidArgument,
                        "ValidationException",
                        "request body could not be read",
                    );
                    return Ok(answer(call.refuse(refused, &parts.headers)));
                }
            };
            call.request_read();
            let bytes = if carries_secrets(&call.operation) {
                wiped_copy(bytes)
            } else {
                bytes
            };
            let payload = match frame_payload(&bytes) {
                Ok(payload) => payload,
                Err(problem) => {
                    let refused =
                        ApiError::new(Code::InvalidArgument, "ValidationException", problem);
                    return Ok(answer(call.refuse(refused, &parts.headers)));
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
            // Admitted one of three ways: a call whose operation checks its own credential,
            // unsigned; an unsigned call over mutual TLS (the certificate door); a signed call.
            let admitted = if UNSIGNED_OPERATIONS.contains(&call.operation.as_str())
                && !parts
                    .headers
                    .contains_key(crate::auth::signature::AUTHORIZATION)
            {
                call.admit_unsigned(&parts.headers).map(|slot| (None, slot))
            } else if let Some(presented) =
                unsigned_call_certificate(&parts.headers, &parts.extensions)
            {
                call.authenticate_certificate(presented, &parts.headers)
                    .await
                    .map(|(caller, slot)| (Some(caller), slot))
            } else {
                let signed = SignedRequest {
                    door: call.signature_door(),
                    service: crate::auth::signature::SERVICE,
                    method: "POST",
                    path: parts.uri.path(),
                    query: "",
                    authority,
                    headers: &parts.headers,
                    body_sha256_hex: &sha256_hex(payload),
                };
                call.authenticate(&signed)
                    .await
                    .map(|(caller, slot)| (Some(caller), slot))
            };
            let (caller, slot) = match admitted {
                Ok(admitted) => admitted,
                Err(refused) => return Ok(answer(refused)),
            };
            if let Some(caller) = caller {
                parts.extensions.insert(caller);
            }
            parts.extensions.insert(slot.clone());
            parts.extensions.insert(super::Asked(call.asked()));
            let response = inner
                .call(http::Request::from_parts(
                    parts,
                    Body::new(Full::new(bytes)),
                ))
                .await?;
            match call.finish(outcome_of(response.headers()), &slot) {
                Ok(()) => Ok(with_id(response)),
                Err(unavailable) => Ok(answer(unavailable)),
            }
        };
        // The call runs to its end on a task of its own, whether or not its client waits for
        // the answer: a client that gives up (a deadline, a reset stream) must not cut a call
        // between its change to the store and what follows it (the key service's memory of
        // the change, the call's audit record).
        let running = tokio::spawn(future.instrument(span));
        Box::pin(async move {
            match running.await {
                Ok(answered) => answered,
                Err(failed) => {
                    tracing::error!(%failed, "a call's task failed");
                    Ok(tonic::Status::internal("the call failed").into_http())
                }
            }
        })
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
    fn approval_methods_are_keyhaven_actions() {
        for method in [
            "ListApprovalRequests",
            "GetApprovalRequest",
            "ApproveRequest",
            "RejectRequest",
            "GetApprovalSettings",
            "PutApprovalSettings",
        ] {
            assert_eq!(
                operation_name(&format!("/keyhaven.v1.KeyManagementService/{method}")),
                format!("keyhaven:{method}")
            );
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
}
