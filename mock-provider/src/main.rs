//! `tollgate-mock-provider`: an OpenAI-compatible fake LLM for demos and tests.
//!
//! Deterministic replies (JSON and SSE), tool calls, JSON mode, real token
//! usage (tiktoken o200k_base), key checking like a real provider, a request
//! counter, and fault injection through `x-mock-*` request headers.

mod completion;
mod faults;
mod server;

use clap::Parser;

#[derive(Parser, Clone, Debug)]
#[command(name = "tollgate-mock-provider", about = "OpenAI-compatible fake LLM")]
pub struct Args {
    #[arg(long, env = "MOCK_PROVIDER_LISTEN", default_value = "127.0.0.1:8082")]
    pub listen: String,
    /// The key clients must send as `Authorization: Bearer <key>`.
    #[arg(long, env = "MOCK_PROVIDER_KEY")]
    pub api_key: String,
    /// Pause between streamed chunks.
    #[arg(long, env = "MOCK_PROVIDER_CHUNK_DELAY_MS", default_value_t = 5)]
    pub chunk_delay_ms: u64,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?
        .block_on(server::run(args))
}
