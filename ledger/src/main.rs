//! `tollgate-ledger`: the Tollgate sidecar.

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use tollgate_ledger::config::Config;

#[derive(Parser)]
#[command(
    name = "tollgate-ledger",
    about = "Tollgate ledger and decision sidecar"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the service.
    Serve {
        /// TOML configuration (server settings and seed data).
        #[arg(long, env = "TOLLGATE_LEDGER_CONFIG")]
        config: PathBuf,
        /// Overrides `server.listen`.
        #[arg(long, env = "TOLLGATE_LEDGER_LISTEN")]
        listen: Option<String>,
        /// Overrides `server.database_url`.
        #[arg(long, env = "TOLLGATE_DATABASE_URL")]
        database_url: Option<String>,
        /// Overrides `server.public_url`.
        #[arg(long, env = "TOLLGATE_PUBLIC_URL")]
        public_url: Option<String>,
        /// Log as JSON lines.
        #[arg(long, env = "TOLLGATE_LOG_JSON")]
        log_json: bool,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve {
            config,
            listen,
            database_url,
            public_url,
            log_json,
        } => {
            init_logs(log_json);
            let mut cfg = Config::load(&config)?;
            if let Some(v) = listen {
                cfg.server.listen = v;
            }
            if let Some(v) = database_url {
                cfg.server.database_url = v;
            }
            if let Some(v) = public_url {
                cfg.server.public_url = v;
            }
            tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?
                .block_on(tollgate_ledger::server::run(cfg))
        }
    }
}

fn init_logs(json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}
