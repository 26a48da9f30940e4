//! Transport-neutral operations: what a call does once the gateway has authenticated it,
//! whichever door it came through.

mod kms;
mod sts;

pub use kms::{KmsOperations, Outcome};
pub use sts::StsOperations;
