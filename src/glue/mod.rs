//! proxy-wasm glue (wasm32 only): maps host callbacks onto the host-agnostic
//! logic. Kept thin on purpose; everything worth testing lives outside.

mod attempt;
mod envoy_host;
mod metrics;
mod root;
mod stream;

use proxy_wasm::types::LogLevel;

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Info);
    proxy_wasm::set_root_context(|_| Box::new(root::PaywallRoot::new()));
}}
