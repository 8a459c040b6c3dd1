//! # ember-tests
//!
//! Workspace-level tests: the PyTorch conformance runner ([`conformance`]) and, in `tests/`, the suites
//! that drive it (on the CPU backend and through a wrapper backend registered under its own device).

pub mod conformance;
mod dispatch;
mod dispatch_nn;
mod dispatch_train;
pub mod sweep;
