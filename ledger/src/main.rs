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
    /// Check every invariant of the books; prints a JSON report and exits 1 on any violation.
    Verify {
        #[arg(long, env = "TOLLGATE_LEDGER_CONFIG")]
        config: PathBuf,
        /// Overrides `server.database_url`.
        #[arg(long, env = "TOLLGATE_DATABASE_URL")]
        database_url: Option<String>,
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
        Command::Verify {
            config,
            database_url,
        } => verify(config, database_url),
    }
}

fn verify(config: PathBuf, database_url: Option<String>) -> anyhow::Result<()> {
    let cfg = Config::load(&config)?;
    let url = database_url.unwrap_or(cfg.server.database_url);
    let report = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(async {
            let db = tollgate_ledger::db::Db::connect(&url).await?;
            // Open holds get one sweep interval of grace past their expiry.
            let grace =
                i64::try_from(tollgate_ledger::server::SWEEP_EVERY.as_millis()).unwrap_or(i64::MAX);
            Ok::<_, anyhow::Error>(
                tollgate_ledger::verify::verify(&db, tollgate_ledger::keys::now_ms(), grace * 2)
                    .await?,
            )
        })?;
    println!("{}", serde_json::to_string_pretty(&report)?);
    if report.is_clean() {
        Ok(())
    } else {
        eprintln!("{} violation(s) found", report.violations.len());
        std::process::exit(1);
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
