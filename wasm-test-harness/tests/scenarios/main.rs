//! Scenarios that drive the released `.wasm` through the wasmtime host, one
//! file per group. `make test` builds the artifact first. A failing scenario
//! prints the VM's host-call trace.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod common;

mod bad_config;
mod long_run;
mod release_artifact;
mod request_faults;
mod response_faults;
mod settle_before_release;
mod settlement_queue;
mod sidecar_callout;
