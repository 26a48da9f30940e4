//! The gRPC surface: handlers that translate between the wire and the domain, the one mapping
//! from domain errors to `Status`, and the authentication layer in front of every call.

mod auth_layer;
mod kms;
mod status;

pub use auth_layer::AuthLayer;
pub use kms::KmsApi;
pub use status::{ERROR_DOMAIN, reason_of};

/// Largest encoded request message the daemon accepts (plaintext ≤ 4096 bytes plus context).
pub const MAX_REQUEST_BYTES: usize = 64 * 1024;
