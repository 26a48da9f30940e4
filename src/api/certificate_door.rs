//! The certificate door: a gRPC call over mutual TLS that carries no signature is
//! authenticated by its client certificate (see [`crate::auth::certificate`]). A call that
//! carries a signature is judged by its signature alone, whatever certificate its connection
//! presented; a call with neither is refused as unsigned.

use crate::auth::certificate::PeerCertificate;
use crate::auth::{AuthError, signature};
use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};

/// What audit records of certificate calls say in their `door` field.
pub const CERTIFICATE_DOOR: &str = "certificate";

/// The client certificate of an unsigned call, read: `None` for a signed call or a connection
/// without one (rustls verified the chain against the client CA before the call arrived).
pub(super) fn unsigned_call_certificate(
    headers: &http::HeaderMap,
    extensions: &http::Extensions,
) -> Option<Result<PeerCertificate, AuthError>> {
    if headers.contains_key(signature::AUTHORIZATION) {
        return None;
    }
    let chain = extensions
        .get::<TlsConnectInfo<TcpConnectInfo>>()?
        .peer_certs()?;
    let leaf = chain.first()?;
    Some(PeerCertificate::from_der(leaf.as_ref()))
}
