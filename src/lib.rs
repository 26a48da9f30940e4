//! Keyhaven: a self-hosted key management service.
//!
//! One binary, `keyhaven`: `serve` runs the gRPC daemon, every other subcommand is a client of
//! it (or, for `init`, an offline operation on a data directory). The layers, from the wire in:
//!
//! - [`api`]: gRPC handlers, proto ⇄ domain, one mapping from domain errors to `Status`;
//! - [`auth`]: request signatures (AWS SigV4 style), credentials, the authenticated caller;
//! - [`keys`]: key metadata, the state machine, rotation and the deletion scheduler;
//! - [`crypto`]: the ciphertext blob and encryption-context canonicalisation;
//! - [`keystore`]: where key material lives and is used (sealed store today, PKCS#11 next);
//! - [`seal`]: the data directory's seal (passphrase → Argon2id → master key);
//! - [`store`]: durable metadata (sled behind a trait, group-committed flushes);
//! - [`server`] and [`cli`]: the daemon's start-up and the operator's command line.

// `unsafe` only in `secret::memory` (system calls, and the pages secrets live in), `C_Initialize`'s
// arguments (`keystore::pkcs11::device`), and `allocator` (mimalloc's options).
#![deny(unsafe_code)]

pub mod allocator;
pub mod api;
pub mod approval;
pub mod audit;
pub mod auth;
pub mod background;
pub mod cli;
pub mod client;
pub mod clock;
pub mod crypto;
pub mod durable;
pub mod iam;
pub mod keys;
pub mod keystore;
pub mod metrics;
pub mod org;
pub mod policy;
pub mod proto;
pub mod seal;
pub mod secret;
pub mod server;
pub mod store;
