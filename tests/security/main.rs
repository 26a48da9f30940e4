//! Regression tests for the security review's findings, one module per area. Each test fails
//! on the code before its fix and asserts the exact refusal and that nothing changed.

#[path = "../common/mod.rs"]
mod common;

mod aliases;
mod audit_bounds;
mod barrier;
mod hsm_journal;
mod policy_grammar;
mod process;
mod races;
mod reviewfix;
