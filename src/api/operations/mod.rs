//! Transport-neutral operations: what a call does once the gateway has authenticated it,
//! whichever door it came through.

mod grants;
mod iam;
mod kms;
mod mfa;
mod sts;

pub use iam::IamOperations;
pub use kms::{KmsOperations, Outcome};
pub use sts::StsOperations;
