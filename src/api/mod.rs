//! The front doors and what stands behind them: the [`Gateway`] (authentication, replay,
//! audit, metrics) every door calls; the transport-neutral KMS operations
//! ([`operations::KmsOperations`]); the gRPC door (the authentication layer and the tonic
//! handlers, short conversions onto the operations), the AWS door (`aws`, the KMS JSON 1.1
//! protocol over HTTP/1.1) and the web console (`console`, whose pages call the AWS door's
//! dispatch as the signed-in user; both HTTP doors share `http`'s server loop); and the one
//! mapping from domain errors to [`ApiError`].

pub mod accounts;
mod audit;
mod auth_layer;
pub mod authorize;
pub mod aws;
mod certificate_door;
pub mod console;
pub mod gateway;
mod http;
mod iam;
mod kms;
pub mod operations;
mod status;

pub use audit::AuditApi;
pub use auth_layer::{AuditSlot, AuthLayer, REQUEST_ID_HEADER, operation_name};
pub use authorize::{Authorizer, CallContext};
pub use gateway::{Door, Gateway};
pub use iam::IamApi;
pub use kms::{GRANT_TOKEN_METADATA, KmsApi};
pub use status::{ApiError, ERROR_DOMAIN, reason_of};

/// The metadata entry (gRPC) or header (AWS door) naming the approved request a call
/// executes: the call must be exactly the one approved.
pub const APPROVAL_ID_HEADER: &str = "x-keyhaven-approval-id";

/// Largest encoded request message the daemon accepts (plaintext ≤ 4096 bytes plus context).
pub const MAX_REQUEST_BYTES: usize = 64 * 1024;

/// Largest encoded answer: a full page of 1,000 keys or aliases with their ARNs is ~100 KB.
pub const MAX_RESPONSE_BYTES: usize = 4 * 1024 * 1024;

/// Largest encoded batch request: 1,000 items of 4096 bytes with their keys and contexts.
pub const MAX_BATCH_REQUEST_BYTES: usize = 6 * 1024 * 1024;

/// Largest encoded batch answer: 1,000 ciphertexts or plaintexts of 4096 bytes and their ARNs.
pub const MAX_BATCH_RESPONSE_BYTES: usize = 8 * 1024 * 1024;

/// The authenticated caller the auth layer attached, and where the call came from.
pub(crate) fn call_context<T>(request: &tonic::Request<T>) -> Result<CallContext, tonic::Status> {
    let caller = request
        .extensions()
        .get::<crate::auth::Caller>()
        .cloned()
        .ok_or_else(|| tonic::Status::unauthenticated("request was not authenticated"))?;
    use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};
    let secure_transport = request
        .extensions()
        .get::<TlsConnectInfo<TcpConnectInfo>>()
        .is_some();
    Ok(CallContext {
        caller,
        source_ip: request.remote_addr().map(|a| a.ip()),
        secure_transport,
        audit: request
            .extensions()
            .get::<AuditSlot>()
            .cloned()
            .unwrap_or_default(),
        approval_id: request
            .metadata()
            .get(APPROVAL_ID_HEADER)
            .map(|v| v.to_str().unwrap_or("?").to_owned()),
        asked: request
            .extensions()
            .get::<Asked>()
            .ok_or_else(|| tonic::Status::internal("request has no arrival time"))?
            .0,
    })
}

/// When a gRPC call came, whole (its request read), as its gateway saw it: the auth layer
/// attaches it to the request beside the caller ([`CallContext::asked`]).
#[derive(Clone, Copy)]
pub(crate) struct Asked(pub std::time::Instant);
