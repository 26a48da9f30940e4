//! Authenticates every Keyhaven call before its handler runs.
//!
//! The signature covers the SHA-256 of the request message exactly as it arrived, so this
//! layer reads the (small, unary) body, hashes the gRPC frame's payload, verifies the
//! signature and hands the [`Caller`](crate::auth::Caller) to the handler in the request's
//! extensions. Health and reflection services pass through unauthenticated.

use super::status::status;
use crate::auth::CredentialStore;
use crate::auth::signature::sha256_hex;
use bytes::Bytes;
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tonic::Code;
use tonic::body::Body;
use tower::{Layer, Service};

const AUTHENTICATED_PREFIX: &str = "/keyhaven.";
const FRAME_HEADER: usize = 5;

#[derive(Clone)]
pub struct AuthLayer {
    credentials: Arc<CredentialStore>,
    max_message: usize,
}

impl AuthLayer {
    pub fn new(credentials: Arc<CredentialStore>, max_message: usize) -> Self {
        Self {
            credentials,
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
        Box::pin(async move {
            if !request.uri().path().starts_with(AUTHENTICATED_PREFIX) {
                return inner.call(request).await;
            }
            let (mut parts, body) = request.into_parts();
            let limit = layer.max_message + FRAME_HEADER;
            let bytes: Bytes = match Limited::new(body, limit).collect().await {
                Ok(collected) => collected.to_bytes(),
                Err(error) if error.downcast_ref::<LengthLimitError>().is_some() => {
                    return Ok(status(
                        Code::ResourceExhausted,
                        "LimitExceededException",
                        format!("request message larger than {} bytes", layer.max_message),
                    )
                    .into_http());
                }
                Err(_) => {
                    return Ok(status(
                        Code::InvalidArgument,
                        "ValidationException",
                        "request body could not be read",
                    )
                    .into_http());
                }
            };
            let payload = match frame_payload(&bytes) {
                Ok(payload) => payload,
                Err(problem) => {
                    return Ok(
                        status(Code::InvalidArgument, "ValidationException", problem).into_http(),
                    );
                }
            };
            let path = parts.uri.path().to_owned();
            match layer
                .credentials
                .authenticate(&path, &parts.headers, &sha256_hex(payload))
            {
                Ok(caller) => {
                    parts.extensions.insert(caller);
                }
                Err(error) => {
                    tracing::info!(method = %path, reason = error.reason(), %error, "request refused: not authenticated");
                    return Ok(tonic::Status::from(error).into_http());
                }
            }
            inner
                .call(http::Request::from_parts(
                    parts,
                    Body::new(Full::new(bytes)),
                ))
                .await
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
}
