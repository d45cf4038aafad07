//! `tollgate-mock-provider`: an OpenAI-compatible fake LLM for demos and tests.
//!
//! Deterministic replies (JSON and SSE), tool calls, JSON mode, real token
//! usage (tiktoken o200k_base), key checking like a real provider, a request
//! counter, and fault injection through `x-mock-*` request headers.

mod completion;
mod faults;
mod flavor;
mod server;

use clap::Parser;

#[derive(Parser, Clone, Debug)]
#[command(name = "tollgate-mock-provider", about = "OpenAI-compatible fake LLM")]
pub struct Args {
    #[arg(long, env = "MOCK_PROVIDER_LISTEN", default_value = "127.0.0.1:8082")]
    pub listen: String,
    /// The key clients must send, in the flavor's header (`Authorization:
    /// Bearer <key>` for most, `api-key` for Azure). Several, comma-separated,
    /// are all accepted.
    #[arg(long, env = "MOCK_PROVIDER_KEY", default_value = "")]
    pub api_key: String,
    /// The provider to imitate: its chat path and how it expects the key.
    #[arg(
        long,
        env = "MOCK_PROVIDER_FLAVOR",
        value_enum,
        default_value = "openai"
    )]
    pub flavor: flavor::Flavor,
    /// Model names it serves (comma-separated); others get a 404 like a real provider's.
    #[arg(
        long,
        env = "MOCK_PROVIDER_MODELS",
        value_delimiter = ',',
        default_value = "mock-gpt"
    )]
    pub models: Vec<String>,
    /// Answer every chat request with this status: a provider that is down or
    /// rate limiting, for fallback tests.
    #[arg(long, env = "MOCK_PROVIDER_FAIL_STATUS")]
    pub fail_status: Option<u16>,
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
