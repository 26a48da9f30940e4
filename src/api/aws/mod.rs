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
/// How long a shutting-down door waits for the requests in flight to be answered.
pub const DRAIN_DEADLINE: std::time::Duration = std::time::Duration::from_secs(10);

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

    /// Serves `listener` (HTTP/1.1, over TLS when `tls` is given, a task per connection)
    /// until `closing` turns true; then drains: stops accepting, lets the requests in flight
    /// finish and closes each connection after its answer, for at most [`DRAIN_DEADLINE`],
    /// after which the connections left are dropped. The task ends when the door is drained.
    pub fn serve(
        self: Arc<Self>,
        listener: tokio::net::TcpListener,
        tls: Option<tokio_rustls::TlsAcceptor>,
        mut closing: tokio::sync::watch::Receiver<bool>,
    ) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            let mut connections = tokio::task::JoinSet::new();
            loop {
                tokio::select! {
                    _ = until_closing(&mut closing) => break,
                    Some(_) = connections.join_next(), if !connections.is_empty() => {}
                    accepted = listener.accept() => {
                        let Ok((stream, peer)) = accepted else { continue };
                        let _ = stream.set_nodelay(true);
                        let door = self.clone();
                        let tls = tls.clone();
                        let closing = closing.clone();
                        connections.spawn(async move {
                            match tls {
                                Some(acceptor) => match acceptor.accept(stream).await {
                                    Ok(stream) => {
                                        door.serve_connection(stream, peer, true, closing).await
                                    }
                                    Err(error) => {
                                        tracing::debug!(%peer, %error, "AWS door: TLS handshake failed");
                                    }
                                },
                                None => door.serve_connection(stream, peer, false, closing).await,
                            }
                        });
                    }
                }
            }
            drop(listener);
            let in_flight = connections.len();
            let drained = tokio::time::timeout(DRAIN_DEADLINE, async {
                while connections.join_next().await.is_some() {}
            })
            .await;
            if drained.is_err() {
                tracing::warn!(
                    left = connections.len(),
                    "AWS door: connections still busy after the drain deadline; dropping them"
                );
                connections.shutdown().await;
            }
            tracing::info!(connections = in_flight, "AWS door drained");
        })
    }

    /// One connection's requests, kept alive between them until the door closes: then the
    /// request in flight, if any, is answered and the connection closed.
    async fn serve_connection<Stream>(
        self: Arc<Self>,
        stream: Stream,
        peer: SocketAddr,
        secure: bool,
        mut closing: tokio::sync::watch::Receiver<bool>,
    ) where
        Stream: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        use hyper::service::service_fn;
        use hyper_util::rt::TokioIo;
        let service = service_fn(move |request: http::Request<Incoming>| {
            let door = self.clone();
            async move { Ok::<_, std::convert::Infallible>(door.handle(request, peer, secure).await) }
        });
        let connection = hyper::server::conn::http1::Builder::new()
            .keep_alive(true)
            .serve_connection(TokioIo::new(stream), service);
        tokio::pin!(connection);
        tokio::select! {
            _ = connection.as_mut() => {}
            _ = until_closing(&mut closing) => {
                connection.as_mut().graceful_shutdown();
                let _ = connection.await;
            }
        }
    }

    async fn handle(
        &self,
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
        self.admit(call, arrived).instrument(span).await
    }

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
        let (caller, slot) = match call.authenticate(&signed) {
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
        };
        let result = if parts.method != http::Method::POST || parts.uri.path() != "/" {
            Err(ApiError::new(
                Code::Unimplemented,
                "UnknownOperationException",
                "the AWS door answers POST / only",
            ))
        } else {
            match protocol {
                Protocol::Json => kms::dispatch(&self.accounts, &context, &target, &body).await,
                Protocol::Query(_) => match self.accounts.of(&context) {
                    Ok(account) => {
                        let operations = (&account.sts, &account.iam);
                        query::dispatch(operations, &context, &body, &request_id).await
                    }
                    Err(refused) => Err(refused),
                },
            }
        };
        drop(body);
        answer(finished(&call, &slot, result))
    }
}

/// Records a call's outcome; its answer, or the refusal of a log that could not be written.
fn finished(
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

/// Resolves once the door is told to close (or its daemon is gone).
async fn until_closing(closing: &mut tokio::sync::watch::Receiver<bool>) {
    let _ = closing.wait_for(|closing| *closing).await;
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
async fn read_body(body: Incoming, limit: usize) -> Result<Bytes, ApiError> {
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
fn respond(request_id: &str, result: Result<Vec<u8>, ApiError>) -> http::Response<Full<Bytes>> {
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
