//! Transport-neutral operations: what a call does once the gateway has authenticated it,
//! whichever door it came through.

mod approval;
mod batch;
mod federation;
mod grants;
mod iam;
mod kms;
mod mfa;
mod org;
mod passwords;
mod sts;

pub use batch::{MAX_BATCH_ITEMS, is_batch};
pub use federation::WebIdentityOperations;
pub use iam::IamOperations;
pub use kms::{KmsOperations, Outcome};
pub use org::OrgOperations;
pub use passwords::SignInOperations;
pub use sts::StsOperations;
