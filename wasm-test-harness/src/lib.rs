//! Tollgate's wasm test harness: a proxy-wasm ABI 0.2.1 host built on
//! wasmtime that loads the released `.wasm` — the artifact operators put in
//! Envoy — and lets a test play Envoy: feed headers and body chunks, answer or
//! fail the sidecar callouts, move the clock, and look at what the filter did.
//!
//! - [`abi`]: the import/export contract, checked without running anything;
//! - [`module`]: compiling (and caching) the artifact;
//! - [`host`]: the host's state — streams, callouts, logs, metrics, clock;
//! - [`proxy_abi`] and [`wasi`]: the host functions, one per import;
//! - [`vm`]: the scenario API tests use.

pub mod abi;
mod guest;
pub mod host;
pub mod module;
mod proxy_abi;
pub mod vm;
mod wasi;

pub use abi::{missing_exports, read_abi, unknown_imports, ModuleAbi};
pub use host::{CalloutRecord, LocalReply, LogLine, StreamView};
pub use module::{release_module, release_wasm};
pub use vm::{Action, CalloutAnswer, StreamId, Vm};
// Tests that build their own modules need the same wasmtime.
pub use wasmtime;
