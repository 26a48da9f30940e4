//! The AWS door: the wire protocols the AWS SDKs and CLI speak, over HTTP/1.1 (keep-alive;
//! TLS with the gRPC listener's certificate when the daemon has one),
//! signed with standard Signature Version 4. The KMS JSON 1.1 protocol: `POST /`,
//! `X-Amz-Target: TrentService.<Operation>`, a JSON body whose members are AWS's, blobs in
//! base64, dates in epoch seconds; errors as `{"__type": "<Exception>", "message": "…"}`
//! with HTTP 400 (500 for the service's own failures). And STS over the Query protocol
//! (`query`): a form body `Action=…&Version=2011-06-15`, XML answers and `<ErrorResponse>`s.
//!
//! The door reads the request and hands the [`Gateway`] what it verifies and records, then
//! calls the same operation the gRPC method of that name calls; it decides nothing itself.

pub mod blob;
mod iam;
pub mod key_state;
mod kms;
mod query;
pub mod timestamp;

use super::accounts::Accounts;
use super::authorize::CallContext;
use super::gateway::{Door, Gateway};
use super::status::ApiError;
use crate::audit::Outcome;
use crate::auth::SignedRequest;
use crate::auth::signature::{canonical_query, sha256_hex};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use std::net::SocketAddr;
use std::sync::Arc;
use tonic::Code;
use tracing::Instrument;

/// The response header AWS names its request id in.
pub const REQUEST_ID_HEADER: &str = "x-amzn-requestid";
/// The JSON 1.1 protocol's content type.
pub const JSON_1_1: &str = "application/x-amz-json-1.1";
/// How much of an oversized body is read and dropped before the refusal is sent, so that a
/// client still writing its body reads the answer rather than a reset connection.
const DRAIN_LIMIT: usize = 16 * 1024 * 1024;
pub use super::http::DRAIN_DEADLINE;

/// What the AWS door serves with.
pub struct AwsDoor {
    gateway: Gateway,
    accounts: Arc<Accounts>,
    max_body: usize,
}

impl AwsDoor {
    pub fn new(gateway: Gateway, accounts: Arc<Accounts>, max_body: usize) -> Self {
        Self {
            gateway,
            accounts,
            max_body,
        }
    }

    /// Serves `listener` until `closing` turns true, then drains (see `http::serve`).
    pub fn serve(
        self: Arc<Self>,
        listener: tokio::net::TcpListener,
        tls: Option<tokio_rustls::TlsAcceptor>,
        closing: tokio::sync::watch::Receiver<bool>,
    ) -> tokio::task::JoinHandle<()> {
        super::http::serve(self, listener, tls, closing)
    }
}

impl super::http::HttpDoor for AwsDoor {
    const NAME: &'static str = "AWS door";

    async fn handle(
        self: Arc<Self>,
        request: http::Request<Incoming>,
        peer: SocketAddr,
        secure: bool,
    ) -> http::Response<Full<Bytes>> {
        let (parts, body) = request.into_parts();
        let protocol = Protocol::of(&parts.headers);
        let body = read_body(body, self.max_body).await;
        let protocol = match (protocol, &body) {
            (Protocol::Query(_), Ok(body)) => Protocol::Query(query::service(body)),
            (protocol, _) => protocol,
        };
        let target = parts
            .headers
            .get("x-amz-target")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        // The Query protocol names its operation in the body.
        let operation = match (&protocol, &body) {
            (Protocol::Json, _) => kms::operation_name(&target),
            (Protocol::Query(_), Ok(body)) => query::operation_name(body),
            (Protocol::Query(_), Err(_)) => super::auth_layer::UNKNOWN_OPERATION.to_owned(),
        };
        let call = self.gateway.begin(Door::Aws, operation, Some(peer));
        let span =
            tracing::info_span!("call", request_id = %call.request_id, operation = %call.operation);
        let arrived = Arrived {
            parts,
            body,
            peer,
            secure,
            target,
            protocol,
        };
        // The call runs to its end on a task of its own, whether or not its client waits for
        // the answer (see the gRPC door's `Authenticated`).
        let door = self.clone();
        let running = tokio::spawn(async move { door.admit(call, arrived).await }.instrument(span));
        match running.await {
            Ok(answer) => answer,
            Err(failed) => {
                tracing::error!(%failed, "a call's task failed");
                let mut answer = http::Response::new(Full::new(Bytes::new()));
                *answer.status_mut() = http::StatusCode::INTERNAL_SERVER_ERROR;
                answer
            }
        }
    }
}

impl AwsDoor {
    async fn admit(
        &self,
        mut call: super::gateway::CallInFlight,
        arrived: Arrived,
    ) -> http::Response<Full<Bytes>> {
        let Arrived {
            parts,
            body,
            peer,
            secure,
            target,
            protocol,
        } = arrived;
        let request_id = call.request_id.clone();
        let answer = |result: Result<Vec<u8>, ApiError>| protocol.respond(&request_id, result);
        let body = match body {
            Ok(body) => body,
            Err(refused) => return answer(Err(call.refuse(refused, &parts.headers))),
        };
        // Its token is its credential: admitted unsigned, run by the role's account.
        if call.operation == super::auth_layer::WEB_IDENTITY_OPERATION
            && matches!(protocol, Protocol::Query(_))
            && parts.method == http::Method::POST
        {
            let slot = match call.admit_unsigned(&parts.headers) {
                Ok(slot) => slot,
                Err(refused) => return answer(Err(refused)),
            };
            let result = query::dispatch_web_identity(
                &self.accounts,
                Some(peer.ip()),
                &slot,
                &body,
                &request_id,
            )
            .await;
            return answer(finished(&call, &slot, result));
        }
        let authority = parts
            .headers
            .get(http::header::HOST)
            .and_then(|v| v.to_str().ok());
        let query = canonical_query(parts.uri.query().unwrap_or_default());
        let signed = SignedRequest {
            door: call.signature_door(),
            service: protocol.service(),
            method: parts.method.as_str(),
            path: parts.uri.path(),
            query: &query,
            authority,
            headers: &parts.headers,
            body_sha256_hex: &sha256_hex(&body),
        };
        let (caller, slot) = match call.authenticate(&signed).await {
            Ok(admitted) => admitted,
            Err(refused) => return answer(Err(refused)),
        };
        let context = CallContext {
            caller,
            source_ip: Some(peer.ip()),
            secure_transport: secure,
            audit: slot.clone(),
            approval_id: parts
                .headers
                .get(crate::api::APPROVAL_ID_HEADER)
                .map(|v| v.to_str().unwrap_or("?").to_owned()),
            asked: call.asked(),
        };
        let result = if parts.method != http::Method::POST || parts.uri.path() != "/" {
            Err(ApiError::new(
                Code::Unimplemented,
                "UnknownOperationException",
                "the AWS door answers POST / only",
            ))
        } else {
            match protocol {
                Protocol::Json => run_json(&self.accounts, &context, &target, &body).await,
                Protocol::Query(_) => run_query(&self.accounts, &context, &body, &request_id).await,
            }
        };
        drop(body);
        answer(finished(&call, &slot, result))
    }
}

/// Runs an authenticated call of the KMS JSON 1.1 protocol (`target`: its `X-Amz-Target`).
/// The console runs its user's KMS calls through it too.
pub(crate) async fn run_json(
    accounts: &Accounts,
    context: &CallContext,
    target: &str,
    body: &[u8],
) -> Result<Vec<u8>, ApiError> {
    kms::dispatch(accounts, context, target, body).await
}

/// Runs an authenticated call of the Query protocol (STS, IAM) in the caller's account.
pub(crate) async fn run_query(
    accounts: &Accounts,
    context: &CallContext,
    body: &[u8],
    request_id: &str,
) -> Result<Vec<u8>, ApiError> {
    let account = accounts.of(context)?;
    query::dispatch((&account.sts, &account.iam), context, body, request_id).await
}

/// The operation (`kms:Encrypt`, or `unknown`) a JSON 1.1 call's target names.
pub(crate) fn json_operation(target: &str) -> String {
    kms::operation_name(target)
}

/// The operation (`iam:ListUsers`, or `unknown`) and the service of a Query call's body.
pub(crate) fn query_operation(body: &[u8]) -> (String, &'static str) {
    (query::operation_name(body), query::service(body))
}

/// A Query call's answer: its XML document, or its `<ErrorResponse>`.
pub(crate) fn respond_query(
    service: &str,
    request_id: &str,
    result: Result<Vec<u8>, ApiError>,
) -> http::Response<Full<Bytes>> {
    query::respond(service, request_id, result)
}

/// Records a call's outcome; its answer, or the refusal of a log that could not be written.
pub(crate) fn finished(
    call: &super::gateway::CallInFlight,
    slot: &super::AuditSlot,
    result: Result<Vec<u8>, ApiError>,
) -> Result<Vec<u8>, ApiError> {
    let outcome = match &result {
        Ok(_) => Outcome {
            code: "Ok".into(),
            reason: None,
        },
        Err(error) => error.outcome(),
    };
    call.finish(outcome, slot).and(result)
}

/// A request as it arrived, its body read (or refused).
struct Arrived {
    parts: http::request::Parts,
    body: Result<Bytes, ApiError>,
    peer: SocketAddr,
    secure: bool,
    target: String,
    protocol: Protocol,
}

/// The AWS wire protocol a request speaks, told apart as AWS does: a form body is the Query
/// protocol (STS or IAM, by its action), anything else JSON 1.1 (KMS).
enum Protocol {
    Json,
    /// The service (`sts`, `iam`) the action belongs to.
    Query(&'static str),
}

impl Protocol {
    fn of(headers: &http::HeaderMap) -> Self {
        let form = headers
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
        if form {
            Protocol::Query("sts")
        } else {
            Protocol::Json
        }
    }

    /// The service a request of this protocol must be signed for.
    fn service(&self) -> &'static str {
        match self {
            Protocol::Json => crate::auth::signature::SERVICE,
            Protocol::Query(service) => service,
        }
    }

    fn respond(
        &self,
        request_id: &str,
        result: Result<Vec<u8>, ApiError>,
    ) -> http::Response<Full<Bytes>> {
        match self {
            Protocol::Json => respond(request_id, result),
            Protocol::Query(service) => query::respond(service, request_id, result),
        }
    }
}

/// The body, at most `limit` bytes, in a buffer wiped when dropped (it may hold plaintext). A
/// larger body is read on (up to [`DRAIN_LIMIT`]) and dropped, and refused.
pub(crate) async fn read_body(body: Incoming, limit: usize) -> Result<Bytes, ApiError> {
    let too_large = || {
        ApiError::new(
            Code::ResourceExhausted,
            "LimitExceededException",
            format!("request body larger than {limit} bytes"),
        )
    };
    let unreadable = || {
        ApiError::new(
            Code::InvalidArgument,
            "ValidationException",
            "request body could not be read",
        )
    };
    let mut body = body;
    let mut received = Vec::new();
    let mut length = 0usize;
    while let Some(frame) = body.frame().await {
        let Ok(frame) = frame else {
            zeroize::Zeroize::zeroize(&mut received);
            return Err(unreadable());
        };
        let Some(data) = frame.data_ref() else {
            continue;
        };
        length = length.saturating_add(data.len());
        if length > DRAIN_LIMIT {
            break;
        }
        if length <= limit {
            received.extend_from_slice(data);
        }
    }
    if length > limit {
        zeroize::Zeroize::zeroize(&mut received);
        return Err(too_large());
    }
    Ok(crate::secret::SecretBytes::new(received).into_bytes())
}

/// The HTTP answer: the JSON body, or the error in the JSON 1.1 protocol's shape.
pub(crate) fn respond(
    request_id: &str,
    result: Result<Vec<u8>, ApiError>,
) -> http::Response<Full<Bytes>> {
    let (status, body) = match result {
        Ok(body) => (200, body),
        Err(error) => {
            let body = serde_json::json!({
                "__type": error.aws_type(),
                "message": error.message,
            });
            (error.http_status(), body.to_string().into_bytes())
        }
    };
    let mut response = http::Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() =
        http::StatusCode::from_u16(status).unwrap_or(http::StatusCode::INTERNAL_SERVER_ERROR);
    let headers = response.headers_mut();
    headers.insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static(JSON_1_1),
    );
    if let Ok(value) = http::HeaderValue::from_str(request_id) {
        headers.insert(REQUEST_ID_HEADER, value);
    }
    response
}
