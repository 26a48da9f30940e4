//! Transport-neutral operations: what a call does once the gateway has authenticated it,
//! whichever door it came through.

mod kms;

pub use kms::{KmsOperations, Outcome};
