//! Tollgate filter: a proxy-wasm HTTP filter that puts a paywall in front of
//! OpenAI-compatible chat completions.
//!
//! The logic is host-agnostic and unit-tested natively; it talks to Envoy only
//! through the [`host::StreamHost`] seam. The proxy-wasm glue in [`glue`] is
//! compiled for `wasm32` only and stays thin.

// The no-panic lints (Cargo.toml) guard the filter inside Envoy; tests may unwrap.
#![cfg_attr(
    test,
    allow(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::indexing_slicing,
        clippy::panic
    )
)]

pub mod bpe;
pub mod chat_request;
pub mod config;
pub mod flow;
pub mod host;
pub mod json_patch;
pub mod observation;
pub mod provider_attempt;
pub mod replies;
pub mod request_identity;
pub mod response_reader;
pub mod running_count;
pub mod settlement_queue;
pub mod sidecar;
pub mod sse;
pub mod stream_meter;
pub mod tokens;
pub mod usage;

#[cfg(target_arch = "wasm32")]
mod glue;
